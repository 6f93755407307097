//! Installing Gatehouse into Slack workspaces with OAuth v2, and taking it out again.
//!
//! - [`OAuthConfig`]: `SLACK_CLIENT_ID`, `SLACK_CLIENT_SECRET`, `SLACK_REDIRECT_URI`,
//!   `SLACK_BOT_SCOPES`, `SLACK_USER_SCOPES`, `SLACK_OAUTH_STATE_TTL_SECS`,
//!   `SLACK_OAUTH_AUTHORIZE_URL`, `SLACK_API_URL`, `GATEHOUSE_ADMIN_TOKEN`.
//! - [`OAuthClient`]: `oauth.v2.access` (client credentials as HTTP Basic, form body, code or
//!   refresh token), `auth.test`, `auth.revoke`.
//! - [`InstallFlow`]: the state store, the code exchange, saving, uninstalling, token refresh and
//!   the `app_uninstalled` / `tokens_revoked` events.
//! - [`oauth_router`]: the HTTP endpoints; [`lifecycle_layer`] taps verified `/slack/events`
//!   deliveries for the two lifecycle events without touching the event router.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use access_core::ports::{Clock, SystemClock};

use crate::admin_auth::AdminTokens;
use crate::api::ApiError;
use crate::config::{DEFAULT_API_URL, Secret};
use crate::installations::{
    InstallError, Installation, InstallationInfo, Installations, StateCheck,
};

/// Slack's authorize page.
pub const DEFAULT_AUTHORIZE_URL: &str = "https://slack.com/oauth/v2/authorize";
/// Bot scopes of the app manifest in `docs/slack-app.md`: commands, DMs and approval messages,
/// profile look-ups (e-mail), secret files, user groups as approvers, private approval channels,
/// and reading back what a retried notification may already have posted (`channels:read`,
/// `channels:history`, `groups:history`; `im:history` doubles for DMs).
pub const DEFAULT_BOT_SCOPES: &str = "commands,chat:write,chat:write.public,im:write,im:history,\
     users:read,users:read.email,usergroups:read,files:write,groups:read,channels:read,\
     channels:history,groups:history";

/// OAuth settings.
#[derive(Clone)]
pub struct OAuthConfig {
    pub client_id: String,
    pub client_secret: Secret,
    /// Sent with the authorize link and the code exchange (must match the app's setting).
    pub redirect_uri: Option<String>,
    pub authorize_url: String,
    /// Web API base (`SLACK_API_URL`).
    pub api_url: String,
    pub bot_scopes: String,
    pub user_scopes: String,
    /// How long an issued state stays valid.
    pub state_ttl: Duration,
    /// `GATEHOUSE_ADMIN_TOKEN`: without it the admin endpoints answer 503.
    pub admin_token: Secret,
    /// `GATEHOUSE_WORKSPACE_ADMIN_TOKENS` (`T123=token,E456=token`): admin tokens limited to one
    /// workspace (or Enterprise Grid organisation), which cannot touch any other.
    pub workspace_admin_tokens: Vec<(String, Secret)>,
    pub http_timeout: Duration,
}

impl std::fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("redirect_uri", &self.redirect_uri)
            .field("authorize_url", &self.authorize_url)
            .field("api_url", &self.api_url)
            .field("bot_scopes", &self.bot_scopes)
            .field("user_scopes", &self.user_scopes)
            .field("state_ttl", &self.state_ttl)
            .field("admin_token", &self.admin_token)
            .field(
                "workspace_admin_tokens",
                &self
                    .workspace_admin_tokens
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            client_secret: Secret::default(),
            redirect_uri: None,
            authorize_url: DEFAULT_AUTHORIZE_URL.into(),
            api_url: DEFAULT_API_URL.into(),
            bot_scopes: DEFAULT_BOT_SCOPES.into(),
            user_scopes: String::new(),
            state_ttl: Duration::from_secs(300),
            admin_token: Secret::default(),
            workspace_admin_tokens: Vec::new(),
            http_timeout: Duration::from_secs(10),
        }
    }
}

