//! What a grant stores to be undone later ([`GcpGrantHandle`]) and what it records before it
//! changes anything ([`GcpGrantIntent`]). Both are stored as JSON by the engine; the tests pin it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::settings::AccessMode;

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

/// The marker a grant's account description carries, so its own account can be recognised.
pub(crate) fn grant_marker(grant_id: access_core::GrantId) -> String {
    format!("(grant {grant_id})")
}
