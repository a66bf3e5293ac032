//! The node at one instant, as every read answer is built from: plugin statuses, the page's model, the
//! `/api/metrics` JSON, the rendered page and the SSE fragments. One task rebuilds it on demand, at
//! most every `max_age`, so any number of readers costs the plugin manager one `list()` a refresh.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use rosey_core::health::{self, HealthRegistry};
use rosey_core::metrics::MetricsSink;
use rosey_core::plugin::{PluginControl, PluginState, PluginStatus};
use rosey_core::storage::{PluginEventKind, PluginEventQuery, Storage, StorageSink};
use rosey_metrics::collector::Series;
use rosey_metrics::{MetricsHistory, PrometheusMetrics};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::model::{Card, Header, Light, Overview, TimelineEntry};
use crate::page;
use crate::server::ConnectorView;

/// Entries in the page's timeline.
const TIMELINE_LENGTH: u32 = 20;
/// Longest the timeline's storage query may hold up a refresh; the previous timeline is kept then.
const TIMELINE_TIMEOUT: Duration = Duration::from_millis(500);
/// Points per sparkline (the last hour, each the largest of the samples it covers).
const SPARK_POINTS: usize = 120;
/// The window the sparklines show.
const SPARK_WINDOW: Duration = Duration::from_secs(3600);
/// A plugin restarted this recently is yellow.
const RECENT_RESTART: Duration = Duration::from_secs(300);
/// A plugin whose events timed out this recently is red (not answering).
const RECENT_TIMEOUT: Duration = Duration::from_secs(60);
/// CPU or memory above this share of the plugin's limit is yellow.
const NEAR_LIMIT: f64 = 0.8;
/// Longest a reader waits for a refresh before it is answered from the older snapshot.
const REFRESH_WAIT: Duration = Duration::from_secs(2);

/// Everything the dashboard reads from.
pub(crate) struct Sources {
    pub(crate) control: Arc<dyn PluginControl>,
    pub(crate) health: HealthRegistry,
    pub(crate) history: Option<MetricsHistory>,
    pub(crate) prometheus: Option<PrometheusMetrics>,
    pub(crate) storage: Option<Arc<dyn Storage>>,
    pub(crate) audit: Option<StorageSink>,
    pub(crate) sink: Option<Arc<dyn MetricsSink>>,
    pub(crate) connector: Option<ConnectorView>,
    pub(crate) members: Option<rosey_core::control::Members>,
    pub(crate) version: String,
    pub(crate) bus: String,
    /// This node's name (`node.name`).
    pub(crate) node: String,
    /// Whether the page shows the reload and restart buttons (a token is configured).
    pub(crate) actions: bool,
}

