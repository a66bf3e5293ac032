//! [`ProcessRuntime`]: each plugin instance is a child process speaking protocol v1 over stdio.
//!
//! This runtime is for Linux. Isolation and cleanup: the plugin runs under a launcher (see
//! `launcher.rs`) that leads its own process group, with the plugin's folder as working directory
//! and without the host's `ROSEY_*` environment variables (they carry secrets). The launcher is a
//! child subreaper, so every descendant of the plugin stays in its tree, `setsid()` escapees
//! included; when the plugin exits, when the host stops the instance and when the host dies (even
//! by SIGKILL: parent-death signal) the launcher kills the whole tree and then exits with the
//! plugin's own status. After it, the host kills what may remain of the group and of the tree it
//! saw (a launcher killed from outside). Memory is capped by the kernel as well as sampled: cgroup
//! v2 `memory.max` when a delegated cgroup is available, else `RLIMIT_DATA`
//! ([`MemoryEnforcement`]). The launcher's system calls (`prctl`, `close_range`, `getdents64`) are
//! Linux's; on non-Unix systems the crate does not build.
//!
//! Bounded memory: stdout lines over [`MAX_LINE_BYTES`] are discarded (reported as malformed), stdout
//! is read only as fast as the slot consumes it (a flooding plugin blocks on its own pipe), and stderr is
//! logged line by line with a rate limit, lines cut to their first 16 KiB.

#[cfg(not(target_os = "linux"))]
compile_error!(
    "rosey-core runs plugins as Linux processes: its launcher needs prctl (parent-death signal, child \
     subreaper) and /proc, so it builds on Linux only"
);

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use rosey_plugin::framing::{Framed, LineFramer};
use rosey_plugin::protocol::{Decoded, HostMessage, MAX_LINE_BYTES, PluginMessage};
use tokio::io::{AsyncBufRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};

use super::launcher::{self, LaunchPlan, MemoryEnforcement, PluginCgroup};
use super::manifest::Manifest;
use super::runtime::{
    ExitReason, INSTANCE_INPUT_CAPACITY, Instance, InstanceOutput, PluginRuntime, RuntimeError,
};
use super::stderr::log_stderr;
use super::tree::{self, TreeRecord};
use crate::lines::read_line;

/// How long the launcher gets to kill the plugin's tree and exit before the host SIGKILLs it.
const LAUNCHER_GRACE: Duration = Duration::from_secs(5);
/// Outputs buffered between the stdout reader and the slot (back-pressure beyond that).
const OUTPUT_BUFFER: usize = 1024;

/// The child-process [`PluginRuntime`], the default.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    search_dirs: Vec<PathBuf>,
}

impl Default for ProcessRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessRuntime {
    /// A runtime that resolves a bare program name in the plugin's folder, then next to the running
    /// executable (where cargo puts the bundled plugins), then on `PATH`.
    pub fn new() -> Self {
        let mut search_dirs = Vec::new();
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            search_dirs.push(dir.to_path_buf());
            // Test binaries live in target/<profile>/deps; the plugins one level up.
            if dir.ends_with("deps")
                && let Some(parent) = dir.parent()
            {
                search_dirs.push(parent.to_path_buf());
            }
        }
        Self { search_dirs }
    }

    /// Adds a directory searched for bare program names, after the plugin's folder and before the
    /// defaults.
    pub fn with_search_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.search_dirs.insert(0, dir.into());
        self
    }

    /// Where `manifest.exec[0]` resolves to: a path with a `/` is taken relative to the plugin's
    /// folder; a bare name is searched in the folder, the search directories, then `PATH`, and the
    /// first executable file wins. Reads file metadata, so it blocks briefly.
    ///
    /// Errors: [`RuntimeError::NoProgram`] for an empty `exec`, [`RuntimeError::NotExecutable`] when
    /// the only file found lacks execute permission, [`RuntimeError::NotFound`] otherwise.
    pub fn resolve_program(&self, manifest: &Manifest) -> Result<PathBuf, RuntimeError> {
        let program = match manifest.exec.first() {
            Some(program) if !program.trim().is_empty() => program.as_str(),
            _ => return Err(RuntimeError::NoProgram { plugin: manifest.name.clone() }),
        };
        if program.contains('/') {
            let path = manifest.dir.join(program);
            return match probe(&path) {
                Found::Executable => Ok(path),
                Found::NotExecutable => Err(RuntimeError::NotExecutable { path }),
                Found::Nothing => {
                    Err(RuntimeError::NotFound { program: path, dir: manifest.dir.clone() })
                }
            };
        }
        let path_dirs = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        let mut not_executable = None;
        for dir in std::iter::once(manifest.dir.clone())
            .chain(self.search_dirs.iter().cloned())
            .chain(path_dirs)
        {
            let candidate = dir.join(program);
            match probe(&candidate) {
                Found::Executable => return Ok(candidate),
                Found::NotExecutable => {
                    not_executable.get_or_insert(candidate);
                }
                Found::Nothing => {}
            }
        }
        Err(match not_executable {
            Some(path) => RuntimeError::NotExecutable { path },
            None => RuntimeError::NotFound {
                program: PathBuf::from(program),
                dir: manifest.dir.clone(),
            },
        })
    }
}

