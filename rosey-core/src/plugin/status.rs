//! What the plugin manager reports about each plugin: state, process, counters, latency.

use std::fmt;
use std::time::Duration;

use crate::event::EpochMillis;
use crate::metrics::ReloadOutcome;

/// The lifecycle state of a plugin slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginState {
    /// Not running, on purpose (never started, or stopped by an operator).
    Stopped,
    /// An instance is starting: waiting for `ready` and the health check.
    Starting,
    /// An instance is serving events.
    Running,
    /// Being stopped: the instance was told to shut down and is finishing the events it holds.
    Draining,
    /// Being stopped: nothing is left in flight; waiting for the instance to exit.
    Stopping,
    /// The instance crashed; a restart is scheduled.
    Crashed,
    /// Crashed too often; waits for an operator to restart it.
    Failed,
}

impl PluginState {
    /// The state named `name` (as [`as_str`](Self::as_str) writes it).
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Stopped,
            Self::Starting,
            Self::Running,
            Self::Draining,
            Self::Stopping,
            Self::Crashed,
            Self::Failed,
        ]
        .into_iter()
        .find(|state| state.as_str() == name)
    }

    /// The state as shown to users (`RUNNING`, `FAILED`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "STOPPED",
            Self::Starting => "STARTING",
            Self::Running => "RUNNING",
            Self::Draining => "DRAINING",
            Self::Stopping => "STOPPING",
            Self::Crashed => "CRASHED",
            Self::Failed => "FAILED",
        }
    }
}

impl fmt::Display for PluginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Event counters of one plugin since the host started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Events that arrived for the plugin.
    pub received: u64,
    /// Events handed to an instance.
    pub delivered: u64,
    /// Events the plugin finished without error.
    pub completed: u64,
    /// Events that failed: error from the plugin, timeout, crash, overflow or bad payload.
    pub failed: u64,
    /// Of the failed: those that ran out of time.
    pub timed_out: u64,
    /// Of the failed: those refused because the wait queue was full.
    pub overflowed: u64,
    /// Events handed to an instance and not finished yet.
    pub in_flight: u64,
    /// Events waiting for an instance.
    pub queued: u64,
    /// Lines from the plugin that were not valid protocol messages.
    pub malformed_lines: u64,
    /// Events delivered once more to a restarted instance because the plugin died before answering.
    pub redelivered: u64,
    /// Replies dropped for being over the per-event limits.
    pub dropped_replies: u64,
    /// Publishes refused by the publishing rules (reserved or undeclared subjects).
    pub refused_publishes: u64,
    /// Requests refused because the plugin already had the maximum outstanding.
    pub refused_requests: u64,
}

/// Response time (delivery to `done`) of completed and failed events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    /// How many events were measured.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

/// A snapshot of one plugin, for the metrics collector, the dashboard and the control API.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginStatus {
    /// Plugin name.
    pub name: String,
    /// Version of the serving instance (or of the manifest when none serves).
    pub version: String,
    /// Lifecycle state.
    pub state: PluginState,
    /// Process id of the serving instance, when it is a process.
    pub pid: Option<u32>,
    /// When the serving instance became ready.
    pub loaded_at: Option<EpochMillis>,
    /// How long the serving instance has been running.
    pub uptime: Duration,
    /// Crashes since the host started.
    pub crash_count: u64,
    /// Supervisor restarts since the host started.
    pub restart_count: u64,
    /// Latest CPU use of the instance's process, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Latest resident memory of the instance's process tree, MB (MiB).
    pub memory_mb: Option<f64>,
    /// How the serving instance's memory limit is enforced beyond sampling (cgroup, rlimit, none).
    pub memory_cap: Option<super::MemoryEnforcement>,
    /// The manifest's `limits.memory_mb` (of the serving instance's manifest once one serves).
    pub memory_limit_mb: Option<f64>,
    /// The manifest's `limits.cpu_percent` (likewise).
    pub cpu_limit_percent: Option<f64>,
    /// Event counters.
    pub events: EventCounts,
    /// Response times.
    pub latency: LatencySummary,
    /// The last failure: crash reason, failed start, or why the plugin is FAILED.
    pub last_error: Option<String>,
}

/// A step of starting an instance, named when a start or a reload fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StartStep {
    /// Reading the manifest again (reloads only).
    Manifest,
    /// Subscribing and spawning the instance.
    Spawn,
    /// Waiting for `ready` after `init`.
    Ready,
    /// Waiting for `pong` after `ping`.
    Pong,
    /// Waiting for the manifest's probe command to be answered.
    Probe,
    /// Checking the new instance's memory against its limit.
    Memory,
    /// The old instance's drain after a swap. A reload is reported when the new version serves, so no
    /// reload fails at this step; it names drain problems in logs and lifecycle events.
    Drain,
}

impl StartStep {
    /// The step named `name` (as [`as_str`](Self::as_str) writes it).
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Manifest,
            Self::Spawn,
            Self::Ready,
            Self::Pong,
            Self::Probe,
            Self::Memory,
            Self::Drain,
        ]
        .into_iter()
        .find(|step| step.as_str() == name)
    }

    /// The step as shown to users (`manifest`, `spawn`, `ready`, `pong`, `probe`, `memory`, `drain`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manifest => "manifest",
            Self::Spawn => "spawn",
            Self::Ready => "ready",
            Self::Pong => "pong",
            Self::Probe => "probe",
            Self::Memory => "memory",
            Self::Drain => "drain",
        }
    }
}

impl fmt::Display for StartStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of a blue-green reload, successful or rolled back.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadReport {
    /// Plugin name.
    pub name: String,
    /// The version serving before.
    pub from_version: String,
    /// The version the reload tried to start (from the manifest on disk), also when it failed.
    pub to_version: String,
    /// From the call to the new version serving (or to the rollback).
    pub duration: Duration,
    /// Whether the new version serves now.
    pub outcome: ReloadOutcome,
    /// The step that failed, for a rollback.
    pub failed_step: Option<StartStep>,
    /// Why it was rolled back.
    pub reason: Option<String>,
}

/// Why a reload was rolled back: the old version (if any) keeps serving.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("reload of {name} {from_version} → {to_version} failed at {step}: {reason}")]
pub struct ReloadFailure {
    /// Plugin name.
    pub name: String,
    /// The version serving before (and still serving, if one was).
    pub from_version: String,
    /// The version the reload tried to start.
    pub to_version: String,
    /// The step that failed.
    pub step: StartStep,
    /// What went wrong at that step.
    pub reason: String,
    /// From the call to the rollback.
    pub duration: Duration,
}

impl From<ReloadFailure> for ReloadReport {
    fn from(failure: ReloadFailure) -> Self {
        Self {
            name: failure.name,
            from_version: failure.from_version,
            to_version: failure.to_version,
            duration: failure.duration,
            outcome: ReloadOutcome::RolledBack,
            failed_step: Some(failure.step),
            reason: Some(failure.reason),
        }
    }
}

/// Why a start (first start, operator restart, crash restart) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} failed to start at {step}: {reason}")]
pub struct StartFailure {
    /// Plugin name.
    pub name: String,
    /// The step that failed.
    pub step: StartStep,
    /// What went wrong at that step.
    pub reason: String,
}
