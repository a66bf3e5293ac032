//! Property tests of the command parser: any chat line is routed to a subject its owner subscribes
//! to, with the arguments given back untouched, or not routed at all; never a panic or an invalid
//! subject, whatever the table holds.

use proptest::prelude::*;

use super::*;
use crate::event::ChatMessage;
use crate::plugin::{CommandSpec, Manifest};
use crate::subject::Pattern;

/// Command words a table may hold, including ones a manifest would refuse (the table itself does not
/// check them, so the parser must not trust them either).
const WORDS: &[&str] = &[
    "roll", "flip", "admin", "8ball", "ünï", "🎲", "a.b", "", "r*", "x>", ">", "*", "a\u{0}b",
    "tab\tbed", "re.load", "reload", "help", "ROLL",
];

/// Whitespace as `char::is_whitespace` sees it, ASCII and not.
const SPACES: &[&str] =
    &[" ", " ", " ", "\t", "\n", "\r", "\u{a0}", "\u{3000}", "\u{2028}", "\u{85}"];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(str::to_owned),
        1 => "[a-z.*>!]{0,6}",
        1 => "\\PC{0,6}",
    ]
}

/// A table of two plugins with commands drawn from [`WORDS`], and the manifests they came from.
fn table() -> impl Strategy<Value = (CommandTable, Vec<Manifest>)> {
    let commands = || prop::collection::vec((word(), any::<bool>()), 0..6);
    (commands(), commands()).prop_map(|(first, second)| {
        let table = CommandTable::new();
        let mut manifests = Vec::new();
        for (plugin, commands) in [("first", first), ("second", second)] {
            // A clash leaves the command with its first owner; the second plugin gets none of its commands.
            let _ = table.claim(plugin, commands.iter().cloned());
            let specs = commands
                .into_iter()
                .map(|(name, subcommands)| CommandSpec { subcommands, ..CommandSpec::new(name) });
            manifests.push(Manifest::in_process(plugin, "1.0.0", specs));
        }
        (table, manifests)
    })
}

/// `!` and words joined by runs of whitespace: lines that reach the lookup and the sub-command.
fn command_line() -> impl Strategy<Value = String> {
    let gap = prop::collection::vec(prop::sample::select(SPACES), 1..3).prop_map(|s| s.concat());
    (
        prop::sample::select(&["!", "!", "!", "", "!!", " !", "?"][..]),
        prop::collection::vec((word(), gap), 0..5),
        word(),
    )
        .prop_map(|(prefix, words, last)| {
            let mut line = prefix.to_owned();
            for (word, gap) in words {
                line.push_str(&word);
                line.push_str(&gap);
            }
            line.push_str(&last);
            line
        })
}

/// Checks everything a routed line promises; `prefix` is what the router was given.
fn check_route(table: &CommandTable, manifests: &[Manifest], prefix: &str, line: &str) {
    let Some(routed) = table.route(prefix, line) else { return };
    subject::validate_publish(&routed.subject).expect("a routed subject is publishable");
    let owner = table.lookup(&routed.command).expect("only known commands are routed");
    assert!(!routed.command.is_empty() && !routed.command.contains('.'));

    // The line is the prefix, the command, one whitespace character and the arguments untouched.
    let after = line
        .strip_prefix(prefix)
        .and_then(|body| body.strip_prefix(routed.command.as_str()))
        .expect("the command word starts the line");
    let mut chars = after.chars();
    match chars.next() {
        None => assert!(routed.args.is_empty()),
        Some(separator) => {
            assert!(separator.is_whitespace(), "the command word ends at whitespace");
            assert_eq!(chars.as_str(), routed.args);
        }
    }

    // The subject names the command, and the sub-command only when the owner asked for them.
    let sub = routed.args.split(char::is_whitespace).next().filter(|sub| !sub.is_empty());
    let expected = match sub.filter(|_| owner.subcommands) {
        Some(sub) => format!("rosey.command.{}.{sub}", routed.command),
        None => format!("rosey.command.{}", routed.command),
    };
    assert_eq!(routed.subject, expected);

    // And the owner's slot, subscribed by its manifest, hears it.
    let manifest = manifests.iter().find(|m| m.name == owner.plugin).expect("an owner");
    assert!(
        manifest
            .subjects()
            .iter()
            .any(|p| Pattern::new(p).is_ok_and(|p| p.matches(&routed.subject))),
        "{} is not among {:?}",
        routed.subject,
        manifest.subjects()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_line_is_routed_to_a_valid_subject_or_not_at_all(
        (table, manifests) in table(),
        line in "\\PC{0,80}",
    ) {
        check_route(&table, &manifests, "!", &line);
    }

    #[test]
    fn bang_and_random_words_are_routed_to_a_valid_subject_or_not_at_all(
        (table, manifests) in table(),
        line in command_line(),
        prefix in prop::sample::select(&["!", "!!", "?", "", "é"][..]),
    ) {
        check_route(&table, &manifests, prefix, &line);
    }

    #[test]
    fn an_owned_command_is_always_routed_unless_a_word_cannot_be_a_subject(
        command in prop::sample::select(WORDS),
        subcommands in any::<bool>(),
        gap in prop::sample::select(SPACES),
        args in "\\PC{0,30}",
    ) {
        let table = CommandTable::new();
        table.claim("owner", [(command.to_owned(), subcommands)]).unwrap();
        let routed = table.route("!", &format!("!{command}{gap}{args}"));
        let token = |word: &str| subject::validate_publish(word).is_ok() && !word.contains('.');
        let sub = args.split(char::is_whitespace).next().unwrap_or_default();
        let routable = token(command) && (!subcommands || sub.is_empty() || token(sub));
        prop_assert_eq!(routed.is_some(), routable, "{:?} {:?}", command, args);
        if let Some(routed) = routed {
            prop_assert_eq!(routed.command, command);
            prop_assert_eq!(routed.args, args);
        }
    }

    #[test]
    fn chat_payloads_with_odd_fields_decode_or_fail_without_panicking(
        (table, manifests) in table(),
        message in command_line(),
        time in prop::sample::select(&["1", "-1", "1e300", "\"now\"", "null"][..]),
        rank in prop::sample::select(&["1", "-1e308", "\"owner\"", "[99]"][..]),
        drop in prop::sample::select(&["", "channel", "user", "message", "time", "rank", "meta"][..]),
    ) {
        let mut payload = serde_json::json!({
            "channel": "c", "user": "u", "message": message,
            "time": serde_json::from_str::<serde_json::Value>(time).expect("JSON"),
            "rank": serde_json::from_str::<serde_json::Value>(rank).expect("JSON"),
            "meta": {"nested": [[[]]]},
        });
        payload.as_object_mut().expect("an object").remove(drop);
        if let Ok(chat) = serde_json::from_value::<ChatMessage>(payload) {
            check_route(&table, &manifests, "!", &chat.message);
        }
    }
}

proptest! {
    // Big lines: few cases, each long enough to show work that grows faster than the line.
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn long_lines_are_routed_in_one_pass(
        (table, manifests) in table(),
        words in 1usize..12_000,
        word in word(),
        gap in prop::sample::select(SPACES),
    ) {
        let unit = format!("{word}{gap}");
        let line = format!("!{}", unit.repeat(words.min(65_536 / unit.len())));
        check_route(&table, &manifests, "!", &line);
        let unbroken = format!("!{}", "x".repeat(words * 5));
        check_route(&table, &manifests, "!", &unbroken);
    }
}
