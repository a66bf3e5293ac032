//! What the admin commands say: plugin lists and statuses, the metrics line, prompts and reports.

use std::time::Duration;

use rosey_core::metrics::ReloadOutcome;
use rosey_core::plugin::{ControlError, PluginState, PluginStatus, ReloadReport};

use crate::text::{self, pack, seconds, span, thousands, truncate, version};

/// The refusal for anyone who may not use admin commands.
pub(crate) const DENIED: &str = "❌ Admin permission required";
/// The answer to a `yes` that came after the request expired.
pub(crate) const EXPIRED: &str = "⌛ That request expired; ask again";
/// The refusal to reload the admin plugin.
pub(crate) const SELF_RELOAD: &str =
    "❌ The admin plugin can't reload itself; restart the bot instead";
/// The refusal to restart the admin plugin.
pub(crate) const SELF_RESTART: &str =
    "❌ The admin plugin can't restart itself; restart the bot instead";

/// How long a last error may be in a one-line summary.
const SHORT_ERROR: usize = 80;

/// `⏳ Slow down: try again in 4s`.
pub(crate) fn slow_down(wait: Duration) -> String {
    format!("⏳ Slow down: try again in {}", text::wait(wait))
}

/// The plugin called `name`: exactly, or else the only one whose name differs in case only.
pub(crate) fn resolve<'a>(plugins: &'a [PluginStatus], name: &str) -> Option<&'a PluginStatus> {
    if let Some(exact) = plugins.iter().find(|p| p.name == name) {
        return Some(exact);
    }
    let mut alike = plugins.iter().filter(|p| p.name.eq_ignore_ascii_case(name));
    let first = alike.next()?;
    alike.next().is_none().then_some(first)
}

/// `❌ Unknown plugin "x"; !admin list shows them`.
pub(crate) fn unknown_plugin(name: &str, prefix: &str) -> String {
    format!("❌ Unknown plugin {:?}; {prefix}admin list shows them", truncate(name, 40))
}

/// `Plugins (3): dice-roller v1.0 RUNNING · 8ball v1.0 RUNNING · …`, in lines that fit.
pub(crate) fn list(plugins: &[PluginStatus]) -> Vec<String> {
    if plugins.is_empty() {
        return vec!["No plugins loaded".to_owned()];
    }
    let items: Vec<String> =
        plugins.iter().map(|p| format!("{} {} {}", p.name, version(&p.version), p.state)).collect();
    pack(&format!("Plugins ({}): ", plugins.len()), &items, " · ")
}

/// One summary per plugin: state, uptime, events, crashes and (when not running) the last error.
pub(crate) fn status_all(plugins: &[PluginStatus]) -> Vec<String> {
    if plugins.is_empty() {
        return vec!["No plugins loaded".to_owned()];
    }
    let items: Vec<String> = plugins
        .iter()
        .map(|p| {
            let mut item = format!("{} {}", p.name, p.state);
            if p.state == PluginState::Running {
                item.push_str(&format!(" up {}", span(p.uptime)));
            }
            item.push_str(&format!(
                ", {} events, {} crashes",
                thousands(p.events.received),
                p.crash_count
            ));
            if p.state != PluginState::Running
                && let Some(error) = &p.last_error
            {
                item.push_str(&format!(", last error: {}", truncate(error, SHORT_ERROR)));
            }
            item
        })
        .collect();
    pack(&format!("Status ({}): ", plugins.len()), &items, " · ")
}

/// Everything about one plugin: state, version, pid, uptime, CPU, memory, events, crashes, last
/// error.
pub(crate) fn status_one(p: &PluginStatus) -> Vec<String> {
    let mut items = vec![format!("{} {} {}", p.name, version(&p.version), p.state)];
    match p.pid {
        Some(pid) => items.push(format!("pid {pid}")),
        None if p.state == PluginState::Running => items.push("in-process".to_owned()),
        None => {}
    }
    if p.state == PluginState::Running {
        items.push(format!("up {}", span(p.uptime)));
    }
    if let Some(cpu) = p.cpu_percent {
        items.push(match p.cpu_limit_percent {
            Some(limit) => format!("CPU {cpu:.1}% (limit {limit:.0}%)"),
            None => format!("CPU {cpu:.1}%"),
        });
    }
    if let Some(memory) = p.memory_mb {
        items.push(match p.memory_limit_mb {
            Some(limit) => format!("mem {memory:.1} MB (limit {limit:.0} MB)"),
            None => format!("mem {memory:.1} MB"),
        });
    }
    let events = &p.events;
    let mut counts = format!("{} events", thousands(events.received));
    if events.failed > 0 {
        counts.push_str(&format!(" ({} failed)", thousands(events.failed)));
    }
    items.push(counts);
    items.push(format!("{} crashes, {} restarts", p.crash_count, p.restart_count));
    items.push(format!("last error: {}", p.last_error.as_deref().unwrap_or("none")));
    pack("", &items, " · ")
}

