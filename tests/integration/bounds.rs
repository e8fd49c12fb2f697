//! Bounds on what one manifest can make the proxy do: how many descriptors
//! it lists and how deeply indexes nest. Against a real registry, with
//! signed content, so only the bound can be what refuses.

use crate::support::cosign::{self, VendorKey};
use crate::support::image::{self, OCI_INDEX};
use crate::support::*;

struct Setup {
    _registry: Registry,
    proxy: Proxy,
    acme: VendorKey,
    pusher: Pusher,
}

async fn setup() -> Setup {
    let registry = Registry::start().await;
    let acme = VendorKey::generate();
    let dir = tempfile::tempdir().unwrap();
    acme.write_public(dir.path(), "acme.pub");
    let config = ProxyConfig::new()
        .in_dir(dir)
        .upstream("local", &registry.url())
        .authority(Authority::keys("acme", &["acme.pub"]))
        .policy(Policy::signed_by("acme", "local/acme/**", &["acme"]));
    let proxy = Proxy::start(config).await;
    let pusher = Pusher::new(&registry.url());
    Setup {
        _registry: registry,
        proxy,
        acme,
        pusher,
    }
}

/// An index naming `children` (digest, media type, size) pushed under
/// `tag`; its digest and size.
async fn push_index(s: &Setup, tag: &str, children: &[(String, String, usize)]) -> (String, usize) {
    let manifests: Vec<serde_json::Value> = children
        .iter()
        .map(|(digest, media_type, size)| {
            serde_json::json!({"mediaType": media_type, "digest": digest, "size": size,
                "platform": {"architecture": "amd64", "os": "linux"}})
        })
        .collect();
    let bytes = serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
    )
    .unwrap();
    s.pusher.manifest("acme/app", tag, OCI_INDEX, &bytes).await;
    (image::sha256(&bytes), bytes.len())
}

fn entry(digest: &str, media_type: &str, size: usize) -> (String, String, usize) {
    (digest.to_string(), media_type.to_string(), size)
}

impl Setup {
    async fn sign(&self, digest: &str) {
        let sig = self.acme.sign(digest, "registry/acme/app");
        cosign::push_signatures(&self.pusher, "acme/app", digest, &[sig]).await;
    }

    async fn answer(&self, digest: &str) -> (u16, Option<String>) {
        self.proxy
            .answer(&format!("/v2/local/acme/app/manifests/{digest}"))
            .await
    }
}

/// A signed index of indexes of indexes: the top two levels pass, the third
/// is denied `limit_exceeded`, and the image under it is not granted.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_nested_three_deep_is_denied_limit_exceeded_even_when_signed() {
    let s = setup().await;
    let img = image::Image::oci(951, &[100]);
    s.pusher.image("acme/app", "img", &img).await;
    let (l3, l3_size) = push_index(
        &s,
        "l3",
        &[entry(&img.digest, &img.media_type, img.manifest.len())],
    )
    .await;
    let (l2, l2_size) = push_index(&s, "l2", &[entry(&l3, OCI_INDEX, l3_size)]).await;
    let (l1, _) = push_index(&s, "l1", &[entry(&l2, OCI_INDEX, l2_size)]).await;
    s.sign(&l1).await;
    assert_eq!(s.answer(&l1).await.0, 200, "the signed top index");
    assert_eq!(s.answer(&l2).await.0, 200, "an index one level down");
    assert_eq!(
        s.answer(&l3).await,
        (403, Some("limit_exceeded".into())),
        "a third level of index"
    );
    assert_eq!(
        s.answer(&img.digest).await,
        (403, Some("unsigned".into())),
        "nothing below the refused index is granted"
    );
}

/// A signed index listing one descriptor more than the bound is denied
/// `limit_exceeded`; one at the bound passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_signed_index_with_more_entries_than_the_bound_is_denied_limit_exceeded() {
    let s = setup().await;
    let img = image::Image::oci(952, &[100]);
    s.pusher.image("acme/app", "img", &img).await;
    let child = entry(&img.digest, &img.media_type, img.manifest.len());
    let (at_bound, _) = push_index(&s, "wide", &vec![child.clone(); 1024]).await;
    let (past_bound, _) = push_index(&s, "wider", &vec![child; 1025]).await;
    s.sign(&at_bound).await;
    s.sign(&past_bound).await;
    assert_eq!(s.answer(&at_bound).await.0, 200, "1024 entries");
    assert_eq!(
        s.answer(&past_bound).await,
        (403, Some("limit_exceeded".into())),
        "1025 entries"
    );
}

