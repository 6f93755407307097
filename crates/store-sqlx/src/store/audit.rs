//! The audit hash chain: sealing a change set's records after the head, verifying the chain
//! (from a checkpoint or the genesis), and [`AuditLog`] on [`SqlStore`].

use access_core::audit::{self, AuditEvent, ChainBreak, ChainVerification, ChainVerifier};
use access_core::ids::AuditEventId;
use access_core::ports::{AuditFilter, AuditLog, Committed, StoreError};
use async_trait::async_trait;
use chrono::Utc;

use super::{MAX_LIMIT, ROWS_PER_INSERT, VERIFY_PAGE, limit, select_by};
use crate::SqlStore;
use crate::codec::{self, micros};
use crate::db::{Arg, Backend, Conn, DbRow, Sql};
use crate::error::{db_err, plain, with_sources};

impl SqlStore {
    /// Seals `records` after the chain head and writes them: the head is advanced in one
    /// statement and the events inserted in one more. The head is taken from the last commit of
    /// this store when it has one, and the `UPDATE` checks it is still the stored head (another
    /// process, or a concurrent commit on PostgreSQL, may have moved it): if not, the head is read
    /// (`FOR UPDATE` on PostgreSQL) and the records sealed again. On PostgreSQL the `UPDATE`
    /// takes the row lock either way, so commits that write audit records are serialised on the
    /// head row and, in READ COMMITTED, a waiting `UPDATE` re-checks its condition against the
    /// head its predecessor committed: the chain never forks. SQLite is serialised by
    /// `BEGIN IMMEDIATE`.
    pub(super) async fn append_audit(
        &self,
        c: &mut Conn<'_>,
        records: Vec<audit::AuditRecord>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let records: Vec<audit::AuditRecord> = records
            .into_iter()
            .map(|mut r| {
                // The hash covers the timestamp in microseconds; seal what will be read back.
                r.at = audit::truncate_to_micros(r.at);
                r
            })
            .collect();
        let mut known = self.known_head();
        for _ in 0..2 {
            let (start_seq, start_hash) = match &known {
                Some(h) => h.clone(),
                None => {
                    let head_sql = match self.backend() {
                        Backend::Postgres => {
                            "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE"
                        }
                        Backend::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
                    };
                    let head = c
                        .fetch_optional(&Sql::new(head_sql))
                        .await
                        .map_err(plain)?
                        .ok_or_else(|| StoreError::corrupt("audit_head row is missing"))?;
                    (head.i64("seq")?, head.string("hash")?)
                }
            };
            let (mut seq, mut hash) = (start_seq, start_hash.clone());
            let mut sealed = Vec::with_capacity(records.len());
            for record in &records {
                let ev = audit::seal_with(record.clone(), seq, &hash, self.audit_keys.as_ref());
                seq = ev.seq;
                hash = ev.hash.clone();
                sealed.push(ev);
            }
            // The head's MAC means a database administrator cannot point the head at another
            // event (after truncating the tail, say) without the key.
            let mac = self
                .audit_keys
                .as_ref()
                .map(|k| audit::head_mac(k, seq, &hash));
            let from_memory = known.is_some();
            let mut update = Sql::with(
                "UPDATE audit_head SET seq = $1, hash = $2, mac = $3 WHERE id = 1",
                vec![seq.into(), hash.into(), mac.into()],
            );
            if from_memory {
                update
                    .push(" AND seq = ")
                    .bind(start_seq)
                    .push(" AND hash = ")
                    .bind(start_hash);
            }
            let updated = c.execute(&update).await.map_err(plain)?;
            if updated == 1 {
                for chunk in sealed.chunks(ROWS_PER_INSERT) {
                    insert_audit(c, chunk).await?;
                }
                return Ok(sealed);
            }
            if !from_memory {
                return Err(StoreError::corrupt("audit_head row is missing"));
            }
            // The head moved since this store last wrote it: read it and seal again.
            known = None;
        }
        Err(StoreError::corrupt("audit_head row is missing"))
    }

    /// The chain head this store last committed, if any (a hint: [`Self::append_audit`] checks
    /// it against the stored head in the same statement that advances it).
    fn known_head(&self) -> Option<(i64, String)> {
        self.audit_head
            .lock()
            .ok()
            .and_then(|g| g.as_ref().cloned())
    }

