//! The administration core: what an administrator can do, the same from the serial
//! console, the web console and the REST API. Each action checks its input completely before
//! it changes anything (a bad upload changes nothing), names what was wrong, and is written
//! to the audit log with who did it and from where.
//!
//! Today: trust anchors and intermediates (import from a file or a FirstClass-style folder,
//! list, remove), correspondents' certificates from such a folder, the choice of the
//! certificate to encrypt to, and the audit log.

use std::path::Path;

pub mod crl;
pub mod keys;
pub mod policy;

use crate::smime::asn1::day;
use crate::store::{Added, AuditEntry, CertInfo, Kind, Store, StoreError, Stored};

/// The largest certificate file accepted.
pub const MAX_UPLOAD: usize = 1 << 20;

/// Who acts, from where (for the audit log).
#[derive(Debug, Clone)]
pub struct Actor {
    pub who: String,
    pub origin: String,
}

/// Why an action was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{name}: {reason}")]
    Refused { name: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub added: Vec<(Kind, CertInfo)>,
    /// Held already.
    pub known: Vec<CertInfo>,
    /// Files of a folder left out, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// The certificates in an uploaded file (PEM blocks or one DER certificate), each parsed.
fn certificates_in(name: &str, bytes: &[u8]) -> Result<Vec<CertInfo>, AdminError> {
    let refuse = |reason: String| AdminError::Refused {
        name: name.to_string(),
        reason,
    };
    if bytes.len() > MAX_UPLOAD {
        return Err(refuse(format!(
            "{} bytes is too large for a certificate file (at most {MAX_UPLOAD})",
            bytes.len()
        )));
    }
    if bytes.is_empty() {
        return Err(refuse("the file is empty".into()));
    }
    let text = String::from_utf8_lossy(bytes);
    if text.contains("PRIVATE KEY-----") {
        return Err(refuse(
            "the file holds a private key; keys go into the token (upload a PKCS#12 for a \
             user), trust anchors are certificates only"
                .into(),
        ));
    }
    let ders = crate::ca::parse_certificates(bytes).map_err(|e| {
        refuse(match e {
            crate::ca::CertFileError::Damaged => "a PEM certificate block is damaged".into(),
            crate::ca::CertFileError::NoCertificate => {
                "a text file without a PEM certificate (-----BEGIN CERTIFICATE-----)".into()
            }
        })
    })?;
    let mut out = Vec::new();
    for (i, der) in ders.iter().enumerate() {
        match CertInfo::parse(der) {
            Some(c) => out.push(c),
            None if ders.len() == 1 && looks_like_pkcs12(der) => {
                return Err(refuse(
                    "a PKCS#12 file (a key with its certificate), not a certificate".into(),
                ));
            }
            None if ders.len() == 1 => {
                return Err(refuse(
                    "not a certificate (neither PEM nor DER X.509)".into(),
                ));
            }
            None => {
                return Err(refuse(format!(
                    "certificate {} of {} does not parse",
                    i + 1,
                    ders.len()
                )));
            }
        }
    }
    Ok(out)
}

/// PFX: SEQUENCE { INTEGER 3, ContentInfo ... }.
fn looks_like_pkcs12(der: &[u8]) -> bool {
    hsm::ber::read(der)
        .ok()
        .and_then(|(t, _)| t.children().next())
        .and_then(Result::ok)
        .is_some_and(|v| v.number == 2 && !v.constructed && v.body == [3])
}

/// Why `c` is not valid at `now`, if it is not.
fn valid_now(c: &CertInfo, now: u64) -> Result<(), String> {
    let who = c.short_name();
    if c.not_after <= now {
        return Err(format!("\"{who}\" expired on {}", day(c.not_after)));
    }
    if c.not_before > now {
        return Err(format!(
            "\"{who}\" is not valid before {}",
            day(c.not_before)
        ));
    }
    Ok(())
}

/// Checks certificates for trust: CA certificates only, valid now, usable as anchors.
fn check_trust(
    name: &str,
    certs: &[CertInfo],
    now: u64,
) -> Result<Vec<(Kind, CertInfo)>, AdminError> {
    let refuse = |reason: String| AdminError::Refused {
        name: name.to_string(),
        reason,
    };
    let mut out = Vec::new();
    for c in certs {
        let who = c.short_name();
        if !c.is_ca {
            let what = if c.addresses.is_empty() {
                String::new()
            } else {
                format!(" for {}", c.addresses.join(", "))
            };
            return Err(refuse(format!(
                "\"{who}\" is not a CA certificate (an end-entity certificate{what}); only \
                 root and intermediate CA certificates are trust anchors"
            )));
        }
        valid_now(c, now).map_err(refuse)?;
        let der = rustls_pki_types::CertificateDer::from(c.der.as_slice());
        if let Err(e) = webpki::anchor_from_trusted_cert(&der) {
            return Err(refuse(format!("\"{who}\" cannot be a trust anchor: {e:?}")));
        }
        let kind = if c.self_issued {
            Kind::Anchor
        } else {
            Kind::Intermediate
        };
        out.push((kind, c.clone()));
    }
    Ok(out)
}

/// Writes an administrator's action to the audit log (and the log).
pub fn record(store: &dyn Store, actor: &Actor, action: &str, detail: String) {
    let entry = AuditEntry {
        at: crate::spool::now(),
        who: actor.who.clone(),
        origin: actor.origin.clone(),
        action: action.to_string(),
        detail,
    };
    if let Err(e) = store.record(&entry) {
        tracing::error!("audit log: {e}");
    }
    tracing::info!(who = %actor.who, origin = %actor.origin, "{action}: {}", entry.detail);
}

fn add_all(
    store: &dyn Store,
    checked: Vec<(Kind, CertInfo)>,
    source: &str,
    report: &mut ImportReport,
) -> Result<(), AdminError> {
    for (kind, c) in checked {
        match store.add(kind, &c, source)? {
            Added::New => report.added.push((kind, c)),
            // Held as an intermediate only (a PKCS#12's chain, offered for path building):
            // now it is trusted.
            Added::Known
                if kind == Kind::Anchor
                    && store.remove(&c.fingerprint, &[Kind::Intermediate]).is_ok() =>
            {
                store.add(kind, &c, source)?;
                report.added.push((kind, c));
            }
            // Held as a candidate (from mail whose signer was not trusted): an administrator
            // importing it vouches for it.
            Added::Known
                if kind == Kind::External
                    && store
                        .set_kind(&c.fingerprint, Kind::Candidate, Kind::External, source)
                        .is_ok() =>
            {
                report.added.push((kind, c));
            }
            Added::Known => report.known.push(c),
        }
    }
    Ok(())
}

/// Imports root and intermediate CA certificates from one file (`name` is how the
/// administrator named it). All of them, or none when one is refused.
pub fn import_trust(
    store: &dyn Store,
    actor: &Actor,
    name: &str,
    bytes: &[u8],
    now: u64,
) -> Result<ImportReport, AdminError> {
    let certs = certificates_in(name, bytes)?;
    let checked = check_trust(name, &certs, now)?;
    import_checked(store, actor, name, checked, "trust import")
}

/// Adds certificates checked from the upload `name`, audited as `action`.
fn import_checked(
    store: &dyn Store,
    actor: &Actor,
    name: &str,
    checked: Vec<(Kind, CertInfo)>,
    action: &str,
) -> Result<ImportReport, AdminError> {
    let mut report = ImportReport::default();
    add_all(
        store,
        checked,
        &format!("imported from {name}"),
        &mut report,
    )?;
    record(store, actor, action, describe(name, &report));
    Ok(report)
}

/// Imports correspondents' certificates from an uploaded file (PEM or DER): each must be an
/// end-entity certificate naming an email address, valid now, allowing encryption. All of
/// them, or none when one is refused.
pub fn import_correspondents(
    store: &dyn Store,
    actor: &Actor,
    name: &str,
    bytes: &[u8],
    now: u64,
) -> Result<ImportReport, AdminError> {
    let refuse = |reason: String| AdminError::Refused {
        name: name.to_string(),
        reason,
    };
    let certs = certificates_in(name, bytes)?;
    let mut checked = Vec::new();
    for c in certs {
        let who = c.short_name();
        if c.is_ca {
            return Err(refuse(format!(
                "\"{who}\" is a CA certificate; CA certificates go to the trust anchors"
            )));
        }
        if c.addresses.is_empty() {
            return Err(refuse(format!("\"{who}\" names no email address")));
        }
        valid_now(&c, now).map_err(refuse)?;
        if !c.can_encrypt {
            return Err(refuse(format!(
                "\"{who}\"'s key usage does not allow encrypting to it"
            )));
        }
        checked.push((Kind::External, c));
    }
    import_checked(store, actor, name, checked, "correspondent import")
}

fn describe(name: &str, r: &ImportReport) -> String {
    let mut parts: Vec<String> = r
        .added
        .iter()
        .map(|(k, c)| {
            format!(
                "{} {} ({})",
                k.as_str(),
                c.short_name(),
                &c.fingerprint[..16]
            )
        })
        .collect();
    if !r.known.is_empty() {
        parts.push(format!("{} already held", r.known.len()));
    }
    if !r.skipped.is_empty() {
        parts.push(format!("{} skipped", r.skipped.len()));
    }
    format!("{name}: {}", parts.join(", "))
}

/// Imports a FirstClass-style certificate folder: files named `ca.NAME` (under 64 characters)
/// hold root or intermediate certificates to trust; files named by an email address hold
/// that correspondent's certificate (to encrypt to them). Other files, and files refused,
/// are reported and left out; the rest is imported.
pub fn import_folder(
    store: &dyn Store,
    actor: &Actor,
    dir: &Path,
    now: u64,
) -> Result<ImportReport, AdminError> {
    let io = |source| AdminError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut names: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(dir)
        .map_err(io)?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    names.sort();
    let mut report = ImportReport::default();
    let source = format!("FirstClass folder {}", dir.display());
    for (name, path) in names {
        let outcome = (|| -> Result<Vec<(Kind, CertInfo)>, AdminError> {
            let bytes = read_limited(&path)?;
            if let Some(rest) = name.strip_prefix("ca.") {
                if name.chars().count() >= 64 || rest.is_empty() {
                    return Err(AdminError::Refused {
                        name: name.clone(),
                        reason: "CA file names are ca.NAME, under 64 characters".into(),
                    });
                }
                let certs = certificates_in(&name, &bytes)?;
                check_trust(&name, &certs, now)
            } else if is_address(&name) {
                let certs = certificates_in(&name, &bytes)?;
                check_correspondent(&name, &certs, now).map(|c| vec![(Kind::External, c)])
            } else {
                Err(AdminError::Refused {
                    name: name.clone(),
                    reason: "neither an email address nor ca.NAME".into(),
                })
            }
        })();
        match outcome {
            Ok(checked) => add_all(store, checked, &source, &mut report)?,
            Err(AdminError::Refused { reason, .. }) => report.skipped.push((name, reason)),
            Err(e) => return Err(e),
        }
    }
    record(
        store,
        actor,
        "folder import",
        describe(&dir.display().to_string(), &report),
    );
    Ok(report)
}

/// Reads a file to import, never more than [`MAX_UPLOAD`] bytes.
pub fn read_limited(path: &Path) -> Result<Vec<u8>, AdminError> {
    read_at_most(path, MAX_UPLOAD)
}

/// Reads a file to import, never more than `limit` bytes.
pub fn read_at_most(path: &Path, limit: usize) -> Result<Vec<u8>, AdminError> {
    use std::io::Read;
    let io = |source| AdminError::Io {
        path: path.display().to_string(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    f.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > limit {
        return Err(AdminError::Refused {
            name: path.display().to_string(),
            reason: format!("the file is too large (at most {limit} bytes)"),
        });
    }
    Ok(bytes)
}

/// Imports from `path`: a FirstClass-style folder ([`import_folder`]), or one file of CA
/// certificates ([`import_trust`]).
pub fn import_path(
    store: &dyn Store,
    actor: &Actor,
    path: &Path,
    now: u64,
) -> Result<ImportReport, AdminError> {
    if path.is_dir() {
        import_folder(store, actor, path, now)
    } else {
        let bytes = read_limited(path)?;
        import_trust(store, actor, &path.display().to_string(), &bytes, now)
    }
}

fn is_address(name: &str) -> bool {
    match name.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !name.contains(|c: char| c.is_whitespace() || c == '/')
        }
        None => false,
    }
}

/// The correspondent's own certificate among `certs`: names the address, is no CA, valid now.
fn check_correspondent(name: &str, certs: &[CertInfo], now: u64) -> Result<CertInfo, AdminError> {
    let refuse = |reason: String| AdminError::Refused {
        name: name.to_string(),
        reason,
    };
    let address = name.to_ascii_lowercase();
    let c = certs
        .iter()
        .find(|c| !c.is_ca && c.addresses.contains(&address))
        .ok_or_else(|| refuse(format!("no certificate in it names {address}")))?;
    if c.not_after <= now {
        return Err(refuse(format!(
            "the certificate expired on {}",
            day(c.not_after)
        )));
    }
    if !c.can_encrypt {
        return Err(refuse(
            "the certificate's key usage does not allow encrypting to it".into(),
        ));
    }
    Ok(c.clone())
}

/// Removes a trust anchor or intermediate (by fingerprint prefix).
pub fn remove_trust(store: &dyn Store, actor: &Actor, prefix: &str) -> Result<Stored, AdminError> {
    let removed = match store.remove(prefix, &[Kind::Anchor, Kind::Intermediate]) {
        Ok(r) => r,
        Err(StoreError::NoMatch(p)) => {
            // Say so when the prefix names a correspondent's certificate instead.
            let external = store.list(&[Kind::External])?;
            let named = external
                .iter()
                .find(|s| p.len() >= 8 && s.info.fingerprint.starts_with(&p));
            return Err(match named {
                Some(s) => AdminError::Refused {
                    name: prefix.to_string(),
                    reason: format!(
                        "\"{}\" is a correspondent's certificate, not a trust anchor",
                        s.info.short_name()
                    ),
                },
                None => StoreError::NoMatch(p).into(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    record(
        store,
        actor,
        "trust remove",
        format!(
            "{} {} ({})",
            removed.kind.as_str(),
            removed.info.short_name(),
            &removed.info.fingerprint[..16]
        ),
    );
    Ok(removed)
}

/// Approves a candidate certificate (harvested from mail whose signer's path did not
/// validate): from now on it is a correspondent's certificate, used to encrypt to the
/// addresses it names. The administrator vouches for it; in the audit log.
pub fn approve_candidate(
    store: &dyn Store,
    actor: &Actor,
    prefix: &str,
) -> Result<Stored, AdminError> {
    let source = format!("approved by {} ({})", actor.who, actor.origin);
    let approved = store.set_kind(prefix, Kind::Candidate, Kind::External, &source)?;
    record(
        store,
        actor,
        "candidate approve",
        format!(
            "{} ({})",
            approved.info.addresses.join(", "),
            &approved.info.fingerprint[..16],
        ),
    );
    Ok(approved)
}

/// Removes a candidate certificate (the administrator does not vouch for it).
pub fn reject_candidate(
    store: &dyn Store,
    actor: &Actor,
    prefix: &str,
) -> Result<Stored, AdminError> {
    let removed = store.remove(prefix, &[Kind::Candidate])?;
    record(
        store,
        actor,
        "candidate reject",
        format!(
            "{} ({})",
            removed.info.addresses.join(", "),
            &removed.info.fingerprint[..16]
        ),
    );
    Ok(removed)
}

/// An internal user's signing certificate (the newest per address) that expires soon.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Expiring {
    pub address: String,
    pub fingerprint: String,
    pub not_after: u64,
    /// Negative: expired that many days ago.
    pub days_left: i64,
    /// The built-in CA issued it (it is renewed on first use after expiry).
    pub built_in: bool,
}

/// Internal users whose newest certificate expires within `within_days` of `now` (or has
/// expired), soonest first. A user renewed with a later certificate is not listed.
pub fn expiring(
    store: &dyn Store,
    ca_subject: Option<&str>,
    now: u64,
    within_days: u64,
) -> Result<Vec<Expiring>, AdminError> {
    let mut newest: std::collections::BTreeMap<String, CertInfo> = Default::default();
    for s in store.list(&[Kind::Internal])? {
        for a in &s.info.addresses {
            match newest.get(a) {
                Some(held) if held.not_after >= s.info.not_after => {}
                _ => {
                    newest.insert(a.clone(), s.info.clone());
                }
            }
        }
    }
    let horizon = now + within_days * 86_400;
    let mut out: Vec<Expiring> = newest
        .into_iter()
        .filter(|(_, c)| c.not_after <= horizon)
        .map(|(address, c)| Expiring {
            days_left: (c.not_after as i64 - now as i64).div_euclid(86_400),
            built_in: ca_subject.is_some_and(|s| s == c.issuer),
            address,
            fingerprint: c.fingerprint,
            not_after: c.not_after,
        })
        .collect();
    out.sort_by(|a, b| (a.not_after, &a.address).cmp(&(b.not_after, &b.address)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    /// A correspondent's encryption certificate from the RFC 9216 examples (valid 2019-2052).
    fn bob() -> (Vec<u8>, CertInfo) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../../shared/corpora/ietf-examples-cms-rfc9216/certs-and-keys/lamps-bob.encrypt.crt",
        );
        let pem = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let der = crate::ca::parse_certificates(&pem)
            .unwrap_or_else(|e| panic!("{e:?}"))
            .remove(0);
        let info = CertInfo::parse(&der).unwrap_or_else(|| panic!("the certificate parses"));
        (pem, info)
    }

    fn actor() -> Actor {
        Actor {
            who: "admin".into(),
            origin: "test".into(),
        }
    }

    #[test]
    fn a_candidate_is_approved_rejected_or_vouched_for_by_import_and_audited() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store =
            SqliteStore::open(&dir.path().join("store.sqlite")).unwrap_or_else(|e| panic!("{e}"));
        let (pem, info) = bob();
        let fp = info.fingerprint[..16].to_string();
        let add = |s: &SqliteStore| {
            s.add(
                Kind::Candidate,
                &info,
                "harvested from signed mail from bob@smime.example",
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        add(&store);
        // Only a candidate can be approved, by a fingerprint long enough to name one.
        assert!(approve_candidate(&store, &actor(), "abc").is_err());
        assert!(reject_candidate(&store, &actor(), &"0".repeat(16)).is_err());
        let approved = approve_candidate(&store, &actor(), &fp).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(approved.kind, Kind::External);
        assert_eq!(approved.source, "approved by admin (test)");
        assert!(
            approve_candidate(&store, &actor(), &fp).is_err(),
            "approved twice"
        );
        let held = store.for_address("bob@smime.example").unwrap_or_default();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].kind, Kind::External);

        // Rejected: gone.
        store
            .remove(&fp, &[Kind::External])
            .unwrap_or_else(|e| panic!("{e}"));
        add(&store);
        let gone = reject_candidate(&store, &actor(), &fp).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gone.kind, Kind::Candidate);
        assert!(
            store
                .for_address("bob@smime.example")
                .unwrap_or_default()
                .is_empty()
        );

        // Imported by an administrator while held as a candidate: vouched for.
        add(&store);
        let now = 1_800_000_000; // 2027
        let report = import_correspondents(&store, &actor(), "bob.crt", &pem, now)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.added.len(), 1, "{report:?}");
        let held = store.for_address("bob@smime.example").unwrap_or_default();
        assert_eq!(held[0].kind, Kind::External);

        let audit = store.audit_log(10).unwrap_or_default();
        let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
        assert!(actions.contains(&"candidate approve"), "{actions:?}");
        assert!(actions.contains(&"candidate reject"), "{actions:?}");
    }
}
