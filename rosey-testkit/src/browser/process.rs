//! The `chromedriver` process and the temporary directory it and Chromium write to.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use std::{fs, io};

use tokio::sync::oneshot;

use super::{BrowserError, INSTALL_HINT};

/// The program named by `$var`, or `default`, if it is an executable file.
pub(super) fn installed(var: &str, default: &str) -> Result<PathBuf, BrowserError> {
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from);
    let executable = fs::metadata(&path).is_ok_and(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.is_file() && m.permissions().mode() & 0o111 != 0
    });
    if executable {
        Ok(path)
    } else {
        Err(BrowserError::NotInstalled { which: path, install_hint: INSTALL_HINT })
    }
}

/// A directory under the system's temporary directory, removed on drop.
pub(super) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `rosey-browser-<pid>-<n>-<nanos>` in the system's temporary directory.
    pub(super) fn create() -> Result<TempDir, BrowserError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let mut last = None;
        for _ in 0..10 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("rosey-browser-{}-{n}-{nanos}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(source) => {
                    return Err(BrowserError::Io {
                        context: format!("creating {}", path.display()),
                        source,
                    });
                }
            }
        }
        let source = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
        Err(BrowserError::Io {
            context: format!("creating a directory in {}", base.display()),
            source,
        })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // A second try: a process killed a moment ago may have finished a last write in between.
        let removed = fs::remove_dir_all(&self.path).or_else(|_| fs::remove_dir_all(&self.path));
        if let Err(error) = removed {
            tracing::debug!(path = %self.path.display(), %error, "could not remove the browser's directory");
        }
    }
}

/// `chromedriver`, leading its own process group, which the Chromium it starts joins. Dropping
/// it kills the whole group, then removes the directory.
pub(super) struct DriverProcess {
    child: Child,
    // Dropped after `child` is killed (see `Drop`), so Chromium no longer writes to it.
    dir: TempDir,
}

impl DriverProcess {
    /// Starts `chromedriver --port=0` and returns once it has announced the port it listens on,
    /// within `timeout`.
    pub(super) async fn spawn(
        program: &Path,
        dir: TempDir,
        timeout: Duration,
    ) -> Result<(DriverProcess, u16), BrowserError> {
        let log_path = dir.path.join("chromedriver.log");
        let spawn_error =
            |reason: String| BrowserError::Spawn { program: program.to_owned(), reason };
        let log = fs::File::create(&log_path)
            .map_err(|e| spawn_error(format!("creating {}: {e}", log_path.display())))?;
        let mut command = Command::new(program);
        // Chromium writes outside its profile too (crash reports, the NSS database, caches):
        // under this HOME, all of it stays in the directory and goes with it.
        let home = dir.path.join("home");
        fs::create_dir(&home)
            .map_err(|e| spawn_error(format!("creating {}: {e}", home.display())))?;
        command
            .arg("--port=0")
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        command.process_group(0);
        let mut child = command.spawn().map_err(|e| spawn_error(e.to_string()))?;
        let stdout = child.stdout.take();
        let mut driver = DriverProcess { child, dir };
        let Some(stdout) = stdout else {
            return Err(spawn_error("no stdout pipe".into()));
        };
        let (port_tx, port_rx) = oneshot::channel();
        watch_stdout(stdout, port_tx);
        let port = match tokio::time::timeout(timeout, port_rx).await {
            Ok(Ok(port)) => port,
            Ok(Err(_)) => {
                let status = driver.child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
                return Err(spawn_error(format!(
                    "it exited ({status}) before listening: {}",
                    tail(&log_path)
                )));
            }
            Err(_) => {
                return Err(spawn_error(format!(
                    "it did not listen within {timeout:?}: {}",
                    tail(&log_path)
                )));
            }
        };
        Ok((driver, port))
    }

    /// `chromedriver`'s process id, which is also its process group's.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory Chromium's profile and home are in.
    pub(super) fn dir(&self) -> &Path {
        &self.dir.path
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        sys::kill_group(self.child.id());
        if let Err(error) = self.child.wait() {
            tracing::debug!(%error, "could not reap chromedriver");
        }
        kill_strays(&self.dir.path);
    }
}

/// SIGKILL to every process that names `dir` in its command line: Chromium's crash handler
/// detaches into a session of its own (so the group kill misses it), with its database under
/// the `HOME` set here.
fn kill_strays(dir: &Path) {
    let needle = dir.as_os_str().as_bytes();
    let Ok(entries) = fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else { continue };
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            tracing::debug!(pid, "killing a leftover browser process");
            sys::kill_process(pid);
        }
    }
}

/// Reads `chromedriver`'s stdout on a thread of its own: sends the port from its
/// `… started successfully on port N.` line, then keeps draining (into the debug log) so the
/// pipe never fills, until every process holding it is gone.
fn watch_stdout(stdout: impl Read + Send + 'static, port: oneshot::Sender<u16>) {
    let reader = move || {
        let mut port = Some(port);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            tracing::debug!(line, "chromedriver");
            let announced = line
                .strip_prefix("ChromeDriver was started successfully on port ")
                .and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok());
            if let Some(number) = announced
                && let Some(tx) = port.take()
            {
                let _ = tx.send(number);
            }
        }
    };
    if let Err(error) = std::thread::Builder::new().name("chromedriver-stdout".into()).spawn(reader)
    {
        // The sender is dropped with the closure: start() reports chromedriver as not listening.
        tracing::warn!(%error, "could not start the chromedriver stdout reader");
    }
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    if tail.is_empty() { format!("(nothing in {})", path.display()) } else { tail }
}

/// The system call std does not wrap.
#[allow(unsafe_code)]
mod sys {
    /// SIGKILL to process `pid`.
    pub(super) fn kill_process(pid: u32) {
        signal(pid, 1);
    }

    /// SIGKILL to the process group led by `pid`.
    pub(super) fn kill_group(pid: u32) {
        signal(pid, -1);
    }

    fn signal(pid: u32, sign: i32) {
        // Never 0, -1 or 1: those would mean our own group, every process, or init.
        if let Ok(pid) = i32::try_from(pid)
            && pid > 1
        {
            // SAFETY: kill(2) takes no pointers; a negative pid signals a process group.
            unsafe {
                libc::kill(sign * pid, libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_an_error_with_the_install_command() {
        let error = installed("ROSEY_TEST_VARIABLE_NOBODY_SETS", "/nonexistent/chromedriver")
            .expect_err("the program does not exist");
        let message = error.to_string();
        assert!(message.contains("/nonexistent/chromedriver"), "{message}");
        assert!(message.contains("sudo apt-get install chromium chromium-driver"), "{message}");
    }

    #[test]
    fn a_directory_is_not_a_program() {
        let error =
            installed("ROSEY_TEST_VARIABLE_NOBODY_SETS", "/").expect_err("/ is a directory");
        assert!(matches!(error, BrowserError::NotInstalled { .. }), "{error}");
    }
}
