//! Blocks checked without a running bot: configs through `rosey check-config`, JSON examples and
//! protocol messages, manifests, the Cargo.toml fragment, Python copies of repository files, and
//! the Prometheus configuration and queries through promtool.

use std::path::Path;
use std::time::Duration;

use rosey_core::plugin::Manifest;
use rosey_plugin::protocol::{Decoded, HostMessage, PluginMessage};

use super::markdown::{self, Block, repo};
use super::report;
use super::run::{self, ROSEY, Scratch};

/// Every block of the docs with this info string, each checked by `check`; fails listing the
/// blocks `check` refused, with its reason.
fn check_each(lang: &str, marker: &str, what: &str, check: impl Fn(&Block) -> Result<(), String>) {
    let blocks = markdown::all_blocks();
    let marked: Vec<&Block> = blocks.iter().filter(|block| block.is(lang, marker)).collect();
    // A check that finds nothing to check would pass for the wrong reason.
    assert!(!marked.is_empty(), "no `{lang} {marker}` block in the docs");
    let failures = marked
        .iter()
        .filter_map(|block| check(block).err().map(|err| format!("{}: {err}", block.at())))
        .collect();
    report(what, failures);
}

/// The JSON values of a text: one, or several one after another (JSON lines, or objects spread
/// over several lines each).
pub(crate) fn json_values(text: &str) -> Result<Vec<serde_json::Value>, String> {
    let values: Vec<serde_json::Value> = serde_json::Deserializer::from_str(text)
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|err| format!("not JSON: {err}"))?;
    if values.is_empty() { Err("no JSON value".to_owned()) } else { Ok(values) }
}

#[test]
fn config_blocks_pass_check_config() {
    check_each("json", "config", "configs check-config refuses", |block| {
        let scratch = Scratch::new();
        std::fs::write(scratch.path("config.json"), &block.text).unwrap();
        let mut cmd = scratch.command(ROSEY);
        cmd.args(["check-config", "config.json"]);
        for assignment in &block.args {
            let (name, value) = assignment.split_once('=').unwrap_or((assignment, ""));
            cmd.env(name, value);
        }
        let ran = run::run(cmd, Duration::from_secs(30))?;
        if ran.status.success() { Ok(()) } else { Err(ran.stderr) }
    });
}

#[test]
fn example_blocks_are_json() {
    check_each("json", "example", "JSON examples that do not parse", |block| {
        json_values(&block.text).map(drop)
    });
}

#[test]
fn protocol_blocks_are_messages_host_or_plugin_know() {
    check_each("json", "protocol", "protocol examples the protocol types refuse", |block| {
        for (n, line) in block.text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let host = matches!(HostMessage::decode(line.as_bytes()), Ok(Decoded::Message(_)));
            let plugin = matches!(PluginMessage::decode(line.as_bytes()), Ok(Decoded::Message(_)));
            if !host && !plugin {
                return Err(format!("line {} is no message of protocol v1: {line}", n + 1));
            }
        }
        Ok(())
    });
}

#[test]
fn manifest_blocks_parse() {
    check_each("toml", "manifest", "manifests that do not parse", |block| {
        Manifest::parse(&block.text, Path::new("plugins/doc")).map(drop).map_err(|e| e.to_string())
    });
}

#[test]
fn cargo_blocks_name_this_workspace_crates_and_what_the_embedding_example_needs() {
    let root = repo();
    let example = toml_table(&root.join("examples/embedding/Cargo.toml"));
    check_each("toml", "cargo", "Cargo.toml fragments that would not build", |block| {
        let fragment: toml::Table = block.text.parse().map_err(|e| format!("not TOML: {e}"))?;
        let deps =
            fragment.get("dependencies").and_then(|d| d.as_table()).ok_or("no [dependencies]")?;
        for (name, spec) in deps {
            let Some(path) = spec.get("path").and_then(|p| p.as_str()) else { continue };
            // The fragment sits beside a checkout named `rosey`: `../rosey/<crate>`.
            let dir =
                root.join(path.strip_prefix("../rosey/").ok_or(format!("{name}: path {path}"))?);
            let manifest = toml_table(&dir.join("Cargo.toml"));
            let package = manifest["package"]["name"].as_str().unwrap_or_default();
            if package != name {
                return Err(format!("{name}: {path} holds package {package:?}"));
            }
            let features = manifest.get("features").and_then(|f| f.as_table());
            for feature in strings(spec.get("features")) {
                if !features.is_some_and(|f| f.contains_key(&feature)) {
                    return Err(format!("{name} has no feature {feature:?}"));
                }
            }
        }
        let needed = example["dependencies"].as_table().unwrap();
        for (name, spec) in needed {
            let Some(given) = deps.get(name) else {
                return Err(format!("examples/embedding needs {name}, which is missing"));
            };
            for feature in strings(spec.get("features")) {
                if !strings(given.get("features")).contains(&feature) {
                    return Err(format!(
                        "examples/embedding needs {name} with feature {feature:?}"
                    ));
                }
            }
        }
        Ok(())
    });
}

