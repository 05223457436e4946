//! The S/MIME engine: bytes in, bytes and results out, keys through `hsm::Token`.
//!
//! - [`mime`]: the MIME layer, on exact bytes.
//! - [`envelope`]: decrypting EnvelopedData and AuthEnvelopedData.
//! - [`oid`]: the identifiers we compare.
//!
//! No I/O happens here: callers (the `smimegw message` command, later the relay) read and
//! write.

pub mod asn1;
pub mod encrypt;
pub mod envelope;
pub mod error;
pub mod mime;
pub mod oid;
pub mod sign;
pub mod signed;
pub mod trust;

pub use envelope::{Decrypted, Recipient, decrypt_cms};
pub use error::{Result, SmimeError};
pub use signed::{SignerResult, VerifiedData, verify_cms};

/// A signed message, verified cryptographically.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The signed entity exactly as received (detached: the first part of multipart/signed;
    /// opaque: the encapsulated content).
    pub entity: Vec<u8>,
    /// Detached (multipart/signed) or opaque (application/pkcs7-mime signed-data).
    pub detached: bool,
    pub signers: Vec<SignerResult>,
    /// Every certificate the signature carries (DER).
    pub certificates: Vec<Vec<u8>>,
}

/// Verifies the signature of an RFC 5322 message (or MIME entity): multipart/signed
/// (detached; also without `protocol`, as Outlook sends it) or application/pkcs7-mime
/// signed-data (opaque; also `x-pkcs7-mime` and without `smime-type`). The content is hashed
/// in canonical form (CRLF line endings) from the bytes received.
pub fn verify_message(message: &[u8]) -> Result<Verified> {
    let entity = mime::Entity::parse(message)?;
    let ct = entity.content_type()?;
    if ct.mime == "multipart/signed" {
        let boundary = ct
            .param("boundary")
            .ok_or_else(|| SmimeError::Malformed("multipart/signed without a boundary".into()))?;
        let parts = mime::multipart_parts(entity.body, boundary)?;
        let [signed, signature, ..] = parts.as_slice() else {
            return Err(SmimeError::Malformed(
                "multipart/signed needs two parts: the content and the signature".into(),
            ));
        };
        let sig_entity = mime::Entity::parse(signature)?;
        let sig_ct = sig_entity.content_type()?;
        if !matches!(
            sig_ct.mime.as_str(),
            "application/pkcs7-signature" | "application/x-pkcs7-signature"
        ) {
            return Err(SmimeError::Unsupported(format!(
                "a {} signature (only S/MIME signatures are verified)",
                sig_ct.mime
            )));
        }
        let cms = sig_entity.decoded_body()?;
        let canonical = mime::canonical_crlf(signed);
        let data = verify_cms(&cms, Some(&canonical))?;
        return Ok(Verified {
            entity: signed.to_vec(),
            detached: true,
            signers: data.signers,
            certificates: data.certificates,
        });
    }
    if is_pkcs7_mime(&ct) {
        match ct
            .param("smime-type")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("signed-data") => {}
            Some(other) => {
                return Err(SmimeError::Malformed(format!(
                    "the message is S/MIME {other}, not signed"
                )));
            }
        }
        let cms = entity.decoded_body()?;
        let data = verify_cms(&cms, None)?;
        return Ok(Verified {
            entity: data.content,
            detached: false,
            signers: data.signers,
            certificates: data.certificates,
        });
    }
    Err(SmimeError::Malformed(format!(
        "the message is {}, not S/MIME signed",
        ct.mime
    )))
}

/// Decrypts an RFC 5322 message (or MIME entity) whose content is S/MIME enveloped data.
/// Returns the inner entity exactly as it was encrypted.
pub fn decrypt_message(message: &[u8], me: &Recipient<'_>) -> Result<Decrypted> {
    let entity = mime::Entity::parse(message)?;
    let ct = entity.content_type()?;
    if !is_pkcs7_mime(&ct) {
        return Err(SmimeError::Malformed(format!(
            "the message is {}, not S/MIME encrypted (application/pkcs7-mime)",
            ct.mime
        )));
    }
    match ct
        .param("smime-type")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("enveloped-data") | Some("authenveloped-data") => {}
        Some(other) => {
            return Err(SmimeError::Malformed(format!(
                "the message is S/MIME {other}, not encrypted"
            )));
        }
    }
    let der = entity.decoded_body()?;
    decrypt_cms(&der, me)
}

/// application/pkcs7-mime and the names older clients use for it.
fn is_pkcs7_mime(ct: &mime::ContentType) -> bool {
    match ct.mime.as_str() {
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => true,
        // Some clients send .p7m attachments as octet streams.
        "application/octet-stream" => ct
            .param("name")
            .is_some_and(|n| n.to_ascii_lowercase().ends_with(".p7m")),
        _ => false,
    }
}
