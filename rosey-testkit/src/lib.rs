//! Test support for Rosey: [`FakeCytube`], a fake CyTube 3.86 server that replays the
//! behaviour recorded in `rosey-testkit/fixtures/cytube/` (frame shapes, event names, order,
//! error texts) for the tests of the CyTube connector.
//!
//! It listens on two loopback ports, like CyTube: a tiny HTTP server answering
//! `GET /socketconfig/<channel>.json`, and a socket.io (Engine.IO v4, websocket
//! transport only) server. Tests drive the server side through [`ChannelHandle`] and
//! observe it through [`ServerEvent`]s:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use rosey_testkit::{FakeCytube, FakeCytubeOptions, ServerEvent};
//!
//! let server = FakeCytube::start(FakeCytubeOptions::default()).await?;
//! let mut events = server.subscribe();
//! let chan = server.channel("testchan");
//! chan.join_peer("alice", 0.0);
//! // ... point the bot at server.url() and let it join "testchan" ...
//! chan.say("alice", "!roll 2d6");
//! let reply = FakeCytube::wait_for(&mut events, Duration::from_secs(5), |ev| match ev {
//!     ServerEvent::Chat { user, msg, .. } if user != "alice" => Some(msg.clone()),
//!     _ => None,
//! })
//! .await;
//! # let _ = reply; Ok(()) }
//! ```
//!
//! What is simulated, as recorded: the Engine.IO open packet and heartbeat (`2`/`3`,
//! close on ping timeout), the namespace connect (`40`, `rank -1`, the optional `44`
//! throttle), `joinChannel` with passwords and the join burst (history replay, user
//! list, `channelNotRegistered`), guest and registered `login` with every recorded error
//! text, duplicate logins, kicks and bans, `chatMsg` (flood limits and `cooldown`,
//! truncation, `/me`, `/sp`, `/afk`, greentext, escaping, links) and `pm`. `usercount`
//! is sent like CyTube does: the first change at once, later ones combined at most once
//! per 10 s per channel, so it may arrive at any point; never wait for it.
//!
//! Not simulated: the playlist and media commands (`queue`, `mediaUpdate`, ...; only
//! [`ChannelHandle::change_media`] broadcasts a `changeMedia`), polls, emotes,
//! moderator commands sent as chat (`/rank`, `/kick`, ...) and the per-IP connection
//! count kick. Unknown events get no reply, as on the real server.
//!
//! [`browser::Browser`] drives a headless Chromium over WebDriver, for tests of web pages.
//!
//! [`nats::NatsServer`] is a throwaway `nats-server` of a test's own, for tests that run a whole
//! Rosey node (whose queue groups and subjects would mix with another node's on a shared server).
//!
//! [`FaultProxy`] is a TCP proxy that cuts, stalls or delays the connection to a real server
//! (PostgreSQL, NATS) on demand, for tests of how a client rides out an outage.

#![deny(missing_docs)]

pub mod browser;
mod channel;
mod chat;
mod conn;
mod http;
pub mod nats;
pub mod postgres;
pub mod promtool;
pub mod recorded;
mod session;
mod state;
mod text;
mod wire;

pub mod proxy;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::broadcast::{self, Receiver, error::RecvError};
use tokio::sync::watch;

pub use channel::ChannelHandle;
pub use postgres::TestDatabase;
pub use proxy::FaultProxy;

/// The fake CyTube server's API under one path: `use rosey_testkit::cytube::*`.
pub mod cytube {
    pub use crate::{Account, ChannelHandle, FakeCytube, FakeCytubeOptions, ServerEvent, wait_for};
}

use state::{Inner, Out, State};

/// Capacity of the [`ServerEvent`] broadcast channel.
const EVENT_CAPACITY: usize = 8192;

/// How a [`FakeCytube`] behaves.
#[derive(Debug, Clone)]
pub struct FakeCytubeOptions {
    /// Engine.IO `pingInterval`: a `2` goes out this long after open and after each `3`.
    /// Default 25 s, as recorded.
    pub ping_interval: Duration,
    /// Engine.IO `pingTimeout`: the websocket is closed when no `3` arrives this long
    /// after a `2`. Default 120 s, as recorded.
    pub ping_timeout: Duration,
    /// CyTube's `guest-login-delay`: a guest login sooner than this after the previous
    /// successful guest login on this server is refused. `None` (the default) disables it,
    /// like the recorded server's `0`.
    pub guest_login_delay: Option<Duration>,
    /// Namespace connects (`40`) accepted since start or
    /// [`reset_connect_limit`](FakeCytube::reset_connect_limit); beyond it `40` is answered
    /// `44{"message":"Rate limit exceeded"}`. `None` (the default): no limit.
    pub connect_limit: Option<u32>,
    /// Registered accounts (see [`Account::recorded`] for the ones in the fixtures).
    pub accounts: Vec<Account>,
}

