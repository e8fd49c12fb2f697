//! The deployment kit under `deploy/`: Kubernetes manifests that hold
//! together and run Portcullis as its config expects, alert rules that
//! promtool accepts and whose unit tests pass, and a dashboard that queries
//! only metrics Portcullis exports. Every Portcullis config shipped in
//! `config/` or embedded in `deploy/` passes `portcullis check-config`.

mod kubernetes;
mod monitoring;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir`, recursively, in a stable order.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.contains(&e))
}

/// Every non-empty YAML document in a file, as a JSON value.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// `portcullis check-config FILE`: its stdout, or its stderr as the error.
fn check_config(path: &Path) -> Result<String, String> {
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Runs promtool, failing (never skipping) when it is not installed.
fn promtool(args: &[&str], dir: &Path) -> Output {
    match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed, and the alert rules cannot be checked without it: \
             install the Debian package `prometheus` (apt-get install -y prometheus; \
             `bash .ci/test` does so when run as root)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    }
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether a TOML text is a Portcullis config rather than another tool's
/// (containerd's `hosts.toml`): it has `[server]` and `[cache]` tables.
fn is_portcullis_config(text: &str) -> bool {
    text.parse::<toml::Table>().is_ok_and(|t| {
        t.get("server").is_some_and(toml::Value::is_table)
            && t.get("cache").is_some_and(toml::Value::is_table)
    })
}

/// The overlay a file under `deploy/` belongs to: `ha` for
/// `deploy/kubernetes/overlays/ha/...`, `None` for a base.
fn overlay_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(repo_path("deploy")).unwrap();
    let mut parts = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy());
    parts.by_ref().find(|p| p == "overlays")?;
    parts.next().map(|p| p.into_owned())
}

/// Writes every ConfigMap under `deploy/` that embeds a Portcullis config
/// into `dir`, one folder per ConfigMap with every entry as a file (as the
/// pod mounts it), and returns the paths of the embedded configs, those of
/// bases first. A ConfigMap in an overlay is a strategic-merge patch: its
/// entries go over those of the base's ConfigMap of the same name, in
/// `overlays/<overlay>/<name>/`.
fn materialise_configmap_configs(dir: &Path) -> Vec<PathBuf> {
    let mut bases: Vec<(String, serde_json::Map<String, Value>)> = Vec::new();
    let mut patches: Vec<(String, String, serde_json::Map<String, Value>)> = Vec::new();
    for file in files_under(&repo_path("deploy")) {
        if !has_extension(&file, &["yaml", "yml"]) {
            continue;
        }
        for doc in yaml_documents(&file) {
            if doc["kind"] != "ConfigMap" {
                continue;
            }
            let Some(data) = doc["data"].as_object() else {
                continue;
            };
            let name = doc["metadata"]["name"].as_str().unwrap().to_string();
            match overlay_of(&file) {
                None => bases.push((name, data.clone())),
                Some(overlay) => patches.push((overlay, name, data.clone())),
            }
        }
    }
    let mut folders: Vec<(PathBuf, serde_json::Map<String, Value>)> = bases
        .iter()
        .map(|(name, data)| (dir.join(name), data.clone()))
        .collect();
    for (overlay, name, patch) in patches {
        let mut data = bases
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| d.clone())
            .unwrap_or_default();
        data.extend(patch);
        folders.push((dir.join("overlays").join(overlay).join(name), data));
    }
    let mut configs = Vec::new();
    for (folder, data) in folders {
        std::fs::create_dir_all(&folder).unwrap();
        for (key, value) in data {
            let text = value.as_str().unwrap();
            std::fs::write(folder.join(&key), text).unwrap();
            if key.ends_with(".toml") && is_portcullis_config(text) {
                configs.push(folder.join(key));
            }
        }
    }
    configs
}

#[test]
fn every_portcullis_config_in_config_and_deploy_passes_check_config() {
    let mounted = tempfile::tempdir().unwrap();
    let mut configs: Vec<PathBuf> = files_under(&repo_path("config"))
        .into_iter()
        .filter(|p| has_extension(p, &["toml"]))
        .collect();
    let shipped = configs.len();
    configs.extend(
        files_under(&repo_path("deploy"))
            .into_iter()
            .filter(|p| has_extension(p, &["toml"]) && is_portcullis_config(&read(p))),
    );
    configs.extend(materialise_configmap_configs(mounted.path()));
    assert!(shipped >= 3, "config/ has its example configs");
    assert!(
        configs.len() > shipped,
        "deploy/ embeds at least one Portcullis config"
    );
    for path in &configs {
        match check_config(path) {
            Ok(summary) => assert!(summary.contains(": ok"), "{summary}"),
            Err(problems) => panic!("{}:\n{problems}", path.display()),
        }
    }
}

#[test]
fn a_config_embedded_in_a_configmap_that_is_broken_fails_check_config() {
    // The check above can fail: a ConfigMap config missing the key file it
    // names is refused with the key path.
    let mounted = tempfile::tempdir().unwrap();
    let configs = materialise_configmap_configs(mounted.path());
    let with_keys = configs
        .iter()
        .find(|p| read(p).contains("keys = ["))
        .expect("a ConfigMap config with a vendor key");
    for entry in std::fs::read_dir(with_keys.parent().unwrap()).unwrap() {
        let path = entry.unwrap().path();
        if has_extension(&path, &["pub", "pem"]) {
            std::fs::remove_file(path).unwrap();
        }
    }
    let problems = check_config(with_keys).unwrap_err();
    assert!(problems.contains("authority"), "{problems}");
}
