//! The lifecycle engine: every operation on requests and grants, driven through the ports.
//!
//! Each operation reads the current state, decides with the pure rules of [`crate::request`] and
//! [`crate::policy`], and writes one [`ChangeSet`]: the new state, its audit events and the jobs it
//! causes, in one transaction. Anything slow or fallible outside the database (providers, Slack,
//! BigQuery) happens in jobs, which [`Engine::run_due`] claims and runs with retries.
//!
//! Two rules keep access safe:
//! - **No grant without its revocation.** The grant row and its `expire` job are written in the
//!   same transaction, before the provider is even called.
//! - **An earlier expiry never removes later access.** An `expire` job revokes only if the grant's
//!   current `expires_at` has passed; an extension simply enqueues a later job and leaves the
//!   earlier one to find nothing to do.
//!
//! Concurrency is settled by compare-and-set in the store: two approvers clicking at once both try
//! to move the same request version; one wins, the other re-reads and is told it was decided.
//!
//! # Layout
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | [`Engine`], [`EngineBuilder`], [`EngineSettings`], the commit path and the helpers every operation uses |
//! | `error.rs` | [`EngineError`]: why an operation was refused, its text and stable code |
//! | `catalog.rs` | [`ResourceCatalog`]: the configured (and retired) resources |
//! | `submit.rs` | [`Engine::submit`]: filing a request |
//! | `queries.rs` | read methods for adapters ([`Engine::request`], [`Engine::requests_page`], …) so they never reach into the store |
//! | `decide.rs` | approve, deny, cancel, time out, and what an approval does to grants |
//! | `provision.rs` | the `provision` job: calling the provider, activating or failing the grant |
//! | `revoke.rs` | revoking on request, and the `expire`/`revoke` jobs that end grants |
//! | `worker.rs` | running due jobs: lanes, leases, settling outcomes, notifications |
//! | `inbox.rs` | stored chat deliveries, run by the process that received them |
//! | `export.rs` | shipping audit events to the audit sink in batches |
//! | `delegation.rs` | delegation, escalation, and who may decide a request |
//! | `emergency.rs` | break-glass grants and their review |
//! | `admin.rs` | the Slack admin commands |
//! | `webhook_delivery.rs` | event webhooks |

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditKind, AuditRecord};
use crate::grant::Grant;
use crate::ids::RequestId;
use crate::jobs::{Job, JobKind, NewJob};
use crate::notification::{Notification, RequestSummary};
use crate::policy::{self, EligibilityError};
use crate::ports::{
    AuditSink, ChangeSet, Clock, Committed, Directory, InboxHandler, JobWaker, Notifier, Provider,
    RequestFilter, Store, StoreError,
};
use crate::request::{AccessRequest, Actor, RequestStatus};
use crate::resource::Resource;
use crate::subject::{Subject, SubjectKey};

mod admin;
mod catalog;
mod decide;
mod delegation;
mod emergency;
mod error;
mod export;
mod inbox;
mod provision;
mod queries;
mod revoke;
mod submit;
#[cfg(test)]
mod tests;
mod webhook_delivery;
mod worker;

pub use admin::{ADMIN_LIST_READ, AdminError};
pub use catalog::ResourceCatalog;
pub use decide::reminder_time;
pub(crate) use emergency::emergency_duration;
pub use error::EngineError;
pub use queries::ChainWalk;
pub use worker::{JobLane, MIN_JOB_RETENTION, PURGE_BATCH, RunSummary, panic_message};

use inbox::{INBOX_JOB, RUN_HERE};
use worker::JobResult;

/// How many times an operation re-reads and retries after losing a compare-and-set.
const CONFLICT_RETRIES: usize = 8;

pub use crate::submission::Submission;

