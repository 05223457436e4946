//! Verifying CMS SignedData (RFC 5652 §5) cryptographically: each SignerInfo's signature over
//! its signed attributes, and the messageDigest attribute against the content.
//!
//! This answers "was this content signed by the key in this certificate?". Whether that
//! certificate is trusted (path validation, email match) is a separate question, answered by
//! the caller with the certificates this returns.

use std::io::{Read, Write};

use hsm::ber::{self, Tlv, tag};
use hsm::{Hash, SignAlgorithm};

use super::berstream::BerReader;
use super::error::{Result, SmimeError};
use super::oid;
use super::stream::Digests;

/// What one SignerInfo says, and whether its signature holds.
#[derive(Debug, Clone)]
pub struct SignerResult {
    /// The signer's certificate (DER), when the message carries it.
    pub cert: Option<Vec<u8>>,
    /// Issuer and serial (hex) or SKI (hex) the SignerInfo names.
    pub signer_id: String,
    pub digest: Option<Hash>,
    pub algorithm: Option<SignAlgorithm>,
    /// The signingTime attribute, as RFC 3339 (as written when it does not parse).
    pub signing_time: Option<String>,
    /// The signature verifies and the messageDigest matches the content.
    pub valid: bool,
    /// Why not, when not valid.
    pub reason: Option<String>,
    /// Whether the signer's SMIMECapabilities attribute lists AES-GCM (AuthEnvelopedData,
    /// RFC 5084); `None` when the attribute is absent.
    pub announces_gcm: Option<bool>,
}

/// A SignedData, verified.
#[derive(Debug, Clone)]
pub struct VerifiedData {
    /// The signed content: the encapsulated content for opaque signatures, else what was given.
    pub content: Vec<u8>,
    pub signers: Vec<SignerResult>,
    /// Every certificate the message carries (DER).
    pub certificates: Vec<Vec<u8>>,
}

fn malformed(what: impl Into<String>) -> SmimeError {
    SmimeError::Malformed(what.into())
}

/// Signatures checked while the content streamed past.
#[derive(Debug, Clone)]
pub struct Signatures {
    pub signers: Vec<SignerResult>,
    /// Every certificate the message carries (DER).
    pub certificates: Vec<Vec<u8>>,
}

/// Verifies a CMS ContentInfo holding SignedData, in memory. `detached` is the signed content
/// when the signature is detached (multipart/signed); it is hashed as given, so the caller
/// passes the canonical bytes.
pub fn verify_cms(cms: &[u8], detached: Option<&[u8]>) -> Result<VerifiedData> {
    verify_cms_with(cms, detached, &[])
}

/// [`verify_cms`] with certificates known beforehand (DER), for signers whose certificate
/// the message does not carry.
pub fn verify_cms_with(
    cms: &[u8],
    detached: Option<&[u8]>,
    known: &[Vec<u8>],
) -> Result<VerifiedData> {
    let (content, sig) = match detached {
        Some(d) => (
            d.to_vec(),
            verify_detached(cms, known, &mut |w| Ok(w.write_all(d)?))?,
        ),
        None => {
            let mut content = Vec::new();
            let sig = verify_opaque(&mut BerReader::new(cms), known, &mut content)?;
            (content, sig)
        }
    };
    Ok(VerifiedData {
        content,
        signers: sig.signers,
        certificates: sig.certificates,
    })
}

