//! `deploy/kubernetes`: a kustomize base (`base/`, one replica) whose pieces
//! refer to each other correctly and run Portcullis the way its embedded
//! config expects, and the `overlays/ha` overlay that runs several replicas
//! sharing a bucket and Redis on top of it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;
use crate::support::free_port;

fn base() -> PathBuf {
    repo_path("deploy/kubernetes/base")
}

/// Every document of every manifest in the base (not the kustomization).
fn manifests() -> Vec<(PathBuf, Value)> {
    files_under(&base())
        .into_iter()
        .filter(|p| has_extension(p, &["yaml", "yml"]) && !p.ends_with("kustomization.yaml"))
        .flat_map(|p| yaml_documents(&p).into_iter().map(move |d| (p.clone(), d)))
        .collect()
}

/// The only manifest of this kind.
fn one(kind: &str) -> Value {
    let mut found: Vec<Value> = manifests()
        .into_iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found.remove(0)
}

/// The manifest of this kind with this name.
fn named(kind: &str, name: &str) -> Value {
    let mut found: Vec<Value> = manifests()
        .into_iter()
        .filter(|(_, d)| d["kind"] == kind && d["metadata"]["name"] == name)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind} {name}");
    found.remove(0)
}

fn container() -> Value {
    let deployment = one("Deployment");
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(containers.len(), 1, "one container");
    containers[0].clone()
}

/// The Portcullis config in the ConfigMap, parsed.
fn embedded_config() -> toml::Table {
    let configmap = one("ConfigMap");
    configmap["data"]["portcullis.toml"]
        .as_str()
        .expect("portcullis.toml in the ConfigMap")
        .parse()
        .unwrap()
}

fn listen(config: &toml::Table, table: &str) -> SocketAddr {
    config[table]["listen"].as_str().unwrap().parse().unwrap()
}

/// A container port by number or by name, as probes and Services name it.
fn container_port(port: &Value) -> u64 {
    let ports = container()["ports"].as_array().unwrap().clone();
    let found = ports
        .iter()
        .find(|p| match port {
            Value::String(name) => p["name"] == name.as_str(),
            n => p["containerPort"] == *n,
        })
        .unwrap_or_else(|| panic!("no container port {port}"));
    found["containerPort"].as_u64().unwrap()
}

/// A Kubernetes quantity (`10Gi`, `512Mi`, `1G`, `1000`) in bytes.
fn quantity_bytes(q: &str) -> u64 {
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<u64>().unwrap() * factor;
        }
    }
    q.parse().unwrap()
}

fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().unwrap();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels[k] == *v)
}

#[test]
fn every_manifest_parses_with_api_version_kind_and_name_and_names_no_namespace() {
    let all = manifests();
    assert!(all.len() >= 6, "the base has its manifests");
    for (path, doc) in &all {
        let file = path.display();
        for field in ["apiVersion", "kind"] {
            assert!(
                doc[field].as_str().is_some_and(|s| !s.is_empty()),
                "{file}: no {field}"
            );
        }
        assert!(
            doc["metadata"]["name"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{file}: no metadata.name"
        );
        assert!(
            doc["metadata"].get("namespace").is_none(),
            "{file}: a base names no namespace"
        );
    }
    let kinds: BTreeSet<String> = all
        .iter()
        .map(|(_, d)| {
            format!(
                "{} {}",
                d["apiVersion"].as_str().unwrap(),
                d["kind"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "apps/v1 Deployment",
        "v1 ConfigMap",
        "v1 Secret",
        "v1 Service",
        "monitoring.coreos.com/v1 ServiceMonitor",
    ] {
        assert!(
            kinds.contains(expected),
            "{expected} missing from {kinds:?}"
        );
    }
}

#[test]
fn kustomization_lists_exactly_the_manifests_in_the_folder() {
    let docs = yaml_documents(&base().join("kustomization.yaml"));
    assert_eq!(docs.len(), 1);
    let k = &docs[0];
    assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k["kind"], "Kustomization");
    assert!(k.get("namespace").is_none(), "a base names no namespace");
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let present: BTreeSet<String> = files_under(&base())
        .iter()
        .filter(|p| has_extension(p, &["yaml", "yml"]) && !p.ends_with("kustomization.yaml"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, present);
}

#[test]
fn deployment_runs_one_non_root_replica_with_read_only_root_and_no_capabilities() {
    let deployment = one("Deployment");
    // One: the base shares no state, and behind the round-robin Service a
    // second replica would deny blobs of manifests it did not decide.
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    let c = container();
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(sc["capabilities"].get("add").is_none());
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][bound][resource].is_string(),
                "resources.{bound}.{resource}"
            );
        }
    }
    let memory_limit = quantity_bytes(c["resources"]["limits"]["memory"].as_str().unwrap());
    let hot_manifests = portcullis::config::parse_size(
        embedded_config()["cache"]["memory_bytes"].as_str().unwrap(),
    )
    .unwrap();
    assert!(
        hot_manifests * 2 <= memory_limit,
        "cache.memory_bytes leaves room in the memory limit"
    );
}

