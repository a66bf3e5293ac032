//! [`MemoryBus`]: the in-process event bus, Rosey's embedded default.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot};

use super::{BusError, EventBus, Message, PendingReply, Subscription};
use crate::subject::{self, INBOX_PREFIX, Pattern};

/// Tuning for a [`MemoryBus`]: how much one subscription may hold undelivered, by count and by bytes.
/// What does not fit is dropped for that subscription (see the overflow policy on [`MemoryBus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBusOptions {
    /// How many undelivered messages one subscription may hold before new ones are dropped for it
    /// (16 384 by default).
    pub subscriber_capacity: usize,
    /// How many payload bytes one subscription may hold undelivered before new messages are dropped
    /// for it (16 MiB by default). A message larger than this still reaches a subscription whose buffer
    /// is empty, so no size of message is undeliverable.
    pub subscriber_max_bytes: usize,
}

impl Default for MemoryBusOptions {
    fn default() -> Self {
        Self { subscriber_capacity: 16_384, subscriber_max_bytes: 16 * 1024 * 1024 }
    }
}

/// Counters of a [`MemoryBus`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryBusStats {
    /// Successful `publish` calls (requests and replies included).
    pub published: u64,
    /// Messages handed to a subscription's buffer.
    pub delivered: u64,
    /// Messages dropped because a subscription's buffer was full, by count or by bytes (see
    /// [`MemoryBus`]).
    pub dropped: u64,
    /// Payload bytes held undelivered in all subscriptions' buffers right now.
    pub queued_bytes: usize,
    /// Live subscriptions, queue group members included.
    pub subscriptions: usize,
}

/// The in-process [`EventBus`]: no server, no serialization beyond the payload bytes, cheap to clone
/// (clones share one bus).
///
/// **Overflow policy.** Each subscription has a buffer bounded twice: by count
/// ([`MemoryBusOptions::subscriber_capacity`], 16 384 messages by default) and by payload bytes
/// ([`MemoryBusOptions::subscriber_max_bytes`], 16 MiB by default). `publish` never waits: when a
/// message does not fit in a subscription's buffer, it is dropped *for that subscription only*, counted
/// in [`MemoryBusStats::dropped`], and logged (the first drop of a subscription, then every 10 000th).
/// Other subscribers are unaffected, and a stalled subscriber holds at most the byte bound (or one
/// message, if a single one is larger). This is what a NATS server does to a slow consumer, so code
/// behaves the same on both buses. A queue group first tries its other members before dropping.
///
/// The bus lives as long as any clone of it; when the last clone is dropped every subscription stream
/// ends.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

struct Inner {
    options: MemoryBusOptions,
    registry: RwLock<Registry>,
    inboxes: Mutex<HashMap<Arc<str>, oneshot::Sender<Message>>>,
    next_id: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Registry {
    plain: Vec<Member>,
    groups: Vec<QueueGroup>,
}

struct Member {
    id: u64,
    pattern: Pattern,
    tx: mpsc::Sender<Message>,
    /// Payload bytes in `tx`'s buffer, shared with the subscription's stream, which gives them back.
    queued_bytes: Arc<AtomicUsize>,
    dropped: AtomicU64,
}

struct QueueGroup {
    pattern: Pattern,
    name: Box<str>,
    members: Vec<Member>,
    next: AtomicUsize,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus").field("stats", &self.stats()).finish()
    }
}

impl MemoryBus {
    /// A bus with default options.
    pub fn new() -> Self {
        Self::with_options(MemoryBusOptions::default())
    }

