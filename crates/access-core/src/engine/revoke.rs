//! Ending grants: revocation asked for by a person ([`Engine::revoke_grant`]), and the `expire`
//! and `revoke` jobs that call the provider, record the end, and take back provider work that
//! landed after its grant had ended.

use std::sync::Arc;

use super::{CONFLICT_RETRIES, Engine, EngineError, JobResult, RUN_HERE};
use crate::audit::AuditKind;
use crate::grant::{Grant, GrantStatus};
use crate::ids::GrantId;
use crate::jobs::{JobKind, NewJob};
use crate::notification::{GrantSummary, Notification};
use crate::ports::{
    ChangeSet, GrantWrite, ProviderError, ProviderEvent, RequestWrite, RevokeRequest, StoreError,
};
use crate::request::{Actor, RequestEvent, RequestStatus};
use crate::subject::SubjectKey;

/// How [`Engine::record_end`] left the grant.
#[derive(Debug, PartialEq)]
enum Ended {
    Expired,
    Revoked,
    /// Ended (or extended) by someone else meanwhile.
    Already,
}

impl Engine {
    /// Takes access away before it expires (the holder, or an admin). The provider call happens
    /// in a job; the grant shows `revoking` until it is done.
    pub async fn revoke_grant(&self, id: GrantId, by: Actor) -> Result<Grant, EngineError> {
        self.with_retries(|| self.revoke_once(id, by.clone())).await
    }

    async fn revoke_once(&self, id: GrantId, by: Actor) -> Result<Grant, EngineError> {
        let grant = self
            .store
            .grant(id)
            .await?
            .ok_or(EngineError::GrantNotFound(id))?;
        if !(by.is_subject(&grant.subject)
            || matches!(by, Actor::Admin { .. } | Actor::System)
            || self.is_admin(&by).await)
        {
            return Err(EngineError::NotYours);
        }
        match grant.status {
            GrantStatus::Active | GrantStatus::Provisioning => {}
            GrantStatus::Revoking => return Ok(grant),
            _ => {
                return Err(EngineError::NoActiveGrant {
                    resource: grant.resource.to_string(),
                });
            }
        }
        let mut updated = grant.clone();
        updated.status = GrantStatus::Revoking;
        updated.revoked_by = Some(by.clone());
        let mut cs = ChangeSet::default();
        cs.grants.push(GrantWrite::Update(updated.clone()));
        cs.audit
            .push(self.grant_audit(AuditKind::RevocationRequested, &by, &grant));
        let revoke = NewJob::at(JobKind::Revoke { grant_id: id }, self.now());
        let revoke_id = revoke.id;
        cs.jobs.push(revoke);
        self.commit(cs).await?;
        // Asked for from a job this process runs (a chat command): the revocation was written
        // claimed by it and runs now, not after a scheduler's claim; it is settled with that job.
        if let Ok(here) = RUN_HERE.try_with(Arc::clone) {
            let job = here.follow_ups.lock().ok().and_then(|mut f| {
                let i = f.iter().position(|j| j.id == revoke_id)?;
                Some(f.remove(i))
            });
            if let Some(job) = job {
                let (result, _) = self.run_job_caught(&job).await;
                if let Ok(mut f) = here.finished.lock() {
                    f.push((job, result));
                }
            }
        }
        Ok(Grant {
            version: updated.version + 1,
            ..updated
        })
    }

    /// `revoke <resource>`: revokes the caller's live grant on that resource.
    pub async fn revoke_resource(
        &self,
        subject: &SubjectKey,
        resource: &str,
        by: Actor,
    ) -> Result<Grant, EngineError> {
        let r = self.resource(resource)?;
        let grant = self
            .store
            .live_grant(subject, &r.id)
            .await?
            .ok_or_else(|| EngineError::NoActiveGrant {
                resource: r.id.to_string(),
            })?;
        self.revoke_grant(grant.id, by).await
    }

