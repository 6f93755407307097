//! The install flow: the state store, the code exchange, saving, uninstalling, token refresh.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use access_core::ports::{Clock, SystemClock};

use super::OAuthConfig;
use super::client::{AuthTest, OAuthAccess, OAuthClient};
use crate::config::Secret;
use crate::installations::{
    InstallError, Installation, InstallationInfo, Installations, StateCheck,
};

/// Why a callback did not install anything. The `Display` text is shown to the person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallFailure {
    #[error("The installation was cancelled in Slack. Nothing was installed.")]
    Cancelled,
    #[error("Slack reported an error before installing: {0}. Nothing was installed.")]
    SlackDenied(String),
    #[error("The link has no state parameter. Start again from the install page.")]
    MissingState,
    #[error("The link has no code parameter. Start again from the install page.")]
    MissingCode,
    #[error("This install link is not one Gatehouse issued. Start again from the install page.")]
    UnknownState,
    #[error("This install link has expired. Start again from the install page.")]
    ExpiredState,
    #[error("This install link was already used. Start again from the install page.")]
    ReusedState,
    #[error("Slack refused the code exchange ({0}). Nothing was installed.")]
    Exchange(String),
    #[error("Slack returned no bot token. Nothing was installed.")]
    NoBotToken,
    #[error("Could not verify the new bot token ({0}); the tokens were revoked.")]
    Identity(String),
    #[error("Could not save the installation ({0}); the tokens were revoked.")]
    Store(String),
    #[error(
        "This install link was made for workspace {expected} only, but Slack installed into {got}; the tokens were revoked and nothing was installed."
    )]
    WrongWorkspace { expected: String, got: String },
    #[error("Slack installation is not configured (SLACK_CLIENT_ID, SLACK_CLIENT_SECRET).")]
    NotConfigured,
    #[error("Gatehouse could not check the link: {0}")]
    StateStore(String),
}

