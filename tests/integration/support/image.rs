//! Test images: random layers, a config, a manifest (OCI or Docker media
//! types) or an index, pushed to a registry through the OCI push API.

use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Deterministic pseudo-random bytes (so tests are reproducible).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A blob and its descriptor fields.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub digest: String,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.into(),
            digest: sha256(&bytes),
            bytes,
        }
    }

    pub fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

/// A single-platform image.
#[derive(Clone, Debug)]
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub media_type: String,
    pub manifest: Vec<u8>,
    pub digest: String,
}

impl Image {
    /// An OCI image with layers of the given sizes.
    pub fn oci(seed: u64, layer_sizes: &[usize]) -> Image {
        Image::build(
            seed,
            layer_sizes,
            OCI_MANIFEST,
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
    }

    /// A Docker schema 2 image.
    pub fn docker(seed: u64, layer_sizes: &[usize]) -> Image {
        Image::build(
            seed,
            layer_sizes,
            DOCKER_MANIFEST,
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
    }

    fn build(
        seed: u64,
        layer_sizes: &[usize],
        media_type: &str,
        config_type: &str,
        layer_type: &str,
    ) -> Image {
        let layers: Vec<Blob> = layer_sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Blob::new(layer_type, random_bytes(seed * 1000 + i as u64, n)))
            .collect();
        let config_json = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": [format!("SEED={seed}")]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()},
        });
        let config = Blob::new(config_type, serde_json::to_vec(&config_json).unwrap());
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        }))
        .unwrap();
        Image {
            digest: sha256(&manifest),
            config,
            layers,
            media_type: media_type.into(),
            manifest,
        }
    }

    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }
}

/// A multi-platform index over images.
pub struct Index {
    pub media_type: String,
    pub manifest: Vec<u8>,
    pub digest: String,
    pub images: Vec<Image>,
}

impl Index {
    pub fn new(media_type: &str, images: Vec<Image>) -> Index {
        let archs = ["amd64", "arm64", "riscv64", "s390x"];
        let manifests: Vec<serde_json::Value> = images
            .iter()
            .zip(archs)
            .map(|(img, arch)| {
                serde_json::json!({"mediaType": img.media_type, "digest": img.digest, "size": img.manifest.len(),
                    "platform": {"architecture": arch, "os": "linux"}})
            })
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests})).unwrap();
        Index {
            media_type: media_type.into(),
            digest: sha256(&manifest),
            manifest,
            images,
        }
    }
}

/// Pushes through the OCI distribution API, optionally with basic auth or a bearer token.
pub struct Pusher {
    pub base: String,
    pub client: reqwest::Client,
    pub basic: Option<(String, String)>,
    pub bearer: Option<String>,
}

impl Pusher {
    pub fn new(base: &str) -> Pusher {
        Pusher {
            base: base.into(),
            client: reqwest::Client::new(),
            basic: None,
            bearer: None,
        }
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match (&self.basic, &self.bearer) {
            (Some((u, p)), _) => r.basic_auth(u, Some(p)),
            (_, Some(t)) => r.bearer_auth(t),
            _ => r,
        }
    }

    pub async fn blob(&self, repo: &str, blob: &Blob) {
        let r = self
            .auth(
                self.client
                    .post(format!("{}/v2/{repo}/blobs/uploads/", self.base)),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            202,
            "start upload: {}",
            r.text().await.unwrap_or_default()
        );
        let location = r.headers()["location"].to_str().unwrap().to_string();
        let url = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let r = self
            .auth(self.client.put(format!("{url}{sep}digest={}", blob.digest)))
            .header("content-type", "application/octet-stream")
            .body(blob.bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            201,
            "finish upload: {}",
            r.text().await.unwrap_or_default()
        );
    }

    pub async fn manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let r = self
            .auth(
                self.client
                    .put(format!("{}/v2/{repo}/manifests/{reference}", self.base)),
            )
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            201,
            "push manifest: {}",
            r.text().await.unwrap_or_default()
        );
    }

    pub async fn image(&self, repo: &str, tag: &str, image: &Image) {
        for b in image.blobs() {
            self.blob(repo, b).await;
        }
        self.manifest(repo, tag, &image.media_type, &image.manifest)
            .await;
    }

    pub async fn index(&self, repo: &str, tag: &str, index: &Index) {
        for img in &index.images {
            for b in img.blobs() {
                self.blob(repo, b).await;
            }
            self.manifest(repo, &img.digest, &img.media_type, &img.manifest)
                .await;
        }
        self.manifest(repo, tag, &index.media_type, &index.manifest)
            .await;
    }
}
