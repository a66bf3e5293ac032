//! Plugin manifests (`<plugin_dir>/<name>/plugin.toml`) and their discovery.
//!
//! ```toml
//! name = "dice-roller"
//! version = "1.0.0"
//! exec = ["rosey-dice-roller"]          # program and arguments
//! commands = ["roll", "flip"]           # or { name = "admin", subcommands = true }
//! subscribe = []                        # extra bus subjects (patterns)
//!
//! [health]
//! probe = "!roll 1d20"                  # optional chat line whose reply proves health
//!
//! [limits]
//! memory_mb = 32
//! cpu_percent = 50
//! ```
//!
//! Optional tables: `[timeouts]` (`event_secs` 10, `ready_secs` 5, `shutdown_grace_secs` 5,
//! `drain_secs` 30, `health_secs` 5), `[restart]` (`max_attempts` 5, `stable_secs` 60), `[queue]`
//! (`capacity` 1000, `max_in_flight` 64) and `[config]` (any table, handed to the plugin in `init`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::subject;

/// A manifest that could not be read or is invalid. Names the file and, where it can, the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ManifestError {
    /// The manifest file (or plugin folder) concerned.
    pub path: PathBuf,
    /// What is wrong, naming the key.
    pub message: String,
}

/// One command a plugin owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The command word, without prefix.
    pub name: String,
    /// Whether the second word of the chat line selects a sub-command (and so a subject token).
    pub subcommands: bool,
}

/// Resource limits; a plugin over one of them on two samples in a row is killed as a crash.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Resident memory limit in MB (MiB).
    pub memory_mb: Option<f64>,
    /// CPU limit in percent of one core.
    pub cpu_percent: Option<f64>,
}

/// Timeouts of one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long one event may take before it fails (default 10 s).
    pub event: Duration,
    /// How long a new instance has to answer `init` with `ready` (default 5 s).
    pub ready: Duration,
    /// How long an instance has to exit after `shutdown` before SIGKILL (default 5 s).
    pub shutdown_grace: Duration,
    /// How long an old instance may finish its in-flight events after a reload (default 30 s).
    pub drain: Duration,
    /// How long each health-check step may take (default 5 s).
    pub health: Duration,
}

/// The supervisor's restart policy for one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed without a stable run before the plugin is FAILED (default 5).
    pub max_attempts: u32,
    /// How long an instance must run to count as stable and reset the attempts (default 60 s).
    pub stable_after: Duration,
}

