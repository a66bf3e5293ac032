//! A leader lease in a JetStream key-value bucket: at most one holder at any instant, and a new holder
//! within `ttl + renew_every` of the old one dying, with no coordinator but the NATS server.
//!
//! # How
//!
//! The bucket (`rosey-leases` by default) keeps one value per key (history 1) and expires it `ttl`
//! after it was written (`max_age = ttl`). A node claims the key with `create`, which the server
//! accepts only when the key is absent (never written, deleted, or expired), and renews it every
//! `renew_every` with `update` at the revision it holds, which the server accepts only when nobody
//! wrote the key since. The value names the holder and a token unique to this [`LeaseHandle`], so a
//! node can take back a key it still holds after a renew whose answer it missed, and nobody else can.
//!
//! # Why two holders never overlap
//!
//! Let `t` be the instant, on this node's monotonic clock, just *before* it sent a write (claim or
//! renew) that the server confirmed. The server stored that write at or after `t`, so it cannot expire
//! the key before `t + ttl` (by its own clock); until then no other node's `create` succeeds, and no
//! other node's `update` can match our revision. This node counts itself holder only until
//! `t + ttl - margin` and flips [`LeaseHandle::watch`] to `false` then, renewed or not — waiting for a
//! renew's answer never extends it. [`LeaseHandle::held`] checks the same deadline itself, so a task
//! that runs late cannot make it lie. The `margin` (default `ttl / 5`, 1 s for the default 5 s) absorbs
//! this node's scheduling delay and the two clocks' drift over one ttl. A renew the server *refused*
//! (someone else's revision, or the key deleted by an operator) flips to `false` at once. A renew
//! whose answer is lost or late leaves the deadline where the last confirmed write put it: the claim
//! is as good as it was, for exactly as long as it was.
//!
//! What this does not cover, and `docs/SCALING.md` lists: the NATS server's wall clock jumping
//! forward by more than `margin` (the key expires early), and a holder process frozen for longer than
//! `margin` between checking [`held`](LeaseHandle::held) and acting on it.
//!
//! ```no_run
//! use rosey_core::cluster::{Lease, LeaseOptions};
//!
//! # async fn run(client: async_nats::Client) -> Result<(), rosey_core::cluster::ClusterError> {
//! let lease = Lease::start(client, LeaseOptions::new("cytube", "node-a")).await?;
//! if lease.held() {
//!     // this node is the one to hold the CyTube connection
//! }
//! lease.stop().await?; // released: another node can claim it at its next try
//! # Ok(()) }
//! ```

mod claimer;
mod options;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{ClusterError, boxed};
use crate::error::BoxError;
use crate::service::ServiceHandle;
use claimer::{Claimer, LeaseRecord};
pub use options::{DEFAULT_BUCKET, DEFAULT_TTL, LeaseOptions, MIN_TTL};

/// The leader lease service. It has no values: [`Lease::start`] starts one and returns its
/// [`LeaseHandle`].
#[derive(Debug)]
pub enum Lease {}

impl Lease {
    /// Opens the bucket (creating it with `max_age = ttl` and history 1 when missing), makes a first
    /// claim, and starts the task that renews the lease while held and claims it while not.
    ///
    /// Returns once the first claim has been answered (or has failed), so [`LeaseHandle::held`]
    /// right away says whether this node won it. Takes the client of the node's bus, e.g.
    /// `NatsBus::client().clone()`.
    ///
    /// # Errors
    /// [`ClusterError::InvalidLeaseOptions`] for options that cannot keep the promise,
    /// [`ClusterError::LeaseBucket`] when the bucket cannot be opened or created, and
    /// [`ClusterError::LeaseTtlMismatch`] when it exists with another `max_age` than `ttl`.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn start(
        client: async_nats::Client,
        options: LeaseOptions,
    ) -> Result<LeaseHandle, ClusterError> {
        options.validate()?;
        let store = open_bucket(&jetstream::new(client), &options).await?;
        let token = unique_token(&options.holder);
        let record = LeaseRecord { holder: options.holder.clone(), token: token.clone() };
        // Serializing two strings cannot fail; an empty value would only hide the holder's name.
        let value = serde_json::to_vec(&record).map(Bytes::from).unwrap_or_default();
        let (held_tx, held_rx) = watch::channel(false);
        let deadline = Arc::new(Mutex::new(None));
        let mut claimer = Claimer {
            store,
            options: options.clone(),
            value,
            token,
            held_tx,
            deadline: deadline.clone(),
            failing: false,
        };
        let first = claimer.claim().await;
        claimer.publish(first.as_ref());
        let service = ServiceHandle::spawn("lease", move |stop| claimer.run(first, stop));
        Ok(LeaseHandle { service, held: held_rx, deadline, options })
    }
}

