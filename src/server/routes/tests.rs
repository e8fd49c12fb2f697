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

fn lookup(n: &str) -> Option<&'static str> {
    match n {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => Some("docker.io"),
        "ghcr.io" => Some("ghcr.io"),
        _ => None,
    }
}

fn r(
    name: &str,
    ns: Option<&str>,
    default: Option<&'static str>,
) -> Result<(String, String), RoutingError> {
    route(name, ns, lookup, default.as_ref(), |u| *u == "docker.io")
        .map(|r| (r.upstream.to_string(), r.repo.to_string()))
}

#[test]
fn routes_by_ns_prefix_and_default_with_library_normalisation() {
    assert_eq!(
        r("library/nginx", Some("docker.io"), None),
        Ok(("docker.io".into(), "library/nginx".into()))
    );
    assert_eq!(
        r("nginx", Some("docker.io"), None),
        Ok(("docker.io".into(), "library/nginx".into()))
    );
    assert_eq!(
        r("ghcr.io/org/app", Some("ghcr.io"), None),
        Ok(("ghcr.io".into(), "org/app".into()))
    );
    assert_eq!(
        r("ghcr.io/org/app", None, Some("docker.io")),
        Ok(("ghcr.io".into(), "org/app".into()))
    );
    assert_eq!(
        r("docker.io/alpine", None, None),
        Ok(("docker.io".into(), "library/alpine".into()))
    );
    assert_eq!(
        r("alpine", None, Some("docker.io")),
        Ok(("docker.io".into(), "library/alpine".into()))
    );
    assert_eq!(
        r("org/app", Some("ghcr.io"), None),
        Ok(("ghcr.io".into(), "org/app".into()))
    );
}

#[test]
fn unknown_namespaces_never_become_hosts() {
    assert_eq!(
        r("x/y", Some("evil.example.com"), Some("docker.io")),
        Err(RoutingError::UnknownNamespace)
    );
    assert_eq!(
        r("evil.example.com/x", None, None),
        Err(RoutingError::NoUpstream)
    );
    assert_eq!(
        r("Bad/Name", None, Some("docker.io")),
        Err(RoutingError::InvalidName)
    );
}
