//! The Web API methods of the fake Slack: one handler per method, picked by [`dispatch`], and the
//! envelopes they answer with (HTTP 200, `ok:false` and Slack's error code on failure). The
//! `conversations.*` methods live in `conversations.rs`, the file upload flow in `files.rs`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::state::{Ephemeral, FakeMessage, Inner, resolve_channel};
use super::{BOT_USER_ID, TEAM_ID, conversations, files};

/// A method's answer: the HTTP status and the JSON envelope.
pub(super) type Answer = (StatusCode, Value);

/// One Web API call as every method handler takes it.
pub(super) struct Req<'a> {
    /// Query, form and (for JSON-capable methods) JSON arguments merged.
    pub(super) args: &'a Map<String, Value>,
    /// The caller's (valid) token.
    pub(super) token: &'a str,
    /// The fake's base URL, for the links a method hands out.
    pub(super) base: &'a str,
}

type Handler = fn(&mut Inner, &Req) -> Answer;

/// Answers one authenticated Web API call under the state lock.
pub(super) fn dispatch(
    i: &mut Inner,
    base: &str,
    method: &str,
    args: &Map<String, Value>,
    token: &str,
) -> Answer {
    let handler: Handler = match method {
        "auth.test" => auth_test,
        "chat.postMessage" => chat_post_message,
        "chat.update" => chat_update,
        "chat.postEphemeral" => chat_post_ephemeral,
        "conversations.history" => conversations::history,
        "conversations.list" => conversations::list,
        "conversations.open" => conversations::open,
        "users.info" => users_info,
        "users.lookupByEmail" => users_lookup_by_email,
        "views.open" => views_open,
        "views.publish" => views_publish,
        "usergroups.users.list" => usergroups_users_list,
        "files.getUploadURLExternal" => files::get_upload_url_external,
        "files.completeUploadExternal" => files::complete_upload_external,
        _ => return envelope_err("unknown_method"),
    };
    handler(i, &Req { args, token, base })
}

/// `{"ok": true, …v}`.
pub(super) fn ok(mut v: Value) -> Answer {
    v["ok"] = json!(true);
    (StatusCode::OK, v)
}

/// `{"ok": false, "error": error}`.
pub(super) fn envelope_err(error: &str) -> Answer {
    (StatusCode::OK, json!({"ok": false, "error": error}))
}

/// `invalid_arguments` with one explanation in `response_metadata.messages`.
pub(super) fn invalid_arguments(message: &str) -> Answer {
    (
        StatusCode::OK,
        json!({"ok": false, "error": "invalid_arguments", "response_metadata": {"messages": [message]}}),
    )
}

pub(super) fn missing(field: &str) -> Answer {
    invalid_arguments(&format!("[ERROR] missing required field: {field}"))
}

/// A non-empty string argument.
pub(super) fn arg<'a>(args: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    args.get(k)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
}

/// Whether `channel` is the id of a channel or of a DM the fake knows (methods that take ids only).
pub(super) fn channel_id_known(i: &Inner, channel: &str) -> bool {
    i.channels.contains_key(channel) || i.users.keys().any(|u| super::dm_id(u) == channel)
}

fn next_ts(i: &mut Inner) -> String {
    let n = i.next_n();
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs}.{n:06}")
}

/// A `blocks` argument that is an empty array: Slack's Block Kit validation refuses it
/// (`invalid_blocks`); a text-only message must leave the field out.
fn empty_blocks(args: &Map<String, Value>) -> bool {
    args.contains_key("blocks") && blocks_arg(args).as_array().is_some_and(Vec::is_empty)
}

/// `blocks` may come as a JSON array (JSON body) or a JSON string (form body).
fn blocks_arg(args: &Map<String, Value>) -> Value {
    match args.get("blocks") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => Value::Null,
    }
}

fn auth_test(_: &mut Inner, _: &Req) -> Answer {
    ok(
        json!({"url": "https://fake.slack.com/", "team": "Fake", "user": "gatehouse",
               "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": "B0BOT"}),
    )
}

