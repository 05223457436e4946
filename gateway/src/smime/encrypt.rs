//! Encrypting: CMS EnvelopedData with AES-CBC (RFC 5652 §6) or AuthEnvelopedData with AES-GCM
//! (RFC 5083/5084), the content key sent to each recipient with RSA PKCS#1 v1.5 or RSA-OAEP
//! (SHA-256, RFC 4055). Key transport is a public-key operation on the host; no token needed.

use hsm::{AesMode, CipherDirection, ContentKey, Hash, KeyKind, KeyTransport};

use super::asn1::{algorithm, explicit, octets, oid, seq, set_of, tlv, uint};
use super::error::{Result, SmimeError};
use super::mime::{self, Entity};
use super::oid as ids;

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

/// Encrypts an RFC 5322 message to `recipients` (DER certificates): the top-level fields stay
/// outside, the Content-* fields and body are encrypted.
pub fn encrypt_message(
    message: &[u8],
    recipients: &[Vec<u8>],
    cipher: Cipher,
    oaep: bool,
) -> Result<Vec<u8>> {
    let entity = Entity::parse(message)?;
    let (outer, inner) = mime::split_content(&entity);
    let inner = mime::canonical_crlf(&inner).into_owned();
    let cms = encrypt_cms(&inner, recipients, cipher, oaep)?;

    let mut out = mime::canonical_crlf(&outer).into_owned();
    let kind = if cipher.is_gcm() {
        "authEnveloped-data"
    } else {
        "enveloped-data"
    };
    out.extend_from_slice(
        format!(
            "MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type={kind};\r\n name=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\nContent-Description: S/MIME Encrypted Message\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&mime::base64_encode(&cms));
    Ok(out)
}

/// EnvelopedData (CBC) or AuthEnvelopedData (GCM) over `content`, as a ContentInfo (DER).
pub fn encrypt_cms(
    content: &[u8],
    recipients: &[Vec<u8>],
    cipher: Cipher,
    oaep: bool,
) -> Result<Vec<u8>> {
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
        algorithm(ids::RSA_ENCRYPTION, Some(&super::asn1::null()))
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
    if cipher.is_gcm() {
        let nonce = hsm::random(12)?.to_vec();
        let mode = AesMode::Gcm {
            nonce: nonce.clone(),
            aad: Vec::new(),
            tag_len: 16,
        };
        let stream = key.cipher(CipherDirection::Encrypt, &mode)?;
        let (ciphertext, tag) = hsm::run_all(stream, content, None)?;
        let tag = tag.ok_or(SmimeError::Token(hsm::Error::Crypto("GCM tag")))?;
        let params = seq(&[&octets(&nonce), &uint(16)]);
        let eci = seq(&[
            &oid(ids::DATA),
            &algorithm(cipher.oid(), Some(&params)),
            &tlv(0x80, &ciphertext),
        ]);
        let body = seq(&[&uint(0), &set_of(&infos), &eci, &octets(&tag)]);
        Ok(seq(&[&oid(ids::AUTH_ENVELOPED_DATA), &explicit(0, &body)]))
    } else {
        let iv_bytes = hsm::random(16)?;
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&iv_bytes);
        let stream = key.cipher(CipherDirection::Encrypt, &AesMode::Cbc { iv })?;
        let (ciphertext, _) = hsm::run_all(stream, content, None)?;
        let eci = seq(&[
            &oid(ids::DATA),
            &algorithm(cipher.oid(), Some(&octets(&iv))),
            &tlv(0x80, &ciphertext),
        ]);
        let body = seq(&[&uint(0), &set_of(&infos), &eci]);
        Ok(seq(&[&oid(ids::ENVELOPED_DATA), &explicit(0, &body)]))
    }
}
