//! Plugins: manifests, runtimes, the command table, and (coming) the manager that supervises them.

pub mod commands;

pub use commands::{CommandRoute, CommandTable, RoutedCommand};
