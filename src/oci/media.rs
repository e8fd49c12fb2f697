//! Media types and the manifest shapes the proxy needs to read.

use std::fmt;

use serde::Deserialize;

use super::digest::Digest;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What upstreams are asked for when the client sent no usable `Accept`.
pub const DEFAULT_MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A media type (`type/subtype`, parameters stripped), validated to be a
/// header-safe token so it can be echoed in `Content-Type`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MediaType(Box<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid media type")]
pub struct MediaTypeError;

impl MediaType {
    /// Parses a `Content-Type`-like value, dropping any `;` parameters.
    pub fn parse(s: &str) -> Result<MediaType, MediaTypeError> {
        let essence = s.split(';').next().unwrap_or_default().trim();
        let (ty, sub) = essence.split_once('/').ok_or(MediaTypeError)?;
        let token = |t: &str| {
            !t.is_empty()
                && t.len() <= 127
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        if !token(ty) || !token(sub) {
            return Err(MediaTypeError);
        }
        Ok(MediaType(essence.to_ascii_lowercase().into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this names a manifest list / image index.
    pub fn is_index(&self) -> bool {
        matches!(&*self.0, OCI_INDEX | DOCKER_MANIFEST_LIST)
    }

    /// Whether this is one of the four manifest types the proxy serves.
    pub fn is_manifest(&self) -> bool {
        matches!(
            &*self.0,
            OCI_INDEX | DOCKER_MANIFEST_LIST | OCI_MANIFEST | DOCKER_MANIFEST
        )
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A content descriptor inside a manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub platform: Option<serde_json::Value>,
}

/// The parts of an image manifest or index that the proxy reads. Unknown
/// fields are ignored; the bytes themselves are never re-serialised.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(default)]
    annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// A parsed manifest: either an image (config + layers) or an index.
#[derive(Debug)]
pub struct Manifest {
    pub media_type: MediaType,
    pub artifact_type: Option<String>,
    pub kind: ManifestKind,
    pub subject: Option<Descriptor>,
    pub annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug)]
pub enum ManifestKind {
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        manifests: Vec<Descriptor>,
    },
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not valid JSON of the expected shape: {0}")]
    Json(String),
    #[error("manifest schemaVersion {0} is not supported")]
    SchemaVersion(u32),
    #[error("manifest has no usable media type")]
    NoMediaType,
    #[error("manifest media type {body} does not match Content-Type {header}")]
    MediaTypeMismatch { body: String, header: String },
    #[error("manifest media type {0} is not a supported manifest type")]
    Unsupported(String),
    #[error("manifest is ambiguous: it has both layers and manifests")]
    Ambiguous,
    #[error("manifest lacks the {0} its media type requires")]
    Missing(&'static str),
}

impl Manifest {
    /// Parses `bytes`, taking the media type from the body when present and
    /// otherwise from `content_type`; when both are present they must agree.
    pub fn parse(
        bytes: &[u8],
        content_type: Option<&MediaType>,
    ) -> Result<Manifest, ManifestError> {
        let raw: RawManifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
        if raw.schema_version != 2 {
            return Err(ManifestError::SchemaVersion(raw.schema_version));
        }
        let body_type = raw
            .media_type
            .as_deref()
            .map(|m| MediaType::parse(m).map_err(|_| ManifestError::NoMediaType))
            .transpose()?;
        let media_type = match (body_type, content_type) {
            (Some(body), Some(header)) if body != *header => {
                return Err(ManifestError::MediaTypeMismatch {
                    body: body.to_string(),
                    header: header.to_string(),
                });
            }
            (Some(body), _) => body,
            (None, Some(header)) => header.clone(),
            (None, None) => infer_oci_type(&raw).ok_or(ManifestError::NoMediaType)?,
        };
        if !media_type.is_manifest() {
            return Err(ManifestError::Unsupported(media_type.to_string()));
        }
        if raw.layers.is_some() && raw.manifests.is_some() {
            return Err(ManifestError::Ambiguous);
        }
        let kind = if media_type.is_index() {
            ManifestKind::Index {
                manifests: raw.manifests.ok_or(ManifestError::Missing("manifests"))?,
            }
        } else {
            ManifestKind::Image {
                config: raw.config.ok_or(ManifestError::Missing("config"))?,
                layers: raw.layers.ok_or(ManifestError::Missing("layers"))?,
            }
        };
        Ok(Manifest {
            media_type,
            artifact_type: raw.artifact_type,
            kind,
            subject: raw.subject,
            annotations: raw.annotations.unwrap_or_default(),
        })
    }

    /// Every descriptor this manifest references directly.
    pub fn references(&self) -> impl Iterator<Item = &Descriptor> {
        let (one, many) = match &self.kind {
            ManifestKind::Image { config, layers } => (Some(config), layers.as_slice()),
            ManifestKind::Index { manifests } => (None, manifests.as_slice()),
        };
        one.into_iter().chain(many)
    }
}

/// An OCI manifest may omit `mediaType`; infer it from its shape.
fn infer_oci_type(raw: &RawManifest) -> Option<MediaType> {
    match (&raw.manifests, &raw.config) {
        (Some(_), None) => MediaType::parse(OCI_INDEX).ok(),
        (None, Some(_)) => MediaType::parse(OCI_MANIFEST).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(media_type: &str) -> String {
        let d = Digest::sha256_of(b"x");
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media_type}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":1}}]}}"#
        )
    }

    #[test]
    fn media_type_strips_parameters_and_rejects_header_injection() {
        let m =
            MediaType::parse("application/vnd.oci.image.manifest.v1+json; charset=utf-8").unwrap();
        assert_eq!(m.as_str(), OCI_MANIFEST);
        assert!(MediaType::parse("text/plain\r\nX-Evil: 1").is_err());
        assert!(MediaType::parse("nonsense").is_err());
    }

    #[test]
    fn parses_image_and_lists_references() {
        let m = Manifest::parse(image(OCI_MANIFEST).as_bytes(), None).unwrap();
        assert_eq!(m.media_type.as_str(), OCI_MANIFEST);
        assert_eq!(m.references().count(), 2);
    }

    #[test]
    fn body_and_header_media_types_must_agree() {
        let header = MediaType::parse(DOCKER_MANIFEST).unwrap();
        let err = Manifest::parse(image(OCI_MANIFEST).as_bytes(), Some(&header)).unwrap_err();
        assert!(matches!(err, ManifestError::MediaTypeMismatch { .. }));
    }

    #[test]
    fn ambiguous_manifest_with_layers_and_manifests_is_refused() {
        let d = Digest::sha256_of(b"x");
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"a/b","digest":"{d}","size":1}},"layers":[],"manifests":[]}}"#
        );
        assert_eq!(
            Manifest::parse(body.as_bytes(), None).unwrap_err(),
            ManifestError::Ambiguous
        );
    }

    #[test]
    fn schema1_and_garbage_are_refused() {
        assert!(matches!(
            Manifest::parse(br#"{"schemaVersion":1}"#, None),
            Err(ManifestError::SchemaVersion(1))
        ));
        assert!(matches!(
            Manifest::parse(b"\x00\xff", None),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(
            Manifest::parse(br#"{"schemaVersion":2,"layers":null}"#, None),
            Err(ManifestError::NoMediaType)
        ));
    }

    #[test]
    fn oci_index_without_media_type_is_inferred() {
        let m = Manifest::parse(br#"{"schemaVersion":2,"manifests":[]}"#, None).unwrap();
        assert!(m.media_type.is_index());
    }
}

/// A manifest's exact bytes, known to hash to `digest`: the only way to build
/// one checks that, so a `ManifestContent` can be served as-is.
#[derive(Debug, Clone)]
pub struct ManifestContent {
    digest: Digest,
    media_type: MediaType,
    bytes: bytes::Bytes,
}

impl ManifestContent {
    /// Wraps `bytes` if they hash to `digest` under its algorithm.
    pub fn new(digest: Digest, media_type: MediaType, bytes: bytes::Bytes) -> Result<Self, Digest> {
        let actual = Digest::of(digest.algorithm(), &bytes);
        if actual != digest {
            return Err(actual);
        }
        Ok(ManifestContent {
            digest,
            media_type,
            bytes,
        })
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn media_type(&self) -> &MediaType {
        &self.media_type
    }

    pub fn bytes(&self) -> &bytes::Bytes {
        &self.bytes
    }
}
