//! [`SqlStorage`]: the [`Storage`] on SQLite or PostgreSQL, through sqlx's `Any` driver, with one set
//! of migrations (`rosey-core/migrations/`) for both.
//!
//! The SQL is written once: only `BIGINT`, `DOUBLE PRECISION` and `TEXT` columns, `$n` placeholders
//! (which SQLite accepts too) and `INSERT … ON CONFLICT`. The few places where the backends differ
//! (the sort order of keys, the per-plugin lock that makes the key limit exact on PostgreSQL) ask
//! [`Backend`].

mod keys;
mod records;

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection as _, Executor as _};

use super::{
    AuditQuery, AuditRecord, EpochMicros, KvEntry, PluginEventQuery, PluginEventRecord, Pruned,
    Record, Storage, StorageError,
};
use crate::config::SecretUrl;

/// How [`SqlStorage`] uses its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlOptions {
    /// At most this many connections (`database.pool_size`); 0 counts as 1. An in-memory SQLite
    /// database always uses one connection, since each connection would see its own database.
    /// Default 5.
    pub pool_size: u32,
    /// How long a call waits for a free (or new) connection before failing with
    /// [`StorageError::Unavailable`]. Default 1 s, so that a KV request answers within its 1 s
    /// limit when the database is gone.
    pub acquire_timeout: Duration,
    /// How long [`SqlStorage::open`] waits for the first connection. Default 10 s.
    pub connect_timeout: Duration,
    /// How long one call may take in all, connection included; beyond it the call fails with
    /// [`StorageError::Unavailable`] (a peer that stopped answering would otherwise hang it).
    /// Default 5 s.
    pub query_timeout: Duration,
}

impl Default for SqlOptions {
    fn default() -> Self {
        Self {
            pool_size: 5,
            acquire_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(5),
        }
    }
}

/// Which database a [`SqlStorage`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend named by `url`'s scheme, when this build has it.
    fn of_url(url: &str) -> Result<Self, StorageError> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme).to_ascii_lowercase();
        let (backend, feature) = match scheme.as_str() {
            "sqlite" => (Self::Sqlite, "sqlite"),
            "postgres" | "postgresql" => (Self::Postgres, "postgres"),
            _ => {
                return Err(StorageError::Unsupported(format!(
                    "the database URL \"{}\" names no known backend: use sqlite:, postgres:// or \
                     postgresql://",
                    SecretUrl::new(url.to_owned())
                )));
            }
        };
        if !backend.compiled_in() {
            return Err(StorageError::Unsupported(format!(
                "the database URL starts with {scheme}: but this build of Rosey lacks the \
                 `{feature}` feature (rebuild with `--features {feature}`)"
            )));
        }
        Ok(backend)
    }

    fn compiled_in(self) -> bool {
        match self {
            Self::Sqlite => cfg!(feature = "sqlite"),
            Self::Postgres => cfg!(feature = "postgres"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    /// What makes text comparisons and `ORDER BY key` use byte (code point) order, as SQLite always
    /// does; PostgreSQL otherwise follows the database's collation, which depends on the server.
    fn byte_order(self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => " COLLATE \"C\"",
        }
    }
}

/// Storage in SQLite or PostgreSQL (features `sqlite`, `postgres`), with a pool of connections.
///
/// ```no_run
/// # async fn demo() -> Result<(), rosey_core::storage::StorageError> {
/// use rosey_core::storage::{SqlOptions, SqlStorage, Storage};
///
/// // Creates rosey.db in the working directory on first run, and applies the migrations.
/// let storage = SqlStorage::open("sqlite://rosey.db", SqlOptions::default()).await?;
/// storage.kv_set("quotes", "count", "3", 10_000, rosey_core::storage::now_micros()).await?;
/// assert_eq!(storage.kv_get("quotes", "count").await?.map(|e| e.value), Some("3".to_owned()));
/// storage.close().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqlStorage {
    pool: AnyPool,
    backend: Backend,
    query_timeout: Duration,
}

impl SqlStorage {
    /// Opens the database at `url` and brings its schema to the latest version.
    ///
    /// `url` is `sqlite://rosey.db` (a file relative to the working directory, created when
    /// missing unless the URL sets `mode`), `sqlite:///abs/path.db`, `sqlite::memory:`, or a
    /// `postgres://` / `postgresql://` URL. SQLite files are put in WAL mode.
    ///
    /// # Errors
    /// [`StorageError::Unsupported`] when the scheme names no backend of this build,
    /// [`StorageError::Connect`] (with the URL's password replaced by `***`) when the database
    /// cannot be reached within `connect_timeout` or refuses the connection,
    /// [`StorageError::Migrate`] when the migrations fail (e.g. the database was migrated by a
    /// newer Rosey).
    pub async fn open(url: &str, options: SqlOptions) -> Result<Self, StorageError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let secret = SecretUrl::new(url.to_owned());
        let connect_error = |source: Box<dyn std::error::Error + Send + Sync>| {
            StorageError::Connect { url: secret.redacted(), source: scrub(source, url) }
        };
        let in_memory = backend == Backend::Sqlite && is_sqlite_memory(url);
        let effective_url = match backend {
            Backend::Sqlite if !in_memory => with_create_mode(url),
            _ => url.to_owned(),
        };
        let connect_options = effective_url
            .parse::<AnyConnectOptions>()
            .map_err(|error| connect_error(error.into()))?;

