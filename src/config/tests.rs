use super::*;

fn minimal(extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:5000"
default_upstream = "hub"

[cache]
dir = "cache"

[[upstream]]
name = "hub"
url = "https://registry.example"

[[policy]]
name = "all"
match = ["**"]
allow_unverified = true
{extra}"#
    )
}

fn problems(text: &str) -> Vec<Problem> {
    Config::from_toml(text, Path::new("/etc/p")).unwrap_err()
}

#[test]
fn minimal_config_gets_defaults_and_resolves_paths() {
    let c = Config::from_toml(&minimal(""), Path::new("/etc/p")).unwrap();
    assert_eq!(c.cache.dir, PathBuf::from("/etc/p/cache"));
    assert_eq!(c.cache.tag_ttl, Duration::from_secs(60));
    assert_eq!(c.server.default_upstream.unwrap().as_str(), "hub");
    assert!(!c.upstreams[0].library_prefix);
}

#[test]
fn unknown_key_is_reported_with_its_path() {
    let p = problems(&minimal(
        "[[upstream]]\nname = \"x\"\nurl = \"https://x\"\nurll = 1\n",
    ));
    assert_eq!(p.len(), 1);
    assert!(p[0].path.starts_with("upstream"), "{p:?}");
    assert!(p[0].message.contains("urll"), "{p:?}");
}

/// An unknown key does not hide the others, nor what is wrong with the
/// known ones: each is reported with its path.
#[test]
fn unknown_keys_are_all_reported_with_the_semantic_problems_of_the_rest() {
    let text = r#"
[server]
listen = "nowhere"
lisen = "127.0.0.1:5000"

[cache]
dir = "c"
tag_tl = "1m"

[[upstream]]
name = "hub"
url = "https://registry.example"

[[upstream]]
name = "other"
url = "ftp://x"
urll = "https://x"

[[policy]]
name = "all"
match = ["**"]
allow_unverified = true
"#;
    let p = problems(text);
    let mut paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "cache.tag_tl",
            "server.lisen",
            "server.listen",
            "upstream[1].url",
            "upstream[1].urll",
        ],
        "{p:?}"
    );
    let tag_tl = p.iter().find(|p| p.path == "cache.tag_tl").unwrap();
    assert!(
        tag_tl
            .message
            .starts_with("unknown field `tag_tl`, expected one of"),
        "{p:?}"
    );
    // The first one read carries its position in the file.
    assert!(p[0].message.contains("(line "), "{p:?}");
}

/// A value of the wrong type ends the reading: what follows cannot be
/// read as the config it was meant to be.
#[test]
fn a_wrong_type_after_an_unknown_key_is_reported_and_ends_the_reading() {
    // Keys are read in order of their names: `cache` before `limits`.
    let text =
        minimal("[limits]\ndecisions = \"many\"\n").replace("[cache]", "[cache]\ntag_tl = 1");
    let p = problems(&text);
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["cache.tag_tl", "limits.decisions"], "{p:?}");
    assert!(p[1].message.starts_with("invalid type"), "{p:?}");
}

#[test]
fn every_semantic_problem_is_reported_at_once_with_key_paths() {
    let text = r#"
[server]
listen = "nowhere"
default_upstream = "missing"

[cache]
dir = "c"
max_bytes = "lots"
tag_ttl = "soon"

[[upstream]]
name = "Bad Name"
url = "ftp://x"

[[upstream]]
name = "plain"
url = "http://x"

[[policy]]
name = "p"
match = ["a//b"]
mode = "sometimes"
"#;
    let p = problems(text);
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "server.listen",
        "server.default_upstream",
        "cache.max_bytes",
        "cache.tag_ttl",
        "upstream[0].name",
        "upstream[0].url",
        "upstream[1].url",
        "policy[0].match[0]",
        "policy[0].mode",
        "policy[0].signatures",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
}

#[test]
fn duplicate_upstream_names_are_refused() {
    let p = problems(&minimal(
        "[[upstream]]\nname = \"hub\"\nurl = \"https://other\"\n",
    ));
    assert!(
        p.iter()
            .any(|p| p.path == "upstream[1].name" && p.message.contains("twice")),
        "{p:?}"
    );
}

