//! The outgoing chat queue: a JetStream work-queue stream that stores every `cytube.chat.send` and
//! `cytube.pm.send`, and a durable consumer the node holding the CyTube connection pulls them from.
//!
//! Plugins and the host keep publishing replies on the bus as before; once the stream exists the
//! server stores them whether or not any node holds the connection, for up to `max_age`. A reply
//! published with [`EventBus::publish_with_id`](crate::bus::EventBus::publish_with_id) is stored
//! once per id within `duplicate_window`, so a publisher may retry. The holder takes one line at a
//! time with [`ChatQueue::next`], sends it, and [acknowledges](Delivery::ack) it, which removes it
//! from the stream. A line delivered but never acknowledged (its holder died) is delivered again
//! after `ack_wait`, to whichever node pulls then.
//!
//! With `max_ack_pending = 1` (the default) the server hands out the next line only once the
//! previous one is acknowledged, so lines reach the channel in the order they were published even
//! across a failover, and at most one line is in doubt when a holder dies: the one it was sending.
//! That line is delivered again (its [`delivery_count`](Delivery::delivery_count) above 1), and is
//! sent twice if the dead holder had sent it but not acknowledged it.
//!
//! ```no_run
//! use rosey_core::cluster::{ChatQueue, ChatQueueOptions};
//!
//! # async fn run(client: async_nats::Client) -> Result<(), rosey_core::cluster::ClusterError> {
//! let mut queue = ChatQueue::open(client, ChatQueueOptions::default()).await?;
//! let line = queue.next().await?;
//! println!("{} {:?}", line.subject(), line.payload());
//! line.ack().await?; // removed from the queue once the server confirms
//! # Ok(()) }
//! ```

use std::time::Duration;

use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use futures_util::StreamExt;

use super::{ClusterError, NoAnswer, boxed};
use crate::bus::validate_message_id;
use crate::event::{self, PayloadError};
use crate::subject;

/// The stream's name unless told otherwise.
pub const DEFAULT_STREAM: &str = "ROSEY_CHAT_OUT";

/// The durable consumer's name unless told otherwise: the one the connection holder pulls with.
pub const DEFAULT_CONSUMER: &str = "rosey-connector";

/// How long a confirmed publish waits for the server's answer.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// How the chat queue's stream and consumer are configured. Every node must use the same options:
/// opening the queue brings the stream and the consumer to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatQueueOptions {
    /// The stream (`ROSEY_CHAT_OUT`).
    pub stream: String,
    /// The subjects it stores (`cytube.chat.send` and `cytube.pm.send`). No other stream may store
    /// them.
    pub subjects: Vec<String>,
    /// The durable consumer the connection holder pulls with (`rosey-connector`).
    pub consumer: String,
    /// How long the server remembers a message id to drop a second publish with it (2 min).
    pub duplicate_window: Duration,
    /// How long a line waits for a holder before it is dropped as stale (1 h).
    pub max_age: Duration,
    /// How many lines the stream keeps at most; beyond it the oldest is dropped (10 000).
    pub max_messages: i64,
    /// How long a delivered line may stay unacknowledged before it is delivered again (10 s): the
    /// longest a failover holds up the queue, and how long a holder may take to send one line
    /// without calling [`Delivery::in_progress`].
    pub ack_wait: Duration,
    /// How many delivered lines may be unacknowledged at once (1: one line in flight, strict order).
    pub max_ack_pending: i64,
    /// How many times a line is delivered before the server gives up on it (5), so a line that
    /// makes every holder fail cannot block the queue for good.
    pub max_deliver: i64,
}

impl Default for ChatQueueOptions {
    fn default() -> Self {
        Self {
            stream: DEFAULT_STREAM.to_owned(),
            subjects: vec![subject::CHAT_SEND.to_owned(), subject::PM_SEND.to_owned()],
            consumer: DEFAULT_CONSUMER.to_owned(),
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(3600),
            max_messages: 10_000,
            ack_wait: Duration::from_secs(10),
            max_ack_pending: 1,
            max_deliver: 5,
        }
    }
}

