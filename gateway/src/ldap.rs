//! Recipients' certificates from an LDAP directory: `(mail=ADDRESS)` searched under a base,
//! the certificates in `userCertificate` and `userSMIMECertificate` (a PKCS#7 SignedData
//! holding them) returned as DER. One connection per look-up, the whole of it bounded by a
//! timeout; answers cached per address (certificates found for `cache_ttl`, none found for
//! `negative_ttl`; errors never).
//!
//! [`LdapRaw`] is the `[ldap]` table of the configuration as written; [`LdapRaw::check`] turns
//! it into [`LdapSettings`], reading the bind password from where it says.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hsm::ber::{self, tag};
use ldap3::asn1::{PL, StructureTag};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchOptions};
use serde::Deserialize;

/// The attributes asked for. `userCertificate` has certificate syntax, which servers send
/// only with the `;binary` option; some send it without, so both are asked for.
const ATTRIBUTES: [&str; 4] = [
    "userCertificate;binary",
    "userCertificate",
    "userSMIMECertificate;binary",
    "userSMIMECertificate",
];

/// Most entries one search may return (the server's size limit is set to this).
const MAX_ENTRIES: i32 = 16;

/// Most certificates one look-up returns.
const MAX_CERTIFICATES: usize = 64;

/// Longest address looked up (RFC 5321 allows 64 + 1 + 255).
const MAX_ADDRESS: usize = 320;

/// Most addresses held in the cache; beyond it expired answers go first, then the oldest.
const MAX_CACHED: usize = 10_000;

/// LDAP result codes after which the same request may succeed later: timeLimitExceeded,
/// adminLimitExceeded, busy, unavailable, other.
const TEMPORARY_CODES: [u32; 5] = [3, 11, 51, 52, 80];

/// The `[ldap]` table as written in the configuration file.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapRaw {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: Option<String>,
    /// The search base, like `dc=example,dc=org`.
    pub base: Option<String>,
    /// The DN to bind as; absent: anonymous.
    pub bind_dn: Option<String>,
    /// Where the bind password comes from: `env:NAME` or `file:/path`.
    pub bind_password: Option<String>,
    /// How long one look-up may take (connect, bind, search), like `5s`.
    pub timeout: Option<String>,
    /// How long certificates found are kept, like `1h`.
    pub cache: Option<String>,
    /// How long "no certificate" is kept, like `10m`.
    pub negative_cache: Option<String>,
}

impl fmt::Debug for LdapRaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A password written in place of its source must not be printed either.
        let source = self.bind_password.as_deref().map(|s| {
            if s.starts_with("env:") || s.starts_with("file:") {
                s
            } else {
                "***"
            }
        });
        f.debug_struct("LdapRaw")
            .field("url", &self.url)
            .field("base", &self.base)
            .field("bind_dn", &self.bind_dn)
            .field("bind_password", &source)
            .field("timeout", &self.timeout)
            .field("cache", &self.cache)
            .field("negative_cache", &self.negative_cache)
            .finish()
    }
}

/// Where the directory is and how to use it, checked.
#[derive(Clone)]
pub struct LdapSettings {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    /// The search base.
    pub base: String,
    /// The DN to bind as; `None`: anonymous.
    pub bind_dn: Option<String>,
    /// The bind password itself (already read from its source). Never printed.
    pub bind_password: Option<String>,
    /// The bound on one whole look-up.
    pub timeout: Duration,
    /// How long certificates found are kept.
    pub cache_ttl: Duration,
    /// How long "no certificate" is kept.
    pub negative_ttl: Duration,
}

impl fmt::Debug for LdapSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapSettings")
            .field("url", &self.url)
            .field("base", &self.base)
            .field("bind_dn", &self.bind_dn)
            .field("bind_password", &self.bind_password.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .field("cache_ttl", &self.cache_ttl)
            .field("negative_ttl", &self.negative_ttl)
            .finish()
    }
}

