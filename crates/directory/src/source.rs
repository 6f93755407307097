//! Where the org-data dump comes from: a local file, an HTTPS URL, or a GCS object read through
//! the GCS JSON API (`GET {base}/storage/v1/b/{bucket}/o/{object}?alt=media`) with a bearer token.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gcp_auth::AccessTokenSource;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH};

use crate::index::IndexError;

/// The public GCS endpoint; tests and emulators override it.
pub const DEFAULT_GCS_BASE_URL: &str = "https://storage.googleapis.com";
/// The GCP document's default object path.
pub const DEFAULT_ORG_DATA_OBJECT: &str = "orgdata/comprehensive_index_dump.json";
/// Refuse dumps larger than this (a runaway or wrong object must not exhaust memory).
pub const DEFAULT_MAX_BYTES: u64 = 512 * 1024 * 1024;

/// Why loading the dump failed. Messages never carry a token or a URL's query string.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no org data source is configured")]
    NotConfigured,
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("could not get a Google access token: {0}")]
    Auth(#[from] gcp_auth::AuthError),
    #[error("fetching {what}: {message}")]
    Transport {
        /// What was being fetched (a path, `gs://bucket/object`).
        what: String,
        /// The kind of failure and its innermost cause, never a URL.
        message: String,
        /// The underlying error (a transport error stripped of its URL), when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The server answered with an error status (`message` from Google's error envelope when
    /// there is one).
    #[error("fetching {what}: HTTP {status}: {message}")]
    Http {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what} is larger than the {limit}-byte limit")]
    TooLarge { what: String, limit: u64 },
    #[error("{what}: {source}")]
    Parse { what: String, source: IndexError },
}

/// A GCS object and how to reach it.
#[derive(Clone)]
pub struct GcsObject {
    /// `https://storage.googleapis.com` unless overridden (tests, emulators).
    pub base_url: String,
    pub bucket: String,
    pub object: String,
    pub tokens: Arc<dyn AccessTokenSource>,
}

impl fmt::Debug for GcsObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsObject")
            .field("base_url", &self.base_url)
            .field("bucket", &self.bucket)
            .field("object", &self.object)
            .field("tokens", &self.tokens)
            .finish()
    }
}

/// One of the places the dump can be read from.
#[derive(Debug, Clone)]
pub enum OrgDataSource {
    File(PathBuf),
    /// Fetched with a plain GET. May be a signed URL: its query string is never logged.
    Url(String),
    Gcs(GcsObject),
}

impl OrgDataSource {
    /// `file`, `url` or `gcs`: the metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            OrgDataSource::File(_) => "file",
            OrgDataSource::Url(_) => "url",
            OrgDataSource::Gcs(_) => "gcs",
        }
    }

    /// A description safe for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            OrgDataSource::File(p) => format!("file {}", p.display()),
            OrgDataSource::Url(u) => format!("url {}", redact_url(u)),
            OrgDataSource::Gcs(g) => format!("gs://{}/{}", g.bucket, g.object),
        }
    }
}

/// Reads a source into memory.
#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    http: reqwest::Client,
    max_bytes: u64,
}

impl Fetcher {
    pub(crate) fn new(timeout: Duration, max_bytes: u64) -> Self {
        // Building a client only fails when the TLS backend cannot initialise; fall back to the
        // defaults rather than refusing to start, the first fetch will say what is wrong.
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("gatehouse-directory/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Self { http, max_bytes }
    }

    pub(crate) async fn fetch(&self, source: &OrgDataSource) -> Result<Vec<u8>, LoadError> {
        match source {
            OrgDataSource::File(path) => {
                let what = path.display().to_string();
                let meta = tokio::fs::metadata(path).await.map_err(|e| LoadError::Io {
                    path: what.clone(),
                    source: e,
                })?;
                if meta.len() > self.max_bytes {
                    return Err(LoadError::TooLarge {
                        what,
                        limit: self.max_bytes,
                    });
                }
                tokio::fs::read(path).await.map_err(|e| LoadError::Io {
                    path: what,
                    source: e,
                })
            }
            OrgDataSource::Url(url) => {
                let what = redact_url(url);
                let resp = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| transport(&what, e))?;
                self.read_body(&what, resp).await
            }
            OrgDataSource::Gcs(g) => {
                let what = format!("gs://{}/{}", g.bucket, g.object);
                let url = gcs_media_url(&g.base_url, &g.bucket, &g.object).map_err(|m| {
                    LoadError::Transport {
                        what: what.clone(),
                        message: m,
                        source: None,
                    }
                })?;
                let token = g.tokens.token().await?;
                let resp = self
                    .http
                    .get(url)
                    .header(AUTHORIZATION, format!("Bearer {token}"))
                    .send()
                    .await
                    .map_err(|e| transport(&what, e))?;
                self.read_body(&what, resp).await
            }
        }
    }

