//! Property tests of the manifest parser: a plugin folder is untrusted, so any `plugin.toml` gives a
//! usable manifest or errors that point into the file, in one pass, in proportion to the text.

use proptest::prelude::*;

use super::*;

/// TOML values of every type, valid and not quite (overflowing, mistyped, empty).
const VALUES: &[&str] = &[
    "\"roll\"",
    "\"dice-roller\"",
    "\"a b\"",
    "\"a.b\"",
    "\"\"",
    "\" \"",
    "'literal'",
    "\"\\u00e9\"",
    "\"\\n\"",
    "\"r*\"",
    "\"cytube.user.*\"",
    "\"a..b\"",
    "\">.x\"",
    "\"!roll 1d20\"",
    "1",
    "-1",
    "0",
    "1.5",
    "0.0",
    "-0.5",
    "1e-400",
    "inf",
    "-inf",
    "nan",
    "9223372036854775807",
    "9223372036854775808",
    "1e400",
    "true",
    "false",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    "[]",
    "{}",
    "[\"x\"]",
    "[\"\"]",
    "[\"roll\", \"flip\"]",
    "[1, \"a\"]",
    "[[\"a\"]]",
    "{ name = \"admin\", subcommands = true }",
    "{ name = 3 }",
    "{ sub = 1 }",
    "[\"roll\", { name = \"admin\", subcommands = true }, 3]",
];

/// Pieces of TOML syntax, to be strung together at random.
const SYNTAX: &[&str] = &[
    "[", "]", "{", "}", "=", "\"", "'", ".", ",", "\n", " ", "#", "a", "1", "name", "[config]",
    "\"\"\"", "\\",
];

/// Sections, their keys as the parser spells them (or nearly), and values that suit each key.
type Keys = &'static [(&'static str, &'static [&'static str])];
const SECTIONS: &[(&str, Keys)] = &[
    (
        "",
        &[
            ("name", &["\"p\"", "\"dice-roller\""]),
            ("version", &["\"1.0\"", "\"2.0.0-beta\""]),
            ("description", &["\"Dice\"", "\"\""]),
            ("exec", &["[\"p\"]", "[\"python3\", \"main.py\"]"]),
            (
                "commands",
                &[
                    "[\"roll\", \"flip\"]",
                    "[\"roll\", { name = \"admin\", subcommands = true }]",
                    "[]",
                ],
            ),
            ("subscribe", &["[\"cytube.user.*\"]", "[\"rosey.plugin.>\", \"a.b\"]"]),
            ("nme", &[]),
        ],
    ),
    ("health", &[("probe", &["\"!roll 1d20\""]), ("prob", &[])]),
    (
        "limits",
        &[("memory_mb", &["64", "0.5"]), ("cpu_percent", &["50", "100.0"]), ("memory", &[])],
    ),
    (
        "timeouts",
        &[
            ("event_secs", &["10", "0.25"]),
            ("ready_secs", &["5"]),
            ("shutdown_grace_secs", &["1.5"]),
            ("drain_secs", &["30"]),
            ("health_secs", &["5"]),
            ("ready_sec", &[]),
        ],
    ),
    ("restart", &[("max_attempts", &["5", "0"]), ("stable_secs", &["0", "60"])]),
    ("queue", &[("capacity", &["1", "1000"]), ("max_in_flight", &["64"])]),
    (
        "config",
        &[
            ("greeting", &["\"hi\""]),
            ("nested", &["{ a = [1, 2] }"]),
            ("when", &["1979-05-27T07:32:00Z"]),
        ],
    ),
    ("other", &[("x", &[])]),
];

fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(VALUES).prop_map(str::to_owned);
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            prop::collection::vec(("[a-z]{1,4}", inner), 0..3).prop_map(|pairs| {
                let mut seen = Vec::new();
                let pairs: Vec<String> = pairs
                    .into_iter()
                    .filter(|(key, _)| {
                        !seen.contains(key) && {
                            seen.push(key.clone());
                            true
                        }
                    })
                    .map(|(key, value)| format!("{key} = {value}"))
                    .collect();
                format!("{{ {} }}", pairs.join(", "))
            }),
        ]
    })
}

/// The value of one key: one that suits it, mostly, else a value of any type.
fn value_for(suits: &'static [&'static str]) -> BoxedStrategy<String> {
    if suits.is_empty() {
        return toml_value().boxed();
    }
    prop_oneof![
        12 => prop::sample::select(suits).prop_map(str::to_owned),
        1 => toml_value(),
    ]
    .boxed()
}

