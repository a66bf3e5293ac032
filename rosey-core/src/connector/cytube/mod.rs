//! The CyTube connector (cargo feature `cytube`): socket.io v5 over an Engine.IO v4 websocket, built
//! against frames recorded from a real CyTube 3.86 server (`rosey-testkit/fixtures/cytube/`). Why a
//! client of our own on tokio-tungstenite rather than a socket.io crate is in `docs/CYTUBE.md`.
//!
//! [`CytubeConnector`] finds the channel's server (`socketconfig`), connects, joins and logs in, then
//! puts the channel on the bus:
//! - `chatMsg` → [`CHAT_MESSAGE`](crate::subject::CHAT_MESSAGE), read back as typed (HTML decoded,
//!   CyTube's default chat filters turned back into their markup), with the sender's rank,
//!   without the history replayed on join, the bot's own echo or server whispers;
//!   `pm` → [`PM_MESSAGE`](crate::subject::PM_MESSAGE); `addUser` / `userLeave` →
//!   [`USER_JOIN`](crate::subject::USER_JOIN) / [`USER_LEAVE`](crate::subject::USER_LEAVE);
//!   `changeMedia` → [`MEDIA_CHANGE`](crate::subject::MEDIA_CHANGE); the channel's users are
//!   queryable through the [`UserDirectory`] of [`CytubeConnector::users`];
//! - [`CHAT_SEND`](crate::subject::CHAT_SEND) and [`PM_SEND`](crate::subject::PM_SEND) → `chatMsg` /
//!   `pm`, split at the channel's limit on word boundaries, paced by a model of CyTube's own flood
//!   limiter and obeying its `cooldown`: delayed, never dropped;
//! - passing failures at start (server unreachable, HTTP 5xx, `Rate limit exceeded`, timeouts) are
//!   retried, within [`CytubeOptions::connect_timeout`] if set; a lost connection or a `kick` is
//!   followed by a reconnect with the same capped exponential backoff and jitter, a new join and
//!   login, and then what was queued meanwhile is sent. A duplicate login, a ban, a rejected password
//!   or an unknown channel stop the connector with a clear error instead;
//! - on a channel with a password it does not have, a moderator account is let in without it (the
//!   connector logs in and waits for CyTube to admit it).
//!
//! With a [`HealthRegistry`] (see [`CytubeConnector::with_health`]) the connector reports itself as
//! the [`CONNECTOR`](health::CONNECTOR): `joined <channel> as <name>` (healthy), `reconnecting: <why>`,
//! `disconnected: <why>` or `stopped` (not healthy).
//!
//! ```no_run
//! use std::sync::Arc;
//! use rosey_core::bus::{EventBus, MemoryBus};
//! use rosey_core::connector::Connector;
//! use rosey_core::connector::cytube::{CytubeConnector, CytubeOptions};
//!
//! # async fn demo() -> Result<(), rosey_core::connector::ConnectorError> {
//! let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
//! let connector = CytubeConnector::new(CytubeOptions::new("https://cytu.be", "mychannel", "RoseyBot"));
//! let users = connector.users();
//! let running = Box::new(connector).start(bus).await?; // joined and logged in
//! println!("alice's rank: {:?}", users.rank("alice"));
//! running.wait().await // until stopped, or an error that reconnecting cannot fix
//! # }
//! ```

mod channel;
mod discovery;
mod incoming;
mod outbox;
mod packet;
mod ratelimit;
mod session;
mod text;
mod users;

