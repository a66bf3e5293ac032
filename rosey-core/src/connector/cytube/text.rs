//! Chat text: CyTube sends chat as HTML; plugins and users want what was typed, and CyTube cuts messages
//! at the channel's limit (320 UTF-16 units by default), so long replies are split on word boundaries.
//!
//! CyTube escapes `<`, `>` and `&`, turns links into `<a>` tags and runs the channel's chat filters,
//! whose defaults turn markup into HTML: `` `x` `` → `<code>`, `*x*` → `<strong>`, `_x_` → `<em>`,
//! `~~x~~` → `<s>`, `[sp]x[/sp]` → `<span class="spoiler">`. A user's own `<` always arrives escaped,
//! so these tags can only come from the filters: they are turned back into the markup (so
//! `snake_case_name` stays itself), links into their text, and any other tag (a channel's custom
//! filter) is dropped.

/// The default `max-chat-message-length` of a CyTube server.
pub(super) const DEFAULT_MAX_LENGTH: usize = 320;

/// What was typed, from CyTube's HTML: the default filters' tags back to their markup, other tags
/// stripped (a link becomes its text), HTML entities decoded. Never fails: anything that is not a
/// recognised entity or a closed tag is kept as typed.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut spans = SpanStack::default();
    let mut rest = html;
    while let Some(i) = rest.find(['<', '&']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with('<') {
            // Stop at the next `<` as well as at `>`: a tag cannot contain `<`, and stopping there
            // keeps a hostile line of many `<` linear rather than quadratic.
            match rest[1..].find(['<', '>']).map(|i| i + 1) {
                Some(end) if rest.as_bytes()[end] == b'>' && looks_like_tag(&rest[1..end]) => {
                    if let Some(markup) = filter_markup(&rest[1..end], &mut spans) {
                        out.push_str(markup);
                    }
                    rest = &rest[end + 1..];
                }
                _ => {
                    out.push('<');
                    rest = &rest[1..];
                }
            }
        } else {
            match decode_entity(rest) {
                Some((ch, len)) => {
                    out.push(ch);
                    rest = &rest[len..];
                }
                None => {
                    out.push('&');
                    rest = &rest[1..];
                }
            }
        }
    }
    out.push_str(rest);
    out
}

/// The markup a default CyTube filter turned into the tag `<inside>`, if it is one of theirs.
fn filter_markup(inside: &str, spans: &mut SpanStack) -> Option<&'static str> {
    match inside {
        "em" | "/em" => Some("_"),
        "strong" | "/strong" => Some("*"),
        "code" | "/code" => Some("`"),
        "s" | "/s" => Some("~~"),
        r#"span class="spoiler""# => {
            spans.open(true);
            Some("[sp]")
        }
        "/span" => spans.close().then_some("[/sp]"),
        _ => {
            let name = inside.split([' ', '\t', '\n', '/']).next().unwrap_or_default();
            if name.eq_ignore_ascii_case("span") {
                spans.open(false);
            }
            None
        }
    }
}

/// Which open `<span>`s are spoilers, so that each `</span>` closes the right kind. Only the innermost
/// [`MAX_DEPTH`](SpanStack::MAX_DEPTH) are remembered, so hostile nesting costs no memory.
#[derive(Debug, Default)]
struct SpanStack {
    /// Bit `i` is set when the span at depth `i` is a spoiler.
    spoilers: u64,
    depth: u32,
}

impl SpanStack {
    const MAX_DEPTH: u32 = 64;

    fn open(&mut self, spoiler: bool) {
        if self.depth < Self::MAX_DEPTH {
            self.spoilers =
                (self.spoilers & !(1 << self.depth)) | (u64::from(spoiler) << self.depth);
        }
        self.depth = self.depth.saturating_add(1);
    }

    /// Closes the innermost span; whether it was a spoiler.
    fn close(&mut self) -> bool {
        let Some(depth) = self.depth.checked_sub(1) else { return false };
        self.depth = depth;
        depth < Self::MAX_DEPTH && self.spoilers & (1 << depth) != 0
    }
}

