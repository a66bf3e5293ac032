//! One plugin's history: the raw ring of samples and the two downsampled tiers, all fixed-size.

use std::collections::VecDeque;
use std::mem::size_of;

use rosey_core::event::EpochMillis;

use super::series::{Aggregate, Point, Sample, Series, Stat, nearest_rank};

const SERIES: usize = Series::ALL.len();

/// The size of one downsampled tier: bucket length and how long buckets are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TierSpec {
    pub(crate) bucket_ms: i64,
    pub(crate) span_ms: i64,
}

impl TierSpec {
    /// How many closed buckets the tier holds at most.
    pub(crate) fn capacity(self) -> usize {
        usize::try_from(self.span_ms / self.bucket_ms.max(1)).unwrap_or(usize::MAX).max(1)
    }

    fn bucket_start(self, time: EpochMillis) -> EpochMillis {
        time - time.rem_euclid(self.bucket_ms.max(1))
    }
}

/// A closed bucket's statistics of one series, stored in `f32` to keep the tiers small
/// (a `count` of 0 means the series had no value in the bucket).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct CompactStat {
    pub(crate) avg: f32,
    pub(crate) min: f32,
    pub(crate) max: f32,
    pub(crate) count: u16,
}

impl CompactStat {
    pub(crate) fn widen(self) -> Option<Stat> {
        (self.count > 0).then(|| Stat {
            avg: f64::from(self.avg),
            min: f64::from(self.min),
            max: f64::from(self.max),
            count: u32::from(self.count),
        })
    }
}

/// A closed bucket of a tier.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bucket {
    pub(crate) start: EpochMillis,
    pub(crate) samples: u16,
    pub(crate) stats: [CompactStat; SERIES],
}

impl Bucket {
    fn point(&self) -> Point {
        Point {
            time: self.start,
            samples: u32::from(self.samples),
            stats: self.stats.map(CompactStat::widen),
        }
    }
}

/// The bucket being filled, in full precision.
#[derive(Debug, Clone)]
struct OpenBucket {
    start: EpochMillis,
    samples: u32,
    sum: [f64; SERIES],
    min: [f64; SERIES],
    max: [f64; SERIES],
    count: [u32; SERIES],
}

impl OpenBucket {
    fn new(start: EpochMillis) -> Self {
        Self {
            start,
            samples: 0,
            sum: [0.0; SERIES],
            min: [f64::INFINITY; SERIES],
            max: [f64::NEG_INFINITY; SERIES],
            count: [0; SERIES],
        }
    }

    fn add(&mut self, sample: &Sample) {
        self.samples = self.samples.saturating_add(1);
        for series in Series::ALL {
            if let Some(v) = sample.value(series) {
                let i = series.index();
                self.sum[i] += v;
                self.min[i] = self.min[i].min(v);
                self.max[i] = self.max[i].max(v);
                self.count[i] = self.count[i].saturating_add(1);
            }
        }
    }

    fn stat(&self, i: usize) -> Option<Stat> {
        (self.count[i] > 0).then(|| Stat {
            avg: self.sum[i] / f64::from(self.count[i]),
            min: self.min[i],
            max: self.max[i],
            count: self.count[i],
        })
    }

    fn point(&self) -> Point {
        let stats = std::array::from_fn(|i| self.stat(i));
        Point { time: self.start, samples: self.samples, stats }
    }

    #[allow(clippy::cast_possible_truncation)] // f32 storage is the point; counts are clamped
    fn close(&self) -> Bucket {
        let stats = std::array::from_fn(|i| match self.stat(i) {
            Some(s) => CompactStat {
                avg: s.avg as f32,
                min: s.min as f32,
                max: s.max as f32,
                count: u16::try_from(s.count).unwrap_or(u16::MAX),
            },
            None => CompactStat::default(),
        });
        Bucket {
            start: self.start,
            samples: u16::try_from(self.samples).unwrap_or(u16::MAX),
            stats,
        }
    }
}

/// A downsampled tier: a fixed-size ring of closed buckets plus the one being filled.
#[derive(Debug, Clone)]
pub(crate) struct Tier {
    spec: TierSpec,
    closed: VecDeque<Bucket>,
    open: Option<OpenBucket>,
}

impl Tier {
    pub(crate) fn new(spec: TierSpec) -> Self {
        Self { spec, closed: VecDeque::new(), open: None }
    }

