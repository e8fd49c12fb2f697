use super::*;

fn digest() -> String {
    format!("sha256:{}", "a".repeat(64))
}

#[test]
fn parses_every_read_endpoint() {
    assert_eq!(Route::parse("/v2/"), Ok(Route::Base));
    assert_eq!(Route::parse("/v2"), Ok(Route::Base));
    assert!(matches!(
        Route::parse("/v2/library/nginx/manifests/latest"),
        Ok(Route::Manifest { ref name, reference: Reference::Tag(_) }) if name == "library/nginx"
    ));
    assert!(matches!(
        Route::parse(&format!("/v2/a/b/c/manifests/{}", digest())),
        Ok(Route::Manifest { ref name, reference: Reference::Digest(_) }) if name == "a/b/c"
    ));
    assert!(matches!(
        Route::parse(&format!("/v2/a/blobs/{}", digest())),
        Ok(Route::Blob { .. })
    ));
    assert!(matches!(Route::parse("/v2/a/tags/list"), Ok(Route::Tags { ref name }) if name == "a"));
    assert!(matches!(
        Route::parse(&format!("/v2/a/referrers/{}", digest())),
        Ok(Route::Referrers { .. })
    ));
    assert!(matches!(
        Route::parse(&format!("/v2/a/manifests/sha256%3A{}", "a".repeat(64))),
        Ok(Route::Manifest {
            reference: Reference::Digest(_),
            ..
        })
    ));
}

#[test]
fn refuses_bad_paths_references_and_digests() {
    assert_eq!(Route::parse("/v1/a/manifests/x"), Err(RouteError::NotFound));
    assert_eq!(
        Route::parse("/v2/a/blobs/uploads/"),
        Err(RouteError::NotFound)
    );
    assert_eq!(Route::parse("/v2/a/blobs/uploads"), Err(RouteError::Digest));
    assert_eq!(
        Route::parse("/v2/a/manifests/bad:ref"),
        Err(RouteError::Reference)
    );
    assert_eq!(
        Route::parse("/v2/a/blobs/sha256:short"),
        Err(RouteError::Digest)
    );
    assert_eq!(Route::parse("/v2/manifests/x"), Err(RouteError::NotFound));
    assert_eq!(Route::parse("/v2/a/other/x"), Err(RouteError::NotFound));
}

#[test]
fn query_keeps_plus_literal_and_decodes_escapes() {
    let q = Query::parse(Some(
        "artifactType=application/vnd.dev.sigstore.bundle.v0.3+json&ns=docker.io&n=5&last=v%2B1",
    ));
    assert_eq!(
        q.artifact_type.as_deref(),
        Some("application/vnd.dev.sigstore.bundle.v0.3+json")
    );
    assert_eq!(q.ns.as_deref(), Some("docker.io"));
    assert_eq!(q.n.as_deref(), Some("5"));
    assert_eq!(q.last.as_deref(), Some("v+1"));
}