impl ChatQueueOptions {
    fn validate(&self) -> Result<(), ClusterError> {
        let invalid = |reason: String| Err(ClusterError::InvalidQueueOptions { reason });
        let name_ok = |name: &str| {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !name_ok(&self.stream) {
            return invalid(format!(
                "stream {:?} must be letters, digits, '-' and '_'",
                self.stream
            ));
        }
        if !name_ok(&self.consumer) {
            return invalid(format!(
                "consumer {:?} must be letters, digits, '-' and '_'",
                self.consumer
            ));
        }
        if self.subjects.is_empty() {
            return invalid("subjects must name at least one subject".to_owned());
        }
        for subject in &self.subjects {
            if let Err(error) = subject::validate_pattern(subject) {
                return invalid(format!("subject {subject:?}: {error}"));
            }
        }
        if self.duplicate_window.is_zero() || self.duplicate_window > self.max_age {
            return invalid(format!(
                "duplicate_window {:?} must be above zero and at most max_age {:?}",
                self.duplicate_window, self.max_age
            ));
        }
        if self.ack_wait.is_zero() {
            return invalid("ack_wait must be above zero".to_owned());
        }
        if self.max_messages < 1 || self.max_ack_pending < 1 || self.max_deliver < 1 {
            return invalid(
                "max_messages, max_ack_pending and max_deliver must be at least 1".to_owned(),
            );
        }
        Ok(())
    }

    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            description: Some("Rosey's outgoing chat (rosey_core::cluster::chat_queue)".to_owned()),
            subjects: self.subjects.clone(),
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            max_messages: self.max_messages,
            max_age: self.max_age,
            duplicate_window: self.duplicate_window,
            ..stream::Config::default()
        }
    }

    fn consumer_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.consumer.clone()),
            description: Some("the node holding the CyTube connection".to_owned()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_ack_pending: self.max_ack_pending,
            max_deliver: self.max_deliver,
            ..pull::Config::default()
        }
    }
}

/// The chat queue as one node sees it: publish to it with confirmation, pull from it while holding
/// the connection.
///
/// A `ChatQueue` pulls from its first [`next`](Self::next) until it is dropped, keeping at most one
/// line ready in advance (the server hands it over only within `max_ack_pending`). A node that loses
/// the lease drops its queue; a line it had pulled but not acknowledged is delivered again after
/// `ack_wait`.
pub struct ChatQueue {
    jetstream: Context,
    options: ChatQueueOptions,
    consumer: PullConsumer,
    /// Open from the first `next` on; `None` again after the consumer went away, to be reopened.
    messages: Option<pull::Stream>,
}

impl ChatQueue {
    /// Creates the stream and the durable consumer, or brings existing ones to `options`; safe to
    /// call from every node at once. Pulls nothing yet.
    ///
    /// # Errors
    /// [`ClusterError::InvalidQueueOptions`], [`ClusterError::Stream`] (JetStream off, no
    /// permission, another stream storing these subjects, a stream of that name with another
    /// retention), [`ClusterError::Consumer`].
    pub async fn open(
        client: async_nats::Client,
        options: ChatQueueOptions,
    ) -> Result<Self, ClusterError> {
        options.validate()?;
        let jetstream = jetstream::new(client);
        jetstream.create_or_update_stream(options.stream_config()).await.map_err(|error| {
            ClusterError::Stream { stream: options.stream.clone(), source: boxed(error) }
        })?;
        let consumer = create_consumer(&jetstream, &options).await?;
        tracing::debug!(
            message = "chat queue open",
            stream = %options.stream,
            consumer = %options.consumer,
        );
        Ok(Self { jetstream, options, consumer, messages: None })
    }

    /// The options the queue was opened with.
    pub fn options(&self) -> &ChatQueueOptions {
        &self.options
    }

