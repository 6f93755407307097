//! Escalation: a request still pending `escalate_after` after it was filed is shown to a second
//! approver set, who may then decide it as well, and the requester is told it escalated.
//!
//! ```toml
//! approval = { mode = "approvers", approvers = { users = ["U1"] }, escalate_after = "30m",
//!              escalation_approvers = { users = ["U9"], slack_groups = ["S1"] },
//!              escalation_channel = "access-escalations" }
//! ```
//!
//! The `escalate` job is written with the request (same transaction) for
//! `created_at + escalate_after`. When it runs and the request is still pending it writes a
//! `request_escalated` audit event and the [`crate::notification::Notification::RequestEscalated`]
//! notification; otherwise it does nothing. The escalation approvers' right to decide follows
//! from the time alone (a pending request at or past its escalation instant), so it does not wait
//! for the job to have run.

use chrono::{DateTime, Utc};

use crate::duration::AccessDuration;
use crate::request::AccessRequest;
use crate::resource::{ApprovalPolicy, ApproverSet};

/// The escalation part of an approval policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Escalation<'a> {
    /// How long after filing the request escalates.
    pub after: AccessDuration,
    /// Who may decide once it escalated.
    pub approvers: &'a ApproverSet,
    /// Where the escalation message goes; `None`: the approvers' channel.
    pub channel: Option<&'a str>,
}

impl ApprovalPolicy {
    /// The escalation configured, if any.
    pub fn escalation(&self) -> Option<Escalation<'_>> {
        match self {
            ApprovalPolicy::Approvers {
                escalate_after: Some(after),
                escalation_approvers,
                escalation_channel,
                ..
            } => Some(Escalation {
                after: *after,
                approvers: escalation_approvers,
                channel: escalation_channel
                    .as_deref()
                    .filter(|c| !c.trim().is_empty()),
            }),
            _ => None,
        }
    }
}

impl Escalation<'_> {
    /// When a request filed at `created_at` escalates.
    pub fn at(&self, created_at: DateTime<Utc>) -> DateTime<Utc> {
        created_at + self.after.as_chrono()
    }

    /// Whether `request` has reached its escalation instant (and so the escalation approvers may
    /// decide it).
    pub fn reached(&self, request: &AccessRequest, now: DateTime<Utc>) -> bool {
        now >= self.at(request.created_at)
    }
}

/// Checks the escalation settings of a policy at start; the message names what is wrong.
pub fn validate(policy: &ApprovalPolicy) -> Result<(), String> {
    let ApprovalPolicy::Approvers {
        escalate_after,
        escalation_approvers,
        escalation_channel,
        pending_ttl,
        ..
    } = policy
    else {
        return Ok(());
    };
    match escalate_after {
        None => {
            if !escalation_approvers.is_empty() || escalation_channel.is_some() {
                return Err(
                    "escalation_approvers / escalation_channel need escalate_after (e.g. escalate_after = \"30m\")"
                        .into(),
                );
            }
        }
        Some(after) => {
            if escalation_approvers.is_empty() {
                return Err(
                    "escalate_after needs escalation_approvers (users, slack_groups or groups) to escalate to"
                        .into(),
                );
            }
            if after.secs() >= pending_ttl.secs() {
                return Err(format!(
                    "escalate_after ({after}) must be shorter than pending_ttl ({pending_ttl}), or the request times out before it escalates"
                ));
            }
        }
    }
    if let Some(c) = escalation_channel {
        if c.trim().trim_start_matches('#').is_empty() {
            return Err("escalation_channel is empty".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(v: serde_json::Value) -> ApprovalPolicy {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn validation_names_the_problem() {
        let ok = policy(serde_json::json!({
            "mode": "approvers", "approvers": {"users": ["U1"]},
            "escalate_after": "30m", "escalation_approvers": {"users": ["U9"]},
        }));
        assert_eq!(validate(&ok), Ok(()));
        assert_eq!(ok.escalation().unwrap().after.secs(), 1800);

        let no_set = policy(serde_json::json!({
            "mode": "approvers", "approvers": {"users": ["U1"]}, "escalate_after": "30m",
        }));
        assert!(
            validate(&no_set)
                .unwrap_err()
                .contains("escalation_approvers")
        );

        let no_delay = policy(serde_json::json!({
            "mode": "approvers", "approvers": {"users": ["U1"]},
            "escalation_approvers": {"users": ["U9"]},
        }));
        assert!(validate(&no_delay).unwrap_err().contains("escalate_after"));

        let too_late = policy(serde_json::json!({
            "mode": "approvers", "approvers": {"users": ["U1"]}, "pending_ttl": "1h",
            "escalate_after": "2h", "escalation_approvers": {"users": ["U9"]},
        }));
        assert!(
            validate(&too_late)
                .unwrap_err()
                .contains("shorter than pending_ttl")
        );
        assert_eq!(
            validate(&policy(serde_json::json!({"mode": "auto"}))),
            Ok(())
        );
    }
}
