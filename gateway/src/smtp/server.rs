//! The SMTP server protocol (RFC 5321, with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
//! ENHANCEDSTATUSCODES, DSN and STARTTLS), sans I/O: bytes go in with [`Server::receive`],
//! decisions come out as [`Event`]s, replies to send come out of [`Server::take_output`].
//!
//! The caller (the tokio listener, or a test) answers the events that need a decision
//! (`Mail`, `Rcpt`, `DataEnd`) with [`Server::accept`] or [`Server::reject`]; until it does,
//! pipelined commands wait in the input buffer, so replies always come in command order.
//! Message data is handed over dot-unstuffed, exactly as received otherwise.

use std::collections::VecDeque;

/// What the listener offers and enforces.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Largest message accepted, in bytes (announced with SIZE).
    pub max_message_size: u64,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Longest command or text line, CRLF included (RFC 5321 requires at least 512 and 1000).
    pub max_line: usize,
    /// Refusals (every 4xx and 5xx reply, the caller's included) before the session is
    /// closed with 421 (a guard against abuse: address harvesting, relay probing).
    pub max_errors: usize,
    /// Failed AUTH attempts before the session is closed with 421 (a brake on password
    /// guessing; the listener also counts failures per client address).
    pub max_auth_failures: usize,
    /// STARTTLS is offered (a certificate is configured) and the session is not yet in TLS.
    pub starttls: bool,
    /// AUTH PLAIN and LOGIN are offered, over TLS only (RFC 4954 §4).
    pub auth: bool,
    /// What a bare LF or bare CR in message data gets (RFC 5321 §2.3.8).
    pub bare_line_ends: BareLineEnds,
    /// Largest header section accepted, in bytes (a guard against header bombs).
    pub max_header_size: u64,
    /// Most `Received:` fields a message may arrive with (RFC 5321 §6.3: loop detection).
    pub max_hops: usize,
}

/// Message data lines must end with CRLF; what happens to those that do not.
///
/// Either way, only `<CR><LF>.<CR><LF>` ends the data: a `<LF>.<LF>` (or `<LF>.<CR><LF>`) is
/// data, so a message cannot carry a second, smuggled one that another server would split off
/// (SMTP smuggling, CVE-2023-51764/51765/51766).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareLineEnds {
    /// Refuse the message with 554 5.5.2 and close the session (Postfix's
    /// `smtpd_forbid_bare_newline = yes`).
    #[default]
    Reject,
    /// Take a bare LF as a line end and pass it on as CRLF; a bare CR is kept as data.
    Normalize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: "localhost".into(),
            max_message_size: 50 << 20,
            max_recipients: 1000,
            max_line: 4096,
            max_errors: 20,
            max_auth_failures: 3,
            starttls: false,
            auth: false,
            bare_line_ends: BareLineEnds::Reject,
            max_header_size: 1 << 20,
            max_hops: 50,
        }
    }
}

/// A reply: code, enhanced status code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: &'static str,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Self {
        Reply {
            code,
            status,
            text: text.into(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let lines: Vec<&str> = self.text.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            let status = if self.status.is_empty() {
                String::new()
            } else {
                format!("{} ", self.status)
            };
            out.extend_from_slice(format!("{}{sep}{status}{line}\r\n", self.code).as_bytes());
        }
    }
}

/// MAIL FROM parameters (RFC 1870, 6152, 6531, 3461).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    pub size: Option<u64>,
    /// BODY=8BITMIME.
    pub eight_bit: bool,
    pub smtputf8: bool,
    /// RET=FULL (true) or HDRS (false).
    pub ret_full: Option<bool>,
    pub envid: Option<String>,
}

/// RCPT TO parameters (RFC 3461).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    /// NOTIFY=NEVER or a list of SUCCESS, FAILURE, DELAY, as written (upper case).
    pub notify: Option<String>,
    /// ORCPT=type;xtext, as written.
    pub orcpt: Option<String>,
}

/// A password from AUTH: zeroed when dropped, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(zeroize::Zeroizing<String>);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

/// What the caller must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// EHLO or HELO: the client's name (informational).
    Hello { name: String, extended: bool },
    /// A sender: answer with `accept` or `reject`. The empty path `<>` is "".
    Mail { from: String, params: MailParams },
    /// A recipient: answer with `accept` or `reject`.
    Rcpt { to: String, params: RcptParams },
    /// Message data begins (after the 354): open a spool file.
    DataStart,
    /// A piece of message data, dot-unstuffed.
    Data(Vec<u8>),
    /// The end of the data: make it durable, then `accept` (250) or `reject`.
    DataEnd,
    /// The data was refused while it came in (too large): discard what was spooled.
    DataAborted,
    /// AUTH credentials: check them, then `accept` (235) or `reject` (535).
    Auth { user: String, password: Password },
    /// The 220 to STARTTLS has been queued: send it, run the TLS handshake, then call
    /// [`Server::tls_started`].
    StartTls,
    /// The session is over (QUIT, too many errors): send the output and close.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before EHLO/HELO.
    Fresh,
    /// Greeted, no transaction.
    Ready,
    /// MAIL accepted.
    Mail,
    /// Waiting for the caller's decision.
    Pending(Decision),
    /// Reading message data.
    Data,
    /// STARTTLS answered; waiting for the TLS handshake.
    Handshake,
    /// AUTH LOGIN/PLAIN waiting for a continuation line.
    AuthLine(AuthStep),
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Mail,
    Rcpt,
    DataEnd,
    Auth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthStep {
    Plain,
    LoginUser,
    LoginPassword,
}

/// One SMTP session, server side.
#[derive(Debug)]
pub struct Server {
    cfg: ServerConfig,
    state: State,
    input: Vec<u8>,
    output: Vec<u8>,
    events: VecDeque<Event>,
    extended: bool,
    tls: bool,
    recipients: usize,
    data: Incoming,
    errors: usize,
    /// AUTH attempts refused in this session.
    auth_failures: usize,
    /// Inside an over-long line being skipped.
    skipping_line: bool,
    /// In message data, the input starts in the middle of a line.
    mid_line: bool,
    /// In message data, the last line ended with CRLF (or none came yet): only then may a
    /// "." line end the data.
    after_crlf: bool,
    /// The user AUTH accepted.
    authenticated: Option<String>,
    /// AUTH LOGIN's user name while the password is asked for.
    login_user: Option<String>,
}

