//! The `rosey.db.kv.*` requests as they arrive: parsed and checked against the [`KvLimits`], each
//! refusal a [`KvError`] with its wire code.

use serde_json::{Map, Value};

use super::KvLimits;

/// A refused key-value request: what the requester is told, as `{"error": <Display>, "code":
/// <code()>}`. Each message is a sentence a plugin author can act on, with the numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Not JSON, not an object, a missing or mistyped field, an unknown operation, a bad limit.
    #[error("{0}")]
    BadRequest(String),
    /// The key is empty.
    #[error("key is empty; a key has 1 to {max} bytes")]
    EmptyKey {
        /// The longest key allowed, in bytes.
        max: usize,
    },
    /// The key is longer than allowed.
    #[error("key is {bytes} bytes; at most {max}")]
    KeyTooLong {
        /// The key's length in bytes of UTF-8.
        bytes: usize,
        /// The longest key allowed.
        max: usize,
    },
    /// The value (or the whole request) is larger than allowed.
    #[error("{what} is {bytes} bytes; at most {max}")]
    ValueTooLarge {
        /// `value` (as compact JSON), or `request` for a payload too large to read.
        what: &'static str,
        /// Its size.
        bytes: usize,
        /// The most allowed.
        max: usize,
    },
    /// A new key when the plugin already has the most keys allowed.
    #[error(
        "this plugin already has {max} keys, the most allowed; delete some before adding new ones"
    )]
    TooManyKeys {
        /// The limit.
        max: u64,
    },
    /// The database is unreachable, did not answer in time, or the service is saturated.
    #[error("storage unavailable")]
    Unavailable,
    /// Anything else went wrong in the host; its log says what.
    #[error("the key-value store failed; the host's log says why")]
    Internal,
}

impl KvError {
    /// The wire code: `bad_request`, `key_too_long`, `value_too_large`, `too_many_keys`,
    /// `unavailable` or `internal`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::EmptyKey { .. } | Self::KeyTooLong { .. } => "key_too_long",
            Self::ValueTooLarge { .. } => "value_too_large",
            Self::TooManyKeys { .. } => "too_many_keys",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

fn bad(message: impl Into<String>) -> KvError {
    KvError::BadRequest(message.into())
}

/// One checked operation.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Operation {
    Get { key: String },
    Set { key: String, value: String },
    Delete { key: String },
    List { prefix: String, after: Option<String>, limit: u32 },
}

/// One checked request: whose keys, and what to do.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Request {
    pub(super) plugin: String,
    pub(super) operation: Operation,
}

/// The largest payload worth reading: a maximal key and value with generous room for whitespace and
/// escapes. Anything larger cannot be a valid request, and is refused before parsing.
fn max_payload(limits: &KvLimits) -> usize {
    limits
        .max_value_bytes
        .saturating_add(limits.max_key_bytes)
        .saturating_mul(4)
        .saturating_add(4096)
}

/// Parses and checks the request `payload` sent to `rosey.db.kv.<operation>`.
pub(super) fn parse(
    operation: &str,
    payload: &[u8],
    limits: &KvLimits,
) -> Result<Request, KvError> {
    if !matches!(operation, "get" | "set" | "delete" | "list") {
        return Err(bad(format!("unknown operation {operation:?}; use get, set, delete or list")));
    }
    let max = max_payload(limits);
    if payload.len() > max {
        return Err(KvError::ValueTooLarge { what: "request", bytes: payload.len(), max });
    }
    let body: Value = serde_json::from_slice(payload)
        .map_err(|e| bad(format!("the request is not valid JSON: {e}")))?;
    let Value::Object(mut body) = body else {
        return Err(bad("the request must be a JSON object"));
    };
    let plugin = match body.get("plugin") {
        Some(Value::String(plugin)) if !plugin.is_empty() => plugin.clone(),
        _ => return Err(bad("requests must come through the plugin host")),
    };
    let operation = match operation {
        "get" => Operation::Get { key: key(&body, limits)? },
        "delete" => Operation::Delete { key: key(&body, limits)? },
        "set" => {
            let key = key(&body, limits)?;
            let Some(value) = body.remove("value") else {
                return Err(bad("set needs a `value` (any JSON; null stores null)"));
            };
            let value = value.to_string();
            if value.len() > limits.max_value_bytes {
                return Err(KvError::ValueTooLarge {
                    what: "value",
                    bytes: value.len(),
                    max: limits.max_value_bytes,
                });
            }
            Operation::Set { key, value }
        }
        _ => Operation::List {
            prefix: optional_string(&body, "prefix")?.unwrap_or_default(),
            after: optional_string(&body, "after")?,
            limit: limit(&body, limits)?,
        },
    };
    Ok(Request { plugin, operation })
}

