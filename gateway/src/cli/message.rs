//! `smimegw message`: the S/MIME engine as a command, for troubleshooting, the way `openssl
//! cms` is used.
//!
//! Input is a whole RFC 5322 message from `--in` or stdin; output goes to `--out` (written to a
//! temporary file and renamed, so a failure never leaves half a file) or stdout. Exit status:
//! 0 done; 1 the message failed (not a recipient, wrong key, bad tag); 2 the input is malformed
//! or uses something unsupported, or the command line is wrong.
//!
//! KEY is an unencrypted PEM private key file or a PKCS#11 URI with `object=` (and
//! `module-path=`, `pin-value=`/`pin-source=`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use hsm::{
    AesOffload, KeyRef, MemoryToken, PinSource, Pkcs11Options, Pkcs11Token, Pkcs11Uri, Token,
};
use smimegw::smime::{self, Recipient};

use crate::error::CliError;

/// Options of `smimegw message`, and its subcommand.
#[derive(Debug, Args)]
pub struct MessageArgs {
    #[command(subcommand)]
    command: MessageCommand,
}

#[derive(Debug, Subcommand)]
enum MessageCommand {
    /// Decrypt an S/MIME encrypted message; prints the inner MIME entity.
    Decrypt(DecryptArgs),
}

/// Where AES runs.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Offload {
    /// On the host (AES-NI).
    Host,
    /// In the token, where it can (PKCS#11 keys); on the host otherwise.
    Token,
}

#[derive(Debug, Args)]
struct DecryptArgs {
    /// The recipient's certificate (PEM or DER): finds our RecipientInfo.
    #[arg(long, value_name = "CERT")]
    cert: PathBuf,
    /// The recipient's private key: a PEM file or a PKCS#11 URI ('pkcs11:...;object=NAME?...').
    #[arg(long, value_name = "KEY")]
    key: String,
    /// Input message (default: stdin).
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
    /// Output file (default: stdout).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Where AES runs.
    #[arg(long, value_enum, default_value = "host")]
    offload: Offload,
    /// PKCS#11 only: run raw RSA in the token, with the padding checked on the host, for
    /// padding variants the token lacks (e.g. OAEP with SHA-256 on SoftHSM2).
    #[arg(long)]
    allow_raw_rsa: bool,
}

/// Runs `smimegw message`.
pub fn run(args: MessageArgs, out: &mut dyn Write) -> Result<(), CliError> {
    match args.command {
        MessageCommand::Decrypt(a) => decrypt(a, out),
    }
}

fn decrypt(a: DecryptArgs, stdout: &mut dyn Write) -> Result<(), CliError> {
    let cert = read_cert(&a.cert)?;
    let (token, key) = open_key(&a.key, a.allow_raw_rsa)?;
    let input = read_input(a.input.as_deref())?;
    let me = Recipient {
        cert: &cert,
        token: token.as_ref(),
        key,
        offload: match a.offload {
            Offload::Host => AesOffload::Host,
            Offload::Token => AesOffload::Token,
        },
    };
    let result = smime::decrypt_message(&input, &me)?;
    tracing::info!(
        cipher = %result.cipher,
        key_transport = %result.key_transport,
        "decrypted"
    );
    write_output(a.out.as_deref(), &result.content, stdout)
}

/// A private key from a PEM file or a PKCS#11 URI, as a token and the key's name in it.
fn open_key(key: &str, allow_raw_rsa: bool) -> Result<(Box<dyn Token>, KeyRef), CliError> {
    if key.starts_with("pkcs11:") {
        let uri = Pkcs11Uri::parse(key)?;
        let key_ref = KeyRef::from_uri(&uri)?;
        let mut opts = Pkcs11Options::from_uri(&uri)?;
        opts.allow_raw_rsa = allow_raw_rsa;
        if opts.pin.is_none() && std::env::var_os("SMIMEGW_PIN").is_some() {
            opts.pin = Some(PinSource::Env("SMIMEGW_PIN".into()));
        }
        tracing::debug!(%uri, "opening the PKCS#11 token");
        return Ok((Box::new(Pkcs11Token::open(opts)?), key_ref));
    }
    let path = Path::new(key);
    let pem = std::fs::read(path).map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = MemoryToken::from_pem(&pem, "key", &path.display().to_string())?;
    Ok((Box::new(token), KeyRef::label("key")))
}

/// A certificate file, PEM or DER, as DER.
fn read_cert(path: &Path) -> Result<Vec<u8>, CliError> {
    let bytes = std::fs::read(path).map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let der = if bytes.starts_with(b"-----") || bytes.iter().take(64).all(u8::is_ascii) {
        let text = String::from_utf8_lossy(&bytes);
        let start = text.find("-----BEGIN CERTIFICATE-----").ok_or_else(|| {
            CliError::Usage(format!("{} holds no PEM certificate", path.display()))
        })?;
        let (label, der) = der_pem(&text[start..]).ok_or_else(|| {
            CliError::Usage(format!(
                "{}: the PEM certificate is damaged",
                path.display()
            ))
        })?;
        if label != "CERTIFICATE" {
            return Err(CliError::Usage(format!(
                "{} is not a certificate",
                path.display()
            )));
        }
        der
    } else {
        bytes
    };
    hsm::cert_summary(&der).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    Ok(der)
}

/// The first PEM block of `text`.
fn der_pem(text: &str) -> Option<(String, Vec<u8>)> {
    let begin = text.find("-----BEGIN ")?;
    let rest = &text[begin + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let end_marker = format!("-----END {label}-----");
    let body_start = label_end + 5;
    let end = rest.find(&end_marker)?;
    let body = rest.get(body_start..end)?;
    let der = smime::mime::base64_decode(body.as_bytes()).ok()?;
    Some((label, der))
}

fn read_input(path: Option<&Path>) -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    match path {
        Some(p) => {
            buf = std::fs::read(p).map_err(|source| CliError::Read {
                path: p.to_path_buf(),
                source,
            })?;
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|source| CliError::Read {
                    path: "(stdin)".into(),
                    source,
                })?;
        }
    }
    Ok(buf)
}

/// Writes to `path` through a temporary file and a rename, or to stdout.
fn write_output(path: Option<&Path>, data: &[u8], stdout: &mut dyn Write) -> Result<(), CliError> {
    let Some(path) = path else {
        stdout.write_all(data)?;
        return Ok(());
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(data)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|source| CliError::Write {
        path: path.to_path_buf(),
        source,
    })
}