#[test]
fn insecure_upstream_allows_plain_http() {
    let c = Config::from_toml(
        &minimal(
            "[[upstream]]\nname = \"local\"\nurl = \"http://127.0.0.1:5001\"\ninsecure = true\n",
        ),
        Path::new("."),
    )
    .unwrap();
    assert_eq!(c.upstreams[1].url.scheme(), "http");
}

#[test]
fn docker_hub_gets_library_prefix_by_default() {
    let c = Config::from_toml(
        &minimal("[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n"),
        Path::new("."),
    )
    .unwrap();
    assert!(c.upstreams[1].library_prefix);
}

#[test]
fn syntax_error_is_reported_not_panicked() {
    let p = problems("[server\nlisten=");
    assert_eq!(p[0].path, "(syntax)");
}

#[test]
fn every_shipped_config_file_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

#[test]
fn attestation_requirements_and_condition_errors_are_reported_with_key_paths() {
    let text = r#"
[server]
listen = "127.0.0.1:5000"

[cache]
dir = "c"

[[upstream]]
name = "hub"
url = "https://registry.example"

[[authority]]
name = "acme"
keys = ["acme.pub"]

[[condition]]
name = "broken"
expr = "predicate.runDetails.builder.id == "

[[condition]]
name = "no-critical"
expr = "!predicate.scanner.result.Results.exists(r, r.Severity == 'CRITICAL')"

[[policy]]
name = "acme"
match = ["hub/acme/**"]
signatures = { authorities = ["acme"] }
attestations = [
  { predicate_type = "https://slsa.dev/provenance/v1", authorities = ["acme"], condition = "broken" },
  { predicate_type = "https://cosign.sigstore.dev/attestation/vuln/v1", authorities = ["ghost"], condition = "no-critical", max_age = "soon" },
  { predicate_type = "", authorities = ["acme"], condition = "missing", require = 2 },
]

[[policy]]
name = "loose"
match = ["**"]
allow_unverified = true
attestations = [{ predicate_type = "x", authorities = ["acme"] }]
"#;
    let paths: Vec<String> = problems(text).into_iter().map(|p| p.path).collect();
    for want in [
        "condition[0].expr",
        "policy[0].attestations[1].authorities[0]",
        "policy[0].attestations[1].max_age",
        "policy[0].attestations[2].predicate_type",
        "policy[0].attestations[2].condition",
        "policy[0].attestations[2].require",
        "policy[1].attestations",
    ] {
        assert!(
            paths.iter().any(|p| p == want),
            "{want} missing in {paths:?}"
        );
    }
    // The broken condition is reported once, where it is defined; the
    // requirement that names it is not reported again.
    assert!(
        !paths
            .iter()
            .any(|p| p == "policy[0].attestations[0].condition"),
        "{paths:?}"
    );
}

#[test]
fn ready_made_conditions_in_the_example_config_accept_and_refuse_what_they_document() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/attestations.toml");
    let config = Config::load(&path).unwrap();
    let policy = config.policies.iter().next().unwrap();
    let condition = |name: &str| {
        policy
            .attestations
            .iter()
            .find_map(|a| a.condition.clone().filter(|c| c.name == name))
            .unwrap()
    };
    let holds = |name: &str, predicate: serde_json::Value| {
        condition(name).evaluate(&serde_json::json!({ "predicate": predicate }))
    };
    let slsa = |repo: &str| {
        serde_json::json!({
            "buildDefinition": {"buildType": "https://actions.github.io/buildtypes/workflow/v1",
                "externalParameters": {"workflow": {"repository": repo}}},
            "runDetails": {"builder": {"id": "https://github.com/actions/runner/github-hosted"}},
        })
    };
    assert_eq!(
        holds(
            "slsa-github-actions-acme",
            slsa("https://github.com/acme/app")
        ),
        Ok(true)
    );
    assert_eq!(
        holds(
            "slsa-github-actions-acme",
            slsa("https://github.com/evil/app")
        ),
        Ok(false)
    );
    let scan = |severity: &str| {
        serde_json::json!({"scanner": {"result": {"Results": [{"Target": "os"},
            {"Target": "app", "Vulnerabilities": [{"Severity": "LOW"}, {"Severity": severity}]}]}}})
    };
    assert_eq!(
        holds("no-critical-or-high-vulnerabilities", scan("MEDIUM")),
        Ok(true)
    );
    assert_eq!(
        holds("no-critical-or-high-vulnerabilities", scan("HIGH")),
        Ok(false)
    );
    assert_eq!(
        holds(
            "sbom-not-empty",
            serde_json::json!({"packages": [{"name": "a"}]})
        ),
        Ok(true)
    );
    assert_eq!(
        holds(
            "sbom-not-empty",
            serde_json::json!({"components": [{"name": "a"}]})
        ),
        Ok(true)
    );
    assert_eq!(
        holds("sbom-not-empty", serde_json::json!({"packages": []})),
        Ok(false)
    );
}