impl Server {
    /// A new session; the greeting is already in the output.
    pub fn new(cfg: ServerConfig) -> Self {
        let mut s = Server {
            cfg,
            state: State::Fresh,
            input: Vec::new(),
            output: Vec::new(),
            events: VecDeque::new(),
            extended: false,
            tls: false,
            recipients: 0,
            data: Incoming::default(),
            errors: 0,
            auth_failures: 0,
            skipping_line: false,
            mid_line: false,
            after_crlf: true,
            authenticated: None,
            login_user: None,
        };
        let greeting = Reply::new(220, "", format!("{} ESMTP smimegw", s.cfg.hostname));
        greeting.encode(&mut s.output);
        s
    }

    /// Bytes received from the client.
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.state == State::Closed {
            return;
        }
        self.input.extend_from_slice(bytes);
        self.process();
    }

    /// The next event, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to send to the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Whether the session is over (after the output is sent).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Accepts the pending `Mail`, `Rcpt` or `DataEnd`; `text` is the reply's text
    /// (for `DataEnd`, say "Ok: queued as ID").
    pub fn accept(&mut self, text: &str) {
        let State::Pending(d) = self.state else {
            return;
        };
        match d {
            Decision::Mail => {
                Reply::new(250, "2.1.0", text).encode(&mut self.output);
                self.state = State::Mail;
            }
            Decision::Rcpt => {
                self.recipients += 1;
                Reply::new(250, "2.1.5", text).encode(&mut self.output);
                self.state = State::Mail;
            }
            Decision::DataEnd => {
                Reply::new(250, "2.0.0", text).encode(&mut self.output);
                self.reset();
            }
            Decision::Auth => {
                Reply::new(235, "2.7.0", text).encode(&mut self.output);
                self.authenticated = self.login_user.take();
                self.state = State::Ready;
            }
        }
        self.process();
    }

    /// The user AUTH accepted in this session.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// Refuses the pending `Mail`, `Rcpt`, `DataEnd` or `Auth` with `reply` (4xx or 5xx).
    /// The refusal counts toward `max_errors` (and a refused AUTH toward
    /// `max_auth_failures`): past either, 421 follows and the session closes.
    pub fn reject(&mut self, reply: Reply) {
        let State::Pending(d) = self.state else {
            return;
        };
        reply.encode(&mut self.output);
        self.state = match d {
            Decision::Mail => State::Ready,
            Decision::Rcpt => State::Mail,
            Decision::DataEnd => {
                self.reset();
                State::Ready
            }
            Decision::Auth => {
                self.login_user = None;
                State::Ready
            }
        };
        if reply.code >= 400 {
            self.refused(d == Decision::Auth);
        }
        self.process();
    }

    /// The TLS handshake after STARTTLS succeeded: the session starts over (RFC 3207 §4.2).
    pub fn tls_started(&mut self) {
        if self.state != State::Handshake {
            return;
        }
        self.tls = true;
        self.cfg.starttls = false;
        self.state = State::Fresh;
        self.extended = false;
        self.reset();
        self.process();
    }

    /// Whether the session runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    fn reset(&mut self) {
        if self.state != State::Fresh {
            self.state = State::Ready;
        }
        self.recipients = 0;
        self.data = Incoming::default();
        self.mid_line = false;
        self.after_crlf = true;
    }

    fn reply(&mut self, code: u16, status: &'static str, text: &str) {
        Reply::new(code, status, text).encode(&mut self.output);
        if code >= 400 {
            self.refused(false);
        }
    }

    /// Counts a refusal just sent (`auth`: a failed AUTH); closes the session with 421 once
    /// a limit is reached.
    fn refused(&mut self, auth: bool) {
        if self.state == State::Closed {
            return;
        }
        self.errors += 1;
        if auth {
            self.auth_failures += 1;
            if self.auth_failures >= self.cfg.max_auth_failures {
                Reply::new(421, "4.7.0", "Too many failed authentications, closing")
                    .encode(&mut self.output);
                self.close();
                return;
            }
        }
        if self.errors >= self.cfg.max_errors {
            Reply::new(421, "4.7.0", "Too many errors, closing").encode(&mut self.output);
            self.close();
        }
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.input.clear();
        self.events.push_back(Event::Close);
    }

    /// Handles buffered input until it runs out or a decision is awaited.
    fn process(&mut self) {
        loop {
            match self.state {
                State::Pending(_) | State::Handshake | State::Closed => return,
                State::AuthLine(step) => {
                    let Some(line) = self.take_line() else {
                        return;
                    };
                    match line {
                        Some(line) => self.auth_line(step, &line),
                        None => self.state = State::Ready,
                    }
                }
                State::Data => {
                    if !self.process_data() {
                        return;
                    }
                }
                _ => {
                    let Some(line) = self.take_line() else {
                        return;
                    };
                    if let Some(line) = line {
                        self.command(&line);
                    }
                }
            }
        }
    }

    /// The next command line without its line ending; `Some(None)` for a line that was too
    /// long (already answered); `None` when no full line is buffered.
    fn take_line(&mut self) -> Option<Option<Vec<u8>>> {
        match self.input.iter().position(|b| *b == b'\n') {
            Some(p) => {
                let line: Vec<u8> = self.input.drain(..=p).collect();
                if self.skipping_line {
                    self.skipping_line = false;
                    return Some(None);
                }
                if line.len() > self.cfg.max_line {
                    self.reply(500, "5.5.6", "Line too long");
                    return Some(None);
                }
                let mut line = line;
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Some(Some(line))
            }
            None => {
                if self.input.len() > self.cfg.max_line {
                    self.input.clear();
                    if !self.skipping_line {
                        self.skipping_line = true;
                        self.reply(500, "5.5.6", "Line too long");
                    }
                }
                None
            }
        }
    }

    fn command(&mut self, line: &[u8]) {
        let Ok(text) = std::str::from_utf8(line) else {
            self.reply(500, "5.5.2", "Command is not valid UTF-8");
            return;
        };
        let (verb, arg) = match text.find(' ') {
            Some(i) => (&text[..i], text[i + 1..].trim()),
            None => (text.trim(), ""),
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" => self.hello(arg, verb.eq_ignore_ascii_case("EHLO")),
            "MAIL" => self.mail(arg),
            "RCPT" => self.rcpt(arg),
            "DATA" => self.data(arg),
            "RSET" => {
                self.reset();
                self.reply(250, "2.0.0", "Ok");
            }
            "NOOP" => self.reply(250, "2.0.0", "Ok"),
            "QUIT" => {
                self.reply(221, "2.0.0", "Bye");
                self.close();
            }
            "VRFY" => self.reply(252, "2.1.5", "Cannot VRFY user, but will accept message"),
            "STARTTLS" => self.starttls(arg),
            "AUTH" => self.auth(arg),
            "BDAT" => self.reply(502, "5.5.1", "CHUNKING is not offered"),
            "" => self.reply(500, "5.5.2", "Empty command"),
            _ => self.reply(500, "5.5.2", "Command unrecognized"),
        }
    }

    fn hello(&mut self, name: &str, extended: bool) {
        if name.is_empty() || name.contains(char::is_whitespace) {
            self.reply(501, "5.5.4", "Syntax: EHLO hostname");
            return;
        }
        self.reset();
        self.state = State::Ready;
        self.extended = extended;
        self.events.push_back(Event::Hello {
            name: name.to_string(),
            extended,
        });
        if !extended {
            self.reply(250, "", &self.cfg.hostname.clone());
            return;
        }
        let mut lines = vec![
            self.cfg.hostname.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", self.cfg.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "DSN".into(),
        ];
        if self.cfg.starttls && !self.tls {
            lines.push("STARTTLS".into());
        }
        if self.cfg.auth && self.tls {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        Reply::new(250, "", lines.join("\n")).encode(&mut self.output);
    }

    fn starttls(&mut self, arg: &str) {
        if !arg.is_empty() {
            self.reply(501, "5.5.4", "Syntax: STARTTLS");
        } else if self.tls {
            self.reply(503, "5.5.1", "Already in TLS");
        } else if !self.cfg.starttls {
            self.reply(502, "5.5.1", "STARTTLS is not offered");
        } else if self.state == State::Fresh {
            self.reply(503, "5.5.1", "Send EHLO first");
        } else {
            self.reply(220, "2.0.0", "Ready to start TLS");
            // Anything pipelined after STARTTLS arrived in clear: it is dropped (RFC 3207 §5),
            // and nothing more is read until the handshake is done.
            self.input.clear();
            self.state = State::Handshake;
            self.events.push_back(Event::StartTls);
        }
    }

    fn auth(&mut self, arg: &str) {
        if !self.cfg.auth {
            return self.reply(502, "5.5.1", "AUTH is not offered");
        }
        if !self.tls {
            return self.reply(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            );
        }
        match self.state {
            State::Fresh => return self.reply(503, "5.5.1", "Send EHLO first"),
            State::Mail => {
                return self.reply(
                    503,
                    "5.5.1",
                    "AUTH is not allowed during a mail transaction",
                );
            }
            _ => {}
        }
        if self.authenticated.is_some() {
            return self.reply(503, "5.5.1", "Already authenticated");
        }
        let (mech, initial) = match arg.split_once(' ') {
            Some((m, i)) => (m, Some(i.trim())),
            None => (arg, None),
        };
        match (mech.to_ascii_uppercase().as_str(), initial) {
            ("PLAIN", Some(i)) => self.auth_line(AuthStep::Plain, i.as_bytes()),
            ("PLAIN", None) => {
                self.reply(334, "", "");
                self.state = State::AuthLine(AuthStep::Plain);
            }
            ("LOGIN", Some(i)) => self.auth_line(AuthStep::LoginUser, i.as_bytes()),
            ("LOGIN", None) => {
                self.reply(334, "", "VXNlcm5hbWU6"); // "Username:"
                self.state = State::AuthLine(AuthStep::LoginUser);
            }
            _ => self.reply(504, "5.5.4", "Unrecognized authentication type"),
        }
    }

    /// A base64 line of AUTH: the PLAIN response, or LOGIN's user name or password.
    fn auth_line(&mut self, step: AuthStep, line: &[u8]) {
        self.state = State::Ready;
        if line == b"*" {
            self.login_user = None;
            return self.reply(501, "5.0.0", "Authentication cancelled");
        }
        let decoded = match crate::smime::mime::base64_decode(line) {
            Ok(d) => zeroize::Zeroizing::new(d),
            Err(_) => {
                self.login_user = None;
                return self.reply(501, "5.5.2", "Cannot decode the response");
            }
        };
        let text = match std::str::from_utf8(&decoded) {
            Ok(t) => zeroize::Zeroizing::new(t.to_string()),
            Err(_) => return self.reply(501, "5.5.2", "The response is not UTF-8"),
        };
        match step {
            AuthStep::Plain => {
                // authzid NUL authcid NUL password
                let parts: Vec<&str> = text.split('\0').collect();
                let [authz, user, password] = parts.as_slice() else {
                    return self.reply(501, "5.5.2", "Bad PLAIN response");
                };
                if !authz.is_empty() && authz != user {
                    return self.auth_refused();
                }
                self.ask_auth(user.to_string(), password);
            }
            AuthStep::LoginUser => {
                self.login_user = Some(text.to_string());
                self.reply(334, "", "UGFzc3dvcmQ6"); // "Password:"
                self.state = State::AuthLine(AuthStep::LoginPassword);
            }
            AuthStep::LoginPassword => {
                let user = self.login_user.take().unwrap_or_default();
                self.ask_auth(user, &text);
            }
        }
    }

    /// A 535 decided here (no credentials to check): a failed AUTH like the caller's.
    fn auth_refused(&mut self) {
        Reply::new(535, "5.7.8", "Authentication credentials invalid").encode(&mut self.output);
        self.refused(true);
    }

    fn ask_auth(&mut self, user: String, password: &str) {
        if user.is_empty() {
            return self.auth_refused();
        }
        self.login_user = Some(user.clone());
        self.state = State::Pending(Decision::Auth);
        self.events.push_back(Event::Auth {
            user,
            password: Password(zeroize::Zeroizing::new(password.to_string())),
        });
    }

    fn mail(&mut self, arg: &str) {
        match self.state {
            State::Fresh => return self.reply(503, "5.5.1", "Send EHLO/HELO first"),
            State::Mail => return self.reply(503, "5.5.1", "Sender already specified"),
            _ => {}
        }
        let Some(rest) = strip_prefix_ci(arg, "FROM:") else {
            return self.reply(501, "5.5.4", "Syntax: MAIL FROM:<address>");
        };
        let Some((path, params)) = split_path(rest) else {
            return self.reply(501, "5.1.7", "Bad sender address syntax");
        };
        let mut p = MailParams::default();
        for param in params.split_whitespace() {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            match k.to_ascii_uppercase().as_str() {
                "SIZE" => match v.parse::<u64>() {
                    Ok(n) => p.size = Some(n),
                    Err(_) => return self.reply(501, "5.5.4", "Bad SIZE parameter"),
                },
                "BODY" => match v.to_ascii_uppercase().as_str() {
                    "7BIT" => p.eight_bit = false,
                    "8BITMIME" => p.eight_bit = true,
                    _ => return self.reply(501, "5.5.4", "Bad BODY parameter"),
                },
                "SMTPUTF8" if v.is_empty() => p.smtputf8 = true,
                "RET" => match v.to_ascii_uppercase().as_str() {
                    "FULL" => p.ret_full = Some(true),
                    "HDRS" => p.ret_full = Some(false),
                    _ => return self.reply(501, "5.5.4", "Bad RET parameter"),
                },
                "ENVID" if !v.is_empty() && v.len() <= 100 => p.envid = Some(v.to_string()),
                _ => return self.reply(555, "5.5.4", "Unsupported MAIL parameter"),
            }
        }
        if !self.extended && params.split_whitespace().next().is_some() {
            return self.reply(555, "5.5.4", "Parameters need EHLO");
        }
        if p.size.is_some_and(|n| n > self.cfg.max_message_size) {
            return self.reply(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            );
        }
        if let Err(why) = check_address(path, true, p.smtputf8) {
            return self.reply(501, "5.1.7", why);
        }
        self.state = State::Pending(Decision::Mail);
        self.events.push_back(Event::Mail {
            from: path.to_string(),
            params: p,
        });
    }

    fn rcpt(&mut self, arg: &str) {
        if self.state != State::Mail {
            return self.reply(503, "5.5.1", "Need MAIL command first");
        }
        let Some(rest) = strip_prefix_ci(arg, "TO:") else {
            return self.reply(501, "5.5.4", "Syntax: RCPT TO:<address>");
        };
        let Some((path, params)) = split_path(rest) else {
            return self.reply(501, "5.1.3", "Bad recipient address syntax");
        };
        let mut p = RcptParams::default();
        for param in params.split_whitespace() {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            match k.to_ascii_uppercase().as_str() {
                "NOTIFY" if !v.is_empty() => p.notify = Some(v.to_ascii_uppercase()),
                "ORCPT" if v.contains(';') => p.orcpt = Some(v.to_string()),
                _ => return self.reply(555, "5.5.4", "Unsupported RCPT parameter"),
            }
        }
        if let Err(why) = check_address(path, false, true) {
            return self.reply(501, "5.1.3", why);
        }
        if self.recipients >= self.cfg.max_recipients {
            return self.reply(452, "4.5.3", "Too many recipients");
        }
        self.state = State::Pending(Decision::Rcpt);
        self.events.push_back(Event::Rcpt {
            to: path.to_string(),
            params: p,
        });
    }

    fn data(&mut self, arg: &str) {
        if !arg.is_empty() {
            return self.reply(501, "5.5.4", "Syntax: DATA");
        }
        match self.state {
            State::Mail if self.recipients > 0 => {}
            State::Mail => return self.reply(554, "5.5.1", "No valid recipients"),
            _ => return self.reply(503, "5.5.1", "Need MAIL and RCPT commands first"),
        }
        self.reply(354, "", "End data with <CR><LF>.<CR><LF>");
        self.state = State::Data;
        self.data = Incoming::default();
        self.events.push_back(Event::DataStart);
    }

    /// Consumes message data lines; false when more input is needed.
    fn process_data(&mut self) -> bool {
        let reject = self.cfg.bare_line_ends == BareLineEnds::Reject;
        let mut consumed = 0;
        let mut ended = false;
        while let Some(p) = self.input[consumed..].iter().position(|b| *b == b'\n') {
            let line = &self.input[consumed..consumed + p + 1];
            consumed += p + 1;
            let at_start = !self.mid_line;
            self.mid_line = false;
            let crlf = line.ends_with(b"\r\n");
            let text = &line[..line.len() - if crlf { 2 } else { 1 }];
            if reject && (!crlf || text.contains(&b'\r')) {
                return self.refuse_bare_line_end(crlf);
            }
            if at_start && self.after_crlf && crlf && text == b"." {
                ended = true;
                break;
            }
            self.after_crlf = crlf;
            let text = if at_start && text.first() == Some(&b'.') {
                &text[1..]
            } else {
                text
            };
            self.data.line(&self.cfg, text, true);
        }
        self.input.drain(..consumed);
        if !ended && self.input.len() >= LONG_LINE_PIECE {
            // A long line: passed on in pieces, so memory stays flat whatever its length. A CR
            // at the end stays behind: the LF that makes it a line end may come next.
            let keep = usize::from(self.input.last() == Some(&b'\r'));
            let piece: Vec<u8> = self.input.drain(..self.input.len() - keep).collect();
            if reject && piece.contains(&b'\r') {
                return self.refuse_bare_line_end(true);
            }
            let body = if !self.mid_line && piece.first() == Some(&b'.') {
                &piece[1..]
            } else {
                &piece[..]
            };
            self.data.line(&self.cfg, body, false);
            self.mid_line = true;
        }
        if self.data.refused.is_none() && !self.data.buf.is_empty() {
            self.events
                .push_back(Event::Data(std::mem::take(&mut self.data.buf)));
        }
        if !ended {
            return false;
        }
        if let Some(reply) = self.data.refused.take() {
            self.events.push_back(Event::DataAborted);
            self.reset();
            self.reply(reply.code, reply.status, &reply.text);
            return true;
        }
        self.state = State::Pending(Decision::DataEnd);
        self.events.push_back(Event::DataEnd);
        true
    }

    /// A bare LF (`crlf` false) or bare CR in message data under [`BareLineEnds::Reject`]:
    /// where the client thinks its data ends is unknowable, so the message is dropped and the
    /// session closed.
    fn refuse_bare_line_end(&mut self, crlf: bool) -> bool {
        self.events.push_back(Event::DataAborted);
        self.reset();
        let what = if crlf { "<CR>" } else { "<LF>" };
        Reply::new(
            554,
            "5.5.2",
            format!(
                "Message refused: bare {what} in message data; lines must end with <CR><LF> (RFC 5321 section 2.3.8)"
            ),
        )
        .encode(&mut self.output);
        self.close();
        false
    }
}

