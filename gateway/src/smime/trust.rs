//! Is a signer trusted? RFC 5280 path validation from the signer's certificate to one of the
//! given trust anchors (rustls-webpki: validity at the given time, basicConstraints, name
//! constraints, the signature of every link), plus what S/MIME adds (RFC 8550): the extended
//! key usage, if present, allows emailProtection; the key usage, if present, allows
//! signatures; the certificate names the sender's address.
//!
//! webpki does not accept SHA-1 or RSA keys under 2048 bits in a chain; such chains are
//! untrusted, with that reason.

use std::time::Duration;

use der::Decode;
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{KeyUsage as KeyUsageExt, KeyUsages, SubjectAltName};

/// id-kp-emailProtection, 1.3.6.1.5.5.7.3.4, as DER contents.
const EMAIL_PROTECTION: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04];

/// Why a signer is not trusted (a sentence for the administrator), or `Ok` when it is.
pub type Verdict = Result<(), String>;

/// Checks `cert` (DER) against `anchors` (DER certificates) at `at` (seconds since the Unix
/// epoch), with `intermediates` available for the path; `email`, when given, must be among the
/// certificate's addresses.
pub fn check_signer(
    cert: &[u8],
    intermediates: &[Vec<u8>],
    anchors: &[Vec<u8>],
    at: u64,
    email: Option<&str>,
) -> Verdict {
    check_signer_path(cert, intermediates, anchors, at, email).map(|_| ())
}

/// [`check_signer`], returning the intermediate CA certificates of the path found (from the
/// signer's issuer up, the anchor left out), for revocation checks.
pub fn check_signer_path(
    cert: &[u8],
    intermediates: &[Vec<u8>],
    anchors: &[Vec<u8>],
    at: u64,
    email: Option<&str>,
) -> Result<Vec<Vec<u8>>, String> {
    let used = check_path(cert, intermediates, anchors, at)?;
    let parsed = x509_cert::Certificate::from_der(cert)
        .map_err(|e| format!("the signer's certificate does not parse: {e}"))?;
    let tbs = parsed.tbs_certificate();
    if let Ok(Some((_, ku))) = tbs.get_extension::<KeyUsageExt>() {
        let flags = ku.0;
        if !flags.contains(KeyUsages::DigitalSignature)
            && !flags.contains(KeyUsages::NonRepudiation)
        {
            return Err("the certificate's key usage does not allow signing".into());
        }
    }
    if let Some(want) = email {
        let have = addresses(&parsed);
        if !have.iter().any(|a| a.eq_ignore_ascii_case(want)) {
            return Err(if have.is_empty() {
                "the certificate names no email address".to_string()
            } else {
                "the certificate does not name the From address".to_string()
            });
        }
    }
    Ok(used)
}

/// The path from `cert` to one of `anchors` at `at` (validity, basic constraints, name
/// constraints, every link's signature; EKU emailProtection if present): the intermediate
/// certificates it used, or why there is none. Nothing about key usage or addresses.
pub fn check_path(
    cert: &[u8],
    intermediates: &[Vec<u8>],
    anchors: &[Vec<u8>],
    at: u64,
) -> Result<Vec<Vec<u8>>, String> {
    let cert_der = CertificateDer::from(cert);
    let ee = EndEntityCert::try_from(&cert_der)
        .map_err(|e| format!("the signer's certificate cannot be used: {}", describe(&e)))?;
    let anchor_ders: Vec<CertificateDer<'_>> = anchors
        .iter()
        .map(|a| CertificateDer::from(a.as_slice()))
        .collect();
    let mut trust = Vec::new();
    for a in &anchor_ders {
        trust.push(
            webpki::anchor_from_trusted_cert(a)
                .map_err(|e| format!("a trust anchor cannot be used: {}", describe(&e)))?,
        );
    }
    let chain: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .filter(|c| c.as_slice() != cert)
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let path = ee
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust,
            &chain,
            UnixTime::since_unix_epoch(Duration::from_secs(at)),
            KeyUsage::required_if_present(EMAIL_PROTECTION),
            None,
            None,
        )
        .map_err(|e| describe(&e))?;
    Ok(path
        .intermediate_certificates()
        .map(|c| c.der().to_vec())
        .collect())
}

/// The email addresses a certificate names: rfc822Name in subjectAltName, and the legacy
/// emailAddress attribute of the subject.
pub fn addresses(cert: &x509_cert::Certificate) -> Vec<String> {
    let tbs = cert.tbs_certificate();
    let mut out = Vec::new();
    if let Ok(Some((_, san))) = tbs.get_extension::<SubjectAltName>() {
        for name in san.0 {
            if let GeneralName::Rfc822Name(n) = name {
                out.push(n.to_string());
            }
        }
    }
    const EMAIL_ADDRESS: &str = "1.2.840.113549.1.9.1";
    for rdn in tbs.subject().as_ref().iter() {
        for atv in rdn.as_ref().iter() {
            if atv.oid.to_string() == EMAIL_ADDRESS
                && let Ok(s) = atv.value.decode_as::<der::asn1::Ia5String>()
            {
                out.push(s.to_string());
            }
        }
    }
    out
}

fn describe(e: &webpki::Error) -> String {
    use webpki::Error as E;
    match e {
        E::UnknownIssuer => "the certificate does not chain to a trusted CA".into(),
        E::CertExpired { .. } => "the certificate (or one in its chain) has expired".into(),
        E::CertNotValidYet { .. } => "the certificate (or one in its chain) is not valid yet".into(),
        E::RequiredEkuNotFoundContext(_) => {
            "the certificate is not for email protection (extended key usage)".into()
        }
        E::InvalidSignatureForPublicKey => "a certificate in the chain has a bad signature".into(),
        E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
            "a certificate in the chain is signed with an algorithm not accepted (SHA-1, or an RSA key under 2048 bits)".into()
        }
        E::CaUsedAsEndEntity => "the signer's certificate is a CA certificate".into(),
        E::EndEntityUsedAsCa => "an end-entity certificate is used as a CA".into(),
        E::BadDer | E::BadDerTime => "a certificate is not valid DER".into(),
        other => format!("path validation failed ({other:?})"),
    }
}
