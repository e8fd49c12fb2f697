//! Request paths and queries, parsed into typed routes before anything else
//! happens. Which upstream a repository goes to is
//! [`crate::upstream::Upstreams::route`]'s job.

use percent_encoding::percent_decode_str;

use crate::oci::{Digest, Reference};

/// What a `/v2/…` path asks for, with the repository still unrouted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Base,
    Manifest { name: String, reference: Reference },
    Blob { name: String, digest: Digest },
    Tags { name: String },
    Referrers { name: String, digest: Digest },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("not a registry API path")]
    NotFound,
    #[error("invalid reference")]
    Reference,
    #[error("invalid digest")]
    Digest,
}

impl Route {
    pub fn endpoint(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Manifest { .. } => "manifest",
            Route::Blob { .. } => "blob",
            Route::Tags { .. } => "tags",
            Route::Referrers { .. } => "referrers",
        }
    }

    pub fn parse(path: &str) -> Result<Route, RouteError> {
        let rest = path.strip_prefix("/v2").ok_or(RouteError::NotFound)?;
        if rest.is_empty() || rest == "/" {
            return Ok(Route::Base);
        }
        let rest = rest.strip_prefix('/').ok_or(RouteError::NotFound)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let n = parts.len();
        if n < 3 {
            return Err(RouteError::NotFound);
        }
        let name = |k: usize| parts[..n - k].join("/");
        let last = decode(parts[n - 1])?;
        match (parts[n - 2], parts[n - 1]) {
            ("manifests", _) => Ok(Route::Manifest {
                name: name(2),
                reference: last.parse().map_err(|_| RouteError::Reference)?,
            }),
            ("blobs", _) => Ok(Route::Blob {
                name: name(2),
                digest: last.parse().map_err(|_| RouteError::Digest)?,
            }),
            ("referrers", _) => Ok(Route::Referrers {
                name: name(2),
                digest: last.parse().map_err(|_| RouteError::Digest)?,
            }),
            ("tags", "list") => Ok(Route::Tags { name: name(2) }),
            _ => Err(RouteError::NotFound),
        }
    }
}

fn decode(s: &str) -> Result<String, RouteError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| RouteError::Reference)
}

/// A request's query parameters. Percent-escapes are decoded; `+` stays a
/// literal plus (media types such as `…bundle.v0.3+json` contain one).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query {
    pub ns: Option<String>,
    pub n: Option<String>,
    pub last: Option<String>,
    pub artifact_type: Option<String>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let mut q = Query::default();
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode_str(v).decode_utf8_lossy().into_owned();
            match k {
                "ns" => q.ns = Some(v),
                "n" => q.n = Some(v),
                "last" => q.last = Some(v),
                "artifactType" => q.artifact_type = Some(v),
                _ => {}
            }
        }
        q
    }
}

#[cfg(test)]
mod tests;
