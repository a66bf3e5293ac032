//! Incoming chat: CyTube's `chatMsg` and `pm` events as Rosey's [`ChatMessage`] and [`PmMessage`].
//!
//! Filters what a bot must not act on: the history CyTube replays on join (it arrives in the join burst,
//! before `userlist`), the bot's own messages (CyTube echoes them), and server whispers such as
//! `[server] alice joined`. Text is HTML-decoded with tags stripped; the sender's rank comes from the
//! user table; `/me` actions keep CyTube's `meta` (`{"action": true}`) so plugins can tell.

use serde_json::Value;

use super::text::html_to_text;
use super::users::UserTable;
use crate::event::{ChatMessage, PmMessage};

/// Turns a channel's incoming events into chat messages; one per connection (it tracks the join).
#[derive(Debug, Clone)]
pub struct Incoming {
    channel: String,
    bot_name: String,
    joined: bool,
}

impl Incoming {
    /// For `channel`, where the bot is called `bot_name`.
    pub fn new(channel: &str, bot_name: &str) -> Self {
        Self { channel: channel.to_owned(), bot_name: bot_name.to_owned(), joined: false }
    }

    /// Starts over for a new connection: history will be replayed again.
    pub fn rejoin(&mut self) {
        self.joined = false;
    }

    /// Whether the join burst is over (a `userlist` arrived).
    pub fn joined(&self) -> bool {
        self.joined
    }

    /// The join burst is over: chat from now on is live.
    pub fn mark_joined(&mut self) {
        self.joined = true;
    }

    /// The bot's name changed (CyTube's spelling after the login).
    pub fn set_bot_name(&mut self, bot_name: &str) {
        bot_name.clone_into(&mut self.bot_name);
    }

    /// The bot's name (CyTube's spelling once logged in).
    pub fn bot_name(&self) -> &str {
        &self.bot_name
    }

    /// Whether `user` is the bot (names compare case-insensitively, as on CyTube).
    pub fn is_bot(&self, user: &str) -> bool {
        user.eq_ignore_ascii_case(&self.bot_name)
    }

    /// Reads one event; `Some` for chat a plugin should see.
    pub fn chat(
        &mut self,
        event: &str,
        arg: Option<&Value>,
        users: &UserTable,
    ) -> Option<ChatMessage> {
        if event == "userlist" {
            self.mark_joined();
            return None;
        }
        if event != "chatMsg" || !self.joined {
            return None;
        }
        let arg = arg?;
        let user = arg.get("username")?.as_str()?;
        if self.is_bot(user) || user.starts_with('[') {
            return None;
        }
        let meta =
            arg.get("meta").filter(|m| m.as_object().is_some_and(|o| !o.is_empty())).cloned();
        Some(ChatMessage {
            channel: self.channel.clone(),
            user: user.to_owned(),
            message: html_to_text(arg.get("msg")?.as_str()?),
            time: arg.get("time").and_then(Value::as_i64).unwrap_or_else(crate::event::now_millis),
            rank: users.rank(user),
            meta,
        })
    }

    /// Reads a `pm` event, with the sender's rank from `users`; `None` for the echo of the bot's own
    /// PMs and for malformed ones.
    pub fn pm(&self, arg: Option<&Value>, users: &UserTable) -> Option<PmMessage> {
        let arg = arg?;
        let user = arg.get("username")?.as_str()?;
        if self.is_bot(user) {
            return None;
        }
        Some(PmMessage {
            channel: self.channel.clone(),
            user: user.to_owned(),
            message: html_to_text(arg.get("msg")?.as_str()?),
            time: arg.get("time").and_then(Value::as_i64),
            rank: users.rank(user),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn history_own_messages_and_server_whispers_are_filtered() {
        let mut incoming = Incoming::new("testchan", "RoseyBot");
        let users = UserTable::default();
        let chat = |user: &str| json!({"username": user, "msg": "hi", "meta": {}, "time": 5});
        assert!(
            incoming.chat("chatMsg", Some(&chat("alice")), &users).is_none(),
            "replayed history"
        );
        incoming.chat("userlist", Some(&json!([])), &users);
        assert!(incoming.chat("chatMsg", Some(&chat("roseybot")), &users).is_none(), "own echo");
        assert!(incoming.chat("chatMsg", Some(&chat("[server]")), &users).is_none(), "whisper");
        let msg = incoming.chat("chatMsg", Some(&chat("alice")), &users).unwrap();
        assert_eq!(
            (msg.user.as_str(), msg.message.as_str(), msg.time, msg.meta),
            ("alice", "hi", 5, None)
        );
        assert!(incoming.chat("chatMsg", Some(&json!({"msg": "no user"})), &users).is_none());
        incoming.rejoin();
        assert!(incoming.chat("chatMsg", Some(&chat("alice")), &users).is_none(), "history again");
    }

    #[test]
    fn private_messages_skip_the_bots_own_echo() {
        let incoming = Incoming::new("testchan", "RoseyBot");
        let users = UserTable::default();
        let pm = incoming.pm(
            Some(&json!({"username": "alice", "msg": "a &amp; b", "to": "RoseyBot", "time": 9})),
            &users,
        );
        let pm = pm.unwrap();
        assert_eq!((pm.message.as_str(), pm.rank), ("a & b", None), "alice is not in the list");
        assert!(
            incoming
                .pm(Some(&json!({"username": "RoseyBot", "msg": "x", "to": "alice"})), &users)
                .is_none()
        );
    }
}
