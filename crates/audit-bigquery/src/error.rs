use std::fmt;

/// What went wrong talking to BigQuery. Messages never contain the access token.
#[derive(Debug, thiserror::Error)]
pub enum BigQueryError {
    /// Missing or invalid settings.
    #[error("bigquery configuration: {0}")]
    Config(String),
    /// The token source could not produce a token.
    #[error("bigquery auth: {0}")]
    Auth(#[source] gcp_auth::AuthError),
    /// Connection refused, reset, DNS, timeout.
    #[error("bigquery unreachable: {kind}: {source}")]
    Transport {
        /// `timed out`, `connection failed` or `request failed`.
        kind: &'static str,
        /// The transport error (its message names the URL, never the headers or the token).
        #[source]
        source: reqwest::Error,
    },
    /// An HTTP error answer, with Google's error envelope when there was one.
    #[error("{0}")]
    Api(ApiError),
    /// A 2xx answer that does not parse.
    #[error("unexpected bigquery response: {context}{}", .source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Decode {
        /// Which answer, or what was missing.
        context: String,
        /// The JSON error, when the body did not parse.
        #[source]
        source: Option<serde_json::Error>,
    },
    #[error(
        "dataset {project}:{dataset} does not exist; create it (bq mk --dataset --location=… {project}:{dataset}) or pass a location to create it"
    )]
    DatasetMissing { project: String, dataset: String },
}

/// An HTTP error answer from BigQuery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// `errors[0].reason` (`notFound`, `duplicate`, `invalid`, `rateLimitExceeded`, …), empty
    /// when the body was not Google's envelope (an HTML 502 from a proxy).
    pub reason: String,
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(
                f,
                "bigquery answered HTTP {}: {}",
                self.status, self.message
            )
        } else {
            write!(
                f,
                "bigquery answered HTTP {} ({}): {}",
                self.status, self.reason, self.message
            )
        }
    }
}

/// Reasons BigQuery uses for throttling and for its own trouble: worth retrying, whatever the
/// HTTP status (quota errors come as 403).
const TRANSIENT_REASONS: &[&str] = &[
    "rateLimitExceeded",
    "quotaExceeded",
    "backendError",
    "internalError",
    "timeout",
    "stopped",
];

pub(crate) fn is_transient_reason(reason: &str) -> bool {
    TRANSIENT_REASONS.contains(&reason)
}

impl BigQueryError {
    /// Retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            BigQueryError::Auth(_) | BigQueryError::Transport { .. } => true,
            BigQueryError::Api(e) => {
                e.status == 401
                    || e.status == 408
                    || e.status == 429
                    || e.status >= 500
                    || is_transient_reason(&e.reason)
            }
            BigQueryError::Config(_)
            | BigQueryError::Decode { .. }
            | BigQueryError::DatasetMissing { .. } => false,
        }
    }

    /// A stable name for the kind of failure, for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            BigQueryError::Config(_) => "bigquery_config",
            BigQueryError::Auth(_) => "bigquery_auth",
            BigQueryError::Transport { .. } => "bigquery_transport",
            BigQueryError::Api(_) => "bigquery_api",
            BigQueryError::Decode { .. } => "bigquery_decode",
            BigQueryError::DatasetMissing { .. } => "bigquery_dataset_missing",
        }
    }

    /// A body that did not parse as `context`.
    pub(crate) fn decode(context: &str, e: serde_json::Error) -> Self {
        BigQueryError::Decode {
            context: context.to_owned(),
            source: Some(e),
        }
    }

    /// A 400 about the request itself (too large, malformed row): splitting it may isolate the
    /// offending row.
    pub(crate) fn is_bad_request(&self) -> bool {
        matches!(self, BigQueryError::Api(e) if e.status == 400 && !is_transient_reason(&e.reason))
    }

    pub(crate) fn is_status(&self, status: u16) -> bool {
        matches!(self, BigQueryError::Api(e) if e.status == status)
    }
}
