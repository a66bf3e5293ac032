//! Typed payloads of the subjects in [`subject`](crate::subject), as they travel on the bus (JSON).
//!
//! Every payload is a plain serde struct; [`Message`](crate::bus::Message) is the envelope that carries
//! one (subject, optional reply subject, JSON bytes). Optional fields are omitted from the JSON when
//! absent, and unknown fields are ignored when decoding, so a newer publisher can add fields without
//! breaking an older subscriber.
//!
//! ```
//! use rosey_core::event::{ChatMessage, encode, decode};
//!
//! let msg = ChatMessage::new("lobby", "alice", "!roll 2d6", 1_795_343_000_000);
//! let bytes = encode(&msg).unwrap();
//! let back: ChatMessage = decode(&bytes).unwrap();
//! assert_eq!(back, msg);
//! ```

use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// A payload could not be encoded to or decoded from JSON.
#[derive(Debug, thiserror::Error)]
#[error("invalid event payload: {0}")]
pub struct PayloadError(#[from] serde_json::Error);

/// Encodes a payload as the JSON bytes that travel on the bus.
pub fn encode<T: Serialize>(payload: &T) -> Result<Bytes, PayloadError> {
    Ok(Bytes::from(serde_json::to_vec(payload)?))
}

/// Decodes JSON bytes from the bus into a payload.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PayloadError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Milliseconds since the Unix epoch, the unit of every `time` field (as CyTube sends it).
pub type EpochMillis = i64;

/// The current time in [`EpochMillis`].
pub fn now_millis() -> EpochMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Incoming chat on [`CHAT_MESSAGE`](crate::subject::CHAT_MESSAGE). `message` is already HTML-decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Channel the message was said in.
    pub channel: String,
    /// Who said it.
    pub user: String,
    /// The text, HTML entities decoded and tags stripped.
    pub message: String,
    /// When the server saw it.
    pub time: EpochMillis,
    /// The sender's channel rank, when the connector knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<f64>,
    /// Platform extras (e.g. CyTube's `meta`, a `/me` action flag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

impl ChatMessage {
    /// A message with no rank and no meta.
    pub fn new(channel: &str, user: &str, message: &str, time: EpochMillis) -> Self {
        Self {
            channel: channel.to_owned(),
            user: user.to_owned(),
            message: message.to_owned(),
            time,
            rank: None,
            meta: None,
        }
    }
}

/// Outgoing chat on [`CHAT_SEND`](crate::subject::CHAT_SEND).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatSend {
    /// Channel to say it in.
    pub channel: String,
    /// Plain text; the connector escapes and splits it as the platform needs.
    pub message: String,
}

/// Incoming private message on [`PM_MESSAGE`](crate::subject::PM_MESSAGE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PmMessage {
    /// Channel whose connection received it.
    pub channel: String,
    /// Sender.
    pub user: String,
    /// The text, HTML-decoded.
    pub message: String,
    /// When the server saw it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<EpochMillis>,
    /// The sender's channel rank, when the connector knows it (CyTube's PMs carry none; the
    /// connector takes it from the channel's user list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<f64>,
}

/// Outgoing private message on [`PM_SEND`](crate::subject::PM_SEND).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PmSend {
    /// Channel whose connection sends it.
    pub channel: String,
    /// Recipient.
    pub to: String,
    /// Plain text.
    pub message: String,
}

/// A user joined, on [`USER_JOIN`](crate::subject::USER_JOIN).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserJoin {
    /// Channel joined.
    pub channel: String,
    /// Who joined.
    pub user: String,
    /// Their channel rank, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<f64>,
}

/// A user left, on [`USER_LEAVE`](crate::subject::USER_LEAVE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLeave {
    /// Channel left.
    pub channel: String,
    /// Who left.
    pub user: String,
}

/// The playing media changed, on [`MEDIA_CHANGE`](crate::subject::MEDIA_CHANGE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaChange {
    /// Channel whose playlist moved on.
    pub channel: String,
    /// Title of the new media.
    pub title: String,
    /// Provider id, e.g. `yt` (CyTube's `type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Provider-specific media id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Length in seconds, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
}

