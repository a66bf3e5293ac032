#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;

use super::*;
use crate::storage::{
    AuditQuery, EpochMicros, KvEntry, MemoryStorage, PluginEventQuery, Pruned, StorageError,
};

/// A [`MemoryStorage`] that can be switched to "unreachable", and refuses audit records whose actor
/// is `refused`, as a database refuses a row it cannot store.
#[derive(Default)]
struct Flaky {
    inner: MemoryStorage,
    down: AtomicBool,
    writes: AtomicU64,
}

impl Flaky {
    fn check(&self) -> Result<(), StorageError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StorageError::Unavailable("connection refused".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for Flaky {
    fn backend(&self) -> &'static str {
        "flaky"
    }
    async fn ping(&self) -> Result<(), StorageError> {
        self.check()
    }
    async fn write(&self, records: &[Record]) -> Result<(), StorageError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.check()?;
        if records.iter().any(|r| matches!(r, Record::Audit(a) if a.actor == "refused")) {
            return Err(StorageError::Database("value too long for column".into()));
        }
        self.inner.write(records).await
    }
    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StorageError> {
        self.check()?;
        self.inner.audit_log(query).await
    }
    async fn plugin_events(
        &self,
        query: &PluginEventQuery,
    ) -> Result<Vec<PluginEventRecord>, StorageError> {
        self.check()?;
        self.inner.plugin_events(query).await
    }
    async fn prune(&self, before_us: EpochMicros) -> Result<Pruned, StorageError> {
        self.check()?;
        self.inner.prune(before_us).await
    }
    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<KvEntry>, StorageError> {
        self.inner.kv_get(plugin, key).await
    }
    async fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: &str,
        max_keys: u64,
        now_us: EpochMicros,
    ) -> Result<(), StorageError> {
        self.inner.kv_set(plugin, key, value, max_keys, now_us).await
    }
    async fn kv_delete(&self, plugin: &str, key: &str) -> Result<bool, StorageError> {
        self.inner.kv_delete(plugin, key).await
    }
    async fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StorageError> {
        self.inner.kv_list(plugin, prefix, after, limit).await
    }
    async fn kv_count(&self, plugin: &str) -> Result<u64, StorageError> {
        self.inner.kv_count(plugin).await
    }
}

fn audit(actor: &str, arguments: &str, time_us: EpochMicros) -> AuditRecord {
    AuditRecord {
        time_us,
        node: "n1".to_owned(),
        actor: actor.to_owned(),
        actor_rank: Some(3.0),
        command: "reload".to_owned(),
        arguments: arguments.to_owned(),
        outcome: "ok".to_owned(),
        detail: None,
    }
}

fn fast() -> WriterOptions {
    WriterOptions {
        node: "n1".to_owned(),
        retry_min: Duration::from_millis(5),
        retry_max: Duration::from_millis(20),
        stop_timeout: Duration::from_secs(2),
        ..WriterOptions::default()
    }
}

/// The arguments of every audit row, oldest first.
async fn written(storage: &dyn Storage) -> Vec<String> {
    let rows = storage.audit_log(&AuditQuery { limit: 1000, ..AuditQuery::default() }).await;
    rows.unwrap().into_iter().rev().map(|r| r.arguments).collect()
}

fn numbered(count: usize) -> Vec<String> {
    (0..count).map(|i| i.to_string()).collect()
}

