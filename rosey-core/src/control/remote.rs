//! [`ClusterControl`]: the [`PluginControl`] of the whole cluster, for the `!admin` commands and the
//! dashboard's actions of a node that shares its bus with others.
//!
//! Reloads and restarts go through the control API (`rosey.control.reload|restart`), so they roll
//! over every node that runs the plugin, one node at a time ([`cluster`](super::cluster)), exactly as
//! an operator's `nats req` would. What this node shows (lists, statuses, the version a reload would
//! start) stays this node's own view.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Value, json};

use super::cluster::ACTION_TIMEOUT;
use crate::bus::EventBus;
use crate::metrics::ReloadOutcome;
use crate::plugin::{
    ControlError, EventCounts, LatencySummary, PluginControl, PluginState, PluginStatus,
    ReloadFailure, ReloadReport, StartStep,
};
use crate::subject::CONTROL_PREFIX;

/// Longest wait for a rolling action over the whole cluster: every node's own limit, for up to this
/// many nodes.
const MAX_NODES_WAITED_FOR: u32 = 8;

/// The cluster's [`PluginControl`]; see the [module docs](self).
pub struct ClusterControl {
    bus: Arc<dyn EventBus>,
    local: Arc<dyn PluginControl>,
}

impl std::fmt::Debug for ClusterControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterControl").finish_non_exhaustive()
    }
}

impl ClusterControl {
    /// Reloads and restarts over `bus`'s control API; everything else from `local`, this node's
    /// plugin manager.
    pub fn new(bus: Arc<dyn EventBus>, local: Arc<dyn PluginControl>) -> Self {
        Self { bus, local }
    }

    /// The control API's answer to `action` on `name`, or the error of not getting one.
    async fn ask(&self, action: &str, name: &str) -> Result<Value, ControlError> {
        let subject = format!("{CONTROL_PREFIX}.{action}");
        let payload = Bytes::from(json!({ "name": name }).to_string());
        let timeout = ACTION_TIMEOUT * MAX_NODES_WAITED_FOR;
        let reply = self.bus.request(&subject, payload, timeout).await.map_err(|err| {
            ControlError::Node { node: "(any)".to_owned(), reason: format!("no answer: {err}") }
        })?;
        let answer: Value = serde_json::from_slice(reply.payload()).map_err(|err| {
            ControlError::Node { node: "(any)".to_owned(), reason: format!("unreadable: {err}") }
        })?;
        match answer["code"].as_str() {
            Some("not_found") => Err(ControlError::NotFound(name.to_owned())),
            Some(_) => Err(ControlError::Node {
                node: "(any)".to_owned(),
                reason: answer["error"].as_str().unwrap_or("refused").to_owned(),
            }),
            None => Ok(answer),
        }
    }
}

#[async_trait]
impl PluginControl for ClusterControl {
    async fn list(&self) -> Vec<PluginStatus> {
        self.local.list().await
    }

    async fn status(&self, name: &str) -> Result<PluginStatus, ControlError> {
        self.local.status(name).await
    }

    async fn pending_version(&self, name: &str) -> Option<String> {
        self.local.pending_version(name).await
    }

    /// The rolling reload on every node: the last node's report (with the whole roll's duration) when
    /// all succeeded; the failing node's failure otherwise, its reason saying where and what became
    /// of the other nodes.
    async fn reload(&self, name: &str) -> Result<ReloadReport, ControlError> {
        let answer = self.ask("reload", name).await?;
        let reports = answer["reports"].as_array().cloned().unwrap_or_default();
        let total: f64 = reports.iter().filter_map(|r| r["duration_seconds"].as_f64()).sum();
        let last = reports.last().cloned().unwrap_or(Value::Null);
        let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_owned();
        if answer["outcome"] == "success" {
            return Ok(ReloadReport {
                name: name.to_owned(),
                from_version: text(&last, "from_version"),
                to_version: text(&last, "to_version"),
                duration: Duration::from_secs_f64(total.max(0.0)),
                outcome: ReloadOutcome::Success,
                failed_step: None,
                reason: None,
            });
        }
        let node = text(&answer, "stopped_at");
        let where_ = fate_of_others(&reports, &answer);
        match StartStep::parse(last["failed_step"].as_str().unwrap_or_default()) {
            Some(step) => Err(ControlError::ReloadFailed(ReloadFailure {
                name: name.to_owned(),
                from_version: text(&last, "from_version"),
                to_version: text(&last, "to_version"),
                step,
                reason: format!("on {node}: {}{where_}", text(&last, "reason")),
                duration: Duration::from_secs_f64(total.max(0.0)),
            })),
            None => Err(ControlError::Node {
                node,
                reason: format!("{}{where_}", text(&last, "error")),
            }),
        }
    }

