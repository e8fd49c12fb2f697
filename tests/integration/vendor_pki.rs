//! Vendor X.509 PKI authorities (`ca_roots`) over a real registry: legacy
//! `.sig` signatures and Sigstore bundles attached as OCI 1.1 referrers,
//! with and without a transparency log; revocation that leaves nothing
//! trusted; RFC 5280 Extended Key Usage; intermediates carried by the
//! signature. Also the bundle and logged paths of `keys` authorities.

use rcgen::ExtendedKeyUsagePurpose as Eku;
use sha2::{Digest as _, Sha256};

use crate::support::cosign::{self, Referrer, VendorKey, push_referrers};
use crate::support::fulcio::{COSIGN_SIGN_PREDICATE, GITHUB_ISSUER, TransparencyLog, statement};
use crate::support::keyless::Keyless;
use crate::support::pki::VendorCa;
use crate::support::*;

/// A proxy whose only authority, `vendor`, is `authority` (TOML lines, with
/// `{dir}` standing for the directory holding `root.pem`, `vendor.pub` and
/// `trusted_root.json`), required for every image.
struct Instance {
    /// The Fulcio CA and log of the base trusted root (not the vendor's).
    sigstore: Keyless,
    proxy: Proxy,
    pusher: Pusher,
    _registry: Registry,
    _dir: tempfile::TempDir,
}

async fn instance(authority: &str, ca: &VendorCa, key: Option<&VendorKey>) -> Instance {
    let sigstore = Keyless::new();
    let registry = Registry::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("root.pem"), &ca.root_pem).unwrap();
    if let Some(key) = key {
        key.write_public(dir.path(), "vendor.pub");
    }
    sigstore.write_trusted_root(dir.path());
    let authority = authority.replace("{dir}", &dir.path().display().to_string());
    let config = ProxyConfig::new()
        .upstream("local", &registry.url())
        .authority(Authority::named("vendor").lines(&authority))
        .policy(Policy::signed_by("vendor", "**", &["vendor"]));
    let proxy = Proxy::start(config).await;
    let pusher = Pusher::new(&registry.url());
    Instance {
        sigstore,
        proxy,
        pusher,
        _registry: registry,
        _dir: dir,
    }
}

/// The documented "vendor PKI that logs to Rekor".
const LOGGED_PKI: &str = "ca_roots = [\"{dir}/root.pem\"]\ntrusted_root = \"{dir}/trusted_root.json\"\nrequire_tlog = true";
const PKI: &str = "ca_roots = [\"{dir}/root.pem\"]";

/// Pushes `img` to its own repository with these `.sig` layers; the answer.
async fn with_sig(
    i: &Instance,
    repo: &str,
    img: &Image,
    layers: &[cosign::SignatureLayer],
) -> (u16, Option<String>) {
    i.pusher.image(repo, "v1", img).await;
    cosign::push_signatures(&i.pusher, repo, &img.digest, layers).await;
    i.proxy
        .answer(&format!("/v2/local/{repo}/manifests/v1"))
        .await
}

/// Pushes `img` with these bundles as referrers; the answer.
async fn with_bundles(
    i: &Instance,
    repo: &str,
    img: &Image,
    bundles: &[String],
) -> (u16, Option<String>) {
    i.pusher.image(repo, "v1", img).await;
    let referrers: Vec<Referrer> = bundles
        .iter()
        .map(|b| Referrer {
            bundle: b.clone(),
            predicate_type: COSIGN_SIGN_PREDICATE.into(),
        })
        .collect();
    push_referrers(&i.pusher, repo, img, &referrers).await;
    i.proxy
        .answer(&format!("/v2/local/{repo}/manifests/v1"))
        .await
}

fn signing_statement(img: &Image) -> serde_json::Value {
    statement(&img.digest, COSIGN_SIGN_PREDICATE, serde_json::json!({}))
}

fn allowed() -> (u16, Option<String>) {
    (200, None)
}

fn denied(reason: &str) -> (u16, Option<String>) {
    (403, Some(reason.into()))
}

fn sha256_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// A Fulcio certificate of the base trusted root, any identity, logged.
fn fulcio_sig(i: &Instance, img: &Image) -> cosign::SignatureLayer {
    i.sigstore.logged_signature(
        &img.digest,
        "https://github.com/mallory/x/.github/workflows/x.yml@refs/heads/main",
        GITHUB_ISSUER,
    )
}

