//! Values that must never reach a log line, an error message or the dashboard.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// What replaces a secret wherever it would be printed.
const MASK: &str = "***";

/// A secret such as a password: `Debug` and `Display` print `***`, only [`Secret::expose`] gives the
/// value. Deserializes from a JSON string.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that needs it (e.g. the login call); never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        secret_string(deserializer).map(Self)
    }
}

/// A URL that may carry credentials (`postgres://user:password@host/db`, `nats://token@host`).
/// `Debug` and `Display` print [`SecretUrl::redacted`]; only [`SecretUrl::expose`] gives the URL.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: String) -> Self {
        Self(url)
    }

    /// The full URL, credentials included, for the one place that connects with it; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password (or a token-only user part) and any `password`/`token`/`secret`
    /// query parameter replaced by `***`; a URL without credentials comes back unchanged.
    ///
    /// When the text is ambiguous (an unencoded `@` in a password or a path) it hides too much
    /// rather than too little.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        secret_string(deserializer).map(Self)
    }
}

/// Reads a JSON string. serde's own type errors quote the offending value, so a password written as
/// a number would end up in the error message; this error names only the JSON type.
fn secret_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    use serde::de::Error as _;
    use serde_json::Value;

    let found = match Value::deserialize(deserializer)? {
        Value::String(value) => return Ok(value),
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::Array(_) => "sequence",
        Value::Object(_) => "map",
    };
    Err(D::Error::custom(format!("invalid type: {found}, expected a string")))
}

fn redact_url(url: &str) -> String {
    // Without `scheme://` there is no reliable authority; treat the whole text as one so that a
    // mistyped `user:password@host` is still masked.
    let (scheme, rest) = match url.find("://").filter(|&i| is_scheme(&url[..i])) {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    // The last `@` anywhere ends the user part, so a raw `@`, `/`, `?` or `#` inside a password is
    // still hidden; an `@` further on (in a query) costs some over-masking, never a leak.
    let host_onwards = match rest.rfind('@') {
        Some(at) => {
            // A lone user part is a token for NATS; we cannot tell it from a user name, so it goes too.
            if let Some((user, _password)) = rest[..at].split_once(':') {
                out.push_str(user);
                out.push(':');
            }
            out.push_str(MASK);
            &rest[at..]
        }
        None => rest,
    };
    let (before_fragment, fragment) = split_keep(host_onwards, '#');
    let (before_query, query) = split_keep(before_fragment, '?');
    out.push_str(before_query);
    if let Some(query) = query {
        out.push('?');
        out.push_str(&redact_query(query));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// RFC 3986: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Splits at the first `sep`, keeping whether it was there.
fn split_keep(text: &str, sep: char) -> (&str, Option<&str>) {
    match text.split_once(sep) {
        Some((head, tail)) => (head, Some(tail)),
        None => (text, None),
    }
}

fn redact_query(query: &str) -> String {
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _value)) if is_secret_parameter(name) => format!("{name}={MASK}"),
            _ => pair.to_owned(),
        })
        .collect();
    pairs.join("&")
}

fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "token", "secret"].iter().any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(url: &str) -> String {
        SecretUrl::new(url.to_owned()).redacted()
    }

    #[test]
    fn password_in_user_info_is_masked() {
        assert_eq!(
            redacted("postgres://rosey:hunter2@db:5432/rosey"),
            "postgres://rosey:***@db:5432/rosey"
        );
        assert_eq!(redacted("nats://user:pass@host"), "nats://user:***@host");
    }

    #[test]
    fn token_only_user_info_is_masked_entirely() {
        assert_eq!(redacted("nats://tok@host"), "nats://***@host");
        assert_eq!(redacted("nats://tok@host:4222"), "nats://***@host:4222");
    }

    #[test]
    fn urls_without_credentials_are_unchanged() {
        for url in [
            "sqlite://rosey.db",
            "sqlite:rosey.db",
            "sqlite::memory:",
            "nats://127.0.0.1:4222",
            "postgres://db:5432/rosey?sslmode=require",
            "",
        ] {
            assert_eq!(redacted(url), url);
        }
    }

    #[test]
    fn empty_user_or_password_still_masks_the_password_part() {
        assert_eq!(redacted("postgres://:pw@db/rosey"), "postgres://:***@db/rosey");
        assert_eq!(redacted("postgres://rosey:@db/rosey"), "postgres://rosey:***@db/rosey");
    }

    #[test]
    fn raw_at_and_slash_in_password_do_not_leak() {
        assert_eq!(redacted("postgres://rosey:p@ss@db/rosey"), "postgres://rosey:***@db/rosey");
        for url in ["postgres://rosey:pa/ss@db/rosey", "postgres://rosey:pa#ss@db/rosey"] {
            assert_eq!(redacted(url), "postgres://rosey:***@db/rosey");
        }
        assert_eq!(redacted("nats://t?k@host"), "nats://***@host");
        // An `@` in the query over-masks rather than leaks.
        assert!(!redacted("postgres://db/x?password=a@b").contains("=a"));
    }

    #[test]
    fn password_query_parameter_is_masked() {
        assert_eq!(
            redacted("postgres://db/rosey?user=rosey&password=hunter2&sslmode=require#x"),
            "postgres://db/rosey?user=rosey&password=***&sslmode=require#x"
        );
        assert_eq!(redacted("nats://host?auth_token=abc"), "nats://host?auth_token=***");
    }

    #[test]
    fn credentials_without_a_scheme_are_masked() {
        assert_eq!(redacted("rosey:hunter2@db:5432/rosey"), "rosey:***@db:5432/rosey");
        assert_eq!(redacted("rosey:hunter2@db?next=http://x"), "rosey:***@db?next=http://x");
    }

    #[test]
    fn secrets_print_as_mask() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");
        assert_eq!(secret.expose(), "hunter2");
        let url = SecretUrl::new("nats://tok@host".to_owned());
        assert_eq!(format!("{url} {url:?}"), r#"nats://***@host "nats://***@host""#);
        assert_eq!(url.expose(), "nats://tok@host");
    }

    #[test]
    fn wrongly_typed_secret_is_not_quoted_in_the_error() {
        let err = serde_json::from_str::<Secret>("123456").unwrap_err().to_string();
        assert!(!err.contains("123456"), "{err}");
        assert!(err.contains("invalid type: number, expected a string"), "{err}");
    }
}
