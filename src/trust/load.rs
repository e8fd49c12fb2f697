//! Loading trust material: each authority's keys, CA roots or identity and
//! its Sigstore root read from files, inline PEM, fetched documents and TUF
//! repositories, with every problem reported under its key path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest as _, Sha256};
use sigstore_verify::types::DerPublicKey;

use super::{Authority, Fetched, Freshness, Material, TrustSnapshot, source, tuf};
use crate::config::{AuthorityConfig, AuthorityKind, Problem, TrustedRootSource};
use crate::material::{Identity, LeafEku, SigstoreRoot, VendorPki};

/// Reads every authority in `configs` into a snapshot of `epoch`, URL
/// sources' material as last `fetched`; problems carry the key path.
pub(super) fn snapshot(
    configs: &[AuthorityConfig],
    epoch: u64,
    fetched: &HashMap<String, Fetched>,
) -> Result<TrustSnapshot, Vec<Problem>> {
    let mut loader = Loader {
        fetched,
        roots: HashMap::new(),
        problems: Vec::new(),
    };
    let authorities = configs
        .iter()
        .enumerate()
        .map(|(i, a)| (a.name.clone(), Arc::new(loader.authority(i, a))))
        .collect();
    if loader.problems.is_empty() {
        Ok(TrustSnapshot { epoch, authorities })
    } else {
        Err(loader.problems)
    }
}

/// Drops revoked keys and CA certificates (by SHA-256 fingerprint, and CA
/// certificates by serial number).
fn revoke(material: Material, revoked: &[String], serials: &[String]) -> Material {
    if revoked.is_empty() && serials.is_empty() {
        return material;
    }
    match material {
        Material::Keys(keys) => Material::Keys(
            keys.into_iter()
                .filter(|(fp, _)| !revoked.contains(fp))
                .collect(),
        ),
        Material::CaRoots(pki) => Material::CaRoots(pki.retain(|c| {
            !revoked.contains(&hex::encode(Sha256::digest(c.as_ref())))
                && crate::material::serial_of(c.as_ref()).is_none_or(|s| !serials.contains(&s))
        })),
        keyless => keyless,
    }
}

/// Loads authorities one by one, sharing trusted roots between them and
/// collecting every problem with its key path.
struct Loader<'a> {
    fetched: &'a HashMap<String, Fetched>,
    /// Trusted roots loaded so far, by file, TUF repository or name.
    roots: HashMap<String, (Arc<SigstoreRoot>, String)>,
    problems: Vec<Problem>,
}

/// What makes an authority unreliable now, as it is loaded.
#[derive(Default)]
struct Reliance {
    unavailable: Option<String>,
    stale_after: Option<std::time::SystemTime>,
    freshness: Vec<Freshness>,
}

