//! The key-value store for plugins on the bus: [`KvService`] answers `rosey.db.kv.<get|set|delete|list>`.
//!
//! Every request carries the `plugin` name the host stamped on it, and only that plugin's keys are
//! seen, whatever else the plugin sent. Replies:
//!
//! | subject | request | reply |
//! |---|---|---|
//! | `rosey.db.kv.get` | `{plugin, key}` | `{"found": true, "value": …, "updated_at": <seconds>}` or `{"found": false}` |
//! | `rosey.db.kv.set` | `{plugin, key, value}` | `{"ok": true}` |
//! | `rosey.db.kv.delete` | `{plugin, key}` | `{"deleted": true\|false}` |
//! | `rosey.db.kv.list` | `{plugin, prefix?, after?, limit?}` | `{"keys": […], "next": "<last key>" \| null}` |
//!
//! A refusal is `{"error": "<sentence>", "code": "<code>"}` (see [`KvError`]); the limits are
//! [`KvLimits`]. A storage call that fails or takes longer than [`KvLimits::timeout`] is answered
//! `{"error": "storage unavailable", "code": "unavailable"}`, so a plugin never hangs on an outage.
//!
//! With [`KvService::cache`], gets are answered from memory once a key has been seen (read or
//! written); that is only correct while this service is the only writer of the `kv` table.

mod cache;
mod request;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{KvEntry, Storage, StorageError, now_micros};
use crate::bus::{BusError, EventBus, EventBusExt, Message};
use crate::quiet::LogLimit;
use crate::service::{ServiceHandle, Stopper, TaskFailed};
use crate::subject::KV_PREFIX;

use cache::{Cached, KvCache, WriteTicket};
pub use request::KvError;
use request::{Operation, Request};

/// The default queue group, so that with several nodes on one NATS each request is answered once.
pub const KV_GROUP: &str = "rosey-kv";

/// The read cache's size in a node whose database is its own (SQLite): 16 MiB of plugin names,
/// keys and values; see [`KvService::cache`].
pub const KV_CACHE_BYTES: usize = 16 << 20;

/// Requests answered at the same time at most. Beyond, a request is answered `unavailable` at once
/// rather than waiting: a requester that waits for a saturated store would time out anyway, and
/// answering keeps the subscription read promptly (so the bus never overflows with requests).
const MAX_IN_FLIGHT: usize = 256;

/// Storage failure lines logged per 10 s at most; the rest are counted in a summary.
const STORAGE_WARN_BURST: u32 = 3;

/// The key-value store's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvLimits {
    /// The longest key, in bytes of UTF-8 (default 256).
    pub max_key_bytes: usize,
    /// The largest value, in bytes of compact JSON (default 65,536).
    pub max_value_bytes: usize,
    /// Keys per plugin at most (default 10,000).
    pub max_keys: u64,
    /// The largest `limit` of a `list` (default 1,000).
    pub max_list: u32,
    /// The `limit` of a `list` that gives none (default 100).
    pub default_list: u32,
    /// How long a storage call may take before the request is answered `unavailable` (default 1 s).
    pub timeout: Duration,
}

impl Default for KvLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 256,
            max_value_bytes: 65_536,
            max_keys: 10_000,
            max_list: 1000,
            default_list: 100,
            timeout: Duration::from_secs(1),
        }
    }
}

/// The service's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvStats {
    /// Requests received.
    pub requests: u64,
    /// Requests answered with an error (any code, `unavailable` included).
    pub errors: u64,
    /// Requests answered `unavailable`.
    pub unavailable: u64,
    /// Gets answered from the read cache (always 0 without [`KvService::cache`]).
    pub cache_hits: u64,
    /// Gets the read cache could not answer, so storage did (always 0 without the cache).
    pub cache_misses: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    unavailable: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
}

impl Counters {
    fn read(&self) -> KvStats {
        KvStats {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            unavailable: self.unavailable.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            cache_misses: self.cache_misses.load(Ordering::Relaxed),
        }
    }
}

/// Why the key-value service could not start or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum KvServiceError {
    /// Subscribing to `rosey.db.kv.*` failed.
    #[error("the key-value store cannot subscribe to {KV_PREFIX}.*")]
    Subscribe(#[source] BusError),
    /// The service's task panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// Answers `rosey.db.kv.*` on the bus from a [`Storage`]; see the [module docs](self).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use rosey_core::bus::{EventBus, MemoryBus};
/// use rosey_core::storage::{KvLimits, KvService, MemoryStorage};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
/// let kv = KvService::new(bus.clone(), Arc::new(MemoryStorage::new()), KvLimits::default())
///     .start()
///     .await?;
/// // The host stamps `plugin`; plugins never send it themselves.
/// let request = r#"{"plugin": "quotes", "key": "count", "value": 3}"#;
/// let reply = bus.request("rosey.db.kv.set", request.into(), Duration::from_secs(1)).await?;
/// assert_eq!(&reply.payload()[..], br#"{"ok":true}"#);
/// kv.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct KvService {
    bus: Arc<dyn EventBus>,
    storage: Arc<dyn Storage>,
    limits: KvLimits,
    group: Option<String>,
    cache_bytes: Option<usize>,
}

