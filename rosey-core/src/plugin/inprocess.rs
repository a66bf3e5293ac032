//! [`InProcessRuntime`]: plugins written as a Rust trait, run as tasks inside the host.
//!
//! For embedders whose plugins are trusted Rust code, and for tests. They get the same supervision,
//! queueing and reload as process plugins (the slot cannot tell the difference) but no isolation: a
//! plugin that blocks its thread blocks a runtime worker. A panic in a handler is caught and ends that
//! event with an error.
//!
//! ```
//! use rosey_core::plugin::inprocess::{InProcessPlugin, InProcessRuntime, PluginReply};
//! use async_trait::async_trait;
//!
//! struct Echo;
//!
//! #[async_trait]
//! impl InProcessPlugin for Echo {
//!     async fn handle(&mut self, subject: &str, data: &serde_json::Value) -> PluginReply {
//!         let args = data["args"].as_str().unwrap_or_default();
//!         Ok(vec![format!("echo: {args}")])
//!     }
//! }
//!
//! let runtime = InProcessRuntime::new();
//! runtime.register("echo", "1.0.0", || Box::new(Echo));
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::FutureExt;
use parking_lot::RwLock;
use rosey_plugin::protocol::{HostMessage, PluginMessage};
use tokio::sync::{mpsc, oneshot};

use super::manifest::Manifest;
use super::runtime::{ExitReason, Instance, InstanceOutput, PluginRuntime, RuntimeError};

/// What a handler returns: the reply lines for the event's channel, or why it failed.
pub type PluginReply = Result<Vec<String>, String>;

/// A plugin implemented in Rust, living in the host process.
#[async_trait]
pub trait InProcessPlugin: Send + 'static {
    /// Called once with the manifest's `[config]` before any event.
    async fn init(&mut self, config: &serde_json::Value) {
        let _ = config;
    }

    /// Handles one event (`subject` and its JSON payload).
    async fn handle(&mut self, subject: &str, data: &serde_json::Value) -> PluginReply;
}

type Factory = Arc<dyn Fn() -> Box<dyn InProcessPlugin> + Send + Sync>;

/// A [`PluginRuntime`] whose instances are tasks running registered [`InProcessPlugin`]s. The
/// manifest's `name` selects the registration; `exec` is ignored.
#[derive(Clone, Default)]
pub struct InProcessRuntime {
    factories: Arc<RwLock<HashMap<String, (String, Factory)>>>,
}

impl std::fmt::Debug for InProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.factories.read().keys().cloned().collect();
        f.debug_struct("InProcessRuntime").field("plugins", &names).finish()
    }
}

impl InProcessRuntime {
    /// A runtime with no plugins registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the plugin `name` reporting `version`; `factory` makes one instance
    /// per start, so a restart or reload gets fresh state.
    pub fn register(
        &self,
        name: &str,
        version: &str,
        factory: impl Fn() -> Box<dyn InProcessPlugin> + Send + Sync + 'static,
    ) {
        self.factories.write().insert(name.to_owned(), (version.to_owned(), Arc::new(factory)));
    }
}

#[async_trait]
impl PluginRuntime for InProcessRuntime {
    async fn start(&self, manifest: &Manifest) -> Result<Instance, RuntimeError> {
        let (version, factory) = self
            .factories
            .read()
            .get(&manifest.name)
            .cloned()
            .ok_or_else(|| RuntimeError::UnknownPlugin(manifest.name.clone()))?;
        let plugin = factory();
        let (input_tx, input_rx) = mpsc::unbounded_channel();
        let (output_tx, output_rx) = mpsc::channel(1024);
        let (kill_tx, kill_rx) = oneshot::channel();
        let name = manifest.name.clone();
        let commands = manifest.commands.iter().map(|c| c.name.clone()).collect();
        tokio::spawn(async move {
            let output = output_tx.clone();
            let reason = tokio::select! {
                reason = serve(plugin, name, version, commands, input_rx, output) => reason,
                _ = kill_rx => ExitReason::Stopped("killed".to_owned()),
            };
            let _ = output_tx.send(InstanceOutput::Exited(reason)).await;
        });
        Ok(Instance::new(None, input_tx, output_rx, kill_tx))
    }
}

async fn serve(
    mut plugin: Box<dyn InProcessPlugin>,
    name: String,
    version: String,
    commands: Vec<String>,
    mut input: mpsc::UnboundedReceiver<HostMessage>,
    output: mpsc::Sender<InstanceOutput>,
) -> ExitReason {
    let send = |message: PluginMessage| {
        let output = output.clone();
        async move { output.send(InstanceOutput::Message(message)).await.is_ok() }
    };
    while let Some(message) = input.recv().await {
        let alive = match message {
            HostMessage::Init { config, .. } => {
                plugin.init(&config).await;
                send(PluginMessage::Ready {
                    name: name.clone(),
                    version: version.clone(),
                    commands: commands.clone(),
                    subscribe: Vec::new(),
                })
                .await
            }
            HostMessage::Event { id, subject, data } => {
                let result = std::panic::AssertUnwindSafe(plugin.handle(&subject, &data))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err("handler panicked".to_owned()));
                let mut alive = true;
                let error = match result {
                    Ok(replies) => {
                        for message in replies {
                            alive &= send(PluginMessage::Reply { id, message }).await;
                        }
                        None
                    }
                    Err(error) => Some(error),
                };
                alive && send(PluginMessage::Done { id, error }).await
            }
            HostMessage::Ping { id } => send(PluginMessage::Pong { id }).await,
            HostMessage::Shutdown {} => return ExitReason::Code(0),
            HostMessage::Response { .. } => true,
        };
        if !alive {
            break;
        }
    }
    ExitReason::Code(0)
}