async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn records_are_written_in_push_order_with_strictly_increasing_times() {
    let storage = Arc::new(MemoryStorage::new());
    let writer =
        RecordWriter::new(storage.clone(), WriterOptions { batch_size: 7, ..fast() }).start();
    for i in 0..300 {
        // Everyone claims the same instant; some even claim an earlier one.
        writer.audit(audit("alice", &i.to_string(), if i % 10 == 0 { 50 } else { 100 }));
    }
    assert!(writer.flush(Duration::from_secs(2)).await);
    assert_eq!(written(&*storage).await, numbered(300));
    let rows = storage.audit_log(&AuditQuery { limit: 1000, ..AuditQuery::default() }).await;
    let times: Vec<EpochMicros> = rows.unwrap().into_iter().rev().map(|r| r.time_us).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "strictly increasing: {times:?}");
    assert_eq!(times[..2], [50, 100]);
    assert_eq!(
        writer.stats(),
        WriterStats { written: 300, available: true, ..WriterStats::default() }
    );
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_and_counts_them() {
    let storage = Arc::new(MemoryStorage::new());
    let writer =
        RecordWriter::new(storage.clone(), WriterOptions { capacity: 5, ..fast() }).start();
    // Pushed without yielding, so the writer has not taken anything yet.
    for i in 0..8 {
        writer.audit(audit("alice", &i.to_string(), 1));
    }
    assert_eq!(writer.stats().dropped, 3);
    assert_eq!(writer.stats().queued, 5);
    assert!(writer.flush(Duration::from_secs(2)).await);
    assert_eq!(written(&*storage).await, ["3", "4", "5", "6", "7"]);
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_outage_keeps_every_record_and_writes_them_once_in_order_when_it_ends() {
    let storage = Arc::new(Flaky::default());
    storage.down.store(true, Ordering::SeqCst);
    let writer =
        RecordWriter::new(storage.clone(), WriterOptions { batch_size: 4, ..fast() }).start();
    for i in 0..10 {
        writer.audit(audit("alice", &i.to_string(), 1));
    }
    until("a few writes failed", || writer.stats().failures >= 3).await;
    let stats = writer.stats();
    assert!(!stats.available);
    assert_eq!((stats.written, stats.queued, stats.dropped), (0, 10, 0));
    assert!(!writer.flush(Duration::from_millis(20)).await, "nothing can be written yet");

    for i in 10..15 {
        writer.audit(audit("alice", &i.to_string(), 1));
    }
    storage.down.store(false, Ordering::SeqCst);
    assert!(writer.flush(Duration::from_secs(2)).await);
    assert_eq!(written(&*storage).await, numbered(15));
    let stats = writer.stats();
    assert!(stats.available);
    assert_eq!((stats.written, stats.queued, stats.dropped, stats.rejected), (15, 0, 0, 0));
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_refused_record_is_dropped_alone_and_does_not_block_the_others() {
    let storage = Arc::new(Flaky::default());
    let writer = RecordWriter::new(storage.clone(), fast()).start();
    writer.audit(audit("alice", "0", 1));
    writer.audit(audit("refused", "bad", 1));
    writer.audit(audit("alice", "1", 1));
    assert!(writer.flush(Duration::from_secs(2)).await);
    writer.audit(audit("refused", "bad again", 1));
    writer.audit(audit("alice", "2", 1));
    assert!(writer.flush(Duration::from_secs(2)).await);
    assert_eq!(written(&storage.inner).await, ["0", "1", "2"]);
    let stats = writer.stats();
    assert_eq!((stats.written, stats.rejected, stats.queued), (3, 2, 0));
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn stopping_writes_what_is_still_queued() {
    let storage = Arc::new(MemoryStorage::new());
    let writer =
        RecordWriter::new(storage.clone(), WriterOptions { batch_size: 3, ..fast() }).start();
    for i in 0..20 {
        writer.audit(audit("alice", &i.to_string(), 1));
    }
    writer.shutdown().await.unwrap();
    assert_eq!(written(&*storage).await, numbered(20));
}

#[tokio::test]
async fn stopping_during_an_outage_gives_up_after_the_stop_timeout() {
    let storage = Arc::new(Flaky::default());
    storage.down.store(true, Ordering::SeqCst);
    let options = WriterOptions { stop_timeout: Duration::from_millis(100), ..fast() };
    let writer = RecordWriter::new(storage.clone(), options).start();
    writer.audit(audit("alice", "0", 1));
    let started = Instant::now();
    writer.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(storage.writes.load(Ordering::SeqCst) >= 1, "it tried");
}

#[tokio::test]
async fn lifecycle_events_from_the_sink_become_plugin_events() {
    let storage = Arc::new(MemoryStorage::new());
    let writer = RecordWriter::new(storage.clone(), fast()).start();
    let sink: Arc<dyn MetricsSink> = Arc::new(writer.sink());
    let event = |time| LifecycleEvent {
        name: "dice".to_owned(),
        version: Some("1.1.0".to_owned()),
        from_version: Some("1.0.0".to_owned()),
        pid: None,
        reason: None,
        duration_seconds: Some(0.5),
        time,
    };
    sink.plugin_lifecycle(LifecycleKind::Started, &event(1_000));
    sink.plugin_lifecycle(LifecycleKind::Reloaded, &event(2_000));
    sink.plugin_lifecycle(LifecycleKind::Failed, &event(3_000));
    assert!(writer.flush(Duration::from_secs(2)).await);
    let rows = storage.plugin_events(&PluginEventQuery::default()).await.unwrap();
    let seen: Vec<(EpochMicros, PluginEventKind)> =
        rows.iter().map(|r| (r.time_us, r.kind)).collect();
    assert_eq!(
        seen,
        [
            (3_000_000, PluginEventKind::Failed),
            (2_000_000, PluginEventKind::ReloadOk),
            (1_000_000, PluginEventKind::Started),
        ]
    );
    assert_eq!(rows[1].node, "n1");
    assert_eq!(rows[1].version.as_deref(), Some("1.1.0"));
    assert_eq!(rows[1].duration_seconds, Some(0.5));
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn retention_deletes_old_records_in_the_background() {
    let storage = Arc::new(MemoryStorage::new());
    let day_us = 86_400_000_000;
    let now = now_micros();
    storage
        .write(&[
            Record::Audit(audit("alice", "old", now - 31 * day_us)),
            Record::Audit(audit("alice", "recent", now - 29 * day_us)),
        ])
        .await
        .unwrap();
    let options = WriterOptions { retention_interval: Duration::from_millis(10), ..fast() };
    let writer = RecordWriter::new(storage.clone(), options).start();
    let deadline = Instant::now() + Duration::from_secs(3);
    while written(&*storage).await != ["recent"] {
        assert!(Instant::now() < deadline, "the old record was not pruned");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn no_retention_keeps_everything() {
    let storage = Arc::new(MemoryStorage::new());
    storage.write(&[Record::Audit(audit("alice", "ancient", 1))]).await.unwrap();
    let options =
        WriterOptions { retention: None, retention_interval: Duration::from_millis(1), ..fast() };
    let writer = RecordWriter::new(storage.clone(), options).start();
    writer.audit(audit("alice", "new", 2));
    assert!(writer.flush(Duration::from_secs(2)).await);
    // Several retention ticks pass while the writer idles.
    tokio::time::sleep(Duration::from_millis(20)).await;
    writer.shutdown().await.unwrap();
    assert_eq!(written(&*storage).await, ["ancient", "new"]);
}
