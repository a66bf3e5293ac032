//! [`NatsBus`]: the [`EventBus`] over a real NATS server (cargo feature `nats`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event, RequestErrorKind, ServerError};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{BusError, EventBus, Message, PendingReply, Subscription};
use crate::config::NatsCredentials;
use crate::error::BoxError;
use crate::subject;

/// How a [`NatsBus`] connects.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Connection name shown by the server's monitoring (`rosey` by default).
    pub name: String,
    /// How long the first connection may take before [`NatsBus::connect`] fails.
    pub connect_timeout: Duration,
    /// Messages buffered per subscription before the client drops for a slow consumer.
    pub subscription_capacity: usize,
    /// How long `subscribe` waits for the server to confirm a new subscription.
    pub subscribe_timeout: Duration,
    /// How the connection authenticates (none by default; credentials inside the URL still count).
    /// Usually [`NatsConfig::credentials`](crate::config::NatsConfig::credentials).
    pub credentials: NatsCredentials,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            name: "rosey".to_owned(),
            connect_timeout: Duration::from_secs(5),
            subscription_capacity: 16_384,
            subscribe_timeout: Duration::from_secs(5),
            credentials: NatsCredentials::None,
        }
    }
}

/// The [`EventBus`] over NATS (async-nats). Cheap to clone; clones share one connection.
///
/// The connection reconnects by itself with backoff after it is lost (subscriptions are restored by the
/// client); disconnects and reconnects are logged. Queue groups are NATS queue groups, so several Rosey
/// nodes on one server share work. A subscription is confirmed by a round trip to the server before
/// `subscribe` returns, so a publish from any connection made afterwards reaches it.
///
/// A slow subscriber is the server's and client's business: NATS drops messages for a slow consumer
/// (logged here as a warning), the same policy as [`MemoryBus`](super::MemoryBus).
#[derive(Clone, Debug)]
pub struct NatsBus {
    client: Client,
    subscribe_timeout: Duration,
}

impl NatsBus {
    /// Connects with default options. `url` may carry credentials (`nats://user:pass@host:4222`); they
    /// never appear in logs or in the returned error.
    pub async fn connect(url: &str) -> Result<Self, BusError> {
        Self::connect_with(url, NatsOptions::default()).await
    }

    /// Connects with the given options, authenticating with `options.credentials`. A credentials or
    /// nkey seed file is read here; a file that cannot be read or parsed, and credentials the
    /// server refuses, fail with [`BusError::Connect`] whose cause is a [`NatsAuthError`]. No error
    /// or log line holds a password, token or seed.
    ///
    /// ```no_run
    /// use rosey_core::bus::{NatsBus, NatsOptions};
    /// use rosey_core::config::{NatsCredentials, Secret};
    ///
    /// # async fn run() -> Result<(), rosey_core::bus::BusError> {
    /// let credentials = NatsCredentials::UserPassword {
    ///     user: "plugin-node".to_owned(),
    ///     password: Secret::new(std::env::var("ROSEY_NATS_PASSWORD").unwrap_or_default()),
    /// };
    /// let bus =
    ///     NatsBus::connect_with("nats://127.0.0.1:4222", NatsOptions { credentials, ..NatsOptions::default() })
    ///         .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(url: &str, options: NatsOptions) -> Result<Self, BusError> {
        let connect_error = |source: BoxError| BusError::Connect {
            server: "NATS",
            url: without_credentials(url),
            source,
        };
        let connect = ConnectOptions::new()
            .name(&options.name)
            .connection_timeout(options.connect_timeout)
            .subscription_capacity(options.subscription_capacity)
            .event_callback(|event| async move {
                match event {
                    Event::Connected => tracing::info!(message = "NATS connection (re)established"),
                    Event::Disconnected => {
                        tracing::warn!(message = "NATS connection lost; reconnecting")
                    }
                    Event::SlowConsumer(sid) => tracing::warn!(
                        message = "NATS slow consumer: messages dropped for a subscription",
                        sid
                    ),
                    // The server names the subject: e.g. a publish this user may not make.
                    Event::ServerError(ServerError::Other(error))
                        if error.to_ascii_lowercase().starts_with("permissions violation") =>
                    {
                        tracing::warn!(message = "NATS server refused an operation", %error)
                    }
                    other => tracing::warn!(message = "NATS event", event = %other),
                }
            });
        let connect = authenticate(connect, &options.credentials)
            .await
            .map_err(|error| connect_error(Box::new(error)))?;
        let client = connect.connect(url).await.map_err(|err| {
            connect_error(connect_cause(err, || presented(url, &options.credentials)))
        })?;
        let info = client.server_info();
        tracing::info!(
            message = "connected to NATS",
            server_version = %info.version,
            host = %info.host,
            port = info.port,
        );
        Ok(Self { client, subscribe_timeout: options.subscribe_timeout })
    }

    /// The underlying async-nats client, for what the [`EventBus`] trait does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Round trip to the server: once our own message comes back, every command this connection sent
    /// before it (such as a SUB) has been processed by the server.
    async fn sync_with_server(&self, pattern: &str) -> Result<(), BusError> {
        let inbox = self.client.new_inbox();
        let mut echo =
            self.client.subscribe(inbox.clone()).await.map_err(transport("subscribe"))?;
        self.client.publish(inbox, Bytes::new()).await.map_err(transport("subscribe"))?;
        match tokio::time::timeout(self.subscribe_timeout, echo.next()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(BusError::Closed),
            Err(_) => Err(BusError::Unconfirmed {
                pattern: pattern.to_owned(),
                timeout: self.subscribe_timeout,
            }),
        }
    }
}

