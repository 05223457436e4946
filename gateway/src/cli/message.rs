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

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use hsm::{
    AesOffload, KeyRef, MemoryToken, PinSource, Pkcs11Options, Pkcs11Token, Pkcs11Uri, Token,
};
use smimegw::ca::CertFileError;
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
    /// Sign a message: detached multipart/signed (default) or opaque.
    Sign(SignArgs),
    /// Encrypt a message to one or more recipients' certificates.
    Encrypt(EncryptArgs),
    /// Verify an S/MIME signed message: exit 0 only when every signature is valid and every
    /// signer is trusted.
    Verify(VerifyArgs),
}

/// Digest for signing.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Digest {
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Debug, Args)]
struct SignArgs {
    /// The signer's certificate (PEM or DER).
    #[arg(long, value_name = "CERT")]
    signer: PathBuf,
    /// The signer's private key: a PEM file or a PKCS#11 URI.
    #[arg(long, value_name = "KEY")]
    key: String,
    /// Intermediate certificates to include (PEM).
    #[arg(long, value_name = "CERTS.pem")]
    chain: Option<PathBuf>,
    /// Opaque signature (application/pkcs7-mime; smime-type=signed-data) instead of detached.
    #[arg(long)]
    opaque: bool,
    #[arg(long, value_enum, default_value = "sha256")]
    digest: Digest,
    /// RSA-PSS instead of PKCS#1 v1.5.
    #[arg(long)]
    pss: bool,
    /// Input message (default: stdin).
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
    /// Output file (default: stdout).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// PKCS#11 only: raw RSA in the token with the padding built on the host.
    #[arg(long)]
    allow_raw_rsa: bool,
}

/// Content encryption.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum CipherArg {
    #[value(name = "aes128-cbc")]
    Aes128Cbc,
    #[value(name = "aes256-cbc")]
    Aes256Cbc,
    #[value(name = "aes128-gcm")]
    Aes128Gcm,
    #[value(name = "aes256-gcm")]
    Aes256Gcm,
}

#[derive(Debug, Args)]
struct EncryptArgs {
    /// A recipient's certificate (PEM or DER). Repeatable.
    #[arg(long, value_name = "CERT", required = true)]
    recipient: Vec<PathBuf>,
    /// Content encryption: CBC makes EnvelopedData, GCM AuthEnvelopedData.
    #[arg(long, value_enum, default_value = "aes256-cbc")]
    cipher: CipherArg,
    /// RSA-OAEP (SHA-256) key transport instead of PKCS#1 v1.5.
    #[arg(long)]
    oaep: bool,
    /// Input message (default: stdin).
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
    /// Output file (default: stdout).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Trust anchor certificates (PEM, several per file allowed, or DER). Repeatable.
    #[arg(long, value_name = "CA.pem", required = true)]
    trust: Vec<PathBuf>,
    /// Validate at this time (RFC 3339, e.g. 2026-06-01T00:00:00Z, or a date) instead of now.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Input message (default: stdin).
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
    /// Write the signed entity, exactly as signed, here.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
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
        MessageCommand::Sign(a) => sign(a, out),
        MessageCommand::Encrypt(a) => encrypt(a, out),
        MessageCommand::Verify(a) => verify(a, out),
    }
}

fn encrypt(a: EncryptArgs, stdout: &mut dyn Write) -> Result<(), CliError> {
    let mut recipients = Vec::new();
    for p in &a.recipient {
        recipients.push(read_cert(p)?);
    }
    let mut input = open_input(a.input.as_deref())?;
    let cipher = match a.cipher {
        CipherArg::Aes128Cbc => smime::encrypt::Cipher::Aes128Cbc,
        CipherArg::Aes256Cbc => smime::encrypt::Cipher::Aes256Cbc,
        CipherArg::Aes128Gcm => smime::encrypt::Cipher::Aes128Gcm,
        CipherArg::Aes256Gcm => smime::encrypt::Cipher::Aes256Gcm,
    };
    let output = Output::new(a.out.as_deref())?;
    let mut w = output.writer();
    smime::encrypt::encrypt_stream(&mut input, &recipients, cipher, a.oaep, &mut w)?;
    w.flush()?;
    drop(w);
    output.commit(stdout)
}

