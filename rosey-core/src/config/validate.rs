//! Semantic checks: values that parse but that the runtime cannot use.

use super::sections::port_out_of_range;
use super::{Config, ConfigError, SecretUrl};

/// Log levels accepted in `logging.level` (compared without regard to case).
const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Every semantic problem of `config`, in key order; empty when it is usable.
pub(super) fn check(config: &Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut fail = |key: &str, message: String| errors.push(ConfigError::new(key, message));

    match &config.owner {
        Some(owner) if owner.trim().is_empty() => fail("owner", "must not be empty".to_owned()),
        None if !config.admins.is_empty() => {
            fail("owner", "must be set when admins are listed".to_owned());
        }
        _ => {}
    }
    for (i, admin) in config.admins.iter().enumerate() {
        if admin.trim().is_empty() {
            fail(&format!("admins[{i}]"), "must not be empty".to_owned());
        }
    }
    if let Some(url) = &config.nats_url
        && !has_scheme(url, &["nats://", "tls://"])
    {
        fail("nats_url", format!("must start with nats:// or tls:// (got \"{url}\")"));
    }

    let database = &config.database;
    if !has_scheme(&database.url, &["sqlite:", "postgres://", "postgresql://"]) {
        fail(
            "database.url",
            format!(
                "must start with sqlite:, postgres:// or postgresql:// (got \"{}\")",
                database.url
            ),
        );
    }
    if database.pool_size == 0 {
        fail("database.pool_size", "must be at least 1".to_owned());
    }

    if let Some(cytube) = &config.cytube {
        let server = cytube.server.trim();
        let host = server.strip_prefix("https://").or_else(|| server.strip_prefix("http://"));
        if host.is_none_or(str::is_empty) {
            fail(
                "cytube.server",
                // A server URL is not meant to hold credentials, but if it does, keep them out.
                format!(
                    "must be an http:// or https:// URL (got \"{}\")",
                    SecretUrl::new(cytube.server.clone())
                ),
            );
        }
        if cytube.channel.trim().is_empty() {
            fail("cytube.channel", "must be set to the channel to join".to_owned());
        } else if !is_cytube_channel_name(&cytube.channel) {
            fail(
                "cytube.channel",
                format!(
                    "\"{}\" is not a CyTube channel name (1-30 of a-z, A-Z, 0-9, - and _)",
                    cytube.channel
                ),
            );
        }
        if cytube.username.trim().is_empty() {
            fail("cytube.username", "must be set to the bot's account name".to_owned());
        }
    }

    let metrics = &config.metrics;
    if metrics.poll_interval == 0 {
        fail("metrics.poll_interval", "must be at least 1 second".to_owned());
    } else if metrics.history_duration < metrics.poll_interval {
        fail(
            "metrics.history_duration",
            format!(
                "{} s is shorter than metrics.poll_interval ({} s)",
                metrics.history_duration, metrics.poll_interval
            ),
        );
    }

    let dashboard = &config.dashboard;
    if dashboard.host.trim().is_empty() {
        fail("dashboard.host", "must not be empty".to_owned());
    }
    if dashboard.port == 0 {
        fail("dashboard.port", port_out_of_range(0));
    }

    let level = &config.logging.level;
    if !LOG_LEVELS.iter().any(|known| known.eq_ignore_ascii_case(level)) {
        fail("logging.level", format!("\"{level}\" is not one of {}", LOG_LEVELS.join(", ")));
    }

    errors
}

fn has_scheme(url: &SecretUrl, schemes: &[&str]) -> bool {
    let url = url.expose();
    schemes.iter().any(|scheme| {
        url.get(..scheme.len()).is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme))
    })
}

/// CyTube's rule for channel names (`/^[\w-]{1,30}$/`); the server refuses any other name.
fn is_cytube_channel_name(name: &str) -> bool {
    (1..=30).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
