//! The `provision` job: record the provider's intent, call the provider, then activate the grant
//! (or, when it ended meanwhile, queue the take-back of what the provider added), hand over a
//! secret, or fail the request.

use std::ops::ControlFlow;

use chrono::{DateTime, Utc};

use super::{Engine, EngineError, JobResult, stored};
use crate::audit::AuditKind;
use crate::grant::{Grant, GrantStatus};
use crate::ids::{GrantId, RequestId};
use crate::jobs::{JobKind, NewJob};
use crate::notification::{DeliveredSecret, GrantSummary, Notification, RequestSummary};
use crate::ports::{
    ChangeSet, GrantRequest, GrantWrite, Provider, ProviderError, ProviderEvent, RequestWrite,
    StoreError,
};
use crate::request::{AccessRequest, Actor, RequestEvent, RequestStatus};

/// What [`Engine::activate`] did.
#[derive(Debug)]
enum Activation {
    /// The grant is active; the request as stored.
    Activated { request: Box<AccessRequest> },
    /// The grant had ended: what the provider added is queued for take-back.
    TakenBack,
    /// Nothing to do (the request was settled by an earlier run).
    Skipped,
}

/// What the provider returned for a grant, as [`Engine::activate`] records it. The secret, if
/// any, is not part of it: it is handed to the person once and never stored.
#[derive(Debug, Clone)]
struct Provisioned {
    /// What the provider needs to revoke exactly this grant later.
    handle: serde_json::Value,
    /// The expiry the provider pinned (a re-issued key keeps the old end); `None`: the grant's.
    pinned_expiry: Option<DateTime<Utc>>,
    /// How to use the access, shown to the person.
    instructions: String,
    /// Provider-side facts for the audit trail.
    events: Vec<ProviderEvent>,
}

impl Engine {
    /// The `provision` job: records the provider's intent (first run), asks the provider to
    /// grant, activates the grant and hands a secret over. A grant that ended meanwhile fails
    /// its request instead; provider refusals fail it with the provider's text.
    pub(super) async fn provision(&self, request_id: RequestId) -> Result<JobResult, EngineError> {
        let (request, grant) = match self.provisionable(request_id).await? {
            ControlFlow::Continue(found) => found,
            ControlFlow::Break(result) => return Ok(result),
        };
        let grant_id = grant.id;
        let resource = self.resource(request.resource.as_str())?.clone();
        let provider = self
            .providers
            .get(resource.provider.as_str())
            .ok_or_else(|| EngineError::NoProvider(resource.provider.to_string()))?;
        let mut req = GrantRequest {
            grant_id,
            request_id,
            subject: request.subject.clone(),
            resource: resource.clone(),
            expires_at: grant.expires_at,
            justification: request.justification.as_str().to_string(),
            existing: (!grant.provider_handle.is_null()).then(|| grant.provider_handle.clone()),
            intent: (!grant.provider_intent.is_null()).then(|| grant.provider_intent.clone()),
        };
        if req.intent.is_none() && req.existing.is_none() {
            if let ControlFlow::Break(result) = self
                .record_intent(provider.as_ref(), &mut req, &grant)
                .await?
            {
                return Ok(result);
            }
        }
        let outcome = match provider.grant(&req).await {
            Ok(o) => o,
            Err(e) => return self.provisioning_refused(request_id, e).await,
        };
        let provisioned = Provisioned {
            handle: outcome.handle.clone(),
            pinned_expiry: outcome.expires_at,
            instructions: outcome.instructions.clone(),
            events: outcome.events.clone(),
        };
        let activated = self
            .with_retries(|| self.activate(request_id, grant_id, &provisioned))
            .await?;
        // The secret goes to the person only now: after the re-check that found the grant still
        // live, committed in the same step that activated it. It exists only in this memory and
        // is never stored, so if this process dies between that commit and the delivery the key
        // is lost: the person was told access is ready and asks again for a new key (GCP
        // re-issues one for a live grant); the account it belongs to is removed with the grant.
        if let (Some(secret), Activation::Activated { request }) = (&outcome.secret, &activated) {
            self.hand_over_secret(request, grant_id, secret).await?;
        }
        Ok(JobResult::done())
    }