    /// Remembers the head a commit wrote (never moving the hint backwards).
    pub(crate) fn remember_head(&self, committed: &Committed) {
        let Some(last) = committed.audit.last() else {
            return;
        };
        if let Ok(mut g) = self.audit_head.lock() {
            if g.as_ref().is_none_or(|(seq, _)| *seq < last.seq) {
                *g = Some((last.seq, last.hash.clone()));
            }
        }
    }

    async fn audit_head_with_mac(
        &self,
    ) -> Result<Option<(i64, String, Option<String>)>, StoreError> {
        let row = self
            .db
            .fetch_optional(&Sql::new(
                "SELECT seq, hash, mac FROM audit_head WHERE id = 1",
            ))
            .await
            .map_err(plain)?;
        row.map(|r| Ok((r.i64("seq")?, r.string("hash")?, r.opt_string("mac")?)))
            .transpose()
    }

    /// The newest checkpoint at or below `head_seq` that can be trusted as a starting point:
    /// with a key, its MAC must check; and the event it names must still carry its hash.
    async fn usable_checkpoint(&self, head_seq: i64) -> Result<Option<(i64, String)>, StoreError> {
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT seq, hash, at, key_id, mac FROM audit_checkpoints WHERE seq <= $1 ORDER BY seq DESC LIMIT 20",
                vec![head_seq.into()],
            ))
            .await
            .map_err(plain)?;
        for r in &rows {
            let cp = audit::AuditCheckpoint {
                seq: r.i64("seq")?,
                hash: r.string("hash")?,
                at: codec::time(r, "at")?,
                key_id: r.opt_string("key_id")?,
                mac: r.opt_string("mac")?,
            };
            if let Some(keys) = &self.audit_keys {
                if let Err(e) = cp.check(keys) {
                    tracing::warn!(seq = cp.seq, error = %e, "audit checkpoint does not verify; not starting from it");
                    continue;
                }
            }
            let at_seq = self
                .db
                .fetch_optional(&Sql::with(
                    "SELECT hash FROM audit_events WHERE seq = $1",
                    vec![cp.seq.into()],
                ))
                .await
                .map_err(plain)?;
            match at_seq {
                Some(row) if row.string("hash")? == cp.hash => return Ok(Some((cp.seq, cp.hash))),
                // The checkpointed event changed or vanished: only a full walk can say how.
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// Records a checkpoint (MAC'd under the signing key when there is one).
    pub async fn save_audit_checkpoint(
        &self,
        cp: &audit::AuditCheckpoint,
    ) -> Result<(), StoreError> {
        let sql = Sql::with(
            "INSERT INTO audit_checkpoints (seq, hash, at, key_id, mac) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (seq) DO UPDATE SET hash = excluded.hash, at = excluded.at, key_id = excluded.key_id, mac = excluded.mac",
            vec![
                cp.seq.into(),
                cp.hash.clone().into(),
                micros(cp.at).into(),
                cp.key_id.clone().into(),
                cp.mac.clone().into(),
            ],
        );
        self.write_one(&sql).await?;
        Ok(())
    }

    /// Verifies the chain: the full walk from the genesis (`full`), or from the newest usable
    /// checkpoint up to the head. A successful walk records a checkpoint at the head it reached,
    /// so the next incremental verification only reads what was added since.
    pub async fn verify_audit(&self, full: bool) -> Result<ChainVerification, StoreError> {
        // Read the head first and walk only up to it: events committed while we walk are past
        // the head we hold and would otherwise look like rows the head does not know about.
        let Some((head_seq, head_hash, head_mac)) = self.audit_head_with_mac().await? else {
            return Ok(ChainVerification::broken(
                0,
                ChainBreak {
                    seq: 0,
                    event_id: None,
                    kind: audit::TamperKind::HeadSwapped,
                    reason: "the audit_head row is missing: the chain head was deleted".into(),
                },
            ));
        };
        let start = if full {
            None
        } else {
            self.usable_checkpoint(head_seq).await?
        };
        let mut verifier = match &start {
            Some((seq, hash)) => ChainVerifier::resume(self.audit_keys.clone(), *seq, hash),
            None => ChainVerifier::with_keys(self.audit_keys.clone()),
        };
        let after = start.as_ref().map(|(s, _)| *s).unwrap_or(0);
        let pages = self.verify_pages();
        let fetch = |after: i64| self.fetch_verify_page(&pages, after, head_seq);
        let mut rows = fetch(after).await?;
        loop {
            // Fetch the next page while this one is checked: the database works (SQLite on its
            // own thread, PostgreSQL on the server) while this task hashes.
            let next_after = match rows.last() {
                Some(r) if rows.len() as i64 == VERIFY_PAGE => Some(r.i64("seq")?),
                _ => None,
            };
            let (next, go_on) = tokio::join!(
                async {
                    match next_after {
                        Some(a) => fetch(a).await.map(Some),
                        None => Ok(None),
                    }
                },
                async { check_page(&rows, &mut verifier) }
            );
            if !go_on? {
                break;
            }
            match next? {
                Some(r) => rows = r,
                None => break,
            }
        }
        let v = verifier.finish_with_mac(Some((head_seq, head_hash.clone())), head_mac.as_deref());
        if v.ok && head_seq > 0 {
            let cp = audit::AuditCheckpoint::new(
                head_seq,
                &head_hash,
                Utc::now(),
                self.audit_keys.as_ref(),
            );
            self.save_audit_checkpoint(&cp).await?;
        }
        Ok(v)
    }
}

/// The page read of the verification walk, in its two forms: `rows` (one result row per event)
/// and `fast` (on SQLite, the page as one JSON row; see `DbRow::page_from_json`).
struct VerifyPages {
    rows: String,
    fast: String,
}

impl SqlStore {
    /// The verification walk's page statements. Keyset pages: memory stays flat however long
    /// the chain is.
    fn verify_pages(&self) -> VerifyPages {
        let cols = format!("{}, actor_id", codec::AUDIT_COLS);
        let rows = format!(
            "SELECT {cols} FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"
        );
        let fast = match self.backend() {
            Backend::Postgres => rows.clone(),
            Backend::Sqlite => {
                let fields: Vec<String> = cols.split(", ").map(|c| format!("'{c}', {c}")).collect();
                format!(
                    "SELECT json_group_array(json_object({})) AS page FROM ({rows})",
                    fields.join(", ")
                )
            }
        };
        VerifyPages { rows, fast }
    }

    /// The events after `after` up to `head_seq`, one page, in `seq` order.
    async fn fetch_verify_page(
        &self,
        pages: &VerifyPages,
        after: i64,
        head_seq: i64,
    ) -> Result<Vec<DbRow>, StoreError> {
        let args = || -> Vec<Arg> { vec![after.into(), head_seq.into(), VERIFY_PAGE.into()] };
        let sql = Sql::with(pages.fast.clone(), args());
        match self.backend() {
            Backend::Postgres => self.db.fetch_all(&sql).await.map_err(plain),
            Backend::Sqlite => {
                let row = match self.db.fetch_optional(&sql).await {
                    Ok(Some(row)) => row,
                    Ok(None) => return Ok(Vec::new()),
                    // A value JSON cannot hold (a BLOB written into a column): read the page row
                    // by row, so the walk names the unreadable row.
                    Err(_) => {
                        let by_row = Sql::with(pages.rows.clone(), args());
                        return self.db.fetch_all(&by_row).await.map_err(plain);
                    }
                };
                let mut rows = DbRow::page_from_json(&row.string("page")?)?;
                // The aggregate follows the subquery's order in practice; sorting makes it a
                // guarantee, and it is the order the query asks for.
                rows.sort_by_key(|r| r.i64("seq").unwrap_or(i64::MAX));
                Ok(rows)
            }
        }
    }
}

/// Checks one page of the walk; false once the chain is broken.
fn check_page(rows: &[DbRow], verifier: &mut ChainVerifier) -> Result<bool, StoreError> {
    for row in rows {
        let ev = match codec::audit_from_row(row) {
            Ok(ev) => ev,
            Err(e) => {
                // An unreadable row is a broken chain, not a failed check.
                let seq = row.i64("seq").unwrap_or(verifier.last().0 + 1);
                verifier.reject(
                    seq,
                    row.string("id").ok(),
                    audit::TamperKind::Unreadable,
                    format!("the row does not parse: {}", with_sources(&e)),
                );
                return Ok(false);
            }
        };
        // The actor_id column is a copy of the actor's id used for filtering; the link covers
        // the actor, so a differing column is an edit.
        if row.string("actor_id")? != ev.record.actor.id() {
            verifier.reject(
                ev.seq,
                Some(ev.record.id.to_string()),
                audit::TamperKind::Edited,
                "the actor_id column does not match the sealed actor: the row was edited".into(),
            );
            return Ok(false);
        }
        if !verifier.push(&ev) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Inserts sealed events, several rows per statement.
async fn insert_audit(c: &mut Conn<'_>, events: &[AuditEvent]) -> Result<(), StoreError> {
    let Some(first) = events.first() else {
        return Ok(());
    };
    let mut sql = Sql::new(
        "INSERT INTO audit_events (seq, id, at, kind, actor, actor_id, subject, resource, request_id, grant_id, \
         details, prev_hash, hash) VALUES ",
    );
    for (i, ev) in events.iter().enumerate() {
        let r = &ev.record;
        sql.push(if i == 0 { "(" } else { ", (" });
        let values: [Arg; 13] = [
            ev.seq.into(),
            r.id.to_string().into(),
            micros(r.at).into(),
            r.kind.as_str().into(),
            codec::to_json(&r.actor)?.into(),
            r.actor.id().into(),
            r.subject.clone().into(),
            r.resource.as_ref().map(|x| x.as_str().to_string()).into(),
            r.request_id.map(|x| x.to_string()).into(),
            r.grant_id.map(|x| x.to_string()).into(),
            codec::to_json(&r.details)?.into(),
            ev.prev_hash.clone().into(),
            ev.hash.clone().into(),
        ];
        for (j, v) in values.into_iter().enumerate() {
            if j > 0 {
                sql.push(", ");
            }
            sql.bind(v);
        }
        sql.push(")");
    }
    c.execute(&sql).await.map_err(|e| {
        db_err(e, || {
            format!(
                "audit event {} (seq {}) or one after it",
                first.record.id, first.seq
            )
        })
    })?;
    Ok(())
}

#[async_trait]
impl AuditLog for SqlStore {
    async fn recent_audit_events(
        &self,
        subject: &str,
        actor_id: &str,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        // The newest `limit` of each kind (about the person; by the person) read newest first
        // from `audit_subject` and `audit_actor` (migration 0016), merged.
        let sql = Sql::with(
            format!(
                "SELECT {} FROM audit_events WHERE seq IN (\
                 SELECT seq FROM (SELECT seq FROM audit_events WHERE subject = $1 \
                 ORDER BY seq DESC LIMIT $3) AS s \
                 UNION SELECT seq FROM (SELECT seq FROM audit_events WHERE actor_id = $2 \
                 ORDER BY seq DESC LIMIT $3) AS a) \
                 ORDER BY seq DESC LIMIT $3",
                codec::AUDIT_COLS
            ),
            vec![
                subject.into(),
                actor_id.into(),
                i64::from(limit.clamp(1, MAX_LIMIT)).into(),
            ],
        );
        self.read_all(&sql, codec::audit_from_row).await
    }

    async fn audit_events_by_id(
        &self,
        ids: &[AuditEventId],
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = self
            .rows_by_id("audit_events", codec::AUDIT_COLS, ids)
            .await?;
        rows.iter().map(codec::audit_from_row).collect()
    }

    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let mut sql = Sql::new(format!(
            "SELECT {} FROM audit_events WHERE 1 = 1",
            codec::AUDIT_COLS
        ));
        if let Some(s) = filter.after_seq {
            sql.push(" AND seq > ").bind(s);
        }
        if let Some(t) = filter.since {
            sql.push(" AND at >= ").bind(micros(t));
        }
        if let Some(t) = filter.until {
            sql.push(" AND at < ").bind(micros(t));
        }
        if let Some(k) = filter.kind {
            sql.push(" AND kind = ").bind(k.as_str());
        }
        if let Some(r) = &filter.resource {
            sql.push(" AND resource = ").bind(r.as_str());
        }
        if let Some(s) = &filter.subject {
            sql.push(" AND subject = ").bind(s.as_str());
        }
        if let Some(r) = filter.request_id {
            sql.push(" AND request_id = ").bind(r.to_string());
        }
        sql.push(" ORDER BY seq LIMIT ").bind(limit(filter.limit));
        self.read_all(&sql, codec::audit_from_row).await
    }

    async fn audit_event(&self, id: AuditEventId) -> Result<Option<AuditEvent>, StoreError> {
        let sql = select_by(codec::AUDIT_COLS, "audit_events", "id", id.to_string(), "");
        self.read_one(&sql, codec::audit_from_row).await
    }

    async fn verify_audit_chain(&self) -> Result<ChainVerification, StoreError> {
        self.verify_audit(true).await
    }

    async fn verify_audit_chain_incremental(&self) -> Result<ChainVerification, StoreError> {
        self.verify_audit(false).await
    }
}
