//! The real 8ball binary over stdio, as the host drives it.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

#[test]
fn the_binary_speaks_protocol_v1() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rosey-8ball"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, r#"{{"type":"init","protocol":1,"name":"8ball","config":{{}}}}"#).unwrap();
    writeln!(stdin, r#"{{"type":"event","id":1,"subject":"rosey.command.8ball","data":{{"channel":"c","user":"alice","command":"8ball","args":"will it work?","message":"!8ball will it work?","time":1}}}}"#).unwrap();
    writeln!(stdin, r#"{{"type":"ping","id":2}}"#).unwrap();
    writeln!(stdin, r#"{{"type":"shutdown"}}"#).unwrap();
    let lines: Vec<serde_json::Value> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert!(child.wait().unwrap().success());
    assert_eq!(lines[0]["type"], "ready");
    assert_eq!(lines[0]["version"], env!("CARGO_PKG_VERSION"));
    let reply = lines[1]["message"].as_str().unwrap();
    assert!(reply.starts_with("🎱 \"will it work?\" — "), "{reply}");
    assert_eq!(lines[2], serde_json::json!({"type": "done", "id": 1}));
    assert_eq!(lines[3], serde_json::json!({"type": "pong", "id": 2}));
}
