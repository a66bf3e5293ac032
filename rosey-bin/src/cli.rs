//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Rosey: a bot runtime for CyTube with isolated, hot-reloadable plugins.
#[derive(Debug, Parser)]
#[command(name = "rosey", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the bot. Without --config it runs on embedded defaults: console chat, in-process bus,
    /// SQLite file rosey.db, dashboard on 127.0.0.1:8080.
    Run {
        /// JSON config file (see docs/CONFIGURATION.md).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a config file: prints OK, or every error naming its key; exit status 0 or 1.
    CheckConfig {
        /// JSON config file to check.
        file: PathBuf,
    },
}
