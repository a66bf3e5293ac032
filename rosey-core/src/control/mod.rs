//! The control API on the bus: `rosey.control.<list|status|reload|restart>` answered through a
//! [`PluginControl`], so an operator can script a deployment from any machine that reaches the bus
//! (`nats req rosey.control.reload '{"name":"dice-roller"}'`). With several nodes on one NATS, one
//! request gets one answer covering every node ([`cluster`] says how: each node's part, with its
//! name, and the nodes that did not answer; reloads and restarts roll from node to node). Each node
//! answers its own part on `rosey.node.<name>.control.<action>`:
//!
//! | subject | request | reply (one node's part) |
//! |---|---|---|
//! | `…list` | anything | `[status, …]` |
//! | `…status` | `{"name": "x"}` or `{}` | `status`, or the list |
//! | `…reload` | `{"name": "x"}` or `{"all": true}` | `report`, or `[report, …]` |
//! | `…restart` | `{"name": "x"}` | `status` |
//!
//! The JSON is this module's own (the wire types below), not the core structs': times are numbers of
//! seconds, versions strings. A `status` is `{name, version, state, pid, loaded_at, uptime_seconds,
//! crash_count, restart_count, cpu_percent, memory_mb, events: {…}, latency_count,
//! latency_p50_seconds, latency_p99_seconds, latency_max_seconds, last_error}`; a reload `report` is
//! `{plugin, from_version, to_version, outcome, failed_step, reason, duration_seconds}` for a success
//! and a rollback alike. A request that cannot be served is answered `{"error": "…", "code": "…"}`.
//! docs/OPERATIONS.md shows each. Anyone who can publish on the bus can use this API: with NATS, the
//! server's credentials and permissions are what protect it.

pub mod cluster;
pub mod members;
mod remote;

pub use members::Members;
pub use remote::ClusterControl;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::task::TaskTracker;

use crate::bus::{BusError, EventBus, EventBusExt, Message};
use crate::plugin::{ControlError, EventCounts, PluginControl, PluginStatus, ReloadReport};
use crate::service::{ServiceHandle, TaskFailed};
use crate::subject::CONTROL_PREFIX;

/// The queue group of control services, so one node answers each request.
pub const CONTROL_GROUP: &str = "rosey-control";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    all: bool,
}

/// A plugin's status as the control API sends it.
#[derive(Debug, Serialize)]
struct StatusJson<'a> {
    name: &'a str,
    version: &'a str,
    state: &'static str,
    pid: Option<u32>,
    /// Seconds since the Unix epoch, when the serving instance became ready.
    loaded_at: Option<f64>,
    uptime_seconds: f64,
    crash_count: u64,
    restart_count: u64,
    cpu_percent: Option<f64>,
    memory_mb: Option<f64>,
    /// How the memory limit is enforced beyond sampling, in words.
    memory_cap: Option<String>,
    events: EventsJson,
    latency_count: u64,
    latency_p50_seconds: f64,
    latency_p99_seconds: f64,
    latency_max_seconds: f64,
    last_error: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct EventsJson {
    received: u64,
    delivered: u64,
    completed: u64,
    failed: u64,
    timed_out: u64,
    overflowed: u64,
    in_flight: u64,
    queued: u64,
    malformed_lines: u64,
    redelivered: u64,
    dropped_replies: u64,
    refused_publishes: u64,
    refused_requests: u64,
}

impl From<&EventCounts> for EventsJson {
    fn from(c: &EventCounts) -> Self {
        Self {
            received: c.received,
            delivered: c.delivered,
            completed: c.completed,
            failed: c.failed,
            timed_out: c.timed_out,
            overflowed: c.overflowed,
            in_flight: c.in_flight,
            queued: c.queued,
            malformed_lines: c.malformed_lines,
            redelivered: c.redelivered,
            dropped_replies: c.dropped_replies,
            refused_publishes: c.refused_publishes,
            refused_requests: c.refused_requests,
        }
    }
}

impl<'a> From<&'a PluginStatus> for StatusJson<'a> {
    fn from(s: &'a PluginStatus) -> Self {
        Self {
            name: &s.name,
            version: &s.version,
            state: s.state.as_str(),
            pid: s.pid,
            loaded_at: s.loaded_at.map(|ms| ms as f64 / 1000.0),
            uptime_seconds: s.uptime.as_secs_f64(),
            crash_count: s.crash_count,
            restart_count: s.restart_count,
            cpu_percent: s.cpu_percent,
            memory_mb: s.memory_mb,
            memory_cap: s.memory_cap.map(|cap| cap.to_string()),
            events: (&s.events).into(),
            latency_count: s.latency.count,
            latency_p50_seconds: s.latency.p50.as_secs_f64(),
            latency_p99_seconds: s.latency.p99.as_secs_f64(),
            latency_max_seconds: s.latency.max.as_secs_f64(),
            last_error: s.last_error.as_deref(),
        }
    }
}

