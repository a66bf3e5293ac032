//! [`ConsoleConnector`]: chat on the terminal, for trying Rosey locally.
//!
//! Each input line is a chat message: `bob: !roll 2d6` comes from user `bob`; a line without a one-word
//! `name: ` prefix (such as `!roll 2d6` or `see http://x`) comes from user `console`. Lines go
//! to `cytube.chat.message` in the channel `console`. What the bot says in that channel
//! (`cytube.chat.send`) is printed as `rosey: <message>`.
//!
//! End of input (Ctrl-D, or the end of a pipe) stops reading but not the bot: replies to what was
//! typed are still printed until the bot is stopped (Ctrl-C), so `echo '!roll 2d6' | rosey run` shows
//! the roll. Lines over 64 KiB are ignored with a warning; invalid UTF-8 is replaced, never fatal.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use rosey_plugin::framing::{Framed, LineFramer};
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::StreamReader;
use tokio_util::sync::CancellationToken;

use super::{Connector, ConnectorError, ConnectorHandle};
use crate::bus::{EventBus, EventBusExt};
use crate::event::{ChatMessage, ChatSend, now_millis};
use crate::lines::read_line;
use crate::subject;

/// Longest input line; a longer one is ignored with a warning.
const MAX_LINE: usize = 64 * 1024;

/// Names and channel of the console chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleOptions {
    /// The channel lines are said in (`console`).
    pub channel: String,
    /// The user of lines without a `name:` prefix (`console`).
    pub default_user: String,
    /// How the bot's lines are labelled (`rosey`).
    pub bot_name: String,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        Self {
            channel: "console".to_owned(),
            default_user: "console".to_owned(),
            bot_name: "rosey".to_owned(),
        }
    }
}

type Reader = Box<dyn AsyncBufRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// The console [`Connector`]; see the [module docs](self).
pub struct ConsoleConnector {
    options: ConsoleOptions,
    io: Mutex<Option<(Reader, Writer)>>,
}

impl std::fmt::Debug for ConsoleConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleConnector").field("options", &self.options).finish_non_exhaustive()
    }
}

impl ConsoleConnector {
    /// A console on the process's stdin and stdout.
    pub fn new(options: ConsoleOptions) -> Self {
        Self::with_io(options, stdin_reader(), tokio::io::stdout())
    }

    /// A console on any reader and writer (tests, a socket…).
    pub fn with_io(
        options: ConsoleOptions,
        reader: impl AsyncBufRead + Send + Unpin + 'static,
        writer: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Self {
        Self { options, io: Mutex::new(Some((Box::new(reader), Box::new(writer)))) }
    }
}

/// Standard input, read on a plain thread of its own rather than tokio's blocking pool: tokio waits for
/// its blocking tasks when the runtime shuts down, so a read blocked on a terminal would keep the
/// process alive after Ctrl-C until the next Enter. A plain thread just ends with the process.
fn stdin_reader() -> impl AsyncBufRead + Send + Unpin {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(16);
    let spawned = std::thread::Builder::new().name("rosey-stdin".to_owned()).spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 8192];
        loop {
            let chunk = match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => Err(err),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    if let Err(error) = spawned {
        // The sender is gone with the closure, so the console reads an empty input.
        tracing::warn!(message = "cannot start the console input thread", %error);
    }
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    StreamReader::new(Box::pin(chunks))
}

/// Splits `bob: hello` into (`bob`, `hello`); anything else is the default user's whole line.
fn split_user<'a>(line: &'a str, default_user: &'a str) -> (&'a str, &'a str) {
    if let Some((name, rest)) = line.split_once(':') {
        let name_ok = !name.is_empty()
            && name.chars().count() <= 32
            && !name.chars().any(char::is_whitespace)
            && !name.starts_with('!');
        if name_ok && (rest.is_empty() || rest.starts_with(' ')) {
            return (name, rest.strip_prefix(' ').unwrap_or(rest));
        }
    }
    (default_user, line)
}

#[async_trait]
impl Connector for ConsoleConnector {
    fn name(&self) -> &str {
        "console"
    }

    async fn start(
        &self,
        bus: Arc<dyn EventBus>,
        shutdown: CancellationToken,
    ) -> Result<ConnectorHandle, ConnectorError> {
        let (mut reader, mut writer) =
            self.io.lock().take().ok_or_else(|| {
                ConnectorError::Refused("console connector already started".into())
            })?;
        let mut outgoing = bus.subscribe(subject::CHAT_SEND).await?;
        let options = self.options.clone();
        let task = tokio::spawn(async move {
            let mut reading = true;
            let mut framer = LineFramer::new(MAX_LINE);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    line = read_line(&mut reader, &mut framer), if reading => match line {
                        Ok(Some(Framed::TooLong(n))) => {
                            tracing::warn!(message = "console line over 64 KiB ignored", bytes = n);
                        }
                        Ok(Some(Framed::Line)) => {
                            let line = String::from_utf8_lossy(framer.line());
                            if line.trim().is_empty() {
                                continue;
                            }
                            let (user, text) = split_user(&line, &options.default_user);
                            let chat = ChatMessage::new(&options.channel, user, text, now_millis());
                            bus.publish_json(subject::CHAT_MESSAGE, &chat).await?;
                        }
                        Ok(None) => {
                            tracing::info!(message = "console input ended; replies are still printed until the bot stops");
                            reading = false;
                        }
                        Err(err) => {
                            tracing::warn!(message = "console input failed; no longer reading", %err);
                            reading = false;
                        }
                    },
                    message = outgoing.next() => {
                        let Some(message) = message else { return Ok(()) };
                        let Ok(send) = message.decode::<ChatSend>() else { continue };
                        if send.channel != options.channel {
                            continue;
                        }
                        let line = format!("{}: {}\n", options.bot_name, send.message);
                        writer.write_all(line.as_bytes()).await?;
                        writer.flush().await?;
                    }
                }
            }
        });
        Ok(ConnectorHandle::new(task))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_word_name_before_a_colon_is_the_user() {
        assert_eq!(split_user("bob: !roll 2d6", "console"), ("bob", "!roll 2d6"));
        assert_eq!(split_user("!roll 2d6", "console"), ("console", "!roll 2d6"));
        assert_eq!(split_user("note: see http://x", "console"), ("note", "see http://x"));
        assert_eq!(split_user("two words: hi", "console"), ("console", "two words: hi"));
        assert_eq!(split_user("http://x", "console"), ("console", "http://x"));
        assert_eq!(split_user(":)", "console"), ("console", ":)"));
    }
}
