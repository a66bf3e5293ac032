//! Which nodes share the bus: every node's control service announces itself on
//! [`HEARTBEAT_SUBJECT`] every [`HEARTBEAT_EVERY`] and says goodbye on [`LEAVE_SUBJECT`] when it stops;
//! a node heard from within [`MEMBER_TTL`] is a member. The control API asks every member for its
//! part of an answer, and names those that did not give it.
//!
//! Membership is only as good as heartbeats: a node killed without a goodbye stays a member for
//! [`MEMBER_TTL`] (its requests then go unanswered and are reported as such), and a node cut off from
//! NATS stops being one as soon as its heartbeats stop arriving.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Heartbeats: `{"node": "<name>", "instance": "<random id>"}`.
pub const HEARTBEAT_SUBJECT: &str = "rosey.node.heartbeat";

/// Goodbyes of nodes stopping: `{"node": "<name>", "instance": "<random id>"}`.
pub const LEAVE_SUBJECT: &str = "rosey.node.leave";

/// How often a node announces itself.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// How long a node counts as a member after its last heartbeat: three heartbeats and a half, so one
/// or two lost or late ones do not drop it.
pub const MEMBER_TTL: Duration = Duration::from_millis(3_500);

/// The subject prefix of one node's own control requests: `rosey.node.<name>.control.<action>`.
pub fn node_control_prefix(node: &str) -> String {
    format!("rosey.node.{node}.control")
}

/// A heartbeat or a goodbye.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Beat {
    pub(super) node: String,
    /// Tells two processes that were given the same name apart.
    pub(super) instance: String,
}

/// The members of the cluster as this node sees them; cheap to clone.
#[derive(Debug, Clone)]
pub struct Members {
    node: Arc<str>,
    instance: Arc<str>,
    seen: Arc<Mutex<BTreeMap<String, Instant>>>,
    /// Instances of other processes heard under this node's own name (warned about once each).
    twins: Arc<Mutex<Vec<String>>>,
}

impl Members {
    /// The view of node `node`, which knows only itself so far.
    pub fn new(node: &str) -> Self {
        Self {
            node: Arc::from(node),
            instance: Arc::from(crate::random::random_hex().as_str()),
            seen: Arc::default(),
            twins: Arc::default(),
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Every member, this node included, in name order.
    pub fn known(&self) -> Vec<String> {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        seen.retain(|_, last| now.saturating_duration_since(*last) < MEMBER_TTL);
        let mut known: Vec<String> = seen.keys().cloned().collect();
        if !seen.contains_key(&*self.node) {
            known.push(self.node.to_string());
            known.sort();
        }
        known
    }

    /// This node's heartbeat.
    pub(super) fn beat(&self) -> Beat {
        Beat { node: self.node.to_string(), instance: self.instance.to_string() }
    }

    /// A heartbeat arrived; whether it comes from a node that was no member (which should then hear
    /// this node's heartbeat at once rather than after up to a second).
    pub(super) fn heard(&self, beat: &Beat) -> bool {
        if beat.node == *self.node && beat.instance != *self.instance {
            let mut twins = self.twins.lock();
            if !twins.contains(&beat.instance) {
                twins.push(beat.instance.clone());
                tracing::error!(
                    message = "another node uses this node's name; give each node its own node.name",
                    node = %self.node
                );
            }
        }
        let now = Instant::now();
        let previous = self.seen.lock().insert(beat.node.clone(), now);
        beat.node != *self.node
            && previous.is_none_or(|last| now.saturating_duration_since(last) >= MEMBER_TTL)
    }

    /// A node said goodbye.
    pub(super) fn left(&self, beat: &Beat) {
        if beat.node != *self.node {
            self.seen.lock().remove(&beat.node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_those_heard_from_lately_and_always_this_node() {
        let members = Members::new("b");
        assert_eq!(members.known(), ["b"]);
        let beat = |node: &str| Beat { node: node.into(), instance: "x".into() };
        assert!(members.heard(&beat("c")), "a newcomer");
        assert!(!members.heard(&beat("c")), "known already");
        members.heard(&beat("a"));
        assert_eq!(members.known(), ["a", "b", "c"]);
        members.left(&beat("a"));
        members.left(&beat("b"));
        assert_eq!(members.known(), ["b", "c"], "a node cannot be told to leave itself");
        members.seen.lock().insert("c".into(), Instant::now() - MEMBER_TTL);
        assert_eq!(members.known(), ["b"], "silent for the TTL: gone");
    }
}