impl OAuthConfig {
    /// Reads `SLACK_CLIENT_ID`, `SLACK_CLIENT_SECRET`, `SLACK_REDIRECT_URI`, the scopes and the
    /// admin tokens through `get` (the server's snapshot of the environment; scripts
    /// the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let d = Self::default();
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Self {
            client_id: get("SLACK_CLIENT_ID").unwrap_or_default(),
            client_secret: get("SLACK_CLIENT_SECRET")
                .map(Secret::new)
                .unwrap_or_default(),
            redirect_uri: get("SLACK_REDIRECT_URI"),
            authorize_url: get("SLACK_OAUTH_AUTHORIZE_URL").unwrap_or(d.authorize_url),
            api_url: get("SLACK_API_URL")
                .map(|u| u.trim_end_matches('/').to_string())
                .unwrap_or(d.api_url),
            bot_scopes: get("SLACK_BOT_SCOPES").unwrap_or(d.bot_scopes),
            user_scopes: get("SLACK_USER_SCOPES").unwrap_or(d.user_scopes),
            state_ttl: get("SLACK_OAUTH_STATE_TTL_SECS")
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs)
                .unwrap_or(d.state_ttl),
            admin_token: get("GATEHOUSE_ADMIN_TOKEN")
                .map(Secret::new)
                .unwrap_or_default(),
            workspace_admin_tokens: get("GATEHOUSE_WORKSPACE_ADMIN_TOKENS")
                .map(|v| parse_workspace_tokens(&v))
                .unwrap_or_default(),
            http_timeout: d.http_timeout,
        }
    }

    /// Client id and secret are both set.
    pub fn is_configured(&self) -> bool {
        !self.client_id.is_empty() && !self.client_secret.is_empty()
    }
}

// ------------------------------------------------------------------------------------------------
// Web API calls of the flow

/// The parts of an `oauth.v2.access` answer Gatehouse keeps (external-apis.md A.8).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OAuthAccess {
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub bot_user_id: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub team: Option<IdName>,
    #[serde(default)]
    pub enterprise: Option<IdName>,
    #[serde(default)]
    pub is_enterprise_install: bool,
    #[serde(default)]
    pub authed_user: Option<AuthedUser>,
    #[serde(default)]
    pub incoming_webhook: Option<IncomingWebhook>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IdName {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthedUser {
    pub id: String,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IncomingWebhook {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub configuration_url: Option<String>,
}

/// `auth.test` of a token.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthTest {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub bot_id: Option<String>,
    #[serde(default)]
    pub enterprise_id: Option<String>,
}

/// The three methods of the install flow. Tokens are given per call: none of them belongs to
/// a configured workspace.
#[derive(Clone)]
pub struct OAuthClient {
    http: reqwest::Client,
    base: String,
    client_id: String,
    client_secret: Secret,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("base", &self.base)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn bad(method: &str) -> ApiError {
    ApiError::Server {
        method: method.into(),
        status: 200,
    }
}

impl OAuthClient {
    pub fn new(config: &OAuthConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "falling back to a default HTTP client");
                reqwest::Client::new()
            });
        Self {
            http,
            base: config.api_url.trim_end_matches('/').to_string(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
        }
    }

    async fn send(&self, method: &str, req: reqwest::RequestBuilder) -> Result<Value, ApiError> {
        crate::api::send_envelope(method, req).await
    }

    async fn access(&self, form: &[(&str, &str)]) -> Result<OAuthAccess, ApiError> {
        let m = "oauth.v2.access";
        let req = self
            .http
            .post(format!("{}/{m}", self.base))
            .basic_auth(&self.client_id, Some(self.client_secret.expose()))
            .form(form);
        let v = self.send(m, req).await?;
        serde_json::from_value(v).map_err(|_| bad(m))
    }

    /// Exchanges an authorization code.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> Result<OAuthAccess, ApiError> {
        let mut form = vec![("code", code), ("grant_type", "authorization_code")];
        if let Some(r) = redirect_uri {
            form.push(("redirect_uri", r));
        }
        self.access(&form).await
    }

    /// Exchanges a refresh token (token rotation); the answer carries a new refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<OAuthAccess, ApiError> {
        self.access(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// `auth.test` with `token`.
    pub async fn auth_test(&self, token: &str) -> Result<AuthTest, ApiError> {
        let m = "auth.test";
        let req = self
            .http
            .post(format!("{}/{m}", self.base))
            .bearer_auth(token);
        let v = self.send(m, req).await?;
        serde_json::from_value(v).map_err(|_| bad(m))
    }

    /// `auth.revoke` of `token` (GET; the method takes no JSON).
    pub async fn revoke(&self, token: &str) -> Result<(), ApiError> {
        let m = "auth.revoke";
        let req = self
            .http
            .get(format!("{}/{m}", self.base))
            .bearer_auth(token);
        self.send(m, req).await.map(|_| ())
    }
}

