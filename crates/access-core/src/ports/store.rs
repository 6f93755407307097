//! Persistence: the change set a transition writes, the filters, and the `Store` trait.

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditKind, AuditRecord, ChainVerification};
use crate::emergency::{EmergencyAccess, EmergencyFilter, EmergencyWrite};
use crate::grant::{Grant, GrantStatus};
use crate::ids::{AuditEventId, GrantId, JobId, RequestId, ResourceId};
use crate::jobs::{Job, JobStats, JobStatus, NewJob};
use crate::limits::{RateFacts, RateQuery};
use crate::notification::MessageRef;
use crate::request::{AccessRequest, Decision, RequestStatus};
use crate::subject::SubjectKey;

/// A write to one request row.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestWrite {
    Insert(AccessRequest),
    /// Compare-and-set: succeeds only if the stored version is still `request.version`; the store
    /// writes every field and sets `version + 1`.
    Update(AccessRequest),
}

/// A write to one grant row.
#[derive(Debug, Clone, PartialEq)]
pub enum GrantWrite {
    Insert(Grant),
    /// Compare-and-set on `grant.version`, as for requests.
    Update(Grant),
}

/// Everything one state transition writes. A store applies all of it in one transaction or none of
/// it: the new state, its audit events and the jobs it causes can never be separated by a crash.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeSet {
    pub requests: Vec<RequestWrite>,
    pub grants: Vec<GrantWrite>,
    /// Inserted; one decision per (request, actor): a second one fails with
    /// [`StoreError::Duplicate`].
    pub decisions: Vec<Decision>,
    /// Appended to the hash chain in order.
    pub audit: Vec<AuditRecord>,
    pub jobs: Vec<NewJob>,
    /// Some of `jobs` written already claimed by the committing process, which runs them right
    /// after the commit instead of handing them to a scheduler.
    pub claimed: Option<ClaimAtInsert>,
    /// Break-glass records and their reviews.
    pub emergency: Vec<EmergencyWrite>,
    /// Delegations created or revoked (applied before the audit events).
    pub delegations: Vec<crate::delegation::DelegationWrite>,
}

/// Jobs of a [`ChangeSet`] written `running`, under `token`, leased for `lease` on the store's
/// lease clock (as [`Store::claim_jobs`] would claim them, attempt 1): no scheduler takes them
/// while the process that wrote them runs them; should it die, the lease lapses and any
/// scheduler does.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimAtInsert {
    pub token: String,
    pub lease: chrono::Duration,
    pub ids: Vec<JobId>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
            && self.grants.is_empty()
            && self.decisions.is_empty()
            && self.audit.is_empty()
            && self.jobs.is_empty()
            && self.emergency.is_empty()
            && self.delegations.is_empty()
    }
}

/// What a commit wrote, as the store sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Committed {
    /// The audit events as sealed into the chain.
    pub audit: Vec<AuditEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare-and-set lost: someone else changed the row first. Re-read and decide again.
    #[error("conflict: {0} was changed concurrently")]
    Conflict(String),
    /// A unique constraint (one decision per approver, one live grant per subject and resource).
    #[error("duplicate: {0}")]
    Duplicate(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// Stored data that does not parse back (corruption, or a newer schema).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestFilter {
    pub status: Option<RequestStatus>,
    pub resource: Option<ResourceId>,
    pub subject: Option<SubjectKey>,
    /// Newest first; 100 when unset.
    pub limit: Option<u32>,
    /// Keyset paging: only requests after this one in the list's order (older, or as old with
    /// a smaller id). The last id of a page asks for the next page; no request has that id →
    /// an empty page.
    #[serde(default)]
    pub before: Option<RequestId>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GrantFilter {
    pub status: Option<GrantStatus>,
    /// Only provisioning, active and revoking grants.
    pub live_only: bool,
    pub resource: Option<ResourceId>,
    pub subject: Option<SubjectKey>,
    /// Newest first; 100 when unset.
    pub limit: Option<u32>,
    /// Keyset paging, as [`RequestFilter::before`].
    #[serde(default)]
    pub before: Option<GrantId>,
}

/// Where a keyset page starts: the last row of the previous page (lists are newest first, ordered
/// by `(created_at, id)` descending). Unlike an offset, reading page 1,000 costs what page 1 costs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageCursor {
    pub created_at: DateTime<Utc>,
    pub id: String,
}

