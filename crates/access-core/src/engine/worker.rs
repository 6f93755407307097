//! Running jobs: [`Engine::run_due`] and the continuous scheduler's lanes, lease heartbeats,
//! caught panics, settling each outcome in the queue (retry with backoff, dead-letter), and the
//! job kinds that only deliver messages (notifications, expiry reminders).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::inbox::{FollowUp, INBOX_JOB, RUN_HERE, RunHere, in_order};
use super::{Engine, EngineError};
use crate::grant::GrantStatus;
use crate::ids::GrantId;
use crate::jobs::{Job, JobKind, backoff};
use crate::notification::{GrantSummary, MessageRef, Notification};
use crate::ports::{ClaimScope, InboxError, NotifyContext, NotifyError};

/// A class of jobs with worker slots of its own in the continuous scheduler
/// ([`Engine::claim_lane`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobLane {
    /// Every kind but audit exports, expiries and revocations: provisioning, notifications,
    /// reminders, time-outs, inbox items.
    Work,
    /// Expiries and revocations only, claimed in batches ([`Engine::run_lane_revocations`]).
    /// Slots of their own, so access is taken back on time even while every work slot is held
    /// by slow provisioning or chat calls (chaos finding 4).
    Revocations,
    /// Audit exports, shipped as one batch per claim.
    Export,
}

/// What one `run_due` did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Jobs claimed.
    pub claimed: usize,
    /// Jobs finished, by kind.
    pub done: BTreeMap<String, u64>,
    /// Jobs that failed and will be retried, by kind.
    pub retried: BTreeMap<String, u64>,
    /// Jobs given up on (dead-lettered), by kind.
    pub dead: BTreeMap<String, u64>,
    /// For each revocation done: how late it was, in seconds, relative to `expires_at` (only for
    /// expiries; negative never happens).
    pub revocation_lag_secs: Vec<f64>,
    /// Jobs whose run panicked, by kind (each is also counted as retried or dead).
    pub panicked: BTreeMap<String, u64>,
}

impl RunSummary {
    pub(super) fn merge(&mut self, other: RunSummary) {
        self.claimed += other.claimed;
        for (k, v) in other.done {
            *self.done.entry(k).or_default() += v;
        }
        for (k, v) in other.retried {
            *self.retried.entry(k).or_default() += v;
        }
        for (k, v) in other.dead {
            *self.dead.entry(k).or_default() += v;
        }
        self.revocation_lag_secs.extend(other.revocation_lag_secs);
        for (k, v) in other.panicked {
            *self.panicked.entry(k).or_default() += v;
        }
    }

    /// Jobs that failed this time (retried or dead).
    pub fn failures(&self) -> u64 {
        self.retried.values().sum::<u64>() + self.dead.values().sum::<u64>()
    }
}

/// How a job run ended.
#[derive(Debug)]
pub(super) enum JobResult {
    Done {
        revocation_lag: Option<f64>,
    },
    Retry(String),
    /// Give up now (retrying cannot help).
    Fatal(String),
    /// Try again at the given time rather than after the kind's backoff (a receiver's
    /// `Retry-After`).
    RetryAt(String, DateTime<Utc>),
}

impl JobResult {
    pub(super) fn done() -> Self {
        JobResult::Done {
            revocation_lag: None,
        }
    }
}

/// Finished jobs are kept at least this long ([`Engine::purge_finished_jobs`]): a stored chat
/// delivery is recognised as a replay by its job row, and Slack sends its replays within this
/// (a signed request is accepted for five minutes; Events API retries come within the hour).
pub const MIN_JOB_RETENTION: chrono::Duration = chrono::Duration::days(1);

/// Jobs one purge statement deletes at most.
pub const PURGE_BATCH: u32 = 1_000;

