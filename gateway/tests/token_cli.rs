//! End-to-end tests of `smimegw token`: the built binary, run as an administrator would run it,
//! against the software token in a temporary directory and against SoftHSM2.
//!
//! Every test also checks that no PIN, passphrase or password ever reaches stdout or stderr.
//! The SoftHSM2 tests skip, with a note, when the module is not installed; the PKCS#12 tests
//! skip when the Thunderbird corpus is not beside the repository.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_smimegw");

const SOFTHSM_MODULE: &str = hsm::softhsm::MODULE;

/// The software token's passphrase in these tests.
const PASSPHRASE: &str = "soft-passphrase-5e1f9";

/// The SoftHSM2 user PIN in these tests; unique enough that finding it in output means a leak.
const HSM_PIN: &str = "4711-secret-pin";

/// The secrets no output may contain.
const SECRETS: &[&str] = &[PASSPHRASE, HSM_PIN, "nss-wrong-guess"];

/// What one run of the command produced.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    #[track_caller]
    fn fails(self, code: i32, message: &str) -> Self {
        assert_eq!(self.code, code, "expected exit {code}: {self:#?}");
        assert!(
            self.stderr.contains(message),
            "stderr should say {message:?}: {self:#?}"
        );
        self
    }
}

/// Runs `smimegw token <args>` with a clean environment plus `env`.
fn smimegw(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.arg("token")
        .args(args)
        .stdin(Stdio::null())
        .env_remove("SMIMEGW_TOKEN_URI")
        .env_remove("SMIMEGW_PIN")
        .env_remove("SMIMEGW_P12_PASSWORD")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for secret in SECRETS {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "a secret was printed: {run:#?}"
        );
    }
    run
}

/// Runs against the software token in `data`, with its passphrase in SMIMEGW_PIN.
fn soft(data: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--data", data.to_str().unwrap()];
    all.extend_from_slice(args);
    smimegw(&all, &[("SMIMEGW_PIN", PASSPHRASE)])
}

/// Alice's PKCS#12 from Thunderbird's test data (written by NSS, BER inside; password `nss`).
fn alice_p12() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpora/thunderbird-smime/smime/Alice.p12");
    assert!(p.exists(), "{} is missing", p.display());
    p
}

#[test]
fn software_token_generate_list_selftest_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let run = soft(d, &["generate", "--label", "k1"]).ok();
    assert!(
        run.stderr.contains("created a new software token in"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("RSA 2048"), "{run:#?}");
    let run = soft(d, &["generate", "--label", "k1"]);
    run.fails(1, "already exists");

    let run = soft(d, &["list"]).ok();
    let line = run.stdout.lines().find(|l| l.starts_with("k1 ")).unwrap();
    assert!(line.contains("private key"), "{line}");
    assert!(line.contains("sensitive, not extractable"), "{line}");
    assert!(run.stdout.starts_with("LABEL"), "{run:#?}");

    let run = soft(d, &["selftest"]).ok();
    assert!(run.stdout.contains("self-test passed"), "{run:#?}");
    for line in [
        "unwrap OAEP SHA-256",
        "implicit rejection",
        "verified, deterministic",
    ] {
        let found = run.stdout.lines().find(|l| l.contains(line));
        assert!(
            found.is_some_and(|l| l.contains(" ok (")),
            "{line}: {run:#?}"
        );
    }
    assert!(!run.stdout.contains("FAILED"), "{run:#?}");
    assert!(
        !run.stderr.contains("created"),
        "the token is reused: {run:#?}"
    );
    let run = soft(d, &["list"]).ok();
    assert!(
        !run.stdout.contains("selftest-"),
        "throwaway key left: {run:#?}"
    );

    let run = soft(d, &["info"]).ok();
    assert!(run.stdout.contains("software"), "{run:#?}");
    let run = soft(d, &["mechanisms"]).ok();
    assert!(run.stdout.contains("RSA-PSS signing"), "{run:#?}");

    let run = soft(d, &["delete", "--label", "k1"]).ok();
    assert!(run.stdout.contains("deleted"), "{run:#?}");
    soft(d, &["delete", "--label", "k1"]).fails(1, "nothing labelled \"k1\"");
}

