//! Access requests and their state machine.
//!
//! # The state machine
//!
//! A request ([`RequestStatus`]) moves only by the [`RequestEvent`]s drawn here; the engine
//! command or job that applies each one is named on its arrow. Everything right of `approved`
//! happens in jobs ([`crate::jobs::JobKind`]), never in the command that approved.
//!
//! ```text
//!  Engine::submit ──▶ pending         (Engine::submit_emergency files it approved at once)
//!
//!  pending ──Approve──────────────▶ approved ──Provisioned──▶ active ──Expire──▶ expired
//!    │     Engine::approve: the Nth    │       `provision` job:  │     `expire` job at the
//!    │     approver, or an admin; at   │       provider granted  │     grant's end
//!    │     submit for `approval=auto`  │                         │
//!    │                                 │                         └──Revoke──▶ revoked
//!    │                                 │                           `revoke` job after
//!    │                                 │                           Engine::revoke_grant
//!    │                                 └──ProvisioningFailed──▶ failed
//!    │                                   `provision` job: the provider refused, the job
//!    │                                   gave up, or the grant ended first
//!    ├──Deny─────▶ denied       Engine::deny
//!    ├──Cancel───▶ cancelled    Engine::cancel (the requester, or an admin)
//!    └──TimeOut──▶ timed_out    `timeout_pending` job, or a decision after `pending_until`
//! ```
//!
//! Every status but `pending`, `approved` and `active` is terminal. An extension
//! ([`RequestKind::Extend`]) follows the same path; its grant stays `active` and only its end
//! moves.
//!
//! The grant ([`crate::grant::GrantStatus`]) a request creates is written in the same
//! transactions:
//!
//! ```text
//!  (approval) ──▶ provisioning ──provider granted──▶ active ──expire job──▶ expired
//!                   │     │                            │
//!                   │     │ Engine::revoke_grant       │ Engine::revoke_grant
//!                   │     └──────────▶ revoking ◀──────┘
//!                   │                    │
//!                   │                    └──revoke job──▶ revoked
//!                   └──provisioning failed──▶ failed
//! ```
//!
//! A grant past its end belongs to its `expire` job, which claims the row before calling the
//! provider (a grant still `provisioning` then ends `expired` too); an approval that would
//! lengthen it then is refused (`RevocationInProgress`).
//!
//! [`RequestStatus::apply`] is the only way a status changes; everything else (the engine, the
//! store's compare-and-set) builds on it, so an illegal transition is a typed error, not a bug
//! that depends on who called.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::duration::AccessDuration;
use crate::ids::{GrantId, RequestId, ResourceId};
use crate::resource::Justification;
use crate::subject::{Subject, SubjectKey};

/// Where a request is in its life (see the state machine above).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Waiting for approvers.
    Pending,
    /// Approved; the grant is being provisioned.
    Approved,
    /// The grant it created or extended is live.
    Active,
    /// Its access ended at expiry.
    Expired,
    /// Its access was ended early.
    Revoked,
    /// An approver said no.
    Denied,
    /// The requester (or an admin) withdrew it.
    Cancelled,
    /// Nobody decided in time.
    TimedOut,
    /// Approved, but provisioning failed.
    Failed,
}

impl RequestStatus {
    /// Every status, in declaration order.
    pub const ALL: [RequestStatus; 9] = [
        RequestStatus::Pending,
        RequestStatus::Approved,
        RequestStatus::Active,
        RequestStatus::Expired,
        RequestStatus::Revoked,
        RequestStatus::Denied,
        RequestStatus::Cancelled,
        RequestStatus::TimedOut,
        RequestStatus::Failed,
    ];

