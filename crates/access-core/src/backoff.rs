//! The one retry schedule: truncated exponential backoff with jitter, optionally bounded in
//! attempts and in total waiting. Pure: it computes waits, the caller sleeps (or stores a
//! `run_at`). The job queue, the Cloud Connexa client and the GCP IAM provider all use it.

use std::time::Duration;

/// `base_delay · 2^(n-1)` after failed attempt `n`, at most `max_delay` per wait, at most
/// `max_attempts` tries, and (if set) no more than `max_total` spent waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts in all, the first included; [`Backoff::next`] stops after this many.
    pub max_attempts: u32,
    /// The wait after the first failure.
    pub base_delay: Duration,
    /// The longest single wait.
    pub max_delay: Duration,
    /// The most time spent waiting across all attempts, if bounded.
    pub max_total: Option<Duration>,
}

/// Exponents beyond this would only overflow: every cap in use is reached long before.
const MAX_DOUBLINGS: u32 = 20;

impl Backoff {
    /// An unbounded schedule (attempts and total) from `base_delay` doubling up to `max_delay`.
    pub const fn new(base_delay: Duration, max_delay: Duration) -> Self {
        Self {
            max_attempts: u32::MAX,
            base_delay,
            max_delay,
            max_total: None,
        }
    }

    /// The same schedule, stopping after `max_attempts` attempts.
    pub const fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The same shape with every delay divided by `divisor` (tests: `scaled(1000)` waits
    /// milliseconds instead of seconds).
    pub fn scaled(self, divisor: u32) -> Backoff {
        let d = divisor.max(1);
        Backoff {
            max_attempts: self.max_attempts,
            base_delay: self.base_delay / d,
            max_delay: self.max_delay / d,
            max_total: self.max_total.map(|t| t / d),
        }
    }

    /// The wait after failed attempt `attempt` (1-based), without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(MAX_DOUBLINGS));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// [`Self::delay`] spread over 50–100 %: failures that happened together (an outage, racing
    /// writers) do not retry in lockstep, yet every retry really waits.
    pub fn jittered(&self, attempt: u32) -> Duration {
        let ceiling = self.delay(attempt);
        let half = ceiling / 2;
        half + ceiling.saturating_sub(half).mul_f64(fastrand::f64())
    }

    /// Whether another attempt is allowed after `attempt` failures and `waited` so far, and the
    /// (unjittered) wait before it.
    pub fn next(&self, attempt: u32, waited: Duration) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let d = self.delay(attempt);
        match self.max_total {
            Some(total) if waited + d > total => None,
            _ => Some(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(300));
        assert_eq!(b.delay(0), Duration::from_secs(2));
        assert_eq!(b.delay(1), Duration::from_secs(2));
        assert_eq!(b.delay(2), Duration::from_secs(4));
        assert_eq!(b.delay(9), Duration::from_secs(300));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn jitter_stays_between_half_and_whole() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        for attempt in 1..40 {
            let ceiling = b.delay(attempt);
            let d = b.jittered(attempt);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn bounded_schedules_stop() {
        let b = Backoff {
            max_total: Some(Duration::from_secs(31)),
            ..Backoff::new(Duration::from_secs(1), Duration::from_secs(4)).with_max_attempts(10)
        };
        let mut waited = Duration::ZERO;
        let mut attempts = 1;
        while let Some(d) = b.next(attempts, waited) {
            waited += d;
            attempts += 1;
        }
        assert_eq!((waited, attempts), (Duration::from_secs(31), 10));
        assert_eq!(b.scaled(1000).delay(3), Duration::from_millis(4));
    }
}
