//! The slot's state machine driven deterministically: a puppet runtime whose instances the test plays
//! by hand, the in-process runtime for whole plugins, and paused tokio time, so every transition,
//! timeout, backoff step and merge rule is checked in milliseconds with no process and no wall clock.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rosey_plugin::protocol::{HostMessage, PluginMessage};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::bus::{EventBus, EventBusExt, MemoryBus};
use crate::event::{ChatSend, CommandEvent, PmSend, Via};
use crate::plugin::{
    Action, ControlError, ExitReason, INSTANCE_INPUT_CAPACITY, Instance, InstanceOutput, Manifest,
    PluginManager, PluginRuntime, PluginState, PluginStatus, ReloadReport, RuntimeError, StartStep,
};

/// One instance of the puppet runtime, played by the test.
struct Puppet {
    input: mpsc::Receiver<HostMessage>,
    output: mpsc::Sender<InstanceOutput>,
}

impl Puppet {
    async fn next(&mut self) -> HostMessage {
        self.input.recv().await.expect("the host keeps the instance's input open")
    }

    async fn say(&self, message: PluginMessage) {
        let _ = self.output.send(InstanceOutput::Message(message)).await;
    }

    async fn exit(&self, code: i32) {
        let _ = self.output.send(InstanceOutput::Exited(ExitReason::Code(code))).await;
    }

    /// Plays a healthy start: `init` → `ready`, `ping` → `pong`.
    async fn start_healthy(&mut self, version: &str) {
        assert!(matches!(self.next().await, HostMessage::Init { .. }));
        self.finish_start(version).await;
    }

    /// Plays the rest of a healthy start once `init` was read: `ready`, then `ping` → `pong`.
    async fn finish_start(&mut self, version: &str) {
        self.say(ready(version)).await;
        let HostMessage::Ping { id } = self.next().await else { panic!("expected a ping") };
        self.say(PluginMessage::Pong { id }).await;
    }
}

fn ready(version: &str) -> PluginMessage {
    PluginMessage::Ready {
        name: "puppet".to_owned(),
        version: version.to_owned(),
        commands: vec!["roll".to_owned()],
        subscribe: Vec::new(),
    }
}

/// A runtime whose instances are handed to the test; a kill ends the instance with SIGKILL.
struct PuppetRuntime {
    started: mpsc::UnboundedSender<Puppet>,
}

#[async_trait]
impl PluginRuntime for PuppetRuntime {
    async fn start(&self, _manifest: &Manifest) -> Result<Instance, RuntimeError> {
        let (input_tx, input_rx) = mpsc::channel(INSTANCE_INPUT_CAPACITY);
        let (output_tx, output_rx) = mpsc::channel(64);
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let on_kill = output_tx.clone();
        tokio::spawn(async move {
            // Fired or dropped: either way the instance is gone.
            let _ = kill_rx.await;
            let _ = on_kill.send(InstanceOutput::Exited(ExitReason::Signal(9))).await;
        });
        let _ = self.started.send(Puppet { input: input_rx, output: output_tx });
        Ok(Instance::new(None, input_tx, output_rx, kill_tx))
    }
}

/// Writes the puppet's manifest (version `version`, more TOML in `extra`) into `dir` and parses it.
fn manifest(dir: &Path, version: &str, extra: &str) -> Manifest {
    let text = format!(
        "name = \"puppet\"\nversion = \"{version}\"\nexec = [\"puppet\"]\ncommands = [\"roll\"]\n{extra}"
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("plugin.toml"), &text).unwrap();
    Manifest::parse(&text, dir).unwrap()
}

fn scratch_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("rosey-slot-{}-{n}", std::process::id()))
}

struct Bed {
    dir: PathBuf,
    bus: Arc<dyn EventBus>,
    manager: Arc<PluginManager>,
    starts: mpsc::UnboundedReceiver<Puppet>,
}

impl Bed {
    async fn new(extra: &str) -> Self {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let (started, starts) = mpsc::unbounded_channel();
        let manager =
            Arc::new(PluginManager::new(bus.clone(), Arc::new(PuppetRuntime { started })));
        let dir = scratch_dir();
        manager.add(manifest(&dir, "1.0", extra)).await.unwrap();
        Self { dir, bus, manager, starts }
    }

    async fn instance(&mut self) -> Puppet {
        self.starts.recv().await.expect("an instance starts")
    }

