//! The key-value store for plugins: the `KvService` on the in-process bus, and through a real plugin
//! host. The scenarios in [`scenarios`] take any `Arc<dyn Storage>`, so every backend runs the same
//! ones; here they run on `MemoryStorage`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use rosey_core::bus::{EventBus, EventBusExt, MemoryBus, Subscription};
use rosey_core::event::{ChatSend, CommandEvent};
use rosey_core::plugin::{
    InProcessPlugin, InProcessRuntime, Manifest, PluginContext, PluginManager, PluginReply,
    RequestError,
};
use rosey_core::storage::{
    AuditQuery, AuditRecord, EpochMicros, KV_CACHE_BYTES, KvEntry, KvHandle, KvLimits, KvService,
    MemoryStorage, PluginEventQuery, PluginEventRecord, Pruned, Record, Storage, StorageError,
};
use serde_json::{Value, json};

/// A `KvService` on its own in-process bus.
pub(crate) struct Store {
    bus: Arc<dyn EventBus>,
    handle: KvHandle,
}

impl Store {
    /// With `cache` as [`KvService::cache`] gets it.
    pub(crate) async fn start(
        storage: Arc<dyn Storage>,
        limits: KvLimits,
        cache: Option<usize>,
    ) -> Self {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let handle =
            KvService::new(bus.clone(), storage, limits).cache(cache).start().await.unwrap();
        Self { bus, handle }
    }

    /// Sends `payload` to `rosey.db.kv.<operation>` as it is, and returns the JSON reply.
    pub(crate) async fn ask_raw(&self, operation: &str, payload: Bytes) -> Value {
        let subject = format!("rosey.db.kv.{operation}");
        let reply = self.bus.request(&subject, payload, Duration::from_secs(3)).await.unwrap();
        serde_json::from_slice(reply.payload()).unwrap()
    }

    /// Sends `body` as plugin `plugin` would through the host (stamped with its name).
    pub(crate) async fn ask(&self, plugin: &str, operation: &str, mut body: Value) -> Value {
        body["plugin"] = json!(plugin);
        self.ask_raw(operation, body.to_string().into()).await
    }

    pub(crate) async fn set(&self, plugin: &str, key: &str, value: Value) -> Value {
        self.ask(plugin, "set", json!({"key": key, "value": value})).await
    }

    pub(crate) async fn stop(self) {
        self.handle.shutdown().await.unwrap();
    }
}

/// `{"error", "code"}` → the code, for short assertions.
fn code(reply: &Value) -> &str {
    reply["code"].as_str().unwrap_or_else(|| panic!("expected an error, got {reply}"))
}

/// Plugin commands `!<name> <operation> <json>` send the JSON to `rosey.db.kv.<operation>` through
/// the host and say the answer, or `error (<code>): <message>`.
struct KvTool;

#[async_trait]
impl InProcessPlugin for KvTool {
    async fn command(&mut self, ctx: &PluginContext, command: &CommandEvent) -> PluginReply {
        let (operation, body) = command.args.split_once(' ').unwrap_or((&command.args, "{}"));
        let data: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
        let subject = format!("rosey.db.kv.{operation}");
        let answer = ctx.request(&subject, data, Duration::from_secs(5)).await;
        Ok(vec![match answer {
            Ok(reply) => reply.to_string(),
            Err(RequestError::Refused { message, code }) => format!("error ({code}): {message}"),
            Err(error) => format!("error: {error}"),
        }])
    }
}

/// Plugins `alpha` and `beta` (both a [`KvTool`]) under a real plugin manager, with a `KvService`.
struct Host {
    bus: Arc<dyn EventBus>,
    manager: PluginManager,
    said: Subscription,
    kv: KvHandle,
}

