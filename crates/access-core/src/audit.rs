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
use hmac::{Hmac, Mac};
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

/// The environment variable holding the audit keys (same format as `GATEHOUSE_ENCRYPTION_KEY`,
/// parsed by [`crate::keys::parse_key_list`]).
pub const AUDIT_KEY_ENV: &str = "GATEHOUSE_AUDIT_KEY";

/// Keyed hashes and MACs are written `k1.<key id>.<hex HMAC-SHA256>`: the key id travels with
/// the hash (and so into `prev_hash` of the next event and into the BigQuery export) without a
/// schema change, and an unkeyed hash (64 bare hex digits) can never be mistaken for one.
const KEYED_PREFIX: &str = "k1.";

type HmacSha256 = Hmac<Sha256>;

/// The audit keys: the first signs, every one verifies (rotation, like the token keys).
/// `Debug` shows key ids only.
#[derive(Clone)]
pub struct AuditKeyring {
    keys: Vec<(String, [u8; 32])>,
}

impl fmt::Debug for AuditKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("AuditKeyring")
            .field("key_ids", &ids)
            .finish()
    }
}

impl AuditKeyring {
    /// From raw keys; `None` when the list is empty.
    pub fn from_keys(keys: &[[u8; 32]]) -> Option<Self> {
        if keys.is_empty() {
            return None;
        }
        Some(Self {
            keys: keys
                .iter()
                .map(|k| (hex::encode(crate::keys::key_id(k)), *k))
                .collect(),
        })
    }

    /// Parses a `GATEHOUSE_AUDIT_KEY` value.
    pub fn from_spec(spec: &str) -> Result<Self, crate::keys::KeySpecError> {
        let keys = crate::keys::parse_key_list(AUDIT_KEY_ENV, spec)?;
        Self::from_keys(&keys).ok_or(crate::keys::KeySpecError::Empty { var: AUDIT_KEY_ENV })
    }

    /// Key id of the signing key.
    pub fn primary_key_id(&self) -> &str {
        &self.keys[0].0
    }

    fn key(&self, id: &str) -> Option<&[u8; 32]> {
        self.keys.iter().find(|(k, _)| k == id).map(|(_, k)| k)
    }

    fn mac_with(key_id: &str, key: &[u8; 32], msg: &[u8]) -> String {
        // HMAC accepts keys of any length, so this cannot fail; if it ever did, the result is a
        // MAC that matches nothing, so verification fails closed.
        let Ok(mut m) = <HmacSha256 as Mac>::new_from_slice(key) else {
            return format!("{KEYED_PREFIX}{key_id}.invalid");
        };
        m.update(msg);
        format!(
            "{KEYED_PREFIX}{key_id}.{}",
            hex::encode(m.finalize().into_bytes())
        )
    }

    /// `k1.<primary key id>.<HMAC>` over `msg`.
    pub fn sign(&self, msg: &[u8]) -> String {
        let (id, key) = &self.keys[0];
        Self::mac_with(id, key, msg)
    }

    /// Checks a `k1.` MAC over `msg` under whichever configured key it names.
    pub fn check(&self, msg: &[u8], mac: &str) -> Result<(), MacError> {
        let KeyedForm::Keyed { key_id, .. } = keyed_form(mac) else {
            return Err(MacError::NotKeyed);
        };
        let key = self.key(key_id).ok_or_else(|| MacError::UnknownKey {
            key_id: key_id.to_string(),
        })?;
        let expected = Self::mac_with(key_id, key, msg);
        // Constant time is not needed here: the verifier holds the key and compares its own
        // recomputation; nothing is being authenticated against a remote guess.
        if expected == mac {
            Ok(())
        } else {
            Err(MacError::Mismatch)
        }
    }
}

/// Why a MAC did not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// The MAC is a plain hash, not keyed.
    #[error("it is not a keyed MAC")]
    NotKeyed,
    /// The MAC names a key the keyring does not hold.
    #[error("it names key id {key_id}, which is not in GATEHOUSE_AUDIT_KEY")]
    UnknownKey {
        /// The key id it names.
        key_id: String,
    },
    /// The MAC is wrong.
    #[error("it does not match")]
    Mismatch,
}

enum KeyedForm<'a> {
    Unkeyed,
    Keyed { key_id: &'a str },
    Malformed,
}

fn keyed_form(h: &str) -> KeyedForm<'_> {
    if let Some(rest) = h.strip_prefix(KEYED_PREFIX) {
        match rest.split_once('.') {
            Some((id, mac))
                if id.len() == 2 * crate::keys::KEY_ID_LEN
                    && mac.len() == 64
                    && mac.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                KeyedForm::Keyed { key_id: id }
            }
            _ => KeyedForm::Malformed,
        }
    } else if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
        KeyedForm::Unkeyed
    } else {
        KeyedForm::Malformed
    }
}

