//! The software token: the embedded default when no HSM is configured.
//!
//! Layout of its directory (mode 0700):
//! ```text
//! token.check            PBES2-encrypted: a magic string and this token's rejection secret
//! objects/<id>/label     the object's label
//! objects/<id>/kind      "RSA 2048", "EC P-256"
//! objects/<id>/key.pem   ENCRYPTED PRIVATE KEY (PKCS#8 PBES2: scrypt N=2^15 r=8 p=1, AES-256-CBC)
//! objects/<id>/public.der SubjectPublicKeyInfo
//! objects/<id>/cert-N.der certificates, the end entity's first
//! ```
//! Objects are written to a temporary directory, fsynced, then renamed into place, so a crash
//! never leaves half a key. Private key operations run in aws-lc-rs (constant-time); decrypted
//! keys are cached in memory for the life of the process.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use aws_lc_rs::digest::Digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OAEP_SHA384_MGF1SHA384, OAEP_SHA512_MGF1SHA512,
    OaepPrivateDecryptingKey, Pkcs1PrivateDecryptingKey, PrivateDecryptingKey,
};
use aws_lc_rs::signature::{EcdsaKeyPair, RsaKeyPair};
use der::{Decode, Encode};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keymat::{KeyKind, PrivateKey, key_id};
use crate::padding::{ct_select, rejection_key};
use crate::pin::Pin;
use crate::{
    AesOffload, Capabilities, ContentKey, Hash, ImportBundle, ImportReport, KeyRef, KeyTransport,
    MechanismReport, ObjectInfo, ObjectType, SignAlgorithm, Token, TokenInfo, check_aes_len, hex,
};

const CHECK_MAGIC: &[u8] = b"smimegw-soft-token-v1:";
const CHECK_FILE: &str = "token.check";

/// The shortest passphrase a new software token accepts (its keys are only as safe as it,
/// against anyone who copies the directory). Tokens made before keep opening.
pub const MIN_PASSPHRASE: usize = 8;

/// Keys in a directory, encrypted under a passphrase.
pub struct SoftToken {
    dir: PathBuf,
    pin: Pin,
    /// HMAC key for implicit rejection (see `Token::unwrap_key`).
    rejection_secret: Zeroizing<Vec<u8>>,
    /// Decrypted keys by the name callers use, so signing does no file I/O after the first use.
    cache: RwLock<HashMap<KeyRef, Arc<LoadedKey>>>,
    serial: String,
}

impl std::fmt::Debug for SoftToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SoftToken({})", self.dir.display())
    }
}

enum Loaded {
    Rsa {
        sign: RsaKeyPair,
        decrypt: PrivateDecryptingKey,
    },
    Ec {
        sign: EcdsaKeyPair,
        agree: aws_lc_rs::agreement::PrivateKey,
    },
}

/// A private key ready for aws-lc-rs.
pub(crate) struct LoadedKey {
    pub(crate) kind: KeyKind,
    key: Loaded,
}

impl LoadedKey {
    /// From PKCS#8 DER; the error is aws-lc's reason.
    pub(crate) fn from_pkcs8(kind: KeyKind, der: &[u8]) -> std::result::Result<Self, String> {
        let key = match kind {
            KeyKind::Rsa { .. } => Loaded::Rsa {
                sign: RsaKeyPair::from_pkcs8(der).map_err(|e| e.to_string())?,
                decrypt: PrivateDecryptingKey::from_pkcs8(der).map_err(|e| e.to_string())?,
            },
            kind => Loaded::Ec {
                sign: EcdsaKeyPair::from_pkcs8(kind.ecdsa_alg().ok_or("curve")?, der)
                    .map_err(|e| e.to_string())?,
                agree: aws_lc_rs::agreement::PrivateKey::from_private_key_der(
                    kind.ecdh_alg().ok_or("curve")?,
                    der,
                )
                .map_err(|e| e.to_string())?,
            },
        };
        Ok(LoadedKey { kind, key })
    }

