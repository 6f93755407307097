//! A small Slack Web API client on reqwest, covering the methods Gatehouse uses.
//!
//! Why not slack-morphism's client: its hyper connector is https-only (tests point it at an
//! `http://127.0.0.1` fake), needs a process-wide rustls provider installed, and turns every
//! failure into its own error type that loses the difference Gatehouse needs between "retry later"
//! and "give up". This client keeps the wire format of `external-apis.md` A.6–A.9 explicit:
//! JSON bodies only for methods that accept them, query/form for the others, typed `ok:false`
//! envelopes, HTTP 429 with `Retry-After`, `rate_limited` inside a 200, and 5xx HTML pages.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use slack_morphism::prelude::SlackView;

use crate::config::{Secret, SlackConfig};

/// A failed Web API call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// HTTP 429 (`ratelimited`) or `rate_limited` in a 200 envelope.
    #[error("{method}: rate limited (retry after {retry_after:?})")]
    RateLimited {
        method: String,
        retry_after: Option<Duration>,
    },
    /// `{"ok": false, "error": …}`.
    #[error("{method}: {error}")]
    Slack {
        method: String,
        error: String,
        needed: Option<String>,
    },
    /// 5xx or a body that is not a Slack envelope (an outage page).
    #[error("{method}: HTTP {status} from Slack")]
    Server { method: String, status: u16 },
    /// Connection refused, reset, timed out.
    #[error("{method}: {message}")]
    Transport { method: String, message: String },
    /// Called without a bot token.
    #[error("no Slack bot token is configured")]
    NoToken,
}

/// Slack error codes that mean "try again later" rather than "this will never work".
const TRANSIENT_CODES: [&str; 7] = [
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "team_added_to_org",
];

impl ApiError {
    /// Worth retrying later.
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::RateLimited { .. } | ApiError::Server { .. } | ApiError::Transport { .. } => {
                true
            }
            ApiError::Slack { error, .. } => TRANSIENT_CODES.contains(&error.as_str()),
            ApiError::NoToken => false,
        }
    }

    /// The Slack error code, for `ok:false` errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Slack { error, .. } => Some(error),
            ApiError::RateLimited { .. } => Some("ratelimited"),
            _ => None,
        }
    }
}

impl From<ApiError> for access_core::ports::NotifyError {
    fn from(e: ApiError) -> Self {
        if e.is_transient() {
            access_core::ports::NotifyError::Transient(e.to_string())
        } else {
            access_core::ports::NotifyError::Permanent(e.to_string())
        }
    }
}

/// `metadata.event_type` of every message a notification job posts.
pub const NOTIFICATION_EVENT: &str = "gatehouse_notification";
/// Messages per `conversations.history` page when looking for a tagged message.
pub const HISTORY_PAGE: u32 = 50;
/// Pages read at most when looking for a tagged message.
pub const HISTORY_MAX_PAGES: u32 = 6;

/// What [`SlackApi::find_tagged`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tagged {
    /// The ts of the message that carries the job's tag.
    Found(String),
    NotFound,
    /// The window holds more messages than are read; the tag may be further back.
    Unsure,
}

/// Pages of 200 channels read at most when looking a channel name up.
pub const LIST_MAX_PAGES: u32 = 25;

#[derive(Deserialize)]
struct ChannelPage {
    #[serde(default)]
    channels: Vec<ChannelEntry>,
    #[serde(default)]
    response_metadata: Option<ResponseMetadata>,
}

#[derive(Deserialize)]
struct ChannelEntry {
    id: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct HistoryPage {
    #[serde(default)]
    messages: Vec<HistoryMessage>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    response_metadata: Option<ResponseMetadata>,
}

#[derive(Deserialize)]
struct HistoryMessage {
    #[serde(default)]
    ts: String,
    #[serde(default)]
    metadata: Option<MessageMetadata>,
}

#[derive(Deserialize)]
struct MessageMetadata {
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    event_payload: Value,
}

#[derive(Deserialize)]
struct ResponseMetadata {
    #[serde(default)]
    next_cursor: Option<String>,
}

/// A posted message: where it is and its timestamp (its id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
}

