//! Every `Token` operation, against the software token and against SoftHSM2.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, Pkcs1PublicEncryptingKey,
    PublicEncryptingKey,
};
use common::*;
use hsm::{
    AesMode, AesOffload, CipherDirection, ContentKey, Error, Hash, KeyRef, KeyTransport,
    ObjectType, Pin, SignAlgorithm, Token, read_pkcs12, run_all,
};

fn verify_with_openssl(spki: &[u8], alg: SignAlgorithm, data: &[u8], sig: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("pub.pem"), pem("PUBLIC KEY", spki)).unwrap();
    std::fs::write(d.join("data"), data).unwrap();
    std::fs::write(d.join("sig"), sig).unwrap();
    let md = format!("-{}", alg.hash().name());
    let mut args = vec![
        "dgst",
        md.as_str(),
        "-verify",
        "pub.pem",
        "-signature",
        "sig",
    ];
    if let SignAlgorithm::RsaPss(_) = alg {
        args.extend([
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:digest",
        ]);
    }
    args.push("data");
    let out = openssl(&args, d);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Verified OK"));
}

fn encrypt_to(spki: &[u8], alg: &KeyTransport, cek: &[u8]) -> Vec<u8> {
    let pk = PublicEncryptingKey::from_der(spki).unwrap();
    let mut out = vec![0u8; pk.key_size_bytes()];
    match alg {
        KeyTransport::RsaPkcs1 => {
            Pkcs1PublicEncryptingKey::new(pk)
                .unwrap()
                .encrypt(cek, &mut out)
                .unwrap();
        }
        KeyTransport::RsaOaep { hash, label, .. } => {
            let a = if *hash == Hash::Sha1 {
                &OAEP_SHA1_MGF1SHA1
            } else {
                &OAEP_SHA256_MGF1SHA256
            };
            OaepPublicEncryptingKey::new(pk)
                .unwrap()
                .encrypt(a, cek, &mut out, label.as_deref())
                .unwrap();
        }
    }
    out
}

/// Proves a content key holds `cek`: ciphertext made on the host with `cek` decrypts with it.
fn assert_key_is(key: &ContentKey, cek: &[u8]) {
    for mode in [
        AesMode::Cbc { iv: [7; 16] },
        AesMode::Gcm {
            nonce: vec![9; 12],
            aad: vec![],
            tag_len: 16,
        },
    ] {
        let pt: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let host = ContentKey::host(cek).unwrap();
        let (ct, tag) = run_all(
            host.cipher(CipherDirection::Encrypt, &mode).unwrap(),
            &pt,
            None,
        )
        .unwrap();
        let (back, _) = run_all(
            key.cipher(CipherDirection::Decrypt, &mode).unwrap(),
            &ct,
            tag.as_deref(),
        )
        .unwrap();
        assert_eq!(back, pt, "{mode:?}");
    }
}

fn assert_key_is_not(key: &ContentKey, cek: &[u8]) {
    let mode = AesMode::Gcm {
        nonce: vec![9; 12],
        aad: vec![],
        tag_len: 16,
    };
    let host = ContentKey::host(cek).unwrap();
    let (ct, tag) = run_all(
        host.cipher(CipherDirection::Encrypt, &mode).unwrap(),
        b"secret",
        None,
    )
    .unwrap();
    let r = run_all(
        key.cipher(CipherDirection::Decrypt, &mode).unwrap(),
        &ct,
        tag.as_deref(),
    );
    assert!(matches!(r, Err(Error::Decrypt)), "{r:?}");
}

