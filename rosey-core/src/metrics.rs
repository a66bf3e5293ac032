//! [`MetricsSink`]: how the runtime reports what happened to whoever keeps metrics.
//!
//! rosey-core calls the sink; it never reads anything back. The default is [`NoopSink`]; the
//! `rosey-metrics` crate provides a Prometheus-backed sink with history. Every method has a no-op default
//! so a sink implements only what it cares about, and must return quickly (it is called on hot paths):
//! record and return, never block or await.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::event::LifecycleEvent;
use crate::subject::LifecycleKind;

/// How a reload ended, as the sink hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new version is serving.
    Success,
    /// The new version failed its health check; the old one keeps serving.
    RolledBack,
}

impl ReloadOutcome {
    /// The outcome as shown to users and in metric labels (`success`, `rolled_back`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::RolledBack => "rolled_back",
        }
    }
}

/// Receives the runtime's measurements. Implementations must be cheap and non-blocking.
pub trait MetricsSink: Send + Sync + 'static {
    /// A plugin finished an event (`ok` false when it failed, timed out or its plugin crashed), with
    /// the time from delivery to `done`.
    fn event_processed(&self, plugin: &str, latency: Duration, ok: bool) {
        let _ = (plugin, latency, ok);
    }

    /// A bus event of `kind` reached `plugin`. `kind` is one of a fixed set derived from the subject:
    /// `command`, `chat`, `pm`, `user_join`, `user_leave`, `media_change`, `lifecycle`, `other` (the
    /// `type` label of `rosey_events_total`; the plugin slot defines the mapping).
    fn event_received(&self, plugin: &str, kind: &str) {
        let _ = (plugin, kind);
    }

    /// A plugin instance exited unexpectedly or was killed for a limit; `reason` says why.
    fn plugin_crashed(&self, plugin: &str, reason: &str) {
        let _ = (plugin, reason);
    }

    /// The supervisor restarted a plugin after a crash.
    fn plugin_restarted(&self, plugin: &str) {
        let _ = plugin;
    }

    /// A reload finished.
    fn plugin_reloaded(&self, plugin: &str, outcome: ReloadOutcome, duration: Duration) {
        let _ = (plugin, outcome, duration);
    }

    /// An `!admin` command ran: `command` is its sub-command (`reload`, `status`, …) and `user` the
    /// CyTube name of the admin who gave it.
    fn admin_command(&self, command: &str, user: &str) {
        let _ = (command, user);
    }

    /// A lifecycle event happened to a plugin (the same one published on
    /// `rosey.plugin.<name>.<kind>`): started, stopped, crashed, restarted, failed, reloaded,
    /// reload_failed. Storage records these in `plugin_events`.
    fn plugin_lifecycle(&self, kind: LifecycleKind, event: &LifecycleEvent) {
        let _ = (kind, event);
    }

    /// A plugin reported a metric of its own, as sent in the protocol's `metric` message, unchecked:
    /// `kind` should be `counter` (value is an increment), `gauge` (value is the new value) or
    /// `histogram` (value is one observation); the sink validates everything.
    fn plugin_metric(
        &self,
        plugin: &str,
        name: &str,
        kind: &str,
        value: f64,
        labels: &BTreeMap<String, String>,
    ) {
        let _ = (plugin, name, kind, value, labels);
    }
}

/// A [`MetricsSink`] that ignores everything: the embedded default.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopSink;

impl MetricsSink for NoopSink {}

/// A [`MetricsSink`] that passes everything on to several sinks, in order (e.g. the metrics collector
/// and storage's lifecycle recorder).
#[derive(Clone, Default)]
pub struct FanoutSink(Vec<Arc<dyn MetricsSink>>);

impl std::fmt::Debug for FanoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutSink").field("sinks", &self.0.len()).finish()
    }
}

impl FanoutSink {
    /// A fan-out to `sinks`.
    pub fn new(sinks: Vec<Arc<dyn MetricsSink>>) -> Self {
        Self(sinks)
    }

    /// Adds one more sink.
    pub fn push(&mut self, sink: Arc<dyn MetricsSink>) {
        self.0.push(sink);
    }
}

impl MetricsSink for FanoutSink {
    fn event_processed(&self, plugin: &str, latency: Duration, ok: bool) {
        self.0.iter().for_each(|s| s.event_processed(plugin, latency, ok));
    }

    fn event_received(&self, plugin: &str, kind: &str) {
        self.0.iter().for_each(|s| s.event_received(plugin, kind));
    }

    fn plugin_crashed(&self, plugin: &str, reason: &str) {
        self.0.iter().for_each(|s| s.plugin_crashed(plugin, reason));
    }

    fn plugin_restarted(&self, plugin: &str) {
        self.0.iter().for_each(|s| s.plugin_restarted(plugin));
    }

    fn plugin_reloaded(&self, plugin: &str, outcome: ReloadOutcome, duration: Duration) {
        self.0.iter().for_each(|s| s.plugin_reloaded(plugin, outcome, duration));
    }

    fn admin_command(&self, command: &str, user: &str) {
        self.0.iter().for_each(|s| s.admin_command(command, user));
    }

    fn plugin_lifecycle(&self, kind: LifecycleKind, event: &LifecycleEvent) {
        self.0.iter().for_each(|s| s.plugin_lifecycle(kind, event));
    }

    fn plugin_metric(
        &self,
        plugin: &str,
        name: &str,
        kind: &str,
        value: f64,
        labels: &BTreeMap<String, String>,
    ) {
        self.0.iter().for_each(|s| s.plugin_metric(plugin, name, kind, value, labels));
    }
}
