//! A private Sigstore instance for keyless tests: a Fulcio CA, a
//! transparency log and the trusted root naming both, with the authority a
//! proxy trusts them through.

use std::path::Path;

use super::config::{Authority, Subject};
use super::cosign::SignatureLayer;
use super::fulcio::{Fulcio, GITHUB_ISSUER, TransparencyLog, trusted_root};

pub struct Keyless {
    pub fulcio: Fulcio,
    pub log: TransparencyLog,
}

impl Keyless {
    pub fn new() -> Keyless {
        Keyless {
            fulcio: Fulcio::new(),
            log: TransparencyLog::new(),
        }
    }

    /// The `trusted_root.json` naming this Fulcio as the only CA and this
    /// log as the only log.
    pub fn trusted_root(&self) -> String {
        trusted_root(&self.fulcio, &self.log)
    }

    /// Writes [`Self::trusted_root`] to `dir/trusted_root.json`; its path,
    /// as a config names it.
    pub fn write_trusted_root(&self, dir: &Path) -> String {
        let path = dir.join("trusted_root.json");
        std::fs::write(&path, self.trusted_root()).unwrap();
        path.display().to_string()
    }

    /// A keyless authority `name` for GitHub Actions certificates whose SAN
    /// is `subject`, with the trusted root at `trusted_root` and no SCT
    /// required (this Fulcio has no CT log).
    pub fn authority(name: &str, subject: Subject<'_>, trusted_root: &str) -> Authority {
        Authority::keyless(name, GITHUB_ISSUER, subject)
            .trusted_root(trusted_root)
            .without_sct()
    }

    /// A `.sig` layer for `digest` by a certificate for `identity` from
    /// `issuer`, with the log's bundle (its SET).
    pub fn logged_signature(&self, digest: &str, identity: &str, issuer: &str) -> SignatureLayer {
        let (mut layer, bundle) = self.fulcio.issue(identity, issuer).sign(digest, &self.log);
        layer.rekor_bundle = Some(bundle);
        layer
    }
}
