//! Decrypting CMS EnvelopedData (RFC 5652 §6, AES-CBC) and AuthEnvelopedData (RFC 5083 with
//! AES-GCM, RFC 5084), BER as real clients write it.
//!
//! The recipient is found by issuer-and-serial or subject key identifier; the content key is
//! unwrapped by the token (RSA PKCS#1 v1.5 or OAEP, with implicit rejection, so a wrong key
//! only shows as a content decryption failure); AES runs where the offload setting says. For
//! GCM no plaintext is returned unless the tag verifies.

use hsm::ber::{self, Tlv, tag};
use hsm::{AesMode, AesOffload, CipherDirection, Hash, KeyRef, KeyTransport, Token};

use super::error::{Result, SmimeError};
use super::oid;

/// Who we decrypt as: the certificate the sender encrypted to and the key that goes with it.
pub struct Recipient<'a> {
    /// DER certificate.
    pub cert: &'a [u8],
    pub token: &'a dyn Token,
    pub key: KeyRef,
    /// Where AES runs.
    pub offload: AesOffload,
}

impl std::fmt::Debug for Recipient<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipient({}, {:?})", self.key, self.offload)
    }
}

/// A decrypted message part and how it was protected.
#[derive(Debug)]
pub struct Decrypted {
    /// The inner content (for S/MIME, a MIME entity).
    pub content: Vec<u8>,
    /// "AES-128-CBC", "AES-256-GCM", ...
    pub cipher: String,
    /// How the content key reached us.
    pub key_transport: KeyTransport,
    /// AuthEnvelopedData (integrity-protected) rather than EnvelopedData.
    pub authenticated: bool,
}

fn malformed(what: impl Into<String>) -> SmimeError {
    SmimeError::Malformed(what.into())
}

/// Content encryption as named in EncryptedContentInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentCipher {
    Cbc {
        key_len: usize,
    },
    Gcm {
        key_len: usize,
    },
    /// Triple-DES CBC: decrypted (on the host) for old mail, never produced.
    Des3Cbc,
}