        // One connection first, outside the pool: the pool retries a refused connection until its
        // timeout and then reports only "timed out", while this gives the cause.
        match tokio::time::timeout(
            options.connect_timeout,
            AnyConnection::connect_with(&connect_options),
        )
        .await
        {
            Ok(Ok(connection)) => {
                // An in-memory database vanishes with it; the pool makes its own.
                let _ = connection.close().await;
            }
            Ok(Err(error)) => return Err(connect_error(error.into())),
            Err(_elapsed) => {
                return Err(connect_error(
                    format!("no answer within {:?}", options.connect_timeout).into(),
                ));
            }
        }

        let mut pool_options = AnyPoolOptions::new()
            .max_connections(if in_memory { 1 } else { options.pool_size.max(1) })
            .acquire_timeout(options.acquire_timeout);
        if in_memory {
            // The one connection is the database: keep it.
            pool_options = pool_options.idle_timeout(None).max_lifetime(None);
        }
        if backend == Backend::Sqlite {
            // A connection to a local file does not go stale: skip the ping sqlx would make before
            // every use (half the cost of a key-value get). PostgreSQL keeps it, so connections the
            // server dropped are replaced before a request meets them.
            pool_options = pool_options.test_before_acquire(false);
            pool_options = pool_options.after_connect(|connection, _meta| {
                Box::pin(async move {
                    // WAL is persistent in the file; readers then never wait for the writer.
                    // With WAL, `synchronous = NORMAL` cannot corrupt the file; a power cut (not a
                    // crash of Rosey) may lose the last commits, for far fewer fsyncs.
                    connection.execute("PRAGMA journal_mode = WAL").await?;
                    connection.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options.connect_lazy_with(connect_options);

        let migrator = sqlx::migrate!("./migrations");
        migrator.run(&pool).await.map_err(|error| StorageError::Migrate(Box::new(error)))?;
        let schema_version = migrator.iter().map(|migration| migration.version).max().unwrap_or(0);
        tracing::info!(
            backend = backend.name(),
            url = %secret,
            schema_version,
            pool_size = pool.options().get_max_connections(),
            "storage opened"
        );
        Ok(Self { pool, backend, query_timeout: options.query_timeout })
    }

    /// Closes every connection, waiting for the calls in progress; later calls fail with
    /// [`StorageError::Unavailable`]. Dropping the last clone closes them too, but without waiting.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs one storage call under the query timeout, mapping its errors.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, StorageError> {
        match tokio::time::timeout(self.query_timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(Failure::Sql(error))) => Err(storage_error(self.backend, error)),
            Ok(Err(Failure::Storage(error))) => Err(error),
            Err(_elapsed) => Err(StorageError::Unavailable(
                format!("the database gave no answer within {:?}", self.query_timeout).into(),
            )),
        }
    }
}

/// Why a query function failed: sqlx's error, or one of ours (a refusal, bad stored data).
#[derive(Debug)]
enum Failure {
    Sql(sqlx::Error),
    Storage(StorageError),
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Self::Sql(error)
    }
}

impl From<StorageError> for Failure {
    fn from(error: StorageError) -> Self {
        Self::Storage(error)
    }
}

/// `Unavailable` for what a later retry may fix (the connection, the pool, the server going away
/// or refusing connections for now, SQLite's lock held too long); `Database` for the rest.
fn storage_error(backend: Backend, error: sqlx::Error) -> StorageError {
    let unavailable = match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| is_transient_code(backend, &code))
        }
        _ => false,
    };
    if unavailable {
        StorageError::Unavailable(Box::new(error))
    } else {
        StorageError::Database(Box::new(error))
    }
}

/// PostgreSQL SQLSTATE classes 08 (connection exception), 53 (insufficient resources, e.g. too many
/// connections) and 57P (shutting down, starting up); SQLite's `SQLITE_BUSY` and `SQLITE_LOCKED`
/// (primary or extended result codes).
fn is_transient_code(backend: Backend, code: &str) -> bool {
    match backend {
        Backend::Postgres => ["08", "53", "57P"].iter().any(|class| code.starts_with(class)),
        Backend::Sqlite => code.parse::<i32>().is_ok_and(|code| matches!(code & 0xff, 5 | 6)),
    }
}

/// `sqlite::memory:` (and `sqlite://:memory:`), which sqlx opens as a private in-memory database.
fn is_sqlite_memory(url: &str) -> bool {
    let rest = url.split_once(':').map_or("", |(_, rest)| rest);
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    path == ":memory:" || query.split('&').any(|pair| pair == "mode=memory")
}

