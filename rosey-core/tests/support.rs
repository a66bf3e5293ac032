//! Helpers shared by the integration tests.

use std::sync::atomic::{AtomicU64, Ordering};

/// A subject prefix no other test (in this process or another) uses, so tests can share one NATS.
pub(crate) fn unique_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("test{}x{}x{}", std::process::id(), nanos, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The NATS server the tests use: `ROSEY_TEST_NATS_URL`, or the machine's 127.0.0.1:4222.
pub(crate) fn nats_url() -> String {
    std::env::var("ROSEY_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Routers listen on the fixed subject `cytube.chat.message`, so two tests running routers on the shared
/// NATS server would route each other's lines; such tests take turns with this lock.
pub(crate) static NATS_ROUTERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
