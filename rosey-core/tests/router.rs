//! The router on both buses: chat lines in, command events out.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rosey_core::bus::{EventBus, EventBusExt, MemoryBus, NatsBus, Subscription};
use rosey_core::event::{ChatMessage, CommandEvent, PmMessage, PmSend, Via};
use rosey_core::plugin::CommandTable;
use rosey_core::router::{Router, RouterHandle, RouterOptions};

use crate::support::{NATS_ROUTERS, nats_url, unique_prefix};

const PATIENCE: Duration = Duration::from_secs(10);

struct Routed {
    bus: Arc<dyn EventBus>,
    channel: String,
    commands: Subscription,
    router: RouterHandle,
}

impl Routed {
    async fn start(bus: Arc<dyn EventBus>, group: &str) -> Self {
        let table = CommandTable::new();
        table.claim("dice-roller", [("roll".into(), false)]).unwrap();
        table.claim("admin", [("admin".into(), true)]).unwrap();
        let commands = bus.subscribe("rosey.command.>").await.unwrap();
        let options = RouterOptions {
            bot_name: Some("RoseyBot".into()),
            queue_group: group.to_owned(),
            ..RouterOptions::default()
        };
        let router = Router::new(bus.clone(), table, options).start().await.unwrap();
        Self { bus, channel: unique_prefix(), commands, router }
    }

    async fn say(&self, user: &str, line: &str) {
        let mut msg = ChatMessage::new(&self.channel, user, line, 42);
        msg.rank = Some(2.0);
        self.bus.publish_json("cytube.chat.message", &msg).await.unwrap();
    }

    /// The next command event of this test's channel, with its subject.
    async fn next(&mut self) -> (String, CommandEvent) {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.commands.next()).await.unwrap().unwrap();
            let event: CommandEvent = msg.decode().unwrap();
            if event.channel == self.channel {
                return (msg.subject().to_owned(), event);
            }
        }
    }
}

async fn routes_commands_and_ignores_the_rest(bus: Arc<dyn EventBus>) {
    let mut r = Routed::start(bus, &unique_prefix()).await;
    r.say("RoseyBot", "!roll 1d6").await;
    r.say("alice", "just chatting").await;
    r.say("alice", "!dance").await;
    r.say("alice", "!roll 2d6").await;
    let (subject, event) = r.next().await;
    assert_eq!(subject, "rosey.command.roll");
    assert_eq!(
        (event.user.as_str(), event.command.as_str(), event.args.as_str(), event.time, event.rank),
        ("alice", "roll", "2d6", 42, Some(2.0))
    );
    assert_eq!(event.message, "!roll 2d6");

    r.say("bob", "!admin reload dice-roller").await;
    let (subject, event) = r.next().await;
    assert_eq!(subject, "rosey.command.admin.reload");
    assert_eq!(event.args, "reload dice-roller");

    let long = "ü".repeat(1000);
    let tricky = format!("  \"quoted words\" 'single' {long}");
    r.say("carol", &format!("!roll {tricky}")).await;
    assert_eq!(r.next().await.1.args, tricky, "arguments pass through untouched");

    r.bus.publish("cytube.chat.message", "not json".into()).await.unwrap();
    r.say("dave", "!roll 1d20").await;
    assert_eq!(r.next().await.1.user, "dave", "the router survives a malformed payload");
    let stats = r.router.stats();
    assert_eq!(stats.malformed, 1);
    assert_eq!(
        stats.handled(),
        stats.routed + stats.ignored + stats.unknown + stats.help + stats.malformed + stats.failed
    );
    assert!(stats.routed >= 4 && stats.ignored >= 2 && stats.unknown >= 1, "{stats:?}");
    r.router.shutdown().await.unwrap();
}

