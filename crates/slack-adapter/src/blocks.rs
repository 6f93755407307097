//! Block Kit: every message, modal and Home tab Gatehouse shows, as pure functions returning the
//! plain-text fallback and the blocks. Nothing here does I/O, so tests assert on exact content.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use slack_morphism::prelude::{SlackBlock, SlackBlockButtonElement};

use access_core::grant::format_remaining;
use access_core::notification::{GrantSummary, RequestSummary};
use access_core::request::Actor;

/// A button Gatehouse posts, parsed once from a click's `action_id`; [`Action::as_str`] is the
/// id written into the blocks, so what is posted and what is read back are the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Approve a pending request (value: request id).
    Approve,
    /// Deny a pending request (value: request id).
    Deny,
    /// Extend a grant (value: resource).
    Extend,
    /// Revoke a grant (value: grant id).
    Revoke,
    /// Cancel one's own pending request (value: request id).
    Cancel,
    /// Open the request form (App Home).
    OpenModal,
    /// Break-glass notice: the approver looked at the emergency grant and it stands.
    EmergencyReviewed,
    /// Break-glass notice: the approver ends the emergency grant now.
    EmergencyRevoke,
}

impl Action {
    /// Every button, for parsing.
    const ALL: [Action; 8] = [
        Action::Approve,
        Action::Deny,
        Action::Extend,
        Action::Revoke,
        Action::Cancel,
        Action::OpenModal,
        Action::EmergencyReviewed,
        Action::EmergencyRevoke,
    ];

    /// The `action_id` on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "gatehouse_approve",
            Action::Deny => "gatehouse_deny",
            Action::Extend => "gatehouse_extend",
            Action::Revoke => "gatehouse_revoke",
            Action::Cancel => "gatehouse_cancel",
            Action::OpenModal => "gatehouse_open_request_modal",
            Action::EmergencyReviewed => "gatehouse_emergency_reviewed",
            Action::EmergencyRevoke => "gatehouse_emergency_revoke",
        }
    }

    /// The button an `action_id` names, `None` for one that is not ours.
    pub fn parse(action_id: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == action_id)
    }
}

/// Action ids of the buttons Gatehouse posts, as strings (see [`Action`]).
pub mod action {
    use super::Action;
    /// [`Action::Approve`].
    pub const APPROVE: &str = Action::Approve.as_str();
    /// [`Action::Deny`].
    pub const DENY: &str = Action::Deny.as_str();
    /// [`Action::Extend`].
    pub const EXTEND: &str = Action::Extend.as_str();
    /// [`Action::Revoke`].
    pub const REVOKE: &str = Action::Revoke.as_str();
    /// [`Action::Cancel`].
    pub const CANCEL: &str = Action::Cancel.as_str();
    /// [`Action::OpenModal`].
    pub const OPEN_MODAL: &str = Action::OpenModal.as_str();
    /// [`Action::EmergencyReviewed`].
    pub const EMERGENCY_REVIEWED: &str = Action::EmergencyReviewed.as_str();
    /// [`Action::EmergencyRevoke`].
    pub const EMERGENCY_REVOKE: &str = Action::EmergencyRevoke.as_str();
}

mod emergency;
mod kit;
mod views;
pub use emergency::emergency_notice;
use kit::Style;
pub use views::{home_view, request_modal};

/// `callback_id` of the request modal.
pub const MODAL_CALLBACK_ID: &str = "gatehouse_request";
/// Block ids of the modal's inputs (`response_action: errors` names them).
pub mod modal_block {
    pub const RESOURCE: &str = "resource";
    pub const DURATION: &str = "duration";
    pub const JUSTIFICATION: &str = "justification";
    /// Every input's element uses this action id.
    pub const VALUE: &str = "value";
}

/// A message: the notification text (fallback, screen readers) and the blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub text: String,
    pub blocks: Value,
}

