//! The state the poll loop writes and the queries the dashboard reads: [`MetricsHistory`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::mem::size_of;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::{Mutex, RwLock};
use rosey_core::event::{EpochMillis, now_millis};
use rosey_core::plugin::PluginStatus;
use tokio::sync::watch;
use tokio::time::Instant;

use super::CollectorOptions;
use super::history::{PluginHistory, TierSpec, aggregate_points};
use super::series::{Aggregate, Point, Sample, Series};

/// The collector's clock: wall-clock milliseconds at creation plus tokio time elapsed since, so that
/// sample times follow `tokio::time` (and paused time in tests).
#[derive(Debug)]
struct Clock {
    epoch_at_start: AtomicI64,
    instant_at_start: Instant,
}

impl Clock {
    fn now(&self) -> EpochMillis {
        let elapsed =
            i64::try_from(self.instant_at_start.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.epoch_at_start.load(Ordering::Relaxed).saturating_add(elapsed)
    }
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Everything the collector keeps, shared by the poll loop, the sink and the readers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) options: CollectorOptions,
    clock: Clock,
    raw_capacity: usize,
    pub(crate) minute: TierSpec,
    pub(crate) quarter: TierSpec,
    pub(crate) histories: RwLock<BTreeMap<String, PluginHistory>>,
    /// Response times of the events finished since the last poll, per plugin, in microseconds.
    pub(crate) latency: Mutex<HashMap<String, Histogram<u32>>>,
    polls: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn new(options: CollectorOptions) -> Self {
        let poll_ms = millis(options.poll_interval).max(1);
        let raw_span_ms = millis(options.history_duration).max(0);
        let raw_capacity = usize::try_from(raw_span_ms.saturating_add(poll_ms - 1) / poll_ms)
            .unwrap_or(usize::MAX)
            .max(1);
        Self {
            clock: Clock {
                epoch_at_start: AtomicI64::new(now_millis()),
                instant_at_start: Instant::now(),
            },
            raw_capacity,
            minute: TierSpec { bucket_ms: 60_000, span_ms: millis(options.minute_tier) },
            quarter: TierSpec { bucket_ms: 15 * 60_000, span_ms: millis(options.quarter_tier) },
            histories: RwLock::new(BTreeMap::new()),
            latency: Mutex::new(HashMap::new()),
            polls: watch::Sender::new(0),
            options,
        }
    }

    pub(crate) fn set_clock_start(&self, epoch_millis: EpochMillis) {
        self.clock.epoch_at_start.store(epoch_millis, Ordering::Relaxed);
    }

    pub(crate) fn now(&self) -> EpochMillis {
        self.clock.now()
    }

    pub(crate) fn new_history(&self) -> PluginHistory {
        PluginHistory::new(
            self.raw_capacity,
            millis(self.options.history_duration),
            self.minute,
            self.quarter,
        )
    }

    /// Takes each plugin's response-time p95 since the last poll (seconds) and resets the histograms;
    /// forgets the histograms of plugins that are gone and recorded nothing.
    fn take_latencies(&self, present: &HashSet<&str>) -> HashMap<String, f64> {
        let mut latency = self.latency.lock();
        latency.retain(|name, h| !h.is_empty() || present.contains(name.as_str()));
        let mut p95 = HashMap::new();
        for (name, histogram) in latency.iter_mut() {
            if !histogram.is_empty() {
                p95.insert(name.clone(), histogram.value_at_quantile(0.95) as f64 / 1e6);
                histogram.reset();
            }
        }
        p95
    }

    /// Records one poll: a sample per plugin in `statuses`, then ages out old data everywhere.
    pub(crate) fn record(&self, statuses: &[PluginStatus]) {
        let now = self.now();
        let present: HashSet<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
        let mut latencies = self.take_latencies(&present);
        let mut histories = self.histories.write();
        for status in statuses {
            let history = match histories.get_mut(&status.name) {
                Some(history) => history,
                None => histories.entry(status.name.clone()).or_insert_with(|| self.new_history()),
            };
            let sample = sample_of(status, now, history.latest(), latencies.remove(&status.name));
            history.push(sample);
        }
        histories.retain(|_, history| {
            history.expire(now);
            !history.is_empty()
        });
        drop(histories);
        self.polls.send_modify(|n| *n += 1);
    }
}

fn sample_of(
    status: &PluginStatus,
    now: EpochMillis,
    previous: Option<&Sample>,
    latency_p95_seconds: Option<f64>,
) -> Sample {
    let event_count = status.events.completed.saturating_add(status.events.failed);
    let events_per_second = match previous {
        Some(prev) if now > prev.time => {
            event_count.saturating_sub(prev.event_count) as f64
                / ((now - prev.time) as f64 / 1000.0)
        }
        _ => 0.0,
    };
    // Share the version text with the previous sample: most samples repeat it.
    let version = match previous {
        Some(prev) if *prev.version == *status.version => Arc::clone(&prev.version),
        _ => Arc::from(status.version.as_str()),
    };
    Sample {
        time: now,
        version,
        state: status.state,
        cpu_percent: status.cpu_percent,
        memory_mb: status.memory_mb,
        uptime_seconds: status.uptime.as_secs_f64(),
        event_count,
        crash_count: status.crash_count,
        events_per_second,
        latency_p95_seconds,
    }
}

