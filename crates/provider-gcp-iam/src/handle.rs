//! What a grant stores to be undone later ([`GcpGrantHandle`]) and what it records before it
//! changes anything ([`GcpGrantIntent`]). Both are stored as JSON by the engine; the tests pin it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::settings::AccessMode;

/// What the provider keeps to revoke (and re-issue) a grant. Never holds key material.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcpGrantHandle {
    /// How the access was granted.
    pub mode: AccessMode,
    /// The project whose policy holds the binding.
    pub project: String,
    /// The role bound.
    pub role: String,
    /// `serviceAccount:{email}` or `user:{email}`.
    pub member: String,
    /// The person's e-mail.
    pub user_email: String,
    #[serde(default)]
    /// Key mode: the account created for the grant.
    pub service_account_email: Option<String>,
    /// When the access was first granted (kept by a re-issued key).
    pub granted_at: DateTime<Utc>,
    /// When the IAM condition ends the access.
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    /// Why the person asked, as written into the condition.
    pub justification: String,
    /// Id of the newest key handed out (not secret: a key id is no credential).
    #[serde(default)]
    pub key_id: Option<String>,
    #[serde(default)]
    /// Nothing was changed at Google.
    pub dry_run: bool,
    /// The IAM condition's title (`Temp Access`).
    pub condition_title: String,
}

/// What a grant is about to create, recorded by the engine (keyed by the grant) before the first
/// grant call: the service account's id is fixed here, so a retried grant finds and adopts the
/// account its earlier attempt created (its description carries the grant id) instead of minting
/// a second one, and a revoke without a handle knows which account and binding to remove.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcpGrantIntent {
    /// The grant about to be provisioned.
    pub grant_id: access_core::GrantId,
    /// How the access will be granted.
    pub mode: AccessMode,
    /// The project whose policy will hold the binding.
    pub project: String,
    /// The role to bind.
    pub role: String,
    /// `serviceAccount:{email}` or `user:{email}`.
    pub member: String,
    /// The person's e-mail.
    pub user_email: String,
    /// Key mode: the account id this grant creates.
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    /// Key mode: that account's e-mail.
    pub service_account_email: Option<String>,
    #[serde(default)]
    /// Nothing will be changed at Google.
    pub dry_run: bool,
}

/// The marker a grant's account description carries, so its own account can be recognised.
pub(crate) fn grant_marker(grant_id: access_core::GrantId) -> String {
    format!("(grant {grant_id})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// The stored JSON of handles and intents does not change with the code around them.
    #[test]
    fn stored_json_is_pinned() {
        let handle = GcpGrantHandle {
            mode: AccessMode::ServiceAccountKey,
            project: "my-project-123".into(),
            role: "roles/browser".into(),
            member: "serviceAccount:jane-dot-doe-1@my-project-123.iam.gserviceaccount.com".into(),
            user_email: "jane.doe@example.com".into(),
            service_account_email: Some(
                "jane-dot-doe-1@my-project-123.iam.gserviceaccount.com".into(),
            ),
            granted_at: at("2026-01-02T03:04:05Z"),
            expires_at: at("2026-01-02T07:04:05Z"),
            justification: "why".into(),
            key_id: Some("k1".into()),
            dry_run: false,
            condition_title: "Temp Access".into(),
        };
        let json = serde_json::to_value(&handle).unwrap();
        assert_eq!(
            serde_json::to_string(&json).unwrap(),
            r#"{"condition_title":"Temp Access","dry_run":false,"expires_at":"2026-01-02T07:04:05Z","granted_at":"2026-01-02T03:04:05Z","justification":"why","key_id":"k1","member":"serviceAccount:jane-dot-doe-1@my-project-123.iam.gserviceaccount.com","mode":"service_account_key","project":"my-project-123","role":"roles/browser","service_account_email":"jane-dot-doe-1@my-project-123.iam.gserviceaccount.com","user_email":"jane.doe@example.com"}"#
        );
        assert_eq!(
            serde_json::from_value::<GcpGrantHandle>(json).unwrap(),
            handle
        );

        let intent = GcpGrantIntent {
            grant_id: serde_json::from_value(serde_json::json!(
                "00000000-0000-0000-0000-000000000001"
            ))
            .unwrap(),
            mode: AccessMode::UserBinding,
            project: "my-project-123".into(),
            role: "roles/browser".into(),
            member: "user:jane.doe@example.com".into(),
            user_email: "jane.doe@example.com".into(),
            account_id: None,
            service_account_email: None,
            dry_run: true,
        };
        assert_eq!(
            serde_json::to_string(&serde_json::to_value(&intent).unwrap()).unwrap(),
            r#"{"account_id":null,"dry_run":true,"grant_id":"00000000-0000-0000-0000-000000000001","member":"user:jane.doe@example.com","mode":"user_binding","project":"my-project-123","role":"roles/browser","service_account_email":null,"user_email":"jane.doe@example.com"}"#
        );
    }
}
