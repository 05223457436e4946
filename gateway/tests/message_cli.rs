//! `smimegw message` as an administrator runs it: exit codes, output, keys from PEM files and
//! from SoftHSM2 by PKCS#11 URI.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{HSM_LABEL, HSM_PIN, SOFTHSM_MODULE, corpus, openssl, p12_to_pem, softhsm_conf};

fn smimegw(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smimegw"));
    cmd.args(args)
        .env("SOFTHSM2_CONF", softhsm_conf())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(data) = stdin {
            // The command may exit before reading its input (a usage error, a missing key).
            match input.write_all(data) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.unwrap(),
            }
        }
    }
    child.wait_with_output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Bob's key and certificate as PEM files, from his PKCS#12.
fn bob_pem(dir: &Path) -> (String, String) {
    p12_to_pem(
        &corpus("thunderbird-smime/smime/Bob.p12"),
        "nss",
        dir,
        "bob",
    );
    (
        dir.join("bob.key").to_str().unwrap().to_string(),
        dir.join("bob.crt").to_str().unwrap().to_string(),
    )
}

#[test]
fn decrypt_with_a_pem_key_and_with_softhsm_by_uri() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, cert) = bob_pem(d);
    let msg = corpus("thunderbird-smime/smime/alice.env.eml");
    let msg = msg.to_str().unwrap();

    let o = smimegw(
        &[
            "message", "decrypt", "--cert", &cert, "--key", &key, "--in", msg,
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("This is a test message from Alice to Bob.")
    );

    // Through stdin, to a file.
    let out = d.join("plain.eml");
    let o = smimegw(
        &[
            "message",
            "decrypt",
            "--cert",
            &cert,
            "--key",
            &key,
            "--out",
            out.to_str().unwrap(),
        ],
        Some(&std::fs::read(msg).unwrap()),
    );
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty());
    let written = std::fs::read(&out).unwrap();

    // Bob's key in SoftHSM2, imported with `smimegw token`, used by URI.
    let token_uri =
        format!("pkcs11:token={HSM_LABEL}?module-path={SOFTHSM_MODULE}&pin-value={HSM_PIN}");
    let p12 = corpus("thunderbird-smime/smime/Bob.p12");
    std::fs::write(d.join("pw"), "nss\n").unwrap();
    let label = format!("bob-cli-{}", std::process::id());
    let o = smimegw(
        &[
            "token",
            "--token-uri",
            &token_uri,
            "import-p12",
            p12.to_str().unwrap(),
            "--label",
            &label,
            "--password-file",
            d.join("pw").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let key_uri = format!(
        "pkcs11:token={HSM_LABEL};object={label};type=private?module-path={SOFTHSM_MODULE}&pin-value={HSM_PIN}"
    );
    for offload in ["host", "token"] {
        let o = smimegw(
            &[
                "message",
                "decrypt",
                "--cert",
                &cert,
                "--key",
                &key_uri,
                "--offload",
                offload,
                "--in",
                msg,
            ],
            None,
        );
        assert_eq!(
            code(&o),
            0,
            "{offload}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(o.stdout, written, "{offload}");
        assert!(!String::from_utf8_lossy(&o.stderr).contains(HSM_PIN));
    }
}

#[test]
fn decrypt_exit_codes_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, cert) = bob_pem(d);
    let run = |input: &[u8], cert: &str| {
        smimegw(
            &["message", "decrypt", "--cert", cert, "--key", &key],
            Some(input),
        )
    };

    // Not for us: Alice's certificate with Bob's message.
    let alice = d.join("alice.crt");
    let p12 = corpus("thunderbird-smime/smime/Alice.p12");
    openssl(
        &[
            "pkcs12",
            "-in",
            p12.to_str().unwrap(),
            "-passin",
            "pass:nss",
            "-clcerts",
            "-nokeys",
            "-out",
            "alice.crt",
        ],
        d,
    );
    let env = std::fs::read(corpus("thunderbird-smime/smime/alice.env.eml")).unwrap();
    let o = run(&env, alice.to_str().unwrap());
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not among the message's recipients"));
    assert!(o.stdout.is_empty());

    // Malformed: not S/MIME, broken base64, truncated CMS.
    let o = run(b"Subject: hi\r\n\r\nplain text\r\n", &cert);
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not S/MIME encrypted"));
    let header = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n";
    let o = run(&[&header[..], b"MIAGCSqG*SIb3\r\n"].concat(), &cert);
    assert_eq!(code(&o), 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("base64"));
    // Truncated CMS inside well-formed base64.
    let entity = smimegw::smime::mime::Entity::parse(&env).unwrap();
    let der = entity.decoded_body().unwrap();
    let half = smimegw::smime::mime::base64_encode(&der[..der.len() / 2]);
    let whole = [&header[..], &half].concat();
    let o = run(&whole, &cert);
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("malformed"));

    // A missing key file is a plain failure with the path named.
    let o = smimegw(
        &[
            "message",
            "decrypt",
            "--cert",
            &cert,
            "--key",
            "/nonexistent/k.pem",
        ],
        Some(&env),
    );
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/k.pem"));
    // Usage errors exit 2.
    let o = smimegw(&["message", "decrypt", "--key", &key], Some(&env));
    assert_eq!(code(&o), 2);
}

