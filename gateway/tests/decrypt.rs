//! Decryption against real messages: every enveloped message in Thunderbird's corpus (made by
//! NSS) with Bob's key, OpenSSL's RSA-OAEP messages with Fran's, and AES-GCM made by OpenSSL,
//! each with the key in a PEM file, in the software token and in SoftHSM2. The plaintext must
//! be byte for byte what `openssl cms -decrypt` gives.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{corpus, holders, openssl, p12_to_pem};
use hsm::AesOffload;
use smimegw::smime::{Recipient, SmimeError, decrypt_message};

/// What OpenSSL makes of it: the reference plaintext.
fn openssl_decrypt(msg: &Path, p12: &Path, dir: &Path) -> Vec<u8> {
    let key = dir.join("recip.key");
    let cert = dir.join("recip.crt");
    if !key.exists() {
        p12_to_pem(p12, "nss", dir, "recip");
    }
    let out = dir.join("plain");
    openssl(
        &[
            "cms",
            "-decrypt",
            "-in",
            msg.to_str().unwrap(),
            "-recip",
            cert.to_str().unwrap(),
            "-inkey",
            key.to_str().unwrap(),
            "-out",
            out.to_str().unwrap(),
        ],
        dir,
    );
    std::fs::read(out).unwrap()
}

/// The enveloped messages, from the oracle file beside the corpus.
fn enveloped_corpus() -> Vec<String> {
    let tsv = std::fs::read_to_string(corpus("thunderbird-smime/OPENSSL_ORACLE.tsv")).unwrap();
    let files: Vec<String> = tsv
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols.get(3) == Some(&"ok")).then(|| cols[0].to_string())
        })
        .collect();
    assert!(files.len() >= 17, "{files:?}");
    files
}

/// Decrypts `msg` with the key in every holder, AES on the host and in the token; each
/// result named by holder and offload.
fn decrypt_everywhere(
    file: &str,
    msg: &[u8],
    cert: &[u8],
    holders: &[common::Holder],
) -> Vec<(String, smimegw::smime::Decrypted)> {
    let mut out = Vec::new();
    for h in holders {
        for offload in [AesOffload::Host, AesOffload::Token] {
            let me = Recipient {
                cert,
                token: h.token.as_ref(),
                key: h.key.clone(),
                offload,
            };
            let who = format!("{} ({offload:?})", h.name);
            let got =
                decrypt_message(msg, &me).unwrap_or_else(|e| panic!("{file} with {who}: {e}"));
            out.push((who, got));
        }
    }
    out
}

#[test]
fn thunderbird_enveloped_messages_decrypt_with_bobs_key() {
    let dir = tempfile::tempdir().unwrap();
    let p12 = corpus("thunderbird-smime/smime/Bob.p12");
    let (holders, cert) = holders(&p12, "nss", "bob");
    for file in enveloped_corpus() {
        let path = corpus(&format!("thunderbird-smime/{file}"));
        let msg = std::fs::read(&path).unwrap();
        let expected = openssl_decrypt(&path, &p12, dir.path());
        for (who, got) in decrypt_everywhere(&file, &msg, &cert, &holders) {
            assert_eq!(got.content, expected, "{file} with {who}");
            assert_eq!(got.cipher, "AES-128-CBC");
            assert!(!got.authenticated);
        }
    }
}

#[test]
fn openssl_oaep_messages_decrypt_with_frans_key() {
    let dir = tempfile::tempdir().unwrap();
    let p12 = corpus("thunderbird-smime/smime-interop/Fran.p12");
    let (holders, cert) = holders(&p12, "nss", "fran");
    for file in [
        "fran-oaep_ossl.env",
        "fran-oaep-label_ossl.env",
        "fran-oaep-sha256hash_ossl.env",
        "fran-oaep-sha256hash-sha256mgf_ossl.env",
    ] {
        let path = corpus(&format!("thunderbird-smime/smime-interop/{file}"));
        let msg = std::fs::read(&path).unwrap();
        let expected = openssl_decrypt(&path, &p12, dir.path());
        assert!(String::from_utf8_lossy(&expected).contains("This is a test message to Fran."));
        for h in &holders {
            let me = Recipient {
                cert: &cert,
                token: h.token.as_ref(),
                key: h.key.clone(),
                offload: AesOffload::Token,
            };
            match decrypt_message(&msg, &me) {
                Ok(got) => assert_eq!(got.content, expected, "{file} with {}", h.name),
                Err(e) => panic!("{file} with {}: {e}", h.name),
            }
        }
    }
}

