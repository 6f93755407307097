//! The fake Slack's HTTP side: reading a Web API call (query, form and, for the methods that take
//! it, JSON arguments), authentication, queued faults and hangs and the record of every call; and
//! the two endpoints that are not Web API methods, the upload URLs and the `response_url`s.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use serde_json::{Map, Value, json};

use super::Shared;
use super::state::{Call, Fault};
use super::web_api::{self, envelope_err};
use crate::http::header_str;

/// Methods whose spec says `json_input_supported: true` (external-apis.md A.6).
const JSON_METHODS: [&str; 8] = [
    "chat.postMessage",
    "chat.update",
    "chat.postEphemeral",
    "conversations.open",
    "views.open",
    "views.publish",
    "auth.test",
    "files.completeUploadExternal",
];

const JSON_UTF8: &str = "application/json; charset=utf-8";

/// The fake's routes: the Web API, the upload URLs and the `response_url`s it hands out.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/{method}", any(api))
        .route("/upload/{file_id}", post(upload))
        .route("/response/{id}", post(response_url))
        .with_state(shared)
}

fn form_to_map(s: &str) -> Map<String, Value> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(s)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

/// Query and form arguments merged, plus the JSON body's for a method that accepts JSON.
fn arguments(
    method: &str,
    query: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> Map<String, Value> {
    let mut args = query.map(form_to_map).unwrap_or_default();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        args.extend(form_to_map(&String::from_utf8_lossy(body)));
    } else if content_type.starts_with("application/json")
        && JSON_METHODS.contains(&method)
        && let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body)
    {
        args.extend(m);
    }
    args
}

/// A call as it arrived, not answered yet.
fn arrived(
    method: &str,
    http_method: &str,
    content_type: String,
    args: Value,
    body: String,
) -> Call {
    Call {
        method: method.into(),
        http_method: http_method.into(),
        args,
        body,
        content_type,
        token: None,
        at: Instant::now(),
        status: 0,
        error: None,
    }
}

/// Takes the queued fault for `method`, or the standing hang.
fn take_fault(shared: &Shared, method: &str) -> (Option<Fault>, Option<Duration>) {
    let mut i = shared.inner.lock().unwrap();
    let fault = i.faults.get_mut(method).and_then(VecDeque::pop_front);
    let hang = i.hangs.get(method).or_else(|| i.hangs.get("*")).copied();
    (fault, hang)
}

/// Waits out a hang and applies the fault queued for the call's method. `Err` is the fault's
/// answer (already recorded); `Ok` carries how long to hold back the answer of a call that is
/// served but whose answer is lost.
async fn faulted(shared: &Shared, call: Call) -> Result<(Call, Option<Duration>), Response> {
    let (fault, hang) = take_fault(shared, &call.method);
    let lose_answer = match &fault {
        Some(Fault::LoseAnswer(d)) => Some(*d),
        _ => None,
    };
    match apply_fault(fault, hang).await {
        Some((status, h, b)) => {
            record(shared, call, status.as_u16(), &b);
            Err((status, h, b).into_response())
        }
        None => Ok((call, lose_answer)),
    }
}

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    h
}

/// Applies a fault; `Some(response)` means answer with it and skip the method.
async fn apply_fault(
    fault: Option<Fault>,
    hang: Option<Duration>,
) -> Option<(StatusCode, HeaderMap, String)> {
    if let Some(d) = hang {
        tokio::time::sleep(d).await;
    }
    let error = |code: &str| json!({"ok": false, "error": code}).to_string();
    match fault? {
        // Served first; the caller holds the answer back.
        Fault::LoseAnswer(_) => None,
        Fault::Hang(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Fault::RateLimit { retry_after_secs } => {
            let mut h = json_headers();
            h.insert("retry-after", HeaderValue::from(retry_after_secs));
            Some((StatusCode::TOO_MANY_REQUESTS, h, error("ratelimited")))
        }
        Fault::RateLimited200 => Some((StatusCode::OK, json_headers(), error("rate_limited"))),
        Fault::Error(code) => Some((StatusCode::OK, json_headers(), error(&code))),
        Fault::ServerError => {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            Some((
                StatusCode::SERVICE_UNAVAILABLE,
                h,
                "<!DOCTYPE html><html><head><title>Server Error | Slack</title></head><body>Slack is having trouble.</body></html>"
                    .to_string(),
            ))
        }
    }
}

fn record(shared: &Shared, mut call: Call, status: u16, body: &str) {
    call.status = status;
    call.error = serde_json::from_str::<Value>(body)
        .ok()
        .filter(|v| v.get("ok") == Some(&json!(false)))
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string));
    shared.inner.lock().unwrap().calls.push(call);
}

