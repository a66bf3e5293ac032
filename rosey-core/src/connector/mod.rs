//! Connectors bring a chat platform onto the bus and back: incoming chat is published on
//! [`CHAT_MESSAGE`](crate::subject::CHAT_MESSAGE) (and the other `cytube.*` subjects), and what is
//! published on [`CHAT_SEND`](crate::subject::CHAT_SEND) is said in the channel.

pub mod console;
#[cfg(feature = "cytube")]
pub mod cytube;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{BusError, EventBus};

/// Why a connector stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The bus failed under the connector.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Reading or writing the platform failed for good.
    #[error("connector I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The platform refused the connector (bad credentials, banned, duplicate login…).
    #[error("{0}")]
    Refused(String),
    /// The CyTube connector could not join, or stopped for a reason reconnecting cannot fix (match on
    /// the [`CytubeError`](cytube::CytubeError) to tell a ban from a wrong password).
    #[cfg(feature = "cytube")]
    #[error(transparent)]
    Cytube(#[from] cytube::CytubeError),
    /// The connector's task failed unexpectedly.
    #[error("connector task failed: {0}")]
    Failed(String),
}

/// A chat platform on the bus.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Short name for logs (`console`, `cytube`).
    fn name(&self) -> &str;

    /// Connects and returns once the connector is live: its bus subscriptions exist and the platform
    /// is joined, so chat published on [`CHAT_SEND`](crate::subject::CHAT_SEND) from now on is said.
    /// The work goes on in a spawned task until `shutdown` is cancelled (the task then ends with `Ok`)
    /// or the platform is gone for good (it ends with the error).
    async fn start(
        &self,
        bus: Arc<dyn EventBus>,
        shutdown: CancellationToken,
    ) -> Result<ConnectorHandle, ConnectorError>;
}

/// A running connector's task. Awaiting it (or [`ConnectorHandle::wait`]) gives how it ended; a
/// panicked task is reported as an error, not re-raised.
#[derive(Debug)]
pub struct ConnectorHandle {
    task: JoinHandle<Result<(), ConnectorError>>,
}

impl ConnectorHandle {
    /// Wraps the task a connector spawned.
    pub fn new(task: JoinHandle<Result<(), ConnectorError>>) -> Self {
        Self { task }
    }

    /// Waits for the connector to stop; a panicked task is reported as an error, not re-raised.
    pub async fn wait(self) -> Result<(), ConnectorError> {
        self.await
    }
}

impl Future for ConnectorHandle {
    type Output = Result<(), ConnectorError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.task).poll(cx).map(|joined| match joined {
            Ok(result) => result,
            Err(err) => Err(ConnectorError::Failed(err.to_string())),
        })
    }
}
