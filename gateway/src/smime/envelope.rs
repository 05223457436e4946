//! Decrypting CMS EnvelopedData (RFC 5652 §6, AES-CBC) and AuthEnvelopedData (RFC 5083 with
//! AES-GCM, RFC 5084), BER as real clients write it.
//!
//! The recipient is found by issuer-and-serial or subject key identifier; the content key is
//! unwrapped by the token (RSA PKCS#1 v1.5 or OAEP, with implicit rejection, so a wrong key
//! only shows as a content decryption failure); AES runs where the offload setting says. For
//! GCM no plaintext is returned unless the tag verifies.

use std::io::{Read, Write};

use hsm::ber::{self, Tlv, tag};
use hsm::{AesMode, AesOffload, CipherDirection, Hash, KeyRef, KeyTransport, Token};

use super::berstream::{BerReader, Frame, Header};
use super::error::{Result, SmimeError};
use super::oid;
use super::stream::{self, Source, Span};

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
    pub key_management: KeyManagement,
    /// AuthEnvelopedData (integrity-protected) rather than EnvelopedData.
    pub authenticated: bool,
}

/// How the content key reached us: RSA key transport, or ECDH key agreement (RFC 5753) with
/// an X9.63 KDF and AES key wrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyManagement {
    Transport(KeyTransport),
    Agreement { kdf: Hash, wrap_bits: usize },
}

impl std::fmt::Display for KeyManagement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyManagement::Transport(t) => t.fmt(f),
            KeyManagement::Agreement { kdf, wrap_bits } => write!(
                f,
                "ECDH key agreement, X9.63 KDF with {}, AES-{wrap_bits} key wrap",
                kdf.name()
            ),
        }
    }
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

/// CMS bytes to decrypt: a span of a source, base64 or binary. It may be read twice: GCM
/// needs the authenticated attributes, which follow the ciphertext, before it can start.
pub struct CmsInput<'a> {
    pub src: &'a mut dyn Source,
    pub span: Span,
    pub base64: bool,
}

impl std::fmt::Debug for CmsInput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CmsInput({:?}, base64 {})", self.span, self.base64)
    }
}

impl CmsInput<'_> {
    /// A reader of the CMS bytes from their start.
    pub fn open(&mut self) -> Result<BerReader<Box<dyn Read + '_>>> {
        let r = stream::reader(self.src, self.span)?;
        let r: Box<dyn Read + '_> = if self.base64 {
            Box::new(stream::B64Reader::new(r))
        } else {
            Box::new(r)
        };
        Ok(BerReader::new(r))
    }
}

/// How a decrypted message was protected.
#[derive(Debug, Clone)]
pub struct DecryptInfo {
    /// "AES-128-CBC", "AES-256-GCM", ...
    pub cipher: String,
    /// How the content key reached us.
    pub key_management: KeyManagement,
    /// AuthEnvelopedData (integrity-protected) rather than EnvelopedData.
    pub authenticated: bool,
}

/// Decrypts a CMS ContentInfo holding EnvelopedData or AuthEnvelopedData (in memory).
pub fn decrypt_cms(cms: &[u8], me: &Recipient<'_>) -> Result<Decrypted> {
    let mut src = std::io::Cursor::new(cms);
    let mut input = CmsInput {
        span: Span {
            start: 0,
            end: cms.len() as u64,
        },
        src: &mut src,
        base64: false,
    };
    let mut content = Vec::new();
    let info = decrypt_cms_stream(&mut input, me, &mut content)?;
    Ok(Decrypted {
        content,
        cipher: info.cipher,
        key_management: info.key_management,
        authenticated: info.authenticated,
    })
}

/// The parts of an (Auth)EnvelopedData before its ciphertext, read from a stream that is left
/// at the start of the ciphertext.
struct Envelope {
    authenticated: bool,
    /// The recipientInfos SET, whole.
    recipients: Vec<u8>,
    /// The contentEncryptionAlgorithm, whole.
    algorithm: Vec<u8>,
    /// The encryptedContent [0].
    content: Header,
    outer: Frame,
    eci: Frame,
    /// The ContentInfo and its [0], to be read to their ends.
    wrappers: [Frame; 2],
}

const SMALL: u64 = 64 * 1024;
/// Many recipients, each with a certificate-sized identifier, fit well under this.
const RECIPIENTS_LIMIT: u64 = 16 << 20;

