//! Who may use `!admin`: names in owner/admins in any case, and on CyTube registered users only.

use std::sync::Arc;

use crate::support::{Counted, Ranks, Setup, memory_storage, row};

const DENIED: &str = "❌ Admin permission required";

#[tokio::test(start_paused = true)]
async fn a_user_not_in_owner_or_admins_is_refused_audited_and_not_rate_limited() {
    let bed = Setup::console().storage(memory_storage()).start().await;
    for _ in 0..3 {
        assert_eq!(
            bed.admin("mallory", "list").await,
            [DENIED],
            "refused every time, never told to wait"
        );
    }
    assert_eq!(bed.admin("mallory", "reload echo").await, [DENIED]);
    let rows = bed.audit().await;
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r.actor == "mallory" && r.outcome == "denied"), "{rows:?}");
    assert_eq!(rows[3].command, "reload");
    assert_eq!(rows[3].arguments, "echo");
    assert_eq!(rows[3].detail.as_deref(), Some("not in owner or admins"));
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn names_match_whatever_their_case() {
    let bed = Setup::console().start().await;
    assert!(bed.admin("ALICE", "list").await[0].starts_with("Plugins (2): "));
    assert!(bed.admin("Bob", "list").await[0].starts_with("Plugins (2): "));
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn on_cytube_a_guest_with_an_admins_name_is_refused() {
    let ranks = Ranks::with(&[("alice", 0.0), ("bob", 2.0)]);
    let bed = Setup::console().ranks(ranks.clone()).storage(memory_storage()).start().await;
    // A guest (rank 0) named alice, although the event claims a rank.
    let mut event = bed.command_event("alice", "list");
    event["rank"] = serde_json::json!(3.0);
    assert_eq!(bed.admin_event(event).await, [DENIED]);
    // carol is an admin but not in the channel's user list.
    assert_eq!(bed.admin("carol", "list").await, [DENIED]);
    // bob is registered.
    assert!(bed.admin("BOB", "list").await[0].starts_with("Plugins (2): "));
    // alice logs in for real.
    ranks.set("alice", Some(3.0));
    assert!(bed.admin("alice", "list").await[0].starts_with("Plugins (2): "));
    let rows = bed.audit().await;
    let seen: Vec<(&str, Option<f64>, &str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.actor.as_str(), r.actor_rank, r.outcome.as_str(), r.detail.as_deref()))
        .collect();
    assert_eq!(
        seen[0],
        ("alice", Some(0.0), "denied", Some("not a registered user (rank below 1)"))
    );
    assert_eq!(seen[1], ("carol", None, "denied", Some("not in the channel's user list")));
    assert_eq!((seen[2].0, seen[2].1, seen[2].2), ("BOB", Some(2.0), "ok"));
    assert_eq!((seen[3].0, seen[3].1, seen[3].2), ("alice", Some(3.0), "ok"));
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_yes_is_refused_when_the_name_changed_hands_since_the_request() {
    let ranks = Ranks::with(&[("alice", 3.0)]);
    let bed = Setup::console().ranks(ranks.clone()).storage(memory_storage()).start().await;
    assert_eq!(
        bed.admin("alice", "restart echo").await,
        ["Restart echo v1.0.0? Type yes to confirm (30s timeout)"]
    );
    // alice leaves; a guest takes her name and says yes.
    ranks.set("alice", Some(0.0));
    assert_eq!(bed.say("alice", "yes").await, [DENIED]);
    assert_eq!(bed.manager.status("echo").unwrap().restart_count, 0);
    assert_eq!(
        bed.audit_outcomes().await,
        [row("alice", "restart", "echo", "pending"), row("alice", "restart", "echo", "denied")]
    );
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn every_command_is_counted_by_sub_command_and_admin_with_strangers_in_one_series() {
    let counted = Arc::new(Counted::default());
    let bed = Setup::console().metrics(counted.clone()).start().await;
    bed.admin("Alice", "list").await;
    bed.admin("bob", "frobnicate").await;
    bed.admin("mallory", "reload echo").await;
    bed.admin("eve", "x1").await;
    let seen = counted.0.lock().clone();
    let expected: Vec<(String, String)> = [
        ("list", "alice"),
        ("(unknown)", "bob"),
        ("reload", "(refused)"),
        ("(unknown)", "(refused)"),
    ]
    .iter()
    .map(|(c, u)| ((*c).to_owned(), (*u).to_owned()))
    .collect();
    assert_eq!(seen, expected);
    bed.stop().await;
}
