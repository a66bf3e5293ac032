//! Storage: the audit log, the plugins' lifecycle history and the plugins' key-value store.
//!
//! [`Storage`] is the seam: embedders may bring their own. The default is [`SqlStorage`] (features
//! `sqlite` and/or `postgres`) on sqlx, with one set of migrations for both backends; [`MemoryStorage`]
//! keeps everything in memory (tests, embedders that want no database).
//!
//! Three services sit on top of any [`Storage`]:
//! - the [`RecordWriter`] takes audit and lifecycle records without ever blocking the caller, writes them
//!   in order, and keeps them in a bounded queue while the database is unreachable (an outage loses no
//!   record that fits in the queue; beyond it the oldest are dropped and counted);
//! - the [`KvService`] answers `rosey.db.kv.<get|set|delete|list>` on the bus, scoped by the plugin name
//!   the host stamped on each request, with the limits in [`KvLimits`];
//! - retention: the writer deletes records older than the retention period in the background.
//!
//! Times are microseconds since the Unix epoch ([`EpochMicros`]). Records of one node are written with
//! strictly increasing times, so "newest first" is exact within a node.

mod kv;
mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
mod writer;

use async_trait::async_trait;

pub use kv::{
    KV_CACHE_BYTES, KV_GROUP, KvError, KvHandle, KvLimits, KvService, KvServiceError, KvStats,
};
pub use memory::MemoryStorage;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::{SqlOptions, SqlStorage};
pub use writer::{
    RecordWriter, StorageSink, WriterError, WriterHandle, WriterOptions, WriterStats,
};

/// Microseconds since the Unix epoch.
pub type EpochMicros = i64;

/// The current time in [`EpochMicros`].
pub fn now_micros() -> EpochMicros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// One `!admin` command (or dashboard action) as the audit log keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// When it happened.
    pub time_us: EpochMicros,
    /// The node that handled it.
    pub node: String,
    /// Who asked (the chat user name, or `dashboard`).
    pub actor: String,
    /// The actor's rank on the chat server, when known.
    pub actor_rank: Option<f64>,
    /// The command, e.g. `reload`.
    pub command: String,
    /// Its arguments as typed, e.g. `dice-roller`.
    pub arguments: String,
    /// How it ended: `ok`, `denied`, `failed`, `cancelled`, `rate_limited`…
    pub outcome: String,
    /// A sentence for people (the reload report, the reason of a refusal).
    pub detail: Option<String>,
}

/// What happened to a plugin, as `plugin_events` keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginEventKind {
    /// An instance started and said `ready`.
    Started,
    /// An instance exited unexpectedly or was killed for a limit.
    Crashed,
    /// The supervisor restarted it after a crash.
    Restarted,
    /// It crashed too often and stays down until an operator restarts it.
    Failed,
    /// It was stopped on purpose.
    Stopped,
    /// A reload swapped in a new version.
    ReloadOk,
    /// A reload was rolled back.
    ReloadFailed,
}

impl PluginEventKind {
    /// Every kind, in the order of the docs.
    pub const ALL: [Self; 7] = [
        Self::Started,
        Self::Crashed,
        Self::Restarted,
        Self::Failed,
        Self::Stopped,
        Self::ReloadOk,
        Self::ReloadFailed,
    ];

    /// The kind as stored and shown: `started`, `crashed`, `restarted`, `failed`, `stopped`,
    /// `reload_ok`, `reload_failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Crashed => "crashed",
            Self::Restarted => "restarted",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
            Self::ReloadOk => "reload_ok",
            Self::ReloadFailed => "reload_failed",
        }
    }

    /// The kind named `name` (as [`as_str`](Self::as_str) prints it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// One row of `plugin_events`.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginEventRecord {
    /// When it happened.
    pub time_us: EpochMicros,
    /// The node running the plugin.
    pub node: String,
    /// The plugin's name.
    pub plugin: String,
    /// What happened.
    pub kind: PluginEventKind,
    /// The version concerned (for a reload, the new one).
    pub version: Option<String>,
    /// Why (crash cause, reload failure).
    pub reason: Option<String>,
    /// How long it took (reloads), in seconds.
    pub duration_seconds: Option<f64>,
}