/// Decrypts a CMS ContentInfo holding EnvelopedData or AuthEnvelopedData.
pub fn decrypt_cms(cms: &[u8], me: &Recipient<'_>) -> Result<Decrypted> {
    let info = ber::read(cms)?.0;
    let items = info.items()?;
    let [kind, content, ..] = items.as_slice() else {
        return Err(malformed("CMS ContentInfo is too short"));
    };
    let kind = kind.oid()?;
    let authenticated = if kind == oid::ENVELOPED_DATA {
        false
    } else if kind == oid::AUTH_ENVELOPED_DATA {
        true
    } else if kind == oid::SIGNED_DATA {
        return Err(SmimeError::Unsupported(
            "this is signed data, not encrypted: use verify".into(),
        ));
    } else {
        return Err(SmimeError::Unsupported(format!(
            "CMS content type {}",
            oid::dotted(kind)
        )));
    };
    if !content.is_context(0) {
        return Err(malformed("CMS ContentInfo content is not [0]"));
    }
    let env = content.inner()?;
    let fields = env.items()?;
    // version, [0] originatorInfo?, recipientInfos, (auth)EncryptedContentInfo, ...
    let mut rest = fields.iter().skip(1).peekable();
    if rest.peek().is_some_and(|t| t.is_context(0)) {
        rest.next();
    }
    let recipients = rest
        .next()
        .filter(|t| t.is(tag::SET))
        .ok_or_else(|| malformed("recipientInfos missing"))?;
    let eci = rest
        .next()
        .filter(|t| t.is(tag::SEQUENCE))
        .ok_or_else(|| malformed("encryptedContentInfo missing"))?;
    let (auth_attrs, mac) = if authenticated {
        let mut attrs = None;
        if rest.peek().is_some_and(|t| t.is_context(1)) {
            attrs = rest.next();
        }
        let mac = rest
            .next()
            .filter(|t| t.is(tag::OCTET_STRING))
            .ok_or_else(|| malformed("AuthEnvelopedData has no MAC"))?;
        (attrs, Some(mac.octets()?.into_owned()))
    } else {
        (None, None)
    };

    let (transport, blob) = find_recipient(recipients, me)?;
    let eci = eci.items()?;
    let [_content_type, alg, encrypted @ ..] = eci.as_slice() else {
        return Err(malformed("encryptedContentInfo is too short"));
    };
    let (cipher, params) = content_cipher(alg)?;
    let ciphertext = match encrypted.first() {
        Some(t) if t.is_context(0) => t.octets()?,
        _ => {
            return Err(SmimeError::Unsupported(
                "detached encrypted content (the ciphertext is not in the message)".into(),
            ));
        }
    };
    let key_len = match cipher {
        ContentCipher::Cbc { key_len } | ContentCipher::Gcm { key_len } => key_len,
        ContentCipher::Des3Cbc => 24,
    };
    let mut offload = me.offload;
    let (mode, tag_bytes, name) = match cipher {
        ContentCipher::Cbc { .. } => {
            if authenticated {
                return Err(malformed("AuthEnvelopedData with a CBC cipher"));
            }
            let iv = params.ok_or_else(|| malformed("AES-CBC without an IV"))?;
            let iv = iv
                .expect(tag::OCTET_STRING, "AES-CBC IV is not an OCTET STRING")?
                .octets()?;
            let iv: [u8; 16] = iv
                .as_ref()
                .try_into()
                .map_err(|_| malformed("AES-CBC IV is not 16 bytes"))?;
            (
                AesMode::Cbc { iv },
                None,
                format!("AES-{}-CBC", key_len * 8),
            )
        }
        ContentCipher::Des3Cbc => {
            let iv = params
                .ok_or_else(|| malformed("3DES-CBC without an IV"))?
                .expect(tag::OCTET_STRING, "3DES-CBC IV is not an OCTET STRING")?
                .octets()?;
            let iv: [u8; 8] = iv
                .as_ref()
                .try_into()
                .map_err(|_| malformed("3DES-CBC IV is not 8 bytes"))?;
            offload = AesOffload::Host; // tokens are not asked for legacy ciphers
            (AesMode::LegacyDes3Cbc { iv }, None, "3DES-CBC".to_string())
        }
        ContentCipher::Gcm { .. } => {
            if !authenticated {
                return Err(SmimeError::Unsupported(
                    "AES-GCM inside EnvelopedData (it belongs in AuthEnvelopedData)".into(),
                ));
            }
            let p = params
                .ok_or_else(|| malformed("AES-GCM without parameters"))?
                .items()?;
            let nonce = p
                .first()
                .ok_or_else(|| malformed("AES-GCM without a nonce"))?
                .octets()?
                .into_owned();
            let tag_len = match p.get(1) {
                Some(t) => t.uint()? as usize,
                None => 12,
            };
            if !(12..=16).contains(&tag_len) {
                return Err(malformed(format!("AES-GCM tag length {tag_len}")));
            }
            let mac = mac.unwrap_or_default();
            if mac.len() != tag_len {
                return Err(malformed(
                    "the AES-GCM tag is not as long as its parameters say",
                ));
            }
            // RFC 5083: the authenticated attributes are authenticated in their DER form with
            // the SET OF tag.
            let aad = match auth_attrs {
                Some(a) => {
                    let mut der = ber::to_der(a.raw)?;
                    der[0] = 0x31;
                    der
                }
                None => Vec::new(),
            };
            (
                AesMode::Gcm {
                    nonce,
                    aad,
                    tag_len,
                },
                Some(mac),
                format!("AES-{}-GCM", key_len * 8),
            )
        }
    };
    let key = me
        .token
        .unwrap_key(&me.key, &transport, &blob, key_len, offload)?;
    let stream = key.cipher(CipherDirection::Decrypt, &mode)?;
    let (content, _) = hsm::run_all(stream, &ciphertext, tag_bytes.as_deref())?;
    Ok(Decrypted {
        content,
        cipher: name,
        key_transport: transport,
        authenticated,
    })
}

