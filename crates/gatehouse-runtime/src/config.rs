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
use access_core::ports::ProviderKind;
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
    #[error("webhook '{id}': {message}")]
    Webhook { id: String, message: String },
    #[error("[server] {0}")]
    Server(String),
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
    /// Event webhooks (docs/webhooks.md).
    #[serde(default)]
    pub webhooks: Vec<crate::webhook_config::WebhookConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Where approval messages go when a resource names no channel (`APPROVAL_CHANNEL` overrides).
    #[serde(default)]
    pub approval_channel: Option<String>,
    /// Where break-glass notices go besides the resource's approvers' channel
    /// (`SECURITY_CHANNEL` overrides). Optional.
    #[serde(default)]
    pub security_channel: Option<String>,
    /// Seconds a claimed job is reserved for its worker (default 120).
    #[serde(default)]
    pub job_lease_secs: Option<u64>,
    /// Jobs the scheduler runs at once (default 8); expiries and revocations have half as many
    /// slots again of their own, so a full queue of slow jobs cannot hold them up.
    #[serde(default)]
    pub job_concurrency: Option<usize>,
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
    /// Who may use the Slack admin commands (`/access admin …`, docs/admin-commands.md); nobody
    /// when absent.
    #[serde(default)]
    pub admins: Option<AdminsSection>,
    /// `[server.rate_limits]` (docs/rate-limits.md).
    #[serde(default)]
    pub rate_limits: RateLimitsSection,
}

/// `[server] admins = { users = […], slack_groups = […], groups = […] }`: spelled as a resource's
/// approver set (Slack user ids, Slack user group ids, directory groups).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminsSection {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub slack_groups: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `[server.rate_limits]`: every key optional; 0 turns a limit off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsSection {
    /// Requests one person may file per `request_window` (default 10).
    #[serde(default)]
    pub requests_per_person: Option<u32>,
    /// The window of `requests_per_person` (default "1h").
    #[serde(default)]
    pub request_window: Option<String>,
    /// Requests of one person that may wait for a decision at once (default 3).
    #[serde(default)]
    pub pending_per_person: Option<u32>,
    /// Slack deliveries one workspace may send at once (default 100).
    #[serde(default)]
    pub workspace_burst: Option<u32>,
    /// … refilled at this many per minute (default 1800, i.e. 30 a second).
    #[serde(default)]
    pub workspace_per_minute: Option<u32>,
}

impl RateLimitsSection {
    /// The per-person limits the engine applies to every submission.
    pub fn request_limits(&self) -> Result<access_core::limits::RequestLimits, ConfigError> {
        let d = access_core::limits::RequestLimits::default();
        let window = match &self.request_window {
            Some(w) => w
                .parse::<AccessDuration>()
                .map_err(|e| ConfigError::Server(format!("rate_limits.request_window: {e}")))?,
            None => d.window,
        };
        Ok(access_core::limits::RequestLimits {
            requests: self.requests_per_person.unwrap_or(d.requests),
            window,
            pending: self.pending_per_person.unwrap_or(d.pending),
        })
    }

    /// The per-workspace limits of the Slack endpoints.
    pub fn workspace_limits(&self) -> slack_adapter::ratelimit::WorkspaceLimits {
        let d = slack_adapter::ratelimit::WorkspaceLimits::DEFAULT;
        slack_adapter::ratelimit::WorkspaceLimits {
            burst: self.workspace_burst.unwrap_or(d.burst),
            per_minute: self.workspace_per_minute.unwrap_or(d.per_minute),
        }
    }
}

