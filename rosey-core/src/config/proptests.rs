//! Property tests of the configuration loader: any text gives a configuration that validates or
//! errors that name keys, in proportion to the text, in one pass, and never showing a secret.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

/// Keys of each section (`""`: the top level) as the structs spell them, or nearly, and values that
/// suit each key (none: a misspelt key).
type Keys = &'static [(&'static str, &'static [&'static str])];
const SECTIONS: &[(&str, Keys)] = &[
    (
        "",
        &[
            ("owner", &["\"alice\""]),
            ("admins", &["[\"bob\", \"carol\"]", "[]"]),
            ("nats_url", &["\"nats://127.0.0.1:4222\"", "\"nats://a:4222,tls://b:4222\""]),
            ("plugin_dir", &["\"plugins\""]),
            ("ownr", &[]),
            ("dashboard.port", &[]),
        ],
    ),
    (
        "database",
        &[
            ("url", &["\"sqlite://rosey.db\"", "\"postgres://db/rosey\""]),
            ("pool_size", &["5"]),
            ("poolsize", &[]),
        ],
    ),
    (
        "cytube",
        &[
            ("server", &["\"https://cytu.be\""]),
            ("channel", &["\"room-1\""]),
            ("username", &["\"RoseyBot\""]),
            ("password", &["\"pw\""]),
            ("channel_password", &["\"pw\""]),
            ("connect_timeout", &["60"]),
            ("pasword", &[]),
        ],
    ),
    (
        "metrics",
        &[
            ("enabled", &["true"]),
            ("poll_interval", &["5"]),
            ("history_duration", &["3600"]),
            ("enable", &[]),
        ],
    ),
    (
        "dashboard",
        &[
            ("enabled", &["false"]),
            ("host", &["\"127.0.0.1\""]),
            ("port", &["8080"]),
            ("prot", &[]),
        ],
    ),
    ("node", &[("name", &["\"node-1\"", "\"eu_2\""]), ("nmae", &[])]),
    (
        "logging",
        &[("level", &["\"info\"", "\"DEBUG\""]), ("file", &["\"logs/rosey.log\""]), ("lvl", &[])],
    ),
];

/// A value of any JSON type, shallow, with the strings and numbers configs are made of.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(&[0i64, 1, -1, 80, 65_535, 65_536, i64::MAX, i64::MIN][..])
            .prop_map(Value::from),
        Just(json!(1.5)),
        Just(json!(1e300)),
        prop::sample::select(
            &[
                "",
                " ",
                "alice",
                "info",
                "LOUD",
                "127.0.0.1",
                "sqlite://rosey.db",
                "sqlite:",
                "postgres://",
                "nats://",
                "nats://:4222",
                "http://x",
                "ftp://x",
                "room-1",
                "a b",
                "é",
                "plugins"
            ][..]
        )
        .prop_map(|s| Value::String(s.to_owned())),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,6}", inner, 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A secret as the operator might place it: a password, or the password or token in a URL.
#[derive(Debug, Clone)]
struct Secrets {
    word: String,
    places: Vec<(&'static str, &'static str, Value)>,
}

fn secrets() -> impl Strategy<Value = Secrets> {
    ("[A-Za-z0-9]{10,16}", prop::collection::vec(0usize..9, 1..3)).prop_map(|(word, picks)| {
        let word = format!("Sx{word}");
        let places = picks
            .into_iter()
            .map(|pick| match pick {
                0 => ("cytube", "password", json!(word)),
                1 => ("cytube", "channel_password", json!(word)),
                2 => ("database", "url", json!(format!("postgres://rosey:{word}@db/rosey"))),
                3 => ("database", "url", json!(format!("postgres:/rosey:{word}@db"))),
                4 => ("database", "url", json!(format!("postgres://db/rosey?password={word}"))),
                5 => ("", "nats_url", json!(format!("nats://{word}@127.0.0.1:4222"))),
                6 => ("", "nats_url", json!(format!("nats://u:{word}@h:4222,nats://x y"))),
                7 => ("", "nats_url", json!(format!("{word}@127.0.0.1:4222"))),
                _ => ("cytube", "password", json!(word.parse::<f64>().unwrap_or(1234.5))),
            })
            .collect();
        Secrets { word, places }
    })
}

/// The value of one key: one that suits it, mostly, else a value of any type.
fn value_for(suits: &'static [&'static str]) -> BoxedStrategy<Value> {
    if suits.is_empty() {
        return value().boxed();
    }
    let suited = prop::sample::select(suits)
        .prop_map(|text| serde_json::from_str(text).expect("a JSON value"));
    prop_oneof![24 => suited, 1 => value()].boxed()
}

