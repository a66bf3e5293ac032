//! The `nats` section: how a node proves who it is to the NATS server named by `nats_url`.
//!
//! Exactly one way is set, or none: `user` with `password`, `token`, `creds_file` (a NATS
//! credentials file: user JWT and nkey seed), or `nkey_file` (a file holding a user nkey seed) — and
//! not together with a `user:password@` or `token@` inside `nats_url`. Passwords and tokens are
//! [`Secret`]s; the files are read only when connecting, and [`Config::check_files`] checks that they
//! can be read.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use super::{Config, ConfigError, Secret};

/// `nats`: the credentials the node connects to `nats_url` with (an addition to the spec's keys).
/// Every key is optional; with none set the node connects without credentials (or with those in
/// `nats_url`). `Debug` is safe to log: the password and token print as `***`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, expecting = "a JSON object")]
pub struct NatsConfig {
    /// User name, given together with `password`.
    pub user: Option<String>,
    /// Password of `user`. Best given as `ROSEY_NATS_PASSWORD`.
    pub password: Option<Secret>,
    /// Authentication token. Best given as `ROSEY_NATS_TOKEN`.
    pub token: Option<Secret>,
    /// A NATS credentials file (`.creds`: a user JWT and its nkey seed), as `nsc` writes it.
    pub creds_file: Option<PathBuf>,
    /// A file holding a user nkey seed (one line starting with `SU`), as `nk -gen user` writes it.
    pub nkey_file: Option<PathBuf>,
}

/// How to authenticate to the NATS server, read from a validated [`NatsConfig`] with
/// [`NatsConfig::credentials`]. `Debug` prints secrets as `***`; [`NatsCredentials::summary`] says
/// which kind without any secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NatsCredentials {
    /// No credentials (or only those inside the URL).
    #[default]
    None,
    /// A user name and password.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// A token.
    Token(Secret),
    /// A NATS credentials file, read when connecting.
    CredsFile(PathBuf),
    /// A file holding a user nkey seed, read when connecting.
    NkeyFile(PathBuf),
}

impl NatsCredentials {
    /// What the credentials are, for messages and logs, never the secret itself: `no credentials`,
    /// `the password of user "plugin-node"`, `a token`, `the credentials file /etc/rosey/node.creds`,
    /// `the nkey seed file /etc/rosey/node.nk`.
    pub fn summary(&self) -> String {
        match self {
            Self::None => "no credentials".to_owned(),
            Self::UserPassword { user, .. } => format!("the password of user \"{user}\""),
            Self::Token(_) => "a token".to_owned(),
            Self::CredsFile(path) => format!("the credentials file {}", path.display()),
            Self::NkeyFile(path) => format!("the nkey seed file {}", path.display()),
        }
    }
}

impl NatsConfig {
    /// The one way to authenticate this section sets; call it on a configuration that passed
    /// [`Config::validate`] (on an invalid one, the first complete way in key order wins, and a user
    /// without a password counts as none).
    pub fn credentials(&self) -> NatsCredentials {
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            return NatsCredentials::UserPassword {
                user: user.clone(),
                password: password.clone(),
            };
        }
        if let Some(token) = &self.token {
            return NatsCredentials::Token(token.clone());
        }
        if let Some(path) = &self.creds_file {
            return NatsCredentials::CredsFile(path.clone());
        }
        if let Some(path) = &self.nkey_file {
            return NatsCredentials::NkeyFile(path.clone());
        }
        NatsCredentials::None
    }

    /// The ways to authenticate that are set, each named by its first key.
    fn methods(&self) -> Vec<Method> {
        let mut methods = Vec::new();
        if self.user.is_some() || self.password.is_some() {
            methods.push(Method::UserPassword);
        }
        if self.token.is_some() {
            methods.push(Method::Token);
        }
        if self.creds_file.is_some() {
            methods.push(Method::CredsFile);
        }
        if self.nkey_file.is_some() {
            methods.push(Method::NkeyFile);
        }
        methods
    }
}

/// One way to authenticate, for the messages of [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    UserPassword,
    Token,
    CredsFile,
    NkeyFile,
}

impl Method {
    /// The key an error about this method is reported on (and blamed on its variable, if any).
    fn key(self) -> &'static str {
        match self {
            Self::UserPassword => "nats.user",
            Self::Token => "nats.token",
            Self::CredsFile => "nats.creds_file",
            Self::NkeyFile => "nats.nkey_file",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UserPassword => "nats.user and nats.password",
            Self::Token => "nats.token",
            Self::CredsFile => "nats.creds_file",
            Self::NkeyFile => "nats.nkey_file",
        })
    }
}

/// Which checks to run: a file alone may still lack what the environment adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// The file as parsed: `ROSEY_NATS_PASSWORD` and `ROSEY_NATS_URL` may still fill in the
    /// password and the URL, so their absence is not an error yet.
    File,
    /// After the environment: everything must be there.
    Complete,
}

