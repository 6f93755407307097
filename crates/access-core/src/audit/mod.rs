//! The audit trail: one event per state transition, hash-chained so that editing or deleting any
//! row is detectable.
//!
//! Each stored event carries `seq` (1, 2, 3, …), the hash of the previous event and its own hash:
//! `hash = SHA-256(canonical JSON of {seq, id, at (µs), kind, actor, subject, resource, request,
//! grant, details, prev_hash})`. [`verify_chain`] walks the events in order and names the first
//! one that does not match. The hashing lives here, not in the store, so every store (and the
//! BigQuery export, which carries the hash) computes the same thing.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{AuditEventId, GrantId, RequestId, ResourceId};
use crate::request::Actor;

mod compare;
mod seal;
#[cfg(test)]
mod tests;
mod verify;

pub use compare::*;
pub use seal::*;
pub use verify::*;

/// The hash the first event points back to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. The names are the Cloud Connexa document's where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A person filed a request.
    AccessRequested,
    /// An approver approved, and more approvals are needed (N of M).
    ApprovalRecorded,
    /// A request was approved (by its last approver, or automatically).
    AccessApproved,
    /// An approver denied a request.
    AccessDenied,
    /// The requester (or an admin) withdrew a pending request.
    RequestCancelled,
    /// Nobody decided a pending request in time.
    RequestTimedOut,
    /// The provider granted the access.
    AccessGranted,
    /// A live grant was lengthened.
    AccessExtended,
    /// Provisioning failed; the request failed.
    GrantFailed,
    /// Someone asked for a grant to end early.
    RevocationRequested,
    /// A grant ended early at the provider.
    AccessRevoked,
    /// A grant ended at its expiry.
    AccessExpired,
    /// A provider-side fact worth keeping (`user_created`, `group_created`, `user_added_to_group`,
    /// `user_removed_from_group`, `service_account_created`, …): the name is in `details.event`.
    ProviderEvent,
    /// A reconciliation repair.
    DriftRepaired,
    /// An event webhook was disabled after repeated delivery failures (`details.webhook`).
    WebhookDisabled,
    /// An event webhook was enabled again by an admin; it catches up from its cursor.
    WebhookEnabled,
    /// Break-glass: access granted at once without approval (`request … --emergency …`).
    EmergencyGranted,
    /// Break-glass: an approver reviewed an emergency grant (`details.outcome`: `reviewed` or
    /// `revoked`).
    EmergencyReviewed,
    /// Someone outside the admin group tried an admin command (`/access admin …`); nothing
    /// changed. `details.command` says which.
    AdminCommandRefused,
    /// An approver handed their approving to someone else for a period.
    DelegationCreated,
    /// A delegation was withdrawn (by its delegator, or replaced by a new one).
    DelegationRevoked,
    /// A pending request was not decided within its policy's escalation delay and was shown to
    /// the second approver set.
    RequestEscalated,
}

impl AuditKind {
    /// Every kind, in declaration order.
    pub const ALL: [AuditKind; 22] = [
        AuditKind::AccessRequested,
        AuditKind::ApprovalRecorded,
        AuditKind::AccessApproved,
        AuditKind::AccessDenied,
        AuditKind::RequestCancelled,
        AuditKind::RequestTimedOut,
        AuditKind::AccessGranted,
        AuditKind::AccessExtended,
        AuditKind::GrantFailed,
        AuditKind::RevocationRequested,
        AuditKind::AccessRevoked,
        AuditKind::AccessExpired,
        AuditKind::ProviderEvent,
        AuditKind::DriftRepaired,
        AuditKind::WebhookDisabled,
        AuditKind::WebhookEnabled,
        AuditKind::EmergencyGranted,
        AuditKind::EmergencyReviewed,
        AuditKind::AdminCommandRefused,
        AuditKind::DelegationCreated,
        AuditKind::DelegationRevoked,
        AuditKind::RequestEscalated,
    ];

