//! Plugin manifests (`<plugin_dir>/<name>/plugin.toml`) and their discovery.
//!
//! ```toml
//! name = "dice-roller"
//! version = "1.0.0"
//! exec = ["rosey-dice-roller"]          # program and arguments
//! commands = ["roll", { name = "flip", description = "Flip a coin", usage = "!flip" }]
//!                                       # or { name = "admin", subcommands = true }
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
//! These defaults are [`Timeouts::default`], [`RestartPolicy::default`] and the ones
//! [`Manifest::in_process`] uses.
//!
//! A manifest with mistakes reports all of them at once, each naming its key:
//!
//! ```
//! use std::path::Path;
//! use rosey_core::plugin::Manifest;
//!
//! let err = Manifest::parse("name = \"my plugin\"\nexec = []\nexe = 1\n", Path::new("plugins/x"))
//!     .unwrap_err();
//! let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
//! assert_eq!(keys, ["name", "version", "exec", "exe"]);
//! assert!(err.to_string().starts_with("plugins/x/plugin.toml: name: \"my plugin\" must be one word"));
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::BoxError;
use crate::subject;

mod parse;

/// The file name of a manifest inside a plugin folder.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// Events that may wait for a plugin unless its manifest says otherwise.
const DEFAULT_QUEUE_CAPACITY: usize = 1000;
/// Events handed to one instance at a time unless its manifest says otherwise.
const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// A plugin that could not be loaded: which file, and why.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest (or the plugin directory) could not be read; the cause says why.
    #[error("cannot read {}", path.display())]
    Unreadable {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not valid TOML. Nothing else is checked until it is.
    #[error("{}: invalid TOML at line {line}, column {column}: {message}", path.display())]
    Syntax {
        /// The manifest file.
        path: PathBuf,
        /// Where the mistake is, counting from 1.
        line: usize,
        /// Where on the line, in characters, counting from 1.
        column: usize,
        /// What the TOML parser expected.
        message: String,
    },
    /// The manifest is valid TOML but wrong; lists every problem found, each naming its key.
    #[error("{}: {}", path.display(), join(problems))]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// Every problem, in file order as far as possible. Never empty.
        problems: Vec<ManifestProblem>,
    },
    /// The manifest is valid but the plugin could not be added (e.g. its name or a command is
    /// taken); the message and the cause say why.
    #[error("{}: plugin not added: {source}", path.display())]
    NotAdded {
        /// The manifest file.
        path: PathBuf,
        /// Why the plugin was refused.
        #[source]
        source: BoxError,
    },
}

