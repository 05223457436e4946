//! A token holding one private key in process memory, read from an unencrypted PEM file.
//!
//! For troubleshooting commands (`smimegw message sign --key key.pem`), the way `openssl cms
//! -inkey` works. The gateway itself keeps keys in a real token; this one stores nothing,
//! generates nothing and refuses imports. Private key operations are the software token's
//! (aws-lc-rs, implicit rejection on decryption).

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keymat::{KeyKind, PrivateKey, key_id};
use crate::soft::LoadedKey;
use crate::{
    AesOffload, Capabilities, ContentKey, ImportBundle, ImportReport, KeyRef, KeyTransport,
    ObjectInfo, ObjectType, SignAlgorithm, Token, TokenInfo, check_aes_len,
};

/// One private key from a PEM file, under the label it was given.
pub struct MemoryToken {
    label: String,
    id: Vec<u8>,
    spki: Vec<u8>,
    key: LoadedKey,
    rejection_secret: Zeroizing<Vec<u8>>,
    source: String,
}

impl std::fmt::Debug for MemoryToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryToken({}, {})", self.source, self.key.kind)
    }
}

const OID_RSA_DER: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
const OID_EC_DER: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

impl MemoryToken {
    /// Reads a PEM private key: `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) or
    /// `EC PRIVATE KEY` (SEC 1, named curve). Encrypted PEM is refused with a hint.
    /// `source` names the file in messages.
    pub fn from_pem(pem: &[u8], label: &str, source: &str) -> Result<Self> {
        let text = std::str::from_utf8(pem)
            .map_err(|_| Error::KeyMaterial(format!("{source}: not a PEM file")))?;
        let (kind, der) = der::pem::decode_vec(text.as_bytes())
            .map_err(|e| Error::KeyMaterial(format!("{source}: not a PEM private key ({e})")))?;
        let der = Zeroizing::new(der);
        let pkcs8 = match kind {
            "PRIVATE KEY" => Zeroizing::new(der.to_vec()),
            "RSA PRIVATE KEY" => wrap_pkcs8(&[OID_RSA_DER, &[0x05, 0x00]].concat(), &der),
            "EC PRIVATE KEY" => {
                let curve = sec1_curve(&der).ok_or_else(|| {
                    Error::KeyMaterial(format!("{source}: EC key without a named curve"))
                })?;
                wrap_pkcs8(&[OID_EC_DER, &curve].concat(), &der)
            }
            "ENCRYPTED PRIVATE KEY" => {
                return Err(Error::KeyMaterial(format!(
                    "{source} is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN) \
                     or import it into a token"
                )));
            }
            other => {
                return Err(Error::KeyMaterial(format!(
                    "{source} holds a {other}, not a private key"
                )));
            }
        };
        let parsed = PrivateKey::from_pkcs8(pkcs8)
            .map_err(|e| Error::KeyMaterial(format!("{source}: {e}")))?;
        let key = LoadedKey::from_pkcs8(parsed.kind(), parsed.pkcs8())
            .map_err(|e| Error::KeyMaterial(format!("{source}: {e}")))?;
        let mut secret = Zeroizing::new(vec![0u8; 32]);
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| Error::Crypto("random"))?;
        Ok(MemoryToken {
            label: label.to_string(),
            id: key_id(parsed.spki(), None),
            spki: parsed.spki().to_vec(),
            key,
            rejection_secret: secret,
            source: source.to_string(),
        })
    }

    /// What kind of key this is.
    pub fn kind(&self) -> KeyKind {
        self.key.kind
    }

    fn check(&self, key: &KeyRef) -> Result<()> {
        let label_ok = key.label.as_ref().is_none_or(|l| *l == self.label);
        let id_ok = key.id.as_ref().is_none_or(|i| *i == self.id);
        if label_ok && id_ok {
            Ok(())
        } else {
            Err(Error::NotFound {
                what: "private key",
                name: key.to_string(),
            })
        }
    }

    fn read_only(&self) -> Error {
        Error::Unsupported(format!(
            "changes to a key file ({}); use a token",
            self.source
        ))
    }
}

