//! The command table: which chat command belongs to which plugin, shared by the plugin manager (which
//! fills it from manifests) and the [`Router`](crate::router::Router) (which reads it).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::subject;

/// Where one chat command goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRoute {
    /// The plugin that owns the command.
    pub plugin: String,
    /// Whether the second word of the chat line is part of the subject (`!admin reload x` →
    /// `rosey.command.admin.reload`).
    pub subcommands: bool,
}

/// A routed chat line: the subject to publish on and the parts of the command event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedCommand {
    /// `rosey.command.<command>[.<sub>]`.
    pub subject: String,
    /// The command word without prefix.
    pub command: String,
    /// Everything after the command word, untouched except that the single separating whitespace
    /// character is dropped.
    pub args: String,
}

/// A command claimed by a plugin while another one owns it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("command {command:?} is already owned by plugin {owner:?}, so {claimant:?} cannot have it")]
pub struct CommandClash {
    /// The command.
    pub command: String,
    /// The plugin that owns it.
    pub owner: String,
    /// The plugin that asked for it.
    pub claimant: String,
}

/// Command word → route. Cheap to clone; clones share one table, so the router sees plugins added,
/// removed or reloaded with new commands at once.
#[derive(Debug, Clone, Default)]
pub struct CommandTable {
    routes: Arc<RwLock<HashMap<String, CommandRoute>>>,
}

impl CommandTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives `plugin` exactly `commands`, replacing whatever it owned before, all or nothing: when a
    /// command already belongs to another plugin, nothing changes and the clash is returned. A command
    /// has exactly one owner.
    pub fn claim(
        &self,
        plugin: &str,
        commands: impl IntoIterator<Item = (String, bool)>,
    ) -> Result<(), CommandClash> {
        let commands: Vec<(String, bool)> = commands.into_iter().collect();
        let mut routes = self.routes.write();
        for (command, _) in &commands {
            if let Some(existing) = routes.get(command).filter(|r| r.plugin != plugin) {
                return Err(CommandClash {
                    command: command.clone(),
                    owner: existing.plugin.clone(),
                    claimant: plugin.to_owned(),
                });
            }
        }
        routes.retain(|_, route| route.plugin != plugin);
        for (command, subcommands) in commands {
            routes.insert(command, CommandRoute { plugin: plugin.to_owned(), subcommands });
        }
        Ok(())
    }

    /// The plugin that owns `command` if it is not `plugin`: what a [`claim`](Self::claim) by
    /// `plugin` would clash with, without claiming anything.
    pub fn clash(
        &self,
        plugin: &str,
        commands: impl IntoIterator<Item = String>,
    ) -> Option<CommandClash> {
        let routes = self.routes.read();
        commands.into_iter().find_map(|command| {
            let owner = routes.get(&command).filter(|r| r.plugin != plugin)?.plugin.clone();
            Some(CommandClash { command, owner, claimant: plugin.to_owned() })
        })
    }

    /// Removes every command of `plugin`.
    pub fn remove_plugin(&self, plugin: &str) {
        self.routes.write().retain(|_, route| route.plugin != plugin);
    }

    /// The route of `command`, if any plugin owns it.
    pub fn lookup(&self, command: &str) -> Option<CommandRoute> {
        self.routes.read().get(command).cloned()
    }

    /// Routes a chat line that starts with `prefix` (e.g. `!`). Returns `None` for a line that is not
    /// a command, names an unknown command, or whose command or sub-command cannot be a subject token.
    pub fn route(&self, prefix: &str, line: &str) -> Option<RoutedCommand> {
        let body = line.strip_prefix(prefix)?;
        let (command, args) = split_word(body);
        if command.is_empty() {
            return None;
        }
        let route = self.lookup(command)?;
        let sub = if route.subcommands {
            let (sub, _) = split_word(args);
            (!sub.is_empty()).then_some(sub)
        } else {
            None
        };
        let subject = subject::command(command, sub).ok()?;
        Some(RoutedCommand { subject, command: command.to_owned(), args: args.to_owned() })
    }
}

/// Splits off the first whitespace-separated word; the rest loses only the one whitespace character
/// that ended the word.
fn split_word(text: &str) -> (&str, &str) {
    match text.char_indices().find(|(_, c)| c.is_whitespace()) {
        Some((i, c)) => (&text[..i], &text[i + c.len_utf8()..]),
        None => (text, ""),
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> CommandTable {
        let table = CommandTable::new();
        table.claim("dice-roller", [("roll".into(), false), ("flip".into(), false)]).unwrap();
        table.claim("admin", [("admin".into(), true)]).unwrap();
        table
    }

    #[test]
    fn commands_route_to_their_subjects_with_args_untouched() {
        let t = table();
        let r = t.route("!", "!roll 2d6").unwrap();
        assert_eq!(
            (r.subject.as_str(), r.command.as_str(), r.args.as_str()),
            ("rosey.command.roll", "roll", "2d6")
        );
        let r = t.route("!", "!roll   \"quoted\"  ünïcode ").unwrap();
        assert_eq!(r.args, "  \"quoted\"  ünïcode ");
        assert_eq!(t.route("!", "!flip").unwrap().args, "");
    }

    #[test]
    fn subcommands_become_part_of_the_subject() {
        let t = table();
        let r = t.route("!", "!admin reload dice-roller").unwrap();
        assert_eq!(r.subject, "rosey.command.admin.reload");
        assert_eq!(r.args, "reload dice-roller");
        assert_eq!(t.route("!", "!admin").unwrap().subject, "rosey.command.admin");
        assert!(t.route("!", "!admin re.load").is_none(), "a dotted sub-command is not a token");
    }

    #[test]
    fn non_commands_and_unknown_commands_are_not_routed() {
        let t = table();
        assert!(t.route("!", "hello").is_none());
        assert!(t.route("!", "!").is_none());
        assert!(t.route("!", "! roll").is_none());
        assert!(t.route("!", "!dance").is_none());
        assert!(t.route("?", "!roll").is_none());
    }

    #[test]
    fn a_command_keeps_its_first_owner() {
        let t = table();
        let clash =
            t.claim("copycat", [("dance".into(), false), ("roll".into(), false)]).unwrap_err();
        assert_eq!((clash.command.as_str(), clash.owner.as_str()), ("roll", "dice-roller"));
        assert_eq!(t.lookup("roll").unwrap().plugin, "dice-roller");
        assert!(t.lookup("dance").is_none(), "all or nothing");
        t.remove_plugin("dice-roller");
        assert!(t.lookup("roll").is_none());
    }
}
