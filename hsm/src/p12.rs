//! Reading PKCS#12 files (RFC 7292): the private key and its certificate chain.
//!
//! Our own reader over [`crate::ber`], because the files people have are BER: NSS (Thunderbird,
//! Firefox) and Windows write indefinite lengths and chunked OCTET STRINGs inside the
//! MAC-protected and the encrypted parts, where a DER-only decoder fails. Accepted:
//! - integrity: the classic HMAC MAC (PKCS#12 KDF over SHA-1/SHA-256/SHA-384/SHA-512) and
//!   PBMAC1 (RFC 9579); the MAC is checked on the octets as received;
//! - privacy: PBES2 (PBKDF2 with HMAC-SHA-1/256/384/512; AES-128/192/256-CBC or
//!   DES-EDE3-CBC), and the PKCS#12 PBEs (SHA-1 with 3-key/2-key triple DES, RC2-128, RC2-40),
//!   which is what `openssl pkcs12 -export` (default and `-legacy`), NSS and Windows write;
//! - bags: keyBag, pkcs8ShroudedKeyBag, certBag (X.509), nested safeContentsBag.
//!
//! The password is used here and nowhere else; key material lives in zeroizing buffers and goes
//! from here straight into a token.

use std::borrow::Cow;
use std::num::NonZeroU32;

use aws_lc_rs::{digest, hmac, pbkdf2};
use zeroize::Zeroizing;

use crate::ber::{self, BerError, Tlv, tag};
use crate::error::{Error, Result};
use crate::keymat::{KeyKind, PrivateKey, cert_summary};
use crate::pin::Pin;

/// A private key and its certificate chain, ready for [`crate::Token::import`].
pub struct ImportBundle {
    pub(crate) key: PrivateKey,
    /// DER certificates, the end entity's first.
    pub chain: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ImportBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ImportBundle({:?}, {} certificates)",
            self.key.kind(),
            self.chain.len()
        )
    }
}

impl ImportBundle {
    /// A bundle from a PKCS#8 DER key and DER certificates (leaf first).
    pub fn from_parts(pkcs8: &[u8], chain: Vec<Vec<u8>>) -> Result<Self> {
        let key = PrivateKey::from_pkcs8(Zeroizing::new(pkcs8.to_vec()))?;
        if let Some(leaf) = chain.first() {
            key.check_matches_certificate(leaf)?;
        }
        Ok(ImportBundle { key, chain })
    }

    /// What kind of key this is.
    pub fn kind(&self) -> KeyKind {
        self.key.kind()
    }
}

/// Iteration counts above this are refused: a hostile file could otherwise keep the CPU busy
/// for hours. Real files use 2 048 (OpenSSL), 10 000 (NSS) to a few hundred thousand.
const MAX_ITERATIONS: u64 = 10_000_000;

/// How deep safeContentsBags may nest.
const MAX_BAG_DEPTH: usize = 4;

mod oid {
    pub const DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
    pub const ENCRYPTED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06];
    pub const ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
    pub const KEY_BAG: &[u8] = &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x01,
    ];
    pub const SHROUDED_KEY_BAG: &[u8] = &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02,
    ];
    pub const CERT_BAG: &[u8] = &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03,
    ];
    pub const SAFE_CONTENTS_BAG: &[u8] = &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x06,
    ];
    pub const X509_CERTIFICATE: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01];
    pub const LOCAL_KEY_ID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x15];
    pub const PBES2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
    pub const PBKDF2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
    pub const PBMAC1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0e];
    pub const SCRYPT: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x04, 0x0b];
    pub const HMAC_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x07];
    pub const HMAC_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x09];
    pub const HMAC_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x0a];
    pub const HMAC_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x0b];
    pub const AES128_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02];
    pub const AES192_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x16];
    pub const AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];
    pub const DES_EDE3_CBC: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x03, 0x07];
    pub const PBE_SHA1_3DES: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03];
    pub const PBE_SHA1_2DES: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x04];
    pub const PBE_SHA1_RC2_128: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x05];
    pub const PBE_SHA1_RC2_40: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x06];
    pub const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
    pub const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    pub const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
    pub const SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
}

fn damaged(where_: &str, e: BerError) -> Error {
    Error::Pkcs12(format!(
        "the file is not a PKCS#12 archive or is damaged ({where_}: {e})"
    ))
}