/// True when `hash` is a keyed (`k1.`) hash.
pub fn is_keyed(hash: &str) -> bool {
    matches!(keyed_form(hash), KeyedForm::Keyed { .. })
}

/// The canonical encoding a keyed link covers: every field of the event, including the whole
/// actor (display name too) and its short id (stored in its own column), the previous hash and
/// the key id. JSON with sorted keys (serde_json's default map), prefixed with a domain tag so a
/// MAC over an event can never be replayed as a MAC over a checkpoint.
fn keyed_message(seq: i64, record: &AuditRecord, prev_hash: &str, key_id: &str) -> Vec<u8> {
    use std::io::Write as _;
    // Written field by field in sorted key order (the same bytes `json!` with serde_json's sorted
    // map would give) so that verification does not clone `details` for every event. Writing to
    // a Vec cannot fail; a serialisation error would only ever make the MAC not match.
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"gatehouse-audit-event-v1\n");
    let s = |out: &mut Vec<u8>, v: &dyn erased::Ser| v.write(out);
    let _ = write!(out, "{{\"actor\":");
    s(
        &mut out,
        &serde_json::to_value(&record.actor).unwrap_or(serde_json::Value::Null),
    );
    let _ = write!(out, ",\"actor_id\":");
    s(&mut out, &record.actor.id());
    let _ = write!(out, ",\"at\":{},\"details\":", record.at.timestamp_micros());
    s(&mut out, &record.details);
    let _ = write!(out, ",\"grant\":");
    s(&mut out, &record.grant_id.map(|g| g.to_string()));
    let _ = write!(out, ",\"id\":");
    s(&mut out, &record.id.to_string());
    let _ = write!(out, ",\"key_id\":");
    s(&mut out, &key_id);
    let _ = write!(out, ",\"kind\":\"{}\",\"prev_hash\":", record.kind.as_str());
    s(&mut out, &prev_hash);
    let _ = write!(out, ",\"request\":");
    s(&mut out, &record.request_id.map(|r| r.to_string()));
    let _ = write!(out, ",\"resource\":");
    s(&mut out, &record.resource.as_ref().map(|r| r.as_str()));
    let _ = write!(out, ",\"seq\":{seq},\"subject\":");
    s(&mut out, &record.subject);
    out.push(b'}');
    out
}

mod erased {
    /// Serialises any value as JSON into a buffer (object-safe, for `keyed_message`).
    pub trait Ser {
        fn write(&self, out: &mut Vec<u8>);
    }
    impl<T: serde::Serialize + ?Sized> Ser for T {
        fn write(&self, out: &mut Vec<u8>) {
            let _ = serde_json::to_writer(out, self);
        }
    }
}

#[cfg(test)]
fn keyed_message_reference(
    seq: i64,
    record: &AuditRecord,
    prev_hash: &str,
    key_id: &str,
) -> Vec<u8> {
    let canonical = serde_json::json!({
        "seq": seq,
        "id": record.id.to_string(),
        "at": record.at.timestamp_micros(),
        "kind": record.kind.as_str(),
        "actor": serde_json::to_value(&record.actor).unwrap_or(serde_json::Value::Null),
        "actor_id": record.actor.id(),
        "subject": record.subject,
        "resource": record.resource.as_ref().map(|r| r.as_str()),
        "request": record.request_id.map(|r| r.to_string()),
        "grant": record.grant_id.map(|g| g.to_string()),
        "details": record.details,
        "prev_hash": prev_hash,
        "key_id": key_id,
    });
    let mut out = b"gatehouse-audit-event-v1\n".to_vec();
    out.extend_from_slice(canonical.to_string().as_bytes());
    out
}

/// The keyed link of one event under the keyring's signing key.
pub fn keyed_hash(keys: &AuditKeyring, seq: i64, record: &AuditRecord, prev_hash: &str) -> String {
    keys.sign(&keyed_message(
        seq,
        record,
        prev_hash,
        keys.primary_key_id(),
    ))
}

/// Places `record` after an event with sequence `prev_seq` and hash `prev_hash`, unkeyed.
pub fn seal(record: AuditRecord, prev_seq: i64, prev_hash: &str) -> AuditEvent {
    seal_with(record, prev_seq, prev_hash, None)
}

/// Places `record` in the chain: keyed when `keys` is given. The first keyed event after an
/// unkeyed chain simply points back at the last unkeyed hash; that event is the switch.
pub fn seal_with(
    record: AuditRecord,
    prev_seq: i64,
    prev_hash: &str,
    keys: Option<&AuditKeyring>,
) -> AuditEvent {
    let seq = prev_seq + 1;
    let hash = match keys {
        Some(k) => keyed_hash(k, seq, &record, prev_hash),
        None => chain_hash(seq, &record, prev_hash),
    };
    AuditEvent {
        seq,
        record,
        prev_hash: prev_hash.to_string(),
        hash,
    }
}

