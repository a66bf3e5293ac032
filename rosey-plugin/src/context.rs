//! What a handler may do while it handles an event: ask the host (the key-value store), publish on
//! the bus, log.
//!
//! Handlers registered with [`Plugin::command_with`](crate::Plugin::command_with) or
//! [`Plugin::on_event_with`](crate::Plugin::on_event_with) get a [`Context`] next to the event:
//!
//! ```no_run
//! use rosey_plugin::{Plugin, Response};
//!
//! fn main() -> std::process::ExitCode {
//!     Plugin::new("counter", "1.0.0")
//!         .command_with("count", |cmd, ctx| {
//!             let key = format!("count:{}", cmd.user.to_lowercase());
//!             let mut kv = ctx.kv();
//!             let seen = kv.get_as::<u64>(&key).map_err(|e| e.to_string())?.unwrap_or(0) + 1;
//!             kv.set(&key, &seen).map_err(|e| e.to_string())?;
//!             ctx.log("debug", &format!("{} counted {seen} times", cmd.user));
//!             Ok(Response::reply(format!("🔢 {}, that is {seen}", cmd.user)))
//!         })
//!         .run()
//! }
//! ```
//!
//! The SDK is synchronous and runs one handler at a time. A request writes a protocol `request`,
//! flushes, and reads the host's lines until the `response` with its id. Meanwhile a `ping` is
//! answered at once (health checks pass while a handler waits), an `event` is queued and handled
//! after the current handler returns (in arrival order, before more input is read), a `shutdown`
//! makes the request fail with [`KvError::ShuttingDown`] and the plugin exit once the handler
//! returns, and end of input fails it with [`KvError::HostGone`]. Responses to other ids are ignored
//! and malformed lines skipped, as between events.

use std::collections::VecDeque;
use std::io::{self, BufRead, Write};

use serde::Serialize;
use serde_json::Value;

use crate::framing::{Framed, LineFramer};
use crate::kv::{Kv, KvError};
use crate::protocol::{Decoded, HostMessage, MAX_LINE_BYTES, PluginMessage};

/// The handler's line to the host for the event in hand; see the [module docs](self).
pub struct Context<'a> {
    host: &'a mut (dyn Host + 'a),
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl<'a> Context<'a> {
    pub(crate) fn new(host: &'a mut (dyn Host + 'a)) -> Self {
        Self { host }
    }

    /// The plugin's key-value store (its own keys only: the host scopes every request by the
    /// plugin's name).
    pub fn kv(&mut self) -> Kv<'_> {
        Kv::new(&mut *self.host)
    }

    /// Publishes `data` on the bus under `subject` (protocol `publish`; see docs/PROTOCOL.md for the
    /// subjects a plugin may use: a refused one is answered by an `error` message the SDK logs to
    /// stderr). Fails when `data` cannot be serialized or the host's pipe is closed.
    pub fn publish(&mut self, subject: &str, data: &impl Serialize) -> io::Result<()> {
        let data = serde_json::to_value(data)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        self.host.send(&PluginMessage::Publish { subject: subject.to_owned(), data })
    }

    /// Logs `message` through the host under the plugin's name (`level`: error, warn, info, debug
    /// or trace). Best effort: if the host is gone, the SDK finds out when it next writes.
    pub fn log(&mut self, level: &str, message: &str) {
        let line = PluginMessage::Log { level: level.to_owned(), message: message.to_owned() };
        // Ignored on purpose: a closed pipe fails the event's `done` write right after.
        let _ = self.host.send(&line);
    }
}

/// What a [`Context`] needs of the connection (object-safe, so handlers are not generic over I/O).
pub(crate) trait Host {
    /// Writes one message and flushes.
    fn send(&mut self, message: &PluginMessage) -> io::Result<()>;
    /// Sends a request and waits for its response.
    fn request(&mut self, subject: &str, data: Value) -> Result<Value, KvError>;
}

