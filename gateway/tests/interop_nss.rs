//! Interoperability with NSS, Thunderbird's crypto library, through its `cmsutil`: NSS decrypts
//! and verifies what smimegw makes, and smimegw decrypts and verifies what NSS makes.
//!
//! NSS as shipped in Debian 12 does not know AuthEnvelopedData (AES-GCM) or RSA-OAEP key
//! transport in CMS; those are checked against OpenSSL only.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{corpus, holders};
use hsm::{AesOffload, Hash};
use smimegw::smime::encrypt::{Cipher, encrypt_message};
use smimegw::smime::mime::{self, Entity};
use smimegw::smime::sign::{Format, Signer, sign_message};
use smimegw::smime::{Recipient, decrypt_cms, verify_cms};

const NOW: u64 = 1_780_272_000;

fn tool(name: &str, args: &[&str], dir: &Path) -> std::process::Output {
    let out = Command::new(name)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("{name} does not run ({e}): run tests/run, which installs libnss3-tools")
        });
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An NSS database with Alice's and Bob's keys and the test CA trusted for email.
fn nss_db(dir: &Path) -> String {
    let db = format!("sql:{}", dir.join("nssdb").display());
    std::fs::create_dir_all(dir.join("nssdb")).unwrap();
    tool("certutil", &["-N", "--empty-password", "-d", &db], dir);
    for p12 in ["Alice.p12", "Bob.p12"] {
        let p = corpus(&format!("thunderbird-smime/smime/{p12}"));
        tool(
            "pk12util",
            &["-i", p.to_str().unwrap(), "-W", "nss", "-d", &db],
            dir,
        );
    }
    tool(
        "certutil",
        &["-M", "-n", "TestCA", "-t", "C,C,C", "-d", &db],
        dir,
    );
    db
}

/// The CMS inside one of our application/pkcs7-mime messages.
fn cms_of(message: &[u8]) -> Vec<u8> {
    Entity::parse(message)
        .unwrap()
        .decoded_body()
        .unwrap()
        .into_owned()
}

const MESSAGE: &[u8] =
    b"From: Alice@example.com\r\nTo: Bob@example.com\r\nSubject: NSS interop\r\n\r\nHello, NSS.\r\n";
const INNER: &[u8] = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nHello, NSS.\r\n";

#[test]
fn nss_decrypts_and_verifies_what_we_make() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = nss_db(d);
    let (alice, alice_cert) = holders(
        &corpus("thunderbird-smime/smime/Alice.p12"),
        "nss",
        "alice-nss",
    );
    let bob_cert = holders(&corpus("thunderbird-smime/smime/Bob.p12"), "nss", "bob-nss").1;

    for cipher in [Cipher::Aes128Cbc, Cipher::Aes256Cbc] {
        let enc = encrypt_message(MESSAGE, std::slice::from_ref(&bob_cert), cipher, false).unwrap();
        std::fs::write(d.join("env.der"), cms_of(&enc)).unwrap();
        let out = tool("cmsutil", &["-D", "-i", "env.der", "-d", &db], d);
        assert_eq!(out.stdout, INNER, "{cipher:?}");
    }

    for h in &alice {
        for (hash, pss) in [
            (Hash::Sha256, false),
            (Hash::Sha384, false),
            (Hash::Sha512, true),
        ] {
            let signer = Signer {
                cert: &alice_cert,
                chain: &[],
                token: h.token.as_ref(),
                key: h.key.clone(),
                hash,
                pss,
            };
            let what = format!("{} {hash:?} pss={pss}", h.name);
            // Opaque.
            let signed = sign_message(MESSAGE, &signer, Format::Opaque, NOW).unwrap();
            std::fs::write(d.join("signed.der"), cms_of(&signed)).unwrap();
            let out = tool(
                "cmsutil",
                &["-D", "-i", "signed.der", "-d", &db, "-h", "1"],
                d,
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("signer0.status=GoodSignature"),
                "{what}: {text}"
            );
            // Detached: the first part is the content, the second the signature.
            let signed = sign_message(MESSAGE, &signer, Format::Detached, NOW).unwrap();
            let e = Entity::parse(&signed).unwrap();
            let ct = e.content_type().unwrap();
            let parts = mime::multipart_parts(e.body, ct.param("boundary").unwrap()).unwrap();
            std::fs::write(d.join("content"), parts[0]).unwrap();
            std::fs::write(d.join("sig.der"), cms_of(parts[1])).unwrap();
            let out = tool(
                "cmsutil",
                &[
                    "-D", "-i", "sig.der", "-c", "content", "-d", &db, "-h", "1", "-n",
                ],
                d,
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("signer0.status=GoodSignature"),
                "{what} detached: {text}"
            );
        }
    }
}

#[test]
fn we_decrypt_and_verify_what_nss_makes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = nss_db(d);
    std::fs::write(d.join("content"), INNER).unwrap();
    let (bob, bob_cert) = holders(
        &corpus("thunderbird-smime/smime/Bob.p12"),
        "nss",
        "bob-from-nss",
    );

    tool(
        "cmsutil",
        &[
            "-E", "-r", "Bob", "-i", "content", "-o", "env.der", "-d", &db,
        ],
        d,
    );
    let env = std::fs::read(d.join("env.der")).unwrap();
    for h in &bob {
        let me = Recipient {
            cert: &bob_cert,
            token: h.token.as_ref(),
            key: h.key.clone(),
            offload: AesOffload::Token,
        };
        let got = decrypt_cms(&env, &me).unwrap_or_else(|e| panic!("{}: {e}", h.name));
        assert_eq!(got.content, INNER, "{}", h.name);
    }

    for hash in ["SHA256", "SHA384", "SHA512"] {
        tool(
            "cmsutil",
            &[
                "-S",
                "-N",
                "Alice",
                "-G",
                "-P",
                "-H",
                hash,
                "-i",
                "content",
                "-o",
                "signed.der",
                "-d",
                &db,
            ],
            d,
        );
        let v = verify_cms(&std::fs::read(d.join("signed.der")).unwrap(), None).unwrap();
        assert!(v.signers.iter().all(|s| s.valid), "{hash}: {:?}", v.signers);
        assert_eq!(v.content, INNER);
        tool(
            "cmsutil",
            &[
                "-S",
                "-T",
                "-N",
                "Alice",
                "-G",
                "-H",
                hash,
                "-i",
                "content",
                "-o",
                "detached.der",
                "-d",
                &db,
            ],
            d,
        );
        let v = verify_cms(&std::fs::read(d.join("detached.der")).unwrap(), Some(INNER)).unwrap();
        assert!(
            v.signers.iter().all(|s| s.valid),
            "{hash} detached: {:?}",
            v.signers
        );
        let v = verify_cms(
            &std::fs::read(d.join("detached.der")).unwrap(),
            Some(b"tampered"),
        )
        .unwrap();
        assert!(
            v.signers.iter().all(|s| !s.valid),
            "{hash}: tampered content accepted"
        );
    }
}
