//! The one error type of the `hsm` crate.
//!
//! Errors say what was wrong in words an administrator can act on. They never carry a PIN, a
//! passphrase or key material: the types that hold secrets do not implement `Display`.

use std::path::PathBuf;

/// Everything that can go wrong in key custody.
///
/// [`Error::is_temporary`] tells callers (the relay) whether to answer `4xx` and retry later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A PKCS#11 URI or another textual key reference could not be parsed.
    #[error("invalid PKCS#11 URI: {0}")]
    Uri(String),

    /// The PKCS#11 module could not be loaded.
    #[error("cannot load PKCS#11 module {path}: {reason}")]
    Module { path: PathBuf, reason: String },

    /// No slot holds a token with the wanted label.
    #[error("no token labelled {label:?} found (tokens present: {present})")]
    TokenNotFound { label: String, present: String },

    /// The PIN or passphrase was refused.
    #[error("wrong PIN for token {token:?}")]
    WrongPin { token: String },

    /// The token refuses logins.
    #[error("the PIN of token {token:?} is locked; unlock it with the security officer PIN")]
    PinLocked { token: String },

    /// The PIN could not be obtained from its source.
    #[error("cannot read the PIN: {0}")]
    PinSource(String),

    /// The token went away (removed, session closed, device error). The pool reopens it on the
    /// next use; this is temporary.
    #[error("token {token:?} is unavailable ({reason}); will retry")]
    Unavailable { token: String, reason: String },

    /// The token cannot do what was asked (mechanism missing or parameters refused).
    #[error("the token does not support {0}")]
    Unsupported(String),

    /// No key or certificate with this name.
    #[error("no {what} named {name:?} in the token")]
    NotFound { what: &'static str, name: String },

    /// An object with this label already exists.
    #[error("an object labelled {0:?} already exists in the token")]
    Exists(String),

    /// A PKCS#12 file could not be read.
    #[error("cannot read PKCS#12: {0}")]
    Pkcs12(String),

    /// Key or certificate bytes are malformed or of a kind we do not handle.
    #[error("bad key material: {0}")]
    KeyMaterial(String),

    /// Content decryption failed: bad padding, authentication tag mismatch or wrong key.
    /// Deliberately uninformative (see the implicit rejection in `Token::unwrap_key`).
    #[error("content decryption failed (wrong key, corrupted data or authentication tag mismatch)")]
    Decrypt,

    /// A signature does not verify under the public key.
    #[error("the signature does not verify")]
    BadSignature,

    /// A caller passed arguments that cannot be right (wrong digest length and the like).
    #[error("invalid request: {0}")]
    Invalid(String),

    /// A PKCS#11 function failed in a way not covered above.
    #[error("PKCS#11 {function} failed: {code}")]
    Pkcs11 { function: String, code: String },

    /// The software token's files could not be read or written.
    #[error("software token storage {path}: {reason}")]
    Storage { path: PathBuf, reason: String },

    /// A cryptographic primitive on the host failed.
    #[error("host cryptography failed: {0}")]
    Crypto(&'static str),
}

impl Error {
    /// True when retrying later may succeed (token unavailable): the relay answers `4xx`.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    pub(crate) fn storage(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        Error::Storage {
            path: path.into(),
            reason: e.to_string(),
        }
    }
}

/// The `Result` of this crate.
pub type Result<T> = std::result::Result<T, Error>;
