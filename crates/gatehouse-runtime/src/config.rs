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
    /// Chat commands and button clicks whose messages are delivered at once (default 32): the
    /// approval post and DM a command causes, sent by the process that took the command.
    #[serde(default)]
    pub delivery_concurrency: Option<usize>,
    /// Chat commands and button clicks handled at once by the process that took them (default
    /// 128); under a burst the rest wait their turn, stored and acknowledged already.
    #[serde(default)]
    pub inbox_concurrency: Option<usize>,
    /// Longest a provider or notifier call may take before it counts as a failure (default 60).
    #[serde(default)]
    pub call_timeout_secs: Option<u64>,
    /// Longest the scheduler sleeps without checking the queue (default 30; jobs enqueued by this
    /// process wake it at once, this bounds the wait for jobs enqueued by other replicas).
    #[serde(default)]
    pub max_idle_secs: Option<u64>,
    /// Days a finished job is kept before the server (hourly) and `gatehouse-cleanup` delete it
    /// (default 30; 0 keeps them for ever). Never less than a day applies: a stored Slack
    /// delivery is recognised as a replay by its job. The audit trail keeps every step anyway.
    #[serde(default)]
    pub job_retention_days: Option<u32>,
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
    /// How long finished jobs are kept (`job_retention_days`, default 30), or `None` when they
    /// are kept for ever (0).
    pub fn job_retention(&self) -> Option<chrono::Duration> {
        match self
            .job_retention_days
            .unwrap_or(DEFAULT_JOB_RETENTION_DAYS)
        {
            0 => None,
            days => Some(chrono::Duration::days(i64::from(days))),
        }
    }

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

/// `job_retention_days` when unset.
pub const DEFAULT_JOB_RETENTION_DAYS: u32 = 30;

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

pub use crate::env::{DEFAULT_DATABASE_URL, Env};

/// Passwords in database URLs never reach logs (one implementation, the store's).
pub use store_sqlx::redact_url;

#[cfg(test)]
mod tests;
