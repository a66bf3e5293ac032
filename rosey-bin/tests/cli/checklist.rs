//! The spec's manual checklist (issue 15, item 3), automated where a program can check it, against
//! `rosey run` with the bundled plugins: startup order, the dashboard showing every plugin, a valid
//! Prometheus endpoint, auto-refresh, CPU and memory updating, event counts increasing, a correct
//! uptime; every `!admin` command (reloads prompting and done under 5 s), a stranger refused, and
//! the audit log.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::e2e::{
    Bot, assert_clean, free_port, get_json, plugin_metrics, poll, request, scrape, wait_event_count,
};
use super::scratch_dir;

/// The `overview` events of the dashboard's Server-Sent Events stream, `GET /api/stream`.
struct Overviews {
    stream: BufReader<TcpStream>,
}

impl Overviews {
    fn open(port: u16) -> Overviews {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(stream, "GET /api/stream HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").unwrap();
        let mut stream = BufReader::new(stream);
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            assert!(stream.read_line(&mut head).unwrap() > 0, "the stream ended: {head}");
        }
        assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_lowercase().contains("content-type: text/event-stream"), "{head}");
        Overviews { stream }
    }

    /// The data of the next `overview` event (the page's fragments, JSON).
    fn next(&mut self) -> Value {
        let (mut event, mut data) = (String::new(), String::new());
        loop {
            let mut line = String::new();
            assert!(self.stream.read_line(&mut line).unwrap() > 0, "the stream ended");
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_owned();
            } else if let Some(more) = line.strip_prefix("data:") {
                data.push_str(more.strip_prefix(' ').unwrap_or(more));
            } else if line.is_empty() && !data.is_empty() {
                if event == "overview" {
                    return serde_json::from_str(&data).unwrap();
                }
                (event, data) = (String::new(), String::new());
            }
        }
    }
}

/// The events a plugin's card shows, in an `overview` event.
fn card_events(overview: &Value, plugin: &str) -> u64 {
    let cards = overview["cards"].as_array().unwrap();
    let card = cards.iter().find(|c| c["name"] == plugin).unwrap_or_else(|| panic!("{overview}"));
    let html = card["html"].as_str().unwrap();
    let after = html.split("<dt>Events</dt><dd>").nth(1).unwrap_or_else(|| panic!("{html}"));
    after.split('<').next().unwrap().parse().unwrap()
}

/// The index of the first log line containing `needle`.
fn line_of(log: &str, needle: &str) -> usize {
    let found = log.lines().position(|l| l.contains(needle));
    found.unwrap_or_else(|| panic!("no log line with {needle:?}:\n{log}"))
}

/// A config running the bundled plugins with the dashboard and metrics polled every second.
pub(super) fn checklist_config(admins: &[&str]) -> String {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    format!(
        r#""owner": "alice", "admins": {admins:?}, "plugin_dir": {:?}, "logging": {{"file": null}},
           "metrics": {{"poll_interval": 1}}, "dashboard": {{"port": {}}}"#,
        plugins.display().to_string(),
        free_port()
    )
}

const BUNDLED: [&str; 4] = ["8ball", "admin", "dice-roller", "quotes"];

