//! [`MixedRuntime`]: one [`PluginRuntime`] for process plugins and in-process plugins together, so a
//! single [`PluginManager`](super::PluginManager) supervises both (the bot's bundled plugins run as
//! processes, its `!admin` plugin as a task).
//!
//! ```
//! use std::sync::Arc;
//! use rosey_core::bus::MemoryBus;
//! use rosey_core::plugin::{InProcessRuntime, MixedRuntime, PluginManager, ProcessRuntime};
//!
//! let in_process = InProcessRuntime::new();
//! // in_process.register("admin", "1.0.0", || …);
//! let runtime = MixedRuntime::new(ProcessRuntime::new(), in_process);
//! let manager = PluginManager::new(Arc::new(MemoryBus::new()), Arc::new(runtime));
//! assert!(manager.snapshot().is_empty());
//! ```

use async_trait::async_trait;

use super::inprocess::InProcessRuntime;
use super::manifest::Manifest;
use super::process::ProcessRuntime;
use super::runtime::{Instance, PluginRuntime, RuntimeError};

/// Starts a manifest that names a program (`exec` not empty) as a child process with its
/// [`ProcessRuntime`], and any other (as [`Manifest::in_process`] builds them) as a task with its
/// [`InProcessRuntime`], where it must be registered under the manifest's name. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MixedRuntime {
    process: ProcessRuntime,
    in_process: InProcessRuntime,
}

impl MixedRuntime {
    /// A runtime over `process` and `in_process`. The in-process runtime is shared (it is a handle),
    /// so plugins registered on it later are found too.
    pub fn new(process: ProcessRuntime, in_process: InProcessRuntime) -> Self {
        Self { process, in_process }
    }

    /// The in-process runtime, for registering more plugins.
    pub fn in_process(&self) -> &InProcessRuntime {
        &self.in_process
    }

    /// The process runtime (e.g. to resolve a manifest's program).
    pub fn process(&self) -> &ProcessRuntime {
        &self.process
    }

    /// Whether `manifest` runs as a process: its `exec` names a program.
    pub fn is_process(manifest: &Manifest) -> bool {
        manifest.exec.iter().any(|word| !word.trim().is_empty())
    }
}

impl Default for MixedRuntime {
    /// A [`ProcessRuntime::new`] and an empty [`InProcessRuntime`].
    fn default() -> Self {
        Self::new(ProcessRuntime::new(), InProcessRuntime::new())
    }
}