    /// A bus with the given options; a capacity of 0 messages or 0 bytes is taken as 1.
    pub fn with_options(mut options: MemoryBusOptions) -> Self {
        options.subscriber_capacity = options.subscriber_capacity.max(1);
        options.subscriber_max_bytes = options.subscriber_max_bytes.max(1);
        Self {
            inner: Arc::new(Inner {
                options,
                registry: RwLock::new(Registry::default()),
                inboxes: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                published: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Counters since creation.
    pub fn stats(&self) -> MemoryBusStats {
        let registry = self.inner.registry.read();
        let members =
            || registry.plain.iter().chain(registry.groups.iter().flat_map(|g| &g.members));
        MemoryBusStats {
            published: self.inner.published.load(Ordering::Relaxed),
            delivered: self.inner.delivered.load(Ordering::Relaxed),
            dropped: self.inner.dropped.load(Ordering::Relaxed),
            queued_bytes: members().map(|m| m.queued_bytes.load(Ordering::Relaxed)).sum(),
            subscriptions: members().count(),
        }
    }

    fn add(&self, pattern: &str, group: Option<&str>) -> Result<Subscription, BusError> {
        let pattern = Pattern::new(pattern)?;
        if let Some(group) = group {
            subject::validate_publish(group)?;
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.inner.options.subscriber_capacity);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let member = Member {
            id,
            pattern: pattern.clone(),
            tx,
            queued_bytes: queued_bytes.clone(),
            dropped: AtomicU64::new(0),
        };
        let mut registry = self.inner.registry.write();
        match group {
            None => registry.plain.push(member),
            Some(name) => {
                match registry.groups.iter_mut().find(|g| g.pattern == pattern && &*g.name == name)
                {
                    Some(existing) => existing.members.push(member),
                    None => registry.groups.push(QueueGroup {
                        pattern,
                        name: name.into(),
                        members: vec![member],
                        next: AtomicUsize::new(0),
                    }),
                }
            }
        }
        drop(registry);
        Ok(Subscription::new(MemoryStream {
            rx,
            queued_bytes,
            _guard: Unsubscribe { bus: Arc::downgrade(&self.inner), id },
        }))
    }

    /// Hands a message to every matching subscriber; returns how many subscriptions (or queue groups)
    /// it was addressed to, whether or not their buffers had room.
    fn deliver(&self, subject: &str, reply: Option<Arc<str>>, payload: Bytes) -> usize {
        let inner = &*self.inner;
        inner.published.fetch_add(1, Ordering::Relaxed);
        if subject.starts_with(INBOX_PREFIX)
            && let Some(waiter) = inner.inboxes.lock().remove(subject)
        {
            let _ = waiter.send(Message::new(subject, reply, payload));
            inner.delivered.fetch_add(1, Ordering::Relaxed);
            return 1;
        }
        let message = Message::new(subject, reply, payload);
        let registry = inner.registry.read();
        let mut addressed = 0;
        for member in registry.plain.iter().filter(|m| m.pattern.matches(subject)) {
            addressed += 1;
            if !inner.offer(member, message.clone()) {
                inner.note_drop(member, subject);
            }
        }
        for group in registry.groups.iter().filter(|g| g.pattern.matches(subject)) {
            addressed += 1;
            let count = group.members.len();
            let start = group.next.fetch_add(1, Ordering::Relaxed);
            let taken = (0..count)
                .map(|i| &group.members[(start + i) % count])
                .any(|member| inner.offer(member, message.clone()));
            if !taken {
                inner.note_drop(&group.members[start % count], subject);
            }
        }
        addressed
    }
}

impl Inner {
    fn offer(&self, member: &Member, message: Message) -> bool {
        let size = message.payload().len();
        let max = self.options.subscriber_max_bytes;
        // Reserve the bytes first, so concurrent publishers cannot together overshoot the bound. An
        // empty buffer takes any one message, so no message is too large to ever be delivered.
        let reserved =
            member.queued_bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held == 0 || held.saturating_add(size) <= max).then_some(held.saturating_add(size))
            });
        if reserved.is_err() {
            return false;
        }
        match member.tx.try_send(message) {
            Ok(()) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(error) => {
                member.queued_bytes.fetch_sub(size, Ordering::AcqRel);
                // A closed receiver is a subscription being dropped right now; nothing to count.
                matches!(error, mpsc::error::TrySendError::Closed(_))
            }
        }
    }

    fn note_drop(&self, member: &Member, subject: &str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let n = member.dropped.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(10_000) {
            tracing::warn!(
                message = "slow subscriber: buffer full, message dropped",
                pattern = %member.pattern,
                subject,
                dropped_for_subscription = n + 1,
                capacity = self.options.subscriber_capacity,
                max_bytes = self.options.subscriber_max_bytes,
                queued_bytes = member.queued_bytes.load(Ordering::Relaxed),
            );
        }
    }

    fn remove(&self, id: u64) {
        let mut registry = self.registry.write();
        registry.plain.retain(|m| m.id != id);
        for group in &mut registry.groups {
            group.members.retain(|m| m.id != id);
        }
        registry.groups.retain(|g| !g.members.is_empty());
    }
}

struct MemoryStream {
    rx: mpsc::Receiver<Message>,
    queued_bytes: Arc<AtomicUsize>,
    _guard: Unsubscribe,
}

impl Stream for MemoryStream {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(message)) = &polled {
            self.queued_bytes.fetch_sub(message.payload().len(), Ordering::AcqRel);
        }
        polled
    }
}