    /// The approved request to provision and its grant; or the job's outcome when there is
    /// nothing to provision (already done, vanished, or the grant ended before this run).
    async fn provisionable(
        &self,
        request_id: RequestId,
    ) -> Result<ControlFlow<JobResult, (AccessRequest, Grant)>, EngineError> {
        let Some(request) = self.store.request(request_id).await? else {
            return Ok(ControlFlow::Break(JobResult::Fatal(format!(
                "request {request_id} vanished"
            ))));
        };
        if request.status != RequestStatus::Approved {
            // Already provisioned (a re-run after a crash) or ended.
            return Ok(ControlFlow::Break(JobResult::done()));
        }
        let Some(grant_id) = request.grant_id else {
            return Ok(ControlFlow::Break(JobResult::Fatal(
                "approved request has no grant".into(),
            )));
        };
        let Some(grant) = self.store.grant(grant_id).await? else {
            return Ok(ControlFlow::Break(JobResult::Fatal(format!(
                "grant {grant_id} vanished"
            ))));
        };
        // Past its expiry the grant belongs to its expire job: granting now would race it.
        if !matches!(
            grant.status,
            GrantStatus::Provisioning | GrantStatus::Active
        ) || grant.expires_at <= self.now()
        {
            // Ended before this (re-)run: an earlier attempt may still have landed; failing the
            // request also takes back whatever the recorded intent names.
            self.with_retries(|| {
                self.fail_provisioning(request_id, "Access ended before it could be provisioned.")
            })
            .await?;
            return Ok(ControlFlow::Break(JobResult::done()));
        }
        Ok(ControlFlow::Continue((request, grant)))
    }

    /// First provisioning of a grant: records what the provider is about to add, and commits
    /// it, before the provider changes anything. A retry (after a time-out whose write landed, a
    /// crash, a failed activation) then adopts its own work, and a revoke that finds no handle
    /// knows what to remove. Breaks with the job's outcome when provisioning stops here.
    async fn record_intent(
        &self,
        provider: &dyn Provider,
        req: &mut GrantRequest,
        grant: &Grant,
    ) -> Result<ControlFlow<JobResult>, EngineError> {
        let intent = match provider.intent(req).await {
            Ok(v) => v,
            Err(e) => {
                let result = self.provisioning_refused(req.request_id, e).await?;
                return Ok(ControlFlow::Break(result));
            }
        };
        let mut g = grant.clone();
        g.provider_intent = intent.clone();
        match self
            .commit(ChangeSet {
                grants: vec![GrantWrite::Update(g)],
                ..Default::default()
            })
            .await
        {
            Ok(_) => {}
            // Revoked or extended meanwhile: decide again from the new state.
            Err(StoreError::Conflict(what)) => {
                return Ok(ControlFlow::Break(JobResult::Retry(format!(
                    "{what}; provisioning again"
                ))));
            }
            Err(e) => return Err(e.into()),
        }
        req.intent = Some(intent);
        Ok(ControlFlow::Continue(()))
    }