impl Host {
    async fn start(storage: Arc<dyn Storage>, cache: Option<usize>) -> Self {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let kv = KvService::new(bus.clone(), storage, KvLimits::default())
            .cache(cache)
            .start()
            .await
            .unwrap();
        let runtime = InProcessRuntime::new();
        for name in ["alpha", "beta"] {
            runtime.register(name, "1.0.0", || Box::new(KvTool));
        }
        let manager = PluginManager::new(bus.clone(), Arc::new(runtime));
        let said = bus.subscribe("cytube.chat.send").await.unwrap();
        for name in ["alpha", "beta"] {
            manager.add(Manifest::in_process(name, "1.0.0", [name])).await.unwrap();
            manager.wait_running(name, Duration::from_secs(5)).await.unwrap();
        }
        Self { bus, manager, said, kv }
    }

    /// Has `plugin` run `<operation> <body>` and returns what it said.
    async fn run(&mut self, plugin: &str, operation: &str, body: Value) -> String {
        let args = format!("{operation} {body}");
        let command = CommandEvent {
            channel: "lobby".to_owned(),
            user: "alice".to_owned(),
            rank: None,
            command: plugin.to_owned(),
            args: args.clone(),
            message: format!("!{plugin} {args}"),
            time: 0,
            via: Default::default(),
        };
        self.bus.publish_json(&format!("rosey.command.{plugin}"), &command).await.unwrap();
        let said = tokio::time::timeout(Duration::from_secs(5), self.said.next()).await;
        let said: ChatSend = said.unwrap().unwrap().decode().unwrap();
        said.message
    }

    async fn stop(self) {
        self.manager.shutdown().await;
        self.kv.shutdown().await.unwrap();
    }
}

/// The scenarios every `Storage` must pass behind the `KvService`.
pub(crate) mod scenarios {
    use super::*;

    pub(crate) async fn round_trips(storage: Arc<dyn Storage>, cache: Option<usize>) {
        let kv = Store::start(storage, KvLimits::default(), cache).await;
        let value = json!({"n": 1, "tags": ["a", "b"], "nested": {"ok": true}});
        assert_eq!(kv.set("p", "doc", value.clone()).await, json!({"ok": true}));
        let got = kv.ask("p", "get", json!({"key": "doc"})).await;
        assert_eq!(got["found"], true);
        assert_eq!(got["value"], value);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let updated_at = got["updated_at"].as_f64().unwrap();
        assert!(
            (now.as_secs_f64() - updated_at).abs() < 60.0,
            "updated_at {updated_at} is seconds"
        );

        assert_eq!(kv.set("p", "nothing", Value::Null).await, json!({"ok": true}));
        let got = kv.ask("p", "get", json!({"key": "nothing"})).await;
        assert_eq!((got["found"].clone(), got["value"].clone()), (json!(true), Value::Null));
        assert_eq!(kv.set("p", "doc", json!("replaced")).await, json!({"ok": true}));
        assert_eq!(kv.ask("p", "get", json!({"key": "doc"})).await["value"], "replaced");

        let listed = kv.ask("p", "list", json!({})).await;
        assert_eq!(listed, json!({"keys": ["doc", "nothing"], "next": null}));
        assert_eq!(kv.ask("p", "delete", json!({"key": "doc"})).await, json!({"deleted": true}));
        assert_eq!(kv.ask("p", "delete", json!({"key": "doc"})).await, json!({"deleted": false}));
        assert_eq!(kv.ask("p", "get", json!({"key": "doc"})).await, json!({"found": false}));
        kv.stop().await;
    }