/// A routed command on `rosey.command.<command>[.<sub>]` (see [`subject::command`](crate::subject::command)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandEvent {
    /// Channel the command was typed in (for one sent [by PM](Via::Pm), the channel whose connection
    /// received the PM); replies go back there unless the command came by PM.
    pub channel: String,
    /// Who typed it.
    pub user: String,
    /// Their channel rank, when the connector knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank: Option<f64>,
    /// The command word without prefix (`roll` for `!roll 2d6`).
    pub command: String,
    /// Everything after the command word, untouched (quotes, unicode and spacing kept).
    pub args: String,
    /// The whole chat line as typed.
    pub message: String,
    /// When the chat line was said.
    pub time: EpochMillis,
    /// Where the command came from: `"chat"` (said in the channel) or `"pm"` (sent to the bot by
    /// private message). The replies to a `"pm"` command (and the host's own answers, such as
    /// `❌ <plugin> is not running`) go back by PM to `user` instead of to the channel. Always in the
    /// JSON; read as `"chat"` when absent.
    #[serde(default)]
    pub via: Via,
}

/// Where a [`CommandEvent`] came from, `"chat"` or `"pm"` in JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Said in the channel; answered in the channel.
    #[default]
    Chat,
    /// Sent to the bot by private message; answered by PM to its sender.
    Pm,
}

impl Via {
    /// The JSON name: `"chat"` or `"pm"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Pm => "pm",
        }
    }

    /// Whether it came by private message.
    pub fn is_pm(self) -> bool {
        self == Self::Pm
    }
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the answers to one event go: said in a channel, or sent by PM to one user.
///
/// Computed once per event from its subject and payload ([`for_event`](Self::for_event)): a command
/// that came by PM and an event from [`PM_MESSAGE`](crate::subject::PM_MESSAGE) are answered by PM to
/// their sender, anything else that names a channel in that channel.
///
/// ```
/// use rosey_core::event::ReplyTarget;
///
/// let pm = serde_json::json!({"channel": "lobby", "user": "alice", "message": "yes"});
/// let target = ReplyTarget::for_event("cytube.pm.message", &pm).unwrap();
/// assert_eq!(target, ReplyTarget::Pm { channel: "lobby".into(), to: "alice".into() });
/// assert_eq!(target.subject(), "cytube.pm.send");
/// assert_eq!(&target.encode("done")[..], br#"{"channel":"lobby","to":"alice","message":"done"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyTarget {
    /// Said in this channel, on [`CHAT_SEND`](crate::subject::CHAT_SEND).
    Channel(String),
    /// Sent by PM to `to` through the connection of `channel`, on
    /// [`PM_SEND`](crate::subject::PM_SEND).
    Pm {
        /// Channel whose connection sends it.
        channel: String,
        /// Recipient: the user who sent the command or the PM.
        to: String,
    },
}

impl ReplyTarget {
    /// Where replies to an event that arrived on `subject` with payload `data` go: by PM to `user`
    /// for a command that came by PM (`"via": "pm"`) or a PM; in `channel` for any other event.
    /// `None` when the payload names no channel, or a private one names no user (a private answer is
    /// never said in the channel instead).
    pub fn for_event(subject: &str, data: &serde_json::Value) -> Option<Self> {
        let text = |key: &str| data.get(key).and_then(serde_json::Value::as_str);
        let channel = text("channel")?.to_owned();
        let private =
            subject == crate::subject::PM_MESSAGE || text("via") == Some(Via::Pm.as_str());
        if private {
            Some(Self::Pm { channel, to: text("user")?.to_owned() })
        } else {
            Some(Self::Channel(channel))
        }
    }

    /// Where the answers to `command` go: by PM to its user when it came by PM, else its channel.
    pub fn for_command(command: &CommandEvent) -> Self {
        Self::to_sender(&command.channel, &command.user, command.via)
    }

    /// Where the answers to something `user` sent in `channel` go: by PM to `user` when it came by
    /// PM, else to the channel.
    pub fn to_sender(channel: &str, user: &str, via: Via) -> Self {
        if via.is_pm() {
            Self::Pm { channel: channel.to_owned(), to: user.to_owned() }
        } else {
            Self::Channel(channel.to_owned())
        }
    }

    /// The subject a reply is published on: `cytube.chat.send` or `cytube.pm.send`.
    pub fn subject(&self) -> &'static str {
        match self {
            Self::Channel(_) => crate::subject::CHAT_SEND,
            Self::Pm { .. } => crate::subject::PM_SEND,
        }
    }

    /// The payload of one reply line `text`: a [`ChatSend`] or a [`PmSend`], as JSON.
    pub fn encode(&self, text: &str) -> Bytes {
        let encoded = match self {
            Self::Channel(channel) => {
                encode(&ChatSend { channel: channel.clone(), message: text.to_owned() })
            }
            Self::Pm { channel, to } => encode(&PmSend {
                channel: channel.clone(),
                to: to.clone(),
                message: text.to_owned(),
            }),
        };
        // Structs of strings always serialize.
        encoded.unwrap_or_default()
    }
}

