//! What the connector knows of its channel across connections, and what it does with each event
//! CyTube sends: the user table, chat and PMs onto the bus, media changes, the flood limit (the bot's
//! rank and the channel's `chat_antiflood`), echoes and `cooldown` for the outbox.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde_json::Value;

use super::CytubeOptions;
use super::incoming::Incoming;
use super::outbox::Outbox;
use super::ratelimit::{FloodLimit, RateLimiter};
use super::users::{User, UserTable};
use crate::bus::{EventBus, EventBusExt};
use crate::connector::ConnectorStats;
use crate::event::{MediaChange, UserJoin, UserLeave};
use crate::subject;

/// The channel's user table as the connector keeps it, shared with whoever needs ranks (the admin
/// plugin, the dashboard). Cloning shares the table; reads never wait on the network.
#[derive(Debug, Clone, Default)]
pub struct UserDirectory(Arc<RwLock<UserTable>>);

impl UserDirectory {
    /// A user's channel rank, if they are in the channel.
    pub fn rank(&self, name: &str) -> Option<f64> {
        self.0.read().rank(name)
    }

    /// A user, if they are in the channel.
    pub fn get(&self, name: &str) -> Option<User> {
        self.0.read().get(name).cloned()
    }

    /// How many users are in the channel (the bot included).
    pub fn len(&self) -> usize {
        self.0.read().len()
    }

    /// Whether nobody is in the channel (before the join).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everyone in the channel, by name (case-insensitive order).
    pub fn snapshot(&self) -> Vec<User> {
        self.0.read().users().cloned().collect()
    }
}

/// CyTube's rank from which `chat_antiflood` no longer applies (moderators and up).
const ANTIFLOOD_EXEMPT_RANK: f64 = 2.0;

/// The connector's view of its channel; see the [module docs](self).
#[derive(Debug)]
pub(super) struct ChannelState {
    pub(super) channel: String,
    users: UserDirectory,
    pub(super) incoming: Incoming,
    pub(super) outbox: Outbox,
    /// The configured per-user limit.
    base_limit: FloodLimit,
    /// The limit in force.
    limit: FloodLimit,
    own_rank: f64,
    /// The channel's `chat_antiflood_params`, while `chat_antiflood` is on.
    antiflood: Option<FloodLimit>,
    /// The connector's counters (shared with the outbox).
    pub(super) stats: ConnectorStats,
    /// The bot's own lines in the history of the last join.
    recent_own: RecentOwn,
}

/// The bot's own lines in the chat history CyTube replayed at the last join (what the channel shows
/// the bot said last), so that a line a dead holder of the channel already said is not said again.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecentOwn(Arc<Mutex<VecDeque<String>>>);

impl RecentOwn {
    /// Lines kept: CyTube replays at most 15.
    const KEPT: usize = 32;

    fn clear(&self) {
        self.0.lock().clear();
    }

