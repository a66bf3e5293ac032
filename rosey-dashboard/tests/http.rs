//! The dashboard over real HTTP, on a node in miniature with real plugin processes: every route and
//! status code, the JSON field by field (DESIGN §6, docs/METRICS.md), the SSE stream after a reload,
//! the actions with and without the token, and what a busy port does.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use rosey_core::health;
use rosey_core::storage::AuditQuery;
use serde_json::Value;
use support::{Node, PATIENCE, TOKEN};

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> =
        value.as_object().expect("an object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

fn is_number_or_null(value: &Value) -> bool {
    value.is_number() || value.is_null()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_metrics_has_every_field_of_design_6_with_sensible_values() {
    let node = Node::start(&[("alpha", "pinga"), ("beta", "pingb")], false).await;
    for _ in 0..3 {
        node.command("pinga").await;
    }
    // Answers come from a snapshot at most two refreshes old: the events show within a moment.
    let body = node.get_json_until("/api/metrics", |b| b["system"]["total_events"] == 3).await;
    assert_eq!(keys(&body), ["plugins", "system", "timestamp"]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let timestamp = body["timestamp"].as_f64().unwrap();
    assert!((now.as_secs_f64() - timestamp).abs() < 5.0, "timestamp is Unix seconds: {timestamp}");
    let plugins = body["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 2);
    for plugin in plugins {
        assert_eq!(
            keys(plugin),
            [
                "cpu_percent",
                "crash_count",
                "event_count",
                "memory_mb",
                "name",
                "pid",
                "state",
                "uptime_seconds",
                "version"
            ]
        );
        assert_eq!(plugin["version"], "1.0.0");
        assert_eq!(plugin["state"], "RUNNING");
        assert!(plugin["pid"].as_u64().is_some_and(|pid| pid > 1), "{plugin}");
        assert!(plugin["uptime_seconds"].as_f64().is_some_and(|u| u >= 0.0), "{plugin}");
        assert!(
            is_number_or_null(&plugin["cpu_percent"]) && is_number_or_null(&plugin["memory_mb"])
        );
        assert_eq!(plugin["crash_count"], 0);
    }
    assert_eq!(plugins[0]["name"], "alpha", "sorted by name");
    assert_eq!(plugins[0]["event_count"], 3);
    assert_eq!(plugins[1]["event_count"], 0);
    let system = &body["system"];
    assert_eq!(
        keys(system),
        [
            "bot_uptime_human",
            "bot_uptime_seconds",
            "plugins_crashed",
            "plugins_running",
            "total_events",
            "total_plugins"
        ]
    );
    assert_eq!(
        (&system["total_plugins"], &system["plugins_running"], &system["plugins_crashed"]),
        (&Value::from(2), &Value::from(2), &Value::from(0))
    );
    assert_eq!(system["total_events"], 3);

    // A client that takes gzip (every browser) gets the same JSON, compressed once per snapshot.
    let zipped = node
        .http
        .get(node.url("/api/metrics"))
        .header("accept-encoding", "gzip, deflate")
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let bytes = zipped.bytes().await.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
        .unwrap();
    let unzipped: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(keys(&unzipped), ["plugins", "system", "timestamp"]);
    assert_eq!(unzipped["system"]["total_events"], 3);
    assert!(system["bot_uptime_seconds"].as_f64().is_some());
    assert!(system["bot_uptime_human"].as_str().unwrap().ends_with('s'), "{system}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_plugin_has_current_aggregates_and_history_and_404s_unknown_plugins() {
    let node = Node::start(&[("alpha", "pinga")], false).await;
    // CPU is known from a plugin's second sample on; aggregates need a few.
    node.polls(4).await;
    let body = node.get_json("/api/plugin/alpha", 200).await;
    assert_eq!(
        keys(&body),
        ["history", "loaded_at", "metrics", "name", "pid", "state", "version", "window"]
    );
    assert_eq!(
        (&body["name"], &body["version"], &body["state"]),
        (&"alpha".into(), &"1.0.0".into(), &"RUNNING".into())
    );
    assert!(body["loaded_at"].as_f64().is_some_and(|t| t > 1.7e9), "{body}");
    assert!(body["pid"].as_u64().is_some());
    assert_eq!(keys(&body["metrics"]), ["aggregates_1h", "current"]);
    assert_eq!(keys(&body["metrics"]["current"]), ["cpu_percent", "memory_mb", "uptime"]);
    let aggregates = &body["metrics"]["aggregates_1h"];
    assert_eq!(
        keys(aggregates),
        [
            "cpu_avg",
            "cpu_max",
            "cpu_min",
            "cpu_p95",
            "memory_avg",
            "memory_max",
            "memory_min",
            "memory_p95"
        ]
    );
    let memory = |k: &str| aggregates[k].as_f64().unwrap_or_else(|| panic!("{k}: {aggregates}"));
    assert!(memory("memory_min") > 0.0 && memory("memory_min") <= memory("memory_avg"));
    assert!(
        memory("memory_avg") <= memory("memory_max")
            && memory("memory_p95") <= memory("memory_max")
    );
    assert!(aggregates["cpu_avg"].as_f64().is_some(), "{aggregates}");
    let history = body["history"].as_array().unwrap();
    assert!(history.len() >= 4, "one point per poll: {history:?}");
    for point in history {
        assert_eq!(keys(point), ["cpu", "memory", "timestamp"]);
    }
    let times: Vec<f64> = history.iter().map(|p| p["timestamp"].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {times:?}");

    let day = node.get_json("/api/plugin/alpha?window=24h", 200).await;
    assert_eq!(day["window"], "24h");
    assert!(day["metrics"]["aggregates"]["memory_max"].as_f64().is_some(), "{day}");
    assert!(!day["history"].as_array().unwrap().is_empty(), "the minute tier's open bucket");

    let bad = node.get_json("/api/plugin/alpha?window=2w", 400).await;
    assert_eq!(bad["code"], "bad_request");
    let unknown = node.get_json("/api/plugin/nope", 404).await;
    assert_eq!(
        (&unknown["code"], &unknown["error"]),
        (&"not_found".into(), &"unknown plugin \"nope\"".into())
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_route_answers_with_its_status_and_every_error_is_json() {
    let node = Node::start(&[("alpha", "pinga")], false).await;
    node.command("pinga").await;

    let page = node.get("/").await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("data-plugin=\"alpha\""), "one card per plugin");
    assert!(html.contains("http-equiv=\"refresh\""), "refreshes without JavaScript");
    assert!(!html.contains("data-action"), "read-only without a token");
    for (asset, kind) in
        [("/assets/dashboard.css", "text/css"), ("/assets/dashboard.js", "text/javascript")]
    {
        let response = node.get(asset).await;
        assert_eq!(response.status(), 200, "{asset}");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with(kind), "{asset}");
    }
    assert_eq!(node.get("/favicon.ico").await.status(), 204);

    let metrics = node.get("/metrics").await;
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = metrics.text().await.unwrap();
    assert!(text.contains("rosey_plugin_events_total{plugin=\"alpha\"} 1"), "{text}");
    rosey_testkit::promtool::check_metrics(&text);

    let alive = node.get_json("/healthz", 200).await;
    assert_eq!(alive["status"], "ok");
    let ready = node.get_json("/readyz", 200).await;
    assert_eq!((&ready["ready"], ready["reasons"].as_array().unwrap().len()), (&true.into(), 0));
    let names: Vec<&str> = ready["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bus", "storage", "connector", "plugins"]);

    // A connector that lost its channel, and a plugin that is stopped: not ready, with reasons.
    node.health.report(health::CONNECTOR, false, "reconnecting: connection lost");
    node.manager.stop("alpha").await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let not_ready = loop {
        let response = node.get("/readyz").await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        let reasons = body["reasons"].to_string();
        if status == 503 && reasons.contains("alpha is STOPPED") {
            break body;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {status}: {body}");
        node.polls(1).await;
    };
    let reasons: Vec<&str> =
        not_ready["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert_eq!(reasons, ["connector: reconnecting: connection lost", "plugins: alpha is STOPPED"]);

    let events = node.get_json("/api/events", 200).await;
    let events = events["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"stopped"), "newest first: {kinds:?}");
    assert!(kinds.contains(&"started"), "{kinds:?}");
    let stopped = &events[0];
    assert_eq!((&stopped["source"], &stopped["plugin"]), (&"plugin".into(), &"alpha".into()));
    assert_eq!(
        node.get_json("/api/events?limit=1", 200).await["events"].as_array().unwrap().len(),
        1
    );
    assert_eq!(node.get_json("/api/events?limit=0", 400).await["code"], "bad_request");

    assert_eq!(node.get_json("/nope", 404).await["code"], "not_found");
    let wrong_method = node.http.delete(node.url("/api/metrics")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    let body: Value = wrong_method.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
    let get_action = node.get("/api/plugin/alpha/reload").await;
    assert_eq!(get_action.status(), 405, "actions are POST-only");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_dashboard_is_read_only() {
    let node = Node::start(&[("alpha", "pinga")], false).await;
    let post = |path: &'static str, auth: Option<&'static str>| {
        let mut request = node.http.post(node.url(path));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        request.send()
    };
    for auth in [None, Some("Bearer anything-at-all-0123")] {
        let response = post("/api/plugin/alpha/restart", auth).await.unwrap();
        assert_eq!(response.status(), 403);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "read_only");
    }
    assert_eq!(node.manager.status("alpha").unwrap().restart_count, 0, "nothing happened");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_token_reload_and_restart_work_are_audited_and_the_token_never_shows() {
    let node = Node::start(&[("alpha", "pinga"), ("beta", "pingb")], true).await;
    let html = node.get("/").await.text().await.unwrap();
    assert!(html.contains("data-action=\"reload\""), "buttons with a token");
    assert!(!html.contains(TOKEN), "the token is never in the page");

    let reload = |auth: &str| {
        node.http
            .post(node.url("/api/plugin/alpha/reload"))
            .header("authorization", auth.to_owned())
            .send()
    };
    for auth in ["", "Bearer wrong-token-0123456789", "Basic dGVzdA=="] {
        let response = reload(auth).await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let text = response.text().await.unwrap();
        assert!(!text.contains(TOKEN), "{text}");
    }
    assert_eq!(node.manager.status("alpha").unwrap().version, "1.0.0", "refused: nothing happened");

    node.set_version("alpha", "1.1.0");
    let response = reload(&format!("Bearer {TOKEN}")).await.unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(
        keys(&report),
        [
            "duration_seconds",
            "failed_step",
            "from_version",
            "outcome",
            "plugin",
            "reason",
            "to_version"
        ]
    );
    assert_eq!(
        (&report["plugin"], &report["from_version"], &report["to_version"], &report["outcome"]),
        (&"alpha".into(), &"1.0.0".into(), &"1.1.0".into(), &"success".into())
    );
    // The page and the API show it at once: the action refreshed the snapshot.
    let metrics = node.get_json("/api/metrics", 200).await;
    assert_eq!(metrics["plugins"][0]["version"], "1.1.0");

    let restart = node
        .http
        .post(node.url("/api/plugin/beta/restart"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(restart.status(), 200);
    let status: Value = restart.json().await.unwrap();
    assert_eq!((&status["name"], &status["state"]), (&"beta".into(), &"RUNNING".into()));
    let unknown = node
        .http
        .post(node.url("/api/plugin/nope/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["code"], "not_found");

    // Audited like !admin commands: who (dashboard), what, the outcome.
    let writer = node.writer.as_ref().unwrap();
    assert!(writer.flush(PATIENCE).await);
    let audit = node.storage.audit_log(&AuditQuery::default()).await.unwrap();
    let rows: Vec<(&str, &str, &str, &str)> = audit
        .iter()
        .map(|a| (a.actor.as_str(), a.command.as_str(), a.arguments.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("dashboard", "reload", "nope", "failed"),
            ("dashboard", "restart", "beta", "ok"),
            ("dashboard", "reload", "alpha", "ok"),
            ("dashboard", "reload", "alpha", "denied"),
            ("dashboard", "reload", "alpha", "denied"),
            ("dashboard", "reload", "alpha", "denied"),
        ]
    );
    let events = node.get_json("/api/events?limit=3", 200).await;
    assert_eq!(events["events"][0]["source"], "admin", "{events}");
    let text = node.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains("rosey_admin_commands_total{command=\"reload\",user=\"dashboard\"} 2"),
        "{text}"
    );
    for path in ["/", "/api/metrics", "/api/events", "/metrics", "/readyz", "/api/plugin/alpha"] {
        let body = node.get(path).await.text().await.unwrap();
        assert!(!body.contains(TOKEN), "the token leaked into {path}");
    }
    node.stop().await;
}

/// Reads SSE events from a streaming response until one's data satisfies `done`.
async fn next_overview(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
    done: impl Fn(&Value) -> bool,
) -> Value {
    tokio::time::timeout(PATIENCE, async {
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let data: String = event
                    .lines()
                    .filter_map(|line| line.strip_prefix("data: ").or(line.strip_prefix("data:")))
                    .collect::<Vec<_>>()
                    .join("\n");
                if event.lines().any(|l| l == "event: overview") {
                    let value: Value = serde_json::from_str(&data).unwrap();
                    if done(&value) {
                        return value;
                    }
                }
            }
            let chunk = stream.next().await.expect("the stream stays open").unwrap();
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .expect("no matching overview event in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_delivers_an_update_after_a_reload_and_ends_on_shutdown() {
    let node = Node::start(&[("alpha", "pinga")], false).await;
    let response = node.get("/api/stream").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let card_says = |version: &'static str| {
        move |overview: &Value| {
            overview["cards"][0]["name"] == "alpha"
                && overview["cards"][0]["html"].as_str().unwrap().contains(version)
        }
    };
    let first = next_overview(&mut stream, &mut buffer, card_says("1.0.0")).await;
    assert!(first["header"].as_str().unwrap().contains("console"), "{first}");

    // A reload from elsewhere (chat, the control API): the stream shows it without being asked.
    node.set_version("alpha", "2.0.0");
    node.manager.reload("alpha").await.unwrap();
    let updated = next_overview(&mut stream, &mut buffer, card_says("2.0.0")).await;
    assert!(
        updated["timeline"].as_str().unwrap().contains("alpha"),
        "the reload is in the timeline"
    );

    // Shutting down does not wait for the open stream.
    let started = std::time::Instant::now();
    node.stop().await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let rest =
        tokio::time::timeout(PATIENCE, async { while let Some(Ok(_)) = stream.next().await {} })
            .await;
    assert!(rest.is_ok(), "the stream ended with the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_is_a_clear_error() {
    let node = Node::start(&[], false).await;
    let port = node.dashboard.as_ref().unwrap().local_addr().port();
    let options = rosey_dashboard::DashboardOptions { port, ..Default::default() };
    let second =
        rosey_dashboard::Dashboard::new(options, node.manager.clone(), node.health.clone())
            .start()
            .await;
    let error = second.expect_err("the port is taken").to_string();
    assert_eq!(
        error,
        format!("cannot listen on 127.0.0.1:{port}: Address already in use (os error 98)")
    );
    node.stop().await;
}