/// The parts of a Slack user Gatehouse uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SlackUser {
    pub id: String,
    #[serde(default)]
    pub team_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub real_name: Option<String>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub tz: Option<String>,
    #[serde(default)]
    pub profile: SlackProfile,
    /// Multi-channel guest.
    #[serde(default)]
    pub is_restricted: bool,
    /// Single-channel guest.
    #[serde(default)]
    pub is_ultra_restricted: bool,
    /// Seen through Slack Connect from another organisation (absent otherwise).
    #[serde(default)]
    pub is_stranger: bool,
    /// Enterprise Grid membership, when the workspace is part of an organisation.
    #[serde(default)]
    pub enterprise_user: Option<EnterpriseUser>,
}

/// `users.info` → `user.enterprise_user` (Enterprise Grid only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct EnterpriseUser {
    #[serde(default)]
    pub enterprise_id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SlackProfile {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub real_name: Option<String>,
}

impl SlackUser {
    /// The best name to show: display name, real name, user name.
    pub fn display_name(&self) -> String {
        [
            self.profile.display_name.as_deref(),
            self.profile.real_name.as_deref(),
            self.real_name.as_deref(),
        ]
        .into_iter()
        .flatten()
        .find(|s| !s.trim().is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| self.name.clone())
    }
}

/// The Web API client.
#[derive(Clone)]
pub struct SlackApi {
    http: reqwest::Client,
    base: String,
    token: Secret,
    max_inline_retry_after: Duration,
}

impl std::fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackApi")
            .field("base", &self.base)
            .field("token", &self.token)
            .finish()
    }
}

/// How many times one call is tried when Slack asks to wait a short while.
const MAX_ATTEMPTS: u32 = 3;

enum Body<'a> {
    Query(&'a [(&'a str, String)]),
    Form(&'a [(&'a str, String)]),
    Json(&'a Value),
}

