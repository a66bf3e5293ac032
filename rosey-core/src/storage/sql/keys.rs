//! The plugins' key-value store: one row per (plugin, key), the value as JSON text.

use sqlx::{AnyPool, AssertSqlSafe, Row as _};

use super::{Backend, Failure, clamp_limit};
use crate::storage::{EpochMicros, KvEntry, StorageError};

/// Inserts or updates a key, unless the key is new and the plugin already has `$5` keys: one
/// statement, so the check and the insert see the same table.
const UPSERT_WITHIN_LIMIT: &str = "INSERT INTO kv (plugin, key, value, updated_at_us) \
     SELECT $1, $2, $3, $4 \
     WHERE EXISTS (SELECT 1 FROM kv WHERE plugin = $1 AND key = $2) \
        OR (SELECT COUNT(*) FROM kv WHERE plugin = $1) < $5 \
     ON CONFLICT (plugin, key) DO UPDATE \
     SET value = excluded.value, updated_at_us = excluded.updated_at_us";

/// Serialises the sets of one plugin until the end of the transaction. PostgreSQL runs concurrent
/// statements on snapshots taken when each began, so two new keys could both see room for one;
/// SQLite has a single writer and needs no lock.
const LOCK_PLUGIN_KEYS: &str = "SELECT 1 FROM pg_advisory_xact_lock(hashtext($1))";

/// A key to set.
pub(super) struct NewEntry<'a> {
    pub(super) plugin: &'a str,
    pub(super) key: &'a str,
    pub(super) value: &'a str,
    pub(super) now_us: EpochMicros,
}

pub(super) async fn get(
    pool: &AnyPool,
    plugin: &str,
    key: &str,
) -> Result<Option<KvEntry>, Failure> {
    let row = sqlx::query("SELECT value, updated_at_us FROM kv WHERE plugin = $1 AND key = $2")
        .bind(plugin)
        .bind(key)
        .fetch_optional(pool)
        .await?;
    match row {
        Some(row) => Ok(Some(KvEntry { value: row.try_get(0)?, updated_at_us: row.try_get(1)? })),
        None => Ok(None),
    }
}

pub(super) async fn set(
    pool: &AnyPool,
    backend: Backend,
    entry: NewEntry<'_>,
    max_keys: u64,
) -> Result<(), Failure> {
    let limit = i64::try_from(max_keys).unwrap_or(i64::MAX);
    let upsert = sqlx::query(UPSERT_WITHIN_LIMIT)
        .bind(entry.plugin)
        .bind(entry.key)
        .bind(entry.value)
        .bind(entry.now_us)
        .bind(limit);
    let written = match backend {
        Backend::Sqlite => upsert.execute(pool).await?.rows_affected(),
        Backend::Postgres => {
            let mut transaction = pool.begin().await?;
            sqlx::query(LOCK_PLUGIN_KEYS).bind(entry.plugin).execute(&mut *transaction).await?;
            let written = upsert.execute(&mut *transaction).await?.rows_affected();
            transaction.commit().await?;
            written
        }
    };
    if written == 0 {
        return Err(StorageError::TooManyKeys { max: max_keys }.into());
    }
    Ok(())
}

pub(super) async fn delete(pool: &AnyPool, plugin: &str, key: &str) -> Result<bool, Failure> {
    let deleted = sqlx::query("DELETE FROM kv WHERE plugin = $1 AND key = $2")
        .bind(plugin)
        .bind(key)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(deleted > 0)
}

/// Keys in byte order (code point order), on both backends. The prefix is compared with `substr`,
/// not `LIKE`, so `%` and `_` are literal and case matters.
pub(super) async fn list(
    pool: &AnyPool,
    backend: Backend,
    plugin: &str,
    prefix: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<String>, Failure> {
    let byte_order = backend.byte_order();
    let mut sql = String::from("SELECT key FROM kv WHERE plugin = $1");
    let mut next = 2;
    if !prefix.is_empty() {
        sql.push_str(&format!(" AND substr(key, 1, length(${next})) = ${next}"));
        next += 1;
    }
    if after.is_some() {
        sql.push_str(&format!(" AND key{byte_order} > ${next}"));
        next += 1;
    }
    sql.push_str(&format!(" ORDER BY key{byte_order} LIMIT ${next}"));
    let mut select = sqlx::query(AssertSqlSafe(sql)).bind(plugin);
    if !prefix.is_empty() {
        select = select.bind(prefix);
    }
    if let Some(after) = after {
        select = select.bind(after);
    }
    let rows = select.bind(clamp_limit(limit)).fetch_all(pool).await?;
    Ok(rows.iter().map(|row| row.try_get(0)).collect::<Result<_, _>>()?)
}

pub(super) async fn count(pool: &AnyPool, plugin: &str) -> Result<u64, Failure> {
    let keys: i64 = sqlx::query("SELECT COUNT(*) FROM kv WHERE plugin = $1")
        .bind(plugin)
        .fetch_one(pool)
        .await?
        .try_get(0)?;
    Ok(super::count(keys))
}