impl LdapRaw {
    /// Checks the table and reads the bind password. Errors name the key (`ldap.url: ...`).
    pub fn check(self) -> Result<LdapSettings, String> {
        let url = match self.url {
            Some(u) => u.trim().to_string(),
            None => {
                return Err("ldap.url: missing (like ldap://directory.example.org or \
                            ldaps://directory.example.org)"
                    .into());
            }
        };
        let host = check_url(&url).map_err(|e| format!("ldap.url: {e}"))?;
        let base = match self.base.as_deref().map(str::trim) {
            Some(b) if !b.is_empty() => {
                if !b.contains('=') {
                    return Err(format!(
                        "ldap.base: {b:?} is not a DN (like ou=people,dc=example,dc=org)"
                    ));
                }
                b.to_string()
            }
            _ => return Err("ldap.base: missing (the search base, like dc=example,dc=org)".into()),
        };
        let (bind_dn, bind_password) = match (self.bind_dn, self.bind_password) {
            (None, None) => (None, None),
            (Some(dn), Some(source)) => {
                let dn = dn.trim().to_string();
                if dn.is_empty() {
                    return Err("ldap.bind_dn: empty (leave bind_dn and bind_password out \
                                for an anonymous search)"
                        .into());
                }
                if url.starts_with("ldap://") && !is_loopback(host) {
                    return Err(format!(
                        "ldap.bind_password: a password goes only over ldaps:// (or to a \
                         directory on this machine), not in clear to {url}"
                    ));
                }
                let password =
                    read_secret(&source).map_err(|e| format!("ldap.bind_password: {e}"))?;
                (Some(dn), Some(password))
            }
            _ => {
                return Err(
                    "ldap.bind_dn and ldap.bind_password go together: set both or neither".into(),
                );
            }
        };
        let duration = |key: &str, v: Option<String>, default: Duration| match v {
            Some(v) => crate::config::parse_duration(&v).map_err(|e| format!("ldap.{key}: {e}")),
            None => Ok(default),
        };
        let timeout = duration("timeout", self.timeout, Duration::from_secs(5))?;
        if timeout.is_zero() {
            return Err("ldap.timeout: must be at least 1s".into());
        }
        let cache_ttl = duration("cache", self.cache, Duration::from_secs(3600))?;
        let negative_ttl = duration(
            "negative_cache",
            self.negative_cache,
            Duration::from_secs(600),
        )?;
        Ok(LdapSettings {
            url,
            base,
            bind_dn,
            bind_password,
            timeout,
            cache_ttl,
            negative_ttl,
        })
    }
}

/// Checks an `ldap://` or `ldaps://` URL with a host, an optional port and nothing after it
/// but `/`; returns the host.
fn check_url(url: &str) -> Result<&str, String> {
    let rest = url
        .strip_prefix("ldap://")
        .or_else(|| url.strip_prefix("ldaps://"))
        .ok_or_else(|| format!("{url:?} is not an ldap:// or ldaps:// URL"))?;
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !path.is_empty() && path != "/" {
        return Err(format!(
            "{url:?}: give the search base in ldap.base, not in the URL (only \
             ldap://host[:port] or ldaps://host[:port])"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{url:?}: {addr:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("{url:?}: expected :PORT after the address"))?,
            ),
        };
        (&authority[..addr.len() + 2], port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    if !host.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    {
        return Err(format!("{url:?}: {host:?} is not a host name or address"));
    }
    if let Some(p) = port
        && !matches!(p.parse::<u16>(), Ok(n) if n > 0)
    {
        return Err(format!("{url:?}: {p:?} is not a port number"));
    }
    Ok(host)
}

/// Is the host this machine (where a password may go without TLS)?
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads a secret from `env:NAME` or `file:/path` (its first line). Errors never carry the
/// secret.
fn read_secret(source: &str) -> Result<String, String> {
    if let Some(var) = source.strip_prefix("env:") {
        if var.is_empty() {
            return Err("\"env:\" names no variable".into());
        }
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(v),
            Ok(_) => Err(format!("environment variable {var} is empty")),
            Err(_) => Err(format!("environment variable {var} is not set")),
        }
    } else if let Some(path) = source.strip_prefix("file:") {
        // file:///abs/path (RFC 8089) and file:/abs/path alike.
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err("\"file:\" names no file".into());
        }
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?,
        );
        let line = text.lines().next().unwrap_or("");
        if line.is_empty() {
            return Err(format!("{path} is empty"));
        }
        Ok(line.to_string())
    } else {
        Err("use \"env:NAME\" or \"file:/path\" (never the password itself)".into())
    }
}

/// Why a look-up failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LdapError {
    /// The server could not be reached, or the connection broke.
    #[error("cannot connect to LDAP server {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The server refused the simple bind.
    #[error("LDAP server {url} refused the bind as {dn}: {reason}")]
    BindRefused {
        url: String,
        dn: String,
        /// The LDAP result code.
        code: u32,
        reason: String,
    },
    /// The server answered the search with an error, or the search could not be made.
    #[error("LDAP search under {base} at {url} failed: {reason}")]
    Search {
        url: String,
        base: String,
        /// The LDAP result code; `None` when the request was refused before it was sent.
        code: Option<u32>,
        reason: String,
    },
    /// The whole look-up took longer than the timeout.
    #[error("LDAP look-up at {url} timed out after {} s", seconds(.after))]
    Timeout { url: String, after: Duration },
}

