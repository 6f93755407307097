//! Comparing the local chain with the exported one (BigQuery), event by event.

use serde::{Deserialize, Serialize};

use super::{AuditCheckpoint, AuditEvent, AuditKeyring, ChainBreak, TamperKind};

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
        if self.suspect.is_some() {
            return self.settle_suspect(l);
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
        self.different_event(l, &e)
    }

    /// A suspected deletion, settled by the events after it: the exported event turning up
    /// later means the rows were reordered; not within [`REORDER_WINDOW`], it was deleted.
    fn settle_suspect(&mut self, l: &ChainLink) -> bool {
        let Some((b, missing_id)) = &self.suspect else {
            return true;
        };
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
        true
    }

    /// The local event `l` is not the exported event `e` at its place: inserted, moved up, or
    /// (suspected until the lookahead settles it) `e` deleted.
    fn different_event(&mut self, l: &ChainLink, e: &ChainLink) -> bool {
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