impl ServerSection {
    /// The admin group, checked: ids are not blank.
    pub fn admin_set(&self) -> Result<access_core::ApproverSet, ConfigError> {
        let Some(a) = &self.admins else {
            return Ok(access_core::ApproverSet::default());
        };
        let clean = |what: &str, v: &[String]| -> Result<Vec<String>, ConfigError> {
            v.iter()
                .map(|s| {
                    let s = s.trim();
                    if s.is_empty() {
                        Err(ConfigError::Server(format!(
                            "admins.{what}: an entry is empty"
                        )))
                    } else {
                        Ok(s.to_string())
                    }
                })
                .collect()
        };
        Ok(access_core::ApproverSet {
            users: clean("users", &a.users)?,
            slack_groups: clean("slack_groups", &a.slack_groups)?,
            groups: clean("groups", &a.groups)?,
        })
    }
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
    pub provider: ProviderKind,
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
    /// Break-glass: `request <resource> --emergency <justification>` grants at once, without
    /// approval (default false). Needs approval mode `approvers`: they review it afterwards.
    #[serde(default)]
    pub emergency: bool,
    /// The longest an emergency grant lasts (default 1h, or the resource's bounds if 1h is
    /// outside them); must lie within min_duration..max_duration.
    #[serde(default)]
    pub emergency_duration: Option<String>,
    /// `[[resources.roles]]`: roles or levels of this resource, each requested as
    /// `<resource>:<role>` (docs/roles.md). A resource with roles is offered only through them.
    #[serde(default)]
    pub roles: Vec<RoleConfig>,
}

/// One `[[resources.roles]]` entry (docs/roles.md): a role or level of its resource, offered as
/// its own resource `<resource>:<id>`. What it leaves out is its resource's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// The role's name (`editor`): requested as `gcp-access:editor`.
    pub id: String,
    /// Default: the resource's description followed by the role in parentheses.
    #[serde(default)]
    pub description: Option<String>,
    /// Provider settings merged over the resource's, key by key (GCP: `role`; Cloud Connexa:
    /// `group`).
    #[serde(default)]
    pub settings: Option<toml::Table>,
    pub default_duration: Option<String>,
    pub min_duration: Option<String>,
    pub max_duration: Option<String>,
    /// Replaces the resource's rules (not added to them).
    #[serde(default)]
    pub eligibility: Option<Vec<EligibilityRule>>,
    #[serde(default)]
    pub approval: Option<ApprovalPolicy>,
    #[serde(default)]
    pub extendable: Option<bool>,
    /// This role alone is kept only so its grants end (see [`ResourceConfig::retired`]).
    #[serde(default)]
    pub retired: bool,
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
            let entries = if rc.roles.is_empty() {
                vec![(rc.to_resource()?, rc.retired)]
            } else {
                let roles = rc.role_resources()?;
                refuse_shared_access(roles.iter().map(|(r, _)| r), &configured_access)?;
                roles
            };
            // A resource and its roles share one name: two entries may not use it.
            if let Some((r, _)) = entries.first()
                && out.iter().any(|(o, _)| o.id.base() == r.id.base())
            {
                return Err(ConfigError::DuplicateResource(r.id.base().to_string()));
            }
            out.extend(entries);
        }
        Ok(out)
    }
}

/// What a resource's grants hold at its provider, when two resources could hold the same thing:
/// a GCP role in a project, a Cloud Connexa group (named, or the network's `{network}-users`;
/// the server checks again with `NETWORK_GROUP_MAPPING` once the provider is built).
fn configured_access(resource: &Resource) -> Option<String> {
    match resource.provider {
        ProviderKind::GcpIam => provider_gcp_iam::GcpIamSettings::of(resource)
            .ok()
            .map(|s| format!("GCP role {} in project {}", s.role, s.project)),
        ProviderKind::CloudConnexa => provider_cloudconnexa::ResourceSettings::parse(resource)
            .ok()
            .map(|s| format!("Cloud Connexa group {}", s.group_name(&Default::default()))),
        _ => None,
    }
}

