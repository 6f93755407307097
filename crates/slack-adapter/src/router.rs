//! The HTTP side: `POST /slack/commands`, `/slack/interactions`, `/slack/events`.
//!
//! Every request passes a verification middleware first: the body is read up to the size limit (413 past
//! it), the signature checked over the raw bytes (401 on any failure), and only then does a
//! handler parse it. Handlers answer Slack within the acknowledgement budget no matter what.
//! Slash commands and events (DMs, App Home) are stored as inbox jobs before they are
//! acknowledged (once per `trigger_id` / `event_id`), then run at once from the queue; a command
//! that finishes within the budget answers in the acknowledgement, otherwise the acknowledgement
//! says "working on it" and the answer follows through `response_url` or a DM, retried with the
//! job's backoff while Slack fails.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use access_core::engine::{Engine, EngineError, Submission};
use access_core::jobs::InboxItem;
use access_core::ports::{InboxError, InboxHandler};
use access_core::submission::RawSubmission;
use access_core::{GrantId, RequestId};

use crate::api::SlackApi;
use crate::blocks::{self, action, modal_block};
use crate::commands::{self, Caller, Field, ProfileCache};
use crate::config::SlackConfig;
use crate::grammar::{self, Command, Surface};
use crate::installations::Installations;
use crate::verify;

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

fn ephemeral_ack(text: &str) -> Response {
    axum::Json(json!({"response_type": "ephemeral", "text": text})).into_response()
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
            .post_message(channel, text, &json!([]))
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

// ------------------------------------------------------------------------------------------------
// Slash commands

#[derive(Debug, Deserialize)]
struct SlashForm {
    #[serde(default)]
    team_id: String,
    user_id: String,
    #[serde(default)]
    user_name: String,
    #[serde(default)]
    channel_id: String,
    command: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    response_url: String,
    #[serde(default)]
    trigger_id: String,
    /// Set for Enterprise Grid workspaces.
    #[serde(default)]
    enterprise_id: String,
}

impl SlashForm {
    fn read(body: &[u8]) -> Result<SlashForm, &'static str> {
        serde_urlencoded::from_bytes::<SlashForm>(body).map_err(|_| "malformed slash command")
    }

    fn enterprise(&self) -> Option<&str> {
        Some(self.enterprise_id.as_str()).filter(|e| !e.is_empty())
    }

    /// Where a late answer goes: `response_url`, or an ephemeral message in the channel.
    fn late_reply(&self) -> ReplyTo {
        if self.response_url.is_empty() {
            ReplyTo::Ephemeral {
                channel: self.channel_id.clone(),
                user: self.user_id.clone(),
            }
        } else {
            ReplyTo::ResponseUrl {
                url: self.response_url.clone(),
            }
        }
    }

    /// The delivery stored for this command (its text is parsed again when processed). The
    /// (deprecated) verification token is not part of it.
    fn inbound(&self) -> Inbound {
        Inbound::Command {
            team_id: self.team_id.clone(),
            enterprise_id: self.enterprise().map(str::to_string),
            user_id: self.user_id.clone(),
            user_name: self.user_name.clone(),
            command: self.command.clone(),
            text: self.text.clone(),
            reply: self.late_reply(),
        }
    }
}

