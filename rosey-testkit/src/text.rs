//! Text processing as CyTube does it: name validation, chat truncation, commands,
//! HTML escaping, CyTube's default chat filters and link conversion, and CyTube's chat flood
//! limiter.

use std::time::Instant;

/// `max-chat-message-length` (the default, as recorded).
pub(crate) const MAX_CHAT_LEN: usize = 320;

fn word_or_dash(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// `^[\w-]{1,30}$`
pub(crate) fn valid_channel_name(name: &str) -> bool {
    (1..=30).contains(&name.chars().count()) && name.chars().all(word_or_dash)
}

/// `^[\w-]{1,20}$`
pub(crate) fn valid_user_name(name: &str) -> bool {
    (1..=20).contains(&name.chars().count()) && name.chars().all(word_or_dash)
}

/// The default `reserved-names` rules: `admin`, `administrator` or `owner` as a
/// `_`/`-`-separated part of the name, in any case.
pub(crate) fn is_reserved(name: &str) -> bool {
    name.split(['_', '-']).any(|part| {
        ["admin", "administrator", "owner"].iter().any(|r| part.eq_ignore_ascii_case(r))
    })
}

/// Escapes `&`, `<` and `>` (quotes are left alone, as recorded).
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// What CyTube puts in the place of each link while its filters run (`LINK_PLACEHOLDER`).
const LINK_PLACEHOLDER: char = '\u{eeee}';

/// Escaped text as CyTube broadcasts it (its `filterMessage`): every `https?://\S+` is set aside,
/// the default chat filters run on the rest when the channel has them (`filters`: registered
/// channels do, unregistered ones have none), then each link comes back as the anchor CyTube writes
/// (the default filters leave links alone).
pub(crate) fn render(escaped: &str, filters: bool) -> String {
    let mut links = Vec::new();
    let mut intermediate = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some((start, scheme_len)) = find_url(rest) {
        let after = &rest[start + scheme_len..];
        let end = start + scheme_len + after.find(char::is_whitespace).unwrap_or(after.len());
        // A placeholder typed by the user would take a link's place, as on CyTube; harmless here.
        intermediate.push_str(&rest[..start]);
        intermediate.push(LINK_PLACEHOLDER);
        links.push(&rest[start..end]);
        rest = &rest[end..];
    }
    intermediate.push_str(rest);
    let filtered = if filters { default_filters(&intermediate) } else { intermediate };
    let mut links = links.into_iter();
    let mut out = String::with_capacity(filtered.len());
    for c in filtered.chars() {
        if c == LINK_PLACEHOLDER {
            if let Some(url) = links.next() {
                out.push_str(&format!(
                    r#"<a href="{url}" target="_blank" rel="noopener noreferrer">{url}</a>"#
                ));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// CyTube's default chat filters (its `filters.js`), in their order: `` `x` `` → `<code>`, `*x*` →
/// `<strong>`, `_x_` → `<em>`, `~~x~~` → `<s>`, `[sp]x[/sp]` (any case, may be empty) →
/// `<span class="spoiler">`. Each is a global, non-greedy regex replacement on the escaped text.
pub(crate) fn default_filters(text: &str) -> String {
    let text = replace_pairs(text, "`", "`", false, false, "<code>", "</code>");
    let text = replace_pairs(&text, "*", "*", false, false, "<strong>", "</strong>");
    let text = replace_pairs(&text, "_", "_", false, false, "<em>", "</em>");
    let text = replace_pairs(&text, "~~", "~~", false, false, "<s>", "</s>");
    replace_pairs(&text, "[sp]", "[/sp]", true, true, r#"<span class="spoiler">"#, "</span>")
}

/// `text` with every `open(.+?)close` (`.*?` when `empty_ok`; ASCII case-insensitive delimiters
/// when `fold_case`) replaced by `before$1after`, left to right, as a JavaScript `/g` regex does.
fn replace_pairs(
    text: &str,
    open: &str,
    close: &str,
    empty_ok: bool,
    fold_case: bool,
    before: &str,
    after: &str,
) -> String {
    let starts_with = |s: &str, p: &str| {
        s.len() >= p.len()
            && s.is_char_boundary(p.len())
            && if fold_case { s[..p.len()].eq_ignore_ascii_case(p) } else { s.starts_with(p) }
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if starts_with(rest, open) {
            let inner = &rest[open.len()..];
            // The content: at least one character (`.+?`) unless `empty_ok`; `.` stops at a newline.
            let first = if empty_ok { 0 } else { inner.chars().next().map_or(0, char::len_utf8) };
            if empty_ok || first > 0 {
                let line = &inner[..inner.find('\n').unwrap_or(inner.len())];
                let found = (first..=line.len())
                    .filter(|&j| line.is_char_boundary(j))
                    .find(|&j| starts_with(&line[j..], close));
                if let Some(j) = found.filter(|&j| j >= first) {
                    out.push_str(before);
                    out.push_str(&inner[..j]);
                    out.push_str(after);
                    i += open.len() + j + close.len();
                    continue;
                }
            }
        }
        let c = rest.chars().next().map_or(1, char::len_utf8);
        out.push_str(&rest[..c]);
        i += c;
    }
    out
}

/// Start and scheme length of the first `http://` / `https://` followed by a non-space.
fn find_url(s: &str) -> Option<(usize, usize)> {
    let lower = s.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find("http") {
        let at = from + pos;
        for scheme in ["https://", "http://"] {
            if lower[at..].starts_with(scheme)
                && lower[at + scheme.len()..].chars().next().is_some_and(|c| !c.is_whitespace())
            {
                return Some((at, scheme.len()));
            }
        }
        from = at + 4;
    }
    None
}

/// Keeps the first `MAX_CHAT_LEN` characters and turns runs of ASCII control
/// characters into one space (`allow_ascii_control` is off by default).
pub(crate) fn clean_input(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_CHAT_LEN * 4));
    let mut in_ctrl = false;
    for c in raw.chars().take(MAX_CHAT_LEN) {
        if (c as u32) < 0x20 {
            if !in_ctrl {
                out.push(' ');
            }
            in_ctrl = true;
        } else {
            in_ctrl = false;
            out.push(c);
        }
    }
    out
}

/// What a chat line turns into.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ChatAction {
    /// Broadcast this (escaped) message with this meta JSON object.
    Say { msg: String, meta: String },
    /// `/afk`: toggle the sender's AFK flag, nothing is broadcast.
    ToggleAfk,
}

/// Whether CyTube passes a chat line through its flood limiter twice: `/me` and `/sp` are commands
/// that send their text as a new chat message.
pub(crate) fn counts_twice(msg: &str) -> bool {
    let command = msg.strip_prefix('/').map(|rest| rest.split(' ').next().unwrap_or(rest));
    matches!(command, Some("me" | "sp"))
}

/// Processes a cleaned chat line: `/me`, `/sp`, `/afk`, greentext, escaping, filters (in a
/// channel with `filters`), links.
pub(crate) fn process_chat(msg: &str, filters: bool) -> ChatAction {
    let mut meta: Vec<(&str, &str)> = Vec::new();
    let mut text = msg;
    if let Some(cmd_line) = msg.strip_prefix('/') {
        let (cmd, args) = cmd_line.split_once(' ').unwrap_or((cmd_line, ""));
        match cmd {
            "me" => {
                meta.push(("addClass", r#""action""#));
                meta.push(("action", "true"));
                text = args;
            }
            "sp" => {
                meta.push(("addClass", r#""spoiler""#));
                text = args;
            }
            "afk" => return ChatAction::ToggleAfk,
            _ => {}
        }
    }
    if text.starts_with('>') {
        match meta.iter_mut().find(|(k, _)| *k == "addClass") {
            Some(entry) => entry.1 = r#""greentext""#,
            None => meta.push(("addClass", r#""greentext""#)),
        }
    }
    let meta = format!(
        "{{{}}}",
        meta.iter().map(|(k, v)| format!(r#""{k}":{v}"#)).collect::<Vec<_>>().join(",")
    );
    ChatAction::Say { msg: render(&escape(text), filters), meta }
}

/// A PM's text: cleaned, escaped, filtered (in a channel with `filters`) and linkified, no
/// commands.
pub(crate) fn process_pm(raw: &str, filters: bool) -> String {
    render(&escape(&clean_input(raw)), filters)
}

/// One set of flood parameters, as CyTube passes them to its limiter: `burst` messages,
/// then `sustained` a second, reset after `cooldown` seconds of quiet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct FloodParams {
    /// Messages accepted at once.
    pub(crate) burst: u32,
    /// Messages a second after the burst.
    pub(crate) sustained: f64,
    /// Quiet seconds after which the burst is available again; `None` means CyTube's
    /// default, `burst / sustained`.
    pub(crate) cooldown: Option<f64>,
}

impl FloodParams {
    /// CyTube's limit for every user (`MIN_ANTIFLOOD`): 20 at once, then 10 a second.
    pub(crate) const PER_USER: Self = Self { burst: 20, sustained: 10.0, cooldown: None };

    /// The `cooldown` answer to a dropped message, in ms: `1000 / sustained`.
    pub(crate) fn cooldown_ms(&self) -> f64 {
        1000.0 / self.sustained
    }
}

/// CyTube's per-user flood limiter (`newRateLimiter`): a message is accepted when more than
/// `cooldown` seconds passed since the last accepted one (the count starts again at 1),
/// or while fewer than `burst` were counted, or when at least `1000 / sustained` ms passed
/// since the last accepted one. A dropped message changes nothing.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    count: u32,
    /// When the last message was accepted; `None` until the first (CyTube's time 0).
    last: Option<Instant>,
}

impl RateLimiter {
    /// True when the message must be dropped.
    pub(crate) fn throttle(&mut self, params: FloodParams) -> bool {
        self.throttle_at(Instant::now(), params)
    }

    /// [`RateLimiter::throttle`] for a message arriving at `now`.
    pub(crate) fn throttle_at(&mut self, now: Instant, params: FloodParams) -> bool {
        let FloodParams { burst, sustained, cooldown } = params;
        let cooldown = cooldown.unwrap_or(f64::from(burst) / sustained);
        // Milliseconds, compared as JavaScript does (a NaN or infinite bound compares false).
        let since_last =
            self.last.map(|last| now.saturating_duration_since(last).as_secs_f64() * 1000.0);
        if since_last.is_none_or(|ms| ms > cooldown * 1000.0) {
            self.count = 1;
            self.last = Some(now);
            return false;
        }
        if self.count < burst {
            self.count += 1;
            self.last = Some(now);
            return false;
        }
        if since_last.is_some_and(|ms| ms < 1000.0 / sustained) {
            return true;
        }
        self.last = Some(now);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line said in an unregistered channel (no chat filters), as in the first recordings.
    fn say(msg: &str) -> (String, String) {
        match process_chat(msg, false) {
            ChatAction::Say { msg, meta } => (msg, meta),
            ChatAction::ToggleAfk => panic!("not a chat line"),
        }
    }

    #[test]
    fn names() {
        assert!(valid_channel_name("testchan"));
        assert!(!valid_channel_name("bad name!"));
        assert!(!valid_channel_name("$bad$"));
        assert!(!valid_channel_name(&"a".repeat(31)));
        assert!(valid_user_name("Rosey-Bot_2"));
        assert!(!valid_user_name(&"a".repeat(21)));
        assert!(is_reserved("rosey_admin"));
        assert!(is_reserved("OWNER"));
        assert!(is_reserved("x-administrator-y"));
        assert!(!is_reserved("badminton"));
    }

    #[test]
    fn recorded_chat_processing() {
        assert_eq!(
            say("hello <b>x</b> http://example.com").0,
            r#"hello &lt;b&gt;x&lt;/b&gt; <a href="http://example.com" target="_blank" rel="noopener noreferrer">http://example.com</a>"#
        );
        assert_eq!(
            say(r#"Tom & Jerry "quoted" 'apos' <script>alert(1)</script> https://example.com/p?a=1&b=2"#).0,
            r#"Tom &amp; Jerry "quoted" 'apos' &lt;script&gt;alert(1)&lt;/script&gt; <a href="https://example.com/p?a=1&amp;b=2" target="_blank" rel="noopener noreferrer">https://example.com/p?a=1&amp;b=2</a>"#
        );
        assert_eq!(
            say("/me waves"),
            ("waves".into(), r#"{"addClass":"action","action":true}"#.into())
        );
        assert_eq!(
            say(">greentext line"),
            ("&gt;greentext line".into(), r#"{"addClass":"greentext"}"#.into())
        );
        assert_eq!(
            say("/sp spoiler text"),
            ("spoiler text".into(), r#"{"addClass":"spoiler"}"#.into())
        );
        assert_eq!(say("/mean"), ("/mean".into(), "{}".into()));
        assert_eq!(process_chat("/afk", false), ChatAction::ToggleAfk);
        assert_eq!(clean_input(&"x".repeat(330)).len(), 320);
        assert_eq!(clean_input("a\n\tb"), "a b");
        assert_eq!(process_pm("/me pokes <b>", false), "/me pokes &lt;b&gt;");
        assert_eq!(render("http:// x", true), "http:// x");
        assert!(counts_twice("/me waves") && counts_twice("/sp x") && counts_twice("/me"));
        assert!(!counts_twice("/mean") && !counts_twice("me") && !counts_twice("/afk"));
    }

    #[test]
    fn default_filters_as_cytube_runs_them() {
        let cases = [
            ("_italic_", "<em>italic</em>"),
            ("snake_case_name", "snake<em>case</em>name"),
            ("__double__", "<em>_double</em>_"),
            ("*a*b*c*", "<strong>a</strong>b<strong>c</strong>"),
            ("`code with *star*`", "<code>code with <strong>star</strong></code>"),
            (
                "~~s~~ [SP]x[/sp] [sp][/sp]",
                r#"<s>s</s> <span class="spoiler">x</span> <span class="spoiler"></span>"#,
            ),
            ("_unclosed", "_unclosed"),
            ("é_é_é", "é<em>é</em>é"),
        ];
        for (typed, html) in cases {
            assert_eq!(default_filters(typed), html, "{typed}");
        }
        assert_eq!(
            render("_x_ http://e.com/a_b_c y_z_", true),
            r#"<em>x</em> <a href="http://e.com/a_b_c" target="_blank" rel="noopener noreferrer">http://e.com/a_b_c</a> y<em>z</em>"#,
            "links are left alone"
        );
    }

    #[test]
    fn limiter_burst_then_one_per_interval_from_the_last_accepted() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + std::time::Duration::from_millis(n);
        let mut l = RateLimiter::default();
        let passed = (0..30).filter(|_| !l.throttle_at(t0, FloodParams::PER_USER)).count();
        assert_eq!(passed, 20);
        assert!(l.throttle_at(ms(99), FloodParams::PER_USER));
        assert!(!l.throttle_at(ms(100), FloodParams::PER_USER));
        assert!(l.throttle_at(ms(150), FloodParams::PER_USER), "100 ms from the accepted one");

        // The recorded antiflood: burst 4, sustained 1, cooldown 4.
        let antiflood = FloodParams { burst: 4, sustained: 1.0, cooldown: Some(4.0) };
        let mut l = RateLimiter::default();
        let passed = (0..10).filter(|_| !l.throttle_at(t0, antiflood)).count();
        assert_eq!(passed, 4);
        // Drops do not move the reference: still a second after the last accepted.
        assert!(l.throttle_at(ms(999), antiflood));
        assert!(!l.throttle_at(ms(1000), antiflood));
        // Exactly the cooldown of quiet is not yet a reset, past it the burst is back.
        assert!(!l.throttle_at(ms(5000), antiflood));
        assert!(l.throttle_at(ms(5000), antiflood));
        let passed = (0..10).filter(|_| !l.throttle_at(ms(9001), antiflood)).count();
        assert_eq!(passed, 4);
    }

    /// What the fake broadcasts for each line alice typed in the recorded `filters` scenarios (a
    /// registered channel with CyTube's default filters, and an unregistered one without) is what
    /// the real server broadcast.
    #[test]
    fn chat_and_pms_are_rendered_as_recorded() {
        for (scenario, filters) in [("filters", true), ("filters_unregistered", false)] {
            let lines = crate::recorded::typed_and_received(scenario);
            for line in &lines {
                let ours = if line.event == "pm" {
                    process_pm(&line.typed, filters)
                } else {
                    match process_chat(&clean_input(&line.typed), filters) {
                        ChatAction::Say { msg, .. } => msg,
                        ChatAction::ToggleAfk => panic!("{}", line.typed),
                    }
                };
                assert_eq!(ours, line.received, "{scenario}: {:?}", line.typed);
            }
            let checked = lines.len();
            assert!(checked >= 25, "{scenario}: {checked} lines");
        }
    }
}