/// Verifies a detached SignedData (`cms`, in memory: signatures are small) over content that
/// `feed` writes, once, to the hashes the signers need.
pub fn verify_detached(
    cms: &[u8],
    known: &[Vec<u8>],
    feed: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
) -> Result<Signatures> {
    let info = ber::read(cms)?.0;
    let items = info.items()?;
    let [kind, content, ..] = items.as_slice() else {
        return Err(malformed("CMS ContentInfo is too short"));
    };
    let kind = kind.oid()?;
    if kind != oid::SIGNED_DATA {
        return Err(malformed(format!(
            "CMS content type {} is not signed data",
            oid::dotted(kind)
        )));
    }
    if !content.is_context(0) {
        return Err(malformed("CMS ContentInfo content is not [0]"));
    }
    let sd = content.inner()?.items()?;
    // version, digestAlgorithms, encapContentInfo, [0] certificates?, [1] crls?, signerInfos
    let encap = sd
        .get(2)
        .filter(|t| t.is(tag::SEQUENCE))
        .ok_or_else(|| malformed("SignedData has no encapsulated content info"))?;
    let signer_infos = sd
        .last()
        .filter(|t| t.is(tag::SET))
        .ok_or_else(|| malformed("SignedData has no signerInfos"))?;
    let mut certificates = Vec::new();
    for t in &sd[3..sd.len() - 1] {
        if t.is_context(0) {
            certificates = read_certificates(t)?;
        }
    }
    let content_type = encap
        .items()?
        .first()
        .ok_or_else(|| malformed("encapsulated content info is empty"))?
        .oid()?
        .to_vec();
    let mut hashes = Vec::new();
    for si in signer_infos.children() {
        if let Some(digest_alg) = si?.items()?.get(2) {
            hashes.extend(oid::hash(first_oid(digest_alg)?));
        }
    }
    let mut digests = Digests::new(&hashes);
    feed(&mut digests)?;
    let digests = digests.finish();
    Ok(Signatures {
        signers: check_signers(signer_infos, &content_type, &digests, &certificates, known)?,
        certificates,
    })
}

const SMALL: u64 = 64 * 1024;
/// Certificates and CRLs carried in a signature.
const BAGS_LIMIT: u64 = 16 << 20;

/// Verifies an opaque SignedData read from `ber`, writing the encapsulated content to `out`
/// as it is hashed (exactly as signed).
pub fn verify_opaque<R: Read>(
    ber: &mut BerReader<R>,
    known: &[Vec<u8>],
    out: &mut dyn Write,
) -> Result<Signatures> {
    let (info, kind) = ber.content_info()?;
    if kind != oid::SIGNED_DATA {
        return Err(malformed(format!(
            "CMS content type {} is not signed data",
            oid::dotted(&kind)
        )));
    }
    let content = ber.content(&info)?;
    let sd = ber.expect_child(content.frame(), "the signed data")?;
    if !sd.is(tag::SEQUENCE) {
        return Err(malformed("SignedData is not a SEQUENCE"));
    }
    let f = sd.frame();
    let version = ber.expect_child(f, "the SignedData version")?;
    ber.element(&version, SMALL, "the SignedData version")?;
    let algs = ber.expect_child(f, "digestAlgorithms")?;
    if !algs.is(tag::SET) {
        return Err(malformed("SignedData has no digestAlgorithms"));
    }
    let algs = ber.element(&algs, SMALL, "digestAlgorithms")?;
    let mut hashes = Vec::new();
    for a in ber::read_all(&algs)?.children() {
        hashes.extend(oid::hash(first_oid(&a?)?));
    }
    let encap = ber.expect_child(f, "the encapsulated content info")?;
    if !encap.is(tag::SEQUENCE) {
        return Err(malformed("SignedData has no encapsulated content info"));
    }
    let ef = encap.frame();
    let ct = ber.expect_child(ef, "the encapsulated content type")?;
    let ct = ber.element(&ct, SMALL, "the encapsulated content type")?;
    let content_type = ber::read_all(&ct)?.oid()?.to_vec();
    let mut digests = Digests::new(&hashes);
    match ber.next_child(ef)? {
        Some(e) if e.is_context(0) => {
            let os = ber.expect_child(e.frame(), "the encapsulated content")?;
            if !os.is(tag::OCTET_STRING) {
                return Err(malformed("the encapsulated content is not an OCTET STRING"));
            }
            ber.octets(&os, &mut |piece| {
                digests.write_all(piece)?;
                out.write_all(piece)?;
                Ok(())
            })?;
            ber.skip_rest(e.frame())?;
            ber.skip_rest(ef)?;
        }
        Some(_) => return Err(malformed("the encapsulated content is not [0]")),
        None => {
            return Err(malformed(
                "the signature is detached but no signed content was given",
            ));
        }
    }
    let mut certificates = Vec::new();
    let mut signer_infos = None;
    while let Some(h) = ber.next_child(f)? {
        let what = if h.is_context(0) {
            "the certificates"
        } else if h.is(tag::SET) {
            "signerInfos"
        } else {
            "the CRLs"
        };
        let raw = ber.element(&h, BAGS_LIMIT, what)?;
        if h.is_context(0) {
            certificates = read_certificates(&ber::read_all(&raw)?)?;
        } else if h.is(tag::SET) {
            signer_infos = Some(raw);
        }
    }
    let signer_infos = signer_infos.ok_or_else(|| malformed("SignedData has no signerInfos"))?;
    // The end of the enclosing elements: a truncated message is refused, not half-read.
    ber.skip_rest(content.frame())?;
    ber.skip_rest(info.frame())?;
    let digests = digests.finish();
    Ok(Signatures {
        signers: check_signers(
            &ber::read_all(&signer_infos)?,
            &content_type,
            &digests,
            &certificates,
            known,
        )?,
        certificates,
    })
}

