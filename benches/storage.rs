//! Storage benchmarks, on SQLite (a file in a temporary directory) and PostgreSQL (a throwaway
//! database on `ROSEY_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`):
//!
//! - `kv_round_trip/<backend>/<set|get>`: one key-value request from a real plugin process (the
//!   `rosey-bench-kv` plugin in `benches/kv-plugin`) through its plugin slot, the MemoryBus and the
//!   `KvService` to the database and back. The plugin times each round trip itself, from the request
//!   written to its response read; criterion gets the sum of those times, and the plugin's p50/p99
//!   over every round trip of the bench (warm-up included) are printed. The `KvService` is built as
//!   a node builds it: with its read cache on SQLite, without on PostgreSQL;
//!   `kv_round_trip/sqlite_uncached/<set|get>` is SQLite without the cache, for comparison.
//! - `kv_storage_alone/<backend>/<set|get>`: the same operations as `Storage` calls in the host, for
//!   what the database alone costs (p50/p99 printed).
//! - `audit_insert/<backend>/writer_batched`: 1,000 audit records pushed into a `RecordWriter`
//!   (default options: batches of up to 256 records per transaction), then `flush`; throughput in
//!   records/s. `audit_insert/<backend>/write_one_per_call`: `Storage::write` of one record per call
//!   (one transaction each), for contrast.
//!
//! Needs the release bench plugin next to the bench executable's target dir:
//! `cargo build --release -p rosey-bench-kv && cargo bench -p rosey-benches --bench storage`.
//! `ROSEY_BENCH_STORAGE=sqlite` (or `postgres`) runs one backend only. Results: benches/RESULTS.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::StreamExt;
use rosey_core::bus::{EventBus, EventBusExt, MemoryBus, Subscription};
use rosey_core::event::{ChatSend, CommandEvent};
use rosey_core::plugin::{Manifest, PluginManager, ProcessRuntime};
use rosey_core::storage::{
    AuditRecord, KV_CACHE_BYTES, KvHandle, KvLimits, KvService, Record, RecordWriter, SqlOptions,
    SqlStorage, Storage, WriterOptions, now_micros,
};
use rosey_testkit::postgres::TestDatabase;

/// Audit records pushed per measured batch in `writer_batched`.
const BATCH: u64 = 1_000;

/// Round trips asked of the plugin per command at most (each command must end within the
/// manifest's `event_secs`).
const PER_COMMAND: u64 = 10_000;

