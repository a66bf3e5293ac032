//! The console connector over an in-memory terminal.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rosey_core::bus::{EventBus, EventBusExt, MemoryBus};
use rosey_core::connector::Connector;
use rosey_core::connector::console::{ConsoleConnector, ConsoleOptions};
use rosey_core::event::{ChatMessage, ChatSend};
use rosey_core::health::{self, HealthRegistry};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn typed_lines_become_chat_and_replies_are_printed() {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let (mut keyboard, stdin) = tokio::io::duplex(1 << 16);
    let (stdout, screen) = tokio::io::duplex(1 << 16);
    let console =
        ConsoleConnector::with_io(ConsoleOptions::default(), BufReader::new(stdin), stdout);
    let mut chat = bus.subscribe("cytube.chat.message").await.unwrap();
    let handle = Box::new(console).start(bus.clone()).await.unwrap();

    keyboard
        .write_all(b"!roll 2d6\n\nbob: !8ball will it work?\nnote: see http://x\n")
        .await
        .unwrap();
    keyboard.write_all(b"bad \xff utf8\n").await.unwrap();
    let mut heard = Vec::new();
    for _ in 0..4 {
        let msg: ChatMessage =
            tokio::time::timeout(PATIENCE, chat.next()).await.unwrap().unwrap().decode().unwrap();
        assert_eq!(msg.channel, "console");
        heard.push((msg.user, msg.message));
    }
    let expected = [
        ("console", "!roll 2d6"),
        ("bob", "!8ball will it work?"),
        ("note", "see http://x"),
        ("console", "bad \u{fffd} utf8"),
    ];
    assert_eq!(heard, expected.map(|(u, m)| (u.to_owned(), m.to_owned())));

    // End of input: replies still reach the screen.
    drop(keyboard);
    let say = |channel: &str, message: &str| ChatSend {
        channel: channel.into(),
        message: message.into(),
    };
    bus.publish_json("cytube.chat.send", &say("elsewhere", "not for the console")).await.unwrap();
    bus.publish_json("cytube.chat.send", &say("console", "🎲 [4, 3] = 7")).await.unwrap();
    let mut lines = BufReader::new(screen).lines();
    let line = tokio::time::timeout(PATIENCE, lines.next_line()).await.unwrap().unwrap().unwrap();
    assert_eq!(line, "rosey: 🎲 [4, 3] = 7");

    handle.shutdown().await.unwrap();
}

fn say(message: &str) -> ChatSend {
    ChatSend { channel: "console".into(), message: message.into() }
}

#[tokio::test]
async fn piped_input_is_counted_and_a_flush_returns_once_earlier_replies_are_printed() {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let (mut keyboard, stdin) = tokio::io::duplex(1 << 16);
    let (stdout, screen) = tokio::io::duplex(1 << 16);
    let console =
        ConsoleConnector::with_io(ConsoleOptions::default(), BufReader::new(stdin), stdout);
    let progress = console.progress();
    let handle = Box::new(console).start(bus.clone()).await.unwrap();

    keyboard.write_all(b"alice: !roll 2d6\n\nbob: hi\n").await.unwrap();
    drop(keyboard);
    tokio::time::timeout(PATIENCE, progress.input_ended()).await.unwrap();
    assert!(progress.input_has_ended());
    assert_eq!(progress.lines_read(), 2, "blank lines are not chat");

    bus.publish_json("cytube.chat.send", &say("first")).await.unwrap();
    tokio::time::timeout(PATIENCE, progress.flush(bus.as_ref())).await.unwrap().unwrap();
    bus.publish_json("cytube.chat.send", &say("second")).await.unwrap();
    let mut lines = BufReader::new(screen).lines();
    for expected in ["rosey: first", "rosey: second"] {
        let line =
            tokio::time::timeout(PATIENCE, lines.next_line()).await.unwrap().unwrap().unwrap();
        assert_eq!(line, expected, "the flush marker is not printed");
    }
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_console_reports_itself_healthy_while_running_and_stopped_after() {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let (_keyboard, stdin) = tokio::io::duplex(1 << 10);
    let health = HealthRegistry::new();
    let console = ConsoleConnector::with_io(
        ConsoleOptions::default(),
        BufReader::new(stdin),
        tokio::io::sink(),
    )
    .with_health(health.clone());
    assert!(health.component(health::CONNECTOR).is_none(), "nothing before the start");
    let handle = Box::new(console).start(bus).await.unwrap();
    let running = health.component(health::CONNECTOR).unwrap();
    assert!(running.healthy, "{running:?}");
    assert!(health.snapshot().ready);
    handle.shutdown().await.unwrap();
    let stopped = health.component(health::CONNECTOR).unwrap();
    assert_eq!((stopped.healthy, stopped.detail.as_str()), (false, "console stopped"));
}