#[test]
fn generate_sign_and_verify_with_openssl() {
    for (name, t, _keep) in backends() {
        let label = unique("gen");
        let info = t.generate_rsa(&label, 2048).unwrap();
        assert_eq!(info.description, "RSA 2048");
        let key = KeyRef::label(&label);
        let spki = t.public_key(&key).unwrap();
        let data = b"the signed attributes of a message";
        for alg in [
            SignAlgorithm::RsaPkcs1(Hash::Sha256),
            SignAlgorithm::RsaPkcs1(Hash::Sha384),
            SignAlgorithm::RsaPkcs1(Hash::Sha512),
            SignAlgorithm::RsaPss(Hash::Sha256),
            SignAlgorithm::RsaPss(Hash::Sha384),
            SignAlgorithm::RsaPss(Hash::Sha512),
        ] {
            let sig = t.sign(&key, alg, &alg.hash().digest(data)).unwrap();
            assert_eq!(sig.len(), 256, "{name} {alg}");
            verify_with_openssl(&spki, alg, data, &sig);
        }
        // Wrong digest length and SHA-1 are refused with reasons.
        let e = t
            .sign(&key, SignAlgorithm::RsaPkcs1(Hash::Sha256), &[0; 20])
            .unwrap_err();
        assert!(e.to_string().contains("32 bytes"), "{name}: {e}");
        assert!(matches!(
            t.sign(&key, SignAlgorithm::RsaPkcs1(Hash::Sha1), &[0; 20]),
            Err(Error::Unsupported(_))
        ));
        assert!(
            t.generate_rsa(&label, 2048).is_err(),
            "{name}: duplicate label accepted"
        );
        assert!(t.generate_rsa(&unique("bad"), 1024).is_err());
        let listed = t.list().unwrap();
        let k = listed
            .iter()
            .find(|o| o.label == label && o.class == ObjectType::Private)
            .unwrap();
        assert_eq!(
            k.protected,
            Some(true),
            "{name}: generated key not protected"
        );
        assert!(t.delete(&label).unwrap() >= 1);
        assert!(matches!(
            t.sign(&key, SignAlgorithm::RsaPkcs1(Hash::Sha256), &[0; 32]),
            Err(Error::NotFound { .. })
        ));
    }
}

#[test]
fn generate_3072_and_4096() {
    for (_name, t, _keep) in backends() {
        for bits in [3072, 4096] {
            let label = unique("big");
            t.generate_rsa(&label, bits).unwrap();
            let sig = t
                .sign(
                    &KeyRef::label(&label),
                    SignAlgorithm::RsaPkcs1(Hash::Sha256),
                    &[1; 32],
                )
                .unwrap();
            assert_eq!(sig.len(), bits / 8);
            t.delete(&label).unwrap();
        }
    }
}

#[test]
fn unwrap_content_keys_host_and_token() {
    for (name, t, _keep) in backends() {
        let label = unique("unwrap");
        t.generate_rsa(&label, 2048).unwrap();
        let key = KeyRef::label(&label);
        let spki = t.public_key(&key).unwrap();
        let oaep1 = KeyTransport::RsaOaep {
            hash: Hash::Sha1,
            mgf1: Hash::Sha1,
            label: None,
        };
        for alg in [KeyTransport::RsaPkcs1, oaep1] {
            for len in [16usize, 32] {
                let cek: Vec<u8> = (0..len as u8).collect();
                let blob = encrypt_to(&spki, &alg, &cek);
                for place in [AesOffload::Host, AesOffload::Token] {
                    let k = t.unwrap_key(&key, &alg, &blob, len, place).unwrap();
                    assert_eq!(k.len(), len);
                    if name == "softhsm" {
                        assert_eq!(k.place(), place);
                    }
                    assert_key_is(&k, &cek);
                }
            }
        }
        t.delete(&label).unwrap();
    }
}

