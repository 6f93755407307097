//! Deciding pending requests: approve (N of M), deny, cancel, time out; and what an approval does
//! to grants ([`Engine::plan_approval`]: a new grant with its expiry job, or a longer live one).

use chrono::{DateTime, Utc};

use super::{Engine, EngineError, delegation, stored};
use crate::audit::AuditKind;
use crate::grant::{Grant, GrantStatus};
use crate::ids::{GrantId, RequestId};
use crate::jobs::{JobKind, NewJob};
use crate::notification::Notification;
use crate::ports::{ChangeSet, GrantWrite, RequestWrite, StoreError};
use crate::request::{
    AccessRequest, Actor, Decision, DecisionKind, RequestEvent, RequestKind, RequestStatus,
};
use crate::resource::Resource;

impl Engine {
    /// Decides what an approved request does to grants: creates a grant (with its expiry job in
    /// the same change set) or extends the live one, and returns it. `request` must already be
    /// `approved`. The approvers' message is the caller's (break-glass sends its own notice).
    pub(super) fn plan_approval(
        &self,
        request: &mut AccessRequest,
        resource: &Resource,
        live: Option<Grant>,
        approvers: &[Actor],
        cs: &mut ChangeSet,
    ) -> Result<Grant, EngineError> {
        let now = self.now();
        let grant = self.approved_grant(request, resource, live, now, cs)?;
        request.grant_id = Some(grant.id);
        cs.audit.push(
            self.audit(
                AuditKind::AccessApproved,
                approvers.first().unwrap_or(&Actor::System),
                request,
            )
            .details(serde_json::json!({
                "approvers": approvers.iter().map(Actor::id).collect::<Vec<_>>(),
                "expires_at": grant.expires_at.to_rfc3339(),
            })),
        );
        cs.jobs.push(NewJob::at(
            JobKind::Provision {
                request_id: request.id,
            },
            now,
        ));
        cs.jobs.push(NewJob::at(
            JobKind::Expire { grant_id: grant.id },
            grant.expires_at,
        ));
        if let Some(at) = reminder_time(grant.granted_at.unwrap_or(now), grant.expires_at, now) {
            cs.jobs.push(NewJob::at(
                JobKind::Remind {
                    grant_id: grant.id,
                    expires_at: grant.expires_at,
                },
                at,
            ));
        }
        Ok(grant)
    }

    /// The grant an approval gives, written to `cs`: the live one, lengthened as the request
    /// asks, or a new one (provisioning) when there is none. Refused while the live grant is
    /// being revoked or past its expiry, and for an extension whose grant has ended.
    fn approved_grant(
        &self,
        request: &AccessRequest,
        resource: &Resource,
        live: Option<Grant>,
        now: DateTime<Utc>,
        cs: &mut ChangeSet,
    ) -> Result<Grant, EngineError> {
        match live {
            Some(g) if g.status == GrantStatus::Revoking => {
                Err(EngineError::RevocationInProgress {
                    resource: resource.id.to_string(),
                })
            }
            // Past its expiry: the expire job owns it now (it claims the row before calling the
            // provider), so an extension could only race the revocation and be lost.
            Some(g) if g.expires_at <= now => Err(EngineError::RevocationInProgress {
                resource: resource.id.to_string(),
            }),
            Some(mut g) => {
                let cap = now + resource.durations.max.as_chrono();
                let wanted = match request.kind {
                    RequestKind::Extend => (g.expires_at.max(now) + request.duration.as_chrono())
                        .min(cap.max(g.expires_at)),
                    RequestKind::New => now + request.duration.as_chrono(),
                };
                // A resource that cannot be extended is provisioned again (a fresh key) but keeps
                // its expiry.
                let may_extend = resource.extendable || request.kind == RequestKind::Extend;
                if may_extend && wanted > g.expires_at {
                    g.expires_at = wanted;
                }
                cs.grants.push(GrantWrite::Update(g.clone()));
                Ok(g)
            }
            // The access this extension was for has ended (its approval came too late): an
            // approver who approved "more time" must not hand out new access without a request.
            None if request.kind == RequestKind::Extend => Err(EngineError::ExtendedGrantEnded {
                resource: resource.id.to_string(),
            }),
            None => {
                let g = Grant {
                    id: GrantId::new(),
                    subject: request.subject.clone(),
                    resource: resource.id.clone(),
                    status: GrantStatus::Provisioning,
                    provider_handle: serde_json::Value::Null,
                    created_at: now,
                    granted_at: None,
                    expires_at: now + request.duration.as_chrono(),
                    ended_at: None,
                    request_id: request.id,
                    revoked_by: None,
                    version: 0,
                    provider_intent: serde_json::Value::Null,
                    takeback_pending: false,
                };
                cs.grants.push(GrantWrite::Insert(g.clone()));
                Ok(g)
            }
        }
    }

