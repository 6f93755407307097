//! `view_submission` of the request form: values read from the typed view state, validated
//! against the catalogue (problems go back into the form), then stored as an inbox job whose
//! outcome the acknowledgement shows while the budget lasts.

use access_core::submission::RawSubmission;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ack::{Answer, await_answer};
use super::inbox::{Inbound, SubmissionDelivery, enqueue_and_run_answering};
use super::{Shared, blocks};
use crate::blocks::modal_block;
use crate::commands::{Caller, Field};
use crate::payload::{Interaction, View};

fn field_block(f: Field) -> &'static str {
    match f {
        Field::Resource => modal_block::RESOURCE,
        Field::Duration => modal_block::DURATION,
        Field::Justification => modal_block::JUSTIFICATION,
    }
}

/// `{"response_action": "errors", "errors": {<block>: <message>}}`: the form stays open with the
/// message under the field.
#[derive(Debug, Serialize)]
struct FormErrors<'a> {
    // In this order, as the answer has always been written.
    errors: std::collections::BTreeMap<&'static str, &'a str>,
    response_action: &'static str,
}

pub(super) fn modal_errors(f: Field, msg: &str) -> Response {
    let errors = FormErrors {
        errors: [(field_block(f), msg)].into_iter().collect(),
        response_action: "errors",
    };
    axum::Json(errors).into_response()
}

/// `slack-view:<team>/<user>:<view id>:<sha256 of the submitted values>`, when the view has an id.
pub(super) fn view_replay_key(p: &Interaction, caller: &Caller) -> Option<String> {
    use sha2::{Digest, Sha256};
    let view = p.view.as_ref()?;
    let view_id = view.id.as_deref().filter(|v| !v.is_empty())?;
    let digest = hex::encode(Sha256::digest(view.values_json.as_bytes()));
    Some(format!(
        "slack-view:{}/{}:{view_id}:{digest}",
        caller.team_id, caller.user_id
    ))
}

/// What the request form said (raw, as typed), if the payload is the request form's.
#[derive(Debug)]
pub(super) struct FormValues {
    resource: String,
    duration: Option<String>,
    justification: String,
}

impl FormValues {
    pub(super) fn of(p: &Interaction) -> Option<FormValues> {
        let view: &View = p.view.as_ref()?;
        if view.callback_id.as_deref() != Some(blocks::MODAL_CALLBACK_ID) {
            return None;
        }
        let input = |block: &str| view.input(block, modal_block::VALUE);
        Some(FormValues {
            resource: input(modal_block::RESOURCE).unwrap_or_default(),
            duration: input(modal_block::DURATION),
            justification: input(modal_block::JUSTIFICATION).unwrap_or_default(),
        })
    }

    /// The delivery stored for this submission (after it validated).
    pub(super) fn inbound(self, caller: &Caller) -> Inbound {
        Inbound::Submission(SubmissionDelivery {
            team_id: caller.workspace.clone(),
            enterprise_id: caller.enterprise_id.clone(),
            user_id: caller.user_id.clone(),
            user_name: caller.user_name.clone(),
            resource: self.resource,
            duration: self.duration,
            justification: self.justification,
        })
    }
}

pub(super) async fn view_submission(st: &Shared, caller: Caller, p: &Interaction) -> Response {
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
    match enqueue_and_run_answering(st, &key, &inbound, Some(tx)).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(user = %caller.user_id, "repeated view_submission ignored (same view and values)");
            return StatusCode::OK.into_response();
        }
        Err(e) => {
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
