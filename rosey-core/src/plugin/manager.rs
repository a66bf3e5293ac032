//! [`PluginManager`]: discovers plugins, runs one slot per plugin, and answers for all of them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::commands::CommandTable;
use super::control::{ControlError, PluginControl};
use super::manifest::{self, Manifest, ManifestError};
use super::runtime::PluginRuntime;
use super::slot::{Control, Shared, SharedCell, Slot};
use super::status::{PluginState, PluginStatus, ReloadReport};
use crate::bus::EventBus;
use crate::metrics::{MetricsSink, NoopSink, ReloadOutcome};

/// Tuning of a [`PluginManager`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagerOptions {
    /// How often each plugin's CPU and memory are sampled (and checked against its limits).
    pub sample_interval: Duration,
    /// How long [`PluginManager::shutdown`] waits for each plugin before giving up on it.
    pub stop_timeout: Duration,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        Self { sample_interval: Duration::from_secs(1), stop_timeout: Duration::from_secs(10) }
    }
}

/// Why a manager operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagerError {
    /// A plugin with this name is already managed.
    #[error("a plugin named {0:?} is already loaded")]
    Duplicate(String),
    /// No plugin has that name.
    #[error("unknown plugin {0:?}")]
    UnknownPlugin(String),
    /// The plugin's slot is gone (the manager is shutting down).
    #[error("plugin {0:?} is shutting down")]
    Gone(String),
    /// Waiting for a state ran out of time.
    #[error("plugin {name:?} is {state} after waiting {waited:?}")]
    Timeout {
        /// The plugin.
        name: String,
        /// Its state when the wait ended.
        state: PluginState,
        /// How long was waited.
        waited: Duration,
    },
    /// A start or restart failed; says why.
    #[error("{0}")]
    Failed(String),
    /// Another reload, a restart or a stop of the plugin is in progress.
    #[error("{0}")]
    Busy(String),
}

