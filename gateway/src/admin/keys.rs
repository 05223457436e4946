//! Internal users' keys: a PKCS#12 uploaded with its password goes into the token (the key
//! never touches the host's disk), its certificate into the store with the key's PKCS#11
//! URI, its chain as intermediates. A second PKCS#12 for an address (a renewal) becomes the
//! signing certificate; the old key stays, so mail encrypted to it still decrypts. Deleting
//! removes the key from the token for good (callers ask for the administrator's password
//! first).

use hsm::{Pin, Token};

use super::{Actor, AdminError, MAX_UPLOAD, record};
use crate::keys::{Keys, key_uri};
use crate::smime::asn1::day;
use crate::store::{CertInfo, Kind, Store, Stored};

/// What a PKCS#12 import did.
#[derive(Debug)]
pub struct KeyImported {
    /// The user's certificate.
    pub cert: CertInfo,
    /// The key's label in the token.
    pub label: String,
    pub uri: String,
    /// Chain certificates stored as intermediates (not trusted as anchors by this).
    pub chain: Vec<CertInfo>,
    /// Certificates this one takes over from as the signing certificate (a renewal).
    pub replaces: Vec<CertInfo>,
}

/// The label a key gets in the token: the address and the certificate's fingerprint, so a
/// renewal for the same address gets a label of its own.
fn label_for(cert: &CertInfo) -> String {
    let address = cert.addresses.first().map_or("user", String::as_str);
    format!("{address}-{}", &cert.fingerprint[..12])
}

