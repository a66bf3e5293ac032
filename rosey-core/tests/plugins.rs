//! The plugin manager with real child processes: a Python test plugin (`tests/plugins/testbed.py`)
//! that can misbehave on request, the bundled Rust plugins, and the Python example.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rosey_core::bus::{EventBus, EventBusExt, MemoryBus, NatsBus, Subscription};
use rosey_core::event::{ChatMessage, ChatSend, CommandEvent, LifecycleEvent};
use rosey_core::plugin::{ManagerOptions, Manifest, PluginManager, PluginState, ProcessRuntime};
use rosey_core::router::{Router, RouterOptions};
use serde_json::Value;

use crate::support::unique_prefix;

/// Generous bound for anything that involves starting a process or waiting for a restart.
const PATIENCE: Duration = Duration::from_secs(20);

fn testbed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/testbed.py")
}

/// A plugin folder in a fresh temp dir, running testbed.py with `flags`, owning `command`.
pub(crate) fn testbed_manifest(
    name: &str,
    command: &str,
    flags: &[&str],
    extra_toml: &str,
) -> Manifest {
    let dir = std::env::temp_dir().join(format!("rosey-plugin-{}", unique_prefix())).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut exec =
        vec![format!("{:?}", "python3"), format!("{:?}", testbed().display().to_string())];
    exec.extend(flags.iter().map(|f| format!("{f:?}")));
    let toml = format!(
        "name = \"{name}\"\nversion = \"1.0.0\"\nexec = [{}]\ncommands = [\"{command}\"]\n{extra_toml}\n",
        exec.join(", ")
    );
    std::fs::write(dir.join("plugin.toml"), toml).unwrap();
    Manifest::load(&dir).unwrap()
}

/// A manager on a bus, with a test channel and the bus traffic a user would see.
pub(crate) struct Bed {
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) manager: PluginManager,
    pub(crate) channel: String,
    chat: Subscription,
    lifecycle: Subscription,
}

impl Bed {
    pub(crate) async fn memory() -> Self {
        Self::on(Arc::new(MemoryBus::new())).await
    }

    pub(crate) async fn nats() -> Self {
        Self::on(Arc::new(NatsBus::connect(&crate::support::nats_url()).await.unwrap())).await
    }

    pub(crate) async fn on(bus: Arc<dyn EventBus>) -> Self {
        let manager = PluginManager::builder(bus.clone(), Arc::new(ProcessRuntime::new()))
            .options(ManagerOptions {
                sample_interval: Duration::from_millis(100),
                ..ManagerOptions::default()
            })
            .build();
        let chat = bus.subscribe("cytube.chat.send").await.unwrap();
        let lifecycle = bus.subscribe("rosey.plugin.>").await.unwrap();
        Self { bus, manager, channel: unique_prefix(), chat, lifecycle }
    }

    /// Adds a plugin and waits until it serves.
    pub(crate) async fn start(&self, manifest: Manifest) {
        let name = manifest.name.clone();
        self.manager.add(manifest).await.unwrap();
        self.manager.wait_running(&name, PATIENCE).await.unwrap();
    }

    fn event(&self, command: &str, args: &str) -> CommandEvent {
        CommandEvent {
            channel: self.channel.clone(),
            user: "alice".into(),
            rank: Some(1.0),
            command: command.into(),
            args: args.into(),
            message: format!("!{command} {args}"),
            time: 1,
            via: Default::default(),
        }
    }

    /// Publishes a command event as the router would.
    pub(crate) async fn send(&self, command: &str, args: &str) {
        let event = self.event(command, args);
        self.bus.publish_json(&format!("rosey.command.{command}"), &event).await.unwrap();
    }

    /// Sends a command as a bus request; returns the slot's `{replies, error}` answer.
    pub(crate) async fn ask(&self, command: &str, args: &str) -> Value {
        let payload = Bytes::from(serde_json::to_vec(&self.event(command, args)).unwrap());
        let reply =
            self.bus.request(&format!("rosey.command.{command}"), payload, PATIENCE).await.unwrap();
        serde_json::from_slice(reply.payload()).unwrap()
    }