/// A signed statement "the chain had `seq` events ending in `hash` at `at`". Written outside the
/// database (log, BigQuery export) so that a database administrator who rewrites history is
/// contradicted by something they cannot reach; also kept in the database as the starting point
/// of incremental verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    /// How many events the chain had.
    pub seq: i64,
    /// The hash of its last event.
    pub hash: String,
    /// When the statement was made.
    pub at: DateTime<Utc>,
    /// Key id of the MAC; `None` for an unkeyed checkpoint (no key configured).
    pub key_id: Option<String>,
    /// `k1.<key id>.<HMAC>` over (seq, hash, at); `None` when unkeyed.
    pub mac: Option<String>,
}

fn checkpoint_message(seq: i64, hash: &str, at: DateTime<Utc>) -> Vec<u8> {
    format!(
        "gatehouse-audit-checkpoint-v1\n{seq}\n{hash}\n{}",
        at.timestamp_micros()
    )
    .into_bytes()
}

impl AuditCheckpoint {
    /// A checkpoint of the chain at `seq`/`hash`, signed with the primary key of `keys` (unkeyed without).
    pub fn new(seq: i64, hash: &str, at: DateTime<Utc>, keys: Option<&AuditKeyring>) -> Self {
        let at = truncate_to_micros(at);
        let mac = keys.map(|k| k.sign(&checkpoint_message(seq, hash, at)));
        Self {
            seq,
            hash: hash.to_string(),
            at,
            key_id: keys.map(|k| k.primary_key_id().to_string()),
            mac,
        }
    }

    /// Checks the MAC. An unkeyed checkpoint never verifies under a keyring.
    pub fn check(&self, keys: &AuditKeyring) -> Result<(), MacError> {
        let mac = self.mac.as_deref().ok_or(MacError::NotKeyed)?;
        keys.check(&checkpoint_message(self.seq, &self.hash, self.at), mac)
    }
}

/// The MAC the store keeps next to the chain head, so that pointing the head at another event
/// (after truncating the tail, say) needs the key.
pub fn head_mac(keys: &AuditKeyring, seq: i64, hash: &str) -> String {
    keys.sign(format!("gatehouse-audit-head-v1\n{seq}\n{hash}").as_bytes())
}

/// Checks the MAC [`head_mac`] made for the chain head `seq`/`hash`.
pub fn check_head_mac(
    keys: &AuditKeyring,
    seq: i64,
    hash: &str,
    mac: &str,
) -> Result<(), MacError> {
    keys.check(
        format!("gatehouse-audit-head-v1\n{seq}\n{hash}").as_bytes(),
        mac,
    )
}

/// What kind of tampering a break looks like. The verifier names the most specific kind the
/// evidence supports; `Edited` is the fallback for "this row's content does not match its link".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TamperKind {
    /// A row's content (or its stored hash) was changed.
    Edited,
    /// A row is missing (a gap in `seq`, or the rows after it were renumbered).
    Deleted,
    /// A row that was never sealed sits in the chain.
    Inserted,
    /// Rows are in a different order than they were sealed in.
    Reordered,
    /// The newest rows are gone.
    Truncated,
    /// Keyed events were replaced by events with recomputed unkeyed hashes.
    RewrittenUnkeyed,
    /// The chain head (or its MAC) was changed.
    HeadSwapped,
    /// A keyed event names a key that is not configured: it cannot be checked.
    UnknownKey,
    /// A row does not parse.
    Unreadable,
    /// The local chain and the export disagree on where the chain ends.
    Diverged,
}

impl TamperKind {
    /// The stored name (`edited`, `deleted`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            TamperKind::Edited => "edited",
            TamperKind::Deleted => "deleted",
            TamperKind::Inserted => "inserted",
            TamperKind::Reordered => "reordered",
            TamperKind::Truncated => "truncated",
            TamperKind::RewrittenUnkeyed => "rewritten_unkeyed",
            TamperKind::HeadSwapped => "head_swapped",
            TamperKind::UnknownKey => "unknown_key",
            TamperKind::Unreadable => "unreadable",
            TamperKind::Diverged => "diverged",
        }
    }
}

impl fmt::Display for TamperKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainVerification {
    /// Whether the chain checked out.
    pub ok: bool,
    /// How many events were walked.
    pub events_checked: u64,
    /// The first event that does not match, and why.
    pub first_bad: Option<ChainBreak>,
    /// Whether the newest event is keyed (HMAC under `GATEHOUSE_AUDIT_KEY`). An unkeyed chain can
    /// be rewritten by anyone with write access to the database.
    #[serde(default)]
    pub keyed: bool,
    /// Sequence number of the first keyed event seen (the switch from unkeyed), if any.
    #[serde(default)]
    pub keyed_from: Option<i64>,
    /// The walk started after this event (0 for a full walk; a checkpoint otherwise).
    #[serde(default)]
    pub verified_from: i64,
}

