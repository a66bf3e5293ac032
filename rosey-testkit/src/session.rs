//! Per-connection protocol handling: Engine.IO / socket.io packets, `joinChannel`,
//! `channelPassword` and `login`. Chat and PMs are in `chat.rs`.

use std::time::Instant;

use serde_json::Value;

use crate::ServerEvent;
use crate::state::{ChanUser, EarlyLogin, Namespace, Out, State, channel_key};
use crate::text;
use crate::wire::{self, event, js, num};

impl State {
    /// Handles one text frame from a client (`3` is handled by the connection task).
    pub(crate) fn handle_frame(&mut self, conn: u64, frame: &str) {
        match frame.as_bytes().first() {
            Some(b'4') => self.handle_socketio(conn, &frame[1..]),
            Some(b'1') => {
                // Engine.IO close from the client: close the transport.
                if let Some(c) = self.conns.get(&conn) {
                    let _ = c.tx.send(Out::Close);
                }
            }
            Some(b'3' | b'2' | b'6') => {}
            _ => tracing::debug!(conn, frame, "fake cytube: ignoring malformed frame"),
        }
    }

    fn handle_socketio(&mut self, conn: u64, packet: &str) {
        match packet.as_bytes().first() {
            Some(b'0') => self.namespace_connect(conn, &packet[1..]),
            Some(b'1') => {
                tracing::debug!(conn, "fake cytube: client left the namespace");
                self.leave_channel(conn);
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.ns = Namespace::Disconnected;
                }
            }
            Some(b'2') => self.handle_event(conn, &packet[1..]),
            _ => tracing::debug!(conn, packet, "fake cytube: ignoring socket.io packet"),
        }
    }

    fn namespace_connect(&mut self, conn: u64, rest: &str) {
        if rest.starts_with('/') && !rest.starts_with("/,") {
            let nsp = rest.split(',').next().unwrap_or(rest);
            if nsp != "/" {
                self.send(conn, format!(r#"44{nsp},{{"message":"Invalid namespace"}}"#));
                return;
            }
        }
        let Some(c) = self.conns.get(&conn) else { return };
        if c.ns == Namespace::Connected {
            tracing::debug!(conn, "fake cytube: second namespace connect ignored");
            return;
        }
        if self.options.connect_limit.is_some_and(|limit| self.connects >= limit) {
            tracing::debug!(conn, "fake cytube: connect throttled");
            self.send(conn, r#"44{"message":"Rate limit exceeded"}"#.to_owned());
            return;
        }
        self.connects += 1;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.ns = Namespace::Connected;
            c.limiter = Default::default();
        }
        self.send(conn, format!(r#"40{{"sid":{}}}"#, js(&wire::sid())));
        self.send(conn, event("rank", Some("-1")));
    }

    fn handle_event(&mut self, conn: u64, body: &str) {
        let Some(c) = self.conns.get(&conn) else { return };
        // An optional ack id precedes the array.
        let json = body.trim_start_matches(|ch: char| ch.is_ascii_digit());
        let parsed: Option<Vec<Value>> = serde_json::from_str(json).ok();
        let Some((name, arg)) = parsed.as_ref().and_then(|v| match v.first() {
            Some(Value::String(name)) => Some((name.as_str(), v.get(1))),
            _ => None,
        }) else {
            tracing::warn!(conn, body, "fake cytube: ignoring malformed event");
            return;
        };
        if c.ns != Namespace::Connected {
            tracing::debug!(conn, name, "fake cytube: event before namespace connect dropped");
            return;
        }
        match name {
            "joinChannel" => self.on_join(conn, arg),
            "channelPassword" => self.on_channel_password(conn, arg),
            "login" => self.on_login(conn, arg),
            "chatMsg" => self.on_chat(conn, arg),
            "pm" => self.on_pm(conn, arg),
            other => tracing::debug!(conn, event = other, "fake cytube: unhandled event"),
        }
    }

    fn on_join(&mut self, conn: u64, arg: Option<&Value>) {
        let Some(c) = self.conns.get(&conn) else { return };
        if c.channel.is_some() || c.pending_password.is_some() {
            tracing::debug!(conn, "fake cytube: second joinChannel ignored");
            return;
        }
        let Some(name) = arg.and_then(|a| a.get("name")).and_then(Value::as_str) else {
            tracing::warn!(conn, ?arg, "fake cytube: malformed joinChannel ignored");
            return;
        };
        if !text::valid_channel_name(name) {
            self.send(conn, wire::error_msg(wire::INVALID_CHANNEL));
            self.kick_conn(conn, "Invalid channel name");
            return;
        }
        let pw = arg.and_then(|a| a.get("pw")).and_then(Value::as_str);
        let moderator = c.early_login.as_ref().is_some_and(|login| login.rank >= 2.0);
        let channel = self.channel_mut(name);
        let key = channel_key(name);
        match (&channel.password, pw) {
            (None, _) => self.finish_join(conn, &key),
            (Some(expected), Some(pw)) if expected == pw => self.finish_join(conn, &key),
            // Logged in already as a moderator: no password needed.
            (Some(_), _) if moderator => self.finish_join(conn, &key),
            (Some(_), given) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.pending_password = Some(key);
                }
                self.send(conn, event("needPassword", Some(&given.is_some().to_string())));
            }
        }
    }

    fn on_channel_password(&mut self, conn: u64, arg: Option<&Value>) {
        let Some(key) = self.conns.get(&conn).and_then(|c| c.pending_password.clone()) else {
            return;
        };
        let Some(pw) = arg.and_then(Value::as_str) else { return };
        let expected = self.channels.get(&key).and_then(|c| c.password.clone());
        if expected.is_none_or(|e| e == pw) {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.pending_password = None;
            }
            self.send(conn, event("cancelNeedPassword", None));
            self.finish_join(conn, &key);
        } else {
            self.send(conn, event("needPassword", Some("true")));
        }
    }

    /// The join burst, in the recorded order, then `usercount` and `channelNotRegistered`. A
    /// connection that logged in before is a user of the channel from the start: a moderator gets
    /// its `rank` first and `cancelNeedPassword` after the burst (when the channel has a password),
    /// and others see it arrive with `addUser`.
    fn finish_join(&mut self, conn: u64, key: &str) {
        let early = self.conns.get_mut(&conn).and_then(|c| c.early_login.take());
        if let Some(login) = &early {
            if login.rank >= 2.0 {
                self.send(conn, event("rank", Some(&num(login.rank))));
            }
            if let Some(idx) = self.add_user(key, &login.name, login.rank, conn) {
                self.announce_user(key, idx);
            }
        }
        let Some(ch) = self.channels.get(key) else { return };
        let mut frames = vec![
            event(
                "setPermissions",
                Some(if ch.registered { wire::PERMS_REGISTERED } else { wire::PERMS_UNREGISTERED }),
            ),
            event("setPlaylistLocked", Some(&ch.registered.to_string())),
            event("emoteList", Some("[]")),
        ];
        frames.extend(ch.history.iter().map(|h| {
            event("chatMsg", Some(&wire::chat_payload(&h.user, &h.msg, &h.meta, h.time)))
        }));
        frames.extend([
            event("drinkCount", Some("0")),
            event("channelCSSJS", Some(wire::CSS_JS)),
            event("setMotd", Some(r#""""#)),
            event("channelOpts", Some(&ch.opts_json())),
            event("setPlaylistMeta", Some(wire::PLAYLIST_META)),
            event("playlist", Some("[]")),
        ]);
        let (registered, name) = (ch.registered, ch.name.clone());
        for f in frames {
            self.send(conn, f);
        }
        self.send_userlist(key, conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.channel = Some(key.to_owned());
        }
        if let Some(ch) = self.channels.get_mut(key) {
            ch.members.push(conn);
        }
        self.usercount_changed(key);
        if !registered {
            self.send(conn, event("channelNotRegistered", None));
        }
        let has_password = self.channels.get(key).is_some_and(|c| c.password.is_some());
        if let Some(login) = early {
            if login.rank >= 2.0 && has_password {
                self.send(conn, event("cancelNeedPassword", None));
            }
            self.emit(ServerEvent::Joined { conn, channel: name });
            self.emit_logged_in(conn, key, login.name, login.guest);
            return;
        }
        self.emit(ServerEvent::Joined { conn, channel: name });
    }

    fn on_login(&mut self, conn: u64, arg: Option<&Value>) {
        let Some(name) = arg.filter(|a| a.is_object()).and_then(|a| a.get("name")) else {
            self.send(conn, wire::error_msg("Invalid login frame"));
            return;
        };
        let Some(name) = name.as_str() else {
            self.send(conn, wire::error_msg("Invalid login frame"));
            return;
        };
        let Some(key) = self.conns.get(&conn).and_then(|c| c.channel.clone()) else {
            self.login_outside_channel(conn, name, arg);
            return;
        };
        let Some(ch) = self.channels.get(&key) else { return };
        if ch.conn_user_index(conn).is_some() {
            tracing::debug!(conn, "fake cytube: login on a logged-in socket ignored");
            return;
        }
        match arg.and_then(|a| a.get("pw")).and_then(Value::as_str).filter(|pw| !pw.is_empty()) {
            Some(pw) => self.registered_login(conn, &key, name, pw),
            None => self.guest_login(conn, &key, name),
        }
    }

    /// A login on a connection that is in no channel: before `joinChannel`, or while a channel waits
    /// for its password. As recorded (`moderator_password`): `rank 1` and `login` (or `rank 0` and a
    /// guest `login`); an account with a channel rank of 2 or more waiting for a password is then
    /// admitted without it (`rank <r>`, the join burst, `cancelNeedPassword`), any other gets its
    /// rank once more and keeps waiting.
    fn login_outside_channel(&mut self, conn: u64, name: &str, arg: Option<&Value>) {
        let Some(c) = self.conns.get(&conn) else { return };
        if c.early_login.is_some() {
            tracing::debug!(conn, "fake cytube: login on a logged-in socket ignored");
            return;
        }
        let pending = c.pending_password.clone();
        let pw = arg.and_then(|a| a.get("pw")).and_then(Value::as_str).filter(|pw| !pw.is_empty());
        let login = match pw {
            Some(pw) => {
                let account =
                    self.options.accounts.iter().find(|a| a.name.eq_ignore_ascii_case(name));
                let Some(account) = account.cloned() else {
                    self.send(conn, wire::login_failed("User does not exist"));
                    return;
                };
                if account.password != pw {
                    self.send(conn, wire::login_failed("Invalid username/password combination"));
                    return;
                }
                self.send(conn, event("rank", Some("1")));
                let ok = format!(r#"42["login",{{"success":true,"name":{}}}]"#, js(&account.name));
                self.send(conn, ok);
                let rank = account.channel_rank.map_or(1.0, |r| r.max(1.0));
                EarlyLogin { name: account.name, rank, guest: false }
            }
            None => {
                if let Some(error) = self.guest_name_error(name, None) {
                    self.send(conn, wire::login_failed(error));
                    return;
                }
                self.send(conn, event("rank", Some("0")));
                let ok =
                    format!(r#"42["login",{{"success":true,"name":{},"guest":true}}]"#, js(name));
                self.send(conn, ok);
                EarlyLogin { name: name.to_owned(), rank: 0.0, guest: true }
            }
        };
        let (rank, guest) = (login.rank, login.guest);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.early_login = Some(login);
        }
        let Some(key) = pending else { return };
        if rank >= 2.0 {
            // A moderator is let in without the password.
            if let Some(c) = self.conns.get_mut(&conn) {
                c.pending_password = None;
            }
            self.finish_join(conn, &key);
        } else if !guest {
            // The channel rank looked up: still 1, still waiting for the password.
            self.send(conn, event("rank", Some("1")));
        }
    }

    fn registered_login(&mut self, conn: u64, key: &str, name: &str, pw: &str) {
        let Some(account) =
            self.options.accounts.iter().find(|a| a.name.eq_ignore_ascii_case(name)).cloned()
        else {
            self.send(conn, wire::login_failed("User does not exist"));
            return;
        };
        if account.password != pw {
            self.send(conn, wire::login_failed("Invalid username/password combination"));
            return;
        }
        let name = account.name;
        if self.is_banned(key, &name) {
            self.kick_conn(conn, "You're banned!");
            return;
        }
        self.send(conn, event("rank", Some("1")));
        let existing = self.channels.get(key).and_then(|ch| ch.user_index(&name));
        let old_conn =
            existing.and_then(|i| self.channels.get(key).and_then(|ch| ch.users[i].conn));
        if let Some(old) = old_conn {
            self.send(old, wire::kick("Duplicate login"));
        }
        self.send(conn, format!(r#"42["login",{{"success":true,"name":{}}}]"#, js(&name)));
        if let Some(old) = old_conn {
            // Out of the channel first, so that only the others see `userLeave`.
            self.leave_channel(old);
            self.send(old, "41".to_owned());
            if let Some(c) = self.conns.get_mut(&old) {
                c.ns = Namespace::Disconnected;
            }
        } else if let Some(idx) = existing {
            // A peer held the name.
            self.remove_user(key, idx);
            self.usercount_changed(key);
        }
        let Some(idx) = self.add_user(key, &name, 1.0, conn) else { return };
        self.announce_user(key, idx);
        let rank = account.channel_rank.map_or(1.0, |r| r.max(1.0));
        if let Some(u) = self.channels.get_mut(key).and_then(|c| c.users.get_mut(idx)) {
            u.rank = rank;
        }
        self.send(conn, event("rank", Some(&num(rank))));
        if rank >= 2.0 {
            self.send_userlist(key, conn);
        }
        self.send(conn, event("setPlaylistMeta", Some(wire::PLAYLIST_META)));
        self.send(conn, event("playlist", Some("[]")));
        let set_rank = event(
            "setUserRank",
            Some(&format!(r#"{{"name":{},"rank":{}}}"#, js(&name), num(rank))),
        );
        self.broadcast(key, &set_rank);
        self.emit_logged_in(conn, key, name, false);
    }

    fn guest_login(&mut self, conn: u64, key: &str, name: &str) {
        if let (Some(delay), Some(last)) = (self.options.guest_login_delay, self.last_guest_login)
            && last.elapsed() < delay
        {
            let msg = format!(
                "Guest logins are restricted to one per IP address per {} seconds.",
                delay.as_secs()
            );
            self.send(conn, wire::login_failed(&msg));
            return;
        }
        if let Some(error) = self.guest_name_error(name, Some(key)) {
            self.send(conn, wire::login_failed(error));
            return;
        }
        if self.is_banned(key, name) {
            self.kick_conn(conn, "You're banned!");
            return;
        }
        self.last_guest_login = Some(Instant::now());
        self.send(conn, event("rank", Some("0")));
        self.send(
            conn,
            format!(r#"42["login",{{"success":true,"name":{},"guest":true}}]"#, js(name)),
        );
        let Some(idx) = self.add_user(key, name, 0.0, conn) else { return };
        self.announce_user(key, idx);
        self.emit_logged_in(conn, key, name.to_owned(), true);
    }

    /// Why CyTube refuses `name` as a guest name (in channel `key`, when the connection is in one),
    /// in its words, checked in its order.
    fn guest_name_error(&self, name: &str, key: Option<&str>) -> Option<&'static str> {
        if !text::valid_user_name(name) {
            Some(wire::INVALID_USERNAME)
        } else if key
            .is_some_and(|key| self.channels.get(key).is_some_and(|c| c.user_index(name).is_some()))
        {
            Some("That name is already in use on this channel.")
        } else if text::is_reserved(name) {
            Some("That username is reserved.")
        } else if self.options.accounts.iter().any(|a| a.name.eq_ignore_ascii_case(name)) {
            Some("That username is registered.")
        } else {
            None
        }
    }

    fn add_user(&mut self, key: &str, name: &str, rank: f64, conn: u64) -> Option<usize> {
        let ch = self.channels.get_mut(key)?;
        ch.users.push(ChanUser { name: name.to_owned(), rank, afk: false, conn: Some(conn) });
        Some(ch.users.len() - 1)
    }

    fn emit_logged_in(&self, conn: u64, key: &str, name: String, guest: bool) {
        let channel = self.channels.get(key).map_or_else(|| key.to_owned(), |c| c.name.clone());
        self.emit(ServerEvent::LoggedIn { conn, channel, name, guest });
    }

    /// Whether a name is banned from a channel.
    pub(crate) fn is_banned(&self, key: &str, name: &str) -> bool {
        self.channels.get(key).is_some_and(|c| c.bans.contains(&name.to_ascii_lowercase()))
    }
}