/// A running lease: whether this node holds it, and the way to give it up.
///
/// Dropping the handle stops the lease too (released in the background); [`stop`](Self::stop)
/// waits until it is released.
#[derive(Debug)]
#[must_use = "dropping the handle gives the lease up"]
pub struct LeaseHandle {
    service: ServiceHandle<ClusterError>,
    held: watch::Receiver<bool>,
    deadline: Arc<Mutex<Option<Instant>>>,
    options: LeaseOptions,
}

impl LeaseHandle {
    /// `true` while this node holds the lease, `false` otherwise, changing as it is won and lost:
    /// what the CyTube connector follows to connect and disconnect. It turns `false` no later than
    /// `ttl - margin` after the last confirmed renew, before the server can let anyone else claim
    /// it. The sender is gone (`changed()` fails) once the lease has stopped.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.held.clone()
    }

    /// Whether this node holds the lease now: the watched flag, and the claim's deadline not passed
    /// (so the answer is right even when the lease task runs late).
    pub fn held(&self) -> bool {
        *self.held.borrow() && self.deadline.lock().is_some_and(|until| Instant::now() < until)
    }

    /// The options the lease runs with.
    pub fn options(&self) -> &LeaseOptions {
        &self.options
    }

    /// Stops claiming and renewing and, when held, releases the key (after turning the flag to
    /// `false`), so another node can claim it at its next try instead of after `ttl`. Waits until
    /// done: a claim or renew already on its way is answered first, so at most two requests, each
    /// bounded by `renew_every`.
    ///
    /// # Errors
    /// [`ClusterError::Task`] when the lease task panicked.
    pub async fn stop(self) -> Result<(), ClusterError> {
        self.service.shutdown().await
    }
}

/// The bucket, created when missing; refused when it expires keys after another time than `ttl`.
async fn open_bucket(
    jetstream: &jetstream::Context,
    options: &LeaseOptions,
) -> Result<kv::Store, ClusterError> {
    let bucket_error =
        |source: BoxError| ClusterError::LeaseBucket { bucket: options.bucket.clone(), source };
    let store = match jetstream.get_key_value(&options.bucket).await {
        Ok(store) => store,
        Err(_) => {
            // Another node creating it at the same moment with the same options is not an error:
            // the server accepts an identical configuration.
            jetstream
                .create_stream(bucket_stream(options))
                .await
                .map_err(|error| bucket_error(boxed(error)))?;
            jetstream
                .get_key_value(&options.bucket)
                .await
                .map_err(|error| bucket_error(boxed(error)))?
        }
    };
    let status = store.status().await.map_err(|error| bucket_error(boxed(error)))?;
    if status.max_age() != options.ttl {
        return Err(ClusterError::LeaseTtlMismatch {
            bucket: options.bucket.clone(),
            bucket_ttl: status.max_age(),
            ttl: options.ttl,
        });
    }
    Ok(store)
}

/// The stream behind a key-value bucket holding leases, laid out as every NATS client lays out a
/// bucket (`KV_<bucket>` storing `$KV.<bucket>.>`), with one value per key expiring after `ttl`.
///
/// Created as a stream rather than with the client's `create_key_value`, which first reads the
/// account's JetStream limits in a form nats-server 2.9 does not send.
fn bucket_stream(options: &LeaseOptions) -> stream::Config {
    stream::Config {
        name: format!("KV_{}", options.bucket),
        description: Some("Rosey leader leases (rosey_core::cluster::lease)".to_owned()),
        subjects: vec![format!("$KV.{}.>", options.bucket)],
        max_messages_per_subject: 1,
        max_age: options.ttl,
        storage: stream::StorageType::File,
        num_replicas: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..stream::Config::default()
    }
}

/// A token no other [`LeaseHandle`] uses: the holder, this process, the time and a counter.
fn unique_token(holder: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{holder}/{}/{nanos}/{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_between_handles() {
        assert_ne!(unique_token("a"), unique_token("a"));
    }
}
