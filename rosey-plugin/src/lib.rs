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
#![deny(missing_docs)]

pub mod framing;
pub mod protocol;
pub mod sdk;

pub use sdk::{Command, Event, Plugin, Response};
