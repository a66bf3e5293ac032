//! `rosey`: the reference binary. It parses the command line, loads the config, wires Rosey's parts in
//! the documented startup order and maps failures to exit codes; the libraries do the work.

mod cli;
mod logging;
mod node;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use rosey_core::config::{Config, ConfigErrors, EnvOverrides};
use rosey_core::error::Chain;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Run { config } => run(config.as_deref()),
    }
}

/// A configuration ready to run, with what the environment did to it.
struct Loaded {
    config: Config,
    overrides: EnvOverrides,
}

/// Loads the file (or the embedded defaults), applies the environment and runs every check, the
/// files included: `run` and `check-config` accept exactly the same configurations.
fn load(path: Option<&Path>) -> Result<Loaded, ConfigErrors> {
    let mut config = match path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let overrides = config.apply_env(|name| std::env::var(name).ok());
    let mut errors = Vec::new();
    for result in [config.validate(), config.check_files()] {
        if let Err(found) = result {
            errors.extend(found.0);
        }
    }
    if errors.is_empty() { Ok(Loaded { config, overrides }) } else { Err(ConfigErrors(errors)) }
}

/// Prints `OK` with notes, or every error of the config file; exit 0 or 1.
fn check_config(file: &Path) -> ExitCode {
    match load(Some(file)) {
        Ok(Loaded { overrides, .. }) => {
            let mut report = format!("OK: {}", file.display());
            for applied in &overrides.applied {
                report.push_str(&format!(
                    "\n  note: {} sets {} (from the environment)",
                    applied.variable, applied.key
                ));
            }
            for ignored in &overrides.ignored {
                report.push_str(&format!(
                    "\n  note: {} is ignored: {}",
                    ignored.target.variable, ignored.reason
                ));
            }
            print_ignoring_broken_pipe(&mut std::io::stdout(), &report);
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_config_errors(&format!("{}: invalid config", file.display()), &errors);
            ExitCode::FAILURE
        }
    }
}

/// The one warning for a config section that is accepted but not used yet.
fn print_config_errors(title: &str, errors: &ConfigErrors) {
    let mut report = title.to_owned();
    for error in errors {
        report.push_str(&format!("\n  {error}"));
    }
    print_ignoring_broken_pipe(&mut std::io::stderr(), &report);
}

fn print_ignoring_broken_pipe(out: &mut dyn Write, text: &str) {
    // A closed pipe (`rosey check-config x | head -0`) is not an error worth a panic.
    let _ = writeln!(out, "{text}");
}

fn run(config_path: Option<&Path>) -> ExitCode {
    let Loaded { config, overrides } = match load(config_path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            print_config_errors("rosey: invalid config", &errors);
            return ExitCode::FAILURE;
        }
    };
    // Held until main returns, so the writer threads flush every queued line at exit.
    let _log_guard = match logging::init(&config.logging, &config.node.name()) {
        Ok(guard) => guard,
        Err(err) => {
            let text = format!("rosey: {}", Chain(&err));
            print_ignoring_broken_pipe(&mut std::io::stderr(), &text);
            return ExitCode::FAILURE;
        }
    };
    report_overrides(&overrides);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            let error = Chain(&err).to_string();
            tracing::error!(message = "cannot start the async runtime", %error);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(node::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let error = Chain(&err).to_string();
            tracing::error!(message = "rosey stopped with an error", %error);
            ExitCode::FAILURE
        }
    }
}

/// Logs, once logging is up, what the environment changed. Names only: a variable's value may be a
/// secret.
fn report_overrides(overrides: &EnvOverrides) {
    for applied in &overrides.applied {
        tracing::info!(
            message = "configuration value taken from the environment",
            variable = applied.variable,
            key = applied.key
        );
    }
    for ignored in &overrides.ignored {
        tracing::warn!(
            message = "environment variable ignored",
            variable = ignored.target.variable,
            reason = ignored.reason
        );
    }
}
