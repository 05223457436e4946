//! Opening a received message layer by layer, as the relay does for inbound mail: decrypt
//! while the content is encrypted to one of our keys, verify while it is signed, and stop at
//! the first entity that is neither. Each layer's result is reported, in order from the
//! outside in.
//!
//! Layers stream: each layer's content goes to a scratch buffer (a temporary file in the
//! relay, memory in tests) that is the next layer's source.

use std::io::{Read, Seek, SeekFrom, Write};

use super::envelope::{DecryptInfo, Recipient};
use super::error::{Result, SmimeError};
use super::signed::SignerResult;
use super::stream::{self, Source};
use super::{mime, verify_stream};

/// Layers nested deeper than this are refused (real mail has two or three).
pub const MAX_LAYERS: usize = 8;

/// Read-write-seek storage for one layer's content.
pub trait Buffer: Source + Write {}
impl<T: Read + Write + Seek> Buffer for T {}

/// One S/MIME layer, as found.
#[derive(Debug, Clone)]
pub enum Layer {
    Encrypted(DecryptInfo),
    Signed {
        /// multipart/signed (true) or opaque signed-data.
        detached: bool,
        signers: Vec<SignerResult>,
        certificates: Vec<Vec<u8>>,
    },
}

/// Where a message stopped being opened, when it did not reach plain content.
#[derive(Debug)]
pub struct Opened {
    /// From the outside in.
    pub layers: Vec<Layer>,
    /// Set when an encrypted layer could not be opened (not for us, or the decryption
    /// failed): the content from there on is the encrypted entity.
    pub stopped: Option<SmimeError>,
}

/// What a MIME entity is, for opening.
enum Kind {
    Encrypted,
    Signed,
    Plain,
}

fn kind_of(src: &mut dyn Source) -> Result<Kind> {
    let span = stream::whole(src)?;
    let (header, body_start) = stream::read_header(src, span)?;
    let entity = mime::Entity::parse(&header)?;
    let ct = entity.content_type()?;
    if ct.mime == "multipart/signed" {
        // A signature of another kind (OpenPGP) is not ours to open: the message is content.
        let s_mime = ct.param("protocol").is_none_or(|p| {
            matches!(
                p.to_ascii_lowercase().as_str(),
                "application/pkcs7-signature" | "application/x-pkcs7-signature"
            )
        });
        return Ok(if s_mime { Kind::Signed } else { Kind::Plain });
    }
    if super::is_pkcs7_mime(&ct) {
        return Ok(
            match ct
                .param("smime-type")
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("signed-data") => Kind::Signed,
                Some("enveloped-data") | Some("authenveloped-data") => Kind::Encrypted,
                Some("certs-only") | Some("compressed-data") => Kind::Plain,
                // Without smime-type (Outlook), the CMS content type decides.
                _ => sniff_cms(
                    src,
                    &entity,
                    stream::Span {
                        start: body_start,
                        end: span.end,
                    },
                )?,
            },
        );
    }
    Ok(Kind::Plain)
}

/// Reads the ContentInfo's content type of an application/pkcs7-mime `body`.
fn sniff_cms(src: &mut dyn Source, entity: &mime::Entity<'_>, body: stream::Span) -> Result<Kind> {
    let mut input = super::CmsInput {
        base64: super::cms_is_base64(entity)?,
        src,
        span: body,
    };
    let (_, kind) = input.open()?.content_info()?;
    Ok(if kind == super::oid::SIGNED_DATA {
        Kind::Signed
    } else if kind == super::oid::ENVELOPED_DATA || kind == super::oid::AUTH_ENVELOPED_DATA {
        Kind::Encrypted
    } else {
        Kind::Plain
    })
}