#[test]
fn probes_use_the_admin_health_endpoints_on_a_port_the_container_and_service_expose() {
    let config = embedded_config();
    let admin = listen(&config, "admin");
    let registry = listen(&config, "server");
    assert!(
        admin.ip().is_unspecified() && registry.ip().is_unspecified(),
        "listeners reachable from the kubelet and the Service, not loopback"
    );
    let c = container();
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(
            container_port(&get["port"]),
            u64::from(admin.port()),
            "{probe} port"
        );
    }
    // The paths are the admin listener's own.
    let admin_source = read(&repo_path("src/server/admin.rs"));
    for path in ["\"/healthz\"", "\"/readyz\"", "\"/metrics\""] {
        assert!(
            admin_source.contains(path),
            "{path} served by src/server/admin.rs"
        );
    }
    let service = named("Service", "portcullis");
    let target_ports: Vec<u64> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| container_port(&p["targetPort"]))
        .collect();
    assert!(
        target_ports.contains(&u64::from(admin.port())),
        "Service exposes admin"
    );
    assert!(
        target_ports.contains(&u64::from(registry.port())),
        "Service exposes the registry"
    );
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_paths_answer_200_from_portcullis_running_the_configmap_config() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = materialise_configmap_configs(dir.path());
    let path = &dir.path().join("portcullis-config/portcullis.toml");
    assert!(mounted.contains(path), "the base's ConfigMap config");
    let config = embedded_config();
    let (port, admin) = (free_port(), free_port());
    let cache = dir.path().join("cache");
    let mut text = read(path);
    for (from, to) in [
        (
            listen(&config, "server").to_string(),
            format!("127.0.0.1:{port}"),
        ),
        (
            listen(&config, "admin").to_string(),
            format!("127.0.0.1:{admin}"),
        ),
        (
            config["cache"]["dir"].as_str().unwrap().to_string(),
            cache.display().to_string(),
        ),
    ] {
        let quoted = format!("\"{from}\"");
        assert_eq!(
            text.matches(&quoted).count(),
            1,
            "{from} once in the config"
        );
        text = text.replace(&quoted, &format!("\"{to}\""));
    }
    std::fs::write(path, text).unwrap();
    let _child = Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let c = container();
    let started = Instant::now();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let url = format!(
            "http://127.0.0.1:{admin}{}",
            c[probe]["httpGet"]["path"].as_str().unwrap()
        );
        let status = loop {
            match client.get(&url).send().await {
                Ok(r) => break r.status(),
                Err(_) if started.elapsed() < Duration::from_secs(20) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{url}: {e}"),
            }
        };
        assert_eq!(status, 200, "{probe}: {url}");
    }
    let metrics = client
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("portcullis_cache_budget_bytes"),
        "the ServiceMonitor's path serves metrics"
    );
    assert!(cache.is_dir(), "the cache dir is where the config says");
}