#[test]
fn revoked_serials_are_normalised_and_bad_ones_reported_with_key_paths() {
    let authority = |serials: &str| {
        minimal(&format!(
            "[[authority]]\nname = \"v\"\nca_roots = [\"/etc/ssl/certs/ca.pem\"]\nrevoked_serials = {serials}\n"
        ))
    };
    let c = Config::from_toml(&authority(r#"["00:1F:a0", "12"]"#), Path::new("/etc/p")).unwrap();
    assert_eq!(c.authorities[0].revoked_serials, ["1fa0", "12"]);
    let p = problems(&authority(r#"["12", "not-hex", ""]"#));
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "authority[0].revoked_serials[1]",
            "authority[0].revoked_serials[2]"
        ],
        "{p:?}"
    );
}

#[test]
fn pem_text_in_keys_is_inline_material_and_anything_else_a_path() {
    let c = Config::from_toml(
        &minimal(
            "[[authority]]\nname = \"v\"\nkeys = [\"\"\"\n-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n\"\"\", \"keys/v.pub\"]\n",
        ),
        Path::new("/etc/p"),
    )
    .unwrap();
    let AuthorityKind::Keys(keys) = &c.authorities[0].kind else {
        panic!("not keys");
    };
    assert!(matches!(&keys[0], Pem::Inline(t) if t.contains("BEGIN PUBLIC KEY")));
    assert_eq!(keys[1], Pem::File(PathBuf::from("/etc/p/keys/v.pub")));
    assert_eq!(keys[0].label(), "inline PEM");
}

#[test]
fn authority_names_cannot_take_the_tuf_namespace() {
    let p = problems(&minimal(
        "[[authority]]\nname = \"tuf:https://x\"\nkeys = [\"k.pub\"]\n",
    ));
    assert!(p.iter().any(|p| p.path == "authority[0].name"), "{p:?}");
}

#[test]
fn an_authority_listed_twice_is_refused_with_its_key_path() {
    let text = minimal(
        r#"
[[authority]]
name = "a"
keys = ["a.pub"]

[[policy]]
name = "twice"
match = ["hub/x/**"]
signatures = { authorities = ["a", "a"], require = 2 }
attestations = [{ predicate_type = "p", authorities = ["a", "a"], require = 2 }]
"#,
    );
    let found: Vec<(String, String)> = problems(&text)
        .into_iter()
        .map(|p| (p.path, p.message))
        .collect();
    for want in [
        "policy[1].signatures.authorities[1]",
        "policy[1].attestations[0].authorities[1]",
    ] {
        assert!(
            found
                .iter()
                .any(|(p, m)| p == want && m.contains("listed twice")),
            "{want}: {found:?}"
        );
    }
}

#[test]
fn require_code_signing_eku_defaults_off_and_applies_only_to_vendor_pki() {
    let c = Config::from_toml(
        &minimal("[[authority]]\nname = \"v\"\nca_roots = [\"/etc/ssl/certs/ca.pem\"]\n"),
        Path::new("/etc/p"),
    )
    .unwrap();
    assert!(!c.authorities[0].require_code_signing_eku);
    let c = Config::from_toml(
        &minimal(
            "[[authority]]\nname = \"v\"\nca_roots = [\"/etc/ssl/certs/ca.pem\"]\nrequire_code_signing_eku = true\n\n[[authority]]\nname = \"s\"\nsource = { url = \"https://v.example/ca.pem\", kind = \"ca_roots\" }\nrequire_code_signing_eku = true\n",
        ),
        Path::new("/etc/p"),
    )
    .unwrap();
    assert!(c.authorities.iter().all(|a| a.require_code_signing_eku));
    let p = problems(&minimal(
        "[[authority]]\nname = \"k\"\nkeys = [\"k.pub\"]\nrequire_code_signing_eku = true\n",
    ));
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["authority[0].require_code_signing_eku"], "{p:?}");
}

#[test]
fn a_parse_error_gives_the_key_path_and_position_never_the_files_text() {
    for (text, path, at) in [
        (
            "ghp_SECRETTOKEN1234567890\n",
            "(syntax)",
            "line 1, column 26",
        ),
        ("user:$2y$05$SECRETHASH\n", "(syntax)", "line 1, column 23"),
        ("API_KEY=SECRETVALUE\n", "(syntax)", "line 1, column 9"),
        (
            "-----BEGIN PRIVATE KEY-----\nMIISECRET\n",
            "(syntax)",
            "line 1, column 12",
        ),
        ("x = \"SECRET\nVALUE\"", "(syntax)", "line 2, column 7"),
        (
            "[server]\nlisten = [\"SECRET\"]\n",
            "server.listen",
            "line 2, column 10",
        ),
        (
            "[server]\nlisten = \"a\"\nmax_connections = \"SECRET\"\n",
            "server.max_connections",
            "line 3, column 19",
        ),
    ] {
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].path, path, "{p:?}");
        let shown = p[0].to_string();
        assert!(shown.contains(at), "{shown}");
        assert!(
            !shown.contains("SECRET") && !shown.contains("MII"),
            "{shown}"
        );
        assert!(!shown.contains('\n'), "{shown}");
    }
}

