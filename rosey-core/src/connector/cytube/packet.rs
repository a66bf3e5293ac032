//! Engine.IO v4 / socket.io v5 text frames, as CyTube sends and expects them over a websocket.
//!
//! | frame | meaning |
//! |---|---|
//! | `0{…}` | Engine.IO open: session id, ping interval and timeout, max payload |
//! | `2` / `3` | ping (from the server) / pong (the client's answer) |
//! | `40` / `40{…}` | socket.io connect (client) / connected, with the namespace sid (server) |
//! | `41` | socket.io disconnect |
//! | `42["name", arg…]` | an event; CyTube events carry zero or one argument |
//! | `44{…}` | socket.io connect error, e.g. `{"message":"Rate limit exceeded"}` |

use serde::Deserialize;
use serde_json::Value;

/// The Engine.IO handshake the server opens with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Open {
    /// Engine.IO session id.
    pub sid: String,
    /// Milliseconds between the server's pings.
    pub ping_interval: u64,
    /// Milliseconds the server waits for a pong before closing.
    pub ping_timeout: u64,
    /// Largest frame the server accepts, in bytes.
    #[serde(default)]
    pub max_payload: u64,
}

/// One websocket text frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `0{…}`: the server's handshake.
    Open(Open),
    /// `2`: the server's heartbeat; answer with [`Frame::Pong`].
    Ping,
    /// `3`: the answer to a ping.
    Pong,
    /// `40` from the client, `40{"sid":…}` from the server once the namespace is joined.
    Connect(Option<Value>),
    /// `41`: the namespace was left (after a `kick`, for instance).
    Disconnect,
    /// `42[name, arg?]`: an event with zero or one argument.
    Event {
        /// Event name, e.g. `chatMsg`.
        name: String,
        /// Its argument, if any.
        arg: Option<Value>,
    },
    /// `44{…}`: the server refused the namespace connection.
    ConnectError(Value),
}

/// A frame that could not be read; says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad socket.io frame ({reason}): {frame:.80}")]
pub struct FrameError {
    /// Why.
    pub reason: String,
    /// The frame (its start, in the message).
    pub frame: String,
}

impl Frame {
    /// An event frame with one argument.
    pub fn event(name: &str, arg: Value) -> Self {
        Self::Event { name: name.to_owned(), arg: Some(arg) }
    }

    /// Reads one text frame.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let bad = |reason: &str| FrameError { reason: reason.to_owned(), frame: text.to_owned() };
        let json =
            |body: &str| serde_json::from_str::<Value>(body).map_err(|e| bad(&e.to_string()));
        // The packet types are ASCII digits, so slicing after them is on a char boundary.
        let bytes = text.as_bytes();
        match bytes.first() {
            Some(b'0') => {
                serde_json::from_str(&text[1..]).map(Frame::Open).map_err(|e| bad(&e.to_string()))
            }
            Some(b'2') if text.len() == 1 => Ok(Frame::Ping),
            Some(b'3') if text.len() == 1 => Ok(Frame::Pong),
            Some(b'4') => {
                let rest = text.get(2..).unwrap_or_default();
                match bytes.get(1) {
                    Some(b'0') if rest.is_empty() => Ok(Frame::Connect(None)),
                    Some(b'0') => Ok(Frame::Connect(Some(json(rest)?))),
                    Some(b'1') => Ok(Frame::Disconnect),
                    Some(b'2') => match json(rest)? {
                        Value::Array(items) => {
                            let mut items = items.into_iter();
                            let Some(Value::String(name)) = items.next() else {
                                return Err(bad("event without a name"));
                            };
                            Ok(Frame::Event { name, arg: items.next() })
                        }
                        _ => Err(bad("event is not an array")),
                    },
                    Some(b'4') => Ok(Frame::ConnectError(json(rest)?)),
                    _ => Err(bad("unsupported socket.io packet")),
                }
            }
            _ => Err(bad("unsupported Engine.IO packet")),
        }
    }

    /// Writes the frame as sent on the wire.
    pub fn encode(&self) -> String {
        match self {
            Frame::Open(open) => format!(
                r#"0{{"sid":{},"upgrades":[],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
                Value::String(open.sid.clone()),
                open.ping_interval,
                open.ping_timeout,
                open.max_payload
            ),
            Frame::Ping => "2".to_owned(),
            Frame::Pong => "3".to_owned(),
            Frame::Connect(None) => "40".to_owned(),
            Frame::Connect(Some(body)) => format!("40{body}"),
            Frame::Disconnect => "41".to_owned(),
            Frame::Event { name, arg } => {
                let mut items = vec![Value::String(name.clone())];
                items.extend(arg.iter().cloned());
                format!("42{}", Value::Array(items))
            }
            Frame::ConnectError(body) => format!("44{body}"),
        }
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_example_holds() {
        use super::Frame;

        let frame =
            Frame::parse(r#"42["chatMsg",{"username":"alice","msg":"hi","time":1}]"#).unwrap();
        let Frame::Event { name, arg } = frame else { panic!() };
        assert_eq!((name.as_str(), arg.unwrap()["msg"].as_str()), ("chatMsg", Some("hi")));
        assert_eq!(
            Frame::event("joinChannel", serde_json::json!({"name": "testchan"})).encode(),
            r#"42["joinChannel",{"name":"testchan"}]"#
        );
    }

    #[test]
    fn data_less_events_and_connect_errors_are_read() {
        assert_eq!(
            Frame::parse(r#"42["channelNotRegistered"]"#).unwrap(),
            Frame::Event { name: "channelNotRegistered".into(), arg: None }
        );
        assert_eq!(
            Frame::parse(r#"44{"message":"Rate limit exceeded"}"#).unwrap(),
            Frame::ConnectError(serde_json::json!({"message": "Rate limit exceeded"}))
        );
        assert_eq!(Frame::parse("41").unwrap(), Frame::Disconnect);
        assert_eq!(Frame::parse("40").unwrap(), Frame::Connect(None));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in ["", "9", "4", "45", "42", "42{}", "42[1]", "42[\"x\"", "0{}", "0nope", "4é"] {
            assert!(Frame::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn frames_survive_a_round_trip() {
        for text in [
            "2",
            "3",
            "40",
            r#"40{"sid":"abc"}"#,
            "41",
            r#"42["rank",-1]"#,
            r#"42["cancelNeedPassword"]"#,
        ] {
            assert_eq!(Frame::parse(text).unwrap().encode(), text);
        }
    }
}