#[test]
fn software_token_imports_pkcs12() {
    let p12 = alice_p12();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = d.join("good-password");
    std::fs::write(&good, "nss\n").unwrap();
    let bad = d.join("bad-password");
    std::fs::write(&bad, "nss-wrong-guess\n").unwrap();
    let file = p12.to_str().unwrap();

    soft(
        d,
        &[
            "import-p12",
            file,
            "--label",
            "alice",
            "--password-file",
            bad.to_str().unwrap(),
        ],
    )
    .fails(1, "wrong password");

    let run = soft(
        d,
        &[
            "import-p12",
            file,
            "--label",
            "alice",
            "--password-file",
            good.to_str().unwrap(),
        ],
    )
    .ok();
    assert!(run.stdout.contains("RSA"), "{run:#?}");
    assert!(run.stdout.contains("Alice"), "leaf subject: {run:#?}");
    assert!(run.stdout.contains("not after"), "{run:#?}");

    let run = soft(d, &["list"]).ok();
    let key = run
        .stdout
        .lines()
        .find(|l| l.starts_with("alice ") && l.contains("private key"))
        .unwrap();
    assert!(key.contains("sensitive, not extractable"), "{key}");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("alice ") && l.contains("certificate")),
        "{run:#?}"
    );

    // The password from the environment instead of a file.
    let mut args = vec!["--data", d.to_str().unwrap()];
    args.extend(["import-p12", file, "--label", "alice2"]);
    smimegw(
        &args,
        &[("SMIMEGW_PIN", PASSPHRASE), ("SMIMEGW_P12_PASSWORD", "nss")],
    )
    .ok();

    soft(d, &["delete", "--label", "alice"]).ok();
    soft(d, &["delete", "--label", "alice2"]).ok();
}

#[test]
fn wrong_software_token_passphrase_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    soft(d, &["list"]).ok();
    let data = d.to_str().unwrap();
    smimegw(
        &["--data", data, "list"],
        &[("SMIMEGW_PIN", "not-the-passphrase")],
    )
    .fails(1, "wrong PIN");

    // The same through --pin-source file:.
    let pin_file = d.join("pin");
    std::fs::write(&pin_file, format!("{PASSPHRASE}\n")).unwrap();
    let source = format!("file:{}", pin_file.display());
    smimegw(&["--data", data, "--pin-source", &source, "list"], &[]).ok();
}

#[test]
fn usage_errors_exit_with_2() {
    smimegw(&["frobnicate"], &[]).fails(2, "frobnicate");
    smimegw(&["generate"], &[]).fails(2, "--label");
    smimegw(&["import-p12", "x.p12"], &[]).fails(2, "--label");
}

#[test]
fn help_never_shows_a_pin_from_the_environment() {
    let uri = format!("pkcs11:token=x?module-path={SOFTHSM_MODULE}&pin-value={HSM_PIN}");
    let run = smimegw(&["--help"], &[("SMIMEGW_TOKEN_URI", &uri)]).ok();
    assert!(run.stdout.contains("--token-uri"), "{run:#?}");
}

/// A fresh SoftHSM2 token labelled `clitest` in a temporary directory, or `None` (with a note)
/// when SoftHSM2 is not installed.
struct SoftHsm {
    dir: tempfile::TempDir,
}

