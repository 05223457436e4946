//! `smimegw token`: look after the token that holds the gateway's private keys.
//!
//! The token is a PKCS#11 token named by `--token-uri` (an RFC 7512 URI with `module-path=` and
//! `pin-source=` or `pin-value=`), or else the software token in `DATA/token`, created on first
//! use. Subcommands: `info`, `mechanisms`, `list`, `import-p12`, `generate`, `delete` and
//! `selftest` (in `token/selftest.rs`).
//!
//! Secrets: the PIN comes from a [`PinSource`] and the PKCS#12 password from a file, the
//! environment or the terminal; both are held in an [`hsm::Pin`] and never printed. The URI is
//! only ever logged through its `Display`, which prints `pin-value=***`.

mod selftest;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use hsm::{ObjectType, Pin, PinSource, Pkcs11Options, Pkcs11Token, Pkcs11Uri, SoftToken, Token};
use zeroize::Zeroizing;

use crate::cli::table;
use crate::error::CliError;

/// Environment variable holding the PIN or passphrase when no `--pin-source` is given.
const PIN_ENV: &str = "SMIMEGW_PIN";

/// Environment variable holding the PKCS#12 password when no `--password-file` is given.
const P12_PASSWORD_ENV: &str = "SMIMEGW_P12_PASSWORD";

/// Options of `smimegw token`, and its subcommand.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// PKCS#11 URI of the token, e.g.
    /// 'pkcs11:token=gw?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/smimegw/pin'.
    /// Without it, the software token in DATA/token is used.
    #[arg(
        long,
        value_name = "URI",
        env = "SMIMEGW_TOKEN_URI",
        hide_env_values = true,
        global = true
    )]
    token_uri: Option<String>,

    /// Data directory; the software token lives in DATA/token.
    #[arg(long, value_name = "DIR", default_value = "./var", global = true)]
    data: PathBuf,

    /// Where the PIN (or the software token's passphrase) comes from: file:PATH, env:NAME or
    /// prompt. Default: env:SMIMEGW_PIN when that variable is set, else prompt. A pin-source or
    /// pin-value in the URI takes precedence.
    #[arg(long, value_name = "SRC", global = true)]
    pin_source: Option<String>,

    /// PKCS#11 only: where the token lacks a padding variant (OAEP with SHA-2, PSS), run raw RSA
    /// (CKM_RSA_X_509) in the token and build or check the padding on the host.
    #[arg(long, global = true)]
    allow_raw_rsa: bool,

    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Show what the token says about itself.
    Info,
    /// Show which mechanisms the token supports.
    Mechanisms,
    /// List the private keys and certificates in the token.
    List,
    /// Import a private key and its certificate chain from a PKCS#12 file.
    #[command(name = "import-p12")]
    ImportP12 {
        /// The PKCS#12 file (.p12, .pfx).
        file: PathBuf,
        /// Label to store the key and certificates under.
        #[arg(long)]
        label: String,
        /// File whose first line is the PKCS#12 password. Default: the SMIMEGW_P12_PASSWORD
        /// environment variable, else ask on the terminal.
        #[arg(long, value_name = "F")]
        password_file: Option<PathBuf>,
    },
    /// Generate an RSA key pair in the token.
    Generate {
        /// Label of the new key.
        #[arg(long)]
        label: String,
        /// Modulus size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
    },
    /// Delete every object with a label.
    Delete {
        /// Label of the objects to delete.
        #[arg(long)]
        label: String,
    },
    /// Check that signing and AES work, with a throwaway key that is deleted afterwards.
    Selftest,
}

/// Opens the token and runs the subcommand, writing its report to `out`.
pub fn run(args: TokenArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let token = open(&args)?;
    let token: &dyn Token = token.as_ref();
    match args.command {
        TokenCommand::Info => info(token, out),
        TokenCommand::Mechanisms => mechanisms(token, out),
        TokenCommand::List => list(token, out),
        TokenCommand::ImportP12 {
            file,
            label,
            password_file,
        } => import_p12(token, &file, &label, password_file.as_deref(), out),
        TokenCommand::Generate { label, bits } => generate(token, &label, bits, out),
        TokenCommand::Delete { label } => delete(token, &label, out),
        TokenCommand::Selftest => selftest::run(token, out),
    }
}

