//! Sigstore bundles (referrers) come from any registry writer.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = portcullis::verify::sigstore::parse_bundle(text);
    }
});
