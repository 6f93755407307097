//! Provider-wide configuration ([`GcpIamConfig`]): API endpoints, dry-run, retry schedules,
//! key and orphan limits.

use crate::api::{DEFAULT_CRM_URL, DEFAULT_IAM_URL};
use crate::retry::{self, Backoff};

/// Provider-wide configuration (per-resource settings are in [`GcpIamSettings`](crate::GcpIamSettings)).
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
            key_retry: retry::KEY_CREATION,
            binding_retry: retry::KEY_CREATION.with_max_attempts(5),
            policy_retry: retry::POLICY_WRITE,
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
