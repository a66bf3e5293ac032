//! The recommended alerts in docs/alerts.yml: valid for Prometheus, each one firing on a synthetic
//! series (docs/alerts.test.yml), and each one explained in docs/METRICS.md.
//!
//! Needs `promtool` (Debian/Ubuntu package `prometheus`; `scripts/test` installs it when it can). A
//! missing promtool fails these tests with the command that installs it: they are never skipped.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

use rosey_testkit::promtool::promtool;

/// Runs promtool with `args` in docs/ and fails with its output unless it succeeds.
fn run_promtool(args: &[&str]) -> String {
    let promtool = promtool();
    let output = Command::new(&promtool)
        .args(args)
        .current_dir(docs())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", promtool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        output.status
    );
    text
}

fn read(name: &str) -> String {
    std::fs::read_to_string(docs().join(name)).unwrap()
}

/// The names after `- alert:` in docs/alerts.yml, in file order.
fn alert_names() -> Vec<String> {
    read("alerts.yml")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

#[test]
fn alerts_pass_promtool_check_rules() {
    let output = run_promtool(&["check", "rules", "alerts.yml"]);
    let count = alert_names().len();
    assert!(output.contains(&format!("SUCCESS: {count} rules found")), "{output}");
}

#[test]
fn every_alert_fires_on_its_synthetic_series() {
    run_promtool(&["test", "rules", "alerts.test.yml"]);
}

#[test]
fn the_recommended_alerts_are_all_there_tested_and_explained() {
    let names = alert_names();
    for expected in [
        "PluginHighCPU",
        "PluginHighMemory",
        "PluginCrashed",
        "BotRestarted",
        "ReloadFailed",
        "ConnectorDown",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from alerts.yml: {names:?}"
        );
    }
    let tests = read("alerts.test.yml");
    let metrics = read("METRICS.md");
    for name in &names {
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "no test fires {name} in alerts.test.yml"
        );
        assert!(metrics.contains(&format!("`{name}`")), "{name} is not explained in METRICS.md");
    }
}

#[test]
fn every_metric_the_alerts_use_is_documented() {
    let rules = read("alerts.yml");
    let metrics = read("METRICS.md");
    let used: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr:"))
        .flat_map(|expr| expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|word| word.starts_with("rosey_"))
        .collect();
    assert!(used.len() >= 6, "{used:?}");
    for metric in used {
        assert!(
            metrics.contains(&format!("`{metric}")),
            "{metric} (used in alerts.yml) is not in METRICS.md"
        );
    }
}