    pub(crate) fn spec(&self) -> TierSpec {
        self.spec
    }

    fn add(&mut self, sample: &Sample) {
        let start = self.spec.bucket_start(sample.time);
        if self.open.as_ref().is_some_and(|open| open.start != start) {
            self.close_open();
        }
        self.open.get_or_insert_with(|| OpenBucket::new(start)).add(sample);
    }

    fn close_open(&mut self) {
        if let Some(open) = self.open.take() {
            self.push_closed(open.close());
        }
    }

    fn push_closed(&mut self, bucket: Bucket) {
        let capacity = self.spec.capacity();
        grow_ring(&mut self.closed, capacity);
        if self.closed.len() >= capacity {
            self.closed.pop_front();
        }
        self.closed.push_back(bucket);
    }

    /// Closes the open bucket once its time is over, and drops buckets older than the tier's span.
    fn expire(&mut self, now: EpochMillis) {
        if self
            .open
            .as_ref()
            .is_some_and(|open| open.start.saturating_add(self.spec.bucket_ms) <= now)
        {
            self.close_open();
        }
        let oldest = now.saturating_sub(self.spec.span_ms);
        while self
            .closed
            .front()
            .is_some_and(|b| b.start.saturating_add(self.spec.bucket_ms) <= oldest)
        {
            self.closed.pop_front();
        }
    }

    fn is_empty(&self) -> bool {
        self.closed.is_empty() && self.open.is_none()
    }

    /// The buckets that end after `since`, oldest first, the open one last.
    pub(crate) fn points(&self, since: EpochMillis) -> Vec<Point> {
        let bucket_ms = self.spec.bucket_ms;
        let closed = self
            .closed
            .iter()
            .filter(|b| b.start.saturating_add(bucket_ms) > since)
            .map(Bucket::point);
        let open = self
            .open
            .iter()
            .filter(|b| b.start.saturating_add(bucket_ms) > since)
            .map(OpenBucket::point);
        closed.chain(open).collect()
    }

    /// The closed buckets, oldest first (for saving).
    pub(crate) fn closed(&self) -> impl Iterator<Item = &Bucket> {
        self.closed.iter()
    }

    /// Replaces the closed buckets with `buckets` (loaded from storage), keeping the newest that fit.
    pub(crate) fn restore(&mut self, mut buckets: Vec<Bucket>) {
        buckets.sort_by_key(|b| b.start);
        buckets.dedup_by_key(|b| b.start);
        let skip = buckets.len().saturating_sub(self.spec.capacity());
        self.closed.clear();
        for bucket in buckets.into_iter().skip(skip) {
            self.push_closed(bucket);
        }
    }

    fn memory_bytes(&self) -> usize {
        self.closed.capacity() * size_of::<Bucket>() + size_of::<OpenBucket>()
    }
}

/// How many more entries a ring takes at a time as it fills.
const RING_GROWTH: usize = 16;

/// Makes room for one more entry in a ring of at most `capacity`: memory follows what is kept (a
/// plugin one hour old holds an hour of buckets, not a week's worth of empty slots) and never goes
/// past the capacity, since the ring grows by exact steps and stops there.
fn grow_ring<T>(ring: &mut VecDeque<T>, capacity: usize) {
    if ring.len() == ring.capacity() && ring.capacity() < capacity {
        let step = RING_GROWTH.min(capacity - ring.len());
        ring.reserve_exact(step);
    }
}

/// Everything the collector keeps about one plugin.
#[derive(Debug, Clone)]
pub(crate) struct PluginHistory {
    raw: VecDeque<Sample>,
    raw_capacity: usize,
    raw_span_ms: i64,
    pub(crate) minute: Tier,
    pub(crate) quarter: Tier,
}

impl PluginHistory {
    pub(crate) fn new(
        raw_capacity: usize,
        raw_span_ms: i64,
        minute: TierSpec,
        quarter: TierSpec,
    ) -> Self {
        Self {
            raw: VecDeque::new(),
            raw_capacity: raw_capacity.max(1),
            raw_span_ms,
            minute: Tier::new(minute),
            quarter: Tier::new(quarter),
        }
    }

    pub(crate) fn latest(&self) -> Option<&Sample> {
        self.raw.back()
    }

