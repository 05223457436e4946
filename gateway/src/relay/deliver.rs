//! Delivery: one SMTP transaction to a next hop (STARTTLS when offered or required,
//! pipelined when offered, a result per recipient), or a file into a Maildir.
//!
//! Connections are reused: after a transaction the session stays open in a [`Pool`] for
//! [`IDLE_LIMIT`]; the next transaction to the same hop checks it with RSET and goes on
//! (as Postfix's connection cache does), or connects afresh when the hop has hung up.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::TlsMode;
use crate::smtp::client::{Capabilities, DataEncoder, ReplyReader, Response, Transaction};

/// The result for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted: the final reply.
    Delivered(String),
    /// Try again later: why.
    Deferred(String),
    /// Refused for good: why.
    Failed(String),
}

/// How long to wait for a connection, a reply, the end of data (RFC 5321 §4.5.3.2 asks for
/// minutes; a relay in a data centre does with less).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
const DATA_END_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a delivered-to session stays open for the next message, and how many idle ones
/// a hop keeps.
pub const IDLE_LIMIT: Duration = Duration::from_secs(5);
const IDLE_PER_HOP: usize = 32;

/// A connection to a next hop, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An open session after a transaction, ready for MAIL.
struct Idle {
    io: Io<Box<dyn Stream>>,
    caps: Capabilities,
    since: Instant,
}

/// Idle sessions by hop.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<(String, Idle)>>,
    /// A sweeper task runs (one at most, only while sessions wait).
    sweeping: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.idle.lock().map_or(0, |v| v.len());
        f.debug_struct("Pool").field("idle", &n).finish()
    }
}

impl Pool {
    /// The most recently used live session to `key`; expired ones are dropped.
    fn take(&self, key: &str) -> Option<Idle> {
        let mut idle = self.idle.lock().ok()?;
        idle.retain(|(_, s)| s.since.elapsed() < IDLE_LIMIT);
        let i = idle.iter().rposition(|(k, _)| k == key)?;
        Some(idle.remove(i).1)
    }

    fn put(self: &Arc<Self>, key: String, s: Idle) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        if idle.iter().filter(|(k, _)| *k == key).count() >= IDLE_PER_HOP {
            return;
        }
        idle.push((key, s));
        drop(idle);
        if !self.sweeping.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.clone().sweep());
        }
    }

    /// Ends, politely, the sessions nobody took in time; stops when none wait.
    async fn sweep(self: Arc<Self>) {
        loop {
            tokio::time::sleep(IDLE_LIMIT / 2).await;
            let (expired, empty) = match self.idle.lock() {
                Ok(mut idle) => {
                    let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut *idle)
                        .into_iter()
                        .partition(|(_, s)| s.since.elapsed() >= IDLE_LIMIT);
                    *idle = keep;
                    let empty = idle.is_empty();
                    if empty {
                        // Under the lock: a `put` after this starts a new sweeper.
                        self.sweeping.store(false, Ordering::Release);
                    }
                    (old, empty)
                }
                Err(_) => (Vec::new(), true),
            };
            for (_, mut s) in expired {
                let _ = timeout(Duration::from_secs(5), s.io.command("QUIT\r\n")).await;
            }
            if empty {
                return;
            }
        }
    }
}

struct Io<S> {
    stream: S,
    reader: ReplyReader,
    buf: Vec<u8>,
}

/// A failure of the whole transaction.
enum Whole {
    Deferred(String),
    Failed(String),
}