/// A manifest: each key of each section present or not, with a suitable value or an odd one; a
/// misspelt or unknown key now and then. About a third are usable.
fn manifest_text() -> impl Strategy<Value = String> {
    let mut keys = Vec::new();
    for &(section, entries) in SECTIONS {
        for &(key, suits) in entries {
            let present = if suits.is_empty() {
                0.03
            } else if section.is_empty() {
                0.9
            } else {
                0.4
            };
            keys.push(
                prop::option::weighted(present, value_for(suits))
                    .prop_map(move |v| (section, key, v)),
            );
        }
    }
    keys.prop_map(|keys| {
        let mut text = String::new();
        let mut current = "";
        for (section, key, value) in keys {
            let Some(value) = value else { continue };
            if section != current {
                text.push_str(&format!("[{section}]\n"));
                current = section;
            }
            text.push_str(&format!("{key} = {value}\n"));
        }
        text
    })
}

/// What every outcome must respect: a manifest that parses holds only values the runtime can use;
/// a syntax error points into the text; problems are listed, name a key, and stay in proportion.
fn check(text: &str) {
    match Manifest::parse(text, Path::new("plugins/p")) {
        Ok(manifest) => {
            let token = |word: &str| subject::validate_publish(word).is_ok() && !word.contains('.');
            assert!(token(&manifest.name), "{:?}", manifest.name);
            assert!(!manifest.version.trim().is_empty());
            assert!(manifest.exec.first().is_some_and(|program| !program.trim().is_empty()));
            assert!(manifest.commands.iter().all(|command| token(&command.name)));
            for pattern in manifest.subjects() {
                assert!(subject::validate_pattern(&pattern).is_ok(), "{pattern:?}");
            }
            for limit in
                [manifest.limits.memory_mb, manifest.limits.cpu_percent].into_iter().flatten()
            {
                assert!(limit > 0.0 && limit.is_finite());
            }
            let t = &manifest.timeouts;
            assert!(
                [t.event, t.ready, t.shutdown_grace, t.drain, t.health]
                    .iter()
                    .all(|d| !d.is_zero())
            );
            assert!(manifest.queue_capacity >= 1 && manifest.max_in_flight >= 1);
            assert!(manifest.config.is_object());
        }
        Err(ManifestError::Syntax { line, column, message, .. }) => {
            assert!(line >= 1 && line <= text.lines().count() + 1, "line {line}");
            assert!(column >= 1 && column <= text.chars().count() + 1, "column {column}");
            assert!(message.len() <= 2 * text.len() + 300, "{message}");
        }
        Err(error @ ManifestError::Invalid { .. }) => {
            let problems = error.problems();
            assert!(!problems.is_empty());
            assert!(problems.len() <= text.len() / 2 + 20, "{} problems", problems.len());
            // Searching the text per problem is the test's own quadratic step: sample the first ones.
            for problem in problems.iter().take(100) {
                let top = problem.key.split(['.', '[']).next().unwrap_or_default();
                assert!(
                    ["name", "version", "exec"].contains(&top) || text.contains(top),
                    "{} names no key of {text:?}",
                    problem.key
                );
            }
            for problem in problems {
                assert!(problem.message.len() <= 2 * text.len() + 300, "{}", problem.message);
            }
        }
        Err(other) => panic!("parsing text gave {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_parses_or_gives_errors_that_point_into_it(text in "\\PC{0,200}") {
        check(&text);
    }

    #[test]
    fn toml_shaped_text_parses_or_gives_errors_that_point_into_it(
        text in prop::collection::vec(prop::sample::select(SYNTAX), 0..60)
    ) {
        check(&text.concat());
    }

    #[test]
    fn manifests_with_odd_values_parse_into_usable_plugins_or_name_their_problems(text in manifest_text()) {
        check(&text);
    }
}

proptest! {
    // Big manifests: few cases, each up to 64 KiB, deep past the TOML parser's recursion limit, wide,
    // or with thousands of commands.
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn deep_or_wide_manifests_parse_in_one_pass(n in 1usize..6_000, shape in 0..6) {
        let head = "name = \"p\"\nversion = \"1\"\nexec = [\"p\"]\n";
        let text = match shape {
            0 => format!("{head}[config]\nx = {}1{}\n", "[".repeat(n), "]".repeat(n)),
            1 => format!("{head}[config]\nx = {}1{}\n", "{a=".repeat(n), "}".repeat(n)),
            2 => format!("{head}[config]\n{} = 1\n", vec!["a"; n].join(".")),
            3 => format!("{head}{}", (0..n).map(|i| format!("k{i} = 1\n")).collect::<String>()),
            4 => format!("{head}commands = [{}]\n", (0..n).map(|i| format!("\"c{i}\"")).collect::<Vec<_>>().join(",")),
            _ => format!("{head}subscribe = [{}]\n", vec!["\"a.*.>\""; n].join(",")),
        };
        prop_assert!(text.len() <= 65_536, "{}", text.len());
        check(&text);
    }
}
