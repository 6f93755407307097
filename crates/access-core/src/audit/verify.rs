//! Verifying the chain: walking events in order, naming the first one that does not match and
//! what the tampering looks like.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::seal::{KeyedForm, keyed_form, keyed_message};
use super::{
    AUDIT_KEY_ENV, AuditCheckpoint, AuditEvent, AuditKeyring, GENESIS_HASH, MacError, chain_hash,
    check_head_mac, is_keyed,
};

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
        if let Some(suspect) = self.pending.take() {
            self.settle_suspect(suspect, e);
            return false;
        }
        self.checked += 1;
        if let Some(verdict) = self.check_link(e) {
            return verdict;
        }
        if let Some(verdict) = self.check_hash(e) {
            return verdict;
        }
        self.prev_seq = e.seq;
        self.prev_prev_hash = Some(std::mem::replace(&mut self.prev_hash, e.hash.clone()));
        true
    }

    /// Names the break a suspect row was, from the event after it: if that event links to the
    /// row before the suspect, the suspect was inserted (bad content) or the two were swapped
    /// (bad link).
    fn settle_suspect(&mut self, (mut b, _suspect_hash): (ChainBreak, String), e: &AuditEvent) {
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
        self.first_bad = Some(b);
    }

    /// Checks that `e` comes right after the last event and links to it. `Some` is `push`'s
    /// answer when it does not (a bad link is held as a suspect until the next event).
    fn check_link(&mut self, e: &AuditEvent) -> Option<bool> {
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
            return Some(false);
        }
        if e.prev_hash == self.prev_hash {
            return None;
        }
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
            return Some(false);
        }
        self.pending = Some((
            break_at(
                e,
                TamperKind::Deleted,
                format!(
                    "prev_hash does not match the hash of event {}: a row was deleted or replaced",
                    self.prev_seq
                ),
            ),
            e.hash.clone(),
        ));
        Some(true)
    }

    /// Checks that `e`'s content matches its hash (unkeyed, or keyed under a known key). `Some`
    /// is `push`'s answer when it does not (bad content is held as a suspect until the next
    /// event).
    fn check_hash(&mut self, e: &AuditEvent) -> Option<bool> {
        let suspect = |reason: &str| {
            (
                break_at(e, TamperKind::Edited, reason.to_string()),
                e.hash.clone(),
            )
        };
        match keyed_form(&e.hash) {
            KeyedForm::Unkeyed => {
                if let Some(from) = self.keyed_from {
                    self.first_bad = Some(break_at(
                        e,
                        TamperKind::RewrittenUnkeyed,
                        format!(
                            "unkeyed hash after the chain switched to keyed hashes at event {from}: \
                             the tail was rewritten with recomputed unkeyed hashes"
                        ),
                    ));
                    return Some(false);
                }
                if chain_hash(e.seq, &e.record, &e.prev_hash) != e.hash {
                    self.pending = Some(suspect(
                        "content does not match its hash: the row was edited",
                    ));
                    return Some(true);
                }
            }
            KeyedForm::Keyed { key_id } => {
                let Some(keys) = &self.keys else {
                    self.first_bad = Some(break_at(
                        e,
                        TamperKind::UnknownKey,
                        format!(
                            "the event is keyed (key id {key_id}) but {AUDIT_KEY_ENV} is not configured: it cannot be verified"
                        ),
                    ));
                    return Some(false);
                };
                let msg = keyed_message(e.seq, &e.record, &e.prev_hash, key_id);
                match keys.check(&msg, &e.hash) {
                    Ok(()) => {}
                    Err(MacError::UnknownKey { key_id }) => {
                        self.first_bad = Some(break_at(
                            e,
                            TamperKind::UnknownKey,
                            format!(
                                "the event is keyed with key id {key_id}, which is not in {AUDIT_KEY_ENV}"
                            ),
                        ));
                        return Some(false);
                    }
                    Err(_) => {
                        self.pending = Some(suspect(
                            "content does not match its keyed hash: the row was edited",
                        ));
                        return Some(true);
                    }
                }
                if self.keyed_from.is_none() {
                    self.keyed_from = Some(e.seq);
                }
            }
            KeyedForm::Malformed => {
                self.first_bad = Some(break_at(
                    e,
                    TamperKind::Edited,
                    "the stored hash is malformed: the row was edited".to_string(),
                ));
                return Some(false);
            }
        }
        None
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

/// A break at event `e`.
fn break_at(e: &AuditEvent, kind: TamperKind, reason: String) -> ChainBreak {
    ChainBreak {
        seq: e.seq,
        event_id: Some(e.record.id.to_string()),
        kind,
        reason,
    }
}