    /// Records an approval. With N-of-M the request stays pending until N distinct approvers
    /// agree; an admin's approval is final.
    pub async fn approve(&self, id: RequestId, by: Actor) -> Result<AccessRequest, EngineError> {
        self.with_retries(|| self.approve_once(id, by.clone()))
            .await
    }

    async fn approve_once(&self, id: RequestId, by: Actor) -> Result<AccessRequest, EngineError> {
        let request = self.load_request(id).await?;
        require_pending(&request)?;
        self.refuse_if_lapsed(&request).await?;
        let resource = self.resource(request.resource.as_str())?.clone();
        let authority = self.authorize(&resource, &request, &by).await?;
        let decisions = self.store.decisions(id).await?;
        if decisions.iter().any(|d| d.actor.id() == by.id()) {
            return Err(EngineError::AlreadyVoted);
        }
        let now = self.now();
        let mut approvers: Vec<Actor> = decisions
            .iter()
            .filter(|d| d.kind == DecisionKind::Approve)
            .map(|d| d.actor.clone())
            .collect();
        approvers.push(by.clone());
        let required = resource.approval.required_approvals() as usize;
        let enough = matches!(by, Actor::Admin { .. }) || approvers.len() >= required;

        let mut cs = ChangeSet::default();
        cs.decisions.push(Decision {
            request_id: id,
            actor: by.clone(),
            kind: DecisionKind::Approve,
            at: now,
            comment: None,
        });
        let mut updated;
        if enough {
            updated = request.transition(RequestEvent::Approve, now)?;
            updated.decided_by = Some(by.clone());
            let live = self
                .store
                .live_grant(&request.subject.key(), &resource.id)
                .await?;
            self.plan_approval(&mut updated, &resource, live, &approvers, &mut cs)?;
            if !resource.approval.is_auto() {
                cs.jobs.push(self.notify_job(Notification::RequestApproved {
                    request: self.summary(&updated),
                    approved_by: approvers,
                }));
            }
        } else {
            // Still pending, but the version bump serialises concurrent votes: two approvers
            // voting at once cannot both see "one approval so far".
            updated = AccessRequest {
                updated_at: now,
                ..request.clone()
            };
            cs.audit.push(
                self.audit(AuditKind::ApprovalRecorded, &by, &request)
                    .details(serde_json::json!({
                        "approvals": approvers.len(), "required": required,
                    })),
            );
            cs.jobs
                .push(self.notify_job(Notification::ApprovalProgress {
                    request: self.summary(&request),
                    approved_by: approvers,
                    approvals_required: required as u32,
                }));
        }
        cs.requests.insert(0, RequestWrite::Update(updated.clone()));
        delegation::annotate(&mut cs, id, &authority);
        match self.commit(cs).await {
            Ok(_) => Ok(stored(updated)),
            Err(StoreError::Duplicate(what)) if what.contains("decision") => {
                Err(EngineError::AlreadyVoted)
            }
            Err(StoreError::Duplicate(_)) => Err(EngineError::Store(StoreError::Conflict(
                "live grant".into(),
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Denies a pending request. One deny ends it.
    pub async fn deny(
        &self,
        id: RequestId,
        by: Actor,
        reason: Option<String>,
    ) -> Result<AccessRequest, EngineError> {
        self.with_retries(|| self.deny_once(id, by.clone(), reason.clone()))
            .await
    }

    async fn deny_once(
        &self,
        id: RequestId,
        by: Actor,
        reason: Option<String>,
    ) -> Result<AccessRequest, EngineError> {
        let request = self.load_request(id).await?;
        require_pending(&request)?;
        self.refuse_if_lapsed(&request).await?;
        let resource = self.resource(request.resource.as_str())?.clone();
        let authority = self.authorize(&resource, &request, &by).await?;
        // One decision per approver (the store's unique key): an approver who already voted
        // yes gets an answer, not a storage error.
        if self
            .store
            .decisions(id)
            .await?
            .iter()
            .any(|d| d.actor.id() == by.id())
        {
            return Err(EngineError::AlreadyApprovedCannotDeny);
        }
        let now = self.now();
        let mut updated = request.transition(RequestEvent::Deny, now)?;
        updated.decided_by = Some(by.clone());
        let mut cs = ChangeSet::default();
        cs.requests.push(RequestWrite::Update(updated.clone()));
        cs.decisions.push(Decision {
            request_id: id,
            actor: by.clone(),
            kind: DecisionKind::Deny,
            at: now,
            comment: reason.clone(),
        });
        cs.audit.push(
            self.audit(AuditKind::AccessDenied, &by, &request)
                .details(serde_json::json!({"reason": reason})),
        );
        cs.jobs.push(self.notify_job(Notification::RequestDenied {
            request: self.summary(&updated),
            denied_by: by,
            reason,
        }));
        delegation::annotate(&mut cs, id, &authority);
        match self.commit(cs).await {
            Ok(_) => Ok(stored(updated)),
            Err(StoreError::Duplicate(what)) if what.contains("decision") => {
                Err(EngineError::AlreadyApprovedCannotDeny)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A pending request past `pending_until` is decided by nobody: it times out now (the
    /// time-out job may not have run yet) and the decision is refused.
    async fn refuse_if_lapsed(&self, request: &AccessRequest) -> Result<(), EngineError> {
        match request.pending_until {
            Some(until) if until <= self.now() => {
                self.time_out(request.id).await?;
                Err(EngineError::PendingExpired { until })
            }
            _ => Ok(()),
        }
    }

    /// See [`crate::ports::Provider::reissues_on_request`].
    pub(super) fn reissues_on_request(&self, resource: &Resource) -> bool {
        self.providers
            .get(resource.provider.as_str())
            .is_some_and(|p| p.reissues_on_request(resource))
    }

    /// Withdraws a pending request (the requester, or an admin).
    pub async fn cancel(&self, id: RequestId, by: Actor) -> Result<AccessRequest, EngineError> {
        self.with_retries(|| self.cancel_once(id, by.clone())).await
    }

    async fn cancel_once(&self, id: RequestId, by: Actor) -> Result<AccessRequest, EngineError> {
        let request = self.load_request(id).await?;
        if !(by.is_subject(&request.subject) || matches!(by, Actor::Admin { .. })) {
            return Err(EngineError::NotYours);
        }
        require_pending(&request)?;
        let now = self.now();
        let mut updated = request.transition(RequestEvent::Cancel, now)?;
        updated.decided_by = Some(by.clone());
        let mut cs = ChangeSet::default();
        cs.requests.push(RequestWrite::Update(updated.clone()));
        cs.audit
            .push(self.audit(AuditKind::RequestCancelled, &by, &request));
        cs.jobs
            .push(self.notify_job(Notification::RequestCancelled {
                request: self.summary(&updated),
                cancelled_by: by,
            }));
        self.commit(cs).await?;
        Ok(stored(updated))
    }

    pub(super) async fn time_out(&self, request_id: RequestId) -> Result<(), EngineError> {
        let Some(request) = self.store.request(request_id).await? else {
            return Ok(());
        };
        if request.status != RequestStatus::Pending {
            return Ok(());
        }
        let now = self.now();
        if request.pending_until.is_some_and(|u| u > now) {
            return Ok(());
        }
        let updated = request.transition(RequestEvent::TimeOut, now)?;
        let mut cs = ChangeSet::default();
        cs.requests.push(RequestWrite::Update(updated.clone()));
        cs.audit
            .push(self.audit(AuditKind::RequestTimedOut, &Actor::System, &request));
        cs.jobs.push(self.notify_job(Notification::RequestTimedOut {
            request: self.summary(&updated),
        }));
        self.commit(cs).await?;
        Ok(())
    }
}

/// Decisions are only taken on pending requests.
fn require_pending(r: &AccessRequest) -> Result<(), EngineError> {
    if r.status == RequestStatus::Pending {
        Ok(())
    } else {
        Err(EngineError::AlreadyDecided { status: r.status })
    }
}

/// When to remind: a day before for grants longer than two days, else when 10% of the duration
/// is left. None when that moment has already passed.
pub fn reminder_time(
    start: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let total = expires_at - start;
    if total <= chrono::Duration::zero() {
        return None;
    }
    let before = if total > chrono::Duration::days(2) {
        chrono::Duration::days(1)
    } else {
        total / 10
    };
    let at = expires_at - before;
    (at > now).then_some(at)
}