/// Policy `p`: every image signed by `signer`, with a `predicate_type`
/// attestation (`provenance`) by `vendor`.
fn signed_with_provenance_from_vendor(predicate_type: &str) -> Policy {
    Policy::signed_by("p", "**", &["signer"]).attestations(&[Attestation::new(
        "provenance",
        predicate_type,
        &["vendor"],
    )])
}

mod revoked_everything {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_ca_roots_authority_with_every_ca_revoked_denies_logged_fulcio_and_vendor_signatures()
    {
        let ca = VendorCa::new("acme");
        let by_fingerprint = format!(
            "ca_roots = [\"{{dir}}/root.pem\"]\ntrusted_root = \"{{dir}}/trusted_root.json\"\nrevoked = [\"{}\"]",
            sha256_hex(&ca.cert_der)
        );
        let by_serial = format!(
            "ca_roots = [\"{{dir}}/root.pem\"]\ntrusted_root = \"{{dir}}/trusted_root.json\"\nrevoked_serials = [\"{}\"]",
            ca.serial()
        );
        for authority in [by_fingerprint, by_serial] {
            let i = instance(&authority, &ca, None).await;
            let img = Image::oci(900, &[100]);
            // Before the fix the emptied CA list meant the base root's CAs,
            // with any identity: any Fulcio certificate passed.
            let (status, reason) = with_sig(&i, "v/fulcio", &img, &[fulcio_sig(&i, &img)]).await;
            assert_eq!(status, 403, "{authority}");
            assert!(
                matches!(
                    reason.as_deref(),
                    Some("untrusted_signer" | "trust_unavailable")
                ),
                "{reason:?}"
            );
            let fulcio_bundle = i
                .sigstore
                .fulcio
                .issue("https://github.com/mallory/x", GITHUB_ISSUER)
                .dsse_bundle(&signing_statement(&img), &i.sigstore.log);
            let (status, _) = with_bundles(&i, "v/fulcio-bundle", &img, &[fulcio_bundle]).await;
            assert_eq!(status, 403, "a Fulcio bundle, {authority}");
            let vendor = ca.issue_current();
            let (status, _) = with_sig(
                &i,
                "v/vendor",
                &img,
                &[vendor.sign_logged(&img.digest, &i.sigstore.log)],
            )
            .await;
            assert_eq!(status, 403, "the revoked vendor's own signature");
            let (status, _) =
                with_sig(&i, "v/vendor-unlogged", &img, &[vendor.sign(&img.digest)]).await;
            assert_eq!(status, 403, "unlogged");
        }
    }

