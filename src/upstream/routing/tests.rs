use super::*;

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
        Err(RoutingError::UnknownRegistry)
    );
    assert_eq!(
        r("Bad/Name", None, Some("docker.io")),
        Err(RoutingError::InvalidName)
    );
}

#[test]
fn an_unconfigured_registry_prefix_is_refused_not_taken_as_a_repository_on_the_default() {
    for name in [
        "nosuch.io/x",
        "gchr.io/org/app",
        "localhost/x",
        "host:5000/x",
    ] {
        assert_eq!(
            r(name, None, Some("docker.io")),
            Err(RoutingError::UnknownRegistry),
            "{name}"
        );
    }
    // Docker Hub namespaces hold no dot: they still go to the default.
    assert_eq!(
        r("team/app", None, Some("docker.io")),
        Ok(("docker.io".into(), "team/app".into()))
    );
    assert_eq!(
        r("ghcr.io/org/app", None, Some("docker.io")),
        Ok(("ghcr.io".into(), "org/app".into()))
    );
}
