//! Private keys on their way into a token, and certificate summaries.
//!
//! A [`PrivateKey`] only exists between reading a PKCS#12 (or generating a key for the software
//! token) and storing it in a token; its bytes are zeroed on drop.

use aws_lc_rs::encoding::{AsBigEndian, AsDer, EcPrivateKeyBin};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair};
use der::{Decode, Encode};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// The kind and size of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    EcP256,
    EcP384,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA {bits}"),
            KeyKind::EcP256 => f.write_str("EC P-256"),
            KeyKind::EcP384 => f.write_str("EC P-384"),
        }
    }
}

impl KeyKind {
    /// DER of the named-curve OID (CKA_EC_PARAMS), for EC keys.
    pub(crate) fn ec_params(self) -> Option<Vec<u8>> {
        let oid = match self {
            KeyKind::EcP256 => OID_P256,
            KeyKind::EcP384 => OID_P384,
            KeyKind::Rsa { .. } => return None,
        };
        let oid: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new(oid).ok()?;
        oid.to_der().ok()
    }

    pub(crate) fn from_ec_params(params: &[u8]) -> Option<Self> {
        let oid: der::asn1::ObjectIdentifier =
            der::asn1::ObjectIdentifier::from_der(params).ok()?;
        match oid.to_string().as_str() {
            OID_P256 => Some(KeyKind::EcP256),
            OID_P384 => Some(KeyKind::EcP384),
            _ => None,
        }
    }

    pub(crate) fn ecdh_alg(self) -> Option<&'static aws_lc_rs::agreement::Algorithm> {
        match self {
            KeyKind::EcP256 => Some(&aws_lc_rs::agreement::ECDH_P256),
            KeyKind::EcP384 => Some(&aws_lc_rs::agreement::ECDH_P384),
            KeyKind::Rsa { .. } => None,
        }
    }

    pub(crate) fn ecdsa_alg(self) -> Option<&'static aws_lc_rs::signature::EcdsaSigningAlgorithm> {
        match self {
            KeyKind::EcP256 => Some(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING),
            KeyKind::EcP384 => Some(&aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1_SIGNING),
            KeyKind::Rsa { .. } => None,
        }
    }
}

/// A private key in PKCS#8 DER, with what we derived from it.
pub(crate) struct PrivateKey {
    pkcs8: Zeroizing<Vec<u8>>,
    kind: KeyKind,
    spki: Vec<u8>,
}

/// RSA components for C_CreateObject.
pub(crate) struct RsaParts {
    pub modulus: Vec<u8>,
    pub public_exponent: Vec<u8>,
    pub private_exponent: Zeroizing<Vec<u8>>,
    pub prime1: Zeroizing<Vec<u8>>,
    pub prime2: Zeroizing<Vec<u8>>,
    pub exponent1: Zeroizing<Vec<u8>>,
    pub exponent2: Zeroizing<Vec<u8>>,
    pub coefficient: Zeroizing<Vec<u8>>,
}

impl PrivateKey {
    pub(crate) fn from_pkcs8(pkcs8: Zeroizing<Vec<u8>>) -> Result<Self> {
        let info = pkcs8::PrivateKeyInfoRef::try_from(pkcs8.as_slice())
            .map_err(|e| Error::KeyMaterial(format!("not a PKCS#8 private key: {e}")))?;
        let alg = info.algorithm.oid.to_string();
        let (kind, spki) = match alg.as_str() {
            OID_RSA => {
                let kp = aws_lc_rs::rsa::KeyPair::from_pkcs8(&pkcs8)
                    .map_err(|e| Error::KeyMaterial(format!("RSA key rejected: {e}")))?;
                let spki = kp
                    .public_key()
                    .as_der()
                    .map_err(|_| Error::Crypto("RSA public key encoding"))?
                    .as_ref()
                    .to_vec();
                (
                    KeyKind::Rsa {
                        bits: kp.public_modulus_len() * 8,
                    },
                    spki,
                )
            }
            OID_EC => {
                let params = info
                    .algorithm
                    .parameters
                    .ok_or_else(|| Error::KeyMaterial("EC key without a curve".into()))?;
                let kind = KeyKind::from_ec_params(
                    &params
                        .to_der()
                        .map_err(|e| Error::KeyMaterial(e.to_string()))?,
                )
                .ok_or_else(|| Error::KeyMaterial("EC curve other than P-256 or P-384".into()))?;
                let kp = EcdsaKeyPair::from_pkcs8(
                    kind.ecdsa_alg().ok_or(Error::Crypto("curve"))?,
                    &pkcs8,
                )
                .map_err(|e| Error::KeyMaterial(format!("EC key rejected: {e}")))?;
                let spki = kp
                    .public_key()
                    .as_der()
                    .map_err(|_| Error::Crypto("EC public key encoding"))?
                    .as_ref()
                    .to_vec();
                (kind, spki)
            }
            other => {
                return Err(Error::KeyMaterial(format!(
                    "unsupported key algorithm {other} (RSA and EC P-256/P-384 are supported)"
                )));
            }
        };
        Ok(PrivateKey { pkcs8, kind, spki })
    }

    pub(crate) fn kind(&self) -> KeyKind {
        self.kind
    }

