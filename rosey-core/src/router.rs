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

use crate::bus::{BusError, EventBus, EventBusExt, Message};
use crate::event::{ChatMessage, CommandEvent};
use crate::plugin::CommandTable;
use crate::service::{ServiceHandle, Stopper, TaskFailed};
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
    /// Commands that could not be published on the bus (logged).
    pub failed: u64,
}

impl RouterStats {
    /// Every chat payload the router has finished with, whatever became of it.
    pub fn handled(&self) -> u64 {
        self.routed + self.ignored + self.malformed + self.failed
    }
}

#[derive(Debug, Default)]
struct Counters {
    routed: AtomicU64,
    ignored: AtomicU64,
    malformed: AtomicU64,
    failed: AtomicU64,
}

/// Why the router could not start or stopped routing.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// Subscribing to chat failed.
    #[error("the router cannot subscribe to chat")]
    Subscribe(#[source] BusError),
    /// The bus ended the chat subscription while the router was running (the bus closed).
    #[error("the bus closed the router's chat subscription")]
    SubscriptionEnded,
    /// The router's task panicked.
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// Routes chat to plugins; see the [module docs](self).
///
/// ```
/// use std::sync::Arc;
/// use rosey_core::bus::MemoryBus;
/// use rosey_core::plugin::CommandTable;
/// use rosey_core::router::{Router, RouterOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rosey_core::router::RouterError> {
/// let table = CommandTable::new(); // usually the plugin manager's `command_table()`
/// let router = Router::new(Arc::new(MemoryBus::new()), table, RouterOptions::default());
/// let running = router.start().await?; // subscribed: chat from now on is routed
/// println!("routed so far: {}", running.stats().routed);
/// running.shutdown().await
/// # }
/// ```
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

/// A running router: its [`ServiceHandle`] and its counters. Dropping it stops the router.
#[derive(Debug)]
#[must_use = "dropping the handle stops the router"]
pub struct RouterHandle {
    counters: Arc<Counters>,
    service: ServiceHandle<RouterError>,
}

impl RouterHandle {
    /// Counters since start.
    pub fn stats(&self) -> RouterStats {
        RouterStats {
            routed: self.counters.routed.load(Ordering::Relaxed),
            ignored: self.counters.ignored.load(Ordering::Relaxed),
            malformed: self.counters.malformed.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
        }
    }

    /// Asks the router to stop; see [`ServiceHandle::stop`].
    pub fn stop(&self) {
        self.service.stop();
    }

    /// Something that can stop the router while it is waited on; see [`ServiceHandle::stopper`].
    pub fn stopper(&self) -> Stopper {
        self.service.stopper()
    }

    /// Waits until the router has stopped; see [`ServiceHandle::wait`].
    pub async fn wait(self) -> Result<(), RouterError> {
        self.service.wait().await
    }

    /// Stops the router and waits until it has; see [`ServiceHandle::shutdown`].
    pub async fn shutdown(self) -> Result<(), RouterError> {
        self.service.shutdown().await
    }
}

impl Router {
    /// A router publishing on `bus`, routing by `table`.
    pub fn new(bus: Arc<dyn EventBus>, table: CommandTable, options: RouterOptions) -> Self {
        Self { bus, table, options }
    }

    /// Subscribes to chat and routes it in a spawned task until stopped. Returns once the
    /// subscription is live. Lines are routed one at a time, in the order the bus delivers them.
    pub async fn start(self) -> Result<RouterHandle, RouterError> {
        let mut chat = self
            .bus
            .queue_subscribe(subject::CHAT_MESSAGE, &self.options.queue_group)
            .await
            .map_err(RouterError::Subscribe)?;
        let counters = Arc::new(Counters::default());
        let task_counters = counters.clone();
        let service = ServiceHandle::spawn("router", |stop| async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    message = chat.next() => match message {
                        Some(message) => self.route(&message, &task_counters).await,
                        None => return Err(RouterError::SubscriptionEnded),
                    },
                }
            }
        });
        Ok(RouterHandle { counters, service })
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
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(message = "cannot publish command", subject = %routed.subject, %err);
            }
        }
    }
}