fn seconds(d: &Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.1}", d.as_secs_f64())
    }
}

impl LdapError {
    /// May the same look-up succeed later (defer the message), or does the configuration
    /// or the directory need fixing (a refused bind, a base that does not exist)?
    pub fn is_temporary(&self) -> bool {
        match self {
            LdapError::Connect { .. } | LdapError::Timeout { .. } => true,
            LdapError::BindRefused { code, .. } => TEMPORARY_CODES.contains(code),
            LdapError::Search { code, .. } => code.is_some_and(|c| TEMPORARY_CODES.contains(&c)),
        }
    }
}

/// What ldap3 said, without the Debug noise: the server's result or the transport's error.
fn describe(e: &ldap3::LdapError) -> (Option<u32>, String) {
    match e {
        ldap3::LdapError::LdapResult { result } => (Some(result.rc), describe_result(result)),
        other => (None, other.to_string()),
    }
}

fn describe_result(r: &ldap3::LdapResult) -> String {
    let mut s = format!("result code {}", r.rc);
    if let Some(name) = result_name(r.rc) {
        s.push_str(&format!(" ({name})"));
    }
    if !r.text.is_empty() {
        s.push_str(&format!(": {}", r.text));
    }
    s
}

fn result_name(rc: u32) -> Option<&'static str> {
    Some(match rc {
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        13 => "confidentialityRequired",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        _ => return None,
    })
}

/// A cached answer.
#[derive(Debug)]
struct Cached {
    until: Instant,
    certificates: Vec<Vec<u8>>,
}

/// The directory: look-ups and their cache. Share it (`Arc`) between tasks.
pub struct Directory {
    settings: LdapSettings,
    cache: Mutex<HashMap<String, Cached>>,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Directory {
    pub fn new(settings: LdapSettings) -> Directory {
        Directory {
            settings,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &LdapSettings {
        &self.settings
    }

    /// The certificates (DER) the directory holds for `address`, from the cache when an
    /// answer for it is fresh enough. No entry, or entries without certificates: an empty
    /// list (cached for `negative_ttl`). Errors are not cached.
    pub async fn lookup(&self, address: &str) -> Result<Vec<Vec<u8>>, LdapError> {
        let key = address.trim().to_lowercase();
        if key.is_empty() || key.len() > MAX_ADDRESS {
            return Ok(Vec::new());
        }
        if let Some(hit) = self.cached(&key) {
            tracing::debug!(address = %key, certificates = hit.len(), "LDAP answer from the cache");
            return Ok(hit);
        }
        let timeout = self.settings.timeout;
        let found = match tokio::time::timeout(timeout, self.search(&key)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(LdapError::Timeout {
                    url: self.settings.url.clone(),
                    after: timeout,
                });
            }
        };
        tracing::debug!(address = %key, certificates = found.len(), "LDAP look-up");
        let ttl = if found.is_empty() {
            self.settings.negative_ttl
        } else {
            self.settings.cache_ttl
        };
        self.remember(key, found.clone(), ttl);
        Ok(found)
    }

    fn cached(&self, key: &str) -> Option<Vec<Vec<u8>>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|c| c.until > Instant::now())
            .map(|c| c.certificates.clone())
    }

    fn remember(&self, key: String, certificates: Vec<Vec<u8>>, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let Some(until) = now.checked_add(ttl) else {
            return;
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED && !cache.contains_key(&key) {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= MAX_CACHED
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, c)| c.until)
                    .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(
            key,
            Cached {
                until,
                certificates,
            },
        );
    }

