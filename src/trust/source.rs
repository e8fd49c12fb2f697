//! Trust material fetched over HTTPS: a PEM document of public keys or CA
//! certificates at a URL, refreshed with `If-None-Match` /
//! `If-Modified-Since`, bounded in size, optionally signed by a governance
//! key. A failed refresh keeps the last good material; what a refresh
//! brings is validated completely before it replaces anything.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest as _, Sha256};

use super::Material;
use crate::config::{SourceConfig, SourceKind, TufSource};

/// The last good document of a source.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Bytes,
    /// The last time the source answered with this (or an unchanged) document.
    pub fetched_at: SystemTime,
    etag: Option<String>,
    last_modified: Option<String>,
}

/// What a refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// New material, validated and stored.
    Changed,
    /// The source confirmed what we have.
    Unchanged,
    /// Nothing usable; the last good material (if any) stays.
    Failed(String),
}

impl Refresh {
    pub fn label(&self) -> &'static str {
        match self {
            Refresh::Changed | Refresh::Unchanged => "ok",
            Refresh::Failed(_) => "error",
        }
    }
}

/// The last good document of every URL source, by authority name.
#[derive(Default)]
pub struct Sources {
    state: Mutex<HashMap<String, Fetched>>,
}

impl Sources {
    pub fn snapshot(&self) -> HashMap<String, Fetched> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fetches `src` for `authority` once.
    pub async fn refresh(&self, authority: &str, src: &SourceConfig, now: SystemTime) -> Refresh {
        let previous = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(authority)
            .cloned();
        match fetch(src, previous.as_ref()).await {
            Ok(None) => {
                if let Some(mut p) = previous {
                    p.fetched_at = now;
                    self.store(authority, p);
                }
                Refresh::Unchanged
            }
            Ok(Some((body, etag, last_modified))) => {
                let changed = previous.as_ref().is_none_or(|p| p.body != body);
                self.store(
                    authority,
                    Fetched {
                        body,
                        fetched_at: now,
                        etag,
                        last_modified,
                    },
                );
                if changed {
                    Refresh::Changed
                } else {
                    Refresh::Unchanged
                }
            }
            Err(e) => Refresh::Failed(e),
        }
    }

    /// Runs the TUF client workflow for `tuf` (root rotation, timestamp,
    /// snapshot, targets, each checked for signatures, versions and expiry
    /// from the initial root) and takes its `trusted_root.json`. When the
    /// repository cannot be reached and nothing is held yet (a start during an
    /// outage), the offline cache is verified the same way and used, dated by
    /// when it was last verified.
    pub async fn refresh_tuf(&self, tuf: &TufSource, now: SystemTime) -> Refresh {
        let key = tuf.key();
        let previous = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let (body, fetched_at) = match fetch_tuf(tuf, false).await {
            Ok(body) => (body, now),
            Err(online) if previous.is_none() => match fetch_tuf(tuf, true).await {
                Ok(body) => {
                    let verified = std::fs::metadata(tuf.cache_dir.join("timestamp.json"))
                        .and_then(|m| m.modified())
                        .map_or(now, |t| t.min(now));
                    (body, verified)
                }
                Err(offline) => {
                    return Refresh::Failed(format!("{online}; offline cache: {offline}"));
                }
            },
            Err(e) => return Refresh::Failed(e),
        };
        let changed = previous.as_ref().is_none_or(|p| p.body != body);
        self.store(
            &key,
            Fetched {
                body,
                fetched_at,
                etag: None,
                last_modified: None,
            },
        );
        if changed {
            Refresh::Changed
        } else {
            Refresh::Unchanged
        }
    }

    fn store(&self, authority: &str, f: Fetched) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(authority.to_string(), f);
    }
}

type Document = (Bytes, Option<String>, Option<String>);

/// `Ok(None)`: not modified.
async fn fetch(src: &SourceConfig, previous: Option<&Fetched>) -> Result<Option<Document>, String> {
    let client = client(src)?;
    let mut request = client.get(src.url.clone());
    if let Some(p) = previous {
        if let Some(e) = &p.etag {
            request = request.header(http::header::IF_NONE_MATCH, e);
        }
        if let Some(m) = &p.last_modified {
            request = request.header(http::header::IF_MODIFIED_SINCE, m);
        }
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("{}: {e}", src.url))?;
    if response.status() == http::StatusCode::NOT_MODIFIED && previous.is_some() {
        return Ok(None);
    }
    if !response.status().is_success() {
        return Err(format!("{}: HTTP {}", src.url, response.status()));
    }
    let header = |name: http::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (etag, last_modified) = (
        header(http::header::ETAG),
        header(http::header::LAST_MODIFIED),
    );
    let body = bounded_body(response, src.max_bytes).await?;
    parse(src.kind, &body)?;
    if let Some(governance) = &src.signed_by {
        let sig_url = format!("{}.sig", src.url);
        let sig = client
            .get(&sig_url)
            .send()
            .await
            .map_err(|e| format!("{sig_url}: {e}"))?;
        if !sig.status().is_success() {
            return Err(format!("{sig_url}: HTTP {}", sig.status()));
        }
        let sig = bounded_body(sig, 64 << 10).await?;
        verify_governance(governance, &body, &sig)?;
    }
    Ok(Some((body, etag, last_modified)))
}

