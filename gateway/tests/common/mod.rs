//! Fixtures shared by the engine tests: the corpora, OpenSSL, and the three kinds of key
//! holder every sign and decrypt test runs against (a PEM file, the software token, SoftHSM2).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hsm::{
    ImportBundle, KeyRef, MemoryToken, Pin, PinSource, Pkcs11Options, Pkcs11Token, SoftToken, Token,
};

pub const SOFTHSM_MODULE: &str = hsm::softhsm::MODULE;
pub const HSM_LABEL: &str = "engine-test";
pub const HSM_PIN: &str = "engine-pin";

pub fn corpus(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpora")
        .join(rel);
    assert!(p.exists(), "{} is missing", p.display());
    p
}

pub fn openssl(args: &[&str], dir: &Path) -> std::process::Output {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (tests/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The key and certificate of a PKCS#12 file as PEM files `DIR/NAME.key` and `DIR/NAME.crt`,
/// made by OpenSSL (the form `--key` and `--cert` take).
pub fn p12_to_pem(p12: &Path, password: &str, dir: &Path, name: &str) {
    let pass = format!("pass:{password}");
    let base = [
        "pkcs12",
        "-in",
        p12.to_str().unwrap(),
        "-passin",
        pass.as_str(),
    ];
    let key = format!("{name}.key");
    let crt = format!("{name}.crt");
    openssl(
        &[&base[..], &["-nocerts", "-nodes", "-out", &key]].concat(),
        dir,
    );
    openssl(
        &[&base[..], &["-clcerts", "-nokeys", "-out", &crt]].concat(),
        dir,
    );
}

/// The DER of the first PEM block of a file (text around the block is allowed).
pub fn pem_der(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let begin = text.find("-----BEGIN ").unwrap();
    let end = text[begin..].find("-----END ").unwrap() + begin;
    let body: String = text[begin..end].lines().skip(1).collect();
    smimegw::smime::mime::base64_decode(body.as_bytes()).unwrap()
}

/// One SoftHSM2 token per test process (SoftHSM reads SOFTHSM2_CONF once, at C_Initialize).
pub fn softhsm_conf() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        assert!(
            Path::new(SOFTHSM_MODULE).exists(),
            "SoftHSM2 is not installed: run tests/run, which installs softhsm2"
        );
        let dir = tempfile::Builder::new()
            .prefix("smimegw-engine-hsm")
            .tempdir()
            .unwrap()
            .keep();
        let conf = hsm::softhsm::init_dev_token(&dir, HSM_LABEL, HSM_PIN).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: set once, before this process opens any PKCS#11 module.
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", &conf);
        }
        conf
    })
}

/// The shared SoftHSM2 token of this test process.
pub fn softhsm_token() -> Pkcs11Token {
    softhsm_conf();
    Pkcs11Token::open(Pkcs11Options {
        module: SOFTHSM_MODULE.into(),
        token: Some(HSM_LABEL.into()),
        serial: None,
        pin: Some(PinSource::Value(zeroize::Zeroizing::new(HSM_PIN.into()))),
        max_sessions: 4,
        // SoftHSM2 2.6 does OAEP with SHA-1 and no label only; the rest goes through raw RSA
        // with the padding checked on the host, the setting a deployment would choose.
        allow_raw_rsa: true,
    })
    .unwrap()
}

/// A key holder and how to name the key in it.
pub struct Holder {
    pub name: &'static str,
    pub token: Box<dyn Token>,
    pub key: KeyRef,
    _dir: Option<tempfile::TempDir>,
}

/// The key and certificate of a PKCS#12 file in each kind of holder. Returns the holders and
/// the end-entity certificate (DER).
pub fn holders(p12: &Path, password: &str, label: &str) -> (Vec<Holder>, Vec<u8>) {
    let bytes = std::fs::read(p12).unwrap();
    let bundle = hsm::read_pkcs12(&bytes, &Pin::new(password.into())).unwrap();
    let cert = bundle.chain[0].clone();
    // A PEM file, as `--key key.pem` reads it.
    let dir = tempfile::tempdir().unwrap();
    p12_to_pem(p12, password, dir.path(), "key");
    let pem = std::fs::read(dir.path().join("key.key")).unwrap();
    (holders_of(&pem, &bundle, label), cert)
}

/// One key in each kind of holder: `pem` (the unencrypted PEM key, as `--key key.pem` reads
/// it), the software token and SoftHSM2 (from `bundle`), all under `label`.
pub fn holders_of(pem: &[u8], bundle: &ImportBundle, label: &str) -> Vec<Holder> {
    let memory = MemoryToken::from_pem(pem, label, "key.pem").unwrap();

    let soft_dir = tempfile::tempdir().unwrap();
    let soft = SoftToken::create(
        &soft_dir.path().join("t"),
        &Pin::new("soft-passphrase".into()),
    )
    .unwrap();
    soft.import(label, bundle).unwrap();

    let hsm = softhsm_token();
    let _ = hsm.delete(label);
    hsm.import(label, bundle)
        .unwrap_or_else(|e| panic!("importing {label} into SoftHSM2: {e}"));

    let key = KeyRef::label(label);
    vec![
        Holder {
            name: "pem",
            token: Box::new(memory),
            key: key.clone(),
            _dir: None,
        },
        Holder {
            name: "software",
            token: Box::new(soft),
            key: key.clone(),
            _dir: Some(soft_dir),
        },
        Holder {
            name: "softhsm",
            token: Box::new(hsm),
            key,
            _dir: None,
        },
    ]
}

/// A fresh software token and the shared SoftHSM2 token, for tests that make keys. Labels in
/// SoftHSM2 outlive the test: callers use labels of their own.
pub fn writable_tokens() -> Vec<(&'static str, Box<dyn Token>, Option<tempfile::TempDir>)> {
    let soft_dir = tempfile::tempdir().unwrap();
    let soft = SoftToken::create(
        &soft_dir.path().join("t"),
        &Pin::new("soft-passphrase".into()),
    )
    .unwrap();
    vec![
        ("software token", Box::new(soft), Some(soft_dir)),
        ("SoftHSM2", Box::new(softhsm_token()), None),
    ]
}
