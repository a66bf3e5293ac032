//! [`ConnectorStats`]: what a connector counts while it runs, for the metrics and the dashboard.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A connector's counters, readable while it runs. Take them with [`Connector::stats`](super::Connector::stats)
/// before starting the connector; cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct ConnectorStats {
    inner: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    chat_received: AtomicU64,
    chat_sent: AtomicU64,
    reconnects: AtomicU64,
    cooldowns: AtomicU64,
    outbox_dropped: AtomicU64,
    outbox_queued: AtomicU64,
}

/// [`ConnectorStats`] at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectorCounts {
    /// Chat lines and private messages received from the platform and published on the bus (not the
    /// history replayed on join, nor the bot's own echo).
    pub chat_received: u64,
    /// Chat lines and private messages written to the platform (a long reply split in three counts
    /// three).
    pub chat_sent: u64,
    /// Connections opened again after one was lost (successful reconnects).
    pub reconnects: u64,
    /// Times the platform asked the bot to slow down (CyTube's `cooldown`).
    pub cooldowns: u64,
    /// Outgoing lines dropped, oldest first, because the outbox was full.
    pub outbox_dropped: u64,
    /// Outgoing lines waiting to be sent.
    pub outbox_queued: u64,
}

impl ConnectorStats {
    /// The counters now.
    pub fn snapshot(&self) -> ConnectorCounts {
        let c = &self.inner;
        ConnectorCounts {
            chat_received: c.chat_received.load(Ordering::Relaxed),
            chat_sent: c.chat_sent.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            cooldowns: c.cooldowns.load(Ordering::Relaxed),
            outbox_dropped: c.outbox_dropped.load(Ordering::Relaxed),
            outbox_queued: c.outbox_queued.load(Ordering::Relaxed),
        }
    }

    /// Outgoing lines dropped because the outbox was full.
    pub fn outbox_dropped(&self) -> u64 {
        self.inner.outbox_dropped.load(Ordering::Relaxed)
    }

    /// Outgoing lines waiting to be sent right now.
    pub fn outbox_queued(&self) -> u64 {
        self.inner.outbox_queued.load(Ordering::Relaxed)
    }

    pub(crate) fn chat_received(&self) {
        self.inner.chat_received.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn chat_sent(&self) {
        self.inner.chat_sent.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg_attr(not(feature = "cytube"), allow(dead_code))]
    pub(crate) fn reconnected(&self) {
        self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg_attr(not(feature = "cytube"), allow(dead_code))]
    pub(crate) fn cooldown(&self) {
        self.inner.cooldowns.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg_attr(not(feature = "cytube"), allow(dead_code))]
    pub(crate) fn dropped(&self, lines: u64) {
        self.inner.outbox_dropped.fetch_add(lines, Ordering::Relaxed);
    }

    #[cfg_attr(not(feature = "cytube"), allow(dead_code))]
    pub(crate) fn set_queued(&self, lines: usize) {
        self.inner.outbox_queued.store(lines as u64, Ordering::Relaxed);
    }
}
