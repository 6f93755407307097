//! # gcp-auth
//!
//! Access tokens for Google APIs (IAM, Resource Manager, GCS, BigQuery), shared by every adapter
//! that talks to Google so they all authenticate the same way from `GCP_SERVICE_ACCOUNT_JSON`.
//!
//! # Layout
//!
//! - [`AccessTokenSource`]: the trait adapters depend on (one method: a valid bearer token).
//! - [`ServiceAccountTokenSource`]: a service-account key (JSON) exchanged for tokens through
//!   yup-oauth2's JWT-bearer flow, scope `cloud-platform`. The token endpoint is the key's
//!   `token_uri`, which is how tests point it at a fake. Tokens are cached and refreshed by
//!   yup-oauth2.
//! - [`StaticToken`]: a fixed token, for emulators and tests.
//!
//! Nothing here ever prints the private key or a token: `Debug` shows the account e-mail only,
//! and key-parsing errors report a position, never the offending text.
//!
//! # Example
//!
//! ```no_run
//! use gcp_auth::{AccessTokenSource, ServiceAccountTokenSource};
//!
//! # async fn run() -> Result<(), gcp_auth::AuthError> {
//! // GCP_SERVICE_ACCOUNT_JSON holds the key's JSON (or a path to the key file).
//! let tokens = ServiceAccountTokenSource::from_lookup(|k| std::env::var(k).ok())?;
//! println!("authenticating as {}", tokens.client_email());
//! let bearer = tokens.token().await?;
//! # let _ = bearer;
//! # Ok(())
//! # }
//! ```

use std::fmt::Debug;
use std::path::Path;

use async_trait::async_trait;
use tokio::sync::OnceCell;
use yup_oauth2::authenticator::DefaultAuthenticator;
use yup_oauth2::{ServiceAccountAuthenticator, ServiceAccountKey};

/// The scope every Gatehouse adapter needs: it covers IAM, Resource Manager, GCS and BigQuery.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The environment variable holding the key's JSON content (or a path to the key file).
pub const SERVICE_ACCOUNT_ENV: &str = "GCP_SERVICE_ACCOUNT_JSON";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid service-account credentials: {0}")]
    InvalidCredentials(String),
    /// The token endpoint could not be reached or answered nonsense: worth retrying.
    #[error("could not obtain an access token: {0}")]
    Token(String),
    /// The token endpoint refused the credentials (`invalid_grant`, unknown or disabled account,
    /// deleted key): retrying will not help.
    #[error("the token endpoint refused the credentials: {0}")]
    Rejected(String),
    /// No credentials were configured at all.
    #[error("no Google credentials configured: set {SERVICE_ACCOUNT_ENV}")]
    NotConfigured,
}

/// Something that hands out bearer tokens for Google APIs.
#[async_trait]
pub trait AccessTokenSource: Send + Sync + Debug + 'static {
    /// A currently valid access token (cached and refreshed by the implementation).
    async fn token(&self) -> Result<String, AuthError>;
}

/// A fixed token: for tests and for emulators that accept any token.
#[derive(Clone)]
pub struct StaticToken(pub String);

impl Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

#[async_trait]
impl AccessTokenSource for StaticToken {
    async fn token(&self) -> Result<String, AuthError> {
        Ok(self.0.clone())
    }
}

/// Tokens from a service-account key through the OAuth 2.0 JWT-bearer flow (yup-oauth2).
///
/// Construction only parses the key; the HTTP client is built on first use, so constructors are
/// synchronous and cheap. Clone-free by design: share it as `Arc<dyn AccessTokenSource>`.
pub struct ServiceAccountTokenSource {
    key: ServiceAccountKey,
    scopes: Vec<String>,
    auth: OnceCell<DefaultAuthenticator>,
}

