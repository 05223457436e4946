//! `smimegw console` driven through a pipe, as the serial line would drive it (no gateway
//! running): the first sign-in, a policy applied for the gateway's next start, network
//! settings and their checks, a password change, the factory-reset confirmation, and
//! sign-in failures. Then through a pseudo-terminal (util-linux `script`) with a gateway
//! behind it: passwords not echoed, certificates, trust anchors imported from a file and a
//! FirstClass folder (and used at once: a signature through an imported intermediate
//! passes, mail to an imported correspondent is encrypted), bad imports refused, the queue,
//! the audit log; line editing (Tab completion, history, Ctrl-C) and the policy staged from
//! a file and applied to the running gateway. The appliance test drives it over QEMU's
//! serial port.

#![allow(clippy::unwrap_used)]

mod common;
mod harness;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::openssl;
use harness::{Gateway, console, header_value};

#[test]
fn console_first_sign_in_settings_password_and_reset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), "[policy]\nsign = \"never\"\n").unwrap();
    let out = console(
        d,
        &format!(
            "too short\n\
         correct horse battery\ncorrect horse battery\n\
         policy stage {}\npolicy apply\nyes\npolicy\n\
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
            d.join("p.toml").display()
        ),
    );
    for want in [
        "No administrator exists yet",
        "Too short",
        "Signed in as admin",
        // No gateway running: the policy is applied in the store, for its next start.
        "Applied. The gateway is not running: it uses the new policy when it starts.",
        "In force (from the console):\n[policy]\nsign = \"never\"\nNothing staged.",
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

/// The console on a pseudo-terminal: `script` gives it one, we type into `script`'s stdin
/// and read what the terminal shows (our typing echoed, except where echo is off).
struct Pty {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: Arc<Mutex<Vec<u8>>>,
    seen: usize,
}

impl Pty {
    fn start(dir: &Path) -> Pty {
        let cmd = format!(
            "{} console --config smimegw.toml --data data --network network.conf \
             --reboot-command true",
            env!("CARGO_BIN_EXE_smimegw")
        );
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script runs (util-linux)");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            stdin,
            out,
            seen: 0,
        }
    }

    fn all(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).replace('\r', "")
    }

    /// Waits for `needle` after what was seen; returns the text up to and including it.
    fn expect(&mut self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let all = self.all();
            if let Some(i) = all[self.seen.min(all.len())..].find(needle) {
                let end = self.seen + i + needle.len();
                let got = all[self.seen..end].to_string();
                self.seen = end;
                return got;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no {needle:?} on the terminal:\n{}",
                &all[self.seen.min(all.len())..]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn line(&mut self, text: &str) {
        self.keys(&format!("{text}\n"));
    }

    /// Types keys as they are (Tab, Ctrl-C, escape sequences).
    fn keys(&mut self, keys: &str) {
        self.stdin.write_all(keys.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }

    /// Types a command at the prompt; its output up to the next prompt.
    fn command(&mut self, text: &str) -> String {
        self.line(text);
        self.expect("smimegw> ")
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A root CA, an intermediate under it, and Carol's and Erin's certificates under it,
/// made by OpenSSL in `dir`.
fn pki(dir: &Path) {
    std::fs::write(
        dir.join("ca.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    for who in ["carol", "erin"] {
        std::fs::write(
            dir.join(format!("{who}.ext")),
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
                 extendedKeyUsage=emailProtection\nsubjectAltName=email:{who}@example.net\n"
            ),
        )
        .unwrap();
    }
    let key_and_csr = |name: &str, subj: &str| {
        openssl(
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                subj,
            ],
            dir,
        );
    };
    let sign = |name: &str, ca: &str, ext: &str| {
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "365",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                ext,
            ],
            dir,
        );
    };
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "root.key",
            "-out",
            "root.pem",
            "-days",
            "3650",
            "-subj",
            "/CN=Test Root CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        dir,
    );
    key_and_csr("int", "/CN=Test Intermediate CA");
    sign("int", "root", "ca.ext");
    key_and_csr("carol", "/CN=Carol");
    sign("carol", "int", "carol.ext");
    key_and_csr("erin", "/CN=Erin");
    sign("erin", "int", "erin.ext");
}

