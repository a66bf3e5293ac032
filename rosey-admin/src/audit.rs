//! The audit trail of admin commands: a row in the storage `audit_log`, an INFO log line, and the
//! `rosey_admin_commands_total{command,user}` counter.

use std::sync::Arc;
use std::time::Duration;

use rosey_core::metrics::MetricsSink;
use rosey_core::storage::{AuditRecord, StorageSink, now_micros};

/// The `user` label of a command from someone who may not use admin commands: one series for all of
/// them (CyTube names cannot contain parentheses), so strangers cannot grow the metric.
pub(crate) const REFUSED_USER: &str = "(refused)";

/// The `command` label of a sub-command that does not exist.
pub(crate) const UNKNOWN_COMMAND: &str = "(unknown)";

/// Longest `arguments` or `detail` kept, in bytes (a chat line is at most 320 characters anyway).
const MAX_FIELD: usize = 2000;

/// How an admin command ended, as the audit log's `outcome` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done (answered, or the confirmed action succeeded).
    Ok,
    /// The user may not use admin commands.
    Denied,
    /// Over the cooldown or the per-minute ceiling.
    RateLimited,
    /// Waiting for the user's `yes`.
    Pending,
    /// The confirmed action failed.
    Failed,
    /// No `yes` came in time.
    Expired,
    /// A newer request of the same user replaced it before the `yes`.
    Cancelled,
    /// Bad usage: an unknown sub-command, a missing or unknown plugin, the admin plugin itself.
    Invalid,
}

impl Outcome {
    /// The word stored and logged.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::RateLimited => "rate_limited",
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Invalid => "invalid",
        }
    }
}

/// One audited step of an admin command.
#[derive(Debug, Clone)]
pub(crate) struct Entry<'a> {
    /// Who asked, as the chat named them.
    pub(crate) actor: &'a str,
    /// Their rank, when known.
    pub(crate) rank: Option<f64>,
    /// The sub-command (`reload`), or what was typed in its place.
    pub(crate) command: &'a str,
    /// The rest of the line (`dice-roller`, `--all`).
    pub(crate) arguments: &'a str,
    /// How it ended.
    pub(crate) outcome: Outcome,
    /// A sentence for people: the answer, the reload report, why it was refused.
    pub(crate) detail: Option<String>,
    /// How long it took.
    pub(crate) duration: Duration,
}

/// Where admin commands are recorded. Cheap to clone; never blocks.
#[derive(Clone, Default)]
pub(crate) struct Auditor {
    pub(crate) node: String,
    pub(crate) storage: Option<StorageSink>,
    pub(crate) metrics: Option<Arc<dyn MetricsSink>>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("node", &self.node)
            .field("storage", &self.storage.is_some())
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

impl Auditor {
    /// Logs `entry` at INFO and queues its `audit_log` row.
    pub(crate) fn record(&self, entry: Entry<'_>) {
        let Entry { actor, rank, command, arguments, outcome, detail, duration } = entry;
        tracing::info!(
            message = "admin command",
            actor,
            rank,
            command,
            arguments,
            outcome = outcome.as_str(),
            duration_ms = duration.as_secs_f64() * 1000.0,
            detail = detail.as_deref(),
        );
        if let Some(storage) = &self.storage {
            storage.audit(AuditRecord {
                time_us: now_micros(),
                node: self.node.clone(),
                actor: actor.to_owned(),
                actor_rank: rank,
                command: clip(command).to_owned(),
                arguments: clip(arguments).to_owned(),
                outcome: outcome.as_str().to_owned(),
                detail: detail.map(|d| clip(&d).to_owned()),
            });
        }
    }

    /// Counts one admin command in `rosey_admin_commands_total{command,user}`.
    pub(crate) fn count(&self, command: &str, user: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.admin_command(command, user);
        }
    }
}

/// `text` cut to [`MAX_FIELD`] bytes at a character boundary.
fn clip(text: &str) -> &str {
    if text.len() <= MAX_FIELD {
        return text;
    }
    let mut end = MAX_FIELD;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
