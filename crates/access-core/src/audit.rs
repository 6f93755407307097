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

/// The hash the first event points back to.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. The names are the Cloud Connexa document's where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    AccessRequested,
    ApprovalRecorded,
    AccessApproved,
    AccessDenied,
    RequestCancelled,
    RequestTimedOut,
    AccessGranted,
    AccessExtended,
    GrantFailed,
    RevocationRequested,
    AccessRevoked,
    AccessExpired,
    /// A provider-side fact worth keeping (`user_created`, `group_created`, `user_added_to_group`,
    /// `user_removed_from_group`, `service_account_created`, …): the name is in `details.event`.
    ProviderEvent,
    /// A reconciliation repair.
    DriftRepaired,
}

impl AuditKind {
    pub const ALL: [AuditKind; 14] = [
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
    ];

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
        }
    }

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
    pub id: AuditEventId,
    pub at: DateTime<Utc>,
    pub kind: AuditKind,
    pub actor: Actor,
    /// `team/user` of the person the event is about, when there is one.
    pub subject: Option<String>,
    pub resource: Option<ResourceId>,
    pub request_id: Option<RequestId>,
    pub grant_id: Option<GrantId>,
    pub details: serde_json::Value,
}

impl AuditRecord {
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

    pub fn subject(mut self, team_id: &str, user_id: &str) -> Self {
        self.subject = Some(format!("{team_id}/{user_id}"));
        self
    }

    pub fn resource(mut self, r: &ResourceId) -> Self {
        self.resource = Some(r.clone());
        self
    }

    pub fn request(mut self, id: RequestId) -> Self {
        self.request_id = Some(id);
        self
    }

    pub fn grant(mut self, id: GrantId) -> Self {
        self.grant_id = Some(id);
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// A stored event: the record plus its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub seq: i64,
    #[serde(flatten)]
    pub record: AuditRecord,
    pub prev_hash: String,
    pub hash: String,
}

pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The hash of one event given the hash of the one before it.
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

/// Places `record` after an event with sequence `prev_seq` and hash `prev_hash`.
pub fn seal(record: AuditRecord, prev_seq: i64, prev_hash: &str) -> AuditEvent {
    let seq = prev_seq + 1;
    let hash = chain_hash(seq, &record, prev_hash);
    AuditEvent {
        seq,
        record,
        prev_hash: prev_hash.to_string(),
        hash,
    }
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainVerification {
    pub ok: bool,
    pub events_checked: u64,
    /// The first event that does not match, and why.
    pub first_bad: Option<ChainBreak>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBreak {
    /// Sequence number of the offending row (or where a missing one should be).
    pub seq: i64,
    pub event_id: Option<String>,
    pub reason: String,
}

/// Incremental verifier: feed events in `seq` order.
#[derive(Debug)]
pub struct ChainVerifier {
    prev_seq: i64,
    prev_hash: String,
    checked: u64,
    first_bad: Option<ChainBreak>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            prev_seq: 0,
            prev_hash: GENESIS_HASH.to_string(),
            checked: 0,
            first_bad: None,
        }
    }
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks one event; returns false once the chain is broken (later events are not checked).
    pub fn push(&mut self, e: &AuditEvent) -> bool {
        if self.first_bad.is_some() {
            return false;
        }
        self.checked += 1;
        let bad = |reason: String| ChainBreak {
            seq: e.seq,
            event_id: Some(e.record.id.to_string()),
            reason,
        };
        if e.seq != self.prev_seq + 1 {
            self.first_bad = Some(ChainBreak {
                seq: self.prev_seq + 1,
                event_id: Some(e.record.id.to_string()),
                reason: format!(
                    "event {} is missing (found {} after {}): a row was deleted",
                    self.prev_seq + 1,
                    e.seq,
                    self.prev_seq
                ),
            });
            return false;
        }
        if e.prev_hash != self.prev_hash {
            self.first_bad = Some(bad(format!(
                "prev_hash does not match the hash of event {}: a row was deleted or replaced",
                self.prev_seq
            )));
            return false;
        }
        let expected = chain_hash(e.seq, &e.record, &e.prev_hash);
        if expected != e.hash {
            self.first_bad = Some(bad(
                "content does not match its hash: the row was edited".to_string()
            ));
            return false;
        }
        self.prev_seq = e.seq;
        self.prev_hash = e.hash.clone();
        true
    }

    /// Compares the last event seen with the chain head the store keeps, which catches the
    /// deletion of the newest rows.
    pub fn finish(mut self, head: Option<(i64, String)>) -> ChainVerification {
        if self.first_bad.is_none() {
            if let Some((head_seq, head_hash)) = head {
                if head_seq != self.prev_seq || head_hash != self.prev_hash {
                    self.first_bad = Some(ChainBreak {
                        seq: self.prev_seq + 1,
                        event_id: None,
                        reason: format!(
                            "the chain head says {head_seq} events but only {} were found: the newest rows were deleted",
                            self.prev_seq
                        ),
                    });
                }
            }
        }
        ChainVerification {
            ok: self.first_bad.is_none(),
            events_checked: self.checked,
            first_bad: self.first_bad,
        }
    }

    pub fn last(&self) -> (i64, &str) {
        (self.prev_seq, &self.prev_hash)
    }
}

/// Verifies a complete, ordered list of events.
pub fn verify_chain<'a>(
    events: impl IntoIterator<Item = &'a AuditEvent>,
    head: Option<(i64, String)>,
) -> ChainVerification {
    let mut v = ChainVerifier::new();
    for e in events {
        if !v.push(e) {
            break;
        }
    }
    v.finish(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<AuditEvent> {
        let mut out: Vec<AuditEvent> = Vec::new();
        for i in 0..n {
            let (seq, hash) = out
                .last()
                .map(|e| (e.seq, e.hash.clone()))
                .unwrap_or((0, GENESIS_HASH.into()));
            let r = AuditRecord::new(AuditKind::AccessRequested, Actor::System, Utc::now())
                .details(serde_json::json!({"i": i}));
            out.push(seal(r, seq, &hash));
        }
        out
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        let v = verify_chain(&c, Some((5, c[4].hash.clone())));
        assert!(v.ok, "{v:?}");
        assert_eq!(v.events_checked, 5);
    }

    #[test]
    fn edited_row_is_named() {
        let mut c = chain(5);
        c[2].record.details = serde_json::json!({"i": 99});
        let v = verify_chain(&c, None);
        assert!(!v.ok);
        let b = v.first_bad.unwrap();
        assert_eq!(b.seq, 3);
        assert!(b.reason.contains("edited"));
    }

    #[test]
    fn deleted_row_is_named() {
        let mut c = chain(5);
        c.remove(1);
        let v = verify_chain(&c, None);
        assert_eq!(v.first_bad.unwrap().seq, 2);
    }

    #[test]
    fn deleted_tail_is_caught_by_the_head() {
        let c = chain(5);
        let head = Some((5, c[4].hash.clone()));
        let v = verify_chain(&c[..4], head);
        assert!(!v.ok);
        assert!(v.first_bad.unwrap().reason.contains("newest rows"));
    }

    #[test]
    fn rehashed_forgery_breaks_the_link() {
        // An attacker edits row 2 and recomputes its hash: row 3's prev_hash no longer matches.
        let mut c = chain(4);
        c[1].record.details = serde_json::json!({"forged": true});
        c[1].hash = chain_hash(c[1].seq, &c[1].record, &c[1].prev_hash);
        let v = verify_chain(&c, None);
        assert_eq!(v.first_bad.unwrap().seq, 3);
    }
}
