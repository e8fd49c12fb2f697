//! The `portcullis` binary as operators run it: `check-config` and `serve`
//! with a graceful drain on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

#[test]
fn check_config_accepts_every_shipped_config() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let out = check_config(&path);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("ok"));
        for rust in [
            "Some(",
            "([",
            " { ",
            "Keyless",
            "Signatures",
            "AllowUnverified",
        ] {
            assert!(
                !text.contains(rust),
                "{}: Rust Debug text {rust:?}:\n{text}",
                path.display()
            );
        }
    }
}

/// `portcullis check-config FILE`.
fn check_config(path: impl AsRef<std::path::Path>) -> std::process::Output {
    Command::new(BIN)
        .arg("check-config")
        .arg(path.as_ref())
        .output()
        .unwrap()
}

/// `check-config` takes the file as `--config FILE` too, as the other
/// commands do; not both.
#[test]
fn check_config_takes_the_file_positionally_or_with_config() {
    let config = format!("{}/config/portcullis.toml", env!("CARGO_MANIFEST_DIR"));
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("check-config")
            .args(args)
            .output()
            .unwrap()
    };
    let positional = run(&[&config]);
    let named = run(&["--config", &config]);
    assert!(positional.status.success());
    assert!(
        named.status.success(),
        "{}",
        String::from_utf8_lossy(&named.stderr)
    );
    assert_eq!(named.stdout, positional.stdout);
    assert_eq!(run(&[&config, "--config", &config]).status.code(), Some(2));
    assert_eq!(run(&[]).status.code(), Some(2));
}

/// `portcullis check-config f | head -3`: the reader is gone before the
/// report is written; the command ends quietly with the report's own exit
/// code, never a panic.
#[test]
fn check_config_into_a_closed_pipe_exits_quietly_with_its_code() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let config = format!("{}/config/portcullis.toml", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN)
        .args(["check-config", &config])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn check_config_lists_every_problem_with_its_key_path_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"here\"\n[cache]\ndir = \"c\"\ntag_ttl = \"later\"\n[[upstream]]\nname = \"u\"\nurl = \"http://x\"\n",
    )
    .unwrap();
    let out = check_config(&path);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["server.listen", "cache.tag_ttl", "upstream[0].url"] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
    let out = check_config(dir.path().join("missing.toml"));
    assert!(!out.status.success());
}

/// One run shows everything: unknown keys, the semantic problems of the
/// rest, and the trust material of each authority that is itself valid;
/// once the config is valid, its warnings come with its trust problems.
#[test]
fn check_config_reports_unknown_keys_semantic_and_trust_problems_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.toml");
    let broken = "[server]\nlisten = \"127.0.0.1:5000\"\nlisen = \"x\"\n[cache]\ndir = \"c\"\ntag_ttl = \"soon\"\n\
         [[upstream]]\nname = \"u\"\nurl = \"https://x\"\n\
         [[authority]]\nname = \"bad\"\nkeys = [\"a.pub\"]\nca_roots = [\"b.pem\"]\n\
         [[authority]]\nname = \"k\"\nkeys = [\"missing.pub\"]\n\
         [[authority]]\nname = \"unused\"\nkeys = [\"missing-too.pub\"]\n\
         [[policy]]\nname = \"p\"\nmatch = [\"u/**\"]\nsignatures = { authorities = [\"bad\", \"k\"] }\n";
    std::fs::write(&path, broken).unwrap();
    let out = check_config(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for key in [
        "server.lisen",
        "cache.tag_ttl",
        "authority[0]",
        "authority[1].keys[0]",
        "authority[2].keys[0]",
    ] {
        assert!(
            err.contains(&format!("\n  {key}")),
            "{key} missing from:\n{err}"
        );
    }
    assert!(err.contains("missing.pub"), "{err}");
    assert!(
        !err.contains("warning"),
        "no lints on an invalid config: {err}"
    );

    let valid = broken
        .replace("lisen = \"x\"\n", "")
        .replace("\"soon\"", "\"1m\"")
        .replace("ca_roots = [\"b.pem\"]\n", "");
    std::fs::write(&path, valid).unwrap();
    let out = check_config(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("\n  authority[1].keys[0]"), "{err}");
    assert!(
        err.contains("\n  warning authority[2]: authority \"unused\" is named by no policy"),
        "{err}"
    );
}

