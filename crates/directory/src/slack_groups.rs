//! Slack user groups as an eligibility source: `usergroups.users.list`, cached per group.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, RETRY_AFTER};
use serde::Deserialize;

pub const DEFAULT_SLACK_API_URL: &str = "https://slack.com/api";

/// Why a group's members could not be learnt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackGroupError {
    #[error("'{0}' is not a Slack user group id (expected S…)")]
    InvalidGroupId(String),
    /// Slack's `{"ok":false,"error":…}` (`no_such_subteam`, `missing_scope`, `invalid_auth`, …).
    #[error("usergroups.users.list for {group} failed: {error}")]
    Api { group: String, error: String },
    /// 429 with a `Retry-After` longer than we are willing to wait.
    #[error("usergroups.users.list for {group} is rate limited; retry after {retry_after:?}")]
    RateLimited {
        group: String,
        retry_after: Duration,
    },
    #[error("usergroups.users.list for {group}: {message}")]
    Transport { group: String, message: String },
}

/// Settings of [`SlackUserGroups`].
#[derive(Clone)]
pub struct SlackGroupsSettings {
    /// `https://slack.com/api` unless overridden (`SLACK_API_URL`).
    pub api_url: String,
    pub bot_token: String,
    /// How long a fetched member list is trusted.
    pub cache_ttl: Duration,
    /// How long an expired list may still be used while Slack cannot be reached or rate-limits.
    pub max_stale: Duration,
    /// The longest `Retry-After` waited for within one lookup (otherwise: stale list or error).
    pub max_retry_wait: Duration,
    pub timeout: Duration,
}

impl fmt::Debug for SlackGroupsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackGroupsSettings")
            .field("api_url", &self.api_url)
            .field("bot_token", &"<redacted>")
            .field("cache_ttl", &self.cache_ttl)
            .field("max_stale", &self.max_stale)
            .field("max_retry_wait", &self.max_retry_wait)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SlackGroupsSettings {
    pub fn new(bot_token: impl Into<String>) -> Self {
        Self {
            api_url: DEFAULT_SLACK_API_URL.to_owned(),
            bot_token: bot_token.into(),
            cache_ttl: Duration::from_secs(300),
            max_stale: Duration::from_secs(3600),
            max_retry_wait: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        }
    }
}

struct CacheEntry {
    fetched: Instant,
    members: Arc<HashSet<String>>,
}

/// Members of Slack user groups, fetched with the bot token and cached for `cache_ttl`.
pub struct SlackUserGroups {
    settings: SlackGroupsSettings,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, CacheEntry>>,
    /// One fetch per group at a time: when a popular group's entry expires, the requests that
    /// arrive together wait for one call instead of each spending Slack's rate limit.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for SlackUserGroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackUserGroups")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct UsersListResponse {
    ok: bool,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    error: Option<String>,
}

impl SlackUserGroups {
    pub fn new(settings: SlackGroupsSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            settings,
            http,
            cache: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Is `user_id` in `group_id`?
    pub async fn is_member(&self, group_id: &str, user_id: &str) -> Result<bool, SlackGroupError> {
        Ok(self.members(group_id).await?.contains(user_id))
    }

    /// The group's member ids, from the cache when fresh.
    pub async fn members(&self, group_id: &str) -> Result<Arc<HashSet<String>>, SlackGroupError> {
        validate_group_id(group_id)?;
        if let Some(m) = self.cached(group_id, self.settings.cache_ttl) {
            return Ok(m);
        }
        let gate = {
            let mut inflight = self.inflight.lock().map_err(|_| poisoned(group_id))?;
            Arc::clone(inflight.entry(group_id.to_owned()).or_default())
        };
        let _gate = gate.lock().await;
        // Someone else may have fetched while we waited for the gate.
        if let Some(m) = self.cached(group_id, self.settings.cache_ttl) {
            return Ok(m);
        }
        match self.fetch(group_id).await {
            Ok(members) => {
                let members = Arc::new(members);
                if let Ok(mut c) = self.cache.lock() {
                    c.insert(
                        group_id.to_owned(),
                        CacheEntry {
                            fetched: Instant::now(),
                            members: Arc::clone(&members),
                        },
                    );
                }
                Ok(members)
            }
            // A definite answer from Slack (the group does not exist, the token lacks a scope)
            // must not be papered over with an old list.
            Err(e @ SlackGroupError::Api { .. }) => {
                if let Ok(mut c) = self.cache.lock() {
                    c.remove(group_id);
                }
                Err(e)
            }
            Err(e) => {
                match self.cached(group_id, self.settings.cache_ttl + self.settings.max_stale) {
                    Some(stale) => {
                        tracing::warn!(group = group_id, error = %e, "using a stale Slack user group member list");
                        Ok(stale)
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Forgets the cached list of `group_id` (e.g. on a `subteam_members_changed` event).
    pub fn invalidate(&self, group_id: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(group_id);
        }
    }

    fn cached(&self, group_id: &str, max_age: Duration) -> Option<Arc<HashSet<String>>> {
        let c = self.cache.lock().ok()?;
        c.get(group_id)
            .filter(|e| e.fetched.elapsed() < max_age)
            .map(|e| Arc::clone(&e.members))
    }

    async fn fetch(&self, group_id: &str) -> Result<HashSet<String>, SlackGroupError> {
        let url = format!(
            "{}/usergroups.users.list",
            self.settings.api_url.trim_end_matches('/')
        );
        let mut waited = false;
        loop {
            let resp = self
                .http
                .get(&url)
                .query(&[("usergroup", group_id)])
                .header(AUTHORIZATION, format!("Bearer {}", self.settings.bot_token))
                .send()
                .await
                .map_err(|e| transport(group_id, &e))?;
            if resp.status() == StatusCode::TOO_MANY_REQUESTS {
                let retry_after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(Duration::from_secs(1));
                if !waited && retry_after <= self.settings.max_retry_wait {
                    tracing::debug!(
                        group = group_id,
                        ?retry_after,
                        "usergroups.users.list rate limited; waiting"
                    );
                    tokio::time::sleep(retry_after).await;
                    waited = true;
                    continue;
                }
                return Err(SlackGroupError::RateLimited {
                    group: group_id.to_owned(),
                    retry_after,
                });
            }
            let status = resp.status();
            if !status.is_success() {
                return Err(SlackGroupError::Transport {
                    group: group_id.to_owned(),
                    message: format!("HTTP {status}"),
                });
            }
            let body: UsersListResponse = resp.json().await.map_err(|e| transport(group_id, &e))?;
            if !body.ok {
                return Err(SlackGroupError::Api {
                    group: group_id.to_owned(),
                    error: body.error.unwrap_or_else(|| "unknown_error".to_owned()),
                });
            }
            return Ok(body.users.into_iter().collect());
        }
    }
}

fn validate_group_id(id: &str) -> Result<(), SlackGroupError> {
    let ok = id.len() >= 2
        && id.len() <= 32
        && id.starts_with('S')
        && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(SlackGroupError::InvalidGroupId(
            id.chars().take(40).collect(),
        ))
    }
}

fn poisoned(group: &str) -> SlackGroupError {
    SlackGroupError::Transport {
        group: group.to_owned(),
        message: "internal lock poisoned".to_owned(),
    }
}

fn transport(group: &str, e: &reqwest::Error) -> SlackGroupError {
    let message = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_decode() {
        "response is not Slack's JSON envelope".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    SlackGroupError::Transport {
        group: group.to_owned(),
        message,
    }
}