/// The PKCS#11 token of `--token-uri`, or the software token in `DATA/token`.
fn open(args: &TokenArgs) -> Result<Box<dyn Token>, CliError> {
    open_token(
        args.token_uri.as_deref(),
        args.pin_source.as_deref(),
        &args.data,
        args.allow_raw_rsa,
    )
}

/// Opens the PKCS#11 token at `token_uri`, or else the software token in `DATA/token`
/// (created on first use); the PIN comes from `pin_source` (default: env:SMIMEGW_PIN when
/// set, else a prompt).
pub fn open_token(
    token_uri: Option<&str>,
    pin_source: Option<&str>,
    data: &Path,
    allow_raw_rsa: bool,
) -> Result<Box<dyn Token>, CliError> {
    let pin_source = pin_source
        .map(PinSource::parse)
        .transpose()?
        .unwrap_or_else(default_pin_source);
    match token_uri {
        Some(text) => {
            let uri = Pkcs11Uri::parse(text)?;
            let mut opts = Pkcs11Options::from_uri(&uri)?;
            opts.allow_raw_rsa = allow_raw_rsa;
            if opts.pin.is_none() {
                opts.pin = Some(pin_source);
            }
            tracing::debug!(%uri, "opening the PKCS#11 token");
            Ok(Box::new(Pkcs11Token::open(opts)?))
        }
        None => {
            let dir = data.join("token");
            let pin = soft_token_passphrase(&dir, &pin_source)?;
            tracing::debug!(dir = %dir.display(), "opening the software token");
            let (token, created) = SoftToken::open_or_create(&dir, &pin)?;
            if created {
                eprintln!("created a new software token in {}", dir.display());
            }
            Ok(Box::new(token))
        }
    }
}

/// `env:SMIMEGW_PIN` when that variable is set, else `prompt`.
fn default_pin_source() -> PinSource {
    if std::env::var_os(PIN_ENV).is_some() {
        PinSource::Env(PIN_ENV.into())
    } else {
        PinSource::Prompt
    }
}

/// Reads the software token's passphrase; asks twice when a new token is made on the terminal.
fn soft_token_passphrase(dir: &Path, source: &PinSource) -> Result<Pin, CliError> {
    if SoftToken::exists(dir) {
        return Ok(source.read(&format!(
            "Passphrase of the software token in {}",
            dir.display()
        ))?);
    }
    let what = format!("Passphrase for a new software token in {}", dir.display());
    let pin = source.read(&what)?;
    if *source == PinSource::Prompt {
        let again = source.read("The same passphrase again")?;
        if again.expose() != pin.expose() {
            return Err(CliError::Password(
                "the two passphrases differ; no token was created".into(),
            ));
        }
    }
    Ok(pin)
}

fn info(token: &dyn Token, out: &mut dyn Write) -> Result<(), CliError> {
    let i = token.info()?;
    let max_sessions = if i.max_sessions == usize::MAX {
        "unlimited".to_string()
    } else {
        i.max_sessions.to_string()
    };
    table::pairs(
        out,
        &[
            ("backend", i.backend.to_string()),
            ("label", i.label),
            ("manufacturer", i.manufacturer),
            ("model", i.model),
            ("serial", i.serial),
            ("location", i.location),
            ("max sessions", max_sessions),
        ],
    )?;
    Ok(())
}

fn mechanisms(token: &dyn Token, out: &mut dyn Write) -> Result<(), CliError> {
    let c = token.capabilities()?;
    let rows: Vec<Vec<String>> = c
        .mechanisms
        .iter()
        .map(|m| vec![m.name.to_string(), yes_no(m.supported), m.detail.clone()])
        .collect();
    table::table(out, &["MECHANISM", "SUPPORTED", "DETAIL"], &rows)?;
    writeln!(out)?;
    let oaep_sha2 = match c.rsa_oaep_sha2 {
        Some(b) => yes_no(b),
        None => "not probed".into(),
    };
    let generate = if c.rsa_generate && c.rsa_max_bits > 0 {
        format!("yes ({}-{} bits)", c.rsa_min_bits, c.rsa_max_bits)
    } else {
        yes_no(c.rsa_generate)
    };
    table::pairs(
        out,
        &[
            ("RSA PKCS#1 v1.5 signing", yes_no(c.rsa_pkcs1_sign)),
            ("RSA-PSS signing", yes_no(c.rsa_pss_sign)),
            ("ECDSA signing", yes_no(c.ecdsa_sign)),
            ("RSA PKCS#1 v1.5 decryption", yes_no(c.rsa_pkcs1_decrypt)),
            ("RSA-OAEP decryption", yes_no(c.rsa_oaep_decrypt)),
            ("RSA-OAEP with SHA-2", oaep_sha2),
            ("raw RSA (CKM_RSA_X_509)", yes_no(c.rsa_raw)),
            ("key unwrap", yes_no(c.unwrap)),
            ("AES-CBC", yes_no(c.aes_cbc)),
            ("AES-GCM", yes_no(c.aes_gcm)),
            ("RSA key generation", generate),
        ],
    )?;
    Ok(())
}

