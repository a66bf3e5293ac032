//! What the page shows, at one instant: built by the server from the plugin manager, the metrics
//! collector, the health registry, the connector and storage; rendered by [`crate::page`].

use serde::Serialize;

/// The whole dashboard at one instant.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Overview {
    /// When this was built, Unix seconds.
    pub(crate) timestamp: f64,
    /// The header.
    pub(crate) header: Header,
    /// One card per plugin, sorted by name.
    pub(crate) cards: Vec<Card>,
    /// Crashes, failures and reloads, newest first (at most 20).
    pub(crate) timeline: Vec<TimelineEntry>,
    /// Whether reload/restart buttons are shown (`dashboard.token` is configured).
    pub(crate) actions: bool,
    /// How often the page refreshes itself without JavaScript, seconds.
    pub(crate) refresh_seconds: u64,
}

/// The page header.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Header {
    /// Rosey's version.
    pub(crate) version: String,
    /// This node's name.
    pub(crate) node: String,
    /// Every node sharing the bus (this one included), when known.
    pub(crate) nodes: Vec<String>,
    /// The bot's uptime, seconds.
    pub(crate) uptime_seconds: u64,
    /// The bus: `memory` or `nats`.
    pub(crate) bus: String,
    /// Whether the bus is healthy.
    pub(crate) bus_healthy: bool,
    /// The connector: `console` or `cytube`; `None` when there is none.
    pub(crate) connector: Option<String>,
    /// Whether the connector is joined.
    pub(crate) connector_joined: bool,
    /// Whether the connector waits in standby while another node holds the channel (healthy, not
    /// joined).
    pub(crate) connector_standby: bool,
    /// The channel, when the connector is in one.
    pub(crate) channel: Option<String>,
    /// Users in the channel, when known.
    pub(crate) users: Option<usize>,
    /// Plugins loaded / running / crashed or failed.
    pub(crate) total_plugins: usize,
    pub(crate) plugins_running: usize,
    pub(crate) plugins_crashed: usize,
}

/// Traffic light of a card (rules in docs/OPERATIONS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Light {
    /// Running and well.
    Green,
    /// CPU or memory above 80 % of its limit, or restarted in the last 5 minutes, or starting.
    Yellow,
    /// Crashed, failed, stopped or not answering.
    Red,
}

/// One plugin's card.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Card {
    pub(crate) name: String,
    pub(crate) version: String,
    /// `RUNNING`, `FAILED`, … ([`rosey_core::plugin::PluginState::as_str`]).
    pub(crate) state: String,
    pub(crate) pid: Option<u32>,
    pub(crate) uptime_seconds: u64,
    /// Percent of one core; `None` when the plugin has no process of its own.
    pub(crate) cpu_percent: Option<f64>,
    /// The manifest's `limits.cpu_percent`.
    pub(crate) cpu_limit: Option<f64>,
    /// Resident memory, MiB.
    pub(crate) memory_mb: Option<f64>,
    /// The manifest's `limits.memory_mb`.
    pub(crate) memory_limit_mb: Option<f64>,
    pub(crate) event_count: u64,
    pub(crate) crash_count: u64,
    /// 95th percentile response time over the last poll interval, milliseconds.
    pub(crate) p95_ms: Option<f64>,
    pub(crate) last_error: Option<String>,
    pub(crate) light: Light,
    /// Why the light is not green (e.g. `memory at 85 % of its limit`, `restarted 2 min ago`).
    pub(crate) light_reason: Option<String>,
    /// The last hour, oldest first, one value per sample (at most 120 points each; `None` gaps allowed).
    pub(crate) spark_cpu: Vec<Option<f64>>,
    pub(crate) spark_memory: Vec<Option<f64>>,
    pub(crate) spark_events: Vec<Option<f64>>,
}

/// One entry of the timeline.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TimelineEntry {
    /// Unix seconds.
    pub(crate) time: f64,
    pub(crate) plugin: String,
    /// `started`, `crashed`, `restarted`, `failed`, `stopped`, `reload_ok`, `reload_failed`.
    pub(crate) kind: String,
    pub(crate) version: Option<String>,
    pub(crate) reason: Option<String>,
}
