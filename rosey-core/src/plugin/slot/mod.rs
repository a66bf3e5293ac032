//! The plugin slot: one task per plugin that owns its bus subscription, its wait queue, its in-flight
//! events and its instances, and supervises them as one explicit state machine.
//!
//! The subscription belongs to the slot, not to a process, so instances can come and go (crash restart,
//! operator restart, reload) without an event falling between two subscriptions. Every start — first
//! start, crash restart, operator restart, reload — is the same path ([`Slot::begin_start`]): spawn,
//! then the health steps in order (`ready`, `pong`, the manifest's probe, memory), then serve. A reload
//! differs only in that its candidate starts beside the serving instance and, once healthy, swaps with it.
//!
//! Everything happens in the slot's own task, driven by one `select!` loop: bus messages, instance
//! output, operator requests and one [`DelayQueue`] of deadlines (event timeouts, health steps, restart
//! backoff, stop grace, drains), so deadlines fire in any order and the state needs no locks. A shared
//! cell publishes a snapshot for the manager.
//!
//! Operator requests merge strongest-first: shutdown > stop > reload > restart. A request of the kind
//! in progress joins it (every caller gets its result); a weaker one is refused as busy; a stronger one
//! supersedes it (its callers are told so).

mod events;
mod reload;
mod start;
mod supervise;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::stream::{SelectAll, StreamExt};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::time::{DelayQueue, delay_queue};

use super::control::{Action, ControlError};
use super::manifest::Manifest;
use super::publish::PublishRules;
use super::resources::{LimitWatch, ProcessSampler};
use super::runtime::{InstanceInput, InstanceOutput, KillSwitch, PluginRuntime};
use super::status::{
    EventCounts, LatencySummary, PluginState, PluginStatus, ReloadReport, StartStep,
};
use crate::backoff::RestartTracker;
use crate::bus::{EventBus, Message, Subscription};
use crate::metrics::MetricsSink;
use crate::quiet::LogLimit;

/// Consecutive event timeouts after which an instance is considered hung and restarted.
pub(crate) const HUNG_AFTER_TIMEOUTS: u32 = 3;

/// Requests one plugin may have outstanding (`rosey.db.kv.*`); more get an immediate error response.
pub(crate) const MAX_OUTSTANDING_REQUESTS: usize = 64;

/// Plugin `log` lines logged per 10 s before the rest are counted and summed up.
const PLUGIN_LOG_BURST: u32 = 100;

/// Refusals (publishes, replies over the limit, requests) logged per 10 s per plugin.
const REFUSAL_LOG_BURST: u32 = 5;

/// The user a health probe is sent as.
pub const PROBE_USER: &str = "rosey-health";

/// Where a request's answer goes.
pub(crate) type Done<T> = oneshot::Sender<Result<T, ControlError>>;

/// What the manager can ask of a slot.
#[derive(Debug)]
pub(crate) enum Control {
    /// Stop the plugin (unsubscribe, shut the instance down); answer when stopped.
    Stop { done: Done<()> },
    /// Stop (if running) and start again, clearing FAILED; answer when serving or failed to start.
    Restart { done: Done<()> },
    /// Blue-green reload to `manifest`; answered with the report, or why it failed or was refused.
    Reload { manifest: Box<Manifest>, done: Done<ReloadReport> },
    /// Stop and end the slot task.
    Shutdown { done: Done<()> },
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
                memory_cap: None,
                memory_limit_mb: manifest.limits.memory_mb,
                cpu_limit_percent: manifest.limits.cpu_percent,
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

/// A deadline in the slot's [`DelayQueue`]. Each is checked against the current state when it fires,
/// so one that no longer applies (its instance or step is gone) is simply ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Event `id` of instance `generation` must be done by now.
    Event { generation: u64, id: u64 },
    /// Step number `step` of the candidate `generation` must pass by now.
    Step { generation: u64, step: usize },
    /// The crash-restart backoff `epoch` is over: start again.
    Restart { epoch: u64 },
    /// The instance being stopped had its grace period: kill it.
    StopGrace { generation: u64 },
    /// The old instance `generation` had its drain time: fail what it holds and shut it down.
    Drain { generation: u64 },
    /// The old instance `generation` had its grace period after `shutdown`: kill it.
    DrainGrace { generation: u64 },
}

/// A live instance, whatever its role.
struct Live {
    generation: u64,
    pid: Option<u32>,
    memory: super::MemoryEnforcement,
    input: InstanceInput,
    kill: KillSwitch,
    /// What the instance said in `ready` (the manifest's version until then).
    version: String,
}

/// Why a candidate is being started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartReason {
    /// First start, operator restart, or start of a stopped or FAILED plugin.
    Start,
    /// Supervisor restart after a crash.
    CrashRestart,
}

