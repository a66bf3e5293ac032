//! Reading a manifest's TOML table key by key, so that every problem is found, not only the first.

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{
    CommandSpec, DEFAULT_MAX_IN_FLIGHT, DEFAULT_QUEUE_CAPACITY, HELP_TEXT_MAX_CHARS, Limits,
    Manifest, ManifestProblem, RestartPolicy, Timeouts,
};
use crate::subject;

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (before.matches('\n').count() + 1, before[line_start..].chars().count() + 1)
}

/// Reads every key of the manifest, recording each problem; `None` when a required key is missing
/// or unusable (then `problems` says why).
pub(super) fn parse_table(
    table: toml::Table,
    dir: &Path,
    problems: &mut Vec<ManifestProblem>,
) -> Option<Manifest> {
    let mut top = Section::new(String::new(), table);
    let name: Option<String> = top.required("name", "name = \"my-plugin\"");
    if let Some(name) = &name {
        top.token("name", name);
    }
    let version: Option<String> = top.required("version", "version = \"1.0.0\"");
    if version.as_ref().is_some_and(|v| v.trim().is_empty()) {
        top.problem("version", "must not be empty");
    }
    let description: String = top.take("description").unwrap_or_default();
    let exec: Option<Vec<String>> = top.required("exec", "exec = [\"my-plugin\"]");
    if exec.as_ref().is_some_and(|e| e.first().is_none_or(|p| p.trim().is_empty())) {
        top.problem("exec", "must name a program, e.g. exec = [\"my-plugin\"]");
    }
    let commands = parse_commands(&mut top);
    let subscribe: Vec<String> = top.take("subscribe").unwrap_or_default();
    for (i, pattern) in subscribe.iter().enumerate() {
        if let Err(e) = subject::validate_pattern(pattern) {
            top.problem(&format!("subscribe[{i}]"), e.to_string());
        }
    }

    let publish: Vec<String> = top.take("publish").unwrap_or_default();
    for (i, pattern) in publish.iter().enumerate() {
        if let Err(why) = super::super::publish::check_declared(pattern) {
            top.problem(&format!("publish[{i}]"), why);
        }
    }
    let redeliver_on_crash: bool = top.take("redeliver_on_crash").unwrap_or(true);
    let subscribe_every_node: bool = top.take("subscribe_every_node").unwrap_or(false);

    let mut health = top.section("health");
    let probe: Option<String> = health.take("probe");
    if probe.as_ref().is_some_and(|p| p.trim().is_empty()) {
        health.problem("probe", "must not be empty (leave it out instead)");
    }
    health.close(&mut top.problems);

    let mut section = top.section("limits");
    let d = Limits::default();
    let limits = Limits {
        memory_mb: section.positive("memory_mb"),
        cpu_percent: section.positive("cpu_percent"),
        replies_per_event: section.at_least_one("replies_per_event", d.replies_per_event),
        reply_bytes_per_event: section
            .at_least_one("reply_bytes_per_event", d.reply_bytes_per_event),
        requests_per_second: section.at_least_one("requests_per_second", d.requests_per_second),
    };
    section.close(&mut top.problems);

    let mut section = top.section("timeouts");
    let d = Timeouts::default();
    let timeouts = Timeouts {
        event: section.secs("event_secs", d.event, false),
        ready: section.secs("ready_secs", d.ready, false),
        shutdown_grace: section.secs("shutdown_grace_secs", d.shutdown_grace, false),
        drain: section.secs("drain_secs", d.drain, false),
        health: section.secs("health_secs", d.health, false),
    };
    section.close(&mut top.problems);

    let mut section = top.section("restart");
    let d = RestartPolicy::default();
    let restart = RestartPolicy {
        max_attempts: section.take("max_attempts").unwrap_or(d.max_attempts),
        stable_after: section.secs("stable_secs", d.stable_after, true),
    };
    section.close(&mut top.problems);

    let mut section = top.section("queue");
    let queue_capacity = section.at_least_one("capacity", DEFAULT_QUEUE_CAPACITY);
    let max_in_flight = section.at_least_one("max_in_flight", DEFAULT_MAX_IN_FLIGHT);
    section.close(&mut top.problems);

    let config = match top.take::<toml::Table>("config") {
        Some(table) => match serde_json::to_value(table) {
            Ok(value) => value,
            Err(e) => {
                top.problem("config", e.to_string());
                serde_json::Value::Null
            }
        },
        None => serde_json::Value::Object(serde_json::Map::new()),
    };
    top.close(problems);

    Some(Manifest {
        name: name?,
        version: version?,
        description,
        dir: dir.to_path_buf(),
        exec: exec?,
        commands,
        subscribe,
        subscribe_every_node,
        publish,
        redeliver_on_crash,
        probe,
        limits,
        timeouts,
        restart,
        queue_capacity,
        max_in_flight,
        config,
    })
}

