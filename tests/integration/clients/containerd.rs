//! containerd through Portcullis: `ctr images pull --hosts-dir` with a
//! `hosts.toml` whose `server` and only host is Portcullis, so every request
//! carries `?ns=<registry host>` and nothing dials the registry itself; the
//! pulled layers are unpacked into a snapshotter.

use std::path::Path;

use super::*;
use crate::support::containerd::Containerd;
use crate::support::runnable::{Flavour, Runnable};

/// Pulls `reference` with `ctr images pull` through the hosts directory,
/// unpacking into the daemon's snapshotter; panics unless it succeeded.
async fn ctr_pull(ctrd: &Containerd, hosts: &Path, reference: &str, platform: Option<&str>) {
    let hosts = hosts.display().to_string();
    let mut args = vec![
        "images",
        "pull",
        "--hosts-dir",
        &hosts,
        "--snapshotter",
        ctrd.snapshotter,
    ];
    if let Some(p) = platform {
        args.extend(["--platform", p]);
    }
    args.push(reference);
    ctrd.ctr_ok(&args).await;
}

/// The image's top layer is a committed snapshot named by its chain ID,
/// and a file from each layer can be read from the unpacked trees.
async fn assert_unpacked(ctrd: &Containerd, app: &Runnable) {
    let snapshots = ctrd
        .ctr_ok(&["snapshots", "--snapshotter", ctrd.snapshotter, "ls"])
        .await;
    let chain = app.chain_id();
    assert!(
        snapshots
            .lines()
            .any(|l| l.starts_with(&chain) && l.contains("Committed")),
        "no committed snapshot {chain}:\n{snapshots}"
    );
    for layer in &app.files {
        for f in layer {
            let found = ctrd.find_in_snapshots(&f.path);
            assert!(
                found.contains(&f.contents),
                "{} not unpacked ({} candidates)",
                f.path,
                found.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_pulls_and_unpacks_oci_image_routed_by_ns_to_a_name_it_never_dials() {
    let registry = Registry::start().await;
    let app = Runnable::new(201, Flavour::Oci, "amd64");
    Pusher::new(&registry.url())
        .image("team/app", "v1", &app.image)
        .await;
    // No default upstream and no upstream named `team`: only `?ns=registry.test` can route this.
    let proxy = Proxy::start(config("registry.test", &registry)).await;
    let ctrd = Containerd::start().await;
    let hosts = ctrd.hosts_dir("registry.test", &proxy.url());

    ctr_pull(&ctrd, &hosts, "registry.test/team/app:v1", None).await;

    assert_unpacked(&ctrd, &app).await;
    let images = ctrd.ctr_ok(&["images", "ls"]).await;
    assert!(
        images.contains("registry.test/team/app:v1") && images.contains(&app.image.digest),
        "{images}"
    );
    assert_all_answered_ok(&proxy).await;
    assert!(request_count(&proxy, "manifest", "200").await >= 1.0);
    assert_eq!(
        request_count(&proxy, "blob", "200").await,
        3.0,
        "config and two layers"
    );
    let upstream = "upstream=\"registry.test\"";
    assert!(
        proxy
            .metric(
                "portcullis_upstream_requests_total",
                &[upstream, "kind=\"manifest\""]
            )
            .await
            >= 1.0
    );
    assert_eq!(
        proxy
            .metric(
                "portcullis_upstream_requests_total",
                &[upstream, "kind=\"blob\""]
            )
            .await,
        3.0
    );
    // The path containerd used routes only with its `ns`.
    let path = "/v2/team/app/manifests/v1";
    assert_eq!(proxy.get_manifest(path).await.status(), 404);
    let r = proxy
        .get_manifest(&format!("{path}?ns=registry.test"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["oci-namespace"], "registry.test");
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_pulls_and_unpacks_docker_image_routed_by_ns_of_upstream_host_port() {
    let registry = Registry::start().await;
    let app = Runnable::new(202, Flavour::Docker, "amd64");
    Pusher::new(&registry.url())
        .image("team/app", "v1", &app.image)
        .await;
    let proxy = Proxy::start(config("local", &registry)).await;
    let ctrd = Containerd::start().await;
    let hosts = ctrd.hosts_dir(&registry.host(), &proxy.url());

    ctr_pull(
        &ctrd,
        &hosts,
        &format!("{}/team/app:v1", registry.host()),
        None,
    )
    .await;

    assert_unpacked(&ctrd, &app).await;
    assert_all_answered_ok(&proxy).await;
    assert!(request_count(&proxy, "manifest", "200").await >= 1.0);
    assert_eq!(request_count(&proxy, "blob", "200").await, 3.0);
    assert!(
        proxy
            .metric(
                "portcullis_upstream_requests_total",
                &["upstream=\"local\"", "kind=\"manifest\""]
            )
            .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_second_runtime_pulls_by_digest_entirely_from_cache() {
    let registry = Registry::start().await;
    let app = Runnable::new(205, Flavour::Oci, "amd64");
    Pusher::new(&registry.url())
        .image("team/app", "v1", &app.image)
        .await;
    let proxy = Proxy::start(config("registry.test", &registry)).await;
    let first = Containerd::start().await;
    let hosts = first.hosts_dir("registry.test", &proxy.url());
    ctr_pull(&first, &hosts, "registry.test/team/app:v1", None).await;
    drop(first);

    let upstream_before = proxy
        .metric("portcullis_upstream_requests_total", &[])
        .await;
    let blobs_before = request_count(&proxy, "blob", "200").await;
    let second = Containerd::start().await;
    let hosts = second.hosts_dir("registry.test", &proxy.url());
    ctr_pull(
        &second,
        &hosts,
        &format!("registry.test/team/app@{}", app.image.digest),
        None,
    )
    .await;

    assert_unpacked(&second, &app).await;
    assert_eq!(
        request_count(&proxy, "blob", "200").await - blobs_before,
        3.0,
        "the second runtime fetched every blob"
    );
    assert_eq!(
        proxy
            .metric("portcullis_upstream_requests_total", &[])
            .await,
        upstream_before,
        "nothing went upstream"
    );
    assert!(
        proxy
            .metric("portcullis_blob_bytes_total", &["source=\"cache\""])
            .await
            > 0.0
    );
    assert_all_answered_ok(&proxy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_pulls_docker_hub_reference_through_upstream_named_docker_io() {
    let registry = Registry::start().await;
    let app = Runnable::new(207, Flavour::Docker, "amd64");
    Pusher::new(&registry.url())
        .image("library/alpine", "v1", &app.image)
        .await;
    let proxy = Proxy::start(config("docker.io", &registry)).await;
    let ctrd = Containerd::start().await;
    let hosts = ctrd.hosts_dir("docker.io", &proxy.url());

    ctr_pull(&ctrd, &hosts, "docker.io/library/alpine:v1", None).await;

    assert_unpacked(&ctrd, &app).await;
    assert_eq!(
        proxy
            .metric(
                "portcullis_upstream_requests_total",
                &["upstream=\"docker.io\"", "kind=\"blob\""]
            )
            .await,
        3.0
    );
    assert_all_answered_ok(&proxy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_pull_of_denied_image_fails_showing_reason_and_decision_id_and_fetches_no_blob()
{
    let registry = Registry::start().await;
    let app = Runnable::new(206, Flavour::Oci, "amd64");
    Pusher::new(&registry.url())
        .image("team/secret", "v1", &app.image)
        .await;
    let proxy = Proxy::start(config_denying_secret("registry.test", &registry)).await;
    let ctrd = Containerd::start().await;
    let hosts = ctrd
        .hosts_dir("registry.test", &proxy.url())
        .display()
        .to_string();

    let out = ctrd
        .ctr(&[
            "images",
            "pull",
            "--hosts-dir",
            &hosts,
            "registry.test/team/secret:v1",
        ])
        .await;

    assert!(!out.status.success(), "pull of a denied image succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("403"), "ctr shows the refusal: {stderr}");
    // ctr prints only the status line: the reason and the audited
    // decision's id travel in its reason phrase.
    assert!(
        stderr.contains("403 Forbidden: denied by policy, "),
        "ctr shows why: {stderr}"
    );
    let ids = denial_ids(&proxy).await;
    assert!(
        ids.iter()
            .any(|id| stderr.contains(&format!("(decision {id})"))),
        "ctr names an audited decision {ids:?}: {stderr}"
    );
    assert!(request_count(&proxy, "manifest", "403").await >= 1.0);
    assert_eq!(request_count(&proxy, "blob", "200").await, 0.0);
    assert_eq!(proxy.upstream_requests("blob").await, 0.0);
    let images = ctrd.ctr_ok(&["images", "ls", "-q"]).await;
    assert!(images.trim().is_empty(), "no image recorded: {images}");
}

async fn containerd_index_pull(flavour: Flavour, seed: u64) {
    let registry = Registry::start().await;
    let (index, amd64, arm64) = push_index(&registry, seed, flavour).await;
    let proxy = Proxy::start(config("registry.test", &registry)).await;
    let ctrd = Containerd::start().await;
    let hosts = ctrd.hosts_dir("registry.test", &proxy.url());

    ctr_pull(
        &ctrd,
        &hosts,
        "registry.test/team/multi:v1",
        Some("linux/amd64"),
    )
    .await;

    assert_unpacked(&ctrd, &amd64).await;
    let images = ctrd.ctr_ok(&["images", "ls"]).await;
    assert!(
        images.contains(&index.digest),
        "image record names the index: {images}"
    );
    let content = ctrd.ctr_ok(&["content", "ls", "-q"]).await;
    for b in amd64.image.blobs() {
        assert!(
            content.contains(&b.digest),
            "amd64 blob {} not fetched",
            b.digest
        );
    }
    for b in arm64.image.blobs() {
        assert!(
            !content.contains(&b.digest),
            "arm64 blob {} fetched",
            b.digest
        );
    }
    assert_eq!(
        request_count(&proxy, "blob", "200").await,
        3.0,
        "only the amd64 blobs"
    );
    assert_all_answered_ok(&proxy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_pulls_amd64_child_of_oci_index_and_unpacks_it() {
    containerd_index_pull(Flavour::Oci, 203).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_pulls_amd64_child_of_docker_manifest_list_and_unpacks_it() {
    containerd_index_pull(Flavour::Docker, 204).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_runtimes_pulling_at_once_through_a_cold_cache_share_one_upstream_fetch_per_blob()
 {
    let registry = Registry::start().await;
    let app = Runnable::with_payload(208, Flavour::Oci, "amd64", 4 << 20);
    Pusher::new(&registry.url())
        .image("team/big", "v1", &app.image)
        .await;
    let proxy = Proxy::start(config("registry.test", &registry)).await;
    let (a, b, c) = tokio::join!(
        Containerd::start(),
        Containerd::start(),
        Containerd::start()
    );
    let runtimes = [&a, &b, &c];
    let hosts: Vec<_> = runtimes
        .iter()
        .map(|r| r.hosts_dir("registry.test", &proxy.url()))
        .collect();

    let pulls = runtimes
        .iter()
        .zip(&hosts)
        .map(|(r, h)| ctr_pull(r, h, "registry.test/team/big:v1", None));
    futures_util::future::join_all(pulls).await;

    for r in runtimes {
        assert_unpacked(r, &app).await;
    }
    assert_all_answered_ok(&proxy).await;
    assert_eq!(request_count(&proxy, "blob", "200").await, 9.0);
    let upstream = "upstream=\"registry.test\"";
    assert_eq!(
        proxy
            .metric(
                "portcullis_upstream_requests_total",
                &[upstream, "kind=\"blob\""]
            )
            .await,
        3.0,
        "one upstream fetch per blob"
    );
    assert_eq!(
        proxy
            .metric(
                "portcullis_upstream_requests_total",
                &[upstream, "kind=\"manifest\""]
            )
            .await,
        1.0,
        "one upstream fetch of the manifest"
    );
}
