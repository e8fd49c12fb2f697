//! What a manifest must be to pass through as a signature or attestation
//! artifact. Such artifacts (cosign `.sig`/`.att` manifests, Sigstore bundle
//! referrers, the referrers fallback index) are served unverified so that
//! downstream verifiers keep working, but a media type is a label anyone who
//! can push writes. So a manifest passes as an artifact only when it
//! provably is one:
//!
//! - an image manifest whose every layer is small and parses as the
//!   document its media type claims (a cosign simple-signing payload, a DSSE
//!   envelope of an in-toto statement, an in-toto statement, a Sigstore
//!   bundle), whose config is a small JSON document, and whose documents
//!   all name a common subject digest (the `subject` field's, when it has
//!   one): JSON documents about another manifest, never a filesystem;
//! - an index whose entries are all typed artifacts, not platform images; it
//!   grants none of its children, which are judged on their own.
//!
//! Anything else is an ordinary manifest and is judged as one. Only this
//! module builds an [`ArtifactProof`].

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;

use super::evidence::{
    MAX_ATTESTATION_BYTES, MAX_ATTESTATION_TOTAL, MAX_ATTESTATIONS, MAX_SIGNATURE_BYTES,
};
use crate::oci::{Descriptor, Digest, Manifest, ManifestKind};

const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const BUNDLE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";

/// Largest config an artifact may have (cosign's lists one diff id per layer).
pub const MAX_ARTIFACT_CONFIG: u64 = 64 << 10;

/// Evidence that a manifest is a signature or attestation artifact.
#[derive(Debug)]
pub struct ArtifactProof {
    /// The subject digests its documents name (empty for an index).
    pub subjects: BTreeSet<Digest>,
}

/// The kinds of document a layer may claim to be.
#[derive(Clone, Copy)]
enum Document {
    SimpleSigning,
    Dsse,
    Statement,
    Bundle,
}

fn document(media_type: &str) -> Option<Document> {
    match media_type {
        SIMPLE_SIGNING => Some(Document::SimpleSigning),
        DSSE_ENVELOPE => Some(Document::Dsse),
        IN_TOTO => Some(Document::Statement),
        t if t.starts_with(BUNDLE_PREFIX) => Some(Document::Bundle),
        _ => None,
    }
}

/// Whether a manifest is labelled as a signature or attestation artifact:
/// an image whose layers all have signature media types, or an index
/// whose entries are all typed artifacts. A label, not yet a proof.
pub fn claims(manifest: &Manifest) -> bool {
    match &manifest.kind {
        ManifestKind::Image { layers, .. } => {
            !layers.is_empty() && layers.iter().all(|l| document(&l.media_type).is_some())
        }
        ManifestKind::Index { manifests } => manifests.iter().all(|m| {
            m.platform.is_none() && m.artifact_type.as_deref().is_some_and(|t| !t.is_empty())
        }),
    }
}

/// Why a manifest labelled a signature or attestation artifact is not
/// provably one (it is then judged as the image it is).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAnArtifact {
    #[error("it is not labelled as one")]
    Unlabelled,
    #[error("it has {0} layers (at most {MAX_ATTESTATIONS})")]
    TooManyLayers(usize),
    #[error("its config is {0} bytes (at most {MAX_ARTIFACT_CONFIG})")]
    ConfigTooLarge(u64),
    #[error("a layer has a media type no signature document has")]
    NotADocumentType,
    #[error("a layer is {size} bytes (at most {most})")]
    LayerTooLarge { size: u64, most: u64 },
    #[error("its layers hold {0} bytes (at most {MAX_ATTESTATION_TOTAL})")]
    LayersTooLarge(u64),
    #[error("its config is not a JSON object")]
    ConfigNotJson,
    #[error("its config describes layers other than its own documents")]
    ConfigOfAnotherImage,
    #[error("blob {0} was not read whole")]
    NotReadWhole(Digest),
    /// A layer is not the document its media type claims (`why` says how).
    #[error("a layer labelled {media_type} {why}")]
    NotItsDocument {
        media_type: String,
        why: &'static str,
    },
    #[error("its documents name no common subject")]
    NoCommonSubject,
    #[error("its documents are not about its subject")]
    NotAboutItsSubject,
}

/// The blobs to fetch to prove an image artifact (its config and layers,
/// each digest once), each to be read at exactly its declared size; `Err`
/// when a declared size already breaks a bound.
pub fn blobs_to_prove(manifest: &Manifest) -> Result<Vec<Descriptor>, NotAnArtifact> {
    let ManifestKind::Image { config, layers } = &manifest.kind else {
        return Ok(Vec::new());
    };
    if layers.len() > MAX_ATTESTATIONS {
        return Err(NotAnArtifact::TooManyLayers(layers.len()));
    }
    if config.size > MAX_ARTIFACT_CONFIG {
        return Err(NotAnArtifact::ConfigTooLarge(config.size));
    }
    let mut out: Vec<Descriptor> = vec![config.clone()];
    let mut total = 0u64;
    for l in layers {
        let most = match document(&l.media_type) {
            Some(Document::SimpleSigning) => MAX_SIGNATURE_BYTES,
            Some(_) => MAX_ATTESTATION_BYTES,
            None => return Err(NotAnArtifact::NotADocumentType),
        };
        if l.size > most {
            return Err(NotAnArtifact::LayerTooLarge { size: l.size, most });
        }
        total = total.saturating_add(l.size);
        if !out.iter().any(|d| d.digest == l.digest) {
            out.push(l.clone());
        }
    }
    if total > MAX_ATTESTATION_TOTAL {
        return Err(NotAnArtifact::LayersTooLarge(total));
    }
    Ok(out)
}

