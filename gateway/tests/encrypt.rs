//! Encryption: what smimegw encrypts, OpenSSL decrypts (and so do we, with the keys in a PEM
//! file, the software token and SoftHSM2): AES-CBC and AES-GCM, PKCS#1 v1.5 and OAEP, two
//! recipients.
#![allow(clippy::unwrap_used)]

mod common;

use common::{corpus, holders, openssl, p12_to_pem};
use hsm::AesOffload;
use smimegw::smime::encrypt::{Cipher, encrypt_message};
use smimegw::smime::{Recipient, decrypt_message};

const MESSAGE: &[u8] = b"From: Alice@example.com\r\nTo: Bob@example.com, Alice@example.com\r\nSubject: for two\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nF\xc3\xbcr Bob und Alice.\r\n";

#[test]
fn openssl_and_we_decrypt_what_we_encrypt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (bob, bob_cert) = holders(&corpus("thunderbird-smime/smime/Bob.p12"), "nss", "bob-enc");
    let (alice, alice_cert) = holders(
        &corpus("thunderbird-smime/smime/Alice.p12"),
        "nss",
        "alice-enc",
    );
    for (name, p12) in [("bob", "Bob.p12"), ("alice", "Alice.p12")] {
        let p = corpus(&format!("thunderbird-smime/smime/{p12}"));
        p12_to_pem(&p, "nss", d, name);
    }
    let recipients = vec![bob_cert.clone(), alice_cert.clone()];
    let expected_inner =
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nF\xc3\xbcr Bob und Alice.\r\n";
    for cipher in [
        Cipher::Aes128Cbc,
        Cipher::Aes256Cbc,
        Cipher::Aes128Gcm,
        Cipher::Aes256Gcm,
    ] {
        for oaep in [false, true] {
            let what = format!("{cipher:?} oaep={oaep}");
            let enc = encrypt_message(MESSAGE, &recipients, cipher, oaep).unwrap();
            let text = String::from_utf8(enc.clone()).unwrap();
            assert!(text.starts_with("From: Alice@example.com\r\n"), "{what}");
            assert!(text.contains("Subject: for two\r\n"));
            assert!(!text.contains("Bob und Alice"), "{what}: plaintext leaked");
            let kind = if matches!(cipher, Cipher::Aes128Gcm | Cipher::Aes256Gcm) {
                "smime-type=authEnveloped-data"
            } else {
                "smime-type=enveloped-data"
            };
            assert!(text.contains(kind), "{what}");
            std::fs::write(d.join("enc.eml"), &enc).unwrap();
            for name in ["bob", "alice"] {
                let out = format!("{name}.out");
                openssl(
                    &[
                        "cms",
                        "-decrypt",
                        "-in",
                        "enc.eml",
                        "-recip",
                        &format!("{name}.crt"),
                        "-inkey",
                        &format!("{name}.key"),
                        "-out",
                        &out,
                    ],
                    d,
                );
                assert_eq!(
                    std::fs::read(d.join(&out)).unwrap(),
                    expected_inner,
                    "{what} openssl {name}"
                );
            }
            for (holders, cert) in [(&bob, &bob_cert), (&alice, &alice_cert)] {
                for h in holders {
                    let me = Recipient {
                        cert,
                        token: h.token.as_ref(),
                        key: h.key.clone(),
                        offload: AesOffload::Token,
                    };
                    let got = decrypt_message(&enc, &me)
                        .unwrap_or_else(|e| panic!("{what} {}: {e}", h.name));
                    assert_eq!(got.content, expected_inner, "{what} {}", h.name);
                }
            }
        }
    }
}

#[test]
fn an_ec_recipient_is_refused_clearly() {
    let fran = hsm::read_pkcs12(
        &std::fs::read(corpus("thunderbird-smime/smime-interop/Fran-ec.p12")).unwrap(),
        &hsm::Pin::new("nss".into()),
    )
    .unwrap();
    let e =
        encrypt_message(MESSAGE, &[fran.chain[0].clone()], Cipher::Aes256Cbc, false).unwrap_err();
    assert!(e.to_string().contains("not an RSA key"), "{e}");
    let e = encrypt_message(MESSAGE, &[], Cipher::Aes256Cbc, false).unwrap_err();
    assert!(e.to_string().contains("no recipients"), "{e}");
}