/// The SDK's side of the conversation with the host: the framed input, the output, events that
/// arrived while a handler waited, and whether the host asked us to stop.
pub(crate) struct Link<'io> {
    input: &'io mut dyn BufRead,
    pub(crate) output: &'io mut dyn Write,
    framer: LineFramer,
    queued: VecDeque<HostMessage>,
    shutdown: bool,
    next_request_id: u64,
}

impl<'io> Link<'io> {
    pub(crate) fn new(
        input: &'io mut dyn BufRead,
        output: &'io mut dyn Write,
        next_request_id: u64,
    ) -> Self {
        Self {
            input,
            output,
            framer: LineFramer::new(MAX_LINE_BYTES),
            queued: VecDeque::new(),
            shutdown: false,
            next_request_id,
        }
    }

    /// The id the next request would use (kept by the plugin across `serve` calls).
    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_request_id
    }

    /// Whether the host sent `shutdown` while a handler waited.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutdown
    }

    /// The next message to handle: a queued event first, else the next line of input; `None` at end
    /// of input. Oversize, malformed and unknown lines are skipped (the first two with a `log`).
    pub(crate) fn next_message(&mut self) -> io::Result<Option<HostMessage>> {
        if let Some(message) = self.queued.pop_front() {
            return Ok(Some(message));
        }
        self.read_message()
    }

    fn read_message(&mut self) -> io::Result<Option<HostMessage>> {
        loop {
            let warning = match read_line(&mut *self.input, &mut self.framer)? {
                None => return Ok(None),
                Some(Framed::TooLong(n)) => format!("skipped a {n}-byte line over the limit"),
                Some(Framed::Line) => match HostMessage::decode(self.framer.line()) {
                    Ok(Decoded::Message(message)) => return Ok(Some(message)),
                    Ok(Decoded::Unknown(_)) => continue,
                    Err(err) => format!("skipped a bad line: {err}"),
                },
            };
            crate::sdk::log(&mut self.output, "warn", &warning)?;
            self.output.flush()?;
        }
    }
}

impl Host for Link<'_> {
    fn send(&mut self, message: &PluginMessage) -> io::Result<()> {
        self.output.write_all(&message.to_line())?;
        self.output.flush()
    }

    fn request(&mut self, subject: &str, data: Value) -> Result<Value, KvError> {
        if self.shutdown {
            return Err(KvError::ShuttingDown);
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.send(&PluginMessage::Request { id, subject: subject.to_owned(), data })?;
        loop {
            match self.read_message()? {
                None => return Err(KvError::HostGone),
                Some(HostMessage::Response { id: answered, data, error }) if answered == id => {
                    return match error {
                        Some(message) => Err(KvError::refused(message, data.as_ref())),
                        None => Ok(data.unwrap_or(Value::Null)),
                    };
                }
                Some(HostMessage::Ping { id }) => self.send(&PluginMessage::Pong { id })?,
                Some(event @ HostMessage::Event { .. }) => self.queued.push_back(event),
                Some(HostMessage::Shutdown {}) => {
                    self.shutdown = true;
                    return Err(KvError::ShuttingDown);
                }
                Some(HostMessage::Error { message }) => eprintln!("host refused: {message}"),
                // A late answer to a request given up on, or an `init` out of turn.
                Some(HostMessage::Response { .. } | HostMessage::Init { .. }) => {}
            }
        }
    }
}

