//! Google API errors, typed by HTTP status and the envelope's `status` — never by message text,
//! which Google rewords freely.

use std::time::Duration;

use access_core::ports::ProviderError;
use serde::Deserialize;

/// What went wrong talking to IAM or Resource Manager.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GcpError {
    /// 404 `NOT_FOUND` (also what a just-created service account looks like for a while).
    #[error("not found: {0}")]
    NotFound(String),
    /// 409 `ALREADY_EXISTS`.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// 409 `ABORTED`: a policy write lost an etag race; redo the whole read-modify-write.
    #[error("concurrent policy change: {0}")]
    Aborted(String),
    /// 400 `FAILED_PRECONDITION`. `constraints` lists the organisation-policy constraints named in
    /// the error's `PreconditionFailure` details (e.g. `constraints/iam.disableServiceAccountKeyCreation`).
    #[error("failed precondition: {message}")]
    FailedPrecondition {
        message: String,
        constraints: Vec<String>,
    },
    /// 403 `PERMISSION_DENIED` (also a project that does not exist).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// 401 `UNAUTHENTICATED`, or no token could be obtained.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    /// 400 `INVALID_ARGUMENT` (bad account id, invalid member, condition on a basic role, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// 429 `RESOURCE_EXHAUSTED`. A quota (service accounts per project) comes with a retry delay of
    /// about a day; a rate limit with a short one or none.
    #[error("resource exhausted: {message}")]
    ResourceExhausted {
        message: String,
        retry_after: Option<Duration>,
    },
    /// 5xx, or the connection failed: worth retrying.
    #[error("Google API unavailable: {0}")]
    Unavailable(String),
    /// Anything else (unexpected status, undecodable body).
    #[error("unexpected Google API response ({code} {status}): {message}")]
    Other {
        code: u16,
        status: String,
        message: String,
    },
}

impl GcpError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, GcpError::NotFound(_))
    }

    /// A quota rather than a rate limit: Google attaches a retry delay of about a day.
    pub fn is_quota(&self) -> bool {
        matches!(self, GcpError::ResourceExhausted { retry_after: Some(d), .. } if *d >= Duration::from_secs(3600))
    }

    /// Worth retrying the same call later.
    pub fn is_transient(&self) -> bool {
        match self {
            GcpError::Aborted(_) | GcpError::Unavailable(_) => true,
            GcpError::ResourceExhausted { .. } => !self.is_quota(),
            _ => false,
        }
    }

    /// Maps to the port's error, with `context` (what was being done) in front.
    pub fn into_provider(self, context: &str) -> ProviderError {
        let message = format!("{context}: {self}");
        if self.is_transient() || self.is_not_found() {
            ProviderError::transient(message).with_source(self)
        } else {
            ProviderError::permanent(message).with_source(self)
        }
    }

    /// Builds the error from a non-2xx response.
    pub(crate) fn from_response(code: u16, body: &[u8]) -> Self {
        let env: Option<Envelope> = serde_json::from_slice(body).ok();
        let (status, message, details) = match env {
            Some(Envelope { error: Some(e) }) => (
                e.status.unwrap_or_default(),
                e.message.unwrap_or_default(),
                e.details,
            ),
            _ => (String::new(), format!("HTTP {code}"), Vec::new()),
        };
        match (code, status.as_str()) {
            (_, "NOT_FOUND") | (404, "") => GcpError::NotFound(message),
            (_, "ALREADY_EXISTS") => GcpError::AlreadyExists(message),
            (_, "ABORTED") | (412, _) => GcpError::Aborted(message),
            (_, "FAILED_PRECONDITION") => {
                let constraints = details
                    .iter()
                    .filter(|d| d.kind.ends_with("google.rpc.PreconditionFailure"))
                    .flat_map(|d| d.violations.iter().filter_map(|v| v.kind.clone()))
                    .collect();
                GcpError::FailedPrecondition {
                    message,
                    constraints,
                }
            }
            (_, "PERMISSION_DENIED") | (403, "") => GcpError::PermissionDenied(message),
            (_, "UNAUTHENTICATED") | (401, _) => GcpError::Unauthenticated(message),
            (_, "INVALID_ARGUMENT") | (400, "") => GcpError::InvalidArgument(message),
            (_, "RESOURCE_EXHAUSTED") | (429, _) => {
                let retry_after = details
                    .iter()
                    .filter(|d| d.kind.ends_with("google.rpc.RetryInfo"))
                    .find_map(|d| d.retry_delay.as_deref().and_then(parse_duration));
                GcpError::ResourceExhausted {
                    message,
                    retry_after,
                }
            }
            (500..=599, _) | (_, "UNAVAILABLE") | (_, "INTERNAL") | (_, "DEADLINE_EXCEEDED") => {
                GcpError::Unavailable(format!("{code} {message}"))
            }
            _ => GcpError::Other {
                code,
                status,
                message,
            },
        }
    }
}

