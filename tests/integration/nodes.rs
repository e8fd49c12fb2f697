//! Node runtime configuration: `portcullis nodes generate` writes what
//! makes Portcullis the only route (real `ctr` and `skopeo` pull through
//! it, a denial stays a denial), and `portcullis nodes check` reports the
//! mirror and missing-`_default` configurations that real clients use to
//! pull around it (shown here doing so, as documented).

use std::path::Path;
use std::process::{Command, Output};

use crate::support::containerd::Containerd;
use crate::support::dockerd::Dockerd;
use crate::support::runnable::{Flavour, Runnable};
use crate::support::skopeo::Skopeo;
use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// `team/app:v1` allowed and `team/secret:v1` denied on upstream
/// `registry.test`.
async fn setup(seed: u64) -> (Registry, Proxy) {
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry.url());
    pusher
        .image(
            "team/app",
            "v1",
            &Runnable::new(seed, Flavour::Oci, "amd64").image,
        )
        .await;
    pusher
        .image(
            "team/secret",
            "v1",
            &Runnable::new(seed + 1, Flavour::Oci, "amd64").image,
        )
        .await;
    let proxy = Proxy::start(
        ProxyConfig::new()
            .upstream("registry.test", &registry.url())
            .policy(Policy::deny("closed", "registry.test/team/secret"))
            .allow_all(),
    )
    .await;
    (registry, proxy)
}

fn nodes(proxy: &Proxy, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("nodes")
        .args(&args[..1])
        .arg("--config")
        .arg(proxy.config_path())
        .arg("--address")
        .arg(proxy.url())
        .args(&args[1..])
        .output()
        .unwrap()
}

