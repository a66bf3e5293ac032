//! Rosey's metrics: the collector with history and aggregates, and the Prometheus registry.
//!
//! [`collector`]: the [`MetricsCollector`] polls the plugin manager every `poll_interval` and keeps each
//! plugin's samples (raw ring for `history_duration`, 1-minute buckets for 24 h, 15-minute buckets for
//! 7 days), answers avg/min/max/p95 over any window through [`MetricsHistory`], records response times
//! through its [`CollectorSink`], and can save its tiers to storage so trends survive a restart.
//!
//! [`PrometheusMetrics`] (module [`prometheus`](mod@crate::prometheus)) is the registry behind
//! `GET /metrics`: a `MetricsSink` that counts events, crashes, reloads, admin commands and
//! plugin-defined metrics as they happen, and a renderer that reads plugin snapshots and the node's
//! component counters ([`NodeStats`]) at each scrape, in Prometheus text format 0.0.4.
//!
//! Both meet `rosey_core` only through its traits (`MetricsSink`, `PluginControl`, `Storage`).

#![deny(missing_docs)]

pub mod collector;
pub mod prometheus;

pub use self::prometheus::{ConnectorStats, NodeStats, PrometheusMetrics, PrometheusOptions};
pub use collector::{
    CollectorHandle, CollectorOptions, CollectorSink, MetricsCollector, MetricsHistory,
};
