//! A real Prometheus (Debian's `prometheus` server) scraping `rosey run`: every PromQL expression in
//! docs/alerts.yml and docs/grafana-dashboard.json returns data through its HTTP API, the alert rules
//! load and evaluate, and the ones that should fire do. And docs/grafana-dashboard.json is a dashboard
//! Grafana imports, asking for its Prometheus data source.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::checklist::checklist_config;
use super::e2e::{Bot, free_port, plugin_metrics, poll, request};
use super::scratch_dir;

/// How long the whole Prometheus test may take, start to finish.
const WHOLE_TEST: Duration = Duration::from_secs(60);

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// A Prometheus server of this test's own on a free loopback port, scraping one target every second
/// as job `rosey`, with docs/alerts.yml as its rules. Killed, and its data removed, when dropped.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Prometheus {
    fn start(target_port: u16) -> Prometheus {
        let dir = scratch_dir().join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {:?}\n\
                 scrape_configs:\n  - job_name: rosey\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: [\"127.0.0.1:{target_port}\"]\n",
                docs().join("alerts.yml").display().to_string()
            ),
        )
        .unwrap();
        // The port is free when picked but could be taken before Prometheus binds it: try again then.
        for _ in 0..3 {
            let port = free_port();
            let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
            let child = Command::new(rosey_testkit::promtool::prometheus())
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut server = Prometheus { child, dir: dir.clone(), port };
            if server.wait_ready() {
                return server;
            }
        }
        panic!(
            "Prometheus did not start:\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap()
        );
    }

    /// Waits until `GET /-/ready` answers 200; false when the server exited first.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && request(self.port, "GET", "/-/ready", "").0 == 200
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("Prometheus not ready within 20 s:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>`'s `data`, asserting the API answered `success`.
    fn api(&self, path: &str) -> Value {
        let (status, body) = request(self.port, "GET", &format!("/api/v1/{path}"), "");
        let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert!(status == 200 && json["status"] == "success", "GET /api/v1/{path}: {body}");
        json["data"].clone()
    }

    /// An instant query's result vector (a query that is not one fails the test, with the error).
    fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api(&format!("query?query={}", url_encoded(expr)));
        assert_eq!(data["resultType"], "vector", "{expr}: {data}");
        data["result"].as_array().unwrap().clone()
    }

    /// Polls `expr` until it returns a sample.
    fn wait_for(&self, expr: &str, patience: Duration) -> Vec<Value> {
        poll(patience, &format!("Prometheus has {expr}"), || {
            Some(self.query(expr)).filter(|result| !result.is_empty())
        })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `text` percent-encoded for a query string: every byte but the unreserved ones as `%XX`.
fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether a query result has at least one sample with a finite value: data a panel can draw, or an
/// alert can compare (a 0 counts; NaN, such as a quantile of no observations, does not).
fn has_data(result: &[Value]) -> bool {
    result.iter().any(|sample| {
        sample["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).is_some_and(f64::is_finite)
    })
}

/// The `expr` of every rule in an alerting rules file (each on one line, as in docs/alerts.yml).
fn rule_expressions(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("expr:"))
        .map(|expr| expr.trim().trim_matches(['"', '\'']).to_owned())
        .collect()
}

/// Every `expr` anywhere in a Grafana dashboard (panel targets, annotations), as Grafana sends it
/// for the whole default time range: the `$__…interval` variables as `1m`, `$instance` as All.
fn dashboard_expressions(dashboard: &Value) -> Vec<String> {
    fn walk(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(expr)) = map.get("expr") {
                    found.push(expr.clone());
                }
                map.values().for_each(|v| walk(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(dashboard, &mut found);
    found
        .iter()
        .map(|expr| {
            expr.replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
                .replace("$__range", "1m")
                .replace("$instance", ".*")
        })
        .collect()
}

/// `expr` without its top-level comparison (`up == 0` → `up`): what an alert compares. Comparisons
/// inside parentheses, brackets, label matchers and strings are left alone.
fn without_comparison(expr: &str) -> &str {
    let bytes = expr.as_bytes();
    let (mut depth, mut quote) = (0i32, None);
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (Some(q), _) if b == q && bytes.get(i.wrapping_sub(1)) != Some(&b'\\') => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'' | b'`') => quote = Some(b),
            (None, b'(' | b'[' | b'{') => depth += 1,
            (None, b')' | b']' | b'}') => depth -= 1,
            (None, b'>' | b'<') if depth == 0 => return expr[..i].trim_end(),
            (None, b'=' | b'!') if depth == 0 && bytes.get(i + 1) == Some(&b'=') => {
                return expr[..i].trim_end();
            }
            _ => {}
        }
    }
    expr
}

