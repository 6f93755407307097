//! [`GcpIamProvider`]: the `Provider` port on IAM + Resource Manager. This file holds the
//! provider's state and the steps grants share (binding, key creation, rollback, messages);
//! the grant flows are in `grants`, the port's calls in `port`, the sweep in `sweep`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use access_core::notification::DeliveredSecret;
use access_core::ports::{
    Clock, GrantOutcome, GrantRequest, LiveAccess, Provider, ProviderError, ProviderEvent,
    ProviderKind, RevokeOutcome, RevokeRequest, SettingsCache, SystemClock,
};
use access_core::{Resource, Subject};
use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use gcp_auth::{AccessTokenSource, AuthError, ServiceAccountTokenSource};
use serde_json::json;

use crate::api::{CreatedKey, Expr, GcpClient, ServiceAccount};
use crate::condition::{self, TITLE, rfc3339};
use crate::config::GcpIamConfig;
use crate::error::GcpError;
use crate::handle::{GcpGrantHandle, GcpGrantIntent, grant_marker};
use crate::messages::{GrantMessage, key_warning};
use crate::naming;
use crate::policy::{EditOutcome, PolicyEdit, PolicyWriter, SweepChanges};
use crate::settings::{AccessMode, GcpIamSettings};

mod grants;
mod port;
mod sweep;

pub use sweep::SweepReport;

/// Every Gatehouse service account's description starts with this; the sweep deletes only
/// accounts that carry it (and have a Gatehouse-shaped name).
pub const DESCRIPTION_MARKER: &str = "Gatehouse temporary access";

/// The document's mock key in dry-run mode.
pub const DRY_RUN_KEY: &str = r#"{"type":"service_account","project_id":"dry-run"}"#;

/// Temporary GCP access: service account + key + expiring conditional binding, or a conditional
/// binding on the person's own account.
pub struct GcpIamProvider {
    client: GcpClient,
    writer: PolicyWriter,
    config: GcpIamConfig,
    clock: Arc<dyn Clock>,
    /// Each resource's settings, decoded once.
    settings: SettingsCache<GcpIamSettings>,
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

/// The error with `note` (what a rollback did) added to the message the person sees.
fn with_note(mut e: ProviderError, note: &str) -> ProviderError {
    if let ProviderError::Transient { message, .. } | ProviderError::Permanent { message, .. } =
        &mut e
    {
        message.push_str(note);
    }
    e
}

fn truncate_bytes(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl GcpIamProvider {
    /// The kind resources name (`provider = "gcp-iam"`).
    pub const KIND: ProviderKind = ProviderKind::GcpIam;

    /// A provider calling the APIs `config` names with `tokens`.
    pub fn new(config: GcpIamConfig, tokens: Arc<dyn AccessTokenSource>) -> Result<Self, GcpError> {
        let client = GcpClient::new(tokens, &config.iam_url, &config.crm_url)?;
        let writer = PolicyWriter::new(client.clone(), config.policy_retry);
        Ok(Self {
            client,
            writer,
            config,
            clock: Arc::new(SystemClock),
            settings: SettingsCache::default(),
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
                return Err(ProviderError::permanent(format!(
                    "GCP access manager is not enabled: {e}"
                )));
            }
        };
        Self::new(config, tokens).map_err(|e| ProviderError::permanent(e.to_string()))
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

    /// Decodes the settings of `resources` (those of this provider) now, so a bad one stops the
    /// start instead of a grant; later calls use the decoded copies.
    pub fn load_settings<'r>(
        &self,
        resources: impl IntoIterator<Item = &'r Resource>,
    ) -> Result<(), ProviderError> {
        self.settings
            .load(&Self::KIND, resources, GcpIamSettings::of)
    }

    /// A resource's settings, decoded on first use and kept.
    fn settings(&self, resource: &Resource) -> Result<Arc<GcpIamSettings>, ProviderError> {
        self.settings.get(resource, GcpIamSettings::of)
    }

    fn dry_run(&self, s: &GcpIamSettings) -> bool {
        self.config.dry_run || s.dry_run
    }

    fn email_of(req: &GrantRequest, s: &GcpIamSettings) -> Result<String, ProviderError> {
        let email = req.subject.email.as_ref().ok_or_else(|| {
            ProviderError::permanent(
                "Your Slack profile has no e-mail address; set one so GCP access can be granted to it.",
            )
        })?;
        if let Some(domain) = s.domain()
            && email.domain() != domain
        {
            return Err(ProviderError::permanent(format!(
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
        ProviderError::permanent(format!(
            "Service-account key creation is not allowed in project \"{project}\": the organisation policy {constraint} forbids it. \
             Ask an administrator to switch this resource to mode = \"user_binding\" (no keys) or to exempt the project."
        ))
    }
}
