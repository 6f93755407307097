//! Per-resource settings (`[resources.settings]` in the configuration), the GCP document's
//! organisation-specific constants turned into configuration.

use access_core::Resource;
use access_core::ports::ProviderError;
use serde::{Deserialize, Serialize};

/// How access is granted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// The document's flow: a service account per grant, a key delivered to the person, the
    /// conditional binding on `serviceAccount:{email}`.
    #[default]
    ServiceAccountKey,
    /// The conditional binding on the person's own `user:{email}`: no account, no key (for
    /// organisations that forbid keys; Google JIT Access works this way).
    UserBinding,
}

/// Settings of a `provider = "gcp-iam"` resource.
///
/// ```toml
/// [resources.settings]
/// project = "openshift-crt-ephemeral-access"
/// role = "projects/openshift-crt-ephemeral-access/roles/chat_bot_user"
/// mode = "service_account_key"        # or "user_binding"
/// email_domain = "redhat.com"          # optional
/// resource_cleanup_days = 7            # optional, message only
/// dry_run = false                      # optional; GCP_ACCESS_DRY_RUN=true also works
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpIamSettings {
    /// Project whose policy gets the bindings (and that holds the service accounts).
    pub project: String,
    /// Predefined (`roles/…`) or custom role by full path (`projects/{p}/roles/{r}`,
    /// `organizations/{o}/roles/{r}`).
    pub role: String,
    #[serde(default)]
    pub mode: AccessMode,
    /// The organisation's e-mail domain: only these addresses are granted access, and service
    /// account names decode back to `{user}@{email_domain}`.
    #[serde(default)]
    pub email_domain: Option<String>,
    /// If the organisation deletes resources in the project after some days, say so in the
    /// success message.
    #[serde(default)]
    pub resource_cleanup_days: Option<u32>,
    #[serde(default)]
    pub dry_run: bool,
}

const BASIC_ROLES: [&str; 3] = ["roles/owner", "roles/editor", "roles/viewer"];

fn bad(msg: String) -> ProviderError {
    ProviderError::invalid_settings(msg)
}

fn valid_project_id(p: &str) -> bool {
    let b = p.as_bytes();
    (6..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

impl GcpIamSettings {
    /// Reads and checks a resource's settings.
    pub fn of(resource: &Resource) -> Result<Self, ProviderError> {
        let s: GcpIamSettings = serde_json::from_value(resource.settings.clone()).map_err(|e| {
            bad(format!(
                "resource {}: invalid gcp-iam settings: {e}",
                resource.id
            ))
            .with_source(e)
        })?;
        s.check()
            .map_err(|e| bad(format!("resource {}: {e}", resource.id)))?;
        Ok(s)
    }

    pub fn check(&self) -> Result<(), String> {
        if !valid_project_id(&self.project) {
            return Err(format!(
                "project {:?} is not a valid project id",
                self.project
            ));
        }
        let role = self.role.as_str();
        if BASIC_ROLES.contains(&role) {
            return Err(format!(
                "role {role} is a basic role: IAM conditions cannot be used with it"
            ));
        }
        let parts: Vec<&str> = role.split('/').collect();
        let ok = match parts.as_slice() {
            ["roles", r] => !r.is_empty(),
            ["projects", p, "roles", r] => {
                if *p != self.project {
                    return Err(format!(
                        "custom role {role} belongs to project {p}; a project-level custom role can only be granted in its own project ({})",
                        self.project
                    ));
                }
                !r.is_empty()
            }
            ["organizations", o, "roles", r] => !o.is_empty() && !r.is_empty(),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "role {role:?} must be roles/NAME or a custom role by full path (projects/PROJECT/roles/NAME)"
            ));
        }
        if let Some(d) = &self.email_domain
            && (d.trim_start_matches('@').is_empty() || !d.contains('.'))
        {
            return Err(format!("email_domain {d:?} is not a domain"));
        }
        Ok(())
    }

    /// The domain without a leading `@`, lower-cased.
    pub fn domain(&self) -> Option<String> {
        self.email_domain
            .as_deref()
            .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(role: &str) -> GcpIamSettings {
        GcpIamSettings {
            project: "openshift-crt-ephemeral-access".into(),
            role: role.into(),
            mode: AccessMode::default(),
            email_domain: Some("redhat.com".into()),
            resource_cleanup_days: None,
            dry_run: false,
        }
    }

    #[test]
    fn roles() {
        assert!(
            s("projects/openshift-crt-ephemeral-access/roles/chat_bot_user")
                .check()
                .is_ok()
        );
        assert!(s("roles/run.invoker").check().is_ok());
        assert!(s("roles/owner").check().unwrap_err().contains("basic role"));
        assert!(s("projects/other-project/roles/x").check().is_err());
        assert!(s("chat_bot_user").check().is_err());
        let parsed: GcpIamSettings =
            serde_json::from_value(serde_json::json!({"project": "my-project-1", "role": "roles/browser", "mode": "user_binding"})).unwrap();
        assert_eq!(parsed.mode, AccessMode::UserBinding);
        assert!(serde_json::from_value::<GcpIamSettings>(serde_json::json!({"project": "my-project-1", "role": "roles/browser", "dry_rn": true})).is_err());
    }
}
