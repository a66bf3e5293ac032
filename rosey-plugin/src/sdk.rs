//! The SDK: a Rust plugin is a `main` plus one handler per command.
//!
//! ```no_run
//! use rosey_plugin::{Plugin, Response};
//!
//! fn main() -> std::process::ExitCode {
//!     Plugin::new("greeter", env!("CARGO_PKG_VERSION"))
//!         .command("hello", |cmd| Ok(Response::reply(format!("👋 Hello, {}!", cmd.user))))
//!         .run()
//! }
//! ```
//!
//! [`Plugin::run`] speaks protocol v1 on stdin/stdout: it answers `init` with `ready`, `ping` with
//! `pong`, exits on `shutdown` or when stdin closes (the host is gone), skips and reports malformed or
//! oversize lines, and turns each event into the handler's replies followed by `done`. A handler that
//! returns `Err` or panics ends its event with an error; the plugin keeps running. Handlers run one at
//! a time, in arrival order.
//!
//! A handler that keeps state in the host's key-value store is registered with
//! [`Plugin::command_with`] (or [`Plugin::on_event_with`]) and gets a [`Context`] as well:
//!
//! ```no_run
//! use rosey_plugin::{Plugin, Response};
//!
//! fn main() -> std::process::ExitCode {
//!     Plugin::new("greeter", env!("CARGO_PKG_VERSION"))
//!         .command_with("hello", |cmd, ctx| {
//!             let key = format!("seen:{}", cmd.user.to_lowercase());
//!             let mut kv = ctx.kv();
//!             let known = kv.get(&key).map_err(|e| e.to_string())?.is_some();
//!             kv.set(&key, &cmd.time).map_err(|e| e.to_string())?;
//!             let again = if known { " again" } else { "" };
//!             Ok(Response::reply(format!("👋 Hello{again}, {}!", cmd.user)))
//!         })
//!         .run()
//! }
//! ```
//!
//! While a handler waits for the store, the SDK still answers `ping`s and queues new events; see
//! [`context`](crate::context) for the details.

use std::io::{self, BufRead, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;

use serde_json::Value;

use crate::context::{Context, Link};
use crate::protocol::{HostMessage, PluginMessage};

/// A command event, as the handler sees it.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    /// The event id (replies and `done` carry it; the SDK handles that).
    pub id: u64,
    /// The subject it arrived on, e.g. `rosey.command.roll`.
    pub subject: &'a str,
    /// The channel it was typed in.
    pub channel: &'a str,
    /// Who typed it.
    pub user: &'a str,
    /// Their rank, when known.
    pub rank: Option<f64>,
    /// The command word, e.g. `roll`.
    pub command: &'a str,
    /// Everything after the command word, untouched.
    pub args: &'a str,
    /// The whole chat line.
    pub message: &'a str,
    /// When it was said, epoch milliseconds.
    pub time: i64,
    /// Where it came from: said in the channel, or sent to the bot by private message. The host sends
    /// the [`Response`] lines of a PM command back by PM to [`user`](Self::user) by itself; a plugin
    /// that publishes its own lines picks `cytube.pm.send` for [`Via::Pm`].
    pub via: Via,
    /// The raw event payload.
    pub data: &'a Value,
    /// The plugin's `[config]` table from its manifest (as JSON).
    pub config: &'a Value,
}

/// Where a [`Command`] came from (`"via"` in the event: `"chat"` or `"pm"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Via {
    /// Said in the channel (also when the event does not say).
    #[default]
    Chat,
    /// Sent to the bot by private message.
    Pm,
}

impl Via {
    /// Reads the event's `via` field; anything but `"pm"` is [`Via::Chat`].
    fn from_event(data: &Value) -> Self {
        match data.get("via").and_then(Value::as_str) {
            Some("pm") => Self::Pm,
            _ => Self::Chat,
        }
    }

    /// Whether it came by private message.
    pub fn is_pm(self) -> bool {
        self == Self::Pm
    }
}

/// A non-command event (from the manifest's extra subscriptions).
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The event id.
    pub id: u64,
    /// The subject it arrived on.
    pub subject: &'a str,
    /// Its payload.
    pub data: &'a Value,
    /// The plugin's `[config]` table.
    pub config: &'a Value,
}

