//! The fake Cloud Connexa's HTTP side: every call passes the token endpoint or the bearer check,
//! the per-credential token bucket (advertised in `X-RateLimit-*` headers, an empty 429 when
//! spent), queued faults and the read-only switch before `routes.rs` answers it; and the error
//! envelope `{"errorMessage", "statusError", "errorDetails"}`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use super::resources::Call;
use super::state::{Bucket, St};
use super::{TOKEN_PATH, routes, token};

/// The rate-limit headers of an answer.
type LimitHeaders = Vec<(&'static str, String)>;

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `k=v&…` pairs, percent-decoded.
pub(super) fn parse_pairs(s: &str) -> BTreeMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

pub(super) fn envelope(status: &str, message: &str, details: Option<Value>) -> Value {
    let mut v = json!({"errorMessage": message, "statusError": status});
    if let Some(d) = details {
        v["errorDetails"] = d;
    }
    v
}

pub(super) fn field_error(field: &str, code: &str, message: &str) -> Value {
    json!({ field: [{"errorCode": code, "message": message, "params": {}}] })
}

/// An answer before it becomes a response: a status and an optional JSON body.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) body: Option<Value>,
}

impl Reply {
    pub(super) fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
        }
    }

    pub(super) fn empty(status: u16) -> Self {
        Self { status, body: None }
    }

    /// An error envelope with `status` and `statusError`.
    pub(super) fn error(status: u16, status_error: &str, message: &str) -> Self {
        Self::json(status, envelope(status_error, message, None))
    }

    pub(super) fn bad(message: &str, details: Option<Value>) -> Self {
        Self::json(400, envelope("BAD_REQUEST", message, details))
    }

    /// 400 `Validation failed` naming one field.
    pub(super) fn invalid_field(field: &str, code: &str, message: &str) -> Self {
        Self::bad("Validation failed", Some(field_error(field, code, message)))
    }
}

pub(super) async fn handle(
    State(st): State<Arc<Mutex<St>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = st.lock().map(|s| s.latency).unwrap_or_default();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (response, slow) = answer(&st, method, uri, headers, body);
    if let Some(d) = slow {
        // The change is already applied (and recorded); only the answer is late.
        tokio::time::sleep(d).await;
    }
    response
}

