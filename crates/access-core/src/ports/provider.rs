//! Providers: what they are asked to grant and revoke, and what they answer.

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{GrantId, RequestId};
use crate::notification::DeliveredSecret;
use crate::resource::Resource;
use crate::subject::Subject;

/// What a provider is asked to grant.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub grant_id: GrantId,
    pub request_id: RequestId,
    pub subject: Subject,
    pub resource: Resource,
    pub expires_at: DateTime<Utc>,
    pub justification: String,
    /// The handle of the live grant being extended or re-requested, if any.
    pub existing: Option<serde_json::Value>,
    /// What [`Provider::intent`] said this grant is about to add, as recorded in the grant row
    /// before the first call. The same value on every retry, so a retry can tell its own earlier
    /// (landed but unanswered) work from access the person already had.
    pub intent: Option<serde_json::Value>,
}

/// A provider-side fact for the audit trail (`user_created`, `group_created`,
/// `user_added_to_group`, `service_account_created`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderEvent {
    pub name: String,
    pub details: serde_json::Value,
}

#[derive(Debug)]
pub struct GrantOutcome {
    /// What the provider needs to revoke exactly this grant later. Never a secret.
    pub handle: serde_json::Value,
    /// How to use the access, shown to the person.
    pub instructions: String,
    /// Delivered once to the person, never stored.
    pub secret: Option<DeliveredSecret>,
    pub events: Vec<ProviderEvent>,
    /// Some providers pin the expiry (a re-request that regenerates a key keeps the old one).
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct RevokeRequest {
    pub grant_id: GrantId,
    pub subject: Subject,
    pub resource: Resource,
    /// What the grant reported it added; null when the grant call never answered.
    pub handle: serde_json::Value,
    /// The grant's recorded intent (null when provisioning never started): with a null handle,
    /// what to look for and remove.
    pub intent: serde_json::Value,
}

#[derive(Debug, Default)]
pub struct RevokeOutcome {
    pub events: Vec<ProviderEvent>,
    /// e.g. "user was already deleted".
    pub note: Option<String>,
}

/// A grant the provider holds, as it sees it (for reconciliation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveAccess {
    /// Who holds it (provider's notion: e-mail, member string).
    pub holder: String,
    /// Provider-specific details.
    pub details: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying (timeouts, 5xx, rate limits, eventual consistency).
    #[error("temporary provider failure: {0}")]
    Transient(String),
    /// Retrying will not help (permission denied, organisation policy, bad settings). The message
    /// is shown to the person.
    #[error("{0}")]
    Permanent(String),
    #[error("this provider does not support {0}")]
    Unsupported(&'static str),
}

/// Grants and revokes access at one kind of backend. Calls MUST be idempotent: a job that ran
/// halfway before a crash runs again from the start.
#[async_trait]
pub trait Provider: Send + Sync + Debug + 'static {
    /// The `provider = "…"` name resources use.
    fn kind(&self) -> &'static str;

    /// What `grant` is about to add for `req.grant_id`, observed before anything is changed. The
    /// engine commits it to the grant row before the first `grant` call and hands it back (in
    /// [`GrantRequest::intent`] and [`RevokeRequest::intent`]) on every retry and revoke, so a
    /// retry adopts its own earlier work and a revoke without a handle knows what to remove.
    /// Never a secret. Default: just the grant id (providers with nothing to observe).
    async fn intent(&self, req: &GrantRequest) -> Result<serde_json::Value, ProviderError> {
        Ok(serde_json::json!({"grant_id": req.grant_id}))
    }

    async fn grant(&self, req: &GrantRequest) -> Result<GrantOutcome, ProviderError>;

    /// Undoes what the grant added. MUST succeed (not fail for good) when the handle is null:
    /// the grant call never answered, so remove what `intent` names, or nothing.
    async fn revoke(&self, req: &RevokeRequest) -> Result<RevokeOutcome, ProviderError>;

    /// Whether asking again for a live grant hands out something new without extending it
    /// (GCP's key mode issues a fresh key with the same expiry). Resources that cannot be
    /// extended accept such a re-request; for others it is refused.
    fn reissues_on_request(&self, _resource: &Resource) -> bool {
        false
    }

    /// What the backend currently grants for `resource`, for drift detection.
    async fn observe(&self, _resource: &Resource) -> Result<Vec<LiveAccess>, ProviderError> {
        Err(ProviderError::Unsupported("observe"))
    }

    /// Checks settings at start-up (e.g. the network exists). Default: nothing to check.
    async fn validate(&self, _resource: &Resource) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Why `subject` can never be granted `resource` by this provider (GCP's `email_domain`),
    /// shown to the person. Checked at submit, before any approver is asked, with the message
    /// provisioning would give; must be cheap and without I/O. Default: no such rule.
    fn refuses_subject(&self, _resource: &Resource, _subject: &Subject) -> Option<String> {
        None
    }

    /// Why `resource` cannot be requested right now, shown to the person (Cloud Connexa: "Network
    /// 'x' does not exist. …"); `None` when it can. Called for every `list` and `request`, so it
    /// must be cheap (cached). Default: always available.
    async fn unavailable_reason(
        &self,
        _resource: &Resource,
    ) -> Result<Option<String>, ProviderError> {
        Ok(None)
    }
}