/// The SQLite URL with `mode=rwc` added when it sets no `mode`, so the file is created on first run.
fn with_create_mode(url: &str) -> String {
    match url.split_once('?') {
        Some((_, query)) if query.split('&').any(|pair| pair.starts_with("mode=")) => {
            url.to_owned()
        }
        Some(_) => format!("{url}&mode=rwc"),
        None => format!("{url}?mode=rwc"),
    }
}

/// The error as it is, unless its text quotes the URL's password (some drivers echo parts of the
/// URL); then its text with the password replaced by `***`.
fn scrub(
    error: Box<dyn std::error::Error + Send + Sync>,
    url: &str,
) -> Box<dyn std::error::Error + Send + Sync> {
    let Some(password) = url::Url::parse(url).ok().and_then(|u| u.password().map(str::to_owned))
    else {
        return error;
    };
    let decoded = url::form_urlencoded::parse(format!("p={password}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let text = error.to_string();
    let leaks = [password.as_str(), decoded.as_str()]
        .into_iter()
        .filter(|secret| !secret.is_empty())
        .any(|secret| text.contains(secret));
    if !leaks {
        return error;
    }
    let mut text = text;
    for secret in [password.as_str(), decoded.as_str()] {
        if !secret.is_empty() {
            text = text.replace(secret, "***");
        }
    }
    text.into()
}

/// A row count as the `u64` of [`Pruned`] and [`Storage::kv_count`].
fn count(rows: i64) -> u64 {
    u64::try_from(rows).unwrap_or(0)
}

/// A query limit clamped to 1..=1000, as a bind value.
fn clamp_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, 1000))
}

#[async_trait]
impl Storage for SqlStorage {
    fn backend(&self) -> &'static str {
        self.backend.name()
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.bounded(async {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }

    async fn write(&self, records: &[Record]) -> Result<(), StorageError> {
        self.bounded(records::write(&self.pool, records)).await
    }

    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StorageError> {
        self.bounded(records::audit_log(&self.pool, query)).await
    }

    async fn plugin_events(
        &self,
        query: &PluginEventQuery,
    ) -> Result<Vec<PluginEventRecord>, StorageError> {
        self.bounded(records::plugin_events(&self.pool, query)).await
    }

    async fn prune(&self, before_us: EpochMicros) -> Result<Pruned, StorageError> {
        self.bounded(records::prune(&self.pool, before_us)).await
    }

    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<KvEntry>, StorageError> {
        self.bounded(keys::get(&self.pool, plugin, key)).await
    }

    async fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: &str,
        max_keys: u64,
        now_us: EpochMicros,
    ) -> Result<(), StorageError> {
        let entry = keys::NewEntry { plugin, key, value, now_us };
        self.bounded(keys::set(&self.pool, self.backend, entry, max_keys)).await
    }

    async fn kv_delete(&self, plugin: &str, key: &str) -> Result<bool, StorageError> {
        self.bounded(keys::delete(&self.pool, plugin, key)).await
    }

    async fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StorageError> {
        self.bounded(keys::list(&self.pool, self.backend, plugin, prefix, after, limit)).await
    }

    async fn kv_count(&self, plugin: &str) -> Result<u64, StorageError> {
        self.bounded(keys::count(&self.pool, plugin)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_the_create_mode_unless_they_set_one() {
        assert_eq!(with_create_mode("sqlite://rosey.db"), "sqlite://rosey.db?mode=rwc");
        assert_eq!(
            with_create_mode("sqlite://r.db?cache=shared"),
            "sqlite://r.db?cache=shared&mode=rwc"
        );
        assert_eq!(with_create_mode("sqlite://r.db?mode=ro"), "sqlite://r.db?mode=ro");
    }

    #[test]
    fn memory_urls_are_recognised() {
        assert!(is_sqlite_memory("sqlite::memory:"));
        assert!(is_sqlite_memory("sqlite://:memory:"));
        assert!(is_sqlite_memory("sqlite://x?mode=memory"));
        assert!(!is_sqlite_memory("sqlite://rosey.db"));
    }

    #[test]
    fn transient_codes_are_connection_and_lock_problems() {
        for code in ["08006", "57P01", "57P03", "53300"] {
            assert!(is_transient_code(Backend::Postgres, code), "{code}");
        }
        for code in ["23505", "42P01", "3D000", "28P01", "22021", "57014"] {
            assert!(!is_transient_code(Backend::Postgres, code), "{code}");
        }
        for code in ["5", "6", "261", "517"] {
            assert!(is_transient_code(Backend::Sqlite, code), "{code}");
        }
        for code in ["1", "19", "2067", "08006"] {
            assert!(!is_transient_code(Backend::Sqlite, code), "{code}");
        }
    }

    #[test]
    fn scrub_hides_a_quoted_password() {
        let url = "postgres://rosey:hunter%402@db/rosey";
        let error: Box<dyn std::error::Error + Send + Sync> =
            "bad password hunter@2 for rosey".into();
        assert_eq!(scrub(error, url).to_string(), "bad password *** for rosey");
        let error: Box<dyn std::error::Error + Send + Sync> = "refused".into();
        assert_eq!(scrub(error, url).to_string(), "refused");
    }
}