    /// Publishes a line and waits until the server has stored it (or found it a duplicate of an id
    /// stored within `duplicate_window`). For a publisher that must know: plain bus publishes are
    /// stored too, without the confirmation.
    ///
    /// # Errors
    /// [`ClusterError::Bus`] for an invalid subject or id, [`ClusterError::Publish`] when the server
    /// refused it (no stream stores `subject`) or did not answer within 5 s; publishing again with
    /// the same id is then safe.
    pub async fn publish(
        &self,
        subject: &str,
        id: &str,
        payload: Bytes,
    ) -> Result<Stored, ClusterError> {
        subject::validate_publish(subject).map_err(crate::bus::BusError::from)?;
        validate_message_id(id)?;
        let publish_error = |source| ClusterError::Publish { subject: subject.to_owned(), source };
        let message = jetstream::message::PublishMessage::build().message_id(id).payload(payload);
        let confirmed =
            async { self.jetstream.send_publish(subject.to_owned(), message).await?.await };
        match tokio::time::timeout(PUBLISH_TIMEOUT, confirmed).await {
            Ok(Ok(ack)) => Ok(Stored { sequence: ack.sequence, duplicate: ack.duplicate }),
            Ok(Err(error)) => Err(publish_error(boxed(error))),
            Err(_) => Err(publish_error(boxed(NoAnswer(PUBLISH_TIMEOUT)))),
        }
    }

    /// The next line to send, waiting as long as it takes for one. Lines come in publish order;
    /// with `max_ack_pending = 1` the next one comes only after this one is acknowledged (or its
    /// `ack_wait` ran out).
    ///
    /// Cancel-safe: a line the server handed over while this future was dropped is returned by the
    /// next call. Losing the connection to NATS is waited out (the client reconnects and pulls
    /// again).
    ///
    /// # Errors
    /// [`ClusterError::Receive`] when pulling failed for a reason waiting does not cure (the
    /// consumer was deleted, JetStream went away); the next call reopens the consumer and tries
    /// again. [`ClusterError::Consumer`] when reopening it fails.
    pub async fn next(&mut self) -> Result<Delivery, ClusterError> {
        loop {
            let messages = match &mut self.messages {
                Some(messages) => messages,
                None => {
                    let opened = self.open_messages().await?;
                    self.messages.insert(opened)
                }
            };
            let received = messages.next().await;
            let error = match received {
                Some(Ok(message)) => return Delivery::new(message, &self.options.stream),
                Some(Err(error)) if error.kind() == MessagesErrorKind::MissingHeartbeat => {
                    // No heartbeat from the server: the connection is down or was. The pull
                    // stream asks again once the client has reconnected.
                    tracing::debug!(message = "chat queue: heartbeat missed", stream = %self.options.stream);
                    continue;
                }
                Some(Err(error)) => boxed(error),
                None => boxed(PullEnded),
            };
            self.messages = None;
            return Err(ClusterError::Receive {
                stream: self.options.stream.clone(),
                source: error,
            });
        }
    }

    /// How many lines the stream holds now: waiting, and delivered but not yet acknowledged.
    ///
    /// # Errors
    /// [`ClusterError::StreamInfo`] when the server does not answer.
    pub async fn backlog(&self) -> Result<u64, ClusterError> {
        let info_error =
            |source| ClusterError::StreamInfo { stream: self.options.stream.clone(), source };
        let mut stream = self
            .jetstream
            .get_stream(&self.options.stream)
            .await
            .map_err(|e| info_error(boxed(e)))?;
        let info = stream.info().await.map_err(|error| info_error(boxed(error)))?;
        Ok(info.state.messages)
    }

    /// (Re)creates the consumer when it was lost, and starts pulling one line at a time.
    async fn open_messages(&mut self) -> Result<pull::Stream, ClusterError> {
        let receive_error =
            |source| ClusterError::Receive { stream: self.options.stream.clone(), source };
        let consumer = match self.consumer.info().await {
            Ok(_) => self.consumer.clone(),
            Err(_) => create_consumer(&self.jetstream, &self.options).await?,
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(1)
            .messages()
            .await
            .map_err(|error| receive_error(boxed(error)))?;
        self.consumer = consumer;
        Ok(messages)
    }
}

impl std::fmt::Debug for ChatQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatQueue")
            .field("stream", &self.options.stream)
            .field("consumer", &self.options.consumer)
            .field("pulling", &self.messages.is_some())
            .finish_non_exhaustive()
    }
}

