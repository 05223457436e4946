//! The built-in CA and the self-signed TLS certificate, checked by OpenSSL: the CA issues an
//! S/MIME certificate for a key it makes in the token (software token and SoftHSM2), the
//! certificate verifies for S/MIME signing, and a message signed with it verifies.
#![allow(clippy::unwrap_used)]

mod common;

use common::{openssl, writable_tokens};
use hsm::KeyRef;
use smimegw::ca::{self, CA_LABEL, Ca};
use smimegw::smime::sign::{Format, Signer};

#[test]
fn ca_issues_smime_certificates_openssl_accepts() {
    for (name, token, _dir) in writable_tokens() {
        let token = token.as_ref();
        let _ = token.delete(CA_LABEL);
        let _ = token.delete("alice@example.com");
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        let ca = Ca::open_or_create(token, "Example Corp", &pem).unwrap();
        // A second start finds the same CA.
        let again = Ca::open_or_create(token, "Example Corp", &pem).unwrap();
        assert_eq!(ca.cert, again.cert, "{name}");

        let chain = ca.issue_smime(token, "alice@example.com").unwrap();
        assert_eq!(
            token.certificates("alice@example.com").unwrap(),
            chain,
            "{name}"
        );
        ca::write_pem(&dir.path().join("alice.pem"), &[&chain[0]]).unwrap();
        let out = openssl(
            &[
                "verify",
                "-purpose",
                "smimesign",
                "-CAfile",
                "ca.pem",
                "alice.pem",
            ],
            dir.path(),
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("alice.pem: OK"),
            "{name}"
        );
        let text = openssl(&["x509", "-in", "alice.pem", "-noout", "-text"], dir.path());
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("email:alice@example.com"), "{name}: {text}");
        assert!(text.contains("E-mail Protection"), "{name}: {text}");

        // Renewal replaces the certificate, same key.
        let renewed = ca.issue_smime(token, "alice@example.com").unwrap();
        assert_ne!(renewed[0], chain[0], "{name}");
        assert_eq!(
            token.certificates("alice@example.com").unwrap(),
            renewed,
            "{name}"
        );

        let signer = Signer {
            cert: &renewed[0],
            chain: &renewed[1..],
            token,
            key: KeyRef::label("alice@example.com"),
            hash: hsm::Hash::Sha256,
            pss: false,
        };
        let msg = b"From: alice@example.com\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nHello\r\n";
        let signed = signer
            .prepare()
            .unwrap()
            .sign_message(msg, Format::Detached, 1_790_000_000)
            .unwrap();
        std::fs::write(dir.path().join("signed.eml"), &signed).unwrap();
        openssl(
            &[
                "cms",
                "-verify",
                "-in",
                "signed.eml",
                "-CAfile",
                "ca.pem",
                "-out",
                "/dev/null",
            ],
            dir.path(),
        );
        token.delete("alice@example.com").unwrap();
        token.delete(CA_LABEL).unwrap();
    }
}

#[test]
fn a_certificate_for_another_key_is_refused() {
    for (name, token, _dir) in writable_tokens() {
        let token = token.as_ref();
        let _ = token.delete("ca-test-a");
        let _ = token.delete("ca-test-b");
        token.generate_rsa("ca-test-a", 2048).unwrap();
        token.generate_rsa("ca-test-b", 2048).unwrap();
        let (tls, _key) = ca::tls_self_signed("mx.example.com").unwrap();
        let e = token.set_certificates("ca-test-a", &[tls]).unwrap_err();
        assert!(e.to_string().contains("not for this key"), "{name}: {e}");
        let _ = token.delete("ca-test-a");
        let _ = token.delete("ca-test-b");
    }
}

#[test]
fn tls_certificate_is_for_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca::tls_self_signed("mx.example.com").unwrap();
    ca::write_pem(&dir.path().join("tls.pem"), &[&cert]).unwrap();
    std::fs::write(dir.path().join("key.der"), &*key).unwrap();
    let out = openssl(
        &[
            "verify",
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "mx.example.com",
            "-CAfile",
            "tls.pem",
            "tls.pem",
        ],
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
    // The key is the certificate's.
    let a = openssl(&["x509", "-in", "tls.pem", "-noout", "-pubkey"], dir.path());
    let b = openssl(
        &["pkey", "-inform", "DER", "-in", "key.der", "-pubout"],
        dir.path(),
    );
    assert_eq!(a.stdout, b.stdout);
}
