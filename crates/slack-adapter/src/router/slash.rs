//! `/slack/commands`: a slash command is answered at once when it needs nothing (help, the
//! request form, a refusal the catalogue decides), otherwise stored as an inbox job before the
//! acknowledgement; acknowledged with a receipt when its job must call Slack for the person's
//! profile first (the outcome then goes to response_url), else answered in the acknowledgement
//! when the job finishes within the budget.

use access_core::submission::RawSubmission;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ack::{Answer, await_answer};
use super::inbox::{CommandDelivery, Inbound, enqueue_and_run_answering, needs_profile};
use super::{ReplyTo, Shared, bad_request, blocks, busy_text, ephemeral_ack, for_team, send_reply};
use crate::blocks::escape;
use crate::commands::Caller;
use crate::grammar::{self, Command, Surface};

/// A slash command's form fields (external-apis.md A.2). Our own rather than slack-morphism's
/// `SlackCommandEvent`, which has no `enterprise_id` (Enterprise Grid routing needs it) nor
/// `user_name`, and requires `response_url` and `trigger_id` (docs/architecture.md).
#[derive(Debug, Deserialize)]
pub(super) struct SlashForm {
    #[serde(default)]
    team_id: String,
    user_id: String,
    #[serde(default)]
    user_name: String,
    #[serde(default)]
    channel_id: String,
    pub(super) command: String,
    #[serde(default)]
    pub(super) text: String,
    #[serde(default)]
    response_url: String,
    #[serde(default)]
    trigger_id: String,
    /// Set for Enterprise Grid workspaces.
    #[serde(default)]
    enterprise_id: String,
}

impl SlashForm {
    pub(super) fn read(body: &[u8]) -> Result<SlashForm, &'static str> {
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
    pub(super) fn inbound(&self) -> Inbound {
        Inbound::Command(CommandDelivery {
            team_id: self.team_id.clone(),
            enterprise_id: self.enterprise().map(str::to_string),
            user_id: self.user_id.clone(),
            user_name: self.user_name.clone(),
            command: self.command.clone(),
            text: self.text.clone(),
            reply: self.late_reply(),
        })
    }
}

pub(super) async fn commands_endpoint(State(st): State<Shared>, body: Bytes) -> Response {
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
            tokio::spawn(
                async move { open_modal(&st2, &caller, &form.trigger_id, None, late).await },
            );
            StatusCode::OK.into_response()
        }
        cmd => {
            // Refuse impossible requests at once, without calling anybody.
            let refused = match &cmd {
                Command::Request {
                    resource,
                    duration,
                    justification,
                } => st
                    .engine
                    .validate(&RawSubmission::new(
                        resource.as_str(),
                        duration.clone(),
                        justification.as_str(),
                    ))
                    .err()
                    .map(|e| e.to_string()),
                Command::EmergencyRequest {
                    resource,
                    duration,
                    justification,
                } => st
                    .engine
                    .validate_emergency(&RawSubmission::new(
                        resource.as_str(),
                        duration.clone(),
                        justification.as_str(),
                    ))
                    .err()
                    .map(|e| crate::emergency::refusal_text(e.into())),
                _ => None,
            };
            if let Some(refusal) = refused {
                return ephemeral_ack(&refusal);
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
            // The acknowledgement never waits for a remote call: a command that must read the
            // person's profile from Slack first (`users.info`, not cached yet) is answered with
            // a receipt as soon as it is stored, and its job posts the outcome to response_url.
            // Otherwise, within the budget the answer goes in the acknowledgement; after it, the
            // job posts it. Decided here, before the job exists, so each answer has one way out:
            // with no waiter registered the job always posts, with one it hands over (or posts
            // once the budget ran out and the waiter is gone).
            let receipt =
                (needs_profile(&cmd) && !st.profiles.holds(&caller)).then(|| receipt_text(&cmd));
            let (tx, rx) = tokio::sync::oneshot::channel();
            let waiter = receipt.is_none().then_some(tx);
            let answer = match enqueue_and_run_answering(&st, &key, &inbound, waiter).await {
                Ok(true) => match receipt {
                    Some(receipt) => Some(receipt),
                    None => match await_answer(&st, &key, rx).await {
                        Some(Answer::Text(text)) => Some(text),
                        _ => None,
                    },
                },
                Ok(false) => {
                    tracing::warn!(user = %caller.user_id, "repeated slash command ignored (same trigger_id)");
                    Some(
                        "This command was already received and handled; the repeat was ignored."
                            .to_string(),
                    )
                }
                Err(e) => {
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

/// What a command stored for later is acknowledged with: what was understood, and that the
/// answer follows (in the same place: response_url, or an ephemeral message in the channel).
/// Starts with [`RECEIPT_MARK`].
fn receipt_text(cmd: &Command) -> String {
    let what = |resource: &str, duration: &Option<String>| {
        let duration = duration
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| format!(" ({})", escape(d)))
            .unwrap_or_default();
        format!("*{}*{duration}", escape(resource.trim()))
    };
    let doing = match cmd {
        Command::Request {
            resource, duration, ..
        } => format!(
            "Got it — checking your request for {}.",
            what(resource, duration)
        ),
        Command::EmergencyRequest {
            resource, duration, ..
        } => format!(
            "Got it — checking your emergency request for {}.",
            what(resource, duration)
        ),
        Command::Extend {
            resource, duration, ..
        } => format!(
            "Got it — checking your extension of {}.",
            what(resource, duration)
        ),
        Command::List => "Looking up what you can request…".to_string(),
        _ => "Got it — working on it.".to_string(),
    };
    format!("{RECEIPT_MARK} {doing} The answer follows here in a moment.")
}

/// How every receipt begins (tests and the load benchmark tell a receipt from an answer by it).
pub const RECEIPT_MARK: &str = ":inbox_tray:";

/// Opens the request form for `caller`, then reads their profile into the cache while they fill
/// it in: the submission's acknowledgement, which must carry a refusal into the form
/// (`response_action: errors`), then has nothing remote left to wait for (docs/slack-app.md).
pub(super) async fn open_modal(
    st: &Shared,
    caller: &Caller,
    trigger_id: &str,
    preselect: Option<&str>,
    on_error: ReplyTo,
) {
    let view = blocks::request_modal(&st.engine.resources(), preselect);
    if let Err(e) = st.api.views_open(trigger_id, &view).await {
        tracing::warn!(error = %e, "views.open failed");
        send_reply(
            &st.api,
            &on_error,
            "I couldn't open the request form. Type `/access request <resource> [duration] <reason>` instead.",
        )
        .await;
        return;
    }
    // A failure here costs nothing: the submission's job reads the profile again.
    let _ = crate::commands::lookup_subject(&st.api, &st.profiles, caller).await;
}
