//! [`SqlStorage`] on a real SQLite file and a real PostgreSQL database: one conformance suite for
//! every [`Storage`], run on both backends, then what is particular to SQL (files, WAL, migrations,
//! URLs, the pool).
//!
//! PostgreSQL is the server of `ROSEY_TEST_POSTGRES_URL` (default the machine's 127.0.0.1:5432);
//! each test gets a database of its own, dropped after.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rosey_core::storage::{
    AuditQuery, AuditRecord, PluginEventKind, PluginEventQuery, PluginEventRecord, Record,
    SqlOptions, SqlStorage, Storage, StorageError,
};
use rosey_testkit::postgres::TestDatabase;
use sqlx::Row as _;

// ---------------------------------------------------------------------------------------------
// The conformance suite: what every Storage promises. Written once over `Arc<dyn Storage>`.
// ---------------------------------------------------------------------------------------------

fn audit(time_us: i64, node: &str, actor: &str, command: &str) -> AuditRecord {
    AuditRecord {
        time_us,
        node: node.to_owned(),
        actor: actor.to_owned(),
        actor_rank: Some(3.0),
        command: command.to_owned(),
        arguments: format!("{command}-args"),
        outcome: "ok".to_owned(),
        detail: None,
    }
}

fn event(time_us: i64, plugin: &str, kind: PluginEventKind) -> PluginEventRecord {
    PluginEventRecord {
        time_us,
        node: "node-a".to_owned(),
        plugin: plugin.to_owned(),
        kind,
        version: None,
        reason: None,
        duration_seconds: None,
    }
}

fn audit_query(actor: Option<&str>, before_us: Option<i64>, limit: u32) -> AuditQuery {
    AuditQuery { actor: actor.map(str::to_owned), before_us, limit }
}

fn times(records: &[AuditRecord]) -> Vec<i64> {
    records.iter().map(|r| r.time_us).collect()
}

/// Every field comes back as written, newest first; equal times sort by node, descending.
pub(crate) async fn records_come_back_newest_first_with_every_field(s: Arc<dyn Storage>) {
    let full = AuditRecord {
        time_us: 1_700_000_000_000_002,
        node: "node-b".to_owned(),
        actor: "alice".to_owned(),
        actor_rank: Some(2.5),
        command: "reload".to_owned(),
        arguments: "dice-roller --force \"x\" 💬".to_owned(),
        outcome: "failed".to_owned(),
        detail: Some("probe failed: exit 3\nsecond line".to_owned()),
    };
    let bare =
        AuditRecord { actor_rank: None, detail: None, ..audit(1, "node-a", "bob", "status") };
    let tie = audit(1_700_000_000_000_002, "node-c", "carol", "list");
    let reload = PluginEventRecord {
        time_us: 1_700_000_000_000_005,
        node: "node-b".to_owned(),
        plugin: "quotes".to_owned(),
        kind: PluginEventKind::ReloadFailed,
        version: Some("1.2.0".to_owned()),
        reason: Some("probe timed out".to_owned()),
        duration_seconds: Some(0.25),
    };
    let mut records = vec![
        Record::Audit(bare.clone()),
        Record::Audit(full.clone()),
        Record::PluginEvent(reload.clone()),
        Record::Audit(tie.clone()),
    ];
    let kinds = PluginEventKind::ALL;
    for (i, kind) in kinds.into_iter().enumerate() {
        records.push(Record::PluginEvent(event(10 + i as i64, "dice", kind)));
    }
    s.write(&records).await.unwrap();
    s.write(&[]).await.unwrap();

    let log = s.audit_log(&AuditQuery::default()).await.unwrap();
    assert_eq!(log, vec![tie, full, bare]);

    let events = s.plugin_events(&PluginEventQuery::default()).await.unwrap();
    assert_eq!(events[0], reload);
    let dice: Vec<PluginEventKind> = events[1..].iter().map(|e| e.kind).collect();
    let mut newest_first = kinds.to_vec();
    newest_first.reverse();
    assert_eq!(dice, newest_first, "every kind is stored and read back");
}

