//! The S/MIME engine: bytes in, bytes and results out, keys through `hsm::Token`.
//!
//! - [`mime`]: the MIME layer, on exact bytes.
//! - [`envelope`]: decrypting EnvelopedData and AuthEnvelopedData.
//! - [`oid`]: the identifiers we compare.
//!
//! No I/O happens here: callers (the `smimegw message` command, later the relay) read and
//! write.

pub mod asn1;
pub mod berstream;
pub mod encrypt;
pub mod envelope;
pub mod error;
pub mod mime;
pub mod oid;
pub mod open;
pub mod sign;
pub mod signed;
pub mod stream;
pub mod trust;

use std::io::{Cursor, Write};

pub use envelope::{
    CmsInput, DecryptInfo, Decrypted, KeyManagement, Recipient, decrypt_cms, decrypt_cms_stream,
};
pub use error::{Result, SmimeError};
pub use signed::{Signatures, SignerResult, VerifiedData, verify_cms, verify_cms_with};
pub use stream::{Source, Span};

/// The signature part of multipart/signed is read into memory; signatures with their
/// certificates are a few KiB, this is a guard against hostile input.
const SIGNATURE_LIMIT: u64 = 16 << 20;

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

/// A signed message verified while streaming (the entity went to the writer).
#[derive(Debug, Clone)]
pub struct VerifiedStream {
    /// Detached (multipart/signed) or opaque (application/pkcs7-mime signed-data).
    pub detached: bool,
    pub signers: Vec<SignerResult>,
    /// Every certificate the signature carries (DER).
    pub certificates: Vec<Vec<u8>>,
}

/// Verifies the signature of an RFC 5322 message (or MIME entity) in memory; see
/// [`verify_stream`].
pub fn verify_message(message: &[u8]) -> Result<Verified> {
    let mut entity = Vec::new();
    let v = verify_stream(&mut Cursor::new(message), &mut entity)?;
    Ok(Verified {
        entity,
        detached: v.detached,
        signers: v.signers,
        certificates: v.certificates,
    })
}

/// Verifies the signature of an RFC 5322 message (or MIME entity): multipart/signed
/// (detached; also without `protocol`, as Outlook sends it) or application/pkcs7-mime
/// signed-data (opaque; also `x-pkcs7-mime` and without `smime-type`). The content is hashed
/// in canonical form (CRLF line endings) from the bytes received, and written to `out`
/// exactly as received while it is hashed.
pub fn verify_stream(src: &mut dyn Source, out: &mut dyn Write) -> Result<VerifiedStream> {
    let span = stream::whole(src)?;
    let (header, body_start) = stream::read_header(src, span)?;
    let entity = mime::Entity::parse(&header)?;
    let body = Span {
        start: body_start,
        end: span.end,
    };
    let ct = entity.content_type()?;
    if ct.mime == "multipart/signed" {
        let boundary = ct
            .param("boundary")
            .ok_or_else(|| SmimeError::Malformed("multipart/signed without a boundary".into()))?;
        let parts = stream::multipart_spans(src, body, boundary)?;
        let [signed, signature, ..] = parts.as_slice() else {
            return Err(SmimeError::Malformed(
                "multipart/signed needs two parts: the content and the signature".into(),
            ));
        };
        let sig_raw = stream::read_span(src, *signature, SIGNATURE_LIMIT, "the signature part")?;
        let sig_entity = mime::Entity::parse(&sig_raw)?;
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
        let sig = signed::verify_detached(&cms, &[], &mut |digests| {
            let mut r = stream::reader(src, *signed)?;
            let mut tee = stream::Tee(&mut *out, stream::Crlf::new(digests));
            std::io::copy(&mut r, &mut tee)?;
            Ok(())
        })?;
        return Ok(VerifiedStream {
            detached: true,
            signers: sig.signers,
            certificates: sig.certificates,
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
        let mut input = CmsInput {
            base64: cms_is_base64(&entity)?,
            src,
            span: body,
        };
        let sig = signed::verify_opaque(&mut input.open()?, &[], out)?;
        return Ok(VerifiedStream {
            detached: false,
            signers: sig.signers,
            certificates: sig.certificates,
        });
    }
    Err(SmimeError::Malformed(format!(
        "the message is {}, not S/MIME signed",
        ct.mime
    )))
}

/// Decrypts an RFC 5322 message (or MIME entity) in memory; see [`decrypt_stream`].
pub fn decrypt_message(message: &[u8], me: &Recipient<'_>) -> Result<Decrypted> {
    let mut content = Vec::new();
    let info = decrypt_stream(&mut Cursor::new(message), me, &mut content)?;
    Ok(Decrypted {
        content,
        cipher: info.cipher,
        key_management: info.key_management,
        authenticated: info.authenticated,
    })
}

/// Decrypts an RFC 5322 message (or MIME entity) whose content is S/MIME enveloped data,
/// writing the inner entity, exactly as it was encrypted, to `out`. On error, discard what
/// `out` received (see [`decrypt_cms_stream`]).
pub fn decrypt_stream(
    src: &mut dyn Source,
    me: &Recipient<'_>,
    out: &mut dyn Write,
) -> Result<DecryptInfo> {
    let span = stream::whole(src)?;
    let (header, body_start) = stream::read_header(src, span)?;
    let entity = mime::Entity::parse(&header)?;
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
    let mut input = CmsInput {
        base64: cms_is_base64(&entity)?,
        src,
        span: Span {
            start: body_start,
            end: span.end,
        },
    };
    decrypt_cms_stream(&mut input, me, out)
}

/// Whether S/MIME data in this entity is base64 (the rule) or binary.
fn cms_is_base64(entity: &mime::Entity<'_>) -> Result<bool> {
    match entity.transfer_encoding().as_str() {
        "base64" => Ok(true),
        "7bit" | "8bit" | "binary" => Ok(false),
        other => Err(SmimeError::Unsupported(format!(
            "S/MIME data in Content-Transfer-Encoding {other}"
        ))),
    }
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
