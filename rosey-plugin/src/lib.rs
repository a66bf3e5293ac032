//! Rosey plugins: protocol v1 and a small SDK for writing plugins in Rust.
//!
//! [`protocol`] defines the JSON-lines messages exchanged over a plugin's stdin and stdout; the Rosey
//! host uses the same types. [`sdk`] handles init, ready, ping, shutdown and framing, so a plugin is a
//! `main` plus one handler per command:
//!
//! ```no_run
//! use rosey_plugin::{Plugin, Response};
//!
//! fn main() -> std::process::ExitCode {
//!     Plugin::new("flipper", "1.0.0")
//!         .command("flip", |_| Ok(Response::reply("🪙 Heads!")))
//!         .run()
//! }
//! ```
//!
//! A handler registered with [`Plugin::command_with`] also gets a [`Context`]: the plugin's own
//! key-value store on the host ([`kv`]: `get`, `get_as`, `set`, `delete`, `list`, `keys`), `publish`
//! and `log`. The SDK stays synchronous: while a handler waits for the store it answers the host's
//! pings and queues new events ([`context`] says how).
#![deny(missing_docs)]

pub mod context;
pub mod framing;
pub mod kv;
pub mod protocol;
pub mod sdk;

pub use context::Context;
pub use kv::{Kv, KvError, KvErrorCode, KvPage};
pub use sdk::{Command, Event, Plugin, Response, Via};