fn malformed(what: &str) -> Error {
    Error::Pkcs12(format!(
        "the file is not a PKCS#12 archive or is damaged ({what})"
    ))
}

fn unsupported(what: &str) -> Error {
    Error::Pkcs12(format!("unsupported protection scheme ({what})"))
}

fn wrong_password() -> Error {
    Error::Pkcs12("cannot decrypt: wrong password or damaged file".into())
}

/// Reads a PKCS#12 file. The password is used here and nowhere else.
pub fn read_pkcs12(data: &[u8], password: &Pin) -> Result<ImportBundle> {
    let pfx = ber::read_all(data).map_err(|e| damaged("outer structure", e))?;
    let items = pfx.items().map_err(|e| damaged("outer structure", e))?;
    let [version, auth_safe, rest @ ..] = items.as_slice() else {
        return Err(malformed("the outer SEQUENCE is too short"));
    };
    if version.uint().map_err(|e| damaged("version", e))? != 3 {
        return Err(malformed("version is not 3"));
    }
    let content = data_content(auth_safe).map_err(|e| damaged("authSafe", e))?;
    let content = content
        .ok_or_else(|| unsupported("the archive is protected with a public key, not a password"))?;
    let secret = Secret::new(password.expose().as_bytes());
    match rest.first() {
        Some(mac_data) => verify_mac(mac_data, &content, &secret)?,
        None => tracing::warn!("PKCS#12 file without integrity MAC"),
    }

    let mut found = Found::default();
    let safes = ber::read_all(&content).map_err(|e| damaged("AuthenticatedSafe", e))?;
    for info in safes.children() {
        let info = info.map_err(|e| damaged("AuthenticatedSafe", e))?;
        let contents = safe_contents(&info, &secret)?;
        read_bags(&contents, &secret, &mut found, 0)?;
    }
    found.into_bundle()
}

/// The password in the two encodings PKCS#12 uses.
struct Secret {
    /// As given (UTF-8), for PBES2 and PBMAC1.
    utf8: Zeroizing<Vec<u8>>,
    /// BMPString with a terminating NUL, for the PKCS#12 KDF.
    bmp: Zeroizing<Vec<u8>>,
}

impl Secret {
    fn new(password: &[u8]) -> Self {
        let text = String::from_utf8_lossy(password);
        let mut bmp = Zeroizing::new(Vec::with_capacity(text.len() * 2 + 2));
        for unit in text.encode_utf16() {
            bmp.extend_from_slice(&unit.to_be_bytes());
        }
        bmp.extend_from_slice(&[0, 0]);
        Secret {
            utf8: Zeroizing::new(password.to_vec()),
            bmp,
        }
    }
}

/// The octets inside a ContentInfo of type `data`; `None` for other types.
fn data_content<'a>(info: &Tlv<'a>) -> std::result::Result<Option<Cow<'a, [u8]>>, BerError> {
    let items = info.items()?;
    let [kind, explicit, ..] = items.as_slice() else {
        return Err(BerError {
            what: "ContentInfo too short",
            offset: 0,
        });
    };
    if kind.oid()? != oid::DATA {
        return Ok(None);
    }
    Ok(Some(
        explicit
            .inner()?
            .expect(tag::OCTET_STRING, "expected an OCTET STRING")?
            .octets()?,
    ))
}

