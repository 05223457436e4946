//! Key custody for smimegw.
//!
//! One [`Token`] interface over two backends:
//! - [`Pkcs11Token`]: any PKCS#11 module (a network HSM, a smartcard through OpenSC, SoftHSM2),
//!   with a pool of logged-in sessions and recovery when the token goes away and comes back;
//! - [`SoftToken`]: keys in a directory, encrypted at rest (PKCS#8 PBES2, scrypt + AES-256-CBC),
//!   the embedded default when no HSM is configured.
//!
//! Private keys never leave a token: the interface has no operation that returns one. Content
//! encryption keys (the AES keys of single messages) are unwrapped either into the token, where
//! AES then runs, or onto the host, as [`AesOffload`] says.
//!
//! All operations block; async callers run them on a blocking thread.

mod aes;
pub mod ber;
mod error;
mod keymat;
mod memory;
mod p12;
mod padding;
mod pin;
mod pkcs11;
pub mod public;
mod soft;
pub mod softhsm;
mod uri;

use std::fmt;

pub use crate::aes::{AesMode, CipherDirection, CipherStream, key_unwrap, run_all};
pub use crate::error::{Error, Result};
pub use crate::keymat::{CertSummary, KeyKind, cert_summary, spki_key_id};
pub use crate::memory::MemoryToken;
pub use crate::p12::{ImportBundle, read_pkcs12};
pub use crate::pin::{EchoGuard, Pin, PinSource};
pub use crate::pkcs11::{Pkcs11Options, Pkcs11Token};
pub use crate::soft::SoftToken;
pub use crate::uri::{ObjectType, Pkcs11Uri};

/// A hash function used in signatures and RSA-OAEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// Hashes `data` on the host.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        aws_lc_rs::digest::digest(self.aws(), data)
            .as_ref()
            .to_vec()
    }

    /// An incremental hash on the host, for content that streams.
    pub fn hasher(self) -> Hasher {
        Hasher {
            hash: self,
            ctx: aws_lc_rs::digest::Context::new(self.aws()),
        }
    }

    pub(crate) fn aws(self) -> &'static aws_lc_rs::digest::Algorithm {
        use aws_lc_rs::digest;
        match self {
            Hash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha384 => &digest::SHA384,
            Hash::Sha512 => &digest::SHA512,
        }
    }

    /// Name as used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Hash::Sha1 => "sha1",
            Hash::Sha256 => "sha256",
            Hash::Sha384 => "sha384",
            Hash::Sha512 => "sha512",
        }
    }
}

/// A hash computed piece by piece ([`Hash::hasher`]).
#[derive(Clone)]
pub struct Hasher {
    hash: Hash,
    ctx: aws_lc_rs::digest::Context,
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        self.ctx.update(data);
    }

    pub fn hash(&self) -> Hash {
        self.hash
    }

    pub fn finish(self) -> Vec<u8> {
        self.ctx.finish().as_ref().to_vec()
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hasher({:?})", self.hash)
    }
}

/// How to sign a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignAlgorithm {
    /// RSASSA-PKCS1-v1_5 over a DigestInfo of this hash.
    RsaPkcs1(Hash),
    /// RSASSA-PSS, MGF1 with the same hash, salt as long as the hash (RFC 8551 / 4056 default).
    RsaPss(Hash),
    /// ECDSA; the signature is DER (`Ecdsa-Sig-Value`), as CMS carries it.
    Ecdsa(Hash),
}

impl SignAlgorithm {
    /// The hash whose digest is signed.
    pub fn hash(self) -> Hash {
        match self {
            SignAlgorithm::RsaPkcs1(h) | SignAlgorithm::RsaPss(h) | SignAlgorithm::Ecdsa(h) => h,
        }
    }
}

impl fmt::Display for SignAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignAlgorithm::RsaPkcs1(h) => write!(f, "RSA PKCS#1 v1.5 with {}", h.name()),
            SignAlgorithm::RsaPss(h) => write!(f, "RSA-PSS with {}", h.name()),
            SignAlgorithm::Ecdsa(h) => write!(f, "ECDSA with {}", h.name()),
        }
    }
}

/// How a content-encryption key was encrypted to us (CMS key transport).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyTransport {
    /// RSAES-PKCS1-v1_5.
    RsaPkcs1,
    /// RSAES-OAEP with a hash, the MGF1 hash and an optional label (pSourceFunc).
    RsaOaep {
        hash: Hash,
        mgf1: Hash,
        label: Option<Vec<u8>>,
    },
}

