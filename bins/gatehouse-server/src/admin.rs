//! The JSON admin API, for scripts and operators. Every route requires
//! `Authorization: Bearer $GATEHOUSE_ADMIN_TOKEN` (checked by the one admin-auth layer,
//! `slack_adapter::admin_auth`); without the variable the API is disabled (404).
//! Errors are JSON: `{"error": "<code>", "message": "<what went wrong>"}`.

use std::str::FromStr;

use access_core::audit::AuditKind;
use access_core::engine::{ChainWalk, EngineError};
use access_core::jobs::JobStatus;
use access_core::ports::{AuditFilter, GrantFilter, JobFilter, RequestFilter};
use access_core::submission::RawSubmission;
use access_core::{
    Actor, Email, GrantId, GrantStatus, RequestId, RequestStatus, ResourceId, Subject, SubjectKey,
};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::AppState;

/// An API error: status, stable code, human message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(serde_json::json!({"error": self.code, "message": self.message})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::UnknownResource { .. }
            | EngineError::InvalidDuration(_)
            | EngineError::InvalidJustification(_) => StatusCode::BAD_REQUEST,
            EngineError::RequestNotFound(_) | EngineError::GrantNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            EngineError::NotEligible(_) | EngineError::NotApprover(_) | EngineError::NotYours => {
                StatusCode::FORBIDDEN
            }
            EngineError::Unavailable(_) => StatusCode::CONFLICT,
            EngineError::NoActiveGrant { .. }
            | EngineError::NotExtendable { .. }
            | EngineError::NotExtendableLive { .. }
            | EngineError::AlreadyPending { .. }
            | EngineError::AlreadyDecided { .. }
            | EngineError::PendingExpired { .. }
            | EngineError::AlreadyVoted
            | EngineError::AlreadyApprovedCannotDeny
            | EngineError::IllegalTransition(_)
            | EngineError::RevocationInProgress { .. }
            | EngineError::ExtendedGrantEnded { .. } => StatusCode::CONFLICT,
            EngineError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::NoProvider(_) | EngineError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            EngineError::NotEmergency(_) => StatusCode::NOT_FOUND,
            EngineError::SelfReview => StatusCode::FORBIDDEN,
            EngineError::EmergencyNotAllowed { .. }
            | EngineError::EmergencyAlreadyLive { .. }
            | EngineError::AlreadyReviewed { .. } => StatusCode::CONFLICT,
            EngineError::NotAdmin(_) => StatusCode::FORBIDDEN,
            EngineError::RateLimited { .. } | EngineError::TooManyPending { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            EngineError::Delegation(_) => StatusCode::FORBIDDEN,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = ?e, "admin API internal error");
        }
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<access_core::ports::StoreError> for ApiError {
    fn from(e: access_core::ports::StoreError) -> Self {
        EngineError::Store(e).into()
    }
}

/// `Json<T>` whose rejections (malformed JSON, wrong types, missing content type) are JSON
/// errors naming the problem.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(ApiError::new(
                rejection.status(),
                "malformed_body",
                rejection.body_text(),
            )),
        }
    }
}

/// Optional JSON body: empty means `T::default()`.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalJson)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "malformed_body",
                    format!("invalid JSON body: {e}"),
                )
            })
    }
}

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/requests", post(submit).get(list_requests))
        .route("/requests/{id}", get(get_request))
        .route("/requests/{id}/approve", post(approve))
        .route("/requests/{id}/deny", post(deny))
        .route("/requests/{id}/cancel", post(cancel))
        .route("/grants", get(list_grants))
        .route("/grants/{id}", get(get_grant))
        .route("/grants/{id}/revoke", post(revoke))
        .route("/audit", get(audit))
        .route("/audit/verify", get(verify))
        .route("/jobs", get(jobs))
        .route("/resources", get(resources))
        .route("/webhooks", get(crate::webhooks_api::list))
        .route("/webhooks/{id}/enable", post(crate::webhooks_api::enable))
        .merge(crate::admin_emergency::routes())
        .route_layer(middleware::from_fn_with_state(
            state.admin_tokens.clone(),
            slack_adapter::admin_auth::require_admin,
        ))
}

fn parse_id<T: FromStr>(raw: &str, what: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("'{raw}' is not a valid {what} id"),
        )
    })
}

