//! Validating `[[policy]]`, `[[condition]]` and `[[exception]]` sections.

use super::validate::Validator;
use super::*;

impl Validator<'_> {
    pub(super) fn require(
        &mut self,
        path: &str,
        raw: Option<&raw::RawRequire>,
        listed: usize,
    ) -> Require {
        let require = match raw {
            None => Require::Any,
            Some(raw::RawRequire::Word(w)) if w == "any" => Require::Any,
            Some(raw::RawRequire::Word(w)) if w == "all" => Require::All,
            Some(raw::RawRequire::Count(n)) if *n >= 1 => {
                Require::AtLeast(usize::try_from(*n).unwrap_or(usize::MAX))
            }
            Some(_) => {
                self.problem(
                    path,
                    "must be \"any\", \"all\" or a number of authorities (at least 1)",
                );
                Require::Any
            }
        };
        if require.needed(listed) > listed {
            self.problem(
                path,
                format!(
                    "requires {} authorities but only {listed} are listed",
                    require.needed(listed)
                ),
            );
        }
        require
    }

    /// `[[condition]]`s by name, each compiled once (`None`: it did not
    /// compile, and that is already reported).
    pub(super) fn conditions(
        &mut self,
        raw: &[raw::RawCondition],
    ) -> HashMap<String, Option<Condition>> {
        let mut out = HashMap::new();
        for (i, c) in raw.iter().enumerate() {
            if c.name.is_empty() {
                self.problem(format!("condition[{i}].name"), "must not be empty");
            }
            let compiled = self.check(
                &format!("condition[{i}].expr"),
                Condition::compile(&c.name, &c.expr),
            );
            if out.contains_key(&c.name) {
                self.problem(
                    format!("condition[{i}].name"),
                    format!("`{}` is used twice", c.name),
                );
            } else {
                out.insert(c.name.clone(), compiled);
            }
        }
        out
    }

    /// `[[client]]`: each identity once, with at least one repository
    /// glob (a scope that names none would be a client that sees nothing:
    /// written as that, it is more likely a mistake).
    /// A scope must name an identity requests can carry: with
    /// `server.auth`, a token identity or user name; without it, a client
    /// certificate's `cert:<16 lowercase hex>`. One that cannot match
    /// would leave that client unscoped while the config reads as scoped.
    pub(super) fn clients(
        &mut self,
        raw: &[raw::RawClient],
        (auth, client_ca): (bool, bool),
    ) -> Vec<crate::policy::ClientScope> {
        let mut out: Vec<crate::policy::ClientScope> = Vec::new();
        if !raw.is_empty() && !auth && !client_ca {
            self.problem(
                "client",
                "scopes need client identities: set server.auth (tokens or htpasswd) or server.client_ca",
            );
        }
        for (i, c) in raw.iter().enumerate() {
            let key = |field: &str| format!("client[{i}].{field}");
            let id = c.identity.as_str();
            if id.trim().is_empty() || id.trim() != id {
                self.problem(key("identity"), "must be a name without surrounding spaces");
                continue;
            }
            if let Some(fingerprint) = id.strip_prefix("cert:") {
                let hex = fingerprint.len() == 16
                    && fingerprint
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !hex {
                    self.problem(
                        key("identity"),
                        "a certificate identity is cert: and the first 16 lowercase hex digits of its SHA-256 fingerprint",
                    );
                    continue;
                }
                if auth {
                    self.problem(
                        key("identity"),
                        "with server.auth on, requests are identified by token or user, never by certificate",
                    );
                    continue;
                }
            }
            if out.iter().any(|o| o.identity == c.identity) {
                self.problem(key("identity"), format!("`{}` is scoped twice", c.identity));
                continue;
            }
            if c.repositories.is_empty() {
                self.problem(
                    key("repositories"),
                    "names no repository; list what this identity may pull (remove the [[client]] to leave it unscoped)",
                );
                continue;
            }
            let globs: Vec<Glob> = c
                .repositories
                .iter()
                .enumerate()
                .filter_map(|(j, g)| {
                    self.check(&format!("client[{i}].repositories[{j}]"), g.parse::<Glob>())
                })
                .collect();
            if globs.len() == c.repositories.len() {
                out.push(crate::policy::ClientScope {
                    identity: c.identity.clone(),
                    repositories: globs,
                });
            }
        }
        out
    }

    pub(super) fn exceptions(&mut self, raw: &[raw::RawException]) -> Vec<Exception> {
        let mut out = Vec::new();
        for (i, e) in raw.iter().enumerate() {
            let key = |field: &str| format!("exception[{i}].{field}");
            let pattern = self.check(&key("match"), e.pattern.parse::<Glob>());
            let digest = match &e.digest {
                None => Some(None),
                Some(d) => self
                    .check(
                        &key("digest"),
                        d.parse::<crate::oci::Digest>()
                            .map_err(|_| format!("`{d}` is not a digest like \"sha256:<64 hex>\"")),
                    )
                    .map(Some),
            };
            let expires = self.check(
                &key("expires"),
                humantime::parse_rfc3339_weak(&e.expires).map_err(|_| {
                    format!(
                        "`{}` is not a time like \"2026-12-31T00:00:00Z\"",
                        e.expires
                    )
                }),
            );
            for (field, value) in [("ticket", &e.ticket), ("reason", &e.reason)] {
                if value.trim().is_empty() {
                    self.problem(key(field), "must not be empty: an exception is justified");
                }
            }
            if let (Some(pattern), Some(digest), Some(expires)) = (pattern, digest, expires) {
                out.push(Exception {
                    name: e.name.clone().unwrap_or_else(|| e.ticket.clone()),
                    pattern,
                    digest,
                    expires,
                    ticket: e.ticket.clone(),
                    reason: e.reason.clone(),
                });
            }
        }
        out
    }

    pub(super) fn authority_names(
        &mut self,
        path: &str,
        listed: &[String],
        known: &HashSet<String>,
    ) {
        let mut seen = HashSet::new();
        for (j, a) in listed.iter().enumerate() {
            if !known.contains(a) {
                self.problem(
                    format!("{path}[{j}]"),
                    format!("`{a}` is not the name of any [[authority]]"),
                );
            } else if !seen.insert(a.as_str()) {
                self.problem(
                    format!("{path}[{j}]"),
                    format!("`{a}` is listed twice; a threshold counts distinct authorities"),
                );
            }
        }
        if listed.is_empty() {
            self.problem(path, "needs at least one authority");
        }
    }

    pub(super) fn attestations(
        &mut self,
        i: usize,
        raw: &[raw::RawAttestation],
        authorities: &HashSet<String>,
        conditions: &HashMap<String, Option<Condition>>,
    ) -> Vec<AttestationRequirement> {
        let mut out = Vec::new();
        for (j, a) in raw.iter().enumerate() {
            let key = |field: &str| format!("policy[{i}].attestations[{j}].{field}");
            if a.predicate_type.is_empty() {
                self.problem(key("predicate_type"), "must not be empty");
            }
            self.authority_names(&key("authorities"), &a.authorities, authorities);
            let require = self.require(&key("require"), a.require.as_ref(), a.authorities.len());
            let condition = match &a.condition {
                None => None,
                Some(name) => match conditions.get(name) {
                    Some(c) => c.clone(),
                    // Not a [[condition]] name: an inline CEL expression.
                    None => {
                        let label = a.name.clone().unwrap_or_else(|| a.predicate_type.clone());
                        self.check(
                            &key("condition"),
                            Condition::compile(&label, name).map_err(|e| {
                                format!("is neither the name of a [[condition]] nor a valid condition: it {e}")
                            }),
                        )
                    }
                },
            };
            let max_age = a
                .max_age
                .as_deref()
                .and_then(|m| self.check(&key("max_age"), parse_duration(m)));
            out.push(AttestationRequirement {
                name: a.name.clone().unwrap_or_else(|| a.predicate_type.clone()),
                predicate_type: a.predicate_type.clone(),
                authorities: a.authorities.clone(),
                require,
                condition,
                max_age,
            });
        }
        out
    }

    pub(super) fn policies(
        &mut self,
        raw: &[raw::RawPolicy],
        authorities: &HashSet<String>,
        conditions: &HashMap<String, Option<Condition>>,
    ) -> PolicySet {
        let mut policies = Vec::new();
        for (i, p) in raw.iter().enumerate() {
            let key = |field: &str| format!("policy[{i}].{field}");
            let patterns: Vec<Glob> = p
                .patterns
                .iter()
                .enumerate()
                .filter_map(|(j, g)| {
                    self.check(&format!("policy[{i}].match[{j}]"), g.parse::<Glob>())
                })
                .collect();
            if p.patterns.is_empty() {
                self.problem(key("match"), "needs at least one pattern");
            }
            let mode = match p.mode.as_deref() {
                None | Some("enforce") => Mode::Enforce,
                Some("audit") => Mode::Audit,
                Some(other) => {
                    self.problem(
                        key("mode"),
                        format!("`{other}` is not \"enforce\" or \"audit\""),
                    );
                    Mode::Enforce
                }
            };
            let chosen = usize::from(p.deny)
                + usize::from(p.allow_unverified)
                + usize::from(p.signatures.is_some());
            if chosen != 1 {
                self.problem(
                    key("signatures"),
                    "a policy needs exactly one of `signatures = {…}`, `deny = true` or `allow_unverified = true`",
                );
            }
            let rule = match (&p.signatures, p.deny, p.allow_unverified) {
                (Some(sig), _, _) => {
                    self.authority_names(
                        &key("signatures.authorities"),
                        &sig.authorities,
                        authorities,
                    );
                    let require = self.require(
                        &key("signatures.require"),
                        sig.require.as_ref(),
                        sig.authorities.len(),
                    );
                    Rule::Signatures {
                        authorities: sig.authorities.clone(),
                        require,
                        require_child_signatures: p.require_child_signatures,
                    }
                }
                (None, false, true) => Rule::AllowUnverified,
                _ => Rule::Deny,
            };
            if !p.attestations.is_empty() && p.signatures.is_none() {
                self.problem(
                    key("attestations"),
                    "attestations are required on top of `signatures = {…}`; add a signatures requirement",
                );
            }
            let attestations = self.attestations(i, &p.attestations, authorities, conditions);
            let trust_unavailable_allows = match p.on_trust_unavailable.as_deref() {
                None | Some("deny") => false,
                Some("allow") => true,
                Some(other) => {
                    self.problem(
                        key("on_trust_unavailable"),
                        format!("`{other}` is not \"deny\" or \"allow\""),
                    );
                    false
                }
            };
            policies.push(Policy {
                name: p.name.clone(),
                patterns,
                mode,
                rule,
                attestations,
                trust_unavailable_allows,
            });
        }
        PolicySet::new(policies)
    }
}