/// A reload report as the control API sends it.
#[derive(Debug, Serialize)]
struct ReportJson<'a> {
    plugin: &'a str,
    from_version: &'a str,
    to_version: &'a str,
    outcome: &'static str,
    failed_step: Option<&'static str>,
    reason: Option<&'a str>,
    duration_seconds: f64,
}

impl<'a> From<&'a ReloadReport> for ReportJson<'a> {
    fn from(r: &'a ReloadReport) -> Self {
        Self {
            plugin: &r.name,
            from_version: &r.from_version,
            to_version: &r.to_version,
            outcome: r.outcome.as_str(),
            failed_step: r.failed_step.map(|s| s.as_str()),
            reason: r.reason.as_deref(),
            duration_seconds: r.duration.as_secs_f64(),
        }
    }
}

/// `{"error": …, "code": …}`, the code a word a script can branch on (`not_found`, `busy`,
/// `reload_failed`…): the control API's answer to a failed request, shared by the dashboard's actions.
pub fn error_json(error: &ControlError) -> Value {
    let code = match error {
        ControlError::NotFound(_) => "not_found",
        ControlError::AlreadyLoaded(_) => "already_loaded",
        ControlError::CommandOwned(_) => "command_owned",
        ControlError::Busy { .. } => "busy",
        ControlError::Superseded { .. } => "superseded",
        ControlError::ShuttingDown(_) => "shutting_down",
        ControlError::StartFailed(_) => "start_failed",
        ControlError::ReloadFailed(_) => "reload_failed",
        ControlError::Failed { .. } => "failed",
        ControlError::Node { .. } => "node_failed",
        ControlError::Timeout { .. } => "timeout",
    };
    json!({ "error": error.to_string(), "code": code })
}

/// A plugin's status as the control API sends it (see docs/OPERATIONS.md).
pub fn status_json(status: &PluginStatus) -> Value {
    to_value(&StatusJson::from(status))
}

fn statuses_json(statuses: &[PluginStatus]) -> Value {
    Value::Array(statuses.iter().map(status_json).collect())
}

/// A reload report as the control API sends it: `{plugin, from_version, to_version, outcome,
/// failed_step, reason, duration_seconds}`.
pub fn report_json(report: &ReloadReport) -> Value {
    to_value(&ReportJson::from(report))
}

/// These types serialize without failing; should one ever not, say so on the wire.
fn to_value<T: Serialize>(reply: &T) -> Value {
    serde_json::to_value(reply).unwrap_or_else(|e| json!({ "error": e.to_string() }))
}

/// Answers control requests on the bus; see the [module docs](self).
pub struct ControlService {
    bus: Arc<dyn EventBus>,
    control: Arc<dyn PluginControl>,
    members: Members,
}

impl std::fmt::Debug for ControlService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlService").finish_non_exhaustive()
    }
}