impl Loader<'_> {
    fn problem(&mut self, i: usize, field: &str, message: String) {
        self.problems.push(Problem {
            path: format!("authority[{i}].{field}"),
            message,
        });
    }

    fn authority(&mut self, i: usize, a: &AuthorityConfig) -> Authority {
        let mut reliance = Reliance::default();
        self.tuf_freshness(i, a, &mut reliance);
        let sigstore = self.shared_root(i, a);
        let material = self.material(i, a, &mut reliance);
        let (sigstore, root_digest) = sigstore.unzip();
        let material = match revoke(material, &a.revoked, &a.revoked_serials) {
            Material::CaRoots(pki) => Material::CaRoots(VendorPki::new(
                pki.roots().to_vec(),
                if a.require_code_signing_eku {
                    LeafEku::CodeSigningRequired
                } else {
                    LeafEku::CodeSigningIfPresent
                },
            )),
            other => other,
        };
        let sigstore = self.vendor_root(i, a, &material, sigstore);
        Authority {
            name: a.name.clone(),
            material,
            sigstore,
            root_digest,
            require_tlog: a.require_tlog,
            require_sct: a.require_sct,
            revoked_serials: a.revoked_serials.clone(),
            unavailable: reliance.unavailable,
            stale_after: reliance.stale_after,
            freshness: reliance.freshness,
        }
    }

    /// A TUF repository's root is checked, and is as fresh as its last
    /// verified refresh (unavailable until there is one).
    fn tuf_freshness(&mut self, i: usize, a: &AuthorityConfig, reliance: &mut Reliance) {
        let Some(TrustedRootSource::Tuf(tuf)) = &a.trusted_root else {
            return;
        };
        if let Some(p) = &tuf.root {
            if let Err(e) = read(p).and_then(|t| {
                tuf::check_root(t.as_bytes())
                    .map_err(|e| Error::Root(format!("{}: {e}", p.display())))
            }) {
                self.problem(i, "trusted_root.root", e.to_string());
            }
        }
        match self.fetched.get(&tuf.key()) {
            Some(f) => reliance.freshness.push(Freshness::new(
                format!("its TUF repository {}", tuf.url),
                f,
                tuf.max_stale,
            )),
            None => {
                reliance.unavailable = Some(format!(
                    "its TUF repository {} has not been verified yet",
                    tuf.url
                ));
            }
        }
    }

    /// The authority's trusted root and the SHA-256 of its JSON, loaded
    /// once however many authorities name it.
    fn shared_root(
        &mut self,
        i: usize,
        a: &AuthorityConfig,
    ) -> Option<(Arc<SigstoreRoot>, String)> {
        let source = match &a.trusted_root {
            None => return None,
            Some(TrustedRootSource::Tuf(tuf)) if !self.fetched.contains_key(&tuf.key()) => {
                return None;
            }
            Some(source) => source,
        };
        let key = match source {
            TrustedRootSource::PublicGood => "sigstore-public-good".to_string(),
            TrustedRootSource::File(p) => p.display().to_string(),
            TrustedRootSource::Tuf(tuf) => tuf.key(),
        };
        if let Some(r) = self.roots.get(&key) {
            return Some(r.clone());
        }
        match load_root(source, self.fetched) {
            Ok((root, digest)) => {
                let r = (Arc::new(root), digest);
                self.roots.insert(key, r.clone());
                Some(r)
            }
            Err(e) => {
                self.problem(i, "trusted_root", e.to_string());
                None
            }
        }
    }

    /// The keys, CA roots or identity the authority trusts (a source's
    /// as last fetched, or none while it is unavailable).
    fn material(&mut self, i: usize, a: &AuthorityConfig, reliance: &mut Reliance) -> Material {
        match &a.kind {
            AuthorityKind::Keys(paths) => {
                let mut keys = Vec::new();
                for (j, p) in paths.iter().enumerate() {
                    match p
                        .read()
                        .map_err(Error::Pem)
                        .and_then(|text| key_from_pem(&text, &p.label()))
                    {
                        Ok(k) => keys.push(k),
                        Err(e) => self.problem(i, &format!("keys[{j}]"), e.to_string()),
                    }
                }
                Material::Keys(keys)
            }
            AuthorityKind::CaRoots(paths) => {
                let mut certs = Vec::new();
                for (j, p) in paths.iter().enumerate() {
                    match p
                        .read()
                        .map_err(Error::Pem)
                        .and_then(|text| certs_from_pem(&text, &p.label()))
                    {
                        Ok(c) => certs.extend(c),
                        Err(e) => self.problem(i, &format!("ca_roots[{j}]"), e.to_string()),
                    }
                }
                Material::CaRoots(VendorPki::new(certs, LeafEku::default()))
            }
            AuthorityKind::Keyless { issuer, subject } => Material::Keyless(Identity {
                issuer: issuer.clone(),
                subject: subject.clone(),
            }),
            AuthorityKind::Source(src) => {
                match self.fetched.get(&a.name).filter(|f| f.accepted_under(src)) {
                    Some(f) => match source::parse(src.kind, &f.body) {
                        Ok(m) => {
                            reliance.freshness.push(Freshness::new(
                                format!("its source {}", src.url),
                                f,
                                src.max_stale,
                            ));
                            reliance.stale_after = f.header.map(|h| h.expires);
                            m
                        }
                        Err(e) => {
                            reliance.unavailable.get_or_insert(e.to_string());
                            source::empty(src.kind)
                        }
                    },
                    None => {
                        reliance.unavailable.get_or_insert(
                            "its source has not been fetched successfully yet".into(),
                        );
                        source::empty(src.kind)
                    }
                }
            }
        }
    }

    /// A vendor PKI that logs to a transparency log is verified against a
    /// root that trusts exactly the vendor's unrevoked CAs (possibly none:
    /// then it verifies nothing) plus the logs; never against the base
    /// root's CAs. Other authorities keep the root they name.
    fn vendor_root(
        &mut self,
        i: usize,
        a: &AuthorityConfig,
        material: &Material,
        sigstore: Option<Arc<SigstoreRoot>>,
    ) -> Option<Arc<SigstoreRoot>> {
        match (material, &a.trusted_root) {
            (Material::CaRoots(pki), Some(source)) if sigstore.is_some() => {
                match root_json(source, self.fetched)
                    .and_then(|json| SigstoreRoot::for_vendor_pki(&json, pki).map_err(root_error))
                {
                    Ok(r) => Some(Arc::new(r)),
                    Err(e) => {
                        self.problem(i, "trusted_root", e.to_string());
                        None
                    }
                }
            }
            _ => sigstore,
        }
    }
}