#[test]
fn implicit_rejection_of_bad_blobs() {
    for (name, t, _keep) in backends() {
        let label = unique("reject");
        t.generate_rsa(&label, 2048).unwrap();
        let key = KeyRef::label(&label);
        let spki = t.public_key(&key).unwrap();
        let cek = [0x42u8; 32];
        let good = encrypt_to(&spki, &KeyTransport::RsaPkcs1, &cek);
        let mut garbled = good.clone();
        garbled[100] ^= 0x55;
        let short_key = encrypt_to(&spki, &KeyTransport::RsaPkcs1, &[1u8; 16]);
        for place in [AesOffload::Host, AesOffload::Token] {
            for blob in [&garbled, &short_key, &vec![0u8; 256], &vec![1u8; 17]] {
                // Same success path as a good blob; the failure shows only in content decryption.
                let k = t
                    .unwrap_key(&key, &KeyTransport::RsaPkcs1, blob, 32, place)
                    .unwrap();
                assert_eq!(k.len(), 32, "{name}");
                assert_key_is_not(&k, &cek);
                assert_key_is_not(&k, &[1u8; 16]);
            }
        }
        if name == "software" {
            // Deterministic: the same bad blob gives the same stand-in key twice.
            let a = t
                .unwrap_key(
                    &key,
                    &KeyTransport::RsaPkcs1,
                    &garbled,
                    16,
                    AesOffload::Host,
                )
                .unwrap();
            let b = t
                .unwrap_key(
                    &key,
                    &KeyTransport::RsaPkcs1,
                    &garbled,
                    16,
                    AesOffload::Host,
                )
                .unwrap();
            let mode = AesMode::Cbc { iv: [0; 16] };
            let ea = run_all(
                a.cipher(CipherDirection::Encrypt, &mode).unwrap(),
                b"x",
                None,
            )
            .unwrap();
            let eb = run_all(
                b.cipher(CipherDirection::Encrypt, &mode).unwrap(),
                b"x",
                None,
            )
            .unwrap();
            assert_eq!(ea, eb);
        }
        t.delete(&label).unwrap();
    }
}

#[test]
fn oaep_sha256_and_labels_natively_or_by_raw_fallback() {
    let oaep256 = KeyTransport::RsaOaep {
        hash: Hash::Sha256,
        mgf1: Hash::Sha256,
        label: None,
    };
    let labelled = KeyTransport::RsaOaep {
        hash: Hash::Sha256,
        mgf1: Hash::Sha256,
        label: Some(b"smimegw".to_vec()),
    };
    let (_d, soft) = soft_token();
    let strict = pkcs11_token(false);
    let raw = pkcs11_token(true);
    let tokens: [(&str, &dyn Token); 3] = [
        ("software", &soft),
        ("softhsm", &strict),
        ("softhsm+raw", &raw),
    ];
    for (name, t) in tokens {
        let label = unique("oaep");
        t.generate_rsa(&label, 2048).unwrap();
        let key = KeyRef::label(&label);
        let spki = t.public_key(&key).unwrap();
        for alg in [&oaep256, &labelled] {
            let cek = [0x17u8; 32];
            let blob = encrypt_to(&spki, alg, &cek);
            for place in [AesOffload::Host, AesOffload::Token] {
                eprintln!("{name} {alg} {place:?}");
                match t.unwrap_key(&key, alg, &blob, 32, place) {
                    Ok(k) => assert_key_is(&k, &cek),
                    // SoftHSM2 2.6 refuses OAEP with SHA-256; without the fallback that is an
                    // explicit "unsupported", never a silent failure.
                    Err(Error::Unsupported(m)) if name == "softhsm" => {
                        assert!(m.contains("OAEP"), "{m}")
                    }
                    Err(e) => panic!("{name} {alg}: {e}"),
                }
            }
        }
        t.delete(&label).unwrap();
    }
}

