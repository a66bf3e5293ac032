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
use super::slot::{Control, Done, Shared, SharedCell, Slot};
use super::status::{PluginState, PluginStatus, ReloadFailure, ReloadReport, StartStep};
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

struct Entry {
    /// The plugin's folder, where a reload reads the manifest again.
    dir: std::path::PathBuf,
    /// The manifest of a plugin without a folder (an in-process one): a reload starts it again.
    built_in: Option<Box<Manifest>>,
    control: mpsc::Sender<Control>,
    shared: SharedCell,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Builds a [`PluginManager`]: everything that applies to all plugins is set before any plugin exists.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use rosey_core::bus::MemoryBus;
/// use rosey_core::metrics::NoopSink;
/// use rosey_core::plugin::{ManagerOptions, PluginManager, ProcessRuntime};
///
/// let manager = PluginManager::builder(Arc::new(MemoryBus::new()), Arc::new(ProcessRuntime::new()))
///     .metrics_sink(Arc::new(NoopSink))
///     .options(ManagerOptions { sample_interval: Duration::from_secs(2), ..ManagerOptions::default() })
///     .build();
/// assert!(manager.snapshot().is_empty());
/// ```
pub struct PluginManagerBuilder {
    bus: Arc<dyn EventBus>,
    runtime: Arc<dyn PluginRuntime>,
    sink: Arc<dyn MetricsSink>,
    options: ManagerOptions,
}

impl std::fmt::Debug for PluginManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginManagerBuilder")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PluginManagerBuilder {
    /// Reports events, crashes, restarts and reloads to `sink` (default: [`NoopSink`]).
    pub fn metrics_sink(mut self, sink: Arc<dyn MetricsSink>) -> Self {
        self.sink = sink;
        self
    }

    /// Uses `options` (default: [`ManagerOptions::default`]).
    pub fn options(mut self, options: ManagerOptions) -> Self {
        self.options = options;
        self
    }

    /// The manager, with no plugins yet.
    pub fn build(self) -> PluginManager {
        PluginManager {
            bus: self.bus,
            runtime: self.runtime,
            sink: self.sink,
            commands: CommandTable::new(),
            options: self.options,
            slots: RwLock::new(BTreeMap::new()),
        }
    }
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
    /// A manager with no plugins, default options and no metrics sink; see [`PluginManager::builder`]
    /// for the others.
    pub fn new(bus: Arc<dyn EventBus>, runtime: Arc<dyn PluginRuntime>) -> Self {
        Self::builder(bus, runtime).build()
    }

    /// A builder for a manager with a metrics sink or other options.
    pub fn builder(
        bus: Arc<dyn EventBus>,
        runtime: Arc<dyn PluginRuntime>,
    ) -> PluginManagerBuilder {
        PluginManagerBuilder {
            bus,
            runtime,
            sink: Arc::new(NoopSink),
            options: ManagerOptions::default(),
        }
    }

    /// The command table the manager keeps from its plugins' manifests, for the router.
    pub fn command_table(&self) -> CommandTable {
        self.commands.clone()
    }

    /// Loads and starts every plugin under `dir` (read off the async threads). Returns the manifests
    /// that could not be loaded; the other plugins load anyway. Does not wait for the plugins to be
    /// ready: they start concurrently.
    pub async fn load_dir(&self, dir: &Path) -> Vec<ManifestError> {
        let owned = dir.to_path_buf();
        let found = tokio::task::spawn_blocking(move || manifest::discover(&owned)).await;
        let (manifests, mut errors) = match found {
            Ok(found) => found,
            Err(err) => {
                tracing::error!(message = "reading the plugin folder failed", dir = %dir.display(), %err);
                return Vec::new();
            }
        };
        for manifest in manifests {
            let path = manifest.dir.join(manifest::MANIFEST_FILE);
            if let Err(err) = self.add(manifest).await {
                errors.push(ManifestError::NotAdded { path, source: Box::new(err) });
            }
        }
        errors
    }

