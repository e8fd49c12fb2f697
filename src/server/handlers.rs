//! The registry API handlers: one function per endpoint, each turning a
//! routed request into a response through the [`Puller`].

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::response::{Body, Missing, denied, empty, full, oci_error, pull_error};
use super::routes::Query;
use crate::audit::{Audit, Decision, DecisionId, Event};
use crate::metrics::{Metrics, Outcome};
use crate::oci::media::OCI_INDEX;
use crate::oci::{Digest, ErrorCode, ManifestContent, Reference};
use crate::pull::{ByteRange, PullError, Puller, TagsQuery, Target};
use crate::verify::{Reason, VerifiedManifest};

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
    audit: &Audit,
    client: &super::Client,
    target: &Target,
    reference: &Reference,
    method: &Method,
) -> Response<Body> {
    let upstream = target.upstream.name.as_str();
    let id = DecisionId::new();
    let base = Decision {
        id: id.as_str(),
        upstream,
        repository: target.repo.as_str(),
        reference: reference.to_string(),
        digest: None,
        decision: "",
        policy: "none",
        reason: "none",
        authorities: Vec::new(),
        exception: None,
        trust_epoch: puller.gate().1,
        client: client.address.map(|a| a.to_string()),
        identity: client.identity.as_deref(),
        message: None,
        served_stale_seconds: None,
    };
    // The first decision through a tag the upstream moved records the move.
    let moved = |new: Option<&Digest>, outcome: Outcome, reason: &str| {
        let decided = Decided {
            id,
            new,
            outcome,
            reason,
        };
        record_move(puller, metrics, audit, target, reference, &decided);
    };
    match puller.manifest_served(target, reference).await {
        Ok((v, stale)) => {
            let base = Decision {
                served_stale_seconds: stale.map(|s| s.as_secs()),
                ..base
            };
            let (outcome, reason) = record_allowed(metrics, audit, &v, base);
            moved(Some(v.content().digest()), outcome, reason);
            let mut r = manifest_response(v.content(), method);
            if let Some(age) = stale {
                // RFC 9111's 110 "Response is Stale": the tag was not
                // revalidated; the content is the verified one it named.
                let warning = format!(
                    "110 - \"portcullis: upstream unavailable; tag last checked {}s ago\"",
                    age.as_secs()
                );
                put(r.headers_mut(), header::WARNING, &warning);
            }
            r
        }
        Err(e) => {
            if let Some(refused) = Refused::of(&e, puller, target) {
                record_refused(metrics, audit, &refused, base);
                moved(refused.digest, Outcome::Deny, refused.reason.as_str());
            }
            match &e {
                PullError::Denied(d) => denied(d, Some(id)),
                _ => pull_error(&e, Missing::Manifest),
            }
        }
    }
}

/// A request by a client identity whose `[[client]]` scope does not cover
/// the repository: refused `not_authorized`, counted and audited with the
/// identity, before anything is fetched or read.
pub fn out_of_scope(
    metrics: &Metrics,
    audit: &Audit,
    client: &super::Client,
    target: &Target,
    route: &super::routes::Route,
    epoch: u64,
) -> Response<Body> {
    use super::routes::Route;
    let reference = match route {
        Route::Manifest { reference, .. } => reference.to_string(),
        Route::Blob { digest, .. } => digest.to_string(),
        Route::Referrers { digest, .. } => format!("referrers/{digest}"),
        Route::Tags { .. } | Route::Base => "tags/list".to_string(),
    };
    let upstream = target.upstream.name.as_str();
    let identity = client.identity.as_deref().unwrap_or("");
    let message = format!(
        "identity {identity} may not pull {upstream}/{}",
        target.repo
    );
    let id = DecisionId::new();
    tracing::info!(upstream, repo = %target.repo, %reference, identity, "not authorized for this repository");
    metrics.decision(
        upstream,
        "none",
        Outcome::Deny,
        Reason::NotAuthorized.as_str(),
    );
    audit.record(&Event::Decision(Decision {
        id: id.as_str(),
        upstream,
        repository: target.repo.as_str(),
        reference,
        digest: None,
        decision: Outcome::Deny.as_str(),
        policy: "none",
        reason: Reason::NotAuthorized.as_str(),
        authorities: Vec::new(),
        exception: None,
        trust_epoch: epoch,
        client: client.address.map(|a| a.to_string()),
        identity: client.identity.as_deref(),
        message: Some(&message),
        served_stale_seconds: None,
    }));
    denied(
        &crate::verify::Denial::new(Reason::NotAuthorized, message.clone()),
        Some(id),
    )
}

/// A manifest refused, as it is recorded.
struct Refused<'e> {
    reason: Reason,
    policy: String,
    digest: Option<&'e Digest>,
    message: String,
}

