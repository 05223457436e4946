//! Signature verification (the cryptographic part) against the corpora, checked against the
//! OpenSSL oracle written beside them (shared/corpora/thunderbird-smime/OPENSSL_ORACLE.tsv).
#![allow(clippy::unwrap_used)]

mod common;

use common::corpus;
use smimegw::smime::{SmimeError, verify_message};

struct Row {
    file: String,
    layer: String,
    verdict: String,
}

fn oracle() -> Vec<Row> {
    let tsv = std::fs::read_to_string(corpus("thunderbird-smime/OPENSSL_ORACLE.tsv")).unwrap();
    tsv.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("file\t"))
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            Row {
                file: c[0].into(),
                layer: c[1].into(),
                verdict: c[2].into(),
            }
        })
        .collect()
}

#[test]
fn corpus_signatures_match_the_openssl_oracle() {
    let mut checked = 0;
    for row in oracle() {
        let signed = row.layer == "multipart/signed" || row.layer == "pkcs7-mime;signed-data";
        if !signed {
            continue;
        }
        let msg = std::fs::read(corpus(&format!("thunderbird-smime/{}", row.file))).unwrap();
        let result = verify_message(&msg);
        match row.verdict.as_str() {
            // OpenSSL verified signature and chain: the signature must hold.
            "ok" => {
                let v = result.unwrap_or_else(|e| panic!("{}: {e}", row.file));
                assert!(
                    v.signers.iter().all(|s| s.valid),
                    "{}: {:?}",
                    row.file,
                    v.signers
                );
                assert_eq!(v.detached, row.layer == "multipart/signed", "{}", row.file);
            }
            "content-mismatch" => {
                let v = result.unwrap_or_else(|e| panic!("{}: {e}", row.file));
                let s = &v.signers[0];
                assert!(!s.valid, "{}", row.file);
                assert!(
                    s.reason
                        .as_deref()
                        .unwrap_or("")
                        .contains("message digest mismatch"),
                    "{}: {:?}",
                    row.file,
                    s.reason
                );
            }
            "fail: application/pgp-signature" => {
                assert!(
                    matches!(result, Err(SmimeError::Unsupported(_))),
                    "{}: {result:?}",
                    row.file
                );
            }
            // Chain problems: not this layer's question; the signature itself is checked.
            v if v.starts_with("fail:") => {
                let v = result.unwrap_or_else(|e| panic!("{}: {e}", row.file));
                assert!(!v.signers.is_empty());
            }
            other => panic!("{}: unknown oracle verdict {other}", row.file),
        }
        checked += 1;
    }
    assert!(checked >= 60, "only {checked} signed messages checked");
}

#[test]
fn the_signed_entity_comes_back_exactly_as_received() {
    let msg = std::fs::read(corpus(
        "thunderbird-smime/smime/alice.dsig.SHA256.multipart.eml",
    ))
    .unwrap();
    let v = verify_message(&msg).unwrap();
    let text = String::from_utf8(v.entity.clone()).unwrap();
    assert!(text.starts_with("Content-Type: text/plain; charset=utf-8; format=flowed\r\n"));
    assert!(text.ends_with("This is a test message from Alice to Bob.\r\n"));
    let pos = msg
        .windows(v.entity.len())
        .position(|w| w == v.entity.as_slice());
    assert!(pos.is_some(), "the entity is a slice of the input");
    let s = &v.signers[0];
    assert_eq!(s.digest, Some(hsm::Hash::Sha256));
    assert!(s.signing_time.is_some());
    assert!(s.cert.is_some());
}

#[test]
fn truncated_and_garbled_signatures_never_panic() {
    let msg = std::fs::read(corpus(
        "thunderbird-smime/smime/alice.sig.SHA256.opaque.eml",
    ))
    .unwrap();
    let entity = smimegw::smime::mime::Entity::parse(&msg).unwrap();
    let der = entity.decoded_body().unwrap().into_owned();
    let header = b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\n\r\n";
    for cut in (0..der.len()).step_by(23) {
        let b64 = smimegw::smime::mime::base64_encode(&der[..cut]);
        let m = [&header[..], &b64].concat();
        if let Ok(v) = verify_message(&m) {
            assert!(
                v.signers.iter().all(|s| !s.valid),
                "cut at {cut} still valid"
            );
        }
    }
    let mut flipped = der.clone();
    for i in (0..flipped.len()).step_by(7) {
        flipped[i] ^= 0x55;
        let b64 = smimegw::smime::mime::base64_encode(&flipped);
        let m = [&header[..], &b64].concat();
        if let Ok(v) = verify_message(&m) {
            let _ = v.signers.iter().all(|s| s.valid);
        }
        flipped[i] ^= 0x55;
    }
}

/// 2026-06-01T00:00:00Z: inside the corpus certificates' validity (2026-01-26 to 2031-01-26).
const PINNED: u64 = 1_780_272_000;
/// 2032-01-01: after they expired.
const LATER: u64 = 1_956_528_000;

fn test_ca() -> Vec<u8> {
    common::pem_der(&corpus("thunderbird-smime/smime/TestCA.pem"))
}

#[test]
fn alices_signatures_are_trusted_under_the_test_ca_at_the_pinned_time() {
    use smimegw::smime::trust::check_signer;
    let ca = test_ca();
    let mut checked = 0;
    for row in oracle() {
        if row.verdict != "ok" || !row.file.starts_with("smime/") {
            continue;
        }
        let msg = std::fs::read(corpus(&format!("thunderbird-smime/{}", row.file))).unwrap();
        let v = verify_message(&msg).unwrap();
        let from = smimegw::smime::mime::Entity::parse(&msg)
            .unwrap()
            .field("From")
            .and_then(|f| smimegw::mailbox::from_value(f).ok())
            .map(|a| a.to_string());
        for s in &v.signers {
            let cert = s.cert.as_ref().unwrap();
            check_signer(
                cert,
                &v.certificates,
                std::slice::from_ref(&ca),
                PINNED,
                from.as_deref(),
            )
            .unwrap_or_else(|why| panic!("{}: {why}", row.file));
            let late = check_signer(
                cert,
                &v.certificates,
                std::slice::from_ref(&ca),
                LATER,
                None,
            );
            assert!(late.unwrap_err().contains("expired"), "{}", row.file);
        }
        checked += 1;
    }
    assert!(checked >= 20, "{checked}");

    // Another CA, another sender.
    let msg = std::fs::read(corpus(
        "thunderbird-smime/smime/alice.sig.SHA256.opaque.eml",
    ))
    .unwrap();
    let v = verify_message(&msg).unwrap();
    let cert = v.signers[0].cert.clone().unwrap();
    let fran = hsm::read_pkcs12(
        &std::fs::read(corpus("thunderbird-smime/smime-interop/Fran.p12")).unwrap(),
        &hsm::Pin::new("nss".into()),
    )
    .unwrap();
    let other_ca = fran.chain.last().unwrap().clone();
    let e = check_signer(&cert, &v.certificates, &[other_ca], PINNED, None).unwrap_err();
    assert!(e.contains("does not chain to a trusted CA"), "{e}");
    let e = check_signer(
        &cert,
        &v.certificates,
        &[test_ca()],
        PINNED,
        Some("mallory@example.com"),
    )
    .unwrap_err();
    assert!(e.contains("does not name the From address"), "{e}");
    assert_eq!(
        smimegw::mailbox::from_value("Alice <alice@example.com>").map(|a| a.to_string()),
        Ok("alice@example.com".to_string())
    );
    assert!(smimegw::mailbox::from_value("nobody").is_err());
}
