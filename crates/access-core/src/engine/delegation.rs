//! The engine's delegation and escalation operations (a child module of [`crate::engine`], so they use
//! its private helpers and commit through the same [`ChangeSet`] path). See
//! [`crate::delegation`] and [`crate::escalation`] for the rules.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Engine, EngineError};
use crate::audit::{AuditKind, AuditRecord};
use crate::delegation::{
    self, Authority, Delegation, DelegationError, DelegationFilter, DelegationWrite,
};
use crate::ids::RequestId;
use crate::jobs::{JobKind, NewJob};
use crate::notification::Notification;
use crate::policy::{self, ApproverError};
use crate::ports::{AuditFilter, ChangeSet, RequestWrite};
use crate::request::{AccessRequest, Actor, RequestStatus};
use crate::resource::{ApprovalPolicy, ApproverSet, Resource};
use crate::subject::SubjectKey;

/// Delegations read per check: far more than anyone holds at once.
const DELEGATIONS_READ: u32 = 200;

/// Adds how a decision was authorised (on behalf of a delegator, through escalation) to the
/// details of the decision's audit event for `request` in `cs`.
pub(super) fn annotate(cs: &mut ChangeSet, request: RequestId, authority: &Authority) {
    let Some(extra) = authority.audit_details() else {
        return;
    };
    for a in cs.audit.iter_mut().filter(|a| {
        a.request_id == Some(request)
            && matches!(
                a.kind,
                AuditKind::AccessApproved | AuditKind::ApprovalRecorded | AuditKind::AccessDenied
            )
    }) {
        if !a.details.is_object() {
            a.details = serde_json::json!({});
        }
        if let (Some(d), Some(e)) = (a.details.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                d.insert(k.clone(), v.clone());
            }
        }
    }
}

impl Engine {
    /// May `by` decide `request`, and how: as an approver, as an escalation approver once the
    /// request reached its escalation instant, or as the active delegate of someone who may.
    pub(super) async fn authorize(
        &self,
        resource: &Resource,
        request: &AccessRequest,
        by: &Actor,
    ) -> Result<Authority, EngineError> {
        let now = self.now();
        let mut unavailable = false;
        match self.authority_of(resource, request, by, now).await {
            Ok(a) => return Ok(a),
            Err(ApproverError::NotAnApprover(_)) => {}
            Err(ApproverError::DirectoryUnavailable) => unavailable = true,
            Err(e) => return Err(e.into()),
        }
        let Actor::User {
            team_id, user_id, ..
        } = by
        else {
            return Err(ApproverError::NotAnApprover(resource.id.to_string()).into());
        };
        let received = self
            .store
            .delegations(&DelegationFilter {
                team_id: Some(team_id.clone()),
                delegate_id: Some(user_id.clone()),
                limit: Some(DELEGATIONS_READ),
                ..Default::default()
            })
            .await?;
        let mut ended: Option<(Delegation, String)> = None;
        for d in received {
            let principal = d.delegator();
            // A delegate never decides the delegator's own request for them.
            if principal.is_subject(&request.subject) {
                continue;
            }
            let could = match self.authority_of(resource, request, &principal, now).await {
                Ok(a) => a,
                Err(ApproverError::DirectoryUnavailable) => {
                    unavailable = true;
                    continue;
                }
                Err(_) => continue,
            };
            if d.is_active(now) {
                let decided = self.store.decisions(request.id).await?;
                if decided.iter().any(|x| x.actor.id() == principal.id()) {
                    return Err(ApproverError::DelegatorAlreadyDecided {
                        delegator: principal.mention(),
                    }
                    .into());
                }
                return Ok(Authority {
                    on_behalf_of: Some(principal),
                    via_escalation: could.via_escalation,
                });
            }
            if ended.is_none() {
                if let Some(how) = d.ended(now) {
                    ended = Some((d, how));
                }
            }
        }
        if unavailable {
            return Err(ApproverError::DirectoryUnavailable.into());
        }
        if let Some((d, how)) = ended {
            return Err(ApproverError::DelegationEnded {
                delegator: d.delegator().mention(),
                ended: how,
                resource: resource.id.to_string(),
            }
            .into());
        }
        Err(ApproverError::NotAnApprover(resource.id.to_string()).into())
    }

