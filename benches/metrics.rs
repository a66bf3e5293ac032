//! Metrics benchmarks (issue 12 item 6), on `rosey-metrics` with 50 plugins:
//!
//! - `collector/poll_50_plugins`: one collector poll, as the collector runs it (its own task asks
//!   the source for 50 statuses and records a sample per plugin), on a paused-time current-thread
//!   runtime that jumps to the next 5 s tick whenever it is idle; the rings are full first (7 days
//!   of polls), so every poll also drops the oldest sample and closes tier buckets on schedule. The
//!   source is [`Fifty`]: 50 `PluginStatus` values that change every poll, and two response times
//!   per plugin per poll reported to the collector's sink (so each poll also turns 50 histograms
//!   into p95s). Divided by 5 s this is the CPU share of one core at the default interval.
//! - `collector/source_list_50` and `collector/manager_snapshot_50`: the poll's source alone, the
//!   bench's [`Fifty`] (without sink calls) against a real `PluginManager::snapshot()` (what its
//!   `PluginControl::list()` returns) with 50 in-process plugins running, to show the hand-made
//!   source costs what the real one does.
//! - `collector/sink_event_processed`: one response time reported to the collector's sink, for
//!   subtracting the 100 per poll above.
//! - `aggregate/<window>`: `MetricsHistory::aggregate` of one plugin's CPU series over 1 h (720 raw
//!   samples), 24 h (1440 minute buckets) and 7 d (672 quarter-hour buckets).
//! - `prometheus/render_50_plugins`: `PrometheusMetrics::render()` with 50 plugins in the snapshot
//!   and events, crashes, reloads, admin commands and custom metrics recorded.
//!
//! Printed before the benches (not criterion): the collector's memory (`memory_bytes()`) for 10
//! plugins after 1 h (tiers at their defaults and with the tiers shrunk to nothing) and for 50
//! plugins with every tier full; the process CPU time (`/proc/self/stat`) per poll over the 7-day
//! paused-time fill and over a real-time run at a 1 ms interval.
//!
//! `cargo bench -p rosey-benches --bench metrics`. Results: benches/RESULTS.md.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use rosey_core::bus::MemoryBus;
use rosey_core::metrics::{MetricsSink, ReloadOutcome};
use rosey_core::plugin::{
    ControlError, EventCounts, InProcessPlugin, InProcessRuntime, LatencySummary, Manifest,
    PluginControl, PluginManager, PluginState, PluginStatus, ReloadReport,
};
use rosey_metrics::collector::{CollectorOptions, CollectorSink, MetricsCollector, Series};
use rosey_metrics::{ConnectorStats, NodeStats, PrometheusMetrics, PrometheusOptions};

const PLUGINS: usize = 50;
const POLL: Duration = Duration::from_secs(5);
/// Polls in 7 days at 5 s: fills the quarter-hour tier (and every other).
const WEEK_OF_POLLS: u64 = 7 * 24 * 3600 / 5;

/// Plugins' statuses that change every poll: CPU, memory, uptime and event counters move, and each
/// plugin reports two response times to the collector's sink per poll.
struct Fifty {
    plugins: usize,
    polls: AtomicU64,
    sink: Option<CollectorSink>,
}

impl Fifty {
    fn new(plugins: usize, sink: Option<CollectorSink>) -> Arc<Self> {
        Arc::new(Self { plugins, polls: AtomicU64::new(0), sink })
    }
}

fn status(i: usize, n: u64) -> PluginStatus {
    let wobble = ((n as usize + i) % 17) as f64;
    PluginStatus {
        name: format!("plugin-{i:02}"),
        version: "1.2.3".to_owned(),
        state: PluginState::Running,
        pid: Some(1000 + i as u32),
        loaded_at: Some(1_700_000_000_000),
        uptime: Duration::from_secs(n * 5),
        crash_count: n / 1000,
        restart_count: n / 1000,
        cpu_percent: Some(0.5 + wobble),
        memory_mb: Some(20.0 + wobble * 0.25),
        memory_cap: None,
        memory_limit_mb: None,
        cpu_limit_percent: None,
        events: EventCounts {
            received: n * 3,
            delivered: n * 3,
            completed: n * 3 - n / 100,
            failed: n / 100,
            ..EventCounts::default()
        },
        latency: LatencySummary {
            count: n * 3,
            p50: Duration::from_micros(800),
            p99: Duration::from_millis(4),
            max: Duration::from_millis(9),
        },
        last_error: None,
    }
}