#[test]
fn aes_in_the_token_interoperates_with_the_host() {
    for (name, t, _keep) in backends() {
        let cek = [0x33u8; 32];
        let token_key = t.content_key(&cek, AesOffload::Token).unwrap();
        let host_key = ContentKey::host(&cek).unwrap();
        let pt: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
        for mode in [
            AesMode::Cbc { iv: [1; 16] },
            AesMode::Gcm {
                nonce: vec![2; 12],
                aad: b"aad".to_vec(),
                tag_len: 16,
            },
            AesMode::Gcm {
                nonce: vec![3; 12],
                aad: vec![],
                tag_len: 12,
            },
        ] {
            let (ct1, tag1) = run_all(
                token_key.cipher(CipherDirection::Encrypt, &mode).unwrap(),
                &pt,
                None,
            )
            .unwrap();
            let (ct2, tag2) = run_all(
                host_key.cipher(CipherDirection::Encrypt, &mode).unwrap(),
                &pt,
                None,
            )
            .unwrap();
            assert_eq!(ct1, ct2, "{name} {mode:?}");
            assert_eq!(tag1, tag2, "{name} {mode:?}");
            let (back, _) = run_all(
                token_key.cipher(CipherDirection::Decrypt, &mode).unwrap(),
                &ct2,
                tag2.as_deref(),
            )
            .unwrap();
            assert_eq!(back, pt);
            if let Some(tag) = tag2 {
                let mut bad = tag.clone();
                bad[0] ^= 1;
                let r = run_all(
                    token_key.cipher(CipherDirection::Decrypt, &mode).unwrap(),
                    &ct2,
                    Some(&bad),
                );
                assert!(
                    matches!(r, Err(Error::Decrypt)),
                    "{name}: tampered tag: {r:?}"
                );
                let mut ct_bad = ct2.clone();
                ct_bad[5] ^= 1;
                let r = run_all(
                    token_key.cipher(CipherDirection::Decrypt, &mode).unwrap(),
                    &ct_bad,
                    Some(&tag),
                );
                assert!(
                    matches!(r, Err(Error::Decrypt)),
                    "{name}: tampered ciphertext: {r:?}"
                );
            }
        }
        // Abandoning a stream midway must not poison the pool.
        let mode = AesMode::Cbc { iv: [1; 16] };
        let mut c = token_key.cipher(CipherDirection::Encrypt, &mode).unwrap();
        let mut out = Vec::new();
        c.update(&pt[..1000], &mut out).unwrap();
        drop(c);
        let (ct, _) = run_all(
            token_key.cipher(CipherDirection::Encrypt, &mode).unwrap(),
            b"after",
            None,
        )
        .unwrap();
        assert_eq!(ct.len(), 16);
    }
}

fn make_p12(dir: &Path, legacy: bool) -> Vec<u8> {
    make_p12_with(dir, legacy, "rsa:2048")
}

fn make_p12_with(dir: &Path, legacy: bool, newkey: &str) -> Vec<u8> {
    let mut req = vec!["req", "-x509", "-newkey", newkey];
    if newkey == "ec" {
        req.extend(["-pkeyopt", "ec_paramgen_curve:P-256"]);
    }
    req.extend([
        "-nodes",
        "-keyout",
        "k.pem",
        "-out",
        "c.pem",
        "-days",
        "30",
        "-subj",
        "/CN=Carol/emailAddress=carol@example.com",
    ]);
    openssl(&req, dir);
    let mut args = vec![
        "pkcs12",
        "-export",
        "-inkey",
        "k.pem",
        "-in",
        "c.pem",
        "-out",
        "x.p12",
        "-passout",
        "pass:p12-secret",
    ];
    if legacy {
        args.push("-legacy");
    }
    openssl(&args, dir);
    std::fs::read(dir.join("x.p12")).unwrap()
}

