//! Slack installations with their tokens: sealing on save, opening on read, and "which bot
//! token serves team T".
//!
//! The installation model is access-core's ([`InstallationInfo`], [`SealedInstallation`],
//! [`InstallationStore`], [`StateCheck`], re-exported here): this module adds the opened form,
//! [`Installation`] (info plus clear tokens as [`Secret`]s, never printed), and
//! [`Installations`], which joins a store and a [`TokenCipher`]. [`MemoryInstallationStore`] is
//! the store for tests and single-process use; store-sqlx's `SqlStore` is the durable one
//! (`slack_installations`, `oauth_states`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use access_core::ports::{
    InstallationInfo, InstallationStore, SealedInstallation, StateCheck, StoreError,
};

use crate::api::SlackApi;
use crate::config::Secret;
use crate::crypto::{CryptoError, TokenCipher};

/// An installation with its tokens in clear (in memory only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installation {
    /// What may be shown.
    pub info: InstallationInfo,
    /// The bot token (`xoxb-…`).
    pub bot_token: Option<Secret>,
    /// The bot's refresh token, for rotating tokens.
    pub bot_refresh_token: Option<Secret>,
    /// The user token (`xoxp-…`), if one was requested.
    pub user_token: Option<Secret>,
    /// The user's refresh token, for rotating tokens.
    pub user_refresh_token: Option<Secret>,
    /// The incoming webhook URL is a bearer capability too, so it is sealed like a token.
    pub incoming_webhook_url: Option<Secret>,
}

/// A storage failure or a token that would not decrypt.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The installation store failed.
    #[error("installation store: {0}")]
    Store(#[from] StoreError),
    /// A sealed token did not open (wrong key, damaged ciphertext) or a token did not seal.
    #[error("installation tokens: {0}")]
    Crypto(#[from] CryptoError),
}

impl InstallError {
    /// A stable code: the store's ([`StoreError::code`]) or `crypto`.
    pub fn code(&self) -> &'static str {
        match self {
            InstallError::Store(e) => e.code(),
            InstallError::Crypto(_) => "crypto",
        }
    }
}

/// An [`InstallationStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryInstallationStore {
    installs: Mutex<Vec<SealedInstallation>>,
    /// state → (expires_at, consumed)
    states: Mutex<HashMap<String, (DateTime<Utc>, bool)>>,
    orgs: Mutex<HashMap<String, String>>,
    bindings: Mutex<HashMap<String, String>>,
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::database_msg("installation store lock poisoned")
}

fn same_owner(i: &InstallationInfo, enterprise_id: Option<&str>, team_id: Option<&str>) -> bool {
    i.enterprise_id.as_deref().unwrap_or("") == enterprise_id.unwrap_or("")
        && i.team_id.as_deref().unwrap_or("") == team_id.unwrap_or("")
}

#[async_trait]
impl InstallationStore for MemoryInstallationStore {
    async fn save(&self, i: &SealedInstallation) -> Result<(), StoreError> {
        let mut g = self.installs.lock().map_err(poisoned)?;
        let mut i = i.clone();
        let owner = (i.info.enterprise_id.clone(), i.info.team_id.clone());
        if let Some(pos) = g
            .iter()
            .position(|x| same_owner(&x.info, owner.0.as_deref(), owner.1.as_deref()))
        {
            i.info.installed_at = g[pos].info.installed_at;
            g.remove(pos);
        }
        g.push(i);
        Ok(())
    }

    async fn find(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
    ) -> Result<Option<SealedInstallation>, StoreError> {
        let g = self.installs.lock().map_err(poisoned)?;
        Ok(g.iter()
            .find(|x| same_owner(&x.info, enterprise_id, team_id))
            .cloned())
    }

    async fn find_team(&self, team_id: &str) -> Result<Option<SealedInstallation>, StoreError> {
        let g = self.installs.lock().map_err(poisoned)?;
        Ok(g.iter()
            .rev()
            .find(|x| x.info.team_id.as_deref() == Some(team_id))
            .cloned())
    }

    async fn all(&self) -> Result<Vec<SealedInstallation>, StoreError> {
        Ok(self.installs.lock().map_err(poisoned)?.clone())
    }

    async fn delete(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut g = self.installs.lock().map_err(poisoned)?;
        let before = g.len();
        g.retain(|x| !same_owner(&x.info, enterprise_id, team_id));
        Ok(g.len() != before)
    }

