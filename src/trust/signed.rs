//! Replay protection for trust documents: the `version` and `expires`
//! header a governance team signs with the material, and the highest
//! version accepted from each URL (its high-water mark), kept under the
//! cache directory so that it survives reloads and restarts.
//!
//! A signature over the document bytes alone proves who wrote a document,
//! not that it is the current one: a compromised file server could serve an
//! older signed document and bring a rotated-out key back, or keep answering
//! `304` for ever. The header puts the version and an expiry inside the
//! signed bytes (see `docs/decisions/0008-signed-trust-document-versions.md`):
//!
//! ```text
//! portcullis-trust-document v1
//! version: 42
//! expires: 2027-01-31T00:00:00Z
//!
//! -----BEGIN PUBLIC KEY-----
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

/// The first line of a versioned trust document.
pub const MAGIC: &str = "portcullis-trust-document v1";

/// Where the high-water marks are kept, under the cache directory.
pub const MARKS_FILE: &str = "trust/versions.json";

/// Why a fetched document was refused although the source answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the governance signature does not verify: document refused")]
    BadSignature,
    #[error("{0}")]
    Header(String),
    #[error(
        "the signed document has no `{MAGIC}` header with version and expires: unversioned signed documents are refused (re-sign it with the header)"
    )]
    Unversioned,
    #[error("the signed document expired at {expires}")]
    Expired { expires: String },
    #[error(
        "document version {version} is older than version {accepted}, already accepted: a replayed document is refused"
    )]
    OlderVersion { version: u64, accepted: u64 },
    #[error(
        "document version {version} was already accepted with other content: a changed document needs a higher version"
    )]
    VersionReused { version: u64 },
    #[error("the document holds trust material verification never accepts ({0}): document refused")]
    Unusable(String),
}

impl Refusal {
    /// The reason as the audit log names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::BadSignature => "bad_signature",
            Refusal::Header(_) => "bad_header",
            Refusal::Unversioned => "unversioned",
            Refusal::Expired { .. } => "expired",
            Refusal::OlderVersion { .. } => "older_version",
            Refusal::VersionReused { .. } => "version_reused",
            Refusal::Unusable(_) => "unusable_material",
        }
    }
}

/// What the signed header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u64,
    pub expires: SystemTime,
}

impl Header {
    /// The header of `body`, if it starts with [`MAGIC`]. A document that
    /// starts with it must carry exactly one `version` and one `expires`
    /// line before its first PEM block, and nothing else but blank lines.
    pub fn of(body: &[u8]) -> Result<Option<Header>, Refusal> {
        let Some(rest) = body.strip_prefix(MAGIC.as_bytes()) else {
            return Ok(None);
        };
        let end = find(rest, b"-----BEGIN ").unwrap_or(rest.len());
        let text = std::str::from_utf8(&rest[..end])
            .map_err(|_| Refusal::Header("the document header is not UTF-8".into()))?;
        // The magic line must end where it ends.
        if !text.starts_with('\n') && !text.starts_with("\r\n") {
            return Err(Refusal::Header(format!(
                "the document's first line must be exactly `{MAGIC}`"
            )));
        }
        let (mut version, mut expires) = (None, None);
        for (n, line) in text.lines().enumerate().skip(1) {
            let line = line.trim();
            let bad = || {
                Refusal::Header(format!(
                    "document header line {}: not `version: N` or `expires: RFC 3339 time`, or repeated",
                    n + 1
                ))
            };
            if line.is_empty() {
                continue;
            } else if let Some(v) = line.strip_prefix("version:") {
                let v = v.trim().parse::<u64>().map_err(|_| bad())?;
                if version.replace(v).is_some() {
                    return Err(bad());
                }
            } else if let Some(t) = line.strip_prefix("expires:") {
                let t = humantime::parse_rfc3339(t.trim()).map_err(|_| bad())?;
                if expires.replace(t).is_some() {
                    return Err(bad());
                }
            } else {
                return Err(bad());
            }
        }
        match (version, expires) {
            (Some(version), Some(expires)) => Ok(Some(Header { version, expires })),
            _ => Err(Refusal::Header(
                "the document header needs both `version:` and `expires:`".into(),
            )),
        }
    }
}

/// The PEM part of a document: what follows its header, if it has one.
pub fn pem_part(body: &[u8]) -> &[u8] {
    if body.starts_with(MAGIC.as_bytes()) {
        find(body, b"-----BEGIN ").map_or(&[], |i| &body[i..])
    } else {
        body
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The highest version accepted from one URL, and the SHA-256 (hex) of
/// that document, so the same version cannot come back with other content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Mark {
    version: u64,
    sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum MarksError {
    #[error(
        "cannot read the trust version high-water marks {path}: {reason} (remove the file only if you accept that older signed documents may be accepted once)"
    )]
    Read { path: String, reason: String },
}

/// High-water marks by source URL.
#[derive(Default)]
pub struct Marks {
    /// Where they are persisted; `None` keeps them in memory only.
    path: Option<PathBuf>,
    marks: Mutex<BTreeMap<String, Mark>>,
    /// One write of the file at a time.
    writing: tokio::sync::Mutex<()>,
}

