//! Typed errors of the Cloud Connexa client and how they map onto [`ProviderError`].

use std::collections::BTreeMap;

use access_core::ports::ProviderError;
use serde::{Deserialize, Serialize};

/// The documented error body (`ErrorResponse`, API v1.2.x):
/// `{"errorMessage": "…", "statusError": "…", "errorDetails": {"<field>": [{…}]}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorEnvelope {
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub status_error: Option<String>,
    #[serde(default)]
    pub error_details: Option<BTreeMap<String, Vec<FieldError>>>,
}

/// One entry of `errorDetails.<field>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldError {
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub params: Option<serde_json::Value>,
}

impl ErrorEnvelope {
    /// The most useful one-line description: `errorMessage`, else `statusError`, else the first
    /// field error.
    pub fn summary(&self) -> String {
        if let Some(m) = self
            .error_message
            .as_deref()
            .filter(|m| !m.trim().is_empty())
        {
            return m.trim().to_string();
        }
        if let Some(s) = self
            .status_error
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            return s.trim().to_string();
        }
        if let Some((field, errs)) = self.error_details.as_ref().and_then(|d| d.iter().next()) {
            let msg = errs
                .first()
                .and_then(|e| e.message.clone().or_else(|| e.error_code.clone()));
            return format!("{field}: {}", msg.unwrap_or_else(|| "invalid".into()));
        }
        String::new()
    }

    /// The API answers some "not found" conditions with HTTP 400 and a message instead of 404.
    pub fn says_not_found(&self) -> bool {
        let hit = |s: &Option<String>| {
            s.as_deref().is_some_and(|s| {
                let s = s.to_ascii_lowercase();
                s.contains("not found") || s.contains("not_found") || s.contains("does not exist")
            })
        };
        hit(&self.error_message) || hit(&self.status_error)
    }

    /// Field names listed in `errorDetails`.
    pub fn fields(&self) -> Vec<&str> {
        self.error_details
            .as_ref()
            .map(|d| d.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// Everything that can go wrong talking to Cloud Connexa. Never carries the client secret or a
/// bearer token (transport errors are stripped of their URL, which holds the credentials on the
/// token call).
#[derive(Debug, thiserror::Error)]
pub enum CloudConnexaError {
    /// The object does not exist: HTTP 404, or HTTP 400 whose envelope says "not found".
    #[error("Cloud Connexa: {what} not found ({message})")]
    NotFound {
        what: String,
        status: u16,
        message: String,
    },
    /// The request was refused as invalid (HTTP 400/409/422…): retrying will not help.
    #[error("Cloud Connexa refused the request (HTTP {status}): {}", .envelope.summary())]
    Rejected {
        status: u16,
        envelope: ErrorEnvelope,
    },
    /// The API credentials were refused (token endpoint 400/401, or 401 after a fresh token).
    #[error("Cloud Connexa rejected the API credentials (HTTP {status}): {message}")]
    Unauthorized { status: u16, message: String },
    /// The credentials lack the permission (read-only key, IP allowlist, API access disabled).
    #[error("Cloud Connexa denied permission (HTTP 403): {message}")]
    Forbidden { message: String },
    /// HTTP 429 kept coming back after every retry.
    #[error("Cloud Connexa rate limit still exceeded after {attempts} attempts")]
    RateLimited { attempts: u32 },
    /// HTTP 5xx (after retries where retrying was safe).
    #[error("Cloud Connexa server error (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    /// Connection refused, reset, timed out.
    #[error("Cloud Connexa unreachable: {0}")]
    Transport(String),
    /// A 2xx answer that does not parse as documented.
    #[error("unexpected Cloud Connexa response: {0}")]
    Decode(String),
    /// Missing or invalid settings (environment, resource settings).
    #[error("Cloud Connexa configuration: {0}")]
    Config(String),
}

impl CloudConnexaError {
    /// Worth retrying later: rate limits, server errors, network trouble.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CloudConnexaError::RateLimited { .. }
                | CloudConnexaError::Server { .. }
                | CloudConnexaError::Transport(_)
        )
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, CloudConnexaError::NotFound { .. })
    }

    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        let timeout = e.is_timeout();
        // The URL of the token call carries client_id and client_secret as query parameters.
        let e = e.without_url();
        if timeout {
            CloudConnexaError::Transport(format!("timed out: {e}"))
        } else {
            CloudConnexaError::Transport(e.to_string())
        }
    }
}

impl From<CloudConnexaError> for ProviderError {
    fn from(e: CloudConnexaError) -> Self {
        if e.is_transient() {
            ProviderError::Transient(e.to_string())
        } else {
            ProviderError::Permanent(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_parses_and_summarises() {
        let env: ErrorEnvelope = serde_json::from_str(
            r#"{"errorMessage":"User with id 42 not found","statusError":"BAD_REQUEST",
                "errorDetails":{"email":[{"errorCode":"DUPLICATE","message":"taken","params":{}}]}}"#,
        )
        .unwrap();
        assert_eq!(env.summary(), "User with id 42 not found");
        assert!(env.says_not_found());
        assert_eq!(env.fields(), vec!["email"]);

        let only_details: ErrorEnvelope =
            serde_json::from_str(r#"{"errorDetails":{"username":[{"message":"already used"}]}}"#)
                .unwrap();
        assert_eq!(only_details.summary(), "username: already used");
        assert!(!only_details.says_not_found());
    }

    #[test]
    fn transient_vs_permanent() {
        let t: ProviderError = CloudConnexaError::RateLimited { attempts: 3 }.into();
        assert!(matches!(t, ProviderError::Transient(_)));
        let t: ProviderError = CloudConnexaError::Server {
            status: 503,
            message: String::new(),
        }
        .into();
        assert!(matches!(t, ProviderError::Transient(_)));
        let p: ProviderError = CloudConnexaError::Forbidden {
            message: "read-only key".into(),
        }
        .into();
        assert!(matches!(p, ProviderError::Permanent(_)));
        let p: ProviderError = CloudConnexaError::Rejected {
            status: 400,
            envelope: ErrorEnvelope::default(),
        }
        .into();
        assert!(matches!(p, ProviderError::Permanent(_)));
    }
}
