//! Who may sign keyless: a certificate SAN and its OIDC issuer.

/// A certificate identity: the SAN, exactly or by a regex that must match it
/// whole, and the OIDC issuer, exactly.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: String,
    pub subject: SubjectMatch,
}

#[derive(Debug, Clone)]
pub enum SubjectMatch {
    Exact(String),
    /// Compiled from `^(?:…)$`, so it always matches the whole SAN.
    Regex(regex::Regex),
}

/// The subject as written: exact, or `matching <regex>`.
impl std::fmt::Display for SubjectMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubjectMatch::Exact(s) => f.write_str(s),
            SubjectMatch::Regex(r) => write!(f, "matching {}", r.as_str()),
        }
    }
}

impl SubjectMatch {
    /// A full-match regex; an invalid or oversized pattern is an error.
    pub fn regex(pattern: &str) -> Result<SubjectMatch, String> {
        regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .build()
            .map(SubjectMatch::Regex)
            .map_err(|e| format!("invalid regex: {e}"))
    }

    pub fn matches(&self, san: &str) -> bool {
        match self {
            SubjectMatch::Exact(s) => s == san,
            SubjectMatch::Regex(r) => r.is_match(san),
        }
    }
}
