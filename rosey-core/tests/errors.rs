//! What a user reads when something cannot start: typed errors that name the thing concerned and
//! keep their cause, printed with `rosey_core::error::Chain`. Real sockets, real files, real exec.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rosey_core::bus::{BusError, NatsBus, NatsOptions};
use rosey_core::error::{Chain, find_cause};
use rosey_core::plugin::{Manifest, PluginRuntime, ProcessRuntime, RuntimeError};
use rosey_core::plugin::{ManifestError, discover_async};

use crate::support::unique_prefix;

/// A fresh, empty folder under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rosey-errors-{}", unique_prefix())).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A port on 127.0.0.1 that nobody listens on: bound by the OS, then released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_nats_connect_failure_names_the_server_without_credentials_and_keeps_the_cause() {
    let port = closed_port();
    let options = NatsOptions { connect_timeout: Duration::from_secs(5), ..NatsOptions::default() };
    let err = NatsBus::connect_with(&format!("nats://rosey:hunter2@127.0.0.1:{port}"), options)
        .await
        .unwrap_err();

    let url = format!("nats://127.0.0.1:{port}");
    assert!(matches!(&err, BusError::Connect { url: shown, .. } if *shown == url), "{err:?}");
    assert_eq!(err.to_string(), format!("cannot connect to NATS at {url}"));
    let cause = find_cause::<io::Error>(&err).expect("the I/O error is the cause");
    assert_eq!(cause.kind(), io::ErrorKind::ConnectionRefused);
    let shown = Chain(&err).to_string();
    assert_eq!(shown, format!("cannot connect to NATS at {url}: {cause}"));
    assert!(shown.to_lowercase().contains("connection refused"), "{shown}");
    assert!(!format!("{shown} {err:?}").contains("hunter2"), "{shown}");
}

fn manifest_in(dir: &Path, exec: &str) -> Manifest {
    Manifest {
        dir: dir.to_path_buf(),
        exec: vec![exec.to_owned()],
        ..Manifest::in_process("p", "1", ["p"])
    }
}

fn write_file(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn a_missing_program_is_reported_as_not_found_where_it_was_looked_for() {
    let dir = temp_dir("missing");
    let runtime = ProcessRuntime::new();

    let err = runtime.start(&manifest_in(&dir, "rosey-no-such-plugin")).await.unwrap_err();
    assert!(
        matches!(&err, RuntimeError::NotFound { program, .. } if program == Path::new("rosey-no-such-plugin")),
        "{err:?}"
    );
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("rosey-no-such-plugin not found in {}", dir.display())),
        "{shown}"
    );
    assert!(shown.contains("on PATH"), "{shown}");

    let err = runtime.start(&manifest_in(&dir, "./bin/plugin")).await.unwrap_err();
    assert_eq!(err.to_string(), format!("{} not found", dir.join("./bin/plugin").display()));
}

#[tokio::test]
async fn a_program_that_is_not_executable_says_so_rather_than_not_found() {
    let dir = temp_dir("not-executable");
    write_file(&dir.join("rosey-plain-file"), "#!/bin/sh\nexit 0\n", 0o644);
    let runtime = ProcessRuntime::new();

    for exec in ["rosey-plain-file", "./rosey-plain-file"] {
        let err = runtime.start(&manifest_in(&dir, exec)).await.unwrap_err();
        let RuntimeError::NotExecutable { path } = &err else { panic!("{exec}: {err:?}") };
        assert_eq!(path.canonicalize().unwrap(), dir.join("rosey-plain-file"), "{exec}");
        assert!(err.to_string().contains("is not executable"), "{err}");
    }
}

#[tokio::test]
async fn a_script_whose_interpreter_is_missing_keeps_the_os_error_as_its_cause() {
    let dir = temp_dir("bad-interpreter");
    write_file(&dir.join("plugin.py"), "#!/nonexistent/python3\nprint('hi')\n", 0o755);

    let err = ProcessRuntime::new().start(&manifest_in(&dir, "./plugin.py")).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Spawn { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("cannot start {}", dir.join("./plugin.py").display()));
    let cause = find_cause::<io::Error>(&err).expect("the spawn's io::Error is the cause");
    assert_eq!(cause.kind(), io::ErrorKind::NotFound, "{}", Chain(&err));
}

#[tokio::test]
async fn an_in_process_manifest_given_to_the_process_runtime_has_no_program() {
    let err = ProcessRuntime::new().start(&Manifest::in_process("greeter", "1", ["hi"])).await;
    assert!(matches!(err, Err(RuntimeError::NoProgram { ref plugin }) if plugin == "greeter"));
}

#[tokio::test]
async fn a_manifest_file_with_several_problems_reports_every_one_with_its_key() {
    let root = temp_dir("plugins");
    std::fs::create_dir_all(root.join("broken")).unwrap();
    write_file(
        &root.join("broken/plugin.toml"),
        "name = \"broken\"\nversion = \"\"\nexec = []\ncomands = [\"x\"]\n[limits]\nmemory_mb = 0\n",
        0o644,
    );

    let err = Manifest::load_async(&root.join("broken")).await.unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["version", "exec", "limits.memory_mb", "comands"], "{err}");
    let shown = err.to_string();
    let path = root.join("broken/plugin.toml");
    assert!(
        shown.starts_with(&format!("{}: version: must not be empty; exec: ", path.display())),
        "{shown}"
    );
    assert!(shown.ends_with("comands: unknown key; did you mean \"commands\"?"), "{shown}");

    let (found, errors) = discover_async(&root).await;
    assert!(found.is_empty());
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].to_string(), shown);
}

#[tokio::test]
async fn an_unreadable_manifest_or_plugin_dir_keeps_the_io_error() {
    let nowhere = temp_dir("empty").join("nowhere");
    let err = Manifest::load_async(&nowhere).await.unwrap_err();
    assert!(matches!(err, ManifestError::Unreadable { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("cannot read {}", nowhere.join("plugin.toml").display()));
    assert_eq!(find_cause::<io::Error>(&err).map(io::Error::kind), Some(io::ErrorKind::NotFound));

    let (_, errors) = discover_async(&nowhere).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(
        Chain(&errors[0]).to_string(),
        format!(
            "cannot read {}: {}",
            nowhere.display(),
            find_cause::<io::Error>(&errors[0]).unwrap()
        )
    );
}
