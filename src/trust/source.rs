//! Trust material fetched over HTTPS: a PEM document of public keys or CA
//! certificates at a URL, refreshed with `If-None-Match` /
//! `If-Modified-Since`, bounded in size, optionally signed by a governance
//! key, versioned and expiring (see [`super::signed`]). A failed refresh
//! keeps the last good material; what a refresh brings is validated
//! completely before it replaces anything. A verified refresh that brings
//! nothing new renews the held material's freshness in place (see
//! [`Verified`]), without a new snapshot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest as _, Sha256};

use super::Material;
use super::signed::{Header, Marks, Refusal};
use crate::config::{SourceConfig, SourceKind, TufSource};

/// When a source last confirmed, verified, the document held. One cell is
/// shared by the held document and every authority loaded from it, so an
/// unchanged refresh renews what decisions read without installing a new
/// snapshot (which would retire every cached verdict).
#[derive(Debug, Clone)]
pub struct Verified(Arc<Mutex<SystemTime>>);

impl Verified {
    fn new(at: SystemTime) -> Verified {
        Verified(Arc::new(Mutex::new(at)))
    }

    pub fn at(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn renew(&self, at: SystemTime) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t = (*t).max(at);
    }
}

/// The last good document of a source.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Bytes,
    /// When the source last answered with this document (or confirmed it).
    pub verified: Verified,
    /// The signed version and expiry, for a versioned document.
    pub header: Option<Header>,
    etag: Option<String>,
    last_modified: Option<String>,
    /// The source config a URL source's document was accepted under (see
    /// [`acceptance`]); it is not relied on, nor revalidated, under another.
    pub accepted_under: Option<String>,
}

/// What a URL source's document is accepted under: its URL, its kind and
/// the governance key that must sign it (by digest). A reload that changes
/// any of them makes the held document count for nothing until it is
/// fetched and checked again under the new terms.
pub fn acceptance(src: &SourceConfig) -> String {
    use sha2::{Digest as _, Sha256};
    let kind = match src.kind {
        crate::config::SourceKind::Keys => "keys",
        crate::config::SourceKind::CaRoots => "ca_roots",
    };
    let signer = match &src.signed_by {
        None => "unsigned".to_string(),
        Some(p) => match std::fs::read(p) {
            Ok(bytes) => hex::encode(Sha256::digest(&bytes)),
            Err(_) => format!("unreadable {}", p.display()),
        },
    };
    format!("{} {kind} {signer}", src.url)
}

impl Fetched {
    /// Whether this document was accepted under `src` as it is now.
    pub fn accepted_under(&self, src: &SourceConfig) -> bool {
        self.accepted_under.as_deref() == Some(acceptance(src).as_str())
    }

    /// A document last verified at `at`, for tests elsewhere in the crate.
    #[cfg(test)]
    pub fn for_tests(at: SystemTime) -> Fetched {
        Fetched {
            body: Bytes::new(),
            verified: Verified::new(at),
            header: None,
            etag: None,
            last_modified: None,
            accepted_under: None,
        }
    }

    /// How long this document can be relied on with `max_stale`: until
    /// `max_stale` after it was last verified, and never past its signed
    /// expiry.
    pub fn fresh_until(&self, max_stale: Duration) -> SystemTime {
        let until = self.verified.at() + max_stale;
        self.header.map_or(until, |h| until.min(h.expires))
    }
}

/// How fresh one source of an authority's material is, read at each
/// decision from the cell its refreshes renew.
#[derive(Debug, Clone)]
pub struct Freshness {
    /// The source, for messages: "its source https://…".
    what: String,
    verified: Verified,
    max_stale: Duration,
}

impl Freshness {
    pub fn new(what: String, fetched: &Fetched, max_stale: Duration) -> Freshness {
        Freshness {
            what,
            verified: fetched.verified.clone(),
            max_stale,
        }
    }

