//! The CyTube connector against the fake CyTube server (rosey-testkit), which replays what a real
//! CyTube 3.86 server was recorded doing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rosey_core::backoff::BackoffPolicy;
use rosey_core::bus::{EventBus, EventBusExt, MemoryBus, Subscription};
use rosey_core::config::Secret;
use rosey_core::connector::cytube::{CytubeConnector, CytubeError, CytubeOptions, UserDirectory};
use rosey_core::connector::{Connector, ConnectorError, ConnectorHandle, ConnectorStats};
use rosey_core::event::{
    ChatMessage, ChatSend, MediaChange, PmMessage, PmSend, UserJoin, UserLeave,
};
use rosey_core::health::{self, HealthRegistry};
use rosey_core::plugin::{PluginManager, ProcessRuntime};
use rosey_core::router::{Router, RouterHandle, RouterOptions};
use rosey_testkit::cytube::{Account, FakeCytube, FakeCytubeOptions, ServerEvent};
use tokio::sync::broadcast;

const PATIENCE: Duration = Duration::from_secs(15);
const CHANNEL: &str = "testchan";
const BOT: &str = "RoseyBot";

/// Options for the fake server: quick reconnects so tests do not wait on the real backoff.
fn options(server: &FakeCytube, username: &str) -> CytubeOptions {
    CytubeOptions {
        reconnect: BackoffPolicy {
            first: Duration::from_millis(10),
            base: Duration::from_millis(20),
            factor: 2,
            max: Duration::from_millis(200),
            jitter: 0.3,
        },
        handshake_timeout: Duration::from_secs(5),
        ..CytubeOptions::new(&server.url(), CHANNEL, username)
    }
}

/// A connector on its own bus, started against the fake server, reporting into its own health
/// registry.
struct Bot {
    bus: Arc<dyn EventBus>,
    users: UserDirectory,
    stats: ConnectorStats,
    health: HealthRegistry,
    handle: Option<ConnectorHandle>,
}

impl Bot {
    async fn start(options: CytubeOptions) -> Self {
        Self::try_start(options)
            .await
            .unwrap_or_else(|err| panic!("connector did not start: {err}"))
    }

    async fn try_start(options: CytubeOptions) -> Result<Self, String> {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let health = HealthRegistry::new();
        let connector = CytubeConnector::new(options).with_health(health.clone());
        let users = connector.users();
        let stats = connector.stats();
        let handle = Box::new(connector).start(bus.clone()).await.map_err(|e| e.to_string())?;
        Ok(Self { bus, users, stats, health, handle: Some(handle) })
    }

    async fn subscribe(&self, subject: &str) -> Subscription {
        self.bus.subscribe(subject).await.unwrap()
    }

    async fn say(&self, message: &str) {
        let send = ChatSend { channel: CHANNEL.to_owned(), message: message.to_owned() };
        self.bus.publish_json("cytube.chat.send", &send).await.unwrap();
    }

    /// Waits until the connector's health report satisfies `done`; returns it.
    async fn health_until(&self, done: impl Fn(bool, &str) -> bool) -> (bool, String) {
        let snapshot = tokio::time::timeout(
            PATIENCE,
            self.health.wait_for(|s| {
                s.components
                    .iter()
                    .any(|c| c.name == health::CONNECTOR && done(c.healthy, &c.detail))
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("health never matched; now {:?}", self.health.snapshot()));
        let c = snapshot.components.into_iter().find(|c| c.name == health::CONNECTOR).unwrap();
        (c.healthy, c.detail)
    }

    /// Waits for the connector to stop by itself and returns its error.
    async fn stopped_with_error(&mut self) -> String {
        let handle = self.handle.take().unwrap();
        match tokio::time::timeout(PATIENCE, handle.wait()).await {
            Ok(Err(err)) => err.to_string(),
            Ok(Ok(())) => panic!("the connector stopped without an error"),
            Err(_) => panic!("the connector did not stop"),
        }
    }

    async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(PATIENCE, handle.shutdown()).await.unwrap().unwrap();
        }
    }
}

async fn next<T: serde::de::DeserializeOwned>(subscription: &mut Subscription) -> T {
    let message = tokio::time::timeout(PATIENCE, subscription.next())
        .await
        .expect("nothing arrived on the bus in time")
        .unwrap();
    message.decode().unwrap()
}

async fn wait_for<T>(
    events: &mut broadcast::Receiver<ServerEvent>,
    f: impl FnMut(&ServerEvent) -> Option<T>,
) -> T {
    FakeCytube::wait_for(events, PATIENCE, f).await
}

/// Waits until the server accepted chat from the bot saying `text`.
async fn server_got(events: &mut broadcast::Receiver<ServerEvent>, text: &str) {
    wait_for(events, |e| match e {
        ServerEvent::Chat { user, msg, .. } if user == BOT && msg == text => Some(()),
        _ => None,
    })
    .await;
}