/// An artifact's config is JSON that describes no filesystem other than
/// its own documents: the empty object (OCI 1.1 artifacts), or an image
/// config whose `rootfs.diff_ids`, if any, are all among its layers'
/// digests (cosign's and buildx's form, where the layers are uncompressed
/// documents; containers/image writes them deduplicated). The config of
/// another image, which lists that image's filesystem layers, is not.
fn artifact_config(bytes: &[u8], layers: &[Descriptor]) -> Result<(), NotAnArtifact> {
    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        rootfs: Option<RootFs>,
    }
    #[derive(Deserialize)]
    struct RootFs {
        #[serde(default)]
        diff_ids: Vec<String>,
    }
    let config: Config = serde_json::from_slice(bytes).map_err(|_| NotAnArtifact::ConfigNotJson)?;
    let own = |id: &String| layers.iter().any(|l| l.digest.to_string() == *id);
    match config.rootfs {
        Some(r) if !r.diff_ids.iter().all(own) => Err(NotAnArtifact::ConfigOfAnotherImage),
        _ => Ok(()),
    }
}

/// Proves that `manifest` is an artifact from the bytes of the blobs
/// [`blobs_to_prove`] named (already checked against their digests).
pub fn prove(
    manifest: &Manifest,
    blobs: &[(Descriptor, Bytes)],
) -> Result<ArtifactProof, NotAnArtifact> {
    if !claims(manifest) {
        return Err(NotAnArtifact::Unlabelled);
    }
    let ManifestKind::Image { config, layers } = &manifest.kind else {
        return Ok(ArtifactProof {
            subjects: BTreeSet::new(),
        });
    };
    let bytes_of = |d: &Descriptor| {
        blobs
            .iter()
            .find(|(b, _)| b.digest == d.digest)
            .map(|(_, bytes)| bytes)
            .filter(|bytes| bytes.len() as u64 == d.size)
            .ok_or_else(|| NotAnArtifact::NotReadWhole(d.digest.clone()))
    };
    artifact_config(bytes_of(config)?, layers)?;
    let mut common: Option<BTreeSet<Digest>> = None;
    for l in layers {
        let kind = document(&l.media_type).ok_or(NotAnArtifact::NotADocumentType)?;
        let named = subjects(kind, bytes_of(l)?).map_err(|why| NotAnArtifact::NotItsDocument {
            media_type: l.media_type.clone(),
            why,
        })?;
        common = Some(match common {
            None => named,
            Some(c) => c.intersection(&named).cloned().collect(),
        });
    }
    let subjects = common.unwrap_or_default();
    if subjects.is_empty() {
        return Err(NotAnArtifact::NoCommonSubject);
    }
    if let Some(s) = &manifest.subject {
        if !subjects.contains(&s.digest) {
            return Err(NotAnArtifact::NotAboutItsSubject);
        }
    }
    Ok(ArtifactProof { subjects })
}

/// The subject digests one document names, or why it is not that document.
fn subjects(kind: Document, bytes: &[u8]) -> Result<BTreeSet<Digest>, &'static str> {
    match kind {
        Document::SimpleSigning => {
            let payload: SimpleSigning =
                serde_json::from_slice(bytes).map_err(|_| "is not a simple-signing payload")?;
            let digest = payload
                .critical
                .image
                .digest
                .parse()
                .map_err(|_| "names no manifest digest")?;
            Ok(BTreeSet::from([digest]))
        }
        Document::Dsse => {
            let envelope: Envelope =
                serde_json::from_slice(bytes).map_err(|_| "is not a DSSE envelope")?;
            if envelope.payload_type != IN_TOTO {
                return Err("is a DSSE envelope of something other than an in-toto statement");
            }
            let payload = STANDARD
                .decode(envelope.payload.as_bytes())
                .map_err(|_| "has a payload that is not base64")?;
            statement_subjects(&payload)
        }
        Document::Statement => statement_subjects(bytes),
        Document::Bundle => {
            let text = std::str::from_utf8(bytes).map_err(|_| "is not UTF-8")?;
            let bundle =
                super::sigstore::parse_bundle(text).map_err(|_| "is not a Sigstore bundle")?;
            match super::sigstore::bundle_subject(&bundle) {
                super::sigstore::BundleSubject::Statement(payload) => statement_subjects(&payload),
                super::sigstore::BundleSubject::Digest(d) => Ok(BTreeSet::from([d])),
                super::sigstore::BundleSubject::None => Err("signs nothing Portcullis can read"),
            }
        }
    }
}

fn statement_subjects(payload: &[u8]) -> Result<BTreeSet<Digest>, &'static str> {
    let statement: Statement =
        serde_json::from_slice(payload).map_err(|_| "does not hold an in-toto statement")?;
    let subjects: BTreeSet<Digest> = statement
        .subject
        .iter()
        .flat_map(|s| {
            [("sha256", &s.digest.sha256), ("sha512", &s.digest.sha512)]
                .into_iter()
                .filter_map(|(alg, hex)| {
                    hex.as_ref().and_then(|h| format!("{alg}:{h}").parse().ok())
                })
        })
        .collect();
    if subjects.is_empty() {
        return Err("holds a statement about no digest");
    }
    Ok(subjects)
}

#[derive(Deserialize)]
struct SimpleSigning {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: Image,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest", alias = "Docker-manifest-digest")]
    digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload_type: String,
    payload: String,
}

#[derive(Deserialize)]
struct Statement {
    subject: Vec<Subject>,
}

#[derive(Deserialize)]
struct Subject {
    digest: SubjectDigest,
}

#[derive(Deserialize)]
struct SubjectDigest {
    sha256: Option<String>,
    sha512: Option<String>,
}

#[cfg(test)]
mod tests;
