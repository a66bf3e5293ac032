//! The spec's end-to-end test (issue 15, item 2) against `rosey run` as an operator runs it:
//! dashboard and metrics on, `!admin` for the owner, a plugin redeployed on disk and reloaded from
//! the chat; on the in-process bus, on NATS (a server of the test's own), on the console and on the
//! fake CyTube server. Also the harness the checklist and Prometheus tests share: [`Bot`], a running
//! bot spoken to as a chat user, and HTTP to its dashboard.
//!
//! The dice-roller here is a small Python plugin under that name, not the bundled binary: the bundled
//! one reports its crate version in `ready` (1.0.0), whatever its `plugin.toml` says, and the version
//! a plugin reports is the one its status, `!admin` and `/api/metrics` show (a differing manifest is
//! only a warning in the log). A new release changes the program and the manifest together, as this
//! test's redeploy does, so the new version is visible everywhere.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::time::{Duration, Instant};

use rosey_testkit::cytube::{ChannelHandle, FakeCytubeOptions, ServerEvent};
use rosey_testkit::nats::NatsServer;
use serde_json::Value;
use tokio::sync::broadcast::Receiver;

use super::{Cytube, Running, rosey, scratch_dir, write_config};

// ---- HTTP to the dashboard ----

/// A free loopback port (bound and released; the kernel does not hand it out again at once).
pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.0 request to 127.0.0.1:`port` with extra header lines; the status and the body.
pub(super) fn request(port: u16, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{headers}Content-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

/// `GET path` answered 200 with JSON: the JSON.
pub(super) fn get_json(port: u16, path: &str) -> Value {
    let (status, body) = request(port, "GET", path, "");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// `GET /metrics`, checked by promtool, with the `node` label every sample carries (`node.name`)
/// taken out, so that series can be matched as their plugins and counters name them.
pub(super) fn scrape(port: u16) -> String {
    let (status, body) = request(port, "GET", "/metrics", "");
    assert_eq!(status, 200, "{body}");
    rosey_testkit::promtool::check_metrics(&body);
    let samples = body.lines().filter(|line| !line.is_empty() && !line.starts_with('#'));
    let unlabelled: Vec<&str> = samples.filter(|line| !line.contains("{node=\"")).collect();
    assert!(unlabelled.is_empty(), "samples without their node: {unlabelled:?}");
    let mut plain = String::with_capacity(body.len());
    for line in body.lines() {
        match line.split_once("{node=\"") {
            Some((name, rest)) => {
                let (_, rest) = rest.split_once('"').unwrap();
                plain.push_str(name);
                match rest.strip_prefix(',') {
                    Some(labels) => {
                        plain.push('{');
                        plain.push_str(labels);
                    }
                    None => plain.push_str(rest.strip_prefix('}').unwrap()),
                }
            }
            None => plain.push_str(line),
        }
        plain.push('\n');
    }
    plain
}

/// Polls `probe` every 100 ms until it gives a value, for at most `patience`. For state that only an
/// HTTP endpoint shows, where there is nothing to await.
pub(super) fn poll<T>(patience: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {patience:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plugin's entry in `GET /api/metrics`.
pub(super) fn plugin_metrics(port: u16, name: &str) -> Value {
    let all = get_json(port, "/api/metrics");
    let found = all["plugins"].as_array().unwrap().iter().find(|p| p["name"] == name).cloned();
    found.unwrap_or_else(|| panic!("{name} not in /api/metrics: {all}"))
}

/// Waits until the dashboard reports at least `count` events finished by `plugin`; returns the count.
pub(super) fn wait_event_count(port: u16, plugin: &str, count: u64) -> u64 {
    poll(Duration::from_secs(10), &format!("{plugin} event_count >= {count}"), || {
        plugin_metrics(port, plugin)["event_count"].as_u64().filter(|&n| n >= count)
    })
}

// ---- The plugins a test deploys ----

/// The dice-roller as a test deploys it: `!roll NdS` in Python, reporting `VERSION`.
const PYTHON_DICE_ROLLER: &str = r#"import json, random, re, sys

VERSION = "1.0.0"

def send(message):
    sys.stdout.write(json.dumps(message, ensure_ascii=False) + "\n")
    sys.stdout.flush()

for line in sys.stdin:
    message = json.loads(line)
    kind = message.get("type")
    if kind == "init":
        send({"type": "ready", "name": message["name"], "version": VERSION,
              "commands": ["roll"], "subscribe": []})
    elif kind == "ping":
        send({"type": "pong", "id": message["id"]})
    elif kind == "event":
        dice = re.fullmatch(r"\s*(\d*)d(\d+)\s*", (message.get("data") or {}).get("args", ""))
        count, sides = (int(dice.group(1) or 1), int(dice.group(2))) if dice else (1, 6)
        rolls = [random.randint(1, sides) for _ in range(count)]
        send({"type": "reply", "id": message["id"], "message": "🎲 %s = %d" % (rolls, sum(rolls))})
        send({"type": "done", "id": message["id"]})
    elif kind == "shutdown":
        break
"#;

/// A plugin folder in `dir`: the Python dice-roller at `version`, and the bundled 8ball and quotes
/// (their manifests; the programs are found next to the rosey executable).
pub(super) fn deploy_plugins(dir: &Path) -> PathBuf {
    let plugins = dir.join("plugins");
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    for name in ["8ball", "quotes"] {
        std::fs::create_dir_all(plugins.join(name)).unwrap();
        std::fs::copy(
            bundled.join(name).join("plugin.toml"),
            plugins.join(name).join("plugin.toml"),
        )
        .unwrap();
    }
    release_dice_roller(&plugins, "1.0.0");
    plugins
}

/// Puts dice-roller `version` in place: its program and its manifest, as a new release does.
pub(super) fn release_dice_roller(plugins: &Path, version: &str) {
    let folder = plugins.join("dice-roller");
    std::fs::create_dir_all(&folder).unwrap();
    let program = PYTHON_DICE_ROLLER.replace("1.0.0", version);
    std::fs::write(folder.join("dice.py"), program).unwrap();
    std::fs::write(
        folder.join("plugin.toml"),
        format!(
            "name = \"dice-roller\"\nversion = \"{version}\"\nexec = [\"python3\", \"dice.py\"]\n\
             commands = [\"roll\"]\n\n[health]\nprobe = \"!roll 1d20\"\n"
        ),
    )
    .unwrap();
}

// ---- A running bot and its chat ----

/// Where the bot chats: the console (its stdin and stdout) or a channel on the fake CyTube server.
enum Chat {
    /// The console's input, until the bot is stopped.
    Console(Option<ChildStdin>),
    Cytube {
        server: Cytube,
        channel: ChannelHandle,
        events: Receiver<ServerEvent>,
    },
}

/// `rosey run` with its dashboard on `port`, read and spoken to as a user of its chat would.
pub(super) struct Bot {
    running: Running,
    chat: Chat,
    /// The dashboard's port.
    pub(super) port: u16,
    /// Every log line read so far.
    pub(super) log: String,
}

/// The CyTube channel of these tests.
const CHANNEL: &str = "testchan";

impl Bot {
    /// Starts `rosey run` in `dir` with `config` (JSON without braces, `cytube` added when `server`
    /// is given) and waits for `rosey ready`.
    pub(super) fn start(dir: &Path, config: &str, server: Option<Cytube>) -> Bot {
        let config = match &server {
            Some(server) => format!(
                r#"{{{config}, "cytube": {{"server": "{}", "channel": "{CHANNEL}", "username": "RoseyBot"}}}}"#,
                server.server.url()
            ),
            None => format!("{{{config}}}"),
        };
        let path = write_config(dir, &config);
        let mut cmd = rosey(dir, &["run", "--config", path.to_str().unwrap()]);
        cmd.stdin(Stdio::piped());
        let mut running = Running::start(cmd);
        let stdin = running.child.stdin.take().unwrap();
        let startup = running.wait_for("rosey ready");
        let chat = match server {
            Some(server) => {
                drop(stdin);
                let channel = server.server.channel(CHANNEL);
                // From now on: the join and its burst are over.
                let events = server.server.subscribe();
                Chat::Cytube { server, channel, events }
            }
            None => Chat::Console(Some(stdin)),
        };
        let port = startup
            .split("dashboard serving url=http://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.lines().next()?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no dashboard in the startup:\n{startup}"));
        Bot { running, chat, port, log: startup }
    }

    /// `user` says `line` in the chat.
    pub(super) fn say(&mut self, user: &str, line: &str) {
        match &mut self.chat {
            Chat::Console(stdin) => writeln!(stdin.as_mut().unwrap(), "{user}: {line}").unwrap(),
            Chat::Cytube { channel, .. } => channel.say(user, line),
        }
    }

    /// The bot's next chat line containing `needle` (lines before it are skipped).
    pub(super) fn answer(&mut self, needle: &str) -> String {
        self.answer_after(needle).1
    }

    /// The bot's chat lines before the next one containing `needle`, and that one.
    pub(super) fn answer_after(&mut self, needle: &str) -> (Vec<String>, String) {
        let mut before = Vec::new();
        loop {
            let line = match &mut self.chat {
                Chat::Console(_) => {
                    let line = self.running.chat.recv_timeout(Duration::from_secs(20));
                    let line = line.unwrap_or_else(|_| panic!("no answer containing {needle:?}"));
                    line.strip_prefix("rosey: ").map(str::to_owned).unwrap_or(line)
                }
                Chat::Cytube { server, events, .. } => server.wait_chat_from(events, "RoseyBot"),
            };
            if line.contains(needle) {
                return (before, line);
            }
            before.push(line);
        }
    }

    /// `user` says `line`; the bot's answer containing `needle`.
    pub(super) fn ask(&mut self, user: &str, line: &str, needle: &str) -> String {
        self.say(user, line);
        self.answer(needle)
    }

    /// Stops the bot with SIGTERM; asserts a clean exit and returns the whole log.
    pub(super) fn stop(mut self) -> String {
        if let Chat::Console(stdin) = &mut self.chat {
            drop(stdin.take()); // the end of the console's input, as when the terminal closes
        }
        self.running.signal("TERM");
        let status = self.running.child.wait().unwrap();
        let rest: Vec<String> = self.running.logs.iter().collect();
        self.log.push_str(&rest.join("\n"));
        assert!(status.success(), "exit {status:?}; log:\n{}", self.log);
        std::mem::take(&mut self.log)
    }
}

impl Drop for Bot {
    /// A test that failed half-way leaves no bot running (after [`Bot::stop`] it has exited).
    fn drop(&mut self) {
        let _ = self.running.child.kill();
        let _ = self.running.child.wait();
    }
}

/// Asserts that `log` has no ERROR line and no WARN line.
pub(super) fn assert_clean(log: &str) {
    let bad: Vec<&str> =
        log.lines().filter(|l| l.contains(" ERROR ") || l.contains(" WARN ")).collect();
    assert!(bad.is_empty(), "errors or warnings in the log:\n{}", bad.join("\n"));
}

// ---- Issue 15, item 2: the spec's end-to-end test ----

/// Which event bus the bot runs on.
enum Bus {
    Memory,
    Nats,
}

/// Where the bot chats.
enum Place {
    Console,
    Cytube,
}

/// The spec's end-to-end test, step by step.
fn spec_end_to_end(bus: Bus, place: Place) {
    let nats = matches!(bus, Bus::Nats).then(NatsServer::start);
    let server = matches!(place, Place::Cytube).then(|| {
        let server = Cytube::start(FakeCytubeOptions::default());
        let channel = server.server.channel(CHANNEL);
        channel.join_peer("alice", 1.0); // the owner, a registered user
        channel.join_peer("bob", 1.0); // an admin, registered
        channel.join_peer("carol", 0.0); // a guest who rolls dice
        server
    });
    let dir = scratch_dir();
    let plugins = deploy_plugins(&dir);
    let nats_url = nats.as_ref().map(|n| format!(r#", "nats_url": "{}""#, n.url()));
    let config = format!(
        r#""owner": "alice", "admins": ["bob"], "plugin_dir": {:?}, "logging": {{"file": null}},
           "metrics": {{"poll_interval": 1}}, "dashboard": {{"port": {}}}{}"#,
        plugins.display().to_string(),
        free_port(),
        nats_url.unwrap_or_default()
    );

    // Start with dashboard and metrics on.
    let mut bot = Bot::start(&dir, &config, server);
    let port = bot.port;
    let bus_name = if nats.is_some() { "bus=\"nats\"" } else { "bus=\"memory\"" };
    assert!(bot.log.contains(bus_name), "{}", bot.log);
    // GET / answers 200.
    let (status, page) = request(port, "GET", "/", "");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(r#"data-plugin="dice-roller""#), "{page}");

    // !roll 2d6 is answered, and the dice-roller's event_count is at least 1.
    let roll = bot.ask("carol", "!roll 2d6", "🎲");
    let total: u32 = roll.rsplit("= ").next().unwrap().trim().parse().unwrap();
    assert!((2..=12).contains(&total), "{roll}");
    wait_event_count(port, "dice-roller", 1);
    assert_eq!(plugin_metrics(port, "dice-roller")["version"], "1.0.0");

    // Version 1.1 on disk; `!admin reload dice-roller`, then `yes` from the admin.
    release_dice_roller(&plugins, "1.1.0");
    let prompt = bot.ask("alice", "!admin reload dice-roller", "Type yes");
    assert!(prompt.starts_with("Reload dice-roller v1.0.0 → v1.1.0?"), "{prompt}");
    let asked = Instant::now();
    let done = bot.ask("alice", "yes", "Reloaded");
    assert!(asked.elapsed() < Duration::from_secs(5), "reloaded after {:?}", asked.elapsed());
    assert!(done.starts_with("✅ Reloaded dice-roller v1.0.0 → v1.1.0 ("), "{done}");

    // The plugin reports 1.1, and so does /api/metrics.
    let status = bot.ask("bob", "!admin status dice-roller", "dice-roller v");
    assert!(status.starts_with("dice-roller v1.1.0 RUNNING"), "{status}");
    poll(Duration::from_secs(5), "/api/metrics shows dice-roller 1.1.0", || {
        (plugin_metrics(port, "dice-roller")["version"] == "1.1.0").then_some(())
    });

    // !roll 3d8 is answered, by the new version; event_count is at least 2.
    let roll = bot.ask("carol", "!roll 3d8", "🎲");
    let total: u32 = roll.rsplit("= ").next().unwrap().trim().parse().unwrap();
    assert!((3..=24).contains(&total), "{roll}");
    wait_event_count(port, "dice-roller", 2);

    // Zero errors in the log (and no warning at all).
    let log = bot.stop();
    assert!(log.contains("plugin reloaded plugin=dice-roller from=1.0.0 to=1.1.0"), "{log}");
    assert_clean(&log);
}

#[test]
fn spec_end_to_end_on_the_in_process_bus_and_the_console() {
    spec_end_to_end(Bus::Memory, Place::Console);
}

#[test]
fn spec_end_to_end_on_nats_and_the_console() {
    spec_end_to_end(Bus::Nats, Place::Console);
}

#[test]
fn spec_end_to_end_on_nats_through_cytube_with_the_admin_a_registered_user() {
    spec_end_to_end(Bus::Nats, Place::Cytube);
}