/// A person's live access and open requests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubjectStatus {
    /// Live grants (provisioning, active, revoking).
    pub grants: Vec<Grant>,
    /// Requests waiting for a decision.
    pub pending: Vec<AccessRequest>,
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How long a claimed job is reserved for its worker before another may take it over.
    pub job_lease: chrono::Duration,
    /// Jobs run at once by one `run_due` call, and by each lane of the continuous scheduler.
    pub job_concurrency: usize,
    /// Chat commands and buttons whose messages (the follow-ups of [`Engine::run_claimed`]) are
    /// delivered at once. These spend their time waiting on Slack, so they get more slots than
    /// jobs: at 8, with every Slack call taking 50 ms, 200 requests a second queued for seconds
    /// (docs/performance.md, "Fourth session").
    pub delivery_concurrency: usize,
    /// Chat deliveries (commands, clicks, form submissions) run at once, each with its
    /// notifications, by the process that stored them ([`Engine::run_claimed`]); the rest wait
    /// their turn, stored already. They mostly wait on Slack (`users.info`, the answer, the
    /// notifications), so the bound is there for bursts, not for normal load: at 32, with every
    /// Slack call taking 50 ms, it capped a process below 200 commands a second
    /// (docs/performance.md, "Ninth session").
    pub inbox_concurrency: usize,
    /// Global fallback channel for approval messages.
    pub approval_channel: Option<String>,
    /// Where break-glass notices go besides the approvers' channel (`[server] security_channel`).
    pub security_channel: Option<String>,
    /// Who may use the Slack admin commands (`[server] admins`); empty: nobody.
    pub admins: crate::resource::ApproverSet,
    /// Per-person limits on filing requests (`[server.rate_limits]`); off by default here.
    pub request_limits: crate::limits::RequestLimits,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            job_lease: chrono::Duration::seconds(120),
            job_concurrency: 8,
            delivery_concurrency: 32,
            inbox_concurrency: 128,
            approval_channel: None,
            security_channel: None,
            admins: crate::resource::ApproverSet::default(),
            // Off for an engine embedded as a library (and the unit tests); the server's
            // configuration applies the issue-17 defaults (10 an hour, 3 pending) unless told
            // otherwise (`gatehouse_runtime::config::RateLimitsSection`).
            request_limits: crate::limits::RequestLimits::OFF,
        }
    }
}

/// The lifecycle engine. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    catalog: ResourceCatalog,
    providers: HashMap<String, Arc<dyn Provider>>,
    directory: Arc<dyn Directory>,
    notifier: Arc<dyn Notifier>,
    audit_sink: Option<Arc<dyn AuditSink>>,
    waker: Arc<dyn JobWaker>,
    settings: EngineSettings,
    /// Set after construction: the chat adapter that processes inbox jobs needs the engine
    /// itself, so it cannot be passed to the builder.
    inbox: std::sync::RwLock<Option<Arc<dyn InboxHandler>>>,
    /// Bounds the notifications run in-process after the jobs that caused them
    /// ([`Engine::run_claimed`]) to `delivery_concurrency` batches at once: a burst of commands
    /// must not starve the answers of the next ones.
    follow_up_slots: tokio::sync::Semaphore,
    /// Bounds the stored chat deliveries run in-process ([`Engine::run_claimed`]) to
    /// `inbox_concurrency` at once. Separate from `follow_up_slots`, which a delivery holding one
    /// of these waits for: one pool for both could fill with deliveries waiting for themselves.
    inbox_slots: tokio::sync::Semaphore,
    /// Ordering keys of notifications this process wrote held back behind an earlier job of
    /// their key (see [`crate::ports::ClaimAtInsert`]): when [`Engine::run_claimed`] finishes a
    /// job of one of them, it wakes the scheduler, which then claims the held-back one.
    held_back: inbox::HeldBackKeys,
    /// Event webhooks: the audit trail pushed to SIEMs and ticketing bridges.
    webhooks: Option<crate::webhooks::Webhooks>,
}

/// Builds an [`Engine`]; every port but the store and clock has a harmless default.
#[derive(Debug)]
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    resources: Vec<Resource>,
    retired: Vec<Resource>,
    providers: HashMap<String, Arc<dyn Provider>>,
    directory: Arc<dyn Directory>,
    notifier: Arc<dyn Notifier>,
    audit_sink: Option<Arc<dyn AuditSink>>,
    waker: Arc<dyn JobWaker>,
    settings: EngineSettings,
    webhooks: Option<crate::webhooks::Webhooks>,
}

impl EngineBuilder {
    /// Adds resources people may request.
    pub fn resources(mut self, resources: impl IntoIterator<Item = Resource>) -> Self {
        self.resources.extend(resources);
        self
    }