fn join(problems: &[ManifestProblem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl ManifestError {
    /// The manifest file (or plugin directory) concerned.
    pub fn path(&self) -> &Path {
        match self {
            Self::Unreadable { path, .. }
            | Self::Syntax { path, .. }
            | Self::Invalid { path, .. }
            | Self::NotAdded { path, .. } => path,
        }
    }

    /// The problems of an [`Invalid`](Self::Invalid) manifest; empty for the other kinds.
    pub fn problems(&self) -> &[ManifestProblem] {
        match self {
            Self::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

/// One mistake in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestProblem {
    /// The key concerned, dotted for nested ones: `name`, `timeouts.event_secs`, `commands[1]`.
    pub key: String,
    /// What is wrong with it and, where it helps, what would be right.
    pub message: String,
}

impl std::fmt::Display for ManifestProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// One command a plugin owns.
///
/// ```
/// use rosey_core::plugin::CommandSpec;
///
/// let admin = CommandSpec::new("admin")
///     .with_subcommands()
///     .with_description("Manage the plugins")
///     .with_usage("!admin help");
/// assert!(admin.subcommands);
/// assert_eq!(admin.usage.as_deref(), Some("!admin help"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The command word, without prefix.
    pub name: String,
    /// Whether the second word of the chat line selects a sub-command (and so a subject token).
    pub subcommands: bool,
    /// One line saying what the command does, shown by `!help`; the plugin's description stands in
    /// when absent. At most 200 characters in a manifest.
    pub description: Option<String>,
    /// How to use it, e.g. `!roll 2d6+1`, shown by `!help <command>`. At most 200 characters in a
    /// manifest.
    pub usage: Option<String>,
}

/// The longest `description` or `usage` a manifest may give a command, in characters.
const HELP_TEXT_MAX_CHARS: usize = 200;

impl CommandSpec {
    /// A command without sub-commands or help texts.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), subcommands: false, description: None, usage: None }
    }

    /// The same command, whose second word selects a sub-command.
    #[must_use]
    pub fn with_subcommands(self) -> Self {
        Self { subcommands: true, ..self }
    }

    /// The same command, with the one line `!help` says about it.
    #[must_use]
    pub fn with_description(self, description: impl Into<String>) -> Self {
        Self { description: Some(description.into()), ..self }
    }

    /// The same command, with the usage `!help <command>` shows.
    #[must_use]
    pub fn with_usage(self, usage: impl Into<String>) -> Self {
        Self { usage: Some(usage.into()), ..self }
    }
}

impl From<&str> for CommandSpec {
    /// A command without sub-commands.
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for CommandSpec {
    /// A command without sub-commands.
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

/// Resource limits. A plugin over its memory or CPU limit on two samples in a row is killed as a
/// crash (by default there is none); what one event may say is always bounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Resident memory limit in MB (MiB).
    pub memory_mb: Option<f64>,
    /// CPU limit in percent of one core.
    pub cpu_percent: Option<f64>,
    /// Reply messages one event may send to the chat (default 10); the rest are dropped and counted.
    pub replies_per_event: usize,
    /// Bytes of reply text one event may send to the chat (default 65 536); the rest is dropped and
    /// counted.
    pub reply_bytes_per_event: usize,
    /// Requests (`rosey.db.kv.*`) the plugin may make per second, on average over a second (default
    /// 1 000); more are answered at once with an error, so a flood of requests costs the host little.
    pub requests_per_second: usize,
}

/// Requests a plugin may make per second by default.
const DEFAULT_REQUESTS_PER_SECOND: usize = 1000;

/// Reply messages one event may send by default.
const DEFAULT_REPLIES_PER_EVENT: usize = 10;
/// Bytes of reply text one event may send by default.
const DEFAULT_REPLY_BYTES_PER_EVENT: usize = 64 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mb: None,
            cpu_percent: None,
            replies_per_event: DEFAULT_REPLIES_PER_EVENT,
            reply_bytes_per_event: DEFAULT_REPLY_BYTES_PER_EVENT,
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
        }
    }
}

/// Timeouts of one plugin. The default is the documented one, field by field.
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

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            event: Duration::from_secs(10),
            ready: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            drain: Duration::from_secs(30),
            health: Duration::from_secs(5),
        }
    }
}

/// The supervisor's restart policy for one plugin. The default is the documented one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restarts allowed without a stable run before the plugin is FAILED (default 5).
    pub max_attempts: u32,
    /// How long an instance must run to count as stable and reset the attempts (default 60 s).
    pub stable_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self { max_attempts: 5, stable_after: Duration::from_secs(60) }
    }
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
    /// Whether every node's instance receives each event of [`subscribe`](Self::subscribe) (plain
    /// subscriptions), rather than one instance per event across the nodes sharing a bus (a queue
    /// group named after the plugin, the default). For a plugin that keeps state per node, such as the
    /// admin plugin's pending confirmations: the `yes` must reach the node that asked. Commands are
    /// always handled once.
    pub subscribe_every_node: bool,
    /// Extra subjects (patterns) it may publish on, besides `cytube.chat.send`, `cytube.pm.send` and
    /// `rosey.plugin.<its name>.>`; never a reserved one (see [`PublishRules`](super::PublishRules)).
    pub publish: Vec<String>,
    /// Whether an event the plugin died on before replying is delivered once more to the restarted
    /// instance (default true; turn off for plugins whose events have side effects).
    pub redeliver_on_crash: bool,
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

