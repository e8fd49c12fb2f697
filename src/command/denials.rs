//! `portcullis denials [--since D]`: what the running server is denying
//! now, asked of its `GET /admin/denials` with the admin token (both named
//! by the config). Nothing is decided here.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::{Exit, Failure, Report, StartError};
use crate::audit::Denial;
use crate::config::Config;

/// The longest the server is waited for.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The references being denied, the most recent first.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DenialsReport {
    pub denials: Vec<Denial>,
}

#[derive(Debug, thiserror::Error)]
pub enum DenialsError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("the config has no [admin] listener to ask")]
    NoAdmin,
    #[error("the config's [admin] has no token_file: its governance endpoints are off")]
    NoToken,
    #[error("cannot read admin.token_file {file}: {error}")]
    Token { file: String, error: std::io::Error },
    #[error("asking {url}: {error}")]
    Ask { url: String, error: String },
}

impl Failure for DenialsError {
    fn exit(&self) -> Exit {
        Exit::NoDecision
    }
}

/// Asks the server the config at `config` describes (or `server`, a base
/// URL such as `http://10.0.0.5:9090`) for its denials within `since`.
pub fn denials(
    config: &Path,
    server: Option<&str>,
    since: Option<Duration>,
) -> Result<DenialsReport, DenialsError> {
    let config = Config::load(config).map_err(StartError::from)?;
    let admin = config.admin.as_ref().ok_or(DenialsError::NoAdmin)?;
    let file = admin.token_file.as_ref().ok_or(DenialsError::NoToken)?;
    let token = std::fs::read_to_string(file).map_err(|error| DenialsError::Token {
        file: file.display().to_string(),
        error,
    })?;
    let base = match server {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => format!("http://{}", local(admin.listen)),
    };
    let mut url = format!("{base}/admin/denials");
    if let Some(since) = since {
        url.push_str(&format!("?since={}s", since.as_secs().max(1)));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let ask = |error: String| DenialsError::Ask {
        url: url.clone(),
        error,
    };
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ask(e.to_string()))?;
        let response = client
            .get(&url)
            .bearer_auth(token.trim())
            .send()
            .await
            .map_err(|e| ask(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(ask(format!("the server answered {status}")));
        }
        let body = response.bytes().await.map_err(|e| ask(e.to_string()))?;
        serde_json::from_slice(&body).map_err(|e| ask(format!("not a denials list: {e}")))
    })
}

/// Where to reach a listener bound to every address: this host's loopback.
fn local(listen: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

impl Report for DenialsReport {
    fn exit(&self) -> Exit {
        Exit::Success
    }
}

impl fmt::Display for DenialsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.denials.is_empty() {
            return writeln!(f, "nothing is being denied");
        }
        let mut rows = vec![[
            "IMAGE".to_string(),
            "DIGEST".into(),
            "REASON".into(),
            "POLICY".into(),
            "COUNT".into(),
            "LAST SEEN".into(),
            "DECISION".into(),
            "CLIENTS".into(),
        ]];
        for d in &self.denials {
            let separator = if d.reference.contains(':') { "@" } else { ":" };
            let mut clients = d.clients.join(", ");
            if d.other_clients > 0 {
                clients.push_str(&format!(" (+{} more)", d.other_clients));
            }
            rows.push([
                format!("{}/{}{separator}{}", d.upstream, d.repository, d.reference),
                d.digest.as_deref().map_or("-".into(), short),
                d.reason.clone(),
                d.policy.clone(),
                d.count.to_string(),
                d.last_seen.clone(),
                d.last_decision.clone(),
                clients,
            ]);
        }
        super::trust_status::table(f, &rows)
    }
}

/// `sha256:` and the first 12 hex digits.
fn short(digest: &str) -> String {
    digest.chars().take(19).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(reference: &str) -> Denial {
        Denial {
            upstream: "docker.io".into(),
            repository: "acme/app".into(),
            reference: reference.into(),
            digest: Some(format!("sha256:{}", "ab".repeat(32))),
            reason: "no_signature".into(),
            policy: "acme".into(),
            message: None,
            first_seen: "2026-12-04T10:00:00Z".into(),
            last_seen: "2026-12-04T10:05:00Z".into(),
            count: 3,
            clients: vec!["10.0.0.1:4000".into()],
            other_clients: 2,
            last_decision: "0123456789abcdef".into(),
        }
    }

    #[test]
    fn the_table_names_each_image_with_its_tag_or_digest_and_its_clients() {
        let digest = format!("sha256:{}", "cd".repeat(32));
        let report = DenialsReport {
            denials: vec![denial("v1"), denial(&digest)],
        };
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("IMAGE"), "{text}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "docker.io/acme/app:v1",
                "sha256:abababababab",
                "no_signature",
                "acme",
                "3",
                "2026-12-04T10:05:00Z",
                "0123456789abcdef",
                "10.0.0.1:4000",
                "(+2",
                "more)"
            ],
            "{text}"
        );
        assert!(
            lines[2].starts_with(&format!("docker.io/acme/app@{digest}")),
            "{text}"
        );
        let empty = DenialsReport { denials: vec![] };
        assert_eq!(empty.to_string(), "nothing is being denied\n");
    }

    #[test]
    fn a_listener_on_every_address_is_asked_on_loopback() {
        let any: std::net::SocketAddr = "0.0.0.0:9090".parse().unwrap();
        assert_eq!(local(any).to_string(), "127.0.0.1:9090");
        let one: std::net::SocketAddr = "10.1.2.3:9090".parse().unwrap();
        assert_eq!(local(one), one);
    }
}