/// What a handler says back: zero or more chat lines for the event's channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    lines: Vec<String>,
}

impl Response {
    /// One reply line.
    pub fn reply(text: impl Into<String>) -> Self {
        Self { lines: vec![text.into()] }
    }

    /// Several reply lines, in order.
    pub fn replies(lines: Vec<String>) -> Self {
        Self { lines }
    }

    /// No reply (the event still ends successfully).
    pub fn none() -> Self {
        Self::default()
    }
}

type CommandHandler = Box<dyn FnMut(&Command<'_>, &mut Context<'_>) -> Result<Response, String>>;
type EventHandler = Box<dyn FnMut(&Event<'_>, &mut Context<'_>) -> Result<Response, String>>;

/// A plugin under construction; see the [module docs](self).
pub struct Plugin {
    name: String,
    version: String,
    commands: Vec<(String, CommandHandler)>,
    on_event: Option<EventHandler>,
    config: Value,
    /// Request ids are unique for the life of the plugin, across `serve` calls.
    next_request_id: u64,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let commands: Vec<&str> = self.commands.iter().map(|(c, _)| c.as_str()).collect();
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("commands", &commands)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// A plugin named `name` (as in its manifest) reporting `version`.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            commands: Vec::new(),
            on_event: None,
            config: Value::Null,
            next_request_id: 1,
        }
    }

    /// Handles the chat command `name` (without prefix).
    pub fn command(
        self,
        name: impl Into<String>,
        mut handler: impl FnMut(&Command<'_>) -> Result<Response, String> + 'static,
    ) -> Self {
        self.command_with(name, move |cmd, _| handler(cmd))
    }

    /// Handles the chat command `name` with a [`Context`], for handlers that use the key-value
    /// store, publish or log while they work.
    pub fn command_with(
        mut self,
        name: impl Into<String>,
        handler: impl FnMut(&Command<'_>, &mut Context<'_>) -> Result<Response, String> + 'static,
    ) -> Self {
        self.commands.push((name.into(), Box::new(handler)));
        self
    }

    /// Handles events that are not commands (the manifest's extra subscriptions).
    pub fn on_event(
        self,
        mut handler: impl FnMut(&Event<'_>) -> Result<Response, String> + 'static,
    ) -> Self {
        self.on_event_with(move |event, _| handler(event))
    }

    /// Handles events that are not commands, with a [`Context`].
    pub fn on_event_with(
        mut self,
        handler: impl FnMut(&Event<'_>, &mut Context<'_>) -> Result<Response, String> + 'static,
    ) -> Self {
        self.on_event = Some(Box::new(handler));
        self
    }

    /// Serves on stdin/stdout until `shutdown` or end of input; the exit code for `main`.
    pub fn run(mut self) -> ExitCode {
        let stdin = io::stdin();
        // Buffered so an event's replies and its `done` leave in one write when `serve` flushes.
        let stdout = io::BufWriter::with_capacity(64 * 1024, io::stdout().lock());
        match self.serve(stdin.lock(), stdout) {
            Ok(()) => ExitCode::SUCCESS,
            // The host closed our stdout: it is gone, nothing left to do.
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("{}: {err}", self.name);
                ExitCode::FAILURE
            }
        }
    }

    /// Serves protocol v1 on any reader and writer until `shutdown` or end of input.
    ///
    /// Handlers' requests are answered from the same input, so a test can play the host with a
    /// script: every line the host would send, answers to requests included, in order.
    pub fn serve(&mut self, mut input: impl BufRead, mut output: impl Write) -> io::Result<()> {
        let mut link = Link::new(&mut input, &mut output, self.next_request_id);
        let served = self.serve_link(&mut link);
        self.next_request_id = link.next_request_id();
        served
    }

    fn serve_link(&mut self, link: &mut Link<'_>) -> io::Result<()> {
        // A `shutdown` that came while a handler waited ends serving once that handler is done.
        while !link.shutting_down() {
            match link.next_message()? {
                None | Some(HostMessage::Shutdown {}) => return Ok(()),
                Some(message) => self.handle(message, link)?,
            }
            link.output.flush()?;
        }
        Ok(())
    }

    fn handle(&mut self, message: HostMessage, link: &mut Link<'_>) -> io::Result<()> {
        match message {
            HostMessage::Init { config, .. } => {
                self.config = config;
                let ready = PluginMessage::Ready {
                    name: self.name.clone(),
                    version: self.version.clone(),
                    commands: self.commands.iter().map(|(c, _)| c.clone()).collect(),
                    subscribe: Vec::new(),
                };
                link.output.write_all(&ready.to_line())
            }
            HostMessage::Ping { id } => {
                link.output.write_all(&PluginMessage::Pong { id }.to_line())
            }
            HostMessage::Event { id, subject, data } => {
                let result = self.dispatch(id, &subject, &data, &mut Context::new(link));
                let output = &mut link.output;
                let error = match result {
                    Ok(response) => {
                        for message in response.lines {
                            output.write_all(&PluginMessage::Reply { id, message }.to_line())?;
                        }
                        None
                    }
                    Err(error) => Some(error),
                };
                output.write_all(&PluginMessage::Done { id, error }.to_line())
            }
            HostMessage::Shutdown {} | HostMessage::Response { .. } => Ok(()),
            HostMessage::Error { message } => {
                eprintln!("host refused: {message}");
                Ok(())
            }
        }
    }

    fn dispatch(
        &mut self,
        id: u64,
        subject: &str,
        data: &Value,
        ctx: &mut Context<'_>,
    ) -> Result<Response, String> {
        let text = |key: &str| data.get(key).and_then(Value::as_str).unwrap_or_default();
        let command_name = match text("command") {
            "" => subject
                .strip_prefix("rosey.command.")
                .map(|rest| rest.split('.').next().unwrap_or(rest)),
            name => Some(name),
        };
        let config = &self.config;
        let handler = command_name
            .and_then(|name| self.commands.iter_mut().find(|(c, _)| c == name))
            .map(|(_, handler)| handler);
        let outcome = match (handler, command_name) {
            (Some(handler), Some(command)) => {
                let cmd = Command {
                    id,
                    subject,
                    channel: text("channel"),
                    user: text("user"),
                    rank: data.get("rank").and_then(Value::as_f64),
                    command,
                    args: text("args"),
                    message: text("message"),
                    time: data.get("time").and_then(Value::as_i64).unwrap_or_default(),
                    via: Via::from_event(data),
                    data,
                    config,
                };
                catch_unwind(AssertUnwindSafe(|| handler(&cmd, ctx)))
            }
            _ => match self.on_event.as_mut() {
                Some(handler) => {
                    let event = Event { id, subject, data, config };
                    catch_unwind(AssertUnwindSafe(|| handler(&event, ctx)))
                }
                None => return Err(format!("no handler for {subject}")),
            },
        };
        outcome.unwrap_or_else(|_| Err("handler panicked".to_owned()))
    }
}

