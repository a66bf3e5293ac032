//! [`ConsoleConnector`]: chat on the terminal, for trying Rosey locally.
//!
//! Each input line is a chat message: `bob: !roll 2d6` comes from user `bob`; a line without a one-word
//! `name: ` prefix (such as `!roll 2d6` or `see http://x`) comes from user `console`. Lines go
//! to `cytube.chat.message` in the channel `console`. What the bot says in that channel
//! (`cytube.chat.send`) is printed as `rosey: <message>`, one line per line of the message (blank
//! lines left out, as CyTube does), with control characters, terminal escape sequences and
//! bidirectional overrides shown escaped (`\u{1b}[31m`), so a reply cannot drive the terminal.
//!
//! **Backpressure.** The console is a local pipe, so rather than let a flood of commands overflow the
//! bot it reads more slowly: it keeps at most [`ConsoleOptions::max_unanswered`] command lines (lines
//! starting with [`ConsoleOptions::command_prefix`]) read but not yet answered, and stops reading its
//! input while that window is full. Each reply printed answers the oldest; a command with no answer
//! (an unknown command, which the router ignores quietly) leaves the window after
//! [`ConsoleOptions::answer_timeout`]. Other lines are chat and never wait. So
//! `yes 'u: !roll 1d6' | head -n 200000 | rosey run` answers every line.
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

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use rosey_plugin::framing::{Framed, LineFramer};
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::io::StreamReader;

use super::{Connector, ConnectorError, ConnectorHandle, ConnectorStats};
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
    /// What a command line starts with, as the router sees it (`!`): only such lines wait for an
    /// answer (see [`max_unanswered`](Self::max_unanswered)).
    pub command_prefix: String,
    /// Command lines read and not yet answered beyond which the console stops reading its input
    /// (128; well under a plugin's default queue of 1 000, so a pipe never makes a plugin `busy`).
    /// 0 is taken as 1.
    pub max_unanswered: usize,
    /// How long a command line may wait for its answer before it no longer holds back reading (2 s):
    /// unknown commands get no answer at all.
    pub answer_timeout: Duration,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        Self {
            channel: "console".to_owned(),
            default_user: "console".to_owned(),
            bot_name: "rosey".to_owned(),
            command_prefix: "!".to_owned(),
            max_unanswered: 128,
            answer_timeout: Duration::from_secs(2),
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
    stats: ConnectorStats,
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
        Self {
            options,
            reader: Box::new(reader),
            writer: Box::new(writer),
            progress,
            health: None,
            stats: ConnectorStats::default(),
        }
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

/// Command lines read and not answered yet, oldest first, each with the instant it stops holding back
/// reading; see the [module docs](self).
#[derive(Debug)]
struct Unanswered {
    deadlines: VecDeque<Instant>,
    max: usize,
    timeout: Duration,
}

impl Unanswered {
    fn new(options: &ConsoleOptions) -> Self {
        Self {
            deadlines: VecDeque::new(),
            max: options.max_unanswered.max(1),
            timeout: options.answer_timeout,
        }
    }

    /// Whether another command line may be read now.
    fn has_room(&self) -> bool {
        self.deadlines.len() < self.max
    }

    fn sent(&mut self, now: Instant) {
        self.deadlines.push_back(now + self.timeout);
    }

    /// A reply was printed: it answers the oldest command waiting, if any.
    fn answered(&mut self) {
        self.deadlines.pop_front();
    }

    /// When the oldest command line stops waiting, if one waits.
    fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().copied()
    }

    fn expire(&mut self, now: Instant) {
        while self.deadlines.front().is_some_and(|deadline| *deadline <= now) {
            self.deadlines.pop_front();
        }
    }
}

/// Whether printing `c` could act on a terminal or reorder what is shown: control characters (C0, DEL
/// and C1; ESC starts every escape sequence and U+009B is a one-character CSI) other than tab, and the
/// bidirectional formatting characters (embeddings, overrides, isolates and marks).
fn needs_escape(c: char) -> bool {
    let bidi = matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c);
    (c.is_control() && c != '\t') || bidi
}

