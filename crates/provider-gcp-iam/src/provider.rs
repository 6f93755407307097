//! [`GcpIamProvider`]: the `Provider` port on IAM + Resource Manager.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use access_core::notification::DeliveredSecret;
use access_core::ports::{
    Clock, GrantOutcome, GrantRequest, LiveAccess, Provider, ProviderError, ProviderEvent,
    RevokeOutcome, RevokeRequest, SystemClock,
};
use access_core::{Resource, Subject};
use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use gcp_auth::{AccessTokenSource, AuthError, ServiceAccountTokenSource};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{CreatedKey, DEFAULT_CRM_URL, DEFAULT_IAM_URL, Expr, GcpClient, ServiceAccount};
use crate::condition::{self, TITLE, rfc3339};
use crate::error::GcpError;
use crate::messages::{GrantMessage, key_warning};
use crate::naming;
use crate::policy::{EditOutcome, PolicyEdit, PolicyWriter, SweepChanges};
use crate::retry::Backoff;
use crate::settings::{AccessMode, GcpIamSettings};

/// Every Gatehouse service account's description starts with this; the sweep deletes only
/// accounts that carry it (and have a Gatehouse-shaped name).
pub const DESCRIPTION_MARKER: &str = "Gatehouse temporary access";

/// The document's mock key in dry-run mode.
pub const DRY_RUN_KEY: &str = r#"{"type":"service_account","project_id":"dry-run"}"#;

/// Provider-wide configuration (per-resource settings are in [`GcpIamSettings`]).
#[derive(Debug, Clone)]
pub struct GcpIamConfig {
    /// `GCP_IAM_API_URL`, default `https://iam.googleapis.com`.
    pub iam_url: String,
    /// `GCP_CRM_API_URL`, default `https://cloudresourcemanager.googleapis.com`.
    pub crm_url: String,
    /// `GCP_ACCESS_DRY_RUN=true`: no IAM change for any resource.
    pub dry_run: bool,
    /// Key creation through IAM's eventual consistency.
    pub key_retry: Backoff,
    /// Binding a just-created account that the policy backend does not know yet.
    pub binding_retry: Backoff,
    /// Policy read-modify-write after 409 `ABORTED`.
    pub policy_retry: Backoff,
    /// Keys kept per account on re-request (the newest, including the one just made).
    pub keep_keys: usize,
    /// Gatehouse accounts with no binding are deleted by the sweep once this old.
    pub orphan_min_age: chrono::Duration,
}

impl Default for GcpIamConfig {
    fn default() -> Self {
        Self {
            iam_url: DEFAULT_IAM_URL.into(),
            crm_url: DEFAULT_CRM_URL.into(),
            dry_run: false,
            key_retry: Backoff::KEY_CREATION,
            binding_retry: Backoff {
                max_attempts: 5,
                ..Backoff::KEY_CREATION
            },
            policy_retry: Backoff::POLICY_WRITE,
            keep_keys: 3,
            orphan_min_age: chrono::Duration::hours(1),
        }
    }
}

impl GcpIamConfig {
    /// Defaults overridden by `GCP_IAM_API_URL`, `GCP_CRM_API_URL`, `GCP_ACCESS_DRY_RUN`, read
    /// through `get` (the server's snapshot of the environment; scripts the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut c = Self::default();
        if let Some(u) = var("GCP_IAM_API_URL") {
            c.iam_url = u;
        }
        if let Some(u) = var("GCP_CRM_API_URL") {
            c.crm_url = u;
        }
        c.dry_run = var("GCP_ACCESS_DRY_RUN")
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
        c
    }

    /// Every wait divided by `divisor` (tests).
    pub fn with_fast_retries(mut self, divisor: u32) -> Self {
        self.key_retry = self.key_retry.scaled(divisor);
        self.binding_retry = self.binding_retry.scaled(divisor);
        self.policy_retry = self.policy_retry.scaled(divisor);
        self
    }
}

/// What the provider keeps to revoke (and re-issue) a grant. Never holds key material.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcpGrantHandle {
    pub mode: AccessMode,
    pub project: String,
    pub role: String,
    /// `serviceAccount:{email}` or `user:{email}`.
    pub member: String,
    pub user_email: String,
    #[serde(default)]
    pub service_account_email: Option<String>,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    pub justification: String,
    /// Id of the newest key handed out (not secret: a key id is no credential).
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    pub condition_title: String,
}

/// What a grant is about to create, recorded by the engine (keyed by the grant) before the first
/// grant call: the service account's id is fixed here, so a retried grant finds and adopts the
/// account its earlier attempt created (its description carries the grant id) instead of minting
/// a second one, and a revoke without a handle knows which account and binding to remove.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcpGrantIntent {
    pub grant_id: access_core::GrantId,
    pub mode: AccessMode,
    pub project: String,
    pub role: String,
    /// `serviceAccount:{email}` or `user:{email}`.
    pub member: String,
    pub user_email: String,
    /// Key mode: the account id this grant creates.
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub service_account_email: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

impl GcpGrantIntent {
    fn parse(v: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

/// The marker a grant's account description carries, so its own account can be recognised.
fn grant_marker(grant_id: access_core::GrantId) -> String {
    format!("(grant {grant_id})")
}

/// What one sweep found and repaired.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepReport {
    pub project: String,
    pub dry_run: bool,
    /// `(member, role, expires_at)` of expired `Temp Access` bindings removed.
    pub expired_bindings: Vec<(String, String, DateTime<Utc>)>,
    /// Accounts of expired bindings, deleted.
    pub deleted_service_accounts: Vec<String>,
    /// Gatehouse accounts with no binding, older than the orphan age, deleted.
    pub orphaned_service_accounts: Vec<String>,
    /// `deleted:serviceAccount:` members dropped from bindings.
    pub dropped_deleted_members: Vec<String>,
    /// Repairs that failed (the next sweep tries again).
    pub errors: Vec<String>,
    /// One event per repair, for the audit trail.
    pub events: Vec<ProviderEvent>,
}

impl SweepReport {
    pub fn is_clean(&self) -> bool {
        self.events.is_empty() && self.errors.is_empty()
    }
}

/// Temporary GCP access: service account + key + expiring conditional binding, or a conditional
/// binding on the person's own account.
pub struct GcpIamProvider {
    client: GcpClient,
    writer: PolicyWriter,
    config: GcpIamConfig,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for GcpIamProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpIamProvider")
            .field("client", &self.client)
            .field("dry_run", &self.config.dry_run)
            .finish()
    }
}

