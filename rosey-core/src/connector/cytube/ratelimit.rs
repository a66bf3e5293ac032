//! The outgoing chat rate limit, a model of CyTube's own flood limiter kept on the safe side of it, so
//! the server never has to drop a message; its `cooldown` frames are still obeyed as the safety net.
//!
//! CyTube keeps one limiter per user (`newRateLimiter` in its `utilities.js`) and calls it with the
//! parameters in force for each message: a `burst` of messages, then one per `1000 / sustained` ms
//! counted from the last *accepted* message, and a full reset once more than `cooldown` s passed
//! without an accepted message (`cooldown` defaults to `burst / sustained`). Chat uses the channel's
//! `chat_antiflood_params` for ranks below 2 when `chat_antiflood` is on, CyTube's per-user limit
//! (burst 20, sustained 10) otherwise; PMs always use the per-user limit.
//!
//! The model here counts every message *sent* (the server counts only those it accepted) and
//! measures from the last one sent (the server from the last accepted), so it never believes the
//! server is further from its limit than it is. Only network jitter could make the server see two
//! messages closer together than they were sent: each interval and the reset wait carry a small
//! margin for it.

use std::time::{Duration, Instant};

/// One set of flood parameters, as CyTube reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct FloodLimit {
    /// Messages accepted before the per-message interval applies.
    burst: u32,
    /// Messages a second after the burst.
    sustained: f64,
    /// Quiet time after which the burst is available again.
    cooldown: Duration,
}

impl FloodLimit {
    /// CyTube's limit for every user whatever their rank (`MIN_ANTIFLOOD` in `chat.js`): a burst of
    /// 20, then 10 a second, reset after 2 s of quiet.
    pub(super) const CYTUBE_PER_USER: Self =
        Self { burst: 20, sustained: 10.0, cooldown: Duration::from_secs(2) };

    /// A limit of `burst` messages, then `sustained` a second, reset after `cooldown` seconds of
    /// quiet; like CyTube, a missing or invalid `cooldown` means `burst / sustained`. Nonsensical
    /// values are clamped (at least one message, at most one every 1 000 s).
    pub(super) fn new(burst: u32, sustained: f64, cooldown: Option<f64>) -> Self {
        let burst = burst.max(1);
        let sustained = if sustained.is_finite() { sustained.clamp(0.001, 1e6) } else { 0.001 };
        let cooldown = cooldown
            .filter(|c| c.is_finite() && *c >= 0.0)
            .unwrap_or(f64::from(burst) / sustained)
            .min(1e6);
        Self { burst, sustained, cooldown: Duration::from_secs_f64(cooldown) }
    }

    /// The connector's configured per-user limit (`burst`, then `sustained` a second). The quiet
    /// time before the burst comes back is CyTube's default `burst / sustained`, but never shorter
    /// than the per-user limit's own: that is the one the server resets by.
    pub(super) fn configured(burst: u32, sustained: f64) -> Self {
        let limit = Self::new(burst, sustained, None);
        Self { cooldown: limit.cooldown.max(Self::CYTUBE_PER_USER.cooldown), ..limit }
    }

    /// The limit obeying both: the smaller burst and rate, the longer cooldown.
    pub(super) fn stricter(self, other: Self) -> Self {
        Self {
            burst: self.burst.min(other.burst),
            sustained: self.sustained.min(other.sustained),
            cooldown: self.cooldown.max(other.cooldown),
        }
    }

    /// Messages allowed at once.
    pub(super) fn burst(&self) -> u32 {
        self.burst
    }

    /// Messages a second after the burst.
    pub(super) fn sustained(&self) -> f64 {
        self.sustained
    }

    /// Least time between two messages after the burst, as the server measures it.
    fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.sustained)
    }
}

/// `duration` plus a margin for network jitter: a tenth of it, between 10 and 250 ms.
fn with_margin(duration: Duration) -> Duration {
    duration + (duration / 10).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

/// The connector's model of CyTube's per-user limiter, with a server-imposed pause; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub(super) struct RateLimiter {
    limit: FloodLimit,
    /// Messages sent since the last reset (saturating: only `count < burst` matters).
    count: u32,
    /// When the last message was sent, if any.
    last: Option<Instant>,
    paused_until: Option<Instant>,
}

impl RateLimiter {
    /// A limiter that has sent nothing yet.
    pub(super) fn new(limit: FloodLimit) -> Self {
        Self { limit, count: 0, last: None, paused_until: None }
    }

    /// Changes the parameters, keeping what was sent: CyTube keeps its count and last time across
    /// a change of the channel's options.
    pub(super) fn set_limit(&mut self, limit: FloodLimit) {
        self.limit = limit;
    }

    /// The parameters in force.
    #[cfg(test)]
    pub(super) fn limit(&self) -> FloodLimit {
        self.limit
    }