#[test]
fn service_and_service_monitor_select_the_deployments_pods_and_the_base_has_no_pdb_or_hpa() {
    let deployment = one("Deployment");
    let name = deployment["metadata"]["name"].clone();
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let service = named("Service", "portcullis");
    assert!(selects(&service["spec"]["selector"], pod_labels), "Service");
    // A budget keeping the one replica would block every drain, and an
    // autoscaler would add replicas that share nothing: both are overlays/ha's.
    for kind in ["PodDisruptionBudget", "HorizontalPodAutoscaler"] {
        assert!(
            manifests().iter().all(|(_, d)| d["kind"] != kind),
            "no {kind} in the single-replica base"
        );
    }
    assert_eq!(name, "portcullis");
    let monitor = one("ServiceMonitor");
    assert!(
        selects(
            &monitor["spec"]["selector"]["matchLabels"],
            &service["metadata"]["labels"]
        ),
        "ServiceMonitor selects the Service"
    );
    let admin = listen(&embedded_config(), "admin").port();
    for endpoint in monitor["spec"]["endpoints"].as_array().unwrap() {
        assert_eq!(endpoint["path"], "/metrics");
        let port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == endpoint["port"])
            .expect("the ServiceMonitor's port is a named Service port");
        assert_eq!(container_port(&port["targetPort"]), u64::from(admin));
    }
}

/// The volume mounted at `path`, and the mount.
fn mounted_volume(path: &Path) -> (Value, Value) {
    let deployment = one("Deployment");
    let mount = container()["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("nothing mounted at {}", path.display()))
        .clone();
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap()
        .clone();
    (volume, mount)
}

#[test]
fn config_credentials_and_cache_paths_are_backed_by_mounted_volumes() {
    let c = container();
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = Path::new(args[args.iter().position(|a| *a == "--config").unwrap() + 1]);
    let (volume, mount) = mounted_volume(config_path);
    assert_eq!(
        volume["configMap"]["name"],
        one("ConfigMap")["metadata"]["name"]
    );
    assert_eq!(mount["readOnly"], true);
    let key = config_path
        .strip_prefix(mount["mountPath"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        key,
        Path::new("portcullis.toml"),
        "--config names the ConfigMap's entry"
    );

    // The cache is writable despite the read-only root, and its budget fits
    // the volume with room for writes in progress.
    let config = embedded_config();
    let cache_dir = Path::new(config["cache"]["dir"].as_str().unwrap());
    let (volume, mount) = mounted_volume(cache_dir);
    assert_ne!(mount["readOnly"], true);
    let size_limit = quantity_bytes(
        volume["emptyDir"]["sizeLimit"]
            .as_str()
            .expect("an emptyDir with a sizeLimit"),
    );
    let budget =
        portcullis::config::parse_size(config["cache"]["max_bytes"].as_str().unwrap()).unwrap();
    assert!(
        budget <= size_limit / 10 * 9,
        "cache.max_bytes leaves 10% of the volume free"
    );
    let storage_limit = quantity_bytes(
        c["resources"]["limits"]["ephemeral-storage"]
            .as_str()
            .unwrap(),
    );
    assert!(
        size_limit <= storage_limit,
        "the pod may use its whole cache volume"
    );

    // Credentials: the Secret is mounted whole (not via subPath, so that
    // rotation reaches the pod), and every credentials file the config
    // names, commented out or not, is one of its entries.
    let secret = one("Secret");
    let (volume, mount) = mounted_volume(Path::new("/run/secrets/portcullis/x"));
    assert_eq!(volume["secret"]["secretName"], secret["metadata"]["name"]);
    assert!(mount.get("subPath").is_none());
    let text = one("ConfigMap")["data"]["portcullis.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let named: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            l.trim_start_matches([' ', '#'])
                .strip_prefix("credentials_file = ")
        })
        .map(|v| v.trim().trim_matches('"'))
        .collect();
    assert!(!named.is_empty(), "the config shows where credentials go");
    for file in named {
        let key = Path::new(file)
            .strip_prefix(mount["mountPath"].as_str().unwrap())
            .unwrap_or_else(|_| panic!("{file} is under the Secret's mount"));
        assert!(
            secret["stringData"].get(key.to_str().unwrap()).is_some(),
            "{file} is an entry of the Secret"
        );
    }
}

#[test]
fn secret_credentials_have_the_shape_portcullis_reads() {
    let secret = one("Secret");
    let entries = secret["stringData"].as_object().unwrap();
    assert!(!entries.is_empty());
    for (key, value) in entries {
        let parsed: Result<portcullis::upstream::Credentials, _> =
            serde_json::from_str(value.as_str().unwrap());
        assert!(parsed.is_ok(), "{key}: {parsed:?}");
    }
}

#[test]
fn configmap_config_passes_check_config_with_its_keys_mounted_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let configs = materialise_configmap_configs(dir.path());
    let config = &dir.path().join("portcullis-config/portcullis.toml");
    assert!(
        configs.contains(config),
        "the base's ConfigMap embeds portcullis.toml"
    );
    let summary = check_config(config).unwrap_or_else(|e| panic!("{e}"));
    assert!(summary.contains("authority acme"), "{summary}");
    assert!(summary.contains("policy everything-else"), "{summary}");
}