impl Engine {
    /// Claims up to `limit` due jobs (at most as many as it runs at once) and runs them. Safe to
    /// call from several processes at once.
    ///
    /// Leases: a pass claims no more than `job_concurrency` jobs, so every claimed job starts at
    /// once instead of waiting out part of its lease in a local queue, and the leases of the
    /// pass's jobs are renewed every third of a lease while it runs (by claim token: a claim that
    /// lapsed and was taken over renews nothing). A job slower than the lease is therefore not
    /// handed to another worker while this one is still on it.
    ///
    /// A panic inside a job is caught: it is logged, counted (`panicked`), and the job fails like
    /// any other error (retried per its kind's policy), so one bad job cannot end the scheduler.
    pub async fn run_due(&self, limit: u32) -> Result<RunSummary, EngineError> {
        let now = self.now();
        let lease = self.settings.job_lease;
        let slots = u32::try_from(self.settings.job_concurrency.max(1)).unwrap_or(u32::MAX);
        // Jobs that each take a worker slot, no more than there are slots; audit exports run
        // as one batch (one sink write), so they take one slot together and up to `limit`.
        // A process without a chat adapter (the cleanup binary) leaves stored chat deliveries
        // to the servers instead of spending their attempts.
        let not_here: &'static [&'static str] = if self.inbox_handler().is_some() {
            &["export_audit"]
        } else {
            &["export_audit", "inbox"]
        };
        let others = self
            .store
            .claim_jobs_in(now, limit.min(slots), lease, ClaimScope::AllBut(not_here))
            .await?;
        let exports = self
            .store
            .claim_jobs_in(now, limit, lease, ClaimScope::Only("export_audit"))
            .await?;
        let mut summary = RunSummary {
            claimed: others.len() + exports.len(),
            ..Default::default()
        };
        // One claim, one token (a store hands out one per call).
        let tokens: Vec<String> = [others.first(), exports.first()]
            .into_iter()
            .flatten()
            .filter_map(|j| j.claim_token.clone())
            .collect();

