//! [`MemoryStorage`]. Stub: replaced by the storage services work.

/// Storage kept in memory.
#[derive(Debug, Default)]
pub struct MemoryStorage;