impl ProcessRuntime {
    /// How the memory limit of an instance of `manifest` would be enforced beyond sampling, were it
    /// started now: [`MemoryEnforcement::CgroupMemoryMax`] when the host runs in a delegated cgroup
    /// v2 subtree with the memory controller, else [`MemoryEnforcement::DataRlimit`] (or
    /// [`MemoryEnforcement::Unlimited`] without `limits.memory_mb`). Reads `/proc` and `/sys`, so it
    /// blocks briefly. Each started [`Instance`] reports what it actually got.
    pub fn memory_enforcement(&self, manifest: &Manifest) -> MemoryEnforcement {
        match manifest.limits.memory_mb {
            None => MemoryEnforcement::Unlimited,
            Some(mb) if launcher::delegated_cgroup_parent().is_some() => {
                MemoryEnforcement::CgroupMemoryMax { max_bytes: launcher::cap_bytes(mb) }
            }
            Some(mb) => MemoryEnforcement::DataRlimit { max_bytes: launcher::cap_bytes(mb) },
        }
    }
}

/// The launch plan for `manifest` and what it enforces: a cgroup of its own when one can be made,
/// else `RLIMIT_DATA`. Blocks on `/proc` and `/sys`.
fn plan_memory(manifest: &Manifest) -> (LaunchPlan, MemoryEnforcement) {
    let Some(mb) = manifest.limits.memory_mb else {
        return (LaunchPlan::default(), MemoryEnforcement::Unlimited);
    };
    let max_bytes = launcher::cap_bytes(mb);
    if let Some(parent) = launcher::delegated_cgroup_parent() {
        match PluginCgroup::create(&parent, &manifest.name, max_bytes) {
            Ok(cgroup) => {
                let plan = LaunchPlan { data_limit: None, cgroup: Some(cgroup) };
                return (plan, MemoryEnforcement::CgroupMemoryMax { max_bytes });
            }
            Err(error) => {
                tracing::warn!(message = "cannot create a cgroup for the plugin; capping its memory with RLIMIT_DATA", plugin = %manifest.name, parent = %parent.display(), %error);
            }
        }
    }
    let plan = LaunchPlan { data_limit: Some(max_bytes), cgroup: None };
    (plan, MemoryEnforcement::DataRlimit { max_bytes })
}

/// What is at a program path.
enum Found {
    Executable,
    /// A file without execute permission.
    NotExecutable,
    Nothing,
}

fn probe(path: &Path) -> Found {
    use std::os::unix::fs::PermissionsExt;
    match path.metadata() {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Found::Executable,
        Ok(m) if m.is_file() => Found::NotExecutable,
        _ => Found::Nothing,
    }
}

