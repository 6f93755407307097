//! The scheduler: runs due jobs, then sleeps until the next one is due. It does not poll on a
//! fixed interval; a job enqueued by this process for an earlier time wakes it at once, so a
//! revocation happens within about a second of `expires_at`. Jobs enqueued by another replica
//! are picked up at the latest after `max_idle` (that replica's own scheduler normally runs them).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use access_core::engine::{Engine, RunSummary};
use access_core::ports::JobWaker;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Wakes the scheduler when a job is enqueued, and tells readiness when the scheduler last
/// looked at the queue.
#[derive(Debug)]
pub struct SchedulerWaker {
    notify: Notify,
    /// Unix milliseconds of the scheduler's last look at the queue; 0 until it started.
    last_look_ms: AtomicI64,
    /// When the sleeping scheduler looks at the queue next (unix microseconds, by the engine's
    /// clock): a job due no earlier needs no wake-up (it would cost a pass that finds nothing).
    /// `i64::MAX` while a pass runs or before the first sleep: every job wakes it then.
    looks_next_us: AtomicI64,
}

impl Default for SchedulerWaker {
    fn default() -> Self {
        Self {
            notify: Notify::new(),
            last_look_ms: AtomicI64::new(0),
            looks_next_us: AtomicI64::new(i64::MAX),
        }
    }
}

impl SchedulerWaker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The scheduler sleeps until `at` (engine clock) unless woken; `None`: it is busy.
    fn sleeps_until(&self, at: Option<DateTime<Utc>>) {
        let us = at.map_or(i64::MAX, |t| t.timestamp_micros());
        self.looks_next_us.store(us, Ordering::SeqCst);
    }

    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// The scheduler is looking at the queue now.
    pub fn looked(&self) {
        self.last_look_ms
            .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// Why the scheduler is not ready: it has not looked at the queue for longer than three
    /// idle periods (it sleeps at most `max_idle` between looks, so it is stuck or dead).
    /// `None` when it is fine or when no scheduler runs in this process.
    pub fn stalled(&self, max_idle: Duration) -> Option<String> {
        let since = self.since_last_look()?;
        let limit = max_idle.saturating_mul(3);
        (since > limit).then(|| {
            format!(
                "job scheduler has not looked at the queue for {}s (limit {}s: 3 x max_idle_secs)",
                since.as_secs(),
                limit.as_secs()
            )
        })
    }

    /// How long since the scheduler last looked at the queue; `None` if no scheduler ever ran
    /// in this process (the cleanup binary, tests driving jobs by hand).
    pub fn since_last_look(&self) -> Option<Duration> {
        match self.last_look_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(
                u64::try_from(Utc::now().timestamp_millis().saturating_sub(ms)).unwrap_or(0),
            )),
        }
    }
}

impl JobWaker for SchedulerWaker {
    fn job_enqueued(&self, run_at: DateTime<Utc>) {
        // A job due after the scheduler's next look is found by that look.
        if run_at.timestamp_micros() >= self.looks_next_us.load(Ordering::SeqCst) {
            return;
        }
        // notify_one stores a permit if the scheduler is busy, so a wake-up is never lost.
        self.notify.notify_one();
    }
}

#[derive(Debug, Clone)]
pub struct JobScheduler {
    engine: Arc<Engine>,
    waker: Arc<SchedulerWaker>,
    max_idle: Duration,
    batch: u32,
}

impl JobScheduler {
    pub fn new(engine: Arc<Engine>, waker: Arc<SchedulerWaker>) -> Self {
        Self {
            engine,
            waker,
            max_idle: Duration::from_secs(30),
            batch: 100,
        }
    }

    pub fn max_idle(mut self, d: Duration) -> Self {
        self.max_idle = d;
        self
    }