/// PrivateKeyInfo { version 0, AlgorithmIdentifier { `alg` }, OCTET STRING `key` }.
fn wrap_pkcs8(alg: &[u8], key: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut alg_id = vec![0x30];
    crate::ber::push_len(&mut alg_id, alg.len());
    alg_id.extend_from_slice(alg);
    let mut body = Zeroizing::new(vec![0x02, 0x01, 0x00]);
    body.extend_from_slice(&alg_id);
    body.push(0x04);
    crate::ber::push_len(&mut body, key.len());
    body.extend_from_slice(key);
    let mut out = Zeroizing::new(vec![0x30]);
    crate::ber::push_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// The named-curve OID (DER) from a SEC 1 ECPrivateKey's `[0] parameters`.
fn sec1_curve(der: &[u8]) -> Option<Vec<u8>> {
    let key = crate::ber::read_all(der).ok()?;
    key.children()
        .filter_map(|c| c.ok())
        .find(|c| c.is_context(0))
        .and_then(|p| p.inner().ok())
        .filter(|o| o.oid().is_ok())
        .map(|o| o.raw.to_vec())
}

impl Token for MemoryToken {
    fn info(&self) -> Result<TokenInfo> {
        Ok(TokenInfo {
            backend: "key file",
            label: self.label.clone(),
            manufacturer: "smimegw".into(),
            model: "aws-lc-rs".into(),
            serial: String::new(),
            location: self.source.clone(),
            max_sessions: usize::MAX,
        })
    }

    fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities {
            mechanisms: Vec::new(),
            rsa_pkcs1_sign: true,
            rsa_pss_sign: true,
            ecdsa_sign: true,
            rsa_pkcs1_decrypt: true,
            rsa_oaep_decrypt: true,
            rsa_oaep_sha2: Some(true),
            rsa_raw: false,
            unwrap: true,
            aes_cbc: true,
            aes_gcm: true,
            rsa_generate: false,
            rsa_min_bits: 1024,
            rsa_max_bits: 8192,
        })
    }

    fn list(&self) -> Result<Vec<ObjectInfo>> {
        Ok(vec![ObjectInfo {
            label: self.label.clone(),
            id: self.id.clone(),
            class: ObjectType::Private,
            description: self.key.kind.to_string(),
            protected: Some(false),
        }])
    }

    fn generate_rsa(&self, _label: &str, _bits: usize) -> Result<ObjectInfo> {
        Err(self.read_only())
    }

    fn import(&self, _label: &str, _bundle: &ImportBundle) -> Result<ImportReport> {
        Err(self.read_only())
    }

    fn delete(&self, _label: &str) -> Result<usize> {
        Err(self.read_only())
    }

    fn set_certificates(&self, _label: &str, _chain: &[Vec<u8>]) -> Result<()> {
        Err(self.read_only())
    }

    fn public_key(&self, key: &KeyRef) -> Result<Vec<u8>> {
        self.check(key)?;
        Ok(self.spki.clone())
    }

    fn certificates(&self, label: &str) -> Result<Vec<Vec<u8>>> {
        self.check(&KeyRef::label(label))?;
        Ok(Vec::new())
    }

    fn sign(&self, key: &KeyRef, alg: SignAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        self.check(key)?;
        self.key.sign(alg, digest)
    }

    fn unwrap_key(
        &self,
        key: &KeyRef,
        alg: &KeyTransport,
        blob: &[u8],
        key_len: usize,
        _place: AesOffload,
    ) -> Result<ContentKey> {
        self.check(key)?;
        check_aes_len(key_len)?;
        self.key.unwrap(&self.rejection_secret, alg, blob, key_len)
    }

    fn content_key(&self, bytes: &[u8], _place: AesOffload) -> Result<ContentKey> {
        ContentKey::host(bytes)
    }

    fn ecdh(&self, key: &KeyRef, peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.check(key)?;
        self.key.ecdh(peer_point)
    }
}