/// Wraps a client error as the cause of a failed `operation`.
fn transport<E>(operation: &'static str) -> impl FnOnce(E) -> BusError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |err| BusError::Transport { operation, source: Box::new(err) }
}

/// Why a [`NatsBus`] could not authenticate: the cause of a [`BusError::Connect`]. Messages name the
/// kind of credentials and the file, never a password, token or seed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsAuthError {
    /// A credentials or nkey seed file could not be read.
    #[error("cannot read the NATS {kind} {}", path.display())]
    ReadFile {
        /// `credentials file` or `nkey seed file`.
        kind: &'static str,
        /// The file.
        path: PathBuf,
        /// The reading error.
        #[source]
        source: std::io::Error,
    },
    /// A credentials file is not in the credentials format (a user JWT and an nkey seed).
    #[error("the NATS credentials file {} is not valid", path.display())]
    InvalidCredsFile {
        /// The file.
        path: PathBuf,
        /// What the client found wrong.
        #[source]
        source: std::io::Error,
    },
    /// An nkey seed file does not hold one user nkey seed.
    #[error("the NATS nkey seed file {} does not hold a user nkey seed (one line starting with SU)", path.display())]
    InvalidNkeyFile {
        /// The file.
        path: PathBuf,
    },
    /// The server refused the credentials (wrong or unknown), or they could not sign its challenge.
    #[error("the NATS server refused {credentials}")]
    Refused {
        /// Which credentials, as [`NatsCredentials::summary`] says it.
        credentials: String,
        /// The server's error (`nats: authorization violation`), or the client's when it could
        /// not sign the server's challenge with an nkey.
        #[source]
        source: BoxError,
    },
}

/// Adds `credentials` to `connect`, reading a credentials or nkey seed file.
async fn authenticate(
    connect: ConnectOptions,
    credentials: &NatsCredentials,
) -> Result<ConnectOptions, NatsAuthError> {
    Ok(match credentials {
        NatsCredentials::None => connect,
        NatsCredentials::UserPassword { user, password } => {
            connect.user_and_password(user.clone(), password.expose().to_owned())
        }
        NatsCredentials::Token(token) => connect.token(token.expose().to_owned()),
        NatsCredentials::CredsFile(path) => {
            let text = read_credential_file("credentials file", path).await?;
            connect
                .credentials(&text)
                .map_err(|source| NatsAuthError::InvalidCredsFile { path: path.clone(), source })?
        }
        NatsCredentials::NkeyFile(path) => {
            let text = read_credential_file("nkey seed file", path).await?;
            if !crate::config::is_user_seed(&text) {
                return Err(NatsAuthError::InvalidNkeyFile { path: path.clone() });
            }
            connect.nkey(text.trim().to_owned())
        }
    })
}

async fn read_credential_file(kind: &'static str, path: &PathBuf) -> Result<String, NatsAuthError> {
    tokio::fs::read_to_string(path).await.map_err(|source| NatsAuthError::ReadFile {
        kind,
        path: path.clone(),
        source,
    })
}

/// The cause of a failed connect. An I/O failure is reported as the operating system's error itself
/// (`Connection refused (os error 111)`) rather than under the client's `IO error:` wrapper, so the
/// message a person reads is `cannot connect to NATS at …: Connection refused (os error 111)`.
/// Refused credentials say which ones were refused.
fn connect_cause(err: async_nats::ConnectError, presented: impl FnOnce() -> String) -> BoxError {
    use std::error::Error as _;
    if matches!(
        err.kind(),
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication
    ) {
        // The server's own error, not the client's wrapper, which repeats it
        // (`authorization violation: nats: authorization violation`).
        let server_error = err.source().and_then(|cause| cause.downcast_ref::<ServerError>());
        let source: BoxError = match server_error {
            Some(server_error) => Box::new(server_error.clone()),
            None => Box::new(err),
        };
        return Box::new(NatsAuthError::Refused { credentials: presented(), source });
    }
    let os_error = match err.kind() {
        ConnectErrorKind::Io => err
            .source()
            .and_then(|cause| cause.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error),
        _ => None,
    };
    match os_error {
        Some(code) => Box::new(std::io::Error::from_raw_os_error(code)),
        None => Box::new(err),
    }
}

