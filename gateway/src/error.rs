//! The error type of the `smimegw` command.
//!
//! Token errors are `hsm::Error`, whose messages are already written for administrators and
//! never hold a PIN or key material; everything else the command itself can get wrong is here.
//! `main` prints any of them as `smimegw: <error>` and exits with [`CliError::exit_code`].

use std::path::PathBuf;

/// Everything that can make a `smimegw` command fail.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The token refused or failed an operation.
    #[error(transparent)]
    Token(#[from] hsm::Error),

    /// A file named on the command line could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The PKCS#12 password or the passphrase of a new software token could not be obtained.
    #[error("{0}")]
    Password(String),

    /// `token delete` found nothing with the label.
    #[error("nothing labelled {0:?} in the token")]
    NothingDeleted(String),

    /// `token selftest` had failing checks (each was reported on stdout).
    #[error("self-test failed: {failed} of {total} checks failed")]
    SelftestFailed { failed: usize, total: usize },

    /// The S/MIME engine refused or failed the message.
    #[error(transparent)]
    Message(#[from] smimegw::smime::SmimeError),

    /// A signature is invalid or a signer untrusted (`message verify`).
    #[error("verification failed: {0}")]
    Verification(String),

    /// An argument is unusable (a file that is not what it should be).
    #[error("{0}")]
    Usage(String),

    /// The running gateway refused a request or cannot be reached (`smimegw queue`).
    #[error("{0}")]
    Gateway(String),

    /// An output file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    /// Writing to stdout failed (a closed pipe, a full disk).
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// 2 when the input or the command line is at fault (malformed, unsupported, unusable
    /// argument), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Message(e) if e.is_malformed() => 2,
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}