#[test]
fn import_pkcs12_from_openssl_and_nss() {
    let dir = tempfile::tempdir().unwrap();
    let modern = make_p12(dir.path(), false);
    let modern_cert = std::fs::read_to_string(dir.path().join("c.pem")).unwrap();
    let legacy = make_p12(dir.path(), true);
    let pw = Pin::new("p12-secret".into());
    let nss = Pin::new("nss".into());
    let ec = make_p12_with(dir.path(), false, "ec");
    let mut files: Vec<(String, Vec<u8>, &Pin)> = vec![
        ("openssl".into(), modern.clone(), &pw),
        ("openssl-legacy".into(), legacy, &pw),
        ("openssl-ec".into(), ec, &pw),
    ];
    // NSS's files (Thunderbird's test data): BER inside the MAC-protected and the encrypted
    // parts; PBES2/AES (smime/, browser-smime-data/) and SHA-1 3DES PBE (smime-interop/).
    for f in [
        "smime/Alice.p12",
        "smime/Alice-ec.p12",
        "smime/Bob.p12",
        "smime/Dave.p12",
        "smime/Eve.p12",
        "smime/Fran.p12",
        "smime/Fran-ec.p12",
        "smime-interop/Fran.p12",
        "smime-interop/Fran-ec.p12",
        "browser-smime-data/Alice.p12",
        "browser-smime-data/Bob.p12",
    ] {
        let p = corpus(&format!("thunderbird-smime/{f}"));
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        files.push((f.to_string(), bytes, &nss));
    }
    // The NSS files hold the CA too: the chain comes out leaf first, then the CA.
    let alice = read_pkcs12(&files[3].1, &nss).unwrap();
    assert_eq!(alice.chain.len(), 2);
    let leaf = hsm::cert_summary(&alice.chain[0]).unwrap();
    let ca = hsm::cert_summary(&alice.chain[1]).unwrap();
    assert!(leaf.subject.contains("Alice"), "{}", leaf.subject);
    assert_eq!(leaf.issuer_der, ca.subject_der);
    let e = read_pkcs12(&files[3].1, &pw).unwrap_err().to_string();
    assert!(e.contains("wrong password"), "{e}");
    for (name, t, _keep) in backends() {
        for (what, bytes, pw) in &files {
            let bundle = read_pkcs12(bytes, pw).unwrap_or_else(|e| panic!("{what}: {e}"));
            let label = unique("p12");
            let rep = t
                .import(&label, &bundle)
                .unwrap_or_else(|e| panic!("{name} {what}: {e}"));
            assert!(rep.certificates >= 1);
            let certs = t.certificates(&label).unwrap();
            assert_eq!(certs.len(), rep.certificates, "{name} {what}");
            assert_eq!(certs[0], bundle.chain[0], "{name} {what}: end entity first");
            let key = KeyRef::label(&label);
            let spki = t.public_key(&key).unwrap();
            let leaf = hsm::cert_summary(&certs[0]).unwrap();
            let alg = match bundle.kind() {
                hsm::KeyKind::Rsa { .. } => SignAlgorithm::RsaPkcs1(Hash::Sha256),
                hsm::KeyKind::EcP256 => SignAlgorithm::Ecdsa(Hash::Sha256),
                hsm::KeyKind::EcP384 => SignAlgorithm::Ecdsa(Hash::Sha384),
            };
            let sig = t.sign(&key, alg, &alg.hash().digest(b"hello")).unwrap();
            verify_with_openssl(&spki, alg, b"hello", &sig);
            let listed = t.list().unwrap();
            let k = listed
                .iter()
                .find(|o| o.label == label && o.class == ObjectType::Private)
                .unwrap();
            assert_eq!(k.protected, Some(true), "{name} {what}");
            assert!(listed.iter().any(|o| o.label == label
                && o.class == ObjectType::Cert
                && o.description == leaf.subject));
            assert!(t.import(&label, &bundle).is_err(), "duplicate label");
            assert!(t.delete(&label).unwrap() >= 1);
            assert!(t.certificates(&label).is_err() || t.certificates(&label).unwrap().is_empty());
        }
    }
    assert!(modern_cert.contains("BEGIN CERTIFICATE"));
}

