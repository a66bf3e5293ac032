//! Text as the page writes it: HTML escaping, ids derived from plugin names, and the human forms of
//! durations, percentages, sizes and times.
//!
//! Every value here is a [`Display`] wrapper, so the renderers can write it straight into the page
//! with `write!` and no intermediate strings.

use std::fmt::{self, Display, Formatter, Write};

/// What the page shows for a value it does not have.
pub(super) const MISSING: &str = "—";

/// Text escaped for HTML: safe in element content and inside double- or single-quoted attributes.
///
/// Plugin names, versions, errors and reasons come from plugins and are treated as hostile.
pub(super) struct Esc<'a>(pub(super) &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            let entity = match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            };
            f.write_str(entity)?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// A plugin name made safe for an `id` (and so for a CSS selector or a URL fragment): ASCII letters,
/// digits and `-` stay, every other byte becomes `_XX` (hex). `_` itself is encoded, so two names never
/// share an id.
pub(super) struct IdPart<'a>(pub(super) &'a str);

impl Display for IdPart<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for byte in self.0.bytes() {
            if byte.is_ascii_alphanumeric() || byte == b'-' {
                f.write_char(char::from(byte))?;
            } else {
                write!(f, "_{byte:02X}")?;
            }
        }
        Ok(())
    }
}

/// At most `max` characters of a text, with `…` when it was cut, so a plugin that reports a
/// megabyte-long error cannot make the page huge.
pub(super) fn clip(text: &str, max: usize) -> (&str, bool) {
    match text.char_indices().nth(max) {
        Some((at, _)) => (&text[..at], true),
        None => (text, false),
    }
}

/// A duration as people read it: `3d 4h`, `4h 12m`, `5m 12s`, `12s` (two units at most).
pub(super) struct Uptime(pub(super) u64);

impl Display for Uptime {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let (days, hours, minutes, seconds) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
        if days > 0 {
            write!(f, "{days}d {hours}h")
        } else if hours > 0 {
            write!(f, "{hours}h {minutes}m")
        } else if minutes > 0 {
            write!(f, "{minutes}m {seconds}s")
        } else {
            write!(f, "{seconds}s")
        }
    }
}

/// The units the page shows numbers in.
#[derive(Debug, Clone, Copy)]
pub(super) enum Unit {
    /// Percent of one core: `12.3 %`.
    Percent,
    /// Mebibytes, written `MB` as the rest of Rosey does: `45.6 MB`.
    Megabytes,
    /// Milliseconds: `12 ms`, or `0.4 ms` below 10.
    Millis,
    /// Events per second: `3.2/s`.
    PerSecond,
}

/// A measured value in its unit, or [`MISSING`] when there is none (or it is not a finite number).
pub(super) struct Measure(pub(super) Option<f64>, pub(super) Unit);

impl Display for Measure {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let Some(v) = self.0.filter(|v| v.is_finite()) else {
            return f.write_str(MISSING);
        };
        match self.1 {
            Unit::Percent => write!(f, "{v:.1} %"),
            Unit::Megabytes => write!(f, "{v:.1} MB"),
            Unit::Millis if v.abs() < 10.0 => write!(f, "{v:.1} ms"),
            Unit::Millis => write!(f, "{v:.0} ms"),
            Unit::PerSecond => write!(f, "{v:.1}/s"),
        }
    }
}

/// A Unix time (seconds) as UTC, split into the parts the page writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UtcTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
}

impl UtcTime {
    /// The UTC time of `unix_seconds`, with fractions dropped; a time before 1970 or not a finite
    /// number is shown as the epoch rather than as garbage.
    pub(super) fn from_unix(unix_seconds: f64) -> Self {
        // `as` saturates for out-of-range floats and maps NaN to 0, which is what we want here.
        let secs = if unix_seconds.is_finite() { unix_seconds.max(0.0) as u64 } else { 0 };
        let (year, month, day) = civil_from_days(secs / 86_400);
        let of_day = secs % 86_400;
        Self {
            year,
            month,
            day,
            hour: of_day / 3_600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
        }
    }

