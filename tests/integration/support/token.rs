//! A Docker-style token issuer for distribution's `auth: token` mode: it
//! checks Basic credentials (or allows anonymous pulls), and issues ES256
//! JWTs whose `x5c` certificate the registry trusts. It counts requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const SERVICE: &str = "test-registry";
pub const ISSUER: &str = "test-issuer";

pub struct TokenIssuer {
    signer: Arc<Signer>,
    pub port: u16,
    pub cert_pem: String,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

struct Signer {
    key: EcdsaKeyPair,
    cert_der_b64: String,
    user: std::sync::Mutex<Option<(String, String)>>,
    anonymous_pull: bool,
}

impl TokenIssuer {
    /// `user`: the only accepted credentials; `anonymous_pull`: tokens with
    /// pull access for requests without credentials.
    pub async fn start(user: Option<(&str, &str)>, anonymous_pull: bool) -> TokenIssuer {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "token signer");
        let cert = params.self_signed(&key).unwrap();
        let signer = Arc::new(Signer {
            key: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der())
                .unwrap(),
            cert_der_b64: STANDARD.encode(cert.der()),
            user: std::sync::Mutex::new(user.map(|(u, p)| (u.to_string(), p.to_string()))),
            anonymous_pull,
        });
        let kept = Arc::clone(&signer);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let n = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (signer, n) = (Arc::clone(&signer), Arc::clone(&n));
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => head.extend_from_slice(&buf[..k]),
                        }
                    }
                    n.fetch_add(1, Ordering::SeqCst);
                    let response = signer.answer(&String::from_utf8_lossy(&head));
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        TokenIssuer {
            signer: kept,
            port,
            cert_pem: cert.pem(),
            requests,
            task,
        }
    }

    pub fn realm(&self, host: &str) -> String {
        format!("http://{host}:{}/token", self.port)
    }

    /// From now on only `user:password` gets a token (a rotation).
    pub fn rotate(&self, user: &str, password: &str) {
        *self.signer.user.lock().unwrap() = Some((user.to_string(), password.to_string()));
    }

    pub fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Signer {
    fn answer(&self, head: &str) -> String {
        let target = head
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .nth(1)
            .unwrap_or_default();
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let scopes: Vec<String> = query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("scope="))
            .map(|s| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let basic = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("Authorization: Basic ")
                    .or_else(|| l.strip_prefix("authorization: Basic "))
            })
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let user = self.user.lock().unwrap().clone();
        let (subject, actions): (&str, &[&str]) = match (&basic, &user) {
            (Some(given), Some((u, p))) if *given == format!("{u}:{p}") => {
                (u.as_str(), &["pull", "push"])
            }
            (Some(_), _) => return "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".into(),
            (None, _) if self.anonymous_pull => ("anonymous", &["pull"]),
            (None, _) => return "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n".into(),
        };
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .flat_map(|s| s.split(' '))
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (kind, name) = (parts.next()?, parts.next()?);
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
            })
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self.cert_der_b64]});
        let claims = serde_json::json!({"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
            "iat": now, "jti": format!("{now}-{}", access.len()), "access": access});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .unwrap();
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
        let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}