/// Internals exposed for the workspace's own tests (recorded-fixture replays); not a public API and
/// free to change in any release.
#[doc(hidden)]
pub mod __private {
    pub use super::incoming::Incoming;
    pub use super::packet::Frame;
    pub use super::text::html_to_text;
    pub use super::users::UserTable;
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::channel::ChannelState;
pub use self::channel::UserDirectory;
use self::outbox::{Handoff, Outgoing, Settled};
use self::session::{Link, SessionEnd};
pub use self::users::User;
use super::{Connector, ConnectorError, ConnectorHandle, ConnectorStats};
use crate::backoff::BackoffPolicy;
use crate::bus::{EventBus, Subscription};
use crate::config::{CytubeConfig, Secret};
use crate::event::{ChatSend, PmSend};
use crate::health::{self, HealthRegistry};
use crate::service::ServiceHandle;
use crate::subject;

/// Why the connector could not connect, or lost its connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CytubeError {
    /// The server does not know the channel (socketconfig answered 404).
    #[error("channel \"{channel}\" cannot be joined: {reason}")]
    UnknownChannel {
        /// The channel asked for.
        channel: String,
        /// The server's words.
        reason: String,
    },
    /// The socketconfig request failed or its answer was unusable.
    #[error("cannot find the channel's server: {0}")]
    Discovery(String),
    /// The websocket could not be opened.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The server refused the socket.io connection, e.g. `Rate limit exceeded`.
    #[error("the server refused the connection: {0}")]
    ConnectRefused(String),
    /// The connection was lost.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The server said something the handshake did not expect.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// A handshake step got no answer in time.
    #[error("no {0} within {1:?}")]
    Timeout(&'static str, Duration),
    /// The channel password is missing or wrong.
    #[error("{0}")]
    ChannelPassword(String),
    /// The login was refused (wrong password, name in use, reserved or registered name…).
    #[error("login as {name} failed: {reason}")]
    Login {
        /// The name the bot tried.
        name: String,
        /// The server's words.
        reason: String,
    },
    /// The server kicked the bot.
    #[error("kicked by the server: {0}")]
    Kicked(String),
    /// Starting gave up: passing failures went on for longer than
    /// [`CytubeOptions::connect_timeout`].
    #[error("not joined within {after:?} (cytube.connect_timeout); last error: {last}")]
    GaveUp {
        /// The connect timeout.
        after: Duration,
        /// The last failure.
        last: Box<CytubeError>,
    },
}

impl CytubeError {
    /// Whether reconnecting cannot help: the configuration or a moderator must act first. `reconnecting`
    /// says whether the bot was connected before: then a guest name still "in use" is most likely the
    /// bot's own old session, which the server drops after its ping timeout, so it is worth retrying.
    pub fn is_permanent(&self, reconnecting: bool) -> bool {
        match self {
            Self::UnknownChannel { .. } | Self::ChannelPassword(_) | Self::GaveUp { .. } => true,
            Self::Login { reason, .. } => !(reconnecting && reason.contains("already in use")),
            Self::Kicked(reason) => {
                let reason = reason.to_lowercase();
                reason.contains("duplicate login")
                    || reason.contains("banned")
                    || reason.contains("invalid channel name")
            }
            _ => false,
        }
    }
}

/// How to reach the channel and how to behave there.
#[derive(Debug, Clone)]
pub struct CytubeOptions {
    /// Base URL of the CyTube server (`https://cytu.be`).
    pub server: String,
    /// Channel to join.
    pub channel: String,
    /// Name to log in as.
    pub username: String,
    /// Account password; `None` logs in as a guest.
    pub password: Option<Secret>,
    /// The channel's password, if it has one.
    pub channel_password: Option<Secret>,
    /// Longest chat message, in UTF-16 units as CyTube counts; longer ones are split on word
    /// boundaries (CyTube's default 320).
    pub max_message_length: usize,
    /// Most pieces one long message is split into; the rest is dropped with a warning, so a runaway
    /// reply cannot flood the channel (10, i.e. 3 200 characters by default).
    pub max_message_pieces: usize,
    /// Messages that may be sent at once (CyTube allows 20); the channel's `chat_antiflood` is
    /// followed too when it is stricter and applies to the bot's rank.
    pub rate_burst: u32,
    /// Messages a second after the burst (CyTube allows 10).
    pub rate_per_second: f64,
    /// Delays between reconnect attempts.
    pub reconnect: BackoffPolicy,
    /// Least delay after the server refused a connection (`Rate limit exceeded`): CyTube then
    /// allows one connection per 10 s.
    pub refused_delay: Duration,
    /// A connection that lasted this long resets the reconnect backoff.
    pub stable_after: Duration,
    /// Time allowed for each handshake step (connect, join, login).
    pub handshake_timeout: Duration,
    /// Longest time [`Connector::start`] spends retrying passing failures (server unreachable,
    /// HTTP 5xx, `Rate limit exceeded`, timeouts) with the [`reconnect`](Self::reconnect) backoff
    /// before it fails with [`CytubeError::GaveUp`]; `None` retries until joined (or the start is
    /// abandoned). Permanent failures (wrong password, ban, unknown channel, name taken or
    /// registered, duplicate login) fail the start at once either way.
    pub connect_timeout: Option<Duration>,
    /// Most lines (pieces of messages) waiting to be sent, connected or not (1 000). Beyond it the
    /// oldest are dropped, counted in [`ConnectorStats::outbox_dropped`] and logged as an error (rate-limited),
    /// so a flood of replies can neither grow memory nor delay the newest answers for long.
    pub outbox_capacity: usize,
}

impl CytubeOptions {
    /// Options for `channel` on `server` as `username` (a guest unless a password is set), with the
    /// defaults: 320-character messages (10 at most per reply), a burst of 15 then 8 a second (and
    /// the channel's antiflood limit when stricter), reconnects after 1 s, 2 s, 4 s… capped at 60 s
    /// with ±30 % jitter (also when the first connection fails for a passing reason, with no
    /// overall limit), 10 s per handshake step, at most 1 000 lines waiting to be sent.
    pub fn new(server: &str, channel: &str, username: &str) -> Self {
        Self {
            server: server.to_owned(),
            channel: channel.to_owned(),
            username: username.to_owned(),
            password: None,
            channel_password: None,
            max_message_length: text::DEFAULT_MAX_LENGTH,
            max_message_pieces: 10,
            rate_burst: 15,
            rate_per_second: 8.0,
            reconnect: BackoffPolicy {
                first: Duration::from_secs(1),
                base: Duration::from_secs(2),
                factor: 2,
                max: Duration::from_secs(60),
                jitter: 0.3,
            },
            refused_delay: Duration::from_secs(10),
            stable_after: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: None,
            outbox_capacity: 1_000,
        }
    }