/// A plugin lifecycle event on `rosey.plugin.<name>.<kind>` (see
/// [`subject::plugin_lifecycle`](crate::subject::plugin_lifecycle)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// Plugin name.
    pub name: String,
    /// Version concerned: the one now running; for `reloaded` the new one, for `reload_failed` the one
    /// the reload attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Version before a reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// Process id of the instance concerned, when it is a process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Why it happened (crash cause, reload failure step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long the operation took, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// When it happened.
    pub time: EpochMillis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_are_omitted_and_unknown_fields_ignored() {
        let msg = ChatMessage::new("lobby", "alice", "hi", 1);
        let json = String::from_utf8(encode(&msg).unwrap().to_vec()).unwrap();
        assert_eq!(json, r#"{"channel":"lobby","user":"alice","message":"hi","time":1}"#);

        let newer = br#"{"channel":"c","user":"u","message":"m","time":2,"rank":3,"shiny":true}"#;
        let decoded: ChatMessage = decode(newer).unwrap();
        assert_eq!(decoded.rank, Some(3.0));
    }

    #[test]
    fn a_command_came_by_pm_only_when_it_says_so() {
        let json =
            br#"{"channel":"c","user":"u","command":"roll","args":"","message":"!roll","time":1}"#;
        let mut command: CommandEvent = decode(json).unwrap();
        assert_eq!(command.via, Via::Chat, "absent means said in the channel");
        assert!(
            String::from_utf8(encode(&command).unwrap().to_vec())
                .unwrap()
                .ends_with(r#","via":"chat"}"#),
            "plugins always see where it came from"
        );
        assert_eq!(ReplyTarget::for_command(&command), ReplyTarget::Channel("c".into()));
        command.via = Via::Pm;
        assert!(
            String::from_utf8(encode(&command).unwrap().to_vec())
                .unwrap()
                .ends_with(r#","via":"pm"}"#)
        );
        assert_eq!(
            ReplyTarget::for_command(&command),
            ReplyTarget::Pm { channel: "c".into(), to: "u".into() }
        );
    }

    #[test]
    fn replies_go_by_pm_for_private_commands_and_pms_and_to_the_channel_otherwise() {
        use serde_json::json;
        let pm =
            |channel: &str, to: &str| ReplyTarget::Pm { channel: channel.into(), to: to.into() };
        let cases = [
            (
                "rosey.command.roll",
                json!({"channel": "c", "user": "u"}),
                Some(ReplyTarget::Channel("c".into())),
            ),
            (
                "rosey.command.roll",
                json!({"channel": "c", "user": "u", "via": "pm"}),
                Some(pm("c", "u")),
            ),
            (
                "rosey.command.roll",
                json!({"channel": "c", "user": "u", "via": "chat"}),
                Some(ReplyTarget::Channel("c".into())),
            ),
            (
                "cytube.pm.message",
                json!({"channel": "c", "user": "u", "message": "yes"}),
                Some(pm("c", "u")),
            ),
            (
                "cytube.chat.message",
                json!({"channel": "c", "user": "u", "message": "yes"}),
                Some(ReplyTarget::Channel("c".into())),
            ),
            ("cytube.pm.message", json!({"channel": "c"}), None),
            ("rosey.command.roll", json!({"channel": "c", "via": "pm"}), None),
            ("weather.alert", json!({"level": 3}), None),
            ("weather.alert", json!([1, 2]), None),
        ];
        for (subject, data, expected) in cases {
            assert_eq!(ReplyTarget::for_event(subject, &data), expected, "{subject} {data}");
        }
        let chat = ReplyTarget::Channel("c".into());
        assert_eq!(
            (chat.subject(), &chat.encode("hi")[..]),
            ("cytube.chat.send", &br#"{"channel":"c","message":"hi"}"#[..])
        );
    }

    #[test]
    fn decoding_garbage_is_an_error_not_a_panic() {
        assert!(decode::<CommandEvent>(b"{not json").is_err());
        assert!(decode::<CommandEvent>(br#"{"channel":1}"#).is_err());
    }
}