    /// The stored name (`pending`, `timed_out`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Active => "active",
            RequestStatus::Expired => "expired",
            RequestStatus::Revoked => "revoked",
            RequestStatus::Denied => "denied",
            RequestStatus::Cancelled => "cancelled",
            RequestStatus::TimedOut => "timed_out",
            RequestStatus::Failed => "failed",
        }
    }

    /// No transition leaves a terminal status.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            RequestStatus::Pending | RequestStatus::Approved | RequestStatus::Active
        )
    }

    /// The state machine. Returns the new status or says why the event is not allowed now.
    pub fn apply(self, event: RequestEvent) -> Result<RequestStatus, TransitionError> {
        use RequestEvent as E;
        use RequestStatus as S;
        let next = match (self, event) {
            (S::Pending, E::Approve) => S::Approved,
            (S::Pending, E::Deny) => S::Denied,
            (S::Pending, E::Cancel) => S::Cancelled,
            (S::Pending, E::TimeOut) => S::TimedOut,
            (S::Approved, E::Provisioned) => S::Active,
            (S::Approved, E::ProvisioningFailed) => S::Failed,
            (S::Active, E::Expire) => S::Expired,
            (S::Active, E::Revoke) => S::Revoked,
            (from, event) => return Err(TransitionError { from, event }),
        };
        Ok(next)
    }
}

impl fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RequestStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RequestStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown request status '{s}'"))
    }
}

/// What can happen to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestEvent {
    /// Enough approvers agreed (or the resource approves automatically).
    Approve,
    /// An approver said no.
    Deny,
    /// The requester (or an admin) withdrew it.
    Cancel,
    /// Its pending TTL passed.
    TimeOut,
    /// The provider granted the access.
    Provisioned,
    /// Provisioning failed for good, or the grant ended first.
    ProvisioningFailed,
    /// The grant reached its expiry.
    Expire,
    /// The grant was ended early.
    Revoke,
}

impl RequestEvent {
    /// Every event, in declaration order.
    pub const ALL: [RequestEvent; 8] = [
        RequestEvent::Approve,
        RequestEvent::Deny,
        RequestEvent::Cancel,
        RequestEvent::TimeOut,
        RequestEvent::Provisioned,
        RequestEvent::ProvisioningFailed,
        RequestEvent::Expire,
        RequestEvent::Revoke,
    ];

    fn verb(self) -> &'static str {
        match self {
            RequestEvent::Approve => "approve",
            RequestEvent::Deny => "deny",
            RequestEvent::Cancel => "cancel",
            RequestEvent::TimeOut => "time out",
            RequestEvent::Provisioned => "activate",
            RequestEvent::ProvisioningFailed => "fail",
            RequestEvent::Expire => "expire",
            RequestEvent::Revoke => "revoke",
        }
    }
}

/// An event that is not allowed in the current status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} a request that is {from}", event.verb())]
pub struct TransitionError {
    /// The status the request was in.
    pub from: RequestStatus,
    /// The event refused.
    pub event: RequestEvent,
}

/// A new request, or a request to lengthen an active grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// Access for a time; on a live grant it is provisioned again (and lengthened when the
    /// resource can be extended).
    #[default]
    New,
    /// More time on a live grant.
    Extend,
}

/// One access request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessRequest {
    /// The request's id.
    pub id: RequestId,
    /// Who asked.
    pub subject: Subject,
    /// The resource asked for.
    pub resource: ResourceId,
    /// A new grant or an extension.
    pub kind: RequestKind,
    /// How long.
    pub duration: AccessDuration,
    /// Why, as the requester said.
    pub justification: Justification,
    /// Where it is in its life.
    pub status: RequestStatus,
    /// When it was filed.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// A pending request times out at this instant (None for auto-approved requests).
    pub pending_until: Option<DateTime<Utc>>,
    /// The grant this request created or extended, once approved.
    pub grant_id: Option<GrantId>,
    /// Who ended it (approver, denier, canceller, revoker), for display.
    pub decided_by: Option<Actor>,
    /// Why it failed, when it failed.
    pub failure: Option<String>,
    /// Compare-and-set counter; bumped by every write.
    pub version: i64,
}

