//! The RSA objects of the IETF CMS examples built on the RFC 9216 sample keys
//! (shared/corpora/ietf-examples-cms-rfc9216): PKCS#1 v1.5 and PSS signatures, two signers
//! without certificates, RSA-OAEP key transport alone and beside an X25519 recipient. The
//! decryptions run with the PEM key, the software token and SoftHSM2.
//! Every object's content is "This is some sample content.".
#![allow(clippy::unwrap_used)]

mod common;

use common::{Holder, corpus, holders_of, pem_der};
use hsm::{AesOffload, Hash, ImportBundle, SignAlgorithm};
use smimegw::smime::{Recipient, SmimeError, decrypt_cms, verify_cms, verify_cms_with};

const CONTENT: &[u8] = b"This is some sample content.";

fn file(path: &str) -> Vec<u8> {
    std::fs::read(corpus(&format!("ietf-examples-cms-rfc9216/{path}"))).unwrap()
}

/// The first PEM block of a corpus file (the RFC 9216 files have text around their blocks).
fn der_of_pem(path: &str) -> Vec<u8> {
    pem_der(&corpus(&format!("ietf-examples-cms-rfc9216/{path}")))
}

#[test]
fn rsa_and_pss_signatures_verify() {
    let alice = der_of_pem("certs-and-keys/lamps-alice.crt");
    for (name, alg) in [
        (
            "signedByAliceRSA.p7m",
            SignAlgorithm::RsaPkcs1(Hash::Sha256),
        ),
        (
            "signedByAliceRSAPSS.p7m",
            SignAlgorithm::RsaPss(Hash::Sha256),
        ),
    ] {
        let v = verify_cms(&file(&format!("binary-files/{name}")), None).unwrap();
        assert_eq!(v.content, CONTENT, "{name}");
        assert_eq!(v.signers.len(), 1);
        let s = &v.signers[0];
        assert!(s.valid, "{name}: {:?}", s.reason);
        assert_eq!(s.algorithm, Some(alg));
        assert_eq!(s.cert.as_deref(), Some(alice.as_slice()), "{name}");
        // The PEM form is the same object.
        let pem = der_of_pem(&format!("pem-encoded/{}", name.replace(".p7m", ".pem")));
        assert_eq!(pem, file(&format!("binary-files/{name}")));
    }
}

#[test]
fn two_signers_without_certificates_need_them_given() {
    let cms = file("binary-files/signedByAliceAndCarlosNoCerts.p7m");
    let v = verify_cms(&cms, None).unwrap();
    assert_eq!(v.signers.len(), 2);
    assert!(v.signers.iter().all(|s| !s.valid));
    assert!(
        v.signers
            .iter()
            .any(|s| s.reason.as_deref().unwrap().contains("not in the message")),
        "{:?}",
        v.signers
    );
    let known = [
        der_of_pem("certs-and-keys/lamps-alice.crt"),
        der_of_pem("certs-and-keys/lamps-carlos.crt"),
    ];
    let v = verify_cms_with(&cms, None, &known).unwrap();
    assert_eq!(v.content, CONTENT);
    assert!(v.certificates.is_empty(), "the message itself carries none");
    // Carlos signs with Ed25519 (not an RSA object): named, not verified.
    let (carlos, alice): (Vec<_>, Vec<_>) = v.signers.iter().partition(|s| {
        s.reason
            .as_deref()
            .is_some_and(|r| r.contains("1.3.101.112"))
    });
    let (alice, carlos) = (alice[0], carlos[0]);
    assert!(alice.valid, "{:?}", alice.reason);
    assert_eq!(alice.cert.as_deref(), Some(known[0].as_slice()));
    assert!(!carlos.valid);
    assert!(
        carlos.reason.as_deref().unwrap().contains("1.3.101.112"),
        "{:?}",
        carlos.reason
    );
}

/// Bob's decryption key in each kind of holder (PEM, software token, SoftHSM2).
fn bob_holders() -> Vec<Holder> {
    let pem = file("certs-and-keys/lamps-bob.decrypt.p8.pem");
    let cert = der_of_pem("certs-and-keys/lamps-bob.encrypt.crt");
    let bundle = ImportBundle::from_parts(
        &der_of_pem("certs-and-keys/lamps-bob.decrypt.p8.pem"),
        vec![cert],
    )
    .unwrap();
    holders_of(&pem, &bundle, "lamps-bob")
}

#[test]
fn oaep_objects_decrypt_with_bobs_key_in_each_holder() {
    let cert = der_of_pem("certs-and-keys/lamps-bob.encrypt.crt");
    for h in bob_holders() {
        let holder = h.name;
        let me = Recipient {
            cert: &cert,
            token: h.token.as_ref(),
            key: h.key.clone(),
            offload: AesOffload::Host,
        };
        for name in ["encryptedForBobRSAOaep.p7m", "encryptedForBobAndDana.p7m"] {
            let d = decrypt_cms(&file(&format!("binary-files/{name}")), &me)
                .unwrap_or_else(|e| panic!("{holder} {name}: {e}"));
            assert_eq!(d.content, CONTENT, "{holder} {name}");
            assert!(
                matches!(
                    d.key_management,
                    smimegw::smime::KeyManagement::Transport(hsm::KeyTransport::RsaOaep { .. })
                ),
                "{holder} {name}"
            );
        }
        // ChaCha20-Poly1305 (RFC 8103) is refused, named.
        let e = decrypt_cms(
            &file("binary-files/authEnvelopedForBobChaCha20Poly1305.p7m"),
            &me,
        )
        .unwrap_err();
        assert!(e.is_malformed(), "{e}");
        assert!(e.to_string().contains("1.2.840.113549.1.9.16.3.18"), "{e}");
        // A KEK recipient only: not for Bob's key.
        let e = decrypt_cms(&file("binary-files/encryptedKekri.p7m"), &me).unwrap_err();
        assert!(matches!(e, SmimeError::NotRecipient(_)), "{e}");
        assert!(e.to_string().contains("key-encryption key"), "{e}");
    }
}