#[test]
fn bad_pkcs12_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p12 = make_p12(dir.path(), false);
    let e = read_pkcs12(&p12, &Pin::new("wrong".into()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrong password"), "{e}");
    assert!(!e.contains("p12-secret"));
    let e = read_pkcs12(b"not a pkcs12 file at all", &Pin::new("x".into()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a PKCS#12"), "{e}");
    let e = read_pkcs12(&p12[..p12.len() / 2], &Pin::new("p12-secret".into()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("PKCS#12"), "{e}");
    // A certificate-only PKCS#12.
    openssl(
        &[
            "pkcs12",
            "-export",
            "-nokeys",
            "-in",
            "c.pem",
            "-out",
            "certonly.p12",
            "-passout",
            "pass:p",
        ],
        dir.path(),
    );
    let only = std::fs::read(dir.path().join("certonly.p12")).unwrap();
    let e = read_pkcs12(&only, &Pin::new("p".into()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no private key"), "{e}");
}

#[test]
fn imported_keys_are_sensitive_and_never_extractable_in_softhsm() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    let t = pkcs11_token(false);
    let dir = tempfile::tempdir().unwrap();
    let bundle = read_pkcs12(&make_p12(dir.path(), false), &Pin::new("p12-secret".into())).unwrap();
    let label = unique("attrs");
    t.import(&label, &bundle).unwrap();
    // Read the attributes back with a raw PKCS#11 session, independently of our code.
    let p = Pkcs11::new(MODULE).unwrap();
    let _ = p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = p
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p.get_token_info(*s).unwrap().label().trim() == LABEL)
        .unwrap();
    let s = p.open_ro_session(slot).unwrap();
    s.login(
        cryptoki::session::UserType::User,
        Some(&cryptoki::types::AuthPin::new(USER_PIN.into())),
    )
    .or_else(|e| match e {
        cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _) => Ok(()),
        e => Err(e),
    })
    .unwrap();
    let h = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()[0];
    let attrs = s
        .get_attributes(h, &[AttributeType::Sensitive, AttributeType::Extractable])
        .unwrap();
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
    // The private exponent cannot be read.
    let secret = s
        .get_attributes(h, &[AttributeType::PrivateExponent])
        .unwrap();
    assert!(
        !secret
            .iter()
            .any(|a| matches!(a, Attribute::PrivateExponent(_))),
        "{secret:?}"
    );
    drop(s);
    t.delete(&label).unwrap();
}

#[test]
fn concurrent_signing_from_many_threads() {
    for (name, t, _keep) in backends() {
        let label = unique("conc");
        t.generate_rsa(&label, 2048).unwrap();
        let key = KeyRef::label(&label);
        let spki = t.public_key(&key).unwrap();
        let pk = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            {
                // aws-lc-rs verifies against the PKCS#1 RSAPublicKey inside the SPKI.
                let s = spki::SubjectPublicKeyInfoRef::try_from(spki.as_slice()).unwrap();
                s.subject_public_key.raw_bytes().to_vec()
            },
        );
        std::thread::scope(|sc| {
            for i in 0..6 {
                let (t, key, pk) = (&t, &key, &pk);
                sc.spawn(move || {
                    for j in 0..25 {
                        let msg = format!("message {i} {j}");
                        let sig = t
                            .sign(
                                key,
                                SignAlgorithm::RsaPkcs1(Hash::Sha256),
                                &Hash::Sha256.digest(msg.as_bytes()),
                            )
                            .unwrap();
                        pk.verify(msg.as_bytes(), &sig)
                            .unwrap_or_else(|_| panic!("{name}: bad signature"));
                    }
                });
            }
        });
        t.delete(&label).unwrap();
    }
}

#[test]
fn capabilities_are_probed() {
    let t = pkcs11_token(false);
    let caps = t.capabilities().unwrap();
    assert!(
        caps.rsa_pkcs1_sign
            && caps.rsa_pss_sign
            && caps.rsa_oaep_decrypt
            && caps.aes_gcm
            && caps.aes_cbc
    );
    assert!(caps.rsa_generate && caps.rsa_max_bits >= 4096);
    assert!(
        caps.mechanisms
            .iter()
            .any(|m| m.name == "CKM_RSA_PKCS" && m.supported && m.detail.contains("sign"))
    );
    let info = t.info().unwrap();
    assert_eq!(info.label, LABEL);
    assert_eq!(info.max_sessions, 4);
    let (_d, soft) = soft_token();
    assert!(soft.capabilities().unwrap().rsa_oaep_sha2 == Some(true));
}
