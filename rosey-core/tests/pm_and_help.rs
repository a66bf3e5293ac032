//! Commands sent by private message and `!help`, through the router and real plugin processes: the
//! bundled plugins and the test plugin (`tests/plugins/testbed.py`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rosey_core::bus::{EventBus, EventBusExt, MemoryBus, Subscription};
use rosey_core::event::{ChatMessage, ChatSend, PmMessage, PmSend};
use rosey_core::plugin::{Manifest, PluginManager, ProcessRuntime};
use rosey_core::router::{Router, RouterHandle, RouterOptions};

use crate::plugins::testbed_manifest;
use crate::support::unique_prefix;

/// Generous bound for anything that involves starting a process.
const PATIENCE: Duration = Duration::from_secs(20);

const BOT: &str = "RoseyBot";

/// Plugins, the router and what the bot says, on one in-process bus, in a fresh channel.
struct Chat {
    bus: Arc<dyn EventBus>,
    manager: PluginManager,
    router: RouterHandle,
    channel: String,
    said: Subscription,
    pms: Subscription,
}

impl Chat {
    async fn new() -> Self {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let manager = PluginManager::new(bus.clone(), Arc::new(ProcessRuntime::new()));
        let said = bus.subscribe("cytube.chat.send").await.unwrap();
        let pms = bus.subscribe("cytube.pm.send").await.unwrap();
        let options = RouterOptions { bot_name: Some(BOT.into()), ..RouterOptions::default() };
        let router =
            Router::new(bus.clone(), manager.command_table(), options).start().await.unwrap();
        Self { bus, manager, router, channel: unique_prefix(), said, pms }
    }

    /// With the bundled plugins (`plugins/`), the dice-roller and the 8-ball running.
    async fn bundled() -> Self {
        let chat = Self::new().await;
        let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
        let errors = chat.manager.load_dir(&plugins).await;
        assert!(errors.is_empty(), "{errors:?}");
        for name in ["dice-roller", "8ball"] {
            chat.manager.wait_running(name, PATIENCE).await.unwrap();
        }
        chat
    }

    /// Adds a plugin and waits until it serves.
    async fn start(&self, manifest: Manifest) {
        let name = manifest.name.clone();
        self.manager.add(manifest).await.unwrap();
        self.manager.wait_running(&name, PATIENCE).await.unwrap();
    }

    /// `user` says `line` in the channel.
    async fn say(&self, user: &str, line: &str) {
        let chat = ChatMessage::new(&self.channel, user, line, 1);
        self.bus.publish_json("cytube.chat.message", &chat).await.unwrap();
    }

    /// `user` sends the bot `line` by PM.
    async fn pm(&self, user: &str, line: &str) {
        let pm = PmMessage {
            channel: self.channel.clone(),
            user: user.to_owned(),
            message: line.to_owned(),
            time: None,
            rank: None,
        };
        self.bus.publish_json("cytube.pm.message", &pm).await.unwrap();
    }

    /// The next line the bot says in the channel.
    async fn said(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.said.next()).await.unwrap().unwrap();
            let send: ChatSend = msg.decode().unwrap();
            if send.channel == self.channel {
                return send.message;
            }
        }
    }

    /// The next PM the bot sends through the channel's connection: to whom, and what.
    async fn pm_sent(&mut self) -> (String, String) {
        loop {
            let msg = tokio::time::timeout(PATIENCE, self.pms.next()).await.unwrap().unwrap();
            let send: PmSend = msg.decode().unwrap();
            if send.channel == self.channel {
                return (send.to, send.message);
            }
        }
    }

    async fn stop(self) {
        self.router.shutdown().await.unwrap();
        self.manager.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_sent_by_pm_is_answered_by_pm_to_the_sender_and_nothing_is_said_in_the_channel() {
    let mut chat = Chat::bundled().await;
    chat.pm("alice", "!roll 2d6").await;
    let (to, reply) = chat.pm_sent().await;
    assert_eq!(to, "alice");
    assert!(reply.starts_with("🎲 [") && reply.contains("] = "), "{reply}");
    // The first line said in the channel afterwards answers a later chat command.
    chat.say("bob", "!roll 21d6").await;
    assert_eq!(chat.said().await, "❌ At most 20 dice");
    chat.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_the_bundled_plugins_commands_and_shows_each_ones_usage() {
    let mut chat = Chat::bundled().await;
    chat.say("alice", "!help").await;
    assert_eq!(
        chat.said().await,
        "Commands: !8ball, !flip, !quote, !roll — !help <command> for more"
    );
    chat.say("alice", "!help roll").await;
    assert_eq!(
        chat.said().await,
        "!roll — Roll dice · usage: !roll [N]d<S>[+/-M], e.g. !roll 2d6+1"
    );
    chat.say("alice", "!help !8ball").await;
    assert_eq!(
        chat.said().await,
        "!8ball — Ask the Magic 8-Ball a yes/no question · usage: !8ball <question>"
    );
    chat.say("alice", "!help nope").await;
    assert_eq!(chat.said().await, "❓ No command !nope");
    // Asked by PM, answered by PM.
    chat.pm("bob", "!help flip").await;
    assert_eq!(chat.pm_sent().await, ("bob".into(), "!flip — Flip a coin · usage: !flip".into()));
    let stats = chat.router.stats();
    assert_eq!((stats.help, stats.routed, stats.unknown), (5, 0, 0));
    chat.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_owns_help_answers_it_instead_of_the_router() {
    let mut chat = Chat::new().await;
    chat.start(testbed_manifest("helper", "help", &[], "")).await;
    chat.say("alice", "!help echo mine").await;
    // Had the router answered too, its line would have come first: it speaks before routing.
    assert_eq!(chat.said().await, "mine");
    let stats = chat.router.stats();
    assert_eq!((stats.help, stats.routed), (0, 1));
    chat.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_subscribed_to_pms_replies_by_pm() {
    let mut chat = Chat::new().await;
    let subscribes = "subscribe = [\"cytube.pm.message\"]";
    chat.start(testbed_manifest("listener", "listen", &[], subscribes)).await;
    // Not a command: only the plugin's subscription takes it.
    chat.pm("alice", "echo yes").await;
    assert_eq!(chat.pm_sent().await, ("alice".into(), "yes".into()));
    // The same plugin's command said in the channel is answered in the channel.
    chat.say("bob", "!listen echo out loud").await;
    assert_eq!(chat.said().await, "out loud");
    chat.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_host_says_about_a_private_command_goes_by_pm_too() {
    let mut chat = Chat::new().await;
    let toml = "[timeouts]\nevent_secs = 0.3";
    chat.start(testbed_manifest("dozy", "dozy", &[], toml)).await;
    chat.pm("alice", "!dozy hang").await;
    assert_eq!(chat.pm_sent().await, ("alice".into(), "❌ dozy did not answer in time".into()));
    chat.manager.stop("dozy").await.unwrap();
    chat.pm("alice", "!dozy echo hi").await;
    assert_eq!(chat.pm_sent().await, ("alice".into(), "❌ dozy is not running".into()));
    // Nothing of it was said in the channel.
    chat.say("bob", "!help dozy").await;
    assert_eq!(chat.said().await, "!dozy — a command of dozy");
    chat.stop().await;
}