// ------------------------------------------------------------------------------------------------
// The flow

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
        let info = InstallationInfo {
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
        };
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

    /// Acts on `app_uninstalled` (remove the installation) and `tokens_revoked` (remove the bot
    /// installation for `bot` ids, forget user tokens for `oauth` ids). Either may come first;
    /// both are idempotent. Returns whether anything changed.
    pub async fn handle_event(&self, envelope: &Value) -> Result<bool, InstallError> {
        let Some(event) = envelope.get("event") else {
            return Ok(false);
        };
        let s = |v: &Value, k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let team = s(envelope, "team_id");
        let ent = s(envelope, "enterprise_id");
        let store = self.installations.store();
        // Whose installation: the workspace's own, else the org-wide one.
        let owner = match team.as_deref() {
            Some(t) => store.find_team(t).await?,
            None => None,
        };
        let owner = match owner {
            Some(o) => Some(o),
            None => match ent.as_deref() {
                Some(e) => store.find(Some(e), None).await?,
                None => None,
            },
        };
        let Some(owner) = owner else {
            return Ok(false);
        };
        let (oe, ot) = (
            owner.info.enterprise_id.as_deref(),
            owner.info.team_id.as_deref(),
        );
        match event.get("type").and_then(Value::as_str) {
            Some("app_uninstalled") => {
                let gone = store.delete(oe, ot).await?;
                tracing::info!(team_id = ?ot, enterprise_id = ?oe, "app_uninstalled: installation removed");
                Ok(gone)
            }
            Some("tokens_revoked") => {
                let ids = |k: &str| -> Vec<String> {
                    event
                        .pointer(&format!("/tokens/{k}"))
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let mut changed = false;
                for u in ids("oauth") {
                    changed |= store.clear_user_token(oe, ot, &u).await?;
                }
                let bots = ids("bot");
                if !bots.is_empty()
                    && (owner.info.bot_user_id.is_none()
                        || bots
                            .iter()
                            .any(|b| Some(b.as_str()) == owner.info.bot_user_id.as_deref()))
                {
                    changed |= store.delete(oe, ot).await?;
                    tracing::info!(team_id = ?ot, "tokens_revoked: bot installation removed");
                }
                Ok(changed)
            }
            _ => Ok(false),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// HTTP

type Flow = Arc<InstallFlow>;

/// `GET /api/slack/oauth/start`, `GET /slack/install`, `GET /slack/oauth/callback`,
/// `GET|DELETE /api/slack/installation/{team_id}`, `POST /api/slack/cleanup-expired-states`.
pub fn oauth_router(flow: Arc<InstallFlow>) -> Router {
    let admin = Router::new()
        .route("/api/slack/oauth/start", get(start_endpoint))
        .route(
            "/api/slack/installation/{team_id}",
            get(status_endpoint).delete(uninstall_endpoint),
        )
        .route("/api/slack/cleanup-expired-states", post(cleanup_endpoint))
        .layer(middleware::from_fn_with_state(
            Arc::new(AdminTokens::new(
                flow.config.admin_token.clone(),
                flow.config.workspace_admin_tokens.clone(),
            )),
            crate::admin_auth::require_admin,
        ));
    Router::new()
        .route("/slack/install", get(install_page))
        .route("/slack/oauth/callback", get(callback_endpoint))
        .merge(admin)
        .with_state(flow)
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message})),
    )
        .into_response()
}

