//! Break-glass from Slack: `request <resource> [duration] --emergency <justification>` and the
//! Reviewed / Revoke now buttons of the notice (`docs/break-glass.md`).

use access_core::emergency::ReviewOutcome;
use access_core::engine::{EngineError, Submission};
use access_core::ports::InboxError;
use access_core::submission::RawSubmission;
use access_core::{AccessRequest, RequestId};

use crate::blocks::Action;
use crate::commands::{self, Caller, Ctx};

/// Files a break-glass request for the caller: what was typed is validated first (no I/O),
/// then their profile is read, guests and external people are held to the resource's
/// `allow_guests` / `allow_external` as for any request, and the engine grants at once (or
/// refuses, granting nothing).
pub async fn submit(ctx: Ctx<'_>, caller: &Caller, raw: &RawSubmission) -> String {
    let valid = match ctx.engine.validate_emergency(raw) {
        Ok(v) => v,
        Err(e) => return refusal_text(e.into()),
    };
    let (subject, membership) = match commands::resolve_person(ctx.api, ctx.profiles, caller).await
    {
        Ok(s) => s,
        Err(msg) => return msg,
    };
    if let Err(msg) = commands::admit_requester(ctx.engine, valid.resource().as_str(), membership) {
        return msg;
    }
    match ctx
        .engine
        .submit_emergency(Submission::new(subject, valid))
        .await
    {
        Ok(r) => granted_text(&r),
        Err(e) => refusal_text(e),
    }
}

/// The answer to a break-glass request that was refused.
pub(crate) fn refusal_text(e: EngineError) -> String {
    match e {
        e @ EngineError::EmergencyNotAllowed { .. } => format!(":no_entry: {e}"),
        e => e.to_string(),
    }
}

/// The answer to a break-glass request that was granted.
pub fn granted_text(r: &AccessRequest) -> String {
    format!(
        ":rotating_light: Break-glass access to {} for {} granted without approval. Setting it up \
         now; I'll message you with how to use it. The approvers and security have been alerted \
         and will review this access.",
        r.resource,
        r.duration.human()
    )
}

/// The outcome a notice button stands for, if `action` is one of them.
pub fn outcome_of(action: Action) -> Option<ReviewOutcome> {
    match action {
        Action::EmergencyReviewed => Some(ReviewOutcome::Reviewed),
        Action::EmergencyRevoke => Some(ReviewOutcome::Revoked),
        _ => None,
    }
}

/// A click on Reviewed or Revoke now. Success shows in the updated notices; refusals go to the
/// clicker alone. Fails transiently only before anything changed (the profile lookup).
pub async fn click(
    ctx: Ctx<'_>,
    caller: &Caller,
    outcome: ReviewOutcome,
    value: &str,
) -> Result<Option<String>, InboxError> {
    let Ok(id) = value.parse::<RequestId>() else {
        tracing::warn!(value, "break-glass review button without a request id");
        return Ok(None);
    };
    match commands::check_approver(ctx.api, ctx.profiles, caller).await {
        Ok(()) => {}
        Err(commands::ProfileError::Transient(m)) => return Err(InboxError::Transient(m)),
        Err(commands::ProfileError::Refused(msg)) => {
            return Ok(Some(format!(":no_entry: {msg} Nothing was changed.")));
        }
    }
    Ok(
        match ctx
            .engine
            .review_emergency(id, caller.actor(), outcome)
            .await
        {
            Ok(_) => None,
            Err(
                e @ (EngineError::SelfReview
                | EngineError::NotApprover(_)
                | EngineError::AlreadyReviewed { .. }
                | EngineError::NotEmergency(_)),
            ) => Some(format!(":no_entry: {e} Nothing was changed.")),
            Err(e) => Some(e.to_string()),
        },
    )
}
