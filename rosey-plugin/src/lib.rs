//! Rosey plugins: protocol v1 and a small SDK for writing plugins in Rust.
//!
//! [`protocol`] defines the JSON-lines messages exchanged over a plugin's stdin and stdout; the Rosey
//! host uses the same types. The SDK (coming) handles init, ready, ping and shutdown so a plugin is a
//! `main` plus one handler per command.
#![deny(missing_docs)]

pub mod protocol;
