#![allow(clippy::unwrap_used)]
//! The Prometheus exposition: every documented name with its labels, valid for `promtool check
//! metrics`, gauges following the snapshot, plugin-defined metrics and their limits, and the switch.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use rosey_core::bus::MemoryBusStats;
use rosey_core::metrics::{MetricsSink, ReloadOutcome};
use rosey_core::plugin::{EventCounts, LatencySummary, PluginState, PluginStatus};
use rosey_core::router::RouterStats;
use rosey_core::storage::{KvStats, WriterStats};
use rosey_metrics::prometheus::CustomMetricError;
use rosey_metrics::{ConnectorStats, NodeStats, PrometheusMetrics, PrometheusOptions};

fn status(name: &str, state: PluginState, cpu: Option<f64>, memory: Option<f64>) -> PluginStatus {
    PluginStatus {
        name: name.to_owned(),
        version: "1.0.0".to_owned(),
        state,
        pid: Some(42),
        loaded_at: None,
        uptime: Duration::from_secs(90),
        crash_count: 0,
        restart_count: 0,
        cpu_percent: cpu,
        memory_mb: memory,
        memory_cap: None,
        memory_limit_mb: None,
        cpu_limit_percent: None,
        events: EventCounts::default(),
        latency: LatencySummary::default(),
        last_error: None,
    }
}

fn all_node_stats() -> NodeStats {
    NodeStats {
        bus: Some(MemoryBusStats {
            published: 10,
            delivered: 9,
            dropped: 1,
            queued_bytes: 64,
            subscriptions: 3,
        }),
        router: Some(RouterStats {
            routed: 5,
            ignored: 7,
            unknown: 3,
            help: 4,
            malformed: 0,
            failed: 0,
            in_flight: 1,
            not_running: 2,
            unanswered: 1,
        }),
        connector: Some(ConnectorStats {
            connected: Some(true),
            reconnects: Some(2),
            chat_in: Some(12),
            chat_out: Some(4),
            cooldowns: Some(0),
            outbox_dropped: Some(0),
            outbox_queued: Some(0),
        }),
        writer: Some(WriterStats {
            written: 8,
            queued: 0,
            dropped: 0,
            rejected: 0,
            failures: 1,
            available: true,
        }),
        kv: Some(KvStats { requests: 3, errors: 1, unavailable: 0, ..KvStats::default() }),
    }
}

/// The value of the sample `series` (name with its labels, exactly as rendered), if present.
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A registry fed with one of everything the runtime reports.
fn fed() -> PrometheusMetrics {
    let metrics =
        PrometheusMetrics::new(PrometheusOptions { version: "9.8.7".into(), ..Default::default() });
    metrics.set_started_at(SystemTime::now() - Duration::from_secs(120));
    metrics.set_plugin_source(|| {
        vec![
            status("dice-roller", PluginState::Running, Some(1.5), Some(12.0)),
            status("8ball", PluginState::Failed, None, None),
        ]
    });
    metrics.set_node_stats(all_node_stats);
    metrics.event_received("dice-roller", "command");
    metrics.event_received("dice-roller", "chat");
    metrics.event_processed("dice-roller", Duration::from_millis(20), true);
    metrics.event_processed("dice-roller", Duration::from_millis(300), false);
    metrics.plugin_crashed("8ball", "exit status 1");
    metrics.plugin_restarted("8ball");
    metrics.plugin_reloaded("dice-roller", ReloadOutcome::Success, Duration::from_millis(400));
    metrics.plugin_reloaded("dice-roller", ReloadOutcome::RolledBack, Duration::from_secs(5));
    metrics.admin_command("reload", "alice");
    let labels = BTreeMap::from([("sides".to_owned(), "6".to_owned())]);
    metrics.plugin_metric("dice-roller", "rolls", "counter", 2.0, &labels);
    metrics.plugin_metric("dice-roller", "last_total", "gauge", 11.0, &BTreeMap::new());
    metrics.plugin_metric("dice-roller", "last_roll", "gauge", 11.0, &BTreeMap::new());
    metrics.plugin_metric("dice-roller", "roll_seconds", "histogram", 0.2, &BTreeMap::new());
    metrics
}