    fn push(&self, line: String) {
        let mut lines = self.0.lock();
        if lines.len() == Self::KEPT {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// Whether the history shows the bot saying `line`.
    pub(crate) fn contains(&self, line: &str) -> bool {
        self.0.lock().iter().any(|own| own == line)
    }
}

impl ChannelState {
    /// The state for the options' channel, keeping its user table in `users`.
    pub(super) fn new(
        options: &CytubeOptions,
        users: UserDirectory,
        stats: ConnectorStats,
    ) -> Self {
        let limit = FloodLimit::configured(options.rate_burst, options.rate_per_second);
        let limiter = RateLimiter::new(limit);
        Self {
            channel: options.channel.clone(),
            users,
            incoming: Incoming::new(&options.channel, &options.username),
            outbox: Outbox::new(limiter, options.max_message_length)
                .with_max_pieces(options.max_message_pieces)
                .with_capacity(options.outbox_capacity, stats.clone()),
            base_limit: limit,
            limit,
            own_rank: -1.0,
            antiflood: None,
            stats,
            recent_own: RecentOwn::default(),
        }
    }

    /// A new connection: the join burst (and its history replay) comes again.
    pub(super) fn new_connection(&mut self) {
        self.incoming.rejoin();
        self.own_rank = -1.0;
        self.recent_own.clear();
    }

    /// The bot's own lines in the history of the last join (shared, kept current).
    pub(crate) fn recent_own(&self) -> RecentOwn {
        self.recent_own.clone()
    }

    /// Whether a `chatMsg` or `pm` came from the bot itself (CyTube echoes what it says).
    fn said_by_bot(&self, arg: Option<&Value>) -> bool {
        arg.and_then(|a| a.get("username"))
            .and_then(Value::as_str)
            .is_some_and(|user| self.incoming.is_bot(user))
    }

    /// The bot's rank as the server last said (-1 before the first `rank`).
    pub(super) fn own_rank(&self) -> f64 {
        self.own_rank
    }

    /// The login succeeded under `name` (CyTube's spelling).
    pub(super) fn logged_in(&mut self, name: &str) {
        self.incoming.set_bot_name(name);
    }

    /// Takes one event from the server into account, publishing what plugins should hear.
    pub(super) async fn observe(&mut self, bus: &dyn EventBus, name: &str, arg: Option<&Value>) {
        match name {
            "rank" => {
                if let Some(rank) = arg.and_then(Value::as_f64) {
                    self.own_rank = rank;
                    self.update_rate();
                }
            }
            "channelOpts" => {
                let arg = arg.unwrap_or(&Value::Null);
                self.antiflood = (arg.get("chat_antiflood") == Some(&Value::Bool(true)))
                    .then(|| {
                        let params = arg.get("chat_antiflood_params")?;
                        // A float-to-int `as` saturates (and NaN is 0, then clamped to 1).
                        let burst = params.get("burst")?.as_f64()? as u32;
                        let sustained = params.get("sustained")?.as_f64()?;
                        let cooldown = params.get("cooldown").and_then(Value::as_f64);
                        Some(FloodLimit::new(burst, sustained, cooldown))
                    })
                    .flatten();
                self.update_rate();
            }
            "cooldown" => {
                let millis = arg.and_then(Value::as_u64).unwrap_or(1000);
                tracing::debug!(message = "CyTube asked for a cooldown", millis);
                self.stats.cooldown();
                self.outbox.cooldown(Instant::now(), millis);
            }
            "errorMsg" => {
                let text = arg.and_then(|a| a.get("msg")).and_then(Value::as_str).unwrap_or("");
                tracing::warn!(message = "CyTube refused a message", channel = %self.channel, error = text);
                if is_pm_refusal(text) {
                    // The answer to the oldest PM in flight: it will not be delivered, nor sent again.
                    self.outbox.pm_answered();
                }
            }
            "changeMedia" => {
                if let Some(media) = arg.and_then(|a| self.media_change(a)) {
                    publish(bus, subject::MEDIA_CHANGE, &media).await;
                }
            }
            "pm" => {
                let from_bot = self.said_by_bot(arg);
                if from_bot {
                    self.outbox.pm_answered();
                }
                let pm = self.incoming.pm(arg, &self.users.0.read());
                if let Some(pm) = pm {
                    self.stats.chat_received();
                    publish(bus, subject::PM_MESSAGE, &pm).await;
                }
            }
            "chatMsg" => {
                let from_bot = self.said_by_bot(arg);
                if from_bot && !self.incoming.joined() {
                    let msg = arg.and_then(|a| a.get("msg")).and_then(Value::as_str);
                    if let Some(msg) = msg {
                        self.recent_own.push(super::text::html_to_text(msg));
                    }
                }
                if from_bot && self.incoming.joined() {
                    self.outbox.echoed();
                }
                let chat = self.incoming.chat(name, arg, &self.users.0.read());
                if let Some(chat) = chat {
                    self.stats.chat_received();
                    publish(bus, subject::CHAT_MESSAGE, &chat).await;
                }
            }
            _ => self.observe_users(bus, name, arg).await,
        }
    }

    async fn observe_users(&mut self, bus: &dyn EventBus, name: &str, arg: Option<&Value>) {
        let changed = self.users.0.write().apply(name, arg);
        if name == "userlist" {
            // The end of the join burst: chat from now on is live, not replayed history.
            self.incoming.mark_joined();
        }
        if !changed || !self.incoming.joined() {
            return;
        }
        let user = arg.and_then(|a| a.get("name")).and_then(Value::as_str).unwrap_or_default();
        if user.is_empty() || self.incoming.is_bot(user) {
            return;
        }
        let channel = self.channel.clone();
        match name {
            "addUser" => {
                let join = UserJoin { channel, user: user.to_owned(), rank: self.users.rank(user) };
                publish(bus, subject::USER_JOIN, &join).await;
            }
            "userLeave" => {
                publish(bus, subject::USER_LEAVE, &UserLeave { channel, user: user.to_owned() })
                    .await;
            }
            _ => {}
        }
    }

    fn media_change(&self, arg: &Value) -> Option<MediaChange> {
        Some(MediaChange {
            channel: self.channel.clone(),
            title: arg.get("title")?.as_str()?.to_owned(),
            media_type: arg.get("type").and_then(Value::as_str).map(str::to_owned),
            id: arg.get("id").and_then(Value::as_str).map(str::to_owned),
            duration: arg.get("seconds").and_then(Value::as_f64).filter(|s| *s > 0.0),
        })
    }

    /// Applies the stricter of the per-user limit and the channel's `chat_antiflood` (which spares
    /// moderators and up). The limiter keeps what it counted: so does CyTube.
    fn update_rate(&mut self) {
        let mut limit = self.base_limit;
        if let Some(antiflood) = self.antiflood
            && self.own_rank < ANTIFLOOD_EXEMPT_RANK
        {
            limit = limit.stricter(antiflood);
        }
        if limit != self.limit {
            tracing::info!(
                message = "outgoing chat rate changed",
                channel = %self.channel,
                burst = limit.burst(),
                per_second = limit.sustained()
            );
            self.limit = limit;
            self.outbox.set_limit(limit);
        }
    }
}

/// Publishes on the bus; a failure is logged, not fatal (the bus reconnects on its own).
async fn publish<T: Serialize + Sync>(bus: &dyn EventBus, subject: &str, payload: &T) {
    if let Err(error) = bus.publish_json(subject, payload).await {
        tracing::warn!(message = "cannot publish a CyTube event", subject, %error);
    }
}

/// Whether an `errorMsg` is CyTube's refusal of a PM the bot sent (as recorded: `PM failed: x isn't
/// connected to this channel.`, `You can't PM yourself!`, `You must be signed in to send PMs`, and
/// `PM failed: x isn't a valid username.` from its source).
fn is_pm_refusal(text: &str) -> bool {
    text.starts_with("PM failed")
        || text.starts_with("You can't PM yourself")
        || text.starts_with("You must be signed in to send PMs")
}
