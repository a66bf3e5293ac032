//! [`InProcessRuntime`]: plugins written as a Rust trait, run as tasks inside the host.
//!
//! For embedders whose plugins are trusted Rust code, and for tests. They get the same supervision,
//! queueing, health checks and reload as process plugins (the slot cannot tell the difference) and the
//! same powers: a typed [`CommandEvent`] for each command, and a [`PluginContext`] to publish and to make
//! requests (the key-value store) under the same rules as a process plugin. What they do not get is
//! isolation: a plugin that blocks its thread blocks a runtime worker. A panic in a handler is caught and
//! ends that event with an error.
//!
//! ```
//! use async_trait::async_trait;
//! use rosey_core::event::CommandEvent;
//! use rosey_core::plugin::{InProcessPlugin, InProcessRuntime, PluginContext, PluginReply};
//!
//! struct Echo;
//!
//! #[async_trait]
//! impl InProcessPlugin for Echo {
//!     async fn command(&mut self, _ctx: &PluginContext, command: &CommandEvent) -> PluginReply {
//!         Ok(vec![format!("{}: {}", command.user, command.args)])
//!     }
//! }
//!
//! let runtime = InProcessRuntime::new();
//! runtime.register("echo", "1.0.0", || Box::new(Echo));
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use parking_lot::{Mutex, RwLock};
use rosey_plugin::protocol::{HostMessage, PluginMessage};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

use super::manifest::Manifest;
use super::runtime::{
    ExitReason, INSTANCE_INPUT_CAPACITY, Instance, InstanceOutput, PluginRuntime, RuntimeError,
};
use crate::event::CommandEvent;
use crate::subject;

/// What a handler returns: the reply lines for the event's channel, or why it failed.
pub type PluginReply = Result<Vec<String>, String>;

/// A plugin implemented in Rust, living in the host process. Every method has a default, so a plugin
/// implements only what it handles.
#[async_trait]
pub trait InProcessPlugin: Send + 'static {
    /// Called once with the manifest's `[config]` before any event.
    async fn init(&mut self, ctx: &PluginContext, config: &Value) {
        let _ = (ctx, config);
    }

    /// Handles one routed command (`rosey.command.<name>[.<sub>]`).
    async fn command(&mut self, ctx: &PluginContext, command: &CommandEvent) -> PluginReply {
        let _ = (ctx, command);
        Ok(Vec::new())
    }

    /// Handles any other event the plugin subscribed to (its subject and JSON payload).
    async fn event(&mut self, ctx: &PluginContext, subject: &str, data: &Value) -> PluginReply {
        let _ = (ctx, subject, data);
        Ok(Vec::new())
    }
}

/// Why a [`PluginContext`] call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The instance is stopping; nothing more reaches the host.
    #[error("the plugin instance is stopping")]
    Stopping,
    /// No response came within the timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The host or the responder answered with an error.
    #[error("{0}")]
    Failed(String),
    /// The responder refused the request with a code, as the key-value store does
    /// (`{"error": "…", "code": "too_many_keys"}`; docs/PROTOCOL.md lists the codes).
    #[error("{message}")]
    Refused {
        /// The sentence for people.
        message: String,
        /// The code for code (`bad_request`, `key_too_long`, `unavailable`…).
        code: String,
    },
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, RequestError>>>>>;

/// What an in-process plugin can do besides replying: publish and make requests, with the same rules
/// the host applies to process plugins (docs/PROTOCOL.md). Cheap to clone.
#[derive(Clone)]
pub struct PluginContext {
    name: Arc<str>,
    output: mpsc::Sender<InstanceOutput>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for PluginContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginContext").field("name", &self.name).finish_non_exhaustive()
    }
}

