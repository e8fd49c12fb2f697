//! Trust lifecycle and governance: vendor keys at an HTTPS source rotate,
//! go stale and must be signed by a governance key; revocation and config
//! reloads without a restart; audit mode and expiring exceptions. Every
//! change is visible in the audit log and the metrics.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

use crate::support::config::inline;
use crate::support::cosign::{self, VendorKey};
use crate::support::trust_server::TrustServer;
use crate::support::*;
use portcullis::clock::{Clock as _, ManualClock};

struct Setup {
    registry: Registry,
    proxy: Proxy,
    pusher: Pusher,
}

/// A proxy over a real registry whose `acme` authority is `authority` (the
/// config text a governance team writes; `{dir}` stands for the folder
/// holding `files`), with the policies `policies` adds.
async fn setup(
    authority: &str,
    policies: impl FnOnce(ProxyConfig) -> ProxyConfig,
    files: &[(&str, String)],
) -> Setup {
    setup_timed(authority, policies, files, None).await
}

/// As [`setup`], with the proxy's time from `clock`.
async fn setup_with_clock(
    authority: &str,
    policies: impl FnOnce(ProxyConfig) -> ProxyConfig,
    files: &[(&str, String)],
    clock: &Arc<ManualClock>,
) -> Setup {
    setup_timed(authority, policies, files, Some(Arc::clone(clock))).await
}

async fn setup_timed(
    authority: &str,
    policies: impl FnOnce(ProxyConfig) -> ProxyConfig,
    files: &[(&str, String)],
    clock: Option<Arc<ManualClock>>,
) -> Setup {
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let d = dir.path().display().to_string();
    let config = policies(
        ProxyConfig::new()
            .upstream("local", &registry.url())
            .authority(Authority::named("acme").lines(&authority.replace("{dir}", &d))),
    );
    let config = match clock {
        Some(clock) => config.clock(&clock),
        None => config,
    };
    let proxy = Proxy::start(config).await;
    // Keep the files' folder alive as long as the proxy.
    std::mem::forget(dir);
    let pusher = Pusher::new(&registry.url());
    Setup {
        registry,
        proxy,
        pusher,
    }
}

/// Policy `acme`: everything signed by `acme`.
fn signed_policy(config: ProxyConfig) -> ProxyConfig {
    config.policy(Policy::signed_by("acme", "**", &["acme"]))
}

impl Setup {
    /// Pushes image `seed` under its own tag, signed by `key` (if any).
    async fn image(&self, seed: u64, key: Option<&VendorKey>) -> (Image, String) {
        let img = Image::oci(seed, &[200]);
        let tag = format!("t{seed}");
        self.pusher.image("acme/app", &tag, &img).await;
        if let Some(key) = key {
            let sig = key.sign(&img.digest, "acme/app");
            cosign::push_signatures(&self.pusher, "acme/app", &img.digest, &[sig]).await;
        }
        (img, tag)
    }

    async fn answer(&self, tag: &str) -> (u16, Option<String>) {
        self.proxy
            .answer(&format!("/v2/local/acme/app/manifests/{tag}"))
            .await
    }