#[async_trait]
impl PluginRuntime for MixedRuntime {
    async fn start(&self, manifest: &Manifest) -> Result<Instance, RuntimeError> {
        if Self::is_process(manifest) {
            self.process.start(manifest).await
        } else {
            self.in_process.start(manifest).await
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use rosey_plugin::protocol::{HostMessage, PluginMessage};
    use serde_json::json;

    use super::*;
    use crate::bus::{EventBus, MemoryBus};
    use crate::event::CommandEvent;
    use crate::plugin::{
        InProcessPlugin, InstanceOutput, PluginContext, PluginManager, PluginReply,
    };

    struct Hello;

    #[async_trait]
    impl InProcessPlugin for Hello {
        async fn command(&mut self, _ctx: &PluginContext, command: &CommandEvent) -> PluginReply {
            Ok(vec![format!("hello {}", command.user)])
        }
    }

    fn runtime() -> MixedRuntime {
        let in_process = InProcessRuntime::new();
        in_process.register("hello", "2.0.0", || Box::new(Hello));
        MixedRuntime::new(ProcessRuntime::new(), in_process)
    }

    /// A plugin folder (fresh) whose `plugin.toml` runs the host tests' Python testbed, which says
    /// `ready` with `version`, answers pings and exits on `shutdown`; and its manifest.
    fn testbed_manifest(name: &str, version: &str) -> Manifest {
        let dir = std::env::temp_dir()
            .join(format!("rosey-mixed-{}-{name}", std::process::id()))
            .join(name);
        std::fs::create_dir_all(&dir).unwrap();
        write_testbed_toml(&dir, name, version);
        Manifest::load(&dir).unwrap()
    }

    fn write_testbed_toml(dir: &std::path::Path, name: &str, version: &str) {
        let testbed = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/plugins/testbed.py");
        let toml = format!(
            "name = \"{name}\"\nversion = \"{version}\"\n\
             exec = [\"python3\", {testbed:?}, \"--version\", \"{version}\"]\n\
             commands = [\"{name}\"]\n"
        );
        std::fs::write(dir.join("plugin.toml"), toml).unwrap();
    }

    async fn ready_version(instance: &mut Instance) -> String {
        let init = HostMessage::Init { protocol: 1, name: "x".to_owned(), config: json!({}) };
        assert!(instance.send(init));
        loop {
            match tokio::time::timeout(Duration::from_secs(10), instance.recv()).await.unwrap() {
                Some(InstanceOutput::Message(PluginMessage::Ready { version, .. })) => {
                    return version;
                }
                Some(InstanceOutput::Exited(reason)) => panic!("exited: {reason}"),
                Some(_) => {}
                None => panic!("no output"),
            }
        }
    }

    #[tokio::test]
    async fn a_manifest_without_exec_runs_in_process() {
        let manifest = Manifest::in_process("hello", "2.0.0", ["hello"]);
        let mut instance = runtime().start(&manifest).await.unwrap();
        assert_eq!(instance.pid(), None, "a task has no pid");
        assert_eq!(ready_version(&mut instance).await, "2.0.0");
    }

    #[tokio::test]
    async fn a_manifest_with_exec_runs_as_a_process() {
        let manifest = testbed_manifest("process", "3.0.0");
        let mut instance = runtime().start(&manifest).await.unwrap();
        assert!(instance.pid().is_some(), "a process has a pid");
        assert_eq!(ready_version(&mut instance).await, "3.0.0");
    }

    #[tokio::test]
    async fn an_unregistered_in_process_plugin_and_a_missing_program_fail_as_their_runtimes_say() {
        let runtime = runtime();
        let unknown = Manifest::in_process("nobody", "1.0.0", ["nobody"]);
        assert!(matches!(
            runtime.start(&unknown).await,
            Err(RuntimeError::UnknownPlugin(name)) if name == "nobody"
        ));
        let mut missing = testbed_manifest("missing", "1.0.0");
        missing.exec = vec!["./no-such-program".to_owned()];
        assert!(matches!(runtime.start(&missing).await, Err(RuntimeError::NotFound { .. })));
    }

    #[tokio::test]
    async fn one_manager_runs_both_kinds() {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let manager = PluginManager::new(bus, Arc::new(runtime()));
        manager.add(Manifest::in_process("hello", "2.0.0", ["hello"])).await.unwrap();
        manager.add(testbed_manifest("testbed", "1.0.0")).await.unwrap();
        let hello = manager.wait_running("hello", Duration::from_secs(10)).await.unwrap();
        let process = manager.wait_running("testbed", Duration::from_secs(10)).await.unwrap();
        assert_eq!((hello.version.as_str(), hello.pid), ("2.0.0", None));
        assert_eq!(process.version, "1.0.0");
        assert!(process.pid.is_some());
        // An in-process plugin has no manifest on disk: a reload (and so a rolling reload of all)
        // starts it again as it is instead of failing to read one.
        let report = manager.reload("hello").await.unwrap();
        assert_eq!((report.from_version.as_str(), report.to_version.as_str()), ("2.0.0", "2.0.0"));
        let all = manager.reload_all().await;
        assert!(all.iter().all(|r| r.outcome == crate::metrics::ReloadOutcome::Success), "{all:?}");
        manager.shutdown().await;
    }

    #[tokio::test]
    async fn the_pending_version_is_the_one_on_disk_and_unknown_for_in_process_plugins() {
        let bus: Arc<dyn EventBus> = Arc::new(MemoryBus::new());
        let manager = PluginManager::new(bus, Arc::new(runtime()));
        manager.add(Manifest::in_process("hello", "2.0.0", ["hello"])).await.unwrap();
        let manifest = testbed_manifest("pending", "1.0.0");
        let dir = manifest.dir.clone();
        manager.add(manifest).await.unwrap();
        manager.wait_running("pending", Duration::from_secs(10)).await.unwrap();
        let control: &dyn crate::plugin::PluginControl = &manager;
        assert_eq!(control.pending_version("pending").await.as_deref(), Some("1.0.0"));
        write_testbed_toml(&dir, "pending", "1.1.0");
        assert_eq!(control.pending_version("pending").await.as_deref(), Some("1.1.0"));
        assert_eq!(manager.status("pending").unwrap().version, "1.0.0", "nothing reloaded");
        std::fs::write(dir.join("plugin.toml"), "name = ").unwrap();
        assert_eq!(control.pending_version("pending").await, None, "unreadable manifest");
        assert_eq!(control.pending_version("hello").await, None, "in-process");
        assert_eq!(control.pending_version("nobody").await, None, "unknown");
        manager.shutdown().await;
    }
}
