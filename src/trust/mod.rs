//! Trust material: each authority's keys, CA roots or keyless identity, and
//! the Sigstore trusted root it relies on, loaded into an immutable
//! [`TrustSnapshot`] with an epoch. A new snapshot (a new epoch) retires
//! every cached verdict.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use sigstore_verify::types::DerPublicKey;

use crate::config::{AuthorityConfig, Problem};
use crate::material::{Identity, SigstoreRoot, VendorPki};

mod load;
pub mod refresh;
pub mod signed;
pub mod source;
pub mod tuf;

pub use load::{CaError, Error};
pub(crate) use load::{NOT_PEM_CERTIFICATES, load_key, usable_ca};
pub use source::{Fetched, Freshness, Sources, Stale};

/// Why an authority's material cannot be relied on now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// Nothing usable was loaded (never fetched, or not usable): there is
    /// nothing to check signatures against.
    #[error("trust for {authority} is unavailable: {why}")]
    NotLoaded { authority: String, why: String },
    /// Loaded, but a source was last verified longer ago than `max_stale`.
    #[error("trust for {authority} is stale: {stale}")]
    Stale { authority: String, stale: Stale },
    /// Loaded, but its signed trust document has expired.
    #[error(
        "trust for {authority} is stale: its signed trust document expired at {}",
        humantime::format_rfc3339_seconds(*expired)
    )]
    Expired {
        authority: String,
        expired: std::time::SystemTime,
    },
}

/// One trusted vendor.
pub struct Authority {
    pub name: String,
    pub material: Material,
    /// The Sigstore root for transparency-log (and Fulcio/TSA) evidence. For
    /// a `ca_roots` authority it is built for its PKI
    /// ([`SigstoreRoot::for_vendor_pki`]): the configured root's logs and
    /// TSAs, and exactly the unrevoked vendor CAs (possibly none).
    pub sigstore: Option<Arc<SigstoreRoot>>,
    /// SHA-256 (hex) of the trusted root's JSON, so a root change shows in
    /// the audited fingerprints.
    pub root_digest: Option<String>,
    pub require_tlog: bool,
    pub require_sct: bool,
    /// Serial numbers (normalised hex) of revoked leaf, intermediate or CA
    /// certificates.
    pub revoked_serials: Vec<String>,
    /// Why this authority's material cannot be used (its source never
    /// answered), if so.
    pub unavailable: Option<String>,
    /// A time past which the material must not be relied on however often
    /// its source confirms it: a versioned document's signed `expires`.
    pub stale_after: Option<std::time::SystemTime>,
    /// The sources (URL document, TUF repository) whose last verified
    /// refresh must be within their `max_stale`, read at each decision.
    pub freshness: Vec<Freshness>,
}

impl Authority {
    /// An authority loaded from material in memory, always available.
    pub fn new(name: &str, material: Material) -> Authority {
        Authority {
            name: name.into(),
            material,
            sigstore: None,
            root_digest: None,
            require_tlog: false,
            require_sct: true,
            revoked_serials: Vec::new(),
            unavailable: None,
            stale_after: None,
            freshness: Vec::new(),
        }
    }

    /// Whether this authority's material can be relied on at `now`.
    pub fn availability(&self, now: std::time::SystemTime) -> Result<(), Unavailable> {
        let authority = || self.name.clone();
        if let Some(why) = &self.unavailable {
            return Err(Unavailable::NotLoaded {
                authority: authority(),
                why: why.clone(),
            });
        }
        for f in &self.freshness {
            f.check(now).map_err(|stale| Unavailable::Stale {
                authority: authority(),
                stale,
            })?;
        }
        match self.stale_after {
            Some(expired) if now >= expired => Err(Unavailable::Expired {
                authority: authority(),
                expired,
            }),
            _ => Ok(()),
        }
    }

    /// When this authority's material stops being fresh unless its sources
    /// are verified again (and at the latest its signed expiry).
    pub fn fresh_until(&self) -> Option<std::time::SystemTime> {
        self.freshness
            .iter()
            .map(Freshness::deadline)
            .chain(self.stale_after)
            .min()
    }

    /// When the earliest of this authority's CA certificates expires.
    pub fn earliest_expiry(&self) -> Option<std::time::SystemTime> {
        use x509_cert::der::Decode;
        let Material::CaRoots(pki) = &self.material else {
            return None;
        };
        pki.roots()
            .iter()
            .filter_map(|c| x509_cert::Certificate::from_der(c.as_ref()).ok())
            .map(|c| c.tbs_certificate.validity.not_after.to_system_time())
            .min()
    }