    /// The options of a config file's `cytube` section.
    pub fn from_config(config: &CytubeConfig) -> Self {
        Self {
            password: config.password.clone(),
            channel_password: config.channel_password.clone(),
            connect_timeout: config.connect_timeout.map(Duration::from_secs),
            ..Self::new(&config.server, &config.channel, &config.username)
        }
    }
}

/// How long before [`CytubeOptions::connect_timeout`] runs out the last attempt starts (at most half
/// the time left), so that it has a chance to finish.
const LAST_TRY_TIME: Duration = Duration::from_secs(1);

/// Messages handed from the bus subscriptions to the connection's outbox, which bounds itself; while
/// a handshake holds the outbox, the forwarders wait on this and the bus buffers behind them.
const HANDOFF_CAPACITY: usize = 64;

/// The CyTube [`Connector`]; see the [module docs](self).
#[derive(Debug)]
pub struct CytubeConnector {
    options: CytubeOptions,
    users: UserDirectory,
    stats: ConnectorStats,
    health: Health,
    /// Outgoing chat from the cluster's JetStream queue instead of the bus subjects.
    #[cfg(feature = "nats")]
    queue: Option<crate::cluster::ChatQueue>,
}

impl CytubeConnector {
    /// A connector with these options; nothing happens until [`Connector::start`].
    pub fn new(options: CytubeOptions) -> Self {
        Self {
            options,
            users: UserDirectory::default(),
            stats: ConnectorStats::default(),
            health: Health(None),
            #[cfg(feature = "nats")]
            queue: None,
        }
    }

