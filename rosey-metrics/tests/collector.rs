//! The metrics collector against a scripted source (exact values) and a real plugin manager.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rosey_core::bus::{EventBus, EventBusExt, MemoryBus};
use rosey_core::event::{CommandEvent, EpochMillis};
use rosey_core::metrics::MetricsSink;
use rosey_core::plugin::{
    ControlError, EventCounts, InProcessPlugin, InProcessRuntime, LatencySummary, Manifest,
    PluginContext, PluginControl, PluginManager, PluginReply, PluginState, PluginStatus,
    ReloadReport,
};
use rosey_core::storage::{MemoryStorage, Storage};
use rosey_metrics::collector::{CollectorOptions, MetricsCollector, Series};

/// A 15-minute boundary, so tier buckets start at known times.
const T0: EpochMillis = 1_700_000_000_000 / 900_000 * 900_000;

/// A plugin source that answers each poll with the next scripted snapshot (the last one repeats).
#[derive(Default)]
struct Script(Mutex<VecDeque<Vec<PluginStatus>>>);

impl Script {
    fn new(polls: impl IntoIterator<Item = Vec<PluginStatus>>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(polls.into_iter().collect())))
    }
}

#[async_trait]
impl PluginControl for Script {
    async fn list(&self) -> Vec<PluginStatus> {
        let mut polls = self.0.lock();
        if polls.len() > 1 {
            polls.pop_front().unwrap()
        } else {
            polls.front().cloned().unwrap_or_default()
        }
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

fn status(name: &str, version: &str, cpu: f64, events: u64) -> PluginStatus {
    PluginStatus {
        name: name.to_owned(),
        version: version.to_owned(),
        state: PluginState::Running,
        pid: Some(42),
        loaded_at: Some(T0),
        uptime: Duration::from_secs(10),
        crash_count: 0,
        restart_count: 0,
        cpu_percent: Some(cpu),
        memory_mb: Some(cpu * 10.0),
        memory_cap: None,
        memory_limit_mb: None,
        cpu_limit_percent: None,
        events: EventCounts { completed: events, ..EventCounts::default() },
        latency: LatencySummary::default(),
        last_error: None,
    }
}

fn options(poll: u64, history: u64) -> CollectorOptions {
    CollectorOptions {
        poll_interval: Duration::from_secs(poll),
        history_duration: Duration::from_secs(history),
        ..CollectorOptions::default()
    }
}

/// A plugin source answering `cpu` = 1, 2, … `polls` for plugin `echo`.
fn counting(polls: u32) -> Arc<Script> {
    Script::new((1..=polls).map(|i| vec![status("echo", "1.0.0", f64::from(i), 0)]))
}

#[tokio::test(start_paused = true)]
async fn two_polls_of_a_real_manager_give_two_samples_with_events_and_latency() {
    struct Echo;
    #[async_trait]
    impl InProcessPlugin for Echo {
        async fn command(&mut self, _ctx: &PluginContext, command: &CommandEvent) -> PluginReply {
            Ok(vec![command.args.clone()])
        }
    }
    let collector = MetricsCollector::new(options(5, 3600));
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let runtime = InProcessRuntime::new();
    runtime.register("echo", "1.0.0", || Box::new(Echo));
    let manager = PluginManager::builder(bus.clone(), Arc::new(runtime))
        .metrics_sink(Arc::new(collector.sink()))
        .build();
    manager.add(Manifest::in_process("echo", "1.0.0", ["echo"])).await.unwrap();
    manager.wait_running("echo", Duration::from_secs(5)).await.unwrap();
    let manager = Arc::new(manager);
    let handle = collector.start(manager.clone()).await;
    let metrics = handle.reader();
    metrics.polled(1).await;

    let command = CommandEvent {
        channel: "lobby".to_owned(),
        user: "alice".to_owned(),
        rank: None,
        command: "echo".to_owned(),
        args: "hi".to_owned(),
        message: "!echo hi".to_owned(),
        time: 0,
        via: Default::default(),
    };
    bus.publish_json("rosey.command.echo", &command).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while manager.snapshot()[0].events.completed == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    metrics.polled(2).await;

    let samples = metrics.samples("echo", Duration::from_secs(3600));
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[1].time - samples[0].time, 5000, "one poll interval apart");
    assert_eq!((samples[0].event_count, samples[1].event_count), (0, 1));
    assert!((samples[1].events_per_second - 0.2).abs() < 1e-9, "1 event in 5 s");
    assert!(samples[1].latency_p95_seconds.is_some(), "the event's response time was recorded");
    assert_eq!(&*samples[1].version, "1.0.0");
    assert_eq!(samples[1].state, PluginState::Running);
    assert_eq!(metrics.plugins(), ["echo"]);
    handle.shutdown().await.unwrap();
    manager.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn aggregates_over_raw_samples_match_known_values_with_nearest_rank_p95() {
    let collector = MetricsCollector::new(options(5, 3600));
    let handle = collector.start(counting(20)).await;
    let metrics = handle.reader();
    metrics.polled(20).await;

    let hour = metrics.aggregate("echo", Series::Cpu, Duration::from_secs(3600)).unwrap();
    assert_eq!((hour.avg, hour.min, hour.max, hour.count), (10.5, 1.0, 20.0, 20));
    assert_eq!(hour.p95, 19.0, "rank ⌈0.95·20⌉ = 19");
    // The last minute holds the 12 samples 9..=20.
    let minute = metrics.aggregate("echo", Series::Cpu, Duration::from_secs(60)).unwrap();
    assert_eq!((minute.avg, minute.min, minute.max, minute.count), (14.5, 9.0, 20.0, 12));
    assert_eq!(minute.p95, 20.0, "rank ⌈0.95·12⌉ = 12");
    let memory = metrics.aggregate("echo", Series::Memory, Duration::from_secs(300)).unwrap();
    assert_eq!(memory.max, 200.0);
    assert_eq!(metrics.current("echo").unwrap().cpu_percent, Some(20.0));
    assert!(metrics.aggregate("echo", Series::LatencyP95, Duration::from_secs(60)).is_none());
    assert!(metrics.aggregate("nobody", Series::Cpu, Duration::from_secs(60)).is_none());
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_sink_gives_each_sample_the_p95_response_time_of_its_interval() {
    let collector = MetricsCollector::new(options(5, 3600));
    let sink = collector.sink();
    let handle = collector.start(counting(3)).await;
    let metrics = handle.reader();
    metrics.polled(1).await;
    for ms in 1..=100 {
        sink.event_processed("echo", Duration::from_millis(ms), true);
    }
    metrics.polled(2).await;
    metrics.polled(3).await;
    let samples = metrics.samples("echo", Duration::from_secs(3600));
    let p95 = samples[1].latency_p95_seconds.unwrap();
    assert!((p95 - 0.095).abs() < 0.095 * 0.01, "p95 of 1..=100 ms is 95 ms, got {p95}");
    assert_eq!(samples[2].latency_p95_seconds, None, "the histogram is reset at each poll");
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn samples_older_than_the_history_are_pruned_from_the_raw_tier_and_kept_in_the_minute_tier() {
    // One poll a minute for two hours and a bit; the raw tier keeps one hour.
    let collector = MetricsCollector::new(options(60, 3600)).clock_start(T0);
    let handle = collector.start(counting(200)).await;
    let metrics = handle.reader();
    metrics.polled(125).await;
    let now = metrics.now();
    assert_eq!(now, T0 + 124 * 60_000);

    let raw = metrics.samples("echo", Duration::from_secs(3 * 3600));
    assert_eq!(raw.len(), 60, "one hour of samples");
    assert!(raw.iter().all(|s| s.time > now - 3_600_000));
    let history = metrics.history("echo", Duration::from_secs(24 * 3600));
    assert_eq!(history.len(), 125, "one minute bucket per poll, the oldest included");
    assert_eq!(history[0].time, T0);
    assert_eq!(history[0].stat(Series::Cpu).unwrap().avg, 1.0);
    let day = metrics.aggregate("echo", Series::Cpu, Duration::from_secs(24 * 3600)).unwrap();
    assert_eq!((day.min, day.max, day.count), (1.0, 125.0, 125));
    assert!(metrics.memory_bytes() > 0);
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn history_follows_a_plugin_across_a_reload_and_records_each_version() {
    let polls = (1..=6).map(|i| {
        let version = if i <= 3 { "1.0.0" } else { "1.1.0" };
        vec![status("echo", version, 1.0, i * 10)]
    });
    let handle = MetricsCollector::new(options(5, 3600)).start(Script::new(polls)).await;
    let metrics = handle.reader();
    metrics.polled(6).await;
    let samples = metrics.samples("echo", Duration::from_secs(3600));
    let versions: Vec<&str> = samples.iter().map(|s| &*s.version).collect();
    assert_eq!(versions, ["1.0.0", "1.0.0", "1.0.0", "1.1.0", "1.1.0", "1.1.0"]);
    assert!(samples[1..].iter().all(|s| (s.events_per_second - 2.0).abs() < 1e-9));
    assert_eq!(metrics.plugins(), ["echo"]);
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_plugin_that_disappears_keeps_its_history_until_it_ages_out() {
    let mut polls: Vec<_> = (0..3).map(|_| vec![status("gone", "1", 5.0, 0)]).collect();
    polls.push(Vec::new());
    let options = CollectorOptions {
        poll_interval: Duration::from_secs(60),
        history_duration: Duration::from_secs(600),
        minute_tier: Duration::from_secs(1800),
        quarter_tier: Duration::from_secs(3600),
    };
    let handle = MetricsCollector::new(options).clock_start(T0).start(Script::new(polls)).await;
    let metrics = handle.reader();
    metrics.polled(10).await;
    assert_eq!(metrics.plugins(), ["gone"], "still within every tier");
    // Its 15-minute bucket [T0, T0 + 15 min) leaves the 1-hour quarter tier at T0 + 75 min.
    metrics.polled(75).await;
    assert_eq!(metrics.plugins(), ["gone"]);
    metrics.polled(76).await;
    assert!(metrics.plugins().is_empty(), "aged out of the quarter tier");
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn minute_and_quarter_buckets_keep_avg_min_max() {
    // Raw history of one minute, so a 10-minute window reads the minute tier.
    let options = CollectorOptions {
        poll_interval: Duration::from_secs(10),
        history_duration: Duration::from_secs(60),
        minute_tier: Duration::from_secs(300),
        quarter_tier: Duration::from_secs(7 * 24 * 3600),
    };
    let handle = MetricsCollector::new(options).clock_start(T0).start(counting(13)).await;
    let metrics = handle.reader();
    metrics.polled(13).await;

    let minutes = metrics.history("echo", Duration::from_secs(240));
    let cpu: Vec<_> =
        minutes.iter().map(|p| (p.time, p.samples, p.stat(Series::Cpu).unwrap())).collect();
    assert_eq!(cpu.len(), 3);
    assert_eq!((cpu[0].0, cpu[0].1), (T0, 6));
    assert_eq!((cpu[0].2.avg, cpu[0].2.min, cpu[0].2.max), (3.5, 1.0, 6.0));
    assert_eq!((cpu[1].0, cpu[1].1), (T0 + 60_000, 6));
    assert_eq!((cpu[1].2.avg, cpu[1].2.min, cpu[1].2.max), (9.5, 7.0, 12.0));
    assert_eq!((cpu[2].0, cpu[2].1, cpu[2].2.avg), (T0 + 120_000, 1, 13.0), "the open bucket");
    let window = metrics.aggregate("echo", Series::Cpu, Duration::from_secs(240)).unwrap();
    assert_eq!((window.avg, window.min, window.max, window.count), (7.0, 1.0, 13.0, 13));
    assert_eq!(window.p95, 13.0, "nearest rank over the bucket averages 3.5, 9.5, 13");

    // Beyond the minute tier: one 15-minute bucket.
    let quarter = metrics.history("echo", Duration::from_secs(3600));
    assert_eq!(quarter.len(), 1);
    let stat = quarter[0].stat(Series::Cpu).unwrap();
    assert_eq!(
        (quarter[0].time, stat.avg, stat.min, stat.max, stat.count),
        (T0, 7.0, 1.0, 13.0, 13)
    );
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn tiers_saved_to_storage_are_loaded_by_the_next_collector() {
    let storage = Arc::new(MemoryStorage::new());
    let options = options(10, 60);
    let collector = MetricsCollector::new(options.clone())
        .clock_start(T0)
        .storage(storage.clone(), Duration::from_secs(60));
    let handle = collector.start(counting(25)).await;
    let metrics = handle.reader();
    metrics.polled(25).await;
    let before = metrics.history("echo", Duration::from_secs(3600 * 2));
    handle.shutdown().await.unwrap();
    let saved = storage.kv_get("rosey.metrics", "history:echo").await.unwrap().unwrap();
    assert!(saved.value.starts_with("{\"v\":1,"), "{}", saved.value);

    // A new collector over an empty source, a little later.
    let next = MetricsCollector::new(options)
        .clock_start(T0 + 5 * 60_000)
        .storage(storage.clone(), Duration::from_secs(60));
    let handle = next.start(Script::new([Vec::new()])).await;
    let metrics = handle.reader();
    assert_eq!(metrics.plugins(), ["echo"]);
    let after = metrics.history("echo", Duration::from_secs(3600 * 2));
    // The closed buckets come back; the one being filled at the stop is not saved.
    assert_eq!(after.len(), 4);
    assert_eq!(after, before[..4]);
    let minutes = metrics.aggregate("echo", Series::Cpu, Duration::from_secs(3600 * 2)).unwrap();
    assert_eq!((minutes.min, minutes.max, minutes.count), (1.0, 24.0, 24));
    handle.shutdown().await.unwrap();
}
