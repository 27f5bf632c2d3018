//! The monitoring files in deploy/: the Prometheus alert rules pass `promtool check rules` and
//! their unit tests (`promtool test rules`), the Grafana dashboard is valid JSON with a query in
//! every panel, and every metric either of them names is documented in docs/metrics.md (so a
//! renamed family breaks this test, not an operator's dashboard).

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// promtool, from Debian's `prometheus` package (tests/run.sh installs it); `None` outside CI.
fn promtool() -> Option<&'static str> {
    if Command::new("promtool").arg("--version").output().is_ok() {
        return Some("promtool");
    }
    assert!(
        std::env::var("CI").map(|v| v != "true").unwrap_or(true),
        "promtool missing under CI=true: tests/run.sh installs the prometheus package"
    );
    eprintln!("SKIP: promtool not installed (apt-get install prometheus)");
    None
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}: {text}");
    text
}

/// Metric family names in `text`: tokens starting `lqagent_` or `process_`, with the sample
/// suffixes of counters and histograms taken off.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.starts_with("lqagent_") || t.starts_with("process_"))
        .map(|t| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| t.strip_suffix(s))
                .unwrap_or(t)
                .to_string()
        })
        .collect()
}

fn documented(docs: &str, family: &str) -> bool {
    docs.contains(&format!("`{family}`"))
        || family.strip_suffix("_total").is_some_and(|f| {
            docs.contains(&format!("`{f}_total`")) || docs.contains(&format!("`{f}`"))
        })
}

fn docs() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("docs/metrics.md")).unwrap()
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let dir = Path::new(ROOT).join("deploy/prometheus");
    let out = run(Command::new(promtool)
        .args(["check", "rules"])
        .arg(dir.join("alerts.yml")));
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run(Command::new(promtool)
        .args(["test", "rules"])
        .arg("alerts_test.yml")
        .current_dir(&dir));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_rules_name_only_documented_metrics() {
    let rules =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/prometheus/alerts.yml")).unwrap();
    let names = metric_names(&rules);
    assert!(names.contains("lqagent_server_up"), "{names:?}");
    let docs = docs();
    for n in &names {
        assert!(
            documented(&docs, n),
            "alerts.yml names {n}, missing from docs/metrics.md"
        );
    }
}

#[test]
fn grafana_dashboard_is_json_and_names_only_documented_metrics() {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/grafana/lqagent.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(v["uid"], "lqagent");
    let panels = v["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut exprs = String::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let e = t["expr"].as_str().expect("expr");
            assert!(!e.trim().is_empty());
            exprs.push_str(e);
            exprs.push('\n');
        }
    }
    let names = metric_names(&exprs);
    for want in [
        "lqagent_server_up",
        "lqagent_routes_limit",
        "process_resident_memory_bytes",
        "lqagent_leasequeries_total",
    ] {
        assert!(names.contains(want), "dashboard lacks {want}: {names:?}");
    }
    let docs = docs();
    for n in &names {
        assert!(
            documented(&docs, n),
            "dashboard names {n}, missing from docs/metrics.md"
        );
    }
}

#[test]
fn the_name_check_catches_an_undocumented_metric() {
    let names = metric_names("rate(lqagent_no_such_thing_total[5m]) + lqagent_routes");
    assert!(!documented(&docs(), "lqagent_no_such_thing_total"));
    assert!(
        names.iter().all(|n| n != "lqagent_no_such_thing"),
        "{names:?}"
    );
    assert!(documented(&docs(), "lqagent_routes"));
}
