//! Providers: what they are asked to grant and revoke, what they answer, which kind each
//! resource names ([`ProviderKind`]), and how a provider decodes what the engine stores for it
//! (settings once per resource, grant handles and intents with their decode errors surfaced).

use std::collections::HashMap;
use std::fmt::{self, Debug};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::{GrantId, RequestId, ResourceId};
use crate::notification::DeliveredSecret;
use crate::resource::Resource;
use crate::subject::Subject;

mod kind;
pub use kind::{ProviderKind, ProviderKindError};

/// What a provider is asked to grant.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    /// The grant being provisioned; its handle and intent are keyed by it.
    pub grant_id: GrantId,
    /// The request the grant answers.
    pub request_id: RequestId,
    /// Who gets the access.
    pub subject: Subject,
    /// What they get, with its provider settings.
    pub resource: Resource,
    /// When the access ends (providers with their own expiry, like IAM conditions, use it).
    pub expires_at: DateTime<Utc>,
    /// Why the person asked, as they typed it.
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
    /// What happened (`user_created`, …): stable, searched for in the audit trail.
    pub name: String,
    /// The provider's ids and names for it.
    pub details: serde_json::Value,
}

/// What a successful grant call answers.
#[derive(Debug)]
pub struct GrantOutcome {
    /// What the provider needs to revoke exactly this grant later. Never a secret.
    pub handle: serde_json::Value,
    /// How to use the access, shown to the person.
    pub instructions: String,
    /// Delivered once to the person, never stored.
    pub secret: Option<DeliveredSecret>,
    /// What the provider changed, for the audit trail.
    pub events: Vec<ProviderEvent>,
    /// Some providers pin the expiry (a re-request that regenerates a key keeps the old one).
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a provider is asked to take back.
#[derive(Debug, Clone)]
pub struct RevokeRequest {
    /// The grant ending.
    pub grant_id: GrantId,
    /// Who held it.
    pub subject: Subject,
    /// What they held (a retired resource too: its grants still end through its provider).
    pub resource: Resource,
    /// What the grant reported it added; null when the grant call never answered.
    pub handle: serde_json::Value,
    /// The grant's recorded intent (null when provisioning never started): with a null handle,
    /// what to look for and remove.
    pub intent: serde_json::Value,
}

/// What a successful revoke call answers.
#[derive(Debug, Default)]
pub struct RevokeOutcome {
    /// What the provider changed, for the audit trail.
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

impl GrantRequest {
    /// The live grant's handle, decoded into the provider's own type; `None` when there is none.
    pub fn existing_handle<T: DeserializeOwned>(&self) -> Result<Option<T>, ProviderError> {
        self.existing
            .as_ref()
            .map_or(Ok(None), |v| decode_stored("grant handle", v))
    }

    /// The recorded intent, decoded into the provider's own type; `None` when there is none.
    pub fn recorded_intent<T: DeserializeOwned>(&self) -> Result<Option<T>, ProviderError> {
        self.intent
            .as_ref()
            .map_or(Ok(None), |v| decode_stored("grant intent", v))
    }
}

impl RevokeRequest {
    /// The grant's handle, decoded into the provider's own type; `None` when the grant call
    /// never answered (a null handle).
    pub fn recorded_handle<T: DeserializeOwned>(&self) -> Result<Option<T>, ProviderError> {
        decode_stored("grant handle", &self.handle)
    }

    /// The grant's recorded intent, decoded into the provider's own type; `None` when
    /// provisioning never started (a null intent).
    pub fn recorded_intent<T: DeserializeOwned>(&self) -> Result<Option<T>, ProviderError> {
        decode_stored("grant intent", &self.intent)
    }

    /// The handle a revoke works from. A handle that does not decode is logged as an error and
    /// treated as none, so the revoke goes on by the intent ([`Self::intent_for_cleanup`]): a
    /// revocation is never held back (retried for ever) by a stored value it can work around.
    pub fn handle_for_revoke<T: DeserializeOwned>(&self) -> Option<T> {
        self.recorded_handle()
            .inspect_err(|e| {
                tracing::error!(grant = %self.grant_id, error = %e, "the recorded handle is not this provider's; revoking by the grant's intent");
            })
            .ok()
            .flatten()
    }

