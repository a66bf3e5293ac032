//! The Prometheus exposition behind `GET /metrics`: [`PrometheusMetrics`].
//!
//! It is both a [`MetricsSink`] (the push side: the plugin manager reports events, crashes, reloads and
//! plugin-defined metrics to it as they happen, counted in memory with atomics and a few short locks,
//! never blocking) and a renderer (the pull side: at each [`render`](PrometheusMetrics::render) it asks
//! a plugin snapshot source and a [`NodeStats`] source for current values, so gauges of a plugin that is
//! gone disappear, and a node without some component simply omits its metrics).
//!
//! Wiring, in the node:
//!
//! ```
//! use std::sync::Arc;
//! use rosey_core::metrics::MetricsSink;
//! use rosey_metrics::prometheus::{NodeStats, PrometheusMetrics, PrometheusOptions};
//!
//! let metrics = PrometheusMetrics::new(PrometheusOptions::default());
//! // Give `Arc::new(metrics.clone())` to the plugin manager's builder as its sink (or to a FanoutSink)…
//! let sink: Arc<dyn MetricsSink> = Arc::new(metrics.clone());
//! // …then, once the manager exists: `metrics.set_plugin_source(move || manager.snapshot())`.
//! metrics.set_plugin_source(Vec::new);
//! metrics.set_node_stats(NodeStats::default);
//! let body = metrics.render(); // serve with content type PrometheusMetrics::CONTENT_TYPE
//! assert!(body.contains("rosey_bot_uptime_seconds"));
//! # drop(sink);
//! ```
//!
//! # Metrics
//!
//! Per plugin (label `plugin`), from the snapshot at render time: gauges `rosey_plugin_cpu_percent`
//! (percent of one core), `rosey_plugin_memory_mb` (MiB), `rosey_plugin_uptime_seconds` (0 when not
//! running); the CPU and memory gauges are absent while not measured.
//!
//! Per plugin, pushed: counters `rosey_plugin_events_total` (events the plugin finished, successfully
//! or not), `rosey_plugin_events_failed_total` (of those, failed: error, timeout, crash),
//! `rosey_plugin_crashes_total`, `rosey_plugin_restarts_total` (supervisor restarts),
//! `rosey_events_total{plugin,type}` (events that reached the plugin, by `type`: `command`, `chat`,
//! `pm`, `user_join`, `user_leave`, `media_change`, `lifecycle`, `other`),
//! `rosey_plugin_reloads_total{plugin,status}` (`success` or `rolled_back`); histograms
//! `rosey_plugin_response_time_seconds` (delivery to `done`) and `rosey_reload_duration_seconds`. The
//! counters and histograms of every plugin in the snapshot are exposed from 0 before anything happens,
//! so `increase()` sees the first crash; they live as long as the process.
//!
//! Node: gauges `rosey_bot_uptime_seconds`, `rosey_total_plugins`, `rosey_plugins_running` (state
//! RUNNING), `rosey_plugins_crashed` (CRASHED or FAILED), `rosey_build_info{version}` (always 1);
//! counter `rosey_admin_commands_total{command,user}`; `process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_start_time_seconds`,
//! `process_open_fds` (Linux); the operator metrics of [`NodeStats`] (see its fields); and the
//! plugin-defined `rosey_custom_*` (see [`custom`]) with
//! `rosey_custom_metrics_refused_total{plugin,reason}`.

pub mod custom;
mod family;
mod process;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use rosey_core::bus::MemoryBusStats;
use rosey_core::metrics::{MetricsSink, ReloadOutcome};
use rosey_core::plugin::{PluginState, PluginStatus};
use rosey_core::router::RouterStats;
use rosey_core::storage::{KvStats, WriterStats};

pub use custom::{CustomKind, CustomMetricError};
use family::{Family, counter, gauge};

/// Buckets of `rosey_plugin_response_time_seconds`: 1 ms … 30 s.
const RESPONSE_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Buckets of `rosey_reload_duration_seconds`: 50 ms … 60 s (the reload target is under 3 s).
const RELOAD_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0];

