//! The audit log and the plugin lifecycle history: writing in one transaction, reading newest
//! first, pruning by age.

use sqlx::any::AnyRow;
use sqlx::{AnyPool, AssertSqlSafe, Row as _};

use super::{Failure, clamp_limit};
use crate::storage::{
    AuditQuery, AuditRecord, EpochMicros, PluginEventKind, PluginEventQuery, PluginEventRecord,
    Pruned, Record, StorageError,
};

const INSERT_AUDIT: &str = "INSERT INTO audit_log \
     (time_us, node, actor, actor_rank, command, arguments, outcome, detail) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

const INSERT_PLUGIN_EVENT: &str = "INSERT INTO plugin_events \
     (time_us, node, plugin, kind, version, reason, duration_seconds) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Writes `records` in order in one transaction: all of them or, on any error, none.
pub(super) async fn write(pool: &AnyPool, records: &[Record]) -> Result<(), Failure> {
    if records.is_empty() {
        return Ok(());
    }
    let mut transaction = pool.begin().await?;
    for record in records {
        // sqlx 0.9's Any driver sends a missing f64 to PostgreSQL as a *float4* NULL, and caches the
        // prepared statement by its text alone: a later row with a value (float8) would then be
        // refused ("incorrect binary data format"). Rows without the value skip the cache.
        let persistent = match record {
            Record::Audit(audit) => audit.actor_rank.is_some(),
            Record::PluginEvent(event) => event.duration_seconds.is_some(),
        };
        let query = match record {
            Record::Audit(audit) => sqlx::query(INSERT_AUDIT)
                .bind(audit.time_us)
                .bind(audit.node.as_str())
                .bind(audit.actor.as_str())
                .bind(audit.actor_rank)
                .bind(audit.command.as_str())
                .bind(audit.arguments.as_str())
                .bind(audit.outcome.as_str())
                .bind(audit.detail.as_deref()),
            Record::PluginEvent(event) => sqlx::query(INSERT_PLUGIN_EVENT)
                .bind(event.time_us)
                .bind(event.node.as_str())
                .bind(event.plugin.as_str())
                .bind(event.kind.as_str())
                .bind(event.version.as_deref())
                .bind(event.reason.as_deref())
                .bind(event.duration_seconds),
        };
        query.persistent(persistent).execute(&mut *transaction).await?;
    }
    transaction.commit().await?;
    Ok(())
}

/// A `WHERE` clause built from optional conditions, with `$n` placeholders numbered in the order
/// their values are bound.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    next: usize,
}

impl Conditions {
    /// The next placeholder, `$1`, `$2`, …
    fn placeholder(&mut self) -> String {
        self.next += 1;
        format!("${}", self.next)
    }

    fn push(&mut self, clause: String) {
        self.clauses.push(clause);
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

/// The audit log, newest first.
pub(super) async fn audit_log(
    pool: &AnyPool,
    query: &AuditQuery,
) -> Result<Vec<AuditRecord>, Failure> {
    let mut conditions = Conditions::default();
    if query.actor.is_some() {
        let actor = conditions.placeholder();
        conditions.push(format!("actor = {actor}"));
    }
    if query.before_us.is_some() {
        let before = conditions.placeholder();
        conditions.push(format!("time_us < {before}"));
    }
    let limit = conditions.placeholder();
    let sql = format!(
        "SELECT time_us, node, actor, actor_rank, command, arguments, outcome, detail \
         FROM audit_log{} ORDER BY time_us DESC, node DESC LIMIT {limit}",
        conditions.sql()
    );
    let mut select = sqlx::query(AssertSqlSafe(sql));
    if let Some(actor) = &query.actor {
        select = select.bind(actor.as_str());
    }
    if let Some(before) = query.before_us {
        select = select.bind(before);
    }
    let rows = select.bind(clamp_limit(query.limit)).fetch_all(pool).await?;
    rows.iter().map(audit_record).collect()
}

fn audit_record(row: &AnyRow) -> Result<AuditRecord, Failure> {
    Ok(AuditRecord {
        time_us: row.try_get(0)?,
        node: row.try_get(1)?,
        actor: row.try_get(2)?,
        actor_rank: row.try_get(3)?,
        command: row.try_get(4)?,
        arguments: row.try_get(5)?,
        outcome: row.try_get(6)?,
        detail: row.try_get(7)?,
    })
}

/// The plugin lifecycle history, newest first.
pub(super) async fn plugin_events(
    pool: &AnyPool,
    query: &PluginEventQuery,
) -> Result<Vec<PluginEventRecord>, Failure> {
    let mut conditions = Conditions::default();
    if query.plugin.is_some() {
        let plugin = conditions.placeholder();
        conditions.push(format!("plugin = {plugin}"));
    }
    if !query.kinds.is_empty() {
        let kinds: Vec<String> = query.kinds.iter().map(|_| conditions.placeholder()).collect();
        conditions.push(format!("kind IN ({})", kinds.join(", ")));
    }
    if query.before_us.is_some() {
        let before = conditions.placeholder();
        conditions.push(format!("time_us < {before}"));
    }
    let limit = conditions.placeholder();
    let sql = format!(
        "SELECT time_us, node, plugin, kind, version, reason, duration_seconds \
         FROM plugin_events{} ORDER BY time_us DESC, node DESC LIMIT {limit}",
        conditions.sql()
    );
    let mut select = sqlx::query(AssertSqlSafe(sql));
    if let Some(plugin) = &query.plugin {
        select = select.bind(plugin.as_str());
    }
    for kind in &query.kinds {
        select = select.bind(kind.as_str());
    }
    if let Some(before) = query.before_us {
        select = select.bind(before);
    }
    let rows = select.bind(clamp_limit(query.limit)).fetch_all(pool).await?;
    rows.iter().map(plugin_event_record).collect()
}

fn plugin_event_record(row: &AnyRow) -> Result<PluginEventRecord, Failure> {
    let kind: String = row.try_get(3)?;
    let kind = PluginEventKind::parse(&kind).ok_or_else(|| {
        StorageError::Database(format!("plugin_events holds an unknown kind \"{kind}\"").into())
    })?;
    Ok(PluginEventRecord {
        time_us: row.try_get(0)?,
        node: row.try_get(1)?,
        plugin: row.try_get(2)?,
        kind,
        version: row.try_get(4)?,
        reason: row.try_get(5)?,
        duration_seconds: row.try_get(6)?,
    })
}

/// Deletes the records of both tables older than `before_us`, in one transaction.
pub(super) async fn prune(pool: &AnyPool, before_us: EpochMicros) -> Result<Pruned, Failure> {
    let mut transaction = pool.begin().await?;
    let audit = sqlx::query("DELETE FROM audit_log WHERE time_us < $1")
        .bind(before_us)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
    let plugin_events = sqlx::query("DELETE FROM plugin_events WHERE time_us < $1")
        .bind(before_us)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
    transaction.commit().await?;
    Ok(Pruned { audit, plugin_events })
}