fn admin_actor(name: Option<String>) -> Actor {
    Actor::Admin {
        name: name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "api".to_string()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    user_id: String,
    #[serde(default)]
    team_id: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: String,
    resource: String,
    #[serde(default)]
    duration: Option<String>,
    justification: String,
    #[serde(default)]
    extend: bool,
}

async fn submit(
    State(s): State<AppState>,
    ApiJson(b): ApiJson<SubmitBody>,
) -> Result<Response, ApiError> {
    if b.user_id.trim().is_empty() {
        return Err(ApiError::bad_request("user_id must not be empty"));
    }
    let email = match b.email.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
        Some(e) => Some(Email::parse(e).map_err(|e| ApiError::bad_request(e.to_string()))?),
        None => None,
    };
    let subject = Subject::new(SubjectKey::new(b.team_id, b.user_id.trim()), email, b.name);
    let raw = RawSubmission::new(b.resource, b.duration, b.justification);
    let raw = if b.extend { raw.extension() } else { raw };
    let request = s.app.engine.submit_raw(subject, &raw).await?;
    Ok((StatusCode::CREATED, Json(request)).into_response())
}

/// Filters shared by `GET /api/requests` and `GET /api/grants`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    resource: Option<String>,
    team_id: Option<String>,
    user_id: Option<String>,
    limit: Option<u32>,
    /// Keyset paging: the id of the last entry of the previous page.
    before: Option<String>,
}

/// The parsed filter: status (of either kind), resource, subject, limit (at most 1000).
type ListFilter<S> = (
    Option<S>,
    Option<ResourceId>,
    Option<SubjectKey>,
    Option<u32>,
);

/// `before=<id>`: a well-formed id of an existing entry, or a 400 that says which.
fn parse_cursor<T: FromStr>(raw: Option<&str>, what: &str) -> Result<Option<T>, ApiError> {
    raw.map(|r| {
        r.parse()
            .map_err(|_| ApiError::bad_request(format!("before: '{r}' is not a valid {what} id")))
    })
    .transpose()
}

fn unknown_cursor(what: &str, id: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!(
        "before: no {what} {id} (the cursor is the id of the last entry of the previous page)"
    ))
}

impl ListQuery {
    fn parse<S: FromStr<Err = String>>(self) -> Result<ListFilter<S>, ApiError> {
        let status = self
            .status
            .as_deref()
            .map(S::from_str)
            .transpose()
            .map_err(ApiError::bad_request)?;
        let resource = self
            .resource
            .as_deref()
            .map(ResourceId::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let subject = self
            .user_id
            .map(|user_id| SubjectKey::new(self.team_id.unwrap_or_default(), user_id));
        Ok((status, resource, subject, self.limit.map(|l| l.min(1000))))
    }
}

async fn list_requests(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<access_core::AccessRequest>>, ApiError> {
    let before: Option<RequestId> = parse_cursor(q.before.as_deref(), "request")?;
    let (status, resource, subject, limit) = q.parse::<RequestStatus>()?;
    let engine = &s.app.engine;
    if let Some(b) = before
        && engine.request(b).await?.is_none()
    {
        return Err(unknown_cursor("request", b));
    }
    let filter = RequestFilter {
        status,
        resource,
        subject,
        limit,
        before,
    };
    Ok(Json(engine.requests(&filter).await?))
}

async fn get_request(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: RequestId = parse_id(&id, "request")?;
    let engine = &s.app.engine;
    let request = engine
        .request(id)
        .await?
        .ok_or(EngineError::RequestNotFound(id))?;
    let decisions = engine.decisions(id).await?;
    Ok(Json(
        serde_json::json!({"request": request, "decisions": decisions}),
    ))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    #[serde(default)]
    approver: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

async fn approve(
    State(s): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(b): OptionalJson<DecisionBody>,
) -> Result<Json<access_core::AccessRequest>, ApiError> {
    let id: RequestId = parse_id(&id, "request")?;
    Ok(Json(
        s.app.engine.approve(id, admin_actor(b.approver)).await?,
    ))
}

async fn deny(
    State(s): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(b): OptionalJson<DecisionBody>,
) -> Result<Json<access_core::AccessRequest>, ApiError> {
    let id: RequestId = parse_id(&id, "request")?;
    Ok(Json(
        s.app
            .engine
            .deny(id, admin_actor(b.approver), b.reason)
            .await?,
    ))
}

async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(b): OptionalJson<DecisionBody>,
) -> Result<Json<access_core::AccessRequest>, ApiError> {
    let id: RequestId = parse_id(&id, "request")?;
    Ok(Json(
        s.app.engine.cancel(id, admin_actor(b.approver)).await?,
    ))
}

async fn list_grants(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<access_core::Grant>>, ApiError> {
    let before: Option<GrantId> = parse_cursor(q.before.as_deref(), "grant")?;
    let (status, resource, subject, limit) = q.parse::<GrantStatus>()?;
    let engine = &s.app.engine;
    if let Some(b) = before
        && engine.grant(b).await?.is_none()
    {
        return Err(unknown_cursor("grant", b));
    }
    let filter = GrantFilter {
        status,
        live_only: false,
        resource,
        subject,
        limit,
        before,
    };
    Ok(Json(engine.grants(&filter).await?))
}

async fn get_grant(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<access_core::Grant>, ApiError> {
    let id: GrantId = parse_id(&id, "grant")?;
    Ok(Json(
        s.app
            .engine
            .grant(id)
            .await?
            .ok_or(EngineError::GrantNotFound(id))?,
    ))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default)]
    by: Option<String>,
}

async fn revoke(
    State(s): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(b): OptionalJson<RevokeBody>,
) -> Result<Response, ApiError> {
    let id: GrantId = parse_id(&id, "grant")?;
    let grant = s.app.engine.revoke_grant(id, admin_actor(b.by)).await?;
    Ok((StatusCode::ACCEPTED, Json(grant)).into_response())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    since: Option<String>,
    until: Option<String>,
    after: Option<i64>,
    kind: Option<String>,
    resource: Option<String>,
    subject: Option<String>,
    request_id: Option<String>,
    limit: Option<u32>,
}

fn parse_time(raw: &str, what: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            raw.parse::<chrono::NaiveDate>()
                .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        })
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{what} must be an RFC 3339 time or a date (YYYY-MM-DD), got '{raw}'"
            ))
        })
}

