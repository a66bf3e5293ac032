//! Environment overrides (`ROSEY_*`): which variables set which keys, and the report of what was
//! applied and what was ignored, for the caller to log once its logging is up.

use super::{Config, CytubeConfig, NatsConfig, Secret, SecretUrl};

/// One environment variable that replaces one key of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvOverride {
    /// The variable, e.g. `ROSEY_NATS_URL`.
    pub variable: &'static str,
    /// The dotted key it sets, e.g. `nats_url`.
    pub key: &'static str,
}

/// An environment variable that was set but not used, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IgnoredOverride {
    /// The variable and the key it would have set.
    pub target: EnvOverride,
    /// Why it was not used, in words an operator can act on (never the value).
    pub reason: &'static str,
}

/// What [`Config::apply_env`] did: the variables applied and the ones ignored, in table order. It
/// holds names only, never values, so it is safe to log as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvOverrides {
    /// Variables whose value replaced the key's value.
    pub applied: Vec<EnvOverride>,
    /// Variables that were set but not used.
    pub ignored: Vec<IgnoredOverride>,
}

/// Writes an override's value into its key, or says why it cannot.
type Setter = fn(&mut Config, String) -> Result<(), &'static str>;

/// Every override, in the order they are applied and reported.
const OVERRIDES: [(EnvOverride, Setter); 8] = [
    (EnvOverride { variable: "ROSEY_CYTUBE_PASSWORD", key: "cytube.password" }, |config, value| {
        cytube(config)?.password = Some(Secret::new(value));
        Ok(())
    }),
    (
        EnvOverride { variable: "ROSEY_CYTUBE_CHANNEL_PASSWORD", key: "cytube.channel_password" },
        |config, value| {
            cytube(config)?.channel_password = Some(Secret::new(value));
            Ok(())
        },
    ),
    (EnvOverride { variable: "ROSEY_DATABASE_URL", key: "database.url" }, |config, value| {
        config.database.url = SecretUrl::new(value);
        Ok(())
    }),
    (EnvOverride { variable: "ROSEY_NATS_URL", key: "nats_url" }, |config, value| {
        config.nats_url = Some(SecretUrl::new(value));
        Ok(())
    }),
    // After ROSEY_NATS_URL, so that a URL from the environment makes room for its secrets.
    (EnvOverride { variable: "ROSEY_NATS_PASSWORD", key: "nats.password" }, |config, value| {
        nats(config)?.password = Some(Secret::new(value));
        Ok(())
    }),
    (EnvOverride { variable: "ROSEY_NATS_TOKEN", key: "nats.token" }, |config, value| {
        nats(config)?.token = Some(Secret::new(value));
        Ok(())
    }),
    (EnvOverride { variable: "ROSEY_DASHBOARD_TOKEN", key: "dashboard.token" }, |config, value| {
        config.dashboard.token = Some(Secret::new(value));
        Ok(())
    }),
    (EnvOverride { variable: "ROSEY_NODE_NAME", key: "node.name" }, |config, value| {
        config.node.name = Some(value);
        Ok(())
    }),
];

/// The nats section, for a node that talks to a NATS server at all: a secret meant for NATS
/// while the node runs the in-process bus is left out rather than made an error, like a CyTube
/// password without a channel.
fn nats(config: &mut Config) -> Result<&mut NatsConfig, &'static str> {
    if config.nats_url.is_none() {
        return Err("the configuration has no nats_url");
    }
    Ok(&mut config.nats)
}

/// The cytube section, which an override may fill in but never creates: a password alone cannot
/// say which channel to join.
fn cytube(config: &mut Config) -> Result<&mut CytubeConfig, &'static str> {
    config.cytube.as_mut().ok_or("the configuration has no cytube section")
}

/// Applies every variable `lookup` returns, recording the applied ones in `config` (so that
/// validation blames the variable for a bad value) and returning the report.
pub(super) fn apply(config: &mut Config, lookup: impl Fn(&str) -> Option<String>) -> EnvOverrides {
    let mut report = EnvOverrides::default();
    for (target, set) in OVERRIDES {
        let Some(value) = lookup(target.variable) else { continue };
        if value.is_empty() {
            report.ignored.push(IgnoredOverride { target, reason: "the value is empty" });
            continue;
        }
        match set(config, value) {
            Ok(()) => {
                report.applied.push(target);
                config.provenance.from_env.retain(|known| known.key != target.key);
                config.provenance.from_env.push(target);
            }
            Err(reason) => report.ignored.push(IgnoredOverride { target, reason }),
        }
    }
    report
}