    async fn read_body(
        &self,
        what: &str,
        mut resp: reqwest::Response,
    ) -> Result<Vec<u8>, LoadError> {
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(LoadError::Http {
                what: what.to_owned(),
                status: status.as_u16(),
                message: error_message(&body),
            });
        }
        let declared = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_bytes) {
            return Err(LoadError::TooLarge {
                what: what.to_owned(),
                limit: self.max_bytes,
            });
        }
        let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(self.max_bytes) as usize);
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(what, e))? {
            if buf.len() as u64 + chunk.len() as u64 > self.max_bytes {
                return Err(LoadError::TooLarge {
                    what: what.to_owned(),
                    limit: self.max_bytes,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }
}

fn transport(what: &str, e: reqwest::Error) -> LoadError {
    // reqwest's Display includes the URL; describe the failure from its kind and source chain
    // instead, so a signed URL's query never reaches a log.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "broken response body"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    let message = if cause.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {cause}")
    };
    LoadError::Transport {
        what: what.to_owned(),
        message,
        source: Some(Box::new(e.without_url())),
    }
}

/// `{base}/storage/v1/b/{bucket}/o/{object}?alt=media`, with the object name as one
/// percent-encoded path segment (`/` becomes `%2F`, as the JSON API requires).
pub fn gcs_media_url(base: &str, bucket: &str, object: &str) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(base).map_err(|e| format!("invalid GCS base URL: {e}"))?;
    {
        let mut seg = url
            .path_segments_mut()
            .map_err(|_| "GCS base URL cannot have a path".to_owned())?;
        seg.pop_if_empty()
            .extend(["storage", "v1", "b", bucket, "o", object]);
    }
    url.query_pairs_mut().append_pair("alt", "media");
    Ok(url)
}

/// The `error.message` of a Google error envelope, else a short prefix of the body.
fn error_message(body: &[u8]) -> String {
    let envelope = serde_json::from_slice::<serde_json::Value>(body).ok();
    if let Some(m) = envelope
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(|m| m.as_str())
    {
        return m.to_owned();
    }
    let text = String::from_utf8_lossy(body);
    let short: String = text.chars().take(200).collect();
    if short.trim().is_empty() {
        "(empty body)".to_owned()
    } else {
        short
    }
}

/// The URL without its query and fragment (signed URLs carry credentials there).
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let had_query = u.query().is_some();
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_password(None);
            if had_query {
                format!("{u}?…")
            } else {
                u.to_string()
            }
        }
        Err(_) => "(unparsable url)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn media_url_encodes_the_object_as_one_segment() {
        let u = gcs_media_url(
            "http://127.0.0.1:9/",
            "b",
            "orgdata/comprehensive_index_dump.json",
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/storage/v1/b/b/o/orgdata%2Fcomprehensive_index_dump.json?alt=media"
        );
        let u = gcs_media_url("https://storage.googleapis.com", "my-bucket", "a b/c.json").unwrap();
        assert_eq!(
            u.as_str(),
            "https://storage.googleapis.com/storage/v1/b/my-bucket/o/a%20b%2Fc.json?alt=media"
        );
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://u:p@host/x.json?X-Goog-Signature=abc"),
            "https://u@host/x.json?…"
        );
        assert_eq!(redact_url("https://host/x.json"), "https://host/x.json");
    }

    #[test]
    fn google_envelope_message() {
        let body = br#"{"error":{"code":404,"message":"No such object: b/o","errors":[]}}"#;
        assert_eq!(error_message(body), "No such object: b/o");
        assert_eq!(error_message(b""), "(empty body)");
    }
}