    /// Attestations go through the same mechanism: with every CA revoked
    /// neither the vendor's nor a Fulcio-signed logged provenance bundle
    /// satisfies the vendor PKI (without the revocation the vendor's does).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_ca_roots_authority_with_every_ca_revoked_is_not_met_by_a_logged_attestation() {
        const SLSA: &str = "https://slsa.dev/provenance/v1";
        let ca = VendorCa::new("acme");
        for revoked in [true, false] {
            let key = VendorKey::generate();
            let sigstore = Keyless::new();
            let registry = Registry::start().await;
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("root.pem"), &ca.root_pem).unwrap();
            key.write_public(dir.path(), "signer.pub");
            let root = sigstore.write_trusted_root(dir.path());
            let d = dir.path().display();
            let vendor =
                Authority::ca_roots("vendor", &[&format!("{d}/root.pem")]).trusted_root(&root);
            let vendor = if revoked {
                vendor.revoked(&[&sha256_hex(&ca.cert_der)])
            } else {
                vendor
            };
            let config = ProxyConfig::new()
                .upstream("local", &registry.url())
                .authority(Authority::keys("signer", &[&format!("{d}/signer.pub")]))
                .authority(vendor)
                .policy(signed_with_provenance_from_vendor(SLSA));
            let proxy = Proxy::start(config).await;
            let pusher = Pusher::new(&registry.url());
            let provenance = |img: &Image| {
                statement(
                    &img.digest,
                    SLSA,
                    serde_json::json!({"buildDefinition": {}}),
                )
            };
            let signers = [
                (
                    "vendor",
                    ca.issue_current()
                        .dsse_bundle(&provenance(&Image::oci(902, &[100])), Some(&sigstore.log)),
                ),
                (
                    "fulcio",
                    sigstore
                        .fulcio
                        .issue("https://github.com/mallory/x", GITHUB_ISSUER)
                        .dsse_bundle(&provenance(&Image::oci(902, &[100])), &sigstore.log),
                ),
            ];
            for (who, bundle) in signers {
                let repo = format!("v/{who}");
                let img = Image::oci(902, &[100]);
                pusher.image(&repo, "v1", &img).await;
                cosign::push_signatures(
                    &pusher,
                    &repo,
                    &img.digest,
                    &[key.sign(&img.digest, &repo)],
                )
                .await;
                push_referrers(
                    &pusher,
                    &repo,
                    &img,
                    &[Referrer {
                        bundle,
                        predicate_type: SLSA.into(),
                    }],
                )
                .await;
                let (status, reason) = proxy
                    .answer(&format!("/v2/local/{repo}/manifests/v1"))
                    .await;
                if who == "vendor" && !revoked {
                    assert_eq!((status, reason), allowed(), "the control");
                    continue;
                }
                assert_eq!(status, 403, "{who}, revoked: {revoked}");
                assert!(
                    matches!(
                        reason.as_deref(),
                        Some("attestation_missing" | "attestation_invalid" | "untrusted_signer")
                    ),
                    "{reason:?}"
                );
            }
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_keys_authority_with_every_key_revoked_denies_its_sig_and_bundles_untrusted_signer() {
        let ca = VendorCa::new("unused");
        let key = VendorKey::generate();
        let fp = sha256_hex(key.pair.public_key_der().unwrap().as_bytes());
        let authority = format!(
            "keys = [\"{{dir}}/vendor.pub\"]\ntrusted_root = \"{{dir}}/trusted_root.json\"\nrevoked = [\"{fp}\"]"
        );
        let i = instance(&authority, &ca, Some(&key)).await;
        let img = Image::oci(901, &[100]);
        assert_eq!(
            with_sig(&i, "k/sig", &img, &[key.sign(&img.digest, "k/sig")]).await,
            denied("untrusted_signer")
        );
        let bundle = key.dsse_bundle(&signing_statement(&img), Some(&i.sigstore.log));
        assert_eq!(
            with_bundles(&i, "k/bundle", &img, &[bundle]).await,
            denied("untrusted_signer")
        );
    }
}

mod logged_pki {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn the_documented_vendor_pki_that_logs_to_rekor_allows_its_logged_signature_and_denies_other_cas()
     {
        let ca = VendorCa::new("acme");
        let i = instance(LOGGED_PKI, &ca, None).await;
        let img = Image::oci(910, &[100]);
        let layer = ca.issue_current().sign_logged(&img.digest, &i.sigstore.log);
        assert_eq!(with_sig(&i, "v/ok", &img, &[layer]).await, allowed());
        let rogue = VendorCa::new("rogue").issue_current();
        assert_eq!(
            with_sig(
                &i,
                "v/rogue",
                &img,
                &[rogue.sign_logged(&img.digest, &i.sigstore.log)]
            )
            .await,
            denied("untrusted_signer")
        );
        // The base root's Fulcio CA is not the vendor's.
        assert_eq!(
            with_sig(&i, "v/fulcio", &img, &[fulcio_sig(&i, &img)]).await,
            denied("untrusted_signer")
        );
        // A logged vendor bundle (cosign v3), and one from another CA.
        let bundle = ca
            .issue_current()
            .dsse_bundle(&signing_statement(&img), Some(&i.sigstore.log));
        assert_eq!(
            with_bundles(&i, "v/bundle", &img, &[bundle]).await,
            allowed()
        );
        let bundle = VendorCa::new("rogue")
            .issue_current()
            .dsse_bundle(&signing_statement(&img), Some(&i.sigstore.log));
        assert_eq!(
            with_bundles(&i, "v/rogue-bundle", &img, &[bundle]).await,
            denied("untrusted_signer")
        );
    }

