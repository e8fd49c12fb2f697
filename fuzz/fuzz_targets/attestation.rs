//! DSSE envelopes and in-toto statements come from any registry writer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::oci::Digest;
use portcullis::verify::attest;
use portcullis::verify::evidence::{Attestation, LegacyAttestation};

fuzz_target!(|data: &[u8]| {
    let subject = Digest::sha256_of(b"subject");
    let _ = attest::parse_statement(data, &subject);
    let bytes = bytes::Bytes::copy_from_slice(data);
    let _ = attest::claimed_predicate_type(&Attestation::Bundle(bytes.clone()));
    let _ = attest::claimed_predicate_type(&Attestation::Legacy(LegacyAttestation {
        envelope: bytes,
        certificate: None,
        chain: None,
        rekor_bundle: None,
    }));
});