impl std::fmt::Debug for KvService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvService")
            .field("backend", &self.storage.backend())
            .field("limits", &self.limits)
            .field("group", &self.group)
            .field("cache_bytes", &self.cache_bytes)
            .finish_non_exhaustive()
    }
}

/// A running [`KvService`].
#[derive(Debug)]
#[must_use = "dropping the handle stops the service"]
pub struct KvHandle {
    service: ServiceHandle<KvServiceError>,
    counters: Arc<Counters>,
}

impl KvHandle {
    /// The service's counters.
    pub fn stats(&self) -> KvStats {
        self.counters.read()
    }

    /// A reader of the same counters that outlives the handle (for a metrics exporter).
    pub fn stats_reader(&self) -> impl Fn() -> KvStats + Send + Sync + 'static {
        let counters = self.counters.clone();
        move || counters.read()
    }

    /// Asks the service to stop; returns at once.
    pub fn stop(&self) {
        self.service.stop();
    }

    /// Something that can stop the service while this handle is being waited on.
    pub fn stopper(&self) -> Stopper {
        self.service.stopper()
    }

    /// Waits until the service has ended; requests being answered are abandoned on stop.
    pub async fn wait(self) -> Result<(), KvServiceError> {
        self.service.wait().await
    }

    /// Stops the service and waits until it has.
    pub async fn shutdown(self) -> Result<(), KvServiceError> {
        self.service.shutdown().await
    }
}

impl KvService {
    /// A service answering from `storage` within `limits`, in the queue group [`KV_GROUP`].
    pub fn new(bus: Arc<dyn EventBus>, storage: Arc<dyn Storage>, limits: KvLimits) -> Self {
        Self { bus, storage, limits, group: Some(KV_GROUP.to_owned()), cache_bytes: None }
    }

    /// Keeps what gets and writes learn of each key in memory, up to about `max_bytes` of plugin
    /// names, keys and values (the oldest-inserted forgotten first), so that a get of a key already
    /// seen never reaches storage; `None` (the default) sends every get to storage.
    ///
    /// Only for a database this service alone writes, like a node's own SQLite file: a value
    /// written to the `kv` table behind its back (another node on a shared PostgreSQL, a manual
    /// `UPDATE`) is not seen until the service restarts. Lists always go to storage.
    pub fn cache(mut self, max_bytes: Option<usize>) -> Self {
        self.cache_bytes = max_bytes;
        self
    }

    /// Answers as a member of queue group `group` (each request answered by one member), or, with
    /// `None`, as a plain subscriber.
    pub fn queue_group(mut self, group: Option<String>) -> Self {
        self.group = group;
        self
    }

    /// Subscribes and answers in a spawned task until stopped; each request is answered in its own
    /// task (at most 256 at once). Returns once the subscription is live.
    pub async fn start(self) -> Result<KvHandle, KvServiceError> {
        let pattern = format!("{KV_PREFIX}.*");
        let subscribed = match &self.group {
            Some(group) => self.bus.queue_subscribe(&pattern, group).await,
            None => self.bus.subscribe(&pattern).await,
        };
        let mut requests = subscribed.map_err(KvServiceError::Subscribe)?;
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        let service = ServiceHandle::spawn("key-value store", move |token| async move {
            let tracker = TaskTracker::new();
            let answerer = Arc::new(Answerer {
                bus: self.bus,
                storage: self.storage,
                limits: self.limits,
                counters: shared,
                cache: self.cache_bytes.map(|max| Arc::new(KvCache::new(max))),
                set_turns: Mutex::default(),
                storage_warnings: Mutex::new(LogLimit::new(STORAGE_WARN_BURST)),
                writes: tracker.clone(),
                stopping: token.clone(),
            });
            let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    request = requests.next() => {
                        let Some(request) = request else { break };
                        answerer.counters.requests.fetch_add(1, Ordering::Relaxed);
                        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                            answerer.send(&request, Err(KvError::Unavailable)).await;
                            continue;
                        };
                        let answerer = answerer.clone();
                        let token = token.clone();
                        tracker.spawn(async move {
                            tokio::select! {
                                () = token.cancelled() => {}
                                () = answerer.answer(request) => {}
                            }
                            drop(permit);
                        });
                    }
                }
            }
            tracker.close();
            tracker.wait().await;
            Ok(())
        });
        Ok(KvHandle { service, counters })
    }
}