#[test]
fn console_on_a_terminal_imports_trust_and_shows_certificates_and_queue() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    pki(&d);
    // A FirstClass-style folder: CA certificates as ca.NAME, a correspondent by address.
    let folder = d.join("SSL Certificates");
    // (The console runs in the gateway's directory, where this folder is.)
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(d.join("int.pem"), folder.join("ca.testintermediate")).unwrap();
    std::fs::copy(d.join("carol.pem"), folder.join("carol@example.net")).unwrap();
    std::fs::copy(d.join("erin.pem"), folder.join("Erin@Example.net")).unwrap();
    std::fs::write(folder.join("readme.txt"), "not a certificate").unwrap();
    std::fs::copy(
        d.join("root.pem"),
        folder.join(format!("ca.{}", "x".repeat(70))),
    )
    .unwrap();
    std::fs::write(d.join("notes.txt"), "hello").unwrap();
    std::fs::write(d.join("huge.pem"), vec![b'A'; 2 << 20]).unwrap();

    let gw = Gateway::start_in(dir, "", "");
    gw.mail(
        "alice@example.com",
        "dave@example.net",
        "a certificate for alice",
    );
    gw.maildir("outbox", 1);

    let mut t = Pty::start(gw.dir.path());
    t.expect("New password:");
    t.line("correct horse battery");
    t.expect("Again:");
    t.line("correct horse battery");
    t.expect("Signed in as admin");
    t.expect("smimegw> ");

    let token = t.command("token");
    assert!(token.contains("mechanisms:"), "{token}");
    assert!(token.contains("yes"), "{token}");
    for line in token.lines() {
        assert!(
            line.chars().count() <= 80,
            "wider than 80 columns: {line:?}"
        );
    }
    let certs = t.command("certificates");
    assert!(certs.contains("alice@example.com"), "{certs}");
    assert!(
        certs.contains("1 address(es) with a signing key"),
        "{certs}"
    );

    // Bad imports are refused with the reason, and change nothing.
    for (cmd, want) in [
        (
            "trust import carol.pem",
            "is not a CA certificate (an end-entity certificate for carol@example.net)",
        ),
        ("trust import carol.key", "holds a private key"),
        ("trust import notes.txt", "without a PEM certificate"),
        ("trust import huge.pem", "too large"),
        ("trust import missing.pem", "cannot read missing.pem"),
    ] {
        let out = t.command(cmd);
        assert!(out.contains(want), "{cmd}: {out}");
    }
    let trust = t.command("trust");
    assert!(trust.contains("0 trusted CA certificate(s)"), "{trust}");

    // Carol signs to Alice through the intermediate (not in her message): not yet trusted.
    let signed = carol_signs(&d);
    let deliver = |text: &str| {
        std::fs::write(d.join("carol.eml"), text).unwrap();
        gw.send_file(
            "carol@example.net",
            "alice@example.com",
            &d.join("carol.eml"),
        );
    };
    deliver(&signed);
    let got = gw.maildir("inbox", 1);
    assert!(
        header_value(&got[0].1, "X-SMIME-Status")
            .unwrap()
            .starts_with("neutral"),
        "{}",
        got[0].1
    );

    // The root from a file, the rest from the folder.
    let out = t.command("trust import root.pem");
    assert!(out.contains("added trusted (root): Test Root CA"), "{out}");
    let out = t.command("trust import root.pem");
    assert!(out.contains("already held: Test Root CA"), "{out}");
    let out = t.command("trust import SSL Certificates");
    for want in [
        "added trusted (intermediate): Test Intermediate CA",
        // Carol's certificate came with her signed mail already, as a candidate (her
        // signer was not trusted then): imported, it is vouched for.
        "added correspondent: carol@example.net",
        "added correspondent: erin@example.net",
        "skipped readme.txt: neither an email address nor ca.NAME",
        "skipped ca.xxxx",
        "under 64 characters",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let trust = t.command("trust");
    assert!(trust.contains("2 trusted CA certificate(s)"), "{trust}");
    assert!(trust.contains("Test Intermediate CA"), "{trust}");
    for line in trust.lines() {
        assert!(
            line.chars().count() <= 80,
            "wider than 80 columns: {line:?}"
        );
    }
    let out = t.command("correspondents");
    assert!(
        out.contains("carol@example.net")
            && out.contains("erin@example.net")
            && out.contains("2 certificate(s)"),
        "{out}"
    );

    // At once: Carol's next signature passes, Alice's mail to Carol is encrypted to her.
    deliver(&carol_signs(&d));
    let got = gw.maildir("inbox", 2);
    let status: Vec<&str> = got
        .iter()
        .filter_map(|(_, t)| header_value(t, "X-SMIME-Status"))
        .collect();
    assert!(
        status.contains(&"pass; signed by carol@example.net"),
        "{status:?}"
    );
    gw.mail("alice@example.com", "carol@example.net", "for carol only");
    let out = gw.maildir("outbox", 2);
    let (path, text) = out
        .iter()
        .find(|(_, t)| t.contains("carol@example.net"))
        .unwrap();
    assert!(
        text.contains("enveloped-data") && !text.contains("for carol only"),
        "{text}"
    );
    openssl(
        &[
            "cms",
            "-decrypt",
            "-in",
            path.to_str().unwrap(),
            "-recip",
            "carol.pem",
            "-inkey",
            "carol.key",
            "-out",
            "carol-dec.eml",
        ],
        &d,
    );
    assert!(
        std::fs::read_to_string(d.join("carol-dec.eml"))
            .unwrap()
            .contains("for carol only")
    );

    // Removing asks for the password; the queue and the audit log.
    let fp = {
        let line = trust.lines().find(|l| l.contains("Test Root CA")).unwrap();
        line.split_whitespace().last().unwrap().to_string()
    };
    t.line(&format!("trust remove {fp}"));
    t.expect("Your password:");
    t.line("not my password");
    t.expect("That is not your password; nothing removed.");
    t.line(&format!("trust remove {fp}"));
    t.expect("Your password:");
    t.line("correct horse battery");
    let out = t.expect("smimegw> ");
    assert!(out.contains("removed anchor: Test Root CA"), "{out}");
    let queue = t.command("queue");
    assert!(queue.contains("0 message(s) queued"), "{queue}");
    let audit = t.command("audit");
    for want in [
        "admin (serial console): trust import\n    root.pem: anchor Test Root CA (",
        "admin (serial console): folder import\n    SSL Certificates: external Erin (",
        "intermediate Test",
        "admin (serial console): trust remove\n    anchor Test Root CA",
        "admin (serial console): administrator password set",
        "admin (serial console): wrong password confirming a change",
    ] {
        assert!(audit.contains(want), "{want}: {audit}");
    }
    for line in audit.lines() {
        assert!(
            line.chars().count() <= 80,
            "wider than 80 columns: {line:?}"
        );
    }
    policy_and_completion(&gw, &mut t);
    ca_and_crls(&gw, &mut t);

    t.line("logout");
    t.expect("Signed out.");
    let all = t.all();
    for secret in ["correct horse", "not my password"] {
        assert!(
            !all.contains(secret),
            "a password was echoed on the terminal:\n{all}"
        );
    }
}

