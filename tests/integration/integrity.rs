//! Attacks on the promise that in enforce mode no byte policy did not allow
//! reaches a client: through a disguised "signature artifact", a permission
//! that outlived the decision that granted it, an exception, or a ranged
//! read of a blob still being filled.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use portcullis::clock::ManualClock;

use crate::support::cosign::{self, VendorKey};
use crate::support::image::{self, Blob, OCI_INDEX, OCI_MANIFEST};
use crate::support::scripted::{Fault, Scripted};
use crate::support::skopeo::Skopeo;
use crate::support::*;

/// A real registry and a proxy requiring Acme's key for `local/acme/**`
/// ([`acme_config`]), which no policy allows anything else from.
struct Setup {
    _registry: Registry,
    proxy: Proxy,
    acme: VendorKey,
    pusher: Pusher,
}

/// A proxy in a folder holding `acme`'s key, requiring it for
/// `local/acme/**` from `registry` (upstream `local`).
fn acme_config(registry: &Registry, acme: &VendorKey) -> ProxyConfig {
    let dir = tempfile::tempdir().unwrap();
    acme.write_public(dir.path(), "acme.pub");
    ProxyConfig::new()
        .in_dir(dir)
        .upstream("local", &registry.url())
        .authority(Authority::keys("acme", &["acme.pub"]))
        .policy(Policy::signed_by("acme", "local/acme/**", &["acme"]))
}

async fn setup() -> Setup {
    let registry = Registry::start().await;
    let acme = VendorKey::generate();
    let proxy = Proxy::start(acme_config(&registry, &acme)).await;
    let pusher = Pusher::new(&registry.url());
    Setup {
        _registry: registry,
        proxy,
        acme,
        pusher,
    }
}

/// The first audit event matching `want`, waiting a little for the writer.
async fn audit_line(
    proxy: &Proxy,
    want: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    for _ in 0..100 {
        if let Some(e) = proxy.audit_events().into_iter().find(|e| want(e)) {
            return Some(e);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

impl Setup {
    async fn status(&self, path: &str) -> u16 {
        self.proxy.get(path).await.status().as_u16()
    }

    /// Replaces the Acme key with another one and reloads: what Acme signed
    /// no longer verifies.
    async fn rotate_acme_key(&self) {
        let other = VendorKey::generate();
        other.write_public(self.proxy.dir.path(), "acme.pub");
        let (status, body) = self.proxy.admin_reload(ADMIN_TOKEN).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// An image with one real root-filesystem layer (a gzip'd tar holding one
/// file), its layer typed `layer_type`: with a signature media type it is an
/// unsigned image disguised as a "signature artifact".
fn rootfs_image(seed: u64, layer_type: &str) -> image::Image {
    use std::io::Write as _;
    let data = format!("seed {seed}\n");
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "etc/portcullis-test", data.as_bytes())
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let layer = Blob::new(layer_type, gz.finish().unwrap());
    let config = Blob::new(
        "application/vnd.oci.image.config.v1+json",
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [image::sha256(&tar)]},
        }))
        .unwrap(),
    );
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }))
    .unwrap();
    image::Image {
        digest: image::sha256(&manifest),
        config,
        layers: vec![layer],
        media_type: OCI_MANIFEST.into(),
        manifest,
    }
}

