//! The JSON configuration: its keys, embedded defaults, environment overrides and validation.
//!
//! Every key is optional; a missing section takes its defaults (in-process bus, SQLite file, console
//! connector, dashboard on 127.0.0.1:8080). Loading reports *all* problems at once, each naming its
//! key: JSON syntax, unknown keys (with a did-you-mean), wrong types (with line and column) and
//! semantic checks. Passwords and URL credentials are wrapped in [`Secret`] and [`SecretUrl`], which
//! never print their value.
//!
//! Checking a configuration happens in three steps: [`Config::from_json_str`] (or [`Config::load`])
//! parses and checks the values, [`Config::apply_env`] applies the `ROSEY_*` overrides and reports
//! them, [`Config::validate`] checks the values again (blaming a variable for a bad value it gave)
//! and [`Config::check_files`] checks what the configuration needs from this machine.
//!
//! ```
//! use rosey_core::config::Config;
//!
//! let mut config = Config::from_json_str(r#"{ "owner": "alice", "dashboard": { "port": 9090 } }"#)?;
//! let overrides = config.apply_env(|name| match name {
//!     "ROSEY_DATABASE_URL" => Some("postgres://rosey:hunter2@db/rosey".to_owned()),
//!     _ => None,
//! });
//! assert_eq!(overrides.applied[0].variable, "ROSEY_DATABASE_URL");
//! config.validate()?;
//! assert_eq!(config.dashboard.port, 9090);
//! assert_eq!(config.database.url.to_string(), "postgres://rosey:***@db/rosey");
//! assert!(config.is_configured("dashboard") && !config.is_configured("metrics"));
//!
//! let errors = Config::from_json_str(r#"{ "dashboard": { "prot": 9090 }, "metrics": { "poll_interval": 0 } }"#)
//!     .unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "dashboard.prot: unknown key; did you mean \"port\"?\nmetrics.poll_interval: must be at least 1 second"
//! );
//!
//! let mut config = Config::default();
//! config.apply_env(|name| (name == "ROSEY_NATS_URL").then(|| "nats://".to_owned()));
//! assert!(config.validate().unwrap_err().to_string().starts_with("ROSEY_NATS_URL: "));
//! # Ok::<(), rosey_core::config::ConfigErrors>(())
//! ```

mod env;
mod error;
mod files;
mod nats;
mod parse;
mod secret;
mod sections;
mod validate;

#[cfg(test)]
mod proptests;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use env::{EnvOverride, EnvOverrides, IgnoredOverride};
pub use error::{ConfigError, ConfigErrors};
#[cfg(feature = "nats")]
pub(crate) use nats::is_user_seed;
pub use nats::{NatsConfig, NatsCredentials};
pub use secret::{Secret, SecretUrl};
pub use sections::{
    CytubeConfig, DashboardConfig, DatabaseConfig, LoggingConfig, MetricsConfig, MetricsRetention,
    NodeConfig,
};

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
    /// The NATS credentials section (an addition to the spec's keys); empty connects without any.
    pub nats: NatsConfig,
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
    /// The node section: this node's name among several.
    pub node: NodeConfig,
    /// Where values came from; not a key.
    #[serde(skip)]
    provenance: Provenance,
}

/// Where the values of a [`Config`] came from, for messages that point at the right place.
#[derive(Debug, Clone, Default)]
struct Provenance {
    /// Top-level keys present in the parsed text.
    given: Vec<String>,
    /// Keys last set by an environment variable.
    from_env: Vec<EnvOverride>,
}

/// Two configurations with the same values are equal, wherever the values came from.
impl PartialEq for Provenance {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for Provenance {}

impl Default for Config {
    fn default() -> Self {
        Self {
            owner: None,
            admins: Vec::new(),
            nats_url: None,
            nats: NatsConfig::default(),
            database: DatabaseConfig::default(),
            cytube: None,
            plugin_dir: PathBuf::from("plugins"),
            metrics: MetricsConfig::default(),
            dashboard: DashboardConfig::default(),
            logging: LoggingConfig::default(),
            node: NodeConfig::default(),
            provenance: Provenance::default(),
        }
    }
}

impl Config {
    /// Parses and validates a JSON configuration. On failure every problem found is returned:
    /// a syntax error alone, otherwise unknown keys, wrong types and semantic errors together.
    /// What the environment may still add is not required yet: `nats.user` without
    /// `nats.password` (which `ROSEY_NATS_PASSWORD` gives) and NATS credentials without
    /// `nats_url` (which `ROSEY_NATS_URL` gives) are errors of [`Config::validate`] only.
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
    /// (only when a `cytube` section exists), `ROSEY_DATABASE_URL`, `ROSEY_NATS_URL`, and
    /// `ROSEY_NATS_PASSWORD` and `ROSEY_NATS_TOKEN` (only when `nats_url` is set, by the file or by
    /// `ROSEY_NATS_URL`), looking each name up with `lookup` (e.g. `|name| std::env::var(name).ok()`).
    /// Empty values, passwords without a `cytube` section and NATS secrets without `nats_url` are
    /// ignored. Nothing is logged: the returned report
    /// (names only, no values) is for the caller to log once its logging is set up. Call
    /// [`Config::validate`] afterwards; it names the variable for a bad value that came from one.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> EnvOverrides {
        env::apply(self, lookup)
    }

    /// Checks the values against each other and against what the runtime accepts, returning every
    /// problem found, each naming its key, or the environment variable the value came from.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = validate::check(self, nats::Stage::Complete);
        for error in &mut errors {
            if let Some(source) =
                self.provenance.from_env.iter().find(|source| source.key == error.key)
            {
                error.key = source.variable.to_owned();
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
    }

    /// Checks what the configuration needs from this machine, relative to the working directory:
    /// `plugin_dir` is an existing directory, `nats.creds_file` and `nats.nkey_file` (when set) are
    /// readable files holding NATS credentials and a user nkey seed, and `logging.file` can be
    /// opened for append (its
    /// folder is created if missing, as running the bot would; a file that did not exist is removed
    /// again). Errors name the key and the absolute path. This touches the file system, so it is
    /// separate from [`Config::validate`]; it blocks, so call it before starting async work or on a
    /// blocking thread.
    pub fn check_files(&self) -> Result<(), ConfigErrors> {
        let errors = files::check(self);
        if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
    }

    /// Whether the file or the environment gave `section` (a top-level key such as `dashboard`) or
    /// one of its keys, rather than leaving it to the embedded defaults. The dashboard, say, fails
    /// the start on a busy port when it was configured, and only warns on its default one.
    pub fn is_configured(&self, section: &str) -> bool {
        self.provenance.given.iter().any(|given| given == section)
            || self
                .provenance
                .from_env
                .iter()
                .any(|source| source.key.split('.').next() == Some(section))
    }
}
