//! skopeo through Portcullis: path-prefix routing (`/v2/<upstream>/<repo>`,
//! as CRI-O and podman mirrors address it) and bare paths through the
//! default upstream (Docker's `registry-mirrors`).

use super::*;
use crate::support::image::DOCKER_LIST;
use crate::support::runnable::{Flavour, Runnable};
use crate::support::skopeo::{Skopeo, assert_success, dir_blob, oci_blob};

async fn skopeo_dir_copy_by_path_prefix(flavour: Flavour, seed: u64) {
    let registry = Registry::start().await;
    let app = Runnable::new(seed, flavour, "amd64");
    Pusher::new(&registry.url())
        .image("team/app", "v1", &app.image)
        .await;
    let proxy = Proxy::start(config("local", &registry)).await;
    let skopeo = Skopeo::new();
    let dest = skopeo.dest("copy");

    let src = format!("docker://{}/local/team/app:v1", proxy.host());
    let out = skopeo
        .copy(&[], &src, &format!("dir:{}", dest.display()))
        .await;
    assert_success("skopeo copy", &out);

    let manifest = std::fs::read(dest.join("manifest.json")).unwrap();
    assert_eq!(
        sha256(&manifest),
        app.image.digest,
        "manifest copied unchanged"
    );
    assert_eq!(manifest, app.image.manifest);
    assert_dir_holds(&dest, &app.image);
    assert!(request_count(&proxy, "manifest", "200").await >= 1.0);
    assert_eq!(
        proxy
            .metric(
                "portcullis_upstream_requests_total",
                &["upstream=\"local\"", "kind=\"blob\""]
            )
            .await,
        3.0
    );
    assert_all_answered_ok(&proxy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_copies_oci_image_via_path_prefix_to_dir_byte_identical() {
    skopeo_dir_copy_by_path_prefix(Flavour::Oci, 101).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_copies_docker_image_via_path_prefix_to_dir_byte_identical() {
    skopeo_dir_copy_by_path_prefix(Flavour::Docker, 102).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_copies_oci_image_via_path_prefix_to_oci_layout_byte_identical() {
    let registry = Registry::start().await;
    let app = Runnable::new(103, Flavour::Oci, "amd64");
    Pusher::new(&registry.url())
        .image("team/app", "v1", &app.image)
        .await;
    let proxy = Proxy::start(config("local", &registry)).await;
    let skopeo = Skopeo::new();
    let layout = skopeo.dest("layout");

    let src = format!("docker://{}/local/team/app:v1", proxy.host());
    let out = skopeo
        .copy(&[], &src, &format!("oci:{}:v1", layout.display()))
        .await;
    assert_success("skopeo copy to oci:", &out);

    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["digest"],
        app.image.digest.as_str(),
        "layout names the pushed manifest: {index}"
    );
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    assert_eq!(
        std::fs::read(oci_blob(&layout, &app.image.digest)).unwrap(),
        app.image.manifest
    );
    for b in app.image.blobs() {
        assert_blob_file(&oci_blob(&layout, &b.digest), b);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_copies_via_bare_path_through_default_upstream() {
    let registry = Registry::start().await;
    let app = Runnable::new(104, Flavour::Oci, "amd64");
    Pusher::new(&registry.url())
        .image("team/app", "v1", &app.image)
        .await;
    let proxy = Proxy::start(config("local", &registry).default_upstream("local")).await;
    let skopeo = Skopeo::new();
    let dest = skopeo.dest("copy");

    let src = format!("docker://{}/team/app:v1", proxy.host());
    let out = skopeo
        .copy(&[], &src, &format!("dir:{}", dest.display()))
        .await;
    assert_success("skopeo copy (bare path)", &out);

    assert_eq!(
        std::fs::read(dest.join("manifest.json")).unwrap(),
        app.image.manifest
    );
    assert_dir_holds(&dest, &app.image);
    assert!(proxy.upstream_requests("manifest").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_picks_amd64_child_of_index_and_fetches_no_arm64_blob() {
    let registry = Registry::start().await;
    let (_, amd64, arm64) = push_index(&registry, 105, Flavour::Oci).await;
    let proxy = Proxy::start(config("local", &registry)).await;
    let skopeo = Skopeo::new();
    let dest = skopeo.dest("copy");

    let src = format!("docker://{}/local/team/multi:v1", proxy.host());
    let platform = ["--override-os", "linux", "--override-arch", "amd64"];
    let out = skopeo
        .copy(&platform, &src, &format!("dir:{}", dest.display()))
        .await;
    assert_success("skopeo copy of an index", &out);

    assert_eq!(
        std::fs::read(dest.join("manifest.json")).unwrap(),
        amd64.image.manifest,
        "the amd64 child, unchanged"
    );
    assert_dir_holds(&dest, &amd64.image);
    for b in arm64.image.blobs() {
        assert!(
            !dir_blob(&dest, &b.digest).exists(),
            "arm64 blob {} copied",
            b.digest
        );
    }
    // No arm64 blob equals an amd64 one; the proxy fetched only the amd64 three.
    assert_eq!(proxy.upstream_requests("blob").await, 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_copies_whole_docker_manifest_list_with_all_byte_identical() {
    let registry = Registry::start().await;
    let (index, amd64, arm64) = push_index(&registry, 106, Flavour::Docker).await;
    assert_eq!(index.media_type, DOCKER_LIST);
    let proxy = Proxy::start(config("local", &registry)).await;
    let skopeo = Skopeo::new();
    let dest = skopeo.dest("copy");

    let src = format!("docker://{}/local/team/multi:v1", proxy.host());
    let out = skopeo
        .copy_with(&[], &["--all"], &src, &format!("dir:{}", dest.display()))
        .await;
    assert_success("skopeo copy --all", &out);

    assert_eq!(
        std::fs::read(dest.join("manifest.json")).unwrap(),
        index.manifest,
        "the list, unchanged"
    );
    for child in [&amd64, &arm64] {
        let path = dest.join(format!(
            "{}.manifest.json",
            child.image.digest.trim_start_matches("sha256:")
        ));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            child.image.manifest,
            "{}",
            path.display()
        );
        assert_dir_holds(&dest, &child.image);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_inspects_raw_manifest_and_lists_tags_via_path_prefix() {
    let registry = Registry::start().await;
    let app = Runnable::new(107, Flavour::Oci, "amd64");
    let pusher = Pusher::new(&registry.url());
    pusher.image("team/app", "v1", &app.image).await;
    pusher
        .manifest("team/app", "v2", &app.image.media_type, &app.image.manifest)
        .await;
    let proxy = Proxy::start(config("local", &registry)).await;
    let skopeo = Skopeo::new();
    let src = format!("docker://{}/local/team/app", proxy.host());

    let out = skopeo
        .run(&[
            "inspect",
            "--tls-verify=false",
            "--no-creds",
            "--raw",
            &format!("{src}:v1"),
        ])
        .await;
    assert_success("skopeo inspect --raw", &out);
    assert_eq!(out.stdout, app.image.manifest);

    let out = skopeo
        .run(&[
            "inspect",
            "--tls-verify=false",
            "--no-creds",
            &format!("{src}@{}", app.image.digest),
        ])
        .await;
    assert_success("skopeo inspect by digest", &out);
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspected["Digest"], app.image.digest.as_str());
    assert_eq!(inspected["Architecture"], "amd64");
    let layers: Vec<&str> = app.image.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(inspected["Layers"], serde_json::json!(layers));

    let out = skopeo
        .run(&["list-tags", "--tls-verify=false", "--no-creds", &src])
        .await;
    assert_success("skopeo list-tags", &out);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["Tags"], serde_json::json!(["v1", "v2"]), "{listed}");
    assert!(request_count(&proxy, "tags", "200").await >= 1.0);
    assert_all_answered_ok(&proxy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_copies_single_name_from_upstream_named_docker_io_with_library_prefix() {
    let registry = Registry::start().await;
    let app = Runnable::new(109, Flavour::Docker, "amd64");
    Pusher::new(&registry.url())
        .image("library/alpine", "v1", &app.image)
        .await;
    let proxy = Proxy::start(config("docker.io", &registry)).await;
    let skopeo = Skopeo::new();

    for (i, path) in ["docker.io/alpine", "docker.io/library/alpine"]
        .iter()
        .enumerate()
    {
        let dest = skopeo.dest(&format!("copy{i}"));
        let src = format!("docker://{}/{path}:v1", proxy.host());
        let out = skopeo
            .copy(&[], &src, &format!("dir:{}", dest.display()))
            .await;
        assert_success(&format!("skopeo copy {src}"), &out);
        assert_eq!(
            std::fs::read(dest.join("manifest.json")).unwrap(),
            app.image.manifest
        );
        assert_dir_holds(&dest, &app.image);
    }
    assert_all_answered_ok(&proxy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_copy_of_denied_image_fails_showing_the_decision_id_and_fetches_no_blob() {
    let registry = Registry::start().await;
    let app = Runnable::new(108, Flavour::Oci, "amd64");
    Pusher::new(&registry.url())
        .image("team/secret", "v1", &app.image)
        .await;
    let proxy = Proxy::start(config_denying_secret("local", &registry)).await;
    let skopeo = Skopeo::new();
    let dest = skopeo.dest("copy");

    let src = format!("docker://{}/local/team/secret:v1", proxy.host());
    let out = skopeo
        .copy(&[], &src, &format!("dir:{}", dest.display()))
        .await;

    assert!(!out.status.success(), "copy of a denied image succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("denied"),
        "skopeo shows the denial: {stderr}"
    );
    let ids = denial_ids(&proxy).await;
    assert!(
        ids.iter()
            .any(|id| stderr.contains(&format!("(decision {id})"))),
        "skopeo names an audited decision {ids:?}: {stderr}"
    );
    assert!(request_count(&proxy, "manifest", "403").await >= 1.0);
    assert_eq!(proxy.upstream_requests("blob").await, 0.0);
    assert!(!dest.join("manifest.json").exists());
}
