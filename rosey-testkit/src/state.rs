//! The server's shared state: connections, channels, users, and the helpers that
//! send frames. Everything here runs under one `parking_lot::Mutex`, synchronously:
//! frames are queued on each connection's unbounded channel, so the order of the
//! frames a client receives is the order in which the state changed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Weak;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, watch};

use crate::text::RateLimiter;
use crate::wire::{self, event, js, num};
use crate::{FakeCytubeOptions, ServerEvent};

/// How many chat lines a channel replays on join.
const HISTORY_LEN: usize = 15;
/// `usercount` goes out at most once per this long per channel.
const USERCOUNT_THROTTLE: Duration = Duration::from_secs(10);
/// Antiflood parameters CyTube shows while antiflood is off.
pub(crate) const DEFAULT_ANTIFLOOD: (u32, f64, u32) = (4, 1.0, 4);

/// What a connection task is told to do.
#[derive(Debug)]
pub(crate) enum Out {
    /// Send this text frame.
    Text(String),
    /// Send a close frame without a status code, then drop the socket.
    Close,
    /// Drop the socket at once, without a close frame.
    Abort,
    /// Go silent: neither read nor write (no pings either) until the ping timeout, then drop the
    /// socket, as a real server does with a connection whose network went dark.
    Stall,
}

/// The socket.io namespace state of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Namespace {
    /// No `40` answered yet (or it was refused with `44`).
    Pending,
    /// `40{"sid"}` was sent; events are handled.
    Connected,
    /// Kicked (`41` sent) or the client sent `41`; events are dropped until a new `40`.
    Disconnected,
}

/// One websocket.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) tx: mpsc::UnboundedSender<Out>,
    pub(crate) ns: Namespace,
    /// Key of the channel this connection has joined.
    pub(crate) channel: Option<String>,
    /// Key of the channel waiting for this connection's password.
    pub(crate) pending_password: Option<String>,
    /// A login made outside a channel (before `joinChannel`, or while the channel waits for its
    /// password): the user joins the channel's users when the connection is admitted.
    pub(crate) early_login: Option<EarlyLogin>,
    pub(crate) limiter: RateLimiter,
}

/// A successful login of a connection that is not in a channel yet.
#[derive(Debug, Clone)]
pub(crate) struct EarlyLogin {
    pub(crate) name: String,
    /// The account's rank in the channel (1 without a channel rank; 0 for a guest).
    pub(crate) rank: f64,
    pub(crate) guest: bool,
}

/// A logged-in user of a channel: a client connection or a simulated peer.
#[derive(Debug, Clone)]
pub(crate) struct ChanUser {
    pub(crate) name: String,
    pub(crate) rank: f64,
    pub(crate) afk: bool,
    /// `None` for a simulated peer.
    pub(crate) conn: Option<u64>,
}

/// One chat line kept for the join replay.
#[derive(Debug, Clone)]
pub(crate) struct HistoryLine {
    pub(crate) user: String,
    pub(crate) msg: String,
    pub(crate) meta: String,
    pub(crate) time: i64,
}

/// A channel's configuration and live state.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) name: String,
    pub(crate) password: Option<String>,
    pub(crate) registered: bool,
    pub(crate) antiflood_on: bool,
    pub(crate) antiflood: (u32, f64, u32),
    pub(crate) history: VecDeque<HistoryLine>,
    /// Every joined connection, anonymous or not, in join order.
    pub(crate) members: Vec<u64>,
    /// Logged-in users in `addUser` order.
    pub(crate) users: Vec<ChanUser>,
    /// Lower-cased banned names.
    pub(crate) bans: HashSet<String>,
    pub(crate) chat_log: Vec<(String, String)>,
    usercount_last: Option<Instant>,
    usercount_pending: bool,
}

impl Channel {
    fn new(name: &str) -> Self {
        Channel {
            name: name.to_owned(),
            password: None,
            registered: false,
            antiflood_on: false,
            antiflood: DEFAULT_ANTIFLOOD,
            history: VecDeque::new(),
            members: Vec::new(),
            users: Vec::new(),
            bans: HashSet::new(),
            chat_log: Vec::new(),
            usercount_last: None,
            usercount_pending: false,
        }
    }