    /// Asks until the answer is `want` or `within` has passed.
    async fn eventually(&self, tag: &str, want: (u16, Option<&str>), within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (status, reason) = self.answer(tag).await;
            if (status, reason.as_deref()) == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still {status} {reason:?}, wanted {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn fingerprint(key: &VendorKey) -> String {
    hex::encode(Sha256::digest(
        key.pair.public_key_der().unwrap().as_bytes(),
    ))
}

fn governance_signature(governance: &VendorKey, document: &str) -> String {
    STANDARD.encode(
        governance
            .pair
            .sign(document.as_bytes())
            .unwrap()
            .as_bytes(),
    )
}

/// `keys` under a signed header with `version` and `expires`.
fn versioned(version: u64, expires: SystemTime, keys: &str) -> String {
    format!(
        "portcullis-trust-document v1\nversion: {version}\nexpires: {}\n\n{keys}",
        humantime::format_rfc3339_seconds(expires)
    )
}

/// Serves `document` with the governance signature over it.
fn serve_signed(server: &TrustServer, governance: &VendorKey, document: &str) {
    server.serve(document, Some(governance_signature(governance, document)));
}

/// The acme source's refreshes that ended with `result` so far.
async fn refreshes(proxy: &Proxy, result: &str) -> f64 {
    proxy
        .metric(
            "portcullis_trust_refresh_total",
            &["authority=\"acme\"", &format!("result=\"{result}\"")],
        )
        .await
}

/// Waits until the acme source has ended `n` more refreshes with `result`
/// (so that, refreshes of one source running one at a time, at least
/// `n - 1` of them started after this call).
async fn more_refreshes(proxy: &Proxy, result: &str, n: f64, within: Duration) {
    let start = refreshes(proxy, result).await;
    let deadline = tokio::time::Instant::now() + within;
    while refreshes(proxy, result).await < start + n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {n} more refreshes ended {result}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A source of `acme` keys at `server`, refreshed every second, trusting
/// `{dir}/ca.pem`, with more keys `extra`.
fn source(server: &TrustServer, extra: &[(&str, &str)]) -> String {
    let url = server.url();
    let mut pairs = vec![
        ("url", url.as_str()),
        ("refresh", "1s"),
        ("ca_file", "{dir}/ca.pem"),
    ];
    pairs.extend_from_slice(extra);
    format!("source = {}", inline(&pairs))
}

const ALLOWED: (u16, Option<&str>) = (200, None);

#[tokio::test(flavor = "multi_thread")]
async fn rotated_key_at_the_https_source_is_picked_up_without_restart_and_old_verdicts_retire() {
    let (old, new) = (VendorKey::generate(), VendorKey::generate());
    let server = TrustServer::start(&old.public_pem(), None).await;
    let s = setup(
        &source(&server, &[("max_stale", "1h")]),
        signed_policy,
        &[("ca.pem", server.ca_pem.clone())],
    )
    .await;
    let (_, by_old) = s.image(700, Some(&old)).await;
    let (_, by_new) = s.image(701, Some(&new)).await;
    assert_eq!(s.answer(&by_old).await, (200, None));
    assert_eq!(
        s.answer(&by_new).await,
        (403, Some("untrusted_signer".into()))
    );
    let epoch_before = s.proxy.metric("portcullis_trust_epoch", &[]).await;

    server.serve(&new.public_pem(), None);
    s.eventually(&by_new, ALLOWED, Duration::from_secs(10))
        .await;
    // The cached allow for the old key's image is retired with the old trust.
    assert_eq!(
        s.answer(&by_old).await,
        (403, Some("untrusted_signer".into()))
    );
    assert!(s.proxy.metric("portcullis_trust_epoch", &[]).await > epoch_before);
    let change = s
        .proxy
        .audit_events()
        .into_iter()
        .find(|e| e["event"] == "trust_change")
        .expect("a trust_change audit event");
    assert_eq!(change["authority"], "acme");
    assert_eq!(change["added"], serde_json::json!([fingerprint(&new)]));
    assert_eq!(change["removed"], serde_json::json!([fingerprint(&old)]));
}

#[tokio::test(flavor = "multi_thread")]
async fn source_added_by_a_reload_is_fetched_at_once_not_a_refresh_interval_later() {
    let (local, vendor) = (VendorKey::generate(), VendorKey::generate());
    let server = TrustServer::start(&vendor.public_pem(), None).await;
    let s = setup(
        "keys = [\"{dir}/local.pub\"]",
        signed_policy,
        &[("local.pub", local.public_pem())],
    )
    .await;
    let (_, by_vendor) = s.image(705, Some(&vendor)).await;
    assert_eq!(
        s.answer(&by_vendor).await,
        (403, Some("untrusted_signer".into()))
    );
    // The governance team adds the vendor's URL source, refreshed hourly.
    let path = s.proxy.config_path();
    let dir = path.parent().unwrap().display().to_string();
    std::fs::write(format!("{dir}/vendor-ca.pem"), &server.ca_pem).unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "signatures = { authorities = [\"acme\"] }",
            "signatures = { authorities = [\"acme\", \"vendor\"] }",
        )
        .replacen(
            "[[policy]]",
            &format!(
                "[[authority]]\nname = \"vendor\"\nsource = {{ url = \"{}\", refresh = \"1h\", ca_file = \"{dir}/vendor-ca.pem\" }}\n\n[[policy]]",
                server.url()
            ),
            1,
        );
    std::fs::write(&path, text).unwrap();
    let (status, body) = s.proxy.admin_reload(ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    s.eventually(&by_vendor, ALLOWED, Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_trust_source_does_not_hold_up_a_key_file_reload() {
    let (old, new) = (VendorKey::generate(), VendorKey::generate());
    let s = setup(
        "keys = [\"{dir}/acme.pub\"]",
        signed_policy,
        &[("acme.pub", old.public_pem())],
    )
    .await;
    let (_, by_new) = s.image(706, Some(&new)).await;
    // A trust server that accepts connections and never answers.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hanging.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((c, _)) = hanging.accept().await {
            open.push(c);
        }
    });
    let path = s.proxy.config_path();
    let dir = path.parent().unwrap().display().to_string();
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[[policy]]",
        &format!(
            "[[authority]]\nname = \"slow\"\nsource = {{ url = \"https://127.0.0.1:{port}/keys.pem\", refresh = \"1s\" }}\n\n[[policy]]"
        ),
        1,
    );
    std::fs::write(&path, &text).unwrap();
    assert_eq!(s.proxy.admin_reload(ADMIN_TOKEN).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await; // the slow refresh is under way
    // The vendor rotates its key file; the watcher must notice within seconds.
    std::fs::write(format!("{dir}/acme-new.pub"), new.public_pem()).unwrap();
    let rotated = with_acme_keys(&text, &format!("{dir}/acme-new.pub"));
    std::fs::write(&path, rotated).unwrap();
    s.eventually(&by_new, ALLOWED, Duration::from_secs(5)).await;
    held.abort();
}

/// `text` with the `acme` authority's `keys` pointing at `file`.
fn with_acme_keys(text: &str, file: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("keys = [") {
                format!("keys = [\"{file}\"]")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn source_down_keeps_the_last_good_keys_then_denies_trust_unavailable_after_max_stale() {
    let key = VendorKey::generate();
    let server = TrustServer::start(&key.public_pem(), None).await;
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let s = setup_with_clock(
        &source(&server, &[("max_stale", "1h")]),
        signed_policy,
        &[("ca.pem", server.ca_pem.clone())],
        &clock,
    )
    .await;
    server.set_down(true);
    let (_, first) = s.image(710, Some(&key)).await;
    assert_eq!(s.answer(&first).await, (200, None), "last good keys serve");
    s.proxy.failed_refreshes("acme", 1.0).await;
    clock.advance(Duration::from_secs(30 * 60));
    let (_, second) = s.image(711, Some(&key)).await;
    assert_eq!(
        s.answer(&second).await,
        (200, None),
        "still within max_stale"
    );
    clock.advance(Duration::from_secs(31 * 60));
    let (_, third) = s.image(712, Some(&key)).await;
    s.eventually(
        &third,
        (403, Some("trust_unavailable")),
        Duration::from_secs(8),
    )
    .await;
    // Fail closed for what was allowed before, too: its cached verdict is
    // retired within a watch tick of the trust going stale.
    s.eventually(
        &first,
        (403, Some("trust_unavailable")),
        Duration::from_secs(3),
    )
    .await;
    // Back up: trust is restored.
    server.set_down(false);
    s.eventually(&third, ALLOWED, Duration::from_secs(8)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn document_with_a_bad_governance_signature_is_refused_and_the_old_trust_kept() {
    let governance = VendorKey::generate();
    let (vendor, intruder) = (VendorKey::generate(), VendorKey::generate());
    let document = versioned(
        1,
        SystemTime::now() + Duration::from_secs(86400),
        &vendor.public_pem(),
    );
    let server = TrustServer::start(
        &document,
        Some(governance_signature(&governance, &document)),
    )
    .await;
    let s = setup(
        &source(
            &server,
            &[("max_stale", "1h"), ("signed_by", "{dir}/governance.pub")],
        ),
        signed_policy,
        &[
            ("ca.pem", server.ca_pem.clone()),
            ("governance.pub", governance.public_pem()),
        ],
    )
    .await;
    let (_, by_vendor) = s.image(720, Some(&vendor)).await;
    let (_, by_intruder) = s.image(721, Some(&intruder)).await;
    assert_eq!(s.answer(&by_vendor).await, (200, None));

    // A compromised file server adds the intruder's key, signed by someone else.
    let tampered = format!("{document}{}", intruder.public_pem());
    server.serve(&tampered, Some(governance_signature(&intruder, &tampered)));
    let before = s
        .proxy
        .metric(
            "portcullis_trust_refresh_total",
            &["authority=\"acme\"", "result=\"error\""],
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = s
        .proxy
        .metric(
            "portcullis_trust_refresh_total",
            &["authority=\"acme\"", "result=\"error\""],
        )
        .await;
    assert!(after > before, "the refresh is refused and counted");
    assert_eq!(
        s.answer(&by_intruder).await,
        (403, Some("untrusted_signer".into()))
    );
    assert_eq!(s.answer(&by_vendor).await, (200, None), "old trust kept");
}

/// An admin endpoint asked with the wrong method says which one it takes
/// (405 with `Allow`), and a reload asked with GET reloads nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_admin_endpoint_asked_with_the_wrong_method_is_405_naming_the_right_one() {
    let key = VendorKey::generate();
    let s = setup(
        "keys = [\"{dir}/acme.pub\"]",
        signed_policy,
        &[("acme.pub", key.public_pem())],
    )
    .await;
    let reloads = || s.proxy.metric("portcullis_config_reloads_total", &[]);
    let before = reloads().await;
    for (method, path, allow) in [
        (reqwest::Method::GET, "/admin/reload", "POST"),
        (reqwest::Method::POST, "/admin/trust", "GET"),
        (reqwest::Method::DELETE, "/admin/policies", "GET"),
    ] {
        let r = s
            .proxy
            .client
            .request(method.clone(), format!("{}{path}", s.proxy.admin_url()))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
    }
    assert_eq!(reloads().await, before, "nothing reloaded");
    let r = s
        .proxy
        .client
        .get(format!("{}/admin/nosuch", s.proxy.admin_url()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_written_inline_in_the_config_verifies_like_a_key_file() {
    let (vendor, other) = (VendorKey::generate(), VendorKey::generate());
    let s = setup(
        &format!("keys = [\"\"\"\n{}\"\"\"]", vendor.public_pem()),
        signed_policy,
        &[],
    )
    .await;
    let (_, by_vendor) = s.image(735, Some(&vendor)).await;
    let (_, by_other) = s.image(736, Some(&other)).await;
    assert_eq!(s.answer(&by_vendor).await, (200, None));
    assert_eq!(
        s.answer(&by_other).await,
        (403, Some("untrusted_signer".into()))
    );
    let trust = s.proxy.admin_get("/admin/trust", ADMIN_TOKEN).await;
    assert!(trust.contains("inline PEM"), "{trust}");
    assert!(trust.contains(&fingerprint(&vendor)), "{trust}");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_key_is_denied_after_an_authenticated_reload() {
    let key = VendorKey::generate();
    let s = setup(
        "keys = [\"{dir}/acme.pub\"]",
        signed_policy,
        &[("acme.pub", key.public_pem())],
    )
    .await;
    let (_, tag) = s.image(730, Some(&key)).await;
    assert_eq!(s.answer(&tag).await, (200, None));
    let path = s.proxy.config_path();
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "name = \"acme\"\n",
        &format!("name = \"acme\"\nrevoked = [\"{}\"]\n", fingerprint(&key)),
        1,
    );
    std::fs::write(&path, text).unwrap();
    assert_eq!(s.proxy.admin_reload("wrong-token").await.0, 401);
    let (status, body) = s.proxy.admin_reload(ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.answer(&tag).await, (403, Some("untrusted_signer".into())));
    assert!(
        s.proxy
            .audit_events()
            .iter()
            .any(|e| e["event"] == "trust_change"
                && e["removed"] == serde_json::json!([fingerprint(&key)]))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_certificate_serial_is_denied_after_reload_and_other_certificates_still_pass() {
    use crate::support::pki::VendorCa;
    let ca = VendorCa::new("acme");
    let s = setup(
        "ca_roots = [\"{dir}/root.pem\"]",
        signed_policy,
        &[("root.pem", ca.root_pem.clone())],
    )
    .await;
    let (compromised, kept) = (ca.issue_current(), ca.issue_current());
    let mut tags = Vec::new();
    for (seed, signer) in [(740, &compromised), (741, &kept)] {
        let (img, tag) = s.image(seed, None).await;
        let sig = signer.sign(&img.digest);
        cosign::push_signatures(&s.pusher, "acme/app", &img.digest, &[sig]).await;
        assert_eq!(s.answer(&tag).await, (200, None), "{tag}");
        tags.push(tag);
    }
    // As an operator would paste it from `openssl x509 -serial`: colons, any case.
    let pasted = compromised
        .serial
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let path = s.proxy.config_path();
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "name = \"acme\"\n",
        &format!("name = \"acme\"\nrevoked_serials = [\"{pasted}\"]\n"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    let (status, body) = s.proxy.admin_reload(ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.answer(&tags[0]).await,
        (403, Some("untrusted_signer".into())),
        "the cached verdict for the revoked certificate must be retired"
    );
    assert_eq!(s.answer(&tags[1]).await, (200, None));
    let trust = s.proxy.admin_get("/admin/trust", ADMIN_TOKEN).await;
    let serial = compromised
        .serial
        .trim_start_matches('0')
        .to_ascii_lowercase();
    assert!(trust.contains(&serial), "{trust}");
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_config_reload_is_refused_and_the_running_config_keeps_serving() {
    let key = VendorKey::generate();
    let s = setup(
        "keys = [\"{dir}/acme.pub\"]",
        signed_policy,
        &[("acme.pub", key.public_pem())],
    )
    .await;
    let (_, tag) = s.image(740, Some(&key)).await;
    let path = s.proxy.config_path();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{good}\n[[policy]]\nname = 3\n")).unwrap();
    let (status, body) = s.proxy.admin_reload(ADMIN_TOKEN).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("policy"), "{body}");
    assert_eq!(s.answer(&tag).await, (200, None));
    assert!(
        s.proxy
            .metric("portcullis_config_reloads_total", &["result=\"error\""])
            .await
            >= 1.0
    );
    assert!(
        s.proxy
            .audit_events()
            .iter()
            .any(|e| e["event"] == "config_reload" && e["result"] == "error")
    );
    drop(s.registry);
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_mode_serves_an_unsigned_image_with_an_audit_record_and_metric() {
    let key = VendorKey::generate();
    let s = setup(
        "keys = [\"{dir}/acme.pub\"]",
        |config| config.policy(Policy::signed_by("watch", "**", &["acme"]).audit()),
        &[("acme.pub", key.public_pem())],
    )
    .await;
    let (img, tag) = s.image(750, None).await;
    assert_eq!(s.answer(&tag).await, (200, None));
    assert_eq!(
        s.proxy
            .metric(
                "portcullis_pull_decisions_total",
                &["decision=\"audit_deny\"", "reason=\"unsigned\""]
            )
            .await,
        1.0
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let record = s
        .proxy
        .audit_events()
        .into_iter()
        .find(|e| e["event"] == "decision")
        .expect("a decision audit event");
    assert_eq!(record["decision"], "audit_deny");
    assert_eq!(record["reason"], "unsigned");
    assert_eq!(record["digest"], img.digest);
    assert_eq!(record["policy"], "watch");
}

#[tokio::test(flavor = "multi_thread")]
async fn exception_lets_a_pinned_digest_through_until_it_expires_then_denies_exception_expired() {
    let key = VendorKey::generate();
    let registry_probe = Image::oci(760, &[200]);
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let expires = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600));
    let s = setup_with_clock(
        "keys = [\"{dir}/acme.pub\"]",
        |config| {
            signed_policy(config).exception(Exception::pinned(
                "local/acme/app",
                &registry_probe.digest,
                &expires.to_string(),
                "RISK-42",
                "vendor signs from 2.0",
            ))
        },
        &[("acme.pub", key.public_pem())],
        &clock,
    )
    .await;
    let (img, tag) = s.image(760, None).await;
    assert_eq!(img.digest, registry_probe.digest);
    let (_, other) = s.image(761, None).await;
    assert_eq!(s.answer(&tag).await, (200, None));
    assert_eq!(
        s.answer(&other).await,
        (403, Some("unsigned".into())),
        "the exception is pinned to one digest"
    );
    assert_eq!(
        s.proxy
            .metric(
                "portcullis_exceptions_used_total",
                &["exception=\"RISK-42\""]
            )
            .await,
        1.0
    );
    assert!(
        s.proxy
            .metric(
                "portcullis_exception_expiry_timestamp_seconds",
                &["exception=\"RISK-42\""]
            )
            .await
            > 0.0
    );
    clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(
        s.answer(&tag).await,
        (403, Some("exception_expired".into())),
        "the allow verdict ended with the exception"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        s.proxy
            .audit_events()
            .iter()
            .any(|e| e["event"] == "exception_expired")
    );
}

/// A source of `acme` keys signed by `governance.pub`, refreshed every second.
fn signed_source(server: &TrustServer, max_stale: &str) -> String {
    source(
        server,
        &[
            ("max_stale", max_stale),
            ("signed_by", "{dir}/governance.pub"),
        ],
    )
}

fn signed_files(server: &TrustServer, governance: &VendorKey) -> Vec<(&'static str, String)> {
    vec![
        ("ca.pem", server.ca_pem.clone()),
        ("governance.pub", governance.public_pem()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_older_signed_document_is_refused_audited_once_and_the_rotated_out_key_stays_out()
 {
    let governance = VendorKey::generate();
    let (old, new) = (VendorKey::generate(), VendorKey::generate());
    let expires = SystemTime::now() + Duration::from_secs(86400);
    let (v1, v2) = (
        versioned(1, expires, &old.public_pem()),
        versioned(2, expires, &new.public_pem()),
    );
    let server = TrustServer::start(&v1, Some(governance_signature(&governance, &v1))).await;
    let s = setup(
        &signed_source(&server, "1h"),
        signed_policy,
        &signed_files(&server, &governance),
    )
    .await;
    let (_, by_old) = s.image(780, Some(&old)).await;
    assert_eq!(s.answer(&by_old).await, (200, None));
    // Governance rotates the vendor's key out with version 2.
    serve_signed(&server, &governance, &v2);
    let (_, by_new) = s.image(781, Some(&new)).await;
    s.eventually(&by_new, ALLOWED, Duration::from_secs(10))
        .await;

    // A compromised file server serves version 1 again, genuinely signed.
    let errors = refreshes(&s.proxy, "error").await;
    serve_signed(&server, &governance, &v1);
    more_refreshes(&s.proxy, "error", 3.0, Duration::from_secs(10)).await;
    assert!(refreshes(&s.proxy, "error").await >= errors + 3.0);
    let (_, by_old_again) = s.image(782, Some(&old)).await;
    assert_eq!(
        s.answer(&by_old_again).await,
        (403, Some("untrusted_signer".into())),
        "the rotated-out key must not come back"
    );
    assert_eq!(
        s.answer(&by_new).await,
        (200, None),
        "version 2 stays in force"
    );
    let refused: Vec<serde_json::Value> = s
        .proxy
        .audit_events()
        .into_iter()
        .filter(|e| e["event"] == "trust_document_refused")
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "audited once, not at every retry: {refused:?}"
    );
    assert_eq!(refused[0]["authority"], "acme");
    assert_eq!(refused[0]["reason"], "older_version");
    assert_eq!(refused[0]["url"], server.url());
    let trust = s.proxy.admin_get("/admin/trust", ADMIN_TOKEN).await;
    assert!(
        trust.contains("document version 1 is older than version 2, already accepted"),
        "{trust}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_accepted_version_survives_a_restart_so_an_older_document_served_meanwhile_is_refused()
{
    let governance = VendorKey::generate();
    let (old, new) = (VendorKey::generate(), VendorKey::generate());
    let expires = SystemTime::now() + Duration::from_secs(86400);
    let (v1, v2) = (
        versioned(1, expires, &old.public_pem()),
        versioned(2, expires, &new.public_pem()),
    );
    let server = TrustServer::start(&v2, Some(governance_signature(&governance, &v2))).await;
    let Setup {
        registry,
        proxy,
        pusher,
    } = setup(
        &signed_source(&server, "1h"),
        signed_policy,
        &signed_files(&server, &governance),
    )
    .await;
    // Restarted with the same upstream, authority and policy tables.
    let config = std::fs::read_to_string(proxy.config_path()).unwrap();
    let (_, tables) = config.split_once("sink = \"audit.jsonl\"\n\n").unwrap();
    let tables = tables.to_string();
    let dir = proxy.stop_keeping_dir().await;
    // While the proxy is down, the file server goes back to version 1.
    serve_signed(&server, &governance, &v1);
    let s = Setup {
        registry,
        proxy: Proxy::start(ProxyConfig::new().in_dir(dir).raw(&tables)).await,
        pusher,
    };
    let (_, by_old) = s.image(785, Some(&old)).await;
    let (_, by_new) = s.image(786, Some(&new)).await;
    assert_eq!(
        s.answer(&by_old).await,
        (403, Some("trust_unavailable".into())),
        "the replayed key must not be trusted after a restart"
    );
    assert_eq!(
        s.answer(&by_new).await,
        (403, Some("trust_unavailable".into())),
        "nothing good is held yet: fail closed"
    );
    let trust = s.proxy.admin_get("/admin/trust", ADMIN_TOKEN).await;
    assert!(trust.contains("older than version 2"), "{trust}");
    serve_signed(&server, &governance, &v2);
    s.eventually(&by_new, ALLOWED, Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_document_past_its_expiry_is_stale_however_often_the_server_confirms_it() {
    let governance = VendorKey::generate();
    let key = VendorKey::generate();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let expires = clock.now() + Duration::from_secs(86400);
    let document = versioned(1, expires, &key.public_pem());
    let server = TrustServer::start(
        &document,
        Some(governance_signature(&governance, &document)),
    )
    .await;
    let s = setup_with_clock(
        &signed_source(&server, "30d"),
        signed_policy,
        &signed_files(&server, &governance),
        &clock,
    )
    .await;
    let (_, first) = s.image(790, Some(&key)).await;
    assert_eq!(s.answer(&first).await, (200, None));
    more_refreshes(&s.proxy, "ok", 2.0, Duration::from_secs(10)).await;
    assert_eq!(
        server
            .full_answers
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the rest were 304s"
    );

    // Two days on, well within max_stale, the server still confirms it.
    clock.advance(Duration::from_secs(2 * 86400));
    let (_, second) = s.image(791, Some(&key)).await;
    s.eventually(
        &second,
        (403, Some("trust_unavailable")),
        Duration::from_secs(10),
    )
    .await;
    // The cached allow is retired too, within a watch tick.
    s.eventually(
        &first,
        (403, Some("trust_unavailable")),
        Duration::from_secs(3),
    )
    .await;
    // Each 304 that confirms it now counts as a refused refresh.
    more_refreshes(&s.proxy, "error", 2.0, Duration::from_secs(10)).await;
    let trust = s.proxy.admin_get("/admin/trust", ADMIN_TOKEN).await;
    assert!(trust.contains("\"last_error\""), "{trust}");
    let at = humantime::format_rfc3339_seconds(expires).to_string();
    assert!(
        trust.contains(&format!("its signed trust document expired at {at}")),
        "{trust}"
    );
    assert!(
        s.proxy
            .audit_events()
            .iter()
            .any(|e| e["event"] == "trust_document_refused" && e["reason"] == "expired")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unversioned_signed_document_is_refused_so_the_authority_stays_unavailable() {
    let governance = VendorKey::generate();
    let key = VendorKey::generate();
    let document = key.public_pem();
    let server = TrustServer::start(
        &document,
        Some(governance_signature(&governance, &document)),
    )
    .await;
    let s = setup(
        &signed_source(&server, "1h"),
        signed_policy,
        &signed_files(&server, &governance),
    )
    .await;
    let (_, tag) = s.image(795, Some(&key)).await;
    assert_eq!(
        s.answer(&tag).await,
        (403, Some("trust_unavailable".into()))
    );
    let trust = s.proxy.admin_get("/admin/trust", ADMIN_TOKEN).await;
    assert!(
        trust.contains("unversioned signed documents are refused"),
        "{trust}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_source_stays_fresh_past_max_stale_and_goes_stale_max_stale_after_it_was_last_verified()
 {
    let key = VendorKey::generate();
    let server = TrustServer::start(&key.public_pem(), None).await;
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let s = setup_with_clock(
        &source(&server, &[("max_stale", "1h")]),
        signed_policy,
        &[("ca.pem", server.ca_pem.clone())],
        &clock,
    )
    .await;
    let (_, first) = s.image(800, Some(&key)).await;
    assert_eq!(s.answer(&first).await, (200, None));
    let epoch = s.proxy.metric("portcullis_trust_epoch", &[]).await;

    // Two hours of the vendor confirming the same document (304s), twice
    // as long as max_stale, in steps shorter than it.
    for _ in 0..3 {
        clock.advance(Duration::from_secs(40 * 60));
        more_refreshes(&s.proxy, "ok", 2.0, Duration::from_secs(10)).await;
    }
    let verified = clock.now();
    let (_, second) = s.image(801, Some(&key)).await;
    assert_eq!(
        s.answer(&second).await,
        (200, None),
        "a verified, unchanged refresh renews freshness"
    );
    assert_eq!(
        s.proxy.metric("portcullis_trust_epoch", &[]).await,
        epoch,
        "renewing freshness retires no verdict"
    );

    // The source goes down; an hour and a bit after its last verification
    // the authority is stale.
    server.set_down(true);
    clock.advance(Duration::from_secs(3600 + 60));
    more_refreshes(&s.proxy, "error", 2.0, Duration::from_secs(10)).await;
    let (_, third) = s.image(802, Some(&key)).await;
    assert_eq!(
        s.answer(&third).await,
        (403, Some("trust_unavailable".into()))
    );
    s.eventually(
        &first,
        (403, Some("trust_unavailable")),
        Duration::from_secs(3),
    )
    .await;
    let trust = s.proxy.admin_get("/admin/trust", ADMIN_TOKEN).await;
    let at = humantime::format_rfc3339_seconds(verified).to_string();
    assert!(
        trust.contains(&format!(
            "was last verified at {at}, longer ago than max_stale (1h)"
        )),
        "{trust}"
    );
}

/// An RSA public key of 1024 bits: it parses, but verification refuses
/// RSA keys outside 2048–8192 bits, so it would verify nothing.
const RSA_1024_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDFqQ2LY++OJf0Mem3JdFaGBaje
wCwsfvARQd5TkikfkHZqgSNcCH7UhPSe5WSwxT10tWVqno6naqCcDxXe754ymNep
6qtDzfNN7+Lg3fu6NOI6Mm1qA8syO0W+rxJey+wtcWas8lkXcP4QsU0owdxme71l
AmcVu86fk4aia6NuAwIDAQAB
-----END PUBLIC KEY-----
";

#[tokio::test(flavor = "multi_thread")]
async fn a_source_serving_a_key_verification_never_accepts_is_refused_and_the_good_key_kept() {
    let vendor = VendorKey::generate();
    let server = TrustServer::start(&vendor.public_pem(), None).await;
    let s = setup(
        &source(&server, &[("max_stale", "1h")]),
        signed_policy,
        &[("ca.pem", server.ca_pem.clone())],
    )
    .await;
    let (_, tag) = s.image(800, Some(&vendor)).await;
    assert_eq!(s.answer(&tag).await, (200, None));
    let epoch = s.proxy.metric("portcullis_trust_epoch", &[]).await;

    // The source now serves a key verification will never accept.
    server.serve(RSA_1024_PUBLIC, None);
    more_refreshes(&s.proxy, "error", 2.0, Duration::from_secs(10)).await;
    let (_, fresh) = s.image(801, Some(&vendor)).await;
    assert_eq!(s.answer(&fresh).await, (200, None), "the good key is kept");
    assert_eq!(s.answer(&tag).await, (200, None));
    assert_eq!(
        s.proxy.metric("portcullis_trust_epoch", &[]).await,
        epoch,
        "nothing was adopted"
    );
    let trust: serde_json::Value =
        serde_json::from_str(&s.proxy.admin_get("/admin/trust", ADMIN_TOKEN).await).unwrap();
    let acme = &trust["authorities"][0];
    assert_eq!(
        acme["fingerprints"],
        serde_json::json!([fingerprint(&vendor)])
    );
    let error = acme["last_error"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("RSA key size 1024 bits") && error.contains("refused"),
        "{trust}"
    );
    assert_eq!(acme["available"], true, "{trust}");
    let refused = s
        .proxy
        .audit_events()
        .into_iter()
        .find(|e| e["event"] == "trust_document_refused" && e["reason"] == "unusable_material");
    assert!(refused.is_some(), "{:?}", s.proxy.audit_events());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_replaced_by_a_link_to_a_secret_is_refused_without_quoting_the_secret() {
    const SECRET: &str = "ghp_S3cr3tT0k3nThatMustNotLeak0123456789";
    let key = VendorKey::generate();
    let s = setup(
        "keys = [\"{dir}/acme.pub\"]",
        signed_policy,
        &[("acme.pub", key.public_pem())],
    )
    .await;
    let (_, tag) = s.image(760, Some(&key)).await;
    let path = s.proxy.config_path();
    let secret = path.with_file_name("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&secret, &path).unwrap();

    let (status, body) = s.proxy.admin_reload(ADMIN_TOKEN).await;
    assert_eq!(status, 400);
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("(syntax)") && error.contains("line 1, column"),
        "{body}"
    );
    assert!(
        !body.to_string().contains("S3cr3t"),
        "the reload response quotes the secret: {body}"
    );
    let refused = audit_events_eventually(&s.proxy, |e| {
        e["event"] == "config_reload" && e["result"] == "error"
    })
    .await;
    assert!(
        !refused.to_string().contains("S3cr3t"),
        "the audit log quotes the secret: {refused}"
    );
    assert_eq!(
        s.answer(&tag).await,
        (200, None),
        "the running config stays"
    );
}

/// The first audit event matching `want`, waiting a little for the writer.
async fn audit_events_eventually(
    proxy: &Proxy,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    for _ in 0..100 {
        if let Some(e) = proxy.audit_events().into_iter().find(|e| want(e)) {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no such audit event: {:?}", proxy.audit_events());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_changes_nothing_keeps_the_epoch_and_the_cached_verdicts_and_a_key_change_still_applies()
 {
    let (old, new) = (VendorKey::generate(), VendorKey::generate());
    let s = setup(
        "keys = [\"{dir}/acme.pub\"]",
        signed_policy,
        &[("acme.pub", old.public_pem())],
    )
    .await;
    let (_, tag) = s.image(760, Some(&old)).await;
    assert_eq!(s.answer(&tag).await, (200, None));
    let epoch = s.proxy.metric("portcullis_trust_epoch", &[]).await;
    let misses = || {
        s.proxy
            .metric("portcullis_cache_misses_total", &["cache=\"verdict\""])
    };
    let missed = misses().await;

    for _ in 0..2 {
        let (status, body) = s.proxy.admin_reload(ADMIN_TOKEN).await;
        assert_eq!(
            (status, body["epoch"].as_f64()),
            (200, Some(epoch)),
            "{body}"
        );
    }
    assert_eq!(s.answer(&tag).await, (200, None));
    assert_eq!(s.proxy.metric("portcullis_trust_epoch", &[]).await, epoch);
    assert_eq!(misses().await, missed, "the cached verdict stayed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let unchanged = s
        .proxy
        .audit_events()
        .iter()
        .filter(|e| e["event"] == "config_reload" && e["result"] == "unchanged")
        .count();
    assert_eq!(unchanged, 2);

    // The same config naming a key file whose contents changed is a change.
    let text = std::fs::read_to_string(s.proxy.config_path()).unwrap();
    let key_file = text
        .split("keys = [\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    std::fs::write(&key_file, new.public_pem()).unwrap();
    let (status, body) = s.proxy.admin_reload(ADMIN_TOKEN).await;
    assert_eq!(status, 200);
    assert!(body["epoch"].as_f64().unwrap() > epoch, "{body}");
    assert_eq!(s.answer(&tag).await, (403, Some("untrusted_signer".into())));
}

/// The key file changes while the first trust load waits on the network,
/// then is changed back: the revocation must apply. (The race it guards,
/// a digest taken before the load standing for what the load read, is
/// closed by reading the files again after the load; this run does not
/// hit it deterministically, since the failed source's retry installs a
/// gate of its own.)
#[tokio::test(flavor = "multi_thread")]
async fn a_key_file_changed_while_trust_first_loads_is_not_taken_for_unchanged_by_a_later_reload() {
    let (a, b) = (VendorKey::generate(), VendorKey::generate());
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("acme.pub");
    std::fs::write(&key_file, a.public_pem()).unwrap();
    // A trust source that accepts and holds its connection: the first
    // trust load waits on it (after the key file's digest was taken).
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hanging.local_addr().unwrap().port();
    let config = signed_policy(
        ProxyConfig::new()
            .upstream("local", &registry.url())
            .authority(
                Authority::named("acme").lines(&format!("keys = [\"{}\"]", key_file.display())),
            )
            .authority(Authority::named("slow").lines(&format!(
                "source = {{ url = \"https://127.0.0.1:{port}/keys.pem\", refresh = \"1h\" }}"
            ))),
    );
    let starting = tokio::spawn(Proxy::start(config));
    let (held, _) = hanging.accept().await.unwrap();
    // Rotated to B while trust loads; the gate is built from B.
    std::fs::write(&key_file, b.public_pem()).unwrap();
    drop(held);
    drop(hanging);
    let proxy = starting.await.unwrap();
    let s = Setup {
        pusher: Pusher::new(&registry.url()),
        registry,
        proxy,
    };
    let (_, by_b) = s.image(770, Some(&b)).await;
    assert_eq!(s.answer(&by_b).await, (200, None));

    // B revoked by writing A back: the reload must put that in force.
    std::fs::write(&key_file, a.public_pem()).unwrap();
    let (status, body) = s.proxy.admin_reload(ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.answer(&by_b).await,
        (403, Some("untrusted_signer".into()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_requires_a_governance_signature_stops_relying_on_the_unsigned_document_held()
{
    let (intruder, governance) = (VendorKey::generate(), VendorKey::generate());
    // The source's document as an attacker left it: unsigned.
    let server = TrustServer::start(&intruder.public_pem(), None).await;
    let s = setup(
        &source(&server, &[("max_stale", "1h")]),
        signed_policy,
        &[
            ("ca.pem", server.ca_pem.clone()),
            ("governance.pub", governance.public_pem()),
        ],
    )
    .await;
    let (_, by_intruder) = s.image(780, Some(&intruder)).await;
    assert_eq!(s.answer(&by_intruder).await, (200, None));

    // Governance now requires its signature on the document.
    let path = s.proxy.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let ca = text
        .split("ca_file = \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let dir = std::path::Path::new(ca)
        .parent()
        .unwrap()
        .display()
        .to_string();
    let tightened = text.replacen(
        "max_stale = \"1h\"",
        &format!("max_stale = \"1h\", signed_by = \"{dir}/governance.pub\""),
        1,
    );
    assert_ne!(tightened, text);
    std::fs::write(&path, tightened).unwrap();
    let (status, body) = s.proxy.admin_reload(ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    // The unsigned document counts for nothing under the new terms.
    s.eventually(
        &by_intruder,
        (403, Some("trust_unavailable")),
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_whose_terms_a_reload_changes_is_fetched_again_at_once_not_a_refresh_interval_later()
 {
    let (vendor, governance) = (VendorKey::generate(), VendorKey::generate());
    let document = versioned(
        1,
        SystemTime::now() + Duration::from_secs(86400),
        &vendor.public_pem(),
    );
    let server = TrustServer::start(
        &document,
        Some(governance_signature(&governance, &document)),
    )
    .await;
    let url = server.url();
    let hourly = |extra: &str| {
        format!(
            "source = {{ url = \"{url}\", refresh = \"1h\", max_stale = \"1h\", ca_file = \"{{dir}}/ca.pem\"{extra} }}"
        )
    };
    let s = setup(
        &hourly(""),
        signed_policy,
        &[
            ("ca.pem", server.ca_pem.clone()),
            ("governance.pub", governance.public_pem()),
        ],
    )
    .await;
    let (_, by_vendor) = s.image(790, Some(&vendor)).await;
    assert_eq!(s.answer(&by_vendor).await, (200, None));

    let path = s.proxy.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let ca = text
        .split("ca_file = \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let dir = std::path::Path::new(ca)
        .parent()
        .unwrap()
        .display()
        .to_string();
    let tightened = text.replacen(
        "max_stale = \"1h\"",
        &format!("max_stale = \"1h\", signed_by = \"{dir}/governance.pub\""),
        1,
    );
    assert_ne!(tightened, text);
    std::fs::write(&path, tightened).unwrap();
    assert_eq!(s.proxy.admin_reload(ADMIN_TOKEN).await.0, 200);
    // The signed document is fetched and checked under the new terms now.
    s.eventually(&by_vendor, ALLOWED, Duration::from_secs(5))
        .await;
}

/// `GET /admin/denials` and `portcullis denials`: each denied image once,
/// with its count, reason, policy, last decision id (the audit log's) and
/// clients; kept across a reload; ended by the pull an exception then
/// allows; the gauge counts it.
#[tokio::test(flavor = "multi_thread")]
async fn what_is_waiting_lists_each_denied_image_once_survives_a_reload_and_ends_when_allowed() {
    let key = VendorKey::generate();
    let s = setup(
        "keys = [\"{dir}/acme.pub\"]",
        signed_policy,
        &[("acme.pub", key.public_pem())],
    )
    .await;
    let (img, tag) = s.image(790, None).await;
    let (_, signed) = s.image(791, Some(&key)).await;
    assert_eq!(s.answer(&signed).await.0, 200);
    for _ in 0..3 {
        assert_eq!(s.answer(&tag).await, (403, Some("unsigned".into())));
    }
    let listed = |body: String| -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["denials"].as_array().unwrap().clone()
    };
    let denials = listed(s.proxy.admin_get("/admin/denials", ADMIN_TOKEN).await);
    assert_eq!(denials.len(), 1, "{denials:?}");
    let d = &denials[0];
    assert_eq!(
        (&d["upstream"], &d["repository"], &d["reference"]),
        (
            &"local".into(),
            &"acme/app".into(),
            &serde_json::Value::from(tag.as_str())
        )
    );
    assert_eq!(d["digest"], img.digest.as_str());
    assert_eq!(
        (&d["reason"], &d["policy"], &d["count"]),
        (&"unsigned".into(), &"acme".into(), &3.into())
    );
    // The log is written behind the response: its third denial, once there.
    let mut denied = Vec::new();
    for _ in 0..40 {
        denied = s
            .proxy
            .audit_events()
            .into_iter()
            .filter(|e| e["event"] == "decision" && e["decision"] == "deny")
            .collect();
        if denied.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(d["last_decision"], denied[2]["id"], "{denied:?}");
    let clients = d["clients"].as_array().unwrap();
    assert_eq!(
        clients,
        &[serde_json::json!("127.0.0.1")],
        "one host, three pulls"
    );
    assert_eq!(s.proxy.metric("portcullis_denials_tracked", &[]).await, 1.0);
    let recent = listed(
        s.proxy
            .admin_get("/admin/denials?since=1h", ADMIN_TOKEN)
            .await,
    );
    assert_eq!(recent.len(), 1);

    // The CLI asks the same endpoint, with the config's listener and token.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .arg("denials")
            .arg("--config")
            .arg(s.proxy.config_path())
            .output()
            .unwrap()
    };
    let out = cli(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("local/acme/app:{tag}")) && text.contains("unsigned"),
        "{text}"
    );
    let out = cli(&["--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["denials"].as_array().unwrap(), &denials);

    // A reload keeps it; the pull the new exception allows ends it.
    let expires = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600));
    let path = s.proxy.config_path();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[[exception]]\nmatch = \"local/acme/app\"\ndigest = \"{}\"\nexpires = \"{expires}\"\nticket = \"RISK-7\"\nreason = \"waiting for the vendor\"\n",
        img.digest
    ));
    std::fs::write(&path, text).unwrap();
    let (status, body) = s.proxy.admin_reload(ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    let kept = listed(s.proxy.admin_get("/admin/denials", ADMIN_TOKEN).await);
    assert_eq!(kept, denials, "a reload changes nothing that was denied");
    assert_eq!(s.answer(&tag).await.0, 200);
    let after = listed(s.proxy.admin_get("/admin/denials", ADMIN_TOKEN).await);
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(s.proxy.metric("portcullis_denials_tracked", &[]).await, 0.0);
}

/// A verified tag overwritten upstream with an unsigned build: the first
/// pull after the move is denied and records `tag_moved` (old and new
/// digest, both decisions, the denial's id) and counts it; later pulls and
/// moves of a tag that was not verified record nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_verified_tag_moved_upstream_to_an_unsigned_build_is_recorded_once_with_both_verdicts() {
    let key = VendorKey::generate();
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let s = setup_with_clock(
        "keys = [\"{dir}/acme.pub\"]",
        signed_policy,
        &[("acme.pub", key.public_pem())],
        &clock,
    )
    .await;
    let signed = Image::oci(800, &[200]);
    s.pusher.image("acme/app", "latest", &signed).await;
    let sig = key.sign(&signed.digest, "acme/app");
    cosign::push_signatures(&s.pusher, "acme/app", &signed.digest, &[sig]).await;
    assert_eq!(s.answer("latest").await, (200, None));
    let unsigned = Image::oci(801, &[200]);
    s.pusher.image("acme/app", "latest", &unsigned).await;
    clock.advance(Duration::from_secs(61));
    assert_eq!(s.answer("latest").await, (403, Some("unsigned".into())));
    assert_eq!(s.answer("latest").await, (403, Some("unsigned".into())));
    let moves = || {
        s.proxy
            .audit_events()
            .into_iter()
            .filter(|e| e["event"] == "tag_moved")
            .collect::<Vec<_>>()
    };
    let mut moved = Vec::new();
    for _ in 0..40 {
        moved = moves();
        if !moved.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(moved.len(), 1, "{moved:?}");
    let m = &moved[0];
    assert_eq!(
        (&m["upstream"], &m["repository"], &m["tag"]),
        (&"local".into(), &"acme/app".into(), &"latest".into())
    );
    assert_eq!(
        (&m["old_digest"], &m["old_decision"]),
        (&signed.digest.as_str().into(), &"allow".into())
    );
    assert_eq!(
        (&m["new_digest"], &m["new_decision"], &m["new_reason"]),
        (
            &unsigned.digest.as_str().into(),
            &"deny".into(),
            &"unsigned".into()
        )
    );
    let denial = s
        .proxy
        .audit_events()
        .into_iter()
        .find(|e| e["event"] == "decision" && e["id"] == m["id"])
        .expect("the move names its decision");
    assert_eq!(denial["decision"], "deny");
    let counted = |decision: &'static str| {
        let s = &s;
        async move {
            let label = format!("decision=\"{decision}\"");
            s.proxy
                .metric(
                    "portcullis_tag_moves_total",
                    &["upstream=\"local\"", &label],
                )
                .await
        }
    };
    assert_eq!(counted("deny").await, 1.0);

    // Moved again, from a mapping that was never verified: nothing to say.
    let other = Image::oci(802, &[200]);
    s.pusher.image("acme/app", "latest", &other).await;
    clock.advance(Duration::from_secs(61));
    assert_eq!(s.answer("latest").await.0, 403);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(moves().len(), 1);
    assert_eq!(counted("deny").await, 1.0);
}

/// `[[client]]` scopes: a scoped identity pulls only its repositories;
/// anything else is 403 `not_authorized` for every endpoint, before any
/// upstream request, counted and audited with the identity; an unscoped
/// identity keeps today's behaviour; skopeo shows the reason; a reload
/// changes the scope.
#[tokio::test(flavor = "multi_thread")]
async fn a_scoped_client_identity_pulls_only_its_repositories_and_is_refused_before_the_upstream() {
    let registry = Registry::start().await;
    let pusher = Pusher::new(&registry.url());
    let mine = Image::oci(810, &[300]);
    let theirs = Image::oci(811, &[300]);
    pusher.image("team-a/app", "v1", &mine).await;
    pusher.image("team-b/secret", "v1", &theirs).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokens"),
        "team-a:tok-a\nteam-b:tok-b\nops:tok-ops\n",
    )
    .unwrap();
    let config = ProxyConfig::new()
        .in_dir(dir)
        .server("auth = { tokens_file = \"tokens\" }\n")
        .upstream("local", &registry.url())
        .allow_all()
        .raw("[[client]]\nidentity = \"team-a\"\nrepositories = [\"local/team-a/**\"]\n")
        .raw("[[client]]\nidentity = \"team-b\"\nrepositories = [\"local/team-b/**\"]\n");
    let proxy = Proxy::start(config).await;
    let ask = |path: String, token: &'static str| {
        let proxy = &proxy;
        async move {
            let r = proxy
                .client
                .get(format!("{}{path}", proxy.url()))
                .bearer_auth(token)
                .header("accept", image::OCI_MANIFEST)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            let reason = body["errors"][0]["detail"]["reason"]
                .as_str()
                .map(String::from);
            (status, reason)
        }
    };
    let upstream_requests = || proxy.metric("portcullis_upstream_requests_total", &[]);
    assert_eq!(
        ask("/v2/local/team-a/app/manifests/v1".into(), "tok-a")
            .await
            .0,
        200
    );
    let before = upstream_requests().await;
    let refused = (403, Some("not_authorized".to_string()));
    let secret = "/v2/local/team-b/secret";
    for path in [
        format!("{secret}/manifests/v1"),
        format!("{secret}/manifests/{}", theirs.digest),
        format!("{secret}/blobs/{}", theirs.layers[0].digest),
        format!("{secret}/tags/list"),
        format!("{secret}/referrers/{}", theirs.digest),
    ] {
        assert_eq!(ask(path.clone(), "tok-a").await, refused, "{path}");
    }
    assert_eq!(
        upstream_requests().await,
        before,
        "refused before any upstream request"
    );
    assert_eq!(
        proxy
            .metric(
                "portcullis_pull_decisions_total",
                &["decision=\"deny\"", "reason=\"not_authorized\""]
            )
            .await,
        5.0
    );
    // Its owner and an unscoped identity pull it.
    assert_eq!(ask(format!("{secret}/manifests/v1"), "tok-b").await.0, 200);
    assert_eq!(
        ask(format!("{secret}/manifests/v1"), "tok-ops").await.0,
        200
    );
    assert_eq!(
        ask("/v2/local/team-a/app/manifests/v1".into(), "tok-b").await,
        refused
    );
    let mut audited = Vec::new();
    for _ in 0..40 {
        audited = proxy
            .audit_events()
            .into_iter()
            .filter(|e| e["reason"] == "not_authorized")
            .collect();
        if audited.len() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(audited.len(), 6, "{audited:?}");
    assert!(
        audited[..5]
            .iter()
            .all(|e| e["identity"] == "team-a" && e["decision"] == "deny")
    );
    assert_eq!(audited[5]["identity"], "team-b");

    // Names that would reach team-b's repository another way.
    for path in [
        "/v2/local/team-a/../team-b/secret/manifests/v1",
        "/v2/local/team-a/%2e%2e/team-b/secret/manifests/v1",
        "/v2/team-b/secret/manifests/v1?ns=local",
    ] {
        let (status, _) = ask(path.into(), "tok-a").await;
        assert!([400, 403, 404].contains(&status), "{path}: {status}");
    }
    // skopeo, logged in as team-a, is told why.
    let skopeo = crate::support::skopeo::Skopeo::new();
    let out = skopeo
        .run(&[
            "inspect",
            "--tls-verify=false",
            "--creds",
            "team-a:tok-a",
            &format!("docker://{}/local/team-b/secret:v1", proxy.host()),
        ])
        .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not_authorized (decision "), "{stderr}");

    let policies: serde_json::Value =
        serde_json::from_str(&proxy.admin_get("/admin/policies", ADMIN_TOKEN).await).unwrap();
    assert_eq!(
        policies["clients"][0],
        serde_json::json!({"identity": "team-a", "repositories": ["local/team-a/**"]})
    );
    // A reload widens team-a's scope.
    let path = proxy.config_path();
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[\"local/team-a/**\"]",
        "[\"local/team-a/**\", \"local/team-b/**\"]",
    );
    std::fs::write(&path, text).unwrap();
    let (status, body) = proxy.admin_reload(ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ask(format!("{secret}/manifests/v1"), "tok-a").await.0, 200);
}
