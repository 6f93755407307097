//! The front of the fake BigQuery: the checks every call passes before its own work (outage,
//! authentication, queued failures, added latency) and Google's error envelopes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::state::Shared;

/// The state as handlers extract it.
pub(super) type Shared3 = State<Arc<Shared>>;

/// The kinds of call the fake counts.
pub(super) enum Call {
    InsertAll,
    TablesInsert,
    TablesGet,
    DatasetsGet,
    DatasetsInsert,
    TabledataList,
}

/// The checks every call goes through, in the order Google's front end applies them as far as a
/// client can tell: outage, then authentication, then injected failures.
pub(super) async fn gate(shared: &Shared, headers: &HeaderMap, call: Call) -> Result<(), Response> {
    let latency = {
        let mut i = shared.inner.lock().unwrap();
        let c = &mut i.calls;
        match call {
            Call::InsertAll => c.insert_all += 1,
            Call::TablesInsert => c.tables_insert += 1,
            Call::TablesGet => c.tables_get += 1,
            Call::DatasetsGet => c.datasets_get += 1,
            Call::DatasetsInsert => c.datasets_insert += 1,
            Call::TabledataList => c.tabledata_list += 1,
        }
        i.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut i = shared.inner.lock().unwrap();
    if i.outage {
        i.calls.outage_refused += 1;
        return Err(google_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "backendError",
            "The service is currently unavailable.",
            "UNAVAILABLE",
        ));
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let presented = auth.strip_prefix("Bearer ").map(str::trim).unwrap_or("");
    let ok = match &shared.token {
        Some(t) => presented == t,
        None => !presented.is_empty(),
    };
    if !ok {
        i.calls.unauthenticated += 1;
        let (reason, message) = if presented.is_empty() {
            (
                "required",
                "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            )
        } else {
            (
                "authError",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            )
        };
        return Err(google_error(
            StatusCode::UNAUTHORIZED,
            reason,
            message,
            "UNAUTHENTICATED",
        ));
    }
    if let Some(Some(status)) = i.fail_next.pop_front() {
        i.calls.injected_failures += 1;
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (reason, message, st) = match status {
            429 => (
                "rateLimitExceeded",
                "Exceeded rate limits: too many api requests per user per method for this user_method.",
                "RESOURCE_EXHAUSTED",
            ),
            403 => (
                "rateLimitExceeded",
                "Exceeded rate limits: too many table update operations for this table.",
                "PERMISSION_DENIED",
            ),
            400 => ("invalid", "Invalid request.", "INVALID_ARGUMENT"),
            500 => (
                "internalError",
                "An internal error occurred and the request could not be completed.",
                "INTERNAL",
            ),
            503 => (
                "backendError",
                "The service is currently unavailable.",
                "UNAVAILABLE",
            ),
            _ => ("backendError", "Injected failure.", "UNKNOWN"),
        };
        return Err(google_error(code, reason, message, st));
    }
    Ok(())
}

pub(super) fn google_error(
    status: StatusCode,
    reason: &str,
    message: &str,
    status_name: &str,
) -> Response {
    let body =
        json!({"error": crate::http::google_error_object(status, status_name, reason, message)});
    (status, axum::Json(body)).into_response()
}

/// `400 invalid` (`INVALID_ARGUMENT`) with `message`.
pub(super) fn invalid(message: &str) -> Response {
    google_error(
        StatusCode::BAD_REQUEST,
        "invalid",
        message,
        "INVALID_ARGUMENT",
    )
}

/// `409 duplicate` (`ALREADY_EXISTS`) for `what`.
pub(super) fn duplicate(what: &str) -> Response {
    google_error(
        StatusCode::CONFLICT,
        "duplicate",
        &format!("Already Exists: {what}"),
        "ALREADY_EXISTS",
    )
}

pub(super) fn not_found(message: &str) -> Response {
    google_error(StatusCode::NOT_FOUND, "notFound", message, "NOT_FOUND")
}

pub(super) fn parse_error() -> Response {
    google_error(
        StatusCode::BAD_REQUEST,
        "parseError",
        "Invalid JSON payload received. Unexpected token.",
        "INVALID_ARGUMENT",
    )
}

/// The 200 answer of a call that worked.
pub(super) fn ok_json(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}