    pub(crate) async fn scoping(storage: Arc<dyn Storage>, cache: Option<usize>) {
        let kv = Store::start(storage, KvLimits::default(), cache).await;
        // The host overwrites whatever `plugin` a plugin puts in its data; `ask` does the same.
        kv.set("a", "secret", json!("a's")).await;
        kv.set("b", "secret", json!("b's")).await;
        kv.set("b", "only-b", json!(1)).await;
        assert_eq!(kv.ask("a", "get", json!({"key": "secret"})).await["value"], "a's");
        assert_eq!(kv.ask("a", "get", json!({"key": "only-b"})).await, json!({"found": false}));
        assert_eq!(kv.ask("a", "list", json!({})).await["keys"], json!(["secret"]));
        assert_eq!(kv.ask("a", "delete", json!({"key": "only-b"})).await["deleted"], false);
        assert_eq!(kv.ask("b", "get", json!({"key": "only-b"})).await["value"], 1);
        kv.stop().await;
    }

    pub(crate) async fn every_limit_has_its_code(storage: Arc<dyn Storage>, cache: Option<usize>) {
        let kv = Store::start(storage, KvLimits::default(), cache).await;
        let long_key = "k".repeat(257);
        let reply = kv.ask("p", "set", json!({"key": long_key, "value": 1})).await;
        assert_eq!(
            reply,
            json!({"error": "key is 257 bytes; at most 256", "code": "key_too_long"})
        );
        assert_eq!(code(&kv.ask("p", "get", json!({"key": long_key})).await), "key_too_long");
        assert_eq!(code(&kv.ask("p", "get", json!({"key": ""})).await), "key_too_long");
        assert_eq!(kv.set("p", &"k".repeat(256), json!(1)).await, json!({"ok": true}));

        // A JSON string of n characters is n + 2 bytes.
        let reply = kv.set("p", "big", json!("x".repeat(65_535))).await;
        assert_eq!(
            reply,
            json!({"error": "value is 65537 bytes; at most 65536", "code": "value_too_large"})
        );
        assert_eq!(kv.set("p", "big", json!("x".repeat(65_534))).await, json!({"ok": true}));

        for limit in [0, 1001] {
            let reply = kv.ask("p", "list", json!({"limit": limit})).await;
            assert_eq!(code(&reply), "bad_request");
            assert!(reply["error"].as_str().unwrap().contains(&limit.to_string()), "{reply}");
        }
        assert_eq!(
            kv.ask("p", "list", json!({"limit": 1000})).await["keys"].as_array().unwrap().len(),
            2
        );

        assert_eq!(code(&kv.ask_raw("get", "{not json".into()).await), "bad_request");
        assert_eq!(code(&kv.ask_raw("get", "[1, 2]".into()).await), "bad_request");
        assert_eq!(code(&kv.ask("p", "get", json!({"key": 7})).await), "bad_request");
        assert_eq!(code(&kv.ask("p", "set", json!({"key": "k"})).await), "bad_request");
        assert_eq!(code(&kv.ask("p", "rename", json!({"key": "k"})).await), "bad_request");
        let unstamped = kv.ask_raw("get", json!({"key": "k"}).to_string().into()).await;
        assert_eq!(unstamped["error"], "requests must come through the plugin host");
        let huge = Bytes::from(vec![b' '; 4 << 20]);
        assert_eq!(code(&kv.ask_raw("set", huge).await), "value_too_large");
        // None of that harmed the service.
        assert_eq!(kv.ask("p", "get", json!({"key": "big"})).await["found"], true);
        kv.stop().await;
    }

