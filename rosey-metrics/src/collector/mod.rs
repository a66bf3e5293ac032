//! [`MetricsCollector`]: polls the plugin manager and keeps each plugin's history in memory, with
//! aggregates over any window.
//!
//! Every `poll_interval` the collector asks its [`PluginControl`] source for every plugin's status
//! and appends one [`Sample`] per plugin. It keeps, per plugin name:
//!
//! - the **raw tier**: a ring of the last `history_duration / poll_interval` samples (720 at the
//!   defaults, 112 bytes each: ~80 KB per plugin);
//! - the **minute tier**: `minute_tier` (24 h) of 1-minute buckets, 1440 at the defaults;
//! - the **quarter tier**: `quarter_tier` (7 d) of 15-minute buckets, 672 at the defaults.
//!
//! A bucket keeps avg / min / max / count of every [`Series`] in `f32` (128 bytes), so the tiers
//! of one plugin take ~270 KB, everything of one plugin ~350 KB, and 50 plugins ~17.6 MB at the
//! defaults (1 h of raw samples for 10 plugins: ~0.8 MB). Every ring is allocated once at its full
//! size (the raw ring at the first sample, a tier's ring when its first bucket closes) and never
//! grows; [`MetricsHistory::memory_bytes`] measures it. Each plugin's response-time histogram adds
//! ~13 KB.
//!
//! History is keyed by plugin name, so it follows a plugin across reloads and restarts; each sample
//! records the version serving. A plugin that disappears keeps its history until it ages out of
//! every tier. With [`storage`](MetricsCollector::storage) the tiers are saved periodically and at
//! stop, and loaded at start, so trends survive a restart of the bot.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use rosey_core::bus::MemoryBus;
//! use rosey_core::plugin::{InProcessRuntime, PluginManager};
//! use rosey_metrics::collector::{CollectorOptions, MetricsCollector, Series};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rosey_metrics::collector::CollectorError> {
//! let collector = MetricsCollector::new(CollectorOptions::default());
//! // The manager reports response times to the collector's sink…
//! let manager = PluginManager::builder(Arc::new(MemoryBus::new()), Arc::new(InProcessRuntime::new()))
//!     .metrics_sink(Arc::new(collector.sink()))
//!     .build();
//! // …and the collector polls the manager.
//! let handle = collector.start(Arc::new(manager)).await;
//! let metrics = handle.reader(); // for the dashboard
//! metrics.polled(1).await;
//! for plugin in metrics.plugins() {
//!     let _cpu_1h = metrics.aggregate(&plugin, Series::Cpu, Duration::from_secs(3600));
//! }
//! handle.shutdown().await
//! # }
//! ```

mod history;
mod persist;
mod reader;
mod series;
mod sink;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rosey_core::event::EpochMillis;
use rosey_core::plugin::PluginControl;
use rosey_core::service::{ServiceHandle, Stopper, TaskFailed};
use rosey_core::storage::Storage;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use reader::MetricsHistory;
pub use series::{Aggregate, Point, Sample, Series, Stat};
pub use sink::CollectorSink;

use reader::Shared;

/// The longest a save or load of the history may take before it is given up (and logged).
const STORAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the collector samples and how long it keeps what. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorOptions {
    /// Time between polls (`metrics.poll_interval`, default 5 s; at least 1 ms).
    pub poll_interval: Duration,
    /// How long raw samples are kept (`metrics.history_duration`, default 3600 s).
    pub history_duration: Duration,
    /// How long the 1-minute buckets are kept (default 24 h).
    pub minute_tier: Duration,
    /// How long the 15-minute buckets are kept (default 7 days).
    pub quarter_tier: Duration,
}

impl Default for CollectorOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(5),
            history_duration: Duration::from_secs(3600),
            minute_tier: Duration::from_secs(24 * 3600),
            quarter_tier: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Why the collector ended other than by being stopped.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The collector's task panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// The metrics collector, before it starts: see the [module docs](self).
pub struct MetricsCollector {
    shared: Arc<Shared>,
    storage: Option<(Arc<dyn Storage>, Duration)>,
}

impl std::fmt::Debug for MetricsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsCollector")
            .field("options", &self.shared.options)
            .field("storage", &self.storage.as_ref().map(|(s, every)| (s.backend(), every)))
            .finish_non_exhaustive()
    }
}

impl MetricsCollector {
    /// A collector with `options`. The source it polls is given at [`start`](Self::start), so that
    /// its [`sink`](Self::sink) can be handed to the plugin manager's builder first. Its clock starts
    /// now: wall-clock time plus `tokio::time` elapsed since.
    pub fn new(mut options: CollectorOptions) -> Self {
        options.poll_interval = options.poll_interval.max(Duration::from_millis(1));
        Self { shared: Arc::new(Shared::new(options)), storage: None }
    }