async fn create_consumer(
    jetstream: &Context,
    options: &ChatQueueOptions,
) -> Result<PullConsumer, ClusterError> {
    jetstream.create_consumer_on_stream(options.consumer_config(), &options.stream).await.map_err(
        |error| ClusterError::Consumer {
            stream: options.stream.clone(),
            consumer: options.consumer.clone(),
            source: boxed(error),
        },
    )
}

/// The cause of a [`ClusterError::Receive`] when the client ended the pull (its connection closed
/// for good).
#[derive(Debug, thiserror::Error)]
#[error("the pull from the consumer ended")]
struct PullEnded;

/// What the server said about a confirmed [`ChatQueue::publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The line's sequence in the stream (for a duplicate: the first one's).
    pub sequence: u64,
    /// Whether a line with the same id was already stored within the duplicate window, so this
    /// one was dropped.
    pub duplicate: bool,
}

/// One line handed to this node to send: its subject and payload, and the acknowledgements that
/// say what became of it. Dropping it unacknowledged leaves it to be delivered again after
/// `ack_wait`.
#[derive(Debug)]
pub struct Delivery {
    message: jetstream::Message,
    sequence: u64,
    delivery_count: u64,
}

impl Delivery {
    fn new(message: jetstream::Message, stream: &str) -> Result<Self, ClusterError> {
        let (sequence, delivery_count) = match message.info() {
            Ok(info) => (info.stream_sequence, u64::try_from(info.delivered).unwrap_or(1)),
            Err(source) => return Err(ClusterError::Receive { stream: stream.to_owned(), source }),
        };
        Ok(Self { message, sequence, delivery_count })
    }

    /// The subject it was published on (`cytube.chat.send` or `cytube.pm.send`).
    pub fn subject(&self) -> &str {
        self.message.subject.as_str()
    }

    /// The payload as published (JSON for Rosey's subjects).
    pub fn payload(&self) -> &Bytes {
        &self.message.payload
    }

    /// Decodes the JSON payload into one of the [`event`] types.
    ///
    /// # Errors
    /// When the payload is not that type's JSON.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, PayloadError> {
        event::decode(&self.message.payload)
    }

    /// The id it was published with (`Nats-Msg-Id`), if any.
    pub fn message_id(&self) -> Option<&str> {
        let headers = self.message.headers.as_ref()?;
        headers.get(async_nats::header::NATS_MESSAGE_ID).map(|value| value.as_str())
    }

    /// Its sequence in the stream: increasing in publish order.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// How many times it has been delivered, this time included: above 1, a holder before this one
    /// had it and may have sent it.
    pub fn delivery_count(&self) -> u64 {
        self.delivery_count
    }

    /// Acknowledges it as sent and waits for the server to confirm, which removes it from the
    /// queue for good.
    ///
    /// # Errors
    /// [`ClusterError::Acknowledge`] when unconfirmed: the server may then deliver it again.
    pub async fn ack(self) -> Result<(), ClusterError> {
        self.message.double_ack().await.map_err(|source| ClusterError::Acknowledge {
            operation: "ack",
            sequence: self.sequence,
            source,
        })
    }

    /// Gives it back unsent: the server delivers it again at once (to whoever pulls), before any
    /// later line.
    ///
    /// # Errors
    /// [`ClusterError::Acknowledge`] when the nak could not be sent; it is then delivered again
    /// after `ack_wait`.
    pub async fn nak(self) -> Result<(), ClusterError> {
        self.message.ack_with(AckKind::Nak(None)).await.map_err(|source| {
            ClusterError::Acknowledge { operation: "nak", sequence: self.sequence, source }
        })
    }

    /// Tells the server this line is still being worked on, restarting its `ack_wait`: for a holder
    /// that must wait (a rate limit) before sending it.
    ///
    /// # Errors
    /// [`ClusterError::Acknowledge`] when it could not be sent.
    pub async fn in_progress(&self) -> Result<(), ClusterError> {
        self.message.ack_with(AckKind::Progress).await.map_err(|source| ClusterError::Acknowledge {
            operation: "mark in progress",
            sequence: self.sequence,
            source,
        })
    }
}