    /// Takes a send slot: `Ok` to send now (the message is counted), or how long to wait before
    /// asking again.
    pub(super) fn acquire(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(until) = self.paused_until {
            if now < until {
                return Err(until - now);
            }
            self.paused_until = None;
        }
        let Some(last) = self.last else {
            self.accept(now, 1);
            return Ok(());
        };
        let quiet = now.saturating_duration_since(last);
        let reset_after = with_margin(self.limit.cooldown);
        if quiet >= reset_after {
            self.accept(now, 1);
            return Ok(());
        }
        if self.count < self.limit.burst {
            self.accept(now, self.count.saturating_add(1));
            return Ok(());
        }
        let interval = with_margin(self.limit.interval());
        if quiet >= interval {
            self.accept(now, self.count.saturating_add(1));
            return Ok(());
        }
        Err(interval.min(reset_after) - quiet)
    }

    /// Takes `slots` send slots at once, or none: a chat command such as `/me` passes CyTube's
    /// limiter twice, as the line and as the message it sends. Past the burst the second pass
    /// comes too soon after the first, so such a line waits for the burst to come back.
    pub(super) fn acquire_slots(&mut self, now: Instant, slots: u32) -> Result<(), Duration> {
        let mut trial = self.clone();
        for _ in 0..slots.max(1) {
            trial.acquire(now)?;
        }
        *self = trial;
        Ok(())
    }

    fn accept(&mut self, now: Instant, count: u32) {
        self.count = count;
        self.last = Some(now);
    }

    /// The server answered a message with `cooldown <ms>`: that message was dropped (resend it),
    /// the server is past its burst, and nothing may be sent for that long.
    pub(super) fn cooldown(&mut self, now: Instant, millis: u64) {
        self.paused_until = Some(now + Duration::from_millis(millis));
        self.count = self.count.max(self.limit.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CyTube's limiter as its source describes it, in whole milliseconds like `Date.now()`:
    /// `throttle` answers whether a message arriving at `now` ms is dropped.
    struct CytubeModel {
        count: u32,
        last: u64,
    }

    impl CytubeModel {
        fn new() -> Self {
            Self { count: 0, last: 0 }
        }

        fn throttle(&mut self, now: u64, burst: u32, sustained: f64, cooldown: f64) -> bool {
            if (self.last as f64) < now as f64 - cooldown * 1000.0 {
                self.count = 1;
                self.last = now;
                return false;
            }
            if self.count < burst {
                self.count += 1;
                self.last = now;
                return false;
            }
            if ((now - self.last) as f64) < 1000.0 / sustained {
                return true;
            }
            self.last = now;
            false
        }
    }

    const MS: Duration = Duration::from_millis(1);

    /// Sends `count` messages as fast as `limiter` allows, starting `start` ms after `t0` (`t0`
    /// itself being 1 000 000 ms on the server's clock), each arriving after `delay(i)` ms; returns
    /// how many the server dropped and when the last was sent, in ms after `t0`.
    fn run(
        limiter: &mut RateLimiter,
        server: &mut CytubeModel,
        t0: Instant,
        start: u64,
        count: usize,
        params: (u32, f64, f64),
        delay: impl Fn(usize) -> u64,
    ) -> (usize, u64) {
        let (burst, sustained, cooldown) = params;
        let mut at = start;
        let mut dropped = 0;
        for i in 0..count {
            loop {
                match limiter.acquire(t0 + MS * at as u32) {
                    Ok(()) => break,
                    Err(wait) => at += wait.as_millis().max(1) as u64,
                }
            }
            let arrives = 1_000_000 + at + delay(i);
            if server.throttle(arrives, burst, sustained, cooldown) {
                dropped += 1;
            }
        }
        (dropped, at)
    }

    #[test]
    fn the_recorded_antiflood_is_never_tripped_by_a_long_burst() {
        // The parameters recorded from a channel: burst 4, sustained 1, cooldown 4.
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(FloodLimit::new(4, 1.0, Some(4.0)));
        let mut server = CytubeModel::new();
        let (dropped, last) = run(&mut limiter, &mut server, t0, 0, 30, (4, 1.0, 4.0), |_| 5);
        assert_eq!(dropped, 0);
        // 4 at once, then 26 spaced by a second plus the margin: paced, not stalled.
        assert_eq!(last, 26 * 1100);
    }

    #[test]
    fn jitter_under_the_margin_never_trips_the_server() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(FloodLimit::new(4, 1.0, Some(4.0)));
        let mut server = CytubeModel::new();
        // Every other message is 90 ms late: the next one looks 90 ms closer to the server.
        let jitter = |i: usize| if i.is_multiple_of(2) { 90 } else { 0 };
        assert_eq!(run(&mut limiter, &mut server, t0, 0, 30, (4, 1.0, 4.0), jitter).0, 0);
    }

    #[test]
    fn a_me_line_passing_the_limiter_twice_is_never_dropped() {
        // CyTube runs `/me text` through the limiter as the line, then as the message it sends.
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(FloodLimit::new(4, 1.0, Some(4.0)));
        let mut server = CytubeModel::new();
        let (mut at, mut dropped) = (0u64, 0);
        for i in 0..12 {
            let slots = if i % 3 == 0 { 2 } else { 1 };
            while let Err(wait) = limiter.acquire_slots(t0 + MS * at as u32, slots) {
                at += wait.as_millis().max(1) as u64;
            }
            let arrives = 1_000_000 + at + 5;
            if (0..slots).any(|_| server.throttle(arrives, 4, 1.0, 4.0)) {
                dropped += 1;
            }
        }
        assert_eq!(dropped, 0);
        // Without the second slot, a `/me` past the burst is always dropped by the server.
        let mut server = CytubeModel::new();
        let drops = (0..5).filter(|_| server.throttle(1_000_000, 4, 1.0, 4.0)).count();
        assert_eq!(drops, 1);
        let me_later = 1_000_000 + 1_500;
        assert!(!server.throttle(me_later, 4, 1.0, 4.0), "the line passes");
        assert!(server.throttle(me_later, 4, 1.0, 4.0), "its message does not");
    }

    #[test]
    fn the_burst_comes_back_only_after_the_servers_cooldown() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(FloodLimit::new(4, 1.0, Some(4.0)));
        let mut server = CytubeModel::new();
        let params = (4, 1.0, 4.0);
        let (_, last) = run(&mut limiter, &mut server, t0, 0, 6, params, |_| 0);
        // Quiet for exactly the server's cooldown: CyTube has not reset yet, neither does the model.
        let at = last + 4000;
        assert!(limiter.acquire(t0 + MS * at as u32).is_ok(), "one message after the interval");
        assert!(!server.throttle(1_000_000 + at, 4, 1.0, 4.0));
        assert!(limiter.acquire(t0 + MS * at as u32).is_err(), "but no second burst");
        // Well after the cooldown the whole burst is back, on both sides.
        let (dropped, sent) = run(&mut limiter, &mut server, t0, at + 5000, 4, params, |_| 0);
        assert_eq!((dropped, sent), (0, at + 5000), "four at once");
    }

