//! [`NatsBus`]: the [`EventBus`] over a real NATS server (cargo feature `nats`).

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, RequestErrorKind};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{BusError, EventBus, Message, Subscription};
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
        let client = connect
            .connect(url)
            .await
            .map_err(|e| BusError::Transport(format!("cannot connect to NATS: {}", e.kind())))?;
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
    async fn sync_with_server(&self) -> Result<(), BusError> {
        let inbox = self.client.new_inbox();
        let mut echo = self.client.subscribe(inbox.clone()).await.map_err(transport)?;
        self.client.publish(inbox, Bytes::new()).await.map_err(transport)?;
        match tokio::time::timeout(self.subscribe_timeout, echo.next()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(BusError::Closed),
            Err(_) => Err(BusError::Transport(format!(
                "NATS server did not confirm the subscription within {:?}",
                self.subscribe_timeout
            ))),
        }
    }
}

fn transport(err: impl std::fmt::Display) -> BusError {
    BusError::Transport(err.to_string())
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
        self.client.publish(subject.to_owned(), payload).await.map_err(transport)
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        subject::validate_pattern(pattern)?;
        let sub = self.client.subscribe(pattern.to_owned()).await.map_err(transport)?;
        self.sync_with_server().await?;
        Ok(Subscription::new(sub.map(convert)))
    }

    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription, BusError> {
        subject::validate_pattern(pattern)?;
        subject::validate_publish(group)?;
        let sub = self
            .client
            .queue_subscribe(pattern.to_owned(), group.to_owned())
            .await
            .map_err(transport)?;
        self.sync_with_server().await?;
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
                _ => transport(err),
            }),
        }
    }

    async fn flush(&self) -> Result<(), BusError> {
        self.client.flush().await.map_err(transport)
    }
}
