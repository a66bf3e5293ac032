//! The documentation set and its fenced blocks: which files, where each block starts, and what its
//! info string says should be done with it.

use std::path::{Path, PathBuf};

/// The repository root (the workspace), which every documented path is relative to.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("the repository root")
}

/// The files whose blocks are checked: README.md, QUICKSTART.md and every `.md` under `docs/`,
/// as paths relative to the repository root, in a stable order.
pub(crate) fn documents() -> Vec<PathBuf> {
    let root = repo();
    let mut files = vec![PathBuf::from("README.md"), PathBuf::from("QUICKSTART.md")];
    let mut stack = vec![PathBuf::from("docs")];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(root.join(&dir))
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()))
            .map(|entry| dir.join(entry.expect("a directory entry").file_name()))
            .collect();
        entries.sort();
        for entry in entries {
            if root.join(&entry).is_dir() {
                stack.push(entry);
            } else if entry.extension().is_some_and(|ext| ext == "md") {
                files.push(entry);
            }
        }
    }
    files
}

/// One fenced code block of a document.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    /// The document, relative to the repository root.
    pub(crate) file: PathBuf,
    /// The 1-based line of the opening fence.
    pub(crate) line: usize,
    /// The first word of the info string (`sh`, `json`…), empty for a bare fence.
    pub(crate) lang: String,
    /// The second word (`test`, `config`…), empty when there is none.
    pub(crate) marker: String,
    /// The words after the marker.
    pub(crate) args: Vec<String>,
    /// The block's text, the fence's indentation removed, ending with a newline unless empty.
    pub(crate) text: String,
}

impl Block {
    /// `file:line`, for failure messages.
    pub(crate) fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }

    /// Whether the info string is exactly `lang marker …`.
    pub(crate) fn is(&self, lang: &str, marker: &str) -> bool {
        self.lang == lang && self.marker == marker
    }
}

/// Every fenced block of every document, in document order.
pub(crate) fn all_blocks() -> Vec<Block> {
    let root = repo();
    documents()
        .into_iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(root.join(&file))
                .unwrap_or_else(|err| panic!("cannot read {}: {err}", file.display()));
            blocks_of(&file, &text)
        })
        .collect()
}

/// The fenced blocks of one Markdown text (backtick or tilde fences, indented up to three spaces
/// or inside a list item, as CommonMark has them).
pub(crate) fn blocks_of(file: &Path, text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let Some((indent, fence, info)) = opening_fence(line) else { continue };
        let mut words = info.split_whitespace().map(str::to_owned);
        let lang = words.next().unwrap_or_default();
        let marker = words.next().unwrap_or_default();
        let args: Vec<String> = words.collect();
        let mut body = String::new();
        for (_, line) in lines.by_ref() {
            if is_closing_fence(line, &fence) {
                break;
            }
            // Remove at most the opening fence's indentation, as CommonMark does.
            let strip = line.len() - line.trim_start_matches(' ').len();
            body.push_str(&line[strip.min(indent)..]);
            body.push('\n');
        }
        blocks.push(Block {
            file: file.to_owned(),
            line: index + 1,
            lang,
            marker,
            args,
            text: body,
        });
    }
    blocks
}

/// `(indentation, fence, info string)` when `line` opens a fenced block.
fn opening_fence(line: &str) -> Option<(usize, String, &str)> {
    let trimmed = line.trim_start_matches(' ');
    let indent = line.len() - trimmed.len();
    let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let length = trimmed.chars().take_while(|c| *c == marker).count();
    if length < 3 {
        return None;
    }
    let fence: String = std::iter::repeat_n(marker, length).collect();
    let info = trimmed[length..].trim();
    // A backtick fence's info string may not contain a backtick (that is inline code).
    if marker == '`' && info.contains('`') {
        return None;
    }
    Some((indent, fence, info))
}

fn is_closing_fence(line: &str, fence: &str) -> bool {
    let trimmed = line.trim();
    let marker = fence.chars().next().unwrap_or('`');
    trimmed.len() >= fence.len() && trimmed.chars().all(|c| c == marker)
}

#[test]
fn fences_are_found_with_their_line_indentation_and_info() {
    let text = "# T\n\n```sh test bot\ncurl x\n```\n\n1. step\n\n   ```json config A=b\n   {}\n   ```\n\n````text\n```\n````\n";
    let blocks = blocks_of(Path::new("x.md"), text);
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    assert_eq!(
        (blocks[0].line, blocks[0].lang.as_str(), blocks[0].marker.as_str()),
        (3, "sh", "test")
    );
    assert_eq!(blocks[0].args, ["bot"]);
    assert_eq!(blocks[0].text, "curl x\n");
    assert_eq!((blocks[1].line, blocks[1].text.as_str()), (9, "{}\n"));
    assert_eq!(blocks[1].args, ["A=b"]);
    assert_eq!(blocks[2].text, "```\n", "a longer fence holds a shorter one");
}