impl InstallFailure {
    /// HTTP status of the result page.
    pub fn status(&self) -> StatusCode {
        match self {
            InstallFailure::Cancelled | InstallFailure::SlackDenied(_) => StatusCode::OK,
            InstallFailure::Exchange(_)
            | InstallFailure::NoBotToken
            | InstallFailure::Identity(_) => StatusCode::BAD_GATEWAY,
            InstallFailure::Store(_) | InstallFailure::StateStore(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            InstallFailure::NotConfigured => StatusCode::SERVICE_UNAVAILABLE,
            InstallFailure::WrongWorkspace { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The callback's query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
}

/// Install, status, uninstall, refresh, lifecycle events.
#[derive(Debug, Clone)]
pub struct InstallFlow {
    config: OAuthConfig,
    client: OAuthClient,
    installations: Installations,
    clock: Arc<dyn Clock>,
}

fn ttl(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::minutes(5))
}

fn expires(now: DateTime<Utc>, secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.filter(|s| *s > 0)
        .map(|s| now + chrono::Duration::seconds(s))
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl InstallFlow {
    pub fn new(config: OAuthConfig, installations: Installations) -> Self {
        Self {
            client: OAuthClient::new(&config),
            config,
            installations,
            clock: Arc::new(SystemClock),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn installations(&self) -> &Installations {
        &self.installations
    }

    pub fn config(&self) -> &OAuthConfig {
        &self.config
    }

    pub fn client(&self) -> &OAuthClient {
        &self.client
    }

    /// Issues a state and returns `(authorize_url, state)`.
    pub async fn start(&self) -> Result<(String, String), InstallError> {
        self.start_for(None).await
    }

    /// [`start`](Self::start) for a workspace-scoped admin: the state is bound to `team` (a
    /// workspace or organisation id), and the callback refuses to install anywhere else.
    pub async fn start_for(&self, team: Option<&str>) -> Result<(String, String), InstallError> {
        // Two v4 UUIDs: 244 random bits, more than a state needs, in a URL-safe alphabet.
        let state = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let now = self.clock.now();
        self.installations
            .store()
            .issue_state(&state, now, now + ttl(self.config.state_ttl))
            .await?;
        if let Some(t) = team {
            self.installations.store().bind_state(&state, t).await?;
        }
        let mut q = vec![
            ("client_id", self.config.client_id.as_str()),
            ("scope", self.config.bot_scopes.as_str()),
            ("state", state.as_str()),
        ];
        if !self.config.user_scopes.is_empty() {
            q.push(("user_scope", self.config.user_scopes.as_str()));
        }
        if let Some(r) = &self.config.redirect_uri {
            q.push(("redirect_uri", r.as_str()));
        }
        let qs = serde_urlencoded::to_string(&q).unwrap_or_default();
        Ok((format!("{}?{qs}", self.config.authorize_url), state))
    }

    /// The callback: checks the state, exchanges the code, verifies the bot token with
    /// `auth.test`, saves. Anything failing after the exchange revokes what Slack handed out.
    pub async fn callback(&self, p: &CallbackParams) -> Result<Installation, InstallFailure> {
        if !self.config.is_configured() {
            return Err(InstallFailure::NotConfigured);
        }
        let state = p.state.as_deref().filter(|s| !s.is_empty());
        if let Some(err) = p.error.as_deref().filter(|e| !e.is_empty()) {
            // Burn the state so the link cannot be replayed; the outcome does not matter.
            if let Some(state) = state
                && let Err(e) = self
                    .installations
                    .store()
                    .consume_state(state, self.clock.now())
                    .await
            {
                tracing::warn!(error = %e, "could not consume the state of a cancelled install");
            }
            return Err(if err == "access_denied" {
                InstallFailure::Cancelled
            } else {
                InstallFailure::SlackDenied(err.chars().take(80).collect())
            });
        }
        let state = state.ok_or(InstallFailure::MissingState)?;
        let check = self
            .installations
            .store()
            .consume_state(state, self.clock.now())
            .await
            .map_err(|e| InstallFailure::StateStore(e.to_string()))?;
        match check {
            StateCheck::Valid => {}
            StateCheck::Expired => return Err(InstallFailure::ExpiredState),
            StateCheck::Reused => return Err(InstallFailure::ReusedState),
            StateCheck::Unknown => return Err(InstallFailure::UnknownState),
        }
        let bound = self
            .installations
            .store()
            .state_binding(state)
            .await
            .map_err(|e| InstallFailure::StateStore(e.to_string()))?;
        let code = p
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or(InstallFailure::MissingCode)?;
        let access = self
            .client
            .exchange_code(code, self.config.redirect_uri.as_deref())
            .await
            .map_err(|e| InstallFailure::Exchange(e.code().unwrap_or("no answer").into()))?;
        let tokens: Vec<String> = [
            access.access_token.clone(),
            access
                .authed_user
                .as_ref()
                .and_then(|u| u.access_token.clone()),
        ]
        .into_iter()
        .flatten()
        .filter(|t| !t.is_empty())
        .collect();
        match self.finish(access, bound.as_deref()).await {
            Ok(i) => Ok(i),
            Err(f) => {
                for t in &tokens {
                    if let Err(e) = self.client.revoke(t).await {
                        tracing::warn!(error = %e, "could not revoke a token of a failed installation");
                    }
                }
                Err(f)
            }
        }
    }

    async fn finish(
        &self,
        a: OAuthAccess,
        bound: Option<&str>,
    ) -> Result<Installation, InstallFailure> {
        let bot_token = a
            .access_token
            .clone()
            .filter(|t| !t.is_empty() && a.token_type.as_deref().unwrap_or("bot") == "bot")
            .ok_or(InstallFailure::NoBotToken)?;
        let who = self
            .client
            .auth_test(&bot_token)
            .await
            .map_err(|e| InstallFailure::Identity(e.code().unwrap_or("no answer").into()))?;
        let now = self.clock.now();
        let user = a.authed_user.clone().unwrap_or_default();
        let hook = a.incoming_webhook.clone().unwrap_or_default();
        let info = installation_info(&a, who, now);
        if info.team_id.is_none() && info.enterprise_id.is_none() {
            return Err(InstallFailure::Identity("no team or enterprise".into()));
        }
        // A link made with a workspace-scoped admin token installs into that workspace (or,
        // for an organisation's token, that organisation) only; the caller revokes the tokens.
        if let Some(expected) = bound {
            let owner = if info.is_enterprise_install {
                info.enterprise_id.as_deref()
            } else {
                info.team_id.as_deref()
            };
            if owner != Some(expected) {
                return Err(InstallFailure::WrongWorkspace {
                    expected: expected.to_string(),
                    got: owner.unwrap_or("an unknown workspace").to_string(),
                });
            }
        }
        let i = Installation {
            info,
            bot_token: Some(Secret::new(bot_token)),
            bot_refresh_token: nonempty(a.refresh_token).map(Secret::new),
            user_token: nonempty(user.access_token).map(Secret::new),
            user_refresh_token: nonempty(user.refresh_token).map(Secret::new),
            incoming_webhook_url: nonempty(hook.url).map(Secret::new),
        };
        self.installations
            .save(&i)
            .await
            .map_err(|e| InstallFailure::Store(e.to_string()))?;
        tracing::info!(
            team_id = ?i.info.team_id,
            enterprise_id = ?i.info.enterprise_id,
            enterprise_install = i.info.is_enterprise_install,
            "Slack installation saved"
        );
        Ok(i)
    }

    /// Public status of workspace (or org) `id`: a team id, or an enterprise id for an org-wide
    /// install.
    pub async fn status(&self, id: &str) -> Result<Option<InstallationInfo>, InstallError> {
        if let Some(s) = self.installations.store().find_team(id).await? {
            return Ok(Some(s.info));
        }
        Ok(self
            .installations
            .store()
            .find(Some(id), None)
            .await?
            .map(|s| s.info))
    }

    /// Revokes the bot and user tokens, then removes the installation. `Ok(false)` when nothing
    /// was installed. A revoke that fails is logged; the installation goes anyway (a token Slack
    /// still honours is less bad than one Gatehouse can never delete).
    pub async fn uninstall(&self, id: &str) -> Result<bool, InstallError> {
        let sealed = match self.installations.store().find_team(id).await? {
            Some(s) => Some(s),
            None => self.installations.store().find(Some(id), None).await?,
        };
        let Some(sealed) = sealed else {
            return Ok(false);
        };
        match self.installations.open(&sealed) {
            Ok(i) => {
                for t in [&i.bot_token, &i.user_token].into_iter().flatten() {
                    if let Err(e) = self.client.revoke(t.expose()).await {
                        tracing::warn!(error = %e, "auth.revoke failed during uninstall");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "tokens unreadable; removing without revoking"),
        }
        self.installations
            .store()
            .delete(
                sealed.info.enterprise_id.as_deref(),
                sealed.info.team_id.as_deref(),
            )
            .await
            .map_err(InstallError::from)
    }

    /// Deletes expired states; returns how many.
    pub async fn cleanup_expired_states(&self) -> Result<u64, InstallError> {
        self.installations
            .store()
            .cleanup_states(self.clock.now())
            .await
            .map_err(InstallError::from)
    }

    /// Refreshes rotating bot tokens that expire within `margin`; returns how many were
    /// refreshed. Slack revokes the old refresh token on each use, so the new pair is saved at
    /// once.
    pub async fn refresh_due(&self, margin: Duration) -> Result<usize, InstallError> {
        let now = self.clock.now();
        let mut n = 0;
        for s in self.installations.store().all().await? {
            let due = s
                .info
                .bot_token_expires_at
                .is_some_and(|e| e <= now + ttl(margin));
            if !due || s.bot_refresh_token.is_none() {
                continue;
            }
            let mut i = self.installations.open(&s)?;
            let Some(rt) = i.bot_refresh_token.clone() else {
                continue;
            };
            match self.client.refresh(rt.expose()).await {
                Ok(a) => {
                    let Some(tok) = nonempty(a.access_token) else {
                        continue;
                    };
                    i.bot_token = Some(Secret::new(tok));
                    if let Some(r) = nonempty(a.refresh_token) {
                        i.bot_refresh_token = Some(Secret::new(r));
                    }
                    i.info.bot_token_expires_at = expires(now, a.expires_in);
                    i.info.updated_at = now;
                    self.installations.save(&i).await?;
                    n += 1;
                }
                Err(e) => tracing::warn!(
                    team_id = ?s.info.team_id,
                    error = %e,
                    "Slack token refresh failed"
                ),
            }
        }
        Ok(n)
    }
}

/// What an `oauth.v2.access` answer and the bot token's `auth.test` say about the installation.
fn installation_info(a: &OAuthAccess, who: AuthTest, now: DateTime<Utc>) -> InstallationInfo {
    let team_id = a
        .team
        .as_ref()
        .map(|t| t.id.clone())
        .or(who.team_id.clone());
    // An org-wide install has no team; keep the team only for workspace installs.
    let team_id = if a.is_enterprise_install {
        None
    } else {
        nonempty(team_id)
    };
    let user = a.authed_user.clone().unwrap_or_default();
    let hook = a.incoming_webhook.clone().unwrap_or_default();
    InstallationInfo {
        team_id,
        team_name: a
            .team
            .as_ref()
            .and_then(|t| t.name.clone())
            .or(who.team.clone()),
        enterprise_id: a
            .enterprise
            .as_ref()
            .map(|e| e.id.clone())
            .or(who.enterprise_id),
        enterprise_name: a.enterprise.as_ref().and_then(|e| e.name.clone()),
        enterprise_url: if a.is_enterprise_install {
            who.url.clone()
        } else {
            None
        },
        is_enterprise_install: a.is_enterprise_install,
        app_id: a.app_id.clone(),
        bot_id: who.bot_id.clone(),
        bot_user_id: a.bot_user_id.clone().or(who.user_id.clone()),
        bot_scopes: a.scope.clone(),
        bot_token_expires_at: expires(now, a.expires_in),
        user_id: nonempty(Some(user.id.clone())),
        user_scopes: user.scope.clone(),
        user_token_expires_at: expires(now, user.expires_in),
        incoming_webhook_channel: hook.channel.clone(),
        incoming_webhook_channel_id: hook.channel_id.clone(),
        incoming_webhook_configuration_url: hook.configuration_url.clone(),
        installer_user_id: nonempty(Some(user.id.clone())),
        installed_at: now,
        updated_at: now,
    }
}