async fn api(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    http_method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = header_str(&headers, header::CONTENT_TYPE).to_ascii_lowercase();
    let args = arguments(&method, query.as_deref(), &content_type, &body);
    let token = crate::http::bearer(&headers)
        .map(str::to_string)
        .or_else(|| {
            args.get("token")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    let mut call = arrived(
        &method,
        http_method.as_str(),
        content_type,
        Value::Object(args.clone()),
        String::from_utf8_lossy(&body).to_string(),
    );
    call.token = token.clone();
    let (call, lose_answer) = match faulted(&shared, call).await {
        Ok(served) => served,
        Err(answer) => return answer,
    };
    let (status, v) = {
        let mut i = shared.inner.lock().unwrap();
        match token {
            None => envelope_err("not_authed"),
            Some(t) if !i.tokens.contains(&t) => envelope_err("invalid_auth"),
            Some(t) => web_api::dispatch(&mut i, &shared.base, &method, &args, &t),
        }
    };
    let b = v.to_string();
    record(&shared, call, status.as_u16(), &b);
    if let Some(d) = lose_answer {
        // The effect has landed; the client stops waiting before this answer comes.
        tokio::time::sleep(d).await;
    }
    (status, [(header::CONTENT_TYPE, JSON_UTF8)], b).into_response()
}

/// A POST to one of the URLs the fake hands out (not a Web API method): recorded as `method`,
/// then held to the faults queued for it. `Err` is a fault's answer.
async fn side_call(
    shared: &Shared,
    method: &str,
    headers: &HeaderMap,
    args: Value,
    body: String,
) -> Result<Call, Response> {
    let content_type = header_str(headers, header::CONTENT_TYPE).to_string();
    let call = arrived(method, "POST", content_type, args, body);
    // A lost answer does not apply here: these endpoints answer at once.
    faulted(shared, call).await.map(|(call, _)| call)
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    Path(file_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let args = json!({"file_id": file_id});
    let shown = format!("<{} bytes>", body.len());
    let call = match side_call(&shared, "upload", &headers, args, shown).await {
        Ok(call) => call,
        Err(answer) => return answer,
    };
    let (status, text) = {
        let mut i = shared.inner.lock().unwrap();
        match i.uploads.get_mut(&file_id) {
            Some(u) => {
                if body.len() != u.length {
                    tracing::warn!(
                        file_id,
                        announced = u.length,
                        got = body.len(),
                        "fake slack: upload length differs"
                    );
                }
                u.content = Some(body.to_vec());
                (StatusCode::OK, format!("OK - {}", body.len()))
            }
            None => (StatusCode::NOT_FOUND, "not found".to_string()),
        }
    };
    record(&shared, call, status.as_u16(), "");
    (status, text).into_response()
}

async fn response_url(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_text = String::from_utf8_lossy(&body).to_string();
    let args = serde_json::from_str(&body_text).unwrap_or(Value::Null);
    let call = match side_call(&shared, "response_url", &headers, args, body_text.clone()).await {
        Ok(call) => call,
        Err(answer) => return answer,
    };
    let (status, text) = {
        let mut i = shared.inner.lock().unwrap();
        match (
            i.responses.get_mut(&id),
            serde_json::from_str::<Value>(&body_text),
        ) {
            (None, _) => (StatusCode::NOT_FOUND, "no_service"),
            (Some(v), _) if v.len() >= 5 => (StatusCode::NOT_FOUND, "used_url"),
            (Some(_), Err(_)) => (StatusCode::BAD_REQUEST, "invalid_payload"),
            (Some(v), Ok(j)) => {
                v.push(j);
                (StatusCode::OK, "ok")
            }
        }
    };
    record(&shared, call, status.as_u16(), text);
    (status, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}
