//! Slack installations: one per workspace (or Enterprise Grid organisation), and the OAuth
//! states of the install flow. The one description of an installation that the Slack adapter
//! (which seals and opens the tokens), the SQL store (which keeps the rows) and the runtime share.
//!
//! Tokens here are always ciphertext ([`SealedInstallation`]): a store never sees a token in
//! clear and needs no key. The Slack adapter's `Installation` is the opened form.

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::StoreError;

/// Everything about an installation that is safe to show (the installation document's
/// `slack_settings` without tokens). The install status endpoint serialises exactly this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstallationInfo {
    /// The workspace; `None` for an org-wide Enterprise Grid install.
    pub team_id: Option<String>,
    /// The workspace's name.
    pub team_name: Option<String>,
    /// The Enterprise Grid organisation, if any.
    pub enterprise_id: Option<String>,
    /// The organisation's name.
    pub enterprise_name: Option<String>,
    /// The organisation's URL.
    pub enterprise_url: Option<String>,
    /// Whether the app was installed for the whole organisation.
    pub is_enterprise_install: bool,
    /// The Slack app installed.
    pub app_id: Option<String>,
    /// The bot's id.
    pub bot_id: Option<String>,
    /// The bot's user id.
    pub bot_user_id: Option<String>,
    /// The bot token's scopes (comma-separated, as Slack gives them).
    pub bot_scopes: Option<String>,
    /// When a rotating bot token expires.
    pub bot_token_expires_at: Option<DateTime<Utc>>,
    /// The user who granted a user token, if one was requested.
    pub user_id: Option<String>,
    /// The user token's scopes.
    pub user_scopes: Option<String>,
    /// When a rotating user token expires.
    pub user_token_expires_at: Option<DateTime<Utc>>,
    /// The incoming webhook's channel name.
    pub incoming_webhook_channel: Option<String>,
    /// The incoming webhook's channel id.
    pub incoming_webhook_channel_id: Option<String>,
    /// Where the incoming webhook is configured.
    pub incoming_webhook_configuration_url: Option<String>,
    /// Who installed the app.
    pub installer_user_id: Option<String>,
    /// When the owner first installed the app (kept across re-installs).
    pub installed_at: DateTime<Utc>,
    /// When the installation was last written.
    pub updated_at: DateTime<Utc>,
}

/// An installation as stored: the info plus its tokens as ciphertext (the Slack adapter's
/// `TokenCipher` format, opaque here).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SealedInstallation {
    /// What may be shown.
    pub info: InstallationInfo,
    /// The bot token, sealed.
    pub bot_token: Option<Vec<u8>>,
    /// The bot's refresh token (rotating tokens), sealed.
    pub bot_refresh_token: Option<Vec<u8>>,
    /// The user token, sealed.
    pub user_token: Option<Vec<u8>>,
    /// The user's refresh token, sealed.
    pub user_refresh_token: Option<Vec<u8>>,
    /// The incoming webhook URL: a bearer capability too, so sealed like a token.
    pub incoming_webhook_url: Option<Vec<u8>>,
}

impl Debug for SealedInstallation {
    // Ciphertext is not secret, but it is noise; show only whether a token is present.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedInstallation")
            .field("info", &self.info)
            .field("has_bot_token", &self.bot_token.is_some())
            .field("has_user_token", &self.user_token.is_some())
            .finish_non_exhaustive()
    }
}

/// What consuming an OAuth state found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateCheck {
    /// Issued, unexpired, unused: now consumed.
    Valid,
    /// Issued but past its expiry.
    Expired,
    /// Issued and already consumed once.
    Reused,
    /// Never issued here (forged) or already cleaned up.
    Unknown,
}

