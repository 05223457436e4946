//! Encrypting: CMS EnvelopedData with AES-CBC (RFC 5652 §6) or AuthEnvelopedData with AES-GCM
//! (RFC 5083/5084), the content key sent to each recipient with RSA PKCS#1 v1.5 or RSA-OAEP
//! (SHA-256, RFC 4055). Key transport is a public-key operation on the host; no token needed.

use std::io::{Cursor, Write};

use hsm::{AesMode, CipherDirection, ContentKey, Hash, KeyKind, KeyTransport};

use super::asn1::{self, algorithm, explicit, octets, oid, seq, set_of, uint};
use super::error::{Result, SmimeError};
use super::oid as ids;
use super::sign::{content_plan, emit_canonical, unchanged};
use super::stream::{self, B64Encoder, Source};

/// The content encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    Aes128Cbc,
    Aes256Cbc,
    Aes128Gcm,
    Aes256Gcm,
}

impl Cipher {
    fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Cbc | Cipher::Aes128Gcm => 16,
            Cipher::Aes256Cbc | Cipher::Aes256Gcm => 32,
        }
    }

    fn is_gcm(self) -> bool {
        matches!(self, Cipher::Aes128Gcm | Cipher::Aes256Gcm)
    }

    fn oid(self) -> &'static [u8] {
        match self {
            Cipher::Aes128Cbc => ids::AES128_CBC,
            Cipher::Aes256Cbc => ids::AES256_CBC,
            Cipher::Aes128Gcm => ids::AES128_GCM,
            Cipher::Aes256Gcm => ids::AES256_GCM,
        }
    }
}

/// Encrypts an RFC 5322 message in memory; see [`encrypt_stream`].
pub fn encrypt_message(
    message: &[u8],
    recipients: &[Vec<u8>],
    cipher: Cipher,
    oaep: bool,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(message.len() * 4 / 3 + 4096);
    encrypt_stream(
        &mut Cursor::new(message),
        recipients,
        cipher,
        oaep,
        &mut out,
    )?;
    Ok(out)
}

/// Encrypts an RFC 5322 message read from `src` to `recipients` (DER certificates), writing
/// the encrypted message to `out`: the top-level fields stay outside, the Content-* fields
/// and body are encrypted. The content is read twice (to measure it, then to encrypt it).
pub fn encrypt_stream(
    src: &mut dyn Source,
    recipients: &[Vec<u8>],
    cipher: Cipher,
    oaep: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let (outer, plan) = content_plan(src, false)?;
    let len = emit_canonical(src, &plan, &mut std::io::sink())?;
    out.write_all(&outer)?;
    let kind = if cipher.is_gcm() {
        "authEnveloped-data"
    } else {
        "enveloped-data"
    };
    write!(
        out,
        "MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type={kind};\r\n name=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\nContent-Description: S/MIME Encrypted Message\r\n\r\n"
    )?;
    let mut b64 = B64Encoder::new(&mut *out);
    encrypt_to(
        len,
        &mut |w| {
            let n = emit_canonical(src, &plan, w)?;
            unchanged(n, len)
        },
        recipients,
        cipher,
        oaep,
        &mut b64,
    )?;
    b64.finish()?;
    Ok(())
}

/// EnvelopedData (CBC) or AuthEnvelopedData (GCM) over `content`, as a ContentInfo (DER), in
/// memory.
pub fn encrypt_cms(
    content: &[u8],
    recipients: &[Vec<u8>],
    cipher: Cipher,
    oaep: bool,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(content.len() + 4096);
    encrypt_to(
        content.len() as u64,
        &mut |w| Ok(w.write_all(content)?),
        recipients,
        cipher,
        oaep,
        &mut out,
    )?;
    Ok(out)
}

