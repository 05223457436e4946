//! Test fixtures: a software token and a SoftHSM2 token, so that every test runs against both.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hsm::{Pin, PinSource, Pkcs11Options, Pkcs11Token, SoftToken, Token};

pub const MODULE: &str = hsm::softhsm::MODULE;
pub const USER_PIN: &str = "4711-test-pin";
pub const LABEL: &str = "smimegw-test";

pub struct SoftHsm {
    pub dir: PathBuf,
}

/// One SoftHSM2 configuration per test process: SoftHSM reads SOFTHSM2_CONF once, at
/// C_Initialize, and module initialisation is process-wide.
pub fn softhsm() -> &'static SoftHsm {
    static FIX: OnceLock<SoftHsm> = OnceLock::new();
    FIX.get_or_init(|| {
        assert!(
            Path::new(MODULE).exists(),
            "SoftHSM2 is not installed ({MODULE} missing): run tests/run as root, or apt-get install softhsm2"
        );
        let dir = tempfile::Builder::new().prefix("smimegw-softhsm").tempdir().unwrap().keep();
        let conf = hsm::softhsm::init_dev_token(&dir, LABEL, USER_PIN).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: set once, before any token is opened in this process; SoftHSM reads it at
        // C_Initialize.
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", &conf);
        }
        SoftHsm { dir }
    })
}

pub fn pkcs11_options(raw: bool) -> Pkcs11Options {
    softhsm();
    Pkcs11Options {
        module: MODULE.into(),
        token: Some(LABEL.into()),
        serial: None,
        pin: Some(PinSource::Value(zeroize::Zeroizing::new(USER_PIN.into()))),
        max_sessions: 4,
        allow_raw_rsa: raw,
    }
}

pub fn pkcs11_token(raw: bool) -> Pkcs11Token {
    Pkcs11Token::open(pkcs11_options(raw)).unwrap()
}

pub fn soft_token() -> (tempfile::TempDir, SoftToken) {
    let dir = tempfile::tempdir().unwrap();
    let t = SoftToken::create(&dir.path().join("token"), &Pin::new("soft-pass".into())).unwrap();
    (dir, t)
}

/// Both backends. The TempDir keeps the software token alive.
pub fn backends() -> Vec<(&'static str, Box<dyn Token>, Option<tempfile::TempDir>)> {
    let (d, soft) = soft_token();
    vec![
        ("software", Box::new(soft) as Box<dyn Token>, Some(d)),
        (
            "softhsm",
            Box::new(pkcs11_token(false)) as Box<dyn Token>,
            None,
        ),
    ]
}

/// A label unique in this process and run, so tests sharing the SoftHSM token do not collide.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn corpus(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpora")
        .join(rel)
}

pub fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn pem(label: &str, der: &[u8]) -> String {
    use std::fmt::Write;
    let b64 = base64(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        writeln!(s, "{}", std::str::from_utf8(chunk).unwrap()).unwrap();
    }
    writeln!(s, "-----END {label}-----").unwrap();
    s
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
