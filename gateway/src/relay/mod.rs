//! The relay: `smimegw serve`. SMTP in ([`listener`]), the durable spool
//! ([`crate::spool`]), the queue that runs the [`pipeline`] (policy and S/MIME) and
//! [`deliver`]s, and the bounces ([`dsn`]).

pub mod annotate;
pub mod board;
pub mod control;
pub mod deliver;
pub mod dsn;
pub mod expiry;
pub mod limits;
pub mod listener;
pub mod pipeline;
pub mod queue;
pub mod tamper;

use std::path::Path;
use std::sync::Arc;

use hsm::Token;

use crate::ca::Ca;
use crate::config::{Config, Policy, Route};
use crate::spool::Spool;

use crate::keys::{CertStore, Keys};

use crate::store::{Kind, SqliteStore, Store};

/// Everything the listener and the queue share.
pub struct Relay {
    pub config: Config,
    pub spool: Spool,
    pub keys: Keys,
    pub certs: CertStore,
    /// Trust anchors for inbound signatures: our CA and `DATA/trust/`.
    pub anchors: Vec<Vec<u8>>,
    pub queue: queue::Queue,
    pub tls_server: Option<tokio_rustls::TlsAcceptor>,
    /// TLS towards next hops: any certificate (opportunistic), or checked against a CA file.
    pub tls_client_any: Arc<rustls::ClientConfig>,
    pub tls_client_outbound: Arc<rustls::ClientConfig>,
    pub tls_client_inbound: Arc<rustls::ClientConfig>,
    /// The accounts to log in with at the next hops (passwords read once, at start).
    pub hop_auth_outbound: Option<deliver::Login>,
    pub hop_auth_inbound: Option<deliver::Login>,
    /// Open sessions to next hops, for reuse.
    pub delivery: Arc<deliver::Pool>,
    /// SMTP AUTH accounts (`server.auth_users`).
    pub users: Option<crate::users::UserStore>,
    /// When this gateway started (the console's uptime).
    pub started: std::time::SystemTime,
    /// The tamper latch; while tripped the token refuses private-key work.
    pub tamper: Arc<tamper::Tamper>,
    /// Trust anchors, intermediates, correspondents' certificates, the audit log.
    pub store: Arc<dyn Store>,
    /// The policy in force: the configuration file's, or the one applied from a console
    /// (kept in the store). Swapped whole: a message is planned with one policy.
    policy: std::sync::RwLock<Arc<Policy>>,
    /// What was done since start (the dashboard's counters).
    pub stats: Stats,
}

/// Messages delivered since start, by what was done to them (one per recipient).
#[derive(Debug, Default)]
pub struct Stats {
    pub signed: std::sync::atomic::AtomicU64,
    pub encrypted: std::sync::atomic::AtomicU64,
    pub decrypted: std::sync::atomic::AtomicU64,
    pub verified: std::sync::atomic::AtomicU64,
    pub delivered: std::sync::atomic::AtomicU64,
}

impl Stats {
    /// Counts a delivery from its treatment ("signed, encrypted", "pass decrypted; ...").
    pub fn count(&self, inbound: bool, treatment: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        self.delivered.fetch_add(1, Relaxed);
        if inbound {
            if treatment.contains("decrypted;") {
                self.decrypted.fetch_add(1, Relaxed);
            }
            if treatment.starts_with("pass") {
                self.verified.fetch_add(1, Relaxed);
            }
        } else {
            if treatment.starts_with("signed") {
                self.signed.fetch_add(1, Relaxed);
            }
            if treatment.contains("encrypted") {
                self.encrypted.fetch_add(1, Relaxed);
            }
        }
    }
}