#[test]
fn verify_exit_codes_json_and_the_signed_entity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = corpus("thunderbird-smime/smime/TestCA.pem");
    let ca = ca.to_str().unwrap();
    let file = |name: &str| corpus(&format!("thunderbird-smime/smime/{name}"));
    let run = |msg: &str, extra: &[&str]| {
        let mut args = vec!["message", "verify", "--trust", ca];
        args.extend_from_slice(extra);
        smimegw(&args, Some(&std::fs::read(file(msg)).unwrap()))
    };

    // Detached and opaque, SHA-1 to SHA-512: valid and trusted at the pinned time.
    for msg in [
        "alice.dsig.SHA256.multipart.eml",
        "alice.dsig.SHA512.multipart.eml",
        "alice.sig.SHA1.opaque.eml",
        "alice.sig.SHA384.opaque.eml",
    ] {
        let o = run(msg, &["--at", "2026-06-01T00:00:00Z"]);
        assert_eq!(code(&o), 0, "{msg}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("verified: Alice@example.com"));
    }

    // JSON and --out: the entity exactly as signed.
    let out = d.join("signed.eml");
    let o = run(
        "alice.dsig.SHA256.multipart.eml",
        &[
            "--at",
            "2026-06-01",
            "--json",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&o), 0);
    let json = String::from_utf8(o.stdout).unwrap();
    for part in [
        "\"valid\":true",
        "\"trusted\":true",
        "\"detached\":true",
        "\"email\":\"Alice@example.com\"",
        "\"serial\":\"1e\"",
        "\"digest\":\"sha256\"",
        "\"signing_time\":\"2026-",
    ] {
        assert!(json.contains(part), "{part} in {json}");
    }
    let entity = std::fs::read(&out).unwrap();
    let original = std::fs::read(file("alice.dsig.SHA256.multipart.eml")).unwrap();
    assert!(
        original
            .windows(entity.len())
            .any(|w| w == entity.as_slice())
    );
    assert!(entity.starts_with(b"Content-Type: text/plain"));

    // Exit 1 with the reason: changed content, expired, another CA.
    let o = run(
        "alice.dsig.SHA256.multipart.bad.eml",
        &["--at", "2026-06-01"],
    );
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("changed after signing"));
    let o = run("alice.dsig.SHA256.multipart.eml", &["--at", "2033-01-01"]);
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("expired"));
    let o = run(
        "alice.dsig.SHA256.multipart.bad.eml",
        &["--at", "2026-06-01", "--json"],
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"valid\":false"));

    // Exit 2: not signed, a bad time, a missing --trust.
    let o = run("alice.env.eml", &["--at", "2026-06-01"]);
    assert_eq!(code(&o), 2, "{}", String::from_utf8_lossy(&o.stderr));
    let o = run("alice.dsig.SHA256.multipart.eml", &["--at", "yesterday"]);
    assert_eq!(code(&o), 2);
    let o = smimegw(&["message", "verify"], Some(b""));
    assert_eq!(code(&o), 2);
}

