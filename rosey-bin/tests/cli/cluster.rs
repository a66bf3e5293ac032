//! Several `rosey run` nodes on one NATS: `!admin reload` on one node reloads the plugin on every
//! node that runs it, one node at a time, and the control API answers for all of them.

use std::path::Path;
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

    // Each node's dashboard names the others.
    poll(Duration::from_secs(5), "the dashboard lists every node", || {
        let (_, page) = super::e2e::request(nodes[2].port, "GET", "/", "");
        page.contains("n1 · n2 · n3").then_some(())
    });
    // Every node serves 1.1 now, as its own dashboard shows.
    for bot in &nodes {
        let version = poll(Duration::from_secs(10), "dice-roller 1.1.0 on every node", || {
            let version = plugin_metrics(bot.port, "dice-roller")["version"].clone();
            (version == "1.1.0").then_some(version)
        });
        assert_eq!(version, "1.1.0");
    }
    // And a roll is answered exactly once, by whichever node takes it: nothing else comes before the
    // answer to the next command.
    let roll = nodes[1].ask("carol", "!roll 1d6", "🎲");
    assert!(roll.contains("] = "), "{roll}");
    nodes[1].say("carol", "!help roll");
    let (between, help) = nodes[1].answer_after("!roll —");
    assert!(help.starts_with("!roll — "), "{help}");
    assert!(!between.iter().any(|line| line.contains("🎲")), "a second answer: {between:?}");
    for bot in nodes {
        let log = bot.stop();
        super::e2e::assert_clean(&log);
    }
}

/// Three nodes `n1`…`n3` on `nats` with the plugins of `plugins` and a `cytube` section for the fake
/// server's `testchan` as the registered `RoseyBot` (password `hunter22`); each with its dashboard's
/// port, once ready.
fn cytube_nodes(
    nats: &NatsServer,
    cytube: &rosey_testkit::cytube::FakeCytube,
    plugins: &Path,
) -> Vec<(super::Running, u16)> {
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let dir = scratch_dir();
        let port = free_port();
        let config = super::write_config(
            &dir,
            &format!(
                r#"{{"plugin_dir": {:?}, "logging": {{"file": null}}, "dashboard": {{"port": {port}}},
                    "nats_url": "{}", "node": {{"name": "{name}"}},
                    "cytube": {{"server": "{}", "channel": "testchan", "username": "RoseyBot",
                                "password": "hunter22"}}}}"#,
                plugins.display().to_string(),
                nats.url(),
                cytube.url()
            ),
        );
        let running = super::Running::start(super::rosey(
            &dir,
            &["run", "--config", config.to_str().unwrap()],
        ));
        running.wait_for("rosey ready");
        nodes.push((running, port));
    }
    nodes
}

/// The index of the one node that joined the channel, once exactly one has and the others say
/// they are in standby.
fn the_holder(nodes: &[(super::Running, u16)]) -> usize {
    poll(Duration::from_secs(15), "one node joined", || {
        let details: Vec<String> = nodes.iter().map(|(_, port)| connector_detail(*port)).collect();
        let joined: Vec<usize> =
            (0..details.len()).filter(|&i| details[i].starts_with("joined")).collect();
        let standby = details.iter().filter(|d| d.starts_with("standby")).count();
        (joined.len() == 1 && standby == details.len() - 1).then(|| joined[0])
    })
}

/// Stops every node with SIGTERM; each must exit 0.
fn stop_cleanly(nodes: Vec<(super::Running, u16)>) {
    for (running, _) in nodes {
        running.signal("TERM");
        let (status, rest) = running.wait_exit();
        assert!(status.success(), "{rest}");
    }
}

/// A node's connector, as its `/readyz` reports it.
fn connector_detail(port: u16) -> String {
    let (_, body) = super::e2e::request(port, "GET", "/readyz", "");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let components = body["components"].as_array().cloned().unwrap_or_default();
    let connector = components.iter().find(|c| c["name"] == "connector").cloned();
    connector.map(|c| c["detail"].as_str().unwrap_or_default().to_owned()).unwrap_or_default()
}

#[test]
fn one_node_holds_the_channel_and_another_takes_it_within_ten_seconds_of_a_sigkill() {
    use rosey_testkit::cytube::{Account, FakeCytube, FakeCytubeOptions, ServerEvent};
    use std::time::Instant;

    let nats = NatsServer::start();
    let account = Account::new("RoseyBot", "hunter22");
    let cytube =
        super::Cytube::start(FakeCytubeOptions { accounts: vec![account], ..Default::default() });
    let channel = cytube.server.channel("testchan");
    channel.join_peer("alice", 0.0);
    let mut events = cytube.server.subscribe();
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let mut nodes = cytube_nodes(&nats, &cytube.server, &plugins);
    let wait = |events: &mut _, patience: Duration, f: &dyn Fn(&ServerEvent) -> bool| {
        cytube._runtime.block_on(FakeCytube::wait_for(events, patience, |e| f(e).then_some(())))
    };
    let holder = the_holder(&nodes);
    // A standby node says so on its page (built from a snapshot at most a second old).
    let standby = nodes[(holder + 1) % nodes.len()].1;
    poll(Duration::from_secs(5), "a standby node's page says standby", || {
        let (_, page) = super::e2e::request(standby, "GET", "/", "");
        page.contains("cytube · standby").then_some(())
    });
    channel.say("alice", "!roll 1d6");
    wait(
        &mut events,
        Duration::from_secs(20),
        &|e| matches!(e, ServerEvent::Chat { user, msg, .. } if user == "RoseyBot" && msg.starts_with("🎲")),
    );

    // The holder dies without a word: another node takes the channel within 10 s.
    let (dead, _) = nodes.remove(holder);
    let killed = Instant::now();
    dead.signal("KILL");
    let _ = dead.wait_exit();
    wait(
        &mut events,
        Duration::from_secs(10),
        &|e| matches!(e, ServerEvent::LoggedIn { name, .. } if name == "RoseyBot"),
    );
    assert!(killed.elapsed() < Duration::from_secs(10), "took over after {:?}", killed.elapsed());
    channel.say("alice", "!roll 2d6");
    wait(
        &mut events,
        Duration::from_secs(20),
        &|e| matches!(e, ServerEvent::Chat { user, msg, .. } if user == "RoseyBot" && msg.starts_with("🎲")),
    );
    let details: Vec<String> = nodes.iter().map(|(_, port)| connector_detail(*port)).collect();
    assert_eq!(details.iter().filter(|d| d.starts_with("joined")).count(), 1, "{details:?}");
    stop_cleanly(nodes);
}

