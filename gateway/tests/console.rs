//! `smimegw console` driven through a pipe, as the serial line would drive it (no gateway
//! running): the first sign-in, network settings and their checks, a password change, the
//! factory-reset confirmation, and sign-in failures. The appliance test drives it over
//! QEMU's serial port with a gateway behind it.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs the console on `dir` with `input` typed; its output.
fn console(dir: &Path, input: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smimegw"))
        .args(["console", "--data"])
        .arg(dir)
        .arg("--network")
        .arg(dir.join("network.conf"))
        .args(["--reboot-command", "true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn console_first_sign_in_settings_password_and_reset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = console(
        d,
        "too short\n\
         correct horse battery\ncorrect horse battery\n\
         network static 192.0.2.10/24 192.0.2.1 192.0.2.53,192.0.2.54\n\
         network static 300.1.2.3/24 192.0.2.1\n\
         network hostname gw1.example.com\n\
         network\n\
         status\n\
         frobnicate\n\
         passwd\nnot my password\n\
         passwd\ncorrect horse battery\nstaple again please\nstaple again please\n\
         factory-reset\nstaple again please\nno\n\
         factory-reset\nstaple again please\nerase everything\n\
         logout\n",
    );
    for want in [
        "No administrator exists yet",
        "Too short",
        "Signed in as admin",
        "\"300.1.2.3/24\" is not ADDRESS/PREFIX",
        "address:    192.0.2.10/24",
        "dns:        192.0.2.53,192.0.2.54",
        "hostname:   gw1.example.com",
        "cannot reach the gateway",
        "Unknown command \"frobnicate\"",
        "That is not your password; nothing changed.",
        "Password changed.",
        "Nothing erased.",
        "Rebooting.",
        "Signed out.",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
    for secret in ["correct horse", "staple again"] {
        assert!(!out.contains(secret), "a password was shown:\n{out}");
    }
    let admins = std::fs::read_to_string(d.join("admins")).unwrap();
    assert!(admins.contains("admin:$argon2id$"), "{admins}");
    assert!(!admins.contains("staple"), "{admins}");
    let net = std::fs::read_to_string(d.join("network.conf")).unwrap();
    assert!(
        net.contains("mode=static\n")
            && net.contains("address=192.0.2.10/24\n")
            && net.contains("gateway=192.0.2.1\n"),
        "{net}"
    );
    assert!(
        d.join("factory-reset").exists(),
        "the mark the boot acts on"
    );

    // Later sign-ins: a wrong password fails (after a pause), the new one works, the old
    // one no longer does.
    let out = console(
        d,
        "admin\ncorrect horse battery\nadmin\nstaple again please\nnetwork dhcp\nnetwork\n",
    );
    assert!(out.contains("login: "), "{out}");
    assert!(out.contains("Sign-in failed."), "{out}");
    assert!(out.contains("Signed in as admin"), "{out}");
    assert!(out.contains("mode:       dhcp"), "{out}");
    let net = std::fs::read_to_string(d.join("network.conf")).unwrap();
    assert!(
        !net.contains("address="),
        "dhcp drops the static address: {net}"
    );
    assert!(net.contains("hostname=gw1.example.com"), "{net}");
}
