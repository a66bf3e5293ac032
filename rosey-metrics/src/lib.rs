//! Rosey's metrics collector.
//!
//! This crate will hold the `MetricsCollector` (a poll loop over the plugin manager's snapshots that keeps
//! `metrics.history_duration` of samples per plugin in a ring buffer and computes avg/min/max/p95 over any
//! window) and the Prometheus registry behind the dashboard's `/metrics` endpoint. It implements
//! `rosey_core`'s `MetricsSink` trait. Nothing is implemented yet; see the project's issue tracker.
//!
//! [`PrometheusMetrics`] (module [`prometheus`](mod@crate::prometheus)) is the registry behind
//! `GET /metrics`: a `MetricsSink` that counts events, crashes, reloads, admin commands and
//! plugin-defined metrics as they happen, and a renderer that reads plugin snapshots and the node's
//! component counters ([`NodeStats`]) at each scrape, in Prometheus text format 0.0.4.

pub mod prometheus;

pub use self::prometheus::{ConnectorStats, NodeStats, PrometheusMetrics, PrometheusOptions};
