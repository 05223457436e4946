//! X.509 certificates the gateway makes itself: the built-in certificate authority that
//! issues S/MIME certificates for internal senders (keys generated in the token, signed by the
//! CA's key in the token), and the self-signed certificate for STARTTLS on first start.
//!
//! Certificates are encoded here by hand from the engine's DER helpers: an RFC 5280 v3
//! TBSCertificate with the extensions an S/MIME or TLS client checks (basic constraints, key
//! usage, extended key usage, subject alternative name, key identifiers).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hsm::{Hash, KeyRef, SignAlgorithm, Token};

use crate::smime::asn1::{self, algorithm, explicit, oid, seq, set_of, tlv};
use crate::smime::oid as ids;

/// The token label of the built-in CA's key.
pub const CA_LABEL: &str = "smimegw-ca";

const CN: &[u8] = &[0x55, 0x04, 0x03]; // 2.5.4.3
const O: &[u8] = &[0x55, 0x04, 0x0a]; // 2.5.4.10
const SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e]; // 2.5.29.14
const KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f]; // 2.5.29.15
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11]; // 2.5.29.17
const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13]; // 2.5.29.19
const AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1d, 0x23]; // 2.5.29.35
const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25]; // 2.5.29.37
const EMAIL_PROTECTION: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04]; // 1.3.6.1.5.5.7.3.4
const SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01]; // 1.3.6.1.5.5.7.3.1

/// What went wrong making a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("key token: {0}")]
    Token(#[from] hsm::Error),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, CaError>;

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A certificate authority (keyCertSign, cRLSign; CA:true).
    Ca,
    /// An S/MIME end entity: digitalSignature, keyEncipherment; emailProtection.
    Smime,
    /// A TLS server: digitalSignature; serverAuth.
    TlsServer,
}

/// The contents of a certificate to issue.
#[derive(Debug, Clone)]
pub struct Spec {
    pub common_name: String,
    pub organization: Option<String>,
    /// An rfc822Name in the subject alternative name.
    pub email: Option<String>,
    /// dNSNames in the subject alternative name.
    pub dns: Vec<String>,
    pub usage: Usage,
    /// Validity, in days from now (it starts an hour ago, for clocks that lag).
    pub days: u64,
    /// The subject's public key, DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
}

/// Who signs: the issuer's name and key identifier (the subject's own for a self-signed
/// certificate), and a function that signs the TBSCertificate.
struct Issuer<'a> {
    name: Vec<u8>,
    key_id: Vec<u8>,
    /// The signatureAlgorithm AlgorithmIdentifier.
    algorithm: Vec<u8>,
    sign: &'a dyn Fn(&[u8]) -> Result<Vec<u8>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A Name with a CN and optionally an O, as UTF8Strings.
fn name(common_name: &str, organization: Option<&str>) -> Vec<u8> {
    let rdn = |t: &[u8], v: &str| set_of(&[seq(&[&oid(t), &tlv(0x0c, v.as_bytes())])]);
    let mut rdns = Vec::new();
    if let Some(o) = organization {
        rdns.extend(rdn(O, o));
    }
    rdns.extend(rdn(CN, common_name));
    tlv(0x30, &rdns)
}

/// A positive INTEGER of 16 random bytes.
fn serial() -> Result<Vec<u8>> {
    let mut b = hsm::random(16)?.to_vec();
    b[0] &= 0x7f;
    b[0] |= 0x01;
    Ok(tlv(0x02, &b))
}

fn extension(id: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    if critical {
        seq(&[&oid(id), &tlv(0x01, &[0xff]), &asn1::octets(value)])
    } else {
        seq(&[&oid(id), &asn1::octets(value)])
    }
}

/// A KeyUsage BIT STRING from bit numbers (0 = digitalSignature).
fn key_usage(bits: &[u8]) -> Vec<u8> {
    let mut v: u16 = 0;
    for b in bits {
        v |= 0x8000 >> b;
    }
    let [hi, lo] = v.to_be_bytes();
    let (bytes, last) = if lo == 0 {
        (vec![hi], hi)
    } else {
        (vec![hi, lo], lo)
    };
    let unused = last.trailing_zeros().min(7) as u8;
    let mut content = vec![unused];
    content.extend(bytes);
    tlv(0x03, &content)
}

