//! Plugins: manifests, runtimes, supervision and the manager that runs them.
//!
//! A plugin is described by a [`Manifest`] (`plugin.toml`) and started by a [`PluginRuntime`]:
//! [`ProcessRuntime`] (child process speaking protocol v1 over stdio, the default; Linux),
//! [`InProcessRuntime`] (Rust plugins as tasks), or [`MixedRuntime`] (each manifest by the first when
//! it names a program, else by the second). The [`PluginManager`] runs one slot per plugin that owns
//! its bus subscription, queues events while the plugin (re)starts, restarts it after crashes with
//! backoff, watches its CPU and memory, and keeps its counters ([`PluginStatus`]). Operators drive it
//! through [`PluginControl`]; every failure is a [`ControlError`].

pub(crate) mod commands;
mod control;
mod inprocess;
mod launcher;
mod manager;
mod manifest;
mod mixed;
mod process;
mod publish;
pub mod resources;
mod runtime;
mod slot;
mod status;
mod stderr;
mod tree;

pub use commands::{CommandClash, CommandRoute, CommandTable, RoutedCommand};
pub use control::{Action, ControlError, PluginControl};
pub use inprocess::{InProcessPlugin, InProcessRuntime, PluginContext, PluginReply, RequestError};
pub use launcher::MemoryEnforcement;
pub use manager::{ManagerOptions, PluginManager, PluginManagerBuilder};
pub use manifest::{
    CommandSpec, Limits, MANIFEST_FILE, Manifest, ManifestError, ManifestProblem, RestartPolicy,
    Timeouts, discover, discover_async,
};
pub use mixed::MixedRuntime;
pub use process::ProcessRuntime;
pub use publish::{PublishRefused, PublishRules};
pub use runtime::{
    ExitReason, INSTANCE_INPUT_CAPACITY, Instance, InstanceOutput, PluginRuntime, RuntimeError,
};
pub use slot::PROBE_USER;
pub use status::{
    EventCounts, LatencySummary, PluginState, PluginStatus, ReloadFailure, ReloadReport,
    StartFailure, StartStep,
};