struct Unsubscribe {
    bus: Weak<Inner>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let Some(bus) = self.bus.upgrade() {
            bus.remove(self.id);
        }
    }
}

/// Removes a pending request's inbox however the request ends (reply, timeout or cancellation).
struct InboxGuard {
    bus: Arc<Inner>,
    inbox: Arc<str>,
}

impl Drop for InboxGuard {
    fn drop(&mut self) {
        self.bus.inboxes.lock().remove(&self.inbox);
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), BusError> {
        subject::validate_publish(subject)?;
        self.deliver(subject, None, payload);
        Ok(())
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, BusError> {
        self.add(pattern, None)
    }

    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription, BusError> {
        self.add(pattern, Some(group))
    }

    async fn request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Message, BusError> {
        self.send_request(subject, payload, timeout).await?.await
    }

    async fn send_request(
        &self,
        subject: &str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<PendingReply, BusError> {
        subject::validate_publish(subject)?;
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let inbox: Arc<str> = format!("{INBOX_PREFIX}.mem.{n}").into();
        let (tx, rx) = oneshot::channel();
        self.inner.inboxes.lock().insert(inbox.clone(), tx);
        let guard = InboxGuard { bus: self.inner.clone(), inbox: inbox.clone() };
        // Delivered before this returns: requests sent one after another arrive in that order.
        if self.deliver(subject, Some(inbox), payload) == 0 {
            return Err(BusError::NoResponders { subject: subject.to_owned() });
        }
        let subject = subject.to_owned();
        Ok(Box::pin(async move {
            let _guard = guard;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(_)) => Err(BusError::Closed),
                Err(_) => Err(BusError::Timeout { subject, timeout }),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn a_full_subscriber_loses_only_its_own_messages_and_they_are_counted() {
        let bus = MemoryBus::with_options(MemoryBusOptions {
            subscriber_capacity: 4,
            ..MemoryBusOptions::default()
        });
        let mut slow = bus.subscribe("x").await.unwrap();
        let mut fast = bus.subscribe("x").await.unwrap();
        for i in 0..10u8 {
            bus.publish("x", Bytes::from(vec![i])).await.unwrap();
            let got = fast.next().await.unwrap();
            assert_eq!(got.payload()[0], i, "the fast subscriber gets every message");
        }
        let stats = bus.stats();
        assert_eq!(stats.dropped, 6);
        for i in 0..4u8 {
            assert_eq!(slow.next().await.unwrap().payload()[0], i, "the slow one keeps the oldest");
        }
    }

    #[tokio::test]
    async fn dropping_the_bus_ends_subscriptions() {
        let bus = MemoryBus::new();
        let mut sub = bus.subscribe("x").await.unwrap();
        drop(bus);
        assert!(sub.next().await.is_none());
    }

    #[tokio::test]
    async fn cancelled_requests_leave_no_inbox_behind() {
        let bus = MemoryBus::new();
        let _responder = bus.subscribe("svc").await.unwrap();
        let err = bus.request("svc", Bytes::new(), Duration::from_millis(1)).await.unwrap_err();
        assert!(matches!(err, BusError::Timeout { .. }));
        assert!(bus.inner.inboxes.lock().is_empty());
    }
}