/// The longest `retryDelay` taken at its word: far beyond what any quota window needs.
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(7 * 86_400);

/// `"86401s"` / `"1.5s"` (protobuf Duration JSON).
fn parse_duration(s: &str) -> Option<Duration> {
    s.strip_suffix('s')
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f >= 0.0)
        // The number is the server's: beyond `Duration::MAX` `from_secs_f64` would panic.
        .map(|f| Duration::try_from_secs_f64(f).map_or(MAX_RETRY_DELAY, |d| d.min(MAX_RETRY_DELAY)))
}

#[derive(Deserialize)]
struct Envelope {
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
    status: Option<String>,
    #[serde(default)]
    details: Vec<Detail>,
}

#[derive(Deserialize)]
struct Detail {
    #[serde(rename = "@type", default)]
    kind: String,
    #[serde(rename = "retryDelay")]
    retry_delay: Option<String>,
    #[serde(default)]
    violations: Vec<Violation>,
}

#[derive(Deserialize)]
struct Violation {
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_by_status_not_message() {
        let e = GcpError::from_response(
            409,
            br#"{"error":{"code":409,"message":"whatever words","status":"ABORTED"}}"#,
        );
        assert!(matches!(e, GcpError::Aborted(_)));
        let e = GcpError::from_response(409, br#"{"error":{"code":409,"message":"There were concurrent policy changes","status":"ALREADY_EXISTS"}}"#);
        assert!(matches!(e, GcpError::AlreadyExists(_)));
        let e = GcpError::from_response(
            400,
            br#"{"error":{"code":400,"message":"x","status":"FAILED_PRECONDITION","details":[{"@type":"type.googleapis.com/google.rpc.PreconditionFailure","violations":[{"type":"constraints/iam.disableServiceAccountKeyCreation"}]}]}}"#,
        );
        match e {
            GcpError::FailedPrecondition { constraints, .. } => {
                assert_eq!(
                    constraints,
                    vec!["constraints/iam.disableServiceAccountKeyCreation".to_string()]
                )
            }
            other => panic!("{other:?}"),
        }
        let q = GcpError::from_response(
            429,
            br#"{"error":{"code":429,"message":"m","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"86401s"}]}}"#,
        );
        assert!(q.is_quota() && !q.is_transient());
        let r = GcpError::from_response(
            429,
            br#"{"error":{"code":429,"message":"m","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert!(r.is_transient());
        assert!(matches!(
            GcpError::from_response(502, b"<html>bad gateway</html>"),
            GcpError::Unavailable(_)
        ));
        assert!(matches!(
            GcpError::from_response(404, b""),
            GcpError::NotFound(_)
        ));
        assert!(matches!(
            GcpError::from_response(
                403,
                br#"{"error":{"code":403,"message":"m","status":"PERMISSION_DENIED"}}"#
            ),
            GcpError::PermissionDenied(_)
        ));
    }

    /// A `retryDelay` too large for a `Duration` (or absurd) is capped, not a panic.
    #[test]
    fn huge_retry_delay_is_capped_not_a_panic() {
        for delay in ["1e30s", "18446744073709551616s", "1.8e19s", "1e308s"] {
            let body = format!(
                r#"{{"error":{{"code":429,"message":"m","status":"RESOURCE_EXHAUSTED","details":[{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{delay}"}}]}}}}"#
            );
            match GcpError::from_response(429, body.as_bytes()) {
                GcpError::ResourceExhausted {
                    retry_after: Some(d),
                    ..
                } => assert_eq!(d, MAX_RETRY_DELAY, "{delay}"),
                other => panic!("{delay}: {other:?}"),
            }
        }
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("NaNs"), None);
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
    }
}