/// Credentials for dry-run set-ups that have none: any API call fails clearly.
#[derive(Debug)]
struct NoCredentials;

#[async_trait]
impl AccessTokenSource for NoCredentials {
    async fn token(&self) -> Result<String, AuthError> {
        Err(AuthError::NotConfigured)
    }
}

/// The facts of one grant being made.
#[derive(Clone, Copy)]
struct Plan<'a> {
    email: &'a str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    justification: &'a str,
    granted_at: DateTime<Utc>,
}

fn event(name: &str, details: serde_json::Value) -> ProviderEvent {
    ProviderEvent {
        name: name.to_string(),
        details,
    }
}

fn truncate_bytes(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl GcpIamProvider {
    pub const KIND: &'static str = "gcp-iam";

    pub fn new(config: GcpIamConfig, tokens: Arc<dyn AccessTokenSource>) -> Result<Self, GcpError> {
        let client = GcpClient::new(tokens, &config.iam_url, &config.crm_url)?;
        let writer = PolicyWriter::new(client.clone(), config.policy_retry);
        Ok(Self {
            client,
            writer,
            config,
            clock: Arc::new(SystemClock),
        })
    }

    /// From the environment: `GCP_SERVICE_ACCOUNT_JSON` (content or path), `GCP_IAM_API_URL`,
    /// `GCP_CRM_API_URL`, `GCP_ACCESS_DRY_RUN`, read through `get`. In dry-run mode credentials
    /// are optional.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ProviderError> {
        let config = GcpIamConfig::from_lookup(&get);
        let tokens: Arc<dyn AccessTokenSource> = match ServiceAccountTokenSource::from_lookup(&get)
        {
            Ok(t) => Arc::new(t),
            Err(AuthError::NotConfigured) if config.dry_run => Arc::new(NoCredentials),
            Err(e) => {
                return Err(ProviderError::Permanent(format!(
                    "GCP access manager is not enabled: {e}"
                )));
            }
        };
        Self::new(config, tokens).map_err(|e| ProviderError::Permanent(e.to_string()))
    }

    /// Replaces the clock (service-account names, messages and the sweep read it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The IAM / Resource Manager client (for tools that need a raw call).
    pub fn client(&self) -> &GcpClient {
        &self.client
    }

    /// `setIamPolicy` calls made so far.
    pub fn policy_writes(&self) -> u64 {
        self.writer.stats().writes.load(Ordering::Relaxed)
    }

    /// 409 `ABORTED` answers absorbed so far.
    pub fn policy_conflicts(&self) -> u64 {
        self.writer.stats().aborted.load(Ordering::Relaxed)
    }

    fn dry_run(&self, s: &GcpIamSettings) -> bool {
        self.config.dry_run || s.dry_run
    }

    // --------------------------------------------------------------------------------------
    // grant

    fn email_of(req: &GrantRequest, s: &GcpIamSettings) -> Result<String, ProviderError> {
        let email = req.subject.email.as_ref().ok_or_else(|| {
            ProviderError::Permanent(
                "Your Slack profile has no e-mail address; set one so GCP access can be granted to it.".into(),
            )
        })?;
        if let Some(domain) = s.domain()
            && email.domain() != domain
        {
            return Err(ProviderError::Permanent(format!(
                "GCP access is only available to @{domain} accounts."
            )));
        }
        Ok(email.as_str().to_string())
    }

    fn message(
        &self,
        req: &GrantRequest,
        s: &GcpIamSettings,
        h: &GcpGrantHandle,
        now: DateTime<Utc>,
    ) -> String {
        GrantMessage {
            project: &s.project,
            role: &s.role,
            eligibility: &req.resource.eligibility,
            granted_at: h.granted_at,
            expires_at: h.expires_at,
            now,
            justification: &h.justification,
            resource_cleanup_days: s.resource_cleanup_days,
            user_binding: (h.mode == AccessMode::UserBinding).then_some(h.user_email.as_str()),
        }
        .render()
    }

    fn secret(
        &self,
        key_file: Vec<u8>,
        user_email: &str,
        sa: &str,
        project: &str,
        expires_at: DateTime<Utc>,
    ) -> DeliveredSecret {
        DeliveredSecret {
            filename: naming::key_file_name(user_email),
            content: key_file,
            warning: key_warning(sa, project, expires_at),
        }
    }

    async fn create_key_with_backoff(
        &self,
        project: &str,
        sa: &str,
    ) -> Result<CreatedKey, GcpError> {
        let b = self.config.key_retry;
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        loop {
            match self.client.create_key(project, sa).await {
                Err(e) if e.is_not_found() || e.is_transient() => match b.next(attempt, waited) {
                    Some(d) => {
                        tracing::info!(service_account = %sa, attempt, wait_ms = d.as_millis() as u64, error = %e,
                            "service account not usable yet (IAM is eventually consistent); retrying key creation");
                        tokio::time::sleep(d).await;
                        waited += d;
                        attempt += 1;
                    }
                    None => return Err(e),
                },
                other => return other,
            }
        }
    }

    /// Applies a binding; a just-created account may be unknown to the policy backend for a
    /// moment (400 "does not exist"), which is retried for service-account members only.
    async fn bind(
        &self,
        project: &str,
        role: &str,
        member: &str,
        c: Expr,
    ) -> Result<bool, GcpError> {
        let b = self.config.binding_retry;
        let mut waited = Duration::ZERO;
        let mut attempt = 1;
        loop {
            let edit = PolicyEdit::Grant {
                role: role.into(),
                member: member.into(),
                condition: c.clone(),
            };
            match self.writer.apply(project, edit).await {
                Ok(EditOutcome::Granted { changed }) => return Ok(changed),
                Ok(other) => {
                    return Err(GcpError::Unavailable(format!(
                        "unexpected policy outcome {other:?}"
                    )));
                }
                Err(e @ (GcpError::InvalidArgument(_) | GcpError::NotFound(_)))
                    if member.starts_with("serviceAccount:") =>
                {
                    match b.next(attempt, waited) {
                        Some(d) => {
                            tracing::info!(member, attempt, error = %e, "binding refused while IAM catches up; retrying");
                            tokio::time::sleep(d).await;
                            waited += d;
                            attempt += 1;
                        }
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes an account after a partial failure. Its keys die with it.
    async fn rollback(&self, project: &str, sa: &str) -> Option<String> {
        match self.client.delete_service_account(project, sa).await {
            Ok(()) => {
                tracing::info!(service_account = %sa, "rolled back: deleted service account");
                None
            }
            Err(e) if e.is_not_found() => None,
            Err(e) => {
                tracing::error!(service_account = %sa, error = %e, "Failed to delete service account during rollback; the sweep will remove it");
                Some(format!(
                    " (and deleting service account {sa} failed too; the hourly sweep removes it)"
                ))
            }
        }
    }

    fn key_creation_forbidden(project: &str, e: &GcpError) -> ProviderError {
        let constraint = match e {
            GcpError::FailedPrecondition { constraints, .. } if !constraints.is_empty() => {
                constraints.join(", ")
            }
            _ => "constraints/iam.disableServiceAccountKeyCreation".to_string(),
        };
        ProviderError::Permanent(format!(
            "Service-account key creation is not allowed in project \"{project}\": the organisation policy {constraint} forbids it. \
             Ask an administrator to switch this resource to mode = \"user_binding\" (no keys) or to exempt the project."
        ))
    }

    async fn grant_service_account(
        &self,
        req: &GrantRequest,
        s: &GcpIamSettings,
        p: &Plan<'_>,
    ) -> Result<GrantOutcome, ProviderError> {
        let Plan {
            email,
            now,
            expires_at,
            justification,
            granted_at,
        } = *p;
        let project = s.project.as_str();
        let local = email.split('@').next().unwrap_or(email);
        // The id recorded in the grant's intent, so every attempt of one grant names the same
        // account; a fresh id only without one (a re-request whose account vanished).
        let intended = req
            .intent
            .as_ref()
            .and_then(GcpGrantIntent::parse)
            .filter(|i| i.project == project && i.grant_id == req.grant_id)
            .and_then(|i| i.account_id);
        let (account_id, reversible) = match intended {
            Some(id) => {
                let reversible = naming::is_gatehouse_account_id(&id) && !id.contains("-x-");
                (id, reversible)
            }
            None => naming::account_id(local, now.timestamp()),
        };
        let marker = grant_marker(req.grant_id);
        let description = truncate_bytes(
            &format!(
                "{DESCRIPTION_MARKER} for {email} until {} {marker}. Justification: {justification}",
                rfc3339(expires_at)
            ),
            256,
        );
        let display = truncate_bytes(email, 100);
        let mut events = Vec::new();
        let mut adopted = false;

        let sa = match self
            .client
            .create_service_account(project, &account_id, &display, &description)
            .await
        {
            Ok(sa) => sa,
            Err(GcpError::AlreadyExists(_)) => {
                // A retried grant: adopt the account only if an earlier attempt of this very
                // grant created it (its description carries the grant id).
                let existing = naming::service_account_email(&account_id, project);
                match self.client.get_service_account(project, &existing).await {
                    Ok(sa)
                        if sa.display_name == display
                            && sa.description.starts_with(DESCRIPTION_MARKER)
                            && sa.description.contains(&marker) =>
                    {
                        adopted = true;
                        sa
                    }
                    _ => {
                        return Err(ProviderError::Transient(format!(
                            "Failed to create service account: {account_id} already exists in project {project}"
                        )));
                    }
                }
            }
            Err(e) if e.is_quota() => {
                tracing::error!(project, error = %e, "Failed to create service account: quota");
                return Err(ProviderError::Permanent(format!(
                    "Failed to create service account: project \"{project}\" has reached its service-account quota (100 by default, system accounts included). \
                     Expired grants are removed by the hourly sweep; ask an administrator if this persists."
                )));
            }
            Err(e) => {
                tracing::error!(project, error = %e, "Failed to create service account");
                return Err(e.into_provider("Failed to create service account"));
            }
        };
        tracing::info!(service_account = %sa.email, user = %email, reversible, "Created service account");
        events.push(event(
            "service_account_created",
            json!({"service_account_email": sa.email, "project_id": project, "user_email": email, "reversible_name": reversible}),
        ));

        let key = match self.create_key_with_backoff(project, &sa.email).await {
            Ok(k) => k,
            Err(e) => {
                let rb = self.rollback(project, &sa.email).await.unwrap_or_default();
                tracing::error!(service_account = %sa.email, error = %e, "Failed to generate service account key");
                return Err(match e {
                    GcpError::FailedPrecondition { .. } => {
                        Self::key_creation_forbidden(project, &e)
                    }
                    e => {
                        let mut pe = e.into_provider("Failed to generate service account key");
                        if let ProviderError::Transient(m) | ProviderError::Permanent(m) = &mut pe {
                            m.push_str(&rb);
                        }
                        pe
                    }
                });
            }
        };
        let key_id = key.name.rsplit('/').next().unwrap_or_default().to_string();
        tracing::info!(service_account = %sa.email, key_id, "Created key for service account");
        events.push(event(
            "service_account_key_created",
            json!({"service_account_email": sa.email, "key_id": key_id}),
        ));
        if adopted {
            // The earlier attempt's key was never handed out (its answer was lost): delete it, so
            // the account holds only the key this grant delivers.
            let deleted = self.prune_keys(project, &sa.email, 1, Some(&key_id)).await;
            if !deleted.is_empty() {
                events.push(event(
                    "service_account_keys_deleted",
                    json!({"service_account_email": sa.email, "key_ids": deleted, "reason": "retried grant"}),
                ));
            }
        }

        let member = format!("serviceAccount:{}", sa.email);
        let cond = condition::temp_access(expires_at, justification);
        if let Err(e) = self.bind(project, &s.role, &member, cond).await {
            let rb = self.rollback(project, &sa.email).await.unwrap_or_default();
            tracing::error!(service_account = %sa.email, error = %e, "Failed to grant GCP IAM access");
            let mut pe = e.into_provider("Failed to grant GCP IAM access");
            if let ProviderError::Transient(m) | ProviderError::Permanent(m) = &mut pe {
                m.push_str(&rb);
            }
            return Err(pe);
        }
        tracing::info!(service_account = %sa.email, user = %email, role = %s.role, expires_at = %rfc3339(expires_at),
            "Granted GCP IAM access to service account");
        events.push(event(
            "iam_binding_added",
            json!({"member": member, "role": s.role, "project_id": project, "expires_at": rfc3339(expires_at),
                   "condition_title": TITLE, "justification": justification, "service_account_email": sa.email,
                   "user_email": email}),
        ));

        let handle = GcpGrantHandle {
            mode: AccessMode::ServiceAccountKey,
            project: project.into(),
            role: s.role.clone(),
            member,
            user_email: email.into(),
            service_account_email: Some(sa.email.clone()),
            granted_at,
            expires_at,
            justification: justification.into(),
            key_id: Some(key_id),
            dry_run: false,
            condition_title: TITLE.into(),
        };
        let instructions = self.message(req, s, &handle, now);
        Ok(GrantOutcome {
            handle: serde_json::to_value(&handle).unwrap_or_default(),
            instructions,
            secret: Some(self.secret(key.key_file, email, &sa.email, project, expires_at)),
            events,
            expires_at: Some(expires_at),
        })
    }

    /// Re-request while active: a new key for the same account, the expiry unchanged, keys
    /// beyond the newest `keep_keys` deleted.
    async fn regenerate_key(
        &self,
        req: &GrantRequest,
        s: &GcpIamSettings,
        mut h: GcpGrantHandle,
        now: DateTime<Utc>,
    ) -> Result<Option<GrantOutcome>, ProviderError> {
        let project = h.project.clone();
        let Some(sa) = h.service_account_email.clone() else {
            return Ok(None);
        };
        tracing::info!(user = %h.user_email, service_account = %sa, "user already has active access, regenerating key");
        let mut events = Vec::new();
        let key = match self.create_key_with_backoff(&project, &sa).await {
            Ok(k) => k,
            // The account is gone (deleted by hand, or by the sweep): start over, same expiry.
            Err(e) if e.is_not_found() => return Ok(None),
            // At the 10-keys limit: make room and try once more.
            Err(GcpError::FailedPrecondition { constraints, .. }) if constraints.is_empty() => {
                let deleted = self
                    .prune_keys(&project, &sa, self.config.keep_keys.saturating_sub(1), None)
                    .await;
                events.push(event(
                    "service_account_keys_deleted",
                    json!({"service_account_email": sa, "key_ids": deleted}),
                ));
                match self.client.create_key(&project, &sa).await {
                    Ok(k) => k,
                    Err(e @ GcpError::FailedPrecondition { .. }) => {
                        return Err(Self::key_creation_forbidden(&project, &e));
                    }
                    Err(e) => return Err(e.into_provider("Failed to generate service account key")),
                }
            }
            Err(e @ GcpError::FailedPrecondition { .. }) => {
                return Err(Self::key_creation_forbidden(&project, &e));
            }
            Err(e) => return Err(e.into_provider("Failed to generate service account key")),
        };
        let key_id = key.name.rsplit('/').next().unwrap_or_default().to_string();
        tracing::info!(service_account = %sa, key_id, "Created key for service account");
        events.push(event(
            "service_account_key_created",
            json!({"service_account_email": sa, "key_id": key_id, "regenerated": true}),
        ));
        let deleted = self
            .prune_keys(&project, &sa, self.config.keep_keys, Some(&key_id))
            .await;
        if !deleted.is_empty() {
            events.push(event(
                "service_account_keys_deleted",
                json!({"service_account_email": sa, "key_ids": deleted}),
            ));
        }
        // Self-heal a binding someone removed, with the original expiry (a no-op otherwise).
        let cond = condition::temp_access(h.expires_at, &h.justification);
        match self.bind(&project, &h.role, &h.member, cond).await {
            Ok(true) => events.push(event(
                "iam_binding_restored",
                json!({"member": h.member, "role": h.role, "project_id": project, "expires_at": rfc3339(h.expires_at)}),
            )),
            Ok(false) => {}
            Err(e) => return Err(e.into_provider("Failed to grant GCP IAM access")),
        }
        h.key_id = Some(key_id);
        let instructions = self.message(req, s, &h, now);
        let secret = self.secret(key.key_file, &h.user_email, &sa, &project, h.expires_at);
        Ok(Some(GrantOutcome {
            expires_at: Some(h.expires_at),
            handle: serde_json::to_value(&h).unwrap_or_default(),
            instructions,
            secret: Some(secret),
            events,
        }))
    }

    /// Deletes user-managed keys beyond the newest `keep` (always keeping `keep_id`). Returns the
    /// ids deleted; failures are logged, not fatal (the account's deletion removes them anyway).
    async fn prune_keys(
        &self,
        project: &str,
        sa: &str,
        keep: usize,
        keep_id: Option<&str>,
    ) -> Vec<String> {
        let mut keys = match self.client.list_user_keys(project, sa).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(service_account = %sa, error = %e, "could not list keys to prune");
                return vec![];
            }
        };
        let ts = |k: &crate::api::KeyInfo| {
            k.valid_after_time
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        };
        // Newest first; the key just handed out counts as the newest whatever the clocks say.
        keys.sort_by(|a, b| {
            let a_new = Some(a.id()) == keep_id;
            let b_new = Some(b.id()) == keep_id;
            b_new.cmp(&a_new).then_with(|| ts(b).cmp(&ts(a)))
        });
        let mut deleted = Vec::new();
        for k in keys.iter().skip(keep) {
            match self.client.delete_key(project, sa, k.id()).await {
                Ok(()) => deleted.push(k.id().to_string()),
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(service_account = %sa, key_id = k.id(), error = %e, "could not delete old key")
                }
            }
        }
        deleted
    }

    async fn grant_user(
        &self,
        req: &GrantRequest,
        s: &GcpIamSettings,
        p: &Plan<'_>,
    ) -> Result<GrantOutcome, ProviderError> {
        let Plan {
            email,
            now,
            expires_at,
            justification,
            granted_at,
        } = *p;
        let member = format!("user:{email}");
        let changed = self
            .bind(
                &s.project,
                &s.role,
                &member,
                condition::temp_access(expires_at, justification),
            )
            .await
            .map_err(|e| e.into_provider("Failed to grant GCP IAM access"))?;
        tracing::info!(user = %email, role = %s.role, project = %s.project, expires_at = %rfc3339(expires_at), changed, "Granted GCP IAM access to user");
        let handle = GcpGrantHandle {
            mode: AccessMode::UserBinding,
            project: s.project.clone(),
            role: s.role.clone(),
            member: member.clone(),
            user_email: email.into(),
            service_account_email: None,
            granted_at,
            expires_at,
            justification: justification.into(),
            key_id: None,
            dry_run: false,
            condition_title: TITLE.into(),
        };
        let events = if changed {
            vec![event(
                "iam_binding_added",
                json!({"member": member, "role": s.role, "project_id": s.project, "expires_at": rfc3339(expires_at),
                       "condition_title": TITLE, "justification": justification, "user_email": email}),
            )]
        } else {
            vec![]
        };
        Ok(GrantOutcome {
            instructions: self.message(req, s, &handle, now),
            handle: serde_json::to_value(&handle).unwrap_or_default(),
            secret: None,
            events,
            expires_at: Some(expires_at),
        })
    }

    fn grant_dry_run(&self, req: &GrantRequest, s: &GcpIamSettings, p: &Plan<'_>) -> GrantOutcome {
        let Plan {
            email,
            now,
            expires_at,
            justification,
            granted_at,
        } = *p;
        let project = s.project.as_str();
        let cond = condition::temp_access(expires_at, justification);
        let (member, sa) = match s.mode {
            AccessMode::ServiceAccountKey => {
                let sa = naming::dry_run_service_account_email(email, project);
                let (id, _) =
                    naming::account_id(email.split('@').next().unwrap_or(email), now.timestamp());
                tracing::info!(project, account_id = %id, user = %email, "DRY-RUN: Would create service account {sa}");
                tracing::info!(
                    project,
                    "DRY-RUN: Would create a key for service account {sa}"
                );
                (format!("serviceAccount:{sa}"), Some(sa))
            }
            AccessMode::UserBinding => (format!("user:{email}"), None),
        };
        tracing::info!(project, role = %s.role, expression = %cond.expression,
            "DRY-RUN: Would grant GCP IAM access to user {email} as {member} until {}", rfc3339(expires_at));
        let handle = GcpGrantHandle {
            mode: s.mode,
            project: project.into(),
            role: s.role.clone(),
            member: member.clone(),
            user_email: email.into(),
            service_account_email: sa.clone(),
            granted_at,
            expires_at,
            justification: justification.into(),
            key_id: None,
            dry_run: true,
            condition_title: TITLE.into(),
        };
        GrantOutcome {
            instructions: self.message(req, s, &handle, now),
            secret: sa.as_ref().map(|sa| {
                self.secret(
                    DRY_RUN_KEY.as_bytes().to_vec(),
                    email,
                    sa,
                    project,
                    expires_at,
                )
            }),
            events: vec![event(
                "dry_run_grant",
                json!({"member": member, "role": s.role, "project_id": project, "expires_at": rfc3339(expires_at),
                       "service_account_email": sa, "user_email": email, "justification": justification}),
            )],
            handle: serde_json::to_value(&handle).unwrap_or_default(),
            expires_at: Some(expires_at),
        }
    }

    // --------------------------------------------------------------------------------------
    // sweep

    /// The sweep for one resource (its project; dry-run if the resource says so).
    pub async fn sweep_resource(
        &self,
        resource: &Resource,
        now: DateTime<Utc>,
    ) -> Result<SweepReport, ProviderError> {
        let s = GcpIamSettings::of(resource)?;
        self.sweep_project(&s.project, now, self.dry_run(&s)).await
    }

    /// Removes `Temp Access` bindings that expired by `now` and deletes their service accounts,
    /// deletes Gatehouse accounts left without a binding for longer than the orphan age, and
    /// drops `deleted:serviceAccount:` members. Returns one event per repair for the audit
    /// trail. In dry-run mode it reads and reports but changes nothing.
    pub async fn sweep(
        &self,
        project: &str,
        now: DateTime<Utc>,
    ) -> Result<SweepReport, ProviderError> {
        self.sweep_project(project, now, self.config.dry_run).await
    }

    async fn sweep_project(
        &self,
        project: &str,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<SweepReport, ProviderError> {
        tracing::info!(project, dry_run, "Running GCP access cleanup");
        let mut report = SweepReport {
            project: project.into(),
            dry_run,
            ..Default::default()
        };
        let changes: SweepChanges = if dry_run {
            let mut p = self
                .client
                .get_iam_policy(project)
                .await
                .map_err(|e| e.into_provider("sweep: reading the policy"))?;
            match crate::policy::apply_edit(&mut p, &PolicyEdit::Sweep { now }) {
                EditOutcome::Swept(c) => c,
                _ => SweepChanges::default(),
            }
        } else {
            match self.writer.apply(project, PolicyEdit::Sweep { now }).await {
                Ok(EditOutcome::Swept(c)) => c,
                Ok(_) => SweepChanges::default(),
                Err(e) => return Err(e.into_provider("sweep: removing expired bindings")),
            }
        };
        let verb = if dry_run {
            "DRY-RUN: Would remove"
        } else {
            "Removed"
        };
        let sa_domain = format!("@{project}.iam.gserviceaccount.com");
        let mut to_delete: BTreeSet<String> = BTreeSet::new();
        for x in &changes.expired {
            tracing::info!(project, member = %x.member, role = %x.role, expires_at = %rfc3339(x.expires_at), "{verb} expired binding");
            report
                .expired_bindings
                .push((x.member.clone(), x.role.clone(), x.expires_at));
            report.events.push(event(
                "expired_binding_removed",
                json!({"project_id": project, "member": x.member, "role": x.role, "expires_at": rfc3339(x.expires_at), "dry_run": dry_run}),
            ));
            if let Some(email) = x.member.strip_prefix("serviceAccount:")
                && email.ends_with(&sa_domain)
                && naming::is_gatehouse_account_id(email.split('@').next().unwrap_or_default())
            {
                tracing::info!(project, service_account = %email, "Found expired service account");
                to_delete.insert(email.to_string());
            }
        }
        for (role, m) in &changes.dropped_deleted {
            tracing::info!(project, member = %m, role = %role, "{verb} deleted member");
            report.dropped_deleted_members.push(m.clone());
            report.events.push(event(
                "deleted_member_dropped",
                json!({"project_id": project, "member": m, "role": role, "dry_run": dry_run}),
            ));
        }

        // Orphans: Gatehouse accounts no binding mentions, older than the orphan age (younger
        // ones may be a grant between account creation and binding).
        let accounts = self
            .client
            .list_service_accounts(project)
            .await
            .map_err(|e| e.into_provider("sweep: listing service accounts"))?;
        let policy = if dry_run {
            None
        } else {
            Some(
                self.client
                    .get_iam_policy(project)
                    .await
                    .map_err(|e| e.into_provider("sweep: reading the policy"))?,
            )
        };
        let mut bound: BTreeSet<String> = BTreeSet::new();
        if let Some(p) = &policy {
            for b in &p.bindings {
                for m in &b.members {
                    if let Some(e) = m.strip_prefix("serviceAccount:") {
                        bound.insert(e.to_string());
                    }
                }
            }
        } else {
            // Dry run: the policy as it would be after the removals above.
            let mut p = self
                .client
                .get_iam_policy(project)
                .await
                .map_err(|e| e.into_provider("sweep: reading the policy"))?;
            let _ = crate::policy::apply_edit(&mut p, &PolicyEdit::Sweep { now });
            for b in &p.bindings {
                for m in &b.members {
                    if let Some(e) = m.strip_prefix("serviceAccount:") {
                        bound.insert(e.to_string());
                    }
                }
            }
        }
        let mut orphans: Vec<&ServiceAccount> = Vec::new();
        for sa in &accounts {
            let id = sa.email.split('@').next().unwrap_or_default();
            let ours = naming::is_gatehouse_account_id(id)
                && sa.description.starts_with(DESCRIPTION_MARKER);
            let old = naming::created_at(id).is_some_and(|t| now - t > self.config.orphan_min_age);
            if ours && old && !bound.contains(&sa.email) && !to_delete.contains(&sa.email) {
                orphans.push(sa);
            }
        }

        for email in &to_delete {
            if dry_run {
                tracing::info!(project, service_account = %email, "DRY-RUN: Would delete service account");
                report.deleted_service_accounts.push(email.clone());
                continue;
            }
            match self.client.delete_service_account(project, email).await {
                Ok(()) => {
                    tracing::info!(project, service_account = %email, "Deleted service account");
                    report.deleted_service_accounts.push(email.clone());
                    report.events.push(event(
                        "service_account_deleted",
                        json!({"project_id": project, "service_account_email": email, "reason": "expired"}),
                    ));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::error!(project, service_account = %email, error = %e, "Failed to delete service account");
                    report.errors.push(format!("deleting {email}: {e}"));
                }
            }
        }
        for sa in orphans {
            if dry_run {
                tracing::info!(project, service_account = %sa.email, "DRY-RUN: Would delete orphaned service account");
                report.orphaned_service_accounts.push(sa.email.clone());
                continue;
            }
            match self.client.delete_service_account(project, &sa.email).await {
                Ok(()) => {
                    tracing::info!(project, service_account = %sa.email, "Deleted orphaned service account");
                    report.orphaned_service_accounts.push(sa.email.clone());
                    report.events.push(event(
                        "orphaned_service_account_deleted",
                        json!({"project_id": project, "service_account_email": sa.email, "display_name": sa.display_name}),
                    ));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::error!(project, service_account = %sa.email, error = %e, "Failed to delete service account");
                    report
                        .errors
                        .push(format!("deleting orphan {}: {e}", sa.email));
                }
            }
        }
        Ok(report)
    }
}

#[async_trait]
impl Provider for GcpIamProvider {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    async fn grant(&self, req: &GrantRequest) -> Result<GrantOutcome, ProviderError> {
        let s = GcpIamSettings::of(&req.resource)?;
        let email = Self::email_of(req, &s)?;
        let now = self.clock.now().trunc_subsecs(0);
        // The condition works in whole seconds; the grant's stored expiry must match it.
        let expires_at = req.expires_at.trunc_subsecs(0);
        if expires_at <= now {
            return Err(ProviderError::Permanent(
                "the requested expiry is already in the past".into(),
            ));
        }
        let justification = req.justification.as_str();
        let existing: Option<GcpGrantHandle> = req
            .existing
            .as_ref()
            .and_then(|v| serde_json::from_value::<GcpGrantHandle>(v.clone()).ok())
            .filter(|h| {
                h.project == s.project && h.role == s.role && h.mode == s.mode && h.expires_at > now
            });

        // A live grant being re-requested keeps its expiry and justification.
        let (exp, j, granted) = match &existing {
            Some(h) => (h.expires_at, h.justification.clone(), h.granted_at),
            None => (expires_at, justification.to_string(), now),
        };
        let plan = Plan {
            email: &email,
            now,
            expires_at: exp,
            justification: &j,
            granted_at: granted,
        };
        if self.dry_run(&s) {
            return Ok(self.grant_dry_run(req, &s, &plan));
        }
        match (s.mode, existing) {
            (AccessMode::ServiceAccountKey, Some(h)) if !h.dry_run => {
                let (role, old_member) = (h.role.clone(), h.member.clone());
                match self.regenerate_key(req, &s, h, now).await? {
                    Some(outcome) => Ok(outcome),
                    None => {
                        // The account is gone: its binding (now a `deleted:` member) goes too.
                        if let Err(e) = self
                            .writer
                            .apply(
                                &s.project,
                                PolicyEdit::Revoke {
                                    role,
                                    member: old_member,
                                },
                            )
                            .await
                        {
                            tracing::warn!(error = %e, "could not remove the vanished account's binding; the sweep will");
                        }
                        self.grant_service_account(req, &s, &plan).await
                    }
                }
            }
            (AccessMode::ServiceAccountKey, _) => {
                let fresh = Plan {
                    expires_at,
                    justification,
                    granted_at: now,
                    ..plan
                };
                self.grant_service_account(req, &s, &fresh).await
            }
            (AccessMode::UserBinding, Some(h)) if !h.dry_run => {
                self.grant_user(req, &s, &plan).await
            }
            (AccessMode::UserBinding, _) => {
                let fresh = Plan {
                    expires_at,
                    justification,
                    granted_at: now,
                    ..plan
                };
                self.grant_user(req, &s, &fresh).await
            }
        }
    }

    async fn intent(&self, req: &GrantRequest) -> Result<serde_json::Value, ProviderError> {
        let s = GcpIamSettings::of(&req.resource)?;
        let email = Self::email_of(req, &s)?;
        let now = self.clock.now().trunc_subsecs(0);
        let (account_id, sa, member) = match s.mode {
            AccessMode::ServiceAccountKey => {
                let local = email.split('@').next().unwrap_or(&email);
                let (id, _) = naming::account_id(local, now.timestamp());
                let sa = naming::service_account_email(&id, &s.project);
                let member = format!("serviceAccount:{sa}");
                (Some(id), Some(sa), member)
            }
            AccessMode::UserBinding => (None, None, format!("user:{email}")),
        };
        let intent = GcpGrantIntent {
            grant_id: req.grant_id,
            mode: s.mode,
            project: s.project.clone(),
            role: s.role.clone(),
            member,
            user_email: email,
            account_id,
            service_account_email: sa,
            dry_run: self.dry_run(&s),
        };
        Ok(serde_json::to_value(&intent).unwrap_or_default())
    }

    fn reissues_on_request(&self, resource: &Resource) -> bool {
        GcpIamSettings::of(resource).is_ok_and(|s| s.mode == AccessMode::ServiceAccountKey)
    }

    async fn revoke(&self, req: &RevokeRequest) -> Result<RevokeOutcome, ProviderError> {
        if req.handle.is_null() {
            // The grant call never answered: remove what its intent names (or nothing). Never a
            // permanent error, which would keep the revocation retrying for ever.
            let Some(i) = GcpGrantIntent::parse(&req.intent) else {
                return Ok(RevokeOutcome {
                    events: Vec::new(),
                    note: Some(
                        "no GCP grant handle or intent was recorded; nothing to remove".into(),
                    ),
                });
            };
            let h = GcpGrantHandle {
                mode: i.mode,
                project: i.project,
                role: i.role,
                member: i.member,
                user_email: i.user_email,
                service_account_email: i.service_account_email,
                granted_at: self.clock.now(),
                expires_at: self.clock.now(),
                justification: String::new(),
                key_id: None,
                dry_run: i.dry_run,
                condition_title: TITLE.into(),
            };
            return self.revoke_handle(req, h).await;
        }
        let h: GcpGrantHandle = serde_json::from_value(req.handle.clone())
            .map_err(|e| ProviderError::Permanent(format!("not a gcp-iam grant handle: {e}")))?;
        self.revoke_handle(req, h).await
    }

    async fn observe(&self, resource: &Resource) -> Result<Vec<LiveAccess>, ProviderError> {
        let s = GcpIamSettings::of(resource)?;
        if self.dry_run(&s) {
            return Ok(vec![]);
        }
        let policy = self
            .client
            .get_iam_policy(&s.project)
            .await
            .map_err(|e| e.into_provider("reading the IAM policy"))?;
        let now = self.clock.now();
        let domain = s.domain();
        let mut display_names: Option<HashMap<String, String>> = None;
        let mut out = Vec::new();
        for b in policy
            .bindings
            .iter()
            .filter(|b| b.role == s.role && condition::is_temp_access(b.condition.as_ref()))
        {
            let expires_at = b
                .condition
                .as_ref()
                .and_then(|c| condition::parse_expiry(&c.expression));
            for m in &b.members {
                let (holder, sa) = if let Some(email) = m.strip_prefix("user:") {
                    (email.to_string(), None)
                } else if let Some(sa) = m.strip_prefix("serviceAccount:") {
                    let holder =
                        match naming::user_email_from_service_account(sa, domain.as_deref()) {
                            Some(u) => u,
                            None => {
                                // The display-name fallback: one listing for all such accounts.
                                if display_names.is_none() {
                                    let list = self
                                        .client
                                        .list_service_accounts(&s.project)
                                        .await
                                        .unwrap_or_default();
                                    display_names = Some(
                                        list.into_iter()
                                            .map(|a| (a.email, a.display_name))
                                            .collect(),
                                    );
                                }
                                display_names
                                    .as_ref()
                                    .and_then(|d| d.get(sa).cloned())
                                    .unwrap_or_else(|| sa.to_string())
                            }
                        };
                    (holder, Some(sa.to_string()))
                } else {
                    (m.clone(), None)
                };
                out.push(LiveAccess {
                    holder,
                    details: json!({
                        "member": m, "role": b.role, "project_id": s.project,
                        "service_account_email": sa,
                        "expires_at": expires_at.map(rfc3339),
                        "expired": expires_at.is_some_and(|e| e <= now),
                    }),
                });
            }
        }
        Ok(out)
    }

    fn refuses_subject(&self, resource: &Resource, subject: &Subject) -> Option<String> {
        // Same rule and message as provisioning (`email_of`), so the answer does not depend on
        // whether an approver was asked first. Unparseable settings are `validate`'s business.
        let s = GcpIamSettings::of(resource).ok()?;
        let domain = s.domain()?;
        match subject.email.as_ref() {
            Some(e) if e.domain() == domain => None,
            Some(_) => Some(format!("GCP access is only available to @{domain} accounts.")),
            None => Some(
                "Your Slack profile has no e-mail address; set one so GCP access can be granted to it.".into(),
            ),
        }
    }

    async fn validate(&self, resource: &Resource) -> Result<(), ProviderError> {
        let s = GcpIamSettings::of(resource)?;
        if self.dry_run(&s) {
            return Ok(());
        }
        self.client.get_iam_policy(&s.project).await.map(|_| ()).map_err(|e| match e {
            GcpError::PermissionDenied(m) => ProviderError::Permanent(format!(
                "resource {}: cannot read the IAM policy of project {} (permission denied, or the project does not exist): {m}",
                resource.id, s.project
            )),
            e => e.into_provider(&format!("resource {}: reading the IAM policy of project {}", resource.id, s.project)),
        })
    }
}

impl GcpIamProvider {
    /// Removes the binding and deletes the account a handle (or an intent) names.
    async fn revoke_handle(
        &self,
        req: &RevokeRequest,
        h: GcpGrantHandle,
    ) -> Result<RevokeOutcome, ProviderError> {
        let dry_run = h.dry_run
            || self.config.dry_run
            || GcpIamSettings::of(&req.resource).is_ok_and(|s| s.dry_run);
        if dry_run {
            tracing::info!(project = %h.project, role = %h.role, "DRY-RUN: Would revoke GCP IAM access of user {} ({})", h.user_email, h.member);
            if let Some(sa) = &h.service_account_email {
                tracing::info!(project = %h.project, "DRY-RUN: Would delete service account {sa}");
            }
            return Ok(RevokeOutcome {
                events: vec![event(
                    "dry_run_revoke",
                    json!({"member": h.member, "project_id": h.project, "role": h.role}),
                )],
                note: Some("dry run: nothing was changed".into()),
            });
        }
        let mut events = Vec::new();
        let mut gone = Vec::new();
        let removed = match self
            .writer
            .apply(
                &h.project,
                PolicyEdit::Revoke {
                    role: h.role.clone(),
                    member: h.member.clone(),
                },
            )
            .await
        {
            Ok(EditOutcome::Revoked { removed }) => removed,
            Ok(_) => false,
            Err(e) => return Err(e.into_provider("Failed to remove the IAM binding")),
        };
        if removed {
            tracing::info!(project = %h.project, member = %h.member, role = %h.role, "Removed IAM binding");
            events.push(event(
                "iam_binding_removed",
                json!({"member": h.member, "role": h.role, "project_id": h.project}),
            ));
        } else {
            gone.push("the binding was already gone");
        }
        if let Some(sa) = &h.service_account_email {
            match self.client.delete_service_account(&h.project, sa).await {
                Ok(()) => {
                    tracing::info!(project = %h.project, service_account = %sa, "Deleted service account");
                    events.push(event(
                        "service_account_deleted",
                        json!({"service_account_email": sa, "project_id": h.project, "reason": "revoked"}),
                    ));
                }
                Err(e) if e.is_not_found() => gone.push("the service account was already deleted"),
                Err(e) => {
                    tracing::error!(project = %h.project, service_account = %sa, error = %e, "Failed to delete service account");
                    return Err(e.into_provider("Failed to delete service account"));
                }
            }
        }
        Ok(RevokeOutcome {
            events,
            note: (!gone.is_empty()).then(|| gone.join("; ")),
        })
    }
}