    /// `actor`'s own right to decide (no delegation): the approver set, or the escalation set
    /// once the request reached its escalation instant.
    async fn authority_of(
        &self,
        resource: &Resource,
        request: &AccessRequest,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Authority, ApproverError> {
        let direct =
            policy::check_approver(resource, request, actor, self.directory.as_ref()).await;
        match direct {
            Ok(()) => return Ok(Authority::default()),
            Err(ApproverError::NotAnApprover(_) | ApproverError::DirectoryUnavailable) => {}
            Err(e) => return Err(e),
        }
        if let Some(esc) = resource.approval.escalation() {
            if esc.reached(request, now) && self.in_set(esc.approvers, actor).await? {
                return Ok(Authority {
                    on_behalf_of: None,
                    via_escalation: true,
                });
            }
        }
        direct.map(|_| Authority::default())
    }

    /// Whether `actor` (a Slack user) is in `set`: listed, or a member of one of its groups.
    async fn in_set(&self, set: &ApproverSet, actor: &Actor) -> Result<bool, ApproverError> {
        policy::in_set(set, actor, self.directory.as_ref())
            .await
            .map_err(|_| ApproverError::DirectoryUnavailable)
    }

    /// Whether `actor` approves some resource in their own right (its approver set or its
    /// escalation set): who may delegate.
    async fn approves_somewhere(&self, actor: &Actor) -> Result<bool, DelegationError> {
        let mut unavailable = false;
        for r in self.catalog.all() {
            let ApprovalPolicy::Approvers {
                approvers,
                escalation_approvers,
                ..
            } = &r.approval
            else {
                continue;
            };
            for set in [approvers, escalation_approvers] {
                match self.in_set(set, actor).await {
                    Ok(true) => return Ok(true),
                    Ok(false) => {}
                    Err(_) => unavailable = true,
                }
            }
        }
        if unavailable {
            return Err(DelegationError::DirectoryUnavailable);
        }
        Ok(false)
    }

    /// Active delegations `delegator` gave (in their workspace).
    async fn given(
        &self,
        team_id: &str,
        delegator_id: &str,
    ) -> Result<Vec<Delegation>, EngineError> {
        Ok(self
            .store
            .delegations(&DelegationFilter {
                team_id: Some(team_id.to_string()),
                delegator_id: Some(delegator_id.to_string()),
                active_at: Some(self.now()),
                limit: Some(DELEGATIONS_READ),
                ..Default::default()
            })
            .await?)
    }

    /// The delegate's DM about `d` (a durable notification job).
    fn delegation_notice(&self, d: &Delegation, ended: bool) -> NewJob {
        self.notify_job(Notification::DelegationChanged {
            delegate: SubjectKey::new(&d.team_id, &d.delegate_id).subject(d.delegate_name.clone()),
            delegator: d.delegator(),
            until: d.until,
            ended,
        })
    }

    fn delegation_audit(&self, kind: AuditKind, by: &Actor, d: &Delegation) -> AuditRecord {
        AuditRecord::new(kind, by.clone(), self.now())
            .subject(&d.team_id, &d.delegate_id)
            .details(serde_json::json!({
                "delegation_id": d.id.to_string(),
                "delegator": format!("slack:{}/{}", d.team_id, d.delegator_id),
                "delegate": format!("slack:{}/{}", d.team_id, d.delegate_id),
                "until": d.until.to_rfc3339(),
            }))
    }

    /// `delegate @user until …`: `delegator` lets `delegate` (same workspace) decide for them
    /// until `until` (a date or a duration, see [`delegation::parse_until`]). An active
    /// delegation to the same person is replaced.
    pub async fn delegate(
        &self,
        delegator: &Actor,
        delegate: &Actor,
        until: &str,
    ) -> Result<Delegation, EngineError> {
        // A concurrent revocation of the one being replaced loses a compare-and-set: re-read.
        self.with_retries(|| self.delegate_once(delegator, delegate, until))
            .await
    }

    async fn delegate_once(
        &self,
        delegator: &Actor,
        delegate: &Actor,
        until: &str,
    ) -> Result<Delegation, EngineError> {
        let (
            Actor::User {
                team_id,
                user_id: from,
                name: from_name,
            },
            Actor::User {
                user_id: to,
                name: to_name,
                ..
            },
        ) = (delegator, delegate)
        else {
            return Err(DelegationError::NotAUser.into());
        };
        if from == to {
            return Err(DelegationError::ToSelf.into());
        }
        let now = self.now();
        let until = delegation::parse_until(until, now).map_err(DelegationError::from)?;
        if !self.approves_somewhere(delegator).await? {
            return Err(DelegationError::NotAnApprover.into());
        }
        let d = Delegation {
            id: Uuid::new_v4(),
            team_id: team_id.clone(),
            delegator_id: from.clone(),
            delegator_name: from_name.clone(),
            delegate_id: to.clone(),
            delegate_name: to_name.clone(),
            created_at: now,
            until,
            revoked_at: None,
            revoked_by: None,
        };
        let mut cs = ChangeSet::default();
        for old in self
            .given(team_id, from)
            .await?
            .into_iter()
            .filter(|o| o.delegate_id == *to)
        {
            cs.delegations.push(DelegationWrite::Revoke {
                id: old.id,
                at: now,
                by: delegator.id(),
            });
            let mut a = self.delegation_audit(AuditKind::DelegationRevoked, delegator, &old);
            if let Some(obj) = a.details.as_object_mut() {
                obj.insert("reason".into(), "replaced".into());
                obj.insert("replaced_by".into(), d.id.to_string().into());
            }
            cs.audit.push(a);
        }
        cs.delegations.push(DelegationWrite::Insert(d.clone()));
        cs.audit
            .push(self.delegation_audit(AuditKind::DelegationCreated, delegator, &d));
        cs.jobs.push(self.delegation_notice(&d, false));
        self.commit(cs).await?;
        Ok(d)
    }

    /// `delegate revoke @user`: ends `delegator`'s active delegation to `delegate_id` now.
    pub async fn undelegate(
        &self,
        delegator: &Actor,
        delegate_id: &str,
    ) -> Result<Delegation, EngineError> {
        self.with_retries(|| self.undelegate_once(delegator, delegate_id))
            .await
    }

    async fn undelegate_once(
        &self,
        delegator: &Actor,
        delegate_id: &str,
    ) -> Result<Delegation, EngineError> {
        let Actor::User {
            team_id,
            user_id: from,
            ..
        } = delegator
        else {
            return Err(DelegationError::NotAUser.into());
        };
        // All of them: two `delegate` commands racing may both have stored one.
        let active: Vec<Delegation> = self
            .given(team_id, from)
            .await?
            .into_iter()
            .filter(|d| d.delegate_id == delegate_id)
            .collect();
        let Some(d) = active.first().cloned() else {
            return Err(DelegationError::NoSuchDelegation {
                delegate: delegate_id.to_string(),
            }
            .into());
        };
        let now = self.now();
        let mut cs = ChangeSet::default();
        for d in &active {
            cs.delegations.push(DelegationWrite::Revoke {
                id: d.id,
                at: now,
                by: delegator.id(),
            });
            let mut a = self.delegation_audit(AuditKind::DelegationRevoked, delegator, d);
            if let Some(obj) = a.details.as_object_mut() {
                obj.insert("reason".into(), "revoked".into());
            }
            cs.audit.push(a);
        }
        cs.jobs.push(self.delegation_notice(&d, true));
        self.commit(cs).await?;
        Ok(Delegation {
            revoked_at: Some(now),
            revoked_by: Some(delegator.id()),
            ..d
        })
    }

    /// The active delegations `user` gave and received in workspace `team_id`.
    pub async fn delegations_of(
        &self,
        team_id: &str,
        user_id: &str,
    ) -> Result<(Vec<Delegation>, Vec<Delegation>), EngineError> {
        let given = self.given(team_id, user_id).await?;
        let received = self
            .store
            .delegations(&DelegationFilter {
                team_id: Some(team_id.to_string()),
                delegate_id: Some(user_id.to_string()),
                active_at: Some(self.now()),
                limit: Some(DELEGATIONS_READ),
                ..Default::default()
            })
            .await?;
        Ok((given, received))
    }

    /// The `escalate` job: a request still pending at its escalation instant is shown to the
    /// escalation approvers and its requester is told. Decided, timed out or already escalated:
    /// nothing. The request's version is bumped in the same transaction, so a decision landing
    /// at the same moment makes this commit lose its compare-and-set and re-read.
    pub(super) async fn escalate(&self, request_id: RequestId) -> Result<(), EngineError> {
        let Some(request) = self.store.request(request_id).await? else {
            return Ok(());
        };
        if request.status != RequestStatus::Pending {
            return Ok(());
        }
        let now = self.now();
        if request.pending_until.is_some_and(|u| u <= now) {
            return Ok(());
        }
        let Some(resource) = self.catalog.get(request.resource.as_str()) else {
            return Ok(());
        };
        let ApprovalPolicy::Approvers { channel, .. } = &resource.approval else {
            return Ok(());
        };
        // Escalation removed from the configuration since the request was filed.
        let Some(esc) = resource.approval.escalation() else {
            return Ok(());
        };
        if !esc.reached(&request, now) {
            // The delay was lengthened since: escalate at the new instant.
            let mut cs = ChangeSet::default();
            cs.jobs.push(NewJob::at(
                JobKind::Escalate { request_id },
                esc.at(request.created_at),
            ));
            self.commit(cs).await?;
            return Ok(());
        }
        let earlier = self
            .store
            .audit_events(&AuditFilter {
                request_id: Some(request_id),
                kind: Some(AuditKind::RequestEscalated),
                limit: Some(1),
                ..Default::default()
            })
            .await?;
        if !earlier.is_empty() {
            return Ok(());
        }
        let target = esc
            .channel
            .map(str::to_string)
            .or_else(|| channel.clone())
            .or_else(|| self.settings.approval_channel.clone());
        let mut cs = ChangeSet::default();
        cs.requests.push(RequestWrite::Update(AccessRequest {
            updated_at: now,
            ..request.clone()
        }));
        cs.audit.push(
            self.audit(AuditKind::RequestEscalated, &Actor::System, &request)
                .details(serde_json::json!({
                    "after": esc.after.to_string(),
                    "escalation_approvers": esc.approvers,
                    "channel": target,
                })),
        );
        cs.jobs
            .push(self.notify_job(Notification::RequestEscalated {
                request: self.summary(&request),
                channel: target,
                approvers: esc.approvers.clone(),
                after: esc.after,
                approvals_required: resource.approval.required_approvals(),
            }));
        self.commit(cs).await?;
        Ok(())
    }
}