    pub(crate) async fn max_keys_holds_even_for_concurrent_sets(
        storage: Arc<dyn Storage>,
        cache: Option<usize>,
    ) {
        let limits = KvLimits { max_keys: 3, ..KvLimits::default() };
        let kv = Arc::new(Store::start(storage.clone(), limits, cache).await);
        for key in ["a", "b", "c"] {
            assert_eq!(kv.set("p", key, json!(1)).await, json!({"ok": true}));
        }
        let refused = kv.set("p", "d", json!(1)).await;
        assert_eq!(code(&refused), "too_many_keys");
        assert!(refused["error"].as_str().unwrap().contains('3'), "{refused}");
        assert_eq!(kv.set("p", "a", json!(2)).await, json!({"ok": true}), "updates still work");
        assert_eq!(
            kv.set("q", "a", json!(1)).await,
            json!({"ok": true}),
            "the limit is per plugin"
        );
        kv.ask("p", "delete", json!({"key": "b"})).await;
        assert_eq!(kv.set("p", "d", json!(1)).await, json!({"ok": true}));

        let racing = (0..20).map(|i| {
            let kv = kv.clone();
            tokio::spawn(async move { kv.set("racer", &format!("k{i}"), json!(i)).await })
        });
        let replies = futures_util::future::join_all(racing).await;
        let ok = replies.iter().filter(|r| r.as_ref().unwrap().get("ok").is_some()).count();
        assert_eq!(ok, 3);
        assert_eq!(storage.kv_count("racer").await.unwrap(), 3);
        Arc::into_inner(kv).unwrap().stop().await;
    }