#[test]
fn without_jetstream_a_node_joins_the_channel_as_a_single_node_with_a_warning() {
    use rosey_testkit::cytube::FakeCytubeOptions;

    let nats = NatsServer::start_without_jetstream();
    let cytube = super::Cytube::start(FakeCytubeOptions::default());
    let dir = scratch_dir();
    let config = super::write_config(
        &dir,
        &format!(
            r#"{{"plugin_dir": "plugins", "logging": {{"file": null}}, "dashboard": {{"enabled": false}},
                "nats_url": "{}",
                "cytube": {{"server": "{}", "channel": "testchan", "username": "RoseyBot"}}}}"#,
            nats.url(),
            cytube.server.url()
        ),
    );
    let running =
        super::Running::start(super::rosey(&dir, &["run", "--config", config.to_str().unwrap()]));
    let startup = running.wait_for("rosey ready");
    assert!(startup.contains("JetStream is not available"), "{startup}");
    assert!(startup.contains("joined the CyTube channel"), "{startup}");
    running.signal("TERM");
    let (status, rest) = running.wait_exit();
    assert!(status.success(), "{rest}");
}

#[test]
fn a_hundred_replies_reach_the_channel_once_each_across_a_sigkill_of_the_holder() {
    use rosey_core::bus::{EventBus, EventBusExt, NatsBus};
    use rosey_testkit::cytube::{Account, FakeCytube, FakeCytubeOptions, ServerEvent};
    use std::collections::BTreeMap;

    let nats = NatsServer::start();
    let account = Account::new("RoseyBot", "hunter22");
    let cytube =
        super::Cytube::start(FakeCytubeOptions { accounts: vec![account], ..Default::default() });
    let mut events = cytube.server.subscribe();
    let mut nodes = cytube_nodes(&nats, &cytube.server, Path::new("plugins"));
    let holder = the_holder(&nodes);

    // A hundred replies, as plugins on any node publish them.
    let runtime = &cytube._runtime;
    let bus = runtime.block_on(NatsBus::connect(nats.url())).unwrap();
    for i in 0..100 {
        let line = serde_json::json!({"channel": "testchan", "message": format!("reply {i}")});
        runtime.block_on(bus.publish_json("cytube.chat.send", &line)).unwrap();
    }
    runtime.block_on(bus.flush()).unwrap();
    let mut said: BTreeMap<String, usize> = BTreeMap::new();
    let next_said = |events: &mut _, patience| {
        runtime.block_on(FakeCytube::wait_for(events, patience, |e| match e {
            ServerEvent::Chat { user, msg, .. } if user == "RoseyBot" => Some(msg.clone()),
            _ => None,
        }))
    };
    // The holder dies in the middle of the burst.
    while said.len() < 30 {
        *said.entry(next_said(&mut events, Duration::from_secs(20))).or_default() += 1;
    }
    let mut logins = cytube.server.subscribe();
    let (dead, _) = nodes.remove(holder);
    let killed = std::time::Instant::now();
    dead.signal("KILL");
    let _ = dead.wait_exit();
    runtime.block_on(FakeCytube::wait_for(&mut logins, Duration::from_secs(10), |e| match e {
        ServerEvent::LoggedIn { name, .. } if name == "RoseyBot" => Some(()),
        _ => None,
    }));
    assert!(killed.elapsed() < Duration::from_secs(10), "rejoined after {:?}", killed.elapsed());
    // Another node takes over and says the rest: up to the lease's ttl, a join, and (for a line the
    // dead holder had pulled) the queue's ack wait.
    while said.len() < 100 {
        *said.entry(next_said(&mut events, Duration::from_secs(40))).or_default() += 1;
    }
    // A last line: anything said twice would come before it.
    let end = serde_json::json!({"channel": "testchan", "message": "the end"});
    runtime.block_on(bus.publish_json("cytube.chat.send", &end)).unwrap();
    loop {
        let line = next_said(&mut events, Duration::from_secs(40));
        if line == "the end" {
            break;
        }
        *said.entry(line).or_default() += 1;
    }
    let twice: Vec<(&String, &usize)> = said.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "said more than once: {twice:?}");
    assert_eq!(said.len(), 100);
    stop_cleanly(nodes);
}
