//! Plugin containment with real, hostile plugin processes: one owner per command, identity only from
//! connectors, bounded replies and requests, redelivery after a crash, quiet log floods.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rosey_core::bus::EventBusExt;
use rosey_core::event::ChatMessage;
use rosey_core::plugin::{ControlError, PluginStatus};

use crate::plugins::{Bed, replies, testbed_manifest};

const PATIENCE: Duration = Duration::from_secs(20);

/// Polls the plugin's status until `done` holds (the counters move in the slot's own task).
async fn status_until(bed: &Bed, name: &str, done: impl Fn(&PluginStatus) -> bool) -> PluginStatus {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = bed.manager.status(name).unwrap();
        if done(&status) {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting: {status:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_plugin_claiming_a_command_is_refused_and_the_command_is_answered_once() {
    let bed = Bed::memory().await;
    bed.start(testbed_manifest("first-roller", "dup", &[], "")).await;
    let copycat = testbed_manifest("copycat", "dup", &[], "");
    match bed.manager.add(copycat).await {
        Err(ControlError::CommandOwned(clash)) => {
            assert_eq!(
                (clash.command.as_str(), clash.owner.as_str(), clash.claimant.as_str()),
                ("dup", "first-roller", "copycat")
            );
        }
        other => panic!("expected the command to be refused, got {other:?}"),
    }
    assert!(bed.manager.status("copycat").is_none(), "the copycat is not loaded");
    let answer = bed.ask("dup", "echo once").await;
    assert_eq!(replies(&answer), ["once"]);
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_in_one_folder_own_commands_in_folder_name_order_whatever_starts_first() {
    let root =
        std::env::temp_dir().join(format!("rosey-owners-{}", crate::support::unique_prefix()));
    for name in ["b-second", "a-first"] {
        let manifest = testbed_manifest(name, "same", &[], "");
        std::fs::rename(&manifest.dir, root.join(name)).unwrap_or_else(|_| {
            std::fs::create_dir_all(&root).unwrap();
            std::fs::rename(&manifest.dir, root.join(name)).unwrap();
        });
    }
    let bed = Bed::memory().await;
    let errors = bed.manager.load_dir(&root).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let error = errors[0].to_string();
    assert!(error.contains("b-second") && error.contains("a-first"), "{error}");
    assert!(
        error.contains(&root.join("b-second").join("plugin.toml").display().to_string()),
        "{error}"
    );
    assert_eq!(bed.manager.command_table().lookup("same").unwrap().plugin, "a-first");
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_take_a_command_another_plugin_owns() {
    let bed = Bed::memory().await;
    bed.start(testbed_manifest("keeper", "kept", &[], "")).await;
    let thief = testbed_manifest("thief", "stolen", &[], "");
    bed.start(thief.clone()).await;
    let toml = std::fs::read_to_string(thief.dir.join("plugin.toml")).unwrap();
    std::fs::write(thief.dir.join("plugin.toml"), toml.replace("\"stolen\"", "\"kept\"")).unwrap();
    match bed.manager.reload("thief").await {
        Err(ControlError::ReloadFailed(failure)) => {
            assert_eq!(failure.step, rosey_core::plugin::StartStep::Manifest);
            assert!(
                failure.reason.contains("\"kept\"") && failure.reason.contains("keeper"),
                "{failure}"
            );
        }
        other => panic!("expected a refused reload, got {other:?}"),
    }
    assert_eq!(bed.manager.command_table().lookup("kept").unwrap().plugin, "keeper");
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_forge_chat_a_command_or_a_control_request() {
    let bed = Bed::memory().await;
    bed.start(testbed_manifest("forger", "forge", &[], "")).await;
    let mut chat = bed.bus.subscribe("cytube.chat.message").await.unwrap();
    let mut commands = bed.bus.subscribe("rosey.command.roll").await.unwrap();
    for subject in ["cytube.chat.message", "rosey.command.roll", "rosey.control.reload"] {
        bed.ask("forge", &format!("publish {subject}")).await;
    }
    let status = status_until(&bed, "forger", |s| s.events.refused_publishes == 3).await;
    assert_eq!(status.crash_count, 0, "a refusal is not fatal");
    // Nothing forged went out: the first chat line and command seen are the ones sent now.
    let marker = ChatMessage {
        channel: bed.channel.clone(),
        user: "alice".into(),
        message: "marker".into(),
        time: 2,
        rank: None,
        meta: None,
    };
    bed.bus.publish_json("cytube.chat.message", &marker).await.unwrap();
    let first: ChatMessage = chat.next().await.unwrap().decode().unwrap();
    assert_eq!(first.message, "marker");
    bed.send("roll", "1d6").await;
    let command: serde_json::Value = commands.next().await.unwrap().decode().unwrap();
    assert_eq!(command["user"], "alice", "the only command seen is the test's own");
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_may_publish_what_its_manifest_declares() {
    let bed = Bed::memory().await;
    let manifest = testbed_manifest("herald", "herald", &[], "publish = [\"herald-news.>\"]");
    bed.start(manifest).await;
    let mut news = bed.bus.subscribe("herald-news.>").await.unwrap();
    bed.ask("herald", "publish herald-news.today").await;
    let published = tokio::time::timeout(PATIENCE, news.next()).await.unwrap().unwrap();
    assert_eq!(published.subject(), "herald-news.today");
    assert_eq!(bed.manager.status("herald").unwrap().events.refused_publishes, 0);
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_over_the_per_event_limits_are_dropped_and_counted() {
    let mut bed = Bed::memory().await;
    bed.start(testbed_manifest("chatty", "chatty", &[], "[limits]\nreply_bytes_per_event = 5000"))
        .await;
    // 30 replies of 1 KiB: the byte limit (5000) lets 4 through.
    let answer = bed.ask("chatty", "big-replies 30 1").await;
    assert_eq!(replies(&answer).len(), 4);
    for _ in 0..4 {
        assert_eq!(bed.said().await.len(), 1024);
    }
    // 12 short replies: the count limit (10) lets 10 through.
    let answer = bed.ask("chatty", "multi 12").await;
    assert_eq!(replies(&answer).len(), 10);
    let status = bed.manager.status("chatty").unwrap();
    assert_eq!(status.events.dropped_replies, 26 + 2);
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_gets_at_most_64_requests_outstanding() {
    let bed = Bed::memory().await;
    // A store that never answers keeps every request outstanding until its timeout.
    let _silent_store = bed.bus.subscribe("rosey.db.kv.get").await.unwrap();
    bed.start(testbed_manifest("asker", "asker", &[], "")).await;
    bed.ask("asker", "requests 100").await;
    let status = status_until(&bed, "asker", |s| s.events.refused_requests == 36).await;
    assert_eq!(status.crash_count, 0);
    assert_eq!(replies(&bed.ask("asker", "echo still-here").await), ["still-here"]);
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_requests_beyond_the_rate_limit_is_refused_at_once() {
    let bed = Bed::memory().await;
    // A real store behind the bus: requests within the budget are answered, the rest refused.
    let storage = Arc::new(rosey_core::storage::MemoryStorage::new());
    let limits = rosey_core::storage::KvLimits::default();
    let kv = rosey_core::storage::KvService::new(bed.bus.clone(), storage, limits)
        .queue_group(None)
        .start()
        .await
        .unwrap();
    let extra = "[limits]\nrequests_per_second = 10";
    bed.start(testbed_manifest("greedy", "greedy", &[], extra)).await;
    bed.ask("greedy", "requests 200").await;
    // 10 may go at once (one second's budget); a few more may trickle in while the 200 arrive.
    let status = status_until(&bed, "greedy", |s| s.events.refused_requests >= 180).await;
    assert!(status.events.refused_requests <= 190, "{:?}", status.events);
    let refused = status.events.refused_requests;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while kv.stats().requests + refused < 200 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(kv.stats().requests + refused, 200, "each one either served or refused");
    assert_eq!(replies(&bed.ask("greedy", "echo still-here").await), ["still-here"]);
    bed.manager.shutdown().await;
    kv.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_plugin_dies_on_is_delivered_once_more_then_answered_with_an_error() {
    let mut bed = Bed::memory().await;
    bed.start(testbed_manifest("fragile", "fragile", &[], "")).await;
    // `crash` kills the plugin on every delivery: a poison event, tried twice and then answered.
    let answer = bed.ask("fragile", "crash").await;
    assert_eq!(answer["error"], "plugin crashed");
    assert_eq!(bed.said().await, "❌ fragile stopped while handling this");
    assert_eq!(replies(&bed.ask("fragile", "echo after").await), ["after"]);
    let status = bed.manager.status("fragile").unwrap();
    assert_eq!((status.crash_count, status.events.redelivered), (2, 1));
    assert_eq!(status.events.failed, 1, "answered once, with the error");
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_plugin_died_once_is_answered_by_the_restarted_instance() {
    let bed = Bed::memory().await;
    bed.start(testbed_manifest("phoenix", "phoenix", &[], "")).await;
    let marker =
        std::env::temp_dir().join(format!("rosey-once-{}", crate::support::unique_prefix()));
    let answer = bed.ask("phoenix", &format!("crash-once {}", marker.display())).await;
    assert_eq!(replies(&answer), ["survived"]);
    assert!(answer["error"].is_null(), "{answer}");
    let status = bed.manager.status("phoenix").unwrap();
    assert_eq!((status.crash_count, status.events.redelivered), (1, 1));
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_was_answered_before_the_crash_is_never_delivered_again() {
    let mut bed = Bed::memory().await;
    bed.start(testbed_manifest("halfway", "halfway", &[], "")).await;
    let answer = bed.ask("halfway", "reply-then-crash").await;
    assert_eq!(replies(&answer), ["said before dying"]);
    assert_eq!(bed.said().await, "said before dying");
    assert_eq!(replies(&bed.ask("halfway", "echo next").await), ["next"]);
    // The next line said is the echo: no duplicate reply, no error line for an answered command.
    assert_eq!(bed.said().await, "next");
    let status = bed.manager.status("halfway").unwrap();
    assert_eq!((status.crash_count, status.events.redelivered), (1, 0));
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_can_be_turned_off_for_plugins_with_side_effects() {
    let bed = Bed::memory().await;
    bed.start(testbed_manifest("careful", "careful", &[], "redeliver_on_crash = false")).await;
    let answer = bed.ask("careful", "crash").await;
    assert_eq!(answer["error"], "plugin crashed");
    // The event is answered as soon as the instance is gone; the crash is counted right after.
    let status = status_until(&bed, "careful", |s| s.crash_count >= 1).await;
    assert_eq!((status.crash_count, status.events.redelivered), (1, 0));
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_right_after_a_kill_9_is_answered_by_the_restarted_plugin() {
    let bed = Bed::memory().await;
    bed.start(testbed_manifest("dice-like", "dicey", &[], "")).await;
    let pid: u32 = replies(&bed.ask("dicey", "pid").await)[0].parse().unwrap();
    crate::plugins::kill9(pid);
    let answer = bed.ask("dicey", "echo rolled").await;
    assert_eq!(replies(&answer), ["rolled"], "{answer}");
    let new_pid: u32 = replies(&bed.ask("dicey", "pid").await)[0].parse().unwrap();
    assert_ne!(new_pid, pid);
    bed.manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_rate_limited_and_the_plugin_keeps_answering() {
    let bed = Bed::memory().await;
    bed.start(testbed_manifest("noisy", "noisy", &[], "")).await;
    let answer = bed.ask("noisy", "log-flood 20000").await;
    assert!(answer["error"].is_null(), "{answer}");
    assert_eq!(replies(&bed.ask("noisy", "echo calm").await), ["calm"]);
    bed.manager.shutdown().await;
}
