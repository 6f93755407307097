//! The scheduler: runs due jobs, then sleeps until the next one is due. It does not poll on a
//! fixed interval; a job enqueued by this process for an earlier time wakes it at once, so a
//! revocation happens within about a second of `expires_at`. Jobs enqueued by another replica
//! are picked up at the latest after `max_idle` (that replica's own scheduler normally runs them).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use access_core::engine::{Engine, EngineError, JobLane, RunSummary};
use access_core::jobs::Job;
use access_core::ports::JobWaker;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::task::JoinSet;
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

/// Expiries and revocations claimed at once at most (one batch, one task: see
/// `Engine::run_lane_revocations`).
const REVOCATION_BATCH: u32 = 200;

/// Tasks running per lane. Each lane has its own slots: `job_concurrency` jobs for work, half as
/// many (at least one) batches of expiries and revocations, one export batch.
#[derive(Debug, Default)]
struct Slots {
    work: usize,
    revocations: usize,
    export: usize,
}

impl Slots {
    fn running(&mut self, lane: JobLane) -> &mut usize {
        match lane {
            JobLane::Work => &mut self.work,
            JobLane::Revocations => &mut self.revocations,
            JobLane::Export => &mut self.export,
        }
    }
}

/// What a finished job task hands back to the loop: its lane and how it ended (a panic outside
/// the job itself — the engine catches the job's own — as its message).
type Finished = (JobLane, Result<Result<RunSummary, EngineError>, String>);

/// Runs one task's work, a panic caught so the loop always learns which slot is free again.
async fn caught(
    lane: JobLane,
    work: impl std::future::Future<Output = Result<RunSummary, EngineError>>,
) -> Finished {
    use futures::FutureExt;
    let out = std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|p| access_core::engine::panic_message(p.as_ref()));
    (lane, out)
}

impl JobScheduler {
    pub fn new(engine: Arc<Engine>, waker: Arc<SchedulerWaker>) -> Self {
        Self {
            engine,
            waker,
            max_idle: Duration::from_secs(30),
            // BigQuery's recommended insertAll size; a claim's cost is mostly fixed (one claim,
            // one read per table, one completion), so a backlog drains in fewer, fuller batches.
            batch: 500,
        }
    }

    pub fn max_idle(mut self, d: Duration) -> Self {
        self.max_idle = d;
        self
    }

    /// Audit export jobs shipped per batch at most.
    pub fn batch(mut self, n: u32) -> Self {
        self.batch = n.max(1);
        self
    }

    fn capacity(&self, lane: JobLane) -> usize {
        let work = self.engine.job_concurrency();
        match lane {
            JobLane::Work => work,
            JobLane::Revocations => work.div_ceil(2),
            JobLane::Export => 1,
        }
    }

