//! Connectors bring a chat platform onto the bus and back: incoming chat is published on
//! [`CHAT_MESSAGE`](crate::subject::CHAT_MESSAGE) (and the other `cytube.*` subjects), and what is
//! published on [`CHAT_SEND`](crate::subject::CHAT_SEND) is said in the channel.

pub mod console;
#[cfg(feature = "cytube")]
pub mod cytube;
mod stats;

use std::sync::Arc;

use async_trait::async_trait;

use crate::bus::{BusError, EventBus};
use crate::service::{ServiceHandle, TaskFailed};

pub use self::stats::{ConnectorCounts, ConnectorStats};

/// Why a connector could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The bus failed under the connector.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Reading or writing the platform failed for good.
    #[error("connector I/O error")]
    Io(#[from] std::io::Error),
    /// The CyTube connector could not join, or stopped for a reason reconnecting cannot fix (match on
    /// the [`CytubeError`](cytube::CytubeError) to tell a ban from a wrong password).
    #[cfg(feature = "cytube")]
    #[error(transparent)]
    Cytube(#[from] cytube::CytubeError),
    /// The lease that decides which node holds the channel could not be set up (JetStream off, no
    /// permission on its bucket…).
    #[cfg(feature = "nats")]
    #[error("cannot compete for the channel: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The connector's task panicked.
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// A running connector; see [`ServiceHandle`].
pub type ConnectorHandle = ServiceHandle<ConnectorError>;

/// A chat platform on the bus.
///
/// `start` consumes the connector, so a connector is started once by construction.
#[async_trait]
pub trait Connector: Send {
    /// Short name for logs (`console`, `cytube`).
    fn name(&self) -> &str;

    /// The connector's counters; they stay current after [`start`](Self::start), so take them
    /// before. The default is a set of counters nobody increments (a connector that counts nothing).
    fn stats(&self) -> ConnectorStats {
        ConnectorStats::default()
    }

    /// Connects and returns once the connector is live: its bus subscriptions exist and the platform
    /// is joined, so chat published on [`CHAT_SEND`](crate::subject::CHAT_SEND) from now on is said.
    /// The work goes on in a spawned task until the handle stops it (it then ends with `Ok`) or the
    /// platform is gone for good (it ends with the error).
    async fn start(
        self: Box<Self>,
        bus: Arc<dyn EventBus>,
    ) -> Result<ConnectorHandle, ConnectorError>;
}