    /// When the source was last verified, once that is longer ago than
    /// `max_stale`.
    pub fn check(&self, now: SystemTime) -> Result<(), Stale> {
        let verified = self.verified.at();
        if now > verified + self.max_stale {
            return Err(Stale {
                what: self.what.clone(),
                verified,
                max_stale: self.max_stale,
            });
        }
        Ok(())
    }

    pub fn deadline(&self) -> SystemTime {
        self.verified.at() + self.max_stale
    }

    pub fn last_verified(&self) -> SystemTime {
        self.verified.at()
    }
}

/// A source last verified longer ago than its `max_stale`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} was last verified at {}, longer ago than max_stale ({})",
    humantime::format_rfc3339_seconds(*verified),
    humantime::format_duration(*max_stale)
)]
pub struct Stale {
    /// The source: "its source https://…".
    what: String,
    verified: SystemTime,
    max_stale: Duration,
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
    /// The source answered with a document that must not be trusted (a bad
    /// governance signature, an older version, past its signed expiry); the
    /// last good material (if any) stays, and the refusal is audited.
    Refused(Refusal),
}

impl Refresh {
    pub fn label(&self) -> &'static str {
        match self {
            Refresh::Changed | Refresh::Unchanged => "ok",
            Refresh::Failed(_) | Refresh::Refused(_) => "error",
        }
    }

    /// Why it failed, if it did.
    pub fn error(&self) -> Option<String> {
        match self {
            Refresh::Changed | Refresh::Unchanged => None,
            Refresh::Failed(e) => Some(e.clone()),
            Refresh::Refused(r) => Some(r.to_string()),
        }
    }
}

/// Why the last refresh of a source failed, and when.
#[derive(Debug, Clone)]
pub struct LastError {
    pub at: SystemTime,
    pub error: String,
}

/// The last good document of every URL source (by authority name) and TUF
/// repository (by its key), with the version high-water marks.
#[derive(Default)]
pub struct Sources {
    state: Mutex<HashMap<String, Fetched>>,
    /// The last failure of each source since its last success.
    errors: Mutex<HashMap<String, LastError>>,
    marks: Marks,
}

impl Sources {
    /// Sources with the high-water marks persisted in `marks`.
    pub fn new(marks: Marks) -> Sources {
        Sources {
            marks,
            ..Sources::default()
        }
    }

    pub fn snapshot(&self) -> HashMap<String, Fetched> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The failure of `key`'s last refresh, unless one succeeded since.
    pub fn last_error(&self, key: &str) -> Option<LastError> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Records how `key`'s refresh ended; true if it failed otherwise than
    /// the time before (so a repeated refusal is audited once).
    pub fn note(&self, key: &str, outcome: &Refresh, now: SystemTime) -> bool {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        match outcome.error() {
            None => {
                errors.remove(key);
                false
            }
            Some(error) => {
                let new = errors.get(key).is_none_or(|e| e.error != error);
                errors.insert(key.to_string(), LastError { at: now, error });
                new
            }
        }
    }

