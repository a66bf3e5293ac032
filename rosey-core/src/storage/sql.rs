//! [`SqlStorage`]. Stub: replaced by the SQL work.

/// Storage in SQLite or PostgreSQL.
#[derive(Debug)]
pub struct SqlStorage;
