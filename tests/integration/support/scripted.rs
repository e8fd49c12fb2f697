//! A scripted upstream for faults a real registry will not produce: wrong
//! bytes for a digest, a connection reset mid-body, hangs, 429s. It speaks
//! just enough HTTP/1.1 (one request per connection).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Served bytes by digest (or tag): content type and body.
type Content = HashMap<String, (String, Vec<u8>)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Healthy,
    /// Bytes of the right length that do not hash to the digest.
    WrongBytes,
    /// Headers and half the body, then a TCP reset.
    ResetMidBody,
    /// Headers and half the body, then an orderly close.
    #[allow(dead_code)]
    CloseMidBody,
    /// Accept and never answer.
    HangBeforeHeaders,
    /// Headers and half the body, then silence.
    StallBody,
    /// 429 with `Retry-After: 7`.
    TooManyRequests,
    /// Headers and all but the last byte at once, then after a second the
    /// last byte, wrong: a fill that fails its digest check only at the end.
    WrongLastByteLate,
}

/// Per-digest behaviour beside the server-wide fault.
#[derive(Default)]
struct Special {
    delays: HashMap<String, Duration>,
    /// Digest → the only repository that holds it (others get 404).
    only_in: HashMap<String, String>,
    /// Digest → a body that never ends, with this Content-Length if any.
    endless: HashMap<String, Option<u64>>,
    /// Subject digest → pages of its referrers API (descriptor lists).
    referrers: HashMap<String, Vec<Vec<serde_json::Value>>>,
    /// Whether the last referrers page links back to the first.
    referrers_loop: bool,
    /// A real registry that answers whatever is not scripted here.
    backend: Option<String>,
    /// Blob requests being answered now, and the most at once.
    blobs_open: usize,
    most_blobs_open: usize,
}

/// Counts a blob request as open until dropped.
struct OpenBlob(Arc<Mutex<Special>>);

impl OpenBlob {
    fn new(special: &Arc<Mutex<Special>>) -> OpenBlob {
        let mut s = special.lock().unwrap();
        s.blobs_open += 1;
        s.most_blobs_open = s.most_blobs_open.max(s.blobs_open);
        OpenBlob(Arc::clone(special))
    }
}

impl Drop for OpenBlob {
    fn drop(&mut self) {
        self.0.lock().unwrap().blobs_open -= 1;
    }
}

