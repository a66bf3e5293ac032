//! One answer for the whole cluster: the node that takes a `rosey.control.*` request (one node of the
//! queue group) asks every [member](super::members) for its part on `rosey.node.<name>.control.*`
//! (itself directly), waits at most a deadline, and answers with every node's part and the names of
//! the nodes that did not answer.
//!
//! - `list` (and `status` without a name): `{"plugins": [status + "node", …], "nodes": […],
//!   "unanswered": […]}`;
//! - `status {"name"}`: the same with that plugin on every node that runs it, or a `not_found` error
//!   when none does;
//! - `reload {"name"}` and `restart {"name"}`: **rolling**, one node at a time in name order, on every
//!   node that runs the plugin, stopping at the first node where it fails: `{"plugin", "outcome":
//!   "success" | "failed", "reports" (reload) or "statuses" (restart): [… + "node"], "stopped_at",
//!   "skipped", "unanswered"}`. A node's reload is blue-green with its own rollback; the nodes reloaded
//!   before a failure keep the new version (nothing is rolled back across nodes: fix the cause and
//!   reload again, or deploy the old version and reload);
//! - `reload {"all": true}`: every node's rolling reload of all its plugins, node after node, stopping
//!   after the first node with a failure: `{"outcome", "nodes": [{"node", "reports": […]}, …],
//!   "stopped_at", "skipped", "unanswered"}`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use serde_json::{Value, json};

use super::members::node_control_prefix;
use super::{ControlService, Request};

/// Longest wait for a node's part of a `list` or `status` answer.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest wait for one node's reload or restart (health check, drain and rollback included).
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// Every node's answer (in node order), and the nodes that gave none in time.
struct Gathered {
    parts: Vec<(String, Value)>,
    unanswered: Vec<String>,
}

impl Gathered {
    fn nodes(&self) -> Vec<&str> {
        self.parts.iter().map(|(node, _)| node.as_str()).collect()
    }
}

impl ControlService {
    /// The cluster's answer to `action`; see the [module docs](self).
    pub(super) async fn cluster(&self, action: &str, body: Request) -> Value {
        match (action, body.name.clone(), body.all) {
            ("list", _, _) | ("status", None, _) => {
                let gathered = self.gather("list", &Request::default()).await;
                let plugins: Vec<Value> = gathered
                    .parts
                    .iter()
                    .flat_map(|(node, reply)| {
                        let items = reply.as_array().cloned().unwrap_or_default();
                        items.into_iter().map(move |item| with_node(item, node))
                    })
                    .collect();
                json!({
                    "plugins": plugins,
                    "nodes": gathered.nodes(),
                    "unanswered": gathered.unanswered,
                })
            }
            ("status", Some(name), _) => {
                let gathered = self.gather("status", &body).await;
                let plugins = running_on(&gathered);
                if plugins.is_empty() {
                    return not_found(&name, &gathered);
                }
                let plugins: Vec<Value> =
                    plugins.into_iter().map(|(node, status)| with_node(status, &node)).collect();
                json!({
                    "plugins": plugins,
                    "nodes": gathered.nodes(),
                    "unanswered": gathered.unanswered,
                })
            }
            ("reload" | "restart", Some(name), false) => self.rolling(action, &name, &body).await,
            ("reload", None, true) => self.rolling_all(&body).await,
            // Malformed or unknown: the local answer says what is wrong.
            _ => self.run(action, body).await,
        }
    }

    /// Asks every member for its answer to `action` (this node directly), each within
    /// [`GATHER_TIMEOUT`].
    async fn gather(&self, action: &str, body: &Request) -> Gathered {
        let nodes = self.members.known();
        let answers =
            join_all(nodes.iter().map(|node| self.ask(node, action, body, GATHER_TIMEOUT))).await;
        let mut gathered = Gathered { parts: Vec::new(), unanswered: Vec::new() };
        for (node, answer) in nodes.into_iter().zip(answers) {
            match answer {
                Some(reply) => gathered.parts.push((node, reply)),
                None => gathered.unanswered.push(node),
            }
        }
        gathered
    }

