//! The three parts of the page that change: the header's figures, one card per plugin and the
//! timeline. Each is a [`Display`] value; the document and the SSE fragments both write these, so
//! the JavaScript can swap them in place.

use std::fmt::{self, Display, Formatter};

use super::spark::Sparkline;
use super::text::{Esc, IdPart, MISSING, Measure, Unit, Uptime, UtcTime, clip};
use crate::model::{Card, Header, Light, TimelineEntry};

/// Characters of `last_error` and of a timeline reason that the page shows.
const MAX_MESSAGE: usize = 240;

/// The figures in `<div id="header">`: node, version, uptime, bus, connector, channel, users,
/// plugins.
pub(super) struct HeaderFigures<'a>(pub(super) &'a Header);

impl Display for HeaderFigures<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let h = self.0;
        f.write_str(r#"<dl class="figures">"#)?;
        figure(f, "Node", "", Esc(&h.node))?;
        if h.nodes.len() > 1 {
            figure(f, "Nodes", "", Esc(&h.nodes.join(" · ")))?;
        }
        figure(f, "Version", "", Esc(&h.version))?;
        figure(f, "Uptime", "", Uptime(h.uptime_seconds))?;
        let bus = if h.bus_healthy { "healthy" } else { "down" };
        figure(f, "Bus", ok_class(h.bus_healthy), format_args!("{} · {bus}", Esc(&h.bus)))?;
        match &h.connector {
            Some(name) => {
                let joined = match (h.connector_joined, h.connector_standby) {
                    (true, _) => "joined",
                    (false, true) => "standby",
                    (false, false) => "not joined",
                };
                let class = ok_class(h.connector_joined || h.connector_standby);
                figure(f, "Connector", class, format_args!("{} · {joined}", Esc(name)))?;
            }
            None => figure(f, "Connector", "", "none")?,
        }
        figure(f, "Channel", "", Esc(h.channel.as_deref().unwrap_or(MISSING)))?;
        match h.users {
            Some(users) => figure(f, "Users", "", users)?,
            None => figure(f, "Users", "", MISSING)?,
        }
        let crashed_class = if h.plugins_crashed > 0 { "bad" } else { "" };
        figure(
            f,
            "Plugins",
            crashed_class,
            format_args!(
                "{} loaded · {} running · {} crashed",
                h.total_plugins, h.plugins_running, h.plugins_crashed
            ),
        )?;
        f.write_str("</dl>")
    }
}

/// A plugin's whole `<article class="card">`, the unit the JavaScript replaces.
pub(super) struct CardView<'a> {
    pub(super) card: &'a Card,
    /// Whether to show the Reload and Restart buttons.
    pub(super) actions: bool,
}

