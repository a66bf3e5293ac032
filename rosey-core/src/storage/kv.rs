//! The key-value store for plugins on the bus (`rosey.db.kv.*`). Stub: replaced by the KV work.

/// Limits of the key-value store.
#[derive(Debug, Clone)]
pub struct KvLimits;

/// Answers `rosey.db.kv.*`.
#[derive(Debug)]
pub struct KvService;

/// Why the key-value service stopped.
#[derive(Debug, thiserror::Error)]
#[error("kv service")]
pub struct KvServiceError;

/// A refused key-value request.
#[derive(Debug, thiserror::Error)]
#[error("kv")]
pub struct KvError;