/// Opens `src` layer by layer with our `keys`, writing the innermost content reached to
/// `out`; `scratch` makes the buffers that hold the layers in between.
///
/// Malformed layers are errors. An encrypted layer that none of `keys` opens stops the
/// opening there (the encrypted entity goes to `out`, the reason is in [`Opened::stopped`]).
/// Invalid signatures are reported in their layer, not errors: the content inside them is
/// still opened, and deciding what an invalid signature means is the caller's policy.
pub fn open_stream(
    src: &mut dyn Source,
    keys: &[Recipient<'_>],
    scratch: &mut dyn FnMut() -> std::io::Result<Box<dyn Buffer>>,
    out: &mut dyn Write,
) -> Result<Opened> {
    let mut layers = Vec::new();
    let mut current: Option<Box<dyn Buffer>> = None;
    let mut stopped = None;
    loop {
        let here: &mut dyn Source = match current.as_mut() {
            Some(b) => b.as_mut() as &mut dyn Source,
            None => &mut *src,
        };
        let kind = match kind_of(here) {
            Ok(k) => k,
            // Decrypted or signed content need not be MIME (OpenSSL encrypts bare text): it is
            // the content then.
            Err(e) if !layers.is_empty() && e.is_malformed() => Kind::Plain,
            Err(e) => return Err(e),
        };
        if matches!(kind, Kind::Plain) || layers.len() == MAX_LAYERS {
            if layers.len() == MAX_LAYERS && !matches!(kind, Kind::Plain) {
                return Err(SmimeError::Malformed(format!(
                    "S/MIME layers nested more than {MAX_LAYERS} deep"
                )));
            }
            let span = stream::whole(here)?;
            stream::copy_span(here, span, out)?;
            break;
        }
        let mut next = scratch()?;
        if let Kind::Signed = kind {
            let v = verify_stream(here, &mut next)?;
            layers.push(Layer::Signed {
                detached: v.detached,
                signers: v.signers,
                certificates: v.certificates,
            });
        } else {
            match decrypt_with_any(here, keys, next, scratch)? {
                Ok((info, buffer)) => {
                    layers.push(Layer::Encrypted(info));
                    next = buffer;
                }
                Err(why) => {
                    stopped = Some(why);
                    let span = stream::whole(here)?;
                    stream::copy_span(here, span, out)?;
                    break;
                }
            }
        }
        next.seek(SeekFrom::Start(0))?;
        current = Some(next);
    }
    Ok(Opened { layers, stopped })
}

/// Opens a message in memory; see [`open_stream`]. Returns the layers and the innermost
/// content.
pub fn open_message(message: &[u8], keys: &[Recipient<'_>]) -> Result<(Opened, Vec<u8>)> {
    let mut out = Vec::new();
    let opened = open_stream(
        &mut std::io::Cursor::new(message),
        keys,
        &mut || Ok(Box::new(std::io::Cursor::new(Vec::new()))),
        &mut out,
    )?;
    Ok((opened, out))
}

/// A decrypted layer and its content, or why none of our keys opened it.
type Attempt = std::result::Result<(DecryptInfo, Box<dyn Buffer>), SmimeError>;

/// Tries each key, each into a fresh buffer (a failed attempt may have written unverified
/// output); the outer `Result` is for malformed input, the inner says why none of the keys
/// opened the layer.
fn decrypt_with_any(
    src: &mut dyn Source,
    keys: &[Recipient<'_>],
    first: Box<dyn Buffer>,
    scratch: &mut dyn FnMut() -> std::io::Result<Box<dyn Buffer>>,
) -> Result<Attempt> {
    let mut last = SmimeError::NotRecipient("no decryption keys were given".into());
    let mut buffer = Some(first);
    for key in keys {
        let mut out = match buffer.take() {
            Some(b) => b,
            None => scratch()?,
        };
        match super::decrypt_stream(src, key, &mut out) {
            Ok(info) => return Ok(Ok((info, out))),
            Err(e) if e.is_malformed() => return Err(e),
            Err(e) => last = e,
        }
    }
    Ok(Err(last))
}