/// Where and how a chain stops checking out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBreak {
    /// Sequence number of the offending row (or where a missing one should be).
    pub seq: i64,
    /// The id of the offending event, when there is one.
    pub event_id: Option<String>,
    /// What the tampering looks like.
    pub kind: TamperKind,
    /// What was found, for people.
    pub reason: String,
}

impl ChainVerification {
    /// A failed verification that checked nothing (missing head, unreadable row, …).
    pub fn broken(events_checked: u64, b: ChainBreak) -> Self {
        Self {
            ok: false,
            events_checked,
            first_bad: Some(b),
            keyed: false,
            keyed_from: None,
            verified_from: 0,
        }
    }
}

/// Incremental verifier: feed events in `seq` order. A suspected break is held for one more
/// event so the next row can tell an insertion or a swap from an edit.
#[derive(Debug)]
pub struct ChainVerifier {
    keys: Option<AuditKeyring>,
    start: i64,
    prev_seq: i64,
    prev_hash: String,
    /// Hash of the event before `prev`: an event pointing at it means `prev` was inserted.
    prev_prev_hash: Option<String>,
    keyed_from: Option<i64>,
    checked: u64,
    pending: Option<(ChainBreak, String)>,
    first_bad: Option<ChainBreak>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::with_keys(None)
    }
}

impl ChainVerifier {
    /// An unkeyed verifier: keyed events are reported as unverifiable.
    pub fn new() -> Self {
        Self::default()
    }

    /// A verifier that checks keyed events with `keys` (unkeyed when `None`).
    pub fn with_keys(keys: Option<AuditKeyring>) -> Self {
        Self {
            keys,
            start: 0,
            prev_seq: 0,
            prev_hash: GENESIS_HASH.to_string(),
            prev_prev_hash: None,
            keyed_from: None,
            checked: 0,
            pending: None,
            first_bad: None,
        }
    }

    /// Starts after an event already verified (a checkpoint): `seq` and its `hash`.
    pub fn resume(keys: Option<AuditKeyring>, seq: i64, hash: &str) -> Self {
        let mut v = Self::with_keys(keys);
        v.start = seq;
        v.prev_seq = seq;
        v.prev_hash = hash.to_string();
        if is_keyed(hash) {
            v.keyed_from = Some(seq);
        }
        v
    }

    /// Records a break found outside the chain arithmetic (e.g. a column the event type does not
    /// carry, checked by the store).
    pub fn reject(&mut self, seq: i64, event_id: Option<String>, kind: TamperKind, reason: String) {
        if self.first_bad.is_none() {
            if let Some((b, _)) = self.pending.take() {
                self.first_bad = Some(b);
            } else {
                // The rejected event was examined: it counts as checked.
                self.checked += 1;
                self.first_bad = Some(ChainBreak {
                    seq,
                    event_id,
                    kind,
                    reason,
                });
            }
        }
    }

