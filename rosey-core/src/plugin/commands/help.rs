//! The router's own answer to `!help`, written from the [`CommandTable`].
//!
//! `!help` lists every command the table routes right now, in alphabetical order: the commands of the
//! plugins loaded, whether or not they are running at this moment (a command of a stopped plugin is
//! answered `❌ <plugin> is not running`, so listing it is honest). `!help roll` (or `!help !roll`)
//! gives that command's description and usage; an unknown one is answered `❓ No command !nope`.
//! Answers fit CyTube's 320-character lines, split at word boundaries, at most three lines (the
//! third ends with `…` when more was to say).

use super::CommandTable;

/// The command word the router answers itself unless a plugin owns it.
pub(crate) const HELP: &str = "help";

/// CyTube's longest chat line, in characters.
const LINE_CHARS: usize = 320;

/// Lines one answer may take.
const MAX_LINES: usize = 3;

/// The lines answering `!help <args>` (`prefix` is the router's, usually `!`).
pub(crate) fn answer(table: &CommandTable, prefix: &str, args: &str) -> Vec<String> {
    let text = match args.split_whitespace().next() {
        None => list(table, prefix),
        Some(word) => {
            let command = word.strip_prefix(prefix).filter(|c| !c.is_empty()).unwrap_or(word);
            describe(table, prefix, command)
        }
    };
    fit(&text, LINE_CHARS, MAX_LINES)
}

/// `Commands: !8ball, !flip, !quote, !roll — !help <command> for more`.
fn list(table: &CommandTable, prefix: &str) -> String {
    let commands = table.commands();
    if commands.is_empty() {
        return "No commands right now".to_owned();
    }
    let names: Vec<String> =
        commands.iter().map(|(command, _)| format!("{prefix}{command}")).collect();
    format!("Commands: {} — {prefix}{HELP} <command> for more", names.join(", "))
}

/// `!roll — Roll dice · usage: !roll 2d6+1`, or `❓ No command !nope`.
fn describe(table: &CommandTable, prefix: &str, command: &str) -> String {
    let Some(route) = table.lookup(command) else {
        return format!("❓ No command {prefix}{command}");
    };
    let mut text = match &route.description {
        Some(description) => format!("{prefix}{command} — {description}"),
        None => format!("{prefix}{command} — a command of {}", route.plugin),
    };
    if let Some(usage) = &route.usage {
        text.push_str(" · usage: ");
        text.push_str(usage);
    }
    text
}

/// Splits `text` into lines of at most `width` characters at whitespace (a word longer than a line
/// is cut), at most `max_lines` of them; when more would be needed the last one ends with `…`.
fn fit(text: &str, width: usize, max_lines: usize) -> Vec<String> {
    let width = width.max(2);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    let mut line_chars = 0;
    for word in text.split_whitespace() {
        let mut word = word;
        let mut chars = word.chars().count();
        if line_chars > 0 && line_chars + 1 + chars <= width {
            line.push(' ');
            line.push_str(word);
            line_chars += 1 + chars;
            continue;
        }
        if line_chars > 0 {
            lines.push(std::mem::take(&mut line));
        }
        while chars > width {
            let cut = word.char_indices().nth(width).map_or(word.len(), |(i, _)| i);
            lines.push(word[..cut].to_owned());
            word = &word[cut..];
            chars -= width;
        }
        line.push_str(word);
        line_chars = chars;
        if lines.len() > max_lines {
            break;
        }
    }
    if line_chars > 0 {
        lines.push(line);
    }
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        if let Some(last) = lines.last_mut() {
            while last.chars().count() + 2 > width {
                match last.rfind(' ') {
                    Some(space) => last.truncate(space),
                    None => {
                        last.pop();
                    }
                }
            }
            last.push_str(if last.is_empty() { "…" } else { " …" });
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{CommandSpec, Manifest};

    fn table() -> CommandTable {
        let table = CommandTable::new();
        let mut dice = Manifest::in_process(
            "dice-roller",
            "1.0.0",
            [
                CommandSpec::new("roll").with_description("Roll dice").with_usage("!roll 2d6+1"),
                CommandSpec::new("flip"),
            ],
        );
        dice.description = "Dice rolls and coin flips".into();
        table.claim_manifest(&dice).unwrap();
        table.claim_manifest(&Manifest::in_process("8ball", "1.0.0", ["8ball"])).unwrap();
        table
    }

    #[test]
    fn help_lists_the_commands_in_alphabetical_order() {
        assert_eq!(
            answer(&table(), "!", ""),
            ["Commands: !8ball, !flip, !roll — !help <command> for more"]
        );
        assert_eq!(answer(&CommandTable::new(), "!", "  "), ["No commands right now"]);
    }

    #[test]
    fn help_for_a_command_gives_its_description_and_usage() {
        let t = table();
        assert_eq!(answer(&t, "!", "roll"), ["!roll — Roll dice · usage: !roll 2d6+1"]);
        assert_eq!(answer(&t, "!", "!roll and more"), ["!roll — Roll dice · usage: !roll 2d6+1"]);
        assert_eq!(answer(&t, "!", "flip"), ["!flip — Dice rolls and coin flips"]);
        assert_eq!(answer(&t, "!", "8ball"), ["!8ball — a command of 8ball"]);
        assert_eq!(answer(&t, "!", "nope"), ["❓ No command !nope"]);
        assert_eq!(answer(&t, "!", "!"), ["❓ No command !!"]);
    }

    #[test]
    fn long_answers_are_split_at_words_into_at_most_three_lines() {
        let text = (0..200).map(|i| format!("word{i}")).collect::<Vec<_>>().join(" ");
        let lines = fit(&text, 320, 3);
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.chars().count() <= 320), "{lines:?}");
        assert!(lines[0].starts_with("word0 word1 ") && lines[1].starts_with("word"));
        assert!(lines[2].ends_with(" …"), "{:?}", lines[2]);
        let joined = lines.join(" ");
        let said: Vec<&str> = joined.split_whitespace().collect();
        let words: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(said[..said.len() - 1], words[..said.len() - 1], "nothing lost or reordered");

        assert_eq!(fit("a few words", 320, 3), ["a few words"]);
        assert_eq!(fit("aaa bbb ccc", 7, 3), ["aaa bbb", "ccc"]);
        assert_eq!(fit("ééééé", 2, 3), ["éé", "éé", "é"], "counted in characters, long words cut");
        assert_eq!(fit("ééééééé", 2, 3), ["éé", "éé", "…"]);
        assert!(fit("", 320, 3).is_empty());
    }

    #[test]
    fn help_with_many_commands_fits_three_chat_lines() {
        let t = CommandTable::new();
        let many: Vec<(String, bool)> =
            (0..200).map(|i| (format!("command{i:03}"), false)).collect();
        t.claim("big", many).unwrap();
        let lines = answer(&t, "!", "");
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("Commands: !command000, !command001, "), "{lines:?}");
        assert!(lines.iter().all(|l| l.chars().count() <= 320));
        assert!(lines[2].ends_with('…'));
        let huge = "x".repeat(5000);
        let lines = answer(&t, "!", &huge);
        assert!(lines.len() == 3 && lines[2].ends_with('…'), "an echoed word is bounded too");
    }
}
