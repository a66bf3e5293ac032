//! The plugin slot: one task per plugin that owns its bus subscription, its wait queue, its in-flight
//! events and its instances, and supervises them.
//!
//! The subscription belongs to the slot, not to a process, so instances can come and go (crash restart,
//! operator restart, reload) without an event falling between two subscriptions. One code path starts
//! an instance whatever the reason ([`Slot::begin_start`]): spawn, `init`, `ready`, `ping`/`pong`.
//! Everything the slot does happens in its own task, driven by one `select!` loop, so its state needs
//! no locks; a shared cell publishes a snapshot for the manager.

mod events;
mod reload;
mod start;
mod supervise;

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_core::Stream;
use futures_util::stream::{SelectAll, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rosey_plugin::protocol::{HostMessage, PROTOCOL_VERSION, PluginMessage};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use super::backoff::{RestartDecision, RestartTracker};
use super::manifest::Manifest;
use super::resources::{LimitWatch, ProcessSampler, Verdict};
use super::runtime::{InstanceInput, InstanceOutput, KillSwitch, PluginRuntime};
use super::status::{EventCounts, LatencySummary, PluginState, PluginStatus, ReloadReport};
use crate::bus::{EventBus, EventBusExt, Message, Subscription};
use crate::event::{ChatSend, LifecycleEvent, now_millis};
use crate::metrics::MetricsSink;
use crate::subject::{self, LifecycleKind};

/// Consecutive event timeouts after which an instance is considered hung and restarted.
pub(crate) const HUNG_AFTER_TIMEOUTS: u32 = 3;

/// The user a health probe is sent as.
pub const PROBE_USER: &str = "rosey-health";

/// What the manager can ask of a slot.
#[derive(Debug)]
pub(crate) enum Control {
    /// Stop the plugin (unsubscribe, shut the instance down); answer when stopped.
    Stop { done: oneshot::Sender<()> },
    /// Stop (if running) and start again, clearing FAILED; answer when serving or failed to start.
    Restart { done: oneshot::Sender<Result<(), String>> },
    /// Stop and end the slot task.
    Shutdown { done: oneshot::Sender<()> },
    /// Blue-green reload to `manifest`; answered with the report, or an error when refused.
    Reload { manifest: Box<Manifest>, done: oneshot::Sender<Result<ReloadReport, String>> },
}

/// The state shared between a slot task and the manager.
pub(crate) struct Shared {
    status: PluginStatus,
    latency: Histogram<u64>,
    state: watch::Sender<PluginState>,
    /// When the serving instance became ready (for uptime).
    serving_since: Option<Instant>,
}

impl Shared {
    pub(crate) fn new(manifest: &Manifest) -> Self {
        Self {
            status: PluginStatus {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
                state: PluginState::Stopped,
                pid: None,
                loaded_at: None,
                uptime: Duration::ZERO,
                crash_count: 0,
                restart_count: 0,
                cpu_percent: None,
                memory_mb: None,
                events: EventCounts::default(),
                latency: LatencySummary::default(),
                last_error: None,
            },
            // Microseconds, 1 µs to 1 hour, 2 significant digits: a few KB per plugin.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .expect("constant histogram bounds are valid"),
            state: watch::Sender::new(PluginState::Stopped),
            serving_since: None,
        }
    }

    /// Watches the state (for waiting until a plugin runs or fails).
    pub(crate) fn watch_state(&self) -> watch::Receiver<PluginState> {
        self.state.subscribe()
    }

    /// A copy of the status with fresh uptime and latency figures.
    pub(crate) fn snapshot(&self) -> PluginStatus {
        let mut status = self.status.clone();
        status.uptime = self.serving_since.map_or(Duration::ZERO, |t| t.elapsed());
        if !self.latency.is_empty() {
            status.latency = LatencySummary {
                count: self.latency.len(),
                p50: Duration::from_micros(self.latency.value_at_quantile(0.5)),
                p99: Duration::from_micros(self.latency.value_at_quantile(0.99)),
                max: Duration::from_micros(self.latency.max()),
            };
        }
        status
    }
}

/// The status cell a slot shares with its manager.
pub(crate) type SharedCell = Arc<Mutex<Shared>>;

/// One instance's output stream, tagged with the instance's generation.
struct Tagged {
    generation: u64,
    output: mpsc::Receiver<InstanceOutput>,
}

impl Stream for Tagged {
    type Item = (u64, InstanceOutput);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let generation = self.generation;
        self.output.poll_recv(cx).map(|o| o.map(|o| (generation, o)))
    }
}

/// Why an instance is being started.
enum Purpose {
    /// First start, or start after STOPPED/FAILED on request.
    Start(Option<oneshot::Sender<Result<(), String>>>),
    /// Supervisor restart after a crash.
    CrashRestart,
    /// Blue-green reload: the new instance starts beside the serving one.
    Reload {
        manifest: Box<Manifest>,
        from_version: String,
        began: Instant,
        done: oneshot::Sender<Result<ReloadReport, String>>,
    },
}

/// What a starting instance is waiting for.
enum Phase {
    Ready,
    Pong(u64),
    /// Waiting for the manifest's probe command to be answered (reloads only).
    Probe {
        id: u64,
        replied: bool,
    },
}

struct Starting {
    /// The manifest being started (for a reload: the new one).
    manifest: Manifest,
    generation: u64,
    pid: Option<u32>,
    input: InstanceInput,
    kill: KillSwitch,
    phase: Phase,
    deadline: Instant,
    version: Option<String>,
    purpose: Purpose,
}

struct InFlight {
    subject: String,
    channel: Option<String>,
    reply_to: Option<String>,
    started: Instant,
    replies: Vec<String>,
}