/// Writes a protocol `log` line (`level`: error, warn, info, debug or trace); the host logs it under
/// the plugin's name.
pub fn log(output: &mut impl Write, level: &str, message: &str) -> io::Result<()> {
    output.write_all(
        &PluginMessage::Log { level: level.to_owned(), message: message.to_owned() }.to_line(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::MAX_LINE_BYTES;

    /// Serves `input` (the host's lines) and returns what the plugin wrote.
    pub(crate) fn talk(plugin: &mut Plugin, input: &str) -> Vec<Value> {
        let mut out = Vec::new();
        plugin.serve(input.as_bytes(), &mut out).unwrap();
        String::from_utf8(out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn echo() -> Plugin {
        Plugin::new("echo", "1.2.3")
            .command("echo", |cmd| Ok(Response::reply(format!("{}: {}", cmd.user, cmd.args))))
            .command("fail", |_| Err("nope".into()))
            .command("boom", |_| panic!("kaboom"))
            .command("two", |_| Ok(Response::replies(vec!["a".into(), "b".into()])))
    }

    /// An `event` line for `!<command> <args>` said by alice.
    pub(crate) fn event(id: u64, command: &str, args: &str) -> String {
        format!(
            r#"{{"type":"event","id":{id},"subject":"rosey.command.{command}","data":{{"channel":"c","user":"alice","command":"{command}","args":"{args}","message":"","time":1}}}}"#
        )
    }

    #[test]
    fn init_gets_ready_and_ping_gets_pong() {
        let out = talk(
            &mut echo(),
            "{\"type\":\"init\",\"protocol\":1,\"name\":\"echo\",\"config\":{}}\n{\"type\":\"ping\",\"id\":5}\n",
        );
        assert_eq!(out[0]["type"], "ready");
        assert_eq!(out[0]["version"], "1.2.3");
        assert_eq!(out[0]["commands"], serde_json::json!(["echo", "fail", "boom", "two"]));
        assert_eq!(out[1], serde_json::json!({"type": "pong", "id": 5}));
    }

    #[test]
    fn a_command_gets_its_replies_then_done() {
        let out = talk(
            &mut echo(),
            &format!("{}\n{}\n", event(1, "echo", "hi there"), event(2, "two", "")),
        );
        assert_eq!(
            out[0],
            serde_json::json!({"type": "reply", "id": 1, "message": "alice: hi there"})
        );
        assert_eq!(out[1], serde_json::json!({"type": "done", "id": 1}));
        assert_eq!(
            (out[2]["message"].as_str(), out[3]["message"].as_str()),
            (Some("a"), Some("b"))
        );
        assert_eq!(out[4]["type"], "done");
    }

    #[test]
    fn a_command_says_whether_it_came_by_pm() {
        let mut plugin = Plugin::new("where", "1.0.0").command("where", |cmd| {
            Ok(Response::reply(match cmd.via {
                Via::Pm => "you whispered",
                Via::Chat => "you said it out loud",
            }))
        });
        let pm = event(1, "where", "").replace(r#""time":1}"#, r#""time":1,"via":"pm"}"#);
        let chat = event(2, "where", "").replace(r#""time":1}"#, r#""time":1,"via":"chat"}"#);
        let older_host = event(3, "where", "");
        let out = talk(&mut plugin, &format!("{pm}\n{chat}\n{older_host}\n"));
        let replies: Vec<&str> = out.iter().filter_map(|line| line["message"].as_str()).collect();
        assert_eq!(replies, ["you whispered", "you said it out loud", "you said it out loud"]);
    }

    #[test]
    fn errors_and_panics_end_the_event_with_an_error_and_the_plugin_goes_on() {
        let input = format!(
            "{}\n{}\n{}\n",
            event(1, "fail", ""),
            event(2, "boom", ""),
            event(3, "echo", "ok")
        );
        let out = talk(&mut echo(), &input);
        assert_eq!(out[0], serde_json::json!({"type": "done", "id": 1, "error": "nope"}));
        assert_eq!(
            out[1],
            serde_json::json!({"type": "done", "id": 2, "error": "handler panicked"})
        );
        assert_eq!(out[2]["message"], "alice: ok");
    }

    #[test]
    fn bad_unknown_and_oversize_lines_are_skipped() {
        let huge = "x".repeat(MAX_LINE_BYTES + 1);
        let input =
            format!("not json\n{{\"type\":\"future\"}}\n{huge}\n{}\n", event(9, "echo", "still"));
        let out = talk(&mut echo(), &input);
        assert_eq!(out[0]["type"], "log");
        assert_eq!(out[1]["type"], "log");
        assert!(out[1]["message"].as_str().unwrap().contains("over the limit"));
        assert_eq!(out[2]["message"], "alice: still");
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn shutdown_ends_serving_and_so_does_end_of_input() {
        let input = format!("{{\"type\":\"shutdown\"}}\n{}\n", event(1, "echo", "never"));
        assert!(talk(&mut echo(), &input).is_empty());
        assert!(talk(&mut echo(), "").is_empty());
    }

    #[test]
    fn an_unhandled_command_is_an_error() {
        let out = talk(&mut echo(), &format!("{}\n", event(4, "dance", "")));
        assert_eq!(out[0]["error"], "no handler for rosey.command.dance");
    }
}
