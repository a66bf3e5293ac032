//! The command table: which chat command belongs to which plugin, with its help texts, shared by the
//! plugin manager (which fills it from manifests) and the [`Router`](crate::router::Router) (which
//! reads it, and answers `!help` from it: see [`help`]).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::Manifest;
use crate::subject;

pub(crate) mod help;

/// Where one chat command goes, and what `!help` says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRoute {
    /// The plugin that owns the command.
    pub plugin: String,
    /// Whether the second word of the chat line is part of the subject (`!admin reload x` →
    /// `rosey.command.admin.reload`).
    pub subcommands: bool,
    /// One line saying what the command does: the manifest's description of the command, else the
    /// first line of the plugin's description; `None` when neither says anything.
    pub description: Option<String>,
    /// How to use it (`!roll 2d6+1`), from the manifest.
    pub usage: Option<String>,
}

impl CommandRoute {
    /// A route to `plugin` without help texts.
    fn bare(plugin: &str, subcommands: bool) -> Self {
        Self { plugin: plugin.to_owned(), subcommands, description: None, usage: None }
    }
}

/// What a chat line is to the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    /// The line does not start with the prefix followed by a word.
    NotACommand,
    /// The line names a command no plugin owns, or a sub-command that cannot be a subject token.
    Unknown {
        /// The command word, without prefix.
        command: &'a str,
        /// Everything after it, as for a routed command.
        args: &'a str,
    },
    /// The line is a command a plugin owns.
    Routed(RoutedCommand),
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
    ///
    /// The commands carry no help texts: [`claim_manifest`](Self::claim_manifest) gives them theirs.
    pub fn claim(
        &self,
        plugin: &str,
        commands: impl IntoIterator<Item = (String, bool)>,
    ) -> Result<(), CommandClash> {
        let routes = commands
            .into_iter()
            .map(|(command, subcommands)| (command, CommandRoute::bare(plugin, subcommands)))
            .collect();
        self.claim_routes(plugin, routes)
    }

    /// Gives the plugin of `manifest` exactly the manifest's commands, with their help texts, all or
    /// nothing as [`claim`](Self::claim) does.
    pub fn claim_manifest(&self, manifest: &Manifest) -> Result<(), CommandClash> {
        let plugin = manifest.name.as_str();
        let plugin_description =
            manifest.description.lines().next().map(str::trim).filter(|d| !d.is_empty());
        let routes = manifest
            .commands
            .iter()
            .map(|spec| {
                let route = CommandRoute {
                    description: spec
                        .description
                        .clone()
                        .or_else(|| plugin_description.map(str::to_owned)),
                    usage: spec.usage.clone(),
                    ..CommandRoute::bare(plugin, spec.subcommands)
                };
                (spec.name.clone(), route)
            })
            .collect();
        self.claim_routes(plugin, routes)
    }

    fn claim_routes(
        &self,
        plugin: &str,
        commands: Vec<(String, CommandRoute)>,
    ) -> Result<(), CommandClash> {
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
        routes.extend(commands);
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

    /// Every command with its route, in command order (for `!help`).
    pub fn commands(&self) -> Vec<(String, CommandRoute)> {
        let mut commands: Vec<(String, CommandRoute)> =
            self.routes.read().iter().map(|(c, r)| (c.clone(), r.clone())).collect();
        commands.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        commands
    }

    /// Routes a chat line that starts with `prefix` (e.g. `!`). Returns `None` for a line that is not
    /// a command, names an unknown command, or whose command or sub-command cannot be a subject token.
    pub fn route(&self, prefix: &str, line: &str) -> Option<RoutedCommand> {
        match self.parse(prefix, line) {
            Parsed::Routed(routed) => Some(routed),
            Parsed::NotACommand | Parsed::Unknown { .. } => None,
        }
    }

    /// Reads a chat line as [`route`](Self::route) does, telling an unknown command from a line that
    /// is no command at all.
    pub(crate) fn parse<'a>(&self, prefix: &str, line: &'a str) -> Parsed<'a> {
        let Some(body) = line.strip_prefix(prefix) else { return Parsed::NotACommand };
        let (command, args) = split_word(body);
        if command.is_empty() {
            return Parsed::NotACommand;
        }
        let unknown = Parsed::Unknown { command, args };
        let Some(route) = self.lookup(command) else { return unknown };
        let sub = if route.subcommands {
            let (sub, _) = split_word(args);
            (!sub.is_empty()).then_some(sub)
        } else {
            None
        };
        let Ok(subject) = subject::command(command, sub) else { return unknown };
        Parsed::Routed(RoutedCommand {
            subject,
            command: command.to_owned(),
            args: args.to_owned(),
        })
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
    use crate::plugin::CommandSpec;

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
    fn unknown_commands_are_told_from_lines_that_are_no_command() {
        let t = table();
        for line in ["hello", "!", "! roll", "?roll", ""] {
            assert_eq!(t.parse("!", line), Parsed::NotACommand, "{line:?}");
        }
        assert_eq!(t.parse("!", "!dance now"), Parsed::Unknown { command: "dance", args: "now" });
        assert_eq!(
            t.parse("!", "!admin re.load"),
            Parsed::Unknown { command: "admin", args: "re.load" },
            "a sub-command that cannot be a subject token routes nowhere"
        );
        assert!(matches!(t.parse("!", "!roll 2d6"), Parsed::Routed(r) if r.args == "2d6"));
    }

    #[test]
    fn a_manifest_gives_its_commands_their_help_texts() {
        let mut manifest = Manifest::in_process(
            "dice-roller",
            "1.0.0",
            [
                CommandSpec::new("roll").with_description("Roll dice").with_usage("!roll 2d6+1"),
                CommandSpec::new("flip"),
            ],
        );
        manifest.description = "Dice rolls and coin flips\nand more on a second line".into();
        let t = CommandTable::new();
        t.claim_manifest(&manifest).unwrap();
        let roll = t.lookup("roll").unwrap();
        assert_eq!(
            (roll.description.as_deref(), roll.usage.as_deref()),
            (Some("Roll dice"), Some("!roll 2d6+1"))
        );
        let flip = t.lookup("flip").unwrap();
        assert_eq!(
            (flip.description.as_deref(), flip.usage.as_deref()),
            (Some("Dice rolls and coin flips"), None),
            "the plugin's description, first line, stands in"
        );
        manifest.description.clear();
        manifest.commands.pop();
        t.claim_manifest(&manifest).unwrap();
        let names: Vec<String> = t.commands().into_iter().map(|(c, _)| c).collect();
        assert_eq!(names, ["roll"], "a claim replaces what the plugin owned");
        assert!(t.claim_manifest(&Manifest::in_process("copycat", "1", ["roll"])).is_err());
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
