//! Event webhooks in the admin API and in `/metrics` (docs/webhooks.md):
//! `GET /api/webhooks` lists them with state, cursor, backlog and failures;
//! `POST /api/webhooks/{id}/enable` enables one that was disabled after repeated failures (it
//! catches up from its kept cursor).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::AppState;
use crate::admin::{ApiError, OptionalJson};

pub async fn list(State(s): State<AppState>) -> Result<Response, ApiError> {
    let hooks = s.app.engine.webhook_statuses().await?;
    Ok(Json(serde_json::json!({ "webhooks": hooks })).into_response())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EnableBody {
    /// Who enables it, for the audit event (default `api`).
    #[serde(default)]
    by: Option<String>,
}

pub async fn enable(
    State(s): State<AppState>,
    Path(id): Path<String>,
    OptionalJson(b): OptionalJson<EnableBody>,
) -> Result<Response, ApiError> {
    let by = access_core::Actor::Admin {
        name: b
            .by
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "api".to_string()),
    };
    let engine = &s.app.engine;
    match engine.enable_webhook(&id, &by).await? {
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "webhook_not_found",
            format!("No webhook '{id}' is configured."),
        )),
        // Already enabled: nothing written, and said so.
        Some(false) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_enabled",
            format!("Webhook '{id}' is already enabled."),
        )),
        Some(true) => {
            let status = engine
                .webhook_statuses()
                .await?
                .into_iter()
                .find(|w| w.id == id);
            Ok((StatusCode::OK, Json(status)).into_response())
        }
    }
}

/// Gauges refreshed on every scrape: how many webhooks are disabled (alert on > 0), and per
/// webhook its backlog and consecutive failures.
pub async fn refresh_metrics(s: &AppState) {
    match s.app.engine.webhook_statuses().await {
        Ok(hooks) => {
            let disabled = hooks.iter().filter(|w| w.state == "disabled").count();
            metrics::gauge!("gatehouse_webhooks_disabled").set(disabled as f64);
            for w in hooks {
                metrics::gauge!("gatehouse_webhook_backlog", "webhook" => w.id.clone())
                    .set(w.backlog as f64);
                metrics::gauge!("gatehouse_webhook_consecutive_failures", "webhook" => w.id.clone())
                    .set(f64::from(w.consecutive_failures));
                metrics::gauge!("gatehouse_webhook_enabled", "webhook" => w.id)
                    .set(if w.state == "enabled" { 1.0 } else { 0.0 });
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: webhook states unavailable"),
    }
}