async fn audit(
    State(s): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let kind = match q.kind.as_deref() {
        Some(k) => Some(AuditKind::parse(k).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown kind '{k}'; valid kinds: {}",
                AuditKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let filter = AuditFilter {
        after_seq: q.after,
        since: q
            .since
            .as_deref()
            .map(|v| parse_time(v, "since"))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|v| parse_time(v, "until"))
            .transpose()?,
        kind,
        resource: q
            .resource
            .as_deref()
            .map(ResourceId::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        subject: q.subject,
        request_id: q
            .request_id
            .as_deref()
            .map(|r| parse_id::<RequestId>(r, "request"))
            .transpose()?,
        limit: Some(limit),
    };
    let events = s.app.engine.audit_events(&filter).await?;
    let next = (events.len() as u32 == limit)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    Ok(Json(
        serde_json::json!({"events": events, "next_after": next}),
    ))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VerifyQuery {
    /// Walk the whole chain from the first event instead of from the last verified checkpoint.
    #[serde(default)]
    full: bool,
}

/// Verifies from the last verified checkpoint (cheap however long the chain is); `?full=true`
/// walks everything, which is what catches an edit older than the checkpoint.
async fn verify(
    State(s): State<AppState>,
    Query(q): Query<VerifyQuery>,
) -> Result<Json<access_core::audit::ChainVerification>, ApiError> {
    let walk = if q.full {
        ChainWalk::Full
    } else {
        ChainWalk::FromCheckpoint
    };
    Ok(Json(s.app.engine.verify_audit_chain(walk).await?))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct JobsQuery {
    status: Option<String>,
    kind: Option<String>,
    limit: Option<u32>,
}

async fn jobs(
    State(s): State<AppState>,
    Query(q): Query<JobsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let status = match q.status.as_deref() {
        Some(v) => Some(JobStatus::parse(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown job status '{v}'; valid: pending, running, done, dead"
            ))
        })?),
        None => None,
    };
    let engine = &s.app.engine;
    let q_kind = q.kind;
    let jobs = engine
        .jobs(&JobFilter {
            status,
            kind: q_kind.clone(),
            limit: q.limit.map(|l| l.min(1000)),
        })
        .await?;
    let stats = engine.job_stats(q_kind.as_deref()).await?;
    Ok(Json(serde_json::json!({"stats": stats, "jobs": jobs})))
}

async fn resources(State(s): State<AppState>) -> Json<Vec<access_core::Resource>> {
    Json(s.app.engine.resources())
}
