//! Signing: what smimegw signs, OpenSSL verifies (and so does smimegw), with the key in a PEM
//! file, in the software token and in SoftHSM2; detached and opaque; SHA-256/384/512; PSS.
#![allow(clippy::unwrap_used)]

mod common;

use common::{corpus, holders, openssl, p12_to_pem};
use hsm::Hash;
use smimegw::smime::sign::{Format, Signer, sign_message};
use smimegw::smime::trust::check_signer;
use smimegw::smime::verify_message;

const NOW: u64 = 1_780_272_000; // 2026-06-01

const MESSAGE: &[u8] = b"From: Alice <Alice@example.com>\r\nTo: Bob <Bob@example.com>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nDate: Mon, 01 Jun 2026 00:00:00 +0000\r\nMessage-ID: <1@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln.\nA bare LF line, and a long one: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n";

#[test]
fn openssl_verifies_what_we_sign() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p12 = corpus("thunderbird-smime/smime/Alice.p12");
    let (holders, cert) = holders(&p12, "nss", "alice-sign");
    let ca = corpus("thunderbird-smime/smime/TestCA.pem");
    let ca_der = common::pem_der(&ca);
    let cases = [
        (Format::Detached, Hash::Sha256, false),
        (Format::Opaque, Hash::Sha256, false),
        (Format::Detached, Hash::Sha384, false),
        (Format::Opaque, Hash::Sha512, false),
        (Format::Detached, Hash::Sha256, true),
    ];
    for h in &holders {
        for (format, hash, pss) in cases {
            let signer = Signer {
                cert: &cert,
                chain: &[],
                token: h.token.as_ref(),
                key: h.key.clone(),
                hash,
                pss,
            };
            let what = format!("{} {format:?} {hash:?} pss={pss}", h.name);
            let signed = sign_message(MESSAGE, &signer, format, NOW)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            // 7-bit clean, CRLF only, top-level fields outside.
            assert!(signed.iter().all(|b| *b < 0x80), "{what}");
            let text = String::from_utf8(signed.clone()).unwrap();
            assert!(!text.replace("\r\n", "").contains('\n'), "{what}: bare LF");
            assert!(
                text.starts_with("From: Alice <Alice@example.com>\r\n"),
                "{what}"
            );
            assert!(text.contains("Message-ID: <1@example.com>\r\n"));
            if format == Format::Detached {
                let micalg = format!(
                    "micalg={}",
                    match hash {
                        Hash::Sha384 => "sha-384",
                        Hash::Sha512 => "sha-512",
                        _ => "sha-256",
                    }
                );
                assert!(text.contains(&micalg), "{what}");
                assert!(text.contains("protocol=\"application/pkcs7-signature\""));
            } else {
                assert!(text.contains("smime-type=signed-data"));
            }

            // OpenSSL: signature and chain to the test CA.
            std::fs::write(d.join("signed.eml"), &signed).unwrap();
            let out = openssl(
                &[
                    "cms",
                    "-verify",
                    "-in",
                    "signed.eml",
                    "-CAfile",
                    ca.to_str().unwrap(),
                    "-attime",
                    &NOW.to_string(),
                    "-out",
                    "content.eml",
                ],
                d,
            );
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("Verification successful"),
                "{what}"
            );
            let content = std::fs::read_to_string(d.join("content.eml")).unwrap();
            assert!(
                content.contains("Content-Transfer-Encoding: quoted-printable"),
                "{what}"
            );
            assert!(content.contains("Gr=C3=BC=C3=9Fe aus K=C3=B6ln."), "{what}");

            // And we verify it too, trusted at the same time, From matching.
            let v = verify_message(&signed).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(v.signers.iter().all(|s| s.valid), "{what}: {:?}", v.signers);
            assert_eq!(v.signers[0].digest, Some(hash));
            check_signer(
                &cert,
                &v.certificates,
                std::slice::from_ref(&ca_der),
                NOW,
                Some("Alice@example.com"),
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
}

#[test]
fn the_signed_attributes_are_the_ones_clients_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p12 = corpus("thunderbird-smime/smime/Alice.p12");
    let (alice, cert) = holders(&p12, "nss", "alice-attrs");
    let signer = Signer {
        cert: &cert,
        chain: &[],
        token: alice[0].token.as_ref(),
        key: alice[0].key.clone(),
        hash: Hash::Sha256,
        pss: false,
    };
    let signed = sign_message(MESSAGE, &signer, Format::Opaque, NOW).unwrap();
    std::fs::write(d.join("s.eml"), &signed).unwrap();
    openssl(&["smime", "-pk7out", "-in", "s.eml", "-out", "s.p7"], d);
    let out = openssl(
        &["cms", "-cmsout", "-print", "-in", "s.p7", "-inform", "PEM"],
        d,
    );
    let dump = String::from_utf8_lossy(&out.stdout);
    for attr in [
        "contentType",
        "signingTime",
        "messageDigest",
        "S/MIME Capabilities",
        "1.3.6.1.4.1.311.16.4",
        "id-smime-aa-encrypKeyPref",
    ] {
        assert!(dump.contains(attr), "{attr} missing:\n{dump}");
    }
    // The key must be the certificate's.
    let bob = holders(
        &corpus("thunderbird-smime/smime/Bob.p12"),
        "nss",
        "bob-mismatch",
    )
    .0;
    let wrong = Signer {
        cert: &cert,
        chain: &[],
        token: bob[0].token.as_ref(),
        key: bob[0].key.clone(),
        hash: Hash::Sha256,
        pss: false,
    };
    let e = sign_message(MESSAGE, &wrong, Format::Detached, NOW).unwrap_err();
    assert!(e.to_string().contains("does not belong"), "{e}");
}

