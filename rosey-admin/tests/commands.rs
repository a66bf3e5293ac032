//! Every read-only sub-command and its text, through the bus as the router drives it.

use std::time::{Duration, SystemTime};

use crate::support::{Setup, memory_storage, row};

#[tokio::test(start_paused = true)]
async fn help_lists_every_sub_command() {
    let bed = Setup::console().start().await;
    let help = bed.admin("alice", "help").await;
    assert_eq!(
        help,
        [
            "Admin commands: !admin list · !admin status [plugin] · !admin reload <plugin> · \
             !admin reload --all · !admin restart <plugin> · !admin metrics · !admin help",
            "reload and restart ask first: type yes within 30s to go ahead. reload --all goes one \
             plugin at a time and stops at the first failure."
        ]
    );
    assert_eq!(bed.admin("bob", "").await, help, "a bare !admin is help");
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn list_names_every_plugin_with_version_and_state() {
    let bed = Setup::console().start().await;
    let version = rosey_admin::ADMIN_VERSION;
    assert_eq!(
        bed.admin("alice", "list").await,
        [format!("Plugins (2): admin v{version} RUNNING · echo v1.0.0 RUNNING")]
    );
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn list_and_status_of_many_plugins_fit_in_chat_lines() {
    let mut setup = Setup::console();
    setup.echoes = (0..40)
        .map(|i| (format!("a-plugin-with-a-rather-long-name-{i:02}"), "10.20.30".to_owned()))
        .collect();
    let bed = setup.start().await;
    for args in ["list", "status"] {
        let lines = bed.admin("alice", args).await;
        assert!(lines.len() > 1, "{args}: {lines:?}");
        assert!(lines.iter().all(|l| l.encode_utf16().count() <= 320), "{args}: {lines:?}");
        let all = lines.join(" ");
        for i in 0..40 {
            assert!(all.contains(&format!("a-plugin-with-a-rather-long-name-{i:02}")), "{args}");
        }
        tokio::time::sleep(Duration::from_secs(5)).await; // the cooldown
    }
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn status_summarises_each_plugin_and_details_one() {
    let bed = Setup::console().start().await;
    let all = bed.admin("alice", "status").await;
    assert_eq!(all.len(), 1);
    assert!(all[0].starts_with("Status (2): admin RUNNING up "), "{all:?}");
    assert!(all[0].contains(" · echo RUNNING up "), "{all:?}");
    assert!(all[0].contains(", 0 crashes"), "{all:?}");

    tokio::time::sleep(Duration::from_secs(3700)).await;
    let one = bed.admin("carol", "status ECHO").await;
    assert_eq!(one.len(), 1);
    assert!(
        one[0].starts_with("echo v1.0.0 RUNNING · in-process · up 1h 1m · 0 events"),
        "{one:?}"
    );
    assert!(one[0].ends_with("· 0 crashes, 0 restarts · last error: none"), "{one:?}");
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_unknown_plugin_or_sub_command_is_answered_with_usage_and_audited_as_invalid() {
    let bed = Setup::console().storage(memory_storage()).start().await;
    assert_eq!(
        bed.admin("alice", "status nope").await,
        ["❌ Unknown plugin \"nope\"; !admin list shows them"]
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        bed.admin("alice", "reboot now").await,
        ["❓ Unknown admin command \"reboot\". Usage: !admin help | list | status [plugin] | \
          reload <plugin> | reload --all | restart <plugin> | metrics"]
    );
    assert_eq!(
        bed.admin("bob", "reload").await,
        ["❓ Usage: !admin reload <plugin> | !admin reload --all"]
    );
    assert_eq!(
        bed.admin("carol", "restart nope").await,
        ["❌ Unknown plugin \"nope\"; !admin list shows them"]
    );
    assert_eq!(
        bed.audit_outcomes().await,
        [
            row("alice", "status", "nope", "invalid"),
            row("alice", "reboot", "now", "invalid"),
            row("bob", "reload", "", "invalid"),
            row("carol", "restart", "nope", "invalid"),
        ]
    );
    bed.stop().await;
}

#[tokio::test(start_paused = true)]
async fn metrics_answers_with_the_dashboard_url_and_a_summary() {
    let mut setup = Setup::console();
    setup.started_at = Some(SystemTime::now() - Duration::from_secs(2 * 3600 + 3 * 60 + 5));
    let bed = setup.start().await;
    let answer = bed.admin("alice", "metrics").await;
    assert_eq!(answer.len(), 1);
    assert!(answer[0].starts_with("📊 2 plugins (2 running, 0 crashed) · "), "{answer:?}");
    assert!(answer[0].ends_with(" events · up 2h 3m · http://127.0.0.1:8080"), "{answer:?}");
    bed.stop().await;
}