    async fn clear_user_token(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
        user_id: &str,
    ) -> Result<bool, StoreError> {
        let mut g = self.installs.lock().map_err(poisoned)?;
        let mut changed = false;
        for x in g.iter_mut().filter(|x| {
            same_owner(&x.info, enterprise_id, team_id)
                && x.info.user_id.as_deref() == Some(user_id)
        }) {
            x.user_token = None;
            x.user_refresh_token = None;
            x.info.user_token_expires_at = None;
            changed = true;
        }
        Ok(changed)
    }

    async fn issue_state(
        &self,
        state: &str,
        _created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut g = self.states.lock().map_err(poisoned)?;
        if g.contains_key(state) {
            return Err(StoreError::Duplicate("OAuth state".into()));
        }
        g.insert(state.to_string(), (expires_at, false));
        Ok(())
    }

    async fn consume_state(
        &self,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<StateCheck, StoreError> {
        let mut g = self.states.lock().map_err(poisoned)?;
        Ok(match g.get_mut(state) {
            None => StateCheck::Unknown,
            Some((_, true)) => StateCheck::Reused,
            Some((exp, false)) if *exp <= now => StateCheck::Expired,
            Some((_, used)) => {
                *used = true;
                StateCheck::Valid
            }
        })
    }

    async fn cleanup_states(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut g = self.states.lock().map_err(poisoned)?;
        let before = g.len();
        g.retain(|_, (exp, _)| *exp > now);
        Ok((before - g.len()) as u64)
    }

    async fn remember_team_enterprise(
        &self,
        team_id: &str,
        enterprise_id: &str,
    ) -> Result<(), StoreError> {
        self.orgs
            .lock()
            .map_err(poisoned)?
            .insert(team_id.to_string(), enterprise_id.to_string());
        Ok(())
    }

    async fn team_enterprise(&self, team_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.orgs.lock().map_err(poisoned)?.get(team_id).cloned())
    }

    async fn bind_state(&self, state: &str, team: &str) -> Result<(), StoreError> {
        if !self.states.lock().map_err(poisoned)?.contains_key(state) {
            return Err(StoreError::NotFound("OAuth state".into()));
        }
        self.bindings
            .lock()
            .map_err(poisoned)?
            .insert(state.to_string(), team.to_string());
        Ok(())
    }

    async fn state_binding(&self, state: &str) -> Result<Option<String>, StoreError> {
        Ok(self.bindings.lock().map_err(poisoned)?.get(state).cloned())
    }
}

/// Installations with encryption: the one type the rest of the adapter uses.
#[derive(Debug, Clone)]
pub struct Installations {
    store: Arc<dyn InstallationStore>,
    cipher: Arc<TokenCipher>,
}

impl Installations {
    pub fn new(store: Arc<dyn InstallationStore>, cipher: Arc<TokenCipher>) -> Self {
        Self { store, cipher }
    }

    /// In memory, for tests and examples.
    pub fn in_memory(cipher: TokenCipher) -> Self {
        Self::new(
            Arc::new(MemoryInstallationStore::default()),
            Arc::new(cipher),
        )
    }

    pub fn store(&self) -> &Arc<dyn InstallationStore> {
        &self.store
    }