#[test]
fn a_parse_error_still_says_what_the_schema_expected() {
    let p = problems("[server]\nlisten = 5\n");
    assert_eq!(p[0].path, "server.listen");
    assert_eq!(
        p[0].message,
        "invalid type: integer `…`, expected a string (line 2, column 10)"
    );
    let p = problems("[server]\nlisten = \"a\"\nbogus = 1\n");
    assert_eq!(p[0].path, "server.bogus");
    assert!(p[0].message.contains("expected one of `listen`"), "{p:?}");
}

#[test]
fn quoted_values_are_dropped_only_from_what_was_found() {
    assert_eq!(
        without_quoted_values(r#"invalid type: string "a \" b", expected `x` or "y""#),
        r#"invalid type: string "…", expected `x` or "y""#
    );
    assert_eq!(
        without_quoted_values("unknown variant `s`"),
        "unknown variant `…`"
    );
    assert_eq!(
        without_quoted_values("missing field `name`"),
        "missing field `name`"
    );
}

fn tuf_authority(name: &str, tuf: &str) -> String {
    format!(
        "[[authority]]\nname = \"{name}\"\nkeyless = {{ issuer = \"https://i\", subject = \"s\" }}\ntrusted_root = {{ {tuf} }}\n"
    )
}

#[test]
fn authorities_naming_one_tuf_repository_with_different_settings_are_refused_at_both_keys() {
    let p = problems(&minimal(&format!(
        "{}{}{}",
        tuf_authority(
            "a",
            "tuf = \"https://tuf.example\", root = \"a-root.json\", refresh = \"1h\""
        ),
        tuf_authority(
            "unrelated",
            "tuf = \"https://other.example\", root = \"x.json\""
        ),
        tuf_authority(
            "b",
            "tuf = \"https://tuf.example/\", root = \"b-root.json\", ca_file = \"ca.pem\", refresh = \"2h\", max_stale = \"1d\""
        ),
    )));
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "authority[2].trusted_root.root",
            "authority[2].trusted_root.ca_file",
            "authority[2].trusted_root.refresh"
        ],
        "{p:?}"
    );
    for (p, field) in p.iter().zip(["root", "ca_file", "refresh"]) {
        assert!(
            p.message
                .contains(&format!("differs from authority[0].trusted_root.{field}")),
            "{p:?}"
        );
    }
}