/// Two roles of one resource must not hold the same access at the provider: one role's
/// revocation or reconciliation would take away what the other still grants (docs/roles.md).
pub fn refuse_shared_access<'r>(
    roles: impl IntoIterator<Item = &'r Resource>,
    access: &dyn Fn(&Resource) -> Option<String>,
) -> Result<(), ConfigError> {
    let mut seen: Vec<(String, &ResourceId)> = Vec::new();
    for r in roles {
        let Some(what) = access(r) else { continue };
        if let Some((_, other)) = seen.iter().find(|(w, _)| *w == what) {
            return Err(ConfigError::Resource {
                id: r.id.to_string(),
                message: format!(
                    "roles '{other}' and '{}' both grant {what}: a person holding both would lose \
                     one when the other ends. Give each role its own (GCP: settings.role; Cloud \
                     Connexa: settings.group)",
                    r.id
                ),
            });
        }
        seen.push((what, &r.id));
    }
    Ok(())
}

impl ResourceConfig {
    /// The resource this entry offers when it has no roles.
    pub fn to_resource(&self) -> Result<Resource, ConfigError> {
        self.build(self.resource_id()?)
    }

    /// The entry's own id: one name, never a role's `resource:role`.
    fn resource_id(&self) -> Result<ResourceId, ConfigError> {
        let id = ResourceId::parse(&self.id).map_err(|e| ConfigError::Resource {
            id: self.id.clone(),
            message: e.to_string(),
        })?;
        if id.role().is_some() {
            return Err(ConfigError::Resource {
                id: self.id.clone(),
                message: "':' separates a resource from one of its roles; a resource's id cannot \
                          contain it. Declare roles with [[resources.roles]] (docs/roles.md)"
                    .into(),
            });
        }
        Ok(id)
    }

    /// The resources this entry's roles offer, each with whether it is retired: the entry's
    /// fields with the role's over them, named `<resource>:<role>`.
    pub fn role_resources(&self) -> Result<Vec<(Resource, bool)>, ConfigError> {
        let base = self.resource_id()?;
        let mut out: Vec<(Resource, bool)> = Vec::new();
        for role in &self.roles {
            let id = base
                .with_role(role.id.trim())
                .map_err(|_| ConfigError::Resource {
                    id: self.id.clone(),
                    message: format!(
                        "role '{}' is not a valid role name (use lower-case letters, digits, '-', \
                     '_' or '.', starting with a letter or digit, at most 64 characters)",
                        role.id
                    ),
                })?;
            if out.iter().any(|(r, _)| r.id == id) {
                return Err(ConfigError::Resource {
                    id: self.id.clone(),
                    message: format!("two roles are named '{}'", role.id.trim()),
                });
            }
            let mut settings = self.settings.clone().unwrap_or_default();
            if let Some(over) = &role.settings {
                settings.extend(over.clone());
            }
            let entry = ResourceConfig {
                id: id.to_string(),
                description: match &role.description {
                    Some(d) => d.clone(),
                    None if self.description.is_empty() => String::new(),
                    None => format!("{} ({})", self.description, role.id.trim()),
                },
                provider: self.provider.clone(),
                settings: Some(settings),
                default_duration: role
                    .default_duration
                    .clone()
                    .or_else(|| self.default_duration.clone()),
                min_duration: role
                    .min_duration
                    .clone()
                    .or_else(|| self.min_duration.clone()),
                max_duration: role
                    .max_duration
                    .clone()
                    .or_else(|| self.max_duration.clone()),
                eligibility: role
                    .eligibility
                    .clone()
                    .unwrap_or_else(|| self.eligibility.clone()),
                approval: role
                    .approval
                    .clone()
                    .unwrap_or_else(|| self.approval.clone()),
                extendable: role.extendable.or(self.extendable),
                retired: self.retired || role.retired,
                allow_guests: self.allow_guests,
                allow_external: self.allow_external,
                roles: Vec::new(),
                // Break-glass is the resource's; a role approved automatically has no approval
                // to break through (and nobody to review), so it does not take it.
                emergency: false,
                emergency_duration: None,
            };
            let breaks_glass = self.emergency && !entry.approval.is_auto();
            let entry = ResourceConfig {
                emergency: breaks_glass,
                emergency_duration: self.emergency_duration.clone().filter(|_| breaks_glass),
                ..entry
            };
            out.push((entry.build(id)?, entry.retired));
        }
        Ok(out)
    }

