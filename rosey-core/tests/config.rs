//! The JSON configuration: defaults, structural and semantic errors naming their keys, environment
//! overrides, secrets kept out of output, and the shipped example files.

use std::path::{Path, PathBuf};

use rosey_core::config::{
    Config, ConfigError, ConfigErrors, CytubeConfig, EnvOverride, EnvOverrides, IgnoredOverride,
    NatsCredentials, Secret, SecretUrl,
};

const DB_PASSWORD: &str = "db-hunter2";
const CYTUBE_PASSWORD: &str = "cytube-hunter2";

fn errors_of(json: &str) -> Vec<ConfigError> {
    match Config::from_json_str(json) {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.0,
    }
}

/// The single error of `json`, as `key: message`.
fn only_error(json: &str) -> String {
    let errors = errors_of(json);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:?}");
    errors[0].to_string()
}

fn keys(errors: &[ConfigError]) -> Vec<&str> {
    errors.iter().map(|error| error.key.as_str()).collect()
}

fn example(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples")).join(name)
}

#[test]
fn empty_object_gives_all_defaults() {
    let config = Config::from_json_str("{}").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.owner, None);
    assert!(config.admins.is_empty());
    assert!(config.nats_url.is_none(), "in-process bus by default");
    assert_eq!(config.database.url.expose(), "sqlite://rosey.db");
    assert_eq!(config.database.pool_size, 5);
    assert!(config.cytube.is_none(), "console connector by default");
    assert_eq!(config.plugin_dir, PathBuf::from("plugins"));
    assert!(config.metrics.enabled);
    assert_eq!((config.metrics.poll_interval, config.metrics.history_duration), (5, 3600));
    assert!(config.dashboard.enabled);
    assert_eq!((config.dashboard.host.as_str(), config.dashboard.port), ("127.0.0.1", 8080));
    assert_eq!(config.logging.level, "info");
    assert_eq!(config.logging.file, Some(PathBuf::from("logs/rosey.log")));
    assert_eq!(Config::default().validate(), Ok(()));
}

#[test]
fn missing_keys_of_a_section_take_their_defaults() {
    let config = Config::from_json_str(
        r#"{"dashboard": {"port": 9000}, "cytube": {"channel": "c", "username": "u"}}"#,
    )
    .unwrap();
    assert_eq!((config.dashboard.host.as_str(), config.dashboard.port), ("127.0.0.1", 9000));
    let cytube = config.cytube.unwrap();
    assert_eq!(cytube.server, "https://cytu.be");
    assert!(cytube.password.is_none());
}

