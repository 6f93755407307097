//! Where the rows go. Nothing in here is secret (the token comes from `gcp-auth`).

use std::time::Duration;

use crate::error::BigQueryError;

pub const DEFAULT_BASE_URL: &str = "https://bigquery.googleapis.com";
/// The GCP document's dataset.
pub const DEFAULT_DATASET: &str = "ci_chat_bot";
/// The GCP document's table.
pub const DEFAULT_GRANTS_TABLE: &str = "access_grants";
pub const DEFAULT_EVENTS_TABLE: &str = "access_events";
/// Google's recommended maximum rows per `insertAll` request.
pub const DEFAULT_MAX_ROWS_PER_REQUEST: usize = 500;
/// BigQuery refuses requests over 10 MiB; stay clear of it (the envelope and HTTP framing count).
pub const DEFAULT_MAX_BYTES_PER_REQUEST: usize = 9 * 1024 * 1024;
/// `insertAll` requests of one export call in flight at once: a batch of 500 events is two
/// requests (events, grants), a larger one more; sent one after the other they bounded the drain
/// by round trips. Small, so a backlog after an outage does not hit BigQuery's rate limits in a
/// burst.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 4;

/// Settings of a [`crate::BigQuerySink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigQueryConfig {
    /// Scheme and host, without `/bigquery/v2` (`BIGQUERY_API_URL`).
    pub base_url: String,
    /// The project that holds the dataset (`BIGQUERY_PROJECT`).
    pub project: String,
    /// `BIGQUERY_DATASET`, default `ci_chat_bot`.
    pub dataset: String,
    /// `BIGQUERY_GRANTS_TABLE`, default `access_grants`.
    pub grants_table: String,
    /// `BIGQUERY_EVENTS_TABLE`, default `access_events`.
    pub events_table: String,
    /// Signed audit checkpoints, default `access_audit_checkpoints` (see `docs/audit.md`).
    pub checkpoints_table: String,
    /// Rows per `insertAll` request (at most 500 is what Google recommends).
    pub max_rows_per_request: usize,
    /// Body bytes per `insertAll` request.
    pub max_bytes_per_request: usize,
    /// `insertAll` requests of one export call in flight at once (at least 1).
    pub max_concurrent_requests: usize,
    /// Whole-request timeout; a timeout counts as an outage and the batch is retried.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

impl BigQueryConfig {
    /// Defaults for everything but the project.
    pub fn new(project: impl Into<String>) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_string(),
            project: project.into(),
            dataset: DEFAULT_DATASET.to_string(),
            grants_table: DEFAULT_GRANTS_TABLE.to_string(),
            events_table: DEFAULT_EVENTS_TABLE.to_string(),
            checkpoints_table: "access_audit_checkpoints".to_string(),
            max_rows_per_request: DEFAULT_MAX_ROWS_PER_REQUEST,
            max_bytes_per_request: DEFAULT_MAX_BYTES_PER_REQUEST,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }

    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    pub fn with_dataset(mut self, dataset: impl Into<String>) -> Self {
        self.dataset = dataset.into();
        self
    }

    /// From environment variables read through `get` (the server passes its one snapshot of the
    /// environment; scripts pass the process environment): `BIGQUERY_PROJECT` (or
    /// `GOOGLE_CLOUD_PROJECT`) is required; `BIGQUERY_API_URL`, `BIGQUERY_DATASET`,
    /// `BIGQUERY_GRANTS_TABLE`, `BIGQUERY_EVENTS_TABLE` override the defaults.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, BigQueryError> {
        let var = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let project = var("BIGQUERY_PROJECT")
            .or_else(|| var("GOOGLE_CLOUD_PROJECT"))
            .ok_or_else(|| BigQueryError::Config("BIGQUERY_PROJECT is not set".into()))?;
        let mut c = Self::new(project);
        if let Some(v) = var("BIGQUERY_API_URL") {
            c.base_url = v;
        }
        if let Some(v) = var("BIGQUERY_DATASET") {
            c.dataset = v;
        }
        if let Some(v) = var("BIGQUERY_GRANTS_TABLE") {
            c.grants_table = v;
        }
        if let Some(v) = var("BIGQUERY_EVENTS_TABLE") {
            c.events_table = v;
        }
        c.validate()?;
        Ok(c)
    }

    /// The names end up in URL paths, so anything BigQuery would not accept is refused here
    /// rather than escaped.
    pub fn validate(&self) -> Result<(), BigQueryError> {
        let url = self.base_url.trim_end_matches('/');
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(BigQueryError::Config(format!(
                "BIGQUERY_API_URL must be an http(s) URL, got '{url}'"
            )));
        }
        // Project ids: lower-case letters, digits, hyphens; legacy domain-scoped ids add `.` and `:`.
        let project_ok = !self.project.is_empty()
            && self.project.len() <= 100
            && self.project.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':')
            });
        if !project_ok {
            return Err(BigQueryError::Config(format!(
                "'{}' is not a valid GCP project id",
                self.project
            )));
        }
        for (what, name) in [
            ("dataset", &self.dataset),
            ("grants table", &self.grants_table),
            ("events table", &self.events_table),
        ] {
            let ok = !name.is_empty()
                && name.len() <= 1024
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(BigQueryError::Config(format!(
                    "'{name}' is not a valid BigQuery {what} name (letters, digits and underscores)"
                )));
            }
        }
        if self.grants_table == self.events_table {
            return Err(BigQueryError::Config(
                "the grants and events tables must differ".into(),
            ));
        }
        if self.max_rows_per_request == 0 || self.max_bytes_per_request < 1024 {
            return Err(BigQueryError::Config(
                "max rows/bytes per request are too small".into(),
            ));
        }
        Ok(())
    }

    /// `{base}/bigquery/v2`.
    pub(crate) fn api_root(&self) -> String {
        format!("{}/bigquery/v2", self.base_url.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn env_defaults_and_overrides() {
        let c = BigQueryConfig::from_lookup(|k| {
            (k == "BIGQUERY_PROJECT").then(|| "my-proj".to_string())
        })
        .unwrap();
        assert_eq!(c.dataset, "ci_chat_bot");
        assert_eq!(c.grants_table, "access_grants");
        assert_eq!(c.events_table, "access_events");
        assert_eq!(c.api_root(), "https://bigquery.googleapis.com/bigquery/v2");

        let c = BigQueryConfig::from_lookup(|k| match k {
            "GOOGLE_CLOUD_PROJECT" => Some("other".into()),
            "BIGQUERY_API_URL" => Some("http://127.0.0.1:9050/".into()),
            "BIGQUERY_DATASET" => Some("audit".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.project, "other");
        assert_eq!(c.api_root(), "http://127.0.0.1:9050/bigquery/v2");
        assert_eq!(c.dataset, "audit");
    }

    #[test]
    fn refuses_names_that_would_bend_the_url() {
        assert!(BigQueryConfig::from_lookup(|_| None).is_err());
        assert!(
            BigQueryConfig::new("p")
                .with_dataset("a/../b")
                .validate()
                .is_err()
        );
        assert!(BigQueryConfig::new("P Q").validate().is_err());
        assert!(
            BigQueryConfig::new("p")
                .with_base_url("ftp://x")
                .validate()
                .is_err()
        );
        assert!(
            BigQueryConfig::new("openshift-crt-ephemeral-access")
                .validate()
                .is_ok()
        );
    }
}
