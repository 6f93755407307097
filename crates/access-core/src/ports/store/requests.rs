//! The request side of the store: requests, grants, decisions, delegations, break-glass records,
//! their filters and pages, and the one write every transition makes ([`RequestStore::commit`]).

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ChangeSet, Committed, StoreError};
use crate::emergency::{EmergencyAccess, EmergencyFilter};
use crate::grant::{Grant, GrantStatus};
use crate::ids::{GrantId, RequestId, ResourceId};
use crate::limits::{RateFacts, RateQuery};
use crate::request::{AccessRequest, Decision, RequestStatus};
use crate::subject::SubjectKey;

/// Which requests [`RequestStore::requests`] returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestFilter {
    /// Only requests in this state.
    pub status: Option<RequestStatus>,
    /// Only requests for this resource.
    pub resource: Option<ResourceId>,
    /// Only requests of this person.
    pub subject: Option<SubjectKey>,
    /// Newest first; 100 when unset.
    pub limit: Option<u32>,
    /// Keyset paging: only requests after this one in the list's order (older, or as old with
    /// a smaller id). The last id of a page asks for the next page; no request has that id →
    /// an empty page.
    #[serde(default)]
    pub before: Option<RequestId>,
}

/// Which grants [`RequestStore::grants`] returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GrantFilter {
    /// Only grants in this state.
    pub status: Option<GrantStatus>,
    /// Only provisioning, active and revoking grants.
    pub live_only: bool,
    /// Only grants on this resource.
    pub resource: Option<ResourceId>,
    /// Only grants of this person.
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
    /// The creation time of the previous page's last row.
    pub created_at: DateTime<Utc>,
    /// The id of the previous page's last row.
    pub id: String,
}

/// One page of requests or grants for the console: filters plus a keyset cursor.
/// `S` is [`RequestStatus`] or [`GrantStatus`].
#[derive(Debug, Clone, PartialEq)]
pub struct PageQuery<S> {
    /// Only rows in this state.
    pub status: Option<S>,
    /// Only provisioning, active and revoking grants (grants only).
    pub live_only: bool,
    /// Only rows about this resource.
    pub resource: Option<ResourceId>,
    /// Workspace scope: only this Slack team's people.
    pub team_id: Option<String>,
    /// A person: their Slack user id or their e-mail address (exact).
    pub person: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// The page starts after this row; `None` for the first page.
    pub before: Option<PageCursor>,
    /// Rows per page.
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

/// What [`RequestStore::submission_facts`] reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubmissionFacts {
    /// The live grant of the subject on the resource.
    pub live: Option<Grant>,
    /// The subject's newest pending request for the resource.
    pub pending: Option<RequestId>,
    /// The per-person limit figures (all zero when no [`RateQuery`] was given).
    pub rate: RateFacts,
}

/// Requests, grants and what hangs off them: the engine's state, written by
/// [`Self::commit`] and read by everything that shows or decides it.
#[async_trait]
pub trait RequestStore: Send + Sync + Debug + 'static {
    /// Applies one transition's writes atomically (see [`ChangeSet`] and [`super::Store`]).
    async fn commit(&self, change: ChangeSet) -> Result<Committed, StoreError>;

    /// One request, if it exists.
    async fn request(&self, id: RequestId) -> Result<Option<AccessRequest>, StoreError>;
    /// Requests matching `filter`, newest first.
    async fn requests(&self, filter: &RequestFilter) -> Result<Vec<AccessRequest>, StoreError>;
    /// The requests that asked for (or extended) a grant, oldest first.
    async fn requests_for_grant(&self, grant: GrantId) -> Result<Vec<AccessRequest>, StoreError>;
    /// The approvals and denials recorded on a request, oldest first.
    async fn decisions(&self, request: RequestId) -> Result<Vec<Decision>, StoreError>;

    /// One grant, if it exists.
    async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError>;
    /// The live (provisioning, active or revoking) grant of `subject` on `resource`, if any.
    async fn live_grant(
        &self,
        subject: &SubjectKey,
        resource: &ResourceId,
    ) -> Result<Option<Grant>, StoreError>;
    /// Grants matching `filter`, newest first.
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

    /// The requests among `ids` that exist, in any order (the audit export reads a batch with a
    /// few statements instead of one per request). The default reads them one by one.
    async fn requests_by_id(&self, ids: &[RequestId]) -> Result<Vec<AccessRequest>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.request(*id).await?);
        }
        Ok(out)
    }
    /// The grants among `ids` that exist, in any order; as [`Self::requests_by_id`].
    async fn grants_by_id(&self, ids: &[GrantId]) -> Result<Vec<Grant>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.grant(*id).await?);
        }
        Ok(out)
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

    /// How many requests are in each state (every state, zeros included).
    async fn request_counts(&self) -> Result<Vec<(RequestStatus, u64)>, StoreError>;
    /// How many grants are in each state (every state, zeros included).
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
