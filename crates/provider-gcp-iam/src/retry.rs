//! Backoff schedules (truncated exponential, optionally jittered and capped in total).

use std::time::Duration;

/// `base_delay · 2^(n-1)`, at most `max_delay` per wait, at most `max_attempts` tries, and (if set)
/// no more than `max_total` spent waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_total: Option<Duration>,
}

impl Backoff {
    /// The document's key-creation retry through IAM's eventual consistency: up to 10 attempts
    /// and about 31 s of waiting in all (1 s, 2 s, then 4 s each: 1 + 2 + 7 × 4 = 31).
    pub const KEY_CREATION: Backoff = Backoff {
        max_attempts: 10,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(4),
        max_total: Some(Duration::from_secs(31)),
    };

    /// Policy read-modify-write rounds after a 409 `ABORTED` (jittered).
    pub const POLICY_WRITE: Backoff = Backoff {
        max_attempts: 8,
        base_delay: Duration::from_millis(250),
        max_delay: Duration::from_secs(8),
        max_total: None,
    };

    /// The same shape with every delay scaled down (tests: `Backoff::KEY_CREATION.scaled(1000)`
    /// waits milliseconds instead of seconds).
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
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// [`Self::delay`] spread over 50–100 % so racing writers do not retry in lockstep.
    pub fn jittered(&self, attempt: u32) -> Duration {
        self.delay(attempt).mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// Whether another attempt is allowed after `attempt` failures and `waited` so far, and the
    /// wait before it.
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
    fn key_creation_schedule_is_about_31_seconds() {
        let b = Backoff::KEY_CREATION;
        let mut waited = Duration::ZERO;
        let mut attempts = 1;
        while let Some(d) = b.next(attempts, waited) {
            waited += d;
            attempts += 1;
        }
        assert_eq!(waited, Duration::from_secs(31));
        assert_eq!(attempts, 10);
        assert_eq!(
            Backoff::KEY_CREATION.scaled(1000).delay(3),
            Duration::from_millis(4)
        );
    }
}