    /// Checks one event; returns false once the chain is broken (later events are not checked).
    pub fn push(&mut self, e: &AuditEvent) -> bool {
        if self.first_bad.is_some() {
            return false;
        }
        if let Some((mut b, suspect_hash)) = self.pending.take() {
            // The event after a suspect row: if it links to the row before the suspect, the
            // suspect was inserted (bad content) or the two were swapped (bad link).
            if e.prev_hash == self.prev_hash {
                b.kind = if b.kind == TamperKind::Edited {
                    TamperKind::Inserted
                } else {
                    TamperKind::Reordered
                };
                b.reason = format!(
                    "{}; the next event links to event {} directly: {}",
                    b.reason,
                    self.prev_seq,
                    if b.kind == TamperKind::Inserted {
                        "this row was inserted"
                    } else {
                        "rows were reordered"
                    }
                );
            }
            // Otherwise (the next event links to the suspect, or to neither) the evidence is a
            // bad link (rows removed and renumbered: `Deleted`) or bad content (`Edited`).
            let _ = suspect_hash;
            self.first_bad = Some(b);
            return false;
        }
        self.checked += 1;
        let bad = |kind: TamperKind, reason: String| ChainBreak {
            seq: e.seq,
            event_id: Some(e.record.id.to_string()),
            kind,
            reason,
        };
        if e.seq != self.prev_seq + 1 {
            self.first_bad = Some(ChainBreak {
                seq: self.prev_seq + 1,
                event_id: Some(e.record.id.to_string()),
                kind: TamperKind::Deleted,
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
            if self.prev_prev_hash.as_deref() == Some(e.prev_hash.as_str()) {
                self.first_bad = Some(ChainBreak {
                    seq: self.prev_seq,
                    event_id: None,
                    kind: TamperKind::Inserted,
                    reason: format!(
                        "event {} links past event {}: event {} was inserted",
                        e.seq, self.prev_seq, self.prev_seq
                    ),
                });
                return false;
            }
            self.pending = Some((
                bad(
                    TamperKind::Deleted,
                    format!(
                        "prev_hash does not match the hash of event {}: a row was deleted or replaced",
                        self.prev_seq
                    ),
                ),
                e.hash.clone(),
            ));
            return true;
        }
        match keyed_form(&e.hash) {
            KeyedForm::Unkeyed => {
                if let Some(from) = self.keyed_from {
                    self.first_bad = Some(bad(
                        TamperKind::RewrittenUnkeyed,
                        format!(
                            "unkeyed hash after the chain switched to keyed hashes at event {from}: \
                             the tail was rewritten with recomputed unkeyed hashes"
                        ),
                    ));
                    return false;
                }
                if chain_hash(e.seq, &e.record, &e.prev_hash) != e.hash {
                    self.pending = Some((
                        bad(
                            TamperKind::Edited,
                            "content does not match its hash: the row was edited".to_string(),
                        ),
                        e.hash.clone(),
                    ));
                    return true;
                }
            }
            KeyedForm::Keyed { key_id } => {
                let Some(keys) = &self.keys else {
                    self.first_bad = Some(bad(
                        TamperKind::UnknownKey,
                        format!(
                            "the event is keyed (key id {key_id}) but {AUDIT_KEY_ENV} is not configured: it cannot be verified"
                        ),
                    ));
                    return false;
                };
                let msg = keyed_message(e.seq, &e.record, &e.prev_hash, key_id);
                match keys.check(&msg, &e.hash) {
                    Ok(()) => {}
                    Err(MacError::UnknownKey { key_id }) => {
                        self.first_bad = Some(bad(
                            TamperKind::UnknownKey,
                            format!(
                                "the event is keyed with key id {key_id}, which is not in {AUDIT_KEY_ENV}"
                            ),
                        ));
                        return false;
                    }
                    Err(_) => {
                        self.pending = Some((
                            bad(
                                TamperKind::Edited,
                                "content does not match its keyed hash: the row was edited"
                                    .to_string(),
                            ),
                            e.hash.clone(),
                        ));
                        return true;
                    }
                }
                if self.keyed_from.is_none() {
                    self.keyed_from = Some(e.seq);
                }
            }
            KeyedForm::Malformed => {
                self.first_bad = Some(bad(
                    TamperKind::Edited,
                    "the stored hash is malformed: the row was edited".to_string(),
                ));
                return false;
            }
        }
        self.prev_seq = e.seq;
        self.prev_prev_hash = Some(std::mem::replace(&mut self.prev_hash, e.hash.clone()));
        true
    }

    /// Compares the last event seen with the chain head the store keeps, which catches the
    /// deletion of the newest rows; with a keyring, also checks the head's MAC.
    pub fn finish(self, head: Option<(i64, String)>) -> ChainVerification {
        self.finish_with_mac(head, None)
    }

    /// [`Self::finish`], also checking the MAC the store keeps next to the head.
    pub fn finish_with_mac(
        mut self,
        head: Option<(i64, String)>,
        head_mac: Option<&str>,
    ) -> ChainVerification {
        if let Some((b, _)) = self.pending.take() {
            // No next event to compare with: an edited or replaced last row.
            if self.first_bad.is_none() {
                self.first_bad = Some(b);
            }
        }
        if self.first_bad.is_none() {
            if let Some((head_seq, head_hash)) = &head {
                let (head_seq, head_hash) = (*head_seq, head_hash.as_str());
                if head_seq > self.prev_seq {
                    self.first_bad = Some(ChainBreak {
                        seq: self.prev_seq + 1,
                        event_id: None,
                        kind: TamperKind::Truncated,
                        reason: format!(
                            "the chain head says {head_seq} events but only {} were found: the newest rows were deleted",
                            self.prev_seq
                        ),
                    });
                } else if head_seq != self.prev_seq || head_hash != self.prev_hash {
                    self.first_bad = Some(ChainBreak {
                        seq: head_seq,
                        event_id: None,
                        kind: TamperKind::HeadSwapped,
                        reason: format!(
                            "the chain head (event {head_seq}) does not match the newest event ({}): the head was changed",
                            self.prev_seq
                        ),
                    });
                } else if let Some(keys) = &self.keys {
                    // Only a keyed chain can have its head authenticated; an unkeyed one is
                    // reported as `keyed: false`.
                    if is_keyed(head_hash) {
                        let r = match head_mac {
                            Some(m) => check_head_mac(keys, head_seq, head_hash, m),
                            None => Err(MacError::NotKeyed),
                        };
                        if let Err(e) = r {
                            self.first_bad = Some(ChainBreak {
                                seq: head_seq,
                                event_id: None,
                                kind: TamperKind::HeadSwapped,
                                reason: format!(
                                    "the chain head's MAC does not check ({e}): the head was rewritten"
                                ),
                            });
                        }
                    }
                }
            }
        }
        ChainVerification {
            ok: self.first_bad.is_none(),
            events_checked: self.checked,
            first_bad: self.first_bad,
            keyed: is_keyed(&self.prev_hash),
            keyed_from: self.keyed_from,
            verified_from: self.start,
        }
    }

    /// The sequence number and hash of the last event walked.
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

/// Writes a checkpoint to the log as one structured line (target `gatehouse::audit_checkpoint`):
/// a log shipper copies it somewhere the database administrator does not control. Every place a
/// checkpoint is published (the BigQuery export, webhook sinks when they exist) calls this too.
pub fn log_checkpoint(cp: &AuditCheckpoint) {
    tracing::info!(
        target: "gatehouse::audit_checkpoint",
        seq = cp.seq,
        hash = %cp.hash,
        at = %cp.at.to_rfc3339(),
        key_id = cp.key_id.as_deref().unwrap_or(""),
        mac = cp.mac.as_deref().unwrap_or(""),
        "audit checkpoint"
    );
}

/// One event's place in the chain as exported (or as stored locally).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    /// Its position in the chain.
    pub seq: i64,
    /// The event's id.
    pub id: String,
    /// The hash of the event before it.
    pub prev_hash: String,
    /// The event's hash.
    pub hash: String,
}

impl From<&AuditEvent> for ChainLink {
    fn from(e: &AuditEvent) -> Self {
        Self {
            seq: e.seq,
            id: e.record.id.to_string(),
            prev_hash: e.prev_hash.clone(),
            hash: e.hash.clone(),
        }
    }
}

/// The outcome of comparing the local chain with the export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportComparison {
    /// Whether the two agree.
    pub ok: bool,
    /// Events in the local chain.
    pub local_events: u64,
    /// Events in the export.
    pub exported_events: u64,
    /// Checkpoints compared.
    pub checkpoints: u64,
    /// The first place (lowest `seq`) where the local chain and the export disagree.
    pub first_divergence: Option<ChainBreak>,
}

/// How far past a suspect row the comparison looks for the exported event before calling it
/// deleted rather than moved.
const REORDER_WINDOW: i64 = 1000;

/// Streams the local chain (in `seq` order) against the exported events and checkpoints. The
/// export is at-least-once (duplicates are dropped by event id) and may lag: local events past
/// the newest exported one are not a divergence unless a checkpoint covers them.
#[derive(Debug)]
pub struct ExportComparer {
    by_seq: std::collections::BTreeMap<i64, ChainLink>,
    seq_of_id: std::collections::HashMap<String, i64>,
    checkpoints: std::collections::BTreeMap<i64, AuditCheckpoint>,
    exported_max: i64,
    local_seen: u64,
    next_seq: i64,
    /// (break, exported id that was not where it should be) awaiting the lookahead.
    suspect: Option<(ChainBreak, String)>,
    first: Option<ChainBreak>,
    checkpoints_checked: u64,
}

impl ExportComparer {
    /// `keys`: checkpoints whose MAC does not check under them are themselves a divergence
    /// (the export is the trusted side; a forged row there is worth knowing about).
    pub fn new(
        exported: Vec<ChainLink>,
        checkpoints: Vec<AuditCheckpoint>,
        keys: Option<&AuditKeyring>,
    ) -> Self {
        let mut by_seq = std::collections::BTreeMap::new();
        let mut seq_of_id = std::collections::HashMap::new();
        for l in exported {
            seq_of_id.entry(l.id.clone()).or_insert(l.seq);
            by_seq.entry(l.seq).or_insert(l);
        }
        let mut first = None;
        let mut cps = std::collections::BTreeMap::new();
        for cp in checkpoints {
            if let Some(k) = keys {
                if cp.mac.is_some() || cp.key_id.is_some() {
                    if let Err(e) = cp.check(k) {
                        first.get_or_insert(ChainBreak {
                            seq: cp.seq,
                            event_id: None,
                            kind: TamperKind::Diverged,
                            reason: format!(
                                "the exported checkpoint at event {} does not verify: {e}",
                                cp.seq
                            ),
                        });
                        continue;
                    }
                }
            }
            cps.insert(cp.seq, cp);
        }
        let exported_max = by_seq.keys().next_back().copied().unwrap_or(0);
        Self {
            by_seq,
            seq_of_id,
            checkpoints: cps,
            exported_max,
            local_seen: 0,
            next_seq: 1,
            suspect: None,
            first,
            checkpoints_checked: 0,
        }
    }

