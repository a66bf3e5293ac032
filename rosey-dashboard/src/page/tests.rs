//! The page as a whole: what a browser (and a screen reader, and the CSP) will meet.

use super::*;
use crate::model::{Card, Header, Light, TimelineEntry};

const HOSTILE: &str = r#"<script>alert("x")</script>&'"#;
const HOSTILE_ESCAPED: &str = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;";

fn header() -> Header {
    Header {
        version: "0.1.0".into(),
        node: "eu-1".into(),
        nodes: Vec::new(),
        uptime_seconds: 3 * 86_400 + 4 * 3_600,
        bus: "nats".into(),
        bus_healthy: true,
        connector: Some("cytube".into()),
        connector_joined: true,
        connector_standby: false,
        channel: Some("movienight".into()),
        users: Some(12),
        total_plugins: 2,
        plugins_running: 1,
        plugins_crashed: 1,
    }
}

/// A card with an hour of wavy samples in every series.
fn card(name: &str) -> Card {
    let wave = |scale: f64| -> Vec<Option<f64>> {
        (0..120).map(|i| Some(scale * (1.0 + (f64::from(i) * 0.37).sin()))).collect()
    };
    Card {
        name: name.into(),
        version: "1.2.3".into(),
        state: "RUNNING".into(),
        pid: Some(4242),
        uptime_seconds: 312,
        cpu_percent: Some(12.34),
        cpu_limit: Some(50.0),
        memory_mb: Some(45.6),
        memory_limit_mb: Some(128.0),
        event_count: 123_456,
        crash_count: 2,
        p95_ms: Some(12.0),
        last_error: Some("handler timed out after 5 s while answering !roll 2d6".into()),
        light: Light::Yellow,
        light_reason: Some("restarted 2 min ago".into()),
        spark_cpu: wave(20.0),
        spark_memory: wave(40.0),
        spark_events: wave(3.0),
    }
}

fn overview(cards: Vec<Card>, actions: bool) -> Overview {
    Overview {
        timestamp: 1_714_566_896.0,
        header: header(),
        cards,
        timeline: vec![
            TimelineEntry {
                time: 1_714_566_800.0,
                plugin: "dice-roller".into(),
                kind: "crashed".into(),
                version: Some("1.2.3".into()),
                reason: Some("exit status 101".into()),
            },
            TimelineEntry {
                time: 1_714_566_000.0,
                plugin: "dice-roller".into(),
                kind: "reload_ok".into(),
                version: Some("1.2.3".into()),
                reason: None,
            },
        ],
        actions,
        refresh_seconds: 5,
    }
}

fn fifty_plugins() -> Overview {
    overview((0..50).map(|i| card(&format!("plugin-number-{i:02}"))).collect(), true)
}

/// The values of every `name="…"` attribute in `html`.
fn attribute_values<'h>(html: &'h str, name: &str) -> Vec<&'h str> {
    tags(html)
        .into_iter()
        .flat_map(|(_, attrs)| attrs)
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v)
        .collect()
}

/// Every start tag of `html` with its attributes, read the way a browser tokenises them (enough for
/// this page: values are double-quoted or bare).
fn tags(html: &str) -> Vec<(String, Vec<(String, &str)>)> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        if !rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
            continue;
        }
        let name_end = rest.find(|c: char| c.is_whitespace() || c == '>' || c == '/').unwrap();
        let name = rest[..name_end].to_ascii_lowercase();
        rest = &rest[name_end..];
        let mut attrs = Vec::new();
        loop {
            rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '/');
            if rest.starts_with('>') || rest.is_empty() {
                break;
            }
            let end = rest.find(|c: char| c.is_whitespace() || c == '=' || c == '>').unwrap();
            let attr = rest[..end].to_ascii_lowercase();
            rest = &rest[end..];
            let mut value = "";
            if let Some(after) = rest.strip_prefix('=') {
                if let Some(quoted) = after.strip_prefix('"') {
                    let close = quoted.find('"').unwrap();
                    value = &quoted[..close];
                    rest = &quoted[close + 1..];
                } else {
                    let end = after.find(|c: char| c.is_whitespace() || c == '>').unwrap();
                    value = &after[..end];
                    rest = &after[end..];
                }
            }
            attrs.push((attr, value));
        }
        found.push((name, attrs));
    }
    found
}

