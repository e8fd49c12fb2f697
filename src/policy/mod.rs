//! Policies: which rule applies to a repository (first match by glob, in
//! file order) and what it requires. Judging evidence against a rule is
//! [`crate::verify`]'s job; this module only finds the rule.

mod condition;
mod glob;

pub use condition::{CompileError, Condition};

pub use glob::Glob;

/// Whether a failed requirement denies (enforce) or is only recorded (audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// What a policy requires of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Nothing is allowed.
    Deny,
    /// Everything is allowed without verification (an explicit, named choice).
    AllowUnverified,
    /// Signatures from these authorities, as many as `require` says.
    Signatures {
        authorities: Vec<String>,
        require: Require,
        /// Children of a verified index must carry their own signatures.
        require_child_signatures: bool,
    },
}

/// As people read it: `deny`, `allow_unverified`, `signatures: any of
/// [acme]`, `2 of [a, b, c]`, with `, children signed` when required.
impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Deny => f.write_str("deny"),
            Rule::AllowUnverified => f.write_str("allow_unverified"),
            Rule::Signatures {
                authorities,
                require,
                require_child_signatures,
            } => {
                let how = match require {
                    Require::Any => "any".to_string(),
                    Require::All => "all".to_string(),
                    Require::AtLeast(n) => n.to_string(),
                };
                write!(f, "signatures: {how} of [{}]", authorities.join(", "))?;
                if *require_child_signatures {
                    f.write_str(", children signed")?;
                }
                Ok(())
            }
        }
    }
}

/// How many distinct authorities must have signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Require {
    Any,
    All,
    AtLeast(usize),
}

impl Require {
    /// Distinct authorities needed out of `listed`.
    pub fn needed(self, listed: usize) -> usize {
        match self {
            Require::Any => 1,
            Require::All => listed,
            Require::AtLeast(n) => n,
        }
    }
}

/// An in-toto attestation a policy requires, on top of its signatures.
#[derive(Debug, Clone)]
pub struct AttestationRequirement {
    /// Shown in denials, `portcullis verify` and the audit log.
    pub name: String,
    /// Compared exactly with the signed statement's `predicateType`.
    pub predicate_type: String,
    pub authorities: Vec<String>,
    pub require: Require,
    pub condition: Option<Condition>,
    /// How old the attested evidence may be (the predicate's own time, or
    /// the proven signing time when it has none).
    pub max_age: Option<std::time::Duration>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub patterns: Vec<Glob>,
    pub mode: Mode,
    pub rule: Rule,
    /// Required attestations (only with [`Rule::Signatures`]).
    pub attestations: Vec<AttestationRequirement>,
    /// `on_trust_unavailable = "allow"`: when the only problem is that an
    /// authority's trust material is unavailable, allow (and record it).
    pub trust_unavailable_allows: bool,
}

/// A risk acceptance: content of a repository (optionally one digest) that
/// may be served although its policy denies it, until `expires`.
#[derive(Debug, Clone)]
pub struct Exception {
    /// Shown in metrics, logs and the audit log (defaults to the ticket).
    pub name: String,
    pub pattern: Glob,
    /// A pinned digest; only a pinned exception admits an unsigned image.
    pub digest: Option<crate::oci::Digest>,
    pub expires: std::time::SystemTime,
    pub ticket: String,
    pub reason: String,
}

/// The configured policies in file order, and the exceptions.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: Vec<Policy>,
    exceptions: Vec<Exception>,
    clients: Vec<ClientScope>,
}

/// `[[client]]`: the only repositories a client identity may pull.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientScope {
    pub identity: String,
    pub repositories: Vec<Glob>,
}

impl PolicySet {
    pub fn new(policies: Vec<Policy>) -> Self {
        PolicySet {
            policies,
            exceptions: Vec::new(),
            clients: Vec::new(),
        }
    }

    pub fn with_clients(mut self, clients: Vec<ClientScope>) -> Self {
        self.clients = clients;
        self
    }

    pub fn clients(&self) -> &[ClientScope] {
        &self.clients
    }

    /// Whether `identity` may pull `upstream/repository`: yes for a client
    /// with no identity or an identity no `[[client]]` scopes; for a scoped
    /// one, only where one of its globs matches.
    pub fn client_may_pull(
        &self,
        identity: Option<&str>,
        upstream: &str,
        repository: &str,
    ) -> bool {
        let Some(scope) = identity.and_then(|id| self.clients.iter().find(|c| c.identity == id))
        else {
            return true;
        };
        let parts: Vec<&str> = upstream.split('/').chain(repository.split('/')).collect();
        scope.repositories.iter().any(|g| g.matches_parts(&parts))
    }

    pub fn with_exceptions(mut self, exceptions: Vec<Exception>) -> Self {
        self.exceptions = exceptions;
        self
    }

    pub fn exceptions(&self) -> &[Exception] {
        &self.exceptions
    }

    /// Exceptions whose scope covers `upstream/repository`.
    pub fn exceptions_for<'a>(
        &'a self,
        upstream: &str,
        repository: &str,
    ) -> impl Iterator<Item = &'a Exception> {
        let path = format!("{upstream}/{repository}");
        self.exceptions
            .iter()
            .filter(move |e| e.pattern.matches(&path))
    }

    /// The first policy matching `upstream/repository`, if any.
    pub fn find(&self, upstream: &str, repository: &str) -> Option<&Policy> {
        let parts: Vec<&str> = upstream.split('/').chain(repository.split('/')).collect();
        self.policies
            .iter()
            .find(|p| p.patterns.iter().any(|g| g.matches_parts(&parts)))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.policies.iter()
    }
}

#[cfg(test)]
mod rule_text_tests {
    use super::*;

    #[test]
    fn a_rule_reads_as_words_not_rust() {
        let sig = |require, children| Rule::Signatures {
            authorities: vec!["a".into(), "b".into()],
            require,
            require_child_signatures: children,
        };
        assert_eq!(Rule::Deny.to_string(), "deny");
        assert_eq!(Rule::AllowUnverified.to_string(), "allow_unverified");
        assert_eq!(
            sig(Require::Any, false).to_string(),
            "signatures: any of [a, b]"
        );
        assert_eq!(
            sig(Require::AtLeast(2), true).to_string(),
            "signatures: 2 of [a, b], children signed"
        );
        assert_eq!(
            sig(Require::All, false).to_string(),
            "signatures: all of [a, b]"
        );
    }
}
