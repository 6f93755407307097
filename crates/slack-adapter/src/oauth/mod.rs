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
//!
//! Layout: this file (settings), `client.rs` (the Web API calls), `flow.rs` (the install flow),
//! `events.rs` (lifecycle events), `http.rs` (the endpoints and pages).

use std::time::Duration;

use crate::config::{DEFAULT_API_URL, Secret};

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

mod client;
mod events;
mod flow;
mod http;

pub use client::{AuthTest, AuthedUser, IdName, IncomingWebhook, OAuthAccess, OAuthClient};
pub use events::lifecycle_layer;
pub use flow::{CallbackParams, InstallFailure, InstallFlow};
pub use http::{AdminScope, oauth_router, parse_workspace_tokens};
