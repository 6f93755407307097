//! Ending grants: revocation asked for by a person ([`Engine::revoke_grant`]), and the `expire`
//! and `revoke` jobs that call the provider, record the end, and take back provider work that
//! landed after its grant had ended.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::{CONFLICT_RETRIES, Engine, EngineError, JobResult, RUN_HERE};
use crate::audit::AuditKind;
use crate::grant::{Grant, GrantStatus};
use crate::ids::GrantId;
use crate::jobs::{Job, JobKind, NewJob};
use crate::notification::{GrantSummary, Notification};
use crate::ports::{
    ChangeSet, GrantWrite, ProviderError, ProviderEvent, RequestWrite, RevokeRequest, StoreError,
};
use crate::request::{AccessRequest, Actor, RequestEvent, RequestStatus};
use crate::subject::SubjectKey;

/// Ends recorded in one commit at most (the change set's rows stay well under the databases'
/// bind-parameter limits, and one commit stays short).
const END_BATCH: usize = 200;

/// A provider call of a batch ([`Engine::end_grants`]): the job's index, the grant as it was
/// called for, and the outcome (a panic's message when the call panicked).
type Called = (
    usize,
    Grant,
    Result<Result<Result<crate::ports::RevokeOutcome, ProviderError>, EngineError>, String>,
);