    /// ECDH with the peer's public point (uncompressed SEC1): the shared secret Z.
    pub(crate) fn ecdh(&self, peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let Loaded::Ec { agree, .. } = &self.key else {
            return Err(Error::Unsupported(format!(
                "key agreement with an {} key",
                self.kind
            )));
        };
        let peer = aws_lc_rs::agreement::UnparsedPublicKey::new(agree.algorithm(), peer_point);
        aws_lc_rs::agreement::agree(
            agree,
            peer,
            Error::Invalid("the peer's EC public key is not a point on the key's curve".into()),
            |z| Ok(Zeroizing::new(z.to_vec())),
        )
    }

    pub(crate) fn sign(&self, alg: SignAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        let hash = alg.hash();
        if digest.len() != hash.output_len() {
            return Err(Error::Invalid(format!(
                "a {} digest is {} bytes, not {}",
                hash.name(),
                hash.output_len(),
                digest.len()
            )));
        }
        if hash == Hash::Sha1 {
            return Err(Error::Unsupported(
                "SHA-1 signatures (they are no longer made)".into(),
            ));
        }
        let d =
            Digest::import_less_safe(digest, hash.aws()).map_err(|_| Error::Crypto("digest"))?;
        let k = self;
        match (&k.key, alg) {
            (Loaded::Rsa { sign, .. }, SignAlgorithm::RsaPkcs1(_) | SignAlgorithm::RsaPss(_)) => {
                use aws_lc_rs::signature as s;
                let enc: &'static dyn s::RsaEncoding = match alg {
                    SignAlgorithm::RsaPkcs1(Hash::Sha256) => &s::RSA_PKCS1_SHA256,
                    SignAlgorithm::RsaPkcs1(Hash::Sha384) => &s::RSA_PKCS1_SHA384,
                    SignAlgorithm::RsaPkcs1(_) => &s::RSA_PKCS1_SHA512,
                    SignAlgorithm::RsaPss(Hash::Sha256) => &s::RSA_PSS_SHA256,
                    SignAlgorithm::RsaPss(Hash::Sha384) => &s::RSA_PSS_SHA384,
                    _ => &s::RSA_PSS_SHA512,
                };
                let mut sig = vec![0u8; sign.public_modulus_len()];
                sign.sign_digest(enc, &d, &mut sig)
                    .map_err(|_| Error::Crypto("RSA signature"))?;
                Ok(sig)
            }
            (Loaded::Ec { sign: kp, .. }, SignAlgorithm::Ecdsa(h)) => {
                let want = match k.kind {
                    KeyKind::EcP256 => Hash::Sha256,
                    _ => Hash::Sha384,
                };
                if h != want {
                    return Err(Error::Unsupported(format!(
                        "ECDSA {} with {} in the software token (use {})",
                        k.kind,
                        h.name(),
                        want.name()
                    )));
                }
                let sig = kp
                    .sign_digest(&d)
                    .map_err(|_| Error::Crypto("ECDSA signature"))?;
                Ok(sig.as_ref().to_vec())
            }
            _ => Err(Error::Invalid(format!("{alg} with a {} key", k.kind))),
        }
    }

    /// Key transport decryption with implicit rejection (see `Token::unwrap_key`).
    pub(crate) fn unwrap(
        &self,
        rejection_secret: &[u8],
        alg: &KeyTransport,
        blob: &[u8],
        key_len: usize,
    ) -> Result<ContentKey> {
        check_aes_len(key_len)?;
        let k = self;
        let Loaded::Rsa { decrypt, .. } = &k.key else {
            return Err(Error::Invalid(format!("{alg} with a {} key", k.kind)));
        };
        // Implicit rejection: the stand-in is computed first, whatever happens next.
        let fake = Zeroizing::new(rejection_key(rejection_secret, blob, key_len));
        let mut out = Zeroizing::new(vec![0u8; decrypt.key_size_bytes()]);
        let got: Option<usize> = match alg {
            KeyTransport::RsaPkcs1 => Pkcs1PrivateDecryptingKey::new(decrypt.clone())
                .map_err(|_| Error::Crypto("RSA key"))?
                .decrypt(blob, &mut out)
                .ok()
                .map(|p| p.len()),
            KeyTransport::RsaOaep { hash, mgf1, label } => {
                let a = oaep_alg(*hash, *mgf1)?;
                OaepPrivateDecryptingKey::new(decrypt.clone())
                    .map_err(|_| Error::Crypto("RSA key"))?
                    .decrypt(a, blob, &mut out, label.as_deref())
                    .ok()
                    .map(|p| p.len())
            }
        };
        let ok = subtle::Choice::from(u8::from(got == Some(key_len)));
        let real = &out[..key_len.min(out.len())];
        let chosen = Zeroizing::new(ct_select(ok, real, &fake));
        ContentKey::host(&chosen)
    }
}

