//! The outgoing chat rate limit: stay below CyTube's own (a burst of 20, then one message per 100 ms,
//! see the `flood` fixtures) and obey the server's `cooldown` frames, so messages are delayed, never
//! dropped by the server.

use std::time::{Duration, Instant};

/// A token bucket with a server-imposed pause.
#[derive(Debug, Clone)]
pub(super) struct RateLimiter {
    burst: f64,
    per_second: f64,
    tokens: f64,
    updated: Instant,
    paused_until: Option<Instant>,
}

impl RateLimiter {
    /// Allows `burst` messages at once, refilled at `per_second`. CyTube's floor for every rank is a
    /// burst of 20 and 10 a second; a channel's `chat_antiflood` can be stricter.
    pub(super) fn new(burst: u32, per_second: f64, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            burst,
            per_second: per_second.max(0.001),
            tokens: burst,
            updated: now,
            paused_until: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.updated = now;
    }

    /// Takes a send slot: `Ok` to send now, or how long to wait before asking again.
    pub(super) fn acquire(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(until) = self.paused_until {
            if now < until {
                return Err(until - now);
            }
            self.paused_until = None;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_second))
        }
    }

    /// The server answered a message with `cooldown <ms>`: that message was dropped (resend it) and
    /// nothing may be sent for that long; the bucket starts empty afterwards.
    pub(super) fn cooldown(&mut self, now: Instant, millis: u64) {
        self.paused_until = Some(now + Duration::from_millis(millis));
        self.tokens = 0.0;
        self.updated = now + Duration::from_millis(millis);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_twenty_then_one_every_hundred_milliseconds() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(20, 10.0, t0);
        for _ in 0..20 {
            assert_eq!(limiter.acquire(t0), Ok(()));
        }
        let wait = limiter.acquire(t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert_eq!(limiter.acquire(t0 + wait), Ok(()));
        assert!(limiter.acquire(t0 + wait).is_err());
        assert_eq!(limiter.acquire(t0 + Duration::from_secs(10)), Ok(()), "refilled");
    }

    #[test]
    fn a_cooldown_pauses_sending_and_empties_the_bucket() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(20, 10.0, t0);
        limiter.cooldown(t0, 1000);
        assert_eq!(
            limiter.acquire(t0 + Duration::from_millis(400)),
            Err(Duration::from_millis(600))
        );
        let after = t0 + Duration::from_millis(1000);
        assert!(limiter.acquire(after).is_err(), "the bucket is empty right after the pause");
        assert_eq!(limiter.acquire(after + Duration::from_millis(100)), Ok(()));
    }
}