#[async_trait]
impl PluginControl for Fifty {
    async fn list(&self) -> Vec<PluginStatus> {
        let n = self.polls.fetch_add(1, Ordering::Relaxed) + 1;
        (0..self.plugins)
            .map(|i| {
                let status = status(i, n);
                if let Some(sink) = &self.sink {
                    let base = 500 + ((n as usize * 7 + i) % 1000) as u64;
                    sink.event_processed(&status.name, Duration::from_micros(base), true);
                    sink.event_processed(&status.name, Duration::from_micros(base * 3), true);
                }
                status
            })
            .collect()
    }
    async fn status(&self, name: &str) -> Result<PluginStatus, ControlError> {
        Err(ControlError::NotFound(name.to_owned()))
    }
    async fn restart(&self, name: &str) -> Result<PluginStatus, ControlError> {
        Err(ControlError::NotFound(name.to_owned()))
    }
    async fn reload(&self, name: &str) -> Result<ReloadReport, ControlError> {
        Err(ControlError::NotFound(name.to_owned()))
    }
    async fn reload_all(&self) -> Vec<ReloadReport> {
        Vec::new()
    }
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime")
}

/// User + system CPU time of this process, from `/proc/self/stat` (clock ticks of 10 ms: USER_HZ
/// is 100 on Linux).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) are at 11 and 12 after field 2.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

fn mb(bytes: usize) -> String {
    format!("{:.3} MB ({bytes} bytes)", bytes as f64 / 1e6)
}

/// A collector at the defaults polling [`Fifty`] on paused time, with every tier full.
struct Filled {
    runtime: tokio::runtime::Runtime,
    handle: rosey_metrics::CollectorHandle,
}

fn filled_collector() -> Filled {
    let runtime = paused_runtime();
    let collector = MetricsCollector::new(CollectorOptions::default());
    let source = Fifty::new(PLUGINS, Some(collector.sink()));
    let handle = runtime.block_on(collector.start(source));
    let reader = handle.reader();
    let (cpu, wall) = (process_cpu(), Instant::now());
    runtime.block_on(reader.polled(WEEK_OF_POLLS + 1));
    let (cpu, wall) = (process_cpu() - cpu, wall.elapsed());
    let per_poll = cpu / u32::try_from(WEEK_OF_POLLS).expect("fits");
    println!(
        "collector fill, paused time: {WEEK_OF_POLLS} polls of {PLUGINS} plugins (7 days at 5 s) \
         in {wall:.2?} wall, {cpu:.2?} process CPU = {per_poll:.2?} CPU per poll = {:.5} % of one \
         core at a 5 s interval",
        per_poll.as_secs_f64() / POLL.as_secs_f64() * 100.0
    );
    println!(
        "memory, all tiers full, {PLUGINS} plugins: {}  (target < 20 MB)",
        mb(reader.memory_bytes())
    );
    Filled { runtime, handle }
}

fn memory_one_hour_ten_plugins() {
    for (label, options) in [
        ("tiers at their defaults (minute/quarter rings allocated)", CollectorOptions::default()),
        (
            "raw 1 h ring only (minute_tier = quarter_tier = 0)",
            CollectorOptions {
                minute_tier: Duration::ZERO,
                quarter_tier: Duration::ZERO,
                ..CollectorOptions::default()
            },
        ),
    ] {
        let runtime = paused_runtime();
        let collector = MetricsCollector::new(options);
        let source = Fifty::new(10, Some(collector.sink()));
        let handle = runtime.block_on(collector.start(source));
        let reader = handle.reader();
        runtime.block_on(reader.polled(720 + 1));
        let samples = reader.samples("plugin-00", Duration::from_secs(3600)).len();
        println!(
            "memory, 1 h at 5 s for 10 plugins ({samples} raw samples each), {label}: {}  (target \
             < 1 MB)",
            mb(reader.memory_bytes())
        );
        runtime.block_on(handle.shutdown()).expect("collector");
    }
}

/// Process CPU per poll when the collector runs for real (no paused time) at a 1 ms interval.
fn real_time_cpu() {
    const POLLS: u64 = 10_000;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("tokio runtime");
    // Raw ring of 720 samples, as at the defaults (3600 s / 5 s).
    let collector = MetricsCollector::new(CollectorOptions {
        poll_interval: Duration::from_millis(1),
        history_duration: Duration::from_millis(720),
        ..CollectorOptions::default()
    });
    let source = Fifty::new(PLUGINS, Some(collector.sink()));
    let handle = runtime.block_on(collector.start(source));
    let reader = handle.reader();
    runtime.block_on(reader.polled(1_000)); // warm up: the raw rings are full
    let (cpu, wall) = (process_cpu(), Instant::now());
    runtime.block_on(reader.polled(1_000 + POLLS));
    let (cpu, wall) = (process_cpu() - cpu, wall.elapsed());
    let per_poll = cpu / u32::try_from(POLLS).expect("fits");
    println!(
        "collector real time, 1 ms interval: {POLLS} polls of {PLUGINS} plugins in {wall:.2?} \
         wall, {cpu:.2?} process CPU = {per_poll:.2?} per poll (timer wake-up included) = {:.5} % of \
         one core at a 5 s interval",
        per_poll.as_secs_f64() / POLL.as_secs_f64() * 100.0
    );
    runtime.block_on(handle.shutdown()).expect("collector");
}

