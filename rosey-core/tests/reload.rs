//! Blue-green reload with real processes: success, every failed health check, drain, zero loss.

use std::collections::HashMap;
use std::time::Duration;

use rosey_core::metrics::ReloadOutcome;
use rosey_core::plugin::{ControlError, Manifest, PluginState, ReloadReport, StartStep};

use crate::plugins::{Bed, replies, testbed_manifest};

const PATIENCE: Duration = Duration::from_secs(20);

/// Rewrites the plugin's manifest on disk, as an operator deploying a new version would.
fn deploy(manifest: &Manifest, version: &str, flags: &[&str], extra_toml: &str) {
    let fresh = testbed_manifest(&manifest.name, &manifest.commands[0].name, flags, extra_toml);
    let text = std::fs::read_to_string(fresh.dir.join("plugin.toml")).unwrap();
    let text = text.replace("version = \"1.0.0\"", &format!("version = \"{version}\""));
    std::fs::write(manifest.dir.join("plugin.toml"), text).unwrap();
}

async fn pid_of(bed: &Bed, command: &str) -> u32 {
    replies(&bed.ask(command, "pid").await)[0].parse().unwrap()
}

async fn wait_gone(pid: u32) {
    for _ in 0..500 {
        let alive =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
        if !alive {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("old process {pid} still running");
}

const PROBE: &str = "[health]\nprobe = \"!CMD probe\"";

async fn upgrade(bed: Bed) {
    let command = format!("u{}", crate::support::unique_prefix());
    let probe = PROBE.replace("CMD", &command);
    let manifest = testbed_manifest("upgrader", &command, &["--version", "1.0.0"], &probe);
    bed.start(manifest.clone()).await;
    let old_pid = pid_of(&bed, &command).await;
    deploy(&manifest, "1.1.0", &["--version", "1.1.0"], &probe);
    let report = bed.manager.reload("upgrader").await.unwrap();
    assert_eq!(report.outcome, ReloadOutcome::Success, "{report:?}");
    assert_eq!((report.from_version.as_str(), report.to_version.as_str()), ("1.0.0", "1.1.0"));
    assert!(report.duration < Duration::from_secs(3), "{report:?}");
    assert_eq!(replies(&bed.ask(&command, "version").await), ["1.1.0"]);
    let new_pid = pid_of(&bed, &command).await;
    assert_ne!(new_pid, old_pid);
    wait_gone(old_pid).await;
    let status = bed.manager.status("upgrader").unwrap();
    assert_eq!(
        (status.version.as_str(), status.pid, status.state),
        ("1.1.0", Some(new_pid), PluginState::Running)
    );
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_from_1_0_to_1_1_swaps_versions_and_retires_the_old_process_on_memory_bus() {
    upgrade(Bed::memory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_from_1_0_to_1_1_swaps_versions_and_retires_the_old_process_on_nats() {
    upgrade(Bed::nats().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_health_check_leaves_the_old_version_serving_and_names_the_step() {
    let bed = Bed::memory().await;
    let fast = "[timeouts]\nready_secs = 2\nhealth_secs = 2\n[health]\nprobe = \"!keeper probe\"";
    let manifest = testbed_manifest("keeper", "keeper", &[], fast);
    bed.start(manifest.clone()).await;
    let pid = pid_of(&bed, "keeper").await;
    let limits = format!("{fast}\n[limits]\nmemory_mb = 40");
    let cases: [(&[&str], &str, StartStep, &str); 6] = [
        (&["--exit-at-start"], fast, StartStep::Ready, "exited before ready: exited with code 3"),
        (&["--no-ready"], fast, StartStep::Ready, "no ready within 2s"),
        (&["--no-pong"], fast, StartStep::Pong, "no pong within 2s"),
        (
            &["--probe-fails"],
            fast,
            StartStep::Probe,
            "probe \"!keeper probe\" failed: probe broken",
        ),
        (&["--probe-silent"], fast, StartStep::Probe, "probe \"!keeper probe\" got no reply"),
        (&["--hog-at-start", "55"], &limits, StartStep::Memory, "over limit 40 MB"),
    ];
    for (flags, toml, step, expected) in cases {
        deploy(&manifest, "2.0.0", flags, toml);
        let failure = rolled_back(bed.manager.reload("keeper").await);
        assert_eq!(failure.step, step, "{flags:?}: {}", failure.reason);
        assert_eq!(failure.to_version, "2.0.0", "{flags:?}: the version attempted");
        let reason = failure.reason;
        assert!(reason.contains(expected), "{flags:?}: {reason}");
        assert_eq!(pid_of(&bed, "keeper").await, pid, "{flags:?}: the old process keeps serving");
        assert_eq!(bed.manager.status("keeper").unwrap().version, "1.0.0");
    }
    std::fs::write(
        manifest.dir.join("plugin.toml"),
        "name = \"keeper\"\nversion = \"3.0.0\"\nexec = [\"no-such-program\"]\ncommands = [\"keeper\"]\n",
    )
    .unwrap();
    let failure = rolled_back(bed.manager.reload("keeper").await);
    assert_eq!(failure.step, StartStep::Spawn);
    assert!(failure.reason.starts_with("no-such-program not found in "), "{}", failure.reason);
    assert_eq!(pid_of(&bed, "keeper").await, pid);
    bed.manager.shutdown().await;
}

/// The failure of a reload that was rolled back.
fn rolled_back(result: Result<ReloadReport, ControlError>) -> rosey_core::plugin::ReloadFailure {
    match result {
        Err(ControlError::ReloadFailed(failure)) => failure,
        other => panic!("expected a rollback, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_reload_while_one_runs_gets_the_same_result() {
    let bed = Bed::memory().await;
    let manifest = testbed_manifest("twice", "twice", &[], "");
    bed.start(manifest.clone()).await;
    deploy(&manifest, "1.1.0", &["--version", "1.1.0"], "");
    let (a, b) = tokio::join!(bed.manager.reload("twice"), bed.manager.reload("twice"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.outcome, ReloadOutcome::Success);
    assert_eq!(a, b, "both callers get the one reload's report");
    let twice = bed.manager.status("twice").unwrap();
    assert_eq!(twice.version, "1.1.0");
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_event_on_the_old_version_completes_during_the_drain() {
    let mut bed = Bed::memory().await;
    let manifest = testbed_manifest("drainer", "drainer", &[], "");
    bed.start(manifest.clone()).await;
    let old_pid = pid_of(&bed, "drainer").await;
    assert_eq!(bed.said().await, old_pid.to_string());
    bed.send("drainer", "slow 700").await;
    deploy(&manifest, "1.1.0", &["--version", "1.1.0"], "");
    let report = bed.manager.reload("drainer").await.unwrap();
    assert_eq!(report.outcome, ReloadOutcome::Success);
    assert_eq!(bed.said().await, "slow done", "answered by the old version while it drained");
    // The old version gets `shutdown` only once its last event is done, so once it is gone every
    // event has been counted.
    wait_gone(old_pid).await;
    let events = bed.manager.status("drainer").unwrap().events;
    assert_eq!((events.failed, events.completed), (0, 2));
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_timeout_fails_the_stuck_event_and_stops_the_old_version() {
    let mut bed = Bed::memory().await;
    let toml = "[timeouts]\ndrain_secs = 0.3";
    let manifest = testbed_manifest("stuck", "stuck", &[], toml);
    bed.start(manifest.clone()).await;
    let old_pid = pid_of(&bed, "stuck").await;
    assert_eq!(bed.said().await, old_pid.to_string());
    bed.send("stuck", "hang").await;
    deploy(&manifest, "1.1.0", &["--version", "1.1.0"], toml);
    assert_eq!(bed.manager.reload("stuck").await.unwrap().outcome, ReloadOutcome::Success);
    assert_eq!(bed.said().await, "❌ stuck did not answer in time");
    wait_gone(old_pid).await;
    let events = bed.manager.status("stuck").unwrap().events;
    assert_eq!((events.failed, events.timed_out), (1, 1));
    bed.manager.shutdown().await;
}

async fn zero_loss(mut bed: Bed) {
    let command = format!("z{}", crate::support::unique_prefix());
    // Room for every command in the queue: this test is about reloads losing nothing, not about a
    // slow (loaded) machine answering `busy`.
    let manifest = testbed_manifest("steady", &command, &[], "[queue]\ncapacity = 5000");
    bed.start(manifest.clone()).await;
    let sender = {
        let bus = bed.bus.clone();
        let channel = bed.channel.clone();
        let command = command.clone();
        tokio::spawn(async move {
            // About 2 000 commands a second, until told to stop.
            let mut n = 0u32;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                for _ in 0..20 {
                    let event = rosey_core::event::CommandEvent {
                        channel: channel.clone(),
                        user: "load".into(),
                        rank: None,
                        command: command.clone(),
                        args: format!("echo {n}"),
                        message: String::new(),
                        time: 1,
                        via: Default::default(),
                    };
                    use rosey_core::bus::EventBusExt;
                    bus.publish_json(&format!("rosey.command.{command}"), &event).await.unwrap();
                    n += 1;
                }
                if n >= 4_000 {
                    return n;
                }
            }
        })
    };
    let mut reloads = 0;
    for i in 0..20 {
        let version = format!("1.{}.0", i + 1);
        deploy(&manifest, &version, &["--version", &version], "[queue]\ncapacity = 5000");
        let report = bed.manager.reload("steady").await.unwrap();
        assert_eq!(report.outcome, ReloadOutcome::Success, "{report:?}");
        reloads += 1;
    }
    let sent = sender.await.unwrap();
    let mut seen: HashMap<String, u32> = HashMap::new();
    while seen.len() < sent as usize {
        let line = bed.said().await;
        *seen.entry(line).or_default() += 1;
    }
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "answered twice: {dupes:?}");
    assert!(seen.keys().all(|k| k.parse::<u32>().is_ok()), "an error reply: {seen:?}");
    assert_eq!(reloads, 20);
    let events = bed.manager.status("steady").unwrap().events;
    assert_eq!(events.failed, 0);
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_steady_load_lose_and_duplicate_nothing_on_memory_bus() {
    zero_loss(Bed::memory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_steady_load_lose_and_duplicate_nothing_on_nats() {
    zero_loss(Bed::nats().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_a_failed_plugin_starts_it() {
    let bed = Bed::memory().await;
    let manifest =
        testbed_manifest("lazarus", "lazarus", &["--exit-at-start"], "[restart]\nmax_attempts = 0");
    bed.manager.add(manifest.clone()).await.unwrap();
    assert!(bed.manager.wait_running("lazarus", PATIENCE).await.is_err());
    deploy(&manifest, "1.1.0", &["--version", "1.1.0"], "");
    let report = bed.manager.reload("lazarus").await.unwrap();
    assert_eq!(report.outcome, ReloadOutcome::Success, "{report:?}");
    assert_eq!(replies(&bed.ask("lazarus", "version").await), ["1.1.0"]);
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_control_request_over_nats_covers_every_node_and_reloads_roll_node_by_node() {
    use bytes::Bytes;
    use rosey_core::bus::{EventBus, NatsBus};
    use rosey_core::control::ControlService;
    use serde_json::{Value, json};
    use std::sync::Arc;

    // A NATS server of this test's own: the control subjects are the same for every cluster.
    let server = rosey_testkit::nats::NatsServer::start();
    let connect = || async { Arc::new(NatsBus::connect(server.url()).await.unwrap()) };
    let command = format!("k{}", crate::support::unique_prefix());
    let mut nodes = Vec::new();
    let mut members = Vec::new();
    let mut manifests = Vec::new();
    for name in ["alpha", "beta"] {
        let bus: Arc<dyn EventBus> = connect().await;
        let bed = Bed::on(bus.clone()).await;
        let manifest = testbed_manifest("controlled", &command, &[], "");
        bed.start(manifest.clone()).await;
        if name == "beta" {
            let solo = format!("s{}", crate::support::unique_prefix());
            bed.start(testbed_manifest("solo", &solo, &[], "")).await;
        }
        let manager = Arc::new(bed.manager);
        let service = ControlService::new(bus, manager.clone()).node(name);
        members.push(service.members());
        nodes.push((service.start().await.unwrap(), manager));
        manifests.push(manifest);
    }

    // An operator on another connection.
    let operator = connect().await;
    let ask = |subject: &'static str, body: Value| {
        let operator = operator.clone();
        async move {
            let body = Bytes::from(body.to_string());
            let reply = operator.request(subject, body, PATIENCE).await.unwrap();
            serde_json::from_slice::<Value>(reply.payload()).unwrap()
        }
    };
    let where_ = |answer: &Value, key: &str| -> Vec<(String, String)> {
        let items = answer[key].as_array().cloned().unwrap_or_default();
        let field = |item: &Value, k: &str| item[k].as_str().unwrap_or_default().to_owned();
        items.iter().map(|item| (field(item, "node"), field(item, "name"))).collect()
    };
    // The nodes find each other through their heartbeats (a newcomer's is answered at once).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !members.iter().all(|m| m.known() == ["alpha", "beta"]) {
        assert!(tokio::time::Instant::now() < deadline, "the nodes never met");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What a list says after a membership change settles within moments (it reaches every node
    // over the bus).
    let list_until = |done: fn(&Value) -> bool| {
        let ask = &ask;
        async move {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            loop {
                let list = ask("rosey.control.list", json!({})).await;
                if done(&list) {
                    return list;
                }
                assert!(tokio::time::Instant::now() < deadline, "the list never settled: {list}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let list = ask("rosey.control.list", json!({})).await;
    assert_eq!(list["nodes"], json!(["alpha", "beta"]), "{list}");
    let pair = |node: &str, name: &str| (node.to_owned(), name.to_owned());
    assert_eq!(
        where_(&list, "plugins"),
        [pair("alpha", "controlled"), pair("beta", "controlled"), pair("beta", "solo")]
    );
    assert_eq!(list["unanswered"], json!([]));
    let status = ask("rosey.control.status", json!({"name": "controlled"})).await;
    assert_eq!(
        where_(&status, "plugins"),
        [pair("alpha", "controlled"), pair("beta", "controlled")]
    );

    // A reload reaches every node that runs the plugin, one after the other.
    for manifest in &manifests {
        deploy(manifest, "1.1.0", &["--version", "1.1.0"], "");
    }
    let reload = ask("rosey.control.reload", json!({"name": "controlled"})).await;
    assert_eq!(reload["outcome"], "success", "{reload}");
    let reports = reload["reports"].as_array().unwrap();
    let rolled: Vec<(&str, &str)> = reports
        .iter()
        .map(|r| (r["node"].as_str().unwrap(), r["to_version"].as_str().unwrap()))
        .collect();
    assert_eq!(rolled, [("alpha", "1.1.0"), ("beta", "1.1.0")]);

    // A failure on the first node stops the roll there: the next node keeps its version.
    deploy(&manifests[0], "1.2.0", &["--no-pong"], "[timeouts]\nhealth_secs = 0.3");
    deploy(&manifests[1], "1.2.0", &["--version", "1.2.0"], "");
    let failed = ask("rosey.control.reload", json!({"name": "controlled"})).await;
    assert_eq!(
        (&failed["outcome"], &failed["stopped_at"], &failed["skipped"]),
        (&json!("failed"), &json!("alpha"), &json!(["beta"])),
        "{failed}"
    );
    assert_eq!(failed["reports"][0]["outcome"], "rolled_back", "{failed}");
    let versions = ask("rosey.control.status", json!({"name": "controlled"})).await;
    let versions: Vec<&str> = versions["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.1.0", "1.1.0"], "alpha rolled back, beta untouched");

    let restart = ask("rosey.control.restart", json!({"name": "solo"})).await;
    assert_eq!(restart["outcome"], "success", "{restart}");
    assert_eq!(where_(&restart, "statuses"), [pair("beta", "solo")]);
    let unknown = ask("rosey.control.reload", json!({"name": "nope"})).await;
    assert_eq!(unknown["code"], "not_found", "{unknown}");
    let bad = operator.request("rosey.control.reload", Bytes::from("{not json"), PATIENCE).await;
    let bad: Value = serde_json::from_slice(bad.unwrap().payload()).unwrap();
    assert!(bad["error"].as_str().unwrap().starts_with("bad request"), "{bad}");

    // A node that announces itself but does not answer is named, not waited for forever.
    let ghost = json!({"node": "ghost", "instance": "0"}).to_string();
    operator.publish("rosey.node.heartbeat", Bytes::from(ghost)).await.unwrap();
    operator.flush().await.unwrap();
    let list = list_until(|list| list["unanswered"] == json!(["ghost"])).await;
    assert_eq!(list["nodes"], json!(["alpha", "beta"]), "the others answered all the same");

    // A node that stops says goodbye: the others stop asking it at once.
    let (beta_service, beta_manager) = nodes.pop().unwrap();
    beta_service.shutdown().await.unwrap();
    beta_manager.shutdown().await;
    let left = |list: &Value| !list.to_string().contains("\"beta\"");
    let list = list_until(left).await;
    assert_eq!(list["nodes"], json!(["alpha"]), "beta is no member any more: {list}");
    let (alpha_service, alpha_manager) = nodes.pop().unwrap();
    alpha_service.shutdown().await.unwrap();
    alpha_manager.shutdown().await;
}

/// Records what the runtime tells its metrics sink about reloads.
#[derive(Default)]
struct RecordingSink(parking_lot::Mutex<Vec<(String, ReloadOutcome)>>);

impl rosey_core::metrics::MetricsSink for RecordingSink {
    fn plugin_reloaded(&self, plugin: &str, outcome: ReloadOutcome, duration: Duration) {
        assert!(duration < PATIENCE);
        self.0.lock().push((plugin.to_owned(), outcome));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_announced_on_the_bus_and_heard_by_the_metrics_sink() {
    let mut bed = Bed::memory().await;
    let sink = std::sync::Arc::new(RecordingSink::default());
    bed.manager = rosey_core::plugin::PluginManager::builder(
        bed.bus.clone(),
        std::sync::Arc::new(rosey_core::plugin::ProcessRuntime::new()),
    )
    .metrics_sink(sink.clone())
    .build();
    let manifest = testbed_manifest("herald", "herald", &["--version", "1.0.0"], "");
    bed.start(manifest.clone()).await;
    deploy(&manifest, "1.1.0", &["--version", "1.1.0"], "");
    bed.manager.reload("herald").await.unwrap();
    let reloaded = bed.lifecycle("herald", "reloaded").await;
    assert_eq!(
        (reloaded.from_version.as_deref(), reloaded.version.as_deref()),
        (Some("1.0.0"), Some("1.1.0"))
    );
    assert!(reloaded.duration_seconds.is_some_and(|s| s > 0.0) && reloaded.pid.is_some());
    deploy(&manifest, "1.2.0", &["--no-pong"], "[timeouts]\nhealth_secs = 0.3");
    bed.manager.reload("herald").await.unwrap_err();
    let failed = bed.lifecycle("herald", "reload_failed").await;
    assert_eq!(failed.reason.as_deref(), Some("pong: no pong within 0.3s"));
    assert_eq!(
        (failed.from_version.as_deref(), failed.version.as_deref()),
        (Some("1.1.0"), Some("1.2.0")),
        "the version attempted"
    );
    assert_eq!(bed.manager.status("herald").unwrap().version, "1.1.0", "the serving version");
    assert_eq!(
        *sink.0.lock(),
        [
            ("herald".to_owned(), ReloadOutcome::Success),
            ("herald".to_owned(), ReloadOutcome::RolledBack)
        ]
    );
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_reload_goes_one_plugin_at_a_time_and_stops_at_the_first_failure() {
    let bed = Bed::memory().await;
    let a = testbed_manifest("roll-a", "rolla", &[], "");
    let b = testbed_manifest("roll-b", "rollb", &[], "");
    let c = testbed_manifest("roll-c", "rollc", &[], "");
    for m in [&a, &b, &c] {
        bed.start(m.clone()).await;
    }
    deploy(&a, "1.1.0", &["--version", "1.1.0"], "");
    deploy(&b, "1.1.0", &["--exit-at-start"], "");
    deploy(&c, "1.1.0", &["--version", "1.1.0"], "");
    let reports = bed.manager.reload_all().await;
    let outcomes: Vec<(&str, ReloadOutcome)> =
        reports.iter().map(|r| (r.name.as_str(), r.outcome)).collect();
    assert_eq!(
        outcomes,
        [("roll-a", ReloadOutcome::Success), ("roll-b", ReloadOutcome::RolledBack)]
    );
    assert_eq!(bed.manager.status("roll-c").unwrap().version, "1.0.0", "stopped before roll-c");
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_waiting_for_a_crashed_plugin_survive_a_reload() {
    let mut bed = Bed::memory().await;
    let manifest = testbed_manifest("waiting", "waiting", &[], "");
    bed.start(manifest.clone()).await;
    // Two quick crashes: the first restart is immediate, the second waits 1 s (the backoff).
    for _ in 0..2 {
        let pid = pid_of(&bed, "waiting").await;
        assert_eq!(bed.said().await, pid.to_string());
        std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        bed.lifecycle("waiting", "crashed").await;
        if bed.manager.status("waiting").unwrap().restart_count == 0 {
            bed.lifecycle("waiting", "restarted").await;
        }
    }
    assert_eq!(bed.manager.status("waiting").unwrap().state, PluginState::Crashed);
    for i in 0..3 {
        bed.send("waiting", &format!("echo kept {i}")).await;
    }
    deploy(&manifest, "1.1.0", &["--version", "1.1.0"], "");
    let report = bed.manager.reload("waiting").await.unwrap();
    assert_eq!(report.outcome, ReloadOutcome::Success, "{report:?}");
    let mut heard = Vec::new();
    for _ in 0..3 {
        heard.push(bed.said().await);
    }
    heard.sort();
    assert_eq!(heard, ["kept 0", "kept 1", "kept 2"]);
    assert_eq!(replies(&bed.ask("waiting", "version").await), ["1.1.0"]);
    bed.manager.shutdown().await;
}