/// Why an authority's trust material could not be loaded. The messages
/// name the file or PEM label and never quote the file's text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    /// A `keys`/`ca_roots` entry (file or inline PEM) that cannot be read.
    #[error("{0}")]
    Pem(String),
    /// A TUF repository whose root has not been verified yet.
    #[error("{0} has not been verified yet")]
    NotVerified(String),
    /// A trusted root or TUF root that is not valid or not usable.
    #[error("{0}")]
    Root(String),
    #[error("{label}: {error}")]
    Key {
        label: String,
        error: crate::material::KeyError,
    },
    #[error("{label}: {NOT_PEM_CERTIFICATES}")]
    NotPemCertificates { label: String },
    #[error("{label}: no certificates")]
    NoCertificates { label: String },
    #[error("{label}: {error}")]
    Ca { label: String, error: CaError },
}

/// Why a CA certificate is refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CaError {
    /// Not a certificate a trust anchor can be made of.
    #[error("not a usable CA certificate: {0}")]
    NotAnAnchor(String),
    #[error("not a usable CA certificate: {0}")]
    Key(crate::material::KeyError),
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn root_json(
    source: &TrustedRootSource,
    fetched: &HashMap<String, Fetched>,
) -> Result<String, Error> {
    match source {
        TrustedRootSource::PublicGood => {
            Ok(sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT.to_string())
        }
        TrustedRootSource::File(p) => read(p),
        TrustedRootSource::Tuf(tuf) => fetched
            .get(&tuf.key())
            .map(|f| String::from_utf8_lossy(&f.body).into_owned())
            .ok_or_else(|| Error::NotVerified(tuf.url.to_string())),
    }
}

/// A trusted-root error without what the file quoted: a JSON error may
/// quote a string from the file (which may not be what it should: a link
/// to a secret); keep what the schema expected only.
fn root_error(e: crate::material::RootError) -> Error {
    Error::Root(crate::config::without_quoted_values(&e.to_string()))
}

/// The root and the SHA-256 (hex) of its JSON.
fn load_root(
    source: &TrustedRootSource,
    fetched: &HashMap<String, Fetched>,
) -> Result<(SigstoreRoot, String), Error> {
    let json = root_json(source, fetched)?;
    let root = SigstoreRoot::from_json(&json).map_err(root_error)?;
    Ok((root, hex::encode(Sha256::digest(json.as_bytes()))))
}

pub(crate) fn load_key(path: &Path) -> Result<(String, DerPublicKey), Error> {
    key_from_pem(&read(path)?, &path.display().to_string())
}

/// A public key and its fingerprint; `label` names the PEM in errors.
fn key_from_pem(text: &str, label: &str) -> Result<(String, DerPublicKey), Error> {
    let refused = |error| Error::Key {
        label: label.to_string(),
        error,
    };
    let key = crate::material::public_key_from_pem(text).map_err(refused)?;
    crate::material::usable_key(&key).map_err(refused)?;
    Ok((hex::encode(Sha256::digest(key.as_bytes())), key))
}

/// Why a text is not PEM certificates, never quoting it (the PEM parser's
/// errors quote the offending line).
pub(crate) const NOT_PEM_CERTIFICATES: &str = "not PEM certificates (`CERTIFICATE` blocks)";

fn certs_from_pem(text: &str, label: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let label = || label.to_string();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| Error::NotPemCertificates { label: label() })?;
    if certs.is_empty() {
        return Err(Error::NoCertificates { label: label() });
    }
    for c in &certs {
        usable_ca(c).map_err(|error| Error::Ca {
            label: label(),
            error,
        })?;
    }
    Ok(certs)
}

/// A CA certificate verification can use: a trust anchor whose key is one
/// certificates it issued can be checked with.
pub(crate) fn usable_ca(c: &CertificateDer<'_>) -> Result<(), CaError> {
    webpki::anchor_from_trusted_cert(c).map_err(|e| CaError::NotAnAnchor(format!("{e:?}")))?;
    crate::material::usable_certificate_key(c.as_ref()).map_err(CaError::Key)
}
