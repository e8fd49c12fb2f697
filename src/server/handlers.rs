//! The registry API handlers: one function per endpoint, each turning a
//! routed request into a response through the [`Puller`].

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::response::{Body, Missing, empty, full, oci_error, pull_error};
use super::routes::Query;
use crate::metrics::Metrics;
use crate::oci::media::OCI_INDEX;
use crate::oci::{Digest, ErrorCode, Reference};
use crate::pull::{ByteRange, Puller, TagsQuery, Target};

const API_VERSION: HeaderValue = HeaderValue::from_static("registry/2.0");

pub fn base() -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(b"{}")));
    r.headers_mut()
        .insert("docker-distribution-api-version", API_VERSION);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub async fn manifest(
    puller: &Arc<Puller>,
    metrics: &Metrics,
    audit: &crate::audit::Audit,
    client: &super::Client,
    target: &Target,
    reference: &Reference,
    method: &Method,
) -> Response<Body> {
    let upstream = target.upstream.name.as_str();
    let epoch = puller.gate().1;
    let event = |decision, policy, reason| crate::audit::Decision {
        upstream,
        repository: target.repo.as_str(),
        reference: reference.to_string(),
        digest: None,
        decision,
        policy,
        reason,
        authorities: Vec::new(),
        exception: None,
        trust_epoch: epoch,
        client: client.address.map(|a| a.to_string()),
        identity: client.identity.as_deref(),
        message: None,
    };
    match puller.manifest(target, reference).await {
        Ok(v) => {
            let (decision, reason) = match (v.audit_denial(), v.exception()) {
                (Some(r), _) => {
                    tracing::warn!(upstream, repo = %target.repo, %reference, policy = v.policy(), reason = %r, "audit mode: would deny");
                    ("audit_deny", r.as_str())
                }
                (None, Some((name, r))) => {
                    tracing::warn!(upstream, repo = %target.repo, %reference, policy = v.policy(), reason = %r, exception = name, "allowed by exception");
                    metrics.exceptions_used.with_label_values(&[name]).inc();
                    ("allow_exception", r.as_str())
                }
                (None, None) => ("allow", "none"),
            };
            metrics
                .pull_decisions
                .with_label_values(&[upstream, v.policy(), decision, reason])
                .inc();
            let met: Vec<String> = v
                .findings()
                .iter()
                .filter(|f| f.outcome.is_ok())
                .map(|f| f.authority.clone())
                .collect();
            audit.record_typed(
                "decision",
                &crate::audit::Decision {
                    digest: Some(v.content().digest().to_string()),
                    authorities: met,
                    exception: v.exception().map(|(n, _)| n),
                    message: v.audit_message(),
                    ..event(decision, v.policy(), reason)
                },
            );
            let c = v.content();
            let mut r = Response::new(if method == Method::HEAD {
                empty()
            } else {
                full(c.bytes().clone())
            });
            let h = r.headers_mut();
            put(h, header::CONTENT_TYPE, c.media_type().as_str());
            put(h, "docker-content-digest", &c.digest().to_string());
            put(h, header::CONTENT_LENGTH, &c.bytes().len().to_string());
            put(h, header::ETAG, &format!("\"{}\"", c.digest()));
            r
        }
        Err(e) => {
            let refused = match &e {
                crate::pull::PullError::Denied(d) => Some((
                    d.reason,
                    d.policy.as_deref().unwrap_or("none").to_string(),
                    d.digest.as_ref(),
                    d.message.clone(),
                )),
                // Content that is not a manifest is hostile or broken at the
                // source: refused (502), and recorded as a decision too.
                crate::pull::PullError::ManifestInvalid { error, digest } => {
                    let (gate, _) = puller.gate();
                    let policy = gate
                        .policies()
                        .find(upstream, target.repo.as_str())
                        .map_or("none", |p| p.name.as_str())
                        .to_string();
                    Some((
                        crate::verify::Reason::for_manifest(error),
                        policy,
                        digest.as_ref(),
                        error.to_string(),
                    ))
                }
                _ => None,
            };
            if let Some((reason, policy, digest, message)) = refused {
                tracing::info!(upstream, repo = %target.repo, %reference, digest = ?digest.map(|d| d.to_string()), policy, reason = %reason, message = %message, "denied");
                metrics
                    .pull_decisions
                    .with_label_values(&[upstream, &policy, "deny", reason.as_str()])
                    .inc();
                metrics
                    .denied_pulls
                    .with_label_values(&[upstream, &policy, reason.as_str()])
                    .inc();
                let ev = crate::audit::Decision {
                    digest: digest.map(|d| d.to_string()),
                    message: Some(&message),
                    ..event("deny", &policy, reason.as_str())
                };
                if reason == crate::verify::Reason::ExceptionExpired {
                    audit.record_typed("exception_expired", &ev);
                }
                audit.record_typed("decision", &ev);
            }
            pull_error(&e, Missing::Manifest)
        }
    }
}

