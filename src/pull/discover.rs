//! Finding a manifest's signatures and attestations: cosign's legacy
//! `sha256-<hex>.sig` and `.att` tags, and Sigstore bundles among its OCI 1.1
//! referrers (API or fallback tag). The searches run concurrently; every count and size is bounded, and a
//! bound hit is recorded so the gate denies `limit_exceeded`. Upstream
//! faults are errors (never an empty answer), so they can't pass for
//! "unsigned" and are never cached as verdicts.

use futures_util::{StreamExt, TryStreamExt};

use super::budget::Held;
use super::replicas::Turn;
use super::{PullError, Puller, Target};
use crate::oci::media::{OCI_INDEX, OCI_MANIFEST};
use crate::oci::{Descriptor, Digest, Manifest, ManifestKind, Reference, Tag};
use crate::upstream::{FetchedManifest, UpstreamError};
use crate::verify::Needs;
use crate::verify::artifact::{self, ArtifactProof};
use crate::verify::check::COSIGN_SIGN_PREDICATE;
use crate::verify::evidence::{
    Attestation, Evidence, LegacyAttestation, LegacySignature, MAX_ATTESTATION_BYTES,
    MAX_ATTESTATION_TOTAL, MAX_ATTESTATIONS, MAX_SIGNATURE_BYTES, MAX_SIGNATURES, Signature,
};

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
const BUNDLE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
/// Signature fetches in flight at once for one manifest.
const PARALLEL: usize = 8;

/// What one search found: its documents, or the bound it hit (then no
/// documents), and the decision bytes they hold.
struct Found<T> {
    items: Vec<T>,
    limit: Option<String>,
    held: Vec<Held>,
}

impl<T> Found<T> {
    fn none() -> Found<T> {
        Found {
            items: Vec::new(),
            limit: None,
            held: Vec::new(),
        }
    }

    fn limited(limit: String) -> Found<T> {
        Found {
            limit: Some(limit),
            ..Found::none()
        }
    }
}

/// What tells cosign's legacy `.sig` and `.att` manifests apart.
struct LegacyKind<T> {
    /// The tag's suffix after `sha256-<hex>.`.
    suffix: &'static str,
    /// What the documents are, for messages.
    noun: &'static str,
    /// The layers read; others are ignored.
    media_type: &'static str,
    /// The first bound the layers break, if any.
    bounds: fn(&[Descriptor]) -> Option<String>,
    /// The evidence a layer's document and annotations hold, if any.
    evidence: fn(bytes::Bytes, &Descriptor) -> Option<T>,
}

const SIGNATURES: LegacyKind<Signature> = LegacyKind {
    suffix: "sig",
    noun: "signature",
    media_type: SIMPLE_SIGNING,
    bounds,
    evidence: legacy_signature,
};

const ATTESTATIONS: LegacyKind<Attestation> = LegacyKind {
    suffix: "att",
    noun: "attestation",
    media_type: DSSE_ENVELOPE,
    bounds: attestation_bounds,
    evidence: legacy_attestation,
};

fn note(layer: &Descriptor, key: &str) -> Option<String> {
    layer.annotations.as_ref().and_then(|a| a.get(key).cloned())
}

/// A simple-signing payload with its signature annotation (a layer
/// without one holds no signature).
fn legacy_signature(payload: bytes::Bytes, layer: &Descriptor) -> Option<Signature> {
    note(layer, "dev.cosignproject.cosign/signature").map(|signature| {
        Signature::Legacy(LegacySignature {
            payload,
            signature,
            certificate: note(layer, "dev.sigstore.cosign/certificate"),
            chain: note(layer, "dev.sigstore.cosign/chain"),
            rekor_bundle: note(layer, "dev.sigstore.cosign/bundle"),
        })
    })
}

/// A DSSE envelope with its annotations.
fn legacy_attestation(envelope: bytes::Bytes, layer: &Descriptor) -> Option<Attestation> {
    Some(Attestation::Legacy(LegacyAttestation {
        envelope,
        certificate: note(layer, "dev.sigstore.cosign/certificate"),
        chain: note(layer, "dev.sigstore.cosign/chain"),
        rekor_bundle: note(layer, "dev.sigstore.cosign/bundle"),
    }))
}