impl fmt::Display for KeyTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyTransport::RsaPkcs1 => f.write_str("RSA PKCS#1 v1.5 decryption"),
            KeyTransport::RsaOaep { hash, mgf1, label } => write!(
                f,
                "RSA-OAEP decryption with {}/MGF1-{}{}",
                hash.name(),
                mgf1.name(),
                if label.is_some() { " and a label" } else { "" }
            ),
        }
    }
}

/// Where AES runs for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AesOffload {
    /// On the host (AES-NI). The content key is on the host for the life of one message.
    #[default]
    Host,
    /// In the token: the content key is a non-extractable session object.
    Token,
}

/// A content-encryption key of one message, held where [`AesOffload`] said.
/// Dropping it destroys the token object or zeroes the host copy.
pub struct ContentKey {
    pub(crate) inner: ContentKeyInner,
    pub(crate) len: usize,
}

pub(crate) enum ContentKeyInner {
    Host(zeroize::Zeroizing<Vec<u8>>),
    Token(pkcs11::TokenKey),
}

impl ContentKey {
    /// Key length in bytes (16, 24 or 32).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false; content keys are never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Where the key lives.
    pub fn place(&self) -> AesOffload {
        match self.inner {
            ContentKeyInner::Host(_) => AesOffload::Host,
            ContentKeyInner::Token(_) => AesOffload::Token,
        }
    }

    /// A host key made from bytes (for encryption, where the host generates the key).
    pub fn host(bytes: &[u8]) -> Result<Self> {
        check_aes_len(bytes.len())?;
        Ok(ContentKey {
            inner: ContentKeyInner::Host(zeroize::Zeroizing::new(bytes.to_vec())),
            len: bytes.len(),
        })
    }

    /// Starts a streaming AES operation with this key.
    pub fn cipher(&self, dir: CipherDirection, mode: &AesMode) -> Result<Box<dyn CipherStream>> {
        match &self.inner {
            ContentKeyInner::Host(k) => aes::host_cipher(k, dir, mode),
            ContentKeyInner::Token(k) => k.cipher(dir, mode),
        }
    }
}

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentKey({} bytes, {:?})", self.len, self.place())
    }
}

pub(crate) fn check_aes_len(len: usize) -> Result<()> {
    if matches!(len, 16 | 24 | 32) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "an AES key is 16, 24 or 32 bytes, not {len}"
        )))
    }
}

/// What a token says about itself.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub backend: &'static str,
    pub label: String,
    pub manufacturer: String,
    pub model: String,
    pub serial: String,
    /// Module path for PKCS#11, directory for the software token.
    pub location: String,
    /// Sessions the pool will open at most.
    pub max_sessions: usize,
}

/// What a token can do, as probed (C_GetMechanismInfo for PKCS#11).
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// One row per mechanism of interest: name, supported, detail (key sizes, flags).
    pub mechanisms: Vec<MechanismReport>,
    pub rsa_pkcs1_sign: bool,
    pub rsa_pss_sign: bool,
    pub ecdsa_sign: bool,
    pub rsa_pkcs1_decrypt: bool,
    /// RSA-OAEP, at least with SHA-1.
    pub rsa_oaep_decrypt: bool,
    /// OAEP with hashes other than SHA-1 works natively (probed by a real decryption).
    pub rsa_oaep_sha2: Option<bool>,
    /// Raw RSA (CKM_RSA_X_509) is available for host-side padding.
    pub rsa_raw: bool,
    pub unwrap: bool,
    pub aes_cbc: bool,
    pub aes_gcm: bool,
    pub rsa_generate: bool,
    pub rsa_min_bits: usize,
    pub rsa_max_bits: usize,
}

/// One line of a mechanism report.
#[derive(Debug, Clone)]
pub struct MechanismReport {
    pub name: &'static str,
    pub supported: bool,
    pub detail: String,
}

/// An object in a token, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub label: String,
    pub id: Vec<u8>,
    pub class: ObjectType,
    /// "RSA 2048", "EC P-256", or the certificate's subject.
    pub description: String,
    /// For private keys: CKA_SENSITIVE and not CKA_EXTRACTABLE as read back from the token.
    pub protected: Option<bool>,
}

/// What an import put into the token.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub label: String,
    pub id: Vec<u8>,
    pub key: KeyKind,
    pub certificates: usize,
}

/// Names a key in a token: by label (CKA_LABEL), by id (CKA_ID), or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct KeyRef {
    pub label: Option<String>,
    pub id: Option<Vec<u8>>,
}

impl KeyRef {
    /// A key named by its label.
    pub fn label(l: impl Into<String>) -> Self {
        KeyRef {
            label: Some(l.into()),
            id: None,
        }
    }

