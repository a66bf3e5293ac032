//! Property tests of the HTML-to-text decoder and the message splitter: chat from the server and
//! replies from plugins are untrusted, so any text must decode in one pass to no more than it was,
//! and any reply must split into pieces CyTube accepts, losing nothing but whitespace.

use proptest::prelude::*;

use super::*;

/// What CyTube does to chat text before sending it: escapes the characters HTML gives meaning to.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Single characters the decoder looks at.
const MARKS: &[&str] = &["<", ">", "&", ";", "#", "x", "/", "\"", "'", "=", "é", "😀"];

/// Tags and entities, well-formed and not.
const MARKUP: &[&str] = &[
    "<b>",
    "</b>",
    "<a href=\"x\">",
    "</a>",
    "<br/>",
    "<1>",
    "< b>",
    "<<",
    "&amp;",
    "&lt;",
    "&#39;",
    "&#x1F600;",
    "&#0;",
    "&#xD800;",
    "&#99999999999;",
    "&nbsp;",
    "&bogus;",
    "&#;",
    "&#x;",
    "&;",
];

/// Tags chat may be wrapped in (a link, a channel's own filter, a default filter), with the markup
/// the default filters' tags read back as.
const WRAPPERS: &[(&str, &str, &str)] = &[
    ("", "", ""),
    ("b", "", ""),
    ("i", "", ""),
    ("span class=\"x\"", "", ""),
    ("a href=\"http://x.io/?a=1&amp;b=2\" target=\"_blank\"", "", ""),
    ("strong", "*", "*"),
    ("em", "_", "_"),
    ("code", "`", "`"),
    ("s", "~~", "~~"),
    ("span class=\"spoiler\"", "[sp]", "[/sp]"),
];

/// Text rich in what the decoder looks at: brackets, ampersands, semicolons, hashes, letters.
fn markup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-zA-Z0-9 ]{1,4}",
        2 => prop::sample::select(MARKS).prop_map(str::to_owned),
        2 => prop::sample::select(MARKUP).prop_map(str::to_owned),
        1 => "\\PC{1,3}",
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// Inputs that would expose a decoder that rescans: deep nesting, unclosed tags and entities, long
/// runs of the characters it stops at; each up to 64 KiB.
fn hostile() -> impl Strategy<Value = String> {
    let n = 1usize..10_000;
    let shapes = prop_oneof![
        n.clone().prop_map(|n| format!("{}text{}", "<b>".repeat(n), "</b>".repeat(n))),
        n.clone().prop_map(|n| format!("{}x", "<span class=\"a\">".repeat(n))),
        n.clone().prop_map(|n| "<a".repeat(n)),
        n.clone().prop_map(|n| format!("<{}", "a".repeat(n * 6))),
        n.clone().prop_map(|n| "&#".repeat(n)),
        n.clone().prop_map(|n| "&amp".repeat(n)),
        n.clone().prop_map(|n| format!("&#x{}", "f".repeat(n * 6))),
        n.clone().prop_map(|n| "<&".repeat(n)),
        n.clone().prop_map(|n| "&lt;&gt;".repeat(n)),
        n.prop_map(|n| format!("<{}>", "&".repeat(n * 6))),
    ];
    shapes.prop_map(|mut html| {
        let mut end = html.len().min(65_536);
        while !html.is_char_boundary(end) {
            end -= 1;
        }
        html.truncate(end);
        html
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_decodes_to_no_more_bytes_than_it_had(html in "\\PC{0,200}") {
        let text = html_to_text(&html);
        prop_assert!(text.len() <= html.len());
    }

    #[test]
    fn markup_with_odd_tags_and_entities_decodes_to_no_more_bytes_than_it_had(html in markup()) {
        let text = html_to_text(&html);
        prop_assert!(text.len() <= html.len(), "{:?} -> {:?}", html, text);
        // Text with neither `<` nor `&` has nothing to decode.
        if !html.contains(['<', '&']) {
            prop_assert_eq!(text, html);
        }
    }

    #[test]
    fn escaped_chat_decodes_to_what_the_user_typed(
        typed in "\\PC{0,100}",
        tag in prop::sample::select(WRAPPERS),
    ) {
        prop_assert_eq!(html_to_text(&escape(&typed)), typed.clone());
        let (tag, open, close) = tag;
        if !tag.is_empty() {
            let end = tag.split(' ').next().unwrap_or_default();
            let html = format!("<{tag}>{}</{end}>", escape(&typed));
            prop_assert_eq!(html_to_text(&html), format!("{open}{typed}{close}"));
        }
    }

    #[test]
    fn any_reply_splits_into_pieces_cytube_accepts_losing_only_whitespace(
        message in prop_oneof!["\\PC{0,300}", "[a-z ]{0,300}", "[😀é a]{0,200}"],
        max in 0usize..64,
    ) {
        let pieces = split_message(&message, max);
        for piece in &pieces {
            prop_assert!(!piece.is_empty() && piece.trim() == piece, "{:?}", piece);
            prop_assert!(piece.encode_utf16().count() <= max.max(2), "{:?} over {}", piece, max);
        }
        let squeeze = |text: &str| text.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        prop_assert_eq!(squeeze(&pieces.concat()), squeeze(&message));
    }
}

proptest! {
    // Big inputs: few cases, each large enough that rescanning would take seconds, not milliseconds.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn nested_and_unclosed_markup_decodes_in_one_pass(html in hostile()) {
        prop_assert!(html.len() <= 65_536);
        let text = html_to_text(&html);
        prop_assert!(text.len() <= html.len());
    }

    #[test]
    fn long_replies_split_in_one_pass(words in 1usize..12_000, word in "[a-z😀]{1,8}", max in 2usize..400) {
        let message = format!("{word} ").repeat(words.min(65_536 / (word.len() + 1)));
        let pieces = split_message(&message, max);
        prop_assert!(pieces.iter().all(|p| p.encode_utf16().count() <= max));
    }
}
