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

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditKind, AuditRecord};
use crate::duration::{AccessDuration, DurationError};
use crate::grant::{Grant, GrantStatus};
use crate::ids::{AuditEventId, GrantId, JobId, RequestId, ResourceId};
use crate::jobs::{InboxItem, Job, JobKind, NewJob, backoff};
use crate::notification::{GrantSummary, MessageRef, Notification, RequestSummary};
use crate::policy::{self, ApproverError, EligibilityError};
use crate::ports::{
    AuditSink, ChangeSet, ClaimScope, Clock, Committed, Directory, ExportItem, GrantRequest,
    GrantWrite, InboxError, InboxHandler, JobWaker, Notifier, NotifyContext, NotifyError, Provider,
    ProviderError, ProviderEvent, RequestFilter, RequestWrite, RevokeRequest, Store, StoreError,
};
use crate::request::{
    AccessRequest, Actor, Decision, DecisionKind, RequestEvent, RequestKind, RequestStatus,
    TransitionError,
};
use crate::resource::{ApprovalPolicy, JustificationError, Resource};
use crate::subject::{Subject, SubjectKey};

/// Slack admin commands (`/access admin …`, issue 17): admin membership and what admins may do.
mod admin;
mod emergency;
pub(crate) use emergency::emergency_duration;
mod queries;
pub use queries::ChainWalk;
mod webhook_delivery;
pub use admin::{ADMIN_LIST_READ, AdminError};
#[path = "engine_delegation.rs"]
mod delegation_ops;

/// How many times an operation re-reads and retries after losing a compare-and-set.
const CONFLICT_RETRIES: usize = 8;

/// Why an operation was refused. `Display` is the text shown to the person.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `valid` lists what may be asked instead: every resource, or (when `requested` names a
    /// resource with roles, or one of its roles) that resource's roles, which the text then
    /// says (docs/roles.md).
    #[error("{}", unknown_resource_text(requested, valid))]
    UnknownResource {
        requested: String,
        valid: Vec<String>,
    },
    #[error("{0}")]
    InvalidDuration(#[from] DurationError),
    #[error("{0}")]
    InvalidJustification(#[from] JustificationError),
    #[error("{0}")]
    NotEligible(#[from] EligibilityError),
    #[error("{0}")]
    NotApprover(#[from] ApproverError),
    #[error("Request {0} does not exist.")]
    RequestNotFound(RequestId),
    #[error("Grant {0} does not exist.")]
    GrantNotFound(GrantId),
    #[error("You do not have any active access to '{resource}'.")]
    NoActiveGrant { resource: String },
    #[error("Access to '{resource}' cannot be extended; request it again when it ends.")]
    NotExtendable { resource: String },
    #[error(
        "You already have access to '{resource}' until {}, and it cannot be extended. Request it again after it ends.",
        expires_at.format("%Y-%m-%d %H:%M UTC")
    )]
    NotExtendableLive {
        resource: String,
        expires_at: DateTime<Utc>,
    },
    #[error(
        "You already have a pending request for '{resource}' ({request}). Cancel it first or wait for a decision."
    )]
    AlreadyPending {
        resource: String,
        request: RequestId,
    },
    #[error("This request has already been {status}.")]
    AlreadyDecided { status: RequestStatus },
    #[error("You have already approved this request.")]
    AlreadyVoted,
    #[error(
        "You have already approved this request, so you cannot deny it now. The requester can cancel it."
    )]
    AlreadyApprovedCannotDeny,
    #[error(
        "This request timed out at {} without a decision; it can no longer be approved or denied. The requester can ask again.",
        until.format("%Y-%m-%d %H:%M UTC")
    )]
    PendingExpired { until: DateTime<Utc> },
    #[error("{0}")]
    IllegalTransition(#[from] TransitionError),
    #[error("Only the requester (or an admin) can do that.")]
    NotYours,
    #[error("Your previous access to '{resource}' is still being revoked; try again in a moment.")]
    RevocationInProgress { resource: String },
    #[error("No provider '{0}' is configured.")]
    NoProvider(String),
    /// The provider says the resource cannot be requested now; the text is the provider's.
    #[error("{0}")]
    Unavailable(String),
    #[error("Gatehouse is busy; please try again.")]
    Busy,
    #[error("Something went wrong on our side (storage). Please try again.")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Delegation(#[from] crate::delegation::DelegationError),
    #[error(
        "Break-glass access is not enabled for '{resource}': nothing was granted. Ask for it the usual way (`request {resource} <duration> <justification>`) so an approver can decide."
    )]
    EmergencyNotAllowed { resource: String },
    #[error(
        "You already have access to '{resource}' until {}: break-glass is for when you have none. Use `extend {resource}` for more time.",
        expires_at.format("%Y-%m-%d %H:%M UTC")
    )]
    EmergencyAlreadyLive {
        resource: String,
        expires_at: DateTime<Utc>,
    },
    #[error("Request {0} was not a break-glass request; there is nothing to review.")]
    NotEmergency(RequestId),
    #[error("This emergency access has already been {} by {by}.", match outcome {
        crate::emergency::ReviewOutcome::Reviewed => "reviewed",
        crate::emergency::ReviewOutcome::Revoked => "revoked",
    })]
    AlreadyReviewed {
        by: String,
        outcome: crate::emergency::ReviewOutcome,
    },
    #[error("You cannot review your own emergency access; another approver must.")]
    SelfReview,
    /// An admin command (`/access admin …`) from someone outside the admin group.
    #[error("{0}")]
    NotAdmin(#[from] AdminError),
    /// The per-person request limit (`[server.rate_limits]`, docs/rate-limits.md).
    #[error(
        "You have filed {limit} access requests in the last {}, the most allowed. You can ask again at {} (in {}).",
        window.human(),
        retry_at.format("%Y-%m-%d %H:%M:%S UTC"),
        crate::grant::format_remaining(*wait)
    )]
    RateLimited {
        limit: u32,
        window: AccessDuration,
        retry_at: DateTime<Utc>,
        wait: chrono::Duration,
    },
    /// The per-person limit on pending requests.
    #[error("{}", too_many_pending_text(*limit, *pending, *first_times_out))]
    TooManyPending {
        limit: u32,
        pending: u64,
        first_times_out: Option<DateTime<Utc>>,
    },
    /// An extension approved after the access it was for had ended.
    #[error(
        "The access to '{resource}' this extension was for has already ended, so nothing was granted; they can ask again with `request`."
    )]
    ExtendedGrantEnded { resource: String },
}

