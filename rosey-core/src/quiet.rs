//! Quiet floods: a log rate limit that lets a burst through, then counts what it suppresses and says
//! so in a summary line at least every [`SUMMARY_EVERY`] while suppressing.

use std::time::Duration;

use tokio::time::Instant;

/// How often a summary of suppressed lines is due while suppressing.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Lets at most `burst` lines through per [`SUMMARY_EVERY`] window; counts the rest.
#[derive(Debug)]
pub(crate) struct LogLimit {
    burst: u32,
    window_start: Option<Instant>,
    passed: u32,
    suppressed: u64,
}

impl LogLimit {
    /// A limit of `burst` lines per window.
    pub(crate) const fn new(burst: u32) -> Self {
        Self { burst, window_start: None, passed: 0, suppressed: 0 }
    }

    /// Whether a line may be logged now. When a window ends with lines suppressed, returns their count
    /// first through [`LogLimit::due_summary`], which callers check before each line and on a timer.
    pub(crate) fn allow(&mut self) -> bool {
        let now = Instant::now();
        let start = *self.window_start.get_or_insert(now);
        if now.duration_since(start) >= SUMMARY_EVERY && self.suppressed == 0 {
            self.window_start = Some(now);
            self.passed = 0;
        }
        if self.passed < self.burst && self.suppressed == 0 {
            self.passed += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// How many lines were suppressed, once the window they fell in is over (then a new window
    /// starts); `None` while nothing is due. Call before logging and from a periodic timer.
    pub(crate) fn due_summary(&mut self) -> Option<u64> {
        let start = self.window_start?;
        if self.suppressed == 0 || start.elapsed() < SUMMARY_EVERY {
            return None;
        }
        let suppressed = std::mem::take(&mut self.suppressed);
        self.window_start = Some(Instant::now());
        self.passed = 0;
        Some(suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_lines_are_counted_and_summed_up_every_ten_seconds() {
        let mut limit = LogLimit::new(3);
        let passed = (0..1000).filter(|_| limit.allow()).count();
        assert_eq!(passed, 3);
        assert_eq!(limit.due_summary(), None, "not before the window ends");
        tokio::time::advance(SUMMARY_EVERY).await;
        assert_eq!(limit.due_summary(), Some(997));
        assert!(limit.allow(), "a new window lets lines through again");
        assert_eq!(limit.due_summary(), None);
    }
}