    /// Resources kept for revocation only (`retired = true`): their grants still end through
    /// their provider, but they are neither listed nor requestable.
    pub fn retired_resources(mut self, resources: impl IntoIterator<Item = Resource>) -> Self {
        self.retired.extend(resources);
        self
    }

    /// Registers a provider under its kind (`p.kind()`), the name resources use.
    pub fn provider(mut self, p: Arc<dyn Provider>) -> Self {
        self.providers.insert(p.kind().to_string(), p);
        self
    }

    /// Registers a provider under a name other than its kind (two Cloud Connexa accounts, a
    /// test provider standing in for a real one).
    pub fn provider_named(mut self, name: &str, p: Arc<dyn Provider>) -> Self {
        self.providers.insert(name.to_string(), p);
        self
    }

    /// Where eligibility rules and group memberships are looked up (default: nobody is in any group).
    pub fn directory(mut self, d: Arc<dyn Directory>) -> Self {
        self.directory = d;
        self
    }

    /// Who tells people what happened (default: log only).
    pub fn notifier(mut self, n: Arc<dyn Notifier>) -> Self {
        self.notifier = n;
        self
    }

    /// Where audit events are exported; with one, every audit event gets an export job.
    pub fn audit_sink(mut self, s: Arc<dyn AuditSink>) -> Self {
        self.audit_sink = Some(s);
        self
    }

    /// Who is told when a job is enqueued, so a scheduler can wake up for it (default: nobody).
    pub fn waker(mut self, w: Arc<dyn JobWaker>) -> Self {
        self.waker = w;
        self
    }

    /// Tunables (default: [`EngineSettings::default`]).
    pub fn settings(mut self, s: EngineSettings) -> Self {
        self.settings = s;
        self
    }

    /// Event webhooks (none when empty).
    pub fn webhooks(mut self, w: crate::webhooks::Webhooks) -> Self {
        self.webhooks = (!w.specs.is_empty()).then_some(w);
        self
    }

    /// Fails if a resource names a provider that is not registered.
    pub fn build(self) -> Result<Engine, EngineError> {
        for r in self.resources.iter().chain(&self.retired) {
            if !self.providers.contains_key(r.provider.as_str()) {
                return Err(EngineError::NoProvider(r.provider.to_string()));
            }
        }
        Ok(Engine {
            store: self.store,
            clock: self.clock,
            catalog: ResourceCatalog::new(self.resources).with_retired(self.retired),
            providers: self.providers,
            directory: self.directory,
            notifier: self.notifier,
            audit_sink: self.audit_sink,
            waker: self.waker,
            follow_up_slots: tokio::sync::Semaphore::new(self.settings.delivery_concurrency.max(1)),
            inbox_slots: tokio::sync::Semaphore::new(self.settings.inbox_concurrency.max(1)),
            held_back: Default::default(),
            settings: self.settings,
            inbox: std::sync::RwLock::new(None),
            webhooks: self.webhooks,
        })
    }
}

