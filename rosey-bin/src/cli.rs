//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// What `rosey --help` says first: the bot as a user meets it.
const ABOUT: &str = "Rosey, a chat bot for CyTube channels whose commands come from plugins";

/// The longer description under `rosey --help`.
const LONG_ABOUT: &str = "\
Rosey is a chat bot for CyTube channels. Its commands (!roll 2d6, !8ball …) come from plugins:
small programs in any language, each run as its own process, restarted when it crashes.

Try it on the console first: `rosey run` reads chat lines such as `alice: !roll 2d6` from standard
input and prints the bot's replies on standard output; logs go to standard error. Then write a
config file that names a CyTube channel, check it with `rosey check-config`, and run it with
`rosey run --config`.";

/// The `rosey` command line.
#[derive(Debug, Parser)]
#[command(name = "rosey", version, about = ABOUT, long_about = LONG_ABOUT)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the bot until Ctrl-C or SIGTERM.
    ///
    /// Without --config it runs on embedded defaults: chat on the console (standard input and
    /// output), events on an in-process bus, plugins from ./plugins, storage in the SQLite file
    /// ./rosey.db, and the dashboard at http://127.0.0.1:8080 (this machine only). A config file can
    /// join a CyTube channel instead of the console and share events with other nodes over NATS.
    /// Logs go to standard error and to logs/rosey.log unless the config says otherwise.
    Run {
        /// JSON config file (see docs/CONFIGURATION.md); ROSEY_* environment variables override
        /// some of its keys.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a config file without running the bot.
    ///
    /// Applies the ROSEY_* environment variables as `run` would, then checks every key, the
    /// plugin folder and the log file. Prints OK with notes (keys accepted but not used yet,
    /// environment variables applied or ignored), or every error naming its key or variable.
    /// Exit status 0 or 1.
    CheckConfig {
        /// JSON config file to check.
        file: PathBuf,
    },
}