/// Options of [`PrometheusMetrics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusOptions {
    /// `metrics.prometheus_enabled`: when false, nothing is recorded and [`PrometheusMetrics::render`]
    /// returns an empty body. Default true.
    pub enabled: bool,
    /// The `version` label of `rosey_build_info`. Default: this crate's version (the workspace's).
    pub version: String,
    /// A `node` label on every sample (`node.name`), so that several nodes' series stay apart
    /// whoever scrapes them. Default `None`: no such label.
    pub node: Option<String>,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        Self { enabled: true, version: env!("CARGO_PKG_VERSION").to_owned(), node: None }
    }
}

/// What the node's connector reports; every field optional (a node without a CyTube connector, or a
/// connector that does not count something, leaves it `None` and the metric is omitted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectorStats {
    /// `rosey_connector_connected` (gauge, 1 joined / 0 not): whether the connector is in its channel
    /// (e.g. the health registry's `connector` component is healthy).
    pub connected: Option<bool>,
    /// `rosey_connector_reconnects_total`: reconnect attempts since start.
    pub reconnects: Option<u64>,
    /// `rosey_chat_messages_received_total`: chat lines (and PMs) received from the channel.
    pub chat_in: Option<u64>,
    /// `rosey_chat_messages_sent_total`: chat lines (and PMs) sent to the channel.
    pub chat_out: Option<u64>,
    /// `rosey_connector_cooldowns_total`: `cooldown` frames from the server (a line was rate-limited).
    pub cooldowns: Option<u64>,
    /// `rosey_connector_outbox_dropped_total`: outgoing lines dropped because the outbox was full
    /// (`ConnectorCounts::outbox_dropped`).
    pub outbox_dropped: Option<u64>,
    /// `rosey_connector_outbox_queued` (gauge): outgoing lines waiting (`ConnectorCounts::outbox_queued`).
    pub outbox_queued: Option<u64>,
}

/// The node's component counters at one instant, for the operator metrics; each source is optional
/// (`None` omits its metrics). The node registers a closure that builds one with
/// [`PrometheusMetrics::set_node_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// The in-process bus: `rosey_bus_messages_published_total`, `rosey_bus_messages_delivered_total`,
    /// `rosey_bus_messages_dropped_total` (a subscriber's buffer was full), gauges
    /// `rosey_bus_queued_bytes`, `rosey_bus_subscriptions`.
    pub bus: Option<MemoryBusStats>,
    /// The router: `rosey_router_routed_total` (chat lines and PMs published as commands),
    /// `rosey_router_ignored_total` (not commands, the bot's own lines),
    /// `rosey_router_unknown_commands_total` (commands no plugin owns, not answered),
    /// `rosey_router_help_total` (`!help` answered by the router),
    /// `rosey_router_malformed_total`, `rosey_router_failed_total` (could not be encoded),
    /// `rosey_router_not_running_total` (no running plugin took it), `rosey_router_unanswered_total`
    /// (no answer in time), gauge `rosey_router_in_flight`.
    pub router: Option<RouterStats>,
    /// The CyTube connector (see [`ConnectorStats`]).
    pub connector: Option<ConnectorStats>,
    /// The storage writer: `rosey_storage_records_written_total`, `rosey_storage_records_dropped_total`
    /// (queue full), `rosey_storage_records_rejected_total`, `rosey_storage_write_failures_total`, gauges
    /// `rosey_storage_records_queued`, `rosey_storage_available` (1/0).
    pub writer: Option<WriterStats>,
    /// The key-value service: `rosey_kv_requests_total`, `rosey_kv_errors_total`,
    /// `rosey_kv_unavailable_total`, `rosey_kv_cache_hits_total`, `rosey_kv_cache_misses_total`.
    pub kv: Option<KvStats>,
}

/// Where plugin snapshots come from (e.g. `move || manager.snapshot()`).
pub type PluginSource = Arc<dyn Fn() -> Vec<PluginStatus> + Send + Sync>;
/// Where node stats come from.
pub type NodeStatsSource = Arc<dyn Fn() -> NodeStats + Send + Sync>;

/// Push-side series, registered in the registry.
struct Pushed {
    registry: Registry,
    events: IntCounterVec,
    events_failed: IntCounterVec,
    crashes: IntCounterVec,
    restarts: IntCounterVec,
    events_by_type: IntCounterVec,
    reloads: IntCounterVec,
    admin_commands: IntCounterVec,
    custom_refused: IntCounterVec,
    response_time: HistogramVec,
    reload_duration: HistogramVec,
}

