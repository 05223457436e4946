//! The engine's error type. Each variant maps to the exit status of `smimegw message`:
//! malformed input and unsupported algorithms exit 2 (the input cannot be processed), a message
//! that is well formed but fails (not a recipient, wrong key, bad signature) exits 1.

/// Everything that can go wrong while processing an S/MIME message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmimeError {
    /// The input is not what it claims to be: broken MIME, BER, base64 or CMS structure.
    #[error("malformed input: {0}")]
    Malformed(String),

    /// Well formed, but uses something we do not do (an algorithm, a recipient type).
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// None of the message's recipients is the given certificate.
    #[error("this certificate is not among the message's recipients ({0})")]
    NotRecipient(String),

    /// Content decryption failed: wrong key, damaged data or authentication tag mismatch.
    /// Deliberately the same for all three (implicit rejection).
    #[error("decryption failed: wrong key, damaged message or authentication tag mismatch")]
    Decrypt,

    /// A certificate given to us cannot be used.
    #[error("certificate: {0}")]
    Certificate(String),

    /// The token failed for another reason (unavailable, unsupported mechanism).
    #[error(transparent)]
    Token(hsm::Error),

    /// Reading the message or writing the result failed.
    #[error("I/O: {0}")]
    Io(std::io::Error),
}

impl SmimeError {
    /// Is the input at fault (exit 2) rather than the message failing a check (exit 1)?
    pub fn is_malformed(&self) -> bool {
        matches!(self, SmimeError::Malformed(_) | SmimeError::Unsupported(_))
    }

    /// May retrying later succeed (the token unavailable, a file error)? The relay then
    /// defers (4xx) rather than bounces.
    pub fn is_temporary(&self) -> bool {
        match self {
            SmimeError::Token(t) => t.is_temporary(),
            SmimeError::Io(_) => true,
            _ => false,
        }
    }
}

impl From<hsm::Error> for SmimeError {
    fn from(e: hsm::Error) -> Self {
        match e {
            hsm::Error::Decrypt => SmimeError::Decrypt,
            other => SmimeError::Token(other),
        }
    }
}

impl From<std::io::Error> for SmimeError {
    /// Errors raised inside the streaming adapters travel as `io::Error`; they come back out
    /// as themselves.
    fn from(e: std::io::Error) -> Self {
        if e.get_ref().is_some_and(|i| i.is::<SmimeError>()) {
            if let Some(inner) = e.into_inner()
                && let Ok(me) = inner.downcast::<SmimeError>()
            {
                return *me;
            }
            return SmimeError::Malformed("unreadable input".into());
        }
        SmimeError::Io(e)
    }
}

impl From<hsm::ber::BerError> for SmimeError {
    fn from(e: hsm::ber::BerError) -> Self {
        SmimeError::Malformed(format!("CMS: {e}"))
    }
}

pub type Result<T, E = SmimeError> = std::result::Result<T, E>;
