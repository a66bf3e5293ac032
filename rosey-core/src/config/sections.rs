//! The sections of the configuration file and their embedded defaults.

use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::secret::{Secret, SecretUrl};

/// `database`: where the audit log, plugin history and plugin key-value store live.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, expecting = "a JSON object")]
pub struct DatabaseConfig {
    /// `sqlite:` (a file, the default `sqlite://rosey.db`) or `postgres://` / `postgresql://` URL; may
    /// hold a password, so it is only printed redacted.
    pub url: SecretUrl,
    /// Maximum number of pooled connections, at least 1.
    pub pool_size: u32,
    /// Days the audit log and the plugin lifecycle history are kept (an addition to the spec's
    /// keys); `0` keeps them forever. The key-value store never expires.
    pub retention_days: u64,
    /// Keys each plugin may keep in the key-value store, at least 1 (an addition to the spec's keys).
    pub kv_max_keys: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretUrl::new("sqlite://rosey.db".to_owned()),
            pool_size: 5,
            retention_days: 30,
            kv_max_keys: 10_000,
        }
    }
}

/// `cytube`: the CyTube channel to join; without this section the bot chats on the console instead.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(expecting = "a JSON object")]
pub struct CytubeConfig {
    /// Base URL of the CyTube server, `http://` or `https://` (default `https://cytu.be`).
    #[serde(default = "default_cytube_server")]
    pub server: String,
    /// Channel to join; required.
    #[serde(default)]
    pub channel: String,
    /// Account the bot logs in as; required.
    #[serde(default)]
    pub username: String,
    /// Password of that account; `None` joins as a guest. Best given as `ROSEY_CYTUBE_PASSWORD`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The channel's own password, for a channel that has one (an addition to the spec's keys). Best
    /// given as `ROSEY_CYTUBE_CHANNEL_PASSWORD`.
    #[serde(default)]
    pub channel_password: Option<Secret>,
    /// Longest time, in seconds, that starting may spend retrying passing failures (server
    /// unreachable, HTTP 5xx, `Rate limit exceeded`, timeouts) before the bot gives up; `None` (the
    /// default) retries until joined or stopped. At least 1 when given (an addition to the spec's keys).
    #[serde(default)]
    pub connect_timeout: Option<u64>,
}

fn default_cytube_server() -> String {
    "https://cytu.be".to_owned()
}

/// `metrics`: how often plugin metrics are sampled and how long samples are kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, expecting = "a JSON object")]
pub struct MetricsConfig {
    /// Whether the metrics collector runs at all.
    pub enabled: bool,
    /// Seconds between two samples, at least 1.
    pub poll_interval: u64,
    /// Seconds of samples kept per plugin, at least `poll_interval`.
    pub history_duration: u64,
    /// Whether `/metrics` serves the Prometheus registry (PRD Appendix A); off, it serves nothing.
    pub prometheus_enabled: bool,
    /// How long the downsampled history is kept (an addition to the spec's keys).
    pub retention: MetricsRetention,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval: 5,
            history_duration: 3600,
            prometheus_enabled: true,
            retention: MetricsRetention::default(),
        }
    }
}

/// `metrics.retention`: the downsampled tiers of the history, beyond `history_duration`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, expecting = "a JSON object")]
pub struct MetricsRetention {
    /// Hours of 1-minute buckets (avg/min/max) kept per plugin, 1-168 (default 24).
    pub minute_tier_hours: u64,
    /// Days of 15-minute buckets kept per plugin, 1-90 (default 7).
    pub quarter_tier_days: u64,
}

impl Default for MetricsRetention {
    fn default() -> Self {
        Self { minute_tier_hours: 24, quarter_tier_days: 7 }
    }
}