struct Running {
    generation: u64,
    pid: Option<u32>,
    version: String,
    input: InstanceInput,
    kill: KillSwitch,
    started_at: Instant,
    in_flight: HashMap<u64, InFlight>,
    kill_reason: Option<String>,
    sampler: Option<ProcessSampler>,
    limits: LimitWatch,
}

/// After the serving instance has stopped on purpose, what next.
enum AfterStop {
    Idle(Vec<oneshot::Sender<()>>),
    Start(oneshot::Sender<Result<(), String>>),
    Exit(oneshot::Sender<()>),
}

/// An old instance finishing its in-flight events after a reload.
struct Draining {
    running: Running,
    deadline: Instant,
    shutdown_sent: bool,
}

struct Stopping {
    deadline: Instant,
    killed: bool,
    then: AfterStop,
}

pub(crate) struct Slot {
    manifest: Manifest,
    runtime: Arc<dyn PluginRuntime>,
    bus: Arc<dyn EventBus>,
    sink: Arc<dyn MetricsSink>,
    shared: SharedCell,
    subscription: Option<SelectAll<Subscription>>,
    outputs: SelectAll<Tagged>,
    starting: Option<Starting>,
    active: Option<Running>,
    draining: Vec<Draining>,
    stopping: Option<Stopping>,
    queue: VecDeque<Message>,
    deadlines: VecDeque<(Instant, u64, u64)>,
    next_event_id: u64,
    next_generation: u64,
    next_ping: u64,
    restarts: RestartTracker,
    restart_at: Option<Instant>,
    consecutive_timeouts: u32,
    sample_interval: Duration,
    malformed_logged: u64,
}

impl Slot {
    pub(crate) fn new(
        manifest: Manifest,
        runtime: Arc<dyn PluginRuntime>,
        bus: Arc<dyn EventBus>,
        sink: Arc<dyn MetricsSink>,
        shared: SharedCell,
        sample_interval: Duration,
    ) -> Self {
        let restarts =
            RestartTracker::new(manifest.restart.max_attempts, manifest.restart.stable_after);
        Self {
            manifest,
            runtime,
            bus,
            sink,
            shared,
            subscription: None,
            outputs: SelectAll::new(),
            starting: None,
            active: None,
            draining: Vec::new(),
            stopping: None,
            queue: VecDeque::new(),
            deadlines: VecDeque::new(),
            next_event_id: 1,
            next_generation: 1,
            next_ping: 1,
            restarts,
            restart_at: None,
            consecutive_timeouts: 0,
            sample_interval,
            malformed_logged: 0,
        }
    }

    fn name(&self) -> &str {
        &self.manifest.name
    }

    fn set_state(&self, state: PluginState) {
        let mut cell = self.shared.lock();
        cell.status.state = state;
        cell.state.send_replace(state);
    }

    fn update(&self, f: impl FnOnce(&mut PluginStatus)) {
        f(&mut self.shared.lock().status);
    }

    fn counts(&self, f: impl FnOnce(&mut EventCounts)) {
        f(&mut self.shared.lock().status.events);
    }

    /// Runs the slot until it is told to shut down (or the manager is dropped).
    pub(crate) async fn run(mut self, mut control: mpsc::Receiver<Control>, start: bool) {
        if start {
            self.begin_start(Purpose::Start(None)).await;
        }
        let mut sampling = tokio::time::interval(self.sample_interval);
        sampling.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let event_deadline = self.deadlines.front().map(|d| d.0);
            let start_deadline = self.starting.as_ref().map(|s| s.deadline);
            let stop_deadline = self.stopping.as_ref().filter(|s| !s.killed).map(|s| s.deadline);
            let drain_deadline = self.draining.iter().map(|d| d.deadline).min();
            tokio::select! {
                Some(message) = next_message(&mut self.subscription) => self.on_bus_message(message).await,
                Some((generation, output)) = self.outputs.next(), if !self.outputs.is_empty() => {
                    if self.on_output(generation, output).await {
                        return;
                    }
                }
                command = control.recv() => {
                    let command = command.unwrap_or_else(|| Control::Shutdown { done: oneshot::channel().0 });
                    if self.on_control(command).await {
                        return;
                    }
                }
                () = sleep_until(event_deadline) => self.on_event_deadlines().await,
                () = sleep_until(self.restart_at) => {
                    self.restart_at = None;
                    self.begin_start(Purpose::CrashRestart).await;
                }
                () = sleep_until(start_deadline) => self.on_start_timeout().await,
                () = sleep_until(stop_deadline) => self.on_stop_timeout(),
                () = sleep_until(drain_deadline) => self.on_drain_timeout().await,
                _ = sampling.tick() => self.sample_resources(),
            }
        }
    }
}

fn merge_after_stop(current: &mut AfterStop, new: AfterStop) {
    match (current, new) {
        (AfterStop::Idle(waiters), AfterStop::Idle(more)) => waiters.extend(more),
        (current @ AfterStop::Idle(_), new) => {
            if let AfterStop::Idle(waiters) = std::mem::replace(current, new) {
                for done in waiters {
                    let _ = done.send(());
                }
            }
        }
        (_, AfterStop::Idle(more)) => {
            for done in more {
                let _ = done.send(());
            }
        }
        (current, new) => *current = new,
    }
}

/// The kind of event for metrics: `command` for routed commands, else the subject's first token.
fn event_kind(subject: &str) -> &str {
    if subject.starts_with(subject::COMMAND_PREFIX) {
        "command"
    } else {
        subject.split('.').nth(1).unwrap_or(subject)
    }
}

async fn next_message(subscription: &mut Option<SelectAll<Subscription>>) -> Option<Message> {
    match subscription {
        Some(all) if !all.is_empty() => all.next().await,
        _ => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
