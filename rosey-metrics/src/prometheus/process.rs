//! The host process's own `process_*` metrics, read from `/proc/self` (Linux only; elsewhere none).

use prometheus::proto::{MetricFamily, MetricType};

use super::family::Family;

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    start_time_seconds: Option<f64>,
    open_fds: Option<f64>,
}

impl ProcessStats {
    /// Reads the current values, or `None` when `/proc/self/stat` cannot be read or parsed (not
    /// Linux, or an unusual kernel); the exposition then simply has no `process_*` metrics.
    pub(super) fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let (ticks, page) = sys::clock_and_page();
        // Fields after the command name, which is in parentheses and may contain spaces: the first
        // is field 3 (state) of proc(5), so field N is at index N - 3.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let cpu_seconds = (field(14)? + field(15)?) / ticks;
        let start_ticks = field(22)?;
        let virtual_bytes = field(23)?;
        let resident_bytes = field(24)? * page;
        let start_time_seconds = boot_time().map(|boot| boot + start_ticks / ticks);
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count() as f64);
        Some(Self { cpu_seconds, resident_bytes, virtual_bytes, start_time_seconds, open_fds })
    }

    /// The `process_*` families, named as every Prometheus client library names them.
    pub(super) fn families(&self) -> Vec<MetricFamily> {
        let mut out = vec![
            Family::new(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                MetricType::COUNTER,
            )
            .sample(&[], self.cpu_seconds)
            .build(),
            Family::new(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                MetricType::GAUGE,
            )
            .sample(&[], self.resident_bytes)
            .build(),
            Family::new(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                MetricType::GAUGE,
            )
            .sample(&[], self.virtual_bytes)
            .build(),
        ];
        if let Some(start) = self.start_time_seconds {
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
        if let Some(fds) = self.open_fds {
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

/// The system's boot time, seconds since the epoch (`btime` in `/proc/stat`).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|line| line.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

#[allow(unsafe_code)]
mod sys {
    /// Clock ticks per second and page size in bytes, with Linux's usual values as fallback.
    pub(super) fn clock_and_page() -> (f64, f64) {
        // SAFETY: sysconf only reads system constants.
        let (ticks, page) =
            unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        (if ticks > 0 { ticks as f64 } else { 100.0 }, if page > 0 { page as f64 } else { 4096.0 })
    }
}