async fn commands_endpoint(State(st): State<Shared>, body: Bytes) -> Response {
    let form = match SlashForm::read(&body) {
        Ok(f) => f,
        Err(why) => return bad_request(why),
    };
    if let Err(wait) = st.config.workspace_limiter.try_acquire(&form.team_id) {
        // A 200 with words: Slack shows a non-200 to the person as a bare failure, and slash
        // commands are never retried by Slack.
        tracing::warn!(team_id = %form.team_id, "workspace rate limit: slash command refused");
        return ephemeral_ack(&busy_text(wait));
    }
    let surface = Surface::from_command(&form.command).unwrap_or(Surface::Access);
    let enterprise = form.enterprise();
    let (st, scope) = for_team(&st, &form.team_id, enterprise).await;
    let caller = Caller {
        team_id: scope,
        user_id: form.user_id.clone(),
        user_name: form.user_name.clone(),
        workspace: form.team_id.clone(),
        enterprise_id: enterprise.map(str::to_string),
    };
    let cmd = match grammar::parse(&form.text, surface) {
        Ok(c) => c,
        Err(e) => return ephemeral_ack(&e.to_string()),
    };
    let late = form.late_reply();
    match cmd {
        Command::Help { topic } => ephemeral_ack(&grammar::help_text(surface, topic)),
        Command::OpenModal => {
            // trigger_id lives 3 s: open the modal right away, but never make Slack wait for it.
            let st2 = st.clone();
            tokio::spawn(async move { open_modal(&st2, &form.trigger_id, None, late).await });
            StatusCode::OK.into_response()
        }
        cmd => {
            // Refuse impossible requests at once, without calling anybody.
            if let Command::Request {
                resource,
                duration,
                justification,
            } = &cmd
                && let Err(e) = st.engine.validate(&RawSubmission::new(
                    resource.as_str(),
                    duration.clone(),
                    justification.as_str(),
                ))
            {
                return ephemeral_ack(&e.to_string());
            }
            // Stored before anything is done or acknowledged: a crash, or a Slack call failing
            // transiently, cannot lose it. Slack gives every invocation its own trigger_id, so a
            // signed request replayed within the five-minute window is recognised and not run
            // again.
            let key = if form.trigger_id.is_empty() {
                format!("command:none:{}", uuid::Uuid::new_v4())
            } else {
                format!("command:{}:{}", form.team_id, form.trigger_id)
            };
            let inbound = form.inbound();
            // Within the budget the answer goes in the acknowledgement; after it, the job posts
            // it to response_url.
            let (tx, rx) = tokio::sync::oneshot::channel();
            waiters().insert(key.clone(), tx);
            let stored = enqueue_and_run(&st, &key, &inbound).await;
            let answer = match stored {
                Ok(true) => match await_answer(&st, &key, rx).await {
                    Some(Answer::Text(text)) => Some(text),
                    _ => None,
                },
                Ok(false) => {
                    // The waiter under this key, if any, is the first delivery's.
                    tracing::warn!(user = %caller.user_id, "repeated slash command ignored (same trigger_id)");
                    Some(
                        "This command was already received and handled; the repeat was ignored."
                            .to_string(),
                    )
                }
                Err(e) => {
                    waiters().remove(&key);
                    tracing::error!(error = %e, "could not store a slash command");
                    Some("Something went wrong on our side. Please try again.".to_string())
                }
            };
            match answer {
                Some(text) => ephemeral_ack(&text),
                None => ephemeral_ack(
                    ":hourglass_flowing_sand: Working on it… I'll reply here shortly.",
                ),
            }
        }
    }
}

/// The answer the stored job hands over while the acknowledgement can still carry it, or
/// `None` when the budget ran out (the job then answers on its own).
async fn await_answer(
    st: &Shared,
    key: &str,
    mut rx: tokio::sync::oneshot::Receiver<Answer>,
) -> Option<Answer> {
    match tokio::time::timeout(st.config.ack_budget, &mut rx).await {
        Ok(Ok(answer)) => Some(answer),
        _ => {
            // Too late: the job must not hand the answer to a closed channel.
            waiters().remove(key);
            rx.close();
            rx.try_recv().ok()
        }
    }
}

/// Slash commands being acknowledged by this process, by inbox key: the job hands its answer
/// here while the acknowledgement can still carry it.
fn waiters() -> &'static Waiters {
    static W: std::sync::OnceLock<Waiters> = std::sync::OnceLock::new();
    W.get_or_init(Waiters::default)
}

/// What a stored delivery's job hands to the acknowledgement still waiting for it.
#[derive(Debug)]
enum Answer {
    /// A slash command's answer.
    Text(String),
    /// A form submission's outcome: filed, or what is wrong with which field.
    Form(Result<(), (Field, String)>),
}

#[derive(Debug, Default)]
struct Waiters(
    std::sync::Mutex<std::collections::HashMap<String, tokio::sync::oneshot::Sender<Answer>>>,
);

impl Waiters {
    /// A replay arriving while the first delivery waits must not take its place.
    fn insert(&self, key: String, tx: tokio::sync::oneshot::Sender<Answer>) {
        if let Ok(mut m) = self.0.lock() {
            m.entry(key).or_insert(tx);
        }
    }

    fn remove(&self, key: &str) -> Option<tokio::sync::oneshot::Sender<Answer>> {
        self.0.lock().ok()?.remove(key)
    }

    /// Gives `answer` to the acknowledgement waiting under `key`; returns it when none took it.
    fn hand_over(&self, key: &str, answer: Answer) -> Option<Answer> {
        match self.remove(key) {
            Some(tx) => tx.send(answer).err(),
            None => Some(answer),
        }
    }
}

async fn open_modal(st: &Shared, trigger_id: &str, preselect: Option<&str>, on_error: ReplyTo) {
    let view = blocks::request_modal(&st.engine.resources(), preselect);
    if let Err(e) = st.api.views_open(trigger_id, &view).await {
        tracing::warn!(error = %e, "views.open failed");
        send_reply(
            &st.api,
            &on_error,
            "I couldn't open the request form. Type `/access request <resource> [duration] <reason>` instead.",
        )
        .await;
    }
}

// ------------------------------------------------------------------------------------------------
// Interactivity

#[derive(Debug, Deserialize)]
struct InteractionForm {
    payload: String,
}