/// A validated plugin manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Unique plugin name; a single subject token (it appears in subjects and is the queue group).
    pub name: String,
    /// The version the manifest declares.
    pub version: String,
    /// One line saying what the plugin does.
    pub description: String,
    /// The plugin's folder: the working directory of its process.
    pub dir: PathBuf,
    /// Program and arguments.
    pub exec: Vec<String>,
    /// The commands it owns.
    pub commands: Vec<CommandSpec>,
    /// Extra bus subjects (patterns) whose events it receives.
    pub subscribe: Vec<String>,
    /// Optional chat line used as a health probe; the plugin must reply to it.
    pub probe: Option<String>,
    /// Resource limits.
    pub limits: Limits,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Events that may wait while the plugin is (re)starting or busy (default 1000).
    pub queue_capacity: usize,
    /// Events handed to one instance before it has answered them (default 64).
    pub max_in_flight: usize,
    /// The `[config]` table, as JSON, for the plugin's `init` message.
    pub config: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    exec: Vec<String>,
    #[serde(default)]
    commands: Vec<RawCommand>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    restart: RawRestart,
    #[serde(default)]
    queue: RawQueue,
    #[serde(default)]
    config: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawCommand {
    Name(String),
    Table {
        name: String,
        #[serde(default)]
        subcommands: bool,
    },
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    probe: Option<String>,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawTimeouts {
    event_secs: f64,
    ready_secs: f64,
    shutdown_grace_secs: f64,
    drain_secs: f64,
    health_secs: f64,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        Self {
            event_secs: 10.0,
            ready_secs: 5.0,
            shutdown_grace_secs: 5.0,
            drain_secs: 30.0,
            health_secs: 5.0,
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRestart {
    max_attempts: u32,
    stable_secs: f64,
}

impl Default for RawRestart {
    fn default() -> Self {
        Self { max_attempts: 5, stable_secs: 60.0 }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawQueue {
    capacity: usize,
    max_in_flight: usize,
}

impl Default for RawQueue {
    fn default() -> Self {
        Self { capacity: 1000, max_in_flight: 64 }
    }
}

/// The file name of a manifest inside a plugin folder.
pub const MANIFEST_FILE: &str = "plugin.toml";

impl Manifest {
    /// Reads and validates `<dir>/plugin.toml`.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError {
            path: path.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, dir).map_err(|message| ManifestError { path, message })
    }

    /// Parses and validates manifest text for a plugin living in `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<Manifest, String> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| e.to_string().trim().to_owned())?;
        let mut problems = Vec::new();
        let token = |key: &str, value: &str, problems: &mut Vec<String>| {
            if subject::validate_publish(value).is_err() || value.contains('.') {
                problems.push(format!(
                    "{key}: {value:?} must be one word without dots, spaces or wildcards"
                ));
            }
        };
        token("name", &raw.name, &mut problems);
        if raw.version.trim().is_empty() {
            problems.push("version: must not be empty".to_owned());
        }
        if raw.exec.first().is_none_or(|p| p.trim().is_empty()) {
            problems.push("exec: must name a program, e.g. exec = [\"my-plugin\"]".to_owned());
        }
        let commands: Vec<CommandSpec> = raw
            .commands
            .into_iter()
            .map(|c| match c {
                RawCommand::Name(name) => CommandSpec { name, subcommands: false },
                RawCommand::Table { name, subcommands } => CommandSpec { name, subcommands },
            })
            .collect();
        for (i, command) in commands.iter().enumerate() {
            token(&format!("commands[{i}]"), &command.name, &mut problems);
        }
        for (i, pattern) in raw.subscribe.iter().enumerate() {
            if let Err(e) = subject::validate_pattern(pattern) {
                problems.push(format!("subscribe[{i}]: {e}"));
            }
        }
        for (key, value) in [
            ("limits.memory_mb", raw.limits.memory_mb),
            ("limits.cpu_percent", raw.limits.cpu_percent),
        ] {
            if value.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                problems.push(format!("{key}: must be a positive number"));
            }
        }
        let t = &raw.timeouts;
        let mut secs = |key: &str, value: f64| -> Duration {
            match Duration::try_from_secs_f64(value) {
                Ok(d) if !d.is_zero() => d,
                _ => {
                    problems.push(format!("timeouts.{key}: must be a positive number of seconds"));
                    Duration::from_secs(1)
                }
            }
        };
        let timeouts = Timeouts {
            event: secs("event_secs", t.event_secs),
            ready: secs("ready_secs", t.ready_secs),
            shutdown_grace: secs("shutdown_grace_secs", t.shutdown_grace_secs),
            drain: secs("drain_secs", t.drain_secs),
            health: secs("health_secs", t.health_secs),
        };
        let stable_after = match Duration::try_from_secs_f64(raw.restart.stable_secs) {
            Ok(d) => d,
            Err(_) => {
                problems.push("restart.stable_secs: must be a non-negative number".to_owned());
                Duration::from_secs(60)
            }
        };
        if raw.queue.capacity == 0 {
            problems.push("queue.capacity: must be at least 1".to_owned());
        }
        if raw.queue.max_in_flight == 0 {
            problems.push("queue.max_in_flight: must be at least 1".to_owned());
        }
        if let Some(probe) = &raw.health.probe
            && probe.trim().is_empty()
        {
            problems.push("health.probe: must not be empty (leave it out instead)".to_owned());
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let config = match raw.config {
            Some(table) => serde_json::to_value(table).map_err(|e| format!("config: {e}"))?,
            None => serde_json::Value::Object(serde_json::Map::new()),
        };
        Ok(Manifest {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            dir: dir.to_path_buf(),
            exec: raw.exec,
            commands,
            subscribe: raw.subscribe,
            probe: raw.health.probe,
            limits: raw.limits,
            timeouts,
            restart: RestartPolicy { max_attempts: raw.restart.max_attempts, stable_after },
            queue_capacity: raw.queue.capacity,
            max_in_flight: raw.queue.max_in_flight,
            config,
        })
    }

    /// The bus subjects the plugin's slot subscribes to: one per command (plus `<command>.>` for a
    /// command with sub-commands) and the extra subscriptions.
    pub fn subjects(&self) -> Vec<String> {
        let mut subjects = Vec::new();
        for command in &self.commands {
            subjects.push(format!("{}.{}", subject::COMMAND_PREFIX, command.name));
            if command.subcommands {
                subjects.push(format!("{}.{}.>", subject::COMMAND_PREFIX, command.name));
            }
        }
        subjects.extend(self.subscribe.iter().cloned());
        subjects
    }
}

/// Finds every `<dir>/*/plugin.toml`, in name order. A bad manifest is reported and skipped; the
/// others still load. Two manifests with one name: the first (by folder name) wins.
pub fn discover(dir: &Path) -> (Vec<Manifest>, Vec<ManifestError>) {
    let mut manifests: Vec<Manifest> = Vec::new();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(ManifestError {
                path: dir.to_path_buf(),
                message: format!("cannot read plugin directory: {e}"),
            });
            return (manifests, errors);
        }
    };
    let mut folders: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join(MANIFEST_FILE).is_file())
        .collect();
    folders.sort();
    for folder in folders {
        match Manifest::load(&folder) {
            Ok(manifest) => {
                if manifests.iter().any(|m| m.name == manifest.name) {
                    errors.push(ManifestError {
                        path: folder.join(MANIFEST_FILE),
                        message: format!(
                            "name: {:?} is already used by another plugin",
                            manifest.name
                        ),
                    });
                } else {
                    manifests.push(manifest);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    (manifests, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "name = \"dice-roller\"\nversion = \"1.0\"\nexec = [\"rosey-dice-roller\"]\n";

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
    fn errors_name_the_key() {
        let cases = [
            ("name = \"bad name\"\nversion = \"1\"\nexec = [\"x\"]", "name:"),
            ("name = \"a\"\nversion = \"1\"\nexec = []", "exec:"),
            (
                "name = \"a\"\nversion = \"1\"\nexec = [\"x\"]\ncommands = [\"r.oll\"]",
                "commands[0]",
            ),
            (
                "name = \"a\"\nversion = \"1\"\nexec = [\"x\"]\nsubscribe = [\"a..b\"]",
                "subscribe[0]",
            ),
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
            assert!(err.contains(key), "{text:?}: {err}");
        }
    }

    #[test]
    fn config_table_becomes_json() {
        let text = format!("{MINIMAL}[config]\nanswers = 20\nname = \"x\"\n");
        let m = Manifest::parse(&text, Path::new(".")).unwrap();
        assert_eq!(m.config, serde_json::json!({"answers": 20, "name": "x"}));
    }
}
