//! Chat text: lines that fit CyTube's limit, durations, counts and versions as people read them.

use std::time::Duration;

/// The longest chat line CyTube accepts: 320, counted as JavaScript counts string length (UTF-16
/// code units, so an emoji counts two).
pub(crate) const MAX_LINE: usize = 320;

/// The length of `text` as CyTube counts it.
pub(crate) fn width(text: &str) -> usize {
    text.encode_utf16().count()
}

/// `text` cut to at most `max` (as [`width`] counts), ending in `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        if used + c.len_utf16() + 1 > max {
            break;
        }
        used += c.len_utf16();
        out.push(c);
    }
    out.push('…');
    out
}

/// `head` followed by `items` joined with `sep`, broken into lines of at most [`MAX_LINE`]; an item
/// never spans two lines (one too long for a line is cut, as is a first item too long to follow the
/// head).
pub(crate) fn pack(head: &str, items: &[String], sep: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for (i, item) in items.iter().enumerate() {
        if i == 0 {
            line = truncate(&format!("{head}{item}"), MAX_LINE);
        } else if width(&line) + width(sep) + width(item) <= MAX_LINE {
            line.push_str(sep);
            line.push_str(item);
        } else {
            lines.push(std::mem::replace(&mut line, truncate(item, MAX_LINE)));
        }
    }
    if items.is_empty() {
        line = truncate(head, MAX_LINE);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// A duration in its two largest units: `3d 4h`, `2h 3m`, `5m 10s`, `12s`.
pub(crate) fn span(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// How long an operation took, to a tenth of a second: `0.2s`.
pub(crate) fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

/// Whole seconds to wait, rounded up so that waiting that long is always enough: `4s`.
pub(crate) fn wait(duration: Duration) -> String {
    let whole = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    format!("{}s", whole.max(1))
}

/// A count with thousands separators: `1,234`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A version as shown in chat: `v1.0` (a version already starting with `v` is kept as is).
pub(crate) fn version(version: &str) -> String {
    if version.starts_with(['v', 'V']) || version.is_empty() {
        version.to_owned()
    } else {
        format!("v{version}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_keeps_items_whole_and_lines_under_the_limit() {
        let items: Vec<String> = (0..60).map(|i| format!("plugin-{i:02} v1.0.0 RUNNING")).collect();
        let lines = pack("Plugins (60): ", &items, " · ");
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|l| width(l) <= MAX_LINE), "{lines:?}");
        assert!(lines[0].starts_with("Plugins (60): plugin-00 v1.0.0 RUNNING · plugin-01"));
        let rejoined = lines.join(" · ");
        assert_eq!(rejoined, format!("Plugins (60): {}", items.join(" · ")));
    }

    #[test]
    fn an_item_too_long_for_a_line_is_cut_with_an_ellipsis() {
        let long = "é".repeat(400);
        let lines = pack("x: ", &[long.clone(), long, "next".to_owned()], " · ");
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("x: éé"));
        assert!(lines.iter().take(2).all(|l| width(l) == MAX_LINE && l.ends_with('…')));
        assert_eq!(lines[2], "next");
        assert_eq!(width(&truncate(&"🎲".repeat(200), 9)), 9, "an emoji counts two");
    }

    #[test]
    fn durations_counts_and_versions_read_naturally() {
        assert_eq!(span(Duration::from_secs(7380)), "2h 3m");
        assert_eq!(span(Duration::from_secs(3 * 86_400 + 4 * 3600 + 5)), "3d 4h");
        assert_eq!(span(Duration::from_secs(310)), "5m 10s");
        assert_eq!(span(Duration::from_millis(12_900)), "12s");
        assert_eq!(seconds(Duration::from_millis(210)), "0.2s");
        assert_eq!(wait(Duration::from_millis(3100)), "4s");
        assert_eq!(wait(Duration::from_secs(5)), "5s");
        assert_eq!(wait(Duration::ZERO), "1s");
        assert_eq!(thousands(1234), "1,234");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(version("1.0"), "v1.0");
        assert_eq!(version("v2"), "v2");
    }
}
