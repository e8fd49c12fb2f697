//! Chain and EKU rules of [`super::verify_chain`] on certificates made here.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose as Eku, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use super::*;

struct Ca {
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str, ekus: Vec<Eku>, parent: Option<&Ca>) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params.extended_key_usages = ekus;
    params.not_before = OffsetDateTime::now_utc() - Duration::days(10);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(10);
    let cert = match parent {
        None => params.self_signed(&key).unwrap(),
        Some(p) => params.signed_by(&key, &p.issuer).unwrap(),
    };
    Ca {
        der: cert.der().to_vec(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf with these EKUs (none: no EKU extension) and, so that it carries
/// other extensions besides, a SAN.
fn leaf(issuer: &Ca, ekus: Vec<Eku>) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["signer.example".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "signer");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = ekus;
    params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(1);
    params
        .signed_by(&key, &issuer.issuer)
        .unwrap()
        .der()
        .to_vec()
}

fn pki(root: &Ca, leaf_eku: LeafEku) -> VendorPki {
    VendorPki::new(vec![CertificateDer::from(root.der.clone())], leaf_eku)
}

fn check(leaf: &[u8], chain: &[Vec<u8>], pki: &VendorPki) -> Result<(), Reason> {
    verify_chain(leaf, chain, pki, SystemTime::now()).map_err(|f| f.reason)
}

#[test]
fn a_leaf_without_an_eku_extension_is_unrestricted_by_default() {
    let root = ca("root", vec![], None);
    let pki = pki(&root, LeafEku::default());
    assert_eq!(check(&leaf(&root, vec![]), &[], &pki), Ok(()));
    assert_eq!(
        check(&leaf(&root, vec![Eku::CodeSigning]), &[], &pki),
        Ok(())
    );
}

#[test]
fn a_leaf_eku_without_code_signing_is_refused() {
    let root = ca("root", vec![], None);
    for pki in [
        pki(&root, LeafEku::CodeSigningIfPresent),
        pki(&root, LeafEku::CodeSigningRequired),
    ] {
        let tls = leaf(&root, vec![Eku::ServerAuth, Eku::ClientAuth]);
        assert_eq!(check(&tls, &[], &pki), Err(Reason::UntrustedSigner));
    }
}

#[test]
fn an_intermediate_without_eku_is_unrestricted_and_one_whose_eku_lacks_code_signing_is_refused() {
    let root = ca("root", vec![], None);
    let pki = pki(&root, LeafEku::default());
    let open = ca("open", vec![], Some(&root));
    let signer = leaf(&open, vec![Eku::CodeSigning]);
    assert_eq!(
        check(&signer, std::slice::from_ref(&open.der), &pki),
        Ok(())
    );
    assert_eq!(
        check(&signer, &[], &pki),
        Err(Reason::UntrustedSigner),
        "the intermediate is needed"
    );
    let web = ca("web", vec![Eku::ServerAuth], Some(&root));
    let signer = leaf(&web, vec![Eku::CodeSigning]);
    assert_eq!(
        check(&signer, std::slice::from_ref(&web.der), &pki),
        Err(Reason::UntrustedSigner)
    );
    let signing = ca("signing", vec![Eku::CodeSigning], Some(&root));
    let signer = leaf(&signing, vec![]);
    assert_eq!(
        check(&signer, std::slice::from_ref(&signing.der), &pki),
        Ok(())
    );
}

#[test]
fn code_signing_required_refuses_a_leaf_without_the_extension() {
    let root = ca("root", vec![], None);
    let pki = pki(&root, LeafEku::CodeSigningRequired);
    assert_eq!(
        check(&leaf(&root, vec![]), &[], &pki),
        Err(Reason::UntrustedSigner)
    );
    assert_eq!(
        check(&leaf(&root, vec![Eku::CodeSigning]), &[], &pki),
        Ok(())
    );
    // An intermediate without EKU is still fine: the rule is about the leaf.
    let open = ca("open", vec![], Some(&root));
    let signer = leaf(&open, vec![Eku::CodeSigning]);
    assert_eq!(
        check(&signer, std::slice::from_ref(&open.der), &pki),
        Ok(())
    );
}

#[test]
fn no_roots_verify_nothing() {
    let root = ca("root", vec![], None);
    let signer = leaf(&root, vec![Eku::CodeSigning]);
    let empty = VendorPki::default();
    assert_eq!(check(&signer, &[], &empty), Err(Reason::UntrustedSigner));
    // Not even a chain that brings its own root as an intermediate.
    assert_eq!(
        check(&signer, std::slice::from_ref(&root.der), &empty),
        Err(Reason::UntrustedSigner)
    );
    let revoked = pki(&root, LeafEku::default()).retain(|_| false);
    assert_eq!(check(&signer, &[], &revoked), Err(Reason::UntrustedSigner));
}
