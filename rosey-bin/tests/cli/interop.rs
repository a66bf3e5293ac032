//! Rosey's own socket.io client against the real socket.io 4.5.4 server, the version CyTube 3.86
//! ships (rosey-testkit/interop/socketio-server.js on Node.js), rather than the fake CyTube server of
//! the other tests: the join, the login, a command answered, pings answered, and a reconnect after the
//! server is killed and started again on the same port. scripts/test installs the server's
//! node_modules and names them in `ROSEY_TEST_INTEROP_NODE_MODULES`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ROSEY, Running, merged_lines, rosey, scratch_dir, write_config};

/// How long one awaited report line may take: far more than any step needs (the reconnect takes
/// about a second), so only a real failure hits it.
const PATIENCE: Duration = Duration::from_secs(20);

/// The interop server, a `node` process: its report lines (stdout, with stderr mixed in for the
/// failure messages) and its command input. Killed when dropped; it also exits when the test process
/// dies, since its input then closes.
struct SocketioServer {
    child: Child,
    commands: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// The port it listens on (127.0.0.1).
    port: u16,
    /// Pongs (a client answering a ping) read so far.
    pongs: usize,
    /// Every line read so far, for failure messages.
    seen: String,
}

impl SocketioServer {
    /// Starts the server on `port` (0: a free port of its choosing) and waits until it listens.
    fn start(port: u16) -> Self {
        let node_modules = std::env::var_os("ROSEY_TEST_INTEROP_NODE_MODULES").unwrap_or_else(|| {
            panic!(
                "ROSEY_TEST_INTEROP_NODE_MODULES is not set: run this test through scripts/test \
                 (`scripts/test -p rosey-bin --test cli interop`), which installs socket.io 4.5.4"
            )
        });
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../rosey-testkit/interop/socketio-server.js");
        let mut child = Command::new("node")
            .arg(script)
            .arg(port.to_string())
            .env("NODE_PATH", node_modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node (scripts/test installs it): {e}"));
        let commands = child.stdin.take().unwrap();
        let lines = merged_lines(&mut child);
        let mut server = Self { child, commands, lines, port, pongs: 0, seen: String::new() };
        let listening = server.wait_for("listening", |line| line["listening"].as_u64());
        server.port = u16::try_from(listening).unwrap();
        server
    }

    /// Reads report lines until `pick` finds something in one, and returns it; counts the pongs
    /// passed on the way.
    fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Value) -> Option<T>) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                panic!("the server reported no {what} within {PATIENCE:?}; so far:\n{}", self.seen);
            };
            self.seen.push_str(&line);
            self.seen.push('\n');
            let Ok(report) = serde_json::from_str::<Value>(&line) else { continue };
            if report["event"] == "pong" {
                self.pongs += 1;
            }
            if let Some(found) = pick(&report) {
                return found;
            }
        }
    }

    /// The data of the next report of `event`.
    fn wait_event(&mut self, event: &str) -> Value {
        self.wait_for(event, |report| (report["event"] == event).then(|| report["data"].clone()))
    }

    /// Waits until the client has answered `count` pings in all.
    fn wait_pongs(&mut self, count: usize) {
        while self.pongs < count {
            self.wait_event("pong");
        }
    }

    /// The next chat line the server received, with its sender.
    fn next_chat(&mut self) -> (String, String) {
        self.wait_for("chatMsg", |report| {
            (report["event"] == "chatMsg").then(|| {
                let text = |key: &str| report[key].as_str().unwrap_or_default().to_owned();
                (text("from"), text("msg"))
            })
        })
    }

    /// `user` says `msg` in the channel.
    fn say(&mut self, user: &str, msg: &str) {
        let command = json!({"say": {"user": user, "msg": msg}});
        writeln!(self.commands, "{command}").unwrap();
        self.commands.flush().unwrap();
    }

    /// Kills the server at once (SIGKILL), as a crash would: no goodbye to its clients.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for SocketioServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rosey run`, killed if the test fails half-way (it would otherwise keep reconnecting).
struct Bot(Option<Running>);

impl Bot {
    fn running(&self) -> &Running {
        self.0.as_ref().unwrap()
    }

