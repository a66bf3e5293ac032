//! The real quotes binary over stdio, with the test playing the host: it sends events and answers
//! the plugin's key-value requests from an in-memory store that speaks the host's wire protocol.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use serde_json::{Value, json};

/// How long the plugin may take to say its next line before the test fails (instead of hanging).
const PATIENCE: Duration = Duration::from_secs(5);
/// The simulated host pages listings by at most this many keys (the real one by up to 1000), so
/// every listing of a few quotes takes several pages.
const HOST_PAGE: usize = 3;
const MAX_KEY_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 65_536;
const MAX_KEYS: usize = 10_000;

/// The key-value store as the host's `KvService` answers it: keys scoped by plugin name.
#[derive(Default)]
struct Store {
    entries: BTreeMap<(String, String), Value>,
    unavailable: bool,
    lists: usize,
}

fn refusal(code: &str, error: &str) -> Value {
    json!({"error": error, "code": code})
}

impl Store {
    /// The reply to one request whose data the host has already stamped with `plugin`.
    fn answer(&mut self, subject: &str, data: &Value) -> Value {
        if self.unavailable {
            return refusal("unavailable", "storage unavailable");
        }
        let plugin = data["plugin"].as_str().unwrap().to_owned();
        let operation = subject.strip_prefix("rosey.db.kv.").unwrap_or_default();
        if operation == "list" {
            return self.list(&plugin, data);
        }
        let Some(key) = data.get("key").and_then(Value::as_str) else {
            return refusal("bad_request", "\"key\" must be a string");
        };
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return refusal("key_too_long", "keys are 1 to 256 bytes");
        }
        let id = (plugin.clone(), key.to_owned());
        match operation {
            "get" => match self.entries.get(&id) {
                Some(value) => {
                    json!({"found": true, "value": value, "updated_at": 1_795_343_000.5})
                }
                None => json!({"found": false}),
            },
            "set" => {
                let Some(value) = data.get("value") else {
                    return refusal("bad_request", "\"value\" is missing");
                };
                if value.to_string().len() > MAX_VALUE_BYTES {
                    return refusal("value_too_large", "values are at most 65536 bytes of JSON");
                }
                let owned = self.entries.keys().filter(|(p, _)| *p == plugin).count();
                if !self.entries.contains_key(&id) && owned >= MAX_KEYS {
                    return refusal("too_many_keys", "the plugin has 10000 keys already");
                }
                self.entries.insert(id, value.clone());
                json!({"ok": true})
            }
            "delete" => json!({"deleted": self.entries.remove(&id).is_some()}),
            _ => refusal("bad_request", "unknown operation"),
        }
    }

    fn list(&mut self, plugin: &str, data: &Value) -> Value {
        self.lists += 1;
        let prefix = data.get("prefix").and_then(Value::as_str).unwrap_or_default();
        let after = data.get("after").and_then(Value::as_str);
        let limit = match data.get("limit") {
            None => 100,
            Some(limit) => match limit.as_u64() {
                Some(limit @ 1..=1000) => limit as usize,
                _ => return refusal("bad_request", "limit must be 1 to 1000"),
            },
        };
        let limit = limit.min(HOST_PAGE);
        let keys: Vec<&str> = self
            .entries
            .keys()
            .filter(|(p, k)| {
                p == plugin && k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a)
            })
            .map(|(_, k)| k.as_str())
            .take(limit)
            .collect();
        let next = if keys.len() == limit { keys.last().copied() } else { None };
        json!({"keys": keys, "next": next})
    }
}

/// The plugin process and the host's side of its pipes.
struct Host {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    store: Store,
    next_event: u64,
    /// When set, the host pings the plugin before answering each request and expects the pong
    /// at once.
    ping_while_waiting: bool,
}