    fn diverge(&mut self, b: ChainBreak) {
        let replace = match &self.first {
            None => true,
            Some(f) => b.seq < f.seq,
        };
        if replace {
            self.first = Some(b);
        }
    }

    /// Feeds the next local event; returns false once nothing more can change the answer.
    pub fn push(&mut self, l: &ChainLink) -> bool {
        self.local_seen += 1;
        if let Some((b, missing_id)) = &self.suspect {
            if *missing_id == l.id {
                // The exported event is here, later than it should be: moved, not deleted.
                let mut b = b.clone();
                b.kind = TamperKind::Reordered;
                b.reason = format!(
                    "{}; it is at event {} locally: rows were reordered",
                    b.reason, l.seq
                );
                self.suspect = None;
                self.diverge(b);
                return false;
            }
            if l.seq - b.seq > REORDER_WINDOW {
                let b = b.clone();
                self.suspect = None;
                self.diverge(b);
                return false;
            }
            return true;
        }
        // Local rows missing between the last one and this one.
        if l.seq > self.next_seq {
            let gap = self.next_seq;
            if let Some(e) = self.by_seq.get(&gap) {
                let b = ChainBreak {
                    seq: gap,
                    event_id: Some(e.id.clone()),
                    kind: TamperKind::Deleted,
                    reason: format!("exported event {gap} is missing locally: it was deleted"),
                };
                self.diverge(b);
                return false;
            }
        }
        self.next_seq = l.seq + 1;
        if let Some(cp) = self.checkpoints.get(&l.seq) {
            self.checkpoints_checked += 1;
            if cp.hash != l.hash {
                self.diverge(ChainBreak {
                    seq: l.seq,
                    event_id: Some(l.id.clone()),
                    kind: TamperKind::Edited,
                    reason: "the local hash differs from the exported checkpoint's: the chain was rewritten from here or before".into(),
                });
                // Keep going: an exported event below may name the rewrite more precisely; it
                // has a lower seq only if it came earlier, which it has not. So stop.
                return false;
            }
        }
        let Some(e) = self.by_seq.get(&l.seq).cloned() else {
            return true; // not exported (yet)
        };
        if e.id == l.id {
            if e.hash != l.hash || e.prev_hash != l.prev_hash {
                self.diverge(ChainBreak {
                    seq: l.seq,
                    event_id: Some(l.id.clone()),
                    kind: TamperKind::Edited,
                    reason: "the local row differs from the exported one: it was edited".into(),
                });
                return false;
            }
            return true;
        }
        // A different event at this seq.
        match self.seq_of_id.get(&l.id) {
            None => {
                self.diverge(ChainBreak {
                    seq: l.seq,
                    event_id: Some(l.id.clone()),
                    kind: TamperKind::Inserted,
                    reason: format!("local event {} ({}) was never exported although its place was: it was inserted", l.seq, l.id),
                });
                false
            }
            Some(&t) if t < l.seq => {
                self.diverge(ChainBreak {
                    seq: l.seq,
                    event_id: Some(l.id.clone()),
                    kind: TamperKind::Reordered,
                    reason: format!(
                        "local event {} was exported as event {t}: rows were reordered",
                        l.seq
                    ),
                });
                false
            }
            Some(_) => {
                // The local row was exported later in the chain: either the exported event at
                // this seq was deleted (and the rest renumbered) or it moved further down.
                self.suspect = Some((
                    ChainBreak {
                        seq: l.seq,
                        event_id: Some(e.id.clone()),
                        kind: TamperKind::Deleted,
                        reason: format!(
                            "exported event {} ({}) is not at its place locally: it was deleted",
                            l.seq, e.id
                        ),
                    },
                    e.id.clone(),
                ));
                true
            }
        }
    }

