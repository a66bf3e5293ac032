//! The admin plugin's integration tests, one binary (see docs/ARCHITECTURE.md): the plugin runs
//! under a real `PluginManager` on a `MixedRuntime` and is driven through the bus as the router and
//! the chat would drive it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test, with its location

mod audit;
mod commands;
mod confirmation;
mod limits;
mod permissions;
mod reload;
mod support;
