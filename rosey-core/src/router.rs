//! The [`Router`]: turns chat lines and private messages that start with the command prefix into
//! command events, and answers `!help` itself.
//!
//! `!roll 2d6` said in a channel becomes a [`CommandEvent`] on `rosey.command.roll`; a command whose
//! manifest declares sub-commands takes the second word into the subject (`!admin reload dice-roller` →
//! `rosey.command.admin.reload`). Which command belongs to which plugin comes from the shared
//! [`CommandTable`], so plugins added or reloaded with new commands are routed at once.
//!
//! **Private messages.** A PM to the bot (`cytube.pm.message`) that starts with the prefix is routed
//! exactly like a chat line, as a command event with `"via": "pm"` (and the sender's rank when the
//! connector found it in the channel's user list: CyTube's PMs carry none). Everything said in answer — the plugin's replies and the router's own lines below — goes back
//! by PM to the sender ([`ReplyTarget`]), so nothing of it appears in the channel.
//!
//! The router ignores the bot's own messages and lines that are not commands, and passes arguments
//! through untouched. Unknown commands get no answer (the router never answers chatter such as `!!!`)
//! but are counted ([`RouterStats::unknown`]). It subscribes in a queue group, so several nodes sharing
//! one NATS route each line once. Plugin replies do not pass through the router: the plugin's slot
//! publishes them to the command's [`ReplyTarget`].
//!
//! **`!help`** is answered by the router, from the command table, unless a plugin owns a `help`
//! command: `!help` lists the commands routed right now, `!help roll` shows that command's description
//! and usage (from the plugin's manifest), `!help nope` says `❓ No command !nope`. Like every answer,
//! it goes by PM when asked by PM.
//!
//! **Every command the router accepts gets exactly one answer.** It is sent as a bus request: the
//! plugin's slot answers it when the plugin is done (its replies, an error line, or `busy`), so the
//! router only has to speak when nobody would: `❌ <plugin> is not running` when no instance of the
//! plugin is subscribed anywhere, `❌ <plugin> did not answer in time` when no answer came within
//! [`RouterOptions::answer_timeout`]. Those are counted ([`RouterStats`]) and logged, rate-limited. At
//! most [`RouterOptions::max_in_flight`] commands wait for their answer at once; beyond that the router
//! stops reading chat until one is answered (backpressure, never a silent drop).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use futures_util::StreamExt;

use crate::bus::{BusError, EventBus, Message};
use crate::event::{
    ChatMessage, CommandEvent, EpochMillis, PayloadError, PmMessage, ReplyTarget, Via,
};
use crate::plugin::CommandTable;
use crate::plugin::commands::{Parsed, help};
use crate::quiet::LogLimit;
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
    /// Commands that may wait for their answer at once (1024); beyond, the router stops reading chat.
    pub max_in_flight: usize,
    /// How long a command may wait for its answer before the router says it was not answered (120 s;
    /// the plugin's own event timeout answers long before, so this only catches a lost answer).
    pub answer_timeout: Duration,
}

impl Default for RouterOptions {
    fn default() -> Self {
        Self {
            prefix: "!".to_owned(),
            bot_name: None,
            queue_group: "rosey-router".to_owned(),
            max_in_flight: 1024,
            answer_timeout: Duration::from_secs(120),
        }
    }
}

/// What the router has done since it started. Chat lines and PMs are counted alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Lines published as command events.
    pub routed: u64,
    /// Lines that were not commands or came from the bot.
    pub ignored: u64,
    /// Lines naming a command no plugin owns (not answered).
    pub unknown: u64,
    /// `!help` lines the router answered itself.
    pub help: u64,
    /// Payloads on `cytube.chat.message` or `cytube.pm.message` that were not a chat message or PM.
    pub malformed: u64,
    /// Commands that could not be encoded (logged).
    pub failed: u64,
    /// Routed commands still waiting for their answer.
    pub in_flight: u64,
    /// Commands no running plugin took (answered `❌ <plugin> is not running`).
    pub not_running: u64,
    /// Commands whose answer did not come in time, or that could not be sent (answered
    /// `❌ <plugin> did not answer in time` / `… could not be reached`).
    pub unanswered: u64,
}

impl RouterStats {
    /// Every chat or PM payload the router has taken in, whatever became of it (routed ones may
    /// still wait for their answer: see `in_flight`).
    pub fn handled(&self) -> u64 {
        self.routed + self.ignored + self.unknown + self.help + self.malformed + self.failed
    }
}

