use std::fmt;

/// What went wrong talking to BigQuery. Messages never contain the access token.
#[derive(Debug, thiserror::Error)]
pub enum BigQueryError {
    #[error("bigquery configuration: {0}")]
    Config(String),
    /// The token source could not produce a token.
    #[error("bigquery auth: {0}")]
    Auth(String),
    /// Connection refused, reset, DNS, timeout.
    #[error("bigquery unreachable: {0}")]
    Transport(String),
    /// An HTTP error answer, with Google's error envelope when there was one.
    #[error("{0}")]
    Api(ApiError),
    /// A 2xx answer that does not parse.
    #[error("unexpected bigquery response: {0}")]
    Decode(String),
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
            BigQueryError::Auth(_) | BigQueryError::Transport(_) => true,
            BigQueryError::Api(e) => {
                e.status == 401
                    || e.status == 408
                    || e.status == 429
                    || e.status >= 500
                    || is_transient_reason(&e.reason)
            }
            BigQueryError::Config(_)
            | BigQueryError::Decode(_)
            | BigQueryError::DatasetMissing { .. } => false,
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