fn read_envelope<R: Read>(ber: &mut BerReader<R>) -> Result<Envelope> {
    let (info, kind) = ber.content_info()?;
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
            oid::dotted(&kind)
        )));
    };
    let wrapper = ber.content(&info)?;
    let wrappers = [wrapper.frame(), info.frame()];
    let env = ber.expect_child(wrapper.frame(), "the enveloped data")?;
    if !env.is(tag::SEQUENCE) {
        return Err(malformed("EnvelopedData is not a SEQUENCE"));
    }
    let outer = env.frame();
    // version, [0] originatorInfo?, recipientInfos, (auth)EncryptedContentInfo, ...
    let version = ber.expect_child(outer, "the EnvelopedData version")?;
    ber.element(&version, SMALL, "the EnvelopedData version")?;
    let mut next = ber.expect_child(outer, "recipientInfos")?;
    if next.is_context(0) {
        ber.element(&next, RECIPIENTS_LIMIT, "originatorInfo")?;
        next = ber.expect_child(outer, "recipientInfos")?;
    }
    if !next.is(tag::SET) {
        return Err(malformed("recipientInfos missing"));
    }
    let recipients = ber.element(&next, RECIPIENTS_LIMIT, "recipientInfos")?;
    let eci = ber.expect_child(outer, "encryptedContentInfo")?;
    if !eci.is(tag::SEQUENCE) {
        return Err(malformed("encryptedContentInfo missing"));
    }
    let eci = eci.frame();
    let ct = ber.expect_child(eci, "the encrypted content type")?;
    ber.element(&ct, SMALL, "the encrypted content type")?;
    let alg = ber.expect_child(eci, "the content encryption algorithm")?;
    let algorithm = ber.element(&alg, SMALL, "the content encryption algorithm")?;
    let content = match ber.next_child(eci)? {
        Some(h) if h.is_context(0) => h,
        _ => {
            return Err(SmimeError::Unsupported(
                "detached encrypted content (the ciphertext is not in the message)".into(),
            ));
        }
    };
    Ok(Envelope {
        authenticated,
        recipients,
        algorithm,
        content,
        outer,
        eci,
        wrappers,
    })
}

/// AuthEnvelopedData after the ciphertext: the authenticated attributes (DER, as the GCM
/// additional data) and the MAC.
fn read_trailer<R: Read>(ber: &mut BerReader<R>, env: &Envelope) -> Result<(Vec<u8>, Vec<u8>)> {
    ber.skip_rest(env.eci)?;
    let mut next = ber.next_child(env.outer)?;
    let mut aad = Vec::new();
    if let Some(h) = next.as_ref().filter(|h| h.is_context(1)) {
        let attrs = ber.element(h, RECIPIENTS_LIMIT, "authAttrs")?;
        // RFC 5083: authenticated in their DER form with the SET OF tag.
        aad = ber::to_der(&attrs)?;
        aad[0] = 0x31;
        next = ber.next_child(env.outer)?;
    }
    let mac = match next {
        Some(h) if h.is(tag::OCTET_STRING) => {
            let m = ber.element(&h, SMALL, "the MAC")?;
            ber::read_all(&m)?.octets()?.into_owned()
        }
        _ => return Err(malformed("AuthEnvelopedData has no MAC")),
    };
    Ok((aad, mac))
}

/// Decrypts the CMS in `input`, writing the content to `out` as it is decrypted.
///
/// For AES-GCM the data written is not yet authenticated when it is written: when this
/// returns an error, the caller must throw away everything `out` received (the command line
/// writes to a temporary file and only renames it on success).
pub fn decrypt_cms_stream(
    input: &mut CmsInput<'_>,
    me: &Recipient<'_>,
    out: &mut dyn Write,
) -> Result<DecryptInfo> {
    let trailer = {
        let mut ber = input.open()?;
        let env = read_envelope(&mut ber)?;
        if !env.authenticated {
            return decrypt_content(&mut ber, &env, None, me, out);
        }
        // GCM: the attributes after the ciphertext are its additional data; read them first.
        ber.octets(&env.content, &mut |_| Ok(()))?;
        read_trailer(&mut ber, &env)?
    };
    let mut ber = input.open()?;
    let env = read_envelope(&mut ber)?;
    decrypt_content(&mut ber, &env, Some(trailer), me, out)
}

