//! The node's health: what each part reports about itself, and when the node started.
//!
//! Components report into a shared [`HealthRegistry`] under a name ([`BUS`], [`CONNECTOR`],
//! [`PLUGINS`]; storage later): healthy or not, with a detail a person can act on. A
//! [`snapshot`](HealthRegistry::snapshot) says whether the node is ready (every component reported and
//! healthy) and why not; it backs `/readyz` and the bot's uptime. Components appear in the order they
//! were first reported (or [expected](HealthRegistry::expect)).
//!
//! ```
//! use rosey_core::health::{self, HealthRegistry};
//!
//! let health = HealthRegistry::new();
//! health.expect(health::CONNECTOR);
//! health.report(health::BUS, true, "memory");
//! assert!(!health.snapshot().ready, "the connector has not joined yet");
//! health.report(health::CONNECTOR, true, "joined mychannel as RoseyBot");
//! assert!(health.snapshot().ready);
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

/// The event bus: healthy once connected.
pub const BUS: &str = "bus";
/// The chat connector: healthy while joined; the detail says where, or why not (reconnecting…).
pub const CONNECTOR: &str = "connector";
/// The database: healthy while it takes records; the detail says how many wait when it does not.
pub const STORAGE: &str = "storage";
/// The plugins: healthy when every plugin runs; the detail says `running N/M` and names the others.
pub const PLUGINS: &str = "plugins";

/// One component's health as last reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentHealth {
    /// The component (`bus`, `connector`, `plugins`…).
    pub name: String,
    /// Whether it works as it should.
    pub healthy: bool,
    /// What it is doing, or why it is not healthy (`joined mychannel as RoseyBot`,
    /// `reconnecting: connection lost: reset`).
    pub detail: String,
}

/// The node's health at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSnapshot {
    /// True when at least one component reported and every component is healthy.
    pub ready: bool,
    /// Every component, in the order they were first reported.
    pub components: Vec<ComponentHealth>,
}

#[derive(Debug)]
struct Inner {
    started_at: SystemTime,
    started: Instant,
    components: watch::Sender<Vec<ComponentHealth>>,
}

/// Where the node's components report their health; cloning shares the registry. See the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct HealthRegistry {
    inner: Arc<Inner>,
}

impl Default for HealthRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthRegistry {
    /// An empty registry; the node's start time is now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                started_at: SystemTime::now(),
                started: Instant::now(),
                components: watch::Sender::new(Vec::new()),
            }),
        }
    }

    /// When the node started (when the registry was created), by the wall clock.
    pub fn started_at(&self) -> SystemTime {
        self.inner.started_at
    }

    /// How long the node has been up, by the monotonic clock.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Records `name` as not healthy yet (`not started`), so the node is not ready before it reports.
    /// Does nothing if `name` already reported.
    pub fn expect(&self, name: &str) {
        self.inner.components.send_if_modified(|components| {
            if components.iter().any(|c| c.name == name) {
                return false;
            }
            components.push(ComponentHealth {
                name: name.to_owned(),
                healthy: false,
                detail: "not started".to_owned(),
            });
            true
        });
    }

    /// Records the health of `name`, replacing what it reported before.
    pub fn report(&self, name: &str, healthy: bool, detail: impl Into<String>) {
        let detail = detail.into();
        self.inner.components.send_if_modified(|components| {
            match components.iter_mut().find(|c| c.name == name) {
                Some(c) if c.healthy == healthy && c.detail == detail => false,
                Some(c) => {
                    c.healthy = healthy;
                    c.detail = detail;
                    true
                }
                None => {
                    components.push(ComponentHealth { name: name.to_owned(), healthy, detail });
                    true
                }
            }
        });
    }

    /// The last report of `name`, if it reported.
    pub fn component(&self, name: &str) -> Option<ComponentHealth> {
        self.inner.components.borrow().iter().find(|c| c.name == name).cloned()
    }

    /// Every component and whether the node is ready.
    pub fn snapshot(&self) -> HealthSnapshot {
        snapshot_of(&self.inner.components.borrow())
    }

    /// Waits until a snapshot satisfies `done` (checked at once, then after every change) and
    /// returns it. For tests and for readiness gates; bound it with a timeout.
    pub async fn wait_for(&self, mut done: impl FnMut(&HealthSnapshot) -> bool) -> HealthSnapshot {
        let mut changes = self.inner.components.subscribe();
        loop {
            let snapshot = snapshot_of(&changes.borrow_and_update());
            if done(&snapshot) {
                return snapshot;
            }
            // The sender lives in `self`, so the channel cannot close while we wait.
            if changes.changed().await.is_err() {
                return snapshot;
            }
        }
    }
}

fn snapshot_of(components: &[ComponentHealth]) -> HealthSnapshot {
    HealthSnapshot {
        ready: !components.is_empty() && components.iter().all(|c| c.healthy),
        components: components.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_ready_only_when_every_component_is_healthy() {
        let health = HealthRegistry::new();
        assert!(!health.snapshot().ready, "nothing reported yet");
        health.report(BUS, true, "nats");
        health.expect(CONNECTOR);
        health.expect(BUS);
        let snapshot = health.snapshot();
        assert!(!snapshot.ready);
        let names: Vec<&str> = snapshot.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, [BUS, CONNECTOR], "first report order; expect keeps a report");
        assert_eq!(health.component(CONNECTOR).unwrap().detail, "not started");
        health.report(CONNECTOR, true, "joined testchan as RoseyBot");
        assert!(health.snapshot().ready);
        health.report(CONNECTOR, false, "reconnecting: connection lost");
        let snapshot = health.snapshot();
        assert!(!snapshot.ready);
        assert_eq!(snapshot.components[1].detail, "reconnecting: connection lost");
    }

    #[test]
    fn the_start_time_is_kept_and_uptime_grows() {
        let health = HealthRegistry::new();
        assert!(health.started_at() <= SystemTime::now());
        let first = health.uptime();
        assert!(health.clone().uptime() >= first, "clones share the start");
    }

    #[tokio::test]
    async fn waiting_for_a_state_returns_once_it_is_reported() {
        let health = HealthRegistry::new();
        let waiter = {
            let health = health.clone();
            tokio::spawn(async move { health.wait_for(|s| s.ready).await })
        };
        health.report(PLUGINS, false, "running 0/1");
        health.report(PLUGINS, true, "running 1/1");
        let snapshot = waiter.await.unwrap();
        assert!(snapshot.ready);
    }
}