/// Writes the ContentInfo (DER) for `len` bytes of content that `content` writes (once) into
/// the cipher.
fn encrypt_to(
    len: u64,
    content: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    recipients: &[Vec<u8>],
    cipher: Cipher,
    oaep: bool,
    out: &mut dyn Write,
) -> Result<()> {
    if recipients.is_empty() {
        return Err(SmimeError::Certificate("no recipients".into()));
    }
    let cek = hsm::random(cipher.key_len())?;
    let transport = if oaep {
        KeyTransport::RsaOaep {
            hash: Hash::Sha256,
            mgf1: Hash::Sha256,
            label: None,
        }
    } else {
        KeyTransport::RsaPkcs1
    };
    let key_alg = if oaep {
        let sha256 = algorithm(ids::SHA256, None);
        let params = seq(&[
            &explicit(0, &sha256),
            &explicit(1, &algorithm(ids::MGF1, Some(&sha256))),
        ]);
        algorithm(ids::RSAES_OAEP, Some(&params))
    } else {
        algorithm(ids::RSA_ENCRYPTION, Some(&asn1::null()))
    };
    let mut infos = Vec::new();
    for cert in recipients {
        let summary =
            hsm::cert_summary(cert).map_err(|e| SmimeError::Certificate(e.to_string()))?;
        let spki = super::signed::spki_of(cert)?;
        if !matches!(hsm::public::public_key_kind(&spki)?, KeyKind::Rsa { .. }) {
            return Err(SmimeError::Unsupported(format!(
                "encrypting to {} (not an RSA key; key agreement is not supported yet)",
                summary.subject
            )));
        }
        let blob = hsm::public::encrypt_key(&spki, &transport, &cek)?;
        infos.push(seq(&[
            &uint(0),
            &seq(&[&summary.issuer_der, &summary.serial_der]),
            &key_alg,
            &octets(&blob),
        ]));
    }
    let key = ContentKey::host(&cek)?;
    let (mode, params, ciphertext_len) = if cipher.is_gcm() {
        let nonce = hsm::random(12)?.to_vec();
        let params = seq(&[&octets(&nonce), &uint(16)]);
        let mode = AesMode::Gcm {
            nonce,
            aad: Vec::new(),
            tag_len: 16,
        };
        (mode, params, len)
    } else {
        let iv_bytes = hsm::random(16)?;
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&iv_bytes);
        // PKCS#7 padding always adds 1 to 16 bytes.
        (AesMode::Cbc { iv }, octets(&iv), (len / 16 + 1) * 16)
    };
    // The structure around the ciphertext, with lengths known in advance so that the
    // ciphertext streams between them.
    let data_oid = oid(ids::DATA);
    let alg = algorithm(cipher.oid(), Some(&params));
    let content_head = asn1::header(0x80, ciphertext_len);
    let eci_len = (data_oid.len() + alg.len() + content_head.len()) as u64 + ciphertext_len;
    let eci_head = asn1::header(0x30, eci_len);
    let version = uint(0);
    let infos = set_of(&infos);
    let mac_len = if cipher.is_gcm() { 18 } else { 0 }; // OCTET STRING of 16
    let body_len = (version.len() + infos.len() + eci_head.len() + mac_len) as u64 + eci_len;
    let body_head = asn1::header(0x30, body_len);
    let c0_len = body_head.len() as u64 + body_len;
    let c0_head = asn1::header(0xa0, c0_len);
    let kind = oid(if cipher.is_gcm() {
        ids::AUTH_ENVELOPED_DATA
    } else {
        ids::ENVELOPED_DATA
    });
    let ci_len = (kind.len() + c0_head.len()) as u64 + c0_len;
    for part in [
        asn1::header(0x30, ci_len),
        kind,
        c0_head,
        body_head,
        version,
        infos,
        eci_head,
        data_oid,
        alg,
        content_head,
    ] {
        out.write_all(&part)?;
    }
    let mut w = CipherWriter {
        stream: key.cipher(CipherDirection::Encrypt, &mode)?,
        out: &mut *out,
        buf: Vec::with_capacity(stream::CHUNK + 32),
        written: 0,
    };
    content(&mut w)?;
    let (tag, written) = w.finish()?;
    unchanged(written, ciphertext_len)?;
    if cipher.is_gcm() {
        let tag = tag.ok_or(SmimeError::Token(hsm::Error::Crypto("GCM tag")))?;
        out.write_all(&octets(&tag))?;
    }
    Ok(())
}

/// Encrypts what is written to it, passing the ciphertext on.
struct CipherWriter<'a> {
    stream: Box<dyn hsm::CipherStream>,
    out: &'a mut dyn Write,
    buf: Vec<u8>,
    written: u64,
}

impl CipherWriter<'_> {
    /// The GCM tag, and the ciphertext length.
    fn finish(mut self) -> Result<(Option<Vec<u8>>, u64)> {
        self.buf.clear();
        let tag = self.stream.finish(None, &mut self.buf)?;
        self.out.write_all(&self.buf)?;
        Ok((tag, self.written + self.buf.len() as u64))
    }
}

impl Write for CipherWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.clear();
        self.stream
            .update(data, &mut self.buf)
            .map_err(|e| stream::io_error(e.into()))?;
        self.out.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
