//! A raw socket.io test client and the fixture replayer.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rosey_testkit::{ChannelHandle, FakeCytube};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for one frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// A raw websocket speaking socket.io by hand, like the recorder did.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Answer `2` with `3` and skip it (default true).
    pub auto_pong: bool,
}

impl Client {
    /// Opens the websocket (the `0{..}` open packet is left unread).
    pub async fn open(server: &FakeCytube) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await.unwrap();
        Client { ws, auto_pong: true }
    }

    /// Opens, answers the open packet with `40` and reads `40{sid}` + `rank -1`.
    pub async fn connected(server: &FakeCytube) -> Client {
        let mut c = Client::open(server).await;
        assert!(c.recv().await.starts_with("0{"));
        c.send("40").await;
        assert!(c.recv().await.starts_with("40{\"sid\":"));
        assert_eq!(c.recv().await, r#"42["rank",-1]"#);
        c
    }

    pub async fn send(&mut self, frame: &str) {
        self.ws.send(Message::text(frame)).await.unwrap();
    }

    /// The next websocket message (`None` when the stream ended), panicking after
    /// `FRAME_TIMEOUT`.
    pub async fn next_message(&mut self) -> Option<Result<Message, String>> {
        match tokio::time::timeout(FRAME_TIMEOUT, self.ws.next()).await {
            Ok(m) => m.map(|r| r.map_err(|e| e.to_string())),
            Err(_) => panic!("no frame within {FRAME_TIMEOUT:?}"),
        }
    }

    /// The next text frame (pings answered and skipped when `auto_pong`).
    pub async fn recv(&mut self) -> String {
        loop {
            match self.next_message().await {
                Some(Ok(Message::Text(t))) => {
                    if self.auto_pong && t.as_str() == "2" {
                        self.send("3").await;
                        continue;
                    }
                    return t.as_str().to_owned();
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next text frame that is not a `usercount`.
    pub async fn recv_frame(&mut self) -> String {
        loop {
            let f = self.recv().await;
            if !f.starts_with(r#"42["usercount","#) {
                return f;
            }
        }
    }

    /// Sends a close frame and drops the socket.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The recorded CyTube frames, `rosey-testkit/fixtures/cytube/` in this repository.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/cytube")
}

/// One recorded line.
#[derive(Debug, Clone)]
pub struct Rec {
    pub t: u64,
    pub conn: String,
    pub dir: String,
    pub frame: String,
    pub peer: bool,
}

fn read(file: &str, peer: bool) -> Vec<Rec> {
    let Ok(text) = std::fs::read_to_string(fixtures().join(file)) else { return Vec::new() };
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Rec {
                t: v["t_ms"].as_u64().unwrap(),
                conn: v["conn"].as_str().unwrap().to_owned(),
                dir: v["dir"].as_str().unwrap().to_owned(),
                frame: v["frame"].as_str().unwrap().to_owned(),
                peer,
            }
        })
        .collect()
}

/// A scenario and its peers on one timeline; on equal times peers go first (a peer's
/// action is what the bot's frame at the same millisecond answers).
pub fn scenario(name: &str) -> Vec<Rec> {
    let mut recs = read(&format!("{name}.jsonl"), false);
    assert!(!recs.is_empty(), "fixture {name}.jsonl missing");
    recs.extend(read(&format!("{name}.peers.jsonl"), true));
    recs.sort_by_key(|r| (r.t, !r.peer));
    recs
}

/// The `42` event name of a frame.
pub fn event_name(frame: &str) -> Option<String> {
    let v: Value = serde_json::from_str(frame.strip_prefix("42")?).ok()?;
    v.get(0)?.as_str().map(str::to_owned)
}

/// The `42` event argument of a frame.
pub fn event_arg(frame: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(frame.strip_prefix("42")?).ok()?;
    v.get(1).cloned()
}

/// Blanks what legitimately differs between runs: sids, times, and what moderators
/// see of a user's addresses and aliases.
pub fn normalize(frame: &str) -> String {
    let mut s = frame.to_owned();
    for (start, stop) in [
        (r#""sid":""#, '"'),
        (r#""ip":""#, '"'),
        (r#""aliases":["#, ']'),
        ("(aliases: ", ')'),
        (r#""time":"#, ','),
    ] {
        let mut out = String::new();
        let mut rest = s.as_str();
        while let Some(i) = rest.find(start) {
            out.push_str(&rest[..i + start.len()]);
            rest = &rest[i + start.len()..];
            let end = if start == r#""time":"# {
                rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())
            } else {
                rest.find(stop).unwrap_or(rest.len())
            };
            out.push('*');
            rest = &rest[end..];
        }
        out.push_str(rest);
        s = out;
    }
    s
}

/// What a replay needs to know beyond the recording.
pub struct Replay<'a> {
    pub server: &'a FakeCytube,
    pub channel: ChannelHandle,
    /// The recorded client connections to replay (others, like `cl1`, are skipped).
    pub conns: &'a [&'a str],
    /// Stop before this scenario time.
    pub until_ms: u64,
    /// Keep the recorded pace (for scenarios about rate limits).
    pub timed: bool,
}

/// The replay's progress: one client per recorded connection.
struct Run {
    clients: HashMap<String, Client>,
    expected: HashMap<String, Vec<String>>,
    got: HashMap<String, Vec<String>>,
}

impl Run {
    /// Reads every connection's frames up to what the recording shows so far and
    /// compares them, normalized, with the recorded ones.
    async fn flush(&mut self) {
        for (conn, client) in &mut self.clients {
            let expected = self.expected.entry(conn.clone()).or_default();
            let got = self.got.entry(conn.clone()).or_default();
            while got.len() < expected.len() {
                let frame = normalize(&client.recv_frame().await);
                let want = &expected[got.len()];
                assert_eq!(
                    &frame,
                    want,
                    "{conn}: frame {} differs; got so far {got:#?}",
                    got.len()
                );
                got.push(frame);
            }
        }
    }
}

impl Replay<'_> {
    /// Replays the scenario: the chosen connections' `out` frames are sent, the peers'
    /// actions are applied through the channel handle, and every `in` frame (except
    /// `usercount` and pings) must arrive, in order, equal after `normalize`.
    pub async fn run(&self, name: &str) {
        let mut last_t = 0;
        let mut run =
            Run { clients: HashMap::new(), expected: HashMap::new(), got: HashMap::new() };
        let mut peer_names: HashMap<String, String> = HashMap::new();
        for rec in scenario(name).into_iter().filter(|r| r.t < self.until_ms) {
            if self.timed {
                // Relative pauses: a late wake-up never shortens the next gap.
                tokio::time::sleep(Duration::from_millis(rec.t.saturating_sub(last_t))).await;
                last_t = rec.t;
            }
            if rec.peer {
                self.peer_action(&mut run, &mut peer_names, &rec).await;
                continue;
            }
            if !self.conns.contains(&rec.conn.as_str()) {
                continue;
            }
            match (rec.dir.as_str(), rec.frame.as_str()) {
                ("ws", "open") => {
                    run.flush().await;
                    run.clients.insert(rec.conn.clone(), Client::open(self.server).await);
                }
                ("ws", _) => {
                    run.flush().await;
                    if let Some(c) = run.clients.remove(&rec.conn) {
                        c.close().await;
                    }
                }
                ("out", "3") => {}
                ("out", frame) => {
                    run.flush().await;
                    run.clients.get_mut(&rec.conn).unwrap().send(frame).await;
                }
                ("in", "2") => {}
                ("in", frame) if event_name(frame).as_deref() == Some("usercount") => {}
                ("in", frame) => {
                    run.expected.entry(rec.conn.clone()).or_default().push(normalize(frame))
                }
                other => panic!("unexpected record {other:?}"),
            }
        }
        run.flush().await;
        for (conn, client) in run.clients.drain() {
            tracing::debug!(conn, "replay done");
            client.close().await;
        }
    }

    async fn peer_action(&self, run: &mut Run, names: &mut HashMap<String, String>, rec: &Rec) {
        let ch = &self.channel;
        if rec.dir == "ws" && rec.frame != "open" {
            if let Some(name) = names.remove(&rec.conn) {
                run.flush().await;
                ch.leave_peer(&name);
            }
            return;
        }
        if rec.dir != "out" {
            return;
        }
        let (Some(event), Some(arg)) = (event_name(&rec.frame), event_arg(&rec.frame)) else {
            return;
        };
        let s = |k: &str| arg.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let peer = names.get(&rec.conn).cloned().unwrap_or_default();
        run.flush().await;
        match event.as_str() {
            "login" => {
                // The only peer logging in with a password is the channel owner.
                let rank = if arg.get("pw").is_some() { 5.0 } else { 0.0 };
                ch.join_peer(&s("name"), rank);
                names.insert(rec.conn.clone(), s("name"));
            }
            "chatMsg" => ch.say(&peer, &s("msg")),
            "pm" => ch.pm(&peer, &s("to"), &s("msg")),
            "setOptions" => {
                if let Some(pw) = arg.get("password").and_then(Value::as_str) {
                    ch.set_password(Some(pw).filter(|p| !p.is_empty()));
                }
                if let Some(on) = arg.get("chat_antiflood").and_then(Value::as_bool) {
                    ch.set_antiflood(on.then_some((4, 1.0, 4)));
                }
            }
            _ => {}
        }
    }
}
