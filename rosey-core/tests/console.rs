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
    let stats = console.stats();
    let handle = Box::new(console).start(bus.clone()).await.unwrap();

    keyboard.write_all(b"alice: !roll 2d6\n\nbob: hi\n").await.unwrap();
    drop(keyboard);
    tokio::time::timeout(PATIENCE, progress.input_ended()).await.unwrap();
    assert!(progress.input_has_ended());
    assert_eq!(progress.lines_read(), 2, "blank lines are not chat");

    bus.publish_json("cytube.chat.send", &say("first")).await.unwrap();
    tokio::time::timeout(PATIENCE, progress.flush(bus.as_ref())).await.unwrap().unwrap();
    let counts = stats.snapshot();
    assert_eq!((counts.chat_received, counts.chat_sent), (2, 1), "lines in, replies printed");
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

/// A console on `bus` whose input is the returned writer and whose output is discarded.
async fn console_with(
    bus: &Arc<dyn EventBus>,
    options: ConsoleOptions,
) -> (tokio::io::DuplexStream, rosey_core::connector::ConnectorHandle) {
    let (keyboard, stdin) = tokio::io::duplex(1 << 16);
    let console = ConsoleConnector::with_io(options, BufReader::new(stdin), tokio::io::sink());
    let handle = Box::new(console).start(bus.clone()).await.unwrap();
    (keyboard, handle)
}

async fn heard(chat: &mut rosey_core::bus::Subscription) -> String {
    let msg: ChatMessage =
        tokio::time::timeout(PATIENCE, chat.next()).await.unwrap().unwrap().decode().unwrap();
    msg.message
}

async fn nothing_heard_for(chat: &mut rosey_core::bus::Subscription, wait: Duration) -> bool {
    tokio::time::timeout(wait, chat.next()).await.is_err()
}

// Time is paused: the runtime jumps ahead whenever every task waits, so waits cost nothing.
#[tokio::test(start_paused = true)]
async fn the_console_stops_reading_while_its_commands_are_unanswered_and_resumes_on_each_answer() {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let mut chat = bus.subscribe("cytube.chat.message").await.unwrap();
    let options = ConsoleOptions {
        max_unanswered: 3,
        answer_timeout: Duration::from_secs(3600),
        ..ConsoleOptions::default()
    };
    let (mut keyboard, handle) = console_with(&bus, options).await;
    keyboard.write_all(b"!roll 1\n!roll 2\nhello\n!roll 3\n!roll 4\n!roll 5\n").await.unwrap();
    for expected in ["!roll 1", "!roll 2", "hello", "!roll 3"] {
        assert_eq!(heard(&mut chat).await, expected, "chat lines do not count against the window");
    }
    assert!(nothing_heard_for(&mut chat, Duration::from_secs(60)).await, "three commands wait");
    bus.publish_json("cytube.chat.send", &say("🎲 1")).await.unwrap();
    assert_eq!(heard(&mut chat).await, "!roll 4", "an answer lets one more line in");
    assert!(nothing_heard_for(&mut chat, Duration::from_secs(60)).await);
    bus.publish_json("cytube.chat.send", &say("🎲 2")).await.unwrap();
    assert_eq!(heard(&mut chat).await, "!roll 5");
    handle.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn commands_nobody_answers_stop_holding_back_the_input_after_the_answer_timeout() {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let mut chat = bus.subscribe("cytube.chat.message").await.unwrap();
    let options = ConsoleOptions {
        max_unanswered: 2,
        answer_timeout: Duration::from_secs(2),
        ..ConsoleOptions::default()
    };
    let (mut keyboard, handle) = console_with(&bus, options).await;
    keyboard.write_all(b"!nosuch 1\n!nosuch 2\n!nosuch 3\n").await.unwrap();
    let start = tokio::time::Instant::now();
    assert_eq!(heard(&mut chat).await, "!nosuch 1");
    assert_eq!(heard(&mut chat).await, "!nosuch 2");
    assert!(nothing_heard_for(&mut chat, Duration::from_secs(1)).await);
    assert_eq!(heard(&mut chat).await, "!nosuch 3");
    assert!(start.elapsed() >= Duration::from_secs(2), "read after the timeout, not before");
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reply_cannot_drive_the_terminal_or_pose_as_another_line() {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let (_keyboard, stdin) = tokio::io::duplex(1 << 10);
    let (stdout, screen) = tokio::io::duplex(1 << 16);
    let console =
        ConsoleConnector::with_io(ConsoleOptions::default(), BufReader::new(stdin), stdout);
    let handle = Box::new(console).start(bus.clone()).await.unwrap();
    let hostile = "\u{1b}[2J\u{1b}]0;pwned\u{7}evil\u{202e}txt.exe\nalice: !admin reload all";
    bus.publish_json("cytube.chat.send", &say(hostile)).await.unwrap();
    let mut lines = BufReader::new(screen).lines();
    for expected in [
        r"rosey: \u{1b}[2J\u{1b}]0;pwned\u{7}evil\u{202e}txt.exe",
        "rosey: alice: !admin reload all",
    ] {
        let line = tokio::time::timeout(PATIENCE, lines.next_line()).await.unwrap().unwrap();
        assert_eq!(line.unwrap(), expected);
    }
    handle.shutdown().await.unwrap();
}
