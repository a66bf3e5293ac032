//! Semantic checks: values that parse but that the runtime cannot use.

use super::sections::{NODE_NAME_MAX, is_node_name_char, port_out_of_range};
use url::Url;

use super::nats::Stage;
use super::{Config, ConfigError, SecretUrl};

/// Log levels accepted in `logging.level` (compared without regard to case).
const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Every semantic problem of `config`, in key order; empty when it is usable. At
/// [`Stage::File`] the parts the environment may still add (the NATS password and URL) may be
/// missing.
pub(super) fn check(config: &Config, stage: Stage) -> Vec<ConfigError> {
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
        && let Err(message) = check_nats_url(url)
    {
        fail("nats_url", message);
    }
    errors.extend(super::nats::check(config, stage));
    let mut fail = |key: &str, message: String| errors.push(ConfigError::new(key, message));

    let database = &config.database;
    if let Err(message) = check_database_url(&database.url) {
        fail("database.url", message);
    }
    if database.pool_size == 0 {
        fail("database.pool_size", "must be at least 1".to_owned());
    }
    if database.kv_max_keys == 0 {
        fail("database.kv_max_keys", "must be at least 1".to_owned());
    }
    if database.retention_days > 36_500 {
        fail(
            "database.retention_days",
            "must be at most 36500 (100 years); 0 keeps records forever".to_owned(),
        );
    }

    if let Some(cytube) = &config.cytube {
        // A server URL is not meant to hold credentials, but if it does, keep them out.
        let server = SecretUrl::new(cytube.server.clone());
        if let Err(message) = parse_url(&server, &["http", "https"], "http:// or https://") {
            fail("cytube.server", message);
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
        } else if !is_cytube_user_name(&cytube.username) {
            fail(
                "cytube.username",
                format!(
                    "\"{}\" is not a CyTube user name (1-20 of a-z, A-Z, 0-9, - and _)",
                    cytube.username
                ),
            );
        }
        if cytube.password.as_ref().is_some_and(|password| password.expose().is_empty()) {
            fail(
                "cytube.password",
                "must not be empty; leave the key out to join as a guest".to_owned(),
            );
        }
        if cytube.connect_timeout == Some(0) {
            fail(
                "cytube.connect_timeout",
                "must be at least 1 second (leave it out to retry until joined)".to_owned(),
            );
        }
        if cytube.channel_password.as_ref().is_some_and(|password| password.expose().is_empty()) {
            fail(
                "cytube.channel_password",
                "must not be empty; leave the key out for a channel without a password".to_owned(),
            );
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
    if !(1..=168).contains(&metrics.retention.minute_tier_hours) {
        fail("metrics.retention.minute_tier_hours", "must be 1-168 (hours)".to_owned());
    }
    if !(1..=90).contains(&metrics.retention.quarter_tier_days) {
        fail("metrics.retention.quarter_tier_days", "must be 1-90 (days)".to_owned());
    }

    let dashboard = &config.dashboard;
    if dashboard.host.trim().is_empty() {
        fail("dashboard.host", "must not be empty".to_owned());
    }
    if dashboard.port == 0 {
        fail("dashboard.port", port_out_of_range(0));
    }
    if let Some(token) = &dashboard.token
        && token.expose().chars().count() < MIN_DASHBOARD_TOKEN
    {
        fail(
            "dashboard.token",
            format!(
                "must be at least {MIN_DASHBOARD_TOKEN} characters (it guards reload and restart)"
            ),
        );
    }
    if let Some(url) = &dashboard.public_url {
        match Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
            Ok(parsed) => fail(
                "dashboard.public_url",
                format!("scheme \"{}\" is not http or https", parsed.scheme()),
            ),
            Err(err) => fail("dashboard.public_url", format!("\"{url}\" is not a URL: {err}")),
        }
    }

    if let Some(name) = &config.node.name {
        let chars = name.chars().count();
        if chars == 0 || chars > NODE_NAME_MAX || !name.chars().all(is_node_name_char) {
            fail(
                "node.name",
                format!(
                    "\"{name}\" is not a node name: 1-{NODE_NAME_MAX} of a-z A-Z 0-9 - _ (it names \
                     the node in NATS subjects)"
                ),
            );
        }
    }
    let level = &config.logging.level;
    if !LOG_LEVELS.iter().any(|known| known.eq_ignore_ascii_case(level)) {
        fail("logging.level", format!("\"{level}\" is not one of {}", LOG_LEVELS.join(", ")));
    }

    errors
}

/// Shortest `dashboard.token` accepted.
const MIN_DASHBOARD_TOKEN: usize = 16;

/// Parses `url` with the `url` crate and checks that its scheme is one of `schemes` (`expected`
/// spells them for the message). Messages quote the URL redacted.
fn parse_url(url: &SecretUrl, schemes: &[&str], expected: &str) -> Result<Url, String> {
    let parsed = Url::parse(url.expose())
        .map_err(|error| format!("\"{url}\" is not a valid URL: {error}"))?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(format!("must start with {expected} (got \"{url}\")"));
    }
    Ok(parsed)
}

/// `nats://` or `tls://` with a host; a comma-separated list of such URLs (several servers of one
/// cluster) is accepted, as the NATS client accepts it.
fn check_nats_url(url: &SecretUrl) -> Result<(), String> {
    for server in url.expose().split(',') {
        let server = SecretUrl::new(server.trim().to_owned());
        let parsed = parse_url(&server, &["nats", "tls"], "nats:// or tls://")?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("needs a host, as in nats://127.0.0.1:4222 (got \"{server}\")"));
        }
    }
    Ok(())
}

/// `sqlite:` with a file path (or `:memory:`), or a `postgres://` / `postgresql://` URL.
fn check_database_url(url: &SecretUrl) -> Result<(), String> {
    let parsed = parse_url(
        url,
        &["sqlite", "postgres", "postgresql"],
        "sqlite:, postgres:// or postgresql://",
    )?;
    if parsed.scheme() == "sqlite" {
        // sqlx takes everything after `sqlite:` (and an optional `//`) up to `?` as the file name.
        let after_scheme = url.expose().split_once(':').map_or("", |(_, rest)| rest);
        let path = after_scheme.strip_prefix("//").unwrap_or(after_scheme);
        if path.split('?').next().is_none_or(str::is_empty) {
            return Err(format!("needs a file path, as in sqlite://rosey.db (got \"{url}\")"));
        }
    }
    Ok(())
}

/// CyTube's rule for user names, guests and accounts alike (`/^[\w-]{1,20}$/`, `isValidUserName`
/// in its `src/utilities.js`, checked at guest login and at account login); the server refuses any
/// other name.
fn is_cytube_user_name(name: &str) -> bool {
    (1..=20).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// CyTube's rule for channel names (`/^[\w-]{1,30}$/`); the server refuses any other name.
fn is_cytube_channel_name(name: &str) -> bool {
    (1..=30).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
