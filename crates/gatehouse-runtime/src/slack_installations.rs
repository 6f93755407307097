//! Slack installations on the SQL store: slack-adapter's `InstallationStore` over store-sqlx's
//! `slack_installations` / `oauth_states` tables, and the install flow built from the
//! environment.
//!
//! The two crates do not know each other (the adapter must not pull in sqlx, the store must not
//! know Slack), so this file maps one record onto the other. Token columns carry ciphertext from
//! the adapter's `TokenCipher`; the store never sees a clear token.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use slack_adapter::crypto::{CryptoError, TokenCipher};
use slack_adapter::installations::{
    InstallError, InstallationInfo, InstallationStore, Installations, SealedInstallation,
    StateCheck,
};
use slack_adapter::oauth::{InstallFlow, OAuthConfig};
use store_sqlx::{InstallationRow, OAuthStateCheck, SqlStore};

/// `InstallationStore` on a [`SqlStore`].
#[derive(Debug, Clone)]
pub struct SqlInstallationStore {
    store: Arc<SqlStore>,
}

impl SqlInstallationStore {
    pub fn new(store: Arc<SqlStore>) -> Self {
        Self { store }
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(m: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(m).unwrap_or_default()
}

fn to_row(s: &SealedInstallation) -> InstallationRow {
    let i = &s.info;
    InstallationRow {
        team_id: i.team_id.clone(),
        enterprise_id: i.enterprise_id.clone(),
        is_enterprise_install: i.is_enterprise_install,
        app_id: i.app_id.clone(),
        team_name: i.team_name.clone(),
        enterprise_name: i.enterprise_name.clone(),
        enterprise_url: i.enterprise_url.clone(),
        bot_user_id: i.bot_user_id.clone(),
        bot_id: i.bot_id.clone(),
        bot_scopes: i.bot_scopes.clone(),
        bot_token_encrypted: s.bot_token.clone(),
        bot_refresh_token_encrypted: s.bot_refresh_token.clone(),
        bot_token_expires_at: i.bot_token_expires_at.map(micros),
        user_id: i.user_id.clone(),
        user_scopes: i.user_scopes.clone(),
        user_token_encrypted: s.user_token.clone(),
        user_refresh_token_encrypted: s.user_refresh_token.clone(),
        user_token_expires_at: i.user_token_expires_at.map(micros),
        incoming_webhook_url_encrypted: s.incoming_webhook_url.clone(),
        incoming_webhook_channel: i.incoming_webhook_channel.clone(),
        incoming_webhook_channel_id: i.incoming_webhook_channel_id.clone(),
        incoming_webhook_configuration_url: i.incoming_webhook_configuration_url.clone(),
        installer_user_id: i.installer_user_id.clone(),
        installed_at: micros(i.installed_at),
        updated_at: micros(i.updated_at),
    }
}

fn from_row(r: InstallationRow) -> SealedInstallation {
    SealedInstallation {
        info: InstallationInfo {
            team_id: r.team_id,
            team_name: r.team_name,
            enterprise_id: r.enterprise_id,
            enterprise_name: r.enterprise_name,
            enterprise_url: r.enterprise_url,
            is_enterprise_install: r.is_enterprise_install,
            app_id: r.app_id,
            bot_id: r.bot_id,
            bot_user_id: r.bot_user_id,
            bot_scopes: r.bot_scopes,
            bot_token_expires_at: r.bot_token_expires_at.map(from_micros),
            user_id: r.user_id,
            user_scopes: r.user_scopes,
            user_token_expires_at: r.user_token_expires_at.map(from_micros),
            incoming_webhook_channel: r.incoming_webhook_channel,
            incoming_webhook_channel_id: r.incoming_webhook_channel_id,
            incoming_webhook_configuration_url: r.incoming_webhook_configuration_url,
            installer_user_id: r.installer_user_id,
            installed_at: from_micros(r.installed_at),
            updated_at: from_micros(r.updated_at),
        },
        bot_token: r.bot_token_encrypted,
        bot_refresh_token: r.bot_refresh_token_encrypted,
        user_token: r.user_token_encrypted,
        user_refresh_token: r.user_refresh_token_encrypted,
        incoming_webhook_url: r.incoming_webhook_url_encrypted,
    }
}

fn store_err(e: access_core::ports::StoreError) -> InstallError {
    InstallError::Store(e.to_string())
}

#[async_trait]
impl InstallationStore for SqlInstallationStore {
    async fn save(&self, i: &SealedInstallation) -> Result<(), InstallError> {
        self.store
            .save_slack_installation(&to_row(i))
            .await
            .map_err(store_err)
    }

    async fn find(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
    ) -> Result<Option<SealedInstallation>, InstallError> {
        Ok(self
            .store
            .slack_installation(enterprise_id, team_id)
            .await
            .map_err(store_err)?
            .map(from_row))
    }

    async fn find_team(&self, team_id: &str) -> Result<Option<SealedInstallation>, InstallError> {
        Ok(self
            .store
            .slack_installations_of_team(team_id)
            .await
            .map_err(store_err)?
            .into_iter()
            .next()
            .map(from_row))
    }

    async fn all(&self) -> Result<Vec<SealedInstallation>, InstallError> {
        Ok(self
            .store
            .slack_installations()
            .await
            .map_err(store_err)?
            .into_iter()
            .map(from_row)
            .collect())
    }

    async fn delete(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
    ) -> Result<bool, InstallError> {
        Ok(self
            .store
            .delete_slack_installation(enterprise_id, team_id)
            .await
            .map_err(store_err)?
            > 0)
    }

    async fn clear_user_token(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
        user_id: &str,
    ) -> Result<bool, InstallError> {
        Ok(self
            .store
            .clear_slack_user_token(enterprise_id, team_id, user_id)
            .await
            .map_err(store_err)?
            > 0)
    }

    async fn issue_state(
        &self,
        state: &str,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), InstallError> {
        self.store
            .insert_oauth_state(state, micros(created_at), micros(expires_at))
            .await
            .map_err(store_err)
    }

    async fn consume_state(
        &self,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<StateCheck, InstallError> {
        Ok(
            match self
                .store
                .consume_oauth_state(state, micros(now))
                .await
                .map_err(store_err)?
            {
                OAuthStateCheck::Valid => StateCheck::Valid,
                OAuthStateCheck::Expired => StateCheck::Expired,
                OAuthStateCheck::Reused => StateCheck::Reused,
                OAuthStateCheck::Unknown => StateCheck::Unknown,
            },
        )
    }

    async fn cleanup_states(&self, now: DateTime<Utc>) -> Result<u64, InstallError> {
        self.store
            .cleanup_oauth_states(micros(now))
            .await
            .map_err(store_err)
    }

    async fn bind_state(&self, state: &str, team: &str) -> Result<(), InstallError> {
        match self
            .store
            .bind_oauth_state(state, team)
            .await
            .map_err(store_err)?
        {
            0 => Err(InstallError::Store("unknown OAuth state".into())),
            _ => Ok(()),
        }
    }

    async fn state_binding(&self, state: &str) -> Result<Option<String>, InstallError> {
        self.store
            .oauth_state_binding(state)
            .await
            .map_err(store_err)
    }

    async fn remember_team_enterprise(
        &self,
        team_id: &str,
        enterprise_id: &str,
    ) -> Result<(), InstallError> {
        self.store
            .remember_team_enterprise(team_id, enterprise_id, micros(Utc::now()))
            .await
            .map_err(store_err)
    }

    async fn team_enterprise(&self, team_id: &str) -> Result<Option<String>, InstallError> {
        self.store.team_enterprise(team_id).await.map_err(store_err)
    }
}

/// Why the install flow could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InstallSetupError {
    #[error(
        "SLACK_CLIENT_ID/SLACK_CLIENT_SECRET are set but GATEHOUSE_ENCRYPTION_KEY is not: \
         tokens cannot be stored encrypted"
    )]
    NoKey,
    #[error(transparent)]
    Key(#[from] CryptoError),
}

/// Installations on `store` under `GATEHOUSE_ENCRYPTION_KEY`; `Ok(None)` without a key.
pub fn installations_from_env(
    store: Arc<SqlStore>,
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<Installations>, InstallSetupError> {
    Ok(TokenCipher::from_lookup(get)?
        .map(|c| Installations::new(Arc::new(SqlInstallationStore::new(store)), Arc::new(c))))
}

/// The install flow when `SLACK_CLIENT_ID` and `SLACK_CLIENT_SECRET` are set (then
/// `GATEHOUSE_ENCRYPTION_KEY` is required); `Ok(None)` when OAuth is not configured.
pub fn install_flow_from_env(
    store: Arc<SqlStore>,
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<Arc<InstallFlow>>, InstallSetupError> {
    let config = OAuthConfig::from_lookup(&get);
    if !config.is_configured() {
        return Ok(None);
    }
    let ins = installations_from_env(store, &get)?.ok_or(InstallSetupError::NoKey)?;
    Ok(Some(Arc::new(InstallFlow::new(config, ins))))
}

/// How long before expiry a rotating token is refreshed. Slack's rotating tokens live 12 hours;
/// two hours of margin survives a few failed rounds.
pub const REFRESH_MARGIN: std::time::Duration = std::time::Duration::from_secs(2 * 3600);

/// Every `every`: refreshes rotating tokens due within [`REFRESH_MARGIN`] and deletes expired
/// OAuth states, until `shutdown`. The first round runs at once, so tokens that expired while
/// the server was down are refreshed before the first request needs them.
pub async fn maintain(
    flow: Arc<InstallFlow>,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        match flow.refresh_due(REFRESH_MARGIN).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(refreshed = n, "Slack tokens refreshed"),
            Err(e) => tracing::warn!(error = %e, "Slack token refresh round failed"),
        }
        match flow.cleanup_expired_states().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(deleted = n, "expired OAuth states deleted"),
            Err(e) => tracing::warn!(error = %e, "OAuth state cleanup failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
