//! Rosey's metrics collector.
//!
//! This crate will hold the `MetricsCollector` (a poll loop over the plugin manager's snapshots that keeps
//! `metrics.history_duration` of samples per plugin in a ring buffer and computes avg/min/max/p95 over any
//! window) and the Prometheus registry behind the dashboard's `/metrics` endpoint. It implements
//! `rosey_core`'s `MetricsSink` trait. Nothing is implemented yet; see the project's issue tracker.
//!
//! [`collector`]: the [`MetricsCollector`] polls the plugin manager every `poll_interval` and keeps each
//! plugin's samples (raw ring for `history_duration`, 1-minute buckets for 24 h, 15-minute buckets for
//! 7 days), answers avg/min/max/p95 over any window through [`MetricsHistory`], records response times
//! through its [`CollectorSink`], and can save its tiers to storage so trends survive a restart.

#![deny(missing_docs)]

pub mod collector;
pub use collector::{
    CollectorHandle, CollectorOptions, CollectorSink, MetricsCollector, MetricsHistory,
};
