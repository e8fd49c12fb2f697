//! `deploy/prometheus` and `deploy/grafana`: alert rules promtool accepts,
//! with passing unit tests for every alert, and queries that name only the
//! metrics Portcullis exports.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::*;

/// Series Prometheus itself records for every scrape target.
const SCRAPE_SERIES: [&str; 1] = ["up"];

fn prometheus_dir() -> PathBuf {
    repo_path("deploy/prometheus")
}

/// Every series name Portcullis can expose: the names registered in
/// `src/metrics.rs` (histograms as their `_bucket`, `_sum` and `_count`
/// series) and Prometheus' own `up`.
fn exported_series() -> BTreeSet<String> {
    let file = read(&repo_path("src/metrics.rs"));
    let source = file.split("#[cfg(test)]").next().unwrap();
    let mut series: BTreeSet<String> = SCRAPE_SERIES.iter().map(|s| s.to_string()).collect();
    for (at, _) in source.match_indices("\"portcullis_") {
        let name: String = source[at + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if source[..at].trim_end().ends_with("HistogramOpts::new(") {
            for suffix in ["_bucket", "_sum", "_count"] {
                series.insert(format!("{name}{suffix}"));
            }
        } else {
            series.insert(name);
        }
    }
    assert!(
        series.len() > 10,
        "names found in src/metrics.rs: {series:?}"
    );
    series
}

const KEYWORDS: [&str; 28] = [
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "limitk",
    "limit_ratio",
    "inf",
    "nan",
];

/// Skips from an opening bracket or quote at `i` past its partner.
fn skip_group(chars: &[char], mut i: usize) -> usize {
    let (open, close) = match chars[i] {
        '{' => ('{', '}'),
        '(' => ('(', ')'),
        '[' => ('[', ']'),
        q => {
            i += 1;
            while i < chars.len() && chars[i] != q {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            return i + 1;
        }
    };
    let mut depth = 0;
    while i < chars.len() {
        match chars[i] {
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            '"' | '\'' | '`' => {
                i = skip_group(chars, i);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// The metric names a PromQL expression selects: identifiers that are not
/// functions, keywords, aggregation operators, label names (in matchers and
/// in `by`/`on` lists), durations, numbers or Grafana `$variables`.
fn metric_names(expr: &str) -> Vec<String> {
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let next_non_space = |from: usize| (from..chars.len()).find(|&j| !chars[j].is_whitespace());
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`' | '{' | '[') {
            i = skip_group(&chars, i);
        } else if c == '$' || c.is_ascii_digit() {
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '.'))
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | ':'))
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            let next = next_non_space(i);
            let call = next.is_some_and(|j| chars[j] == '(');
            if LABEL_LISTS.contains(&lower.as_str()) {
                if let Some(j) = next.filter(|_| call) {
                    i = skip_group(&chars, j);
                }
            } else if !KEYWORDS.contains(&lower.as_str()) && !call {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_name_lexer_skips_functions_keywords_labels_and_durations() {
    let expr = r#"histogram_quantile(0.99, sum by (le, upstream) (rate(a_bucket{job=~"$job", x="b c"}[$__rate_interval])))
        / on (instance) group_left b unless c offset 5m or sum(d) without (kind) > 1e3 and time() - e"#;
    assert_eq!(metric_names(expr), ["a_bucket", "b", "c", "d", "e"]);
}

/// Asserts an expression selects at least one metric and only exported ones.
fn assert_exported(expr: &str, exported: &BTreeSet<String>, place: &str) {
    let names = metric_names(expr);
    assert!(!names.is_empty(), "{place}: selects no metric: {expr}");
    for name in names {
        assert!(
            exported.contains(&name),
            "{place}: `{name}` is not a metric Portcullis exports: {expr}"
        );
    }
}

fn alert_rules() -> Vec<Value> {
    let docs = yaml_documents(&prometheus_dir().join("alerts.yml"));
    docs[0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn promtool_check_rules_accepts_the_alert_rules() {
    let out = promtool(&["check", "rules", "alerts.yml"], &prometheus_dir());
    assert_success("promtool check rules alerts.yml", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
}

#[test]
fn promtool_unit_tests_of_the_alert_rules_pass() {
    let out = promtool(&["test", "rules", "alerts.test.yml"], &prometheus_dir());
    assert_success("promtool test rules alerts.test.yml", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
}

#[test]
fn promtool_unit_tests_fail_when_an_alert_misbehaves() {
    // The unit tests can fail: with the denial alert's threshold raised out
    // of reach, its firing cases fail.
    let dir = tempfile::tempdir().unwrap();
    let rules = read(&prometheus_dir().join("alerts.yml"));
    let broken = rules
        .replacen("[5m])) > 0\n", "[5m])) > 1000\n", 1)
        .replacen(
            "portcullis_denied_pulls_total unless portcullis_denied_pulls_total offset 5m",
            "portcullis_denied_pulls_total > 1000",
            1,
        );
    assert_ne!(rules, broken);
    std::fs::write(dir.path().join("alerts.yml"), broken).unwrap();
    std::fs::copy(
        prometheus_dir().join("alerts.test.yml"),
        dir.path().join("alerts.test.yml"),
    )
    .unwrap();
    let out = promtool(&["test", "rules", "alerts.test.yml"], dir.path());
    assert!(
        !out.status.success(),
        "a broken alert passed its unit tests"
    );
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("FAILED"), "{report}");
    assert!(
        report.contains("alertname: PortcullisPullsDenied"),
        "{report}"
    );
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let tests = yaml_documents(&prometheus_dir().join("alerts.test.yml"));
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for test in tests[0]["tests"].as_array().unwrap() {
        for case in test["alert_rule_test"].as_array().unwrap() {
            let entry = cases
                .entry(case["alertname"].as_str().unwrap().to_string())
                .or_default();
            match case["exp_alerts"].as_array().map(Vec::len) {
                Some(0) | None => entry.1 += 1,
                Some(_) => entry.0 += 1,
            }
        }
    }
    let alerts: Vec<String> = alert_rules()
        .iter()
        .map(|r| {
            r["alert"]
                .as_str()
                .expect("only alerting rules")
                .to_string()
        })
        .collect();
    for required in [
        "PortcullisDown",
        "PortcullisReloadFailed",
        "PortcullisAuditEventsDropped",
        "PortcullisPullsDenied",
        "PortcullisUpstreamErrors",
        "PortcullisCacheNearFull",
        "PortcullisTrustRefreshFailing",
        "PortcullisTrustNearExpiry",
        "PortcullisExceptionNearExpiry",
        "PortcullisTrustDegraded",
        "PortcullisNoFreshReplica",
        "PortcullisSharedStoreErrors",
        "PortcullisClusterErrors",
    ] {
        assert!(alerts.iter().any(|a| a == required), "{required} missing");
    }
    for alert in &alerts {
        let (firing, quiet) = cases.get(alert).copied().unwrap_or_default();
        assert!(firing > 0, "{alert} has no case where it fires");
        assert!(quiet > 0, "{alert} has no case where it stays quiet");
    }
}

/// Each metric's label names as `src/metrics.rs` declares them (its label
/// list, or a constant label), histograms' series included (`_bucket` with
/// `le`).
fn declared_labels() -> BTreeMap<String, BTreeSet<String>> {
    let file = read(&repo_path("src/metrics.rs"));
    let source = file.split("#[cfg(test)]").next().unwrap();
    let starts: Vec<usize> = source
        .match_indices("\"portcullis_")
        .map(|(at, _)| at)
        .collect();
    let quoted = |text: &str| -> Vec<String> {
        text.split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let mut labels = BTreeMap::new();
    for (n, &at) in starts.iter().enumerate() {
        let name: String = source[at + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // This metric's declaration: up to the next metric's name.
        let end = starts.get(n + 1).copied().unwrap_or(source.len());
        let declaration = &source[at..end];
        let mut set = BTreeSet::new();
        if let Some(list) = declaration.split("&[").nth(1) {
            set.extend(quoted(list.split(']').next().unwrap()));
        }
        if let Some(constant) = declaration.split(".const_label(").nth(1) {
            set.extend(quoted(constant).into_iter().take(1));
        }
        if source[..at].trim_end().ends_with("HistogramOpts::new(") {
            let mut bucket = set.clone();
            bucket.insert("le".to_string());
            labels.insert(format!("{name}_bucket"), bucket);
            labels.insert(format!("{name}_sum"), set.clone());
            labels.insert(format!("{name}_count"), set.clone());
        }
        labels.insert(name, set);
    }
    labels
}

/// The promtool unit tests feed each metric the labels it really has (and
/// Prometheus' `job` and `instance`), so an alert cannot pass its test on a
/// label Portcullis never exports.
#[test]
fn alert_unit_tests_feed_only_label_sets_portcullis_exports() {
    let declared = declared_labels();
    assert_eq!(
        declared["portcullis_denied_pulls_total"],
        ["upstream", "policy", "reason"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "labels read from src/metrics.rs"
    );
    let tests = yaml_documents(&prometheus_dir().join("alerts.test.yml"));
    for test in tests[0]["tests"].as_array().unwrap() {
        for input in test["input_series"].as_array().unwrap() {
            let series = input["series"].as_str().unwrap();
            let (name, rest) = series.split_once('{').unwrap_or((series, "}"));
            let mut given: BTreeSet<String> = rest
                .trim_end_matches('}')
                .split(',')
                .filter(|kv| !kv.is_empty())
                .map(|kv| kv.split('=').next().unwrap().trim().to_string())
                .collect();
            for scrape in ["job", "instance"] {
                assert!(given.remove(scrape), "{series}: no {scrape} label");
            }
            let expected = match name {
                "up" => BTreeSet::new(),
                _ => declared
                    .get(name)
                    .unwrap_or_else(|| panic!("{series}: not a metric Portcullis exports"))
                    .clone(),
            };
            assert_eq!(given, expected, "{series}: labels");
        }
    }
}

#[test]
fn alert_rules_query_only_metrics_portcullis_exports() {
    let exported = exported_series();
    for rule in alert_rules() {
        let name = rule["alert"].as_str().unwrap().to_string();
        assert_exported(rule["expr"].as_str().unwrap(), &exported, &name);
        assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
        assert!(
            rule["annotations"]["summary"].is_string(),
            "{name}: summary"
        );
        assert!(
            rule["annotations"]["description"].is_string(),
            "{name}: description"
        );
    }
}

/// Every query of the dashboard: panel targets and template variables.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or("").to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((title.clone(), target["expr"].as_str().unwrap().to_string()));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            let query = variable["query"]["query"].as_str().unwrap();
            // label_values(<selector>, <label>): the selector is PromQL.
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map_or(query, |(selector, _)| selector);
            queries.push((
                format!("${}", variable["name"].as_str().unwrap()),
                inner.to_string(),
            ));
        }
    }
    queries
}

fn dashboard() -> Value {
    let path = repo_path("deploy/grafana/portcullis-dashboard.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn grafana_dashboard_parses_and_queries_only_metrics_portcullis_exports() {
    let dashboard = dashboard();
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    assert!(dashboard["schemaVersion"].as_u64().is_some());
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        for key in ["h", "w", "x", "y"] {
            assert!(
                panel["gridPos"][key].is_u64(),
                "{}: gridPos.{key}",
                panel["title"]
            );
        }
    }
    let exported = exported_series();
    let queries = dashboard_queries(&dashboard);
    for (place, expr) in &queries {
        assert_exported(expr, &exported, place);
    }
    let all: String = queries.iter().map(|(_, q)| q.as_str()).collect();
    for shown in [
        "portcullis_pull_decisions_total",
        "portcullis_denied_pulls_total",
        "portcullis_verification_duration_seconds_bucket",
        "portcullis_cache_hits_total",
        "portcullis_cache_misses_total",
        "portcullis_upstream_errors_total",
        "portcullis_blob_bytes_total",
        "portcullis_cache_bytes",
    ] {
        assert!(all.contains(shown), "the dashboard shows {shown}");
    }
}

#[test]
fn grafana_dashboard_queries_are_valid_promql() {
    // promtool parses each query as a recording rule, with Grafana's
    // variables replaced by what they expand to.
    let dir = tempfile::tempdir().unwrap();
    let rules: Vec<Value> = dashboard_queries(&dashboard())
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            let expanded = expr
                .replace("$__rate_interval", "5m")
                .replace("$job", ".+")
                .replace("$instance", ".+");
            assert!(!expanded.contains('$'), "unknown variable in {expr}");
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expanded})
        })
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(dir.path().join("dashboard.yml"), file.to_string()).unwrap();
    let out = promtool(&["check", "rules", "dashboard.yml"], dir.path());
    assert_success("promtool check rules (dashboard queries)", &out);
}

#[test]
fn the_prometheus_rule_object_holds_exactly_the_raw_rules_file() {
    let raw = yaml_documents(&prometheus_dir().join("alerts.yml"));
    let object = yaml_documents(&repo_path("deploy/kubernetes/base/prometheusrule.yaml"));
    assert_eq!(object.len(), 1);
    assert_eq!(object[0]["kind"], "PrometheusRule");
    assert_eq!(
        object[0]["spec"]["groups"], raw[0]["groups"],
        "deploy/kubernetes/base/prometheusrule.yaml differs from deploy/prometheus/alerts.yml"
    );
}

#[test]
fn the_operations_metrics_table_lists_every_metric_portcullis_exports() {
    let docs = read(&repo_path("docs/operations.md"));
    let table = docs
        .split("## Monitor")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap();
    let file = read(&repo_path("src/metrics.rs"));
    let source = file.split("#[cfg(test)]").next().unwrap();
    let mut missing = Vec::new();
    for (at, _) in source.match_indices("\"portcullis_") {
        let name: String = source[at + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let listed = [format!("`{name}`"), format!("`{name}{{")]
            .iter()
            .any(|form| table.contains(form.as_str()));
        if !listed {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/operations.md's metrics table lacks {missing:?}"
    );
}