#[test]
fn checklist_startup_order_dashboard_prometheus_auto_refresh_and_live_numbers() {
    let dir = scratch_dir();
    let spawned = Instant::now();
    let mut bot = Bot::start(&dir, &checklist_config(&[]), None);
    let port = bot.port;

    // Startup order: storage, then the plugins, the dashboard, the admin plugin, ready. Checked
    // against today's lines; when each part logs its own "started" line (with how long it took),
    // check those instead, the bus and the metrics collector included.
    let log = bot.log.clone();
    let storage = line_of(&log, "storage opened");
    let dashboard = line_of(&log, "dashboard serving");
    for plugin in ["8ball", "dice-roller", "quotes"] {
        let started = line_of(&log, &format!("plugin started plugin={plugin} "));
        assert!(storage < started && started < dashboard, "{plugin} starts in step 3:\n{log}");
    }
    let admin = line_of(&log, "plugin started plugin=admin");
    assert!(dashboard < admin && admin < line_of(&log, "rosey ready"), "{log}");

    // The dashboard shows every plugin, running. Its first snapshot is taken when it starts, before
    // the admin plugin is added, and may be served for up to a second (`max_age`) after ready.
    let running = BUNDLED.map(|name| (name.to_owned(), "RUNNING".to_owned()));
    let all = poll(Duration::from_secs(3), "every plugin RUNNING in /api/metrics", || {
        let all = get_json(port, "/api/metrics");
        let plugins: Vec<(String, String)> = all["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (p["name"].as_str().unwrap().to_owned(), p["state"].as_str().unwrap().to_owned())
            })
            .collect();
        (plugins == running).then_some(all)
    });
    let (status, page) = request(port, "GET", "/", "");
    assert_eq!(status, 200);
    for plugin in BUNDLED {
        assert!(page.contains(&format!(r#"data-plugin="{plugin}""#)), "no card for {plugin}");
    }
    assert_eq!(
        (&all["system"]["total_plugins"], &all["system"]["plugins_running"]),
        (&4.into(), &4.into())
    );
    assert_eq!(request(port, "GET", "/readyz", "").0, 200);

    // The Prometheus endpoint is valid.
    let metrics = scrape(port);
    assert!(metrics.contains("\nrosey_plugins_running 4\n"), "{metrics}");

    // Auto-refresh: without JavaScript the page reloads itself; with it, the stream sends an
    // overview when something changed (here, the events of a roll).
    assert!(page.contains(r#"<noscript><meta http-equiv="refresh" content="5"></noscript>"#));
    let mut overviews = Overviews::open(port);
    let before = card_events(&overviews.next(), "dice-roller");
    let counted = plugin_metrics(port, "dice-roller")["event_count"].as_u64().unwrap();
    let total = all["system"]["total_events"].as_u64().unwrap();
    bot.ask("bob", "!roll 1d6", "🎲");
    let deadline = Instant::now() + Duration::from_secs(10);
    while card_events(&overviews.next(), "dice-roller") <= before {
        assert!(Instant::now() < deadline, "no overview with the roll's event");
    }

    // Event counts increase: the plugin's and the bot's total.
    wait_event_count(port, "dice-roller", counted + 1);
    poll(Duration::from_secs(5), "total_events increases", || {
        let now = get_json(port, "/api/metrics")["system"]["total_events"].as_u64().unwrap();
        (now > total).then_some(())
    });

    // CPU and memory update: sampled every second into the history, and shown as they are now.
    let history = |json: &Value| json["history"].as_array().map_or(0, Vec::len);
    let first = history(&get_json(port, "/api/plugin/dice-roller"));
    let plugin = poll(Duration::from_secs(10), "a new CPU and memory sample", || {
        let json = get_json(port, "/api/plugin/dice-roller");
        (history(&json) > first).then_some(json)
    });
    let current = &plugin["metrics"]["current"];
    assert!(current["cpu_percent"].as_f64().is_some_and(|c| c >= 0.0), "{plugin}");
    assert!(current["memory_mb"].as_f64().is_some_and(|m| m > 0.1), "{plugin}");
    let listed = plugin_metrics(port, "dice-roller");
    assert!(listed["cpu_percent"].is_number() && listed["memory_mb"].is_number(), "{listed}");

    // Uptime is correct: the time since the process started, within the snapshot's age (1 s).
    let asked = spawned.elapsed().as_secs_f64();
    let system = get_json(port, "/api/metrics")["system"].clone();
    let answered = spawned.elapsed().as_secs_f64();
    let uptime = system["bot_uptime_seconds"].as_f64().unwrap();
    assert!(uptime <= answered && uptime >= asked - 2.0, "{uptime} s, asked at {asked} s");
    let human = system["bot_uptime_human"].as_str().unwrap();
    let whole = uptime.floor();
    assert!([whole, whole - 1.0].iter().any(|s| human == format!("{s}s")), "{human} vs {uptime}");
    let live = get_json(port, "/healthz")["uptime_seconds"].as_f64().unwrap();
    assert!(live >= uptime && live <= spawned.elapsed().as_secs_f64(), "{live} vs {uptime}");
    let dice = plugin_metrics(port, "dice-roller")["uptime_seconds"].as_f64().unwrap();
    assert!(dice > 0.0 && dice <= live, "a plugin is up no longer than the bot: {dice}");

    drop(overviews);
    assert_clean(&bot.stop());
}

#[test]
fn checklist_every_admin_command_answers_a_stranger_is_refused_and_all_is_audited() {
    // One admin per command: each admin may run one command every 5 s.
    let admins = ["bob", "carol", "dave", "erin", "frank", "grace", "heidi"];
    let dir = scratch_dir();
    let mut bot = Bot::start(&dir, &checklist_config(&admins), None);
    let port = bot.port;
    // Every answer is checked in full below: none is an error.
    let help = bot.ask("alice", "!admin help", "Admin commands: ");
    for sub in ["list", "status [plugin]", "reload <plugin>", "reload --all", "restart <plugin>"] {
        assert!(help.contains(&format!("!admin {sub}")), "{help}");
    }
    let list = bot.ask("bob", "!admin list", "Plugins (4): ");
    assert_eq!(
        list,
        "Plugins (4): 8ball v1.0.0 RUNNING · admin v0.1.0 RUNNING · dice-roller v1.0.0 RUNNING · \
         quotes v1.0.0 RUNNING"
    );
    let status = bot.ask("carol", "!admin status", "Status (4): ");
    assert!(status.contains("dice-roller RUNNING up "), "{status}");
    // Once the plugin's CPU and memory have been sampled (every second), its status shows them.
    poll(Duration::from_secs(5), "a first sample of the dice-roller", || {
        plugin_metrics(port, "dice-roller")["memory_mb"].as_f64()
    });
    let one = bot.ask("dave", "!admin status dice-roller", "dice-roller v1.0.0");
    for part in ["RUNNING · pid ", "(limit 50%)", "(limit 32 MB)", "last error: none"] {
        assert!(one.contains(part), "{one}");
    }

    // Reload, reload --all and restart ask first, and each is done well under 5 s once confirmed.
    let confirmed = |bot: &mut Bot, admin: &str, command: &str, prompt: &str, done: &str| {
        let asked = bot.ask(admin, command, "Type yes");
        assert!(asked.starts_with(prompt), "{asked}");
        let yes = Instant::now();
        let outcome = bot.ask(admin, "yes", done);
        assert!(yes.elapsed() < Duration::from_secs(5), "{command}: {:?}", yes.elapsed());
        outcome
    };
    let reloaded = confirmed(
        &mut bot,
        "erin",
        "!admin reload 8ball",
        "Reload 8ball v1.0.0 → v1.0.0?",
        "8ball",
    );
    assert!(reloaded.starts_with("✅ Reloaded 8ball v1.0.0 → v1.0.0 ("), "{reloaded}");
    let all = "Reload all 3 plugins, one at a time (stops at the first failure)?";
    let first = confirmed(&mut bot, "frank", "!admin reload --all", all, "Reloaded");
    assert!(first.starts_with("✅ Reloaded 8ball"), "{first}");
    for plugin in ["dice-roller", "quotes"] {
        let line = bot.answer("Reloaded");
        assert!(line.starts_with(&format!("✅ Reloaded {plugin} v1.0.0 → v1.0.0 (")), "{line}");
    }
    let restarted =
        confirmed(&mut bot, "grace", "!admin restart quotes", "Restart quotes v1.0.0?", "quotes");
    assert!(restarted.starts_with("✅ Restarted quotes v1.0.0 ("), "{restarted}");
    let metrics = bot.ask("heidi", "!admin metrics", "📊");
    assert!(metrics.starts_with("📊 4 plugins (4 running, 0 crashed) · "), "{metrics}");
    assert!(metrics.ends_with(&format!(" · http://127.0.0.1:{port}")), "{metrics}");

    // A stranger is refused.
    let refused = bot.ask("mallory", "!admin list", "❌");
    assert_eq!(refused, "❌ Admin permission required");

    // The audit log has every step, as the dashboard's timeline shows it.
    let expected = [
        ("alice", "help", "", "ok"),
        ("bob", "list", "", "ok"),
        ("carol", "status", "", "ok"),
        ("dave", "status", "dice-roller", "ok"),
        ("erin", "reload", "8ball", "pending"),
        ("erin", "reload", "8ball", "ok"),
        ("frank", "reload", "--all", "pending"),
        ("frank", "reload", "--all", "ok"),
        ("grace", "restart", "quotes", "pending"),
        ("grace", "restart", "quotes", "ok"),
        ("heidi", "metrics", "", "ok"),
        ("mallory", "list", "", "denied"),
    ];
    let rows = poll(Duration::from_secs(10), "every admin command in /api/events", || {
        let events = get_json(port, "/api/events?limit=100");
        let mut rows: Vec<(String, String, String, String)> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["source"] == "admin")
            .map(|e| {
                let field = |key: &str| e[key].as_str().unwrap_or_default().to_owned();
                (field("actor"), field("command"), field("arguments"), field("outcome"))
            })
            .collect();
        rows.reverse(); // oldest first
        (rows.len() >= expected.len()).then_some(rows)
    });
    let rows: Vec<(&str, &str, &str, &str)> =
        rows.iter().map(|(a, c, r, o)| (a.as_str(), c.as_str(), r.as_str(), o.as_str())).collect();
    assert_eq!(rows, expected);
    let metrics = scrape(port);
    for series in [
        r#"rosey_admin_commands_total{command="reload",user="erin"} 1"#,
        r#"rosey_admin_commands_total{command="list",user="(refused)"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }

    // Zero errors or warnings in the log: a refusal is audited at INFO.
    assert_clean(&bot.stop());
}
