//! A throwaway `nats-server` per test: JetStream on, 127.0.0.1 only, a port the server picks itself,
//! its store in a temporary directory; killed and removed when dropped.
//!
//! The shared server of `scripts/test` (`ROSEY_TEST_NATS_URL`) suits tests that use their own
//! subjects. A whole Rosey node does not: its router and control API join global queue groups and
//! its chat subjects are fixed, so two nodes on one server hear each other. Such a test starts its own.
//!
//! ```no_run
//! use rosey_testkit::nats::NatsServer;
//!
//! let nats = NatsServer::start(); // panics, with the install command, when there is none
//! let url = nats.url(); // nats://127.0.0.1:<port>, for the code under test
//! # let _ = url;
//! drop(nats); // killed, its store removed
//! ```

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long [`NatsServer::try_start`] waits for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the start-up wait looks for the ports file and the listening port.
const START_POLL: Duration = Duration::from_millis(20);

const INSTALL: &str = "Install it with\n\n    sudo apt-get install nats-server\n\n(or set NATS_SERVER \
                       to its path), or run scripts/test, which installs it when it can.";

/// Why a throwaway NATS server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    /// No `nats-server` program was found.
    #[error("nats-server is not installed (looked at {looked}). {INSTALL}")]
    NotInstalled {
        /// Where it was looked for.
        looked: String,
    },
    /// A file system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server exited, or did not accept connections in time; with the end of its log.
    #[error("nats-server did not start: {reason}; its log ends with:\n{log}")]
    NotStarted {
        /// What went wrong.
        reason: String,
        /// The last lines of the server's log.
        log: String,
    },
}

/// A `nats-server` of this test's own. Dropping it kills the server and removes its directory.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl NatsServer {
    /// Starts a server and waits (at most 10 s) until it greets a client.
    ///
    /// # Panics
    /// When it cannot, with the reason (and the install command when `nats-server` is missing):
    /// tests that need it are never skipped.
    pub fn start() -> NatsServer {
        Self::try_start().unwrap_or_else(|error| panic!("{error}"))
    }

    /// Starts a server and waits (at most 10 s) until it greets a client.
    ///
    /// The program is `$NATS_SERVER` when set, else `nats-server` from `PATH`, `/usr/sbin`,
    /// `/usr/local/sbin` or `/usr/local/bin`. It listens on 127.0.0.1 on a port it picks itself (no
    /// race with another process for a port chosen beforehand), with JetStream storing in a fresh
    /// temporary directory.
    pub fn try_start() -> Result<NatsServer, NatsServerError> {
        Self::try_start_with(true)
    }

    /// A server like [`start`](Self::start) but with JetStream off, as a plain NATS deployment runs.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_without_jetstream() -> NatsServer {
        Self::try_start_with(false).unwrap_or_else(|error| panic!("{error}"))
    }

    fn try_start_with(jetstream: bool) -> Result<NatsServer, NatsServerError> {
        let program = program()?;
        let dir = fresh_dir()?;
        let log = dir.join("nats.log");
        let mut command = Command::new(&program);
        command.args(["-a", "127.0.0.1", "-p", "-1"]);
        if jetstream {
            command.arg("-js").arg("-sd").arg(dir.join("store"));
        }
        let spawned = command
            .arg("--ports_file_dir")
            .arg(&dir)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(source) => {
                remove_dir(&dir);
                let context = format!("starting {}", program.display());
                return Err(NatsServerError::Io { context, source });
            }
        };
        // From here on, dropping `server` kills the process and removes the directory.
        let mut server = NatsServer { child, dir, url: String::new() };
        server.url = server.wait_until_serving()?;
        tracing::debug!(url = %server.url, pid = server.child.id(), "nats-server started");
        Ok(server)
    }

    /// The server's URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Waits for the ports file the server writes once it listens, then for its `INFO` greeting.
    fn wait_until_serving(&mut self) -> Result<String, NatsServerError> {
        let ports_file = self.dir.join(format!("nats-server_{}.ports", self.child.id()));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Err(self.not_started(format!("it exited ({status})"))),
                Ok(None) => {}
                Err(source) => {
                    let context = "waiting for nats-server".to_owned();
                    return Err(NatsServerError::Io { context, source });
                }
            }
            if let Some(port) = client_port(&ports_file)
                && greets(port)
            {
                return Ok(format!("nats://127.0.0.1:{port}"));
            }
            if Instant::now() >= deadline {
                let reason = format!("no connection accepted within {START_TIMEOUT:?}");
                return Err(self.not_started(reason));
            }
            std::thread::sleep(START_POLL);
        }
    }

    fn not_started(&self, reason: String) -> NatsServerError {
        NatsServerError::NotStarted { reason, log: tail(&self.dir.join("nats.log")) }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // A throwaway server has nothing to save: SIGKILL, and reap it so its files are closed.
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_dir(&self.dir);
    }
}

/// The `nats-server` to run.
fn program() -> Result<PathBuf, NatsServerError> {
    if let Some(path) = std::env::var_os("NATS_SERVER").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(NatsServerError::NotInstalled { looked: format!("NATS_SERVER={}", path.display()) })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let fallbacks = ["/usr/sbin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(fallbacks)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| NatsServerError::NotInstalled {
            looked: "PATH, /usr/sbin, /usr/local/sbin, /usr/local/bin".to_owned(),
        })
}

/// A new directory `rosey-nats-<pid>-<n>-<nanos>` in the system's temporary directory.
fn fresh_dir() -> Result<PathBuf, NatsServerError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("rosey-nats-{}-{n}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|source| NatsServerError::Io {
        context: format!("creating {}", dir.display()),
        source,
    })?;
    Ok(dir)
}

fn remove_dir(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir) {
        tracing::debug!(path = %dir.display(), %error, "could not remove the NATS server's directory");
    }
}

/// The client port in the server's ports file (`{"nats": ["nats://127.0.0.1:PORT"], …}`), once
/// the file is there.
fn client_port(ports_file: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(ports_file).ok()?;
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = ports["nats"].as_array()?.first()?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// Whether a NATS server on 127.0.0.1:`port` sends its `INFO` line to a new client.
fn greets(port: u16) -> bool {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    if stream.set_read_timeout(Some(Duration::from_secs(2))).is_err() {
        return false;
    }
    let mut first = String::new();
    BufReader::new(stream).read_line(&mut first).is_ok() && first.starts_with("INFO ")
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(10)..].join("\n");
    if tail.is_empty() { format!("(nothing in {})", path.display()) } else { tail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_started_server_greets_clients_and_is_gone_with_its_files_once_dropped() {
        let server = NatsServer::start();
        let port: u16 = server.url().rsplit(':').next().unwrap().parse().unwrap();
        assert!(server.url().starts_with("nats://127.0.0.1:"), "{}", server.url());
        assert!(greets(port), "the server answers at {}", server.url());
        let dir = server.dir.clone();
        assert!(dir.join("store").is_dir(), "JetStream stores in the temporary directory");
        drop(server);
        assert!(!dir.exists(), "{} is removed", dir.display());
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens any more");
    }

    #[test]
    fn two_servers_listen_on_two_ports() {
        let (a, b) = (NatsServer::start(), NatsServer::start());
        assert_ne!(a.url(), b.url());
    }
}
