//! `/slack/interactions`: the `payload` is parsed once into [`Interaction`]; button clicks
//! (`block_actions`) are stored as inbox jobs before the acknowledgement and acted on from the
//! queue ([`click`]); form submissions go to [`super::views`].

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use access_core::engine::EngineError;
use access_core::ports::InboxError;
use access_core::{GrantId, RequestId};

use super::inbox::{ActionDelivery, Inbound, enqueue_and_run};
use super::slash::open_modal;
use super::views::{modal_errors, view_submission};
use super::{ReplyTo, Shared, bad_request, busy_text, for_team, too_many_requests};
use crate::blocks::Action;
use crate::commands::{self, Caller, Field};
use crate::grammar::{Command, Surface};
use crate::payload::{Interaction, InteractionKind};

#[derive(Debug, Deserialize)]
struct InteractionForm {
    payload: String,
}

/// Who sent the interaction, if the payload names a user.
fn caller_of(p: &Interaction) -> Option<Caller> {
    let user = p.user.as_ref()?;
    let user_id = user.id.clone()?;
    let team_id = p
        .team
        .as_ref()
        .and_then(|t| t.id.clone())
        .or_else(|| user.team_id.clone())
        .unwrap_or_default();
    let user_name = user
        .name
        .clone()
        .or_else(|| user.username.clone())
        .unwrap_or_default();
    Some(Caller {
        workspace: team_id.clone(),
        team_id,
        user_id,
        user_name,
        enterprise_id: p.enterprise_id().map(str::to_string),
    })
}

/// The interaction payload and who sent it, or why the body is refused.
pub(super) fn read_interaction(body: &[u8]) -> Result<(Interaction, Caller), &'static str> {
    let form =
        serde_urlencoded::from_bytes::<InteractionForm>(body).map_err(|_| "missing payload")?;
    let p = Interaction::parse(&form.payload).map_err(|_| "payload is not JSON")?;
    let caller = caller_of(&p).ok_or("payload has no user")?;
    Ok((p, caller))
}

pub(super) async fn interactions_endpoint(State(st): State<Shared>, body: Bytes) -> Response {
    let (p, mut caller) = match read_interaction(&body) {
        Ok(x) => x,
        Err(why) => return bad_request(why),
    };
    if let Err(wait) = st.config.workspace_limiter.try_acquire(&caller.workspace) {
        tracing::warn!(team_id = %caller.workspace, "workspace rate limit: interaction refused");
        return match p.kind() {
            // The form stays open with the reason under its first field; submitting again works
            // once the workspace has room.
            InteractionKind::ViewSubmission => modal_errors(Field::Resource, &busy_text(wait)),
            // Slack does not retry interactions: a 429 shows the person the click failed, so
            // they click again later.
            _ => too_many_requests(wait),
        };
    }
    let enterprise = p.enterprise.as_ref().and_then(|e| e.id.as_deref());
    let (st, scope) = for_team(&st, &caller.team_id, enterprise).await;
    caller.team_id = scope;
    match p.kind() {
        InteractionKind::BlockActions => block_actions(&st, &caller, &p).await,
        InteractionKind::ViewSubmission => view_submission(&st, caller, &p).await,
        InteractionKind::Other => StatusCode::OK.into_response(),
    }
}

/// Where the answer to a click goes: the message's response_url (ephemeral, the original stays),
/// or for App Home buttons a DM.
fn click_reply(p: &Interaction, caller: &Caller) -> ReplyTo {
    if let Some(url) = p.response_url.as_ref().filter(|u| !u.is_empty()) {
        return ReplyTo::ResponseUrl { url: url.clone() };
    }
    if let Some(c) = p.channel.as_ref().and_then(|c| c.id.clone()) {
        return ReplyTo::Ephemeral {
            channel: c,
            user: caller.user_id.clone(),
        };
    }
    ReplyTo::Channel {
        channel: caller.user_id.clone(),
    }
}

/// One button click of a `block_actions` payload.
#[derive(Debug)]
pub(super) struct Click {
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
    pub(super) fn of(p: &Interaction, caller: &Caller) -> Option<Click> {
        let a = p.first_action()?;
        let container = p.container.as_ref();
        let view = p.view.as_ref();
        Some(Click {
            action_id: a.action_id.clone(),
            value: a.value.clone(),
            action_ts: a.action_ts.clone(),
            trigger_id: p.trigger_id.clone(),
            reply: click_reply(p, caller),
            from_home: container.is_some_and(|c| c.kind == "view"),
            anchor: container
                .and_then(|c| c.message_ts.clone())
                .or_else(|| view.and_then(|v| v.hash.clone()))
                .or_else(|| view.and_then(|v| v.id.clone()))
                .unwrap_or_default(),
        })
    }

