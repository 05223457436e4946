//! The web console and the REST API (`[web] listen`; `--dev`: https://127.0.0.1:8443):
//! HTTPS only (rustls, the SMTP listener's certificate unless `web.tls_cert` is set).
//! Server-rendered pages that work without JavaScript ([`pages`]) and JSON under `/api/v1`
//! ([`api`], described by [`openapi`] at `/api/v1/openapi.json`); both call the same
//! administration core ([`crate::admin`]) as the serial console. Sign-in, sessions, CSRF,
//! roles and throttling: [`auth`].

pub mod api;
pub mod auth;
pub mod openapi;
pub mod pages;
pub mod pki;
pub mod pki_pages;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::serve::IncomingStream;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::admin::Actor;
use crate::relay::Relay;

use auth::{Auth, COOKIE, Session};

/// Uploads larger than this are cut off by the server (the administration core refuses
/// files over [`crate::admin::MAX_UPLOAD`] with its own message before that).
pub const BODY_LIMIT: usize = 4 << 20;

/// What every handler shares.
#[derive(Debug)]
pub struct Web {
    pub relay: Arc<Relay>,
    pub auth: Auth,
    /// The warning above every page, and when it was made.
    banner: std::sync::Mutex<Option<(std::time::Instant, String)>>,
}

/// How long the banner is reused before it is made again.
const BANNER_FOR: Duration = Duration::from_secs(30);

impl Web {
    pub fn actor(s: &Session) -> Actor {
        Actor {
            who: s.user.clone(),
            origin: s.origin.clone(),
        }
    }

    /// What every page warns of (empty: nothing): internal users' certificates expiring
    /// within the first warning or expired, out-of-date CRLs, the tamper latch.
    pub fn banner(&self) -> String {
        let mut cached = self.banner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, text)) = cached.as_ref()
            && at.elapsed() < BANNER_FOR
        {
            return text.clone();
        }
        let text = banner_text(&self.relay);
        *cached = Some((std::time::Instant::now(), text.clone()));
        text
    }

    /// The session a request's cookie names.
    pub fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, COOKIE)?;
        let s = self.auth.session(&id)?;
        Some((id, s))
    }
}

fn banner_text(r: &Relay) -> String {
    let now = crate::spool::now();
    let mut parts = Vec::new();
    if let Some(t) = r.tamper.state() {
        parts.push(format!("TAMPER: {t}; signing and decrypting are stopped."));
    }
    let within = r.config.expiry_warnings.first().copied().unwrap_or(30);
    let ca = crate::relay::expiry::ca_subject(r);
    match crate::admin::expiring(r.store.as_ref(), ca.as_deref(), now, within) {
        Ok(list) if !list.is_empty() => {
            let expired = list.iter().filter(|e| e.days_left < 0).count();
            let first = &list[0];
            let mut t = format!(
                "{} internal user certificate(s) expire within {within} days",
                list.len() - expired
            );
            if expired > 0 {
                t.push_str(&format!(", {expired} expired"));
            }
            t.push_str(&format!(
                "; first: {} on {}.",
                first.address,
                crate::smime::asn1::day(first.not_after)
            ));
            parts.push(t);
        }
        Ok(_) => {}
        Err(e) => parts.push(format!("certificate store: {e}")),
    }
    if let Ok(stale) = crate::admin::crl::out_of_date(r.store.as_ref(), now)
        && stale > 0
    {
        parts.push(format!(
            "{stale} CRL(s) out of date: revocation status unknown for their certificates."
        ));
    }
    parts.join(" ")
}

/// A cookie's value.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// `Set-Cookie` for a session (empty value: ends it).
pub fn session_cookie(name: &str, value: &str) -> HeaderValue {
    let max_age = if value.is_empty() { "; Max-Age=0" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict{max_age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// The client's address (from the TLS listener).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl Peer {
    pub fn ip(&self) -> String {
        self.0.ip().to_string()
    }
}

/// Accepted TCP connections become TLS streams on their own tasks (a slow handshake holds
/// up no one); the finished ones are handed to the server.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (conn, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("web console: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(conn)).await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, "web console: TLS handshake: {e}"),
                        Err(_) => tracing::debug!(%addr, "web console: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended (it does not): wait for the shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Headers on every answer: nothing cached, no framing, no sniffing, scripts only our own.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    res
}

pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(pki::routes())
        .merge(pages::routes())
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(web)
}

/// Serves the console on `listener` until `shutdown` resolves.
pub async fn serve(
    relay: Arc<Relay>,
    listener: TlsListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let auth = Auth::open(&relay.config.data_dir, relay.config.web.session_idle)
        .map_err(std::io::Error::other)?;
    let web = Arc::new(Web {
        relay,
        auth,
        banner: Default::default(),
    });
    axum::serve(
        listener,
        router(web).into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