impl Host {
    fn start(store: Store) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rosey-quotes"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                if tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        let mut host =
            Self { child, stdin, lines, store, next_event: 1, ping_while_waiting: false };
        host.send(json!({"type": "init", "protocol": 1, "name": "quotes", "config": {}}));
        let ready = host.next();
        assert_eq!(
            (ready["type"].as_str(), ready["name"].as_str()),
            (Some("ready"), Some("quotes"))
        );
        assert_eq!(ready["commands"], json!(["quote"]));
        host
    }

    fn send(&mut self, message: Value) {
        writeln!(self.stdin, "{message}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn next(&mut self) -> Value {
        let line = self.lines.recv_timeout(PATIENCE).expect("the plugin said nothing in time");
        serde_json::from_str(&line).unwrap()
    }

    /// `user` says `!quote <args>`; the plugin's replies, its requests answered on the way.
    fn say(&mut self, user: &str, args: &str) -> Vec<String> {
        let id = self.next_event;
        self.next_event += 1;
        let message = format!("!quote {args}");
        self.send(json!({"type": "event", "id": id, "subject": "rosey.command.quote", "data": {
            "channel": "lobby", "user": user, "rank": 1, "command": "quote", "args": args,
            "message": message, "time": 1_795_343_000_123_i64}}));
        let mut replies = Vec::new();
        loop {
            let message = self.next();
            match message["type"].as_str().unwrap() {
                "request" => self.answer(&message),
                "reply" => {
                    assert_eq!(message["id"], id);
                    replies.push(message["message"].as_str().unwrap().to_owned());
                }
                "done" => {
                    assert_eq!(message, json!({"type": "done", "id": id}));
                    return replies;
                }
                "log" => {}
                other => panic!("unexpected {other}: {message}"),
            }
        }
    }

    /// Answers a request as the host's plugin slot does: the plugin's name stamped into the data,
    /// a refusal turned into an `error` response that still carries the whole answer.
    fn answer(&mut self, request: &Value) {
        if self.ping_while_waiting {
            let ping = 1000 + request["id"].as_u64().unwrap();
            self.send(json!({"type": "ping", "id": ping}));
            assert_eq!(self.next(), json!({"type": "pong", "id": ping}), "pong while waiting");
        }
        let mut data = request["data"].clone();
        data["plugin"] = json!("quotes");
        let reply = self.store.answer(request["subject"].as_str().unwrap(), &data);
        let id = &request["id"];
        let response = match reply.get("error").and_then(Value::as_str) {
            Some(error) => json!({"type": "response", "id": id, "error": error, "data": reply}),
            None => json!({"type": "response", "id": id, "data": reply}),
        };
        self.send(response);
    }

    /// Sends `shutdown`, checks the plugin exits cleanly, and hands back the store.
    fn stop(mut self) -> Store {
        self.send(json!({"type": "shutdown"}));
        assert!(self.child.wait().unwrap().success());
        std::mem::take(&mut self.store)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_added_quote_is_stored_with_its_author_and_shown_by_number() {
    let mut host = Host::start(Store::default());
    assert_eq!(host.say("alice", "add Hello, world"), ["✅ Saved quote #1"]);
    assert_eq!(host.say("bob", "add   second  one "), ["✅ Saved quote #2"]);
    let stored = &host.store.entries[&("quotes".to_owned(), "quote:00000001".to_owned())];
    assert_eq!(stored, &json!({"text": "Hello, world", "by": "alice", "at": 1_795_343_000}));
    assert_eq!(host.say("carol", "1"), ["💬 #1: \"Hello, world\" — added by alice"]);
    assert_eq!(host.say("carol", "#2"), ["💬 #2: \"second  one\" — added by bob"]);
    assert_eq!(host.say("carol", "99"), ["❌ No quote #99"]);
    assert_eq!(host.say("carol", "add"), ["❌ Usage: !quote add <text>"]);
    let long = format!("add {}", "a".repeat(301));
    assert_eq!(
        host.say("carol", &long),
        ["❌ A quote can be at most 300 characters (this one has 301)"]
    );
    assert!(host.say("carol", "dance")[0].starts_with("❌ Usage: !quote, !quote <n>, !quote add"));
}

#[test]
fn quotes_survive_a_restart_of_the_plugin() {
    let mut host = Host::start(Store::default());
    assert_eq!(host.say("alice", "add remember me"), ["✅ Saved quote #1"]);
    let mut host = Host::start(host.stop());
    assert_eq!(host.say("bob", ""), ["💬 #1: \"remember me\" — added by alice"]);
    assert_eq!(host.say("bob", "add and me"), ["✅ Saved quote #2"]);
}

#[test]
fn a_random_quote_comes_from_every_page_and_none_is_said_plainly() {
    // Another plugin's keys are not this plugin's quotes: the host scopes by the stamped name.
    let mut store = Store::default();
    store.entries.insert(("8ball".into(), "quote:00000001".into()), json!({"text": "not mine"}));
    let mut host = Host::start(store);
    assert_eq!(host.say("alice", ""), ["❌ No quotes yet — add one with !quote add <text>"]);
    for n in 1..=7 {
        assert_eq!(host.say("alice", &format!("add number {n}")), [format!("✅ Saved quote #{n}")]);
    }
    let lists_before = host.store.lists;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let reply = host.say("bob", "").remove(0);
        let n: u64 =
            reply.strip_prefix("💬 #").unwrap().split(':').next().unwrap().parse().unwrap();
        assert_eq!(reply, format!("💬 #{n}: \"number {n}\" — added by alice"));
        seen.insert(n);
    }
    assert_eq!(seen.len(), 7, "every quote, from every page of the listing, comes up: {seen:?}");
    assert!(host.store.lists - lists_before >= 200 * 3, "7 keys by pages of 3 is 3 pages each");
}

#[test]
fn a_search_shows_three_matches_oldest_first_and_counts_the_rest() {
    let mut host = Host::start(Store::default());
    for text in ["The cat sat", "a dog", "CATS rule", "concatenate", "no match", "bobcat", "Cat!"] {
        host.say("alice", &format!("add {text}"));
    }
    assert_eq!(
        host.say("bob", "search cAt"),
        [
            "💬 #1: \"The cat sat\" — added by alice",
            "💬 #3: \"CATS rule\" — added by alice",
            "💬 #4: \"concatenate\" — added by alice",
            "… and 2 more",
        ]
    );
    assert_eq!(host.say("bob", "search dog"), ["💬 #2: \"a dog\" — added by alice"]);
    assert_eq!(host.say("bob", "search horse"), ["❌ No quote matches \"horse\""]);
}

#[test]
fn only_whoever_added_a_quote_can_delete_it() {
    let mut host = Host::start(Store::default());
    assert_eq!(host.say("Alice", "add mine"), ["✅ Saved quote #1"]);
    assert_eq!(host.say("bob", "del 1"), ["❌ Only Alice can delete quote #1"]);
    assert_eq!(host.say("bob", "1"), ["💬 #1: \"mine\" — added by Alice"]);
    assert_eq!(host.say("alice", "del #1"), ["🗑️ Deleted quote #1"]);
    assert_eq!(host.say("alice", "1"), ["❌ No quote #1"]);
    assert_eq!(host.say("alice", "del 1"), ["❌ No quote #1"]);
    assert_eq!(host.say("alice", "add next"), ["✅ Saved quote #2"], "numbers are not reused");
}

#[test]
fn storage_trouble_is_an_answer_and_the_plugin_carries_on() {
    let mut host = Host::start(Store::default());
    host.store.unavailable = true;
    let trouble = ["❌ Quotes are unavailable right now (storage unavailable)"];
    assert_eq!(host.say("alice", "add lost?"), trouble);
    assert_eq!(host.say("alice", ""), trouble);
    assert_eq!(host.say("alice", "search x"), trouble);
    host.store.unavailable = false;
    assert_eq!(host.say("alice", "add kept"), ["✅ Saved quote #1"]);
}

#[test]
fn pings_are_answered_while_the_plugin_waits_for_the_store() {
    let mut host = Host::start(Store::default());
    host.ping_while_waiting = true;
    assert_eq!(host.say("alice", "add while pinged"), ["✅ Saved quote #1"]);
    assert_eq!(host.say("alice", "search pinged"), ["💬 #1: \"while pinged\" — added by alice"]);
    host.stop();
}
