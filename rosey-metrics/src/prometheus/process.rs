//! The host process's own `process_*` metrics, read from `/proc/self` (Linux only; elsewhere none).

use prometheus::proto::{MetricFamily, MetricType};
use rosey_core::plugin::resources::HostUsage;

use super::family::Family;

/// What `/proc/self` says about this process (read by rosey-core's `/proc` parser).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ProcessStats(HostUsage);

impl ProcessStats {
    /// Reads the current values, or `None` when `/proc/self` cannot be read or parsed (not Linux, or
    /// an unusual kernel); the exposition then simply has no `process_*` metrics.
    pub(super) fn read() -> Option<Self> {
        HostUsage::read().ok().map(Self)
    }

    /// The `process_*` families, named as every Prometheus client library names them.
    pub(super) fn families(&self) -> Vec<MetricFamily> {
        let mut out = vec![
            Family::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                MetricType::COUNTER,
            )
            .sample(&[], self.0.cpu_seconds)
            .build(),
            Family::new(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                MetricType::GAUGE,
            )
            .sample(&[], self.0.resident_bytes)
            .build(),
            Family::new(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                MetricType::GAUGE,
            )
            .sample(&[], self.0.virtual_bytes)
            .build(),
        ];
        if let Some(start) = self.0.start_time_seconds {
            out.push(
                Family::new(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    MetricType::GAUGE,
                )
                .sample(&[], start)
                .build(),
            );
        }
        if let Some(fds) = self.0.open_fds {
            out.push(
                Family::new(
                    "process_open_fds",
                    "Number of open file descriptors.",
                    MetricType::GAUGE,
                )
                .sample(&[], fds)
                .build(),
            );
        }
        out
    }
}