impl Manifest {
    /// A manifest built in code, for a plugin of the
    /// [`InProcessRuntime`](super::InProcessRuntime): no folder, no `exec`, no limits, an empty
    /// `config`, and the documented defaults for timeouts, restart policy and queue. Change fields
    /// afterwards as needed. `name` and each command must be one word without dots, spaces or
    /// wildcards, as in a `plugin.toml`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rosey_core::plugin::Manifest;
    ///
    /// let manifest = Manifest::in_process("greeter", "1.0.0", ["hello", "bye"]);
    /// assert_eq!(manifest.subjects(), ["rosey.command.hello", "rosey.command.bye"]);
    /// assert_eq!(manifest.timeouts.event, Duration::from_secs(10));
    /// ```
    pub fn in_process<C: Into<CommandSpec>>(
        name: impl Into<String>,
        version: impl Into<String>,
        commands: impl IntoIterator<Item = C>,
    ) -> Manifest {
        Manifest {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            dir: PathBuf::new(),
            exec: Vec::new(),
            commands: commands.into_iter().map(Into::into).collect(),
            subscribe: Vec::new(),
            publish: Vec::new(),
            subscribe_every_node: false,
            redeliver_on_crash: true,
            probe: None,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            restart: RestartPolicy::default(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            config: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// Reads and validates `<dir>/plugin.toml`. Blocks on file I/O: async code uses
    /// [`load_async`](Self::load_async).
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|source| ManifestError::Unreadable { path, source })?;
        Self::parse(&text, dir)
    }

    /// [`load`](Self::load) on the blocking thread pool, so no async worker thread waits for the disk.
    pub async fn load_async(dir: &Path) -> Result<Manifest, ManifestError> {
        let owned = dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::load(&owned)).await.unwrap_or_else(|join| {
            Err(ManifestError::Unreadable {
                path: dir.join(MANIFEST_FILE),
                source: io::Error::other(join),
            })
        })
    }

    /// Parses and validates manifest text for a plugin living in `dir`. Reports every problem in
    /// the text ([`ManifestError::Invalid`]), or the first TOML syntax error
    /// ([`ManifestError::Syntax`]).
    pub fn parse(text: &str, dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let table: toml::Table = text.parse().map_err(|err: toml::de::Error| {
            let (line, column) =
                parse::line_and_column(text, err.span().map_or(0, |span| span.start));
            ManifestError::Syntax {
                path: path.clone(),
                line,
                column,
                message: err.message().trim().to_owned(),
            }
        })?;
        let mut problems = Vec::new();
        let parsed = parse::parse_table(table, dir, &mut problems);
        match parsed {
            Some(manifest) if problems.is_empty() => Ok(manifest),
            _ => Err(ManifestError::Invalid { path, problems }),
        }
    }

    /// The bus subjects the plugin's slot subscribes to: one per command (plus `<command>.>` for a
    /// command with sub-commands) and the extra subscriptions.
    pub fn subjects(&self) -> Vec<String> {
        let mut subjects = self.command_subjects();
        subjects.extend(self.subscribe.iter().cloned());
        subjects
    }

    /// The subjects of its commands: `rosey.command.<name>` (and `….>` for one with sub-commands).
    pub fn command_subjects(&self) -> Vec<String> {
        let mut subjects = Vec::new();
        for command in &self.commands {
            subjects.push(format!("{}.{}", subject::COMMAND_PREFIX, command.name));
            if command.subcommands {
                subjects.push(format!("{}.{}.>", subject::COMMAND_PREFIX, command.name));
            }
        }
        subjects
    }
}

/// Finds every `<dir>/*/plugin.toml`, in name order. A bad manifest is reported and skipped; the
/// others still load. Two manifests with one name: the first (by folder name) wins. Blocks on file
/// I/O: async code uses [`discover_async`].
pub fn discover(dir: &Path) -> (Vec<Manifest>, Vec<ManifestError>) {
    let mut manifests: Vec<Manifest> = Vec::new();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) => {
            errors.push(ManifestError::Unreadable { path: dir.to_path_buf(), source });
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
                    errors.push(ManifestError::Invalid {
                        path: folder.join(MANIFEST_FILE),
                        problems: vec![ManifestProblem {
                            key: "name".to_owned(),
                            message: format!(
                                "{:?} is already used by another plugin",
                                manifest.name
                            ),
                        }],
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

/// [`discover`] on the blocking thread pool, so no async worker thread waits for the disk.
pub async fn discover_async(dir: &Path) -> (Vec<Manifest>, Vec<ManifestError>) {
    let owned = dir.to_path_buf();
    tokio::task::spawn_blocking(move || discover(&owned)).await.unwrap_or_else(|join| {
        let error =
            ManifestError::Unreadable { path: dir.to_path_buf(), source: io::Error::other(join) };
        (Vec::new(), vec![error])
    })
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests;
