//! [`CloudConnexaProvider`]: the `Provider` port on Cloud Connexa. Temporary network access is a
//! membership of the user in a user group through `secondaryGroupIds`, so the user's primary group
//! and every other membership stay exactly as they were. The port's calls are in `port`
//! (grant, revoke, …), reconciliation in `drift`; this file holds the provider's state and the
//! user, group and membership steps they share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use access_core::ports::{
    GrantOutcome, GrantRequest, ProviderError, ProviderEvent, ProviderKind, SettingsCache,
};
use access_core::{Email, Resource, Subject};
use serde_json::json;
use tokio::time::Instant;

use crate::cache::{Index, KeyedLocks, lock};
use crate::client::CloudConnexaClient;
use crate::error::CloudConnexaError;
use crate::handle::{GrantHandle, GrantIntent};
use crate::models::{Network, Role, User, UserCreate, UserGroup, UserGroupRequest, UserStatus};
use crate::names::names_from_email;
use crate::settings::{ProviderConfig, ResourceSettings};
use crate::usage::{GroupUsage, GroupUsageQuery, NoOtherUsers};

mod drift;
mod port;

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
    /// Each resource's settings, decoded once.
    settings: SettingsCache<ResourceSettings>,
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
    /// The kind resources name (`provider = "cloudconnexa"`).
    pub const KIND: ProviderKind = ProviderKind::CloudConnexa;

    /// A provider talking to the API `config.client` describes.
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
            settings: SettingsCache::default(),
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

    /// The same provider asking `usage` whether another live grant needs a group.
    pub fn with_group_usage(mut self, usage: Arc<dyn GroupUsage>) -> Self {
        self.usage = usage;
        self
    }

    /// From `CLOUDCONNEXA_API_URL`, `CLOUDCONNEXA_CLIENT_ID`, `CLOUDCONNEXA_CLIENT_SECRET` and
    /// `NETWORK_GROUP_MAPPING`, read through `get` (see [`ProviderConfig::from_lookup`]).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, CloudConnexaError> {
        Self::new(ProviderConfig::from_lookup(get)?)
    }

    /// The API client, for calls the provider does not wrap.
    pub fn client(&self) -> &CloudConnexaClient {
        &self.client
    }

    /// The group a resource manages.
    pub fn group_name_for(&self, resource: &Resource) -> Result<String, ProviderError> {
        Ok(self.settings(resource)?.group_name(&self.mapping))
    }

    /// Decodes the settings of `resources` (those of this provider) now, so a bad one stops the
    /// start instead of a grant; later calls use the decoded copies.
    pub fn load_settings<'r>(
        &self,
        resources: impl IntoIterator<Item = &'r Resource>,
    ) -> Result<(), ProviderError> {
        self.settings
            .load(&Self::KIND, resources, ResourceSettings::parse)
    }

    /// A resource's settings, decoded on first use and kept.
    fn settings(&self, resource: &Resource) -> Result<Arc<ResourceSettings>, ProviderError> {
        self.settings.get(resource, ResourceSettings::parse)
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
                let settings = self
                    .settings(r)
                    .inspect_err(
                        |e| tracing::warn!(resource = %r.id, error = %e, "resource not listed"),
                    )
                    .ok()?;
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
        Err(EnsureError::Other(ProviderError::transient(format!(
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

    /// Adds `user` to the group as a secondary membership (the user as read, plus the group).
    async fn add_to_group(&self, user: &User, group_id: &str) -> Result<User, ProviderError> {
        let mut update = user.to_update();
        update.secondary_group_ids.push(group_id.to_string());
        Ok(self.client.update_user(&user.id, &update).await?)
    }

    fn require_email(subject: &Subject) -> Result<&Email, ProviderError> {
        subject.email.as_ref().ok_or_else(|| {
            ProviderError::permanent(
                "Your Slack profile has no e-mail address, so Gatehouse cannot find or create your Cloud Connexa \
                 account. Ask a workspace admin to add your e-mail to your Slack profile, then request again.",
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
            let u = self.add_to_group(&user, &h.group_id).await?;
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
