//! The [`RecordWriter`]: audit and lifecycle records, written in order, riding out database outages.
//!
//! Callers push records without ever blocking ([`WriterHandle::record`], or the [`StorageSink`] the
//! plugin manager reports lifecycle events to). One task writes them in push order, in batches of one
//! [`Storage::write`] each. While the database is unreachable the batch stays at the head of a bounded
//! queue and is retried with backoff: nothing is lost or duplicated unless the queue overflows, in
//! which case the oldest records are dropped and counted. A record the database refuses is dropped
//! alone (logged, counted), so it never blocks the others. The same task applies the retention period.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    AuditRecord, PluginEventKind, PluginEventRecord, Record, Storage, StorageError, now_micros,
};
use crate::backoff::BackoffPolicy;
use crate::event::LifecycleEvent;
use crate::metrics::MetricsSink;
use crate::service::{ServiceHandle, TaskFailed};
use crate::subject::LifecycleKind;
use queue::Shared;

/// How often, at most, a repeated warning (outage, dropped records) is logged.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The longest wait before the first retention pass.
const FIRST_PRUNE_AFTER: Duration = Duration::from_secs(5);

/// How the [`RecordWriter`] behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterOptions {
    /// The node name stamped on lifecycle records (default `rosey`).
    pub node: String,
    /// Records held in memory at most, written or waiting (default 10,000); beyond, the oldest waiting
    /// record is dropped.
    pub capacity: usize,
    /// Records per [`Storage::write`] at most (default 256).
    pub batch_size: usize,
    /// Records older than this are deleted in the background (default 30 days); `None` keeps them
    /// forever.
    pub retention: Option<Duration>,
    /// How often retention runs (default 1 h; the first pass comes a few seconds after start).
    pub retention_interval: Duration,
    /// First delay before retrying a write while the database is unreachable (default 100 ms).
    pub retry_min: Duration,
    /// Longest delay between retries (default 5 s).
    pub retry_max: Duration,
    /// How long stopping may spend writing what is still queued (default 5 s).
    pub stop_timeout: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            node: "rosey".to_owned(),
            capacity: 10_000,
            batch_size: 256,
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
            retention_interval: Duration::from_secs(3600),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// The writer's counters, as [`WriterHandle::stats`] reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records written since start.
    pub written: u64,
    /// Records waiting in memory (including a batch being written).
    pub queued: usize,
    /// Records dropped because the queue was full (the oldest go first).
    pub dropped: u64,
    /// Records the database refused (each logged at ERROR).
    pub rejected: u64,
    /// Writes that failed (an outage counts one per attempt).
    pub failures: u64,
    /// Whether the last write succeeded (false during an outage).
    pub available: bool,
}

/// Why the writer's task ended badly.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The writer's task panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// Writes audit and lifecycle records to a [`Storage`] in order; see the [module docs](self).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use rosey_core::storage::{MemoryStorage, RecordWriter, WriterOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rosey_core::storage::WriterError> {
/// let writer = RecordWriter::new(Arc::new(MemoryStorage::new()), WriterOptions::default()).start();
/// let sink = writer.sink(); // give this to the PluginManager (e.g. in a FanoutSink)
/// # drop(sink);
/// assert!(writer.flush(Duration::from_secs(1)).await);
/// writer.shutdown().await
/// # }
/// ```
pub struct RecordWriter {
    storage: Arc<dyn Storage>,
    options: WriterOptions,
}

impl std::fmt::Debug for RecordWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordWriter")
            .field("backend", &self.storage.backend())
            .field("options", &self.options)
            .finish()
    }
}

impl RecordWriter {
    /// A writer to `storage`.
    pub fn new(storage: Arc<dyn Storage>, options: WriterOptions) -> Self {
        Self { storage, options }
    }

    /// Spawns the writing task and returns its handle.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`tokio::spawn`] does.
    pub fn start(self) -> WriterHandle {
        let shared = Arc::new(Shared::new(self.options.capacity));
        let node: Arc<str> = Arc::from(self.options.node.as_str());
        let storage = self.storage.clone();
        let task = Task::new(shared.clone(), self.storage, self.options);
        let service = ServiceHandle::spawn("record writer", move |stop| task.run(stop));
        WriterHandle { sink: StorageSink { shared, node }, storage, service }
    }
}

/// The running [`RecordWriter`]. Dropping it asks the writer to stop (it still writes what is queued
/// within its `stop_timeout`).
#[must_use = "dropping the handle stops the writer"]
pub struct WriterHandle {
    sink: StorageSink,
    storage: Arc<dyn Storage>,
    service: ServiceHandle<WriterError>,
}

