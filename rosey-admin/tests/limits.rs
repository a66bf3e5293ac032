//! Rate limits: a 5 s cooldown per admin and 10 admin commands a minute in all.

use std::time::Duration;

use crate::support::{Setup, memory_storage, row};

#[tokio::test(start_paused = true)]
async fn an_admin_waits_five_seconds_between_commands_and_is_told_how_long() {
    let bed = Setup::console().storage(memory_storage()).start().await;
    assert!(bed.admin("alice", "list").await[0].starts_with("Plugins"));
    assert_eq!(bed.admin("alice", "list").await, ["⏳ Slow down: try again in 5s"]);
    assert!(bed.admin("bob", "list").await[0].starts_with("Plugins"), "others are not held up");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(bed.admin("ALICE", "status").await, ["⏳ Slow down: try again in 4s"]);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(bed.admin("alice", "list").await[0].starts_with("Plugins"));
    let rows = bed.audit_outcomes().await;
    assert_eq!(rows[1], row("alice", "list", "", "rate_limited"));
    assert_eq!(rows[3], row("ALICE", "status", "", "rate_limited"));
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_yes_is_not_rate_limited() {
    let bed = Setup::console().start().await;
    assert_eq!(
        bed.admin("alice", "restart echo").await,
        ["Restart echo v1.0.0? Type yes to confirm (30s timeout)"]
    );
    assert_eq!(bed.say("alice", "yes").await, ["✅ Restarted echo v1.0.0 (0.0s)"]);
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn ten_admin_commands_a_minute_in_all() {
    let mut setup = Setup::console();
    setup.options.admins = (0..11).map(|i| format!("admin{i}")).collect();
    let bed = setup.start().await;
    for i in 0..10 {
        let answer = bed.admin(&format!("admin{i}"), "list").await;
        assert!(answer[0].starts_with("Plugins"), "command {i}: {answer:?}");
    }
    assert_eq!(bed.admin("admin10", "list").await, ["⏳ Slow down: try again in 6s"]);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(bed.admin("alice", "list").await[0].starts_with("Plugins"));
    bed.stop().await;
}
