//! Validating `[[authority]]` sections: their kind and material, trusted
//! roots (embedded, file or TUF), and TUF repositories shared between
//! authorities.

use super::validate::Validator;
use super::*;

impl Validator<'_> {
    pub(super) fn tuf(
        &mut self,
        path: &str,
        raw: &raw::RawTuf,
        cache_dir: &Path,
    ) -> Option<TufSource> {
        let url = self.check(
            &format!("{path}.tuf"),
            reqwest::Url::parse(&raw.tuf)
                .map_err(|e| format!("`{}` is not a URL: {e}", raw.tuf))
                .and_then(|u| match u.scheme() {
                    "https" => Ok(u),
                    _ => Err("a TUF repository is fetched over https only".into()),
                }),
        )?;
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(url.as_str().trim_end_matches('/').as_bytes());
        Some(TufSource {
            root: raw.root.as_deref().map(|p| self.path(p)),
            refresh: self.duration(
                &format!("{path}.refresh"),
                raw.refresh.as_deref(),
                Duration::from_secs(6 * 3600),
            ),
            max_stale: self.duration(
                &format!("{path}.max_stale"),
                raw.max_stale.as_deref(),
                Duration::from_secs(7 * 24 * 3600),
            ),
            ca_file: raw.ca_file.as_deref().map(|p| self.path(p)),
            cache_dir: cache_dir.join("tuf").join(hex::encode(&digest[..8])),
            url,
        })
    }

    /// Authorities naming one TUF repository share its one refresh, its
    /// verified state and its cache, so they must agree on everything that
    /// decides what that refresh trusts and how it runs: the initial `root`,
    /// the `ca_file` and the `refresh` interval (and spell the URL the same
    /// way). Each may have its own `max_stale`. A disagreement is reported
    /// at the later authority's key, naming the earlier one's.
    pub(super) fn shared_tuf_repositories(&mut self, authorities: &[(usize, AuthorityConfig)]) {
        let mut first: HashMap<String, (usize, &TufSource)> = HashMap::new();
        for (i, a) in authorities {
            let Some(TrustedRootSource::Tuf(t)) = &a.trusted_root else {
                continue;
            };
            let repository = t.url.as_str().trim_end_matches('/').to_string();
            let Some((j, f)) = first.get(&repository).copied() else {
                first.insert(repository, (*i, t));
                continue;
            };
            for (field, same) in [
                ("tuf", f.url == t.url),
                ("root", f.root == t.root),
                ("ca_file", f.ca_file == t.ca_file),
                ("refresh", f.refresh == t.refresh),
            ] {
                if !same {
                    self.problem(
                        format!("authority[{i}].trusted_root.{field}"),
                        format!(
                            "differs from authority[{j}].trusted_root.{field}, which names the same TUF repository: \
                             authorities sharing a repository share its refresh, so `tuf`, `root`, `ca_file` and `refresh` must be the same"
                        ),
                    );
                }
            }
        }
    }

    pub(super) fn authority(
        &mut self,
        i: usize,
        raw: &raw::RawAuthority,
        cache_dir: &Path,
    ) -> Option<AuthorityConfig> {
        let key = |field: &str| format!("authority[{i}].{field}");
        if raw.name.is_empty() {
            self.problem(key("name"), "must not be empty");
        }
        if raw.name.starts_with("tuf:") {
            // Trust fetched for TUF repositories is kept under `tuf:<url>`.
            self.problem(key("name"), "must not start with `tuf:`");
        }
        let kinds = usize::from(!raw.keys.is_empty())
            + usize::from(!raw.ca_roots.is_empty())
            + usize::from(raw.keyless.is_some())
            + usize::from(raw.source.is_some());
        if kinds != 1 {
            self.problem(
                key("keys"),
                "an authority has exactly one of `keys`, `ca_roots`, `keyless` or `source`",
            );
            return None;
        }
        self.revocations(i, raw);
        let kind = if let Some(src) = &raw.source {
            self.source(&key("source"), src)?
        } else if !raw.keys.is_empty() {
            AuthorityKind::Keys(raw.keys.iter().map(|p| self.pem(p)).collect())
        } else if !raw.ca_roots.is_empty() {
            AuthorityKind::CaRoots(raw.ca_roots.iter().map(|p| self.pem(p)).collect())
        } else {
            self.keyless(&key("keyless"), raw.keyless.as_ref()?)?
        };
        let trusted_root =
            self.trusted_root(&key("trusted_root"), raw.trusted_root.as_ref(), cache_dir);
        let keyless = matches!(kind, AuthorityKind::Keyless { .. });
        let require_tlog = raw.require_tlog.unwrap_or(keyless);
        if (keyless || require_tlog) && trusted_root.is_none() {
            self.problem(
                key("trusted_root"),
                "keyless authorities and `require_tlog = true` need a trusted root (\"sigstore-public-good\" or a trusted_root.json path)",
            );
        }
        let require_code_signing_eku = raw.require_code_signing_eku.unwrap_or(false);
        let pki = matches!(kind, AuthorityKind::CaRoots(_))
            || matches!(&kind, AuthorityKind::Source(s) if s.kind == SourceKind::CaRoots);
        if raw.require_code_signing_eku.is_some() && !pki {
            self.problem(
                key("require_code_signing_eku"),
                "applies to certificates of a vendor PKI: a `ca_roots` authority or a `ca_roots` source",
            );
        }
        Some(AuthorityConfig {
            name: raw.name.clone(),
            kind,
            trusted_root,
            require_tlog,
            require_sct: raw.require_sct.unwrap_or(true),
            require_code_signing_eku,
            revoked: raw.revoked.iter().map(|r| r.to_ascii_lowercase()).collect(),
            revoked_serials: raw
                .revoked_serials
                .iter()
                .filter_map(|s| crate::material::normalize_serial(s))
                .collect(),
        })
    }

    /// `revoked` fingerprints and `revoked_serials`, checked.
    fn revocations(&mut self, i: usize, raw: &raw::RawAuthority) {
        for (j, r) in raw.revoked.iter().enumerate() {
            if r.len() != 64 || !r.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.problem(
                    format!("authority[{i}].revoked[{j}]"),
                    "must be the SHA-256 fingerprint (64 hex digits) of a key's SPKI or a CA certificate",
                );
            }
        }
        for (j, s) in raw.revoked_serials.iter().enumerate() {
            if crate::material::normalize_serial(s).is_none() {
                self.problem(
                    format!("authority[{i}].revoked_serials[{j}]"),
                    "must be a certificate serial number in hex (colons allowed), as `openssl x509 -serial` prints it",
                );
            }
        }
        if !raw.revoked_serials.is_empty() && !raw.keys.is_empty() {
            self.problem(
                format!("authority[{i}].revoked_serials"),
                "revoked_serials apply to certificates; a `keys` authority revokes keys with `revoked`",
            );
        }
    }

    /// A `source = { url, ... }` authority (fetched over https).
    fn source(&mut self, path: &str, src: &raw::RawSource) -> Option<AuthorityKind> {
        let skey = |f: &str| format!("{path}.{f}");
        let url = self.check(
            &skey("url"),
            reqwest::Url::parse(&src.url)
                .map_err(|e| format!("`{}` is not a URL: {e}", src.url))
                .and_then(|u| {
                    if u.scheme() == "https" {
                        Ok(u)
                    } else {
                        Err("trust material is fetched over https only".into())
                    }
                }),
        )?;
        let kind = match src.kind.as_deref() {
            None | Some("keys") => SourceKind::Keys,
            Some("ca_roots") => SourceKind::CaRoots,
            Some(other) => {
                self.problem(
                    skey("kind"),
                    format!("`{other}` is not \"keys\" or \"ca_roots\""),
                );
                SourceKind::Keys
            }
        };
        Some(AuthorityKind::Source(SourceConfig {
            url,
            kind,
            refresh: self.duration(
                &skey("refresh"),
                src.refresh.as_deref(),
                Duration::from_secs(3600),
            ),
            max_stale: self.duration(
                &skey("max_stale"),
                src.max_stale.as_deref(),
                Duration::from_secs(72 * 3600),
            ),
            ca_file: src.ca_file.as_deref().map(|p| self.path(p)),
            max_bytes: self.size(&skey("max_bytes"), src.max_bytes.as_deref(), 1 << 20),
            signed_by: src.signed_by.as_deref().map(|p| self.path(p)),
        }))
    }

    /// A `keyless = { issuer, subject | subject_regex }` authority.
    fn keyless(&mut self, path: &str, k: &raw::RawKeyless) -> Option<AuthorityKind> {
        let subject = match (&k.subject, &k.subject_regex) {
            (Some(s), None) => SubjectMatch::Exact(s.clone()),
            (None, Some(r)) => {
                self.check(&format!("{path}.subject_regex"), SubjectMatch::regex(r))?
            }
            _ => {
                self.problem(path, "give exactly one of `subject` or `subject_regex`");
                return None;
            }
        };
        if k.issuer.is_empty() {
            self.problem(format!("{path}.issuer"), "must not be empty");
        }
        Some(AuthorityKind::Keyless {
            issuer: k.issuer.clone(),
            subject,
        })
    }

    /// `trusted_root`: the embedded public-good root, a file, or a TUF repository.
    fn trusted_root(
        &mut self,
        path: &str,
        raw: Option<&raw::RawTrustedRoot>,
        cache_dir: &Path,
    ) -> Option<TrustedRootSource> {
        match raw {
            None => None,
            Some(raw::RawTrustedRoot::Named(t)) if t == "sigstore-public-good" => {
                Some(TrustedRootSource::PublicGood)
            }
            Some(raw::RawTrustedRoot::Named(path)) => {
                Some(TrustedRootSource::File(self.path(path)))
            }
            Some(raw::RawTrustedRoot::Tuf(t)) => {
                self.tuf(path, t, cache_dir).map(TrustedRootSource::Tuf)
            }
        }
    }
}
