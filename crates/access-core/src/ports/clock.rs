//! The clock and the job waker.

use std::fmt::Debug;

use chrono::{DateTime, Utc};

/// The time. Injected everywhere so tests travel in time instead of sleeping.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Told when a job is enqueued, so a sleeping scheduler wakes for a job due sooner than the one
/// it was waiting for.
pub trait JobWaker: Send + Sync + Debug + 'static {
    /// A job was enqueued that is due at `run_at`.
    fn job_enqueued(&self, run_at: DateTime<Utc>);
}

/// A waker for when nobody sleeps (the cleanup binary, tests that drive jobs by hand).
#[derive(Debug, Default)]
pub struct NoWaker;

impl JobWaker for NoWaker {
    fn job_enqueued(&self, _run_at: DateTime<Utc>) {}
}
