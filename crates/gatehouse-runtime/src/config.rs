//! Configuration: one TOML file for resources and policies, secrets from the environment.
//!
//! ```toml
//! [server]
//! approval_channel = "access-approvals"
//!
//! [[resources]]
//! id = "demo"
//! description = "Demo access on the dry-run provider"
//! provider = "dry-run"
//! default_duration = "1h"
//! min_duration = "1m"
//! max_duration = "8h"
//! eligibility = ["anyone"]
//! approval = { mode = "auto" }
//! ```

use std::path::Path;

use access_core::ResourceId;
use access_core::duration::{AccessDuration, BoundsError, DurationBounds};
use access_core::resource::{ApprovalPolicy, EligibilityRule, Resource};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("resource '{id}': {message}")]
    Resource { id: String, message: String },
    #[error("two resources are named '{0}'")]
    DuplicateResource(String),
    #[error("environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub database: DatabaseSection,
    #[serde(default)]
    pub resources: Vec<ResourceConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Where approval messages go when a resource names no channel (`APPROVAL_CHANNEL` overrides).
    #[serde(default)]
    pub approval_channel: Option<String>,
    /// Seconds a claimed job is reserved for its worker (default 120).
    #[serde(default)]
    pub job_lease_secs: Option<u64>,
    /// Longest a provider or notifier call may take before it counts as a failure (default 60).
    #[serde(default)]
    pub call_timeout_secs: Option<u64>,
    /// Longest the scheduler sleeps without checking the queue (default 30; jobs enqueued by this
    /// process wake it at once, this bounds the wait for jobs enqueued by other replicas).
    #[serde(default)]
    pub max_idle_secs: Option<u64>,
    /// How often the server reconciles with providers (GCP sweep, Cloud Connexa drift repair);
    /// default 3600.
    #[serde(default)]
    pub reconcile_interval_secs: Option<u64>,
    /// Write a signed audit checkpoint (log line, BigQuery export) after this many new events
    /// (default 1000) …
    #[serde(default)]
    pub audit_checkpoint_events: Option<u64>,
    /// … or this many seconds after the last one if any event was added since (default 300).
    #[serde(default)]
    pub audit_checkpoint_secs: Option<u64>,
}

/// `[database]`: session settings of the store's connections (the URL itself is a secret and
/// comes from `DATABASE_URL`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// PostgreSQL `statement_timeout` in seconds (default 30; 0 turns the limit off). A query
    /// that runs longer fails, so a hung one cannot stall commits behind the audit-head lock.
    #[serde(default)]
    pub statement_timeout_secs: Option<u64>,
}

impl DatabaseSection {
    /// The store's connection options for this section.
    pub fn store_options(&self) -> store_sqlx::StoreOptions {
        let statement_timeout = match self.statement_timeout_secs {
            None => Some(store_sqlx::DEFAULT_STATEMENT_TIMEOUT),
            Some(0) => None,
            Some(s) => Some(std::time::Duration::from_secs(s)),
        };
        store_sqlx::StoreOptions {
            statement_timeout,
            ..store_sqlx::StoreOptions::default()
        }
    }
}

/// One `[[resources]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    pub id: String,
    #[serde(default)]
    pub description: String,
    pub provider: String,
    #[serde(default)]
    pub settings: Option<toml::Table>,
    pub default_duration: Option<String>,
    pub min_duration: Option<String>,
    pub max_duration: Option<String>,
    #[serde(default)]
    pub eligibility: Vec<EligibilityRule>,
    pub approval: ApprovalPolicy,
    /// `None`: the provider's default (true, except GCP's service-account-key mode, whose IAM
    /// binding carries its end and cannot be lengthened).
    #[serde(default)]
    pub extendable: Option<bool>,
    /// Kept only so the grants it still has end through its provider: not listed, not
    /// requestable. Removing a resource that has live grants is refused at start; retire it
    /// instead, and remove it once its grants have ended.
    #[serde(default)]
    pub retired: bool,
    #[serde(default)]
    pub allow_guests: bool,
    #[serde(default)]
    pub allow_external: bool,
}

impl Config {
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::from_toml(&text, &p)
    }

    /// The resources people may ask for, parsed and checked (retired ones excluded).
    pub fn resources(&self) -> Result<Vec<Resource>, ConfigError> {
        Ok(self
            .all_resources()?
            .into_iter()
            .filter_map(|(r, retired)| (!retired).then_some(r))
            .collect())
    }

    /// The resources kept with `retired = true` (revocation only), parsed and checked.
    pub fn retired_resources(&self) -> Result<Vec<Resource>, ConfigError> {
        Ok(self
            .all_resources()?
            .into_iter()
            .filter_map(|(r, retired)| retired.then_some(r))
            .collect())
    }

    fn all_resources(&self) -> Result<Vec<(Resource, bool)>, ConfigError> {
        let mut out: Vec<(Resource, bool)> = Vec::new();
        for rc in &self.resources {
            let r = rc.to_resource()?;
            if out.iter().any(|(o, _)| o.id == r.id) {
                return Err(ConfigError::DuplicateResource(r.id.to_string()));
            }
            out.push((r, rc.retired));
        }
        Ok(out)
    }
}

