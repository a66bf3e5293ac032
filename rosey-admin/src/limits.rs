//! The rate limits of admin commands (GCRA, with `governor`): a cooldown per admin and a ceiling
//! per minute for everyone together.
//!
//! The clock is tokio's, so the limits follow `tokio::time::pause` in tests like every other timer of
//! the plugin.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// Tokio's monotonic clock, as time since the limiter was made.
#[derive(Debug, Clone)]
struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(tokio::time::Instant::now().saturating_duration_since(self.origin))
    }
}

type PerUser = RateLimiter<String, HashMapStateStore<String>, TokioClock, NoOpMiddleware<Nanos>>;
type Overall = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// Both limits. A zero cooldown or a zero per-minute ceiling turns that limit off.
pub(crate) struct Limits {
    clock: TokioClock,
    per_user: Option<PerUser>,
    overall: Option<Overall>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("per_user", &self.per_user.is_some())
            .field("overall", &self.overall.is_some())
            .finish()
    }
}

impl Limits {
    /// One command per `cooldown` per user, and `per_minute` commands a minute in all (with bursts
    /// up to `per_minute`).
    pub(crate) fn new(cooldown: Duration, per_minute: u32) -> Self {
        let clock = TokioClock { origin: tokio::time::Instant::now() };
        let per_user = Quota::with_period(cooldown)
            .map(|quota| RateLimiter::new(quota, HashMapStateStore::default(), clock.clone()));
        let overall = NonZeroU32::new(per_minute)
            .map(|n| RateLimiter::direct_with_clock(Quota::per_minute(n), clock.clone()));
        Self { clock, per_user, overall }
    }

    /// Takes one command for `user` (a folded name), or says how long to wait. The user's cooldown
    /// is checked first: a command refused by it does not use up the shared ceiling.
    pub(crate) fn check(&self, user: &str) -> Result<(), Duration> {
        if let Some(per_user) = &self.per_user {
            per_user.retain_recent();
            if let Err(not_until) = per_user.check_key(&user.to_owned()) {
                return Err(not_until.wait_time_from(self.clock.now()));
            }
        }
        if let Some(overall) = &self.overall
            && let Err(not_until) = overall.check()
        {
            return Err(not_until.wait_time_from(self.clock.now()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_user_waits_out_the_cooldown_and_others_do_not() {
        let limits = Limits::new(Duration::from_secs(5), 10);
        assert_eq!(limits.check("alice"), Ok(()));
        assert_eq!(limits.check("alice"), Err(Duration::from_secs(5)));
        assert_eq!(limits.check("bob"), Ok(()));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(limits.check("alice"), Err(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limits.check("alice"), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn ten_commands_a_minute_in_all() {
        let limits = Limits::new(Duration::from_secs(5), 10);
        for i in 0..10 {
            assert_eq!(limits.check(&format!("admin{i}")), Ok(()), "command {i}");
        }
        assert_eq!(limits.check("admin10"), Err(Duration::from_secs(6)), "one cell per 6 s");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(limits.check("admin10"), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_turns_a_limit_off() {
        let limits = Limits::new(Duration::ZERO, 0);
        for _ in 0..100 {
            assert_eq!(limits.check("alice"), Ok(()));
        }
    }
}