    /// Delivers the secret of a grant just activated for `request`; when that fails, tells the
    /// person in a message of its own (the activation already queued the one "granted" message).
    async fn hand_over_secret(
        &self,
        request: &AccessRequest,
        grant_id: GrantId,
        secret: &DeliveredSecret,
    ) -> Result<(), EngineError> {
        let Err(e) = self.deliver_secret(&self.summary(request), secret).await else {
            return Ok(());
        };
        tracing::warn!(request = %request.id, error = %e, "could not deliver the secret; the person can request again");
        if let Some(g) = self.store.grant(grant_id).await? {
            self.commit(ChangeSet {
                jobs: vec![self.notify_job(Notification::SecretNotDelivered {
                    request: self.summary(request),
                    grant: GrantSummary::of(&g),
                })],
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }

    /// Hands a secret over, trying again at once after a transient failure (a 5xx or rate limit
    /// on the upload): the secret lives only in this memory, so the queue cannot retry it later.
    /// A retry after an ambiguous failure may deliver the same file twice, to the same person.
    async fn deliver_secret(
        &self,
        request: &RequestSummary,
        secret: &DeliveredSecret,
    ) -> Result<(), crate::ports::NotifyError> {
        const ATTEMPTS: u32 = 3;
        let mut attempt = 1;
        loop {
            match self.notifier.deliver_secret(request, secret).await {
                Err(crate::ports::NotifyError::Transient(e)) if attempt < ATTEMPTS => {
                    tracing::info!(request = %request.id, attempt, error = %e, "secret delivery failed; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(attempt)))
                        .await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// A provider error while provisioning: a transient one is retried; any other fails the
    /// request, with the provider's text (which also queues the take-back of a recorded intent).
    async fn provisioning_refused(
        &self,
        request_id: RequestId,
        e: ProviderError,
    ) -> Result<JobResult, EngineError> {
        if let ProviderError::Transient { message: e, .. } = e {
            return Ok(JobResult::Retry(e));
        }
        let message = e.to_string();
        self.with_retries(|| self.fail_provisioning(request_id, &message))
            .await?;
        Ok(JobResult::done())
    }

    /// Records a successful provisioning: grant active, request active, audit, notification. When
    /// the grant ended while the provider worked, records what the provider added and queues its
    /// take-back instead.
    async fn activate(
        &self,
        request_id: RequestId,
        grant_id: GrantId,
        provisioned: &Provisioned,
    ) -> Result<Activation, EngineError> {
        let request = self
            .store
            .request(request_id)
            .await?
            .ok_or(EngineError::RequestNotFound(request_id))?;
        let grant = self
            .store
            .grant(grant_id)
            .await?
            .ok_or(EngineError::GrantNotFound(grant_id))?;
        if !matches!(
            grant.status,
            GrantStatus::Provisioning | GrantStatus::Active
        ) || grant.expires_at <= self.now()
        {
            self.queue_take_back(&request, &grant, provisioned).await?;
            return Ok(Activation::TakenBack);
        }
        if request.status != RequestStatus::Approved {
            return Ok(Activation::Skipped);
        }
        let active = self.record_active(&request, &grant, provisioned).await?;
        Ok(Activation::Activated {
            request: Box::new(stored(active)),
        })
    }

    /// The grant was revoked or expired (or is being revoked, or is past its expiry, which its
    /// expire job may be revoking right now) while the provider worked: records what it added
    /// and takes it back, whatever the grant's status. A revoke that ran meanwhile had no handle
    /// (or ran before this write landed); the take-back job uses this one.
    async fn queue_take_back(
        &self,
        request: &AccessRequest,
        grant: &Grant,
        provisioned: &Provisioned,
    ) -> Result<(), EngineError> {
        let now = self.now();
        let handle = &provisioned.handle;
        let mut cs = ChangeSet::default();
        if request.status == RequestStatus::Approved {
            let mut failed = request.transition(RequestEvent::ProvisioningFailed, now)?;
            let reason = "Access ended while it was being provisioned.";
            failed.failure = Some(reason.into());
            // A revoke says so itself; an expiry that outran provisioning says nothing (there
            // was no access to call expired), so this is the person's answer.
            if !matches!(grant.status, GrantStatus::Revoking | GrantStatus::Revoked) {
                cs.jobs.push(self.notify_job(Notification::AccessFailed {
                    request: self.summary(&failed),
                    reason: reason.into(),
                }));
            }
            cs.requests.push(RequestWrite::Update(failed));
            cs.audit.push(
                self.audit(AuditKind::GrantFailed, &Actor::System, request)
                    .details(serde_json::json!({"reason": "ended during provisioning", "provider_handle": handle})),
            );
        } else {
            cs.audit.push(
                self.grant_audit(AuditKind::ProviderEvent, &Actor::System, grant)
                    .details(serde_json::json!({"event": "takeback_queued", "details": {"provider_handle": handle}})),
            );
        }
        cs.audit
            .extend(self.provider_event_audits(grant, &provisioned.events));
        let mut g = grant.clone();
        g.provider_handle = handle.clone();
        g.takeback_pending = true;
        cs.grants.push(GrantWrite::Update(g));
        cs.jobs
            .push(NewJob::at(JobKind::Revoke { grant_id: grant.id }, now));
        self.commit(cs).await?;
        Ok(())
    }

    /// Writes the grant and its request active, with the `access_granted` (or
    /// `access_extended`) event and the person's message; returns the request as written.
    async fn record_active(
        &self,
        request: &AccessRequest,
        grant: &Grant,
        provisioned: &Provisioned,
    ) -> Result<AccessRequest, EngineError> {
        let now = self.now();
        let mut cs = ChangeSet::default();
        // An extension lengthens access; a provider that pins the expiry (a re-issued key with the
        // old end) grants again without extending. (A re-request of a non-extendable resource
        // keeps the row's expiry, so the pinned end equals it: still a re-issue, not an extension.)
        let extended = grant.status == GrantStatus::Active && provisioned.pinned_expiry.is_none();
        let mut g = grant.clone();
        g.status = GrantStatus::Active;
        g.provider_handle = provisioned.handle.clone();
        g.granted_at = g.granted_at.or(Some(now));
        if let Some(pinned) = provisioned.pinned_expiry {
            if pinned != g.expires_at {
                g.expires_at = pinned;
                cs.jobs
                    .push(NewJob::at(JobKind::Expire { grant_id: grant.id }, pinned));
            }
        }
        let active = request.transition(RequestEvent::Provisioned, now)?;
        cs.requests.push(RequestWrite::Update(active.clone()));
        cs.grants.push(GrantWrite::Update(g.clone()));
        let kind = if extended {
            AuditKind::AccessExtended
        } else {
            AuditKind::AccessGranted
        };
        cs.audit.push(self.audit(kind, &Actor::System, &active).details(serde_json::json!({
            "expires_at": g.expires_at.to_rfc3339(),
            "provider": self.resource(request.resource.as_str()).map(|r| r.provider.to_string()).unwrap_or_default(),
            "provider_handle": provisioned.handle,
            "justification": request.justification.as_str(),
            "email": request.subject.email.as_ref().map(|e| e.as_str()),
        })));
        for e in &provisioned.events {
            cs.audit.push(
                self.audit(AuditKind::ProviderEvent, &Actor::System, &active)
                    .details(serde_json::json!({"event": e.name, "details": e.details})),
            );
        }
        cs.jobs.push(self.notify_job(Notification::AccessGranted {
            request: self.summary(&active),
            grant: GrantSummary::of(&g),
            instructions: provisioned.instructions.clone(),
            extended,
            secret_delivery_failed: false,
        }));
        self.commit(cs).await?;
        Ok(active)
    }

    pub(super) async fn fail_provisioning(
        &self,
        request_id: RequestId,
        reason: &str,
    ) -> Result<(), EngineError> {
        let now = self.now();
        let Some(request) = self.store.request(request_id).await? else {
            return Ok(());
        };
        if request.status != RequestStatus::Approved {
            return Ok(());
        }
        let mut failed = request.transition(RequestEvent::ProvisioningFailed, now)?;
        failed.failure = Some(reason.to_string());
        let mut cs = ChangeSet::default();
        cs.requests.push(RequestWrite::Update(failed.clone()));
        // A revoke says so itself (one answer per grant, finding 5): a provisioning that runs
        // again after the person revoked the grant adds no "could not be provisioned".
        let mut revoked = false;
        if let Some(gid) = request.grant_id {
            if let Some(g) = self.store.grant(gid).await? {
                revoked = g.request_id == request_id
                    && matches!(g.status, GrantStatus::Revoking | GrantStatus::Revoked);
                // A brand-new grant that never became active ends here; an active grant that was
                // being extended keeps its access until its own expiry.
                if g.request_id == request_id
                    && (g.status == GrantStatus::Provisioning || !g.status.is_live())
                {
                    let mut g2 = g.clone();
                    if g.status == GrantStatus::Provisioning {
                        g2.status = GrantStatus::Failed;
                        g2.ended_at = Some(now);
                    }
                    // An earlier attempt may have landed without answering (a time-out after the
                    // write): take back what the intent names.
                    if !g.provider_intent.is_null() || !g.provider_handle.is_null() {
                        g2.takeback_pending = true;
                        cs.jobs
                            .push(NewJob::at(JobKind::Revoke { grant_id: gid }, now));
                    }
                    if g2 != g {
                        cs.grants.push(GrantWrite::Update(g2));
                    }
                }
            }
        }
        cs.audit.push(
            self.audit(AuditKind::GrantFailed, &Actor::System, &request)
                .details(serde_json::json!({"reason": reason})),
        );
        if !revoked {
            cs.jobs.push(self.notify_job(Notification::AccessFailed {
                request: self.summary(&failed),
                reason: reason.to_string(),
            }));
        }
        self.commit(cs).await?;
        Ok(())
    }
}
