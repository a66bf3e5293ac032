//! [`PluginControl`]: what operators (the `!admin` plugin, the dashboard, the bus control API) may do
//! to plugins, and [`ControlError`], the one error type of the manager and everything that drives it.
//! Implemented by [`PluginManager`](super::PluginManager).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use super::commands::CommandClash;
use super::status::{PluginState, PluginStatus, ReloadFailure, ReloadReport, StartFailure};

/// An operator action on one plugin, for naming what is in progress or what superseded a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Stop and start again.
    Restart,
    /// Blue-green reload.
    Reload,
    /// Stop.
    Stop,
    /// Stop and unload (the manager is shutting down).
    Shutdown,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Restart => "restart",
            Self::Reload => "reload",
            Self::Stop => "stop",
            Self::Shutdown => "shutdown",
        })
    }
}

/// Why a manager or control request failed. Callers match on the variant; `Display` gives a reason a
/// person can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    /// No plugin has that name.
    #[error("unknown plugin {0:?}")]
    NotFound(String),
    /// A plugin with that name is already loaded.
    #[error("a plugin named {0:?} is already loaded")]
    AlreadyLoaded(String),
    /// The plugin claims a command another plugin owns; it is not loaded.
    #[error(transparent)]
    CommandOwned(#[from] CommandClash),
    /// A stronger action on the same plugin is in progress (shutdown > stop > reload > restart); try
    /// again when it is done.
    #[error("a {action} of {name} is already in progress")]
    Busy {
        /// The plugin.
        name: String,
        /// What it is doing.
        action: Action,
    },
    /// The request was accepted, then given up for a stronger one that came after it.
    #[error("the {action} of {name} was superseded by a {by}")]
    Superseded {
        /// The plugin.
        name: String,
        /// The request that was given up.
        action: Action,
        /// What replaced it.
        by: Action,
    },
    /// The plugin is being unloaded (the manager is shutting down).
    #[error("plugin {0:?} is shutting down")]
    ShuttingDown(String),
    /// A start or restart failed at a step.
    #[error(transparent)]
    StartFailed(StartFailure),
    /// A reload was rolled back; the old version (if any) keeps serving.
    #[error(transparent)]
    ReloadFailed(ReloadFailure),
    /// The plugin is FAILED (crashed too often) and waits for an operator restart.
    #[error("{name} is FAILED: {reason}")]
    Failed {
        /// The plugin.
        name: String,
        /// Its last error.
        reason: String,
    },
    /// Another node sharing the bus could not carry the action out (or did not answer); the reason
    /// says which node and, for a rolling action, what happened on the others.
    #[error("on node {node}: {reason}")]
    Node {
        /// The node's name.
        node: String,
        /// What went wrong there.
        reason: String,
    },
    /// Waiting for the plugin to run ran out of time.
    #[error("{name} is {state} after waiting {waited:?}")]
    Timeout {
        /// The plugin.
        name: String,
        /// Its state when the wait ended.
        state: PluginState,
        /// How long was waited.
        waited: Duration,
    },
}

/// Operator actions on plugins.
#[async_trait]
pub trait PluginControl: Send + Sync {
    /// Every plugin's status, in name order.
    async fn list(&self) -> Vec<PluginStatus>;

    /// One plugin's status.
    async fn status(&self, name: &str) -> Result<PluginStatus, ControlError>;

    /// Stops the plugin (if running) and starts it again, clearing FAILED; returns once it serves or
    /// its start failed.
    async fn restart(&self, name: &str) -> Result<PluginStatus, ControlError>;

    /// Blue-green reload from the manifest on disk: the report when the new version serves,
    /// [`ControlError::ReloadFailed`] when it was rolled back.
    async fn reload(&self, name: &str) -> Result<ReloadReport, ControlError>;

    /// Rolling reload of every plugin, one at a time in name order, stopping at the first that does not
    /// succeed; the reports of the reloads attempted (a refused or failed one included).
    async fn reload_all(&self) -> Vec<ReloadReport>;

    /// The version a [`reload`](Self::reload) of the plugin would start now (its manifest on disk),
    /// for asking "reload x v1.0 → v1.1?" before doing it; `None` when it cannot be told (an
    /// in-process plugin, an unknown plugin, an unreadable manifest). Default: `None`.
    async fn pending_version(&self, name: &str) -> Option<String> {
        let _ = name;
        None
    }
}