    /// Connect, bind, search, unbind: one look-up, without the timeout around it.
    async fn search(&self, address: &str) -> Result<Vec<Vec<u8>>, LdapError> {
        let s = &self.settings;
        let connect = |reason: String| LdapError::Connect {
            url: s.url.clone(),
            reason,
        };
        // No connect timeout of ldap3's own: the one around the whole look-up bounds it.
        let (conn, mut ldap) = LdapConnAsync::with_settings(LdapConnSettings::new(), &s.url)
            .await
            .map_err(|e| connect(describe(&e).1))?;
        // The connection's driver ends when `ldap` (and so its channel) is dropped.
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!("LDAP connection: {e}");
            }
        });
        if let (Some(dn), Some(password)) = (&s.bind_dn, &s.bind_password) {
            let refused = |code: u32, reason: String| LdapError::BindRefused {
                url: s.url.clone(),
                dn: dn.clone(),
                code,
                reason,
            };
            match ldap.simple_bind(dn, password).await {
                Ok(r) if r.rc == 0 => {}
                Ok(r) => return Err(refused(r.rc, describe_result(&r))),
                Err(e) => {
                    return Err(match describe(&e) {
                        (Some(code), reason) => refused(code, reason),
                        (None, reason) => connect(reason),
                    });
                }
            }
        }
        let filter = format!("(mail={})", ldap3::ldap_escape(address));
        let time_limit = i32::try_from(s.timeout.as_secs().max(1)).unwrap_or(i32::MAX);
        let options = SearchOptions::new()
            .sizelimit(MAX_ENTRIES)
            .timelimit(time_limit);
        let searched = ldap
            .with_search_options(options)
            .search(&s.base, Scope::Subtree, &filter, ATTRIBUTES.to_vec())
            .await;
        let failed = |code: Option<u32>, reason: String| LdapError::Search {
            url: s.url.clone(),
            base: s.base.clone(),
            code,
            reason,
        };
        let ldap3::SearchResult(entries, result) = match searched {
            Ok(r) => r,
            Err(e @ ldap3::LdapError::FilterParsing) => return Err(failed(None, e.to_string())),
            Err(e) => {
                return Err(match describe(&e) {
                    (Some(code), reason) => failed(Some(code), reason),
                    (None, reason) => connect(reason),
                });
            }
        };
        match result.rc {
            0 => {}
            // More entries than asked for: use those that came.
            4 => tracing::warn!(
                address,
                "LDAP: more than {MAX_ENTRIES} entries have this address; using the first"
            ),
            _ => return Err(failed(Some(result.rc), describe_result(&result))),
        }
        // Said goodbye on the side: the answer is in, and does not wait for it.
        tokio::spawn(async move {
            let _ = ldap.unbind().await;
        });
        let mut found = Vec::new();
        for entry in &entries {
            certificates_of_entry(&entry.0, &mut found);
        }
        Ok(found)
    }
}

/// Collects the certificates of one SearchResultEntry (`[APPLICATION 4] SEQUENCE { dn,
/// SEQUENCE OF SEQUENCE { type, SET OF value } }`) into `out`, skipping duplicates and
/// values that are not certificates. Walks the structure itself: ldap3's `SearchEntry`
/// panics on a malformed entry.
fn certificates_of_entry(entry: &StructureTag, out: &mut Vec<Vec<u8>>) {
    let PL::C(parts) = &entry.payload else {
        return;
    };
    let Some(StructureTag {
        payload: PL::C(attributes),
        ..
    }) = parts.get(1)
    else {
        return;
    };
    for attribute in attributes {
        let PL::C(pair) = &attribute.payload else {
            continue;
        };
        let (Some(name), Some(values)) = (pair.first(), pair.get(1)) else {
            continue;
        };
        let (PL::P(name), PL::C(values)) = (&name.payload, &values.payload) else {
            continue;
        };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let base_name = name.split(';').next().unwrap_or("");
        for value in values {
            let PL::P(value) = &value.payload else {
                continue;
            };
            let certs = match base_name {
                "usercertificate" => is_certificate(value).then(|| vec![value.clone()]),
                "usersmimecertificate" => smime_certificate_value(value),
                _ => None,
            };
            match certs {
                Some(certs) => {
                    for c in certs {
                        if out.len() < MAX_CERTIFICATES && !out.contains(&c) {
                            out.push(c);
                        }
                    }
                }
                None => tracing::debug!("LDAP: a {name} value is not a certificate; skipped"),
            }
        }
    }
}

/// A `userSMIMECertificate` value: a PKCS#7 SignedData (RFC 2798), or, as some directories
/// hold it, a bare certificate.
fn smime_certificate_value(value: &[u8]) -> Option<Vec<Vec<u8>>> {
    if is_certificate(value) {
        return Some(vec![value.to_vec()]);
    }
    certificates_from_pkcs7(value).ok()
}

/// Does this look like an X.509 certificate: a SEQUENCE of a SEQUENCE (the to-be-signed
/// part), the signature algorithm and the signature?
fn is_certificate(der: &[u8]) -> bool {
    let Ok(cert) = ber::read_all(der) else {
        return false;
    };
    if !cert.is(tag::SEQUENCE) || !cert.constructed {
        return false;
    }
    match cert.items() {
        Ok(items) => {
            items.len() == 3
                && items[0].is(tag::SEQUENCE)
                && items[1].is(tag::SEQUENCE)
                && items[2].is(tag::BIT_STRING)
        }
        Err(_) => false,
    }
}