fn verify_mac(mac_data: &Tlv<'_>, content: &[u8], secret: &Secret) -> Result<()> {
    let bad = |e| damaged("MacData", e);
    let items = mac_data.items().map_err(bad)?;
    let [digest_info, salt, rest @ ..] = items.as_slice() else {
        return Err(malformed("MacData too short"));
    };
    let iterations = match rest.first() {
        Some(i) => i.uint().map_err(bad)?,
        None => 1,
    };
    let di = digest_info.items().map_err(bad)?;
    let [alg, expected] = di.as_slice() else {
        return Err(malformed("MAC DigestInfo"));
    };
    let expected = expected.octets().map_err(bad)?;
    let alg = alg.items().map_err(bad)?;
    let alg_oid = alg
        .first()
        .ok_or_else(|| malformed("MAC algorithm"))?
        .oid()
        .map_err(bad)?;

    let (hmac_alg, key) = if alg_oid == oid::PBMAC1 {
        // RFC 9579: PBKDF2 over the UTF-8 password, then the named HMAC.
        let params = alg
            .get(1)
            .ok_or_else(|| malformed("PBMAC1 without parameters"))?
            .items()
            .map_err(bad)?;
        let [kdf, scheme] = params.as_slice() else {
            return Err(malformed("PBMAC1 parameters"));
        };
        let kdf = Pbkdf2::parse(kdf)?;
        let hmac_alg = hmac_by_oid(algorithm_oid(scheme)?)?;
        let len = kdf
            .key_len
            .ok_or_else(|| malformed("PBMAC1 without a key length"))?;
        (hmac_alg, kdf.derive(&secret.utf8, len)?)
    } else {
        let (hash, hmac_alg) = match alg_oid {
            o if o == oid::SHA1 => (
                &digest::SHA1_FOR_LEGACY_USE_ONLY,
                hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            ),
            o if o == oid::SHA256 => (&digest::SHA256, hmac::HMAC_SHA256),
            o if o == oid::SHA384 => (&digest::SHA384, hmac::HMAC_SHA384),
            o if o == oid::SHA512 => (&digest::SHA512, hmac::HMAC_SHA512),
            _ => return Err(unsupported("MAC digest algorithm")),
        };
        let salt = salt.octets().map_err(bad)?;
        let key = pkcs12_kdf(hash, 3, &secret.bmp, &salt, iterations, hash.output_len())?;
        (hmac_alg, key)
    };
    let key = hmac::Key::new(hmac_alg, &key);
    hmac::verify(&key, content, &expected)
        .map_err(|_| Error::Pkcs12("wrong password (the integrity check failed)".into()))
}

fn algorithm_oid<'a>(alg: &Tlv<'a>) -> Result<&'a [u8]> {
    alg.items()
        .ok()
        .and_then(|i| i.first().and_then(|o| o.oid().ok()))
        .ok_or_else(|| malformed("AlgorithmIdentifier"))
}

fn hmac_by_oid(o: &[u8]) -> Result<hmac::Algorithm> {
    Ok(match o {
        o if o == oid::HMAC_SHA1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        o if o == oid::HMAC_SHA256 => hmac::HMAC_SHA256,
        o if o == oid::HMAC_SHA384 => hmac::HMAC_SHA384,
        o if o == oid::HMAC_SHA512 => hmac::HMAC_SHA512,
        _ => return Err(unsupported("HMAC algorithm")),
    })
}

/// The SafeContents bytes of one ContentInfo of the AuthenticatedSafe, decrypted if needed.
fn safe_contents(info: &Tlv<'_>, secret: &Secret) -> Result<Zeroizing<Vec<u8>>> {
    let bad = |e| damaged("AuthenticatedSafe entry", e);
    if let Some(octets) = data_content(info).map_err(bad)? {
        return Ok(Zeroizing::new(octets.into_owned()));
    }
    let items = info.items().map_err(bad)?;
    let kind = items[0].oid().map_err(bad)?;
    if kind == oid::ENVELOPED_DATA {
        return Err(unsupported(
            "part of the archive is encrypted to a public key, not a password",
        ));
    }
    if kind != oid::ENCRYPTED_DATA {
        return Err(unsupported("unknown AuthenticatedSafe content type"));
    }
    // EncryptedData ::= SEQUENCE { version, EncryptedContentInfo }
    let encrypted = items
        .get(1)
        .ok_or_else(|| malformed("EncryptedData missing"))?
        .inner()
        .map_err(bad)?
        .items()
        .map_err(bad)?;
    let eci = encrypted
        .get(1)
        .ok_or_else(|| malformed("EncryptedContentInfo missing"))?
        .items()
        .map_err(bad)?;
    let [_type, alg, body, ..] = eci.as_slice() else {
        return Err(malformed("EncryptedContentInfo has no content"));
    };
    if !body.is_context(0) {
        return Err(malformed("EncryptedContentInfo content is not [0]"));
    }
    let ciphertext = body.octets().map_err(bad)?;
    decrypt(alg, &ciphertext, secret)
}

/// A bag's localKeyId attribute, which ties a key to its certificate.
type LocalKeyId = Option<Vec<u8>>;

#[derive(Default)]
struct Found {
    /// PKCS#8 DER keys with their localKeyId.
    keys: Vec<(Zeroizing<Vec<u8>>, LocalKeyId)>,
    /// DER certificates with their localKeyId.
    certs: Vec<(Vec<u8>, LocalKeyId)>,
}