impl Default for FakeCytubeOptions {
    fn default() -> Self {
        FakeCytubeOptions {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(120),
            guest_login_delay: None,
            connect_limit: None,
            accounts: Vec::new(),
        }
    }
}

/// A registered CyTube account (global rank 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// Account name; logins match it case-insensitively and get this spelling.
    pub name: String,
    /// Password expected in `login {name, pw}`.
    pub password: String,
    /// Channel rank, applied in every channel after login (`rank <n>`, then
    /// `setUserRank`); without one the account keeps its global rank 1. A rank of 2 or
    /// more gets the moderator views (moderator `userlist`, `addUser` with `aliases`/`ip`,
    /// `[server]` join whispers).
    pub channel_rank: Option<f64>,
}

impl Account {
    /// An account without a channel rank.
    pub fn new(name: &str, password: &str) -> Self {
        Account { name: name.to_owned(), password: password.to_owned(), channel_rank: None }
    }

    /// The same account with a channel rank.
    pub fn with_channel_rank(mut self, rank: f64) -> Self {
        self.channel_rank = Some(rank);
        self
    }

    /// The accounts of the recorded server, as seen in `testchan`: `rosey_admin` /
    /// `hunter22` (no channel rank there; in `roseyroom`, which it owns, it had rank 5:
    /// use [`with_channel_rank`](Self::with_channel_rank)) and `RegBot` (its password is
    /// not in the fixtures; here `regbot-pw`).
    pub fn recorded() -> Vec<Account> {
        vec![Account::new("rosey_admin", "hunter22"), Account::new("RegBot", "regbot-pw")]
    }
}

/// What happened on the server, for tests to await.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// A websocket was accepted.
    Connected {
        /// Connection id.
        conn: u64,
    },
    /// A websocket ended (closed by either side, timed out, or dropped).
    Disconnected {
        /// Connection id.
        conn: u64,
    },
    /// A text frame from a client, raw (reported before it is handled).
    Received {
        /// Connection id.
        conn: u64,
        /// The frame as received.
        frame: String,
    },
    /// A connection finished joining a channel (its join burst went out).
    Joined {
        /// Connection id.
        conn: u64,
        /// Channel name.
        channel: String,
    },
    /// A connection logged in.
    LoggedIn {
        /// Connection id.
        conn: u64,
        /// Channel name.
        channel: String,
        /// The name it got.
        name: String,
        /// True for a guest login.
        guest: bool,
    },
    /// A chat line was accepted and broadcast (from a client or a peer).
    Chat {
        /// Channel name.
        channel: String,
        /// Sender.
        user: String,
        /// The message as broadcast (escaped, linkified).
        msg: String,
    },
    /// A client's chat line was dropped by a flood limit and answered `cooldown`.
    ChatDropped {
        /// Channel name.
        channel: String,
        /// Sender.
        user: String,
        /// The message as sent (truncated to 320 characters, not escaped).
        msg: String,
        /// The `cooldown` value sent, in milliseconds.
        cooldown_ms: u64,
    },
    /// A client sent a PM that was delivered (to a client, or to a peer).
    Pm {
        /// Channel name.
        channel: String,
        /// Sender.
        from: String,
        /// Recipient, as spelled in the channel.
        to: String,
        /// The message as delivered (escaped, linkified).
        msg: String,
    },
    /// A client answered a ping (`3`).
    Pong {
        /// Connection id.
        conn: u64,
    },
}

/// A fake CyTube server on two loopback ports. Dropping it shuts both listeners and
/// every connection down (abruptly, like a dead server).
pub struct FakeCytube {
    inner: Arc<Inner>,
    /// The status every HTTP request gets while the server "fails" (0: none).
    http_failing: Arc<std::sync::atomic::AtomicU16>,
    http_port: u16,
    ws_port: u16,
    _shutdown: watch::Sender<()>,
}

impl fmt::Debug for FakeCytube {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeCytube")
            .field("http_port", &self.http_port)
            .field("ws_port", &self.ws_port)
            .finish_non_exhaustive()
    }
}