fn toml_table(path: &Path) -> toml::Table {
    std::fs::read_to_string(path).unwrap().parse().unwrap()
}

fn strings(value: Option<&toml::Value>) -> Vec<String> {
    let items = value.and_then(|v| v.as_array()).cloned().unwrap_or_default();
    items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}

#[test]
fn python_copies_equal_their_files() {
    let root = repo();
    let blocks = markdown::all_blocks();
    let copies: Vec<&Block> = blocks
        .iter()
        .filter(|block| block.lang == "python" && block.marker.starts_with("file="))
        .collect();
    assert!(!copies.is_empty(), "no `python file=` block in the docs");
    let failures = copies
        .iter()
        .filter_map(|block| {
            let path = &block.marker["file=".len()..];
            match std::fs::read_to_string(root.join(path)) {
                Ok(file) if file == block.text => None,
                Ok(_) => Some(format!("{}: differs from {path}", block.at())),
                Err(err) => Some(format!("{}: cannot read {path}: {err}", block.at())),
            }
        })
        .collect();
    report("copies that differ from their files", failures);
}

#[test]
fn prometheus_configs_pass_promtool() {
    let promtool = run::promtool();
    check_each("yaml", "prometheus", "Prometheus configs promtool refuses", |block| {
        let scratch = Scratch::new();
        // Each rule file the config names is docs/alerts.yml, copied where the config says.
        for rule_file in rule_files(&block.text) {
            if Path::new(&rule_file).is_absolute() {
                return Err(format!(
                    "rule file {rule_file} is absolute: name it relative to prometheus.yml"
                ));
            }
            let target = scratch.path(&rule_file);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::copy(repo().join("docs/alerts.yml"), target).unwrap();
        }
        std::fs::write(scratch.path("prometheus.yml"), &block.text).unwrap();
        let mut cmd = scratch.command(&promtool);
        cmd.args(["check", "config", "prometheus.yml"]);
        let ran = run::run(cmd, Duration::from_secs(30))?;
        if ran.status.success() { Ok(()) } else { Err(ran.describe()) }
    });
}

/// The entries of `rule_files:` in a Prometheus configuration (a block list, `#` comments cut).
fn rule_files(yaml: &str) -> Vec<String> {
    yaml.lines()
        .skip_while(|line| !line.starts_with("rule_files:"))
        .skip(1)
        .map(|line| line.split(" #").next().unwrap_or_default().trim())
        .take_while(|line| line.is_empty() || line.starts_with("- "))
        .filter_map(|line| line.strip_prefix("- "))
        .map(|entry| entry.trim().trim_matches(['"', '\'']).to_owned())
        .collect()
}

#[test]
fn promql_queries_parse() {
    let promtool = run::promtool();
    check_each("promql", "query", "queries promtool refuses", |block| {
        let mut rules = String::from("groups:\n  - name: docs\n    rules:\n");
        let queries = block.text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
        for (n, query) in queries.enumerate() {
            let quoted = query.replace('\'', "''");
            rules.push_str(&format!("      - record: docs_query_{n}\n        expr: '{quoted}'\n"));
        }
        let scratch = Scratch::new();
        std::fs::write(scratch.path("rules.yml"), rules).unwrap();
        let mut cmd = scratch.command(&promtool);
        cmd.args(["check", "rules", "rules.yml"]);
        let ran = run::run(cmd, Duration::from_secs(30))?;
        if ran.status.success() { Ok(()) } else { Err(ran.describe()) }
    });
}

#[test]
fn rule_files_are_read_from_a_prometheus_config() {
    let yaml = "global:\n  x: 1\nrule_files:\n  - rosey-alerts.yml   # a copy\n  - \"b.yml\"\n\nscrape_configs:\n  - job_name: rosey\n";
    assert_eq!(rule_files(yaml), ["rosey-alerts.yml", "b.yml"]);
}