/// The certificates of a `[0] CertificateSet` (other certificate formats are skipped).
fn read_certificates(set: &Tlv<'_>) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for c in set.children() {
        let c = c?;
        if c.is(tag::SEQUENCE) {
            out.push(ber::to_der(c.raw)?);
        }
    }
    Ok(out)
}

fn check_signers(
    signer_infos: &Tlv<'_>,
    content_type: &[u8],
    digests: &[(Hash, Vec<u8>)],
    certificates: &[Vec<u8>],
    known: &[Vec<u8>],
) -> Result<Vec<SignerResult>> {
    let all: Vec<Vec<u8>> = certificates.iter().chain(known).cloned().collect();
    let mut signers = Vec::new();
    for si in signer_infos.children() {
        signers.push(verify_signer(&si?, content_type, digests, &all)?);
    }
    if signers.is_empty() {
        return Err(malformed("SignedData has no signers"));
    }
    Ok(signers)
}

fn verify_signer(
    si: &Tlv<'_>,
    content_type: &[u8],
    digests: &[(Hash, Vec<u8>)],
    certificates: &[Vec<u8>],
) -> Result<SignerResult> {
    let parts = si.items()?;
    // version, sid, digestAlgorithm, [0] signedAttrs?, signatureAlgorithm, signature, [1]?
    let [_version, sid, digest_alg, rest @ ..] = parts.as_slice() else {
        return Err(malformed("SignerInfo is too short"));
    };
    let (signed_attrs, rest) = match rest.first() {
        Some(t) if t.is_context(0) => (Some(*t), &rest[1..]),
        _ => (None, rest),
    };
    let [sig_alg, signature, ..] = rest else {
        return Err(malformed("SignerInfo has no signature"));
    };
    let signature = signature.octets()?;

    // Find the certificate the SignerInfo names.
    let (signer_id, cert) = if sid.is_context(0) {
        let ski = sid.octets()?;
        let cert = certificates.iter().find(|c| {
            hsm::cert_summary(c).is_ok_and(|s| s.subject_key_id.as_deref() == Some(&ski[..]))
        });
        (format!("subject key identifier {}", hsm::hex(&ski)), cert)
    } else {
        let ias = sid.items()?;
        let [issuer, serial] = ias.as_slice() else {
            return Err(malformed("IssuerAndSerialNumber"));
        };
        let cert = certificates.iter().find(|c| {
            hsm::cert_summary(c)
                .is_ok_and(|s| s.issuer_der == issuer.raw && s.serial_der == serial.raw)
        });
        (format!("serial {}", hsm::hex(serial.body)), cert)
    };
    let mut result = SignerResult {
        cert: cert.cloned(),
        signer_id,
        digest: None,
        algorithm: None,
        signing_time: None,
        valid: false,
        reason: None,
        announces_gcm: None,
    };
    let fail = |mut r: SignerResult, why: String| {
        r.reason = Some(why);
        Ok(r)
    };

    let digest_oid = first_oid(digest_alg)?;
    let Some(hash) = oid::hash(digest_oid) else {
        return fail(
            result,
            format!("unknown digest algorithm {}", oid::dotted(digest_oid)),
        );
    };
    result.digest = Some(hash);
    let algorithm = match signature_algorithm(sig_alg, hash) {
        Ok(a) => a,
        Err(why) => return fail(result, why),
    };
    result.algorithm = Some(algorithm);
    let Some(content_digest) = digests
        .iter()
        .find(|(h, _)| *h == hash)
        .map(|(_, d)| d.clone())
    else {
        return fail(
            result,
            "its digest algorithm is not among those the SignedData announces".into(),
        );
    };

    // What the signature covers: the DER of the signed attributes as a SET OF, or (without
    // signed attributes) the content digest itself.
    let signed_digest = match signed_attrs {
        Some(attrs) => {
            let mut der = ber::to_der(attrs.raw)?;
            der[0] = 0x31;
            let mut message_digest = None;
            let mut attr_content_type = None;
            for a in attrs.children() {
                let a = a?;
                let fields = a.items()?;
                let [kind, values, ..] = fields.as_slice() else {
                    return Err(malformed("signed attribute"));
                };
                let value = values.children().next().transpose()?;
                match (kind.oid()?, value) {
                    (o, Some(v)) if o == oid::MESSAGE_DIGEST => {
                        message_digest = Some(v.octets()?.into_owned());
                    }
                    (o, Some(v)) if o == oid::CONTENT_TYPE => {
                        attr_content_type = Some(v.oid()?.to_vec());
                    }
                    (o, Some(v)) if o == oid::SIGNING_TIME => {
                        result.signing_time = Some(rfc3339(v.number, v.body));
                    }
                    (o, Some(v)) if o == oid::SMIME_CAPABILITIES => {
                        // SEQUENCE OF SEQUENCE { capabilityID, parameters OPTIONAL }.
                        let mut gcm = false;
                        for cap in v.children() {
                            let id = cap?.children().next().transpose()?;
                            if let Some(id) = id
                                && let Ok(o) = id.oid()
                            {
                                gcm |= o == oid::AES128_GCM
                                    || o == oid::AES192_GCM
                                    || o == oid::AES256_GCM;
                            }
                        }
                        result.announces_gcm = Some(gcm);
                    }
                    _ => {}
                }
            }
            if attr_content_type.as_deref() != Some(content_type) {
                return fail(result, "the contentType attribute does not match".into());
            }
            match message_digest {
                Some(d) if d == content_digest => {}
                Some(_) => {
                    return fail(
                        result,
                        "the content was changed after signing (message digest mismatch)".into(),
                    );
                }
                None => return fail(result, "no messageDigest attribute".into()),
            }
            hash.digest(&der)
        }
        None => {
            if content_type != oid::DATA {
                return fail(result, "signed attributes are missing".into());
            }
            content_digest
        }
    };
    let Some(cert) = cert else {
        return fail(
            result,
            "the signer's certificate is not in the message".into(),
        );
    };
    let spki = match spki_of(cert) {
        Ok(s) => s,
        Err(e) => return fail(result, format!("signer certificate: {e}")),
    };
    match hsm::public::verify_digest(&spki, algorithm, &signed_digest, &signature) {
        Ok(()) => {
            result.valid = true;
            Ok(result)
        }
        Err(hsm::Error::BadSignature) => fail(result, "the signature does not verify".into()),
        Err(e) => fail(result, e.to_string()),
    }
}

