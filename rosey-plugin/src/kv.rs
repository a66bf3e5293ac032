//! Typed helpers over the host's key-value store (`rosey.db.kv.get|set|delete|list`).
//!
//! Each plugin has its own keys: the host stamps the plugin's name into every request, whatever the
//! plugin sends. Keys are strings of 1 to 256 bytes, values any JSON up to 64 KiB serialized, and a
//! plugin has at most 10,000 keys by default; docs/PROTOCOL.md has the wire format and the limits.
//!
//! ```no_run
//! use rosey_plugin::{Plugin, Response};
//!
//! fn main() -> std::process::ExitCode {
//!     Plugin::new("notes", "1.0.0")
//!         .command_with("note", |cmd, ctx| {
//!             let mut kv = ctx.kv();
//!             let outcome = if cmd.args.trim().is_empty() {
//!                 kv.keys("note:").map(|keys| format!("📝 {} notes", keys.len()))
//!             } else {
//!                 let key = format!("note:{}", cmd.time);
//!                 kv.set(&key, &cmd.args).map(|()| "📝 Noted".to_owned())
//!             };
//!             // A refused or failed request is an error value, never a panic.
//!             Ok(Response::reply(outcome.unwrap_or_else(|e| format!("❌ {e}"))))
//!         })
//!         .run()
//! }
//! ```

use std::fmt;
use std::io;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::context::Host;

/// Subject of a read.
pub const GET: &str = "rosey.db.kv.get";
/// Subject of a write.
pub const SET: &str = "rosey.db.kv.set";
/// Subject of a delete.
pub const DELETE: &str = "rosey.db.kv.delete";
/// Subject of a listing.
pub const LIST: &str = "rosey.db.kv.list";
/// The most keys one `list` may ask for; [`Kv::keys`] asks for pages of this size.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// The plugin's key-value store, borrowed from a [`Context`](crate::Context) for the event in hand;
/// see the [module docs](self). Every call is one request to the host and waits for its answer.
pub struct Kv<'a> {
    host: &'a mut (dyn Host + 'a),
}

impl fmt::Debug for Kv<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kv").finish_non_exhaustive()
    }
}

/// One page of keys from [`Kv::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvPage {
    /// Keys in ascending order.
    pub keys: Vec<String>,
    /// When there may be more: pass it as `after` to get the next page.
    pub next: Option<String>,
}

impl<'a> Kv<'a> {
    pub(crate) fn new(host: &'a mut (dyn Host + 'a)) -> Self {
        Self { host }
    }

    /// The value stored under `key`, or `None` when there is none.
    pub fn get(&mut self, key: &str) -> Result<Option<Value>, KvError> {
        let answer = self.host.request(GET, json!({ "key": key }))?;
        match answer.get("found").and_then(Value::as_bool) {
            Some(true) => Ok(Some(answer.get("value").cloned().unwrap_or(Value::Null))),
            Some(false) => Ok(None),
            None => Err(KvError::unexpected(GET, &answer)),
        }
    }

    /// The value under `key` read as a `T`; a stored value of another shape is
    /// [`KvError::Decode`].
    pub fn get_as<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, KvError> {
        match self.get(key)? {
            None => Ok(None),
            Some(value) => serde_json::from_value(value).map(Some).map_err(|err| {
                KvError::Decode(format!("the value of {key:?} is not what was expected: {err}"))
            }),
        }
    }

    /// Stores `value` (any JSON, `null` included) under `key`, replacing what was there.
    pub fn set(&mut self, key: &str, value: &impl Serialize) -> Result<(), KvError> {
        let value = serde_json::to_value(value).map_err(|err| {
            KvError::Encode(format!("the value for {key:?} is not valid JSON: {err}"))
        })?;
        let answer = self.host.request(SET, json!({ "key": key, "value": value }))?;
        match answer.get("ok").and_then(Value::as_bool) {
            Some(true) => Ok(()),
            _ => Err(KvError::unexpected(SET, &answer)),
        }
    }

    /// Removes `key`; whether it was there.
    pub fn delete(&mut self, key: &str) -> Result<bool, KvError> {
        let answer = self.host.request(DELETE, json!({ "key": key }))?;
        answer
            .get("deleted")
            .and_then(Value::as_bool)
            .ok_or_else(|| KvError::unexpected(DELETE, &answer))
    }

    /// Up to `limit` (1 to [`MAX_LIST_LIMIT`]) keys starting with `prefix` and sorting after `after`,
    /// in ascending order.
    pub fn list(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<KvPage, KvError> {
        let mut request = json!({ "prefix": prefix, "limit": limit });
        if let (Some(after), Value::Object(map)) = (after, &mut request) {
            map.insert("after".to_owned(), Value::String(after.to_owned()));
        }
        let answer = self.host.request(LIST, request)?;
        let keys = answer.get("keys").and_then(Value::as_array).and_then(|keys| {
            keys.iter().map(|k| k.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>()
        });
        let next = match answer.get("next") {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(next)) => Some(Some(next.clone())),
            Some(_) => None,
        };
        match (keys, next) {
            (Some(keys), Some(next)) => Ok(KvPage { keys, next }),
            _ => Err(KvError::unexpected(LIST, &answer)),
        }
    }

    /// Every key starting with `prefix`, in ascending order (as many `list` pages as it takes).
    pub fn keys(&mut self, prefix: &str) -> Result<Vec<String>, KvError> {
        let mut keys = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list(prefix, after.as_deref(), MAX_LIST_LIMIT)?;
            keys.extend(page.keys);
            match page.next {
                // A cursor that does not move forward would page forever.
                Some(next) if after.as_ref().is_some_and(|after| next <= *after) => {
                    return Err(KvError::Decode(format!(
                        "{LIST} answered the cursor {next:?} again"
                    )));
                }
                Some(next) => after = Some(next),
                None => return Ok(keys),
            }
        }
    }
}