impl Puller {
    pub(super) async fn discover(
        &self,
        target: &Target,
        digest: &Digest,
        needs: Needs,
    ) -> Result<(Evidence, Vec<Held>), PullError> {
        let (legacy, bundles, attestations) = tokio::join!(
            self.legacy(target, digest, &SIGNATURES),
            self.bundles(target, digest, needs.attestations),
            async {
                if needs.attestations {
                    self.legacy(target, digest, &ATTESTATIONS).await
                } else {
                    Ok(Found::none())
                }
            }
        );
        let Found {
            items: legacy,
            limit: legacy_limit,
            mut held,
        } = legacy?;
        let Found {
            items: bundles,
            limit: bundle_limit,
            held: bundles_held,
        } = bundles?;
        let Found {
            items: mut attestations,
            limit: attestation_limit,
            held: attestations_held,
        } = attestations?;
        held.extend(bundles_held);
        held.extend(attestations_held);
        let mut signatures = legacy;
        signatures.extend(bundles.iter().cloned().map(Signature::Bundle));
        if needs.attestations {
            attestations.extend(bundles.into_iter().map(Attestation::Bundle));
        }
        let mut limit_exceeded = legacy_limit.or(bundle_limit).or(attestation_limit);
        if signatures.len() > MAX_SIGNATURES {
            limit_exceeded = Some(format!("more than {MAX_SIGNATURES} signatures"));
        }
        if attestations.len() > MAX_ATTESTATIONS {
            limit_exceeded = Some(format!("more than {MAX_ATTESTATIONS} attestations"));
        }
        let evidence = Evidence {
            signatures,
            attestations,
            limit_exceeded,
        };
        Ok((evidence, held))
    }

