//! Plugin protocol v1: the messages host and plugin exchange, one JSON object per line.
//!
//! The host writes [`HostMessage`]s to the plugin's stdin and reads [`PluginMessage`]s from its stdout.
//! Every message has a `type`. A receiver ignores types it does not know (so either side may add
//! message types without breaking the other) and fields it does not know. docs/PROTOCOL.md is the
//! normative description; this module is its Rust form.
//!
//! ```
//! use rosey_plugin::protocol::{Decoded, PluginMessage};
//!
//! let line = r#"{"type":"reply","id":7,"message":"🎲 [4, 3] = 7"}"#.as_bytes();
//! match PluginMessage::decode(line) {
//!     Ok(Decoded::Message(PluginMessage::Reply { id, message })) => {
//!         assert_eq!((id, message.as_str()), (7, "🎲 [4, 3] = 7"))
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! assert!(matches!(PluginMessage::decode(br#"{"type":"telemetry"}"#), Ok(Decoded::Unknown(_))));
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this crate speaks, sent in [`HostMessage::Init`].
pub const PROTOCOL_VERSION: u32 = 1;

/// The longest line either side may send, newline excluded (1 MiB). Longer lines are discarded by
/// the receiver and counted as malformed.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// What the host sends to a plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// First message after start: who the plugin is and its configuration from the manifest.
    Init {
        /// Protocol version the host speaks ([`PROTOCOL_VERSION`]).
        protocol: u32,
        /// The plugin's name from its manifest.
        name: String,
        /// The manifest's `[config]` table, as JSON (an empty object when absent).
        #[serde(default)]
        config: Value,
    },
    /// One event to handle; the plugin ends it with [`PluginMessage::Done`] carrying the same `id`.
    Event {
        /// Unique per plugin slot for the life of the host.
        id: u64,
        /// The bus subject it arrived on, e.g. `rosey.command.roll`.
        subject: String,
        /// The subject's payload (for commands, the `CommandEvent` fields).
        data: Value,
    },
    /// Health check; answer with [`PluginMessage::Pong`] carrying the same `id`.
    Ping {
        /// Echoed in the pong.
        id: u64,
    },
    /// Finish what is in hand and exit. The host kills the process after a grace period.
    Shutdown {},
    /// The answer to a [`PluginMessage::Request`].
    Response {
        /// The request's `id`.
        id: u64,
        /// The reply payload, when the request succeeded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<Value>,
        /// Why the request failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The host refused something the plugin sent (a `publish` on a subject it may not use, a reply
    /// over the per-event limit…); informational, nothing to answer.
    Error {
        /// What was refused and why.
        message: String,
    },
}

/// What a plugin sends to the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PluginMessage {
    /// Answer to `init`: the plugin is ready for events.
    Ready {
        /// The plugin's own idea of its name (a mismatch with the manifest is logged).
        name: String,
        /// The plugin's version (a mismatch with the manifest is logged; the manifest wins).
        version: String,
        /// Commands the plugin handles, informational (the manifest decides routing).
        #[serde(default)]
        commands: Vec<String>,
        /// Extra subjects the plugin would like, informational (the manifest decides).
        #[serde(default)]
        subscribe: Vec<String>,
    },
    /// Chat text to send to the channel the event `id` came from. Zero or more per event.
    Reply {
        /// The event being answered.
        id: u64,
        /// Plain text; the connector escapes and splits it.
        message: String,
    },
    /// The plugin has finished event `id`, successfully unless `error` is set.
    Done {
        /// The finished event.
        id: u64,
        /// What went wrong, when something did (logged and counted by the host).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Answer to a [`HostMessage::Ping`].
    Pong {
        /// The ping's `id`.
        id: u64,
    },
    /// Publish `data` on the bus under `subject`.
    Publish {
        /// Subject without wildcards.
        subject: String,
        /// JSON payload.
        data: Value,
    },
    /// A request to the host (e.g. `rosey.db.kv.get`), answered by [`HostMessage::Response`].
    Request {
        /// Chosen by the plugin; echoed in the response.
        id: u64,
        /// The request subject.
        subject: String,
        /// JSON payload.
        data: Value,
    },
    /// A log line, re-emitted by the host under the plugin's name.
    Log {
        /// `error`, `warn`, `info`, `debug` or `trace` (anything else is logged as info).
        level: String,
        /// The text.
        message: String,
    },
    /// A plugin-defined metric sample, exposed by the host as `rosey_custom_<name>{plugin, …labels}`
    /// (docs/PROTOCOL.md, "Plugin metrics").
    Metric {
        /// Metric name: `[a-zA-Z_][a-zA-Z0-9_]*`, at most 64 characters.
        name: String,
        /// `counter`, `gauge` or `histogram`.
        kind: String,
        /// For a counter: the increment (≥ 0); for a gauge: the new value; for a histogram: one
        /// observation.
        value: f64,
        /// Extra labels (at most 8; not `plugin`; values at most 128 bytes).
        #[serde(default)]
        labels: BTreeMap<String, String>,
    },
}

/// A successfully read line: a known message, or a well-formed message of a type this side does not
/// know (to be ignored).
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<T> {
    /// A message of a known type.
    Message(T),
    /// A JSON object with a string `type` this side does not know; carries the type.
    Unknown(String),
}

/// A line that is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

fn decode<T: DeserializeOwned>(line: &[u8], known: &[&str]) -> Result<Decoded<T>, DecodeError> {
    match serde_json::from_slice::<T>(line) {
        Ok(message) => Ok(Decoded::Message(message)),
        // Only on the error path: look at the raw object to tell "unknown type" from "malformed".
        Err(err) => match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(object)) => match object.get("type") {
                Some(Value::String(kind)) if !known.contains(&kind.as_str()) => {
                    Ok(Decoded::Unknown(kind.clone()))
                }
                Some(Value::String(kind)) => {
                    Err(DecodeError(format!("bad {kind:?} message: {err}")))
                }
                _ => Err(DecodeError("message has no string \"type\" field".to_owned())),
            },
            Ok(_) => Err(DecodeError("message is not a JSON object".to_owned())),
            Err(err) => Err(DecodeError(format!("not JSON: {err}"))),
        },
    }
}

impl HostMessage {
    /// The `type` values of host messages.
    pub const TYPES: &'static [&'static str] = &["init", "event", "ping", "shutdown", "response"];

    /// Decodes one line (without its newline).
    pub fn decode(line: &[u8]) -> Result<Decoded<Self>, DecodeError> {
        decode(line, Self::TYPES)
    }

    /// Encodes as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        to_line(self)
    }
}