impl Debug for ServiceAccountTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountTokenSource")
            .field("client_email", &self.key.client_email)
            .field("token_uri", &self.key.token_uri)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl ServiceAccountTokenSource {
    /// Parses a service-account key file's JSON content.
    pub fn from_json(json: &str) -> Result<Self, AuthError> {
        // Parsed by hand rather than with yup's helper: serde's messages can quote the offending
        // value, and that value may be part of a private key.
        let key: ServiceAccountKey = serde_json::from_str(json).map_err(|e| {
            AuthError::InvalidCredentials(format!(
                "the service-account key is not valid JSON of the expected shape ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        if key
            .key_type
            .as_deref()
            .is_some_and(|t| t != "service_account")
        {
            return Err(AuthError::InvalidCredentials(format!(
                "the key's type is {:?}, expected \"service_account\"",
                key.key_type.as_deref().unwrap_or_default()
            )));
        }
        if key.client_email.trim().is_empty() {
            return Err(AuthError::InvalidCredentials(
                "the key has no client_email".into(),
            ));
        }
        if !key.private_key.contains("PRIVATE KEY") {
            return Err(AuthError::InvalidCredentials(
                "the key has no PEM private_key".into(),
            ));
        }
        if !(key.token_uri.starts_with("https://") || key.token_uri.starts_with("http://")) {
            return Err(AuthError::InvalidCredentials(
                "the key's token_uri is not an http(s) URL".into(),
            ));
        }
        Ok(Self {
            key,
            scopes: vec![CLOUD_PLATFORM_SCOPE.to_string()],
            auth: OnceCell::new(),
        })
    }

    /// Reads a service-account key file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, AuthError> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|e| {
            AuthError::InvalidCredentials(format!(
                "cannot read key file {}: {}",
                path.display(),
                e.kind()
            ))
        })?;
        Self::from_json(&json)
    }

    /// From `GCP_SERVICE_ACCOUNT_JSON`: the key's JSON content (as the source documents deploy
    /// it from a Kubernetes secret), or, if the value does not start with `{`, a path to the key
    /// file. [`AuthError::NotConfigured`] when unset or empty. The variable is read through `get`
    /// (the server passes its one snapshot of the environment; scripts the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, AuthError> {
        match get(SERVICE_ACCOUNT_ENV) {
            Some(v) if v.trim().starts_with('{') => Self::from_json(&v),
            Some(v) if !v.trim().is_empty() => Self::from_file(v.trim()),
            _ => Err(AuthError::NotConfigured),
        }
    }

    /// Replaces the scopes (default: [`CLOUD_PLATFORM_SCOPE`]).
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The account the key belongs to (`…@….iam.gserviceaccount.com`).
    pub fn client_email(&self) -> &str {
        &self.key.client_email
    }

    /// The project the key was created in, if the key says.
    pub fn project_id(&self) -> Option<&str> {
        self.key.project_id.as_deref()
    }

    async fn authenticator(&self) -> Result<&DefaultAuthenticator, AuthError> {
        self.auth
            .get_or_try_init(|| async {
                ServiceAccountAuthenticator::builder(self.key.clone())
                    .build()
                    .await
                    .map_err(|e| {
                        AuthError::Token(format!("cannot build the token client: {}", e.kind()))
                    })
            })
            .await
    }
}

#[async_trait]
impl AccessTokenSource for ServiceAccountTokenSource {
    async fn token(&self) -> Result<String, AuthError> {
        let auth = self.authenticator().await?;
        let token = auth.token(&self.scopes).await.map_err(|e| {
            tracing::warn!(account = %self.key.client_email, error = %e, "Google token request failed");
            match e {
                // An RFC 6749 error answer: the server looked at the credentials and said no.
                yup_oauth2::Error::AuthError(a) => AuthError::Rejected(a.to_string()),
                other => AuthError::Token(other.to_string()),
            }
        })?;
        token
            .token()
            .map(str::to_string)
            .ok_or_else(|| AuthError::Token("the token response held no access token".into()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn debug_and_errors_never_show_the_key() {
        let json = r#"{"type":"service_account","client_email":"bot@p.iam.gserviceaccount.com",
            "private_key":"-----BEGIN PRIVATE KEY-----\nSEKRIT\n-----END PRIVATE KEY-----\n",
            "token_uri":"http://127.0.0.1:1/token"}"#;
        let s = ServiceAccountTokenSource::from_json(json).unwrap();
        let dbg = format!("{s:?}");
        assert!(dbg.contains("bot@p.iam.gserviceaccount.com"));
        assert!(!dbg.contains("SEKRIT"));

        // A key whose private_key has the wrong type: the error must not echo anything of it.
        let bad = r#"{"type":"service_account","client_email":"x@y.z","private_key":["SEKRIT"],"token_uri":"https://t"}"#;
        let err = ServiceAccountTokenSource::from_json(bad)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("SEKRIT"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn rejects_keys_of_the_wrong_kind() {
        let user = r#"{"type":"authorized_user","client_email":"x@y.z","private_key":"-----BEGIN PRIVATE KEY-----","token_uri":"https://t"}"#;
        assert!(matches!(
            ServiceAccountTokenSource::from_json(user),
            Err(AuthError::InvalidCredentials(_))
        ));
        let no_pem = r#"{"type":"service_account","client_email":"x@y.z","private_key":"nope","token_uri":"https://t"}"#;
        assert!(ServiceAccountTokenSource::from_json(no_pem).is_err());
        assert!(matches!(
            ServiceAccountTokenSource::from_file("/nonexistent/key.json"),
            Err(AuthError::InvalidCredentials(_))
        ));
    }
}