    /// Takes what to say from the cluster's chat queue (`cytube.chat.send` and `cytube.pm.send` as
    /// JetStream stores them) rather than from subscriptions to those subjects: each line is
    /// acknowledged once CyTube has taken it (echoed, or a PM answered) or it was given up, so a
    /// connector that dies leaves what it had not said to the next holder. A line delivered again
    /// that CyTube's join history shows the bot already said is not said twice.
    #[cfg(feature = "nats")]
    pub fn chat_queue(mut self, queue: crate::cluster::ChatQueue) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Keeps its user table in `users` and counts into `stats`, shared with whoever holds them (a
    /// connector that is started again and again, such as the leased one of a cluster).
    pub fn sharing(mut self, users: UserDirectory, stats: ConnectorStats) -> Self {
        self.users = users;
        self.stats = stats;
        self
    }

    /// Reports into `health` as the [`CONNECTOR`](health::CONNECTOR); see the [module docs](self).
    pub fn with_health(mut self, health: HealthRegistry) -> Self {
        self.health = Health(Some(health));
        self
    }

    /// The channel's users as last seen (empty before the join); it stays current after
    /// [`Connector::start`], so take it before.
    pub fn users(&self) -> UserDirectory {
        self.users.clone()
    }
}

/// Where the connector reports its health, if anywhere.
#[derive(Debug, Clone)]
struct Health(Option<HealthRegistry>);

impl Health {
    fn report(&self, healthy: bool, detail: impl FnOnce() -> String) {
        if let Some(registry) = &self.0 {
            registry.report(health::CONNECTOR, healthy, detail());
        }
    }

    fn joined(&self, state: &ChannelState) {
        self.report(true, || format!("joined {} as {}", state.channel, state.incoming.bot_name()));
    }
}

#[async_trait]
impl Connector for CytubeConnector {
    fn name(&self) -> &str {
        "cytube"
    }

    /// Chat and PMs in and out, reconnects, cooldowns, and the outbox (lines waiting, lines dropped
    /// when full).
    fn stats(&self) -> ConnectorStats {
        self.stats.clone()
    }