/// An instance going through its health steps before it may serve.
struct Candidate {
    live: Live,
    manifest: Manifest,
    reason: StartReason,
    steps: Vec<StartStep>,
    step: usize,
    /// The ping id or probe event id the current step waits for.
    waiting_for: u64,
    /// Whether the probe has replied.
    probe_replied: bool,
}

impl Candidate {
    fn current_step(&self) -> StartStep {
        self.steps.get(self.step).copied().unwrap_or(StartStep::Memory)
    }
}

/// An event waiting for an instance, with how many instances already died on it.
struct Queued {
    message: Message,
    attempt: u8,
}

/// An event handed to an instance and not finished yet.
struct InFlight {
    /// The event as it came, for a redelivery after a crash.
    message: Message,
    /// 0 on the first delivery, 1 on the redelivery.
    attempt: u8,
    /// Where its replies go (`None`: the event names no channel, so nothing is said).
    target: Option<crate::event::ReplyTarget>,
    started: Instant,
    /// Reply lines said so far (kept only when the event came as a request).
    replies: Vec<String>,
    replies_said: usize,
    reply_bytes: usize,
    dropped_replies: u64,
    timer: delay_queue::Key,
}

impl InFlight {
    fn subject(&self) -> &str {
        self.message.subject()
    }

    fn reply_to(&self) -> Option<&str> {
        self.message.reply()
    }
}

/// The instance that serves events.
struct Serving {
    live: Live,
    started_at: Instant,
    in_flight: HashMap<u64, InFlight>,
    kill_reason: Option<String>,
    sampler: Option<ProcessSampler>,
    limits: LimitWatch,
}

/// An old instance finishing its in-flight events after a reload.
struct Old {
    serving: Serving,
    shutdown_sent: bool,
}

/// The slot's lifecycle state: exactly one of these at a time. Old instances draining after a reload
/// are kept beside it (`Slot::old`), whatever the state.
enum State {
    /// Not running, on purpose.
    Stopped,
    /// Crashed too often; waits for an operator.
    Failed,
    /// Crashed; a restart is due when the backoff timer of `epoch` fires.
    Backoff { epoch: u64 },
    /// Nothing serves; a candidate is going through its health steps.
    Starting(Box<Candidate>),
    /// An instance serves; during a reload a candidate starts beside it.
    Running { serving: Box<Serving>, candidate: Option<Box<Candidate>> },
    /// The instance was told to shut down; it finishes what it holds, then exits (killed after the
    /// grace period).
    Stopping { serving: Box<Serving> },
}

/// An operator request in progress, with everyone waiting for it.
enum Op {
    Restart {
        waiters: Vec<Done<()>>,
    },
    Reload {
        waiters: Vec<Done<ReloadReport>>,
        /// The manifest to start, until its candidate is started.
        manifest: Option<Box<Manifest>>,
        from_version: String,
        to_version: String,
        began: Instant,
    },
    Stop {
        waiters: Vec<Done<()>>,
        exit: bool,
    },
}

impl Op {
    fn action(&self) -> Action {
        match self {
            Self::Restart { .. } => Action::Restart,
            Self::Reload { .. } => Action::Reload,
            Self::Stop { exit: false, .. } => Action::Stop,
            Self::Stop { exit: true, .. } => Action::Shutdown,
        }
    }
}

/// How strong an action is when requests meet: the stronger one wins.
fn strength(action: Action) -> u8 {
    match action {
        Action::Restart => 1,
        Action::Reload => 2,
        Action::Stop => 3,
        Action::Shutdown => 4,
    }
}