/// The record of a call, its query with `client_secret` masked.
fn call_record(method: &Method, path: &str, uri: &Uri, body: Option<Value>) -> Call {
    let masked_query = uri
        .query()
        .unwrap_or("")
        .split('&')
        .map(|p| {
            if p.starts_with("client_secret=") {
                "client_secret=***"
            } else {
                p
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    Call {
        method: method.to_string(),
        path: path.to_string(),
        query: masked_query,
        status: 0,
        at: Instant::now(),
        body,
        credentials_via: String::new(),
    }
}

/// Answers one call under the state lock; also says how long to hold the answer back.
fn answer(
    st: &Arc<Mutex<St>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (Response, Option<Duration>) {
    let path = uri.path().trim_end_matches('/').to_string();
    let query = parse_pairs(uri.query().unwrap_or(""));
    let json_body: Option<Value> = serde_json::from_slice(&body).ok();
    let mut st = st.lock().unwrap_or_else(|p| p.into_inner());
    let mut call = call_record(&method, &path, &uri, json_body.clone());

    if path == TOKEN_PATH {
        let (reply, via) = token::token(
            &mut st,
            &method,
            &headers,
            &query,
            &body,
            json_body.as_ref(),
        );
        call.credentials_via = via;
        return (finish(&mut st, call, reply, None), None);
    }
    if !path.starts_with("/api/v1/") {
        let r = Reply::error(404, "NOT_FOUND", "No such endpoint");
        return (finish(&mut st, call, r, None), None);
    }
    let client = match authenticate(&st, &headers) {
        Ok(client) => client,
        Err(r) => return (finish(&mut st, call, r, None), None),
    };
    let limit = match rate_limit(&mut st, client) {
        Ok(limit) => limit,
        Err(hdrs) => return (finish(&mut st, call, Reply::empty(429), Some(hdrs)), None),
    };
    if let Some(r) = injected_fault(&mut st) {
        return (finish(&mut st, call, r, limit), None);
    }
    if st.cfg.read_only && method != Method::GET {
        let r = Reply::error(
            403,
            "FORBIDDEN",
            "Access is denied: the API credential is read-only",
        );
        return (finish(&mut st, call, r, limit), None);
    }

    let segs: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
    let reply = routes::route(&mut st, &method, &segs, &query, json_body.as_ref(), &body);
    let user_write = matches!(
        (&method, segs.as_slice()),
        (&Method::POST, ["users"]) | (&Method::PUT, ["users", _])
    );
    let slow = match st.slow_after_apply.as_mut() {
        Some((n, d)) if user_write && *n > 0 => {
            *n -= 1;
            Some(*d)
        }
        _ => None,
    };
    (finish(&mut st, call, reply, limit), slow)
}

/// The credential a live bearer token was issued to; 401 otherwise.
fn authenticate(st: &St, headers: &HeaderMap) -> Result<String, Reply> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match bearer.and_then(|b| st.tokens.get(b)) {
        Some(t) if t.expires_at > Instant::now() => Ok(t.client_id.clone()),
        Some(_) => Err(Reply::error(401, "UNAUTHORIZED", "Access token expired")),
        None => Err(Reply::error(
            401,
            "UNAUTHORIZED",
            "Full authentication is required to access this resource",
        )),
    }
}

/// Takes a token from the credential's bucket (one bucket per credential, shared by reads and
/// writes). `Ok` carries the headers to advertise (none when rate limiting is off); `Err` the
/// headers of the 429 when the bucket is empty.
fn rate_limit(st: &mut St, client: String) -> Result<Option<LimitHeaders>, LimitHeaders> {
    if !st.cfg.rate_limit {
        return Ok(None);
    }
    let now = Instant::now();
    let (burst, rate, time) = (st.cfg.burst, st.cfg.replenish_rate, st.cfg.replenish_time);
    let per_sec = f64::from(rate) / f64::from(time.max(1));
    let b = st.buckets.entry(client).or_insert(Bucket {
        tokens: f64::from(burst),
        last: now,
    });
    b.tokens =
        (b.tokens + now.duration_since(b.last).as_secs_f64() * per_sec).min(f64::from(burst));
    b.last = now;
    let allowed = b.tokens >= 1.0;
    if allowed {
        b.tokens -= 1.0;
    }
    let remaining = b.tokens.floor().max(0.0) as u64;
    let hdrs = vec![
        ("x-ratelimit-replenish-rate", rate.to_string()),
        ("x-ratelimit-replenish-time", time.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-burst-capacity", burst.to_string()),
    ];
    if allowed { Ok(Some(hdrs)) } else { Err(hdrs) }
}

/// The answer of a queued fault ([`super::FakeCloudConnexa::fail_next`]), if one is due.
fn injected_fault(st: &mut St) -> Option<Reply> {
    let f = st.faults.as_mut().filter(|f| f.remaining > 0)?;
    f.remaining -= 1;
    let (status, last) = (f.status, f.remaining == 0);
    if last {
        st.faults = None;
    }
    Some(if status == 503 {
        Reply::empty(503)
    } else {
        Reply::error(status, "INTERNAL_SERVER_ERROR", "Injected failure")
    })
}

fn finish(st: &mut St, mut call: Call, reply: Reply, headers: Option<LimitHeaders>) -> Response {
    call.status = reply.status;
    st.calls.push(call);
    let mut b = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (k, v) in headers.unwrap_or_default() {
        b = b.header(k, v);
    }
    match reply.body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&v).unwrap_or_default()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}
