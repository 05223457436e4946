//! Reading PKCS#12 files (RFC 7292): the private key and its certificate chain.
//!
//! Accepts what `openssl pkcs12 -export` writes today (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC,
//! MAC SHA-256), `-legacy` files (RC2-40/3DES, MAC SHA-1) and NSS's files. The key is copied
//! into zeroizing memory and goes from here straight into a token.

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::keymat::{KeyKind, PrivateKey};
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

/// Reads a PKCS#12 file. The password is used here and nowhere else.
pub fn read_pkcs12(data: &[u8], password: &Pin) -> Result<ImportBundle> {
    // NSS and Windows write BER; the PKCS#12 reader wants DER.
    let normalised = crate::ber::to_der(data)?;
    let store =
        p12_keystore::KeyStore::from_pkcs12(&normalised, password.expose()).map_err(|e| {
            use p12_keystore::error::Error as P;
            match e {
                P::MacError(_) => {
                    Error::Pkcs12("wrong password (the integrity check failed)".into())
                }
                P::DerError(_) | P::InvalidVersion | P::InvalidData | P::InvalidLength => {
                    Error::Pkcs12("the file is not a PKCS#12 archive or is damaged".into())
                }
                P::UnpadError | P::Pkcs5Error(_) => {
                    Error::Pkcs12("cannot decrypt the key: wrong password or damaged file".into())
                }
                P::UnsupportedEncryptionScheme
                | P::UnsupportedMacAlgorithm
                | P::UnsupportedContentType => {
                    Error::Pkcs12(format!("unsupported protection scheme ({e})"))
                }
                other => Error::Pkcs12(other.to_string()),
            }
        })?;
    let (_, chain) = store.private_key_chain().ok_or_else(|| {
        Error::Pkcs12("the file holds no private key with a matching certificate".into())
    })?;
    let key = Zeroizing::new(chain.key().to_vec());
    let certs: Vec<Vec<u8>> = chain.chain().iter().map(|c| c.as_der().to_vec()).collect();
    ImportBundle::from_parts(&key, certs)
}
