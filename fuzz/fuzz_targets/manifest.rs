//! Manifests and indexes come from upstreams.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::oci::{Manifest, MediaType};

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::parse(data, None);
    if let Ok(m) = MediaType::parse("application/vnd.oci.image.index.v1+json") {
        if let Ok(parsed) = Manifest::parse(data, Some(&m)) {
            let _ = portcullis::verify::is_signature_artifact(&parsed);
        }
    }
});