fn build(spec: &Spec, subject: &[u8], issuer: &Issuer<'_>) -> Result<Vec<u8>> {
    let start = now().saturating_sub(3600);
    let end = start + 3600 + spec.days * 86_400;
    let mut exts = Vec::new();
    let (bc, ku, eku): (Vec<u8>, Vec<u8>, Option<&[u8]>) = match spec.usage {
        Usage::Ca => (seq(&[&tlv(0x01, &[0xff])]), key_usage(&[5, 6]), None),
        Usage::Smime => (seq(&[]), key_usage(&[0, 2]), Some(EMAIL_PROTECTION)),
        Usage::TlsServer => (seq(&[]), key_usage(&[0]), Some(SERVER_AUTH)),
    };
    exts.push(extension(BASIC_CONSTRAINTS, true, &bc));
    exts.push(extension(KEY_USAGE, true, &ku));
    if let Some(e) = eku {
        exts.push(extension(EXT_KEY_USAGE, false, &seq(&[&oid(e)])));
    }
    let mut names = Vec::new();
    if let Some(email) = &spec.email {
        names.extend(tlv(0x81, email.as_bytes()));
    }
    for d in &spec.dns {
        names.extend(tlv(0x82, d.as_bytes()));
    }
    if !names.is_empty() {
        exts.push(extension(SUBJECT_ALT_NAME, false, &tlv(0x30, &names)));
    }
    let own_id = hsm::spki_key_id(&spec.spki)?;
    exts.push(extension(SUBJECT_KEY_ID, false, &asn1::octets(&own_id)));
    exts.push(extension(
        AUTHORITY_KEY_ID,
        false,
        &seq(&[&tlv(0x80, &issuer.key_id)]),
    ));
    let ext_refs: Vec<&[u8]> = exts.iter().map(Vec::as_slice).collect();
    let tbs = seq(&[
        &explicit(0, &asn1::uint(2)),
        &serial()?,
        &issuer.algorithm,
        &issuer.name,
        &seq(&[&asn1::time(start), &asn1::time(end)]),
        subject,
        &spec.spki,
        &explicit(3, &seq(&ext_refs)),
    ]);
    let signature = (issuer.sign)(&tbs)?;
    let mut bits = vec![0u8];
    bits.extend(signature);
    Ok(seq(&[&tbs, &issuer.algorithm, &tlv(0x03, &bits)]))
}

/// How a key in the token signs certificates: RSA PKCS#1 v1.5 or ECDSA, SHA-256; and the
/// signatureAlgorithm that says so.
fn signature_algorithm(spki: &[u8]) -> Result<(SignAlgorithm, Vec<u8>)> {
    Ok(match hsm::public::public_key_kind(spki)? {
        hsm::KeyKind::Rsa { .. } => (
            SignAlgorithm::RsaPkcs1(Hash::Sha256),
            algorithm(ids::SHA256_WITH_RSA, Some(&asn1::null())),
        ),
        _ => (
            SignAlgorithm::Ecdsa(Hash::Sha256),
            algorithm(ids::ECDSA_SHA256, None),
        ),
    })
}

/// Signs a TBSCertificate with the key `label` in the token.
fn token_sign(token: &dyn Token, label: &str, alg: SignAlgorithm, tbs: &[u8]) -> Result<Vec<u8>> {
    Ok(token.sign(&KeyRef::label(label), alg, &Hash::Sha256.digest(tbs))?)
}

/// The built-in certificate authority: its key lives in the token under [`CA_LABEL`].
#[derive(Debug, Clone)]
pub struct Ca {
    /// The CA certificate, DER.
    pub cert: Vec<u8>,
    subject: Vec<u8>,
    key_id: Vec<u8>,
}

