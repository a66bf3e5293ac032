//! Plugin-defined metrics: what plugins report with the protocol's `metric` message, checked, bounded
//! and exposed as `rosey_custom_<name>{plugin, …labels}`.
//!
//! Semantics of `{"type": "metric", "name", "kind", "value", "labels"}`:
//!
//! - `counter`: `value` is an **increment** (finite, ≥ 0) added to the series; exposed as
//!   `rosey_custom_<name>_total` (a `name` already ending in `_total` is not suffixed twice);
//! - `gauge`: `value` (finite) **replaces** the series' value; exposed as `rosey_custom_<name>`;
//! - `histogram`: `value` (finite) is **one observation**; exposed as `rosey_custom_<name>_bucket`,
//!   `_sum` and `_count`, with Prometheus's default buckets (0.005 … 10, meant for seconds).
//!
//! Checks (a refused message changes nothing; the first refusal of each reason per plugin is logged as
//! a warning, later ones at debug level, and every one is counted in
//! `rosey_custom_metrics_refused_total{plugin,reason}`):
//!
//! - `name`: `[a-zA-Z_][a-zA-Z0-9_]*`, at most 64 characters; a gauge or histogram name must not end in
//!   `_total` (reserved for counters);
//! - one kind per name: a name first seen as a counter stays a counter, for every plugin (all plugins
//!   share the family, told apart by the `plugin` label); a name that would clash with a histogram's
//!   `_bucket`, `_sum` or `_count` series is refused too;
//! - `labels`: at most 8; names follow the metric name rule, must not be `plugin` nor start with `__`;
//!   values at most 128 bytes;
//! - at most 100 series (name + label values) per plugin; a new series beyond that is refused, with
//!   one warning per plugin.

use std::collections::{BTreeMap, HashMap, HashSet};

use parking_lot::Mutex;
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, Histogram, HistogramOpts, Opts};

/// Prefix of every plugin-defined metric's name.
pub const CUSTOM_PREFIX: &str = "rosey_custom_";
/// Most series (a name with one set of label values) one plugin may define.
pub const MAX_SERIES_PER_PLUGIN: usize = 100;
/// Most labels on one plugin-defined metric (besides `plugin`).
pub const MAX_LABELS: usize = 8;
/// Longest metric or label name, in characters.
pub const MAX_NAME_LEN: usize = 64;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 128;

/// The kind of a plugin-defined metric, as named in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CustomKind {
    /// `counter`: the value is an increment.
    Counter,
    /// `gauge`: the value replaces the previous one.
    Gauge,
    /// `histogram`: the value is one observation.
    Histogram,
}

impl CustomKind {
    /// Parses the protocol's `kind` (`counter`, `gauge`, `histogram`).
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "counter" => Some(Self::Counter),
            "gauge" => Some(Self::Gauge),
            "histogram" => Some(Self::Histogram),
            _ => None,
        }
    }

    /// The kind as named in the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// Why a plugin's `metric` message was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CustomMetricError {
    /// `kind` is not `counter`, `gauge` or `histogram`.
    #[error("unknown metric kind {0:?} (use counter, gauge or histogram)")]
    UnknownKind(String),
    /// The metric name breaks the naming rule.
    #[error(
        "invalid metric name {0:?}: use letters, digits and _ (not first), at most 64 characters; _total only on counters"
    )]
    InvalidName(String),
    /// A label name breaks the naming rule, is `plugin` or starts with `__`.
    #[error(
        "invalid label name {0:?}: use letters, digits and _ (not first), at most 64 characters, not plugin, not starting with __"
    )]
    InvalidLabelName(String),
    /// More than [`MAX_LABELS`] labels.
    #[error("too many labels ({0}; at most 8)")]
    TooManyLabels(usize),
    /// A label value over [`MAX_LABEL_VALUE_BYTES`].
    #[error("value of label {0:?} is longer than 128 bytes")]
    LabelValueTooLong(String),
    /// The value is not finite, or is a negative counter increment.
    #[error("invalid value {0} (must be finite; a counter's increment must be ≥ 0)")]
    InvalidValue(f64),
    /// The name is already used with another kind, or clashes with a histogram's series.
    #[error("metric {name:?} is already a {existing}; it cannot be a {requested}")]
    KindConflict {
        /// The metric name.
        name: String,
        /// The kind it has (or the histogram it clashes with).
        existing: &'static str,
        /// The kind asked for.
        requested: &'static str,
    },
    /// The plugin already has [`MAX_SERIES_PER_PLUGIN`] series.
    #[error("the plugin already has 100 metric series; new ones are refused")]
    SeriesLimit,
}

