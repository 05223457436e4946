//! Any bytes as a message to verify: MIME parsing, multipart splitting, BER, SignedData.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = smimegw::smime::verify_message(data);
    let _ = smimegw::smime::verify_cms(data, Some(b"content"));
});