impl ResourceConfig {
    pub fn to_resource(&self) -> Result<Resource, ConfigError> {
        let err = |message: String| ConfigError::Resource {
            id: self.id.clone(),
            message,
        };
        let id = ResourceId::parse(&self.id).map_err(|e| err(e.to_string()))?;
        let dur = |v: &Option<String>,
                   fallback: AccessDuration,
                   what: &str|
         -> Result<AccessDuration, ConfigError> {
            match v {
                Some(s) => s
                    .parse::<AccessDuration>()
                    .map_err(|e| err(format!("{what}: {e}"))),
                None => Ok(fallback),
            }
        };
        let min = dur(
            &self.min_duration,
            DurationBounds::DEFAULT_MIN,
            "min_duration",
        )?;
        let default_default = "4h"
            .parse::<AccessDuration>()
            .map_err(|e| err(e.to_string()))?;
        let default = dur(&self.default_duration, default_default, "default_duration")?;
        let max = dur(&self.max_duration, default.max(min), "max_duration")?;
        let durations =
            DurationBounds::new(default, min, max).map_err(|e: BoundsError| err(e.to_string()))?;
        if let ApprovalPolicy::Approvers {
            approvers,
            required,
            ..
        } = &self.approval
        {
            if approvers.is_empty() {
                return Err(err("approval mode 'approvers' needs at least one approver (users, slack_groups or groups)".into()));
            }
            if *required == 0 {
                return Err(err("required approvals must be at least 1".into()));
            }
            if approvers.slack_groups.is_empty()
                && approvers.groups.is_empty()
                && (*required as usize) > approvers.users.len()
            {
                return Err(err(format!(
                    "{required} approvals required but only {} approvers listed",
                    approvers.users.len()
                )));
            }
        }
        access_core::escalation::validate(&self.approval).map_err(err)?;
        let settings = match &self.settings {
            Some(t) => serde_json::to_value(t).map_err(|e| err(format!("settings: {e}")))?,
            None => serde_json::Value::Object(Default::default()),
        };
        let mut resource = Resource {
            id,
            description: self.description.clone(),
            provider: self.provider.clone(),
            settings,
            durations,
            eligibility: self.eligibility.clone(),
            approval: self.approval.clone(),
            extendable: self.extendable.unwrap_or(true),
            allow_guests: self.allow_guests,
            allow_external: self.allow_external,
        };
        check_provider_settings(&resource).map_err(|m| err(format!("settings: {m}")))?;
        if pins_its_end(&resource) {
            if self.extendable == Some(true) {
                return Err(err(
                    "extendable = true is not possible with provider 'gcp-iam' in \
                     mode 'service_account_key': the key's IAM binding carries its end, so an \
                     approved extension would only issue a second key with the same end. Remove \
                     the line (such resources are not extendable), or use mode 'user_binding'"
                        .into(),
                ));
            }
            resource.extendable = false;
        }
        Ok(resource)
    }
}

/// The providers parse a resource's settings when they first use them; parse them here too, so
/// a typo, a missing key or a refused value stops the start instead of failing the first grant
/// (after an approver has said yes). Providers this build does not know (test doubles, embedded
/// adapters) check their own.
fn check_provider_settings(resource: &Resource) -> Result<(), String> {
    match resource.provider.as_str() {
        "cloudconnexa" => provider_cloudconnexa::ResourceSettings::parse(resource)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        "gcp-iam" => provider_gcp_iam::GcpIamSettings::of(resource)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        _ => Ok(()),
    }
}

/// GCP's key mode fixes a grant's end in the IAM condition of the account it creates: a new
/// request re-issues a key with that end instead of lengthening it (found by the crash test).
fn pins_its_end(resource: &Resource) -> bool {
    resource.provider == "gcp-iam"
        && provider_gcp_iam::GcpIamSettings::of(resource)
            .is_ok_and(|s| s.mode == provider_gcp_iam::AccessMode::ServiceAccountKey)
}