/// `📊 3 plugins (3 running, 0 crashed) · 1,234 events · up 2h 3m · http://127.0.0.1:8080`.
pub(crate) fn metrics(plugins: &[PluginStatus], uptime: Duration, dashboard_url: &str) -> String {
    let running = plugins.iter().filter(|p| p.state == PluginState::Running).count();
    let crashed = plugins
        .iter()
        .filter(|p| matches!(p.state, PluginState::Crashed | PluginState::Failed))
        .count();
    let events: u64 = plugins.iter().map(|p| p.events.received).sum();
    let noun = if plugins.len() == 1 { "plugin" } else { "plugins" };
    let url = if dashboard_url.is_empty() { "dashboard off" } else { dashboard_url };
    truncate(
        &format!(
            "📊 {} {noun} ({running} running, {crashed} crashed) · {} events · up {} · {url}",
            plugins.len(),
            thousands(events),
            span(uptime),
        ),
        text::MAX_LINE,
    )
}

/// `Reload dice-roller v1.0 → v1.1? Type yes to confirm (30s timeout)`; without the arrow when the
/// version on disk cannot be told.
pub(crate) fn reload_prompt(name: &str, from: &str, to: Option<&str>, timeout: Duration) -> String {
    let versions = match to {
        Some(to) => format!("{} → {}", version(from), version(to)),
        None => version(from),
    };
    truncate(&format!("Reload {name} {versions}?{}", confirm_tail(timeout)), text::MAX_LINE)
}

/// `Restart dice-roller v1.0? Type yes to confirm (30s timeout)`.
pub(crate) fn restart_prompt(name: &str, from: &str, timeout: Duration) -> String {
    format!("Restart {name} {}?{}", version(from), confirm_tail(timeout))
}

/// `Reload all 3 plugins, one at a time (stops at the first failure)? Type yes …`.
pub(crate) fn reload_all_prompt(count: usize, timeout: Duration) -> String {
    let noun = if count == 1 { "plugin" } else { "plugins" };
    format!(
        "Reload all {count} {noun}, one at a time (stops at the first failure)?{}",
        confirm_tail(timeout)
    )
}

fn confirm_tail(timeout: Duration) -> String {
    format!(" Type yes to confirm ({}s timeout)", timeout.as_secs())
}

/// The answer to a confirmed reload, and whether it succeeded: `✅ Reloaded dice-roller v1.0 → v1.1
/// (0.2s)` or `❌ Reload failed: <step>: <reason>`.
pub(crate) fn reload_result(result: &Result<ReloadReport, ControlError>) -> (bool, String) {
    let (ok, line) = match result {
        Ok(report) if report.outcome == ReloadOutcome::Success => (true, reloaded(report)),
        Ok(report) => (false, format!("❌ Reload failed: {}", report_reason(report))),
        Err(ControlError::ReloadFailed(failure)) => {
            (false, format!("❌ Reload failed: {}: {}", failure.step, failure.reason))
        }
        Err(error) => (false, format!("❌ Reload failed: {error}")),
    };
    (ok, truncate(&line, text::MAX_LINE))
}

/// The line of one plugin in a rolling reload: `✅ Reloaded a v1.0 → v1.1 (0.2s)` or
/// `❌ Reload of b v1.0 → v1.1 failed: <step>: <reason>`.
pub(crate) fn rolling_result(
    name: &str,
    result: &Result<ReloadReport, ControlError>,
) -> (bool, String) {
    let (ok, line) = match result {
        Ok(report) if report.outcome == ReloadOutcome::Success => (true, reloaded(report)),
        Ok(report) => {
            (false, format!("❌ Reload of {} failed: {}", versions(report), report_reason(report)))
        }
        Err(ControlError::ReloadFailed(failure)) => (
            false,
            format!(
                "❌ Reload of {} {} → {} failed: {}: {}",
                failure.name,
                version(&failure.from_version),
                version(&failure.to_version),
                failure.step,
                failure.reason
            ),
        ),
        Err(error) => (false, format!("❌ Reload of {name} failed: {error}")),
    };
    (ok, truncate(&line, text::MAX_LINE))
}

/// The end of a rolling reload that stopped early: which plugins were left as they were.
pub(crate) fn rolling_stopped(at: &str, left: &[String]) -> String {
    if left.is_empty() {
        return format!("Stopped at {at}");
    }
    truncate(&format!("Stopped at {at}; not reloaded: {}", left.join(", ")), text::MAX_LINE)
}

/// The answer to a confirmed restart, and whether it succeeded: `✅ Restarted dice-roller v1.0
/// (1.2s)` or `❌ Restart failed: <step>: <reason>`.
pub(crate) fn restart_result(
    name: &str,
    result: &Result<PluginStatus, ControlError>,
    took: Duration,
) -> (bool, String) {
    let (ok, line) = match result {
        Ok(status) => {
            (true, format!("✅ Restarted {name} {} ({})", version(&status.version), seconds(took)))
        }
        Err(ControlError::StartFailed(failure)) => {
            (false, format!("❌ Restart failed: {}: {}", failure.step, failure.reason))
        }
        Err(error) => (false, format!("❌ Restart failed: {error}")),
    };
    (ok, truncate(&line, text::MAX_LINE))
}

