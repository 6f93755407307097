//! Built-in adapters that need no outside service: the dry-run provider (so the whole lifecycle
//! runs on a laptop with no cloud account) and a notifier that only logs.

use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ids::GrantId;
use crate::notification::{DeliveredSecret, MessageRef, Notification, RequestSummary};
use crate::ports::{
    GrantOutcome, GrantRequest, Notifier, NotifyContext, NotifyError, Provider, ProviderError,
    ProviderEvent, ProviderKind, RevokeOutcome, RevokeRequest,
};

/// One thing the dry-run provider would have done.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryRunAction {
    /// `grant` or `revoke`.
    pub action: &'static str,
    /// The grant it was for.
    pub grant_id: GrantId,
    /// Who would hold the access (the person's e-mail, else their user id).
    pub user: String,
    /// The resource.
    pub resource: String,
    /// When the access would end (grants only).
    pub expires_at: Option<DateTime<Utc>>,
}

/// Logs and records what it would grant or revoke, and succeeds.
#[derive(Debug, Default)]
pub struct DryRunProvider {
    actions: Mutex<Vec<DryRunAction>>,
}

impl DryRunProvider {
    /// The `provider = "…"` name it is registered under.
    pub const KIND: &'static str = "dry-run";

    /// A provider that has done nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything done so far, oldest first.
    pub fn actions(&self) -> Vec<DryRunAction> {
        self.actions.lock().map(|a| a.clone()).unwrap_or_default()
    }

    fn record(&self, a: DryRunAction) {
        if let Ok(mut v) = self.actions.lock() {
            v.push(a);
        }
    }
}

#[async_trait]
impl Provider for DryRunProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::DryRun
    }

    async fn grant(&self, req: &GrantRequest) -> Result<GrantOutcome, ProviderError> {
        tracing::info!(
            grant = %req.grant_id, user = %req.subject.user_id, resource = %req.resource.id,
            expires_at = %req.expires_at, "DRY-RUN: would grant access"
        );
        self.record(DryRunAction {
            action: "grant",
            grant_id: req.grant_id,
            user: req.subject.user_id.clone(),
            resource: req.resource.id.to_string(),
            expires_at: Some(req.expires_at),
        });
        Ok(GrantOutcome {
            handle: serde_json::json!({"dry_run": true, "grant_id": req.grant_id}),
            instructions: format!(
                "This is a dry run: nothing was changed anywhere. Real access to {} would end at {}.",
                req.resource.id,
                req.expires_at.format("%Y-%m-%d %H:%M UTC")
            ),
            secret: None,
            events: vec![ProviderEvent {
                name: "dry_run_grant".into(),
                details: serde_json::json!({"would_grant": req.resource.id.as_str()}),
            }],
            expires_at: None,
        })
    }

    async fn revoke(&self, req: &RevokeRequest) -> Result<RevokeOutcome, ProviderError> {
        tracing::info!(grant = %req.grant_id, user = %req.subject.user_id, resource = %req.resource.id, "DRY-RUN: would revoke access");
        self.record(DryRunAction {
            action: "revoke",
            grant_id: req.grant_id,
            user: req.subject.user_id.clone(),
            resource: req.resource.id.to_string(),
            expires_at: None,
        });
        Ok(RevokeOutcome {
            events: vec![],
            note: Some("dry run: nothing to remove".into()),
        })
    }
}

/// A notifier that writes what it would tell people to the log. Used when Slack is not set up.
#[derive(Debug, Default)]
pub struct LogNotifier;

#[async_trait]
impl Notifier for LogNotifier {
    async fn notify(
        &self,
        n: &Notification,
        _ctx: &NotifyContext,
    ) -> Result<Vec<MessageRef>, NotifyError> {
        tracing::info!(notification = n.name(), request = ?n.request_id(), "notify (no Slack configured)");
        Ok(vec![])
    }

    async fn deliver_secret(
        &self,
        request: &RequestSummary,
        secret: &DeliveredSecret,
    ) -> Result<(), NotifyError> {
        // The secret itself is never logged.
        tracing::warn!(request = %request.id, file = %secret.filename, "a secret could not be delivered: no Slack configured");
        Err(NotifyError::Permanent(
            "no notifier configured to deliver secrets".into(),
        ))
    }
}