    /// Fetches `src` for `authority` once. A versioned document must be
    /// newer than (or the same as) the last one accepted from its URL and
    /// not past its signed expiry; a signed one must be versioned.
    pub async fn refresh(&self, authority: &str, src: &SourceConfig, now: SystemTime) -> Refresh {
        let previous = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(authority)
            .cloned()
            .filter(|p| p.accepted_under(src));
        let (body, etag, last_modified) = match fetch(src, previous.as_ref()).await {
            Ok(Some(document)) => document,
            Ok(None) => {
                let Some(p) = previous else {
                    return Refresh::Failed("not modified, but nothing is held".into());
                };
                p.verified.renew(now);
                return match p.header {
                    Some(h) if h.expires <= now => Refresh::Refused(expired(&h)),
                    _ => Refresh::Unchanged,
                };
            }
            Err(FetchError::Refused(r)) => return Refresh::Refused(r),
            Err(FetchError::Failed(e)) => return Refresh::Failed(e),
        };
        let header = match Header::of(&body) {
            Ok(h) => h,
            Err(r) => return Refresh::Refused(r),
        };
        match &header {
            None if src.signed_by.is_some() => return Refresh::Refused(Refusal::Unversioned),
            None => {}
            Some(h) => {
                if h.expires <= now {
                    return Refresh::Refused(expired(h));
                }
                if let Err(r) = self.marks.check(src.url.as_str(), h, &body) {
                    return Refresh::Refused(r);
                }
                self.marks.accept(src.url.as_str(), h, &body).await;
            }
        }
        let unchanged = previous.filter(|p| p.body == body);
        let verified = match &unchanged {
            Some(p) => {
                p.verified.renew(now);
                p.verified.clone()
            }
            None => Verified::new(now),
        };
        self.store(
            authority,
            Fetched {
                body,
                verified,
                header,
                etag,
                last_modified,
                accepted_under: Some(acceptance(src)),
            },
        );
        if unchanged.is_some() {
            Refresh::Unchanged
        } else {
            Refresh::Changed
        }
    }

    /// Runs the TUF client workflow for `tuf` ([`super::tuf::fetch`]: root
    /// rotation, timestamp, snapshot, targets, each checked for signatures,
    /// versions and expiry from the initial root, every root checked for
    /// thresholds that can be met) and takes its `trusted_root.json`. When the
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
        let (body, fetched_at) = match super::tuf::fetch(tuf, false, now).await {
            Ok(body) => (body, now),
            Err(online) if previous.is_none() => match super::tuf::fetch(tuf, true, now).await {
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
        let unchanged = previous.filter(|p| p.body == body);
        let verified = match &unchanged {
            Some(p) => {
                p.verified.renew(fetched_at);
                p.verified.clone()
            }
            None => Verified::new(fetched_at),
        };
        self.store(
            &key,
            Fetched {
                body,
                verified,
                header: None,
                etag: None,
                last_modified: None,
                accepted_under: None,
            },
        );
        if unchanged.is_some() {
            Refresh::Unchanged
        } else {
            Refresh::Changed
        }
    }

    /// Drops what is held for a URL source whose config no longer matches
    /// the one its document was accepted under, so it is fetched at once.
    /// Returns their keys (their refresh is due now).
    pub fn forget_changed(&self, authorities: &[crate::config::AuthorityConfig]) -> Vec<String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut forgotten = Vec::new();
        for a in authorities {
            if let crate::config::AuthorityKind::Source(src) = &a.kind
                && state.get(&a.name).is_some_and(|f| !f.accepted_under(src))
            {
                tracing::info!(authority = %a.name, "trust source config changed: its document is fetched again");
                state.remove(&a.name);
                forgotten.push(a.name.clone());
            }
        }
        forgotten
    }

    fn store(&self, authority: &str, f: Fetched) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(authority.to_string(), f);
    }
}

fn expired(h: &Header) -> Refusal {
    Refusal::Expired {
        expires: humantime::format_rfc3339_seconds(h.expires).to_string(),
    }
}

type Document = (Bytes, Option<String>, Option<String>);

/// Why a fetch brought nothing usable.
enum FetchError {
    /// The source could not be reached, answered an error, or sent a
    /// document that is not one.
    Failed(String),
    /// The document must not be trusted.
    Refused(Refusal),
}

impl From<String> for FetchError {
    fn from(e: String) -> FetchError {
        FetchError::Failed(e)
    }
}

/// `Ok(None)`: not modified.
async fn fetch(
    src: &SourceConfig,
    previous: Option<&Fetched>,
) -> Result<Option<Document>, FetchError> {
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
        return Err(format!("{}: HTTP {}", src.url, response.status()).into());
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
            return Err(format!("{sig_url}: HTTP {}", sig.status()).into());
        }
        let sig = bounded_body(sig, 64 << 10).await?;
        verify_governance(governance, &body, &sig)?;
    }
    Ok(Some((body, etag, last_modified)))
}