fn read_bags(contents: &[u8], secret: &Secret, found: &mut Found, depth: usize) -> Result<()> {
    if depth > MAX_BAG_DEPTH {
        return Err(malformed("safe contents nested too deeply"));
    }
    let bad = |e| damaged("SafeContents", e);
    let safe = ber::read_all(contents).map_err(bad)?;
    for bag in safe.children() {
        let bag = bag.map_err(bad)?;
        let items = bag.items().map_err(bad)?;
        let [bag_id, value, attrs @ ..] = items.as_slice() else {
            return Err(malformed("SafeBag too short"));
        };
        let bag_id = bag_id.oid().map_err(bad)?;
        let value = value.inner().map_err(bad)?;
        let local_key_id = attrs
            .first()
            .map(|set| local_key_id(set))
            .transpose()?
            .flatten();
        match bag_id {
            b if b == oid::KEY_BAG => {
                let der = Zeroizing::new(ber::to_der(value.raw).map_err(bad)?);
                found.keys.push((der, local_key_id));
            }
            b if b == oid::SHROUDED_KEY_BAG => {
                let parts = value.items().map_err(bad)?;
                let [alg, data] = parts.as_slice() else {
                    return Err(malformed("EncryptedPrivateKeyInfo"));
                };
                let plain = decrypt(alg, &data.octets().map_err(bad)?, secret)?;
                let der = Zeroizing::new(ber::to_der(&plain).map_err(|_| wrong_password())?);
                found.keys.push((der, local_key_id));
            }
            b if b == oid::CERT_BAG => {
                let parts = value.items().map_err(bad)?;
                let [cert_type, cert, ..] = parts.as_slice() else {
                    return Err(malformed("CertBag"));
                };
                if cert_type.oid().map_err(bad)? != oid::X509_CERTIFICATE {
                    continue; // SDSI certificates: not ours to use.
                }
                let octets = cert.inner().map_err(bad)?.octets().map_err(bad)?;
                let der = ber::to_der(&octets).map_err(bad)?;
                found.certs.push((der, local_key_id));
            }
            b if b == oid::SAFE_CONTENTS_BAG => {
                read_bags(value.raw, secret, found, depth + 1)?;
            }
            _ => {} // CRLs and secrets are not imported.
        }
    }
    Ok(())
}

/// The localKeyId among a bag's attributes.
fn local_key_id(set: &Tlv<'_>) -> Result<Option<Vec<u8>>> {
    let bad = |e| damaged("bag attributes", e);
    for attr in set.children() {
        let attr = attr.map_err(bad)?;
        let parts = attr.items().map_err(bad)?;
        if let [kind, values] = parts.as_slice()
            && kind.oid().map_err(bad)? == oid::LOCAL_KEY_ID
            && let Some(value) = values.children().next()
        {
            return Ok(Some(
                value.map_err(bad)?.octets().map_err(bad)?.into_owned(),
            ));
        }
    }
    Ok(None)
}

impl Found {
    fn into_bundle(self) -> Result<ImportBundle> {
        if self.keys.is_empty() {
            return Err(Error::Pkcs12("the file holds no private key".into()));
        }
        if self.keys.len() > 1 {
            tracing::warn!(
                keys = self.keys.len(),
                "PKCS#12 file holds several keys; importing the first with a certificate"
            );
        }
        for (key, id) in &self.keys {
            let pkcs8 = PrivateKey::from_pkcs8(key.clone())?;
            // The leaf: the certificate with the same localKeyId, else the one whose public
            // key matches.
            let leaf = self
                .certs
                .iter()
                .find(|(_, cid)| id.is_some() && cid == id)
                .filter(|(c, _)| pkcs8.check_matches_certificate(c).is_ok())
                .or_else(|| {
                    self.certs
                        .iter()
                        .find(|(c, _)| pkcs8.check_matches_certificate(c).is_ok())
                });
            if let Some((leaf, _)) = leaf {
                let chain = order_chain(leaf, &self.certs)?;
                return ImportBundle::from_parts(key, chain);
            }
        }
        Err(Error::Pkcs12(
            "the file holds no private key with a matching certificate".into(),
        ))
    }
}

