//! A round-robin HTTP load balancer on loopback, per request (the harshest
//! spread: a manifest and each of its blobs land on different replicas).
//! Bodies stream both ways; redirects are passed to the client.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use tokio::net::TcpListener;

pub struct Balancer {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

type Body = BoxBody<Bytes, std::io::Error>;

impl Balancer {
    /// Spreads requests over `backends` (`127.0.0.1:port`), in turn.
    pub async fn start(backends: Vec<String>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let next = Arc::new(AtomicUsize::new(0));
        let backends = Arc::new(backends);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (client, next, backends) =
                    (client.clone(), Arc::clone(&next), Arc::clone(&backends));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let i = next.fetch_add(1, Ordering::Relaxed) % backends.len();
                        forward(client.clone(), backends[i].clone(), req)
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Balancer { port, task }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

async fn forward(
    client: reqwest::Client,
    backend: String,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Body>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let mut out = client.request(req.method().clone(), format!("http://{backend}{path}"));
    for (name, value) in req.headers() {
        if name != http::header::HOST {
            out = out.header(name, value);
        }
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let out = out.body(body.unwrap_or_default());
    let response = match out.send().await {
        Ok(r) => r,
        Err(_) => {
            let mut bad = hyper::Response::new(empty());
            *bad.status_mut() = http::StatusCode::BAD_GATEWAY;
            return Ok(bad);
        }
    };
    let mut back = hyper::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        back = back.header(name, value);
    }
    let stream = response
        .bytes_stream()
        .map_ok(Frame::data)
        .map_err(std::io::Error::other);
    Ok(back.body(BodyExt::boxed(StreamBody::new(stream))).unwrap())
}

fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