/// Every problem of the `nats` section, against `nats_url` too: values that are empty or half set,
/// more than one way to authenticate, credentials without a NATS server (the last two parts of a
/// pair only at [`Stage::Complete`]).
pub(super) fn check(config: &Config, stage: Stage) -> Vec<ConfigError> {
    let nats = &config.nats;
    let complete = stage == Stage::Complete;
    let mut errors = Vec::new();
    let mut fail = |key: &str, message: String| errors.push(ConfigError::new(key, message));

    match (&nats.user, &nats.password) {
        (Some(user), _) if user.trim().is_empty() => fail("nats.user", "must not be empty".into()),
        (Some(_), None) if complete => {
            fail("nats.password", "must be set with nats.user".into());
        }
        (None, Some(_)) => fail("nats.user", "must be set with nats.password".into()),
        _ => {}
    }
    if nats.password.as_ref().is_some_and(|password| password.expose().is_empty()) {
        fail("nats.password", "must not be empty".into());
    }
    if nats.token.as_ref().is_some_and(|token| token.expose().is_empty()) {
        fail("nats.token", "must not be empty".into());
    }
    for (key, path) in [("nats.creds_file", &nats.creds_file), ("nats.nkey_file", &nats.nkey_file)]
    {
        if path.as_ref().is_some_and(|path| path.as_os_str().is_empty()) {
            fail(key, "must not be empty".into());
        }
    }

    let methods = nats.methods();
    if let Some((first, others)) = methods.split_first() {
        for other in others {
            fail(
                other.key(),
                format!("cannot be combined with {first}; set exactly one way to authenticate"),
            );
        }
        match &config.nats_url {
            None if complete => fail(
                "nats_url",
                format!(
                    "must be set when {first} is set (the in-process bus needs no credentials)"
                ),
            ),
            Some(url) if url_has_credentials(url.expose()) => fail(
                first.key(),
                "cannot be combined with credentials inside nats_url; set exactly one way to \
                 authenticate"
                    .into(),
            ),
            _ => {}
        }
    }
    errors
}

/// Whether any server of a (comma-separated) NATS URL carries a user, password or token.
fn url_has_credentials(url: &str) -> bool {
    url.split(',')
        .filter_map(|server| Url::parse(server.trim()).ok())
        .any(|server| !server.username().is_empty() || server.password().is_some())
}

/// The problems with the credential files on this machine: each must be a readable file, and hold
/// what its key says. Messages name the key and the absolute path, never the file's content.
pub(super) fn check_files(
    config: &Config,
    absolute: impl Fn(&Path) -> PathBuf,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let files = [
        ("nats.creds_file", &config.nats.creds_file, Content::Creds),
        ("nats.nkey_file", &config.nats.nkey_file, Content::NkeySeed),
    ];
    for (key, path, content) in files {
        let Some(path) = path.as_ref().filter(|path| !path.as_os_str().is_empty()) else {
            continue;
        };
        let path = absolute(path);
        match read_small(&path) {
            Ok(text) if content.matches(&text) => {}
            Ok(_) => errors.push(ConfigError::new(
                key,
                format!("{} does not hold {}", path.display(), content.expected()),
            )),
            Err(error) => errors
                .push(ConfigError::new(key, format!("cannot read {}: {error}", path.display()))),
        }
    }
    errors
}

/// What a credential file must hold.
#[derive(Debug, Clone, Copy)]
enum Content {
    Creds,
    NkeySeed,
}

impl Content {
    fn matches(self, text: &str) -> bool {
        match self {
            Self::Creds => {
                text.contains("-----BEGIN NATS USER JWT-----")
                    && text.contains("-----BEGIN USER NKEY SEED-----")
            }
            Self::NkeySeed => is_user_seed(text),
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Self::Creds => "a NATS credentials file (a user JWT and a user nkey seed)",
            Self::NkeySeed => "a user nkey seed (one line starting with SU)",
        }
    }
}

/// Whether `text` is one user nkey seed (`SU` and base32 letters), surrounding whitespace aside.
pub(crate) fn is_user_seed(text: &str) -> bool {
    let seed = text.trim();
    seed.len() > 2
        && seed.starts_with("SU")
        && seed.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

/// Reads a file that should be small (credentials are a few hundred bytes), refusing folders and
/// anything over 64 KiB so that a wrong path cannot make the check read a disk image.
fn read_small(path: &Path) -> io::Result<String> {
    const LIMIT: u64 = 64 * 1024;
    let file = std::fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(io::Error::other("it is a directory, not a file"));
    }
    let mut text = String::new();
    file.take(LIMIT + 1).read_to_string(&mut text)?;
    if text.len() as u64 > LIMIT {
        return Err(io::Error::other("it is larger than 64 KiB, too large for credentials"));
    }
    Ok(text)
}
