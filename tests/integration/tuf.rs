//! Sigstore trusted roots from a TUF repository: a keyless authority trusts
//! the `trusted_root.json` its TUF repository publishes, verified from the
//! initial root; it follows a rotation, refuses forged metadata and keeps
//! the verified root, and starts during an outage only from a cache that
//! verifies again.

use std::time::Duration;

use crate::support::config::inline;
use crate::support::cosign;
use crate::support::fulcio::GITHUB_ISSUER;
use crate::support::keyless::Keyless;
use crate::support::trust_server::TrustServer;
use crate::support::tuf::TufRepo;
use crate::support::*;

const IDENTITY: &str = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main";

struct Setup {
    registry: Registry,
    server: TrustServer,
    repo: TufRepo,
    proxy: Proxy,
    pusher: Pusher,
}

/// A proxy in `dir` whose keyless authority takes its trusted root from the
/// TUF repository on `server`, trusting `tuf-root.json` and `tuf-ca.pem`.
fn config(dir: tempfile::TempDir, registry: &Registry, server: &TrustServer) -> ProxyConfig {
    let base = server.base();
    let trusted_root = inline(&[
        ("tuf", base.as_str()),
        ("root", "tuf-root.json"),
        ("ca_file", "tuf-ca.pem"),
        ("refresh", "1s"),
        ("max_stale", "1h"),
    ]);
    let authority = Authority::keyless("acme-ci", GITHUB_ISSUER, Subject::Exact(IDENTITY))
        .key("trusted_root", &trusted_root)
        .without_sct();
    ProxyConfig::new()
        .in_dir(dir)
        .upstream("local", &registry.url())
        .authority(authority)
        .policy(Policy::signed_by("acme", "**", &["acme-ci"]))
}

/// A proxy whose keyless authority takes its trusted root from a TUF
/// repository on a local HTTPS server publishing `first`'s root.
async fn setup(first: &Keyless) -> Setup {
    let registry = Registry::start().await;
    let server = TrustServer::start("", None).await;
    let mut repo = TufRepo::new();
    repo.publish(&server, &first.trusted_root());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tuf-root.json"), repo.root()).unwrap();
    std::fs::write(dir.path().join("tuf-ca.pem"), &server.ca_pem).unwrap();
    let proxy = Proxy::start(config(dir, &registry, &server)).await;
    let pusher = Pusher::new(&registry.url());
    Setup {
        registry,
        server,
        repo,
        proxy,
        pusher,
    }
}

impl Setup {
    /// Pushes image `seed` under its own tag, signed under `instance`.
    async fn image(&self, seed: u64, instance: &Keyless) -> String {
        let img = Image::oci(seed, &[200]);
        let tag = format!("t{seed}");
        self.pusher.image("acme/app", &tag, &img).await;
        let sig = instance.logged_signature(&img.digest, IDENTITY, GITHUB_ISSUER);
        cosign::push_signatures(&self.pusher, "acme/app", &img.digest, &[sig]).await;
        tag
    }

    async fn answer(&self, tag: &str) -> (u16, Option<String>) {
        self.proxy
            .answer(&format!("/v2/local/acme/app/manifests/{tag}"))
            .await
    }

    /// Stops the proxy, runs `between` on its folder, starts it again there.
    async fn restart(self, between: impl FnOnce(&std::path::Path)) -> Setup {
        let Setup {
            registry,
            server,
            repo,
            proxy,
            pusher,
        } = self;
        let dir = proxy.stop_keeping_dir().await;
        between(dir.path());
        let proxy = Proxy::start(config(dir, &registry, &server)).await;
        Setup {
            registry,
            server,
            repo,
            proxy,
            pusher,
        }
    }

