//! cosign simple-signing payloads come from any registry writer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::oci::Digest;

fuzz_target!(|data: &[u8]| {
    let subject = Digest::sha256_of(b"subject");
    let _ = portcullis::verify::legacy::check_payload(data, &subject);
});
