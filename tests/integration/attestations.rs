//! Attestation enforcement over a real registry: in-toto statements signed
//! by the tests' own vendor key (cosign legacy `.att` tags) and keylessly
//! against a private Sigstore (bundles attached as OCI 1.1 referrers).

use crate::support::cosign::{self, AttestationLayer, Referrer, VendorKey, push_attestations};
use crate::support::fulcio::{Fulcio, GITHUB_ISSUER, TransparencyLog, statement, trusted_root};
use crate::support::*;

const SLSA: &str = "https://slsa.dev/provenance/v1";
const VULN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
const RUNNER: &str = "https://github.com/actions/runner/github-hosted";
const CI_IDENTITY: &str = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1";

struct Instance {
    vendor: VendorKey,
    fulcio: Fulcio,
    log: TransparencyLog,
    proxy: Proxy,
    pusher: Pusher,
    _registry: Registry,
    _dir: tempfile::TempDir,
}

async fn instance() -> Instance {
    let vendor = VendorKey::generate();
    let fulcio = Fulcio::new();
    let log = TransparencyLog::new();
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("trusted_root.json"),
        trusted_root(&fulcio, &log),
    )
    .unwrap();
    vendor.write_public(dir.path(), "acme.pub");
    let d = dir.path().display();
    let body = format!(
        r#"{upstream}
[[authority]]
name = "acme"
keys = ["{d}/acme.pub"]

[[authority]]
name = "acme-ci"
keyless = {{ issuer = "{GITHUB_ISSUER}", subject = "{CI_IDENTITY}" }}
trusted_root = "{d}/trusted_root.json"
require_sct = false

[[condition]]
name = "github-hosted-builder"
expr = 'predicate.runDetails.builder.id == "{RUNNER}"'

[[condition]]
name = "no-critical-vulnerabilities"
expr = '!predicate.scanner.result.Results.exists(r, has(r.Vulnerabilities) && r.Vulnerabilities.exists(v, v.Severity == "CRITICAL"))'

[[policy]]
name = "scanned"
match = ["local/acme/scanned"]
signatures = {{ authorities = ["acme"] }}
attestations = [
  {{ name = "vulnerabilities", predicate_type = "{VULN}", authorities = ["acme"], condition = "no-critical-vulnerabilities", max_age = "7d" }},
]

[[policy]]
name = "acme"
match = ["local/acme/**"]
signatures = {{ authorities = ["acme"] }}
attestations = [
  {{ name = "provenance", predicate_type = "{SLSA}", authorities = ["acme", "acme-ci"], condition = "github-hosted-builder" }},
]
"#,
        upstream = upstream_toml("local", &registry.url(), ""),
    );
    let proxy = Proxy::start(&body, None).await;
    let pusher = Pusher::new(&registry.url());
    Instance {
        vendor,
        fulcio,
        log,
        proxy,
        pusher,
        _registry: registry,
        _dir: dir,
    }
}

fn provenance(digest: &str, builder: &str) -> serde_json::Value {
    statement(
        digest,
        SLSA,
        serde_json::json!({
            "buildDefinition": {"buildType": "https://actions.github.io/buildtypes/workflow/v1",
                "externalParameters": {"workflow": {"repository": "https://github.com/acme/app"}}},
            "runDetails": {"builder": {"id": builder}, "metadata": {"finishedOn": "2026-01-01T00:00:00Z"}},
        }),
    )
}

fn scan(digest: &str, finished: std::time::SystemTime, severity: &str) -> serde_json::Value {
    let finished = humantime::format_rfc3339_seconds(finished).to_string();
    statement(
        digest,
        VULN,
        serde_json::json!({
            "scanner": {"uri": "pkg:github/aquasecurity/trivy", "result": {"Results": [
                {"Target": "debian", "Vulnerabilities": [{"VulnerabilityID": "CVE-2026-0001", "Severity": severity}]},
            ]}},
            "metadata": {"scanStartedOn": finished, "scanFinishedOn": finished},
        }),
    )
}