pub(crate) struct Slot {
    manifest: Manifest,
    runtime: Arc<dyn PluginRuntime>,
    bus: Arc<dyn EventBus>,
    sink: Arc<dyn MetricsSink>,
    shared: SharedCell,
    subscription: Option<SelectAll<Subscription>>,
    outputs: SelectAll<Tagged>,
    state: State,
    old: Vec<Old>,
    op: Option<Op>,
    timers: DelayQueue<Timer>,
    queue: VecDeque<Queued>,
    next_event_id: u64,
    next_generation: u64,
    next_epoch: u64,
    restarts: RestartTracker,
    consecutive_timeouts: u32,
    sample_interval: Duration,
    malformed_logged: u64,
    /// What the plugin may publish.
    publish_rules: PublishRules,
    plugin_logs: LogLimit,
    refusal_logs: LogLimit,
    /// Requests plugins made of the bus, answered in their own tasks; aborted when the slot ends.
    requests: JoinSet<()>,
    /// The plugin's budget of requests (`limits.requests_per_second`).
    request_budget: RequestBudget,
    /// Set once the slot should end (after a shutdown).
    exit: bool,
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
        let publish_rules = PublishRules::new(&manifest.name, &manifest.publish);
        Self {
            manifest,
            runtime,
            bus,
            sink,
            shared,
            subscription: None,
            outputs: SelectAll::new(),
            state: State::Stopped,
            old: Vec::new(),
            op: None,
            timers: DelayQueue::new(),
            queue: VecDeque::new(),
            next_event_id: 1,
            next_generation: 1,
            next_epoch: 1,
            restarts,
            consecutive_timeouts: 0,
            sample_interval,
            malformed_logged: 0,
            publish_rules,
            plugin_logs: LogLimit::new(PLUGIN_LOG_BURST),
            refusal_logs: LogLimit::new(REFUSAL_LOG_BURST),
            requests: JoinSet::new(),
            request_budget: RequestBudget::default(),
            exit: false,
        }
    }

    fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The state users see, derived from the slot's state.
    fn public_state(&self) -> PluginState {
        match &self.state {
            State::Stopped => PluginState::Stopped,
            State::Failed => PluginState::Failed,
            State::Backoff { .. } => PluginState::Crashed,
            State::Starting(_) => PluginState::Starting,
            State::Running { .. } => PluginState::Running,
            State::Stopping { serving } if !serving.in_flight.is_empty() => PluginState::Draining,
            State::Stopping { .. } => PluginState::Stopping,
        }
    }

    /// Moves to `state` and publishes the new public state.
    fn enter(&mut self, state: State) {
        self.state = state;
        self.publish_state();
    }

    /// Publishes the public state in the shared cell (when it changed).
    fn publish_state(&self) {
        let state = self.public_state();
        let mut cell = self.shared.lock();
        cell.status.state = state;
        cell.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }

    fn update(&self, f: impl FnOnce(&mut PluginStatus)) {
        f(&mut self.shared.lock().status);
    }

    fn counts(&self, f: impl FnOnce(&mut EventCounts)) {
        f(&mut self.shared.lock().status.events);
    }

    /// The serving instance, when one serves (also while it is being stopped).
    fn serving_mut(&mut self) -> Option<&mut Serving> {
        match &mut self.state {
            State::Running { serving, .. } | State::Stopping { serving } => Some(serving),
            _ => None,
        }
    }

    fn candidate_mut(&mut self) -> Option<&mut Candidate> {
        match &mut self.state {
            State::Starting(candidate) | State::Running { candidate: Some(candidate), .. } => {
                Some(candidate)
            }
            _ => None,
        }
    }

    /// Runs the slot until it is told to shut down (or the manager is dropped).
    pub(crate) async fn run(mut self, mut control: mpsc::Receiver<Control>, start: bool) {
        if start {
            self.begin_start(StartReason::Start, None).await;
        }
        let mut sampling = tokio::time::interval(self.sample_interval);
        sampling.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut control_open = true;
        while !self.exit {
            tokio::select! {
                Some(message) = next_message(&mut self.subscription) => self.on_bus_message(message).await,
                Some((generation, output)) = self.outputs.next(), if !self.outputs.is_empty() => {
                    self.on_output(generation, output).await;
                }
                command = control.recv(), if control_open => match command {
                    Some(command) => self.on_control(command).await,
                    None => {
                        // The manager is gone: shut down as if asked.
                        control_open = false;
                        self.on_control(Control::Shutdown { done: oneshot::channel().0 }).await;
                    }
                },
                Some(expired) = self.timers.next(), if !self.timers.is_empty() => {
                    self.on_timer(expired.into_inner()).await;
                }
                _ = sampling.tick() => {
                    self.sum_up_suppressed_logs();
                    self.sample_resources().await;
                }
            }
        }
        // Requests still running are aborted and old instances still draining are killed, as the slot
        // is dropped.
    }

    async fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Event { generation, id } => self.on_event_timeout(generation, id).await,
            Timer::Step { generation, step } => self.on_step_timeout(generation, step).await,
            Timer::Restart { epoch } => {
                if matches!(self.state, State::Backoff { epoch: current } if current == epoch) {
                    self.begin_start(StartReason::CrashRestart, None).await;
                }
            }
            Timer::StopGrace { generation } => self.on_stop_grace(generation),
            Timer::Drain { generation } => self.on_drain_timeout(generation).await,
            Timer::DrainGrace { generation } => self.on_drain_grace(generation),
        }
    }
}

async fn next_message(subscription: &mut Option<SelectAll<Subscription>>) -> Option<Message> {
    match subscription {
        Some(all) if !all.is_empty() => all.next().await,
        _ => std::future::pending().await,
    }
}

/// A token bucket of requests: `rate` a second, at most `rate` saved up (a one-second burst).
#[derive(Debug, Default)]
pub(super) struct RequestBudget {
    tokens: f64,
    last: Option<Instant>,
}

impl RequestBudget {
    /// Takes one request from the budget at `now`; false when it is spent.
    pub(super) fn take(&mut self, rate: usize, now: Instant) -> bool {
        let rate = rate as f64;
        self.tokens = match self.last {
            None => rate,
            Some(last) => (self.tokens + now.duration_since(last).as_secs_f64() * rate).min(rate),
        };
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