    /// `portcullis check-config` on the documented configuration, with the
    /// public-good root and with every CA revoked (which still loads).
    #[test]
    fn check_config_accepts_the_documented_vendor_pki_that_logs_to_rekor() {
        let ca = VendorCa::new("acme");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("acme-root.pem"), &ca.root_pem).unwrap();
        for extra in [
            String::new(),
            "require_code_signing_eku = true".to_string(),
            format!("revoked = [\"{}\"]", sha256_hex(&ca.cert_der)),
        ] {
            let path = dir.path().join("portcullis.toml");
            std::fs::write(
                &path,
                format!(
                    "[server]\nlisten = \"127.0.0.1:5000\"\n\n[cache]\ndir = \"cache\"\n\n[[upstream]]\nname = \"hub\"\nurl = \"https://registry.example\"\n\n[[authority]]\nname = \"acme\"\nca_roots = [\"acme-root.pem\"]\ntrusted_root = \"sigstore-public-good\"\nrequire_tlog = true\n{extra}\n\n[[policy]]\nname = \"acme\"\nmatch = [\"**\"]\nsignatures = {{ authorities = [\"acme\"] }}\n"
                ),
            )
            .unwrap();
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
                .arg("check-config")
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{extra}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn require_tlog_denies_a_vendor_sig_without_a_log_entry_tlog_invalid() {
        let ca = VendorCa::new("acme");
        let i = instance(LOGGED_PKI, &ca, None).await;
        let img = Image::oci(911, &[100]);
        assert_eq!(
            with_sig(
                &i,
                "v/unlogged",
                &img,
                &[ca.issue_current().sign(&img.digest)]
            )
            .await,
            denied("tlog_invalid")
        );
        let bundle = ca
            .issue_current()
            .dsse_bundle(&signing_statement(&img), None);
        assert_eq!(
            with_bundles(&i, "v/unlogged-bundle", &img, &[bundle]).await,
            denied("tlog_invalid")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_vendor_sig_whose_log_entry_another_log_signed_is_denied_tlog_invalid() {
        let ca = VendorCa::new("acme");
        let i = instance(LOGGED_PKI, &ca, None).await;
        let img = Image::oci(912, &[100]);
        let layer = ca
            .issue_current()
            .sign_logged(&img.digest, &TransparencyLog::new());
        assert_eq!(
            with_sig(&i, "v/forged", &img, &[layer]).await,
            denied("tlog_invalid")
        );
    }
}

mod eku {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_leaf_without_an_eku_extension_is_allowed_unlogged_and_logged() {
        let ca = VendorCa::new("acme");
        let i = instance(PKI, &ca, None).await;
        let img = Image::oci(920, &[100]);
        let leaf = ca.issue_with_ekus(vec![]);
        assert_eq!(
            with_sig(&i, "v/no-eku", &img, &[leaf.sign(&img.digest)]).await,
            allowed()
        );
        let bundle = leaf.dsse_bundle(&signing_statement(&img), None);
        assert_eq!(
            with_bundles(&i, "v/no-eku-bundle", &img, &[bundle]).await,
            allowed()
        );

        let logged = instance(LOGGED_PKI, &ca, None).await;
        assert_eq!(
            with_sig(
                &logged,
                "v/no-eku",
                &img,
                &[leaf.sign_logged(&img.digest, &logged.sigstore.log)]
            )
            .await,
            allowed(),
            "on the transparency-log path too"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_leaf_whose_eku_lacks_code_signing_is_denied_untrusted_signer() {
        let ca = VendorCa::new("acme");
        let i = instance(LOGGED_PKI, &ca, None).await;
        let img = Image::oci(921, &[100]);
        let leaf = ca.issue_with_ekus(vec![Eku::ServerAuth]);
        assert_eq!(
            with_sig(
                &i,
                "v/tls",
                &img,
                &[leaf.sign_logged(&img.digest, &i.sigstore.log)]
            )
            .await,
            denied("untrusted_signer")
        );
        let plain = instance(PKI, &ca, None).await;
        assert_eq!(
            with_sig(&plain, "v/tls", &img, &[leaf.sign(&img.digest)]).await,
            denied("untrusted_signer")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_intermediate_without_eku_above_a_code_signing_leaf_is_allowed_but_one_whose_eku_lacks_it_is_denied()
     {
        let ca = VendorCa::new("acme");
        let i = instance(PKI, &ca, None).await;
        let img = Image::oci(922, &[100]);
        let leaf = ca.intermediate("releases", vec![]).issue_current();
        assert_eq!(
            with_sig(&i, "v/int", &img, &[leaf.sign(&img.digest)]).await,
            allowed()
        );
        let tls_only = ca
            .intermediate("web", vec![Eku::ServerAuth])
            .issue_current();
        assert_eq!(
            with_sig(&i, "v/int-tls", &img, &[tls_only.sign(&img.digest)]).await,
            denied("untrusted_signer")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn require_code_signing_eku_denies_a_leaf_without_eku_and_allows_one_with_it() {
        let ca = VendorCa::new("acme");
        for authority in [
            format!("{PKI}\nrequire_code_signing_eku = true"),
            format!("{LOGGED_PKI}\nrequire_code_signing_eku = true"),
        ] {
            let i = instance(&authority, &ca, None).await;
            let img = Image::oci(923, &[100]);
            let bare = ca.issue_with_ekus(vec![]);
            assert_eq!(
                with_sig(
                    &i,
                    "v/no-eku",
                    &img,
                    &[bare.sign_logged(&img.digest, &i.sigstore.log)]
                )
                .await,
                denied("untrusted_signer"),
                "{authority}"
            );
            let signing = ca.issue_current();
            assert_eq!(
                with_sig(
                    &i,
                    "v/eku",
                    &img,
                    &[signing.sign_logged(&img.digest, &i.sigstore.log)]
                )
                .await,
                allowed(),
                "{authority}"
            );
        }
    }
}

mod intermediates {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn an_intermediate_issued_leaf_is_allowed_in_a_bundle_and_in_a_logged_sig() {
        let ca = VendorCa::new("acme");
        let leaf = ca
            .intermediate("releases", vec![Eku::CodeSigning])
            .issue_current();
        let img = Image::oci(930, &[100]);

        let plain = instance(PKI, &ca, None).await;
        let bundle = leaf.dsse_bundle(&signing_statement(&img), None);
        assert_eq!(
            with_bundles(&plain, "v/bundle", &img, &[bundle]).await,
            allowed(),
            "an unlogged bundle with its chain"
        );

        let logged = instance(LOGGED_PKI, &ca, None).await;
        let bundle = leaf.dsse_bundle(&signing_statement(&img), Some(&logged.sigstore.log));
        assert_eq!(
            with_bundles(&logged, "v/bundle", &img, &[bundle]).await,
            allowed(),
            "a logged bundle with its chain"
        );
        assert_eq!(
            with_sig(
                &logged,
                "v/sig",
                &img,
                &[leaf.sign_logged(&img.digest, &logged.sigstore.log)]
            )
            .await,
            allowed(),
            "a logged .sig with its chain annotation"
        );
        // Without the chain the leaf does not reach the root.
        let mut bare = leaf.sign_logged(&img.digest, &logged.sigstore.log);
        bare.chain = None;
        assert_eq!(
            with_sig(&logged, "v/sig-no-chain", &img, &[bare]).await,
            denied("untrusted_signer")
        );
    }
}

/// Revocation by serial reaches certificates inside Sigstore bundles, leaf
/// (v0.3 `certificate`) and intermediate (`x509CertificateChain`) alike.
mod bundle_revocation {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_revoked_leaf_serial_denies_a_vendor_bundle_referrer_and_spares_other_leaves() {
        let ca = VendorCa::new("acme");
        let revoked = ca.issue_current();
        let authority = format!("{PKI}\nrevoked_serials = [\"{}\"]", revoked.serial);
        let i = instance(&authority, &ca, None).await;
        let img = Image::oci(940, &[100]);
        let other = ca
            .issue_current()
            .dsse_bundle(&signing_statement(&img), None);
        assert_eq!(with_bundles(&i, "v/other", &img, &[other]).await, allowed());
        let bundle = revoked.dsse_bundle(&signing_statement(&img), None);
        assert_eq!(
            with_bundles(&i, "v/revoked", &img, &[bundle]).await,
            denied("untrusted_signer")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_revoked_intermediate_serial_denies_a_bundle_carrying_it_in_its_chain() {
        let ca = VendorCa::new("acme");
        let revoked = ca.intermediate("old", vec![]);
        let kept = ca.intermediate("new", vec![]);
        let authority = format!("{PKI}\nrevoked_serials = [\"{}\"]", revoked.serial());
        let i = instance(&authority, &ca, None).await;
        let img = Image::oci(941, &[100]);
        let ok = kept
            .issue_current()
            .dsse_bundle(&signing_statement(&img), None);
        assert_eq!(with_bundles(&i, "v/kept", &img, &[ok]).await, allowed());
        let bundle = revoked
            .issue_current()
            .dsse_bundle(&signing_statement(&img), None);
        assert_eq!(
            with_bundles(&i, "v/revoked", &img, &[bundle]).await,
            denied("untrusted_signer")
        );
    }
}

/// What a bundle's signature covers must be this image.
mod bundle_subject {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_vendor_message_signature_bundle_is_allowed_for_its_image_and_denied_for_another() {
        let ca = VendorCa::new("acme");
        let img = Image::oci(950, &[100]);
        let other = Image::oci(951, &[100]);
        let signer = ca.issue_current();
        for authority in [PKI, LOGGED_PKI] {
            let i = instance(authority, &ca, None).await;
            let log = (authority == LOGGED_PKI).then_some(&i.sigstore.log);
            let own = signer.message_bundle(&img.manifest, log);
            assert_eq!(
                with_bundles(&i, "v/own", &img, &[own]).await,
                allowed(),
                "{authority}"
            );
            let foreign = signer.message_bundle(&other.manifest, log);
            assert_eq!(
                with_bundles(&i, "v/foreign", &img, &[foreign]).await,
                denied("invalid_signature"),
                "{authority}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_vendor_dsse_bundle_about_another_image_is_denied_invalid_signature() {
        let ca = VendorCa::new("acme");
        let i = instance(PKI, &ca, None).await;
        let img = Image::oci(952, &[100]);
        let other = Image::oci(953, &[100]);
        let bundle = ca
            .issue_current()
            .dsse_bundle(&signing_statement(&other), None);
        assert_eq!(
            with_bundles(&i, "v/foreign", &img, &[bundle]).await,
            denied("invalid_signature")
        );
    }
}

/// A `keys` authority with a trusted root: keyed bundles and keyed `.sig`
/// signatures with a Rekor bundle.
mod keyed {
    use super::*;

    const KEYS: &str = "keys = [\"{dir}/vendor.pub\"]\ntrusted_root = \"{dir}/trusted_root.json\"";

    #[tokio::test(flavor = "multi_thread")]
    async fn keyed_dsse_and_message_signature_bundles_are_allowed_for_their_image_only() {
        let key = VendorKey::generate();
        let i = instance(KEYS, &VendorCa::new("unused"), Some(&key)).await;
        let img = Image::oci(960, &[100]);
        let other = Image::oci(961, &[100]);
        let dsse = key.dsse_bundle(&signing_statement(&img), Some(&i.sigstore.log));
        assert_eq!(with_bundles(&i, "k/dsse", &img, &[dsse]).await, allowed());
        let message = key.message_bundle(&img.manifest, Some(&i.sigstore.log));
        assert_eq!(with_bundles(&i, "k/msg", &img, &[message]).await, allowed());
        let foreign = key.message_bundle(&other.manifest, Some(&i.sigstore.log));
        assert_eq!(
            with_bundles(&i, "k/msg-foreign", &img, &[foreign]).await,
            denied("invalid_signature")
        );
        let foreign = key.dsse_bundle(&signing_statement(&other), Some(&i.sigstore.log));
        assert_eq!(
            with_bundles(&i, "k/dsse-foreign", &img, &[foreign]).await,
            denied("invalid_signature")
        );
        let stranger =
            VendorKey::generate().dsse_bundle(&signing_statement(&img), Some(&i.sigstore.log));
        assert_eq!(
            with_bundles(&i, "k/stranger", &img, &[stranger]).await,
            denied("untrusted_signer")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_keyed_sig_with_a_valid_rekor_bundle_is_allowed_and_with_a_forged_one_denied() {
        let key = VendorKey::generate();
        let i = instance(
            &format!("{KEYS}\nrequire_tlog = true"),
            &VendorCa::new("unused"),
            Some(&key),
        )
        .await;
        let img = Image::oci(962, &[100]);
        let logged = |log: &TransparencyLog| {
            let mut layer = key.sign(&img.digest, "k/app");
            layer.rekor_bundle =
                Some(log.entry(&layer.signature, &key.public_pem(), &layer.payload));
            layer
        };
        assert_eq!(
            with_sig(&i, "k/logged", &img, &[logged(&i.sigstore.log)]).await,
            allowed()
        );
        assert_eq!(
            with_sig(&i, "k/forged", &img, &[logged(&TransparencyLog::new())]).await,
            denied("tlog_invalid")
        );
        assert_eq!(
            with_sig(&i, "k/unlogged", &img, &[key.sign(&img.digest, "k/app")]).await,
            denied("tlog_invalid")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_keyed_sig_with_a_forged_rekor_bundle_is_denied_though_no_log_is_required() {
        // A log entry that is there is verified, required or not: a forged
        // one is not taken as "unlogged, which is allowed".
        let key = VendorKey::generate();
        let i = instance(KEYS, &VendorCa::new("unused"), Some(&key)).await;
        let img = Image::oci(963, &[100]);
        let mut forged = key.sign(&img.digest, "k/app");
        forged.rekor_bundle = Some(TransparencyLog::new().entry(
            &forged.signature,
            &key.public_pem(),
            &forged.payload,
        ));
        assert_eq!(
            with_sig(&i, "k/forged", &img, &[forged]).await,
            denied("tlog_invalid")
        );
        let unlogged = key.sign(&img.digest, "k/app");
        assert_eq!(
            with_sig(&i, "k/unlogged", &img, &[unlogged]).await,
            allowed()
        );
    }
}

/// Legacy `.att` attestations signed under a vendor PKI (certificate in the
/// layer's annotation): the chain is checked when no log is required, and
/// an attestation without a log entry is refused when one is.
mod legacy_attestations {
    use super::*;

    const SLSA: &str = "https://slsa.dev/provenance/v1";

    async fn answer(vendor_extra: &str, seed: u64) -> (u16, Option<String>) {
        let ca = VendorCa::new("acme");
        let signer = ca.issue_current();
        let key = VendorKey::generate();
        let sigstore = Keyless::new();
        let registry = Registry::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.pem"), &ca.root_pem).unwrap();
        key.write_public(dir.path(), "signer.pub");
        sigstore.write_trusted_root(dir.path());
        let d = dir.path().display().to_string();
        let vendor = Authority::ca_roots("vendor", &[&format!("{d}/root.pem")])
            .lines(&vendor_extra.replace("{dir}", &d));
        let config = ProxyConfig::new()
            .upstream("local", &registry.url())
            .authority(Authority::keys("signer", &[&format!("{d}/signer.pub")]))
            .authority(vendor)
            .policy(signed_with_provenance_from_vendor(SLSA));
        let proxy = Proxy::start(config).await;
        let pusher = Pusher::new(&registry.url());
        let img = Image::oci(seed, &[100]);
        pusher.image("v/app", "v1", &img).await;
        cosign::push_signatures(
            &pusher,
            "v/app",
            &img.digest,
            &[key.sign(&img.digest, "v/app")],
        )
        .await;
        let mut att = signer.key.attest(&statement(
            &img.digest,
            SLSA,
            serde_json::json!({"buildDefinition": {}}),
        ));
        att.certificate = Some(signer.cert_pem.clone());
        cosign::push_attestations(&pusher, "v/app", &img.digest, &[att]).await;
        proxy.answer("/v2/local/v/app/manifests/v1").await
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_vendor_signed_att_is_allowed_by_its_chain_when_no_log_is_required() {
        assert_eq!(answer("", 1301).await, allowed());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_vendor_signed_att_without_a_log_entry_is_refused_when_a_log_is_required() {
        let (status, reason) = answer(
            "trusted_root = \"{dir}/trusted_root.json\"\nrequire_tlog = true",
            1302,
        )
        .await;
        assert_eq!(status, 403, "{reason:?}");
    }
}
