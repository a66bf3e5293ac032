//! Several `rosey run` nodes on one NATS: `!admin reload` on one node reloads the plugin on every
//! node that runs it, one node at a time, and the control API answers for all of them.

use std::time::Duration;

use rosey_testkit::nats::NatsServer;

use super::e2e::{Bot, deploy_plugins, free_port, plugin_metrics, poll, release_dice_roller};
use super::scratch_dir;

#[test]
fn an_admin_reload_on_one_node_reaches_every_node() {
    let nats = NatsServer::start();
    let mut nodes = Vec::new();
    let mut folders = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let dir = scratch_dir();
        let plugins = deploy_plugins(&dir);
        let config = format!(
            r#""owner": "alice", "plugin_dir": {:?}, "logging": {{"file": null}},
               "dashboard": {{"port": {}}}, "nats_url": "{}", "node": {{"name": "{name}"}}"#,
            plugins.display().to_string(),
            free_port(),
            nats.url()
        );
        nodes.push(Bot::start(&dir, &config, None));
        folders.push(plugins);
    }
    for (bot, name) in nodes.iter().zip(["n1", "n2", "n3"]) {
        assert!(bot.log.contains(&format!(" node={name} ")), "{}", bot.log);
        assert_eq!(plugin_metrics(bot.port, "dice-roller")["version"], "1.0.0");
    }

    // Version 1.1 on every node's disk; the owner asks one node.
    for plugins in &folders {
        release_dice_roller(plugins, "1.1.0");
    }
    let first = &mut nodes[0];
    let prompt = first.ask("alice", "!admin reload dice-roller", "Type yes");
    assert!(prompt.starts_with("Reload dice-roller v1.0.0 → v1.1.0?"), "{prompt}");
    let done = first.ask("alice", "yes", "Reloaded");
    assert!(done.starts_with("✅ Reloaded dice-roller v1.0.0 → v1.1.0 ("), "{done}");

    // Every node serves 1.1 now, as its own dashboard shows.
    for bot in &nodes {
        let version = poll(Duration::from_secs(10), "dice-roller 1.1.0 on every node", || {
            let version = plugin_metrics(bot.port, "dice-roller")["version"].clone();
            (version == "1.1.0").then_some(version)
        });
        assert_eq!(version, "1.1.0");
    }
    // And a roll is still answered once, by whichever node takes it.
    let roll = nodes[1].ask("carol", "!roll 1d6", "🎲");
    assert!(roll.contains("] = "), "{roll}");
    for bot in nodes {
        let log = bot.stop();
        super::e2e::assert_clean(&log);
    }
}
