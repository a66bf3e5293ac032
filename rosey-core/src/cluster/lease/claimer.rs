//! The lease task: claims the key while not held, renews it while held, releases it when stopped.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::LeaseOptions;
use crate::cluster::{ClusterError, NoAnswer, boxed};
use crate::error::{BoxError, Chain};

/// What a lease key holds: who, and which `LeaseHandle` of theirs.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct LeaseRecord {
    pub(super) holder: String,
    pub(super) token: String,
}

/// A claim this node holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    /// The revision of our last confirmed write: what the next renew must match.
    revision: u64,
    /// When we stop counting ourselves holder unless renewed.
    valid_until: Instant,
    /// When to renew next.
    renew_at: Instant,
}

/// The lease task's state and the ways it writes the key.
pub(super) struct Claimer {
    pub(super) store: kv::Store,
    pub(super) options: LeaseOptions,
    pub(super) value: Bytes,
    pub(super) token: String,
    pub(super) held_tx: watch::Sender<bool>,
    pub(super) deadline: Arc<Mutex<Option<Instant>>>,
    /// Whether the last claim attempt failed for another reason than "someone holds it": failures
    /// are logged as warnings once per streak, the rest at debug level.
    pub(super) failing: bool,
}

impl Claimer {
    pub(super) async fn run(
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

    /// Sets the flag and the deadline `LeaseHandle::held` reads. The deadline is set before the
    /// flag turns `true` and cleared before it turns `false`.
    pub(super) fn publish(&self, held: Option<&Held>) {
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
    pub(super) async fn claim(&mut self) -> Option<Held> {
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
