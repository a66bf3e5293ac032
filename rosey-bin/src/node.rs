//! Wiring: starts Rosey's parts in the documented order and stops them in reverse on SIGINT/SIGTERM.
//!
//! Start: EventBus → Database → PluginManager → MetricsCollector → Dashboard → AdminPlugin → Router →
//! Connector (docs/ARCHITECTURE.md). Only the parts that exist so far are started. A connector that
//! stops for good (banned, logged in elsewhere) stops the node too, with a non-zero exit.

use std::sync::Arc;
use std::time::Duration;

use rosey_core::bus::{BusError, EventBus, MemoryBus};
use rosey_core::config::Config;
use rosey_core::connector::console::{ConsoleConnector, ConsoleOptions};
use rosey_core::connector::{Connector, ConnectorError};
use rosey_core::control::ControlService;
use rosey_core::plugin::{PluginManager, ProcessRuntime};
use rosey_core::router::{Router, RouterOptions};
use tokio_util::sync::CancellationToken;

/// How long startup waits for each plugin to be running.
const PLUGIN_START_TIMEOUT: Duration = Duration::from_secs(15);

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
    #[cfg(not(feature = "cytube"))]
    #[error("the config has a cytube section but this build of rosey has no `cytube` feature")]
    CytubeNotBuilt,
    #[error("connector: {0}")]
    Connector(ConnectorError),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
}

/// Runs the node until SIGINT or SIGTERM.
pub(crate) async fn run(config: Config) -> Result<(), NodeError> {
    let shutdown = shutdown_signal()?;
    tracing::info!(message = "starting rosey", version = env!("CARGO_PKG_VERSION"));

    // 1. EventBus
    let (bus, bus_kind) = start_bus(&config).await?;
    // 2. Database: arrives with the storage work.
    // 3. PluginManager
    let manager = Arc::new(PluginManager::new(bus.clone(), Arc::new(ProcessRuntime::new())));
    for error in manager.load_dir(&config.plugin_dir).await {
        tracing::error!(message = "plugin not loaded", %error);
    }
    // Chat starts flowing only once the plugins have had their chance to start; one that fails keeps
    // being retried by its supervisor and does not hold the others up.
    for plugin in manager.snapshot() {
        if let Err(err) = manager.wait_running(&plugin.name, PLUGIN_START_TIMEOUT).await {
            tracing::error!(message = "plugin not running at startup", plugin = %plugin.name, %err);
        }
    }
    let stop = CancellationToken::new();
    // The control API (rosey.control.*) belongs with the plugin manager it drives.
    let control = match ControlService::new(bus.clone(), manager.clone()).start().await {
        Ok(task) => task,
        Err(err) => {
            manager.shutdown().await;
            return Err(err.into());
        }
    };
    // 4–6. MetricsCollector, Dashboard, AdminPlugin: arrive with their crates.
    // 7. Router
    let bot_name = config.cytube.as_ref().map_or("rosey", |c| c.username.as_str()).to_owned();
    let router_options =
        RouterOptions { bot_name: Some(bot_name.clone()), ..RouterOptions::default() };
    let router = Router::new(bus.clone(), manager.command_table(), router_options);
    let router = match router.start(stop.clone()).await {
        Ok(router) => router,
        Err(err) => {
            manager.shutdown().await;
            return Err(err.into());
        }
    };
    // 8. Connector
    let connector = match make_connector(&config, bot_name) {
        Ok(connector) => connector,
        Err(err) => {
            stop.cancel();
            manager.shutdown().await;
            return Err(err);
        }
    };
    let mut connector = match connector.start(bus.clone(), stop.clone()).await {
        Ok(handle) => handle,
        Err(err) => {
            stop.cancel();
            manager.shutdown().await;
            return Err(NodeError::Connector(err));
        }
    };
    let plugins = manager.snapshot();
    tracing::info!(
        message = "rosey ready",
        bus = bus_kind,
        plugins = plugins.len(),
        connector = connector_name(&config)
    );

    // Until a signal, or the connector stops for good (a ban, a duplicate login…).
    let connector_failure = tokio::select! {
        () = shutdown => None,
        result = &mut connector => Some(result),
    };
    tracing::info!(message = "shutting down");
    // Reverse order, each step bounded.
    stop.cancel();
    if connector_failure.is_none() {
        step("connector", &mut connector).await;
    }
    step("router", router.wait()).await;
    control.stop();
    step("control API", control.wait()).await;
    step("plugins", manager.shutdown()).await;
    if tokio::time::timeout(STOP_STEP_TIMEOUT, bus.flush()).await.is_err() {
        tracing::warn!(message = "event bus did not flush in time", timeout = ?STOP_STEP_TIMEOUT);
    }
    drop(bus);
    tracing::info!(message = "rosey stopped");
    match connector_failure {
        Some(Err(err)) => Err(NodeError::Connector(err)),
        Some(Ok(())) => Err(NodeError::Connector(ConnectorError::Failed(
            "the connector stopped on its own".to_owned(),
        ))),
        None => Ok(()),
    }
}

/// The console connector on embedded defaults, CyTube when the config has a `cytube` section.
fn make_connector(config: &Config, bot_name: String) -> Result<Box<dyn Connector>, NodeError> {
    match &config.cytube {
        None => Ok(Box::new(ConsoleConnector::new(ConsoleOptions {
            bot_name,
            ..ConsoleOptions::default()
        }))),
        #[cfg(feature = "cytube")]
        Some(cytube) => {
            use rosey_core::connector::cytube::{CytubeConnector, CytubeOptions};
            tracing::info!(
                message = "joining CyTube",
                server = %cytube.server,
                channel = %cytube.channel,
                user = %cytube.username,
                guest = cytube.password.is_none()
            );
            Ok(Box::new(CytubeConnector::new(CytubeOptions::from_config(cytube))))
        }
        #[cfg(not(feature = "cytube"))]
        Some(_) => Err(NodeError::CytubeNotBuilt),
    }
}

fn connector_name(config: &Config) -> &'static str {
    if config.cytube.is_some() { "cytube" } else { "console" }
}

/// Runs one shutdown step, abandoning it after [`STOP_STEP_TIMEOUT`].
async fn step<T>(name: &str, work: impl Future<Output = T>) {
    if tokio::time::timeout(STOP_STEP_TIMEOUT, work).await.is_err() {
        tracing::warn!(message = "shutdown step did not finish in time", step = name, timeout = ?STOP_STEP_TIMEOUT);
    }
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
