//! How every IAM and Resource Manager call of the fake Google Cloud is handled around its own
//! work: the bearer token check, injected faults (including a concurrent policy writer), the call
//! record, and Google's JSON error envelope.

use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::state::{GcpState, Shared};
use super::{GcpCall, GcpFault, GcpOp};

pub(super) fn google_error(code: u16, status: &str, message: &str) -> Response {
    google_error_details(code, status, message, json!([]))
}

pub(super) fn google_error_details(
    code: u16,
    status: &str,
    message: &str,
    details: Value,
) -> Response {
    let reason = match status {
        "NOT_FOUND" => "notFound",
        "ALREADY_EXISTS" => "alreadyExists",
        "ABORTED" => "aborted",
        "FAILED_PRECONDITION" => "failedPrecondition",
        "PERMISSION_DENIED" => "forbidden",
        "UNAUTHENTICATED" => "unauthorized",
        "RESOURCE_EXHAUSTED" => "rateLimitExceeded",
        _ => "badRequest",
    };
    let sc = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut err = crate::http::google_error_object(sc, status, reason, message);
    // The envelope carries the code asked for, even one that is not a valid HTTP status.
    err["code"] = json!(code);
    if details.as_array().is_some_and(|d| !d.is_empty()) {
        err["details"] = details;
    }
    (sc, axum::Json(json!({ "error": err }))).into_response()
}

pub(super) fn ok_json(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

/// `400 INVALID_ARGUMENT` with `message`.
pub(super) fn invalid_argument(message: &str) -> Response {
    google_error(400, "INVALID_ARGUMENT", message)
}

/// Handles one API call: records it, checks its token and injected faults, then runs `work` on
/// the state and records the status it answered.
pub(super) fn handle(
    state: &Shared,
    op: GcpOp,
    path: &str,
    headers: &HeaderMap,
    work: impl FnOnce(&mut GcpState) -> Response,
) -> Response {
    let mut st = state.lock().unwrap();
    if let Err(r) = begin(&mut st, op, path, headers) {
        return r;
    }
    let resp = work(&mut st);
    finish(&mut st, resp)
}

/// Records the call and settles auth and injected faults. `Err` is the response to send.
// A test fake answering one request at a time: the size of the error response does not matter.
#[allow(clippy::result_large_err)]
fn begin(st: &mut GcpState, op: GcpOp, path: &str, headers: &HeaderMap) -> Result<(), Response> {
    let result = authenticate(st, headers).and_then(|()| apply_fault(st, op, path));
    let status = match &result {
        Ok(()) => 0,
        Err(r) => r.status().as_u16(),
    };
    st.calls.push(GcpCall {
        op,
        path: path.to_string(),
        status,
    });
    result
}

#[allow(clippy::result_large_err)]
fn authenticate(st: &GcpState, headers: &HeaderMap) -> Result<(), Response> {
    let token = crate::http::bearer(headers).unwrap_or("");
    match st.tokens.get(token) {
        Some((_, exp)) if *exp > Instant::now() => Ok(()),
        _ => Err(google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        )),
    }
}

/// Applies the first fault queued for `op`, if any.
#[allow(clippy::result_large_err)]
fn apply_fault(st: &mut GcpState, op: GcpOp, path: &str) -> Result<(), Response> {
    let Some(i) = st.faults.iter().position(|(o, _)| *o == op) else {
        return Ok(());
    };
    let (_, fault) = st.faults.remove(i).expect("index exists");
    match fault {
        GcpFault::Status {
            code,
            status,
            message,
        } => Err(google_error(code, status, &message)),
        GcpFault::ConcurrentWrite => {
            concurrent_write(st, path);
            Ok(())
        }
    }
}

/// Another writer adds `user:concurrent-writer-N@example.com` to `roles/browser` of the project
/// in `path`, which moves its etag.
fn concurrent_write(st: &mut GcpState, path: &str) {
    st.concurrent_writes += 1;
    let n = st.concurrent_writes;
    let project = path
        .trim_start_matches("/v1/projects/")
        .split(':')
        .next()
        .unwrap_or("");
    let Some(p) = st.projects.get_mut(project) else {
        return;
    };
    let member = json!(format!("user:concurrent-writer-{n}@example.com"));
    match p
        .bindings
        .iter_mut()
        .find(|b| b["role"] == "roles/browser" && b.get("condition").is_none())
    {
        Some(b) => b["members"].as_array_mut().expect("members").push(member),
        None => p
            .bindings
            .push(json!({"role": "roles/browser", "members": [member]})),
    }
    p.etag_n += 1;
}

/// Fixes up the status of the call recorded by [`begin`].
fn finish(st: &mut GcpState, resp: Response) -> Response {
    if let Some(c) = st.calls.last_mut()
        && c.status == 0
    {
        c.status = resp.status().as_u16();
    }
    resp
}
