//! `smimegw token selftest`: checks that a token can do what the gateway asks of it.
//!
//! With a throwaway RSA-2048 key labelled `selftest-<random hex>`:
//! - signs a SHA-256 digest with RSA PKCS#1 v1.5 (twice: the signature must be deterministic)
//!   and with RSA-PSS, and verifies each signature on the host with the token's public key.
//! - encrypts a random content key to the public key on the host (PKCS#1 v1.5, OAEP SHA-1,
//!   OAEP SHA-256) and unwraps it in the token; the unwrapped key must decrypt what the
//!   original key encrypted. A variant the token lacks is reported as unsupported, not failed
//!   (OAEP SHA-256 on SoftHSM2 needs `--allow-raw-rsa`). A damaged PKCS#1 v1.5 blob must give
//!   a different key, silently (implicit rejection).
//! - runs AES-256-CBC and AES-256-GCM with a content key placed on the host and one placed in
//!   the token (`AesOffload`): encrypt on one side, decrypt on the other, the token's ciphertext
//!   must equal the host's, and an altered GCM tag must be refused.
//!
//! The throwaway key is always deleted, whatever failed. Each check prints `ok` or `FAILED: <reason>`; the command fails
//! when any check did.

use std::fmt::Display;
use std::io::{self, Read, Write};

use hsm::{
    AesMode, AesOffload, CipherDirection, ContentKey, Hash, KeyRef, KeyTransport, SignAlgorithm,
    Token, run_all,
};

use crate::error::CliError;
use hsm::hex;

/// What is signed: the digest of this.
const MESSAGE: &[u8] = b"smimegw token self-test";

/// Size of the throwaway key.
const BITS: usize = 2048;

/// Plaintext length for the AES checks: several chunks of `run_all`, not a multiple of 16.
const AES_INPUT_LEN: usize = 10_007;

/// Width of the check-name column.
const NAME_WIDTH: usize = 44;

/// Runs the self-test; `Err(SelftestFailed)` when any check failed.
pub(super) fn run(token: &dyn Token, out: &mut dyn Write) -> Result<(), CliError> {
    let info = token.info()?;
    let label = format!("selftest-{}", hex(&random::<8>()?));
    writeln!(
        out,
        "self-test of the {} token {:?} with the throwaway key {label}",
        info.backend, info.label
    )?;
    let mut report = Report {
        out,
        total: 0,
        failed: 0,
    };
    let ran = checks(token, &label, &mut report);
    // Always delete, even when a check or the output failed.
    let deleted = token.delete(&label);
    let generated = ran?;
    let outcome = match deleted {
        Ok(0) if generated => Err("the key was gone before it could be deleted".to_string()),
        Ok(1) => Ok("1 object removed".to_string()),
        Ok(n) => Ok(format!("{n} objects removed")),
        Err(e) => Err(e.to_string()),
    };
    report.check("delete the throwaway key", outcome)?;
    let Report { out, total, failed } = report;
    if failed > 0 {
        return Err(CliError::SelftestFailed { failed, total });
    }
    writeln!(out, "self-test passed: {total} checks")?;
    Ok(())
}

/// Runs every check but the deletion; returns whether the key was generated.
fn checks(token: &dyn Token, label: &str, report: &mut Report<'_>) -> Result<bool, CliError> {
    let generated = token
        .generate_rsa(label, BITS)
        .map(|o| format!("{}, id {}", o.description, hex(&o.id)))
        .map_err(|e| e.to_string());
    let have_key = generated.is_ok();
    report.check(&format!("generate an RSA-{BITS} key"), generated)?;

    let key = KeyRef::label(label);
    let digest = Hash::Sha256.digest(MESSAGE);
    for (name, alg) in [
        (
            "sign PKCS#1 v1.5 SHA-256",
            SignAlgorithm::RsaPkcs1(Hash::Sha256),
        ),
        ("sign PSS SHA-256", SignAlgorithm::RsaPss(Hash::Sha256)),
    ] {
        let outcome = if have_key {
            sign(token, &key, alg, &digest)
        } else {
            Err("skipped: no key".to_string())
        };
        report.check(name, outcome)?;
    }

    let oaep = |hash| KeyTransport::RsaOaep {
        hash,
        mgf1: hash,
        label: None,
    };
    for (name, transport) in [
        ("unwrap PKCS#1 v1.5", KeyTransport::RsaPkcs1),
        ("unwrap OAEP SHA-1", oaep(Hash::Sha1)),
        ("unwrap OAEP SHA-256", oaep(Hash::Sha256)),
    ] {
        match (have_key, unwrap(token, &key, &transport)) {
            (false, _) => report.check(name, Err("skipped: no key".into()))?,
            (true, Err(Probe::Unsupported(why))) => report.unsupported(name, &why)?,
            (true, Err(Probe::Failed(why))) => report.check(name, Err(why))?,
            (true, Ok(detail)) => report.check(name, Ok(detail))?,
        }
    }
    let outcome = if have_key {
        implicit_rejection(token, &key)
    } else {
        Err("skipped: no key".to_string())
    };
    report.check("damaged PKCS#1 v1.5 blob: implicit rejection", outcome)?;

    let key_bytes = random::<32>()?;
    let plain: Vec<u8> = (0..AES_INPUT_LEN).map(|i| (i % 251) as u8).collect();
    let cbc = AesMode::Cbc { iv: random()? };
    let gcm = AesMode::Gcm {
        nonce: random::<12>()?.to_vec(),
        aad: b"smimegw self-test".to_vec(),
        tag_len: 16,
    };
    for (mode_name, mode) in [("AES-256-CBC", &cbc), ("AES-256-GCM", &gcm)] {
        for (enc, dec) in [
            (AesOffload::Host, AesOffload::Token),
            (AesOffload::Token, AesOffload::Host),
        ] {
            let name = format!(
                "{mode_name}: {} encrypts, {} decrypts",
                place_name(enc),
                place_name(dec)
            );
            let outcome = aes_round_trip(token, &key_bytes, mode, &plain, enc, dec);
            report.check(&name, outcome)?;
        }
    }
    report.check(
        "AES-256-GCM: token refuses an altered tag",
        gcm_tamper(token, &key_bytes, &gcm, &plain),
    )?;
    Ok(have_key)
}