fn too_many_pending_text(limit: u32, pending: u64, first: Option<DateTime<Utc>>) -> String {
    let mut s = format!(
        "You already have {pending} requests waiting for a decision, the most allowed at once ({limit}). \
         You can ask again as soon as one of them is approved, denied or cancelled (`cancel <resource>` withdraws one)"
    );
    if let Some(at) = first {
        s.push_str(&format!(
            "; at the latest when the oldest times out at {}",
            at.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    s.push('.');
    s
}

impl From<crate::limits::LimitRefusal> for EngineError {
    fn from(r: crate::limits::LimitRefusal) -> Self {
        match r {
            crate::limits::LimitRefusal::TooManyRequests {
                limit,
                window,
                retry_at,
                wait,
            } => EngineError::RateLimited {
                limit,
                window,
                retry_at,
                wait,
            },
            crate::limits::LimitRefusal::TooManyPending {
                limit,
                pending,
                first_times_out,
            } => EngineError::TooManyPending {
                limit,
                pending,
                first_times_out,
            },
        }
    }
}

impl EngineError {
    /// Stable machine-readable code (used in API error bodies).
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::UnknownResource { .. } => "unknown_resource",
            EngineError::InvalidDuration(_) => "invalid_duration",
            EngineError::InvalidJustification(_) => "invalid_justification",
            EngineError::NotEligible(_) => "not_eligible",
            EngineError::NotApprover(_) => "not_approver",
            EngineError::RequestNotFound(_) => "request_not_found",
            EngineError::GrantNotFound(_) => "grant_not_found",
            EngineError::NoActiveGrant { .. } => "no_active_grant",
            EngineError::NotExtendable { .. } | EngineError::NotExtendableLive { .. } => {
                "not_extendable"
            }
            EngineError::AlreadyPending { .. } => "already_pending",
            EngineError::AlreadyDecided { .. } => "already_decided",
            EngineError::AlreadyVoted | EngineError::AlreadyApprovedCannotDeny => "already_voted",
            EngineError::PendingExpired { .. } => "already_decided",
            EngineError::IllegalTransition(_) => "illegal_transition",
            EngineError::NotYours => "forbidden",
            EngineError::RevocationInProgress { .. } => "revocation_in_progress",
            EngineError::NoProvider(_) => "no_provider",
            EngineError::Unavailable(_) => "unavailable",
            EngineError::Busy => "busy",
            EngineError::Store(_) => "internal",
            EngineError::EmergencyNotAllowed { .. } => "emergency_not_allowed",
            EngineError::EmergencyAlreadyLive { .. } => "emergency_already_live",
            EngineError::NotEmergency(_) => "not_emergency",
            EngineError::AlreadyReviewed { .. } => "already_reviewed",
            EngineError::SelfReview => "not_approver",
            EngineError::NotAdmin(_) => "not_admin",
            EngineError::RateLimited { .. } => "rate_limited",
            EngineError::TooManyPending { .. } => "too_many_pending",
            EngineError::ExtendedGrantEnded { .. } => "extended_grant_ended",
            EngineError::Delegation(_) => "delegation_refused",
        }
    }
}

pub use crate::submission::Submission;

/// A person's live access and open requests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubjectStatus {
    pub grants: Vec<Grant>,
    pub pending: Vec<AccessRequest>,
}

/// A class of jobs with worker slots of its own in the continuous scheduler
/// ([`Engine::claim_lane`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobLane {
    /// Every kind but audit exports: provisioning, notifications, reminders, time-outs, inbox
    /// items, and expiries and revocations too while there are slots.
    Work,
    /// Expiries and revocations only. Slots of their own, so access is taken back on time even
    /// while every work slot is held by slow provisioning or chat calls (chaos finding 4).
    Revocations,
    /// Audit exports, shipped as one batch per claim.
    Export,
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How long a claimed job is reserved for its worker before another may take it over.
    pub job_lease: chrono::Duration,
    /// Jobs run at once by one `run_due` call, and by each lane of the continuous scheduler.
    pub job_concurrency: usize,
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

/// What one `run_due` did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub claimed: usize,
    /// Jobs finished, by kind.
    pub done: BTreeMap<String, u64>,
    /// Jobs that failed and will be retried, by kind.
    pub retried: BTreeMap<String, u64>,
    /// Jobs given up on (dead-lettered), by kind.
    pub dead: BTreeMap<String, u64>,
    /// For each revocation done: how late it was, in seconds, relative to `expires_at` (only for
    /// expiries; negative never happens).
    pub revocation_lag_secs: Vec<f64>,
    /// Jobs whose run panicked, by kind (each is also counted as retried or dead).
    pub panicked: BTreeMap<String, u64>,
}

impl RunSummary {
    fn merge(&mut self, other: RunSummary) {
        self.claimed += other.claimed;
        for (k, v) in other.done {
            *self.done.entry(k).or_default() += v;
        }
        for (k, v) in other.retried {
            *self.retried.entry(k).or_default() += v;
        }
        for (k, v) in other.dead {
            *self.dead.entry(k).or_default() += v;
        }
        self.revocation_lag_secs.extend(other.revocation_lag_secs);
        for (k, v) in other.panicked {
            *self.panicked.entry(k).or_default() += v;
        }
    }

    pub fn failures(&self) -> u64 {
        self.retried.values().sum::<u64>() + self.dead.values().sum::<u64>()
    }
}

/// How a job run ended.
#[derive(Debug)]
enum JobResult {
    Done {
        revocation_lag: Option<f64>,
    },
    Retry(String),
    /// Give up now (retrying cannot help).
    Fatal(String),
    /// Try again at the given time rather than after the kind's backoff (a receiver's
    /// `Retry-After`).
    RetryAt(String, DateTime<Utc>),
}

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

/// How [`Engine::record_end`] left the grant.
#[derive(Debug, PartialEq)]
enum Ended {
    Expired,
    Revoked,
    /// Ended (or extended) by someone else meanwhile.
    Already,
}

impl JobResult {
    fn done() -> Self {
        JobResult::Done {
            revocation_lag: None,
        }
    }
}

/// The text of [`EngineError::UnknownResource`]: a role list when every valid name is a role of
/// the resource the person named (`gcp-access`, `gcp-access:admin`), else the resource list.
fn unknown_resource_text(requested: &str, valid: &[String]) -> String {
    let base = requested
        .split_once(crate::ids::ROLE_SEPARATOR)
        .map_or(requested, |(b, _)| b);
    let prefix = format!("{base}{}", crate::ids::ROLE_SEPARATOR);
    let roles_of_base =
        !base.is_empty() && !valid.is_empty() && valid.iter().all(|v| v.starts_with(&prefix));
    match (roles_of_base, requested == base) {
        (true, true) => format!(
            "'{base}' has several roles; say which one: {}.",
            valid.join(", ")
        ),
        (true, false) => format!(
            "Unknown role '{requested}'. Roles of '{base}': {}.",
            valid.join(", ")
        ),
        _ => format!(
            "Unknown resource '{requested}'. Valid resources: {}.",
            valid.join(", ")
        ),
    }
}

/// The resources from configuration.
#[derive(Debug, Clone, Default)]
pub struct ResourceCatalog {
    resources: BTreeMap<ResourceId, Resource>,
    /// Resources kept (`retired = true`) only so their remaining grants still end through
    /// their provider: never listed, never requestable.
    retired: BTreeMap<ResourceId, Resource>,
}

impl ResourceCatalog {
    pub fn new(resources: impl IntoIterator<Item = Resource>) -> Self {
        Self {
            resources: resources.into_iter().map(|r| (r.id.clone(), r)).collect(),
            retired: BTreeMap::new(),
        }
    }

    /// Adds resources kept for revocation only.
    pub fn with_retired(mut self, retired: impl IntoIterator<Item = Resource>) -> Self {
        self.retired
            .extend(retired.into_iter().map(|r| (r.id.clone(), r)));
        self
    }

    pub fn get(&self, name: &str) -> Option<&Resource> {
        let id = ResourceId::parse(name).ok()?;
        self.resources.get(&id)
    }

    /// A resource that may still end grants: an offered one or a retired one.
    pub fn get_for_revocation(&self, name: &str) -> Option<&Resource> {
        let id = ResourceId::parse(name).ok()?;
        self.resources.get(&id).or_else(|| self.retired.get(&id))
    }

    pub fn all(&self) -> impl Iterator<Item = &Resource> {
        self.resources.values()
    }

    pub fn names(&self) -> Vec<String> {
        self.resources.keys().map(|k| k.to_string()).collect()
    }

    /// The offered roles of resource `base` (`gcp-access` → `gcp-access:editor`,
    /// `gcp-access:viewer`); empty for a resource without roles.
    pub fn roles_of(&self, base: &str) -> Vec<String> {
        self.resources
            .keys()
            .filter(|k| k.role().is_some() && k.base() == base)
            .map(|k| k.to_string())
            .collect()
    }

    /// The refusal for a name that is not offered: when it names a resource with roles (bare,
    /// or with a role it does not have), the valid choices are that resource's roles.
    pub fn unknown(&self, name: &str) -> EngineError {
        let requested: String = name.trim().chars().take(64 * 2 + 1).collect();
        let base = requested
            .split_once(crate::ids::ROLE_SEPARATOR)
            .map_or(requested.as_str(), |(b, _)| b);
        let roles = self.roles_of(base);
        EngineError::UnknownResource {
            valid: if roles.is_empty() {
                self.names()
            } else {
                roles
            },
            requested,
        }
    }
}