#[derive(Debug, Default)]
struct Counters {
    routed: AtomicU64,
    ignored: AtomicU64,
    unknown: AtomicU64,
    help: AtomicU64,
    malformed: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    not_running: AtomicU64,
    unanswered: AtomicU64,
}

impl Counters {
    fn read(&self) -> RouterStats {
        RouterStats {
            routed: self.routed.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
            unknown: self.unknown.load(Ordering::Relaxed),
            help: self.help.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            not_running: self.not_running.load(Ordering::Relaxed),
            unanswered: self.unanswered.load(Ordering::Relaxed),
        }
    }
}

/// Why the router could not start or stopped routing.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// Subscribing to chat or PMs failed.
    #[error("the router cannot subscribe to chat")]
    Subscribe(#[source] BusError),
    /// The bus ended the chat or PM subscription while the router was running (the bus closed).
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
        self.counters.read()
    }

    /// A reader of the same counters that outlives the handle (for a metrics exporter).
    pub fn stats_reader(&self) -> impl Fn() -> RouterStats + Send + Sync + 'static {
        let counters = self.counters.clone();
        move || counters.read()
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

    /// Subscribes to chat and PMs and routes them in a spawned task until stopped. Returns once the
    /// subscriptions are live. Lines are routed one at a time, chat lines in the order the bus
    /// delivers them, PMs likewise; each routed command waits for its answer in a task of its own
    /// (tracked, and ended when the router stops).
    pub async fn start(self) -> Result<RouterHandle, RouterError> {
        let group = &self.options.queue_group;
        let mut chat = self
            .bus
            .queue_subscribe(subject::CHAT_MESSAGE, group)
            .await
            .map_err(RouterError::Subscribe)?;
        let mut pms = self
            .bus
            .queue_subscribe(subject::PM_MESSAGE, group)
            .await
            .map_err(RouterError::Subscribe)?;
        let counters = Arc::new(Counters::default());
        let task_counters = counters.clone();
        let router = Arc::new(Routing {
            permits: Arc::new(Semaphore::new(self.options.max_in_flight.max(1))),
            warnings: Mutex::new(LogLimit::new(WARN_BURST)),
            router: self,
        });
        let service = ServiceHandle::spawn("router", |stop| async move {
            let mut waiting = JoinSet::new();
            let ended = loop {
                while waiting.try_join_next().is_some() {}
                tokio::select! {
                    () = stop.cancelled() => break Ok(()),
                    message = chat.next() => match message {
                        Some(message) => router.route(&message, &task_counters, &mut waiting).await,
                        None => break Err(RouterError::SubscriptionEnded),
                    },
                    message = pms.next() => match message {
                        Some(message) => router.route(&message, &task_counters, &mut waiting).await,
                        None => break Err(RouterError::SubscriptionEnded),
                    },
                }
            };
            // Commands still waiting are the plugins' to answer; the router stops waiting for them.
            waiting.shutdown().await;
            ended
        });
        Ok(RouterHandle { counters, service })
    }
}

/// Router warnings logged per 10 s before the rest are counted and summed up.
const WARN_BURST: u32 = 10;

/// A started router's state, shared with the tasks that wait for answers.
struct Routing {
    router: Router,
    permits: Arc<Semaphore>,
    warnings: Mutex<LogLimit>,
}

impl Routing {
    /// Logs a warning unless too many were logged lately (then they are counted and summed up).
    fn warn(&self, what: &str, detail: &str) {
        let mut limit = self.warnings.lock();
        if let Some(suppressed) = limit.due_summary() {
            tracing::warn!(
                message = "router warnings suppressed (over the rate limit)",
                suppressed
            );
        }
        if limit.allow() {
            tracing::warn!(message = what, detail = %detail);
        }
    }