    async fn refreshes(&self, result: &str) -> f64 {
        self.proxy
            .metric(
                "portcullis_trust_refresh_total",
                &[&format!("result=\"{result}\""), "authority=\"tuf:"],
            )
            .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keyless_authority_trusts_the_root_its_tuf_repository_publishes_and_follows_a_rotation() {
    let (old, new) = (Keyless::new(), Keyless::new());
    let mut s = setup(&old).await;
    let by_old = s.image(900, &old).await;
    let by_new = s.image(901, &new).await;
    assert_eq!(s.answer(&by_old).await, (200, None));
    let (status, _) = s.answer(&by_new).await;
    assert_eq!(status, 403, "the new Fulcio CA is not trusted yet");

    // The repository rotates to the new instance; the refresh (every second)
    // verifies it and retires the verdicts made under the old root.
    s.repo.publish(&s.server, &new.trusted_root());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while s.answer(&by_new).await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rotation not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        s.answer(&by_old).await.0,
        403,
        "the old root's verdict must be retired"
    );
    // The change is audited: the authority's trusted root, and from where.
    let changed = s.proxy.audit_events().into_iter().any(|e| {
        e["event"] == "trust_change"
            && e["authority"] == "acme-ci"
            && e["source"]
                .as_str()
                .unwrap_or("")
                .starts_with("trust_refresh:tuf:")
            && e["added"][0]
                .as_str()
                .unwrap_or("")
                .starts_with("trusted_root ")
            && e["removed"][0]
                .as_str()
                .unwrap_or("")
                .starts_with("trusted_root ")
    });
    assert!(changed, "{:?}", s.proxy.audit_events());
    let trust = s.proxy.admin_get("/admin/trust", ADMIN_TOKEN).await;
    assert!(trust.contains(&s.server.base()), "{trust}");
    assert!(s.refreshes("ok").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn tuf_metadata_signed_by_an_unknown_key_is_refused_and_the_verified_root_kept() {
    let (good, rogue) = (Keyless::new(), Keyless::new());
    let mut s = setup(&good).await;
    let by_good = s.image(910, &good).await;
    let by_rogue = s.image(911, &rogue).await;
    assert_eq!(s.answer(&by_good).await, (200, None));
    let errors = s.refreshes("error").await;

    // Whoever holds the file server publishes a root of their own, signed
    // with a key the TUF root does not name.
    s.repo.publish_forged(&s.server, &rogue.trusted_root());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while s.refreshes("error").await < errors + 2.0 {
        assert!(tokio::time::Instant::now() < deadline, "no refresh failed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(s.answer(&by_rogue).await.0, 403, "forged root refused");
    assert_eq!(s.answer(&by_good).await, (200, None), "verified root kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn start_during_a_tuf_outage_uses_the_cache_only_after_verifying_it_again() {
    let instance = Keyless::new();
    let s = setup(&instance).await;
    let tag = s.image(920, &instance).await;
    assert_eq!(s.answer(&tag).await, (200, None));
    let cached = |dir: &std::path::Path| files_under(&dir.join("cache").join("tuf"));
    let s = s
        .restart(|dir| {
            let files = cached(dir);
            assert!(
                files.iter().any(|f| f.ends_with("timestamp.json")),
                "verified metadata cached: {files:?}"
            );
        })
        .await;
    assert_eq!(s.answer(&tag).await, (200, None), "restart, repository up");

    // The repository is down: the restarted proxy verifies its cache from
    // the initial root and serves with it.
    s.server.set_down(true);
    let s = s.restart(|_| {}).await;
    assert_eq!(s.answer(&tag).await, (200, None));

    // A cache someone tampered with is refused: nothing trusted, fail closed.
    let s = s
        .restart(|dir| {
            for f in cached(dir).iter().filter(|f| f.ends_with("targets.json")) {
                let text = std::fs::read_to_string(f).unwrap();
                std::fs::write(f, text.replacen("\"length\":", "\"length\": 1", 1)).unwrap();
            }
        })
        .await;
    assert_eq!(
        s.answer(&tag).await,
        (403, Some("trust_unavailable".into()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_declaring_threshold_zero_is_refused_so_a_corrected_root_and_metadata_are_adopted() {
    let (old, new) = (Keyless::new(), Keyless::new());
    let s = setup(&old).await;
    let by_old = s.image(930, &old).await;
    let by_new = s.image(931, &new).await;
    assert_eq!(s.answer(&by_old).await, (200, None));
    let errors = s.refreshes("error").await;

    // Version 2 of root.json is signed by the root key, as rotation
    // requires, but binds the other roles with threshold 0.
    s.repo.publish_root(&s.server, 2, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while s.refreshes("error").await < errors + 2.0 {
        assert!(tokio::time::Instant::now() < deadline, "no refresh failed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        s.answer(&by_old).await,
        (200, None),
        "the verified root stays"
    );
    let trust = s.proxy.admin_get("/admin/trust", ADMIN_TOKEN).await;
    assert!(
        trust.contains("2.root.json refused") && trust.contains("threshold 0"),
        "{trust}"
    );

    // The repository corrects version 2 and publishes a new trusted root:
    // the chain never advanced to the broken root, so both are adopted.
    let mut s = s;
    s.repo.publish_root(&s.server, 2, 1);
    s.repo.publish(&s.server, &new.trusted_root());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while s.answer(&by_new).await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "refreshes stay wedged after valid metadata was published: {}",
            s.proxy.admin_get("/admin/trust", ADMIN_TOKEN).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        s.answer(&by_old).await.0,
        403,
        "the old root's verdict is retired"
    );
}