impl SoftHsm {
    fn new() -> Self {
        if !Path::new(SOFTHSM_MODULE).exists() {
            panic!("{SOFTHSM_MODULE} is not installed: run tests/run, which installs softhsm2");
        }
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let hsm = SoftHsm { dir };
        let status = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", "clitest"])
            .args(["--so-pin", "0000", "--pin", HSM_PIN])
            .env("SOFTHSM2_CONF", hsm.conf())
            .stdout(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => hsm,
            Ok(s) => panic!("softhsm2-util --init-token failed: {s}"),
            Err(e) => {
                panic!("cannot run softhsm2-util ({e}): run tests/run, which installs softhsm2")
            }
        }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    fn uri(&self) -> String {
        format!("pkcs11:token=clitest?module-path={SOFTHSM_MODULE}&pin-value={HSM_PIN}")
    }

    fn run(&self, args: &[&str]) -> Run {
        let uri = self.uri();
        let mut all = vec!["--token-uri", uri.as_str()];
        all.extend_from_slice(args);
        smimegw(&all, &[("SOFTHSM2_CONF", self.conf().to_str().unwrap())])
    }
}

#[test]
fn softhsm_selftest_and_mechanisms() {
    let hsm = SoftHsm::new();

    let run = hsm.run(&["selftest"]).ok();
    assert!(run.stdout.contains("self-test passed"), "{run:#?}");
    // SoftHSM2 2.6 has OAEP with SHA-1 only: SHA-256 is reported, not failed.
    assert!(
        run.stdout.lines().any(|l| l.contains("unwrap OAEP SHA-256")
            && l.contains("not supported by this token")),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.contains("unwrap PKCS#1 v1.5") && l.contains("used in the token")),
        "{run:#?}"
    );
    assert!(run.stdout.contains("pkcs11"), "{run:#?}");

    let run = hsm.run(&["mechanisms"]).ok();
    assert!(!run.stderr.contains("ERROR"), "log noise: {run:#?}");
    assert!(
        run.stdout.lines().any(|l| l.starts_with("CKM_RSA_PKCS ")),
        "{run:#?}"
    );

    let run = hsm.run(&["info"]).ok();
    assert!(run.stdout.contains("clitest"), "{run:#?}");
    assert!(run.stdout.contains(SOFTHSM_MODULE), "{run:#?}");

    // The URI from the environment, the PIN from a file named by --pin-source.
    let pin_file = hsm.dir.path().join("pin");
    std::fs::write(&pin_file, format!("{HSM_PIN}\n")).unwrap();
    let source = format!("file:{}", pin_file.display());
    let uri = format!("pkcs11:token=clitest?module-path={SOFTHSM_MODULE}");
    let conf = hsm.conf();
    let run = smimegw(
        &["--pin-source", &source, "generate", "--label", "k"],
        &[
            ("SMIMEGW_TOKEN_URI", &uri),
            ("SOFTHSM2_CONF", conf.to_str().unwrap()),
        ],
    )
    .ok();
    assert!(
        run.stdout.contains("sensitive, not extractable"),
        "{run:#?}"
    );
    let run = hsm.run(&["list"]).ok();
    assert!(run.stdout.contains("k "), "{run:#?}");
    hsm.run(&["delete", "--label", "k"]).ok();
}

#[test]
fn softhsm_refuses_a_wrong_pin() {
    let hsm = SoftHsm::new();
    let uri = format!("pkcs11:token=clitest?module-path={SOFTHSM_MODULE}&pin-value=0000-wrong");
    smimegw(
        &["--token-uri", &uri, "info"],
        &[("SOFTHSM2_CONF", hsm.conf().to_str().unwrap())],
    )
    .fails(1, "wrong PIN");
}

#[test]
fn softhsm_imports_pkcs12_as_non_extractable() {
    let hsm = SoftHsm::new();
    let p12 = alice_p12();
    let pw = hsm.dir.path().join("p12-password");
    std::fs::write(&pw, "nss\n").unwrap();
    hsm.run(&[
        "import-p12",
        p12.to_str().unwrap(),
        "--label",
        "alice",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .ok();
    let run = hsm.run(&["list"]).ok();
    let key = run
        .stdout
        .lines()
        .find(|l| l.starts_with("alice ") && l.contains("private key"))
        .unwrap();
    assert!(key.contains("sensitive, not extractable"), "{key}");
    hsm.run(&["delete", "--label", "alice"]).ok();
}
