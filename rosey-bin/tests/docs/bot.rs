//! Blocks that need Rosey running: `sh test bot` blocks and `json response` blocks against one bot
//! with the bundled plugins and the dashboard, the `db` fixture, and `python plugin` blocks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::markdown::{self, Block};
use super::run::{self, ROSEY, Scratch};
use super::{report, shell};

/// The dashboard token of the running bot, exported to `sh test bot` blocks as
/// `ROSEY_DASHBOARD_TOKEN`.
const TOKEN: &str = "docs-test-token-0123456789";

/// The address the docs use for the dashboard, replaced by the running bot's in `sh test bot` blocks.
const DOCUMENTED_ADDRESS: [&str; 2] = ["127.0.0.1:8080", "localhost:8080"];

/// How long the bot may take to be ready and have its first metrics samples.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A `rosey run` on the console with the bundled plugins, `alice` as owner, the dashboard on a free
/// port with [`TOKEN`], and the collector sampling every second. Stopped (SIGTERM, then SIGKILL)
/// when dropped.
struct Bot {
    scratch: Scratch,
    child: Child,
    _stdin: ChildStdin,
    port: u16,
}

impl Bot {
    fn start() -> Bot {
        run::require_bundled_plugins();
        let scratch = Scratch::new();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            r#"{{"owner": "alice", "logging": {{"file": null}}, "metrics": {{"poll_interval": 1}},
                "dashboard": {{"port": {port}, "token": "{TOKEN}"}}}}"#
        );
        std::fs::write(scratch.path("bot.json"), config).unwrap();
        let mut cmd = scratch.command(ROSEY);
        cmd.args(["run", "--config", "bot.json"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let logs = lines(child.stderr.take().unwrap());
        let chat = lines(child.stdout.take().unwrap());
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let line = logs.recv_timeout(deadline.saturating_duration_since(Instant::now()));
            match line {
                Ok(line) if line.contains("rosey ready") => break,
                Ok(_) => {}
                Err(_) => panic!("the bot for the doc tests did not get ready"),
            }
        }
        // Something for every counter and table: commands to each plugin, an admin command.
        for line in
            ["alice: !roll 2d6", "bob: !8ball will it work?", "alice: !quote", "alice: !admin list"]
        {
            writeln!(stdin, "{line}").unwrap();
        }
        for _ in 0..4 {
            chat.recv_timeout(START_LIMIT).expect("the bot answers the fixture's commands");
        }
        let bot = Bot { scratch, child, _stdin: stdin, port };
        // The collector samples every second: wait for a plugin's first hour aggregates, so the
        // answers have a value (not null) in every field the docs show.
        loop {
            let (_, body) = bot.http("GET", "/api/plugin/dice-roller");
            let json: Value = serde_json::from_str(&body).unwrap_or_default();
            if json["metrics"]["aggregates_1h"]["cpu_p95"].is_number() {
                break;
            }
            assert!(Instant::now() < deadline, "no metrics samples: {body}");
            std::thread::sleep(Duration::from_millis(200));
        }
        bot
    }

    /// One HTTP/1.0 request to the dashboard (with the token); the status and the body.
    fn http(&self, method: &str, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, body.to_owned())
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = std::process::Command::new("kill").args(["-TERM", "--", &group]).status();
        let (done, waited) = mpsc::channel();
        let pid = self.child.id();
        std::thread::scope(|scope| {
            let child = &mut self.child;
            scope.spawn(move || {
                let _ = done.send(child.wait());
            });
            if waited.recv_timeout(Duration::from_secs(60)).is_err() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
        });
    }
}

