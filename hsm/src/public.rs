//! Public-key operations, done on the host: verifying a signature and encrypting a content key
//! to a recipient. Nothing secret is involved, so no token is needed; the selftest and the
//! S/MIME engine use these to check what a token produced and to address recipients.
//!
//! Keys come as SubjectPublicKeyInfo DER (what [`crate::Token::public_key`] returns and what
//! a certificate carries).

use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OAEP_SHA384_MGF1SHA384, OAEP_SHA512_MGF1SHA512,
    OaepPublicEncryptingKey, Pkcs1PublicEncryptingKey, PublicEncryptingKey,
};
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use der::Decode;

use crate::error::{Error, Result};
use crate::keymat::KeyKind;
use crate::{Hash, KeyTransport, SignAlgorithm};

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";

/// What kind of key a SubjectPublicKeyInfo holds (RSA with its size, or an EC curve).
pub fn public_key_kind(spki_der: &[u8]) -> Result<KeyKind> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|e| Error::KeyMaterial(format!("public key: {e}")))?;
    match spki.algorithm.oid.to_string().as_str() {
        OID_RSA => {
            let key = PublicEncryptingKey::from_der(spki_der)
                .map_err(|_| Error::KeyMaterial("RSA public key does not parse".into()))?;
            Ok(KeyKind::Rsa {
                bits: key.key_size_bits(),
            })
        }
        OID_EC => {
            let params = spki
                .algorithm
                .parameters
                .ok_or_else(|| Error::KeyMaterial("EC public key without a curve".into()))?;
            let params = der::Encode::to_der(&params)
                .map_err(|e| Error::KeyMaterial(format!("EC curve: {e}")))?;
            KeyKind::from_ec_params(&params)
                .ok_or_else(|| Error::Unsupported("EC curves other than P-256 and P-384".into()))
        }
        other => Err(Error::Unsupported(format!("public key algorithm {other}"))),
    }
}

/// Checks `signature` over `digest` (the hash of the signed bytes, made with `alg.hash()`).
/// RSA keys from 1024 bits are accepted where aws-lc offers it (old mail); callers set their own
/// floor by looking at [`public_key_kind`].
pub fn verify_digest(
    spki_der: &[u8],
    alg: SignAlgorithm,
    digest: &[u8],
    signature: &[u8],
) -> Result<()> {
    let hash = alg.hash();
    if digest.len() != hash.output_len() {
        return Err(Error::Invalid(format!(
            "a {}-byte digest for {}",
            digest.len(),
            hash.name()
        )));
    }
    let kind = public_key_kind(spki_der)?;
    let verifier = verification_algorithm(kind, alg)?;
    let digest = aws_lc_rs::digest::Digest::import_less_safe(digest, hash.aws())
        .map_err(|_| Error::Invalid("digest".into()))?;
    UnparsedPublicKey::new(verifier, spki_der)
        .verify_digest(&digest, signature)
        .map_err(|_| Error::BadSignature)
}

#[allow(deprecated)]
fn verification_algorithm(
    kind: KeyKind,
    alg: SignAlgorithm,
) -> Result<&'static dyn VerificationAlgorithm> {
    use signature as s;
    let unsupported = || Error::Unsupported(format!("{alg} with a {kind} key"));
    let small = matches!(kind, KeyKind::Rsa { bits } if bits < 2048);
    Ok(match (kind, alg) {
        (KeyKind::Rsa { .. }, SignAlgorithm::RsaPkcs1(h)) => match (h, small) {
            (Hash::Sha1, true) => &s::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
            (Hash::Sha1, false) => &s::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            (Hash::Sha256, true) => &s::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            (Hash::Sha256, false) => &s::RSA_PKCS1_2048_8192_SHA256,
            (Hash::Sha384, false) => &s::RSA_PKCS1_2048_8192_SHA384,
            (Hash::Sha512, true) => &s::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
            (Hash::Sha512, false) => &s::RSA_PKCS1_2048_8192_SHA512,
            _ => return Err(unsupported()),
        },
        (KeyKind::Rsa { .. }, SignAlgorithm::RsaPss(h)) if !small => match h {
            Hash::Sha256 => &s::RSA_PSS_2048_8192_SHA256,
            Hash::Sha384 => &s::RSA_PSS_2048_8192_SHA384,
            Hash::Sha512 => &s::RSA_PSS_2048_8192_SHA512,
            Hash::Sha1 => return Err(unsupported()),
        },
        (KeyKind::EcP256, SignAlgorithm::Ecdsa(h)) => match h {
            Hash::Sha1 => &s::ECDSA_P256_SHA1_ASN1,
            Hash::Sha256 => &s::ECDSA_P256_SHA256_ASN1,
            Hash::Sha384 => &s::ECDSA_P256_SHA384_ASN1,
            Hash::Sha512 => &s::ECDSA_P256_SHA512_ASN1,
        },
        (KeyKind::EcP384, SignAlgorithm::Ecdsa(h)) => match h {
            Hash::Sha256 => &s::ECDSA_P384_SHA256_ASN1,
            Hash::Sha384 => &s::ECDSA_P384_SHA384_ASN1,
            Hash::Sha512 => &s::ECDSA_P384_SHA512_ASN1,
            Hash::Sha1 => return Err(unsupported()),
        },
        _ => return Err(unsupported()),
    })
}

/// Encrypts a content-encryption key to an RSA public key (CMS key transport). OAEP needs the
/// same hash for OAEP and MGF1, which is what RFC 8017 recommends and every client writes.
pub fn encrypt_key(spki_der: &[u8], transport: &KeyTransport, key: &[u8]) -> Result<Vec<u8>> {
    let public = PublicEncryptingKey::from_der(spki_der)
        .map_err(|_| Error::KeyMaterial("not an RSA public key".into()))?;
    let mut out = vec![0u8; public.key_size_bytes()];
    let failed = |_| Error::Crypto("RSA encryption");
    let len = match transport {
        KeyTransport::RsaPkcs1 => Pkcs1PublicEncryptingKey::new(public)
            .map_err(failed)?
            .encrypt(key, &mut out)
            .map_err(failed)?
            .len(),
        KeyTransport::RsaOaep { hash, mgf1, label } => {
            if hash != mgf1 {
                return Err(Error::Unsupported(format!(
                    "OAEP with {} and MGF1-{}",
                    hash.name(),
                    mgf1.name()
                )));
            }
            let alg = match hash {
                Hash::Sha1 => &OAEP_SHA1_MGF1SHA1,
                Hash::Sha256 => &OAEP_SHA256_MGF1SHA256,
                Hash::Sha384 => &OAEP_SHA384_MGF1SHA384,
                Hash::Sha512 => &OAEP_SHA512_MGF1SHA512,
            };
            OaepPublicEncryptingKey::new(public)
                .map_err(failed)?
                .encrypt(alg, key, &mut out, label.as_deref())
                .map_err(failed)?
                .len()
        }
    };
    out.truncate(len);
    Ok(out)
}