#[test]
fn authorities_sharing_a_tuf_repository_may_differ_in_max_stale_only() {
    let text = minimal(&format!(
        "{}{}",
        tuf_authority("a", "tuf = \"https://tuf.example\", root = \"r.json\""),
        tuf_authority(
            "b",
            "tuf = \"https://tuf.example\", root = \"r.json\", max_stale = \"1d\""
        ),
    ));
    assert!(Config::from_toml(&text, Path::new("/etc/p")).is_ok());
    let spelled = minimal(&format!(
        "{}{}",
        tuf_authority("a", "tuf = \"https://tuf.example/repo\""),
        tuf_authority("b", "tuf = \"https://tuf.example/repo/\""),
    ));
    let p = problems(&spelled);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].path, "authority[1].trusted_root.tuf");
}

#[test]
fn connection_and_password_bounds_have_defaults_and_zero_is_refused() {
    let auth = "[server.auth]\nhtpasswd_file = \"htpasswd\"\n";
    let text = minimal("").replace(
        "default_upstream = \"hub\"\n",
        &format!("default_upstream = \"hub\"\n{auth}"),
    );
    let c = Config::from_toml(&text, Path::new("/etc/p")).unwrap();
    assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.server.send_timeout, Duration::from_secs(30));
    assert_eq!(c.server.max_streams_per_connection, 100);
    assert_eq!(c.server.keepalive_interval, Duration::from_secs(20));
    let a = c.server.auth.unwrap();
    assert_eq!(a.password_checks, 4);
    assert_eq!(a.failure_limit, 10);
    assert_eq!(a.failure_backoff, Duration::from_secs(60));

    let text = minimal("").replace(
        "default_upstream = \"hub\"\n",
        "default_upstream = \"hub\"\nidle_timeout = \"0s\"\nsend_timeout = \"0s\"\nmax_streams_per_connection = 0\nkeepalive_interval = \"0s\"\nauth = { htpasswd_file = \"h\", password_checks = 0, failure_backoff = \"0s\" }\n",
    );
    let mut paths: Vec<String> = problems(&text).into_iter().map(|p| p.path).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "server.auth.failure_backoff",
            "server.auth.password_checks",
            "server.idle_timeout",
            "server.keepalive_interval",
            "server.max_streams_per_connection",
            "server.send_timeout",
        ]
    );
}

