//! The configuration: one TOML file, read and checked at start. Every error names the key
//! (`policy.never_sign_to[2]: ...`) and the reason. Every key has a default; an empty file is
//! a valid configuration, and `smimegw serve --dev` runs on [`Config::dev`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

/// The whole configuration, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub server: Server,
    pub token: TokenConfig,
    pub ca: CaConfig,
    pub outbound: Route,
    pub inbound: Route,
    pub queue: QueueConfig,
    pub policy: Policy,
    /// The web console (`[web]`).
    pub web: WebConfig,
    /// Where recipients' certificates are looked up after the store (`[ldap]`).
    pub ldap: Option<crate::ldap::LdapSettings>,
    /// CRLs: fetching them, and what an unknown status means (`[revocation]`).
    pub revocation: crate::revocation::RevocationSettings,
    /// Days ahead that internal users' certificates expiring are warned of (`[ca]
    /// expiry_warnings`, default 30 and 7).
    pub expiry_warnings: Vec<u64>,
    /// The configuration file's `[policy]` tables as written (the consoles' starting point).
    pub policy_text: String,
    pub board: BoardConfig,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub hostname: String,
    pub listen: Vec<SocketAddr>,
    pub internal_networks: Vec<Network>,
    pub internal_domains: Vec<String>,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_sessions: usize,
    /// Sessions one client (an IPv4 address, an IPv6 /64) may hold at once; `421 4.7.0`
    /// beyond it.
    pub max_sessions_per_client: usize,
    /// A client silent this long is disconnected (RFC 5321 §4.5.3.2 suggests 5 minutes).
    pub idle_timeout: Duration,
    /// A session lasting longer is closed with `421 4.4.2`, however busy (a client trickling
    /// a byte now and then cannot hold a slot for ever).
    pub max_session_time: Duration,
    /// Refusals (4xx and 5xx) a session may earn before it is closed with 421.
    pub max_errors: usize,
    /// Failed AUTH attempts in one session before it is closed with 421.
    pub max_auth_failures: usize,
    /// Failed AUTH attempts from one client (within `auth_lockout` of each other) before
    /// its AUTH is refused with `454 4.7.0` for `auth_lockout`.
    pub max_auth_failures_per_client: usize,
    pub auth_lockout: Duration,
    /// Bare LF or CR in message data: refused (default) or normalised to CRLF.
    pub bare_line_ends: crate::smtp::BareLineEnds,
    /// Largest header section accepted (bytes).
    pub max_header_size: u64,
    /// Most Received: fields an arriving message may carry (loop detection).
    pub max_hops: usize,
    /// SMTP AUTH accounts (`smimegw users`); AUTH is offered over TLS when set.
    pub auth_users: Option<PathBuf>,
    /// TLS certificate and key (PEM); when absent a self-signed pair is made in the data
    /// directory on first start.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// An IP network in CIDR form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Network {
    pub fn parse(s: &str) -> Result<Network, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Where the keys are.
#[derive(Debug, Clone)]
pub enum TokenConfig {
    /// The software token in `DATA/token`.
    Software { pin: Option<String> },
    /// A PKCS#11 token by URI.
    Pkcs11 {
        uri: String,
        pin: Option<String>,
        allow_raw_rsa: bool,
    },
}

impl TokenConfig {
    /// Where the PIN comes from (`env:NAME`, `file:PATH`, `prompt`); by default
    /// `env:SMIMEGW_PIN` when that is set, else a prompt.
    pub fn pin_source(&self) -> Option<&str> {
        match self {
            TokenConfig::Software { pin } | TokenConfig::Pkcs11 { pin, .. } => pin.as_deref(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CaConfig {
    pub enabled: bool,
    pub organization: String,
    /// Issue a certificate for an internal sender who has none, on first use.
    pub issue_on_first_use: bool,
}

/// The appliance's hardware (`[board]`); nothing by default (a server or a laptop).
#[derive(Debug, Clone, Default)]
pub struct BoardConfig {
    /// The hardware watchdog device (`/dev/watchdog`): opened at start and petted while the
    /// gateway is healthy (SMTP accepting, token answering), so a hung gateway resets the
    /// machine.
    pub watchdog: Option<PathBuf>,
    /// The LEDs, the tamper switch and the reset button.
    pub pins: BoardPins,
}

/// The web console and REST API: HTTPS on `listen` (none: off), with the SMTP listener's
/// certificate unless `tls_cert`/`tls_key` are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    pub listen: Vec<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A session ends after this long without a request.
    pub session_idle: Duration,
}

/// Where the board's pins are (`[board] gpio_chip` + `gpio_lines`, or `pin_dir`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BoardPins {
    /// None connected (a server, a laptop): no LEDs, the chassis closed.
    #[default]
    None,
    /// Lines of a GPIO chip (the appliance's board).
    Gpio {
        chip: PathBuf,
        lines: board::pins::Lines,
    },
    /// One file per pin in a directory (QEMU, which has no GPIO).
    Files(PathBuf),
}

impl BoardConfig {
    /// Whether the board task has anything to do.
    pub fn is_used(&self) -> bool {
        self.watchdog.is_some() || self.pins != BoardPins::None
    }
}

/// TLS towards a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Off,
    Opportunistic,
    Required,
}

/// Where mail in one direction goes.
#[derive(Debug, Clone)]
pub enum Route {
    /// SMTP to a next hop.
    Smtp {
        host: String,
        port: u16,
        tls: TlsMode,
        /// The next hop's certificate is checked against these roots (PEM) when TLS is
        /// required; opportunistic TLS accepts any certificate, as MTAs do.
        ca_file: Option<PathBuf>,
        /// SMTP AUTH towards the hop (a smarthost that wants it); only ever sent over TLS.
        auth: Option<HopAuth>,
    },
    /// A Maildir (`new/`, `cur/`, `tmp/`): for trying the product without a mail server.
    Maildir(PathBuf),
}

/// What an administrator reads: `Maildir PATH` or `SMTP HOST:PORT (TLS mode)`.
impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Maildir(p) => write!(f, "Maildir {}", p.display()),
            Route::Smtp {
                host, port, tls, ..
            } => write!(f, "SMTP {host}:{port} (TLS {tls:?})"),
        }
    }
}