impl std::fmt::Debug for WriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHandle").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl WriterHandle {
    /// Queues `record`. Never blocks or awaits; its time may be moved forward by a microsecond or
    /// so, to keep this writer's times strictly increasing.
    pub fn record(&self, record: Record) {
        self.sink.record(record);
    }

    /// Queues an audit record.
    pub fn audit(&self, record: AuditRecord) {
        self.sink.audit(record);
    }

    /// A [`MetricsSink`] turning lifecycle events into `plugin_events` rows through this writer.
    /// Cheap to clone; also queues records itself, for parts that only hold the sink.
    pub fn sink(&self) -> StorageSink {
        self.sink.clone()
    }

    /// The current counters.
    pub fn stats(&self) -> WriterStats {
        self.sink.stats()
    }

    /// Waits until every record queued before the call is settled — written, or refused or
    /// dropped — and says whether that happened within `timeout`.
    pub async fn flush(&self, timeout: Duration) -> bool {
        self.sink.flush(timeout).await
    }

    /// The storage written to (for queries).
    pub fn storage(&self) -> Arc<dyn Storage> {
        self.storage.clone()
    }

    /// Asks the writer to stop; returns at once.
    pub fn stop(&self) {
        self.service.stop();
    }

    /// Waits until the writer has ended (after a [`stop`](Self::stop)).
    pub async fn wait(self) -> Result<(), WriterError> {
        self.service.wait().await
    }

    /// Stops the writer, which writes what is queued within `stop_timeout`, and waits until it has.
    pub async fn shutdown(self) -> Result<(), WriterError> {
        self.service.shutdown().await
    }
}

/// The [`MetricsSink`] of a [`RecordWriter`]: each [`plugin_lifecycle`](MetricsSink::plugin_lifecycle)
/// event becomes a [`PluginEventRecord`] (`reloaded` is stored as `reload_ok`). It also queues records
/// directly ([`record`](Self::record), [`audit`](Self::audit)), never blocking. Cheap to clone.
#[derive(Clone)]
pub struct StorageSink {
    shared: Arc<Shared>,
    node: Arc<str>,
}

impl std::fmt::Debug for StorageSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSink").field("node", &self.node).finish_non_exhaustive()
    }
}

impl StorageSink {
    /// Queues `record` (see [`WriterHandle::record`]).
    pub fn record(&self, record: Record) {
        self.shared.push(record);
    }

    /// Queues an audit record.
    pub fn audit(&self, record: AuditRecord) {
        self.shared.push(Record::Audit(record));
    }

    /// The writer's counters.
    pub fn stats(&self) -> WriterStats {
        self.shared.stats()
    }

    /// See [`WriterHandle::flush`].
    pub async fn flush(&self, timeout: Duration) -> bool {
        let target = self.shared.queue.lock().last_seq;
        let mut settled = self.shared.settled.subscribe();
        matches!(tokio::time::timeout(timeout, settled.wait_for(|s| *s >= target)).await, Ok(Ok(_)))
    }
}

fn event_kind(kind: LifecycleKind) -> PluginEventKind {
    match kind {
        LifecycleKind::Started => PluginEventKind::Started,
        LifecycleKind::Stopped => PluginEventKind::Stopped,
        LifecycleKind::Crashed => PluginEventKind::Crashed,
        LifecycleKind::Restarted => PluginEventKind::Restarted,
        LifecycleKind::Failed => PluginEventKind::Failed,
        LifecycleKind::Reloaded => PluginEventKind::ReloadOk,
        LifecycleKind::ReloadFailed => PluginEventKind::ReloadFailed,
    }
}

impl MetricsSink for StorageSink {
    fn plugin_lifecycle(&self, kind: LifecycleKind, event: &LifecycleEvent) {
        self.record(Record::PluginEvent(PluginEventRecord {
            time_us: event.time.saturating_mul(1000),
            node: self.node.to_string(),
            plugin: event.name.clone(),
            kind: event_kind(kind),
            version: event.version.clone(),
            reason: event.reason.clone(),
            duration_seconds: event.duration_seconds,
        }));
    }
}

/// An outage under way: since when, and when it was last reported.
struct Outage {
    since: Instant,
    warned: Instant,
}

/// How one write attempt ended, for the loop.
enum Outcome {
    /// Go on with the next batch.
    Progress,
    /// The database is unreachable: wait this long, then retry.
    RetryAfter(Duration),
}

/// The writing task's own state.
struct Task {
    shared: Arc<Shared>,
    storage: Arc<dyn Storage>,
    options: WriterOptions,
    backoff: BackoffPolicy,
    attempt: u32,
    outage: Option<Outage>,
}

type PendingWrite =
    std::pin::Pin<Box<dyn Future<Output = (Vec<Record>, Result<(), StorageError>)> + Send>>;

impl Task {
    fn new(shared: Arc<Shared>, storage: Arc<dyn Storage>, options: WriterOptions) -> Self {
        let backoff = BackoffPolicy {
            first: options.retry_min,
            base: options.retry_min.saturating_mul(2),
            factor: 2,
            max: options.retry_max.max(options.retry_min),
            jitter: 0.0,
        };
        Self { shared, storage, options, backoff, attempt: 0, outage: None }
    }

    fn begin_write(&self) -> Option<PendingWrite> {
        let batch = self.shared.begin_batch(self.options.batch_size.max(1));
        if batch.is_empty() {
            return None;
        }
        let storage = self.storage.clone();
        Some(Box::pin(async move {
            let result = storage.write(&batch).await;
            (batch, result)
        }))
    }