#[test]
fn a_quoted_value_containing_the_word_expected_is_still_hidden() {
    let out = without_quoted_values(
        "invalid type: string \"hunter2 expected SECRET-TAIL\", expected a boolean",
    );
    assert!(!out.contains("SECRET"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    assert!(out.ends_with("expected a boolean"), "{out}");
}

#[test]
fn decision_limits_have_defaults_and_the_byte_budget_must_hold_one_whole_decision() {
    let c = Config::from_toml(&minimal(""), Path::new("/etc/p")).unwrap();
    assert_eq!(c.limits.decisions, 64);
    assert_eq!(c.limits.decision_bytes, 512 << 20);
    let with = |limits: &str| format!("{}\n[limits]\n{limits}\n", minimal(""));
    // Three document sets of 64 MiB and eight 4 MiB referrer manifests.
    assert_eq!(super::DECISION_MOST_BYTES, 224 << 20);
    let at_least = Config::from_toml(&with("decision_bytes = \"224MiB\""), Path::new("/etc/p"));
    assert_eq!(at_least.unwrap().limits.decision_bytes, 224 << 20);
    let p = problems(&with("decision_bytes = \"223MiB\"\ndecisions = 0"));
    let mut paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["limits.decision_bytes", "limits.decisions"]);
    assert_eq!(
        problems(&with("decision_bytes = \"65GiB\""))[0].path,
        "limits.decision_bytes"
    );
}

#[test]
fn a_credential_helper_name_runs_docker_credential_name_and_cannot_join_a_credentials_file() {
    let with = |keys: &str| {
        format!(
            "{}\n[[upstream]]\nname = \"ecr\"\nurl = \"https://1.dkr.ecr.example\"\n{keys}\n",
            minimal("")
        )
    };
    let c = Config::from_toml(
        &with("credential_helper = \"ecr-login\""),
        Path::new("/etc/p"),
    )
    .unwrap();
    assert_eq!(
        c.upstreams[1].credential_helper.as_deref(),
        Some("docker-credential-ecr-login")
    );
    assert_eq!(
        c.upstreams[1].credential_helper_ttl,
        Duration::from_secs(600)
    );
    let c = Config::from_toml(
        &with("credential_helper = \"bin/helper\"\ncredential_helper_ttl = \"1h\""),
        Path::new("/etc/p"),
    )
    .unwrap();
    assert_eq!(
        c.upstreams[1].credential_helper.as_deref(),
        Some("/etc/p/bin/helper")
    );
    assert_eq!(
        c.upstreams[1].credential_helper_ttl,
        Duration::from_secs(3600)
    );
    let p = problems(&with(
        "credential_helper = \"ecr-login\"\ncredentials_file = \"c.json\"",
    ));
    assert_eq!(p[0].path, "upstream[1].credential_helper");
    assert!(p[0].message.contains("not both"));
    assert_eq!(
        problems(&with("credential_helper = \"a b\""))[0].path,
        "upstream[1].credential_helper"
    );
}

#[test]
fn client_scopes_need_an_identity_once_and_at_least_one_valid_glob() {
    let with_auth = |extra: &str| {
        minimal(extra).replace(
            "default_upstream = \"hub\"",
            "default_upstream = \"hub\"\nauth = { tokens_file = \"tokens\" }",
        )
    };
    let p = problems(&with_auth(
        "[[client]]\nidentity = \"a\"\nrepositories = []\n\
         [[client]]\nidentity = \"b\"\nrepositories = [\"hub/ok/**\", \"a//b\"]\n\
         [[client]]\nidentity = \"c\"\nrepositories = [\"hub/**\"]\n\
         [[client]]\nidentity = \"c\"\nrepositories = [\"hub/**\"]\n\
         [[client]]\nidentity = \" \"\nrepositories = [\"hub/**\"]\n\
         [[client]]\nidentity = \" team \"\nrepositories = [\"hub/**\"]\n\
         [[client]]\nidentity = \"cert:0123456789abcdef\"\nrepositories = [\"hub/**\"]\n",
    ));
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "client[0].repositories",
            "client[1].repositories[1]",
            "client[3].identity",
            "client[4].identity",
            "client[5].identity",
            "client[6].identity"
        ],
        "{p:?}"
    );
    assert!(
        problems(&minimal(
            "[[client]]\nidentity = \"a\"\nrepositories = [\"hub/**\"]\n"
        ))
        .iter()
        .any(|p| p.path == "client" && p.message.contains("server.auth")),
        "a scope no request can carry an identity for"
    );
    let c = Config::from_toml(
        &with_auth("[[client]]\nidentity = \"team-a\"\nrepositories = [\"hub/team-a/**\"]\n"),
        Path::new("/etc/p"),
    )
    .unwrap();
    let policies = &c.policies;
    assert!(policies.client_may_pull(Some("team-a"), "hub", "team-a/app"));
    assert!(!policies.client_may_pull(Some("team-a"), "hub", "team-b/app"));
    assert!(!policies.client_may_pull(Some("team-a"), "other", "team-a/app"));
    assert!(
        policies.client_may_pull(Some("ops"), "hub", "team-b/app"),
        "unscoped"
    );
    assert!(
        policies.client_may_pull(None, "hub", "team-b/app"),
        "anonymous"
    );
}

#[test]
fn a_certificate_scope_is_cert_and_sixteen_lowercase_hex_digits_and_needs_mtls_without_auth() {
    let mtls = |identity: &str| {
        minimal(&format!(
            "[[client]]\nidentity = \"{identity}\"\nrepositories = [\"hub/**\"]\n"
        ))
        .replace(
            "default_upstream = \"hub\"",
            "default_upstream = \"hub\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\nclient_ca = \"ca.pem\"",
        )
    };
    let base = Path::new("/etc/p");
    let c = Config::from_toml(&mtls("cert:0123456789abcdef"), base).unwrap();
    assert!(
        c.policies
            .client_may_pull(Some("cert:0123456789abcdef"), "hub", "x")
    );
    for bad in [
        "cert:0123456789ABCDEF",
        "cert:0123456789abcde",
        "cert:0123456789abcdef0",
        "cert:0123456789abcdeg",
    ] {
        let p = Config::from_toml(&mtls(bad), base).unwrap_err();
        assert_eq!(p.len(), 1, "{bad}: {p:?}");
        assert_eq!(p[0].path, "client[0].identity", "{bad}");
        assert!(p[0].message.contains("16 lowercase hex"), "{bad}: {p:?}");
    }
}