    #[test]
    fn cytubes_per_user_limit_allows_twenty_then_one_every_hundred_milliseconds() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(FloodLimit::CYTUBE_PER_USER);
        for _ in 0..20 {
            assert_eq!(limiter.acquire(t0), Ok(()));
        }
        assert_eq!(limiter.acquire(t0), Err(Duration::from_millis(110)), "100 ms and the margin");
        let mut server = CytubeModel::new();
        let mut limiter = RateLimiter::new(FloodLimit::CYTUBE_PER_USER);
        let (dropped, last) = run(&mut limiter, &mut server, t0, 0, 50, (20, 10.0, 2.0), |_| 3);
        assert_eq!((dropped, last), (0, 30 * 110));
    }

    #[test]
    fn the_defaults_follow_cytube() {
        let limit = FloodLimit::new(10, 2.0, None);
        assert_eq!(limit.cooldown, Duration::from_secs(5), "burst / sustained");
        assert_eq!(FloodLimit::new(0, 0.0, Some(f64::NAN)).burst(), 1);
        let stricter = FloodLimit::new(4, 1.0, Some(4.0)).stricter(FloodLimit::CYTUBE_PER_USER);
        assert_eq!(stricter, FloodLimit::new(4, 1.0, Some(4.0)));
        let mixed = FloodLimit::new(30, 5.0, Some(1.0)).stricter(FloodLimit::CYTUBE_PER_USER);
        assert_eq!(mixed, FloodLimit::new(20, 5.0, Some(2.0)));
        assert_eq!(FloodLimit::configured(15, 8.0), FloodLimit::new(15, 8.0, Some(2.0)));
        assert_eq!(FloodLimit::configured(4, 1.0), FloodLimit::new(4, 1.0, Some(4.0)));
    }

    #[test]
    fn changing_the_limit_keeps_what_was_sent() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(FloodLimit::CYTUBE_PER_USER);
        for _ in 0..5 {
            assert_eq!(limiter.acquire(t0), Ok(()));
        }
        limiter.set_limit(FloodLimit::new(4, 1.0, Some(4.0)));
        assert!(limiter.acquire(t0).is_err(), "five sent already exceed the new burst of four");
        assert_eq!(limiter.limit().burst(), 4);
    }

    #[test]
    fn a_cooldown_pauses_sending_then_paces_after_the_burst() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(FloodLimit::CYTUBE_PER_USER);
        assert_eq!(limiter.acquire(t0), Ok(()));
        limiter.cooldown(t0, 1000);
        assert_eq!(
            limiter.acquire(t0 + Duration::from_millis(400)),
            Err(Duration::from_millis(600))
        );
        let after = t0 + Duration::from_millis(1000);
        assert_eq!(limiter.acquire(after), Ok(()), "a second since the last one sent");
        assert_eq!(limiter.acquire(after), Err(Duration::from_millis(110)), "past the burst");
    }
}