    /// `HH:MM:SS`.
    pub(super) fn clock(self) -> impl Display {
        Clock(self)
    }

    /// RFC 3339, e.g. `2024-05-01T12:34:56Z`, as `<time datetime>` wants it.
    pub(super) fn rfc3339(self) -> impl Display {
        Rfc3339(self)
    }
}

struct Clock(UtcTime);

impl Display for Clock {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}:{:02}", self.0.hour, self.0.minute, self.0.second)
    }
}

struct Rfc3339(UtcTime);

impl Display for Rfc3339 {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(f, "{:04}-{:02}-{:02}T{}Z", t.year, t.month, t.day, t.clock())
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`),
/// so the page needs no date crate for one timestamp format.
fn civil_from_days(days: u64) -> (i64, u32, u32) {
    // Days fit in i64 for any u64 seconds / 86 400.
    let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in small ranges by construction.
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_neutralises_markup_quotes_and_ampersands() {
        let hostile = r#"<script>alert("x")</script> & 'y'"#;
        assert_eq!(
            Esc(hostile).to_string(),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(Esc("plain-name ✓").to_string(), "plain-name ✓");
    }

    #[test]
    fn ids_keep_safe_characters_and_encode_the_rest_without_collisions() {
        assert_eq!(IdPart("dice-roller2").to_string(), "dice-roller2");
        assert_eq!(IdPart("a b\"<").to_string(), "a_20b_22_3C");
        // `_` is encoded too, so "a_20b" (a name with an underscore) cannot collide with "a b".
        assert_eq!(IdPart("a_20b").to_string(), "a_5F20b");
        assert_eq!(IdPart("é").to_string(), "_C3_A9");
    }

    #[test]
    fn uptime_reads_as_two_units_at_most() {
        assert_eq!(Uptime(0).to_string(), "0s");
        assert_eq!(Uptime(59).to_string(), "59s");
        assert_eq!(Uptime(5 * 60 + 12).to_string(), "5m 12s");
        assert_eq!(Uptime(4 * 3600 + 12 * 60 + 7).to_string(), "4h 12m");
        assert_eq!(Uptime(3 * 86_400 + 4 * 3600 + 59).to_string(), "3d 4h");
    }

    #[test]
    fn measures_show_units_and_a_dash_when_missing() {
        assert_eq!(Measure(Some(12.34), Unit::Percent).to_string(), "12.3 %");
        assert_eq!(Measure(Some(45.61), Unit::Megabytes).to_string(), "45.6 MB");
        assert_eq!(Measure(Some(12.4), Unit::Millis).to_string(), "12 ms");
        assert_eq!(Measure(Some(0.42), Unit::Millis).to_string(), "0.4 ms");
        assert_eq!(Measure(Some(3.25), Unit::PerSecond).to_string(), "3.2/s");
        assert_eq!(Measure(None, Unit::Percent).to_string(), "—");
        assert_eq!(Measure(Some(f64::NAN), Unit::Megabytes).to_string(), "—");
    }

    #[test]
    fn clip_cuts_on_characters_and_says_so() {
        assert_eq!(clip("héllo", 10), ("héllo", false));
        assert_eq!(clip("héllo", 2), ("hé", true));
    }

    #[test]
    fn utc_times_are_rfc3339_and_clock_forms() {
        let t = UtcTime::from_unix(1_714_566_896.75); // 2024-05-01T12:34:56.75Z
        assert_eq!(t.rfc3339().to_string(), "2024-05-01T12:34:56Z");
        assert_eq!(t.clock().to_string(), "12:34:56");
        assert_eq!(UtcTime::from_unix(951_782_400.0).rfc3339().to_string(), "2000-02-29T00:00:00Z");
        assert_eq!(UtcTime::from_unix(f64::NAN).rfc3339().to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(UtcTime::from_unix(-5.0).rfc3339().to_string(), "1970-01-01T00:00:00Z");
    }
}
