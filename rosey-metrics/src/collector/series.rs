//! What the collector records: [`Sample`]s of each plugin, the [`Series`] in them, and the
//! [`Aggregate`]s and [`Point`]s it answers queries with.

use std::fmt;
use std::sync::Arc;

use rosey_core::event::EpochMillis;
use rosey_core::plugin::PluginState;

/// One poll's measurements of one plugin (the raw tier).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When it was taken, milliseconds since the epoch.
    pub time: EpochMillis,
    /// The version serving (or of the manifest when none serves) at that time.
    pub version: Arc<str>,
    /// The plugin's state at that time.
    pub state: PluginState,
    /// CPU use of the plugin's process, percent of one core; `None` when it has no process of its own.
    pub cpu_percent: Option<f64>,
    /// Resident memory of the plugin's process tree, MiB; `None` when it has no process of its own.
    pub memory_mb: Option<f64>,
    /// How long the serving instance had been running, seconds.
    pub uptime_seconds: f64,
    /// Events the plugin finished (completed + failed) since the host started.
    pub event_count: u64,
    /// Crashes since the host started.
    pub crash_count: u64,
    /// Events finished per second since the previous sample (0 for a plugin's first sample).
    pub events_per_second: f64,
    /// 95th percentile of the response times of the events finished since the previous poll,
    /// seconds (hdrhistogram, 2 significant digits); `None` when none finished.
    pub latency_p95_seconds: Option<f64>,
}

impl Sample {
    /// The value of `series` in this sample, `None` when it was not measured.
    pub fn value(&self, series: Series) -> Option<f64> {
        match series {
            Series::Cpu => self.cpu_percent,
            Series::Memory => self.memory_mb,
            Series::Uptime => Some(self.uptime_seconds),
            Series::Events => Some(self.event_count as f64),
            Series::Crashes => Some(self.crash_count as f64),
            Series::EventsPerSecond => Some(self.events_per_second),
            Series::LatencyP95 => self.latency_p95_seconds,
        }
        .filter(|v| v.is_finite())
    }
}

/// A sampled series that can be aggregated and is kept in the downsampled tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Series {
    /// [`Sample::cpu_percent`].
    Cpu,
    /// [`Sample::memory_mb`].
    Memory,
    /// [`Sample::uptime_seconds`].
    Uptime,
    /// [`Sample::event_count`].
    Events,
    /// [`Sample::crash_count`].
    Crashes,
    /// [`Sample::events_per_second`].
    EventsPerSecond,
    /// [`Sample::latency_p95_seconds`].
    LatencyP95,
}

impl Series {
    /// Every series, in a fixed order (the order of the values in a [`Point`]).
    pub const ALL: [Series; 7] = [
        Self::Cpu,
        Self::Memory,
        Self::Uptime,
        Self::Events,
        Self::Crashes,
        Self::EventsPerSecond,
        Self::LatencyP95,
    ];

    /// The series' name, as the [`Sample`] field it comes from (`cpu_percent`, `memory_mb`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu_percent",
            Self::Memory => "memory_mb",
            Self::Uptime => "uptime_seconds",
            Self::Events => "event_count",
            Self::Crashes => "crash_count",
            Self::EventsPerSecond => "events_per_second",
            Self::LatencyP95 => "latency_p95_seconds",
        }
    }

    /// The series named `name` (as [`as_str`](Self::as_str) spells it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Average, minimum and maximum of one series over a stretch of time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// Mean.
    pub avg: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// How many samples had a value.
    pub count: u32,
}

/// One point of a plugin's history: a raw sample (`samples` 1, `avg == min == max`) or a tier
/// bucket (`samples` polls summarised).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The sample's time, or the start of the bucket, milliseconds since the epoch.
    pub time: EpochMillis,
    /// How many samples the point summarises.
    pub samples: u32,
    /// Per series in [`Series::ALL`] order; `None` where the series was not measured.
    pub stats: [Option<Stat>; 7],
}

impl Point {
    /// The point's statistics of `series`.
    pub fn stat(&self, series: Series) -> Option<Stat> {
        self.stats[series.index()]
    }

    pub(crate) fn from_sample(sample: &Sample) -> Self {
        let stats =
            Series::ALL.map(|s| sample.value(s).map(|v| Stat { avg: v, min: v, max: v, count: 1 }));
        Self { time: sample.time, samples: 1, stats }
    }
}

/// Statistics of one series of one plugin over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    /// Mean of the samples in the window (over tier buckets: their averages weighted by the number
    /// of samples in each, which is the mean of the samples).
    pub avg: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// 95th percentile, nearest-rank: the values sorted ascending, the one at rank ⌈0.95·n⌉
    /// (1-based). Over the raw tier the values are the samples; over a downsampled tier they are
    /// the bucket averages (so a short spike inside one bucket is smoothed out of it, not out of
    /// `max`).
    pub p95: f64,
    /// How many samples the window holds (with a value for the series).
    pub count: u64,
}

/// The nearest-rank percentile `q` (0 < q ≤ 1) of `values`, which it sorts; `None` when empty.
pub(crate) fn nearest_rank(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    Some(values[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_nearest_rank() {
        let mut twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        // ⌈0.95·20⌉ = 19
        assert_eq!(nearest_rank(&mut twenty, 0.95), Some(19.0));
        let mut ten: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        // ⌈0.95·10⌉ = 10: the largest
        assert_eq!(nearest_rank(&mut ten, 0.95), Some(10.0));
        assert_eq!(nearest_rank(&mut [4.0], 0.95), Some(4.0));
        assert_eq!(nearest_rank(&mut [], 0.95), None);
    }

    #[test]
    fn series_names_round_trip() {
        for series in Series::ALL {
            assert_eq!(Series::parse(series.as_str()), Some(series));
            assert_eq!(Series::ALL[series.index()], series);
        }
    }
}
