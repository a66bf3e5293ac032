//! [`ProcessRuntime`]: each plugin instance is a child process speaking protocol v1 over stdio.
//!
//! This runtime is for Linux. Isolation and cleanup: the child runs in its own process group with the
//! plugin's folder as working directory and without the host's `ROSEY_*` environment variables (they
//! carry secrets). It gets SIGKILL when the host thread that spawned it dies (Linux parent-death
//! signal), and its stdin closes when the host goes away, so it cannot outlive a host that is
//! SIGKILLed or panics. Stopping an instance kills its whole process group. On other Unix systems
//! there is no parent-death signal, so a plugin that ignores its closed stdin may outlive a killed
//! host; on non-Unix systems the crate does not build.
//!
//! Bounded memory: stdout lines over [`MAX_LINE_BYTES`] are discarded (reported as malformed), stdout
//! is read only as fast as the slot consumes it (a flooding plugin blocks on its own pipe), and stderr is
//! logged line by line with a rate limit.

#[cfg(not(unix))]
compile_error!(
    "rosey-core runs plugins as Unix processes (process groups, signals); it supports Linux, \
     builds on other Unix systems, and does not build on this one"
);

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rosey_plugin::framing::{Framed, LineFramer};
use rosey_plugin::protocol::{Decoded, HostMessage, MAX_LINE_BYTES, PluginMessage};
use tokio::io::{AsyncBufRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};

use super::manifest::Manifest;
use super::runtime::{
    ExitReason, INSTANCE_INPUT_CAPACITY, Instance, InstanceOutput, PluginRuntime, RuntimeError,
};
use crate::lines::read_line;

/// Longest stderr line logged as is; longer ones are cut.
const MAX_STDERR_LINE: usize = 16 * 1024;
/// Stderr lines logged per second and plugin instance before the rest are counted and summarized.
const STDERR_LINES_PER_SECOND: u32 = 100;
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
        let program = tokio::task::spawn_blocking(move || resolver.resolve_program(&to_resolve))
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
        sys::die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .map_err(|source| RuntimeError::Spawn { program: program.clone(), source })?;
        let pid = child.id();
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
        tokio::spawn(watch_exit(child, pid, kill_rx, reader, output_tx));
        tracing::debug!(message = "plugin process spawned", plugin = %name, pid, program = %program.display());
        Ok(Instance::new(pid, input_tx, output_rx, kill_tx))
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

/// Logs the child's stderr under the plugin's name, at most [`STDERR_LINES_PER_SECOND`] lines a
/// second; the rest are counted and summarized.
async fn log_stderr<R: AsyncBufRead + Unpin>(mut stderr: R, plugin: String, pid: Option<u32>) {
    let mut framer = LineFramer::new(MAX_STDERR_LINE);
    let mut window = Instant::now();
    let mut logged = 0u32;
    let mut suppressed = 0u64;
    loop {
        let text = match read_line(&mut stderr, &mut framer).await {
            Ok(None) | Err(_) => break,
            Ok(Some(Framed::TooLong(n))) => format!("<{n}-byte line cut>"),
            Ok(Some(Framed::Line)) => String::from_utf8_lossy(framer.line()).into_owned(),
        };
        if window.elapsed() >= Duration::from_secs(1) {
            if suppressed > 0 {
                tracing::warn!(message = "plugin stderr lines dropped (rate limit)", plugin = %plugin, pid, suppressed);
            }
            window = Instant::now();
            logged = 0;
            suppressed = 0;
        }
        if logged < STDERR_LINES_PER_SECOND {
            logged += 1;
            tracing::info!(target: "rosey::plugin::stderr", plugin = %plugin, pid, "{text}");
        } else {
            suppressed += 1;
        }
    }
    if suppressed > 0 {
        tracing::warn!(message = "plugin stderr lines dropped (rate limit)", plugin = %plugin, pid, suppressed);
    }
}

/// Waits for the child to exit (or kills it on request or when the instance is dropped), cleans up
/// its process group, lets the stdout reader finish, and reports the exit last.
async fn watch_exit(
    mut child: Child,
    pid: Option<u32>,
    kill: oneshot::Receiver<()>,
    reader: tokio::task::JoinHandle<()>,
    output: mpsc::Sender<InstanceOutput>,
) {
    let status = tokio::select! {
        status = child.wait() => status,
        _ = kill => {
            if let Some(pid) = pid {
                sys::kill_group(pid);
            }
            let _ = child.start_kill();
            child.wait().await
        }
    };
    // Whatever the plugin left behind in its group goes with it.
    if let Some(pid) = pid {
        sys::kill_group(pid);
    }
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
    use tokio::process::Command;

    /// Arranges for the child to get SIGKILL when the spawning thread (the host) dies (Linux
    /// parent-death signal).
    #[cfg(target_os = "linux")]
    pub(super) fn die_with_parent(command: &mut Command) {
        // Everything the child needs is computed here, before the fork.
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
        // calls (prctl, getppid). It allocates nothing, on the error paths too: `last_os_error` and
        // `from_raw_os_error` build an io::Error from an errno without a heap allocation, which
        // another thread of the parent may have held the allocator's lock for at fork time.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl: then the signal will never come,
                // so do not run at all (ESRCH: the parent process is gone).
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }

    /// Outside Linux there is no parent-death signal: a plugin still sees its stdin close when the
    /// host exits (and the protocol tells it to exit then), but one that ignores its stdin may outlive
    /// a host that is SIGKILLed.
    #[cfg(not(target_os = "linux"))]
    pub(super) fn die_with_parent(_command: &mut Command) {}

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