struct Entry {
    /// The plugin's folder, where a reload reads the manifest again.
    dir: std::path::PathBuf,
    control: mpsc::Sender<Control>,
    shared: SharedCell,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Runs and supervises plugins: one slot per plugin, each owning its bus subscription (queue group =
/// plugin name), wait queue, instances and counters.
///
/// ```no_run
/// use std::sync::Arc;
/// use rosey_core::bus::MemoryBus;
/// use rosey_core::plugin::{PluginManager, ProcessRuntime};
///
/// # async fn demo() {
/// let manager = PluginManager::new(Arc::new(MemoryBus::new()), Arc::new(ProcessRuntime::new()));
/// for error in manager.load_dir("plugins".as_ref()).await {
///     eprintln!("skipped: {error}");
/// }
/// for plugin in manager.snapshot() {
///     println!("{} {} {}", plugin.name, plugin.version, plugin.state);
/// }
/// manager.shutdown().await;
/// # }
/// ```
pub struct PluginManager {
    bus: Arc<dyn EventBus>,
    runtime: Arc<dyn PluginRuntime>,
    sink: Arc<dyn MetricsSink>,
    commands: CommandTable,
    options: ManagerOptions,
    slots: RwLock<BTreeMap<String, Arc<Entry>>>,
}

impl std::fmt::Debug for PluginManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginManager")
            .field("plugins", &self.slots.read().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PluginManager {
    /// A manager with no plugins, reporting to no metrics sink.
    pub fn new(bus: Arc<dyn EventBus>, runtime: Arc<dyn PluginRuntime>) -> Self {
        Self {
            bus,
            runtime,
            sink: Arc::new(NoopSink),
            commands: CommandTable::new(),
            options: ManagerOptions::default(),
            slots: RwLock::new(BTreeMap::new()),
        }
    }

    /// Reports events, crashes and restarts to `sink`. Set before adding plugins.
    pub fn with_metrics_sink(mut self, sink: Arc<dyn MetricsSink>) -> Self {
        self.sink = sink;
        self
    }

    /// Uses `options`. Set before adding plugins.
    pub fn with_options(mut self, options: ManagerOptions) -> Self {
        self.options = options;
        self
    }

    /// The command table the manager keeps from its plugins' manifests, for the router.
    pub fn command_table(&self) -> CommandTable {
        self.commands.clone()
    }

    /// Loads and starts every plugin under `dir`. Returns the manifests that could not be loaded; the
    /// other plugins load anyway. Does not wait for the plugins to be ready.
    pub async fn load_dir(&self, dir: &Path) -> Vec<ManifestError> {
        let (manifests, mut errors) = manifest::discover(dir);
        for manifest in manifests {
            let path = manifest.dir.join(manifest::MANIFEST_FILE);
            if let Err(err) = self.add(manifest).await {
                errors.push(ManifestError::NotAdded { path, source: Box::new(err) });
            }
        }
        errors
    }

    /// Adds a plugin and starts it (without waiting for it to be ready).
    pub async fn add(&self, manifest: Manifest) -> Result<(), ManagerError> {
        let name = manifest.name.clone();
        let shared: SharedCell = Arc::new(Mutex::new(Shared::new(&manifest)));
        let (control, control_rx) = mpsc::channel(16);
        {
            let mut slots = self.slots.write();
            if slots.contains_key(&name) {
                return Err(ManagerError::Duplicate(name));
            }
            slots.insert(
                name.clone(),
                Arc::new(Entry {
                    dir: manifest.dir.clone(),
                    control,
                    shared: shared.clone(),
                    task: Mutex::new(None),
                }),
            );
        }
        let clashes = self.commands.set_plugin_commands(
            &name,
            manifest.commands.iter().map(|c| (c.name.clone(), c.subcommands)),
        );
        for command in clashes {
            tracing::warn!(message = "command already owned by another plugin; not routed here", plugin = %name, command = %command);
        }
        let slot = Slot::new(
            manifest,
            self.runtime.clone(),
            self.bus.clone(),
            self.sink.clone(),
            shared,
            self.options.sample_interval,
        );
        let task = tokio::spawn(slot.run(control_rx, true));
        if let Some(entry) = self.slots.read().get(&name) {
            *entry.task.lock() = Some(task);
        }
        Ok(())
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>, ManagerError> {
        self.slots
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| ManagerError::UnknownPlugin(name.to_owned()))
    }

    /// One plugin's status.
    pub fn status(&self, name: &str) -> Option<PluginStatus> {
        let entry = self.slots.read().get(name).cloned()?;
        let cell = entry.shared.lock();
        Some(cell.snapshot())
    }

    /// Every plugin's status, in name order.
    pub fn snapshot(&self) -> Vec<PluginStatus> {
        let entries: Vec<Arc<Entry>> = self.slots.read().values().cloned().collect();
        entries
            .iter()
            .map(|entry| {
                let cell = entry.shared.lock();
                cell.snapshot()
            })
            .collect()
    }

    /// Waits until the plugin is RUNNING (`Ok`) or FAILED (`Err`), at most `timeout`.
    pub async fn wait_running(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<PluginStatus, ManagerError> {
        let entry = self.entry(name)?;
        let mut state: watch::Receiver<PluginState> = entry.shared.lock().watch_state();
        let outcome = tokio::time::timeout(
            timeout,
            state.wait_for(|s| matches!(s, PluginState::Running | PluginState::Failed)),
        )
        .await;
        let status =
            self.status(name).ok_or_else(|| ManagerError::UnknownPlugin(name.to_owned()))?;
        match outcome {
            Ok(Ok(_)) if status.state == PluginState::Running => Ok(status),
            Ok(Ok(_)) => Err(ManagerError::Failed(
                status.last_error.unwrap_or_else(|| format!("{name} failed")),
            )),
            Ok(Err(_)) => Err(ManagerError::Gone(name.to_owned())),
            Err(_) => Err(ManagerError::Timeout {
                name: name.to_owned(),
                state: status.state,
                waited: timeout,
            }),
        }
    }

    /// Stops a plugin: it unsubscribes and its instance gets `shutdown`, then SIGKILL after the grace
    /// period. Returns once it has stopped.
    pub async fn stop(&self, name: &str) -> Result<(), ManagerError> {
        let entry = self.entry(name)?;
        let (done, wait) = oneshot::channel();
        entry
            .control
            .send(Control::Stop { done })
            .await
            .map_err(|_| ManagerError::Gone(name.to_owned()))?;
        wait.await.map_err(|_| ManagerError::Gone(name.to_owned()))
    }

    /// Stops (if running) and starts a plugin again, clearing FAILED. Returns once it serves, or why
    /// its start failed.
    pub async fn restart(&self, name: &str) -> Result<PluginStatus, ManagerError> {
        let entry = self.entry(name)?;
        let (done, wait) = oneshot::channel();
        entry
            .control
            .send(Control::Restart { done })
            .await
            .map_err(|_| ManagerError::Gone(name.to_owned()))?;
        match wait.await {
            Ok(Ok(())) => {
                self.status(name).ok_or_else(|| ManagerError::UnknownPlugin(name.to_owned()))
            }
            Ok(Err(reason)) => Err(ManagerError::Failed(reason)),
            Err(_) => Err(ManagerError::Gone(name.to_owned())),
        }
    }

    /// Blue-green reload: reads the plugin's manifest again, starts the new version beside the serving
    /// one, checks its health (ready, pong, probe, memory), swaps atomically and drains the old one; on
    /// any failure the old version keeps serving, untouched. A stopped or FAILED plugin is simply started
    /// from the new manifest. Returns the report (also for a rollback); an error only when the reload
    /// could not be attempted (unknown plugin, another reload or a stop in progress).
    pub async fn reload(&self, name: &str) -> Result<ReloadReport, ManagerError> {
        let entry = self.entry(name)?;
        let began = std::time::Instant::now();
        let manifest = match Manifest::load(&entry.dir) {
            Ok(manifest) if manifest.name == name => manifest,
            Ok(manifest) => {
                let reason = format!("manifest: name changed to {:?}", manifest.name);
                return Ok(self.refused_report(name, &manifest.version, reason, began));
            }
            Err(err) => {
                let version = self.status(name).map(|s| s.version).unwrap_or_default();
                let reason = format!("manifest: {}", crate::error::Chain(&err));
                return Ok(self.refused_report(name, &version, reason, began));
            }
        };
        let commands: Vec<(String, bool)> =
            manifest.commands.iter().map(|c| (c.name.clone(), c.subcommands)).collect();
        let (done, wait) = oneshot::channel();
        entry
            .control
            .send(Control::Reload { manifest: Box::new(manifest), done })
            .await
            .map_err(|_| ManagerError::Gone(name.to_owned()))?;
        let report = match wait.await {
            Ok(Ok(report)) => report,
            Ok(Err(busy)) => return Err(ManagerError::Busy(busy)),
            Err(_) => return Err(ManagerError::Gone(name.to_owned())),
        };
        if report.outcome == ReloadOutcome::Success {
            for command in self.commands.set_plugin_commands(name, commands) {
                tracing::warn!(message = "command already owned by another plugin; not routed here", plugin = %name, command = %command);
            }
        }
        Ok(report)
    }

    /// Reloads every plugin, one at a time in name order, stopping at the first that does not
    /// succeed. Returns the reports of the reloads attempted.
    pub async fn reload_all(&self) -> Vec<ReloadReport> {
        let names: Vec<String> = self.slots.read().keys().cloned().collect();
        let mut reports = Vec::new();
        for name in names {
            match self.reload(&name).await {
                Ok(report) => {
                    let ok = report.outcome == ReloadOutcome::Success;
                    reports.push(report);
                    if !ok {
                        break;
                    }
                }
                Err(err) => {
                    let version = self.status(&name).map(|s| s.version).unwrap_or_default();
                    let began = std::time::Instant::now();
                    reports.push(self.refused_report(&name, &version, err.to_string(), began));
                    break;
                }
            }
        }
        reports
    }

    fn refused_report(
        &self,
        name: &str,
        to_version: &str,
        reason: String,
        began: std::time::Instant,
    ) -> ReloadReport {
        let from_version = self.status(name).map(|s| s.version).unwrap_or_default();
        self.sink.plugin_reloaded(name, ReloadOutcome::RolledBack, began.elapsed());
        ReloadReport {
            name: name.to_owned(),
            from_version,
            to_version: to_version.to_owned(),
            duration: began.elapsed(),
            outcome: ReloadOutcome::RolledBack,
            reason: Some(reason),
        }
    }

    /// Stops every plugin (in parallel, each bounded by the stop timeout) and ends their slots.
    pub async fn shutdown(&self) {
        let entries: Vec<(String, Arc<Entry>)> =
            std::mem::take(&mut *self.slots.write()).into_iter().collect();
        let timeout = self.options.stop_timeout;
        let stops = entries.into_iter().map(|(name, entry)| async move {
            self.commands.remove_plugin(&name);
            let (done, wait) = oneshot::channel();
            if entry.control.send(Control::Shutdown { done }).await.is_ok()
                && tokio::time::timeout(timeout, wait).await.is_err()
            {
                tracing::warn!(message = "plugin did not stop in time", plugin = %name, timeout = ?timeout);
            }
            let task = entry.task.lock().take();
            if let Some(task) = task {
                task.abort();
            }
        });
        futures_util::future::join_all(stops).await;
    }
}

#[async_trait]
impl PluginControl for PluginManager {
    async fn list(&self) -> Vec<PluginStatus> {
        self.snapshot()
    }

    async fn status(&self, name: &str) -> Result<PluginStatus, ControlError> {
        PluginManager::status(self, name)
            .ok_or_else(|| ControlError::UnknownPlugin(name.to_owned()))
    }

    async fn restart(&self, name: &str) -> Result<PluginStatus, ControlError> {
        PluginManager::restart(self, name).await.map_err(control_error)
    }

    async fn reload(&self, name: &str) -> Result<ReloadReport, ControlError> {
        PluginManager::reload(self, name).await.map_err(control_error)
    }

    async fn reload_all(&self) -> Vec<ReloadReport> {
        PluginManager::reload_all(self).await
    }
}

fn control_error(err: ManagerError) -> ControlError {
    match err {
        ManagerError::UnknownPlugin(name) => ControlError::UnknownPlugin(name),
        ManagerError::Busy(why) => ControlError::Busy(why),
        other => ControlError::Failed(other.to_string()),
    }
}