/// `line` safe to print on a terminal: what [`needs_escape`] shows as a Rust-style escape (`\u{1b}`),
/// the rest untouched.
fn printable(line: &str) -> Cow<'_, str> {
    if !line.chars().any(needs_escape) {
        return Cow::Borrowed(line);
    }
    use std::fmt::Write as _;
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if needs_escape(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// How a reply is printed: one `<bot>: <line>` per non-blank line, each line made [`printable`].
fn render(bot_name: &str, message: &str) -> String {
    let mut out = String::new();
    for line in message.lines().filter(|line| !line.trim().is_empty()) {
        out.push_str(bot_name);
        out.push_str(": ");
        out.push_str(&printable(line));
        out.push('\n');
    }
    out
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

    /// Lines read (`chat_received`) and replies printed (`chat_sent`); the console has no outbox and
    /// never reconnects.
    fn stats(&self) -> ConnectorStats {
        self.stats.clone()
    }

    async fn start(
        self: Box<Self>,
        bus: Arc<dyn EventBus>,
    ) -> Result<ConnectorHandle, ConnectorError> {
        let Self { options, mut reader, mut writer, progress, health, stats } = *self;
        let mut outgoing = bus.subscribe(subject::CHAT_SEND).await?;
        if let Some(health) = &health {
            health.report(health::CONNECTOR, true, format!("console: channel {}", options.channel));
        }
        Ok(ServiceHandle::spawn("console", |stop| async move {
            let _report_stop = health.map(StoppedReport);
            let mut reading = true;
            let mut framer = LineFramer::new(MAX_LINE);
            let mut unanswered = Unanswered::new(&options);
            loop {
                let next_deadline = unanswered.next_deadline();
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = sleep_until(next_deadline), if next_deadline.is_some() => {
                        unanswered.expire(Instant::now());
                    }
                    // While the window of unanswered commands is full, stdin waits (backpressure).
                    line = read_line(&mut reader, &mut framer),
                        if reading && unanswered.has_room() => match line {
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
                            stats.chat_received();
                            if text.starts_with(&options.command_prefix) {
                                unanswered.sent(Instant::now());
                            }
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
                        unanswered.answered();
                        let lines = render(&options.bot_name, &send.message);
                        writer.write_all(lines.as_bytes()).await?;
                        writer.flush().await?;
                        stats.chat_sent();
                    }
                }
            }
        }))
    }
}

/// Sleeps until `deadline`; never wakes without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
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

    #[test]
    fn terminal_escape_sequences_and_control_characters_are_printed_escaped() {
        assert_eq!(printable("\u{1b}[2J\u{1b}[31mred"), "\\u{1b}[2J\\u{1b}[31mred");
        assert_eq!(printable("\u{1b}]0;owned title\u{7}"), "\\u{1b}]0;owned title\\u{7}");
        assert_eq!(
            printable("csi \u{9b}2J bell \u{7} del \u{7f} nul \u{0} cr \r"),
            "csi \\u{9b}2J bell \\u{7} del \\u{7f} nul \\u{0} cr \\u{d}"
        );
        assert_eq!(printable("tab\tstays"), "tab\tstays");
    }

    #[test]
    fn bidi_overrides_isolates_and_marks_are_printed_escaped() {
        assert_eq!(printable("abc\u{202e}fed"), "abc\\u{202e}fed");
        let all = "\u{202a}\u{202b}\u{202c}\u{202d}\u{202e}\u{2066}\u{2067}\u{2068}\u{2069}\u{200e}\u{200f}\u{61c}";
        assert_eq!(
            printable(all),
            "\\u{202a}\\u{202b}\\u{202c}\\u{202d}\\u{202e}\\u{2066}\\u{2067}\\u{2068}\\u{2069}\\u{200e}\\u{200f}\\u{61c}"
        );
    }

    #[test]
    fn ordinary_text_is_printed_as_is_without_copying() {
        for text in ["🎲 [4, 3] = 7", "héllo wörld", "שלום", "C:\\path \\u{1b}"] {
            assert!(matches!(printable(text), Cow::Borrowed(t) if t == text), "{text}");
        }
    }

    #[test]
    fn each_line_of_a_reply_is_its_own_labelled_line_and_blank_lines_are_left_out() {
        assert_eq!(render("rosey", "one\r\n\n  \ntwo\n"), "rosey: one\nrosey: two\n");
        assert_eq!(render("rosey", "a\nalice: forged"), "rosey: a\nrosey: alice: forged\n");
        assert_eq!(render("rosey", ""), "");
    }

    #[tokio::test(start_paused = true)]
    async fn the_unanswered_window_fills_empties_on_answers_and_forgets_commands_nobody_answers() {
        let options = ConsoleOptions {
            max_unanswered: 2,
            answer_timeout: Duration::from_secs(2),
            ..ConsoleOptions::default()
        };
        let mut window = Unanswered::new(&options);
        let start = Instant::now();
        window.sent(start);
        window.sent(start + Duration::from_secs(1));
        assert!(!window.has_room());
        window.answered();
        assert!(window.has_room());
        window.sent(start + Duration::from_secs(1));
        assert_eq!(window.next_deadline(), Some(start + Duration::from_secs(3)));
        window.expire(start + Duration::from_secs(3));
        assert!(window.next_deadline().is_none(), "both expired at 3 s");
        window.answered(); // a reply nobody waits for changes nothing
        assert!(window.has_room());
    }
}
