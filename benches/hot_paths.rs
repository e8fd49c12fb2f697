//! Criterion benchmarks for functions on the request hot path. Run with
//! `cargo bench --bench hot_paths`. The load comparison against
//! distribution's proxy mode lives beside this file (see docs/benchmarks.md).
//!
//! Keys, certificates, transparency-log entries and the trusted root are
//! generated at setup (no fixture files), mirroring how the
//! integration tests' support code builds signed evidence.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt;
use portcullis::material::{Identity, SigstoreRoot, SubjectMatch, public_key_from_pem};
use portcullis::oci::{Digest, Manifest, Reference};
use portcullis::policy::{Glob, Mode, Policy, PolicySet, Rule};
use portcullis::server::routes::{Query, Route};
use portcullis::trust::{Authority, Material};
use portcullis::upstream::route;
use portcullis::verify::check::{COSIGN_SIGN_PREDICATE, check};
use portcullis::verify::evidence::{LegacySignature, Signature};
use sha2::{Digest as _, Sha256};

fn parsing(c: &mut Criterion) {
    let path = format!(
        "/v2/docker.io/library/nginx/manifests/sha256:{}",
        "a".repeat(64)
    );
    c.bench_function("route_parse_manifest_by_digest", |b| {
        b.iter(|| Route::parse(black_box(&path)))
    });
    c.bench_function("query_parse_ns", |b| {
        b.iter(|| Query::parse(black_box(Some("ns=docker.io"))))
    });
    let lookup = |n: &str| (n == "docker.io").then_some(1u8);
    c.bench_function("route_to_upstream_with_library_prefix", |b| {
        b.iter(|| {
            route(black_box("nginx"), Some("docker.io"), lookup, None, |_| {
                true
            })
        })
    });
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    c.bench_function("digest_parse", |b| {
        b.iter(|| black_box(&digest).parse::<Digest>())
    });
    let glob: Glob = "docker.io/acme/**".parse().unwrap();
    c.bench_function("glob_match_double_star", |b| {
        b.iter(|| glob.matches(black_box("docker.io/acme/team/app")))
    });
}

fn hashing(c: &mut Criterion) {
    let data = vec![7u8; 4 << 20];
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("4MiB", |b| b.iter(|| Digest::sha256_of(black_box(&data))));
    g.finish();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":1}}]}}"#,
        d = Digest::sha256_of(b"x")
    );
    c.bench_function("manifest_parse", |b| {
        b.iter(|| Manifest::parse(black_box(manifest.as_bytes()), None))
    });
}

/// An image manifest, as an upstream would serve it.
fn image_manifest() -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":1}}]}}"#,
        d = Digest::sha256_of(b"bench")
    )
}

/// A one-manifest upstream on loopback: answers every request (one per
/// connection) with `manifest`. Only the warm-up request reaches it.
fn serve_manifest(manifest: String) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let digest = Digest::sha256_of(manifest.as_bytes());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => head.extend_from_slice(&buf[..k]),
                }
            }
            let body = if head.starts_with(b"HEAD ") {
                ""
            } else {
                manifest.as_str()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nDocker-Content-Digest: {digest}\r\nConnection: close\r\n\r\n{body}",
                manifest.len()
            );
        }
    });
    port
}

/// What a manifest request by digest costs once its verdict is cached:
/// `Puller::manifest` (precheck, gate generation, verdict cache lookup
/// keyed by (upstream, repository, digest, generation), metrics).
fn verdict_cache(c: &mut Criterion) {
    let manifest = image_manifest();
    let digest = Digest::sha256_of(manifest.as_bytes());
    let port = serve_manifest(manifest);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[cache]\ndir = \"cache\"\n\n[audit]\nsink = \"audit.jsonl\"\n\n[[upstream]]\nname = \"bench\"\nurl = \"http://127.0.0.1:{port}\"\ninsecure = true\n\n[[policy]]\nname = \"allow-unverified\"\nmatch = [\"**\"]\nallow_unverified = true\n"
    );
    let config = portcullis::Config::from_toml(&text, dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(portcullis::App::build(&config)).unwrap();
    let target = app.target_for("bench/acme/app").unwrap();
    let reference = Reference::Digest(digest);
    // The first request fetches the manifest and decides; it caches the verdict.
    rt.block_on(app.puller.manifest(&target, &reference))
        .unwrap();
    c.bench_function("verdict_cache_hit", |b| {
        b.iter(|| {
            app.puller
                .manifest(black_box(&target), black_box(&reference))
                .now_or_never()
                .expect("a cached verdict is answered without waiting")
                .unwrap()
        })
    });
}

