//! Reading the recorded frames in `fixtures/cytube/` (their README says how they were recorded).

use std::collections::VecDeque;
use std::path::PathBuf;

/// The folder of the recorded CyTube frames.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/cytube")
}

/// One line alice typed in a recorded scenario, and what CyTube broadcast of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedLine {
    /// `chatMsg` or `pm`.
    pub event: String,
    /// Her `msg` as she sent it.
    pub typed: String,
    /// The `msg` of her own echo: what every other user received.
    pub received: String,
}

/// Every chat line and PM alice typed in `<scenario>.peers.jsonl`, paired with its echo; a line the
/// flood limiter dropped (answered with `cooldown`) is left out.
///
/// # Panics
/// When the file is missing or unreadable, or an echo comes with nothing typed before it.
pub fn typed_and_received(scenario: &str) -> Vec<TypedLine> {
    let path = fixtures_dir().join(format!("{scenario}.peers.jsonl"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut typed: VecDeque<(String, String)> = VecDeque::new();
    let mut lines = Vec::new();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let frame = record["frame"].as_str().unwrap_or_default();
        let Some(event) = frame.strip_prefix("42") else { continue };
        if record["conn"] != "alice" {
            continue;
        }
        let event: serde_json::Value = serde_json::from_str(event).expect("a socket.io event");
        let (name, arg) = (event[0].as_str().unwrap_or_default(), &event[1]);
        let msg = arg["msg"].as_str().unwrap_or_default().to_owned();
        match (record["dir"].as_str(), name) {
            // The flood limiter dropped the oldest line not yet echoed (a `/me` counts twice).
            (Some("in"), "cooldown") => {
                typed.pop_front();
            }
            (Some("out"), "chatMsg" | "pm") => typed.push_back((name.to_owned(), msg)),
            (Some("in"), "chatMsg" | "pm") if arg["username"] == "alice" => {
                let (event, typed) = typed.pop_front().expect("an echo follows what was typed");
                lines.push(TypedLine { event, typed, received: msg });
            }
            _ => {}
        }
    }
    assert!(typed.is_empty(), "every line was echoed: {typed:?}");
    lines
}
