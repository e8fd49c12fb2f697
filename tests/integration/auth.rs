//! Upstreams that require authentication: distribution with htpasswd basic
//! auth, and with token auth backed by an issuer the test runs.

use std::time::{Duration, Instant};

use crate::support::token::{self, TokenIssuer};
use crate::support::*;

fn creds_file(dir: &std::path::Path, user: &str, password: &str) -> std::path::PathBuf {
    let path = dir.join("creds.json");
    std::fs::write(
        &path,
        serde_json::json!({"username": user, "password": password}).to_string(),
    )
    .unwrap();
    path
}

/// `registry` as upstream `local`, logging in with `creds` if given.
fn upstream(registry: &Registry, creds: Option<&std::path::Path>) -> Upstream {
    let upstream = Upstream::test("local", &registry.url());
    match creds {
        Some(path) => upstream.credentials_file(path),
        None => upstream,
    }
}

fn config(upstream: Upstream) -> ProxyConfig {
    ProxyConfig::new().upstream_with(upstream).allow_all()
}

async fn pull_all(proxy: &Proxy, repo: &str, image: &Image) {
    let r = proxy
        .get_manifest(&format!("/v2/local/{repo}/manifests/v1"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), image.manifest);
    for b in image.blobs() {
        let r = proxy
            .get(&format!("/v2/local/{repo}/blobs/{}", b.digest))
            .await;
        assert_eq!(r.bytes().await.unwrap(), b.bytes);
    }
}

fn nothing_cached(proxy: &Proxy) -> bool {
    ["blobs", "manifests"]
        .iter()
        .all(|d| files_under(&proxy.cache_dir().join(d)).is_empty())
}

async fn pusher_with_token(issuer_url: &str, registry: &Registry, repo: &str) -> Pusher {
    let r = reqwest::Client::new()
        .get(format!(
            "{issuer_url}?service={}&scope=repository:{repo}:pull,push",
            token::SERVICE
        ))
        .basic_auth("ci", Some("s3cret"))
        .send()
        .await
        .unwrap();
    let t: serde_json::Value = r.json().await.unwrap();
    let mut pusher = Pusher::new(&registry.url());
    pusher.bearer = Some(t["token"].as_str().unwrap().to_string());
    pusher
}

