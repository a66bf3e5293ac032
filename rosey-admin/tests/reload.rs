//! Confirmed reloads and restarts of real process plugins beside the in-process admin plugin.

use crate::support::{Setup, memory_storage, process_plugin, row, write_manifest};

/// `✅ Reloaded greeter v1.0.0 → v1.1.0 (0.2s)`, whatever the time it took.
fn assert_reloaded(line: &str, name: &str, from: &str, to: &str) {
    let head = format!("✅ Reloaded {name} v{from} → v{to} (");
    assert!(line.starts_with(&head) && line.ends_with("s)"), "{line:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_reload_swaps_in_the_version_on_disk() {
    let bed = Setup::console().storage(memory_storage()).start().await;
    let dir = process_plugin("greeter");
    bed.add_process(&dir).await;
    write_manifest(&dir, "greeter", "1.1.0", None);
    assert_eq!(
        bed.admin("alice", "reload greeter").await,
        ["Reload greeter v1.0.0 → v1.1.0? Type yes to confirm (30s timeout)"]
    );
    let answer = bed.say("alice", "yes").await;
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_reloaded(&answer[0], "greeter", "1.0.0", "1.1.0");
    let status = bed.manager.status("greeter").unwrap();
    assert_eq!(status.version, "1.1.0");
    let detail = bed.admin("bob", "status greeter").await;
    assert!(
        detail[0]
            .starts_with(&format!("greeter v1.1.0 RUNNING · pid {} · up ", status.pid.unwrap())),
        "{detail:?}"
    );
    assert_eq!(
        bed.audit_outcomes().await,
        [
            row("alice", "reload", "greeter", "pending"),
            row("alice", "reload", "greeter", "ok"),
            row("bob", "status", "greeter", "ok"),
        ]
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_names_the_step_and_the_old_version_keeps_serving() {
    let bed = Setup::console().storage(memory_storage()).start().await;
    let dir = process_plugin("broken");
    bed.add_process(&dir).await;
    write_manifest(&dir, "broken", "1.1.0", Some("./no-such-program"));
    assert_eq!(
        bed.admin("alice", "reload broken").await,
        ["Reload broken v1.0.0 → v1.1.0? Type yes to confirm (30s timeout)"]
    );
    let answer = bed.say("alice", "yes").await;
    assert_eq!(answer.len(), 1);
    assert!(answer[0].starts_with("❌ Reload failed: spawn: "), "{answer:?}");
    assert!(answer[0].contains("no-such-program not found"), "{answer:?}");
    assert_eq!(bed.manager.status("broken").unwrap().version, "1.0.0");
    let rows = bed.audit().await;
    assert_eq!(rows[1].outcome, "failed");
    assert_eq!(rows[1].detail.as_deref(), Some(answer[0].as_str()));
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_all_goes_one_plugin_at_a_time_and_stops_at_the_first_failure() {
    let mut setup = Setup::console().storage(memory_storage());
    setup.echoes.clear();
    let bed = setup.start().await;
    let dirs: Vec<_> = ["roll-a", "roll-b", "roll-c"].iter().map(|n| process_plugin(n)).collect();
    for dir in &dirs {
        bed.add_process(dir).await;
    }
    write_manifest(&dirs[0], "roll-a", "1.1.0", None);
    write_manifest(&dirs[1], "roll-b", "1.1.0", Some("./no-such-program"));
    write_manifest(&dirs[2], "roll-c", "1.1.0", None);
    assert_eq!(
        bed.admin("alice", "reload --all").await,
        ["Reload all 3 plugins, one at a time (stops at the first failure)? Type yes to confirm \
          (30s timeout)"]
    );
    let answer = bed.say("alice", "yes").await;
    assert_eq!(answer.len(), 3, "{answer:?}");
    assert_reloaded(&answer[0], "roll-a", "1.0.0", "1.1.0");
    assert!(
        answer[1].starts_with("❌ Reload of roll-b v1.0.0 → v1.1.0 failed: spawn: "),
        "{answer:?}"
    );
    assert_eq!(answer[2], "Stopped at roll-b; not reloaded: roll-c");
    let versions: Vec<String> = ["roll-a", "roll-b", "roll-c"]
        .iter()
        .map(|n| bed.manager.status(n).unwrap().version)
        .collect();
    assert_eq!(versions, ["1.1.0", "1.0.0", "1.0.0"]);
    let rows = bed.audit_outcomes().await;
    assert_eq!(
        rows,
        [row("alice", "reload", "--all", "pending"), row("alice", "reload", "--all", "failed")]
    );
    bed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_restart_starts_a_new_process() {
    let bed = Setup::console().start().await;
    let dir = process_plugin("restartee");
    bed.add_process(&dir).await;
    let old_pid = bed.manager.status("restartee").unwrap().pid.unwrap();
    assert_eq!(
        bed.admin("carol", "restart restartee").await,
        ["Restart restartee v1.0.0? Type yes to confirm (30s timeout)"]
    );
    let answer = bed.say("carol", "yes").await;
    assert!(answer[0].starts_with("✅ Restarted restartee v1.0.0 ("), "{answer:?}");
    assert_ne!(bed.manager.status("restartee").unwrap().pid.unwrap(), old_pid);
    bed.stop().await;
}
