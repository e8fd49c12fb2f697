//! TLS for the registry listener: rustls with the certificate and key read
//! from PEM files and reloaded when they change (checked at most once a
//! second, on handshakes), and optional client certificates (mTLS).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;

/// Serves the current certificate; swaps in a new one when its files change.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// When the files were last looked at, and their modification times.
    checked: Mutex<(Instant, Option<(SystemTime, SystemTime)>)>,
}

fn stamps(tls: &Reloading) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(&tls.cert)?, m(&tls.key)?))
}

fn load(cert: &PathBuf, key: &PathBuf) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider)
        .map(Arc::new)
        .map_err(|e| format!("certificate and key do not match: {e}"))
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.0.elapsed() >= Duration::from_secs(1) {
            let now = stamps(self);
            if now != checked.1 {
                match load(&self.cert, &self.key) {
                    Ok(k) => {
                        *self.current.write().unwrap_or_else(|e| e.into_inner()) = k;
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                        checked.1 = now;
                    }
                    // Half-written files: keep serving the old pair, retry.
                    Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded"),
                }
            }
            checked.0 = Instant::now();
        }
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// The acceptor for `config`; errors name the file.
pub fn acceptor(config: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, String> {
    let current = load(&config.cert, &config.key)?;
    let resolver = Reloading {
        cert: config.cert.clone(),
        key: config.key.clone(),
        current: RwLock::new(current),
        checked: Mutex::new((Instant::now(), None)),
    };
    let stamp = stamps(&resolver);
    resolver.checked.lock().unwrap_or_else(|e| e.into_inner()).1 = stamp;
    let builder = rustls::ServerConfig::builder();
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in
                CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?
            {
                roots
                    .add(c.map_err(|e| format!("{}: {e}", ca.display()))?)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_cert_resolver(Arc::new(resolver));
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}
