//! The JSON configuration: its keys, embedded defaults, environment overrides and validation.
//!
//! Every key is optional; a missing section takes its defaults (in-process bus, SQLite file, console
//! connector, dashboard on 127.0.0.1:8080). Loading reports *all* problems at once, each naming its
//! key: JSON syntax, unknown keys (with a did-you-mean), wrong types (with line and column) and
//! semantic checks. Passwords and URL credentials are wrapped in [`Secret`] and [`SecretUrl`], which
//! never print their value.
//!
//! ```
//! use rosey_core::config::Config;
//!
//! let mut config = Config::from_json_str(r#"{ "owner": "alice", "dashboard": { "port": 9090 } }"#)?;
//! config.apply_env(|name| match name {
//!     "ROSEY_DATABASE_URL" => Some("postgres://rosey:hunter2@db/rosey".to_owned()),
//!     _ => None,
//! });
//! config.validate()?;
//! assert_eq!(config.dashboard.port, 9090);
//! assert_eq!(config.database.url.to_string(), "postgres://rosey:***@db/rosey");
//!
//! let errors = Config::from_json_str(r#"{ "dashboard": { "prot": 9090 }, "metrics": { "poll_interval": 0 } }"#)
//!     .unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "dashboard.prot: unknown key; did you mean \"port\"?\nmetrics.poll_interval: must be at least 1 second"
//! );
//! # Ok::<(), rosey_core::config::ConfigErrors>(())
//! ```

mod error;
mod parse;
mod secret;
mod sections;
mod validate;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use error::{ConfigError, ConfigErrors};
pub use secret::{Secret, SecretUrl};
pub use sections::{CytubeConfig, DashboardConfig, DatabaseConfig, LoggingConfig, MetricsConfig};

/// Environment variable that sets `cytube.password` (only when the file has a `cytube` section).
const ENV_CYTUBE_PASSWORD: &str = "ROSEY_CYTUBE_PASSWORD";
/// Environment variable that sets `cytube.channel_password` (only when the file has a `cytube` section).
const ENV_CYTUBE_CHANNEL_PASSWORD: &str = "ROSEY_CYTUBE_CHANNEL_PASSWORD";
/// Environment variable that sets `database.url`.
const ENV_DATABASE_URL: &str = "ROSEY_DATABASE_URL";
/// Environment variable that sets `nats_url`.
const ENV_NATS_URL: &str = "ROSEY_NATS_URL";

/// The whole configuration of a Rosey node. `Debug` is safe to log: secrets print as `***`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, expecting = "a JSON object")]
pub struct Config {
    /// CyTube name of the bot's owner, who may use every `!admin` command.
    pub owner: Option<String>,
    /// CyTube names that may use `!admin` commands besides the owner.
    pub admins: Vec<String>,
    /// NATS server to share the bus with other nodes; `None` runs the in-process bus.
    pub nats_url: Option<SecretUrl>,
    /// The database section.
    pub database: DatabaseConfig,
    /// The CyTube section; `None` chats on the console instead.
    pub cytube: Option<CytubeConfig>,
    /// Directory searched for plugins (each a folder with a `plugin.toml`).
    pub plugin_dir: PathBuf,
    /// The metrics section.
    pub metrics: MetricsConfig,
    /// The dashboard section.
    pub dashboard: DashboardConfig,
    /// The logging section (an addition to the spec's keys).
    pub logging: LoggingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            owner: None,
            admins: Vec::new(),
            nats_url: None,
            database: DatabaseConfig::default(),
            cytube: None,
            plugin_dir: PathBuf::from("plugins"),
            metrics: MetricsConfig::default(),
            dashboard: DashboardConfig::default(),
            logging: LoggingConfig::default(),
        }
    }
}

impl Config {
    /// Parses and validates a JSON configuration. On failure every problem found is returned:
    /// a syntax error alone, otherwise unknown keys, wrong types and semantic errors together.
    pub fn from_json_str(text: &str) -> Result<Config, ConfigErrors> {
        parse::parse(text)
    }

    /// Reads the file at `path` and parses it with [`Config::from_json_str`]. A file that cannot be
    /// read gives a single error whose key is the path.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            ConfigError::new(path.display().to_string(), format!("cannot read the file: {error}"))
        })?;
        Self::from_json_str(&text)
    }

    /// Applies the environment overrides `ROSEY_CYTUBE_PASSWORD` and `ROSEY_CYTUBE_CHANNEL_PASSWORD`
    /// (only when a `cytube` section exists), `ROSEY_DATABASE_URL` and `ROSEY_NATS_URL`, looking
    /// each name up with `lookup` (e.g. `|name| std::env::var(name).ok()`); empty values are
    /// ignored. Call [`Config::validate`] afterwards.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        let get = |name: &str| {
            let value = lookup(name).filter(|value| !value.is_empty())?;
            tracing::debug!(variable = name, "configuration value taken from the environment");
            Some(value)
        };
        type SecretField = fn(&mut CytubeConfig) -> &mut Option<Secret>;
        let cytube_secrets: [(&str, SecretField); 2] = [
            (ENV_CYTUBE_PASSWORD, |cytube| &mut cytube.password),
            (ENV_CYTUBE_CHANNEL_PASSWORD, |cytube| &mut cytube.channel_password),
        ];
        for (variable, field) in cytube_secrets {
            if let Some(secret) = get(variable) {
                match &mut self.cytube {
                    Some(cytube) => *field(cytube) = Some(Secret::new(secret)),
                    None => {
                        tracing::warn!(
                            variable,
                            "ignored: the configuration has no cytube section"
                        );
                    }
                }
            }
        }
        if let Some(url) = get(ENV_DATABASE_URL) {
            self.database.url = SecretUrl::new(url);
        }
        if let Some(url) = get(ENV_NATS_URL) {
            self.nats_url = Some(SecretUrl::new(url));
        }
    }

    /// Checks the values against each other and against what the runtime accepts, returning every
    /// problem found, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let errors = validate::check(self);
        if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
    }
}