impl CustomMetricError {
    /// The reason as a label value of `rosey_custom_metrics_refused_total`: `unknown_kind`,
    /// `invalid_name`, `invalid_label`, `too_many_labels`, `label_too_long`, `invalid_value`,
    /// `kind_conflict`, `series_limit`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnknownKind(_) => "unknown_kind",
            Self::InvalidName(_) => "invalid_name",
            Self::InvalidLabelName(_) => "invalid_label",
            Self::TooManyLabels(_) => "too_many_labels",
            Self::LabelValueTooLong(_) => "label_too_long",
            Self::InvalidValue(_) => "invalid_value",
            Self::KindConflict { .. } => "kind_conflict",
            Self::SeriesLimit => "series_limit",
        }
    }
}

/// One series of a plugin-defined metric.
enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

impl Series {
    fn collect(&self) -> Vec<MetricFamily> {
        match self {
            Self::Counter(c) => c.collect(),
            Self::Gauge(g) => g.collect(),
            Self::Histogram(h) => h.collect(),
        }
    }
}

/// What one plugin has defined.
#[derive(Default)]
struct PluginSeries {
    series: HashMap<(String, BTreeMap<String, String>), Series>,
    warned: HashSet<&'static str>,
}

#[derive(Default)]
struct State {
    /// Base name (without `_total`) → kind, shared by all plugins.
    kinds: HashMap<String, CustomKind>,
    plugins: HashMap<String, PluginSeries>,
}

/// The store of plugin-defined metrics (see the module docs).
#[derive(Default)]
pub(super) struct CustomMetrics {
    state: Mutex<State>,
}

impl std::fmt::Debug for CustomMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomMetrics").finish_non_exhaustive()
    }
}

/// Whether `name` follows `[a-zA-Z_][a-zA-Z0-9_]*` and is at most [`MAX_NAME_LEN`] long.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && name.len() <= MAX_NAME_LEN && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The series names a histogram named `base` adds besides its own.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

impl CustomMetrics {
    /// Checks and records one `metric` message from `plugin`; warns as the module docs say.
    pub(super) fn record(
        &self,
        plugin: &str,
        name: &str,
        kind: &str,
        value: f64,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), CustomMetricError> {
        let mut state = self.state.lock();
        let result = state.record(plugin, name, kind, value, labels);
        if let Err(err) = &result {
            let entry = state.plugins.entry(plugin.to_owned()).or_default();
            if entry.warned.insert(err.reason()) {
                tracing::warn!(message = "plugin metric refused", plugin = %plugin, metric = %name, reason = %err, note = "later refusals for this reason are logged at debug level");
            } else {
                tracing::debug!(message = "plugin metric refused", plugin = %plugin, metric = %name, reason = %err);
            }
        }
        result
    }

    /// Every plugin-defined family, merged across plugins, in name order.
    pub(super) fn families(&self) -> Vec<MetricFamily> {
        let state = self.state.lock();
        let mut merged: BTreeMap<String, MetricFamily> = BTreeMap::new();
        for plugin in state.plugins.values() {
            for series in plugin.series.values() {
                for mut family in series.collect() {
                    match merged.get_mut(family.name()) {
                        Some(existing) => existing.mut_metric().append(family.mut_metric()),
                        None => {
                            merged.insert(family.name().to_owned(), family);
                        }
                    }
                }
            }
        }
        drop(state);
        merged
            .into_values()
            .map(|mut family| {
                family.mut_metric().sort_by(|a, b| {
                    let key = |m: &prometheus::proto::Metric| {
                        m.get_label()
                            .iter()
                            .map(|l| (l.name().to_owned(), l.value().to_owned()))
                            .collect::<Vec<_>>()
                    };
                    key(a).cmp(&key(b))
                });
                family
            })
            .collect()
    }
}