/// `trusted_root.json` from `tuf`, verified through TUF, as JSON that
/// builds a usable root.
async fn fetch_tuf(tuf: &TufSource, offline: bool) -> Result<Bytes, String> {
    use sigstore_verify::trust_root::{SigstoreInstance, TrustedRoot, TufBootstrap, TufConfig};
    let initial = match &tuf.root {
        Some(p) => std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        None => SigstoreInstance::PublicGood.tuf_root().to_vec(),
    };
    let mut config = TufConfig::custom(tuf.url.as_str(), TufBootstrap::trusted(initial))
        .with_cache_dir(tuf.cache_dir.clone())
        .with_http_client(http_client(tuf.ca_file.as_deref())?);
    if offline {
        config = config.offline();
    }
    let root = TrustedRoot::from_tuf(config)
        .await
        .map_err(|e| format!("{}: {e}", tuf.url))?;
    let json = serde_json::to_string(&root).map_err(|e| e.to_string())?;
    crate::verify::sigstore::SigstoreRoot::from_json(&json)
        .map_err(|e| format!("{}: trusted_root.json: {e}", tuf.url))?;
    Ok(Bytes::from(json))
}

fn client(src: &SourceConfig) -> Result<reqwest::Client, String> {
    http_client(src.ca_file.as_deref())
}

fn http_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{}: {e}", ca.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

async fn bounded_body(mut response: reqwest::Response, max: u64) -> Result<Bytes, String> {
    if response.content_length().is_some_and(|l| l > max) {
        return Err(format!("document larger than {max} bytes"));
    }
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if (out.len() + chunk.len()) as u64 > max {
            return Err(format!("document larger than {max} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// The governance key's signature (base64) over the exact document bytes.
fn verify_governance(key: &std::path::Path, body: &[u8], sig: &[u8]) -> Result<(), String> {
    use base64::Engine;
    let (_, der) = super::load_key(key)?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(String::from_utf8_lossy(sig).trim())
        .map_err(|_| "governance signature is not base64".to_string())?;
    let vk = sigstore_verify::crypto::VerificationKey::from_spki(&der)
        .map_err(|e| format!("governance key: {e}"))?;
    vk.verify(body, &sigstore_verify::types::SignatureBytes::new(sig))
        .map_err(|_| "the governance signature does not verify: document refused".to_string())
}

/// The material a document holds; an empty or unparsable document is an
/// error (a source never silently trusts nothing, or everything).
pub fn parse(kind: SourceKind, body: &[u8]) -> Result<Material, String> {
    match kind {
        SourceKind::Keys => {
            let text = std::str::from_utf8(body).map_err(|_| "document is not UTF-8")?;
            let mut keys = Vec::new();
            for block in text.split_inclusive("-----END PUBLIC KEY-----") {
                if !block.contains("-----BEGIN PUBLIC KEY-----") {
                    continue;
                }
                let key = crate::verify::sigstore::public_key_from_pem(block.trim())?;
                sigstore_verify::crypto::VerificationKey::from_spki(&key)
                    .map_err(|e| format!("unsupported key: {e}"))?;
                keys.push((hex::encode(Sha256::digest(key.as_bytes())), key));
            }
            if keys.is_empty() {
                return Err("document holds no PEM public key".into());
            }
            Ok(Material::Keys(keys))
        }
        SourceKind::CaRoots => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(body)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("not PEM certificates: {e}"))?;
            if certs.is_empty() {
                return Err("document holds no certificate".into());
            }
            for c in &certs {
                webpki::anchor_from_trusted_cert(c)
                    .map_err(|e| format!("not a usable CA certificate: {e:?}"))?;
            }
            Ok(Material::CaRoots(crate::verify::x509::VendorPki::new(
                certs,
                crate::verify::x509::LeafEku::default(),
            )))
        }
    }
}

/// No material (a source not fetched yet): it verifies nothing.
pub fn empty(kind: SourceKind) -> Material {
    match kind {
        SourceKind::Keys => Material::Keys(Vec::new()),
        SourceKind::CaRoots => Material::CaRoots(crate::verify::x509::VendorPki::default()),
    }
}
