//! Break-glass in the admin API (`docs/break-glass.md`):
//!
//! - `GET /api/emergency?reviewed=false[&resource=…][&limit=…]`: emergency grants, newest
//!   first, each with its grant's current status (`reviewed=false`: those still to review).
//! - `POST /api/emergency/{request_id}/review` with `{"outcome": "reviewed" | "revoked",
//!   "by": "<name>"}`: an admin's review (`revoked` also revokes the grant).

use access_core::emergency::{EmergencyAccess, EmergencyFilter, ReviewOutcome};
use access_core::{Actor, GrantStatus, RequestId, ResourceId};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::admin::{ApiError, OptionalJson};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/emergency", get(list))
        .route("/emergency/{id}/review", post(review))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    reviewed: Option<bool>,
    resource: Option<String>,
    limit: Option<u32>,
}

/// One emergency grant as the API lists it.
#[derive(Debug, Serialize)]
struct Listed {
    #[serde(flatten)]
    record: EmergencyAccess,
    /// The grant's status now (`active`, `expired`, `revoked`, …).
    grant_status: Option<GrantStatus>,
}

async fn list(
    State(s): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Listed>>, ApiError> {
    let resource = q
        .resource
        .as_deref()
        .map(ResourceId::parse)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    let engine = &s.app.engine;
    let records = engine
        .emergency_accesses(&EmergencyFilter {
            reviewed: q.reviewed,
            resource,
            limit: q.limit.map(|l| l.min(1000)),
        })
        .await?;
    let ids: Vec<_> = records.iter().map(|r| r.grant_id).collect();
    let grants = engine.grants_by_id(&ids).await?;
    Ok(Json(
        records
            .into_iter()
            .map(|record| Listed {
                grant_status: grants
                    .iter()
                    .find(|g| g.id == record.grant_id)
                    .map(|g| g.status),
                record,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    #[serde(default)]
    by: Option<String>,
    /// `reviewed` (default) or `revoked`.
    #[serde(default)]
    outcome: Option<String>,
}

async fn review(
    State(s): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(b): OptionalJson<ReviewBody>,
) -> Result<Json<EmergencyAccess>, ApiError> {
    let id: RequestId = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("'{id}' is not a valid request id"),
        )
    })?;
    let outcome = match b.outcome.as_deref() {
        None => ReviewOutcome::Reviewed,
        Some(o) => ReviewOutcome::parse(o).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("unknown outcome '{o}'; use reviewed or revoked"),
            )
        })?,
    };
    let by = Actor::Admin {
        name: b
            .by
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "api".to_string()),
    };
    Ok(Json(s.app.engine.review_emergency(id, by, outcome).await?))
}
