//! [`CloudConnexaProvider`]: the `Provider` port on Cloud Connexa. Temporary network access is a
//! membership of the user in a user group through `secondaryGroupIds`, so the user's primary group
//! and every other membership stay exactly as they were.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use access_core::ports::{
    GrantOutcome, GrantRequest, LiveAccess, Provider, ProviderError, ProviderEvent, RevokeOutcome,
    RevokeRequest,
};
use access_core::{Email, Resource, Subject};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;

use crate::client::{ClientConfig, CloudConnexaClient};
use crate::error::CloudConnexaError;
use crate::models::{Network, Role, User, UserCreate, UserGroup, UserGroupRequest, UserStatus};
use crate::usage::{GroupUsage, GroupUsageQuery, NoOtherUsers};

/// The environment variable holding the JSON object `{"network": "group name", …}`.
pub const ENV_NETWORK_GROUP_MAPPING: &str = "NETWORK_GROUP_MAPPING";

/// Everything the provider needs besides the resources.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub client: ClientConfig,
    /// `NETWORK_GROUP_MAPPING`: network name → user group name, used when a resource has no
    /// `group` setting. Unmapped networks use `{network}-users`.
    pub network_group_mapping: HashMap<String, String>,
    /// Role of users this provider creates when the resource sets none (default `MEMBER`).
    pub default_role: Role,
    /// How long the e-mail → user index from a full user scan is trusted (default 5 min). A miss
    /// always rescans, so a stale index can only cost a call, never a wrong answer.
    pub user_cache_ttl: Duration,
    /// How long the group-name → group index is trusted (default 10 min).
    pub group_cache_ttl: Duration,
    /// How long the network list is reused (default 60 s): `/vpn-access list` and `request`
    /// read it on every command, and the API allows very few calls.
    pub network_cache_ttl: Duration,
}

impl ProviderConfig {
    pub fn new(client: ClientConfig) -> Self {
        Self {
            client,
            network_group_mapping: HashMap::new(),
            default_role: Role::Member,
            user_cache_ttl: Duration::from_secs(300),
            group_cache_ttl: Duration::from_secs(600),
            network_cache_ttl: Duration::from_secs(60),
        }
    }

    /// Client settings from `CLOUDCONNEXA_*`, mapping from `NETWORK_GROUP_MAPPING` (optional),
    /// read through `get` (see [`ClientConfig::from_lookup`]).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, CloudConnexaError> {
        let mut cfg = Self::new(ClientConfig::from_lookup(&get)?);
        if let Some(raw) = get(ENV_NETWORK_GROUP_MAPPING) {
            cfg.network_group_mapping = parse_mapping(&raw)?;
        }
        Ok(cfg)
    }
}

/// Parses `NETWORK_GROUP_MAPPING` (a JSON object of strings; empty means none).
pub fn parse_mapping(raw: &str) -> Result<HashMap<String, String>, CloudConnexaError> {
    if raw.trim().is_empty() {
        return Ok(HashMap::new());
    }
    serde_json::from_str(raw).map_err(|e| {
        CloudConnexaError::Config(format!(
            "{ENV_NETWORK_GROUP_MAPPING} must be a JSON object of network name to group name: {e}"
        ))
    })
}

/// A resource's `settings` for this provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSettings {
    /// The Cloud Connexa network name (required).
    pub network: String,
    /// The user group whose membership grants the access. Default:
    /// `NETWORK_GROUP_MAPPING[network]`, else `{network}-users`.
    #[serde(default)]
    pub group: Option<String>,
    /// Role of users created by a grant (`MEMBER`, `ADMIN`, `OWNER`; default `MEMBER`).
    #[serde(default)]
    pub role: Option<String>,
    /// E-mails that belong in the group without a grant (permanent members): never reported as
    /// drift, never removed by a repair.
    #[serde(default)]
    pub unmanaged_members: Vec<String>,
}

impl ResourceSettings {
    pub fn parse(resource: &Resource) -> Result<Self, ProviderError> {
        let s: ResourceSettings = serde_json::from_value(resource.settings.clone()).map_err(|e| {
            ProviderError::Permanent(format!(
                "resource '{}' has invalid Cloud Connexa settings (expected {{\"network\": \"…\", \"group\"?: \"…\", \"role\"?: \"MEMBER\"}}): {e}",
                resource.id
            ))
        })?;
        if s.network.trim().is_empty() {
            return Err(ProviderError::Permanent(format!(
                "resource '{}': settings.network is empty",
                resource.id
            )));
        }
        if s.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
            return Err(ProviderError::Permanent(format!(
                "resource '{}': settings.group is empty",
                resource.id
            )));
        }
        s.role()?;
        Ok(s)
    }

    pub fn role(&self) -> Result<Option<Role>, ProviderError> {
        match self.role.as_deref().map(|r| r.trim().to_ascii_uppercase()) {
            None => Ok(None),
            Some(r) if r == "MEMBER" => Ok(Some(Role::Member)),
            Some(r) if r == "ADMIN" => Ok(Some(Role::Admin)),
            Some(r) if r == "OWNER" => Ok(Some(Role::Owner)),
            Some(r) => Err(ProviderError::Permanent(format!(
                "unknown Cloud Connexa role '{r}' (MEMBER, ADMIN, OWNER)"
            ))),
        }
    }

    /// The group this resource manages.
    pub fn group_name(&self, mapping: &HashMap<String, String>) -> String {
        if let Some(g) = &self.group {
            return g.trim().to_string();
        }
        mapping
            .get(&self.network)
            .cloned()
            .unwrap_or_else(|| format!("{}-users", self.network))
    }
}

