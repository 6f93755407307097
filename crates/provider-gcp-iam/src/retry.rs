//! The provider's named retry schedules, on the shared [`Backoff`] helper of access-core.

use std::time::Duration;

pub use access_core::backoff::Backoff;

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

/// Retries of one idempotent Google API call after a transient failure: 200 ms, 400 ms, …
/// (jittered), three attempts in all.
pub const API_CALL: Backoff = Backoff {
    max_attempts: 3,
    base_delay: Duration::from_millis(200),
    max_delay: Duration::from_millis(800),
    max_total: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_creation_schedule_is_about_31_seconds() {
        let b = KEY_CREATION;
        let mut waited = Duration::ZERO;
        let mut attempts = 1;
        while let Some(d) = b.next(attempts, waited) {
            waited += d;
            attempts += 1;
        }
        assert_eq!(waited, Duration::from_secs(31));
        assert_eq!(attempts, 10);
        assert_eq!(KEY_CREATION.scaled(1000).delay(3), Duration::from_millis(4));
    }
}
