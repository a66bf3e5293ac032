//! The [`Router`]: turns chat lines that start with the command prefix into command events.
//!
//! `!roll 2d6` said in a channel becomes a [`CommandEvent`] on `rosey.command.roll`; a command whose
//! manifest declares sub-commands takes the second word into the subject (`!admin reload dice-roller` →
//! `rosey.command.admin.reload`). Which command belongs to which plugin comes from the shared
//! [`CommandTable`], so plugins added or reloaded with new commands are routed at once.
//!
//! The router ignores the bot's own messages, lines that are not commands and unknown commands (quietly,
//! so it never answers chatter), and passes arguments through untouched. It subscribes in a queue group,
//! so several nodes sharing one NATS route each chat line once. Plugin replies do not pass through the
//! router: the plugin's slot publishes them to `cytube.chat.send` with the command's channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{BusError, EventBus, EventBusExt, Message};
use crate::event::{ChatMessage, CommandEvent};
use crate::plugin::CommandTable;
use crate::subject;

/// How the router reads chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterOptions {
    /// What a command starts with (`!` by default).
    pub prefix: String,
    /// The bot's own name: its messages are never routed (compared case-insensitively).
    pub bot_name: Option<String>,
    /// The queue group the router subscribes in (`rosey-router`); one per deployment.
    pub queue_group: String,
}

impl Default for RouterOptions {
    fn default() -> Self {
        Self { prefix: "!".to_owned(), bot_name: None, queue_group: "rosey-router".to_owned() }
    }
}

/// What the router has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Chat lines published as command events.
    pub routed: u64,
    /// Chat lines that were not commands, were unknown commands or came from the bot.
    pub ignored: u64,
    /// Payloads on `cytube.chat.message` that were not a chat message.
    pub malformed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    routed: AtomicU64,
    ignored: AtomicU64,
    malformed: AtomicU64,
}

/// Routes chat to plugins; see the [module docs](self).
pub struct Router {
    bus: Arc<dyn EventBus>,
    table: CommandTable,
    options: RouterOptions,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("options", &self.options).finish_non_exhaustive()
    }
}

/// A running router.
#[derive(Debug)]
pub struct RouterHandle {
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl RouterHandle {
    /// Counters since start.
    pub fn stats(&self) -> RouterStats {
        RouterStats {
            routed: self.counters.routed.load(Ordering::Relaxed),
            ignored: self.counters.ignored.load(Ordering::Relaxed),
            malformed: self.counters.malformed.load(Ordering::Relaxed),
        }
    }

    /// Waits until the router has stopped (after its shutdown token is cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

impl Router {
    /// A router publishing on `bus`, routing by `table`.
    pub fn new(bus: Arc<dyn EventBus>, table: CommandTable, options: RouterOptions) -> Self {
        Self { bus, table, options }
    }

    /// Subscribes to chat and routes it in a spawned task until `shutdown` is cancelled. Returns once
    /// the subscription is live.
    pub async fn start(self, shutdown: CancellationToken) -> Result<RouterHandle, BusError> {
        let mut chat =
            self.bus.queue_subscribe(subject::CHAT_MESSAGE, &self.options.queue_group).await?;
        let counters = Arc::new(Counters::default());
        let task_counters = counters.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    message = chat.next() => match message {
                        Some(message) => self.route(&message, &task_counters).await,
                        None => break,
                    },
                }
            }
        });
        Ok(RouterHandle { counters, task })
    }

    async fn route(&self, message: &Message, counters: &Counters) {
        let chat: ChatMessage = match message.decode() {
            Ok(chat) => chat,
            Err(err) => {
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(message = "chat payload is not a chat message; ignored", %err);
                return;
            }
        };
        let from_bot = self
            .options
            .bot_name
            .as_deref()
            .is_some_and(|bot| bot.eq_ignore_ascii_case(&chat.user));
        let routed =
            if from_bot { None } else { self.table.route(&self.options.prefix, &chat.message) };
        let Some(routed) = routed else {
            counters.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let event = CommandEvent {
            channel: chat.channel,
            user: chat.user,
            rank: chat.rank,
            command: routed.command,
            args: routed.args,
            message: chat.message,
            time: chat.time,
        };
        match self.bus.publish_json(&routed.subject, &event).await {
            Ok(()) => {
                counters.routed.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                tracing::warn!(message = "cannot publish command", subject = %routed.subject, %err);
            }
        }
    }
}
