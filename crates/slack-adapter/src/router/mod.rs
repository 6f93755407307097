//! The HTTP side: `POST /slack/commands`, `/slack/interactions`, `/slack/events`.
//!
//! Every request passes a verification middleware first: the body is read up to the size limit (413 past
//! it), the signature checked over the raw bytes (401 on any failure), and only then does a
//! handler parse it. Handlers answer Slack within the acknowledgement budget no matter what.
//! Slash commands and events (DMs, App Home) are stored as inbox jobs before they are
//! acknowledged (once per `trigger_id` / `event_id`), then run at once from the queue. A command
//! that must read the person's profile from Slack first (not cached) is acknowledged with a
//! receipt as soon as it is stored (verify, persist, answer); any other command that finishes
//! within the budget answers in the acknowledgement, otherwise the acknowledgement says "working
//! on it". Late answers follow through `response_url` or a DM, retried with the job's backoff
//! while Slack fails.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};

use access_core::engine::Engine;

use crate::api::SlackApi;
use crate::blocks;
use crate::commands::{self, ProfileCache};
use crate::config::SlackConfig;
use crate::grammar::{self, Command, Surface};
use crate::installations::Installations;
use crate::payload::{EnvelopeKind, EventEnvelope, InteractionKind};
use crate::verify;

mod ack;
mod events;
mod inbox;
mod interactions;
mod slash;
mod views;

pub use slash::RECEIPT_MARK;

use events::{events_endpoint, log_event};
use inbox::{Inbound, SlackInbox};
use interactions::{Click, interactions_endpoint, read_interaction};
use slash::{SlashForm, commands_endpoint};
use views::{FormValues, view_replay_key};

/// Shared by every handler.
#[derive(Debug, Clone)]
struct AppState {
    engine: Arc<Engine>,
    config: SlackConfig,
    api: SlackApi,
    profiles: Arc<ProfileCache>,
    /// Installed workspaces, each answered with its own bot token (see [`for_team`]).
    installations: Option<Installations>,
}

type Shared = Arc<AppState>;

impl AppState {
    fn ctx(&self) -> commands::Ctx<'_> {
        commands::Ctx {
            engine: &self.engine,
            api: &self.api,
            profiles: &self.profiles,
        }
    }
}

/// The Slack endpoints, ready to merge into the server's router.
pub fn router(engine: Arc<Engine>, config: SlackConfig) -> Router {
    build_router(engine, config, None)
}

/// [`router`] for many workspaces: a request from an installed workspace is answered with that
/// installation's bot token; other workspaces use `SLACK_BOT_TOKEN`.
pub fn router_with_installations(
    engine: Arc<Engine>,
    config: SlackConfig,
    installations: Installations,
) -> Router {
    build_router(engine, config, Some(installations))
}

/// The state with `api` switched to the bot token of the installation serving `team_id` (its own,
/// or the org-wide install of `enterprise_id`), when there is one; and the identity scope of the
/// people writing from there. On an org-wide Enterprise Grid install a person has one user id in
/// every workspace of the organisation, so they are keyed by (organisation, user): the scope is
/// the enterprise id, and self-approval, double votes and the one-live-grant rule see one person
/// whichever workspace they write from. Otherwise (single workspace) it is the workspace id.
async fn for_team(st: &Shared, team_id: &str, enterprise_id: Option<&str>) -> (Shared, String) {
    let Some(ins) = &st.installations else {
        return (st.clone(), team_id.to_string());
    };
    match ins.resolve(enterprise_id, Some(team_id)).await {
        Ok(Some(i)) => {
            let scope = match (&i.info.enterprise_id, i.info.is_enterprise_install) {
                (Some(e), true) if !e.is_empty() => e.clone(),
                _ => team_id.to_string(),
            };
            let shared = match i.bot_token {
                Some(token) => Arc::new(AppState {
                    api: st.api.with_token(token),
                    ..AppState::clone(st)
                }),
                None => st.clone(),
            };
            (shared, scope)
        }
        Ok(None) => (st.clone(), team_id.to_string()),
        Err(e) => {
            tracing::warn!(team_id, error = %e, "installation lookup failed; using the default token");
            (st.clone(), team_id.to_string())
        }
    }
}

/// The same handlers **without signature verification**, for Socket Mode to replay envelopes
/// in process (the WebSocket was authenticated by the app token). Never serve this over HTTP.
pub fn socket_mode_router(
    engine: Arc<Engine>,
    config: SlackConfig,
    installations: Option<Installations>,
) -> Router {
    let (state, routes) = routes(engine, config, installations);
    routes.with_state(state)
}

fn routes(
    engine: Arc<Engine>,
    config: SlackConfig,
    installations: Option<Installations>,
) -> (Shared, Router<Shared>) {
    let state: Shared = Arc::new(AppState {
        api: SlackApi::new(&config),
        engine,
        config,
        profiles: Arc::default(),
        installations,
    });
    // Stored deliveries (DMs, events, commands, clicks) are processed from the job queue by
    // this router's state; the last router built in a process serves them (one built again with
    // its installations must scope identities as the router that stored them does).
    state
        .engine
        .set_inbox_handler(Arc::new(SlackInbox { st: state.clone() }));
    let routes = Router::new()
        .route("/slack/commands", post(commands_endpoint))
        .route("/slack/interactions", post(interactions_endpoint))
        .route("/slack/events", post(events_endpoint));
    (state, routes)
}