/// Filters by actor, plugin and kinds; pages with `before_us`; clamps the limit to 1..=1000.
pub(crate) async fn record_queries_filter_page_and_clamp(s: Arc<dyn Storage>) {
    let mut records = Vec::new();
    for t in 1..=1001 {
        let actor = if t % 2 == 0 { "alice" } else { "bob" };
        records.push(Record::Audit(audit(t, "node-a", actor, "status")));
    }
    for (t, kind) in [
        (1, PluginEventKind::Started),
        (2, PluginEventKind::Crashed),
        (3, PluginEventKind::Restarted),
        (4, PluginEventKind::Crashed),
        (5, PluginEventKind::Stopped),
    ] {
        records.push(Record::PluginEvent(event(t, "dice", kind)));
        records.push(Record::PluginEvent(event(t, "quotes", kind)));
    }
    s.write(&records).await.unwrap();

    let alice = s.audit_log(&audit_query(Some("alice"), None, 3)).await.unwrap();
    assert_eq!(times(&alice), [1000, 998, 996]);
    assert!(alice.iter().all(|r| r.actor == "alice"));
    let next = s.audit_log(&audit_query(Some("alice"), Some(996), 2)).await.unwrap();
    assert_eq!(times(&next), [994, 992], "paging continues strictly before the last row");
    let old = s.audit_log(&audit_query(None, Some(3), 100)).await.unwrap();
    assert_eq!(times(&old), [2, 1]);
    assert!(s.audit_log(&audit_query(Some("nobody"), None, 10)).await.unwrap().is_empty());

    assert_eq!(times(&s.audit_log(&audit_query(None, None, 0)).await.unwrap()), [1001]);
    assert_eq!(s.audit_log(&audit_query(None, None, 5000)).await.unwrap().len(), 1000);

    let crashes = s
        .plugin_events(&PluginEventQuery {
            plugin: Some("dice".to_owned()),
            kinds: vec![PluginEventKind::Crashed, PluginEventKind::Stopped],
            before_us: None,
            limit: 10,
        })
        .await
        .unwrap();
    let seen: Vec<(i64, &str, PluginEventKind)> =
        crashes.iter().map(|e| (e.time_us, e.plugin.as_str(), e.kind)).collect();
    assert_eq!(
        seen,
        [
            (5, "dice", PluginEventKind::Stopped),
            (4, "dice", PluginEventKind::Crashed),
            (2, "dice", PluginEventKind::Crashed)
        ]
    );
    let page = s
        .plugin_events(&PluginEventQuery { before_us: Some(3), limit: 3, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page.iter().map(|e| e.time_us).collect::<Vec<_>>(), [2, 2, 1]);
    let none = PluginEventQuery { plugin: Some("nobody".to_owned()), ..Default::default() };
    assert!(s.plugin_events(&none).await.unwrap().is_empty());
}

/// Prune deletes what is older than the cutoff in both tables and counts it.
pub(crate) async fn prune_deletes_older_records_from_both_tables(s: Arc<dyn Storage>) {
    let mut records = Vec::new();
    for t in 1..=5 {
        records.push(Record::Audit(audit(t * 100, "node-a", "alice", "status")));
    }
    for t in 1..=3 {
        records.push(Record::PluginEvent(event(t * 100, "dice", PluginEventKind::Started)));
    }
    s.write(&records).await.unwrap();

    let pruned = s.prune(300).await.unwrap();
    assert_eq!((pruned.audit, pruned.plugin_events), (2, 2), "strictly older than the cutoff");
    assert_eq!(times(&s.audit_log(&AuditQuery::default()).await.unwrap()), [500, 400, 300]);
    let events = s.plugin_events(&PluginEventQuery::default()).await.unwrap();
    assert_eq!(events.iter().map(|e| e.time_us).collect::<Vec<_>>(), [300]);

    let again = s.prune(300).await.unwrap();
    assert_eq!((again.audit, again.plugin_events), (0, 0));
}

/// get, set (insert and update), delete and count, with values kept byte for byte.
pub(crate) async fn kv_keys_are_set_read_updated_and_deleted(s: Arc<dyn Storage>) {
    assert_eq!(s.kv_get("quotes", "q1").await.unwrap(), None);
    s.kv_set("quotes", "q1", r#"{"text":"hi \"there\" 💬","by":"alice"}"#, 10, 1_000)
        .await
        .unwrap();
    let entry = s.kv_get("quotes", "q1").await.unwrap().unwrap();
    assert_eq!(entry.value, r#"{"text":"hi \"there\" 💬","by":"alice"}"#);
    assert_eq!(entry.updated_at_us, 1_000);

    s.kv_set("quotes", "q1", "null", 10, 2_000).await.unwrap();
    let entry = s.kv_get("quotes", "q1").await.unwrap().unwrap();
    assert_eq!((entry.value.as_str(), entry.updated_at_us), ("null", 2_000));

    let big = format!("\"{}\"", "x".repeat(65_534));
    s.kv_set("quotes", "big", &big, 10, 3_000).await.unwrap();
    assert_eq!(s.kv_get("quotes", "big").await.unwrap().unwrap().value, big);
    assert_eq!(s.kv_count("quotes").await.unwrap(), 2);

    assert!(s.kv_delete("quotes", "q1").await.unwrap());
    assert!(!s.kv_delete("quotes", "q1").await.unwrap(), "a second delete finds nothing");
    assert_eq!(s.kv_get("quotes", "q1").await.unwrap(), None);
    assert_eq!(s.kv_count("quotes").await.unwrap(), 1);
}

/// A plugin sees only its own keys, even under the same key names.
pub(crate) async fn kv_keys_are_scoped_by_plugin(s: Arc<dyn Storage>) {
    s.kv_set("quotes", "shared", "1", 10, 1).await.unwrap();
    s.kv_set("dice", "shared", "2", 10, 1).await.unwrap();
    s.kv_set("dice", "only-dice", "3", 10, 1).await.unwrap();

    assert_eq!(s.kv_get("quotes", "shared").await.unwrap().unwrap().value, "1");
    assert_eq!(s.kv_get("dice", "shared").await.unwrap().unwrap().value, "2");
    assert_eq!(s.kv_get("quotes", "only-dice").await.unwrap(), None);
    assert_eq!(s.kv_list("quotes", "", None, 100).await.unwrap(), ["shared"]);
    assert_eq!((s.kv_count("quotes").await.unwrap(), s.kv_count("dice").await.unwrap()), (1, 2));
    assert!(!s.kv_delete("quotes", "only-dice").await.unwrap());
    assert_eq!(s.kv_count("dice").await.unwrap(), 2);
    assert_eq!(s.kv_count("nobody").await.unwrap(), 0);
}

/// At `max_keys` keys a new key is refused, an existing one still updates, and a delete makes room.
pub(crate) async fn kv_refuses_a_new_key_at_exactly_max_keys(s: Arc<dyn Storage>) {
    for key in ["a", "b", "c"] {
        s.kv_set("quotes", key, "1", 3, 1).await.unwrap();
    }
    let refused = s.kv_set("quotes", "d", "1", 3, 2).await.unwrap_err();
    assert!(matches!(refused, StorageError::TooManyKeys { max: 3 }), "{refused:?}");
    assert!(!refused.is_unavailable());
    assert_eq!(s.kv_get("quotes", "d").await.unwrap(), None);

    s.kv_set("quotes", "c", "2", 3, 3).await.unwrap();
    assert_eq!(s.kv_get("quotes", "c").await.unwrap().unwrap().value, "2");
    s.kv_set("dice", "d", "1", 3, 3).await.unwrap(); // another plugin has its own count

    assert!(s.kv_delete("quotes", "a").await.unwrap());
    s.kv_set("quotes", "d", "1", 3, 4).await.unwrap();
    assert_eq!(s.kv_count("quotes").await.unwrap(), 3);
    let zero = s.kv_set("quotes", "e", "1", 0, 5).await.unwrap_err();
    assert!(matches!(zero, StorageError::TooManyKeys { max: 0 }), "{zero:?}");
}

/// Concurrent sets of new keys never take a plugin past `max_keys`.
pub(crate) async fn kv_concurrent_new_keys_never_exceed_max_keys(s: Arc<dyn Storage>) {
    let sets: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.kv_set("quotes", &format!("k{i:02}"), "1", 5, i).await })
        })
        .collect();
    let mut accepted = 0;
    for set in sets {
        match set.await.unwrap() {
            Ok(()) => accepted += 1,
            Err(StorageError::TooManyKeys { max: 5 }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(accepted, 5);
    assert_eq!(s.kv_count("quotes").await.unwrap(), 5);
}

/// The prefix is literal text: `%` and `_` match only themselves, and case matters.
pub(crate) async fn kv_list_prefix_is_literal_and_case_sensitive(s: Arc<dyn Storage>) {
    for key in ["a%b", "axb", "a_c", "abc", "Abc", "ab", "é1", "é2", "e1"] {
        s.kv_set("quotes", key, "1", 100, 1).await.unwrap();
    }
    assert_eq!(s.kv_list("quotes", "a%", None, 100).await.unwrap(), ["a%b"]);
    assert_eq!(s.kv_list("quotes", "a_", None, 100).await.unwrap(), ["a_c"]);
    assert_eq!(s.kv_list("quotes", "ab", None, 100).await.unwrap(), ["ab", "abc"]);
    assert_eq!(s.kv_list("quotes", "A", None, 100).await.unwrap(), ["Abc"]);
    assert_eq!(s.kv_list("quotes", "é", None, 100).await.unwrap(), ["é1", "é2"]);
    assert!(s.kv_list("quotes", "abcd", None, 100).await.unwrap().is_empty());
    assert!(s.kv_list("quotes", "zz", None, 100).await.unwrap().is_empty());
}

/// Keys come in byte order (upper case before lower case, ASCII before accents), and `after` pages
/// through them without gaps or repeats.
pub(crate) async fn kv_list_pages_with_after_in_byte_order(s: Arc<dyn Storage>) {
    for key in ["b", "é", "A", "a", "B", "z", "a1", "a10", "a2"] {
        s.kv_set("quotes", key, "1", 100, 1).await.unwrap();
    }
    let all = s.kv_list("quotes", "", None, 100).await.unwrap();
    assert_eq!(all, ["A", "B", "a", "a1", "a10", "a2", "b", "z", "é"]);

    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.kv_list("quotes", "", after.as_deref(), 4).await.unwrap();
        after = page.last().cloned();
        let full = page.len() == 4;
        pages.push(page);
        if !full {
            break;
        }
    }
    assert_eq!(pages, [vec!["A", "B", "a", "a1"], vec!["a10", "a2", "b", "z"], vec!["é"]]);

    let prefixed = s.kv_list("quotes", "a", Some("a1"), 2).await.unwrap();
    assert_eq!(prefixed, ["a10", "a2"]);
    assert_eq!(s.kv_list("quotes", "", Some("zz"), 10).await.unwrap(), ["é"]);
    assert_eq!(s.kv_list("quotes", "", None, 0).await.unwrap(), ["A"], "limit 0 counts as 1");
    assert!(s.kv_list("quotes", "", Some("é"), 10).await.unwrap().is_empty());
}

/// `ping` answers while the database is there.
pub(crate) async fn ping_answers(s: Arc<dyn Storage>) {
    s.ping().await.unwrap();
}

/// Instantiates every conformance case as a `#[tokio::test]`; `$open` is an async expression giving
/// `(Arc<dyn Storage>, guard)`, the guard removing the database when dropped.
macro_rules! conformance_suite {
    ($open:expr) => {
        conformance_suite!(@cases $open;
            records_come_back_newest_first_with_every_field,
            record_queries_filter_page_and_clamp,
            prune_deletes_older_records_from_both_tables,
            kv_keys_are_set_read_updated_and_deleted,
            kv_keys_are_scoped_by_plugin,
            kv_refuses_a_new_key_at_exactly_max_keys,
            kv_concurrent_new_keys_never_exceed_max_keys,
            kv_list_prefix_is_literal_and_case_sensitive,
            kv_list_pages_with_after_in_byte_order,
            ping_answers,
        );
    };
    (@cases $open:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (storage, _guard) = $open.await;
                crate::storage::$case(storage).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Harnesses.
// ---------------------------------------------------------------------------------------------

/// A directory of its own under the system's temporary directory, removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("rosey-storage-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// `sqlite://` URL of `name` in this directory.
    fn sqlite_url(&self, name: &str) -> String {
        format!("sqlite://{}", self.0.join(name).display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn open_memory() -> (Arc<dyn Storage>, ()) {
    (Arc::new(rosey_core::storage::MemoryStorage::new()), ())
}

pub(crate) async fn open_sqlite() -> (Arc<dyn Storage>, TempDir) {
    let dir = TempDir::new();
    let storage =
        SqlStorage::open(&dir.sqlite_url("rosey.db"), SqlOptions::default()).await.unwrap();
    (Arc::new(storage), dir)
}

pub(crate) async fn open_postgres() -> (Arc<dyn Storage>, TestDatabase) {
    let db = TestDatabase::create().await;
    let storage = SqlStorage::open(db.url(), SqlOptions::default()).await.unwrap();
    (Arc::new(storage), db)
}

/// A plain sqlx pool on `url`, for looking at the database behind the storage's back.
async fn raw_pool(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new().max_connections(1).connect(url).await.unwrap()
}

/// Brings a fresh database to migration 1 only (as the first release left it), with a record and a
/// key in it, then opens it with [`SqlStorage`]: the upgrade to the latest migration keeps both.
async fn upgrade_from_the_first_migration_keeps_the_data(url: &str) -> SqlStorage {
    let old = raw_pool(url).await;
    sqlx::migrate!("./migrations").run_to(1, &old).await.unwrap();
    sqlx::query(
        "INSERT INTO audit_log (time_us, node, actor, actor_rank, command, arguments, outcome, \
         detail) VALUES (42, 'node-a', 'alice', NULL, 'reload', 'quotes', 'ok', NULL)",
    )
    .execute(&old)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO kv (plugin, key, value, updated_at_us) VALUES ('quotes', 'q1', '\"hi\"', 7)",
    )
    .execute(&old)
    .await
    .unwrap();
    let version: i64 = sqlx::query("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&old)
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 1);
    old.close().await;

    let storage = SqlStorage::open(url, SqlOptions::default()).await.unwrap();
    let log = storage.audit_log(&AuditQuery::default()).await.unwrap();
    assert_eq!(times(&log), [42]);
    assert_eq!((log[0].actor.as_str(), log[0].arguments.as_str()), ("alice", "quotes"));
    assert_eq!(storage.kv_get("quotes", "q1").await.unwrap().unwrap().value, "\"hi\"");

    let new = raw_pool(url).await;
    let version: i64 = sqlx::query("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&new)
        .await
        .unwrap()
        .get(0);
    let latest = sqlx::migrate!("./migrations").iter().map(|m| m.version).max().unwrap();
    assert_eq!((version, latest), (2, 2));
    new.close().await;
    storage
}

// ---------------------------------------------------------------------------------------------
// In memory: the same contract.
// ---------------------------------------------------------------------------------------------

mod memory {
    use super::*;

    conformance_suite!(open_memory());
}

// ---------------------------------------------------------------------------------------------
// SQLite.
// ---------------------------------------------------------------------------------------------

mod sqlite {
    use super::*;

    conformance_suite!(open_sqlite());

    #[tokio::test]
    async fn the_file_is_created_on_first_open_and_put_in_wal_mode() {
        let dir = TempDir::new();
        let file = dir.path().join("rosey.db");
        assert!(!file.exists());
        let storage =
            SqlStorage::open(&dir.sqlite_url("rosey.db"), SqlOptions::default()).await.unwrap();
        assert_eq!(storage.backend(), "sqlite");
        assert!(file.is_file(), "rosey.db was created");
        storage.close().await;

        let pool = raw_pool(&dir.sqlite_url("rosey.db")).await;
        let mode: String =
            sqlx::query("PRAGMA journal_mode").fetch_one(&pool).await.unwrap().get(0);
        assert_eq!(mode, "wal");
        pool.close().await;
    }

    #[tokio::test]
    async fn a_restart_keeps_records_and_keys() {
        let dir = TempDir::new();
        let url = dir.sqlite_url("rosey.db");
        let first = SqlStorage::open(&url, SqlOptions::default()).await.unwrap();
        first.write(&[Record::Audit(audit(5, "node-a", "alice", "reload"))]).await.unwrap();
        first.kv_set("quotes", "q1", "\"saved\"", 10, 6).await.unwrap();
        first.close().await;
        drop(first);

        let second = SqlStorage::open(&url, SqlOptions::default()).await.unwrap();
        assert_eq!(times(&second.audit_log(&AuditQuery::default()).await.unwrap()), [5]);
        assert_eq!(second.kv_get("quotes", "q1").await.unwrap().unwrap().value, "\"saved\"");
    }

    #[tokio::test]
    async fn a_database_of_the_first_migration_is_upgraded_with_its_rows() {
        let dir = TempDir::new();
        let url = format!("{}?mode=rwc", dir.sqlite_url("old.db"));
        let storage = upgrade_from_the_first_migration_keeps_the_data(&url).await;
        storage.close().await;

        let pool = raw_pool(&url).await;
        let indexes: Vec<String> = sqlx::query(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'audit_log%' \
             ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
        assert_eq!(indexes, ["audit_log_actor_time", "audit_log_time"]);
        pool.close().await;
    }

    #[tokio::test]
    async fn an_in_memory_database_is_one_database_for_every_call() {
        let options = SqlOptions { pool_size: 4, ..SqlOptions::default() };
        let storage = Arc::new(SqlStorage::open("sqlite::memory:", options).await.unwrap());
        let sets: Vec<_> = (0..8)
            .map(|i| {
                let s = storage.clone();
                tokio::spawn(async move { s.kv_set("p", &format!("k{i}"), "1", 100, 1).await })
            })
            .collect();
        for set in sets {
            set.await.unwrap().unwrap();
        }
        assert_eq!(storage.kv_count("p").await.unwrap(), 8);
    }

    #[tokio::test]
    async fn a_closed_storage_answers_unavailable() {
        let dir = TempDir::new();
        let storage =
            SqlStorage::open(&dir.sqlite_url("rosey.db"), SqlOptions::default()).await.unwrap();
        storage.close().await;
        let error = storage.kv_get("p", "k").await.unwrap_err();
        assert!(error.is_unavailable(), "{error:?}");
    }

    #[tokio::test]
    async fn a_file_in_a_missing_directory_is_a_connect_error() {
        let dir = TempDir::new();
        let url = format!("sqlite://{}/missing/rosey.db", dir.path().display());
        let error = SqlStorage::open(&url, SqlOptions::default()).await.unwrap_err();
        assert!(matches!(error, StorageError::Connect { .. }), "{error:?}");
        assert!(error.to_string().contains("missing/rosey.db"), "{error}");
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL.
// ---------------------------------------------------------------------------------------------

mod postgres {
    use super::*;

    conformance_suite!(open_postgres());

    #[tokio::test]
    async fn a_database_of_the_first_migration_is_upgraded_with_its_rows() {
        let db = TestDatabase::create().await;
        let storage = upgrade_from_the_first_migration_keeps_the_data(db.url()).await;
        assert_eq!(storage.backend(), "postgres");
        storage.close().await;

        let pool = raw_pool(db.url()).await;
        let indexes: Vec<String> = sqlx::query(
            "SELECT indexname::TEXT FROM pg_indexes WHERE tablename = 'plugin_events' ORDER BY indexname",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
        assert_eq!(indexes, ["plugin_events_plugin_time", "plugin_events_time"]);
        pool.close().await;
        db.drop_now().await;
    }

    #[tokio::test]
    async fn a_failed_connection_names_the_url_without_its_password() {
        let db = TestDatabase::create().await;
        let mut url = url::Url::parse(db.url()).unwrap();
        url.set_username("rosey_no_such_role").unwrap();
        url.set_password(Some("hunter2-secret")).unwrap();
        let started = Instant::now();
        let error = SqlStorage::open(url.as_str(), SqlOptions::default()).await.unwrap_err();
        assert!(matches!(error, StorageError::Connect { .. }), "{error:?}");
        let text = format!("{error} / {error:?}");
        assert!(text.contains("rosey_no_such_role:***@"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(2));

        // Nobody listening: refused at once, not after the connect timeout.
        let started = Instant::now();
        let closed_port = "postgres://rosey:hunter2-secret@127.0.0.1:1/rosey";
        let error = SqlStorage::open(closed_port, SqlOptions::default()).await.unwrap_err();
        assert!(error.is_unavailable(), "{error:?}");
        let text = format!("{error} / {error:?}");
        assert!(text.contains("postgres://rosey:***@127.0.0.1:1/rosey"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn the_pool_never_opens_more_than_pool_size_connections() {
        let db = TestDatabase::create().await;
        let options = SqlOptions { pool_size: 2, ..SqlOptions::default() };
        let storage = Arc::new(SqlStorage::open(db.url(), options).await.unwrap());
        let work: Vec<_> = (0..30)
            .map(|i| {
                let s = storage.clone();
                tokio::spawn(async move {
                    s.kv_set("p", &format!("k{i}"), "1", 100, 1).await.unwrap();
                    s.kv_list("p", "k", None, 100).await.unwrap();
                })
            })
            .collect();
        let admin = raw_pool(db.admin_url()).await;
        let mut most = 0;
        for task in work {
            let open: i64 = sqlx::query("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1")
                .bind(db.name())
                .fetch_one(&admin)
                .await
                .unwrap()
                .get(0);
            most = most.max(open);
            task.await.unwrap();
        }
        assert!((1..=2).contains(&most), "{most} connections open at once");
        assert_eq!(storage.kv_count("p").await.unwrap(), 30);
        admin.close().await;
    }

    #[tokio::test]
    async fn connections_killed_by_the_server_are_replaced() {
        let db = TestDatabase::create().await;
        let storage = SqlStorage::open(db.url(), SqlOptions::default()).await.unwrap();
        storage.kv_set("p", "k", "1", 10, 1).await.unwrap();
        let admin = raw_pool(db.admin_url()).await;
        let killed: Vec<bool> = sqlx::query(
            "SELECT pg_terminate_backend(pid)::TEXT FROM pg_stat_activity WHERE datname = $1",
        )
        .bind(db.name())
        .fetch_all(&admin)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<String, _>(0) == "true")
        .collect();
        assert!(!killed.is_empty());
        admin.close().await;

        // The pool tests each idle connection before handing it out, so the next call reconnects.
        let started = Instant::now();
        let value = loop {
            match storage.kv_get("p", "k").await {
                Ok(entry) => break entry.unwrap().value,
                Err(error)
                    if error.is_unavailable() && started.elapsed() < Duration::from_secs(5) => {}
                Err(error) => panic!("{error:?}"),
            }
        };
        assert_eq!(value, "1");
    }

    #[tokio::test]
    async fn a_record_the_database_refuses_fails_the_whole_write() {
        let (storage, _db) = open_postgres().await;
        let mut refused = audit(2, "node-a", "alice", "say");
        refused.arguments = "nul \0 byte".to_owned(); // PostgreSQL text cannot hold NUL
        let error = storage
            .write(&[Record::Audit(audit(1, "node-a", "alice", "ok")), Record::Audit(refused)])
            .await
            .unwrap_err();
        assert!(matches!(error, StorageError::Database(_)), "{error:?}");
        assert!(!error.is_unavailable(), "retrying would never help");
        assert!(storage.audit_log(&AuditQuery::default()).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn an_unknown_scheme_is_unsupported() {
    let error = SqlStorage::open("mysql://rosey:hunter2@db/rosey", SqlOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, StorageError::Unsupported(_)), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("sqlite:, postgres:// or postgresql://"), "{text}");
    assert!(text.contains("mysql://rosey:***@db/rosey") && !text.contains("hunter2"), "{text}");
}
