//! Settings, from the environment names of the source documents.

use std::fmt;
use std::time::Duration;

/// The Web API base when `SLACK_API_URL` is not set.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";
/// The Cloud Connexa document's default for `APPROVAL_CHANNEL`.
pub const DEFAULT_APPROVAL_CHANNEL: &str = "vpn-access-approvals";

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("<unset>")
        } else {
            f.write_str("<redacted>")
        }
    }
}

/// Everything the Slack adapter needs. Every field has a default, so a bare environment yields a
/// config that answers 401 to every Slack request and posts nothing.
#[derive(Clone)]
pub struct SlackConfig {
    /// `SLACK_BOT_TOKEN` (`xoxb-…`).
    pub bot_token: Secret,
    /// `SLACK_SIGNING_SECRET`.
    pub signing_secret: Secret,
    /// `SLACK_API_URL`, without a trailing slash.
    pub api_url: String,
    /// `APPROVAL_CHANNEL`: where approval requests go when a resource names no channel of its own.
    pub approval_channel: String,
    /// Largest request body accepted on the Slack endpoints (`SLACK_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// How long a handler may work before it must answer Slack (`SLACK_ACK_BUDGET_MS`); Slack
    /// gives up at 3 s, so this leaves room for the network.
    pub ack_budget: Duration,
    /// Timeout of one Web API call (`SLACK_HTTP_TIMEOUT_SECS`).
    pub http_timeout: Duration,
    /// The longest `Retry-After` the client sleeps through before retrying a 429 itself; longer
    /// ones are handed back as transient errors for the job queue to retry later.
    pub max_inline_retry_after: Duration,
    /// Per-workspace limits on the Slack endpoints (`[server.rate_limits]`; none by default
    /// here, the server configures them). Shared by every router built from this config (HTTP
    /// and Socket Mode), so a workspace has one budget per process.
    pub workspace_limiter: std::sync::Arc<crate::ratelimit::WorkspaceLimiter>,
}

impl fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackConfig")
            .field("bot_token", &self.bot_token)
            .field("signing_secret", &self.signing_secret)
            .field("api_url", &self.api_url)
            .field("approval_channel", &self.approval_channel)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("ack_budget", &self.ack_budget)
            .field("http_timeout", &self.http_timeout)
            .field("workspace_limits", &self.workspace_limiter.limits())
            .finish()
    }
}

impl Default for SlackConfig {
    fn default() -> Self {
        Self {
            bot_token: Secret::default(),
            signing_secret: Secret::default(),
            api_url: DEFAULT_API_URL.to_string(),
            approval_channel: DEFAULT_APPROVAL_CHANNEL.to_string(),
            max_body_bytes: 64 * 1024,
            ack_budget: Duration::from_millis(2000),
            http_timeout: Duration::from_secs(10),
            max_inline_retry_after: Duration::from_secs(30),
            workspace_limiter: Default::default(),
        }
    }
}

impl SlackConfig {
    /// Reads `SLACK_BOT_TOKEN`, `SLACK_SIGNING_SECRET`, `SLACK_API_URL`, `APPROVAL_CHANNEL` (all
    /// optional) and the tuning knobs above through `get` (the server passes its one snapshot of
    /// the environment, tests a map, scripts the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let d = Self::default();
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
        Self {
            bot_token: get("SLACK_BOT_TOKEN").map(Secret::new).unwrap_or_default(),
            signing_secret: get("SLACK_SIGNING_SECRET")
                .map(Secret::new)
                .unwrap_or_default(),
            api_url: get("SLACK_API_URL")
                .map(|u| u.trim_end_matches('/').to_string())
                .unwrap_or(d.api_url),
            approval_channel: get("APPROVAL_CHANNEL")
                .map(|c| c.trim_start_matches('#').to_string())
                .unwrap_or(d.approval_channel),
            max_body_bytes: num("SLACK_MAX_BODY_BYTES")
                .map(|n| n as usize)
                .unwrap_or(d.max_body_bytes),
            ack_budget: num("SLACK_ACK_BUDGET_MS")
                .map(Duration::from_millis)
                .unwrap_or(d.ack_budget),
            http_timeout: num("SLACK_HTTP_TIMEOUT_SECS")
                .map(Duration::from_secs)
                .unwrap_or(d.http_timeout),
            max_inline_retry_after: d.max_inline_retry_after,
            workspace_limiter: d.workspace_limiter,
        }
    }

    /// A config for tests and embedding: token, secret and API base given directly.
    pub fn new(bot_token: &str, signing_secret: &str, api_url: &str) -> Self {
        Self {
            bot_token: Secret::new(bot_token),
            signing_secret: Secret::new(signing_secret),
            api_url: api_url.trim_end_matches('/').to_string(),
            ..Self::default()
        }
    }

    /// Whether the bot can post (a token is set).
    pub fn can_post(&self) -> bool {
        !self.bot_token.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_redaction() {
        let c = SlackConfig::from_lookup(|k| match k {
            "SLACK_BOT_TOKEN" => Some("xoxb-secret-token".into()),
            "SLACK_SIGNING_SECRET" => Some("shh".into()),
            "SLACK_API_URL" => Some("http://127.0.0.1:9/api/".into()),
            "APPROVAL_CHANNEL" => Some("#approvals".into()),
            _ => None,
        });
        assert_eq!(c.api_url, "http://127.0.0.1:9/api");
        assert_eq!(c.approval_channel, "approvals");
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("xoxb-secret-token") && !printed.contains("shh"),
            "{printed}"
        );
        let d = SlackConfig::from_lookup(|_| None);
        assert_eq!(d.api_url, DEFAULT_API_URL);
        assert_eq!(d.approval_channel, DEFAULT_APPROVAL_CHANNEL);
        assert!(!d.can_post());
    }
}