    async fn start(
        self: Box<Self>,
        bus: Arc<dyn EventBus>,
    ) -> Result<ConnectorHandle, ConnectorError> {
        let this = *self;
        #[cfg(feature = "nats")]
        let queue = this.queue;
        #[cfg(feature = "nats")]
        let from_queue = queue.is_some();
        #[cfg(not(feature = "nats"))]
        let from_queue = false;
        let Self { options, users, stats, health, .. } = this;
        // Subscribe before connecting, so nothing said while joining is missed. The forwarders end
        // with the JoinSet: when the connector stops, or if this start fails or is abandoned.
        let (tx, mut outgoing) = mpsc::channel(HANDOFF_CAPACITY);
        let mut forwarders = JoinSet::new();
        if !from_queue {
            let chat = bus.subscribe(subject::CHAT_SEND).await?;
            let pms = bus.subscribe(subject::PM_SEND).await?;
            forwarders.spawn(forward(chat, tx.clone(), options.clone()));
            forwarders.spawn(forward(pms, tx.clone(), options.clone()));
        }

        let tls = discovery::tls_config()?;
        let mut state = ChannelState::new(&options, users, stats);
        health.report(false, || format!("joining {}", options.channel));
        let mut retry = Retry::new(&options, &tls, &health);
        let deadline =
            options.connect_timeout.map(|after| (tokio::time::Instant::now() + after, after));
        // Never cancelled: abandoning the start (dropping this future) is how a start is stopped.
        let never = CancellationToken::new();
        let connected =
            retry.connect(None, deadline, &mut state, bus.as_ref(), &mut outgoing, &never).await;
        let link = match connected {
            Ok(Some(link)) => link,
            // Unreachable with a token nobody cancels; an error rather than a panic all the same.
            Ok(None) => return Err(CytubeError::Lost("the start was abandoned".into()).into()),
            Err(error) => {
                tracing::error!(message = "cannot join the CyTube channel", channel = %options.channel, %error);
                health.report(false, || format!("disconnected: {error}"));
                return Err(error.into());
            }
        };
        tracing::info!(
            message = "joined the CyTube channel",
            channel = %options.channel,
            user = %state.incoming.bot_name()
        );
        // Pulled once joined, so a line delivered again can be checked against the join history.
        #[cfg(feature = "nats")]
        if let Some(queue) = queue {
            let recent = state.recent_own();
            forwarders.spawn(forward_queue(queue, tx.clone(), options.clone(), recent));
        }
        drop(tx);
        health.joined(&state);
        Ok(ServiceHandle::spawn("cytube", |stop| async move {
            let ended = run(link, &options, &tls, state, &bus, &mut outgoing, &health, &stop).await;
            forwarders.shutdown().await;
            match &ended {
                Ok(()) => health.report(false, || "stopped".to_owned()),
                Err(error) => health.report(false, || format!("disconnected: {error}")),
            }
            ended.map_err(Into::into)
        }))
    }
}

/// Finds the channel's server and opens a joined, logged-in connection.
async fn connect(
    options: &CytubeOptions,
    tls: &Arc<rustls::ClientConfig>,
    state: &mut ChannelState,
    bus: &dyn EventBus,
) -> Result<Link, CytubeError> {
    let url = discovery::discover(&options.server, &options.channel, tls).await?;
    Link::open(&url, options, tls, state, bus).await
}

/// Serves connection after connection until stopped or an error reconnecting cannot fix.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the list
async fn run(
    mut link: Link,
    options: &CytubeOptions,
    tls: &Arc<rustls::ClientConfig>,
    mut state: ChannelState,
    bus: &Arc<dyn EventBus>,
    outgoing: &mut mpsc::Receiver<Handoff>,
    health: &Health,
    stop: &CancellationToken,
) -> Result<(), CytubeError> {
    let mut retry = Retry::new(options, tls, health);
    retry.reconnecting = true;
    loop {
        let since = Instant::now();
        let end = link.serve(&mut state, bus.as_ref(), outgoing, stop).await;
        let error = match end {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Ended(err) => err,
        };
        state.outbox.connection_lost(Instant::now());
        if since.elapsed() >= options.stable_after {
            retry.attempt = 0;
        }
        // Reconnect until it works, shutdown, or an error that retrying cannot fix.
        link = match retry
            .connect(Some(error), None, &mut state, bus.as_ref(), outgoing, stop)
            .await
        {
            Ok(Some(link)) => link,
            Ok(None) => return Ok(()),
            Err(error) => {
                tracing::error!(message = "CyTube connector stopped", channel = %options.channel, %error);
                return Err(error);
            }
        };
        state.stats.reconnected();
        health.joined(&state);
        tracing::info!(
            message = "rejoined the CyTube channel",
            channel = %options.channel,
            queued = state.outbox.len() + outgoing.len()
        );
    }
}

/// Connecting again and again with backoff: at start (passing failures are retried, permanent ones
/// fail the start, within [`CytubeOptions::connect_timeout`] if set) and after a lost connection.
struct Retry<'a> {
    options: &'a CytubeOptions,
    tls: &'a Arc<rustls::ClientConfig>,
    health: &'a Health,
    /// Failed attempts since the last stable connection: the backoff's exponent.
    attempt: u32,
    /// Whether the bot was connected before (a guest name "in use" is then probably its own ghost).
    reconnecting: bool,
}

impl<'a> Retry<'a> {
    fn new(
        options: &'a CytubeOptions,
        tls: &'a Arc<rustls::ClientConfig>,
        health: &'a Health,
    ) -> Self {
        Self { options, tls, health, attempt: 0, reconnecting: false }
    }

