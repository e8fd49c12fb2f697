//! Listings: `tags/list` with pagination, and the referrers API with the
//! `sha256-<hex>` tag fallback for upstreams that lack it. Both are mutable
//! views of the upstream and are not cached.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{PullError, Puller, Target};
use crate::oci::media::OCI_INDEX;
use crate::oci::{Descriptor, Digest, Manifest, ManifestKind, Reference, Tag};
use crate::upstream::UpstreamError;

/// The client's `n` and `last` for `tags/list`.
#[derive(Debug, Default, Clone)]
pub struct TagsQuery {
    pub n: Option<usize>,
    pub last: Option<String>,
}

/// One page of tags, and whether the upstream has more.
#[derive(Debug, Serialize, Deserialize)]
pub struct TagsPage {
    pub name: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub tags: Vec<String>,
    #[serde(skip)]
    pub more: bool,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// Pages of the referrers API followed, at most. A list that goes on past
/// them is incomplete, and discovery denies `limit_exceeded` on it.
pub const MAX_REFERRER_PAGES: usize = 8;

/// A referrers index, whether a filter was applied to it, and whether it
/// holds every page the upstream has.
pub struct Referrers {
    pub body: Bytes,
    pub filtered: bool,
    pub complete: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexOut<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<&'a serde_json::Value>,
}

impl Puller {
    pub async fn tags(&self, target: &Target, query: &TagsQuery) -> Result<TagsPage, PullError> {
        // Nothing of a repository no policy could allow is asked upstream.
        self.precheck(target)?;
        let mut q = Vec::new();
        if let Some(n) = query.n {
            q.push(format!("n={n}"));
        }
        if let Some(last) = &query.last {
            q.push(format!(
                "last={}",
                percent_encoding::utf8_percent_encode(last, percent_encoding::NON_ALPHANUMERIC)
            ));
        }
        let q = (!q.is_empty()).then(|| q.join("&"));
        let fetched = target
            .upstream
            .fetch_small(
                &target.repo,
                "tags/list",
                q.as_deref(),
                "application/json",
                "tags",
            )
            .await?;
        let mut page: TagsPage = serde_json::from_slice(&fetched.bytes)
            .map_err(|_| bad(target, "tags list is not valid JSON"))?;
        // Upstreams that ignore `n`/`last` (distribution 2.x) get paginated
        // here, so clients always see the spec's lexical pages.
        page.tags.retain(|t| t.parse::<Tag>().is_ok());
        page.tags.sort();
        if let Some(last) = &query.last {
            page.tags.retain(|t| t > last);
        }
        let truncated = query.n.is_some_and(|n| page.tags.len() > n);
        if let Some(n) = query.n {
            page.tags.truncate(n);
        }
        page.more = truncated
            || fetched
                .headers
                .get_all(http::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("rel=\"next\"") || v.contains("rel=next"));
        Ok(page)
    }

