//! Break-glass on the engine: [`Engine::submit_emergency`] grants at once without approval and
//! raises the alarm; [`Engine::review_emergency`] records an approver's review afterwards (and
//! revokes the grant when they say so). See `docs/break-glass.md`.

use serde_json::json;

use super::{Engine, EngineError, Submission};
use crate::audit::AuditKind;
use crate::duration::{AccessDuration, DurationBounds};
use crate::emergency::{EmergencyAccess, EmergencyReview, EmergencyWrite, ReviewOutcome};
use crate::grant::{Grant, GrantStatus};
use crate::ids::RequestId;
use crate::jobs::{JobKind, NewJob};
use crate::notification::{GrantSummary, Notification};
use crate::policy::{self, ApproverError};
use crate::ports::{ChangeSet, GrantWrite, RequestWrite, StoreError};
use crate::request::{AccessRequest, Actor, RequestEvent, RequestKind};
use crate::resource::{ApprovalPolicy, EmergencyPolicy, Resource};

/// The length of an emergency grant: what was asked for, cut to the resource's emergency
/// duration; that duration when nothing was asked for. Shorter than the resource's minimum is
/// refused like any duration.
pub fn emergency_duration(
    resource: &Resource,
    policy: EmergencyPolicy,
    requested: Option<AccessDuration>,
) -> Result<AccessDuration, EngineError> {
    let cap = policy.duration;
    let min = resource.durations.min.min(cap);
    let bounds = DurationBounds::new(cap, min, cap).map_err(|e| {
        // Checked at start-up (config), so only a hand-built resource gets here.
        EngineError::Unavailable(format!(
            "The emergency duration of '{}' is misconfigured: {e}",
            resource.id
        ))
    })?;
    Ok(bounds.check(requested.map(|d| d.min(cap)))?)
}

