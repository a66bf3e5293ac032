//! What the plugin manager reports about each plugin: state, process, counters, latency.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::event::EpochMillis;
use crate::metrics::ReloadOutcome;

/// The lifecycle state of a plugin slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PluginState {
    /// Not running, on purpose (never started, or stopped by an operator).
    Stopped,
    /// An instance is starting: waiting for `ready` and the health check.
    Starting,
    /// An instance is serving events.
    Running,
    /// An old instance is finishing its in-flight events after a reload.
    Draining,
    /// The instance is being stopped on purpose.
    Stopping,
    /// The instance crashed; a restart is scheduled.
    Crashed,
    /// Crashed too often; waits for an operator to restart it.
    Failed,
}

impl PluginState {
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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
}

/// Response time (delivery to `done`) of completed and failed events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// Latest resident memory of the instance's process, MB (MiB).
    pub memory_mb: Option<f64>,
    /// Event counters.
    pub events: EventCounts,
    /// Response times.
    pub latency: LatencySummary,
    /// The last failure: crash reason, failed start, or why the plugin is FAILED.
    pub last_error: Option<String>,
}

/// The result of a blue-green reload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReloadReport {
    /// Plugin name.
    pub name: String,
    /// The version serving before.
    pub from_version: String,
    /// The version the reload tried to start (from the manifest on disk).
    pub to_version: String,
    /// From the call to the new version serving (or to the rollback).
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    /// Whether the new version serves now.
    pub outcome: ReloadOutcome,
    /// Why it was rolled back, naming the failed step.
    pub reason: Option<String>,
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}
