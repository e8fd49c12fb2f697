//! The admin listener: `/healthz`, `/readyz`, `/readyz/trust` (what peers
//! ask, see [`crate::readiness`]) and `/metrics`, and the token-protected
//! governance endpoints: `GET /admin/trust`, `GET /admin/policies`
//! (policies and exceptions), `GET /admin/denials` (what is being denied
//! now), `POST /admin/reload`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::response::{Body, full};
use crate::app::App;

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    if req.uri().path().starts_with("/admin/") {
        return governance(&app, &req).await;
    }
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        "/readyz" => {
            let readiness = app.readiness().await;
            let status = if readiness.is_ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, "text/plain", readiness.body().into_bytes())
        }
        "/readyz/trust" => return trust_readiness(&app),
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            app.metrics_text(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
    };
    text(status, content_type, body)
}

fn text(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// `/readyz/trust`, which peers ask: 200 `fresh` when every authority can
/// be relied on, else 503 with why (or `shutting down`: a replica leaving
/// is nobody's fresh peer). It carries this process's instance id, so a
/// replica that asks itself knows it.
fn trust_readiness(app: &App) -> Response<Body> {
    let (status, body) = if !app.ready.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_string(),
        )
    } else {
        match app.trust_health().degraded() {
            None => (StatusCode::OK, format!("{}\n", crate::readiness::FRESH)),
            Some(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("degraded: {reason}\n"),
            ),
        }
    };
    let mut r = text(status, "text/plain", body.into_bytes());
    if let Ok(id) = HeaderValue::from_str(app.peers.instance()) {
        r.headers_mut()
            .insert(crate::readiness::INSTANCE_HEADER, id);
    }
    r
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Whether the request carries the admin token (read from its file on each
/// request, so rotating the file rotates the token). Without a token file
/// the endpoints are off.
fn authorized(app: &App, req: &Request<Incoming>) -> Result<(), Box<Response<Body>>> {
    let config = app.config();
    let Some(file) = config.admin.as_ref().and_then(|a| a.token_file.as_ref()) else {
        return Err(Box::new(json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({"error": "admin endpoints are disabled: set admin.token_file"}),
        )));
    };
    let expected = std::fs::read_to_string(file).unwrap_or_default();
    let expected = expected.trim();
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let same = !expected.is_empty()
        && given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        let mut r = json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"error": "a valid admin bearer token is required"}),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"portcullis-admin\""),
        );
        Err(Box::new(r))
    }
}

async fn governance(app: &Arc<App>, req: &Request<Incoming>) -> Response<Body> {
    if let Err(r) = authorized(app, req) {
        return *r;
    }
    match (req.method(), req.uri().path()) {
        (&http::Method::GET, "/admin/trust") => json(StatusCode::OK, &app.trust_status()),
        (&http::Method::GET, "/admin/policies") => json(StatusCode::OK, &app.policy_status()),
        (&http::Method::GET, "/admin/denials") => denials(app, req.uri().query()),
        (&http::Method::POST, "/admin/reload") => match app.reload("admin").await {
            Ok(epoch) => json(
                StatusCode::OK,
                &serde_json::json!({"result": "ok", "epoch": epoch}),
            ),
            Err(e) => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"result": "error", "error": e.to_string()}),
            ),
        },
        (_, path) => {
            let allow = match path {
                "/admin/trust" | "/admin/policies" | "/admin/denials" => "GET",
                "/admin/reload" => "POST",
                _ => {
                    return json(
                        StatusCode::NOT_FOUND,
                        &serde_json::json!({"error": ENDPOINTS}),
                    );
                }
            };
            let mut r = json(
                StatusCode::METHOD_NOT_ALLOWED,
                &serde_json::json!({"error": format!("{path} takes {allow} only"), "endpoints": ENDPOINTS}),
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        }
    }
}

/// The governance endpoints, as an error names them.
const ENDPOINTS: &str = "GET /admin/trust, GET /admin/policies, GET /admin/denials[?since=DURATION], POST /admin/reload";

/// `GET /admin/denials[?since=1h]`: the references being denied, the most
/// recently denied first; with `since`, those denied within it.
fn denials(app: &App, query: Option<&str>) -> Response<Body> {
    let mut since = None;
    for (key, value) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
    {
        match (key, crate::config::parse_duration(value)) {
            ("since", Ok(d)) => since = Some(d),
            ("since", Err(e)) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": format!("since: {e}")}),
                );
            }
            _ => {}
        }
    }
    let denials = app.audit.denials().list(since);
    json(StatusCode::OK, &serde_json::json!({ "denials": denials }))
}