    /// Each node's reload of all its plugins, node after node ([`PluginControl::reload_all`] of this
    /// node's list, reloaded everywhere).
    async fn reload_all(&self) -> Vec<ReloadReport> {
        let mut reports = Vec::new();
        for status in self.local.list().await {
            let report = match self.reload(&status.name).await {
                Ok(report) => report,
                Err(ControlError::ReloadFailed(failure)) => failure.into(),
                Err(error) => ReloadReport {
                    name: status.name.clone(),
                    from_version: status.version.clone(),
                    to_version: status.version.clone(),
                    duration: Duration::ZERO,
                    outcome: ReloadOutcome::RolledBack,
                    failed_step: None,
                    reason: Some(error.to_string()),
                },
            };
            let failed = report.outcome != ReloadOutcome::Success;
            reports.push(report);
            if failed {
                break;
            }
        }
        reports
    }

    /// The rolling restart on every node: this node's status afterwards (or the last node's, when
    /// this node does not run the plugin).
    async fn restart(&self, name: &str) -> Result<PluginStatus, ControlError> {
        let answer = self.ask("restart", name).await?;
        let statuses = answer["statuses"].as_array().cloned().unwrap_or_default();
        if answer["outcome"] != "success" {
            let node = answer["stopped_at"].as_str().unwrap_or_default().to_owned();
            let last = statuses.last().cloned().unwrap_or(Value::Null);
            let reason = last["error"].as_str().unwrap_or("failed").to_owned();
            return Err(ControlError::Node {
                node,
                reason: format!("{reason}{}", fate_of_others(&statuses, &answer)),
            });
        }
        if let Ok(status) = self.local.status(name).await {
            return Ok(status);
        }
        let last = statuses.last().cloned().unwrap_or(Value::Null);
        Ok(remote_status(name, &last))
    }
}

/// `"; a, b done; c not tried"` after a rolling action stopped: what became of the other nodes.
fn fate_of_others(results: &[Value], answer: &Value) -> String {
    let done: Vec<&str> = results
        .iter()
        .take(results.len().saturating_sub(1))
        .filter_map(|r| r["node"].as_str())
        .collect();
    let skipped: Vec<&str> =
        answer["skipped"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let mut text = String::new();
    if !done.is_empty() {
        text.push_str(&format!("; done on {}", done.join(", ")));
    }
    if !skipped.is_empty() {
        text.push_str(&format!("; not tried on {}", skipped.join(", ")));
    }
    text
}

/// What a status from another node says, as far as the control API's JSON tells.
fn remote_status(name: &str, json: &Value) -> PluginStatus {
    PluginStatus {
        name: name.to_owned(),
        version: json["version"].as_str().unwrap_or_default().to_owned(),
        state: PluginState::parse(json["state"].as_str().unwrap_or_default())
            .unwrap_or(PluginState::Stopped),
        pid: None,
        loaded_at: None,
        uptime: Duration::from_secs_f64(json["uptime_seconds"].as_f64().unwrap_or(0.0).max(0.0)),
        crash_count: json["crash_count"].as_u64().unwrap_or(0),
        restart_count: json["restart_count"].as_u64().unwrap_or(0),
        cpu_percent: json["cpu_percent"].as_f64(),
        memory_mb: json["memory_mb"].as_f64(),
        memory_cap: None,
        memory_limit_mb: None,
        cpu_limit_percent: None,
        events: EventCounts::default(),
        latency: LatencySummary::default(),
        last_error: json["last_error"].as_str().map(str::to_owned),
    }
}
