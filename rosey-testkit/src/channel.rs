//! [`ChannelHandle`]: what a test does to a channel from the server side.

use std::fmt;
use std::sync::Arc;

use crate::chat::pm_frame;
use crate::state::{ChanUser, HistoryLine, Inner, State, push_history};
use crate::text::{self, ChatAction};
use crate::wire::{self, event, js, num};

/// Test control over one channel of a [`FakeCytube`](crate::FakeCytube).
///
/// Cheap to clone. Every method takes effect at once: the frames it causes are queued
/// for the connected clients before it returns.
#[derive(Clone)]
pub struct ChannelHandle {
    pub(crate) inner: Arc<Inner>,
    pub(crate) name: String,
}

impl fmt::Debug for ChannelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelHandle").field("name", &self.name).finish()
    }
}

impl ChannelHandle {
    /// Runs `f` on the state with this channel's key (creating the channel if it is gone).
    fn with<T>(&self, f: impl FnOnce(&mut State, &str) -> T) -> T {
        let mut st = self.inner.state.lock();
        st.channel_mut(&self.name);
        f(&mut st, &crate::state::channel_key(&self.name))
    }

    /// The channel's name as first given.
    pub fn name(&self) -> String {
        self.with(|st, key| st.channels[key].name.clone())
    }

    /// Sets or clears the channel password. Joins without the right `pw` then get
    /// `needPassword`; joined clients get the new `channelOpts` (which, as on the real
    /// server, shows the password in plain text).
    pub fn set_password(&self, pw: Option<&str>) {
        self.with(|st, key| {
            let ch = st.channel_mut(key);
            ch.password = pw.filter(|p| !p.is_empty()).map(str::to_owned);
            let opts = event("channelOpts", Some(&ch.opts_json()));
            st.broadcast(key, &opts);
        });
    }

    /// Marks the channel registered (`setPlaylistLocked true`, registered permissions,
    /// no `channelNotRegistered`) for later joins.
    pub fn set_registered(&self, yes: bool) {
        self.with(|st, key| st.channel_mut(key).registered = yes);
    }

    /// Turns the channel's `chat_antiflood` option on with `(burst, sustained per second,
    /// cooldown seconds)`, or off (`None`). While on, users below rank 2 are limited by
    /// it instead of the per-user limit, by CyTube's rules (`burst` at once, then one per
    /// `1000 / sustained` ms after the last accepted message, the burst back after more
    /// than `cooldown` s of quiet); a dropped message is answered
    /// `cooldown <1000 / sustained>` (as recorded). Joined clients get the new `channelOpts`.
    pub fn set_antiflood(&self, v: Option<(u32, f64, u32)>) {
        self.with(|st, key| {
            let ch = st.channel_mut(key);
            ch.antiflood_on = v.is_some();
            if let Some(v) = v {
                ch.antiflood = v;
            }
            let opts = event("channelOpts", Some(&ch.opts_json()));
            st.broadcast(key, &opts);
        });
    }

    /// Appends a line to the replayed history (`msg` is used as is, already escaped;
    /// `meta` is `{}`). Not broadcast and not part of [`chat_log`](Self::chat_log).
    pub fn add_history(&self, user: &str, msg: &str, time_ms: i64) {
        self.with(|st, key| {
            let line = HistoryLine {
                user: user.to_owned(),
                msg: msg.to_owned(),
                meta: "{}".to_owned(),
                time: time_ms,
            };
            push_history(st.channel_mut(key), line);
        });
    }

    /// A simulated user (no socket) logs in: it is in later `userlist`s and `addUser`
    /// is broadcast. A name already present is left as it is.
    pub fn join_peer(&self, name: &str, rank: f64) {
        self.with(|st, key| {
            let ch = st.channel_mut(key);
            if ch.user_index(name).is_some() {
                tracing::warn!(name, "fake cytube: join_peer of a name already present");
                return;
            }
            let user = ChanUser { name: name.to_owned(), rank, afk: false, conn: None };
            ch.users.push(user);
            let idx = ch.users.len() - 1;
            st.announce_user(key, idx);
            st.usercount_changed(key);
        });
    }

    /// A simulated user leaves: `userLeave`.
    pub fn leave_peer(&self, name: &str) {
        self.with(|st, key| {
            let ch = st.channel_mut(key);
            match ch.user_index(name) {
                Some(idx) if ch.users[idx].conn.is_none() => {
                    st.remove_user(key, idx);
                    st.usercount_changed(key);
                }
                _ => tracing::warn!(name, "fake cytube: leave_peer of an unknown peer"),
            }
        });
    }