/// Our KeyTransRecipientInfo: the key transport and the encrypted key.
fn find_recipient(set: &Tlv<'_>, me: &Recipient<'_>) -> Result<(KeyTransport, Vec<u8>)> {
    let cert = hsm::cert_summary(me.cert).map_err(|e| SmimeError::Certificate(e.to_string()))?;
    let mut seen = Vec::new();
    for ri in set.children() {
        let ri = ri?;
        if !ri.is(tag::SEQUENCE) {
            // [1] kari, [2] kekri, [3] pwri, [4] ori
            seen.push(match ri.number {
                1 => "key agreement (ECDH)",
                2 => "key-encryption key",
                3 => "password",
                _ => "other",
            });
            continue;
        }
        let parts = ri.items()?;
        let [_version, rid, alg, encrypted_key] = parts.as_slice() else {
            return Err(malformed(
                "KeyTransRecipientInfo has the wrong number of fields",
            ));
        };
        let matches = if rid.is_context(0) {
            let ski = rid.octets()?;
            cert.subject_key_id.as_deref() == Some(ski.as_ref())
        } else {
            let ias = rid.items()?;
            let [issuer, serial] = ias.as_slice() else {
                return Err(malformed("IssuerAndSerialNumber"));
            };
            issuer.raw == cert.issuer_der.as_slice() && serial.raw == cert.serial_der.as_slice()
        };
        seen.push("key transport");
        if matches {
            let transport = key_transport(alg)?;
            return Ok((transport, encrypted_key.octets()?.into_owned()));
        }
    }
    Err(SmimeError::NotRecipient(format!(
        "the message names {} recipient(s): {}; looked for issuer {:?}, serial {}",
        seen.len(),
        seen.join(", "),
        cert.issuer,
        cert.serial
    )))
}

/// RSA PKCS#1 v1.5 or RSAES-OAEP with its parameters (RFC 4055).
fn key_transport(alg: &Tlv<'_>) -> Result<KeyTransport> {
    let items = alg.items()?;
    let o = items
        .first()
        .ok_or_else(|| malformed("empty key encryption algorithm"))?
        .oid()?;
    if o == oid::RSA_ENCRYPTION {
        return Ok(KeyTransport::RsaPkcs1);
    }
    if o != oid::RSAES_OAEP {
        return Err(SmimeError::Unsupported(format!(
            "key encryption algorithm {}",
            oid::dotted(o)
        )));
    }
    let (mut hash, mut mgf1, mut label) = (Hash::Sha1, Hash::Sha1, None);
    if let Some(params) = items.get(1).filter(|p| p.is(tag::SEQUENCE)) {
        for p in params.children() {
            let p = p?;
            let inner = p.inner()?.items()?;
            let alg_oid = inner
                .first()
                .ok_or_else(|| malformed("empty OAEP parameter"))?
                .oid()?;
            match p.number {
                0 => {
                    hash = oid::hash(alg_oid).ok_or_else(|| {
                        SmimeError::Unsupported(format!("OAEP hash {}", oid::dotted(alg_oid)))
                    })?;
                }
                1 => {
                    if alg_oid != oid::MGF1 {
                        return Err(SmimeError::Unsupported("OAEP mask function".into()));
                    }
                    let h = inner
                        .get(1)
                        .ok_or_else(|| malformed("MGF1 without a hash"))?
                        .items()?;
                    let h = h.first().ok_or_else(|| malformed("MGF1 hash"))?.oid()?;
                    mgf1 = oid::hash(h).ok_or_else(|| {
                        SmimeError::Unsupported(format!("MGF1 hash {}", oid::dotted(h)))
                    })?;
                }
                2 => {
                    if alg_oid != oid::P_SPECIFIED {
                        return Err(SmimeError::Unsupported("OAEP label source".into()));
                    }
                    let l = inner
                        .get(1)
                        .map(|l| l.octets().map(|o| o.into_owned()))
                        .transpose()?;
                    label = l.filter(|l| !l.is_empty());
                }
                _ => return Err(malformed("unknown OAEP parameter")),
            }
        }
    }
    Ok(KeyTransport::RsaOaep { hash, mgf1, label })
}

fn content_cipher<'a>(alg: &Tlv<'a>) -> Result<(ContentCipher, Option<Tlv<'a>>)> {
    let items = alg.items()?;
    let o = items
        .first()
        .ok_or_else(|| malformed("empty content encryption algorithm"))?
        .oid()?;
    let cipher = match o {
        x if x == oid::AES128_CBC => ContentCipher::Cbc { key_len: 16 },
        x if x == oid::AES192_CBC => ContentCipher::Cbc { key_len: 24 },
        x if x == oid::AES256_CBC => ContentCipher::Cbc { key_len: 32 },
        x if x == oid::AES128_GCM => ContentCipher::Gcm { key_len: 16 },
        x if x == oid::AES192_GCM => ContentCipher::Gcm { key_len: 24 },
        x if x == oid::AES256_GCM => ContentCipher::Gcm { key_len: 32 },
        x if x == oid::DES_EDE3_CBC => ContentCipher::Des3Cbc,
        x => {
            return Err(SmimeError::Unsupported(format!(
                "content encryption algorithm {}",
                oid::dotted(x)
            )));
        }
    };
    Ok((cipher, items.get(1).copied()))
}
