//! The quote book without its storage: reading `!quote …`, the stored shape, the reply texts.

use serde::{Deserialize, Serialize};

/// Shown for a sub-command we do not know.
pub(crate) const USAGE: &str =
    "Usage: !quote, !quote <n>, !quote add <text>, !quote search <word>, !quote del <n>";
/// Longest quote kept, in characters.
pub(crate) const MAX_CHARS: usize = 300;
/// Matches shown for one search; the rest are counted.
pub(crate) const SHOWN_MATCHES: usize = 3;
/// Every quote's key starts with this, followed by its number on 8 digits (so keys sort by number).
pub(crate) const KEY_PREFIX: &str = "quote:";
/// The key of the counter that numbers new quotes.
pub(crate) const NEXT_ID_KEY: &str = "next_id";

/// What `!quote …` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request<'a> {
    /// `!quote`: a random one.
    Random,
    /// `!quote <n>`.
    Show(u64),
    /// `!quote add <text>` (text trimmed, checked for length).
    Add(&'a str),
    /// `!quote search <word>` (trimmed, not empty).
    Search(&'a str),
    /// `!quote del <n>`.
    Delete(u64),
}

/// A stored quote: its text, who added it, when (epoch seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Quote {
    pub(crate) text: String,
    pub(crate) by: String,
    pub(crate) at: i64,
}

/// Reads the command's arguments; the error is the reply.
pub(crate) fn parse(args: &str) -> Result<Request<'_>, String> {
    let args = args.trim();
    let (word, rest) = match args.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (args, ""),
    };
    match word.to_lowercase().as_str() {
        "" => Ok(Request::Random),
        "add" => {
            let length = rest.chars().count();
            if length == 0 {
                Err("❌ Usage: !quote add <text>".to_owned())
            } else if length > MAX_CHARS {
                Err(format!(
                    "❌ A quote can be at most {MAX_CHARS} characters (this one has {length})"
                ))
            } else {
                Ok(Request::Add(rest))
            }
        }
        "search" if rest.is_empty() => Err("❌ Usage: !quote search <word>".to_owned()),
        "search" => Ok(Request::Search(rest)),
        "del" => match number(rest) {
            Some(Ok(n)) => Ok(Request::Delete(n)),
            Some(Err(())) => Err(missing(rest.trim_start_matches('#'))),
            None => Err("❌ Usage: !quote del <n>".to_owned()),
        },
        _ => match number(args) {
            Some(Ok(n)) => Ok(Request::Show(n)),
            Some(Err(())) => Err(missing(args.trim_start_matches('#'))),
            None => Err(format!("❌ {USAGE}")),
        },
    }
}

/// A quote number (`12` or `#12`): `None` when it is not one, `Err` when it is too big to exist.
fn number(text: &str) -> Option<Result<u64, ()>> {
    let digits = text.strip_prefix('#').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().map_err(|_| ()))
}

/// The key quote `n` is stored under.
pub(crate) fn key(n: u64) -> String {
    format!("{KEY_PREFIX}{n:08}")
}

/// The number of the quote stored under `key`, if it is a quote's key.
pub(crate) fn number_of(key: &str) -> Option<u64> {
    key.strip_prefix(KEY_PREFIX)?.parse().ok()
}

/// Whether `quote` matches a search for `word` (case-insensitive substring).
pub(crate) fn matches(quote: &Quote, word: &str) -> bool {
    quote.text.to_lowercase().contains(&word.to_lowercase())
}

/// Whether `user` may delete `quote` (only whoever added it; names compared case-insensitively).
pub(crate) fn may_delete(quote: &Quote, user: &str) -> bool {
    quote.by.to_lowercase() == user.to_lowercase()
}

pub(crate) fn saved(n: u64) -> String {
    format!("✅ Saved quote #{n}")
}

pub(crate) fn shown(n: u64, quote: &Quote) -> String {
    format!("💬 #{n}: \"{}\" — added by {}", quote.text, quote.by)
}

pub(crate) fn no_quotes() -> String {
    "❌ No quotes yet — add one with !quote add <text>".to_owned()
}

pub(crate) fn missing(n: impl std::fmt::Display) -> String {
    format!("❌ No quote #{n}")
}

/// The reply to a search: up to [`SHOWN_MATCHES`] quotes (oldest first) out of `total` matches.
pub(crate) fn found(word: &str, shown_matches: &[(u64, Quote)], total: usize) -> Vec<String> {
    if total == 0 {
        return vec![format!("❌ No quote matches \"{word}\"")];
    }
    let mut lines: Vec<String> = shown_matches.iter().map(|(n, q)| shown(*n, q)).collect();
    if total > shown_matches.len() {
        lines.push(format!("… and {} more", total - shown_matches.len()));
    }
    lines
}

pub(crate) fn deleted(n: u64) -> String {
    format!("🗑️ Deleted quote #{n}")
}