/// `dashboard`: the web dashboard and its JSON and Prometheus endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, expecting = "a JSON object")]
pub struct DashboardConfig {
    /// Whether the dashboard is served.
    pub enabled: bool,
    /// Address to bind; the default `127.0.0.1` keeps it off the network.
    pub host: String,
    /// TCP port, 1-65535.
    #[serde(deserialize_with = "deserialize_port")]
    pub port: u16,
    /// Bearer token that enables the reload and restart actions (`POST /api/plugin/{name}/reload`);
    /// without one the dashboard is read-only. At least 16 characters; env `ROSEY_DASHBOARD_TOKEN`.
    pub token: Option<Secret>,
    /// The address users reach the dashboard at (behind a proxy, say), used in links such as the
    /// answer to `!admin metrics`; default `http://<host>:<port>`.
    pub public_url: Option<String>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            host: "127.0.0.1".to_owned(),
            port: 8080,
            token: None,
            public_url: None,
        }
    }
}

impl DashboardConfig {
    /// Where users reach the dashboard: `public_url`, or `http://<host>:<port>` (IPv6 hosts in
    /// brackets).
    pub fn url(&self) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

/// `node`: who this node is among several sharing one NATS (DESIGN.md §2, "scale-out").
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, expecting = "a JSON object")]
pub struct NodeConfig {
    /// The node's name in logs, metrics (`node` label), audit and lifecycle records, the dashboard
    /// and control answers: 1–64 of `a-z A-Z 0-9 - _`, unique among the nodes sharing a NATS. `None`
    /// (the default) takes [`NodeConfig::default_name`]. `ROSEY_NODE_NAME` overrides it.
    pub name: Option<String>,
}

impl NodeConfig {
    /// The name in force: the configured one, else [`default_name`](Self::default_name).
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(Self::default_name)
    }

    /// `<host name>-<pid>`, with every character outside `a-z A-Z 0-9 - _` turned into `-` (a host
    /// name's dots would split a NATS subject token), cut to fit 64 characters: unique per process on
    /// one machine and telling which machine across several.
    pub fn default_name() -> String {
        // The same for the life of the process: read once, whoever asks.
        static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        NAME.get_or_init(Self::read_default_name).clone()
    }

    fn read_default_name() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "rosey".to_owned());
        let pid = std::process::id().to_string();
        let host: String = host
            .chars()
            .map(|c| if is_node_name_char(c) { c } else { '-' })
            .take(NODE_NAME_MAX - 1 - pid.len())
            .collect();
        format!("{host}-{pid}")
    }
}

/// Longest node name.
pub(super) const NODE_NAME_MAX: usize = 64;

/// A character allowed in a node name (it is used as a NATS subject token).
pub(super) fn is_node_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// `logging` (an addition to the spec's keys): log level and optional log file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, expecting = "a JSON object")]
pub struct LoggingConfig {
    /// One of `error`, `warn`, `info`, `debug`, `trace` (any case).
    pub level: String,
    /// File that also receives the log (default `logs/rosey.log`); JSON `null` logs to the console only.
    pub file: Option<PathBuf>,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { level: "info".to_owned(), file: Some(PathBuf::from("logs/rosey.log")) }
    }
}

/// The range message shared by parsing and [`validate`](super::Config::validate).
pub(super) fn port_out_of_range(port: impl std::fmt::Display) -> String {
    format!("{port} is out of range 1-65535")
}

/// Reads any JSON integer so that `70000` is reported as out of range rather than as a type error.
fn deserialize_port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    struct Port;

    impl Visitor<'_> for Port {
        type Value = u16;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a port number 1-65535")
        }

        fn visit_u64<E: de::Error>(self, port: u64) -> Result<u16, E> {
            match u16::try_from(port) {
                Ok(port) if port != 0 => Ok(port),
                _ => Err(E::custom(port_out_of_range(port))),
            }
        }

        fn visit_i64<E: de::Error>(self, port: i64) -> Result<u16, E> {
            match u64::try_from(port) {
                Ok(port) => self.visit_u64(port),
                Err(_) => Err(E::custom(port_out_of_range(port))),
            }
        }
    }

    deserializer.deserialize_u64(Port)
}