/// What every request's task shares.
struct Answerer {
    bus: Arc<dyn EventBus>,
    storage: Arc<dyn Storage>,
    limits: KvLimits,
    counters: Arc<Counters>,
    cache: Option<Arc<KvCache>>,
    /// One turn at a time per plugin for `set`, so concurrent sets of new keys cannot overshoot
    /// `max_keys` even on a storage that checks the count and inserts in two steps.
    set_turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    storage_warnings: Mutex<LogLimit>,
    /// Where writes run (see [`spawn_write`](Self::spawn_write)), and what cancels them on stop.
    writes: TaskTracker,
    stopping: CancellationToken,
}

impl Answerer {
    async fn answer(&self, request: Message) {
        let operation = request
            .subject()
            .strip_prefix(KV_PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or_default();
        // A bug must cost one request, not the service.
        let reply = std::panic::AssertUnwindSafe(self.handle(operation, request.payload()))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!(message = "a key-value request panicked", operation);
                Err(KvError::Internal)
            });
        if let Err(error) = &reply
            && !matches!(error, KvError::Unavailable | KvError::Internal)
        {
            tracing::debug!(message = "key-value request refused", operation, code = error.code(), %error);
        }
        self.send(&request, reply).await;
    }

    async fn send(&self, request: &Message, reply: Result<Value, KvError>) {
        let reply = reply.unwrap_or_else(|error| {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            if error == KvError::Unavailable {
                self.counters.unavailable.fetch_add(1, Ordering::Relaxed);
            }
            json!({ "error": error.to_string(), "code": error.code() })
        });
        if let Err(error) = self.bus.respond(request, Bytes::from(reply.to_string())).await {
            tracing::debug!(message = "cannot answer a key-value request", %error);
        }
    }

    async fn handle(&self, operation: &str, payload: &[u8]) -> Result<Value, KvError> {
        let Request { plugin, operation } = request::parse(operation, payload, &self.limits)?;
        match operation {
            Operation::Get { key } => {
                let entry = self.get(&plugin, &key).await?;
                let Some(entry) = entry else { return Ok(json!({ "found": false })) };
                let value: Value = serde_json::from_str(&entry.value).map_err(|error| {
                    tracing::error!(message = "a stored value is not JSON", plugin = %plugin, key = %key, %error);
                    KvError::Internal
                })?;
                let updated_at = entry.updated_at_us as f64 / 1_000_000.0;
                Ok(json!({ "found": true, "value": value, "updated_at": updated_at }))
            }
            Operation::Set { key, value } => {
                self.set(&plugin, &key, &value).await?;
                Ok(json!({ "ok": true }))
            }
            Operation::Delete { key } => {
                let ticket = self.cache.as_ref().map(|cache| cache.begin_write(&plugin, &key));
                let storage = self.storage.clone();
                let delete = async move { storage.kv_delete(&plugin, &key).await };
                let deleted =
                    self.call(self.spawn_write(ticket, delete, |_| Cached::Absent)).await?;
                Ok(json!({ "deleted": deleted }))
            }
            Operation::List { prefix, after, limit } => {
                let listed = self.storage.kv_list(&plugin, &prefix, after.as_deref(), limit);
                let keys = self.call(listed).await?;
                let next = if keys.len() >= limit as usize { keys.last().cloned() } else { None };
                Ok(json!({ "keys": keys, "next": next }))
            }
        }
    }

    /// The entry of `plugin`'s `key`, from the cache when it knows it, else from storage (and then
    /// remembered, unless a write of any key started or ended meanwhile).
    async fn get(&self, plugin: &str, key: &str) -> Result<Option<KvEntry>, KvError> {
        let Some(cache) = &self.cache else {
            return self.call(self.storage.kv_get(plugin, key)).await;
        };
        if let Some(cached) = cache.get(plugin, key) {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(match cached {
                Cached::Present(entry) => Some(entry),
                Cached::Absent => None,
            });
        }
        self.counters.cache_misses.fetch_add(1, Ordering::Relaxed);
        let seen = cache.generation();
        let entry = self.call(self.storage.kv_get(plugin, key)).await?;
        let state = entry.clone().map_or(Cached::Absent, Cached::Present);
        cache.fill(seen, plugin, key, state);
        Ok(entry)
    }

    /// A `set`, in the plugin's turn; waiting for the turn counts against the timeout, and the turn
    /// is held until the write has ended, even past the timeout.
    async fn set(&self, plugin: &str, key: &str, value: &str) -> Result<(), KvError> {
        let turn = self.set_turns.lock().entry(plugin.to_owned()).or_default().clone();
        let result = self
            .call(async {
                let my_turn = turn.clone().lock_owned().await;
                let ticket = self.cache.as_ref().map(|cache| cache.begin_write(plugin, key));
                let storage = self.storage.clone();
                let (plugin, key, max_keys) =
                    (plugin.to_owned(), key.to_owned(), self.limits.max_keys);
                let now_us = now_micros();
                let entry = KvEntry { value: value.to_owned(), updated_at_us: now_us };
                let value = value.to_owned();
                let set = async move {
                    let _turn = my_turn;
                    storage.kv_set(&plugin, &key, &value, max_keys, now_us).await
                };
                self.spawn_write(ticket, set, move |()| Cached::Present(entry)).await
            })
            .await;
        // Forget the plugin's turn when nobody else holds or waits for it (clones are made under
        // this lock, so the count cannot grow meanwhile).
        let mut turns = self.set_turns.lock();
        if Arc::strong_count(&turn) == 2 {
            turns.remove(plugin);
        }
        result
    }

    /// Runs the storage write `write` in a task of its own, which records its outcome in the cache
    /// (through `ticket`; `cached` says what the key holds after a success) when the write ends —
    /// even after the requester was answered `unavailable`, since a write cut short by the timeout
    /// may still complete in the database. The service's stop cancels it (the cache goes too).
    async fn spawn_write<T: Send + 'static>(
        &self,
        ticket: Option<WriteTicket>,
        write: impl Future<Output = Result<T, StorageError>> + Send + 'static,
        cached: impl FnOnce(&T) -> Cached + Send + 'static,
    ) -> Result<T, StorageError> {
        let stopping = self.stopping.clone();
        let task = self.writes.spawn(async move {
            tokio::select! {
                () = stopping.cancelled() => None,
                result = write => {
                    if let (Ok(done), Some(ticket)) = (&result, ticket) {
                        ticket.succeeded(cached(done));
                    }
                    Some(result)
                }
            }
        });
        match task.await {
            Ok(Some(result)) => result,
            Ok(None) => Err(StorageError::Unavailable("the key-value store is stopping".into())),
            Err(failed) => Err(StorageError::Database(Box::new(failed))),
        }
    }

    /// Runs one storage call within the timeout, mapping its failures to what the requester is told.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, KvError> {
        match tokio::time::timeout(self.limits.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(StorageError::TooManyKeys { max })) => Err(KvError::TooManyKeys { max }),
            Ok(Err(error)) => {
                let unavailable = error.is_unavailable();
                self.warn_storage(&error.to_string());
                Err(if unavailable { KvError::Unavailable } else { KvError::Internal })
            }
            Err(_) => {
                let timeout = self.limits.timeout;
                self.warn_storage(&format!("no answer within {} ms", timeout.as_millis()));
                Err(KvError::Unavailable)
            }
        }
    }

    fn warn_storage(&self, error: &str) {
        let mut limit = self.storage_warnings.lock();
        if let Some(suppressed) = limit.due_summary() {
            tracing::warn!(message = "more key-value storage failures were not logged", suppressed);
        }
        if limit.allow() {
            tracing::warn!(message = "a key-value request failed in storage", error);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

    use super::*;
    use crate::bus::MemoryBus;
    use crate::storage::MemoryStorage;

    #[tokio::test]
    async fn a_plain_subscriber_answers_and_counts() {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let storage = Arc::new(MemoryStorage::new());
        let kv = KvService::new(bus.clone(), storage, KvLimits::default())
            .queue_group(None)
            .start()
            .await
            .unwrap();
        let ask = |subject: &'static str, body: &'static str| {
            let bus = bus.clone();
            async move {
                let reply =
                    bus.request(subject, body.into(), Duration::from_secs(2)).await.unwrap();
                serde_json::from_slice::<Value>(reply.payload()).unwrap()
            }
        };
        assert_eq!(
            ask("rosey.db.kv.get", r#"{"plugin":"p","key":"k"}"#).await,
            json!({"found": false})
        );
        assert_eq!(ask("rosey.db.kv.nope", r#"{"plugin":"p"}"#).await["code"], "bad_request");
        let stats = kv.stats();
        assert_eq!((stats.requests, stats.errors, stats.unavailable), (2, 1, 0));
        assert_eq!((stats.cache_hits, stats.cache_misses), (0, 0), "no cache unless asked");
        kv.shutdown().await.unwrap();
    }
}