/// The leaf, then its issuer, then that one's issuer..., from the certificates in the file.
/// Certificates that are not on the path are left out.
fn order_chain(leaf: &[u8], certs: &[(Vec<u8>, LocalKeyId)]) -> Result<Vec<Vec<u8>>> {
    let summaries: Vec<_> = certs
        .iter()
        .map(|(c, _)| cert_summary(c).map(|s| (c, s)))
        .collect::<Result<_>>()?;
    let mut chain = vec![leaf.to_vec()];
    let mut current = cert_summary(leaf)?;
    while chain.len() < 10 && current.subject_der != current.issuer_der {
        let next = summaries.iter().find(|(c, s)| {
            s.subject_der == current.issuer_der && !chain.iter().any(|have| have == *c)
        });
        match next {
            Some((c, s)) => {
                chain.push(c.to_vec());
                current = s.clone();
            }
            None => break,
        }
    }
    Ok(chain)
}

// --- Decryption -------------------------------------------------------------------------

/// Decrypts `ciphertext` under the password-based scheme `alg` (an AlgorithmIdentifier).
fn decrypt(alg: &Tlv<'_>, ciphertext: &[u8], secret: &Secret) -> Result<Zeroizing<Vec<u8>>> {
    let bad = |e| damaged("encryption parameters", e);
    let items = alg.items().map_err(bad)?;
    let [scheme, params, ..] = items.as_slice() else {
        return Err(malformed("encryption algorithm without parameters"));
    };
    let scheme = scheme.oid().map_err(bad)?;
    if scheme == oid::PBES2 {
        let p = params.items().map_err(bad)?;
        let [kdf, enc] = p.as_slice() else {
            return Err(malformed("PBES2 parameters"));
        };
        let enc_items = enc.items().map_err(bad)?;
        let [cipher, iv, ..] = enc_items.as_slice() else {
            return Err(malformed("PBES2 encryption scheme"));
        };
        let cipher = match cipher.oid().map_err(bad)? {
            c if c == oid::AES128_CBC => Cipher::Aes(16),
            c if c == oid::AES192_CBC => Cipher::Aes(24),
            c if c == oid::AES256_CBC => Cipher::Aes(32),
            c if c == oid::DES_EDE3_CBC => Cipher::Des3,
            _ => return Err(unsupported("PBES2 cipher")),
        };
        if algorithm_oid(kdf)? == oid::SCRYPT {
            return Err(unsupported("scrypt key derivation in PKCS#12"));
        }
        let kdf = Pbkdf2::parse(kdf)?;
        if kdf.key_len.is_some_and(|l| l != cipher.key_len()) {
            return Err(malformed("PBKDF2 key length does not fit the cipher"));
        }
        let key = kdf.derive(&secret.utf8, cipher.key_len())?;
        let iv = iv.octets().map_err(bad)?;
        return cipher.decrypt_cbc(&key, &iv, ciphertext);
    }
    let (cipher, key_len) = match scheme {
        s if s == oid::PBE_SHA1_3DES => (Cipher::Des3, 24),
        s if s == oid::PBE_SHA1_2DES => (Cipher::Des2, 16),
        s if s == oid::PBE_SHA1_RC2_128 => (Cipher::Rc2(128), 16),
        s if s == oid::PBE_SHA1_RC2_40 => (Cipher::Rc2(40), 5),
        _ => return Err(unsupported("password-based encryption algorithm")),
    };
    let p = params.items().map_err(bad)?;
    let [salt, iterations] = p.as_slice() else {
        return Err(malformed("PKCS#12 PBE parameters"));
    };
    let salt = salt.octets().map_err(bad)?;
    let iterations = iterations.uint().map_err(bad)?;
    let sha1 = &digest::SHA1_FOR_LEGACY_USE_ONLY;
    let key = pkcs12_kdf(sha1, 1, &secret.bmp, &salt, iterations, key_len)?;
    let iv = pkcs12_kdf(sha1, 2, &secret.bmp, &salt, iterations, 8)?;
    cipher.decrypt_cbc(&key, &iv, ciphertext)
}

struct Pbkdf2 {
    salt: Vec<u8>,
    iterations: NonZeroU32,
    key_len: Option<usize>,
    prf: pbkdf2::Algorithm,
}