impl PluginContext {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Publishes `data` on `subject` through the host, which applies the publishing rules (a refused
    /// subject is logged by the host, as for a process plugin).
    pub async fn publish(&self, subject: &str, data: Value) -> Result<(), RequestError> {
        let message = PluginMessage::Publish { subject: subject.to_owned(), data };
        self.output.send(InstanceOutput::Message(message)).await.map_err(|_| RequestError::Stopping)
    }

    /// Sends a request (e.g. `rosey.db.kv.get`) through the host and waits for its response at most
    /// `timeout`.
    pub async fn request(
        &self,
        subject: &str,
        data: Value,
        timeout: Duration,
    ) -> Result<Value, RequestError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(id, tx);
        let message = PluginMessage::Request { id, subject: subject.to_owned(), data };
        if self.output.send(InstanceOutput::Message(message)).await.is_err() {
            self.pending.lock().remove(&id);
            return Err(RequestError::Stopping);
        }
        let answer = tokio::time::timeout(timeout, rx).await;
        self.pending.lock().remove(&id);
        match answer {
            Ok(Ok(Ok(data))) => Ok(data),
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(_)) => Err(RequestError::Stopping),
            Err(_) => Err(RequestError::Timeout(timeout)),
        }
    }
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
        let (input_tx, input_rx) = mpsc::channel(INSTANCE_INPUT_CAPACITY);
        let (output_tx, output_rx) = mpsc::channel(1024);
        let (kill_tx, kill_rx) = oneshot::channel();
        let ctx = PluginContext {
            name: Arc::from(manifest.name.as_str()),
            output: output_tx.clone(),
            pending: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
        };
        let commands = manifest.commands.iter().map(|c| c.name.clone()).collect();
        tokio::spawn(async move {
            // A panic outside a handler (in `init`, say) ends the instance like a crash, reported.
            let serving =
                std::panic::AssertUnwindSafe(serve(plugin, ctx, version, commands, input_rx))
                    .catch_unwind();
            let reason = tokio::select! {
                reason = serving => reason.unwrap_or_else(|_| ExitReason::Stopped("panicked".to_owned())),
                _ = kill_rx => ExitReason::Stopped("killed".to_owned()),
            };
            let _ = output_tx.send(InstanceOutput::Exited(reason)).await;
        });
        Ok(Instance::new(None, input_tx, output_rx, kill_tx))
    }
}