/// Escapes `&`, `<`, `>` in text people typed, so it cannot form mentions or links.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Replaces every RFC 3339 UTC time (`2026-01-19T12:34:56Z`) in already-escaped text with a
/// Slack date token, so providers can write times in UTC and every reader sees their own time
/// zone (the GCP document's "until 2025-11-24 15:30 MST").
pub fn localize_times(escaped: &str) -> String {
    const LEN: usize = 20; // YYYY-MM-DDTHH:MM:SSZ
    let bytes = escaped.as_bytes();
    let mut out = String::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        if i + LEN <= escaped.len()
            && escaped.is_char_boundary(i)
            && escaped.is_char_boundary(i + LEN)
        {
            let candidate = &escaped[i..i + LEN];
            let shaped =
                bytes[i + 4] == b'-' && bytes[i + 10] == b'T' && bytes[i + LEN - 1] == b'Z';
            if shaped {
                if let Ok(t) = DateTime::parse_from_rfc3339(candidate) {
                    out.push_str(&slack_date(t.with_timezone(&Utc)));
                    i += LEN;
                    continue;
                }
            }
        }
        let ch = escaped[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// A time every reader sees in their own time zone, with a UTC fallback.
pub fn slack_date(t: DateTime<Utc>) -> String {
    format!(
        "<!date^{}^{{date_short_pretty}} at {{time}}|{}>",
        t.timestamp(),
        t.format("%Y-%m-%d %H:%M UTC")
    )
}

fn section(text: &str) -> SlackBlock {
    kit::section(text)
}

fn context(text: &str) -> SlackBlock {
    kit::context(text)
}

fn button(
    text: &str,
    action: Action,
    value: &str,
    style: Option<Style>,
) -> SlackBlockButtonElement {
    kit::button(text, action, value, style)
}

fn actions(block_id: &str, elements: Vec<SlackBlockButtonElement>) -> SlackBlock {
    kit::actions(block_id, elements)
}

fn mentions(actors: &[Actor]) -> String {
    actors
        .iter()
        .map(Actor::mention)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Cloud Connexa requests use the Cloud Connexa document's words ("VPN Access Request",
/// "Network").
fn vpn_network(r: &RequestSummary) -> Option<&str> {
    (r.provider == "cloudconnexa").then(|| r.network.as_deref().unwrap_or(r.resource.as_str()))
}

/// What approval messages call a request.
fn request_noun(r: &RequestSummary) -> &'static str {
    if vpn_network(r).is_some() {
        "VPN Access Request"
    } else {
        "Access request"
    }
}

/// The details every approval message shows.
fn request_fields(r: &RequestSummary) -> String {
    let kind = match r.kind {
        access_core::request::RequestKind::New => "",
        access_core::request::RequestKind::Extend => " (extension)",
    };
    let (label, target) = match vpn_network(r) {
        Some(network) => ("Network", network.to_string()),
        None => ("Resource", r.resource.to_string()),
    };
    format!(
        "*User:* {}\n*{label}:* {target}{kind}\n*Duration:* {}\n*Reason:* {}",
        r.subject.mention(),
        r.duration.human(),
        escape(&r.justification)
    )
}

/// Where an approval message stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ApprovalState {
    Pending {
        approved_by: Vec<Actor>,
        approvals_required: u32,
    },
    Approved {
        by: Vec<Actor>,
        at: DateTime<Utc>,
    },
    Denied {
        by: Actor,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    Cancelled {
        by: Actor,
        at: DateTime<Utc>,
    },
    TimedOut {
        at: DateTime<Utc>,
    },
    Failed {
        reason: String,
        at: DateTime<Utc>,
    },
}

/// The footer of a pending approval message: how many approvals it has and needs.
fn approval_progress(approved_by: &[Actor], approvals_required: u32) -> String {
    if approvals_required > 1 || !approved_by.is_empty() {
        format!(
            "Approvals: {} of {}{}",
            approved_by.len(),
            approvals_required,
            if approved_by.is_empty() {
                String::new()
            } else {
                format!(" ({})", mentions(approved_by))
            }
        )
    } else {
        "Needs one approval.".to_string()
    }
}

/// The message in the approvers' channel, in each of its states. Buttons only while pending.
pub fn approval_message(r: &RequestSummary, state: &ApprovalState) -> Message {
    let (text, blocks) = approval_blocks(r, state);
    Message {
        text,
        blocks: kit::to_json(&blocks),
    }
}

/// [`approval_message`]'s text and blocks.
fn approval_blocks(r: &RequestSummary, state: &ApprovalState) -> (String, Vec<SlackBlock>) {
    let id = r.id.to_string();
    let fields = request_fields(r);
    let (text, head, footer, pending) = match state {
        ApprovalState::Pending {
            approved_by,
            approvals_required,
        } => {
            let progress = approval_progress(approved_by, *approvals_required);
            (
                format!(
                    "{} from {} for {}",
                    request_noun(r),
                    r.subject.mention(),
                    r.resource
                ),
                format!("*{}*", request_noun(r)),
                progress,
                true,
            )
        }
        ApprovalState::Approved { by, at } => (
            format!(
                "Access request for {} approved by {}",
                r.resource,
                mentions(by)
            ),
            format!(":white_check_mark: *{} - APPROVED*", request_noun(r)),
            format!("Approved by {} on {}", mentions(by), slack_date(*at)),
            false,
        ),
        ApprovalState::Denied { by, reason, at } => (
            format!(
                "Access request for {} denied by {}",
                r.resource,
                by.mention()
            ),
            format!(":x: *{} - DENIED*", request_noun(r)),
            format!(
                "Denied by {} on {}{}",
                by.mention(),
                slack_date(*at),
                reason
                    .as_deref()
                    .map(|s| format!(": {}", escape(s)))
                    .unwrap_or_default()
            ),
            false,
        ),
        ApprovalState::Cancelled { by, at } => (
            format!("Access request for {} cancelled", r.resource),
            format!(":no_entry_sign: *{} - CANCELLED*", request_noun(r)),
            format!("Cancelled by {} on {}", by.mention(), slack_date(*at)),
            false,
        ),
        ApprovalState::TimedOut { at } => (
            format!("Access request for {} timed out", r.resource),
            format!(":hourglass: *{} - EXPIRED*", request_noun(r)),
            format!(
                "This request has expired without action ({}).",
                slack_date(*at)
            ),
            false,
        ),
        ApprovalState::Failed { reason, at } => (
            format!("Access request for {}: approval failed", r.resource),
            format!(":warning: *{} - APPROVAL FAILED*", request_noun(r)),
            format!(
                "Unable to provision access ({}): {}",
                slack_date(*at),
                escape(reason)
            ),
            false,
        ),
    };
    let mut blocks = vec![section(&format!("{head}\n{fields}")), context(&footer)];
    if pending {
        blocks.push(actions(
            "gatehouse_decision",
            vec![
                button("Approve", Action::Approve, &id, Some(Style::Primary)),
                button("Deny", Action::Deny, &id, Some(Style::Danger)),
            ],
        ));
    }
    blocks.push(context(&format!("Request `{id}`")));
    (text, blocks)
}

fn simple(text: String, body: String) -> Message {
    Message {
        blocks: kit::to_json(&[section(&body)]),
        text,
    }
}

/// DM: the request was filed and waits for approval.
pub fn dm_submitted(r: &RequestSummary, approvals_required: u32) -> Message {
    let who = if approvals_required > 1 {
        format!("{approvals_required} approvals")
    } else {
        "approval".into()
    };
    simple(
        format!(
            "Your access request for {} is waiting for {who}.",
            r.resource
        ),
        format!(
            ":hourglass_flowing_sand: *Access request submitted*\nYour request for *{}* ({}) is waiting for {who}. \
             I'll message you as soon as it is decided.\n*Reason:* {}",
            r.resource,
            r.duration.human(),
            escape(&r.justification)
        ),
    )
}

/// DM: approved (by people, or automatically).
pub fn dm_approved(r: &RequestSummary, by: &[Actor]) -> Message {
    let by_people: Vec<Actor> = by
        .iter()
        .filter(|a| !matches!(a, Actor::System))
        .cloned()
        .collect();
    let who = if by_people.is_empty() {
        "automatically".to_string()
    } else {
        format!("by {}", mentions(&by_people))
    };
    if let Some(network) = vpn_network(r) {
        // The Cloud Connexa document's approval message.
        return simple(
            format!("Your VPN access request for {network} has been approved!"),
            format!(
                ":white_check_mark: *VPN Access Approved*\nYour request for access to *{network}* has been approved {who}.\n\
                 Access will expire in *{}* once it is set up; I'll message you when it is ready.\n\n\
                 Connect using your standard VPN client.",
                r.duration.human()
            ),
        );
    }
    simple(
        format!(
            "Your access request for {} has been approved {who}.",
            r.resource
        ),
        format!(
            ":white_check_mark: *Access approved*\nYour request for access to *{}* has been approved {who}. \
             Access is being set up; I'll message you when it is ready.",
            r.resource
        ),
    )
}

pub fn dm_denied(r: &RequestSummary, by: &Actor, reason: Option<&str>) -> Message {
    simple(
        format!("Your access request for {} has been denied.", r.resource),
        format!(
            ":x: *Access denied*\nYour request for access to *{}* has been denied by {}.{}\nPlease contact {} for more information.",
            r.resource,
            by.mention(),
            reason
                .map(|s| format!("\n*Reason:* {}", escape(s)))
                .unwrap_or_default(),
            by.mention()
        ),
    )
}

pub fn dm_cancelled(r: &RequestSummary, by: &Actor) -> Message {
    let by_self = by.is_subject(&r.subject);
    simple(
        format!("Your access request for {} was cancelled.", r.resource),
        if by_self {
            format!(
                ":no_entry_sign: You cancelled your request for *{}*.",
                r.resource
            )
        } else {
            format!(
                ":no_entry_sign: Your request for *{}* was cancelled by {}.",
                r.resource,
                by.mention()
            )
        },
    )
}

pub fn dm_timed_out(r: &RequestSummary) -> Message {
    simple(
        format!("Your access request for {} timed out.", r.resource),
        format!(
            ":hourglass: *Request expired*\nNobody decided on your request for *{}* in time, so it has expired. \
             Request again if you still need access.",
            r.resource
        ),
    )
}

pub fn dm_granted(
    r: &RequestSummary,
    g: &GrantSummary,
    instructions: &str,
    extended: bool,
    secret_delivery_failed: bool,
    now: DateTime<Utc>,
) -> Message {
    let left = format_remaining(g.expires_at - now);
    let (text, head) = if extended {
        (
            format!(
                "Your access to {} has been extended until {}.",
                r.resource,
                g.expires_at.format("%Y-%m-%d %H:%M UTC")
            ),
            format!(
                ":arrows_counterclockwise: *Access extended*\nYour access to *{}* now lasts until {} ({left} from now).",
                r.resource,
                slack_date(g.expires_at)
            ),
        )
    } else {
        (
            format!(
                "Your access to {} is ready until {}.",
                r.resource,
                g.expires_at.format("%Y-%m-%d %H:%M UTC")
            ),
            format!(
                ":unlock: *Access granted*\nYou have access to *{}* until {} ({left} from now).",
                r.resource,
                slack_date(g.expires_at)
            ),
        )
    };
    let mut blocks = vec![section(&head)];
    if !instructions.trim().is_empty() {
        blocks.push(section(&format!(
            "*How to use it*\n{}",
            localize_times(&escape(instructions))
        )));
    }
    if secret_delivery_failed {
        blocks.push(section(
            ":warning: Failed to upload key file. Please run the command again to retrieve your credentials.",
        ));
    }
    blocks.push(context(&format!(
        "Reason: {} · Give it back early with `revoke {}`",
        escape(&r.justification),
        r.resource
    )));
    Message {
        text,
        blocks: kit::to_json(&blocks),
    }
}

/// The key file that came with a grant could not be uploaded: access is active (the "granted"
/// message said so), the person asks again for a new key.
pub fn dm_secret_not_delivered(r: &RequestSummary, g: &GrantSummary) -> Message {
    simple(
        format!(
            "Your access to {} is active, but its key file could not be delivered.",
            r.resource
        ),
        format!(
            ":warning: *Key file not delivered*\nYour access to *{}* is active until {}, but we \
             could not upload its key file. Please run the command again to retrieve your \
             credentials.",
            r.resource,
            slack_date(g.expires_at)
        ),
    )
}

pub fn dm_failed(r: &RequestSummary, reason: &str) -> Message {
    simple(
        format!(
            "Your access request for {} could not be provisioned.",
            r.resource
        ),
        format!(
            ":x: *Access could not be set up*\nYour request for access to *{}* was approved, but we couldn't provision access: {}\n\
             Please try again later, or contact IT support if it keeps failing.",
            r.resource,
            escape(reason)
        ),
    )
}

pub fn dm_reminder(g: &GrantSummary, can_extend: bool, now: DateTime<Utc>) -> Message {
    let left = format_remaining(g.expires_at - now);
    let mut blocks = vec![section(&format!(
        ":alarm_clock: *Access ending soon*\nYour access to *{}* ends {} ({left} from now).{}",
        g.resource,
        slack_date(g.expires_at),
        if can_extend {
            " Need more time? Extend it below."
        } else {
            ""
        }
    ))];
    if can_extend {
        blocks.push(actions(
            "gatehouse_reminder",
            vec![button(
                "Extend",
                Action::Extend,
                g.resource.as_str(),
                Some(Style::Primary),
            )],
        ));
    }
    Message {
        text: format!("Your access to {} ends in {left}.", g.resource),
        blocks: kit::to_json(&blocks),
    }
}

pub fn dm_expired(g: &GrantSummary) -> Message {
    simple(
        format!("Your access to {} has expired.", g.resource),
        format!(
            ":clock3: *Access expired*\nYour temporary access to *{}* has expired.\nIf you need continued access, please submit a new request.",
            g.resource
        ),
    )
}

pub fn dm_revoked(g: &GrantSummary, by: &Actor) -> Message {
    let body = if by.is_subject(&g.subject) {
        format!(
            ":lock: *Access revoked*\nYour access to *{}* has been revoked, as you asked.",
            g.resource
        )
    } else {
        format!(
            ":lock: *Access revoked*\nYour access to *{}* has been revoked by {}.",
            g.resource,
            by.mention()
        )
    };
    simple(
        format!("Your access to {} has been revoked.", g.resource),
        body,
    )
}

/// An ephemeral reply (slash command ack, response_url).
pub fn ephemeral(text: &str) -> Value {
    json!({"response_type": "ephemeral", "replace_original": false, "text": text})
}

/// Who an escalation goes to, as Slack shows it: users and user groups mentioned, directory
/// groups named.
pub fn escalation_audience(set: &access_core::ApproverSet) -> String {
    let mut who: Vec<String> = set.users.iter().map(|u| format!("<@{u}>")).collect();
    who.extend(set.slack_groups.iter().map(|g| format!("<!subteam^{g}>")));
    who.extend(
        set.groups
            .iter()
            .map(|g| format!("members of '{}'", escape(g))),
    );
    if who.is_empty() {
        "the escalation approvers".to_string()
    } else {
        who.join(", ")
    }
}

/// The approval message posted when a request escalates: the pending approval message (same
/// buttons, updated in place like the first one) under an escalation notice.
pub fn escalated_approval_message(
    r: &RequestSummary,
    approvers: &access_core::ApproverSet,
    after: access_core::AccessDuration,
    approvals_required: u32,
) -> Message {
    let (text, mut blocks) = approval_blocks(
        r,
        &ApprovalState::Pending {
            approved_by: vec![],
            approvals_required,
        },
    );
    let notice = format!(
        ":rotating_light: *Escalated:* nobody decided this request within {}. {}, please approve or deny it.",
        after.human(),
        escalation_audience(approvers)
    );
    blocks.insert(0, section(&notice));
    Message {
        text: format!("Escalated: {text}"),
        blocks: kit::to_json(&blocks),
    }
}

/// DM to a delegate: someone let them approve for them (or ended that).
pub fn dm_delegation(delegator: &Actor, until: DateTime<Utc>, ended: bool) -> Message {
    if ended {
        simple(
            "A delegation to you has ended.".into(),
            format!(
                ":handshake: *Delegation ended*\n{} ended your delegation: you can no longer approve or deny requests for them.",
                delegator.mention()
            ),
        )
    } else {
        simple(
            "You can now approve requests for someone else.".into(),
            format!(
                ":handshake: *Delegation*\n{} has let you approve and deny access requests for them until {}. \
                 Your decisions are recorded as yours, on their behalf. You can never decide your own request, or theirs.",
                delegator.mention(),
                slack_date(until)
            ),
        )
    }
}

/// DM: the request was not decided in time and went to the second approver set.
pub fn dm_escalated(
    r: &RequestSummary,
    approvers: &access_core::ApproverSet,
    after: access_core::AccessDuration,
) -> Message {
    simple(
        format!("Your access request for {} was escalated.", r.resource),
        format!(
            ":rotating_light: *Request escalated*\nNobody decided on your request for *{}* within {}, \
             so it has been escalated to {}. They can now approve or deny it too. \
             I'll message you as soon as it is decided.",
            r.resource,
            after.human(),
            escalation_audience(approvers)
        ),
    )
}

#[cfg(test)]
mod tests;
