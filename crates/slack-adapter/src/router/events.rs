//! `/slack/events`: the Events API body is parsed once into an [`EventEnvelope`]; the URL check
//! is answered, DMs and App Home visits are stored as inbox jobs (once per `event_id`) before the
//! acknowledgement, uninstalls and revoked tokens are logged.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::inbox::{Inbound, enqueue_and_run};
use super::{Shared, bad_request, too_many_requests};
use crate::payload::{EnvelopeKind, EventEnvelope};

/// The answer to `url_verification`.
#[derive(Debug, Serialize)]
struct Challenge<'a> {
    challenge: &'a str,
}

pub(super) async fn events_endpoint(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(v) = EventEnvelope::parse(&body) else {
        return bad_request("body is not JSON");
    };
    match v.kind() {
        EnvelopeKind::UrlVerification => axum::Json(Challenge {
            challenge: &v.challenge,
        })
        .into_response(),
        EnvelopeKind::EventCallback => event_callback(&st, &headers, &v).await,
        EnvelopeKind::AppRateLimited => {
            // The envelope carries the legacy verification token: log only the numbers.
            let minute = v.minute_rate_limited.unwrap_or_default();
            tracing::warn!(
                minute_rate_limited = minute,
                "Slack is rate limiting events to this app"
            );
            StatusCode::OK.into_response()
        }
        EnvelopeKind::Other => StatusCode::OK.into_response(),
    }
}

async fn event_callback(st: &Shared, headers: &HeaderMap, v: &EventEnvelope) -> Response {
    let event_id = v.event_id.as_str();
    let retry = headers
        .get("x-slack-retry-num")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let Some(inbound) = Inbound::of_event(v) else {
        // Nothing to act on (a bot's message, an edit, an event we do not handle).
        log_event(v);
        return StatusCode::OK.into_response();
    };
    // Only events that would be stored and acted on take a token: the bot's own DMs
    // echo back as events and must not use up the workspace's budget.
    let team_id = v.team_id.as_str();
    if let Err(wait) = st.config.workspace_limiter.try_acquire(team_id) {
        // Not stored; Slack delivers it again later (at most three retries, about a
        // minute and five minutes apart), deduplicated on event_id then.
        tracing::warn!(team_id, event_id, "workspace rate limit: event refused");
        return too_many_requests(wait);
    }
    // Without an event_id there is nothing to recognise a replay by: store it under a
    // key of its own.
    let key = if event_id.is_empty() {
        format!("event:none:{}", uuid::Uuid::new_v4())
    } else {
        format!("event:{event_id}")
    };
    // Durable before the ack: once Slack hears 200 it will not send the event again.
    match enqueue_and_run(st, &key, &inbound).await {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => {
            tracing::info!(event_id, retry = ?retry, "duplicate Slack event ignored");
            StatusCode::OK.into_response()
        }
        Err(e) => {
            // Not stored: an error makes Slack deliver it again (up to three times).
            tracing::error!(event_id, error = %e, "could not store a Slack event");
            (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
        }
    }
}

/// Events that need no work, only a log line.
pub(super) fn log_event(envelope: &EventEnvelope) {
    let team_id = envelope.team_id.as_str();
    match envelope.event_type() {
        Some("app_uninstalled") => {
            tracing::warn!(
                team_id,
                "Gatehouse was uninstalled from a workspace; its bot token no longer works"
            );
        }
        Some("tokens_revoked") => {
            let tokens = envelope
                .event
                .as_ref()
                .and_then(|e| e.tokens.as_ref())
                .and_then(|t| serde_json::to_string(t).ok())
                .unwrap_or_else(|| "null".to_string());
            tracing::warn!(team_id, tokens = %tokens, "Slack tokens revoked");
        }
        _ => {}
    }
}

impl Inbound {
    /// The part of an `event_callback` envelope worth storing, if any.
    pub(super) fn of_event(envelope: &EventEnvelope) -> Option<Inbound> {
        let event = envelope.event.as_ref()?;
        let team_id = envelope.team_id.clone();
        let enterprise_id = envelope.enterprise_id.clone();
        match event.kind.as_deref() {
            Some("app_home_opened") if event.tab != "messages" => Some(Inbound::HomeOpened {
                team_id,
                enterprise_id,
                user_id: event.user.clone(),
            }),
            Some("message") => {
                // Only people writing to the bot: no bot messages (ours included), no edits or joins.
                let is_im = event.channel_type == "im" || event.channel.starts_with('D');
                if !is_im || event.bot_id || event.subtype || event.user.is_empty() {
                    return None;
                }
                Some(Inbound::DirectMessage {
                    team_id,
                    enterprise_id,
                    user_id: event.user.clone(),
                    channel: event.channel.clone(),
                    text: event.text.clone(),
                })
            }
            _ => None,
        }
    }
}
