//! The Web API calls of the install flow: `oauth.v2.access`, `auth.test`, `auth.revoke`.

use serde::Deserialize;
use serde_json::Value;

use super::OAuthConfig;
use crate::api::ApiError;
use crate::config::Secret;

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
