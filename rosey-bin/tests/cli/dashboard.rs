//! The dashboard of `rosey run`: the Prometheus endpoint scraped over HTTP with every listed metric
//! (checked by promtool), the JSON API's aggregates, an action with the token, and what a busy port
//! does on an explicit and on the default address.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::e2e::{free_port, get_json, poll, request, scrape};
use super::{Running, exit_within, rosey, scratch_dir, stderr, write_config};

const TOKEN: &str = "cli-test-token-0123456789";

/// `Authorization: Bearer <TOKEN>` as a header line for [`request`].
fn with_token() -> String {
    format!("Authorization: Bearer {TOKEN}\r\n")
}

fn value(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Every metric family the metrics issue lists, by name as it appears on the page.
const LISTED: [&str; 34] = [
    "rosey_plugin_cpu_percent{plugin=\"dice-roller\"}",
    "rosey_plugin_memory_mb{plugin=\"dice-roller\"}",
    "rosey_plugin_uptime_seconds{plugin=\"8ball\"}",
    "rosey_bot_uptime_seconds ",
    "rosey_total_plugins 3",
    "rosey_plugins_running 3",
    "rosey_plugins_crashed 0",
    "rosey_plugin_events_total{plugin=\"dice-roller\"}",
    "rosey_plugin_crashes_total{plugin=\"8ball\"} 0",
    "rosey_events_total{plugin=\"dice-roller\",type=\"command\"}",
    "rosey_plugin_reloads_total{plugin=\"8ball\",status=\"success\"} 1",
    "rosey_admin_commands_total{command=\"reload\",user=\"dashboard\"} 1",
    "rosey_plugin_response_time_seconds_bucket{plugin=\"dice-roller\",le=",
    "rosey_reload_duration_seconds_count{plugin=\"8ball\"} 1",
    "process_cpu_seconds_total ",
    "process_resident_memory_bytes ",
    "rosey_bus_messages_published_total ",
    "rosey_bus_messages_delivered_total ",
    "rosey_bus_messages_dropped_total ",
    "rosey_router_routed_total ",
    "rosey_router_ignored_total ",
    "rosey_router_not_running_total ",
    "rosey_router_unanswered_total ",
    "rosey_connector_connected 1",
    "rosey_connector_reconnects_total 0",
    "rosey_chat_messages_received_total ",
    "rosey_chat_messages_sent_total ",
    "rosey_connector_cooldowns_total 0",
    "rosey_storage_records_written_total ",
    "rosey_storage_write_failures_total 0",
    "rosey_storage_records_queued ",
    "rosey_kv_requests_total ",
    "rosey_build_info{version=\"",
    "rosey_plugin_response_time_seconds_count{plugin=\"8ball\"}",
];

#[test]
fn rosey_run_exposes_every_listed_metric_over_http_with_sensible_values() {
    let dir = scratch_dir();
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let port = free_port();
    let config = write_config(
        &dir,
        &format!(
            r#"{{"plugin_dir": {:?}, "logging": {{"file": null}}, "metrics": {{"poll_interval": 1}},
                "dashboard": {{"port": {port}, "token": "{TOKEN}"}}, "node": {{"name": "eu-west_2"}}}}"#,
            plugins.display().to_string()
        ),
    );
    let mut cmd = rosey(&dir, &["run", "--config", config.to_str().unwrap()]);
    cmd.stdin(Stdio::piped());
    let mut running = Running::start(cmd);
    let startup = running.wait_for("rosey ready");
    assert!(
        startup.contains(&format!("dashboard serving url=http://127.0.0.1:{port}")),
        "{startup}"
    );
    let lines: Vec<&str> = startup.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.iter().all(|l| l.contains(" node=eu-west_2 ")),
        "every line names its node: {startup}"
    );
    let mut stdin = running.child.stdin.take().unwrap();
    for line in ["alice: !roll 2d6", "bob: !8ball will it work?", "alice: !roll 1d20"] {
        writeln!(stdin, "{line}").unwrap();
    }
    // Three answers, in whatever order the two plugins give them.
    let answers: Vec<String> =
        (0..3).map(|_| running.chat.recv_timeout(Duration::from_secs(20)).unwrap()).collect();
    assert_eq!(answers.iter().filter(|a| a.starts_with("rosey: 🎲")).count(), 2, "{answers:?}");
    let (status, report) = request(port, "POST", "/api/plugin/8ball/reload", &with_token());
    assert_eq!(status, 200, "{report}");
    assert!(report.contains("\"outcome\":\"success\""), "{report}");

    // The collector samples every second; a few samples give every plugin its 1 h aggregates.
    poll(Duration::from_secs(30), "1 h aggregates of dice-roller", || {
        let json = get_json(port, "/api/plugin/dice-roller");
        let aggregates = &json["metrics"]["aggregates_1h"];
        (aggregates["cpu_avg"].is_number() && aggregates["memory_p95"].is_number()).then_some(())
    });

    let (_, raw) = request(port, "GET", "/metrics", "");
    assert!(raw.contains("rosey_plugins_running{node=\"eu-west_2\"} "), "{raw}");
    let (_, page) = request(port, "GET", "/", "");
    assert!(page.contains("eu-west_2"), "the page names the node");
    let body = scrape(port);
    let missing: Vec<&str> = LISTED.iter().copied().filter(|name| !body.contains(name)).collect();
    assert!(missing.is_empty(), "missing {missing:?} from:\n{body}");
    assert!(value(&body, "rosey_chat_messages_received_total").is_some_and(|n| n >= 3.0), "{body}");
    assert!(value(&body, "rosey_chat_messages_sent_total").is_some_and(|n| n >= 3.0), "{body}");
    assert!(value(&body, "rosey_router_routed_total").is_some_and(|n| n >= 3.0), "{body}");
    let memory = value(&body, "rosey_plugin_memory_mb{plugin=\"dice-roller\"}").unwrap();
    assert!(memory > 0.1 && memory < 100.0, "a dice roller takes a few MB: {memory}");

    drop(stdin);
    running.signal("TERM");
    let (status, rest) = running.wait_exit();
    assert!(status.success(), "{rest}");
    assert!(!rest.contains(TOKEN), "the token is never logged: {rest}");
}