/// The account the gateway logs in with at a next hop. The password comes from the
/// environment or a file (as the token PIN does), never from this configuration.
#[derive(Debug, Clone)]
pub struct HopAuth {
    pub user: String,
    pub password: hsm::PinSource,
}

#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Delivery attempts running at once.
    pub concurrency: usize,
    /// The first retry after this, doubling up to `max_retry`.
    pub first_retry: Duration,
    pub max_retry: Duration,
    /// Undelivered after this long: bounced.
    pub lifetime: Duration,
}

/// sign `always|never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sign {
    Always,
    Never,
}

/// encrypt `never|if-possible|required`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encrypt {
    Never,
    IfPossible,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureFormat {
    Detached,
    Opaque,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashName {
    Sha256,
    Sha384,
    Sha512,
}

/// Content encryption, named as OpenSSL names it (`aes-256-cbc`); the CLI's `aes256-cbc`
/// spelling is accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CipherName {
    #[serde(rename = "aes-128-cbc", alias = "aes128-cbc")]
    Aes128Cbc,
    #[serde(rename = "aes-256-cbc", alias = "aes256-cbc")]
    Aes256Cbc,
    #[serde(rename = "aes-128-gcm", alias = "aes128-gcm")]
    Aes128Gcm,
    #[serde(rename = "aes-256-gcm", alias = "aes256-gcm")]
    Aes256Gcm,
}

/// What applies to one sender (after domain and address overrides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub sign: Sign,
    pub encrypt: Encrypt,
    pub format: SignatureFormat,
    pub hash: HashName,
    pub cipher: CipherName,
}

/// A header that suppresses signing when its value matches.
#[derive(Debug, Clone)]
pub struct HeaderRule {
    pub name: String,
    pub pattern: regex::Regex,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub default: Rules,
    pub domains: BTreeMap<String, Rules>,
    pub senders: BTreeMap<String, Rules>,
    pub never_sign_to: Vec<regex::Regex>,
    pub never_sign_headers: Vec<HeaderRule>,
    pub archive_bcc: Option<String>,
    pub encrypt_subject_tag: Option<String>,
    /// Authenticated users who may send (and so sign) as other addresses too: user → the
    /// addresses (a shared mailbox). Everyone may send as themself.
    pub send_as: BTreeMap<String, Vec<String>>,
    /// What to do with inbound content decrypted from CBC (no integrity protection) that is
    /// not under a valid signature and holds HTML (EFAIL's malleability gadgets).
    pub unauthenticated_cbc_html: CbcHtml,
}

/// `policy.unauthenticated_cbc_html`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CbcHtml {
    /// Delivered, marked as not integrity protected.
    Deliver,
    /// Not delivered: the sender gets a DSN (with the message as it was sent, encrypted).
    Refuse,
}

/// A `[policy]` section on its own (what the consoles edit).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyOnly {
    #[serde(default)]
    policy: raw::PolicyRaw,
}