/// One object directory, read without decrypting anything.
struct Entry {
    dirname: String,
    label: String,
    id: Vec<u8>,
    kind: KeyKind,
}

impl SoftToken {
    /// True when `dir` holds a software token.
    pub fn exists(dir: &Path) -> bool {
        dir.join(CHECK_FILE).is_file()
    }

    /// Creates a new, empty token protected by `pin`.
    pub fn create(dir: &Path, pin: &Pin) -> Result<Self> {
        if Self::exists(dir) {
            return Err(Error::storage(dir, "a software token already exists here"));
        }
        let length = pin.expose().chars().count();
        if length < MIN_PASSPHRASE {
            return Err(Error::Invalid(format!(
                "a new software token's passphrase must be at least {MIN_PASSPHRASE} \
                 characters (this one has {length}); no token was created"
            )));
        }
        Self::init(dir, pin)
    }

    /// Makes the token files (the passphrase already judged).
    fn init(dir: &Path, pin: &Pin) -> Result<Self> {
        create_private_dir(dir)?;
        create_private_dir(&dir.join("objects"))?;
        let mut secret = Zeroizing::new(vec![0u8; 32]);
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| Error::Crypto("random"))?;
        // SEQUENCE { OCTET STRING }, because PKCS#8 decryption insists on a DER SEQUENCE.
        let octets = Zeroizing::new(
            der::asn1::OctetString::new([CHECK_MAGIC, &secret[..]].concat())
                .and_then(|o| o.to_der())
                .map_err(|_| Error::Crypto("encoding"))?,
        );
        let mut plain = Zeroizing::new(vec![0x30, octets.len() as u8]);
        plain.extend_from_slice(&octets);
        let params = pbes2_params()?;
        let encrypted = params
            .clone()
            .encrypt(pin.expose(), &plain)
            .map_err(|e| Error::Crypto(leak_reason(e)))?;
        let info = pkcs8::EncryptedPrivateKeyInfo {
            encryption_algorithm: pkcs8::pkcs5::EncryptionScheme::Pbes2(params),
            encrypted_data: der::asn1::OctetString::new(encrypted)
                .map_err(|_| Error::Crypto("encoding"))?,
        };
        let der_bytes = info.to_der().map_err(|_| Error::Crypto("encoding"))?;
        write_atomic(&dir.join(CHECK_FILE), &der_bytes)?;
        Self::open(dir, pin)
    }

    /// Opens an existing token; a wrong passphrase is [`Error::WrongPin`].
    pub fn open(dir: &Path, pin: &Pin) -> Result<Self> {
        let path = dir.join(CHECK_FILE);
        let der_bytes = fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::storage(dir, "no software token here (create one first)")
            } else {
                Error::storage(&path, e)
            }
        })?;
        let info = pkcs8::EncryptedPrivateKeyInfoRef::from_der(&der_bytes)
            .map_err(|e| Error::storage(&path, format!("damaged: {e}")))?;
        let wrong = || Error::WrongPin {
            token: dir.display().to_string(),
        };
        let doc = info.decrypt(pin.expose()).map_err(|_| wrong())?;
        let seq = doc.as_bytes();
        if seq.len() < 2 || seq[0] != 0x30 || seq[1] as usize != seq.len() - 2 {
            return Err(wrong());
        }
        let octets = der::asn1::OctetString::from_der(&seq[2..]).map_err(|_| wrong())?;
        let plain = Zeroizing::new(octets.into_bytes());
        if !plain.starts_with(CHECK_MAGIC) || plain.len() != CHECK_MAGIC.len() + 32 {
            return Err(wrong());
        }
        let secret = Zeroizing::new(plain[CHECK_MAGIC.len()..].to_vec());
        let serial = hex(&Hash::Sha256.digest(&der_bytes)[..8]);
        Ok(SoftToken {
            dir: dir.to_path_buf(),
            pin: pin.clone(),
            rejection_secret: secret,
            cache: RwLock::new(HashMap::new()),
            serial,
        })
    }

    /// Opens the token, creating it first when the directory holds none.
    pub fn open_or_create(dir: &Path, pin: &Pin) -> Result<(Self, bool)> {
        if Self::exists(dir) {
            Ok((Self::open(dir, pin)?, false))
        } else {
            Ok((Self::create(dir, pin)?, true))
        }
    }

    fn objects_dir(&self) -> PathBuf {
        self.dir.join("objects")
    }

    fn entries(&self) -> Result<Vec<Entry>> {
        let dir = self.objects_dir();
        let rd = fs::read_dir(&dir).map_err(|e| Error::storage(&dir, e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::storage(&dir, e))?;
            let name = ent.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let p = ent.path();
            let Ok(id) = unhex(&name) else { continue };
            let label = read_text(&p.join("label"))?;
            let kind = parse_kind(&read_text(&p.join("kind"))?)
                .ok_or_else(|| Error::storage(p.join("kind"), "unknown key kind"))?;
            out.push(Entry {
                dirname: name,
                label,
                id,
                kind,
            });
        }
        out.sort_by(|a, b| a.label.cmp(&b.label).then(a.dirname.cmp(&b.dirname)));
        Ok(out)
    }

    fn find(&self, key: &KeyRef) -> Result<Entry> {
        self.entries()?
            .into_iter()
            .find(|e| {
                key.label.as_ref().is_none_or(|l| *l == e.label)
                    && key.id.as_ref().is_none_or(|i| *i == e.id)
            })
            .ok_or_else(|| Error::NotFound {
                what: "private key",
                name: key.to_string(),
            })
    }

    fn load(&self, key: &KeyRef) -> Result<Arc<LoadedKey>> {
        if let Some(k) = self
            .cache
            .read()
            .map_err(|_| Error::Crypto("lock"))?
            .get(key)
        {
            return Ok(k.clone());
        }
        let entry = self.find(key)?;
        let path = self.objects_dir().join(&entry.dirname).join("key.pem");
        let pem = Zeroizing::new(read_text(&path)?);
        let (label, der_bytes) = der::pem::decode_vec(pem.as_bytes())
            .map_err(|e| Error::storage(&path, format!("damaged: {e}")))?;
        if label != "ENCRYPTED PRIVATE KEY" {
            return Err(Error::storage(&path, "not an encrypted private key"));
        }
        let info = pkcs8::EncryptedPrivateKeyInfoRef::from_der(&der_bytes)
            .map_err(|e| Error::storage(&path, format!("damaged: {e}")))?;
        let doc = info
            .decrypt(self.pin.expose())
            .map_err(|_| Error::storage(&path, "cannot decrypt with this token's passphrase"))?;
        let k = Arc::new(
            LoadedKey::from_pkcs8(entry.kind, doc.as_bytes())
                .map_err(|e| Error::storage(&path, e))?,
        );
        self.cache
            .write()
            .map_err(|_| Error::Crypto("lock"))?
            .insert(key.clone(), k.clone());
        Ok(k)
    }

    fn store(&self, label: &str, key: &PrivateKey, chain: &[Vec<u8>]) -> Result<Vec<u8>> {
        if label.is_empty() || label.len() > 128 || label.chars().any(|c| c.is_control()) {
            return Err(Error::Invalid(format!(
                "label {label:?} (1 to 128 printable characters)"
            )));
        }
        if self.entries()?.iter().any(|e| e.label == label) {
            return Err(Error::Exists(label.to_string()));
        }
        let id = key_id(key.spki(), chain.first().map(Vec::as_slice));
        let info = pkcs8::PrivateKeyInfoRef::try_from(key.pkcs8())
            .map_err(|e| Error::KeyMaterial(e.to_string()))?;
        let enc = info
            .encrypt_with_params(pbes2_params()?, self.pin.expose())
            .map_err(|e| Error::Crypto(leak_reason(e)))?;
        let pem = enc
            .to_pem("ENCRYPTED PRIVATE KEY", der::pem::LineEnding::LF)
            .map_err(|_| Error::Crypto("PEM encoding"))?;

        let objects = self.objects_dir();
        let mut nonce = [0u8; 8];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Error::Crypto("random"))?;
        let tmp = objects.join(format!(".tmp-{}", hex(&nonce)));
        create_private_dir(&tmp)?;
        let result = (|| {
            write_file(&tmp.join("label"), label.as_bytes())?;
            write_file(&tmp.join("kind"), key.kind().to_string().as_bytes())?;
            write_file(&tmp.join("key.pem"), pem.as_bytes())?;
            write_file(&tmp.join("public.der"), key.spki())?;
            for (i, c) in chain.iter().enumerate() {
                write_file(&tmp.join(format!("cert-{i}.der")), c)?;
            }
            sync_dir(&tmp)?;
            // Two keys may share an id (same key imported twice): suffix to keep both.
            let mut name = hex(&id);
            let mut n = 1;
            while objects.join(&name).exists() {
                name = format!("{}-{n}", hex(&id));
                n += 1;
            }
            fs::rename(&tmp, objects.join(&name)).map_err(|e| Error::storage(&objects, e))?;
            sync_dir(&objects)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result?;
        Ok(id)
    }
}

