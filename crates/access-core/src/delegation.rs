//! Delegation: an approver hands their approving to another person for a period
//! (`/access delegate @user until 2026-12-01`). While it is active, the delegate may approve and
//! deny wherever the delegator could, recorded as by the delegate *on behalf of* the delegator.
//!
//! Rules (docs/delegation-escalation.md):
//! - only a person who is an approver of at least one resource (directly, or in an escalation
//!   set) may delegate; a delegate cannot delegate further (no chains);
//! - not to oneself; the end must be in the future and at most [`MAX_DELEGATION_DAYS`] away;
//! - one active delegation per (delegator, delegate): a new one replaces the old;
//! - per Slack workspace (team): a delegation never crosses workspaces;
//! - self-approval stays impossible: a delegate cannot decide their own request, and cannot
//!   decide the delegator's request on the delegator's behalf.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::duration::AccessDuration;
use crate::request::Actor;
use crate::subject::SubjectKey;

/// The longest a delegation may run, so a forgotten one does not hand approving away for good.
pub const MAX_DELEGATION_DAYS: i64 = 90;

/// One delegation of approving from `delegator` to `delegate` in workspace `team_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// The delegation's id.
    pub id: Uuid,
    /// The workspace both people are in.
    pub team_id: String,
    /// The approver who delegates.
    pub delegator_id: String,
    /// The delegator's display name.
    pub delegator_name: String,
    /// Who decides for them.
    pub delegate_id: String,
    /// The delegate's display name.
    pub delegate_name: String,
    /// When it was given.
    pub created_at: DateTime<Utc>,
    /// Active while `now < until` and not revoked.
    pub until: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// `Actor::id()` of who revoked it.
    pub revoked_by: Option<String>,
}

impl Delegation {
    /// Whether it lets the delegate decide at `now` (not revoked, not over).
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && now < self.until
    }

    /// The delegator as an actor (whose approving the delegate borrows).
    pub fn delegator(&self) -> Actor {
        SubjectKey::new(&self.team_id, &self.delegator_id).actor(&self.delegator_name)
    }

    /// When and how it stopped being active, for refusals: "expired at …" / "was revoked at …".
    pub fn ended(&self, now: DateTime<Utc>) -> Option<String> {
        if let Some(at) = self.revoked_at {
            return Some(format!(
                "was revoked at {}",
                at.format("%Y-%m-%d %H:%M UTC")
            ));
        }
        (now >= self.until).then(|| format!("ended at {}", self.until.format("%Y-%m-%d %H:%M UTC")))
    }
}

/// A write to the delegations table, in a [`crate::ports::ChangeSet`].
#[derive(Debug, Clone, PartialEq)]
pub enum DelegationWrite {
    /// A new delegation.
    Insert(Delegation),
    /// Marks an active delegation revoked; a delegation already revoked is a
    /// [`crate::ports::StoreError::Conflict`] (someone else revoked it first).
    Revoke {
        /// The delegation.
        id: Uuid,
        /// When it ends.
        at: DateTime<Utc>,
        /// Who ended it (an actor id).
        by: String,
    },
}

/// Which delegations to read. All set fields must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DelegationFilter {
    /// Only delegations in this workspace.
    pub team_id: Option<String>,
    /// Only delegations this user gave.
    pub delegator_id: Option<String>,
    /// Only delegations this user received.
    pub delegate_id: Option<String>,
    /// Only those active at this instant.
    pub active_at: Option<DateTime<Utc>>,
    /// Newest first; 100 when unset.
    pub limit: Option<u32>,
}

/// Why `until …` did not parse or is not allowed. `Display` is shown to the person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UntilError {
    /// Neither a date nor a duration.
    #[error(
        "I couldn't read '{0}' as an end. Use a date like 2026-12-01 (the delegation lasts through that day, UTC) or a duration like 3d or 12h."
    )]
    Unreadable(String),
    /// The end is in the past.
    #[error("{0} is in the past; a delegation must end in the future.")]
    Past(String),
    /// Longer than [`MAX_DELEGATION_DAYS`].
    #[error(
        "A delegation can last at most {MAX_DELEGATION_DAYS} days (until {0} at the latest). Delegate again when it ends."
    )]
    TooLong(String),
}

