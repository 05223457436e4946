//! Certificate revocation by CRLs (RFC 5280 §5). CRLs come from an administrator's upload or
//! from the HTTP distribution points the held certificates name; each is checked against its
//! issuer's certificate in the store before it is kept (one CRL per issuer, the newest).
//! [`Revocation`] answers "is this certificate revoked?" for the relay from a cache of them.
//!
//! When no current CRL covers a certificate its status is unknown; whether that passes
//! (`[revocation] unknown = "allow"`, the default) or fails (`"refuse"`) is the
//! administrator's explicit choice. A revoked certificate is never used: not to encrypt to,
//! not as a trusted signer.
//!
//! Direct, full CRLs only: delta CRLs and indirect CRLs are refused with that reason.
//!
//! Downloads are a way in for whoever can put a certificate in front of the gateway (a
//! signed message harvests its signer's), so they are bounded: only the distribution points
//! of certificates that chain to a trusted CA in the store are fetched ([`wanted_urls`]),
//! never from loopback, link-local, private, multicast or unspecified addresses unless the
//! administrator allows the host or network (`[revocation] allow_hosts`, `allow_networks`),
//! at most [`FETCH_PARALLEL`] at once and all within [`REFRESH_DEADLINE`].

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use der::Decode;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::CrlDistributionPoints;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};

use crate::config::Network;
use crate::smime::asn1::day;
use crate::smime::oid;
use crate::store::{CertInfo, Kind, Store, StoredCrl};

/// The largest CRL accepted (upload or download).
pub const MAX_CRL: usize = 16 << 20;

/// Whether a certificate whose revocation status is unknown may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownStatus {
    /// Fail open: use it (and say so in the log).
    #[default]
    Allow,
    /// Fail closed: treat it as unusable.
    Refuse,
}

impl UnknownStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownStatus::Allow => "allow",
            UnknownStatus::Refuse => "refuse",
        }
    }
}

/// `[revocation]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationSettings {
    pub unknown: UnknownStatus,
    /// Fetch CRLs from the certificates' HTTP distribution points on schedule (an
    /// administrator's "fetch now" works either way).
    pub fetch: bool,
    /// How often they are fetched again (sooner when a held CRL's nextUpdate passes).
    pub refresh: Duration,
    /// Per download.
    pub timeout: Duration,
    /// Hosts (as the URL names them) fetched from whatever address they have
    /// (`allow_hosts`).
    pub allow_hosts: Vec<String>,
    /// Addresses fetched from even when loopback, private, link-local... (`allow_networks`).
    pub allow_networks: Vec<Network>,
}

impl Default for RevocationSettings {
    fn default() -> Self {
        RevocationSettings {
            unknown: UnknownStatus::Allow,
            fetch: true,
            refresh: Duration::from_secs(6 * 3600),
            timeout: Duration::from_secs(15),
            allow_hosts: Vec::new(),
            allow_networks: Vec::new(),
        }
    }
}

/// Downloads running at once in a refresh.
pub const FETCH_PARALLEL: usize = 4;
/// A whole refresh ends by then (or by the per-download timeout, when that is longer):
/// distribution points not fetched by then are noted as failed.
pub const REFRESH_DEADLINE: Duration = Duration::from_secs(60);

/// Where CRLs may be downloaded from beyond public addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchAllowance {
    /// Host names or address literals, lower case, without brackets.
    pub hosts: Vec<String>,
    pub networks: Vec<Network>,
}

impl FetchAllowance {
    pub fn of(settings: &RevocationSettings) -> FetchAllowance {
        FetchAllowance {
            hosts: settings
                .allow_hosts
                .iter()
                .map(|h| {
                    h.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_ascii_lowercase()
                })
                .collect(),
            networks: settings.allow_networks.clone(),
        }
    }

    /// Why a connection to `ip` for `host` is refused, if it is.
    fn refuses(&self, host: &str, ip: IpAddr) -> Option<String> {
        let kind = special_address(ip)?;
        if self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
            || self.networks.iter().any(|n| n.contains(ip))
        {
            return None;
        }
        Some(format!(
            "{host} is {ip}, {kind}: not fetched from (allow it with [revocation] \
             allow_hosts = [\"{host}\"] or allow_networks)"
        ))
    }
}

