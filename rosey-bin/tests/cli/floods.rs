//! Hostile plugins flooding a real `rosey run`: the host's memory stays bounded and the other plugins
//! keep answering. (How fast they answer meanwhile is a speed target: benches/RESULTS.md.)

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{ROSEY, lines_of, scratch_dir, write_config};

/// The host's memory budget under any flood.
const HOST_RSS_LIMIT_MB: f64 = 64.0;

/// A plugin folder with `calm` and `hostile`, both the host tests' testbed plugin.
fn plugin_folder(root: &Path) -> std::path::PathBuf {
    let testbed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rosey-core/tests/plugins/testbed.py");
    let plugins = root.join("flood-plugins");
    for name in ["calm", "hostile"] {
        let dir = plugins.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("plugin.toml"),
            format!(
                "name = \"{name}\"\nversion = \"1.0.0\"\nexec = [\"python3\", {:?}]\ncommands = [\"{name}\"]\n\
                 [timeouts]\nevent_secs = 60\n",
                testbed.display().to_string()
            ),
        )
        .unwrap();
    }
    plugins
}

struct Host {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Host {
    fn start() -> Self {
        let dir = scratch_dir();
        let plugins = plugin_folder(&dir);
        let config = write_config(
            &dir,
            &format!(
                r#"{{"plugin_dir": {:?}, "logging": {{"file": null, "level": "warn"}}}}"#,
                plugins.display().to_string()
            ),
        );
        let mut child = std::process::Command::new(ROSEY)
            .args(["run", "--config", config.to_str().unwrap()])
            .current_dir(&dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = lines_of(child.stdout.take().unwrap());
        let stdin = child.stdin.take().unwrap();
        let mut host = Self { child, stdin, lines };
        // Both plugins answer before any flood starts.
        host.answers("calm", "up");
        host.answers("hostile", "up");
        host
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Sends `!<plugin> echo <word>` and waits for the echo.
    fn answers(&mut self, plugin: &str, word: &str) {
        self.say(&format!("bob: !{plugin} echo {word}"));
        let expected = format!("rosey: {word}");
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("{plugin} did not answer {word:?}"));
            if line == expected {
                return;
            }
        }
    }

    /// The host's peak resident memory so far (VmHWM), MB.
    fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb / 1024.0
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `flood` through the hostile plugin, checks the calm one answers during and after it, and
/// that the host never held more than the budget.
fn host_stays_small_under(flood: &str) {
    let mut host = Host::start();
    host.say(&format!("mallory: !hostile {flood}"));
    for i in 0..5 {
        host.answers("calm", &format!("during-{i}"));
    }
    // The flood is over once the hostile plugin answers again (after it, in order).
    host.answers("hostile", "after");
    host.answers("calm", "after");
    let peak = host.peak_rss_mb();
    assert!(peak < HOST_RSS_LIMIT_MB, "{flood}: host peak RSS {peak:.1} MB");
}

#[test]
fn four_hundred_replies_of_a_megabyte_keep_the_host_small() {
    host_stays_small_under("big-replies 400 1000");
}

#[test]
fn a_million_requests_from_a_plugin_that_does_not_read_keep_the_host_small() {
    host_stays_small_under("requests 1000000");
}

#[test]
fn a_log_flood_keeps_the_host_small() {
    host_stays_small_under("log-flood 300000");
}

#[test]
fn a_stderr_flood_keeps_the_host_small() {
    host_stays_small_under("flood-stderr 100");
}

#[test]
fn a_stdout_flood_of_unknown_lines_keeps_the_host_small() {
    host_stays_small_under("flood-stdout 100");
}