impl State {
    fn record(
        &mut self,
        plugin: &str,
        name: &str,
        kind: &str,
        value: f64,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), CustomMetricError> {
        let kind = CustomKind::parse(kind)
            .ok_or_else(|| CustomMetricError::UnknownKind(kind.to_owned()))?;
        if !valid_name(name) {
            return Err(CustomMetricError::InvalidName(name.to_owned()));
        }
        let base = match (kind, name.strip_suffix("_total")) {
            (CustomKind::Counter, Some(base)) if !base.is_empty() => base,
            (CustomKind::Counter, _) => name,
            (_, Some(_)) => return Err(CustomMetricError::InvalidName(name.to_owned())),
            (_, None) => name,
        };
        if labels.len() > MAX_LABELS {
            return Err(CustomMetricError::TooManyLabels(labels.len()));
        }
        for (label, label_value) in labels {
            if !valid_name(label) || label == "plugin" || label.starts_with("__") {
                return Err(CustomMetricError::InvalidLabelName(label.clone()));
            }
            if label_value.len() > MAX_LABEL_VALUE_BYTES {
                return Err(CustomMetricError::LabelValueTooLong(label.clone()));
            }
        }
        let value_ok = value.is_finite() && (kind != CustomKind::Counter || value >= 0.0);
        if !value_ok {
            return Err(CustomMetricError::InvalidValue(value));
        }
        self.check_kind(base, kind)?;

        let plugin_series = self.plugins.entry(plugin.to_owned()).or_default();
        let key = (base.to_owned(), labels.clone());
        if !plugin_series.series.contains_key(&key) {
            if plugin_series.series.len() >= MAX_SERIES_PER_PLUGIN {
                return Err(CustomMetricError::SeriesLimit);
            }
            let series = new_series(plugin, base, kind, labels)
                .ok_or_else(|| CustomMetricError::InvalidName(name.to_owned()))?;
            plugin_series.series.insert(key.clone(), series);
            self.kinds.insert(base.to_owned(), kind);
        }
        match plugin_series.series.get(&key) {
            Some(Series::Counter(c)) => c.inc_by(value),
            Some(Series::Gauge(g)) => g.set(value),
            Some(Series::Histogram(h)) => h.observe(value),
            None => {}
        }
        Ok(())
    }

    /// Refuses `base` as `kind` when it has another kind, or its series would clash with a histogram's.
    fn check_kind(&self, base: &str, kind: CustomKind) -> Result<(), CustomMetricError> {
        let conflict = |existing: CustomKind| CustomMetricError::KindConflict {
            name: base.to_owned(),
            existing: existing.as_str(),
            requested: kind.as_str(),
        };
        if let Some(&existing) = self.kinds.get(base) {
            return if existing == kind { Ok(()) } else { Err(conflict(existing)) };
        }
        for suffix in HISTOGRAM_SUFFIXES {
            if let Some(histogram) = base.strip_suffix(suffix)
                && self.kinds.get(histogram) == Some(&CustomKind::Histogram)
            {
                return Err(conflict(CustomKind::Histogram));
            }
            if kind == CustomKind::Histogram
                && let Some(&existing) = self.kinds.get(&format!("{base}{suffix}"))
            {
                return Err(conflict(existing));
            }
        }
        Ok(())
    }
}

/// A new series for `plugin`, or `None` if the prometheus crate refuses the names (it should not:
/// they are checked first).
fn new_series(
    plugin: &str,
    base: &str,
    kind: CustomKind,
    labels: &BTreeMap<String, String>,
) -> Option<Series> {
    let mut const_labels: HashMap<String, String> =
        labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    const_labels.insert("plugin".to_owned(), plugin.to_owned());
    let help = format!(
        "Plugin-defined {} {base:?}, reported by plugins with the metric message.",
        kind.as_str()
    );
    let series = match kind {
        CustomKind::Counter => {
            let opts =
                Opts::new(format!("{CUSTOM_PREFIX}{base}_total"), help).const_labels(const_labels);
            Series::Counter(Counter::with_opts(opts).ok()?)
        }
        CustomKind::Gauge => {
            let opts = Opts::new(format!("{CUSTOM_PREFIX}{base}"), help).const_labels(const_labels);
            Series::Gauge(Gauge::with_opts(opts).ok()?)
        }
        CustomKind::Histogram => {
            let opts = HistogramOpts::new(format!("{CUSTOM_PREFIX}{base}"), help)
                .const_labels(const_labels);
            Series::Histogram(Histogram::with_opts(opts).ok()?)
        }
    };
    Some(series)
}