impl SlackApi {
    pub fn new(config: &SlackConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .connect_timeout(config.http_timeout.min(Duration::from_secs(5)))
            .user_agent(concat!(
                "gatehouse-slack-adapter/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "falling back to a default HTTP client");
                reqwest::Client::new()
            });
        Self {
            http,
            base: config.api_url.trim_end_matches('/').to_string(),
            token: config.bot_token.clone(),
            max_inline_retry_after: config.max_inline_retry_after,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The same client (connection pool, base, limits) with another bot token: an installed
    /// workspace's own.
    pub fn with_token(&self, token: Secret) -> SlackApi {
        SlackApi {
            token,
            ..self.clone()
        }
    }

    async fn call(&self, method: &str, body: Body<'_>) -> Result<Value, ApiError> {
        if self.token.is_empty() {
            return Err(ApiError::NoToken);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.call_once(method, &body).await {
                Err(ApiError::RateLimited {
                    retry_after: Some(wait),
                    ..
                }) if attempt < MAX_ATTEMPTS && wait <= self.max_inline_retry_after => {
                    tracing::info!(
                        method,
                        wait_secs = wait.as_secs_f64(),
                        "Slack rate limit: waiting as asked"
                    );
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    async fn call_once(&self, method: &str, body: &Body<'_>) -> Result<Value, ApiError> {
        let url = format!("{}/{}", self.base, method);
        let auth = format!("Bearer {}", self.token.expose());
        let req = match body {
            Body::Query(q) => self.http.get(&url).query(q),
            Body::Form(f) => self.http.post(&url).form(f),
            Body::Json(v) => self.http.post(&url).json(v),
        }
        .header(reqwest::header::AUTHORIZATION, auth);
        send_envelope(method, req).await
    }

    /// `chat.postMessage` (JSON). `channel` may be a channel id, a name, or a user id (a DM).
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: &Value,
    ) -> Result<Posted, ApiError> {
        self.post_message_tagged(channel, text, blocks, None).await
    }

    /// [`Self::post_message`] carrying message metadata that names the notification job
    /// `job` ([`NOTIFICATION_EVENT`]), so a re-run of the job can find the message with
    /// [`Self::find_tagged`] (Slack has no idempotency key for chat.postMessage).
    pub async fn post_message_tagged(
        &self,
        channel: &str,
        text: &str,
        blocks: &Value,
        job: Option<&str>,
    ) -> Result<Posted, ApiError> {
        let mut body = json!({"channel": channel, "text": text, "unfurl_links": false});
        with_blocks(&mut body, blocks);
        if let Some(job) = job {
            body["metadata"] =
                json!({"event_type": NOTIFICATION_EVENT, "event_payload": {"job": job}});
        }
        let v = self.call("chat.postMessage", Body::Json(&body)).await?;
        Ok(Posted {
            channel: v
                .get("channel")
                .and_then(Value::as_str)
                .unwrap_or(channel)
                .to_string(),
            ts: v
                .get("ts")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// `conversations.history` (form POST) of `channel` (an id: `C…`, `G…`, `D…`) from `oldest`
    /// on, newest first, following `next_cursor` within that window: the ts of the first
    /// message whose metadata names notification job `job`. Reads at most
    /// [`HISTORY_MAX_PAGES`] pages of [`HISTORY_PAGE`] messages; a busier window is
    /// [`Tagged::Unsure`].
    pub async fn find_tagged(
        &self,
        channel: &str,
        oldest: chrono::DateTime<chrono::Utc>,
        job: &str,
    ) -> Result<Tagged, ApiError> {
        let oldest = format!(
            "{}.{:06}",
            oldest.timestamp(),
            oldest.timestamp_subsec_micros()
        );
        let mut cursor: Option<String> = None;
        for _ in 0..HISTORY_MAX_PAGES {
            let mut form = vec![
                ("channel", channel.to_string()),
                ("oldest", oldest.clone()),
                ("limit", HISTORY_PAGE.to_string()),
                ("include_all_metadata", "true".to_string()),
            ];
            if let Some(c) = &cursor {
                form.push(("cursor", c.clone()));
            }
            let v = self
                .call("conversations.history", Body::Form(&form))
                .await?;
            let page: HistoryPage = serde_json::from_value(v).map_err(|_| ApiError::Server {
                method: "conversations.history".into(),
                status: 200,
            })?;
            if let Some(m) = page.messages.iter().find(|m| {
                m.metadata.as_ref().is_some_and(|md| {
                    md.event_type == NOTIFICATION_EVENT
                        && md.event_payload.get("job").and_then(Value::as_str) == Some(job)
                })
            }) {
                return Ok(Tagged::Found(m.ts.clone()));
            }
            cursor = page
                .response_metadata
                .and_then(|r| r.next_cursor)
                .filter(|c| !c.is_empty());
            if !page.has_more || cursor.is_none() {
                return Ok(Tagged::NotFound);
            }
        }
        Ok(Tagged::Unsure)
    }

    /// `conversations.list` (form POST, public and private channels, archived left out): the id
    /// of the channel named `name`, following `next_cursor` for at most [`LIST_MAX_PAGES`] pages.
    pub async fn channel_id_by_name(&self, name: &str) -> Result<Option<String>, ApiError> {
        let mut cursor: Option<String> = None;
        for _ in 0..LIST_MAX_PAGES {
            let mut form = vec![
                ("types", "public_channel,private_channel".to_string()),
                ("exclude_archived", "true".to_string()),
                ("limit", "200".to_string()),
            ];
            if let Some(c) = &cursor {
                form.push(("cursor", c.clone()));
            }
            let v = self.call("conversations.list", Body::Form(&form)).await?;
            let page: ChannelPage = serde_json::from_value(v).map_err(|_| ApiError::Server {
                method: "conversations.list".into(),
                status: 200,
            })?;
            if let Some(c) = page.channels.iter().find(|c| c.name == name) {
                return Ok(Some(c.id.clone()));
            }
            cursor = page
                .response_metadata
                .and_then(|r| r.next_cursor)
                .filter(|c| !c.is_empty());
            if cursor.is_none() {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// `chat.update` (JSON): replaces a message for everyone.
    pub async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: &Value,
    ) -> Result<(), ApiError> {
        let mut body = json!({"channel": channel, "ts": ts, "text": text});
        with_blocks(&mut body, blocks);
        self.call("chat.update", Body::Json(&body))
            .await
            .map(|_| ())
    }

    /// `chat.postEphemeral` (JSON): a message only `user` sees.
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        text: &str,
    ) -> Result<(), ApiError> {
        let body = json!({"channel": channel, "user": user, "text": text});
        self.call("chat.postEphemeral", Body::Json(&body))
            .await
            .map(|_| ())
    }

    /// `users.info` (GET + query; the method takes no JSON).
    pub async fn users_info(&self, user: &str) -> Result<SlackUser, ApiError> {
        let q = [("user", user.to_string())];
        let v = self.call("users.info", Body::Query(&q)).await?;
        serde_json::from_value(v.get("user").cloned().unwrap_or(Value::Null)).map_err(|_| {
            ApiError::Server {
                method: "users.info".into(),
                status: 200,
            }
        })
    }

    /// `conversations.open` (JSON): the DM channel id (`D…`) with `user`.
    pub async fn open_dm(&self, user: &str) -> Result<String, ApiError> {
        let body = json!({"users": user});
        let v = self.call("conversations.open", Body::Json(&body)).await?;
        v.pointer("/channel/id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ApiError::Server {
                method: "conversations.open".into(),
                status: 200,
            })
    }

    /// `views.open` (JSON) with a trigger id from an interaction.
    pub async fn views_open(&self, trigger_id: &str, view: &SlackView) -> Result<(), ApiError> {
        let body = json!({"trigger_id": trigger_id, "view": view});
        self.call("views.open", Body::Json(&body)).await.map(|_| ())
    }

    /// `views.publish` (JSON): the App Home of `user_id`.
    pub async fn views_publish(&self, user_id: &str, view: &SlackView) -> Result<(), ApiError> {
        let body = json!({"user_id": user_id, "view": view});
        self.call("views.publish", Body::Json(&body))
            .await
            .map(|_| ())
    }

    /// `usergroups.users.list` (GET): member ids of a user group.
    pub async fn usergroup_members(&self, usergroup: &str) -> Result<Vec<String>, ApiError> {
        let q = [("usergroup", usergroup.to_string())];
        let v = self.call("usergroups.users.list", Body::Query(&q)).await?;
        Ok(v.get("users")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Uploads a file into `channel_id` (a `D…` DM id or a channel id) with the external upload
    /// flow: `files.getUploadURLExternal` (form) → POST the bytes → `files.completeUploadExternal`.
    /// `files.upload` was retired on 2025-11-12.
    pub async fn upload_file(
        &self,
        channel_id: &str,
        filename: &str,
        content: &[u8],
        initial_comment: &str,
    ) -> Result<String, ApiError> {
        let form = [
            ("filename", filename.to_string()),
            ("length", content.len().to_string()),
        ];
        let v = self
            .call("files.getUploadURLExternal", Body::Form(&form))
            .await?;
        let bad = || ApiError::Server {
            method: "files.getUploadURLExternal".into(),
            status: 200,
        };
        let upload_url = v
            .get("upload_url")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_string();
        let file_id = v
            .get("file_id")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_string();

        let resp = self
            .http
            .post(&upload_url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(content.to_vec())
            .send()
            .await
            .map_err(|e| transport("upload", e))?;
        if !resp.status().is_success() {
            return Err(ApiError::Server {
                method: "upload".into(),
                status: resp.status().as_u16(),
            });
        }

        let body = json!({
            "files": [{"id": file_id, "title": filename}],
            "channel_id": channel_id,
            "initial_comment": initial_comment,
        });
        self.call("files.completeUploadExternal", Body::Json(&body))
            .await?;
        Ok(file_id)
    }

    /// POSTs a message to an interaction's `response_url`. Slack answers plain `ok`; any 2xx is
    /// success.
    pub async fn respond(&self, response_url: &str, message: &Value) -> Result<(), ApiError> {
        let resp = self
            .http
            .post(response_url)
            .json(message)
            .send()
            .await
            .map_err(|e| transport("response_url", e))?;
        let status = resp.status();
        if status.as_u16() == 429 {
            return Err(ApiError::RateLimited {
                method: "response_url".into(),
                retry_after: None,
            });
        }
        if status.is_server_error() {
            return Err(ApiError::Server {
                method: "response_url".into(),
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(ApiError::Slack {
                method: "response_url".into(),
                error: text.chars().take(80).collect(),
                needed: None,
            });
        }
        Ok(())
    }
}

/// Adds `blocks` to a message body unless there are none: Slack refuses an empty array with
/// `invalid_blocks`, while a text-only message needs no `blocks` field at all.
fn with_blocks(body: &mut Value, blocks: &Value) {
    if blocks.as_array().is_some_and(|b| !b.is_empty()) {
        body["blocks"] = blocks.clone();
    }
}

/// Sends one Web API call and reads Slack's answer: HTTP 429 with `Retry-After`, 5xx pages, and
/// the `{"ok": false, "error": …}` envelope (with both rate-limit spellings) become typed errors.
pub(crate) async fn send_envelope(
    method: &str,
    req: reqwest::RequestBuilder,
) -> Result<Value, ApiError> {
    let resp = req.send().await.map_err(|e| transport(method, e))?;
    let status = resp.status();
    if status.as_u16() == 429 {
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(ApiError::RateLimited {
            method: method.to_string(),
            retry_after,
        });
    }
    if status.is_server_error() {
        return Err(ApiError::Server {
            method: method.to_string(),
            status: status.as_u16(),
        });
    }
    let bytes = resp.bytes().await.map_err(|e| transport(method, e))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| ApiError::Server {
        method: method.to_string(),
        status: status.as_u16(),
    })?;
    if v.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(v);
    }
    let error = v
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("unknown_error")
        .to_string();
    if error == "rate_limited" || error == "ratelimited" {
        return Err(ApiError::RateLimited {
            method: method.to_string(),
            retry_after: None,
        });
    }
    let needed = v.get("needed").and_then(Value::as_str).map(str::to_string);
    Err(ApiError::Slack {
        method: method.to_string(),
        error,
        needed,
    })
}

fn transport(method: &str, e: reqwest::Error) -> ApiError {
    // A response_url is a bearer capability and upload URLs are signed: keep URLs out of errors.
    let message = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.without_url().to_string()
    };
    ApiError::Transport {
        method: method.to_string(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_classification() {
        let s = |e: &str| ApiError::Slack {
            method: "m".into(),
            error: e.into(),
            needed: None,
        };
        assert!(s("internal_error").is_transient());
        assert!(s("rate_limited").is_transient());
        assert!(!s("channel_not_found").is_transient());
        assert!(!s("invalid_auth").is_transient());
        assert!(
            ApiError::Server {
                method: "m".into(),
                status: 503
            }
            .is_transient()
        );
        assert!(
            ApiError::RateLimited {
                method: "m".into(),
                retry_after: None
            }
            .is_transient()
        );
        assert!(!ApiError::NoToken.is_transient());
    }

    #[test]
    fn empty_blocks_are_left_out() {
        let mut body = json!({"text": "hi"});
        with_blocks(&mut body, &json!([]));
        with_blocks(&mut body, &Value::Null);
        assert_eq!(body, json!({"text": "hi"}));
        with_blocks(&mut body, &json!([{"type": "divider"}]));
        assert_eq!(body["blocks"], json!([{"type": "divider"}]));
    }
}
