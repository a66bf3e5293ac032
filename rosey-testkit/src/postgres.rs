//! A throwaway PostgreSQL database per test, on the server the tests share.
//!
//! ```no_run
//! # async fn demo() {
//! use rosey_testkit::postgres::TestDatabase;
//!
//! let db = TestDatabase::create().await; // CREATE DATABASE rosey_test_<random>
//! let url = db.url(); // postgres://…/rosey_test_<random>, for the code under test
//! # let _ = url;
//! db.drop_now().await; // or let it drop at the end of the test
//! # }
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// Where the tests' PostgreSQL server is: `ROSEY_TEST_POSTGRES_URL`, or
/// `postgres://postgres@127.0.0.1:5432/postgres`. The URL names a database the test user may connect
/// to (the server's admin database); the user must be allowed to create databases.
pub fn admin_url() -> String {
    std::env::var("ROSEY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database created for one test (`rosey_test_<random>`), dropped `WITH (FORCE)` (closing any
/// connection still open to it) by [`drop_now`](Self::drop_now) or, failing that, when dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
    dropped: bool,
}

impl TestDatabase {
    /// Creates a fresh, empty database on the server of [`admin_url`].
    ///
    /// # Panics
    /// When the server cannot be reached or refuses to create the database (the message says how
    /// to point the tests at a server).
    pub async fn create() -> Self {
        let admin_url = admin_url();
        let name = unique_name();
        let mut url = url::Url::parse(&admin_url)
            .unwrap_or_else(|error| panic!("ROSEY_TEST_POSTGRES_URL is not a URL: {error}"));
        url.set_path(&format!("/{name}"));
        let result = async {
            let mut admin = PgConnection::connect(&admin_url).await?;
            admin.execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).await?;
            admin.close().await
        }
        .await;
        if let Err(error) = result {
            panic!(
                "cannot create the test database {name} on the PostgreSQL server of \
                 ROSEY_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres): \
                 {error}"
            );
        }
        tracing::debug!(%name, "test database created");
        Self { name, url: url.into(), admin_url, dropped: false }
    }

    /// The database's URL (the admin URL with the database name replaced).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name, e.g. for `pg_stat_activity.datname`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of the server's admin database, for looking at this one from outside.
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Drops the database now, closing the connections still open to it.
    ///
    /// # Panics
    /// When the server refuses.
    pub async fn drop_now(mut self) {
        self.dropped = true;
        if let Err(error) = drop_database(&self.admin_url, &self.name).await {
            panic!("cannot drop the test database {}: {error}", self.name);
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Drop may run inside the test's runtime, which must not be blocked on: use another thread
        // with a runtime of its own, and wait for it so the database is gone when the test ends.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropping = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime
                .block_on(drop_database(&admin_url, &name))
                .map_err(|error| std::io::Error::other(error.to_string()))
        });
        match dropping.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(name = %self.name, %error, "test database not dropped")
            }
            Err(_) => {
                tracing::warn!(name = %self.name, "test database not dropped: thread panicked")
            }
        }
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut admin = PgConnection::connect(admin_url).await?;
    admin
        .execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
        .await?;
    admin.close().await
}

/// `rosey_test_` and 16 hex digits, different for every call in every process.
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    if let Ok(elapsed) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(elapsed.as_nanos());
    }
    format!("rosey_test_{:016x}", hasher.finish())
}