/// Why the control service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ControlServiceError {
    /// Subscribing to `rosey.control.*` failed.
    #[error("the control API cannot subscribe")]
    Subscribe(#[source] BusError),
    /// The service's task failed.
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// A running [`ControlService`].
pub type ControlHandle = ServiceHandle<ControlServiceError>;

impl ControlService {
    /// A service answering through `control`, for the node named `rosey` (see
    /// [`node`](Self::node)).
    pub fn new(bus: Arc<dyn EventBus>, control: Arc<dyn PluginControl>) -> Self {
        Self { bus, control, members: Members::new("rosey") }
    }

    /// Names this node (`node.name`): its part of every answer carries the name, and other nodes ask
    /// it on `rosey.node.<name>.control.*`. Each node sharing a bus needs its own.
    pub fn node(mut self, name: &str) -> Self {
        self.members = Members::new(name);
        self
    }

    /// The cluster as this service sees it.
    pub fn members(&self) -> Members {
        self.members.clone()
    }

    /// Subscribes and answers in a spawned task until stopped, announcing this node to the others
    /// (heartbeats, and a goodbye when stopped). Each request is answered in its own task (tracked,
    /// and ended when the service stops), so a long reload does not hold up a status request.
    /// Returns once the subscriptions are live and the first heartbeat is out.
    pub async fn start(self) -> Result<ControlHandle, ControlServiceError> {
        let subscribe =
            |result: Result<_, BusError>| result.map_err(ControlServiceError::Subscribe);
        let mut public = subscribe(
            self.bus.queue_subscribe(&format!("{CONTROL_PREFIX}.*"), CONTROL_GROUP).await,
        )?;
        let own = format!("{}.*", members::node_control_prefix(self.members.node()));
        let mut own = subscribe(self.bus.subscribe(&own).await)?;
        let mut beats = subscribe(self.bus.subscribe(members::HEARTBEAT_SUBJECT).await)?;
        let mut leaves = subscribe(self.bus.subscribe(members::LEAVE_SUBJECT).await)?;
        let beat = Bytes::from(serde_json::to_vec(&self.members.beat()).unwrap_or_default());
        let service = Arc::new(self);
        service.announce(members::HEARTBEAT_SUBJECT, &beat).await;
        Ok(ServiceHandle::spawn("control API", move |token| async move {
            let tracker = TaskTracker::new();
            let mut heartbeat = tokio::time::interval(members::HEARTBEAT_EVERY);
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let (request, whole_cluster) = tokio::select! {
                    () = token.cancelled() => break,
                    _ = heartbeat.tick() => {
                        service.announce(members::HEARTBEAT_SUBJECT, &beat).await;
                        continue;
                    }
                    Some(message) = beats.next() => {
                        // A newcomer hears this node at once, so a node that just started knows
                        // the others before it is asked anything.
                        let beat_ = message.decode().ok();
                        if beat_.is_some_and(|b| service.members.heard(&b)) {
                            service.announce(members::HEARTBEAT_SUBJECT, &beat).await;
                        }
                        continue;
                    }
                    Some(message) = leaves.next() => {
                        if let Ok(beat) = message.decode() {
                            service.members.left(&beat);
                        }
                        continue;
                    }
                    request = public.next() => match request {
                        Some(request) => (request, true),
                        None => break,
                    },
                    request = own.next() => match request {
                        Some(request) => (request, false),
                        None => break,
                    },
                };
                let service = service.clone();
                let token = token.clone();
                tracker.spawn(async move {
                    tokio::select! {
                        () = token.cancelled() => {}
                        () = service.answer(request, whole_cluster) => {}
                    }
                });
            }
            service.announce(members::LEAVE_SUBJECT, &beat).await;
            tracker.close();
            tracker.wait().await;
            Ok(())
        }))
    }

    /// Publishes a heartbeat or a goodbye (a failure is logged: the next beat tries again).
    async fn announce(&self, subject: &str, beat: &Bytes) {
        if let Err(err) = self.bus.publish(subject, beat.clone()).await {
            tracing::debug!(message = "cannot announce this node", subject, %err);
        }
    }

    /// Answers one request: for the whole cluster (`rosey.control.*`) or this node's part.
    async fn answer(&self, request: Message, whole_cluster: bool) {
        let action = request.subject().rsplit('.').next().unwrap_or_default().to_owned();
        let body: Result<Request, _> = if request.payload().iter().all(u8::is_ascii_whitespace) {
            Ok(Request::default())
        } else {
            serde_json::from_slice(request.payload())
        };
        let reply = match body {
            Err(err) => json!({ "error": format!("bad request: {err}"), "code": "bad_request" }),
            Ok(body) if whole_cluster => self.cluster(&action, body).await,
            Ok(body) => self.run(&action, body).await,
        };
        let ok = reply.get("error").is_none() && reply.get("outcome") != Some(&json!("failed"));
        tracing::info!(message = "control request", action = %action, whole_cluster, ok);
        let payload = Bytes::from(reply.to_string());
        if let Err(err) = self.bus.respond(&request, payload).await {
            tracing::warn!(message = "cannot answer control request", %err);
        }
    }

    async fn run(&self, action: &str, body: Request) -> Value {
        match (action, body.name, body.all) {
            ("list", _, _) | ("status", None, _) => statuses_json(&self.control.list().await),
            ("status", Some(name), _) => match self.control.status(&name).await {
                Ok(status) => status_json(&status),
                Err(err) => error_json(&err),
            },
            ("reload", _, true) => {
                let reports = self.control.reload_all().await;
                Value::Array(reports.iter().map(report_json).collect())
            }
            ("reload", Some(name), false) => match self.control.reload(&name).await {
                Ok(report) => report_json(&report),
                Err(ControlError::ReloadFailed(failure)) => report_json(&failure.into()),
                Err(err) => error_json(&err),
            },
            ("restart", Some(name), _) => match self.control.restart(&name).await {
                Ok(status) => status_json(&status),
                Err(err) => error_json(&err),
            },
            ("reload" | "restart", None, _) => {
                json!({ "error": "say which plugin: {\"name\": \"…\"}", "code": "bad_request" })
            }
            (other, _, _) => json!({
                "error": format!("unknown control action {other:?}; try list, status, reload or restart"),
                "code": "bad_request",
            }),
        }
    }
}