/// The message data of one transaction as it comes in.
#[derive(Debug)]
struct Incoming {
    buf: Vec<u8>,
    size: u64,
    /// Still in the header section (no empty line yet).
    in_header: bool,
    /// At the start of a line (the last piece ended one).
    line_start: bool,
    header_size: u64,
    hops: usize,
    /// Why the message will be refused at its end; nothing more is kept once set.
    refused: Option<Reply>,
}

impl Default for Incoming {
    fn default() -> Self {
        Incoming {
            buf: Vec::new(),
            size: 0,
            in_header: true,
            line_start: true,
            header_size: 0,
            hops: 0,
            refused: None,
        }
    }
}

impl Incoming {
    /// A dot-unstuffed line's text (or a piece of a long one); `end` adds the CRLF.
    fn line(&mut self, cfg: &ServerConfig, text: &[u8], end: bool) {
        let len = text.len() as u64 + if end { 2 } else { 0 };
        self.size += len;
        if self.in_header {
            if self.line_start && text.is_empty() && end {
                self.in_header = false;
            } else {
                self.header_size += len;
                if self.line_start
                    && text.len() >= 9
                    && text[..9].eq_ignore_ascii_case(b"received:")
                {
                    self.hops += 1;
                }
            }
        }
        self.line_start = end;
        if self.refused.is_some() {
            return;
        }
        let refusal = if text.contains(&0) {
            Some(Reply::new(
                554,
                "5.6.0",
                "Message refused: a NUL byte in message data (RFC 5321 section 2.3.8)",
            ))
        } else if self.size > cfg.max_message_size {
            Some(Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ))
        } else if self.header_size > cfg.max_header_size {
            Some(Reply::new(
                552,
                "5.3.4",
                format!(
                    "Message header section exceeds the limit of {} bytes",
                    cfg.max_header_size
                ),
            ))
        } else if self.hops > cfg.max_hops {
            Some(Reply::new(
                554,
                "5.4.6",
                format!(
                    "Too many hops: more than {} Received: fields, a mail loop?",
                    cfg.max_hops
                ),
            ))
        } else {
            None
        };
        if refusal.is_some() {
            self.refused = refusal;
            self.buf = Vec::new();
            return;
        }
        self.buf.extend_from_slice(text);
        if end {
            self.buf.extend_from_slice(b"\r\n");
        }
    }
}