/// A record for the [`RecordWriter`]: audit and lifecycle records share one ordered queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A row of `audit_log`.
    Audit(AuditRecord),
    /// A row of `plugin_events`.
    PluginEvent(PluginEventRecord),
}

/// A query of the audit log: newest first, at most `limit` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this actor's commands.
    pub actor: Option<String>,
    /// Only rows strictly older than this time (for paging: the last row's `time_us`).
    pub before_us: Option<EpochMicros>,
    /// At most this many rows (clamped to 1..=1000).
    pub limit: u32,
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self { actor: None, before_us: None, limit: 100 }
    }
}

/// A query of the plugin lifecycle history: newest first, at most `limit` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEventQuery {
    /// Only this plugin's events.
    pub plugin: Option<String>,
    /// Only these kinds (all when empty).
    pub kinds: Vec<PluginEventKind>,
    /// Only rows strictly older than this time (for paging: the last row's `time_us`).
    pub before_us: Option<EpochMicros>,
    /// At most this many rows (clamped to 1..=1000).
    pub limit: u32,
}

impl Default for PluginEventQuery {
    fn default() -> Self {
        Self { plugin: None, kinds: Vec::new(), before_us: None, limit: 100 }
    }
}

/// A value in the key-value store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The value as JSON text.
    pub value: String,
    /// When it was last set.
    pub updated_at_us: EpochMicros,
}

/// What [`Storage::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Rows deleted from `audit_log`.
    pub audit: u64,
    /// Rows deleted from `plugin_events`.
    pub plugin_events: u64,
}

/// What went wrong in storage. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database could not be opened or reached at start. `url` has its password replaced by `***`.
    #[error("cannot open the database at {url}: {source}")]
    Connect {
        /// The URL, redacted.
        url: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The URL names no backend this build has (e.g. `postgres://` without the `postgres` feature).
    #[error("{0}")]
    Unsupported(String),
    /// Applying the migrations failed.
    #[error("applying the database migrations failed: {0}")]
    Migrate(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database is unreachable now (connection lost, pool timed out); worth retrying later.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A `set` of a new key when the plugin already has `max` keys.
    #[error("too many keys: at most {max} per plugin")]
    TooManyKeys {
        /// The limit.
        max: u64,
    },
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StorageError {
    /// Whether retrying later may succeed (the database is unreachable rather than refusing).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Connect { .. })
    }
}

/// Where Rosey keeps its records and the plugins' keys. Implementations must be safe to call
/// concurrently; every method may fail with [`StorageError::Unavailable`] while the database is away.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The backend's name for logs and health: `sqlite`, `postgres`, `memory`…
    fn backend(&self) -> &'static str;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StorageError>;

    /// Writes `records` in order, all or none (one transaction).
    async fn write(&self, records: &[Record]) -> Result<(), StorageError>;

    /// The audit log, newest first.
    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StorageError>;

    /// The plugin lifecycle history, newest first.
    async fn plugin_events(
        &self,
        query: &PluginEventQuery,
    ) -> Result<Vec<PluginEventRecord>, StorageError>;

    /// Deletes audit and lifecycle records older than `before_us`.
    async fn prune(&self, before_us: EpochMicros) -> Result<Pruned, StorageError>;

    /// The value of `plugin`'s `key`.
    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<KvEntry>, StorageError>;

    /// Sets `plugin`'s `key` to `value` (JSON text). A new key is refused with
    /// [`StorageError::TooManyKeys`] when the plugin already has `max_keys` keys.
    async fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: &str,
        max_keys: u64,
        now_us: EpochMicros,
    ) -> Result<(), StorageError>;

    /// Deletes `plugin`'s `key`; whether it existed.
    async fn kv_delete(&self, plugin: &str, key: &str) -> Result<bool, StorageError>;

    /// `plugin`'s keys starting with `prefix` and (when given) sorting after `after`, in ascending
    /// order, at most `limit` of them.
    async fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StorageError>;

    /// How many keys `plugin` has.
    async fn kv_count(&self, plugin: &str) -> Result<u64, StorageError>;
}