/// Label names are constants and valid, so registration cannot fail; `None` only if the crate
/// changed its rules.
fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Option<IntCounterVec> {
    let vec = IntCounterVec::new(Opts::new(name, help), labels).ok()?;
    registry.register(Box::new(vec.clone())).ok()?;
    Some(vec)
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> Option<HistogramVec> {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let vec = HistogramVec::new(opts, &["plugin"]).ok()?;
    registry.register(Box::new(vec.clone())).ok()?;
    Some(vec)
}

impl Pushed {
    fn new() -> Option<Self> {
        let registry = Registry::new();
        let r = &registry;
        Some(Self {
            events: counter_vec(
                r,
                "rosey_plugin_events_total",
                "Events the plugin finished (successfully or not).",
                &["plugin"],
            )?,
            events_failed: counter_vec(
                r,
                "rosey_plugin_events_failed_total",
                "Events the plugin finished with an error, a timeout or a crash.",
                &["plugin"],
            )?,
            crashes: counter_vec(
                r,
                "rosey_plugin_crashes_total",
                "Unexpected exits of the plugin (limits included).",
                &["plugin"],
            )?,
            restarts: counter_vec(
                r,
                "rosey_plugin_restarts_total",
                "Restarts of the plugin by the supervisor after a crash.",
                &["plugin"],
            )?,
            events_by_type: counter_vec(
                r,
                "rosey_events_total",
                "Events that reached the plugin, by type (command, chat, pm, user_join, user_leave, media_change, lifecycle, other).",
                &["plugin", "type"],
            )?,
            reloads: counter_vec(
                r,
                "rosey_plugin_reloads_total",
                "Hot reloads of the plugin, by outcome (success, rolled_back).",
                &["plugin", "status"],
            )?,
            admin_commands: counter_vec(
                r,
                "rosey_admin_commands_total",
                "!admin commands run, by sub-command and admin.",
                &["command", "user"],
            )?,
            custom_refused: counter_vec(
                r,
                "rosey_custom_metrics_refused_total",
                "Plugin metric messages refused, by reason.",
                &["plugin", "reason"],
            )?,
            response_time: histogram_vec(
                r,
                "rosey_plugin_response_time_seconds",
                "Time from delivering an event to the plugin to its done.",
                RESPONSE_BUCKETS,
            )?,
            reload_duration: histogram_vec(
                r,
                "rosey_reload_duration_seconds",
                "Duration of hot reloads, successful or rolled back.",
                RELOAD_BUCKETS,
            )?,
            registry,
        })
    }

    /// Creates the per-plugin series at 0 so they are exposed before anything happens.
    fn touch(&self, plugin: &str) {
        self.events.with_label_values(&[plugin]);
        self.events_failed.with_label_values(&[plugin]);
        self.crashes.with_label_values(&[plugin]);
        self.restarts.with_label_values(&[plugin]);
        for status in [ReloadOutcome::Success, ReloadOutcome::RolledBack] {
            self.reloads.with_label_values(&[plugin, status.as_str()]);
        }
        self.response_time.with_label_values(&[plugin]);
        self.reload_duration.with_label_values(&[plugin]);
    }
}

struct Inner {
    options: PrometheusOptions,
    /// `None` when disabled (or if registration failed, logged once at construction).
    pushed: Option<Pushed>,
    custom: custom::CustomMetrics,
    plugins: RwLock<Option<PluginSource>>,
    node: RwLock<Option<NodeStatsSource>>,
    started_at: RwLock<SystemTime>,
}

/// The Prometheus registry of a node: a [`MetricsSink`] plus [`render`](Self::render) (see the
/// [module docs](self)). Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct PrometheusMetrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PrometheusMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusMetrics")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl PrometheusMetrics {
    /// The content type of [`render`](Self::render)'s output (text format 0.0.4).
    pub const CONTENT_TYPE: &'static str = prometheus::TEXT_FORMAT;

    /// A registry with no sources yet: the bot's uptime counts from now (see
    /// [`set_started_at`](Self::set_started_at)), there are no plugins and no node stats until their
    /// sources are set.
    pub fn new(options: PrometheusOptions) -> Self {
        let pushed = if options.enabled {
            let pushed = Pushed::new();
            if pushed.is_none() {
                tracing::error!(
                    message = "cannot register the Prometheus metrics; /metrics will be empty"
                );
            }
            pushed
        } else {
            None
        };
        Self {
            inner: Arc::new(Inner {
                options,
                pushed,
                custom: custom::CustomMetrics::default(),
                plugins: RwLock::new(None),
                node: RwLock::new(None),
                started_at: RwLock::new(SystemTime::now()),
            }),
        }
    }

    /// Whether the exposition is on (`metrics.prometheus_enabled`).
    pub fn enabled(&self) -> bool {
        self.inner.options.enabled
    }

    /// Sets where plugin snapshots come from, e.g. `move || manager.snapshot()`; called at each render.
    pub fn set_plugin_source(
        &self,
        source: impl Fn() -> Vec<PluginStatus> + Send + Sync + 'static,
    ) {
        *self.inner.plugins.write() = Some(Arc::new(source));
    }

    /// Sets where the node's component counters come from; called at each render.
    pub fn set_node_stats(&self, source: impl Fn() -> NodeStats + Send + Sync + 'static) {
        *self.inner.node.write() = Some(Arc::new(source));
    }

    /// Sets when the bot started (`rosey_bot_uptime_seconds`), e.g. the health registry's
    /// `started_at()`.
    pub fn set_started_at(&self, started_at: SystemTime) {
        *self.inner.started_at.write() = started_at;
    }

    /// Records one plugin-defined metric (what [`MetricsSink::plugin_metric`] does), returning why it
    /// was refused; see [`custom`] for the rules. Always `Ok` when disabled.
    pub fn record_custom(
        &self,
        plugin: &str,
        name: &str,
        kind: &str,
        value: f64,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), CustomMetricError> {
        let Some(pushed) = &self.inner.pushed else { return Ok(()) };
        let result = self.inner.custom.record(plugin, name, kind, value, labels);
        if let Err(err) = &result {
            pushed.custom_refused.with_label_values(&[plugin, err.reason()]).inc();
        }
        result
    }

    /// The exposition in Prometheus text format 0.0.4 (serve with [`CONTENT_TYPE`](Self::CONTENT_TYPE)),
    /// or an empty string when disabled.
    pub fn render(&self) -> String {
        let Some(pushed) = &self.inner.pushed else { return String::new() };
        let plugins = self.snapshot();
        for plugin in &plugins {
            pushed.touch(&plugin.name);
        }
        let mut families = pushed.registry.gather();
        families.extend(self.plugin_families(&plugins));
        families.extend(self.node_families(&plugins));
        if let Some(source) = self.inner.node.read().clone() {
            families.extend(stats_families(&source()));
        }
        if let Some(process) = process::ProcessStats::read() {
            families.extend(process.families());
        }
        families.extend(self.inner.custom.families());
        families.retain(|f| !f.get_metric().is_empty());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        if let Some(node) = &self.inner.options.node {
            label_every_sample(&mut families, "node", node);
        }
        let mut out = Vec::new();
        match TextEncoder::new().encode(&families, &mut out) {
            Ok(()) => String::from_utf8(out).unwrap_or_default(),
            Err(err) => {
                tracing::error!(message = "cannot encode the Prometheus metrics", %err);
                String::new()
            }
        }
    }

    fn snapshot(&self) -> Vec<PluginStatus> {
        let source = self.inner.plugins.read().clone();
        source.map(|source| source()).unwrap_or_default()
    }

    fn plugin_families(&self, plugins: &[PluginStatus]) -> Vec<MetricFamily> {
        let mut cpu = Family::new(
            "rosey_plugin_cpu_percent",
            "CPU use of the plugin's process tree, percent of one core.",
            MetricType::GAUGE,
        );
        let mut memory = Family::new(
            "rosey_plugin_memory_mb",
            "Resident memory of the plugin's process tree, MiB.",
            MetricType::GAUGE,
        );
        let mut uptime = Family::new(
            "rosey_plugin_uptime_seconds",
            "How long the serving instance has been running (0 when none runs).",
            MetricType::GAUGE,
        );
        for plugin in plugins {
            let labels = [("plugin", plugin.name.as_str())];
            if let Some(value) = plugin.cpu_percent {
                cpu.push(&labels, value);
            }
            if let Some(value) = plugin.memory_mb {
                memory.push(&labels, value);
            }
            uptime.push(&labels, plugin.uptime.as_secs_f64());
        }
        [cpu, memory, uptime].into_iter().filter(|f| !f.is_empty()).map(Family::build).collect()
    }

    fn node_families(&self, plugins: &[PluginStatus]) -> Vec<MetricFamily> {
        let started_at = *self.inner.started_at.read();
        let uptime = SystemTime::now().duration_since(started_at).unwrap_or(Duration::ZERO);
        let running = plugins.iter().filter(|p| p.state == PluginState::Running).count();
        let crashed = plugins
            .iter()
            .filter(|p| matches!(p.state, PluginState::Crashed | PluginState::Failed))
            .count();
        vec![
            gauge(
                "rosey_bot_uptime_seconds",
                "Seconds since the bot started.",
                uptime.as_secs_f64(),
            ),
            gauge("rosey_total_plugins", "Plugins the node manages.", plugins.len() as f64),
            gauge("rosey_plugins_running", "Plugins in state RUNNING.", running as f64),
            gauge("rosey_plugins_crashed", "Plugins in state CRASHED or FAILED.", crashed as f64),
            Family::new(
                "rosey_build_info",
                "The running Rosey's version; always 1.",
                MetricType::GAUGE,
            )
            .sample(&[("version", &self.inner.options.version)], 1.0)
            .build(),
        ]
    }
}