/// Secrets and deployment settings from the environment (names from the source documents where
/// they have one).
#[derive(Clone, Default)]
pub struct Env {
    pub database_url: String,
    pub admin_token: Option<String>,
    pub approval_channel: Option<String>,
    /// `GATEHOUSE_AUDIT_KEY`, unparsed (see [`Env::audit_keyring`]). Never logged.
    pub audit_key: Option<String>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("database_url", &redact_url(&self.database_url))
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("approval_channel", &self.approval_channel)
            .field("audit_key", &self.audit_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

pub const DEFAULT_DATABASE_URL: &str = "sqlite://gatehouse.db?mode=rwc";

impl Env {
    pub fn from_process() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            database_url: get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string()),
            admin_token: get("GATEHOUSE_ADMIN_TOKEN"),
            approval_channel: get("APPROVAL_CHANNEL"),
            audit_key: get(access_core::audit::AUDIT_KEY_ENV),
        }
    }

    /// The audit keyring from `GATEHOUSE_AUDIT_KEY` (same format and parser as
    /// `GATEHOUSE_ENCRYPTION_KEY`). `Ok(None)` when unset: the server still starts (development)
    /// and the chain stays unkeyed; a malformed value is an error, never a silent fallback.
    pub fn audit_keyring(&self) -> Result<Option<access_core::audit::AuditKeyring>, ConfigError> {
        self.audit_key
            .as_deref()
            .map(|spec| {
                access_core::audit::AuditKeyring::from_spec(spec).map_err(|e| ConfigError::Env {
                    name: access_core::audit::AUDIT_KEY_ENV,
                    message: e.to_string(),
                })
            })
            .transpose()
    }
}

/// Passwords in database URLs never reach logs (one implementation, the store's).
pub use store_sqlx::redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[server]
approval_channel = "approvals"

[[resources]]
id = "demo"
provider = "dry-run"
default_duration = "1h"
max_duration = "8h"
eligibility = ["anyone"]
approval = { mode = "auto" }

[[resources]]
id = "prod"
provider = "dry-run"
min_duration = "1s"
default_duration = "30m"
max_duration = "2h"
eligibility = [{ org = "Hybrid Platforms" }, { email_domain = ["example.com"] }]
approval = { mode = "approvers", approvers = { users = ["U1", "U2"] }, required = 2, pending_ttl = "2h" }
settings = { network = "prod-vpc" }
"#;

    #[test]
    fn parses_the_example() {
        let c = Config::from_toml(EXAMPLE, "x.toml").unwrap();
        let rs = c.resources().unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[1].durations.min.secs(), 1);
        assert_eq!(rs[1].approval.required_approvals(), 2);
        assert_eq!(rs[1].settings["network"], "prod-vpc");
        assert_eq!(rs[1].eligibility.len(), 2);
    }

    #[test]
    fn bad_resources_are_named() {
        let bad = r#"
[[resources]]
id = "x"
provider = "dry-run"
default_duration = "10h"
max_duration = "1h"
approval = { mode = "auto" }
"#;
        let e = Config::from_toml(bad, "x")
            .unwrap()
            .resources()
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("resource 'x': default_duration (10h) is outside"),
            "{e}"
        );
        let unknown =
            "[[resources]]\nid='x'\nprovider='dry-run'\napproval={mode='auto'}\ncolour='red'\n";
        assert!(
            Config::from_toml(unknown, "x")
                .unwrap_err()
                .to_string()
                .contains("colour")
        );
        let two = r#"
[[resources]]
id = "x"
provider = "dry-run"
approval = { mode = "approvers", approvers = { users = ["U1"] }, required = 2 }
"#;
        assert!(
            Config::from_toml(two, "x")
                .unwrap()
                .resources()
                .unwrap_err()
                .to_string()
                .contains("2 approvals required")
        );
    }

    /// Found by the crash test: `extendable = true` on GCP's key mode re-issued a key with the
    /// old end instead of extending. Not extendable by default there, and refused when asked.
    #[test]
    fn gcp_key_mode_is_not_extendable() {
        let gcp = |mode: &str, extendable: &str| {
            format!(
                "[[resources]]\nid='g'\nprovider='gcp-iam'\napproval={{mode='auto'}}\n\
                 settings={{project='my-project-1', role='roles/browser', mode='{mode}'}}\n{extendable}\n"
            )
        };
        let resources = |toml: String| Config::from_toml(&toml, "x").unwrap().resources();
        let key_default = resources(gcp("service_account_key", "")).unwrap();
        assert!(!key_default[0].extendable);
        let e = resources(gcp("service_account_key", "extendable = true")).unwrap_err();
        assert!(
            e.to_string().contains("extendable = true is not possible"),
            "{e}"
        );
        assert!(
            !resources(gcp("service_account_key", "extendable = false")).unwrap()[0].extendable
        );
        assert!(resources(gcp("user_binding", "")).unwrap()[0].extendable);
        assert!(resources(gcp("user_binding", "extendable = true")).unwrap()[0].extendable);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite://gatehouse.db"), "sqlite://gatehouse.db");
    }
}