fn looks_like_tag(inside: &str) -> bool {
    let name = inside.strip_prefix('/').unwrap_or(inside);
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

/// Decodes the entity at the start of `text`; returns the character and the entity's length.
fn decode_entity(text: &str) -> Option<(char, usize)> {
    // `;` is ASCII, so slicing at it is on a char boundary.
    let end = text.bytes().take(12).position(|b| b == b';')?;
    let name = &text[1..end];
    let ch = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" | "#39" | "#x27" => '\'',
        "nbsp" => '\u{a0}',
        _ => {
            let code = name.strip_prefix('#')?;
            let value = match code.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => code.parse().ok()?,
            };
            char::from_u32(value)?
        }
    };
    Some((ch, end + 1))
}

/// Splits `message` into pieces of at most `max` UTF-16 code units — what CyTube's (JavaScript) length
/// limit counts, so an emoji counts twice — breaking at the last space before the limit (a word longer
/// than the limit is cut). Pieces are trimmed; an empty message gives none.
pub(super) fn split_message(message: &str, max: usize) -> Vec<String> {
    // Any character fits in two units.
    let max = max.max(2);
    let mut pieces = Vec::new();
    let mut rest = message.trim();
    while !rest.is_empty() {
        // The byte index of the first character past the limit, and whether it is a space (a space
        // right at the limit is as good a break as one before it).
        let mut units = 0;
        let mut over = None;
        for (i, c) in rest.char_indices() {
            units += c.len_utf16();
            if units > max {
                over = Some((i, c.is_whitespace()));
                break;
            }
        }
        let Some((limit, space_at_limit)) = over else {
            pieces.push(rest.to_owned());
            break;
        };
        let cut = if space_at_limit {
            limit
        } else {
            match rest[..limit].rfind(char::is_whitespace) {
                Some(space) if space > 0 => space,
                _ => limit,
            }
        };
        pieces.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start();
    }
    pieces
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_example_holds() {
        use super::{html_to_text, split_message};

        let html = r#"hello &lt;b&gt;x&lt;/b&gt; <a href="http://example.com" target="_blank" rel="noopener noreferrer">http://example.com</a>"#;
        assert_eq!(html_to_text(html), "hello <b>x</b> http://example.com");
        assert_eq!(split_message("one two three", 8), ["one two", "three"]);
    }

    #[test]
    fn entities_and_tags_become_plain_text() {
        assert_eq!(
            html_to_text("bot says &lt;b&gt;hi&lt;/b&gt; &amp; bye"),
            "bot says <b>hi</b> & bye"
        );
        assert_eq!(html_to_text("&gt;greentext line"), ">greentext line");
        assert_eq!(html_to_text("&#128512; &#x1F600; &quot;q&quot; &#39;"), "😀 😀 \"q\" '");
        assert_eq!(html_to_text("a < b && c > d"), "a < b && c > d");
        assert_eq!(html_to_text("&bogus; &#xZZ; &"), "&bogus; &#xZZ; &");
        assert_eq!(html_to_text("&ééééééééé; <é"), "&ééééééééé; <é");
        assert_eq!(html_to_text("a <<b>x</b> c"), "a <x c");
        // Hostile input stays linear: many unclosed `<` (quadratic scanning would take minutes).
        let hostile = "<a".repeat(200_000);
        assert_eq!(html_to_text(&hostile), hostile);
        assert_eq!(
            html_to_text(
                r#"<a href="http://x.io/?a=1&amp;b=2" target="_blank">http://x.io/?a=1&amp;b=2</a>"#
            ),
            "http://x.io/?a=1&b=2"
        );
    }

    #[test]
    fn long_messages_split_on_word_boundaries() {
        let words = "word ".repeat(100);
        let pieces = split_message(&words, DEFAULT_MAX_LENGTH);
        assert!(
            pieces
                .iter()
                .all(|p| p.encode_utf16().count() <= DEFAULT_MAX_LENGTH && !p.ends_with(' '))
        );
        assert_eq!(pieces.join(" "), words.trim());
        assert_eq!(split_message(&"é".repeat(7), 3), ["ééé", "ééé", "é"]);
        // CyTube counts UTF-16 units: 200 emoji are 400 units, so they take two messages.
        let emoji = split_message(&"😀".repeat(200), DEFAULT_MAX_LENGTH);
        assert_eq!(emoji.iter().map(|p| p.chars().count()).collect::<Vec<_>>(), [160, 40]);
        assert_eq!(split_message("ab cd", 2), ["ab", "cd"], "a space right at the limit");
        assert!(split_message("   ", 10).is_empty());
        assert_eq!(split_message("🎲 [4, 3] = 7", 320), ["🎲 [4, 3] = 7"]);
    }
}