fn reloaded(report: &ReloadReport) -> String {
    format!("✅ Reloaded {} ({})", versions(report), seconds(report.duration))
}

fn versions(report: &ReloadReport) -> String {
    format!("{} {} → {}", report.name, version(&report.from_version), version(&report.to_version))
}

fn report_reason(report: &ReloadReport) -> String {
    let reason = report.reason.as_deref().unwrap_or("rolled back");
    match report.failed_step {
        Some(step) => format!("{step}: {reason}"),
        None => reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use rosey_core::plugin::{EventCounts, LatencySummary, ReloadFailure, StartStep};

    use super::*;

    fn status(name: &str, state: PluginState) -> PluginStatus {
        PluginStatus {
            name: name.to_owned(),
            version: "1.0".to_owned(),
            state,
            pid: Some(4242),
            loaded_at: None,
            uptime: Duration::from_secs(7380),
            crash_count: 0,
            restart_count: 0,
            cpu_percent: Some(0.4),
            memory_mb: Some(3.2),
            memory_cap: None,
            memory_limit_mb: Some(64.0),
            cpu_limit_percent: None,
            events: EventCounts { received: 1234, failed: 1, ..EventCounts::default() },
            latency: LatencySummary::default(),
            last_error: None,
        }
    }

    #[test]
    fn texts_read_as_the_design_says() {
        let plugins =
            [status("dice-roller", PluginState::Running), status("8ball", PluginState::Running)];
        assert_eq!(list(&plugins), ["Plugins (2): dice-roller v1.0 RUNNING · 8ball v1.0 RUNNING"]);
        assert_eq!(
            status_one(&plugins[0]),
            [
                "dice-roller v1.0 RUNNING · pid 4242 · up 2h 3m · CPU 0.4% · mem 3.2 MB (limit 64 MB) \
              · 1,234 events (1 failed) · 0 crashes, 0 restarts · last error: none"
            ]
        );
        assert_eq!(
            metrics(&plugins, Duration::from_secs(7380), "http://127.0.0.1:8080"),
            "📊 2 plugins (2 running, 0 crashed) · 2,468 events · up 2h 3m · http://127.0.0.1:8080"
        );
        assert_eq!(
            reload_prompt("dice-roller", "1.0", Some("1.1"), Duration::from_secs(30)),
            "Reload dice-roller v1.0 → v1.1? Type yes to confirm (30s timeout)"
        );
        let report = ReloadReport {
            name: "dice-roller".to_owned(),
            from_version: "1.0".to_owned(),
            to_version: "1.1".to_owned(),
            duration: Duration::from_millis(210),
            outcome: ReloadOutcome::Success,
            failed_step: None,
            reason: None,
        };
        assert_eq!(reload_result(&Ok(report)).1, "✅ Reloaded dice-roller v1.0 → v1.1 (0.2s)");
        let failure = ReloadFailure {
            name: "dice-roller".to_owned(),
            from_version: "1.0".to_owned(),
            to_version: "1.1".to_owned(),
            step: StartStep::Pong,
            reason: "no pong within 5s".to_owned(),
            duration: Duration::from_secs(5),
        };
        assert_eq!(
            reload_result(&Err(ControlError::ReloadFailed(failure))),
            (false, "❌ Reload failed: pong: no pong within 5s".to_owned())
        );
    }

    #[test]
    fn long_statuses_fit_in_chat_lines() {
        let mut broken = status("quotes", PluginState::Failed);
        broken.last_error = Some("x".repeat(1000));
        let plugins: Vec<PluginStatus> = (0..40)
            .map(|i| status(&format!("plugin-{i}"), PluginState::Running))
            .chain([broken.clone()])
            .collect();
        for lines in [list(&plugins), status_all(&plugins), status_one(&broken)] {
            assert!(lines.len() > 1 || lines[0].len() < 320);
            assert!(lines.iter().all(|l| text::width(l) <= text::MAX_LINE), "{lines:?}");
        }
    }

    #[test]
    fn names_resolve_exactly_or_by_a_unique_case_insensitive_match() {
        let plugins = [status("Dice", PluginState::Running), status("dice", PluginState::Running)];
        assert_eq!(resolve(&plugins, "dice").map(|p| p.name.as_str()), Some("dice"));
        assert_eq!(resolve(&plugins, "DICE"), None, "ambiguous");
        let plugins = [status("8ball", PluginState::Running)];
        assert_eq!(resolve(&plugins, "8BALL").map(|p| p.name.as_str()), Some("8ball"));
    }
}
