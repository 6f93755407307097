//! The scheduler: runs due jobs, then sleeps until the next one is due. It does not poll on a
//! fixed interval; a job enqueued by this process for an earlier time wakes it at once, so a
//! revocation happens within about a second of `expires_at`. Jobs enqueued by another replica
//! are picked up at the latest after `max_idle` (that replica's own scheduler normally runs them).

use std::sync::Arc;
use std::time::Duration;

use access_core::engine::{Engine, RunSummary};
use access_core::ports::JobWaker;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Wakes the scheduler when a job is enqueued.
#[derive(Debug, Default)]
pub struct SchedulerWaker {
    notify: Notify,
}

impl SchedulerWaker {
    pub fn new() -> Self {
        Self::default()
    }

    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

impl JobWaker for SchedulerWaker {
    fn job_enqueued(&self, _run_at: DateTime<Utc>) {
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

    /// Runs until `shutdown` is cancelled. A batch that has started is finished (in-flight jobs
    /// complete); jobs not yet claimed stay due for the next start or another replica.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!("job scheduler started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            match self.engine.run_due(self.batch).await {
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
            if wait.is_zero() {
                continue;
            }
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
    for lag in &summary.revocation_lag_secs {
        metrics::histogram!("gatehouse_revocation_lag_seconds").record(*lag);
    }
}