    /// Adds a plugin and starts it (without waiting for it to be ready). Refused, with nothing
    /// subscribed, when the name is taken or one of its commands belongs to another plugin
    /// ([`ControlError::CommandOwned`]): a command has exactly one owner, the plugin added first
    /// ([`load_dir`](Self::load_dir) adds in folder-name order, so the owner does not depend on timing).
    pub async fn add(&self, manifest: Manifest) -> Result<(), ControlError> {
        let name = manifest.name.clone();
        let shared: SharedCell = Arc::new(Mutex::new(Shared::new(&manifest)));
        let (control, control_rx) = mpsc::channel(16);
        {
            let mut slots = self.slots.write();
            if slots.contains_key(&name) {
                return Err(ControlError::AlreadyLoaded(name));
            }
            // Under the slots' lock, so two adds cannot both take a command.
            self.commands.claim_manifest(&manifest)?;
            slots.insert(
                name.clone(),
                Arc::new(Entry {
                    dir: manifest.dir.clone(),
                    built_in: manifest
                        .dir
                        .as_os_str()
                        .is_empty()
                        .then(|| Box::new(manifest.clone())),
                    control,
                    shared: shared.clone(),
                    task: Mutex::new(None),
                }),
            );
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

    fn entry(&self, name: &str) -> Result<Arc<Entry>, ControlError> {
        self.slots.read().get(name).cloned().ok_or_else(|| ControlError::NotFound(name.to_owned()))
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

    /// Waits until the plugin is RUNNING (`Ok`) or FAILED ([`ControlError::Failed`]), at most
    /// `timeout` ([`ControlError::Timeout`]).
    pub async fn wait_running(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<PluginStatus, ControlError> {
        let entry = self.entry(name)?;
        let mut state: watch::Receiver<PluginState> = entry.shared.lock().watch_state();
        let outcome = tokio::time::timeout(
            timeout,
            state.wait_for(|s| matches!(s, PluginState::Running | PluginState::Failed)),
        )
        .await;
        let status = self.status(name).ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        match outcome {
            Ok(Ok(_)) if status.state == PluginState::Running => Ok(status),
            Ok(Ok(_)) => Err(ControlError::Failed {
                name: name.to_owned(),
                reason: status.last_error.unwrap_or_else(|| "crashed too often".to_owned()),
            }),
            Ok(Err(_)) => Err(ControlError::ShuttingDown(name.to_owned())),
            Err(_) => Err(ControlError::Timeout {
                name: name.to_owned(),
                state: status.state,
                waited: timeout,
            }),
        }
    }

    /// Sends `make(done)` to the plugin's slot and waits for the answer.
    async fn ask<T>(
        &self,
        name: &str,
        make: impl FnOnce(Done<T>) -> Control,
    ) -> Result<T, ControlError> {
        let entry = self.entry(name)?;
        let (done, wait) = oneshot::channel();
        let gone = || ControlError::ShuttingDown(name.to_owned());
        entry.control.send(make(done)).await.map_err(|_| gone())?;
        wait.await.map_err(|_| gone())?
    }

    /// Stops a plugin: it unsubscribes and its instance gets `shutdown`, then SIGKILL after the grace
    /// period. Returns once it has stopped.
    pub async fn stop(&self, name: &str) -> Result<(), ControlError> {
        self.ask(name, |done| Control::Stop { done }).await
    }

    /// Stops (if running) and starts a plugin again, clearing FAILED. Returns once it serves, or why
    /// its start failed ([`ControlError::StartFailed`], naming the step).
    pub async fn restart(&self, name: &str) -> Result<PluginStatus, ControlError> {
        self.ask(name, |done| Control::Restart { done }).await?;
        self.status(name).ok_or_else(|| ControlError::NotFound(name.to_owned()))
    }

    /// Blue-green reload: reads the plugin's manifest again (an in-process plugin, which has none on
    /// disk, keeps the one it was added with), starts the new version beside the serving one, checks its health (ready, pong, probe, memory), swaps atomically and drains the old one; on
    /// any failure the old version keeps serving, untouched, and the answer is
    /// [`ControlError::ReloadFailed`] naming the step. A stopped or FAILED plugin is simply started from
    /// the new manifest. Concurrent reloads of one plugin share one attempt and its result.
    pub async fn reload(&self, name: &str) -> Result<ReloadReport, ControlError> {
        let entry = self.entry(name)?;
        let began = std::time::Instant::now();
        let dir = entry.dir.clone();
        let built_in = entry.built_in.clone();
        // A plugin without a folder (in-process) has no manifest to read again: it restarts as it is.
        let loaded = match built_in {
            Some(manifest) => Ok(Ok(*manifest)),
            None => tokio::task::spawn_blocking(move || Manifest::load(&dir)).await,
        };
        let manifest = match loaded {
            Ok(Ok(manifest)) if manifest.name == name => manifest,
            Ok(Ok(manifest)) => {
                let reason = format!("name changed to {:?}", manifest.name);
                return Err(self.refused(name, &manifest.version, reason, began));
            }
            Ok(Err(err)) => {
                let version = self.status(name).map(|s| s.version).unwrap_or_default();
                return Err(self.refused(name, &version, err.to_string(), began));
            }
            Err(err) => {
                let version = self.status(name).map(|s| s.version).unwrap_or_default();
                return Err(self.refused(
                    name,
                    &version,
                    crate::error::Chain(&err).to_string(),
                    began,
                ));
            }
        };
        let claimed = manifest.clone();
        // A reload cannot take a command another plugin owns.
        if let Some(clash) =
            self.commands.clash(name, claimed.commands.iter().map(|c| c.name.clone()))
        {
            return Err(self.refused(name, &manifest.version, clash.to_string(), began));
        }
        let manifest = Box::new(manifest);
        let report = self.ask(name, |done| Control::Reload { manifest, done }).await?;
        if let Err(clash) = self.commands.claim_manifest(&claimed) {
            // Another plugin took the command while this one reloaded: it keeps it.
            tracing::error!(message = "command taken during the reload; not routed to the new version", plugin = %name, %clash);
        }
        Ok(report)
    }

    /// The version in the plugin's manifest on disk, the one a [`reload`](Self::reload) would start
    /// (read on the blocking pool); `None` for an unknown plugin, a plugin without a folder (an
    /// in-process one) or a manifest that cannot be read or names another plugin.
    pub async fn pending_version(&self, name: &str) -> Option<String> {
        let dir = self.entry(name).ok()?.dir.clone();
        if dir.as_os_str().is_empty() {
            return None;
        }
        match Manifest::load_async(&dir).await {
            Ok(manifest) if manifest.name == name => Some(manifest.version),
            Ok(_) | Err(_) => None,
        }
    }

    /// Reloads every plugin, one at a time in name order, stopping at the first that does not
    /// succeed. Returns the reports of the reloads attempted (the failed one included).
    pub async fn reload_all(&self) -> Vec<ReloadReport> {
        let names: Vec<String> = self.slots.read().keys().cloned().collect();
        let mut reports = Vec::new();
        for name in names {
            match self.reload(&name).await {
                Ok(report) => reports.push(report),
                Err(ControlError::ReloadFailed(failure)) => {
                    reports.push(failure.into());
                    break;
                }
                Err(err) => {
                    let version = self.status(&name).map(|s| s.version).unwrap_or_default();
                    let from_version = version.clone();
                    reports.push(ReloadReport {
                        name: name.clone(),
                        from_version,
                        to_version: version,
                        duration: Duration::ZERO,
                        outcome: ReloadOutcome::RolledBack,
                        failed_step: None,
                        reason: Some(err.to_string()),
                    });
                    break;
                }
            }
        }
        reports
    }

    /// A reload that failed before any instance started (the manifest): reported like a rollback.
    fn refused(
        &self,
        name: &str,
        to_version: &str,
        reason: String,
        began: std::time::Instant,
    ) -> ControlError {
        let from_version = self.status(name).map(|s| s.version).unwrap_or_default();
        self.sink.plugin_reloaded(name, ReloadOutcome::RolledBack, began.elapsed());
        tracing::warn!(message = "reload refused", plugin = %name, step = %StartStep::Manifest, reason = %reason);
        ControlError::ReloadFailed(ReloadFailure {
            name: name.to_owned(),
            from_version,
            to_version: to_version.to_owned(),
            step: StartStep::Manifest,
            reason,
            duration: began.elapsed(),
        })
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
                // The slot ends by itself after a shutdown; one that did not in time is ended here,
                // which kills its instances.
                task.abort();
                let _ = task.await;
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
        PluginManager::status(self, name).ok_or_else(|| ControlError::NotFound(name.to_owned()))
    }

    async fn restart(&self, name: &str) -> Result<PluginStatus, ControlError> {
        PluginManager::restart(self, name).await
    }

    async fn reload(&self, name: &str) -> Result<ReloadReport, ControlError> {
        PluginManager::reload(self, name).await
    }

    async fn reload_all(&self) -> Vec<ReloadReport> {
        PluginManager::reload_all(self).await
    }

    async fn pending_version(&self, name: &str) -> Option<String> {
        PluginManager::pending_version(self, name).await
    }
}
