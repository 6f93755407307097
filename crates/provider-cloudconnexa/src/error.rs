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
    #[error("Cloud Connexa unreachable: {}{source}", if *.timed_out { "timed out: " } else { "" })]
    Transport {
        /// The request ran out of time (rather than failing to connect or being reset).
        timed_out: bool,
        /// The transport error, stripped of its URL.
        #[source]
        source: reqwest::Error,
    },
    /// A 2xx answer that does not parse as documented.
    #[error("unexpected Cloud Connexa response: {context}{}", .source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Decode {
        /// Which call answered, or what was missing.
        context: String,
        /// The JSON error, when the body did not parse.
        #[source]
        source: Option<serde_json::Error>,
    },
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
                | CloudConnexaError::Transport { .. }
        )
    }

    /// A stable name for the kind of failure, for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            CloudConnexaError::NotFound { .. } => "cloudconnexa_not_found",
            CloudConnexaError::Rejected { .. } => "cloudconnexa_rejected",
            CloudConnexaError::Unauthorized { .. } => "cloudconnexa_unauthorized",
            CloudConnexaError::Forbidden { .. } => "cloudconnexa_forbidden",
            CloudConnexaError::RateLimited { .. } => "cloudconnexa_rate_limited",
            CloudConnexaError::Server { .. } => "cloudconnexa_server",
            CloudConnexaError::Transport { .. } => "cloudconnexa_transport",
            CloudConnexaError::Decode { .. } => "cloudconnexa_decode",
            CloudConnexaError::Config(_) => "cloudconnexa_config",
        }
    }

    /// An answer that could not be used, without an underlying JSON error.
    pub(crate) fn decode(context: impl Into<String>) -> Self {
        CloudConnexaError::Decode {
            context: context.into(),
            source: None,
        }
    }

    /// The object asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CloudConnexaError::NotFound { .. })
    }

    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        let timed_out = e.is_timeout();
        // The URL of the token call carries client_id and client_secret as query parameters.
        CloudConnexaError::Transport {
            timed_out,
            source: e.without_url(),
        }
    }
}

impl From<CloudConnexaError> for ProviderError {
    fn from(e: CloudConnexaError) -> Self {
        let message = e.to_string();
        if e.is_transient() {
            ProviderError::transient(message).with_source(e)
        } else {
            ProviderError::permanent(message).with_source(e)
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
        assert!(t.is_transient());
        let t: ProviderError = CloudConnexaError::Server {
            status: 503,
            message: String::new(),
        }
        .into();
        assert!(t.is_transient());
        assert_eq!(t.code(), "provider_transient");
        assert!(
            std::error::Error::source(&t).is_some(),
            "the client error is kept"
        );
        let p: ProviderError = CloudConnexaError::Forbidden {
            message: "read-only key".into(),
        }
        .into();
        assert!(matches!(p, ProviderError::Permanent { .. }));
        let p: ProviderError = CloudConnexaError::Rejected {
            status: 400,
            envelope: ErrorEnvelope::default(),
        }
        .into();
        assert!(matches!(p, ProviderError::Permanent { .. }));
    }
}
