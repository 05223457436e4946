//! The SMTP listener: drives the sans-I/O [`crate::smtp::Server`] over TCP (and TLS after
//! STARTTLS), decides MAIL and RCPT (relay rules, the sender's certificate), streams DATA
//! into the spool and answers `250` only once it is durable.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::smtp::{Event, MailParams, Password, RcptParams, Reply, Server, ServerConfig};
use crate::spool::{self, Envelope, Incoming, Recipient, Status};

use super::Relay;
use super::dsn::rfc5322_date;
use super::limits::ClientLimits;
use crate::keys::CertProblem;

/// How long a failed AUTH waits before its 535 (a brake on password guessing).
const AUTH_FAILURE_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Accepts connections until the task is aborted. `limits` are shared by every listener.
pub async fn accept_loop(relay: Arc<Relay>, listener: TcpListener, limits: Arc<ClientLimits>) {
    let sessions = Arc::new(tokio::sync::Semaphore::new(
        relay.config.server.max_sessions,
    ));
    // A session past its time limit that still does not end (a write the client never
    // reads, say) is dropped this long after.
    let hard_stop = relay.config.server.max_session_time + relay.config.server.idle_timeout;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let relay = relay.clone();
        let refuse = |tcp: TcpStream, reply: &'static [u8]| {
            tokio::spawn(async move {
                let mut tcp = tcp;
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(10), tcp.write_all(reply))
                        .await;
            });
        };
        let Some(slot) = limits.open_session(peer.ip()) else {
            tracing::warn!(%peer, "connection refused: too many sessions from this client");
            refuse(
                tcp,
                b"421 4.7.0 Too many connections from your address, try again later\r\n",
            );
            continue;
        };
        match sessions.clone().try_acquire_owned() {
            Ok(permit) => {
                let limits = limits.clone();
                tokio::spawn(async move {
                    if tokio::time::timeout(hard_stop, session(relay, tcp, peer, limits))
                        .await
                        .is_err()
                    {
                        tracing::warn!(%peer, "session dropped past its time limit");
                    }
                    drop(permit);
                    drop(slot);
                });
            }
            Err(_) => refuse(tcp, b"421 4.3.2 Too many connections, try again later\r\n"),
        }
    }
}

/// A connection, plain or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Gone,
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Gone => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// The transaction being received.
struct Tx {
    from: String,
    params: MailParams,
    recipients: Vec<Recipient>,
    incoming: Option<Incoming>,
    /// The spool failed while data came in: answer 451 at the end.
    spool_error: Option<String>,
    /// Whether the sender can sign, once asked (the same for every recipient).
    can_sign: Option<Result<(), Reply>>,
    /// An authenticated user's message's header section as it came in (at most
    /// [`HEADER_KEPT`] bytes), for the From check; others keep none.
    header: Vec<u8>,
    /// The header section is whole (or the limit reached): nothing more is kept.
    header_done: bool,
}

/// How much of a message's start the listener keeps to read its From field.
const HEADER_KEPT: usize = 256 * 1024;

/// Keeps the start of the data in `header` until the header section's empty line, looking
/// only at what is new each time.
fn keep_header(header: &mut Vec<u8>, bytes: &[u8]) -> bool {
    let from = header.len().saturating_sub(3);
    let room = HEADER_KEPT - header.len();
    header.extend_from_slice(&bytes[..bytes.len().min(room)]);
    header.len() >= HEADER_KEPT
        || header.starts_with(b"\r\n")
        || header[from..].windows(4).any(|w| w == b"\r\n\r\n")
}

struct Session {
    relay: Arc<Relay>,
    limits: Arc<ClientLimits>,
    peer: SocketAddr,
    internal_client: bool,
    /// The account AUTH accepted (it may relay, as itself).
    user: Option<String>,
    helo: String,
    tx: Option<Tx>,
}

/// Writes `out` to the client within `limit` (a client that does not read cannot hold the
/// session).
async fn send(conn: &mut Conn, out: &[u8], limit: std::time::Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, conn.write_all(out)).await,
        Ok(Ok(()))
    )
}