fn list(token: &dyn Token, out: &mut dyn Write) -> Result<(), CliError> {
    let objects = token.list()?;
    let rows: Vec<Vec<String>> = objects
        .iter()
        .map(|o| {
            vec![
                o.label.clone(),
                type_name(o.class).to_string(),
                hsm::hex(&o.id),
                o.description.clone(),
                protection(o.protected).to_string(),
            ]
        })
        .collect();
    table::table(
        out,
        &["LABEL", "TYPE", "ID", "DESCRIPTION", "PROTECTED"],
        &rows,
    )?;
    Ok(())
}

fn import_p12(
    token: &dyn Token,
    file: &Path,
    label: &str,
    password_file: Option<&Path>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let data = std::fs::read(file).map_err(|source| CliError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let password = p12_password(file, password_file)?;
    let bundle = hsm::read_pkcs12(&data, &password)?;
    drop(password);
    let report = token.import(label, &bundle)?;
    let (subject, not_after) = match bundle.chain.first().map(|c| hsm::cert_summary(c)) {
        Some(Ok(s)) => (s.subject, s.not_after),
        Some(Err(e)) => (format!("(unreadable: {e})"), String::new()),
        None => ("(no certificate)".to_string(), String::new()),
    };
    table::pairs(
        out,
        &[
            ("imported", report.label),
            ("key", report.key.to_string()),
            ("id", hsm::hex(&report.id)),
            ("certificates", report.certificates.to_string()),
            ("subject", subject),
            ("not after", not_after),
        ],
    )?;
    Ok(())
}

/// The PKCS#12 password: the first line of `--password-file`, else `SMIMEGW_P12_PASSWORD`, else
/// asked on the terminal.
fn p12_password(p12: &Path, password_file: Option<&Path>) -> Result<Pin, CliError> {
    if let Some(path) = password_file {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| CliError::Read {
                    path: path.to_path_buf(),
                    source,
                })?,
            );
        let line = text.lines().next().unwrap_or("");
        return Ok(Pin::new(line.to_string()));
    }
    if let Ok(value) = std::env::var(P12_PASSWORD_ENV) {
        return Ok(Pin::new(value));
    }
    rpassword::prompt_password(format!("Password of {}: ", p12.display()))
        .map(Pin::new)
        .map_err(|e| {
            CliError::Password(format!(
                "the PKCS#12 password is needed but cannot be asked for ({e}); \
                 give it with --password-file or {P12_PASSWORD_ENV}"
            ))
        })
}

fn generate(
    token: &dyn Token,
    label: &str,
    bits: usize,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let o = token.generate_rsa(label, bits)?;
    table::pairs(
        out,
        &[
            ("generated", o.label),
            ("key", o.description),
            ("id", hsm::hex(&o.id)),
            ("protected", protection(o.protected).to_string()),
        ],
    )?;
    Ok(())
}

fn delete(token: &dyn Token, label: &str, out: &mut dyn Write) -> Result<(), CliError> {
    match token.delete(label)? {
        0 => Err(CliError::NothingDeleted(label.to_string())),
        1 => Ok(writeln!(out, "deleted 1 object labelled {label:?}")?),
        n => Ok(writeln!(out, "deleted {n} objects labelled {label:?}")?),
    }
}

fn type_name(t: ObjectType) -> &'static str {
    match t {
        ObjectType::Private => "private key",
        ObjectType::Public => "public key",
        ObjectType::Cert => "certificate",
        ObjectType::SecretKey => "secret key",
        ObjectType::Data => "data",
    }
}

fn protection(p: Option<bool>) -> &'static str {
    match p {
        Some(true) => "sensitive, not extractable",
        Some(false) => "EXPOSED",
        None => "",
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}