fn disguised(seed: u64) -> image::Image {
    rootfs_image(seed, "application/vnd.in-toto+json")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsigned_image_labelled_as_a_signature_artifact_is_denied_and_none_of_its_blobs_flow() {
    let s = setup().await;
    let img = disguised(900);
    s.pusher.image("acme/app", "v1", &img).await;
    assert_eq!(
        s.proxy.answer("/v2/local/acme/app/manifests/v1").await,
        (403, Some("unsigned".into())),
        "judged as the image it is"
    );
    for b in img.blobs() {
        assert_eq!(
            s.status(&format!("/v2/local/acme/app/blobs/{}", b.digest))
                .await,
            403,
            "blob {} of the disguised image",
            b.media_type
        );
    }
    // The image library podman and CRI-O use would unpack the layer as a root filesystem.
    let skopeo = Skopeo::new();
    let store = skopeo.dest("storage");
    let dest = format!(
        "containers-storage:[vfs@{}+{}]localhost/disguised:v1",
        store.join("root").display(),
        store.join("run").display()
    );
    let out = skopeo
        .copy(
            &[],
            &format!("docker://{}/local/acme/app:v1", s.proxy.host()),
            &dest,
        )
        .await;
    assert!(!out.status.success(), "skopeo must not get the image");
    // The same client and store take a signed image: the refusal is the proxy's.
    let signed = rootfs_image(899, "application/vnd.oci.image.layer.v1.tar+gzip");
    s.pusher.image("acme/app", "signed", &signed).await;
    let sig = s.acme.sign(&signed.digest, "registry/acme/app");
    cosign::push_signatures(&s.pusher, "acme/app", &signed.digest, &[sig]).await;
    let ok = skopeo
        .copy(
            &[],
            &format!("docker://{}/local/acme/app:signed", s.proxy.host()),
            &dest.replace("disguised", "signed"),
        )
        .await;
    crate::support::skopeo::assert_success("copy of the signed image", &ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_signature_artifact_still_passes_through_with_its_documents() {
    let s = setup().await;
    let img = image::Image::oci(901, &[100]);
    s.pusher.image("acme/app", "v1", &img).await;
    let layer = s.acme.sign(&img.digest, "registry/acme/app");
    let payload = layer.payload.clone();
    cosign::push_signatures(&s.pusher, "acme/app", &img.digest, &[layer]).await;
    let sig = s
        .proxy
        .get_manifest(&format!(
            "/v2/local/acme/app/manifests/{}",
            cosign::sig_tag(&img.digest)
        ))
        .await;
    assert_eq!(sig.status(), 200, "downstream verifiers get the .sig");
    let manifest: serde_json::Value = sig.json().await.unwrap();
    let digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let r = s
        .proxy
        .get(&format!("/v2/local/acme/app/blobs/{digest}"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), payload);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_the_key_retires_the_blob_permissions_of_the_images_it_allowed() {
    let s = setup().await;
    let img = image::Image::oci(902, &[5000]);
    s.pusher.image("acme/app", "v1", &img).await;
    let sig = s.acme.sign(&img.digest, "registry/acme/app");
    cosign::push_signatures(&s.pusher, "acme/app", &img.digest, &[sig]).await;
    assert_eq!(
        s.proxy.answer("/v2/local/acme/app/manifests/v1").await.0,
        200
    );
    let layer = format!("/v2/local/acme/app/blobs/{}", img.layers[0].digest);
    assert_eq!(s.status(&layer).await, 200);

    s.rotate_acme_key().await;
    assert_eq!(
        s.proxy.answer("/v2/local/acme/app/manifests/v1").await,
        (403, Some("untrusted_signer".into()))
    );
    for b in img.blobs() {
        let path = format!("/v2/local/acme/app/blobs/{}", b.digest);
        assert_eq!(s.status(&path).await, 403, "GET {}", b.media_type);
        assert_eq!(s.proxy.head(&path).await.status(), 403, "HEAD");
        let ranged = s
            .proxy
            .client
            .get(format!("{}{path}", s.proxy.url()))
            .header("range", "bytes=0-9")
            .send()
            .await
            .unwrap();
        assert_eq!(ranged.status(), 403, "Range");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_the_key_retires_what_a_signed_index_authorised_for_its_children() {
    let s = setup().await;
    let child = image::Image::oci(903, &[100]);
    let index = image::Index::new(OCI_INDEX, vec![child.clone()]);
    s.pusher.index("acme/multi", "v1", &index).await;
    let sig = s.acme.sign(&index.digest, "registry/acme/multi");
    cosign::push_signatures(&s.pusher, "acme/multi", &index.digest, &[sig]).await;
    assert_eq!(
        s.proxy.answer("/v2/local/acme/multi/manifests/v1").await.0,
        200
    );
    let child_path = format!("/v2/local/acme/multi/manifests/{}", child.digest);
    assert_eq!(
        s.proxy.answer(&child_path).await.0,
        200,
        "named by the index"
    );
    let layer = format!("/v2/local/acme/multi/blobs/{}", child.layers[0].digest);
    assert_eq!(s.status(&layer).await, 200);

    s.rotate_acme_key().await;
    assert_eq!(
        s.proxy.answer(&child_path).await,
        (403, Some("unsigned".into())),
        "the child has no signature of its own and its index is no longer allowed"
    );
    assert_eq!(s.status(&layer).await, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_index_allows_its_child_even_after_someone_asked_for_the_child_directly() {
    let s = setup().await;
    let child = image::Image::oci(904, &[100]);
    let index = image::Index::new(OCI_INDEX, vec![child.clone()]);
    s.pusher.index("acme/release", "v1", &index).await;
    let sig = s.acme.sign(&index.digest, "registry/acme/release");
    cosign::push_signatures(&s.pusher, "acme/release", &index.digest, &[sig]).await;
    let child_path = format!("/v2/local/acme/release/manifests/{}", child.digest);
    assert_eq!(
        s.proxy.answer(&child_path).await,
        (403, Some("unsigned".into())),
        "asked for directly, the child has no signature"
    );
    assert_eq!(
        s.proxy
            .answer("/v2/local/acme/release/manifests/v1")
            .await
            .0,
        200
    );
    assert_eq!(
        s.proxy.answer(&child_path).await.0,
        200,
        "reached through its signed index, the cached denial does not stand"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_exception_admits_only_the_blobs_of_the_manifest_it_pins() {
    let registry = Registry::start().await;
    let pinned = image::Image::oci(905, &[100]);
    let other = image::Image::oci(906, &[100]);
    let config = ProxyConfig::new()
        .upstream("local", &registry.url())
        .policy(Policy::deny("acme", "local/acme/**"))
        .exception(
            Exception::pinned(
                "local/vendor/app",
                &pinned.digest,
                "2099-01-01T00:00:00Z",
                "RISK-1",
                "unsigned vendor build",
            )
            .name("vendor-app"),
        );
    let proxy = Proxy::start(config).await;
    let pusher = Pusher::new(&registry.url());
    pusher.image("vendor/app", "v1", &pinned).await;
    pusher.image("vendor/app", "v2", &other).await;
    let (status, _) = proxy.answer("/v2/local/vendor/app/manifests/v1").await;
    assert_eq!(status, 200, "the pinned digest is admitted");
    for b in pinned.blobs() {
        let r = proxy
            .get(&format!("/v2/local/vendor/app/blobs/{}", b.digest))
            .await;
        assert_eq!(r.status(), 200, "blob of the pinned manifest");
    }
    assert_eq!(
        proxy.answer("/v2/local/vendor/app/manifests/v2").await,
        (403, Some("no_policy".into()))
    );
    for b in other.blobs() {
        let r = proxy
            .get(&format!("/v2/local/vendor/app/blobs/{}", b.digest))
            .await;
        assert_eq!(
            r.status(),
            403,
            "blob of a manifest the exception does not pin"
        );
    }
    assert_eq!(
        proxy.upstream_requests("blob").await,
        pinned.blobs().count() as f64,
        "only the pinned image's blobs were fetched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_range_of_a_blob_still_filling_is_never_completed_with_unverified_bytes() {
    let upstream = Scripted::start().await;
    let config = ProxyConfig::new()
        .upstream_with(Upstream::new("s", &upstream.url()).timeouts("1s", "5s", "5s"))
        .allow_all();
    let proxy = Proxy::start(config).await;
    let bytes = image::random_bytes(907, 300_000);
    let digest = image::sha256(&bytes);
    upstream.put(&digest, "application/octet-stream", &bytes);
    upstream.set(Fault::WrongLastByteLate);
    let ranged = proxy
        .client
        .get(format!("{}/v2/s/app/blobs/{digest}", proxy.url()))
        .header("range", "bytes=0-99")
        .send()
        .await;
    let completed = match ranged {
        Ok(r) if r.status() == 206 => {
            let body = tokio::time::timeout(Duration::from_secs(10), r.bytes())
                .await
                .unwrap();
            body.ok().map(|b| b.len())
        }
        Ok(r) => panic!("unexpected status {}", r.status()),
        Err(_) => None,
    };
    assert_eq!(
        completed, None,
        "the range must not complete before the digest check (which fails)"
    );
    let hex = digest.trim_start_matches("sha256:");
    assert!(
        files_under(&proxy.cache_dir())
            .iter()
            .all(|p| p.file_name().is_none_or(|n| n != hex)),
        "nothing stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decision_finishing_under_an_older_gate_authorises_no_children_or_blobs() {
    let upstream = Scripted::start().await;
    let acme = VendorKey::generate();
    let dir = tempfile::tempdir().unwrap();
    acme.write_public(dir.path(), "acme.pub");
    let config = ProxyConfig::new()
        .in_dir(dir)
        .upstream_with(Upstream::new("s", &upstream.url()).timeouts("1s", "10s", "10s"))
        .authority(Authority::keys("acme", &["acme.pub"]))
        .policy(Policy::signed_by("acme", "**", &["acme"]));
    let proxy = Proxy::start(config).await;
    let child = image::Image::oci(908, &[100]);
    let index = image::Index::new(OCI_INDEX, vec![child.clone()]);
    for b in child.blobs() {
        upstream.put(&b.digest, "application/octet-stream", &b.bytes);
    }
    upstream.put(&child.digest, OCI_MANIFEST, &child.manifest);
    upstream.put(&index.digest, OCI_INDEX, &index.manifest);
    upstream.put("v1", OCI_INDEX, &index.manifest);
    // The index's signature, answered only after a pause the test uses to reload.
    let layer = acme.sign(&index.digest, "s/app");
    let payload = Blob::new(cosign::SIMPLE_SIGNING, layer.payload.clone());
    let config = Blob::new("application/vnd.oci.image.config.v1+json", b"{}".to_vec());
    let mut d = payload.descriptor();
    d["annotations"] = serde_json::json!({"dev.cosignproject.cosign/signature": layer.signature});
    let sig_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(), "layers": [d],
    }))
    .unwrap();
    upstream.put(&payload.digest, "application/octet-stream", &payload.bytes);
    upstream.put(&config.digest, "application/octet-stream", &config.bytes);
    let sig_tag = cosign::sig_tag(&index.digest);
    upstream.put(&sig_tag, OCI_MANIFEST, &sig_manifest);
    upstream.delay(&sig_tag, Duration::from_secs(2));

    let url = format!("{}/v2/s/app/manifests/v1", proxy.url());
    let client = proxy.client.clone();
    let in_flight = tokio::spawn(async move {
        client
            .get(url)
            .header("accept", OCI_INDEX)
            .send()
            .await
            .unwrap()
            .status()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Acme's key is rotated while the decision waits for the signature.
    VendorKey::generate().write_public(proxy.dir.path(), "acme.pub");
    assert_eq!(proxy.admin_reload(ADMIN_TOKEN).await.0, 200);
    let _ = in_flight.await.unwrap();

    assert_eq!(
        proxy
            .answer(&format!("/v2/s/app/manifests/{}", child.digest))
            .await
            .0,
        403,
        "the old gate's decision does not authorise the child under the new one"
    );
    let r = proxy
        .get(&format!("/v2/s/app/blobs/{}", child.layers[0].digest))
        .await;
    assert_eq!(r.status(), 403, "nor its blobs");
}

/// A proxy whose `acme` authority's keys come from an HTTPS source, with
/// `on_trust_unavailable = "allow"` on the policy requiring them.
async fn relaxed_source(
    server: &crate::support::trust_server::TrustServer,
    clock: &Arc<ManualClock>,
) -> (Registry, Proxy, Pusher) {
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &server.ca_pem).unwrap();
    let source = [
        ("refresh", "1s"),
        ("max_stale", "1h"),
        ("ca_file", "ca.pem"),
    ];
    let config = ProxyConfig::new()
        .in_dir(dir)
        .clock(clock)
        .upstream("local", &registry.url())
        .authority(Authority::source("acme", &server.url(), &source))
        .policy(
            Policy::signed_by("acme", "**", &["acme"]).key("on_trust_unavailable", "\"allow\""),
        );
    let proxy = Proxy::start(config).await;
    let pusher = Pusher::new(&registry.url());
    (registry, proxy, pusher)
}

async fn push_signed(pusher: &Pusher, seed: u64, key: &VendorKey) -> String {
    let img = image::Image::oci(seed, &[100]);
    let tag = format!("t{seed}");
    pusher.image("acme/app", &tag, &img).await;
    let sig = key.sign(&img.digest, "acme/app");
    cosign::push_signatures(pusher, "acme/app", &img.digest, &[sig]).await;
    format!("/v2/local/acme/app/manifests/{tag}")
}

#[tokio::test(flavor = "multi_thread")]
async fn with_trust_never_fetched_a_relaxed_policy_still_denies_an_attackers_signature() {
    let acme = VendorKey::generate();
    let server = crate::support::trust_server::TrustServer::start(&acme.public_pem(), None).await;
    server.set_down(true);
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let (_registry, proxy, pusher) = relaxed_source(&server, &clock).await;
    let mallory = VendorKey::generate();
    let forged = push_signed(&pusher, 910, &mallory).await;
    assert_eq!(
        proxy.answer(&forged).await,
        (403, Some("trust_unavailable".into())),
        "nothing to verify against: no relaxation"
    );
    for b in image::Image::oci(910, &[100]).blobs() {
        let r = proxy
            .get(&format!("/v2/local/acme/app/blobs/{}", b.digest))
            .await;
        assert_eq!(r.status(), 403);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_stale_trust_a_relaxed_policy_admits_only_what_the_last_good_keys_verify() {
    let acme = VendorKey::generate();
    let server = crate::support::trust_server::TrustServer::start(&acme.public_pem(), None).await;
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let (_registry, proxy, pusher) = relaxed_source(&server, &clock).await;
    let good = push_signed(&pusher, 911, &acme).await;
    assert_eq!(proxy.answer(&good).await, (200, None), "fresh trust");
    server.set_down(true);
    let forged = push_signed(&pusher, 912, &VendorKey::generate()).await;
    let vendor = push_signed(&pusher, 913, &acme).await;
    proxy.failed_refreshes("acme", 1.0).await;
    clock.advance(Duration::from_secs(3660));
    // The maintenance loop sees the source stale within its one-second tick.
    let mut answer = proxy.answer(&forged).await;
    for _ in 0..30 {
        if answer.1.as_deref() == Some("trust_unavailable") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = proxy.answer(&forged).await;
    }
    assert_eq!(
        answer,
        (403, Some("trust_unavailable".into())),
        "the last good keys refute it"
    );
    assert_eq!(
        proxy.answer(&vendor).await,
        (200, None),
        "verified by the last good keys"
    );
    let relaxed = audit_line(&proxy, |e| {
        e["decision"] == "audit_deny" && e["reason"] == "trust_unavailable"
    })
    .await
    .expect("the relaxed allow is audited");
    assert!(
        relaxed["message"]
            .as_str()
            .is_some_and(|m| m.contains("stale trust") && m.contains("last good material")),
        "{relaxed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_manifests_are_refused_and_recorded_as_decisions_with_their_reason() {
    let upstream = Scripted::start().await;
    let config = ProxyConfig::new()
        .upstream_with(Upstream::new("s", &upstream.url()).timeouts("1s", "2s", "2s"))
        .allow_all();
    let proxy = Proxy::start(config).await;
    let img = image::Image::oci(920, &[10]);
    let both = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": img.config.descriptor(), "layers": [img.layers[0].descriptor()],
        "manifests": [],
    }))
    .unwrap();
    let schema1 =
        br#"{"schemaVersion":1,"name":"app","tag":"v1","fsLayers":[],"history":[]}"#.to_vec();
    let cases = [
        ("both", OCI_MANIFEST, both, "manifest_invalid"),
        (
            "schema1",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            schema1,
            "manifest_unsupported",
        ),
        (
            "mismatch",
            OCI_INDEX,
            img.manifest.clone(),
            "media_type_mismatch",
        ),
    ];
    for (name, content_type, bytes, reason) in cases {
        let digest = image::sha256(&bytes);
        upstream.put(&digest, content_type, &bytes);
        let before = proxy
            .metric(
                "portcullis_denied_pulls_total",
                &[&format!("reason=\"{reason}\"")],
            )
            .await;
        let r = proxy
            .get_manifest(&format!("/v2/s/app/manifests/{digest}"))
            .await;
        assert_eq!(
            r.status(),
            502,
            "{name}: still refused as the upstream's fault"
        );
        assert_eq!(
            proxy
                .metric(
                    "portcullis_denied_pulls_total",
                    &[&format!("reason=\"{reason}\"")]
                )
                .await,
            before + 1.0,
            "{name}: counted as a denial"
        );
        let line = audit_line(&proxy, |e| {
            e["event"] == "decision" && e["digest"] == digest.as_str()
        })
        .await
        .unwrap_or_else(|| panic!("{name}: no decision line"));
        assert_eq!(line["decision"], "deny", "{name}");
        assert_eq!(line["reason"], reason, "{name}");
        assert_eq!(
            line["policy"], "allow-unverified",
            "{name}: the policy in force"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denial_names_the_digest_it_decided_and_the_tag_it_came_from() {
    let s = setup().await;
    let img = image::Image::oci(921, &[10]);
    s.pusher.image("acme/app", "release", &img).await;
    assert_eq!(
        s.proxy.answer("/v2/local/acme/app/manifests/release").await,
        (403, Some("unsigned".into()))
    );
    let line = audit_line(&s.proxy, |e| {
        e["event"] == "decision" && e["decision"] == "deny"
    })
    .await
    .expect("a deny line");
    assert_eq!(line["digest"], img.digest.as_str());
    assert_eq!(line["reference"], "release");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_outlasting_the_verdict_ttl_gets_its_blobs_while_the_image_is_still_allowed() {
    let registry = Registry::start().await;
    let acme = VendorKey::generate();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let config = acme_config(&registry, &acme).clock(&clock);
    let proxy = Proxy::start(config.cache("verdict_ttl = \"10m\"")).await;
    let pusher = Pusher::new(&registry.url());
    let child = image::Image::oci(930, &[100]);
    let index = image::Index::new(OCI_INDEX, vec![child.clone()]);
    pusher.index("acme/slow", "v1", &index).await;
    let sig = acme.sign(&index.digest, "acme/slow");
    cosign::push_signatures(&pusher, "acme/slow", &index.digest, &[sig]).await;
    assert_eq!(
        proxy.answer("/v2/local/acme/slow/manifests/v1").await.0,
        200
    );
    let child_path = format!("/v2/local/acme/slow/manifests/{}", child.digest);
    assert_eq!(proxy.answer(&child_path).await.0, 200);
    // Both verdicts expire while the client is still fetching layers.
    clock.advance(Duration::from_secs(11 * 60));
    let decided = proxy
        .metric("portcullis_verification_duration_seconds_count", &[])
        .await;
    let r = proxy
        .get(&format!(
            "/v2/local/acme/slow/blobs/{}",
            child.layers[0].digest
        ))
        .await;
    assert_eq!(
        r.status(),
        200,
        "index and child are decided again, and still allowed"
    );
    assert_eq!(r.bytes().await.unwrap(), child.layers[0].bytes);
    assert_eq!(
        proxy
            .metric("portcullis_verification_duration_seconds_count", &[])
            .await,
        decided + 2.0,
        "the index and the child were decided again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_child_whose_index_verdict_expired_first_still_gets_its_blobs_while_the_index_is_allowed()
{
    let registry = Registry::start().await;
    let acme = VendorKey::generate();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let config = acme_config(&registry, &acme).clock(&clock);
    let proxy = Proxy::start(config.cache("verdict_ttl = \"10m\"")).await;
    let pusher = Pusher::new(&registry.url());
    let child = image::Image::oci(940, &[100]);
    let index = image::Index::new(OCI_INDEX, vec![child.clone()]);
    pusher.index("acme/staggered", "v1", &index).await;
    let sig = acme.sign(&index.digest, "acme/staggered");
    cosign::push_signatures(&pusher, "acme/staggered", &index.digest, &[sig]).await;
    assert_eq!(
        proxy
            .answer("/v2/local/acme/staggered/manifests/v1")
            .await
            .0,
        200
    );
    clock.advance(Duration::from_secs(6 * 60));
    let child_path = format!("/v2/local/acme/staggered/manifests/{}", child.digest);
    assert_eq!(proxy.answer(&child_path).await.0, 200);
    // The index's verdict has expired; the child's has not.
    clock.advance(Duration::from_secs(6 * 60));
    let decided = proxy
        .metric("portcullis_verification_duration_seconds_count", &[])
        .await;
    let r = proxy
        .get(&format!(
            "/v2/local/acme/staggered/blobs/{}",
            child.layers[0].digest
        ))
        .await;
    assert_eq!(
        r.status(),
        200,
        "the index is decided again and still allowed"
    );
    assert_eq!(
        proxy
            .metric("portcullis_verification_duration_seconds_count", &[])
            .await,
        decided + 1.0,
        "only the index was decided again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_exception_admitting_an_index_expires_its_childs_blobs_stop_though_the_child_verdict_lives()
 {
    let registry = Registry::start().await;
    let acme = VendorKey::generate();
    let child = image::Image::oci(941, &[100]);
    let index = image::Index::new(OCI_INDEX, vec![child.clone()]);
    // The exception ends in two minutes, within the verdicts' ten.
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let expires = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(120));
    let exception = Exception::pinned(
        "local/acme/vendor",
        &index.digest,
        &expires.to_string(),
        "RISK-2",
        "vendor signs next week",
    )
    .name("unsigned-index");
    let config = acme_config(&registry, &acme).clock(&clock);
    let proxy = Proxy::start(config.exception(exception)).await;
    let pusher = Pusher::new(&registry.url());
    pusher.index("acme/vendor", "v1", &index).await;
    assert_eq!(
        proxy.answer("/v2/local/acme/vendor/manifests/v1").await.0,
        200,
        "by exception"
    );
    let child_path = format!("/v2/local/acme/vendor/manifests/{}", child.digest);
    assert_eq!(
        proxy.answer(&child_path).await.0,
        200,
        "named by the admitted index"
    );
    let layer = format!("/v2/local/acme/vendor/blobs/{}", child.layers[0].digest);
    assert_eq!(proxy.get(&layer).await.status(), 200);
    clock.advance(Duration::from_secs(180));
    assert_eq!(
        proxy.get(&layer).await.status(),
        403,
        "the index is no longer allowed"
    );
    assert_eq!(proxy.answer(&child_path).await.0, 403);
}
