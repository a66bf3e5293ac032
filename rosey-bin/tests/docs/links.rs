//! Links between the documents: every relative link names a file of the repository, and every
//! `#anchor` a heading of its target (GitHub's anchors).

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use super::markdown::{documents, repo};
use super::report;

/// The lines of a Markdown text outside fenced blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fence: Option<char> = None;
    let mut prose = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let opens =
            ['`', '~'].into_iter().find(|c| trimmed.starts_with(&String::from(*c).repeat(3)));
        match (fence, opens) {
            (None, Some(c)) => fence = Some(c),
            (Some(f), Some(c)) if f == c => fence = None,
            (None, None) => prose.push((n + 1, line)),
            _ => {}
        }
    }
    prose
}

/// GitHub's anchor for a heading: lower case, punctuation dropped (but `-` and `_`), spaces as
/// `-`; repeats get `-1`, `-2`….
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (_, line) in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else { continue };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut unique = slug.clone();
        let mut n = 0;
        while !seen.insert(unique.clone()) {
            n += 1;
            unique = format!("{slug}-{n}");
        }
    }
    seen
}

/// The targets of inline links `[text](target)` in a line, inline code left out.
fn link_targets(line: &str) -> Vec<String> {
    let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
    prose
        .match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &prose[at + 2..];
            let end = rest.find(')')?;
            Some(rest[..end].split_whitespace().next().unwrap_or_default().to_owned())
        })
        .collect()
}

/// `path` with `.` and `..` resolved without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn relative_links_reach_their_file_and_heading() {
    let root = repo();
    let mut failures = Vec::new();
    for document in documents() {
        let text = std::fs::read_to_string(root.join(&document)).unwrap();
        for (n, line) in prose_lines(&text) {
            for target in link_targets(line) {
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
                let path = if file.is_empty() {
                    document.clone()
                } else {
                    normalize(&document.parent().unwrap_or(Path::new("")).join(file))
                };
                let at = format!("{}:{n}", document.display());
                if !root.join(&path).exists() {
                    failures.push(format!("{at}: {target}: no file {}", path.display()));
                    continue;
                }
                if !anchor.is_empty() && path.extension().is_some_and(|e| e == "md") {
                    let target_text = std::fs::read_to_string(root.join(&path)).unwrap();
                    if !anchors(&target_text).contains(anchor) {
                        failures.push(format!(
                            "{at}: {target}: no heading #{anchor} in {}",
                            path.display()
                        ));
                    }
                }
            }
        }
    }
    report("broken links", failures);
}

#[test]
fn anchors_are_made_as_github_makes_them() {
    let found = anchors(
        "# Operating Rosey\n## The dashboard\n```sh\n# not a heading\n```\n## The dashboard\n### `rosey-core`: storage, SQL & more\n",
    );
    for anchor in
        ["operating-rosey", "the-dashboard", "the-dashboard-1", "rosey-core-storage-sql--more"]
    {
        assert!(found.contains(anchor), "{anchor} in {found:?}");
    }
    assert!(!found.contains("not-a-heading"));
    assert_eq!(
        link_targets("see [a](b.md#c) and `[x](y)` or [d](../e/f.md)."),
        ["b.md#c", "../e/f.md"]
    );
}