    /// What this authority trusts, for audit diffs and status: key and CA
    /// fingerprints (SHA-256 hex), or the keyless identity.
    pub fn fingerprints(&self) -> Vec<String> {
        let mut out: Vec<String> = match &self.material {
            Material::Keys(keys) => keys.iter().map(|(fp, _)| fp.clone()).collect(),
            Material::CaRoots(pki) => pki
                .roots()
                .iter()
                .map(|c| hex::encode(Sha256::digest(c.as_ref())))
                .collect(),
            Material::Keyless(id) => vec![format!("{} {}", id.issuer, id.subject)],
        };
        out.extend(self.root_digest.iter().map(|d| format!("trusted_root {d}")));
        out
    }
}

pub enum Material {
    /// Public keys with their SHA-256 fingerprints (hex of the SPKI DER).
    Keys(Vec<(String, DerPublicKey)>),
    /// Vendor root certificates (unrevoked) and the vendor's EKU rule.
    CaRoots(VendorPki),
    Keyless(Identity),
}

/// All authorities at one moment.
pub struct TrustSnapshot {
    pub epoch: u64,
    authorities: HashMap<String, Arc<Authority>>,
}

impl TrustSnapshot {
    pub fn authority(&self, name: &str) -> Option<&Arc<Authority>> {
        self.authorities.get(name)
    }

    pub fn authorities(&self) -> impl Iterator<Item = &Arc<Authority>> {
        self.authorities.values()
    }

    /// Reads every authority's material; problems carry the key path.
    pub fn load(configs: &[AuthorityConfig], epoch: u64) -> Result<TrustSnapshot, Vec<Problem>> {
        TrustSnapshot::load_with(configs, epoch, &std::collections::HashMap::new())
    }

    /// As [`TrustSnapshot::load`], with URL sources' material as last
    /// fetched (an authority whose source has nothing yet is unavailable).
    pub fn load_with(
        configs: &[AuthorityConfig],
        epoch: u64,
        fetched: &HashMap<String, Fetched>,
    ) -> Result<TrustSnapshot, Vec<Problem>> {
        load::snapshot(configs, epoch, fetched)
    }

    /// A snapshot of already-loaded authorities.
    pub fn new(authorities: Vec<Authority>, epoch: u64) -> TrustSnapshot {
        TrustSnapshot {
            epoch,
            authorities: authorities
                .into_iter()
                .map(|a| (a.name.clone(), Arc::new(a)))
                .collect(),
        }
    }

    /// A snapshot with no authorities, for tests and for configs without any.
    pub fn empty() -> TrustSnapshot {
        TrustSnapshot {
            epoch: 0,
            authorities: HashMap::new(),
        }
    }
}

#[cfg(test)]
mod freshness_tests {
    use super::*;
    use crate::material::LeafEku;
    use std::time::{Duration, SystemTime};

    #[test]
    fn an_authority_is_fresh_until_its_earliest_source_deadline_or_signed_expiry() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let fetched = |at: SystemTime| source::Fetched::for_tests(at);
        let mut a = Authority::new("acme", Material::Keys(Vec::new()));
        assert_eq!(
            a.fresh_until(),
            None,
            "material in the config never goes stale"
        );
        a.freshness = vec![
            Freshness::new("a".into(), &fetched(t), Duration::from_secs(100)),
            Freshness::new("b".into(), &fetched(t), Duration::from_secs(50)),
        ];
        assert_eq!(a.fresh_until(), Some(t + Duration::from_secs(50)));
        a.stale_after = Some(t + Duration::from_secs(10));
        assert_eq!(a.fresh_until(), Some(t + Duration::from_secs(10)));
    }

    #[test]
    fn the_earliest_expiry_of_a_vendor_pki_is_its_soonest_ca_not_after() {
        let ca = |year: i32| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.not_after = rcgen::date_time_ymd(year, 1, 1);
            params.self_signed(&key).unwrap().der().clone()
        };
        let pki = VendorPki::new(vec![ca(2040), ca(2035)], LeafEku::default());
        let a = Authority::new("acme", Material::CaRoots(pki));
        assert_eq!(
            a.earliest_expiry(),
            Some(humantime::parse_rfc3339("2035-01-01T00:00:00Z").unwrap())
        );
    }
}
