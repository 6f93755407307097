//! Per-workspace limits on the Slack endpoints (issue 17, `docs/rate-limits.md`): a token bucket
//! per Slack team id, in process memory, so one workspace flooding the app (a script, a
//! runaway integration, a compromised account) cannot take the capacity every other workspace
//! needs.
//!
//! Checked by the handlers **after** the signature was verified and the body parsed: an unsigned
//! request is refused with 401 before it can take a token, so nobody without the signing secret
//! can exhaust a real workspace's budget by naming its team id. The bucket is per process (each
//! replica has its own); the per-person request limits, which must hold across replicas, are
//! counted in the database instead (`access_core::limits`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many deliveries one workspace may send: `burst` at once, refilled at `per_minute`.
/// Either 0 turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkspaceLimits {
    pub burst: u32,
    pub per_minute: u32,
}

impl WorkspaceLimits {
    /// The server's default (`[server.rate_limits]`): far above what people type or click, well
    /// below what a loop can send.
    pub const DEFAULT: WorkspaceLimits = WorkspaceLimits {
        burst: 100,
        per_minute: 1800,
    };
    pub const OFF: WorkspaceLimits = WorkspaceLimits {
        burst: 0,
        per_minute: 0,
    };

    pub fn is_off(&self) -> bool {
        self.burst == 0 || self.per_minute == 0
    }
}

/// Workspaces remembered at most; past it, buckets that have refilled completely (idle
/// workspaces, indistinguishable from new ones) are forgotten first.
const MAX_WORKSPACES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by team id. Cheap to share; the lock is held for a few arithmetic operations.
#[derive(Debug)]
pub struct WorkspaceLimiter {
    limits: WorkspaceLimits,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Default for WorkspaceLimiter {
    /// No limit (the library default; the server configures [`WorkspaceLimits::DEFAULT`]).
    fn default() -> Self {
        Self::new(WorkspaceLimits::OFF)
    }
}

impl WorkspaceLimiter {
    pub fn new(limits: WorkspaceLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> WorkspaceLimits {
        self.limits
    }

    /// Takes one delivery's token for `team_id`; `Err(wait)` when the bucket is empty, with how
    /// long until the next token.
    pub fn try_acquire(&self, team_id: &str) -> Result<(), Duration> {
        self.try_acquire_at(team_id, Instant::now())
    }

    pub fn try_acquire_at(&self, team_id: &str, now: Instant) -> Result<(), Duration> {
        if self.limits.is_off() {
            return Ok(());
        }
        let capacity = f64::from(self.limits.burst);
        let per_sec = f64::from(self.limits.per_minute) / 60.0;
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock means a panic elsewhere while holding it; do not refuse Slack.
            return Ok(());
        };
        let refill = |b: &Bucket| {
            (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec).min(capacity)
        };
        if buckets.len() >= MAX_WORKSPACES && !buckets.contains_key(team_id) {
            buckets.retain(|_, b| refill(b) < capacity);
        }
        let bucket = buckets.entry(team_id.to_string()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let tokens = refill(bucket);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / per_sec))
        }
    }
}

/// Whole seconds to tell people and Slack (`Retry-After`), at least 1.
pub fn wait_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate_per_workspace() {
        let l = WorkspaceLimiter::new(WorkspaceLimits {
            burst: 3,
            per_minute: 60,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.try_acquire_at("T1", t0), Ok(()));
        }
        let wait = l.try_acquire_at("T1", t0).unwrap_err();
        assert_eq!(wait_secs(wait), 1);
        // Another workspace is not affected.
        assert_eq!(l.try_acquire_at("T2", t0), Ok(()));
        // One token a second comes back.
        assert_eq!(
            l.try_acquire_at("T1", t0 + Duration::from_millis(1001)),
            Ok(())
        );
        assert!(
            l.try_acquire_at("T1", t0 + Duration::from_millis(1002))
                .is_err()
        );
    }

    #[test]
    fn off_never_refuses() {
        let l = WorkspaceLimiter::default();
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(l.try_acquire_at("T1", t0), Ok(()));
        }
    }
}