impl Instance {
    /// Pushes `img` to `repo` signed by the vendor key, with these `.att` layers.
    async fn push(&self, repo: &str, img: &Image, attestations: &[AttestationLayer]) {
        self.pusher.image(repo, &tag(img), img).await;
        let sig = self.vendor.sign(&img.digest, repo);
        cosign::push_signatures(&self.pusher, repo, &img.digest, &[sig]).await;
        if !attestations.is_empty() {
            push_attestations(&self.pusher, repo, &img.digest, attestations).await;
        }
    }

    /// Status and denial reason of the manifest; a denied image's layer is
    /// refused too.
    async fn answer(&self, repo: &str, img: &Image) -> (u16, Option<String>) {
        let r = self
            .proxy
            .get_manifest(&format!("/v2/local/{repo}/manifests/{}", tag(img)))
            .await;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        let blob = self
            .proxy
            .get(&format!("/v2/local/{repo}/blobs/{}", img.layers[0].digest))
            .await;
        if status == 200 {
            assert_eq!(blob.status().as_u16(), 200);
            assert_eq!(
                blob.bytes().await.unwrap().as_ref(),
                img.layers[0].bytes.as_slice()
            );
        } else {
            assert_eq!(blob.status().as_u16(), 403, "a denied image's blob");
        }
        (
            status,
            body["errors"][0]["detail"]["reason"]
                .as_str()
                .map(String::from),
        )
    }
}

/// Each image its own tag: a tag moved to another image would be served
/// from the tag cache until `tag_ttl`.
fn tag(img: &Image) -> String {
    format!("t-{}", &img.digest["sha256:".len()..][..12])
}

