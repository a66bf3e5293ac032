//! The example does what its doc says: `!hello` typed on the console is answered by the plugin.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

#[test]
fn hello_typed_on_the_console_is_answered_and_ctrl_c_stops_it() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rosey-example-embedding"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("ready") {
        line.clear();
        assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "exited before it was ready");
    }
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "!hello\nbob: !hello").unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for expected in
        ["rosey: 👋 Hello, console! (greeting #1)", "rosey: 👋 Hello, bob! (greeting #2)"]
    {
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), expected);
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "a clean exit on Ctrl-C");
}