pub(crate) fn not_yours(n: u64, quote: &Quote) -> String {
    format!("❌ Only {} can delete quote #{n}", quote.by)
}

pub(crate) fn unavailable(reason: &impl std::fmt::Display) -> String {
    format!("❌ Quotes are unavailable right now ({reason})")
}

/// Picks random quotes: xorshift64*, seeded from the clock and the process id.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn from_entropy() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        Self(seed | 1)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(text: &str, by: &str) -> Quote {
        Quote { text: text.into(), by: by.into(), at: 1_795_343_000 }
    }

    #[test]
    fn sub_commands_are_read_from_the_arguments() {
        assert_eq!(parse(""), Ok(Request::Random));
        assert_eq!(parse("   "), Ok(Request::Random));
        assert_eq!(parse("12"), Ok(Request::Show(12)));
        assert_eq!(parse(" #7 "), Ok(Request::Show(7)));
        assert_eq!(parse("add   to be or not  "), Ok(Request::Add("to be or not")));
        assert_eq!(parse("ADD Shout"), Ok(Request::Add("Shout")));
        assert_eq!(parse("search Cat"), Ok(Request::Search("Cat")));
        assert_eq!(parse("del 3"), Ok(Request::Delete(3)));
        assert_eq!(parse("del #3"), Ok(Request::Delete(3)));
    }

    #[test]
    fn bad_arguments_get_the_usage_they_need() {
        assert_eq!(parse("add").unwrap_err(), "❌ Usage: !quote add <text>");
        assert_eq!(parse("add    ").unwrap_err(), "❌ Usage: !quote add <text>");
        assert_eq!(parse("search").unwrap_err(), "❌ Usage: !quote search <word>");
        assert_eq!(parse("del").unwrap_err(), "❌ Usage: !quote del <n>");
        assert_eq!(parse("del two").unwrap_err(), "❌ Usage: !quote del <n>");
        assert_eq!(parse("dance").unwrap_err(), format!("❌ {USAGE}"));
        assert_eq!(parse("12abc").unwrap_err(), format!("❌ {USAGE}"));
        assert_eq!(
            parse("99999999999999999999999").unwrap_err(),
            "❌ No quote #99999999999999999999999"
        );
    }

    #[test]
    fn quotes_are_at_most_300_characters() {
        let longest = "é".repeat(MAX_CHARS);
        assert_eq!(parse(&format!("add {longest}")), Ok(Request::Add(&longest)));
        assert_eq!(
            parse(&format!("add {longest}!")).unwrap_err(),
            "❌ A quote can be at most 300 characters (this one has 301)"
        );
    }

    #[test]
    fn keys_sort_by_number_and_read_back() {
        assert_eq!(key(12), "quote:00000012");
        assert!(key(9) < key(10));
        assert_eq!(number_of(&key(12)), Some(12));
        assert_eq!(number_of("next_id"), None);
    }

    #[test]
    fn replies_read_like_the_other_bundled_plugins() {
        let q = quote("Hello \"world\"", "alice");
        assert_eq!(saved(12), "✅ Saved quote #12");
        assert_eq!(shown(12, &q), "💬 #12: \"Hello \"world\"\" — added by alice");
        assert_eq!(missing(99), "❌ No quote #99");
        assert_eq!(deleted(12), "🗑️ Deleted quote #12");
        assert_eq!(not_yours(12, &q), "❌ Only alice can delete quote #12");
        assert_eq!(no_quotes(), "❌ No quotes yet — add one with !quote add <text>");
        assert_eq!(
            unavailable(&"storage unavailable"),
            "❌ Quotes are unavailable right now (storage unavailable)"
        );
    }

    #[test]
    fn searches_match_case_insensitively_and_show_three() {
        let q = quote("The CAT sat", "bob");
        assert!(matches(&q, "cat") && matches(&q, "Sat") && !matches(&q, "dog"));
        let hits: Vec<(u64, Quote)> = (1..=3).map(|n| (n, q.clone())).collect();
        let lines = found("cat", &hits, 5);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "💬 #1: \"The CAT sat\" — added by bob");
        assert_eq!(lines[3], "… and 2 more");
        assert_eq!(found("cat", &hits[..1], 1).len(), 1);
        assert_eq!(found("dog", &[], 0), ["❌ No quote matches \"dog\""]);
    }

    #[test]
    fn only_the_author_may_delete_whatever_the_case() {
        let q = quote("x", "Alice");
        assert!(may_delete(&q, "alice") && may_delete(&q, "ALICE"));
        assert!(!may_delete(&q, "bob"));
    }

    #[test]
    fn random_picks_cover_the_range() {
        let mut rng = Rng::from_entropy();
        let mut seen = [false; 5];
        for _ in 0..500 {
            seen[rng.below(5)] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(rng.below(1), 0);
    }
}