    /// The key a PKCS#11 URI names (object= and id=).
    pub fn from_uri(uri: &Pkcs11Uri) -> Result<Self> {
        if uri.object.is_none() && uri.id.is_none() {
            return Err(Error::Uri(
                "the URI names no object (object= or id=)".into(),
            ));
        }
        Ok(KeyRef {
            label: uri.object.clone(),
            id: uri.id.clone(),
        })
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.label, &self.id) {
            (Some(l), _) => f.write_str(l),
            (None, Some(id)) => write!(f, "id {}", hex(id)),
            (None, None) => f.write_str("(unnamed)"),
        }
    }
}

/// `n` bytes from the host's cryptographic random generator (content keys, IVs, nonces).
pub fn random(n: usize) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut out = zeroize::Zeroizing::new(vec![0u8; n]);
    aws_lc_rs::rand::fill(&mut out).map_err(|_| Error::Crypto("random"))?;
    Ok(out)
}

/// Lower-case hexadecimal, two digits a byte (fingerprints, key ids, serials).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Key custody. Both backends implement it; every test runs against both.
pub trait Token: Send + Sync + fmt::Debug {
    /// Describes the token.
    fn info(&self) -> Result<TokenInfo>;

    /// Probes which mechanisms the token supports.
    fn capabilities(&self) -> Result<Capabilities>;

    /// Lists private keys and certificates.
    fn list(&self) -> Result<Vec<ObjectInfo>>;

    /// Generates an RSA key pair (2048, 3072 or 4096 bits) in the token.
    fn generate_rsa(&self, label: &str, bits: usize) -> Result<ObjectInfo>;

    /// Puts a private key and its certificate chain into the token, the key sensitive and
    /// never extractable.
    fn import(&self, label: &str, bundle: &ImportBundle) -> Result<ImportReport>;

    /// Deletes every object with this label; returns how many.
    fn delete(&self, label: &str) -> Result<usize>;

    /// The public key of a private key, as DER SubjectPublicKeyInfo.
    fn public_key(&self, key: &KeyRef) -> Result<Vec<u8>>;

    /// The certificates stored under a label (the first is the end entity), as DER.
    fn certificates(&self, label: &str) -> Result<Vec<Vec<u8>>>;

    /// Replaces the certificates stored with the key `label` (a key generated in the token,
    /// then certified; a renewed certificate): `chain` is DER, the end entity's first, and it
    /// must certify the key.
    fn set_certificates(&self, label: &str, chain: &[Vec<u8>]) -> Result<()>;

    /// Signs a digest computed by the caller. RSA signatures are as long as the modulus;
    /// ECDSA signatures are DER.
    fn sign(&self, key: &KeyRef, alg: SignAlgorithm, digest: &[u8]) -> Result<Vec<u8>>;

    /// Decrypts a key-transport blob into a content key of `key_len` bytes placed per `place`.
    ///
    /// Implicit rejection: when the blob does not decrypt to a well-padded key of that length,
    /// this still succeeds, with an unpredictable key, taking the same path; the failure shows
    /// only later as [`Error::Decrypt`] from the content cipher, like any corrupt message.
    /// Errors here mean the key is missing, the mechanism unsupported or the token unavailable.
    fn unwrap_key(
        &self,
        key: &KeyRef,
        alg: &KeyTransport,
        blob: &[u8],
        key_len: usize,
        place: AesOffload,
    ) -> Result<ContentKey>;

    /// Makes a content key from host bytes, placed per `place` (for encryption offload).
    fn content_key(&self, bytes: &[u8], place: AesOffload) -> Result<ContentKey>;

    /// Elliptic-curve Diffie-Hellman (CMS key agreement, RFC 5753) of the EC private key with
    /// a peer's public point (uncompressed SEC1): the shared secret Z, for the caller's KDF
    /// and key unwrap. Like a content key placed on the host, Z is per message; the private
    /// key stays in the token.
    fn ecdh(&self, key: &KeyRef, peer_point: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>>;

    /// Ends the logged-in state: a PKCS#11 token logs out and closes its idle sessions (busy
    /// ones close when returned). The next operation logs in again with the PIN read at start,
    /// so a caller that must stop using the keys (a tamper) refuses before calling. The
    /// software token holds no login (keys are decrypted per use): nothing to do.
    fn logout(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lower_case_and_padded() {
        assert_eq!(super::hex(&[0x00, 0x0a, 0xff]), "000aff");
        assert_eq!(super::hex(&[]), "");
    }
}