#[test]
fn we_verify_what_openssl_signs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p12 = corpus("thunderbird-smime/smime/Alice.p12");
    p12_to_pem(&p12, "nss", d, "a");
    std::fs::write(
        d.join("in.txt"),
        b"Content-Type: text/plain\r\n\r\nsigned by OpenSSL\r\n",
    )
    .unwrap();
    let variants: [&[&str]; 5] = [
        &[],
        &["-nodetach"],
        &["-md", "sha512"],
        &[
            "-keyopt",
            "rsa_padding_mode:pss",
            "-keyopt",
            "rsa_pss_saltlen:32",
        ],
        &[
            "-nodetach",
            "-md",
            "sha384",
            "-keyopt",
            "rsa_padding_mode:pss",
            "-keyopt",
            "rsa_pss_saltlen:48",
        ],
    ];
    for extra in variants {
        let mut args = vec![
            "cms", "-sign", "-signer", "a.crt", "-inkey", "a.key", "-in", "in.txt", "-out", "s.eml",
        ];
        args.extend_from_slice(extra);
        openssl(&args, d);
        let msg = std::fs::read(d.join("s.eml")).unwrap();
        let v = verify_message(&msg).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        assert!(
            v.signers.iter().all(|s| s.valid),
            "{extra:?}: {:?}",
            v.signers
        );
        assert_eq!(v.detached, !extra.contains(&"-nodetach"), "{extra:?}");
        assert!(String::from_utf8_lossy(&v.entity).contains("signed by OpenSSL"));
    }
}

#[test]
fn pss_with_another_salt_length_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p12 = corpus("thunderbird-smime/smime/Alice.p12");
    p12_to_pem(&p12, "nss", d, "a");
    std::fs::write(d.join("in.txt"), b"Content-Type: text/plain\r\n\r\nx\r\n").unwrap();
    openssl(
        &[
            "cms",
            "-sign",
            "-signer",
            "a.crt",
            "-inkey",
            "a.key",
            "-in",
            "in.txt",
            "-out",
            "s.eml",
            "-keyopt",
            "rsa_padding_mode:pss",
            "-keyopt",
            "rsa_pss_saltlen:max",
        ],
        d,
    );
    let v = verify_message(&std::fs::read(d.join("s.eml")).unwrap()).unwrap();
    let reason = v.signers[0].reason.clone().unwrap_or_default();
    assert!(!v.signers[0].valid);
    assert!(reason.contains("salt is not supported"), "{reason}");
}
