//! Subjects: the names events travel under, their validation, and NATS-style wildcard matching.
//!
//! A subject is a dot-separated list of non-empty tokens (`cytube.chat.message`). A *pattern* may also
//! contain the wildcards `*` (exactly one token) and `>` (one or more tokens, last position only), with
//! the same meaning as in NATS, so a pattern works unchanged on [`MemoryBus`](crate::bus::MemoryBus) and
//! on NATS.
//!
//! ```
//! use rosey_core::subject::{self, Pattern};
//!
//! let pattern = Pattern::new("rosey.plugin.*.crashed").unwrap();
//! assert!(pattern.matches("rosey.plugin.dice-roller.crashed"));
//! assert!(!pattern.matches("rosey.plugin.dice-roller.started"));
//! assert_eq!(subject::command("admin", Some("reload")).unwrap(), "rosey.command.admin.reload");
//! ```

use std::fmt;

/// Incoming chat: a [`ChatMessage`](crate::event::ChatMessage), message already HTML-decoded.
pub const CHAT_MESSAGE: &str = "cytube.chat.message";
/// Outgoing chat: a [`ChatSend`](crate::event::ChatSend).
pub const CHAT_SEND: &str = "cytube.chat.send";
/// Incoming private message: a [`PmMessage`](crate::event::PmMessage).
pub const PM_MESSAGE: &str = "cytube.pm.message";
/// Outgoing private message: a [`PmSend`](crate::event::PmSend).
pub const PM_SEND: &str = "cytube.pm.send";
/// A user joined the channel: a [`UserJoin`](crate::event::UserJoin).
pub const USER_JOIN: &str = "cytube.user.join";
/// A user left the channel: a [`UserLeave`](crate::event::UserLeave).
pub const USER_LEAVE: &str = "cytube.user.leave";
/// The playing media changed: a [`MediaChange`](crate::event::MediaChange).
pub const MEDIA_CHANGE: &str = "cytube.media.change";

/// Prefix of routed command subjects: `rosey.command.<command>[.<sub>]`.
pub const COMMAND_PREFIX: &str = "rosey.command";
/// Prefix of plugin lifecycle subjects: `rosey.plugin.<name>.<kind>`.
pub const PLUGIN_PREFIX: &str = "rosey.plugin";
/// Prefix of the plugin key-value store subjects: `rosey.db.kv.<get|set|delete|list>`.
pub const KV_PREFIX: &str = "rosey.db.kv";
/// Prefix of the control API subjects: `rosey.control.<list|status|reload|restart>`.
pub const CONTROL_PREFIX: &str = "rosey.control";
/// Prefix of reply subjects created by request/reply (`_INBOX.<unique>`), as in NATS.
pub const INBOX_PREFIX: &str = "_INBOX";

/// Why a subject or pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The subject is the empty string.
    #[error("subject is empty")]
    Empty,
    /// Two dots in a row, or a leading or trailing dot.
    #[error("subject {0:?} has an empty token")]
    EmptyToken(String),
    /// Spaces, tabs or line breaks are not allowed anywhere in a subject.
    #[error("subject {0:?} contains whitespace")]
    Whitespace(String),
    /// A wildcard in a subject that is published to (only subscriptions may use them).
    #[error("subject {0:?} contains a wildcard; wildcards are for subscriptions only")]
    WildcardInPublish(String),
    /// `>` anywhere but the last token, or a wildcard mixed with other characters in one token.
    #[error("pattern {0:?} misuses a wildcard (`*` is a whole token, `>` only the last token)")]
    BadWildcard(String),
    /// A command, sub-command or plugin name that must be one token contains a dot.
    #[error("{0:?} must be a single subject token (no dots)")]
    NotOneToken(String),
}

fn check_tokens(subject: &str) -> Result<(), SubjectError> {
    if subject.is_empty() {
        return Err(SubjectError::Empty);
    }
    if subject.chars().any(char::is_whitespace) {
        return Err(SubjectError::Whitespace(subject.to_owned()));
    }
    if subject.split('.').any(str::is_empty) {
        return Err(SubjectError::EmptyToken(subject.to_owned()));
    }
    Ok(())
}