    async fn route(
        self: &Arc<Self>,
        message: &Message,
        counters: &Arc<Counters>,
        waiting: &mut JoinSet<()>,
    ) {
        let router = &self.router;
        let line = match Line::decode(message) {
            Ok(line) => line,
            Err(err) => {
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                self.warn("chat payload is not a chat message or PM; ignored", &err.to_string());
                return;
            }
        };
        let from_bot = router
            .options
            .bot_name
            .as_deref()
            .is_some_and(|bot| bot.eq_ignore_ascii_case(&line.user));
        let prefix = &router.options.prefix;
        let parsed =
            if from_bot { Parsed::NotACommand } else { router.table.parse(prefix, &line.message) };
        let routed = match parsed {
            Parsed::Routed(routed) => routed,
            Parsed::NotACommand => {
                counters.ignored.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Parsed::Unknown { command, args }
                if command == help::HELP && router.table.lookup(help::HELP).is_none() =>
            {
                counters.help.fetch_add(1, Ordering::Relaxed);
                let target = line.reply_target();
                for text in help::answer(&router.table, prefix, args) {
                    self.say(&target, &text).await;
                }
                return;
            }
            Parsed::Unknown { command, .. } => {
                counters.unknown.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    message = "unknown command ignored",
                    command,
                    via = %line.via
                );
                return;
            }
        };
        let plugin = router.table.lookup(&routed.command).map(|r| r.plugin).unwrap_or_default();
        let event = CommandEvent {
            channel: line.channel,
            user: line.user,
            rank: line.rank,
            command: routed.command,
            args: routed.args,
            message: line.message,
            time: line.time,
            via: line.via,
        };
        let payload = match serde_json::to_vec(&event) {
            Ok(payload) => Bytes::from(payload),
            Err(err) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                self.warn("cannot encode a command", &err.to_string());
                return;
            }
        };
        // Backpressure: with too many commands waiting, stop reading chat until one is answered.
        let Ok(permit) = self.permits.clone().acquire_owned().await else { return };
        counters.routed.fetch_add(1, Ordering::Relaxed);
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        let counters = counters.clone();
        let target = ReplyTarget::for_command(&event);
        // The request is sent here, in chat order; only the wait for its answer runs in a task.
        let sent =
            router.bus.send_request(&routed.subject, payload, router.options.answer_timeout).await;
        waiting.spawn(async move {
            let _permit = permit;
            let answer = match sent {
                Ok(reply) => reply.await,
                Err(err) => Err(err),
            };
            let text = match answer {
                Ok(_) => None,
                Err(BusError::NoResponders { .. }) => {
                    counters.not_running.fetch_add(1, Ordering::Relaxed);
                    this.warn("command for a plugin that is not running", &routed.subject);
                    Some(format!("❌ {plugin} is not running"))
                }
                Err(BusError::Timeout { .. }) => {
                    counters.unanswered.fetch_add(1, Ordering::Relaxed);
                    this.warn("command not answered in time", &routed.subject);
                    Some(format!("❌ {plugin} did not answer in time"))
                }
                Err(err) => {
                    counters.unanswered.fetch_add(1, Ordering::Relaxed);
                    this.warn("cannot send a command", &err.to_string());
                    Some(format!("❌ {plugin} could not be reached"))
                }
            };
            if let Some(text) = text {
                this.say(&target, &text).await;
            }
            counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Says one line of the router's own to `target` (a failure is logged, rate-limited).
    async fn say(&self, target: &ReplyTarget, text: &str) {
        let published = self.router.bus.publish(target.subject(), target.encode(text)).await;
        if let Err(err) = published {
            self.warn("cannot answer a command", &err.to_string());
        }
    }
}

/// A chat line or a PM, as the router reads it.
struct Line {
    channel: String,
    user: String,
    rank: Option<f64>,
    message: String,
    time: EpochMillis,
    /// Said in the channel or sent by PM (answers go back by PM).
    via: Via,
}

impl Line {
    /// Reads a payload of `cytube.chat.message` or `cytube.pm.message`.
    fn decode(message: &Message) -> Result<Self, PayloadError> {
        if message.subject() == subject::PM_MESSAGE {
            let pm: PmMessage = message.decode()?;
            Ok(Self {
                channel: pm.channel,
                user: pm.user,
                rank: pm.rank,
                message: pm.message,
                time: pm.time.unwrap_or_else(crate::event::now_millis),
                via: Via::Pm,
            })
        } else {
            let chat: ChatMessage = message.decode()?;
            Ok(Self {
                channel: chat.channel,
                user: chat.user,
                rank: chat.rank,
                message: chat.message,
                time: chat.time,
                via: Via::Chat,
            })
        }
    }

    /// Where the router's own answers to this line go.
    fn reply_target(&self) -> ReplyTarget {
        ReplyTarget::to_sender(&self.channel, &self.user, self.via)
    }
}
