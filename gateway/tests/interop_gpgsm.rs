//! Interoperability with GnuPG's gpgsm: gpgsm verifies what smimegw signs (opaque and detached)
//! and smimegw decrypts what gpgsm encrypts.
//!
//! gpgsm 2.2 (Debian 12) knows no AuthEnvelopedData and cannot import the NSS or OpenSSL 3
//! PKCS#12 files at hand, so its decryption and signing sides are not exercised here.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{corpus, holders};
use hsm::{AesOffload, Hash};
use smimegw::smime::mime::{self, Entity};
use smimegw::smime::sign::{Format, Signer, sign_message};
use smimegw::smime::{Recipient, decrypt_cms};

const NOW: u64 = 1_780_272_000;

/// Runs gpgsm in its own home; returns stdout+stderr and whether it succeeded.
fn gpgsm(home: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("gpgsm")
        .env("GNUPGHOME", home)
        .args(["--batch", "--disable-crl-checks"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("gpgsm does not run ({e}): run tests/run, which installs it"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

struct Home(tempfile::TempDir);

impl Drop for Home {
    fn drop(&mut self) {
        // gpgsm starts an agent; stop it with the home.
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.0.path())
            .args(["--kill", "all"])
            .output();
    }
}

/// A gpgsm home that knows Alice's and Bob's certificates and trusts the test CA.
fn home(certs: &[&[u8]]) -> Home {
    let dir = tempfile::Builder::new().prefix("gpgsm").tempdir().unwrap();
    let h = dir.path();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(h, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let ca = corpus("thunderbird-smime/smime/TestCA.pem");
    assert!(gpgsm(h, &["--import", ca.to_str().unwrap()]).0);
    for (i, c) in certs.iter().enumerate() {
        let p = h.join(format!("cert{i}.der"));
        std::fs::write(&p, c).unwrap();
        assert!(gpgsm(h, &["--import", p.to_str().unwrap()]).0);
    }
    let (_, listing) = gpgsm(h, &["--with-colons", "--list-keys", "NSS Test CA"]);
    let fpr = listing
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .unwrap()
        .to_string();
    std::fs::write(h.join("trustlist.txt"), format!("{fpr} S relax\n")).unwrap();
    Home(dir)
}

const MESSAGE: &[u8] =
    b"From: Alice@example.com\r\nTo: Bob@example.com\r\nSubject: gpgsm interop\r\n\r\nHello, gpgsm.\r\n";

#[test]
fn gpgsm_verifies_what_we_sign() {
    let (alice, alice_cert) = holders(
        &corpus("thunderbird-smime/smime/Alice.p12"),
        "nss",
        "alice-gpgsm",
    );
    let home = home(&[&alice_cert]);
    let h = home.0.path();
    for holder in &alice {
        for hash in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            let signer = Signer {
                cert: &alice_cert,
                chain: &[],
                token: holder.token.as_ref(),
                key: holder.key.clone(),
                hash,
                pss: false,
            };
            let what = format!("{} {hash:?}", holder.name);
            let opaque = sign_message(MESSAGE, &signer, Format::Opaque, NOW).unwrap();
            let der = Entity::parse(&opaque)
                .unwrap()
                .decoded_body()
                .unwrap()
                .into_owned();
            std::fs::write(h.join("opaque.der"), der).unwrap();
            let (ok, text) = gpgsm(h, &["--verify", h.join("opaque.der").to_str().unwrap()]);
            assert!(
                ok && text.contains("Good signature"),
                "{what} opaque: {text}"
            );

            let detached = sign_message(MESSAGE, &signer, Format::Detached, NOW).unwrap();
            let e = Entity::parse(&detached).unwrap();
            let ct = e.content_type().unwrap();
            let parts = mime::multipart_parts(e.body, ct.param("boundary").unwrap()).unwrap();
            std::fs::write(h.join("content"), parts[0]).unwrap();
            let sig = Entity::parse(parts[1])
                .unwrap()
                .decoded_body()
                .unwrap()
                .into_owned();
            std::fs::write(h.join("sig.der"), sig).unwrap();
            let (ok, text) = gpgsm(
                h,
                &[
                    "--verify",
                    h.join("sig.der").to_str().unwrap(),
                    h.join("content").to_str().unwrap(),
                ],
            );
            assert!(
                ok && text.contains("Good signature"),
                "{what} detached: {text}"
            );
            // A changed byte of the content: gpgsm refuses it, as we would.
            let mut changed = parts[0].to_vec();
            let last = changed.len() - 3;
            changed[last] ^= 1;
            std::fs::write(h.join("content"), changed).unwrap();
            let (ok, text) = gpgsm(
                h,
                &[
                    "--verify",
                    h.join("sig.der").to_str().unwrap(),
                    h.join("content").to_str().unwrap(),
                ],
            );
            assert!(
                !ok && text.contains("message digest attribute does not match"),
                "{what} changed: {text}"
            );
        }
    }
}

#[test]
fn we_decrypt_what_gpgsm_encrypts() {
    let (bob, bob_cert) = holders(
        &corpus("thunderbird-smime/smime/Bob.p12"),
        "nss",
        "bob-gpgsm",
    );
    let home = home(&[&bob_cert]);
    let h = home.0.path();
    let plain = b"Content-Type: text/plain\r\n\r\nencrypted by gpgsm\r\n";
    std::fs::write(h.join("plain"), plain).unwrap();
    let (ok, text) = gpgsm(
        h,
        &[
            "--encrypt",
            "-r",
            "Bob@example.com",
            "--output",
            h.join("enc.der").to_str().unwrap(),
            h.join("plain").to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    let der = std::fs::read(h.join("enc.der")).unwrap();
    for holder in &bob {
        for offload in [AesOffload::Host, AesOffload::Token] {
            let me = Recipient {
                cert: &bob_cert,
                token: holder.token.as_ref(),
                key: holder.key.clone(),
                offload,
            };
            let got = decrypt_cms(&der, &me).unwrap_or_else(|e| panic!("{}: {e}", holder.name));
            assert_eq!(got.content, plain, "{}", holder.name);
        }
    }
}