    fn seal_one(&self, s: &Option<Secret>) -> Result<Option<Vec<u8>>, InstallError> {
        s.as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| self.cipher.encrypt(s.expose()))
            .transpose()
            .map_err(InstallError::from)
    }

    fn open_one(&self, b: &Option<Vec<u8>>) -> Result<Option<Secret>, InstallError> {
        b.as_ref()
            .map(|b| self.cipher.decrypt(b).map(Secret::new))
            .transpose()
            .map_err(InstallError::from)
    }

    pub fn seal(&self, i: &Installation) -> Result<SealedInstallation, InstallError> {
        Ok(SealedInstallation {
            info: i.info.clone(),
            bot_token: self.seal_one(&i.bot_token)?,
            bot_refresh_token: self.seal_one(&i.bot_refresh_token)?,
            user_token: self.seal_one(&i.user_token)?,
            user_refresh_token: self.seal_one(&i.user_refresh_token)?,
            incoming_webhook_url: self.seal_one(&i.incoming_webhook_url)?,
        })
    }

    pub fn open(&self, s: &SealedInstallation) -> Result<Installation, InstallError> {
        Ok(Installation {
            info: s.info.clone(),
            bot_token: self.open_one(&s.bot_token)?,
            bot_refresh_token: self.open_one(&s.bot_refresh_token)?,
            user_token: self.open_one(&s.user_token)?,
            user_refresh_token: self.open_one(&s.user_refresh_token)?,
            incoming_webhook_url: self.open_one(&s.incoming_webhook_url)?,
        })
    }

    pub async fn save(&self, i: &Installation) -> Result<(), InstallError> {
        self.store.save(&self.seal(i)?).await?;
        if let (Some(t), Some(e)) = (
            i.info.team_id.as_deref().filter(|t| !t.is_empty()),
            i.info.enterprise_id.as_deref().filter(|e| !e.is_empty()),
        ) {
            self.store.remember_team_enterprise(t, e).await?;
        }
        Ok(())
    }

    /// The installation serving workspace `team_id`: its own, or else the org-wide install of
    /// `enterprise_id`.
    pub async fn resolve(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
    ) -> Result<Option<Installation>, InstallError> {
        let own = match team_id.filter(|t| !t.is_empty()) {
            Some(t) => self.store.find_team(t).await?,
            None => None,
        };
        if own.is_some() {
            return own.map(|s| self.open(&s)).transpose();
        }
        let team = team_id.filter(|t| !t.is_empty());
        // Workspace → organisation is kept in the store (learnt from payloads, which carry both):
        // notifications name only the workspace, and a restarted server or gatehouse-cleanup has
        // no memory of earlier requests.
        let enterprise = match (enterprise_id.filter(|e| !e.is_empty()), team) {
            (Some(e), Some(t)) => {
                if self.store.team_enterprise(t).await?.as_deref() != Some(e) {
                    self.store.remember_team_enterprise(t, e).await?;
                }
                Some(e.to_string())
            }
            (Some(e), None) => Some(e.to_string()),
            (None, Some(t)) => match self.store.team_enterprise(t).await? {
                Some(e) => Some(e),
                // People of an org-wide install are keyed by the organisation id (see
                // `Installations::identity_scope`), so a notification may name it directly.
                None => Some(t.to_string()),
            },
            (None, None) => None,
        };
        let found = match enterprise {
            Some(e) => self.store.find(Some(&e), None).await?,
            None => None,
        };
        found.map(|s| self.open(&s)).transpose()
    }

    /// The bot token for workspace `team_id` (or its organisation), if installed.
    pub async fn bot_token(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
    ) -> Result<Option<Secret>, InstallError> {
        Ok(self
            .resolve(enterprise_id, team_id)
            .await?
            .and_then(|i| i.bot_token))
    }

    /// `default` (the `SLACK_BOT_TOKEN` client) switched to the bot token of the installation
    /// serving `team_id`; `default` itself when that workspace has no installation.
    pub async fn api_for(
        &self,
        default: &SlackApi,
        team_id: &str,
    ) -> Result<SlackApi, InstallError> {
        Ok(match self.bot_token(None, Some(team_id)).await? {
            Some(t) => default.with_token(t),
            None => default.clone(),
        })
    }

    /// Re-encrypts every installation whose tokens are not under the primary key; returns how
    /// many were rewritten (`gatehouse-cleanup rotate-keys`).
    pub async fn rotate_keys(&self) -> Result<usize, InstallError> {
        let mut n = 0;
        for s in self.store.all().await? {
            let stale = [
                &s.bot_token,
                &s.bot_refresh_token,
                &s.user_token,
                &s.user_refresh_token,
                &s.incoming_webhook_url,
            ]
            .into_iter()
            .flatten()
            .any(|b| self.cipher.needs_reencrypt(b));
            if stale {
                let open = self.open(&s)?;
                self.store.save(&self.seal(&open)?).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn inst(team: Option<&str>, ent: Option<&str>, token: &str) -> Installation {
        Installation {
            info: InstallationInfo {
                team_id: team.map(str::to_string),
                enterprise_id: ent.map(str::to_string),
                is_enterprise_install: team.is_none(),
                installed_at: Utc::now(),
                updated_at: Utc::now(),
                ..Default::default()
            },
            bot_token: Some(Secret::new(token)),
            user_token: Some(Secret::new(format!("xoxp-{token}"))),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn sealed_at_rest_opened_on_read() {
        let store = Arc::new(MemoryInstallationStore::default());
        let ins = Installations::new(
            store.clone(),
            Arc::new(TokenCipher::from_keys(&[[1; 32]]).unwrap()),
        );
        ins.save(&inst(Some("T1"), None, "xoxb-one")).await.unwrap();
        let raw = store.find(None, Some("T1")).await.unwrap().unwrap();
        let ct = raw.bot_token.clone().unwrap();
        assert!(!ct.windows(4).any(|w| w == b"xoxb"));
        assert_eq!(
            ins.bot_token(None, Some("T1"))
                .await
                .unwrap()
                .unwrap()
                .expose(),
            "xoxb-one"
        );
        assert!(!format!("{raw:?}").contains("xoxb"));
        assert!(
            !format!("{:?}", ins.resolve(None, Some("T1")).await.unwrap()).contains("xoxb-one")
        );
        // Another key cannot open it.
        let other = Installations::new(
            store.clone(),
            Arc::new(TokenCipher::from_keys(&[[2; 32]]).unwrap()),
        );
        assert!(matches!(
            other.resolve(None, Some("T1")).await,
            Err(InstallError::Crypto(_))
        ));
    }

    #[tokio::test]
    async fn org_wide_install_serves_its_workspaces() {
        let ins = Installations::in_memory(TokenCipher::from_keys(&[[1; 32]]).unwrap());
        ins.save(&inst(None, Some("E1"), "xoxb-org")).await.unwrap();
        ins.save(&inst(Some("T2"), Some("E1"), "xoxb-own"))
            .await
            .unwrap();
        let t = |e: Option<&'static str>, t: Option<&'static str>| {
            let ins = ins.clone();
            async move {
                ins.bot_token(e, t)
                    .await
                    .unwrap()
                    .map(|s| s.expose().to_string())
            }
        };
        // Unknown workspace, no enterprise given: nothing.
        assert_eq!(t(None, Some("T9")).await, None);
        assert_eq!(t(Some("E1"), Some("T9")).await.as_deref(), Some("xoxb-org"));
        assert_eq!(t(Some("E1"), Some("T2")).await.as_deref(), Some("xoxb-own"));
        // Once a request told which organisation T9 belongs to, notifications (team only) find it.
        assert_eq!(t(None, Some("T9")).await.as_deref(), Some("xoxb-org"));
        assert_eq!(t(None, Some("T10")).await, None);
    }

    #[tokio::test]
    async fn rotate_keys_reencrypts_under_the_new_key() {
        let store = Arc::new(MemoryInstallationStore::default());
        let old = Installations::new(
            store.clone(),
            Arc::new(TokenCipher::from_keys(&[[1; 32]]).unwrap()),
        );
        old.save(&inst(Some("T1"), None, "xoxb-a")).await.unwrap();
        old.save(&inst(Some("T2"), None, "xoxb-b")).await.unwrap();
        let both = Installations::new(
            store.clone(),
            Arc::new(TokenCipher::from_keys(&[[2; 32], [1; 32]]).unwrap()),
        );
        assert_eq!(both.rotate_keys().await.unwrap(), 2);
        assert_eq!(both.rotate_keys().await.unwrap(), 0);
        let new_only = Installations::new(
            store.clone(),
            Arc::new(TokenCipher::from_keys(&[[2; 32]]).unwrap()),
        );
        let tok = new_only.bot_token(None, Some("T2")).await.unwrap().unwrap();
        assert_eq!(tok.expose(), "xoxb-b");
    }

    #[tokio::test]
    async fn memory_states() {
        let s = MemoryInstallationStore::default();
        let now = Utc::now();
        let later = now + chrono::Duration::minutes(5);
        s.issue_state("a", now, later).await.unwrap();
        assert!(s.issue_state("a", now, later).await.is_err());
        assert_eq!(s.consume_state("a", now).await.unwrap(), StateCheck::Valid);
        assert_eq!(s.consume_state("a", now).await.unwrap(), StateCheck::Reused);
        s.issue_state("b", now, later).await.unwrap();
        assert_eq!(
            s.consume_state("b", later).await.unwrap(),
            StateCheck::Expired
        );
        assert_eq!(
            s.consume_state("zz", now).await.unwrap(),
            StateCheck::Unknown
        );
        assert_eq!(s.cleanup_states(later).await.unwrap(), 2);
    }
}