impl<'e> Refused<'e> {
    /// A denial, or content that is not a manifest (hostile or broken at
    /// the source: refused 502, and recorded as a decision too). Other
    /// failures (upstream down, overload) decide nothing.
    fn of(e: &'e PullError, puller: &Puller, target: &Target) -> Option<Refused<'e>> {
        match e {
            PullError::Denied(d) => Some(Refused {
                reason: d.reason,
                policy: d.policy.as_deref().unwrap_or("none").to_string(),
                digest: d.digest.as_ref(),
                message: d.message.clone(),
            }),
            PullError::ManifestInvalid { error, digest } => {
                let (gate, _) = puller.gate();
                let policy = gate
                    .policies()
                    .find(target.upstream.name.as_str(), target.repo.as_str())
                    .map_or("none", |p| p.name.as_str())
                    .to_string();
                Some(Refused {
                    reason: Reason::for_manifest(error),
                    policy,
                    digest: digest.as_ref(),
                    message: error.to_string(),
                })
            }
            _ => None,
        }
    }
}

/// A decision as a tag move records it.
struct Decided<'a> {
    id: DecisionId,
    new: Option<&'a Digest>,
    outcome: Outcome,
    reason: &'a str,
}

/// When this decision is the first through a verified tag since the
/// upstream moved it, records the move with the decision on what the tag
/// now names.
fn record_move(
    puller: &Puller,
    metrics: &Metrics,
    audit: &Audit,
    target: &Target,
    reference: &Reference,
    decided: &Decided<'_>,
) {
    let Decided {
        id,
        new,
        outcome,
        reason,
    } = decided;
    let (new, outcome) = (*new, *outcome);
    let Reference::Tag(tag) = reference else {
        return;
    };
    let Some(old) = puller.take_tag_move(target, tag, new) else {
        return;
    };
    let upstream = target.upstream.name.as_str();
    tracing::warn!(upstream, repo = %target.repo, %tag, old = %old, new = ?new.map(|d| d.to_string()), decision = outcome.as_str(), "verified tag moved");
    metrics
        .tag_moves
        .with_label_values(&[upstream, outcome.as_str()])
        .inc();
    audit.record(&Event::TagMoved(crate::audit::TagMoved {
        upstream,
        repository: target.repo.as_str(),
        tag: tag.as_str(),
        old_digest: old.to_string(),
        old_decision: Outcome::Allow.as_str(),
        new_digest: new.map(|d| d.to_string()),
        new_decision: outcome.as_str(),
        new_reason: reason,
        id: id.as_str(),
    }));
}

/// Logs, counts and audits a manifest served: allowed, allowed by an
/// exception, or allowed in audit mode where enforce would deny. Returns
/// the outcome and its reason.
fn record_allowed(
    metrics: &Metrics,
    audit: &Audit,
    v: &VerifiedManifest,
    base: Decision<'_>,
) -> (Outcome, &'static str) {
    let (upstream, repo, reference) = (base.upstream, base.repository, &base.reference);
    let (outcome, reason) = match (v.audit_denial(), v.exception()) {
        (Some(r), _) => {
            tracing::warn!(upstream, repo, %reference, policy = v.policy(), reason = %r, "audit mode: would deny");
            (Outcome::AuditDeny, r.as_str())
        }
        (None, Some((name, r))) => {
            tracing::warn!(upstream, repo, %reference, policy = v.policy(), reason = %r, exception = name, "allowed by exception");
            metrics.exception_used(name);
            (Outcome::AllowException, r.as_str())
        }
        (None, None) => (Outcome::Allow, "none"),
    };
    metrics.decision(upstream, v.policy(), outcome, reason);
    let met = v.findings().iter().filter(|f| f.outcome.is_ok());
    audit.record(&Event::Decision(Decision {
        digest: Some(v.content().digest().to_string()),
        decision: outcome.as_str(),
        policy: v.policy(),
        reason,
        authorities: met.map(|f| f.authority.clone()).collect(),
        exception: v.exception().map(|(n, _)| n),
        message: v.audit_message(),
        ..base
    }));
    (outcome, reason)
}

/// Logs, counts and audits a manifest refused.
fn record_refused(metrics: &Metrics, audit: &Audit, refused: &Refused<'_>, base: Decision<'_>) {
    let Refused {
        reason,
        policy,
        digest,
        message,
    } = refused;
    let (upstream, repo, reference) = (base.upstream, base.repository, &base.reference);
    let digest_text = digest.map_or_else(|| "none".to_string(), |d| d.to_string());
    tracing::info!(upstream, repo, %reference, digest = %digest_text, policy, reason = %reason, message = %message, "denied");
    metrics.decision(upstream, policy, Outcome::Deny, reason.as_str());
    let event = Decision {
        digest: digest.map(|d| d.to_string()),
        decision: Outcome::Deny.as_str(),
        policy,
        reason: reason.as_str(),
        message: Some(message),
        ..base
    };
    if *reason == Reason::ExceptionExpired {
        audit.record(&Event::ExceptionExpired(event.clone()));
    }
    audit.record(&Event::Decision(event));
}

/// The manifest's exact bytes (none for HEAD) with its type, digest and length.
fn manifest_response(c: &ManifestContent, method: &Method) -> Response<Body> {
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
    let counter = metrics.blob_bytes_sent(body.from_cache);
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