/// One page of requests or grants for the console: filters plus a keyset cursor.
/// `S` is [`RequestStatus`] or [`GrantStatus`].
#[derive(Debug, Clone, PartialEq)]
pub struct PageQuery<S> {
    pub status: Option<S>,
    /// Only provisioning, active and revoking grants (grants only).
    pub live_only: bool,
    pub resource: Option<ResourceId>,
    /// Workspace scope: only this Slack team's people.
    pub team_id: Option<String>,
    /// A person: their Slack user id or their e-mail address (exact).
    pub person: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    pub before: Option<PageCursor>,
    pub limit: u32,
}

impl<S> Default for PageQuery<S> {
    fn default() -> Self {
        Self {
            status: None,
            live_only: false,
            resource: None,
            team_id: None,
            person: None,
            since: None,
            until: None,
            before: None,
            limit: 50,
        }
    }
}

/// Daily figures for the console's charts, over a window of days (UTC).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DailyStats {
    /// `(day, resource, grants created that day)`.
    pub grants_per_day: Vec<(chrono::NaiveDate, String, u64)>,
    /// `(day, requests approved that day, mean seconds from request to first approval)`.
    pub approve_secs: Vec<(chrono::NaiveDate, u64, f64)>,
    /// `(day, grants live at the end of that day)`.
    pub active_at_end_of_day: Vec<(chrono::NaiveDate, u64)>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Events after this sequence number (paging cursor).
    pub after_seq: Option<i64>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub kind: Option<AuditKind>,
    pub resource: Option<ResourceId>,
    /// `team/user`, as in [`AuditRecord::subject`].
    pub subject: Option<String>,
    pub request_id: Option<RequestId>,
    /// Oldest first; 100 when unset, at most 1000.
    pub limit: Option<u32>,
}

/// Which jobs a claim may take, by kind name (`export_audit`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimScope {
    All,
    Only(&'static str),
    /// Every kind but these.
    AllBut(&'static [&'static str]),
    /// Only these kinds.
    OneOf(&'static [&'static str]),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    /// The kind's name (`expire`, `notify`, …).
    pub kind: Option<String>,
    pub limit: Option<u32>,
}

