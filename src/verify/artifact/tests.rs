use super::*;
use crate::oci::MediaType;

fn blob(media_type: &str, bytes: &[u8]) -> (serde_json::Value, Bytes) {
    let d = Digest::sha256_of(bytes);
    (
        serde_json::json!({"mediaType": media_type, "digest": d.to_string(), "size": bytes.len()}),
        Bytes::copy_from_slice(bytes),
    )
}

fn simple_signing(subject: &Digest) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"r"}},"image":{{"docker-manifest-digest":"{subject}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}

fn statement(subject: &Digest) -> Vec<u8> {
    format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"x","digest":{{"sha256":"{}"}}}}],"predicateType":"p","predicate":{{}}}}"#,
        subject.hex()
    )
    .into_bytes()
}

/// An image manifest with `config` and `layers`, and the blobs it names.
fn artifact(
    config: (serde_json::Value, Bytes),
    layers: Vec<(serde_json::Value, Bytes)>,
    subject: Option<&Digest>,
) -> (Manifest, Vec<(Descriptor, Bytes)>) {
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config.0,
        "layers": layers.iter().map(|l| l.0.clone()).collect::<Vec<_>>(),
    });
    if let Some(s) = subject {
        m["subject"] = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": s.to_string(), "size": 1});
    }
    let bytes = serde_json::to_vec(&m).unwrap();
    let manifest = Manifest::parse(&bytes, None::<&MediaType>).unwrap();
    let blobs = std::iter::once(config)
        .chain(layers)
        .map(|(d, b)| (serde_json::from_value(d).unwrap(), b))
        .collect();
    (manifest, blobs)
}

fn config() -> (serde_json::Value, Bytes) {
    blob("application/vnd.oci.empty.v1+json", b"{}")
}

#[test]
fn configs_without_a_filesystem_of_their_own_pass() {
    let subject = Digest::sha256_of(b"image");
    let layer = blob(SIMPLE_SIGNING, &simple_signing(&subject));
    for c in [
        config(),
        blob(
            "application/vnd.oci.image.config.v1+json",
            br#"{"architecture":"","os":""}"#,
        ),
        cosign_config(&[&layer, &layer]),
    ] {
        let (m, blobs) = artifact(c, vec![layer.clone(), layer.clone()], None);
        assert!(prove(&m, &blobs).is_ok());
    }
}

/// cosign's config for a `.sig` image: its layers' digests as diff ids.
fn cosign_config(layers: &[&(serde_json::Value, Bytes)]) -> (serde_json::Value, Bytes) {
    let ids: Vec<&serde_json::Value> = layers.iter().map(|l| &l.0["digest"]).collect();
    let c = serde_json::json!({"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": ids}});
    blob(
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&c).unwrap(),
    )
}

#[test]
fn a_cosign_signature_manifest_is_proven_an_artifact_about_its_subject() {
    let subject = Digest::sha256_of(b"image");
    let layer = blob(SIMPLE_SIGNING, &simple_signing(&subject));
    let (m, blobs) = artifact(cosign_config(&[&layer]), vec![layer], None);
    assert!(claims(&m));
    let proof = prove(&m, &blobs).unwrap();
    assert_eq!(proof.subjects, BTreeSet::from([subject]));
}

#[test]
fn dsse_statement_and_subject_field_agree() {
    let subject = Digest::sha256_of(b"image");
    let envelope = serde_json::json!({
        "payloadType": IN_TOTO,
        "payload": STANDARD.encode(statement(&subject)),
        "signatures": [{"sig": "AA=="}],
    });
    let (m, blobs) = artifact(
        config(),
        vec![
            blob(DSSE_ENVELOPE, &serde_json::to_vec(&envelope).unwrap()),
            blob(IN_TOTO, &statement(&subject)),
        ],
        Some(&subject),
    );
    assert!(prove(&m, &blobs).is_ok());
}

#[test]
fn a_filesystem_layer_relabelled_as_a_statement_is_not_an_artifact() {
    // A gzip'd tar layer, as an unsigned image has, under a signature media type.
    let tar = [0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03];
    let (m, blobs) = artifact(config(), vec![blob(IN_TOTO, &tar)], None);
    assert!(claims(&m), "the label claims it");
    assert_eq!(
        prove(&m, &blobs).unwrap_err(),
        NotAnArtifact::NotItsDocument {
            media_type: IN_TOTO.into(),
            why: "does not hold an in-toto statement"
        }
    );
}

