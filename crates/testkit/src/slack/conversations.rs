//! The `conversations.*` methods of the fake Slack: `history` (newest first, a time window,
//! cursor pages, metadata on request), `list` (cursor pages of the seeded channels) and `open`
//! (a DM), with the per-channel-type scope checks Slack makes.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::BOT_USER_ID;
use super::state::{FakeMessage, Inner, dm_id};
use super::web_api::{Answer, Req, arg, channel_id_known, envelope_err, ok};

/// Slack's cursors are base64 of `next_offset:N`; the fake keeps the prefix and the number.
const CURSOR_PREFIX: &str = "bmV4dF9vZmZzZXQ6";

/// `missing_scope` when the token's granted scopes (if restricted) lack `needed`.
fn check_scope(i: &Inner, token: &str, needed: &str) -> Result<(), Answer> {
    match i.token_scopes.get(token) {
        Some(granted) if !granted.iter().any(|g| g == needed) => Err((
            StatusCode::OK,
            json!({"ok": false, "error": "missing_scope", "needed": needed, "provided": granted.join(",")}),
        )),
        _ => Ok(()),
    }
}

/// The offset a `cursor` argument stands for (0 without one).
fn cursor_offset(args: &Map<String, Value>) -> Result<usize, Answer> {
    match arg(args, "cursor") {
        None => Ok(0),
        Some(c) => c
            .strip_prefix(CURSOR_PREFIX)
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| envelope_err("invalid_cursor")),
    }
}

/// The cursor of the page after `start + shown` of `total` items (empty on the last page).
fn next_cursor(start: usize, shown: usize, total: usize) -> String {
    if start + shown < total {
        format!("{CURSOR_PREFIX}{}", start + shown)
    } else {
        String::new()
    }
}

/// A boolean flag argument: `true` or `1` in a form, `true` in JSON.
fn flag(args: &Map<String, Value>, k: &str) -> bool {
    args.get(k)
        .is_some_and(|v| matches!(v.as_str(), Some("true" | "1")) || v == &json!(true))
}

/// `conversations.history`: ids only; newest first; `oldest`/`latest` exclusive unless
/// `inclusive`; `limit` (default 100, at most 999) per page, `cursor` from
/// `response_metadata.next_cursor`.
pub(super) fn history(i: &mut Inner, req: &Req) -> Answer {
    let args = req.args;
    let Some(channel) = arg(args, "channel") else {
        return envelope_err("channel_not_found");
    };
    if !channel_id_known(i, channel) {
        return envelope_err("channel_not_found");
    }
    let needed = match channel.as_bytes()[0] {
        b'D' => "im:history",
        b'G' => "groups:history",
        _ => "channels:history",
    };
    if let Err(answer) = check_scope(i, req.token, needed) {
        return answer;
    }
    let ts_of = |k: &str| -> Result<Option<f64>, ()> {
        match arg(args, k) {
            None => Ok(None),
            Some(v) => v.parse::<f64>().map(Some).map_err(|_| ()),
        }
    };
    let (Ok(oldest), Ok(latest)) = (ts_of("oldest"), ts_of("latest")) else {
        return envelope_err("invalid_ts_oldest");
    };
    let limit = match arg(args, "limit").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) => n.clamp(1, 999),
        Some(Err(_)) => return envelope_err("invalid_limit"),
    };
    let start = match cursor_offset(args) {
        Ok(n) => n,
        Err(answer) => return answer,
    };
    let inclusive = flag(args, "inclusive");
    let in_window = messages_between(i, channel, oldest, latest, inclusive);
    let with_metadata = flag(args, "include_all_metadata");
    let page: Vec<Value> = in_window
        .iter()
        .skip(start)
        .take(limit)
        .map(|m| {
            let mut v = json!({"type": "message", "subtype": "bot_message", "bot_id": "B0BOT",
                               "user": BOT_USER_ID, "text": m.text, "ts": m.ts, "blocks": m.blocks});
            if with_metadata && let Some(md) = &m.metadata {
                v["metadata"] = md.clone();
            }
            v
        })
        .collect();
    let has_more = start + page.len() < in_window.len();
    let next = next_cursor(start, page.len(), in_window.len());
    let mut v = json!({"ok": true, "messages": page, "has_more": has_more, "pin_count": 0,
                       "channel_actions_ts": null, "channel_actions_count": 0});
    if has_more {
        v["response_metadata"] = json!({"next_cursor": next});
    }
    (StatusCode::OK, v)
}

/// The messages of `channel` within `oldest`/`latest`, newest first.
fn messages_between<'a>(
    i: &'a Inner,
    channel: &str,
    oldest: Option<f64>,
    latest: Option<f64>,
    inclusive: bool,
) -> Vec<&'a FakeMessage> {
    let mut in_window: Vec<&FakeMessage> = i
        .messages
        .iter()
        .filter(|m| m.channel == channel)
        .filter(|m| {
            let ts: f64 = m.ts.parse().unwrap_or(0.0);
            let after = oldest.is_none_or(|o| if inclusive { ts >= o } else { ts > o });
            let before = latest.is_none_or(|l| if inclusive { ts <= l } else { ts < l });
            after && before
        })
        .collect();
    // Newest first; ts strings of the fake sort as numbers of equal width.
    in_window.sort_by(|a, b| {
        let (x, y): (f64, f64) = (a.ts.parse().unwrap_or(0.0), b.ts.parse().unwrap_or(0.0));
        y.total_cmp(&x)
    });
    in_window
}

/// `conversations.list`: the seeded channels in id order, paged by `limit` and `cursor`.
pub(super) fn list(i: &mut Inner, req: &Req) -> Answer {
    let args = req.args;
    // Both channel types are asked for; each needs its own read scope.
    let types = arg(args, "types").unwrap_or("public_channel");
    for (t, needed) in [
        ("public_channel", "channels:read"),
        ("private_channel", "groups:read"),
    ] {
        if types.split(',').any(|x| x.trim() == t)
            && let Err(answer) = check_scope(i, req.token, needed)
        {
            return answer;
        }
    }
    let limit = arg(args, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let start = match cursor_offset(args) {
        Ok(n) => n,
        Err(answer) => return answer,
    };
    let mut all: Vec<(&String, &String)> = i.channels.iter().collect();
    all.sort();
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|(id, name)| {
            json!({"id": id, "name": name, "is_channel": !id.starts_with('G'),
                   "is_private": id.starts_with('G'), "is_archived": false})
        })
        .collect();
    let next = next_cursor(start, page.len(), all.len());
    ok(json!({"channels": page, "response_metadata": {"next_cursor": next}}))
}

/// `conversations.open`: the DM with the first of `users`.
pub(super) fn open(i: &mut Inner, req: &Req) -> Answer {
    let Some(users) = arg(req.args, "users") else {
        return envelope_err("users_list_not_supplied");
    };
    let first = users.split(',').next().unwrap_or_default().trim();
    if !i.users.contains_key(first) {
        return envelope_err("user_not_found");
    }
    ok(json!({"channel": {"id": dm_id(first)}}))
}