impl Ca {
    /// The CA whose key is in the token, or a new one (RSA 3072, ten years) named after
    /// `organization`. The certificate is also written to `pem_path` for clients to trust.
    pub fn open_or_create(token: &dyn Token, organization: &str, pem_path: &Path) -> Result<Ca> {
        let existing = match token.certificates(CA_LABEL) {
            Ok(c) => c.into_iter().next(),
            Err(hsm::Error::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let cert = match existing {
            Some(c) => c,
            None => {
                if token.list()?.iter().all(|o| o.label != CA_LABEL) {
                    token.generate_rsa(CA_LABEL, 3072)?;
                }
                let spki = token.public_key(&KeyRef::label(CA_LABEL))?;
                let (alg, algorithm) = signature_algorithm(&spki)?;
                let sign = |tbs: &[u8]| token_sign(token, CA_LABEL, alg, tbs);
                let subject = name(&format!("{organization} S/MIME CA"), Some(organization));
                let spec = Spec {
                    common_name: format!("{organization} S/MIME CA"),
                    organization: Some(organization.to_string()),
                    email: None,
                    dns: Vec::new(),
                    usage: Usage::Ca,
                    days: 3650,
                    spki: spki.clone(),
                };
                let issuer = Issuer {
                    name: subject.clone(),
                    key_id: hsm::spki_key_id(&spki)?,
                    algorithm,
                    sign: &sign,
                };
                let cert = build(&spec, &subject, &issuer)?;
                token.set_certificates(CA_LABEL, std::slice::from_ref(&cert))?;
                tracing::info!("created the built-in certificate authority");
                cert
            }
        };
        let summary = hsm::cert_summary(&cert)?;
        let ca = Ca {
            key_id: summary.subject_key_id.clone().map_or_else(
                || hsm::spki_key_id(&token.public_key(&KeyRef::label(CA_LABEL))?),
                Ok,
            )?,
            subject: summary.subject_der,
            cert,
        };
        write_pem(pem_path, &[&ca.cert])?;
        Ok(ca)
    }

    /// Issues an S/MIME certificate (one year) for `address`: a new RSA 2048 key is made in
    /// the token under the label `address`, and the certificate and this CA's are stored
    /// with it. Returns the chain, end entity first.
    pub fn issue_smime(&self, token: &dyn Token, address: &str) -> Result<Vec<Vec<u8>>> {
        if token.list()?.iter().all(|o| o.label != address) {
            token.generate_rsa(address, 2048)?;
        }
        let spki = token.public_key(&KeyRef::label(address))?;
        let ca_spki = token.public_key(&KeyRef::label(CA_LABEL))?;
        let (alg, algorithm) = signature_algorithm(&ca_spki)?;
        let sign = |tbs: &[u8]| token_sign(token, CA_LABEL, alg, tbs);
        let spec = Spec {
            common_name: address.to_string(),
            organization: None,
            email: Some(address.to_string()),
            dns: Vec::new(),
            usage: Usage::Smime,
            days: 365,
            spki,
        };
        let issuer = Issuer {
            name: self.subject.clone(),
            key_id: self.key_id.clone(),
            algorithm,
            sign: &sign,
        };
        let leaf = build(&spec, &name(address, None), &issuer)?;
        let chain = vec![leaf, self.cert.clone()];
        token.set_certificates(address, &chain)?;
        tracing::info!(address, "issued an S/MIME certificate");
        Ok(chain)
    }
}

/// A self-signed TLS server certificate for `hostname` with a new P-256 key made on the host
/// (TLS keys are the listener's, not the token's). Returns (certificate, PKCS#8 key), DER.
pub fn tls_self_signed(hostname: &str) -> Result<(Vec<u8>, zeroize::Zeroizing<Vec<u8>>)> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|_| CaError::Certificate("P-256 key generation failed".into()))?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
        .map_err(|_| CaError::Certificate("P-256 key does not load".into()))?;
    // SubjectPublicKeyInfo: id-ecPublicKey with prime256v1, and the uncompressed point.
    let prime256v1 = oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]);
    let mut point = vec![0u8];
    point.extend_from_slice(key.public_key().as_ref());
    let spki = seq(&[
        &algorithm(ids::EC_PUBLIC_KEY, Some(&prime256v1)),
        &tlv(0x03, &point),
    ]);
    let subject = name(hostname, Some("smimegw"));
    let sign = |tbs: &[u8]| -> Result<Vec<u8>> {
        key.sign(&rng, tbs)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| CaError::Certificate("signing failed".into()))
    };
    let spec = Spec {
        common_name: hostname.to_string(),
        organization: Some("smimegw".into()),
        email: None,
        dns: vec![hostname.to_string()],
        usage: Usage::TlsServer,
        days: 3650,
        spki: spki.clone(),
    };
    let issuer = Issuer {
        name: subject.clone(),
        key_id: hsm::spki_key_id(&spki)?,
        algorithm: algorithm(ids::ECDSA_SHA256, None),
        sign: &sign,
    };
    let cert = build(&spec, &subject, &issuer)?;
    Ok((cert, zeroize::Zeroizing::new(pkcs8.as_ref().to_vec())))
}

/// PEM text of DER blocks under `label`.
pub fn pem(label: &str, blocks: &[&[u8]]) -> Result<String> {
    let mut out = String::new();
    for b in blocks {
        out.push_str(
            &der::pem::encode_string(label, der::pem::LineEnding::LF, b)
                .map_err(|e| CaError::Certificate(format!("PEM encoding: {e}")))?,
        );
    }
    Ok(out)
}

/// Why the bytes of a certificate file hold no certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertFileError {
    /// A PEM certificate block does not decode.
    Damaged,
    /// Text without a PEM certificate block.
    NoCertificate,
}

/// Every certificate in the bytes of a file: the PEM `CERTIFICATE` blocks of a text file (other
/// blocks skipped), or the file itself as one DER certificate.
pub fn parse_certificates(bytes: &[u8]) -> std::result::Result<Vec<Vec<u8>>, CertFileError> {
    if !(bytes.starts_with(b"-----") || bytes.iter().take(64).all(u8::is_ascii)) {
        return Ok(vec![bytes.to_vec()]);
    }
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(bytes);
    let mut ders = Vec::new();
    let mut rest: &str = &text;
    while let Some(start) = rest.find(BEGIN) {
        let block = &rest[start..];
        let end = block.find(END).ok_or(CertFileError::Damaged)? + END.len();
        let (_, der) =
            der::pem::decode_vec(&block.as_bytes()[..end]).map_err(|_| CertFileError::Damaged)?;
        ders.push(der);
        rest = &block[end..];
    }
    if ders.is_empty() {
        return Err(CertFileError::NoCertificate);
    }
    Ok(ders)
}

/// Writes certificates as PEM to `path` (aside, then renamed).
pub fn write_pem(path: &Path, certs: &[&[u8]]) -> Result<()> {
    let io = |source| CaError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pem("CERTIFICATE", certs)?).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
