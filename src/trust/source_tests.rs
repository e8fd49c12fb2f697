//! What a URL source's document may hold: only material verification can
//! use is adopted.

use super::*;

/// Parses, but RSA keys outside 2048–8192 bits never verify.
const RSA_1024: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDFqQ2LY++OJf0Mem3JdFaGBaje
wCwsfvARQd5TkikfkHZqgSNcCH7UhPSe5WSwxT10tWVqno6naqCcDxXe754ymNep
6qtDzfNN7+Lg3fu6NOI6Mm1qA8syO0W+rxJey+wtcWas8lkXcP4QsU0owdxme71l
AmcVu86fk4aia6NuAwIDAQAB
-----END PUBLIC KEY-----
";

/// A P-521 key: a curve verification does not support.
const P521: &str = "-----BEGIN PUBLIC KEY-----
MIGbMBAGByqGSM49AgEGBSuBBAAjA4GGAAQA+WGV9tThJfrSALZPDjeh4SMOkAmq
dIw4oZd+9HvPSQ9FkWO4elgbcdEhH8B6Fefv0nZrPW34U2eq6KCEkiHbBBIBKrKb
Ev3VQ4z9jKss8HrOqepY06fzvM3iDtYbkaKY8AjtpgWDKlW7n4VDawm4TXw1R0zT
kUqojLJKXBgWKsC3CO0=
-----END PUBLIC KEY-----
";

/// A P-256 key with a compressed point, which verification refuses.
const P256_COMPRESSED: &str = "-----BEGIN PUBLIC KEY-----
MDkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDIgAC+kmxnq1c4WPJYXbFfhXtaqEm/4zS
KeH2GhVdv75iLAo=
-----END PUBLIC KEY-----
";

fn good_key() -> String {
    rcgen::KeyPair::generate().unwrap().public_key_pem()
}

fn ca(alg: &'static rcgen::SignatureAlgorithm) -> String {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

#[test]
fn a_document_with_a_key_verification_never_accepts_is_refused_whole() {
    for bad in [RSA_1024, P521, P256_COMPRESSED] {
        let document = format!("{}{bad}", good_key());
        match parse(SourceKind::Keys, document.as_bytes()) {
            Err(ParseError::Unusable(why)) => assert!(why.contains("key"), "{why}"),
            Err(e) => panic!("refused as malformed, not unusable: {e}"),
            Ok(_) => panic!("adopted an unusable key: {bad}"),
        }
    }
    let e = parse(SourceKind::Keys, RSA_1024.as_bytes()).err();
    assert!(
        matches!(&e, Some(ParseError::Unusable(m)) if m.contains("RSA key size 1024 bits")),
        "{e:?}"
    );
    assert!(parse(SourceKind::Keys, good_key().as_bytes()).is_ok());
}

#[test]
fn a_ca_bundle_with_a_certificate_verification_never_accepts_is_refused_whole() {
    let document = format!(
        "{}{}",
        ca(&rcgen::PKCS_ECDSA_P256_SHA256),
        ca(&rcgen::PKCS_ECDSA_P521_SHA512)
    );
    match parse(SourceKind::CaRoots, document.as_bytes()) {
        Err(ParseError::Unusable(why)) => assert!(why.contains("certificate key"), "{why}"),
        Err(e) => panic!("refused as malformed, not unusable: {e}"),
        Ok(_) => panic!("adopted a P-521 CA"),
    }
    assert!(
        parse(
            SourceKind::CaRoots,
            ca(&rcgen::PKCS_ECDSA_P384_SHA384).as_bytes()
        )
        .is_ok()
    );
}

#[test]
fn an_unusable_document_is_a_refusal_and_a_malformed_one_a_failure() {
    let refused = FetchError::from(parse(SourceKind::Keys, RSA_1024.as_bytes()).err().unwrap());
    assert!(matches!(refused, FetchError::Refused(Refusal::Unusable(_))));
    let failed = FetchError::from(parse(SourceKind::Keys, b"not pem").err().unwrap());
    assert!(matches!(failed, FetchError::Failed(_)));
}

#[test]
fn a_source_is_fresh_until_max_stale_after_it_was_last_verified_and_stale_after_that() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let f = Freshness {
        what: "its source https://vendor.example/keys".into(),
        verified: Verified::new(t),
        max_stale: Duration::from_secs(60),
    };
    assert_eq!(f.deadline(), t + Duration::from_secs(60));
    assert!(
        f.check(t + Duration::from_secs(60)).is_ok(),
        "fresh at the deadline"
    );
    let e = f.check(t + Duration::from_secs(61)).unwrap_err();
    assert_eq!(e.verified, t);
    assert_eq!(
        e.to_string(),
        "its source https://vendor.example/keys was last verified at 1970-01-12T13:46:40Z, longer ago than max_stale (1m)"
    );
}