#[async_trait]
impl PluginRuntime for ProcessRuntime {
    async fn start(&self, manifest: &Manifest) -> Result<Instance, RuntimeError> {
        // Resolving reads file metadata along PATH: keep it off the async worker threads.
        let resolver = self.clone();
        let to_resolve = manifest.clone();
        let (program, plan, enforcement) = tokio::task::spawn_blocking(move || {
            let program = resolver.resolve_program(&to_resolve)?;
            let (plan, enforcement) = plan_memory(&to_resolve);
            Ok::<_, RuntimeError>((program, plan, enforcement))
        })
        .await
        .map_err(|join| RuntimeError::Spawn {
            program: PathBuf::from(manifest.exec.first().cloned().unwrap_or_default()),
            source: std::io::Error::other(join),
        })??;

        let mut command = Command::new(&program);
        command
            .args(manifest.exec.iter().skip(1))
            .current_dir(&manifest.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ROSEY_") {
                command.env_remove(key);
            }
        }
        command.env("ROSEY_PLUGIN_NAME", &manifest.name);
        let installed = plan.install(&mut command);
        let mut cleanup = Cleanup { launcher: None, record: None, cgroup: plan.cgroup };
        let spawned = installed.and_then(|pid| Ok((command.spawn()?, pid)));
        let (mut child, plugin_pid) = match spawned {
            Ok(spawned) => spawned,
            Err(source) => {
                cleanup.finish_blocking().await;
                return Err(RuntimeError::Spawn { program: program.clone(), source });
            }
        };
        let launcher = child.id();
        cleanup.launcher = launcher;
        // The launcher writes the plugin's pid right after its fork, before spawn returns.
        let pid = match tokio::task::spawn_blocking(move || plugin_pid.receive()).await {
            Ok(Ok(pid)) => Some(pid),
            _ => launcher,
        };
        if let (Some(pid), Some(launcher)) = (pid, launcher) {
            cleanup.record = Some((pid, tree::register(pid, launcher)));
        }
        let (stdin, stdout, stderr) =
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(stdin), Some(stdout), Some(stderr)) => (stdin, stdout, stderr),
                // All three are piped above, so this cannot happen; the child dies with `child`.
                _ => {
                    return Err(RuntimeError::Spawn {
                        program,
                        source: std::io::Error::other("child has no stdio pipes"),
                    });
                }
            };
        let name = manifest.name.clone();
        let (input_tx, input_rx) = mpsc::channel(INSTANCE_INPUT_CAPACITY);
        let (output_tx, output_rx) = mpsc::channel(OUTPUT_BUFFER);
        let (kill_tx, kill_rx) = oneshot::channel();

        tokio::spawn(write_stdin(stdin, input_rx));
        tokio::spawn(log_stderr(BufReader::new(stderr), name.clone(), pid));
        let reader = tokio::spawn(read_stdout(BufReader::new(stdout), output_tx.clone()));
        tokio::spawn(watch_exit(child, launcher, kill_rx, reader, output_tx, cleanup));
        tracing::debug!(message = "plugin process spawned", plugin = %name, pid, program = %program.display(), memory = %enforcement);
        Ok(Instance::new(pid, input_tx, output_rx, kill_tx).with_memory_enforcement(enforcement))
    }
}

/// Writes host messages to the child's stdin, batching what is queued; closing the channel closes
/// stdin, which tells the plugin the host is gone.
async fn write_stdin(mut stdin: ChildStdin, mut input: mpsc::Receiver<HostMessage>) {
    let mut buf = Vec::with_capacity(4096);
    while let Some(message) = input.recv().await {
        buf.extend_from_slice(&message.to_line());
        while buf.len() < 64 * 1024 {
            match input.try_recv() {
                Ok(more) => buf.extend_from_slice(&more.to_line()),
                Err(_) => break,
            }
        }
        if stdin.write_all(&buf).await.is_err() || stdin.flush().await.is_err() {
            // The child is gone or closed stdin; the exit watcher reports it.
            return;
        }
        buf.clear();
    }
}