    /// The documents of cosign's `sha256-<hex>.sig` or `.att` manifest
    /// (`kind` says which): the layers of its media type, within its
    /// bounds, each read exactly and turned into evidence.
    async fn legacy<T: Send>(
        &self,
        target: &Target,
        digest: &Digest,
        kind: &LegacyKind<T>,
    ) -> Result<Found<T>, PullError> {
        let tag: Tag = format!("{}.{}", digest.referrers_tag(), kind.suffix)
            .parse()
            .map_err(|_| PullError::Internal(format!("{} tag is not a tag", kind.noun)))?;
        let fetched = match self.discovery_manifest(target, &tag, OCI_MANIFEST).await {
            Ok(f) => f,
            Err(UpstreamError::NotFound) => return Ok(Found::none()),
            Err(e) => return Err(e.into()),
        };
        let layers = match Manifest::parse(&fetched.bytes, fetched.content_type.as_ref()) {
            Ok(Manifest {
                kind: ManifestKind::Image { layers, .. },
                ..
            }) => layers,
            _ => return Ok(Found::none()),
        };
        let layers: Vec<Descriptor> = layers
            .into_iter()
            .filter(|l| l.media_type == kind.media_type)
            .collect();
        if let Some(limit) = (kind.bounds)(&layers) {
            return Ok(Found::limited(limit));
        }
        let held = self.hold_for(target, &layers).await?;
        let found = futures_util::stream::iter(layers)
            .map(|layer| async move {
                let bytes = self.read_exact(target, &layer).await?;
                Ok::<_, PullError>((kind.evidence)(bytes, &layer))
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(Found {
            items: found.into_iter().flatten().collect(),
            limit: None,
            held: vec![held],
        })
    }

    /// Sigstore bundles among the referrers: those that may be signatures,
    /// or every bundle when attestations are wanted too.
    async fn bundles(
        &self,
        target: &Target,
        digest: &Digest,
        with_attestations: bool,
    ) -> Result<Found<bytes::Bytes>, PullError> {
        let referrers = self.discovery_referrers(target, digest).await?;
        if !referrers.complete {
            let pages = super::index::MAX_REFERRER_PAGES;
            return Ok(Found::limited(format!(
                "more than {pages} pages of referrers"
            )));
        }
        let candidates = match bundle_candidates(&referrers.body, with_attestations) {
            Ok(c) => c,
            Err(limit) => return Ok(Found::limited(limit)),
        };
        let per_referrer = futures_util::stream::iter(candidates)
            .map(|d| async move {
                // Held while the referrer manifest is read and parsed.
                let _held = self.budget(target).bytes(d.size).await?;
                self.referrer_layers(target, &d.digest).await
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<_>>()
            .await?;
        let layers: Vec<Descriptor> = per_referrer.into_iter().flatten().collect();
        let limit = if with_attestations {
            attestation_bounds(&layers)
        } else {
            bounds(&layers)
        };
        if let Some(limit) = limit {
            return Ok(Found::limited(limit));
        }
        let held = self.hold_for(target, &layers).await?;
        let bundles = futures_util::stream::iter(layers)
            .map(|layer| async move { self.read_exact(target, &layer).await })
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(Found {
            items: bundles,
            limit: None,
            held: vec![held],
        })
    }

    /// Holds the bytes the documents `layers` name declare, all at once
    /// (a decision never waits for more while holding part of a set), for
    /// as long as the documents are kept.
    async fn hold_for(&self, target: &Target, layers: &[Descriptor]) -> Result<Held, PullError> {
        let total = layers.iter().fold(0u64, |t, l| t.saturating_add(l.size));
        self.budget(target).bytes(total).await
    }

    /// Reads a document `layer` names, at most its declared size (within
    /// the per-document bounds already) and digest-checked.
    async fn read_exact(
        &self,
        target: &Target,
        layer: &Descriptor,
    ) -> Result<bytes::Bytes, PullError> {
        let size = usize::try_from(layer.size).unwrap_or(usize::MAX);
        let Some(shared) = &self.shared else {
            return Ok(target
                .upstream
                .fetch_blob_bounded(&target.repo, &layer.digest, size)
                .await?);
        };
        // Another replica may have read it for the same evidence, or be
        // reading it now.
        let from_bucket = || shared.read_blob(&layer.digest, layer.size);
        let what = format!(
            "evidence:{}/{}:{}",
            target.upstream.name, target.repo, layer.digest
        );
        let _lease = match self.take_turn(&what, from_bucket).await {
            Turn::Done(bytes) => return Ok(bytes),
            Turn::Mine(lease) => lease,
        };
        let bytes = target
            .upstream
            .fetch_blob_bounded(&target.repo, &layer.digest, size)
            .await?;
        shared.put_blob(&layer.digest, &bytes).await;
        Ok(bytes)
    }

    /// The bundle layers one referrer manifest names.
    async fn referrer_layers(
        &self,
        target: &Target,
        digest: &Digest,
    ) -> Result<Vec<Descriptor>, PullError> {
        let most = crate::upstream::MAX_MANIFEST_BYTES as u64;
        let shared = match &self.shared {
            Some(shared) => shared.read_manifest(digest, most).await,
            None => None,
        };
        let fetched = match shared {
            Some((media_type, bytes)) => FetchedManifest {
                bytes,
                content_type: Some(media_type),
                digest_header: None,
            },
            None => {
                let fetched = target
                    .upstream
                    .fetch_manifest(
                        &target.repo,
                        &Reference::Digest(digest.clone()),
                        OCI_MANIFEST,
                    )
                    .await?;
                if !digest.matches(&fetched.bytes) {
                    let e = UpstreamError::DigestMismatch {
                        expected: digest.clone(),
                        actual: Digest::of(digest.algorithm(), &fetched.bytes),
                    };
                    return Err(target.upstream.record_fault(e).into());
                }
                if let (Some(shared), Some(media_type)) = (&self.shared, &fetched.content_type) {
                    shared
                        .put_manifest(digest, media_type, &fetched.bytes)
                        .await;
                }
                fetched
            }
        };
        Ok(
            match Manifest::parse(&fetched.bytes, fetched.content_type.as_ref()) {
                Ok(Manifest {
                    kind: ManifestKind::Image { layers, .. },
                    ..
                }) => layers
                    .into_iter()
                    .filter(|l| l.media_type.starts_with(BUNDLE_PREFIX))
                    .collect(),
                _ => Vec::new(),
            },
        )
    }
}

/// The referrers in a referrers index (`body`) that may be Sigstore
/// bundles (signatures only, unless `with_attestations`), or the bound
/// they break: a referrer manifest too large, or too many of them.
fn bundle_candidates(body: &[u8], with_attestations: bool) -> Result<Vec<Descriptor>, String> {
    let index: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let candidates: Vec<Descriptor> = index["manifests"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|d| serde_json::from_value::<Descriptor>(d.clone()).ok())
                .filter(|d| {
                    if with_attestations {
                        may_be_bundle(d)
                    } else {
                        may_be_signature_bundle(d)
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let most = if with_attestations {
        MAX_SIGNATURES + MAX_ATTESTATIONS
    } else {
        MAX_SIGNATURES
    };
    if let Some(d) = candidates
        .iter()
        .find(|d| d.size > crate::upstream::MAX_MANIFEST_BYTES as u64)
    {
        let most = crate::upstream::MAX_MANIFEST_BYTES;
        return Err(format!(
            "a referrer manifest of {} bytes (at most {most})",
            d.size
        ));
    }
    if candidates.len() > most {
        return Err(format!("more than {most} Sigstore bundle referrers"));
    }
    Ok(candidates)
}

/// A referrer worth fetching: a Sigstore bundle, or an artifact whose type
/// some registries drop (GHCR reports the empty type), unless its (unsigned)
/// annotation says it holds an attestation rather than a signature.
fn may_be_signature_bundle(d: &Descriptor) -> bool {
    let typed = match d.artifact_type.as_deref() {
        None | Some("") | Some("application/vnd.oci.empty.v1+json") => true,
        Some(t) => t.starts_with(BUNDLE_PREFIX),
    };
    let predicate = d
        .annotations
        .as_ref()
        .and_then(|a| a.get("dev.sigstore.bundle.predicateType"));
    typed && predicate.is_none_or(|p| p == COSIGN_SIGN_PREDICATE) && d.media_type != OCI_INDEX
}

/// A referrer that may hold a Sigstore bundle, whatever it claims to be.
fn may_be_bundle(d: &Descriptor) -> bool {
    let typed = match d.artifact_type.as_deref() {
        None | Some("") | Some("application/vnd.oci.empty.v1+json") => true,
        Some(t) => t.starts_with(BUNDLE_PREFIX),
    };
    typed && d.media_type != OCI_INDEX
}

/// The first bound these attestation layers break, if any.
fn attestation_bounds(layers: &[Descriptor]) -> Option<String> {
    if layers.len() > MAX_ATTESTATIONS {
        return Some(format!(
            "{} attestation layers (at most {MAX_ATTESTATIONS})",
            layers.len()
        ));
    }
    if let Some(l) = layers.iter().find(|l| l.size > MAX_ATTESTATION_BYTES) {
        return Some(format!(
            "an attestation of {} bytes (at most {MAX_ATTESTATION_BYTES})",
            l.size
        ));
    }
    let total: u64 = layers.iter().map(|l| l.size).sum();
    (total > MAX_ATTESTATION_TOTAL)
        .then(|| format!("attestations of {total} bytes in all (at most {MAX_ATTESTATION_TOTAL})"))
}

/// The first bound these layers break, if any.
fn bounds(layers: &[Descriptor]) -> Option<String> {
    if layers.len() > MAX_SIGNATURES {
        return Some(format!(
            "{} signature layers (at most {MAX_SIGNATURES})",
            layers.len()
        ));
    }
    layers
        .iter()
        .find(|l| l.size > MAX_SIGNATURE_BYTES)
        .map(|l| {
            format!(
                "a signature layer of {} bytes (at most {MAX_SIGNATURE_BYTES})",
                l.size
            )
        })
}

impl Puller {
    /// Reads what proving `manifest` an artifact needs (its config and
    /// layers, each exactly its declared size and digest-checked; content
    /// already stored is used only once the upstream confirms this
    /// repository holds it) and asks [`artifact::prove`]. Proven documents
    /// are kept in the store for the clients that fetch them next. `Ok(Err)`
    /// means it is not provably an artifact; upstream faults are errors.
    pub(super) async fn prove_artifact(
        &self,
        target: &Target,
        manifest: &Manifest,
    ) -> Result<Result<ArtifactProof, artifact::NotAnArtifact>, PullError> {
        let wanted = match artifact::blobs_to_prove(manifest) {
            Ok(w) => w,
            Err(why) => return Ok(Err(why)),
        };
        let total = wanted.iter().fold(0u64, |t, d| t.saturating_add(d.size));
        let _held = self.budget(target).bytes(total).await?;
        let blobs = futures_util::stream::iter(wanted)
            .map(|d| async move {
                if let Some(b) = self.store.read_small_blob(&d.digest, d.size).await {
                    self.confirm(target, &d.digest, false).await?;
                    return Ok::<_, PullError>((d, b, true));
                }
                let size = usize::try_from(d.size).unwrap_or(usize::MAX);
                let b = target
                    .upstream
                    .fetch_blob_bounded(&target.repo, &d.digest, size)
                    .await?;
                Ok((d, b, false))
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<_>>()
            .await?;
        let read: Vec<_> = blobs
            .iter()
            .map(|(d, b, _)| (d.clone(), b.clone()))
            .collect();
        let proof = artifact::prove(manifest, &read);
        if proof.is_ok() {
            for (d, b, _) in blobs.iter().filter(|(_, _, stored)| !stored) {
                if let Err(e) = self.store.put_blob(&d.digest, b).await {
                    tracing::warn!(digest = %d.digest, error = %e, "storing an artifact document failed");
                }
            }
        }
        Ok(proof)
    }
}
