//! The OCI read API through Portcullis against a real distribution registry.

use crate::support::image;
use crate::support::*;

fn config(registry: &Registry) -> ProxyConfig {
    ProxyConfig::new()
        .upstream("local", &registry.url())
        .allow_all()
}

#[tokio::test(flavor = "multi_thread")]
async fn single_arch_oci_image_pulls_byte_identical_and_second_pull_is_cached() {
    let registry = Registry::start().await;
    let image = Image::oci(1, &[1000, 300_000]);
    Pusher::new(&registry.url())
        .image("team/app", "v1", &image)
        .await;
    let proxy = Proxy::start(config(&registry)).await;

    let r = proxy.get_manifest("/v2/local/team/app/manifests/v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], image.media_type.as_str());
    assert_eq!(r.headers()["docker-content-digest"], image.digest.as_str());
    assert_eq!(r.bytes().await.unwrap(), image.manifest);
    for b in image.blobs() {
        let r = proxy
            .get(&format!("/v2/local/team/app/blobs/{}", b.digest))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["docker-content-digest"], b.digest.as_str());
        assert_eq!(r.bytes().await.unwrap(), b.bytes);
    }

    let manifests_before = proxy.upstream_requests("manifest").await;
    let heads_before = proxy.upstream_requests("manifest_head").await;
    let blobs_before = proxy.upstream_requests("blob").await;
    let r = proxy.get_manifest("/v2/local/team/app/manifests/v1").await;
    assert_eq!(r.bytes().await.unwrap(), image.manifest);
    let r = proxy
        .get_manifest(&format!("/v2/local/team/app/manifests/{}", image.digest))
        .await;
    assert_eq!(r.bytes().await.unwrap(), image.manifest);
    for b in image.blobs() {
        let r = proxy
            .get(&format!("/v2/local/team/app/blobs/{}", b.digest))
            .await;
        assert_eq!(r.bytes().await.unwrap(), b.bytes);
    }
    assert_eq!(
        proxy.upstream_requests("manifest").await,
        manifests_before,
        "manifest served from cache"
    );
    assert_eq!(
        proxy.upstream_requests("manifest_head").await,
        heads_before,
        "tag within tag_ttl not revalidated"
    );
    assert_eq!(
        proxy.upstream_requests("blob").await,
        blobs_before,
        "blobs served from cache"
    );
    assert!(
        proxy
            .metric("portcullis_blob_bytes_total", &["source=\"cache\""])
            .await
            >= 301_000.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_arch_index_with_docker_and_oci_children_pulls_identically() {
    let registry = Registry::start().await;
    let index = Index::new(
        image::OCI_INDEX,
        vec![Image::oci(2, &[5000]), Image::docker(3, &[7000])],
    );
    Pusher::new(&registry.url())
        .index("multi", "latest", &index)
        .await;
    let list = Index::new(
        image::DOCKER_LIST,
        vec![Image::docker(4, &[100]), Image::docker(5, &[200])],
    );
    Pusher::new(&registry.url())
        .index("multi", "docker-list", &list)
        .await;
    let proxy = Proxy::start(config(&registry)).await;

    for (tag, idx) in [("latest", &index), ("docker-list", &list)] {
        let r = proxy
            .get_manifest(&format!("/v2/local/multi/manifests/{tag}"))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], idx.media_type.as_str());
        assert_eq!(r.headers()["docker-content-digest"], idx.digest.as_str());
        assert_eq!(r.bytes().await.unwrap(), idx.manifest);
        for child in &idx.images {
            let r = proxy
                .get_manifest(&format!("/v2/local/multi/manifests/{}", child.digest))
                .await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.headers()["content-type"], child.media_type.as_str());
            assert_eq!(
                r.bytes().await.unwrap(),
                child.manifest,
                "child bytes are exactly what was pushed"
            );
            for b in child.blobs() {
                let r = proxy
                    .get(&format!("/v2/local/multi/blobs/{}", b.digest))
                    .await;
                assert_eq!(r.bytes().await.unwrap(), b.bytes);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn head_manifest_and_blob_carry_digest_length_and_type_without_body() {
    let registry = Registry::start().await;
    let image = Image::docker(6, &[4096]);
    Pusher::new(&registry.url())
        .image("h/app", "v1", &image)
        .await;
    let proxy = Proxy::start(config(&registry)).await;

    for reference in ["v1", image.digest.as_str()] {
        let r = proxy
            .head(&format!("/v2/local/h/app/manifests/{reference}"))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["docker-content-digest"], image.digest.as_str());
        assert_eq!(r.headers()["content-type"], image::DOCKER_MANIFEST);
        assert_eq!(
            r.headers()["content-length"],
            image.manifest.len().to_string().as_str()
        );
        assert!(r.bytes().await.unwrap().is_empty());
    }
    let layer = &image.layers[0];
    for _ in 0..2 {
        // First HEAD asks the upstream; after a GET the blob is answered from the store.
        let r = proxy
            .head(&format!("/v2/local/h/app/blobs/{}", layer.digest))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["docker-content-digest"], layer.digest.as_str());
        assert_eq!(r.headers()["content-length"], "4096");
        proxy
            .get(&format!("/v2/local/h/app/blobs/{}", layer.digest))
            .await
            .bytes()
            .await
            .unwrap();
    }
    let missing = image::sha256(b"nothing");
    let r = proxy
        .head(&format!("/v2/local/h/app/blobs/{missing}"))
        .await;
    assert_eq!(r.status(), 404);
    let r = proxy.get_manifest("/v2/local/h/app/manifests/nope").await;
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread")]
async fn range_requests_resume_cold_and_warm_blobs_with_206() {
    let registry = Registry::start().await;
    let image = Image::oci(7, &[1_000_000]);
    Pusher::new(&registry.url())
        .image("r/app", "v1", &image)
        .await;
    let proxy = Proxy::start(config(&registry)).await;
    let layer = &image.layers[0];
    let path = format!("{}/v2/local/r/app/blobs/{}", proxy.url(), layer.digest);

    // Cold: the first request is a range; the proxy fills the whole blob once.
    for (range, start, end) in [
        ("bytes=1000-", 1000usize, 1_000_000usize),
        ("bytes=10-19", 10, 20),
        ("bytes=-100", 999_900, 1_000_000),
    ] {
        let r = proxy
            .client
            .get(&path)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {start}-{}/1000000", end - 1).as_str()
        );
        assert_eq!(
            r.headers()["content-length"],
            (end - start).to_string().as_str()
        );
        assert_eq!(r.bytes().await.unwrap(), &layer.bytes[start..end]);
    }
    assert_eq!(proxy.upstream_requests("blob").await, 1.0);
    let r = proxy
        .client
        .get(&path)
        .header("range", "bytes=2000000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */1000000");
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_list_paginates_with_n_last_and_a_link_back_to_the_proxy() {
    let registry = Registry::start().await;
    let image = Image::oci(8, &[10]);
    let pusher = Pusher::new(&registry.url());
    pusher.image("t/app", "a", &image).await;
    for tag in ["b", "c", "d"] {
        pusher
            .manifest("t/app", tag, &image.media_type, &image.manifest)
            .await;
    }
    let proxy = Proxy::start(config(&registry)).await;

    let all: serde_json::Value = proxy
        .get("/v2/local/t/app/tags/list")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        all["tags"],
        serde_json::json!(["a", "b", "c", "d"]),
        "sorted lexically"
    );
    assert_eq!(all["name"], "local/t/app");

    let r = proxy.get("/v2/local/t/app/tags/list?n=2").await;
    assert_eq!(r.status(), 200);
    let link = r.headers()["link"].to_str().unwrap().to_string();
    let page: serde_json::Value = r.json().await.unwrap();
    let first: Vec<String> = serde_json::from_value(page["tags"].clone()).unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(
        link,
        format!(
            "</v2/local/t/app/tags/list?n=2&last={}>; rel=\"next\"",
            first[1]
        )
    );
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let page: serde_json::Value = proxy.get(next).await.json().await.unwrap();
    let second: Vec<String> = serde_json::from_value(page["tags"].clone()).unwrap();
    let mut both: Vec<String> = first.into_iter().chain(second).collect();
    both.sort();
    assert_eq!(
        both,
        ["a", "b", "c", "d"],
        "the two pages cover every tag once"
    );
    let empty: serde_json::Value = proxy
        .get("/v2/local/t/app/tags/list?n=0")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty["tags"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn referrers_fall_back_to_the_tag_schema_and_filter_by_artifact_type() {
    let registry = Registry::start().await;
    let image = Image::oci(9, &[10]);
    let pusher = Pusher::new(&registry.url());
    pusher.image("s/app", "v1", &image).await;
    let bundle_type = "application/vnd.dev.sigstore.bundle.v0.3+json";
    let empty = Blob::new("application/vnd.oci.empty.v1+json", b"{}".to_vec());
    pusher.blob("s/app", &empty).await;
    let subject = serde_json::json!({"mediaType": image.media_type, "digest": image.digest, "size": image.manifest.len()});
    let referrer = |artifact_type: &str| {
        let m = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": image::OCI_MANIFEST,
            "artifactType": artifact_type, "config": empty.descriptor(), "layers": [empty.descriptor()], "subject": subject})).unwrap();
        let d = serde_json::json!({"mediaType": image::OCI_MANIFEST, "digest": image::sha256(&m), "size": m.len(), "artifactType": artifact_type});
        (m, d)
    };
    let (sig_manifest, sig) = referrer(bundle_type);
    let (sbom_manifest, sbom) = referrer("application/spdx+json");
    for m in [&sig_manifest, &sbom_manifest] {
        pusher
            .manifest("s/app", &image::sha256(m), image::OCI_MANIFEST, m)
            .await;
    }
    let fallback = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": image::OCI_INDEX, "manifests": [sig, sbom]})).unwrap();
    let tag = image.digest.replace(':', "-");
    pusher
        .manifest("s/app", &tag, image::OCI_INDEX, &fallback)
        .await;
    let proxy = Proxy::start(config(&registry)).await;

    let r = proxy
        .get(&format!("/v2/local/s/app/referrers/{}", image.digest))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], image::OCI_INDEX);
    let all: serde_json::Value = r.json().await.unwrap();
    assert_eq!(all["manifests"].as_array().unwrap().len(), 2);

    let encoded = bundle_type.replace('+', "%2B");
    let r = proxy
        .get(&format!(
            "/v2/local/s/app/referrers/{}?artifactType={encoded}",
            image.digest
        ))
        .await;
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    let filtered: serde_json::Value = r.json().await.unwrap();
    assert_eq!(filtered["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["manifests"][0]["artifactType"], bundle_type);

    let other = image::sha256(b"no referrers");
    let r = proxy
        .get(&format!("/v2/local/s/app/referrers/{other}"))
        .await;
    assert_eq!(r.status(), 200, "referrers never 404");
    let none: serde_json::Value = r.json().await.unwrap();
    assert_eq!(none["manifests"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_by_ns_prefix_and_default_upstream_with_library_normalisation() {
    let registry = Registry::start().await;
    let image = Image::oci(10, &[10]);
    let pusher = Pusher::new(&registry.url());
    pusher.image("library/alpine", "3", &image).await;
    let config = ProxyConfig::new()
        .default_upstream("docker.io")
        .upstream_with(Upstream::test("docker.io", &registry.url()).key("library_prefix", "true"))
        .allow_all();
    let proxy = Proxy::start(config).await;

    for path in [
        "/v2/library/alpine/manifests/3?ns=docker.io",
        "/v2/alpine/manifests/3?ns=docker.io",
        "/v2/alpine/manifests/3?ns=index.docker.io",
        "/v2/docker.io/library/alpine/manifests/3",
        "/v2/docker.io/alpine/manifests/3",
        "/v2/alpine/manifests/3",
        "/v2/library/alpine/manifests/3",
    ] {
        let r = proxy.get_manifest(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.bytes().await.unwrap(), image.manifest, "{path}");
    }
    let r = proxy
        .get_manifest("/v2/alpine/manifests/3?ns=docker.io")
        .await;
    assert_eq!(r.headers()["oci-namespace"], "docker.io");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_default_upstream_an_unconfigured_registry_prefix_is_name_unknown_not_a_repository()
{
    let registry = Registry::start().await;
    let config = ProxyConfig::new()
        .default_upstream("docker.io")
        .upstream_with(Upstream::test("docker.io", &registry.url()).key("library_prefix", "true"))
        .allow_all();
    let proxy = Proxy::start(config).await;
    for path in [
        "/v2/nosuch.io/x/manifests/latest",
        "/v2/localhost:5000/x/manifests/latest",
    ] {
        let r = proxy.get_manifest(path).await;
        assert_eq!(r.status(), 404, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN", "{path}");
    }
    assert_eq!(
        proxy
            .metric("portcullis_upstream_requests_total", &[])
            .await,
        0.0
    );
    let decisions = proxy
        .audit_events()
        .into_iter()
        .filter(|e| e["event"] == "decision")
        .count();
    assert_eq!(decisions, 0, "nothing was decided");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_namespace_is_name_unknown_and_never_dialled() {
    let registry = Registry::start().await;
    let proxy = Proxy::start(config(&registry)).await;
    for path in [
        "/v2/x/manifests/latest?ns=evil.example.com",
        "/v2/evil.example.com/x/manifests/latest",
        "/v2/x/manifests/latest",
    ] {
        let r = proxy.get_manifest(path).await;
        assert_eq!(r.status(), 404, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "NAME_UNKNOWN", "{path}");
    }
    assert_eq!(
        proxy
            .metric("portcullis_upstream_requests_total", &[])
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_are_405_unsupported_and_bad_input_is_400() {
    let registry = Registry::start().await;
    let proxy = Proxy::start(config(&registry)).await;
    for (method, path) in [
        (reqwest::Method::POST, "/v2/local/x/blobs/uploads/"),
        (reqwest::Method::PUT, "/v2/local/x/manifests/v1"),
        (reqwest::Method::DELETE, "/v2/local/x/manifests/v1"),
        (reqwest::Method::PATCH, "/v2/local/x/blobs/uploads/abc"),
    ] {
        let r = proxy
            .client
            .request(method.clone(), format!("{}{path}", proxy.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
    }
    let cases = [
        ("/v2/local/Bad/manifests/v1", "NAME_INVALID"),
        ("/v2/local/x/manifests/bad:tag", "MANIFEST_INVALID"),
        ("/v2/local/x/blobs/sha256:1234", "DIGEST_INVALID"),
        (
            "/v2/local/x/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
            "DIGEST_INVALID",
        ),
        ("/v2/local/a%2F..%2Fb/manifests/v1", "NAME_INVALID"),
    ];
    for (path, code) in cases {
        let r = proxy.get(path).await;
        assert_eq!(r.status(), 400, "{path}");
        // Every answer is sized: its length goes ahead of it, never chunked.
        assert!(r.headers().contains_key("content-length"), "{path}");
        assert!(!r.headers().contains_key("transfer-encoding"), "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], code, "{path}");
    }
    let r = proxy.get("/v2/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deny_policy_is_403_denied_with_reason_and_audit_mode_serves() {
    let registry = Registry::start().await;
    let image = Image::oci(11, &[10]);
    let pusher = Pusher::new(&registry.url());
    pusher.image("blocked/app", "v1", &image).await;
    pusher.image("watched/app", "v1", &image).await;
    let config = ProxyConfig::new()
        .upstream("local", &registry.url())
        .policy(Policy::deny("block", "local/blocked/**"))
        .policy(Policy::deny("watch", "local/watched/**").audit());
    let proxy = Proxy::start(config).await;

    let r = proxy
        .get_manifest("/v2/local/blocked/app/manifests/v1")
        .await;
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "DENIED");
    assert_eq!(body["errors"][0]["detail"]["reason"], "no_policy");
    assert_eq!(body["errors"][0]["detail"]["policy"], "block");
    let r = proxy.head("/v2/local/blocked/app/manifests/v1").await;
    assert_eq!(r.status(), 403, "HEAD is gated too");
    let r = proxy.get_manifest("/v2/local/other/app/manifests/v1").await;
    assert_eq!(r.status(), 403, "no matching policy denies");
    assert_eq!(
        proxy
            .metric(
                "portcullis_denied_pulls_total",
                &["policy=\"block\"", "reason=\"no_policy\""]
            )
            .await,
        2.0
    );
    assert_eq!(
        proxy.upstream_requests("manifest").await + proxy.upstream_requests("manifest_head").await,
        0.0,
        "refused before any upstream request"
    );

    let r = proxy
        .get_manifest("/v2/local/watched/app/manifests/v1")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), image.manifest);
    assert_eq!(
        proxy
            .metric(
                "portcullis_pull_decisions_total",
                &["policy=\"watch\"", "decision=\"audit_deny\""]
            )
            .await,
        1.0
    );
}
