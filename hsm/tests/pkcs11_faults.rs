//! Failure handling of the PKCS#11 backend: wrong module, wrong PIN, unknown token, and a token
//! that goes away mid-use and comes back. One test, run in order, in its own process (PKCS#11
//! module state is process-wide).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use hsm::{Error, Hash, KeyRef, PinSource, Pkcs11Token, SignAlgorithm, Token};

#[test]
fn failures_are_clear_and_the_pool_recovers() {
    let fix = softhsm();

    // A module path that does not exist.
    let mut o = pkcs11_options(false);
    o.module = "/nonexistent/libnothing.so".into();
    let e = Pkcs11Token::open(o).unwrap_err();
    assert!(matches!(e, Error::Module { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/libnothing.so"), "{e}");

    // A file that is not a PKCS#11 module.
    let mut o = pkcs11_options(false);
    o.module = "/etc/hostname".into();
    let e = Pkcs11Token::open(o).unwrap_err();
    assert!(e.to_string().contains("cannot load PKCS#11 module"), "{e}");

    // A wrong PIN: named, never echoed.
    let mut o = pkcs11_options(false);
    o.pin = Some(PinSource::Value(zeroize::Zeroizing::new(
        "not-the-pin-9876".into(),
    )));
    let e = Pkcs11Token::open(o).unwrap_err();
    assert!(matches!(e, Error::WrongPin { .. }), "{e}");
    assert!(
        !e.to_string().contains("9876") && !format!("{e:?}").contains("9876"),
        "{e}"
    );

    // A token label that is not there lists what is.
    let mut o = pkcs11_options(false);
    o.token = Some("no-such-token".into());
    let e = Pkcs11Token::open(o).unwrap_err();
    assert!(
        e.to_string().contains("no-such-token") && e.to_string().contains(LABEL),
        "{e}"
    );

    // A PIN file that is missing.
    let mut o = pkcs11_options(false);
    o.pin = Some(PinSource::File("/nonexistent/pin".into()));
    let e = Pkcs11Token::open(o).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/pin"), "{e}");

    // The token goes away mid-use and comes back.
    let t = pkcs11_token(false);
    let label = unique("fault");
    t.generate_rsa(&label, 2048).unwrap();
    let key = KeyRef::label(&label);
    let alg = SignAlgorithm::RsaPkcs1(Hash::Sha256);
    let digest = Hash::Sha256.digest(b"x");
    t.sign(&key, alg, &digest).unwrap();

    let tokens = fix.dir.join("tokens");
    let away = fix.dir.join("tokens-away");
    std::fs::rename(&tokens, &away).unwrap();
    std::fs::create_dir(&tokens).unwrap();
    let mut saw_unavailable = false;
    let mut other_errors = Vec::new();
    for _ in 0..20 {
        match t.sign(&key, alg, &digest) {
            Err(e @ Error::Unavailable { .. }) => {
                assert!(e.is_temporary());
                assert!(e.to_string().contains("unavailable"), "{e}");
                saw_unavailable = true;
                break;
            }
            Err(e) => other_errors.push(e.to_string()),
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    std::fs::remove_dir(&tokens).unwrap();
    std::fs::rename(&away, &tokens).unwrap();
    assert!(
        saw_unavailable,
        "token removal not noticed; other errors: {other_errors:?}"
    );

    // Back: the next calls reopen the module, log in again and succeed.
    let mut recovered = false;
    for _ in 0..50 {
        match t.sign(&key, alg, &digest) {
            Ok(sig) => {
                assert_eq!(sig.len(), 256);
                recovered = true;
                break;
            }
            Err(e) => {
                assert!(
                    e.is_temporary() || matches!(e, Error::NotFound { .. }),
                    "unexpected: {e}"
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    assert!(
        recovered,
        "the pool did not recover after the token came back"
    );

    // A deliberate logout (a tamper): the sessions close; whoever is allowed to use the token
    // next logs in again.
    t.logout().unwrap();
    t.logout().unwrap();
    assert_eq!(t.sign(&key, alg, &digest).unwrap().len(), 256);
    t.delete(&label).unwrap();
}
