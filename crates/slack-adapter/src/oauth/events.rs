//! `app_uninstalled` and `tokens_revoked`: applied to the installations after a verified
//! `/slack/events` delivery was accepted.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;

use super::flow::InstallFlow;
use crate::installations::InstallError;
use crate::payload::EventEnvelope;

impl InstallFlow {
    /// Acts on `app_uninstalled` (remove the installation) and `tokens_revoked` (remove the bot
    /// installation for `bot` ids, forget user tokens for `oauth` ids). Either may come first;
    /// both are idempotent. Returns whether anything changed.
    pub async fn handle_event(&self, envelope: &EventEnvelope) -> Result<bool, InstallError> {
        let Some(event) = envelope.event.as_ref() else {
            return Ok(false);
        };
        let team = Some(envelope.team_id.clone()).filter(|s| !s.is_empty());
        let ent = envelope.enterprise_id.clone().filter(|s| !s.is_empty());
        let store = self.installations().store();
        // Whose installation: the workspace's own, else the org-wide one.
        let owner = match team.as_deref() {
            Some(t) => store.find_team(t).await?,
            None => None,
        };
        let owner = match owner {
            Some(o) => Some(o),
            None => match ent.as_deref() {
                Some(e) => store.find(Some(e), None).await?,
                None => None,
            },
        };
        let Some(owner) = owner else {
            return Ok(false);
        };
        let (oe, ot) = (
            owner.info.enterprise_id.as_deref(),
            owner.info.team_id.as_deref(),
        );
        match event.kind.as_deref() {
            Some("app_uninstalled") => {
                let gone = store.delete(oe, ot).await?;
                tracing::info!(team_id = ?ot, enterprise_id = ?oe, "app_uninstalled: installation removed");
                Ok(gone)
            }
            Some("tokens_revoked") => {
                let tokens = event.tokens.as_ref();
                let mut changed = false;
                for u in tokens.map(|t| t.oauth.as_slice()).unwrap_or_default() {
                    changed |= store.clear_user_token(oe, ot, u).await?;
                }
                let bots = tokens.map(|t| t.bot.as_slice()).unwrap_or_default();
                if !bots.is_empty()
                    && (owner.info.bot_user_id.is_none()
                        || bots
                            .iter()
                            .any(|b| Some(b.as_str()) == owner.info.bot_user_id.as_deref()))
                {
                    changed |= store.delete(oe, ot).await?;
                    tracing::info!(team_id = ?ot, "tokens_revoked: bot installation removed");
                }
                Ok(changed)
            }
            _ => Ok(false),
        }
    }
}

/// Wrap the Slack event router with this: after a `/slack/events` delivery was accepted (2xx,
/// so its signature checked out), `app_uninstalled` and `tokens_revoked` are applied to the
/// installations. The body is buffered up to `max_body_bytes`; larger ones pass untouched.
pub fn lifecycle_layer(router: Router, flow: Arc<InstallFlow>, max_body_bytes: usize) -> Router {
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let flow = flow.clone();
        async move {
            if req.uri().path() != "/slack/events" {
                return next.run(req).await;
            }
            let (parts, body) = req.into_parts();
            let bytes: Bytes = match axum::body::to_bytes(body, max_body_bytes).await {
                Ok(b) => b,
                Err(_) => {
                    return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                        .into_response();
                }
            };
            let resp = next
                .run(Request::from_parts(parts, Body::from(bytes.clone())))
                .await;
            if resp.status().is_success()
                && let Ok(v) = EventEnvelope::parse(&bytes)
                && matches!(v.event_type(), Some("app_uninstalled" | "tokens_revoked"))
            {
                tokio::spawn(async move {
                    if let Err(e) = flow.handle_event(&v).await {
                        tracing::warn!(error = %e, "could not apply a Slack lifecycle event");
                    }
                });
            }
            resp
        }
    }))
}