    /// The stored name (`access_requested`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::AccessRequested => "access_requested",
            AuditKind::ApprovalRecorded => "approval_recorded",
            AuditKind::AccessApproved => "access_approved",
            AuditKind::AccessDenied => "access_denied",
            AuditKind::RequestCancelled => "request_cancelled",
            AuditKind::RequestTimedOut => "request_timed_out",
            AuditKind::AccessGranted => "access_granted",
            AuditKind::AccessExtended => "access_extended",
            AuditKind::GrantFailed => "grant_failed",
            AuditKind::RevocationRequested => "revocation_requested",
            AuditKind::AccessRevoked => "access_revoked",
            AuditKind::AccessExpired => "access_expired",
            AuditKind::ProviderEvent => "provider_event",
            AuditKind::DriftRepaired => "drift_repaired",
            AuditKind::WebhookDisabled => "webhook_disabled",
            AuditKind::WebhookEnabled => "webhook_enabled",
            AuditKind::EmergencyGranted => "emergency_granted",
            AuditKind::EmergencyReviewed => "emergency_reviewed",
            AuditKind::AdminCommandRefused => "admin_command_refused",
            AuditKind::DelegationCreated => "delegation_created",
            AuditKind::DelegationRevoked => "delegation_revoked",
            AuditKind::RequestEscalated => "request_escalated",
        }
    }

    /// The kind stored as `s`; `None` for an unknown name.
    pub fn parse(s: &str) -> Option<AuditKind> {
        AuditKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event before the store places it in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The event's id.
    pub id: AuditEventId,
    /// When it happened (microsecond precision).
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: AuditKind,
    /// Who did it.
    pub actor: Actor,
    /// `team/user` of the person the event is about, when there is one.
    pub subject: Option<String>,
    /// The resource it concerns, if any.
    pub resource: Option<ResourceId>,
    /// The request it concerns, if any.
    pub request_id: Option<RequestId>,
    /// The grant it concerns, if any.
    pub grant_id: Option<GrantId>,
    /// Kind-specific details (a JSON object).
    pub details: serde_json::Value,
}

impl AuditRecord {
    /// A record of `kind` by `actor` at `at`, about nothing yet (see the builder methods).
    pub fn new(kind: AuditKind, actor: Actor, at: DateTime<Utc>) -> Self {
        Self {
            id: AuditEventId::new(),
            // Stores keep microseconds; truncate now so the hash computed before and after a
            // round trip through the database is the same.
            at: truncate_to_micros(at),
            kind,
            actor,
            subject: None,
            resource: None,
            request_id: None,
            grant_id: None,
            details: serde_json::Value::Object(Default::default()),
        }
    }

    /// Says whom the event is about.
    pub fn subject(mut self, team_id: &str, user_id: &str) -> Self {
        self.subject = Some(format!("{team_id}/{user_id}"));
        self
    }

    /// Says which resource the event concerns.
    pub fn resource(mut self, r: &ResourceId) -> Self {
        self.resource = Some(r.clone());
        self
    }

    /// Says which request the event concerns.
    pub fn request(mut self, id: RequestId) -> Self {
        self.request_id = Some(id);
        self
    }

    /// Says which grant the event concerns.
    pub fn grant(mut self, id: GrantId) -> Self {
        self.grant_id = Some(id);
        self
    }

    /// Sets the details (a JSON object).
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// A stored event: the record plus its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Its position in the chain (from 1).
    pub seq: i64,
    /// The event as recorded.
    #[serde(flatten)]
    pub record: AuditRecord,
    /// The hash of the event before it ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// The hash over this event and `prev_hash`.
    pub hash: String,
}

impl AuditEvent {
    /// The event as the cells of one CSV row, in the order of the audit exports' header:
    /// `seq, id, at, kind, actor, subject, resource, request_id, grant_id, details, prev_hash,
    /// hash` (absent values empty; `details` as compact JSON). The console's and the monthly
    /// report's exports both write these, so the two files always agree.
    pub fn csv_cells(&self) -> [String; 12] {
        let r = &self.record;
        [
            self.seq.to_string(),
            r.id.to_string(),
            r.at.to_rfc3339(),
            r.kind.as_str().to_string(),
            r.actor.id(),
            r.subject.clone().unwrap_or_default(),
            r.resource
                .as_ref()
                .map(|x| x.to_string())
                .unwrap_or_default(),
            r.request_id.map(|x| x.to_string()).unwrap_or_default(),
            r.grant_id.map(|x| x.to_string()).unwrap_or_default(),
            r.details.to_string(),
            self.prev_hash.clone(),
            self.hash.clone(),
        ]
    }
}

/// `t` cut to whole microseconds, the precision stores keep.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The unkeyed (legacy) hash of one event given the hash of the one before it. Chains written
/// before `GATEHOUSE_AUDIT_KEY` was configured use it; anyone can recompute it, so it only
/// catches edits made by someone who does not bother to.
pub fn chain_hash(seq: i64, record: &AuditRecord, prev_hash: &str) -> String {
    // serde_json's Map is ordered by key, so this serialisation is canonical.
    let canonical = serde_json::json!({
        "seq": seq,
        "id": record.id.to_string(),
        "at": record.at.timestamp_micros(),
        "kind": record.kind.as_str(),
        "actor": record.actor.id(),
        "subject": record.subject,
        "resource": record.resource.as_ref().map(|r| r.as_str()),
        "request": record.request_id.map(|r| r.to_string()),
        "grant": record.grant_id.map(|g| g.to_string()),
        "details": record.details,
        "prev_hash": prev_hash,
    });
    let mut h = Sha256::new();
    h.update(canonical.to_string().as_bytes());
    hex::encode(h.finalize())
}