    /// The recorded intent for a revoke without a handle, which must not fail for good: an
    /// intent that does not decode is logged as an error and treated as none.
    pub fn intent_for_cleanup<T: DeserializeOwned>(&self) -> Option<T> {
        self.recorded_intent()
            .inspect_err(|e| {
                tracing::error!(grant = %self.grant_id, error = %e, "the recorded intent is not this provider's; nothing is removed by it");
            })
            .ok()
            .flatten()
    }
}

/// Decodes JSON the engine stored for a provider (a handle, an intent): null is `None`, anything
/// that is not the provider's type is [`ProviderError::Undecodable`], never silently ignored.
pub fn decode_stored<T: DeserializeOwned>(
    what: &'static str,
    value: &serde_json::Value,
) -> Result<Option<T>, ProviderError> {
    if value.is_null() {
        return Ok(None);
    }
    T::deserialize(value)
        .map(Some)
        .map_err(|source| ProviderError::Undecodable { what, source })
}

/// A boxed underlying error, kept as the `source` of a [`ProviderError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a provider call failed. The engine retries [`ProviderError::Transient`] and fails the
/// request with the text of any other.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying (timeouts, 5xx, rate limits, eventual consistency).
    #[error("temporary provider failure: {message}")]
    Transient {
        /// What failed, with enough context for an operator.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// Retrying will not help (permission denied, organisation policy, bad settings). The message
    /// is shown to the person.
    #[error("{message}")]
    Permanent {
        /// What the person is told.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A resource's provider settings are not what the provider expects (checked at start).
    #[error("{message}")]
    InvalidSettings {
        /// Which resource and what is wrong, as shown to the operator.
        message: String,
        /// The decode error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// JSON stored for a grant (its handle or intent) is not the provider's: a bug or a damaged
    /// row, surfaced rather than treated as "nothing recorded".
    #[error("the stored {what} does not decode: {source}")]
    Undecodable {
        /// `grant handle` or `grant intent`.
        what: &'static str,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// The provider does not implement this optional call.
    #[error("this provider does not support {0}")]
    Unsupported(&'static str),
}

impl ProviderError {
    /// A failure worth retrying, without an underlying error.
    pub fn transient(message: impl Into<String>) -> Self {
        ProviderError::Transient {
            message: message.into(),
            source: None,
        }
    }

    /// A failure retrying will not fix, without an underlying error; `message` is shown to the
    /// person.
    pub fn permanent(message: impl Into<String>) -> Self {
        ProviderError::Permanent {
            message: message.into(),
            source: None,
        }
    }

    /// Settings that do not fit the provider, without an underlying error.
    pub fn invalid_settings(message: impl Into<String>) -> Self {
        ProviderError::InvalidSettings {
            message: message.into(),
            source: None,
        }
    }

    /// The same error, keeping `source` as its cause (a no-op for variants without one).
    pub fn with_source(mut self, e: impl Into<BoxError>) -> Self {
        match &mut self {
            ProviderError::Transient { source, .. }
            | ProviderError::Permanent { source, .. }
            | ProviderError::InvalidSettings { source, .. } => *source = Some(e.into()),
            ProviderError::Undecodable { .. } | ProviderError::Unsupported(_) => {}
        }
        self
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, ProviderError::Transient { .. })
    }

    /// A stable name for the kind of failure, for metrics, logs and API answers.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Transient { .. } => "provider_transient",
            ProviderError::Permanent { .. } => "provider_permanent",
            ProviderError::InvalidSettings { .. } => "provider_invalid_settings",
            ProviderError::Undecodable { .. } => "provider_undecodable",
            ProviderError::Unsupported(_) => "provider_unsupported",
        }
    }
}

/// Each resource's provider settings decoded once into the provider's own type `T`: filled by
/// [`Provider::validate`] at start-up (or the first call), served from memory afterwards. An
/// entry is decoded again only if the resource's raw settings change (a reloaded
/// configuration).
pub struct SettingsCache<T> {
    decoded: RwLock<HashMap<ResourceId, (serde_json::Value, Arc<T>)>>,
}

impl<T> Default for SettingsCache<T> {
    fn default() -> Self {
        Self {
            decoded: RwLock::new(HashMap::new()),
        }
    }
}

impl<T> Debug for SettingsCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.decoded.read().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("SettingsCache")
            .field("resources", &n)
            .finish()
    }
}

impl<T> SettingsCache<T> {
    /// The decoded settings of `resource`, decoding them with `decode` if they are not known yet.
    pub fn get<E>(
        &self,
        resource: &Resource,
        decode: impl FnOnce(&Resource) -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        {
            let map = self.decoded.read().unwrap_or_else(|p| p.into_inner());
            if let Some((raw, s)) = map.get(&resource.id) {
                if *raw == resource.settings {
                    return Ok(s.clone());
                }
            }
        }
        let s = Arc::new(decode(resource)?);
        self.decoded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(resource.id.clone(), (resource.settings.clone(), s.clone()));
        Ok(s)
    }

    /// Decodes the settings of every resource of `kind` among `resources` now (at start-up), so
    /// a bad one is reported before anything is granted.
    pub fn load<'r, E>(
        &self,
        kind: &ProviderKind,
        resources: impl IntoIterator<Item = &'r Resource>,
        decode: impl Fn(&Resource) -> Result<T, E>,
    ) -> Result<(), E> {
        for r in resources.into_iter().filter(|r| r.provider == *kind) {
            self.get(r, &decode)?;
        }
        Ok(())
    }
}

/// Grants and revokes access at one kind of backend. Calls MUST be idempotent: a job that ran
/// halfway before a crash runs again from the start.
#[async_trait]
pub trait Provider: Send + Sync + Debug + 'static {
    /// The `provider = "…"` kind resources name.
    fn kind(&self) -> ProviderKind;

    /// What `grant` is about to add for `req.grant_id`, observed before anything is changed. The
    /// engine commits it to the grant row before the first `grant` call and hands it back (in
    /// [`GrantRequest::intent`] and [`RevokeRequest::intent`]) on every retry and revoke, so a
    /// retry adopts its own earlier work and a revoke without a handle knows what to remove.
    /// Never a secret. Default: just the grant id (providers with nothing to observe).
    async fn intent(&self, req: &GrantRequest) -> Result<serde_json::Value, ProviderError> {
        Ok(serde_json::json!({"grant_id": req.grant_id}))
    }

    /// Gives `req.subject` the access `req.resource` describes until `req.expires_at`.
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