    fn build(&self, id: ResourceId) -> Result<Resource, ConfigError> {
        let err = |message: String| ConfigError::Resource {
            id: self.id.clone(),
            message,
        };
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
            emergency: self.emergency_policy(&durations).map_err(err)?,
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

impl ResourceConfig {
    /// `emergency` and `emergency_duration`, checked: break-glass needs approvers (who review
    /// it), and its duration lies within the resource's bounds.
    fn emergency_policy(
        &self,
        durations: &DurationBounds,
    ) -> Result<Option<access_core::resource::EmergencyPolicy>, String> {
        if !self.emergency {
            return match &self.emergency_duration {
                Some(_) => Err(
                    "emergency_duration is set but emergency is not true; add `emergency = true` \
                     to allow break-glass access, or remove emergency_duration"
                        .into(),
                ),
                None => Ok(None),
            };
        }
        if self.approval.is_auto() {
            return Err(
                "emergency = true needs approval mode 'approvers': an auto-approved resource needs \
                 no break-glass, and nobody would review the emergency grants"
                    .into(),
            );
        }
        let duration = match &self.emergency_duration {
            Some(s) => {
                let d = s
                    .parse::<AccessDuration>()
                    .map_err(|e| format!("emergency_duration: {e}"))?;
                if d < durations.min || d > durations.max {
                    return Err(format!(
                        "emergency_duration ({d}) is outside {}..{} (min_duration..max_duration)",
                        durations.min, durations.max
                    ));
                }
                d
            }
            None => access_core::resource::EmergencyPolicy::DEFAULT_DURATION
                .clamp(durations.min, durations.max),
        };
        Ok(Some(access_core::resource::EmergencyPolicy { duration }))
    }
}

/// The providers parse a resource's settings when they first use them; parse them here too, so
/// a typo, a missing key or a refused value stops the start instead of failing the first grant
/// (after an approver has said yes). Providers this build does not know (test doubles, embedded
/// adapters) check their own.
fn check_provider_settings(resource: &Resource) -> Result<(), String> {
    match resource.provider {
        ProviderKind::CloudConnexa => provider_cloudconnexa::ResourceSettings::parse(resource)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        ProviderKind::GcpIam => provider_gcp_iam::GcpIamSettings::of(resource)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        _ => Ok(()),
    }
}

/// GCP's key mode fixes a grant's end in the IAM condition of the account it creates: a new
/// request re-issues a key with that end instead of lengthening it (found by the crash test).
fn pins_its_end(resource: &Resource) -> bool {
    resource.provider == ProviderKind::GcpIam
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
    /// `SECURITY_CHANNEL`: where break-glass notices go (overrides `[server] security_channel`).
    pub security_channel: Option<String>,
    /// `GATEHOUSE_AUDIT_KEY`, unparsed (see [`Env::audit_keyring`]). Never logged.
    pub audit_key: Option<String>,
    /// Variables the configuration names (webhook `secret_env`, `token_env`) given directly,
    /// ahead of the process environment (see [`Env::var`]): embedders and tests. Never logged.
    pub vars: std::collections::HashMap<String, String>,
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
            .field("security_channel", &self.security_channel)
            .field("audit_key", &self.audit_key.as_ref().map(|_| "<redacted>"))
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
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
            security_channel: get("SECURITY_CHANNEL"),
            audit_key: get(access_core::audit::AUDIT_KEY_ENV),
            vars: Default::default(),
        }
    }