/// What a grant did, stored by Gatehouse and handed back on revoke so revoke undoes exactly that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantHandle {
    /// Handle format version.
    pub v: u32,
    pub user_id: String,
    pub email: String,
    pub group_id: String,
    pub group_name: String,
    pub network: String,
    /// The Cloud Connexa user did not exist and this grant created it.
    pub user_created: bool,
    /// The group did not exist and this grant created it.
    pub group_created: bool,
    /// The user already had the group from outside Gatehouse (primary group, or a secondary
    /// membership no other live grant accounted for): revoke leaves it.
    pub group_was_present: bool,
    /// The membership was already there because another live grant added it: this grant shares
    /// it, and whichever revoke comes last removes it.
    #[serde(default)]
    pub shared: bool,
}

impl GrantHandle {
    pub const VERSION: u32 = 1;

    /// Reads a stored handle; `None` if it is not one of ours (null for a grant that never
    /// finished, or another format).
    pub fn parse(v: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// What a grant is about to add, observed before it changes anything and recorded by the engine
/// (keyed by the grant) before the first grant call. A retried grant that finds the person in
/// the group adopts the membership as its own work when `member_before` is false; a revoke
/// without a handle removes the membership the intent names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantIntent {
    pub v: u32,
    pub grant_id: access_core::GrantId,
    pub email: String,
    pub group_name: String,
    pub network: String,
    /// A Cloud Connexa user with this e-mail existed before the grant.
    pub user_existed: bool,
    /// The user was already in the group before the grant (from outside, or another grant).
    pub member_before: bool,
}

impl GrantIntent {
    pub const VERSION: u32 = 1;