impl Display for CardView<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let c = self.card;
        let name = Esc(&c.name);
        let (light, emoji, fallback) = match c.light {
            Light::Green => ("green", "🟢", "healthy"),
            Light::Yellow => ("yellow", "🟡", "warning"),
            Light::Red => ("red", "🔴", "unhealthy"),
        };
        // Green always reads "healthy": a reason only explains why a light is not green.
        let reason = match c.light {
            Light::Green => fallback,
            Light::Yellow | Light::Red => c.light_reason.as_deref().unwrap_or(fallback),
        };
        write!(
            f,
            r#"<article class="card" id="plugin-{}" data-plugin="{name}" data-light="{light}"><h3>{name}</h3><p class="light">{emoji} {}</p><dl>"#,
            IdPart(&c.name),
            Esc(reason),
        )?;
        fact(f, "Version", "version", Esc(&c.version))?;
        fact(f, "State", "state", Esc(&c.state))?;
        fact(f, "Uptime", "", Uptime(c.uptime_seconds))?;
        fact(f, "CPU", "", Measure(c.cpu_percent, Unit::Percent))?;
        fact(f, "Memory", "", Measure(c.memory_mb, Unit::Megabytes))?;
        fact(f, "p95", "", Measure(c.p95_ms, Unit::Millis))?;
        fact(f, "Events", "", c.event_count)?;
        fact(f, "Crashes", if c.crash_count > 0 { "bad" } else { "" }, c.crash_count)?;
        match c.pid {
            Some(pid) => fact(f, "PID", "", pid)?,
            None => fact(f, "PID", "", MISSING)?,
        }
        f.write_str("</dl>")?;
        if let Some(error) = &c.last_error {
            let (shown, cut) = clip(error, MAX_MESSAGE);
            write!(f, r#"<p class="error">Last error: {}{}</p>"#, Esc(shown), ellipsis(cut))?;
        }
        f.write_str(r#"<dl class="sparks">"#)?;
        for (caption, label, unit, values) in [
            ("CPU", "CPU", Unit::Percent, &c.spark_cpu),
            ("Memory", "Memory", Unit::Megabytes, &c.spark_memory),
            ("Events/s", "Events per second", Unit::PerSecond, &c.spark_events),
        ] {
            write!(f, "<dt>{caption}</dt><dd>{}</dd>", Sparkline { label, unit, values })?;
        }
        f.write_str("</dl>")?;
        if self.actions {
            f.write_str(r#"<p class="actions">"#)?;
            for (action, label) in [("reload", "Reload"), ("restart", "Restart")] {
                write!(
                    f,
                    r#"<button type="button" data-action="{action}" data-plugin="{name}">{label}</button>"#
                )?;
            }
            f.write_str("</p>")?;
        }
        f.write_str("</article>")
    }
}

/// The `<li>` items of `<ol id="timeline">`, newest first as the model orders them.
pub(super) struct TimelineItems<'a>(pub(super) &'a [TimelineEntry]);

impl Display for TimelineItems<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(r#"<li class="quiet">No crashes or reloads.</li>"#);
        }
        for entry in self.0 {
            let (class, what) = kind(&entry.kind);
            let time = UtcTime::from_unix(entry.time);
            write!(
                f,
                r#"<li class="{class}"><time datetime="{}">{}</time> <b>{}</b> {}"#,
                time.rfc3339(),
                time.clock(),
                Esc(&entry.plugin),
                Esc(&what),
            )?;
            if let Some(version) = &entry.version {
                write!(f, " {}", Esc(version))?;
            }
            if let Some(reason) = &entry.reason {
                let (shown, cut) = clip(reason, MAX_MESSAGE);
                write!(f, ": {}{}", Esc(shown), ellipsis(cut))?;
            }
            f.write_str("</li>")?;
        }
        Ok(())
    }
}

/// The CSS class (`bad`, `warn`, `ok`) and the words for a timeline kind; an unknown kind is shown
/// as it is, with its underscores as spaces.
fn kind(kind: &str) -> (&'static str, String) {
    let (class, words) = match kind {
        "crashed" => ("bad", "crashed"),
        "failed" => ("bad", "failed"),
        "reload_failed" => ("bad", "reload failed"),
        "restarted" => ("warn", "restarted"),
        "stopped" => ("warn", "stopped"),
        "started" => ("ok", "started"),
        "reload_ok" => ("ok", "reloaded"),
        other => return ("", other.replace('_', " ")),
    };
    (class, words.to_owned())
}

/// One figure of the header, wrapped so the figures can wrap as units on a narrow screen.
fn figure(f: &mut Formatter<'_>, term: &str, class: &str, value: impl Display) -> fmt::Result {
    f.write_str("<div>")?;
    fact(f, term, class, value)?;
    f.write_str("</div>")
}

/// One `<dt>…</dt><dd class="…">…</dd>` of a figure list.
fn fact(f: &mut Formatter<'_>, term: &str, class: &str, value: impl Display) -> fmt::Result {
    if class.is_empty() {
        write!(f, "<dt>{term}</dt><dd>{value}</dd>")
    } else {
        write!(f, r#"<dt>{term}</dt><dd class="{class}">{value}</dd>"#)
    }
}

fn ok_class(ok: bool) -> &'static str {
    if ok { "" } else { "bad" }
}

fn ellipsis(cut: bool) -> &'static str {
    if cut { "…" } else { "" }
}