fn leak_reason(_e: impl std::fmt::Display) -> &'static str {
    // PBES2 errors carry no secrets, but keep them generic: "encryption failed".
    "PBES2 encryption"
}

fn pbes2_params() -> Result<pkcs8::pkcs5::pbes2::Parameters> {
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| Error::Crypto("random"))?;
    aws_lc_rs::rand::fill(&mut iv).map_err(|_| Error::Crypto("random"))?;
    let params = pkcs8::pkcs5::scrypt::Params::new(15, 8, 1)
        .map_err(|_| Error::Crypto("scrypt parameters"))?;
    pkcs8::pkcs5::pbes2::Parameters::generate_scrypt_aes256cbc(params, &salt, iv)
        .map_err(|_| Error::Crypto("PBES2 parameters"))
}

fn parse_kind(s: &str) -> Option<KeyKind> {
    match s.trim() {
        "EC P-256" => Some(KeyKind::EcP256),
        "EC P-384" => Some(KeyKind::EcP384),
        other => {
            let bits = other.strip_prefix("RSA ")?.parse().ok()?;
            Some(KeyKind::Rsa { bits })
        }
    }
}

fn unhex(s: &str) -> std::result::Result<Vec<u8>, ()> {
    let s = s.split('-').next().unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return Err(());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| ()))
        .collect()
}

