//! `rosey`: the reference binary. It parses the command line, loads the config, wires Rosey's parts in
//! the documented startup order and maps failures to exit codes; the libraries do the work.

mod cli;
mod logging;
mod node;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use rosey_core::config::Config;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Run { config } => run(config.as_deref()),
    }
}

/// Prints `OK` or every error of the config file; exit 0 or 1.
fn check_config(file: &std::path::Path) -> ExitCode {
    let result = Config::load(file).and_then(|mut config| {
        config.apply_env(|key| std::env::var(key).ok());
        config.validate().map(|()| config)
    });
    match result {
        Ok(_) => {
            print_ignoring_broken_pipe(&mut std::io::stdout(), &format!("OK: {}", file.display()));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            let mut report = format!("{}: invalid config", file.display());
            for error in errors.iter() {
                report.push_str(&format!("\n  {error}"));
            }
            print_ignoring_broken_pipe(&mut std::io::stderr(), &report);
            ExitCode::FAILURE
        }
    }
}

fn print_ignoring_broken_pipe(out: &mut dyn Write, text: &str) {
    // A closed pipe (`rosey check-config x | head -0`) is not an error worth a panic.
    let _ = writeln!(out, "{text}");
}

fn run(config_path: Option<&std::path::Path>) -> ExitCode {
    let config = match config_path {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    }
    .and_then(|mut config| {
        config.apply_env(|key| std::env::var(key).ok());
        config.validate().map(|()| config)
    });
    let config = match config {
        Ok(config) => config,
        Err(errors) => {
            let mut report = String::from("rosey: invalid config");
            for error in errors.iter() {
                report.push_str(&format!("\n  {error}"));
            }
            print_ignoring_broken_pipe(&mut std::io::stderr(), &report);
            return ExitCode::FAILURE;
        }
    };
    let _log_guard = match logging::init(&config.logging) {
        Ok(guard) => guard,
        Err(err) => {
            print_ignoring_broken_pipe(&mut std::io::stderr(), &format!("rosey: {err}"));
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(message = "cannot start the async runtime", %err);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(node::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(message = "rosey stopped with an error", %err);
            ExitCode::FAILURE
        }
    }
}
