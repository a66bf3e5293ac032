//! The event bus: how every part of Rosey talks to every other.
//!
//! [`EventBus`] is a small NATS-shaped interface — publish, subscribe with wildcards, queue groups,
//! request/reply with a timeout — with two implementations that pass one conformance suite:
//! [`MemoryBus`] (in-process, the embedded default) and `NatsBus` (cargo feature `nats`, a real NATS
//! server, for production and scale-out).
//!
//! ```
//! use std::time::Duration;
//! use futures_util::StreamExt;
//! use rosey_core::bus::{EventBus, MemoryBus};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), rosey_core::bus::BusError> {
//! let bus = MemoryBus::new();
//! let mut commands = bus.subscribe("rosey.command.>").await?;
//! bus.publish("rosey.command.roll", "2d6".into()).await?;
//! let msg = commands.next().await.expect("subscription open");
//! assert_eq!(msg.subject(), "rosey.command.roll");
//! assert_eq!(&msg.payload()[..], b"2d6");
//! # Ok(()) }
//! ```

mod memory;
#[cfg(feature = "nats")]
mod nats;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream;
use serde::Serialize;

use crate::error::BoxError;
use crate::event::{self, PayloadError};
use crate::subject::SubjectError;

pub use memory::{MemoryBus, MemoryBusOptions, MemoryBusStats};
#[cfg(feature = "nats")]
pub use nats::{NatsAuthError, NatsBus, NatsOptions};

/// The reply to a request sent with [`EventBus::send_request`], still to come.
pub type PendingReply = Pin<Box<dyn Future<Output = Result<Message, BusError>> + Send + 'static>>;