    /// A variable the configuration names by `*_env`: from [`Env::vars`], else the process
    /// environment; blank counts as unset.
    pub fn var(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
            .filter(|v| !v.trim().is_empty())
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

    const ROLES: &str = r#"
[[resources]]
id = "gcp-access"
description = "GCP project"
provider = "gcp-iam"
default_duration = "1h"
max_duration = "8h"
eligibility = ["anyone"]
approval = { mode = "auto" }
settings = { project = "my-project-1", role = "roles/browser", mode = "user_binding" }

[[resources.roles]]
id = "viewer"
settings = { role = "roles/viewer.custom" }

[[resources.roles]]
id = "editor"
description = "Edit the project"
settings = { role = "roles/editor.custom" }
max_duration = "2h"
eligibility = [{ email_domain = ["example.com"] }]
approval = { mode = "approvers", approvers = { users = ["U1"] } }
extendable = false
"#;

    /// Issue 17 item 3: every role is its own resource `<resource>:<role>`, with the resource's
    /// fields where it says nothing; the resource itself is not offered bare.
    #[test]
    fn roles_become_resources() {
        let rs = Config::from_toml(ROLES, "x").unwrap().resources().unwrap();
        let ids: Vec<&str> = rs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["gcp-access:viewer", "gcp-access:editor"]);
        let (viewer, editor) = (&rs[0], &rs[1]);
        assert_eq!(viewer.description, "GCP project (viewer)");
        assert_eq!(viewer.settings["role"], "roles/viewer.custom");
        assert_eq!(viewer.settings["project"], "my-project-1");
        assert_eq!(viewer.settings["mode"], "user_binding");
        assert_eq!(viewer.durations.max.secs(), 8 * 3600);
        assert!(viewer.approval.is_auto());
        assert_eq!(viewer.eligibility, vec![EligibilityRule::Anyone]);
        assert!(viewer.extendable);
        assert_eq!(editor.description, "Edit the project");
        assert_eq!(editor.settings["role"], "roles/editor.custom");
        assert_eq!(editor.durations.max.secs(), 2 * 3600);
        assert_eq!(editor.durations.default.secs(), 3600);
        assert_eq!(editor.approval.required_approvals(), 1);
        assert_eq!(editor.eligibility.len(), 1);
        assert!(!editor.extendable);
    }

    /// A resource's break-glass carries over to its roles that have approvers (who review the
    /// emergency grants), not to those approved automatically.
    #[test]
    fn roles_with_approvers_inherit_break_glass() {
        let text = ROLES.replacen(
            "approval = { mode = \"auto\" }\n",
            "approval = { mode = \"auto\" }\nemergency = true\nemergency_duration = \"30m\"\n",
            1,
        );
        let rs = Config::from_toml(&text, "x").unwrap().resources().unwrap();
        assert!(
            rs[0].emergency.is_none(),
            "viewer is approved automatically"
        );
        assert_eq!(rs[1].emergency.unwrap().duration.secs(), 1800, "editor");
    }