    /// Connects until joined: `Ok(None)` when `stop` is cancelled first; the error when retrying
    /// cannot fix it, or (`deadline`, with the timeout it came from) when time is up. `failed` is the
    /// failure that calls for a retry, if any: the first attempt then waits out the backoff too.
    /// What is said meanwhile waits in the outbox, which bounds itself.
    async fn connect(
        &mut self,
        mut failed: Option<CytubeError>,
        deadline: Option<(tokio::time::Instant, Duration)>,
        state: &mut ChannelState,
        bus: &dyn EventBus,
        outgoing: &mut mpsc::Receiver<Handoff>,
        stop: &CancellationToken,
    ) -> Result<Option<Link>, CytubeError> {
        let options = self.options;
        let mut last: Option<CytubeError> = None;
        let mut final_try = false;
        let give_up = |last: CytubeError| match deadline {
            Some((_, after)) => CytubeError::GaveUp { after, last: Box::new(last) },
            None => last,
        };
        loop {
            if let Some(error) = failed.take() {
                if error.is_permanent(self.reconnecting) {
                    return Err(error);
                }
                let mut delay = options
                    .reconnect
                    .delay_with_jitter(self.attempt, crate::random::random_fraction());
                if let CytubeError::ConnectRefused(_) = error {
                    delay = delay.max(options.refused_delay);
                }
                if let Some((at, _)) = deadline {
                    let remaining = at.saturating_duration_since(tokio::time::Instant::now());
                    if delay >= remaining {
                        // One last try a little before the deadline, rather than none.
                        if final_try || remaining.is_zero() {
                            return Err(give_up(error));
                        }
                        final_try = true;
                        delay = remaining - LAST_TRY_TIME.min(remaining / 2);
                    }
                }
                last = Some(error.clone());
                self.attempt = self.attempt.saturating_add(1);
                let attempt = self.attempt;
                if self.reconnecting {
                    self.health.report(false, || format!("reconnecting: {error}"));
                    tracing::warn!(
                        message = "CyTube connection lost; reconnecting",
                        channel = %options.channel,
                        %error,
                        attempt,
                        delay = ?delay
                    );
                } else {
                    self.health.report(false, || format!("joining {}: {error}", options.channel));
                    tracing::warn!(
                        message = "cannot join the CyTube channel yet; retrying",
                        channel = %options.channel,
                        %error,
                        attempt,
                        delay = ?delay
                    );
                }
                let pause = tokio::time::sleep(delay);
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return Ok(None),
                        () = &mut pause => break,
                        Some((message, settled)) = outgoing.recv() => {
                            state.outbox.push_settled(message, settled);
                        }
                    }
                }
            }
            let attempt = connect(options, self.tls, state, bus);
            let connected = tokio::select! {
                () = stop.cancelled() => return Ok(None),
                connected = async {
                    match deadline {
                        Some((at, _)) => tokio::time::timeout_at(at, attempt).await.ok(),
                        None => Some(attempt.await),
                    }
                } => connected,
            };
            match connected {
                Some(Ok(link)) => return Ok(Some(link)),
                Some(Err(error)) => failed = Some(error),
                None => {
                    // Cut by the deadline: the failure before it says more than the cut.
                    let after = deadline.map_or(options.handshake_timeout, |(_, after)| after);
                    return Err(give_up(last.unwrap_or(CytubeError::Timeout("join", after))));
                }
            }
        }
    }
}

/// Moves what is said on the bus for the options' channel into the connector's queue, clipped to what
/// the outbox could send of it, until the subscription or the queue ends (or the task is aborted with
/// its JoinSet).
async fn forward(
    mut subscription: Subscription,
    tx: mpsc::Sender<Handoff>,
    options: CytubeOptions,
) {
    let CytubeOptions { channel, max_message_length, max_message_pieces, .. } = options;
    let clip = |text| outbox::clip(text, max_message_length, max_message_pieces);
    while let Some(message) = subscription.next().await {
        let outgoing = if message.subject() == subject::PM_SEND {
            match message.decode::<PmSend>() {
                Ok(pm) if pm.channel == channel => {
                    Outgoing::Pm { to: pm.to, text: clip(pm.message) }
                }
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(message = "malformed PM to send ignored", %error);
                    continue;
                }
            }
        } else {
            match message.decode::<ChatSend>() {
                Ok(chat) if chat.channel == channel => Outgoing::Chat(clip(chat.message)),
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(message = "malformed chat to send ignored", %error);
                    continue;
                }
            }
        };
        if tx.send((outgoing, Settled::none())).await.is_err() {
            return;
        }
    }
}