/// What the connection presented to the server, for a refusal: the credentials' summary, or those
/// inside the URL.
fn presented(url: &str, credentials: &NatsCredentials) -> String {
    match credentials {
        NatsCredentials::None
            if url.split(',').any(|server| split_user_info(server).1.is_some()) =>
        {
            "the credentials inside the URL".to_owned()
        }
        NatsCredentials::None => "a connection without credentials".to_owned(),
        other => other.summary(),
    }
}

/// One server address cut into its scheme (`nats://` or empty), its user part (`user:password` or
/// `token`, if any) and the rest (host onwards), surrounding spaces trimmed.
fn split_user_info(server: &str) -> (&str, Option<&str>, &str) {
    let server = server.trim();
    let (scheme, rest) = match server.find("://") {
        Some(i) => server.split_at(i + 3),
        None => ("", server),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => (scheme, Some(&rest[..at]), &rest[at + 1..]),
        None => (scheme, None, rest),
    }
}

/// `url` (one server or a comma-separated list) with any `user:password@` or `token@` removed from
/// each address, so it can be shown and logged.
fn without_credentials(url: &str) -> String {
    url.split(',')
        .map(|server| {
            let (scheme, _, rest) = split_user_info(server);
            format!("{scheme}{rest}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn convert(message: async_nats::Message) -> Message {
    let subject: Arc<str> = Arc::from(message.subject.as_str());
    let reply = message.reply.map(|r| Arc::from(r.as_str()));
    Message::new(subject, reply, message.payload)
}

#[async_trait]
impl EventBus for NatsBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        subject::validate_publish(subject)?;
        self.client.publish(subject.to_owned(), payload).await.map_err(transport("publish"))
    }

    async fn publish_with_id(
        &self,
        subject: &str,
        id: &str,
        payload: Bytes,
    ) -> Result<(), BusError> {
        subject::validate_publish(subject)?;
        super::validate_message_id(id)?;
        let value: async_nats::HeaderValue =
            id.parse().map_err(|_| BusError::InvalidMessageId {
                id: id.to_owned(),
                reason: "it is not a valid header value",
            })?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, value);
        self.client
            .publish_with_headers(subject.to_owned(), headers, payload)
            .await
            .map_err(transport("publish"))
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        subject::validate_pattern(pattern)?;
        let sub =
            self.client.subscribe(pattern.to_owned()).await.map_err(transport("subscribe"))?;
        self.sync_with_server(pattern).await?;
        Ok(Subscription::new(sub.map(convert)))
    }

    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription, BusError> {
        subject::validate_pattern(pattern)?;
        subject::validate_publish(group)?;
        let sub = self
            .client
            .queue_subscribe(pattern.to_owned(), group.to_owned())
            .await
            .map_err(transport("subscribe"))?;
        self.sync_with_server(pattern).await?;
        Ok(Subscription::new(sub.map(convert)))
    }

    async fn send_request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<PendingReply, BusError> {
        subject::validate_publish(subject)?;
        // A subscription of its own, then the publish: both go through the connection's one queue
        // of commands, so requests sent one after another reach the server in that order.
        let inbox = self.client.new_inbox();
        let mut replies =
            self.client.subscribe(inbox.clone()).await.map_err(transport("subscribe"))?;
        self.client
            .publish_with_reply(subject.to_owned(), inbox, payload)
            .await
            .map_err(transport("publish"))?;
        let subject = subject.to_owned();
        Ok(Box::pin(async move {
            match tokio::time::timeout(timeout, replies.next()).await {
                Ok(Some(reply)) if reply.status == Some(async_nats::StatusCode::NO_RESPONDERS) => {
                    Err(BusError::NoResponders { subject })
                }
                Ok(Some(reply)) => Ok(convert(reply)),
                Ok(None) => Err(BusError::Closed),
                Err(_) => Err(BusError::Timeout { subject, timeout }),
            }
        }))
    }

    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        subject::validate_publish(subject)?;
        let request = async_nats::Request::new().payload(payload).timeout(Some(timeout));
        match self.client.send_request(subject.to_owned(), request).await {
            Ok(reply) => Ok(convert(reply)),
            Err(err) => Err(match err.kind() {
                RequestErrorKind::NoResponders => {
                    BusError::NoResponders { subject: subject.to_owned() }
                }
                RequestErrorKind::TimedOut => {
                    BusError::Timeout { subject: subject.to_owned(), timeout }
                }
                _ => transport("request")(err),
            }),
        }
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(transport("flush"))
    }
}

#[cfg(test)]
mod tests {
    use super::without_credentials;

    #[test]
    fn credentials_are_removed_from_shown_urls() {
        for (url, shown) in [
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
            ("nats://alice:s3cret@nats.example:4222", "nats://nats.example:4222"),
            ("tls://t0ken@nats.example", "tls://nats.example"),
            ("bob:p@ss@localhost:4222", "localhost:4222"),
            ("nats://a:b@one:4222, nats://two:4222", "nats://one:4222,nats://two:4222"),
            ("nats://host:4222/path@x", "nats://host:4222/path@x"),
        ] {
            assert_eq!(without_credentials(url), shown, "{url}");
        }
    }
}