/// Checks a subject that will be published to: non-empty tokens, no whitespace, no wildcards.
pub fn validate_publish(subject: &str) -> Result<(), SubjectError> {
    // One pass over the bytes: this runs on every publish. Multi-byte UTF-8 whitespace is rare enough
    // to be checked only when a non-ASCII byte is present.
    if subject.is_empty() {
        return Err(SubjectError::Empty);
    }
    let mut token_len = 0usize;
    let mut wildcard = false;
    let mut ascii = true;
    for &b in subject.as_bytes() {
        match b {
            b'.' => {
                if token_len == 0 {
                    return Err(SubjectError::EmptyToken(subject.to_owned()));
                }
                token_len = 0;
                continue;
            }
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                return Err(SubjectError::Whitespace(subject.to_owned()));
            }
            b'*' | b'>' => wildcard = true,
            0x80.. => ascii = false,
            _ => {}
        }
        token_len += 1;
    }
    if token_len == 0 {
        return Err(SubjectError::EmptyToken(subject.to_owned()));
    }
    if !ascii && subject.chars().any(char::is_whitespace) {
        return Err(SubjectError::Whitespace(subject.to_owned()));
    }
    if wildcard {
        return Err(SubjectError::WildcardInPublish(subject.to_owned()));
    }
    Ok(())
}

/// Checks a subscription pattern: like [`validate_publish`], but `*` may stand for a whole token and
/// `>` for the last token.
pub fn validate_pattern(pattern: &str) -> Result<(), SubjectError> {
    Pattern::new(pattern).map(drop)
}

/// One token of a compiled [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(Box<str>),
    /// `*`: exactly one token.
    One,
    /// `>`: one or more tokens; always last.
    Rest,
}

/// A validated subscription pattern, compiled for fast matching.
#[derive(Clone, PartialEq, Eq)]
pub struct Pattern {
    text: Box<str>,
    tokens: Box<[Token]>,
    literal: bool,
}

impl Pattern {
    /// Validates and compiles `pattern`.
    pub fn new(pattern: &str) -> Result<Self, SubjectError> {
        check_tokens(pattern)?;
        let parts: Vec<&str> = pattern.split('.').collect();
        let last = parts.len() - 1;
        let mut tokens = Vec::with_capacity(parts.len());
        for (i, part) in parts.into_iter().enumerate() {
            let token = match part {
                "*" => Token::One,
                ">" if i == last => Token::Rest,
                _ if part.contains(['*', '>']) => {
                    return Err(SubjectError::BadWildcard(pattern.to_owned()));
                }
                _ => Token::Literal(part.into()),
            };
            tokens.push(token);
        }
        let literal = tokens.iter().all(|t| matches!(t, Token::Literal(_)));
        Ok(Self { text: pattern.into(), tokens: tokens.into(), literal })
    }

