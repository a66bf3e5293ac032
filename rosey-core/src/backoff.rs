//! Restart backoff and the crash-loop rule, as small tested units.
//!
//! [`BackoffPolicy`] gives the delay before restart attempt *n*: 0 s, 1 s, 2 s, 4 s, 8 s… capped at
//! 30 s (DESIGN §5), with optional jitter. [`RestartTracker`] applies the crash-loop rule: after
//! `max_attempts` restarts without a stable run (60 s by default) the plugin is FAILED until an operator
//! restarts it.

use std::time::{Duration, Instant};

/// Exponential backoff: `first` for attempt 0, then `base × factor^(attempt-1)`, capped at `max`, then
/// spread by ±`jitter` (a fraction, 0 = none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// Delay before the first attempt.
    pub first: Duration,
    /// Delay before the second attempt; each later one is `factor` times the previous.
    pub base: Duration,
    /// Growth factor.
    pub factor: u32,
    /// Upper bound of any delay (before jitter).
    pub max: Duration,
    /// Relative spread, e.g. 0.1 for ±10 %.
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    /// The supervisor's policy: 0 s, 1 s, 2 s, 4 s, 8 s… capped at 30 s, no jitter.
    fn default() -> Self {
        Self {
            first: Duration::ZERO,
            base: Duration::from_secs(1),
            factor: 2,
            max: Duration::from_secs(30),
            jitter: 0.0,
        }
    }
}

impl BackoffPolicy {
    /// The delay before attempt `attempt` (0-based), without jitter. Never overflows.
    pub fn delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return self.first.min(self.max);
        }
        let growth = self.factor.checked_pow(attempt - 1).unwrap_or(u32::MAX);
        self.base.checked_mul(growth).unwrap_or(self.max).min(self.max)
    }

    /// The delay with jitter applied; `random` is a uniform sample in `[0, 1)` supplied by the caller
    /// (so tests are deterministic).
    pub fn delay_with_jitter(&self, attempt: u32, random: f64) -> Duration {
        let delay = self.delay(attempt);
        if self.jitter <= 0.0 || delay.is_zero() {
            return delay;
        }
        let spread = (random.clamp(0.0, 1.0) * 2.0 - 1.0) * self.jitter.min(1.0);
        delay.mul_f64((1.0 + spread).max(0.0))
    }
}

/// What to do after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart after this delay.
    RestartAfter(Duration),
    /// Too many crashes without a stable run: stay down until an operator restarts the plugin.
    GiveUp,
}

/// Counts restarts since the last stable run and decides between restarting and giving up.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: BackoffPolicy,
    max_attempts: u32,
    stable_after: Duration,
    attempts: u32,
}

impl RestartTracker {
    /// A tracker allowing `max_attempts` restarts without a run of at least `stable_after`.
    pub fn new(max_attempts: u32, stable_after: Duration) -> Self {
        Self { policy: BackoffPolicy::default(), max_attempts, stable_after, attempts: 0 }
    }

    /// Restarts made since the last stable run.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Decides what follows a crash at `now` of an instance started at `started_at`. A run of at
    /// least `stable_after` resets the count first.
    pub fn on_crash(&mut self, now: Instant, started_at: Instant) -> RestartDecision {
        if now.saturating_duration_since(started_at) >= self.stable_after {
            self.attempts = 0;
        }
        if self.attempts >= self.max_attempts {
            return RestartDecision::GiveUp;
        }
        let delay = self.policy.delay(self.attempts);
        self.attempts += 1;
        RestartDecision::RestartAfter(delay)
    }

    /// Forgets past crashes (an operator restart).
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_one_second_and_cap_at_thirty() {
        let p = BackoffPolicy::default();
        let secs: Vec<u64> = (0..8).map(|a| p.delay(a).as_secs()).collect();
        assert_eq!(secs, [0, 1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let p = BackoffPolicy { jitter: 0.1, ..BackoffPolicy::default() };
        assert_eq!(p.delay_with_jitter(3, 0.0), Duration::from_millis(3600));
        assert_eq!(p.delay_with_jitter(3, 0.5), Duration::from_secs(4));
        assert!(p.delay_with_jitter(3, 0.999_999) <= Duration::from_millis(4400));
        assert_eq!(p.delay_with_jitter(0, 0.9), Duration::ZERO);
    }

    #[test]
    fn five_quick_crashes_give_up() {
        let mut t = RestartTracker::new(5, Duration::from_secs(60));
        let start = Instant::now();
        let delays: Vec<RestartDecision> = (0..6).map(|_| t.on_crash(start, start)).collect();
        assert_eq!(
            delays[..5],
            [0, 1, 2, 4, 8].map(|s| RestartDecision::RestartAfter(Duration::from_secs(s)))
        );
        assert_eq!(delays[5], RestartDecision::GiveUp);
    }

    #[test]
    fn a_stable_run_resets_the_attempts() {
        let mut t = RestartTracker::new(5, Duration::from_secs(60));
        let start = Instant::now();
        for _ in 0..4 {
            t.on_crash(start, start);
        }
        let later = start + Duration::from_secs(61);
        assert_eq!(t.on_crash(later, start), RestartDecision::RestartAfter(Duration::ZERO));
        t.reset();
        assert_eq!(t.attempts(), 0);
    }
}
