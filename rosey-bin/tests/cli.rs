//! The `rosey` binary as an operator uses it: real processes, real signals, real files.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rosey_testkit::cytube::{Account, FakeCytube, FakeCytubeOptions, ServerEvent};
use tokio::sync::broadcast::Receiver;

const ROSEY: &str = env!("CARGO_BIN_EXE_rosey");

#[path = "cli/admin.rs"]
mod admin;
#[path = "cli/checklist.rs"]
mod checklist;
#[path = "cli/cluster.rs"]
mod cluster;
#[path = "cli/dashboard.rs"]
mod dashboard;
#[path = "cli/e2e.rs"]
mod e2e;
#[path = "cli/floods.rs"]
mod floods;
#[path = "cli/interop.rs"]
mod interop;
#[path = "cli/prometheus.rs"]
mod prometheus;
#[path = "cli/storage.rs"]
mod storage;

/// A fresh, empty working directory for one test.
fn scratch_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rosey-cli-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    // The default plugin_dir must exist; an empty one runs the bot with no plugins.
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    dir
}

fn write_config(dir: &Path, json: &str) -> PathBuf {
    let path = dir.join("config.json");
    std::fs::write(&path, json).unwrap();
    path
}

fn rosey(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(ROSEY);
    cmd.args(args).current_dir(dir).env_remove("RUST_LOG").stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("ROSEY_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn check_config(json: &str) -> Output {
    let dir = scratch_dir();
    let path = write_config(&dir, json);
    rosey(&dir, &["check-config", path.to_str().unwrap()]).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_lists_the_commands() {
    let out = Command::new(ROSEY).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("run"), "{text}");
    assert!(text.contains("check-config"), "{text}");
}

#[test]
fn check_config_accepts_the_example_configs() {
    for name in ["config-dev.json", "config-prod.json"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
        let out =
            rosey(&scratch_dir(), &["check-config", path.to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(report.starts_with("OK"), "{report}");
        assert_eq!(report.lines().count(), 1, "no notes: {report}");
    }
}

#[test]
fn check_config_rejects_bad_configs_and_names_the_key() {
    let cases = [
        (r#"{"dashboard": {"port": 70000}}"#, "dashboard.port"),
        (r#"{"dashboard": {"port": 0}}"#, "dashboard.port"),
        (r#"{"metrics": {"poll_interval": 0}}"#, "metrics.poll_interval"),
        (
            r#"{"metrics": {"poll_interval": 10, "history_duration": 5}}"#,
            "metrics.history_duration",
        ),
        (r#"{"admins": ["bob"]}"#, "owner"),
        (r#"{"dashbord": {}}"#, "dashbord"),
        (r#"{"dashboard": {"prot": 80}}"#, "dashboard.prot"),
        (r#"{"dashboard": {"port": "80"}}"#, "dashboard.port"),
        (r#"{"dashboard": {"token": "short"}}"#, "dashboard.token: must be at least 16 characters"),
        (r#"{"dashboard": {"public_url": "ftp://x"}}"#, "dashboard.public_url"),
        (r#"{"dashboard": {"public_url": "not a url"}}"#, "dashboard.public_url"),
        (r#"{"database": {"pool_size": 0}}"#, "database.pool_size"),
        (r#"{"cytube": {"channel": "bad name!", "username": "bot"}}"#, "cytube.channel"),
    ];
    for (json, key) in cases {
        let out = check_config(json);
        assert_eq!(out.status.code(), Some(1), "{json} should be rejected");
        let err = stderr(&out);
        assert!(err.contains(key), "{json}: error does not name {key}: {err}");
    }
}

#[test]
fn check_config_suggests_the_key_meant() {
    let err = stderr(&check_config(r#"{"dashboard": {"prot": 80}}"#));
    assert!(err.contains("port"), "{err}");
}

#[test]
fn check_config_reports_every_error_at_once() {
    let out = check_config(r#"{"dashboard": {"port": 0}, "metrics": {"poll_interval": 0}}"#);
    let err = stderr(&out);
    assert!(err.contains("dashboard.port") && err.contains("metrics.poll_interval"), "{err}");
}

#[test]
fn check_config_reports_syntax_errors_with_line_and_column() {
    let err = stderr(&check_config("{\n  \"owner\": \"alice\",\n  oops\n}"));
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("column"), "{err}");
}

#[test]
fn check_config_on_a_missing_file_fails_clearly() {
    let dir = scratch_dir();
    let out = rosey(&dir, &["check-config", "nope.json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nope.json"), "{}", stderr(&out));
}

/// A running `rosey run`: its log lines (stderr) and its chat lines (stdout) arrive on channels.
struct Running {
    child: Child,
    logs: mpsc::Receiver<String>,
    chat: mpsc::Receiver<String>,
}

/// Sends each line of `stream` on a new channel, from a thread.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    forward_lines(stream, tx);
    lines
}

/// Sends each line of `stream` to `tx`, from a thread, until either ends.
fn forward_lines(stream: impl std::io::Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// Waits for a line of `lines` containing `needle`; returns everything read up to it.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    let mut seen = String::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(needle) {
                    return seen;
                }
            }
            Err(_) => panic!("no line containing {needle:?}; output so far:\n{seen}"),
        }
    }
}

impl Running {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let chat = lines_of(child.stdout.take().unwrap());
        let logs = lines_of(child.stderr.take().unwrap());
        Self { child, logs, chat }
    }

    /// Waits for a log line (stderr) containing `needle`; returns every log line read up to it.
    fn wait_for(&self, needle: &str) -> String {
        wait_for_line(&self.logs, needle)
    }

    /// Waits for a chat line (stdout) containing `needle`; returns every chat line read up to it.
    fn wait_for_chat(&self, needle: &str) -> String {
        wait_for_line(&self.chat, needle)
    }

    fn signal(&self, sig: &str) {
        let status =
            Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status();
        assert!(status.unwrap().success());
    }

    /// Waits for the exit; returns the status and the log lines not read yet.
    fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        let rest: Vec<String> = self.logs.iter().collect();
        (status, rest.join("\n"))
    }
}

/// A test that fails half way leaves no `rosey run` behind (it would hold its ports, its NATS
/// subjects and its lease for the next runs).
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn run_on_embedded_defaults_starts_and_stops_cleanly_on_sigterm() {
    let dir = scratch_dir();
    let running = Running::start(console_kept_open(rosey(&dir, &["run"])));
    let startup = running.wait_for("rosey ready");
    assert!(startup.contains("memory"), "default bus is the in-process one:\n{startup}");
    running.signal("TERM");
    let (status, rest) = running.wait_exit();
    assert!(status.success(), "exit {status:?}; output:\n{rest}");
    assert!(rest.contains("rosey stopped"), "{rest}");
    let log = std::fs::read_to_string(dir.join("logs/rosey.log")).unwrap();
    assert!(log.contains("rosey ready"), "log file has the startup:\n{log}");
}

/// The parts named in the `started` log lines, in order; and those named in `not started` lines.
fn parts_in(log: &str, what: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(&format!(" {what} part=")))
        .filter_map(|l| l.split("part=\"").nth(1)?.split('"').next().map(str::to_owned))
        .collect()
}

#[test]
fn every_part_starts_in_the_documented_order_with_its_duration_and_stops_in_reverse() {
    let dir = scratch_dir();
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let port = e2e::free_port();
    let config = write_config(
        &dir,
        &format!(
            r#"{{"owner": "alice", "plugin_dir": {:?}, "logging": {{"file": null}},
                "dashboard": {{"port": {port}}}}}"#,
            plugins.display().to_string()
        ),
    );
    let running = Running::start(console_kept_open(rosey(
        &dir,
        &["run", "--config", config.to_str().unwrap()],
    )));
    let startup = running.wait_for("rosey ready");
    assert_eq!(
        parts_in(&startup, "started"),
        [
            "event bus",
            "database",
            "key-value store",
            "plugin manager",
            "control API",
            "metrics collector",
            "dashboard",
            "admin plugin",
            "router",
            "connector"
        ],
        "{startup}"
    );
    assert!(
        startup
            .lines()
            .filter(|l| l.contains(" started part="))
            .all(|l| l.contains("duration_ms=")),
        "{startup}"
    );
    assert!(parts_in(&startup, "not started").is_empty(), "{startup}");
    running.signal("TERM");
    let (status, rest) = running.wait_exit();
    assert!(status.success(), "{rest}");
    assert!(!rest.contains("part stopped with an error"), "{rest}");
    // The connector is stopped by the serving loop itself, first; the rest unwinds the stack.
    assert_eq!(
        parts_in(&rest, "stopped"),
        [
            "router",
            "dashboard",
            "metrics collector",
            "control API",
            "plugin manager",
            "key-value store",
            "database",
            "event bus"
        ],
        "{rest}"
    );
}

#[test]
fn parts_that_are_off_are_named_once_with_the_reason() {
    let dir = scratch_dir();
    let config = write_config(
        &dir,
        r#"{"logging": {"file": null}, "dashboard": {"enabled": false}, "metrics": {"enabled": false}}"#,
    );
    let running = Running::start(console_kept_open(rosey(
        &dir,
        &["run", "--config", config.to_str().unwrap()],
    )));
    let startup = running.wait_for("rosey ready");
    assert_eq!(
        parts_in(&startup, "not started"),
        ["metrics collector", "dashboard", "admin plugin"],
        "{startup}"
    );
    for reason in [
        "metrics.enabled is false",
        "dashboard.enabled is false",
        "no owner or admins in the config",
    ] {
        assert!(startup.contains(reason), "{reason}: {startup}");
    }
    running.signal("TERM");
    let (status, _) = running.wait_exit();
    assert!(status.success());
}

#[test]
fn run_stops_cleanly_on_sigint() {
    let dir = scratch_dir();
    let running = Running::start(console_kept_open(rosey(&dir, &["run"])));
    running.wait_for("rosey ready");
    running.signal("INT");
    let (status, _) = running.wait_exit();
    assert!(status.success(), "exit {status:?}");
}

/// A fake CyTube server (rosey-testkit) on its own runtime, for as long as the test holds it.
struct Cytube {
    server: FakeCytube,
    // Declared last: dropped after the server, whose tasks it runs.
    _runtime: tokio::runtime::Runtime,
}

impl Cytube {
    fn start(options: FakeCytubeOptions) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let server = runtime.block_on(FakeCytube::start(options)).unwrap();
        Self { server, _runtime: runtime }
    }

    /// Waits for a chat line from `user` that the server accepted; returns it (HTML-escaped).
    fn wait_chat_from(&self, events: &mut Receiver<ServerEvent>, user: &str) -> String {
        self._runtime.block_on(FakeCytube::wait_for(events, Duration::from_secs(20), |e| match e {
            ServerEvent::Chat { user: from, msg, .. } if from == user => Some(msg.clone()),
            _ => None,
        }))
    }
}

/// A config joining `channel` on the fake server as `RoseyBot`, with the bundled plugins.
fn cytube_config(dir: &Path, server: &FakeCytube, channel: &str) -> PathBuf {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    write_config(
        dir,
        &format!(
            r#"{{"plugin_dir": {:?}, "logging": {{"file": null}},
                 "cytube": {{"server": "{}", "channel": "{channel}", "username": "RoseyBot"}}}}"#,
            plugins.display().to_string(),
            server.url()
        ),
    )
}

#[test]
fn run_joins_cytube_and_answers_a_roll_typed_in_the_channel() {
    let cytube = Cytube::start(FakeCytubeOptions::default());
    let channel = cytube.server.channel("testchan");
    channel.join_peer("alice", 0.0);
    let dir = scratch_dir();
    let config = cytube_config(&dir, &cytube.server, "testchan");
    let running = Running::start(rosey(&dir, &["run", "--config", config.to_str().unwrap()]));
    let startup = running.wait_for("rosey ready");
    assert!(startup.contains("joined the CyTube channel"), "{startup}");
    let mut events = cytube.server.subscribe();
    channel.say("alice", "!roll 2d6");
    let reply = cytube.wait_chat_from(&mut events, "RoseyBot");
    assert!(reply.starts_with("🎲 [") && reply.contains("] = "), "{reply}");
    running.signal("TERM");
    let (status, rest) = running.wait_exit();
    assert!(status.success(), "exit {status:?}; output:\n{rest}");
}

#[test]
fn run_exits_1_with_the_reason_when_the_bot_is_banned() {
    let cytube = Cytube::start(FakeCytubeOptions::default());
    let dir = scratch_dir();
    let config = cytube_config(&dir, &cytube.server, "testchan");
    let running = Running::start(rosey(&dir, &["run", "--config", config.to_str().unwrap()]));
    running.wait_for("rosey ready");
    cytube.server.channel("testchan").ban("RoseyBot");
    let (status, rest) = running.wait_exit();
    assert_eq!(status.code(), Some(1), "output:\n{rest}");
    assert!(rest.contains("banned"), "{rest}");
}

#[test]
fn run_refuses_a_channel_name_cytube_would_refuse_naming_the_key() {
    let cytube = Cytube::start(FakeCytubeOptions::default());
    let dir = scratch_dir();
    let config = cytube_config(&dir, &cytube.server, "no such channel!");
    let out = rosey(&dir, &["run", "--config", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cytube.channel") && err.contains("no such channel!"), "{err}");
}

#[test]
fn ctrl_c_stops_the_bot_while_the_console_still_waits_for_input() {
    let dir = scratch_dir();
    let mut cmd = rosey(&dir, &["run"]);
    cmd.stdin(Stdio::piped());
    let mut running = Running::start(cmd);
    // The terminal stays open: nothing typed, no end of input.
    let _stdin = running.child.stdin.take().unwrap();
    running.wait_for("rosey ready");
    running.signal("INT");
    let exited = (0..500).find_map(|_| {
        let status = running.child.try_wait().unwrap();
        if status.is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        status
    });
    let status = exited.expect("rosey kept running after Ctrl-C until the next line of input");
    assert!(status.success(), "exit {status:?}");
}

#[test]
fn run_with_nats_url_uses_nats_and_never_logs_credentials() {
    let cytube = Cytube::start(FakeCytubeOptions {
        accounts: vec![Account::new("rosey", "s3cr3t-cytube")],
        ..FakeCytubeOptions::default()
    });
    let dir = scratch_dir();
    let url =
        std::env::var("ROSEY_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let with_creds = url.replacen("nats://", "nats://rosey:s3cr3t-nats@", 1);
    // A channel of this run's own: on a shared NATS, nodes with one channel compete for its lease.
    let channel = format!("lobby-{}", std::process::id());
    // The test PostgreSQL trusts loopback, so it accepts (and ignores) the password.
    let database = storage::test_database();
    let database_url = storage::with_password(database.url(), "s3cr3t-db");
    let config = write_config(
        &dir,
        &format!(
            r#"{{"owner": "alice", "nats_url": "{with_creds}",
                 "database": {{"url": "{database_url}"}},
                 "cytube": {{"server": "{}", "channel": "{channel}", "username": "rosey",
                             "password": "s3cr3t-cytube"}}}}"#,
            cytube.server.url()
        ),
    );
    // The local server has no auth configured; it accepts (and ignores) the credentials.
    let running = Running::start(rosey(&dir, &["run", "--config", config.to_str().unwrap()]));
    let startup = running.wait_for("rosey ready");
    assert!(startup.contains("nats"), "{startup}");
    assert!(
        startup.contains("joined the CyTube channel"),
        "logged in with the password:\n{startup}"
    );
    running.signal("TERM");
    let (status, rest) = running.wait_exit();
    assert!(status.success(), "exit {status:?}");
    let log = std::fs::read_to_string(dir.join("logs/rosey.log")).unwrap();
    for secret in ["s3cr3t-nats", "s3cr3t-db", "s3cr3t-cytube"] {
        assert!(!startup.contains(secret) && !rest.contains(secret), "{secret} on stderr");
        assert!(!log.contains(secret), "{secret} in the log file");
    }
}

#[test]
fn run_with_an_invalid_config_exits_1_naming_the_key() {
    let dir = scratch_dir();
    let config = write_config(&dir, r#"{"dashboard": {"port": 70000}}"#);
    let out = rosey(&dir, &["run", "--config", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("dashboard.port"), "{}", stderr(&out));
}

#[test]
fn run_fails_with_a_clear_error_when_nats_is_unreachable() {
    let dir = scratch_dir();
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let config = write_config(&dir, r#"{"nats_url": "nats://127.0.0.1:1"}"#);
    let out = rosey(&dir, &["run", "--config", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("NATS"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "logs stay off stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A config whose plugin_dir is `dir`, without a log file.
fn config_with_plugins(dir: &Path, plugin_dir: &Path) -> PathBuf {
    write_config(
        dir,
        &format!(
            r#"{{"plugin_dir": {:?}, "logging": {{"file": null}}}}"#,
            plugin_dir.display().to_string()
        ),
    )
}

#[test]
fn console_chat_reaches_the_bundled_plugins_and_their_replies_are_printed() {
    let dir = scratch_dir();
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let config = config_with_plugins(&dir, &plugins);
    let mut cmd = rosey(&dir, &["run", "--config", config.to_str().unwrap()]);
    cmd.stdin(Stdio::piped());
    let mut running = Running::start(cmd);
    running.wait_for("rosey ready");
    let mut stdin = running.child.stdin.take().unwrap();
    use std::io::Write as _;
    writeln!(stdin, "!roll 2d6").unwrap();
    let roll = running.wait_for_chat("rosey: 🎲");
    let line = roll.lines().last().unwrap();
    let total: u32 = line.rsplit("= ").next().unwrap().trim().parse().unwrap();
    assert!((2..=12).contains(&total), "{line}");
    writeln!(stdin, "bob: !8ball will it work?").unwrap();
    let answer = running.wait_for_chat("rosey: 🎱");
    assert!(answer.contains("\"will it work?\""), "{answer}");
    drop(stdin);
    running.signal("TERM");
    let (status, _) = running.wait_exit();
    assert!(status.success());
}

#[test]
fn killing_the_host_leaves_no_plugin_processes_behind() {
    let dir = scratch_dir();
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let config = config_with_plugins(&dir, &plugins);
    let cmd = rosey(&dir, &["run", "--config", config.to_str().unwrap()]);
    let running = Running::start(console_kept_open(cmd));
    let startup = running.wait_for("rosey ready");
    let pids: Vec<u32> = startup
        .lines()
        .filter(|l| l.contains("plugin started"))
        .filter_map(|l| l.split("pid=").nth(1))
        .filter_map(|p| p.split_whitespace().next())
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(pids.len(), 3, "the three bundled plugins started:\n{startup}");
    running.signal("KILL");
    let (status, _) = running.wait_exit();
    assert!(!status.success());
    for pid in pids {
        // The kernel delivers the parent-death signal at once; allow it a moment to be reaped.
        let gone = (0..250).any(|_| {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| !s.contains(") Z "));
            if alive {
                std::thread::sleep(Duration::from_millis(20));
            }
            !alive
        });
        assert!(gone, "plugin process {pid} outlived its host");
    }
}

// ---- Startup that never hangs, signals at any moment, a scriptable console (helper "services") ----

/// Gives the console an input that stays open (the handle stays in the `Child`), as a terminal
/// would: at the end of its input `rosey run` answers what it read and exits.
fn console_kept_open(mut cmd: Command) -> Command {
    cmd.stdin(Stdio::piped());
    cmd
}

/// Every line `rosey` writes, stdout and stderr alike (logs may go to either), as it arrives.
fn merged_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    forward_lines(child.stdout.take().unwrap(), tx.clone());
    forward_lines(child.stderr.take().unwrap(), tx);
    lines
}

/// Reads `lines` until one contains `needle`, for at most `patience`; returns it and what came before.
fn line_with(lines: &mpsc::Receiver<String>, needle: &str, patience: Duration) -> (String, String) {
    let deadline = std::time::Instant::now() + patience;
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return (line, seen),
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => panic!("no line containing {needle:?} within {patience:?}; so far:\n{seen}"),
        }
    }
}

/// Waits for the process to exit, for at most `patience`; `None` if it is still running.
fn exit_within(child: &mut Child, patience: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plugin folder with three plugins whose program starts, says so on stderr, and never says ready.
fn hanging_plugins() -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = scratch_dir().join("plugins");
    for name in ["hang-a", "hang-b", "hang-c"] {
        let plugin = dir.join(name);
        std::fs::create_dir_all(&plugin).unwrap();
        let command = name.replace('-', "");
        std::fs::write(
            plugin.join("plugin.toml"),
            format!(
                "name = \"{name}\"\nversion = \"1.0.0\"\nexec = [\"hang.sh\"]\ncommands = [\"{command}\"]\n"
            ),
        )
        .unwrap();
        let script = plugin.join("hang.sh");
        std::fs::write(&script, format!("#!/bin/sh\necho \"{name} hangs\" >&2\nexec sleep 600\n"))
            .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// The bound this test holds `rosey ready` to: one plugin start timeout (15 s), plus slack for a
/// loaded machine. Waiting for the plugins one after another would take 45 s.
const READY_WITH_HANGING_PLUGINS: Duration = Duration::from_secs(25);

/// How long `rosey` may take to stop after a signal here: the hanging plugins ignore `shutdown` and
/// are killed after their 5 s grace period (the documented worst case is 10 s a step).
const STOP_WITH_HANGING_PLUGINS: Duration = Duration::from_secs(12);

#[test]
fn three_plugins_that_hang_at_start_delay_ready_by_one_start_timeout_at_most() {
    let dir = scratch_dir();
    let config = config_with_plugins(&dir, &hanging_plugins());
    let cmd = rosey(&dir, &["run", "--config", config.to_str().unwrap()]);
    let began = std::time::Instant::now();
    let mut child =
        console_kept_open(cmd).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let lines = merged_lines(&mut child);
    let (ready, _) = line_with(&lines, "rosey ready", Duration::from_secs(60));
    let waited = began.elapsed();
    assert!(waited < READY_WITH_HANGING_PLUGINS, "ready after {waited:?}: {ready}");
    assert!(ready.contains("running=0") && ready.contains("failed=3"), "{ready}");
    for name in ["hang-a", "hang-b", "hang-c"] {
        assert!(ready.contains(name), "the ready line names {name}: {ready}");
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = exit_within(&mut child, STOP_WITH_HANGING_PLUGINS).expect("rosey did not stop");
    assert!(status.success(), "exit {status:?}");
}

#[test]
fn sigint_while_startup_waits_for_hanging_plugins_stops_rosey_within_the_stop_bound() {
    let dir = scratch_dir();
    let config = config_with_plugins(&dir, &hanging_plugins());
    let cmd = rosey(&dir, &["run", "--config", config.to_str().unwrap()]);
    let mut child =
        console_kept_open(cmd).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let lines = merged_lines(&mut child);
    // All three plugins are up (and will never be ready): startup is waiting for them.
    let mut before = String::new();
    for name in ["hang-a", "hang-b", "hang-c"] {
        let (_, seen) = line_with(&lines, &format!("{name} hangs"), Duration::from_secs(20));
        before.push_str(&seen);
    }
    assert!(!before.contains("rosey ready"), "still starting:\n{before}");
    let signalled = std::time::Instant::now();
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = exit_within(&mut child, STOP_WITH_HANGING_PLUGINS)
        .unwrap_or_else(|| panic!("still running {STOP_WITH_HANGING_PLUGINS:?} after SIGINT"));
    assert!(status.success(), "a signal during startup is a clean stop: {status:?}");
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(!rest.iter().any(|l| l.contains("rosey ready")), "{rest:?}");
    assert!(signalled.elapsed() < STOP_WITH_HANGING_PLUGINS);
}

/// `rosey run --config <config>` in `dir` with `input` on its standard input and then the end of
/// it, as `printf … | rosey run` does: its exit (within 60 s) and the chat lines it printed.
fn run_piped(dir: &Path, config: &Path, input: &[u8]) -> (std::process::ExitStatus, Vec<String>) {
    let mut child = rosey(dir, &["run", "--config", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
    } // end of input
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>()
    });
    let status = exit_within(&mut child, Duration::from_secs(60))
        .expect("rosey kept running after its input ended");
    (status, reader.join().unwrap())
}

#[test]
fn piped_console_input_is_answered_then_rosey_exits_0() {
    // printf 'alice: !roll 2d6\n' | rosey run
    let dir = scratch_dir();
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let config = config_with_plugins(&dir, &plugins);
    let (status, stdout) = run_piped(&dir, &config, b"alice: !roll 2d6\n");
    assert!(status.success(), "exit {status:?}");
    let rolls: Vec<&String> = stdout.iter().filter(|l| l.starts_with("rosey: 🎲")).collect();
    assert_eq!(rolls.len(), 1, "one answer to one line:\n{}", stdout.join("\n"));
    let total: u32 = rolls[0].rsplit("= ").next().unwrap().trim().parse().unwrap();
    assert!((2..=12).contains(&total), "{}", rolls[0]);
}

// ---- Honest CLI and config: help text, unused sections, environment overrides, stderr logs ----

/// `rosey` in `dir` with the given `ROSEY_*` variables (and no others).
fn rosey_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = rosey(dir, args);
    cmd.envs(env.iter().copied());
    cmd
}

#[test]
fn help_describes_the_bot_and_what_each_command_does() {
    let out = Command::new(ROSEY).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.starts_with("Rosey is a chat bot for CyTube"), "{help}");
    assert!(help.contains("plugins"), "{help}");
    assert!(!help.contains("wiring"), "no internal crate description: {help}");
    for command in ["run", "check-config"] {
        assert!(help.contains(command), "{help}");
    }

    let out = Command::new(ROSEY).args(["run", "--help"]).output().unwrap();
    let run_help = String::from_utf8_lossy(&out.stdout);
    for promised in [
        "console",
        "in-process bus",
        "CyTube",
        "NATS",
        "standard error",
        "SQLite",
        "127.0.0.1:8080",
    ] {
        assert!(run_help.contains(promised), "run --help should mention {promised}: {run_help}");
    }

    let out = Command::new(ROSEY).args(["check-config", "--help"]).output().unwrap();
    let check_help = String::from_utf8_lossy(&out.stdout);
    assert!(check_help.contains("without running the bot"), "{check_help}");
}

#[test]
fn check_config_says_ok_without_notes_when_nothing_comes_from_the_environment() {
    let out = check_config(r#"{"metrics": {"poll_interval": 10}, "admins": [], "owner": "a"}"#);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.starts_with("OK: "), "{report}");
    assert_eq!(report.lines().count(), 1, "every section is used; no notes: {report}");
}

#[test]
fn run_reports_environment_overrides_by_name_after_logging_starts() {
    let dir = scratch_dir();
    let nats =
        std::env::var("ROSEY_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let database = storage::test_database();
    let database_url = storage::with_password(database.url(), "s3cr3t-env-db");
    let cmd = rosey_with_env(
        &dir,
        &["run"],
        &[
            ("ROSEY_NATS_URL", &nats),
            ("ROSEY_CYTUBE_PASSWORD", "s3cr3t-env-pw"),
            ("ROSEY_DATABASE_URL", &database_url),
        ],
    );
    let running = Running::start(cmd);
    let startup = running.wait_for("rosey ready");
    let line_with = |needle: &str| {
        startup.lines().find(|line| line.contains(needle)).map(str::to_owned).unwrap_or_else(|| {
            panic!("no log line with {needle}:\n{startup}");
        })
    };
    let ignored = line_with("ROSEY_CYTUBE_PASSWORD");
    assert!(
        ignored.contains("WARN") && ignored.contains("environment variable ignored"),
        "{ignored}"
    );
    assert!(ignored.contains("no cytube section"), "{ignored}");
    let applied = line_with("ROSEY_NATS_URL");
    assert!(applied.contains("taken from the environment") && applied.contains("nats_url"));
    assert!(line_with("rosey ready").contains("nats"), "the override took effect:\n{startup}");
    assert!(line_with("ROSEY_DATABASE_URL").contains("database.url"));
    assert!(
        line_with("storage opened").contains(":***@"),
        "the override took effect, redacted:\n{startup}"
    );
    running.signal("TERM");
    let (status, rest) = running.wait_exit();
    assert!(status.success(), "{rest}");
    let log = std::fs::read_to_string(dir.join("logs/rosey.log")).unwrap();
    for output in [&startup, &rest, &log] {
        assert!(!output.contains("s3cr3t-env"), "a secret value was logged:\n{output}");
    }
}

#[test]
fn check_config_blames_the_environment_variable_for_a_bad_value_it_gave() {
    let dir = scratch_dir();
    let path = write_config(&dir, r#"{"nats_url": "nats://127.0.0.1:4222"}"#);
    let out = rosey_with_env(
        &dir,
        &["check-config", path.to_str().unwrap()],
        &[("ROSEY_NATS_URL", "nats://")],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("ROSEY_NATS_URL: needs a host"), "{err}");
    assert!(!err.contains("  nats_url:"), "the file is not to blame: {err}");

    let out = rosey_with_env(
        &dir,
        &["run", "--config", path.to_str().unwrap()],
        &[("ROSEY_DATABASE_URL", "sqlite:")],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ROSEY_DATABASE_URL: needs a file path"), "{}", stderr(&out));

    let ok = rosey_with_env(
        &dir,
        &["check-config", path.to_str().unwrap()],
        &[("ROSEY_CYTUBE_PASSWORD", "pw")],
    )
    .output()
    .unwrap();
    assert!(ok.status.success());
    let report = String::from_utf8_lossy(&ok.stdout);
    assert!(report.contains("ROSEY_CYTUBE_PASSWORD is ignored"), "{report}");
}

#[test]
fn check_config_rejects_what_cytube_nats_or_the_machine_would_refuse() {
    let cases = [
        (r#"{"nats_url": "nats://"}"#, "nats_url: needs a host"),
        (r#"{"database": {"url": "sqlite:"}}"#, "database.url: needs a file path"),
        (
            r#"{"cytube": {"server": "http://exa mple.com", "channel": "c", "username": "u"}}"#,
            "cytube.server: ",
        ),
        (
            r#"{"cytube": {"channel": "c", "username": "u", "password": ""}}"#,
            "cytube.password: must not be empty",
        ),
        (
            r#"{"cytube": {"channel": "c", "username": "abcdefghijabcdefghijabcdefghij"}}"#,
            "cytube.username: \"abcdefghijabcdefghijabcdefghij\" is not a CyTube user name",
        ),
        (r#"{"logging": {"file": "plugins"}}"#, "logging.file: cannot open "),
        (r#"{"plugin_dir": "no-plugins-here"}"#, "plugin_dir: "),
    ];
    for (json, error) in cases {
        let out = check_config(json);
        assert_eq!(out.status.code(), Some(1), "{json} should be rejected");
        assert!(stderr(&out).contains(error), "{json}: {}", stderr(&out));
    }
}

#[test]
fn a_missing_plugin_dir_stops_run_naming_the_key_and_the_absolute_path() {
    let dir = scratch_dir();
    let config = write_config(&dir, r#"{"plugin_dir": "plugns", "logging": {"file": null}}"#);
    let out = rosey(&dir, &["run", "--config", config.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let expected = format!("plugin_dir: {} does not exist", dir.join("plugns").display());
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));

    std::fs::remove_dir(dir.join("plugins")).unwrap();
    let out = rosey(&dir, &["check-config", config.to_str().unwrap()]).output().unwrap();
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    let out = rosey(&dir, &["run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "embedded defaults need ./plugins too");
    let expected = format!("plugin_dir: {} does not exist", dir.join("plugins").display());
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
}

#[test]
fn check_config_leaves_no_empty_log_file_behind() {
    let dir = scratch_dir();
    let path = write_config(&dir, r#"{"logging": {"file": "var/log/rosey.log"}}"#);
    let out = rosey(&dir, &["check-config", path.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.join("var/log").is_dir());
    assert!(!dir.join("var/log/rosey.log").exists());
}

#[test]
fn logs_go_to_stderr_and_the_log_file_and_stdout_carries_only_the_chat() {
    let dir = scratch_dir();
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let config = write_config(
        &dir,
        &format!(
            r#"{{"plugin_dir": {:?}, "logging": {{"level": "debug"}}}}"#,
            plugins.display().to_string()
        ),
    );
    let mut cmd = rosey(&dir, &["run", "--config", config.to_str().unwrap()]);
    cmd.stdin(Stdio::piped());
    let mut running = Running::start(cmd);
    let startup = running.wait_for("rosey ready");
    assert!(startup.contains("starting rosey"), "{startup}");
    let mut stdin = running.child.stdin.take().unwrap();
    use std::io::Write as _;
    writeln!(stdin, "alice: !roll 1d6").unwrap();
    running.wait_for_chat("rosey: 🎲");
    drop(stdin);
    running.signal("TERM");
    let chat: Vec<String> = {
        let status = running.child.wait().unwrap();
        assert!(status.success());
        running.chat.iter().collect()
    };
    for line in &chat {
        assert!(line.starts_with("rosey: "), "only chat on stdout, got {line:?}");
    }
    // Written by a background thread and flushed at exit: the last line is in the file.
    let log = std::fs::read_to_string(dir.join("logs/rosey.log")).unwrap();
    assert!(log.contains("rosey ready") && log.contains("rosey stopped"), "{log}");
}

// ---- Bounded queues: the console reads no faster than the bot answers ----

#[test]
fn a_piped_flood_of_twenty_thousand_rolls_gets_twenty_thousand_answers() {
    // yes 'u: !roll 1d6' | head -n 20000 | rosey run
    const LINES: usize = 20_000;
    let dir = scratch_dir();
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let config = config_with_plugins(&dir, &plugins);
    let mut child = rosey(&dir, &["run", "--config", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The console stops reading while its commands wait for answers, so the pipe fills and this
    // writer blocks: it needs a thread of its own.
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        let flood = "u: !roll 1d6\n".repeat(LINES);
        stdin.write_all(flood.as_bytes()).unwrap();
    }); // end of input when the thread drops stdin
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>()
    });
    let status = exit_within(&mut child, Duration::from_secs(90))
        .expect("rosey did not answer the flood and exit in time");
    assert!(status.success(), "exit {status:?}");
    writer.join().unwrap();
    let stdout = reader.join().unwrap();
    let rolls = stdout.iter().filter(|l| l.starts_with("rosey: 🎲")).count();
    let others: Vec<&String> =
        stdout.iter().filter(|l| !l.starts_with("rosey: 🎲")).take(5).collect();
    assert_eq!(rolls, LINES, "every line answered with a roll; other lines: {others:?}");
}

// ---- Containment with the bundled plugins (issue 10) ----

/// The pids of `root`'s descendants whose command line contains `needle`.
fn descendants_running(root: u32, needle: &str) -> Vec<u32> {
    let mut parents = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The parent pid is the second field after the command name, which may hold spaces.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) {
            parents.insert(pid, ppid);
        }
    }
    let descends = |mut pid: u32| {
        while let Some(&parent) = parents.get(&pid) {
            if parent == root {
                return true;
            }
            pid = parent;
        }
        false
    };
    parents
        .keys()
        .copied()
        .filter(|&pid| descends(pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

#[test]
fn a_roll_sent_right_after_the_dice_roller_is_killed_gets_a_dice_answer() {
    let dir = scratch_dir();
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let config = config_with_plugins(&dir, &plugins);
    let mut child = rosey(&dir, &["run", "--config", config.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut roll = |line: &str| -> String {
        use std::io::Write as _;
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        lines.recv_timeout(Duration::from_secs(60)).expect("an answer")
    };
    assert!(roll("dave: !roll 1d6").starts_with("rosey: 🎲"), "the dice-roller is up");
    let pids = descendants_running(child.id(), "rosey-dice-roller");
    assert_eq!(pids.len(), 1, "one dice-roller process: {pids:?}");
    let killed = Command::new("kill").args(["-9", &pids[0].to_string()]).status().unwrap();
    assert!(killed.success());
    // At once: the plugin died before this command reached it, or while it had it in hand; either
    // way the restarted process answers it.
    let answer = roll("dave: !roll 1d20");
    assert!(answer.starts_with("rosey: 🎲"), "a dice answer, not an error: {answer}");
    let new_pids = descendants_running(child.id(), "rosey-dice-roller");
    assert!(!new_pids.contains(&pids[0]), "a new process answered");
    let _ = child.kill();
    let _ = child.wait();
}
