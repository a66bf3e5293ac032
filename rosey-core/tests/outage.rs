//! A real PostgreSQL behind a fault-injecting proxy: an outage while plugins come and go loses no
//! lifecycle record, and the key-value store answers `storage unavailable` in time instead of hanging.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use rosey_core::bus::{EventBus, MemoryBus};
use rosey_core::event::LifecycleEvent;
use rosey_core::metrics::{FanoutSink, MetricsSink};
use rosey_core::plugin::{InProcessPlugin, InProcessRuntime, Manifest, PluginManager};
use rosey_core::storage::{
    AuditQuery, AuditRecord, KvLimits, KvService, PluginEventQuery, RecordWriter, SqlOptions,
    SqlStorage, Storage, WriterOptions, now_micros,
};
use rosey_core::subject::LifecycleKind;
use rosey_testkit::FaultProxy;
use rosey_testkit::postgres::TestDatabase;
use serde_json::{Value, json};

/// Remembers every lifecycle event the runtime reported, in order.
#[derive(Default)]
struct Heard(Mutex<Vec<(LifecycleKind, Option<String>)>>);

impl MetricsSink for Heard {
    fn plugin_lifecycle(&self, kind: LifecycleKind, event: &LifecycleEvent) {
        self.0.lock().push((kind, event.version.clone()));
    }
}

struct Quiet;

#[async_trait]
impl InProcessPlugin for Quiet {}

/// The test database behind a proxy, and storage that reaches it only through the proxy.
async fn proxied_postgres() -> (TestDatabase, FaultProxy, Arc<dyn Storage>) {
    let database = TestDatabase::create().await;
    let proxy = FaultProxy::start_for_url(database.url()).await.unwrap();
    let url = proxy.proxied_url(database.url());
    let options = SqlOptions { pool_size: 2, ..SqlOptions::default() };
    let storage: Arc<dyn Storage> = Arc::new(SqlStorage::open(&url, options).await.unwrap());
    (database, proxy, storage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_postgres_outage_during_lifecycle_events_loses_no_record() {
    let (database, proxy, storage) = proxied_postgres().await;
    let options = WriterOptions {
        node: "outage-test".to_owned(),
        retry_max: Duration::from_millis(500),
        ..WriterOptions::default()
    };
    let writer = RecordWriter::new(storage.clone(), options).start();
    let heard = Arc::new(Heard::default());
    let sink = FanoutSink::new(vec![Arc::new(writer.sink()), heard.clone()]);
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let runtime = InProcessRuntime::new();
    runtime.register("quiet", "1.0.0", || Box::new(Quiet));
    let manager =
        PluginManager::builder(bus, Arc::new(runtime)).metrics_sink(Arc::new(sink)).build();
    manager.add(Manifest::in_process("quiet", "1.0.0", ["quiet"])).await.unwrap();
    manager.wait_running("quiet", Duration::from_secs(5)).await.unwrap();
    assert!(writer.flush(Duration::from_secs(10)).await, "written before the outage");

    // The database goes away for 10 s while the plugin is restarted again and again and an admin
    // acts: every record waits in the writer's queue.
    proxy.cut();
    let outage = Instant::now();
    let mut audits = 0;
    while outage.elapsed() < Duration::from_secs(10) {
        manager.restart("quiet").await.unwrap();
        writer.audit(AuditRecord {
            time_us: now_micros(),
            node: "outage-test".to_owned(),
            actor: "alice".to_owned(),
            actor_rank: Some(3.0),
            command: "restart".to_owned(),
            arguments: "quiet".to_owned(),
            outcome: "ok".to_owned(),
            detail: None,
        });
        audits += 1;
        tokio::time::sleep(Duration::from_millis(200)).await; // the pace of the events, not a wait
    }
    assert!(!writer.stats().available, "the writer noticed the outage");
    assert!(writer.stats().queued > 0, "records wait in the queue");

    // It comes back: everything is written, once, in order.
    proxy.resume();
    assert!(
        writer.flush(Duration::from_secs(30)).await,
        "the queue drains once the database is back"
    );
    let stats = writer.stats();
    assert_eq!((stats.dropped, stats.queued), (0, 0));
    assert!(stats.available);

    let heard: Vec<(String, Option<String>)> = heard
        .0
        .lock()
        .iter()
        .map(|(kind, version)| (storage_kind(*kind), version.clone()))
        .collect();
    let query = PluginEventQuery { limit: 1000, ..PluginEventQuery::default() };
    let mut rows = storage.plugin_events(&query).await.unwrap();
    rows.reverse();
    let stored: Vec<(String, Option<String>)> =
        rows.iter().map(|row| (row.kind.as_str().to_owned(), row.version.clone())).collect();
    assert!(heard.len() > 20, "many lifecycle events during the outage: {}", heard.len());
    assert_eq!(stored, heard, "every lifecycle event stored once, in order");
    let audit = storage.audit_log(&AuditQuery { limit: 1000, ..AuditQuery::default() }).await;
    assert_eq!(audit.unwrap().len(), audits);

    manager.shutdown().await;
    writer.shutdown().await.unwrap();
    database.drop_now().await;
}

fn storage_kind(kind: LifecycleKind) -> String {
    match kind {
        LifecycleKind::Reloaded => "reload_ok".to_owned(),
        other => other.as_str().to_owned(),
    }
}

#[tokio::test]
async fn the_key_value_store_answers_storage_unavailable_within_a_second_while_postgres_hangs() {
    let (database, proxy, storage) = proxied_postgres().await;
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let kv = KvService::new(bus.clone(), storage, KvLimits::default())
        .queue_group(None)
        .start()
        .await
        .unwrap();
    let ask = |subject: &'static str, data: Value| {
        let bus = bus.clone();
        async move {
            let reply = bus
                .request(subject, data.to_string().into(), Duration::from_secs(10))
                .await
                .unwrap();
            serde_json::from_slice::<Value>(reply.payload()).unwrap()
        }
    };
    let set = json!({"plugin": "quotes", "key": "next_id", "value": 1});
    assert_eq!(ask("rosey.db.kv.set", set.clone()).await, json!({"ok": true}));

    // The server stops answering (connections stay open, nothing comes back): a hung peer.
    proxy.stall();
    let asked = Instant::now();
    let answer = ask("rosey.db.kv.get", json!({"plugin": "quotes", "key": "next_id"})).await;
    let waited = asked.elapsed();
    assert_eq!(answer, json!({"error": "storage unavailable", "code": "unavailable"}));
    assert!(waited < Duration::from_secs(2), "answered after {waited:?}, not within ~1 s");

    // Once it answers again, so does the store, with the value kept.
    proxy.resume();
    let get = json!({"plugin": "quotes", "key": "next_id"});
    let deadline = Instant::now() + Duration::from_secs(15);
    let value = loop {
        let answer = ask("rosey.db.kv.get", get.clone()).await;
        if answer.get("found").is_some() || Instant::now() > deadline {
            break answer;
        }
    };
    assert_eq!(value["value"], json!(1), "{value}");
    kv.shutdown().await.unwrap();
    database.drop_now().await;
}