/// The kind of address a CRL is never fetched from unless allowed: loopback, private
/// (RFC 1918, shared 100.64/10, IPv6 unique local), link-local, multicast, broadcast,
/// reserved, unspecified. IPv4 inside IPv6 (mapped, NAT64) is judged as IPv4.
pub fn special_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => {
            let [b0, b1, ..] = a.octets();
            if a.is_loopback() {
                Some("a loopback address")
            } else if a.is_unspecified() || b0 == 0 {
                Some("an unspecified address")
            } else if a.is_private() || (b0 == 100 && (64..128).contains(&b1)) {
                Some("a private address")
            } else if a.is_link_local() {
                Some("a link-local address")
            } else if a.is_multicast() {
                Some("a multicast address")
            } else if a.is_broadcast() || b0 >= 240 {
                Some("a reserved address")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return special_address(IpAddr::V4(v4));
            }
            let seg = a.segments();
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let v4 = std::net::Ipv4Addr::from(u128::from(a) as u32);
                return special_address(IpAddr::V4(v4));
            }
            if a.is_loopback() {
                Some("a loopback address")
            } else if a.is_unspecified() {
                Some("an unspecified address")
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some("a private address")
            } else if seg[0] & 0xffc0 == 0xfe80 || seg[0] & 0xffc0 == 0xfec0 {
                Some("a link-local address")
            } else if a.is_multicast() {
                Some("a multicast address")
            } else {
                None
            }
        }
    }
}

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// Seconds since the epoch.
    pub at: u64,
    pub reason: Option<&'static str>,
}

/// A parsed CRL.
#[derive(Debug, Clone)]
pub struct Crl {
    /// The issuer's name, as [`CertInfo::issuer`] prints names.
    pub issuer: String,
    pub this_update: u64,
    pub next_update: Option<u64>,
    /// cRLNumber, hex.
    pub number: Option<String>,
    /// By serial number (hex, as [`CertInfo::serial`]).
    pub revoked: HashMap<String, Revoked>,
    /// SHA-256 of the DER, hex.
    pub fingerprint: String,
    pub der: Vec<u8>,
    /// What the signature covers (the tbsCertList as received), its algorithm and value.
    tbs: Vec<u8>,
    algorithm: Vec<u8>,
    signature: Vec<u8>,
}

/// id-ce-deltaCRLIndicator and id-ce-issuingDistributionPoint.
const DELTA_CRL_INDICATOR: &str = "2.5.29.27";
const ISSUING_DISTRIBUTION_POINT: &str = "2.5.29.28";
const CRL_NUMBER: &str = "2.5.29.20";
const CRL_REASON: &str = "2.5.29.21";
const CERTIFICATE_ISSUER: &str = "2.5.29.29";