/// Reads the host's messages: responses complete the pending requests at once (a handler may be waiting
/// for one), everything else is handed to the handler loop in order.
async fn read_input(
    mut input: mpsc::Receiver<HostMessage>,
    pending: Pending,
    messages: mpsc::Sender<HostMessage>,
) {
    while let Some(message) = input.recv().await {
        match message {
            HostMessage::Response { id, data, error } => {
                if let Some(waiter) = pending.lock().remove(&id) {
                    let code = data.as_ref().and_then(|d| d.get("code")).and_then(Value::as_str);
                    let _ = waiter.send(match (code, error) {
                        (Some(code), Some(message)) => {
                            Err(RequestError::Refused { message, code: code.to_owned() })
                        }
                        (None, Some(error)) => Err(RequestError::Failed(error)),
                        (_, None) => Ok(data.unwrap_or(Value::Null)),
                    });
                }
            }
            other => {
                if messages.send(other).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn serve(
    mut plugin: Box<dyn InProcessPlugin>,
    ctx: PluginContext,
    version: String,
    commands: Vec<String>,
    input: mpsc::Receiver<HostMessage>,
) -> ExitReason {
    let (messages_tx, mut messages) = mpsc::channel(INSTANCE_INPUT_CAPACITY);
    // Ends with this instance, however it ends.
    let _reader =
        AbortOnDropHandle::new(tokio::spawn(read_input(input, ctx.pending.clone(), messages_tx)));
    let send = |message: PluginMessage| {
        let output = ctx.output.clone();
        async move { output.send(InstanceOutput::Message(message)).await.is_ok() }
    };
    while let Some(message) = messages.recv().await {
        let alive = match message {
            HostMessage::Init { config, .. } => {
                plugin.init(&ctx, &config).await;
                send(PluginMessage::Ready {
                    name: ctx.name().to_owned(),
                    version: version.clone(),
                    commands: commands.clone(),
                    subscribe: Vec::new(),
                })
                .await
            }
            HostMessage::Event { id, subject, data } => {
                let result =
                    std::panic::AssertUnwindSafe(handle(&mut *plugin, &ctx, &subject, &data))
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
            HostMessage::Error { message } => {
                tracing::warn!(message = "the host refused what the plugin sent", plugin = %ctx.name(), refusal = %message);
                true
            }
        };
        if !alive {
            break;
        }
    }
    ExitReason::Code(0)
}

/// A routed command goes to [`InProcessPlugin::command`], anything else to [`InProcessPlugin::event`].
async fn handle(
    plugin: &mut dyn InProcessPlugin,
    ctx: &PluginContext,
    subject: &str,
    data: &Value,
) -> PluginReply {
    if subject.starts_with(&format!("{}.", subject::COMMAND_PREFIX)) {
        match serde_json::from_value::<CommandEvent>(data.clone()) {
            Ok(command) => return plugin.command(ctx, &command).await,
            Err(err) => return Err(format!("not a command event: {err}")),
        }
    }
    plugin.event(ctx, subject, data).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::StreamExt;
    use serde_json::json;

    use super::*;
    use crate::bus::{EventBus, EventBusExt, MemoryBus};
    use crate::event::ChatSend;
    use crate::plugin::{Manifest, PluginManager};

    /// `!remember x` stores x through the key-value store, announces it, and answers with what the
    /// store said; `!boom` panics.
    struct Memo;

    #[async_trait]
    impl InProcessPlugin for Memo {
        async fn command(&mut self, ctx: &PluginContext, command: &CommandEvent) -> PluginReply {
            if command.command == "boom" {
                panic!("boom");
            }
            let stored = ctx
                .request(
                    "rosey.db.kv.set",
                    json!({"key": "memo", "value": command.args}),
                    Duration::from_secs(1),
                )
                .await
                .map_err(|e| e.to_string())?;
            ctx.publish("memo.stored", json!({"by": command.user}))
                .await
                .map_err(|e| e.to_string())?;
            Ok(vec![format!("{} remembered ({})", command.user, stored["ok"])])
        }
    }

    fn command(name: &str, args: &str) -> CommandEvent {
        CommandEvent {
            channel: "lobby".to_owned(),
            user: "alice".to_owned(),
            rank: None,
            command: name.to_owned(),
            args: args.to_owned(),
            message: format!("!{name} {args}"),
            time: 0,
            via: Default::default(),
        }
    }

    #[tokio::test]
    async fn an_in_process_plugin_gets_typed_commands_and_can_request_and_publish() {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let runtime = InProcessRuntime::new();
        runtime.register("memo", "1.0.0", || Box::new(Memo));
        let manager = PluginManager::new(bus.clone(), Arc::new(runtime));
        let mut store = bus.subscribe("rosey.db.kv.set").await.unwrap();
        let mut announced = bus.subscribe("memo.stored").await.unwrap();
        let mut said = bus.subscribe("cytube.chat.send").await.unwrap();
        let mut manifest = Manifest::in_process("memo", "1.0.0", ["remember", "boom"]);
        manifest.publish = vec!["memo.>".to_owned()];
        manager.add(manifest).await.unwrap();
        manager.wait_running("memo", Duration::from_secs(5)).await.unwrap();

        bus.publish_json("rosey.command.remember", &command("remember", "tea")).await.unwrap();
        let next = |sub| tokio::time::timeout(Duration::from_secs(10), sub);
        let request = next(store.next()).await.unwrap().unwrap();
        let asked: serde_json::Value = request.decode().unwrap();
        assert_eq!(
            asked,
            json!({"key": "memo", "value": "tea", "plugin": "memo"}),
            "stamped by the host"
        );
        bus.respond(&request, json!({"ok": true}).to_string().into()).await.unwrap();
        let text: ChatSend = next(said.next()).await.unwrap().unwrap().decode().unwrap();
        assert_eq!(text.message, "alice remembered (true)");
        let event: serde_json::Value =
            next(announced.next()).await.unwrap().unwrap().decode().unwrap();
        assert_eq!(event, json!({"by": "alice"}));

        // A panicking handler fails its event; the plugin keeps serving.
        let reply = bus
            .request(
                "rosey.command.boom",
                serde_json::to_vec(&command("boom", "")).unwrap().into(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        let reply: serde_json::Value = reply.decode().unwrap();
        assert_eq!(reply["error"], "handler panicked");
        assert_eq!(manager.status("memo").unwrap().crash_count, 0);
        manager.shutdown().await;
    }
}
