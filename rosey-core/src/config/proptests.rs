//! Property tests of the configuration loader: any text gives a configuration that validates or
//! errors that name keys, in proportion to the text, in one pass, and never showing a secret.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

/// Keys of each section, as the structs spell them, plus near misses.
const SECTIONS: &[(&str, &[&str])] = &[
    ("database", &["url", "pool_size", "poolsize", "uri"]),
    ("cytube", &["server", "channel", "username", "password", "channel_password", "pasword"]),
    ("metrics", &["enabled", "poll_interval", "history_duration", "enable"]),
    ("dashboard", &["enabled", "host", "port", "prot"]),
    ("logging", &["level", "file", "lvl"]),
];
const TOP: &[&str] = &[
    "owner",
    "admins",
    "nats_url",
    "plugin_dir",
    "ownr",
    "dashboard.port",
    "cytube.password",
    "x",
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
    ("[A-Za-z0-9]{10,16}", prop::collection::vec(0usize..9, 1..4)).prop_map(|(word, picks)| {
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

/// A configuration object with known, misspelt and odd keys, any value types, and secrets in it.
fn config_object() -> impl Strategy<Value = (String, Secrets)> {
    let section = |keys: &'static [&'static str]| {
        prop_oneof![
            5 => prop::collection::vec((prop::sample::select(keys), value()), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            1 => value(),
        ]
    };
    let sections = SECTIONS
        .iter()
        .map(|&(name, keys)| prop::option::of(section(keys)).prop_map(move |v| (name, v)))
        .collect::<Vec<_>>();
    (
        sections,
        prop::collection::vec((prop::sample::select(TOP), value()), 0..5),
        secrets(),
        any::<bool>(),
    )
        .prop_map(|(sections, top, secrets, pretty)| {
            let mut object = Map::new();
            for (name, section) in sections {
                if let Some(section) = section {
                    object.insert(name.to_owned(), section);
                }
            }
            for (key, value) in top {
                object.insert(key.to_owned(), value);
            }
            for (section, key, secret) in &secrets.places {
                let target = if section.is_empty() {
                    Some(&mut object)
                } else {
                    let entry = object.entry(section.to_owned()).or_insert_with(|| json!({}));
                    entry.as_object_mut()
                };
                if let Some(target) = target {
                    target.insert((*key).to_owned(), secret.clone());
                }
            }
            let value = Value::Object(object);
            let text = if pretty {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            };
            (text.unwrap_or_default(), secrets)
        })
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
                        || SECTIONS.iter().any(|(name, _)| *name == top)
                        || TOP.contains(&top);
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
            _ => format!("{{{}}}", (0..n.min(2_400)).map(|i| format!("\"{i:0>14}\":{{\"a\":[1]}},")).collect::<String>().trim_end_matches(',')),
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
