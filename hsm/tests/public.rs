//! Host public-key operations checked against OpenSSL: signatures OpenSSL made verify (and
//! altered ones do not), and keys we encrypt OpenSSL decrypts.

mod common;

use std::path::Path;

use common::openssl;
use hsm::public::{encrypt_key, public_key_kind, verify_digest};
use hsm::{Hash, KeyKind, KeyTransport, SignAlgorithm};

fn keypair(dir: &Path, name: &str, spec: &[&str]) -> Vec<u8> {
    let key = format!("{name}.pem");
    let mut args = vec!["genpkey", "-out", key.as_str()];
    args.extend_from_slice(spec);
    openssl(&args, dir);
    let der = format!("{name}.spki");
    openssl(
        &[
            "pkey", "-in", &key, "-pubout", "-outform", "DER", "-out", &der,
        ],
        dir,
    );
    std::fs::read(dir.join(der)).expect("openssl wrote the public key")
}

#[test]
fn signatures_made_by_openssl_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("msg"), b"a message from openssl").unwrap();
    let rsa = keypair(
        d,
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let ec = keypair(
        d,
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    );
    assert_eq!(public_key_kind(&rsa).unwrap(), KeyKind::Rsa { bits: 2048 });
    assert_eq!(public_key_kind(&ec).unwrap(), KeyKind::EcP384);
    let cases: [(&str, &[u8], SignAlgorithm, &[&str]); 4] = [
        (
            "rsa",
            &rsa,
            SignAlgorithm::RsaPkcs1(Hash::Sha256),
            &["-sha256"],
        ),
        (
            "rsa",
            &rsa,
            SignAlgorithm::RsaPkcs1(Hash::Sha512),
            &["-sha512"],
        ),
        (
            "rsa",
            &rsa,
            SignAlgorithm::RsaPss(Hash::Sha256),
            &[
                "-sha256",
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
            ],
        ),
        ("ec", &ec, SignAlgorithm::Ecdsa(Hash::Sha384), &["-sha384"]),
    ];
    let digest_of = |h: Hash| h.digest(b"a message from openssl");
    for (key, spki, alg, opts) in cases {
        let mut args = vec!["dgst"];
        args.extend_from_slice(opts);
        let keyfile = format!("{key}.pem");
        args.extend(["-sign", keyfile.as_str(), "-out", "sig", "msg"]);
        openssl(&args, d);
        let mut sig = std::fs::read(d.join("sig")).unwrap();
        let digest = digest_of(alg.hash());
        verify_digest(spki, alg, &digest, &sig).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert!(
            matches!(
                verify_digest(spki, alg, &digest[..5], &sig),
                Err(hsm::Error::Invalid(_))
            ),
            "{alg}: a digest of the wrong length"
        );
        let last = sig.len() - 1;
        sig[last] ^= 1;
        assert!(
            matches!(
                verify_digest(spki, alg, &digest, &sig),
                Err(hsm::Error::BadSignature)
            ),
            "{alg}: altered signature"
        );
    }
}

#[test]
fn keys_we_encrypt_openssl_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let spki = keypair(
        d,
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
    );
    let cek: Vec<u8> = (0u8..32).collect();
    let cases: [(KeyTransport, &[&str]); 3] = [
        (KeyTransport::RsaPkcs1, &[]),
        (
            KeyTransport::RsaOaep {
                hash: Hash::Sha1,
                mgf1: Hash::Sha1,
                label: None,
            },
            &["-pkeyopt", "rsa_padding_mode:oaep"],
        ),
        (
            KeyTransport::RsaOaep {
                hash: Hash::Sha256,
                mgf1: Hash::Sha256,
                label: None,
            },
            &[
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
            ],
        ),
    ];
    for (transport, opts) in cases {
        let blob = encrypt_key(&spki, &transport, &cek).unwrap();
        assert_eq!(blob.len(), 384);
        std::fs::write(d.join("blob"), &blob).unwrap();
        let mut args = vec![
            "pkeyutl", "-decrypt", "-inkey", "rsa.pem", "-in", "blob", "-out", "cek",
        ];
        args.extend_from_slice(opts);
        openssl(&args, d);
        assert_eq!(std::fs::read(d.join("cek")).unwrap(), cek, "{transport}");
    }
    let mixed = KeyTransport::RsaOaep {
        hash: Hash::Sha256,
        mgf1: Hash::Sha1,
        label: None,
    };
    assert!(matches!(
        encrypt_key(&spki, &mixed, &cek),
        Err(hsm::Error::Unsupported(_))
    ));
    assert!(encrypt_key(b"not a key", &KeyTransport::RsaPkcs1, &cek).is_err());
}