    pub(crate) async fn pagination_returns_every_key_once(
        storage: Arc<dyn Storage>,
        cache: Option<usize>,
    ) {
        let kv = Store::start(storage, KvLimits::default(), cache).await;
        let expected: Vec<String> = (0..250).map(|i| format!("quote/{i:03}")).collect();
        for key in &expected {
            kv.set("p", key, json!(key)).await;
        }
        for key in ["quota", "quote", "r/1", "a/1"] {
            kv.set("p", key, json!(0)).await;
        }
        let mut seen = Vec::new();
        let mut after = Value::Null;
        let mut pages = 0;
        loop {
            let page = kv
                .ask("p", "list", json!({"prefix": "quote/", "after": after, "limit": 100}))
                .await;
            pages += 1;
            seen.extend(
                page["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()),
            );
            after = page["next"].clone();
            if after.is_null() {
                break;
            }
            assert_eq!(after, json!(seen.last().unwrap()));
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, expected);
        kv.stop().await;
    }

    pub(crate) async fn through_the_plugin_host(storage: Arc<dyn Storage>, cache: Option<usize>) {
        let mut host = Host::start(storage, cache).await;
        assert_eq!(
            host.run("alpha", "set", json!({"key": "color", "value": "red"})).await,
            r#"{"ok":true}"#
        );
        // alpha pretends to be beta; the host stamps its real name.
        let spoof = json!({"plugin": "beta", "key": "color", "value": "blue"});
        assert_eq!(host.run("alpha", "set", spoof).await, r#"{"ok":true}"#);
        assert_eq!(host.run("beta", "get", json!({"key": "color"})).await, r#"{"found":false}"#);
        let spoof = json!({"plugin": "alpha", "key": "color"});
        assert_eq!(host.run("beta", "get", spoof).await, r#"{"found":false}"#);
        assert_eq!(host.run("beta", "list", json!({})).await, r#"{"keys":[],"next":null}"#);
        let got: Value =
            serde_json::from_str(&host.run("alpha", "get", json!({"key": "color"})).await).unwrap();
        assert_eq!(got["value"], "blue");
        assert_eq!(host.run("alpha", "list", json!({})).await, r#"{"keys":["color"],"next":null}"#);

        let long_key = json!({"key": "k".repeat(257), "value": 1});
        assert_eq!(
            host.run("alpha", "set", long_key).await,
            "error (key_too_long): key is 257 bytes; at most 256"
        );
        assert_eq!(
            host.run("beta", "delete", json!({"key": "color"})).await,
            r#"{"deleted":false}"#
        );
        assert_eq!(
            host.run("alpha", "delete", json!({"key": "color"})).await,
            r#"{"deleted":true}"#
        );
        host.stop().await;
    }
}

/// The key-value scenarios as tests on one storage; `$open` is an async expression giving
/// `(Arc<dyn Storage>, guard)`, the guard removing the database when dropped; `$cache` is the
/// service's read cache (none when not given).
macro_rules! kv_scenarios {
    ($open:expr) => {
        kv_scenarios!($open, None);
    };
    ($open:expr, $cache:expr) => {
        #[tokio::test]
        async fn set_get_delete_and_list_round_trip() {
            let (storage, _guard) = $open.await;
            scenarios::round_trips(storage, $cache).await;
        }

        #[tokio::test]
        async fn a_plugin_sees_only_its_own_keys() {
            let (storage, _guard) = $open.await;
            scenarios::scoping(storage, $cache).await;
        }

        #[tokio::test]
        async fn every_limit_answers_with_its_code() {
            let (storage, _guard) = $open.await;
            scenarios::every_limit_has_its_code(storage, $cache).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn max_keys_is_enforced_per_plugin_even_under_concurrent_sets() {
            let (storage, _guard) = $open.await;
            scenarios::max_keys_holds_even_for_concurrent_sets(storage, $cache).await;
        }

        #[tokio::test]
        async fn list_pages_return_every_key_once() {
            let (storage, _guard) = $open.await;
            scenarios::pagination_returns_every_key_once(storage, $cache).await;
        }

        #[tokio::test]
        async fn plugins_use_the_store_through_the_host_and_cannot_reach_each_others_keys() {
            let (storage, _guard) = $open.await;
            scenarios::through_the_plugin_host(storage, $cache).await;
        }
    };
}

mod in_memory {
    use super::*;

    kv_scenarios!(async { (Arc::new(MemoryStorage::new()) as Arc<dyn Storage>, ()) });
}

mod in_memory_cached {
    use super::*;

    kv_scenarios!(
        async { (Arc::new(MemoryStorage::new()) as Arc<dyn Storage>, ()) },
        Some(KV_CACHE_BYTES)
    );
}

mod on_sqlite {
    use super::*;

    kv_scenarios!(crate::storage::open_sqlite());
}

/// As a node runs SQLite: with the read cache.
mod on_sqlite_cached {
    use super::*;

    kv_scenarios!(crate::storage::open_sqlite(), Some(KV_CACHE_BYTES));
}

mod on_postgres {
    use super::*;

    kv_scenarios!(crate::storage::open_postgres());
}

/// A storage that never answers (a database behind a dead connection), or that says at once it is
/// unreachable.
struct Broken {
    hangs: bool,
}

impl Broken {
    async fn fail<T>(&self) -> Result<T, StorageError> {
        if self.hangs {
            std::future::pending::<()>().await;
        }
        Err(StorageError::Unavailable("connection reset".into()))
    }
}

#[async_trait]
impl Storage for Broken {
    fn backend(&self) -> &'static str {
        "broken"
    }
    async fn ping(&self) -> Result<(), StorageError> {
        self.fail().await
    }
    async fn write(&self, _: &[Record]) -> Result<(), StorageError> {
        self.fail().await
    }
    async fn audit_log(&self, _: &AuditQuery) -> Result<Vec<AuditRecord>, StorageError> {
        self.fail().await
    }
    async fn plugin_events(
        &self,
        _: &PluginEventQuery,
    ) -> Result<Vec<PluginEventRecord>, StorageError> {
        self.fail().await
    }
    async fn prune(&self, _: EpochMicros) -> Result<Pruned, StorageError> {
        self.fail().await
    }
    async fn kv_get(&self, _: &str, _: &str) -> Result<Option<KvEntry>, StorageError> {
        self.fail().await
    }
    async fn kv_set(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: u64,
        _: EpochMicros,
    ) -> Result<(), StorageError> {
        self.fail().await
    }
    async fn kv_delete(&self, _: &str, _: &str) -> Result<bool, StorageError> {
        self.fail().await
    }
    async fn kv_list(
        &self,
        _: &str,
        _: &str,
        _: Option<&str>,
        _: u32,
    ) -> Result<Vec<String>, StorageError> {
        self.fail().await
    }
    async fn kv_count(&self, _: &str) -> Result<u64, StorageError> {
        self.fail().await
    }
}

#[tokio::test]
async fn a_store_that_hangs_is_answered_unavailable_within_about_a_second() {
    let kv = Store::start(Arc::new(Broken { hangs: true }), KvLimits::default(), None).await;
    let started = Instant::now();
    let asks =
        ["get", "set", "delete", "list"].map(|op| kv.ask("p", op, json!({"key": "k", "value": 1})));
    for reply in futures_util::future::join_all(asks).await {
        assert_eq!(reply, json!({"error": "storage unavailable", "code": "unavailable"}));
    }
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    let stats = kv.handle.stats();
    assert_eq!((stats.requests, stats.errors, stats.unavailable), (4, 4, 4));
    kv.stop().await;
}

#[tokio::test]
async fn an_unreachable_store_is_answered_unavailable_at_once() {
    let kv = Store::start(Arc::new(Broken { hangs: false }), KvLimits::default(), None).await;
    let started = Instant::now();
    let reply = kv.set("p", "k", json!(1)).await;
    assert_eq!(reply, json!({"error": "storage unavailable", "code": "unavailable"}));
    assert!(started.elapsed() < Duration::from_millis(500));
    kv.stop().await;
}

/// A real storage (SQLite here) that counts the gets reaching it, and whose writes can be made to
/// go through yet be reported failed (the answer lost on the way back), or to be slow.
struct Watched {
    inner: Arc<dyn Storage>,
    gets: AtomicU64,
    lose_answers: AtomicBool,
    write_delay_ms: AtomicU64,
}

impl Watched {
    fn new(inner: Arc<dyn Storage>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            gets: AtomicU64::new(0),
            lose_answers: AtomicBool::new(false),
            write_delay_ms: AtomicU64::new(0),
        })
    }

    fn gets(&self) -> u64 {
        self.gets.load(Ordering::SeqCst)
    }

    /// A write's result as this storage reports it: delayed, and turned into a failure when
    /// answers are being lost.
    async fn answer<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        let delay = self.write_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.lose_answers.load(Ordering::SeqCst) {
            return Err(StorageError::Unavailable("connection reset".into()));
        }
        result
    }
}

#[async_trait]
impl Storage for Watched {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn ping(&self) -> Result<(), StorageError> {
        self.inner.ping().await
    }
    async fn write(&self, records: &[Record]) -> Result<(), StorageError> {
        self.inner.write(records).await
    }
    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StorageError> {
        self.inner.audit_log(query).await
    }
    async fn plugin_events(
        &self,
        query: &PluginEventQuery,
    ) -> Result<Vec<PluginEventRecord>, StorageError> {
        self.inner.plugin_events(query).await
    }
    async fn prune(&self, before_us: EpochMicros) -> Result<Pruned, StorageError> {
        self.inner.prune(before_us).await
    }
    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<KvEntry>, StorageError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
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
        let written = self.inner.kv_set(plugin, key, value, max_keys, now_us).await;
        self.answer(written).await
    }
    async fn kv_delete(&self, plugin: &str, key: &str) -> Result<bool, StorageError> {
        let deleted = self.inner.kv_delete(plugin, key).await;
        self.answer(deleted).await
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

/// A `Store` with the read cache, as a node runs it, on a watched SQLite file.
async fn cached_sqlite() -> (Store, Arc<Watched>, impl Drop) {
    let (sqlite, guard) = crate::storage::open_sqlite().await;
    let watched = Watched::new(sqlite);
    let kv = Store::start(watched.clone(), KvLimits::default(), Some(KV_CACHE_BYTES)).await;
    (kv, watched, guard)
}

#[tokio::test]
async fn with_the_cache_a_get_after_a_set_or_delete_is_answered_without_the_database() {
    let (kv, storage, _guard) = cached_sqlite().await;
    assert_eq!(kv.set("p", "k", json!({"n": 1})).await, json!({"ok": true}));
    let got = kv.ask("p", "get", json!({"key": "k"})).await;
    assert_eq!(got["value"], json!({"n": 1}));
    // The cached reply is the one the database would give, `updated_at` included.
    let stored = storage.inner.kv_get("p", "k").await.unwrap().unwrap();
    assert_eq!(got["updated_at"].as_f64().unwrap(), stored.updated_at_us as f64 / 1e6);

    assert_eq!(kv.set("p", "k", json!(2)).await, json!({"ok": true}));
    assert_eq!(kv.ask("p", "get", json!({"key": "k"})).await["value"], 2);
    assert_eq!(kv.ask("p", "delete", json!({"key": "k"})).await, json!({"deleted": true}));
    assert_eq!(kv.ask("p", "get", json!({"key": "k"})).await, json!({"found": false}));
    assert_eq!(kv.ask("q", "get", json!({"key": "k"})).await, json!({"found": false}));
    assert_eq!(kv.ask("q", "get", json!({"key": "k"})).await, json!({"found": false}));
    let stats = kv.handle.stats();
    assert_eq!((stats.cache_hits, stats.cache_misses), (4, 1));
    assert_eq!(storage.gets(), 1, "only q's first get reached the database");
    kv.stop().await;
}

#[tokio::test]
async fn with_the_cache_a_write_whose_answer_was_lost_is_read_back_from_the_database() {
    let (kv, storage, _guard) = cached_sqlite().await;
    kv.set("p", "k", json!("old")).await;
    assert_eq!(kv.ask("p", "get", json!({"key": "k"})).await["value"], "old");
    assert_eq!(storage.gets(), 0);

    // The database takes the write, but the service is told it failed: the outcome is unknown.
    storage.lose_answers.store(true, Ordering::SeqCst);
    assert_eq!(code(&kv.set("p", "k", json!("new")).await), "unavailable");
    storage.lose_answers.store(false, Ordering::SeqCst);
    assert_eq!(kv.ask("p", "get", json!({"key": "k"})).await["value"], "new");
    assert_eq!(storage.gets(), 1, "the get went to the database");

    storage.lose_answers.store(true, Ordering::SeqCst);
    assert_eq!(code(&kv.ask("p", "delete", json!({"key": "k"})).await), "unavailable");
    storage.lose_answers.store(false, Ordering::SeqCst);
    assert_eq!(kv.ask("p", "get", json!({"key": "k"})).await, json!({"found": false}));
    assert_eq!(storage.gets(), 2);
    let stats = kv.handle.stats();
    assert_eq!((stats.cache_hits, stats.cache_misses), (1, 2));
    kv.stop().await;
}

#[tokio::test]
async fn with_the_cache_a_set_that_ends_after_its_timeout_is_seen_once_it_ends() {
    let (sqlite, _guard) = crate::storage::open_sqlite().await;
    let storage = Watched::new(sqlite);
    let limits = KvLimits { timeout: Duration::from_millis(100), ..KvLimits::default() };
    let kv = Store::start(storage.clone(), limits, Some(KV_CACHE_BYTES)).await;
    kv.set("p", "k", json!("old")).await;

    storage.write_delay_ms.store(400, Ordering::SeqCst);
    assert_eq!(code(&kv.set("p", "k", json!("new")).await), "unavailable");
    storage.write_delay_ms.store(0, Ordering::SeqCst);
    // The write went on after the requester was told `unavailable`; until it ends either value is
    // a fair answer, and once it has, the cache must not keep the old one.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got = kv.ask("p", "get", json!({"key": "k"})).await;
        if got["value"] == "new" {
            break;
        }
        assert_eq!(got["value"], "old");
        assert!(Instant::now() < deadline, "the late write never showed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(storage.inner.kv_get("p", "k").await.unwrap().unwrap().value, r#""new""#);
    assert_eq!(storage.gets(), 0, "every get was answered from the cache");
    kv.stop().await;
}