/// The scripted upstream `s` at `url`.
fn scripted_upstream(url: &str) -> Upstream {
    Upstream::new("s", url).timeouts("1s", "10s", "10s")
}

/// A proxy serving only `upstream`, unverified.
fn only(upstream: Upstream) -> ProxyConfig {
    ProxyConfig::new().upstream_with(upstream).allow_all()
}

/// HTTP/2 streams opened and reset (the rapid-reset pattern) leave no work
/// behind: the upstream requests they started are cancelled with them.
#[tokio::test(flavor = "multi_thread")]
async fn streams_reset_by_the_client_leave_no_upstream_requests_running() {
    let upstream = crate::support::scripted::Scripted::start().await;
    let proxy = Proxy::start(only(scripted_upstream(&upstream.url()))).await;
    let digests: Vec<String> = (0..40)
        .map(|n| image::sha256(format!("manifest {n}").as_bytes()))
        .collect();
    for d in &digests {
        upstream.put(d, OCI_INDEX, b"{}");
        upstream.delay(d, std::time::Duration::from_secs(8));
    }
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resets = digests.iter().map(|d| {
        let request = h2
            .get(format!("{}/v2/s/app/manifests/{d}", proxy.url()))
            .header("accept", OCI_INDEX)
            .send();
        tokio::time::timeout(std::time::Duration::from_millis(300), request)
    });
    for r in futures_util::future::join_all(resets).await {
        assert!(r.is_err(), "every request was abandoned before its answer");
    }
    let open = || upstream.open.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        upstream.most_open.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the requests reached the upstream"
    );
    let mut waited = 0;
    while open() > 0 && waited < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    assert_eq!(
        open(),
        0,
        "upstream requests still open after their clients left"
    );
    assert_eq!(
        proxy
            .metric("portcullis_upstream_in_flight", &["upstream=\"s\""])
            .await,
        0.0
    );
}