fn sign(a: SignArgs, stdout: &mut dyn Write) -> Result<(), CliError> {
    let cert = read_cert(&a.signer)?;
    let chain = match &a.chain {
        Some(p) => read_certs(p)?,
        None => Vec::new(),
    };
    let (token, key) = open_key(&a.key, a.allow_raw_rsa)?;
    let mut input = open_input(a.input.as_deref())?;
    let signer = smime::sign::Signer {
        cert: &cert,
        chain: &chain,
        token: token.as_ref(),
        key,
        hash: match a.digest {
            Digest::Sha256 => hsm::Hash::Sha256,
            Digest::Sha384 => hsm::Hash::Sha384,
            Digest::Sha512 => hsm::Hash::Sha512,
        },
        pss: a.pss,
    };
    let format = if a.opaque {
        smime::sign::Format::Opaque
    } else {
        smime::sign::Format::Detached
    };
    let output = Output::new(a.out.as_deref())?;
    let mut w = output.writer();
    smime::sign::sign_stream(&mut input, &signer, format, unix_now(), &mut w)?;
    w.flush()?;
    drop(w);
    output.commit(stdout)
}

fn verify(a: VerifyArgs, stdout: &mut dyn Write) -> Result<(), CliError> {
    let mut anchors = Vec::new();
    for path in &a.trust {
        anchors.extend(read_certs(path)?);
    }
    let at = match &a.at {
        Some(t) => parse_time(t).ok_or_else(|| {
            CliError::Usage(format!(
                "--at {t:?}: expected RFC 3339 (2026-06-01T12:00:00Z) or a date (2026-06-01)"
            ))
        })?,
        None => unix_now(),
    };
    let mut input = open_input(a.input.as_deref())?;
    let output = a.out.as_deref().map(|p| Output::new(Some(p))).transpose()?;
    let verified = match &output {
        Some(o) => {
            let mut w = o.writer();
            let v = smime::verify_stream(&mut input, &mut w)?;
            w.flush()?;
            v
        }
        None => smime::verify_stream(&mut input, &mut std::io::sink())?,
    };
    let whole = smime::stream::whole(&mut input)?;
    let (header, _) = smime::stream::read_header(&mut input, whole)?;
    // The From field, read strictly: one that could be read two ways makes no signer
    // trusted for it. Without a From field, no address is checked.
    let from = match smime::mime::Entity::parse(&header) {
        Ok(e) if e.field("From").is_some() => {
            smimegw::mailbox::sender(e.fields.iter().map(|f| (f.name, f.value.as_str())))
                .map(|a| Some(a.to_string()))
        }
        _ => Ok(None),
    };

    let mut reports = Vec::new();
    for s in &verified.signers {
        let trusted = match (&s.cert, s.valid) {
            (Some(cert), true) => match &from {
                Ok(from) => smime::trust::check_signer(
                    cert,
                    &verified.certificates,
                    &anchors,
                    at,
                    from.as_deref(),
                ),
                Err(problem) => Err(problem.describe().to_string()),
            },
            (None, _) => Err("the signer's certificate is not in the message".into()),
            (Some(_), false) => Err("not checked: the signature is invalid".into()),
        };
        reports.push(SignerReport::new(s, trusted));
    }
    if let Some(o) = output {
        o.commit(stdout)?;
    }
    if a.json {
        writeln!(stdout, "{}", json_report(&verified, &reports))?;
    }
    let failures: Vec<String> = reports
        .iter()
        .filter(|r| !(r.valid && r.trusted))
        .map(|r| format!("{}: {}", r.who(), r.reason.as_deref().unwrap_or("failed")))
        .collect();
    if failures.is_empty() {
        for r in &reports {
            tracing::info!(signer = %r.who(), "signature valid and trusted");
        }
        if !a.json {
            for r in &reports {
                eprintln!("verified: {} ({}, {})", r.who(), r.digest, r.algorithm);
            }
        }
        Ok(())
    } else {
        Err(CliError::Verification(failures.join("; ")))
    }
}