/// A start-up failure, for the administrator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Token(#[from] hsm::Error),
    #[error("built-in CA: {0}")]
    Ca(#[from] crate::ca::CaError),
    #[error("{0}")]
    Spool(#[from] crate::spool::SpoolError),
    #[error("{what} {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("server.auth_users: {0}")]
    Users(#[from] crate::users::UsersError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

fn file_error(what: &'static str, path: &Path, reason: impl std::fmt::Display) -> StartError {
    StartError::File {
        what,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads PEM certificates (or one DER certificate) from a file.
fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, StartError> {
    let bytes = std::fs::read(path).map_err(|e| file_error("certificate file", path, e))?;
    crate::ca::parse_certificates(&bytes).map_err(|e| {
        let why = match e {
            crate::ca::CertFileError::Damaged => "a PEM certificate is damaged",
            crate::ca::CertFileError::NoCertificate => "no PEM certificate in it",
        };
        file_error("certificate file", path, why)
    })
}

fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, StartError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| file_error("TLS", Path::new("client"), e))?;
    let cfg = match ca_file {
        Some(p) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(p)? {
                roots
                    .add(rustls::pki_types::CertificateDer::from(c))
                    .map_err(|e| file_error("CA file", p, e))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(deliver::AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// The listener's TLS: the configured certificate and key, or a self-signed pair made in
/// `DATA/tls/` on first start.
fn server_tls(config: &Config) -> Result<tokio_rustls::TlsAcceptor, StartError> {
    let (cert_path, key_path) = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let dir = config.data_dir.join("tls");
            let c = dir.join("cert.pem");
            let k = dir.join("key.pem");
            if !c.exists() || !k.exists() {
                std::fs::create_dir_all(&dir).map_err(|e| file_error("directory", &dir, e))?;
                let (cert, key) = crate::ca::tls_self_signed(&config.server.hostname)?;
                write_private(&k, crate::ca::pem("PRIVATE KEY", &[&key])?.as_bytes())?;
                crate::ca::write_pem(&c, &[&cert])?;
                tracing::info!(cert = %c.display(), "made a self-signed TLS certificate");
            }
            (c, k)
        }
    };
    tls_acceptor(&cert_path, &key_path)
}

/// A TLS acceptor from a PEM certificate chain and key.
fn tls_acceptor(
    cert_path: &Path,
    key_path: &Path,
) -> Result<tokio_rustls::TlsAcceptor, StartError> {
    let chain: Vec<rustls::pki_types::CertificateDer<'static>> = read_certs(cert_path)?
        .into_iter()
        .map(rustls::pki_types::CertificateDer::from)
        .collect();
    let key_pem = std::fs::read(key_path).map_err(|e| file_error("TLS key", key_path, e))?;
    let (label, der) =
        der::pem::decode_vec(&key_pem).map_err(|e| file_error("TLS key", key_path, e))?;
    let key = match label {
        "PRIVATE KEY" => rustls::pki_types::PrivateKeyDer::Pkcs8(der.into()),
        "RSA PRIVATE KEY" => rustls::pki_types::PrivateKeyDer::Pkcs1(der.into()),
        "EC PRIVATE KEY" => rustls::pki_types::PrivateKeyDer::Sec1(der.into()),
        other => {
            return Err(file_error(
                "TLS key",
                key_path,
                format!("a {other} block (want PRIVATE KEY)"),
            ));
        }
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| file_error("TLS", cert_path, e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| file_error("TLS certificate and key", cert_path, e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Creates the data directory 0700 (it holds the spool, where inbound mail lies decrypted,
/// the token, the store); one that exists with access for others is made 0700, and the log
/// says so.
pub fn private_data_dir(data: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data)
        .map_err(|e| file_error("data directory", data, e))?;
    let mode = std::fs::metadata(data)
        .map_err(|e| file_error("data directory", data, e))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| file_error("data directory", data, e))?;
        tracing::warn!(
            dir = %data.display(),
            "the data directory was open to other users (mode {mode:04o}); made it 0700"
        );
    }
    Ok(())
}

/// A private file (0600), replaced whole: a crash leaves the old contents or the new.
fn write_private(path: &Path, data: &[u8]) -> Result<(), StartError> {
    crate::fsutil::replace_file(path, data, 0o600).map_err(|e| file_error("file", path, e))
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("data_dir", &self.config.data_dir)
            .field("listen", &self.config.server.listen)
            .finish_non_exhaustive()
    }
}

/// Fetches the CRLs the held certificates point to, now and then on schedule (sooner when
/// a CRL's nextUpdate comes first), when `[revocation] fetch` is on.
async fn refresh_crls(relay: Arc<Relay>) {
    let settings = relay.config.revocation.clone();
    if !settings.fetch {
        return;
    }
    // Let the listeners come up first.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let options = crate::revocation::FetchOptions::of(&settings);
    loop {
        let r = relay.clone();
        let options = options.clone();
        let wait = tokio::task::spawn_blocking(move || {
            let report = crate::revocation::refresh(r.store.as_ref(), &options);
            if !report.updated.is_empty() {
                r.certs.revocation().reload();
            }
            crate::revocation::next_refresh(r.store.as_ref(), settings.refresh, crate::spool::now())
        })
        .await
        .unwrap_or(settings.refresh);
        tokio::time::sleep(wait).await;
    }
}

impl Relay {
    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Imports a user's PKCS#12 into the token (see [`crate::admin::keys::import_pkcs12`]);
    /// mail that waited for the sender's certificate is retried. Blocks on the token.
    pub fn import_key(
        &self,
        actor: &crate::admin::Actor,
        name: &str,
        bytes: &[u8],
        password: &hsm::Pin,
    ) -> Result<crate::admin::keys::KeyImported, crate::admin::AdminError> {
        let done = crate::admin::keys::import_pkcs12(
            self.store.as_ref(),
            &self.keys,
            actor,
            name,
            bytes,
            password,
            crate::spool::now(),
        )?;
        self.queue.retry_all();
        Ok(done)
    }

    /// Issues (or renews) an internal user's certificate from the built-in CA (see
    /// [`crate::admin::keys::issue`]); mail that waited for it is retried. Blocks on the token.
    pub fn issue_certificate(
        &self,
        actor: &crate::admin::Actor,
        address: &str,
        renew: bool,
    ) -> Result<crate::store::CertInfo, crate::admin::AdminError> {
        let internal = self.config.is_internal_address(address.trim());
        let cert = crate::admin::keys::issue(
            self.store.as_ref(),
            &self.keys,
            actor,
            address,
            internal,
            renew,
            crate::spool::now(),
        )?;
        self.queue.retry_all();
        Ok(cert)
    }

    /// Puts a policy in force (an administrator applied it).
    pub fn set_policy(&self, policy: Policy) {
        let mut p = match self.policy.write() {
            Ok(p) => p,
            Err(p) => p.into_inner(),
        };
        *p = Arc::new(policy);
    }

    /// The trust anchors for inbound signatures (the built-in CA, `DATA/trust` files, and the
    /// store's anchors) and the store's intermediates, read now: an import applies at once.
    pub fn trust(&self) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut anchors = self.anchors.clone();
        let mut intermediates = Vec::new();
        match self.store.list(&[Kind::Anchor, Kind::Intermediate]) {
            Ok(held) => {
                for s in held {
                    match s.kind {
                        Kind::Anchor => anchors.push(s.info.der),
                        Kind::Intermediate => intermediates.push(s.info.der),
                        Kind::External | Kind::Internal | Kind::Candidate => {}
                    }
                }
            }
            Err(e) => tracing::error!("certificate store: {e}"),
        }
        (anchors, intermediates)
    }

    /// Opens everything under the data directory: the CA (made on first start), keys,
    /// harvested certificates, trust anchors, TLS, and the spool (recovered).
    pub fn open(config: Config, token: Arc<dyn Token>) -> Result<Relay, StartError> {
        let data = config.data_dir.clone();
        private_data_dir(&data)?;
        let tamper = Arc::new(tamper::Tamper::load(&data));
        let guarded = Arc::new(tamper::Guarded::new(token, tamper.clone()));
        let token: Arc<dyn Token> = guarded.clone();
        let ca = if config.ca.enabled {
            Some(Ca::open_or_create(
                token.as_ref(),
                &config.ca.organization,
                &data.join("ca.pem"),
            )?)
        } else {
            None
        };
        let mut anchors: Vec<Vec<u8>> = ca.iter().map(|c| c.cert.clone()).collect();
        let trust_dir = data.join("trust");
        std::fs::create_dir_all(&trust_dir).map_err(|e| file_error("directory", &trust_dir, e))?;
        for e in std::fs::read_dir(&trust_dir)
            .map_err(|e| file_error("directory", &trust_dir, e))?
            .flatten()
        {
            match read_certs(&e.path()) {
                Ok(c) => anchors.extend(c),
                Err(err) => tracing::warn!("trust anchor skipped: {err}"),
            }
        }
        let store_path = data.join("store.sqlite");
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&store_path).map_err(|e| {
                file_error("certificate store", &store_path, std::io::Error::other(e))
            })?);
        let keys = Keys::load(token, ca, config.ca.issue_on_first_use, Some(store.clone()))?;
        if let Some(what) = tamper.state() {
            // The certificates were read (mail is still accepted); the keys are not used.
            tracing::error!(
                "TAMPER: {what}; signing and decrypting stay stopped until an administrator \
                 clears it (console: tamper clear)"
            );
            let _ = keys.token().logout();
        }
        guarded.opened();
        let certs_dir = data.join("certs");
        let directory = config.ldap.clone().map(crate::ldap::Directory::new);
        let revocation = Arc::new(crate::revocation::Revocation::new(
            store.clone(),
            config.revocation.clone(),
        ));
        let certs = CertStore::open(store.clone(), &certs_dir, directory, revocation)
            .map_err(|e| file_error("directory", &certs_dir, e))?;
        let spool = Spool::open(&data.join("spool"))?;
        let tls_server = Some(server_tls(&config)?);
        let ca_of = |r: &Route| match r {
            Route::Smtp {
                ca_file: Some(p), ..
            } => Some(p.clone()),
            _ => None,
        };
        let tls_client_any = client_config(None)?;
        let tls_client_outbound = match ca_of(&config.outbound) {
            Some(p) => client_config(Some(&p))?,
            None => tls_client_any.clone(),
        };
        let tls_client_inbound = match ca_of(&config.inbound) {
            Some(p) => client_config(Some(&p))?,
            None => tls_client_any.clone(),
        };
        let users = match &config.server.auth_users {
            Some(p) => Some(crate::users::UserStore::open(p)?),
            None => None,
        };
        let login = |r: &Route, key: &str| -> Result<Option<deliver::Login>, StartError> {
            match r {
                Route::Smtp { auth: Some(a), .. } => {
                    let password = a
                        .password
                        .read(&format!("password of {} at the next hop", a.user))
                        .map_err(|e| file_error("password", Path::new(key), e))?;
                    Ok(Some(deliver::Login {
                        user: a.user.clone(),
                        password: Arc::new(password),
                    }))
                }
                _ => Ok(None),
            }
        };
        let hop_auth_outbound = login(&config.outbound, "delivery.outbound.auth_password")?;
        let hop_auth_inbound = login(&config.inbound, "delivery.inbound.auth_password")?;
        let queue = queue::Queue::new(config.queue.concurrency);
        let policy = match crate::policy::in_force(store.as_ref(), &config.policy) {
            Ok(f) => {
                if f.from_console {
                    tracing::info!("policy: the one applied from the console (not the file's)");
                }
                f.policy
            }
            Err(e) => {
                tracing::error!("{e}; the configuration file's policy is used");
                config.policy.clone()
            }
        };
        Ok(Relay {
            policy: std::sync::RwLock::new(Arc::new(policy)),
            stats: Stats::default(),
            started: std::time::SystemTime::now(),
            tamper,
            store,
            hop_auth_outbound,
            hop_auth_inbound,
            delivery: Arc::default(),
            users,
            config,
            spool,
            keys,
            certs,
            anchors,
            queue,
            tls_server,
            tls_client_any,
            tls_client_outbound,
            tls_client_inbound,
        })
    }

    /// Recovers the spool and runs the listeners and the queue until `shutdown` resolves.
    pub async fn run(
        self: Arc<Self>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartError> {
        let (envs, problems) = self.spool.recover()?;
        for p in problems {
            tracing::error!("spool: {p}");
        }
        if !envs.is_empty() {
            tracing::info!(messages = envs.len(), "recovered queued messages");
        }
        for e in envs {
            self.queue.schedule(&e.id, e.next_try);
        }
        let bind = |addr: std::net::SocketAddr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })
        };
        let mut listeners = Vec::new();
        for addr in &self.config.server.listen {
            listeners.push(bind(*addr).await?);
        }
        let mut web_listeners = Vec::new();
        if !self.config.web.listen.is_empty() {
            let acceptor = match (&self.config.web.tls_cert, &self.config.web.tls_key) {
                (Some(c), Some(k)) => tls_acceptor(c, k)?,
                _ => match &self.tls_server {
                    Some(a) => a.clone(),
                    None => server_tls(&self.config)?,
                },
            };
            for addr in &self.config.web.listen {
                let l = bind(*addr).await?;
                let l = crate::web::TlsListener::new(l, acceptor.clone()).map_err(|source| {
                    StartError::Listen {
                        addr: *addr,
                        source,
                    }
                })?;
                web_listeners.push(l);
            }
        }
        let control = control::bind(&self.config.data_dir).map_err(|e| {
            file_error(
                "control socket",
                &control::socket_path(&self.config.data_dir),
                e,
            )
        })?;
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(control::serve(self.clone(), control));
        let s = &self.config.server;
        let client_limits = limits::ClientLimits::new(limits::LimitSettings {
            sessions_per_client: s.max_sessions_per_client,
            auth_failures_per_client: s.max_auth_failures_per_client,
            auth_lockout: s.auth_lockout,
        });
        for l in listeners {
            tasks.spawn(listener::accept_loop(
                self.clone(),
                l,
                client_limits.clone(),
            ));
        }
        tasks.spawn(queue::run(self.clone()));
        tasks.spawn(refresh_crls(self.clone()));
        tasks.spawn(expiry::watch(self.clone()));
        for l in web_listeners {
            let relay = self.clone();
            tasks.spawn(async move {
                if let Err(e) = crate::web::serve(relay, l, std::future::pending()).await {
                    tracing::error!("web console stopped: {e}");
                }
            });
        }
        let (stop_board, stopped) = tokio::sync::watch::channel(false);
        let board = self
            .config
            .board
            .is_used()
            .then(|| tokio::spawn(board::run(self.clone(), stopped)));
        shutdown.await;
        tasks.abort_all();
        // The watchdog is disarmed last: an orderly stop must not reset the machine.
        if let Some(b) = board {
            let _ = stop_board.send(true);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), b).await;
        }
        Ok(())
    }
}
