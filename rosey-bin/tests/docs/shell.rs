//! `sh test` blocks are run and their `text output` compared; `sh no-run` blocks are parsed; in
//! both, every `rosey …` command line must be one the binary's command line accepts.

use std::time::Duration;

use super::markdown::{self, Block};
use super::run::{self, Scratch};
use super::{bot, report};

/// How long one block may run: a few `rosey run`s on the console, each a second or two.
const BLOCK_LIMIT: Duration = Duration::from_secs(120);

/// bash with the options every block runs under: stop at the first failing command, also inside
/// a pipeline.
pub(crate) fn bash(scratch: &Scratch, script: &str) -> std::process::Command {
    let mut cmd = scratch.command("bash");
    cmd.args(["-e", "-o", "pipefail", "-c", script]);
    cmd
}

/// Runs one `sh test` block in `scratch` and checks its output against `expected`, if given.
pub(crate) fn run_block(
    block: &Block,
    cmd: std::process::Command,
    expected: Option<&Block>,
) -> Result<(), String> {
    if let Some(arg) = invalid_rosey_invocation(&block.text) {
        return Err(arg);
    }
    let ran = run::run(cmd, BLOCK_LIMIT)?;
    if !ran.status.success() {
        return Err(format!("failed: {}", ran.describe()));
    }
    match expected {
        Some(output) => matches_output(&ran.stdout, &output.text)
            .map_err(|why| format!("output differs from {} ({why}):\n{}", output.at(), ran.stdout)),
        None => Ok(()),
    }
}

#[test]
fn sh_test_blocks_run_and_print_what_the_docs_show() {
    run::require_bundled_plugins();
    let blocks = markdown::all_blocks();
    let mut failures = Vec::new();
    // The blocks of one document share a directory, in document order: a tutorial's later steps
    // see the files its earlier steps wrote.
    let mut current: Option<(&std::path::Path, Scratch)> = None;
    let mut ran = 0;
    for (i, block) in blocks.iter().enumerate() {
        if !block.is("sh", "test") || block.args.iter().any(|a| a == "bot") {
            continue;
        }
        ran += 1;
        if current.as_ref().is_none_or(|(file, _)| *file != block.file) {
            current = Some((&block.file, Scratch::new()));
        }
        let Some((_, scratch)) = &current else { continue };
        if block.args.iter().any(|a| a == "db")
            && let Err(err) = bot::write_database(scratch)
        {
            failures.push(format!("{}: the db fixture failed: {err}", block.at()));
            continue;
        }
        let expected = output_after(&blocks, i);
        if let Err(err) = run_block(block, bash(scratch, &block.text), expected) {
            failures.push(format!("{}: {err}", block.at()));
        }
    }
    assert!(ran > 0, "no `sh test` block in the docs");
    report("failing sh test blocks", failures);
}

/// The `text output` block right after block `i`, if there is one.
pub(crate) fn output_after(blocks: &[Block], i: usize) -> Option<&Block> {
    blocks.get(i + 1).filter(|next| next.file == blocks[i].file && next.is("text", "output"))
}

#[test]
fn no_run_blocks_are_valid_shell_calling_rosey_correctly() {
    let mut failures = Vec::new();
    let blocks = markdown::all_blocks();
    let no_run: Vec<&Block> = blocks.iter().filter(|b| b.is("sh", "no-run")).collect();
    assert!(!no_run.is_empty(), "no `sh no-run` block in the docs");
    for block in no_run {
        let scratch = Scratch::new();
        let mut cmd = scratch.command("bash");
        cmd.args(["-n", "-c", &block.text]);
        match run::run(cmd, Duration::from_secs(10)) {
            Ok(ran) if ran.status.success() => {}
            Ok(ran) => failures.push(format!("{}: not valid shell: {}", block.at(), ran.stderr)),
            Err(err) => failures.push(format!("{}: {err}", block.at())),
        }
        if let Some(err) = invalid_rosey_invocation(&block.text) {
            failures.push(format!("{}: {err}", block.at()));
        }
    }
    report("broken no-run blocks", failures);
}

/// The first `rosey …` command of `script` that the binary refuses, with clap's reason. Each is
/// checked as `rosey <args> --help`: clap reports a bad argument before it would print the help.
fn invalid_rosey_invocation(script: &str) -> Option<String> {
    invocations(script).into_iter().find_map(|args| {
        let mut cmd = std::process::Command::new(run::ROSEY);
        cmd.args(&args).arg("--help");
        match run::run(cmd, Duration::from_secs(10)) {
            Ok(ran) if ran.status.success() => None,
            Ok(ran) => {
                Some(format!("`rosey {}` is refused: {}", args.join(" "), ran.stderr.trim()))
            }
            Err(err) => Some(err),
        }
    })
}