fn caller_of(p: &Value) -> Option<Caller> {
    let user_id = p.pointer("/user/id")?.as_str()?.to_string();
    let team_id = p
        .pointer("/team/id")
        .or_else(|| p.pointer("/user/team_id"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let user_name = p
        .pointer("/user/name")
        .or_else(|| p.pointer("/user/username"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Some(Caller {
        workspace: team_id.clone(),
        team_id,
        user_id,
        user_name,
        enterprise_id: p
            .pointer("/enterprise/id")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
            .map(str::to_string),
    })
}

/// The interaction payload and who sent it, or why the body is refused.
fn read_interaction(body: &[u8]) -> Result<(Value, Caller), &'static str> {
    let form =
        serde_urlencoded::from_bytes::<InteractionForm>(body).map_err(|_| "missing payload")?;
    let p = serde_json::from_str::<Value>(&form.payload).map_err(|_| "payload is not JSON")?;
    let caller = caller_of(&p).ok_or("payload has no user")?;
    Ok((p, caller))
}

async fn interactions_endpoint(State(st): State<Shared>, body: Bytes) -> Response {
    let (p, mut caller) = match read_interaction(&body) {
        Ok(x) => x,
        Err(why) => return bad_request(why),
    };
    if let Err(wait) = st.config.workspace_limiter.try_acquire(&caller.workspace) {
        tracing::warn!(team_id = %caller.workspace, "workspace rate limit: interaction refused");
        return match p.get("type").and_then(Value::as_str) {
            // The form stays open with the reason under its first field; submitting again works
            // once the workspace has room.
            Some("view_submission") => modal_errors(Field::Resource, &busy_text(wait)),
            // Slack does not retry interactions: a 429 shows the person the click failed, so
            // they click again later.
            _ => too_many_requests(wait),
        };
    }
    let enterprise = p.pointer("/enterprise/id").and_then(Value::as_str);
    let (st, scope) = for_team(&st, &caller.team_id, enterprise).await;
    caller.team_id = scope;
    match p.get("type").and_then(Value::as_str) {
        Some("block_actions") => block_actions(&st, &caller, &p).await,
        Some("view_submission") => view_submission(&st, caller, &p).await,
        _ => StatusCode::OK.into_response(),
    }
}

/// Where the answer to a click goes: the message's response_url (ephemeral, the original stays),
/// or for App Home buttons a DM.
fn click_reply(p: &Value, caller: &Caller) -> ReplyTo {
    if let Some(url) = p
        .get("response_url")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    {
        return ReplyTo::ResponseUrl {
            url: url.to_string(),
        };
    }
    if let Some(c) = p.pointer("/channel/id").and_then(Value::as_str) {
        return ReplyTo::Ephemeral {
            channel: c.to_string(),
            user: caller.user_id.clone(),
        };
    }
    ReplyTo::Channel {
        channel: caller.user_id.clone(),
    }
}

/// A button click: stored (keyed by who clicked what, when) before the acknowledgement, then
/// processed from the inbox, so a crash after the ack does not lose an approval and a replayed
/// delivery is acted on once.
/// One button click of a `block_actions` payload.
#[derive(Debug)]
struct Click {
    action_id: String,
    value: String,
    /// Per click: a replayed delivery carries the same one, a second click another.
    action_ts: String,
    trigger_id: String,
    reply: ReplyTo,
    from_home: bool,
    /// The message (or published Home view) the button was on: one extension per button each.
    anchor: String,
}

impl Click {
    /// The first action of the payload, if any.
    fn of(p: &Value, caller: &Caller) -> Option<Click> {
        let a = p.pointer("/actions/0")?;
        let str_of = |v: &Value, k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Some(Click {
            action_id: str_of(a, "action_id"),
            value: str_of(a, "value"),
            action_ts: str_of(a, "action_ts"),
            trigger_id: str_of(p, "trigger_id"),
            reply: click_reply(p, caller),
            from_home: p.pointer("/container/type").and_then(Value::as_str) == Some("view"),
            anchor: p
                .pointer("/container/message_ts")
                .or_else(|| p.pointer("/view/hash"))
                .or_else(|| p.pointer("/view/id"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// The delivery stored for this click.
    fn inbound(&self, caller: &Caller) -> Inbound {
        Inbound::Action {
            team_id: caller.workspace.clone(),
            enterprise_id: caller.enterprise_id.clone(),
            user_id: caller.user_id.clone(),
            user_name: caller.user_name.clone(),
            action_id: self.action_id.clone(),
            value: self.value.clone(),
            reply: self.reply.clone(),
            from_home: self.from_home,
            anchor: self.anchor.clone(),
        }
    }
}

async fn block_actions(st: &Shared, caller: &Caller, p: &Value) -> Response {
    let Some(click) = Click::of(p, caller) else {
        return StatusCode::OK.into_response();
    };
    if click.action_id == action::OPEN_MODAL {
        // A trigger_id expires three seconds after the click: a stored click could not use it
        // later, so the form is opened at once (losing it loses nothing the person said).
        let st = st.clone();
        tokio::spawn(async move { open_modal(&st, &click.trigger_id, None, click.reply).await });
        return StatusCode::OK.into_response();
    }
    let inbound = click.inbound(caller);
    let Click {
        action_id,
        action_ts,
        ..
    } = click;
    let key = if action_ts.is_empty() {
        format!("action:none:{}", uuid::Uuid::new_v4())
    } else {
        format!(
            "action:{}:{}:{action_ts}:{action_id}",
            caller.team_id, caller.user_id
        )
    };
    match enqueue_and_run(st, &key, &inbound).await {
        Ok(true) => StatusCode::OK.into_response(),
        Ok(false) => {
            tracing::info!(user = %caller.user_id, action_id, "repeated block_actions ignored (same click)");
            StatusCode::OK.into_response()
        }
        Err(e) => {
            // Not stored: Slack shows the person that the click failed, so they can click again.
            tracing::error!(action_id, error = %e, "could not store a Slack click");
            (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
        }
    }
}

/// Acts on a stored click; the text (if any) is the answer to the clicker alone. Fails
/// transiently only before anything changed (the profile lookups), so a retry is safe.
async fn click(
    st: &Shared,
    caller: &Caller,
    action_id: &str,
    value: &str,
    anchor: &str,
) -> Result<Option<String>, InboxError> {
    let e = &st.engine;
    let text = match action_id {
        action::APPROVE | action::DENY => {
            let Ok(id) = value.parse::<RequestId>() else {
                tracing::warn!(value, "approval button without a request id");
                return Ok(None);
            };
            match commands::check_approver(&st.api, &st.profiles, caller).await {
                Ok(()) => {}
                Err(commands::ProfileError::Transient(m)) => return Err(InboxError::Transient(m)),
                Err(commands::ProfileError::Refused(msg)) => {
                    return Ok(Some(format!(":no_entry: {msg} Nothing was changed.")));
                }
            }
            let result = if action_id == action::APPROVE {
                e.approve(id, caller.actor()).await
            } else {
                e.deny(id, caller.actor(), None).await
            };
            // Success shows in the updated approval message (the engine's notification job);
            // only refusals need a word, to the clicker alone.
            result.err().map(|err| decision_refusal(&err))
        }
        action::REVOKE => Some(match value.parse::<GrantId>() {
            Ok(id) => match e.revoke_grant(id, caller.actor()).await {
                Ok(g) => format!("Your access to {} is being revoked.", g.resource),
                Err(err) => err.to_string(),
            },
            Err(_) => "That button no longer works; use `/access revoke <resource>`.".into(),
        }),
        action::CANCEL => Some(match value.parse::<RequestId>() {
            Ok(id) => match e.cancel(id, caller.actor()).await {
                Ok(r) => format!("Cancelled your request for {}.", r.resource),
                Err(err) => err.to_string(),
            },
            Err(_) => "That button no longer works; use `/access cancel <resource>`.".into(),
        }),
        action::EXTEND => {
            // The profile first: a transient failure must be retried before the click is
            // remembered, or the retry would be taken for a double click.
            if let Err(commands::ProfileError::Transient(m)) =
                commands::lookup_subject(&st.api, &st.profiles, caller).await
            {
                return Err(InboxError::Transient(m));
            }
            // A double click must not extend twice: one extension per button per message (or
            // per published Home view).
            let key = format!(
                "slack-click:{}/{}:extend:{value}:{anchor}",
                caller.team_id, caller.user_id
            );
            match e.remember_once(&key).await {
                Ok(false) => Some(format!(
                    "You already asked to extend {value} from this message."
                )),
                _ => {
                    let cmd = Command::Extend {
                        resource: value.to_string(),
                        duration: None,
                        justification: None,
                    };
                    Some(commands::execute(st.ctx(), caller, Surface::Access, cmd).await)
                }
            }
        }
        other => match crate::emergency::outcome_of(other) {
            // Break-glass notice: Reviewed / Revoke now.
            Some(outcome) => crate::emergency::click(st.ctx(), caller, outcome, value).await?,
            None => {
                tracing::debug!(action_id = other, "ignored action");
                None
            }
        },
    };
    Ok(text)
}

/// The ephemeral text for a click that did not count.
fn decision_refusal(e: &EngineError) -> String {
    match e {
        EngineError::AlreadyDecided { .. }
        | EngineError::PendingExpired { .. }
        | EngineError::AlreadyVoted
        | EngineError::AlreadyApprovedCannotDeny
        | EngineError::NotApprover(_) => {
            format!(":no_entry: {e} Nothing was changed.")
        }
        other => other.to_string(),
    }
}

fn state_value(p: &Value, block: &str) -> Option<String> {
    let v = p.pointer(&format!(
        "/view/state/values/{block}/{}",
        modal_block::VALUE
    ))?;
    v.pointer("/selected_option/value")
        .or_else(|| v.get("value"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn field_block(f: Field) -> &'static str {
    match f {
        Field::Resource => modal_block::RESOURCE,
        Field::Duration => modal_block::DURATION,
        Field::Justification => modal_block::JUSTIFICATION,
    }
}

fn modal_errors(f: Field, msg: &str) -> Response {
    let mut errors = serde_json::Map::new();
    errors.insert(field_block(f).to_string(), json!(msg));
    axum::Json(json!({"response_action": "errors", "errors": errors})).into_response()
}

/// `slack-view:<team>/<user>:<view id>:<sha256 of the submitted values>`, when the view has an id.
fn view_replay_key(p: &Value, caller: &Caller) -> Option<String> {
    use sha2::{Digest, Sha256};
    let view_id = p
        .pointer("/view/id")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())?;
    let values = p
        .pointer("/view/state/values")
        .map(Value::to_string)
        .unwrap_or_default();
    let digest = hex::encode(Sha256::digest(values.as_bytes()));
    Some(format!(
        "slack-view:{}/{}:{view_id}:{digest}",
        caller.team_id, caller.user_id
    ))
}

/// What the request form said (raw, as typed), if the payload is the request form's.
#[derive(Debug)]
struct FormValues {
    resource: String,
    duration: Option<String>,
    justification: String,
}

impl FormValues {
    fn of(p: &Value) -> Option<FormValues> {
        if p.pointer("/view/callback_id").and_then(Value::as_str) != Some(blocks::MODAL_CALLBACK_ID)
        {
            return None;
        }
        Some(FormValues {
            resource: state_value(p, modal_block::RESOURCE).unwrap_or_default(),
            duration: state_value(p, modal_block::DURATION),
            justification: state_value(p, modal_block::JUSTIFICATION).unwrap_or_default(),
        })
    }

    /// The delivery stored for this submission (after the precheck passed).
    fn inbound(self, caller: &Caller) -> Inbound {
        Inbound::Submission {
            team_id: caller.workspace.clone(),
            enterprise_id: caller.enterprise_id.clone(),
            user_id: caller.user_id.clone(),
            user_name: caller.user_name.clone(),
            resource: self.resource,
            duration: self.duration,
            justification: self.justification,
        }
    }
}

async fn view_submission(st: &Shared, caller: Caller, p: &Value) -> Response {
    let Some(form) = FormValues::of(p) else {
        return StatusCode::OK.into_response();
    };
    let FormValues {
        resource,
        duration,
        justification,
    } = &form;
    let raw = RawSubmission::new(resource.as_str(), duration.clone(), justification.as_str());
    if let Err(e) = st.engine.validate(&raw) {
        return modal_errors(e.field(), &e.to_string());
    }
    // Stored before anything is done or acknowledged: a crash, or a Slack call failing
    // transiently, cannot lose it. A signed delivery replayed within the five-minute window
    // passes verification. The view id stays the same when a person corrects a refused form and
    // submits again, so the key is the view id and what was submitted: the same view with the
    // same answers is acted on once.
    let key = view_replay_key(p, &caller)
        .unwrap_or_else(|| format!("slack-view:none:{}", uuid::Uuid::new_v4()));
    let inbound = form.inbound(&caller);
    // Within the budget, problems go back into the form; after it, the form closes and the
    // outcome arrives by DM (from the job).
    let (tx, rx) = tokio::sync::oneshot::channel();
    waiters().insert(key.clone(), tx);
    match enqueue_and_run(st, &key, &inbound).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(user = %caller.user_id, "repeated view_submission ignored (same view and values)");
            return StatusCode::OK.into_response();
        }
        Err(e) => {
            waiters().remove(&key);
            tracing::warn!(error = %e, "could not store the view submission");
            return modal_errors(
                Field::Resource,
                "Something went wrong on our side. Please try again.",
            );
        }
    }
    match await_answer(st, &key, rx).await {
        Some(Answer::Form(Err((f, msg)))) => modal_errors(f, &msg),
        _ => StatusCode::OK.into_response(),
    }
}

// ------------------------------------------------------------------------------------------------
// Events API

async fn events_endpoint(State(st): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("body is not JSON");
    };
    match v.get("type").and_then(Value::as_str) {
        Some("url_verification") => {
            let challenge = v
                .get("challenge")
                .and_then(Value::as_str)
                .unwrap_or_default();
            axum::Json(json!({"challenge": challenge})).into_response()
        }
        Some("event_callback") => {
            let event_id = v
                .get("event_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let retry = headers
                .get("x-slack-retry-num")
                .and_then(|h| h.to_str().ok())
                .map(str::to_string);
            let Some(inbound) = Inbound::of_event(&v) else {
                // Nothing to act on (a bot's message, an edit, an event we do not handle).
                log_event(&v);
                return StatusCode::OK.into_response();
            };
            // Only events that would be stored and acted on take a token: the bot's own DMs
            // echo back as events and must not use up the workspace's budget.
            let team_id = v.get("team_id").and_then(Value::as_str).unwrap_or_default();
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
            match enqueue_and_run(&st, &key, &inbound).await {
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
        Some("app_rate_limited") => {
            // The envelope carries the legacy verification token: log only the numbers.
            let minute = v
                .get("minute_rate_limited")
                .and_then(Value::as_i64)
                .unwrap_or_default();
            tracing::warn!(
                minute_rate_limited = minute,
                "Slack is rate limiting events to this app"
            );
            StatusCode::OK.into_response()
        }
        _ => StatusCode::OK.into_response(),
    }
}

/// Events that need no work, only a log line.
fn log_event(envelope: &Value) {
    let team_id = envelope
        .get("team_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match envelope.pointer("/event/type").and_then(Value::as_str) {
        Some("app_uninstalled") => {
            tracing::warn!(
                team_id,
                "Gatehouse was uninstalled from a workspace; its bot token no longer works"
            );
        }
        Some("tokens_revoked") => {
            let tokens = envelope
                .pointer("/event/tokens")
                .cloned()
                .unwrap_or_default();
            tracing::warn!(team_id, tokens = %tokens, "Slack tokens revoked");
        }
        _ => {}
    }
}

// ------------------------------------------------------------------------------------------------
// Durable inbox: what a person said is stored as a job before Slack is acknowledged, then
// processed from the queue (at once by this process, or after a crash by any replica), retried
// when Slack fails transiently, at most once per Slack id.

/// A stored delivery, reduced to what processing needs: no envelope, no verification token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Inbound {
    /// A person wrote to the bot.
    DirectMessage {
        team_id: String,
        enterprise_id: Option<String>,
        user_id: String,
        channel: String,
        text: String,
    },
    /// A person opened the App Home tab.
    HomeOpened {
        team_id: String,
        enterprise_id: Option<String>,
        user_id: String,
    },
    /// A slash command (its text is parsed again when processed).
    Command {
        team_id: String,
        enterprise_id: Option<String>,
        user_id: String,
        user_name: String,
        /// `/access`, `/gcp-access`, …
        command: String,
        text: String,
        /// Where a late answer goes (response_url: needed to answer, valid 30 minutes).
        reply: ReplyTo,
    },
    /// A button click (approve, deny, revoke, cancel, extend).
    Action {
        team_id: String,
        enterprise_id: Option<String>,
        user_id: String,
        user_name: String,
        action_id: String,
        /// The button's value: a request id, a grant id or a resource.
        value: String,
        /// Where the answer to the clicker goes.
        reply: ReplyTo,
        /// Clicked in the App Home (which is published again afterwards).
        from_home: bool,
        /// The message or Home view the button was on.
        anchor: String,
    },
    /// A request form (modal) submission, its values already prechecked.
    Submission {
        team_id: String,
        enterprise_id: Option<String>,
        user_id: String,
        user_name: String,
        resource: String,
        duration: Option<String>,
        justification: String,
    },
    /// An answer whose command already ran but which Slack did not take at first.
    Reply {
        team_id: String,
        enterprise_id: Option<String>,
        to: ReplyTo,
        text: String,
    },
}

impl Inbound {
    /// The part of an `event_callback` envelope worth storing, if any.
    fn of_event(envelope: &Value) -> Option<Inbound> {
        let event = envelope.get("event")?;
        let str_of = |k: &str| {
            event
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let team_id = envelope
            .get("team_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let enterprise_id = envelope
            .get("enterprise_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        match event.get("type").and_then(Value::as_str) {
            Some("app_home_opened") if str_of("tab") != "messages" => Some(Inbound::HomeOpened {
                team_id,
                enterprise_id,
                user_id: str_of("user"),
            }),
            Some("message") => {
                // Only people writing to the bot: no bot messages (ours included), no edits or joins.
                let is_im = str_of("channel_type") == "im" || str_of("channel").starts_with('D');
                if !is_im
                    || event.get("bot_id").is_some()
                    || event.get("subtype").is_some()
                    || str_of("user").is_empty()
                {
                    return None;
                }
                Some(Inbound::DirectMessage {
                    team_id,
                    enterprise_id,
                    user_id: str_of("user"),
                    channel: str_of("channel"),
                    text: str_of("text"),
                })
            }
            _ => None,
        }
    }
}

const INBOX_SOURCE: &str = "slack";

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
/// stored (a slash command's `request` is prechecked against the catalogue first, which this does
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
            match p.get("type").and_then(Value::as_str) {
                Some("block_actions") => Click::of(&p, &caller)
                    .filter(|c| c.action_id != action::OPEN_MODAL)
                    .map(|c| c.inbound(&caller)),
                Some("view_submission") => {
                    // The replay key is computed from the payload too.
                    let _ = view_replay_key(&p, &caller);
                    FormValues::of(&p).map(|f| f.inbound(&caller))
                }
                _ => None,
            }
        }
        Endpoint::Events => {
            let v = serde_json::from_slice::<Value>(body).map_err(|_| "body is not JSON")?;
            match v.get("type").and_then(Value::as_str) {
                Some("event_callback") => {
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

/// Stores `inbound` under `key` (once) and starts processing it in this process. Returns false
/// for a replay (already stored).
async fn enqueue_and_run(st: &Shared, key: &str, inbound: &Inbound) -> Result<bool, EngineError> {
    let payload = serde_json::to_string(inbound).map_err(|e| {
        EngineError::Store(access_core::ports::StoreError::corrupt_because(
            "inbound", e,
        ))
    })?;
    let item = InboxItem {
        source: INBOX_SOURCE.into(),
        key: key.to_string(),
        payload,
    };
    // Stored already claimed by this process, which runs it at once (no claim round trip).
    let Some(job) = st.engine.enqueue_inbox_claimed(item).await? else {
        return Ok(false);
    };
    let engine = st.engine.clone();
    tokio::spawn(async move {
        let id = job.id;
        if let Err(e) = engine.run_claimed(job).await {
            // The job stays in the queue; a scheduler runs it once the claim lapses.
            tracing::warn!(job = %id, error = %e, "could not run a stored Slack delivery now");
        }
    });
    Ok(true)
}

/// Processes stored Slack deliveries ([`access_core::jobs::JobKind::Inbox`]).
#[derive(Debug)]
struct SlackInbox {
    st: Shared,
}

#[async_trait::async_trait]
impl InboxHandler for SlackInbox {
    async fn handle(&self, item: &InboxItem) -> Result<(), InboxError> {
        if item.source != INBOX_SOURCE {
            return Err(InboxError::Permanent(format!(
                "not a Slack delivery: {}",
                item.source
            )));
        }
        let inbound: Inbound = serde_json::from_str(&item.payload)
            .map_err(|e| InboxError::Permanent(format!("unreadable Slack delivery: {e}")))?;
        process(&self.st, &item.key, inbound).await
    }
}

/// The person writing from `workspace`, keyed within `scope` (see [`for_team`]).
fn scoped_caller(
    scope: String,
    workspace: &str,
    enterprise_id: &Option<String>,
    user_id: String,
    user_name: String,
) -> Caller {
    Caller {
        team_id: scope,
        user_id,
        user_name,
        workspace: workspace.to_string(),
        enterprise_id: enterprise_id.clone().filter(|e| !e.is_empty()),
    }
}

/// Runs one stored delivery. Safe to run again after an `Err(Transient)`: a command runs only
/// after every call that may fail transiently before it succeeded, and its answer, once the
/// command ran, is stored as a [`Inbound::Reply`] of its own if Slack does not take it.
async fn process(st: &Shared, key: &str, inbound: Inbound) -> Result<(), InboxError> {
    match inbound {
        Inbound::HomeOpened {
            team_id,
            enterprise_id,
            user_id,
        } => {
            let (st, scope) = for_team(st, &team_id, enterprise_id.as_deref()).await;
            let caller = scoped_caller(scope, &team_id, &enterprise_id, user_id, String::new());
            publish_home(&st, &caller).await;
            Ok(())
        }
        Inbound::DirectMessage {
            team_id,
            enterprise_id,
            user_id,
            channel,
            text,
        } => {
            let (st, scope) = for_team(st, &team_id, enterprise_id.as_deref()).await;
            let st = &st;
            let caller = scoped_caller(scope, &team_id, &enterprise_id, user_id, String::new());
            let answer = match grammar::parse(&text, Surface::DirectMessage) {
                Ok(cmd) => {
                    if needs_profile(&cmd)
                        && let Err(commands::ProfileError::Transient(m)) =
                            commands::lookup_subject(&st.api, &st.profiles, &caller).await
                    {
                        return Err(InboxError::Transient(m));
                    }
                    commands::execute(st.ctx(), &caller, Surface::DirectMessage, cmd).await
                }
                Err(e) => e.to_string(),
            };
            let to = ReplyTo::Channel { channel };
            answer_later(st, key, team_id, enterprise_id, to, answer).await
        }
        Inbound::Command {
            team_id,
            enterprise_id,
            user_id,
            user_name,
            command,
            text,
            reply,
        } => {
            let (st, scope) = for_team(st, &team_id, enterprise_id.as_deref()).await;
            let st = &st;
            let surface = Surface::from_command(&command).unwrap_or(Surface::Access);
            let caller = scoped_caller(scope, &team_id, &enterprise_id, user_id, user_name);
            let answer = match grammar::parse(&text, surface) {
                Ok(cmd) => {
                    if needs_profile(&cmd)
                        && let Err(commands::ProfileError::Transient(m)) =
                            commands::lookup_subject(&st.api, &st.profiles, &caller).await
                    {
                        return Err(InboxError::Transient(m));
                    }
                    commands::execute(st.ctx(), &caller, surface, cmd).await
                }
                Err(e) => e.to_string(),
            };
            // The acknowledgement still waiting for it carries the answer; else it is posted.
            let answer = match waiters().hand_over(key, Answer::Text(answer)) {
                None => return Ok(()),
                Some(Answer::Text(answer)) => answer,
                Some(Answer::Form(_)) => return Ok(()),
            };
            answer_later(st, key, team_id, enterprise_id, reply, answer).await
        }
        Inbound::Action {
            team_id,
            enterprise_id,
            user_id,
            user_name,
            action_id,
            value,
            reply,
            from_home,
            anchor,
        } => {
            let (st, scope) = for_team(st, &team_id, enterprise_id.as_deref()).await;
            let st = &st;
            let caller = scoped_caller(scope, &team_id, &enterprise_id, user_id, user_name);
            let text = click(st, &caller, &action_id, &value, &anchor).await?;
            if from_home {
                publish_home(st, &caller).await;
            }
            match text {
                Some(t) => answer_later(st, key, team_id, enterprise_id, reply, t).await,
                None => Ok(()),
            }
        }
        Inbound::Submission {
            team_id,
            enterprise_id,
            user_id,
            user_name,
            resource,
            duration,
            justification,
        } => {
            let (st, scope) = for_team(st, &team_id, enterprise_id.as_deref()).await;
            let st = &st;
            let caller = scoped_caller(scope, &team_id, &enterprise_id, user_id, user_name);
            let outcome = match commands::lookup_person(&st.api, &st.profiles, &caller).await {
                Err(commands::ProfileError::Transient(m)) => return Err(InboxError::Transient(m)),
                Err(commands::ProfileError::Refused(msg)) => Err((Field::Resource, msg)),
                Ok((subject, membership)) => {
                    match commands::admit_requester(&st.engine, &resource, membership) {
                        Err(msg) => Err((Field::Resource, msg)),
                        Ok(()) => {
                            let raw = RawSubmission::new(resource, duration, justification);
                            match st.engine.validate(&raw) {
                                Err(e) => Err((e.field(), e.to_string())),
                                Ok(valid) => st
                                    .engine
                                    .submit(Submission::new(subject, valid))
                                    .await
                                    .map(|_| ())
                                    .map_err(|e| (Field::Resource, e.to_string())),
                            }
                        }
                    }
                }
            };
            // The acknowledgement still waiting shows a refusal in the form; after it, by DM.
            match waiters().hand_over(key, Answer::Form(outcome)) {
                Some(Answer::Form(Err((_, msg)))) => {
                    let to = ReplyTo::Channel {
                        channel: caller.user_id.clone(),
                    };
                    answer_later(st, key, team_id, enterprise_id, to, msg).await
                }
                _ => Ok(()),
            }
        }
        Inbound::Reply {
            team_id,
            enterprise_id,
            to,
            text,
        } => {
            let (st, _) = for_team(st, &team_id, enterprise_id.as_deref()).await;
            match try_send_reply(&st.api, &to, &text).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_transient() => Err(InboxError::Transient(e.to_string())),
                Err(e) => Err(InboxError::Permanent(e.to_string())),
            }
        }
    }
}

/// Commands that read the caller's profile (`users.info`) before acting.
fn needs_profile(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::Request { .. }
            | Command::Extend { .. }
            | Command::List
            | Command::EmergencyRequest { .. }
    )
}

/// Posts the answer of a command that already ran; when Slack does not take it now, stores it as
/// a job of its own (retried with backoff) instead of failing the command's job, which would run
/// the command again.
async fn answer_later(
    st: &Shared,
    key: &str,
    team_id: String,
    enterprise_id: Option<String>,
    to: ReplyTo,
    text: String,
) -> Result<(), InboxError> {
    match try_send_reply(&st.api, &to, &text).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "could not post an answer; keeping it for a retry");
            let reply = Inbound::Reply {
                team_id,
                enterprise_id,
                to,
                text,
            };
            enqueue_and_run(st, &format!("{key}:reply"), &reply)
                .await
                .map(|_| ())
                .map_err(|e| InboxError::Transient(e.to_string()))
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not deliver a reply to Slack");
            Ok(())
        }
    }
}

async fn publish_home(st: &Shared, caller: &Caller) {
    let status = match st.engine.status(&caller.key()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "could not read status for App Home");
            return;
        }
    };
    let catalog = st.engine.catalog();
    let extendable = |r: &str| catalog.get(r).is_some_and(|r| r.extendable);
    let view = blocks::home_view(
        &status.grants,
        &status.pending,
        &extendable,
        st.engine.now(),
    );
    if let Err(e) = st.api.views_publish(&caller.user_id, &view).await {
        tracing::warn!(error = %e, "views.publish failed");
    }
}