/// How long the process that stored an inbox job has to run it before schedulers may.
const INBOX_HEAD_START: chrono::Duration = chrono::Duration::seconds(3);

/// A job this process is running right after storing it ([`Engine::run_claimed`]): the
/// notifications its commits cause are written already claimed under the same token and run by
/// this process once the job is done, and all of them are marked done together, so one slash
/// command costs one write for its notifications instead of a scheduler round and a write each.
#[derive(Debug)]
struct RunHere {
    token: String,
    follow_ups: std::sync::Mutex<Vec<Job>>,
    /// Jobs of this claim already run inline (a revocation asked for from a chat command), to
    /// be settled with the rest.
    finished: std::sync::Mutex<Vec<(Job, JobResult)>>,
}

tokio::task_local! {
    static RUN_HERE: Arc<RunHere>;
    /// The inbox job whose handler is running (see [`RequestId::for_inbox_job`]).
    static INBOX_JOB: JobId;
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
    /// ([`Engine::run_claimed`]) to `job_concurrency` batches at once, as a scheduler pass would:
    /// a burst of commands must not starve the answers of the next ones.
    follow_up_slots: tokio::sync::Semaphore,
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

    pub fn directory(mut self, d: Arc<dyn Directory>) -> Self {
        self.directory = d;
        self
    }

    pub fn notifier(mut self, n: Arc<dyn Notifier>) -> Self {
        self.notifier = n;
        self
    }

    pub fn audit_sink(mut self, s: Arc<dyn AuditSink>) -> Self {
        self.audit_sink = Some(s);
        self
    }

    pub fn waker(mut self, w: Arc<dyn JobWaker>) -> Self {
        self.waker = w;
        self
    }

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
            if !self.providers.contains_key(&r.provider) {
                return Err(EngineError::NoProvider(r.provider.clone()));
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
            follow_up_slots: tokio::sync::Semaphore::new(self.settings.job_concurrency.max(1)),
            settings: self.settings,
            inbox: std::sync::RwLock::new(None),
            webhooks: self.webhooks,
        })
    }
}

impl Engine {
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

    /// The whole store, for tests and tools that inspect rows the engine has no question for
    /// (message refs, raw job rows) or build a second engine over the same database. Adapters
    /// ask through the read methods instead (`engine/queries.rs`).
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

    /// Stores a received chat payload as a job, once per `item.key` (a replay is recognised
    /// and not stored again), and wakes the scheduler. Returns the job's id, or `None` for a
    /// replay. Call it before acknowledging the delivery: once it returns, a crash cannot lose it.
    pub async fn enqueue_inbox(&self, item: InboxItem) -> Result<Option<JobId>, EngineError> {
        let now = self.now();
        let key = format!("inbox:{}:{}", item.source, item.key);
        // The receiving process runs the job at once ([`Engine::run_job_now`] ignores `run_at`);
        // schedulers take it only after a head start, so a batch of theirs does not grab it first
        // (a command such as `revoke` waits for other jobs to run, which a scheduler busy with the
        // command's own batch would not). After a crash, a scheduler answers it then.
        let due = now + INBOX_HEAD_START;
        let job = NewJob::at(JobKind::Inbox { item }, due);
        let id = job.id;
        if self.store.enqueue_once(&key, job, now).await? {
            self.waker.job_enqueued(due);
            Ok(Some(id))
        } else {
            Ok(None)
        }
    }

    /// Runs one job now if it is still pending (the receiving process runs the inbox job it just
    /// stored, so the answer does not wait for the scheduler's next round). A failure is settled
    /// like any job's: retried with backoff by whichever scheduler claims it next.
    pub async fn run_job_now(&self, id: JobId) -> Result<RunSummary, EngineError> {
        let Some(job) = self
            .store
            .claim_job(id, self.now(), self.settings.job_lease)
            .await?
        else {
            return Ok(RunSummary::default());
        };
        let result = self.run_job(&job).await;
        let mut summary = self.settle(&job, result).await?;
        summary.claimed = 1;
        Ok(summary)
    }

    /// [`Self::enqueue_inbox`], with the job written already claimed by this process, which
    /// must then run it with [`Self::run_claimed`] (one write instead of a write and a claim;
    /// should the process die first, the lease lapses and a scheduler answers it). `None` for a
    /// replay.
    pub async fn enqueue_inbox_claimed(&self, item: InboxItem) -> Result<Option<Job>, EngineError> {
        let now = self.now();
        let key = format!("inbox:{}:{}", item.source, item.key);
        let mut job = NewJob::at(JobKind::Inbox { item }, now + INBOX_HEAD_START);
        job.id = JobId::for_key(&key);
        Ok(self
            .store
            .enqueue_claimed_once(&key, job, now, self.settings.job_lease)
            .await?)
    }

    /// Runs a job this process holds the claim of (from [`Self::enqueue_inbox_claimed`]), then
    /// the notifications its commits caused, and settles them all: the successes together in
    /// one write with the messages they posted. Leases are renewed while it runs.
    pub async fn run_claimed(&self, job: Job) -> Result<RunSummary, EngineError> {
        let token = job.claim_token.clone().unwrap_or_default();
        let here = Arc::new(RunHere {
            token: token.clone(),
            follow_ups: std::sync::Mutex::new(Vec::new()),
            finished: std::sync::Mutex::new(Vec::new()),
        });
        let work = async {
            let (result, _) = RUN_HERE
                .scope(here.clone(), self.run_job_caught(&job))
                .await;
            let follow_ups = here
                .follow_ups
                .lock()
                .map(|mut f| std::mem::take(&mut *f))
                .unwrap_or_default();
            // Closed never: an error would only mean running without the bound.
            let _slot = if follow_ups.is_empty() {
                None
            } else {
                self.follow_up_slots.acquire().await.ok()
            };
            let results: Vec<(Job, (JobResult, Vec<MessageRef>))> =
                futures::future::join_all(follow_ups.into_iter().map(|j| async move {
                    let out = match &j.kind {
                        JobKind::Notify { notification } => self
                            .deliver_collect(notification, &j)
                            .await
                            .unwrap_or_else(|e| (JobResult::Retry(e.to_string()), Vec::new())),
                        _ => (self.run_job_caught(&j).await.0, Vec::new()),
                    };
                    (j, out)
                }))
                .await;
            let mut summary = RunSummary {
                claimed: 1 + results.len(),
                ..Default::default()
            };
            let inline = here
                .finished
                .lock()
                .map(|mut f| std::mem::take(&mut *f))
                .unwrap_or_default();
            summary.claimed += inline.len();
            let (ran, outcomes): (Vec<Job>, Vec<_>) = results
                .into_iter()
                .chain(inline.into_iter().map(|(j, r)| (j, (r, Vec::new()))))
                .unzip();
            let mut done: Vec<(JobId, String)> = Vec::new();
            let mut refs: Vec<MessageRef> = Vec::new();
            let mut rest: Vec<(&Job, JobResult)> = Vec::new();
            for (j, (r, posted)) in
                std::iter::once((&job, (result, Vec::new()))).chain(ran.iter().zip(outcomes))
            {
                match r {
                    JobResult::Done { revocation_lag } => {
                        done.push((j.id, token.clone()));
                        refs.extend(posted);
                        *summary.done.entry(j.kind.name().to_string()).or_default() += 1;
                        summary.revocation_lag_secs.extend(revocation_lag);
                    }
                    other => {
                        // A failed notification posted nothing worth keeping, or it is posted
                        // again on the retry.
                        rest.push((j, other));
                    }
                }
            }
            if !done.is_empty() {
                self.store
                    .complete_jobs_with_refs(&done, &refs, self.now())
                    .await?;
            }
            let failed = !rest.is_empty();
            for (j, r) in rest {
                summary.merge(self.settle(j, r).await?);
            }
            if failed {
                // A retry is for a scheduler, which must learn when it is due (it was not woken
                // for jobs this process ran itself).
                self.waker.job_enqueued(self.now());
            }
            Ok::<_, EngineError>(summary)
        };
        self.with_heartbeat(std::slice::from_ref(&token), work)
            .await
    }