/// `commands = ["roll", { name = "admin", subcommands = true, description = "…", usage = "…" }]`.
fn parse_commands(top: &mut Section) -> Vec<CommandSpec> {
    let items: Vec<toml::Value> = top.take("commands").unwrap_or_default();
    let mut commands = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let key = format!("commands[{i}]");
        let command = match item {
            toml::Value::String(name) => Some(CommandSpec::new(name)),
            toml::Value::Table(table) => {
                let mut section = Section::new(key.clone(), table);
                let name: Option<String> = section.required("name", "name = \"roll\"");
                let subcommands = section.take("subcommands").unwrap_or(false);
                let description = section.help_text("description");
                let usage = section.help_text("usage");
                section.close(&mut top.problems);
                name.map(|name| CommandSpec { name, subcommands, description, usage })
            }
            _ => {
                top.problem(
                    &key,
                    "must be a word or a table such as { name = \"admin\", subcommands = true }",
                );
                None
            }
        };
        if let Some(command) = command {
            top.token(&key, &command.name);
            commands.push(command);
        }
    }
    commands
}

/// One TOML table being read: what was taken, what is wrong, and what is left (unknown keys).
struct Section {
    /// `""` at the top level, else the table's key (`timeouts`, `commands[1]`).
    prefix: String,
    table: toml::Table,
    known: Vec<&'static str>,
    problems: Vec<ManifestProblem>,
}

impl Section {
    fn new(prefix: String, table: toml::Table) -> Self {
        Self { prefix, table, known: Vec::new(), problems: Vec::new() }
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let key =
            if self.prefix.is_empty() { key.to_owned() } else { format!("{}.{key}", self.prefix) };
        self.problems.push(ManifestProblem { key, message: message.into() });
    }

    /// The value of `key`, if present and of type `T`; a problem if present and not.
    fn take<T: DeserializeOwned>(&mut self, key: &'static str) -> Option<T> {
        self.known.push(key);
        let value = self.table.remove(key)?;
        match value.try_into::<T>() {
            Ok(value) => Some(value),
            Err(e) => {
                self.problem(key, e.message().trim().to_owned());
                None
            }
        }
    }

    /// Like [`take`](Self::take), and a problem (with an `example`) when the key is missing.
    fn required<T: DeserializeOwned>(&mut self, key: &'static str, example: &str) -> Option<T> {
        if !self.table.contains_key(key) {
            self.known.push(key);
            self.problem(key, format!("missing; it is required, e.g. {example}"));
            return None;
        }
        self.take(key)
    }

    /// The sub-table `key` (empty when absent).
    fn section(&mut self, key: &'static str) -> Section {
        let prefix =
            if self.prefix.is_empty() { key.to_owned() } else { format!("{}.{key}", self.prefix) };
        Section::new(prefix, self.take(key).unwrap_or_default())
    }

    /// A problem unless `value` is one subject token (a plugin or command name).
    fn token(&mut self, key: &str, value: &str) {
        if subject::validate_publish(value).is_err() || value.contains('.') {
            self.problem(
                key,
                format!("{value:?} must be one word without dots, spaces or wildcards"),
            );
        }
    }

    /// A command's `description` or `usage`: one line of at most [`HELP_TEXT_MAX_CHARS`]
    /// characters, not blank; trimmed.
    fn help_text(&mut self, key: &'static str) -> Option<String> {
        let text: String = self.take(key)?;
        let text = text.trim();
        if text.is_empty() {
            self.problem(key, "must not be empty (leave it out instead)");
        } else if text.chars().any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')) {
            self.problem(key, "must be one line, without tabs or other control characters");
        } else if text.chars().count() > HELP_TEXT_MAX_CHARS {
            let chars = text.chars().count();
            self.problem(key, format!("is {chars} characters; at most {HELP_TEXT_MAX_CHARS}"));
        } else {
            return Some(text.to_owned());
        }
        None
    }

    fn positive(&mut self, key: &'static str) -> Option<f64> {
        let value: f64 = self.take(key)?;
        if value > 0.0 && value.is_finite() {
            Some(value)
        } else {
            self.problem(key, "must be a positive number");
            None
        }
    }

    fn secs(&mut self, key: &'static str, default: Duration, zero_ok: bool) -> Duration {
        let Some(value) = self.take::<f64>(key) else { return default };
        match Duration::try_from_secs_f64(value) {
            Ok(d) if zero_ok || !d.is_zero() => d,
            _ if zero_ok => {
                self.problem(key, "must be a non-negative number of seconds");
                default
            }
            _ => {
                self.problem(key, "must be a positive number of seconds");
                default
            }
        }
    }

    fn at_least_one(&mut self, key: &'static str, default: usize) -> usize {
        match self.take(key) {
            Some(0) => {
                self.problem(key, "must be at least 1");
                default
            }
            Some(n) => n,
            None => default,
        }
    }

    /// Reports the keys nobody took as unknown, then hands every problem over.
    fn close(mut self, problems: &mut Vec<ManifestProblem>) {
        let unknown: Vec<String> = self.table.keys().cloned().collect();
        for key in unknown {
            let message = match closest(&key, &self.known) {
                Some(known) => format!("unknown key; did you mean {known:?}?"),
                None => "unknown key".to_owned(),
            };
            self.problem(&key, message);
        }
        problems.append(&mut self.problems);
    }
}

/// The known key closest to `key`, if close enough to be a likely typo.
fn closest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    known
        .iter()
        .map(|candidate| (strsim::jaro_winkler(key, candidate), *candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}