impl Engine {
    /// Starts building an engine over `store`, reading the time from `clock`.
    pub fn builder(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> EngineBuilder {
        EngineBuilder {
            store,
            clock,
            resources: Vec::new(),
            retired: Vec::new(),
            providers: HashMap::new(),
            directory: Arc::new(crate::ports::NoDirectory),
            notifier: Arc::new(crate::providers::LogNotifier),
            audit_sink: None,
            waker: Arc::new(crate::ports::NoWaker),
            settings: EngineSettings::default(),
            webhooks: None,
        }
    }

    /// The store the engine writes to.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Registers the processor of [`JobKind::Inbox`] jobs. The last registration wins: a chat
    /// adapter built again (e.g. with its installations) replaces the one built before it, so
    /// stored deliveries are processed as that adapter would. Returns false if it replaced one.
    pub fn set_inbox_handler(&self, h: Arc<dyn InboxHandler>) -> bool {
        let mut slot = self.inbox.write().unwrap_or_else(|e| e.into_inner());
        slot.replace(h).is_none()
    }

    fn inbox_handler(&self) -> Option<Arc<dyn InboxHandler>> {
        self.inbox.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The current time, at the microsecond precision stores keep (so what an operation returns
    /// equals what a later read returns).
    pub fn now(&self) -> DateTime<Utc> {
        crate::audit::truncate_to_micros(self.clock.now())
    }

    /// The configured resources.
    pub fn catalog(&self) -> &ResourceCatalog {
        &self.catalog
    }

    /// The configured resources, sorted by name.
    pub fn resources(&self) -> Vec<Resource> {
        self.catalog.all().cloned().collect()
    }

    /// The provider registered under `name`.
    pub fn provider(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.get(name)
    }

    /// Is `subject` eligible for `resource`?
    pub async fn eligibility(
        &self,
        subject: &Subject,
        resource: &Resource,
    ) -> Result<(), EligibilityError> {
        policy::check_eligibility(resource, subject, self.directory.as_ref()).await
    }

    /// Why `resource` cannot be requested now, if the provider says so. A provider that cannot
    /// tell (a transient error) does not block the request: provisioning retries anyway.
    pub async fn unavailable_reason(&self, resource: &Resource) -> Option<String> {
        let provider = self.providers.get(resource.provider.as_str())?;
        match provider.unavailable_reason(resource).await {
            Ok(reason) => reason,
            Err(e) => {
                tracing::warn!(resource = %resource.id, error = %e, "could not check availability; allowing the request");
                None
            }
        }
    }

    /// What `subject` may request now: eligible, and available at the provider.
    pub async fn offered(&self, subject: &Subject) -> Vec<Resource> {
        let mut out = Vec::new();
        for r in self.catalog.all() {
            if self.eligibility(subject, r).await.is_ok()
                && self.unavailable_reason(r).await.is_none()
            {
                out.push(r.clone());
            }
        }
        out
    }

    fn resource(&self, name: &str) -> Result<&Resource, EngineError> {
        self.catalog
            .get(name)
            .ok_or_else(|| self.catalog.unknown(name))
    }

    /// The resource a grant is ended through: active or retired (kept for revocation only).
    fn resource_for_revocation(&self, name: &str) -> Result<Resource, EngineError> {
        self.catalog
            .get_for_revocation(name)
            .cloned()
            .ok_or_else(|| self.catalog.unknown(name))
    }

    fn summary(&self, r: &AccessRequest) -> RequestSummary {
        match self.catalog.get(r.resource.as_str()) {
            Some(res) => RequestSummary::of(r, &res.description).with_resource(res),
            None => RequestSummary::of(r, ""),
        }
    }

    /// Commits a change set, adding an export job for every audit record when an audit sink is
    /// configured (so the export is as durable as the event), then wakes the scheduler.
    async fn commit(&self, mut cs: ChangeSet) -> Result<Committed, StoreError> {
        let now = self.now();
        if self.audit_sink.is_some() {
            for a in &cs.audit {
                cs.jobs
                    .push(NewJob::at(JobKind::ExportAudit { event_id: a.id }, now));
            }
        }
        if let Some(hooks) = &self.webhooks {
            webhook_delivery::enqueue_deliveries(hooks, &mut cs, now);
        }
        let here = RUN_HERE.try_with(Arc::clone).ok();
        let mut claimed: Vec<Job> = Vec::new();
        if let Some(here) = &here {
            for j in cs.jobs.iter().filter(|j| {
                j.run_at <= now && matches!(j.kind, JobKind::Notify { .. } | JobKind::Revoke { .. })
            }) {
                claimed.push(Job {
                    id: j.id,
                    kind: j.kind.clone(),
                    status: crate::jobs::JobStatus::Running,
                    run_at: j.run_at,
                    attempts: 1,
                    last_error: None,
                    created_at: now,
                    locked_until: Some(now + self.settings.job_lease),
                    claim_token: Some(here.token.clone()),
                });
            }
            if !claimed.is_empty() {
                cs.claimed = Some(crate::ports::ClaimAtInsert {
                    token: here.token.clone(),
                    lease: self.settings.job_lease,
                    ids: claimed.iter().map(|j| j.id).collect(),
                });
            }
        }
        // Only jobs left for a scheduler wake it.
        let run_ats: Vec<DateTime<Utc>> = cs
            .jobs
            .iter()
            .filter(|j| !claimed.iter().any(|c| c.id == j.id))
            .map(|j| j.run_at)
            .collect();
        let committed = self.store.commit(cs).await?;
        for at in run_ats {
            self.waker.job_enqueued(at);
        }
        // A job held back behind an earlier one of its key is a scheduler's to run, not ours.
        // It is claimable once the job ahead of it is done, which may have happened while this
        // commit ran (the wake-up covers that); if not, whoever finishes that job in this
        // process wakes the scheduler again (the key is noted before this wake-up).
        let (held, claimed): (Vec<Job>, Vec<Job>) = claimed
            .into_iter()
            .partition(|j| committed.held_back.contains(&j.id));
        for j in held {
            self.held_back.note(j.kind.order_key());
            self.waker.job_enqueued(j.run_at);
        }
        if let Some(here) = here {
            if let Ok(mut f) = here.follow_ups.lock() {
                f.extend(claimed);
            }
        }
        Ok(committed)
    }

    /// Runs `op` until it does not lose a compare-and-set (bounded).
    async fn with_retries<T, F, Fut>(&self, mut op: F) -> Result<T, EngineError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, EngineError>>,
    {
        for _ in 0..CONFLICT_RETRIES {
            match op().await {
                Err(EngineError::Store(StoreError::Conflict(what))) => {
                    tracing::debug!(%what, "compare-and-set lost; re-reading");
                    continue;
                }
                other => return other,
            }
        }
        Err(EngineError::Busy)
    }

    fn audit(&self, kind: AuditKind, actor: &Actor, r: &AccessRequest) -> AuditRecord {
        let mut a = AuditRecord::new(kind, actor.clone(), self.now())
            .subject(&r.subject.team_id, &r.subject.user_id)
            .resource(&r.resource)
            .request(r.id);
        if let Some(g) = r.grant_id {
            a = a.grant(g);
        }
        a
    }

    fn grant_audit(&self, kind: AuditKind, actor: &Actor, g: &Grant) -> AuditRecord {
        AuditRecord::new(kind, actor.clone(), self.now())
            .subject(&g.subject.team_id, &g.subject.user_id)
            .resource(&g.resource)
            .request(g.request_id)
            .grant(g.id)
    }

    /// One `provider_event` audit event of `grant` for each fact its provider reported.
    fn provider_event_audits(
        &self,
        grant: &Grant,
        events: &[crate::ports::ProviderEvent],
    ) -> Vec<AuditRecord> {
        events
            .iter()
            .map(|e| {
                self.grant_audit(AuditKind::ProviderEvent, &Actor::System, grant)
                    .details(serde_json::json!({"event": e.name, "details": e.details}))
            })
            .collect()
    }

    fn notify_job(&self, n: Notification) -> NewJob {
        NewJob::at(
            JobKind::Notify {
                notification: Box::new(n),
            },
            self.now(),
        )
    }

    async fn load_request(&self, id: RequestId) -> Result<AccessRequest, EngineError> {
        self.store
            .request(id)
            .await?
            .ok_or(EngineError::RequestNotFound(id))
    }

    /// The id of the request a running inbox job files (see [`RequestId::for_inbox_job`]);
    /// `None` outside one (the admin API, scripts).
    fn inbox_request_id(&self) -> Option<RequestId> {
        INBOX_JOB.try_with(|j| RequestId::for_inbox_job(*j)).ok()
    }

    /// Live grants and pending requests of one person.
    pub async fn status(&self, subject: &SubjectKey) -> Result<SubjectStatus, EngineError> {
        let grants = self
            .store
            .grants(&crate::ports::GrantFilter {
                live_only: true,
                subject: Some(subject.clone()),
                ..Default::default()
            })
            .await?;
        let pending = self
            .store
            .requests(&RequestFilter {
                status: Some(RequestStatus::Pending),
                subject: Some(subject.clone()),
                ..Default::default()
            })
            .await?;
        Ok(SubjectStatus { grants, pending })
    }

    /// Appends audit records that belong to no state transition (reconciliation repairs, sweeps),
    /// with their export jobs, in one transaction.
    pub async fn record(&self, records: Vec<AuditRecord>) -> Result<(), EngineError> {
        if records.is_empty() {
            return Ok(());
        }
        self.commit(ChangeSet {
            audit: records,
            ..Default::default()
        })
        .await?;
        Ok(())
    }
}

/// A request as the store holds it after a successful compare-and-set of `r`.
fn stored(r: AccessRequest) -> AccessRequest {
    AccessRequest {
        version: r.version + 1,
        ..r
    }
}