    pub fn parse(v: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Whether this intent is about this person and group.
    fn covers(&self, email: &str, group_name: &str) -> bool {
        self.email.eq_ignore_ascii_case(email) && self.group_name == group_name
    }
}

/// First name, last name and username for a user created from an e-mail. The document names
/// users after their e-mail's local part; `jane.doe+vpn@x` becomes Jane / Doe / `jane.doe`.
pub fn names_from_email(email: &Email, display_name: &str) -> (String, String, String) {
    let local = email.local_part();
    let username = local.to_string();
    let base = local.split('+').next().unwrap_or(local);
    let tokens: Vec<&str> = base
        .split(['.', '_', '-'])
        .filter(|t| !t.is_empty())
        .collect();
    let cap = |t: &str| {
        let mut c = t.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect::<String>())
            .unwrap_or_default()
    };
    match tokens.as_slice() {
        [first, rest @ ..] if !rest.is_empty() => (
            cap(first),
            rest.iter().map(|t| cap(t)).collect::<Vec<_>>().join(" "),
            username,
        ),
        _ => {
            // One token (`jdoe@`): the Slack display name is the better source when it has two words.
            let words: Vec<&str> = display_name.split_whitespace().collect();
            if words.len() >= 2 {
                (words[0].to_string(), words[1..].join(" "), username)
            } else {
                let one = cap(tokens.first().copied().unwrap_or(base));
                (one.clone(), one, username)
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Small in-process helpers

/// One async lock per key (an e-mail): grants and revokes of the same person are read-modify-write
/// cycles on one user object and must not interleave.
#[derive(Debug, Default)]
struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() > 4096 {
                map.retain(|_, v| Arc::strong_count(v) > 1);
            }
            map.entry(key.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }
}

#[derive(Debug)]
struct Index<T> {
    by_key: HashMap<String, T>,
    /// When the last full scan *started*: everything that existed then is in `by_key`.
    scanned_at: Option<Instant>,
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Self {
            by_key: HashMap::new(),
            scanned_at: None,
        }
    }
}

impl<T> Index<T> {
    fn fresh(&self, ttl: Duration) -> bool {
        self.scanned_at.is_some_and(|t| t.elapsed() < ttl)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------------------------------------
// The provider

/// Grants network access by adding the person's Cloud Connexa user to a user group.
#[derive(Debug)]
pub struct CloudConnexaProvider {
    client: CloudConnexaClient,
    mapping: HashMap<String, String>,
    default_role: Role,
    usage: Arc<dyn GroupUsage>,
    user_ttl: Duration,
    group_ttl: Duration,
    network_ttl: Duration,
    /// lower-case e-mail → user id.
    users: Mutex<Index<String>>,
    user_scan: tokio::sync::Mutex<()>,
    /// group name → group.
    groups: Mutex<Index<UserGroup>>,
    group_scan: tokio::sync::Mutex<()>,
    networks: Mutex<Option<(Instant, Vec<Network>)>>,
    network_scan: tokio::sync::Mutex<()>,
    person_locks: KeyedLocks,
}

/// Where the grant's membership stands after [`CloudConnexaProvider::ensure_member`].
struct Membership {
    user: User,
    user_created: bool,
    added: bool,
    was_present: bool,
    shared: bool,
}

impl CloudConnexaProvider {
    pub const KIND: &'static str = "cloudconnexa";

    pub fn new(config: ProviderConfig) -> Result<Self, CloudConnexaError> {
        let client = CloudConnexaClient::new(config.client)?;
        Ok(Self {
            client,
            mapping: config.network_group_mapping,
            default_role: config.default_role,
            usage: Arc::new(NoOtherUsers),
            user_ttl: config.user_cache_ttl,
            group_ttl: config.group_cache_ttl,
            network_ttl: config.network_cache_ttl,
            users: Mutex::default(),
            user_scan: tokio::sync::Mutex::new(()),
            groups: Mutex::default(),
            group_scan: tokio::sync::Mutex::new(()),
            networks: Mutex::new(None),
            network_scan: tokio::sync::Mutex::new(()),
            person_locks: KeyedLocks::default(),
        })
    }

    /// With a [`GroupUsage`] that knows about other live grants (the server wires
    /// [`crate::StoreGroupUsage`]); without one, no other grant is assumed to share a group.
    pub fn new_with_usage(
        config: ProviderConfig,
        usage: Arc<dyn GroupUsage>,
    ) -> Result<Self, CloudConnexaError> {
        Ok(Self::new(config)?.with_group_usage(usage))
    }

    pub fn with_group_usage(mut self, usage: Arc<dyn GroupUsage>) -> Self {
        self.usage = usage;
        self
    }

    /// From `CLOUDCONNEXA_API_URL`, `CLOUDCONNEXA_CLIENT_ID`, `CLOUDCONNEXA_CLIENT_SECRET` and
    /// `NETWORK_GROUP_MAPPING`, read through `get` (see [`ProviderConfig::from_lookup`]).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, CloudConnexaError> {
        Self::new(ProviderConfig::from_lookup(get)?)
    }

    pub fn client(&self) -> &CloudConnexaClient {
        &self.client
    }

    /// The group a resource manages.
    pub fn group_name_for(&self, resource: &Resource) -> Result<String, ProviderError> {
        Ok(ResourceSettings::parse(resource)?.group_name(&self.mapping))
    }

    // --------------------------------------------------------------------------------------------
    // Networks

    /// All networks, reused for the network cache TTL; concurrent callers share one fetch.
    pub async fn networks(&self) -> Result<Vec<Network>, CloudConnexaError> {
        let cached = |me: &Self| {
            lock(&me.networks)
                .as_ref()
                .filter(|(at, _)| at.elapsed() < me.network_ttl)
                .map(|(_, n)| n.clone())
        };
        if let Some(n) = cached(self) {
            return Ok(n);
        }
        let _g = self.network_scan.lock().await;
        if let Some(n) = cached(self) {
            return Ok(n);
        }
        let started = Instant::now();
        let n = self.client.networks().await?;
        *lock(&self.networks) = Some((started, n.clone()));
        Ok(n)
    }

    /// Does a network of this name exist (exact name, as the document compares)?
    pub async fn network_exists(&self, name: &str) -> Result<bool, CloudConnexaError> {
        Ok(self.networks().await?.iter().any(|n| n.name == name))
    }

    /// The resources (of this provider) whose network exists, with that network: what
    /// `/vpn-access list` shows, as the document's `list` did, from the cached network list.
    pub async fn available<'r>(
        &self,
        resources: &'r [Resource],
    ) -> Result<Vec<(&'r Resource, Network)>, ProviderError> {
        let networks = self.networks().await?;
        Ok(resources
            .iter()
            .filter(|r| r.provider == Self::KIND)
            .filter_map(|r| {
                let settings = ResourceSettings::parse(r).ok()?;
                let n = networks.iter().find(|n| n.name == settings.network)?;
                Some((r, n.clone()))
            })
            .collect())
    }

    /// Forgets the cached network list.
    pub fn invalidate_networks(&self) {
        *lock(&self.networks) = None;
    }

    // --------------------------------------------------------------------------------------------
    // Users

    /// The id of the user with this e-mail. Served from the index when it is fresh and knows the
    /// e-mail; otherwise one paged scan, shared by every caller that missed before it started.
    async fn find_user_id(&self, email: &str) -> Result<Option<String>, CloudConnexaError> {
        let key = email.to_ascii_lowercase();
        let asked = Instant::now();
        {
            let idx = lock(&self.users);
            if idx.fresh(self.user_ttl) {
                if let Some(id) = idx.by_key.get(&key) {
                    return Ok(Some(id.clone()));
                }
            }
        }
        let _g = self.user_scan.lock().await;
        {
            let idx = lock(&self.users);
            if idx.scanned_at.is_some_and(|t| t >= asked) {
                return Ok(idx.by_key.get(&key).cloned());
            }
        }
        let started = Instant::now();
        let all = self.client.users().await?;
        tracing::debug!(users = all.len(), "scanned Cloud Connexa users");
        self.reindex_users(&all, started);
        Ok(lock(&self.users).by_key.get(&key).cloned())
    }

    /// Replaces the e-mail → user id index with a full scan that started at `started`.
    fn reindex_users(&self, users: &[User], started: Instant) {
        let mut idx = lock(&self.users);
        idx.by_key = users
            .iter()
            .filter_map(|u| {
                u.email
                    .as_ref()
                    .map(|e| (e.trim().to_ascii_lowercase(), u.id.clone()))
            })
            .collect();
        idx.scanned_at = Some(started);
    }

    fn remember_user(&self, email: &str, id: &str) {
        lock(&self.users)
            .by_key
            .insert(email.to_ascii_lowercase(), id.to_string());
    }

    fn forget_user(&self, email: &str) {
        lock(&self.users).by_key.remove(&email.to_ascii_lowercase());
    }

    /// The current user with this e-mail, read fresh (`GET /users/{id}`), or `None`.
    async fn current_user(&self, email: &str) -> Result<Option<User>, CloudConnexaError> {
        for _ in 0..2 {
            let Some(id) = self.find_user_id(email).await? else {
                return Ok(None);
            };
            match self.client.user(&id).await {
                Ok(u) => return Ok(Some(u)),
                // Deleted since the scan: forget it and look again.
                Err(e) if e.is_not_found() => self.forget_user(email),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    // --------------------------------------------------------------------------------------------
    // Groups

    async fn find_group(
        &self,
        name: &str,
        create: bool,
    ) -> Result<Option<(UserGroup, bool)>, CloudConnexaError> {
        {
            let idx = lock(&self.groups);
            if idx.fresh(self.group_ttl) {
                if let Some(g) = idx.by_key.get(name) {
                    return Ok(Some((g.clone(), false)));
                }
            }
        }
        // One group resolution at a time: fifty grants for a new group create it once.
        let asked = Instant::now();
        let _g = self.group_scan.lock().await;
        let scanned_since = {
            let idx = lock(&self.groups);
            if let Some(g) = idx.by_key.get(name).filter(|_| idx.fresh(self.group_ttl)) {
                return Ok(Some((g.clone(), false)));
            }
            idx.scanned_at.is_some_and(|t| t >= asked)
        };
        if !scanned_since {
            let started = Instant::now();
            let all = self.client.user_groups().await?;
            let mut idx = lock(&self.groups);
            idx.by_key = all.into_iter().map(|g| (g.name.clone(), g)).collect();
            idx.scanned_at = Some(started);
            if let Some(g) = idx.by_key.get(name) {
                return Ok(Some((g.clone(), false)));
            }
        }
        if !create {
            return Ok(None);
        }
        let body = UserGroupRequest {
            name: name.to_string(),
            internet_access: Some("SPLIT_TUNNEL_ON".into()),
            all_regions_included: Some(true),
            ..Default::default()
        };
        let g = self.client.create_user_group(&body).await?;
        tracing::info!(group = %g.name, group_id = %g.id, "created Cloud Connexa user group");
        lock(&self.groups).by_key.insert(g.name.clone(), g.clone());
        Ok(Some((g, true)))
    }

    fn forget_groups(&self) {
        let mut idx = lock(&self.groups);
        idx.by_key.clear();
        idx.scanned_at = None;
    }

    // --------------------------------------------------------------------------------------------
    // Membership

    /// Makes `email`'s user a member of `group` (creating the user if needed). The caller holds
    /// the person's lock. `grant_id` is the grant asking, for the shared-membership check.
    async fn ensure_member(
        &self,
        email: &Email,
        subject: &Subject,
        group: &UserGroup,
        role: Role,
        grant_id: access_core::GrantId,
        intent: Option<&GrantIntent>,
    ) -> Result<Membership, EnsureError> {
        for attempt in 0..2 {
            let user = self.current_user(email.as_str()).await?;
            let Some(user) = user else {
                match self.create_user(email, subject, group, role).await {
                    Ok(u) => {
                        return Ok(Membership {
                            user: u,
                            user_created: true,
                            added: true,
                            was_present: false,
                            shared: false,
                        });
                    }
                    // Someone created it between our scan and our POST (another replica, the
                    // portal): rescan and take the existing user.
                    Err(CloudConnexaError::Rejected { envelope, .. })
                        if attempt == 0 && envelope.fields().contains(&"email") =>
                    {
                        self.forget_user(email.as_str());
                        continue;
                    }
                    Err(e) => return Err(EnsureError::classify(e)),
                }
            };
            if user.in_group(&group.id) {
                let primary = user.group_id.as_deref() == Some(group.id.as_str());
                if let Some(i) = intent.filter(|i| !i.member_before && !primary) {
                    // Not a member before this grant started: this is its own earlier attempt,
                    // whose write landed but whose answer was lost. Revoke removes it.
                    tracing::info!(grant = %grant_id, user_id = %user.id, group = %group.name,
                        "adopting the membership an earlier attempt of this grant added");
                    return Ok(Membership {
                        user,
                        user_created: !i.user_existed,
                        added: true,
                        was_present: false,
                        shared: false,
                    });
                }
                let shared = !primary
                    && self
                        .needed_elsewhere(subject, &user, group, grant_id)
                        .await?;
                return Ok(Membership {
                    user,
                    user_created: false,
                    added: false,
                    was_present: !shared,
                    shared,
                });
            }
            let mut update = user.to_update();
            update.secondary_group_ids.push(group.id.clone());
            let u = self
                .client
                .update_user(&user.id, &update)
                .await
                .map_err(EnsureError::classify)?;
            return Ok(Membership {
                user: u,
                user_created: false,
                added: true,
                was_present: false,
                shared: false,
            });
        }
        Err(EnsureError::Other(ProviderError::Transient(format!(
            "Cloud Connexa user {email} kept changing; try again"
        ))))
    }

    async fn create_user(
        &self,
        email: &Email,
        subject: &Subject,
        group: &UserGroup,
        role: Role,
    ) -> Result<User, CloudConnexaError> {
        let (first, last, username) = names_from_email(email, &subject.name);
        let mut body = UserCreate {
            first_name: first,
            last_name: last,
            username,
            email: email.to_string(),
            group_id: None,
            // Created straight into the group: one write instead of two.
            secondary_group_ids: vec![group.id.clone()],
            role,
        };
        let created = match self.client.create_user(&body).await {
            Err(CloudConnexaError::Rejected { envelope, .. })
                if envelope.fields().contains(&"username") =>
            {
                // The local part is taken by someone with another domain: qualify it.
                body.username = format!(
                    "{}-{}",
                    email.local_part(),
                    email.domain().replace('.', "-")
                );
                self.client.create_user(&body).await?
            }
            other => other?,
        };
        tracing::info!(user_id = %created.id, "created Cloud Connexa user");
        self.remember_user(email.as_str(), &created.id);
        Ok(created)
    }

    async fn needed_elsewhere(
        &self,
        subject: &Subject,
        user: &User,
        group: &UserGroup,
        grant_id: access_core::GrantId,
    ) -> Result<bool, ProviderError> {
        self.usage
            .still_needed(&GroupUsageQuery {
                except: grant_id,
                subject: subject.clone(),
                user_id: user.id.clone(),
                group_id: group.id.clone(),
                group_name: group.name.clone(),
            })
            .await
    }

    fn require_email(subject: &Subject) -> Result<&Email, ProviderError> {
        subject.email.as_ref().ok_or_else(|| {
            ProviderError::Permanent(
                "Your Slack profile has no e-mail address, so Gatehouse cannot find or create your Cloud Connexa \
                 account. Ask a workspace admin to add your e-mail to your Slack profile, then request again."
                    .into(),
            )
        })
    }

    fn instructions(
        settings: &ResourceSettings,
        group: &str,
        email: &Email,
        m: &Membership,
        req: &GrantRequest,
    ) -> String {
        let mut s = format!(
            "Your Cloud Connexa account {email} is now in the group *{group}*, which gives access to *{}* until {}.\n\
             Connect using your standard VPN client (OpenVPN Connect or the CloudConnexa app).",
            settings.network,
            req.expires_at.format("%Y-%m-%d %H:%M UTC"),
        );
        if m.user_created {
            s.push_str(
                "\nThis is a new Cloud Connexa account: accept the invitation e-mail from OpenVPN first, then sign in with that e-mail.",
            );
        }
        if matches!(
            m.user.status,
            Some(UserStatus::Suspended | UserStatus::SuspendedIdp)
        ) {
            s.push_str("\nNote: your Cloud Connexa account is suspended; ask an administrator to reactivate it before connecting.");
        }
        s
    }

    /// Re-checks an existing grant (extension, or a job that runs again): same user and group,
    /// membership put back if it went missing. `None` if the user is gone (grant from scratch).
    async fn regrant(
        &self,
        req: &GrantRequest,
        h: GrantHandle,
        settings: &ResourceSettings,
    ) -> Result<Option<GrantOutcome>, ProviderError> {
        let Some(email) = req.subject.email.as_ref() else {
            return Ok(None);
        };
        let user = match self.client.user(&h.user_id).await {
            Ok(u) => u,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut events = Vec::new();
        let user = if user.in_group(&h.group_id) {
            user
        } else {
            let mut update = user.to_update();
            update.secondary_group_ids.push(h.group_id.clone());
            let u = self
                .client
                .update_user(&user.id, &update)
                .await
                .map_err(ProviderError::from)?;
            events.push(ProviderEvent {
                name: "user_added_to_group".into(),
                details: json!({"email": email.as_str(), "user_id": u.id, "group_id": h.group_id,
                                "group_name": h.group_name, "network": h.network, "restored": true}),
            });
            u
        };
        let m = Membership {
            user,
            user_created: false,
            added: false,
            was_present: h.group_was_present,
            shared: h.shared,
        };
        Ok(Some(GrantOutcome {
            instructions: Self::instructions(settings, &h.group_name, email, &m, req),
            handle: h.to_value(),
            secret: None,
            events,
            expires_at: None,
        }))
    }

    // --------------------------------------------------------------------------------------------
    // Reconciliation helpers (the cleanup binary calls these)

    /// Members of the resource's group as they are now, read fresh.
    async fn members(
        &self,
        resource: &Resource,
    ) -> Result<(String, Option<UserGroup>, Vec<LiveAccess>), ProviderError> {
        let settings = ResourceSettings::parse(resource)?;
        let name = settings.group_name(&self.mapping);
        let Some((group, _)) = self.find_group(&name, false).await? else {
            return Ok((name, None, Vec::new()));
        };
        let started = Instant::now();
        let users = self.client.users().await.map_err(ProviderError::from)?;
        self.reindex_users(&users, started);
        let live = users
            .iter()
            .filter(|u| u.in_group(&group.id))
            .map(|u| LiveAccess {
                holder: u.email.as_deref().unwrap_or_default().trim().to_ascii_lowercase(),
                details: json!({
                    "user_id": u.id, "group_id": group.id, "group_name": group.name, "network": settings.network,
                    "primary": u.group_id.as_deref() == Some(group.id.as_str()),
                }),
            })
            .collect();
        Ok((name, Some(group), live))
    }

    /// Compares the group's members with the holders of active grants (e-mails).
    pub async fn drift(
        &self,
        resource: &Resource,
        active_holders: &[String],
    ) -> Result<crate::Drift, ProviderError> {
        let settings = ResourceSettings::parse(resource)?;
        let (group_name, _, observed) = self.members(resource).await?;
        Ok(crate::reconcile::compute_drift(
            resource.id.clone(),
            group_name,
            active_holders,
            &observed,
            &settings.unmanaged_members,
        ))
    }

    /// Removes a membership nobody holds a grant for (one of [`crate::Drift::stray`]).
    pub async fn remove_stray(
        &self,
        resource: &Resource,
        stray: &LiveAccess,
    ) -> Result<Vec<ProviderEvent>, ProviderError> {
        let settings = ResourceSettings::parse(resource)?;
        let group_name = settings.group_name(&self.mapping);
        if settings
            .unmanaged_members
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&stray.holder))
        {
            return Ok(Vec::new());
        }
        let Some((group, _)) = self.find_group(&group_name, false).await? else {
            return Ok(Vec::new());
        };
        let _person = self
            .person_locks
            .lock(&stray.holder.to_ascii_lowercase())
            .await;
        let Some(user) = self.current_user(&stray.holder).await? else {
            return Ok(Vec::new());
        };
        if !user.in_secondary_group(&group.id) {
            return Ok(Vec::new());
        }
        let mut update = user.to_update();
        update.secondary_group_ids.retain(|g| g != &group.id);
        match self.client.update_user(&user.id, &update).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
        tracing::warn!(user_id = %user.id, group = %group.name, "removed stray Cloud Connexa membership");
        Ok(vec![ProviderEvent {
            name: "user_removed_from_group".into(),
            details: json!({"email": stray.holder, "user_id": user.id, "group_id": group.id,
                            "group_name": group.name, "network": settings.network, "reason": "drift_repair"}),
        }])
    }

    /// Puts back the membership of an active grant's holder that went missing (one of
    /// [`crate::Drift::missing`]). Never creates users: a deleted user is reported as an error.
    pub async fn restore_missing(
        &self,
        resource: &Resource,
        holder_email: &str,
    ) -> Result<Vec<ProviderEvent>, ProviderError> {
        let settings = ResourceSettings::parse(resource)?;
        let email =
            Email::parse(holder_email).map_err(|e| ProviderError::Permanent(e.to_string()))?;
        let group_name = settings.group_name(&self.mapping);
        let (group, group_created) =
            self.find_group(&group_name, true).await?.ok_or_else(|| {
                ProviderError::Transient(format!("group {group_name} could not be resolved"))
            })?;
        let _person = self.person_locks.lock(email.as_str()).await;
        let Some(user) = self.current_user(email.as_str()).await? else {
            return Err(ProviderError::Permanent(format!(
                "cannot restore access of {email} to {}: the Cloud Connexa user no longer exists",
                settings.network
            )));
        };
        let mut events = Vec::new();
        if group_created {
            events.push(group_event(&group, &settings.network));
        }
        if user.in_group(&group.id) {
            return Ok(events);
        }
        let mut update = user.to_update();
        update.secondary_group_ids.push(group.id.clone());
        let u = self
            .client
            .update_user(&user.id, &update)
            .await
            .map_err(ProviderError::from)?;
        events.push(ProviderEvent {
            name: "user_added_to_group".into(),
            details: json!({"email": email.as_str(), "user_id": u.id, "group_id": group.id,
                            "group_name": group.name, "network": settings.network, "reason": "drift_repair"}),
        });
        Ok(events)
    }
}

/// Why [`CloudConnexaProvider::ensure_member`] failed.
enum EnsureError {
    /// The write named a user or group that no longer exists: worth resolving both again.
    Stale(CloudConnexaError),
    Other(ProviderError),
}

impl EnsureError {
    fn classify(e: CloudConnexaError) -> Self {
        let stale = match &e {
            CloudConnexaError::NotFound { .. } => true,
            CloudConnexaError::Rejected { envelope, .. } => {
                envelope
                    .fields()
                    .iter()
                    .any(|f| f.to_ascii_lowercase().contains("group"))
                    || envelope.summary().to_ascii_lowercase().contains("group")
            }
            _ => false,
        };
        if stale {
            EnsureError::Stale(e)
        } else {
            EnsureError::Other(e.into())
        }
    }
}

impl From<CloudConnexaError> for EnsureError {
    fn from(e: CloudConnexaError) -> Self {
        EnsureError::Other(e.into())
    }
}

impl From<ProviderError> for EnsureError {
    fn from(e: ProviderError) -> Self {
        EnsureError::Other(e)
    }
}

fn group_event(group: &UserGroup, network: &str) -> ProviderEvent {
    ProviderEvent {
        name: "group_created".into(),
        details: json!({"group_id": group.id, "group_name": group.name, "network": network}),
    }
}

#[async_trait]
impl Provider for CloudConnexaProvider {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    async fn grant(&self, req: &GrantRequest) -> Result<GrantOutcome, ProviderError> {
        let settings = ResourceSettings::parse(&req.resource)?;
        let email = Self::require_email(&req.subject)?;
        let group_name = settings.group_name(&self.mapping);
        let role = settings.role()?.unwrap_or(self.default_role);

        let _person = self.person_locks.lock(email.as_str()).await;
        // A grant being extended: same person and group → check and keep its handle. A handle
        // for another group (the resource's group was reconfigured) or another e-mail is undone
        // once the new membership is in place.
        let mut previous = None;
        if let Some(h) = req.existing.as_ref().and_then(GrantHandle::parse) {
            if h.email.eq_ignore_ascii_case(email.as_str()) && h.group_name == group_name {
                if let Some(outcome) = self.regrant(req, h, &settings).await? {
                    return Ok(outcome);
                }
            } else {
                previous = Some(h);
            }
        }

        // Nothing checks the network before this point (the engine never calls `validate`), so a
        // resource naming a network Cloud Connexa does not have would otherwise get a group and
        // a membership that lead nowhere while the person is told access is ready. The list is
        // cached, so this costs one read per TTL.
        if !self.network_exists(&settings.network).await? {
            return Err(ProviderError::Permanent(format!(
                "Network '{}' does not exist. Use `/vpn-access list` to see available networks.",
                settings.network
            )));
        }

        let mut events = Vec::new();
        let mut attempt = 0;
        let mut group_created_here = false;
        let (group, m) = loop {
            attempt += 1;
            let (group, group_created) =
                self.find_group(&group_name, true).await?.ok_or_else(|| {
                    ProviderError::Transient(format!("group {group_name} could not be resolved"))
                })?;
            if group_created {
                group_created_here = true;
                events.push(group_event(&group, &settings.network));
            }
            let intent = req
                .intent
                .as_ref()
                .and_then(GrantIntent::parse)
                .filter(|i| i.covers(email.as_str(), &group_name));
            match self
                .ensure_member(
                    email,
                    &req.subject,
                    &group,
                    role,
                    req.grant_id,
                    intent.as_ref(),
                )
                .await
            {
                Ok(m) => break (group, m),
                // The cached group may have been deleted in the portal (or the user between GET
                // and PUT): resolve both again, once.
                Err(EnsureError::Stale(e)) if attempt == 1 => {
                    tracing::warn!(group = %group_name, error = %e, "Cloud Connexa refused the change; resolving user and group again");
                    self.forget_groups();
                    self.forget_user(email.as_str());
                }
                Err(EnsureError::Stale(e)) => return Err(e.into()),
                Err(EnsureError::Other(e)) => return Err(e),
            }
        };

        if m.user_created {
            events.push(ProviderEvent {
                name: "user_created".into(),
                details: json!({"email": email.as_str(), "user_id": m.user.id, "username": m.user.username,
                                "role": role.as_str()}),
            });
        }
        if m.added {
            events.push(ProviderEvent {
                name: "user_added_to_group".into(),
                details: json!({"email": email.as_str(), "user_id": m.user.id, "group_id": group.id,
                                "group_name": group.name, "network": settings.network}),
            });
        }
        tracing::info!(
            grant = %req.grant_id, user_id = %m.user.id, group = %group.name,
            added = m.added, was_present = m.was_present, shared = m.shared, "Cloud Connexa access granted"
        );
        if let Some(prev) = previous.filter(|p| p.group_id != group.id || p.user_id != m.user.id) {
            match self
                .remove_membership(&prev, &req.subject, req.grant_id)
                .await
            {
                Ok(out) => events.extend(out.events),
                // Not worth failing the grant over: drift repair removes it later.
                Err(e) => {
                    tracing::warn!(error = %e, group = %prev.group_name, "could not remove the previous membership")
                }
            }
        }
        let handle = GrantHandle {
            v: GrantHandle::VERSION,
            user_id: m.user.id.clone(),
            email: email.to_string(),
            group_id: group.id.clone(),
            group_name: group.name.clone(),
            network: settings.network.clone(),
            user_created: m.user_created,
            group_created: group_created_here,
            group_was_present: m.was_present,
            shared: m.shared,
        };
        Ok(GrantOutcome {
            instructions: Self::instructions(&settings, &group.name, email, &m, req),
            handle: handle.to_value(),
            secret: None,
            events,
            expires_at: None,
        })
    }

    async fn intent(&self, req: &GrantRequest) -> Result<serde_json::Value, ProviderError> {
        let settings = ResourceSettings::parse(&req.resource)?;
        let email = Self::require_email(&req.subject)?;
        let group_name = settings.group_name(&self.mapping);
        let _person = self.person_locks.lock(email.as_str()).await;
        let user = self.current_user(email.as_str()).await?;
        let group = self.find_group(&group_name, false).await?;
        let member_before = match (&user, &group) {
            (Some(u), Some((g, _))) => u.in_group(&g.id),
            _ => false,
        };
        Ok(GrantIntent {
            v: GrantIntent::VERSION,
            grant_id: req.grant_id,
            email: email.to_string(),
            group_name,
            network: settings.network,
            user_existed: user.is_some(),
            member_before,
        }
        .to_value())
    }

    async fn revoke(&self, req: &RevokeRequest) -> Result<RevokeOutcome, ProviderError> {
        // Ahead of grants for the credential's rate-limit tokens (see `ratelimit::urgent`).
        crate::ratelimit::urgent(async {
            let Some(h) = GrantHandle::parse(&req.handle) else {
                return self.revoke_by_intent(req).await;
            };
            let _person = self.person_locks.lock(&h.email.to_ascii_lowercase()).await;
            self.remove_membership(&h, &req.subject, req.grant_id).await
        })
        .await
    }

    async fn observe(&self, resource: &Resource) -> Result<Vec<LiveAccess>, ProviderError> {
        Ok(self.members(resource).await?.2)
    }

    async fn unavailable_reason(
        &self,
        resource: &Resource,
    ) -> Result<Option<String>, ProviderError> {
        let settings = ResourceSettings::parse(resource)?;
        if self.network_exists(&settings.network).await? {
            Ok(None)
        } else {
            // The Cloud Connexa document's words.
            Ok(Some(format!(
                "Network '{}' does not exist. Use `/vpn-access list` to see available networks.",
                settings.network
            )))
        }
    }

    async fn validate(&self, resource: &Resource) -> Result<(), ProviderError> {
        let settings = ResourceSettings::parse(resource)?;
        if self.network_exists(&settings.network).await? {
            Ok(())
        } else {
            Err(ProviderError::Permanent(format!(
                "resource '{}': Cloud Connexa network '{}' does not exist",
                resource.id, settings.network
            )))
        }
    }
}

impl CloudConnexaProvider {
    /// Revoke for a grant whose call never answered (no handle): removes the membership its
    /// recorded intent names, unless the person was a member before the grant.
    async fn revoke_by_intent(&self, req: &RevokeRequest) -> Result<RevokeOutcome, ProviderError> {
        let Some(i) = GrantIntent::parse(&req.intent) else {
            return Ok(RevokeOutcome {
                events: Vec::new(),
                note: Some(
                    "no Cloud Connexa grant handle or intent was recorded; nothing to remove"
                        .into(),
                ),
            });
        };
        if i.member_before {
            return Ok(RevokeOutcome {
                events: Vec::new(),
                note: Some(format!(
                    "{} was already in group {} before the grant; membership kept",
                    i.email, i.group_name
                )),
            });
        }
        let Some((group, _)) = self.find_group(&i.group_name, false).await? else {
            return Ok(RevokeOutcome {
                events: Vec::new(),
                note: Some(format!(
                    "group {} does not exist; nothing to remove",
                    i.group_name
                )),
            });
        };
        let _person = self.person_locks.lock(&i.email.to_ascii_lowercase()).await;
        let Some(user) = self.current_user(&i.email).await? else {
            return Ok(RevokeOutcome {
                events: Vec::new(),
                note: Some(format!(
                    "Cloud Connexa user {} does not exist; nothing to remove",
                    i.email
                )),
            });
        };
        let h = GrantHandle {
            v: GrantHandle::VERSION,
            user_id: user.id.clone(),
            email: i.email.clone(),
            group_id: group.id.clone(),
            group_name: group.name.clone(),
            network: i.network.clone(),
            user_created: !i.user_existed,
            group_created: false,
            group_was_present: false,
            shared: false,
        };
        self.remove_membership(&h, &req.subject, req.grant_id).await
    }

    /// Undoes what the grant behind `h` added. The caller holds the person's lock.
    async fn remove_membership(
        &self,
        h: &GrantHandle,
        subject: &Subject,
        grant_id: access_core::GrantId,
    ) -> Result<RevokeOutcome, ProviderError> {
        if h.group_was_present {
            return Ok(RevokeOutcome {
                events: Vec::new(),
                note: Some(format!(
                    "{} was already in group {} before the grant; membership kept",
                    h.email, h.group_name
                )),
            });
        }
        let user = match self.client.user(&h.user_id).await {
            Ok(u) => u,
            Err(e) if e.is_not_found() => {
                self.forget_user(&h.email);
                return Ok(RevokeOutcome {
                    events: Vec::new(),
                    note: Some(format!(
                        "Cloud Connexa user {} no longer exists; nothing to remove",
                        h.email
                    )),
                });
            }
            Err(e) => return Err(e.into()),
        };
        if !user.in_secondary_group(&h.group_id) {
            return Ok(RevokeOutcome {
                events: Vec::new(),
                note: Some(format!(
                    "{} is no longer in group {}; nothing to remove",
                    h.email, h.group_name
                )),
            });
        }
        let group = UserGroup {
            id: h.group_id.clone(),
            name: h.group_name.clone(),
            internet_access: None,
            max_device: None,
            connect_auth: None,
            all_regions_included: None,
            vpn_region_ids: Vec::new(),
            gateways_ids: Vec::new(),
        };
        if self
            .needed_elsewhere(subject, &user, &group, grant_id)
            .await?
        {
            return Ok(RevokeOutcome {
                events: Vec::new(),
                note: Some(format!(
                    "group {} kept: another live grant of {} still needs it",
                    h.group_name, h.email
                )),
            });
        }
        let mut update = user.to_update();
        update.secondary_group_ids.retain(|g| g != &h.group_id);
        match self.client.update_user(&user.id, &update).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                return Ok(RevokeOutcome {
                    events: Vec::new(),
                    note: Some(format!(
                        "Cloud Connexa user {} was deleted meanwhile; nothing to remove",
                        h.email
                    )),
                });
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(grant = %grant_id, user_id = %user.id, group = %h.group_name, "Cloud Connexa access revoked");
        Ok(RevokeOutcome {
            events: vec![ProviderEvent {
                name: "user_removed_from_group".into(),
                details: json!({"email": h.email, "user_id": user.id, "group_id": h.group_id,
                                "group_name": h.group_name, "network": h.network}),
            }],
            note: None,
        })
    }
}

impl fmt::Display for GrantHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in {} ({})",
            self.email, self.group_name, self.network
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_sensibly() {
        let e = Email::parse("jane.doe+vpn@example.com").unwrap();
        assert_eq!(
            names_from_email(&e, ""),
            ("Jane".into(), "Doe".into(), "jane.doe+vpn".into())
        );
        let e = Email::parse("mary_ann-smith@example.com").unwrap();
        assert_eq!(names_from_email(&e, "").1, "Ann Smith");
        let e = Email::parse("jdoe@example.com").unwrap();
        assert_eq!(
            names_from_email(&e, "John Doe"),
            ("John".into(), "Doe".into(), "jdoe".into())
        );
        assert_eq!(
            names_from_email(&e, "jd"),
            ("Jdoe".into(), "Jdoe".into(), "jdoe".into())
        );
    }

    #[test]
    fn group_name_precedence() {
        let mut mapping = HashMap::new();
        mapping.insert("prod".to_string(), "prod-oncall".to_string());
        let s = |network: &str, group: Option<&str>| ResourceSettings {
            network: network.into(),
            group: group.map(Into::into),
            role: None,
            unmanaged_members: vec![],
        };
        assert_eq!(s("prod", Some("explicit")).group_name(&mapping), "explicit");
        assert_eq!(s("prod", None).group_name(&mapping), "prod-oncall");
        assert_eq!(
            s("dev-network", None).group_name(&mapping),
            "dev-network-users"
        );
    }

    #[test]
    fn mapping_parses() {
        assert_eq!(parse_mapping("").unwrap().len(), 0);
        assert_eq!(
            parse_mapping(r#"{"dev-network": "devs"}"#).unwrap()["dev-network"],
            "devs"
        );
        assert!(parse_mapping("[1]").is_err());
    }

    #[test]
    fn handle_round_trips() {
        let h = GrantHandle {
            v: 1,
            user_id: "u".into(),
            email: "a@b.co".into(),
            group_id: "g".into(),
            group_name: "n".into(),
            network: "net".into(),
            user_created: true,
            group_created: false,
            group_was_present: false,
            shared: false,
        };
        assert_eq!(GrantHandle::parse(&h.to_value()), Some(h));
        assert_eq!(GrantHandle::parse(&serde_json::Value::Null), None);
    }
}