/// The argument lists of the commands in `script` whose program is `rosey` (any path ending in
/// `/rosey`), after environment assignments and `sudo -u <user>`.
fn invocations(script: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for command in commands(script) {
        let mut words = command.iter().map(String::as_str).peekable();
        while words.peek().is_some_and(|w| is_assignment(w)) {
            words.next();
        }
        if words.peek() == Some(&"sudo") {
            words.next();
            if words.peek() == Some(&"-u") {
                words.next();
                words.next();
            }
        }
        let Some(program) = words.next() else { continue };
        if program == "rosey" || program.ends_with("/rosey") {
            found.push(words.map(str::to_owned).collect());
        }
    }
    found
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The simple commands of a script as words (quotes removed, `$VAR` kept as written), split at
/// `| || && ; & ( )` and newlines; redirections and their targets, `#` comments and here-document
/// bodies are left out.
fn commands(script: &str) -> Vec<Vec<String>> {
    let script = without_heredoc_bodies(script);
    let mut commands = vec![Vec::new()];
    let mut word: Option<String> = None;
    let mut redirect_target = false;
    let mut chars = script.chars().peekable();
    // A word ends: it is an argument, unless it is the target of a redirection.
    fn end_word(
        word: &mut Option<String>,
        commands: &mut [Vec<String>],
        redirect_target: &mut bool,
    ) {
        if let Some(w) = word.take()
            && !std::mem::take(redirect_target)
        {
            commands.last_mut().unwrap().push(w);
        }
    }
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'\n') => {
                chars.next();
            }
            '\\' => word.get_or_insert_default().extend(chars.next()),
            '\'' => {
                let w = word.get_or_insert_default();
                w.extend(chars.by_ref().take_while(|c| *c != '\''));
            }
            '"' => {
                let w = word.get_or_insert_default();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            '#' if word.is_none() => while chars.next_if(|c| *c != '\n').is_some() {},
            ' ' | '\t' => end_word(&mut word, &mut commands, &mut redirect_target),
            '>' | '<' => {
                // `2>` belongs to the redirection, not to the arguments.
                if word.as_deref().is_some_and(|w| w.chars().all(|c| c.is_ascii_digit())) {
                    word = None;
                }
                end_word(&mut word, &mut commands, &mut redirect_target);
                while chars.next_if(|c| matches!(c, '>' | '<' | '&' | '-')).is_some() {}
                redirect_target = true;
            }
            '&' if chars.peek() == Some(&'>') && word.is_none() => {
                chars.next();
                redirect_target = true;
            }
            '\n' | '|' | '&' | ';' | '(' | ')' => {
                end_word(&mut word, &mut commands, &mut redirect_target);
                commands.push(Vec::new());
            }
            c => word.get_or_insert_default().push(c),
        }
    }
    end_word(&mut word, &mut commands, &mut redirect_target);
    commands.retain(|c| !c.is_empty());
    commands
}

/// The script without the lines of its here-documents (`<<EOF` … `EOF`), which are data.
fn without_heredoc_bodies(script: &str) -> String {
    let mut kept = String::new();
    let mut terminator: Option<String> = None;
    for line in script.lines() {
        if let Some(end) = &terminator {
            if line.trim() == end {
                terminator = None;
            }
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
        if let Some((_, after)) = line.split_once("<<") {
            let word: String = after
                .trim_start_matches(['-', ' '])
                .chars()
                .take_while(|c| !c.is_whitespace())
                .filter(|c| !matches!(c, '\'' | '"'))
                .collect();
            terminator = (!word.is_empty()).then_some(word);
        }
    }
    kept
}

/// Compares a command's output with a `text output` block: line by line, trailing spaces ignored,
/// `…` in a line matching any text, and a line that is only `…` matching any number of lines.
pub(crate) fn matches_output(actual: &str, expected: &str) -> Result<(), String> {
    let actual: Vec<&str> = actual.lines().map(str::trim_end).collect();
    let expected: Vec<&str> = expected.lines().map(str::trim_end).collect();
    if lines_match(&actual, &expected) {
        Ok(())
    } else {
        let first = expected
            .iter()
            .find(|e| **e != "…" && !actual.iter().any(|a| line_matches(a, e)))
            .map_or_else(
                || "the order or the number of lines".to_owned(),
                |e| format!("no line like {e:?}"),
            );
        Err(first)
    }
}

fn lines_match(actual: &[&str], expected: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"…", rest)) => (0..=actual.len()).any(|skip| lines_match(&actual[skip..], rest)),
        Some((line, rest)) => actual
            .split_first()
            .is_some_and(|(first, others)| line_matches(first, line) && lines_match(others, rest)),
    }
}

fn line_matches(actual: &str, pattern: &str) -> bool {
    let mut parts = pattern.split('…');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = actual.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

#[test]
fn output_patterns_match_as_documented() {
    assert!(matches_output("a\nrosey: 🎲 [4, 3] = 7\n", "a\nrosey: 🎲 … = …").is_ok());
    assert!(matches_output("x\ny\nz\nend\n", "…\nend").is_ok());
    assert!(matches_output("x\nend\n", "x\nend\nmore").is_err());
    assert!(matches_output("OK: a.json\n", "OK: b.json").is_err());
}

#[test]
fn rosey_commands_are_found_in_scripts() {
    let script = "cargo build && ./target/release/rosey run --config x.json   # a comment\n\
                  printf 'alice: !roll\\n' | rosey run\n\
                  ROSEY_DATABASE_URL='postgres://x' rosey run config.json 2> err.txt\n\
                  sudo -u rosey /usr/local/bin/rosey check-config \"/etc/rosey/config.json\"\n\
                  cat > x <<'EOF'\nrosey is not run here\nEOF\n\
                  useradd rosey\n";
    assert_eq!(
        invocations(script),
        [
            vec!["run", "--config", "x.json"],
            vec!["run"],
            vec!["run", "config.json"],
            vec!["check-config", "/etc/rosey/config.json"],
        ]
    );
    assert!(invalid_rosey_invocation("rosey run config.json").is_some());
    assert!(invalid_rosey_invocation("rosey run --config config.json").is_none());
}