/// The node at one instant, with the answers built from it.
pub(crate) struct Snapshot {
    /// When it was built.
    pub(crate) built: Instant,
    /// Plugin statuses by name.
    pub(crate) statuses: Vec<PluginStatus>,
    /// `GET /api/metrics`.
    pub(crate) metrics_json: Bytes,
    /// The same, gzipped once for every client that accepts gzip (compressing per request would
    /// cost more than the rest of the answer).
    pub(crate) metrics_gzip: std::sync::OnceLock<Bytes>,
    /// `GET /`.
    pub(crate) page: Bytes,
    /// One SSE `overview` event's data.
    pub(crate) fragments_json: String,
    /// `GET /api/plugin/{name}` answers built from this snapshot, by name and window.
    pub(crate) plugin_answers: Mutex<HashMap<(String, &'static str), Bytes>>,
}

/// The current snapshot, and the task that refreshes it.
pub(crate) struct Snapshots {
    current: watch::Sender<Arc<Snapshot>>,
    refresh: Arc<Notify>,
    /// Set by [`Snapshots::refresh_now`]: rebuild even if the snapshot is fresh.
    force: Arc<AtomicBool>,
    max_age: Duration,
    /// Open SSE streams: while there are any, the snapshot is refreshed every `max_age` unasked.
    streams: Arc<AtomicUsize>,
    pub(crate) sources: Arc<Sources>,
}

impl Snapshots {
    /// Builds the first snapshot and starts refreshing on demand until `stop`.
    pub(crate) async fn start(
        sources: Sources,
        max_age: Duration,
        stop: CancellationToken,
    ) -> Self {
        let sources = Arc::new(sources);
        let mut builder = Builder::new(sources.clone());
        let first = builder.build().await;
        let (current, _) = watch::channel(Arc::new(first));
        let refresh = Arc::new(Notify::new());
        let streams = Arc::new(AtomicUsize::new(0));
        let force = Arc::new(AtomicBool::new(false));
        let task = (current.clone(), refresh.clone(), streams.clone(), force.clone());
        tokio::spawn(async move {
            let (current, refresh, streams, force) = task;
            loop {
                let live = streams.load(Ordering::Relaxed) > 0;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = refresh.notified() => {}
                    () = tokio::time::sleep(max_age), if live => {}
                }
                let age = current.borrow().built.elapsed();
                if age < max_age / 2 && !force.swap(false, Ordering::Relaxed) {
                    continue; // refreshed moments ago for an earlier request
                }
                let snapshot = builder.build().await;
                current.send_replace(Arc::new(snapshot));
            }
        });
        Self { current, refresh, force, max_age, streams, sources }
    }

    /// A snapshot no older than `max_age` (or, while a refresh is slow, the one before it; a
    /// snapshot up to twice `max_age` old is served at once while the next is built).
    pub(crate) async fn get(&self) -> Arc<Snapshot> {
        let snapshot = self.current.borrow().clone();
        let age = snapshot.built.elapsed();
        if age <= self.max_age {
            return snapshot;
        }
        let mut next = self.current.subscribe();
        next.borrow_and_update();
        self.refresh.notify_one();
        if age <= self.max_age * 2 {
            return snapshot;
        }
        match tokio::time::timeout(REFRESH_WAIT, next.changed()).await {
            Ok(Ok(())) => next.borrow().clone(),
            _ => snapshot,
        }
    }

    /// Rebuilds at once (after an action) and waits for it.
    pub(crate) async fn refresh_now(&self) -> Arc<Snapshot> {
        let mut next = self.current.subscribe();
        next.borrow_and_update();
        self.force.store(true, Ordering::Relaxed);
        self.refresh.notify_one();
        match tokio::time::timeout(REFRESH_WAIT, next.changed()).await {
            Ok(Ok(())) => next.borrow().clone(),
            _ => self.current.borrow().clone(),
        }
    }

    /// Follows the snapshots as they are built; while the guard lives they are built every
    /// `max_age` even when nobody asks.
    pub(crate) fn follow(&self) -> (watch::Receiver<Arc<Snapshot>>, StreamGuard) {
        self.streams.fetch_add(1, Ordering::Relaxed);
        self.refresh.notify_one();
        (self.current.subscribe(), StreamGuard(self.streams.clone()))
    }
}