impl Crl {
    /// Reads a CRL, DER or PEM (`-----BEGIN X509 CRL-----`). The reason it cannot be used,
    /// for an administrator, when it is not one.
    pub fn parse(bytes: &[u8]) -> Result<Crl, String> {
        if bytes.is_empty() {
            return Err("the file is empty".into());
        }
        if bytes.len() > MAX_CRL {
            return Err(format!(
                "{} bytes is too large for a CRL (at most {MAX_CRL})",
                bytes.len()
            ));
        }
        let owned;
        let der = if bytes.starts_with(b"-----BEGIN") || bytes.trim_ascii_start().starts_with(b"-")
        {
            let (label, d) = der::pem::decode_vec(bytes.trim_ascii())
                .map_err(|_| "a damaged PEM block".to_string())?;
            if label != "X509 CRL" {
                return Err(format!(
                    "a PEM {label}, not a CRL (-----BEGIN X509 CRL-----)"
                ));
            }
            owned = d;
            &owned[..]
        } else {
            bytes
        };
        let crl =
            CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der).map_err(|e| {
                if CertInfo::parse(der).is_some() {
                    "a certificate, not a CRL".to_string()
                } else {
                    format!("not a CRL (neither PEM nor DER): {e}")
                }
            })?;
        // The signed part exactly as received.
        let outer = hsm::ber::read_all(der).map_err(|e| format!("not DER: {e}"))?;
        let tbs = outer
            .children()
            .next()
            .and_then(Result::ok)
            .ok_or("no tbsCertList")?
            .raw
            .to_vec();
        let t = &crl.tbs_cert_list;
        let mut number = None;
        for ext in t.crl_extensions.iter().flatten() {
            match ext.extn_id.to_string().as_str() {
                DELTA_CRL_INDICATOR => {
                    return Err("a delta CRL; only full CRLs are supported".into());
                }
                ISSUING_DISTRIBUTION_POINT if ext.critical => {
                    // A partitioned CRL covers only some certificates: taking it as the whole
                    // list would call the others good.
                    return Err(
                        "a CRL limited to part of its issuer's certificates (issuing \
                         distribution point); only full CRLs are supported"
                            .into(),
                    );
                }
                CRL_NUMBER => {
                    if let Ok(n) = der::asn1::Int::from_der(ext.extn_value.as_bytes()) {
                        number = Some(hsm::hex(n.as_bytes()));
                    }
                }
                other if ext.critical => {
                    return Err(format!("an unknown critical CRL extension {other}"));
                }
                _ => {}
            }
        }
        let mut revoked = HashMap::new();
        for r in t.revoked_certificates.iter().flatten() {
            let mut reason = None;
            for ext in r.crl_entry_extensions.iter().flatten() {
                match ext.extn_id.to_string().as_str() {
                    CRL_REASON => {
                        if let Ok(e) = der::asn1::Any::from_der(ext.extn_value.as_bytes())
                            && let [code] = e.value()
                        {
                            reason = Some(reason_name(*code));
                        }
                    }
                    CERTIFICATE_ISSUER => {
                        return Err("an indirect CRL; only direct CRLs are supported".into());
                    }
                    other if ext.critical => {
                        return Err(format!("an unknown critical entry extension {other}"));
                    }
                    _ => {}
                }
            }
            revoked.insert(
                hsm::hex(r.serial_number.as_bytes()),
                Revoked {
                    at: r.revocation_date.to_unix_duration().as_secs(),
                    reason,
                },
            );
        }
        let algorithm = crl.signature_algorithm.oid.as_bytes().to_vec();
        Ok(Crl {
            issuer: t.issuer.to_string(),
            this_update: t.this_update.to_unix_duration().as_secs(),
            next_update: t.next_update.map(|n| n.to_unix_duration().as_secs()),
            number,
            revoked,
            fingerprint: hsm::hex(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref(),
            ),
            der: der.to_vec(),
            tbs,
            algorithm,
            signature: crl.signature.raw_bytes().to_vec(),
        })
    }

    /// Checks the signature with `issuer`'s key; `issuer` must be the CA that names itself as
    /// the CRL's issuer and may sign CRLs.
    pub fn verify(&self, issuer: &CertInfo) -> Result<(), String> {
        if issuer.subject != self.issuer {
            return Err(format!("not issued by {}", issuer.subject));
        }
        if !issuer.is_ca {
            return Err(format!("{} is not a CA certificate", issuer.subject));
        }
        let cert = x509_cert::Certificate::from_der(&issuer.der).map_err(|e| e.to_string())?;
        let tbs = cert.tbs_certificate();
        if let Ok(Some((_, ku))) = tbs.get_extension::<x509_cert::ext::pkix::KeyUsage>()
            && !ku.0.contains(x509_cert::ext::pkix::KeyUsages::CRLSign)
        {
            return Err(format!(
                "{}'s key usage does not allow signing CRLs",
                issuer.subject
            ));
        }
        verify_signed(&self.tbs, &self.algorithm, &self.signature, issuer)
    }

    /// Still current at `now` (no nextUpdate: current until replaced).
    pub fn current(&self, now: u64) -> bool {
        self.next_update.is_none_or(|n| now < n)
    }
}

/// Checks a signature (`signature` over `signed`, algorithm OID contents `algorithm`) with
/// `issuer`'s public key: SHA-2 with RSA PKCS#1 v1.5 or ECDSA.
fn verify_signed(
    signed: &[u8],
    algorithm: &[u8],
    signature: &[u8],
    issuer: &CertInfo,
) -> Result<(), String> {
    use der::Encode;
    let cert = x509_cert::Certificate::from_der(&issuer.der).map_err(|e| e.to_string())?;
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| e.to_string())?;
    let alg = match algorithm {
        a if a == oid::SHA256_WITH_RSA => hsm::SignAlgorithm::RsaPkcs1(hsm::Hash::Sha256),
        a if a == oid::SHA384_WITH_RSA => hsm::SignAlgorithm::RsaPkcs1(hsm::Hash::Sha384),
        a if a == oid::SHA512_WITH_RSA => hsm::SignAlgorithm::RsaPkcs1(hsm::Hash::Sha512),
        a if a == oid::ECDSA_SHA256 => hsm::SignAlgorithm::Ecdsa(hsm::Hash::Sha256),
        a if a == oid::ECDSA_SHA384 => hsm::SignAlgorithm::Ecdsa(hsm::Hash::Sha384),
        a if a == oid::ECDSA_SHA512 => hsm::SignAlgorithm::Ecdsa(hsm::Hash::Sha512),
        a => {
            return Err(format!(
                "signed with {}, which is not accepted (SHA-256 or better with RSA or ECDSA)",
                oid::dotted(a)
            ));
        }
    };
    let digest = alg.hash().digest(signed);
    hsm::public::verify_digest(&spki, alg, &digest, signature).map_err(|_| {
        format!(
            "the signature does not verify with {}'s key",
            issuer.subject
        )
    })
}