    /// Index of the logged-in user with this name (case-insensitive).
    pub(crate) fn user_index(&self, name: &str) -> Option<usize> {
        self.users.iter().position(|u| u.name.eq_ignore_ascii_case(name))
    }

    /// Index of the logged-in user behind this connection.
    pub(crate) fn conn_user_index(&self, conn: u64) -> Option<usize> {
        self.users.iter().position(|u| u.conn == Some(conn))
    }

    /// Rank of a joined connection: its user's rank, or -1 while anonymous.
    pub(crate) fn rank_of(&self, conn: u64) -> f64 {
        self.conn_user_index(conn).map_or(-1.0, |i| self.users[i].rank)
    }

    /// The `channelOpts` payload.
    pub(crate) fn opts_json(&self) -> String {
        let (burst, sustained, cooldown) = self.antiflood;
        let password = self.password.as_deref().map_or_else(|| "false".to_owned(), js);
        format!(
            concat!(
                r#"{{"allow_voteskip":true,"voteskip_ratio":0.5,"afk_timeout":600,"pagetitle":{},"#,
                r#""maxlength":0,"externalcss":"","externaljs":"","chat_antiflood":{},"#,
                r#""chat_antiflood_params":{{"burst":{},"sustained":{},"cooldown":{}}},"#,
                r#""show_public":false,"enable_link_regex":true,"password":{},"allow_dupes":false,"#,
                r#""torbanned":false,"block_anonymous_users":false,"allow_ascii_control":false,"#,
                r#""playlist_max_per_user":0,"new_user_chat_delay":0,"new_user_chat_link_delay":0,"#,
                r#""playlist_max_duration_per_user":0}}"#
            ),
            js(&self.name),
            self.antiflood_on,
            burst,
            num(sustained),
            cooldown,
            password
        )
    }

    /// People counted by `usercount`: joined connections plus peers.
    fn usercount(&self) -> usize {
        self.members.len() + self.users.iter().filter(|u| u.conn.is_none()).count()
    }
}

/// A user entry (`addUser`, `userlist` item); `mod_view` adds what moderators see.
pub(crate) fn user_json(u: &ChanUser, mod_view: bool) -> String {
    format!(
        r#"{{"name":{},"rank":{},"profile":{{"image":"","text":""}},"meta":{}}}"#,
        js(&u.name),
        num(u.rank),
        meta_json(u, mod_view)
    )
}

/// A user's `meta`; `mod_view` adds `smuted`, `aliases` and the cloaked `ip`.
pub(crate) fn meta_json(u: &ChanUser, mod_view: bool) -> String {
    if mod_view {
        format!(
            r#"{{"afk":{},"muted":false,"smuted":false,"aliases":[{}],"ip":{}}}"#,
            u.afk,
            js(&u.name),
            js(&wire::cloaked_ip(&u.name))
        )
    } else {
        format!(r#"{{"afk":{},"muted":false}}"#, u.afk)
    }
}

/// Everything behind the mutex.
pub(crate) struct State {
    pub(crate) options: FakeCytubeOptions,
    pub(crate) events: broadcast::Sender<ServerEvent>,
    /// The `Inner` owning this state, for timers that come back later.
    pub(crate) this: Weak<Inner>,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) shutdown: watch::Receiver<()>,
    pub(crate) next_conn: u64,
    pub(crate) conns: HashMap<u64, Conn>,
    pub(crate) channels: HashMap<String, Channel>,
    /// Namespace connects accepted since start or `reset_connect_limit`.
    pub(crate) connects: u32,
    pub(crate) last_guest_login: Option<Instant>,
}

/// Shared between the listeners, the connection tasks and the handles.
pub(crate) struct Inner {
    pub(crate) state: Mutex<State>,
    pub(crate) events: broadcast::Sender<ServerEvent>,
}