/// How late an expiry was recorded, in seconds (never negative).
fn lag_secs(now: DateTime<Utc>, grant: &Grant) -> f64 {
    (now - grant.expires_at).num_milliseconds().max(0) as f64 / 1000.0
}

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
        let lag = (ended == Ended::Expired).then(|| lag_secs(self.now(), &grant));
        Ok(JobResult::Done {
            revocation_lag: lag,
        })
    }

    /// Ends the grants of a batch of claimed `expire` and `revoke` jobs (the scheduler's
    /// revocation lane) with a few commits for the whole batch instead of two per grant: the
    /// grants are read in one statement, the rows an expiry must claim before its provider call
    /// are claimed in one commit, the provider calls run concurrently (at most
    /// `job_concurrency` at once), and the ends are recorded as the calls finish, every end
    /// ready at that moment in one commit (so a slow provider call holds back no other grant's
    /// end). Returns each job's outcome, in the order of `jobs`, and whether its run panicked.
    ///
    /// Each grant goes through the same steps and checks as [`Self::end_grant`]; anything off
    /// the common path (a grant that is ended with work to take back, a second job for one grant,
    /// a compare-and-set lost to a concurrent writer) runs through [`Self::end_grant`] itself
    /// after the batch. A crash at any point leaves the jobs claimed: their leases lapse and the
    /// next claim runs them again from whatever was committed (a claimed row is claimed again,
    /// an ended grant is done).
    pub(super) async fn end_grants(&self, jobs: &[Job]) -> Vec<(JobResult, bool)> {
        let mut out: Vec<Option<(JobResult, bool)>> = jobs.iter().map(|_| None).collect();
        let target = |job: &Job| match job.kind {
            JobKind::Expire { grant_id } => Some((grant_id, true)),
            JobKind::Revoke { grant_id } => Some((grant_id, false)),
            _ => None,
        };
        let ids: Vec<GrantId> = jobs.iter().filter_map(|j| target(j).map(|t| t.0)).collect();
        let stored: HashMap<GrantId, Grant> = match self.store.grants_by_id(&ids).await {
            Ok(grants) => grants.into_iter().map(|g| (g.id, g)).collect(),
            Err(e) => {
                let e = e.to_string();
                return jobs
                    .iter()
                    .map(|_| (JobResult::Retry(e.clone()), false))
                    .collect();
            }
        };
        let now = self.now();
        // Jobs for `end_grant` one by one, after the batch.
        let mut single: Vec<usize> = Vec::new();
        // (job index, grant) whose provider call can be made now.
        let mut calls: Vec<(usize, Grant)> = Vec::new();
        // (job index, grant) whose row an expiry claims first.
        let mut to_claim: Vec<(usize, Grant)> = Vec::new();
        let mut seen: HashSet<GrantId> = HashSet::new();
        for (i, job) in jobs.iter().enumerate() {
            let Some((grant_id, expire)) = target(job) else {
                single.push(i);
                continue;
            };
            if !seen.insert(grant_id) {
                // Two jobs for one grant (an expiry and a revocation): the second runs after
                // the first is recorded, and finds the grant ended.
                single.push(i);
                continue;
            }
            let Some(grant) = stored.get(&grant_id).cloned() else {
                out[i] = Some((
                    JobResult::Fatal(format!("grant {grant_id} vanished")),
                    false,
                ));
                continue;
            };
            if !grant.status.is_live() {
                if grant.takeback_pending {
                    single.push(i);
                } else {
                    out[i] = Some((JobResult::done(), false));
                }
            } else if expire && grant.status != GrantStatus::Revoking && grant.expires_at > now {
                // Extended since this job was written; a later expire job exists.
                out[i] = Some((JobResult::done(), false));
            } else if grant.status == GrantStatus::Revoking {
                calls.push((i, grant));
            } else {
                to_claim.push((i, grant));
            }
        }
        // The claim of the rows (see `end_grant`), for the whole batch in one commit. Lost to a
        // concurrent writer (one row changed since it was read): each goes one by one.
        if !to_claim.is_empty() {
            let cs = ChangeSet {
                grants: to_claim
                    .iter()
                    .map(|(_, g)| GrantWrite::Update(g.clone()))
                    .collect(),
                ..Default::default()
            };
            match self.commit(cs).await {
                Ok(_) => calls.extend(to_claim.into_iter().map(|(i, g)| {
                    (
                        i,
                        Grant {
                            version: g.version + 1,
                            ..g
                        },
                    )
                })),
                Err(StoreError::Conflict(what)) => {
                    tracing::debug!(%what, "batch claim of grant rows lost a compare-and-set; one by one");
                    single.extend(to_claim.into_iter().map(|(i, _)| i));
                }
                Err(e) => {
                    let e = e.to_string();
                    for (i, _) in to_claim {
                        out[i] = Some((JobResult::Retry(e.clone()), false));
                    }
                }
            }
        }

        // The provider calls, and beside them the recording of their ends as they finish.
        let at_once = self.settings.job_concurrency.max(1);
        let (tx, mut rx) = futures::channel::mpsc::unbounded::<Called>();
        let call_all = async move {
            let mut results = futures::stream::iter(calls)
                .map(|(i, grant)| async move {
                    use futures::FutureExt;
                    let outcome = std::panic::AssertUnwindSafe(self.revoke_at_provider(&grant))
                        .catch_unwind()
                        .await
                        .map_err(|p| super::panic_message(p.as_ref()));
                    (i, grant, outcome)
                })
                .buffer_unordered(at_once);
            while let Some(called) = results.next().await {
                // The receiver lives as long as this future (they are joined below).
                let _ = tx.unbounded_send(called);
            }
        };
        let record_all = async {
            let mut recorded = Vec::new();
            while let Some(first) = rx.next().await {
                let mut ready = vec![first];
                while ready.len() < END_BATCH {
                    match rx.try_recv() {
                        Ok(more) => ready.push(more),
                        Err(_) => break,
                    }
                }
                recorded.extend(self.record_ends(ready).await);
            }
            recorded
        };
        let ((), recorded) = futures::join!(call_all, record_all);
        for (i, result) in recorded {
            out[i] = Some(result);
        }
        for i in single {
            out[i] = Some(self.run_job_caught(&jobs[i]).await);
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| (JobResult::Retry("not run".into()), false)))
            .collect()
    }

    /// Records the ends of grants whose provider calls finished, in one commit (a lost
    /// compare-and-set: one by one, as [`Self::end_grant`] does). Returns each job's outcome.
    async fn record_ends(&self, called: Vec<Called>) -> Vec<(usize, (JobResult, bool))> {
        let mut out = Vec::with_capacity(called.len());
        let mut removed: Vec<(usize, Grant, crate::ports::RevokeOutcome)> = Vec::new();
        for (i, grant, outcome) in called {
            match outcome {
                Ok(Ok(Ok(o))) => removed.push((i, grant, o)),
                Ok(Ok(Err(e))) => out.push((i, (JobResult::Retry(e.to_string()), false))),
                Ok(Err(e)) => out.push((i, (JobResult::Retry(e.to_string()), false))),
                Err(panic) => {
                    tracing::error!(grant = %grant.id, panic = %panic, "revocation panicked; failing this attempt");
                    out.push((i, (JobResult::Retry(format!("panicked: {panic}")), true)));
                }
            }
        }
        if removed.is_empty() {
            return out;
        }
        let now = self.now();
        let planned = async {
            let ids: Vec<GrantId> = removed.iter().map(|(_, g, _)| g.id).collect();
            let mut current: HashMap<GrantId, Grant> = self
                .store
                .grants_by_id(&ids)
                .await?
                .into_iter()
                .map(|g| (g.id, g))
                .collect();
            let mut cs = ChangeSet::default();
            let mut ended = Vec::with_capacity(removed.len());
            for (_, revoked, o) in &removed {
                let grant = current
                    .remove(&revoked.id)
                    .ok_or(EngineError::GrantNotFound(revoked.id))?;
                let requests = if grant.status.is_live() {
                    self.store.requests_for_grant(grant.id).await?
                } else {
                    Vec::new()
                };
                let (part, e) =
                    self.end_changes(revoked, grant, &requests, &o.events, o.note.as_deref(), now)?;
                cs.requests.extend(part.requests);
                cs.grants.extend(part.grants);
                cs.audit.extend(part.audit);
                cs.jobs.extend(part.jobs);
                ended.push(e);
            }
            if !cs.is_empty() {
                self.commit(cs).await?;
            }
            Ok::<_, EngineError>(ended)
        };
        match planned.await {
            Ok(ended) => {
                for ((i, grant, _), e) in removed.into_iter().zip(ended) {
                    let lag = (e == Ended::Expired).then(|| lag_secs(now, &grant));
                    out.push((
                        i,
                        (
                            JobResult::Done {
                                revocation_lag: lag,
                            },
                            false,
                        ),
                    ));
                }
            }
            Err(EngineError::Store(StoreError::Conflict(what))) => {
                tracing::debug!(%what, "recording a batch of ends lost a compare-and-set; one by one");
                for (i, grant, o) in removed {
                    let result = match self
                        .with_retries(|| self.record_end(&grant, &o.events, o.note.as_deref()))
                        .await
                    {
                        Ok(e) => JobResult::Done {
                            revocation_lag: (e == Ended::Expired)
                                .then(|| lag_secs(self.now(), &grant)),
                        },
                        Err(e) => JobResult::Retry(e.to_string()),
                    };
                    out.push((i, (result, false)));
                }
            }
            Err(e) => {
                let e = e.to_string();
                for (i, _, _) in removed {
                    out.push((i, (JobResult::Retry(e.clone()), false)));
                }
            }
        }
        out
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
    /// as it was when the revoke call was made; the row is re-read and re-checked (see
    /// [`Self::end_changes`]).
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
        let requests = self.store.requests_for_grant(grant_id).await?;
        let (cs, ended) = self.end_changes(revoked, grant, &requests, events, note, now)?;
        if ended != Ended::Already {
            self.commit(cs).await?;
        }
        Ok(ended)
    }

    /// What recording the end of `grant` (as stored now) writes, its provider access having been
    /// removed by a call made on `revoked` (the row as it was then): an extension that landed
    /// meanwhile is not marked expired, and a handle recorded meanwhile (by a provisioning that
    /// finished during the call) stays marked for take-back. `Ended::Already` writes nothing.
    fn end_changes(
        &self,
        revoked: &Grant,
        grant: Grant,
        requests: &[AccessRequest],
        events: &[ProviderEvent],
        note: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(ChangeSet, Ended), EngineError> {
        let grant_id = grant.id;
        let mut cs = ChangeSet::default();
        if !grant.status.is_live() {
            return Ok((cs, Ended::Already));
        }
        let revoked_now = grant.status == GrantStatus::Revoking;
        if !revoked_now && grant.expires_at > now {
            // Extended after the claim (cannot happen through `plan_approval`, which refuses to
            // extend a grant past its expiry). Leave it live and say so loudly: its access was
            // removed, and the drift check will report the missing holder.
            tracing::error!(grant = %grant_id, expires_at = %grant.expires_at, "grant extended while its expiry was being revoked; left live");
            return Ok((cs, Ended::Already));
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
        if newer_work {
            cs.jobs.push(NewJob::at(JobKind::Revoke { grant_id }, now));
        }
        cs.grants.push(GrantWrite::Update(g.clone()));
        let event = if revoked_now {
            RequestEvent::Revoke
        } else {
            RequestEvent::Expire
        };
        for r in requests {
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
        Ok((
            cs,
            if revoked_now {
                Ended::Revoked
            } else {
                Ended::Expired
            },
        ))
    }
}