    /// One node's answer to `action`, or `None` when it gives none within `timeout`.
    async fn ask(
        &self,
        node: &str,
        action: &str,
        body: &Request,
        timeout: Duration,
    ) -> Option<Value> {
        if node == self.members.node() {
            return Some(self.run(action, body.clone()).await);
        }
        let subject = format!("{}.{action}", node_control_prefix(node));
        let payload = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        match self.bus.request(&subject, payload, timeout).await {
            Ok(reply) => match serde_json::from_slice(reply.payload()) {
                Ok(value) => Some(value),
                Err(error) => {
                    tracing::warn!(message = "unreadable control answer from a node", node, %error);
                    None
                }
            },
            Err(error) => {
                tracing::warn!(message = "a node did not answer a control request", node, action, %error);
                None
            }
        }
    }

    /// `reload` or `restart` of `name` on every node that runs it, one at a time.
    async fn rolling(&self, action: &str, name: &str, body: &Request) -> Value {
        let gathered = self.gather("status", body).await;
        let targets: Vec<String> =
            running_on(&gathered).into_iter().map(|(node, _)| node).collect();
        if targets.is_empty() {
            return not_found(name, &gathered);
        }
        let mut results = Vec::new();
        let mut stopped_at = None;
        for (i, node) in targets.iter().enumerate() {
            let reply = self.ask(node, action, body, ACTION_TIMEOUT).await;
            let reply = reply.unwrap_or_else(|| {
                json!({
                    "error": format!("no answer within {}s", ACTION_TIMEOUT.as_secs()),
                    "code": "timeout",
                })
            });
            let ok = match action {
                "reload" => reply.get("outcome").and_then(Value::as_str) == Some("success"),
                _ => reply.get("error").is_none(),
            };
            results.push(with_node(reply, node));
            if !ok {
                stopped_at = Some((node.clone(), targets[i + 1..].to_vec()));
                break;
            }
        }
        let key = if action == "reload" { "reports" } else { "statuses" };
        let (stopped_at, skipped) = stopped_at.map_or((None, Vec::new()), |(n, s)| (Some(n), s));
        let mut answer = json!({
            "plugin": name,
            "outcome": if stopped_at.is_none() { "success" } else { "failed" },
            "stopped_at": stopped_at,
            "skipped": skipped,
            "unanswered": gathered.unanswered,
        });
        answer[key] = Value::Array(results);
        answer
    }

    /// `reload {"all": true}` on every node, one node after another.
    async fn rolling_all(&self, body: &Request) -> Value {
        let nodes = self.members.known();
        let mut parts = Vec::new();
        let mut unanswered = Vec::new();
        let mut stopped_at = None;
        for (i, node) in nodes.iter().enumerate() {
            let Some(reply) = self.ask(node, "reload", body, ACTION_TIMEOUT).await else {
                unanswered.push(node.clone());
                continue;
            };
            let reports = reply.as_array().cloned().unwrap_or_default();
            let failed = reports.iter().any(|r| r["outcome"] != "success");
            parts.push(json!({ "node": node, "reports": reports }));
            if failed {
                stopped_at = Some((node.clone(), nodes[i + 1..].to_vec()));
                break;
            }
        }
        let (stopped_at, skipped) = stopped_at.map_or((None, Vec::new()), |(n, s)| (Some(n), s));
        json!({
            "outcome": if stopped_at.is_none() { "success" } else { "failed" },
            "nodes": parts,
            "stopped_at": stopped_at,
            "skipped": skipped,
            "unanswered": unanswered,
        })
    }
}

/// The nodes whose `status` answer is a status (not an error), with it.
fn running_on(gathered: &Gathered) -> Vec<(String, Value)> {
    gathered
        .parts
        .iter()
        .filter(|(_, reply)| reply.get("error").is_none())
        .map(|(node, reply)| (node.clone(), reply.clone()))
        .collect()
}

/// The answer when no node that answered knows the plugin.
fn not_found(name: &str, gathered: &Gathered) -> Value {
    json!({
        "error": format!("no node runs a plugin named {name:?}"),
        "code": "not_found",
        "nodes": gathered.nodes(),
        "unanswered": gathered.unanswered,
    })
}

/// `value` with `"node": node` added when it is an object.
fn with_node(mut value: Value, node: &str) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.insert("node".to_owned(), Value::String(node.to_owned()));
    }
    value
}