fn decrypt_content<R: Read>(
    ber: &mut BerReader<R>,
    env: &Envelope,
    trailer: Option<(Vec<u8>, Vec<u8>)>,
    me: &Recipient<'_>,
    out: &mut dyn Write,
) -> Result<DecryptInfo> {
    let authenticated = env.authenticated;
    let recipients = ber::read_all(&env.recipients)?;
    let found = find_recipient(&recipients, me)?;
    let alg = ber::read_all(&env.algorithm)?;
    let (cipher, params) = content_cipher(&alg)?;
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
            let Some((aad, mac)) = trailer.filter(|_| authenticated) else {
                return Err(SmimeError::Unsupported(
                    "AES-GCM inside EnvelopedData (it belongs in AuthEnvelopedData)".into(),
                ));
            };
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
            if mac.len() != tag_len {
                return Err(malformed(
                    "the AES-GCM tag is not as long as its parameters say",
                ));
            }
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
    let (key, key_management) = match found {
        Found::Transport(transport, blob) => (
            me.token
                .unwrap_key(&me.key, &transport, &blob, key_len, offload)?,
            KeyManagement::Transport(transport),
        ),
        Found::Agreement(a) => {
            let cek = a.content_key(me)?;
            if cek.len() != key_len {
                return Err(SmimeError::Decrypt);
            }
            let how = KeyManagement::Agreement {
                kdf: a.kdf,
                wrap_bits: a.wrap_len * 8,
            };
            (me.token.content_key(&cek, offload)?, how)
        }
    };
    let mut stream = key.cipher(CipherDirection::Decrypt, &mode)?;
    let mut buf = Vec::with_capacity(stream::CHUNK + 64);
    ber.octets(&env.content, &mut |piece| {
        stream.update(piece, &mut buf)?;
        out.write_all(&buf)?;
        buf.clear();
        Ok(())
    })?;
    // The end of the structure: a truncated message is refused, not half-read. (For GCM the
    // trailer was checked in the first pass.)
    ber.skip_rest(env.eci)?;
    ber.skip_rest(env.outer)?;
    for f in env.wrappers {
        ber.skip_rest(f)?;
    }
    stream.finish(tag_bytes.as_deref(), &mut buf)?;
    out.write_all(&buf)?;
    Ok(DecryptInfo {
        cipher: name,
        key_management,
        authenticated,
    })
}

/// Our RecipientInfo, as what is needed to recover the content key.
enum Found {
    /// KeyTransRecipientInfo: the key transport and the encrypted key.
    Transport(KeyTransport, Vec<u8>),
    /// KeyAgreeRecipientInfo (ECDH, RFC 5753).
    Agreement(Agreement),
}

/// What a KeyAgreeRecipientInfo gives us.
struct Agreement {
    /// The originator's ephemeral public point (uncompressed SEC1).
    point: Vec<u8>,
    ukm: Option<Vec<u8>>,
    kdf: Hash,
    /// The key wrap algorithm and its key length in bytes.
    wrap_oid: Vec<u8>,
    wrap_len: usize,
    encrypted_key: Vec<u8>,
}

impl Agreement {
    /// Z from the token's ECDH, the key-encryption key by the ANSI X9.63 KDF over Z and the
    /// ECC-CMS-SharedInfo (RFC 5753 §7.2), then the content key by AES key unwrap.
    fn content_key(&self, me: &Recipient<'_>) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        use super::asn1::{explicit, octets, seq};
        let z = me.token.ecdh(&me.key, &self.point)?;
        let mut shared_info = vec![seq(&[&super::asn1::oid(&self.wrap_oid)])];
        if let Some(ukm) = &self.ukm {
            shared_info.push(explicit(0, &octets(ukm)));
        }
        let bits = (self.wrap_len as u32 * 8).to_be_bytes();
        shared_info.push(explicit(2, &octets(&bits)));
        let refs: Vec<&[u8]> = shared_info.iter().map(Vec::as_slice).collect();
        let shared_info = seq(&refs);
        let mut kek = zeroize::Zeroizing::new(Vec::with_capacity(self.wrap_len + 64));
        let mut counter = 1u32;
        while kek.len() < self.wrap_len {
            let mut h = self.kdf.hasher();
            h.update(&z);
            h.update(&counter.to_be_bytes());
            h.update(&shared_info);
            kek.extend_from_slice(&h.finish());
            counter += 1;
        }
        kek.truncate(self.wrap_len);
        Ok(hsm::key_unwrap(&kek, &self.encrypted_key)?)
    }
}

/// Does a RecipientIdentifier (or a KARI's KeyAgreeRecipientIdentifier: `[0]` holds a
/// RecipientKeyIdentifier there) name our certificate?
fn names_us(rid: &Tlv<'_>, cert: &hsm::CertSummary, agreement: bool) -> Result<bool> {
    if rid.is_context(0) {
        let ski = if agreement {
            let items = rid.items()?;
            items
                .first()
                .ok_or_else(|| malformed("RecipientKeyIdentifier is empty"))?
                .octets()?
        } else {
            rid.octets()?
        };
        return Ok(cert.subject_key_id.as_deref() == Some(ski.as_ref()));
    }
    let ias = rid.items()?;
    let [issuer, serial] = ias.as_slice() else {
        return Err(malformed("IssuerAndSerialNumber"));
    };
    Ok(issuer.raw == cert.issuer_der.as_slice() && serial.raw == cert.serial_der.as_slice())
}

