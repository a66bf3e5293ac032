//! Wiring: starts Rosey's parts in the documented order and stops them in reverse on SIGINT/SIGTERM.
//!
//! Start: EventBus → Database → PluginManager → MetricsCollector → Dashboard → AdminPlugin → Router →
//! Connector (docs/ARCHITECTURE.md). Only the parts that exist so far are started.

use std::sync::Arc;
use std::time::Duration;

use rosey_core::bus::{BusError, EventBus, MemoryBus};
use rosey_core::config::Config;

/// How long each shutdown step may take before it is abandoned.
const STOP_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the node could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeError {
    #[error("event bus: {0}")]
    Bus(#[from] BusError),
    #[cfg(not(feature = "nats"))]
    #[error("nats_url is set but this build of rosey has no `nats` feature")]
    NatsNotBuilt,
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
}

/// Runs the node until SIGINT or SIGTERM.
pub(crate) async fn run(config: Config) -> Result<(), NodeError> {
    let shutdown = shutdown_signal()?;
    tracing::info!(message = "starting rosey", version = env!("CARGO_PKG_VERSION"));

    let (bus, bus_kind) = start_bus(&config).await?;
    tracing::info!(message = "rosey ready", bus = bus_kind);

    shutdown.await;
    tracing::info!(message = "shutting down");
    if tokio::time::timeout(STOP_STEP_TIMEOUT, bus.flush()).await.is_err() {
        tracing::warn!(message = "event bus did not flush in time", timeout = ?STOP_STEP_TIMEOUT);
    }
    drop(bus);
    tracing::info!(message = "rosey stopped");
    Ok(())
}

async fn start_bus(config: &Config) -> Result<(Arc<dyn EventBus>, &'static str), NodeError> {
    match &config.nats_url {
        None => Ok((Arc::new(MemoryBus::new()), "memory")),
        #[cfg(feature = "nats")]
        Some(url) => {
            tracing::info!(message = "connecting to NATS", url = %url);
            let bus = rosey_core::bus::NatsBus::connect(url.expose()).await?;
            Ok((Arc::new(bus), "nats"))
        }
        #[cfg(not(feature = "nats"))]
        Some(_) => Err(NodeError::NatsNotBuilt),
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM. Listeners are installed before returning, so a
/// signal that arrives during startup is not missed.
fn shutdown_signal() -> Result<impl Future<Output = ()>, NodeError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(NodeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(NodeError::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!(message = "SIGTERM received"),
            _ = int.recv() => tracing::info!(message = "SIGINT received"),
        }
    })
}
