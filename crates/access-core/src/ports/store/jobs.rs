//! The durable job queue: claims, leases, completion, retries, the inbox's idempotency keys, and
//! the messages finished jobs posted ([`MessageRefs`]).

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::ids::{JobId, RequestId};
use crate::jobs::{Job, JobStats, JobStatus, NewJob};
use crate::notification::MessageRef;

/// Which jobs a claim may take, by kind name (`export_audit`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimScope {
    /// Every kind.
    All,
    /// Only this kind.
    Only(&'static str),
    /// Every kind but these.
    AllBut(&'static [&'static str]),
    /// Only these kinds.
    OneOf(&'static [&'static str]),
}

/// Which jobs [`JobQueue::jobs`] returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub status: Option<JobStatus>,
    /// The kind's name (`expire`, `notify`, …).
    pub kind: Option<String>,
    /// At most this many; 100 when unset.
    pub limit: Option<u32>,
}

/// The job queue: jobs are enqueued by [`super::RequestStore::commit`] (or the inbox's
/// [`Self::enqueue_once`]), claimed under a lease by one worker at a time, and completed, retried
/// or buried by the claim's token.
#[async_trait]
pub trait JobQueue: Send + Sync + Debug + 'static {
    /// Claims up to `limit` jobs due at `now` (pending with `run_at <= now`, or running with a
    /// lapsed claim), marks them running for `lease`, counts the attempt. Leases are measured by
    /// the store's clock (the database's on a shared database), not `now`, so replicas with
    /// skewed clocks agree on when a claim lapses. A job with an ordering key is claimed only
    /// when no earlier job with that key is pending or running. A row that cannot be read is set
    /// aside (dead, with the reason in `last_error`) and the others are claimed.
    async fn claim_jobs(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: chrono::Duration,
    ) -> Result<Vec<Job>, StoreError> {
        self.claim_jobs_in(now, limit, lease, ClaimScope::All).await
    }
    /// [`Self::claim_jobs`], restricted to some kinds (one claim, one token).
    async fn claim_jobs_in(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: chrono::Duration,
        scope: ClaimScope,
    ) -> Result<Vec<Job>, StoreError>;
    /// Claims one job by id, if it is pending (whatever its `run_at`): the receiving process
    /// runs an inbox job it just stored at once instead of waiting for the scheduler. `None`
    /// when another worker has it or it is finished.
    async fn claim_job(
        &self,
        id: JobId,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Option<Job>, StoreError>;
    /// Marks a claimed job done. Returns false if the claim had lapsed and another worker owns it.
    async fn complete_job(
        &self,
        id: JobId,
        claim_token: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Marks several claimed jobs done in one write (a batch of audit exports); returns how many
    /// were still owned by their claim. The default completes them one by one.
    async fn complete_jobs(
        &self,
        jobs: &[(JobId, String)],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        for (id, token) in jobs {
            if self.complete_job(*id, token, now).await? {
                n += 1;
            }
        }
        Ok(n)
    }
    /// Puts a claimed job back to pending at `run_at`, recording the error.
    async fn retry_job(
        &self,
        id: JobId,
        claim_token: &str,
        error: &str,
        run_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// An operator's retry of a dead job: pending again at `run_at` with its attempts reset.
    /// `Ok(false)` when the job is not dead (already retried, or never failed).
    async fn revive_job(&self, id: JobId, run_at: DateTime<Utc>) -> Result<bool, StoreError>;
    /// Gives up on a claimed job: it stays visible as dead.
    async fn bury_job(&self, id: JobId, claim_token: &str, error: &str)
    -> Result<bool, StoreError>;
    /// Extends the lease of the jobs of one claim that are still running under `claim_token`
    /// and whose lease has not lapsed, to `lease` from the store's clock; returns how many.
    async fn renew_lease(
        &self,
        claim_token: &str,
        lease: chrono::Duration,
    ) -> Result<u64, StoreError>;
    /// When the next pending job is due.
    async fn next_job_at(&self) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// Jobs matching `filter`, oldest `run_at` first.
    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError>;
    /// Queue statistics, for all jobs or one kind (`export_audit`: the audit export backlog).
    async fn job_stats(
        &self,
        now: DateTime<Utc>,
        kind: Option<&str>,
    ) -> Result<JobStats, StoreError>;

    /// Deletes up to `limit` jobs that finished (`done`) before `finished_before`; returns how
    /// many. Pending, running and dead jobs are never deleted, nor are kinds this version does
    /// not know. The job row of a stored chat delivery is what recognises its replay
    /// ([`Self::enqueue_claimed_once`]), so callers keep finished jobs longer than any replay
    /// window (a day and more; [`crate::engine::Engine::purge_finished_jobs`]).
    async fn purge_done_jobs(
        &self,
        finished_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError>;

    /// Idempotency: records `key` (a Slack `event_id`, an interaction's action id) and returns
    /// true the first time, false for every repeat. Keys older than a day may be forgotten.
    async fn remember_once(&self, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Records `key` as [`Self::remember_once`] does and, only the first time, enqueues `job`,
    /// both in one transaction: a durable inbox where a replayed delivery hits the key and no
    /// second job is written. Returns whether the job was enqueued.
    async fn enqueue_once(
        &self,
        key: &str,
        job: NewJob,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// [`Self::enqueue_once`] and [`Self::claim_job`] in one: the job is written already claimed
    /// (as [`super::ClaimAtInsert`] describes), for the receiving process to run at once. `None`
    /// for a repeated key. The job's id must be [`JobId::for_key`]`(key)` (a store may recognise
    /// a repeat by it). The default makes the two calls.
    async fn enqueue_claimed_once(
        &self,
        key: &str,
        job: NewJob,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Option<Job>, StoreError> {
        let id = job.id;
        if !self.enqueue_once(key, job, now).await? {
            return Ok(None);
        }
        self.claim_job(id, now, lease).await
    }
}

/// The Slack (or other) messages posted about a request, so later notices edit or thread onto
/// them. Built on the queue because the jobs that post them record them as they finish.
#[async_trait]
pub trait MessageRefs: JobQueue {
    /// Records a posted message (replacing the one of the same request, purpose and channel).
    async fn save_message_ref(&self, r: &MessageRef) -> Result<(), StoreError>;
    /// The messages posted about a request, in the order they were recorded.
    async fn message_refs(&self, request: RequestId) -> Result<Vec<MessageRef>, StoreError>;

    /// Records the messages that finished jobs posted and marks the jobs done (as
    /// [`JobQueue::complete_jobs`]), in one write. Returns how many jobs were still owned by
    /// their claim. The default makes one call per message, then completes the jobs.
    async fn complete_jobs_with_refs(
        &self,
        jobs: &[(JobId, String)],
        refs: &[MessageRef],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        for r in refs {
            self.save_message_ref(r).await?;
        }
        self.complete_jobs(jobs, now).await
    }
}
