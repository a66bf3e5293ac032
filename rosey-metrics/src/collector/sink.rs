//! [`CollectorSink`]: the push side of the collector, which records response times between polls.

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use rosey_core::metrics::MetricsSink;

use super::reader::Shared;

/// The slowest response time recorded exactly; slower ones count as this (one hour, in µs).
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// The collector's [`MetricsSink`]: records each finished event's response time into a per-plugin
/// histogram (1 µs to 1 h, 2 significant digits) that each poll turns into the sample's
/// `latency_p95_seconds` and resets. Everything else the sink hears is ignored here. A cheap clone;
/// give it to the plugin manager (through a [`FanoutSink`](rosey_core::metrics::FanoutSink) beside
/// other sinks).
#[derive(Debug, Clone)]
pub struct CollectorSink {
    pub(crate) shared: Arc<Shared>,
}

impl MetricsSink for CollectorSink {
    fn event_processed(&self, plugin: &str, latency: Duration, _ok: bool) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let mut histograms = self.shared.latency.lock();
        if let Some(histogram) = histograms.get_mut(plugin) {
            histogram.saturating_record(micros);
        } else if let Ok(mut histogram) = Histogram::new_with_bounds(1, HIGHEST_MICROS, 2) {
            histogram.saturating_record(micros);
            histograms.insert(plugin.to_owned(), histogram);
        }
    }
}
