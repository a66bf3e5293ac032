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

    /// Sets the commands of `plugin`, replacing whatever it owned before. A command already owned by
    /// another plugin is left with that plugin and returned, so the caller can report the clash.
    pub fn set_plugin_commands(
        &self,
        plugin: &str,
        commands: impl IntoIterator<Item = (String, bool)>,
    ) -> Vec<String> {
        let mut routes = self.routes.write();
        routes.retain(|_, route| route.plugin != plugin);
        let mut clashes = Vec::new();
        for (command, subcommands) in commands {
            match routes.get(&command) {
                Some(existing) if existing.plugin != plugin => clashes.push(command),
                _ => {
                    routes.insert(command, CommandRoute { plugin: plugin.to_owned(), subcommands });
                }
            }
        }
        clashes
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
        table.set_plugin_commands("dice-roller", [("roll".into(), false), ("flip".into(), false)]);
        table.set_plugin_commands("admin", [("admin".into(), true)]);
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
        let clashes = t.set_plugin_commands("copycat", [("roll".into(), false)]);
        assert_eq!(clashes, ["roll"]);
        assert_eq!(t.lookup("roll").unwrap().plugin, "dice-roller");
        t.remove_plugin("dice-roller");
        assert!(t.lookup("roll").is_none());
    }
}