    /// Stops the bot with SIGTERM; asserts a clean exit and returns the log lines not read yet.
    fn stop(mut self) -> String {
        let running = self.0.take().unwrap();
        running.signal("TERM");
        let (status, rest) = running.wait_exit();
        assert!(status.success(), "exit {status:?}; output:\n{rest}");
        rest
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        if let Some(running) = &mut self.0 {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}

/// Asserts that the next chat line the server receives is the bot's answer to `!roll <count>d<sides>`,
/// such as `🎲 [4, 3] = 7`: that many dice, each in range, adding up to the total shown.
fn assert_next_chat_is_a_roll(server: &mut SocketioServer, count: usize, sides: u32) {
    let (from, answer) = server.next_chat();
    assert_eq!(from, "RoseyBot", "{answer}");
    let parsed = answer.strip_prefix("🎲 [").and_then(|rest| rest.split_once("] = ")).and_then(
        |(dice, total)| {
            let dice: Vec<u32> = dice.split(", ").map(str::parse).collect::<Result<_, _>>().ok()?;
            Some((dice, total.parse::<u32>().ok()?))
        },
    );
    let (dice, total) = parsed.unwrap_or_else(|| panic!("not a dice answer: {answer:?}"));
    assert_eq!(dice.len(), count, "{answer}");
    assert!(dice.iter().all(|d| (1..=sides).contains(d)), "{answer}");
    assert_eq!(dice.iter().sum::<u32>(), total, "{answer}");
}

/// A config in `dir` for the channel `testchan` on the server at `port`, with the bundled dice-roller
/// as the only plugin (its program is found next to the rosey executable) and no dashboard (whose
/// default port another test may hold).
fn dice_roller_on_cytube(dir: &Path, port: u16) -> PathBuf {
    let program = Path::new(ROSEY).with_file_name("rosey-dice-roller");
    assert!(
        program.is_file(),
        "{} is not built: run `cargo build -p rosey-dice-roller` first (a test of the whole \
         workspace builds it)",
        program.display()
    );
    let plugin = dir.join("plugins/dice-roller");
    std::fs::create_dir_all(&plugin).unwrap();
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dice-roller/plugin.toml");
    std::fs::copy(bundled, plugin.join("plugin.toml")).unwrap();
    write_config(
        dir,
        &format!(
            r#"{{"logging": {{"file": null}}, "dashboard": {{"enabled": false}},
                 "cytube": {{"server": "http://127.0.0.1:{port}", "channel": "testchan",
                             "username": "RoseyBot"}}}}"#
        ),
    )
}

#[test]
fn the_bot_joins_answers_pings_and_reconnects_on_the_real_socketio_server() {
    let mut server = SocketioServer::start(0);
    let dir = scratch_dir();
    let config = dice_roller_on_cytube(&dir, server.port);
    let bot =
        Bot(Some(Running::start(rosey(&dir, &["run", "--config", config.to_str().unwrap()]))));

    // The join and the login, as the real server saw them.
    assert_eq!(server.wait_event("joinChannel")["name"], "testchan");
    assert_eq!(server.wait_event("login")["name"], "RoseyBot");
    let mut log = bot.running().wait_for("rosey ready");
    assert!(log.contains("joined the CyTube channel"), "{log}");

    // A command answered. The join replayed alice's `!roll 1d4` as history: it is not answered,
    // so the bot's first chat line is the answer to 2d6.
    server.say("alice", "!roll 2d6");
    assert_next_chat_is_a_roll(&mut server, 2, 6);

    // The server pings every 300 ms and socket.io drops a client that does not answer in time.
    server.wait_pongs(5);

    // The server dies without a word and comes back on the same port.
    let port = server.port;
    server.kill();
    let mut server = SocketioServer::start(port);
    assert_eq!(server.port, port);
    assert_eq!(server.wait_event("joinChannel")["name"], "testchan");
    assert_eq!(server.wait_event("login")["name"], "RoseyBot");
    log.push_str(&bot.running().wait_for("rejoined the CyTube channel"));

    // The bot answers again: its first chat line on the new connection is the answer to 3d8, not
    // one to the history replayed by the new join, nor its earlier answer sent a second time.
    server.say("alice", "!roll 3d8");
    assert_next_chat_is_a_roll(&mut server, 3, 8);
    server.wait_pongs(3);

    // Stopped, the bot leaves the channel; nothing went wrong on the way, and the lost connection
    // was noticed as such.
    log.push_str(&bot.stop());
    server
        .wait_for("the bot's disconnect", |report| (report["event"] == "disconnect").then_some(()));
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "errors in rosey's log:\n{}", errors.join("\n"));
    assert!(log.contains("CyTube connection lost; reconnecting"), "{log}");
}