/// Moves what the cluster's chat queue holds for the options' channel into the connector's queue,
/// one line at a time: the next is pulled once CyTube has taken the last (see
/// [`CytubeConnector::chat_queue`]). Ends when the connector stops; a line pulled and not yet
/// acknowledged then goes to the next holder.
#[cfg(feature = "nats")]
async fn forward_queue(
    mut queue: crate::cluster::ChatQueue,
    tx: mpsc::Sender<Handoff>,
    options: CytubeOptions,
    recent: channel::RecentOwn,
) {
    let CytubeOptions { channel, max_message_length, max_message_pieces, .. } = options;
    let clip = |text| outbox::clip(text, max_message_length, max_message_pieces);
    loop {
        let delivery = match queue.next().await {
            Ok(delivery) => delivery,
            Err(error) => {
                tracing::warn!(message = "cannot pull from the chat queue; trying again", %error);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let outgoing = if delivery.subject() == subject::PM_SEND {
            match delivery.decode::<PmSend>() {
                Ok(pm) if pm.channel == channel => {
                    Some(Outgoing::Pm { to: pm.to, text: clip(pm.message) })
                }
                Ok(_) => None,
                Err(error) => {
                    tracing::warn!(message = "malformed PM to send dropped", %error);
                    None
                }
            }
        } else {
            match delivery.decode::<ChatSend>() {
                Ok(chat) if chat.channel == channel => Some(Outgoing::Chat(clip(chat.message))),
                Ok(_) => None,
                Err(error) => {
                    tracing::warn!(message = "malformed chat to send dropped", %error);
                    None
                }
            }
        };
        // A line the dead holder said but did not acknowledge: CyTube's join history shows it.
        let said_already = match &outgoing {
            Some(Outgoing::Chat(text)) if delivery.delivery_count() > 1 => {
                let last =
                    text.lines().flat_map(|l| text::split_message(l, max_message_length)).last();
                last.is_some_and(|last| recent.contains(&last))
            }
            _ => false,
        };
        let Some(outgoing) = outgoing.filter(|_| !said_already) else {
            // Another channel's, unreadable, or said already: taken off the queue.
            if let Err(error) = delivery.ack().await {
                tracing::warn!(message = "cannot acknowledge a line of the chat queue", %error);
            }
            continue;
        };
        let (settled, told) = Settled::new();
        if tx.send((outgoing, settled)).await.is_err() {
            return;
        }
        if told.await.is_err() {
            // The connector stopped before CyTube took it: the next holder says it.
            return;
        }
        if let Err(error) = delivery.ack().await {
            tracing::warn!(message = "cannot acknowledge a line of the chat queue", %error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_a_retry_cannot_fix_stop_the_connector() {
        let kicked = |reason: &str| CytubeError::Kicked(reason.to_owned());
        assert!(kicked("Duplicate login").is_permanent(true));
        assert!(kicked("You're banned!").is_permanent(true));
        assert!(!kicked("Too many connections from your IP address").is_permanent(true));
        assert!(!CytubeError::Lost("reset".into()).is_permanent(true));
        let in_use = CytubeError::Login {
            name: "RoseyBot".into(),
            reason: "That name is already in use on this channel.".into(),
        };
        assert!(in_use.is_permanent(false), "at startup the name is someone else's");
        assert!(!in_use.is_permanent(true), "after a drop it is probably our own ghost");
    }
}