impl Policy {
    /// Parses policy settings written as in the configuration file: `[policy]` and its
    /// `[policy.domain."..."]` / `[policy.sender."..."]` tables, nothing else.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let only: PolicyOnly = toml::from_str(text).map_err(|e| {
            let msg = toml_error(&e);
            if msg.contains("unknown field") && !msg.contains("policy") {
                format!("{msg} (only [policy] settings belong here)")
            } else {
                msg
            }
        })?;
        only.policy.check()
    }

    /// The `[policy]` tables of a configuration file's text, as written.
    pub fn section_of(config_text: &str) -> String {
        let mut out = String::new();
        let mut inside = false;
        for line in config_text.lines() {
            let t = line.trim_start();
            if t.starts_with('[') {
                let name = t.trim_start_matches('[').trim_start();
                inside = name.starts_with("policy]")
                    || name.starts_with("policy.")
                    || name.starts_with("policy ");
            }
            if inside {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The rules for a sender: the address's, else its domain's, else the defaults.
    pub fn rules_for(&self, sender: &str) -> Rules {
        let sender = sender.to_ascii_lowercase();
        if let Some(r) = self.senders.get(&sender) {
            return *r;
        }
        let domain = sender.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        self.domains.get(domain).copied().unwrap_or(self.default)
    }

    /// Whether the authenticated `user` may send as `from` (themself, or a grant in
    /// `policy.send_as`).
    pub fn may_send_as(&self, user: &str, from: &str) -> bool {
        user.eq_ignore_ascii_case(from)
            || self
                .send_as
                .get(&user.to_ascii_lowercase())
                .is_some_and(|list| list.iter().any(|a| a.eq_ignore_ascii_case(from)))
    }

    /// Whether mail to `recipient` is never signed (the destination exceptions).
    pub fn never_sign_to(&self, recipient: &str) -> bool {
        self.never_sign_to.iter().any(|r| r.is_match(recipient))
    }
}

/// The Japanese mobile carriers' domains, whose phones show a signature as an attachment
/// or refuse it: never signed unless the configuration says otherwise.
pub const DEFAULT_NEVER_SIGN_TO: &[&str] = &[
    r"(?i)@(.+\.)?docomo\.ne\.jp$",
    r"(?i)@(.+\.)?ezweb\.ne\.jp$",
    r"(?i)@(.+\.)?au\.com$",
    r"(?i)@(.+\.)?softbank\.ne\.jp$",
    r"(?i)@(.+\.)?i\.softbank\.jp$",
    r"(?i)@(.+\.)?ymobile\.ne\.jp$",
];

/// Mail that is already S/MIME is never signed again.
pub const DEFAULT_NEVER_SIGN_HEADER: (&str, &str) = (
    "Content-Type",
    r"(?i)^\s*(multipart/signed|application/(x-)?pkcs7-mime)\b",
);

impl Config {
    /// The embedded defaults of `smimegw serve --dev`: data in `data_dir`, SMTP on
    /// 127.0.0.1:2525, internal domain example.com, loopback internal, the software token,
    /// the built-in CA, delivery into Maildirs under `DATA/outbox` and `DATA/inbox`.
    pub fn dev(data_dir: &Path) -> Config {
        // An empty file is all defaults; dev changes only what the defaults cannot know.
        let mut cfg = Config::parse("", data_dir, "built-in defaults")
            .unwrap_or_else(|e| unreachable!("the defaults are valid: {e}"));
        cfg.data_dir = data_dir.to_path_buf();
        cfg.outbound = Route::Maildir(data_dir.join("outbox"));
        cfg.inbound = Route::Maildir(data_dir.join("inbox"));
        cfg.server.hostname = "localhost".into();
        cfg.server.listen = vec![SocketAddr::from(([127, 0, 0, 1], 2525))];
        cfg.server.internal_domains = vec!["example.com".into()];
        cfg.web.listen = vec![SocketAddr::from(([127, 0, 0, 1], 8443))];
        cfg
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path, data_dir_override: Option<&Path>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            message: format!("cannot be read: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut cfg = Config::parse(&text, base, &path.display().to_string())?;
        if let Some(d) = data_dir_override {
            cfg.data_dir = d.to_path_buf();
            cfg.fix_maildirs();
        }
        Ok(cfg)
    }

    /// Parses configuration text; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path, file: &str) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            file: file.to_string(),
            message,
        };
        let raw: raw::File = toml::from_str(text).map_err(|e| err(toml_error(&e)))?;
        let mut cfg = raw.check(base).map_err(err)?;
        cfg.policy_text = Policy::section_of(text);
        Ok(cfg)
    }

    /// Maildir routes follow the data directory unless configured.
    fn fix_maildirs(&mut self) {
        if let Route::Maildir(p) = &mut self.outbound
            && p.ends_with("outbox")
        {
            *p = self.data_dir.join("outbox");
        }
        if let Route::Maildir(p) = &mut self.inbound
            && p.ends_with("inbox")
        {
            *p = self.data_dir.join("inbox");
        }
    }

    /// Whether a domain is internal.
    pub fn is_internal_domain(&self, domain: &str) -> bool {
        self.server
            .internal_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// Whether an address is in an internal domain: a plain mailbox (see [`plain_mailbox`])
    /// whose domain is internal. `user%host@ours`, `host!user@ours`, `"a@b"@ours`,
    /// `a@b@ours` and source routes are not internal, whatever follows their last `@`: a
    /// permissive mail server inside would route them elsewhere.
    pub fn is_internal_address(&self, address: &str) -> bool {
        plain_mailbox(address).is_some_and(|(_, d)| self.is_internal_domain(d))
    }

    /// Whether a client address is in the internal networks.
    pub fn is_internal_client(&self, ip: IpAddr) -> bool {
        self.server.internal_networks.iter().any(|n| n.contains(ip))
    }
}

/// The smallest `server.max_message_size` accepted.
pub const MIN_MESSAGE_SIZE: u64 = 64 << 10;
/// The smallest `server.max_header_size` accepted.
pub const MIN_HEADER_SIZE: u64 = 1 << 10;
/// `server.max_sessions_per_client` unless set (or `max_sessions`, when smaller): Postfix's
/// default concurrency towards one destination, so an organisation's server relaying
/// through the gateway is not refused.
pub const DEFAULT_SESSIONS_PER_CLIENT: usize = 20;

/// An address as `(local part, domain)` when it is a plain mailbox: one `@`; a dot-atom
/// local part without `%` or `!` (no quoted string, no source route, no UUCP bang path, no
/// percent hack); a domain of dot-separated labels (letters, digits, hyphens, or non-ASCII
/// for SMTPUTF8). `None` for anything else.
pub fn plain_mailbox(address: &str) -> Option<(&str, &str)> {
    let (local, domain) = address.split_once('@')?;
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "#$&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext));
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
    };
    let domain_ok = !domain.is_empty() && domain.len() <= 253 && domain.split('.').all(label);
    (local_ok && domain_ok).then_some((local, domain))
}

/// toml's message, which names the key and shows the line, on one line or a few.
fn toml_error(e: &toml::de::Error) -> String {
    e.to_string().trim_end().to_string()
}

/// "30s", "5m", "4h", "5d", or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 30s, 5m, 4h or 5d)"))?;
    let mult = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?} is not a duration (like 30s, 5m, 4h or 5d)")),
    };
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

/// "50M", "512k", "1G", or a number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 512k, 50M or 1G)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => return Err(format!("{s:?} is not a size (like 512k, 50M or 1G)")),
    };
    Ok(n.saturating_mul(mult))
}