#[test]
fn without_comparison_drops_only_the_top_level_comparison() {
    assert_eq!(without_comparison(r#"up{job="rosey"} == 0"#), r#"up{job="rosey"}"#);
    assert_eq!(
        without_comparison(r#"increase(x{status="rolled_back"}[15m]) > 0"#),
        r#"increase(x{status="rolled_back"}[15m])"#
    );
    assert_eq!(without_comparison("rosey_bot_uptime_seconds < 60"), "rosey_bot_uptime_seconds");
    assert_eq!(without_comparison("a != 1"), "a");
    assert_eq!(without_comparison("a >= 1"), "a");
    assert_eq!(without_comparison(r#"x{a!="b",c=~"d"}"#), r#"x{a!="b",c=~"d"}"#);
    assert_eq!(without_comparison(r#"sum(x > 1) by (y)"#), r#"sum(x > 1) by (y)"#);
    assert_eq!(without_comparison(r#"x{a="<"} > 2"#), r#"x{a="<"}"#);
}

#[test]
fn a_real_prometheus_scraping_rosey_gets_data_for_every_alert_and_dashboard_expression() {
    let began = Instant::now();
    let alerts = std::fs::read_to_string(docs().join("alerts.yml")).unwrap();
    let rules = rule_expressions(&alerts);
    assert_eq!(rules.len(), 7, "every alert of docs/alerts.yml: {rules:?}");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(docs().join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard_expressions(&dashboard);
    assert!(panels.len() >= 10, "{panels:?}");

    let dir = scratch_dir();
    let mut bot = Bot::start(&dir, &checklist_config(&[]), None);
    let prometheus = Prometheus::start(bot.port);
    // Two scrapes first: the counters' first samples (at 0) are what increase() and rate() start from.
    poll(Duration::from_secs(20), "two scrapes of rosey", || {
        let scrapes = prometheus.query(r#"count_over_time(up{job="rosey"}[1m]) >= 2"#);
        has_data(&scrapes).then_some(())
    });
    assert_eq!(prometheus.query(r#"up{job="rosey"}"#)[0]["value"][1], "1", "{}", prometheus.log());

    // What the expressions need: events, a crash and a reload.
    bot.ask("carol", "!roll 2d6", "🎲");
    bot.ask("carol", "!8ball will it scrape?", "🎱");
    let pid = plugin_metrics(bot.port, "dice-roller")["pid"].as_u64().unwrap().to_string();
    assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
    poll(Duration::from_secs(10), "the dice-roller restarted after its crash", || {
        let plugin = plugin_metrics(bot.port, "dice-roller");
        (plugin["crash_count"] == 1 && plugin["state"] == "RUNNING").then_some(())
    });
    bot.ask("alice", "!admin reload 8ball", "Type yes");
    bot.ask("alice", "yes", "✅ Reloaded 8ball");
    let patience = Duration::from_secs(10);
    prometheus.wait_for(r#"rosey_plugin_crashes_total{plugin="dice-roller"} >= 1"#, patience);
    prometheus
        .wait_for(r#"rosey_plugin_reloads_total{plugin="8ball",status="success"} >= 1"#, patience);

    // Every expression returns data. An alert's expression is asked without its top-level comparison:
    // `rosey_connector_connected == 0` has data only while the bot is down, but what it compares must
    // be there all the time, or the alert could never fire. The dashboard's are asked as they are.
    let mut missing = Vec::new();
    let asked =
        rules.iter().map(|e| without_comparison(e).to_owned()).chain(panels.iter().cloned());
    for expr in asked {
        let result = prometheus.query(&expr);
        if !has_data(&result) {
            missing.push(format!("{expr}: {result:?}"));
        }
    }
    assert!(missing.is_empty(), "no data for:\n{}", missing.join("\n"));
    // The dashboard's node variable lists the node.
    let nodes = prometheus.query("rosey_build_info");
    assert!(nodes.iter().any(|n| n["metric"]["instance"].is_string()), "{nodes:?}");

    // The rules load and evaluate without error; the ones whose condition holds now fire.
    let firing = poll(Duration::from_secs(10), "PluginCrashed and BotRestarted firing", || {
        let groups = prometheus.api("rules");
        let rules: Vec<Value> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        assert_eq!(rules.len(), 7, "{groups}");
        for rule in &rules {
            assert_eq!(rule["health"], "ok", "{rule}");
        }
        let firing: Vec<String> = rules
            .iter()
            .filter(|r| r["state"] == "firing")
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect();
        (firing.contains(&"PluginCrashed".to_owned())
            && firing.contains(&"BotRestarted".to_owned()))
        .then_some(firing)
    });
    assert_eq!(firing, ["PluginCrashed", "BotRestarted"], "only these hold now");

    drop(prometheus);
    bot.stop();
    assert!(began.elapsed() < WHOLE_TEST, "took {:?}", began.elapsed());
}

/// The data source reference every query of the dashboard must use, filled in at import.
const DATASOURCE: &str = "${DS_PROMETHEUS}";

#[test]
fn the_grafana_dashboard_imports_with_a_prometheus_input_and_has_the_spec_panels() {
    let text = std::fs::read_to_string(docs().join("grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let inputs = dashboard["__inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    let input = &inputs[0];
    assert_eq!(
        (&input["name"], &input["type"], &input["pluginId"]),
        (&"DS_PROMETHEUS".into(), &"datasource".into(), &"prometheus".into())
    );
    assert!(dashboard["id"].is_null(), "an exported dashboard has no id");
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40));
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let required: Vec<&str> = dashboard["__requires"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "panel")
        .map(|r| r["id"].as_str().unwrap())
        .collect();

    // Every panel: a unique id, a required type, inside the 24-column grid without overlapping
    // another, and queries through the input's data source.
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = std::collections::HashSet::new();
    let mut cells = std::collections::HashSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "{title}: duplicate id");
        assert!(
            required.contains(&panel["type"].as_str().unwrap()),
            "{title}: type not in __requires"
        );
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64().unwrap());
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: {grid}");
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            assert!(cells.insert(cell), "{title} overlaps another panel at {cell:?}");
        }
        assert_eq!(panel["datasource"]["uid"], DATASOURCE, "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = std::collections::HashSet::new();
        for target in targets {
            assert_eq!(target["datasource"]["uid"], DATASOURCE, "{title}");
            assert!(target["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
            assert!(refs.insert(target["refId"].as_str().unwrap()), "{title}: duplicate refId");
        }
    }
    let query_of = |title: &str| -> String {
        let panel = panels.iter().find(|p| p["title"] == title);
        let panel = panel.unwrap_or_else(|| panic!("no panel {title:?}"));
        panel["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap()).collect()
    };
    // The spec's panels.
    for (title, metric) in [
        ("Bot uptime", "rosey_bot_uptime_seconds"),
        ("Plugin states", "rosey_plugins_crashed"),
        ("CPU per plugin", "rosey_plugin_cpu_percent"),
        ("Memory per plugin", "rosey_plugin_memory_mb"),
        ("Event rate per plugin", "rosey_plugin_events_total"),
    ] {
        assert!(query_of(title).contains(metric), "{title} shows {metric}");
    }
    // The crash timeline, as annotations through the input's data source.
    let annotations = dashboard["annotations"]["list"].as_array().unwrap();
    let crashes = annotations
        .iter()
        .find(|a| a["expr"].as_str().is_some_and(|e| e.contains("rosey_plugin_crashes_total")));
    let crashes = crashes.expect("a crash annotation");
    assert_eq!(crashes["datasource"]["uid"], DATASOURCE);
    assert_eq!(crashes["enable"], true);
    // The node variable, and no data source but the input (or Grafana's own, for its annotations).
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        assert_eq!(variable["datasource"]["uid"], DATASOURCE, "{variable}");
    }
    let uids: Vec<&str> = text
        .match_indices("\"uid\": \"")
        .map(|(at, found)| text[at + found.len()..].split('"').next().unwrap())
        .filter(|uid| *uid != dashboard["uid"])
        .collect();
    assert!(uids.iter().all(|u| *u == DATASOURCE || *u == "-- Grafana --"), "{uids:?}");
}
