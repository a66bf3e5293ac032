//! The audit log on every storage backend: one row per admin command, allowed or refused.

use std::sync::Arc;

use rosey_core::storage::{SqlOptions, SqlStorage, Storage};
use rosey_testkit::postgres::TestDatabase;

use crate::support::{Ranks, Setup, memory_storage, row, unique};

/// A denied command, a rate-limited one, an invalid one, a request and its confirmation: the rows
/// and their fields.
async fn audited(storage: Arc<dyn Storage>) {
    let ranks = Ranks::with(&[("alice", 3.0), ("mallory", 0.0)]);
    let bed = Setup::console().ranks(ranks).storage(storage).start().await;
    bed.admin("mallory", "reload echo").await;
    bed.admin("alice", "restart echo").await;
    bed.admin("alice", "list").await;
    bed.say("alice", "yes").await;
    let rows = bed.audit().await;
    let summary: Vec<_> = rows
        .iter()
        .map(|r| (r.actor.clone(), r.command.clone(), r.arguments.clone(), r.outcome.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            row("mallory", "reload", "echo", "denied"),
            row("alice", "restart", "echo", "pending"),
            row("alice", "list", "", "rate_limited"),
            row("alice", "restart", "echo", "ok"),
        ]
    );
    assert!(rows.iter().all(|r| r.node == "node-a"), "{rows:?}");
    assert_eq!(rows[0].actor_rank, Some(0.0));
    assert_eq!(rows[1].actor_rank, Some(3.0));
    assert_eq!(
        rows[1].detail.as_deref(),
        Some("Restart echo v1.0.0? Type yes to confirm (30s timeout)")
    );
    assert_eq!(rows[2].detail.as_deref(), Some("⏳ Slow down: try again in 5s"));
    assert!(rows[3].detail.as_deref().unwrap().starts_with("✅ Restarted echo v1.0.0 ("));
    assert!(rows.windows(2).all(|w| w[0].time_us < w[1].time_us), "in order");
    bed.stop().await;
}

#[tokio::test]
async fn audit_rows_in_memory() {
    audited(memory_storage()).await;
}

#[tokio::test]
async fn audit_rows_in_sqlite() {
    let dir = std::env::temp_dir().join(unique("rosey-admin-audit-"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("rosey.db").display());
    let storage = SqlStorage::open(&url, SqlOptions::default()).await.unwrap();
    audited(Arc::new(storage)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn audit_rows_in_postgres() {
    let db = TestDatabase::create().await;
    let storage = SqlStorage::open(db.url(), SqlOptions::default()).await.unwrap();
    audited(Arc::new(storage)).await;
    db.drop_now().await;
}
