//! [`PluginControl`]: what operators (the `!admin` plugin, the dashboard, the bus control API) may do
//! to plugins. Implemented by [`PluginManager`](super::PluginManager).

use async_trait::async_trait;

use super::status::{PluginStatus, ReloadReport};

/// Why a control request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No plugin has that name.
    #[error("unknown plugin {0:?}")]
    UnknownPlugin(String),
    /// Another operation on the same plugin is in progress.
    #[error("{0}")]
    Busy(String),
    /// The operation ran and failed; says why.
    #[error("{0}")]
    Failed(String),
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

    /// Blue-green reload from the manifest on disk; the report says whether the new version serves
    /// or was rolled back, and why.
    async fn reload(&self, name: &str) -> Result<ReloadReport, ControlError>;

    /// Rolling reload of every plugin, one at a time, stopping at the first that does not succeed;
    /// the reports of the reloads attempted.
    async fn reload_all(&self) -> Vec<ReloadReport>;
}