/// Where installations and OAuth states live. Owners are (`enterprise_id`, `team_id`), NULLs
/// compared as empty; an org-wide Enterprise Grid install has `team_id` `None`.
#[async_trait]
pub trait InstallationStore: Send + Sync + Debug {
    /// Saves, replacing the installation of the same owner (keeping its `installed_at`).
    async fn save(&self, i: &SealedInstallation) -> Result<(), StoreError>;
    /// The installation of exactly this owner.
    async fn find(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
    ) -> Result<Option<SealedInstallation>, StoreError>;
    /// The installation of workspace `team_id` under any enterprise (the newest, should there be
    /// several).
    async fn find_team(&self, team_id: &str) -> Result<Option<SealedInstallation>, StoreError>;
    /// Every installation, oldest first (key rotation, listings).
    async fn all(&self) -> Result<Vec<SealedInstallation>, StoreError>;
    /// Removes this owner's installation; whether something was removed.
    async fn delete(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// Forgets `user_id`'s user token in this owner's installation; whether one was changed.
    async fn clear_user_token(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
        user_id: &str,
    ) -> Result<bool, StoreError>;
    /// Records a freshly issued OAuth state ([`StoreError::Duplicate`] if it exists).
    async fn issue_state(
        &self,
        state: &str,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Consumes `state` if valid at `now`; exactly one concurrent caller sees `Valid`.
    async fn consume_state(
        &self,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<StateCheck, StoreError>;
    /// Deletes states expired at `now`; returns how many.
    async fn cleanup_states(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Remembers that workspace `team_id` belongs to organisation `enterprise_id`. Durable in
    /// the SQL store: a restarted server and `gatehouse-cleanup` need it to find the org-wide
    /// install serving a workspace.
    async fn remember_team_enterprise(
        &self,
        team_id: &str,
        enterprise_id: &str,
    ) -> Result<(), StoreError>;
    /// The organisation of workspace `team_id`, if known.
    async fn team_enterprise(&self, team_id: &str) -> Result<Option<String>, StoreError>;
    /// Binds an issued state to the workspace (or organisation) a scoped admin made it for
    /// ([`StoreError::NotFound`] for a state never issued).
    async fn bind_state(&self, state: &str, team: &str) -> Result<(), StoreError>;
    /// The workspace (or organisation) `state` is bound to, if any (consumed or not).
    async fn state_binding(&self, state: &str) -> Result<Option<String>, StoreError>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The install status endpoint serialises `InstallationInfo` as is: its JSON is a wire
    /// format, pinned here now that the type lives in access-core.
    #[test]
    fn installation_info_json_is_pinned() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let info = InstallationInfo {
            team_id: Some("T1".into()),
            team_name: Some("Acme".into()),
            is_enterprise_install: false,
            bot_user_id: Some("U0BOT".into()),
            bot_scopes: Some("commands,chat:write".into()),
            installed_at: at,
            updated_at: at,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            "{\"team_id\":\"T1\",\"team_name\":\"Acme\",\"enterprise_id\":null,\
             \"enterprise_name\":null,\"enterprise_url\":null,\"is_enterprise_install\":false,\
             \"app_id\":null,\"bot_id\":null,\"bot_user_id\":\"U0BOT\",\
             \"bot_scopes\":\"commands,chat:write\",\"bot_token_expires_at\":null,\
             \"user_id\":null,\"user_scopes\":null,\"user_token_expires_at\":null,\
             \"incoming_webhook_channel\":null,\"incoming_webhook_channel_id\":null,\
             \"incoming_webhook_configuration_url\":null,\"installer_user_id\":null,\
             \"installed_at\":\"2023-11-14T22:13:20Z\",\"updated_at\":\"2023-11-14T22:13:20Z\"}"
        );
    }

    #[test]
    fn sealed_installation_debug_shows_no_ciphertext() {
        let s = SealedInstallation {
            bot_token: Some(b"ciphertext".to_vec()),
            ..Default::default()
        };
        let shown = format!("{s:?}");
        assert!(shown.contains("has_bot_token: true"));
        assert!(!shown.contains("99, 105"));
    }
}