    /// Expiry (`expire = true`) or early revocation, and the take-back of provider work that
    /// landed after its grant ended. Revocation never gives up: any failure is a retry.
    pub(super) async fn end_grant(
        &self,
        grant_id: GrantId,
        expire: bool,
    ) -> Result<JobResult, EngineError> {
        let mut claimed = None;
        for _ in 0..CONFLICT_RETRIES {
            let Some(grant) = self.store.grant(grant_id).await? else {
                return Ok(JobResult::Fatal(format!("grant {grant_id} vanished")));
            };
            if !grant.status.is_live() {
                if grant.takeback_pending {
                    return self.take_back(grant).await;
                }
                return Ok(JobResult::done());
            }
            let now = self.now();
            if expire && grant.status != GrantStatus::Revoking && grant.expires_at > now {
                // Extended since this job was written; a later expire job exists.
                return Ok(JobResult::done());
            }
            if grant.status == GrantStatus::Revoking {
                claimed = Some(grant);
                break;
            }
            // An expiry claims the row (a compare-and-set that bumps its version) before calling
            // the provider: an approval that extends it concurrently either lands first (and
            // this job finds nothing to do) or re-reads and is refused, because `plan_approval`
            // never extends a grant past its expiry. No extension is lost to the revoke call.
            match self
                .commit(ChangeSet {
                    grants: vec![GrantWrite::Update(grant.clone())],
                    ..Default::default()
                })
                .await
            {
                Ok(_) => {
                    claimed = Some(Grant {
                        version: grant.version + 1,
                        ..grant
                    });
                    break;
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let Some(grant) = claimed else {
            return Ok(JobResult::Retry("grant kept changing".into()));
        };
        // A retired resource still ends its grants through its provider.
        let outcome = match self.revoke_at_provider(&grant).await? {
            Ok(o) => o,
            Err(e) => return Ok(JobResult::Retry(e.to_string())),
        };
        let ended = self
            .with_retries(|| self.record_end(&grant, &outcome.events, outcome.note.as_deref()))
            .await?;
        let lag = (ended == Ended::Expired)
            .then(|| (self.now() - grant.expires_at).num_milliseconds().max(0) as f64 / 1000.0);
        Ok(JobResult::Done {
            revocation_lag: lag,
        })
    }

    /// Asks the grant's provider to remove what it added, by the recorded handle or, without
    /// one, by the intent. A provider error is the caller's to retry.
    async fn revoke_at_provider(
        &self,
        grant: &Grant,
    ) -> Result<Result<crate::ports::RevokeOutcome, ProviderError>, EngineError> {
        let resource = self.resource_for_revocation(grant.resource.as_str())?;
        let provider = self
            .providers
            .get(resource.provider.as_str())
            .ok_or_else(|| EngineError::NoProvider(resource.provider.to_string()))?;
        Ok(provider
            .revoke(&RevokeRequest {
                grant_id: grant.id,
                subject: grant.subject.clone(),
                resource: resource.clone(),
                handle: grant.provider_handle.clone(),
                intent: grant.provider_intent.clone(),
            })
            .await)
    }

    /// Removes what the provider added for a grant that is no longer live (its provisioning
    /// finished, or an attempt landed, after it ended), with the recorded handle or intent.
    async fn take_back(&self, grant: Grant) -> Result<JobResult, EngineError> {
        let outcome = match self.revoke_at_provider(&grant).await? {
            Ok(o) => o,
            Err(e) => return Ok(JobResult::Retry(e.to_string())),
        };
        let mut g = grant.clone();
        g.takeback_pending = false;
        let mut cs = ChangeSet::default();
        cs.grants.push(GrantWrite::Update(g));
        cs.audit.push(
            self.grant_audit(AuditKind::ProviderEvent, &Actor::System, &grant)
                .details(serde_json::json!({
                    "event": "access_taken_back",
                    "details": {"status": grant.status, "note": outcome.note},
                })),
        );
        cs.audit
            .extend(self.provider_event_audits(&grant, &outcome.events));
        match self.commit(cs).await {
            Ok(_) => Ok(JobResult::done()),
            // A newer handle was recorded meanwhile: take that back too.
            Err(StoreError::Conflict(what)) => Ok(JobResult::Retry(format!(
                "{what}; taking back the newer handle"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Records the end of a grant whose provider access was just removed. `revoked` is the grant
    /// as it was when the revoke call was made; the row is re-read and re-checked: an extension
    /// that landed meanwhile is not marked expired, and a handle recorded meanwhile (by a
    /// provisioning that finished during the call) stays marked for take-back.
    async fn record_end(
        &self,
        revoked: &Grant,
        events: &[ProviderEvent],
        note: Option<&str>,
    ) -> Result<Ended, EngineError> {
        let grant_id = revoked.id;
        let now = self.now();
        let grant = self
            .store
            .grant(grant_id)
            .await?
            .ok_or(EngineError::GrantNotFound(grant_id))?;
        if !grant.status.is_live() {
            return Ok(Ended::Already);
        }
        let revoked_now = grant.status == GrantStatus::Revoking;
        if !revoked_now && grant.expires_at > now {
            // Extended after the claim (cannot happen through `plan_approval`, which refuses to
            // extend a grant past its expiry). Leave it live and say so loudly: its access was
            // removed, and the drift check will report the missing holder.
            tracing::error!(grant = %grant_id, expires_at = %grant.expires_at, "grant extended while its expiry was being revoked; left live");
            return Ok(Ended::Already);
        }
        let mut g = grant.clone();
        g.status = if revoked_now {
            GrantStatus::Revoked
        } else {
            GrantStatus::Expired
        };
        g.ended_at = Some(now);
        // The revoke covered what the row held when it was called; work recorded since (a
        // provisioning that finished during the call) stays marked and is taken back by a job.
        let newer_work = grant.version != revoked.version
            && (grant.takeback_pending
                || grant.provider_handle != revoked.provider_handle
                || grant.provider_intent != revoked.provider_intent);
        g.takeback_pending = newer_work;
        let mut cs = ChangeSet::default();
        if newer_work {
            cs.jobs.push(NewJob::at(JobKind::Revoke { grant_id }, now));
        }
        cs.grants.push(GrantWrite::Update(g.clone()));
        let event = if revoked_now {
            RequestEvent::Revoke
        } else {
            RequestEvent::Expire
        };
        for r in self.store.requests_for_grant(grant_id).await? {
            if r.status == RequestStatus::Active {
                cs.requests
                    .push(RequestWrite::Update(r.transition(event, now)?));
            }
        }
        let revoked_by = if revoked_now {
            grant.revoked_by.clone()
        } else {
            None
        };
        let actor = revoked_by.clone().unwrap_or(Actor::System);
        let kind = if revoked_now {
            AuditKind::AccessRevoked
        } else {
            AuditKind::AccessExpired
        };
        cs.audit.push(
            self.grant_audit(kind, &actor, &grant)
                .details(serde_json::json!({
                    "expires_at": grant.expires_at.to_rfc3339(),
                    "reason": if revoked_now { "revoked" } else { "expired" },
                    "note": note,
                })),
        );
        cs.audit.extend(self.provider_event_audits(&grant, events));
        let summary = GrantSummary::of(&g);
        if revoked_now {
            cs.jobs.push(self.notify_job(Notification::AccessRevoked {
                grant: summary,
                revoked_by: actor,
            }));
        } else if grant.granted_at.is_some() {
            cs.jobs
                .push(self.notify_job(Notification::AccessExpired { grant: summary }));
        }
        // (A grant that expired before it was ever active has nothing to call "expired": its
        // provisioning fails and says "ended before it could be provisioned".)
        self.commit(cs).await?;
        Ok(if revoked_now {
            Ended::Revoked
        } else {
            Ended::Expired
        })
    }
}
