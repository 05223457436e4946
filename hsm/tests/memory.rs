//! The key-file token: PEM keys in the forms OpenSSL writes them.

mod common;

use common::openssl;
use hsm::public::{encrypt_key, verify_digest};
use hsm::{AesOffload, Hash, KeyKind, KeyRef, KeyTransport, MemoryToken, SignAlgorithm, Token};

#[test]
fn pem_keys_in_every_form_sign_and_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(&["genpkey", "-algorithm", "RSA", "-out", "pkcs8.pem"], d);
    openssl(
        &[
            "pkey",
            "-in",
            "pkcs8.pem",
            "-traditional",
            "-out",
            "pkcs1.pem",
        ],
        d,
    );
    openssl(
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sec1.pem",
        ],
        d,
    );
    let cases = [
        ("pkcs8.pem", SignAlgorithm::RsaPss(Hash::Sha256)),
        ("pkcs1.pem", SignAlgorithm::RsaPkcs1(Hash::Sha384)),
        ("sec1.pem", SignAlgorithm::Ecdsa(Hash::Sha256)),
    ];
    for (file, alg) in cases {
        let pem = std::fs::read(d.join(file)).unwrap();
        if file == "pkcs1.pem" {
            assert!(String::from_utf8_lossy(&pem).contains("BEGIN RSA PRIVATE KEY"));
        }
        let t = MemoryToken::from_pem(&pem, "k", file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let key = KeyRef::label("k");
        let spki = t.public_key(&key).unwrap();
        let digest = alg.hash().digest(b"memory token");
        let sig = t.sign(&key, alg, &digest).unwrap();
        verify_digest(&spki, alg, &digest, &sig).unwrap_or_else(|e| panic!("{file}: {e}"));
        if let KeyKind::Rsa { .. } = t.kind() {
            let cek = [9u8; 16];
            let blob = encrypt_key(&spki, &KeyTransport::RsaPkcs1, &cek).unwrap();
            let k = t
                .unwrap_key(&key, &KeyTransport::RsaPkcs1, &blob, 16, AesOffload::Token)
                .unwrap();
            assert_eq!(k.len(), 16);
        }
        assert!(t.sign(&KeyRef::label("other"), alg, &digest).is_err());
        assert!(t.generate_rsa("x", 2048).is_err());
    }
    openssl(
        &[
            "pkey",
            "-in",
            "pkcs8.pem",
            "-aes256",
            "-passout",
            "pass:x",
            "-out",
            "enc.pem",
        ],
        d,
    );
    let e = MemoryToken::from_pem(&std::fs::read(d.join("enc.pem")).unwrap(), "k", "enc.pem")
        .unwrap_err()
        .to_string();
    assert!(e.contains("enc.pem is encrypted"), "{e}");
    let e = MemoryToken::from_pem(b"hello", "k", "junk.pem")
        .unwrap_err()
        .to_string();
    assert!(e.contains("junk.pem"), "{e}");
}
