//! The documentation, tested: every shell command, config, JSON example and manifest in README.md,
//! QUICKSTART.md and docs/ is run or validated here, so the docs cannot drift from the code.
//!
//! A fenced block says what is done with it in its info string (the words after the opening
//! fence): `sh test`, `sh test bot`, `sh test db`, `text output`, `sh no-run <reason>`,
//! `json config`, `json response GET /path`, `json protocol`, `json example`, `toml manifest`,
//! `toml cargo`, `python file=<path>`, `python plugin <command>`, `yaml prometheus`, `promql query`,
//! `ini systemd`, `<language> no-run <reason>`, `text`. docs/ARCHITECTURE.md, "Tested
//! documentation", says what each means; [`marker_problem`] is the same list in code, and a block
//! that follows none of them fails [`every_block_is_marked`].
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

#[path = "docs/bot.rs"]
mod bot;
#[path = "docs/deploy.rs"]
mod deploy;
#[path = "docs/formats.rs"]
mod formats;
#[path = "docs/links.rs"]
mod links;
#[path = "docs/markdown.rs"]
mod markdown;
#[path = "docs/run.rs"]
mod run;
#[path = "docs/shell.rs"]
mod shell;

use markdown::Block;

/// Where the convention is written down, for failure messages.
const CONVENTION: &str = "docs/ARCHITECTURE.md, \"Tested documentation\"";

/// Fails with every problem found, one `file:line: problem` a line.
fn report(what: &str, failures: Vec<String>) {
    assert!(failures.is_empty(), "{} {what}:\n{}", failures.len(), failures.join("\n"));
}

/// Why the info string of `block` follows no convention, if it does not.
fn marker_problem(block: &Block) -> Option<String> {
    let args = &block.args;
    let no_args = || (!args.is_empty()).then(|| format!("unexpected words {args:?}"));
    match (block.lang.as_str(), block.marker.as_str()) {
        ("sh", "test") => args
            .iter()
            .find(|a| !matches!(a.as_str(), "bot" | "db"))
            .map(|a| format!("unknown fixture {a:?} (bot or db)")),
        (_, "no-run") => {
            args.is_empty().then(|| "a no-run block says why it is not run".to_owned())
        }
        ("json", "config") => {
            args.iter().find(|a| !a.contains('=')).map(|a| format!("{a:?} is not VARIABLE=value"))
        }
        ("json", "example" | "protocol") | ("toml", "manifest" | "cargo") => no_args(),
        ("json", "response") => match args.as_slice() {
            [method, path]
                if matches!(method.as_str(), "GET" | "POST") && path.starts_with('/') =>
            {
                None
            }
            _ => Some("expected `json response GET|POST /path`".to_owned()),
        },
        ("python", marker) if marker.starts_with("file=") => no_args(),
        ("python", "plugin") => {
            (args.len() != 1).then(|| "expected `python plugin <command>`".to_owned())
        }
        ("yaml", "prometheus") | ("promql", "query") | ("ini", "systemd") => no_args(),
        ("text", _) => block
            .text
            .lines()
            .find(|line| line.starts_with("$ "))
            .map(|line| format!("a command in a text block ({line:?}): make it a sh block")),
        ("", _) => Some("a fence without an info string".to_owned()),
        (lang, "") => Some(format!("`{lang}` without a marker")),
        (lang, marker) => Some(format!("`{lang} {marker}` follows no convention")),
    }
}

#[test]
fn every_block_is_marked() {
    let failures = markdown::all_blocks()
        .iter()
        .filter_map(|block| {
            let problem = marker_problem(block)?;
            Some(format!("{}: {problem} (see {CONVENTION})", block.at()))
        })
        .collect();
    report("blocks without a valid marking", failures);
}

#[test]
fn every_output_block_follows_a_test_block() {
    let blocks = markdown::all_blocks();
    let failures = blocks
        .iter()
        .enumerate()
        .filter(|(_, block)| block.is("text", "output"))
        .filter(|(i, block)| {
            let previous = i.checked_sub(1).map(|i| &blocks[i]);
            !previous.is_some_and(|p| p.file == block.file && p.is("sh", "test"))
        })
        .map(|(_, block)| {
            format!("{}: a `text output` block must follow a `sh test` block", block.at())
        })
        .collect();
    report("misplaced output blocks", failures);
}

#[test]
fn unmarked_blocks_are_refused() {
    let text = "```sh\nrosey run\n```\n```json\n{}\n```\n```\nplain\n```\n```text\n$ rosey run\n```\n\
                ```sh no-run\nx\n```\n```json response PUT /x\n{}\n```\n```sh test\ntrue\n```\n";
    let blocks = markdown::blocks_of(std::path::Path::new("x.md"), text);
    let problems: Vec<Option<String>> = blocks.iter().map(marker_problem).collect();
    assert!(problems[..6].iter().all(Option::is_some), "{problems:?}");
    assert_eq!(problems[6], None);
}