fn generate(proxy: &Proxy, out: &Path) {
    let o = nodes(proxy, &["generate", "--out", &out.display().to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `nodes check` on the files named: its exit code and report.
fn check(proxy: &Proxy, files: &[&str]) -> (i32, String) {
    let mut args = vec!["check", "--root", "/nonexistent"];
    args.extend(files);
    let o = nodes(proxy, &args);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

async fn ctr_pull(ctrd: &Containerd, hosts: &Path, reference: &str) -> Output {
    let hosts = hosts.display().to_string();
    ctrd.ctr(&[
        "images",
        "pull",
        "--plain-http",
        "--hosts-dir",
        &hosts,
        "--snapshotter",
        ctrd.snapshotter,
        reference,
    ])
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_containerd_hosts_route_every_registry_through_portcullis_and_check_finds_the_bypasses()
 {
    let (registry, proxy) = setup(401).await;
    // A registry Portcullis does not proxy, reachable from the node.
    let other = Registry::start().await;
    Pusher::new(&other.url())
        .image(
            "team/app",
            "v1",
            &Runnable::new(403, Flavour::Oci, "amd64").image,
        )
        .await;
    let out = tempfile::tempdir().unwrap();
    generate(&proxy, out.path());
    let hosts = out.path().join("containerd/certs.d");
    let hosts_arg = format!("--containerd-hosts={}", hosts.display());
    assert_eq!(
        check(&proxy, &[&hosts_arg]),
        (
            0,
            "ok: every route checked goes through Portcullis\n".into()
        )
    );
    let ctrd = Containerd::start().await;

    let allowed = ctr_pull(&ctrd, &hosts, "registry.test/team/app:v1").await;
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let denied = ctr_pull(&ctrd, &hosts, "registry.test/team/secret:v1").await;
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("403 Forbidden: denied by policy"));
    // The origin named by its own address goes through Portcullis too.
    let direct = format!("{}/team/secret:v1", registry.host());
    let by_address = ctr_pull(&ctrd, &hosts, &direct).await;
    assert!(
        !by_address.status.success(),
        "the origin's address bypassed the denial"
    );
    // `_default` sends a registry nobody configured to Portcullis, which
    // refuses it (404 NAME_UNKNOWN), though the registry holds the image.
    let unproxied = format!("{}/team/app:v1", other.host());
    let refused = ctr_pull(&ctrd, &hosts, &unproxied).await;
    assert!(
        !refused.status.success(),
        "an unproxied registry was pulled"
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains(&format!(
            "response was http.StatusNotFound\" host=\"{}\"",
            proxy.host()
        )),
        "{said}"
    );

    // Bypass 1: without `_default`, containerd pulls that registry directly.
    std::fs::remove_dir_all(hosts.join("_default")).unwrap();
    let (code, report) = check(&proxy, &[&hosts_arg]);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("_default/hosts.toml: missing"), "{report}");
    let bypassed = ctr_pull(&ctrd, &hosts, &unproxied).await;
    assert!(
        bypassed.status.success(),
        "documented bypass: {}",
        String::from_utf8_lossy(&bypassed.stderr)
    );

    // Bypass 2: Portcullis as a mirror with the origin as `server`:
    // containerd falls back to the origin after the 403.
    std::fs::write(
        hosts.join(registry.host()).join("hosts.toml"),
        format!(
            "server = \"{}\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            registry.url(),
            proxy.url()
        ),
    )
    .unwrap();
    let (code, report) = check(&proxy, &[&hosts_arg]);
    assert_eq!(code, 1);
    assert!(
        report.contains(&format!("server is {}, not Portcullis", registry.url())),
        "{report}"
    );
    let fell_back = ctr_pull(&ctrd, &hosts, &direct).await;
    assert!(
        fell_back.status.success(),
        "documented bypass: {}",
        String::from_utf8_lossy(&fell_back.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_registries_conf_routes_skopeo_through_portcullis_and_check_finds_a_mirror_bypass()
 {
    let (registry, proxy) = setup(411).await;
    let out = tempfile::tempdir().unwrap();
    generate(&proxy, out.path());
    let conf = out.path().join("containers/registries.conf");
    let conf_arg = format!("--registries-conf={}", conf.display());
    let (code, report) = check(&proxy, &[&conf_arg]);
    assert_eq!(code, 0, "{report}");
    let skopeo = Skopeo::new();
    let global = ["--registries-conf", conf.to_str().unwrap()];

    let dest = skopeo.dest("app");
    let allowed = skopeo
        .copy(
            &global,
            "docker://registry.test/team/app:v1",
            &format!("dir:{}", dest.display()),
        )
        .await;
    skopeo::assert_success("copy through the generated registries.conf", &allowed);
    assert!(
        proxy
            .metric(
                "portcullis_requests_total",
                &["endpoint=\"manifest\"", "status=\"200\""]
            )
            .await
            >= 1.0
    );
    let denied = skopeo
        .copy(
            &global,
            "docker://registry.test/team/secret:v1",
            &format!("dir:{}", skopeo.dest("secret").display()),
        )
        .await;
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("denied"));

    // Bypass: Portcullis as a mirror in front of the origin. The mirror's
    // 403 sends containers/image to the origin, which has no policy.
    let mirror = out.path().join("mirror.conf");
    std::fs::write(
        &mirror,
        format!(
            "[[registry]]\nprefix = \"registry.test\"\nlocation = \"{}\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"{}/registry.test\"\ninsecure = true\n",
            registry.host(),
            proxy.host()
        ),
    )
    .unwrap();
    let (code, report) = check(
        &proxy,
        &[&format!("--registries-conf={}", mirror.display())],
    );
    assert_eq!(code, 1);
    assert!(report.contains("has mirrors"), "{report}");
    assert!(
        report.contains(&format!("location {} is not Portcullis", registry.host())),
        "{report}"
    );
    let bypassed = skopeo
        .copy(
            &["--registries-conf", mirror.to_str().unwrap()],
            "docker://registry.test/team/secret:v1",
            &format!("dir:{}", skopeo.dest("bypass").display()),
        )
        .await;
    skopeo::assert_success("documented bypass through a mirror", &bypassed);
}

#[test]
fn check_reports_docker_registry_mirrors_and_legacy_containerd_mirrors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\n[cache]\ndir = \"c\"\n[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n[[policy]]\nname = \"all\"\nmatch = [\"**\"]\nallow_unverified = true\n",
    )
    .unwrap();
    let docker = dir.path().join("daemon.json");
    std::fs::write(
        &docker,
        r#"{"registry-mirrors": ["https://portcullis.example:5000"]}"#,
    )
    .unwrap();
    let ctrd = dir.path().join("config.toml");
    std::fs::write(
        &ctrd,
        "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\nendpoint = [\"https://portcullis.example:5000\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "nodes",
            "check",
            "--root",
            "/nonexistent",
            "--address",
            "https://portcullis.example:5000",
            "--config",
        ])
        .arg(&config)
        .arg(format!("--docker-daemon={}", docker.display()))
        .arg(format!("--containerd-config={}", ctrd.display()))
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems: Vec<&str> = report["bypasses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["problem"].as_str().unwrap())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("registry-mirrors: Docker falls back")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("registry.mirrors is set")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("has no config_path")),
        "{problems:?}"
    );
}

#[test]
fn the_shipped_node_examples_are_what_nodes_generate_writes_for_the_container_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(BIN)
        .args([
            "nodes",
            "generate",
            "--address",
            "https://portcullis.example.internal:5000",
            "--config",
        ])
        .arg(root.join("config/container.toml"))
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shipped = root.join("deploy/nodes/example");
    let written = files_under(out.path());
    let relative = |base: &Path, files: Vec<std::path::PathBuf>| -> Vec<std::path::PathBuf> {
        let mut r: Vec<_> = files
            .into_iter()
            .map(|f| f.strip_prefix(base).unwrap().to_path_buf())
            .collect();
        r.sort();
        r
    };
    assert_eq!(
        relative(out.path(), written.clone()),
        relative(&shipped, files_under(&shipped))
    );
    for f in written {
        let rel = f.strip_prefix(out.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            std::fs::read_to_string(shipped.join(rel)).unwrap(),
            "deploy/nodes/example/{} differs: rerun nodes generate",
            rel.display()
        );
    }
}

/// The ids of the denials in the audit log, once there is one (the log
/// is written behind the response).
async fn denial_ids(proxy: &Proxy) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids = proxy
            .audit_events()
            .iter()
            .filter(|e| e["decision"] == "deny")
            .filter_map(|e| e["id"].as_str().map(str::to_string))
            .collect();
        if !ids.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_pull_of_a_denied_image_shows_the_reason_and_the_audited_decision_id() {
    let (_registry, proxy) = setup(421).await;
    let d = tempfile::tempdir().unwrap();
    let out = Command::new("podman")
        .arg("--root")
        .arg(d.path().join("root"))
        .arg("--runroot")
        .arg(d.path().join("run"))
        .args(["--storage-driver", "vfs", "pull", "--tls-verify=false"])
        .arg(format!("{}/registry.test/team/secret:v1", proxy.host()))
        .output()
        .expect("podman must be installed (Debian package podman)");
    assert!(!out.status.success(), "podman pulled a denied image");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("denied: no_policy (decision "), "{stderr}");
    let ids = denial_ids(&proxy).await;
    assert!(
        ids.iter()
            .any(|id| stderr.contains(&format!("(decision {id})"))),
        "{ids:?}: {stderr}"
    );
}