/// Finds our RecipientInfo: key transport (RSA) or key agreement (ECDH).
fn find_recipient(set: &Tlv<'_>, me: &Recipient<'_>) -> Result<Found> {
    let cert = hsm::cert_summary(me.cert).map_err(|e| SmimeError::Certificate(e.to_string()))?;
    let mut seen = Vec::new();
    for ri in set.children() {
        let ri = ri?;
        if ri.is_context(1) {
            seen.push("key agreement (ECDH)");
            if let Some(a) = key_agreement(&ri, &cert)? {
                return Ok(Found::Agreement(a));
            }
            continue;
        }
        if !ri.is(tag::SEQUENCE) {
            // [2] kekri, [3] pwri, [4] ori
            seen.push(match ri.number {
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
        seen.push("key transport");
        if names_us(rid, &cert, false)? {
            let transport = key_transport(alg)?;
            return Ok(Found::Transport(
                transport,
                encrypted_key.octets()?.into_owned(),
            ));
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

/// A KeyAgreeRecipientInfo, when one of its recipientEncryptedKeys is ours.
fn key_agreement(ri: &Tlv<'_>, cert: &hsm::CertSummary) -> Result<Option<Agreement>> {
    let items = ri.items()?;
    // version, [0] originator, [1] ukm?, keyEncryptionAlgorithm, recipientEncryptedKeys
    let mut it = items.iter().skip(1).peekable();
    let originator = it
        .next()
        .filter(|t| t.is_context(0))
        .ok_or_else(|| malformed("KeyAgreeRecipientInfo has no originator"))?
        .inner()?;
    let ukm = match it.peek() {
        Some(t) if t.is_context(1) => {
            let u = it.next().map(|t| t.inner()).transpose()?;
            u.map(|u| u.octets().map(|o| o.into_owned())).transpose()?
        }
        _ => None,
    };
    let alg = it
        .next()
        .ok_or_else(|| malformed("KeyAgreeRecipientInfo has no key encryption algorithm"))?;
    let keys = it
        .next()
        .ok_or_else(|| malformed("KeyAgreeRecipientInfo has no recipientEncryptedKeys"))?;
    let mut encrypted_key = None;
    for rek in keys.children() {
        let rek = rek?;
        let parts = rek.items()?;
        let [rid, key] = parts.as_slice() else {
            return Err(malformed(
                "RecipientEncryptedKey has the wrong number of fields",
            ));
        };
        if names_us(rid, cert, true)? {
            encrypted_key = Some(key.octets()?.into_owned());
            break;
        }
    }
    let Some(encrypted_key) = encrypted_key else {
        return Ok(None);
    };
    if !originator.is_context(1) {
        return Err(SmimeError::Unsupported(
            "key agreement with the originator's static key (only ephemeral-static ECDH)".into(),
        ));
    }
    let ok = originator.items()?;
    let point = ok
        .get(1)
        .filter(|t| t.is(tag::BIT_STRING))
        .ok_or_else(|| malformed("the originator's public key is not a BIT STRING"))?
        .body;
    let point = match point.split_first() {
        Some((0, p)) if !p.is_empty() => p.to_vec(),
        _ => return Err(malformed("the originator's public key BIT STRING")),
    };
    let alg_items = alg.items()?;
    let scheme = alg_items
        .first()
        .ok_or_else(|| malformed("empty key agreement algorithm"))?
        .oid()?;
    let kdf = match scheme {
        x if x == oid::ECDH_STD_SHA1KDF => Hash::Sha1,
        x if x == oid::ECDH_STD_SHA256KDF => Hash::Sha256,
        x if x == oid::ECDH_STD_SHA384KDF => Hash::Sha384,
        x if x == oid::ECDH_STD_SHA512KDF => Hash::Sha512,
        x => {
            return Err(SmimeError::Unsupported(format!(
                "key agreement scheme {}",
                oid::dotted(x)
            )));
        }
    };
    let wrap = alg_items
        .get(1)
        .ok_or_else(|| malformed("key agreement without a key wrap algorithm"))?
        .items()?;
    let wrap_oid = wrap
        .first()
        .ok_or_else(|| malformed("empty key wrap algorithm"))?
        .oid()?;
    let wrap_len = match wrap_oid {
        x if x == oid::AES128_WRAP => 16,
        x if x == oid::AES192_WRAP => 24,
        x if x == oid::AES256_WRAP => 32,
        x => {
            return Err(SmimeError::Unsupported(format!(
                "key wrap algorithm {}",
                oid::dotted(x)
            )));
        }
    };
    Ok(Some(Agreement {
        point,
        ukm,
        kdf,
        wrap_oid: wrap_oid.to_vec(),
        wrap_len,
        encrypted_key,
    }))
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
