//! tracing to stderr (stdout carries only the console's chat) and, when configured, to a log file.
//!
//! Both go through `tracing-appender`'s non-blocking writers: a log line is handed to a writer
//! thread, so no async thread ever waits on a slow terminal, a full pipe or a slow disk. If a
//! writer falls [`QUEUED_LINES`] lines behind, further lines are dropped rather than stall the bot.

use std::fs::OpenOptions;
use std::io::IsTerminal;

use rosey_core::config::LoggingConfig;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

/// Lines each writer may hold before it drops new ones. The queue is allocated whole at start, so
/// `tracing-appender`'s default (128 000) would cost 4 MB per writer; bursts the bot logs (a plugin's
/// stderr, say) are rate-limited well below this.
const QUEUED_LINES: usize = 16_384;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoggingError {
    #[error("cannot open log file {path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the log subscriber")]
    Install(#[source] tracing_subscriber::util::TryInitError),
}

/// Keeps the writer threads running; dropping it flushes the lines still queued, so hold it for
/// the life of the process.
pub(crate) struct LogGuard {
    _writers: Vec<WorkerGuard>,
}

/// The time as the default formatter writes it, then `node=<name>`: among several nodes' logs, every
/// line says which node wrote it.
struct NodeTime {
    node: String,
}

impl fmt::time::FormatTime for NodeTime {
    fn format_time(&self, w: &mut fmt::format::Writer<'_>) -> std::fmt::Result {
        fmt::time::SystemTime.format_time(w)?;
        write!(w, " node={}", self.node)
    }
}

/// Installs the global subscriber, every line naming `node`. `RUST_LOG`, when set, overrides
/// `logging.level`.
pub(crate) fn init(config: &LoggingConfig, node: &str) -> Result<LogGuard, LoggingError> {
    let timer = || NodeTime { node: node.to_owned() };
    let filter = || {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(config.level.as_str()))
    };
    let mut guards = Vec::new();
    let file_layer = match &config.file {
        Some(path) => {
            let open = || -> std::io::Result<std::fs::File> {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                OpenOptions::new().create(true).append(true).open(path)
            };
            let file = open().map_err(|source| LoggingError::File {
                path: path.display().to_string(),
                source,
            })?;
            let (writer, guard) = NonBlockingBuilder::default()
                .buffered_lines_limit(QUEUED_LINES)
                .thread_name("rosey-log-file")
                .finish(file);
            guards.push(guard);
            Some(
                fmt::layer()
                    .with_ansi(false)
                    .with_timer(timer())
                    .with_writer(writer)
                    .with_filter(filter()),
            )
        }
        None => None,
    };
    let (stderr, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("rosey-log-stderr")
        .finish(std::io::stderr());
    guards.push(guard);
    let stderr_layer = fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_timer(timer())
        .with_writer(stderr)
        .with_filter(filter());
    tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init()
        .map_err(LoggingError::Install)?;
    Ok(LogGuard { _writers: guards })
}