/// Signs `digest`, verifies the signature with the public key on the host, and checks that
/// PKCS#1 v1.5 signatures are deterministic.
fn sign(token: &dyn Token, key: &KeyRef, alg: SignAlgorithm, digest: &[u8]) -> Outcome {
    let first = token.sign(key, alg, digest).map_err(text)?;
    let spki = token.public_key(key).map_err(text)?;
    hsm::public::verify_digest(&spki, alg, digest, &first)
        .map_err(|e| format!("the host does not accept the signature: {e}"))?;
    if let SignAlgorithm::RsaPkcs1(_) = alg {
        let second = token.sign(key, alg, digest).map_err(text)?;
        if second != first {
            return Err("two signatures of the same digest differ".into());
        }
        return Ok(format!(
            "{}-byte signature, verified, deterministic",
            first.len()
        ));
    }
    Ok(format!("{}-byte signature, verified", first.len()))
}

/// Why an unwrap probe did not pass.
enum Probe {
    /// The token lacks the mechanism: worth reporting, not a failure.
    Unsupported(String),
    Failed(String),
}

/// Encrypts a random AES-256 key to the token's public key on the host, unwraps it in the
/// token (into the token where it can, so the AES offload path is exercised too) and proves
/// the result is the same key.
fn unwrap(token: &dyn Token, key: &KeyRef, transport: &KeyTransport) -> Result<String, Probe> {
    let failed = |e: hsm::Error| Probe::Failed(e.to_string());
    let cek = random::<32>().map_err(|e| Probe::Failed(e.to_string()))?;
    let spki = token.public_key(key).map_err(failed)?;
    let blob = hsm::public::encrypt_key(&spki, transport, &cek).map_err(failed)?;
    let unwrapped = match token.unwrap_key(key, transport, &blob, cek.len(), AesOffload::Token) {
        Ok(k) => k,
        Err(hsm::Error::Unsupported(what)) => return Err(Probe::Unsupported(what)),
        Err(e) => return Err(failed(e)),
    };
    if holds(token, &unwrapped, &cek).map_err(Probe::Failed)? {
        let place = place_name(unwrapped.place());
        Ok(format!("{}-byte key, used in the {place}", cek.len()))
    } else {
        Err(Probe::Failed(
            "the unwrapped key is not the one encrypted".into(),
        ))
    }
}

/// A blob with one byte changed must unwrap "successfully" to some other key.
fn implicit_rejection(token: &dyn Token, key: &KeyRef) -> Outcome {
    let cek = random::<32>().map_err(text)?;
    let spki = token.public_key(key).map_err(text)?;
    let mut blob = hsm::public::encrypt_key(&spki, &KeyTransport::RsaPkcs1, &cek).map_err(text)?;
    blob[10] ^= 0x40;
    let unwrapped = token
        .unwrap_key(
            key,
            &KeyTransport::RsaPkcs1,
            &blob,
            cek.len(),
            AesOffload::Host,
        )
        .map_err(|e| format!("the damage was reported ({e}); it must not be"))?;
    if holds(token, &unwrapped, &cek)? {
        return Err("a damaged blob gave the original key".into());
    }
    Ok("a different key, no error".into())
}