fn runtime() -> tokio::runtime::Runtime {
    if std::env::var_os("BENCH_CURRENT_THREAD").is_some() {
        return tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn plugin_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/kv-plugin"))
}

/// A database for the bench, removed by [`Database::remove`].
struct Database {
    name: &'static str,
    storage: SqlStorage,
    postgres: Option<TestDatabase>,
    sqlite_dir: Option<PathBuf>,
}

impl Database {
    async fn sqlite() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("rosey-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        let storage = SqlStorage::open(&url, SqlOptions::default()).await.expect("open SQLite");
        Self { name: "sqlite", storage, postgres: None, sqlite_dir: Some(dir) }
    }

    async fn postgres() -> Self {
        let db = TestDatabase::create().await;
        let storage =
            SqlStorage::open(db.url(), SqlOptions::default()).await.expect("open PostgreSQL");
        Self { name: "postgres", storage, postgres: Some(db), sqlite_dir: None }
    }

    async fn remove(self) {
        self.storage.close().await;
        if let Some(db) = self.postgres {
            db.drop_now().await;
        }
        if let Some(dir) = self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A host with the `kvbench` plugin, a `KvService` on the database, and the chat replies.
struct KvNode {
    bus: Arc<dyn EventBus>,
    manager: PluginManager,
    kv: KvHandle,
    said: Subscription,
}

impl KvNode {
    async fn start(storage: Arc<dyn Storage>, cache: Option<usize>) -> Self {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let kv = KvService::new(bus.clone(), storage, KvLimits::default())
            .cache(cache)
            .start()
            .await
            .expect("key-value service");
        let said = bus.subscribe("cytube.chat.send").await.expect("subscribe");
        let manager = PluginManager::new(bus.clone(), Arc::new(ProcessRuntime::new()));
        let manifest = Manifest::load(plugin_dir()).expect("benches/kv-plugin/plugin.toml");
        manager.add(manifest).await.expect("add kvbench");
        manager
            .wait_running("kvbench", Duration::from_secs(10))
            .await
            .expect("plugin built with `cargo build --release -p rosey-bench-kv`?");
        Self { bus, manager, kv, said }
    }

    /// Sends `!kvbench <args>` straight to the plugin's command subject and returns its reply.
    async fn ask(&mut self, args: &str) -> String {
        let command = CommandEvent {
            channel: "bench".to_owned(),
            user: "alice".to_owned(),
            rank: None,
            command: "kvbench".to_owned(),
            args: args.to_owned(),
            message: format!("!kvbench {args}"),
            time: 0,
            via: Default::default(),
        };
        self.bus.publish_json("rosey.command.kvbench", &command).await.expect("publish");
        let said = tokio::time::timeout(Duration::from_secs(130), self.said.next())
            .await
            .expect("the plugin answers")
            .expect("subscription open");
        let said: ChatSend = said.decode().expect("a chat reply");
        assert!(!said.message.starts_with("error:"), "kvbench {args}: {}", said.message);
        said.message
    }

    /// Runs `n` round trips of `op` in the plugin; the sum of their times.
    async fn round_trips(&mut self, op: &str, n: u64) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = n;
        while left > 0 {
            let chunk = left.min(PER_COMMAND);
            left -= chunk;
            let reply = self.ask(&format!("{op} {chunk}")).await;
            let nanos = reply
                .split_whitespace()
                .find_map(|word| word.strip_prefix("total_ns="))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("unexpected reply {reply:?}"));
            total += Duration::from_nanos(nanos);
        }
        total
    }

    async fn stop(self) {
        self.manager.shutdown().await;
        self.kv.shutdown().await.expect("key-value service");
    }
}

/// The round trips with the `KvService` as a node builds it, then (SQLite) without its cache.
fn kv_round_trips(c: &mut Criterion, rt: &tokio::runtime::Runtime, db: &Database) {
    // As rosey-bin's node: the read cache on a database of its own.
    let node_cache = (db.storage.backend() == "sqlite").then_some(KV_CACHE_BYTES);
    kv_round_trip(c, rt, db, db.name, node_cache);
    if node_cache.is_some() {
        kv_round_trip(c, rt, db, &format!("{}_uncached", db.name), None);
    }
    kv_storage_alone(c, rt, db);
}

fn kv_round_trip(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    db: &Database,
    name: &str,
    cache: Option<usize>,
) {
    let mut node = rt.block_on(async {
        let mut node = KvNode::start(Arc::new(db.storage.clone()), cache).await;
        node.ask("fill").await;
        node
    });
    let mut group = c.benchmark_group(format!("kv_round_trip/{name}"));
    for op in ["set", "get"] {
        group.bench_function(op, |b| {
            b.iter_custom(|iters| rt.block_on(node.round_trips(op, iters)))
        });
        let stats = rt.block_on(node.ask(&format!("stats {op}")));
        eprintln!("kv_round_trip/{name}/{op} (timed in the plugin): {stats}");
    }
    group.finish();
    let stats = node.kv.stats();
    eprintln!(
        "kv_round_trip/{name}: cache {} (hits {}, misses {})",
        if cache.is_some() { "on" } else { "off" },
        stats.cache_hits,
        stats.cache_misses
    );
    assert_eq!(stats.errors, 0, "no key-value request may fail: {stats:?}");
    rt.block_on(node.stop());
}

/// The same operations as `kv_round_trip`, as `Storage` calls in the host: what the database costs
/// without the plugin process, its slot, the bus and the `KvService`.
fn kv_storage_alone(c: &mut Criterion, rt: &tokio::runtime::Runtime, db: &Database) {
    let storage = &db.storage;
    let value = r#"{"user":"alice","count":1,"tags":["quote","bench","rosey"],"text":"the quick brown fox jumps over the lazy dog"}"#;
    let mut group = c.benchmark_group(format!("kv_storage_alone/{}", db.name));
    for op in ["set", "get"] {
        let mut samples = Vec::new();
        group.bench_function(op, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for n in 0..iters {
                        let key = format!("bench:{:03}", n % 100);
                        let t = Instant::now();
                        if op == "set" {
                            storage
                                .kv_set("kvbench", &key, value, 10_000, now_micros())
                                .await
                                .expect("kv_set");
                        } else {
                            let found = storage.kv_get("kvbench", &key).await.expect("kv_get");
                            assert!(found.is_some(), "{key} was filled");
                        }
                        samples.push(t.elapsed());
                    }
                    start.elapsed()
                })
            })
        });
        percentiles(&format!("kv_storage_alone/{}/{op}", db.name), &mut samples);
    }
    group.finish();
}