impl From<std::io::Error> for Whole {
    fn from(e: std::io::Error) -> Self {
        Whole::Deferred(format!("4.4.2 connection to the next hop failed: {e}"))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    fn new(stream: S) -> Self {
        Io {
            stream,
            reader: ReplyReader::default(),
            buf: vec![0; 16 * 1024],
        }
    }

    async fn reply(&mut self, wait: Duration) -> Result<Response, Whole> {
        loop {
            match self.reader.next_reply() {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => return Err(Whole::Deferred(format!("4.5.0 {e}"))),
            }
            let n = timeout(wait, self.stream.read(&mut self.buf))
                .await
                .map_err(|_| {
                    Whole::Deferred("4.4.2 the next hop did not answer in time".into())
                })??;
            if n == 0 {
                return Err(Whole::Deferred(
                    "4.4.2 the next hop closed the connection".into(),
                ));
            }
            self.reader.receive(&self.buf[..n]);
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), Whole> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    async fn command(&mut self, cmd: &str) -> Result<Response, Whole> {
        self.send(cmd.as_bytes()).await?;
        self.reply(REPLY_TIMEOUT).await
    }

    async fn ehlo(&mut self, hostname: &str) -> Result<Capabilities, Whole> {
        let r = self.command(&format!("EHLO {hostname}\r\n")).await?;
        if r.code == 250 {
            return Ok(Capabilities::from_ehlo(&r));
        }
        let r = self.command(&format!("HELO {hostname}\r\n")).await?;
        if r.code == 250 {
            Ok(Capabilities::default())
        } else {
            Err(whole_from(&r, "HELO"))
        }
    }
}

fn whole_from(r: &Response, what: &str) -> Whole {
    let text = format!("the next hop refused {what}: {}", r.one_line());
    if r.is_permanent() {
        Whole::Failed(text)
    } else {
        Whole::Deferred(text)
    }
}

/// Accepts any certificate: opportunistic TLS protects against passive listeners, as every
/// MTA does it; an administrator who wants the next hop authenticated sets `tls = "required"`
/// and a `ca_file`.
#[derive(Debug)]
pub struct AnyCertificate(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct Hop {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub tls_config: Arc<rustls::ClientConfig>,
    /// Our name in EHLO.
    pub hostname: String,
    /// Log in after STARTTLS (never without TLS).
    pub auth: Option<Login>,
}

/// An account at a next hop.
#[derive(Clone)]
pub struct Login {
    pub user: String,
    pub password: Arc<hsm::Pin>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// One line of base64 (AUTH wants no line breaks).
fn b64_line(data: &[u8]) -> String {
    crate::smime::mime::base64_encode(data)
        .into_iter()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .map(char::from)
        .collect()
}

/// AUTH PLAIN (or LOGIN) with the hop's account; the password is never logged or echoed.
async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io<S>,
    caps: &Capabilities,
    login: &Login,
) -> Result<(), Whole> {
    let refused = |r: &Response| {
        Whole::Deferred(format!(
            "4.7.0 the next hop refused our login as {}: {}",
            login.user,
            r.one_line()
        ))
    };
    let r = if caps.auth.iter().any(|m| m == "PLAIN") {
        let mut token = zeroize::Zeroizing::new(Vec::new());
        token.push(0);
        token.extend_from_slice(login.user.as_bytes());
        token.push(0);
        token.extend_from_slice(login.password.expose().as_bytes());
        let cmd = zeroize::Zeroizing::new(format!("AUTH PLAIN {}\r\n", b64_line(&token)));
        io.command(&cmd).await?
    } else if caps.auth.iter().any(|m| m == "LOGIN") {
        let r = io.command("AUTH LOGIN\r\n").await?;
        if r.code != 334 {
            return Err(refused(&r));
        }
        let r = io
            .command(&format!("{}\r\n", b64_line(login.user.as_bytes())))
            .await?;
        if r.code != 334 {
            return Err(refused(&r));
        }
        let line = zeroize::Zeroizing::new(format!(
            "{}\r\n",
            b64_line(login.password.expose().as_bytes())
        ));
        io.command(&line).await?
    } else {
        return Err(Whole::Deferred(format!(
            "4.7.0 the next hop offers no AUTH PLAIN or LOGIN for our login as {}",
            login.user
        )));
    };
    if r.code == 235 {
        Ok(())
    } else {
        Err(refused(&r))
    }
}

/// Sends `body` to the next hop for the transaction's recipients; one outcome per recipient,
/// in order. Reuses an idle session to the hop when there is one.
pub async fn smtp<B: Read + Seek + Send>(
    pool: &Arc<Pool>,
    hop: &Hop,
    tx: &Transaction,
    body: B,
) -> Vec<Outcome> {
    let n = tx.recipients.len();
    let key = format!(
        "{}:{}:{:?}:{:p}",
        hop.host,
        hop.port,
        hop.tls,
        Arc::as_ptr(&hop.tls_config)
    );
    let mut session = None;
    while let Some(mut s) = pool.take(&key) {
        // Still there? (The hop may have closed it meanwhile.)
        match timeout(Duration::from_secs(30), s.io.command("RSET\r\n")).await {
            Ok(Ok(r)) if r.code == 250 => {
                session = Some(s);
                break;
            }
            _ => continue,
        }
    }
    let mut s = match session {
        Some(s) => s,
        None => match connect(hop).await {
            Ok(s) => s,
            Err(Whole::Deferred(why)) => return vec![Outcome::Deferred(why); n],
            Err(Whole::Failed(why)) => return vec![Outcome::Failed(why); n],
        },
    };
    match transaction(&mut s.io, &s.caps, tx, body).await {
        Ok((outcomes, reusable)) => {
            if reusable {
                s.since = Instant::now();
                pool.put(key, s);
            } else {
                let _ = timeout(Duration::from_secs(5), s.io.command("QUIT\r\n")).await;
            }
            outcomes
        }
        Err(Whole::Deferred(why)) => vec![Outcome::Deferred(why); n],
        Err(Whole::Failed(why)) => vec![Outcome::Failed(why); n],
    }
}

/// A new session to the hop, greeted, with STARTTLS as the hop's mode asks.
async fn connect(hop: &Hop) -> Result<Idle, Whole> {
    let tcp = timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((hop.host.as_str(), hop.port)),
    )
    .await
    .map_err(|_| {
        Whole::Deferred(format!(
            "4.4.1 no answer from the next hop {}:{}",
            hop.host, hop.port
        ))
    })?
    .map_err(|e| {
        Whole::Deferred(format!(
            "4.4.1 cannot connect to the next hop {}:{}: {e}",
            hop.host, hop.port
        ))
    })?;
    let _ = tcp.set_nodelay(true);
    let mut io: Io<Box<dyn Stream>> = Io::new(Box::new(tcp));
    let greeting = io.reply(REPLY_TIMEOUT).await?;
    if greeting.code != 220 {
        return Err(Whole::Deferred(format!(
            "4.4.2 the next hop does not greet: {}",
            greeting.one_line()
        )));
    }
    let caps = io.ehlo(&hop.hostname).await?;
    if caps.starttls && hop.tls != TlsMode::Off {
        let r = io.command("STARTTLS\r\n").await?;
        if r.code == 220 {
            if io.reader.has_partial() {
                return Err(Whole::Deferred(
                    "4.7.0 the next hop sent data before the TLS handshake".into(),
                ));
            }
            let name = ServerName::try_from(hop.host.clone())
                .unwrap_or_else(|_| ServerName::try_from("localhost").expect("a valid name"));
            let connector = tokio_rustls::TlsConnector::from(hop.tls_config.clone());
            let tls = connector.connect(name, io.stream).await.map_err(|e| {
                Whole::Deferred(format!("4.7.0 TLS handshake with the next hop failed: {e}"))
            })?;
            let mut io: Io<Box<dyn Stream>> = Io::new(Box::new(tls));
            let caps = io.ehlo(&hop.hostname).await?;
            if let Some(l) = &hop.auth {
                login(&mut io, &caps, l).await?;
            }
            return Ok(Idle {
                io,
                caps,
                since: Instant::now(),
            });
        }
        if hop.tls == TlsMode::Required {
            return Err(Whole::Deferred(format!(
                "4.7.0 the next hop refused STARTTLS: {}",
                r.one_line()
            )));
        }
    } else if hop.tls == TlsMode::Required {
        return Err(Whole::Deferred(
            "4.7.0 TLS is required and the next hop does not offer STARTTLS".into(),
        ));
    }
    if let Some(l) = &hop.auth {
        return Err(Whole::Deferred(format!(
            "4.7.0 no TLS with the next hop, so no login as {}: the password never goes in clear",
            l.user
        )));
    }
    Ok(Idle {
        io,
        caps,
        since: Instant::now(),
    })
}

/// One transaction on an open session: the outcomes, and whether the session is fit for the
/// next one.
async fn transaction<S: AsyncRead + AsyncWrite + Unpin, B: Read + Seek>(
    io: &mut Io<S>,
    caps: &Capabilities,
    tx: &Transaction,
    mut body: B,
) -> Result<(Vec<Outcome>, bool), Whole> {
    if let Some(limit) = caps.size
        && limit > 0
        && tx.size > limit
    {
        return Err(Whole::Failed(format!(
            "5.3.4 the message ({} bytes) is larger than the next hop accepts ({limit})",
            tx.size
        )));
    }
    let mail = tx.mail_command(caps);
    let rcpts = tx.rcpt_commands(caps);
    let mut outcomes = Vec::with_capacity(rcpts.len());
    let mut accepted = 0;
    if caps.pipelining {
        let mut all = mail.clone();
        for r in &rcpts {
            all.push_str(r);
        }
        all.push_str("DATA\r\n");
        io.send(all.as_bytes()).await?;
    } else {
        io.send(mail.as_bytes()).await?;
    }
    let r = io.reply(REPLY_TIMEOUT).await?;
    if r.code != 250 {
        // With pipelining the RCPTs and DATA that follow are answered too (refused).
        return Err(whole_from(&r, "the sender"));
    }
    for cmd in &rcpts {
        if !caps.pipelining {
            io.send(cmd.as_bytes()).await?;
        }
        let r = io.reply(REPLY_TIMEOUT).await?;
        outcomes.push(if r.code == 250 || r.code == 251 {
            accepted += 1;
            None
        } else if r.is_permanent() {
            Some(Outcome::Failed(format!(
                "the next hop refused the recipient: {}",
                r.one_line()
            )))
        } else {
            Some(Outcome::Deferred(format!(
                "the next hop deferred the recipient: {}",
                r.one_line()
            )))
        });
    }
    let data_reply = if caps.pipelining {
        Some(io.reply(REPLY_TIMEOUT).await?)
    } else if accepted > 0 {
        Some(io.command("DATA\r\n").await?)
    } else {
        None
    };
    let go = data_reply.as_ref().is_some_and(|r| r.code == 354);
    if accepted == 0 || !go {
        if go {
            // Pipelined DATA accepted without recipients cannot happen (RFC 2920), but end it.
            io.send(b".\r\n").await?;
            let _ = io.reply(REPLY_TIMEOUT).await;
        }
        let data_why = data_reply
            .filter(|r| r.code != 354 && accepted > 0)
            .map(|r| whole_from(&r, "DATA"));
        if let Some(w) = data_why {
            let _ = io.command("QUIT\r\n").await;
            return Err(w);
        }
        // Every recipient refused: the session itself is fine (RSET on reuse clears it).
        let outcomes = outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Deferred("4.5.0 DATA refused".into())))
            .collect();
        return Ok((outcomes, true));
    }
    body.seek(SeekFrom::Start(0))?;
    let mut enc = DataEncoder::default();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(70 * 1024);
    loop {
        let n = body.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        out.clear();
        enc.encode(&chunk[..n], &mut out);
        io.stream.write_all(&out).await?;
    }
    out.clear();
    enc.finish(&mut out);
    io.send(&out).await?;
    let end = io.reply(DATA_END_TIMEOUT).await?;
    // A 421 means the hop is closing.
    let reusable = end.code != 421;
    let final_outcome = if end.code == 250 {
        Outcome::Delivered(end.one_line())
    } else if end.is_permanent() {
        Outcome::Failed(format!(
            "the next hop refused the message: {}",
            end.one_line()
        ))
    } else {
        Outcome::Deferred(format!(
            "the next hop deferred the message: {}",
            end.one_line()
        ))
    };
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| final_outcome.clone()))
        .collect();
    Ok((outcomes, reusable))
}

/// Writes the message into a Maildir (`tmp/` then `new/`, fsynced), with a `Delivered-To`
/// field per recipient as local delivery agents add. Returns the file name.
pub fn maildir<B: Read + Seek>(
    dir: &Path,
    recipients: &[String],
    body: &mut B,
    id: &str,
) -> std::io::Result<String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    // Delivered mail (inbound: decrypted) is the owner's only, whatever the umask.
    for d in ["tmp", "new", "cur"] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join(d))?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "{}.M{}P{}Q{seq}_{id}.smimegw",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id()
    );
    let tmp = dir.join("tmp").join(&name);
    let mut f = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?,
    );
    for r in recipients {
        write!(f, "Delivered-To: {r}\r\n")?;
    }
    body.seek(SeekFrom::Start(0))?;
    std::io::copy(body, &mut f)?;
    let f = f.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join("new").join(&name))?;
    File::open(dir.join("new"))?.sync_all()?;
    Ok(name)
}
