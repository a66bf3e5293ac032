//! Building blocks for running several Rosey nodes on one NATS server with JetStream (cargo feature
//! `nats`): a leader [`lease`] so exactly one node holds the CyTube connection, and the outgoing
//! [`chat_queue`] so replies published while no node holds it are sent once one does, each once.
//!
//! Both live in JetStream, so they survive any node: the lease is a key in a key-value bucket whose
//! keys expire (a dead holder's claim runs out by itself), the queue a work-queue stream with a durable
//! consumer (what the dead holder had not acknowledged is delivered to the next one). The timing
//! argument and the failure modes are in `docs/SCALING.md`, "Leader lease and chat queue".
//!
//! ```no_run
//! use rosey_core::bus::NatsBus;
//! use rosey_core::cluster::{ChatQueue, ChatQueueOptions, Lease, LeaseOptions};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = NatsBus::connect("nats://127.0.0.1:4222").await?;
//! let client = bus.client().clone();
//! let lease = Lease::start(client.clone(), LeaseOptions::new("cytube", "node-a")).await?;
//! let mut held = lease.watch();
//! loop {
//!     held.wait_for(|held| *held).await?; // this node holds the connection from here…
//!     let mut queue = ChatQueue::open(client.clone(), ChatQueueOptions::default()).await?;
//!     loop {
//!         tokio::select! {
//!             line = queue.next() => {
//!                 let line = line?;
//!                 // …sends `line.payload()` to the channel, then:
//!                 line.ack().await?;
//!             }
//!             // Lost: the queue is dropped, so this node pulls no more lines.
//!             _ = held.wait_for(|held| !*held) => break,
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod chat_queue;
pub mod lease;
#[cfg(feature = "cytube")]
pub mod leased;

use std::time::Duration;

use crate::bus::BusError;
use crate::error::BoxError;
use crate::service::TaskFailed;

pub use chat_queue::{ChatQueue, ChatQueueOptions, Delivery, Stored};
pub use lease::{Lease, LeaseHandle, LeaseOptions};
#[cfg(feature = "cytube")]
pub use leased::LeasedCytube;

/// What went wrong setting up or using the lease or the chat queue.
///
/// A lease that cannot be renewed is not an error: it is reported as not held (see
/// [`LeaseHandle::watch`]) and claimed again when it can be.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The lease options cannot give the promise of a lease (see [`LeaseOptions`]).
    #[error("invalid lease options: {reason}")]
    InvalidLeaseOptions {
        /// What is wrong, naming the option.
        reason: String,
    },
    /// The key-value bucket of the lease could not be opened or created (JetStream off, no
    /// permission, the server unreachable…).
    #[error("cannot open the lease bucket {bucket:?}")]
    LeaseBucket {
        /// The bucket.
        bucket: String,
        /// The JetStream error.
        #[source]
        source: BoxError,
    },
    /// The lease bucket exists with another expiry than this lease's ttl. A holder trusts its claim
    /// for a little less than its own ttl, so a bucket expiring keys sooner would let two nodes hold
    /// at once; every node must use the same ttl (or the bucket be deleted to start afresh).
    #[error(
        "the lease bucket {bucket:?} expires keys after {bucket_ttl:?}, but this lease's ttl is \
         {ttl:?}: every node must use the same ttl"
    )]
    LeaseTtlMismatch {
        /// The bucket.
        bucket: String,
        /// The bucket's `max_age`.
        bucket_ttl: Duration,
        /// This lease's ttl.
        ttl: Duration,
    },
    /// The chat queue options are not usable (see [`ChatQueueOptions`]).
    #[error("invalid chat queue options: {reason}")]
    InvalidQueueOptions {
        /// What is wrong, naming the option.
        reason: String,
    },
    /// The stream of the chat queue could not be created or brought to the options' configuration
    /// (JetStream off, no permission, a stream of that name with another retention policy…).
    #[error("cannot create or update the stream {stream:?}")]
    Stream {
        /// The stream.
        stream: String,
        /// The JetStream error.
        #[source]
        source: BoxError,
    },
    /// The durable consumer of the chat queue could not be created or updated.
    #[error("cannot create the consumer {consumer:?} of the stream {stream:?}")]
    Consumer {
        /// The stream.
        stream: String,
        /// The consumer.
        consumer: String,
        /// The JetStream error.
        #[source]
        source: BoxError,
    },
    /// A confirmed publish to the chat queue failed or was not confirmed in time.
    #[error("cannot publish to the chat queue on {subject:?}")]
    Publish {
        /// The subject.
        subject: String,
        /// The JetStream error.
        #[source]
        source: BoxError,
    },
    /// Pulling from the chat queue failed. The next call to [`ChatQueue::next`] tries again.
    #[error("cannot receive from the chat queue {stream:?}")]
    Receive {
        /// The stream.
        stream: String,
        /// The JetStream error.
        #[source]
        source: BoxError,
    },
    /// Acknowledging a delivery failed or was not confirmed: the server may deliver it again.
    #[error("cannot {operation} chat queue message {sequence}")]
    Acknowledge {
        /// `ack`, `nak` or `mark in progress`.
        operation: &'static str,
        /// The message's sequence in the stream.
        sequence: u64,
        /// The JetStream error.
        #[source]
        source: BoxError,
    },
    /// The stream's size could not be read.
    #[error("cannot read the state of the stream {stream:?}")]
    StreamInfo {
        /// The stream.
        stream: String,
        /// The JetStream error.
        #[source]
        source: BoxError,
    },
    /// A subject or message id was refused before anything was sent.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The lease task panicked or was cancelled by the runtime.
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// Wraps any error as a boxed cause.
fn boxed<E: std::error::Error + Send + Sync + 'static>(error: E) -> BoxError {
    Box::new(error)
}

/// A JetStream request that did not answer within the time it was given (the cause of errors whose
/// request this module timed out itself).
#[derive(Debug, thiserror::Error)]
#[error("no answer from JetStream within {0:?}")]
pub struct NoAnswer(pub Duration);