/// What `verify` says about one signer.
struct SignerReport {
    subject: Option<String>,
    email: Option<String>,
    serial: Option<String>,
    issuer: Option<String>,
    digest: String,
    algorithm: String,
    signing_time: Option<String>,
    valid: bool,
    trusted: bool,
    reason: Option<String>,
}

impl SignerReport {
    fn new(s: &smime::SignerResult, trusted: smime::trust::Verdict) -> Self {
        use der::Decode;
        let summary = s.cert.as_deref().and_then(|c| hsm::cert_summary(c).ok());
        let email = s
            .cert
            .as_deref()
            .and_then(|c| x509_cert::Certificate::from_der(c).ok())
            .and_then(|c| smime::trust::addresses(&c).into_iter().next());
        let reason = match (&s.reason, &trusted) {
            (Some(r), _) => Some(r.clone()),
            (None, Err(r)) => Some(r.clone()),
            (None, Ok(())) => None,
        };
        SignerReport {
            subject: summary.as_ref().map(|x| x.subject.clone()),
            email,
            serial: summary.as_ref().map(|x| x.serial.clone()),
            issuer: summary.as_ref().map(|x| x.issuer.clone()),
            digest: s.digest.map_or("unknown".into(), |h| h.name().to_string()),
            algorithm: s.algorithm.map_or("unknown".into(), |a| a.to_string()),
            signing_time: s.signing_time.clone(),
            valid: s.valid,
            trusted: s.valid && trusted.is_ok(),
            reason,
        }
    }

    fn who(&self) -> String {
        match (&self.email, &self.subject) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => "unknown signer".into(),
        }
    }
}

fn json_report(v: &smime::VerifiedStream, reports: &[SignerReport]) -> String {
    let opt = |o: &Option<String>| o.as_deref().map_or("null".to_string(), json_string);
    let signers: Vec<String> = reports
        .iter()
        .map(|r| {
            format!(
                "{{\"signer\":{},\"email\":{},\"serial\":{},\"issuer\":{},\"digest\":{},\"algorithm\":{},\"signing_time\":{},\"valid\":{},\"trusted\":{},\"reason\":{}}}",
                opt(&r.subject),
                opt(&r.email),
                opt(&r.serial),
                opt(&r.issuer),
                json_string(&r.digest),
                json_string(&r.algorithm),
                opt(&r.signing_time),
                r.valid,
                r.trusted,
                opt(&r.reason),
            )
        })
        .collect();
    let all = reports.iter().all(|r| r.valid && r.trusted);
    format!(
        "{{\"valid\":{},\"trusted\":{},\"detached\":{},\"signers\":[{}]}}",
        reports.iter().all(|r| r.valid),
        all,
        v.detached,
        signers.join(",")
    )
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Seconds since the Unix epoch from `2026-06-01T12:00:00Z`, `...+02:00` or `2026-06-01`.
fn parse_time(t: &str) -> Option<u64> {
    let t = t.trim();
    let (date, time) = match t.split_once(['T', 't', ' ']) {
        Some((d, rest)) => (d, Some(rest)),
        None => (t, None),
    };
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut secs = 0i64;
    if let Some(time) = time {
        let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
            (c, 0)
        } else {
            let pos = time.rfind(['+', '-'])?;
            let (c, off) = time.split_at(pos);
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let (oh, om) = off[1..].split_once(':')?;
            (
                c,
                sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
            )
        };
        let clock = clock.split('.').next()?;
        let mut c = clock.split(':');
        let (h, mi, s): (i64, i64, i64) = (
            c.next()?.parse().ok()?,
            c.next()?.parse().ok()?,
            c.next()?.parse().ok()?,
        );
        if h > 23 || mi > 59 || s > 60 {
            return None;
        }
        secs = h * 3600 + mi * 60 + s - offset;
    }
    // Days from civil (proleptic Gregorian).
    let (y2, m2) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + secs).ok()
}