fn build_router(
    engine: Arc<Engine>,
    config: SlackConfig,
    installations: Option<Installations>,
) -> Router {
    let (state, routes) = routes(engine, config, installations);
    routes
        .layer(middleware::from_fn_with_state(state.clone(), verify_layer))
        .with_state(state)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Size limit and signature check, before any parsing.
async fn verify_layer(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let limit = st.config.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
    };
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(e) = verify::verify(
        st.config.signing_secret.expose().as_bytes(),
        header(verify::TIMESTAMP_HEADER),
        header(verify::SIGNATURE_HEADER),
        &bytes,
        unix_now(),
    ) {
        if e == verify::VerifyError::NoSecret {
            tracing::error!("SLACK_SIGNING_SECRET is not set: refusing every Slack request");
        } else {
            tracing::warn!(path = %parts.uri.path(), reason = %e, "refused a Slack request");
        }
        return (StatusCode::UNAUTHORIZED, "invalid request signature").into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// `{"response_type": "ephemeral", "text": …}`: an answer in the acknowledgement only the
/// person sees.
#[derive(Debug, Serialize)]
struct EphemeralAck<'a> {
    response_type: &'static str,
    text: &'a str,
}

fn ephemeral_ack(text: &str) -> Response {
    axum::Json(EphemeralAck {
        response_type: "ephemeral",
        text,
    })
    .into_response()
}

/// What a person is told when their workspace is over its limit (docs/rate-limits.md).
fn busy_text(wait: std::time::Duration) -> String {
    format!(
        ":hourglass_flowing_sand: Gatehouse is receiving too many requests from this workspace right now. \
         Nothing was done; please try again in {} s.",
        crate::ratelimit::wait_secs(wait)
    )
}

/// HTTP 429 with `Retry-After`, for deliveries Slack retries on its own (events) or shows as
/// failed (clicks).
fn too_many_requests(wait: std::time::Duration) -> Response {
    let secs = crate::ratelimit::wait_secs(wait).to_string();
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, secs)],
        "rate limited: too many requests from this workspace",
    )
        .into_response()
}

fn bad_request(what: &str) -> Response {
    (StatusCode::BAD_REQUEST, what.to_string()).into_response()
}

/// Where a late answer goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ReplyTo {
    ResponseUrl {
        url: String,
    },
    /// A DM (or channel) message.
    Channel {
        channel: String,
    },
    /// An ephemeral message to `user` in `channel`.
    Ephemeral {
        channel: String,
        user: String,
    },
}

async fn try_send_reply(
    api: &SlackApi,
    to: &ReplyTo,
    text: &str,
) -> Result<(), crate::api::ApiError> {
    match to {
        ReplyTo::ResponseUrl { url } => api.respond(url, &blocks::ephemeral(text)).await,
        ReplyTo::Channel { channel } => api
            .post_message(channel, text, &serde_json::json!([]))
            .await
            .map(|_| ()),
        ReplyTo::Ephemeral { channel, user } => api.post_ephemeral(channel, user, text).await,
    }
}

async fn send_reply(api: &SlackApi, to: &ReplyTo, text: &str) {
    if let Err(e) = try_send_reply(api, to, text).await {
        tracing::warn!(error = %e, "could not deliver a reply to Slack");
    }
}

/// The Slack endpoints whose bodies [`decode`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/slack/commands` (form-encoded slash command).
    Commands,
    /// `/slack/interactions` (form-encoded `payload` JSON: clicks, form submissions).
    Interactions,
    /// `/slack/events` (Events API JSON envelope).
    Events,
}

/// What an endpoint makes of a (verified) body before it looks anything up or acts, using the
/// endpoints' own decoding: `Err` is the reason of a 400; `Ok(None)` is acknowledged with nothing
/// stored (help, the form opening, a URL check, an event not acted on, a click without an
/// action); `Ok(Some(json))` is the delivery the endpoint would store in the inbox, exactly as
/// stored (a slash command's `request` is validated against the catalogue first (`Engine::validate`), which this does
/// not do). Public for the fuzz targets in `fuzz/`; the server itself only uses the endpoints.
pub fn decode(endpoint: Endpoint, body: &[u8]) -> Result<Option<String>, &'static str> {
    let inbound = match endpoint {
        Endpoint::Commands => {
            let form = SlashForm::read(body)?;
            let surface = Surface::from_command(&form.command).unwrap_or(Surface::Access);
            match grammar::parse(&form.text, surface) {
                Err(_) | Ok(Command::Help { .. } | Command::OpenModal) => None,
                Ok(_) => Some(form.inbound()),
            }
        }
        Endpoint::Interactions => {
            let (p, caller) = read_interaction(body)?;
            match p.kind() {
                InteractionKind::BlockActions => Click::of(&p, &caller)
                    .filter(|c| !c.opens_form())
                    .map(|c| c.inbound(&caller)),
                InteractionKind::ViewSubmission => {
                    // The replay key is computed from the payload too.
                    let _ = view_replay_key(&p, &caller);
                    FormValues::of(&p).map(|f| f.inbound(&caller))
                }
                InteractionKind::Other => None,
            }
        }
        Endpoint::Events => {
            let v = EventEnvelope::parse(body).map_err(|_| "body is not JSON")?;
            match v.kind() {
                EnvelopeKind::EventCallback => {
                    let inbound = Inbound::of_event(&v);
                    if inbound.is_none() {
                        log_event(&v);
                    }
                    inbound
                }
                _ => None,
            }
        }
    };
    inbound
        .map(|i| serde_json::to_string(&i).map_err(|_| "delivery does not serialise"))
        .transpose()
}

/// Reads a stored delivery as the inbox handler does and writes it again: what is stored must
/// read back (the fuzz targets check the round trip is exact). `Err` carries the reader's error.
pub fn reread_delivery(payload: &str) -> Result<String, String> {
    let inbound: Inbound = serde_json::from_str(payload).map_err(|e| e.to_string())?;
    serde_json::to_string(&inbound).map_err(|e| e.to_string())
}