    async fn serving(extra: &str) -> (Self, Puppet) {
        let mut bed = Self::new(extra).await;
        let mut puppet = bed.instance().await;
        puppet.start_healthy("1.0").await;
        bed.wait_state(PluginState::Running).await;
        (bed, puppet)
    }

    fn state(&self) -> PluginState {
        self.manager.status("puppet").unwrap().state
    }

    async fn wait_state(&self, want: PluginState) {
        while self.state() != want {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A reload running in the background.
    fn reload(&self) -> JoinHandle<Result<ReloadReport, ControlError>> {
        let manager = self.manager.clone();
        tokio::spawn(async move { manager.reload("puppet").await })
    }

    /// A restart running in the background.
    fn restart(&self) -> JoinHandle<Result<PluginStatus, ControlError>> {
        let manager = self.manager.clone();
        tokio::spawn(async move { manager.restart("puppet").await })
    }

    /// A stop running in the background.
    fn stop(&self) -> JoinHandle<Result<(), ControlError>> {
        let manager = self.manager.clone();
        tokio::spawn(async move { manager.stop("puppet").await })
    }

    async fn command(&self, args: &str) {
        self.command_from("alice", args, Via::Chat).await;
    }

    /// `!roll <args>` from `user`, said in the channel or sent by PM (`via`).
    async fn command_from(&self, user: &str, args: &str, via: Via) {
        let event = CommandEvent {
            channel: "lobby".to_owned(),
            user: user.to_owned(),
            rank: None,
            command: "roll".to_owned(),
            args: args.to_owned(),
            message: format!("!roll {args}"),
            time: 0,
            via,
        };
        self.bus.publish_json("rosey.command.roll", &event).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_first_start_passes_ready_and_pong_then_serves() {
    let mut bed = Bed::new("").await;
    let mut puppet = bed.instance().await;
    assert_eq!(bed.state(), PluginState::Starting);
    puppet.start_healthy("1.0").await;
    let status = bed.manager.wait_running("puppet", Duration::from_secs(1)).await.unwrap();
    assert_eq!(status.version, "1.0");
}

#[tokio::test(start_paused = true)]
async fn no_ready_in_time_is_a_crash_and_the_restart_follows_the_backoff() {
    let mut bed = Bed::new("[timeouts]\nready_secs = 2\n").await;
    let began = tokio::time::Instant::now();
    let mut starts = Vec::new();
    for _ in 0..6 {
        let mut puppet = bed.instance().await;
        starts.push(began.elapsed().as_secs());
        assert!(matches!(puppet.next().await, HostMessage::Init { .. }));
        // Never ready: each attempt times out after 2 s.
        std::mem::forget(puppet);
    }
    bed.wait_state(PluginState::Failed).await;
    // Ready timeouts of 2 s, then restarts after 0, 1, 2, 4, 8 s.
    assert_eq!(starts, [0, 2, 5, 9, 15, 25]);
    let status = bed.manager.status("puppet").unwrap();
    assert_eq!(status.crash_count, 6);
    assert!(status.last_error.unwrap().contains("no ready within 2s"));
}

#[tokio::test(start_paused = true)]
async fn every_start_runs_the_probe_and_a_crash_restart_waits_for_it() {
    let mut bed = Bed::new("[health]\nprobe = \"!roll 1d20\"\n").await;
    for round in 0..2 {
        let mut puppet = bed.instance().await;
        puppet.start_healthy("1.0").await;
        let HostMessage::Event { id, subject, data } = puppet.next().await else {
            panic!("round {round}: expected the probe")
        };
        assert_eq!(subject, "rosey.command.roll");
        assert_eq!(data["user"], crate::plugin::PROBE_USER);
        assert_eq!(
            bed.state(),
            PluginState::Starting,
            "round {round}: not serving before the probe"
        );
        puppet.say(PluginMessage::Reply { id, message: "17".to_owned() }).await;
        puppet.say(PluginMessage::Done { id, error: None }).await;
        bed.wait_state(PluginState::Running).await;
        puppet.exit(1).await;
        bed.wait_state(PluginState::Starting).await;
    }
    // The first start is not a restart; the second round was one (the third start is under way).
    assert_eq!(bed.manager.status("puppet").unwrap().restart_count, 1);
}

#[tokio::test(start_paused = true)]
async fn a_probe_without_a_reply_fails_the_start_at_the_probe_step() {
    let mut bed = Bed::new("[health]\nprobe = \"!roll 1d20\"\n").await;
    let mut puppet = bed.instance().await;
    puppet.start_healthy("1.0").await;
    let HostMessage::Event { id, .. } = puppet.next().await else { panic!("expected the probe") };
    let restart = bed.restart();
    // The restart replaces this start; play the restarted one and fail its probe.
    let _ = id;
    let mut second = bed.instance().await;
    second.start_healthy("1.0").await;
    let HostMessage::Event { id, .. } = second.next().await else { panic!("expected the probe") };
    second.say(PluginMessage::Done { id, error: None }).await;
    match restart.await.unwrap() {
        Err(ControlError::StartFailed(failure)) => {
            assert_eq!(failure.step, StartStep::Probe);
            assert!(failure.reason.contains("got no reply"), "{failure}");
        }
        other => panic!("expected a failed start, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_during_a_restart_wins_and_the_restart_caller_is_told() {
    let (bed, mut puppet) = Bed::serving("").await;
    let restart = bed.restart();
    assert!(matches!(puppet.next().await, HostMessage::Shutdown {}));
    let shutdown = {
        let manager = bed.manager.clone();
        tokio::spawn(async move { manager.shutdown().await })
    };
    match restart.await.unwrap() {
        Err(ControlError::Superseded { action: Action::Restart, by: Action::Shutdown, .. }) => {}
        other => panic!("expected the restart to be superseded, got {other:?}"),
    }
    puppet.exit(0).await;
    shutdown.await.unwrap();
    assert!(bed.manager.snapshot().is_empty());
}

#[tokio::test(start_paused = true)]
async fn concurrent_restarts_all_get_the_one_result() {
    let (mut bed, mut puppet) = Bed::serving("").await;
    let restarts: Vec<_> = (0..3).map(|_| bed.restart()).collect();
    assert!(matches!(puppet.next().await, HostMessage::Shutdown {}));
    puppet.exit(0).await;
    let mut second = bed.instance().await;
    second.start_healthy("1.1").await;
    let mut pids = Vec::new();
    for restart in restarts {
        let status = restart.await.unwrap().unwrap();
        // The manifest's version is shown, whatever the instance reports.
        assert_eq!(status.version, "1.0");
        pids.push(status.pid);
    }
    assert!(pids.windows(2).all(|w| w[0] == w[1]), "one instance for all: {pids:?}");
    // One stop and one start served all three.
    assert!(bed.starts.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_restart_during_a_reload_is_refused_as_busy() {
    // (Concurrent reloads joining one attempt are checked with real processes in tests/reload.rs:
    // here the manifest is read on the blocking pool, in real time, so their order is not ours.)
    let (mut bed, _serving) = Bed::serving("").await;
    manifest(&bed.dir, "1.1", "");
    let reload = bed.reload();
    let mut candidate = bed.instance().await;
    assert!(matches!(candidate.next().await, HostMessage::Init { .. }));
    match bed.manager.restart("puppet").await {
        Err(ControlError::Busy { action: Action::Reload, .. }) => {}
        other => panic!("expected busy, got {other:?}"),
    }
    candidate.finish_start("1.1").await;
    let report = reload.await.unwrap().unwrap();
    assert_eq!((report.from_version.as_str(), report.to_version.as_str()), ("1.0", "1.1"));
    assert!(bed.starts.try_recv().is_err(), "the refused restart started nothing");
}

#[tokio::test(start_paused = true)]
async fn a_bad_manifest_fails_the_reload_at_the_manifest_step_and_starts_nothing() {
    let (mut bed, _serving) = Bed::serving("").await;
    std::fs::write(bed.dir.join("plugin.toml"), "name = ").unwrap();
    match bed.manager.reload("puppet").await {
        Err(ControlError::ReloadFailed(failure)) => assert_eq!(failure.step, StartStep::Manifest),
        other => panic!("expected a manifest failure, got {other:?}"),
    }
    assert!(bed.starts.try_recv().is_err(), "no instance started for a bad manifest");
    assert_eq!(bed.state(), PluginState::Running);
}

#[tokio::test(start_paused = true)]
async fn event_deadlines_fire_in_their_own_order_after_a_reload_to_a_shorter_timeout() {
    let (mut bed, mut old) = Bed::serving("[timeouts]\nevent_secs = 10\n").await;
    let mut said = bed.bus.subscribe("cytube.chat.send").await.unwrap();
    bed.command("1").await;
    let HostMessage::Event { .. } = old.next().await else { panic!("expected the event") };
    // Reload to a 2 s event timeout while the old instance still holds its 10 s event.
    manifest(&bed.dir, "1.1", "[timeouts]\nevent_secs = 2\n");
    let reload = bed.reload();
    let mut new = bed.instance().await;
    new.start_healthy("1.1").await;
    reload.await.unwrap().unwrap();
    let began = tokio::time::Instant::now();
    bed.command("2").await;
    let HostMessage::Event { .. } = new.next().await else { panic!("expected the event") };
    let message = futures_util::StreamExt::next(&mut said).await.unwrap();
    let text: ChatSend = message.decode().unwrap();
    assert_eq!(text.message, "❌ puppet did not answer in time");
    assert_eq!(began.elapsed().as_secs(), 2, "the later, shorter deadline fired first");
}

#[tokio::test(start_paused = true)]
async fn the_replies_and_refusals_of_a_private_command_go_by_pm_to_its_sender() {
    let (bed, mut puppet) = Bed::serving("[queue]\ncapacity = 1\nmax_in_flight = 1\n").await;
    let mut said = bed.bus.subscribe("cytube.chat.send").await.unwrap();
    let mut pms = bed.bus.subscribe("cytube.pm.send").await.unwrap();
    let mut next_pm = async || -> (String, String) {
        let message = futures_util::StreamExt::next(&mut pms).await.unwrap();
        let pm: PmSend = message.decode().unwrap();
        assert_eq!(pm.channel, "lobby", "sent through the channel's connection");
        (pm.to, pm.message)
    };
    bed.command_from("alice", "1", Via::Pm).await;
    let HostMessage::Event { id, data, .. } = puppet.next().await else { panic!("an event") };
    assert_eq!(data["via"], "pm", "the plugin can tell");
    bed.command_from("bob", "2", Via::Pm).await; // waits in the queue
    bed.command_from("carol", "3", Via::Pm).await; // the queue is full
    let busy = "❌ puppet is busy, try again in a moment";
    assert_eq!(next_pm().await, ("carol".to_owned(), busy.to_owned()));
    puppet.say(PluginMessage::Reply { id, message: "one".to_owned() }).await;
    puppet.say(PluginMessage::Done { id, error: None }).await;
    assert_eq!(next_pm().await, ("alice".to_owned(), "one".to_owned()));
    let HostMessage::Event { id, .. } = puppet.next().await else { panic!("bob's event") };
    puppet.say(PluginMessage::Done { id, error: None }).await;
    // The first line said in the channel is the reply to a command said there.
    bed.command_from("dave", "4", Via::Chat).await;
    let HostMessage::Event { id, .. } = puppet.next().await else { panic!("dave's event") };
    puppet.say(PluginMessage::Reply { id, message: "out loud".to_owned() }).await;
    let message = futures_util::StreamExt::next(&mut said).await.unwrap();
    assert_eq!(message.decode::<ChatSend>().unwrap().message, "out loud");
}

#[tokio::test(start_paused = true)]
async fn stopping_shows_draining_until_the_last_event_is_done() {
    let (bed, mut puppet) = Bed::serving("").await;
    bed.command("1").await;
    let HostMessage::Event { id, .. } = puppet.next().await else { panic!("expected the event") };
    let stop = bed.stop();
    assert!(matches!(puppet.next().await, HostMessage::Shutdown {}));
    assert_eq!(bed.state(), PluginState::Draining);
    puppet.say(PluginMessage::Done { id, error: None }).await;
    bed.wait_state(PluginState::Stopping).await;
    puppet.exit(0).await;
    stop.await.unwrap().unwrap();
    assert_eq!(bed.state(), PluginState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn an_instance_that_ignores_shutdown_is_killed_after_the_grace_period() {
    let (bed, mut puppet) = Bed::serving("[timeouts]\nshutdown_grace_secs = 3\n").await;
    let began = tokio::time::Instant::now();
    let stop = bed.stop();
    assert!(matches!(puppet.next().await, HostMessage::Shutdown {}));
    stop.await.unwrap().unwrap();
    assert_eq!(began.elapsed().as_secs(), 3);
    assert_eq!(bed.state(), PluginState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_the_backoff_cancels_the_restart() {
    let (mut bed, first) = Bed::serving("").await;
    first.exit(1).await;
    // The first restart is immediate, the second after 1 s.
    let mut second = bed.instance().await;
    second.start_healthy("1.0").await;
    bed.wait_state(PluginState::Running).await;
    second.exit(1).await;
    bed.wait_state(PluginState::Crashed).await;
    bed.manager.stop("puppet").await.unwrap();
    assert_eq!(bed.state(), PluginState::Stopped);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(bed.starts.try_recv().is_err(), "no restart after the stop");
    assert_eq!(bed.state(), PluginState::Stopped);
}

#[tokio::test(start_paused = true)]
async fn a_stable_run_resets_the_restart_budget() {
    let extra = "[restart]\nmax_attempts = 1\nstable_secs = 10\n";
    let (mut bed, mut puppet) = Bed::serving(extra).await;
    for round in 0..3 {
        tokio::time::sleep(Duration::from_secs(11)).await;
        puppet.exit(1).await;
        puppet = bed.instance().await;
        puppet.start_healthy("1.0").await;
        bed.wait_state(PluginState::Running).await;
        assert_eq!(bed.manager.status("puppet").unwrap().restart_count, round + 1);
    }
    // Without a stable run, the one attempt allowed (spent on the last restart) is not renewed.
    puppet.exit(1).await;
    bed.wait_state(PluginState::Failed).await;
    assert!(bed.starts.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn events_that_arrive_during_a_restart_wait_and_reach_the_new_instance() {
    let (mut bed, first) = Bed::serving("").await;
    first.exit(1).await;
    bed.wait_state(PluginState::Starting).await;
    bed.command("3d6").await;
    let mut second = bed.instance().await;
    second.start_healthy("1.0").await;
    let HostMessage::Event { data, .. } = second.next().await else { panic!("expected the event") };
    assert_eq!(data["args"], "3d6");
}

#[tokio::test(start_paused = true)]
async fn a_crash_of_the_serving_instance_during_a_reload_lets_the_candidate_take_over() {
    let (mut bed, old) = Bed::serving("").await;
    manifest(&bed.dir, "1.1", "");
    let reload = bed.reload();
    let mut candidate = bed.instance().await;
    assert!(matches!(candidate.next().await, HostMessage::Init { .. }));
    old.exit(1).await;
    bed.wait_state(PluginState::Starting).await;
    candidate.finish_start("1.1").await;
    assert_eq!(reload.await.unwrap().unwrap().to_version, "1.1");
    let status = bed.manager.status("puppet").unwrap();
    assert_eq!((status.state, status.version.as_str()), (PluginState::Running, "1.1"));
    assert_eq!(status.crash_count, 1);
    assert!(bed.starts.try_recv().is_err(), "no crash restart beside the candidate");
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_a_reload_supersedes_it_and_stops_both_instances() {
    let (mut bed, mut old) = Bed::serving("").await;
    manifest(&bed.dir, "1.1", "");
    let reload = bed.reload();
    let mut candidate = bed.instance().await;
    assert!(matches!(candidate.next().await, HostMessage::Init { .. }));
    let stop = bed.stop();
    match reload.await.unwrap() {
        Err(ControlError::Superseded { action: Action::Reload, by: Action::Stop, .. }) => {}
        other => panic!("expected the reload to be superseded, got {other:?}"),
    }
    // The candidate was killed (its input closes), the old one told to shut down.
    assert!(candidate.input.recv().await.is_none());
    assert!(matches!(old.next().await, HostMessage::Shutdown {}));
    old.exit(0).await;
    stop.await.unwrap().unwrap();
    assert_eq!(bed.manager.status("puppet").unwrap().version, "1.0");
}

#[tokio::test(start_paused = true)]
async fn a_failed_reload_of_a_stopped_plugin_leaves_it_failed_with_the_reason() {
    let (mut bed, mut puppet) = Bed::serving("").await;
    let stop = bed.stop();
    assert!(matches!(puppet.next().await, HostMessage::Shutdown {}));
    puppet.exit(0).await;
    stop.await.unwrap().unwrap();
    manifest(&bed.dir, "1.1", "[timeouts]\nready_secs = 1\n");
    let reload = bed.reload();
    let mut candidate = bed.instance().await;
    assert!(matches!(candidate.next().await, HostMessage::Init { .. }));
    match reload.await.unwrap() {
        Err(ControlError::ReloadFailed(failure)) => {
            assert_eq!((failure.step, failure.to_version.as_str()), (StartStep::Ready, "1.1"));
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    let status = bed.manager.status("puppet").unwrap();
    assert_eq!(status.state, PluginState::Failed);
    assert_eq!(status.last_error.as_deref(), Some("no ready within 1s"));
}