    /// The next chat line said in the test channel.
    pub(crate) async fn said(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.chat.next()).await.unwrap().unwrap();
            let send: ChatSend = msg.decode().unwrap();
            if send.channel == self.channel {
                return send.message;
            }
        }
    }

    /// Waits for the lifecycle event `rosey.plugin.<name>.<kind>`.
    pub(crate) async fn lifecycle(&mut self, name: &str, kind: &str) -> LifecycleEvent {
        let subject = format!("rosey.plugin.{name}.{kind}");
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.lifecycle.next())
                .await
                .unwrap_or_else(|_| panic!("no {subject}"))
                .unwrap();
            if msg.subject() == subject {
                return msg.decode().unwrap();
            }
        }
    }
}

pub(crate) fn replies(answer: &Value) -> Vec<String> {
    answer["replies"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

pub(crate) fn kill9(pid: u32) {
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

async fn command_round_trip(mut bed: Bed) {
    let command = format!("c{}", unique_prefix());
    bed.start(testbed_manifest("echoer", &command, &[], "")).await;
    bed.send(&command, "echo hello \"quoted\" ünïcode").await;
    assert_eq!(bed.said().await, "hello \"quoted\" ünïcode");
    let answer = bed.ask(&command, "multi 3").await;
    assert_eq!(replies(&answer), ["line 0", "line 1", "line 2"]);
    assert!(answer["error"].is_null());
    let status = bed.manager.status("echoer").unwrap();
    assert_eq!(status.events.completed, 2);
    assert_eq!(status.events.in_flight, 0);
    assert!(status.latency.count == 2 && status.latency.p50 > Duration::ZERO);
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reaches_a_process_plugin_and_its_replies_reach_the_channel_on_memory_bus() {
    command_round_trip(Bed::memory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reaches_a_process_plugin_and_its_replies_reach_the_channel_on_nats() {
    command_round_trip(Bed::nats().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_plugin_is_restarted_and_serves_again() {
    let mut bed = Bed::memory().await;
    bed.start(testbed_manifest("phoenix", "phoenix", &[], "")).await;
    let first_pid: u32 = replies(&bed.ask("phoenix", "pid").await)[0].parse().unwrap();
    kill9(first_pid);
    let crashed = bed.lifecycle("phoenix", "crashed").await;
    assert_eq!(crashed.reason.as_deref(), Some("killed by SIGKILL"));
    assert_eq!(crashed.pid, Some(first_pid));
    let restarted = bed.lifecycle("phoenix", "restarted").await;
    assert_ne!(restarted.pid, Some(first_pid));
    let second_pid: u32 = replies(&bed.ask("phoenix", "pid").await)[0].parse().unwrap();
    assert_eq!(Some(second_pid), restarted.pid);
    assert!(!pid_alive(first_pid));
    let status = bed.manager.status("phoenix").unwrap();
    assert_eq!((status.crash_count, status.restart_count), (1, 1));
    assert_eq!(status.state, PluginState::Running);
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_while_a_plugin_restarts_wait_and_are_answered() {
    let mut bed = Bed::memory().await;
    bed.start(testbed_manifest("patient", "patient", &[], "")).await;
    let pid: u32 = replies(&bed.ask("patient", "pid").await)[0].parse().unwrap();
    assert_eq!(bed.said().await, pid.to_string());
    kill9(pid);
    bed.lifecycle("patient", "crashed").await;
    for i in 0..5 {
        bed.send("patient", &format!("echo queued {i}")).await;
    }
    let mut heard = Vec::new();
    for _ in 0..5 {
        heard.push(bed.said().await);
    }
    heard.sort();
    assert_eq!(heard, (0..5).map(|i| format!("queued {i}")).collect::<Vec<_>>());
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_ends_in_failed_until_an_operator_restarts_it() {
    let mut bed = Bed::memory().await;
    // Two attempts (after 0 s and 1 s) keep the test short; the rule is the same with five.
    let manifest =
        testbed_manifest("doomed", "doomed", &["--exit-at-start"], "[restart]\nmax_attempts = 2");
    bed.manager.add(manifest).await.unwrap();
    let err = bed.manager.wait_running("doomed", PATIENCE).await.unwrap_err();
    assert!(err.to_string().contains("exited before ready: exited with code 3"), "{err}");
    let status = bed.manager.status("doomed").unwrap();
    assert_eq!(status.state, PluginState::Failed);
    assert_eq!(status.crash_count, 3, "first start and two restarts");
    for _ in 0..3 {
        bed.lifecycle("doomed", "crashed").await;
    }
    // Commands to a FAILED plugin find nobody listening.
    let err =
        bed.bus.request("rosey.command.doomed", Bytes::from("{}"), PATIENCE).await.unwrap_err();
    assert!(err.to_string().contains("no responders"), "{err}");
    let err = bed.manager.restart("doomed").await.unwrap_err();
    assert!(err.to_string().contains("exited before ready"), "{err}");
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unknown_and_oversize_lines_are_counted_and_the_plugin_keeps_working() {
    let bed = Bed::memory().await;
    bed.start(testbed_manifest("noisy", "noisy", &[], "")).await;
    assert_eq!(replies(&bed.ask("noisy", "garbage").await), ["still here"]);
    assert_eq!(replies(&bed.ask("noisy", "echo ok").await), ["ok"]);
    let status = bed.manager.status("noisy").unwrap();
    // Not JSON, no type, a reply with a bad id, and a 1 MiB+ line; the unknown type is ignored.
    assert_eq!(status.events.malformed_lines, 4);
    assert_eq!(status.crash_count, 0);
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_event_times_out_and_a_hung_plugin_is_restarted() {
    let mut bed = Bed::memory().await;
    bed.start(testbed_manifest("sleepy", "sleepy", &[], "[timeouts]\nevent_secs = 0.3")).await;
    let answer = bed.ask("sleepy", "hang").await;
    assert_eq!(answer["error"], "no done within 0.3s");
    assert_eq!(bed.said().await, "❌ sleepy did not answer in time");
    bed.ask("sleepy", "hang").await;
    bed.ask("sleepy", "hang").await;
    let crashed = bed.lifecycle("sleepy", "crashed").await;
    assert_eq!(crashed.reason.as_deref(), Some("hung: 3 events in a row timed out"));
    bed.lifecycle("sleepy", "restarted").await;
    assert_eq!(replies(&bed.ask("sleepy", "echo awake").await), ["awake"]);
    assert_eq!(bed.manager.status("sleepy").unwrap().events.timed_out, 3);
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_over_its_memory_limit_is_killed_with_the_reason() {
    let mut bed = Bed::memory().await;
    bed.start(testbed_manifest("hog", "hog", &[], "[limits]\nmemory_mb = 60")).await;
    bed.ask("hog", "alloc 75").await;
    let crashed = bed.lifecycle("hog", "crashed").await;
    let reason = crashed.reason.unwrap();
    assert!(reason.starts_with("memory ") && reason.ends_with("over limit 60 MB"), "{reason}");
    bed.lifecycle("hog", "restarted").await;
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_over_its_cpu_limit_is_killed_with_the_reason() {
    let mut bed = Bed::memory().await;
    bed.start(testbed_manifest("spinner", "spinner", &[], "[limits]\ncpu_percent = 30")).await;
    bed.ask("spinner", "spin").await;
    let crashed = bed.lifecycle("spinner", "crashed").await;
    let reason = crashed.reason.unwrap();
    assert!(reason.starts_with("cpu ") && reason.ends_with("over limit 30%"), "{reason}");
    bed.manager.shutdown().await;
}

fn own_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_flooding_stdout_and_stderr_does_not_grow_host_memory() {
    let bed = Bed::memory().await;
    bed.start(testbed_manifest("flood", "flood", &[], "[timeouts]\nevent_secs = 120")).await;
    let before = own_rss_mb();
    // 100 MB through each pipe, far more than the host may hold.
    assert_eq!(replies(&bed.ask("flood", "flood-stdout 100").await), ["flooded"]);
    assert_eq!(replies(&bed.ask("flood", "flood-stderr 100").await), ["flooded"]);
    let grown = own_rss_mb() - before;
    assert!(grown < 48.0, "host RSS grew by {grown:.0} MB while 200 MB went through the pipes");
    assert_eq!(replies(&bed.ask("flood", "echo alive").await), ["alive"]);
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_handshake_names_the_step() {
    let bed = Bed::memory().await;
    let fast = "[timeouts]\nready_secs = 2\nhealth_secs = 2\n[restart]\nmax_attempts = 0";
    for (name, flag, expected) in [
        ("mute", "--no-ready", "ready: no ready within 2s"),
        ("deaf", "--no-pong", "pong: no pong within 2s"),
    ] {
        bed.manager.add(testbed_manifest(name, name, &[flag], fast)).await.unwrap();
        let err = bed.manager.wait_running(name, PATIENCE).await.unwrap_err();
        assert!(err.to_string().contains(expected), "{name}: {err}");
    }
    let mut missing = testbed_manifest("ghost", "ghost", &[], "[restart]\nmax_attempts = 0");
    missing.exec = vec!["no-such-program-anywhere".into()];
    bed.manager.add(missing).await.unwrap();
    let err = bed.manager.wait_running("ghost", PATIENCE).await.unwrap_err();
    assert!(err.to_string().contains("spawn: "), "{err}");
    assert!(err.to_string().contains("no-such-program-anywhere"), "{err}");
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_plugin_ends_its_process_and_unsubscribes_it() {
    let mut bed = Bed::memory().await;
    bed.start(testbed_manifest("quitter", "quitter", &[], "")).await;
    let pid: u32 = replies(&bed.ask("quitter", "pid").await)[0].parse().unwrap();
    bed.manager.stop("quitter").await.unwrap();
    bed.lifecycle("quitter", "stopped").await;
    assert!(!pid_alive(pid));
    assert_eq!(bed.manager.status("quitter").unwrap().state, PluginState::Stopped);
    let err =
        bed.bus.request("rosey.command.quitter", Bytes::from("{}"), PATIENCE).await.unwrap_err();
    assert!(err.to_string().contains("no responders"), "{err}");
    bed.manager.restart("quitter").await.unwrap();
    assert_eq!(replies(&bed.ask("quitter", "echo back").await), ["back"]);
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_manifest_is_reported_with_its_file_and_key_and_the_others_load() {
    let root = std::env::temp_dir().join(format!("rosey-plugins-{}", unique_prefix()));
    let good = testbed_manifest("good", &format!("g{}", unique_prefix()), &[], "");
    let good_dir = root.join("good");
    std::fs::create_dir_all(&good_dir).unwrap();
    std::fs::copy(good.dir.join("plugin.toml"), good_dir.join("plugin.toml")).unwrap();
    std::fs::create_dir_all(root.join("broken")).unwrap();
    std::fs::write(
        root.join("broken/plugin.toml"),
        "name = \"broken\"\nversion = \"1\"\nexec = []\n",
    )
    .unwrap();

    let bed = Bed::memory().await;
    let errors = bed.manager.load_dir(&root).await;
    assert_eq!(errors.len(), 1);
    let text = errors[0].to_string();
    assert!(text.contains("broken/plugin.toml") && text.contains("exec:"), "{text}");
    bed.manager.wait_running("good", PATIENCE).await.unwrap();
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_plugin_written_from_the_protocol_doc_works() {
    let bed = Bed::memory().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-plugin");
    bed.start(Manifest::load(&dir).unwrap()).await;
    assert_eq!(replies(&bed.ask("greet", "").await), ["👋 Hello, alice!"]);
    assert_eq!(replies(&bed.ask("greet", "Bob").await), ["👋 Hello, Bob!"]);
    let status = bed.manager.status("python-greeter").unwrap();
    assert_eq!((status.version.as_str(), status.events.completed), ("1.0.0", 2));
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_key_value_example_keeps_notes_in_a_real_database() {
    use rosey_core::storage::{KvLimits, KvService};
    let bed = Bed::memory().await;
    let (storage, _dir) = crate::storage::open_sqlite().await;
    let kv = KvService::new(bed.bus.clone(), storage.clone(), KvLimits::default())
        .queue_group(None)
        .start()
        .await
        .unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-plugin/remember");
    bed.start(Manifest::load(&dir).unwrap()).await;
    assert_eq!(replies(&bed.ask("remember", "tea at five").await), ["🧠 Got it, alice"]);
    assert_eq!(replies(&bed.ask("recall", "").await), ["🧠 alice said: \"tea at five\""]);
    assert_eq!(
        replies(&bed.ask("recall", "bob").await),
        ["🤷 Nothing from bob (I remember 1 people)"]
    );
    // The note is in the database under the plugin's own name.
    let entry = storage.kv_get("python-remember", "note:alice").await.unwrap().unwrap();
    assert_eq!(entry.value, r#"{"by":"alice","text":"tea at five"}"#);
    bed.manager.shutdown().await;
    kv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundled_plugins_answer_through_the_host() {
    let bed = Bed::memory().await;
    let errors =
        bed.manager.load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins")).await;
    assert!(errors.is_empty(), "{errors:?}");
    for name in ["dice-roller", "8ball"] {
        bed.manager.wait_running(name, PATIENCE).await.unwrap();
    }
    let roll = &replies(&bed.ask("roll", "1d20+5").await)[0];
    assert!(roll.starts_with("🎲 [") && roll.contains("] + 5 = "), "{roll}");
    assert_eq!(replies(&bed.ask("roll", "21d6").await), ["❌ At most 20 dice"]);
    let flip = &replies(&bed.ask("flip", "").await)[0];
    assert!(flip == "🪙 Heads!" || flip == "🪙 Tails!", "{flip}");
    let answer = &replies(&bed.ask("8ball", "is Rust fun?").await)[0];
    assert!(answer.starts_with("🎱 \"is Rust fun?\" — "), "{answer}");
    bed.manager.shutdown().await;
}

async fn chat_through_the_router(bed: Bed) {
    let mut bed = bed;
    let command = format!("c{}", unique_prefix());
    bed.start(testbed_manifest("chatty", &command, &[], "")).await;
    let options = RouterOptions { queue_group: unique_prefix(), ..RouterOptions::default() };
    let router =
        Router::new(bed.bus.clone(), bed.manager.command_table(), options).start().await.unwrap();
    let chat = ChatMessage::new(&bed.channel, "alice", &format!("!{command} echo 🎲 hi"), 1);
    bed.bus.publish_json("cytube.chat.message", &chat).await.unwrap();
    assert_eq!(bed.said().await, "🎲 hi");
    router.shutdown().await.unwrap();
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_reaches_a_plugin_through_the_router_and_the_reply_comes_back_on_memory_bus() {
    chat_through_the_router(Bed::memory().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_reaches_a_plugin_through_the_router_and_the_reply_comes_back_on_nats() {
    let _turn = crate::support::NATS_ROUTERS.lock().await;
    chat_through_the_router(Bed::nats().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_wait_queue_answers_the_overflow_with_an_error_and_loses_nothing_else() {
    let mut bed = Bed::memory().await;
    let toml = "[queue]\ncapacity = 2\nmax_in_flight = 1";
    bed.start(testbed_manifest("narrow", "narrow", &[], toml)).await;
    bed.send("narrow", "slow 300").await;
    for i in 0..4 {
        bed.send("narrow", &format!("echo {i}")).await;
    }
    let mut heard = Vec::new();
    for _ in 0..5 {
        heard.push(bed.said().await);
    }
    heard.sort();
    assert_eq!(
        heard,
        [
            "0",
            "1",
            "slow done",
            "❌ narrow is busy, try again in a moment",
            "❌ narrow is busy, try again in a moment"
        ]
    );
    // A last request returns after its `done`, so every earlier event has been counted by then.
    assert_eq!(replies(&bed.ask("narrow", "echo last").await), ["last"]);
    let events = bed.manager.status("narrow").unwrap().events;
    assert_eq!((events.overflowed, events.completed, events.failed), (2, 4, 2));
    bed.manager.shutdown().await;
}