    /// Changes a user's (peer's or client's) rank: `setUserRank` to everyone; a client
    /// also gets `rank` (and the moderator `userlist` when it reaches rank 2).
    pub fn set_rank(&self, name: &str, rank: f64) {
        self.with(|st, key| match st.channel_mut(key).user_index(name) {
            Some(idx) => st.set_rank(key, idx, rank),
            None => tracing::warn!(name, "fake cytube: set_rank of an unknown user"),
        });
    }

    /// Changes a user's AFK flag: `setUserMeta` and `setAFK` (nothing if unchanged).
    pub fn set_afk(&self, name: &str, afk: bool) {
        self.with(|st, key| match st.channel_mut(key).user_index(name) {
            Some(idx) => st.set_afk(key, idx, afk),
            None => tracing::warn!(name, "fake cytube: set_afk of an unknown user"),
        });
    }

    /// A peer chats: processed like a client's `chatMsg` (truncation, `/me`, `/sp`,
    /// greentext, escaping, links), broadcast and kept in the history. No flood limit.
    pub fn say(&self, peer: &str, text: &str) {
        self.with(|st, key| {
            let cleaned = text::clean_input(text);
            match text::process_chat(&cleaned, st.channel_mut(key).registered) {
                ChatAction::Say { msg, meta } => st.broadcast_chat(key, peer, &msg, &meta),
                ChatAction::ToggleAfk => {
                    let ch = st.channel_mut(key);
                    if let Some(idx) = ch.user_index(peer) {
                        let afk = !ch.users[idx].afk;
                        st.set_afk(key, idx, afk);
                    }
                }
            }
        });
    }

    /// A peer PMs a logged-in client of this channel: the client gets `pm` (escaped,
    /// linkified, no `/me` processing). Nothing happens if `to` is not a client here.
    pub fn pm(&self, peer: &str, to: &str, text: &str) {
        self.with(|st, key| {
            let ch = st.channel_mut(key);
            let target = ch.user_index(to).and_then(|i| ch.users[i].conn.map(|c| (c, i)));
            let Some((conn, idx)) = target else {
                tracing::warn!(to, "fake cytube: pm to a user that is not a client here");
                return;
            };
            let frame = pm_frame(peer, &text::process_pm(text, ch.registered), &ch.users[idx].name);
            st.send(conn, frame);
        });
    }

    /// Broadcasts `changeMedia {id,title,seconds,duration,type,meta:{},currentTime:-3,
    /// paused:true}` (the playlist itself stays empty).
    pub fn change_media(&self, title: &str, media_type: &str, id: &str, seconds: f64) {
        self.with(|st, key| {
            let payload = format!(
                r#"{{"id":{},"title":{},"seconds":{},"duration":{},"type":{},"meta":{{}},"currentTime":-3,"paused":true}}"#,
                js(id),
                js(title),
                num(seconds),
                js(&wire::format_duration(seconds)),
                js(media_type)
            );
            st.broadcast(key, &event("changeMedia", Some(&payload)));
        });
    }

    /// Kicks a user: a client gets `kick {reason}` then `41` and leaves the channel
    /// (its websocket stays open, the client must close it); the others get
    /// `userLeave`. A peer just leaves.
    pub fn kick(&self, name: &str, reason: &str) {
        self.with(|st, key| kick_user(st, key, name, reason));
    }

    /// Bans a name from this channel: kicked now if present (`You're banned!`), and
    /// every later login with that name here gets the same kick.
    pub fn ban(&self, name: &str) {
        self.with(|st, key| {
            st.channel_mut(key).bans.insert(name.to_ascii_lowercase());
            kick_user(st, key, name, "You're banned!");
        });
    }

    /// `(username, escaped msg)` of every chat line accepted and broadcast so far
    /// (from clients and peers), in order.
    pub fn chat_log(&self) -> Vec<(String, String)> {
        self.with(|st, key| st.channels[key].chat_log.clone())
    }
}

fn kick_user(st: &mut State, key: &str, name: &str, reason: &str) {
    let ch = st.channel_mut(key);
    let Some(idx) = ch.user_index(name) else { return };
    match ch.users[idx].conn {
        Some(conn) => {
            tracing::debug!(name, reason, "fake cytube: kicking");
            st.kick_conn(conn, reason);
        }
        None => {
            st.remove_user(key, idx);
            st.usercount_changed(key);
        }
    }
}
