//! Attestation enforcement over a real registry: in-toto statements signed
//! by the tests' own vendor key (cosign legacy `.att` tags) and keylessly
//! against a private Sigstore (bundles attached as OCI 1.1 referrers).

use crate::support::cosign::{
    self, AttestationLayer, Referrer, VendorKey, push_attestations, wrap_lines,
};
use crate::support::fulcio::{GITHUB_ISSUER, statement};
use crate::support::keyless::Keyless;
use crate::support::*;

const SLSA: &str = "https://slsa.dev/provenance/v1";
const VULN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
const RUNNER: &str = "https://github.com/actions/runner/github-hosted";
const CI_IDENTITY: &str = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1";

struct Instance {
    vendor: VendorKey,
    sigstore: Keyless,
    proxy: Proxy,
    pusher: Pusher,
    _registry: Registry,
    _dir: tempfile::TempDir,
}

async fn instance() -> Instance {
    let vendor = VendorKey::generate();
    let sigstore = Keyless::new();
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = sigstore.write_trusted_root(dir.path());
    vendor.write_public(dir.path(), "acme.pub");
    let acme_pub = format!("{}/acme.pub", dir.path().display());
    let scanned = |authority| {
        Attestation::new("vulnerabilities", VULN, &[authority])
            .condition("no-critical-vulnerabilities")
            .max_age("7d")
    };
    let config = ProxyConfig::new()
        .upstream("local", &registry.url())
        .authority(Authority::keys("acme", &[&acme_pub]))
        .authority(
            Authority::keys("acme-logged", &[&acme_pub])
                .trusted_root(&root)
                .require_tlog(),
        )
        .authority(Keyless::authority(
            "acme-ci",
            Subject::Exact(CI_IDENTITY),
            &root,
        ))
        .condition(
            "github-hosted-builder",
            &format!("predicate.runDetails.builder.id == \"{RUNNER}\""),
        )
        .condition(
            "no-critical-vulnerabilities",
            r#"!predicate.scanner.result.Results.exists(r, has(r.Vulnerabilities) && r.Vulnerabilities.exists(v, v.Severity == "CRITICAL"))"#,
        )
        .policy(
            Policy::signed_by("scanned", "local/acme/scanned", &["acme"])
                .attestations(&[scanned("acme")]),
        )
        .policy(
            Policy::signed_by("scanned-ci", "local/acme/scanned-ci", &["acme"])
                .attestations(&[scanned("acme-ci")]),
        )
        .policy(
            Policy::signed_by("logged", "local/acme/logged", &["acme"]).attestations(&[
                Attestation::new("provenance", SLSA, &["acme-logged"])
                    .condition("github-hosted-builder"),
            ]),
        )
        .policy(
            Policy::signed_by("acme", "local/acme/**", &["acme"]).attestations(&[
                Attestation::new("provenance", SLSA, &["acme", "acme-ci"])
                    .condition("github-hosted-builder"),
            ]),
        );
    let proxy = Proxy::start(config).await;
    let pusher = Pusher::new(&registry.url());
    Instance {
        vendor,
        sigstore,
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
    scan_with(digest, finished, serde_json::json!(severity))
}

/// A Trivy scan with one finding of this severity (any JSON value).
fn scan_with(
    digest: &str,
    finished: std::time::SystemTime,
    severity: serde_json::Value,
) -> serde_json::Value {
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
async fn a_key_signed_att_without_a_log_entry_is_denied_when_its_authority_requires_one() {
    let i = instance().await;
    let img = Image::oci(640, &[300]);
    let att = i.vendor.attest(&provenance(&img.digest, RUNNER));
    i.push("acme/logged", &img, std::slice::from_ref(&att))
        .await;
    let (status, reason) = i.answer("acme/logged", &img).await;
    assert_eq!(status, 403, "{reason:?}");
    // The same attestation satisfies an authority that does not require a log.
    let other = Image::oci(641, &[300]);
    let att = i.vendor.attest(&provenance(&other.digest, RUNNER));
    i.push("acme/app", &other, &[att]).await;
    assert_eq!(i.answer("acme/app", &other).await, (200, None));
}

#[tokio::test(flavor = "multi_thread")]
async fn keyless_slsa_provenance_in_a_referrer_bundle_lets_the_image_through() {
    let i = instance().await;
    let img = Image::oci(601, &[300]);
    i.push("acme/app", &img, &[]).await;
    let bundle = i
        .sigstore
        .fulcio
        .issue(CI_IDENTITY, GITHUB_ISSUER)
        .dsse_bundle(&provenance(&img.digest, RUNNER), &i.sigstore.log);
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
    let bundle = i
        .sigstore
        .fulcio
        .issue(CI_IDENTITY, GITHUB_ISSUER)
        .dsse_bundle(
            &statement(
                &img.digest,
                "https://spdx.dev/Document",
                serde_json::json!({"spdxVersion": "SPDX-2.3"}),
            ),
            &i.sigstore.log,
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
    let digest = img.digest.clone();
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
        stdout.contains(&format!("digest: {digest}\n")),
        "a denial names the digest it decided: {stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "attestation provenance ({SLSA}, condition github-hosted-builder): not met (predicate_failed"
        )),
        "{stdout}"
    );
}

/// The denial's reason and message for `repo`'s image.
async fn denial(i: &Instance, repo: &str, img: &Image) -> (u16, String, String) {
    let r = i
        .proxy
        .get_manifest(&format!("/v2/local/{repo}/manifests/{}", tag(img)))
        .await;
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (
        status,
        body["errors"][0]["detail"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scan_claiming_to_finish_in_the_future_is_denied_predicate_failed() {
    let i = instance().await;
    let img = Image::oci(613, &[300]);
    let future = humantime::parse_rfc3339("2099-01-01T00:00:00Z").unwrap();
    let att = i.vendor.attest(&scan(&img.digest, future, "LOW"));
    i.push("acme/scanned", &img, &[att]).await;
    let (status, reason, message) = denial(&i, "acme/scanned", &img).await;
    assert_eq!(
        (status, reason.as_str()),
        (403, "predicate_failed"),
        "{message}"
    );
    assert!(
        message.contains("2099-01-01T00:00:00Z is in the future"),
        "{message}"
    );
    assert_eq!(
        i.answer("acme/scanned", &img).await,
        denied("predicate_failed")
    );

    // A clock a minute ahead is tolerated.
    let clean = Image::oci(614, &[300]);
    let ahead = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    let att = i.vendor.attest(&scan(&clean.digest, ahead, "LOW"));
    i.push("acme/scanned", &clean, &[att]).await;
    assert_eq!(i.answer("acme/scanned", &clean).await, (200, None));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_signed_scan_claiming_a_recent_finish_is_judged_by_its_logged_signing_time() {
    let i = instance().await;
    let now = time::OffsetDateTime::now_utc();
    // Signed (and logged in Rekor) eight days ago, but claiming to have
    // finished just now: max_age 7d counts from the proven signing time.
    let old = Image::oci(615, &[300]);
    i.push("acme/scanned-ci", &old, &[]).await;
    let eight_days_ago = now - time::Duration::days(8);
    let bundle = i
        .sigstore
        .fulcio
        .issue_at(CI_IDENTITY, GITHUB_ISSUER, eight_days_ago)
        .dsse_bundle_logged_at(
            &scan(&old.digest, std::time::SystemTime::now(), "LOW"),
            "application/vnd.in-toto+json",
            &i.sigstore.log,
            eight_days_ago,
        );
    let referrer = |bundle| Referrer {
        bundle,
        predicate_type: VULN.into(),
    };
    cosign::push_referrers(&i.pusher, "acme/scanned-ci", &old, &[referrer(bundle)]).await;
    let (status, reason, message) = denial(&i, "acme/scanned-ci", &old).await;
    assert_eq!(
        (status, reason.as_str()),
        (403, "predicate_failed"),
        "{message}"
    );
    assert!(message.contains("8days"), "{message}");
    assert!(message.contains("more than max_age"), "{message}");

    // The same scan signed six days ago is fresh enough.
    let recent = Image::oci(616, &[300]);
    i.push("acme/scanned-ci", &recent, &[]).await;
    let six_days_ago = now - time::Duration::days(6);
    let bundle = i
        .sigstore
        .fulcio
        .issue_at(CI_IDENTITY, GITHUB_ISSUER, six_days_ago)
        .dsse_bundle_logged_at(
            &scan(&recent.digest, std::time::SystemTime::now(), "LOW"),
            "application/vnd.in-toto+json",
            &i.sigstore.log,
            six_days_ago,
        );
    cosign::push_referrers(&i.pusher, "acme/scanned-ci", &recent, &[referrer(bundle)]).await;
    assert_eq!(i.answer("acme/scanned-ci", &recent).await, (200, None));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_with_two_predicate_members_is_denied_attestation_invalid() {
    let i = instance().await;
    let img = Image::oci(617, &[300]);
    let now = std::time::SystemTime::now();
    // The first predicate holds the critical finding; a parser keeping the
    // last member would see only the clean one.
    let critical = scan(&img.digest, now, "CRITICAL");
    let clean = scan(&img.digest, now, "LOW");
    let mut payload = serde_json::to_string(&critical).unwrap();
    payload.pop();
    payload.push_str(&format!(r#","predicate":{}}}"#, clean["predicate"]));
    let att = i
        .vendor
        .attest_payload(payload.as_bytes(), "application/vnd.in-toto+json", VULN);
    i.push("acme/scanned", &img, &[att]).await;
    let (status, reason, message) = denial(&i, "acme/scanned", &img).await;
    assert_eq!(
        (status, reason.as_str()),
        (403, "attestation_invalid"),
        "{message}"
    );
    assert!(
        message.contains(r#"member "predicate" is duplicated"#),
        "{message}"
    );
    assert_eq!(
        i.answer("acme/scanned", &img).await,
        denied("attestation_invalid")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scan_with_a_numeric_severity_fails_a_negated_condition_predicate_failed() {
    let i = instance().await;
    let img = Image::oci(618, &[300]);
    let now = std::time::SystemTime::now();
    // `!…exists(v, v.Severity == "CRITICAL")` with a number for Severity:
    // an evaluation error, not `false` turned into a pass.
    let att = i
        .vendor
        .attest(&scan_with(&img.digest, now, serde_json::json!(9)));
    i.push("acme/scanned", &img, &[att]).await;
    let (status, reason, message) = denial(&i, "acme/scanned", &img).await;
    assert_eq!(
        (status, reason.as_str()),
        (403, "predicate_failed"),
        "{message}"
    );
    assert!(message.contains("could not be evaluated"), "{message}");
    assert!(
        message.contains("cannot compare a uint with a string"),
        "{message}"
    );
    assert_eq!(
        i.answer("acme/scanned", &img).await,
        denied("predicate_failed")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dsse_signature_wrapped_at_76_columns_is_accepted_and_still_verified() {
    let i = instance().await;
    let wrapped = |mut att: AttestationLayer| {
        let mut env: serde_json::Value = serde_json::from_str(&att.envelope).unwrap();
        let sig = env["signatures"][0]["sig"].as_str().unwrap().to_string();
        env["signatures"][0]["sig"] = serde_json::json!(wrap_lines(&sig, 76).replace('\n', "\r\n"));
        att.envelope = env.to_string();
        att
    };
    let img = Image::oci(619, &[300]);
    let att = wrapped(i.vendor.attest(&provenance(&img.digest, RUNNER)));
    assert!(att.envelope.contains("\\r\\n"), "the signature is wrapped");
    i.push("acme/app", &img, &[att]).await;
    assert_eq!(i.answer("acme/app", &img).await, (200, None));
    let r = i
        .proxy
        .get_manifest(&format!("/v2/local/acme/app/manifests/{}", tag(&img)))
        .await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), img.manifest.as_slice());

    // A wrapped signature over another statement does not verify (the
    // scanned policy trusts only the vendor key, so its message is the one).
    let other = Image::oci(620, &[300]);
    let now = std::time::SystemTime::now();
    let mut att = i.vendor.attest(&scan(&other.digest, now, "LOW"));
    let forged = wrapped(i.vendor.attest(&scan(&img.digest, now, "LOW")));
    let mut env: serde_json::Value = serde_json::from_str(&att.envelope).unwrap();
    let forged_env: serde_json::Value = serde_json::from_str(&forged.envelope).unwrap();
    env["signatures"] = forged_env["signatures"].clone();
    att.envelope = env.to_string();
    i.push("acme/scanned", &other, &[att]).await;
    let (status, reason, message) = denial(&i, "acme/scanned", &other).await;
    assert_eq!(
        (status, reason.as_str()),
        (403, "attestation_invalid"),
        "{message}"
    );
    assert!(
        message.contains("not signed by any of the authority's keys"),
        "{message}"
    );
}
