//! [`NatsBus`]: the [`EventBus`] over a real NATS server (cargo feature `nats`).

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, RequestErrorKind};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{BusError, EventBus, Message, Subscription};
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
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            name: "rosey".to_owned(),
            connect_timeout: Duration::from_secs(5),
            subscription_capacity: 16_384,
            subscribe_timeout: Duration::from_secs(5),
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

    /// Connects with the given options.
    pub async fn connect_with(url: &str, options: NatsOptions) -> Result<Self, BusError> {
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
                    other => tracing::warn!(message = "NATS event", event = %other),
                }
            });
        let client = connect.connect(url).await.map_err(|err| BusError::Connect {
            server: "NATS",
            url: without_credentials(url),
            source: connect_cause(err),
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

/// The cause of a failed connect. An I/O failure is reported as the operating system's error itself
/// (`Connection refused (os error 111)`) rather than under the client's `IO error:` wrapper, so the
/// message a person reads is `cannot connect to NATS at …: Connection refused (os error 111)`.
fn connect_cause(err: async_nats::ConnectError) -> BoxError {
    use std::error::Error as _;
    let os_error = match err.kind() {
        async_nats::ConnectErrorKind::Io => err
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

/// `url` (one server or a comma-separated list) with any `user:password@` or `token@` removed from
/// each address, so it can be shown and logged.
fn without_credentials(url: &str) -> String {
    url.split(',')
        .map(|server| {
            let server = server.trim();
            let (scheme, rest) = match server.find("://") {
                Some(i) => server.split_at(i + 3),
                None => ("", server),
            };
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}{}", &rest[at + 1..]),
                None => server.to_owned(),
            }
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