/// Persistence. Implementations MUST:
/// - apply a [`ChangeSet`] atomically, returning [`StoreError::Conflict`] (and writing nothing)
///   when any compare-and-set loses;
/// - append audit records to a single hash chain in commit order ([`crate::audit::seal`]);
/// - hand each due job to exactly one claimant at a time;
/// - return [`StoreError::Duplicate`] for a second decision by the same actor on one request and
///   for a second live grant of one subject on one resource.
#[async_trait]
pub trait Store: Send + Sync + Debug + 'static {
    async fn commit(&self, change: ChangeSet) -> Result<Committed, StoreError>;

    async fn request(&self, id: RequestId) -> Result<Option<AccessRequest>, StoreError>;
    async fn requests(&self, filter: &RequestFilter) -> Result<Vec<AccessRequest>, StoreError>;
    async fn requests_for_grant(&self, grant: GrantId) -> Result<Vec<AccessRequest>, StoreError>;
    async fn decisions(&self, request: RequestId) -> Result<Vec<Decision>, StoreError>;

    async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError>;
    /// The live (provisioning, active or revoking) grant of `subject` on `resource`, if any.
    async fn live_grant(
        &self,
        subject: &SubjectKey,
        resource: &ResourceId,
    ) -> Result<Option<Grant>, StoreError>;
    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>, StoreError>;
    /// One keyset page of requests, newest first (the console's history).
    async fn requests_page(
        &self,
        q: &PageQuery<RequestStatus>,
    ) -> Result<Vec<AccessRequest>, StoreError>;
    /// One keyset page of grants, newest first.
    async fn grants_page(&self, q: &PageQuery<GrantStatus>) -> Result<Vec<Grant>, StoreError>;
    /// Chart figures for the `days` days ending with the day of `now` (UTC), optionally for one
    /// Slack team.
    async fn daily_stats(
        &self,
        now: DateTime<Utc>,
        days: u32,
        team_id: Option<&str>,
    ) -> Result<DailyStats, StoreError>;

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
    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError>;
    /// Queue statistics, for all jobs or one kind (`export_audit`: the audit export backlog).
    async fn job_stats(
        &self,
        now: DateTime<Utc>,
        kind: Option<&str>,
    ) -> Result<JobStats, StoreError>;

    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;
    async fn audit_event(&self, id: AuditEventId) -> Result<Option<AuditEvent>, StoreError>;

    /// The events among `ids` that exist, in any order (the export reads a claimed batch with
    /// a few statements instead of one per event). The default reads them one by one.
    async fn audit_events_by_id(
        &self,
        ids: &[AuditEventId],
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.audit_event(*id).await?);
        }
        Ok(out)
    }
    /// The requests among `ids` that exist, in any order; as [`Store::audit_events_by_id`].
    async fn requests_by_id(&self, ids: &[RequestId]) -> Result<Vec<AccessRequest>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.request(*id).await?);
        }
        Ok(out)
    }
    /// The grants among `ids` that exist, in any order; as [`Store::audit_events_by_id`].
    async fn grants_by_id(&self, ids: &[GrantId]) -> Result<Vec<Grant>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.grant(*id).await?);
        }
        Ok(out)
    }
    /// Walks the whole chain (in pages) and compares it with the stored chain head.
    async fn verify_audit_chain(&self) -> Result<ChainVerification, StoreError>;
    /// Verifies from the newest trusted checkpoint to the head (a full walk when there is
    /// none). Stores without checkpoints walk everything.
    async fn verify_audit_chain_incremental(&self) -> Result<ChainVerification, StoreError> {
        self.verify_audit_chain().await
    }

    async fn save_message_ref(&self, r: &MessageRef) -> Result<(), StoreError>;
    async fn message_refs(&self, request: RequestId) -> Result<Vec<MessageRef>, StoreError>;

    /// Idempotency: records `key` (a Slack `event_id`, an interaction's action id) and returns
    /// true the first time, false for every repeat. Keys older than a day may be forgotten.
    async fn remember_once(&self, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Records `key` as [`Store::remember_once`] does and, only the first time, enqueues `job`,
    /// both in one transaction: a durable inbox where a replayed delivery hits the key and no
    /// second job is written. Returns whether the job was enqueued.
    async fn enqueue_once(
        &self,
        key: &str,
        job: NewJob,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Claims one job by id, if it is pending (whatever its `run_at`): the receiving process
    /// runs an inbox job it just stored at once instead of waiting for the scheduler. `None`
    /// when another worker has it or it is finished.
    async fn claim_job(
        &self,
        id: JobId,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Option<Job>, StoreError>;

    /// [`Self::enqueue_once`] and [`Self::claim_job`] in one: the job is written already claimed
    /// (as [`ClaimAtInsert`] describes), for the receiving process to run at once. `None` for a
    /// repeated key. The job's id must be [`JobId::for_key`]`(key)` (a store may recognise a
    /// repeat by it). The default makes the two calls.
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

    /// What filing a request needs to know, in one read: the live grant of `subject` on
    /// `resource` (as [`Self::live_grant`]) and the id of the subject's newest pending request
    /// for it. The default makes two calls.
    async fn live_grant_and_pending(
        &self,
        subject: &SubjectKey,
        resource: &ResourceId,
    ) -> Result<(Option<Grant>, Option<RequestId>), StoreError> {
        let live = self.live_grant(subject, resource).await?;
        let pending = self
            .requests(&RequestFilter {
                status: Some(RequestStatus::Pending),
                resource: Some(resource.clone()),
                subject: Some(subject.clone()),
                limit: Some(1),
                before: None,
            })
            .await?;
        Ok((live, pending.first().map(|r| r.id)))
    }

    /// What filing a request needs to know, in one read: [`Self::live_grant_and_pending`] and,
    /// when `rate` is given, the figures of the per-person request limits
    /// ([`crate::limits::RateFacts`]: the `rate.nth` newest request of `subject` if it was created
    /// at or after `rate.since`, the number of their pending requests on every resource and the
    /// earliest `pending_until` among them). The default makes separate calls.
    async fn submission_facts(
        &self,
        subject: &SubjectKey,
        resource: &ResourceId,
        rate: Option<RateQuery>,
    ) -> Result<SubmissionFacts, StoreError> {
        let (live, pending) = self.live_grant_and_pending(subject, resource).await?;
        let mut facts = RateFacts::default();
        if let Some(q) = rate {
            let recent = self
                .requests(&RequestFilter {
                    subject: Some(subject.clone()),
                    limit: Some(q.nth),
                    ..Default::default()
                })
                .await?;
            facts.window_nth_newest = recent
                .get(q.nth.saturating_sub(1) as usize)
                .map(|r| r.created_at)
                .filter(|at| *at >= q.since);
            let open = self
                .requests(&RequestFilter {
                    status: Some(RequestStatus::Pending),
                    subject: Some(subject.clone()),
                    limit: Some(1000),
                    ..Default::default()
                })
                .await?;
            facts.pending_total = open.len() as u64;
            facts.first_pending_until = open.iter().filter_map(|r| r.pending_until).min();
        }
        Ok(SubmissionFacts {
            live,
            pending,
            rate: facts,
        })
    }

    /// The newest `limit` audit events about `subject` (`team/user`, as
    /// [`AuditRecord::subject`]) or done by `actor_id` (as [`crate::request::Actor::id`]), newest
    /// first (`/access admin audit @user`). The default pages through the subject's events and
    /// keeps the newest (it does not see events where the person only acted).
    async fn recent_audit_events(
        &self,
        subject: &str,
        actor_id: &str,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let _ = actor_id;
        let mut newest: std::collections::VecDeque<AuditEvent> = Default::default();
        let mut after = None;
        loop {
            let page = self
                .audit_events(&AuditFilter {
                    after_seq: after,
                    subject: Some(subject.to_string()),
                    limit: Some(1000),
                    ..Default::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            for e in page {
                newest.push_back(e);
                if newest.len() > limit as usize {
                    newest.pop_front();
                }
            }
        }
        Ok(newest.into_iter().rev().collect())
    }

    /// Records the messages that finished jobs posted and marks the jobs done (as
    /// [`Self::complete_jobs`]), in one write. Returns how many jobs were still owned by their
    /// claim. The default makes one call per message, then completes the jobs.
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

    async fn request_counts(&self) -> Result<Vec<(RequestStatus, u64)>, StoreError>;
    async fn grant_counts(&self) -> Result<Vec<(GrantStatus, u64)>, StoreError>;
    /// Database reachable and migrations applied.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Delegations matching `filter`, newest first.
    async fn delegations(
        &self,
        filter: &crate::delegation::DelegationFilter,
    ) -> Result<Vec<crate::delegation::Delegation>, StoreError>;
    /// The break-glass record of a request, if it was an emergency request.
    async fn emergency_access(
        &self,
        request: RequestId,
    ) -> Result<Option<EmergencyAccess>, StoreError>;
    /// Break-glass records, newest first.
    async fn emergency_accesses(
        &self,
        filter: &EmergencyFilter,
    ) -> Result<Vec<EmergencyAccess>, StoreError>;
    /// How many break-glass grants no approver has reviewed yet (the metric).
    async fn emergency_unreviewed_count(&self) -> Result<u64, StoreError>;
}

/// What [`Store::submission_facts`] reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubmissionFacts {
    /// The live grant of the subject on the resource.
    pub live: Option<Grant>,
    /// The subject's newest pending request for the resource.
    pub pending: Option<RequestId>,
    /// The per-person limit figures (all zero when no [`RateQuery`] was given).
    pub rate: RateFacts,
}
