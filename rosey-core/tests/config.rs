//! The JSON configuration: defaults, structural and semantic errors naming their keys, environment
//! overrides, secrets kept out of output, and the shipped example files.

use std::path::{Path, PathBuf};

use rosey_core::config::{Config, ConfigError, ConfigErrors, CytubeConfig, SecretUrl};

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
            "must be an http:// or https:// URL",
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
fn env_values_are_validated_like_file_values() {
    let mut config = Config::default();
    config.apply_env(|name| (name == "ROSEY_NATS_URL").then(|| "redis://x".to_owned()));
    let errors = config.validate().unwrap_err();
    assert_eq!(keys(&errors.0), ["nats_url"]);
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
    assert!(config.database.url.expose().starts_with("sqlite:"));
    assert_eq!((config.dashboard.host.as_str(), config.dashboard.port), ("127.0.0.1", 8080));
    assert!(config.owner.is_some() && !config.admins.is_empty());
    assert_eq!(config.plugin_dir, PathBuf::from("plugins"));
}

#[test]
fn prod_example_loads_and_validates_and_keeps_secrets_out_of_the_file() {
    let mut config = Config::load(&example("config-prod.json")).unwrap();
    assert_eq!(config.nats_url.as_ref().map(SecretUrl::expose), Some("nats://127.0.0.1:4222"));
    assert_eq!(
        config.database.url.expose(),
        "postgres://rosey@127.0.0.1:5432/rosey",
        "user only; the password comes from ROSEY_DATABASE_URL"
    );
    let cytube = config.cytube.as_ref().unwrap();
    assert_eq!(cytube.server, "https://cytu.be");
    assert!(cytube.password.is_none(), "password comes from ROSEY_CYTUBE_PASSWORD");

    config.apply_env(|name| match name {
        "ROSEY_CYTUBE_PASSWORD" => Some(CYTUBE_PASSWORD.to_owned()),
        "ROSEY_DATABASE_URL" => Some(format!("postgres://rosey:{DB_PASSWORD}@db:5432/rosey")),
        _ => None,
    });
    assert_eq!(config.validate(), Ok(()));
}