#[test]
fn check_config_reports_bad_trust_settings_with_their_key_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trust.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:5000\"\n[cache]\ndir = \"c\"\n[[upstream]]\nname = \"u\"\nurl = \"https://x\"\n\
         [[authority]]\nname = \"k\"\nkeyless = { issuer = \"https://i\", subject = \"s\" }\n\
         trusted_root = { tuf = \"https://tuf.example\", root = \"missing-root.json\", max_stale = \"often\" }\n\
         [[authority]]\nname = \"v\"\nca_roots = [\"/etc/ssl/certs/ca-certificates.crt\"]\nrevoked_serials = [\"zz\"]\n\
         [[authority]]\nname = \"t\"\nkeyless = { issuer = \"https://i\", subject = \"s\" }\ntrusted_root = { tuf = \"http://plain.example\" }\n\
         [[policy]]\nname = \"p\"\nmatch = [\"**\"]\nsignatures = { authorities = [\"k\", \"v\", \"t\"] }\n",
    )
    .unwrap();
    let out = check_config(&path);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "authority[0].trusted_root.max_stale",
        "authority[1].revoked_serials[0]",
        "authority[2].trusted_root.tuf",
    ] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
    // With the config itself fixed, the missing initial root is reported.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(", max_stale = \"often\"", "")
        .replace("[\"zz\"]", "[\"0A:1B\"]")
        .replace("http://plain.example", "https://plain.example");
    std::fs::write(&path, text).unwrap();
    let out = check_config(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("authority[0].trusted_root.root"), "{err}");
    assert!(err.contains("missing-root.json"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_an_in_flight_download_then_exits_cleanly() {
    let registry = Registry::start().await;
    let image = Image::oci(40, &[8 << 20]);
    Pusher::new(&registry.url())
        .image("big/app", "v1", &image)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[cache]\ndir = \"cache\"\n{}{}",
        Upstream::test("local", &registry.url()).toml(),
        Policy::allow_all().toml()
    );
    let path = dir.path().join("p.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .send()
        .await
        .is_err()
    {
        assert!(started.elapsed() < Duration::from_secs(10), "did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let blob = &image.layers[0];
    let mut response = client
        .get(format!(
            "http://127.0.0.1:{port}/v2/local/big/app/blobs/{}",
            blob.digest
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Read slowly so that most of the blob is still unsent when SIGTERM lands.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "still draining while a download is open"
    );
    let mut received = first.to_vec();
    while let Some(chunk) = response.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    assert_eq!(
        received.len(),
        blob.bytes.len(),
        "the in-flight download completed after SIGTERM"
    );
    assert!(received == blob.bytes);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "portcullis did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    assert!(
        client
            .get(format!("http://127.0.0.1:{port}/v2/"))
            .send()
            .await
            .is_err(),
        "listener closed after shutdown"
    );
}

/// The first line of a file that must never reach a log or a response.
const SECRET_LINE: &str = "ghp_S3cr3tT0k3nThatMustNotLeak0123456789";

#[test]
fn check_config_of_a_config_linked_to_a_secret_reports_the_position_not_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET_LINE}\nsecond line\n")).unwrap();
    let path = dir.path().join("portcullis.toml");
    std::os::unix::fs::symlink(&secret, &path).unwrap();
    let out = check_config(&path);
    assert!(!out.status.success());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stderr.contains("(syntax)"), "{stderr}");
    assert!(stderr.contains("line 1, column"), "{stderr}");
    for shown in [&stdout, &stderr] {
        assert!(!shown.contains("S3cr3t"), "the secret leaked: {shown}");
    }
}

#[test]
fn check_config_of_trust_files_linked_to_secrets_never_quotes_them() {
    let dir = tempfile::tempdir().unwrap();
    let secret = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let key = secret(
        "key-secret",
        &format!("-----BEGIN PRIVATE KEY-----\n{SECRET_LINE}\n-----END PRIVATE KEY-----\n"),
    );
    let ca = secret(
        "ca-secret",
        &format!("-----BEGIN CERTIFICATE-----\n{SECRET_LINE}\n-----END CERTIFICATE-----\n"),
    );
    let root = secret(
        "root-secret",
        &format!("{{\"mediaType\": \"{SECRET_LINE}\", \"tlogs\": \"{SECRET_LINE}\"}}"),
    );
    let path = dir.path().join("portcullis.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:5000\"\n[cache]\ndir = \"c\"\n[[upstream]]\nname = \"u\"\nurl = \"https://x\"\n\
             [[authority]]\nname = \"k\"\nkeys = [\"{}\"]\n\
             [[authority]]\nname = \"v\"\nca_roots = [\"{}\"]\n\
             [[authority]]\nname = \"r\"\nkeyless = {{ issuer = \"https://i\", subject = \"s\" }}\ntrusted_root = \"{}\"\n\
             [[policy]]\nname = \"p\"\nmatch = [\"**\"]\nsignatures = {{ authorities = [\"k\", \"v\", \"r\"] }}\n",
            key.display(),
            ca.display(),
            root.display()
        ),
    )
    .unwrap();
    let out = check_config(&path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "authority[0].keys[0]",
        "authority[1].ca_roots[0]",
        "authority[2].trusted_root",
    ] {
        assert!(stderr.contains(key), "{key} missing from:\n{stderr}");
    }
    assert!(!stderr.contains("S3cr3t"), "a secret leaked:\n{stderr}");
    assert!(
        !stderr.contains("PRIVATE"),
        "a secret's label leaked:\n{stderr}"
    );
}