    pub(crate) fn push(&mut self, sample: Sample) {
        self.minute.add(&sample);
        self.quarter.add(&sample);
        grow_ring(&mut self.raw, self.raw_capacity);
        if self.raw.len() >= self.raw_capacity {
            self.raw.pop_front();
        }
        self.raw.push_back(sample);
    }

    /// Drops what has aged out of each tier and closes tier buckets whose time is over.
    pub(crate) fn expire(&mut self, now: EpochMillis) {
        let oldest = now.saturating_sub(self.raw_span_ms);
        while self.raw.front().is_some_and(|s| s.time <= oldest) {
            self.raw.pop_front();
        }
        self.minute.expire(now);
        self.quarter.expire(now);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.raw.is_empty() && self.minute.is_empty() && self.quarter.is_empty()
    }

    /// Raw samples taken after `since`, oldest first.
    pub(crate) fn samples(&self, since: EpochMillis) -> impl Iterator<Item = &Sample> {
        // Samples are in time order: skip the old ones from the front.
        let first = self.raw.partition_point(|s| s.time <= since);
        self.raw.range(first..)
    }

    /// `series` over the raw samples taken after `since`.
    pub(crate) fn aggregate_raw(&self, series: Series, since: EpochMillis) -> Option<Aggregate> {
        let mut values: Vec<f64> = self.samples(since).filter_map(|s| s.value(series)).collect();
        let count = values.len();
        let (sum, min, max) =
            values.iter().fold((0.0, f64::INFINITY, f64::NEG_INFINITY), |(sum, min, max), &v| {
                (sum + v, min.min(v), max.max(v))
            });
        let p95 = nearest_rank(&mut values, 0.95)?;
        Some(Aggregate { avg: sum / count as f64, min, max, p95, count: count as u64 })
    }

    pub(crate) fn memory_bytes(&self) -> usize {
        size_of::<Self>()
            + self.raw.capacity() * size_of::<Sample>()
            + self.minute.memory_bytes()
            + self.quarter.memory_bytes()
    }
}

/// `series` over the tier buckets in `points`: avg weighted by samples, min of the minima, max of the
/// maxima, p95 nearest-rank over the bucket averages.
pub(crate) fn aggregate_points(points: &[Point], series: Series) -> Option<Aggregate> {
    let stats: Vec<Stat> = points.iter().filter_map(|p| p.stat(series)).collect();
    let count: u64 = stats.iter().map(|s| u64::from(s.count)).sum();
    if count == 0 {
        return None;
    }
    let sum: f64 = stats.iter().map(|s| s.avg * f64::from(s.count)).sum();
    let min = stats.iter().map(|s| s.min).fold(f64::INFINITY, f64::min);
    let max = stats.iter().map(|s| s.max).fold(f64::NEG_INFINITY, f64::max);
    let mut averages: Vec<f64> = stats.iter().map(|s| s.avg).collect();
    let p95 = nearest_rank(&mut averages, 0.95)?;
    Some(Aggregate { avg: sum / count as f64, min, max, p95, count })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rosey_core::plugin::PluginState;

    use super::*;

    fn sample(time: EpochMillis) -> Sample {
        Sample {
            time,
            version: Arc::from("1.0.0"),
            state: PluginState::Running,
            cpu_percent: Some(1.0),
            memory_mb: Some(2.0),
            uptime_seconds: 3.0,
            event_count: 4,
            crash_count: 0,
            events_per_second: 0.5,
            latency_p95_seconds: Some(0.01),
        }
    }

    #[test]
    fn a_plugin_history_at_the_defaults_stays_within_the_documented_budget() {
        let minute = TierSpec { bucket_ms: 60_000, span_ms: 24 * 3_600_000 };
        let quarter = TierSpec { bucket_ms: 900_000, span_ms: 7 * 24 * 3_600_000 };
        let mut history = PluginHistory::new(720, 3_600_000, minute, quarter);
        // Closing one bucket of each tier allocates its whole ring; the raw ring is allocated at once.
        for minutes in [0, 16, 32] {
            history.push(sample(minutes * 60_000));
        }
        let bytes = history.memory_bytes();
        let raw = 720 * size_of::<Sample>();
        assert!(raw * 10 < 1_000_000, "1 h of raw samples for 10 plugins under 1 MB");
        assert!(bytes * 50 < 20_000_000, "all tiers of 50 plugins under 20 MB: {bytes} per plugin");
    }
}
