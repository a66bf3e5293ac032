//! The [`RecordWriter`]. Stub: replaced by the storage services work.

/// Writes records in order.
#[derive(Debug)]
pub struct RecordWriter;
/// Options of the writer.
#[derive(Debug, Clone)]
pub struct WriterOptions;
/// The running writer.
#[derive(Debug)]
pub struct WriterHandle;
/// The writer's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriterStats;
/// A metrics sink that records lifecycle events.
#[derive(Debug, Clone)]
pub struct StorageSink;