/// Decodes the child's stdout into outputs until EOF.
async fn read_stdout<R: AsyncBufRead + Unpin>(mut stdout: R, output: mpsc::Sender<InstanceOutput>) {
    let mut framer = LineFramer::new(MAX_LINE_BYTES);
    loop {
        let item = match read_line(&mut stdout, &mut framer).await {
            Ok(None) | Err(_) => return,
            Ok(Some(Framed::TooLong(n))) => InstanceOutput::Malformed(format!(
                "line of {n} bytes over the {MAX_LINE_BYTES}-byte limit"
            )),
            Ok(Some(Framed::Line)) if framer.line().iter().all(u8::is_ascii_whitespace) => continue,
            Ok(Some(Framed::Line)) => match PluginMessage::decode(framer.line()) {
                Ok(Decoded::Message(message)) => InstanceOutput::Message(message),
                Ok(Decoded::Unknown(kind)) => InstanceOutput::Unknown(kind),
                Err(err) => InstanceOutput::Malformed(err.to_string()),
            },
        };
        if output.send(item).await.is_err() {
            return;
        }
    }
}

/// What is left to clean up after an instance: the rest of its tree and its cgroup.
#[derive(Debug)]
struct Cleanup {
    launcher: Option<u32>,
    record: Option<(u32, TreeRecord)>,
    cgroup: Option<PluginCgroup>,
}

impl Cleanup {
    /// Kills what remains of the tree (a launcher killed from outside leaves orphans) and removes
    /// the cgroup, off the async threads.
    async fn finish_blocking(self) {
        let _ = tokio::task::spawn_blocking(move || {
            if let Some((root, record)) = &self.record {
                let killed = tree::kill_remains(*root, record, 20);
                if killed > 0 {
                    tracing::debug!(
                        message = "killed what the plugin left behind",
                        launcher = root,
                        killed
                    );
                }
            }
            if let Some(cgroup) = &self.cgroup {
                cgroup.remove();
            }
        })
        .await;
    }
}

/// Waits for the launcher to exit (or stops it on request or when the instance is dropped: SIGTERM,
/// on which it kills the plugin's tree, then SIGKILL to the group after [`LAUNCHER_GRACE`]), kills
/// what remains, lets the stdout reader finish, and reports the exit last.
async fn watch_exit(
    mut child: Child,
    launcher: Option<u32>,
    kill: oneshot::Receiver<()>,
    reader: tokio::task::JoinHandle<()>,
    output: mpsc::Sender<InstanceOutput>,
    cleanup: Cleanup,
) {
    let status = tokio::select! {
        status = child.wait() => status,
        _ = kill => {
            if let Some(launcher) = launcher {
                sys::signal(launcher, libc::SIGTERM);
            }
            match tokio::time::timeout(LAUNCHER_GRACE, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    if let Some(launcher) = launcher {
                        sys::kill_group(launcher);
                    }
                    let _ = child.start_kill();
                    child.wait().await
                }
            }
        }
    };
    // Whatever the plugin left behind in its group or its tree goes with it.
    if let Some(launcher) = launcher {
        sys::kill_group(launcher);
    }
    cleanup.finish_blocking().await;
    let reason = match status {
        Ok(status) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => ExitReason::Code(code),
                (None, Some(signal)) => ExitReason::Signal(signal),
                (None, None) => ExitReason::Stopped("exited".to_owned()),
            }
        }
        Err(e) => ExitReason::Stopped(format!("lost track of the process: {e}")),
    };
    // Give the reader time to deliver what the plugin wrote before dying.
    let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    let _ = output.send(InstanceOutput::Exited(reason)).await;
}

/// The few system calls std does not wrap.
#[allow(unsafe_code)]
mod sys {
    /// Sends `signal` to one process.
    pub(super) fn signal(pid: u32, signal: libc::c_int) {
        if let Ok(pid) = i32::try_from(pid)
            && pid > 0
        {
            // SAFETY: kill(2) on a positive pid; no memory is involved.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// SIGKILL to the process group led by `pid` (the plugin and anything it spawned).
    pub(super) fn kill_group(pid: u32) {
        if let Ok(pid) = i32::try_from(pid)
            && pid > 0
        {
            // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}