#[test]
fn documents_about_different_subjects_or_not_the_subject_field_are_refused() {
    let (a, b) = (Digest::sha256_of(b"a"), Digest::sha256_of(b"b"));
    let (m, blobs) = artifact(
        config(),
        vec![
            blob(SIMPLE_SIGNING, &simple_signing(&a)),
            blob(SIMPLE_SIGNING, &simple_signing(&b)),
        ],
        None,
    );
    assert_eq!(
        prove(&m, &blobs).unwrap_err(),
        NotAnArtifact::NoCommonSubject
    );
    let (m, blobs) = artifact(config(), vec![blob(IN_TOTO, &statement(&a))], Some(&b));
    assert_eq!(
        prove(&m, &blobs).unwrap_err(),
        NotAnArtifact::NotAboutItsSubject
    );
}

#[test]
fn a_config_that_is_not_small_json_is_refused() {
    let subject = Digest::sha256_of(b"image");
    let layer = blob(SIMPLE_SIGNING, &simple_signing(&subject));
    let (m, blobs) = artifact(
        blob(
            "application/vnd.oci.image.config.v1+json",
            b"\x00\x01not json",
        ),
        vec![layer.clone()],
        None,
    );
    assert_eq!(prove(&m, &blobs).unwrap_err(), NotAnArtifact::ConfigNotJson);
    // The config of another image (its own diff ids) does not pass either.
    let other = cosign_config(&[&blob(SIMPLE_SIGNING, b"{}")]);
    let (m, blobs) = artifact(other, vec![layer.clone()], None);
    assert_eq!(
        prove(&m, &blobs).unwrap_err(),
        NotAnArtifact::ConfigOfAnotherImage
    );
    let big = vec![b' '; (MAX_ARTIFACT_CONFIG + 1) as usize];
    let (m, _) = artifact(
        blob("application/vnd.oci.image.config.v1+json", &big),
        vec![layer],
        None,
    );
    assert_eq!(
        blobs_to_prove(&m).unwrap_err(),
        NotAnArtifact::ConfigTooLarge(MAX_ARTIFACT_CONFIG + 1)
    );
}

#[test]
fn declared_sizes_past_the_bounds_are_refused_before_any_fetch() {
    let mut layer = blob(SIMPLE_SIGNING, b"{}");
    layer.0["size"] = serde_json::json!(MAX_SIGNATURE_BYTES + 1);
    let (m, _) = artifact(config(), vec![layer], None);
    assert_eq!(
        blobs_to_prove(&m).unwrap_err(),
        NotAnArtifact::LayerTooLarge {
            size: MAX_SIGNATURE_BYTES + 1,
            most: MAX_SIGNATURE_BYTES
        }
    );
}

#[test]
fn a_blob_not_read_whole_proves_nothing() {
    let subject = Digest::sha256_of(b"image");
    let (m, mut blobs) = artifact(
        config(),
        vec![blob(SIMPLE_SIGNING, &simple_signing(&subject))],
        None,
    );
    let (layer, _) = blobs.pop().unwrap();
    assert_eq!(
        prove(&m, &blobs).unwrap_err(),
        NotAnArtifact::NotReadWhole(layer.digest)
    );
}

fn bundle_about(subject: &Digest) -> Vec<u8> {
    let digest = STANDARD.encode(hex::decode(subject.hex()).unwrap());
    serde_json::to_vec(&serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "k"}, "tlogEntries": []},
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": digest},
            "signature": "AAAA",
        },
    }))
    .unwrap()
}

#[test]
fn a_sigstore_bundle_referrer_is_an_artifact_about_the_digest_it_signs() {
    let subject = Digest::sha256_of(b"image");
    let (m, blobs) = artifact(
        config(),
        vec![blob(
            "application/vnd.dev.sigstore.bundle.v0.3+json",
            &bundle_about(&subject),
        )],
        Some(&subject),
    );
    assert!(claims(&m));
    assert_eq!(
        prove(&m, &blobs).unwrap().subjects,
        BTreeSet::from([subject])
    );
}