/// Waits until `name` logged in on the server.
async fn logged_in(events: &mut broadcast::Receiver<ServerEvent>, name: &str) {
    wait_for(events, |e| match e {
        ServerEvent::LoggedIn { name: who, .. } if who == name => Some(()),
        _ => None,
    })
    .await;
}

async fn started_server(options: FakeCytubeOptions) -> FakeCytube {
    FakeCytube::start(options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_chat_from_others_reaches_the_bus_decoded_without_history_or_echo() {
    let server = started_server(FakeCytubeOptions::default()).await;
    let channel = server.channel(CHANNEL);
    channel.join_peer("alice", 0.0);
    channel.say("alice", "said before the bot came: history");
    let bot = Bot::start(options(&server, BOT)).await;
    let mut chat = bot.subscribe("cytube.chat.message").await;
    let mut events = server.subscribe();

    bot.say("bot says <b>hi</b> & bye").await;
    server_got(&mut events, "bot says &lt;b&gt;hi&lt;/b&gt; &amp; bye").await;
    channel.say("alice", "hello <b>x</b> http://example.com");
    let first: ChatMessage = next(&mut chat).await;
    assert_eq!(
        (first.channel.as_str(), first.user.as_str(), first.message.as_str(), first.rank),
        (CHANNEL, "alice", "hello <b>x</b> http://example.com", Some(0.0)),
        "history and the bot's own echo are not delivered; HTML is decoded"
    );
    assert!(first.time > 1_700_000_000_000, "CyTube's time is kept: {}", first.time);

    channel.say("alice", "/me waves");
    let action: ChatMessage = next(&mut chat).await;
    assert_eq!(action.message, "waves");
    assert_eq!(action.meta.unwrap()["action"], true, "/me is flagged");
    let counts = bot.stats.snapshot();
    assert_eq!(
        (counts.chat_received, counts.chat_sent, counts.reconnects),
        (2, 1, 0),
        "alice's two live lines in (not the history, not the echo), the bot's one line out"
    );
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_channel_is_a_clear_error() {
    let server = started_server(FakeCytubeOptions::default()).await;
    let options = CytubeOptions { channel: "bad name!".into(), ..options(&server, BOT) };
    let err = Bot::try_start(options).await.err().unwrap();
    assert!(err.contains("bad name!") && err.contains("does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_password_is_answered_and_a_wrong_or_missing_one_is_a_clear_error() {
    let server = started_server(FakeCytubeOptions::default()).await;
    server.channel(CHANNEL).set_password(Some("letmein"));

    let err = Bot::try_start(options(&server, BOT)).await.err().unwrap();
    assert!(err.contains("set cytube.channel_password"), "{err}");

    let wrong = CytubeOptions {
        channel_password: Some(Secret::new("nope".into())),
        ..options(&server, BOT)
    };
    let err = Bot::try_start(wrong).await.err().unwrap();
    assert!(err.contains("channel password was rejected"), "{err}");
    assert!(!err.contains("nope"), "the password is not shown: {err}");

    let right = CytubeOptions {
        channel_password: Some(Secret::new("letmein".into())),
        ..options(&server, BOT)
    };
    let mut events = server.subscribe();
    let bot = Bot::start(right).await;
    bot.say("in").await;
    server_got(&mut events, "in").await;
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_and_guest_login_failures_name_the_reason() {
    let server = started_server(FakeCytubeOptions {
        accounts: vec![
            Account::new("rosey_admin", "hunter22").with_channel_rank(5.0),
            Account::new("RegBot", "regbot-pw"),
        ],
        ..FakeCytubeOptions::default()
    })
    .await;
    server.channel(CHANNEL).join_peer("alice", 0.0);
    let with_password = |pw: &str| CytubeOptions {
        password: Some(Secret::new(pw.into())),
        ..options(&server, "rosey_admin")
    };
    let err = Bot::try_start(with_password("wrong")).await.err().unwrap();
    assert!(err.contains("Invalid username/password combination"), "{err}");
    assert!(!err.contains("wrong"), "the password is not shown: {err}");
    for (name, reason) in [
        ("alice", "That name is already in use on this channel."),
        ("RegBot", "That username is registered."),
        ("rosey_admin", "That username is reserved."),
    ] {
        let err = Bot::try_start(options(&server, name)).await.err().unwrap();
        assert!(err.contains(reason), "{name}: {err}");
    }

    let bot = Bot::start(with_password("hunter22")).await;
    let mut chat = bot.subscribe("cytube.chat.message").await;
    server.channel(CHANNEL).say("alice", "hi admin");
    let _: ChatMessage = next(&mut chat).await;
    assert_eq!(bot.users.rank("rosey_admin"), Some(5.0), "the bot's channel rank");
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_login_delay_is_waited_out_and_retried() {
    let server = started_server(FakeCytubeOptions {
        guest_login_delay: Some(Duration::from_secs(2)),
        ..FakeCytubeOptions::default()
    })
    .await;
    let first = Bot::start(options(&server, "FirstBot")).await;
    let mut events = server.subscribe();
    let second = Bot::start(options(&server, BOT)).await;
    // `start` returned, so the second bot is logged in: after a refusal and a wait, it tried twice.
    let mut logins = 0;
    while logins < 2 {
        wait_for(&mut events, |e| match e {
            ServerEvent::Received { frame, .. }
                if frame.starts_with(r#"42["login",{"name":"RoseyBot""#) =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
        logins += 1;
    }
    second.say("made it").await;
    server_got(&mut events, "made it").await;
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_messages_go_both_ways() {
    let server = started_server(FakeCytubeOptions::default()).await;
    let channel = server.channel(CHANNEL);
    channel.join_peer("alice", 2.0);
    let bot = Bot::start(options(&server, BOT)).await;
    let mut pms = bot.subscribe("cytube.pm.message").await;
    let mut events = server.subscribe();

    channel.pm("alice", BOT, "hi bot, <b>psst</b>");
    let pm: PmMessage = next(&mut pms).await;
    assert_eq!(
        (pm.user.as_str(), pm.message.as_str(), pm.rank),
        ("alice", "hi bot, <b>psst</b>", Some(2.0)),
        "decoded, with the sender's rank from the user list"
    );

    let send = PmSend { channel: CHANNEL.into(), to: "alice".into(), message: "psst back".into() };
    bot.bus.publish_json("cytube.pm.send", &send).await.unwrap();
    let (to, msg) = wait_for(&mut events, |e| match e {
        ServerEvent::Pm { from, to, msg, .. } if from == BOT => Some((to.clone(), msg.clone())),
        _ => None,
    })
    .await;
    assert_eq!((to.as_str(), msg.as_str()), ("alice", "psst back"));
    let counts = bot.stats.snapshot();
    assert_eq!((counts.chat_received, counts.chat_sent), (1, 1), "PMs count as chat in and out");
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_table_follows_the_channel_and_joins_and_leaves_are_published() {
    let server = started_server(FakeCytubeOptions::default()).await;
    let channel = server.channel(CHANNEL);
    channel.join_peer("alice", 2.0);
    let bot = Bot::start(options(&server, BOT)).await;
    let users = bot.users.clone();
    assert_eq!(users.rank("alice"), Some(2.0), "from the join's userlist");
    let mut joins = bot.subscribe("cytube.user.join").await;
    let mut leaves = bot.subscribe("cytube.user.leave").await;
    let mut chat = bot.subscribe("cytube.chat.message").await;

    channel.join_peer("bob", 0.0);
    let join: UserJoin = next(&mut joins).await;
    assert_eq!((join.user.as_str(), join.rank), ("bob", Some(0.0)));
    channel.set_rank("bob", 1.5);
    channel.set_afk("bob", true);
    channel.say("bob", "ranked");
    let said: ChatMessage = next(&mut chat).await;
    assert_eq!(said.rank, Some(1.5), "a chat line carries the sender's current rank");
    assert!(users.get("bob").unwrap().afk);

    channel.leave_peer("bob");
    let leave: UserLeave = next(&mut leaves).await;
    assert_eq!(leave.user, "bob");
    assert!(users.get("bob").is_none());
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_changes_are_published() {
    let server = started_server(FakeCytubeOptions::default()).await;
    let bot = Bot::start(options(&server, BOT)).await;
    let mut media = bot.subscribe("cytube.media.change").await;
    server.channel(CHANNEL).change_media("A: custom, 60 s", "cu", "cu:abc", 60.0);
    let change: MediaChange = next(&mut media).await;
    assert_eq!(
        (change.title.as_str(), change.media_type.as_deref(), change.duration),
        ("A: custom, 60 s", Some("cu"), Some(60.0))
    );
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_replies_are_split_on_word_boundaries() {
    let server = started_server(FakeCytubeOptions::default()).await;
    let bot = Bot::start(options(&server, BOT)).await;
    let mut events = server.subscribe();
    let words: Vec<String> = (0..100).map(|i| format!("word{i}")).collect();
    bot.say(&words.join(" ")).await;
    let mut pieces = Vec::new();
    while pieces.join(" ") != words.join(" ") {
        pieces.push(
            wait_for(&mut events, |e| match e {
                ServerEvent::Chat { user, msg, .. } if user == BOT => Some(msg.clone()),
                _ => None,
            })
            .await,
        );
    }
    assert!(pieces.len() >= 2 && pieces.iter().all(|p| p.chars().count() <= 320), "{pieces:?}");
    bot.stop().await;
}

/// Sends `count` numbered lines and returns what the server accepted from the bot, in order, once
/// every line arrived; counts the lines the server dropped with `cooldown`.
async fn burst(bot: &Bot, server: &FakeCytube, count: usize, cut_after: Option<usize>) -> usize {
    let mut events = server.subscribe();
    for i in 0..count {
        bot.say(&format!("line {i}")).await;
    }
    let (seen, dropped) = bot_lines(server, &mut events, count, cut_after).await;
    let expected: Vec<String> = (0..count).map(|i| format!("line {i}")).collect();
    assert_eq!(seen, expected, "every line arrived, in order");
    dropped
}

/// The first `count` different lines the server accepted from the bot, in order, and how many it
/// dropped meanwhile (`cooldown`); the connections are dropped once `cut_after` lines arrived.
async fn bot_lines(
    server: &FakeCytube,
    events: &mut broadcast::Receiver<ServerEvent>,
    count: usize,
    cut_after: Option<usize>,
) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut dropped = 0;
    while seen.len() < count {
        let event = wait_for(events, |e| match e {
            ServerEvent::Chat { user, .. } | ServerEvent::ChatDropped { user, .. }
                if user == BOT =>
            {
                Some(e.clone())
            }
            _ => None,
        })
        .await;
        match event {
            ServerEvent::Chat { msg, .. } => {
                // After a cut, what was in flight may arrive twice (at least once, never lost).
                if !seen.contains(&msg) {
                    seen.push(msg);
                }
                if Some(seen.len()) == cut_after {
                    server.drop_connections();
                }
            }
            _ => dropped += 1,
        }
    }
    (seen, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_stays_under_the_flood_limit_and_nothing_is_dropped() {
    let server = started_server(FakeCytubeOptions::default()).await;
    let bot = Bot::start(options(&server, BOT)).await;
    assert_eq!(burst(&bot, &server, 30, None).await, 0, "the server never had to drop a line");
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_the_server_drops_with_a_cooldown_are_sent_again() {
    let server = started_server(FakeCytubeOptions::default()).await;
    // A limiter far above CyTube's, so the server's own flood limit has to step in.
    let greedy =
        CytubeOptions { rate_burst: 1000, rate_per_second: 1000.0, ..options(&server, BOT) };
    let bot = Bot::start(greedy).await;
    let dropped = burst(&bot, &server, 30, None).await;
    assert!(dropped > 0, "the server's cooldown was exercised");
    assert!(bot.stats.snapshot().cooldowns > 0, "the cooldowns are counted");
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channels_stricter_antiflood_is_followed() {
    let server = started_server(FakeCytubeOptions::default()).await;
    server.channel(CHANNEL).set_antiflood(Some((3, 5.0, 1)));
    let bot = Bot::start(options(&server, BOT)).await;
    assert_eq!(burst(&bot, &server, 10, None).await, 0, "paced to the channel's own limit");
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_replies_under_the_recorded_antiflood_draw_no_cooldown() {
    // The antiflood recorded from a real channel: burst 4, sustained 1, cooldown 4 (about 30 s).
    let server = started_server(FakeCytubeOptions::default()).await;
    server.channel(CHANNEL).set_antiflood(Some((4, 1.0, 4)));
    let bot = Bot::start(options(&server, BOT)).await;
    assert_eq!(burst(&bot, &server, 30, None).await, 0, "the server never answered `cooldown`");
    assert_eq!(bot.stats.snapshot().cooldowns, 0);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_cut_in_the_middle_of_a_burst_loses_nothing() {
    let server = started_server(FakeCytubeOptions::default()).await;
    let bot = Bot::start(options(&server, BOT)).await;
    let mut events = server.subscribe();
    burst(&bot, &server, 30, Some(8)).await;
    // It really reconnected: a second login after the first.
    logged_in(&mut events, BOT).await;
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_and_a_silent_connection_is_replaced() {
    let server = started_server(FakeCytubeOptions {
        ping_interval: Duration::from_millis(50),
        ping_timeout: Duration::from_millis(300),
        ..FakeCytubeOptions::default()
    })
    .await;
    let mut events = server.subscribe();
    let bot = Bot::start(options(&server, BOT)).await;
    for _ in 0..3 {
        wait_for(&mut events, |e| matches!(e, ServerEvent::Pong { .. }).then_some(())).await;
    }
    bot.say("still here").await;
    server_got(&mut events, "still here").await;

    // The network goes dark: no pings, no close. The bot notices by itself and connects again.
    server.stall_connections();
    bot.say("after the silence").await;
    logged_in(&mut events, BOT).await;
    server_got(&mut events, "after the silence").await;
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refusing_connections_is_retried_until_it_accepts() {
    let server = started_server(FakeCytubeOptions {
        connect_limit: Some(1),
        ..FakeCytubeOptions::default()
    })
    .await;
    let patient =
        CytubeOptions { refused_delay: Duration::from_millis(50), ..options(&server, BOT) };
    let bot = Bot::start(patient).await;
    let mut events = server.subscribe();
    server.drop_connections();
    bot.say("queued while refused").await;
    // `40` answered with `44 Rate limit exceeded`, twice: the connector keeps trying.
    for _ in 0..2 {
        wait_for(&mut events, |e| match e {
            ServerEvent::Received { frame, .. } if frame == "40" => Some(()),
            _ => None,
        })
        .await;
    }
    server.reset_connect_limit();
    logged_in(&mut events, BOT).await;
    server_got(&mut events, "queued while refused").await;
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_drops_its_oldest_lines_counts_them_and_sends_the_newest() {
    let server = started_server(FakeCytubeOptions {
        connect_limit: Some(1),
        ..FakeCytubeOptions::default()
    })
    .await;
    let small = CytubeOptions {
        outbox_capacity: 10,
        refused_delay: Duration::from_millis(50),
        ..options(&server, BOT)
    };
    let bot = Bot::start(small).await;
    let mut events = server.subscribe();
    server.drop_connections();
    // The server refuses the reconnect: what the bot says now can only wait in its outbox.
    wait_for(&mut events, |e| match e {
        ServerEvent::Received { frame, .. } if frame == "40" => Some(()),
        _ => None,
    })
    .await;
    for i in 0..30 {
        bot.say(&format!("line {i}")).await;
    }
    tokio::time::timeout(PATIENCE, async {
        while bot.stats.outbox_dropped() < 20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the outbox never dropped its overflow");
    assert_eq!((bot.stats.outbox_dropped(), bot.stats.outbox_queued()), (20, 10));
    server.reset_connect_limit();
    logged_in(&mut events, BOT).await;
    server_got(&mut events, "line 29").await;
    let said: Vec<String> = server
        .channel(CHANNEL)
        .chat_log()
        .into_iter()
        .filter(|(user, _)| user == BOT)
        .map(|(_, msg)| msg)
        .collect();
    let newest: Vec<String> = (20..30).map(|i| format!("line {i}")).collect();
    assert_eq!(said, newest, "the oldest 20 were dropped, the newest 10 sent in order");
    assert_eq!(bot.stats.outbox_queued(), 0);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kick_the_bot_rejoins_and_sends_what_was_queued() {
    let server = started_server(FakeCytubeOptions::default()).await;
    let channel = server.channel(CHANNEL);
    let bot = Bot::start(options(&server, BOT)).await;
    let mut events = server.subscribe();
    channel.kick(BOT, "be nice");
    bot.say("back again").await;
    logged_in(&mut events, BOT).await;
    server_got(&mut events, "back again").await;
    assert_eq!(bot.stats.snapshot().reconnects, 1, "the rejoin is counted as a reconnect");
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_login_stops_the_connector_instead_of_fighting() {
    let server = started_server(FakeCytubeOptions {
        accounts: vec![Account::new("rosey_admin", "hunter22")],
        ..FakeCytubeOptions::default()
    })
    .await;
    let registered = CytubeOptions {
        password: Some(Secret::new("hunter22".into())),
        ..options(&server, "rosey_admin")
    };
    let mut first = Bot::start(registered.clone()).await;
    let second = Bot::start(registered).await;
    let err = first.stopped_with_error().await;
    assert!(err.contains("Duplicate login"), "{err}");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_stops_the_connector_with_a_clear_error() {
    let server = started_server(FakeCytubeOptions::default()).await;
    let bot = Bot::start(options(&server, BOT)).await;
    server.channel(CHANNEL).ban(BOT);
    // Embedders can tell why: the typed error comes through.
    let ended = tokio::time::timeout(PATIENCE, bot.handle.unwrap().wait()).await.unwrap();
    match ended {
        Err(ConnectorError::Cytube(CytubeError::Kicked(reason))) => {
            assert!(reason.contains("banned"), "{reason}");
        }
        other => panic!("expected a kick for a ban, got {other:?}"),
    }
    let gone = bot.health.component(health::CONNECTOR).unwrap();
    assert!(!gone.healthy && gone.detail.starts_with("disconnected: "), "{gone:?}");
    assert!(gone.detail.contains("banned"), "the health says why: {gone:?}");
}

/// What a user meets: the bundled plugins, the router and the connector on one bus, logged in to
/// `server` as [`BOT`].
struct Node {
    manager: PluginManager,
    router: RouterHandle,
    connector: ConnectorHandle,
}

impl Node {
    async fn start(server: &FakeCytube) -> Self {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let manager = PluginManager::new(bus.clone(), Arc::new(ProcessRuntime::new()));
        let errors =
            manager.load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins")).await;
        assert!(errors.is_empty(), "{errors:?}");
        manager.wait_running("dice-roller", PATIENCE).await.unwrap();
        let router_options =
            RouterOptions { bot_name: Some(BOT.into()), ..RouterOptions::default() };
        let router = Router::new(bus.clone(), manager.command_table(), router_options)
            .start()
            .await
            .unwrap();
        let connector: Box<dyn Connector> = Box::new(CytubeConnector::new(options(server, BOT)));
        let connector = connector.start(bus.clone()).await.unwrap();
        Self { manager, router, connector }
    }

    async fn stop(self) {
        self.connector.shutdown().await.unwrap();
        self.router.shutdown().await.unwrap();
        self.manager.shutdown().await;
    }
}

/// The next line the bot says in the channel.
async fn bot_says(events: &mut broadcast::Receiver<ServerEvent>) -> String {
    wait_for(events, |e| match e {
        ServerEvent::Chat { user, msg, .. } if user == BOT => Some(msg.clone()),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_typed_in_the_channel_is_answered_by_the_dice_roller() {
    let server = started_server(FakeCytubeOptions::default()).await;
    let channel = server.channel(CHANNEL);
    channel.join_peer("alice", 0.0);
    let node = Node::start(&server).await;

    let mut events = server.subscribe();
    channel.say("alice", "!roll 2d6");
    let reply = bot_says(&mut events).await;
    assert!(reply.starts_with("🎲 [") && reply.contains("] = "), "{reply}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_sent_by_pm_is_answered_by_pm_and_not_in_the_channel() {
    let server = started_server(FakeCytubeOptions::default()).await;
    let channel = server.channel(CHANNEL);
    channel.join_peer("alice", 0.0);
    let node = Node::start(&server).await;

    let mut events = server.subscribe();
    channel.pm("alice", BOT, "!roll 2d6");
    let (to, reply) = wait_for(&mut events, |e| match e {
        ServerEvent::Pm { from, to, msg, .. } if from == BOT => Some((to.clone(), msg.clone())),
        _ => None,
    })
    .await;
    assert_eq!(to, "alice");
    assert!(reply.starts_with("🎲 [") && reply.contains("] = "), "{reply}");
    // The first thing the bot says in the channel afterwards answers a later chat command: the PM
    // command left nothing there, and the echo of the bot's own PM started no loop.
    channel.say("alice", "!help flip");
    assert_eq!(bot_says(&mut events).await, "!flip — Flip a coin · usage: !flip");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_reports_joined_reconnecting_and_stopped_into_health() {
    let server = started_server(FakeCytubeOptions::default()).await;
    // Reconnects that take a while, so the "reconnecting" report lasts long enough to be seen.
    let slow = CytubeOptions {
        reconnect: BackoffPolicy {
            first: Duration::from_millis(500),
            base: Duration::from_millis(500),
            factor: 2,
            max: Duration::from_secs(1),
            jitter: 0.3,
        },
        ..options(&server, BOT)
    };
    let bot = Bot::start(slow).await;
    let joined = bot.health.component(health::CONNECTOR).unwrap();
    assert!(joined.healthy, "{joined:?}");
    assert_eq!(joined.detail, format!("joined {CHANNEL} as {BOT}"));
    assert!(bot.health.snapshot().ready);

    server.drop_connections();
    let (healthy, detail) = bot.health_until(|healthy, _| !healthy).await;
    assert!(!healthy && detail.starts_with("reconnecting: "), "{detail}");
    assert!(!bot.health.snapshot().ready, "a node whose connector is away is not ready");
    let (_, detail) = bot.health_until(|healthy, _| healthy).await;
    assert_eq!(detail, format!("joined {CHANNEL} as {BOT}"), "joined again");

    let health = bot.health.clone();
    bot.stop().await;
    let stopped = health.component(health::CONNECTOR).unwrap();
    assert_eq!((stopped.healthy, stopped.detail.as_str()), (false, "stopped"));
}

/// Waits until the server accepted chat from `user` saying `text`.
async fn server_got_from(events: &mut broadcast::Receiver<ServerEvent>, user: &str, text: &str) {
    wait_for(events, |e| match e {
        ServerEvent::Chat { user: who, msg, .. } if who == user && msg == text => Some(()),
        _ => None,
    })
    .await;
}

/// Logs in as `name` (password `hunter22`) on a server where that account has `rank` in every channel.
async fn account_server(name: &str, rank: Option<f64>) -> FakeCytube {
    let account = Account::new(name, "hunter22");
    let account = match rank {
        Some(rank) => account.with_channel_rank(rank),
        None => account,
    };
    started_server(FakeCytubeOptions { accounts: vec![account], ..FakeCytubeOptions::default() })
        .await
}

fn logging_in(server: &FakeCytube, name: &str) -> CytubeOptions {
    CytubeOptions { password: Some(Secret::new("hunter22".into())), ..options(server, name) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_joins_a_password_channel_without_the_password() {
    // As recorded (`moderator_password`): CyTube lets a logged-in moderator in without the channel
    // password (`needPassword`, login, rank 2, the join burst, `cancelNeedPassword`).
    let server = account_server("RoseyMod", Some(2.0)).await;
    let channel = server.channel(CHANNEL);
    channel.set_registered(true);
    channel.set_password(Some("letmein"));
    channel.join_peer("alice", 0.0);
    let mut events = server.subscribe();
    let bot = Bot::start(logging_in(&server, "RoseyMod")).await;
    let (healthy, detail) = bot.health_until(|healthy, _| healthy).await;
    assert!(healthy && detail == "joined testchan as RoseyMod", "{detail}");
    bot.say("a moderator needs no password").await;
    server_got_from(&mut events, "RoseyMod", "a moderator needs no password").await;
    let mut chat = bot.subscribe("cytube.chat.message").await;
    channel.say("alice", "hi mod");
    let line: ChatMessage = next(&mut chat).await;
    assert_eq!((line.user.as_str(), line.message.as_str()), ("alice", "hi mod"));
    assert_eq!(bot.users.rank("RoseyMod"), Some(2.0));
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_or_guest_without_the_channel_password_is_told_why_after_logging_in() {
    let server = account_server("RoseyMember", None).await;
    server.channel(CHANNEL).set_password(Some("letmein"));
    let started = std::time::Instant::now();
    let err = Bot::try_start(logging_in(&server, "RoseyMember")).await.err().unwrap();
    assert!(err.contains("set cytube.channel_password"), "{err}");
    assert!(err.contains("logged in as RoseyMember with rank 1"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "a few seconds, not the whole timeout");
    let err = Bot::try_start(options(&server, "RoseyGuest")).await.err().unwrap();
    assert!(err.contains("with rank 0") && err.contains("set cytube.channel_password"), "{err}");
}

/// A connector started in the background, with the health registry to watch it retry.
struct Starting {
    health: HealthRegistry,
    task: tokio::task::JoinHandle<Result<ConnectorHandle, ConnectorError>>,
}

impl Starting {
    fn spawn(options: CytubeOptions) -> Self {
        let health = HealthRegistry::new();
        let connector = CytubeConnector::new(options).with_health(health.clone());
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let task = tokio::spawn(Box::new(connector).start(bus));
        Self { health, task }
    }

    /// Waits until the connector reports a failed attempt whose reason contains `why`.
    async fn retrying(&self, why: &str) {
        tokio::time::timeout(
            PATIENCE,
            self.health.wait_for(|s| {
                s.components.iter().any(|c| {
                    c.name == health::CONNECTOR
                        && !c.healthy
                        && c.detail.starts_with("joining testchan: ")
                        && c.detail.contains(why)
                })
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("no retry after {why:?}; health {:?}", self.health.snapshot()));
    }

    async fn joined(self) -> ConnectorHandle {
        let started = tokio::time::timeout(PATIENCE, self.task).await.expect("joined in time");
        started.unwrap().unwrap_or_else(|err| panic!("the start failed: {err}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passing_failures_at_start_are_retried_until_the_bot_joins() {
    let server = started_server(FakeCytubeOptions {
        connect_limit: Some(0),
        ..FakeCytubeOptions::default()
    })
    .await;
    let mut events = server.subscribe();
    // The site answers 503, then refuses the socket.io connection (`Rate limit exceeded`).
    server.fail_http(Some(503));
    let patient =
        CytubeOptions { refused_delay: Duration::from_millis(50), ..options(&server, BOT) };
    let starting = Starting::spawn(patient);
    starting.retrying("503").await;
    server.fail_http(None);
    starting.retrying("Rate limit exceeded").await;
    server.set_connect_limit(None);
    logged_in(&mut events, BOT).await;
    let handle = starting.joined().await;
    tokio::time::timeout(PATIENCE, handle.shutdown()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_at_start_is_retried_until_it_answers() {
    let server = started_server(FakeCytubeOptions::default()).await;
    let proxy = rosey_testkit::proxy::FaultProxy::start_for_url(&server.url()).await.unwrap();
    proxy.cut();
    let through_proxy =
        CytubeOptions { server: proxy.proxied_url(&server.url()), ..options(&server, BOT) };
    let mut events = server.subscribe();
    let starting = Starting::spawn(through_proxy);
    starting.retrying("cannot find the channel's server").await;
    proxy.resume();
    logged_in(&mut events, BOT).await;
    let handle = starting.joined().await;
    tokio::time::timeout(PATIENCE, handle.shutdown()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_timeout_bounds_retrying_at_start_and_permanent_errors_stop_at_once() {
    let server = started_server(FakeCytubeOptions::default()).await;
    server.fail_http(Some(502));
    let bounded = CytubeOptions {
        connect_timeout: Some(Duration::from_millis(800)),
        ..options(&server, BOT)
    };
    let started = std::time::Instant::now();
    let err = Bot::try_start(bounded).await.err().unwrap();
    assert!(err.contains("not joined within 800ms (cytube.connect_timeout)"), "{err}");
    assert!(err.contains("502"), "the last failure is named: {err}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400) && waited < Duration::from_secs(3), "{waited:?}");

    // A wrong password is not retried, even without a connect timeout.
    server.fail_http(None);
    let server = account_server("RoseyReg", None).await;
    let wrong = CytubeOptions {
        password: Some(Secret::new("wrong".into())),
        ..options(&server, "RoseyReg")
    };
    let started = std::time::Instant::now();
    let err = Bot::try_start(wrong).await.err().unwrap();
    assert!(err.contains("Invalid username/password combination"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "not retried: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_from_cytubes_chat_filters_reaches_plugins_as_typed() {
    // A registered channel has CyTube's default filters: `_x_` arrives as `<em>x</em>`, and so on.
    let server = started_server(FakeCytubeOptions::default()).await;
    let channel = server.channel(CHANNEL);
    channel.set_registered(true);
    channel.join_peer("alice", 0.0);
    let bot = Bot::start(options(&server, BOT)).await;
    let mut chat = bot.subscribe("cytube.chat.message").await;
    let mut pms = bot.subscribe("cytube.pm.message").await;
    let lines = [
        "!quote add snake_case_name",
        "*bold* `code` ~~gone~~ [sp]secret[/sp]",
        "see http://example.com/a_b_c for _more_",
    ];
    for line in lines {
        channel.say("alice", line);
        let got: ChatMessage = next(&mut chat).await;
        assert_eq!(got.message, line);
    }
    let log = channel.chat_log();
    assert!(log.iter().any(|(_, msg)| msg == "!quote add snake<em>case</em>name"), "{log:?}");
    channel.pm("alice", BOT, "!roll _1d6_");
    let pm: PmMessage = next(&mut pms).await;
    assert_eq!(pm.message, "!roll _1d6_", "PMs are filtered too, and read back");
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_lines_that_pass_cytubes_limiter_twice_draw_no_cooldown() {
    // `/me text` goes through CyTube's limiter as the line and again as the message it sends.
    let server = started_server(FakeCytubeOptions::default()).await;
    server.channel(CHANNEL).set_antiflood(Some((3, 5.0, 1)));
    let bot = Bot::start(options(&server, BOT)).await;
    let mut events = server.subscribe();
    let lines: Vec<String> = (0..8)
        .map(|i| if i % 2 == 0 { format!("/me waves {i}") } else { format!("line {i}") })
        .collect();
    for line in &lines {
        bot.say(line).await;
    }
    let (seen, dropped) = bot_lines(&server, &mut events, lines.len(), None).await;
    assert_eq!(dropped, 0, "the server dropped no line");
    let expected: Vec<String> =
        lines.iter().map(|l| l.strip_prefix("/me ").unwrap_or(l).to_owned()).collect();
    assert_eq!(seen, expected, "every line, in order");
    assert_eq!(bot.stats.snapshot().cooldowns, 0);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pms_the_server_drops_with_a_cooldown_are_sent_again_and_not_mistaken_for_chat() {
    let server = started_server(FakeCytubeOptions::default()).await;
    server.channel(CHANNEL).join_peer("alice", 0.0);
    // A limiter far above CyTube's, so the server's own flood limit (shared by chat and PMs) drops
    // some of each.
    let greedy =
        CytubeOptions { rate_burst: 1000, rate_per_second: 1000.0, ..options(&server, BOT) };
    let bot = Bot::start(greedy).await;
    let mut events = server.subscribe();
    for i in 0..15 {
        bot.say(&format!("line {i}")).await;
        let pm = PmSend { channel: CHANNEL.into(), to: "alice".into(), message: format!("pm {i}") };
        bot.bus.publish_json("cytube.pm.send", &pm).await.unwrap();
    }
    let (mut lines, mut pms) = (Vec::new(), Vec::new());
    while lines.len() + pms.len() < 30 {
        let event = wait_for(&mut events, |e| match e {
            ServerEvent::Chat { user, .. } | ServerEvent::ChatDropped { user, .. }
                if user == BOT =>
            {
                Some(e.clone())
            }
            ServerEvent::Pm { from, .. } if from == BOT => Some(e.clone()),
            _ => None,
        })
        .await;
        match event {
            ServerEvent::Chat { msg, .. } => lines.push(msg),
            ServerEvent::Pm { msg, .. } => pms.push(msg),
            _ => {}
        }
    }
    assert_eq!(lines, (0..15).map(|i| format!("line {i}")).collect::<Vec<_>>(), "each line once");
    assert_eq!(pms, (0..15).map(|i| format!("pm {i}")).collect::<Vec<_>>(), "each PM once");
    assert!(bot.stats.snapshot().cooldowns > 0, "the server's cooldown was exercised");
    bot.stop().await;
}
