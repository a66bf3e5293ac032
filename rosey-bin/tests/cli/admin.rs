//! `!admin` from `rosey run`: on the console with `owner` set (reload with confirmation, a stranger
//! refused, both in the audit log), and on the fake CyTube server, where a guest using the owner's
//! name is refused and a registered admin is answered.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use rosey_core::storage::{AuditQuery, SqlOptions, SqlStorage, Storage};
use rosey_testkit::cytube::FakeCytubeOptions;

use super::{Cytube, Running, rosey, scratch_dir, write_config};

/// A console bot with the bundled plugins, `alice` as its owner, no dashboard.
fn owner_alice_config(dir: &Path) -> std::path::PathBuf {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    write_config(
        dir,
        &format!(
            r#"{{"owner": "alice", "plugin_dir": {:?}, "logging": {{"file": null}},
                "dashboard": {{"enabled": false}}}}"#,
            plugins.display().to_string()
        ),
    )
}

#[test]
fn on_the_console_the_owner_reloads_with_yes_and_a_stranger_is_refused_all_audited() {
    let dir = scratch_dir();
    let config = owner_alice_config(&dir);
    let mut cmd = rosey(&dir, &["run", "--config", config.to_str().unwrap()]);
    cmd.stdin(Stdio::piped());
    let mut running = Running::start(cmd);
    running.wait_for("rosey ready");
    let mut stdin = running.child.stdin.take().unwrap();

    writeln!(stdin, "alice: !admin reload dice-roller").unwrap();
    let prompt = running.wait_for_chat("Type yes");
    assert!(
        prompt.contains("rosey: Reload dice-roller v1.0.0") && prompt.contains("(30s timeout)"),
        "{prompt}"
    );
    writeln!(stdin, "alice: yes").unwrap();
    let done = running.wait_for_chat("Reloaded");
    let line = done.lines().last().unwrap();
    assert!(line.starts_with("rosey: ✅ Reloaded dice-roller v1.0.0 → v1.0.0 ("), "{line}");
    assert!(line.ends_with("s)"), "with the time it took: {line}");
    writeln!(stdin, "mallory: !admin list").unwrap();
    let refused = running.wait_for_chat("rosey: ❌");
    assert!(refused.ends_with("rosey: ❌ Admin permission required\n"), "{refused}");
    drop(stdin);
    running.signal("TERM");
    let (status, rest) = running.wait_exit();
    assert!(status.success(), "{rest}");

    let url = format!("sqlite://{}", dir.join("rosey.db").display());
    let rows =
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(
            async {
                let storage = SqlStorage::open(&url, SqlOptions::default()).await.unwrap();
                storage.audit_log(&AuditQuery::default()).await.unwrap()
            },
        );
    let rows: Vec<(&str, &str, &str, &str)> = rows
        .iter()
        .map(|r| (r.actor.as_str(), r.command.as_str(), r.arguments.as_str(), r.outcome.as_str()))
        .rev()
        .collect();
    assert!(rows.contains(&("alice", "reload", "dice-roller", "pending")), "{rows:?}");
    assert!(
        rows.iter().any(|r| r.0 == "alice" && r.1 == "reload" && r.3 == "ok"),
        "the confirmed reload: {rows:?}"
    );
    assert!(rows.iter().any(|r| r.0 == "mallory" && r.3 == "denied"), "{rows:?}");
}

#[test]
fn on_cytube_a_guest_using_the_owners_name_is_refused_and_a_registered_admin_answered() {
    let cytube = Cytube::start(FakeCytubeOptions::default());
    let channel = cytube.server.channel("testchan");
    channel.join_peer("alice", 0.0); // a guest who took the owner's name
    channel.join_peer("Bob", 1.0); // a registered admin, named in another case in the config
    let dir = scratch_dir();
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let config = write_config(
        &dir,
        &format!(
            r#"{{"owner": "alice", "admins": ["bob"], "plugin_dir": {:?}, "logging": {{"file": null}},
                "dashboard": {{"enabled": false}},
                "cytube": {{"server": "{}", "channel": "testchan", "username": "RoseyBot"}}}}"#,
            plugins.display().to_string(),
            cytube.server.url()
        ),
    );
    let running = Running::start(rosey(&dir, &["run", "--config", config.to_str().unwrap()]));
    running.wait_for("rosey ready");
    let mut events = cytube.server.subscribe();
    channel.say("alice", "!admin list");
    let refused = cytube.wait_chat_from(&mut events, "RoseyBot");
    assert_eq!(refused, "❌ Admin permission required");
    channel.say("Bob", "!admin list");
    let list = cytube.wait_chat_from(&mut events, "RoseyBot");
    assert!(list.starts_with("Plugins (4): "), "{list}");
    for plugin in ["8ball", "admin", "dice-roller", "quotes"] {
        assert!(list.contains(plugin), "{list}");
    }
    running.signal("TERM");
    let (status, rest) = running.wait_exit();
    assert!(status.success(), "{rest}");
}

#[test]
fn a_piped_reload_and_its_yes_are_both_answered_before_rosey_exits() {
    let dir = scratch_dir();
    let config = owner_alice_config(&dir);
    // `yes` is not a command: only the admin plugin hears it, and the end of input must wait for it.
    let input = b"alice: !admin reload dice-roller\nalice: yes\n";
    let (status, chat) = super::run_piped(&dir, &config, input);
    assert!(status.success());
    let chat = chat.join("\n");
    assert!(chat.contains("rosey: ✅ Reloaded dice-roller v1.0.0 → v1.0.0 ("), "{chat}");
}