    async fn run(mut self, stop: CancellationToken) -> Result<(), WriterError> {
        let interval = self.options.retention_interval.max(Duration::from_millis(1));
        let mut retention =
            tokio::time::interval_at(Instant::now() + interval.min(FIRST_PRUNE_AFTER), interval);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending = None;
        loop {
            let Some(mut write) = self.begin_write() else {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break,
                    () = self.shared.wake.notified() => {}
                    _ = retention.tick() => {
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = self.prune() => {}
                        }
                    }
                }
                continue;
            };
            // A write under way is not abandoned on stop (it might commit and then be written again):
            // stopping finishes it.
            let (batch, result) = tokio::select! {
                out = &mut write => out,
                () = stop.cancelled() => {
                    pending = Some(write);
                    break;
                }
            };
            if let Outcome::RetryAfter(delay) = self.settle(batch, result).await {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
        self.drain(pending).await;
        Ok(())
    }

    /// On stop: finishes the write under way and writes what is queued, within `stop_timeout`.
    async fn drain(&mut self, pending: Option<PendingWrite>) {
        let deadline = self.options.stop_timeout;
        let _ = tokio::time::timeout(deadline, async {
            let mut write = pending.or_else(|| self.begin_write());
            while let Some(current) = write {
                let (batch, result) = current.await;
                if let Outcome::RetryAfter(delay) = self.settle(batch, result).await {
                    tokio::time::sleep(delay).await;
                }
                write = self.begin_write();
            }
        })
        .await;
        let left = self.shared.stats().queued;
        if left > 0 {
            tracing::error!(
                message = "the record writer stopped with records not written",
                records_lost = left,
                stop_timeout_seconds = deadline.as_secs_f64(),
            );
        }
    }

    /// Accounts for a finished batch write; a refused batch is retried record by record.
    async fn settle(&mut self, batch: Vec<Record>, result: Result<(), StorageError>) -> Outcome {
        match result {
            Ok(()) => {
                self.succeeded(batch.len());
                Outcome::Progress
            }
            Err(error) if error.is_unavailable() => self.unavailable(&error),
            Err(error) if batch.len() == 1 => {
                self.shared.count_failure();
                self.refused(&batch[0], &error);
                Outcome::Progress
            }
            Err(_) => {
                self.shared.count_failure();
                // Find the refused record(s); the others are written in order, one by one.
                for record in &batch {
                    match self.storage.write(std::slice::from_ref(record)).await {
                        Ok(()) => self.succeeded(1),
                        Err(error) if error.is_unavailable() => return self.unavailable(&error),
                        Err(error) => self.refused(record, &error),
                    }
                }
                Outcome::Progress
            }
        }
    }

    fn succeeded(&mut self, count: usize) {
        self.shared.settle_head(count, false);
        self.attempt = 0;
        if let Some(outage) = self.outage.take() {
            tracing::info!(
                message = "storage is available again; writing the waiting records",
                outage_seconds = outage.since.elapsed().as_secs_f64(),
                written = count,
                records_waiting = self.shared.stats().queued,
            );
        }
    }

    fn refused(&mut self, record: &Record, error: &StorageError) {
        self.shared.settle_head(1, true);
        let (table, time_us) = match record {
            Record::Audit(r) => ("audit_log", r.time_us),
            Record::PluginEvent(r) => ("plugin_events", r.time_us),
        };
        tracing::error!(message = "the database refused a record; dropping it", table, time_us, %error);
    }

    fn unavailable(&mut self, error: &StorageError) -> Outcome {
        let waiting = self.shared.write_failed(true);
        let now = Instant::now();
        match &mut self.outage {
            None => {
                self.outage = Some(Outage { since: now, warned: now });
                tracing::warn!(
                    message = "storage unavailable; records wait in memory and are retried",
                    records_waiting = waiting,
                    %error,
                );
            }
            Some(outage) if now.duration_since(outage.warned) >= WARN_EVERY => {
                outage.warned = now;
                tracing::warn!(
                    message = "storage still unavailable",
                    records_waiting = waiting,
                    outage_seconds = now.duration_since(outage.since).as_secs_f64(),
                    %error,
                );
            }
            Some(_) => {}
        }
        let delay = self.backoff.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        Outcome::RetryAfter(delay)
    }

    async fn prune(&self) {
        let Some(retention) = self.options.retention else { return };
        let age = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
        match self.storage.prune(now_micros().saturating_sub(age)).await {
            Ok(pruned) if pruned.audit + pruned.plugin_events > 0 => tracing::info!(
                message = "deleted records older than the retention period",
                audit = pruned.audit,
                plugin_events = pruned.plugin_events,
                retention_days = retention.as_secs_f64() / 86_400.0,
            ),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(message = "applying the retention period failed; will retry", %error);
            }
        }
    }
}

mod queue;
#[cfg(test)]
mod tests;
