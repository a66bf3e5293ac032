//! The writer's bounded queue, shared by the callers (who push without blocking) and the writing task
//! (which takes batches from its head and settles them).

use std::collections::VecDeque;

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::{WARN_EVERY, WriterStats};
use crate::storage::{EpochMicros, Record};

/// What the callers and the writing task share.
pub(super) struct Shared {
    pub(super) queue: Mutex<Queue>,
    /// Wakes the task when a record arrives.
    pub(super) wake: Notify,
    /// Every record with a sequence number up to this one is settled (written, refused or dropped).
    pub(super) settled: watch::Sender<u64>,
    capacity: usize,
}

pub(super) struct Queue {
    /// Waiting records with their sequence numbers, oldest first.
    records: VecDeque<(u64, Record)>,
    /// How many records at the head are in a write right now (never dropped while there).
    writing: usize,
    /// The sequence number of the last record pushed.
    pub(super) last_seq: u64,
    /// The time given to the last record pushed.
    last_time_us: EpochMicros,
    pub(super) stats: WriterStats,
    /// When the last warning about dropped records was logged.
    drop_warned: Option<Instant>,
}

impl Shared {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(Queue {
                records: VecDeque::new(),
                writing: 0,
                last_seq: 0,
                last_time_us: EpochMicros::MIN,
                stats: WriterStats { available: true, ..WriterStats::default() },
                drop_warned: None,
            }),
            wake: Notify::new(),
            settled: watch::Sender::new(0),
            capacity: capacity.max(1),
        }
    }

    /// Queues `record`; never blocks beyond a short lock, never awaits.
    pub(super) fn push(&self, mut record: Record) {
        let mut warn_dropped = None;
        {
            let mut q = self.queue.lock();
            let time = match &mut record {
                Record::Audit(r) => &mut r.time_us,
                Record::PluginEvent(r) => &mut r.time_us,
            };
            // Strictly increasing per writer, so "newest first" is a total order of this node's rows.
            *time = (*time).max(q.last_time_us.saturating_add(1));
            q.last_time_us = *time;
            q.last_seq += 1;
            let seq = q.last_seq;
            let mut keep = true;
            if q.records.len() >= self.capacity {
                // The oldest record not being written right now goes; if every queued record is in
                // the write under way, the new one is the oldest that can go.
                let oldest = q.writing;
                if oldest < q.records.len() {
                    q.records.remove(oldest);
                } else {
                    keep = false;
                }
                q.stats.dropped += 1;
                if q.drop_warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    q.drop_warned = Some(Instant::now());
                    warn_dropped = Some((q.stats.dropped, q.records.len()));
                }
            }
            if keep {
                q.records.push_back((seq, record));
            }
            self.publish_settled(&q);
        }
        if let Some((dropped, queued)) = warn_dropped {
            tracing::warn!(
                message = "the record queue is full; dropping the oldest records",
                dropped_total = dropped,
                records_waiting = queued,
                capacity = self.capacity,
            );
        }
        self.wake.notify_one();
    }

    fn publish_settled(&self, q: &Queue) {
        let settled = q.records.front().map_or(q.last_seq, |(seq, _)| seq - 1);
        self.settled.send_if_modified(|current| {
            let changed = *current != settled;
            *current = settled;
            changed
        });
    }

    /// Clones up to `max` records from the head and marks them as being written.
    pub(super) fn begin_batch(&self, max: usize) -> Vec<Record> {
        let mut q = self.queue.lock();
        let batch: Vec<Record> = q.records.iter().take(max).map(|(_, r)| r.clone()).collect();
        q.writing = batch.len();
        batch
    }

    /// The first `count` records of the batch under way were written (or refused, when `refused`).
    pub(super) fn settle_head(&self, count: usize, refused: bool) {
        let mut q = self.queue.lock();
        let count = count.min(q.writing);
        q.records.drain(..count);
        q.writing -= count;
        if refused {
            q.stats.rejected += count as u64;
        } else {
            q.stats.written += count as u64;
            q.stats.available = true;
        }
        self.publish_settled(&q);
    }

    /// A write failed: nothing of the batch is in a write any more (so the oldest may be dropped).
    pub(super) fn write_failed(&self, unavailable: bool) -> usize {
        let mut q = self.queue.lock();
        q.writing = 0;
        q.stats.failures += 1;
        if unavailable {
            q.stats.available = false;
        }
        q.records.len()
    }

    /// A write was refused (its records are then retried one by one).
    pub(super) fn count_failure(&self) {
        self.queue.lock().stats.failures += 1;
    }

    pub(super) fn stats(&self) -> WriterStats {
        let q = self.queue.lock();
        WriterStats { queued: q.records.len(), ..q.stats }
    }
}