#[test]
fn null_log_file_disables_file_logging() {
    let config = Config::from_json_str(r#"{"logging": {"file": null}}"#).unwrap();
    assert_eq!(config.logging.file, None);
}

#[test]
fn each_semantic_error_names_its_key() {
    let cases = [
        (r#"{"dashboard": {"port": 70000}}"#, "dashboard.port", "70000 is out of range 1-65535"),
        (r#"{"dashboard": {"port": 0}}"#, "dashboard.port", "0 is out of range 1-65535"),
        (r#"{"dashboard": {"port": -1}}"#, "dashboard.port", "-1 is out of range 1-65535"),
        (r#"{"dashboard": {"host": ""}}"#, "dashboard.host", "must not be empty"),
        (r#"{"metrics": {"poll_interval": 0}}"#, "metrics.poll_interval", "at least 1 second"),
        (
            r#"{"metrics": {"poll_interval": 60, "history_duration": 30}}"#,
            "metrics.history_duration",
            "30 s is shorter than metrics.poll_interval (60 s)",
        ),
        (r#"{"admins": ["bob"]}"#, "owner", "must be set when admins are listed"),
        (r#"{"owner": ""}"#, "owner", "must not be empty"),
        (r#"{"owner": "a", "admins": ["b", " "]}"#, "admins[1]", "must not be empty"),
        (r#"{"database": {"pool_size": 0}}"#, "database.pool_size", "must be at least 1"),
        (r#"{"database": {"kv_max_keys": 0}}"#, "database.kv_max_keys", "must be at least 1"),
        (r#"{"database": {"retention_days": 40000}}"#, "database.retention_days", "at most 36500"),
        (
            r#"{"metrics": {"retention": {"quarter_tier_days": 0}}}"#,
            "metrics.retention.quarter_tier_days",
            "must be 1-90",
        ),
        (
            r#"{"metrics": {"retention": {"minute_tier_hour": 5}}}"#,
            "metrics.retention.minute_tier_hour",
            "did you mean \"minute_tier_hours\"",
        ),
        (r#"{"database": {"url": "mysql://db/rosey"}}"#, "database.url", "must start with sqlite:"),
        (
            r#"{"nats_url": "http://127.0.0.1:4222"}"#,
            "nats_url",
            "must start with nats:// or tls://",
        ),
        (r#"{"cytube": {"username": "u"}}"#, "cytube.channel", "must be set"),
        (r#"{"cytube": {"channel": "c", "username": ""}}"#, "cytube.username", "must be set"),
        (
            r#"{"cytube": {"server": "cytu.be", "channel": "c", "username": "u"}}"#,
            "cytube.server",
            "\"cytu.be\" is not a valid URL",
        ),
        (
            r#"{"logging": {"level": "verbose"}}"#,
            "logging.level",
            "\"verbose\" is not one of error",
        ),
    ];
    for (json, key, message) in cases {
        let errors = errors_of(json);
        assert_eq!(keys(&errors), [key], "{json}");
        assert!(errors[0].message.contains(message), "{json}: {}", errors[0]);
    }
}

#[test]
fn accepted_values_at_the_edges_of_the_rules() {
    let config = Config::from_json_str(
        r#"{
            "nats_url": "tls://nats.example:4222",
            "database": {"url": "postgresql://db/rosey", "pool_size": 1},
            "cytube": {"server": "http://localhost:8080", "channel": "c", "username": "u"},
            "metrics": {"poll_interval": 10, "history_duration": 10},
            "dashboard": {"port": 65535},
            "logging": {"level": "WARN"}
        }"#,
    );
    assert!(config.is_ok(), "{config:?}");
    assert!(Config::from_json_str(r#"{"database": {"url": "sqlite::memory:"}}"#).is_ok());
}

#[test]
fn several_errors_are_reported_at_once() {
    let errors = errors_of(
        r#"{
            "admins": ["bob"],
            "dashbord": {},
            "dashboard": {"port": 70000, "prot": 1},
            "metrics": {"poll_interval": 0},
            "database": {"pool_size": 0, "url": "mysql://db"},
            "logging": {"level": "loud"}
        }"#,
    );
    assert_eq!(
        keys(&errors),
        [
            "dashbord",
            "dashboard.port",
            "dashboard.prot",
            "owner",
            "database.url",
            "database.pool_size",
            "metrics.poll_interval",
            "logging.level",
        ],
        "{}",
        ConfigErrors(errors.clone())
    );
    let text = ConfigErrors(errors).to_string();
    assert_eq!(text.lines().count(), 8, "one error per line:\n{text}");
    assert!(
        text.contains("dashboard.port: 70000 is out of range 1-65535 at line 4 column 35"),
        "{text}"
    );
}

#[test]
fn unknown_top_level_key_suggests_the_closest_known_key() {
    assert_eq!(only_error(r#"{"ownr": "alice"}"#), r#"ownr: unknown key; did you mean "owner"?"#);
    assert_eq!(only_error(r#"{"colour": "red"}"#), "colour: unknown key");
}

#[test]
fn unknown_nested_key_suggests_the_closest_key_of_its_section() {
    assert_eq!(
        only_error(r#"{"dashboard": {"prot": 8080}}"#),
        r#"dashboard.prot: unknown key; did you mean "port"?"#
    );
    assert_eq!(
        only_error(r#"{"cytube": {"channel": "c", "username": "u", "pasword": "x"}}"#),
        r#"cytube.pasword: unknown key; did you mean "password"?"#
    );
    assert_eq!(
        only_error(r#"{"database": {"pool": 3}}"#),
        r#"database.pool: unknown key; did you mean "pool_size"?"#
    );
}

#[test]
fn every_unknown_key_is_reported() {
    let errors = errors_of(r#"{"a": 1, "metrics": {"b": 2, "c": {"d": 3}}, "logging": {"e": 4}}"#);
    assert_eq!(keys(&errors), ["a", "metrics.b", "metrics.c", "logging.e"]);
}

#[test]
fn dotted_key_at_top_level_is_told_to_nest() {
    assert_eq!(
        only_error(r#"{"dashboard.port": 80}"#),
        r#"dashboard.port: unknown key; write it nested: "dashboard": { "port": ... }"#
    );
}

#[test]
fn wrong_type_names_the_key_and_its_line_and_column() {
    let json = "{\n  \"owner\": \"alice\",\n  \"dashboard\": {\n    \"port\": \"80\"\n  }\n}";
    assert_eq!(
        only_error(json),
        r#"dashboard.port: invalid type: string "80", expected a port number 1-65535 at line 4 column 13"#
    );
    assert_eq!(
        only_error("{\"admins\": [\"bob\", 7], \"owner\": \"a\"}"),
        "admins[1]: invalid type: integer `7`, expected a string at line 1 column 20"
    );
    assert_eq!(
        only_error(r#"{"metrics": 5}"#),
        "metrics: invalid type: integer `5`, expected a JSON object at line 1 column 13"
    );
    assert_eq!(
        only_error(r#"{"cytube": ["https://cytu.be", "c", "u"]}"#),
        "cytube: invalid type: sequence, expected a JSON object at line 1 column 12"
    );
    assert_eq!(
        only_error(r#"{"database": {"url": 5}}"#),
        "database.url: invalid type: number, expected a string at line 1 column 22"
    );
    assert_eq!(
        only_error("[1]"),
        "invalid type: sequence, expected a JSON object at line 1 column 1"
    );
    assert_eq!(
        only_error(" 5"),
        "invalid type: integer `5`, expected a JSON object at line 1 column 2"
    );
}

#[test]
fn every_wrong_type_is_reported_with_unknown_keys_and_unrelated_semantic_errors() {
    let errors = errors_of(
        r#"{
  "owner": 1,
  "admins": ["bob"],
  "metrics": {"enabled": "yes", "poll_interval": 0},
  "dashboard": {"port": "80", "hots": "x"},
  "database": {"pool_size": 0}
}"#,
    );
    let text = ConfigErrors(errors.clone()).to_string();
    assert_eq!(
        keys(&errors),
        ["owner", "metrics.enabled", "dashboard.port", "dashboard.hots", "database.pool_size"],
        "{text}"
    );
    assert!(
        text.contains("owner: invalid type: integer `1`, expected a string at line 2 column 12")
    );
    assert!(
        text.contains(
            "metrics.enabled: invalid type: string \"yes\", expected a boolean at line 4"
        )
    );
}

#[test]
fn syntax_error_gives_line_and_column() {
    let errors = errors_of("{\n  \"owner\": \"alice\"\n  \"admins\": []\n}");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key, "");
    assert_eq!(errors[0].to_string(), "expected `,` or `}` at line 3 column 3");
    assert_eq!(errors_of("")[0].message, "EOF while parsing a value at line 1 column 0");
}

#[test]
fn byte_order_mark_is_accepted() {
    assert!(Config::from_json_str("\u{feff}{}").is_ok());
}

#[test]
fn env_overrides_password_database_url_and_nats_url() {
    let mut config =
        Config::from_json_str(r#"{"cytube": {"channel": "c", "username": "u"}}"#).unwrap();
    config.apply_env(|name| match name {
        "ROSEY_CYTUBE_PASSWORD" => Some(CYTUBE_PASSWORD.to_owned()),
        "ROSEY_CYTUBE_CHANNEL_PASSWORD" => Some("letmein".to_owned()),
        "ROSEY_DATABASE_URL" => Some(format!("postgres://rosey:{DB_PASSWORD}@db/rosey")),
        "ROSEY_NATS_URL" => Some("nats://tok@nats:4222".to_owned()),
        _ => None,
    });
    let cytube = config.cytube.as_ref().unwrap();
    assert_eq!(cytube.password.as_ref().map(|p| p.expose()), Some(CYTUBE_PASSWORD));
    assert_eq!(cytube.channel_password.as_ref().map(|p| p.expose()), Some("letmein"));
    assert!(!format!("{cytube:?}").contains("letmein"), "channel password leaked");
    assert_eq!(config.database.url.expose(), format!("postgres://rosey:{DB_PASSWORD}@db/rosey"));
    assert_eq!(config.nats_url.as_ref().map(SecretUrl::expose), Some("nats://tok@nats:4222"));
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn env_password_is_ignored_without_a_cytube_section_and_empty_values_are_ignored() {
    let mut config = Config::default();
    config.apply_env(|name| match name {
        "ROSEY_CYTUBE_PASSWORD" => Some(CYTUBE_PASSWORD.to_owned()),
        _ => Some(String::new()),
    });
    assert_eq!(config, Config::default());
}

#[test]
fn secrets_never_appear_in_debug_or_error_output() {
    let json = format!(
        r#"{{
            "nats_url": "nats://nats-user:{DB_PASSWORD}@nats:4222",
            "database": {{"url": "mysql://rosey:{DB_PASSWORD}@db/rosey", "pool_size": 0}},
            "cytube": {{"server": "ftp://x", "channel": "", "username": "u", "password": "{CYTUBE_PASSWORD}"}},
            "logging": {{"level": "nope"}}
        }}"#
    );
    let errors = Config::from_json_str(&json).unwrap_err();
    let shown = format!("{errors}\n{errors:?}");
    assert!(shown.contains("database.url"), "{shown}");
    assert!(shown.contains("mysql://rosey:***@db/rosey"), "{shown}");

    let mut config = Config::default();
    config.database.url = SecretUrl::new(format!("postgres://rosey:{DB_PASSWORD}@db/rosey"));
    config.nats_url = Some(SecretUrl::new(format!("nats://{DB_PASSWORD}@nats")));
    config.cytube = Some(CytubeConfig {
        server: "https://cytu.be".to_owned(),
        channel: "c".to_owned(),
        username: "u".to_owned(),
        password: None,
        channel_password: None,
        connect_timeout: None,
    });
    config.apply_env(|name| (name == "ROSEY_CYTUBE_PASSWORD").then(|| CYTUBE_PASSWORD.to_owned()));
    let debug = format!("{config:?} {config:#?}");
    assert!(debug.contains("postgres://rosey:***@db/rosey"), "{debug}");

    // A secret written with the wrong type is not quoted back either.
    let wrong_type = Config::from_json_str(&format!(
        r#"{{"cytube": {{"channel": "c", "username": "u", "password": {{"{CYTUBE_PASSWORD}": 1}}}}}}"#
    ))
    .unwrap_err();

    for output in [shown, debug, wrong_type.to_string()] {
        assert!(!output.contains(DB_PASSWORD), "database password leaked: {output}");
        assert!(!output.contains(CYTUBE_PASSWORD), "cytube password leaked: {output}");
    }
}

#[test]
fn unreadable_file_is_one_error_keyed_by_its_path() {
    let path = example("no-such-config.json");
    let errors = Config::load(&path).unwrap_err();
    assert_eq!(keys(&errors.0), [path.display().to_string()]);
    assert!(errors.0[0].message.starts_with("cannot read the file: "), "{errors}");
}

#[test]
fn dev_example_loads_and_validates() {
    let config = Config::load(&example("config-dev.json")).unwrap();
    assert!(config.cytube.is_none(), "console connector");
    assert!(config.nats_url.is_none(), "in-process bus");
    assert_eq!(config.plugin_dir, PathBuf::from("plugins"));
}

#[test]
fn prod_example_loads_and_validates_and_keeps_secrets_out_of_the_file() {
    let mut config = Config::load(&example("config-prod.json")).unwrap();
    assert_eq!(config.nats_url.as_ref().map(SecretUrl::expose), Some("nats://127.0.0.1:4222"));
    let cytube = config.cytube.as_ref().unwrap();
    assert_eq!(cytube.server, "https://cytu.be");
    assert!(cytube.password.is_none(), "password comes from ROSEY_CYTUBE_PASSWORD");

    let report = config
        .apply_env(|name| (name == "ROSEY_CYTUBE_PASSWORD").then(|| CYTUBE_PASSWORD.to_owned()));
    assert_eq!(report.applied.len(), 1);
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn nats_example_logs_in_as_rosey_node_with_the_password_from_the_environment() {
    let mut config = Config::load(&example("nats/rosey-node.json")).unwrap();
    assert!(config.validate().is_err(), "the password is not in the file");
    config.apply_env(|name| match name {
        "ROSEY_NATS_PASSWORD" => Some(NATS_PASSWORD.to_owned()),
        "ROSEY_CYTUBE_PASSWORD" => Some(CYTUBE_PASSWORD.to_owned()),
        _ => None,
    });
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(config.nats.credentials().summary(), r#"the password of user "rosey-node""#);
}

// ---- URL rules, CyTube names and passwords, environment blame, unused sections, files ----

/// The single error of `json`, as `(key, message)`.
fn key_and_message(json: &str) -> (String, String) {
    let errors = errors_of(json);
    assert_eq!(errors.len(), 1, "{json}: expected one error, got {errors:?}");
    (errors[0].key.clone(), errors[0].message.clone())
}

#[test]
fn urls_are_parsed_and_their_scheme_checked_per_key() {
    let rejected = [
        (r#"{"nats_url": "nats://"}"#, "nats_url", "needs a host"),
        (r#"{"nats_url": "tls://"}"#, "nats_url", "needs a host"),
        (r#"{"nats_url": "redis://x:6379"}"#, "nats_url", "must start with nats:// or tls://"),
        (r#"{"nats_url": "nats://a:4222,nats://"}"#, "nats_url", "needs a host"),
        (r#"{"nats_url": "nats://a:99999"}"#, "nats_url", "is not a valid URL: invalid port"),
        (r#"{"database": {"url": "sqlite:"}}"#, "database.url", "needs a file path"),
        (r#"{"database": {"url": "sqlite://"}}"#, "database.url", "needs a file path"),
        (r#"{"database": {"url": "sqlite://?mode=rwc"}}"#, "database.url", "needs a file path"),
        (r#"{"database": {"url": "rosey.db"}}"#, "database.url", "is not a valid URL"),
        (r#"{"database": {"url": "mysql://db/rosey"}}"#, "database.url", "must start with sqlite:"),
        (
            r#"{"cytube": {"server": "http://exa mple.com", "channel": "c", "username": "u"}}"#,
            "cytube.server",
            "is not a valid URL",
        ),
        (
            r#"{"cytube": {"server": "https://", "channel": "c", "username": "u"}}"#,
            "cytube.server",
            "is not a valid URL: empty host",
        ),
        (
            r#"{"cytube": {"server": "ws://cytu.be", "channel": "c", "username": "u"}}"#,
            "cytube.server",
            "must start with http:// or https://",
        ),
    ];
    for (json, key, message) in rejected {
        let (found_key, found_message) = key_and_message(json);
        assert_eq!(found_key, key, "{json}");
        assert!(found_message.contains(message), "{json}: {found_message}");
    }
    let accepted = [
        r#"{"nats_url": "nats://127.0.0.1:4222"}"#,
        r#"{"nats_url": "NATS://nats.example"}"#,
        r#"{"nats_url": "nats://a:4222,nats://b:4222"}"#,
        r#"{"database": {"url": "sqlite:rosey.db"}}"#,
        r#"{"database": {"url": "sqlite:///var/lib/rosey/rosey.db?mode=rwc"}}"#,
        r#"{"database": {"url": "sqlite::memory:"}}"#,
        r#"{"database": {"url": "postgres://rosey@db:5432/rosey"}}"#,
        r#"{"database": {"url": "postgresql://db/rosey?sslmode=require"}}"#,
        r#"{"cytube": {"server": "https://cytu.be", "channel": "c", "username": "u"}}"#,
        r#"{"cytube": {"server": "http://127.0.0.1:8080/", "channel": "c", "username": "u"}}"#,
    ];
    for json in accepted {
        assert!(Config::from_json_str(json).is_ok(), "{json}: {:?}", Config::from_json_str(json));
    }
}

#[test]
fn url_errors_never_quote_credentials() {
    let errors = errors_of(&format!(
        r#"{{"nats_url": "redis://u:{DB_PASSWORD}@x", "database": {{"url": "mysql://u:{DB_PASSWORD}@db"}}}}"#
    ));
    let text = ConfigErrors(errors).to_string();
    assert!(text.contains("redis://u:***@x") && text.contains("mysql://u:***@db"), "{text}");
    assert!(!text.contains(DB_PASSWORD), "{text}");
}

#[test]
fn cytube_user_name_follows_cytubes_rule_of_1_to_20_word_characters() {
    let config = |name: &str, password: &str| {
        format!(r#"{{"cytube": {{"channel": "c", "username": "{name}"{password}}}}}"#)
    };
    for name in ["a", "RoseyBot", "rosey_bot-2", "abcdefghij0123456789"] {
        assert!(Config::from_json_str(&config(name, "")).is_ok(), "{name} is a valid name");
    }
    for name in ["abcdefghij0123456789x", "rosey bot", "rosey.bot", "rosé"] {
        for password in ["", r#", "password": "pw""#] {
            let (key, message) = key_and_message(&config(name, password));
            assert_eq!(key, "cytube.username", "{name}");
            assert!(message.contains("is not a CyTube user name (1-20 of"), "{message}");
        }
    }
}

#[test]
fn a_given_password_must_not_be_empty() {
    let (key, message) =
        key_and_message(r#"{"cytube": {"channel": "c", "username": "u", "password": ""}}"#);
    assert_eq!(key, "cytube.password");
    assert!(message.contains("leave the key out to join as a guest"), "{message}");
    let (key, _) =
        key_and_message(r#"{"cytube": {"channel": "c", "username": "u", "channel_password": ""}}"#);
    assert_eq!(key, "cytube.channel_password");
}

#[test]
fn apply_env_reports_what_it_applied_and_what_it_ignored() {
    let mut config = Config::default();
    let report = config.apply_env(|name| match name {
        "ROSEY_CYTUBE_PASSWORD" => Some(CYTUBE_PASSWORD.to_owned()),
        "ROSEY_CYTUBE_CHANNEL_PASSWORD" => Some(String::new()),
        "ROSEY_NATS_URL" => Some("nats://127.0.0.1:4222".to_owned()),
        _ => None,
    });
    assert_eq!(
        report,
        EnvOverrides {
            applied: vec![EnvOverride { variable: "ROSEY_NATS_URL", key: "nats_url" }],
            ignored: vec![
                IgnoredOverride {
                    target: EnvOverride {
                        variable: "ROSEY_CYTUBE_PASSWORD",
                        key: "cytube.password"
                    },
                    reason: "the configuration has no cytube section",
                },
                IgnoredOverride {
                    target: EnvOverride {
                        variable: "ROSEY_CYTUBE_CHANNEL_PASSWORD",
                        key: "cytube.channel_password"
                    },
                    reason: "the value is empty",
                },
            ],
        }
    );
    assert!(!format!("{report:?}").contains(CYTUBE_PASSWORD), "the report holds names only");
    assert!(config.nats_url.is_some());
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable_not_the_key() {
    let cases = [
        ("ROSEY_NATS_URL", "nats://", "needs a host"),
        ("ROSEY_DATABASE_URL", "sqlite:", "needs a file path"),
        ("ROSEY_DATABASE_URL", "mysql://db", "must start with sqlite:"),
    ];
    for (variable, value, message) in cases {
        let mut config = Config::default();
        config.apply_env(|name| (name == variable).then(|| value.to_owned()));
        let errors = config.validate().unwrap_err();
        assert_eq!(keys(&errors.0), [variable], "{errors}");
        assert!(errors.0[0].message.contains(message), "{errors}");
        assert!(errors.to_string().starts_with(&format!("{variable}: ")), "{errors}");
    }
}

#[test]
fn a_bad_value_from_the_file_still_names_the_key_when_other_variables_are_set() {
    let mut config =
        Config::from_json_str(r#"{"cytube": {"channel": "c", "username": "u"}}"#).unwrap();
    config.database.url = SecretUrl::new("sqlite:".to_owned());
    config.apply_env(|name| match name {
        "ROSEY_CYTUBE_PASSWORD" => Some(CYTUBE_PASSWORD.to_owned()),
        "ROSEY_NATS_URL" => Some("nats://127.0.0.1:4222".to_owned()),
        _ => None,
    });
    let errors = config.validate().unwrap_err();
    assert_eq!(keys(&errors.0), ["database.url"]);
}

#[test]
fn a_good_value_from_the_environment_replaces_a_file_value_without_blame() {
    let mut config = Config::from_json_str(r#"{"nats_url": "nats://old:4222"}"#).unwrap();
    config.apply_env(|name| (name == "ROSEY_NATS_URL").then(|| "tls://new:4222".to_owned()));
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(config.nats_url.as_ref().map(SecretUrl::expose), Some("tls://new:4222"));
}

#[test]
fn a_section_is_configured_when_the_file_or_the_environment_gives_it() {
    assert!(!Config::from_json_str("{}").unwrap().is_configured("dashboard"));
    assert!(!Config::default().is_configured("dashboard"));
    // Present with default values still counts: the operator wrote it expecting an effect.
    let config =
        Config::from_json_str(r#"{"dashboard": {"port": 8080}, "owner": "alice"}"#).unwrap();
    assert!(config.is_configured("dashboard") && config.is_configured("owner"));
    assert!(!config.is_configured("metrics"));
    let mut config = Config::default();
    config.apply_env(|name| (name == "ROSEY_DASHBOARD_TOKEN").then(|| "t".repeat(20)));
    assert!(config.is_configured("dashboard"), "an environment override configures the section");
}

/// A fresh, empty folder for one test.
fn scratch_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rosey-config-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn with_paths(plugin_dir: &Path, log_file: Option<&Path>) -> Config {
    let log =
        log_file.map_or("null".to_owned(), |file| format!("{:?}", file.display().to_string()));
    Config::from_json_str(&format!(
        r#"{{"plugin_dir": {:?}, "logging": {{"file": {log}}}}}"#,
        plugin_dir.display().to_string()
    ))
    .unwrap()
}

#[test]
fn check_files_accepts_an_existing_plugin_dir_and_leaves_no_new_log_file_behind() {
    let dir = scratch_dir();
    let log = dir.join("logs/deep/rosey.log");
    assert_eq!(with_paths(&dir, Some(&log)).check_files(), Ok(()));
    assert!(dir.join("logs/deep").is_dir(), "the log folder is created, as running would");
    assert!(!log.exists(), "checking left an empty log file behind");
    std::fs::write(&log, "earlier lines\n").unwrap();
    assert_eq!(with_paths(&dir, Some(&log)).check_files(), Ok(()));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "earlier lines\n", "existing log kept");
}

#[test]
fn check_files_names_plugin_dir_and_its_absolute_path_when_missing_or_not_a_folder() {
    let dir = scratch_dir();
    let missing = dir.join("no-such-plugins");
    let errors = with_paths(&missing, None).check_files().unwrap_err();
    assert_eq!(errors.to_string(), format!("plugin_dir: {} does not exist", missing.display()));
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let errors = with_paths(&file, None).check_files().unwrap_err();
    assert_eq!(errors.to_string(), format!("plugin_dir: {} is not a directory", file.display()));

    // A relative path is shown made absolute against the working directory.
    let errors = with_paths(Path::new("surely-not-here"), None).check_files().unwrap_err();
    let shown = std::env::current_dir().unwrap().join("surely-not-here");
    assert_eq!(errors.to_string(), format!("plugin_dir: {} does not exist", shown.display()));
}

#[test]
fn check_files_names_logging_file_when_it_cannot_be_opened_for_append() {
    let dir = scratch_dir();
    // A folder where the file should be, and a file where a folder should be: both fail even as root.
    let folder = dir.join("is-a-folder");
    std::fs::create_dir(&folder).unwrap();
    let blocker = dir.join("blocker");
    std::fs::write(&blocker, "").unwrap();
    for log in [folder.clone(), blocker.join("rosey.log")] {
        let errors = with_paths(&dir, Some(&log)).check_files().unwrap_err();
        assert_eq!(keys(&errors.0), ["logging.file"], "{errors}");
        assert!(
            errors.0[0].message.starts_with(&format!("cannot open {} for append: ", log.display())),
            "{errors}"
        );
    }
}

const NATS_PASSWORD: &str = "nats-hunter2";

/// Every error of `json` after `ROSEY_*` variables from `env`, as `key: message` lines.
fn errors_with_env(json: &str, env: &[(&str, &str)]) -> String {
    let mut config = Config::from_json_str(json).unwrap();
    config.apply_env(|name| env.iter().find(|(var, _)| *var == name).map(|(_, v)| (*v).to_owned()));
    let shown = config.validate().unwrap_err().to_string();
    assert!(!shown.contains(NATS_PASSWORD), "a secret leaked: {shown}");
    shown
}

#[test]
fn nats_credentials_come_from_the_nats_section_with_secrets_from_the_environment() {
    // The file alone may lack the password: the environment gives it.
    assert_eq!(
        errors_with_env(
            r#"{"nats_url": "nats://nats:4222", "nats": {"user": "plugin-node"}}"#,
            &[]
        ),
        "nats.password: must be set with nats.user"
    );

    let mut config = Config::from_json_str(r#"{"nats_url": "nats://nats:4222"}"#).unwrap();
    config.nats.user = Some("plugin-node".to_owned());
    let report =
        config.apply_env(|name| (name == "ROSEY_NATS_PASSWORD").then(|| NATS_PASSWORD.to_owned()));
    assert_eq!(
        report.applied,
        [EnvOverride { variable: "ROSEY_NATS_PASSWORD", key: "nats.password" }]
    );
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(
        config.nats.credentials(),
        NatsCredentials::UserPassword {
            user: "plugin-node".to_owned(),
            password: Secret::new(NATS_PASSWORD.to_owned())
        }
    );
    assert_eq!(config.nats.credentials().summary(), r#"the password of user "plugin-node""#);
    assert!(!format!("{config:?} {:?}", config.nats.credentials()).contains(NATS_PASSWORD));

    // A token alone, with the URL from the environment too.
    let mut config = Config::default();
    config.apply_env(|name| match name {
        "ROSEY_NATS_URL" => Some("nats://nats:4222".to_owned()),
        "ROSEY_NATS_TOKEN" => Some(NATS_PASSWORD.to_owned()),
        _ => None,
    });
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(
        config.nats.credentials(),
        NatsCredentials::Token(Secret::new(NATS_PASSWORD.to_owned()))
    );
    assert_eq!(config.nats.credentials().summary(), "a token");
    assert!(!format!("{config:?}").contains(NATS_PASSWORD));
}

#[test]
fn nats_secrets_from_the_environment_are_ignored_without_nats_url() {
    let mut config = Config::default();
    let report = config.apply_env(|name| {
        matches!(name, "ROSEY_NATS_PASSWORD" | "ROSEY_NATS_TOKEN").then(|| NATS_PASSWORD.to_owned())
    });
    assert_eq!(report.applied, []);
    assert_eq!(
        report
            .ignored
            .iter()
            .map(|ignored| (ignored.target.variable, ignored.reason))
            .collect::<Vec<_>>(),
        [
            ("ROSEY_NATS_PASSWORD", "the configuration has no nats_url"),
            ("ROSEY_NATS_TOKEN", "the configuration has no nats_url"),
        ]
    );
    assert_eq!(config, Config::default());
}

#[test]
fn nats_takes_exactly_one_way_to_authenticate_and_names_the_key_or_variable() {
    let url = r#""nats_url": "nats://nats:4222""#;
    for (nats, error) in [
        (
            r#"{"user": "u", "password": "p", "token": "t"}"#,
            "nats.token: cannot be combined with nats.user and nats.password; set exactly one way \
             to authenticate",
        ),
        (
            r#"{"token": "t", "creds_file": "a.creds", "nkey_file": "a.nk"}"#,
            "nats.creds_file: cannot be combined with nats.token; set exactly one way to \
             authenticate\nnats.nkey_file: cannot be combined with nats.token; set exactly one way \
             to authenticate",
        ),
        (r#"{"password": "p"}"#, "nats.user: must be set with nats.password"),
        (r#"{"user": " ", "password": "p"}"#, "nats.user: must not be empty"),
        (r#"{"token": ""}"#, "nats.token: must not be empty"),
        (r#"{"nkey_file": ""}"#, "nats.nkey_file: must not be empty"),
    ] {
        let shown = Config::from_json_str(&format!(r#"{{{url}, "nats": {nats}}}"#)).unwrap_err();
        assert_eq!(shown.to_string(), error, "{nats}");
    }
    assert_eq!(
        only_error(r#"{"nats_url": "nats://u:p@nats:4222", "nats": {"token": "t"}}"#),
        "nats.token: cannot be combined with credentials inside nats_url; set exactly one way to \
         authenticate"
    );
    assert_eq!(
        errors_with_env(r#"{"nats": {"creds_file": "node.creds"}}"#, &[]),
        "nats_url: must be set when nats.creds_file is set (the in-process bus needs no credentials)"
    );
    assert_eq!(
        only_error(r#"{"nats_url": "nats://nats:4222", "nats": {"tokn": "t"}}"#),
        "nats.tokn: unknown key; did you mean \"token\"?"
    );
    assert_eq!(
        errors_with_env(
            r#"{"nats_url": "nats://nats:4222", "nats": {"user": "u", "password": "p"}}"#,
            &[("ROSEY_NATS_TOKEN", NATS_PASSWORD)],
        ),
        "ROSEY_NATS_TOKEN: cannot be combined with nats.user and nats.password; set exactly one \
         way to authenticate"
    );
    assert_eq!(
        errors_with_env(
            r#"{"nats_url": "nats://nats:4222"}"#,
            &[("ROSEY_NATS_PASSWORD", NATS_PASSWORD)],
        ),
        "nats.user: must be set with nats.password"
    );
}

#[test]
fn check_files_names_nats_credential_files_that_are_missing_or_hold_something_else() {
    let dir = scratch_dir();
    let config_with = |key: &str, file: &Path| {
        let mut config = with_paths(&dir, None);
        config.nats_url = Some(SecretUrl::new("nats://nats:4222".to_owned()));
        match key {
            "creds_file" => config.nats.creds_file = Some(file.to_owned()),
            _ => config.nats.nkey_file = Some(file.to_owned()),
        }
        assert_eq!(config.validate(), Ok(()));
        config.check_files()
    };
    let missing = dir.join("missing.creds");
    let errors = config_with("creds_file", &missing).unwrap_err();
    assert!(
        errors
            .to_string()
            .starts_with(&format!("nats.creds_file: cannot read {}: ", missing.display())),
        "{errors}"
    );
    let errors = config_with("nkey_file", &dir).unwrap_err();
    assert_eq!(keys(&errors.0), ["nats.nkey_file"], "{errors}");

    let wrong = dir.join("wrong");
    std::fs::write(&wrong, format!("{NATS_PASSWORD}\n")).unwrap();
    for (key, expected) in [
        ("creds_file", "a NATS credentials file (a user JWT and a user nkey seed)"),
        ("nkey_file", "a user nkey seed (one line starting with SU)"),
    ] {
        let errors = config_with(key, &wrong).unwrap_err().to_string();
        assert_eq!(errors, format!("nats.{key}: {} does not hold {expected}", wrong.display()));
    }

    let seed = dir.join("node.nk");
    std::fs::write(&seed, "SUAKVM7BHFSIQ32UVQDEOXJJXXJLB3LXIG5ZQWRLDLRVTQ6AEGWZIPNWZA\n").unwrap();
    assert_eq!(config_with("nkey_file", &seed), Ok(()));
    let creds = dir.join("node.creds");
    std::fs::write(
        &creds,
        "-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\nSUAK\n------END USER NKEY SEED------\n",
    )
    .unwrap();
    assert_eq!(config_with("creds_file", &creds), Ok(()));
}

#[test]
fn the_node_name_is_checked_overridable_and_defaults_to_host_and_pid() {
    let config = Config::from_json_str(r#"{"node": {"name": "eu-west_2"}}"#).unwrap();
    assert_eq!(config.node.name(), "eu-west_2");
    let error = only_error(r#"{"node": {"name": "eu.west 2"}}"#);
    assert!(error.starts_with("node.name: \"eu.west 2\" is not a node name"), "{error}");
    assert!(only_error(r#"{"node": {"name": ""}}"#).starts_with("node.name: "));
    assert!(
        only_error(&format!(r#"{{"node": {{"name": "{}"}}}}"#, "n".repeat(65)))
            .starts_with("node.name: ")
    );
    assert!(only_error(r#"{"node": {"nmae": "x"}}"#).contains("did you mean \"name\""));

    let mut config = Config::from_json_str("{}").unwrap();
    config.apply_env(|name| (name == "ROSEY_NODE_NAME").then(|| "from-env".to_owned()));
    assert_eq!(config.node.name(), "from-env");

    let default = Config::default().node.name();
    let pid = std::process::id().to_string();
    assert!(default.ends_with(&format!("-{pid}")), "{default}");
    assert!(default.len() <= 64, "{default}");
    assert!(
        default.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "{default}"
    );
    assert_eq!(default, Config::default().node.name(), "one name for the life of the process");
}
