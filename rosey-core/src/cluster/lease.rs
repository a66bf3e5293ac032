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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::{ClusterError, NoAnswer, boxed};
use crate::error::{BoxError, Chain};
use crate::service::ServiceHandle;

/// The bucket leases live in unless told otherwise.
pub const DEFAULT_BUCKET: &str = "rosey-leases";

/// The ttl of a lease unless told otherwise: a dead holder is replaced within about 5 s + 5/3 s.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// The shortest ttl [`Lease::start`] accepts: below it, the margin left for scheduling delays on a
/// busy machine is too thin to promise anything.
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// What a lease is for and how it is timed. [`LeaseOptions::new`] gives the defaults; every node
/// contending for one key must use the same `bucket` and `ttl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOptions {
    /// The key-value bucket, created when missing (letters, digits, `-`, `_`).
    pub bucket: String,
    /// What is leased, e.g. `cytube` (letters, digits, `-`, `_`, `/`, `=`, `.`; no leading or
    /// trailing `.`).
    pub key: String,
    /// Who claims it: the node's name, stored in the key so an operator can see who holds it.
    pub holder: String,
    /// How long the server keeps a claim that is not renewed. A dead holder is replaced within
    /// `ttl + renew_every`.
    pub ttl: Duration,
    /// How often the holder renews, and how often a node that does not hold it tries to claim it.
    /// Must be below `ttl - margin`; `ttl / 3` leaves room for two attempts.
    pub renew_every: Duration,
    /// How long before the server could expire the claim the holder stops counting itself holder:
    /// room for this node's scheduling delay and clock drift (see the [module docs](self)).
    pub margin: Duration,
}

impl LeaseOptions {
    /// A lease on `key` in [`DEFAULT_BUCKET`] for `holder`, with the timings of
    /// [`with_ttl`](Self::with_ttl)`(`[`DEFAULT_TTL`]`)`.
    pub fn new(key: impl Into<String>, holder: impl Into<String>) -> Self {
        let (ttl, renew_every, margin) = proportions(DEFAULT_TTL);
        Self {
            bucket: DEFAULT_BUCKET.to_owned(),
            key: key.into(),
            holder: holder.into(),
            ttl,
            renew_every,
            margin,
        }
    }

    /// Sets `ttl`, with `renew_every = ttl / 3` and `margin = ttl / 5`, the proportions the defaults
    /// use.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        (self.ttl, self.renew_every, self.margin) = proportions(ttl);
        self
    }

    /// Sets the bucket.
    pub fn in_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = bucket.into();
        self
    }

    /// Checks that the options can keep the lease's promise.
    fn validate(&self) -> Result<(), ClusterError> {
        let invalid = |reason: String| Err(ClusterError::InvalidLeaseOptions { reason });
        let bucket_ok = !self.bucket.is_empty()
            && self.bucket.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !bucket_ok {
            return invalid(format!(
                "bucket {:?} must be letters, digits, '-' and '_' only",
                self.bucket
            ));
        }
        let key_ok = !self.key.is_empty()
            && !self.key.starts_with('.')
            && !self.key.ends_with('.')
            && self.key.chars().all(|c| c.is_ascii_alphanumeric() || "-_/=.".contains(c));
        if !key_ok {
            return invalid(format!(
                "key {:?} must be letters, digits, '-', '_', '/', '=' and '.' (not first or last)",
                self.key
            ));
        }
        if self.holder.trim().is_empty() {
            return invalid("holder must name the node".to_owned());
        }
        if self.ttl < MIN_TTL {
            return invalid(format!("ttl {:?} is below the minimum {MIN_TTL:?}", self.ttl));
        }
        if self.margin.is_zero() || self.margin >= self.ttl {
            return invalid(format!(
                "margin {:?} must be above zero and below ttl {:?}",
                self.margin, self.ttl
            ));
        }
        if self.renew_every.is_zero() || self.renew_every >= self.ttl - self.margin {
            return invalid(format!(
                "renew_every {:?} must be above zero and below ttl - margin ({:?})",
                self.renew_every,
                self.ttl - self.margin
            ));
        }
        Ok(())
    }

    /// How long a confirmed write keeps this node holder, from just before it was sent.
    fn valid_for(&self) -> Duration {
        self.ttl - self.margin
    }
}

/// `(ttl, renew_every, margin)` in the default proportions: renew three times per ttl, stop trusting
/// the claim a fifth of a ttl before the server could expire it.
fn proportions(ttl: Duration) -> (Duration, Duration, Duration) {
    (ttl, ttl / 3, ttl / 5)
}

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