/// ECDH key agreement (RFC 5753, ephemeral-static, X9.63 KDF with SHA-256 and SHA-512, AES
/// key wrap) made by OpenSSL, with Fran's EC key in each holder: the token derives the shared
/// secret, the host runs the KDF and unwraps.
#[test]
fn openssl_ecdh_messages_decrypt_with_frans_ec_key() {
    let dir = tempfile::tempdir().unwrap();
    let p12 = corpus("thunderbird-smime/smime-interop/Fran-ec.p12");
    let (ec_holders, cert) = holders(&p12, "nss", "fran-ec");
    for (file, kdf) in [
        ("fran-ec_ossl-aes128-sha256.env", hsm::Hash::Sha256),
        ("fran-ec_ossl-aes256-sha512.env", hsm::Hash::Sha512),
    ] {
        let path = corpus(&format!("thunderbird-smime/smime-interop/{file}"));
        let msg = std::fs::read(&path).unwrap();
        let expected = openssl_decrypt(&path, &p12, dir.path());
        assert!(String::from_utf8_lossy(&expected).contains("This is a test message to Fran."));
        for (who, got) in decrypt_everywhere(file, &msg, &cert, &ec_holders) {
            assert_eq!(got.content, expected, "{file} with {who}");
            assert!(
                matches!(
                    got.key_management,
                    smimegw::smime::KeyManagement::Agreement { kdf: k, .. } if k == kdf
                ),
                "{file}: {}",
                got.key_management
            );
        }
    }
    // Fran's RSA key is not the EC recipient: said, not guessed.
    let (rsa_holders, rsa_cert) = holders(
        &corpus("thunderbird-smime/smime-interop/Fran.p12"),
        "nss",
        "fran-rsa",
    );
    let msg = std::fs::read(corpus(
        "thunderbird-smime/smime-interop/fran-ec_ossl-aes128-sha256.env",
    ))
    .unwrap();
    let me = Recipient {
        cert: &rsa_cert,
        token: rsa_holders[0].token.as_ref(),
        key: rsa_holders[0].key.clone(),
        offload: AesOffload::Host,
    };
    let e = decrypt_message(&msg, &me).unwrap_err();
    assert!(e.to_string().contains("key agreement (ECDH)"), "{e}");
}

#[test]
fn aes_gcm_from_openssl_decrypts_and_a_bad_tag_releases_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p12 = corpus("thunderbird-smime/smime/Bob.p12");
    let (holders, cert) = holders(&p12, "nss", "bob-gcm");
    std::fs::write(d.join("bob.der"), &cert).unwrap();
    openssl(
        &[
            "x509", "-inform", "DER", "-in", "bob.der", "-out", "bob.pem",
        ],
        d,
    );
    let plain = b"Content-Type: text/plain\r\n\r\nsecret for Bob, sealed with GCM\r\n";
    std::fs::write(d.join("in.txt"), plain).unwrap();
    for cipher in ["-aes-128-gcm", "-aes-256-gcm"] {
        openssl(
            &[
                "cms", "-encrypt", cipher, "-in", "in.txt", "-binary", "-out", "gcm.eml", "bob.pem",
            ],
            d,
        );
        let msg = std::fs::read(d.join("gcm.eml")).unwrap();
        for h in &holders {
            let me = Recipient {
                cert: &cert,
                token: h.token.as_ref(),
                key: h.key.clone(),
                offload: AesOffload::Token,
            };
            let got =
                decrypt_message(&msg, &me).unwrap_or_else(|e| panic!("{cipher} {}: {e}", h.name));
            assert_eq!(got.content, plain);
            assert!(got.authenticated);
        }
    }
    // Flip one bit of the tag (the MAC is the last OCTET STRING, near the end of the DER).
    openssl(
        &[
            "cms",
            "-encrypt",
            "-aes-256-gcm",
            "-in",
            "in.txt",
            "-binary",
            "-outform",
            "DER",
            "-out",
            "gcm.der",
            "bob.pem",
        ],
        d,
    );
    let mut der = std::fs::read(d.join("gcm.der")).unwrap();
    let n = der.len();
    der[n - 3] ^= 1;
    for h in &holders {
        let me = Recipient {
            cert: &cert,
            token: h.token.as_ref(),
            key: h.key.clone(),
            offload: AesOffload::Token,
        };
        match smimegw::smime::decrypt_cms(&der, &me) {
            Err(SmimeError::Decrypt) => {}
            other => panic!("{}: a bad tag gave {other:?}", h.name),
        }
    }
}

#[test]
fn a_message_for_someone_else_says_so() {
    let p12 = corpus("thunderbird-smime/smime/Alice.p12");
    let (holders, cert) = holders(&p12, "nss", "alice");
    let msg = std::fs::read(corpus("thunderbird-smime/smime/alice.env.eml")).unwrap();
    let me = Recipient {
        cert: &cert,
        token: holders[0].token.as_ref(),
        key: holders[0].key.clone(),
        offload: AesOffload::Host,
    };
    match decrypt_message(&msg, &me) {
        Err(e @ SmimeError::NotRecipient(_)) => {
            assert!(e.to_string().contains("not among"), "{e}");
            assert!(!e.is_malformed());
        }
        other => panic!("{other:?}"),
    }
    let e = decrypt_message(b"Content-Type: text/plain\r\n\r\nhello", &me).unwrap_err();
    assert!(e.is_malformed(), "{e}");
}