fn first_oid<'a>(alg: &Tlv<'a>) -> Result<&'a [u8]> {
    Ok(alg
        .items()?
        .first()
        .ok_or_else(|| malformed("empty AlgorithmIdentifier"))?
        .oid()?)
}

/// The signature algorithm, from the SignerInfo's signatureAlgorithm and digest.
fn signature_algorithm(alg: &Tlv<'_>, hash: Hash) -> std::result::Result<SignAlgorithm, String> {
    let o = first_oid(alg).map_err(|e| e.to_string())?;
    let rsa_with = |h: Hash| {
        if h == hash {
            Ok(SignAlgorithm::RsaPkcs1(h))
        } else {
            Err("the signature and digest algorithms disagree".to_string())
        }
    };
    match o {
        x if x == oid::RSA_ENCRYPTION => Ok(SignAlgorithm::RsaPkcs1(hash)),
        x if x == oid::SHA1_WITH_RSA => rsa_with(Hash::Sha1),
        x if x == oid::SHA256_WITH_RSA => rsa_with(Hash::Sha256),
        x if x == oid::SHA384_WITH_RSA => rsa_with(Hash::Sha384),
        x if x == oid::SHA512_WITH_RSA => rsa_with(Hash::Sha512),
        x if x == oid::RSASSA_PSS => {
            check_pss_params(alg, hash)?;
            Ok(SignAlgorithm::RsaPss(hash))
        }
        x if x == oid::ECDSA_SHA1
            || x == oid::ECDSA_SHA256
            || x == oid::ECDSA_SHA384
            || x == oid::ECDSA_SHA512 =>
        {
            Ok(SignAlgorithm::Ecdsa(hash))
        }
        x if x == oid::EC_PUBLIC_KEY => Ok(SignAlgorithm::Ecdsa(hash)),
        x => Err(format!("unknown signature algorithm {}", oid::dotted(x))),
    }
}