    /// Referrers of `subject`, from the upstream's API or, when it has none,
    /// from the `sha256-<hex>` fallback tag; always an OCI index.
    pub async fn referrers(
        &self,
        target: &Target,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers, PullError> {
        self.precheck(target)?;
        let query = artifact_type.map(|a| {
            format!(
                "artifactType={}",
                percent_encoding::utf8_percent_encode(a, percent_encoding::NON_ALPHANUMERIC)
            )
        });
        let api = target
            .upstream
            .fetch_small(
                &target.repo,
                &format!("referrers/{subject}"),
                query.as_deref(),
                OCI_INDEX,
                "referrers",
            )
            .await;
        match api {
            Ok(f)
                if crate::upstream::content_type(&f.headers)
                    .is_some_and(|c| c.as_str() == OCI_INDEX) =>
            {
                let upstream_filtered = f
                    .headers
                    .get("oci-filters-applied")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.split(',').any(|x| x.trim() == "artifactType"));
                let (manifests, complete) = self.pages(target, subject, query, f).await?;
                let keep = artifact_type.filter(|_| !upstream_filtered);
                let mut referrers = emit_index(manifests, keep)?;
                referrers.filtered = artifact_type.is_some();
                referrers.complete = complete;
                Ok(referrers)
            }
            Ok(_) | Err(UpstreamError::NotFound | UpstreamError::Status(400 | 405 | 406)) => {
                self.referrers_from_tag(target, subject, artifact_type)
                    .await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The descriptors of `first` and of the pages after it (`Link` with
    /// `rel="next"` on the same resource), at most [`MAX_REFERRER_PAGES`]
    /// pages; whether the upstream had no more.
    async fn pages(
        &self,
        target: &Target,
        subject: &Digest,
        query: Option<String>,
        first: crate::upstream::Fetched,
    ) -> Result<(Vec<serde_json::Value>, bool), PullError> {
        let path = format!("referrers/{subject}");
        let mut manifests = descriptors(target, &first.bytes)?;
        let mut next = target
            .upstream
            .next_page(&target.repo, &path, &first.headers)?;
        let mut seen = vec![query];
        while let Some(q) = next.take() {
            if seen.len() >= MAX_REFERRER_PAGES {
                return Ok((manifests, false));
            }
            if seen.contains(&Some(q.clone())) {
                return Err(bad(
                    target,
                    "referrers pages link back to a page already read",
                ));
            }
            let page = target
                .upstream
                .fetch_small(&target.repo, &path, Some(&q), OCI_INDEX, "referrers")
                .await?;
            manifests.extend(descriptors(target, &page.bytes)?);
            next = target
                .upstream
                .next_page(&target.repo, &path, &page.headers)?;
            seen.push(Some(q));
        }
        Ok((manifests, true))
    }

    async fn referrers_from_tag(
        &self,
        target: &Target,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Referrers, PullError> {
        let tag: Tag = subject
            .referrers_tag()
            .parse()
            .map_err(|_| PullError::Internal("referrers tag is not a tag".into()))?;
        // Not shared here: clients may ask for any subject; discovery
        // shares the whole answer (`discovery_referrers`).
        let fetched = target
            .upstream
            .fetch_manifest(&target.repo, &Reference::Tag(tag), OCI_INDEX)
            .await;
        match fetched {
            Ok(f) => match Manifest::parse(&f.bytes, f.content_type.as_ref()) {
                Ok(Manifest {
                    kind: ManifestKind::Index { .. },
                    ..
                }) => filter_index(target, &f.bytes, artifact_type),
                _ => filter_index(target, br#"{"manifests":[]}"#, artifact_type),
            },
            Err(UpstreamError::NotFound) => {
                filter_index(target, br#"{"manifests":[]}"#, artifact_type)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Re-emits an index's descriptors, keeping those of `artifact_type` if given.
fn filter_index(
    target: &Target,
    bytes: &[u8],
    artifact_type: Option<&str>,
) -> Result<Referrers, PullError> {
    emit_index(descriptors(target, bytes)?, artifact_type)
}

/// The well-formed descriptors an index lists.
fn descriptors(target: &Target, bytes: &[u8]) -> Result<Vec<serde_json::Value>, PullError> {
    #[derive(Deserialize)]
    struct In {
        #[serde(default)]
        manifests: Vec<serde_json::Value>,
    }
    let parsed: In = serde_json::from_slice(bytes)
        .map_err(|_| bad(target, "referrers index is not valid JSON"))?;
    Ok(parsed
        .manifests
        .into_iter()
        .filter(|m| serde_json::from_value::<Descriptor>(m.clone()).is_ok())
        .collect())
}

/// An OCI index of `manifests`, keeping those of `artifact_type` if given.
fn emit_index(
    manifests: Vec<serde_json::Value>,
    artifact_type: Option<&str>,
) -> Result<Referrers, PullError> {
    let manifests = manifests
        .iter()
        .filter(|m| {
            artifact_type.is_none_or(|a| m.get("artifactType").and_then(|v| v.as_str()) == Some(a))
        })
        .collect();
    let out = IndexOut {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests,
    };
    let body = serde_json::to_vec(&out).map_err(|e| PullError::Internal(e.to_string()))?;
    Ok(Referrers {
        body: Bytes::from(body),
        filtered: artifact_type.is_some(),
        complete: true,
    })
}

fn bad(target: &Target, what: &str) -> PullError {
    target
        .upstream
        .record_fault(UpstreamError::BadResponse(what.into()))
        .into()
}