/// The lines of a stream, read on a thread of their own.
fn lines(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn blocks_against_a_running_bot() {
    let blocks = markdown::all_blocks();
    let bot = Bot::start();
    let address = format!("127.0.0.1:{}", bot.port);
    let mut failures = Vec::new();
    let (mut scripts, mut responses) = (0, 0);
    for (i, block) in blocks.iter().enumerate() {
        if block.is("sh", "test") && block.args.iter().any(|a| a == "bot") {
            scripts += 1;
            let script =
                DOCUMENTED_ADDRESS.iter().fold(block.text.clone(), |s, a| s.replace(a, &address));
            let mut cmd = shell::bash(&bot.scratch, &script);
            cmd.env("ROSEY_DASHBOARD_TOKEN", TOKEN);
            if let Err(err) = shell::run_block(block, cmd, shell::output_after(&blocks, i)) {
                failures.push(format!("{}: {err}", block.at()));
            }
        } else if block.is("json", "response") {
            responses += 1;
            if let Err(err) = check_response(&bot, block) {
                failures.push(format!("{}: {err}", block.at()));
            }
        }
    }
    assert!(
        scripts > 0 && responses > 0,
        "no `sh test bot` or no `json response` block in the docs"
    );
    report("blocks that do not match the running bot", failures);
}

/// Each JSON value of the block against what the bot answers to the block's request.
fn check_response(bot: &Bot, block: &Block) -> Result<(), String> {
    let [method, path] = block.args.as_slice() else { return Err("no request".to_owned()) };
    // Any status: an error's JSON is documented too; a wrong path answers no JSON (or other fields).
    let (status, body) = bot.http(method, path);
    let served: Value = serde_json::from_str(&body)
        .map_err(|err| format!("{method} {path}: {status}, not JSON: {err}"))?;
    let documented = super::formats::json_values(&block.text)?;
    let mut problems = Vec::new();
    for value in &documented {
        shape_differences(value, &served, "", &mut problems);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{method} {path}: {}; served: {body}", problems.join("; ")))
    }
}

/// Where `documented` and `served` differ in shape: object fields missing on either side, or a
/// different JSON type. `null` on either side matches anything (a value not known yet); a string
/// `…` in an array stands for more elements; each documented array element must match some served
/// element (arrays may mix shapes, as `/api/events` does).
fn shape_differences(documented: &Value, served: &Value, at: &str, problems: &mut Vec<String>) {
    match (documented, served) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(doc), Value::Object(real)) => {
            for key in doc.keys().filter(|k| !real.contains_key(*k)) {
                problems.push(format!("`{at}.{key}` is documented but not served"));
            }
            for key in real.keys().filter(|k| !doc.contains_key(*k)) {
                problems.push(format!("`{at}.{key}` is served but not documented"));
            }
            for (key, value) in doc {
                if let Some(real) = real.get(key) {
                    shape_differences(value, real, &format!("{at}.{key}"), problems);
                }
            }
        }
        (Value::Array(doc), Value::Array(real)) => {
            for element in doc.iter().filter(|e| e.as_str() != Some("…")) {
                let mut closest: Option<Vec<String>> = None;
                for candidate in real {
                    let mut found = Vec::new();
                    shape_differences(element, candidate, &format!("{at}[]"), &mut found);
                    if closest.as_ref().is_none_or(|c| found.len() < c.len()) {
                        closest = Some(found);
                    }
                }
                problems.extend(closest.unwrap_or_default());
            }
        }
        (doc, real) if kind(doc) != kind(real) => {
            problems.push(format!(
                "`{at}` is documented as {} but served as {}",
                kind(doc),
                kind(real)
            ));
        }
        _ => {}
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[test]
fn shapes_are_compared_field_by_field() {
    let served = serde_json::json!({"a": 1, "b": [{"x": 1}, {"y": "s"}], "c": null, "d": "t"});
    let same = serde_json::json!({"a": 2, "b": [{"y": "u"}, "…"], "c": {"z": 1}, "d": "v"});
    let mut problems = Vec::new();
    shape_differences(&same, &served, "", &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    let other = serde_json::json!({"a": "2", "b": [{"w": 1}], "e": 1});
    shape_differences(&other, &served, "", &mut problems);
    assert_eq!(problems.len(), 6, "{problems:?}");
}

/// Writes `rosey.db` into `scratch` the way a real run does: the bundled plugins start and stop,
/// a command is answered and `alice`, the owner, runs `!admin list`.
pub(crate) fn write_database(scratch: &Scratch) -> Result<(), String> {
    let config =
        r#"{"owner": "alice", "logging": {"file": null}, "dashboard": {"enabled": false}}"#;
    std::fs::write(scratch.path(".db-fixture.json"), config).map_err(|e| e.to_string())?;
    let script =
        "printf 'alice: !roll 2d6\\nalice: !admin list\\n' | rosey run --config .db-fixture.json";
    let ran = run::run(shell::bash(scratch, script), Duration::from_secs(120))?;
    if ran.status.success() { Ok(()) } else { Err(ran.describe()) }
}

#[test]
fn python_plugins_answer_their_command() {
    let mut failures = Vec::new();
    let blocks = markdown::all_blocks();
    let plugins: Vec<&Block> = blocks.iter().filter(|b| b.is("python", "plugin")).collect();
    assert!(!plugins.is_empty(), "no `python plugin` block in the docs");
    for block in plugins {
        if let Err(err) = run_python_plugin(block) {
            failures.push(format!("{}: {err}", block.at()));
        }
    }
    report("python plugins that do not work", failures);
}

/// Runs the block as the only plugin of a bot on the console and asks its command once.
fn run_python_plugin(block: &Block) -> Result<(), String> {
    let command = &block.args[0];
    let scratch = Scratch::new();
    let dir = scratch.path("doc-plugins/doc-python");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("plugin.py"), &block.text).map_err(|e| e.to_string())?;
    let manifest = format!(
        "name = \"doc-python\"\nversion = \"1.0.0\"\nexec = [\"python3\", \"plugin.py\"]\ncommands = [\"{command}\"]\n"
    );
    std::fs::write(dir.join("plugin.toml"), manifest).map_err(|e| e.to_string())?;
    let config = r#"{"plugin_dir": "doc-plugins", "logging": {"file": null}, "dashboard": {"enabled": false}}"#;
    std::fs::write(scratch.path("c.json"), config).map_err(|e| e.to_string())?;
    let script = format!("printf 'alice: !{command}\\n' | rosey run --config c.json");
    let ran = run::run(shell::bash(&scratch, &script), Duration::from_secs(60))?;
    let answered = ran.stdout.lines().any(|line| line.starts_with("rosey: "));
    if ran.status.success() && answered {
        Ok(())
    } else {
        Err(format!("`!{command}` got no answer: {}", ran.describe()))
    }
}

/// Families that exist only once something happened the fixture does not do.
const ONLY_AFTER_AN_EVENT: [&str; 1] = ["rosey_custom_metrics_refused_total"];

#[test]
fn metrics_md_names_every_family_the_bot_exposes_and_no_other() {
    let bot = Bot::start();
    let (_, body) = bot.http("GET", "/metrics");
    let exposed: std::collections::BTreeSet<&str> = body
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split_whitespace().next())
        .collect();
    assert!(exposed.len() > 20, "{body}");
    let page = std::fs::read_to_string(markdown::repo().join("docs/METRICS.md")).unwrap();
    let mut failures: Vec<String> = exposed
        .iter()
        .filter(|family| !page.contains(&format!("`{family}")))
        .map(|family| format!("docs/METRICS.md: {family} is exposed but not described"))
        .collect();
    // The first column of the metric tables: `name{labels}` or `name`.
    for (n, line) in page.lines().enumerate() {
        let Some(cell) = line.strip_prefix("| `") else { continue };
        let name: String =
            cell.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let is_metric = name.starts_with("rosey_") || name.starts_with("process_");
        if is_metric && !exposed.contains(name.as_str()) && !ONLY_AFTER_AN_EVENT.contains(&&*name) {
            failures
                .push(format!("docs/METRICS.md:{}: {name} is described but not exposed", n + 1));
        }
    }
    report("metrics the page and the bot disagree on", failures);
}