impl Pbkdf2 {
    /// From a PBKDF2 AlgorithmIdentifier.
    fn parse(alg: &Tlv<'_>) -> Result<Self> {
        let bad = |e| damaged("PBKDF2 parameters", e);
        let items = alg.items().map_err(bad)?;
        let [kdf_oid, params] = items.as_slice() else {
            return Err(malformed("PBKDF2 without parameters"));
        };
        if kdf_oid.oid().map_err(bad)? != oid::PBKDF2 {
            return Err(unsupported("key derivation function"));
        }
        let p = params.items().map_err(bad)?;
        let mut it = p.iter();
        let salt = it.next().ok_or_else(|| malformed("PBKDF2 salt"))?;
        if !salt.is(tag::OCTET_STRING) {
            return Err(unsupported("PBKDF2 salt from another source"));
        }
        let salt = salt.octets().map_err(bad)?.into_owned();
        let iterations = it
            .next()
            .ok_or_else(|| malformed("PBKDF2 iteration count"))?
            .uint()
            .map_err(bad)?;
        let iterations = check_iterations(iterations)?;
        let mut key_len = None;
        let mut prf = pbkdf2::PBKDF2_HMAC_SHA1;
        for item in it {
            if item.is(tag::INTEGER) {
                let len = item.uint().map_err(bad)?;
                if len == 0 || len > 64 {
                    return Err(malformed("PBKDF2 key length"));
                }
                key_len = Some(len as usize);
            } else {
                prf = match algorithm_oid(item)? {
                    o if o == oid::HMAC_SHA1 => pbkdf2::PBKDF2_HMAC_SHA1,
                    o if o == oid::HMAC_SHA256 => pbkdf2::PBKDF2_HMAC_SHA256,
                    o if o == oid::HMAC_SHA384 => pbkdf2::PBKDF2_HMAC_SHA384,
                    o if o == oid::HMAC_SHA512 => pbkdf2::PBKDF2_HMAC_SHA512,
                    _ => return Err(unsupported("PBKDF2 pseudo-random function")),
                };
            }
        }
        Ok(Pbkdf2 {
            salt,
            iterations,
            key_len,
            prf,
        })
    }

    fn derive(&self, password: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(vec![0u8; len]);
        pbkdf2::derive(self.prf, self.iterations, &self.salt, password, &mut out);
        Ok(out)
    }
}

fn check_iterations(n: u64) -> Result<NonZeroU32> {
    if n > MAX_ITERATIONS {
        return Err(Error::Pkcs12(format!(
            "iteration count {n} is above the limit of {MAX_ITERATIONS}"
        )));
    }
    NonZeroU32::new(n as u32).ok_or_else(|| malformed("iteration count 0"))
}

/// The PKCS#12 key derivation function (RFC 7292 appendix B.2). `id` 1 makes keys, 2 IVs,
/// 3 MAC keys; `password` is the BMPString form with its terminating NUL.
fn pkcs12_kdf(
    hash: &'static digest::Algorithm,
    id: u8,
    password: &[u8],
    salt: &[u8],
    iterations: u64,
    n: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    let iterations = check_iterations(iterations)?.get();
    let u = hash.output_len();
    let v = hash.block_len();
    let fill = |src: &[u8]| -> Vec<u8> {
        if src.is_empty() {
            return Vec::new();
        }
        let len = v * src.len().div_ceil(v);
        src.iter().cycle().take(len).copied().collect()
    };
    let d = vec![id; v];
    let mut i = Zeroizing::new(fill(salt));
    i.extend_from_slice(&fill(password));
    let mut out = Zeroizing::new(Vec::with_capacity(n + u));
    while out.len() < n {
        let mut ctx = digest::Context::new(hash);
        ctx.update(&d);
        ctx.update(&i);
        let mut a = Zeroizing::new(ctx.finish().as_ref().to_vec());
        for _ in 1..iterations {
            a = Zeroizing::new(digest::digest(hash, &a).as_ref().to_vec());
        }
        out.extend_from_slice(&a);
        if out.len() >= n {
            break;
        }
        // I_j = (I_j + B + 1) mod 2^(8v), with B = A repeated to v bytes.
        let b: Zeroizing<Vec<u8>> = Zeroizing::new(a.iter().cycle().take(v).copied().collect());
        for block in i.chunks_mut(v) {
            let mut carry = 1u16;
            for k in (0..v).rev() {
                let sum = block[k] as u16 + b[k] as u16 + carry;
                block[k] = sum as u8;
                carry = sum >> 8;
            }
        }
    }
    out.truncate(n);
    Ok(out)
}

#[derive(Clone, Copy)]
enum Cipher {
    /// AES with this key length in bytes.
    Aes(usize),
    Des3,
    Des2,
    /// RC2 with this effective key length in bits.
    Rc2(usize),
}

