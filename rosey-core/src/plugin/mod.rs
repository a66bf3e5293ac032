//! Plugins: manifests, runtimes, supervision and the manager that runs them.
//!
//! A plugin is described by a [`Manifest`] (`plugin.toml`) and started by a [`PluginRuntime`]:
//! [`ProcessRuntime`] (child process speaking protocol v1 over stdio, the default) or
//! [`InProcessRuntime`] (Rust plugins as tasks). The [`PluginManager`] runs one slot per plugin that owns
//! its bus subscription, queues events while the plugin (re)starts, restarts it after crashes with
//! backoff, watches its CPU and memory, and keeps its counters ([`PluginStatus`]).

pub mod backoff;
pub mod commands;
pub mod control;
pub mod inprocess;
pub mod manager;
pub mod manifest;
pub mod process;
pub mod resources;
pub mod runtime;
mod slot;
pub mod status;

pub use commands::{CommandRoute, CommandTable, RoutedCommand};
pub use control::{ControlError, PluginControl};
pub use inprocess::{InProcessPlugin, InProcessRuntime};
pub use manager::{ManagerError, ManagerOptions, PluginManager};
pub use manifest::{CommandSpec, Manifest, ManifestError};
pub use process::ProcessRuntime;
pub use runtime::{ExitReason, Instance, InstanceOutput, PluginRuntime, RuntimeError};
pub use slot::PROBE_USER;
pub use status::{EventCounts, LatencySummary, PluginState, PluginStatus, ReloadReport};
