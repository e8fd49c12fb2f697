//! A vendor's trust server over HTTPS (rustls, a test CA): serves files with
//! an ETag (answering `If-None-Match` with 304), typically a PEM document of
//! keys at `/keys.pem` and its governance signature at `/keys.pem.sig`, or a
//! TUF repository. It can change what it serves or go down. One request per
//! connection.

use std::collections::HashMap;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    down: bool,
}

pub struct TrustServer {
    pub port: u16,
    pub ca_pem: String,
    state: Arc<Mutex<State>>,
    /// Requests for the document answered 200 (not 304).
    pub full_answers: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TrustServer {
    pub async fn start(document: &str, signature: Option<String>) -> TrustServer {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let full_answers = Arc::new(AtomicUsize::new(0));
        let (st, full) = (Arc::clone(&state), Arc::clone(&full_answers));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, st, full) = (acceptor.clone(), Arc::clone(&st), Arc::clone(&full));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 8192];
                    let mut n = 0;
                    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                        match tls.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => n += k,
                        }
                    }
                    let request = String::from_utf8_lossy(&buf[..n]).to_string();
                    let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
                    let if_none_match = request.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .starts_with("if-none-match:")
                            .then(|| l[14..].trim().to_string())
                    });
                    let (status, headers, body) = {
                        let s = st.lock().unwrap();
                        match s.files.get(&path) {
                            _ if s.down => ("503 Service Unavailable", String::new(), Vec::new()),
                            None => ("404 Not Found", String::new(), Vec::new()),
                            Some(file) => {
                                let etag = format!("\"{}\"", hex::encode(Sha256::digest(file)));
                                if if_none_match.as_deref() == Some(etag.as_str()) {
                                    ("304 Not Modified", format!("ETag: {etag}\r\n"), Vec::new())
                                } else {
                                    if path == "/keys.pem" {
                                        full.fetch_add(1, Ordering::SeqCst);
                                    }
                                    ("200 OK", format!("ETag: {etag}\r\n"), file.clone())
                                }
                            }
                        }
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(&body).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        let server = TrustServer {
            port,
            ca_pem: ca_cert.pem(),
            state,
            full_answers,
            task,
        };
        server.serve(document, signature);
        server
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/keys.pem", self.port)
    }

    /// Serves `document` at `/keys.pem` and `signature` (if any) beside it.
    pub fn serve(&self, document: &str, signature: Option<String>) {
        let mut s = self.state.lock().unwrap();
        s.files
            .insert("/keys.pem".into(), document.as_bytes().to_vec());
        match signature {
            Some(sig) => s.files.insert("/keys.pem.sig".into(), sig.into_bytes()),
            None => s.files.remove("/keys.pem.sig"),
        };
    }

    /// Serves `body` at `path` (replacing what was there); `None` removes it.
    pub fn put(&self, path: &str, body: Option<Vec<u8>>) {
        let mut s = self.state.lock().unwrap();
        match body {
            Some(b) => s.files.insert(path.into(), b),
            None => s.files.remove(path),
        };
    }

    /// The server's base URL.
    pub fn base(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }
}

impl Drop for TrustServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