/// Whether `cert` was issued by the CA `ca`: names match, `ca` is a CA whose key usage (if
/// any) allows signing certificates, and `cert`'s signature verifies with its key.
pub fn issued_by(cert: &CertInfo, ca: &CertInfo) -> bool {
    if cert.issuer != ca.subject || !ca.is_ca {
        return false;
    }
    let Ok(ca_cert) = x509_cert::Certificate::from_der(&ca.der) else {
        return false;
    };
    if let Ok(Some((_, ku))) = ca_cert
        .tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::KeyUsage>()
        && !ku.0.contains(x509_cert::ext::pkix::KeyUsages::KeyCertSign)
    {
        return false;
    }
    let Ok(c) = x509_cert::Certificate::from_der(&cert.der) else {
        return false;
    };
    let Some(tbs) = hsm::ber::read_all(&cert.der)
        .ok()
        .and_then(|outer| outer.children().next().and_then(Result::ok))
        .map(|t| t.raw.to_vec())
    else {
        return false;
    };
    verify_signed(
        &tbs,
        c.signature_algorithm().oid.as_bytes(),
        c.signature().raw_bytes(),
        ca,
    )
    .is_ok()
}

fn reason_name(code: u8) -> &'static str {
    match code {
        1 => "key compromise",
        2 => "CA compromise",
        3 => "affiliation changed",
        4 => "superseded",
        5 => "cessation of operation",
        6 => "certificate hold",
        9 => "privilege withdrawn",
        10 => "AA compromise",
        _ => "unspecified",
    }
}

/// The HTTP URLs of a certificate's CRL distribution points (others, LDAP for one, are left
/// out: they are not fetched).
pub fn distribution_points(cert_der: &[u8]) -> Vec<String> {
    let Ok(c) = x509_cert::Certificate::from_der(cert_der) else {
        return Vec::new();
    };
    let Ok(Some((_, dps))) = c.tbs_certificate().get_extension::<CrlDistributionPoints>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for dp in dps.0 {
        if let Some(DistributionPointName::FullName(names)) = dp.distribution_point {
            for n in names {
                if let GeneralName::UniformResourceIdentifier(u) = n {
                    let u = u.to_string();
                    if u.to_ascii_lowercase().starts_with("http://") && !out.contains(&u) {
                        out.push(u);
                    }
                }
            }
        }
    }
    out
}

/// A certificate's revocation status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// A current CRL from its issuer does not list it.
    Good,
    Revoked(Revoked),
    /// No current CRL: why.
    Unknown(String),
}

/// The status of `cert` by `crl` (its issuer's, if held) at `now`.
pub fn status(cert: &CertInfo, crl: Option<&Crl>, now: u64) -> Status {
    let Some(crl) = crl else {
        return Status::Unknown(format!("no CRL from {}", cert.issuer));
    };
    if let Some(r) = crl.revoked.get(&cert.serial) {
        // A CRL that lists it settles it, current or not.
        return Status::Revoked(r.clone());
    }
    if !crl.current(now) {
        return Status::Unknown(format!(
            "the CRL from {} is out of date (next update was due {})",
            cert.issuer,
            day(crl.next_update.unwrap_or(0))
        ));
    }
    Status::Good
}

impl Status {
    /// Whether the certificate may be used under `policy`; the reason when not.
    pub fn verdict(&self, policy: UnknownStatus) -> Result<(), String> {
        match self {
            Status::Good => Ok(()),
            Status::Revoked(r) => Err(format!(
                "the certificate was revoked on {}{}",
                day(r.at),
                r.reason.map(|r| format!(" ({r})")).unwrap_or_default()
            )),
            Status::Unknown(why) => match policy {
                UnknownStatus::Allow => Ok(()),
                UnknownStatus::Refuse => Err(format!("revocation status unknown: {why}")),
            },
        }
    }
}

/// The CRLs in the store, cached for the relay: reloaded when told (after an upload or a
/// refresh in this process) and at least every minute (changes by the other console).
#[derive(Debug)]
pub struct Revocation {
    store: Arc<dyn Store>,
    pub settings: RevocationSettings,
    cache: RwLock<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    loaded: Option<Instant>,
    by_issuer: HashMap<String, Arc<Crl>>,
}

const RELOAD_EVERY: Duration = Duration::from_secs(60);

impl Revocation {
    pub fn new(store: Arc<dyn Store>, settings: RevocationSettings) -> Revocation {
        Revocation {
            store,
            settings,
            cache: RwLock::new(Cache::default()),
        }
    }

