//! Repository globs: `registry/repo/**`. Segments are split on `/`; `*`
//! matches any run of characters inside one segment, a whole-segment `**`
//! matches any number of segments (including none).

use std::fmt;
use std::str::FromStr;

#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    text: Box<str>,
    segments: Vec<Segment>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Segment {
    Any,
    Pattern(Box<str>),
}

impl FromStr for Glob {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.starts_with('/') || s.ends_with('/') || s.contains("//") {
            return Err(format!("`{s}` is not a pattern like \"docker.io/acme/**\""));
        }
        let segments = s
            .split('/')
            .map(|seg| match seg {
                "**" => Ok(Segment::Any),
                _ if seg.contains("**") => Err(format!("`{s}`: `**` must be a whole segment")),
                _ => Ok(Segment::Pattern(seg.into())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Glob {
            text: s.into(),
            segments,
        })
    }
}

impl Glob {
    /// Whether `path` (for example `docker.io/library/nginx`) matches.
    pub fn matches(&self, path: &str) -> bool {
        // Paths are short: split on the stack, without allocating.
        const INLINE: usize = 16;
        let mut inline = [""; INLINE];
        let mut n = 0;
        for part in path.split('/') {
            if n == INLINE {
                let parts: Vec<&str> = path.split('/').collect();
                return self.matches_parts(&parts);
            }
            inline[n] = part;
            n += 1;
        }
        self.matches_parts(&inline[..n])
    }

    /// As [`Glob::matches`], for a path already split at `/` (to match one
    /// path against many globs).
    pub fn matches_parts(&self, parts: &[&str]) -> bool {
        match_segments(&self.segments, parts)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn match_segments(pattern: &[Segment], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((Segment::Any, rest)) => {
            (0..=parts.len()).any(|skip| match_segments(rest, &parts[skip..]))
        }
        Some((Segment::Pattern(p), rest)) => match parts.split_first() {
            Some((first, tail)) => {
                match_wildcard(p.as_bytes(), first.as_bytes()) && match_segments(rest, tail)
            }
            None => false,
        },
    }
}

/// `*` matches any run of bytes; everything else is literal.
fn match_wildcard(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn g(s: &str) -> Glob {
        s.parse().unwrap()
    }

    #[test]
    fn double_star_matches_any_depth_including_none() {
        let p = g("docker.io/acme/**");
        assert!(p.matches("docker.io/acme/app"));
        assert!(p.matches("docker.io/acme/team/app"));
        assert!(p.matches("docker.io/acme"));
        assert!(!p.matches("docker.io/acmecorp/app"));
        assert!(!p.matches("ghcr.io/acme/app"));
        assert!(g("**").matches("anything/at/all"));
    }

    #[test]
    fn single_star_stays_inside_one_segment() {
        let p = g("docker.io/*/nginx");
        assert!(p.matches("docker.io/library/nginx"));
        assert!(!p.matches("docker.io/a/b/nginx"));
        assert!(g("ghcr.io/acme/app-*").matches("ghcr.io/acme/app-web"));
        assert!(!g("ghcr.io/acme/app-*").matches("ghcr.io/acme/app-web/x"));
    }

    #[test]
    fn paths_deeper_than_the_inline_split_match_the_same() {
        let deep = (0..40)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join("/");
        assert!(g("s0/**").matches(&deep));
        assert!(g(&deep).matches(&deep));
        assert!(!g(&deep).matches(&format!("{deep}/x")));
        assert!(g("s0/*/s2/**").matches(&deep));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in ["", "/a", "a/", "a//b", "a/b**"] {
            assert!(bad.parse::<Glob>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn a_literal_pattern_matches_exactly_itself(a in "[a-z]{1,8}(/[a-z]{1,8}){0,3}", b in "[a-z]{1,8}(/[a-z]{1,8}){0,3}") {
            let p = g(&a);
            prop_assert!(p.matches(&a));
            prop_assert_eq!(p.matches(&b), a == b);
        }

        #[test]
        fn prefix_double_star_matches_every_extension(a in "[a-z]{1,8}(/[a-z]{1,8}){0,2}", tail in "(/[a-z]{1,8}){0,3}") {
            let p = g(&format!("{a}/**"));
            let path = format!("{a}{tail}");
            prop_assert!(p.matches(&path));
        }
    }
}