impl AccessRequest {
    /// Applies `event`, returning the updated request (same id, version unchanged: the store
    /// bumps it when the compare-and-set succeeds).
    pub fn transition(
        &self,
        event: RequestEvent,
        now: DateTime<Utc>,
    ) -> Result<AccessRequest, TransitionError> {
        let status = self.status.apply(event)?;
        Ok(AccessRequest {
            status,
            updated_at: now,
            ..self.clone()
        })
    }
}

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Actor {
    /// A Slack user (approver, requester, …).
    User {
        /// The Slack workspace.
        team_id: String,
        /// The Slack user id.
        user_id: String,
        /// The display name.
        name: String,
    },
    /// Someone using the admin API.
    Admin {
        /// The admin's name, as the API caller gave it.
        name: String,
    },
    /// Gatehouse itself (auto-approval, expiry, time-out, reconciliation).
    System,
}

impl Actor {
    /// Stable short form for storage and audit: `slack:T1/U1`, `admin:alice`, `system`.
    pub fn id(&self) -> String {
        match self {
            Actor::User {
                team_id, user_id, ..
            } => format!("slack:{}", SubjectKey::new(team_id, user_id)),
            Actor::Admin { name } => format!("admin:{name}"),
            Actor::System => "system".to_string(),
        }
    }

    /// How messages show this actor.
    pub fn mention(&self) -> String {
        match self {
            Actor::User { user_id, .. } => format!("<@{user_id}>"),
            Actor::Admin { name } => format!("{name} (admin)"),
            Actor::System => "Gatehouse".to_string(),
        }
    }

    /// Whether this actor is the person `s` (same workspace and user).
    pub fn is_subject(&self, s: &Subject) -> bool {
        matches!(self, Actor::User { team_id, user_id, .. } if *user_id == s.user_id && *team_id == s.team_id)
    }
}

/// An approver's vote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The request.
    pub request_id: RequestId,
    /// Who voted.
    pub actor: Actor,
    /// Approve or deny.
    pub kind: DecisionKind,
    /// When.
    pub at: DateTime<Utc>,
    /// The reason given with a deny.
    #[serde(default)]
    pub comment: Option<String>,
}

/// An approver's vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Yes.
    Approve,
    /// No.
    Deny,
}

impl DecisionKind {
    /// The stored name (`approve`, `deny`).
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Approve => "approve",
            DecisionKind::Deny => "deny",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RequestEvent as E;
    use RequestStatus as S;

    /// The complete table of legal transitions; every other (status, event) pair must fail.
    const LEGAL: [(RequestStatus, RequestEvent, RequestStatus); 8] = [
        (S::Pending, E::Approve, S::Approved),
        (S::Pending, E::Deny, S::Denied),
        (S::Pending, E::Cancel, S::Cancelled),
        (S::Pending, E::TimeOut, S::TimedOut),
        (S::Approved, E::Provisioned, S::Active),
        (S::Approved, E::ProvisioningFailed, S::Failed),
        (S::Active, E::Expire, S::Expired),
        (S::Active, E::Revoke, S::Revoked),
    ];

    #[test]
    fn every_legal_transition() {
        for (from, event, to) in LEGAL {
            assert_eq!(from.apply(event), Ok(to), "{from} --{event:?}-->");
        }
    }

    #[test]
    fn every_illegal_transition_is_a_typed_error() {
        let mut illegal = 0;
        for from in S::ALL {
            for event in E::ALL {
                if LEGAL.iter().any(|(f, e, _)| *f == from && *e == event) {
                    continue;
                }
                illegal += 1;
                assert_eq!(from.apply(event), Err(TransitionError { from, event }));
            }
        }
        assert_eq!(illegal, 9 * 8 - LEGAL.len());
        assert_eq!(
            S::Denied.apply(E::Approve).unwrap_err().to_string(),
            "cannot approve a request that is denied"
        );
    }

    #[test]
    fn terminal_statuses_have_no_way_out() {
        for from in S::ALL.into_iter().filter(|s| s.is_terminal()) {
            for event in E::ALL {
                assert!(from.apply(event).is_err());
            }
        }
    }

    #[test]
    fn status_round_trips_as_text() {
        for s in S::ALL {
            assert_eq!(s.as_str().parse::<RequestStatus>().unwrap(), s);
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
    }
}