pub struct Scripted {
    pub port: u16,
    fault: Arc<Mutex<Fault>>,
    content: Arc<Mutex<Content>>,
    special: Arc<Mutex<Special>>,
    pub requests: Arc<AtomicUsize>,
    /// Body bytes written for endless blobs (what the client took).
    pub sent: Arc<std::sync::atomic::AtomicU64>,
    /// Connections open now, and the most open at once.
    pub open: Arc<AtomicUsize>,
    pub most_open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    pub async fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fault = Arc::new(Mutex::new(Fault::Healthy));
        let content: Arc<Mutex<Content>> = Arc::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let special: Arc<Mutex<Special>> = Arc::default();
        let sent: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let open: Arc<AtomicUsize> = Arc::default();
        let most_open: Arc<AtomicUsize> = Arc::default();
        let (o, m) = (Arc::clone(&open), Arc::clone(&most_open));
        let (f, c, n, d, w) = (
            Arc::clone(&fault),
            Arc::clone(&content),
            Arc::clone(&requests),
            Arc::clone(&special),
            Arc::clone(&sent),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (f, c, n, d, w) = (
                    Arc::clone(&f),
                    Arc::clone(&c),
                    Arc::clone(&n),
                    Arc::clone(&d),
                    Arc::clone(&w),
                );
                let (o, m) = (Arc::clone(&o), Arc::clone(&m));
                tokio::spawn(async move {
                    let now = o.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    serve(stream, f, c, n, d, w).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Scripted {
            port,
            fault,
            content,
            special,
            requests,
            sent,
            open,
            most_open,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Answers requests for `key` (a digest or tag) only after `delay`.
    pub fn delay(&self, key: &str, delay: Duration) {
        let mut special = self.special.lock().unwrap();
        special.delays.insert(key.to_string(), delay);
    }

    /// Only repository `repo` holds `digest`: requests through any other
    /// repository get 404.
    #[allow(dead_code)]
    pub fn only_in(&self, digest: &str, repo: &str) {
        let mut special = self.special.lock().unwrap();
        special.only_in.insert(digest.to_string(), repo.to_string());
    }

    /// Serves a referrers API for `subject` in `pages`, each linking to the
    /// next with `Link: <…?page=N>; rel="next"`; with `looping`, the last
    /// links back to the first.
    #[allow(dead_code)]
    pub fn referrer_pages(&self, subject: &str, pages: Vec<Vec<serde_json::Value>>, looping: bool) {
        let mut special = self.special.lock().unwrap();
        special.referrers.insert(subject.to_string(), pages);
        special.referrers_loop = looping;
    }

    /// The most blob requests answered at once since the last call; resets it.
    #[allow(dead_code)]
    pub fn take_most_blobs_open(&self) -> usize {
        let mut special = self.special.lock().unwrap();
        let now = special.blobs_open;
        std::mem::replace(&mut special.most_blobs_open, now)
    }

    /// Forwards every request that is not scripted to the registry at `url`.
    #[allow(dead_code)]
    pub fn in_front_of(&self, url: &str) {
        self.special.lock().unwrap().backend = Some(url.to_string());
    }

    /// A GET of blob `digest` streams bytes that never end (up to 1 GiB),
    /// chunked, or with a `Content-Length` that they overrun.
    #[allow(dead_code)]
    pub fn endless(&self, digest: &str, content_length: Option<u64>) {
        let mut special = self.special.lock().unwrap();
        special.endless.insert(digest.to_string(), content_length);
    }

    /// Serves `bytes` for `<anything>/manifests|blobs/<digest>`.
    pub fn put(&self, digest: &str, content_type: &str, bytes: &[u8]) {
        self.content.lock().unwrap().insert(
            digest.to_string(),
            (content_type.to_string(), bytes.to_vec()),
        );
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits `d` before answering; false if the client hung up meanwhile.
async fn pause(stream: &mut TcpStream, d: Duration) -> bool {
    let mut probe = [0u8; 1];
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        _ = stream.read(&mut probe) => false,
    }
}

async fn serve(
    mut stream: TcpStream,
    fault: Arc<Mutex<Fault>>,
    content: Arc<Mutex<Content>>,
    n: Arc<AtomicUsize>,
    special: Arc<Mutex<Special>>,
    sent: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(k) => head.extend_from_slice(&buf[..k]),
        }
    }
    n.fetch_add(1, Ordering::SeqCst);
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let _blob = path.contains("/blobs/").then(|| OpenBlob::new(&special));
    let fault = *fault.lock().unwrap();
    if path == "/v2/" {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            .await;
        return;
    }
    let digest = path
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let (pages, looping, backend) = {
        let special = special.lock().unwrap();
        let subject = path
            .split("/referrers/")
            .nth(1)
            .map(|rest| rest.split('?').next().unwrap_or_default().to_string());
        (
            subject.and_then(|d| special.referrers.get(&d).cloned()),
            special.referrers_loop,
            special.backend.clone(),
        )
    };
    if let Some(pages) = pages {
        let base = path.split('?').next().unwrap_or_default();
        let page: usize = path
            .split_once("?page=")
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0);
        let manifests = pages.get(page).cloned().unwrap_or_default();
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests,
        }))
        .unwrap();
        let next = match (page + 1 < pages.len(), looping) {
            (true, _) => Some(page + 1),
            (false, true) => Some(0),
            (false, false) => None,
        };
        let link = next
            .map(|n| format!("Link: <{base}?page={n}>; rel=\"next\"\r\n"))
            .unwrap_or_default();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\n{link}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&body).await;
        return;
    }
    if let Some(backend) = backend {
        if !content.lock().unwrap().contains_key(&digest) {
            let delay = special.lock().unwrap().delays.get(&digest).copied();
            if let Some(d) = delay {
                if !pause(&mut stream, d).await {
                    return;
                }
            }
            forward(&mut stream, &text, &method, &path, &backend).await;
            return;
        }
    }
    // No referrers API: clients fall back to the tag schema.
    if path.contains("/referrers/") {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    }
    let repo = path
        .strip_prefix("/v2/")
        .and_then(|p| {
            p.split_once("/blobs/")
                .or_else(|| p.split_once("/manifests/"))
        })
        .map(|(repo, _)| repo.to_string())
        .unwrap_or_default();
    let (delay, only_in, endless) = {
        let special = special.lock().unwrap();
        (
            special.delays.get(&digest).copied(),
            special.only_in.get(&digest).cloned(),
            special.endless.get(&digest).copied(),
        )
    };
    if only_in.is_some_and(|only| only != repo) {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    }
    if let Some(d) = delay {
        if !pause(&mut stream, d).await {
            return;
        }
    }
    if let (Some(length), "GET") = (endless, method.as_str()) {
        let framing = match length {
            Some(n) => format!("Content-Length: {n}"),
            None => "Transfer-Encoding: chunked".to_string(),
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{framing}\r\nConnection: close\r\n\r\n"
        );
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..(1 << 30) / chunk.len() {
            let written = match length {
                Some(_) => stream.write_all(&chunk).await,
                None => {
                    let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                    framed.extend_from_slice(&chunk);
                    framed.extend_from_slice(b"\r\n");
                    stream.write_all(&framed).await
                }
            };
            if written.is_err() {
                return;
            }
            sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
        return;
    }
    let Some((content_type, bytes)) = content.lock().unwrap().get(&digest).cloned() else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .await;
        return;
    };
    let header = |len: usize| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nDocker-Content-Digest: {digest}\r\nConnection: close\r\n\r\n"
        )
    };
    let half = bytes.len() / 2;
    match fault {
        Fault::Healthy => {
            let _ = stream.write_all(header(bytes.len()).as_bytes()).await;
            if method != "HEAD" {
                let _ = stream.write_all(&bytes).await;
            }
        }
        Fault::WrongBytes => {
            let mut wrong = bytes.clone();
            if let Some(b) = wrong.last_mut() {
                *b ^= 0xff;
            }
            let _ = stream.write_all(header(wrong.len()).as_bytes()).await;
            if method != "HEAD" {
                let _ = stream.write_all(&wrong).await;
            }
        }
        Fault::ResetMidBody => {
            let _ = stream.write_all(header(bytes.len()).as_bytes()).await;
            let _ = stream.write_all(&bytes[..half]).await;
            let _ = stream.flush().await;
            // Zero linger turns the close into a reset; it does not block.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
        }
        Fault::CloseMidBody => {
            let _ = stream.write_all(header(bytes.len()).as_bytes()).await;
            let _ = stream.write_all(&bytes[..half]).await;
            let _ = stream.shutdown().await;
        }
        Fault::HangBeforeHeaders => {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Fault::StallBody => {
            let _ = stream.write_all(header(bytes.len()).as_bytes()).await;
            let _ = stream.write_all(&bytes[..half]).await;
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Fault::WrongLastByteLate => {
            let _ = stream.write_all(header(bytes.len()).as_bytes()).await;
            if method != "HEAD" {
                let (head, last) = bytes.split_at(bytes.len().saturating_sub(1));
                let _ = stream.write_all(head).await;
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let wrong: Vec<u8> = last.iter().map(|b| b ^ 0xff).collect();
                let _ = stream.write_all(&wrong).await;
            }
        }
        Fault::TooManyRequests => {
            let _ = stream
                .write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    }
}

/// Answers with what the registry at `backend` answers (GET or HEAD; the
/// headers a registry client reads, and the body).
async fn forward(stream: &mut TcpStream, request: &str, method: &str, path: &str, backend: &str) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut forwarded = client.request(method.parse().unwrap(), format!("{backend}{path}"));
    for line in request.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("accept") || name.eq_ignore_ascii_case("authorization") {
                forwarded = forwarded.header(name.trim(), value.trim());
            }
        }
    }
    let Ok(response) = forwarded.send().await else {
        return;
    };
    let status = response.status();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for name in ["content-type", "docker-content-digest", "www-authenticate"] {
        if let Some(v) = response.headers().get(name).and_then(|v| v.to_str().ok()) {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let length = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.bytes().await.unwrap_or_default();
    let length = if method == "HEAD" {
        length.unwrap_or_else(|| "0".into())
    } else {
        body.len().to_string()
    };
    head.push_str(&format!(
        "Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ));
    let _ = stream.write_all(head.as_bytes()).await;
    if method != "HEAD" {
        let _ = stream.write_all(&body).await;
    }
}