/// Counts an open stream until dropped.
pub(crate) struct StreamGuard(Arc<AtomicUsize>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Builds snapshots, remembering what the lights need from one to the next.
struct Builder {
    sources: Arc<Sources>,
    /// Per plugin: events timed out so far, and when that count last grew.
    timeouts: HashMap<String, (u64, Option<Instant>)>,
    timeline: Vec<TimelineEntry>,
}

impl Builder {
    fn new(sources: Arc<Sources>) -> Self {
        Self { sources, timeouts: HashMap::new(), timeline: Vec::new() }
    }

    async fn build(&mut self) -> Snapshot {
        let mut statuses = self.sources.control.list().await;
        statuses.sort_by(|a, b| a.name.cmp(&b.name));
        let timestamp = unix_seconds(SystemTime::now());
        self.refresh_timeline().await;
        let now = Instant::now();
        let cards: Vec<Card> = statuses.iter().map(|s| self.card(s, now)).collect();
        self.timeouts.retain(|name, _| statuses.iter().any(|s| &s.name == name));
        let overview = Overview {
            timestamp,
            header: self.header(&statuses),
            cards,
            timeline: self.timeline.clone(),
            actions: self.sources.actions,
            refresh_seconds: 5,
        };
        let metrics_json = metrics_json(&statuses, &self.sources.health, timestamp);
        Snapshot {
            built: Instant::now(),
            metrics_json,
            metrics_gzip: std::sync::OnceLock::new(),
            page: Bytes::new(),
            fragments_json: String::new(),
            plugin_answers: Mutex::new(HashMap::new()),
            statuses,
        }
        .with_overview(overview)
    }

    fn header(&self, statuses: &[PluginStatus]) -> Header {
        let health = &self.sources.health;
        let healthy = |name| health.component(name).is_some_and(|c| c.healthy);
        let connector = self.sources.connector.as_ref();
        let standby = health
            .component(health::CONNECTOR)
            .is_some_and(|c| c.healthy && c.detail.starts_with("standby"));
        Header {
            version: self.sources.version.clone(),
            node: self.sources.node.clone(),
            nodes: self.sources.members.as_ref().map(|m| m.known()).unwrap_or_default(),
            uptime_seconds: health.uptime().as_secs(),
            bus: self.sources.bus.clone(),
            bus_healthy: healthy(health::BUS),
            connector: connector.map(|c| c.name.clone()),
            connector_joined: healthy(health::CONNECTOR) && !standby,
            connector_standby: standby,
            channel: connector.and_then(|c| c.channel.clone()),
            users: connector.and_then(|c| c.users.as_ref()).map(|users| users()),
            total_plugins: statuses.len(),
            plugins_running: statuses.iter().filter(|s| s.state == PluginState::Running).count(),
            plugins_crashed: statuses.iter().filter(|s| is_crashed(s.state)).count(),
        }
    }

    fn card(&mut self, status: &PluginStatus, now: Instant) -> Card {
        let timeouts = self.timeouts.entry(status.name.clone()).or_insert((0, None));
        if status.events.timed_out > timeouts.0 {
            *timeouts = (status.events.timed_out, Some(now));
        }
        let timed_out_lately = timeouts.1.is_some_and(|at| now.duration_since(at) < RECENT_TIMEOUT);
        let (light, light_reason) = light(status, timed_out_lately);
        let history = self.sources.history.as_ref();
        let current = history.and_then(|h| h.current(&status.name));
        let points = history.map(|h| h.history(&status.name, SPARK_WINDOW)).unwrap_or_default();
        let spark = |series| spark(points.iter().map(|p| p.stat(series).map(|s| s.avg)));
        Card {
            name: status.name.clone(),
            version: status.version.clone(),
            state: status.state.as_str().to_owned(),
            pid: status.pid,
            uptime_seconds: status.uptime.as_secs(),
            cpu_percent: status.cpu_percent,
            cpu_limit: status.cpu_limit_percent,
            memory_mb: status.memory_mb,
            memory_limit_mb: status.memory_limit_mb,
            event_count: status.events.completed + status.events.failed,
            crash_count: status.crash_count,
            // The last interval's p95 while events flow; in a quiet spell, the hour's.
            p95_ms: current
                .and_then(|s| s.latency_p95_seconds)
                .or_else(|| {
                    let hour = history?.aggregate(&status.name, Series::LatencyP95, SPARK_WINDOW);
                    hour.map(|a| a.p95)
                })
                .map(|s| s * 1000.0),
            last_error: status.last_error.clone(),
            light,
            light_reason,
            spark_cpu: spark(Series::Cpu),
            spark_memory: spark(Series::Memory),
            spark_events: spark(Series::EventsPerSecond),
        }
    }

    /// Reads the newest crashes, failures and reloads; keeps the previous list when storage is
    /// missing, slow or failing.
    async fn refresh_timeline(&mut self) {
        let Some(storage) = &self.sources.storage else { return };
        let query = PluginEventQuery {
            kinds: vec![
                PluginEventKind::Crashed,
                PluginEventKind::Restarted,
                PluginEventKind::Failed,
                PluginEventKind::ReloadOk,
                PluginEventKind::ReloadFailed,
            ],
            limit: TIMELINE_LENGTH,
            ..PluginEventQuery::default()
        };
        match tokio::time::timeout(TIMELINE_TIMEOUT, storage.plugin_events(&query)).await {
            Ok(Ok(events)) => {
                self.timeline = events
                    .into_iter()
                    .map(|e| TimelineEntry {
                        time: e.time_us as f64 / 1e6,
                        plugin: e.plugin,
                        kind: e.kind.as_str().to_owned(),
                        version: e.version,
                        reason: e.reason,
                    })
                    .collect();
            }
            Ok(Err(error)) => {
                tracing::debug!(message = "dashboard timeline not refreshed", %error);
            }
            Err(_) => {
                tracing::debug!(message = "dashboard timeline not refreshed: storage is slow")
            }
        }
    }
}

impl Snapshot {
    /// `/api/metrics` gzipped (fast level), made on first use.
    pub(crate) fn metrics_gzip(&self) -> Bytes {
        self.metrics_gzip.get_or_init(|| gzip(&self.metrics_json)).clone()
    }

    /// Renders the page and the SSE fragments of `overview` into the snapshot.
    fn with_overview(mut self, overview: Overview) -> Self {
        self.page = Bytes::from(page::page(&overview));
        self.fragments_json =
            serde_json::to_string(&page::fragments(&overview)).unwrap_or_else(|_| "{}".to_owned());
        self
    }
}

/// Whether a state counts as crashed for the header and `rosey_plugins_crashed`.
fn is_crashed(state: PluginState) -> bool {
    matches!(state, PluginState::Crashed | PluginState::Failed)
}

/// The card's light and why (docs/OPERATIONS.md): red when crashed, failed, stopped or not answering;
/// yellow when starting or stopping, near a limit, or restarted lately; green otherwise.
fn light(status: &PluginStatus, timed_out_lately: bool) -> (Light, Option<String>) {
    match status.state {
        PluginState::Crashed => return (Light::Red, Some("crashed; restarting".to_owned())),
        PluginState::Failed => return (Light::Red, Some("failed: crashed too often".to_owned())),
        PluginState::Stopped => return (Light::Red, Some("stopped".to_owned())),
        PluginState::Starting => return (Light::Yellow, Some("starting".to_owned())),
        PluginState::Draining | PluginState::Stopping => {
            return (Light::Yellow, Some("stopping".to_owned()));
        }
        PluginState::Running => {}
    }
    if timed_out_lately {
        return (Light::Red, Some("not answering: events timed out in the last minute".to_owned()));
    }
    let near = |value: Option<f64>, limit: Option<f64>| match (value, limit) {
        (Some(value), Some(limit)) if limit > 0.0 && value > limit * NEAR_LIMIT => {
            Some((value / limit * 100.0).round())
        }
        _ => None,
    };
    if let Some(share) = near(status.memory_mb, status.memory_limit_mb) {
        return (Light::Yellow, Some(format!("memory at {share} % of its limit")));
    }
    if let Some(share) = near(status.cpu_percent, status.cpu_limit_percent) {
        return (Light::Yellow, Some(format!("CPU at {share} % of its limit")));
    }
    if status.restart_count > 0 && status.uptime < RECENT_RESTART {
        let minutes = status.uptime.as_secs() / 60;
        let ago = if minutes == 0 { "just now".to_owned() } else { format!("{minutes} min ago") };
        return (Light::Yellow, Some(format!("restarted {ago}")));
    }
    (Light::Green, None)
}

/// At most [`SPARK_POINTS`] points from `values` (oldest first), each the largest of the values it
/// covers, so a spike stays visible.
fn spark(values: impl ExactSizeIterator<Item = Option<f64>>) -> Vec<Option<f64>> {
    let values: Vec<Option<f64>> = values.collect();
    if values.len() <= SPARK_POINTS {
        return values;
    }
    let per_point = values.len().div_ceil(SPARK_POINTS);
    values.chunks(per_point).map(|chunk| chunk.iter().flatten().copied().reduce(f64::max)).collect()
}

/// `body` gzipped at the fast level; an encoder writing to memory does not fail, but should it, the
/// body goes uncompressed (the caller then sees an empty result and sends the plain one).
fn gzip(body: &[u8]) -> Bytes {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    match encoder.write_all(body).and_then(|()| encoder.finish()) {
        Ok(compressed) => Bytes::from(compressed),
        Err(_) => Bytes::new(),
    }
}

/// Seconds since the epoch.
pub(crate) fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// `GET /api/metrics` (docs/METRICS.md).
fn metrics_json(statuses: &[PluginStatus], health: &HealthRegistry, timestamp: f64) -> Bytes {
    #[derive(Serialize)]
    struct Plugin<'a> {
        name: &'a str,
        version: &'a str,
        pid: Option<u32>,
        state: &'static str,
        uptime_seconds: f64,
        cpu_percent: Option<f64>,
        memory_mb: Option<f64>,
        event_count: u64,
        crash_count: u64,
    }
    #[derive(Serialize)]
    struct System {
        bot_uptime_seconds: f64,
        bot_uptime_human: String,
        total_plugins: usize,
        plugins_running: usize,
        plugins_crashed: usize,
        total_events: u64,
    }
    #[derive(Serialize)]
    struct Answer<'a> {
        timestamp: f64,
        plugins: Vec<Plugin<'a>>,
        system: System,
    }
    let plugins: Vec<Plugin<'_>> = statuses
        .iter()
        .map(|s| Plugin {
            name: &s.name,
            version: &s.version,
            pid: s.pid,
            state: s.state.as_str(),
            uptime_seconds: round3(s.uptime.as_secs_f64()),
            cpu_percent: s.cpu_percent.map(round3),
            memory_mb: s.memory_mb.map(round3),
            event_count: s.events.completed + s.events.failed,
            crash_count: s.crash_count,
        })
        .collect();
    let uptime = health.uptime();
    let system = System {
        bot_uptime_seconds: round3(uptime.as_secs_f64()),
        bot_uptime_human: human_duration(uptime),
        total_plugins: statuses.len(),
        plugins_running: statuses.iter().filter(|s| s.state == PluginState::Running).count(),
        plugins_crashed: statuses.iter().filter(|s| is_crashed(s.state)).count(),
        total_events: plugins.iter().map(|p| p.event_count).sum(),
    };
    let answer = Answer { timestamp: round3(timestamp), plugins, system };
    Bytes::from(serde_json::to_vec(&answer).unwrap_or_default())
}

/// Rounds to milliseconds (or thousandths), which is all the JSON needs.
pub(crate) fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// `2d 3h 14m`, `3h 14m`, `14m 5s`, `5s`.
pub(crate) fn human_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_like_a_person_would_write_it() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_secs(14 * 60 + 5)), "14m 5s");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600 + 14 * 60)), "3h 14m");
        assert_eq!(
            human_duration(Duration::from_secs(2 * 86_400 + 3 * 3600 + 14 * 60)),
            "2d 3h 14m"
        );
    }

    #[test]
    fn a_long_series_is_cut_to_its_maxima_and_gaps_stay_gaps() {
        let values = (0..720).map(|i| if i < 6 { None } else { Some((i % 7) as f64) });
        let points = spark(values);
        assert_eq!(points.len(), SPARK_POINTS);
        assert_eq!(points[0], None, "a stretch with no sample is a gap");
        assert!(points[1..].iter().all(|p| p.is_some_and(|v| v >= 5.0)), "each keeps its maximum");
        assert_eq!(spark(vec![Some(1.0), None].into_iter()), vec![Some(1.0), None]);
    }
}