/// Adds the label `name="value"` to every sample of `families` (first, before the family's own).
fn label_every_sample(families: &mut [MetricFamily], name: &str, value: &str) {
    for family in families {
        for metric in family.mut_metric().iter_mut() {
            let mut pair = prometheus::proto::LabelPair::default();
            pair.set_name(name.to_owned());
            pair.set_value(value.to_owned());
            let mut labels = vec![pair];
            labels.extend(metric.get_label().iter().cloned());
            metric.set_label(labels);
        }
    }
}

/// The operator metrics of `stats` (see [`NodeStats`]'s fields for the names).
fn stats_families(stats: &NodeStats) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    if let Some(bus) = &stats.bus {
        out.extend([
            counter(
                "rosey_bus_messages_published_total",
                "Messages published on the in-process bus.",
                bus.published,
            ),
            counter(
                "rosey_bus_messages_delivered_total",
                "Messages handed to a subscription's buffer.",
                bus.delivered,
            ),
            counter(
                "rosey_bus_messages_dropped_total",
                "Messages dropped because a subscription's buffer was full.",
                bus.dropped,
            ),
            gauge(
                "rosey_bus_queued_bytes",
                "Payload bytes waiting in subscriptions' buffers.",
                bus.queued_bytes as f64,
            ),
            gauge("rosey_bus_subscriptions", "Live bus subscriptions.", bus.subscriptions as f64),
        ]);
    }
    if let Some(router) = &stats.router {
        out.extend([
            counter(
                "rosey_router_routed_total",
                "Chat lines and PMs published as command events.",
                router.routed,
            ),
            counter(
                "rosey_router_ignored_total",
                "Chat lines and PMs that were not commands or came from the bot.",
                router.ignored,
            ),
            counter(
                "rosey_router_unknown_commands_total",
                "Commands no plugin owns (not answered).",
                router.unknown,
            ),
            counter(
                "rosey_router_help_total",
                "!help lines the router answered itself.",
                router.help,
            ),
            counter(
                "rosey_router_malformed_total",
                "Payloads on cytube.chat.message or cytube.pm.message that were not chat messages or PMs.",
                router.malformed,
            ),
            counter(
                "rosey_router_failed_total",
                "Commands that could not be encoded.",
                router.failed,
            ),
            counter(
                "rosey_router_not_running_total",
                "Commands no running plugin took.",
                router.not_running,
            ),
            counter(
                "rosey_router_unanswered_total",
                "Commands not answered in time or not deliverable.",
                router.unanswered,
            ),
            gauge(
                "rosey_router_in_flight",
                "Routed commands waiting for their answer.",
                router.in_flight as f64,
            ),
        ]);
    }
    if let Some(connector) = &stats.connector {
        let bool_gauge = |b: bool| if b { 1.0 } else { 0.0 };
        let counters = [
            (
                "rosey_connector_reconnects_total",
                "Reconnect attempts of the CyTube connector.",
                connector.reconnects,
            ),
            (
                "rosey_chat_messages_received_total",
                "Chat lines and PMs received from the channel.",
                connector.chat_in,
            ),
            (
                "rosey_chat_messages_sent_total",
                "Chat lines and PMs sent to the channel.",
                connector.chat_out,
            ),
            (
                "rosey_connector_cooldowns_total",
                "Cooldown frames from the CyTube server (rate limited lines).",
                connector.cooldowns,
            ),
            (
                "rosey_connector_outbox_dropped_total",
                "Outgoing lines dropped because the outbox was full.",
                connector.outbox_dropped,
            ),
        ];
        out.extend(
            counters.into_iter().filter_map(|(name, help, v)| v.map(|v| counter(name, help, v))),
        );
        if let Some(connected) = connector.connected {
            out.push(gauge(
                "rosey_connector_connected",
                "1 when the connector is in its channel, else 0.",
                bool_gauge(connected),
            ));
        }
        if let Some(queued) = connector.outbox_queued {
            out.push(gauge(
                "rosey_connector_outbox_queued",
                "Outgoing lines waiting to be sent.",
                queued as f64,
            ));
        }
    }
    if let Some(writer) = &stats.writer {
        out.extend([
            counter(
                "rosey_storage_records_written_total",
                "Audit and lifecycle records written to the database.",
                writer.written,
            ),
            counter(
                "rosey_storage_records_dropped_total",
                "Records dropped because the writer's queue was full.",
                writer.dropped,
            ),
            counter(
                "rosey_storage_records_rejected_total",
                "Records the database refused.",
                writer.rejected,
            ),
            counter(
                "rosey_storage_write_failures_total",
                "Failed write attempts (an outage counts one per attempt).",
                writer.failures,
            ),
            gauge(
                "rosey_storage_records_queued",
                "Records waiting to be written.",
                writer.queued as f64,
            ),
            gauge(
                "rosey_storage_available",
                "1 when the last write succeeded, else 0.",
                if writer.available { 1.0 } else { 0.0 },
            ),
        ]);
    }
    if let Some(kv) = &stats.kv {
        out.extend([
            counter("rosey_kv_requests_total", "Key-value requests from plugins.", kv.requests),
            counter(
                "rosey_kv_errors_total",
                "Key-value requests answered with an error.",
                kv.errors,
            ),
            counter(
                "rosey_kv_unavailable_total",
                "Key-value requests answered unavailable (database down).",
                kv.unavailable,
            ),
            counter(
                "rosey_kv_cache_hits_total",
                "Key-value gets answered from the read cache (SQLite only).",
                kv.cache_hits,
            ),
            counter(
                "rosey_kv_cache_misses_total",
                "Key-value gets the read cache sent to the database (SQLite only).",
                kv.cache_misses,
            ),
        ]);
    }
    out
}

