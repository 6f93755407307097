//! # gcp-auth
//!
//! Access tokens for Google APIs (IAM, Resource Manager, GCS, BigQuery), shared by every adapter
//! that talks to Google so they all authenticate the same way from `GCP_SERVICE_ACCOUNT_JSON`.

use std::fmt::Debug;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid service-account credentials: {0}")]
    InvalidCredentials(String),
    #[error("could not obtain an access token: {0}")]
    Token(String),
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