/// Choosing the policy for a repository among 50 (two globs each); the
/// repository matches the last one, so every glob before it is tried.
fn policy_match(c: &mut Criterion) {
    let policies = (0..50)
        .map(|i| Policy {
            name: format!("vendor-{i}"),
            patterns: vec![
                format!("docker.io/vendor{i}/**").parse().unwrap(),
                format!("ghcr.io/vendor{i}/app-*").parse().unwrap(),
            ],
            mode: Mode::Enforce,
            rule: Rule::AllowUnverified,
            attestations: Vec::new(),
            trust_unavailable_allows: false,
        })
        .collect();
    let set = PolicySet::new(policies);
    assert_eq!(
        set.find("docker.io", "vendor49/team/app").unwrap().name,
        "vendor-49"
    );
    c.bench_function("policy_match_50_policies", |b| {
        b.iter(|| set.find(black_box("docker.io"), black_box("vendor49/team/app")))
    });
}

fn p256_key() -> (EcdsaKeyPair, Vec<u8>) {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
        .unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
    // SPKI for a P-256 key: the fixed algorithm prefix, then the uncompressed point.
    let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    spki.extend_from_slice(key.public_key().as_ref());
    (key, spki)
}

fn sign(key: &EcdsaKeyPair, data: &[u8]) -> Vec<u8> {
    key.sign(&SystemRandom::new(), data)
        .unwrap()
        .as_ref()
        .to_vec()
}

/// One cosign `.sig` layer (simple-signing payload, ECDSA P-256 SHA-256)
/// checked against an authority holding the public key, no transparency log.
fn keyed_verification(c: &mut Criterion) {
    let subject = Digest::sha256_of(image_manifest().as_bytes());
    let (key, spki) = p256_key();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(&spki)
    );
    let authority = Authority::new(
        "acme",
        Material::Keys(vec![(
            hex::encode(Sha256::digest(&spki)),
            public_key_from_pem(&pem).unwrap(),
        )]),
    );
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"registry/app"}},"image":{{"docker-manifest-digest":"{subject}"}},"type":"cosign container image signature"}},"optional":null}}"#
    );
    let signature = Signature::Legacy(LegacySignature {
        signature: STANDARD.encode(sign(&key, payload.as_bytes())),
        payload: payload.into(),
        certificate: None,
        chain: None,
        rekor_bundle: None,
    });
    let now = SystemTime::now();
    check(&authority, &signature, &subject, now).unwrap();
    c.bench_function("verify_keyed_signature", |b| {
        b.iter(|| check(&authority, black_box(&signature), &subject, now).unwrap())
    });
}

const OIDC_ISSUER: &str = "https://token.actions.githubusercontent.com";
const IDENTITY: &str = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main";

/// DER of a short UTF8String (the Fulcio issuer extension's value).
fn utf8_string(s: &str) -> Vec<u8> {
    assert!(s.len() < 128, "short form length only");
    let mut out = vec![0x0c, s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

/// A private Fulcio-style CA: its root (DER), and a short-lived leaf for
/// `IDENTITY` with its key.
fn fulcio() -> (Vec<u8>, Vec<u8>, EcdsaKeyPair) {
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    use time::{Duration, OffsetDateTime};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::OrganizationName, "bench");
    ca.distinguished_name
        .push(DnType::CommonName, "bench-fulcio");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = OffsetDateTime::now_utc() - Duration::days(30);
    ca.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
    let root_der = ca.self_signed(&ca_key).unwrap().der().to_vec();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::URI(IDENTITY.try_into().unwrap())];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
    leaf.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
    leaf.not_after = OffsetDateTime::now_utc() + Duration::minutes(5);
    leaf.custom_extensions = vec![
        CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 57264, 1, 1],
            OIDC_ISSUER.as_bytes().to_vec(),
        ),
        CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
            utf8_string(OIDC_ISSUER),
        ),
    ];
    let leaf_der = leaf.signed_by(&leaf_key, &issuer).unwrap().der().to_vec();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &leaf_key.serialize_der())
        .unwrap();
    (root_der, leaf_der, key)
}