    pub(crate) fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub(crate) fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// Fails unless the certificate carries this key's public key.
    pub(crate) fn check_matches_certificate(&self, cert_der: &[u8]) -> Result<()> {
        let cert = x509_cert::Certificate::from_der(cert_der)
            .map_err(|e| Error::KeyMaterial(format!("certificate does not parse: {e}")))?;
        let cert_spki = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| Error::KeyMaterial(e.to_string()))?;
        if cert_spki != self.spki {
            return Err(Error::KeyMaterial(
                "the certificate does not belong to the private key".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn rsa_parts(&self) -> Result<RsaParts> {
        let info = pkcs8::PrivateKeyInfoRef::try_from(self.pkcs8.as_slice())
            .map_err(|e| Error::KeyMaterial(e.to_string()))?;
        let k =
            pkcs1::RsaPrivateKey::<der::asn1::UintRef<'_>>::try_from(info.private_key.as_bytes())
                .map_err(|e| Error::KeyMaterial(format!("RSA private key: {e}")))?;
        let z = |u: der::asn1::UintRef<'_>| Zeroizing::new(u.as_bytes().to_vec());
        Ok(RsaParts {
            modulus: k.modulus.as_bytes().to_vec(),
            public_exponent: k.public_exponent.as_bytes().to_vec(),
            private_exponent: z(k.private_exponent),
            prime1: z(k.prime1),
            prime2: z(k.prime2),
            exponent1: z(k.exponent1),
            exponent2: z(k.exponent2),
            coefficient: z(k.coefficient),
        })
    }

    /// EC private scalar and public point (uncompressed) for C_CreateObject.
    pub(crate) fn ec_parts(&self) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>)> {
        let alg = self
            .kind
            .ecdsa_alg()
            .ok_or(Error::Invalid("not an EC key".into()))?;
        let kp = EcdsaKeyPair::from_pkcs8(alg, &self.pkcs8)
            .map_err(|e| Error::KeyMaterial(e.to_string()))?;
        let scalar: EcPrivateKeyBin<'_> = kp
            .private_key()
            .as_be_bytes()
            .map_err(|_| Error::Crypto("EC private key encoding"))?;
        Ok((
            Zeroizing::new(scalar.as_ref().to_vec()),
            kp.public_key().as_ref().to_vec(),
        ))
    }
}

/// The CKA_ID we give a key: the subject key identifier of its certificate when there is one,
/// else the SHA-1 of the public key bits (RFC 5280 §4.2.1.2 method 1), so that CMS
/// RecipientIdentifiers of either kind lead to the key.
pub(crate) fn key_id(spki_der: &[u8], cert_der: Option<&[u8]>) -> Vec<u8> {
    if let Some(ski) = cert_der
        .and_then(|c| cert_summary(c).ok())
        .and_then(|s| s.subject_key_id)
    {
        return ski;
    }
    spki_key_id(spki_der).unwrap_or_else(|_| crate::Hash::Sha1.digest(spki_der))
}

/// The key identifier of a public key (DER SubjectPublicKeyInfo): SHA-1 of the
/// subjectPublicKey bits (RFC 5280 §4.2.1.2 method 1), as certificates name keys.
pub fn spki_key_id(spki_der: &[u8]) -> Result<Vec<u8>> {
    let s = spki::SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|e| Error::KeyMaterial(format!("public key does not parse: {e}")))?;
    Ok(crate::Hash::Sha1.digest(s.subject_public_key.raw_bytes()))
}

/// What an administrator wants to see of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    /// Hex, as OpenSSL prints it.
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    pub subject_key_id: Option<Vec<u8>>,
    /// DER encodings, as PKCS#11 CKA_SUBJECT / CKA_ISSUER / CKA_SERIAL_NUMBER want them.
    pub subject_der: Vec<u8>,
    pub issuer_der: Vec<u8>,
    pub serial_der: Vec<u8>,
}

/// Checks that `chain` (DER, end entity first) parses and that its first certificate is for
/// the public key `spki` (DER SubjectPublicKeyInfo).
pub(crate) fn check_chain_for(spki_der: &[u8], chain: &[Vec<u8>]) -> Result<()> {
    let leaf = chain
        .first()
        .ok_or_else(|| Error::Invalid("no certificate given".into()))?;
    for c in chain {
        cert_summary(c)?;
    }
    let cert = x509_cert::Certificate::from_der(leaf)
        .map_err(|e| Error::KeyMaterial(format!("certificate does not parse: {e}")))?;
    let cert_spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| Error::KeyMaterial(e.to_string()))?;
    if cert_spki != spki_der {
        return Err(Error::KeyMaterial(
            "the certificate is not for this key (its public key differs)".into(),
        ));
    }
    Ok(())
}

/// Summarises a DER certificate.
pub fn cert_summary(der_bytes: &[u8]) -> Result<CertSummary> {
    let cert = x509_cert::Certificate::from_der(der_bytes)
        .map_err(|e| Error::KeyMaterial(format!("certificate does not parse: {e}")))?;
    let tbs = cert.tbs_certificate();
    let enc = |r: der::Result<Vec<u8>>| r.map_err(|e| Error::KeyMaterial(e.to_string()));
    let ski = tbs
        .get_extension::<x509_cert::ext::pkix::SubjectKeyIdentifier>()
        .ok()
        .flatten()
        .map(|(_, s)| s.0.as_bytes().to_vec());
    Ok(CertSummary {
        subject: tbs.subject().to_string(),
        issuer: tbs.issuer().to_string(),
        serial: crate::hex(tbs.serial_number().as_bytes()),
        not_before: tbs.validity().not_before.to_string(),
        not_after: tbs.validity().not_after.to_string(),
        subject_key_id: ski,
        subject_der: enc(tbs.subject().to_der())?,
        issuer_der: enc(tbs.issuer().to_der())?,
        serial_der: enc(tbs.serial_number().to_der())?,
    })
}