    #[test]
    fn bad_roles_are_refused_with_their_name() {
        let err = |text: String| {
            Config::from_toml(&text, "x")
                .and_then(|c| c.resources())
                .unwrap_err()
                .to_string()
        };
        let e = err(ROLES.replace("id = \"editor\"", "id = \"Editor!\""));
        assert_eq!(
            e,
            "resource 'gcp-access': role 'Editor!' is not a valid role name (use lower-case \
             letters, digits, '-', '_' or '.', starting with a letter or digit, at most 64 characters)"
        );
        let e = err(ROLES.replace("id = \"editor\"", "id = \"a:b\""));
        assert!(e.contains("role 'a:b' is not a valid role name"), "{e}");
        let e = err(ROLES.replace("id = \"editor\"", "id = \"viewer\""));
        assert_eq!(e, "resource 'gcp-access': two roles are named 'viewer'");
        let e = err(ROLES.replace("id = \"gcp-access\"", "id = \"gcp-access:all\""));
        assert!(
            e.starts_with(
                "resource 'gcp-access:all': ':' separates a resource from one of its roles"
            ),
            "{e}"
        );
        // A role's own settings and bounds are checked like a resource's, under the role's name.
        let e = err(ROLES.replace("roles/editor.custom", "roles/owner"));
        assert!(
            e.starts_with("resource 'gcp-access:editor': settings:") && e.contains("basic role"),
            "{e}"
        );
        let e = err(ROLES.replace("max_duration = \"2h\"", "max_duration = \"30m\""));
        assert!(
            e.starts_with("resource 'gcp-access:editor': default_duration (1h)"),
            "{e}"
        );
        let e = err(ROLES.replace("extendable = false", "colour = \"red\""));
        assert!(e.contains("colour"), "{e}");
        // Two roles granting the same GCP role would take each other's access away.
        let e = err(ROLES.replace("roles/editor.custom", "roles/viewer.custom"));
        assert!(
            e.starts_with(
                "resource 'gcp-access:editor': roles 'gcp-access:viewer' and 'gcp-access:editor' \
                 both grant GCP role roles/viewer.custom in project my-project-1"
            ),
            "{e}"
        );
        // Same for two roles of a Cloud Connexa network without their own groups.
        let vpn = r#"
[[resources]]
id = "dev-network"
provider = "cloudconnexa"
approval = { mode = "auto" }
settings = { network = "dev" }
[[resources.roles]]
id = "users"
[[resources.roles]]
id = "admins"
"#;
        let e = err(vpn.to_string());
        assert!(
            e.contains("both grant Cloud Connexa group dev-users"),
            "{e}"
        );
        let fixed = vpn.replace(
            "id = \"admins\"",
            "id = \"admins\"\nsettings = { group = \"dev-admins\" }",
        );
        let rs = Config::from_toml(&fixed, "x").unwrap().resources().unwrap();
        assert_eq!(rs[1].settings["group"], "dev-admins");
        assert_eq!(rs[1].settings["network"], "dev");
        // A resource and another's roles cannot share a name.
        let e = err(format!(
            "{ROLES}\n[[resources]]\nid = \"gcp-access\"\nprovider = \"dry-run\"\napproval = {{ mode = \"auto\" }}\n"
        ));
        assert_eq!(e, "two resources are named 'gcp-access'");
    }

    /// A role can be retired alone (its grants still end); retiring the resource retires all.
    #[test]
    fn roles_retire_alone_or_together() {
        let one = ROLES.replace("extendable = false", "extendable = false\nretired = true");
        let c = Config::from_toml(&one, "x").unwrap();
        let offered: Vec<String> = c
            .resources()
            .unwrap()
            .iter()
            .map(|r| r.id.to_string())
            .collect();
        assert_eq!(offered, ["gcp-access:viewer"]);
        let retired: Vec<String> = c
            .retired_resources()
            .unwrap()
            .iter()
            .map(|r| r.id.to_string())
            .collect();
        assert_eq!(retired, ["gcp-access:editor"]);
        let all = ROLES.replace(
            "eligibility = [\"anyone\"]",
            "eligibility = [\"anyone\"]\nretired = true",
        );
        let c = Config::from_toml(&all, "x").unwrap();
        assert!(c.resources().unwrap().is_empty());
        assert_eq!(c.retired_resources().unwrap().len(), 2);
    }