fn client(src: &SourceConfig) -> Result<reqwest::Client, String> {
    http_client(src.ca_file.as_deref())
}

pub(super) fn http_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, String> {
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

/// The governance key's signature (base64) over the exact document bytes,
/// its header included.
fn verify_governance(key: &std::path::Path, body: &[u8], sig: &[u8]) -> Result<(), FetchError> {
    use base64::Engine;
    let (_, der) = super::load_key(key).map_err(|e| e.to_string())?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(String::from_utf8_lossy(sig).trim())
        .map_err(|_| FetchError::Refused(Refusal::BadSignature))?;
    let vk = sigstore_verify::crypto::VerificationKey::from_spki(&der)
        .map_err(|e| format!("governance key: {e}"))?;
    vk.verify(body, &sigstore_verify::types::SignatureBytes::new(sig))
        .map_err(|_| FetchError::Refused(Refusal::BadSignature))
}

/// Why a document holds no material that can be adopted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a document of its kind: empty, not PEM, not UTF-8.
    #[error("{0}")]
    Malformed(String),
    /// A key or certificate verification would never accept (RSA below
    /// 2048 bits, an unsupported curve or algorithm): adopting it would
    /// replace working material with material that verifies nothing.
    #[error("{0}")]
    Unusable(String),
}

/// A key that is not PEM is a malformed document; one that is, but that
/// verification would never accept, is unusable material.
impl From<crate::material::KeyError> for ParseError {
    fn from(e: crate::material::KeyError) -> ParseError {
        match e {
            crate::material::KeyError::NotPem => ParseError::Malformed(e.to_string()),
            _ => ParseError::Unusable(e.to_string()),
        }
    }
}

impl From<String> for ParseError {
    fn from(e: String) -> ParseError {
        ParseError::Malformed(e)
    }
}

impl From<&str> for ParseError {
    fn from(e: &str) -> ParseError {
        ParseError::Malformed(e.into())
    }
}

impl From<ParseError> for FetchError {
    fn from(e: ParseError) -> FetchError {
        match e {
            ParseError::Malformed(e) => FetchError::Failed(e),
            ParseError::Unusable(e) => FetchError::Refused(Refusal::Unusable(e)),
        }
    }
}

/// The material a document holds (after its header, if any); an empty or
/// unparsable document, or one holding a key or certificate verification
/// would never accept, is an error (a source never silently trusts
/// nothing, or everything).
pub fn parse(kind: SourceKind, body: &[u8]) -> Result<Material, ParseError> {
    let body = super::signed::pem_part(body);
    match kind {
        SourceKind::Keys => {
            let text = std::str::from_utf8(body).map_err(|_| "document is not UTF-8")?;
            let mut keys = Vec::new();
            for block in text.split_inclusive("-----END PUBLIC KEY-----") {
                if !block.contains("-----BEGIN PUBLIC KEY-----") {
                    continue;
                }
                let key = crate::material::public_key_from_pem(block.trim())?;
                crate::material::usable_key(&key)?;
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
                .map_err(|_| ParseError::Malformed(super::NOT_PEM_CERTIFICATES.into()))?;
            if certs.is_empty() {
                return Err("document holds no certificate".into());
            }
            for c in &certs {
                super::usable_ca(c).map_err(|e| ParseError::Unusable(e.to_string()))?;
            }
            Ok(Material::CaRoots(crate::material::VendorPki::new(
                certs,
                crate::material::LeafEku::default(),
            )))
        }
    }
}

/// No material (a source not fetched yet): it verifies nothing.
pub fn empty(kind: SourceKind) -> Material {
    match kind {
        SourceKind::Keys => Material::Keys(Vec::new()),
        SourceKind::CaRoots => Material::CaRoots(crate::material::VendorPki::default()),
    }
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
