//! The `!admin` sub-commands: parsing what follows `!admin`, and the help and usage texts.

/// A well-formed admin command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `help` (or nothing): the sub-commands.
    Help,
    /// `list`: every plugin with its version and state.
    List,
    /// `status [plugin]`: a summary of each plugin, or the details of one.
    Status(Option<String>),
    /// `reload <plugin>`: blue-green reload, after a `yes`.
    Reload(String),
    /// `reload --all`: rolling reload of every plugin, after a `yes`.
    ReloadAll,
    /// `restart <plugin>`: stop and start, after a `yes`.
    Restart(String),
    /// `metrics`: the dashboard URL and a one-line summary.
    Metrics,
}

/// The sub-commands, as the `command` label of the metric and in the audit log.
pub(crate) const SUBCOMMANDS: [&str; 6] =
    ["help", "list", "status", "reload", "restart", "metrics"];

/// Why a line is not a well-formed admin command: the answer to give (without the prefix, which
/// [`Usage::text`] adds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Usage {
    /// The sub-command does not exist.
    Unknown(String),
    /// `reload` without a plugin, or with more than one word.
    Reload,
    /// `restart` without a plugin, or with more than one word.
    Restart,
    /// `status` with more than one word.
    Status,
}

impl Usage {
    /// The answer, naming commands with `prefix` (`!`).
    pub(crate) fn text(&self, prefix: &str) -> String {
        match self {
            Self::Unknown(sub) => format!(
                "❓ Unknown admin command {:?}. Usage: {prefix}admin help | list | status [plugin] | \
                 reload <plugin> | reload --all | restart <plugin> | metrics",
                crate::text::truncate(sub, 40)
            ),
            Self::Reload => {
                format!("❓ Usage: {prefix}admin reload <plugin> | {prefix}admin reload --all")
            }
            Self::Restart => format!("❓ Usage: {prefix}admin restart <plugin>"),
            Self::Status => format!("❓ Usage: {prefix}admin status [plugin]"),
        }
    }
}

/// Splits `args` (what follows `!admin`) into the sub-command, folded to lower case, and the rest.
pub(crate) fn split(args: &str) -> (String, &str) {
    let args = args.trim();
    match args.split_once(char::is_whitespace) {
        Some((sub, rest)) => (sub.to_lowercase(), rest.trim()),
        None => (args.to_lowercase(), ""),
    }
}

/// The command `sub` with arguments `rest` (as [`split`] gives them).
pub(crate) fn parse(sub: &str, rest: &str) -> Result<Command, Usage> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    match (sub, words.as_slice()) {
        ("" | "help", _) => Ok(Command::Help),
        ("list", _) => Ok(Command::List),
        ("metrics", _) => Ok(Command::Metrics),
        ("status", []) => Ok(Command::Status(None)),
        ("status", [name]) => Ok(Command::Status(Some((*name).to_owned()))),
        ("status", _) => Err(Usage::Status),
        ("reload", ["--all"]) => Ok(Command::ReloadAll),
        ("reload", [name]) if !name.starts_with('-') => Ok(Command::Reload((*name).to_owned())),
        ("reload", _) => Err(Usage::Reload),
        ("restart", [name]) if !name.starts_with('-') => Ok(Command::Restart((*name).to_owned())),
        ("restart", _) => Err(Usage::Restart),
        (other, _) => Err(Usage::Unknown(other.to_owned())),
    }
}

/// The `command` label of `sub`: itself when it exists, else [`UNKNOWN_COMMAND`](crate::audit::UNKNOWN_COMMAND),
/// so that strangers cannot grow the metric.
pub(crate) fn label(sub: &str) -> &str {
    match sub {
        "" => "help",
        known if SUBCOMMANDS.contains(&known) => known,
        _ => crate::audit::UNKNOWN_COMMAND,
    }
}

/// The answer to `help`.
pub(crate) fn help(prefix: &str, confirm_secs: u64) -> Vec<String> {
    let items: Vec<String> = [
        "list",
        "status [plugin]",
        "reload <plugin>",
        "reload --all",
        "restart <plugin>",
        "metrics",
        "help",
    ]
    .iter()
    .map(|sub| format!("{prefix}admin {sub}"))
    .collect();
    let mut lines = crate::text::pack("Admin commands: ", &items, " · ");
    lines.push(format!(
        "reload and restart ask first: type yes within {confirm_secs}s to go ahead. \
         reload --all goes one plugin at a time and stops at the first failure."
    ));
    lines
}

/// The command prefix the user typed (`!` in `!admin list`), found in the whole line; `!` when it
/// cannot be told.
pub(crate) fn prefix<'a>(message: &'a str, command: &str) -> &'a str {
    let line = message.trim_start();
    match line.find(command) {
        Some(at) if at > 0 && at <= 8 => &line[..at],
        _ => "!",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &str) -> Result<Command, Usage> {
        let (sub, rest) = split(args);
        parse(&sub, rest)
    }

    #[test]
    fn every_sub_command_parses() {
        assert_eq!(parsed(""), Ok(Command::Help));
        assert_eq!(parsed("HELP"), Ok(Command::Help));
        assert_eq!(parsed("list"), Ok(Command::List));
        assert_eq!(parsed("status"), Ok(Command::Status(None)));
        assert_eq!(parsed("status  dice-roller "), Ok(Command::Status(Some("dice-roller".into()))));
        assert_eq!(parsed("reload dice-roller"), Ok(Command::Reload("dice-roller".into())));
        assert_eq!(parsed("Reload --all"), Ok(Command::ReloadAll));
        assert_eq!(parsed("restart 8ball"), Ok(Command::Restart("8ball".into())));
        assert_eq!(parsed("metrics"), Ok(Command::Metrics));
    }

    #[test]
    fn bad_usage_says_how() {
        assert_eq!(parsed("reload"), Err(Usage::Reload));
        assert_eq!(parsed("reload a b"), Err(Usage::Reload));
        assert_eq!(parsed("reload --everything"), Err(Usage::Reload));
        assert_eq!(parsed("restart"), Err(Usage::Restart));
        assert_eq!(parsed("status a b"), Err(Usage::Status));
        assert_eq!(parsed("shutdown now"), Err(Usage::Unknown("shutdown".into())));
        assert_eq!(
            Usage::Unknown("shutdown".into()).text("!"),
            "❓ Unknown admin command \"shutdown\". Usage: !admin help | list | status [plugin] | \
             reload <plugin> | reload --all | restart <plugin> | metrics"
        );
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(label("reload"), "reload");
        assert_eq!(label(""), "help");
        assert_eq!(label("x".repeat(50).as_str()), "(unknown)");
    }

    #[test]
    fn the_prefix_is_read_from_the_line() {
        assert_eq!(prefix("!admin list", "admin"), "!");
        assert_eq!(prefix("  $$admin list", "admin"), "$$");
        assert_eq!(prefix("admin list", "admin"), "!");
    }
}
