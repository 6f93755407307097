//! Filing a request ([`Engine::submit`]): check the validated submission against the store, refuse what cannot
//! be granted, then write the pending request (with its approval messages, time-out and
//! escalation jobs) or, for an auto-approved resource, the approved request and its grant.
//!
//! The steps shared with break-glass ([`Engine::submit_emergency`]) live here too: parsing the
//! duration, the checks that refuse a person the provider could never grant, and the request
//! row with its `access_requested` audit event.

use chrono::{DateTime, Utc};

use super::{Engine, EngineError, Submission};
use crate::audit::{AuditKind, AuditRecord};
use crate::duration::AccessDuration;
use crate::grant::{Grant, GrantStatus};
use crate::ids::RequestId;
use crate::jobs::{JobKind, NewJob};
use crate::notification::Notification;
use crate::ports::{ChangeSet, RequestWrite, StoreError};
use crate::request::{AccessRequest, Actor, RequestEvent, RequestKind, RequestStatus};
use crate::resource::{ApprovalPolicy, Justification, Resource};
use crate::subject::Subject;

impl Engine {
    /// Files a request. Auto-approved resources come back `approved` with provisioning queued.
    pub async fn submit(&self, s: Submission) -> Result<AccessRequest, EngineError> {
        // Parsed by `Engine::validate`; what needs the store is decided here.
        let resource = self.resource(s.request.resource().as_str())?.clone();
        let duration = s.request.duration();
        let now = self.now();
        // The live grant, the pending request for this resource and the per-person limit
        // figures, in one read (docs/rate-limits.md).
        let facts = self
            .store
            .submission_facts(
                &s.subject.key(),
                &resource.id,
                self.settings.request_limits.query(now),
            )
            .await?;
        let justification = self.check_kind(&s, &resource, facts.live.as_ref(), now)?;
        self.check_grantable(&s.subject, &resource).await?;
        // Filed by an inbox job: its request id is a function of the job, so a re-run (after a
        // crash between filing and the job's completion, or a transient error) finds what the
        // first run filed. Before, a re-run after the first request had been decided filed a
        // second one (chaos finding 12).
        let replayed = self.inbox_request_id();
        if let Some(filed) = self
            .check_not_filed(&resource, &facts, replayed, now)
            .await?
        {
            return Ok(filed);
        }

        let mut request = self.new_request(
            &s,
            &resource,
            s.request.kind(),
            duration,
            justification,
            now,
        );
        let mut cs = ChangeSet::default();
        cs.audit.push(self.requested_audit(&request));
        match &resource.approval {
            ApprovalPolicy::Auto => {
                request = request.transition(RequestEvent::Approve, now)?;
                request.decided_by = Some(Actor::System);
                self.plan_approval(
                    &mut request,
                    &resource,
                    facts.live,
                    &[Actor::System],
                    &mut cs,
                )?;
                cs.requests.insert(0, RequestWrite::Insert(request.clone()));
            }
            ApprovalPolicy::Approvers {
                channel,
                pending_ttl,
                ..
            } => {
                request.pending_until = Some(now + pending_ttl.as_chrono());
                cs.requests.push(RequestWrite::Insert(request.clone()));
                self.ask_approvers(&request, &resource, channel.clone(), &mut cs);
            }
        }
        match self.commit(cs).await {
            Ok(_) => Ok(request),
            Err(StoreError::Duplicate(_)) => {
                // The first run filed it (and it has been decided since): nothing more to do.
                if let Some(filed) = self.filed_by_first_run(replayed).await? {
                    return Ok(filed);
                }
                Err(EngineError::RevocationInProgress {
                    resource: resource.id.to_string(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// What the request's kind requires of the live grant, and the justification it files:
    /// a new request on a live grant lengthens it, so a resource that cannot be extended refuses
    /// that up front; an extension needs an active grant that is not already being revoked.
    fn check_kind(
        &self,
        s: &Submission,
        resource: &Resource,
        live: Option<&Grant>,
        now: DateTime<Utc>,
    ) -> Result<Justification, EngineError> {
        match s.request.kind() {
            RequestKind::New => {
                // (Unless asking again hands out something new without extending, as GCP's key
                // mode does.)
                if let Some(g) = live.filter(|g| {
                    matches!(g.status, GrantStatus::Active | GrantStatus::Provisioning)
                        && g.expires_at > now
                }) {
                    if !resource.extendable && !self.reissues_on_request(resource) {
                        return Err(EngineError::NotExtendableLive {
                            resource: resource.id.to_string(),
                            expires_at: g.expires_at,
                        });
                    }
                }
                Ok(s.request.justification().clone())
            }
            RequestKind::Extend => {
                if !resource.extendable {
                    return Err(EngineError::NotExtendable {
                        resource: resource.id.to_string(),
                    });
                }
                if live.is_none_or(|g| g.status != GrantStatus::Active) {
                    return Err(EngineError::NoActiveGrant {
                        resource: resource.id.to_string(),
                    });
                }
                if live.is_some_and(|g| g.expires_at <= now) {
                    // Its expiry is being (or about to be) revoked: extending now would race it.
                    return Err(EngineError::RevocationInProgress {
                        resource: resource.id.to_string(),
                    });
                }
                Ok(s.request.justification().clone())
            }
        }
    }

    /// Refuses what could never be granted now: `subject` not eligible, a provider rule that
    /// would refuse this person at provisioning (GCP `email_domain`) — so no approver is ever
    /// asked about a request that cannot be granted — or the resource unavailable at its
    /// provider.
    pub(super) async fn check_grantable(
        &self,
        subject: &Subject,
        resource: &Resource,
    ) -> Result<(), EngineError> {
        self.eligibility(subject, resource).await?;
        if let Some(reason) = self
            .providers
            .get(resource.provider.as_str())
            .and_then(|p| p.refuses_subject(resource, subject))
        {
            return Err(EngineError::Unavailable(reason));
        }
        if let Some(reason) = self.unavailable_reason(resource).await {
            return Err(EngineError::Unavailable(reason));
        }
        Ok(())
    }

    /// Refuses a second pending request for the resource, and one over the per-person limits
    /// (checked last: a request refused for another reason says that reason). A re-run of the
    /// inbox job that filed the request (`replayed`) is answered with that request instead
    /// (`Some`), not refused by what its first run filed and counted.
    async fn check_not_filed(
        &self,
        resource: &Resource,
        facts: &crate::ports::SubmissionFacts,
        replayed: Option<RequestId>,
        now: DateTime<Utc>,
    ) -> Result<Option<AccessRequest>, EngineError> {
        if let Some(p) = facts.pending {
            if Some(p) == replayed {
                return self.load_request(p).await.map(Some);
            }
            return Err(EngineError::AlreadyPending {
                resource: resource.id.to_string(),
                request: p,
            });
        }
        // Break-glass (issue 17 item 1) hook: an emergency request is to be decided here,
        // whether it is exempt from these limits (it is not implemented in this change).
        if let Err(refused) = self.settings.request_limits.check(&facts.rate, now) {
            if let Some(filed) = self.filed_by_first_run(replayed).await? {
                return Ok(Some(filed));
            }
            return Err(refused.into());
        }
        Ok(None)
    }

    /// The request an earlier run of the running inbox job filed, if any.
    pub(super) async fn filed_by_first_run(
        &self,
        replayed: Option<RequestId>,
    ) -> Result<Option<AccessRequest>, EngineError> {
        match replayed {
            Some(id) => Ok(self.store.request(id).await?),
            None => Ok(None),
        }
    }

    /// A request as filed now, still pending and undecided; its id is the running inbox job's
    /// (see [`RequestId::for_inbox_job`]) or a fresh one.
    pub(super) fn new_request(
        &self,
        s: &Submission,
        resource: &Resource,
        kind: RequestKind,
        duration: AccessDuration,
        justification: Justification,
        now: DateTime<Utc>,
    ) -> AccessRequest {
        AccessRequest {
            id: self.inbox_request_id().unwrap_or_default(),
            subject: s.subject.clone(),
            resource: resource.id.clone(),
            kind,
            duration,
            justification,
            status: RequestStatus::Pending,
            created_at: now,
            updated_at: now,
            pending_until: None,
            grant_id: None,
            decided_by: None,
            failure: None,
            version: 0,
        }
    }

    /// The `access_requested` audit event of a new request, by its requester.
    pub(super) fn requested_audit(&self, request: &AccessRequest) -> AuditRecord {
        let requester = Actor::from_subject(&request.subject);
        self.audit(AuditKind::AccessRequested, &requester, request)
            .details(serde_json::json!({
                "duration": request.duration.to_string(),
                "justification": request.justification.as_str(),
                "kind": request.kind,
                "email": request.subject.email.as_ref().map(|e| e.as_str()),
            }))
    }

    /// The jobs of a request that waits for approvers: the approval message (to the resource's
    /// channel, else the global one), the requester's receipt, the time-out at `pending_until`
    /// and, when configured, the escalation.
    fn ask_approvers(
        &self,
        request: &AccessRequest,
        resource: &Resource,
        channel: Option<String>,
        cs: &mut ChangeSet,
    ) {
        let summary = self.summary(request);
        let required = resource.approval.required_approvals();
        cs.jobs
            .push(self.notify_job(Notification::ApprovalRequested {
                request: summary.clone(),
                channel: channel.or_else(|| self.settings.approval_channel.clone()),
                approvals_required: required,
            }));
        cs.jobs
            .push(self.notify_job(Notification::RequestSubmitted {
                request: summary,
                approvals_required: required,
            }));
        if let Some(until) = request.pending_until {
            cs.jobs.push(NewJob::at(
                JobKind::TimeoutPending {
                    request_id: request.id,
                },
                until,
            ));
        }
        if let Some(esc) = resource.approval.escalation() {
            cs.jobs.push(NewJob::at(
                JobKind::Escalate {
                    request_id: request.id,
                },
                esc.at(request.created_at),
            ));
        }
    }
}