/// A real plugin manager with [`PLUGINS`] in-process plugins running (on its own runtime).
fn manager_with_plugins() -> (tokio::runtime::Runtime, PluginManager) {
    struct Quiet;
    #[async_trait]
    impl InProcessPlugin for Quiet {}
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let manager = runtime.block_on(async {
        let plugins = InProcessRuntime::new();
        for i in 0..PLUGINS {
            plugins.register(&format!("plugin-{i:02}"), "1.2.3", || Box::new(Quiet));
        }
        let manager = PluginManager::builder(Arc::new(MemoryBus::new()), Arc::new(plugins)).build();
        for i in 0..PLUGINS {
            let name = format!("plugin-{i:02}");
            let manifest = Manifest::in_process(name.clone(), "1.2.3", [format!("cmd{i}")]);
            manager.add(manifest).await.expect("add plugin");
            manager.wait_running(&name, Duration::from_secs(10)).await.expect("running");
        }
        manager
    });
    (runtime, manager)
}

fn collector(c: &mut Criterion) {
    memory_one_hour_ten_plugins();
    real_time_cpu();
    let Filled { runtime, handle } = filled_collector();
    let reader = handle.reader();

    let mut group = c.benchmark_group("collector");
    group.bench_function("poll_50_plugins", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let reader = reader.clone();
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let next = reader.poll_count() + 1;
                    reader.polled(next).await;
                }
                start.elapsed()
            }
        });
    });
    let plain = Fifty::new(PLUGINS, None);
    group.bench_function("source_list_50", |b| {
        b.to_async(&runtime).iter(|| plain.list());
    });
    let (manager_runtime, manager) = manager_with_plugins();
    group.bench_function("manager_snapshot_50", |b| b.iter(|| manager.snapshot()));
    manager_runtime.block_on(manager.shutdown());
    let sink = MetricsCollector::new(CollectorOptions::default()).sink();
    group.bench_function("sink_event_processed", |b| {
        b.iter(|| sink.event_processed("plugin-07", Duration::from_micros(1234), true));
    });
    group.finish();
    println!("memory after the poll bench, {PLUGINS} plugins: {}", mb(reader.memory_bytes()));

    // Queries count back from the collector's paused clock: run them inside its runtime.
    let context = runtime.enter();
    let mut group = c.benchmark_group("aggregate");
    for (name, window) in [
        ("1h", Duration::from_secs(3600)),
        ("24h", Duration::from_secs(24 * 3600)),
        ("7d", Duration::from_secs(7 * 24 * 3600)),
    ] {
        let aggregate = reader.aggregate("plugin-25", Series::Cpu, window).expect("aggregate");
        println!("aggregate {name} of plugin-25 cpu: {aggregate:?}");
        group.bench_function(name, |b| {
            b.iter(|| reader.aggregate("plugin-25", Series::Cpu, window));
        });
    }
    group.finish();
    drop(context);
    runtime.block_on(handle.shutdown()).expect("collector");
}

fn prometheus(c: &mut Criterion) {
    let metrics = PrometheusMetrics::new(PrometheusOptions::default());
    let kinds = ["command", "chat", "pm", "user_join", "user_leave", "media_change"];
    let polls = AtomicU64::new(1000);
    let statuses = move || {
        let n = polls.fetch_add(1, Ordering::Relaxed);
        (0..PLUGINS).map(|i| status(i, n)).collect::<Vec<_>>()
    };
    for i in 0..PLUGINS {
        let plugin = format!("plugin-{i:02}");
        for e in 0..200_u64 {
            metrics.event_received(&plugin, kinds[e as usize % kinds.len()]);
            metrics.event_processed(&plugin, Duration::from_micros(300 + e * 97), e % 50 != 0);
        }
        metrics.plugin_crashed(&plugin, "exit 1");
        metrics.plugin_restarted(&plugin);
        metrics.plugin_reloaded(&plugin, ReloadOutcome::Success, Duration::from_millis(800));
        let mut labels = BTreeMap::new();
        labels.insert("room".to_owned(), "lobby".to_owned());
        metrics.plugin_metric(&plugin, "jokes_told", "counter", 3.0, &labels);
        metrics.plugin_metric(&plugin, "queue_depth", "gauge", 7.0, &labels);
    }
    for (command, user) in [("reload", "alice"), ("status", "bob"), ("restart", "alice")] {
        metrics.admin_command(command, user);
    }
    metrics.set_plugin_source(statuses);
    metrics.set_node_stats(|| NodeStats {
        bus: Some(Default::default()),
        router: Some(Default::default()),
        connector: Some(ConnectorStats {
            connected: Some(true),
            reconnects: Some(2),
            chat_in: Some(10_000),
            chat_out: Some(4_000),
            cooldowns: Some(3),
            outbox_dropped: Some(0),
            outbox_queued: Some(0),
        }),
        writer: Some(Default::default()),
        kv: Some(Default::default()),
    });
    let body = metrics.render();
    let series = body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
    println!("exposition, {PLUGINS} plugins: {} bytes, {series} series lines", body.len());
    let mut group = c.benchmark_group("prometheus");
    group.bench_function("render_50_plugins", |b| b.iter(|| metrics.render()));
    group.finish();
}

criterion_group!(benches, collector, prometheus);
criterion_main!(benches);