    /// The current time, at the microsecond precision stores keep (so what an operation returns
    /// equals what a later read returns).
    pub fn now(&self) -> DateTime<Utc> {
        crate::audit::truncate_to_micros(self.clock.now())
    }

    pub fn catalog(&self) -> &ResourceCatalog {
        &self.catalog
    }

    /// The configured resources, sorted by name.
    pub fn resources(&self) -> Vec<Resource> {
        self.catalog.all().cloned().collect()
    }

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
        let provider = self.providers.get(&resource.provider)?;
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

    fn notify_job(&self, n: Notification) -> NewJob {
        NewJob::at(
            JobKind::Notify {
                notification: Box::new(n),
            },
            self.now(),
        )
    }

    // --------------------------------------------------------------------------------------------
    // Operations people (and scripts) start

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

    /// Files a request. Auto-approved resources come back `approved` with provisioning queued.
    /// The submission was parsed by [`Engine::validate`]; what needs the store is decided here.
    pub async fn submit(&self, s: Submission) -> Result<AccessRequest, EngineError> {
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
        let (live, pending) = (facts.live, facts.pending);
        let justification = match s.request.kind() {
            RequestKind::New => {
                // A new request on a live grant lengthens it; a resource that cannot be extended
                // refuses that up front (unless asking again hands out something new without
                // extending, as GCP's key mode does).
                if let Some(g) = live.as_ref().filter(|g| {
                    matches!(g.status, GrantStatus::Active | GrantStatus::Provisioning)
                        && g.expires_at > now
                }) {
                    if !resource.extendable && !self.reissues_on_request(&resource) {
                        return Err(EngineError::NotExtendableLive {
                            resource: resource.id.to_string(),
                            expires_at: g.expires_at,
                        });
                    }
                }
                s.request.justification().clone()
            }
            RequestKind::Extend => {
                if !resource.extendable {
                    return Err(EngineError::NotExtendable {
                        resource: resource.id.to_string(),
                    });
                }
                if live
                    .as_ref()
                    .is_none_or(|g| g.status != GrantStatus::Active)
                {
                    return Err(EngineError::NoActiveGrant {
                        resource: resource.id.to_string(),
                    });
                }
                if live.as_ref().is_some_and(|g| g.expires_at <= now) {
                    // Its expiry is being (or about to be) revoked: extending now would race it.
                    return Err(EngineError::RevocationInProgress {
                        resource: resource.id.to_string(),
                    });
                }
                s.request.justification().clone()
            }
        };
        self.eligibility(&s.subject, &resource).await?;
        // A provider rule that would refuse this person at provisioning (GCP `email_domain`)
        // refuses now: no approver is ever asked about a request that cannot be granted.
        if let Some(reason) = self
            .providers
            .get(&resource.provider)
            .and_then(|p| p.refuses_subject(&resource, &s.subject))
        {
            return Err(EngineError::Unavailable(reason));
        }
        if let Some(reason) = self.unavailable_reason(&resource).await {
            return Err(EngineError::Unavailable(reason));
        }
        // Filed by an inbox job: its request id is a function of the job, so a re-run (after a
        // crash between filing and the job's completion, or a transient error) finds what the
        // first run filed. Before, a re-run after the first request had been decided filed a
        // second one (chaos finding 12).
        let replayed = self.inbox_request_id();
        if let Some(p) = pending {
            if Some(p) == replayed {
                return self.load_request(p).await;
            }
            return Err(EngineError::AlreadyPending {
                resource: resource.id.to_string(),
                request: p,
            });
        }
        // Per-person limits, last: a request refused for another reason says that reason.
        // Break-glass (issue 17 item 1) hook: an emergency request is to be decided here,
        // whether it is exempt from these limits (it is not implemented in this change).
        if let Err(refused) = self.settings.request_limits.check(&facts.rate, now) {
            // A re-run of an inbox job whose first run filed (and counted) its request answers
            // with that request, not with the limit it now counts against itself.
            if let Some(id) = replayed {
                if let Some(filed) = self.store.request(id).await? {
                    return Ok(filed);
                }
            }
            return Err(refused.into());
        }

        let mut request = AccessRequest {
            id: replayed.unwrap_or_default(),
            subject: s.subject.clone(),
            resource: resource.id.clone(),
            kind: s.request.kind(),
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
        };
        let requester = Actor::from_subject(&s.subject);
        let mut cs = ChangeSet::default();
        cs.audit.push(
            self.audit(AuditKind::AccessRequested, &requester, &request)
                .details(serde_json::json!({
                    "duration": duration.to_string(),
                    "justification": request.justification.as_str(),
                    "kind": request.kind,
                    "email": s.subject.email.as_ref().map(|e| e.as_str()),
                })),
        );
        match &resource.approval {
            ApprovalPolicy::Auto => {
                request = request.transition(RequestEvent::Approve, now)?;
                request.decided_by = Some(Actor::System);
                self.plan_approval(&mut request, &resource, live, &[Actor::System], &mut cs)?;
                cs.requests.insert(0, RequestWrite::Insert(request.clone()));
            }
            ApprovalPolicy::Approvers {
                channel,
                pending_ttl,
                ..
            } => {
                let until = now + pending_ttl.as_chrono();
                request.pending_until = Some(until);
                cs.requests.push(RequestWrite::Insert(request.clone()));
                let summary = self.summary(&request);
                let required = resource.approval.required_approvals();
                cs.jobs.push(
                    self.notify_job(Notification::ApprovalRequested {
                        request: summary.clone(),
                        channel: channel
                            .clone()
                            .or_else(|| self.settings.approval_channel.clone()),
                        approvals_required: required,
                    }),
                );
                cs.jobs
                    .push(self.notify_job(Notification::RequestSubmitted {
                        request: summary,
                        approvals_required: required,
                    }));
                cs.jobs.push(NewJob::at(
                    JobKind::TimeoutPending {
                        request_id: request.id,
                    },
                    until,
                ));
                if let Some(esc) = resource.approval.escalation() {
                    cs.jobs.push(NewJob::at(
                        JobKind::Escalate {
                            request_id: request.id,
                        },
                        esc.at(now),
                    ));
                }
            }
        }
        match self.commit(cs).await {
            Ok(_) => Ok(request),
            Err(StoreError::Duplicate(_)) => {
                // The first run filed it (and it has been decided since): nothing more to do.
                if let Some(id) = replayed {
                    if let Some(filed) = self.store.request(id).await? {
                        return Ok(filed);
                    }
                }
                Err(EngineError::RevocationInProgress {
                    resource: resource.id.to_string(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Decides what an approved request does to grants: creates a grant (with its expiry job in
    /// the same change set) or extends the live one. `request` must already be `approved`.
    fn plan_approval(
        &self,
        request: &mut AccessRequest,
        resource: &Resource,
        live: Option<Grant>,
        approvers: &[Actor],
        cs: &mut ChangeSet,
    ) -> Result<(), EngineError> {
        let now = self.now();
        let grant = match live {
            Some(g) if g.status == GrantStatus::Revoking => {
                return Err(EngineError::RevocationInProgress {
                    resource: resource.id.to_string(),
                });
            }
            // Past its expiry: the expire job owns it now (it claims the row before calling the
            // provider), so an extension could only race the revocation and be lost.
            Some(g) if g.expires_at <= now => {
                return Err(EngineError::RevocationInProgress {
                    resource: resource.id.to_string(),
                });
            }
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
                g
            }
            // The access this extension was for has ended (its approval came too late): an
            // approver who approved "more time" must not hand out new access without a request.
            None if request.kind == RequestKind::Extend => {
                return Err(EngineError::ExtendedGrantEnded {
                    resource: resource.id.to_string(),
                });
            }
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
                g
            }
        };
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
        if !resource.approval.is_auto() {
            cs.jobs.push(self.notify_job(Notification::RequestApproved {
                request: self.summary(request),
                approved_by: approvers.to_vec(),
            }));
        }
        Ok(())
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
        delegation_ops::annotate(&mut cs, id, &authority);
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
        delegation_ops::annotate(&mut cs, id, &authority);
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

    /// See [`Provider::reissues_on_request`].
    fn reissues_on_request(&self, resource: &Resource) -> bool {
        self.providers
            .get(&resource.provider)
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

    // --------------------------------------------------------------------------------------------
    // Jobs

    /// Claims up to `limit` due jobs (at most as many as it runs at once) and runs them. Safe to
    /// call from several processes at once.
    ///
    /// Leases: a pass claims no more than `job_concurrency` jobs, so every claimed job starts at
    /// once instead of waiting out part of its lease in a local queue, and the leases of the
    /// pass's jobs are renewed every third of a lease while it runs (by claim token: a claim that
    /// lapsed and was taken over renews nothing). A job slower than the lease is therefore not
    /// handed to another worker while this one is still on it.
    ///
    /// A panic inside a job is caught: it is logged, counted (`panicked`), and the job fails like
    /// any other error (retried per its kind's policy), so one bad job cannot end the scheduler.
    pub async fn run_due(&self, limit: u32) -> Result<RunSummary, EngineError> {
        let now = self.now();
        let lease = self.settings.job_lease;
        let slots = u32::try_from(self.settings.job_concurrency.max(1)).unwrap_or(u32::MAX);
        // Jobs that each take a worker slot, no more than there are slots; audit exports run
        // as one batch (one sink write), so they take one slot together and up to `limit`.
        // A process without a chat adapter (the cleanup binary) leaves stored chat deliveries
        // to the servers instead of spending their attempts.
        let not_here: &'static [&'static str] = if self.inbox_handler().is_some() {
            &["export_audit"]
        } else {
            &["export_audit", "inbox"]
        };
        let others = self
            .store
            .claim_jobs_in(now, limit.min(slots), lease, ClaimScope::AllBut(not_here))
            .await?;
        let exports = self
            .store
            .claim_jobs_in(now, limit, lease, ClaimScope::Only("export_audit"))
            .await?;
        let mut summary = RunSummary {
            claimed: others.len() + exports.len(),
            ..Default::default()
        };
        // One claim, one token (a store hands out one per call).
        let tokens: Vec<String> = [others.first(), exports.first()]
            .into_iter()
            .flatten()
            .filter_map(|j| j.claim_token.clone())
            .collect();

        let work = async {
            let results: Vec<Result<RunSummary, EngineError>> = futures::stream::iter(others)
                .map(|job| async move { self.run_and_settle(&job).await })
                .buffer_unordered(self.settings.job_concurrency.max(1))
                .collect()
                .await;
            let mut summary = RunSummary::default();
            for result in results {
                summary.merge(result?);
            }
            if !exports.is_empty() {
                summary.merge(self.run_exports(exports).await?);
            }
            Ok::<_, EngineError>(summary)
        };
        let s = if tokens.is_empty() {
            work.await?
        } else {
            self.with_heartbeat(&tokens, work).await?
        };
        summary.merge(s);
        Ok(summary)
    }

    /// Runs one claimed job and records its outcome (a panic counted in `panicked`).
    async fn run_and_settle(&self, job: &Job) -> Result<RunSummary, EngineError> {
        let (result, panicked) = self.run_job_caught(job).await;
        let mut summary = self.settle(job, result).await?;
        if panicked {
            *summary
                .panicked
                .entry(job.kind.name().to_string())
                .or_default() += 1;
        }
        Ok(summary)
    }

    /// How many jobs of each lane a worker of this engine runs at once (`job_concurrency`).
    pub fn job_concurrency(&self) -> usize {
        self.settings.job_concurrency.max(1)
    }

    /// Claims up to `limit` due jobs of one lane for a continuous worker (the server's
    /// `JobScheduler`), which then runs each with [`Self::run_lane_job`] (or, for the export
    /// lane, all together with [`Self::run_lane_exports`]) while it goes on claiming for the
    /// slots that are free. Unlike [`Self::run_due`], nothing waits for the slowest job of a
    /// batch before the next due job is claimed.
    pub async fn claim_lane(&self, lane: JobLane, limit: u32) -> Result<Vec<Job>, EngineError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let scope = match lane {
            // A process without a chat adapter (the cleanup binary) leaves stored chat
            // deliveries to the servers instead of spending their attempts.
            JobLane::Work if self.inbox_handler().is_some() => {
                ClaimScope::AllBut(&["export_audit"])
            }
            JobLane::Work => ClaimScope::AllBut(&["export_audit", "inbox"]),
            JobLane::Revocations => ClaimScope::OneOf(&["expire", "revoke"]),
            JobLane::Export => ClaimScope::Only("export_audit"),
        };
        Ok(self
            .store
            .claim_jobs_in(self.now(), limit, self.settings.job_lease, scope)
            .await?)
    }

    /// Runs one job claimed by [`Self::claim_lane`] and settles it, renewing its lease while it
    /// runs. A panic inside the job fails the attempt like an error (see [`Self::run_due`]).
    pub async fn run_lane_job(&self, job: Job) -> Result<RunSummary, EngineError> {
        let mut summary = match job.claim_token.clone() {
            Some(token) => {
                self.with_heartbeat(std::slice::from_ref(&token), self.run_and_settle(&job))
                    .await?
            }
            None => self.run_and_settle(&job).await?,
        };
        summary.claimed = 1;
        Ok(summary)
    }

    /// Ships export jobs claimed by [`Self::claim_lane`] (`JobLane::Export`) as one batch,
    /// renewing their lease while it runs.
    pub async fn run_lane_exports(&self, jobs: Vec<Job>) -> Result<RunSummary, EngineError> {
        let claimed = jobs.len();
        let tokens: Vec<String> = jobs
            .first()
            .and_then(|j| j.claim_token.clone())
            .into_iter()
            .collect();
        let mut summary = if tokens.is_empty() {
            self.run_exports(jobs).await?
        } else {
            self.with_heartbeat(&tokens, self.run_exports(jobs)).await?
        };
        summary.claimed = claimed;
        Ok(summary)
    }

    /// Runs `work` while renewing the leases of the claims `tokens` every third of a lease.
    ///
    /// The renewals run beside `work`, never instead of it: `work` is polled while a renewal
    /// waits. A loop that renewed in the body of a `select!` stopped polling `work` for the
    /// length of the renewal; when the beat fired while `work` was inside a store transaction
    /// (on SQLite: holding the store's writer lock), the renewal waited for that lock and the
    /// transaction waited to be polled — for ever. The chaos test's SQLite server wedged that
    /// way (docs/reliability.md, finding 2).
    async fn with_heartbeat<T>(&self, tokens: &[String], work: impl Future<Output = T>) -> T {
        let lease = self.settings.job_lease;
        let every = (lease / 3)
            .to_std()
            .unwrap_or_default()
            .max(std::time::Duration::from_millis(50));
        // `select!` polls both on every wake-up; the beat never ends, so this returns `work`'s
        // output, dropping a renewal in flight (a store call is safe to drop at any point).
        tokio::select! {
            out = work => out,
            never = self.renew_for_ever(tokens, lease, every) => match never {},
        }
    }

    /// Renews the leases of `tokens` every `every`, for ever (see [`Self::with_heartbeat`]).
    async fn renew_for_ever(
        &self,
        tokens: &[String],
        lease: chrono::Duration,
        every: std::time::Duration,
    ) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(every).await;
            for token in tokens {
                match self.store.renew_lease(token, lease).await {
                    Ok(n) => tracing::debug!(renewed = n, "job leases renewed"),
                    // The next beat tries again; the lease is three beats long.
                    Err(e) => tracing::warn!(error = %e, "could not renew job leases"),
                }
            }
        }
    }

    /// [`Self::run_job`], with a panic turned into a failed attempt (`true`: it panicked).
    async fn run_job_caught(&self, job: &Job) -> (JobResult, bool) {
        use futures::FutureExt;
        match std::panic::AssertUnwindSafe(self.run_job(job))
            .catch_unwind()
            .await
        {
            Ok(result) => (result, false),
            Err(panic) => {
                let what = panic_message(panic.as_ref());
                tracing::error!(job = %job.id, kind = job.kind.name(), panic = %what, "job panicked; failing this attempt");
                (JobResult::Retry(format!("panicked: {what}")), true)
            }
        }
    }

    /// Runs due jobs until none are left (or `max_rounds` passes), as the cleanup binary does.
    pub async fn drain(&self, max_rounds: usize) -> Result<RunSummary, EngineError> {
        let mut total = RunSummary::default();
        for _ in 0..max_rounds {
            let s = self.run_due(100).await?;
            let claimed = s.claimed;
            total.merge(s);
            if claimed == 0 {
                break;
            }
        }
        Ok(total)
    }

    /// Records the outcome of one job in the queue.
    async fn settle(&self, job: &Job, result: JobResult) -> Result<RunSummary, EngineError> {
        let mut s = RunSummary::default();
        let name = job.kind.name().to_string();
        let token = job.claim_token.clone().unwrap_or_default();
        match result {
            JobResult::Done { revocation_lag } => {
                self.store.complete_job(job.id, &token, self.now()).await?;
                *s.done.entry(name).or_default() += 1;
                s.revocation_lag_secs.extend(revocation_lag);
            }
            JobResult::Retry(err) => {
                let exhausted = job
                    .kind
                    .max_attempts()
                    .is_some_and(|max| job.attempts >= max);
                if exhausted {
                    tracing::error!(job = %job.id, kind = %name, attempts = job.attempts, error = %err, "job failed for good");
                    self.give_up(job, &err).await;
                    self.store.bury_job(job.id, &token, &err).await?;
                    *s.dead.entry(name).or_default() += 1;
                } else {
                    let wait = backoff(&job.kind, job.attempts);
                    if job.kind.is_revocation() {
                        tracing::error!(job = %job.id, kind = %name, attempts = job.attempts, error = %err, "REVOCATION FAILING: will retry");
                    } else {
                        tracing::warn!(job = %job.id, kind = %name, attempts = job.attempts, error = %err, "job failed; will retry");
                    }
                    self.store
                        .retry_job(job.id, &token, &err, self.now() + wait)
                        .await?;
                    *s.retried.entry(name).or_default() += 1;
                }
            }
            JobResult::Fatal(err) => {
                tracing::error!(job = %job.id, kind = %name, error = %err, "job failed and cannot succeed");
                self.give_up(job, &err).await;
                self.store.bury_job(job.id, &token, &err).await?;
                *s.dead.entry(name).or_default() += 1;
            }
            JobResult::RetryAt(err, at) => {
                self.store.retry_job(job.id, &token, &err, at).await?;
                *s.retried.entry(name).or_default() += 1;
            }
        }
        Ok(s)
    }

    /// What giving up on a job means for the domain: a provision that never succeeds fails its
    /// request (so the person is told and nothing stays half-approved).
    async fn give_up(&self, job: &Job, err: &str) {
        if let JobKind::Provision { request_id } = job.kind {
            let message = format!("Provisioning kept failing: {err}");
            if let Err(e) = self
                .with_retries(|| self.fail_provisioning(request_id, &message))
                .await
            {
                tracing::error!(request = %request_id, error = %e, "could not mark request failed");
            }
        }
    }

    async fn run_job(&self, job: &Job) -> JobResult {
        let result = match &job.kind {
            JobKind::Provision { request_id } => self.provision(*request_id).await,
            JobKind::Expire { grant_id } => self.end_grant(*grant_id, true).await,
            JobKind::Revoke { grant_id } => self.end_grant(*grant_id, false).await,
            JobKind::TimeoutPending { request_id } => self
                .with_retries(|| self.time_out(*request_id))
                .await
                .map(|_| JobResult::done()),
            JobKind::Notify { notification } => self.deliver(notification, job).await,
            JobKind::Remind {
                grant_id,
                expires_at,
            } => self.remind(*grant_id, *expires_at, job).await,
            JobKind::ExportAudit { .. } => {
                Ok(JobResult::Fatal("export jobs run in batches".into()))
            }
            // The store sets these aside when it claims; should one get here, it cannot run.
            JobKind::Undecodable { kind, error } => Ok(JobResult::Fatal(format!(
                "undecodable job of kind '{kind}': {error}"
            ))),
            JobKind::Escalate { request_id } => self
                .with_retries(|| self.escalate(*request_id))
                .await
                .map(|_| JobResult::done()),
            JobKind::Inbox { item } => Ok(match self.inbox_handler() {
                Some(h) => match INBOX_JOB.scope(job.id, h.handle(item)).await {
                    Ok(()) => JobResult::done(),
                    Err(InboxError::Transient(e)) => JobResult::Retry(e),
                    Err(InboxError::Permanent(e)) => JobResult::Fatal(e),
                },
                // A process without the chat adapter (the cleanup binary) leaves it for later.
                None => {
                    JobResult::Retry(format!("no {} inbox handler in this process", item.source))
                }
            }),
            JobKind::DeliverWebhook { webhook } => self.deliver_webhook(webhook, job).await,
        };
        result.unwrap_or_else(|e| JobResult::Retry(e.to_string()))
    }

    async fn provision(&self, request_id: RequestId) -> Result<JobResult, EngineError> {
        let Some(request) = self.store.request(request_id).await? else {
            return Ok(JobResult::Fatal(format!("request {request_id} vanished")));
        };
        if request.status != RequestStatus::Approved {
            return Ok(JobResult::done()); // already provisioned (a re-run after a crash) or ended
        }
        let Some(grant_id) = request.grant_id else {
            return Ok(JobResult::Fatal("approved request has no grant".into()));
        };
        let Some(grant) = self.store.grant(grant_id).await? else {
            return Ok(JobResult::Fatal(format!("grant {grant_id} vanished")));
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
            return Ok(JobResult::done());
        }
        let resource = self.resource(request.resource.as_str())?.clone();
        let provider = self
            .providers
            .get(&resource.provider)
            .ok_or_else(|| EngineError::NoProvider(resource.provider.clone()))?;
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
            // First provisioning of this grant: record what the provider is about to add, and
            // commit it, before the provider changes anything. A retry (after a time-out whose
            // write landed, a crash, a failed activation) then adopts its own work, and a revoke
            // that finds no handle knows what to remove.
            let intent = match provider.intent(&req).await {
                Ok(v) => v,
                Err(e) => return self.provisioning_refused(request_id, e).await,
            };
            let mut g = grant.clone();
            g.provider_intent = intent.clone();
            match self
                .commit(ChangeSet {
                    grants: vec![GrantWrite::Update(g.clone())],
                    ..Default::default()
                })
                .await
            {
                Ok(_) => {}
                // Revoked or extended meanwhile: decide again from the new state.
                Err(StoreError::Conflict(what)) => {
                    return Ok(JobResult::Retry(format!("{what}; provisioning again")));
                }
                Err(e) => return Err(e.into()),
            }
            req.intent = Some(intent);
        }
        let outcome = match provider.grant(&req).await {
            Ok(o) => o,
            Err(e) => return self.provisioning_refused(request_id, e).await,
        };
        let instructions = outcome.instructions.clone();
        let events = outcome.events.clone();
        let handle = outcome.handle.clone();
        let pinned = outcome.expires_at;
        let activated = self
            .with_retries(|| {
                self.activate(
                    request_id,
                    grant_id,
                    &handle,
                    pinned,
                    &instructions,
                    &events,
                )
            })
            .await?;
        // The secret goes to the person only now: after the re-check that found the grant still
        // live, committed in the same step that activated it. It exists only in this memory and
        // is never stored, so if this process dies between that commit and the delivery the key
        // is lost: the person was told access is ready and asks again for a new key (GCP
        // re-issues one for a live grant); the account it belongs to is removed with the grant.
        if let (Some(secret), Activation::Activated { request }) = (&outcome.secret, &activated) {
            if let Err(e) = self.deliver_secret(&self.summary(request), secret).await {
                tracing::warn!(request = %request_id, error = %e, "could not deliver the secret; the person can request again");
                let g = self.store.grant(grant_id).await?;
                if let Some(g) = g {
                    // Its own message: the activation already queued the one "granted" message.
                    self.commit(ChangeSet {
                        jobs: vec![self.notify_job(Notification::SecretNotDelivered {
                            request: self.summary(request),
                            grant: GrantSummary::of(&g),
                        })],
                        ..Default::default()
                    })
                    .await?;
                }
            }
        }
        Ok(JobResult::done())
    }

    /// Hands a secret over, trying again at once after a transient failure (a 5xx or rate limit
    /// on the upload): the secret lives only in this memory, so the queue cannot retry it later.
    /// A retry after an ambiguous failure may deliver the same file twice, to the same person.
    async fn deliver_secret(
        &self,
        request: &RequestSummary,
        secret: &crate::notification::DeliveredSecret,
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
        if let ProviderError::Transient(e) = e {
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
    #[allow(clippy::too_many_arguments)]
    async fn activate(
        &self,
        request_id: RequestId,
        grant_id: GrantId,
        handle: &serde_json::Value,
        pinned_expiry: Option<DateTime<Utc>>,
        instructions: &str,
        events: &[ProviderEvent],
    ) -> Result<Activation, EngineError> {
        let now = self.now();
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
        let mut cs = ChangeSet::default();
        if !matches!(
            grant.status,
            GrantStatus::Provisioning | GrantStatus::Active
        ) || grant.expires_at <= now
        {
            // Revoked or expired (or being revoked, or past its expiry, which its expire job may
            // be revoking right now) while the provider worked: record what it added and take
            // it back, whatever the grant's status. A revoke that ran meanwhile had no handle (or
            // ran before this write landed); the take-back job uses this one.
            if request.status == RequestStatus::Approved {
                let mut failed = request.transition(RequestEvent::ProvisioningFailed, now)?;
                let reason = "Access ended while it was being provisioned.";
                failed.failure = Some(reason.into());
                // A revoke says so itself; an expiry that outran provisioning says nothing
                // (there was no access to call expired), so this is the person's answer.
                if !matches!(grant.status, GrantStatus::Revoking | GrantStatus::Revoked) {
                    cs.jobs.push(self.notify_job(Notification::AccessFailed {
                        request: self.summary(&failed),
                        reason: reason.into(),
                    }));
                }
                cs.requests.push(RequestWrite::Update(failed));
                cs.audit.push(
                    self.audit(AuditKind::GrantFailed, &Actor::System, &request)
                        .details(serde_json::json!({"reason": "ended during provisioning", "provider_handle": handle})),
                );
            } else {
                cs.audit.push(
                    self.grant_audit(AuditKind::ProviderEvent, &Actor::System, &grant)
                        .details(serde_json::json!({"event": "takeback_queued", "details": {"provider_handle": handle}})),
                );
            }
            for e in events {
                cs.audit.push(
                    self.grant_audit(AuditKind::ProviderEvent, &Actor::System, &grant)
                        .details(serde_json::json!({"event": e.name, "details": e.details})),
                );
            }
            let mut g = grant.clone();
            g.provider_handle = handle.clone();
            g.takeback_pending = true;
            cs.grants.push(GrantWrite::Update(g));
            cs.jobs.push(NewJob::at(JobKind::Revoke { grant_id }, now));
            self.commit(cs).await?;
            return Ok(Activation::TakenBack);
        }
        if request.status != RequestStatus::Approved {
            return Ok(Activation::Skipped);
        }
        // An extension lengthens access; a provider that pins the expiry (a re-issued key with the
        // old end) grants again without extending. (A re-request of a non-extendable resource
        // keeps the row's expiry, so the pinned end equals it: still a re-issue, not an extension.)
        let extended = grant.status == GrantStatus::Active && pinned_expiry.is_none();
        let mut g = grant.clone();
        g.status = GrantStatus::Active;
        g.provider_handle = handle.clone();
        g.granted_at = g.granted_at.or(Some(now));
        if let Some(pinned) = pinned_expiry {
            if pinned != g.expires_at {
                g.expires_at = pinned;
                cs.jobs
                    .push(NewJob::at(JobKind::Expire { grant_id }, pinned));
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
            "provider": self.resource(request.resource.as_str()).map(|r| r.provider.clone()).unwrap_or_default(),
            "provider_handle": handle,
            "justification": request.justification.as_str(),
            "email": request.subject.email.as_ref().map(|e| e.as_str()),
        })));
        for e in events {
            cs.audit.push(
                self.audit(AuditKind::ProviderEvent, &Actor::System, &active)
                    .details(serde_json::json!({"event": e.name, "details": e.details})),
            );
        }
        cs.jobs.push(self.notify_job(Notification::AccessGranted {
            request: self.summary(&active),
            grant: GrantSummary::of(&g),
            instructions: instructions.to_string(),
            extended,
            secret_delivery_failed: false,
        }));
        self.commit(cs).await?;
        Ok(Activation::Activated {
            request: Box::new(stored(active)),
        })
    }

    async fn fail_provisioning(
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

    /// Expiry (`expire = true`) or early revocation, and the take-back of provider work that
    /// landed after its grant ended. Revocation never gives up: any failure is a retry.
    async fn end_grant(&self, grant_id: GrantId, expire: bool) -> Result<JobResult, EngineError> {
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
            .get(&resource.provider)
            .ok_or_else(|| EngineError::NoProvider(resource.provider.clone()))?;
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
        for e in &outcome.events {
            cs.audit.push(
                self.grant_audit(AuditKind::ProviderEvent, &Actor::System, &grant)
                    .details(serde_json::json!({"event": e.name, "details": e.details})),
            );
        }
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
        for e in events {
            cs.audit.push(
                self.grant_audit(AuditKind::ProviderEvent, &Actor::System, &grant)
                    .details(serde_json::json!({"event": e.name, "details": e.details})),
            );
        }
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

    async fn time_out(&self, request_id: RequestId) -> Result<(), EngineError> {
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

    async fn deliver(&self, n: &Notification, job: &Job) -> Result<JobResult, EngineError> {
        let (result, refs) = self.deliver_collect(n, job).await?;
        for r in refs {
            self.store.save_message_ref(&r).await?;
        }
        Ok(result)
    }

    /// Delivers `n` from `job`; returns the outcome and the messages posted (for the caller to
    /// record). The job goes along so a re-run can find what an earlier attempt posted.
    async fn deliver_collect(
        &self,
        n: &Notification,
        job: &Job,
    ) -> Result<(JobResult, Vec<MessageRef>), EngineError> {
        let mut ctx = NotifyContext {
            job: Some(crate::ports::NotifyJob::of(job)),
            ..Default::default()
        };
        if let Some(id) = n
            .request_id()
            .filter(|_| self.notifier.reads_message_refs(n))
        {
            ctx.message_refs = self.store.message_refs(id).await?;
        }
        Ok(match self.notifier.notify(n, &ctx).await {
            Ok(refs) => (JobResult::done(), refs),
            Err(NotifyError::Transient(e)) => (JobResult::Retry(e), Vec::new()),
            Err(NotifyError::Permanent(e)) => (JobResult::Fatal(e), Vec::new()),
        })
    }

    async fn remind(
        &self,
        grant_id: GrantId,
        expires_at: DateTime<Utc>,
        job: &Job,
    ) -> Result<JobResult, EngineError> {
        let Some(grant) = self.store.grant(grant_id).await? else {
            return Ok(JobResult::done());
        };
        // Extended or ended since: the reminder is stale (a newer one exists if still live).
        if grant.status != GrantStatus::Active || grant.expires_at != expires_at {
            return Ok(JobResult::done());
        }
        let can_extend = self
            .catalog
            .get(grant.resource.as_str())
            .is_some_and(|r| r.extendable);
        self.deliver(
            &Notification::ExpiryReminder {
                grant: GrantSummary::of(&grant),
                can_extend,
            },
            job,
        )
        .await
    }

    async fn run_exports(&self, jobs: Vec<Job>) -> Result<RunSummary, EngineError> {
        let mut s = RunSummary::default();
        let Some(sink) = &self.audit_sink else {
            // Configured once and removed since: nothing to ship to; keep the jobs for later.
            for j in &jobs {
                let token = j.claim_token.clone().unwrap_or_default();
                let at = self.now() + chrono::Duration::hours(1);
                self.store
                    .retry_job(j.id, &token, "no audit sink configured", at)
                    .await?;
                *s.retried.entry("export_audit".into()).or_default() += 1;
            }
            return Ok(s);
        };
        // The batch's events, and the requests and grants they name, in a few statements (500
        // ids each) rather than three per event: per-event reads bounded the drain at about
        // 1,100 events/s.
        let event_ids: Vec<AuditEventId> = jobs
            .iter()
            .filter_map(|j| match j.kind {
                JobKind::ExportAudit { event_id } => Some(event_id),
                _ => None,
            })
            .collect();
        let mut events: HashMap<AuditEventId, AuditEvent> = self
            .store
            .audit_events_by_id(&event_ids)
            .await?
            .into_iter()
            .map(|e| (e.record.id, e))
            .collect();
        let request_ids: Vec<RequestId> = events
            .values()
            .filter_map(|e| e.record.request_id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let grant_ids: Vec<GrantId> = events
            .values()
            .filter_map(|e| e.record.grant_id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let requests: HashMap<RequestId, AccessRequest> = self
            .store
            .requests_by_id(&request_ids)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let grants: HashMap<GrantId, Grant> = self
            .store
            .grants_by_id(&grant_ids)
            .await?
            .into_iter()
            .map(|g| (g.id, g))
            .collect();
        let mut items = Vec::with_capacity(jobs.len());
        let mut by_event: HashMap<String, &Job> = HashMap::new();
        for j in &jobs {
            let JobKind::ExportAudit { event_id } = j.kind else {
                continue;
            };
            let Some(event) = events.remove(&event_id) else {
                let token = j.claim_token.clone().unwrap_or_default();
                self.store
                    .bury_job(j.id, &token, "audit event not found")
                    .await?;
                *s.dead.entry("export_audit".into()).or_default() += 1;
                continue;
            };
            let request = event
                .record
                .request_id
                .and_then(|r| requests.get(&r).cloned());
            let grant = event.record.grant_id.and_then(|g| grants.get(&g).cloned());
            by_event.insert(event_id.to_string(), j);
            items.push(ExportItem {
                event,
                request,
                grant,
            });
        }
        if items.is_empty() {
            return Ok(s);
        }
        items.sort_by_key(|i| i.event.seq);
        match sink.export(&items).await {
            Ok(report) => {
                let rejected: HashMap<String, String> = report
                    .rejected
                    .into_iter()
                    .map(|(id, why)| (id.to_string(), why))
                    .collect();
                let mut accepted = Vec::new();
                for (event_id, job) in by_event {
                    let token = job.claim_token.clone().unwrap_or_default();
                    if let Some(why) = rejected.get(&event_id) {
                        tracing::error!(event = %event_id, error = %why, "audit sink rejected an event; it stays in the local chain");
                        self.store.bury_job(job.id, &token, why).await?;
                        *s.dead.entry("export_audit".into()).or_default() += 1;
                    } else {
                        accepted.push((job.id, token));
                    }
                }
                // One write for the whole accepted batch, not one per event.
                self.store.complete_jobs(&accepted, self.now()).await?;
                *s.done.entry("export_audit".into()).or_default() += accepted.len() as u64;
            }
            Err(e) => {
                let msg = e.to_string();
                for job in by_event.values() {
                    let token = job.claim_token.clone().unwrap_or_default();
                    let at = self.now() + backoff(&job.kind, job.attempts);
                    self.store.retry_job(job.id, &token, &msg, at).await?;
                    *s.retried.entry("export_audit".into()).or_default() += 1;
                }
                tracing::warn!(error = %msg, events = items.len(), "audit export failed; will retry");
            }
        }
        Ok(s)
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

    /// Ids of jobs that are dead (for the admin API and alerts).
    pub async fn dead_jobs(&self) -> Result<Vec<Job>, EngineError> {
        Ok(self
            .store
            .jobs(&crate::ports::JobFilter {
                status: Some(crate::jobs::JobStatus::Dead),
                ..Default::default()
            })
            .await?)
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

/// A request as the store holds it after a successful compare-and-set of `r`.
fn stored(r: AccessRequest) -> AccessRequest {
    AccessRequest {
        version: r.version + 1,
        ..r
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

/// The text of a caught panic (`panic!` payloads are `&str` or `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reminders() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        // 7 days: one day before
        assert_eq!(
            reminder_time(t0, t0 + chrono::Duration::days(7), t0),
            Some(t0 + chrono::Duration::days(6))
        );
        // 10 hours: one hour before
        assert_eq!(
            reminder_time(t0, t0 + chrono::Duration::hours(10), t0),
            Some(t0 + chrono::Duration::hours(9))
        );
        // already past
        assert_eq!(
            reminder_time(
                t0,
                t0 + chrono::Duration::hours(10),
                t0 + chrono::Duration::hours(9)
            ),
            None
        );
    }

    #[test]
    fn error_messages_are_specific() {
        let e = EngineError::UnknownResource {
            requested: "nope".into(),
            valid: vec!["a".into(), "b".into()],
        };
        assert_eq!(
            e.to_string(),
            "Unknown resource 'nope'. Valid resources: a, b."
        );
        // A resource with roles: the bare name, or a role it does not have, lists its roles.
        let catalog = ResourceCatalog::new(
            ["gcp-access:viewer", "gcp-access:editor", "dev-network"].map(|id| {
                serde_json::from_value::<Resource>(serde_json::json!({
                    "id": id, "provider": "dry-run", "approval": {"mode": "auto"},
                    "durations": {"default": "1h", "min": "1m", "max": "8h"},
                }))
                .unwrap()
            }),
        );
        assert_eq!(
            catalog.unknown("gcp-access").to_string(),
            "'gcp-access' has several roles; say which one: gcp-access:editor, gcp-access:viewer."
        );
        assert_eq!(
            catalog.unknown(" gcp-access:admin ").to_string(),
            "Unknown role 'gcp-access:admin'. Roles of 'gcp-access': gcp-access:editor, gcp-access:viewer."
        );
        assert_eq!(
            catalog.unknown("nope:x").to_string(),
            "Unknown resource 'nope:x'. Valid resources: dev-network, gcp-access:editor, gcp-access:viewer."
        );
        assert!(catalog.get("gcp-access:editor").is_some());
        assert!(catalog.get("gcp-access").is_none());
        assert_eq!(catalog.roles_of("dev-network"), Vec::<String>::new());
        assert_eq!(
            EngineError::AlreadyDecided {
                status: RequestStatus::Denied
            }
            .to_string(),
            "This request has already been denied."
        );
    }
}
