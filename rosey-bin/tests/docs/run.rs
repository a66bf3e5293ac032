//! Running things for the doc tests: scratch directories laid out like the repository, commands
//! with a time limit, and the environment a documented command sees.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use super::markdown::repo;

/// The `rosey` binary under test.
pub(crate) const ROSEY: &str = env!("CARGO_BIN_EXE_rosey");

/// What a documented command finds in its working directory: the repository's folders it may name
/// (as symbolic links, so `rosey run` finds `plugins/` and `rosey check-config examples/…` works),
/// and nothing else.
const LINKED: [&str; 5] = ["plugins", "examples", "docs", "deploy", "scripts"];

/// A fresh directory laid out like the repository root, with `bin/rosey` (first on the `PATH` of
/// [`command`]) pointing at the binary under test. Removed by [`Scratch::drop`] unless the test
/// failed, so a failure leaves what it saw behind.
pub(crate) struct Scratch {
    pub(crate) dir: PathBuf,
}

impl Scratch {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rosey-docs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let root = repo();
        for name in LINKED {
            std::os::unix::fs::symlink(root.join(name), dir.join(name)).unwrap();
        }
        std::os::unix::fs::symlink(ROSEY, dir.join("bin/rosey")).unwrap();
        Self { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A command run in this directory with the environment of [`command`].
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        command(program, &self.dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `program` in `dir`, with `bin/` of `dir` first on the `PATH`, no `ROSEY_*` variable of the
/// machine running the tests, no `RUST_LOG`, and stdin from /dev/null.
pub(crate) fn command(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.current_dir(dir)
        .env("PATH", format!("{}:{path}", dir.join("bin").display()))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("ROSEY_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// How a command ended.
#[derive(Debug)]
pub(crate) struct Ran {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Ran {
    /// The exit status and both streams, for a failure message.
    pub(crate) fn describe(&self) -> String {
        format!("{}\n--- stdout\n{}--- stderr\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `cmd` (in a process group of its own) with its output captured; past `limit` the whole
/// group is killed and the error says so with what was captured.
pub(crate) fn run(mut cmd: Command, limit: Duration) -> Result<Ran, String> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn().map_err(|err| format!("cannot start {cmd:?}: {err}"))?;
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let pid = child.id();
    let (done, waited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let status = match waited.recv_timeout(limit) {
        Ok(status) => status.map_err(|err| format!("cannot wait for {cmd:?}: {err}"))?,
        Err(_) => {
            // The group: a shell's children (a `rosey run` it started) go too.
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
            let _ = waited.recv();
            return Err(format!(
                "still running after {limit:?}, killed\n--- stdout\n{}--- stderr\n{}",
                stdout.recv().unwrap_or_default(),
                stderr.recv().unwrap_or_default()
            ));
        }
    };
    Ok(Ran {
        status,
        stdout: stdout.recv().unwrap_or_default(),
        stderr: stderr.recv().unwrap_or_default(),
    })
}

/// Reads a stream to its end on a thread of its own; the receiver gets the text.
fn read_all(mut stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// Looks `name` up on the `PATH` (and in /usr/sbin, where Debian puts some servers).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| candidate.is_file())
}

/// `promtool`: `PROMTOOL` when set (scripts/test exports it), else from the `PATH`. Its absence
/// fails the test that needs it, with the command that installs it: no check is skipped.
pub(crate) fn promtool() -> PathBuf {
    std::env::var_os("PROMTOOL").map(PathBuf::from).or_else(|| find_program("promtool")).expect(
        "promtool is needed to check the Prometheus blocks of the docs: `apt-get install \
         prometheus` (or run the tests through scripts/test, which installs it)",
    )
}

/// The bundled plugins' programs, which `rosey run` looks for next to itself: cargo builds them for
/// the workspace's tests, not for `cargo test -p rosey-bin` alone, so say how when they are missing.
pub(crate) fn require_bundled_plugins() {
    let dir = Path::new(ROSEY).parent().unwrap();
    let missing: Vec<&str> = ["rosey-dice-roller", "rosey-8ball", "rosey-quotes"]
        .into_iter()
        .filter(|program| !dir.join(program).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "{missing:?} not built in {}: run `cargo build -p rosey-dice-roller -p rosey-8ball -p \
         rosey-quotes` first (scripts/test builds the whole workspace)",
        dir.display()
    );
}
