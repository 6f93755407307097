//! The requests Slack sends to an app, built as Slack builds them: the signing headers, slash
//! command bodies, interaction payloads (`block_actions`, `view_submission`) and Events API
//! callbacks.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{BOT_USER_ID, TEAM_ID, dm_id};

/// Unix seconds now.
pub fn now_ts() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `v0=hex(HMAC-SHA256(secret, "v0:{ts}:{body}"))`, computed independently of the adapter.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(format!("v0:{timestamp}:").as_bytes());
    m.update(body.as_bytes());
    format!("v0={}", hex::encode(m.finalize().into_bytes()))
}

/// The two signing headers for `body` signed now.
pub fn signed_headers(secret: &str, body: &str) -> [(String, String); 2] {
    signed_headers_at(secret, body, now_ts())
}

pub fn signed_headers_at(secret: &str, body: &str, timestamp: i64) -> [(String, String); 2] {
    [
        (
            "x-slack-request-timestamp".to_string(),
            timestamp.to_string(),
        ),
        (
            "x-slack-signature".to_string(),
            sign(secret, timestamp, body),
        ),
    ]
}

/// A slash command as Slack posts it (form-encoded, external-apis.md A.2).
#[derive(Debug, Clone)]
pub struct SlashCommand {
    pub team_id: String,
    pub user_id: String,
    pub user_name: String,
    pub channel_id: String,
    pub command: String,
    pub text: String,
    pub response_url: String,
    pub trigger_id: String,
}

impl SlashCommand {
    pub fn new(
        command: &str,
        user_id: &str,
        text: &str,
        response_url: &str,
        trigger_id: &str,
    ) -> Self {
        Self {
            team_id: TEAM_ID.into(),
            user_id: user_id.into(),
            user_name: user_id.to_lowercase(),
            channel_id: "C0GENERAL".into(),
            command: command.into(),
            text: text.into(),
            response_url: response_url.into(),
            trigger_id: trigger_id.into(),
        }
    }

    pub fn body(&self) -> String {
        serde_urlencoded::to_string([
            ("token", "deprecated-verification-token"),
            ("team_id", &self.team_id),
            ("team_domain", "fake"),
            ("channel_id", &self.channel_id),
            ("channel_name", "general"),
            ("user_id", &self.user_id),
            ("user_name", &self.user_name),
            ("command", &self.command),
            ("text", &self.text),
            ("api_app_id", "A0GATEHOUSE"),
            ("is_enterprise_install", "false"),
            ("response_url", &self.response_url),
            ("trigger_id", &self.trigger_id),
        ])
        .unwrap()
    }
}

/// Wraps an interaction payload as Slack posts it: `payload=<url-encoded JSON>`.
pub fn interaction_body(payload: &Value) -> String {
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

/// A click's `action_ts`: like Slack's, `seconds.microseconds` and different for every click
/// (two clicks in the same microsecond get consecutive values).
pub fn action_ts() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    let micros = loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(p) => prev = p,
        }
    };
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// The `user` of an interaction payload.
fn payload_user(user_id: &str) -> Value {
    json!({"id": user_id, "username": user_id.to_lowercase(), "name": user_id.to_lowercase(), "team_id": TEAM_ID})
}

/// The one entry of `actions` for a click on a button labelled `text`.
fn button_click(action_id: &str, value: &str, text: Value) -> Value {
    json!({
        "action_id": action_id, "block_id": "b", "type": "button",
        "text": text, "value": value, "action_ts": action_ts(),
    })
}

/// What every `block_actions` payload carries (who clicked, the click), plus `fields`.
fn block_actions(user_id: &str, trigger_id: &str, action: Value, fields: Value) -> Value {
    let mut payload = json!({
        "type": "block_actions",
        "user": payload_user(user_id),
        "api_app_id": "A0GATEHOUSE",
        "trigger_id": trigger_id,
        "team": {"id": TEAM_ID, "domain": "fake"},
        "actions": [action],
    });
    if let (Some(p), Value::Object(extra)) = (payload.as_object_mut(), fields) {
        p.extend(extra);
    }
    payload
}

/// A `block_actions` payload for a button click on a channel message (external-apis.md A.4).
pub fn block_actions_payload(
    user_id: &str,
    action_id: &str,
    value: &str,
    channel_id: &str,
    message_ts: &str,
    response_url: &str,
    trigger_id: &str,
) -> Value {
    let label = json!({"type": "plain_text", "text": "Button", "emoji": true});
    block_actions(
        user_id,
        trigger_id,
        button_click(action_id, value, label),
        json!({
            "token": "deprecated-verification-token",
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id, "is_ephemeral": false},
            "enterprise": null,
            "is_enterprise_install": false,
            "channel": {"id": channel_id, "name": "approvals"},
            "message": {"type": "message", "ts": message_ts, "text": "", "blocks": [], "bot_id": "B0BOT"},
            "state": {"values": {}},
            "response_url": response_url,
        }),
    )
}

/// A `block_actions` payload for a button in the App Home (no message, no response_url).
pub fn home_block_actions_payload(
    user_id: &str,
    action_id: &str,
    value: &str,
    trigger_id: &str,
) -> Value {
    let label = json!({"type": "plain_text", "text": "Button"});
    block_actions(
        user_id,
        trigger_id,
        button_click(action_id, value, label),
        json!({
            "container": {"type": "view", "view_id": "VHOME"},
            "view": {"id": "VHOME", "type": "home", "callback_id": "", "state": {"values": {}}},
        }),
    )
}

/// A `view_submission` payload. `values` is `view.state.values`, e.g.
/// `{"resource": {"value": {"type": "static_select", "selected_option": {"value": "dev"}}}}`.
pub fn view_submission_payload(user_id: &str, callback_id: &str, values: Value) -> Value {
    json!({
        "type": "view_submission",
        "team": {"id": TEAM_ID, "domain": "fake"},
        "user": payload_user(user_id),
        "api_app_id": "A0GATEHOUSE",
        "trigger_id": "1.2.view",
        "view": {
            "id": "VMODAL", "team_id": TEAM_ID, "type": "modal", "callback_id": callback_id,
            "private_metadata": "", "state": {"values": values}, "hash": "1.2",
        },
        "response_urls": []
    })
}

/// An Events API `event_callback` envelope (external-apis.md A.5).
pub fn event_callback(event_id: &str, event: Value) -> Value {
    json!({
        "token": "deprecated-verification-token",
        "team_id": TEAM_ID,
        "api_app_id": "A0GATEHOUSE",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": now_ts(),
        "authorizations": [{"enterprise_id": null, "team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": true, "is_enterprise_install": false}],
        "is_ext_shared_channel": false,
    })
}

/// A `message.im` event: `user` wrote `text` to the bot.
pub fn message_im_event(user: &str, text: &str) -> Value {
    json!({
        "type": "message", "channel_type": "im", "channel": dm_id(user), "user": user, "text": text,
        "ts": format!("{}.000100", now_ts()), "event_ts": format!("{}.000100", now_ts()), "team": TEAM_ID,
    })
}

/// An `app_home_opened` event for the Home tab.
pub fn app_home_opened_event(user: &str) -> Value {
    json!({"type": "app_home_opened", "user": user, "channel": dm_id(user), "tab": "home",
           "event_ts": format!("{}.000016", now_ts())})
}

/// `url_verification`, sent when the Request URL is saved.
pub fn url_verification(challenge: &str) -> Value {
    json!({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": challenge, "type": "url_verification"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_signing_vector() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            sign("8f742231b10e8888abcd99yyyzzz85a5", 1531420618, body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }
}
