//! The break-glass notice posted to the approvers' and security channels, before and after its
//! review.

use chrono::{DateTime, Utc};

use access_core::emergency::{EmergencyReview, ReviewOutcome};
use access_core::notification::RequestSummary;

use super::kit::{self, Style};
use super::{Action, Message, actions, button, context, escape, section, slack_date};

/// The notice of an emergency grant: loud (`@here`) with Reviewed and Revoke now buttons while
/// unreviewed; once reviewed, who did what and when, without buttons (and without `@here`, so
/// the update does not ping again).
pub fn emergency_notice(
    r: &RequestSummary,
    expires_at: DateTime<Utc>,
    review: Option<&EmergencyReview>,
) -> Message {
    let id = r.id.to_string();
    let fields = format!(
        "*User:* {}\n*Resource:* {}\n*Duration:* {} (until {})\n*Justification:* {}",
        r.subject.mention(),
        r.resource,
        r.duration.human(),
        slack_date(expires_at),
        escape(&r.justification)
    );
    let (text, head, footer) = match review {
        None => (
            format!(
                "BREAK-GLASS: {} took emergency access to {} for {} without approval; review needed",
                r.subject.mention(),
                r.resource,
                r.duration.human()
            ),
            ":rotating_light: <!here> *BREAK-GLASS ACCESS: granted without approval, review needed*"
                .to_string(),
            "Granted at once under the emergency policy of this resource. An approver must review \
             it: *Reviewed* if it was justified, *Revoke now* to end it."
                .to_string(),
        ),
        Some(rv) => match rv.outcome {
            ReviewOutcome::Reviewed => (
                format!(
                    "Break-glass access of {} to {} reviewed by {}",
                    r.subject.mention(),
                    r.resource,
                    rv.by.mention()
                ),
                ":white_check_mark: *BREAK-GLASS ACCESS - REVIEWED*".to_string(),
                format!("Reviewed by {} on {}", rv.by.mention(), slack_date(rv.at)),
            ),
            ReviewOutcome::Revoked => (
                format!(
                    "Break-glass access of {} to {} revoked by {}",
                    r.subject.mention(),
                    r.resource,
                    rv.by.mention()
                ),
                ":no_entry: *BREAK-GLASS ACCESS - REVOKED*".to_string(),
                format!(
                    "Reviewed and revoked by {} on {}",
                    rv.by.mention(),
                    slack_date(rv.at)
                ),
            ),
        },
    };
    let mut blocks = vec![section(&format!("{head}\n{fields}")), context(&footer)];
    if review.is_none() {
        blocks.push(actions(
            "gatehouse_emergency_review",
            vec![
                button(
                    "Reviewed",
                    Action::EmergencyReviewed,
                    &id,
                    Some(Style::Primary),
                ),
                button(
                    "Revoke now",
                    Action::EmergencyRevoke,
                    &id,
                    Some(Style::Danger),
                ),
            ],
        ));
    }
    blocks.push(context(&format!("Request `{id}`")));
    Message {
        text,
        blocks: kit::to_json(&blocks),
    }
}
