//! `promtool check metrics` for tests of the Prometheus exposition, and the Prometheus server for
//! tests that scrape (Debian package `prometheus`; `scripts/test` installs it and exports `PROMTOOL`
//! and `PROMETHEUS`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The promtool to run: `PROMTOOL` when set, else the first in `PATH`, /usr/bin or /usr/local/bin.
///
/// # Panics
/// When there is none, with the install command: tests that need it are never skipped.
pub fn promtool() -> PathBuf {
    program("PROMTOOL", "promtool")
}

/// The Prometheus server to run (the same Debian package): `PROMETHEUS` when set, else the first in
/// `PATH`, /usr/bin or /usr/local/bin.
///
/// # Panics
/// As [`promtool`].
pub fn prometheus() -> PathBuf {
    program("PROMETHEUS", "prometheus")
}

/// `name` from the Debian package `prometheus`: the path in `variable` when set, else the first in
/// `PATH`, /usr/bin or /usr/local/bin; a panic with the install command when there is none.
fn program(variable: &str, name: &str) -> PathBuf {
    let install = format!(
        "Install it with\n\n    sudo apt-get install prometheus\n\n(or set {variable} to its path), or \
         run scripts/test, which installs it when it can."
    );
    if let Some(path) = std::env::var_os(variable) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "{variable}={} is not a file. {install}", path.display());
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed; these tests need it. {install}"))
}

/// Runs `promtool check metrics` on `body`.
///
/// One lint finding is accepted, and only that one: `rosey_plugin_memory_mb metric names should not
/// contain abbreviated units`. The name is fixed by Rosey's design (and the PRD), and promtool's
/// linter (exit code 3) has no way to waive it; a parse error (exit code 1) or any other finding
/// fails.
///
/// # Panics
/// With promtool's output and the body when it finds a problem.
pub fn check_metrics(body: &str) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child.stdin.take().expect("piped stdin").write_all(body.as_bytes()).expect("promtool reads");
    let output = child.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let only_the_known_finding = output.status.code() == Some(3)
        && said.lines().filter(|l| !l.trim().is_empty()).all(|l| {
            l.starts_with("rosey_plugin_memory_mb ")
                && l.ends_with("should not contain abbreviated units")
        });
    assert!(
        output.status.success() || only_the_known_finding,
        "promtool check metrics failed ({}):\n{said}\n--- body ---\n{body}",
        output.status
    );
}