/// The query side of the collector, for the dashboard and the control API: a cheap clone, safe to
/// use from any task; every query takes a short lock and never waits for a poll.
///
/// Windows are counted back from the collector's clock (wall-clock time at creation plus
/// `tokio::time` since). A window up to `history_duration` is answered from the raw samples, up to
/// `minute_tier` from the 1-minute buckets, beyond that from the 15-minute buckets.
#[derive(Debug, Clone)]
pub struct MetricsHistory {
    pub(crate) shared: Arc<Shared>,
}

impl MetricsHistory {
    /// The collector's current time, milliseconds since the epoch (what windows count back from).
    pub fn now(&self) -> EpochMillis {
        self.shared.now()
    }

    /// The plugins with any history, in name order (including ones that disappeared and have not
    /// aged out yet).
    pub fn plugins(&self) -> Vec<String> {
        self.shared.histories.read().keys().cloned().collect()
    }

    /// The plugin's latest sample.
    pub fn current(&self, plugin: &str) -> Option<Sample> {
        self.shared.histories.read().get(plugin)?.latest().cloned()
    }

    /// The plugin's raw samples of the last `window` (at most `history_duration` of them), oldest
    /// first; empty for an unknown plugin.
    pub fn samples(&self, plugin: &str, window: Duration) -> Vec<Sample> {
        let since = self.now().saturating_sub(millis(window));
        let histories = self.shared.histories.read();
        histories.get(plugin).map(|h| h.samples(since).cloned().collect()).unwrap_or_default()
    }

    /// The plugin's history over the last `window`, oldest first: one [`Point`] per raw sample when
    /// the window fits in `history_duration`, else one per bucket of the tier that covers it (the
    /// bucket being filled last). Empty for an unknown plugin.
    pub fn history(&self, plugin: &str, window: Duration) -> Vec<Point> {
        let since = self.now().saturating_sub(millis(window));
        let histories = self.shared.histories.read();
        let Some(history) = histories.get(plugin) else { return Vec::new() };
        if window <= self.shared.options.history_duration {
            history.samples(since).map(Point::from_sample).collect()
        } else if window <= self.shared.options.minute_tier {
            history.minute.points(since)
        } else {
            history.quarter.points(since)
        }
    }

    /// avg / min / max / p95 of `series` for the plugin over the last `window` (1 m, 5 m, 1 h, 24 h,
    /// 7 d or any other), from the tier that covers it (see [`MetricsHistory`]); `None` for an
    /// unknown plugin or when the window holds no value of the series. p95 is nearest-rank (see
    /// [`Aggregate::p95`]).
    pub fn aggregate(&self, plugin: &str, series: Series, window: Duration) -> Option<Aggregate> {
        let since = self.now().saturating_sub(millis(window));
        let histories = self.shared.histories.read();
        let history = histories.get(plugin)?;
        if window <= self.shared.options.history_duration {
            history.aggregate_raw(series, since)
        } else if window <= self.shared.options.minute_tier {
            aggregate_points(&history.minute.points(since), series)
        } else {
            aggregate_points(&history.quarter.points(since), series)
        }
    }

    /// An estimate of the memory all the collector's buffers take, in bytes: raw rings, tiers and
    /// response-time histograms (allocated capacity, not just what is filled). Plugin names and
    /// version strings are counted; allocator overhead is not.
    pub fn memory_bytes(&self) -> usize {
        let histories = self.shared.histories.read();
        let buffers: usize =
            histories.iter().map(|(name, h)| name.capacity() + h.memory_bytes()).sum();
        drop(histories);
        let latency = self.shared.latency.lock();
        let histograms: usize = latency
            .iter()
            .map(|(name, h)| {
                name.capacity()
                    + size_of::<Histogram<u32>>()
                    + h.distinct_values() * size_of::<u32>()
            })
            .sum();
        size_of::<Shared>() + buffers + histograms
    }

    /// How many polls have completed since the collector started.
    pub fn poll_count(&self) -> u64 {
        *self.shared.polls.borrow()
    }

    /// Waits until at least `count` polls have completed (returns at once if they have). For the
    /// dashboard's live updates and for tests.
    pub async fn polled(&self, count: u64) {
        let mut polls = self.shared.polls.subscribe();
        // The sender lives in `shared`, which `self` keeps alive: this only ends by the condition.
        let _ = polls.wait_for(|n| *n >= count).await;
    }
}