/// id-signedData, 1.2.840.113549.1.7.2, as OID contents.
const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];

/// The certificates (DER) of a PKCS#7/CMS SignedData in a ContentInfo (a `.p7c`, a
/// `userSMIMECertificate`): `ContentInfo { id-signedData, [0] SignedData { version,
/// digestAlgorithms, encapContentInfo, [0] IMPLICIT certificates, ... } }`. Other kinds of
/// entry in the certificate set (attribute certificates) are skipped; BER is re-encoded as
/// DER.
pub fn certificates_from_pkcs7(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let bad = |what: &str| format!("not a PKCS#7 SignedData: {what}");
    let (info, _) = ber::read(data).map_err(|e| bad(&e.to_string()))?;
    if !info.is(tag::SEQUENCE) {
        return Err(bad("expected a ContentInfo SEQUENCE"));
    }
    let mut parts = info.children();
    let oid = parts
        .next()
        .ok_or_else(|| bad("empty ContentInfo"))?
        .and_then(|t| t.oid())
        .map_err(|e| bad(&e.to_string()))?;
    if oid != SIGNED_DATA {
        return Err(bad("the content type is not signed-data"));
    }
    let content = parts
        .next()
        .ok_or_else(|| bad("no content"))?
        .map_err(|e| bad(&e.to_string()))?;
    if !content.is_context(0) {
        return Err(bad("expected [0] content"));
    }
    let signed = content.inner().map_err(|e| bad(&e.to_string()))?;
    if !signed.is(tag::SEQUENCE) {
        return Err(bad("expected a SignedData SEQUENCE"));
    }
    let items = signed.items().map_err(|e| bad(&e.to_string()))?;
    let mut found = Vec::new();
    // version, digestAlgorithms, encapContentInfo, then the optional [0] certificates.
    let Some(set) = items.get(3).filter(|t| t.is_context(0) && t.constructed) else {
        return Ok(found);
    };
    for choice in set.children() {
        let choice = choice.map_err(|e| bad(&e.to_string()))?;
        if !choice.is(tag::SEQUENCE) {
            continue;
        }
        let der = ber::to_der(choice.raw).map_err(|e| bad(&e.to_string()))?;
        if is_certificate(&der) && !found.contains(&der) {
            found.push(der);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> LdapRaw {
        let mut r = LdapRaw::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "url" => r.url = v,
                "base" => r.base = v,
                "bind_dn" => r.bind_dn = v,
                "bind_password" => r.bind_password = v,
                "timeout" => r.timeout = v,
                "cache" => r.cache = v,
                "negative_cache" => r.negative_cache = v,
                _ => panic!("{k}"),
            }
        }
        r
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        raw(pairs).check().unwrap_err()
    }

    const OK: [(&str, &str); 2] = [
        ("url", "ldap://dir.example.org"),
        ("base", "dc=example,dc=org"),
    ];

    #[test]
    fn settings_defaults() {
        let s = raw(&OK).check().unwrap();
        assert_eq!(s.url, "ldap://dir.example.org");
        assert_eq!(s.base, "dc=example,dc=org");
        assert_eq!(s.bind_dn, None);
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert_eq!(s.cache_ttl, Duration::from_secs(3600));
        assert_eq!(s.negative_ttl, Duration::from_secs(600));
        let s = raw(&[
            ("url", "ldaps://[::1]:6360/"),
            ("base", "ou=people,dc=x"),
            ("timeout", "2s"),
            ("cache", "5m"),
            ("negative_cache", "0"),
        ])
        .check()
        .unwrap();
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert_eq!(s.cache_ttl, Duration::from_secs(300));
        assert_eq!(s.negative_ttl, Duration::ZERO);
    }

    #[test]
    fn settings_errors_name_the_key() {
        assert!(err(&[("base", "dc=x")]).starts_with("ldap.url: missing"));
        assert!(err(&[("url", "ldap://h")]).starts_with("ldap.base: missing"));
        for bad in [
            "http://h",
            "h:389",
            "ldapi:///run/slapd.sock",
            "ldap://",
            "ldap://:389",
            "ldap://h:0",
            "ldap://h:99999",
            "ldap://h:x",
            "ldap://user@h",
            "ldap://[nothost]",
        ] {
            let e = err(&[("url", bad), ("base", "dc=x")]);
            assert!(e.starts_with("ldap.url: "), "{bad}: {e}");
        }
        assert!(
            err(&[("url", "http://h"), ("base", "dc=x")])
                .contains("is not an ldap:// or ldaps:// URL")
        );
        assert!(err(&[("url", "ldap://h/dc=x?mail"), ("base", "dc=x")]).contains("ldap.base"));
        assert!(err(&[("url", "ldap://h"), ("base", "people")]).starts_with("ldap.base: "));
        assert!(err(&[OK[0], OK[1], ("timeout", "5 parsecs")]).starts_with("ldap.timeout: "));
        assert!(err(&[OK[0], OK[1], ("timeout", "0s")]).starts_with("ldap.timeout: "));
        assert!(err(&[OK[0], OK[1], ("cache", "soon")]).starts_with("ldap.cache: "));
        assert!(
            err(&[OK[0], OK[1], ("negative_cache", "-1")]).starts_with("ldap.negative_cache: ")
        );
        assert!(err(&[OK[0], OK[1], ("bind_dn", "cn=gw")]).contains("go together"));
        assert!(err(&[OK[0], OK[1], ("bind_password", "env:X")]).contains("go together"));
    }

    #[test]
    fn bind_password_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\nignored\n").unwrap();
        let source = format!("file:{}", file.display());
        let local = [("url", "ldap://127.0.0.1:3389"), ("base", "dc=x")];
        let s = raw(&[
            local[0],
            local[1],
            ("bind_dn", "cn=gw,dc=x"),
            ("bind_password", &source),
        ])
        .check()
        .unwrap();
        assert_eq!(s.bind_dn.as_deref(), Some("cn=gw,dc=x"));
        assert_eq!(s.bind_password.as_deref(), Some("s3cret"));
        assert!(!format!("{s:?}").contains("s3cret"));

        // The password itself in the file: refused, and not repeated.
        let e = err(&[
            ("url", "ldaps://dir"),
            OK[1],
            ("bind_dn", "cn=gw"),
            ("bind_password", "hunter2"),
        ]);
        assert!(e.starts_with("ldap.bind_password: use \"env:NAME\""), "{e}");
        assert!(!e.contains("hunter2"));
        let r = raw(&[
            OK[0],
            OK[1],
            ("bind_dn", "cn=gw"),
            ("bind_password", "hunter2"),
        ]);
        assert!(!format!("{r:?}").contains("hunter2"));

        let e = err(&[
            ("url", "ldaps://dir"),
            OK[1],
            ("bind_dn", "cn=gw"),
            ("bind_password", "env:SMIMEGW_TEST_UNSET_VARIABLE"),
        ]);
        assert_eq!(
            e,
            "ldap.bind_password: environment variable SMIMEGW_TEST_UNSET_VARIABLE is not set"
        );
        let e = err(&[
            ("url", "ldaps://dir"),
            OK[1],
            ("bind_dn", "cn=gw"),
            ("bind_password", "file:/nonexistent/pw"),
        ]);
        assert!(
            e.starts_with("ldap.bind_password: cannot read /nonexistent/pw"),
            "{e}"
        );

        // No password in clear to another machine.
        let e = err(&[
            OK[0],
            OK[1],
            ("bind_dn", "cn=gw"),
            ("bind_password", &source),
        ]);
        assert!(e.contains("only over ldaps://"), "{e}");
        for host in [
            "ldap://localhost",
            "ldap://[::1]:389",
            "ldaps://dir.example.org",
        ] {
            raw(&[
                ("url", host),
                OK[1],
                ("bind_dn", "cn=gw"),
                ("bind_password", &source),
            ])
            .check()
            .unwrap();
        }
    }

    #[test]
    fn addresses_are_escaped_in_the_filter() {
        // What `search` builds: nothing in the address can end or widen the filter.
        let f = |a: &str| format!("(mail={})", ldap3::ldap_escape(a));
        assert_eq!(f("carol@example.org"), "(mail=carol@example.org)");
        assert_eq!(f("x)(mail=*"), "(mail=x\\29\\28mail=\\2a)");
        assert_eq!(f("*"), "(mail=\\2a)");
        assert_eq!(f("a\\b\0"), "(mail=a\\5cb\\00)");
        for a in ["x)(mail=*", "*)(|(uid=*", "\\2a", "a\0b"] {
            let filter = f(a);
            assert!(ldap3::parse_filter(&filter).is_ok(), "{filter}");
            let inner = &filter[6..filter.len() - 1];
            assert!(!inner.contains(['(', ')', '*', '\0']), "{filter}");
        }
    }

    // A self-signed P-256 certificate (openssl req -x509), and it in a degenerate PKCS#7
    // (openssl crl2pkcs7 -nocrl), both DER.
    fn cert() -> Vec<u8> {
        pem_body(CERT_PEM)
    }

    fn pem_body(pem: &str) -> Vec<u8> {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        crate::smime::mime::base64_decode(b64.as_bytes()).unwrap()
    }

    const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBkjCCATigAwIBAgIUf89zUA2p0bc5J912MxXB6/IHL4MwCgYIKoZIzj0EAwIw