    /// Whether `subject` (assumed valid, see [`validate_publish`]) matches this pattern.
    pub fn matches(&self, subject: &str) -> bool {
        if self.literal {
            return *self.text == *subject;
        }
        let mut parts = subject.split('.');
        for token in self.tokens.iter() {
            match token {
                Token::Rest => return parts.next().is_some(),
                Token::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Token::Literal(lit) => match parts.next() {
                    Some(part) if part == &**lit => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.text).finish()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Builds `rosey.command.<command>[.<sub>]`, rejecting a command or sub-command that would not be a
/// single valid token (empty, with a dot, whitespace or a wildcard).
pub fn command(command: &str, sub: Option<&str>) -> Result<String, SubjectError> {
    let subject = match sub {
        Some(sub) => {
            single_token(sub)?;
            format!("{COMMAND_PREFIX}.{command}.{sub}")
        }
        None => format!("{COMMAND_PREFIX}.{command}"),
    };
    single_token(command)?;
    validate_publish(&subject)?;
    Ok(subject)
}

/// The lifecycle events a plugin slot announces on `rosey.plugin.<name>.<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleKind {
    /// An instance started and said `ready`.
    Started,
    /// The plugin was stopped on purpose.
    Stopped,
    /// An instance exited unexpectedly or was killed for exceeding a limit.
    Crashed,
    /// The supervisor restarted the plugin after a crash.
    Restarted,
    /// The plugin crashed too often (or could not start) and stays down until an operator restarts
    /// it (state FAILED).
    Failed,
    /// A blue-green reload swapped in a new version.
    Reloaded,
    /// A reload was rolled back; the old version keeps serving.
    ReloadFailed,
}

impl LifecycleKind {
    /// The last token of the subject, e.g. `reload_failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Stopped => "stopped",
            Self::Crashed => "crashed",
            Self::Restarted => "restarted",
            Self::Failed => "failed",
            Self::Reloaded => "reloaded",
            Self::ReloadFailed => "reload_failed",
        }
    }
}

/// Builds `rosey.plugin.<name>.<kind>`, rejecting a plugin name that is not a single valid token.
pub fn plugin_lifecycle(name: &str, kind: LifecycleKind) -> Result<String, SubjectError> {
    single_token(name)?;
    Ok(format!("{PLUGIN_PREFIX}.{name}.{}", kind.as_str()))
}

fn single_token(token: &str) -> Result<(), SubjectError> {
    validate_publish(token)?;
    if token.contains('.') {
        return Err(SubjectError::NotOneToken(token.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_exactly_one_token() {
        let p = Pattern::new("a.*.c").unwrap();
        assert!(p.matches("a.b.c"));
        assert!(!p.matches("a.c"));
        assert!(!p.matches("a.b.x.c"));
        assert!(!p.matches("a.b.c.d"));
    }

    #[test]
    fn greater_than_matches_one_or_more_trailing_tokens() {
        let p = Pattern::new("rosey.command.>").unwrap();
        assert!(p.matches("rosey.command.roll"));
        assert!(p.matches("rosey.command.admin.reload"));
        assert!(!p.matches("rosey.command"));
        assert!(!p.matches("rosey.commander.roll"));
        assert!(Pattern::new(">").unwrap().matches("anything.at.all"));
    }

    #[test]
    fn literal_patterns_match_only_themselves() {
        let p = Pattern::new("cytube.chat.message").unwrap();
        assert!(p.matches("cytube.chat.message"));
        assert!(!p.matches("cytube.chat.messages"));
        assert!(!p.matches("cytube.chat"));
    }

    #[test]
    fn publish_subjects_reject_wildcards_whitespace_and_empty_tokens() {
        assert_eq!(validate_publish(""), Err(SubjectError::Empty));
        assert!(matches!(validate_publish("a..b"), Err(SubjectError::EmptyToken(_))));
        assert!(matches!(validate_publish(".a"), Err(SubjectError::EmptyToken(_))));
        assert!(matches!(validate_publish("a."), Err(SubjectError::EmptyToken(_))));
        assert!(matches!(validate_publish("a b"), Err(SubjectError::Whitespace(_))));
        assert!(matches!(validate_publish("a\tb"), Err(SubjectError::Whitespace(_))));
        assert!(matches!(validate_publish("a\u{3000}b"), Err(SubjectError::Whitespace(_))));
        assert!(validate_publish("caf\u{e9}.men\u{fc}").is_ok());
        assert!(matches!(validate_publish("a.*"), Err(SubjectError::WildcardInPublish(_))));
        assert!(matches!(validate_publish("a.>"), Err(SubjectError::WildcardInPublish(_))));
        assert!(matches!(validate_publish("a.b*"), Err(SubjectError::WildcardInPublish(_))));
        assert!(validate_publish("rosey.plugin.dice-roller.crashed").is_ok());
        assert!(validate_publish("_INBOX.abc123.7").is_ok());
    }

    #[test]
    fn patterns_reject_misplaced_wildcards() {
        assert!(matches!(Pattern::new("a.>.b"), Err(SubjectError::BadWildcard(_))));
        assert!(matches!(Pattern::new("a.b*"), Err(SubjectError::BadWildcard(_))));
        assert!(matches!(Pattern::new("a.>>"), Err(SubjectError::BadWildcard(_))));
        assert!(Pattern::new("*.*.>").is_ok());
    }

    #[test]
    fn command_subjects_follow_the_scheme() {
        assert_eq!(command("roll", None).unwrap(), "rosey.command.roll");
        assert_eq!(command("admin", Some("reload")).unwrap(), "rosey.command.admin.reload");
        assert!(command("ro ll", None).is_err());
        assert!(command("a.b", None).is_err());
        assert!(command("*", None).is_err());
        assert!(command("admin", Some("")).is_err());
    }

    #[test]
    fn lifecycle_subjects_follow_the_scheme() {
        assert_eq!(
            plugin_lifecycle("dice-roller", LifecycleKind::ReloadFailed).unwrap(),
            "rosey.plugin.dice-roller.reload_failed"
        );
        assert!(plugin_lifecycle("bad.name", LifecycleKind::Started).is_err());
    }
}