fn decrypt(a: DecryptArgs, stdout: &mut dyn Write) -> Result<(), CliError> {
    let cert = read_cert(&a.cert)?;
    let (token, key) = open_key(&a.key, a.allow_raw_rsa)?;
    let mut input = open_input(a.input.as_deref())?;
    let me = Recipient {
        cert: &cert,
        token: token.as_ref(),
        key,
        offload: match a.offload {
            Offload::Host => AesOffload::Host,
            Offload::Token => AesOffload::Token,
        },
    };
    let output = Output::new(a.out.as_deref())?;
    let mut w = output.writer();
    let result = smime::decrypt_stream(&mut input, &me, &mut w)?;
    w.flush()?;
    drop(w);
    tracing::info!(
        cipher = %result.cipher,
        key_management = %result.key_management,
        "decrypted"
    );
    output.commit(stdout)
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

/// Every certificate in a file: PEM (one or more blocks) or DER. The file is read once and
/// each certificate is checked to parse.
fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, CliError> {
    let bytes = std::fs::read(path).map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let usage = |what: String| CliError::Usage(format!("{}: {what}", path.display()));
    let ders = smimegw::ca::parse_certificates(&bytes).map_err(|e| match e {
        CertFileError::Damaged => usage("a PEM certificate is damaged".into()),
        CertFileError::NoCertificate => {
            CliError::Usage(format!("{} holds no PEM certificate", path.display()))
        }
    })?;
    for der in &ders {
        hsm::cert_summary(der).map_err(|e| usage(e.to_string()))?;
    }
    Ok(ders)
}

/// A certificate file, PEM or DER, as DER (the first certificate when there are several).
fn read_cert(path: &Path) -> Result<Vec<u8>, CliError> {
    Ok(read_certs(path)?.swap_remove(0))
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The input message as a seekable file: the file named, or stdin (or a pipe) copied to an
/// unnamed temporary file first, so the engine can stream it in passes.
fn open_input(path: Option<&Path>) -> Result<File, CliError> {
    let name = path.unwrap_or(Path::new("(stdin)"));
    let read_err = |source| CliError::Read {
        path: name.to_path_buf(),
        source,
    };
    if let Some(p) = path {
        let f = File::open(p).map_err(read_err)?;
        if f.metadata().map_err(read_err)?.is_file() {
            return Ok(f);
        }
        return spool(f).map_err(read_err);
    }
    spool(std::io::stdin().lock()).map_err(read_err)
}

fn spool(mut from: impl Read) -> std::io::Result<File> {
    let mut f = tempfile::tempfile()?;
    std::io::copy(&mut from, &mut f)?;
    f.seek(SeekFrom::Start(0))?;
    Ok(f)
}

/// Where a result goes: a temporary file that becomes `--out` (renamed) or is copied to
/// stdout, only once the whole operation succeeded. Nothing half-done is ever released, and
/// for AES-GCM no plaintext before the tag has verified.
struct Output {
    path: Option<PathBuf>,
    file: tempfile::NamedTempFile,
}

impl Output {
    fn new(path: Option<&Path>) -> Result<Self, CliError> {
        let dir = match path {
            Some(p) => p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            None => std::env::temp_dir(),
        };
        let file = tempfile::NamedTempFile::new_in(&dir).map_err(|source| CliError::Write {
            path: path.unwrap_or(&dir).to_path_buf(),
            source,
        })?;
        Ok(Output {
            path: path.map(Path::to_path_buf),
            file,
        })
    }

    /// A buffered writer into the temporary file.
    fn writer(&self) -> BufWriter<&File> {
        BufWriter::with_capacity(smime::stream::CHUNK, self.file.as_file())
    }

    /// Releases the result: renames it to `--out` or copies it to stdout.
    fn commit(self, stdout: &mut dyn Write) -> Result<(), CliError> {
        let Some(path) = self.path else {
            let mut f = self.file.reopen()?;
            std::io::copy(&mut f, stdout)?;
            stdout.flush()?;
            return Ok(());
        };
        let persist = || -> std::io::Result<()> {
            self.file.as_file().sync_all()?;
            self.file.persist(&path).map_err(|e| e.error)?;
            Ok(())
        };
        persist().map_err(|source| CliError::Write {
            path: path.clone(),
            source,
        })
    }
}
