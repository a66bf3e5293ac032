//! `deploy/rosey.service`: verified by systemd itself where `systemd-analyze` exists (with every
//! `ini systemd` drop-in of the docs), rated by `systemd-analyze security`, and checked for the
//! settings the docs promise everywhere.

use std::path::Path;
use std::time::Duration;

use super::markdown::{self, repo};
use super::report;
use super::run::{self, ROSEY, Scratch};

const UNIT: &str = "deploy/rosey.service";

/// Where the unit expects the binary; replaced by the binary under test for `verify`, which
/// checks that every command exists.
const INSTALLED_BINARY: &str = "/usr/local/bin/rosey";

/// The highest exposure `systemd-analyze security` may rate the unit, times ten (its
/// `--threshold`): "OK" ends at 2.0.
const EXPOSURE_THRESHOLD: &str = "20";

fn unit_text() -> String {
    std::fs::read_to_string(repo().join(UNIT)).unwrap()
}

/// Every `key=value` of a section, in order, comments and blank lines left out.
fn settings<'a>(unit: &'a str, section: &str) -> Vec<(&'a str, &'a str)> {
    let header = format!("[{section}]");
    unit.lines()
        .map(str::trim)
        .skip_while(|line| *line != header)
        .skip(1)
        .take_while(|line| !line.starts_with('['))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .collect()
}

#[test]
fn the_unit_runs_rosey_as_documented_and_keeps_the_hardening() {
    let unit = unit_text();
    let service = settings(&unit, "Service");
    let value = |key: &str| service.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let mut failures = Vec::new();
    let expected = [
        ("User", "rosey"),
        ("WorkingDirectory", "/var/lib/rosey"),
        ("EnvironmentFile", "-/etc/rosey/env"),
        ("ExecStart", "/usr/local/bin/rosey run --config /etc/rosey/config.json"),
        ("Restart", "on-failure"),
        ("KillMode", "mixed"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallFilter", "~@privileged"),
        ("ReadWritePaths", "/var/lib/rosey"),
        ("CapabilityBoundingSet", ""),
    ];
    for (key, want) in expected {
        if value(key) != Some(want) {
            failures.push(format!("{UNIT}: {key}={want} expected, found {:?}", value(key)));
        }
    }
    if !service.contains(&("SystemCallFilter", "@system-service")) {
        failures.push(format!("{UNIT}: SystemCallFilter=@system-service expected"));
    }
    // The launcher caps plugins' memory with setrlimit, which @resources holds.
    if service.iter().any(|(k, v)| *k == "SystemCallFilter" && v.contains("@resources")) {
        failures.push(format!("{UNIT}: @resources must stay allowed (plugins' RLIMIT_DATA)"));
    }
    // rosey's stop: nine steps, each abandoned after 10 s; the unit must let it finish.
    let stop = value("TimeoutStopSec").and_then(|v| v.trim_end_matches('s').parse::<u64>().ok());
    if stop.is_none_or(|secs| secs < 90) {
        failures.push(format!("{UNIT}: TimeoutStopSec of at least 90s expected, found {stop:?}"));
    }
    report("unit settings that differ from the docs", failures);
}

/// A scratch directory with the unit (its binary replaced by the one under test) and, when given,
/// a drop-in `rosey.service.d/docs.conf`.
fn unit_in(scratch: &Scratch, drop_in: Option<&str>) -> std::path::PathBuf {
    let path = scratch.path("rosey.service");
    std::fs::write(&path, unit_text().replace(INSTALLED_BINARY, ROSEY)).unwrap();
    if let Some(drop_in) = drop_in {
        let dir = scratch.path("rosey.service.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("docs.conf"), drop_in).unwrap();
    }
    path
}

/// `systemd-analyze verify` on the unit (with the drop-in), which must exit 0 and say nothing.
fn verify(systemd_analyze: &Path, drop_in: Option<&str>) -> Result<(), String> {
    let scratch = Scratch::new();
    let unit = unit_in(&scratch, drop_in);
    let mut cmd = scratch.command(systemd_analyze);
    cmd.arg("verify").arg(&unit).env("SYSTEMD_LOG_COLOR", "0");
    let ran = run::run(cmd, Duration::from_secs(60))?;
    if ran.status.success() && ran.stderr.trim().is_empty() && ran.stdout.trim().is_empty() {
        Ok(())
    } else {
        Err(ran.describe())
    }
}

#[test]
fn systemd_accepts_the_unit_and_every_documented_drop_in() {
    let Some(systemd_analyze) = run::find_program("systemd-analyze") else {
        // Never a silent skip: say so, and check what can be checked without systemd.
        eprintln!(
            "\n!!! systemd-analyze is not installed: {UNIT} is NOT verified by systemd here; only \
             its syntax is checked. Install systemd (Debian: `apt-get install systemd`) to verify it.\n"
        );
        report("syntax errors in the unit", syntax_problems(&unit_text()));
        return;
    };
    let mut failures = Vec::new();
    if let Err(err) = verify(&systemd_analyze, None) {
        failures.push(format!("{UNIT}: systemd-analyze verify: {err}"));
    }
    for block in markdown::all_blocks().iter().filter(|b| b.is("ini", "systemd")) {
        if let Err(err) = verify(&systemd_analyze, Some(&block.text)) {
            failures.push(format!("{}: as a drop-in of {UNIT}: {err}", block.at()));
        }
    }
    let scratch = Scratch::new();
    let unit = unit_in(&scratch, None);
    let mut cmd = scratch.command(&systemd_analyze);
    cmd.args(["security", "--offline=yes", &format!("--threshold={EXPOSURE_THRESHOLD}")])
        .arg(&unit);
    match run::run(cmd, Duration::from_secs(60)) {
        Ok(ran) if ran.status.success() => {}
        Ok(ran) => failures.push(format!("{UNIT}: exposure above 2.0: {}", ran.describe())),
        Err(err) => failures.push(format!("{UNIT}: systemd-analyze security: {err}")),
    }
    report("problems systemd finds", failures);
}

/// Without systemd: sections and `key=value` lines only, in the sections a service has.
fn syntax_problems(unit: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (n, line) in unit.lines().enumerate().map(|(n, l)| (n + 1, l.trim())) {
        let fine = line.is_empty()
            || line.starts_with('#')
            || matches!(line, "[Unit]" | "[Service]" | "[Install]")
            || line.split_once('=').is_some_and(|(key, _)| {
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric())
            });
        if !fine {
            problems.push(format!("{UNIT}:{n}: not a section or a setting: {line}"));
        }
    }
    problems
}

#[test]
fn the_fallback_syntax_check_finds_broken_lines() {
    assert!(syntax_problems("[Service]\nUser=rosey\n# c\n\n[Install]\n").is_empty());
    assert_eq!(syntax_problems("[Service]\nUser rosey\n[Bogus]\n").len(), 2);
}
