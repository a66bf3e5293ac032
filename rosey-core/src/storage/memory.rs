//! [`MemoryStorage`]: every table in memory, for tests and for embedders who want no database.

use std::collections::BTreeMap;
use std::ops::Bound;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{
    AuditQuery, AuditRecord, EpochMicros, KvEntry, PluginEventQuery, PluginEventRecord, Pruned,
    Record, Storage, StorageError,
};

/// The most rows a query returns, as for the SQL storage.
const MAX_QUERY_ROWS: u32 = 1000;

/// A complete [`Storage`] kept in memory (backend `memory`): same semantics as the SQL storage
/// (newest first, limits clamped to 1..=1000, keys in byte order, `max_keys` enforced atomically),
/// nothing survives the process. Never fails and never waits. Cheap to create.
///
/// ```
/// use rosey_core::storage::{MemoryStorage, Storage};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rosey_core::storage::StorageError> {
/// let storage = MemoryStorage::new();
/// storage.kv_set("quotes", "count", "3", 10_000, 0).await?;
/// assert_eq!(storage.kv_get("quotes", "count").await?.map(|e| e.value), Some("3".to_owned()));
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct MemoryStorage {
    tables: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    /// Keyed by (plugin, key): `String` orders by bytes, as the SQL `kv` table's primary key does.
    kv: BTreeMap<(String, String), KvEntry>,
    audit: Vec<AuditRecord>,
    plugin_events: Vec<PluginEventRecord>,
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }
}

fn clamp_limit(limit: u32) -> usize {
    limit.clamp(1, MAX_QUERY_ROWS) as usize
}

/// Newest first: time descending, ties by node descending.
fn newest_first<T>(rows: &mut [&T], key: impl Fn(&T) -> (EpochMicros, &str)) {
    rows.sort_by(|a, b| key(b).cmp(&key(a)));
}

#[async_trait]
impl Storage for MemoryStorage {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), StorageError> {
        Ok(())
    }

    async fn write(&self, records: &[Record]) -> Result<(), StorageError> {
        let mut tables = self.tables.lock();
        for record in records {
            match record {
                Record::Audit(audit) => tables.audit.push(audit.clone()),
                Record::PluginEvent(event) => tables.plugin_events.push(event.clone()),
            }
        }
        Ok(())
    }

    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StorageError> {
        let tables = self.tables.lock();
        let mut rows: Vec<&AuditRecord> = tables
            .audit
            .iter()
            .filter(|r| query.actor.as_ref().is_none_or(|actor| &r.actor == actor))
            .filter(|r| query.before_us.is_none_or(|before| r.time_us < before))
            .collect();
        newest_first(&mut rows, |r| (r.time_us, r.node.as_str()));
        Ok(rows.into_iter().take(clamp_limit(query.limit)).cloned().collect())
    }

    async fn plugin_events(
        &self,
        query: &PluginEventQuery,
    ) -> Result<Vec<PluginEventRecord>, StorageError> {
        let tables = self.tables.lock();
        let mut rows: Vec<&PluginEventRecord> = tables
            .plugin_events
            .iter()
            .filter(|r| query.plugin.as_ref().is_none_or(|plugin| &r.plugin == plugin))
            .filter(|r| query.kinds.is_empty() || query.kinds.contains(&r.kind))
            .filter(|r| query.before_us.is_none_or(|before| r.time_us < before))
            .collect();
        newest_first(&mut rows, |r| (r.time_us, r.node.as_str()));
        Ok(rows.into_iter().take(clamp_limit(query.limit)).cloned().collect())
    }

    async fn prune(&self, before_us: EpochMicros) -> Result<Pruned, StorageError> {
        let mut tables = self.tables.lock();
        let (audit, events) = (tables.audit.len(), tables.plugin_events.len());
        tables.audit.retain(|r| r.time_us >= before_us);
        tables.plugin_events.retain(|r| r.time_us >= before_us);
        Ok(Pruned {
            audit: (audit - tables.audit.len()) as u64,
            plugin_events: (events - tables.plugin_events.len()) as u64,
        })
    }

    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<KvEntry>, StorageError> {
        Ok(self.tables.lock().kv.get(&(plugin.to_owned(), key.to_owned())).cloned())
    }

    async fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: &str,
        max_keys: u64,
        now_us: EpochMicros,
    ) -> Result<(), StorageError> {
        let mut tables = self.tables.lock();
        let entry = KvEntry { value: value.to_owned(), updated_at_us: now_us };
        let id = (plugin.to_owned(), key.to_owned());
        if let Some(existing) = tables.kv.get_mut(&id) {
            *existing = entry;
            return Ok(());
        }
        if count(&tables, plugin) >= max_keys {
            return Err(StorageError::TooManyKeys { max: max_keys });
        }
        tables.kv.insert(id, entry);
        Ok(())
    }

    async fn kv_delete(&self, plugin: &str, key: &str) -> Result<bool, StorageError> {
        Ok(self.tables.lock().kv.remove(&(plugin.to_owned(), key.to_owned())).is_some())
    }

    async fn kv_list(
        &self,
        plugin: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StorageError> {
        let tables = self.tables.lock();
        let start = match after {
            Some(after) if after >= prefix => {
                Bound::Excluded((plugin.to_owned(), after.to_owned()))
            }
            _ => Bound::Included((plugin.to_owned(), prefix.to_owned())),
        };
        Ok(tables
            .kv
            .range((start, Bound::Unbounded))
            .map(|((owner, key), _)| (owner, key))
            .take_while(|(owner, key)| *owner == plugin && key.starts_with(prefix))
            .take(clamp_limit(limit))
            .map(|(_, key)| key.clone())
            .collect())
    }

    async fn kv_count(&self, plugin: &str) -> Result<u64, StorageError> {
        Ok(count(&self.tables.lock(), plugin))
    }
}