/// RSASSA-PSS-params (RFC 4055): the hash and MGF1 hash must be the SignerInfo's digest, and
/// the salt as long as the hash (what RFC 8551 senders use; the only form the verifier does).
fn check_pss_params(alg: &Tlv<'_>, hash: Hash) -> std::result::Result<(), String> {
    let bad = |e: ber::BerError| format!("RSA-PSS parameters: {e}");
    let items = alg.items().map_err(bad)?;
    let (mut p_hash, mut p_mgf, mut salt) = (Hash::Sha1, Hash::Sha1, 20u64);
    if let Some(params) = items.get(1).filter(|p| p.is(tag::SEQUENCE)) {
        for p in params.children() {
            let p = p.map_err(bad)?;
            let inner = p.inner().map_err(bad)?;
            match p.number {
                0 => {
                    let o = first_oid(&inner).map_err(|e| e.to_string())?;
                    p_hash = oid::hash(o).ok_or("RSA-PSS with an unknown hash")?;
                }
                1 => {
                    let mgf = inner.items().map_err(bad)?;
                    let h = mgf.get(1).ok_or("RSA-PSS MGF without a hash")?;
                    let o = first_oid(h).map_err(|e| e.to_string())?;
                    p_mgf = oid::hash(o).ok_or("RSA-PSS MGF with an unknown hash")?;
                }
                2 => salt = inner.uint().map_err(bad)?,
                _ => {}
            }
        }
    }
    if p_hash != hash || p_mgf != hash {
        return Err("RSA-PSS parameters name another hash than the digest algorithm".into());
    }
    if salt != hash.output_len() as u64 {
        return Err(format!(
            "RSA-PSS with a {salt}-byte salt is not supported (only salt = hash length, {} bytes)",
            hash.output_len()
        ));
    }
    Ok(())
}

/// The SubjectPublicKeyInfo (DER) of a certificate.
pub(crate) fn spki_of(cert: &[u8]) -> Result<Vec<u8>> {
    use der::{Decode, Encode};
    let c = x509_cert::Certificate::from_der(cert)
        .map_err(|e| SmimeError::Certificate(format!("does not parse: {e}")))?;
    c.tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| SmimeError::Certificate(e.to_string()))
}

/// UTCTime (tag 23, `YYMMDDHHMMSSZ`) or GeneralizedTime (tag 24, `YYYYMMDDHHMMSSZ`) as
/// RFC 3339; the text as written when it is neither.
fn rfc3339(tag: u8, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body).into_owned();
    let digits = text.strip_suffix('Z').unwrap_or("");
    let full = match (tag, digits.len()) {
        (23, 12) if digits.bytes().all(|b| b.is_ascii_digit()) => {
            let yy: u32 = digits[..2].parse().unwrap_or(0);
            format!("{}{digits}", if yy < 50 { "20" } else { "19" })
        }
        (24, 14) if digits.bytes().all(|b| b.is_ascii_digit()) => digits.to_string(),
        _ => return text,
    };
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn signing_times() {
        assert_eq!(super::rfc3339(23, b"260126144007Z"), "2026-01-26T14:40:07Z");
        assert_eq!(
            super::rfc3339(24, b"20500101000000Z"),
            "2050-01-01T00:00:00Z"
        );
        assert_eq!(super::rfc3339(23, b"garbage"), "garbage");
    }
}