    /// Reads the CRLs from the store again.
    pub fn reload(&self) {
        let mut by_issuer = HashMap::new();
        match self.store.crls() {
            Ok(list) => {
                for s in list {
                    match Crl::parse(&s.der) {
                        Ok(c) => {
                            by_issuer.insert(c.issuer.clone(), Arc::new(c));
                        }
                        Err(e) => tracing::error!(issuer = %s.issuer, "a stored CRL: {e}"),
                    }
                }
            }
            Err(e) => {
                tracing::error!("certificate store: {e}");
                return;
            }
        }
        if let Ok(mut c) = self.cache.write() {
            c.by_issuer = by_issuer;
            c.loaded = Some(Instant::now());
        }
    }

    fn crl_for(&self, issuer: &str) -> Option<Arc<Crl>> {
        let fresh = self
            .cache
            .read()
            .ok()
            .and_then(|c| c.loaded)
            .is_some_and(|l| l.elapsed() < RELOAD_EVERY);
        if !fresh {
            self.reload();
        }
        self.cache
            .read()
            .ok()
            .and_then(|c| c.by_issuer.get(issuer).cloned())
    }

    /// The status of `cert` at `now`.
    pub fn status(&self, cert: &CertInfo, now: u64) -> Status {
        status(cert, self.crl_for(&cert.issuer).as_deref(), now)
    }

    /// Whether `cert` may be used at `now` under the configured policy; why not.
    pub fn check(&self, cert: &CertInfo, now: u64) -> Result<(), String> {
        let s = self.status(cert, now);
        if let Status::Unknown(why) = &s {
            tracing::debug!(fingerprint = %&cert.fingerprint[..16], "revocation unknown: {why}");
        }
        s.verdict(self.settings.unknown)
    }
}

/// What adding a CRL did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrlAdded {
    /// Kept (new, or newer than the one held).
    New,
    /// The same or an older one is held: nothing changed.
    NotNewer,
}

/// Checks `crl` against its issuer's certificate in the store and keeps it if it is newer
/// than the one held. `source`: "uploaded by NAME", or the URL it came from.
pub fn add(
    store: &dyn Store,
    crl: &Crl,
    source: &str,
    url: Option<&str>,
) -> Result<CrlAdded, String> {
    let cas: Vec<CertInfo> = store
        .list(&[Kind::Anchor, Kind::Intermediate])
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|s| s.info)
        .filter(|c| c.subject == crl.issuer)
        .collect();
    if cas.is_empty() {
        return Err(format!(
            "its issuer, {}, is not among the trusted CA certificates; add the CA first",
            crl.issuer
        ));
    }
    let mut why = String::new();
    if !cas.iter().any(|ca| match crl.verify(ca) {
        Ok(()) => true,
        Err(e) => {
            why = e;
            false
        }
    }) {
        return Err(why);
    }
    let held = store
        .crls()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|s| s.issuer == crl.issuer);
    if let Some(h) = held
        && h.this_update >= crl.this_update
    {
        return Ok(CrlAdded::NotNewer);
    }
    store
        .put_crl(&StoredCrl {
            issuer: crl.issuer.clone(),
            this_update: crl.this_update,
            next_update: crl.next_update,
            number: crl.number.clone(),
            revoked: crl.revoked.len() as u64,
            fingerprint: crl.fingerprint.clone(),
            source: source.to_string(),
            url: url.map(str::to_string),
            added: crate::spool::now(),
            der: crl.der.clone(),
        })
        .map_err(|e| e.to_string())?;
    Ok(CrlAdded::New)
}

/// What a refresh did.
#[derive(Debug, Default)]
pub struct RefreshReport {
    /// (URL, issuer) of CRLs kept because newer.
    pub updated: Vec<(String, String)>,
    /// URLs whose CRL was the one held.
    pub unchanged: Vec<String>,
    /// (URL, why).
    pub failed: Vec<(String, String)>,
}

/// The certificates whose distribution points are fetched: the trusted CA certificates (the
/// store's anchors, and its intermediates issued by a trusted CA, found transitively) and
/// the certificates those CAs issued. "Issued" is checked by signature ([`issued_by`]), not
/// by name: a certificate harvested from anyone's signed mail, or uploaded as a
/// correspondent, that no trusted CA signed names URLs nobody vouched for, and they are
/// never fetched.
pub fn fetch_holders(store: &dyn Store) -> Vec<CertInfo> {
    let all = store.list(&[]).unwrap_or_default();
    let mut trusted: Vec<CertInfo> = all
        .iter()
        .filter(|s| s.kind == Kind::Anchor)
        .map(|s| s.info.clone())
        .collect();
    let mut pending: Vec<&CertInfo> = all
        .iter()
        .filter(|s| s.kind == Kind::Intermediate)
        .map(|s| &s.info)
        .collect();
    loop {
        let before = trusted.len();
        let mut i = 0;
        while i < pending.len() {
            if trusted.iter().any(|ca| issued_by(pending[i], ca)) {
                trusted.push(pending.swap_remove(i).clone());
            } else {
                i += 1;
            }
        }
        if trusted.len() == before {
            break;
        }
    }
    let issued: Vec<CertInfo> = all
        .iter()
        .filter(|s| matches!(s.kind, Kind::External | Kind::Internal))
        .filter(|s| trusted.iter().any(|ca| issued_by(&s.info, ca)))
        .map(|s| s.info.clone())
        .collect();
    trusted.extend(issued);
    trusted
}

