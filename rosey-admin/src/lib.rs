//! Rosey's `!admin` chat plugin.
//!
//! This crate will hold the admin commands (`help`, `list`, `status`, `reload`, `restart`, `metrics`),
//! their permission check (owner and admins), confirmation, rate limiting and audit log, all acting through
//! `rosey_core`'s `PluginControl` trait. Nothing is implemented yet; see the project's issue tracker.