#[test]
fn every_documented_metric_is_exposed_with_its_labels_and_values() {
    let body = fed().render();
    let expected: &[(&str, f64)] = &[
        (r#"rosey_plugin_cpu_percent{plugin="dice-roller"}"#, 1.5),
        (r#"rosey_plugin_memory_mb{plugin="dice-roller"}"#, 12.0),
        (r#"rosey_plugin_uptime_seconds{plugin="dice-roller"}"#, 90.0),
        ("rosey_total_plugins", 2.0),
        ("rosey_plugins_running", 1.0),
        ("rosey_plugins_crashed", 1.0),
        (r#"rosey_plugin_events_total{plugin="dice-roller"}"#, 2.0),
        (r#"rosey_plugin_events_failed_total{plugin="dice-roller"}"#, 1.0),
        (r#"rosey_plugin_events_total{plugin="8ball"}"#, 0.0),
        (r#"rosey_plugin_crashes_total{plugin="8ball"}"#, 1.0),
        (r#"rosey_plugin_crashes_total{plugin="dice-roller"}"#, 0.0),
        (r#"rosey_plugin_restarts_total{plugin="8ball"}"#, 1.0),
        (r#"rosey_events_total{plugin="dice-roller",type="command"}"#, 1.0),
        (r#"rosey_events_total{plugin="dice-roller",type="chat"}"#, 1.0),
        (r#"rosey_plugin_reloads_total{plugin="dice-roller",status="success"}"#, 1.0),
        (r#"rosey_plugin_reloads_total{plugin="dice-roller",status="rolled_back"}"#, 1.0),
        (r#"rosey_plugin_reloads_total{plugin="8ball",status="success"}"#, 0.0),
        (r#"rosey_admin_commands_total{command="reload",user="alice"}"#, 1.0),
        (r#"rosey_plugin_response_time_seconds_count{plugin="dice-roller"}"#, 2.0),
        (r#"rosey_plugin_response_time_seconds_sum{plugin="dice-roller"}"#, 0.32),
        (r#"rosey_plugin_response_time_seconds_bucket{plugin="dice-roller",le="0.025"}"#, 1.0),
        (r#"rosey_plugin_response_time_seconds_bucket{plugin="dice-roller",le="+Inf"}"#, 2.0),
        (r#"rosey_reload_duration_seconds_count{plugin="dice-roller"}"#, 2.0),
        (r#"rosey_reload_duration_seconds_bucket{plugin="dice-roller",le="0.5"}"#, 1.0),
        (r#"rosey_build_info{version="9.8.7"}"#, 1.0),
        ("rosey_bus_messages_published_total", 10.0),
        ("rosey_bus_messages_delivered_total", 9.0),
        ("rosey_bus_messages_dropped_total", 1.0),
        ("rosey_bus_queued_bytes", 64.0),
        ("rosey_bus_subscriptions", 3.0),
        ("rosey_router_routed_total", 5.0),
        ("rosey_router_ignored_total", 7.0),
        ("rosey_router_unknown_commands_total", 3.0),
        ("rosey_router_help_total", 4.0),
        ("rosey_router_malformed_total", 0.0),
        ("rosey_router_failed_total", 0.0),
        ("rosey_router_not_running_total", 2.0),
        ("rosey_router_unanswered_total", 1.0),
        ("rosey_router_in_flight", 1.0),
        ("rosey_connector_connected", 1.0),
        ("rosey_connector_reconnects_total", 2.0),
        ("rosey_chat_messages_received_total", 12.0),
        ("rosey_chat_messages_sent_total", 4.0),
        ("rosey_connector_cooldowns_total", 0.0),
        ("rosey_connector_outbox_dropped_total", 0.0),
        ("rosey_connector_outbox_queued", 0.0),
        ("rosey_storage_records_written_total", 8.0),
        ("rosey_storage_records_dropped_total", 0.0),
        ("rosey_storage_records_rejected_total", 0.0),
        ("rosey_storage_write_failures_total", 1.0),
        ("rosey_storage_records_queued", 0.0),
        ("rosey_storage_available", 1.0),
        ("rosey_kv_requests_total", 3.0),
        ("rosey_kv_errors_total", 1.0),
        ("rosey_kv_unavailable_total", 0.0),
        (r#"rosey_custom_rolls_total{plugin="dice-roller",sides="6"}"#, 2.0),
        (r#"rosey_custom_last_roll{plugin="dice-roller"}"#, 11.0),
        (r#"rosey_custom_roll_seconds_count{plugin="dice-roller"}"#, 1.0),
        (r#"rosey_custom_metrics_refused_total{plugin="dice-roller",reason="invalid_name"}"#, 1.0),
    ];
    for (series, want) in expected {
        let got = value(&body, series).unwrap_or_else(|| panic!("{series} missing from:\n{body}"));
        assert!((got - want).abs() < 1e-9, "{series} = {got}, expected {want}");
    }
    let uptime = value(&body, "rosey_bot_uptime_seconds").unwrap();
    assert!((120.0..130.0).contains(&uptime), "bot uptime {uptime}");
    // 8ball has no CPU or memory measurement: no made-up zero.
    assert!(!body.contains(r#"rosey_plugin_cpu_percent{plugin="8ball"}"#));
    assert!(body.contains(r#"rosey_plugin_uptime_seconds{plugin="8ball"}"#));
    if cfg!(target_os = "linux") {
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
        ] {
            let v = value(&body, name).unwrap_or_else(|| panic!("{name} missing"));
            // A test process may not have used one clock tick of CPU yet.
            assert!(v > 0.0 || (name == "process_cpu_seconds_total" && v == 0.0), "{name} = {v}");
        }
        let start = value(&body, "process_start_time_seconds").unwrap();
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(start <= now + 1.0 && start > now - 3600.0, "process start {start}, now {now}");
    }
    assert!(body.contains("# TYPE rosey_plugin_response_time_seconds histogram"));
    assert!(body.contains("# TYPE rosey_plugin_crashes_total counter"));
    assert!(body.contains("# TYPE rosey_plugin_cpu_percent gauge"));
}

#[test]
fn the_exposition_passes_promtool() {
    rosey_testkit::promtool::check_metrics(&fed().render());
}

#[test]
fn gauges_follow_the_snapshot_and_a_removed_plugin_disappears() {
    let metrics = PrometheusMetrics::new(PrometheusOptions::default());
    let plugins = Arc::new(Mutex::new(vec![
        status("a", PluginState::Running, Some(3.0), Some(5.0)),
        status("b", PluginState::Running, Some(4.0), Some(6.0)),
    ]));
    let source = plugins.clone();
    metrics.set_plugin_source(move || source.lock().clone());
    let body = metrics.render();
    assert_eq!(value(&body, r#"rosey_plugin_cpu_percent{plugin="b"}"#), Some(4.0));
    assert_eq!(value(&body, "rosey_total_plugins"), Some(2.0));

    plugins.lock().retain(|p| p.name == "a");
    plugins.lock()[0].cpu_percent = Some(7.0);
    let body = metrics.render();
    assert_eq!(value(&body, r#"rosey_plugin_cpu_percent{plugin="a"}"#), Some(7.0));
    for name in
        ["rosey_plugin_cpu_percent", "rosey_plugin_memory_mb", "rosey_plugin_uptime_seconds"]
    {
        assert!(!body.contains(&format!(r#"{name}{{plugin="b"}}"#)), "{name} of b still there");
    }
    assert_eq!(value(&body, "rosey_total_plugins"), Some(1.0));
}

#[test]
fn a_node_without_sources_omits_their_metrics_and_stays_valid() {
    let metrics = PrometheusMetrics::new(PrometheusOptions::default());
    let body = metrics.render();
    assert_eq!(value(&body, "rosey_total_plugins"), Some(0.0));
    assert!(body.contains("rosey_build_info{version="));
    for absent in [
        "rosey_bus_",
        "rosey_router_",
        "rosey_connector_",
        "rosey_storage_",
        "rosey_kv_",
        "rosey_plugin_",
    ] {
        assert!(!body.contains(absent), "{absent} present without a source:\n{body}");
    }
    // A connector that only knows whether it is connected.
    metrics.set_node_stats(|| NodeStats {
        connector: Some(ConnectorStats { connected: Some(false), ..ConnectorStats::default() }),
        ..NodeStats::default()
    });
    let body = metrics.render();
    assert_eq!(value(&body, "rosey_connector_connected"), Some(0.0));
    assert!(!body.contains("rosey_connector_reconnects_total"));
    rosey_testkit::promtool::check_metrics(&body);
}

#[test]
fn disabled_renders_an_empty_body_and_records_nothing() {
    let metrics = PrometheusMetrics::new(PrometheusOptions {
        enabled: false,
        ..PrometheusOptions::default()
    });
    metrics.set_plugin_source(|| vec![status("a", PluginState::Running, Some(1.0), Some(1.0))]);
    metrics.event_processed("a", Duration::from_millis(5), true);
    metrics.plugin_metric("a", "rolls", "counter", 1.0, &BTreeMap::new());
    assert!(!metrics.enabled());
    assert_eq!(metrics.render(), "");
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn custom_metrics_add_set_and_observe() {
    let metrics = PrometheusMetrics::new(PrometheusOptions::default());
    let none = BTreeMap::new();
    for _ in 0..3 {
        metrics.record_custom("dice", "rolls", "counter", 1.5, &labels(&[("sides", "6")])).unwrap();
    }
    metrics
        .record_custom("dice", "rolls_total", "counter", 1.0, &labels(&[("sides", "6")]))
        .unwrap();
    metrics.record_custom("dice", "rolls", "counter", 1.0, &labels(&[("sides", "20")])).unwrap();
    metrics.record_custom("quotes", "rolls", "counter", 4.0, &none).unwrap();
    metrics.record_custom("dice", "queue", "gauge", 5.0, &none).unwrap();
    metrics.record_custom("dice", "queue", "gauge", -2.0, &none).unwrap();
    for v in [0.003, 0.2, 7.0] {
        metrics.record_custom("dice", "think_seconds", "histogram", v, &none).unwrap();
    }
    // Label values are escaped in the exposition, whatever a plugin sends.
    metrics
        .record_custom(
            "dice",
            "said",
            "gauge",
            1.0,
            &labels(&[("text", "a \"quote\"\nand \\ \u{e9}")]),
        )
        .unwrap();
    let body = metrics.render();
    let expected = r#"rosey_custom_said{plugin="dice",text="a \"quote\"\nand \\ é"} 1"#;
    assert!(body.contains(expected), "{body}");
    assert_eq!(value(&body, r#"rosey_custom_rolls_total{plugin="dice",sides="6"}"#), Some(5.5));
    assert_eq!(value(&body, r#"rosey_custom_rolls_total{plugin="dice",sides="20"}"#), Some(1.0));
    assert_eq!(value(&body, r#"rosey_custom_rolls_total{plugin="quotes"}"#), Some(4.0));
    assert_eq!(value(&body, r#"rosey_custom_queue{plugin="dice"}"#), Some(-2.0));
    assert_eq!(value(&body, r#"rosey_custom_think_seconds_count{plugin="dice"}"#), Some(3.0));
    assert_eq!(
        value(&body, r#"rosey_custom_think_seconds_bucket{plugin="dice",le="0.005"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(&body, r#"rosey_custom_think_seconds_bucket{plugin="dice",le="0.25"}"#),
        Some(2.0)
    );
    assert_eq!(body.matches("# TYPE rosey_custom_rolls_total counter").count(), 1);
    rosey_testkit::promtool::check_metrics(&body);
}

/// name, kind, value, labels, the expected refusal reason.
type Case<'a> = (&'a str, &'a str, f64, BTreeMap<String, String>, &'a str);

#[test]
fn invalid_custom_metrics_are_refused_and_counted() {
    let metrics = PrometheusMetrics::new(PrometheusOptions::default());
    let none = BTreeMap::new();
    let long = "x".repeat(65);
    let long_value = "v".repeat(129);
    let cases: Vec<Case<'_>> = vec![
        ("rolls", "summary", 1.0, none.clone(), "unknown_kind"),
        ("9lives", "gauge", 1.0, none.clone(), "invalid_name"),
        ("has-dash", "gauge", 1.0, none.clone(), "invalid_name"),
        ("", "gauge", 1.0, none.clone(), "invalid_name"),
        (&long, "gauge", 1.0, none.clone(), "invalid_name"),
        ("queue_total", "gauge", 1.0, none.clone(), "invalid_name"),
        ("rolls", "counter", -1.0, none.clone(), "invalid_value"),
        ("rolls", "gauge", f64::NAN, none.clone(), "invalid_value"),
        ("rolls", "histogram", f64::INFINITY, none.clone(), "invalid_value"),
        ("rolls", "counter", 1.0, labels(&[("plugin", "other")]), "invalid_label"),
        ("rolls", "counter", 1.0, labels(&[("__name__", "x")]), "invalid_label"),
        ("rolls", "counter", 1.0, labels(&[("bad-label", "x")]), "invalid_label"),
        ("rolls", "counter", 1.0, labels(&[("side", &long_value)]), "label_too_long"),
    ];
    for (name, kind, v, labels, reason) in &cases {
        let err = metrics.record_custom("dice", name, kind, *v, labels).unwrap_err();
        assert_eq!(err.reason(), *reason, "{name} {kind} {v}: {err}");
    }
    let nine: BTreeMap<String, String> =
        (0..9).map(|i| (format!("l{i}"), "v".to_owned())).collect();
    assert_eq!(
        metrics.record_custom("dice", "rolls", "counter", 1.0, &nine),
        Err(CustomMetricError::TooManyLabels(9))
    );
    let eight: BTreeMap<String, String> =
        (0..8).map(|i| (format!("l{i}"), "v".repeat(128))).collect();
    metrics.record_custom("dice", "rolls", "counter", 1.0, &eight).unwrap();

    // One kind per name, across plugins; no clash with a histogram's series.
    metrics.record_custom("dice", "latency", "histogram", 0.1, &none).unwrap();
    let err = metrics.record_custom("quotes", "rolls", "gauge", 1.0, &none).unwrap_err();
    assert_eq!(err.reason(), "kind_conflict");
    assert_eq!(
        metrics.record_custom("quotes", "latency_count", "gauge", 1.0, &none).unwrap_err().reason(),
        "kind_conflict"
    );
    assert_eq!(
        metrics.record_custom("quotes", "latency", "counter", 1.0, &none).unwrap_err().reason(),
        "kind_conflict"
    );

    let body = metrics.render();
    assert_eq!(
        value(&body, r#"rosey_custom_metrics_refused_total{plugin="dice",reason="invalid_name"}"#),
        Some(5.0)
    );
    assert_eq!(
        value(
            &body,
            r#"rosey_custom_metrics_refused_total{plugin="quotes",reason="kind_conflict"}"#
        ),
        Some(3.0)
    );
    assert!(!body.contains("rosey_custom_rolls{"), "a refused gauge was exposed");
    assert!(!body.contains("rosey_custom_latency_count{plugin=\"quotes\""));
    rosey_testkit::promtool::check_metrics(&body);
}

/// Collects what tracing writes, to count warnings.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_series_cap_refuses_the_101st_series_with_one_warning_per_plugin() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let metrics = PrometheusMetrics::new(PrometheusOptions::default());
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..100 {
            metrics
                .record_custom(
                    "chatty",
                    "hits",
                    "counter",
                    1.0,
                    &labels(&[("user", &format!("u{i}"))]),
                )
                .unwrap();
        }
        for i in 100..150 {
            let err = metrics.record_custom(
                "chatty",
                "hits",
                "counter",
                1.0,
                &labels(&[("user", &format!("u{i}"))]),
            );
            assert_eq!(err, Err(CustomMetricError::SeriesLimit));
        }
        // Existing series still count; other plugins have their own budget.
        metrics
            .record_custom("chatty", "hits", "counter", 1.0, &labels(&[("user", "u0")]))
            .unwrap();
        metrics.record_custom("quiet", "hits", "counter", 1.0, &none()).unwrap();
        assert_eq!(
            metrics.record_custom("chatty", "other", "gauge", 1.0, &none()),
            Err(CustomMetricError::SeriesLimit)
        );
    });
    let log = String::from_utf8(captured.0.lock().clone()).unwrap();
    assert_eq!(log.matches("plugin metric refused").count(), 1, "{log}");
    assert!(log.contains("chatty"), "{log}");

    let body = metrics.render();
    let series = body
        .lines()
        .filter(|l| l.starts_with(r#"rosey_custom_hits_total{plugin="chatty""#))
        .count();
    assert_eq!(series, 100);
    assert_eq!(value(&body, r#"rosey_custom_hits_total{plugin="chatty",user="u0"}"#), Some(2.0));
    assert_eq!(
        value(
            &body,
            r#"rosey_custom_metrics_refused_total{plugin="chatty",reason="series_limit"}"#
        ),
        Some(51.0)
    );
    rosey_testkit::promtool::check_metrics(&body);
}

fn none() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// A node in miniature: two real plugin processes (the Python example, loaded twice under two names)
/// under a real `PluginManager` on the in-process bus, with the registry and the collector as its
/// sinks, as `rosey run` wires them. After some commands and a reload, every metric the issue lists is
/// exposed, promtool accepts the page, and the collector has 1 h aggregates for both plugins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_with_two_plugins_exposes_every_metric_and_has_1h_aggregates() {
    use rosey_core::bus::{EventBus, MemoryBus};
    use rosey_core::event::CommandEvent;
    use rosey_core::metrics::FanoutSink;
    use rosey_core::plugin::{ManagerOptions, Manifest, PluginManager, ProcessRuntime};
    use rosey_metrics::collector::Series;
    use rosey_metrics::{CollectorOptions, MetricsCollector};

    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let prometheus = PrometheusMetrics::new(PrometheusOptions::default());
    let collector = MetricsCollector::new(CollectorOptions {
        poll_interval: Duration::from_millis(100),
        ..CollectorOptions::default()
    });
    let sink = FanoutSink::new(vec![Arc::new(prometheus.clone()), Arc::new(collector.sink())]);
    let options =
        ManagerOptions { sample_interval: Duration::from_millis(100), ..ManagerOptions::default() };
    let manager = Arc::new(
        PluginManager::builder(bus.clone(), Arc::new(ProcessRuntime::new()))
            .metrics_sink(Arc::new(sink))
            .options(options)
            .build(),
    );
    let greeter = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/python-plugin/plugin.py")
        .canonicalize()
        .unwrap();
    let root = std::env::temp_dir().join(format!("rosey-metrics-node-{}", std::process::id()));
    for (name, command) in [("alpha", "greet"), ("beta", "hello")] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let toml = format!(
            "name = \"{name}\"\nversion = \"1.0.0\"\nexec = [\"python3\", {:?}]\ncommands = [\"{command}\"]\n",
            greeter.display().to_string()
        );
        std::fs::write(dir.join("plugin.toml"), toml).unwrap();
        manager.add(Manifest::load(&dir).unwrap()).await.unwrap();
        manager.wait_running(name, Duration::from_secs(15)).await.unwrap();
    }
    let handle = collector.start(manager.clone()).await;
    let source = manager.clone();
    prometheus.set_plugin_source(move || source.snapshot());
    prometheus.set_started_at(SystemTime::now());

    for i in 0..10 {
        for command in ["greet", "hello"] {
            // Both are the greeter, which answers `greet`: `hello` reaches beta as a greet.
            let event = CommandEvent {
                channel: "lobby".into(),
                user: "alice".into(),
                rank: Some(1.0),
                command: "greet".into(),
                args: format!("n{i}"),
                message: format!("!greet n{i}"),
                time: 1,
                via: Default::default(),
            };
            let payload = serde_json::to_vec(&event).unwrap();
            let subject = format!("rosey.command.{command}");
            bus.request(&subject, payload.into(), Duration::from_secs(10)).await.unwrap();
        }
    }
    manager.reload("alpha").await.unwrap();
    prometheus.admin_command("reload", "alice");
    // Let the collector and the CPU/memory sampler see the plugins a few times.
    let reader = handle.reader();
    reader.polled(reader.poll_count() + 3).await;
    let measured = |name: &str| {
        manager.status(name).is_some_and(|s| s.cpu_percent.is_some() && s.memory_mb.is_some())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(measured("alpha") && measured("beta")) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let body = prometheus.render();
    for series in [
        "rosey_plugin_cpu_percent{plugin=\"alpha\"}",
        "rosey_plugin_memory_mb{plugin=\"beta\"}",
        "rosey_plugin_uptime_seconds{plugin=\"alpha\"}",
        "rosey_bot_uptime_seconds",
        "rosey_total_plugins",
        "rosey_plugins_running",
        "rosey_plugins_crashed",
        "rosey_plugin_crashes_total{plugin=\"beta\"}",
        "rosey_events_total{plugin=\"alpha\",type=\"command\"}",
        "rosey_plugin_reloads_total{plugin=\"alpha\",status=\"success\"}",
        "rosey_admin_commands_total{command=\"reload\",user=\"alice\"}",
        "rosey_plugin_response_time_seconds_count{plugin=\"beta\"}",
        "rosey_reload_duration_seconds_count{plugin=\"alpha\"}",
        "rosey_build_info{version=",
        "process_resident_memory_bytes",
    ] {
        assert!(body.contains(series), "{series} missing from:\n{body}");
    }
    assert_eq!(value(&body, "rosey_total_plugins"), Some(2.0));
    assert_eq!(value(&body, "rosey_plugins_running"), Some(2.0));
    assert_eq!(value(&body, "rosey_plugin_events_total{plugin=\"beta\"}"), Some(10.0));
    assert_eq!(
        value(&body, "rosey_plugin_reloads_total{plugin=\"alpha\",status=\"success\"}"),
        Some(1.0)
    );
    rosey_testkit::promtool::check_metrics(&body);

    for plugin in ["alpha", "beta"] {
        let uptime = reader.aggregate(plugin, Series::Uptime, Duration::from_secs(3600));
        let uptime = uptime.unwrap_or_else(|| panic!("no 1 h aggregate for {plugin}"));
        assert!(uptime.count >= 3 && uptime.max >= uptime.min, "{plugin}: {uptime:?}");
        assert!(reader.aggregate(plugin, Series::Memory, Duration::from_secs(3600)).is_some());
    }
    handle.shutdown().await.unwrap();
    manager.shutdown().await;
    let _ = std::fs::remove_dir_all(&root);
}
