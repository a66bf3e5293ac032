//! Storage seen from `rosey run`: the embedded SQLite file, PostgreSQL by `database.url`, the quotes
//! plugin keeping its quotes across a restart, lifecycle history, and a database that is not there.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rosey_core::storage::{PluginEventKind, PluginEventQuery, SqlOptions, SqlStorage, Storage};

use super::{exit_within, rosey, scratch_dir, stderr, write_config};

/// A config using the bundled plugins (dice-roller, 8ball, quotes), logging to stderr only, and
/// `database` when given (else the embedded default).
fn bundled_config(dir: &Path, database: Option<&str>) -> PathBuf {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let database = database.map(|url| format!(r#", "database": {{"url": {url:?}}}"#));
    write_config(
        dir,
        &format!(
            r#"{{"plugin_dir": {:?}, "logging": {{"file": null}}{}}}"#,
            plugins.display().to_string(),
            database.unwrap_or_default()
        ),
    )
}

/// Runs `rosey run` in `dir` with `input` on the console; returns the chat lines it printed once it
/// has answered everything and exited 0.
fn chat(dir: &Path, config: &Path, input: &str) -> Vec<String> {
    let mut child = rosey(dir, &["run", "--config", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap(); // then end of input
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>()
    });
    let err = std::thread::spawn(move || {
        BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<String>>()
    });
    let status = exit_within(&mut child, Duration::from_secs(60))
        .expect("rosey kept running after its input ended");
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "exit {status:?}\n{}\n{}", out.join("\n"), err.join("\n"));
    out
}

/// A database of its own on the test PostgreSQL (`ROSEY_TEST_POSTGRES_URL`), dropped with the value.
pub(crate) fn test_database() -> rosey_testkit::postgres::TestDatabase {
    runtime().block_on(rosey_testkit::postgres::TestDatabase::create())
}

/// `url` (`scheme://user@host…`) with `password` added to its user.
pub(crate) fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (user, host) = rest.split_once('@').expect("a URL with a user");
    format!("{scheme}://{user}:{password}@{host}")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The lifecycle history `rosey` wrote for `plugin`, oldest first.
fn history(url: &str, plugin: &str) -> Vec<PluginEventKind> {
    runtime().block_on(async {
        let storage = SqlStorage::open(url, SqlOptions::default()).await.unwrap();
        let query = PluginEventQuery { plugin: Some(plugin.to_owned()), ..Default::default() };
        let mut kinds: Vec<_> =
            storage.plugin_events(&query).await.unwrap().into_iter().map(|e| e.kind).collect();
        kinds.reverse();
        kinds
    })
}

/// `!quote add`, a restart, `!quote`: the quote comes back, wherever the database is.
fn quotes_survive_a_restart(dir: &Path, config: &Path) {
    let added = chat(dir, config, "alice: !quote add The cake is a lie\n");
    assert!(added.iter().any(|l| l.contains("✅") && l.contains("#1")), "{added:?}");
    let shown = chat(dir, config, "bob: !quote\nbob: !quote 1\n");
    let expected = "💬 #1: \"The cake is a lie\" — added by alice";
    assert_eq!(
        shown.iter().filter(|l| l.contains(expected)).count(),
        2,
        "a random quote and #1 are the saved one: {shown:?}"
    );
}

#[test]
fn on_embedded_defaults_rosey_creates_rosey_db_and_quotes_survive_a_restart() {
    let dir = scratch_dir();
    let config = bundled_config(&dir, None);
    quotes_survive_a_restart(&dir, &config);
    assert!(dir.join("rosey.db").is_file(), "the default database is rosey.db in the working dir");
    // Each run started and stopped the plugin, and the history says so, in order.
    let url = format!("sqlite://{}", dir.join("rosey.db").display());
    let kinds = history(&url, "quotes");
    use PluginEventKind::{Started, Stopped};
    assert_eq!(kinds, [Started, Stopped, Started, Stopped], "history of quotes");
}

#[test]
fn on_postgresql_quotes_survive_a_restart() {
    let database = test_database();
    let dir = scratch_dir();
    let config = bundled_config(&dir, Some(database.url()));
    quotes_survive_a_restart(&dir, &config);
    assert!(!dir.join("rosey.db").exists(), "no SQLite file when the database is PostgreSQL");
    assert_eq!(history(database.url(), "quotes").first(), Some(&PluginEventKind::Started));
}

#[test]
fn an_unreachable_database_stops_run_naming_the_key_and_hiding_the_password() {
    let dir = scratch_dir();
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let config = write_config(
        &dir,
        r#"{"logging": {"file": null}, "database": {"url": "postgres://rosey:hunter2@127.0.0.1:1/rosey"}}"#,
    );
    let out = rosey(&dir, &["run", "--config", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("database.url"), "{err}");
    assert!(err.contains("postgres://rosey:***@127.0.0.1:1/rosey"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
}