async fn routes_private_messages_as_private_commands(bus: Arc<dyn EventBus>) {
    let mut r = Routed::start(bus, &unique_prefix()).await;
    let pm = |user: &str, line: &str| PmMessage {
        channel: r.channel.clone(),
        user: user.to_owned(),
        message: line.to_owned(),
        time: Some(7),
        rank: (user == "alice").then_some(2.0),
    };
    // The bot's own PMs (CyTube echoes them) and PMs that are no command are not routed.
    r.bus.publish_json("cytube.pm.message", &pm("roseybot", "!roll 1d6")).await.unwrap();
    r.bus.publish_json("cytube.pm.message", &pm("alice", "yes")).await.unwrap();
    r.bus
        .publish_json("cytube.pm.message", &pm("alice", "!admin reload dice-roller"))
        .await
        .unwrap();
    let (subject, event) = r.next().await;
    assert_eq!(subject, "rosey.command.admin.reload");
    assert_eq!(
        (event.user.as_str(), event.args.as_str(), event.time, event.rank, event.via),
        ("alice", "reload dice-roller", 7, Some(2.0), Via::Pm),
        "a PM carries the rank the connector found"
    );
    r.say("bob", "!roll 2d6").await;
    let (_, event) = r.next().await;
    assert_eq!(event.via, Via::Chat, "a chat command came by chat");
    assert!(r.router.stats().ignored >= 2, "the bot's echo and the PM that is no command");
    r.router.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_router_routes_private_messages_as_private_commands_on_memory_bus() {
    routes_private_messages_as_private_commands(Arc::new(MemoryBus::new())).await;
}

#[tokio::test]
async fn the_router_routes_private_messages_as_private_commands_on_nats() {
    let _turn = NATS_ROUTERS.lock().await;
    let bus = Arc::new(NatsBus::connect(&nats_url()).await.unwrap());
    routes_private_messages_as_private_commands(bus).await;
}

#[tokio::test]
async fn the_router_routes_commands_and_ignores_the_rest_on_memory_bus() {
    routes_commands_and_ignores_the_rest(Arc::new(MemoryBus::new())).await;
}

#[tokio::test]
async fn the_router_routes_commands_and_ignores_the_rest_on_nats() {
    let _turn = NATS_ROUTERS.lock().await;
    routes_commands_and_ignores_the_rest(Arc::new(NatsBus::connect(&nats_url()).await.unwrap()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_route_each_chat_line_once() {
    let _turn = NATS_ROUTERS.lock().await;
    let group = unique_prefix();
    let node_a = Arc::new(NatsBus::connect(&nats_url()).await.unwrap());
    let node_b = Arc::new(NatsBus::connect(&nats_url()).await.unwrap());
    let mut a = Routed::start(node_a, &group).await;
    let b = Routed::start(node_b, &group).await;
    a.channel = b.channel.clone();
    for i in 0..50 {
        b.say("alice", &format!("!roll {i}")).await;
    }
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 50 {
        let (_, event) = a.next().await;
        assert!(seen.insert(event.args.clone()), "{} routed twice", event.args);
    }
    b.say("alice", "!roll end").await;
    let (_, event) = a.next().await;
    assert_eq!(event.args, "end", "no duplicate arrived before the last line");
    let total = a.router.stats().routed + b.router.stats().routed;
    assert_eq!(total, 51);
    assert!(
        a.router.stats().routed > 0 && b.router.stats().routed > 0,
        "both nodes shared the work"
    );
}

/// A router on `bus` for one command owned by `plugin`, and the chat it says in a fresh channel.
async fn lone_router(
    bus: Arc<dyn EventBus>,
    command: &str,
    answer_timeout: Duration,
) -> (RouterHandle, Subscription, String) {
    let table = CommandTable::new();
    table.claim("sleepy", [(command.to_owned(), false)]).unwrap();
    let said = bus.subscribe("cytube.chat.send").await.unwrap();
    let options =
        RouterOptions { queue_group: unique_prefix(), answer_timeout, ..RouterOptions::default() };
    let router = Router::new(bus, table, options).start().await.unwrap();
    (router, said, unique_prefix())
}

/// The next line said in `channel`.
async fn said_in(said: &mut Subscription, channel: &str) -> String {
    loop {
        let msg = tokio::time::timeout(PATIENCE, said.next()).await.unwrap().unwrap();
        let send: rosey_core::event::ChatSend = msg.decode().unwrap();
        if send.channel == channel {
            return send.message;
        }
    }
}

async fn a_command_nobody_takes_is_answered_not_running(bus: Arc<dyn EventBus>) {
    let command = format!("c{}", unique_prefix().replace(['-', '.'], ""));
    let (router, mut said, channel) = lone_router(bus.clone(), &command, PATIENCE).await;
    let msg = ChatMessage::new(&channel, "alice", &format!("!{command} now"), 1);
    bus.publish_json("cytube.chat.message", &msg).await.unwrap();
    assert_eq!(said_in(&mut said, &channel).await, "❌ sleepy is not running");
    // The answer goes out before the router counts the command done: wait for the count.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while router.stats().in_flight > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = router.stats();
    assert_eq!((stats.routed, stats.not_running, stats.in_flight), (1, 1, 0));
    router.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_nobody_takes_is_answered_not_running_on_memory_bus() {
    a_command_nobody_takes_is_answered_not_running(Arc::new(MemoryBus::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_nobody_takes_is_answered_not_running_on_nats() {
    let bus = Arc::new(NatsBus::connect(&nats_url()).await.unwrap());
    a_command_nobody_takes_is_answered_not_running(bus).await;
}

async fn a_pm_command_nobody_takes_is_answered_not_running_by_pm(bus: Arc<dyn EventBus>) {
    let command = format!("c{}", unique_prefix().replace(['-', '.'], ""));
    let (router, mut said, channel) = lone_router(bus.clone(), &command, PATIENCE).await;
    let mut pms = bus.subscribe("cytube.pm.send").await.unwrap();
    let pm = PmMessage {
        channel: channel.clone(),
        user: "alice".into(),
        message: format!("!{command} now"),
        time: None,
        rank: None,
    };
    bus.publish_json("cytube.pm.message", &pm).await.unwrap();
    let answer = pm_in(&mut pms, &channel).await;
    assert_eq!(
        (answer.to.as_str(), answer.message.as_str()),
        ("alice", "❌ sleepy is not running")
    );
    // Nothing went to the channel: the next line said there is the answer to a later chat command.
    let msg = ChatMessage::new(&channel, "bob", &format!("!{command} too"), 1);
    bus.publish_json("cytube.chat.message", &msg).await.unwrap();
    assert_eq!(said_in(&mut said, &channel).await, "❌ sleepy is not running");
    assert_eq!(router.stats().not_running, 2);
    router.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pm_command_nobody_takes_is_answered_not_running_by_pm_on_memory_bus() {
    a_pm_command_nobody_takes_is_answered_not_running_by_pm(Arc::new(MemoryBus::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pm_command_nobody_takes_is_answered_not_running_by_pm_on_nats() {
    let bus = Arc::new(NatsBus::connect(&nats_url()).await.unwrap());
    a_pm_command_nobody_takes_is_answered_not_running_by_pm(bus).await;
}

/// The next PM sent through `channel`'s connection.
async fn pm_in(pms: &mut Subscription, channel: &str) -> PmSend {
    loop {
        let msg = tokio::time::timeout(PATIENCE, pms.next()).await.unwrap().unwrap();
        let send: PmSend = msg.decode().unwrap();
        if send.channel == channel {
            return send;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_commands_are_counted_and_get_no_answer() {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let (router, mut said, channel) = lone_router(bus.clone(), "nap", PATIENCE).await;
    for line in ["!dance", "!!!", "!nap.time", "hello", "!help nope"] {
        let msg = ChatMessage::new(&channel, "alice", line, 1);
        bus.publish_json("cytube.chat.message", &msg).await.unwrap();
    }
    // The first line said is the answer to the last line: the unknown ones were not answered.
    assert_eq!(said_in(&mut said, &channel).await, "❓ No command !nope");
    let stats = router.stats();
    assert_eq!(
        (stats.unknown, stats.ignored, stats.help, stats.routed),
        (3, 1, 1, 0),
        "!dance, !!! and !nap.time are unknown commands; hello is no command"
    );
    router.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_answer_never_comes_is_answered_when_the_wait_runs_out() {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let (router, mut said, channel) =
        lone_router(bus.clone(), "nap", Duration::from_millis(200)).await;
    // Someone takes the command and never answers.
    let _taker = bus.subscribe("rosey.command.nap").await.unwrap();
    let msg = ChatMessage::new(&channel, "alice", "!nap", 1);
    bus.publish_json("cytube.chat.message", &msg).await.unwrap();
    assert_eq!(said_in(&mut said, &channel).await, "❌ sleepy did not answer in time");
    assert_eq!(router.stats().unanswered, 1);
    router.shutdown().await.unwrap();
}

async fn commands_reach_their_plugin_in_chat_order(bus: Arc<dyn EventBus>) {
    let command = format!("o{}", unique_prefix().replace(['-', '.'], ""));
    let (router, _said, channel) = lone_router(bus.clone(), &command, PATIENCE).await;
    let mut taker = bus.subscribe(&format!("rosey.command.{command}")).await.unwrap();
    for i in 0..200 {
        let msg = ChatMessage::new(&channel, "alice", &format!("!{command} {i}"), 1);
        bus.publish_json("cytube.chat.message", &msg).await.unwrap();
    }
    for i in 0..200 {
        let msg = tokio::time::timeout(PATIENCE, taker.next()).await.unwrap().unwrap();
        let event: CommandEvent = msg.decode().unwrap();
        assert_eq!(event.args, i.to_string(), "in the order they were said");
        bus.respond(&msg, "{}".into()).await.unwrap();
    }
    router.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_their_plugin_in_chat_order_on_memory_bus() {
    commands_reach_their_plugin_in_chat_order(Arc::new(MemoryBus::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_their_plugin_in_chat_order_on_nats() {
    let bus = Arc::new(NatsBus::connect(&nats_url()).await.unwrap());
    commands_reach_their_plugin_in_chat_order(bus).await;
}