/// At most `max_requests` requests to one upstream are in flight; the rest
/// wait up to `connect_timeout` for a slot, then get 503 with Retry-After.
#[tokio::test(flavor = "multi_thread")]
async fn requests_past_an_upstreams_max_requests_get_503_with_retry_after() {
    let upstream = crate::support::scripted::Scripted::start().await;
    let proxy = Proxy::start(only(
        scripted_upstream(&upstream.url()).key("max_requests", "3"),
    ))
    .await;
    // Manifests: blob fills may take only three quarters of the slots.
    let images: Vec<image::Image> = (0..8).map(|n| image::Image::oci(960 + n, &[10])).collect();
    for img in &images {
        upstream.put(&img.digest, &img.media_type, &img.manifest);
        upstream.delay(&img.digest, std::time::Duration::from_secs(3));
    }
    let before = proxy
        .metric("portcullis_upstream_errors_total", &["kind=\"saturated\""])
        .await;
    let pulls = images.iter().map(|img| {
        proxy
            .client
            .get(format!("{}/v2/s/app/manifests/{}", proxy.url(), img.digest))
            .header("accept", &img.media_type)
            .send()
    });
    let answers = futures_util::future::join_all(pulls).await;
    let mut served = 0;
    let mut refused = 0;
    for a in answers {
        let a = a.unwrap();
        match a.status().as_u16() {
            200 => served += 1,
            503 => {
                assert_eq!(
                    a.headers().get("retry-after").and_then(|v| v.to_str().ok()),
                    Some("1")
                );
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((served, refused), (3, 5));
    assert!(
        upstream.most_open.load(std::sync::atomic::Ordering::SeqCst) <= 3,
        "more than max_requests upstream connections at once"
    );
    let after = proxy
        .metric("portcullis_upstream_errors_total", &["kind=\"saturated\""])
        .await;
    assert_eq!(after - before, 5.0);
}

/// Eight cheap images whose `.sig` manifests all name the same 40 MiB of
/// signature blobs, decided at once: with `limits.decision_bytes` at its
/// minimum (224 MiB), at most five sets are read at a time instead of all
/// eight together; nothing stays held afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn decisions_reading_large_signature_sets_share_a_bounded_memory_budget() {
    let registry = Registry::start().await;
    let front = crate::support::scripted::Scripted::start().await;
    front.in_front_of(&registry.url());
    let acme = VendorKey::generate();
    let dir = tempfile::tempdir().unwrap();
    acme.write_public(dir.path(), "acme.pub");
    let config = ProxyConfig::new()
        .in_dir(dir)
        .limits("decisions = 8\ndecision_bytes = \"224MiB\"")
        .upstream("local", &front.url())
        .authority(Authority::keys("acme", &["acme.pub"]))
        .policy(Policy::signed_by("acme", "local/acme/**", &["acme"]));
    let proxy = Proxy::start(config).await;
    let pusher = Pusher::new(&registry.url());
    let config = image::Blob::new("application/vnd.oci.image.config.v1+json", b"{}".to_vec());
    pusher.blob("acme/app", &config).await;
    let mut layers = Vec::new();
    for n in 0..40 {
        let blob = image::Blob::new(
            "application/vnd.dev.cosign.simplesigning.v1+json",
            image::random_bytes(970 + n, 1 << 20),
        );
        pusher.blob("acme/app", &blob).await;
        let mut d = blob.descriptor();
        d["annotations"] = serde_json::json!({"dev.cosignproject.cosign/signature": "AAAA"});
        layers.push(d);
    }
    let mut images = Vec::new();
    for n in 0..8 {
        let img = image::Image::oci(980 + n, &[100]);
        pusher.image("acme/app", &format!("v{n}"), &img).await;
        let sig = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": image::OCI_MANIFEST,
            "config": config.descriptor(), "layers": layers,
        }))
        .unwrap();
        pusher
            .manifest(
                "acme/app",
                &cosign::sig_tag(&img.digest),
                image::OCI_MANIFEST,
                &sig,
            )
            .await;
        images.push(img);
    }
    front.take_most_blobs_open();
    let paths = images
        .iter()
        .map(|img| format!("/v2/local/acme/app/manifests/{}", img.digest))
        .collect::<Vec<_>>();
    let pulls = paths.iter().map(|p| proxy.answer(p));
    for (status, reason) in futures_util::future::join_all(pulls).await {
        assert!(
            status == 503 || (status, reason.as_deref()) == (403, Some("invalid_signature")),
            "{status} {reason:?}"
        );
    }
    let most = front.take_most_blobs_open();
    // Five decisions' reads, 8 at a time each; eight decisions reading at
    // once would keep up to 64 blob requests open.
    assert!(most <= 40, "{most} upstream blob requests open at once");
    assert_eq!(
        proxy.metric("portcullis_decision_bytes_held", &[]).await,
        0.0
    );
    assert_eq!(
        proxy.metric("portcullis_decisions_in_flight", &[]).await,
        0.0
    );
}

/// A pusher without the key pushes an unsigned artifact index naming a
/// signed image's layer with a wrong size: the signed layer still flows
/// (sizes only bound a fill from above, and index children declare none).
#[tokio::test(flavor = "multi_thread")]
async fn an_unsigned_index_declaring_a_wrong_size_for_a_signed_layer_does_not_break_its_pull() {
    let s = setup().await;
    let img = image::Image::oci(961, &[1000]);
    s.pusher.image("acme/app", "img", &img).await;
    s.sign(&img.digest).await;
    let layer = &img.layers[0];
    let hostile = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": layer.digest, "size": layer.bytes.len() + 1,
            "artifactType": "application/vnd.example.sbom"}]
    }))
    .unwrap();
    s.pusher
        .manifest("acme/app", "evil", OCI_INDEX, &hostile)
        .await;
    let evil = image::sha256(&hostile);
    let _ = s.answer(&evil).await;
    assert_eq!(s.answer(&img.digest).await.0, 200, "signed image");
    let r = s
        .proxy
        .get(&format!("/v2/local/acme/app/blobs/{}", layer.digest))
        .await;
    assert_eq!(r.status().as_u16(), 200, "the signed image's layer");
    assert!(r.bytes().await.unwrap() == layer.bytes, "its bytes");
}

