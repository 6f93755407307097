//! Break-glass (emergency) access: a grant taken at once, without approval, on a resource that
//! allows it (`emergency = true`), and reviewed by an approver afterwards.
//!
//! The grant itself is an ordinary grant (provisioned, expired and revoked like any other); this
//! module holds what is particular to it: the record that it was an emergency and its review.
//! The record is written in the same transaction as the grant, so an emergency grant without
//! its record (and so without its review) cannot exist.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::duration::AccessDuration;
use crate::ids::{GrantId, RequestId, ResourceId};
use crate::request::Actor;
use crate::subject::Subject;

/// One emergency grant and its review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmergencyAccess {
    /// The break-glass request.
    pub request_id: RequestId,
    /// The grant it created.
    pub grant_id: GrantId,
    /// Who took the access.
    pub subject: Subject,
    /// The resource.
    pub resource: ResourceId,
    /// What was granted (the requested duration cut to the resource's emergency duration).
    pub duration: AccessDuration,
    /// Why, as they said.
    pub justification: String,
    /// When it was granted.
    pub granted_at: DateTime<Utc>,
    /// The grant's end as granted (a later extension moves the grant's, not this).
    pub expires_at: DateTime<Utc>,
    /// `None` until an approver has looked at it.
    pub review: Option<EmergencyReview>,
}

impl EmergencyAccess {
    /// Whether an approver has reviewed it.
    pub fn is_reviewed(&self) -> bool {
        self.review.is_some()
    }
}

/// What an approver decided about an emergency grant after the fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyReview {
    /// The approver who reviewed it.
    pub by: Actor,
    /// When.
    pub at: DateTime<Utc>,
    /// What they decided.
    pub outcome: ReviewOutcome,
}

/// The two buttons of an emergency notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewOutcome {
    /// Looked at and found justified: the grant runs its course.
    Reviewed,
    /// Looked at and ended now (the grant is revoked in the same transaction).
    Revoked,
}

impl ReviewOutcome {
    /// The stored name (`reviewed`, `revoked`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewOutcome::Reviewed => "reviewed",
            ReviewOutcome::Revoked => "revoked",
        }
    }

    /// The outcome stored as `s`; `None` for an unknown name.
    pub fn parse(s: &str) -> Option<ReviewOutcome> {
        [ReviewOutcome::Reviewed, ReviewOutcome::Revoked]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

impl std::fmt::Display for ReviewOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A write to the emergency record, part of a [`crate::ports::ChangeSet`].
#[derive(Debug, Clone, PartialEq)]
pub enum EmergencyWrite {
    /// A new emergency grant's record.
    Insert(EmergencyAccess),
    /// Records the review of `request_id`. Succeeds only while the record is unreviewed; a
    /// second review is a [`crate::ports::StoreError::Conflict`] (two approvers clicking at once
    /// yield one review).
    Review {
        /// The break-glass request.
        request_id: RequestId,
        /// The review.
        review: EmergencyReview,
    },
}

/// Which emergency records to list (newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmergencyFilter {
    /// `Some(false)`: only those not reviewed yet; `Some(true)`: only reviewed ones.
    pub reviewed: Option<bool>,
    /// Only this resource's.
    pub resource: Option<ResourceId>,
    /// 100 when unset, at most 1000.
    pub limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip() {
        for o in [ReviewOutcome::Reviewed, ReviewOutcome::Revoked] {
            assert_eq!(ReviewOutcome::parse(o.as_str()), Some(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        assert_eq!(ReviewOutcome::parse("approved"), None);
    }
}