/// Parses the end of a delegation: a date `YYYY-MM-DD` (through the end of that day, UTC, i.e.
/// until the next midnight UTC) or a duration (`3d`, `12h`, `2w`) from `now`. Refuses the past and
/// more than [`MAX_DELEGATION_DAYS`] ahead.
pub fn parse_until(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, UntilError> {
    let raw = raw.trim();
    let until = if let Ok(day) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let next = day
            .succ_opt()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .ok_or_else(|| UntilError::Unreadable(raw.to_string()))?;
        if next.and_utc() <= now {
            return Err(UntilError::Past(raw.to_string()));
        }
        next.and_utc()
    } else {
        let d = raw
            .parse::<AccessDuration>()
            .map_err(|_| UntilError::Unreadable(raw.chars().take(40).collect()))?;
        now + d.as_chrono()
    };
    let latest = now + Duration::days(MAX_DELEGATION_DAYS);
    if until > latest {
        return Err(UntilError::TooLong(latest.format("%Y-%m-%d").to_string()));
    }
    Ok(until)
}

/// Why a delegation (or its revocation) was refused. `Display` is shown to the person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelegationError {
    /// Only approvers may delegate.
    #[error(
        "Only approvers can delegate, and you are not an approver of any resource. (A delegate cannot pass a delegation on.)"
    )]
    NotAnApprover,
    /// Nobody delegates to themselves.
    #[error("You cannot delegate to yourself.")]
    ToSelf,
    /// Only Slack users delegate and receive delegations.
    #[error("Only a Slack user can delegate or receive a delegation.")]
    NotAUser,
    /// The end does not parse or is out of range.
    #[error("{0}")]
    Until(#[from] UntilError),
    /// `delegate revoke` for someone without a delegation from the caller.
    #[error("You have no active delegation to <@{delegate}>. `delegations` lists yours.")]
    NoSuchDelegation {
        /// The user id named.
        delegate: String,
    },
    /// The directory could not tell whether the caller is an approver.
    #[error(
        "Organizational data service is not available, so I cannot tell whether you are an approver. Please try again later."
    )]
    DirectoryUnavailable,
}

/// How an approver's decision is authorised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authority {
    /// Decided as a delegate of this person.
    pub on_behalf_of: Option<Actor>,
    /// Decided as a member of the escalation approver set.
    pub via_escalation: bool,
}

impl Authority {
    /// What the audit event of the decision adds to its details.
    pub fn audit_details(&self) -> Option<serde_json::Value> {
        if self.on_behalf_of.is_none() && !self.via_escalation {
            return None;
        }
        Some(serde_json::json!({
            "on_behalf_of": self.on_behalf_of.as_ref().map(Actor::id),
            "via_escalation": self.via_escalation,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        "2026-11-10T15:00:00Z".parse().unwrap()
    }

    #[test]
    fn dates_last_through_the_day_durations_from_now() {
        assert_eq!(
            parse_until("2026-12-01", t0()).unwrap(),
            "2026-12-02T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(parse_until("3d", t0()).unwrap(), t0() + Duration::days(3));
        // Today still counts (through midnight).
        assert!(parse_until("2026-11-10", t0()).is_ok());
        assert!(matches!(
            parse_until("2026-11-09", t0()),
            Err(UntilError::Past(_))
        ));
        assert!(matches!(
            parse_until("2027-03-01", t0()),
            Err(UntilError::TooLong(_))
        ));
        assert!(matches!(
            parse_until("91d", t0()),
            Err(UntilError::TooLong(_))
        ));
        assert!(matches!(
            parse_until("tomorrow", t0()),
            Err(UntilError::Unreadable(_))
        ));
    }

    #[test]
    fn activity_and_endings() {
        let d = Delegation {
            id: Uuid::new_v4(),
            team_id: "T1".into(),
            delegator_id: "U1".into(),
            delegator_name: "one".into(),
            delegate_id: "U2".into(),
            delegate_name: "two".into(),
            created_at: t0(),
            until: t0() + Duration::days(1),
            revoked_at: None,
            revoked_by: None,
        };
        assert!(d.is_active(t0()));
        assert_eq!(d.ended(t0()), None);
        assert!(!d.is_active(t0() + Duration::days(1)));
        assert!(
            d.ended(t0() + Duration::days(2))
                .unwrap()
                .contains("ended at")
        );
        let r = Delegation {
            revoked_at: Some(t0()),
            ..d
        };
        assert!(!r.is_active(t0()));
        assert!(r.ended(t0()).unwrap().contains("revoked"));
    }
}