/// The file as written: every field optional, unknown keys refused.
mod raw {
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub data_dir: Option<PathBuf>,
        #[serde(default)]
        pub server: ServerRaw,
        #[serde(default)]
        pub token: TokenRaw,
        #[serde(default)]
        pub ca: CaRaw,
        #[serde(default)]
        pub delivery: DeliveryRaw,
        #[serde(default)]
        pub queue: QueueRaw,
        #[serde(default)]
        pub policy: PolicyRaw,
        #[serde(default)]
        pub board: BoardRaw,
        #[serde(default)]
        pub web: WebRaw,
        pub ldap: Option<crate::ldap::LdapRaw>,
        #[serde(default)]
        pub revocation: RevocationRaw,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RevocationRaw {
        pub unknown: Option<String>,
        pub fetch: Option<bool>,
        pub refresh: Option<String>,
        pub fetch_timeout: Option<String>,
        pub allow_hosts: Option<Vec<String>>,
        pub allow_networks: Option<Vec<String>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct WebRaw {
        pub listen: Option<Vec<String>>,
        pub tls_cert: Option<PathBuf>,
        pub tls_key: Option<PathBuf>,
        pub session_idle: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct BoardRaw {
        pub watchdog: Option<PathBuf>,
        pub gpio_chip: Option<PathBuf>,
        pub gpio_lines: Option<LinesRaw>,
        pub pin_dir: Option<PathBuf>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct LinesRaw {
        pub green: u32,
        pub amber: u32,
        pub red: u32,
        pub tamper: u32,
        pub button: u32,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ServerRaw {
        pub hostname: Option<String>,
        pub listen: Option<Vec<String>>,
        pub internal_networks: Option<Vec<String>>,
        pub internal_domains: Option<Vec<String>>,
        pub max_message_size: Option<String>,
        pub max_recipients: Option<usize>,
        pub max_sessions: Option<usize>,
        pub max_sessions_per_client: Option<usize>,
        pub idle_timeout: Option<String>,
        pub max_session_time: Option<String>,
        pub max_errors: Option<usize>,
        pub max_auth_failures: Option<usize>,
        pub max_auth_failures_per_client: Option<usize>,
        pub auth_lockout: Option<String>,
        pub bare_line_ends: Option<String>,
        pub max_header_size: Option<String>,
        pub max_hops: Option<usize>,
        pub auth_users: Option<PathBuf>,
        pub tls_cert: Option<PathBuf>,
        pub tls_key: Option<PathBuf>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TokenRaw {
        /// A PKCS#11 URI; absent: the software token.
        pub uri: Option<String>,
        /// Where the PIN comes from: `env:NAME`, `file:PATH`, `prompt`.
        pub pin: Option<String>,
        pub allow_raw_rsa: Option<bool>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct CaRaw {
        pub enabled: Option<bool>,
        pub organization: Option<String>,
        pub issue_on_first_use: Option<bool>,
        pub expiry_warnings: Option<Vec<u64>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DeliveryRaw {
        #[serde(default)]
        pub outbound: RouteRaw,
        #[serde(default)]
        pub inbound: RouteRaw,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RouteRaw {
        /// host:port of the next hop.
        pub next_hop: Option<String>,
        /// off, opportunistic, required.
        pub tls: Option<String>,
        pub ca_file: Option<PathBuf>,
        /// SMTP AUTH user at the next hop, and where its password comes from.
        pub auth_user: Option<String>,
        pub auth_password: Option<String>,
        /// A Maildir instead of a next hop.
        pub maildir: Option<PathBuf>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct QueueRaw {
        pub concurrency: Option<usize>,
        pub first_retry: Option<String>,
        pub max_retry: Option<String>,
        pub lifetime: Option<String>,
    }

    #[derive(Debug, Default, Clone, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RulesRaw {
        pub sign: Option<Sign>,
        pub encrypt: Option<Encrypt>,
        pub format: Option<SignatureFormat>,
        pub hash: Option<HashName>,
        pub cipher: Option<CipherName>,
    }

    impl RulesRaw {
        fn over(&self, base: Rules) -> Rules {
            Rules {
                sign: self.sign.unwrap_or(base.sign),
                encrypt: self.encrypt.unwrap_or(base.encrypt),
                format: self.format.unwrap_or(base.format),
                hash: self.hash.unwrap_or(base.hash),
                cipher: self.cipher.unwrap_or(base.cipher),
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HeaderRaw {
        pub name: String,
        pub pattern: String,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct PolicyRaw {
        pub sign: Option<Sign>,
        pub encrypt: Option<Encrypt>,
        pub format: Option<SignatureFormat>,
        pub hash: Option<HashName>,
        pub cipher: Option<CipherName>,
        #[serde(default)]
        pub domain: BTreeMap<String, RulesRaw>,
        #[serde(default)]
        pub sender: BTreeMap<String, RulesRaw>,
        pub never_sign_to: Option<Vec<String>>,
        pub never_sign_headers: Option<Vec<HeaderRaw>>,
        pub archive_bcc: Option<String>,
        pub encrypt_subject_tag: Option<String>,
        pub send_as: Option<BTreeMap<String, Vec<String>>>,
        pub unauthenticated_cbc_html: Option<CbcHtml>,
    }

    fn path(base: &Path, p: PathBuf) -> PathBuf {
        if p.is_absolute() { p } else { base.join(p) }
    }

    fn regex(key: &str, pattern: &str) -> Result<regex::Regex, String> {
        regex::Regex::new(pattern)
            .map_err(|e| format!("{key}: {pattern:?} is not a regular expression: {e}"))
    }

    fn address(key: &str, a: &str) -> Result<String, String> {
        let a = a.trim();
        match a.rsplit_once('@') {
            Some((l, d)) if !l.is_empty() && d.contains('.') || d == "localhost" => {
                Ok(a.to_ascii_lowercase())
            }
            _ => Err(format!("{key}: {a:?} is not an email address")),
        }
    }

    fn board_pins(
        chip: Option<PathBuf>,
        lines: Option<LinesRaw>,
        dir: Option<PathBuf>,
    ) -> Result<BoardPins, String> {
        match (chip, lines, dir) {
            (None, None, None) => Ok(BoardPins::None),
            (None, None, Some(dir)) => Ok(BoardPins::Files(dir)),
            (Some(chip), Some(l), None) => {
                let lines = board::pins::Lines {
                    green: l.green,
                    amber: l.amber,
                    red: l.red,
                    tamper: l.tamper,
                    button: l.button,
                };
                Ok(BoardPins::Gpio { chip, lines })
            }
            (Some(_), None, None) => Err(
                "board.gpio_chip: needs board.gpio_lines (green, amber, red, tamper, button)"
                    .into(),
            ),
            (None, Some(_), None) => Err("board.gpio_lines: needs board.gpio_chip".into()),
            _ => Err(
                "board.pin_dir: give either pin_dir or gpio_chip with gpio_lines, not both".into(),
            ),
        }
    }

    fn route(key: &str, r: RouteRaw, base: &Path, default_dir: PathBuf) -> Result<Route, String> {
        let tls = match r.tls.as_deref().unwrap_or("opportunistic") {
            "off" => TlsMode::Off,
            "opportunistic" => TlsMode::Opportunistic,
            "required" => TlsMode::Required,
            other => {
                return Err(format!(
                    "{key}.tls: {other:?} (use off, opportunistic or required)"
                ));
            }
        };
        match (r.next_hop, r.maildir) {
            (Some(_), Some(_)) => Err(format!(
                "{key}: next_hop and maildir are both set; choose one"
            )),
            (Some(hop), None) => {
                let (host, port) = match hop.rsplit_once(':') {
                    Some((h, p)) if !h.ends_with(':') || h.starts_with('[') => (
                        h.trim_start_matches('[').trim_end_matches(']').to_string(),
                        p.parse::<u16>()
                            .map_err(|_| format!("{key}.next_hop: {hop:?}: bad port"))?,
                    ),
                    _ => (hop.clone(), 25),
                };
                if host.is_empty() {
                    return Err(format!("{key}.next_hop: {hop:?} has no host"));
                }
                let auth = match (r.auth_user, r.auth_password) {
                    (None, None) => None,
                    (Some(_), None) | (None, Some(_)) => {
                        return Err(format!(
                            "{key}.auth_user and {key}.auth_password go together: set both or neither"
                        ));
                    }
                    (Some(user), Some(source)) => {
                        let password = match hsm::PinSource::parse(&source) {
                            Ok(p @ (hsm::PinSource::Env(_) | hsm::PinSource::File(_))) => p,
                            _ => {
                                return Err(format!(
                                    "{key}.auth_password: use \"env:NAME\" or \"file:/path\" (never the password itself)"
                                ));
                            }
                        };
                        if tls == TlsMode::Off {
                            return Err(format!(
                                "{key}.auth_user: AUTH needs tls = \"opportunistic\" or \"required\" (the password never goes in clear)"
                            ));
                        }
                        Some(HopAuth { user, password })
                    }
                };
                Ok(Route::Smtp {
                    host,
                    port,
                    tls,
                    ca_file: r.ca_file.map(|p| path(base, p)),
                    auth,
                })
            }
            (None, Some(_)) if r.auth_user.is_some() || r.auth_password.is_some() => Err(format!(
                "{key}: auth_user and auth_password are for a next_hop, not a maildir"
            )),
            (None, Some(dir)) => Ok(Route::Maildir(path(base, dir))),
            (None, None) => Ok(Route::Maildir(default_dir)),
        }
    }

    impl File {
        pub fn check(self, base: &Path) -> Result<Config, String> {
            let data_dir = path(base, self.data_dir.unwrap_or_else(|| "var".into()));
            let s = self.server;
            let listen = s
                .listen
                .unwrap_or_else(|| vec!["0.0.0.0:25".into()])
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    a.parse::<SocketAddr>()
                        .map_err(|_| format!("server.listen[{i}]: {a:?} is not an address:port"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let internal_networks = s
                .internal_networks
                .unwrap_or_else(|| vec!["127.0.0.0/8".into(), "::1/128".into()])
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    Network::parse(n).map_err(|e| format!("server.internal_networks[{i}]: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let internal_domains: Vec<String> = s
                .internal_domains
                .unwrap_or_default()
                .into_iter()
                .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
                .collect();
            if let Some((i, d)) = internal_domains
                .iter()
                .enumerate()
                .find(|(_, d)| d.is_empty() || d.contains(['@', ' ', '/']))
            {
                return Err(format!(
                    "server.internal_domains[{i}]: {d:?} is not a domain"
                ));
            }
            let max_message_size = match s.max_message_size {
                Some(v) => parse_size(&v).map_err(|e| format!("server.max_message_size: {e}"))?,
                None => 50 << 20,
            };
            if max_message_size < MIN_MESSAGE_SIZE {
                // 0 would be announced as "SIZE 0" (no limit) and refuse every message.
                return Err(format!(
                    "server.max_message_size: {max_message_size} bytes is too small; at least \
                     {}k (S/MIME messages are never that small)",
                    MIN_MESSAGE_SIZE >> 10
                ));
            }
            let idle_timeout = match s.idle_timeout {
                Some(v) => parse_duration(&v).map_err(|e| format!("server.idle_timeout: {e}"))?,
                None => Duration::from_secs(300),
            };
            let nonzero = |key: &str, v: Option<String>, d: u64| {
                let t = match v {
                    Some(v) => parse_duration(&v).map_err(|e| format!("{key}: {e}"))?,
                    None => Duration::from_secs(d),
                };
                if t.is_zero() {
                    return Err(format!("{key}: must be at least 1s"));
                }
                Ok(t)
            };
            if idle_timeout.is_zero() {
                return Err("server.idle_timeout: must be at least 1s".into());
            }
            let max_session_time = nonzero("server.max_session_time", s.max_session_time, 600)?;
            let auth_lockout = nonzero("server.auth_lockout", s.auth_lockout, 900)?;
            let positive = |key: &str, v: Option<usize>, d: usize| match v {
                Some(0) => Err(format!("{key}: must be at least 1")),
                Some(n) => Ok(n),
                None => Ok(d),
            };
            let max_sessions = positive("server.max_sessions", s.max_sessions, 1000)?;
            let max_sessions_per_client = positive(
                "server.max_sessions_per_client",
                s.max_sessions_per_client,
                DEFAULT_SESSIONS_PER_CLIENT.min(max_sessions),
            )?;
            if max_sessions_per_client > max_sessions {
                return Err(format!(
                    "server.max_sessions_per_client: {max_sessions_per_client} is more than \
                     server.max_sessions ({max_sessions})"
                ));
            }
            let bare_line_ends = match s.bare_line_ends.as_deref() {
                None | Some("reject") => crate::smtp::BareLineEnds::Reject,
                Some("normalize") => crate::smtp::BareLineEnds::Normalize,
                Some(v) => {
                    return Err(format!(
                        "server.bare_line_ends: {v:?} is not one of \"reject\", \"normalize\""
                    ));
                }
            };
            let max_header_size = match s.max_header_size {
                Some(v) => parse_size(&v).map_err(|e| format!("server.max_header_size: {e}"))?,
                None => 1 << 20,
            };
            if max_header_size < MIN_HEADER_SIZE {
                return Err(format!(
                    "server.max_header_size: {max_header_size} bytes is too small; at least \
                     {}k (every message would be refused)",
                    MIN_HEADER_SIZE >> 10
                ));
            }
            if s.tls_cert.is_some() != s.tls_key.is_some() {
                return Err(
                    "server.tls_cert and server.tls_key go together: set both or neither".into(),
                );
            }
            let server = Server {
                hostname: s.hostname.unwrap_or_else(|| "smimegw.localdomain".into()),
                listen,
                internal_networks,
                internal_domains,
                max_message_size,
                max_recipients: positive("server.max_recipients", s.max_recipients, 1000)?,
                max_sessions,
                max_sessions_per_client,
                idle_timeout,
                max_session_time,
                max_errors: positive("server.max_errors", s.max_errors, 20)?,
                max_auth_failures: positive("server.max_auth_failures", s.max_auth_failures, 3)?,
                max_auth_failures_per_client: positive(
                    "server.max_auth_failures_per_client",
                    s.max_auth_failures_per_client,
                    10,
                )?,
                auth_lockout,
                bare_line_ends,
                max_header_size,
                max_hops: positive("server.max_hops", s.max_hops, 50)?,
                auth_users: s.auth_users.map(|p| path(base, p)),
                tls_cert: s.tls_cert.map(|p| path(base, p)),
                tls_key: s.tls_key.map(|p| path(base, p)),
            };

            let pin = self.token.pin;
            if let Some(p) = &pin {
                hsm::PinSource::parse(p).map_err(|e| format!("token.pin: {e}"))?;
            }
            let token = match self.token.uri {
                Some(uri) => {
                    hsm::Pkcs11Uri::parse(&uri).map_err(|e| format!("token.uri: {e}"))?;
                    TokenConfig::Pkcs11 {
                        uri,
                        pin,
                        allow_raw_rsa: self.token.allow_raw_rsa.unwrap_or(false),
                    }
                }
                None => TokenConfig::Software { pin },
            };
            let ca = CaConfig {
                enabled: self.ca.enabled.unwrap_or(true),
                organization: self.ca.organization.unwrap_or_else(|| "smimegw".into()),
                issue_on_first_use: self.ca.issue_on_first_use.unwrap_or(true),
            };
            let outbound = route(
                "delivery.outbound",
                self.delivery.outbound,
                base,
                data_dir.join("outbox"),
            )?;
            let inbound = route(
                "delivery.inbound",
                self.delivery.inbound,
                base,
                data_dir.join("inbox"),
            )?;
            let q = self.queue;
            let dur = |key: &str, v: Option<String>, d: u64| match v {
                Some(v) => parse_duration(&v).map_err(|e| format!("{key}: {e}")),
                None => Ok(Duration::from_secs(d)),
            };
            let queue = QueueConfig {
                concurrency: positive("queue.concurrency", q.concurrency, 16)?,
                first_retry: dur("queue.first_retry", q.first_retry, 60)?,
                max_retry: dur("queue.max_retry", q.max_retry, 3600)?,
                lifetime: dur("queue.lifetime", q.lifetime, 5 * 86_400)?,
            };

            let policy = self.policy.check()?;
            Ok(Config {
                data_dir,
                server,
                token,
                ca,
                outbound,
                inbound,
                queue,
                ldap: self.ldap.map(crate::ldap::LdapRaw::check).transpose()?,
                revocation: {
                    use crate::revocation::{RevocationSettings, UnknownStatus};
                    let r = self.revocation;
                    let unknown = match r.unknown.as_deref() {
                        None | Some("allow") => UnknownStatus::Allow,
                        Some("refuse") => UnknownStatus::Refuse,
                        Some(other) => {
                            return Err(format!(
                                "revocation.unknown: {other:?} is not \"allow\" (use a \
                                 certificate whose revocation status is unknown) or \
                                 \"refuse\" (do not)"
                            ));
                        }
                    };
                    let refresh = dur("revocation.refresh", r.refresh, 6 * 3600)?;
                    if refresh < Duration::from_secs(300) {
                        return Err("revocation.refresh: at least 5m".into());
                    }
                    let allow_hosts = r.allow_hosts.unwrap_or_default();
                    if let Some((i, h)) = allow_hosts.iter().enumerate().find(|(_, h)| {
                        h.trim().is_empty() || h.contains(['/', ' ', '@']) || h.contains("://")
                    }) {
                        return Err(format!(
                            "revocation.allow_hosts[{i}]: {h:?} is not a host name or address \
                             (networks go in revocation.allow_networks)"
                        ));
                    }
                    let allow_networks = r
                        .allow_networks
                        .unwrap_or_default()
                        .iter()
                        .enumerate()
                        .map(|(i, n)| {
                            Network::parse(n)
                                .map_err(|e| format!("revocation.allow_networks[{i}]: {e}"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    RevocationSettings {
                        unknown,
                        fetch: r.fetch.unwrap_or(true),
                        refresh,
                        timeout: dur("revocation.fetch_timeout", r.fetch_timeout, 15)?,
                        allow_hosts: allow_hosts.iter().map(|h| h.trim().to_string()).collect(),
                        allow_networks,
                    }
                },
                expiry_warnings: {
                    let mut w = self.ca.expiry_warnings.unwrap_or_else(|| vec![30, 7]);
                    if w.iter().any(|d| *d == 0 || *d > 365) {
                        return Err("ca.expiry_warnings: days between 1 and 365".into());
                    }
                    w.sort_unstable_by(|a, b| b.cmp(a));
                    w.dedup();
                    w
                },
                web: {
                    let w = self.web;
                    let listen = w
                        .listen
                        .unwrap_or_default()
                        .iter()
                        .enumerate()
                        .map(|(i, a)| {
                            a.parse::<SocketAddr>().map_err(|_| {
                                format!("web.listen[{i}]: {a:?} is not an address:port")
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if w.tls_cert.is_some() != w.tls_key.is_some() {
                        return Err("web.tls_cert and web.tls_key go together".into());
                    }
                    WebConfig {
                        listen,
                        tls_cert: w.tls_cert.map(|p| path(base, p)),
                        tls_key: w.tls_key.map(|p| path(base, p)),
                        session_idle: dur("web.session_idle", w.session_idle, 1800)?,
                    }
                },
                board: BoardConfig {
                    watchdog: self.board.watchdog,
                    pins: board_pins(
                        self.board.gpio_chip,
                        self.board.gpio_lines,
                        self.board.pin_dir.map(|d| base.join(d)),
                    )?,
                },
                policy,
                policy_text: String::new(),
            })
        }
    }
    impl PolicyRaw {
        /// The policy these settings make, or what is wrong (naming the key).
        pub fn check(self) -> Result<Policy, String> {
            let p = self;
            let rules = RulesRaw {
                sign: p.sign,
                encrypt: p.encrypt,
                format: p.format,
                hash: p.hash,
                cipher: p.cipher,
            };
            let default = rules.over(Rules {
                sign: Sign::Always,
                encrypt: Encrypt::IfPossible,
                format: SignatureFormat::Detached,
                hash: HashName::Sha256,
                cipher: CipherName::Aes256Cbc,
            });
            let mut domains = BTreeMap::new();
            for (d, r) in p.domain {
                domains.insert(d.to_ascii_lowercase(), r.over(default));
            }
            let mut senders = BTreeMap::new();
            for (a, r) in p.sender {
                let a = address(&format!("policy.sender.{a:?}"), &a)?;
                let base = a
                    .rsplit_once('@')
                    .and_then(|(_, d)| domains.get(d).copied())
                    .unwrap_or(default);
                senders.insert(a, r.over(base));
            }
            let never_sign_to = match p.never_sign_to {
                Some(list) => list
                    .iter()
                    .enumerate()
                    .map(|(i, r)| regex(&format!("policy.never_sign_to[{i}]"), r))
                    .collect::<Result<Vec<_>, _>>()?,
                None => DEFAULT_NEVER_SIGN_TO
                    .iter()
                    .map(|r| regex("policy.never_sign_to", r))
                    .collect::<Result<Vec<_>, _>>()?,
            };
            let never_sign_headers = match p.never_sign_headers {
                Some(list) => list
                    .into_iter()
                    .enumerate()
                    .map(|(i, h)| {
                        let key = format!("policy.never_sign_headers[{i}]");
                        if h.name.is_empty() || h.name.contains([':', ' ']) {
                            return Err(format!("{key}.name: {:?} is not a header name", h.name));
                        }
                        Ok(HeaderRule {
                            pattern: regex(&format!("{key}.pattern"), &h.pattern)?,
                            name: h.name,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                None => vec![HeaderRule {
                    name: DEFAULT_NEVER_SIGN_HEADER.0.into(),
                    pattern: regex("policy.never_sign_headers", DEFAULT_NEVER_SIGN_HEADER.1)?,
                }],
            };
            let archive_bcc = p
                .archive_bcc
                .map(|a| address("policy.archive_bcc", &a))
                .transpose()?;
            let encrypt_subject_tag = match p.encrypt_subject_tag {
                Some(t) if t.trim().is_empty() => {
                    return Err(
                        "policy.encrypt_subject_tag: must not be empty (leave it out to have none)"
                            .into(),
                    );
                }
                t => t,
            };
            let mut send_as = BTreeMap::new();
            for (user, list) in p.send_as.unwrap_or_default() {
                let key = format!("policy.send_as.{user:?}");
                let user = address(&key, &user)?;
                let list = list
                    .iter()
                    .enumerate()
                    .map(|(i, a)| address(&format!("{key}[{i}]"), a))
                    .collect::<Result<Vec<_>, _>>()?;
                send_as.insert(user, list);
            }
            Ok(Policy {
                default,
                domains,
                senders,
                never_sign_to,
                never_sign_headers,
                archive_bcc,
                encrypt_subject_tag,
                send_as,
                unauthenticated_cbc_html: p.unauthenticated_cbc_html.unwrap_or(CbcHtml::Deliver),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/etc/smimegw"), "smimegw.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.data_dir, Path::new("/etc/smimegw/var"));
        assert_eq!(c.policy.default.sign, Sign::Always);
        assert!(c.policy.never_sign_to("taro@docomo.ne.jp"));
        assert!(c.policy.never_sign_to("hanako@ezweb.ne.jp"));
        assert!(!c.policy.never_sign_to("bob@example.net"));
        assert!(!c.policy.never_sign_to("bob@notdocomo.ne.jp.example.net"));
        assert!(matches!(c.outbound, Route::Maildir(ref p) if p.ends_with("var/outbox")));
        assert!(c.is_internal_client("127.0.0.1".parse().unwrap()));
        assert!(c.is_internal_client("::ffff:127.0.0.2".parse().unwrap()));
        assert!(!c.is_internal_client("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn overrides_by_domain_then_sender() {
        let c = parse(
            r#"
            [policy]
            encrypt = "never"
            [policy.domain."example.com"]
            encrypt = "required"
            [policy.sender."ceo@example.com"]
            sign = "never"
            "#,
        )
        .unwrap();
        let r = c.policy.rules_for("CEO@example.com");
        assert_eq!((r.sign, r.encrypt), (Sign::Never, Encrypt::Required));
        let r = c.policy.rules_for("bob@example.com");
        assert_eq!((r.sign, r.encrypt), (Sign::Always, Encrypt::Required));
        let r = c.policy.rules_for("bob@example.org");
        assert_eq!((r.sign, r.encrypt), (Sign::Always, Encrypt::Never));
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("[server]\nlisten = [\"nowhere\"]", "server.listen[0]"),
            (
                "[server]\ninternal_networks = [\"10.0.0.0/33\"]",
                "server.internal_networks[0]",
            ),
            (
                "[server]\nmax_message_size = \"10 parsecs\"",
                "server.max_message_size",
            ),
            (
                "[policy]\nnever_sign_to = [\"ok\", \"(\"]",
                "policy.never_sign_to[1]",
            ),
            ("[policy]\nsign = \"sometimes\"", "sign"),
            ("[policy]\narchive_bcc = \"nobody\"", "policy.archive_bcc"),
            (
                "[delivery.outbound]\nnext_hop = \"mx:port\"",
                "delivery.outbound.next_hop",
            ),
            (
                "[delivery.outbound]\ntls = \"maybe\"",
                "delivery.outbound.tls",
            ),
            ("[queue]\nlifetime = \"forever\"", "queue.lifetime"),
            ("[server]\nlisten_on = []", "listen_on"),
            ("[server]\ntls_cert = \"a.pem\"", "server.tls_cert"),
            (
                "[delivery.outbound]\nnext_hop = \"mx:25\"\nauth_user = \"gw\"",
                "delivery.outbound.auth_user and delivery.outbound.auth_password go together",
            ),
            (
                "[delivery.outbound]\nnext_hop = \"mx:25\"\nauth_user = \"gw\"\nauth_password = \"hunter2\"",
                "delivery.outbound.auth_password: use \"env:NAME\"",
            ),
            (
                "[delivery.outbound]\nnext_hop = \"mx:25\"\ntls = \"off\"\nauth_user = \"gw\"\nauth_password = \"env:X\"",
                "delivery.outbound.auth_user: AUTH needs tls",
            ),
            ("[policy]\ncipher = \"des\"", "cipher"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
            assert!(e.starts_with("smimegw.toml: "), "{e}");
        }
    }

    #[test]
    fn networks() {
        let n = Network::parse("10.1.0.0/16").unwrap();
        assert!(n.contains("10.1.200.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        let all = Network::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6 = Network::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("5d").unwrap(), Duration::from_secs(432_000));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_size("50M").unwrap(), 50 << 20);
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn board_pins_are_gpio_lines_or_files_never_both() {
        let c = parse(
            "[board]\ngpio_chip = \"/dev/gpiochip0\"\n\
             gpio_lines = { green = 5, amber = 6, red = 7, tamper = 12, button = 13 }",
        )
        .unwrap();
        assert!(matches!(c.board.pins, BoardPins::Gpio { ref chip, lines }
            if chip == Path::new("/dev/gpiochip0") && lines.tamper == 12));
        assert!(c.board.is_used());
        let c = parse("[board]\npin_dir = \"/run/smimegw/board\"").unwrap();
        assert_eq!(c.board.pins, BoardPins::Files("/run/smimegw/board".into()));
        assert!(!parse("").unwrap().board.is_used());
        for (text, msg) in [
            (
                "gpio_chip = \"/dev/gpiochip0\"",
                "board.gpio_chip: needs board.gpio_lines",
            ),
            (
                "gpio_lines = { green = 5, amber = 6, red = 7, tamper = 12, button = 13 }",
                "board.gpio_lines: needs board.gpio_chip",
            ),
            (
                "pin_dir = \"/x\"\ngpio_chip = \"/dev/gpiochip0\"",
                "board.pin_dir: give either",
            ),
            ("gpio_lines = { green = 5 }", "missing field `amber`"),
        ] {
            let e = parse(&format!("[board]\n{text}")).unwrap_err();
            assert!(e.contains(msg), "{text}: {e}");
        }
    }

    #[test]
    fn abuse_limits_have_defaults_and_refuse_nonsense() {
        let c = parse("").unwrap();
        assert_eq!(
            c.server.max_sessions_per_client,
            DEFAULT_SESSIONS_PER_CLIENT
        );
        assert_eq!(c.server.max_session_time, Duration::from_secs(600));
        assert_eq!(c.server.max_auth_failures, 3);
        assert_eq!(c.server.max_auth_failures_per_client, 10);
        assert_eq!(c.server.auth_lockout, Duration::from_secs(900));
        // A small max_sessions caps the per-client default.
        let c = parse("[server]\nmax_sessions = 5").unwrap();
        assert_eq!(c.server.max_sessions_per_client, 5);
        let c = parse(
            "[server]\nmax_sessions_per_client = 2\nmax_session_time = \"1m\"\n\
             max_auth_failures = 5\nmax_auth_failures_per_client = 7\nauth_lockout = \"1h\"\n\
             max_message_size = \"64k\"\nmax_header_size = \"1k\"",
        )
        .unwrap();
        assert_eq!(c.server.max_sessions_per_client, 2);
        assert_eq!(c.server.max_session_time, Duration::from_secs(60));
        assert_eq!(c.server.auth_lockout, Duration::from_secs(3600));
        assert_eq!(c.server.max_message_size, 64 << 10);
        for (text, key) in [
            (
                "max_message_size = \"0\"",
                "server.max_message_size: 0 bytes is too small",
            ),
            (
                "max_message_size = \"10k\"",
                "server.max_message_size: 10240 bytes",
            ),
            (
                "max_header_size = \"0\"",
                "server.max_header_size: 0 bytes is too small",
            ),
            (
                "max_sessions_per_client = 0",
                "server.max_sessions_per_client: must be",
            ),
            (
                "max_sessions = 10\nmax_sessions_per_client = 11",
                "server.max_sessions_per_client: 11 is more than server.max_sessions (10)",
            ),
            (
                "max_session_time = \"0s\"",
                "server.max_session_time: must be at least 1s",
            ),
            (
                "idle_timeout = \"0\"",
                "server.idle_timeout: must be at least 1s",
            ),
            (
                "max_auth_failures = 0",
                "server.max_auth_failures: must be at least 1",
            ),
            ("auth_lockout = \"soon\"", "server.auth_lockout"),
        ] {
            let e = parse(&format!("[server]\n{text}")).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn only_plain_mailboxes_in_internal_domains_are_internal() {
        let c = parse("[server]\ninternal_domains = [\"example.com\"]").unwrap();
        for a in [
            "alice@example.com",
            "Alice.B+tag@EXAMPLE.com",
            "o'brien@example.com",
        ] {
            assert!(c.is_internal_address(a), "{a}");
            assert!(plain_mailbox(a).is_some(), "{a}");
        }
        for a in [
            "user%evil.example@example.com",
            "evil.example!user@example.com",
            "\"user@evil.example\"@example.com",
            "\"john smith\"@example.com",
            "user@evil.example@example.com",
            "@evil.example:user@example.com",
            "@a.example,@b.example:user@example.com",
            "user@example.com.",
            "user..x@example.com",
            ".user@example.com",
            "user@-example.com",
            "user@[192.0.2.1]",
            "user@example.org",
        ] {
            assert!(!c.is_internal_address(a), "{a}");
        }
        assert_eq!(
            plain_mailbox("bob@example.org"),
            Some(("bob", "example.org"))
        );
        assert!(plain_mailbox("user%x@example.org").is_none());
        assert!(plain_mailbox("用户@例子.example").is_some(), "SMTPUTF8");
    }

    #[test]
    fn revocation_fetches_are_allowed_by_host_or_network() {
        let c = parse(
            "[revocation]\nallow_hosts = [\"crl.corp.example\", \"[::1]\"]\n\
             allow_networks = [\"10.1.0.0/16\"]",
        )
        .unwrap();
        assert_eq!(c.revocation.allow_hosts, ["crl.corp.example", "[::1]"]);
        assert_eq!(
            c.revocation.allow_networks,
            [Network::parse("10.1.0.0/16").unwrap()]
        );
        assert!(parse("").unwrap().revocation.allow_hosts.is_empty());
        for (text, key) in [
            ("allow_hosts = [\"http://x/\"]", "revocation.allow_hosts[0]"),
            (
                "allow_hosts = [\"10.0.0.0/8\"]",
                "revocation.allow_hosts[0]",
            ),
            (
                "allow_networks = [\"nowhere\"]",
                "revocation.allow_networks[0]",
            ),
        ] {
            let e = parse(&format!("[revocation]\n{text}")).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