/// Decision bounds are per upstream: a slow upstream holding all of its
/// places leaves another upstream's cold pulls unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upstream_holding_all_its_decision_places_does_not_stall_another_upstream() {
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry.url());
    let img = image::Image::oci(964, &[100]);
    pusher.image("team/app", "v1", &img).await;
    let slow = crate::support::scripted::Scripted::start().await;
    let digests: Vec<String> = (0..4)
        .map(|n| image::sha256(format!("slow manifest {n}").as_bytes()))
        .collect();
    for d in &digests {
        slow.put(d, OCI_INDEX, b"{}");
        slow.delay(d, std::time::Duration::from_secs(20));
    }
    let config = ProxyConfig::new()
        .limits("decisions = 4")
        .upstream_with(Upstream::new("s", &slow.url()).timeouts("1s", "30s", "30s"))
        .upstream("local", &registry.url())
        .allow_all();
    let proxy = Proxy::start(config).await;
    let url = proxy.url();
    for d in digests {
        let c = proxy.client.clone();
        let u = format!("{url}/v2/s/app/manifests/{d}");
        tokio::spawn(async move {
            let _ = c.get(u).header("accept", OCI_INDEX).send().await;
        });
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let (status, _) = proxy
        .answer(&format!("/v2/local/team/app/manifests/{}", img.digest))
        .await;
    assert_eq!(status, 200, "a healthy upstream's pull");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "it waited {:?}",
        started.elapsed()
    );
}

/// A referrer descriptor claiming 1 TiB is refused before any budget is
/// asked for it, so no other decision waits behind it.
#[tokio::test(flavor = "multi_thread")]
async fn a_referrer_claiming_a_huge_size_is_denied_and_stalls_no_other_decision() {
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry.url());
    let healthy = image::Image::oci(965, &[100]);
    pusher.image("team/app", "v1", &healthy).await;
    let hostile = crate::support::scripted::Scripted::start().await;
    let img = image::Image::oci(966, &[100]);
    hostile.put(&img.digest, &img.media_type, &img.manifest);
    let fake = image::sha256(b"a referrer that is never read");
    hostile.referrer_pages(
        &img.digest,
        vec![vec![
            serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": fake, "size": 1u64 << 40,
            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"}),
        ]],
        false,
    );
    let acme = VendorKey::generate();
    let dir = tempfile::tempdir().unwrap();
    acme.write_public(dir.path(), "acme.pub");
    let config = ProxyConfig::new()
        .in_dir(dir)
        .upstream_with(Upstream::new("s", &hostile.url()).timeouts("1s", "5s", "5s"))
        .upstream("local", &registry.url())
        .authority(Authority::keys("acme", &["acme.pub"]))
        .policy(Policy::signed_by("acme", "s/**", &["acme"]))
        .policy(Policy::allow_unverified("open", "local/**"));
    let proxy = Proxy::start(config).await;
    let c = proxy.client.clone();
    let u = format!("{}/v2/s/app/manifests/{}", proxy.url(), img.digest);
    let bad = tokio::spawn(async move {
        let r = c
            .get(u)
            .header("accept", &img.media_type)
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let (status, _) = proxy
        .answer(&format!("/v2/local/team/app/manifests/{}", healthy.digest))
        .await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        took < std::time::Duration::from_secs(2),
        "healthy decision took {took:?}"
    );
    assert_eq!(bad.await.unwrap(), 403, "the hostile image is denied");
}

/// Blob fills hold their upstream slot for a whole transfer, so they may
/// take only three quarters of `max_requests`: with every fill slot taken
/// by slow layers, a manifest of the same upstream is still served.
#[tokio::test(flavor = "multi_thread")]
async fn slow_blob_fills_cannot_take_the_slots_manifests_need() {
    let upstream = crate::support::scripted::Scripted::start().await;
    let proxy = Proxy::start(only(
        scripted_upstream(&upstream.url()).key("max_requests", "4"),
    ))
    .await;
    let blobs: Vec<String> = (0..4)
        .map(|n| {
            let b = image::random_bytes(990 + n, 1000);
            let d = image::sha256(&b);
            upstream.put(&d, "application/octet-stream", &b);
            upstream.delay(&d, std::time::Duration::from_secs(6));
            d
        })
        .collect();
    let manifest = image::Image::oci(995, &[10]);
    upstream.put(&manifest.digest, &manifest.media_type, &manifest.manifest);
    let fills: Vec<_> = blobs
        .iter()
        .map(|d| {
            let (c, u) = (
                proxy.client.clone(),
                format!("{}/v2/s/app/blobs/{d}", proxy.url()),
            );
            tokio::spawn(async move { c.get(u).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let (status, _) = proxy
        .answer(&format!("/v2/s/app/manifests/{}", manifest.digest))
        .await;
    assert_eq!(status, 200, "the manifest found a slot");
    assert!(started.elapsed() < std::time::Duration::from_millis(900));
    let mut statuses = Vec::new();
    for f in fills {
        statuses.push(f.await.unwrap().unwrap());
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 200, 200, 503],
        "three fills at once, the fourth refused"
    );
}
