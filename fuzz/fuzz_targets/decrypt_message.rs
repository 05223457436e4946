//! Any bytes as a message to decrypt, with a fixed key and certificate (Bob's, from the
//! corpus): MIME, base64, BER, EnvelopedData/AuthEnvelopedData, recipient matching, unwrap;
//! and the same bytes opened layer by layer (`open_message`: decrypt, verify, nesting).
#![no_main]

use std::sync::OnceLock;

use hsm::{AesOffload, KeyRef, MemoryToken};
use libfuzzer_sys::fuzz_target;
use smimegw::smime::{Recipient, decrypt_cms, decrypt_message};

struct Bob {
    token: MemoryToken,
    cert: Vec<u8>,
}

fn bob() -> &'static Bob {
    static BOB: OnceLock<Bob> = OnceLock::new();
    BOB.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpora/thunderbird-smime/smime");
        let p12 = std::fs::read(format!("{dir}/Bob.p12")).expect("Bob.p12 from the corpus");
        let bundle = hsm::read_pkcs12(&p12, &hsm::Pin::new("nss".into())).expect("Bob.p12 reads");
        let cert = bundle.chain[0].clone();
        let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/bob.key"))
            .expect("fuzz/bob.key: run fuzz/run, which makes it");
        let token = MemoryToken::from_pem(&pem, "bob", "bob.key").expect("Bob's key");
        Bob { token, cert }
    })
}

fuzz_target!(|data: &[u8]| {
    let b = bob();
    let me = Recipient {
        cert: &b.cert,
        token: &b.token,
        key: KeyRef::label("bob"),
        offload: AesOffload::Host,
    };
    let _ = decrypt_message(data, &me);
    let _ = decrypt_cms(data, &me);
    let _ = smimegw::smime::open::open_message(data, std::slice::from_ref(&me));
});