#[test]
fn page_shows_every_card_figure_in_the_documented_forms() {
    let html = page(&overview(vec![card("dice-roller")], false));
    let article = html.split(r#"data-plugin="dice-roller""#).nth(1).unwrap();
    for expected in [
        r#"<dd class="version">1.2.3</dd>"#,
        r#"<dd class="state">RUNNING</dd>"#,
        "<dd>5m 12s</dd>",
        "<dd>12.3 %</dd>",
        "<dd>45.6 MB</dd>",
        "<dd>12 ms</dd>",
        "<dd>123456</dd>",
        r#"<dd class="bad">2</dd>"#,
        "🟡 restarted 2 min ago",
        "Last error: handler timed out",
        r#"aria-label="CPU, last hour: min "#,
        r#"aria-label="Memory, last hour: min "#,
        r#"aria-label="Events per second, last hour: min "#,
    ] {
        assert!(article.contains(expected), "missing {expected:?} in {article}");
    }
    assert!(
        html.contains(r#"<article class="card" id="plugin-dice-roller" data-plugin="dice-roller""#)
    );
    for header_figure in ["3d 4h", "nats · healthy", "cytube · joined", "movienight", "<dd>12</dd>"]
    {
        assert!(html.contains(header_figure), "header lacks {header_figure:?}");
    }
    assert!(html.contains(
        r#"<li class="bad"><time datetime="2024-05-01T12:33:20Z">12:33:20</time> <b>dice-roller</b> crashed 1.2.3: exit status 101</li>"#
    ));
    assert!(html.contains(r#"<time id="updated" datetime="2024-05-01T12:34:56Z">12:34:56</time>"#));
}

#[test]
fn missing_values_read_as_a_dash_and_green_reads_healthy() {
    let mut quiet = card("quiet");
    quiet.cpu_percent = None;
    quiet.memory_mb = None;
    quiet.p95_ms = None;
    quiet.pid = None;
    quiet.last_error = None;
    quiet.light = Light::Green;
    quiet.light_reason = None;
    quiet.spark_cpu.clear();
    let mut h = overview(vec![quiet], false);
    h.header.channel = None;
    h.header.users = None;
    h.header.connector = None;
    let html = page(&h);
    assert_eq!(html.matches("<dd>—</dd>").count(), 4 + 2, "CPU, memory, p95, PID, channel, users");
    assert!(html.contains("🟢 healthy"));
    assert!(!html.contains("Last error"));
    assert!(html.contains("CPU, last hour: no data"));
}

#[test]
fn hostile_plugin_text_is_escaped_in_text_and_attributes() {
    let mut evil = card(HOSTILE);
    evil.version = HOSTILE.into();
    evil.state = HOSTILE.into();
    evil.last_error = Some(HOSTILE.into());
    evil.light = Light::Red;
    evil.light_reason = Some(HOSTILE.into());
    let mut o = overview(vec![evil], true);
    o.timeline[0].plugin = HOSTILE.into();
    o.timeline[0].kind = HOSTILE.into();
    o.timeline[0].version = Some(HOSTILE.into());
    o.timeline[0].reason = Some(HOSTILE.into());
    o.header.version = HOSTILE.into();
    o.header.node = HOSTILE.into();
    o.header.bus = HOSTILE.into();
    o.header.connector = Some(HOSTILE.into());
    o.header.channel = Some(HOSTILE.into());
    let html = page(&o);

    assert!(!html.contains("<script>"), "raw markup leaked");
    assert!(!html.contains("alert(\""), "a raw quote leaked");
    // name ×2 (heading, data-plugin) + 2 buttons, version, state, error, reason, 4 timeline fields,
    // 5 header fields.
    assert_eq!(html.matches(HOSTILE_ESCAPED).count(), 2 + 2 + 4 + 4 + 5, "{html}");
    let plugin_attrs = attribute_values(&html, "data-plugin");
    assert_eq!(plugin_attrs.len(), 3, "the card and its two buttons");
    assert!(plugin_attrs.iter().all(|v| *v == HOSTILE_ESCAPED));
    let id =
        attribute_values(&html, "id").into_iter().find(|id| id.starts_with("plugin-")).unwrap();
    assert!(
        id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "id {id:?} must be safe in a selector"
    );
}

#[test]
fn page_obeys_the_content_security_policy() {
    let mut evil = card("javascript:alert(1)");
    evil.last_error =
        Some(r#"see https://evil.example/x and //cdn.example onload="x" style="y""#.into());
    let html = page(&overview(vec![evil, card("b")], true));
    let tags = tags(&html);
    assert!(tags.len() > 100, "the tag reader sees the page");

    // Every script comes from this server; there are no inline styles or event handlers.
    let scripts: Vec<_> = tags.iter().filter(|(name, _)| name == "script").collect();
    assert_eq!(scripts.len(), 1);
    assert_eq!(
        scripts[0].1,
        vec![("src".to_owned(), "/assets/dashboard.js"), ("defer".to_owned(), "")]
    );
    assert!(!html.contains("<script></script>") && !html.contains("<script>"));
    assert!(tags.iter().all(|(name, _)| name != "style"));
    for (tag, attrs) in &tags {
        for (attr, value) in attrs {
            assert!(attr != "style" && !attr.starts_with("on"), "<{tag} {attr}=…> in the page");
            // Every reference is a path on this server; plugin text never becomes a URL.
            if ["src", "href", "action", "formaction", "xlink:href", "poster"]
                .contains(&attr.as_str())
            {
                assert!(value.starts_with("/assets/"), "<{tag} {attr}={value:?}>");
            }
        }
    }
    assert_eq!(attribute_values(&html, "data-plugin")[0], "javascript:alert(1)", "it is only data");
    // The stylesheet and the script reach nothing outside either.
    for asset in [CSS, JS] {
        assert!(!asset.contains("http://") && !asset.contains("https://"));
        assert!(!asset.contains("url(") && !asset.contains("@import"));
    }
}

#[test]
fn fragments_are_byte_identical_to_the_parts_of_the_page() {
    let o = fifty_plugins();
    let html = page(&o);
    let fragments = fragments(&o);
    assert!(html.contains(&format!(r#"<div id="header">{}</div>"#, fragments.header)));
    assert!(html.contains(&format!(r#"<ol id="timeline">{}</ol>"#, fragments.timeline)));
    assert_eq!(fragments.cards.len(), 50);
    for card in &fragments.cards {
        assert!(card.html.starts_with("<article ") && card.html.ends_with("</article>"));
        assert!(card.html.contains(&format!(r#"data-plugin="{}""#, card.name)));
        assert!(html.contains(&card.html), "{} differs", card.name);
    }
    let json = serde_json::to_value(&fragments).unwrap();
    assert_eq!(json["cards"][0]["name"], "plugin-number-00");
    assert_eq!(json["timestamp"], 1_714_566_896.0);
}

#[test]
fn actions_appear_only_when_a_token_is_configured() {
    let without = page(&overview(vec![card("dice-roller")], false));
    assert!(!without.contains("<button") && !without.contains("Dashboard token"));
    assert!(
        !fragments(&overview(vec![card("dice-roller")], false)).cards[0].html.contains("<button")
    );

    let with = page(&overview(vec![card("dice-roller")], true));
    assert!(with.contains(
        r#"<button type="button" data-action="reload" data-plugin="dice-roller">Reload</button>"#
    ));
    assert!(with.contains(
        r#"<button type="button" data-action="restart" data-plugin="dice-roller">Restart</button>"#
    ));
    assert!(with.contains(r#"<label for="token">Dashboard token</label>"#));
    assert!(with.contains(r#"<input type="password" id="token""#));
    assert!(
        with.contains(
            "<noscript><p>The Reload and Restart buttons need JavaScript.</p></noscript>"
        )
    );
}

#[test]
fn without_javascript_the_page_refreshes_itself() {
    let html = page(&overview(vec![], false));
    let head = html.split("</head>").next().unwrap();
    assert!(head.contains(r#"<noscript><meta http-equiv="refresh" content="5"></noscript>"#));
    assert!(html.contains(r#"<p id="no-plugins">No plugins are loaded.</p>"#));
    assert!(page(&overview(vec![card("a")], false)).contains(r#"<p id="no-plugins" hidden>"#));
}

#[test]
fn page_for_fifty_plugins_with_full_sparklines_stays_small() {
    // Every card has full sparklines, a yellow light with a reason and both buttons; one in five also
    // has a last error.
    let mut o = fifty_plugins();
    for (i, card) in o.cards.iter_mut().enumerate() {
        if i % 5 != 0 {
            card.last_error = None;
        }
    }
    let html = page(&o);
    let assets = CSS.len() + JS.len();
    assert!(assets < 15_000, "CSS + JS are {assets} bytes");
    assert!(html.len() + assets < 100_000, "page {} + CSS and JS {assets} bytes", html.len());
    // Even with an error on every card the page alone stays under 100 KB.
    let worst = page(&fifty_plugins()).len();
    assert!(worst < 100_000, "page with 50 errors is {worst} bytes");
}

#[test]
fn a_huge_error_is_clipped() {
    let mut noisy = card("noisy");
    noisy.last_error = Some("x".repeat(1_000_000));
    let html = page(&overview(vec![noisy], false));
    assert!(html.len() < 20_000);
    assert!(html.contains("xxx…</p>"));
}