impl PluginMessage {
    /// The `type` values of plugin messages.
    pub const TYPES: &'static [&'static str] =
        &["ready", "reply", "done", "pong", "publish", "request", "log", "metric"];

    /// Decodes one line (without its newline).
    pub fn decode(line: &[u8]) -> Result<Decoded<Self>, DecodeError> {
        decode(line, Self::TYPES)
    }

    /// Encodes as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        to_line(self)
    }
}

fn to_line<T: Serialize>(message: &T) -> Vec<u8> {
    // Serializing these types cannot fail: string keys only, no non-finite floats except in
    // `Metric::value`, which serde_json writes as null.
    let mut line = serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_their_lines() {
        let messages = [
            PluginMessage::Ready {
                name: "dice-roller".into(),
                version: "1.0.0".into(),
                commands: vec!["roll".into()],
                subscribe: vec![],
            },
            PluginMessage::Done { id: 3, error: Some("bad dice".into()) },
            PluginMessage::Metric {
                name: "rolls".into(),
                kind: "counter".into(),
                value: 1.0,
                labels: BTreeMap::new(),
            },
        ];
        for message in messages {
            let line = message.to_line();
            assert_eq!(line.last(), Some(&b'\n'));
            let decoded = PluginMessage::decode(&line[..line.len() - 1]).unwrap();
            assert_eq!(decoded, Decoded::Message(message));
        }
        let init = HostMessage::Init { protocol: 1, name: "x".into(), config: Value::Null };
        let line = init.to_line();
        assert_eq!(HostMessage::decode(&line[..line.len() - 1]).unwrap(), Decoded::Message(init));
    }

    #[test]
    fn shutdown_is_an_object_with_only_a_type() {
        assert_eq!(HostMessage::Shutdown {}.to_line(), b"{\"type\":\"shutdown\"}\n");
    }

    #[test]
    fn unknown_types_are_told_apart_from_malformed_lines() {
        assert_eq!(
            PluginMessage::decode(br#"{"type":"hello","x":1}"#),
            Ok(Decoded::Unknown("hello".into()))
        );
        assert!(PluginMessage::decode(br#"{"type":"reply","id":"seven"}"#).is_err());
        assert!(PluginMessage::decode(br#"{"id":1}"#).is_err());
        assert!(PluginMessage::decode(b"[1,2]").is_err());
        assert!(PluginMessage::decode(b"not json").is_err());
        assert!(PluginMessage::decode(b"").is_err());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let line = br#"{"type":"pong","id":9,"extra":{"a":1}}"#;
        assert_eq!(
            PluginMessage::decode(line),
            Ok(Decoded::Message(PluginMessage::Pong { id: 9 }))
        );
    }
}
