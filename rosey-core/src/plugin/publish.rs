//! What a plugin may publish. Identity comes only from connectors: a plugin can never publish chat as
//! a user (`cytube.chat.message`), a routed command (`rosey.command.*`), a control request or another
//! plugin's lifecycle, so whatever trusts a sender's name and rank (the router, `!admin`) can trust it.
//!
//! A plugin may publish `cytube.chat.send`, `cytube.pm.send`, `rosey.plugin.<its name>.<anything>`, and
//! the subjects its manifest declares in `publish = [...]`, none of which may be reserved. Reserved:
//! everything under `cytube.` (what connectors bring in), `rosey.` (commands, control, storage,
//! lifecycle) and `_INBOX.` (replies). The key-value store (`rosey.db.kv.*`) is reached only through
//! `request`, which the host stamps with the plugin's name.

use crate::subject::{self, Pattern};

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishRefused {
    /// The subject is not a valid subject to publish on.
    #[error("{0}")]
    Invalid(#[from] subject::SubjectError),
    /// The subject is reserved for connectors or the host.
    #[error("{subject:?} is reserved: only connectors and the host publish there")]
    Reserved {
        /// The subject.
        subject: String,
    },
    /// The subject is not declared in the manifest's `publish` list.
    #[error("{subject:?} is not in the plugin's `publish` list")]
    NotDeclared {
        /// The subject.
        subject: String,
    },
}

/// One plugin's publishing rules, from its manifest.
#[derive(Debug, Clone)]
pub struct PublishRules {
    own: String,
    declared: Vec<Pattern>,
}

impl PublishRules {
    /// The rules for plugin `name` with the manifest's `publish` patterns (those that are invalid or
    /// reserved are left out; the manifest parser reports them).
    pub fn new(name: &str, declared: &[String]) -> Self {
        Self {
            own: format!("{}.{name}.", subject::PLUGIN_PREFIX),
            declared: declared
                .iter()
                .filter(|p| check_declared(p).is_ok())
                .filter_map(|p| Pattern::new(p).ok())
                .collect(),
        }
    }

    /// Whether the plugin may publish on `subject`.
    pub fn check(&self, subject: &str) -> Result<(), PublishRefused> {
        subject::validate_publish(subject)?;
        if subject == subject::CHAT_SEND
            || subject == subject::PM_SEND
            || (subject.starts_with(&self.own) && subject.len() > self.own.len())
        {
            return Ok(());
        }
        if is_reserved(subject) {
            return Err(PublishRefused::Reserved { subject: subject.to_owned() });
        }
        if self.declared.iter().any(|p| p.matches(subject)) {
            Ok(())
        } else {
            Err(PublishRefused::NotDeclared { subject: subject.to_owned() })
        }
    }
}

/// Whether `subject` belongs to connectors or the host.
fn is_reserved(subject: &str) -> bool {
    ["cytube", "rosey", subject::INBOX_PREFIX].iter().any(|root| {
        subject == *root || subject.strip_prefix(root).is_some_and(|r| r.starts_with('.'))
    })
}

/// Checks a pattern a manifest declares in `publish`: valid, and unable to match a reserved subject.
pub(crate) fn check_declared(pattern: &str) -> Result<(), String> {
    subject::validate_pattern(pattern).map_err(|e| e.to_string())?;
    let first = pattern.split('.').next().unwrap_or_default();
    if first == "*" || first == ">" || is_reserved(pattern) {
        return Err(format!(
            "{pattern:?} is or may be reserved (cytube.*, rosey.*, _INBOX.*): only connectors and the \
             host publish there"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_may_send_chat_and_its_own_news_and_what_it_declares() {
        let rules = PublishRules::new("dice", &["dice-stats.>".to_owned()]);
        for ok in
            ["cytube.chat.send", "cytube.pm.send", "rosey.plugin.dice.rolled", "dice-stats.day"]
        {
            assert_eq!(rules.check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn a_plugin_may_not_speak_as_a_user_a_command_the_host_or_another_plugin() {
        let rules = PublishRules::new("dice", &[]);
        for reserved in [
            "cytube.chat.message",
            "cytube.pm.message",
            "cytube.user.join",
            "rosey.command.roll",
            "rosey.control.reload",
            "rosey.db.kv.set",
            "rosey.plugin.other.started",
            "rosey.plugin.dice",
            "_INBOX.abc",
        ] {
            assert!(
                matches!(rules.check(reserved), Err(PublishRefused::Reserved { .. })),
                "{reserved}"
            );
        }
        assert!(matches!(rules.check("elsewhere"), Err(PublishRefused::NotDeclared { .. })));
        assert!(matches!(rules.check("bad subject"), Err(PublishRefused::Invalid(_))));
    }

    #[test]
    fn a_manifest_cannot_declare_a_reserved_subject() {
        for bad in ["cytube.chat.message", "rosey.>", "*.chat.message", ">", "_INBOX.x"] {
            assert!(check_declared(bad).is_err(), "{bad}");
        }
        assert!(check_declared("weather.report").is_ok());
    }
}