fn denied(reason: &str) -> (u16, Option<String>) {
    (403, Some(reason.to_string()))
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_slsa_provenance_in_an_att_tag_lets_the_image_through() {
    let i = instance().await;
    let img = Image::oci(600, &[300]);
    let att = i.vendor.attest(&provenance(&img.digest, RUNNER));
    i.push("acme/app", &img, &[att]).await;
    assert_eq!(i.answer("acme/app", &img).await, (200, None));
}

#[tokio::test(flavor = "multi_thread")]
async fn keyless_slsa_provenance_in_a_referrer_bundle_lets_the_image_through() {
    let i = instance().await;
    let img = Image::oci(601, &[300]);
    i.push("acme/app", &img, &[]).await;
    let bundle = i
        .fulcio
        .issue(CI_IDENTITY, GITHUB_ISSUER)
        .dsse_bundle(&provenance(&img.digest, RUNNER), &i.log);
    cosign::push_referrers(
        &i.pusher,
        "acme/app",
        &img,
        &[Referrer {
            bundle,
            predicate_type: SLSA.into(),
        }],
    )
    .await;
    assert_eq!(i.answer("acme/app", &img).await, (200, None));
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_provenance_is_denied_attestation_missing() {
    let i = instance().await;
    let img = Image::oci(602, &[300]);
    i.push("acme/app", &img, &[]).await;
    assert_eq!(
        i.answer("acme/app", &img).await,
        denied("attestation_missing")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn provenance_about_another_digest_is_denied_attestation_invalid() {
    let i = instance().await;
    let img = Image::oci(603, &[300]);
    let other = Image::oci(604, &[300]);
    let att = i.vendor.attest(&provenance(&other.digest, RUNNER));
    i.push("acme/app", &img, &[att]).await;
    assert_eq!(
        i.answer("acme/app", &img).await,
        denied("attestation_invalid")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn provenance_signed_by_an_untrusted_key_is_denied_attestation_invalid() {
    let i = instance().await;
    let img = Image::oci(605, &[300]);
    let att = VendorKey::generate().attest(&provenance(&img.digest, RUNNER));
    i.push("acme/app", &img, &[att]).await;
    assert_eq!(
        i.answer("acme/app", &img).await,
        denied("attestation_invalid")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn provenance_with_a_wrong_payload_type_is_denied_attestation_invalid() {
    let i = instance().await;
    let img = Image::oci(606, &[300]);
    let att = i
        .vendor
        .attest_as(&provenance(&img.digest, RUNNER), "application/json");
    i.push("acme/app", &img, &[att]).await;
    assert_eq!(
        i.answer("acme/app", &img).await,
        denied("attestation_invalid")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn provenance_from_another_builder_is_denied_predicate_failed() {
    let i = instance().await;
    let img = Image::oci(607, &[300]);
    let att = i
        .vendor
        .attest(&provenance(&img.digest, "https://ci.evil.example/builder"));
    i.push("acme/app", &img, &[att]).await;
    assert_eq!(i.answer("acme/app", &img).await, denied("predicate_failed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn vulnerability_scan_with_a_critical_finding_is_denied_predicate_failed() {
    let i = instance().await;
    let img = Image::oci(608, &[300]);
    let now = std::time::SystemTime::now();
    let att = i.vendor.attest(&scan(&img.digest, now, "CRITICAL"));
    i.push("acme/scanned", &img, &[att]).await;
    assert_eq!(
        i.answer("acme/scanned", &img).await,
        denied("predicate_failed")
    );

    let clean = Image::oci(609, &[300]);
    let att = i.vendor.attest(&scan(&clean.digest, now, "LOW"));
    i.push("acme/scanned", &clean, &[att]).await;
    assert_eq!(
        i.answer("acme/scanned", &clean).await,
        (200, None),
        "the same scan with only a low finding passes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn vulnerability_scan_older_than_max_age_is_denied_predicate_failed() {
    let i = instance().await;
    let img = Image::oci(610, &[300]);
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 86400);
    let att = i.vendor.attest(&scan(&img.digest, old, "LOW"));
    i.push("acme/scanned", &img, &[att]).await;
    let r = i
        .proxy
        .get_manifest(&format!("/v2/local/acme/scanned/manifests/{}", tag(&img)))
        .await;
    assert_eq!(r.status().as_u16(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["detail"]["reason"], "predicate_failed");
    let message = body["errors"][0]["message"].to_string();
    assert!(message.contains("max_age"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn predicate_type_only_in_an_unsigned_annotation_is_denied_attestation_missing() {
    let i = instance().await;
    let img = Image::oci(611, &[300]);
    // A genuine vendor attestation of another type, relabelled as provenance
    // in the layer annotation (which nobody signed), both ways.
    let mut att = i.vendor.attest(&statement(
        &img.digest,
        "https://spdx.dev/Document",
        serde_json::json!({"spdxVersion": "SPDX-2.3"}),
    ));
    att.predicate_type = SLSA.into();
    i.push("acme/app", &img, &[att]).await;
    let bundle = i.fulcio.issue(CI_IDENTITY, GITHUB_ISSUER).dsse_bundle(
        &statement(
            &img.digest,
            "https://spdx.dev/Document",
            serde_json::json!({"spdxVersion": "SPDX-2.3"}),
        ),
        &i.log,
    );
    cosign::push_referrers(
        &i.pusher,
        "acme/app",
        &img,
        &[Referrer {
            bundle,
            predicate_type: SLSA.into(),
        }],
    )
    .await;
    assert_eq!(
        i.answer("acme/app", &img).await,
        denied("attestation_missing")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_command_names_the_predicate_type_and_condition_of_a_failed_attestation() {
    let i = instance().await;
    let img = Image::oci(612, &[300]);
    let att = i
        .vendor
        .attest(&provenance(&img.digest, "https://ci.evil.example/builder"));
    i.push("acme/app", &img, &[att]).await;
    let config = i.proxy.config_path();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args([
                "verify",
                &format!("local/acme/app:{}", tag(&img)),
                "--config",
            ])
            .arg(config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("verdict: deny (predicate_failed)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "attestation provenance ({SLSA}, condition github-hosted-builder): not met (predicate_failed"
        )),
        "{stdout}"
    );
}