    /// The button that opens the request form (acted on at once, never stored).
    pub(super) fn opens_form(&self) -> bool {
        Action::parse(&self.action_id) == Some(Action::OpenModal)
    }

    /// The delivery stored for this click.
    pub(super) fn inbound(&self, caller: &Caller) -> Inbound {
        Inbound::Action(ActionDelivery {
            team_id: caller.workspace.clone(),
            enterprise_id: caller.enterprise_id.clone(),
            user_id: caller.user_id.clone(),
            user_name: caller.user_name.clone(),
            action_id: self.action_id.clone(),
            value: self.value.clone(),
            reply: self.reply.clone(),
            from_home: self.from_home,
            anchor: self.anchor.clone(),
        })
    }
}

/// A button click: stored (keyed by who clicked what, when) before the acknowledgement, then
/// processed from the inbox, so a crash after the ack does not lose an approval and a replayed
/// delivery is acted on once.
async fn block_actions(st: &Shared, caller: &Caller, p: &Interaction) -> Response {
    let Some(click) = Click::of(p, caller) else {
        return StatusCode::OK.into_response();
    };
    if click.opens_form() {
        // A trigger_id expires three seconds after the click: a stored click could not use it
        // later, so the form is opened at once (losing it loses nothing the person said).
        let st = st.clone();
        let caller = caller.clone();
        tokio::spawn(async move {
            open_modal(&st, &caller, &click.trigger_id, None, click.reply).await
        });
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
pub(super) async fn click(
    st: &Shared,
    caller: &Caller,
    action_id: &str,
    value: &str,
    anchor: &str,
) -> Result<Option<String>, InboxError> {
    let Some(action) = Action::parse(action_id) else {
        tracing::debug!(action_id, "ignored action");
        return Ok(None);
    };
    match action {
        Action::Approve | Action::Deny => decide(st, caller, action, value).await,
        Action::Revoke => Ok(Some(revoke(st, caller, value).await)),
        Action::Cancel => Ok(Some(cancel(st, caller, value).await)),
        Action::Extend => extend(st, caller, value, anchor).await,
        Action::EmergencyReviewed | Action::EmergencyRevoke | Action::OpenModal => {
            match crate::emergency::outcome_of(action) {
                // Break-glass notice: Reviewed / Revoke now.
                Some(outcome) => crate::emergency::click(st.ctx(), caller, outcome, value).await,
                None => {
                    tracing::debug!(action_id, "ignored action");
                    Ok(None)
                }
            }
        }
    }
}

/// Approve or Deny on an approval message.
async fn decide(
    st: &Shared,
    caller: &Caller,
    action: Action,
    value: &str,
) -> Result<Option<String>, InboxError> {
    let e = &st.engine;
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
    let result = if action == Action::Approve {
        e.approve(id, caller.actor()).await
    } else {
        e.deny(id, caller.actor(), None).await
    };
    // Success shows in the updated approval message (the engine's notification job);
    // only refusals need a word, to the clicker alone.
    Ok(result.err().map(|err| decision_refusal(&err)))
}

/// Revoke on a grant (DM or App Home).
async fn revoke(st: &Shared, caller: &Caller, value: &str) -> String {
    match value.parse::<GrantId>() {
        Ok(id) => match st.engine.revoke_grant(id, caller.actor()).await {
            Ok(g) => format!("Your access to {} is being revoked.", g.resource),
            Err(err) => err.to_string(),
        },
        Err(_) => "That button no longer works; use `/access revoke <resource>`.".into(),
    }
}

/// Cancel on a pending request (App Home).
async fn cancel(st: &Shared, caller: &Caller, value: &str) -> String {
    match value.parse::<RequestId>() {
        Ok(id) => match st.engine.cancel(id, caller.actor()).await {
            Ok(r) => format!("Cancelled your request for {}.", r.resource),
            Err(err) => err.to_string(),
        },
        Err(_) => "That button no longer works; use `/access cancel <resource>`.".into(),
    }
}

/// Extend on a reminder or in the App Home: once per button per message.
async fn extend(
    st: &Shared,
    caller: &Caller,
    value: &str,
    anchor: &str,
) -> Result<Option<String>, InboxError> {
    let e = &st.engine;
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
    Ok(match e.remember_once(&key).await {
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
    })
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