#[test]
fn ordinary_images_and_platform_indexes_are_not_labelled_artifacts() {
    let image = |layer_type: &str| {
        let bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config().0,
            "layers": [
                blob(SIMPLE_SIGNING, b"{}").0,
                blob(layer_type, b"\x1f\x8b").0,
            ],
        }))
        .unwrap();
        Manifest::parse(&bytes, None).unwrap()
    };
    assert!(
        !claims(&image("application/vnd.oci.image.layer.v1.tar+gzip")),
        "one filesystem layer"
    );
    assert!(claims(&image(DSSE_ENVELOPE)));
    let empty = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config().0, "layers": [],
    }))
    .unwrap();
    assert!(
        !claims(&Manifest::parse(&empty, None).unwrap()),
        "no layers"
    );
    let index = |entry: serde_json::Value| {
        let bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [entry],
        }))
        .unwrap();
        Manifest::parse(&bytes, None).unwrap()
    };
    let d = Digest::sha256_of(b"child").to_string();
    let m = "application/vnd.oci.image.manifest.v1+json";
    assert!(!claims(&index(
        serde_json::json!({"mediaType": m, "digest": d, "size": 1,
        "platform": {"architecture": "amd64", "os": "linux"}})
    )));
    assert!(
        !claims(&index(
            serde_json::json!({"mediaType": m, "digest": d, "size": 1,
        "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "platform": {"architecture": "amd64", "os": "linux"}})
        )),
        "a platform entry"
    );
    assert!(
        !claims(&index(
            serde_json::json!({"mediaType": m, "digest": d, "size": 1})
        )),
        "untyped"
    );
    assert!(claims(&index(
        serde_json::json!({"mediaType": m, "digest": d, "size": 1,
        "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"})
    )));
}

#[test]
fn a_real_artifact_is_fetched_whole_with_its_config_and_each_digest_once() {
    let subject = Digest::sha256_of(b"image");
    let layer = blob(SIMPLE_SIGNING, &simple_signing(&subject));
    let c = cosign_config(&[&layer, &layer]);
    let (m, _) = artifact(c.clone(), vec![layer.clone(), layer.clone()], None);
    let wanted = blobs_to_prove(&m).unwrap();
    let digests: Vec<String> = wanted.iter().map(|d| d.digest.to_string()).collect();
    assert_eq!(
        digests,
        vec![
            c.0["digest"].as_str().unwrap().to_string(),
            layer.0["digest"].as_str().unwrap().to_string()
        ]
    );
}

#[test]
fn declared_sizes_and_counts_are_bounded_exactly_at_their_limits() {
    let subject = Digest::sha256_of(b"image");
    let layer = blob(SIMPLE_SIGNING, &simple_signing(&subject));
    let many = |n: usize| artifact(config(), vec![layer.clone(); n], None).0;
    assert!(blobs_to_prove(&many(MAX_ATTESTATIONS)).is_ok());
    assert_eq!(
        blobs_to_prove(&many(MAX_ATTESTATIONS + 1)).unwrap_err(),
        NotAnArtifact::TooManyLayers(MAX_ATTESTATIONS + 1)
    );
    let sized = |config_size: u64, layer_size: u64| {
        let mut c = config();
        c.0["size"] = serde_json::json!(config_size);
        let mut l = layer.clone();
        l.0["size"] = serde_json::json!(layer_size);
        artifact(c, vec![l], None).0
    };
    assert!(blobs_to_prove(&sized(MAX_ARTIFACT_CONFIG, MAX_SIGNATURE_BYTES)).is_ok());
    assert!(blobs_to_prove(&sized(MAX_ARTIFACT_CONFIG + 1, 10)).is_err());
    assert!(blobs_to_prove(&sized(10, MAX_SIGNATURE_BYTES + 1)).is_err());
    let envelope = |size: u64| {
        let mut l = blob(DSSE_ENVELOPE, b"{}");
        l.0["size"] = serde_json::json!(size);
        l
    };
    let total = |n: usize, each: u64| artifact(config(), vec![envelope(each); n], None).0;
    let each = MAX_ATTESTATION_TOTAL / 4;
    assert!(blobs_to_prove(&total(4, each)).is_ok(), "exactly the total");
    assert_eq!(
        blobs_to_prove(&total(5, each)).unwrap_err(),
        NotAnArtifact::LayersTooLarge(5 * each),
        "past the total"
    );
    assert!(blobs_to_prove(&total(1, MAX_ATTESTATION_BYTES)).is_ok());
    assert!(blobs_to_prove(&total(1, MAX_ATTESTATION_BYTES + 1)).is_err());
}
