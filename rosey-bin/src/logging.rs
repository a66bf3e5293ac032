//! tracing to stdout and, when configured, to a log file.

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::sync::Arc;

use rosey_core::config::LoggingConfig;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoggingError {
    #[error("cannot open log file {path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// Keeps the log file open for the life of the process.
pub(crate) struct LogGuard {
    _file: Option<Arc<File>>,
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `logging.level`.
pub(crate) fn init(config: &LoggingConfig) -> Result<LogGuard, LoggingError> {
    let filter = || {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(config.level.as_str()))
    };
    let file = match &config.file {
        Some(path) => {
            let open = || -> std::io::Result<File> {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                OpenOptions::new().create(true).append(true).open(path)
            };
            let file = open().map_err(|source| LoggingError::File {
                path: path.display().to_string(),
                source,
            })?;
            Some(Arc::new(file))
        }
        None => None,
    };
    let stdout_layer = fmt::layer()
        .with_ansi(std::io::stdout().is_terminal())
        .with_writer(std::io::stdout)
        .with_filter(filter());
    let file_layer = file
        .clone()
        .map(|file| fmt::layer().with_ansi(false).with_writer(file).with_filter(filter()));
    tracing_subscriber::registry()
        .with(stdout_layer)
        .with(file_layer)
        .try_init()
        .map_err(|e| LoggingError::Install(e.to_string()))?;
    Ok(LogGuard { _file: file })
}
