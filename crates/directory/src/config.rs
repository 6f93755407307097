//! Configuration: a `[directory]` table in the TOML file, or the GCP document's environment names.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use access_core::duration::AccessDuration;
use gcp_auth::AccessTokenSource;
use serde::{Deserialize, Serialize};

use crate::directory::OrgDirectory;
use crate::org::OrgData;
use crate::slack_groups::{DEFAULT_SLACK_API_URL, SlackGroupsSettings, SlackUserGroups};
use crate::source::{
    DEFAULT_GCS_BASE_URL, DEFAULT_MAX_BYTES, DEFAULT_ORG_DATA_OBJECT, GcsObject, OrgDataSource,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("only one org data source may be set, got {0}")]
    ConflictingSources(String),
    #[error("{name}: {message}")]
    Invalid { name: &'static str, message: String },
    #[error(
        "org data comes from GCS but no Google credentials are configured (GCP_SERVICE_ACCOUNT_JSON)"
    )]
    MissingCredentials,
}

/// Eligibility sources.
///
/// ```toml
/// [directory.org_data]
/// source = "gcs"                      # or "file" (path = …) or "url" (url = …)
/// bucket = "my-org-data-bucket"
/// object = "orgdata/comprehensive_index_dump.json"
/// reload_interval = "10m"
///
/// [directory.slack_groups]
/// cache_ttl = "5m"                    # the bot token comes from SLACK_BOT_TOKEN
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DirectoryConfig {
    #[serde(default)]
    pub org_data: Option<OrgDataConfig>,
    #[serde(default)]
    pub slack_groups: Option<SlackGroupsConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrgDataConfig {
    #[serde(flatten)]
    pub source: OrgDataSourceConfig,
    #[serde(default = "default_reload_interval")]
    pub reload_interval: AccessDuration,
    /// Per fetch.
    #[serde(default = "default_timeout")]
    pub timeout: AccessDuration,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum OrgDataSourceConfig {
    File {
        path: PathBuf,
    },
    Url {
        url: String,
    },
    Gcs {
        bucket: String,
        #[serde(default = "default_object")]
        object: String,
        /// The GCS JSON API endpoint (tests, emulators).
        #[serde(default = "default_gcs_base")]
        base_url: String,
    },
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SlackGroupsConfig {
    #[serde(default = "default_slack_api")]
    pub api_url: String,
    /// Usually left out of the file and taken from `SLACK_BOT_TOKEN`. Never serialised.
    #[serde(default, skip_serializing)]
    pub bot_token: Option<String>,
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl: AccessDuration,
    #[serde(default = "default_max_stale")]
    pub max_stale: AccessDuration,
}

impl fmt::Debug for SlackGroupsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackGroupsConfig")
            .field("api_url", &self.api_url)
            .field("bot_token", &self.bot_token.as_ref().map(|_| "<redacted>"))
            .field("cache_ttl", &self.cache_ttl)
            .field("max_stale", &self.max_stale)
            .finish()
    }
}

fn secs(n: u64) -> AccessDuration {
    // Constants below are all positive, which is all from_secs checks.
    AccessDuration::from_secs(n).unwrap_or_else(|_| unreachable!("positive constant"))
}
fn default_reload_interval() -> AccessDuration {
    secs(600)
}
fn default_timeout() -> AccessDuration {
    secs(60)
}
fn default_max_bytes() -> u64 {
    DEFAULT_MAX_BYTES
}
fn default_object() -> String {
    DEFAULT_ORG_DATA_OBJECT.to_owned()
}
fn default_gcs_base() -> String {
    DEFAULT_GCS_BASE_URL.to_owned()
}
fn default_slack_api() -> String {
    DEFAULT_SLACK_API_URL.to_owned()
}
fn default_cache_ttl() -> AccessDuration {
    secs(300)
}
fn default_max_stale() -> AccessDuration {
    secs(3600)
}

impl OrgDataConfig {
    pub fn new(source: OrgDataSourceConfig) -> Self {
        Self {
            source,
            reload_interval: default_reload_interval(),
            timeout: default_timeout(),
            max_bytes: default_max_bytes(),
        }
    }

    /// Whether building the source needs Google credentials.
    pub fn needs_google_credentials(&self) -> bool {
        matches!(self.source, OrgDataSourceConfig::Gcs { .. })
    }

    pub fn reload_interval(&self) -> Duration {
        self.reload_interval.as_std()
    }
}

impl SlackGroupsConfig {
    pub fn new() -> Self {
        Self {
            api_url: default_slack_api(),
            bot_token: None,
            cache_ttl: default_cache_ttl(),
            max_stale: default_max_stale(),
        }
    }
}

impl Default for SlackGroupsConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The environment names this crate reads (the GCP document's first two, then Gatehouse's).
pub mod env {
    pub const ORG_DATA_BUCKET: &str = "ORG_DATA_BUCKET";
    pub const ORG_DATA_OBJECT_PATH: &str = "ORG_DATA_OBJECT_PATH";
    pub const ORG_DATA_FILE: &str = "ORG_DATA_FILE";
    pub const ORG_DATA_URL: &str = "ORG_DATA_URL";
    /// GCS JSON API base for the org data (tests, emulators).
    pub const ORG_DATA_GCS_URL: &str = "ORG_DATA_GCS_URL";
    /// The variable Google's client libraries honour for a storage emulator; used when
    /// `ORG_DATA_GCS_URL` is unset.
    pub const STORAGE_EMULATOR_HOST: &str = "STORAGE_EMULATOR_HOST";
    /// `10m`, `1h`, or seconds.
    pub const ORG_DATA_RELOAD_INTERVAL: &str = "ORG_DATA_RELOAD_INTERVAL";
    pub const SLACK_API_URL: &str = "SLACK_API_URL";
    pub const SLACK_BOT_TOKEN: &str = "SLACK_BOT_TOKEN";
    pub const SLACK_USERGROUP_CACHE_TTL: &str = "SLACK_USERGROUP_CACHE_TTL";
}

impl DirectoryConfig {
    /// From environment variables read through `get` (the server passes its one snapshot of the
    /// environment, tests a map, scripts the process environment):
    /// - org data from `ORG_DATA_BUCKET` (+ `ORG_DATA_OBJECT_PATH`, default
    ///   `orgdata/comprehensive_index_dump.json`; `ORG_DATA_GCS_URL` or `STORAGE_EMULATOR_HOST`
    ///   for another endpoint), or `ORG_DATA_FILE`, or `ORG_DATA_URL` — at most one of the three;
    ///   `ORG_DATA_RELOAD_INTERVAL` (default 10m);
    /// - Slack user groups when `SLACK_BOT_TOKEN` is set, against `SLACK_API_URL`, cached for
    ///   `SLACK_USERGROUP_CACHE_TTL` (default 5m).
    pub fn from_env_with(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let set: Vec<&str> = [env::ORG_DATA_BUCKET, env::ORG_DATA_FILE, env::ORG_DATA_URL]
            .into_iter()
            .filter(|k| get(k).is_some())
            .collect();
        if set.len() > 1 {
            return Err(ConfigError::ConflictingSources(set.join(", ")));
        }
        let source = if let Some(bucket) = get(env::ORG_DATA_BUCKET) {
            let base_url = get(env::ORG_DATA_GCS_URL)
                .or_else(|| {
                    get(env::STORAGE_EMULATOR_HOST).map(|h| {
                        if h.contains("://") {
                            h
                        } else {
                            format!("http://{h}")
                        }
                    })
                })
                .unwrap_or_else(default_gcs_base);
            Some(OrgDataSourceConfig::Gcs {
                bucket,
                object: get(env::ORG_DATA_OBJECT_PATH).unwrap_or_else(default_object),
                base_url,
            })
        } else if let Some(path) = get(env::ORG_DATA_FILE) {
            Some(OrgDataSourceConfig::File { path: path.into() })
        } else {
            get(env::ORG_DATA_URL).map(|url| OrgDataSourceConfig::Url { url })
        };
        let org_data = match source {
            Some(source) => {
                let mut c = OrgDataConfig::new(source);
                if let Some(v) = get(env::ORG_DATA_RELOAD_INTERVAL) {
                    c.reload_interval = parse_duration(env::ORG_DATA_RELOAD_INTERVAL, &v)?;
                }
                Some(c)
            }
            None => None,
        };
        let slack_groups = match get(env::SLACK_BOT_TOKEN) {
            Some(token) => {
                let mut c = SlackGroupsConfig::new();
                c.bot_token = Some(token);
                if let Some(u) = get(env::SLACK_API_URL) {
                    c.api_url = u;
                }
                if let Some(v) = get(env::SLACK_USERGROUP_CACHE_TTL) {
                    c.cache_ttl = parse_duration(env::SLACK_USERGROUP_CACHE_TTL, &v)?;
                }
                Some(c)
            }
            None => None,
        };
        Ok(Self {
            org_data,
            slack_groups,
        })
    }

    /// Fills what the file leaves to the environment: the bot token from `SLACK_BOT_TOKEN` and,
    /// when the file has no `[directory.org_data]`, the org data variables.
    pub fn merge_env_with(
        mut self,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let from_env = Self::from_env_with(&get)?;
        if self.org_data.is_none() {
            self.org_data = from_env.org_data;
        }
        match (&mut self.slack_groups, from_env.slack_groups) {
            (Some(file), Some(envc)) if file.bot_token.is_none() => file.bot_token = envc.bot_token,
            (None, Some(envc)) => self.slack_groups = Some(envc),
            _ => {}
        }
        Ok(self)
    }

    /// Builds the directory (nothing is fetched yet: call `reload()` on its org data, then
    /// `spawn_reloader`). `google` is required when the org data lives in GCS.
    pub fn build(
        &self,
        google: Option<Arc<dyn AccessTokenSource>>,
    ) -> Result<OrgDirectory, ConfigError> {
        let mut dir = OrgDirectory::new();
        if let Some(o) = &self.org_data {
            let source = match &o.source {
                OrgDataSourceConfig::File { path } => OrgDataSource::File(path.clone()),
                OrgDataSourceConfig::Url { url } => {
                    let parsed = reqwest::Url::parse(url).map_err(|e| ConfigError::Invalid {
                        name: "org_data.url",
                        message: e.to_string(),
                    })?;
                    if !matches!(parsed.scheme(), "https" | "http") {
                        return Err(ConfigError::Invalid {
                            name: "org_data.url",
                            message: "must be an https:// URL".into(),
                        });
                    }
                    if parsed.scheme() == "http" {
                        tracing::warn!(
                            "org data URL is plain http: membership data can be altered in transit"
                        );
                    }
                    OrgDataSource::Url(url.clone())
                }
                OrgDataSourceConfig::Gcs {
                    bucket,
                    object,
                    base_url,
                } => {
                    if bucket.is_empty() || object.is_empty() {
                        return Err(ConfigError::Invalid {
                            name: "org_data.bucket",
                            message: "bucket and object must be set".into(),
                        });
                    }
                    reqwest::Url::parse(base_url).map_err(|e| ConfigError::Invalid {
                        name: "org_data.base_url",
                        message: e.to_string(),
                    })?;
                    let tokens = google.clone().ok_or(ConfigError::MissingCredentials)?;
                    OrgDataSource::Gcs(GcsObject {
                        base_url: base_url.clone(),
                        bucket: bucket.clone(),
                        object: object.clone(),
                        tokens,
                    })
                }
            };
            dir = dir.with_org_data(Arc::new(OrgData::with_limits(
                source,
                o.timeout.as_std(),
                o.max_bytes,
            )));
        }
        if let Some(s) = &self.slack_groups {
            let token = s.bot_token.clone().ok_or(ConfigError::Invalid {
                name: "slack_groups.bot_token",
                message: "Slack user groups need the bot token (SLACK_BOT_TOKEN)".into(),
            })?;
            let mut settings = SlackGroupsSettings::new(token);
            settings.api_url = s.api_url.clone();
            settings.cache_ttl = s.cache_ttl.as_std();
            settings.max_stale = s.max_stale.as_std();
            dir = dir.with_slack_groups(Arc::new(SlackUserGroups::new(settings)));
        }
        Ok(dir)
    }
}

fn parse_duration(name: &'static str, v: &str) -> Result<AccessDuration, ConfigError> {
    v.parse::<AccessDuration>()
        .map_err(|e| ConfigError::Invalid {
            name,
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn gcp_document_environment() {
        let c = DirectoryConfig::from_env_with(env(&[("ORG_DATA_BUCKET", "my-org-data-bucket")]))
            .unwrap();
        let o = c.org_data.unwrap();
        assert_eq!(
            o.source,
            OrgDataSourceConfig::Gcs {
                bucket: "my-org-data-bucket".into(),
                object: "orgdata/comprehensive_index_dump.json".into(),
                base_url: "https://storage.googleapis.com".into()
            }
        );
        assert_eq!(o.reload_interval.secs(), 600);
        assert!(c.slack_groups.is_none());

        let c = DirectoryConfig::from_env_with(env(&[
            ("ORG_DATA_BUCKET", "b"),
            ("ORG_DATA_OBJECT_PATH", "production/org_data.json"),
            ("STORAGE_EMULATOR_HOST", "127.0.0.1:4443"),
            ("ORG_DATA_RELOAD_INTERVAL", "5m"),
            ("SLACK_BOT_TOKEN", "xoxb-1"),
            ("SLACK_API_URL", "http://127.0.0.1:1/api"),
        ]))
        .unwrap();
        let o = c.org_data.unwrap();
        assert_eq!(
            o.source,
            OrgDataSourceConfig::Gcs {
                bucket: "b".into(),
                object: "production/org_data.json".into(),
                base_url: "http://127.0.0.1:4443".into()
            }
        );
        assert_eq!(o.reload_interval.secs(), 300);
        let s = c.slack_groups.unwrap();
        assert_eq!(s.api_url, "http://127.0.0.1:1/api");
        assert!(!format!("{s:?}").contains("xoxb-1"));
    }

    #[test]
    fn conflicting_and_invalid() {
        let e = DirectoryConfig::from_env_with(env(&[
            ("ORG_DATA_BUCKET", "b"),
            ("ORG_DATA_FILE", "/x.json"),
        ]))
        .unwrap_err();
        assert!(matches!(e, ConfigError::ConflictingSources(_)));
        let e = DirectoryConfig::from_env_with(env(&[
            ("ORG_DATA_FILE", "/x"),
            ("ORG_DATA_RELOAD_INTERVAL", "soon"),
        ]))
        .unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { .. }));
        let c = DirectoryConfig::from_env_with(env(&[("ORG_DATA_BUCKET", "b")])).unwrap();
        assert_eq!(c.build(None).unwrap_err(), ConfigError::MissingCredentials);
    }

    #[test]
    fn toml_shape() {
        let c: DirectoryConfig = serde_json::from_value(serde_json::json!({
            "org_data": {"source": "url", "url": "https://example.com/dump.json", "reload_interval": "1h"},
            "slack_groups": {"cache_ttl": 60}
        }))
        .unwrap();
        assert_eq!(c.org_data.as_ref().unwrap().reload_interval.secs(), 3600);
        assert_eq!(
            c.slack_groups.as_ref().unwrap().api_url,
            "https://slack.com/api"
        );
        let c = c
            .merge_env_with(env(&[("SLACK_BOT_TOKEN", "xoxb-2")]))
            .unwrap();
        assert_eq!(
            c.slack_groups.as_ref().unwrap().bot_token.as_deref(),
            Some("xoxb-2")
        );
        let out = serde_json::to_string(&c).unwrap();
        assert!(!out.contains("xoxb-2"));
    }
}
