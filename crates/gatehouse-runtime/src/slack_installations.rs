//! Slack installations on the SQL store: the install flow built from the environment, and the
//! maintenance loop that refreshes rotating tokens.
//!
//! The installation model is access-core's (`InstallationStore`, `SealedInstallation`): the SQL
//! store implements it and the Slack adapter seals and opens the tokens, so nothing is mapped
//! here. Token columns carry ciphertext from the adapter's `TokenCipher`; the store never sees a
//! clear token.

use std::sync::Arc;

use slack_adapter::crypto::{CryptoError, TokenCipher};
use slack_adapter::installations::Installations;
use slack_adapter::oauth::{InstallFlow, OAuthConfig};
use store_sqlx::SqlStore;

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
    Ok(TokenCipher::from_lookup(get)?.map(|c| Installations::new(store, Arc::new(c))))
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
