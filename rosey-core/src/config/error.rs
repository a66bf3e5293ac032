//! Configuration errors: each names the key it is about, and they are collected, not stopped at.

use std::fmt;

/// One problem with the configuration, tied to the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Keyed(self))]
pub struct ConfigError {
    /// The dotted path of the key (`dashboard.port`, `admins[1]`), `""` for an error about the
    /// whole text (e.g. a JSON syntax error), or the file path when the file cannot be read.
    pub key: String,
    /// What is wrong, in words an operator can act on; never contains a secret.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }
}

/// Renders `key: message`, or only the message when the error is about the whole text.
struct Keyed<'a>(&'a ConfigError);

impl fmt::Display for Keyed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ConfigError { key, message } = self.0;
        if key.is_empty() { f.write_str(message) } else { write!(f, "{key}: {message}") }
    }
}

/// Every problem found in a configuration, in the order found; never empty when returned as an
/// error. `Display` prints one error per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Lines(&self.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors, in the order they were found.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        Self(vec![error])
    }
}

struct Lines<'a>(&'a [ConfigError]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}
