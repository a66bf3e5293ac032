//! Manifest parsing and validation, key by key.

use super::*;

const MINIMAL: &str = "name = \"dice-roller\"\nversion = \"1.0\"\nexec = [\"rosey-dice-roller\"]\n";

#[test]
fn a_minimal_manifest_takes_the_documented_defaults() {
    let m = Manifest::parse(MINIMAL, Path::new("plugins/dice-roller")).unwrap();
    assert_eq!(m.timeouts.event, Duration::from_secs(10));
    assert_eq!(m.timeouts.ready, Duration::from_secs(5));
    assert_eq!(m.timeouts.drain, Duration::from_secs(30));
    assert_eq!(m.restart.max_attempts, 5);
    assert_eq!(m.queue_capacity, 1000);
    assert!(m.commands.is_empty() && m.probe.is_none());
    assert_eq!(m.config, serde_json::json!({}));
}

#[test]
fn commands_may_be_words_or_tables_with_subcommands() {
    let text = format!(
        "{MINIMAL}commands = [\"roll\", {{ name = \"admin\", subcommands = true }}]\nsubscribe = [\"cytube.user.*\"]\n"
    );
    let m = Manifest::parse(&text, Path::new(".")).unwrap();
    assert_eq!(
        m.subjects(),
        ["rosey.command.roll", "rosey.command.admin", "rosey.command.admin.>", "cytube.user.*"]
    );
}

#[test]
fn commands_may_carry_a_description_and_a_usage_for_help() {
    let text = format!(
        "{MINIMAL}commands = [\"roll\", {{ name = \"flip\", usage = \" !flip \", description = \"Flip a coin\" }}]\n"
    );
    let m = Manifest::parse(&text, Path::new(".")).unwrap();
    assert_eq!(
        m.commands,
        [
            CommandSpec::new("roll"),
            CommandSpec::new("flip").with_description("Flip a coin").with_usage("!flip")
        ]
    );
}

#[test]
fn a_bad_usage_or_description_is_reported_with_its_key() {
    let long = "x".repeat(201);
    let cases = [
        (
            format!("{{ name = \"a\", usage = \"{long}\" }}"),
            "commands[0].usage",
            "is 201 characters; at most 200",
        ),
        (
            "{ name = \"a\", description = \"two\\nlines\" }".to_owned(),
            "commands[0].description",
            "must be one line",
        ),
        ("{ name = \"a\", usage = \"  \" }".to_owned(), "commands[0].usage", "must not be empty"),
        ("{ name = \"a\", description = 3 }".to_owned(), "commands[0].description", "invalid type"),
        (
            "{ name = \"a\", usages = \"!a\" }".to_owned(),
            "commands[0].usages",
            "unknown key; did you mean \"usage\"?",
        ),
    ];
    for (command, key, says) in cases {
        let text = format!("{MINIMAL}commands = [{command}]\n");
        let err = Manifest::parse(&text, Path::new("plugins/x")).unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, [key], "{err}");
        assert!(err.to_string().contains(&format!("{key}: {says}")), "{err}");
    }
    let exactly =
        format!("{MINIMAL}commands = [{{ name = \"a\", usage = \"{}\" }}]\n", "é".repeat(200));
    assert!(Manifest::parse(&exactly, Path::new(".")).is_ok(), "200 characters, not bytes");
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("name = \"bad name\"\nversion = \"1\"\nexec = [\"x\"]", "name"),
        ("name = \"a\"\nversion = \"1\"\nexec = []", "exec"),
        ("name = \"a\"\nversion = \"1\"\nexec = [\"x\"]\ncommands = [\"r.oll\"]", "commands[0]"),
        ("name = \"a\"\nversion = \"1\"\nexec = [\"x\"]\nsubscribe = [\"a..b\"]", "subscribe[0]"),
        (
            "name = \"a\"\nversion = \"1\"\nexec = [\"x\"]\n[limits]\nmemory_mb = -1",
            "limits.memory_mb",
        ),
        (
            "name = \"a\"\nversion = \"1\"\nexec = [\"x\"]\n[timeouts]\nevent_secs = 0",
            "timeouts.event_secs",
        ),
        ("name = \"a\"\nversion = \"1\"\nexec = [\"x\"]\nexe = 1", "exe"),
        ("name = \"a\"\nexec = [\"x\"]", "version"),
    ];
    for (text, key) in cases {
        let err = Manifest::parse(text, Path::new(".")).unwrap_err();
        assert!(err.problems().iter().any(|p| p.key == key), "{text:?}: {err}");
        assert!(err.to_string().contains(&format!("{key}: ")), "{text:?}: {err}");
    }
}

#[test]
fn every_problem_in_a_manifest_is_reported_with_its_key() {
    let text = "name = \"bad.name\"\nexec = \"x\"\ncommands = [\"ok\", 3, { name = \"a b\", sub = 1 }]\n\
                [timeouts]\nevent_secs = -1\nready_sec = 2\n[queue]\ncapacity = 0\n[restart]\nmax_attempts = \"5\"\n";
    let err = Manifest::parse(text, Path::new("plugins/x")).unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "name",
            "version",
            "exec",
            "commands[1]",
            "commands[2].sub",
            "commands[2]",
            "timeouts.event_secs",
            "timeouts.ready_sec",
            "restart.max_attempts",
            "queue.capacity",
        ],
        "{err}"
    );
    let shown = err.to_string();
    assert!(shown.starts_with("plugins/x/plugin.toml: name: "), "{shown}");
    assert!(
        shown.contains("timeouts.ready_sec: unknown key; did you mean \"ready_secs\"?"),
        "{shown}"
    );
    assert!(shown.contains("version: missing"), "{shown}");
    assert!(err.problems().iter().all(|p| shown.contains(&p.to_string())), "{shown}");
}

#[test]
fn a_toml_syntax_error_says_where() {
    let err = Manifest::parse("name = \"a\"\nversion = 1.0.0\n", Path::new("p")).unwrap_err();
    match &err {
        ManifestError::Syntax { line, column, .. } => {
            assert_eq!((*line, *column), (2, 14), "{err}")
        }
        other => panic!("not a syntax error: {other}"),
    }
    assert!(
        err.to_string().starts_with("p/plugin.toml: invalid TOML at line 2, column 14: "),
        "{err}"
    );
}

#[test]
fn in_process_manifests_take_the_same_defaults_as_a_minimal_file() {
    let parsed = Manifest::parse(MINIMAL, Path::new("")).unwrap();
    let built = Manifest::in_process("dice-roller", "1.0", Vec::<CommandSpec>::new());
    assert_eq!(built.exec, Vec::<String>::new());
    assert_eq!(Manifest { exec: parsed.exec.clone(), ..built }, parsed);
}

#[test]
fn config_table_becomes_json() {
    let text = format!("{MINIMAL}[config]\nanswers = 20\nname = \"x\"\n");
    let m = Manifest::parse(&text, Path::new(".")).unwrap();
    assert_eq!(m.config, serde_json::json!({"answers": 20, "name": "x"}));
}