/// `T123=token,E456=token` → pairs; malformed entries are skipped with a warning (never logged
/// with their token).
pub fn parse_workspace_tokens(raw: &str) -> Vec<(String, Secret)> {
    raw.split(',')
        .filter(|e| !e.trim().is_empty())
        .filter_map(|entry| match entry.split_once('=') {
            Some((id, token)) if !id.trim().is_empty() && !token.trim().is_empty() => {
                Some((id.trim().to_string(), Secret::new(token.trim())))
            }
            _ => {
                tracing::warn!("ignoring a malformed GATEHOUSE_WORKSPACE_ADMIN_TOKENS entry");
                None
            }
        })
        .collect()
}

/// Whom an admin token speaks for (the one admin-auth layer's, [`crate::admin_auth`]).
pub use crate::admin_auth::AdminScope;

impl AdminScope {
    /// The refusal for a workspace admin acting on another workspace, if it is one.
    fn refusal(&self, team_or_enterprise: &str) -> Option<Response> {
        match self {
            AdminScope::Workspace(id) if id != team_or_enterprise => Some(json_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("This admin token is limited to workspace {id}."),
            )),
            _ => None,
        }
    }
}

fn internal(e: InstallError) -> Response {
    tracing::error!(error = %e, "Slack installation store failed");
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store_error",
        "The installation store failed; see the server log.",
    )
}

async fn start_endpoint(
    State(flow): State<Flow>,
    Extension(scope): Extension<AdminScope>,
) -> Response {
    if !flow.config.is_configured() {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "Set SLACK_CLIENT_ID and SLACK_CLIENT_SECRET to install into workspaces.",
        );
    }
    let bound = match &scope {
        AdminScope::Workspace(id) => Some(id.as_str()),
        AdminScope::All => None,
    };
    match flow.start_for(bound).await {
        Ok((mut authorize_url, state)) => {
            // A workspace admin's link preselects their workspace.
            if let AdminScope::Workspace(id) = &scope {
                authorize_url.push_str(&format!("&team={id}"));
            }
            axum::Json(json!({"authorize_url": authorize_url, "state": state})).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn status_endpoint(
    State(flow): State<Flow>,
    Extension(scope): Extension<AdminScope>,
    Path(team_id): Path<String>,
) -> Response {
    if let Some(r) = scope.refusal(&team_id) {
        return r;
    }
    match flow.status(&team_id).await {
        Ok(Some(info)) => {
            let mut v = serde_json::to_value(&info).unwrap_or_else(|_| json!({}));
            if let Some(o) = v.as_object_mut() {
                o.insert("installed".into(), json!(true));
            }
            axum::Json(v).into_response()
        }
        Ok(None) => axum::Json(json!({
            "installed": false,
            "message": "Slack is not installed for this workspace",
        }))
        .into_response(),
        Err(e) => internal(e),
    }
}

async fn uninstall_endpoint(
    State(flow): State<Flow>,
    Extension(scope): Extension<AdminScope>,
    Path(team_id): Path<String>,
) -> Response {
    if let Some(r) = scope.refusal(&team_id) {
        return r;
    }
    match flow.uninstall(&team_id).await {
        Ok(true) => axum::Json(json!({"uninstalled": true, "team_id": team_id})).into_response(),
        Ok(false) => json_error(
            StatusCode::NOT_FOUND,
            "not_installed",
            "Slack is not installed for this workspace.",
        ),
        Err(e) => internal(e),
    }
}

async fn cleanup_endpoint(
    State(flow): State<Flow>,
    Extension(scope): Extension<AdminScope>,
) -> Response {
    if scope != AdminScope::All {
        return json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Cleaning up OAuth states needs the global admin token.",
        );
    }
    match flow.cleanup_expired_states().await {
        Ok(n) => axum::Json(json!({"deleted": n})).into_response(),
        Err(e) => internal(e),
    }
}

use access_core::text::escape_html as escape;

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    )
}