pub async fn blob(
    puller: &Arc<Puller>,
    metrics: &Metrics,
    target: &Target,
    digest: &Digest,
    method: &Method,
    headers: &HeaderMap,
) -> Response<Body> {
    if method == Method::HEAD {
        return match puller.head_blob(target, digest).await {
            Ok(head) => {
                let mut r = Response::new(empty());
                blob_headers(r.headers_mut(), digest);
                if let Some(size) = head.size {
                    put(r.headers_mut(), header::CONTENT_LENGTH, &size.to_string());
                }
                r
            }
            Err(e) => pull_error(&e, Missing::Blob),
        };
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(ByteRange::parse);
    let body = match puller.blob(target, digest, range).await {
        Ok(b) => b,
        Err(e) => return pull_error(&e, Missing::Blob),
    };
    let source = if body.from_cache { "cache" } else { "upstream" };
    let counter = metrics.blob_bytes.with_label_values(&[source]);
    let stream = body.reader.into_stream().map_ok(move |chunk| {
        counter.inc_by(chunk.len() as u64);
        Frame::data(chunk)
    });
    let boxed =
        StreamBody::new(stream.map_err(|e| -> super::response::BoxError { Box::new(e) })).boxed();
    let mut r = Response::new(boxed);
    blob_headers(r.headers_mut(), digest);
    match (body.range, body.size) {
        (Some((start, end)), Some(size)) => {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            put(
                r.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes {start}-{}/{size}", end - 1),
            );
            put(
                r.headers_mut(),
                header::CONTENT_LENGTH,
                &(end - start).to_string(),
            );
        }
        (_, Some(size)) => put(r.headers_mut(), header::CONTENT_LENGTH, &size.to_string()),
        _ => {}
    }
    r
}

fn blob_headers(h: &mut HeaderMap, digest: &Digest) {
    put(h, header::CONTENT_TYPE, "application/octet-stream");
    put(h, "docker-content-digest", &digest.to_string());
    put(h, header::ACCEPT_RANGES, "bytes");
    put(h, header::ETAG, &format!("\"{digest}\""));
}

/// `tags/list`: the upstream's page with a `Link` pointing back at this proxy.
pub async fn tags(
    puller: &Arc<Puller>,
    target: &Target,
    client_name: &str,
    query: &Query,
) -> Response<Body> {
    let n = match query.n.as_deref().map(str::parse::<usize>) {
        None => None,
        Some(Ok(n)) => Some(n.min(10_000)),
        Some(Err(_)) => {
            return oci_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::Unsupported,
                "n must be a number",
                None,
            );
        }
    };
    if n == Some(0) {
        return json(&serde_json::json!({"name": client_name, "tags": []}));
    }
    let page = match puller
        .tags(
            target,
            &TagsQuery {
                n,
                last: query.last.clone(),
            },
        )
        .await
    {
        Ok(p) => p,
        Err(e) => return pull_error(&e, Missing::Name),
    };
    let mut r = json(&serde_json::json!({"name": client_name, "tags": page.tags}));
    if let (true, Some(last)) = (page.more, page.tags.last()) {
        let mut link = format!("</v2/{client_name}/tags/list?");
        if let Some(n) = n {
            link.push_str(&format!("n={n}&"));
        }
        link.push_str(&format!("last={last}"));
        if let Some(ns) = &query.ns {
            link.push_str(&format!("&ns={ns}"));
        }
        link.push_str(">; rel=\"next\"");
        put(r.headers_mut(), header::LINK, &link);
    }
    r
}

pub async fn referrers(
    puller: &Arc<Puller>,
    target: &Target,
    digest: &Digest,
    query: &Query,
) -> Response<Body> {
    match puller
        .referrers(target, digest, query.artifact_type.as_deref())
        .await
    {
        Ok(refs) => {
            let mut r = Response::new(full(refs.body));
            put(r.headers_mut(), header::CONTENT_TYPE, OCI_INDEX);
            if refs.filtered {
                put(r.headers_mut(), "oci-filters-applied", "artifactType");
            }
            r
        }
        Err(e) => pull_error(&e, Missing::Manifest),
    }
}

fn json(v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    put(r.headers_mut(), header::CONTENT_TYPE, "application/json");
    r
}

fn put(h: &mut HeaderMap, name: impl header::IntoHeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}