#[test]
fn sign_with_a_pem_key_and_with_softhsm_then_openssl_and_verify_agree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p12 = corpus("thunderbird-smime/smime/Alice.p12");
    let p12s = p12.to_str().unwrap();
    p12_to_pem(&p12, "nss", d, "alice");
    let ca = corpus("thunderbird-smime/smime/TestCA.pem");
    let ca = ca.to_str().unwrap();
    let key = d.join("alice.key");
    let cert = d.join("alice.crt");
    let msg = b"From: Alice@example.com\r\nTo: bob@example.com\r\nSubject: signed by the CLI\r\n\r\nhello\r\n";

    std::fs::write(d.join("pw"), "nss\n").unwrap();
    let label = format!("alice-cli-{}", std::process::id());
    let token_uri =
        format!("pkcs11:token={HSM_LABEL}?module-path={SOFTHSM_MODULE}&pin-value={HSM_PIN}");
    let o = smimegw(
        &[
            "token",
            "--token-uri",
            &token_uri,
            "import-p12",
            p12s,
            "--label",
            &label,
            "--password-file",
            d.join("pw").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
    let key_uri = format!(
        "pkcs11:token={HSM_LABEL};object={label};type=private?module-path={SOFTHSM_MODULE}&pin-value={HSM_PIN}"
    );

    for key in [key.to_str().unwrap(), key_uri.as_str()] {
        for extra in [
            &[][..],
            &["--opaque", "--digest", "sha512"][..],
            &["--pss"][..],
        ] {
            let mut args = vec![
                "message",
                "sign",
                "--signer",
                cert.to_str().unwrap(),
                "--key",
                key,
            ];
            args.extend_from_slice(extra);
            let o = smimegw(&args, Some(msg));
            assert_eq!(
                code(&o),
                0,
                "{extra:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::fs::write(d.join("signed.eml"), &o.stdout).unwrap();
            let v = openssl(
                &[
                    "cms",
                    "-verify",
                    "-in",
                    "signed.eml",
                    "-CAfile",
                    ca,
                    "-out",
                    "c.eml",
                ],
                d,
            );
            assert!(String::from_utf8_lossy(&v.stderr).contains("Verification successful"));
            let o = smimegw(
                &[
                    "message",
                    "verify",
                    "--trust",
                    ca,
                    "--in",
                    d.join("signed.eml").to_str().unwrap(),
                ],
                None,
            );
            assert_eq!(
                code(&o),
                0,
                "{extra:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    // A key that is not the certificate's: exit 1, said plainly.
    let (bob_key, _) = bob_pem(d);
    let o = smimegw(
        &[
            "message",
            "sign",
            "--signer",
            cert.to_str().unwrap(),
            "--key",
            &bob_key,
        ],
        Some(msg),
    );
    assert_eq!(code(&o), 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not belong"));
}

#[test]
fn encrypt_then_decrypt_through_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, cert) = bob_pem(d);
    let msg = b"From: a@example.com\r\nTo: Bob@example.com\r\nSubject: s\r\n\r\nfor Bob only\r\n";
    for extra in [
        &[][..],
        &["--cipher", "aes128-gcm", "--oaep"][..],
        &["--cipher", "aes256-gcm"][..],
    ] {
        let mut args = vec!["message", "encrypt", "--recipient", &cert];
        args.extend_from_slice(extra);
        let o = smimegw(&args, Some(msg));
        assert_eq!(
            code(&o),
            0,
            "{extra:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!String::from_utf8_lossy(&o.stdout).contains("for Bob only"));
        let o = smimegw(
            &["message", "decrypt", "--cert", &cert, "--key", &key],
            Some(&o.stdout),
        );
        assert_eq!(
            code(&o),
            0,
            "{extra:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stdout).ends_with("\r\n\r\nfor Bob only\r\n"));
    }
    let o = smimegw(
        &["message", "encrypt", "--recipient", "/nonexistent.pem"],
        Some(msg),
    );
    assert_eq!(code(&o), 1);
    let o = smimegw(
        &[
            "message",
            "encrypt",
            "--recipient",
            &cert,
            "--cipher",
            "des",
        ],
        Some(msg),
    );
    assert_eq!(code(&o), 2);
}

/// A message of several MiB (many read chunks): 8-bit text with long lines, bare LFs, and a
/// binary attachment. Signed from stdin (spooled), checked by OpenSSL; encrypted with GCM and
/// CBC, decrypted by OpenSSL and by us to the same bytes.
#[test]
fn a_big_message_streams_through_every_command_and_openssl_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (key, cert) = bob_pem(d);
    let mut msg = b"From: Bob <bob@example.com>\nTo: alice@example.com\nSubject: big\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"zz\"\n\n--zz\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n".to_vec();
    for i in 0..20_000 {
        msg.extend_from_slice(format!("Zeile {i}: Grüße, naïve café — ").as_bytes());
        if i % 7 == 0 {
            msg.extend_from_slice(&[b'x'; 1200]); // longer than SMTP allows
        }
        msg.push(b'\n');
    }
    msg.extend_from_slice(
        b"--zz\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: binary\n\n",
    );
    msg.extend((0..2_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    msg.extend_from_slice(b"\n--zz--\n");
    assert!(msg.len() > 3 << 20);
    let ca = corpus("thunderbird-smime/smime/TestCA.pem");
    let ca = ca.to_str().unwrap();

    for opaque in [false, true] {
        let signed = d.join(format!("signed-{opaque}.eml"));
        let mut args = vec!["message", "sign", "--signer", &cert, "--key", &key];
        if opaque {
            args.push("--opaque");
        }
        let o = smimegw(&args, Some(&msg));
        assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::write(&signed, &o.stdout).unwrap();
        let text = &o.stdout;
        assert!(text.iter().all(|b| *b < 0x80), "signed output is 7-bit");
        assert!(text.split(|b| *b == b'\n').all(|l| l.len() <= 1000));
        let inner = d.join(format!("inner-{opaque}.eml"));
        let v = openssl(
            &[
                "cms",
                "-verify",
                "-CAfile",
                ca,
                "-purpose",
                "any",
                "-attime",
                "1780272000",
                "-in",
                signed.to_str().unwrap(),
                "-out",
                inner.to_str().unwrap(),
            ],
            d,
        );
        assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
        let ours = d.join(format!("ours-{opaque}.eml"));
        let o = smimegw(
            &[
                "message",
                "verify",
                "--trust",
                ca,
                "--at",
                "2026-06-01",
                "--in",
                signed.to_str().unwrap(),
                "--out",
                ours.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
        let ours = std::fs::read(&ours).unwrap();
        // OpenSSL gives the entity with text-mode line endings; the bytes we give are the
        // signed ones, which hold the attachment whole.
        assert!(ours.len() > 3 << 20);
        assert_eq!(ours.len(), std::fs::read(&inner).unwrap().len());
    }

    for cipher in ["aes256-gcm", "aes128-cbc"] {
        let enc = d.join(format!("enc-{cipher}.eml"));
        let o = smimegw(
            &[
                "message",
                "encrypt",
                "--recipient",
                &cert,
                "--cipher",
                cipher,
                "--out",
                enc.to_str().unwrap(),
            ],
            Some(&msg),
        );
        assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
        let theirs = d.join(format!("theirs-{cipher}.eml"));
        let x = openssl(
            &[
                "cms",
                "-decrypt",
                "-recip",
                &cert,
                "-inkey",
                &key,
                "-binary",
                "-in",
                enc.to_str().unwrap(),
                "-out",
                theirs.to_str().unwrap(),
            ],
            d,
        );
        assert!(x.status.success(), "{}", String::from_utf8_lossy(&x.stderr));
        let o = smimegw(
            &[
                "message",
                "decrypt",
                "--cert",
                &cert,
                "--key",
                &key,
                "--in",
                enc.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(code(&o), 0, "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.stdout, std::fs::read(&theirs).unwrap(), "{cipher}");
        // The encrypted entity is the message's Content-* fields and body in canonical form.
        let body_start = msg.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
        let entity = [
            &b"Content-Type: multipart/mixed; boundary=\"zz\"\n\n"[..],
            &msg[body_start..],
        ]
        .concat();
        assert_eq!(
            o.stdout,
            smimegw::smime::mime::canonical_crlf(&entity).as_ref()
        );
    }
}
