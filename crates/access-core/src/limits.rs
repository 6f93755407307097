//! Per-person request limits (issue 17): how many requests one person may file in a sliding
//! window, and how many may wait for a decision at once. See `docs/rate-limits.md`.
//!
//! The figures are counted from the store, not in process memory, so the limits hold across
//! replicas and restarts: the engine reads them in the same statement that reads the person's
//! live grant and pending request ([`crate::ports::RequestStore::submission_facts`]). The decision itself
//! is the pure [`RequestLimits::check`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::duration::AccessDuration;

/// The per-person limits on filing requests. A limit of 0 turns that limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLimits {
    /// Requests one person may file within [`Self::window`] (default 10).
    pub requests: u32,
    /// The sliding window of [`Self::requests`] (default one hour).
    pub window: AccessDuration,
    /// Requests of one person that may be pending at once (default 3).
    pub pending: u32,
}

impl RequestLimits {
    /// Requests per window by default.
    pub const DEFAULT_REQUESTS: u32 = 10;
    /// The window by default: an hour.
    pub const DEFAULT_WINDOW: AccessDuration = AccessDuration::const_secs(3600);
    /// Pending requests at once by default.
    pub const DEFAULT_PENDING: u32 = 3;

    /// No limits at all.
    pub const OFF: RequestLimits = RequestLimits {
        requests: 0,
        window: Self::DEFAULT_WINDOW,
        pending: 0,
    };

    /// Whether no limit applies.
    pub fn is_off(&self) -> bool {
        self.requests == 0 && self.pending == 0
    }

    /// What the store must count for these limits at `now`, or `None` when they are off.
    pub fn query(&self, now: DateTime<Utc>) -> Option<RateQuery> {
        (!self.is_off()).then(|| RateQuery {
            since: now - self.window.as_chrono(),
            nth: self.requests.max(1),
        })
    }

    /// Refuses a new request when the person is at either limit; says when they can try again.
    pub fn check(&self, facts: &RateFacts, now: DateTime<Utc>) -> Result<(), LimitRefusal> {
        if self.requests > 0
            && let Some(nth) = facts.window_nth_newest
        {
            // The person filed `requests` requests since `since`; the oldest of those leaves the
            // window at `nth + window`, and from then on they have room for one more.
            let retry_at = nth + self.window.as_chrono();
            if retry_at > now {
                return Err(LimitRefusal::TooManyRequests {
                    limit: self.requests,
                    window: self.window,
                    retry_at,
                    wait: retry_at - now,
                });
            }
        }
        if self.pending > 0 && facts.pending_total >= u64::from(self.pending) {
            return Err(LimitRefusal::TooManyPending {
                limit: self.pending,
                pending: facts.pending_total,
                first_times_out: facts.first_pending_until,
            });
        }
        Ok(())
    }
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            requests: Self::DEFAULT_REQUESTS,
            window: Self::DEFAULT_WINDOW,
            pending: Self::DEFAULT_PENDING,
        }
    }
}

/// What the store counts for the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateQuery {
    /// Start of the window: requests created at or after it count.
    pub since: DateTime<Utc>,
    /// Which request, counting the newest as 1, the store reports the creation time of (the
    /// request limit): if it exists inside the window, the person is at the limit.
    pub nth: u32,
}

/// The figures the limits are decided on, read with the person's live grant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateFacts {
    /// When the `nth` newest request of the person was created, if it is inside the window.
    pub window_nth_newest: Option<DateTime<Utc>>,
    /// The person's pending requests, all resources.
    pub pending_total: u64,
    /// The earliest `pending_until` among them (when the first one times out at the latest).
    pub first_pending_until: Option<DateTime<Utc>>,
}

/// Why a request was refused by a limit; the engine turns it into an [`crate::EngineError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitRefusal {
    /// Too many requests filed within the window.
    TooManyRequests {
        /// Requests allowed per window.
        limit: u32,
        /// The window.
        window: AccessDuration,
        /// When the person may ask again.
        retry_at: DateTime<Utc>,
        /// How long that is from now.
        wait: chrono::Duration,
    },
    /// Too many requests pending at once.
    TooManyPending {
        /// Pending requests allowed.
        limit: u32,
        /// Pending requests now.
        pending: u64,
        /// When the oldest times out, if it can.
        first_times_out: Option<DateTime<Utc>>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn the_request_limit_says_when_the_oldest_request_leaves_the_window() {
        let l = RequestLimits::default();
        let now = t(3000);
        let ok = RateFacts::default();
        assert_eq!(l.check(&ok, now), Ok(()));
        let full = RateFacts {
            window_nth_newest: Some(t(600)),
            ..Default::default()
        };
        match l.check(&full, now) {
            Err(LimitRefusal::TooManyRequests { retry_at, wait, .. }) => {
                assert_eq!(retry_at, t(4200));
                assert_eq!(wait, chrono::Duration::seconds(1200));
            }
            other => panic!("{other:?}"),
        }
        // The 10th newest is older than an hour: there is room.
        let old = RateFacts {
            window_nth_newest: Some(t(-1000)),
            ..Default::default()
        };
        assert_eq!(l.check(&old, now), Ok(()));
    }

    #[test]
    fn the_pending_limit_counts_every_resource() {
        let l = RequestLimits::default();
        let facts = |n| RateFacts {
            pending_total: n,
            first_pending_until: Some(t(9000)),
            ..Default::default()
        };
        assert_eq!(l.check(&facts(2), t(0)), Ok(()));
        assert!(matches!(
            l.check(&facts(3), t(0)),
            Err(LimitRefusal::TooManyPending { pending: 3, .. })
        ));
        assert_eq!(RequestLimits::OFF.check(&facts(50), t(0)), Ok(()));
        assert!(RequestLimits::OFF.query(t(0)).is_none());
    }
}
