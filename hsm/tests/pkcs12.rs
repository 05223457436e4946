//! PKCS#12 reading that needs no token: published test vectors and tampering.

use hsm::{Pin, read_pkcs12};

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn rfc9579_pbmac1_file_reads() {
    let p12 = data("rfc9579-a1.p12");
    let bundle = read_pkcs12(&p12, &Pin::new("1234".into())).unwrap();
    assert_eq!(bundle.chain.len(), 1);
    assert!(matches!(bundle.kind(), hsm::KeyKind::Rsa { .. }));
    let e = read_pkcs12(&p12, &Pin::new("4321".into()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrong password"), "{e}");
}

#[test]
fn a_changed_byte_fails_the_integrity_check() {
    let mut p12 = data("rfc9579-a1.p12");
    // A byte inside the first encrypted SafeContents.
    p12[200] ^= 1;
    let e = read_pkcs12(&p12, &Pin::new("1234".into()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("integrity"), "{e}");
}

#[test]
fn truncations_never_panic() {
    let p12 = data("rfc9579-a1.p12");
    for cut in (0..p12.len()).step_by(37) {
        let e = read_pkcs12(&p12[..cut], &Pin::new("1234".into())).unwrap_err();
        assert!(e.to_string().contains("PKCS#12"), "{e}");
    }
}
