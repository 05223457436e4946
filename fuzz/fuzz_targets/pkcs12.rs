//! Any bytes as a PKCS#12 file: the BER reader, MAC, PBES2 and legacy decryption, bags.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hsm::read_pkcs12(data, &hsm::Pin::new("nss".into()));
});