/// Channels are found case-insensitively.
pub(crate) fn channel_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl State {
    /// Reports an event to the subscribers (none is fine).
    pub(crate) fn emit(&self, ev: ServerEvent) {
        tracing::trace!(?ev, "fake cytube event");
        let _ = self.events.send(ev);
    }

    /// Queues a frame for one connection.
    pub(crate) fn send(&self, conn: u64, frame: String) {
        if let Some(c) = self.conns.get(&conn) {
            tracing::trace!(conn, %frame, "fake cytube ->");
            let _ = c.tx.send(Out::Text(frame));
        }
    }

    /// Queues a frame for every joined connection of a channel.
    pub(crate) fn broadcast(&self, key: &str, frame: &str) {
        for m in self.members(key) {
            self.send(m, frame.to_owned());
        }
    }

    /// The joined connections of a channel.
    pub(crate) fn members(&self, key: &str) -> Vec<u64> {
        self.channels.get(key).map(|c| c.members.clone()).unwrap_or_default()
    }

    /// The channel, created with default settings if new.
    pub(crate) fn channel_mut(&mut self, name: &str) -> &mut Channel {
        self.channels.entry(channel_key(name)).or_insert_with(|| Channel::new(name))
    }

    /// Broadcasts `addUser` for `users[idx]`: moderators (rank >= 2) other than the
    /// user get the moderator view and a `[server]` join whisper.
    pub(crate) fn announce_user(&self, key: &str, idx: usize) {
        let Some(ch) = self.channels.get(key) else { return };
        let Some(user) = ch.users.get(idx) else { return };
        let plain = event("addUser", Some(&user_json(user, false)));
        let modded = event("addUser", Some(&user_json(user, true)));
        let whisper = event(
            "chatMsg",
            Some(&wire::chat_payload(
                "[server]",
                &format!("{} joined (aliases: {})", user.name, user.name),
                r#"{"addClass":"server-whisper","addClassToNameAndTimestamp":true}"#,
                wire::now_ms(),
            )),
        );
        for &m in &ch.members {
            if ch.rank_of(m) >= 2.0 && user.conn != Some(m) {
                self.send(m, modded.clone());
                self.send(m, whisper.clone());
            } else {
                self.send(m, plain.clone());
            }
        }
    }

    /// Sends a connection the full user list in the view its rank allows.
    pub(crate) fn send_userlist(&self, key: &str, conn: u64) {
        let Some(ch) = self.channels.get(key) else { return };
        let mod_view = ch.rank_of(conn) >= 2.0;
        let list: Vec<String> = ch.users.iter().map(|u| user_json(u, mod_view)).collect();
        self.send(conn, event("userlist", Some(&format!("[{}]", list.join(",")))));
    }

    /// Removes the logged-in user `users[idx]` and broadcasts `userLeave`.
    pub(crate) fn remove_user(&mut self, key: &str, idx: usize) -> Option<ChanUser> {
        let ch = self.channels.get_mut(key)?;
        if idx >= ch.users.len() {
            return None;
        }
        let user = ch.users.remove(idx);
        let frame = event("userLeave", Some(&format!(r#"{{"name":{}}}"#, js(&user.name))));
        self.broadcast(key, &frame);
        Some(user)
    }

    /// Takes a connection out of its channel (and out of a password prompt):
    /// `userLeave` if it was logged in, then a `usercount` update.
    pub(crate) fn leave_channel(&mut self, conn: u64) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.pending_password = None;
        let Some(key) = c.channel.take() else { return };
        let Some(ch) = self.channels.get_mut(&key) else { return };
        ch.members.retain(|&m| m != conn);
        if let Some(idx) = ch.conn_user_index(conn) {
            self.remove_user(&key, idx);
        }
        self.usercount_changed(&key);
    }

    /// `kick {reason}` then `41`: the connection leaves its channel and the namespace,
    /// the websocket stays open.
    pub(crate) fn kick_conn(&mut self, conn: u64, reason: &str) {
        self.send(conn, wire::kick(reason));
        self.leave_channel(conn);
        self.send(conn, "41".to_owned());
        if let Some(c) = self.conns.get_mut(&conn) {
            c.ns = Namespace::Disconnected;
        }
    }

    /// The channel's head count changed: the first change in a 10 s window goes out
    /// at once, later ones are combined into one update at the end of the window.
    pub(crate) fn usercount_changed(&mut self, key: &str) {
        let Some(ch) = self.channels.get_mut(key) else { return };
        if ch.usercount_pending {
            return;
        }
        let now = Instant::now();
        match ch.usercount_last {
            Some(last) if now.duration_since(last) < USERCOUNT_THROTTLE => {
                ch.usercount_pending = true;
                let deadline = tokio::time::Instant::from_std(last + USERCOUNT_THROTTLE);
                let this = self.this.clone();
                let mut shutdown = self.shutdown.clone();
                let key = key.to_owned();
                self.runtime.spawn(async move {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        _ = shutdown.changed() => return,
                    }
                    if let Some(inner) = this.upgrade() {
                        inner.state.lock().flush_usercount(&key);
                    }
                });
            }
            _ => self.flush_usercount(key),
        }
    }

    fn flush_usercount(&mut self, key: &str) {
        let Some(ch) = self.channels.get_mut(key) else { return };
        ch.usercount_pending = false;
        ch.usercount_last = Some(Instant::now());
        let frame = event("usercount", Some(&ch.usercount().to_string()));
        self.broadcast(key, &frame);
    }

    /// Appends an accepted chat line: history, chat log, broadcast, event.
    pub(crate) fn broadcast_chat(&mut self, key: &str, user: &str, msg: &str, meta: &str) {
        let time = wire::now_ms();
        let frame = event("chatMsg", Some(&wire::chat_payload(user, msg, meta, time)));
        self.broadcast(key, &frame);
        let Some(ch) = self.channels.get_mut(key) else { return };
        push_history(
            ch,
            HistoryLine { user: user.to_owned(), msg: msg.to_owned(), meta: meta.to_owned(), time },
        );
        ch.chat_log.push((user.to_owned(), msg.to_owned()));
        let channel = ch.name.clone();
        self.emit(ServerEvent::Chat { channel, user: user.to_owned(), msg: msg.to_owned() });
    }

    /// Changes a user's AFK flag: `clearVoteskipVote` to the user when going AFK,
    /// then `setUserMeta` (moderator view to moderators) and `setAFK` to everyone.
    pub(crate) fn set_afk(&mut self, key: &str, idx: usize, afk: bool) {
        let Some(ch) = self.channels.get_mut(key) else { return };
        let Some(user) = ch.users.get_mut(idx) else { return };
        if user.afk == afk {
            return;
        }
        user.afk = afk;
        let user = user.clone();
        let ch = &self.channels[key];
        let meta = |mod_view| {
            event(
                "setUserMeta",
                Some(&format!(
                    r#"{{"name":{},"meta":{}}}"#,
                    js(&user.name),
                    meta_json(&user, mod_view)
                )),
            )
        };
        let set_afk =
            event("setAFK", Some(&format!(r#"{{"name":{},"afk":{}}}"#, js(&user.name), afk)));
        if let (Some(c), true) = (user.conn, afk) {
            self.send(c, event("clearVoteskipVote", None));
        }
        for &m in &ch.members {
            self.send(m, meta(ch.rank_of(m) >= 2.0));
            self.send(m, set_afk.clone());
        }
    }

    /// Changes a user's rank: a client gets the moderator `userlist` when it becomes
    /// a moderator, then `rank`; everyone gets `setUserRank`.
    pub(crate) fn set_rank(&mut self, key: &str, idx: usize, rank: f64) {
        let Some(ch) = self.channels.get_mut(key) else { return };
        let Some(user) = ch.users.get_mut(idx) else { return };
        let old = user.rank;
        user.rank = rank;
        let (name, conn) = (user.name.clone(), user.conn);
        if let Some(c) = conn {
            if rank >= 2.0 && old < 2.0 {
                self.send_userlist(key, c);
            }
            self.send(c, event("rank", Some(&num(rank))));
        }
        let frame = event(
            "setUserRank",
            Some(&format!(r#"{{"name":{},"rank":{}}}"#, js(&name), num(rank))),
        );
        self.broadcast(key, &frame);
    }
}

/// Keeps the last `HISTORY_LEN` lines.
pub(crate) fn push_history(ch: &mut Channel, line: HistoryLine) {
    ch.history.push_back(line);
    while ch.history.len() > HISTORY_LEN {
        ch.history.pop_front();
    }
}
