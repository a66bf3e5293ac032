//! [`ConsoleConnector`]: chat on the terminal, for trying Rosey locally.
//!
//! Each input line is a chat message: `bob: !roll 2d6` comes from user `bob`; a line without a one-word
//! `name: ` prefix (such as `!roll 2d6` or `see http://x`) comes from user `console`. Lines go
//! to `cytube.chat.message` in the channel `console`. What the bot says in that channel
//! (`cytube.chat.send`) is printed as `rosey: <message>`.
//!
//! End of input (Ctrl-D, or the end of a pipe) stops reading but not printing: replies to what was
//! typed are still printed until the console is stopped. A host that should end with its input (so that
//! `printf 'alice: !roll 2d6\n' | rosey run` answers and exits) watches the console's
//! [`ConsoleProgress`]: it says when input ended and how many lines were read, and
//! [`flush`](ConsoleProgress::flush) waits until every reply published so far is printed. Lines over
//! 64 KiB are ignored with a warning; invalid UTF-8 is replaced, never fatal.
//!
//! With a [`HealthRegistry`] the console reports itself as the [`CONNECTOR`](health::CONNECTOR):
//! healthy from its start, not healthy once stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use rosey_plugin::framing::{Framed, LineFramer};
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::io::StreamReader;

use super::{Connector, ConnectorError, ConnectorHandle};
use crate::bus::{BusError, EventBus, EventBusExt};
use crate::event::{ChatMessage, ChatSend, now_millis};
use crate::health::{self, HealthRegistry};
use crate::lines::read_line;
use crate::service::ServiceHandle;
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
    reader: Reader,
    writer: Writer,
    progress: ConsoleProgress,
    health: Option<HealthRegistry>,
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
        let progress = ConsoleProgress::new(&options.channel);
        Self { options, reader: Box::new(reader), writer: Box::new(writer), progress, health: None }
    }

    /// Reports into `health` as the [`CONNECTOR`](health::CONNECTOR) once started.
    pub fn with_health(mut self, health: HealthRegistry) -> Self {
        self.health = Some(health);
        self
    }

    /// What the console will have read and printed; take it before [`Connector::start`].
    pub fn progress(&self) -> ConsoleProgress {
        self.progress.clone()
    }
}

/// What a console has read and printed so far, shared with whoever needs to know when piped input
/// has been answered (the `rosey` binary ends then). Cloning shares it.
#[derive(Debug, Clone)]
pub struct ConsoleProgress {
    inner: Arc<ProgressInner>,
}

#[derive(Debug)]
struct ProgressInner {
    /// Where flush markers are sent: a channel name no chat uses (it contains a NUL).
    flush_channel: String,
    lines_read: AtomicU64,
    input_ended: watch::Sender<bool>,
    next_marker: AtomicU64,
    /// The highest flush marker the console has reached.
    flushed: watch::Sender<u64>,
}

impl ConsoleProgress {
    fn new(channel: &str) -> Self {
        Self {
            inner: Arc::new(ProgressInner {
                flush_channel: format!("{channel}\u{0}flush"),
                lines_read: AtomicU64::new(0),
                input_ended: watch::Sender::new(false),
                next_marker: AtomicU64::new(1),
                flushed: watch::Sender::new(0),
            }),
        }
    }

    /// Chat lines the console has published on [`CHAT_MESSAGE`](crate::subject::CHAT_MESSAGE).
    pub fn lines_read(&self) -> u64 {
        self.inner.lines_read.load(Ordering::SeqCst)
    }

    /// Whether the input has ended (end of file, or a read error).
    pub fn input_has_ended(&self) -> bool {
        *self.inner.input_ended.borrow()
    }

    /// Waits until the input has ended; every line read before it is published by then, so
    /// [`lines_read`](Self::lines_read) is final. Never completes for a console whose input stays
    /// open.
    pub async fn input_ended(&self) {
        let mut ended = self.inner.input_ended.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = ended.wait_for(|ended| *ended).await;
    }

    /// Publishes a marker on [`CHAT_SEND`](crate::subject::CHAT_SEND) and waits until the console has
    /// reached it, so every reply published on `bus` before this call is printed. The marker itself is
    /// not printed. Never completes if the console is not running: bound it with a timeout.
    pub async fn flush(&self, bus: &dyn EventBus) -> Result<(), BusError> {
        let marker = self.inner.next_marker.fetch_add(1, Ordering::SeqCst);
        let mut flushed = self.inner.flushed.subscribe();
        let send =
            ChatSend { channel: self.inner.flush_channel.clone(), message: marker.to_string() };
        bus.publish_json(subject::CHAT_SEND, &send).await?;
        let _ = flushed.wait_for(|reached| *reached >= marker).await;
        Ok(())
    }

    fn line_read(&self) {
        self.inner.lines_read.fetch_add(1, Ordering::SeqCst);
    }

    fn end_input(&self) {
        self.inner.input_ended.send_replace(true);
    }

    /// Handles a flush marker; false when `send` is not one.
    fn reached(&self, send: &ChatSend) -> bool {
        if send.channel != self.inner.flush_channel {
            return false;
        }
        if let Ok(marker) = send.message.parse::<u64>() {
            self.inner.flushed.send_if_modified(|reached| {
                let advanced = marker > *reached;
                *reached = (*reached).max(marker);
                advanced
            });
        }
        true
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
        self: Box<Self>,
        bus: Arc<dyn EventBus>,
    ) -> Result<ConnectorHandle, ConnectorError> {
        let Self { options, mut reader, mut writer, progress, health } = *self;
        let mut outgoing = bus.subscribe(subject::CHAT_SEND).await?;
        if let Some(health) = &health {
            health.report(health::CONNECTOR, true, format!("console: channel {}", options.channel));
        }
        Ok(ServiceHandle::spawn("console", |stop| async move {
            let _report_stop = health.map(StoppedReport);
            let mut reading = true;
            let mut framer = LineFramer::new(MAX_LINE);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
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
                            progress.line_read();
                        }
                        Ok(None) => {
                            tracing::info!(message = "console input ended; replies are still printed");
                            reading = false;
                            progress.end_input();
                        }
                        Err(err) => {
                            tracing::warn!(message = "console input failed; no longer reading", %err);
                            reading = false;
                            progress.end_input();
                        }
                    },
                    message = outgoing.next() => {
                        let Some(message) = message else { return Ok(()) };
                        let Ok(send) = message.decode::<ChatSend>() else { continue };
                        if send.channel != options.channel {
                            progress.reached(&send);
                            continue;
                        }
                        let line = format!("{}: {}\n", options.bot_name, send.message);
                        writer.write_all(line.as_bytes()).await?;
                        writer.flush().await?;
                    }
                }
            }
        }))
    }
}

/// Reports the console as stopped when its task ends, however it ends.
struct StoppedReport(HealthRegistry);

impl Drop for StoppedReport {
    fn drop(&mut self) {
        self.0.report(health::CONNECTOR, false, "console stopped");
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
