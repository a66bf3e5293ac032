//! Rosey embedded in your own bot, in one file: a plugin written as a Rust trait and run in-process,
//! the router, and the console connector, all on the in-process bus.
//!
//! ```sh
//! cargo run -p rosey-example-embedding     # then type `!hello` (or `bob: !hello`); Ctrl-C stops it
//! ```
//!
//! Swap the pieces for your own: `NatsBus` for `MemoryBus`, `ProcessRuntime` (child-process plugins
//! from `plugin.toml` folders) for `InProcessRuntime`, `CytubeConnector` (feature `cytube`) for the
//! console. `rosey-bin/src/node.rs` wires the full set in the documented startup order.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rosey_core::bus::{EventBus, MemoryBus};
use rosey_core::connector::Connector;
use rosey_core::connector::console::{ConsoleConnector, ConsoleOptions};
use rosey_core::event::CommandEvent;
use rosey_core::plugin::{
    InProcessPlugin, InProcessRuntime, Manifest, PluginContext, PluginManager, PluginReply,
};
use rosey_core::router::{Router, RouterOptions};

/// The plugin: answers `!hello` and counts the greetings (state survives between events, and a
/// restart or reload starts it afresh).
#[derive(Default)]
struct Greeter {
    greeted: u32,
}

#[async_trait]
impl InProcessPlugin for Greeter {
    async fn command(&mut self, _ctx: &PluginContext, command: &CommandEvent) -> PluginReply {
        self.greeted += 1;
        Ok(vec![format!("👋 Hello, {}! (greeting #{})", command.user, self.greeted)])
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());

    let runtime = InProcessRuntime::new();
    runtime.register("greeter", "1.0.0", || Box::new(Greeter::default()));
    let manager = PluginManager::new(bus.clone(), Arc::new(runtime));
    // Its manifest, built in code: which commands it owns (defaults for timeouts and restarts).
    manager.add(Manifest::in_process("greeter", "1.0.0", ["hello"])).await?;
    manager.wait_running("greeter", Duration::from_secs(5)).await?;

    // Each service's `start` consumes it and returns a handle that stops it and says how it ended.
    let router =
        Router::new(bus.clone(), manager.command_table(), RouterOptions::default()).start().await?;
    let console = Box::new(ConsoleConnector::new(ConsoleOptions::default())).start(bus).await?;
    // Listen for Ctrl-C before saying ready: a SIGINT from then on stops the bot cleanly.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    eprintln!("ready: type !hello");

    interrupt.recv().await;
    // Reverse order: stop listening to the chat first, the plugins last.
    console.shutdown().await?;
    router.shutdown().await?;
    manager.shutdown().await;
    Ok(())
}