fn read_text(p: &Path) -> Result<String> {
    fs::read_to_string(p).map_err(|e| Error::storage(p, e))
}

fn create_private_dir(p: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(|e| Error::storage(p, e))
}

fn write_file(p: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .map_err(|e| Error::storage(p, e))?;
    f.write_all(data).map_err(|e| Error::storage(p, e))?;
    f.sync_all().map_err(|e| Error::storage(p, e))
}

fn write_atomic(p: &Path, data: &[u8]) -> Result<()> {
    let tmp = p.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    write_file(&tmp, data)?;
    fs::rename(&tmp, p).map_err(|e| Error::storage(p, e))?;
    sync_dir(p.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(p: &Path) -> Result<()> {
    fs::File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::storage(p, e))
}

fn oaep_alg(hash: Hash, mgf1: Hash) -> Result<&'static aws_lc_rs::rsa::OaepAlgorithm> {
    Ok(match (hash, mgf1) {
        (Hash::Sha1, Hash::Sha1) => &OAEP_SHA1_MGF1SHA1,
        (Hash::Sha256, Hash::Sha256) => &OAEP_SHA256_MGF1SHA256,
        (Hash::Sha384, Hash::Sha384) => &OAEP_SHA384_MGF1SHA384,
        (Hash::Sha512, Hash::Sha512) => &OAEP_SHA512_MGF1SHA512,
        (h, m) => {
            return Err(Error::Unsupported(format!(
                "RSA-OAEP with {} and MGF1-{} in the software token",
                h.name(),
                m.name()
            )));
        }
    })
}