/// What a lease key holds: who, and which [`LeaseHandle`] of theirs.
#[derive(Debug, Serialize, Deserialize)]
struct LeaseRecord {
    holder: String,
    token: String,
}

/// A claim this node holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// The revision of our last confirmed write: what the next renew must match.
    revision: u64,
    /// When we stop counting ourselves holder unless renewed.
    valid_until: Instant,
    /// When to renew next.
    renew_at: Instant,
}

/// The lease task's state and the ways it writes the key.
struct Claimer {
    store: kv::Store,
    options: LeaseOptions,
    value: Bytes,
    token: String,
    held_tx: watch::Sender<bool>,
    deadline: Arc<Mutex<Option<Instant>>>,
    /// Whether the last claim attempt failed for another reason than "someone holds it": failures
    /// are logged as warnings once per streak, the rest at debug level.
    failing: bool,
}

impl Claimer {
    async fn run(
        mut self,
        mut held: Option<Held>,
        stop: CancellationToken,
    ) -> Result<(), ClusterError> {
        loop {
            let Some(current) = held else {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return Ok(()),
                    () = sleep(self.options.renew_every) => {}
                }
                // A claim is never cancelled half-way: had it succeeded unseen, the key would stay
                // ours until it expired instead of being released.
                held = self.claim().await;
                self.publish(held.as_ref());
                continue;
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    self.release(current).await;
                    return Ok(());
                }
                () = sleep_until(current.valid_until) => {
                    self.lose("it was not renewed in time");
                    held = None;
                }
                () = sleep_until(current.renew_at) => {
                    held = self.renew(current).await;
                }
            }
        }
    }

    /// Sets the flag and the deadline [`LeaseHandle::held`] reads. The deadline is set before the
    /// flag turns `true` and cleared before it turns `false`.
    fn publish(&self, held: Option<&Held>) {
        *self.deadline.lock() = held.map(|held| held.valid_until);
        self.held_tx.send_if_modified(|flag| {
            let changed = *flag != held.is_some();
            *flag = held.is_some();
            changed
        });
    }

    fn lose(&self, why: &str) {
        self.publish(None);
        tracing::warn!(
            message = "lease lost",
            key = %self.options.key,
            holder = %self.options.holder,
            reason = why,
        );
    }

    /// One claim: `create`, or, when the key holds our own token (a renew whose answer we missed),
    /// `update` at its revision. `None` when someone else holds it or the attempt failed.
    async fn claim(&mut self) -> Option<Held> {
        let sent = Instant::now();
        let request_timeout = self.options.renew_every;
        let created =
            timeout(request_timeout, self.store.create(&self.options.key, self.value.clone()))
                .await;
        let result: Result<Option<u64>, BoxError> = match created {
            Ok(Ok(revision)) => Ok(Some(revision)),
            Ok(Err(error)) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                self.take_back_own(request_timeout).await
            }
            Ok(Err(error)) => Err(boxed(error)),
            Err(_) => Err(boxed(NoAnswer(request_timeout))),
        };
        match result {
            Ok(Some(revision)) => {
                self.failing = false;
                tracing::info!(
                    message = "lease acquired",
                    key = %self.options.key,
                    holder = %self.options.holder,
                    revision,
                );
                Some(self.held_from(sent, revision))
            }
            Ok(None) => {
                self.failing = false;
                tracing::debug!(message = "lease held by another node", key = %self.options.key);
                None
            }
            Err(error) => {
                if !self.failing {
                    tracing::warn!(
                        message = "cannot claim the lease; trying again",
                        key = %self.options.key,
                        error = %Chain(error.as_ref()),
                    );
                }
                self.failing = true;
                None
            }
        }
    }

    /// The key exists: takes it back when it holds our token, else `None`.
    async fn take_back_own(&self, request_timeout: Duration) -> Result<Option<u64>, BoxError> {
        let entry = match timeout(request_timeout, self.store.entry(&self.options.key)).await {
            Ok(Ok(entry)) => entry,
            Ok(Err(error)) => return Err(boxed(error)),
            Err(_) => return Err(boxed(NoAnswer(request_timeout))),
        };
        let Some(entry) = entry.filter(|entry| entry.operation == kv::Operation::Put) else {
            // Deleted or expired between the two requests: the next attempt creates it.
            return Ok(None);
        };
        let ours = serde_json::from_slice::<LeaseRecord>(&entry.value)
            .is_ok_and(|record| record.token == self.token);
        if !ours {
            return Ok(None);
        }
        let update = self.store.update(&self.options.key, self.value.clone(), entry.revision);
        match timeout(request_timeout, update).await {
            Ok(Ok(revision)) => Ok(Some(revision)),
            Ok(Err(error)) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Ok(Err(error)) => Err(boxed(error)),
            Err(_) => Err(boxed(NoAnswer(request_timeout))),
        }
    }

    /// One renew. A refusal loses the lease at once; a failure or a late answer keeps it until its
    /// deadline and tries again soon.
    async fn renew(&self, current: Held) -> Option<Held> {
        let sent = Instant::now();
        let request_timeout = self.options.renew_every;
        let update = timeout(
            request_timeout,
            self.store.update(&self.options.key, self.value.clone(), current.revision),
        );
        tokio::pin!(update);
        let mut lost = false;
        let result = tokio::select! {
            biased;
            result = &mut update => result,
            () = sleep_until(current.valid_until) => {
                // The flag must not wait for the answer. A renew confirmed afterwards still makes
                // this node holder again: nobody else can have written the key in between.
                self.lose("it was not renewed in time");
                lost = true;
                update.await
            }
        };
        match result {
            Ok(Ok(revision)) => {
                let renewed = self.held_from(sent, revision);
                self.publish(Some(&renewed));
                if lost {
                    tracing::info!(message = "lease held again", key = %self.options.key, revision);
                }
                Some(renewed)
            }
            Ok(Err(error)) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                if !lost {
                    self.lose("another node holds it, or it was deleted");
                }
                None
            }
            other => {
                let error = match other {
                    Ok(Err(error)) => boxed(error),
                    _ => boxed(NoAnswer(request_timeout)),
                };
                tracing::warn!(
                    message = "cannot renew the lease",
                    key = %self.options.key,
                    error = %Chain(error.as_ref()),
                );
                if lost {
                    return None;
                }
                if Instant::now() >= current.valid_until {
                    self.lose("it was not renewed in time");
                    return None;
                }
                // Still ours until its deadline; try again before it.
                let retry_at =
                    (Instant::now() + self.options.renew_every / 2).min(current.valid_until);
                Some(Held { renew_at: retry_at, ..current })
            }
        }
    }

    /// Gives the key up: the flag turns `false` first, then the key is deleted if still at our
    /// revision (a renew that landed unseen makes the delete fail; the key then expires by itself).
    async fn release(&self, current: Held) {
        self.publish(None);
        let request_timeout = self.options.renew_every;
        let delete = self.store.delete_expect_revision(&self.options.key, Some(current.revision));
        match timeout(request_timeout, delete).await {
            Ok(Ok(())) => tracing::info!(
                message = "lease released",
                key = %self.options.key,
                holder = %self.options.holder,
            ),
            Ok(Err(error)) => tracing::warn!(
                message = "cannot release the lease; it expires by itself",
                key = %self.options.key,
                error = %Chain(&error),
            ),
            Err(_) => tracing::warn!(
                message = "cannot release the lease; it expires by itself",
                key = %self.options.key,
                error = %NoAnswer(request_timeout),
            ),
        }
    }

    fn held_from(&self, sent: Instant, revision: u64) -> Held {
        Held {
            revision,
            valid_until: sent + self.options.valid_for(),
            renew_at: sent + self.options.renew_every,
        }
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
    fn default_options_keep_the_promise() {
        let options = LeaseOptions::new("cytube", "node-a");
        assert_eq!(options.bucket, "rosey-leases");
        assert_eq!(options.ttl, Duration::from_secs(5));
        assert_eq!(options.margin, Duration::from_secs(1));
        assert!(options.validate().is_ok());
        assert!(options.renew_every * 2 < options.valid_for(), "two renew attempts fit");
    }

    #[test]
    fn options_that_cannot_keep_the_promise_are_refused() {
        let base = LeaseOptions::new("cytube", "node-a");
        let cases = [
            LeaseOptions { key: ".cytube".to_owned(), ..base.clone() },
            LeaseOptions { key: "cy tube".to_owned(), ..base.clone() },
            LeaseOptions { bucket: "rosey.leases".to_owned(), ..base.clone() },
            LeaseOptions { holder: " ".to_owned(), ..base.clone() },
            base.clone().with_ttl(Duration::from_millis(500)),
            LeaseOptions { margin: Duration::ZERO, ..base.clone() },
            LeaseOptions { renew_every: Duration::from_secs(4), ..base.clone() },
        ];
        for options in cases {
            let error = options.validate().unwrap_err();
            assert!(matches!(error, ClusterError::InvalidLeaseOptions { .. }), "{options:?}");
        }
    }

    #[test]
    fn tokens_differ_between_handles() {
        assert_ne!(unique_token("a"), unique_token("a"));
    }
}