fn key(body: &Map<String, Value>, limits: &KvLimits) -> Result<String, KvError> {
    let key = match body.get("key") {
        Some(Value::String(key)) => key,
        Some(_) => return Err(bad("`key` must be a string")),
        None => return Err(bad("the request needs a `key` (a string)")),
    };
    if key.is_empty() {
        return Err(KvError::EmptyKey { max: limits.max_key_bytes });
    }
    if key.len() > limits.max_key_bytes {
        return Err(KvError::KeyTooLong { bytes: key.len(), max: limits.max_key_bytes });
    }
    Ok(key.clone())
}

fn optional_string(body: &Map<String, Value>, field: &str) -> Result<Option<String>, KvError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(bad(format!("`{field}` must be a string"))),
    }
}

fn limit(body: &Map<String, Value>, limits: &KvLimits) -> Result<u32, KvError> {
    let max = limits.max_list;
    let wrong =
        |got: &Value| bad(format!("`limit` must be a whole number from 1 to {max}; got {got}"));
    match body.get("limit") {
        None | Some(Value::Null) => Ok(limits.default_list.clamp(1, max.max(1))),
        Some(got) => match got.as_u64() {
            Some(n) if (1..=u64::from(max)).contains(&n) => Ok(n as u32),
            _ => Err(wrong(got)),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

    use serde_json::json;

    use super::*;

    fn check(operation: &str, body: Value) -> Result<Request, KvError> {
        parse(operation, body.to_string().as_bytes(), &KvLimits::default())
    }

    #[test]
    fn well_formed_requests_parse() {
        let set = check("set", json!({"plugin": "p", "key": "k", "value": {"a": [1, null]}}));
        assert_eq!(
            set.unwrap(),
            Request {
                plugin: "p".to_owned(),
                operation: Operation::Set {
                    key: "k".to_owned(),
                    value: r#"{"a":[1,null]}"#.to_owned()
                },
            }
        );
        let null = check("set", json!({"plugin": "p", "key": "k", "value": null})).unwrap();
        assert_eq!(
            null.operation,
            Operation::Set { key: "k".to_owned(), value: "null".to_owned() }
        );
        let list = check("list", json!({"plugin": "p"})).unwrap();
        assert_eq!(
            list.operation,
            Operation::List { prefix: String::new(), after: None, limit: 100 }
        );
    }

    #[test]
    fn every_refusal_has_its_code_and_numbers() {
        let refusal = |op: &str, body: Value| {
            let err = check(op, body).unwrap_err();
            (err.code(), err.to_string())
        };
        assert_eq!(
            refusal("get", json!({"key": "k"})).1,
            "requests must come through the plugin host"
        );
        assert_eq!(refusal("get", json!({"plugin": "", "key": "k"})).0, "bad_request");
        assert_eq!(refusal("get", json!({"plugin": "p", "key": 3})).0, "bad_request");
        assert_eq!(refusal("get", json!({"plugin": "p"})).0, "bad_request");
        assert_eq!(refusal("get", json!([1])).0, "bad_request");
        assert_eq!(refusal("rename", json!({"plugin": "p"})).0, "bad_request");
        assert_eq!(refusal("set", json!({"plugin": "p", "key": "k"})).0, "bad_request");
        assert_eq!(refusal("get", json!({"plugin": "p", "key": ""})).0, "key_too_long");
        assert_eq!(
            refusal("get", json!({"plugin": "p", "key": "é".repeat(150)})),
            ("key_too_long", "key is 300 bytes; at most 256".to_owned())
        );
        assert_eq!(
            refusal("set", json!({"plugin": "p", "key": "k", "value": "x".repeat(65_535)})),
            ("value_too_large", "value is 65537 bytes; at most 65536".to_owned())
        );
        for limit in [json!(0), json!(1001), json!(-1), json!(2.5), json!("10")] {
            assert_eq!(refusal("list", json!({"plugin": "p", "limit": limit})).0, "bad_request");
        }
        assert_eq!(refusal("list", json!({"plugin": "p", "prefix": 1})).0, "bad_request");
        let garbage = parse("get", b"{not json", &KvLimits::default()).unwrap_err();
        assert_eq!(garbage.code(), "bad_request");
        let huge = vec![b' '; 1 << 20];
        assert_eq!(
            parse("get", &huge, &KvLimits::default()).unwrap_err().code(),
            "value_too_large"
        );
    }
}