/// The page has no state of its own: the admin pastes the admin token, the page calls
/// `/api/slack/oauth/start` with it and shows the "Add to Slack" link it gets back. Nobody
/// without the token obtains a valid state.
async fn install_page() -> Response {
    let body = r#"<p>Administrators only: enter the Gatehouse admin token to get an install link.</p>
<form id="f"><input id="t" type="password" placeholder="admin token" size="40">
<button type="submit">Get link</button></form>
<p id="out"></p>
<script>
document.getElementById('f').onsubmit = async (e) => {
  e.preventDefault();
  const out = document.getElementById('out');
  const r = await fetch('/api/slack/oauth/start', {headers: {'Authorization': 'Bearer ' + document.getElementById('t').value}});
  if (!r.ok) { out.textContent = 'Refused (' + r.status + ').'; return; }
  const j = await r.json();
  const a = document.createElement('a');
  a.href = j.authorize_url;
  a.innerHTML = '<img alt="Add to Slack" height="40" width="139" src="https://platform.slack-edge.com/img/add_to_slack.png">';
  out.replaceChildren(a);
};
</script>"#;
    (
        [(header::CACHE_CONTROL, "no-store")],
        Html(page("Install Gatehouse into Slack", body)),
    )
        .into_response()
}

async fn callback_endpoint(State(flow): State<Flow>, Query(p): Query<CallbackParams>) -> Response {
    match flow.callback(&p).await {
        Ok(i) => {
            let name = i
                .info
                .team_name
                .clone()
                .or(i.info.enterprise_name.clone())
                .or(i.info.team_id.clone())
                .or(i.info.enterprise_id.clone())
                .unwrap_or_default();
            let body = format!(
                "<p>Gatehouse is installed in <b>{}</b>. Invite the bot to your approval channel and try <code>/access help</code>.</p>",
                escape(&name)
            );
            (StatusCode::OK, Html(page("Gatehouse installed", &body))).into_response()
        }
        Err(f) => {
            let title = if f == InstallFailure::Cancelled {
                "Installation cancelled"
            } else {
                "Installation failed"
            };
            tracing::info!(reason = %f, "Slack install callback did not install");
            let body = format!("<p>{}</p>", escape(&f.to_string()));
            (f.status(), Html(page(title, &body))).into_response()
        }
    }
}

/// Wrap the Slack event router with this: after a `/slack/events` delivery was accepted (2xx,
/// so its signature checked out), `app_uninstalled` and `tokens_revoked` are applied to the
/// installations. The body is buffered up to `max_body_bytes`; larger ones pass untouched.
pub fn lifecycle_layer(router: Router, flow: Arc<InstallFlow>, max_body_bytes: usize) -> Router {
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let flow = flow.clone();
        async move {
            if req.uri().path() != "/slack/events" {
                return next.run(req).await;
            }
            let (parts, body) = req.into_parts();
            let bytes: Bytes = match axum::body::to_bytes(body, max_body_bytes).await {
                Ok(b) => b,
                Err(_) => {
                    return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                        .into_response();
                }
            };
            let resp = next
                .run(Request::from_parts(parts, Body::from(bytes.clone())))
                .await;
            if resp.status().is_success()
                && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
                && matches!(
                    v.pointer("/event/type").and_then(Value::as_str),
                    Some("app_uninstalled" | "tokens_revoked")
                )
            {
                tokio::spawn(async move {
                    if let Err(e) = flow.handle_event(&v).await {
                        tracing::warn!(error = %e, "could not apply a Slack lifecycle event");
                    }
                });
            }
            resp
        }
    }))
}