/// Checks an uploaded PKCS#12 completely, then imports it: key into the token, certificate
/// and chain into the store, audited. `name` is how the upload is called in errors. The
/// password is only used here (and dropped, zeroed, by the caller).
pub fn import_pkcs12(
    store: &dyn Store,
    keys: &Keys,
    actor: &Actor,
    name: &str,
    bytes: &[u8],
    password: &Pin,
    now: u64,
) -> Result<KeyImported, AdminError> {
    let refuse = |reason: String| AdminError::Refused {
        name: name.to_string(),
        reason,
    };
    if bytes.len() > MAX_UPLOAD {
        return Err(refuse(format!(
            "{} bytes is too large for a PKCS#12 file (at most {MAX_UPLOAD})",
            bytes.len()
        )));
    }
    if bytes.is_empty() {
        return Err(refuse("the file is empty".into()));
    }
    if bytes.starts_with(b"-----BEGIN") {
        let what = if String::from_utf8_lossy(bytes).contains("PRIVATE KEY-----") {
            "a PEM private key"
        } else {
            "a PEM certificate without its key"
        };
        return Err(refuse(format!(
            "{what}, not a PKCS#12 file; export the key with its certificate as .p12/.pfx"
        )));
    }
    let bundle = hsm::read_pkcs12(bytes, password).map_err(|e| {
        refuse(match e {
            hsm::Error::Pkcs12(why) if why.contains("no private key") => {
                format!("{why}: a certificate without its key cannot sign or decrypt")
            }
            hsm::Error::Pkcs12(why) if why.contains("outer") || why.contains("damaged") => {
                format!("not a PKCS#12 file or damaged ({why})")
            }
            hsm::Error::Pkcs12(why) => why,
            other => other.to_string(),
        })
    })?;
    let Some(cert) = bundle.chain.first().and_then(|d| CertInfo::parse(d)) else {
        return Err(refuse("its certificate does not parse".into()));
    };
    let who = cert.short_name();
    if cert.is_ca {
        return Err(refuse(format!(
            "\"{who}\" is a CA certificate, not a user's; CA keys are not imported"
        )));
    }
    if cert.addresses.is_empty() {
        return Err(refuse(format!(
            "\"{who}\" names no email address (no rfc822Name in its subject alternative \
             names, no emailAddress in its subject): it cannot sign mail"
        )));
    }
    if cert.not_after <= now {
        return Err(refuse(format!(
            "\"{who}\" expired on {}",
            day(cert.not_after)
        )));
    }
    if cert.not_before > now + 86_400 {
        return Err(refuse(format!(
            "\"{who}\" is not valid before {}",
            day(cert.not_before)
        )));
    }
    let held = store.list(&[Kind::Internal])?;
    if held.iter().any(|s| s.info.fingerprint == cert.fingerprint) {
        return Err(refuse(format!(
            "\"{who}\" ({}) is held already",
            &cert.fingerprint[..16]
        )));
    }
    let chain: Vec<CertInfo> = bundle.chain[1..]
        .iter()
        .filter_map(|d| CertInfo::parse(d))
        .collect();
    let token = keys.token();
    let label = label_for(&cert);
    let report = token.import(&label, &bundle).map_err(|e| match e {
        e if e.is_temporary() => refuse(format!("the token is unavailable, try again: {e}")),
        e => refuse(format!("the token refused the key: {e}")),
    })?;
    let token_label = token.info().map(|i| i.label).unwrap_or_default();
    let uri = key_uri(&token_label, &report.label);
    store.add_with_key(
        Kind::Internal,
        &cert,
        &format!("PKCS#12 upload {name}"),
        Some(&uri),
    )?;
    for c in &chain {
        store.add(Kind::Intermediate, c, &format!("chain of PKCS#12 {name}"))?;
    }
    let replaces: Vec<CertInfo> = held
        .into_iter()
        .filter(|s| s.info.addresses.iter().any(|a| cert.addresses.contains(a)))
        .map(|s| s.info)
        .collect();
    keys.reload()
        .map_err(|e| refuse(format!("reading the token back: {e}")))?;
    let mut detail = format!(
        "{} ({}), valid until {}, key {label}",
        cert.addresses.join(", "),
        &cert.fingerprint[..16],
        day(cert.not_after)
    );
    if !replaces.is_empty() {
        detail.push_str(&format!(
            "; renews {} (old key kept for decryption)",
            replaces
                .iter()
                .map(|c| c.fingerprint[..16].to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    record(store, actor, "pkcs12 import", detail);
    Ok(KeyImported {
        cert,
        label,
        uri,
        chain,
        replaces,
    })
}

/// The internal user's certificate whose fingerprint starts with `prefix`.
pub fn find_internal(store: &dyn Store, prefix: &str) -> Result<Stored, AdminError> {
    let p = prefix.trim().to_ascii_lowercase().replace(':', "");
    let found: Vec<Stored> = store
        .list(&[Kind::Internal])?
        .into_iter()
        .filter(|s| p.len() >= 8 && s.info.fingerprint.starts_with(&p))
        .collect();
    match found.len() {
        1 => Ok(found
            .into_iter()
            .next()
            .ok_or(crate::store::StoreError::NoMatch(p))?),
        0 => Err(crate::store::StoreError::NoMatch(p).into()),
        count => Err(crate::store::StoreError::Ambiguous { prefix: p, count }.into()),
    }
}

/// Deletes an internal user's key from the token and its certificate from the store. Mail
/// encrypted to that key can no longer be decrypted: callers confirm with the password.
pub fn delete_key(
    store: &dyn Store,
    keys: &Keys,
    actor: &Actor,
    prefix: &str,
) -> Result<Stored, AdminError> {
    let found = find_internal(store, prefix)?;
    let label = found
        .key
        .as_deref()
        .and_then(|u| hsm::Pkcs11Uri::parse(u).ok())
        .and_then(|u| u.object)
        .ok_or_else(|| AdminError::Refused {
            name: found.info.fingerprint[..16].to_string(),
            reason: "the store does not say which key in the token is this certificate's".into(),
        })?;
    let token: &dyn Token = keys.token().as_ref();
    token.delete(&label).map_err(|e| AdminError::Refused {
        name: label.clone(),
        reason: format!("the token did not delete the key: {e}"),
    })?;
    let removed = store.remove(&found.info.fingerprint, &[Kind::Internal])?;
    keys.reload().map_err(|e| AdminError::Refused {
        name: label.clone(),
        reason: format!("reading the token back: {e}"),
    })?;
    record(
        store,
        actor,
        "key delete",
        format!(
            "{} ({}), key {label}",
            removed.info.addresses.join(", "),
            &removed.info.fingerprint[..16]
        ),
    );
    Ok(removed)
}

/// Issues (or with `renew`, renews) `address`'s certificate from the built-in CA, audited.
/// `internal`: whether the address is in an internal domain (only those are issued).
pub fn issue(
    store: &dyn Store,
    keys: &Keys,
    actor: &Actor,
    address: &str,
    internal: bool,
    renew: bool,
    now: u64,
) -> Result<CertInfo, AdminError> {
    let address = address.trim().to_ascii_lowercase();
    let refuse = |reason: String| AdminError::Refused {
        name: address.clone(),
        reason,
    };
    let well_formed = address.split_once('@').is_some_and(|(l, d)| {
        !l.is_empty()
            && d.contains('.')
            && !d.starts_with('.')
            && !d.ends_with('.')
            && address.bytes().filter(|b| *b == b'@').count() == 1
            && address
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:\"".contains(&b))
    });
    if !well_formed {
        return Err(refuse(
            "not an email address (like user@example.com)".into(),
        ));
    }
    if !internal {
        return Err(refuse(
            "not in an internal domain (server.internal_domains); the built-in CA issues \
             certificates to internal users only"
                .into(),
        ));
    }
    let entry = keys.issue(&address, renew, now).map_err(refuse)?;
    let cert = entry
        .chain
        .first()
        .and_then(|d| CertInfo::parse(d))
        .ok_or_else(|| refuse("the new certificate does not parse".into()))?;
    record(
        store,
        actor,
        if renew {
            "certificate renewed"
        } else {
            "certificate issued"
        },
        format!(
            "{address} by the built-in CA, valid until {} (fingerprint {})",
            day(cert.not_after),
            &cert.fingerprint[..16]
        ),
    );
    Ok(cert)
}
