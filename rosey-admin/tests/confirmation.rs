//! reload, restart and reload --all wait for the same user's `yes`, in the same place, for 30 s.

use std::time::Duration;

use crate::support::{Setup, memory_storage, row};

const PROMPT: &str = "Restart echo v1.0.0? Type yes to confirm (30s timeout)";

/// How long echo has been serving: a restart starts it again.
fn uptime(bed: &crate::support::Bed) -> Duration {
    bed.manager.status("echo").unwrap().uptime
}

#[tokio::test(start_paused = true)]
async fn a_restart_goes_ahead_on_the_same_users_yes_only() {
    let mut bed = Setup::console().storage(memory_storage()).start().await;
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(bed.admin("alice", "restart echo").await, [PROMPT]);
    assert_eq!(bed.said().await, PROMPT, "the prompt is said in the channel");
    assert!(uptime(&bed) >= Duration::from_secs(100), "nothing happens before the yes");

    assert!(bed.say("bob", "yes").await.is_empty(), "another admin's yes does nothing");
    assert!(bed.say("mallory", "yes").await.is_empty(), "a stranger's yes does nothing");
    assert!(bed.say_in("elsewhere", "alice", "yes").await.is_empty(), "nor one in another channel");
    assert!(bed.pm("alice", "yes").await.is_empty(), "nor one by private message");
    assert!(bed.say("alice", "yes please").await.is_empty(), "only a plain yes confirms");
    assert!(uptime(&bed) >= Duration::from_secs(100));

    assert_eq!(bed.say("alice", " YES ").await, ["✅ Restarted echo v1.0.0 (0.0s)"]);
    assert_eq!(bed.said().await, "✅ Restarted echo v1.0.0 (0.0s)");
    assert!(uptime(&bed) < Duration::from_secs(100), "restarted");
    assert!(bed.say("alice", "yes").await.is_empty(), "a second yes does nothing");
    assert_eq!(
        bed.audit_outcomes().await,
        [row("alice", "restart", "echo", "pending"), row("alice", "restart", "echo", "ok")]
    );
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_newer_request_replaces_the_older_one() {
    let mut setup = Setup::console().storage(memory_storage());
    setup.echoes.push(("other".to_owned(), "2.0.0".to_owned()));
    let bed = setup.start().await;
    assert_eq!(bed.admin("alice", "restart echo").await, [PROMPT]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        bed.admin("alice", "restart other").await,
        ["Restart other v2.0.0? Type yes to confirm (30s timeout)"]
    );
    assert_eq!(bed.say("alice", "yes").await, ["✅ Restarted other v2.0.0 (0.0s)"]);
    assert!(bed.say("alice", "yes").await.is_empty(), "the first request is gone");
    assert_eq!(
        bed.audit_outcomes().await,
        [
            row("alice", "restart", "echo", "pending"),
            row("alice", "restart", "echo", "cancelled"),
            row("alice", "restart", "other", "pending"),
            row("alice", "restart", "other", "ok"),
        ]
    );
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_late_yes_is_told_the_request_expired() {
    let bed = Setup::console().storage(memory_storage()).start().await;
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(bed.admin("bob", "restart echo").await, [PROMPT]);
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(bed.say("carol", "yes").await.is_empty());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bed.say("bob", "yes").await, ["⌛ That request expired; ask again"]);
    assert!(bed.say("bob", "yes").await.is_empty(), "told once");
    assert!(uptime(&bed) >= Duration::from_secs(100), "nothing restarted");
    let rows = bed.audit().await;
    let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ["pending", "expired"]);
    assert_eq!(rows[1].detail.as_deref(), Some("no yes within 30s"));
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_request_by_private_message_is_confirmed_by_private_message() {
    let bed = Setup::console().start().await;
    let mut event = bed.command_event("carol", "restart echo");
    event["via"] = serde_json::json!("pm");
    assert_eq!(bed.admin_event(event).await, [PROMPT]);
    assert!(bed.say("carol", "yes").await.is_empty(), "a yes in the channel does nothing");
    assert_eq!(bed.pm("Carol", "yes").await, ["✅ Restarted echo v1.0.0 (0.0s)"]);
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_admin_plugin_will_not_reload_or_restart_itself() {
    let bed = Setup::console().storage(memory_storage()).start().await;
    assert_eq!(
        bed.admin("alice", "reload admin").await,
        ["❌ The admin plugin can't reload itself; restart the bot instead"]
    );
    assert_eq!(
        bed.admin("bob", "restart Admin").await,
        ["❌ The admin plugin can't restart itself; restart the bot instead"]
    );
    assert!(bed.say("alice", "yes").await.is_empty(), "nothing was asked");
    assert_eq!(
        bed.audit_outcomes().await,
        [row("alice", "reload", "admin", "invalid"), row("bob", "restart", "Admin", "invalid")]
    );
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn reload_all_asks_for_every_plugin_but_the_admin_plugin() {
    let mut setup = Setup::console();
    setup.echoes.push(("other".to_owned(), "2.0.0".to_owned()));
    let bed = setup.start().await;
    assert_eq!(
        bed.admin("alice", "reload --all").await,
        ["Reload all 2 plugins, one at a time (stops at the first failure)? Type yes to confirm \
          (30s timeout)"]
    );
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_yes_that_overtook_its_command_confirms_it_and_one_said_before_does_not() {
    let bed = Setup::console().start().await;
    let channel = bed.channel.clone();
    // Said before the command (by the chat's clock), even if heard first: no confirmation.
    assert!(bed.say_at(&channel, "carol", "yes", 10).await.is_empty());
    let mut command = bed.command_event("carol", "restart echo");
    command["time"] = serde_json::json!(20);
    assert_eq!(bed.admin_event(command).await, [PROMPT]);
    // Said after the command but heard first (piped input, a busy router): it confirms.
    assert!(bed.say_at(&channel, "carol", "no", 21).await.is_empty());
    assert!(bed.say_at(&channel, "bob", "yes", 31).await.is_empty());
    assert!(bed.say_at(&channel, "alice", "yes", 31).await.is_empty(), "someone else's yes");
    let mut command = bed.command_event("bob", "restart echo");
    command["time"] = serde_json::json!(30);
    assert_eq!(bed.admin_event(command).await, [PROMPT, "✅ Restarted echo v1.0.0 (0.0s)"]);
    bed.stop().await;
}