impl MetricsSink for PrometheusMetrics {
    fn event_processed(&self, plugin: &str, latency: Duration, ok: bool) {
        let Some(p) = &self.inner.pushed else { return };
        p.events.with_label_values(&[plugin]).inc();
        if !ok {
            p.events_failed.with_label_values(&[plugin]).inc();
        }
        p.response_time.with_label_values(&[plugin]).observe(latency.as_secs_f64());
    }

    fn event_received(&self, plugin: &str, kind: &str) {
        let Some(p) = &self.inner.pushed else { return };
        p.events_by_type.with_label_values(&[plugin, kind]).inc();
    }

    fn plugin_crashed(&self, plugin: &str, _reason: &str) {
        let Some(p) = &self.inner.pushed else { return };
        p.crashes.with_label_values(&[plugin]).inc();
    }

    fn plugin_restarted(&self, plugin: &str) {
        let Some(p) = &self.inner.pushed else { return };
        p.restarts.with_label_values(&[plugin]).inc();
    }

    fn plugin_reloaded(&self, plugin: &str, outcome: ReloadOutcome, duration: Duration) {
        let Some(p) = &self.inner.pushed else { return };
        p.reloads.with_label_values(&[plugin, outcome.as_str()]).inc();
        p.reload_duration.with_label_values(&[plugin]).observe(duration.as_secs_f64());
    }

    fn admin_command(&self, command: &str, user: &str) {
        let Some(p) = &self.inner.pushed else { return };
        p.admin_commands.with_label_values(&[command, user]).inc();
    }

    fn plugin_metric(
        &self,
        plugin: &str,
        name: &str,
        kind: &str,
        value: f64,
        labels: &BTreeMap<String, String>,
    ) {
        let _ = self.record_custom(plugin, name, kind, value, labels);
    }
}