    #[test]
    fn break_glass_settings_are_checked_at_start() {
        let r = |approval: &str, extra: &str| {
            Config::from_toml(
                &format!(
                    "[[resources]]\nid='p'\nprovider='dry-run'\nmin_duration='5m'\nmax_duration='8h'\n\
                     approval={approval}\n{extra}\n"
                ),
                "x",
            )
            .unwrap()
            .resources()
        };
        let approvers = "{mode='approvers', approvers={users=['U1']}}";
        assert_eq!(
            r(approvers, "").unwrap()[0].emergency,
            None,
            "off by default"
        );
        let on = r(approvers, "emergency = true").unwrap();
        assert_eq!(
            on[0].emergency.unwrap().duration.secs(),
            3600,
            "1h by default"
        );
        let short = Config::from_toml(
            "[[resources]]\nid='p'\nprovider='dry-run'\ndefault_duration='30m'\nmax_duration='30m'\n\
             approval={mode='approvers', approvers={users=['U1']}}\nemergency=true\n",
            "x",
        )
        .unwrap()
        .resources()
        .unwrap();
        assert_eq!(
            short[0].emergency.unwrap().duration.secs(),
            1800,
            "the default stays within max_duration"
        );
        let set = r(approvers, "emergency = true\nemergency_duration = '2h'").unwrap();
        assert_eq!(set[0].emergency.unwrap().duration.secs(), 7200);
        for (approval, extra, message) in [
            (
                "{mode='auto'}",
                "emergency = true",
                "resource 'p': emergency = true needs approval mode 'approvers'",
            ),
            (
                approvers,
                "emergency_duration = '2h'",
                "resource 'p': emergency_duration is set but emergency is not true",
            ),
            (
                approvers,
                "emergency = true\nemergency_duration = '9h'",
                "resource 'p': emergency_duration (9h) is outside 5m..8h",
            ),
            (
                approvers,
                "emergency = true\nemergency_duration = '1m'",
                "resource 'p': emergency_duration (1m) is outside 5m..8h",
            ),
            (
                approvers,
                "emergency = true\nemergency_duration = 'soon'",
                "resource 'p': emergency_duration: 'soon' is not a duration",
            ),
        ] {
            let e = r(approval, extra).unwrap_err().to_string();
            assert!(e.starts_with(message), "{extra}: {e}");
        }
        assert!(
            Config::from_toml("[server]\nsecurity_channel = 'security-alerts'\n", "x")
                .unwrap()
                .server
                .security_channel
                .as_deref()
                == Some("security-alerts")
        );
    }

    /// Issue 17: `[server] admins` and `[server.rate_limits]`, with the server's defaults when
    /// absent and a clear error for a bad value.
    #[test]
    fn admins_and_rate_limits() {
        let c = Config::from_toml("", "x").unwrap();
        assert!(c.server.admin_set().unwrap().is_empty());
        let limits = c.server.rate_limits.request_limits().unwrap();
        assert_eq!(
            (limits.requests, limits.window.secs(), limits.pending),
            (10, 3600, 3)
        );
        assert_eq!(
            c.server.rate_limits.workspace_limits(),
            slack_adapter::ratelimit::WorkspaceLimits::DEFAULT
        );

        let c = Config::from_toml(
            "[server]\nadmins = { users = [\"U1\"], slack_groups = [\"S1\"] }\n\
             [server.rate_limits]\nrequests_per_person = 0\nrequest_window = \"30m\"\n\
             pending_per_person = 5\nworkspace_burst = 0\n",
            "x",
        )
        .unwrap();
        let admins = c.server.admin_set().unwrap();
        assert_eq!(admins.users, vec!["U1"]);
        assert_eq!(admins.slack_groups, vec!["S1"]);
        let limits = c.server.rate_limits.request_limits().unwrap();
        assert_eq!(
            (limits.requests, limits.window.secs(), limits.pending),
            (0, 1800, 5)
        );
        assert!(c.server.rate_limits.workspace_limits().is_off());

        let bad =
            Config::from_toml("[server.rate_limits]\nrequest_window = \"soon\"\n", "x").unwrap();
        let e = bad.server.rate_limits.request_limits().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("[server] rate_limits.request_window"),
            "{e}"
        );
        let typo = Config::from_toml("[server]\nadmins = { user = [\"U1\"] }\n", "x");
        assert!(typo.unwrap_err().to_string().contains("user"));
        let blank = Config::from_toml("[server]\nadmins = { users = [\" \"] }\n", "x").unwrap();
        assert!(blank.server.admin_set().is_err());
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