    /// The comparison, once every event has been fed in.
    pub fn finish(mut self) -> ExportComparison {
        if let Some((b, _)) = self.suspect.take() {
            self.diverge(b);
        }
        let local_max = self.next_seq - 1;
        // Exported events or checkpoints past the local end: the local tail was cut off.
        let beyond = self
            .by_seq
            .range(local_max + 1..)
            .next()
            .map(|(s, _)| *s)
            .into_iter()
            .chain(
                self.checkpoints
                    .range(local_max + 1..)
                    .next()
                    .map(|(s, _)| *s),
            )
            .min();
        if let Some(s) = beyond {
            self.diverge(ChainBreak {
                seq: local_max + 1,
                event_id: None,
                kind: TamperKind::Truncated,
                reason: format!(
                    "the export knows event {s} but the local chain ends at {local_max}: the newest rows were deleted"
                ),
            });
        }
        ExportComparison {
            ok: self.first.is_none(),
            local_events: self.local_seen,
            exported_events: self.by_seq.len() as u64,
            checkpoints: self.checkpoints_checked,
            first_divergence: self.first,
        }
    }

    /// Newest exported seq.
    pub fn exported_max(&self) -> i64 {
        self.exported_max
    }
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

    fn ring(b: u8) -> AuditKeyring {
        AuditKeyring::from_keys(&[[b; 32]]).unwrap()
    }