/// Why the store refused a request, from the `code` of its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvErrorCode {
    /// `bad_request`: the request was malformed (e.g. a bad `limit`).
    BadRequest,
    /// `key_too_long`: the key is empty or over 256 bytes.
    KeyTooLong,
    /// `value_too_large`: the value is over 64 KiB serialized.
    ValueTooLarge,
    /// `too_many_keys`: a new key while the plugin already has its maximum.
    TooManyKeys,
    /// `unavailable`: the database is unreachable or slow; try again later.
    Unavailable,
    /// `internal`: a bug or an unexpected database error on the host.
    Internal,
    /// Another code, or an empty string when the host gave none (e.g. too many requests
    /// outstanding).
    Other(String),
}

impl KvErrorCode {
    /// The code as it appears on the wire.
    pub fn parse(code: &str) -> Self {
        match code {
            "bad_request" => Self::BadRequest,
            "key_too_long" => Self::KeyTooLong,
            "value_too_large" => Self::ValueTooLarge,
            "too_many_keys" => Self::TooManyKeys,
            "unavailable" => Self::Unavailable,
            "internal" => Self::Internal,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The wire form of the code.
    pub fn as_str(&self) -> &str {
        match self {
            Self::BadRequest => "bad_request",
            Self::KeyTooLong => "key_too_long",
            Self::ValueTooLarge => "value_too_large",
            Self::TooManyKeys => "too_many_keys",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::Other(code) => code,
        }
    }
}

/// Why a key-value request did not succeed.
#[derive(Debug)]
#[non_exhaustive]
pub enum KvError {
    /// The host or the store refused it (a `response` with `error`).
    Refused {
        /// The answer's `code`.
        code: KvErrorCode,
        /// The answer's `error`, a sentence meant for the plugin author.
        message: String,
    },
    /// The host closed the plugin's stdin while the request waited.
    HostGone,
    /// The host sent `shutdown` while the request waited; the plugin exits once the handler
    /// returns.
    ShuttingDown,
    /// Writing the request or reading the answer failed.
    Io(io::Error),
    /// The answer did not have the expected shape (or a stored value not the type asked for).
    Decode(String),
    /// The value to store could not be serialized to JSON.
    Encode(String),
}

impl KvError {
    /// Whether this is the store being unavailable (retry later), as opposed to a refusal that will
    /// not change.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Refused { code: KvErrorCode::Unavailable, .. })
    }

    /// The error of an error `response`, with the code from its `data` (`{"error", "code"}`).
    pub(crate) fn refused(message: String, data: Option<&Value>) -> Self {
        let code = data.and_then(|d| d.get("code")).and_then(Value::as_str).unwrap_or_default();
        Self::Refused { code: KvErrorCode::parse(code), message }
    }

    fn unexpected(subject: &str, answer: &Value) -> Self {
        let mut shown = answer.to_string();
        if shown.len() > 200 {
            let cut = (0..=200).rev().find(|&i| shown.is_char_boundary(i)).unwrap_or(0);
            shown.truncate(cut);
            shown.push('…');
        }
        Self::Decode(format!("unexpected answer to {subject}: {shown}"))
    }
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { message, .. } => f.write_str(message),
            Self::HostGone => f.write_str("the host went away before answering"),
            Self::ShuttingDown => f.write_str("the plugin is shutting down"),
            Self::Io(err) => write!(f, "could not talk to the host: {err}"),
            Self::Decode(what) | Self::Encode(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for KvError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for KvError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_from_the_wire_and_back() {
        for code in [
            "bad_request",
            "key_too_long",
            "value_too_large",
            "too_many_keys",
            "unavailable",
            "internal",
            "new",
        ] {
            assert_eq!(KvErrorCode::parse(code).as_str(), code);
        }
        assert_eq!(KvErrorCode::parse("nope"), KvErrorCode::Other("nope".into()));
    }

    #[test]
    fn a_refusal_keeps_its_code_and_says_the_hosts_sentence() {
        let data = json!({"error": "storage unavailable", "code": "unavailable"});
        let err = KvError::refused("storage unavailable".into(), Some(&data));
        assert!(err.is_unavailable());
        assert_eq!(err.to_string(), "storage unavailable");
        let err = KvError::refused("too many requests outstanding".into(), None);
        assert!(
            matches!(err, KvError::Refused { code: KvErrorCode::Other(ref c), .. } if c.is_empty())
        );
        assert!(!err.is_unavailable());
    }
}