    /// Jobs claimed per pass at most (the engine further limits a pass to its concurrency).
    pub fn batch(mut self, n: u32) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Runs until `shutdown` is cancelled. A batch that has started is finished (in-flight jobs
    /// complete); jobs not yet claimed stay due for the next start or another replica.
    ///
    /// Supervised: a panic in a pass (the engine already catches those of single jobs) is
    /// logged and counted (`gatehouse_scheduler_panics_total`) and the loop goes on; the jobs
    /// that pass had claimed are taken again when their lease lapses. Each look at the queue is
    /// recorded for `/readyz`.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!("job scheduler started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            self.waker.looked();
            self.waker.sleeps_until(None);
            let pass = AssertUnwindSafe(self.engine.run_due(self.batch)).catch_unwind();
            let outcome = match pass.await {
                Ok(outcome) => outcome,
                Err(panic) => {
                    let what = access_core::engine::panic_message(panic.as_ref());
                    tracing::error!(panic = %what, "a job pass panicked; the scheduler goes on");
                    metrics::counter!("gatehouse_scheduler_panics_total").increment(1);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            };
            match outcome {
                Ok(summary) => {
                    record_metrics(&summary);
                    if summary.claimed > 0 {
                        continue; // there may be more due right now
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "running due jobs failed; retrying shortly");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            }
            let wait = self.time_to_next().await;
            self.waker.looked();
            if wait.is_zero() {
                continue;
            }
            // Jobs enqueued from here on wake it only if due before it looks again. One enqueued
            // between `time_to_next`'s read and this line saw "busy" and stored a permit.
            self.waker.sleeps_until(
                chrono::Duration::from_std(wait)
                    .ok()
                    .and_then(|w| self.engine.now().checked_add_signed(w)),
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.waker.notified() => {}
                _ = shutdown.cancelled() => break,
            }
        }
        tracing::info!("job scheduler stopped");
    }

    async fn time_to_next(&self) -> Duration {
        let next = match self.engine.store().next_job_at().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the next due time");
                return Duration::from_secs(1);
            }
        };
        match next {
            None => self.max_idle,
            Some(at) => {
                let now = self.engine.now();
                if at <= now {
                    Duration::ZERO
                } else {
                    // A few milliseconds of slack so a job is surely due when we wake.
                    (at - now)
                        .to_std()
                        .unwrap_or_default()
                        .saturating_add(Duration::from_millis(5))
                        .min(self.max_idle)
                }
            }
        }
    }
}

/// Counters and the revocation-lag histogram for one batch.
pub fn record_metrics(summary: &RunSummary) {
    for (kind, n) in &summary.done {
        metrics::counter!("gatehouse_jobs_total", "kind" => kind.clone(), "outcome" => "done")
            .increment(*n);
    }
    for (kind, n) in &summary.retried {
        metrics::counter!("gatehouse_jobs_total", "kind" => kind.clone(), "outcome" => "retry")
            .increment(*n);
        if kind == "expire" || kind == "revoke" {
            metrics::counter!("gatehouse_revocation_failures_total").increment(*n);
        }
    }
    for (kind, n) in &summary.dead {
        metrics::counter!("gatehouse_jobs_total", "kind" => kind.clone(), "outcome" => "dead")
            .increment(*n);
    }
    for (kind, n) in &summary.panicked {
        metrics::counter!("gatehouse_job_panics_total", "kind" => kind.clone()).increment(*n);
    }
    for lag in &summary.revocation_lag_secs {
        metrics::histogram!("gatehouse_revocation_lag_seconds").record(*lag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/readyz` reads this: a scheduler that stopped looking at the queue for more than three
    /// idle periods is reported, with the reason; one that looked recently, or none, is not.
    #[test]
    fn a_scheduler_that_stopped_looking_is_stalled() {
        let w = SchedulerWaker::new();
        assert_eq!(
            w.stalled(Duration::from_secs(30)),
            None,
            "no scheduler here"
        );
        w.looked();
        assert_eq!(w.stalled(Duration::from_secs(30)), None);
        w.last_look_ms
            .store(Utc::now().timestamp_millis() - 91_000, Ordering::Relaxed);
        let why = w.stalled(Duration::from_secs(30)).unwrap();
        assert!(why.contains("has not looked at the queue for 91s"), "{why}");
        assert!(why.contains("limit 90s"), "{why}");
        assert_eq!(w.stalled(Duration::from_secs(31)), None);
    }
}