/// A Rekor v1 `tlogEntries` item for `body`: the SET, and an inclusion
/// proof in a one-leaf tree with a checkpoint signed by the log's key.
fn tlog_entry(
    log_key: &EcdsaKeyPair,
    log_id: &[u8],
    body: &serde_json::Value,
) -> serde_json::Value {
    let body_bytes = serde_json::to_vec(body).unwrap();
    let body_b64 = STANDARD.encode(&body_bytes);
    let integrated_time = time::OffsetDateTime::now_utc().unix_timestamp() - 60;
    // serde_json's map is sorted, so this is the RFC 8785 form for these keys.
    let signed = serde_json::json!({"body": body_b64, "integratedTime": integrated_time, "logID": hex::encode(log_id), "logIndex": 0});
    let set = sign(log_key, &serde_json::to_vec(&signed).unwrap());
    let root = Sha256::new()
        .chain_update([0u8])
        .chain_update(&body_bytes)
        .finalize();
    let note = format!("rekor.bench - 1\n1\n{}\n", STANDARD.encode(root));
    let mut hint_and_sig = log_id[..4].to_vec();
    hint_and_sig.extend_from_slice(&sign(log_key, note.as_bytes()));
    let checkpoint = format!(
        "{note}\n\u{2014} rekor.bench {}\n",
        STANDARD.encode(hint_and_sig)
    );
    serde_json::json!({
        "logIndex": "0",
        "logId": {"keyId": STANDARD.encode(log_id)},
        "kindVersion": {"kind": "dsse", "version": "0.0.1"},
        "integratedTime": integrated_time.to_string(),
        "inclusionPromise": {"signedEntryTimestamp": STANDARD.encode(set)},
        "inclusionProof": {
            "logIndex": "0", "rootHash": STANDARD.encode(root), "treeSize": "1", "hashes": [],
            "checkpoint": {"envelope": checkpoint},
        },
        "canonicalizedBody": body_b64,
    })
}

/// One cosign v3 keyless signature: a Sigstore bundle v0.3 (DSSE statement
/// about the digest, Fulcio-style certificate, Rekor entry with SET and
/// inclusion proof) checked against a private trusted root and an identity.
fn keyless_verification(c: &mut Criterion) {
    let subject = Digest::sha256_of(image_manifest().as_bytes());
    let (root_der, leaf_der, leaf_key) = fulcio();
    let (log_key, log_spki) = p256_key();
    let log_id = Sha256::digest(&log_spki).to_vec();
    let trusted_root = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [{
            "baseUrl": "https://rekor.bench",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": STANDARD.encode(&log_spki), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": "2020-01-01T00:00:00Z"}},
            "logId": {"keyId": STANDARD.encode(&log_id)},
        }],
        "certificateAuthorities": [{
            "subject": {"organization": "bench", "commonName": "bench-fulcio"},
            "uri": "https://fulcio.bench",
            "certChain": {"certificates": [{"rawBytes": STANDARD.encode(&root_der)}]},
            "validFor": {"start": "2020-01-01T00:00:00Z"},
        }],
        "ctlogs": [],
        "timestampAuthorities": [],
    });
    let payload_type = "application/vnd.in-toto+json";
    let payload = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "registry/app", "digest": {"sha256": subject.hex()}}],
        "predicateType": COSIGN_SIGN_PREDICATE,
        "predicate": {},
    }))
    .unwrap();
    let mut pae = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    pae.extend_from_slice(&payload);
    let sig_b64 = STANDARD.encode(sign(&leaf_key, &pae));
    let envelope = serde_json::json!({
        "payload": STANDARD.encode(&payload), "payloadType": payload_type,
        "signatures": [{"sig": sig_b64, "keyid": ""}],
    });
    let leaf_pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        STANDARD.encode(&leaf_der)
    );
    let body = serde_json::json!({
        "apiVersion": "0.0.1", "kind": "dsse",
        "spec": {
            "envelopeHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(serde_json::to_vec(&envelope).unwrap()))},
            "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&payload))},
            "signatures": [{"signature": sig_b64, "verifier": STANDARD.encode(leaf_pem)}],
        },
    });
    let bundle = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {
            "certificate": {"rawBytes": STANDARD.encode(&leaf_der)},
            "tlogEntries": [tlog_entry(&log_key, &log_id, &body)],
        },
        "dsseEnvelope": envelope,
    })
    .to_string();
    let mut authority = Authority::new(
        "acme-ci",
        Material::Keyless(Identity {
            issuer: OIDC_ISSUER.into(),
            subject: SubjectMatch::Exact(IDENTITY.into()),
        }),
    );
    authority.sigstore = Some(Arc::new(
        SigstoreRoot::from_json(&trusted_root.to_string()).unwrap(),
    ));
    // The private log has no CT log, so there are no SCTs to require.
    authority.require_sct = false;
    authority.require_tlog = true;
    let signature = Signature::Bundle(bundle.into());
    let now = SystemTime::now();
    check(&authority, &signature, &subject, now).unwrap();
    c.bench_function("verify_keyless_bundle", |b| {
        b.iter(|| check(&authority, black_box(&signature), &subject, now).unwrap())
    });
}

criterion_group!(
    benches,
    parsing,
    hashing,
    verdict_cache,
    policy_match,
    keyed_verification,
    keyless_verification
);
criterion_main!(benches);