#[test]
fn a_headless_service_lists_every_replica_on_the_admin_port_and_the_config_names_it_in_peers() {
    let deployment = one("Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let peers = named("Service", "portcullis-peers");
    assert_eq!(peers["spec"]["clusterIP"], "None", "headless");
    assert!(
        selects(&peers["spec"]["selector"], pod_labels),
        "it selects the Deployment's pods"
    );
    assert_ne!(
        peers["spec"]["publishNotReadyAddresses"], true,
        "only ready pods: a replica defers only to a peer in the load balancer"
    );
    let monitor = one("ServiceMonitor");
    assert!(
        !selects(
            &monitor["spec"]["selector"]["matchLabels"],
            &peers["metadata"]["labels"]
        ),
        "the ServiceMonitor does not scrape every pod twice"
    );
    let config = embedded_config();
    let admin = listen(&config, "admin").port();
    let port = &peers["spec"]["ports"].as_array().unwrap()[0];
    assert_eq!(container_port(&port["targetPort"]), u64::from(admin));
    // DNS names the pods' own addresses: the port asked is the pod's.
    assert_eq!(port["port"].as_u64(), Some(u64::from(admin)));
    let listed: Vec<&str> = config["admin"]["peers"]
        .as_array()
        .expect("admin.peers in the ConfigMap's config")
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(listed, [format!("portcullis-peers:{admin}")]);
}

#[test]
fn deploy_kubernetes_applies_the_base_as_it_is() {
    // `kubectl apply -k deploy/kubernetes` is the single replica: the
    // folder's kustomization only names base/ (kustomize refuses a base
    // whose folder holds the overlay that uses it, hence the two folders).
    let top = repo_path("deploy/kubernetes");
    let docs = yaml_documents(&top.join("kustomization.yaml"));
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["kind"], "Kustomization");
    assert_eq!(docs[0]["resources"], serde_json::json!(["base"]));
    assert!(docs[0].get("patches").is_none() && docs[0].get("namespace").is_none());
    let entries: BTreeSet<String> = std::fs::read_dir(&top)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        entries,
        BTreeSet::from(["base", "kustomization.yaml", "overlays"].map(String::from))
    );
}

// --- overlays/ha: several replicas sharing a bucket and Redis -------------

fn ha() -> PathBuf {
    repo_path("deploy/kubernetes/overlays/ha")
}