async fn token_registry(issuer: &TokenIssuer, realm_host: &str) -> Registry {
    Registry::start_with(RegistryAuth::Token {
        realm: issuer.realm(realm_host),
        service: token::SERVICE.into(),
        issuer: token::ISSUER.into(),
        root_cert_pem: issuer.cert_pem.clone(),
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn htpasswd_upstream_pulls_with_credentials_from_the_file() {
    let registry = Registry::start_with(RegistryAuth::Htpasswd {
        user: "ci".into(),
        password: "s3cret".into(),
    })
    .await;
    let image = Image::oci(80, &[5000]);
    let mut pusher = Pusher::new(&registry.url());
    pusher.basic = registry.basic.clone();
    pusher.image("private/app", "v1", &image).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(config(upstream(
        &registry,
        Some(&creds_file(dir.path(), "ci", "s3cret")),
    )))
    .await;
    pull_all(&proxy, "private/app", &image).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_a_prompt_502_and_rotating_the_file_fixes_it_without_restart() {
    let registry = Registry::start_with(RegistryAuth::Htpasswd {
        user: "ci".into(),
        password: "s3cret".into(),
    })
    .await;
    let image = Image::oci(81, &[100]);
    let mut pusher = Pusher::new(&registry.url());
    pusher.basic = registry.basic.clone();
    pusher.image("private/app", "v1", &image).await;
    let dir = tempfile::tempdir().unwrap();
    let creds = creds_file(dir.path(), "ci", "wrong-password");
    let proxy = Proxy::start(config(upstream(&registry, Some(&creds)))).await;

    let started = Instant::now();
    let r = proxy
        .get_manifest("/v2/local/private/app/manifests/v1")
        .await;
    assert_eq!(r.status(), 502);
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = r.text().await.unwrap();
    assert!(
        text.contains("credentials") && !text.contains("wrong-password"),
        "{text}"
    );
    assert!(nothing_cached(&proxy));
    let metrics: String = proxy.metrics().await.keys().cloned().collect();
    assert!(!metrics.contains("wrong-password"));

    // Make sure the new file gets a different mtime or size.
    tokio::time::sleep(Duration::from_millis(20)).await;
    creds_file(dir.path(), "ci", "s3cret");
    pull_all(&proxy, "private/app", &image).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_upstream_with_credentials_pulls_and_caches_the_token_by_scope() {
    let issuer = TokenIssuer::start(Some(("ci", "s3cret")), false).await;
    let registry = token_registry(&issuer, "127.0.0.1").await;
    let image = Image::oci(82, &[3000, 4000]);
    pusher_with_token(&issuer.realm("127.0.0.1"), &registry, "team/app")
        .await
        .image("team/app", "v1", &image)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(config(upstream(
        &registry,
        Some(&creds_file(dir.path(), "ci", "s3cret")),
    )))
    .await;

    let before = issuer.count();
    pull_all(&proxy, "team/app", &image).await;
    assert_eq!(
        issuer.count() - before,
        1,
        "one token for the whole pull of one repository"
    );
    assert_eq!(proxy.upstream_requests("token").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_token_flow_works_without_credentials() {
    let issuer = TokenIssuer::start(Some(("ci", "s3cret")), true).await;
    let registry = token_registry(&issuer, "127.0.0.1").await;
    let image = Image::oci(83, &[100]);
    pusher_with_token(&issuer.realm("127.0.0.1"), &registry, "public/app")
        .await
        .image("public/app", "v1", &image)
        .await;
    let proxy = Proxy::start(config(upstream(&registry, None))).await;
    pull_all(&proxy, "public/app", &image).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_auth_with_a_wrong_password_is_502_and_caches_nothing() {
    let issuer = TokenIssuer::start(Some(("ci", "s3cret")), false).await;
    let registry = token_registry(&issuer, "127.0.0.1").await;
    let image = Image::oci(84, &[100]);
    pusher_with_token(&issuer.realm("127.0.0.1"), &registry, "team/app")
        .await
        .image("team/app", "v1", &image)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(config(upstream(
        &registry,
        Some(&creds_file(dir.path(), "ci", "nope")),
    )))
    .await;
    let r = proxy.get_manifest("/v2/local/team/app/manifests/v1").await;
    assert_eq!(r.status(), 502);
    assert!(nothing_cached(&proxy));
}

#[tokio::test(flavor = "multi_thread")]
async fn token_realm_on_a_host_not_allowed_for_the_upstream_is_never_contacted() {
    let issuer = TokenIssuer::start(Some(("ci", "s3cret")), true).await;
    let registry = token_registry(&issuer, "localhost").await;
    let image = Image::oci(85, &[100]);
    pusher_with_token(&issuer.realm("127.0.0.1"), &registry, "team/app")
        .await
        .image("team/app", "v1", &image)
        .await;

    let refused = Proxy::start(config(upstream(&registry, None))).await;
    let before = issuer.count();
    let r = refused
        .get_manifest("/v2/local/team/app/manifests/v1")
        .await;
    assert_eq!(r.status(), 502);
    assert_eq!(issuer.count(), before, "the realm was not dialled");
    assert_eq!(
        refused
            .metric(
                "portcullis_upstream_errors_total",
                &["kind=\"realm_refused\""]
            )
            .await,
        1.0
    );

    let allowed = Proxy::start(config(
        upstream(&registry, None).token_realm_hosts(&["localhost"]),
    ))
    .await;
    pull_all(&allowed, "team/app", &image).await;
}

/// A docker credential helper that answers what `dir/current.json` holds
/// and logs each call's stdin (the server asked about) to `dir/calls`.
fn fake_helper(dir: &std::path::Path, password: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let helper = dir.join("docker-credential-fake");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 3\ncat >> {d}/calls\necho >> {d}/calls\ncat {d}/current.json\n",
            d = dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    rotate_helper(dir, password);
    helper
}

fn rotate_helper(dir: &std::path::Path, password: &str) {
    std::fs::write(
        dir.join("current.json"),
        serde_json::json!({"ServerURL": "ignored", "Username": "ci", "Secret": password})
            .to_string(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn credential_helper_tokens_are_used_rotated_when_refused_and_audited_without_the_secret() {
    let issuer = TokenIssuer::start(Some(("ci", "s3cret")), false).await;
    let registry = token_registry(&issuer, "127.0.0.1").await;
    let (a, b) = (Image::oci(84, &[100]), Image::oci(85, &[100]));
    for (repo, image) in [("team/a", &a), ("team/b", &b)] {
        pusher_with_token(&issuer.realm("127.0.0.1"), &registry, repo)
            .await
            .image(repo, "v1", image)
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let helper = fake_helper(dir.path(), "s3cret");
    let upstream = Upstream::test("local", &registry.url())
        .key("credential_helper", &format!("\"{}\"", helper.display()))
        .key("credential_helper_ttl", "\"1h\"");
    let proxy = Proxy::start(config(upstream)).await;

    pull_all(&proxy, "team/a", &a).await;
    let calls = || std::fs::read_to_string(dir.path().join("calls")).unwrap();
    assert_eq!(
        calls(),
        format!("{}\n", registry.host()),
        "asked once, about the upstream host"
    );

    // The token is rotated: the issuer takes only the new one, and the
    // helper now answers it. The next pull that needs a token gets it.
    issuer.rotate("ci", "rotated-7");
    rotate_helper(dir.path(), "rotated-7");
    pull_all(&proxy, "team/b", &b).await;
    assert_eq!(
        calls().lines().count(),
        2,
        "asked again after the refusal only"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let loads: Vec<_> = proxy
        .audit_events()
        .into_iter()
        .filter(|e| e["event"] == "credentials_loaded")
        .collect();
    assert_eq!(loads.len(), 2, "{loads:?}");
    assert_eq!(loads[1]["upstream"], "local");
    assert_eq!(loads[1]["source"], "helper");
    assert_eq!(loads[1]["generation"], 2);
    assert!(loads[1]["instance"].as_str().is_some_and(|i| !i.is_empty()));
    let audit =
        std::fs::read_to_string(proxy.config_path().parent().unwrap().join("audit.jsonl")).unwrap();
    assert!(!audit.contains("s3cret") && !audit.contains("rotated-7"));
    let metrics: String = proxy.metrics().await.keys().cloned().collect();
    assert!(!metrics.contains("rotated-7"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_credential_helper_that_fails_is_a_502_that_names_it_and_caches_nothing() {
    let issuer = TokenIssuer::start(Some(("ci", "s3cret")), false).await;
    let registry = token_registry(&issuer, "127.0.0.1").await;
    let image = Image::oci(86, &[100]);
    pusher_with_token(&issuer.realm("127.0.0.1"), &registry, "team/c")
        .await
        .image("team/c", "v1", &image)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let helper = fake_helper(dir.path(), "s3cret");
    std::fs::write(
        dir.path().join("current.json"),
        "the helper's own secret text",
    )
    .unwrap();
    let upstream = Upstream::test("local", &registry.url())
        .key("credential_helper", &format!("\"{}\"", helper.display()));
    let proxy = Proxy::start(config(upstream)).await;
    let r = proxy.get_manifest("/v2/local/team/c/manifests/v1").await;
    assert_eq!(r.status(), 502);
    assert!(nothing_cached(&proxy));
    assert!(!r.text().await.unwrap().contains("secret text"));
    // A failed run is not repeated at once: the next requests fail the
    // same way without running the helper again.
    rotate_helper(dir.path(), "s3cret");
    for _ in 0..5 {
        let r = proxy.get_manifest("/v2/local/team/c/manifests/v1").await;
        assert_eq!(r.status(), 502);
    }
    let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
    assert_eq!(calls.lines().count(), 1, "one run: {calls}");
    assert!(nothing_cached(&proxy));
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_a_client_provokes_run_the_credential_helper_at_most_once_more() {
    let issuer = TokenIssuer::start(Some(("ci", "s3cret")), false).await;
    let registry = token_registry(&issuer, "127.0.0.1").await;
    let image = Image::oci(87, &[100]);
    pusher_with_token(&issuer.realm("127.0.0.1"), &registry, "team/d")
        .await
        .image("team/d", "v1", &image)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let helper = fake_helper(dir.path(), "s3cret");
    let upstream = Upstream::test("local", &registry.url())
        .key("credential_helper", &format!("\"{}\"", helper.display()))
        .key("credential_helper_ttl", "\"1h\"");
    let proxy = Proxy::start(config(upstream)).await;
    pull_all(&proxy, "team/d", &image).await;
    // From now on the issuer refuses what the helper answers.
    issuer.rotate("ci", "something-else");
    for i in 0..10 {
        let r = proxy
            .get_manifest(&format!("/v2/local/team/x{i}/manifests/v1"))
            .await;
        assert!(r.status().is_server_error(), "{}", r.status());
    }
    let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
    assert_eq!(
        calls.lines().count(),
        2,
        "the first ask and one after the refusals: {calls}"
    );
}