impl Marks {
    /// The marks persisted at `path` (none yet if the file does not exist).
    pub async fn open(path: Option<PathBuf>) -> Result<Marks, MarksError> {
        let mut marks = BTreeMap::new();
        if let Some(p) = &path {
            match tokio::fs::read(p).await {
                Ok(bytes) => {
                    marks = serde_json::from_slice(&bytes).map_err(|e| MarksError::Read {
                        path: p.display().to_string(),
                        reason: e.to_string(),
                    })?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(MarksError::Read {
                        path: p.display().to_string(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(Marks {
            path,
            marks: Mutex::new(marks),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether a document with `header` and `body` from `url` may be accepted.
    pub fn check(&self, url: &str, header: &Header, body: &[u8]) -> Result<(), Refusal> {
        let marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
        match marks.get(url) {
            Some(m) if header.version < m.version => Err(Refusal::OlderVersion {
                version: header.version,
                accepted: m.version,
            }),
            Some(m) if header.version == m.version && m.sha256 != sha256(body) => {
                Err(Refusal::VersionReused {
                    version: header.version,
                })
            }
            _ => Ok(()),
        }
    }

    /// Records that `body` (with `header`) from `url` was accepted, and
    /// persists the marks if the version rose. A failed write is logged: the
    /// mark still holds in memory, for reloads, but not across a restart.
    pub async fn accept(&self, url: &str, header: &Header, body: &[u8]) {
        let _one = self.writing.lock().await;
        let snapshot = {
            let mut marks = self.marks.lock().unwrap_or_else(|e| e.into_inner());
            if marks.get(url).is_some_and(|m| m.version >= header.version) {
                return;
            }
            marks.insert(
                url.to_string(),
                Mark {
                    version: header.version,
                    sha256: sha256(body),
                },
            );
            marks.clone()
        };
        let Some(path) = &self.path else {
            return;
        };
        if let Err(e) = write_atomically(path, &snapshot).await {
            tracing::error!(path = %path.display(), error = %e, "cannot persist the trust version high-water marks; they hold until a restart only");
        }
    }
}

async fn write_atomically(
    path: &std::path::Path,
    marks: &BTreeMap<String, Mark>,
) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(marks).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = tokio::fs::File::create(&tmp).await?;
    tokio::io::AsyncWriteExt::write_all(&mut file, &json).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&tmp, path).await
}

fn sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn version_marks_that_cannot_be_read_are_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            Marks::open(Some(dir.path().join("absent.json")))
                .await
                .is_ok()
        );
        // A directory where the file should be: reading fails, and starting
        // over would forget every version seen (a rollback door).
        let unreadable = dir.path().join("versions.json");
        std::fs::create_dir(&unreadable).unwrap();
        assert!(Marks::open(Some(unreadable)).await.is_err());
    }

    const KEY: &str = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";

    #[test]
    fn a_header_gives_version_and_expiry_and_the_pem_part_follows_it() {
        let doc = format!("{MAGIC}\nversion: 7\nexpires: 2027-01-31T00:00:00Z\n\n{KEY}");
        let h = Header::of(doc.as_bytes()).unwrap().unwrap();
        assert_eq!(h.version, 7);
        assert_eq!(
            h.expires,
            humantime::parse_rfc3339("2027-01-31T00:00:00Z").unwrap()
        );
        assert_eq!(pem_part(doc.as_bytes()), KEY.as_bytes());
    }

    #[test]
    fn a_document_without_the_magic_line_is_unversioned() {
        assert_eq!(Header::of(KEY.as_bytes()).unwrap(), None);
        assert_eq!(pem_part(KEY.as_bytes()), KEY.as_bytes());
    }

    #[test]
    fn a_header_missing_a_field_repeating_one_or_carrying_other_text_is_refused() {
        for header in [
            "version: 7\n",
            "expires: 2027-01-31T00:00:00Z\n",
            "version: 7\nversion: 8\nexpires: 2027-01-31T00:00:00Z\n",
            "version: 7\nexpires: 2027-01-31T00:00:00Z\nnote: hi\n",
            "version: -1\nexpires: 2027-01-31T00:00:00Z\n",
            "version: 7\nexpires: next week\n",
        ] {
            let doc = format!("{MAGIC}\n{header}{KEY}");
            assert!(
                matches!(Header::of(doc.as_bytes()), Err(Refusal::Header(_))),
                "{header}"
            );
        }
        let glued = format!("{MAGIC}x\nversion: 7\nexpires: 2027-01-31T00:00:00Z\n{KEY}");
        assert!(matches!(
            Header::of(glued.as_bytes()),
            Err(Refusal::Header(_))
        ));
    }

    #[tokio::test]
    async fn marks_refuse_an_older_version_and_a_reused_one_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MARKS_FILE);
        let marks = Marks::open(Some(path.clone())).await.unwrap();
        let expires = SystemTime::UNIX_EPOCH;
        let (v1, v2) = (
            Header {
                version: 1,
                expires,
            },
            Header {
                version: 2,
                expires,
            },
        );
        marks.check("u", &v1, b"one").unwrap();
        marks.accept("u", &v1, b"one").await;
        marks.accept("u", &v2, b"two").await;
        assert_eq!(
            marks.check("u", &v1, b"one"),
            Err(Refusal::OlderVersion {
                version: 1,
                accepted: 2
            })
        );
        assert_eq!(
            marks.check("u", &v2, b"other"),
            Err(Refusal::VersionReused { version: 2 })
        );
        marks.check("u", &v2, b"two").unwrap();
        marks.check("another-url", &v1, b"one").unwrap();
        let reopened = Marks::open(Some(path)).await.unwrap();
        assert!(reopened.check("u", &v1, b"one").is_err());
    }
}