    /// Starts the collector's clock at `epoch_millis` instead of the wall-clock time now (then
    /// `tokio::time` elapsed since is added): for tests and replays that need tier buckets at known
    /// boundaries.
    pub fn clock_start(self, epoch_millis: EpochMillis) -> Self {
        self.shared.set_clock_start(epoch_millis);
        self
    }

    /// Saves the tiers to `storage` every `save_every` (at least 1 s) and when stopped, and loads
    /// them at [`start`](Self::start). Storage errors are logged as warnings; the collector goes on
    /// in memory.
    pub fn storage(mut self, storage: Arc<dyn Storage>, save_every: Duration) -> Self {
        self.storage = Some((storage, save_every.max(Duration::from_secs(1))));
        self
    }

    /// The sink that records response times for the samples' `latency_p95_seconds`; valid before
    /// and after [`start`](Self::start).
    pub fn sink(&self) -> CollectorSink {
        CollectorSink { shared: Arc::clone(&self.shared) }
    }

    /// The query side, valid before and after [`start`](Self::start).
    pub fn reader(&self) -> MetricsHistory {
        MetricsHistory { shared: Arc::clone(&self.shared) }
    }

    /// Loads the saved history (when storage is set), then starts polling `source` (the
    /// [`PluginManager`](rosey_core::plugin::PluginManager), through [`PluginControl::list`]; the
    /// first poll at once) and returns.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub async fn start(self, source: Arc<dyn PluginControl>) -> CollectorHandle {
        let mut saved = HashSet::new();
        if let Some((storage, _)) = &self.storage {
            match tokio::time::timeout(STORAGE_TIMEOUT, persist::load(&self.shared, storage)).await
            {
                Ok(loaded) => saved = loaded,
                Err(_) => tracing::warn!(
                    message = "loading the metrics history took too long; starting without it",
                    timeout = ?STORAGE_TIMEOUT
                ),
            }
        }
        let reader = self.reader();
        let service = ServiceHandle::spawn("metrics", move |stop| run(self, source, saved, stop));
        CollectorHandle { service, reader }
    }
}

async fn run(
    collector: MetricsCollector,
    source: Arc<dyn PluginControl>,
    mut saved: HashSet<String>,
    stop: CancellationToken,
) -> Result<(), CollectorError> {
    let MetricsCollector { shared, storage } = collector;
    let mut poll = tokio::time::interval(shared.options.poll_interval);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let save_every = storage.as_ref().map_or(Duration::from_secs(3600), |(_, every)| *every);
    let mut save = tokio::time::interval_at(Instant::now() + save_every, save_every);
    save.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            _ = poll.tick() => {
                let statuses = tokio::select! {
                    statuses = source.list() => statuses,
                    () = stop.cancelled() => break,
                };
                shared.record(&statuses);
            }
            _ = save.tick(), if storage.is_some() => {
                if let Some((storage, _)) = &storage {
                    saved = save_with_timeout(&shared, storage, saved).await;
                }
            }
        }
    }
    if let Some((storage, _)) = &storage {
        save_with_timeout(&shared, storage, saved).await;
    }
    Ok(())
}

async fn save_with_timeout(
    shared: &Shared,
    storage: &Arc<dyn Storage>,
    previously: HashSet<String>,
) -> HashSet<String> {
    match tokio::time::timeout(STORAGE_TIMEOUT, persist::save(shared, storage, &previously)).await {
        Ok(saved) => saved,
        Err(_) => {
            tracing::warn!(message = "saving the metrics history took too long", timeout = ?STORAGE_TIMEOUT);
            previously
        }
    }
}

/// The running collector: stop it with [`shutdown`](Self::shutdown) (which saves the history when
/// storage is set); query it through [`reader`](Self::reader).
#[derive(Debug)]
#[must_use = "dropping the handle stops the collector"]
pub struct CollectorHandle {
    service: ServiceHandle<CollectorError>,
    reader: MetricsHistory,
}

impl CollectorHandle {
    /// The query side (a cheap clone).
    pub fn reader(&self) -> MetricsHistory {
        self.reader.clone()
    }

    /// Asks the collector to stop; returns at once.
    pub fn stop(&self) {
        self.service.stop();
    }

    /// Something that can stop the collector while this handle is being waited on.
    pub fn stopper(&self) -> Stopper {
        self.service.stopper()
    }

    /// Waits until the collector has ended (after its final save).
    pub async fn wait(self) -> Result<(), CollectorError> {
        self.service.wait().await
    }

    /// Stops the collector and waits until it has ended (after its final save).
    pub async fn shutdown(self) -> Result<(), CollectorError> {
        self.service.shutdown().await
    }
}