impl Token for SoftToken {
    fn info(&self) -> Result<TokenInfo> {
        Ok(TokenInfo {
            backend: "software",
            label: "smimegw software token".into(),
            manufacturer: "smimegw".into(),
            model: "aws-lc-rs".into(),
            serial: self.serial.clone(),
            location: self.dir.display().to_string(),
            max_sessions: usize::MAX,
        })
    }

    fn capabilities(&self) -> Result<Capabilities> {
        let row = |name: &'static str, detail: &str| MechanismReport {
            name,
            supported: true,
            detail: detail.to_string(),
        };
        Ok(Capabilities {
            mechanisms: vec![
                row("RSA PKCS#1 v1.5 sign", "SHA-256/384/512, 2048-8192 bits"),
                row("RSA-PSS sign", "SHA-256/384/512, salt = hash length"),
                row("ECDSA sign", "P-256 with SHA-256, P-384 with SHA-384"),
                row("RSA PKCS#1 v1.5 decrypt", "implicit rejection"),
                row("RSA-OAEP decrypt", "SHA-1/256/384/512, label"),
                row("AES-CBC", "host (AES-NI)"),
                row("AES-GCM", "host (AES-NI)"),
                row("RSA key generation", "2048, 3072, 4096"),
            ],
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
            rsa_generate: true,
            rsa_min_bits: 2048,
            rsa_max_bits: 8192,
        })
    }

    fn list(&self) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        for e in self.entries()? {
            out.push(ObjectInfo {
                label: e.label.clone(),
                id: e.id.clone(),
                class: ObjectType::Private,
                description: e.kind.to_string(),
                // Encrypted at rest, never exported by any operation.
                protected: Some(true),
            });
            for c in self.certificates_in(&e.dirname)? {
                let desc = crate::cert_summary(&c)
                    .map(|s| s.subject)
                    .unwrap_or_else(|e| e.to_string());
                out.push(ObjectInfo {
                    label: e.label.clone(),
                    id: e.id.clone(),
                    class: ObjectType::Cert,
                    description: desc,
                    protected: None,
                });
            }
        }
        Ok(out)
    }

    fn generate_rsa(&self, label: &str, bits: usize) -> Result<ObjectInfo> {
        let size = match bits {
            2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
            3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
            4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
            n => {
                return Err(Error::Invalid(format!(
                    "RSA key size {n} (use 2048, 3072 or 4096)"
                )));
            }
        };
        let kp = aws_lc_rs::rsa::KeyPair::generate(size)
            .map_err(|_| Error::Crypto("RSA key generation"))?;
        let der_bytes = Zeroizing::new(
            kp.as_der()
                .map_err(|_| Error::Crypto("PKCS#8 encoding"))?
                .as_ref()
                .to_vec(),
        );
        let key = PrivateKey::from_pkcs8(der_bytes)?;
        let id = self.store(label, &key, &[])?;
        Ok(ObjectInfo {
            label: label.to_string(),
            id,
            class: ObjectType::Private,
            description: key.kind().to_string(),
            protected: Some(true),
        })
    }

    fn import(&self, label: &str, bundle: &ImportBundle) -> Result<ImportReport> {
        let id = self.store(label, &bundle.key, &bundle.chain)?;
        Ok(ImportReport {
            label: label.to_string(),
            id,
            key: bundle.key.kind(),
            certificates: bundle.chain.len(),
        })
    }

    fn delete(&self, label: &str) -> Result<usize> {
        let objects = self.objects_dir();
        let mut n = 0;
        for e in self.entries()?.into_iter().filter(|e| e.label == label) {
            let from = objects.join(&e.dirname);
            let to = objects.join(format!(".del-{}", e.dirname));
            fs::rename(&from, &to).map_err(|err| Error::storage(&from, err))?;
            sync_dir(&objects)?;
            fs::remove_dir_all(&to).map_err(|err| Error::storage(&to, err))?;
            // Any name may have pointed at this key.
            self.cache
                .write()
                .map_err(|_| Error::Crypto("lock"))?
                .clear();
            n += 1;
        }
        Ok(n)
    }

    fn public_key(&self, key: &KeyRef) -> Result<Vec<u8>> {
        let e = self.find(key)?;
        let p = self.objects_dir().join(e.dirname).join("public.der");
        fs::read(&p).map_err(|err| Error::storage(&p, err))
    }

    fn certificates(&self, label: &str) -> Result<Vec<Vec<u8>>> {
        let e = self.find(&KeyRef::label(label))?;
        self.certificates_in(&e.dirname)
    }

    fn set_certificates(&self, label: &str, chain: &[Vec<u8>]) -> Result<()> {
        let e = self.find(&KeyRef::label(label))?;
        let d = self.objects_dir().join(&e.dirname);
        let spki = fs::read(d.join("public.der")).map_err(|err| Error::storage(&d, err))?;
        crate::keymat::check_chain_for(&spki, chain)?;
        // Each file is written aside and renamed over the old one; a crash leaves either
        // certificate whole.
        for (i, c) in chain.iter().enumerate() {
            let tmp = d.join(format!(".cert-{i}.tmp"));
            let _ = fs::remove_file(&tmp);
            write_file(&tmp, c)?;
            let to = d.join(format!("cert-{i}.der"));
            fs::rename(&tmp, &to).map_err(|err| Error::storage(&to, err))?;
        }
        for i in chain.len().. {
            let p = d.join(format!("cert-{i}.der"));
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => break,
                Err(err) => return Err(Error::storage(&p, err)),
            }
        }
        sync_dir(&d)
    }

    fn sign(&self, key: &KeyRef, alg: SignAlgorithm, digest: &[u8]) -> Result<Vec<u8>> {
        self.load(key)?.sign(alg, digest)
    }

    fn unwrap_key(
        &self,
        key: &KeyRef,
        alg: &KeyTransport,
        blob: &[u8],
        key_len: usize,
        _place: AesOffload,
    ) -> Result<ContentKey> {
        check_aes_len(key_len)?;
        self.load(key)?
            .unwrap(&self.rejection_secret, alg, blob, key_len)
    }

    fn content_key(&self, bytes: &[u8], _place: AesOffload) -> Result<ContentKey> {
        ContentKey::host(bytes)
    }

    fn ecdh(&self, key: &KeyRef, peer_point: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.load(key)?.ecdh(peer_point)
    }
}

