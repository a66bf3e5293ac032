//! The console connector over an in-memory terminal.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use rosey_core::bus::{EventBus, EventBusExt, MemoryBus};
use rosey_core::connector::Connector;
use rosey_core::connector::console::{ConsoleConnector, ConsoleOptions};
use rosey_core::event::{ChatMessage, ChatSend};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn typed_lines_become_chat_and_replies_are_printed() {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
    let (mut keyboard, stdin) = tokio::io::duplex(1 << 16);
    let (stdout, screen) = tokio::io::duplex(1 << 16);
    let console =
        ConsoleConnector::with_io(ConsoleOptions::default(), BufReader::new(stdin), stdout);
    let mut chat = bus.subscribe("cytube.chat.message").await.unwrap();
    let stop = CancellationToken::new();
    let handle = console.start(bus.clone(), stop.clone()).await.unwrap();

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

    stop.cancel();
    handle.wait().await.unwrap();
}