DzENMAsGA1UEAwwEZGF2ZTAgFw0yNjExMjUwMDA5MzdaGA8yMTI2MTEwMTAwMDkz
N1owDzENMAsGA1UEAwwEZGF2ZTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABKQa
JjDMcsgqxyDeSx8wEWce5giBT3cRovuiHjAAqMTPG6fYliThpBFb91pAfxSrV2tZ
0ClwiZ3GxWPw6sCs/02jcDBuMB0GA1UdDgQWBBRaTXcaLPeOqedRl9XabwG5Qa5I
sDAfBgNVHSMEGDAWgBRaTXcaLPeOqedRl9XabwG5Qa5IsDAPBgNVHRMBAf8EBTAD
AQH/MBsGA1UdEQQUMBKBEGRhdmVAZXhhbXBsZS5vcmcwCgYIKoZIzj0EAwIDSAAw
RQIhAIbZx4hNdBp0ddyOdHroiLSIFp3ZIpLlPG12pLxuLeG/AiBKihU7dzX0rW0n
6AFLsxS4zh8t5+gHaIxHk/syzpKnlA==
-----END CERTIFICATE-----";

    const P7_PEM: &str = "-----BEGIN PKCS7-----
MIIBwQYJKoZIhvcNAQcCoIIBsjCCAa4CAQExADALBgkqhkiG9w0BBwGgggGWMIIB
kjCCATigAwIBAgIUf89zUA2p0bc5J912MxXB6/IHL4MwCgYIKoZIzj0EAwIwDzEN
MAsGA1UEAwwEZGF2ZTAgFw0yNjExMjUwMDA5MzdaGA8yMTI2MTEwMTAwMDkzN1ow
DzENMAsGA1UEAwwEZGF2ZTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABKQaJjDM
csgqxyDeSx8wEWce5giBT3cRovuiHjAAqMTPG6fYliThpBFb91pAfxSrV2tZ0Clw
iZ3GxWPw6sCs/02jcDBuMB0GA1UdDgQWBBRaTXcaLPeOqedRl9XabwG5Qa5IsDAf
BgNVHSMEGDAWgBRaTXcaLPeOqedRl9XabwG5Qa5IsDAPBgNVHRMBAf8EBTADAQH/
MBsGA1UdEQQUMBKBEGRhdmVAZXhhbXBsZS5vcmcwCgYIKoZIzj0EAwIDSAAwRQIh
AIbZx4hNdBp0ddyOdHroiLSIFp3ZIpLlPG12pLxuLeG/AiBKihU7dzX0rW0n6AFL
sxS4zh8t5+gHaIxHk/syzpKnlDEA
-----END PKCS7-----";

    #[test]
    fn pkcs7_certificates() {
        let cert = cert();
        assert!(is_certificate(&cert));
        let p7 = pem_body(P7_PEM);
        assert_eq!(certificates_from_pkcs7(&p7).unwrap(), vec![cert.clone()]);
        assert_eq!(smime_certificate_value(&p7), Some(vec![cert.clone()]));
        // A bare certificate in userSMIMECertificate is taken as it is.
        assert_eq!(smime_certificate_value(&cert), Some(vec![cert.clone()]));

        // The same in BER with indefinite lengths (as some clients write it): DER out.
        let ber = indefinite(&p7);
        assert_ne!(ber, p7);
        assert_eq!(certificates_from_pkcs7(&ber).unwrap(), vec![cert.clone()]);

        // Garbage, truncation and other content types: errors, no panic.
        assert!(certificates_from_pkcs7(b"").is_err());
        assert!(certificates_from_pkcs7(b"\x30\x03\x02\x01\x01").is_err());
        for n in 0..p7.len() {
            let _ = certificates_from_pkcs7(&p7[..n]);
        }
        let mut data = p7.clone();
        data[14] = 0x01; // id-data instead of id-signedData
        assert!(
            certificates_from_pkcs7(&data)
                .unwrap_err()
                .contains("signed-data")
        );
        assert!(!is_certificate(b"\x30\x00"));
        assert!(!is_certificate(&p7));
    }

    /// Rewrites every constructed element's definite length as indefinite.
    fn indefinite(der: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = der;
        while !rest.is_empty() {
            let (tlv, after) = ber::read(rest).unwrap();
            if tlv.constructed {
                out.push(tlv.raw[0]);
                out.push(0x80);
                out.extend(indefinite(tlv.body));
                out.extend([0, 0]);
            } else {
                out.extend_from_slice(tlv.raw);
            }
            rest = after;
        }
        out
    }

    fn entry(attributes: Vec<(&str, Vec<Vec<u8>>)>) -> StructureTag {
        use ldap3::asn1::TagClass;
        let prim = |id, v: Vec<u8>| StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::P(v),
        };
        let cons = |id, v: Vec<StructureTag>| StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::C(v),
        };
        let attrs = attributes
            .into_iter()
            .map(|(name, values)| {
                cons(
                    16,
                    vec![
                        prim(4, name.as_bytes().to_vec()),
                        cons(17, values.into_iter().map(|v| prim(4, v)).collect()),
                    ],
                )
            })
            .collect();
        StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![prim(4, b"uid=x,dc=x".to_vec()), cons(16, attrs)]),
        }
    }

    #[test]
    fn entry_certificates() {
        let cert = cert();
        let p7 = pem_body(P7_PEM);
        let mut out = Vec::new();
        certificates_of_entry(
            &entry(vec![
                ("mail", vec![b"x@example.org".to_vec()]),
                (
                    "userCertificate;binary",
                    vec![cert.clone(), b"junk".to_vec()],
                ),
                ("USERSMIMECERTIFICATE", vec![p7.clone(), b"\xff".to_vec()]),
            ]),
            &mut out,
        );
        // The same certificate twice: once.
        assert_eq!(out, vec![cert.clone()]);

        // Malformed entries: nothing, no panic.
        let mut out = Vec::new();
        use ldap3::asn1::TagClass;
        for broken in [
            StructureTag {
                class: TagClass::Application,
                id: 4,
                payload: PL::P(vec![1, 2]),
            },
            StructureTag {
                class: TagClass::Application,
                id: 4,
                payload: PL::C(vec![]),
            },
        ] {
            certificates_of_entry(&broken, &mut out);
        }
        assert!(out.is_empty());
    }

    #[test]
    fn errors_say_what_and_whether_temporary() {
        let e = LdapError::Timeout {
            url: "ldap://dir".into(),
            after: Duration::from_secs(5),
        };
        assert_eq!(
            e.to_string(),
            "LDAP look-up at ldap://dir timed out after 5 s"
        );
        assert!(e.is_temporary());
        let e = LdapError::Timeout {
            url: "ldap://dir".into(),
            after: Duration::from_millis(1500),
        };
        assert!(e.to_string().ends_with("after 1.5 s"));
        let bind = |code| LdapError::BindRefused {
            url: "ldaps://dir".into(),
            dn: "cn=gw".into(),
            code,
            reason: "result code 49 (invalidCredentials)".into(),
        };
        assert!(!bind(49).is_temporary());
        assert!(bind(51).is_temporary());
        assert_eq!(
            bind(49).to_string(),
            "LDAP server ldaps://dir refused the bind as cn=gw: result code 49 (invalidCredentials)"
        );
        let search = |code| LdapError::Search {
            url: "ldap://dir".into(),
            base: "dc=x".into(),
            code,
            reason: String::new(),
        };
        assert!(!search(Some(32)).is_temporary());
        assert!(search(Some(52)).is_temporary());
        assert!(!search(None).is_temporary());
    }

    #[tokio::test]
    async fn cache_keeps_hits_and_misses_for_their_time() {
        let settings = raw(&[("url", "ldap://127.0.0.1:1"), ("base", "dc=x")])
            .check()
            .unwrap();
        let dir = Directory::new(settings);
        dir.remember("a@x".into(), vec![vec![1]], Duration::from_secs(60));
        dir.remember("b@x".into(), vec![], Duration::from_secs(60));
        dir.remember("c@x".into(), vec![vec![2]], Duration::ZERO);
        assert_eq!(dir.lookup(" A@X ").await.unwrap(), vec![vec![1]]);
        assert_eq!(dir.lookup("b@x").await.unwrap(), Vec::<Vec<u8>>::new());
        assert!(dir.cached("c@x").is_none());
        // Empty or absurd addresses are not looked up.
        assert!(dir.lookup("").await.unwrap().is_empty());
        assert!(dir.lookup(&"a".repeat(400)).await.unwrap().is_empty());
        // Port 1 on loopback: refused at once, a temporary error, not cached.
        let e = dir.lookup("d@x").await.unwrap_err();
        assert!(e.is_temporary(), "{e}");
        assert!(
            e.to_string()
                .starts_with("cannot connect to LDAP server ldap://127.0.0.1:1")
        );
        assert!(dir.cached("d@x").is_none());
    }
}