/// A line of message data longer than this is passed on in pieces.
const LONG_LINE_PIECE: usize = 64 * 1024;

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // Compared as bytes: the prefix is ASCII, the command may not be (and a char boundary
    // after the prefix is then guaranteed).
    let head = s.as_bytes().get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix.as_bytes()) {
        Some(s[prefix.len()..].trim_start())
    } else {
        None
    }
}

/// `<path> params` → (path without brackets, params).
fn split_path(s: &str) -> Option<(&str, &str)> {
    let s = s.strip_prefix('<')?;
    let end = s.find('>')?;
    Some((&s[..end], s[end + 1..].trim()))
}

/// A mailbox as RFC 5321 allows it (source routes dropped); the empty path only for senders.
fn check_address(path: &str, sender: bool, utf8: bool) -> Result<(), &'static str> {
    if path.is_empty() {
        return if sender {
            Ok(())
        } else {
            Err("Empty recipient address")
        };
    }
    if path.len() > 254 {
        return Err("Address too long");
    }
    if !utf8 && !path.is_ascii() {
        return Err("Non-ASCII address without SMTPUTF8");
    }
    if path
        .chars()
        .any(|c| c.is_control() || c == ' ' || c == '<' || c == '>')
    {
        return Err("Bad characters in address");
    }
    let Some((local, domain)) = path.rsplit_once('@') else {
        return if !sender && path.eq_ignore_ascii_case("postmaster") {
            Ok(())
        } else {
            Err("Address needs a domain")
        };
    };
    if local.is_empty() || local.len() > 64 || domain.is_empty() || domain.starts_with('.') {
        return Err("Bad address syntax");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a session: sends `input`, answers decisions (recipients at "bad.example" are
    /// refused, everything else accepted), returns the output and the events.
    fn run(server: &mut Server, input: &[u8]) -> (String, Vec<Event>) {
        server.receive(input);
        let mut events = Vec::new();
        while let Some(e) = server.next_event() {
            match &e {
                Event::Mail { .. } => server.accept("Ok"),
                Event::Rcpt { to, .. } if to.ends_with("@bad.example") => {
                    server.reject(Reply::new(550, "5.1.1", "No such user"))
                }
                Event::Rcpt { .. } => server.accept("Ok"),
                Event::DataEnd => server.accept("Ok: queued as 1"),
                _ => {}
            }
            events.push(e);
        }
        (String::from_utf8(server.take_output()).unwrap(), events)
    }

    fn codes(out: &str) -> Vec<&str> {
        out.lines()
            .filter(|l| l.as_bytes().get(3) == Some(&b' '))
            .map(|l| &l[..3])
            .collect()
    }

    fn data_of(events: &[Event]) -> Vec<u8> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Data(d) => Some(d.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn a_pipelined_transaction_answers_in_order() {
        let mut s = Server::new(ServerConfig::default());
        let greeting = String::from_utf8(s.take_output()).unwrap();
        assert_eq!(greeting, "220 localhost ESMTP smimegw\r\n");
        let (out, events) = run(
            &mut s,
            b"EHLO client.example\r\nMAIL FROM:<a@example.com> SIZE=100 BODY=8BITMIME\r\n\
              RCPT TO:<b@example.org> NOTIFY=FAILURE\r\nRCPT TO:<x@bad.example>\r\nDATA\r\n\
              Subject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\nQUIT\r\n",
        );
        assert!(out.contains("250-PIPELINING\r\n"));
        assert!(out.contains("250-SIZE 52428800\r\n"));
        assert_eq!(
            codes(&out),
            ["250", "250", "250", "550", "354", "250", "221"]
        );
        assert!(out.contains("250 2.0.0 Ok: queued as 1\r\n"));
        assert_eq!(
            data_of(&events),
            b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"
        );
        assert!(events.contains(&Event::Mail {
            from: "a@example.com".into(),
            params: MailParams {
                size: Some(100),
                eight_bit: true,
                ..Default::default()
            }
        }));
        assert!(events.contains(&Event::Close));
        assert!(s.is_closed());
    }

    #[test]
    fn commands_out_of_order_and_bad_syntax_are_refused() {
        let mut s = Server::new(ServerConfig::default());
        s.take_output();
        let (out, _) = run(
            &mut s,
            b"MAIL FROM:<a@example.com>\r\nHELO\r\nHELO c\r\nRCPT TO:<b@example.com>\r\nDATA\r\n\
              MAIL FROM:a@example.com\r\nMAIL FROM:<a@example.com> SIZE=1\r\n\
              MAIL FROM:<>\r\nMAIL FROM:<b@example.com>\r\nDATA\r\nRCPT TO:<>\r\n\
              RCPT TO:<nodomain>\r\nRCPT TO:<postmaster>\r\nFOO\r\nRSET\r\nNOOP\r\n",
        );
        assert_eq!(
            codes(&out),
            [
                "503", "501", "250", "503", "503", "501", "555", "250", "503", "554", "501", "501",
                "250", "500", "250", "250"
            ],
            "{out}"
        );
    }

    #[test]
    fn size_limits_hold_before_and_during_data() {
        let cfg = ServerConfig {
            max_message_size: 100,
            ..ServerConfig::default()
        };
        let mut s = Server::new(cfg);
        s.take_output();
        let big = format!("{}\r\n", "x".repeat(200));
        let input = format!(
            "EHLO c\r\nMAIL FROM:<a@e.com> SIZE=101\r\nMAIL FROM:<a@e.com>\r\nRCPT TO:<b@e.com>\r\nDATA\r\n{big}.\r\nNOOP\r\n"
        );
        let (out, events) = run(&mut s, input.as_bytes());
        assert_eq!(
            codes(&out),
            ["250", "552", "250", "250", "354", "552", "250"]
        );
        assert!(events.contains(&Event::DataAborted));
        assert!(!events.contains(&Event::DataEnd));
    }

    #[test]
    fn data_split_anywhere_comes_out_the_same() {
        let body = b"A: b\r\n\r\n.\r\n..\r\nline\r\n.x\r\n";
        let stuffed = b"A: b\r\n\r\n..\r\n...\r\nline\r\n..x\r\n.\r\n";
        for cut in 0..stuffed.len() {
            let mut s = Server::new(ServerConfig::default());
            let (_, mut events) = run(
                &mut s,
                b"EHLO c\r\nMAIL FROM:<a@e.com>\r\nRCPT TO:<b@e.com>\r\nDATA\r\n",
            );
            let (_, e1) = run(&mut s, &stuffed[..cut]);
            let (out, e2) = run(&mut s, &stuffed[cut..]);
            events.extend(e1);
            events.extend(e2);
            assert_eq!(data_of(&events), body, "cut at {cut}");
            assert!(
                out.ends_with("250 2.0.0 Ok: queued as 1\r\n"),
                "cut at {cut}: {out}"
            );
        }
    }

    #[test]
    fn long_lines_in_data_stream_and_long_commands_are_refused() {
        let mut s = Server::new(ServerConfig::default());
        run(
            &mut s,
            b"EHLO c\r\nMAIL FROM:<a@e.com>\r\nRCPT TO:<b@e.com>\r\nDATA\r\n",
        );
        let long = vec![b'y'; 300_000];
        let mut total = Vec::new();
        for piece in long.chunks(10_000) {
            let (_, ev) = run(&mut s, piece);
            total.extend(data_of(&ev));
            assert!(s.input.len() < 2 * LONG_LINE_PIECE, "input held whole");
        }
        let (out, ev) = run(&mut s, b"\r\n.\r\n");
        total.extend(data_of(&ev));
        assert_eq!(total.len(), 300_002);
        assert!(out.contains("250 2.0.0"));

        let mut s = Server::new(ServerConfig::default());
        s.take_output();
        let cmd = format!("EHLO {}\r\nNOOP\r\n", "h".repeat(10_000));
        let (out, _) = run(&mut s, cmd.as_bytes());
        assert_eq!(codes(&out), ["500", "250"]);
    }

    #[test]
    fn starttls_drops_pipelined_plaintext_and_starts_over() {
        let cfg = ServerConfig {
            starttls: true,
            ..ServerConfig::default()
        };
        let mut s = Server::new(cfg);
        s.take_output();
        let (out, events) = run(&mut s, b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@e.com>\r\n");
        assert!(out.contains("250-STARTTLS\r\n") || out.contains("250 STARTTLS\r\n"));
        assert_eq!(codes(&out), ["250", "220"]);
        assert!(events.contains(&Event::StartTls));
        assert!(!events.iter().any(|e| matches!(e, Event::Mail { .. })));
        s.tls_started();
        assert!(s.is_tls());
        let (out, _) = run(&mut s, b"MAIL FROM:<a@e.com>\r\nEHLO c\r\nSTARTTLS\r\n");
        assert_eq!(codes(&out), ["503", "250", "503"]);
        assert!(!out.contains("STARTTLS\r\n250"));
    }

    #[test]
    fn too_many_errors_close_the_session() {
        let cfg = ServerConfig {
            max_errors: 3,
            ..ServerConfig::default()
        };
        let mut s = Server::new(cfg);
        s.take_output();
        let (out, events) = run(&mut s, b"X\r\nY\r\nZ\r\nNOOP\r\n");
        assert_eq!(codes(&out), ["500", "500", "500", "421"]);
        assert_eq!(events, [Event::Close]);
    }

    #[test]
    fn non_ascii_commands_are_refused_not_panicked_on() {
        let mut s = Server::new(ServerConfig::default());
        s.take_output();
        let (out, _) = run(
            &mut s,
            "EHLO c\r\nMAIL ƹƹƹ\r\nMAIL FRƹ:<a@e.com>\r\nRCPT Tƹ\r\n\u{ff}\r\n".as_bytes(),
        );
        assert_eq!(codes(&out), ["250", "501", "501", "503", "500"]);
        let (out, _) = run(&mut s, b"\xff\xfe\r\n");
        assert_eq!(codes(&out), ["500"]);
    }

    /// A session in TLS with AUTH offered; "alice"/"secret" is the only good credential.
    fn auth_session(input: &[u8]) -> (Server, String, Vec<Event>) {
        let mut s = Server::new(ServerConfig {
            starttls: true,
            auth: true,
            ..ServerConfig::default()
        });
        s.take_output();
        let (out, _) = run(
            &mut s,
            b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nSTARTTLS\r\n",
        );
        assert_eq!(codes(&out), ["250", "538", "220"]);
        assert!(
            !out.contains("AUTH PLAIN LOGIN"),
            "no AUTH offered in clear"
        );
        s.tls_started();
        s.receive(input);
        let mut events = Vec::new();
        while let Some(e) = s.next_event() {
            if let Event::Auth { user, password } = &e {
                if user == "alice" && password.expose() == "secret" {
                    s.accept("Authentication successful");
                } else {
                    s.reject(Reply::new(
                        535,
                        "5.7.8",
                        "Authentication credentials invalid",
                    ));
                }
            }
            events.push(e);
        }
        let out = String::from_utf8(s.take_output()).unwrap();
        (s, out, events)
    }

    #[test]
    fn auth_plain_and_login_after_tls() {
        // PLAIN with an initial response ("\0alice\0secret").
        let (s, out, events) = auth_session(b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
        assert!(out.contains("250 AUTH PLAIN LOGIN\r\n"), "{out}");
        assert_eq!(codes(&out), ["250", "235"]);
        assert_eq!(s.authenticated(), Some("alice"));
        let shown = format!("{events:?}");
        assert!(!shown.contains("secret"), "{shown}");
        // PLAIN in two steps, with a wrong password.
        let (s, out, _) = auth_session(b"EHLO c\r\nAUTH PLAIN\r\nAGFsaWNlAHdyb25n\r\n");
        assert_eq!(codes(&out), ["250", "334", "535"]);
        assert_eq!(s.authenticated(), None);
        // LOGIN: user name, then password.
        let (s, out, _) =
            auth_session(b"EHLO c\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nAUTH LOGIN\r\n");
        assert_eq!(codes(&out), ["250", "334", "334", "235", "503"]);
        assert!(out.contains("334 VXNlcm5hbWU6\r\n") && out.contains("334 UGFzc3dvcmQ6\r\n"));
        assert_eq!(s.authenticated(), Some("alice"));
        // Cancelled, garbage, unknown mechanism, during a transaction.
        let (_, out, _) = auth_session(
            b"EHLO c\r\nAUTH LOGIN\r\n*\r\nAUTH PLAIN !!!\r\nAUTH CRAM-MD5\r\nMAIL FROM:<a@e.com>\r\n",
        );
        assert_eq!(codes(&out), ["250", "334", "501", "501", "504"]);
    }

    #[test]
    fn recipients_are_limited() {
        let cfg = ServerConfig {
            max_recipients: 2,
            ..ServerConfig::default()
        };
        let mut s = Server::new(cfg);
        s.take_output();
        let (out, _) = run(
            &mut s,
            b"HELO c\r\nMAIL FROM:<a@e.com>\r\nRCPT TO:<1@e.com>\r\nRCPT TO:<2@e.com>\r\nRCPT TO:<3@e.com>\r\n",
        );
        assert_eq!(codes(&out), ["250", "250", "250", "250", "452"]);
    }

    const TO_DATA: &[u8] = b"EHLO c\r\nMAIL FROM:<a@e.com>\r\nRCPT TO:<b@e.com>\r\nDATA\r\n";

    #[test]
    fn bare_line_ends_in_data_refuse_the_message_and_close() {
        // The smuggling shapes: <LF>.<LF>, <LF>.<CR><LF>, <CR>.<CR>, and a bare CR at the
        // edge of a long-line piece.
        let mut long_cr = vec![b'y'; LONG_LINE_PIECE + 10];
        long_cr[LONG_LINE_PIECE / 2] = b'\r';
        long_cr.extend_from_slice(b"\r\n.\r\n");
        for (name, data) in [
            (
                "LF.LF",
                &b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@e.com>\r\n"[..],
            ),
            (
                "LF.CRLF",
                b"Subject: x\r\n\r\nhi\n.\r\nMAIL FROM:<evil@e.com>\r\n",
            ),
            (
                "CR.CR",
                b"Subject: x\r\n\r\nhi\r.\rMAIL FROM:<e@e.com>\r\n.\r\n",
            ),
            ("long CR", &long_cr),
        ] {
            let mut s = Server::new(ServerConfig::default());
            s.take_output();
            let mut input = TO_DATA.to_vec();
            input.extend_from_slice(data);
            let (out, events) = run(&mut s, &input);
            assert_eq!(
                codes(&out),
                ["250", "250", "250", "354", "554"],
                "{name}: {out}"
            );
            assert!(
                out.contains("554 5.5.2 Message refused: bare <"),
                "{name}: {out}"
            );
            assert!(events.contains(&Event::DataAborted), "{name}");
            assert!(!events.contains(&Event::DataEnd), "{name}");
            assert_eq!(events.last(), Some(&Event::Close), "{name}");
            assert!(s.is_closed());
        }
        // Commands may end with a bare LF: nothing is smuggled through a command line.
        let mut s = Server::new(ServerConfig::default());
        s.take_output();
        let (out, _) = run(&mut s, b"HELO c\nNOOP\n");
        assert_eq!(codes(&out), ["250", "250"]);
    }

    #[test]
    fn normalized_bare_lf_is_data_and_only_crlf_dot_crlf_ends_it() {
        let cfg = ServerConfig {
            bare_line_ends: BareLineEnds::Normalize,
            ..ServerConfig::default()
        };
        let mut s = Server::new(cfg);
        s.take_output();
        let mut input = TO_DATA.to_vec();
        input.extend_from_slice(
            b"Subject: x\n\nhi\n.\nMAIL FROM:<evil@e.com>\n\n.\r\nbare\rCR\r\n.\r\nNOOP\r\n",
        );
        let (out, events) = run(&mut s, &input);
        assert_eq!(codes(&out), ["250", "250", "250", "354", "250", "250"]);
        assert!(out.contains("250 2.0.0 Ok: queued as 1\r\n250 2.0.0 Ok\r\n"));
        assert_eq!(events.iter().filter(|e| **e == Event::DataEnd).count(), 1);
        // The "." after a bare LF was data (unstuffed), the smuggled command too.
        assert_eq!(
            data_of(&events),
            b"Subject: x\r\n\r\nhi\r\n\r\nMAIL FROM:<evil@e.com>\r\n\r\n\r\nbare\rCR\r\n"
        );
    }

    #[test]
    fn nul_header_bombs_and_loops_are_refused_at_the_end_of_data() {
        let cfg = ServerConfig {
            max_header_size: 1000,
            max_hops: 3,
            ..ServerConfig::default()
        };
        let mut bomb = TO_DATA.to_vec();
        for i in 0..100 {
            bomb.extend_from_slice(format!("X-Bomb-{i}: {}\r\n", "b".repeat(20)).as_bytes());
        }
        bomb.extend_from_slice(b"\r\nbody\r\n.\r\nNOOP\r\n");
        let mut long_field = TO_DATA.to_vec();
        long_field.extend_from_slice(b"Subject: ");
        long_field.extend(std::iter::repeat_n(b's', 3 * LONG_LINE_PIECE));
        long_field.extend_from_slice(b"\r\n\r\nbody\r\n.\r\nNOOP\r\n");
        let mut loop_ = TO_DATA.to_vec();
        loop_.extend_from_slice(
            b"Received: from a\r\nreceived: from b\r\nRECEIVED: from c\r\nReceived: from d\r\n\r\n.\r\nNOOP\r\n",
        );
        let mut fine = TO_DATA.to_vec();
        fine.extend_from_slice(
            b"Received: from a\r\nReceived: from b\r\nReceived: from c\r\n\r\nReceived: in the body\r\n",
        );
        fine.extend(std::iter::repeat_n(b'B', 5000));
        fine.extend_from_slice(b"\r\n.\r\n");
        let mut nul = TO_DATA.to_vec();
        nul.extend_from_slice(b"Subject: x\r\n\r\nnul \0 here\r\n.\r\nNOOP\r\n");
        for (name, input, status) in [
            ("nul", nul, Some("554 5.6.0 Message refused: a NUL byte")),
            (
                "bomb",
                bomb,
                Some("552 5.3.4 Message header section exceeds"),
            ),
            (
                "long field",
                long_field,
                Some("552 5.3.4 Message header section"),
            ),
            ("loop", loop_, Some("554 5.4.6 Too many hops")),
            ("fine", fine, None),
        ] {
            let mut s = Server::new(cfg.clone());
            s.take_output();
            let (out, events) = run(&mut s, &input);
            match status {
                Some(status) => {
                    assert!(out.contains(status), "{name}: {out}");
                    assert!(
                        out.ends_with("250 2.0.0 Ok\r\n"),
                        "{name}: the session goes on"
                    );
                    assert!(events.contains(&Event::DataAborted), "{name}");
                    assert!(!events.contains(&Event::DataEnd), "{name}");
                }
                None => assert_eq!(events.last(), Some(&Event::DataEnd), "{name}: {out}"),
            }
        }
    }

    #[test]
    fn every_refusal_the_caller_makes_counts_toward_max_errors() {
        // Relay denials (the caller's 5xx at RCPT) and 4xx alike: probing recipients ends
        // with 421 and a closed session.
        let cfg = ServerConfig {
            max_errors: 4,
            max_recipients: 1,
            ..ServerConfig::default()
        };
        let mut s = Server::new(cfg);
        s.take_output();
        let (out, events) = run(
            &mut s,
            b"EHLO c\r\nMAIL FROM:<a@e.com>\r\nRCPT TO:<1@bad.example>\r\nRCPT TO:<2@bad.example>\r\n\
              RCPT TO:<ok@e.com>\r\nRCPT TO:<more@e.com>\r\nRCPT TO:<more@e.com>\r\n\
              RCPT TO:<3@bad.example>\r\nNOOP\r\n",
        );
        assert_eq!(
            codes(&out),
            ["250", "250", "550", "550", "250", "452", "452", "421"],
            "{out}"
        );
        assert!(
            out.ends_with("421 4.7.0 Too many errors, closing\r\n"),
            "{out}"
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::Rcpt { to, .. } if to.starts_with("3@"))),
            "nothing is read after the 421"
        );
        assert_eq!(events.last(), Some(&Event::Close));
        assert!(s.is_closed());
        // A refused MAIL counts too.
        let mut s = Server::new(ServerConfig {
            max_errors: 2,
            ..ServerConfig::default()
        });
        s.take_output();
        s.receive(b"EHLO c\r\nMAIL FROM:<a@e.com>\r\nMAIL FROM:<b@e.com>\r\nNOOP\r\n");
        let mut n = 0;
        while let Some(e) = s.next_event() {
            if let Event::Mail { .. } = e {
                n += 1;
                s.reject(Reply::new(553, "5.7.1", "Not yours"));
            }
        }
        let out = String::from_utf8(s.take_output()).unwrap();
        assert_eq!(n, 2);
        assert_eq!(codes(&out), ["250", "553", "553", "421"], "{out}");
        assert!(s.is_closed());
    }

    #[test]
    fn failed_authentications_close_the_session() {
        // Three wrong passwords (the caller's 535s), then 421 and nothing more is read.
        let (s, out, events) = auth_session(
            b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\n\
              AUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
        );
        assert_eq!(codes(&out), ["250", "535", "535", "535", "421"], "{out}");
        assert!(
            out.contains("421 4.7.0 Too many failed authentications"),
            "{out}"
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::Auth { .. }))
                .count(),
            3,
            "the fourth guess is never checked"
        );
        assert_eq!(events.last(), Some(&Event::Close));
        assert!(s.is_closed() && s.authenticated().is_none());
        // Refusals decided here (authorization identity not the user) count as failures too.
        let (s, out, _) = auth_session(
            b"EHLO c\r\nAUTH PLAIN bWFsbG9yeQBhbGljZQBzZWNyZXQ=\r\nAUTH LOGIN\r\nYWxpY2U=\r\nd3Jvbmc=\r\n\
              AUTH PLAIN AGFsaWNlAHdyb25n\r\n",
        );
        assert_eq!(
            codes(&out),
            ["250", "535", "334", "334", "535", "535", "421"],
            "{out}"
        );
        assert!(s.is_closed());
        // Below the limit the session goes on.
        let (_, out, _) = auth_session(
            b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
        );
        assert_eq!(codes(&out), ["250", "535", "235"], "{out}");
    }
}
