//! The documentation, tested: every shell command, config, JSON example and manifest in README.md,
//! QUICKSTART.md and docs/ is run or validated here, so the docs cannot drift from the code.
//!
//! A fenced block says what is done with it in its info string (the words after the opening
//! fence); docs/ARCHITECTURE.md, "Tested documentation", is the reference. In short:
//!
//! | info string | what the test does |
//! |---|---|
//! | `sh test` | runs it with bash (`-e -o pipefail`) in a scratch directory laid out like the repository (shared by the blocks of one document, in order), `rosey` being the built binary; it must exit 0 |
//! | `sh test bot` | the same, with a bot running (dashboard on a free port written as `127.0.0.1:8080`, `ROSEY_DASHBOARD_TOKEN` set) |
//! | `sh test db` | the same, in a directory with a `rosey.db` written by a real run (plugin history and audit rows) |
//! | `text output` | right after a `sh test` block: its standard output, `…` matching any text in a line, or any lines alone on one |
//! | `sh no-run <reason>` | not run (needs root, a network, a server); parsed by `bash -n`, and every `rosey …` in it must parse |
//! | `<any language> no-run <reason>` | shown only, for the reason given |
//! | `json config [VAR=value…]` | `rosey check-config` accepts it (with those environment variables) |
//! | `json response <METHOD> <path>` | each JSON value has the fields (names and types, at every depth) that a running bot answers there |
//! | `json protocol` | each line is a plugin-protocol message the host or a plugin knows |
//! | `json example` | one or more JSON values |
//! | `toml manifest` | `Manifest::parse` accepts it |
//! | `toml cargo` | a Cargo.toml fragment whose path dependencies are this workspace's crates with their features |
//! | `python file=<path>` | equal to that file of the repository |
//! | `python plugin <command>` | run as a plugin by `rosey run`: `!<command>` is answered |
//! | `yaml prometheus` | `promtool check config` accepts it, with `docs/alerts.yml` as its rule file |
//! | `promql query` | each line (but `#` comments) is a query `promtool check rules` accepts |
//! | `ini systemd` | `systemd-analyze verify` accepts `deploy/rosey.service` with it as a drop-in |
//! | `text` | output, a chat transcript or a diagram: shown only (it may not hold a `$ ` command line) |
//!
//! A block with any other info string, or none, fails [`every_block_is_marked`].
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