/// What went wrong talking to the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The subject or pattern is not valid (see [`subject`](crate::subject)).
    #[error(transparent)]
    Subject(#[from] SubjectError),
    /// A request found nobody subscribed to its subject.
    #[error("no responders on {subject:?}")]
    NoResponders {
        /// The request's subject.
        subject: String,
    },
    /// A request got no reply within its timeout.
    #[error("request on {subject:?} timed out after {timeout:?}")]
    Timeout {
        /// The request's subject.
        subject: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// A payload could not be encoded or decoded.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The bus was shut down, or its connection is gone for good.
    #[error("bus closed")]
    Closed,
    /// The bus server could not be reached. `url` has any user, password or token removed; the cause
    /// (e.g. connection refused, timed out, authorization violation) is the error's
    /// [`source`](std::error::Error::source).
    #[error("cannot connect to {server} at {url}")]
    Connect {
        /// The kind of server, e.g. `NATS`.
        server: &'static str,
        /// The server address, without credentials.
        url: String,
        /// Why the connection failed.
        #[source]
        source: BoxError,
    },
    /// The server did not confirm a new subscription in time, so it may not be active yet.
    #[error("the bus server did not confirm the subscription to {pattern:?} within {timeout:?}")]
    Unconfirmed {
        /// The subscription's pattern.
        pattern: String,
        /// How long was waited.
        timeout: Duration,
    },
    /// A message id given to [`EventBus::publish_with_id`] is empty, longer than
    /// [`MAX_MESSAGE_ID_LEN`] bytes, or holds a control character (it travels in a header line).
    #[error("invalid message id {id:?}: {reason}")]
    InvalidMessageId {
        /// The id as given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The transport failed during `operation` (e.g. the NATS connection broke while publishing).
    #[error("bus transport failed to {operation}")]
    Transport {
        /// What was being done: `publish`, `subscribe`, `request` or `flush`.
        operation: &'static str,
        /// The transport's error.
        #[source]
        source: BoxError,
    },
}

/// One message on the bus: the envelope of every event.
///
/// Cheap to clone (reference-counted subject and payload), so delivering one publish to many
/// subscribers copies no bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    subject: Arc<str>,
    reply: Option<Arc<str>>,
    payload: Bytes,
}

impl Message {
    /// A message as a subscriber sees it. Buses build these; tests and in-process runtimes may too.
    pub fn new(subject: impl Into<Arc<str>>, reply: Option<Arc<str>>, payload: Bytes) -> Self {
        Self { subject: subject.into(), reply, payload }
    }

    /// The subject it was published to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Where a reply should be published, when this is a request.
    pub fn reply(&self) -> Option<&str> {
        self.reply.as_deref()
    }

    /// The raw payload (JSON for every subject Rosey defines).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Decodes the JSON payload into one of the [`event`] types.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, PayloadError> {
        event::decode(&self.payload)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("subject", &self.subject)
            .field("reply", &self.reply)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// A live subscription: a stream of the messages matching its pattern, in publish order per publisher.
///
/// Dropping it unsubscribes. The stream ends only when the bus itself is closed.
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Message> + Send + Sync>>,
}

impl Subscription {
    /// Wraps a stream of messages; used by [`EventBus`] implementations. Whatever the stream owns is
    /// dropped with the subscription, which is how implementations unsubscribe.
    pub fn new(stream: impl Stream<Item = Message> + Send + Sync + 'static) -> Self {
        Self { inner: Box::pin(stream) }
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// The longest id [`EventBus::publish_with_id`] accepts, in bytes: enough for a node name, an event id
/// and a reply index, small enough that a header never crowds the payload.
pub const MAX_MESSAGE_ID_LEN: usize = 256;

/// Checks an id for [`EventBus::publish_with_id`]: non-empty, at most [`MAX_MESSAGE_ID_LEN`] bytes, no
/// control characters (a NATS header value ends at a line break). Every implementation applies the
/// same rule, so an id that works in process works on NATS too.
pub fn validate_message_id(id: &str) -> Result<(), BusError> {
    let reason = if id.is_empty() {
        "it is empty"
    } else if id.len() > MAX_MESSAGE_ID_LEN {
        "it is longer than 256 bytes"
    } else if id.chars().any(char::is_control) {
        "it holds a control character"
    } else {
        return Ok(());
    };
    Err(BusError::InvalidMessageId { id: id.chars().take(64).collect(), reason })
}

/// Publish/subscribe with NATS semantics, the one way Rosey's parts and nodes talk.
///
/// Contract, checked by the conformance suite for every implementation:
/// - subjects and patterns follow [`subject`](crate::subject); invalid ones are an error, never a panic;
/// - a subscription is active when `subscribe` returns: a publish that starts afterwards reaches it;
/// - messages from one publisher reach each subscriber in publish order;
/// - each queue group receives each message once, whichever member gets it;
/// - `request` fails fast with [`BusError::NoResponders`] when nobody listens, and with
///   [`BusError::Timeout`] when nobody answers in time;
/// - `publish` never waits for subscribers; what a subscriber cannot keep up with is the
///   implementation's documented overflow policy, never unbounded memory.
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Publishes `payload` on `subject` (no wildcards).
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError>;

    /// Publishes `payload` on `subject` with an id that names this message for de-duplication: where the
    /// subject is stored by a JetStream stream (the outgoing chat queue, see `rosey_core::cluster`),
    /// the server keeps one message per id within the stream's duplicate window, so a publisher that
    /// is not sure its first attempt arrived can publish again with the same id. Subscribers see it as
    /// a plain publish.
    ///
    /// The default, for buses without such storage (the in-process bus), checks the id with
    /// [`validate_message_id`] and publishes plainly. `NatsBus` sends it as the `Nats-Msg-Id` header.
    async fn publish_with_id(
        &self,
        subject: &str,
        id: &str,
        payload: Bytes,
    ) -> Result<(), BusError> {
        validate_message_id(id)?;
        self.publish(subject, payload).await
    }

    /// Subscribes to every subject matching `pattern`.
    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError>;

    /// Subscribes as a member of queue group `group`: each message matching `pattern` goes to one
    /// member of the group only (per pattern and group), while plain subscribers still get every one.
    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription, BusError>;

    /// Publishes `payload` on `subject` with a fresh reply subject and waits up to `timeout` for the
    /// first reply.
    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError>;

    /// Sends a request and returns once it is on its way — in order with this client's other
    /// publishes and sent requests, so a caller sending several in a row has them arrive in that order —
    /// with a future of its first reply within `timeout`. [`request`](Self::request) is this and the
    /// wait in one call. [`BusError::NoResponders`] comes from the send when the bus knows at once, or
    /// from the future.
    async fn send_request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<PendingReply, BusError>;

    /// Waits until everything published so far has left this client (a no-op in process).
    async fn flush(&self) -> Result<(), BusError> {
        Ok(())
    }
}

/// Typed conveniences over any [`EventBus`].
#[async_trait]
pub trait EventBusExt: EventBus {
    /// Encodes `payload` as JSON and publishes it.
    async fn publish_json<T: Serialize + Sync>(
        &self,
        subject: &str,
        payload: &T,
    ) -> Result<(), BusError> {
        let bytes = event::encode(payload)?;
        self.publish(subject, bytes).await
    }

    /// Answers a request: publishes `payload` on the message's reply subject. A message without a
    /// reply subject was not a request, so there is nobody to answer and this does nothing.
    async fn respond(&self, request: &Message, payload: Bytes) -> Result<(), BusError> {
        match request.reply() {
            Some(reply) => self.publish(reply, payload).await,
            None => Ok(()),
        }
    }
}

impl<B: EventBus + ?Sized> EventBusExt for B {}

#[async_trait]
impl<B: EventBus + ?Sized> EventBus for Arc<B> {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        (**self).publish(subject, payload).await
    }
    async fn publish_with_id(
        &self,
        subject: &str,
        id: &str,
        payload: Bytes,
    ) -> Result<(), BusError> {
        (**self).publish_with_id(subject, id, payload).await
    }
    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        (**self).subscribe(pattern).await
    }
    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription, BusError> {
        (**self).queue_subscribe(pattern, group).await
    }
    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        (**self).request(subject, payload, timeout).await
    }
    async fn send_request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<PendingReply, BusError> {
        (**self).send_request(subject, payload, timeout).await
    }
    async fn flush(&self) -> Result<(), BusError> {
        (**self).flush().await
    }
}