    /// `unkeyed` unkeyed events, then `keyed` keyed ones under `keys`.
    fn mixed(unkeyed: usize, keyed: usize, keys: &AuditKeyring) -> Vec<AuditEvent> {
        let mut out = chain(unkeyed);
        for i in 0..keyed {
            let (seq, hash) = out
                .last()
                .map(|e| (e.seq, e.hash.clone()))
                .unwrap_or((0, GENESIS_HASH.into()));
            let r = AuditRecord::new(
                AuditKind::AccessApproved,
                Actor::Admin {
                    name: "alice".into(),
                },
                Utc::now(),
            )
            .details(serde_json::json!({"k": i}));
            out.push(seal_with(r, seq, &hash, Some(keys)));
        }
        out
    }

    fn check(c: &[AuditEvent], keys: &AuditKeyring) -> ChainVerification {
        let mut v = ChainVerifier::with_keys(Some(keys.clone()));
        for e in c {
            if !v.push(e) {
                break;
            }
        }
        v.finish(None)
    }

    #[test]
    fn keyed_chain_after_an_unkeyed_one_verifies_and_records_the_switch() {
        let k = ring(7);
        let c = mixed(3, 3, &k);
        assert!(c[3].hash.starts_with("k1."));
        let v = check(&c, &k);
        assert!(v.ok, "{v:?}");
        assert!(v.keyed);
        assert_eq!(v.keyed_from, Some(4));
        // A rotated keyring (new key first, old kept) still verifies the old events.
        let rotated = AuditKeyring::from_keys(&[[9; 32], [7; 32]]).unwrap();
        assert!(check(&c, &rotated).ok);
        // Without the old key they are named, not silently accepted.
        let v = check(&c, &ring(9));
        assert_eq!(v.first_bad.unwrap().kind, TamperKind::UnknownKey);
    }

    #[test]
    fn keyed_hash_covers_the_actor_display_name() {
        let k = ring(7);
        let mut c = mixed(0, 3, &k);
        c[1].record.actor = Actor::Admin {
            name: "mallory".into(),
        };
        let b = check(&c, &k).first_bad.unwrap();
        assert_eq!((b.seq, b.kind), (2, TamperKind::Edited));
    }

    #[test]
    fn unkeyed_rewrite_of_a_keyed_tail_is_named() {
        let k = ring(7);
        let mut c = mixed(2, 3, &k);
        for i in 3..5 {
            c[i].prev_hash = c[i - 1].hash.clone();
            c[i].hash = chain_hash(c[i].seq, &c[i].record, &c[i].prev_hash);
        }
        let b = check(&c, &k).first_bad.unwrap();
        assert_eq!((b.seq, b.kind), (4, TamperKind::RewrittenUnkeyed));
    }

    #[test]
    fn insertion_and_reordering_are_told_apart_from_edits() {
        let k = ring(7);
        let c = mixed(0, 5, &k);
        // Insert a forged row at 3 and renumber the rest.
        let mut ins = c.clone();
        let mut forged = ins[2].clone();
        forged.record.id = AuditEventId::new();
        forged.prev_hash = ins[1].hash.clone();
        ins.insert(2, forged);
        for (i, e) in ins.iter_mut().enumerate() {
            e.seq = i as i64 + 1;
        }
        let b = check(&ins, &k).first_bad.unwrap();
        assert_eq!((b.seq, b.kind), (3, TamperKind::Inserted), "{b:?}");
        // Swap rows 3 and 4 (each keeps its content, seqs renumbered).
        let mut sw = c.clone();
        sw.swap(2, 3);
        sw[2].seq = 3;
        sw[3].seq = 4;
        let b = check(&sw, &k).first_bad.unwrap();
        assert_eq!((b.seq, b.kind), (3, TamperKind::Reordered), "{b:?}");
    }

    #[test]
    fn keyed_message_is_the_sorted_json_of_every_field() {
        let r = AuditRecord::new(
            AuditKind::AccessGranted,
            Actor::User {
                team_id: "T1".into(),
                user_id: "U1".into(),
                name: "Ann \"A\"".into(),
            },
            Utc::now(),
        )
        .subject("T1", "U1")
        .request(crate::ids::RequestId::new())
        .details(serde_json::json!({"z": 1, "a": [1, {"y": null, "b": "x"}]}));
        assert_eq!(
            String::from_utf8(keyed_message(7, &r, "prev", "kid")).unwrap(),
            String::from_utf8(keyed_message_reference(7, &r, "prev", "kid")).unwrap()
        );
    }

    #[test]
    fn checkpoints_and_head_macs_need_the_key() {
        let k = ring(7);
        let cp = AuditCheckpoint::new(5, "abc", Utc::now(), Some(&k));
        assert!(cp.check(&k).is_ok());
        let mut forged = cp.clone();
        forged.seq = 4;
        assert_eq!(forged.check(&k), Err(MacError::Mismatch));
        assert_eq!(
            cp.check(&ring(8)),
            Err(MacError::UnknownKey {
                key_id: k.primary_key_id().into()
            })
        );
        let m = head_mac(&k, 5, "h");
        assert!(check_head_mac(&k, 5, "h", &m).is_ok());
        assert!(check_head_mac(&k, 4, "h", &m).is_err());
    }
}