impl SoftToken {
    fn certificates_in(&self, dirname: &str) -> Result<Vec<Vec<u8>>> {
        let d = self.objects_dir().join(dirname);
        let mut out = Vec::new();
        for i in 0.. {
            let p = d.join(format!("cert-{i}.der"));
            match fs::read(&p) {
                Ok(b) => out.push(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(Error::storage(&p, e)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_new_token_needs_a_passphrase_of_eight_characters_old_ones_keep_opening() {
        let dir = tempfile::tempdir().unwrap();
        let e = SoftToken::create(&dir.path().join("t"), &Pin::new("1234".into()))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("passphrase must be at least 8 characters (this one has 4)"),
            "{e}"
        );
        assert!(!dir.path().join("t").exists(), "nothing was created");
        // Characters, not bytes: seven non-ASCII characters are still too few.
        assert!(SoftToken::create(&dir.path().join("t"), &Pin::new("ééééééé".into())).is_err());
        SoftToken::create(&dir.path().join("t"), &Pin::new("12345678".into())).unwrap();
        // A token made before the rule, with a short passphrase, still opens.
        SoftToken::init(&dir.path().join("old"), &Pin::new("1234".into())).unwrap();
        SoftToken::open(&dir.path().join("old"), &Pin::new("1234".into())).unwrap();
        let (_, created) =
            SoftToken::open_or_create(&dir.path().join("old"), &Pin::new("1234".into())).unwrap();
        assert!(!created);
    }
}