fn ha_kustomization() -> Value {
    let docs = yaml_documents(&ha().join("kustomization.yaml"));
    assert_eq!(docs.len(), 1);
    docs[0].clone()
}

/// The one document of this kind in the overlay (resources and patches).
fn ha_one(kind: &str) -> Value {
    let mut found: Vec<Value> = files_under(&ha())
        .into_iter()
        .filter(|p| has_extension(p, &["yaml", "yml"]) && !p.ends_with("kustomization.yaml"))
        .flat_map(|p| yaml_documents(&p))
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind} in overlays/ha");
    found.remove(0)
}

fn ha_config() -> toml::Table {
    ha_one("ConfigMap")["data"]["portcullis.toml"]
        .as_str()
        .expect("portcullis.toml in the overlay's ConfigMap patch")
        .parse()
        .unwrap()
}

#[test]
fn ha_overlay_builds_on_the_base_and_lists_every_file_it_holds() {
    let k = ha_kustomization();
    assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k["kind"], "Kustomization");
    let resources: Vec<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(resources[0], "../../base", "the base, first");
    assert_eq!(
        ha().join(resources[0]).canonicalize().unwrap(),
        base().canonicalize().unwrap()
    );
    let patches: Vec<&str> = k["patches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    let listed: BTreeSet<String> = resources[1..]
        .iter()
        .chain(&patches)
        .map(|s| s.to_string())
        .collect();
    let present: BTreeSet<String> = files_under(&ha())
        .iter()
        .filter(|p| has_extension(p, &["yaml", "yml"]) && !p.ends_with("kustomization.yaml"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, present);
    assert!(
        ha().join("README.md").is_file(),
        "the overlay says what it needs"
    );
    for file in &present {
        for doc in yaml_documents(&ha().join(file)) {
            assert!(
                doc["apiVersion"].is_string() && doc["kind"].is_string(),
                "{file}"
            );
            assert!(
                doc["metadata"]["name"].is_string(),
                "{file}: no metadata.name"
            );
            assert!(
                doc["metadata"].get("namespace").is_none(),
                "{file}: a namespace"
            );
        }
    }
    // The patches name what they patch in the base.
    for patch in patches {
        for doc in yaml_documents(&ha().join(patch)) {
            let kind = doc["kind"].as_str().unwrap();
            let name = doc["metadata"]["name"].as_str().unwrap();
            named(kind, name);
        }
    }
}

#[test]
fn ha_overlay_runs_three_replicas_spread_over_nodes_with_a_pdb_and_an_hpa_from_three() {
    let deployment = one("Deployment");
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let patch = ha_one("Deployment");
    let replicas = patch["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(replicas, 3);
    let anti = &patch["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    let terms = anti["preferredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .expect("pod anti-affinity");
    assert!(terms.iter().any(|t| {
        t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
            && selects(
                &t["podAffinityTerm"]["labelSelector"]["matchLabels"],
                pod_labels,
            )
    }));
    let pdb = ha_one("PodDisruptionBudget");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels));
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert!(
        (1..replicas).contains(&pdb["spec"]["minAvailable"].as_u64().unwrap()),
        "the PDB keeps replicas serving and still lets a node drain"
    );
    let hpa = ha_one("HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert_eq!(hpa["spec"]["minReplicas"].as_u64(), Some(replicas));
    assert!(hpa["spec"]["maxReplicas"].as_u64() >= hpa["spec"]["minReplicas"].as_u64());
}

#[test]
fn ha_config_is_the_base_config_with_a_shared_bucket_and_redis_and_passes_check_config() {
    let mut config = ha_config();
    let cache = config.get_mut("cache").unwrap().as_table_mut().unwrap();
    assert_eq!(cache.remove("store").unwrap().as_str(), Some("s3"));
    let s3 = cache.remove("s3").expect("[cache.s3]");
    for key in ["bucket", "access_key_id_file", "secret_access_key_file"] {
        assert!(s3[key].is_str(), "cache.s3.{key}");
    }
    let cluster = config.remove("cluster").expect("[cluster]");
    assert!(
        cluster["redis"].as_str().unwrap().starts_with("redis://"),
        "an in-cluster Redis"
    );
    for key in ["password_file", "secret_file"] {
        assert!(cluster[key].is_str(), "cluster.{key}");
    }
    assert_eq!(
        config,
        embedded_config(),
        "apart from store, [cache.s3] and [cluster], the overlay's config is the base's"
    );

    let dir = tempfile::tempdir().unwrap();
    let configs = materialise_configmap_configs(dir.path());
    let path = dir
        .path()
        .join("overlays/ha/portcullis-config/portcullis.toml");
    assert!(configs.contains(&path), "{configs:?}");
    assert!(
        path.with_file_name("acme.pub").is_file(),
        "the base's key stays beside it"
    );
    let summary = check_config(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(summary.contains("authority acme"), "{summary}");
}

#[test]
fn ha_secret_files_the_config_names_are_entries_of_whole_mounted_secrets() {
    let config = ha_config();
    let files = [
        &config["cache"]["s3"]["access_key_id_file"],
        &config["cache"]["s3"]["secret_access_key_file"],
        &config["cluster"]["password_file"],
        &config["cluster"]["secret_file"],
    ];
    let pod = &ha_one("Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"].as_array().unwrap()[0];
    assert_eq!(
        container["name"],
        container_name(),
        "patches the base's container"
    );
    let mounts = container["volumeMounts"].as_array().unwrap();
    let base_mounts: Vec<String> = self::container()["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().to_string())
        .collect();
    let secrets: Vec<Value> = ["portcullis-s3", "portcullis-cluster"]
        .iter()
        .map(|name| {
            files_under(&ha())
                .into_iter()
                .filter(|p| has_extension(p, &["yaml"]))
                .flat_map(|p| yaml_documents(&p))
                .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == *name)
                .unwrap_or_else(|| panic!("Secret {name} in overlays/ha"))
        })
        .collect();
    for file in files {
        let file = Path::new(file.as_str().unwrap());
        let mount = mounts
            .iter()
            .find(|m| file.starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("nothing mounted at {}", file.display()));
        let at = mount["mountPath"].as_str().unwrap();
        assert_eq!(mount["readOnly"], true);
        assert!(
            mount.get("subPath").is_none(),
            "whole Secrets: rotation reaches the pod"
        );
        assert!(
            base_mounts
                .iter()
                .all(|b| !file.starts_with(b) && !Path::new(b).starts_with(at)),
            "{at} is apart from the base's mounts"
        );
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let secret = secrets
            .iter()
            .find(|s| s["metadata"]["name"] == volume["secret"]["secretName"])
            .unwrap_or_else(|| panic!("{}: not one of the overlay's Secrets", file.display()));
        let key = file.strip_prefix(at).unwrap().to_str().unwrap();
        assert!(
            secret["stringData"].get(key).is_some(),
            "{} is an entry of Secret {}",
            file.display(),
            secret["metadata"]["name"]
        );
    }
    // Placeholders, plainly; the HMAC secret's is too short to start with
    // (at least 32 bytes are needed), so it cannot go live by mistake.
    for secret in &secrets {
        for (key, value) in secret["stringData"].as_object().unwrap() {
            assert!(value.as_str().unwrap().contains("REPLACE_ME"), "{key}");
        }
    }
    let hmac = Path::new(config["cluster"]["secret_file"].as_str().unwrap());
    let placeholder = secrets[1]["stringData"][hmac.file_name().unwrap().to_str().unwrap()]
        .as_str()
        .unwrap();
    assert!(placeholder.trim().len() < 32);
}

fn container_name() -> Value {
    container()["name"].clone()
}