/// The built-in CA shown, exported, issuing and renewing; a CRL from the (still trusted)
/// intermediate imported, listed and removed; a file that is no CRL refused.
fn ca_and_crls(gw: &Gateway, t: &mut Pty) {
    let d = gw.dir.path();
    let out = t.command("ca");
    assert!(out.contains("-----BEGIN CERTIFICATE-----"), "{out}");
    assert!(out.contains("subject:"), "{out}");
    let out = t.command("ca export exported-ca.pem");
    assert!(
        out.contains("The CA certificate is in exported-ca.pem"),
        "{out}"
    );
    let exported = std::fs::read_to_string(d.join("exported-ca.pem")).unwrap();
    let held = std::fs::read_to_string(d.join("data/ca.pem")).unwrap();
    assert_eq!(exported.trim(), held.trim());
    let out = t.command("ca issue frank@example.com");
    assert!(
        out.contains("issued frank@example.com: valid until"),
        "{out}"
    );
    let out = t.command("ca issue frank@example.com");
    assert!(out.contains("renew it instead"), "{out}");
    let out = t.command("ca issue frank@elsewhere.org");
    assert!(out.contains("not in an internal domain"), "{out}");
    std::thread::sleep(Duration::from_millis(1100));
    let out = t.command("ca renew frank@example.com");
    assert!(out.contains("renewed frank@example.com"), "{out}");

    // The intermediate revokes Erin and publishes a CRL.
    std::fs::write(
        d.join("int.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = int-index.txt\ncrlnumber = int-crlnumber\n\
         default_md = sha256\ndefault_crl_days = 7\n",
    )
    .unwrap();
    std::fs::write(d.join("int-index.txt"), "").unwrap();
    std::fs::write(d.join("int-crlnumber"), "01\n").unwrap();
    let ca = [
        "-config", "int.cnf", "-cert", "int.pem", "-keyfile", "int.key",
    ];
    openssl(&[&["ca"][..], &ca, &["-revoke", "erin.pem"]].concat(), d);
    openssl(
        &[&["ca"][..], &ca, &["-gencrl", "-out", "int.crl"]].concat(),
        d,
    );
    let out = t.command("crls import notes.txt");
    assert!(out.contains("not a CRL"), "{out}");
    let out = t.command("crls import int.crl");
    assert!(
        out.contains("added the CRL of CN=Test Intermediate CA: 1 revoked, next update"),
        "{out}"
    );
    let out = t.command("crls");
    assert!(out.contains("CN=Test Intermediate CA"), "{out}");
    assert!(out.contains("1 revoked"), "{out}");
    let fp = out
        .split(|c: char| c == ',' || c.is_whitespace())
        .find_map(|p| {
            let p = p.trim();
            (p.len() == 16 && p.bytes().all(|b| b.is_ascii_hexdigit())).then(|| p.to_string())
        })
        .unwrap_or_else(|| panic!("no fingerprint in {out}"));
    t.line(&format!("crls remove {fp}"));
    t.expect("Your password:");
    t.line("correct horse battery");
    let out = t.expect("smimegw> ");
    assert!(
        out.contains("removed the CRL of CN=Test Intermediate CA"),
        "{out}"
    );
    let out = t.command("crls");
    assert!(out.contains("No CRL held."), "{out}");
    let audit = t.command("audit 12");
    for want in [
        "certificate issued",
        "certificate renewed",
        "CRL added",
        "CRL removed",
    ] {
        assert!(audit.contains(want), "{want}: {audit}");
    }
}

/// On the terminal: Tab completes commands and file names (and lists on a second Tab),
/// Ctrl-C drops a line, Up recalls one; a policy staged from a file (an invalid one
/// refused with its reason), applied after a yes, and used by the running gateway at once.
fn policy_and_completion(gw: &Gateway, t: &mut Pty) {
    let dir = gw.dir.path();
    let policy =
        "[policy]\n[policy.domain.\"example.com\"]\nsign = \"never\"\nencrypt = \"never\"\n";
    std::fs::write(dir.join("valid-policy.toml"), policy).unwrap();
    std::fs::write(
        dir.join("invalid-policy.toml"),
        "[policy]\nsign = \"sometimes\"\n",
    )
    .unwrap();

    t.keys("sta\t\n");
    let out = t.expect("smimegw> ");
    assert!(
        out.contains("status \n") && out.contains("version:"),
        "{out}"
    );
    // Several: the common part, then the list on a second Tab, the line drawn again.
    t.keys("policy st\t\td\n");
    let out = t.expect("Nothing staged.");
    assert!(
        out.contains("policy stage\nstage   staged\nsmimegw> policy staged\n"),
        "{out}"
    );
    t.expect("smimegw> ");
    t.keys("reboot\x03");
    t.expect("reboot^C\n");
    let out = t.expect("smimegw> ");
    assert!(!out.contains("Rebooting"), "{out}");

    let out = t.command("policy");
    assert!(
        out.contains(
            "In force (from the configuration file):\n  (no [policy] tables: the defaults)"
        ) && out.contains("Nothing staged."),
        "{out}"
    );
    t.keys("policy stage val\t\n");
    let out = t.expect("smimegw> ");
    assert!(
        out.contains("policy stage valid-policy.toml \n")
            && out.contains("Checked and staged (4 line(s))"),
        "{out}"
    );
    // Refused with the core's reason; the staged one stays.
    let out = t.command("policy stage invalid-policy.toml");
    assert!(
        out.contains("error: policy:") && out.contains("`sometimes`"),
        "{out}"
    );
    let out = t.command("policy staged");
    assert!(
        out.contains(&format!("Staged, not yet in force:\n{policy}")),
        "{out}"
    );
    t.line("policy apply");
    t.expect("Type yes:");
    t.line("no");
    t.expect("Not applied.");
    t.expect("smimegw> ");
    t.line("policy apply");
    t.expect("Type yes:");
    t.line("yes");
    let out = t.expect("smimegw> ");
    assert!(
        out.contains("Applied: the gateway uses the new policy from the next message on."),
        "{out}"
    );
    // Up recalls the line before.
    t.line("policy");
    t.expect("smimegw> ");
    t.keys("\x1b[A\n");
    let out = t.expect("smimegw> ");
    assert!(
        out.contains(&format!(
            "policy\nIn force (from the console):\n{policy}Nothing staged."
        )),
        "{out}"
    );
    // The running gateway took it: Alice's mail goes out unsigned now.
    gw.mail(
        "alice@example.com",
        "dave@example.net",
        "after the console's policy",
    );
    let sent = gw.maildir("outbox", 3);
    let (_, text) = sent
        .iter()
        .find(|(_, t)| t.contains("after the console's policy"))
        .unwrap();
    assert!(!text.contains("multipart/signed"), "{text}");
    let audit = t.command("audit 3");
    assert!(
        audit.contains("admin (serial console): policy staged\n    4 line(s)")
            && audit.contains("admin (serial console): policy applied\n    4 line(s)"),
        "{audit}"
    );
}

/// Carol's signed message to Alice (OpenSSL; only her own certificate in it).
fn carol_signs(d: &Path) -> String {
    std::fs::write(
        d.join("carol.txt"),
        "Content-Type: text/plain\r\n\r\nfrom carol\r\n",
    )
    .unwrap();
    let out = openssl(
        &[
            "cms",
            "-sign",
            "-in",
            "carol.txt",
            "-signer",
            "carol.pem",
            "-inkey",
            "carol.key",
            "-from",
            "carol@example.net",
            "-to",
            "alice@example.com",
            "-subject",
            "hi",
        ],
        d,
    );
    String::from_utf8(out.stdout).unwrap()
}