/// Docker pulls the allowed image and, for the denied one, prints the
/// body's message: the reason and the decision id the audit log holds.
#[tokio::test(flavor = "multi_thread")]
async fn docker_pull_of_a_denied_image_shows_the_reason_and_the_audited_decision_id() {
    let (_registry, proxy) = setup(441).await;
    let docker = Dockerd::start().await;
    let image = |repo: &str| format!("{}/registry.test/team/{repo}:v1", proxy.host());
    let out = docker.docker(&["pull", &image("app")]).await;
    assert!(
        out.status.success(),
        "{}
{}",
        String::from_utf8_lossy(&out.stderr),
        docker.log()
    );
    let out = docker.docker(&["pull", &image("secret")]).await;
    assert!(!out.status.success(), "docker pulled a denied image");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("denied: no_policy (decision "), "{stderr}");
    // Docker asks more than once; the id it prints is one the log holds.
    let ids = denial_ids(&proxy).await;
    assert!(
        ids.iter()
            .any(|id| stderr.contains(&format!("no_policy (decision {id})"))),
        "{ids:?}: {stderr}"
    );
    let out = docker
        .docker(&["image", "ls", "--format", "{{.Repository}}"])
        .await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("team/app") && !listed.contains("team/secret"),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_a_containerd_config_that_never_reads_the_hosts_directory() {
    let (_registry, proxy) = setup(431).await;
    let out = tempfile::tempdir().unwrap();
    generate(&proxy, out.path());
    let hosts = out.path().join("containerd/certs.d");
    let config = out.path().join("containerd/config.toml");
    let args = [
        format!("--containerd-hosts={}", hosts.display()),
        format!("--containerd-config={}", config.display()),
    ];
    let run = || check(&proxy, &[&args[0], &args[1]]);
    let cri = "[plugins.\"io.containerd.grpc.v1.cri\".registry]";
    for (text, says) in [
        (None, "missing: containerd 1.x"),
        (
            Some("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\nsnapshotter = \"overlayfs\"\n".to_string()),
            "no registry config_path",
        ),
        (Some(format!("version = 2\n{cri}\nconfig_path = \"\"\n")), "has no config_path"),
        (Some(format!("version = 2\n{cri}\nconfig_path = \"/elsewhere\"\n")), "config_path is /elsewhere"),
    ] {
        match &text {
            Some(t) => std::fs::write(&config, t).unwrap(),
            None => {
                let _ = std::fs::remove_file(&config);
            }
        }
        let (code, report) = run();
        assert_eq!(code, 1, "{text:?}: {report}");
        assert!(report.contains(says), "{text:?}: {report}");
    }
    std::fs::write(
        &config,
        format!(
            "version = 2\n{cri}\nconfig_path = \"{}\"\n",
            hosts.display()
        ),
    )
    .unwrap();
    assert_eq!(run().0, 0);
    // containerd 2.x reads /etc/containerd/certs.d by default.
    std::fs::write(&config, "version = 3\n").unwrap();
    assert_eq!(run().0, 0);
    // Nothing to look at is not "ok".
    assert_eq!(check(&proxy, &[]).0, 1);
}