async fn session(relay: Arc<Relay>, tcp: TcpStream, peer: SocketAddr, limits: Arc<ClientLimits>) {
    let cfg = &relay.config.server;
    let mut server = Server::new(ServerConfig {
        hostname: cfg.hostname.clone(),
        max_message_size: cfg.max_message_size,
        max_recipients: cfg.max_recipients,
        max_line: 4096,
        max_errors: cfg.max_errors,
        max_auth_failures: cfg.max_auth_failures,
        starttls: relay.tls_server.is_some(),
        auth: relay.users.is_some(),
        bare_line_ends: cfg.bare_line_ends,
        max_header_size: cfg.max_header_size,
        max_hops: cfg.max_hops,
    });
    let mut s = Session {
        internal_client: relay.config.is_internal_client(peer.ip()),
        user: None,
        relay: relay.clone(),
        limits,
        peer,
        helo: String::new(),
        tx: None,
    };
    let mut conn = Conn::Plain(tcp);
    // Small: a thousand idle sessions should cost little; data streams through in pieces anyway.
    let mut buf = vec![0u8; 8 * 1024];
    let idle = cfg.idle_timeout;
    // However busy the client keeps it, the session ends by then.
    let deadline = tokio::time::Instant::now() + cfg.max_session_time;
    loop {
        let mut close = false;
        while let Some(ev) = server.next_event() {
            match ev {
                Event::StartTls => {
                    let out = server.take_output();
                    if !send(&mut conn, &out, idle).await {
                        return;
                    }
                    let Some(acceptor) = relay.tls_server.clone() else {
                        return;
                    };
                    let Conn::Plain(tcp) = std::mem::replace(&mut conn, Conn::Gone) else {
                        return;
                    };
                    let limit =
                        idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                    match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            conn = Conn::Tls(Box::new(tls));
                            server.tls_started();
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
                Event::Close => close = true,
                other => s.handle(&mut server, other).await,
            }
        }
        let out = server.take_output();
        if !out.is_empty() && !send(&mut conn, &out, idle).await {
            return;
        }
        if close || server.is_closed() {
            let _ = tokio::time::timeout(idle, conn.shutdown()).await;
            return;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let read = if left.is_zero() {
            Err(())
        } else {
            tokio::time::timeout(idle.min(left), conn.read(&mut buf))
                .await
                .map_err(|_| ())
        };
        let n = match read {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => n,
            Err(()) if left <= idle => {
                tracing::warn!(%peer, "session closed: over its time limit");
                send(
                    &mut conn,
                    b"421 4.4.2 Session time limit exceeded, closing the connection\r\n",
                    idle,
                )
                .await;
                return;
            }
            Err(()) => {
                send(
                    &mut conn,
                    b"421 4.4.2 Idle too long, closing the connection\r\n",
                    idle,
                )
                .await;
                return;
            }
        };
        server.receive(&buf[..n]);
    }
}

impl Session {
    async fn handle(&mut self, server: &mut Server, ev: Event) {
        match ev {
            Event::Hello { name, .. } => {
                self.helo = name;
                self.tx = None;
            }
            Event::Mail { from, params } => {
                // An authenticated user sends as themself only: the gateway signs as the sender.
                if let Some(user) = self.user.as_deref()
                    && !from.eq_ignore_ascii_case(user)
                {
                    tracing::warn!(peer = %self.peer, %user, %from, "sender refused: not the authenticated user");
                    server.reject(Reply::new(
                        553,
                        "5.7.1",
                        format!("Sender address <{from}> is not owned by user {user}"),
                    ));
                    return;
                }
                self.tx = Some(Tx {
                    from,
                    params,
                    recipients: Vec::new(),
                    incoming: None,
                    spool_error: None,
                    can_sign: None,
                    header: Vec::new(),
                    header_done: false,
                });
                server.accept("Ok");
            }
            Event::Rcpt { to, params } => match self.check_rcpt(&to, &params).await {
                Ok(()) => {
                    if let Some(tx) = self.tx.as_mut() {
                        tx.recipients.push(Recipient {
                            address: to,
                            notify: params.notify,
                            orcpt: params.orcpt,
                            status: Status::Pending { last: None },
                        });
                    }
                    server.accept("Ok");
                }
                Err(reply) => server.reject(reply),
            },
            Event::DataStart => {
                if let Some(mut tx) = self.tx.take() {
                    match self.relay.spool.incoming() {
                        Ok(mut inc) => {
                            let received = self.received_field(&inc.id, server.is_tls(), &tx);
                            if let Err(e) = inc.write(received.as_bytes()) {
                                tx.spool_error = Some(e.to_string());
                            }
                            tx.incoming = Some(inc);
                        }
                        Err(e) => tx.spool_error = Some(e.to_string()),
                    }
                    self.tx = Some(tx);
                }
            }
            Event::Data(bytes) => {
                if self.user.is_some()
                    && let Some(tx) = self.tx.as_mut()
                    && !tx.header_done
                {
                    tx.header_done = keep_header(&mut tx.header, &bytes);
                }
                if let Some(tx) = self.tx.as_mut()
                    && tx.spool_error.is_none()
                    && let Some(inc) = tx.incoming.as_mut()
                    && let Err(e) = inc.write(&bytes)
                {
                    tx.spool_error = Some(e.to_string());
                }
            }
            Event::DataAborted => {
                self.tx = None;
            }
            Event::DataEnd => {
                if let Some(refusal) = self.refused_sender() {
                    server.reject(refusal);
                    self.tx = None;
                    return;
                }
                let reply = self.commit().await;
                match reply {
                    Ok(id) => server.accept(&format!("Ok: queued as {id}")),
                    Err(r) => server.reject(r),
                }
                self.tx = None;
            }
            Event::Auth { user, password } => self.auth(server, user, password).await,
            Event::StartTls | Event::Close => {}
        }
    }

    /// AUTH PLAIN/LOGIN credentials against `server.auth_users` (Argon2id, on a blocking
    /// thread); a failure waits a second before it is answered.
    async fn auth(&mut self, server: &mut Server, user: String, password: Password) {
        // A client with too many recent failures is refused before any password is checked
        // (limits.rs); each failure below is noted for it.
        if let Some(left) = self
            .limits
            .auth_locked(self.peer.ip(), std::time::Instant::now())
        {
            tracing::warn!(peer = %self.peer, %user, locked_for_s = left.as_secs(), "authentication refused: too many failures from this client");
            server.reject(Reply::new(
                454,
                "4.7.0",
                "Too many failed authentications from your address, try again later",
            ));
            return;
        }
        let relay = self.relay.clone();
        let (name, address) = (user.clone(), self.peer.ip().to_string());
        let checked = tokio::task::spawn_blocking(move || match &relay.users {
            Some(store) => store.verify_from(&name, password.expose(), &address),
            None => Ok(None),
        })
        .await;
        match checked {
            Ok(Ok(Some(user))) => {
                tracing::info!(peer = %self.peer, %user, "authenticated");
                self.user = Some(user);
                server.accept("Authentication successful");
            }
            Ok(Ok(None)) => {
                let failures = self
                    .limits
                    .auth_failed(self.peer.ip(), std::time::Instant::now());
                tracing::warn!(peer = %self.peer, %user, failures, "authentication failed");
                tokio::time::sleep(AUTH_FAILURE_DELAY).await;
                server.reject(Reply::new(
                    535,
                    "5.7.8",
                    "Authentication credentials invalid",
                ));
            }
            // Too many password checks at once (the hashing threads' queue is full), or
            // too many failures from this address.
            Ok(Err(e)) if e.is_temporary() => {
                tracing::warn!(peer = %self.peer, "SMTP AUTH: {e}");
                server.reject(Reply::new(454, "4.7.0", "Temporary authentication failure"));
            }
            Ok(Err(e)) => {
                tracing::error!("SMTP accounts: {e}");
                server.reject(Reply::new(454, "4.7.0", "Temporary authentication failure"));
            }
            Err(_) => server.reject(Reply::new(454, "4.7.0", "Temporary authentication failure")),
        }
    }

    fn received_field(&self, id: &str, tls: bool, tx: &Tx) -> String {
        // RFC 3848: S for TLS, A for an authenticated client.
        let proto = match (tls, self.user.is_some()) {
            (true, true) => "ESMTPSA",
            (true, false) => "ESMTPS",
            (false, true) => "ESMTPA",
            (false, false) => "ESMTP",
        };
        let for_clause = if tx.recipients.len() == 1 {
            format!("\r\n\tfor <{}>", tx.recipients[0].address)
        } else {
            String::new()
        };
        format!(
            "Received: from {helo} ({ip})\r\n\tby {host} (smimegw) with {proto} id {id}{for_clause};\r\n\t{date}\r\n",
            helo = if self.helo.is_empty() {
                "unknown"
            } else {
                &self.helo
            },
            ip = self.peer.ip(),
            host = self.relay.config.server.hostname,
            date = rfc5322_date(spool::now()),
        )
    }

    /// RCPT: relay rules, then (outbound) the sender's signing certificate.
    async fn check_rcpt(&mut self, to: &str, _params: &RcptParams) -> Result<(), Reply> {
        let config = &self.relay.config;
        let Some(tx) = self.tx.as_ref() else {
            return Err(Reply::new(503, "5.5.1", "MAIL first"));
        };
        if to.is_empty() || !to.contains('@') {
            return Err(Reply::new(
                550,
                "5.1.3",
                "Recipient address is not a mailbox (user@domain)",
            ));
        }
        // From outside, a plain user@domain only: `user%host@ours`, `host!user@ours`,
        // `"a@b"@ours`, `a@b@ours` and source routes look like ours but a permissive server
        // inside would relay them on. (Inside, they are not internal: see
        // `Config::is_internal_address`.)
        if !self.internal_client
            && self.user.is_none()
            && crate::config::plain_mailbox(to).is_none()
        {
            tracing::warn!(peer = %self.peer, %to, "recipient refused: not a plain mailbox");
            return Err(Reply::new(
                550,
                "5.1.3",
                "Recipient address syntax not accepted: user@domain only (no %, !, quoted \
                 local part, source route or second @)",
            ));
        }
        if config.is_internal_address(to) {
            return Ok(());
        }
        if !self.internal_client && self.user.is_none() {
            return Err(Reply::new(554, "5.7.1", "Relay access denied"));
        }
        // Outbound from an internal sender: will it be signed, and can it be?
        let from = tx.from.clone();
        if !config.is_internal_address(&from) {
            return Ok(());
        }
        // The header is not known yet: a header exception may still spare the message.
        let policy = self.relay.policy();
        if !crate::policy::decide(&policy, &from, true, to, None, false).sign {
            return Ok(());
        }
        if let Some(known) = &tx.can_sign {
            return known.clone();
        }
        // Answered from what is held, without the token: a certificate the built-in CA
        // will issue is made by the queue, outside the SMTP dialogue (and when the token
        // cannot be asked then, the message waits in the queue, never going out unsigned).
        let answer = match self.relay.keys.can_sign(&from, spool::now()) {
            Ok(()) => Ok(()),
            Err(CertProblem::Expired) => {
                Err(Reply::new(451, "4.7.1", "S/MIME certificate is expired"))
            }
            Err(_) => Err(Reply::new(451, "4.7.1", "S/MIME certificate is not found")),
        };
        if let Some(tx) = self.tx.as_mut() {
            tx.can_sign = Some(answer.clone());
        }
        answer
    }

    /// An authenticated user signs only as herself: a From field that is not hers (nor
    /// granted her by `policy.send_as`), or that cannot be read as one address, is refused.
    fn refused_sender(&self) -> Option<Reply> {
        let user = self.user.as_deref()?;
        let tx = self.tx.as_ref()?;
        let from = crate::smime::mime::Entity::parse(&tx.header)
            .map_err(|_| crate::mailbox::FromProblem::Unparsable)
            .and_then(|e| {
                crate::mailbox::sender(e.fields.iter().map(|f| (f.name, f.value.as_str())))
            });
        let why = match from {
            Ok(a) if self.relay.policy().may_send_as(user, a.as_str()) => return None,
            Ok(_) => format!("The From address is not one that user {user} may send as"),
            Err(p) => format!("Refused: {p}"),
        };
        tracing::warn!(peer = %self.peer, %user, "message refused: {why}");
        Some(Reply::new(550, "5.7.1", why))
    }

    /// DATA ended: fsync the message and its envelope, then `250`.
    async fn commit(&mut self) -> Result<String, Reply> {
        let Some(mut tx) = self.tx.take() else {
            return Err(Reply::new(503, "5.5.1", "No transaction"));
        };
        if let Some(e) = tx.spool_error.take() {
            tracing::error!("spool: {e}");
            return Err(Reply::new(
                451,
                "4.3.0",
                "Cannot store the message now, try again later",
            ));
        }
        let Some(incoming) = tx.incoming.take() else {
            return Err(Reply::new(451, "4.3.0", "No spool file"));
        };
        let mut env = Envelope {
            authenticated: self.user.clone(),
            ret_full: tx.params.ret_full,
            envid: tx.params.envid,
            smtputf8: tx.params.smtputf8,
            ..Envelope::new(
                &tx.from,
                tx.recipients,
                &self.peer.ip().to_string(),
                &self.helo,
            )
        };
        let relay = self.relay.clone();
        let done = tokio::task::spawn_blocking(move || {
            relay.spool.commit(incoming, &mut env).map(|()| env)
        })
        .await;
        match done {
            Ok(Ok(env)) => {
                tracing::info!(
                    id = %env.id,
                    from = %env.from,
                    rcpts = env.recipients.len(),
                    size = env.size,
                    client = %env.client,
                    "queued"
                );
                self.relay.queue.schedule(&env.id, 0);
                Ok(env.id)
            }
            Ok(Err(e)) => {
                tracing::error!("spool: {e}");
                Err(Reply::new(
                    451,
                    "4.3.0",
                    "Cannot store the message now, try again later",
                ))
            }
            Err(_) => Err(Reply::new(451, "4.3.0", "Internal error, try again later")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_kept_up_to_its_empty_line_across_pieces() {
        let mut h = Vec::new();
        assert!(!keep_header(&mut h, b"From: a@x.test\r\n"));
        assert!(!keep_header(&mut h, b"Subject: s\r"));
        assert!(keep_header(&mut h, b"\n\r\nbody"));
        let mut h = Vec::new();
        assert!(keep_header(&mut h, b"\r\nno header at all"));
        let mut h = Vec::new();
        assert!(keep_header(&mut h, &vec![b'x'; HEADER_KEPT + 10]));
        assert_eq!(h.len(), HEADER_KEPT);
    }
}