#[test]
fn check_config_refuses_two_authorities_naming_one_tuf_repository_with_different_roots() {
    let dir = tempfile::tempdir().unwrap();
    let root = |name: &str| {
        let id = "ab".repeat(32);
        let role = serde_json::json!({"keyids": [id], "threshold": 1});
        let json = serde_json::json!({"signed": {"_type": "root", "version": 1,
            "keys": {id.clone(): {"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": name}}},
            "roles": {"root": role, "timestamp": role, "snapshot": role, "targets": role}}, "signatures": []});
        std::fs::write(dir.path().join(name), json.to_string()).unwrap();
    };
    root("vendor-root.json");
    root("other-root.json");
    let path = dir.path().join("tuf.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:5000\"\n[cache]\ndir = \"c\"\n[[upstream]]\nname = \"u\"\nurl = \"https://x\"\n\
         [[authority]]\nname = \"a\"\nkeyless = { issuer = \"https://i\", subject = \"s\" }\n\
         trusted_root = { tuf = \"https://tuf.example\", root = \"vendor-root.json\" }\n\
         [[authority]]\nname = \"b\"\nkeyless = { issuer = \"https://i\", subject = \"t\" }\n\
         trusted_root = { tuf = \"https://tuf.example\", root = \"other-root.json\", refresh = \"1m\" }\n\
         [[policy]]\nname = \"p\"\nmatch = [\"**\"]\nsignatures = { authorities = [\"a\", \"b\"] }\n",
    )
    .unwrap();
    let out = check_config(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for (key, other) in [
        (
            "authority[1].trusted_root.root",
            "authority[0].trusted_root.root",
        ),
        (
            "authority[1].trusted_root.refresh",
            "authority[0].trusted_root.refresh",
        ),
    ] {
        assert!(
            err.contains(&format!("{key}: differs from {other}")),
            "{key} missing from:\n{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_reload_is_logged_and_a_config_replaced_by_a_link_to_a_secret_is_refused_unquoted() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[cache]\ndir = \"cache\"\n{}{}",
            Upstream::test("local", "http://127.0.0.1:9").toml(),
        Policy::allow_all().toml()
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .send()
        .await
        .is_err()
    {
        assert!(started.elapsed() < Duration::from_secs(10), "did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A reload of the config as it is succeeds, and says so.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET_LINE}\n")).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&secret, &path).unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("config reloaded"), "{log}");
    assert!(log.contains("config reload refused"), "{log}");
    assert!(log.contains("line 1, column"), "{log}");
    assert!(!log.contains("S3cr3t"), "the log quotes the secret:\n{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes when stderr is not a terminal:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigusr1_reopens_the_audit_file_and_keeps_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[cache]\ndir = \"cache\"\n[audit]\nsink = \"audit.jsonl\"\n{}{}",
            Upstream::test("local", "http://127.0.0.1:9").toml(),
            Policy::deny("closed", "local/**").toml()
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .send()
        .await
        .is_err()
    {
        assert!(started.elapsed() < Duration::from_secs(10), "did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pull = || async {
        let r = client
            .get(format!("http://127.0.0.1:{port}/v2/local/app/manifests/v1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
    };
    let kill = |signal: &str| {
        assert!(
            Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        )
    };
    pull().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill("-USR1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    pull().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill("-TERM");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the signal did not stop the server");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("audit log reopened"), "{log}");
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let decisions = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "decision")
        .count();
    assert_eq!(decisions, 2);
}

#[test]
fn check_config_warns_of_policies_no_repository_reaches_unused_authorities_and_expired_exceptions()
{
    let dir = tempfile::tempdir().unwrap();
    let key = format!(
        "{}/config/keys/example-vendor.pub",
        env!("CARGO_MANIFEST_DIR")
    );
    let path = dir.path().join("p.toml");
    std::fs::write(dir.path().join("tokens"), "team-a:tok-a\n").unwrap();
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:5000\"\nauth = {{ tokens_file = \"tokens\" }}\n[cache]\ndir = \"cache\"\n\
             [[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n\
             [[client]]\nidentity = \"team-a\"\nrepositories = [\"hub/team-a/**\"]\n\
             [[authority]]\nname = \"acme\"\nkeys = [\"{key}\"]\n\
             [[authority]]\nname = \"forgotten\"\nkeys = [\"{key}\"]\n\
             [[policy]]\nname = \"typo\"\nmatch = [\"dockr.io/acme/**\"]\nsignatures = {{ authorities = [\"acme\"] }}\n\
             [[policy]]\nname = \"everything\"\nmatch = [\"docker.io/**\"]\nallow_unverified = true\n\
             [[policy]]\nname = \"acme\"\nmatch = [\"docker.io/acme/**\"]\nsignatures = {{ authorities = [\"acme\"] }}\n\
             [[exception]]\nmatch = \"docker.io/acme/app\"\ndigest = \"sha256:{}\"\nexpires = \"2020-01-01T00:00:00Z\"\nticket = \"CHG-1\"\nreason = \"old\"\n",
            "a".repeat(64)
        ),
    )
    .unwrap();
    let out = check_config(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "warnings do not fail the config: {text}"
    );
    for expected in [
        "warning policy[0].match: \"dockr.io/acme/**\" names no configured upstream (docker.io)",
        "warning policy[0]: policy \"typo\" can never apply",
        "warning policy[2].match: \"docker.io/acme/**\" is shadowed by policy \"everything\"",
        "warning exception[0].expires: exception \"CHG-1\" expired 2020-01-01T00:00:00Z",
        "warning authority[1]: authority \"forgotten\" is named by no policy",
        "warning client[0].repositories[0]: \"hub/team-a/**\" names no configured upstream (docker.io): identity \"team-a\" may pull nothing through it",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert_eq!(text.matches("warning ").count(), 7, "{text}");
    let json = Command::new(BIN)
        .args(["check-config", "--output", "json"])
        .arg(&path)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["warnings"].as_array().unwrap().len(), 7);
    assert_eq!(report["warnings"][0]["path"], "policy[0].match");
}

#[test]
fn trust_status_of_the_signed_example_prints_tables_without_rust_debug_text() {
    let config = format!("{}/config/signed.toml", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN)
        .args(["trust", "status", "--config", &config])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("trust (epoch 1)\nAUTHORITY "), "{text}");
    assert!(
        text.contains("https://token.actions.githubusercontent.com matching ^(?:"),
        "{text}"
    );
    for rust in ["Some(", "Regex(", "Exact(", "{\"", " { "] {
        assert!(!text.contains(rust), "Rust Debug text {rust:?}:\n{text}");
    }
    let json = Command::new(BIN)
        .args(["trust", "status", "--output", "json", "--config", &config])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["trust"]["authorities"][0]["name"], "acme");
}