impl FakeCytube {
    /// Binds both listeners on 127.0.0.1 (port 0) and starts serving on the current
    /// tokio runtime.
    pub async fn start(options: FakeCytubeOptions) -> std::io::Result<Self> {
        let http = TcpListener::bind("127.0.0.1:0").await?;
        let ws = TcpListener::bind("127.0.0.1:0").await?;
        let (http_port, ws_port) = (http.local_addr()?.port(), ws.local_addr()?.port());
        let (shutdown_tx, shutdown_rx) = watch::channel(());
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let runtime = tokio::runtime::Handle::current();
        let inner = Arc::new_cyclic(|this| Inner {
            events: events.clone(),
            state: Mutex::new(State {
                options,
                events,
                this: this.clone(),
                runtime,
                shutdown: shutdown_rx.clone(),
                next_conn: 0,
                conns: HashMap::new(),
                channels: HashMap::new(),
                connects: 0,
                last_guest_login: None,
            }),
        });
        let http_failing = Arc::new(std::sync::atomic::AtomicU16::new(0));
        tokio::spawn(http::serve(http, ws_port, http_failing.clone(), shutdown_rx.clone()));
        tokio::spawn(conn::serve(inner.clone(), ws, shutdown_rx));
        tracing::debug!(http_port, ws_port, "fake cytube started");
        Ok(FakeCytube { inner, http_failing, http_port, ws_port, _shutdown: shutdown_tx })
    }

    /// `http://127.0.0.1:<http_port>`: the bot's `server` setting.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `ws://127.0.0.1:<ws_port>/socket.io/?EIO=4&transport=websocket`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket", self.ws_port)
    }

    /// The handle of a channel, creating its configuration (unregistered, no password,
    /// antiflood off) if new. Channel names are matched case-insensitively.
    pub fn channel(&self, name: &str) -> ChannelHandle {
        self.inner.state.lock().channel_mut(name);
        ChannelHandle { inner: self.inner.clone(), name: name.to_owned() }
    }

    /// A receiver of every [`ServerEvent`] from now on.
    pub fn subscribe(&self) -> Receiver<ServerEvent> {
        self.inner.events.subscribe()
    }

    /// Waits for the first event for which `f` returns `Some`, skipping the others.
    ///
    /// # Panics
    /// When `timeout` passes first (the message lists the last events seen), or when the
    /// server is gone.
    pub async fn wait_for<T>(
        rx: &mut Receiver<ServerEvent>,
        timeout: Duration,
        f: impl FnMut(&ServerEvent) -> Option<T>,
    ) -> T {
        wait_for(rx, timeout, f).await
    }

    /// Drops every websocket at once: no close frame, no `41`, like a network cut.
    pub fn drop_connections(&self) {
        let st = self.inner.state.lock();
        for c in st.conns.values() {
            let _ = c.tx.send(Out::Abort);
        }
    }

    /// Makes every websocket go silent, as when the network goes dark without TCP noticing: the
    /// server neither reads nor writes (no pings) until its ping timeout, then drops the socket and
    /// the user leaves the channel.
    pub fn stall_connections(&self) {
        let st = self.inner.state.lock();
        for c in st.conns.values() {
            let _ = c.tx.send(Out::Stall);
        }
    }

    /// How many websockets are open.
    pub fn connections(&self) -> usize {
        self.inner.state.lock().conns.len()
    }

    /// Answers every HTTP request (socketconfig included) with `status` (a 5xx, say) until called
    /// again with `None`, like a site behind a proxy whose backend is down.
    pub fn fail_http(&self, status: Option<u16>) {
        self.http_failing.store(status.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }

    /// Changes [`FakeCytubeOptions::connect_limit`] (and restarts its count).
    pub fn set_connect_limit(&self, limit: Option<u32>) {
        let mut st = self.inner.state.lock();
        st.options.connect_limit = limit;
        st.connects = 0;
    }

    /// Restarts the count behind [`FakeCytubeOptions::connect_limit`].
    pub fn reset_connect_limit(&self) {
        self.inner.state.lock().connects = 0;
    }
}

/// Free-function form of [`FakeCytube::wait_for`].
///
/// # Panics
/// When `timeout` passes first, or when the server is gone.
pub async fn wait_for<T>(
    rx: &mut Receiver<ServerEvent>,
    timeout: Duration,
    mut f: impl FnMut(&ServerEvent) -> Option<T>,
) -> T {
    let mut recent: VecDeque<ServerEvent> = VecDeque::new();
    let search = async {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if let Some(t) = f(&ev) {
                        return t;
                    }
                    if recent.len() == 20 {
                        recent.pop_front();
                    }
                    recent.push_back(ev);
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "fake cytube: event receiver lagged");
                }
                Err(RecvError::Closed) => panic!("fake cytube: the server is gone"),
            }
        }
    };
    match tokio::time::timeout(timeout, search).await {
        Ok(t) => t,
        Err(_) => panic!(
            "fake cytube: no matching event within {timeout:?}; last events seen:\n{}",
            recent.iter().map(|e| format!("  {e:?}")).collect::<Vec<_>>().join("\n")
        ),
    }
}