/// Does `key` hold `bytes`? Ciphertext made with `bytes` on the host must decrypt with it.
fn holds(token: &dyn Token, key: &ContentKey, bytes: &[u8]) -> Result<bool, String> {
    let mode = AesMode::Cbc {
        iv: random().map_err(text)?,
    };
    let plain = b"which key is this? sixteen+ bytes";
    let reference = token.content_key(bytes, AesOffload::Host).map_err(text)?;
    let (cipher, _) = run_all(
        reference
            .cipher(CipherDirection::Encrypt, &mode)
            .map_err(text)?,
        plain,
        None,
    )
    .map_err(text)?;
    let stream = key.cipher(CipherDirection::Decrypt, &mode).map_err(text)?;
    Ok(matches!(run_all(stream, &cipher, None), Ok((p, _)) if p == plain))
}

/// Encrypts with a key placed at `enc`, decrypts with one placed at `dec`.
fn aes_round_trip(
    token: &dyn Token,
    key: &[u8],
    mode: &AesMode,
    plain: &[u8],
    enc: AesOffload,
    dec: AesOffload,
) -> Outcome {
    let enc_key = token.content_key(key, enc).map_err(text)?;
    let dec_key = token.content_key(key, dec).map_err(text)?;
    let (cipher, tag) = run_all(
        enc_key
            .cipher(CipherDirection::Encrypt, mode)
            .map_err(text)?,
        plain,
        None,
    )
    .map_err(text)?;
    if enc_key.place() == AesOffload::Token {
        let host = token.content_key(key, AesOffload::Host).map_err(text)?;
        let reference = run_all(
            host.cipher(CipherDirection::Encrypt, mode).map_err(text)?,
            plain,
            None,
        )
        .map_err(text)?;
        if reference.0 != cipher || reference.1 != tag {
            return Err("the token's ciphertext differs from the host's".into());
        }
    }
    let (decrypted, _) = run_all(
        dec_key
            .cipher(CipherDirection::Decrypt, mode)
            .map_err(text)?,
        &cipher,
        tag.as_deref(),
    )
    .map_err(text)?;
    if decrypted != plain {
        return Err("decryption returned other bytes than were encrypted".into());
    }
    let mut detail = format!("{} bytes", plain.len());
    if enc_key.place() != enc || dec_key.place() != dec {
        detail.push_str("; this backend runs AES on the host");
    }
    Ok(detail)
}

/// Decrypting in the token with one bit of the GCM tag flipped must fail with `Error::Decrypt`.
fn gcm_tamper(token: &dyn Token, key: &[u8], mode: &AesMode, plain: &[u8]) -> Outcome {
    let host = token.content_key(key, AesOffload::Host).map_err(text)?;
    let (cipher, tag) = run_all(
        host.cipher(CipherDirection::Encrypt, mode).map_err(text)?,
        plain,
        None,
    )
    .map_err(text)?;
    let mut tag = tag.ok_or("GCM encryption returned no tag")?;
    if let Some(b) = tag.first_mut() {
        *b ^= 1;
    }
    let placed = token.content_key(key, AesOffload::Token).map_err(text)?;
    let stream = placed
        .cipher(CipherDirection::Decrypt, mode)
        .map_err(text)?;
    match run_all(stream, &cipher, Some(&tag)) {
        Err(hsm::Error::Decrypt) => Ok("refused".into()),
        Err(e) => Err(format!("refused, but with an unexpected error: {e}")),
        Ok(_) => Err("an altered tag was accepted".into()),
    }
}

fn place_name(p: AesOffload) -> &'static str {
    match p {
        AesOffload::Host => "host",
        AesOffload::Token => "token",
    }
}

/// The result of one check: a detail when it passed, the reason when it failed.
type Outcome = Result<String, String>;

fn text(e: impl Display) -> String {
    e.to_string()
}

/// Prints one line per check and counts failures.
struct Report<'a> {
    out: &'a mut dyn Write,
    total: usize,
    failed: usize,
}

impl Report<'_> {
    fn check(&mut self, name: &str, outcome: Outcome) -> io::Result<()> {
        self.total += 1;
        match outcome {
            Ok(detail) => writeln!(self.out, "  {name:<NAME_WIDTH$} ok ({detail})"),
            Err(reason) => {
                self.failed += 1;
                writeln!(self.out, "  {name:<NAME_WIDTH$} FAILED: {reason}")
            }
        }
    }

    /// A check the token cannot run: shown, not counted as failed.
    fn unsupported(&mut self, name: &str, why: &str) -> io::Result<()> {
        writeln!(
            self.out,
            "  {name:<NAME_WIDTH$} not supported by this token ({why})"
        )
    }
}

/// `N` bytes from the kernel's random source.
fn random<const N: usize>() -> Result<[u8; N], CliError> {
    const SOURCE: &str = "/dev/urandom";
    let mut buf = [0u8; N];
    std::fs::File::open(SOURCE)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|source| CliError::Read {
            path: SOURCE.into(),
            source,
        })?;
    Ok(buf)
}
