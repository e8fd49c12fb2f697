//! Repository names, tags and references, parsed by the distribution-spec grammar.

use std::fmt;
use std::str::FromStr;

use super::digest::{Digest, DigestError};

/// Longest repository name accepted (distribution caps `host/name` at 255).
pub const MAX_NAME_LEN: usize = 255;

/// A repository name such as `library/nginx`, valid by the spec grammar
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(Box<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid repository name")]
pub struct NameError;

impl RepositoryName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Number of `/`-separated components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// This name with `prefix/` in front, if the result is still valid.
    pub fn prefixed(&self, prefix: &str) -> Result<RepositoryName, NameError> {
        format!("{prefix}/{}", self.0).parse()
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: alphanumeric runs joined by `.`, `_`, `__` or `-+`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && is_alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' if b.get(i + 1) == Some(&b'_') => i += 2,
            b'_' => i += 1,
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

impl FromStr for RepositoryName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(valid_component) {
            return Err(NameError);
        }
        Ok(RepositoryName(s.into()))
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(Box<str>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid tag")]
pub struct TagError;

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = TagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_');
        let rest_ok = b
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || b.len() > 128 {
            return Err(TagError);
        }
        Ok(Tag(s.into()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a manifest request names: a tag or a digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error(transparent)]
    Tag(#[from] TagError),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// The name of a configured upstream: the key used by `?ns=` and path prefixes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamName(Box<str>);

impl UpstreamName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UpstreamName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'.' | b'-' | b':' | b'_')
            });
        if ok {
            Ok(UpstreamName(s.into()))
        } else {
            Err(format!(
                "`{s}` is not an upstream name (lowercase letters, digits, '.', '-', '_', ':')"
            ))
        }
    }
}

impl fmt::Display for UpstreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UpstreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_spec_examples() {
        for ok in [
            "library/nginx",
            "a",
            "my-org/my_app/sub.part",
            "a__b",
            "a---b/c.d",
            "0/1",
        ] {
            assert!(ok.parse::<RepositoryName>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_uppercase_traversal_empty_components_and_bad_separators() {
        for bad in [
            "",
            "Library/nginx",
            "../etc",
            "a//b",
            "/a",
            "a/",
            "a___b",
            "a..b",
            "-a",
            "a-",
            "a_.b",
            "a b",
            "a%2fb",
        ] {
            assert!(bad.parse::<RepositoryName>().is_err(), "{bad}");
        }
        assert!("a".repeat(256).parse::<RepositoryName>().is_err());
        assert!("a".repeat(255).parse::<RepositoryName>().is_ok());
    }

    #[test]
    fn tags_follow_the_grammar_and_length_limit() {
        assert!("latest".parse::<Tag>().is_ok());
        assert!("_v1.2-rc".parse::<Tag>().is_ok());
        assert!(".hidden".parse::<Tag>().is_err());
        assert!("-x".parse::<Tag>().is_err());
        assert!("a/b".parse::<Tag>().is_err());
        assert!("".parse::<Tag>().is_err());
        assert!("a".repeat(128).parse::<Tag>().is_ok());
        assert!("a".repeat(129).parse::<Tag>().is_err());
    }

    #[test]
    fn reference_is_digest_when_it_has_a_colon() {
        let d = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!(matches!("v1".parse::<Reference>(), Ok(Reference::Tag(_))));
        assert!("sha256:xyz".parse::<Reference>().is_err());
    }

    fn reference_regex_matches(s: &str) -> bool {
        let component = "[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*";
        let re = regex::Regex::new(&format!("^{component}(/{component})*$")).unwrap();
        re.is_match(s) && s.len() <= MAX_NAME_LEN
    }

    proptest! {
        #[test]
        fn name_parser_agrees_with_spec_regex(s in "[a-z0-9._/-]{0,40}") {
            prop_assert_eq!(s.parse::<RepositoryName>().is_ok(), reference_regex_matches(&s));
        }

        #[test]
        fn tag_parser_agrees_with_spec_regex(s in "[a-zA-Z0-9._/:-]{0,130}") {
            let re = regex::Regex::new("^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").unwrap();
            prop_assert_eq!(s.parse::<Tag>().is_ok(), re.is_match(&s));
        }
    }
}

/// Splits an image reference (`host/repo[:tag][@digest]`) into its name and
/// reference; a missing tag means `latest`.
pub fn split_image(image: &str) -> Result<(&str, Reference), ReferenceError> {
    if let Some((name, digest)) = image.split_once('@') {
        return Ok((name, Reference::Digest(digest.parse()?)));
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => Ok((
            &image[..last_slash + i],
            Reference::Tag(image[last_slash + i + 1..].parse()?),
        )),
        None => Ok((image, Reference::Tag(Tag("latest".into())))),
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;

    #[test]
    fn splits_tags_digests_and_ports() {
        let (n, r) = split_image("registry.test:5000/team/app:v1").unwrap();
        assert_eq!(
            (n, r.to_string()),
            ("registry.test:5000/team/app", "v1".to_string())
        );
        let (n, r) = split_image("docker.io/library/nginx").unwrap();
        assert_eq!(
            (n, r.to_string()),
            ("docker.io/library/nginx", "latest".to_string())
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let image = format!("ghcr.io/a/b@{d}");
        let (n, r) = split_image(&image).unwrap();
        assert_eq!((n, r.to_string()), ("ghcr.io/a/b", d));
        assert!(split_image("a/b:bad tag").is_err());
    }
}
