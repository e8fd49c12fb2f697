//! Sigstore trusted roots (`trusted_root.json`): parsed and checked once,
//! with every key and certificate in them usable for verification.

use sigstore_verify::Verifier;

use super::key::{KeyError, usable_certificate_key, usable_key};
use super::pki::VendorPki;

/// A Sigstore trusted root (Fulcio CAs, Rekor and CT log keys, TSAs), parsed
/// and checked once.
pub struct SigstoreRoot {
    verifier: Verifier,
    /// Set for a root built for a vendor PKI: the only CAs a certificate may
    /// chain to under [`Expected::AnyCertificate`]. A root without it (a
    /// Fulcio root) never verifies a certificate of unchecked identity.
    vendor: Option<VendorPki>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RootError(String);

impl SigstoreRoot {
    /// Parses a `trusted_root.json`.
    pub fn from_json(json: &str) -> Result<SigstoreRoot, RootError> {
        let root = sigstore_verify::trust_root::TrustedRoot::from_json(json)
            .map_err(|e| RootError(format!("trusted root is not valid: {e}")))?;
        usable_root(&root).map_err(|e| RootError(format!("trusted root is not usable: {e}")))?;
        let verifier = Verifier::new(&root)
            .map_err(|e| RootError(format!("trusted root is not usable: {e}")))?;
        Ok(SigstoreRoot {
            verifier,
            vendor: None,
        })
    }

    /// A root for a vendor PKI that logs to a transparency log: `base`'s
    /// logs and TSAs, and `pki`'s roots as its only certificate authorities
    /// (none when all are revoked: then it verifies no certificate). The
    /// certificate chain is checked by [`crate::verify::x509::verify_chain`] at every time
    /// the log or a TSA proves, with the vendor's EKU rules and the
    /// intermediates the signature carries.
    pub fn for_vendor_pki(base_json: &str, pki: &VendorPki) -> Result<SigstoreRoot, RootError> {
        use base64::Engine;
        let mut root: serde_json::Value = serde_json::from_str(base_json)
            .map_err(|e| RootError(format!("trusted root is not JSON: {e}")))?;
        let cas: Vec<serde_json::Value> = pki
            .roots()
            .iter()
            .map(|der| {
                serde_json::json!({
                    "subject": {"organization": "vendor", "commonName": "vendor"},
                    "uri": "urn:portcullis:vendor-ca",
                    "certChain": {"certificates": [{"rawBytes": base64::engine::general_purpose::STANDARD.encode(der)}]},
                    "validFor": {"start": "1970-01-01T00:00:00Z"},
                })
            })
            .collect();
        root["certificateAuthorities"] = serde_json::Value::Array(cas);
        root["ctlogs"] = serde_json::json!([]);
        let mut built = SigstoreRoot::from_json(&root.to_string())?;
        built.vendor = Some(pki.clone());
        Ok(built)
    }

    /// The verifier built from this root.
    pub(crate) fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The vendor PKI this root was built for, if any.
    pub fn vendor(&self) -> Option<&VendorPki> {
        self.vendor.as_ref()
    }

    /// The public-good instance's root as embedded in the library. It is a
    /// snapshot; deployments that need current material point an authority
    /// at a `trusted_root.json` they refresh.
    pub fn public_good() -> Result<SigstoreRoot, RootError> {
        SigstoreRoot::from_json(sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT)
    }
}

/// Every key and certificate in a trusted root is one verification can use:
/// its transparency and CT logs' keys (a CT log's RSA key may be bare
/// PKCS#1) and its CA and TSA certificates.
fn usable_root(root: &sigstore_verify::trust_root::TrustedRoot) -> Result<(), String> {
    use sigstore_verify::crypto::{SigningScheme, VerificationKey, validate_raw_public_key};
    for (i, log) in root.tlogs.iter().enumerate() {
        usable_key(&log.public_key.raw_bytes).map_err(|e| format!("tlogs[{i}]: {e}"))?;
    }
    for (i, log) in root.ctlogs.iter().enumerate() {
        let key = &log.public_key.raw_bytes;
        usable_key(key)
            .or_else(|e| {
                let pkcs1 = VerificationKey::from_der(key, SigningScheme::RsaPkcs1Sha256)
                    .map_err(|_| e.clone())?;
                validate_raw_public_key(pkcs1.scheme(), pkcs1.as_bytes())
                    .map_err(|e| KeyError::Unusable(e.to_string()))
            })
            .map_err(|e| format!("ctlogs[{i}]: {e}"))?;
    }
    let cas = root.certificate_authorities.iter().map(|ca| &ca.cert_chain);
    let tsas = root.timestamp_authorities.iter().map(|tsa| &tsa.cert_chain);
    for (what, chains) in [
        ("certificateAuthorities", cas.collect::<Vec<_>>()),
        ("timestampAuthorities", tsas.collect()),
    ] {
        for (i, chain) in chains.into_iter().enumerate() {
            for c in &chain.certificates {
                usable_certificate_key(c.raw_bytes.as_bytes())
                    .map_err(|e| format!("{what}[{i}]: {e}"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trusted_root_whose_log_key_verification_never_accepts_is_refused() {
        // RSA-1024 (SPKI, DER): it parses, but verification needs 2048–8192 bits.
        const RSA_1024: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDFqQ2LY++OJf0Mem3JdFaGBajewCwsfvARQd5TkikfkHZqgSNcCH7UhPSe5WSwxT10tWVqno6naqCcDxXe754ymNep6qtDzfNN7+Lg3fu6NOI6Mm1qA8syO0W+rxJey+wtcWas8lkXcP4QsU0owdxme71lAmcVu86fk4aia6NuAwIDAQAB";
        let json = sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT;
        assert!(SigstoreRoot::from_json(json).is_ok());
        let mut root: serde_json::Value = serde_json::from_str(json).unwrap();
        root["tlogs"][0]["publicKey"]["rawBytes"] = RSA_1024.into();
        root["tlogs"][0]["publicKey"]["keyDetails"] = "PKIX_RSA_PKCS1V15_2048_SHA256".into();
        let e = SigstoreRoot::from_json(&root.to_string()).err().unwrap();
        assert!(e.to_string().contains("tlogs[0]"), "{e}");
        assert!(e.to_string().contains("1024"), "{e}");
    }

    #[test]
    fn a_vendor_root_with_every_ca_revoked_still_loads_and_trusts_no_ca() {
        let json = sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT;
        let root = SigstoreRoot::for_vendor_pki(json, &VendorPki::default()).unwrap();
        assert!(root.vendor().is_some_and(|p| p.roots().is_empty()));
    }
}