        let work = async {
            let results: Vec<Result<RunSummary, EngineError>> = futures::stream::iter(others)
                .map(|job| async move { self.run_and_settle(&job).await })
                .buffer_unordered(self.settings.job_concurrency.max(1))
                .collect()
                .await;
            let mut summary = RunSummary::default();
            for result in results {
                summary.merge(result?);
            }
            if !exports.is_empty() {
                summary.merge(self.run_exports(exports).await?);
            }
            Ok::<_, EngineError>(summary)
        };
        let s = if tokens.is_empty() {
            work.await?
        } else {
            self.with_heartbeat(&tokens, work).await?
        };
        summary.merge(s);
        Ok(summary)
    }

    /// Runs one claimed job and records its outcome (a panic counted in `panicked`).
    async fn run_and_settle(&self, job: &Job) -> Result<RunSummary, EngineError> {
        let (result, panicked) = self.run_job_caught(job).await;
        let mut summary = self.settle(job, result).await?;
        if panicked {
            *summary
                .panicked
                .entry(job.kind.name().to_string())
                .or_default() += 1;
        }
        Ok(summary)
    }

    /// How many jobs of each lane a worker of this engine runs at once (`job_concurrency`).
    pub fn job_concurrency(&self) -> usize {
        self.settings.job_concurrency.max(1)
    }

    /// Claims up to `limit` due jobs of one lane for a continuous worker (the server's
    /// `JobScheduler`), which then runs each with [`Self::run_lane_job`] (or, for the export
    /// lane, all together with [`Self::run_lane_exports`]) while it goes on claiming for the
    /// slots that are free. Unlike [`Self::run_due`], nothing waits for the slowest job of a
    /// batch before the next due job is claimed.
    pub async fn claim_lane(&self, lane: JobLane, limit: u32) -> Result<Vec<Job>, EngineError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let scope = match lane {
            // A process without a chat adapter (the cleanup binary) leaves stored chat
            // deliveries to the servers instead of spending their attempts.
            JobLane::Work if self.inbox_handler().is_some() => {
                ClaimScope::AllBut(&["export_audit", "expire", "revoke"])
            }
            JobLane::Work => ClaimScope::AllBut(&["export_audit", "inbox", "expire", "revoke"]),
            JobLane::Revocations => ClaimScope::OneOf(&["expire", "revoke"]),
            JobLane::Export => ClaimScope::Only("export_audit"),
        };
        Ok(self
            .store
            .claim_jobs_in(self.now(), limit, self.settings.job_lease, scope)
            .await?)
    }

    /// Runs one job claimed by [`Self::claim_lane`] and settles it, renewing its lease while it
    /// runs. A panic inside the job fails the attempt like an error (see [`Self::run_due`]).
    pub async fn run_lane_job(&self, job: Job) -> Result<RunSummary, EngineError> {
        let mut summary = match job.claim_token.clone() {
            Some(token) => {
                self.with_heartbeat(std::slice::from_ref(&token), self.run_and_settle(&job))
                    .await?
            }
            None => self.run_and_settle(&job).await?,
        };
        summary.claimed = 1;
        Ok(summary)
    }

    /// Runs a batch of `expire` and `revoke` jobs claimed by [`Self::claim_lane`]
    /// (`JobLane::Revocations`, one claim) and settles them, renewing their lease while it runs.
    ///
    /// The grants are ended with a few commits for the whole batch (`end_grants`); the
    /// notifications those commits enqueue are written already claimed under the batch's claim
    /// (as a chat command's are, [`Self::run_claimed`]) and delivered here right after, instead of
    /// waiting for a scheduler's claim; and every success of the batch, revocations and
    /// notifications alike, is marked done in one write. A failure is settled alone as before:
    /// a revocation retries with backoff (logged as REVOCATION FAILING), whatever the others
    /// did. A crash at any await leaves the jobs claimed: their leases lapse and the next claim
    /// runs them again.
    pub async fn run_lane_revocations(&self, jobs: Vec<Job>) -> Result<RunSummary, EngineError> {
        let Some(token) = jobs.first().and_then(|j| j.claim_token.clone()) else {
            // Not claimed (no token to write follow-ups under): one by one.
            let mut summary = RunSummary::default();
            for job in &jobs {
                summary.merge(self.run_and_settle(job).await?);
            }
            summary.claimed = jobs.len();
            return Ok(summary);
        };
        let here = Arc::new(RunHere {
            token: token.clone(),
            follow_ups: std::sync::Mutex::new(Vec::new()),
            finished: std::sync::Mutex::new(Vec::new()),
        });
        let work = async {
            let ended = RUN_HERE.scope(here.clone(), self.end_grants(&jobs)).await;
            let mut outcomes: Vec<FollowUp> = jobs
                .iter()
                .cloned()
                .zip(ended)
                .map(|(job, (result, panicked))| FollowUp {
                    job,
                    result,
                    posted: Vec::new(),
                    panicked,
                })
                .collect();
            // The notifications (and take-backs) the ends enqueued, claimed by this batch, those
            // of one request in order. A take-back may end in a commit that enqueues more: a few
            // rounds at most.
            for _ in 0..3 {
                let follow_ups = here
                    .follow_ups
                    .lock()
                    .map(|mut f| std::mem::take(&mut *f))
                    .unwrap_or_default();
                if follow_ups.is_empty() {
                    break;
                }
                let ran: Vec<Vec<FollowUp>> = RUN_HERE
                    .scope(
                        here.clone(),
                        futures::stream::iter(in_order(follow_ups))
                            .map(|lane| self.run_follow_ups(lane))
                            .buffer_unordered(self.settings.job_concurrency.max(1))
                            .collect(),
                    )
                    .await;
                let ran: Vec<FollowUp> = ran.into_iter().flatten().collect();
                outcomes.extend(ran);
            }
            let mut summary = RunSummary {
                claimed: outcomes.len(),
                ..Default::default()
            };
            self.settle_claimed(&token, outcomes, &mut summary).await?;
            Ok::<_, EngineError>(summary)
        };
        self.with_heartbeat(std::slice::from_ref(&token), work)
            .await
    }

    /// Runs a job a batch's commits wrote claimed: a notification is delivered (the messages it
    /// posted returned, to be recorded with its completion), anything else run as a job. A panic
    /// fails the attempt (`true`).
    /// `unsaved`: see [`Self::deliver_collect`].
    pub(super) async fn run_follow_up(
        &self,
        job: &Job,
        unsaved: &[MessageRef],
    ) -> (JobResult, Vec<MessageRef>, bool) {
        use futures::FutureExt;
        match &job.kind {
            JobKind::Notify { notification } => {
                match std::panic::AssertUnwindSafe(self.deliver_collect(notification, job, unsaved))
                    .catch_unwind()
                    .await
                {
                    Ok(Ok((r, refs))) => (r, refs, false),
                    Ok(Err(e)) => (JobResult::Retry(e.to_string()), Vec::new(), false),
                    Err(p) => {
                        let what = panic_message(p.as_ref());
                        tracing::error!(job = %job.id, panic = %what, "notification panicked; failing this attempt");
                        (
                            JobResult::Retry(format!("panicked: {what}")),
                            Vec::new(),
                            true,
                        )
                    }
                }
            }
            _ => {
                let (r, panicked) = self.run_job_caught(job).await;
                (r, Vec::new(), panicked)
            }
        }
    }

    /// Ships export jobs claimed by [`Self::claim_lane`] (`JobLane::Export`) as one batch,
    /// renewing their lease while it runs.
    pub async fn run_lane_exports(&self, jobs: Vec<Job>) -> Result<RunSummary, EngineError> {
        let claimed = jobs.len();
        let tokens: Vec<String> = jobs
            .first()
            .and_then(|j| j.claim_token.clone())
            .into_iter()
            .collect();
        let mut summary = if tokens.is_empty() {
            self.run_exports(jobs).await?
        } else {
            self.with_heartbeat(&tokens, self.run_exports(jobs)).await?
        };
        summary.claimed = claimed;
        Ok(summary)
    }

    /// Runs `work` while renewing the leases of the claims `tokens` every third of a lease.
    ///
    /// The renewals run beside `work`, never instead of it: `work` is polled while a renewal
    /// waits. A loop that renewed in the body of a `select!` stopped polling `work` for the
    /// length of the renewal; when the beat fired while `work` was inside a store transaction
    /// (on SQLite: holding the store's writer lock), the renewal waited for that lock and the
    /// transaction waited to be polled — for ever. The chaos test's SQLite server wedged that
    /// way (docs/reliability.md, finding 2).
    pub(super) async fn with_heartbeat<T>(
        &self,
        tokens: &[String],
        work: impl Future<Output = T>,
    ) -> T {
        let lease = self.settings.job_lease;
        let every = (lease / 3)
            .to_std()
            .unwrap_or_default()
            .max(std::time::Duration::from_millis(50));
        // `select!` polls both on every wake-up; the beat never ends, so this returns `work`'s
        // output, dropping a renewal in flight (a store call is safe to drop at any point).
        tokio::select! {
            out = work => out,
            never = self.renew_for_ever(tokens, lease, every) => match never {},
        }
    }

    /// Renews the leases of `tokens` every `every`, for ever (see [`Self::with_heartbeat`]).
    async fn renew_for_ever(
        &self,
        tokens: &[String],
        lease: chrono::Duration,
        every: std::time::Duration,
    ) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(every).await;
            for token in tokens {
                match self.store.renew_lease(token, lease).await {
                    Ok(n) => tracing::debug!(renewed = n, "job leases renewed"),
                    // The next beat tries again; the lease is three beats long.
                    Err(e) => tracing::warn!(error = %e, "could not renew job leases"),
                }
            }
        }
    }

    /// [`Self::run_job`], with a panic turned into a failed attempt (`true`: it panicked).
    pub(super) async fn run_job_caught(&self, job: &Job) -> (JobResult, bool) {
        use futures::FutureExt;
        match std::panic::AssertUnwindSafe(self.run_job(job))
            .catch_unwind()
            .await
        {
            Ok(result) => (result, false),
            Err(panic) => {
                let what = panic_message(panic.as_ref());
                tracing::error!(job = %job.id, kind = job.kind.name(), panic = %what, "job panicked; failing this attempt");
                (JobResult::Retry(format!("panicked: {what}")), true)
            }
        }
    }

    /// Runs due jobs until none are left (or `max_rounds` passes), as the cleanup binary does.
    pub async fn drain(&self, max_rounds: usize) -> Result<RunSummary, EngineError> {
        let mut total = RunSummary::default();
        for _ in 0..max_rounds {
            let s = self.run_due(100).await?;
            let claimed = s.claimed;
            total.merge(s);
            if claimed == 0 {
                break;
            }
        }
        Ok(total)
    }

    /// Records the outcome of one job in the queue.
    pub(super) async fn settle(
        &self,
        job: &Job,
        result: JobResult,
    ) -> Result<RunSummary, EngineError> {
        let mut s = RunSummary::default();
        let name = job.kind.name().to_string();
        let token = job.claim_token.clone().unwrap_or_default();
        match result {
            JobResult::Done { revocation_lag } => {
                self.store.complete_job(job.id, &token, self.now()).await?;
                *s.done.entry(name).or_default() += 1;
                s.revocation_lag_secs.extend(revocation_lag);
            }
            JobResult::Retry(err) => {
                let exhausted = job
                    .kind
                    .max_attempts()
                    .is_some_and(|max| job.attempts >= max);
                if exhausted {
                    tracing::error!(job = %job.id, kind = %name, attempts = job.attempts, error = %err, "job failed for good");
                    self.give_up(job, &err).await;
                    self.store.bury_job(job.id, &token, &err).await?;
                    *s.dead.entry(name).or_default() += 1;
                } else {
                    let wait = backoff(&job.kind, job.attempts);
                    if job.kind.is_revocation() {
                        tracing::error!(job = %job.id, kind = %name, attempts = job.attempts, error = %err, "REVOCATION FAILING: will retry");
                    } else {
                        tracing::warn!(job = %job.id, kind = %name, attempts = job.attempts, error = %err, "job failed; will retry");
                    }
                    self.store
                        .retry_job(job.id, &token, &err, self.now() + wait)
                        .await?;
                    *s.retried.entry(name).or_default() += 1;
                }
            }
            JobResult::Fatal(err) => {
                tracing::error!(job = %job.id, kind = %name, error = %err, "job failed and cannot succeed");
                self.give_up(job, &err).await;
                self.store.bury_job(job.id, &token, &err).await?;
                *s.dead.entry(name).or_default() += 1;
            }
            JobResult::RetryAt(err, at) => {
                self.store.retry_job(job.id, &token, &err, at).await?;
                *s.retried.entry(name).or_default() += 1;
            }
        }
        Ok(s)
    }

    /// What giving up on a job means for the domain: a provision that never succeeds fails its
    /// request (so the person is told and nothing stays half-approved).
    async fn give_up(&self, job: &Job, err: &str) {
        if let JobKind::Provision { request_id } = job.kind {
            let message = format!("Provisioning kept failing: {err}");
            if let Err(e) = self
                .with_retries(|| self.fail_provisioning(request_id, &message))
                .await
            {
                tracing::error!(request = %request_id, error = %e, "could not mark request failed");
            }
        }
    }

    pub(super) async fn run_job(&self, job: &Job) -> JobResult {
        let result = match &job.kind {
            JobKind::Provision { request_id } => self.provision(*request_id).await,
            JobKind::Expire { grant_id } => self.end_grant(*grant_id, true).await,
            JobKind::Revoke { grant_id } => self.end_grant(*grant_id, false).await,
            JobKind::TimeoutPending { request_id } => self
                .with_retries(|| self.time_out(*request_id))
                .await
                .map(|_| JobResult::done()),
            JobKind::Notify { notification } => self.deliver(notification, job).await,
            JobKind::Remind {
                grant_id,
                expires_at,
            } => self.remind(*grant_id, *expires_at, job).await,
            JobKind::ExportAudit { .. } => {
                Ok(JobResult::Fatal("export jobs run in batches".into()))
            }
            // The store sets these aside when it claims; should one get here, it cannot run.
            JobKind::Undecodable { kind, error } => Ok(JobResult::Fatal(format!(
                "undecodable job of kind '{kind}': {error}"
            ))),
            JobKind::Escalate { request_id } => self
                .with_retries(|| self.escalate(*request_id))
                .await
                .map(|_| JobResult::done()),
            JobKind::Inbox { item } => Ok(match self.inbox_handler() {
                Some(h) => match INBOX_JOB.scope(job.id, h.handle(item)).await {
                    Ok(()) => JobResult::done(),
                    Err(InboxError::Transient(e)) => JobResult::Retry(e),
                    Err(InboxError::Permanent(e)) => JobResult::Fatal(e),
                },
                // A process without the chat adapter (the cleanup binary) leaves it for later.
                None => {
                    JobResult::Retry(format!("no {} inbox handler in this process", item.source))
                }
            }),
            JobKind::DeliverWebhook { webhook } => self.deliver_webhook(webhook, job).await,
        };
        result.unwrap_or_else(|e| JobResult::Retry(e.to_string()))
    }

    async fn deliver(&self, n: &Notification, job: &Job) -> Result<JobResult, EngineError> {
        let (result, refs) = self.deliver_collect(n, job, &[]).await?;
        for r in refs {
            self.store.save_message_ref(&r).await?;
        }
        Ok(result)
    }

    /// Delivers `n` from `job`; returns the outcome and the messages posted (for the caller to
    /// record). The job goes along so a re-run can find what an earlier attempt posted.
    /// `unsaved`: messages posted by earlier jobs of the same ordering key that the caller has
    /// not recorded yet ([`Self::run_claimed`] records them all at the end); they count as
    /// recorded.
    pub(super) async fn deliver_collect(
        &self,
        n: &Notification,
        job: &Job,
        unsaved: &[MessageRef],
    ) -> Result<(JobResult, Vec<MessageRef>), EngineError> {
        let mut ctx = NotifyContext {
            job: Some(crate::ports::NotifyJob::of(job)),
            ..Default::default()
        };
        if let Some(id) = n
            .request_id()
            .filter(|_| self.notifier.reads_message_refs(n))
        {
            ctx.message_refs = self.store.message_refs(id).await?;
            // As the store records them: one per request, purpose and channel, the newest.
            for r in unsaved.iter().filter(|r| r.request_id == id) {
                ctx.message_refs.retain(|m| {
                    (m.purpose.as_str(), m.channel.as_str())
                        != (r.purpose.as_str(), r.channel.as_str())
                });
                ctx.message_refs.push(r.clone());
            }
        }
        Ok(match self.notifier.notify(n, &ctx).await {
            Ok(refs) => (JobResult::done(), refs),
            Err(NotifyError::Transient(e)) => (JobResult::Retry(e), Vec::new()),
            Err(NotifyError::Permanent(e)) => (JobResult::Fatal(e), Vec::new()),
        })
    }

    async fn remind(
        &self,
        grant_id: GrantId,
        expires_at: DateTime<Utc>,
        job: &Job,
    ) -> Result<JobResult, EngineError> {
        let Some(grant) = self.store.grant(grant_id).await? else {
            return Ok(JobResult::done());
        };
        // Extended or ended since: the reminder is stale (a newer one exists if still live).
        if grant.status != GrantStatus::Active || grant.expires_at != expires_at {
            return Ok(JobResult::done());
        }
        let can_extend = self
            .catalog
            .get(grant.resource.as_str())
            .is_some_and(|r| r.extendable);
        self.deliver(
            &Notification::ExpiryReminder {
                grant: GrantSummary::of(&grant),
                can_extend,
            },
            job,
        )
        .await
    }

    /// Deletes the jobs that finished more than `retention` ago (never less than
    /// [`MIN_JOB_RETENTION`]); returns how many. Dead, pending and running jobs stay, and so
    /// does the audit trail, which records every step on its own. In batches of
    /// [`PURGE_BATCH`], each its own short write: on SQLite, commands queued behind the store's
    /// writer wait for one batch at most, not for the whole purge.
    pub async fn purge_finished_jobs(
        &self,
        retention: chrono::Duration,
    ) -> Result<u64, EngineError> {
        let before = self.now() - retention.max(MIN_JOB_RETENTION);
        let mut total = 0;
        loop {
            let n = self.store.purge_done_jobs(before, PURGE_BATCH).await?;
            total += n;
            if n < u64::from(PURGE_BATCH) {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Ids of jobs that are dead (for the admin API and alerts).
    pub async fn dead_jobs(&self) -> Result<Vec<Job>, EngineError> {
        Ok(self
            .store
            .jobs(&crate::ports::JobFilter {
                status: Some(crate::jobs::JobStatus::Dead),
                ..Default::default()
            })
            .await?)
    }
}

/// The text of a caught panic (`panic!` payloads are `&str` or `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into())
}