/// `metadata` of chat.postMessage: a JSON object (JSON body) or a JSON string (form body), with
/// a non-empty `event_type` and an object `event_payload`.
fn message_metadata(args: &Map<String, Value>) -> Result<Option<Value>, Answer> {
    let metadata = match args.get("metadata") {
        None => return Ok(None),
        Some(Value::String(s)) => {
            serde_json::from_str::<Value>(s).map_err(|_| envelope_err("invalid_metadata_format"))?
        }
        Some(v) => v.clone(),
    };
    let well_formed = metadata
        .get("event_type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty())
        && metadata.get("event_payload").is_some_and(Value::is_object);
    if !well_formed {
        return Err(envelope_err("invalid_metadata_format"));
    }
    Ok(Some(metadata))
}

fn chat_post_message(i: &mut Inner, req: &Req) -> Answer {
    let args = req.args;
    let Some(channel) = arg(args, "channel") else {
        return envelope_err("channel_not_found");
    };
    let text = arg(args, "text").unwrap_or_default().to_string();
    let blocks = blocks_arg(args);
    if empty_blocks(args) {
        return envelope_err("invalid_blocks");
    }
    if text.is_empty() && !blocks.is_array() {
        return envelope_err("no_text");
    }
    let Some(id) = resolve_channel(i, channel) else {
        return envelope_err("channel_not_found");
    };
    let metadata = match message_metadata(args) {
        Ok(m) => m,
        Err(answer) => return answer,
    };
    let ts = next_ts(i);
    i.messages.push(FakeMessage {
        channel: id.clone(),
        ts: ts.clone(),
        text: text.clone(),
        blocks,
        history: vec![],
        metadata,
    });
    ok(
        json!({"channel": id, "ts": ts, "message": {"text": text, "type": "message", "subtype": "bot_message",
              "bot_id": "B0BOT", "ts": ts}}),
    )
}

fn chat_update(i: &mut Inner, req: &Req) -> Answer {
    let args = req.args;
    let (Some(channel), Some(ts)) = (arg(args, "channel"), arg(args, "ts")) else {
        return missing("channel/ts");
    };
    // chat.update takes ids only, not names.
    if !channel_id_known(i, channel) {
        return envelope_err("channel_not_found");
    }
    let text = arg(args, "text").unwrap_or_default().to_string();
    let blocks = blocks_arg(args);
    if empty_blocks(args) {
        return envelope_err("invalid_blocks");
    }
    let Some(m) = i
        .messages
        .iter_mut()
        .find(|m| m.channel == channel && m.ts == ts)
    else {
        return envelope_err("message_not_found");
    };
    let old = (std::mem::take(&mut m.text), std::mem::take(&mut m.blocks));
    m.history.push(old);
    m.text = text.clone();
    m.blocks = blocks;
    ok(json!({"channel": channel, "ts": ts, "text": text}))
}

fn chat_post_ephemeral(i: &mut Inner, req: &Req) -> Answer {
    let args = req.args;
    let (Some(channel), Some(user)) = (arg(args, "channel"), arg(args, "user")) else {
        return missing("channel/user");
    };
    let Some(id) = resolve_channel(i, channel) else {
        return envelope_err("channel_not_found");
    };
    if !i.users.contains_key(user) {
        return envelope_err("user_not_in_channel");
    }
    let text = arg(args, "text").unwrap_or_default().to_string();
    i.ephemerals.push(Ephemeral {
        channel: id,
        user: user.to_string(),
        text,
    });
    let ts = next_ts(i);
    ok(json!({"message_ts": ts}))
}

fn users_info(i: &mut Inner, req: &Req) -> Answer {
    let Some(user) = arg(req.args, "user") else {
        return missing("user");
    };
    match i.users.get(user) {
        Some(u) => ok(json!({"user": u.to_json()})),
        None => envelope_err("user_not_found"),
    }
}

fn users_lookup_by_email(i: &mut Inner, req: &Req) -> Answer {
    let Some(email) = arg(req.args, "email") else {
        return missing("email");
    };
    match i.users.values().find(|u| {
        u.email
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case(email))
    }) {
        Some(u) => ok(json!({"user": u.to_json()})),
        None => envelope_err("users_not_found"),
    }
}

fn views_open(i: &mut Inner, req: &Req) -> Answer {
    let args = req.args;
    let Some(trigger) = arg(args, "trigger_id") else {
        return missing("trigger_id");
    };
    if !args.get("view").is_some_and(Value::is_object) {
        return missing("view");
    }
    match i.triggers.get_mut(trigger) {
        None => invalid_arguments("invalid `trigger_id`"),
        Some((_, true)) => envelope_err("exchanged_trigger_id"),
        Some((at, _)) if at.elapsed() > Duration::from_secs(3) => {
            envelope_err("expired_trigger_id")
        }
        Some(t) => {
            t.1 = true;
            let mut view = args["view"].clone();
            view["id"] = json!(format!("V{:06}", i.next_n()));
            i.views_opened.push(view.clone());
            ok(json!({"view": view}))
        }
    }
}

fn views_publish(i: &mut Inner, req: &Req) -> Answer {
    let Some(user) = arg(req.args, "user_id") else {
        return missing("user_id");
    };
    if !i.users.contains_key(user) {
        return invalid_arguments("invalid `user_id`");
    }
    let Some(view) = req.args.get("view").filter(|v| v.is_object()).cloned() else {
        return missing("view");
    };
    i.home_views.push((user.to_string(), view.clone()));
    ok(json!({"view": view}))
}

fn usergroups_users_list(i: &mut Inner, req: &Req) -> Answer {
    let Some(g) = arg(req.args, "usergroup") else {
        return missing("usergroup");
    };
    match i.usergroups.get(g) {
        Some(users) => ok(json!({"users": users})),
        None => envelope_err("no_such_subteam"),
    }
}