/// A configuration object: each key present or not, with a suitable value or one of any type, a
/// whole section of the wrong type now and then, a misspelt key now and then, and secrets in it.
fn config_object() -> impl Strategy<Value = (String, Secrets)> {
    let mut keys = Vec::new();
    for &(section, entries) in SECTIONS {
        for &(key, suits) in entries {
            let present = if suits.is_empty() { 0.03 } else { 0.85 };
            keys.push(
                prop::option::weighted(present, value_for(suits))
                    .prop_map(move |v| (section, key, v)),
            );
        }
    }
    let odd_section = prop::option::weighted(0.05, (prop::sample::select(SECTIONS), value()));
    (keys, odd_section, secrets(), any::<bool>()).prop_map(
        |(keys, odd_section, secrets, pretty)| {
            let mut object = Map::new();
            let placed =
                keys.into_iter().filter_map(|(section, key, value)| Some((section, key, value?)));
            let secret_places =
                secrets.places.iter().map(|(section, key, value)| (*section, *key, value.clone()));
            for (section, key, value) in placed.chain(secret_places) {
                let target = if section.is_empty() {
                    Some(&mut object)
                } else {
                    object.entry(section.to_owned()).or_insert_with(|| json!({})).as_object_mut()
                };
                if let Some(target) = target {
                    target.insert(key.to_owned(), value);
                }
            }
            if let Some(((section, _), value)) = odd_section
                && !section.is_empty()
            {
                object.insert((*section).to_owned(), value);
            }
            let value = Value::Object(object);
            let text = if pretty {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            };
            (text.unwrap_or_default(), secrets)
        },
    )
}

/// What every outcome must respect: a configuration that loads also validates; errors are not
/// empty, are in proportion to the text, and name a key of the text or of the configuration.
fn check(text: &str) -> Result<Config, ConfigErrors> {
    let result = Config::from_json_str(text);
    match &result {
        Ok(config) => assert_eq!(config.validate(), Ok(())),
        Err(errors) => {
            assert!(!errors.0.is_empty());
            assert!(errors.0.len() <= text.len() / 2 + 40, "{} errors", errors.0.len());
            for error in errors {
                assert!(error.to_string().len() <= 2 * text.len() + 300, "{error}");
            }
        }
    }
    result
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_loads_or_gives_errors_in_proportion(text in "\\PC{0,200}") {
        let _ = check(&text);
    }

    #[test]
    fn odd_values_and_keys_load_or_are_blamed_and_secrets_never_show(
        (text, secrets) in config_object(),
        bom in any::<bool>(),
    ) {
        let text = if bom { format!("\u{feff}{text}") } else { text };
        match check(&text) {
            Ok(config) => {
                let shown = format!("{config:?}");
                prop_assert!(!shown.contains(&secrets.word), "{} leaked in {}", secrets.word, shown);
            }
            Err(errors) => {
                let shown = format!("{errors}\n{errors:?}");
                prop_assert!(!shown.contains(&secrets.word), "{} leaked in {}", secrets.word, shown);
                let object: Option<Map<String, Value>> = serde_json::from_str(text.trim_start_matches('\u{feff}')).ok();
                for error in &errors {
                    let top = error.key.split(['.', '[']).next().unwrap_or_default();
                    let named = top.is_empty()
                        || object.as_ref().is_some_and(|o| o.contains_key(&error.key) || o.contains_key(top))
                        || SECTIONS.iter().any(|(name, keys)| {
                            *name == top || (name.is_empty() && keys.iter().any(|(key, _)| *key == top))
                        });
                    prop_assert!(named, "{} names no key of {}", error.key, text);
                }
            }
        }
    }
}

proptest! {
    // Big texts: few cases, each up to 64 KiB, shaped to make a loader that re-reads the text per key
    // or per error take seconds.
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn wide_deep_or_long_configs_load_in_one_pass(n in 1usize..6_000, shape in 0..6) {
        let text = match shape {
            0 => format!("{{{}\"owner\":\"a\"}}", (0..n).map(|i| format!("\"k{i}\":0,")).collect::<String>()),
            1 => format!("{{\"dashboard\":{{{}\"port\":1}}}}", (0..n).map(|i| format!("\"p{i}\":0,")).collect::<String>()),
            2 => format!("{{\"owner\":\"a\",\"admins\":[{}]}}", vec!["\"\""; n].join(",")),
            3 => format!("{{\"x\":{}{}}}", "[".repeat(n.min(20_000)), "]".repeat(n.min(20_000))),
            4 => format!("{{\"logging\":{{\"level\":\"{}\"}}}}", "é".repeat(n * 5)),
            _ => {
                let sections: Vec<String> =
                    (0..n.min(2_400)).map(|i| format!("\"{i:0>14}\":{{\"a\":[1]}}")).collect();
                format!("{{{}}}", sections.join(","))
            }
        };
        prop_assert!(text.len() <= 65_536, "{}", text.len());
        let _ = check(&text);
    }
}

#[test]
fn thousands_of_unknown_keys_are_counted_not_listed() {
    let keys: String = (0..5_000).map(|i| format!("\"k{i}\":0,")).collect();
    let errors = Config::from_json_str(&format!("{{{keys}\"ownr\":\"a\"}}")).unwrap_err();
    assert_eq!(errors.0.len(), 51);
    assert_eq!(errors.0[50].to_string(), "and 4951 more unknown keys, not listed");
    assert!(errors.iter().take(50).all(|error| error.message.starts_with("unknown key")));
}
