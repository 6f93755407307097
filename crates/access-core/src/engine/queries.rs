//! What adapters read through the engine (the console, the admin API, the metrics, the
//! maintenance tasks, the scheduler), so none of them reaches through to the store: each
//! method names one question an adapter asks, and the store behind it stays the engine's.

use chrono::{DateTime, Utc};

use super::Engine;
use crate::audit::{AuditEvent, ChainVerification};
use crate::emergency::{EmergencyAccess, EmergencyFilter};
use crate::grant::{Grant, GrantStatus};
use crate::ids::{GrantId, JobId, RequestId};
use crate::jobs::{Job, JobStats};
use crate::ports::{
    AuditFilter, DailyStats, GrantFilter, JobFilter, PageQuery, RequestFilter, StoreError,
};
use crate::request::{AccessRequest, Decision, RequestStatus};

/// How much of the audit chain [`Engine::verify_audit_chain`] walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainWalk {
    /// From the first event: slow, trusts nothing.
    Full,
    /// From the newest trusted checkpoint to the head (a full walk when there is none).
    FromCheckpoint,
}

impl Engine {
    /// One request, if it exists.
    pub async fn request(&self, id: RequestId) -> Result<Option<AccessRequest>, StoreError> {
        self.store.request(id).await
    }

    /// The requests matching `filter`, newest first.
    pub async fn requests(&self, filter: &RequestFilter) -> Result<Vec<AccessRequest>, StoreError> {
        self.store.requests(filter).await
    }

    /// One keyset page of requests, newest first (the console's lists and history).
    pub async fn requests_page(
        &self,
        q: &PageQuery<RequestStatus>,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        self.store.requests_page(q).await
    }

    /// The approvals and denials recorded on a request, oldest first.
    pub async fn decisions(&self, request: RequestId) -> Result<Vec<Decision>, StoreError> {
        self.store.decisions(request).await
    }

    /// One grant, if it exists.
    pub async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError> {
        self.store.grant(id).await
    }

    /// The grants matching `filter`, newest first.
    pub async fn grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
        self.store.grants(filter).await
    }

    /// The grants among `ids` that exist, in any order.
    pub async fn grants_by_id(&self, ids: &[GrantId]) -> Result<Vec<Grant>, StoreError> {
        self.store.grants_by_id(ids).await
    }

    /// One keyset page of grants, newest first.
    pub async fn grants_page(&self, q: &PageQuery<GrantStatus>) -> Result<Vec<Grant>, StoreError> {
        self.store.grants_page(q).await
    }

    /// Chart figures for the `days` days ending today (UTC), optionally for one Slack team.
    pub async fn daily_stats(
        &self,
        days: u32,
        team_id: Option<&str>,
    ) -> Result<DailyStats, StoreError> {
        self.store.daily_stats(self.now(), days, team_id).await
    }

    /// How many requests are in each status (the metrics).
    pub async fn request_counts(&self) -> Result<Vec<(RequestStatus, u64)>, StoreError> {
        self.store.request_counts().await
    }

    /// How many grants are in each status (the metrics).
    pub async fn grant_counts(&self) -> Result<Vec<(GrantStatus, u64)>, StoreError> {
        self.store.grant_counts().await
    }

    /// How many break-glass grants no approver has reviewed yet (the metric).
    pub async fn emergency_unreviewed_count(&self) -> Result<u64, StoreError> {
        self.store.emergency_unreviewed_count().await
    }

    /// The audit events matching `filter`, in chain order.
    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        self.store.audit_events(filter).await
    }

    /// Recomputes the audit hash chain over `walk` and says whether it is intact.
    pub async fn verify_audit_chain(
        &self,
        walk: ChainWalk,
    ) -> Result<ChainVerification, StoreError> {
        match walk {
            ChainWalk::Full => self.store.verify_audit_chain().await,
            ChainWalk::FromCheckpoint => self.store.verify_audit_chain_incremental().await,
        }
    }

    /// Break-glass grants matching `filter`, newest first.
    pub async fn emergency_accesses(
        &self,
        filter: &EmergencyFilter,
    ) -> Result<Vec<EmergencyAccess>, StoreError> {
        self.store.emergency_accesses(filter).await
    }

    /// The jobs matching `filter`.
    pub async fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        self.store.jobs(filter).await
    }

    /// Queue statistics now, for all jobs or one kind (`export_audit`: the export backlog).
    pub async fn job_stats(&self, kind: Option<&str>) -> Result<JobStats, StoreError> {
        self.store.job_stats(self.now(), kind).await
    }

    /// When the next queued job is due, if any (how long the scheduler may sleep).
    pub async fn next_job_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.store.next_job_at().await
    }

    /// Puts a dead job back in the queue, due now. False if it was not dead.
    pub async fn revive_job(&self, id: JobId) -> Result<bool, StoreError> {
        self.store.revive_job(id, self.now()).await
    }

    /// Records `key` and says whether this is the first time: a double click or a replayed
    /// delivery is acted on once.
    pub async fn remember_once(&self, key: &str) -> Result<bool, StoreError> {
        self.store.remember_once(key, self.now()).await
    }

    /// Whether the store is reachable and its migrations applied (the readiness probe).
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.store.ready().await
    }
}