/// Reads one framed line from a blocking reader; `None` at end of input.
fn read_line(input: &mut dyn BufRead, framer: &mut LineFramer) -> io::Result<Option<Framed>> {
    loop {
        let available = match input.fill_buf() {
            Ok(available) => available,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if available.is_empty() {
            return Ok(framer.finish());
        }
        let (used, framed) = framer.feed(available);
        input.consume(used);
        if framed.is_some() {
            return Ok(framed);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use crate::sdk::tests::{event, talk};
    use crate::{KvError, Plugin, Response};

    /// A plugin whose `!count` reads a counter, answers what it got, and stores it plus one.
    fn counter() -> Plugin {
        Plugin::new("counter", "1.0.0")
            .command_with("count", |_, ctx| {
                let mut kv = ctx.kv();
                let seen = kv.get_as::<u64>("n").map_err(|e| format!("get: {e}"))?;
                let seen = seen.unwrap_or(0);
                kv.set("n", &(seen + 1)).map_err(|e| format!("set: {e}"))?;
                Ok(Response::reply(format!("seen {seen}")))
            })
            .command("echo", |cmd| Ok(Response::reply(cmd.args.to_owned())))
    }

    fn response(id: u64, data: Value) -> String {
        serde_json::json!({"type": "response", "id": id, "data": data}).to_string()
    }

    #[test]
    fn a_handler_reads_and_writes_the_store_through_requests() {
        let input = [
            event(1, "count", ""),
            response(1, serde_json::json!({"found": true, "value": 41, "updated_at": 1.5})),
            response(2, serde_json::json!({"ok": true})),
            event(2, "count", ""),
            response(3, serde_json::json!({"found": false})),
            response(4, serde_json::json!({"ok": true})),
        ];
        let out = talk(&mut counter(), &(input.join("\n") + "\n"));
        assert_eq!(
            out[0],
            serde_json::json!({"type": "request", "id": 1, "subject": "rosey.db.kv.get", "data": {"key": "n"}})
        );
        assert_eq!(
            out[1],
            serde_json::json!({"type": "request", "id": 2, "subject": "rosey.db.kv.set", "data": {"key": "n", "value": 42}})
        );
        assert_eq!(out[2], serde_json::json!({"type": "reply", "id": 1, "message": "seen 41"}));
        assert_eq!(out[3], serde_json::json!({"type": "done", "id": 1}));
        assert_eq!((out[4]["id"].as_u64(), out[5]["data"]["value"].as_u64()), (Some(3), Some(1)));
        assert_eq!(out[6]["message"], "seen 0");
        assert_eq!(out.len(), 8);
    }

    #[test]
    fn a_ping_is_answered_while_a_handler_waits_and_events_wait_their_turn() {
        let input = [
            event(1, "count", ""),
            r#"{"type":"ping","id":70}"#.to_owned(),
            event(2, "echo", "second"),
            "garbage".to_owned(),
            response(99, serde_json::json!({"found": true, "value": 5})),
            event(3, "echo", "third"),
            response(1, serde_json::json!({"found": false})),
            response(2, serde_json::json!({"ok": true})),
            r#"{"type":"ping","id":71}"#.to_owned(),
        ];
        let out = talk(&mut counter(), &(input.join("\n") + "\n"));
        let kinds: Vec<String> =
            out.iter().map(|m| format!("{} {}", m["type"].as_str().unwrap(), m["id"])).collect();
        assert_eq!(
            kinds,
            [
                "request 1",
                "pong 70",
                "log null",
                "request 2",
                "reply 1",
                "done 1",
                "reply 2",
                "done 2",
                "reply 3",
                "done 3",
                "pong 71"
            ],
            "the pong comes at once, the answer to another id is ignored, queued events run in order"
        );
        assert_eq!(out[4]["message"], "seen 0");
        assert_eq!(
            (out[6]["message"].as_str(), out[8]["message"].as_str()),
            (Some("second"), Some("third"))
        );
    }

    #[test]
    fn a_refusal_reaches_the_handler_with_its_code() {
        let plugin = Plugin::new("p", "1").command_with("put", |cmd, ctx| {
            match ctx.kv().set(cmd.args, &"v") {
                Err(KvError::Refused { code, message }) => {
                    Ok(Response::reply(format!("{} / {message}", code.as_str())))
                }
                other => Err(format!("unexpected {other:?}")),
            }
        });
        let refusal = serde_json::json!({
            "type": "response", "id": 1, "error": "key is over 256 bytes",
            "data": {"error": "key is over 256 bytes", "code": "key_too_long"}
        });
        let out = talk(&mut { plugin }, &format!("{}\n{refusal}\n", event(1, "put", "k")));
        assert_eq!(out[1]["message"], "key_too_long / key is over 256 bytes");
        assert_eq!(out[2], serde_json::json!({"type": "done", "id": 1}));
    }

    #[test]
    fn shutdown_while_waiting_fails_the_request_and_ends_serving_after_the_handler() {
        let input = [
            event(1, "count", ""),
            event(2, "echo", "never"),
            r#"{"type":"shutdown"}"#.to_owned(),
            response(1, serde_json::json!({"found": false})),
        ];
        let out = talk(&mut counter(), &(input.join("\n") + "\n"));
        assert_eq!(out[0]["type"], "request");
        assert_eq!(
            out[1],
            serde_json::json!({"type": "done", "id": 1, "error": "get: the plugin is shutting down"})
        );
        assert_eq!(out.len(), 2, "nothing after the shutdown: {out:?}");
    }

    #[test]
    fn end_of_input_while_waiting_is_host_gone() {
        let out = talk(&mut counter(), &format!("{}\n", event(1, "count", "")));
        assert_eq!(out[1]["error"], "get: the host went away before answering");
    }

    #[test]
    fn keys_follow_the_pages_and_a_stuck_cursor_is_an_error() {
        let plugin = || {
            Plugin::new("p", "1").command_with("keys", |_, ctx| {
                let keys = ctx.kv().keys("q:").map_err(|e| e.to_string())?;
                Ok(Response::reply(keys.join(",")))
            })
        };
        let pages = [
            event(1, "keys", ""),
            response(1, serde_json::json!({"keys": ["q:1", "q:2"], "next": "q:2"})),
            response(2, serde_json::json!({"keys": ["q:3"], "next": null})),
        ];
        let out = talk(&mut plugin(), &(pages.join("\n") + "\n"));
        assert_eq!(out[0]["data"], serde_json::json!({"prefix": "q:", "limit": 1000}));
        assert_eq!(
            out[1]["data"],
            serde_json::json!({"prefix": "q:", "after": "q:2", "limit": 1000})
        );
        assert_eq!(out[2]["message"], "q:1,q:2,q:3");
        let stuck = [
            event(1, "keys", ""),
            response(1, serde_json::json!({"keys": ["q:1"], "next": "q:1"})),
            response(2, serde_json::json!({"keys": ["q:1"], "next": "q:1"})),
        ];
        let out = talk(&mut plugin(), &(stuck.join("\n") + "\n"));
        assert!(out[2]["error"].as_str().unwrap().contains("cursor"), "{out:?}");
    }

    #[test]
    fn a_malformed_answer_is_a_decode_error_and_ids_keep_growing_across_serves() {
        let mut plugin = counter();
        let out = talk(
            &mut plugin,
            &format!(
                "{}\n{}\n",
                event(1, "count", ""),
                response(1, serde_json::json!({"what": 1}))
            ),
        );
        assert_eq!(out[1]["error"], r#"get: unexpected answer to rosey.db.kv.get: {"what":1}"#);
        let out = talk(&mut plugin, &format!("{}\n", event(2, "count", "")));
        assert_eq!(out[0]["id"], 2, "request ids are unique for the plugin's life");
    }

    #[test]
    fn publish_and_log_go_out_while_the_handler_runs() {
        let mut plugin = Plugin::new("p", "1").command_with("tell", |cmd, ctx| {
            ctx.log("info", "telling");
            ctx.publish("rosey.plugin.p.told", &serde_json::json!({"by": cmd.user}))
                .map_err(|e| e.to_string())?;
            Ok(Response::none())
        });
        let out = talk(&mut plugin, &format!("{}\n", event(1, "tell", "")));
        assert_eq!(
            out[0],
            serde_json::json!({"type": "log", "level": "info", "message": "telling"})
        );
        assert_eq!(
            out[1],
            serde_json::json!({"type": "publish", "subject": "rosey.plugin.p.told", "data": {"by": "alice"}})
        );
        assert_eq!(out[2], serde_json::json!({"type": "done", "id": 1}));
    }
}