/// The distribution points of the certificates [`fetch_holders`] chooses, each once.
pub fn wanted_urls(store: &dyn Store) -> Vec<String> {
    let mut urls = BTreeSet::new();
    for c in fetch_holders(store) {
        urls.extend(distribution_points(&c.der));
    }
    urls.into_iter().collect()
}

/// How a refresh downloads.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Per download (redirects included).
    pub timeout: Duration,
    /// For the whole refresh.
    pub deadline: Duration,
    pub allow: FetchAllowance,
}

impl FetchOptions {
    pub fn of(settings: &RevocationSettings) -> FetchOptions {
        FetchOptions {
            timeout: settings.timeout,
            deadline: REFRESH_DEADLINE.max(settings.timeout),
            allow: FetchAllowance::of(settings),
        }
    }
}

/// Fetches the CRLs [`wanted_urls`] names and keeps the newer ones; each attempt is noted in
/// the store (when, and the error) for the consoles. [`FETCH_PARALLEL`] downloads at once;
/// what is not done by the deadline is noted as failed and left behind.
pub fn refresh(store: &dyn Store, options: &FetchOptions) -> RefreshReport {
    let urls = wanted_urls(store);
    let mut report = RefreshReport::default();
    if urls.is_empty() {
        return report;
    }
    let deadline = Instant::now() + options.deadline;
    let late = format!(
        "not fetched: the refresh ran out of time ({} s for all distribution points)",
        options.deadline.as_secs()
    );
    let todo = Arc::new(Mutex::new(urls.clone()));
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..FETCH_PARALLEL.min(urls.len()) {
        let (todo, tx, allow) = (todo.clone(), tx.clone(), options.allow.clone());
        let (timeout, late) = (options.timeout, late.clone());
        // Detached: one stuck past the deadline (a slow name lookup) is left behind.
        std::thread::spawn(move || {
            loop {
                let Some(url) = todo.lock().ok().and_then(|mut t| t.pop()) else {
                    return;
                };
                let now = Instant::now();
                let result = if now >= deadline {
                    Err(late.clone())
                } else {
                    fetch_until(&url, (now + timeout).min(deadline), &allow)
                        .and_then(|b| Crl::parse(&b).map_err(|e| format!("the answer is {e}")))
                };
                if tx.send((url, result)).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut results: HashMap<String, Result<Crl, String>> = HashMap::new();
    while results.len() < urls.len() {
        let wait = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        match rx.recv_timeout(wait) {
            Ok((url, r)) => {
                results.insert(url, r);
            }
            Err(_) => break,
        }
    }
    for url in urls {
        let result = results
            .remove(&url)
            .unwrap_or_else(|| Err(late.clone()))
            .and_then(|crl| add(store, &crl, &url, Some(&url)).map(|added| (added, crl.issuer)));
        let error = match result {
            Ok((CrlAdded::New, issuer)) => {
                tracing::info!(%url, %issuer, "CRL updated");
                report.updated.push((url.clone(), issuer));
                None
            }
            Ok((CrlAdded::NotNewer, _)) => {
                report.unchanged.push(url.clone());
                None
            }
            Err(e) => {
                tracing::warn!(%url, "CRL not fetched: {e}");
                report.failed.push((url.clone(), e.clone()));
                Some(e)
            }
        };
        if let Err(e) = store.note_crl_fetch(&url, crate::spool::now(), error.as_deref()) {
            tracing::error!("certificate store: {e}");
        }
    }
    report
}

/// How long to wait before the next refresh: `every`, or sooner when a held CRL's
/// nextUpdate comes first (but not sooner than five minutes).
pub fn next_refresh(store: &dyn Store, every: Duration, now: u64) -> Duration {
    let soonest = store
        .crls()
        .unwrap_or_default()
        .iter()
        .filter(|c| c.url.is_some())
        .filter_map(|c| c.next_update)
        .map(|n| Duration::from_secs(n.saturating_sub(now)))
        .min();
    let wait = soonest.map_or(every, |s| s.min(every));
    wait.max(Duration::from_secs(300))
}

/// Largest HTTP header section read.
const MAX_HEADER: usize = 16 << 10;

/// GETs an `http://` URL (following up to three redirects), its body at most [`MAX_CRL`]
/// bytes, within `timeout` in all; only from addresses `allow` permits.
pub fn fetch(url: &str, timeout: Duration, allow: &FetchAllowance) -> Result<Vec<u8>, String> {
    fetch_until(url, Instant::now() + timeout, allow)
}

fn fetch_until(url: &str, deadline: Instant, allow: &FetchAllowance) -> Result<Vec<u8>, String> {
    let mut url = url.to_string();
    for _ in 0..4 {
        match get(&url, deadline, allow)? {
            Answer::Body(b) => return Ok(b),
            Answer::Redirect(to) => url = to,
        }
    }
    Err("too many redirects".into())
}

enum Answer {
    Body(Vec<u8>),
    Redirect(String),
}

fn get(url: &str, deadline: Instant, allow: &FetchAllowance) -> Result<Answer, String> {
    let rest = url
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .map(|_| &url[7..])
        .ok_or_else(|| format!("{url}: only http:// URLs are fetched"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || path.contains(['\r', '\n', ' ']) {
        return Err(format!("{url}: not a usable URL"));
    }
    let target = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let left = |d: Instant| {
        d.checked_duration_since(Instant::now())
            .filter(|l| !l.is_zero())
            .ok_or_else(|| "timed out".to_string())
    };
    let host = target
        .rsplit_once(':')
        .map_or(target.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    left(deadline)?;
    // Resolved once: the addresses checked are the ones connected to.
    let mut refused = None;
    let addrs: Vec<_> = target
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .filter(|a| match allow.refuses(&host, a.ip()) {
            Some(why) => {
                refused.get_or_insert(why);
                false
            }
            None => true,
        })
        .collect();
    if addrs.is_empty()
        && let Some(why) = refused
    {
        return Err(why);
    }
    let mut stream = None;
    let mut last = format!("{authority}: no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, left(deadline)?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("{authority}: {e}"),
        }
    }
    let mut s = stream.ok_or(last)?;
    s.set_write_timeout(Some(left(deadline)?))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: smimegw\r\n\
         Accept: application/pkix-crl, */*\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{authority}: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        s.set_read_timeout(Some(left(deadline)?))
            .map_err(|e| e.to_string())?;
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("timed out".into());
            }
            Err(e) => return Err(format!("{authority}: {e}")),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_CRL + MAX_HEADER {
            return Err(format!("the answer is larger than {MAX_CRL} bytes"));
        }
    }
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Result<Answer, String> {
    let end = buf
        .windows(4)
        .take(MAX_HEADER)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("not an HTTP answer (no end of header)")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let body = &buf[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut parts = status.splitn(3, ' ');
    let (proto, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !proto.starts_with("HTTP/1.") {
        return Err("not an HTTP answer".into());
    }
    let code: u16 = code.parse().map_err(|_| "not an HTTP answer".to_string())?;
    let field = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if matches!(code, 301 | 302 | 303 | 307 | 308) {
        return field("Location")
            .map(Answer::Redirect)
            .ok_or_else(|| format!("HTTP {code} without a Location"));
    }
    if code != 200 {
        return Err(format!(
            "HTTP {}",
            status.split_once(' ').map_or("", |s| s.1)
        ));
    }
    let chunked = field("Transfer-Encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    if chunked {
        return dechunk(body).map(Answer::Body);
    }
    match field("Content-Length") {
        Some(l) => {
            let n: usize = l.parse().map_err(|_| "a bad Content-Length".to_string())?;
            body.get(..n)
                .map(|b| Answer::Body(b.to_vec()))
                .ok_or_else(|| "the answer was cut short".to_string())
        }
        None => Ok(Answer::Body(body.to_vec())),
    }
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let bad = || "a damaged chunked answer".to_string();
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size = std::str::from_utf8(&body[..eol]).map_err(|_| bad())?;
        let size = size.split(';').next().unwrap_or("").trim();
        let n = usize::from_str_radix(size, 16).map_err(|_| bad())?;
        body = &body[eol + 2..];
        if n == 0 {
            return Ok(out);
        }
        if body.len() < n + 2 || out.len() + n > MAX_CRL {
            return Err(bad());
        }
        out.extend_from_slice(&body[..n]);
        body = &body[n + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef";
        assert!(matches!(parse_response(ok), Ok(Answer::Body(b)) if b == b"abc"));
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n";
        assert!(matches!(parse_response(chunked), Ok(Answer::Body(b)) if b == b"abcde"));
        let moved = b"HTTP/1.1 302 Found\r\nlocation: http://x/y.crl\r\n\r\n";
        assert!(matches!(parse_response(moved), Ok(Answer::Redirect(u)) if u == "http://x/y.crl"));
        let missing = b"HTTP/1.0 404 Not Found\r\n\r\n";
        assert_eq!(
            parse_response(missing).err().as_deref(),
            Some("HTTP 404 Not Found")
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }

    #[test]
    fn urls_other_than_http_are_refused() {
        let t = Duration::from_secs(1);
        let none = FetchAllowance::default();
        assert!(
            fetch("ldap://x/cn=ca", t, &none)
                .unwrap_err()
                .contains("only http://")
        );
        assert!(
            fetch("http://user@x/", t, &none)
                .unwrap_err()
                .contains("not a usable URL")
        );
    }

    #[test]
    fn not_crls() {
        assert_eq!(Crl::parse(b"").unwrap_err(), "the file is empty");
        assert!(Crl::parse(b"hello").unwrap_err().starts_with("not a CRL"));
        let pem = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert!(Crl::parse(pem).unwrap_err().contains("not a CRL"));
    }

    #[test]
    fn addresses_never_fetched_from_unless_allowed() {
        let kind = |s: &str| special_address(s.parse().unwrap());
        for (a, k) in [
            ("127.0.0.1", "a loopback address"),
            ("127.8.9.10", "a loopback address"),
            ("::1", "a loopback address"),
            ("::ffff:127.0.0.1", "a loopback address"),
            ("0.0.0.0", "an unspecified address"),
            ("0.1.2.3", "an unspecified address"),
            ("::", "an unspecified address"),
            ("10.1.2.3", "a private address"),
            ("172.16.0.1", "a private address"),
            ("192.168.1.1", "a private address"),
            ("100.64.0.1", "a private address"),
            ("fd00::1", "a private address"),
            ("64:ff9b::10.0.0.1", "a private address"),
            ("169.254.169.254", "a link-local address"),
            ("fe80::1", "a link-local address"),
            ("224.0.0.1", "a multicast address"),
            ("ff02::1", "a multicast address"),
            ("255.255.255.255", "a reserved address"),
            ("240.0.0.1", "a reserved address"),
        ] {
            assert_eq!(kind(a), Some(k), "{a}");
        }
        for a in [
            "192.0.2.1",
            "8.8.8.8",
            "100.128.0.1",
            "2001:db8::1",
            "64:ff9b::8.8.8.8",
        ] {
            assert_eq!(kind(a), None, "{a}");
        }
        let none = FetchAllowance::default();
        let ip = "127.0.0.1".parse().unwrap();
        let why = none.refuses("localhost", ip).unwrap();
        assert!(
            why.starts_with("localhost is 127.0.0.1, a loopback address: not fetched from")
                && why.contains("allow_hosts = [\"localhost\"]"),
            "{why}"
        );
        let by_host = FetchAllowance::of(&RevocationSettings {
            allow_hosts: vec!["LocalHost".into()],
            ..Default::default()
        });
        assert_eq!(by_host.refuses("localhost", ip), None);
        assert!(by_host.refuses("other.example", ip).is_some());
        let by_net = FetchAllowance::of(&RevocationSettings {
            allow_networks: vec![Network::parse("127.0.0.0/8").unwrap()],
            ..Default::default()
        });
        assert_eq!(by_net.refuses("anything", ip), None);
        assert!(by_net.refuses("x", "10.0.0.1".parse().unwrap()).is_some());
        assert_eq!(none.refuses("x", "192.0.2.7".parse().unwrap()), None);
    }

    #[test]
    fn a_loopback_distribution_point_is_not_contacted_without_the_allowance() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let t = Duration::from_secs(2);
        for url in [
            format!("http://127.0.0.1:{port}/ca.crl"),
            format!("http://localhost:{port}/ca.crl"),
        ] {
            let e = fetch(&url, t, &FetchAllowance::default()).unwrap_err();
            assert!(e.contains("a loopback address: not fetched from"), "{e}");
        }
        assert!(l.accept().is_err(), "the listener was contacted");
        // Allowed: contacted (and answered with nothing useful here).
        let allow = FetchAllowance::of(&RevocationSettings {
            allow_hosts: vec!["127.0.0.1".into()],
            ..Default::default()
        });
        let server = std::thread::spawn(move || {
            l.set_nonblocking(false).unwrap();
            let (mut c, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = c.write_all(b"HTTP/1.0 404 Not Found\r\n\r\n");
        });
        let e = fetch(&format!("http://127.0.0.1:{port}/ca.crl"), t, &allow).unwrap_err();
        assert_eq!(e, "HTTP 404 Not Found");
        server.join().unwrap();
    }
}