impl Cipher {
    fn key_len(self) -> usize {
        match self {
            Cipher::Aes(n) => n,
            Cipher::Des3 => 24,
            Cipher::Des2 => 16,
            Cipher::Rc2(bits) => bits / 8,
        }
    }

    fn decrypt_cbc(self, key: &[u8], iv: &[u8], ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        use des::cipher::KeyInit;
        match self {
            Cipher::Aes(_) => {
                use aws_lc_rs::cipher::{
                    AES_128, AES_192, AES_256, DecryptionContext, PaddedBlockDecryptingKey,
                    UnboundCipherKey,
                };
                let alg = match key.len() {
                    16 => &AES_128,
                    24 => &AES_192,
                    _ => &AES_256,
                };
                let iv: [u8; 16] = iv
                    .try_into()
                    .map_err(|_| malformed("AES-CBC IV is not 16 bytes"))?;
                let key = UnboundCipherKey::new(alg, key).map_err(|_| wrong_password())?;
                let key = PaddedBlockDecryptingKey::cbc_pkcs7(key).map_err(|_| wrong_password())?;
                let mut buf = Zeroizing::new(ciphertext.to_vec());
                let plain = key
                    .decrypt(&mut buf, DecryptionContext::Iv128(iv.into()))
                    .map_err(|_| wrong_password())?;
                Ok(Zeroizing::new(plain.to_vec()))
            }
            Cipher::Des3 => {
                let c = des::TdesEde3::new_from_slice(key).map_err(|_| wrong_password())?;
                cbc_decrypt(&c, iv, ciphertext)
            }
            Cipher::Des2 => {
                let c = des::TdesEde2::new_from_slice(key).map_err(|_| wrong_password())?;
                cbc_decrypt(&c, iv, ciphertext)
            }
            Cipher::Rc2(bits) => {
                let c = rc2::Rc2::new_with_eff_key_len(key, bits);
                cbc_decrypt(&c, iv, ciphertext)
            }
        }
    }
}

/// CBC decryption with PKCS#7 padding over a 64-bit block cipher (legacy files only).
fn cbc_decrypt<C>(cipher: &C, iv: &[u8], ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>>
where
    C: des::cipher::BlockCipherDecrypt<BlockSize = des::cipher::consts::U8>,
{
    if iv.len() != 8 || ciphertext.is_empty() || !ciphertext.len().is_multiple_of(8) {
        return Err(wrong_password());
    }
    let mut out = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
    let mut previous = [0u8; 8];
    previous.copy_from_slice(iv);
    for chunk in ciphertext.chunks(8) {
        let mut block = des::cipher::Block::<C>::default();
        block.copy_from_slice(chunk);
        cipher.decrypt_block(&mut block);
        out.extend(block.iter().zip(previous).map(|(b, p)| b ^ p));
        previous.copy_from_slice(chunk);
    }
    let pad = *out.last().unwrap_or(&0) as usize;
    if pad == 0 || pad > 8 || out[out.len() - pad..].iter().any(|b| *b as usize != pad) {
        return Err(wrong_password());
    }
    let keep = out.len() - pad;
    out.truncate(keep);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    #[test]
    fn pkcs12_kdf_matches_openssl() {
        // Derived with OpenSSL's PKCS12_key_gen_uni for password "smeg", salt 0A58CF64530D823F,
        // one iteration (the long-standing test vector from OpenSSL's pkcs12 test suite).
        let secret = Secret::new(b"smeg");
        let salt = [0x0a, 0x58, 0xcf, 0x64, 0x53, 0x0d, 0x82, 0x3f];
        let key = pkcs12_kdf(
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            1,
            &secret.bmp,
            &salt,
            1,
            24,
        )
        .unwrap();
        assert_eq!(
            hex(&key),
            "8aaae6297b6cb04642ab5b077851284eb7128f1a2a7fbca3"
        );
        let iv = pkcs12_kdf(
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            2,
            &secret.bmp,
            &salt,
            1,
            8,
        )
        .unwrap();
        assert_eq!(hex(&iv), "79993dfe048d3b76");
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let pin = Pin::new("x".into());
        for input in [
            &b""[..],
            b"\x30\x03\x02\x01\x03",
            b"\x30\x80\x02\x01\x03",
            b"hello",
        ] {
            let e = read_pkcs12(input, &pin).unwrap_err().to_string();
            assert!(e.contains("PKCS#12"), "{e}");
        }
    }
}