fn count(tables: &Tables, plugin: &str) -> u64 {
    let start = Bound::Included((plugin.to_owned(), String::new()));
    tables.kv.range((start, Bound::Unbounded)).take_while(|((owner, _), _)| owner == plugin).count()
        as u64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

    use super::*;
    use crate::storage::PluginEventKind;

    fn audit(time_us: EpochMicros, node: &str, actor: &str) -> Record {
        Record::Audit(AuditRecord {
            time_us,
            node: node.to_owned(),
            actor: actor.to_owned(),
            actor_rank: None,
            command: "reload".to_owned(),
            arguments: String::new(),
            outcome: "ok".to_owned(),
            detail: None,
        })
    }

    fn event(time_us: EpochMicros, plugin: &str, kind: PluginEventKind) -> Record {
        Record::PluginEvent(PluginEventRecord {
            time_us,
            node: "n".to_owned(),
            plugin: plugin.to_owned(),
            kind,
            version: None,
            reason: None,
            duration_seconds: None,
        })
    }

    #[tokio::test]
    async fn queries_are_newest_first_filtered_and_paged() {
        let s = MemoryStorage::new();
        s.write(&[audit(1, "a", "alice"), audit(3, "a", "bob"), audit(2, "b", "alice")])
            .await
            .unwrap();
        s.write(&[audit(2, "c", "alice")]).await.unwrap();
        let all = s.audit_log(&AuditQuery::default()).await.unwrap();
        let order: Vec<(i64, &str)> = all.iter().map(|r| (r.time_us, r.node.as_str())).collect();
        assert_eq!(order, [(3, "a"), (2, "c"), (2, "b"), (1, "a")]);

        let alice = AuditQuery { actor: Some("alice".to_owned()), before_us: Some(2), limit: 0 };
        let page = s.audit_log(&alice).await.unwrap();
        assert_eq!(page.len(), 1, "limit 0 is clamped to 1");
        assert_eq!(page[0].time_us, 1);

        s.write(&[
            event(1, "dice", PluginEventKind::Started),
            event(2, "dice", PluginEventKind::Crashed),
            event(3, "8ball", PluginEventKind::Crashed),
        ])
        .await
        .unwrap();
        let crashes = PluginEventQuery {
            plugin: Some("dice".to_owned()),
            kinds: vec![PluginEventKind::Crashed],
            ..PluginEventQuery::default()
        };
        let rows = s.plugin_events(&crashes).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.time_us).collect::<Vec<_>>(), [2]);

        let pruned = s.prune(2).await.unwrap();
        assert_eq!(pruned, Pruned { audit: 1, plugin_events: 1 });
        assert_eq!(s.audit_log(&AuditQuery::default()).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn keys_are_scoped_listed_in_byte_order_and_capped() {
        let s = MemoryStorage::new();
        for key in ["b", "a/2", "a/1", "a", "é"] {
            s.kv_set("p", key, "1", 5, 7).await.unwrap();
        }
        s.kv_set("q", "a/0", "1", 5, 7).await.unwrap();
        s.kv_set("o", "a/9", "1", 5, 7).await.unwrap();
        assert_eq!(s.kv_list("p", "", None, 100).await.unwrap(), ["a", "a/1", "a/2", "b", "é"]);
        assert_eq!(s.kv_list("p", "a/", None, 100).await.unwrap(), ["a/1", "a/2"]);
        assert_eq!(s.kv_list("p", "a/", Some("a/1"), 100).await.unwrap(), ["a/2"]);
        assert_eq!(s.kv_list("p", "a/", Some("0"), 1).await.unwrap(), ["a/1"]);
        assert_eq!(s.kv_list("p", "", Some("b"), 100).await.unwrap(), ["é"]);
        assert_eq!(s.kv_count("p").await.unwrap(), 5);

        assert!(matches!(
            s.kv_set("p", "new", "1", 5, 8).await,
            Err(StorageError::TooManyKeys { max: 5 })
        ));
        s.kv_set("p", "a", "2", 5, 9).await.unwrap();
        assert_eq!(
            s.kv_get("p", "a").await.unwrap(),
            Some(KvEntry { value: "2".to_owned(), updated_at_us: 9 })
        );
        assert!(s.kv_delete("p", "a").await.unwrap());
        assert!(!s.kv_delete("p", "a").await.unwrap());
        assert_eq!(s.kv_get("q", "a/1").await.unwrap(), None);
    }
}