fn percentiles(name: &str, samples: &mut [Duration]) {
    if samples.is_empty() {
        return;
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    eprintln!("{name}: {} samples, p50 {:?}, p99 {:?}", samples.len(), pct(0.5), pct(0.99));
}

fn audit_record(n: u64) -> AuditRecord {
    AuditRecord {
        time_us: now_micros(),
        node: "bench".to_owned(),
        actor: "alice".to_owned(),
        actor_rank: Some(3.0),
        command: "reload".to_owned(),
        arguments: format!("dice-roller {n}"),
        outcome: "ok".to_owned(),
        detail: Some("reloaded dice-roller 1.0.0 → 1.0.1 in 2.1 ms".to_owned()),
    }
}

fn per_second(name: &str, records: u64, elapsed: Duration) {
    if elapsed > Duration::ZERO {
        eprintln!(
            "{name}: {records} records in {elapsed:.2?} = {:.0} records/s",
            records as f64 / elapsed.as_secs_f64()
        );
    }
}

fn audit_insert(c: &mut Criterion, rt: &tokio::runtime::Runtime, db: &Database) {
    let storage: Arc<dyn Storage> = Arc::new(db.storage.clone());
    let writer = {
        let _entered = rt.enter();
        RecordWriter::new(storage.clone(), WriterOptions::default()).start()
    };
    let mut group = c.benchmark_group(format!("audit_insert/{}", db.name));

    group.throughput(Throughput::Elements(BATCH));
    let (mut records, mut elapsed) = (0u64, Duration::ZERO);
    group.bench_function("writer_batched", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    for n in 0..BATCH {
                        writer.audit(audit_record(n));
                    }
                    assert!(writer.flush(Duration::from_secs(60)).await, "flushed within 60 s");
                }
                let took = start.elapsed();
                (records, elapsed) = (records + iters * BATCH, elapsed + took);
                took
            })
        })
    });
    per_second(&format!("audit_insert/{}/writer_batched", db.name), records, elapsed);
    let stats = writer.stats();
    assert_eq!((stats.dropped, stats.rejected), (0, 0), "every record written: {stats:?}");

    group.throughput(Throughput::Elements(1));
    let (mut records, mut elapsed) = (0u64, Duration::ZERO);
    group.bench_function("write_one_per_call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for n in 0..iters {
                    let record = [Record::Audit(audit_record(n))];
                    storage.write(&record).await.expect("write");
                }
                let took = start.elapsed();
                (records, elapsed) = (records + iters, elapsed + took);
                took
            })
        })
    });
    per_second(&format!("audit_insert/{}/write_one_per_call", db.name), records, elapsed);
    group.finish();
    rt.block_on(writer.shutdown()).expect("writer");
}

fn wanted(backend: &str) -> bool {
    std::env::var("ROSEY_BENCH_STORAGE").map_or(true, |only| only == backend)
}

fn storage(c: &mut Criterion) {
    let rt = runtime();
    if wanted("sqlite") {
        let db = rt.block_on(Database::sqlite());
        kv_round_trips(c, &rt, &db);
        audit_insert(c, &rt, &db);
        rt.block_on(db.remove());
    }
    if wanted("postgres") {
        let db = rt.block_on(Database::postgres());
        kv_round_trips(c, &rt, &db);
        audit_insert(c, &rt, &db);
        rt.block_on(db.remove());
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = storage
}
criterion_main!(benches);
