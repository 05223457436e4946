//! The S/MIME engine: bytes in, bytes and results out, keys through `hsm::Token`.
//!
//! - [`mime`]: the MIME layer, on exact bytes.
//! - [`envelope`]: decrypting EnvelopedData and AuthEnvelopedData.
//! - [`oid`]: the identifiers we compare.
//!
//! No I/O happens here: callers (the `smimegw message` command, later the relay) read and
//! write.

pub mod envelope;
pub mod error;
pub mod mime;
pub mod oid;

pub use envelope::{Decrypted, Recipient, decrypt_cms};
pub use error::{Result, SmimeError};

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