#[test]
fn an_explicitly_configured_busy_port_stops_rosey_with_a_clear_error() {
    let dir = scratch_dir();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = write_config(
        &dir,
        &format!(r#"{{"logging": {{"file": null}}, "dashboard": {{"port": {port}}}}}"#),
    );
    let mut child = rosey(&dir, &["run", "--config", config.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = exit_within(&mut child, Duration::from_secs(30)).expect("rosey exits");
    assert_eq!(status.code(), Some(1));
    let out = stderr(&child.wait_with_output().unwrap());
    assert!(
        out.contains(&format!(
            "dashboard: cannot listen on 127.0.0.1:{port}: Address already in use (os error 98)"
        )),
        "{out}"
    );
}

#[test]
fn a_busy_default_port_only_costs_the_dashboard() {
    let dir = scratch_dir();
    // Hold 8080 for the whole run. Another test's `rosey run` on defaults may hold it for a moment:
    // wait for it to let go. Something outside the tests holding it for good makes it just as busy.
    let deadline = Instant::now() + Duration::from_secs(60);
    let _held = loop {
        match TcpListener::bind("127.0.0.1:8080") {
            Ok(listener) => break Some(listener),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => break None,
        }
    };
    let config = write_config(&dir, r#"{"logging": {"file": null}}"#);
    let running = Running::start(super::console_kept_open(rosey(
        &dir,
        &["run", "--config", config.to_str().unwrap()],
    )));
    let startup = running.wait_for("rosey ready");
    assert!(
        startup.lines().any(|l| l.contains("WARN")
            && l.contains("dashboard not started; the bot runs without it")
            && l.contains("127.0.0.1:8080")),
        "{startup}"
    );
    running.signal("TERM");
    let (status, _) = running.wait_exit();
    assert!(status.success());
}