impl Engine {
    /// Break-glass: grants `s` at once, without approval, for at most the resource's emergency
    /// duration. Eligibility, the provider's rules and availability still apply; a resource
    /// without `emergency` is refused and nothing is written. In the same transaction as the
    /// grant and its expiry: the emergency record (unreviewed), the `emergency_granted` audit
    /// event and the notice to the approvers' and security channels.
    pub async fn submit_emergency(&self, s: Submission) -> Result<AccessRequest, EngineError> {
        // A re-run of the inbox job that filed it (a crash before the job was done) answers
        // with what the first run filed: a second emergency grant and a second loud notice
        // otherwise, once the first grant had ended. One read, on this rare path only.
        if let Some(filed) = self.filed_by_first_run(self.inbox_request_id()).await? {
            return Ok(filed);
        }
        let resource = self.resource(s.request.resource().as_str())?.clone();
        let Some(policy) = resource.emergency else {
            return Err(EngineError::EmergencyNotAllowed {
                resource: resource.id.to_string(),
            });
        };
        // What was typed, cut here (by `Engine::validate_emergency` too, to refuse up front).
        let requested = s.request.requested();
        let duration = emergency_duration(&resource, policy, requested)?;
        let justification = s.request.justification().clone();
        let now = self.now();
        self.refuse_if_live(&s, &resource, now).await?;
        // Break-glass skips approval, not eligibility.
        self.check_grantable(&s.subject, &resource).await?;

        let request = self.new_request(
            &s,
            &resource,
            RequestKind::New,
            duration,
            justification,
            now,
        );
        let mut cs = ChangeSet::default();
        let mut requested_event = self.requested_audit(&request);
        if let Some(details) = requested_event.details.as_object_mut() {
            details.insert("emergency".into(), true.into());
        }
        cs.audit.push(requested_event);
        let mut approved = request.transition(RequestEvent::Approve, now)?;
        approved.decided_by = Some(Actor::System);
        // Nobody approved it: the emergency notice below takes the place of the "approved"
        // message.
        let grant =
            self.plan_approval(&mut approved, &resource, None, &[Actor::System], &mut cs)?;
        cs.requests
            .insert(0, RequestWrite::Insert(approved.clone()));
        self.raise_alarm(&approved, &resource, &grant, policy, requested, &mut cs);
        match self.commit(cs).await {
            Ok(_) => {}
            Err(StoreError::Duplicate(_)) => {
                return Err(EngineError::RevocationInProgress {
                    resource: resource.id.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        tracing::warn!(
            request = %approved.id,
            grant = %grant.id,
            resource = %resource.id,
            user = %approved.subject.user_id,
            duration = %duration,
            "BREAK-GLASS: emergency access granted without approval; it needs a review"
        );
        Ok(approved)
    }

    /// Break-glass is for someone without access: refused while they hold a live grant on the
    /// resource (or one being revoked or past its expiry, which its revocation still owns).
    async fn refuse_if_live(
        &self,
        s: &Submission,
        resource: &Resource,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), EngineError> {
        match self
            .store
            .live_grant(&s.subject.key(), &resource.id)
            .await?
        {
            None => Ok(()),
            Some(g) if g.status == GrantStatus::Revoking || g.expires_at <= now => {
                Err(EngineError::RevocationInProgress {
                    resource: resource.id.to_string(),
                })
            }
            Some(g) => Err(EngineError::EmergencyAlreadyLive {
                resource: resource.id.to_string(),
                expires_at: g.expires_at,
            }),
        }
    }

    /// What makes a break-glass grant loud, added to its change set: the `emergency_granted`
    /// audit event, the unreviewed emergency record, and the notice to the approvers' and
    /// security channels.
    fn raise_alarm(
        &self,
        approved: &AccessRequest,
        resource: &Resource,
        grant: &Grant,
        policy: EmergencyPolicy,
        requested: Option<AccessDuration>,
        cs: &mut ChangeSet,
    ) {
        let requester = Actor::from_subject(&approved.subject);
        let approvers_channel = match &resource.approval {
            ApprovalPolicy::Approvers { channel, .. } => channel.clone(),
            ApprovalPolicy::Auto => None,
        }
        .or_else(|| self.settings.approval_channel.clone());
        let security_channel = self.settings.security_channel.clone();
        cs.audit.push(
            self.audit(AuditKind::EmergencyGranted, &requester, approved)
                .details(json!({
                    "duration": approved.duration.to_string(),
                    "requested": requested.map(|d| d.to_string()),
                    "emergency_duration": policy.duration.to_string(),
                    "justification": approved.justification.as_str(),
                    "expires_at": grant.expires_at.to_rfc3339(),
                    "approvers_channel": approvers_channel,
                    "security_channel": security_channel,
                })),
        );
        cs.emergency.push(EmergencyWrite::Insert(EmergencyAccess {
            request_id: approved.id,
            grant_id: grant.id,
            subject: approved.subject.clone(),
            resource: resource.id.clone(),
            duration: approved.duration,
            justification: approved.justification.as_str().to_string(),
            granted_at: approved.created_at,
            expires_at: grant.expires_at,
            review: None,
        }));
        cs.jobs
            .push(self.notify_job(Notification::EmergencyAccessGranted {
                request: self.summary(approved),
                grant: GrantSummary::of(grant),
                approvers_channel,
                security_channel,
            }));
    }

    /// An approver's review of an emergency grant: `Reviewed` records it; `Revoked` also
    /// revokes the grant (if it is still live), in the same transaction. Only someone who may
    /// approve the resource, never the person who took the access; admins (the API) always may.
    /// The first review wins: a second is told who reviewed it.
    pub async fn review_emergency(
        &self,
        id: RequestId,
        by: Actor,
        outcome: ReviewOutcome,
    ) -> Result<EmergencyAccess, EngineError> {
        self.with_retries(|| self.review_emergency_once(id, by.clone(), outcome))
            .await
    }

    async fn review_emergency_once(
        &self,
        id: RequestId,
        by: Actor,
        outcome: ReviewOutcome,
    ) -> Result<EmergencyAccess, EngineError> {
        let record = self
            .store
            .emergency_access(id)
            .await?
            .ok_or(EngineError::NotEmergency(id))?;
        if let Some(r) = &record.review {
            return Err(EngineError::AlreadyReviewed {
                by: r.by.mention(),
                outcome: r.outcome,
            });
        }
        let request = self.load_request(id).await?;
        let resource = self.resource_for_revocation(request.resource.as_str())?;
        match policy::check_approver(&resource, &request, &by, self.directory.as_ref()).await {
            Ok(()) => {}
            Err(ApproverError::SelfApproval) => return Err(EngineError::SelfReview),
            Err(ApproverError::NoApprovalNeeded(r)) => {
                return Err(ApproverError::NotAnApprover(r).into());
            }
            Err(e) => return Err(e.into()),
        }
        let now = self.now();
        let review = EmergencyReview {
            by: by.clone(),
            at: now,
            outcome,
        };
        let mut cs = ChangeSet::default();
        let grant = self.store.grant(record.grant_id).await?;
        let grant_status = grant.as_ref().map(|g| g.status);
        if outcome == ReviewOutcome::Revoked {
            if let Some(g) = grant
                .filter(|g| matches!(g.status, GrantStatus::Active | GrantStatus::Provisioning))
            {
                // As `revoke_grant` does, by an approver: the grant shows `revoking` until the
                // provider confirms, and the revoke job tells the holder who ended it.
                let mut updated = g.clone();
                updated.status = GrantStatus::Revoking;
                updated.revoked_by = Some(by.clone());
                cs.grants.push(GrantWrite::Update(updated));
                cs.audit
                    .push(self.grant_audit(AuditKind::RevocationRequested, &by, &g));
                cs.jobs.push(NewJob::at(
                    JobKind::Revoke {
                        grant_id: record.grant_id,
                    },
                    now,
                ));
            }
        }
        cs.emergency.push(EmergencyWrite::Review {
            request_id: id,
            review: review.clone(),
        });
        cs.audit.push(
            self.audit(AuditKind::EmergencyReviewed, &by, &request)
                .details(json!({
                    "outcome": outcome.as_str(),
                    "grant_status": grant_status.map(|s| s.as_str()),
                    "granted_at": record.granted_at.to_rfc3339(),
                })),
        );
        cs.jobs
            .push(self.notify_job(Notification::EmergencyReviewed {
                request: self.summary(&request),
                review: review.clone(),
                expires_at: record.expires_at,
            }));
        self.commit(cs).await?;
        Ok(EmergencyAccess {
            review: Some(review),
            ..record
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(min: &str, max: &str) -> Resource {
        serde_json::from_value(json!({
            "id": "prod", "provider": "dry-run",
            "durations": {"default": max, "min": min, "max": max},
            "approval": {"mode": "auto"},
        }))
        .unwrap()
    }

    fn d(s: &str) -> AccessDuration {
        s.parse().unwrap()
    }

    #[test]
    fn requested_durations_are_cut_to_the_emergency_duration() {
        let r = resource("1m", "8h");
        let p = EmergencyPolicy::default();
        assert_eq!(emergency_duration(&r, p, None).unwrap(), d("1h"));
        assert_eq!(emergency_duration(&r, p, Some(d("8h"))).unwrap(), d("1h"));
        assert_eq!(emergency_duration(&r, p, Some(d("20m"))).unwrap(), d("20m"));
        let e = emergency_duration(&r, p, Some(d("10s"))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Duration must be between 1m and 1h (you asked for 10s)."
        );
    }
}