    /// Runs until `shutdown` is cancelled; then waits for the jobs already running (jobs not
    /// yet claimed stay due for the next start or another replica).
    ///
    /// A continuous worker: each claimed job runs in its own task, and the loop claims again as
    /// soon as a slot is free or a job comes due. An earlier version ran a batch and claimed
    /// the next only when the whole batch was done, so a due expiry waited for the slowest job
    /// of the batch (a provisioning call near its time limit): removals 5–9 s late in the
    /// chaos runs (docs/reliability.md, finding 4). Expiries and revocations have slots of
    /// their own and are claimed first, in batches (`REVOCATION_BATCH`).
    ///
    /// Supervised: a panic in a job task (the engine already catches those of the job itself)
    /// is logged and counted (`gatehouse_scheduler_panics_total`) and the loop goes on; the job
    /// is taken again when its lease lapses. Each look at the queue is recorded for `/readyz`.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!("job scheduler started");
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        let mut slots = Slots::default();
        // The last pass claimed nothing although a job was due (see `when_due`).
        let mut looked_again = false;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            self.waker.looked();
            self.waker.sleeps_until(None);
            let (claimed, filled) = match self.claim(&mut tasks, &mut slots).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "claiming due jobs failed; retrying shortly");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            };
            while let Some(done) = tasks.try_join_next() {
                finished(done, &mut slots);
            }
            if filled {
                continue; // a lane took all it asked for: there may be more due right now
            }
            let mut wait = self.time_to_next().await;
            self.waker.looked();
            if wait.is_zero() {
                match when_due(claimed, looked_again) {
                    None => {
                        looked_again = claimed == 0;
                        continue;
                    }
                    Some(w) => wait = w.min(self.max_idle),
                }
            }
            looked_again = false;
            // Jobs enqueued from here on wake it only if due before it looks again. One enqueued
            // between `time_to_next`'s read and this line saw "busy" and stored a permit.
            self.waker.sleeps_until(
                chrono::Duration::from_std(wait)
                    .ok()
                    .and_then(|w| self.engine.now().checked_add_signed(w)),
            );
            tokio::select! {
                Some(done) = tasks.join_next(), if !tasks.is_empty() => finished(done, &mut slots),
                _ = tokio::time::sleep(wait) => {}
                _ = self.waker.notified() => {}
                _ = shutdown.cancelled() => break,
            }
        }
        // In-flight jobs complete (the server bounds this wait).
        while let Some(done) = tasks.join_next().await {
            finished(done, &mut slots);
        }
        tracing::info!("job scheduler stopped");
    }

    /// Claims due jobs for every lane with free slots and starts them. Returns how many were
    /// claimed and whether a lane took all it asked for (more may be due).
    async fn claim(
        &self,
        tasks: &mut JoinSet<Finished>,
        slots: &mut Slots,
    ) -> Result<(usize, bool), EngineError> {
        let mut claimed = 0;
        let mut filled = false;
        let free =
            |slots: &mut Slots, lane| self.capacity(lane).saturating_sub(*slots.running(lane));
        // Expiries and revocations: a lane of their own, whatever the work slots do, claimed in
        // batches as large as the backlog (up to `REVOCATION_BATCH`), each batch one task that
        // takes one slot. While a burst comes due, the lane's slots are busy and the backlog
        // gathers into the next claim, so the commits per expiry fall as the load rises.
        if free(slots, JobLane::Revocations) > 0 {
            let jobs = self
                .engine
                .claim_lane(JobLane::Revocations, REVOCATION_BATCH)
                .await?;
            if !jobs.is_empty() {
                filled |= jobs.len() == REVOCATION_BATCH as usize;
                claimed += jobs.len();
                *slots.running(JobLane::Revocations) += 1;
                let engine = self.engine.clone();
                tasks.spawn(caught(JobLane::Revocations, async move {
                    engine.run_lane_revocations(jobs).await
                }));
            }
        }
        let work_free = free(slots, JobLane::Work);
        if work_free > 0 {
            let jobs = self
                .engine
                .claim_lane(JobLane::Work, as_u32(work_free))
                .await?;
            filled |= jobs.len() == work_free;
            claimed += jobs.len();
            for job in jobs {
                self.start(tasks, slots, JobLane::Work, job);
            }
        }
        if free(slots, JobLane::Export) > 0 {
            let jobs = self.engine.claim_lane(JobLane::Export, self.batch).await?;
            if !jobs.is_empty() {
                filled |= jobs.len() == self.batch as usize;
                claimed += jobs.len();
                *slots.running(JobLane::Export) += 1;
                let engine = self.engine.clone();
                tasks.spawn(caught(JobLane::Export, async move {
                    engine.run_lane_exports(jobs).await
                }));
            }
        }
        Ok((claimed, filled))
    }

    fn start(&self, tasks: &mut JoinSet<Finished>, slots: &mut Slots, lane: JobLane, job: Job) {
        *slots.running(lane) += 1;
        let engine = self.engine.clone();
        tasks.spawn(caught(lane, async move { engine.run_lane_job(job).await }));
    }

    async fn time_to_next(&self) -> Duration {
        let next = match self.engine.next_job_at().await {
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

/// What the loop does when the next job is already due after a pass that claimed `claimed`:
/// `None` looks again at once, `Some(wait)` sleeps (a finishing job or a new one wakes it
/// earlier). A pass that claimed something looks again. A pass that claimed nothing looks again
/// once: the job may have come due between the claim and the read of the next due time. That
/// was not rare: with 10,000 expiries spread over a minute the scheduler often woke right at a
/// due time and lost that race, then slept 250 ms while expiries waited (revocation lag p99
/// 0.26 s in the scale benchmark). Nothing claimed twice running: the job's lane is full or the
/// lease clock has not quite reached it, so wait instead of spinning.
fn when_due(claimed: usize, looked_again: bool) -> Option<Duration> {
    if claimed > 0 || !looked_again {
        None
    } else {
        Some(Duration::from_millis(250))
    }
}

fn as_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Books a finished job task: frees its slot and records its outcome.
fn finished(done: Result<Finished, tokio::task::JoinError>, slots: &mut Slots) {
    let (lane, outcome) = match done {
        Ok(f) => f,
        // Tasks are never aborted and their panics are caught inside them.
        Err(e) => {
            tracing::error!(error = %e, "a job task was lost");
            return;
        }
    };
    let running = slots.running(lane);
    *running = running.saturating_sub(1);
    match outcome {
        Ok(Ok(summary)) => record_metrics(&summary),
        // The job stays claimed until its lease lapses, then runs again.
        Ok(Err(e)) => {
            tracing::error!(error = %e, "recording a job's outcome failed; it runs again after its lease")
        }
        Err(what) => {
            tracing::error!(panic = %what, "a job task panicked; the scheduler goes on");
            metrics::counter!("gatehouse_scheduler_panics_total").increment(1);
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

    /// A job that came due between a pass's claim and its read of the next due time is claimed
    /// by an immediate second look, not after a 250 ms sleep; only a second empty pass in a row
    /// (lane full, lease clock behind) waits.
    #[test]
    fn a_job_due_after_an_empty_claim_is_looked_for_again_at_once() {
        assert_eq!(when_due(3, false), None, "claimed: more may be due");
        assert_eq!(when_due(3, true), None);
        assert_eq!(
            when_due(0, false),
            None,
            "came due after the claim: look again"
        );
        assert_eq!(
            when_due(0, true),
            Some(Duration::from_millis(250)),
            "twice nothing claimable: wait, never spin"
        );
    }

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
