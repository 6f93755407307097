//! The `Store` implementation.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use access_core::audit::{self, AuditEvent, ChainBreak, ChainVerification, ChainVerifier};
use access_core::grant::{Grant, GrantStatus};
use access_core::ids::{AuditEventId, GrantId, JobId, RequestId, ResourceId};
use access_core::jobs::{Job, JobKind, JobStats, NewJob};
use access_core::notification::MessageRef;
use access_core::ports::{
    AuditFilter, ChangeSet, ClaimAtInsert, ClaimScope, Committed, GrantFilter, GrantWrite,
    JobFilter, RequestFilter, RequestWrite, Store, StoreError,
};
use access_core::request::{AccessRequest, Decision, RequestStatus};
use access_core::subject::SubjectKey;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::SqlStore;
use crate::codec::{self, micros};
use crate::db::{Arg, Backend, Conn, DbRow, Sql, Tx};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
/// Audit verification reads the chain in pages of this many rows.
const VERIFY_PAGE: i64 = 5000;
/// Idempotency keys are kept at least this long.
const REMEMBER_FOR: chrono::Duration = chrono::Duration::days(1);
/// Sweep old idempotency keys on one `remember_once` call in this many.
const SWEEP_EVERY: u64 = 256;
/// Rows per multi-row `INSERT` (13 columns × 500 stays far below both backends' limits on bound
/// parameters).
const ROWS_PER_INSERT: usize = 500;
const LIVE_STATUSES: &str = "('provisioning', 'active', 'revoking')";

fn limit(l: Option<u32>) -> i64 {
    i64::from(l.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT))
}

/// A database error, with unique violations and PostgreSQL's retryable aborts given their
/// domain meaning. `what` names the thing that would be duplicated.
fn db_err(e: sqlx::Error, what: impl FnOnce() -> String) -> StoreError {
    if let sqlx::Error::Database(d) = &e {
        if d.is_unique_violation() {
            return StoreError::Duplicate(what());
        }
        // serialization_failure, deadlock_detected: someone else won; the caller re-reads.
        if matches!(d.code().as_deref(), Some("40001") | Some("40P01")) {
            return StoreError::Conflict(what());
        }
    }
    StoreError::Database(e.to_string())
}

fn plain(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl SqlStore {
    /// The clock job leases are measured by, as an SQL expression in microseconds. On
    /// PostgreSQL it is the database's (`now()`), so replicas whose clocks disagree still agree
    /// on when a claim lapses. SQLite is a file on one host, so every process using it shares
    /// the host's clock: there it is that clock, bound as parameter `$n`
    /// ([`Self::push_lease_clock_arg`] adds it).
    fn lease_clock(&self, n: usize) -> String {
        match self.backend() {
            Backend::Postgres => "(EXTRACT(EPOCH FROM now()) * 1000000)::BIGINT".to_string(),
            Backend::Sqlite => format!("${n}"),
        }
    }

    /// The argument [`Self::lease_clock`] refers to on SQLite (none on PostgreSQL).
    fn push_lease_clock_arg(&self, args: &mut Vec<Arg>) {
        if self.backend() == Backend::Sqlite {
            args.push(micros(Utc::now()).into());
        }
    }

    /// `#[track_caller]` so the writer-lock warning of `Db::begin` names the store method.
    #[track_caller]
    pub(crate) fn begin(
        &self,
    ) -> impl std::future::Future<Output = Result<Tx, StoreError>> + Send + '_ {
        let begun = self.db.begin();
        async move { begun.await.map_err(plain) }
    }

    pub(crate) async fn apply(
        &self,
        tx: &mut Tx,
        change: ChangeSet,
    ) -> Result<Committed, StoreError> {
        let mut c = tx.conn();

        for w in &change.requests {
            match w {
                RequestWrite::Insert(r) => insert_request(&mut c, r).await?,
                RequestWrite::Update(r) => update_request(&mut c, r).await?,
            }
        }
        for w in &change.grants {
            match w {
                GrantWrite::Insert(g) => insert_grant(&mut c, g).await?,
                GrantWrite::Update(g) => update_grant(&mut c, g).await?,
            }
        }
        for d in &change.decisions {
            insert_decision(&mut c, d).await?;
        }
        for w in &change.emergency {
            crate::emergency::apply(&mut c, w).await?;
        }
        for w in &change.delegations {
            crate::delegations::apply(&mut c, w).await?;
        }

        let sealed = if change.audit.is_empty() {
            Vec::new()
        } else {
            self.append_audit(&mut c, change.audit).await?
        };

        if !change.jobs.is_empty() {
            insert_jobs(
                &mut c,
                self.backend(),
                &change.jobs,
                change.claimed.as_ref(),
            )
            .await?;
        }
        Ok(Committed { audit: sealed })
    }

    /// Seals `records` after the chain head and writes them: the head is advanced in one
    /// statement and the events inserted in one more. The head is taken from the last commit of
    /// this store when it has one, and the `UPDATE` checks it is still the stored head (another
    /// process, or a concurrent commit on PostgreSQL, may have moved it): if not, the head is read
    /// (`FOR UPDATE` on PostgreSQL) and the records sealed again. On PostgreSQL the `UPDATE`
    /// takes the row lock either way, so commits that write audit records are serialised on the
    /// head row and, in READ COMMITTED, a waiting `UPDATE` re-checks its condition against the
    /// head its predecessor committed: the chain never forks. SQLite is serialised by
    /// `BEGIN IMMEDIATE`.
    async fn append_audit(
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
                        .ok_or_else(|| StoreError::Corrupt("audit_head row is missing".into()))?;
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
                return Err(StoreError::Corrupt("audit_head row is missing".into()));
            }
            // The head moved since this store last wrote it: read it and seal again.
            known = None;
        }
        Err(StoreError::Corrupt("audit_head row is missing".into()))
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

    /// One write statement. On PostgreSQL a single statement is its own transaction, so it runs
    /// in autocommit (one round trip instead of three); on SQLite it still goes through the writer
    /// lock and `BEGIN IMMEDIATE`, which keep writers from failing with `SQLITE_BUSY`.
    pub(crate) async fn write_one(&self, sql: &Sql) -> Result<u64, StoreError> {
        match self.backend() {
            Backend::Postgres => self.db.execute(sql).await.map_err(plain),
            Backend::Sqlite => {
                let mut tx = self.begin().await?;
                let n = tx.conn().execute(sql).await.map_err(plain)?;
                tx.commit().await.map_err(plain)?;
                Ok(n)
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
        // Keyset pages: memory stays flat however long the chain is.
        let cols = format!("{}, actor_id", codec::AUDIT_COLS);
        let page = format!(
            "SELECT {cols} FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"
        );
        let text = match self.backend() {
            Backend::Postgres => page.clone(),
            // One row per page on SQLite (see `DbRow::page_from_json`).
            Backend::Sqlite => {
                let fields: Vec<String> = cols.split(", ").map(|c| format!("'{c}', {c}")).collect();
                format!(
                    "SELECT json_group_array(json_object({})) AS page FROM ({page})",
                    fields.join(", ")
                )
            }
        };
        let fetch = |after: i64| {
            let sql = Sql::with(
                text.clone(),
                vec![after.into(), head_seq.into(), VERIFY_PAGE.into()],
            );
            let plain_page = Sql::with(
                page.clone(),
                vec![after.into(), head_seq.into(), VERIFY_PAGE.into()],
            );
            async move {
                match self.backend() {
                    Backend::Postgres => self.db.fetch_all(&sql).await.map_err(plain),
                    Backend::Sqlite => {
                        let row = match self.db.fetch_optional(&sql).await {
                            Ok(Some(row)) => row,
                            Ok(None) => return Ok(Vec::new()),
                            // A value JSON cannot hold (a BLOB written into a column): read the
                            // page row by row, so the walk names the unreadable row.
                            Err(_) => {
                                return self.db.fetch_all(&plain_page).await.map_err(plain);
                            }
                        };
                        let mut rows = DbRow::page_from_json(&row.string("page")?)?;
                        // The aggregate follows the subquery's order in practice; sorting makes
                        // it a guarantee, and it is the order the query asks for.
                        rows.sort_by_key(|r| r.i64("seq").unwrap_or(i64::MAX));
                        Ok(rows)
                    }
                }
            }
        };
        // Checks one page; false once the chain is broken.
        let check = |rows: &[DbRow], verifier: &mut ChainVerifier| -> Result<bool, StoreError> {
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
                            format!("the row does not parse: {e}"),
                        );
                        return Ok(false);
                    }
                };
                // The actor_id column is a copy of the actor's id used for filtering; the link
                // covers the actor, so a differing column is an edit.
                if row.string("actor_id")? != ev.record.actor.id() {
                    verifier.reject(
                        ev.seq,
                        Some(ev.record.id.to_string()),
                        audit::TamperKind::Edited,
                        "the actor_id column does not match the sealed actor: the row was edited"
                            .into(),
                    );
                    return Ok(false);
                }
                if !verifier.push(&ev) {
                    return Ok(false);
                }
            }
            Ok(true)
        };
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
                async { check(&rows, &mut verifier) }
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

async fn insert_request(c: &mut Conn<'_>, r: &AccessRequest) -> Result<(), StoreError> {
    let v = codec::request_values(r)?;
    let sql = Sql::with(
        format!(
            "INSERT INTO requests ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
            codec::REQUEST_COLS
        ),
        vec![
            r.id.to_string().into(),
            v.team_id.into(),
            v.user_id.into(),
            v.email.into(),
            v.name.into(),
            v.resource.into(),
            v.kind.into(),
            v.duration_secs.into(),
            v.justification.into(),
            v.status.into(),
            v.created_at.into(),
            v.updated_at.into(),
            v.pending_until.into(),
            v.grant_id.into(),
            v.decided_by.into(),
            v.decided_by_id.into(),
            v.failure.into(),
            r.version.into(),
        ],
    );
    c.execute(&sql)
        .await
        .map_err(|e| db_err(e, || format!("request {} already exists", r.id)))?;
    Ok(())
}

async fn update_request(c: &mut Conn<'_>, r: &AccessRequest) -> Result<(), StoreError> {
    let v = codec::request_values(r)?;
    let sql = Sql::with(
        "UPDATE requests SET team_id = $1, user_id = $2, email = $3, name = $4, resource = $5, kind = $6, \
         duration_secs = $7, justification = $8, status = $9, created_at = $10, updated_at = $11, \
         pending_until = $12, grant_id = $13, decided_by = $14, decided_by_id = $15, failure = $16, \
         version = version + 1 WHERE id = $17 AND version = $18",
        vec![
            v.team_id.into(),
            v.user_id.into(),
            v.email.into(),
            v.name.into(),
            v.resource.into(),
            v.kind.into(),
            v.duration_secs.into(),
            v.justification.into(),
            v.status.into(),
            v.created_at.into(),
            v.updated_at.into(),
            v.pending_until.into(),
            v.grant_id.into(),
            v.decided_by.into(),
            v.decided_by_id.into(),
            v.failure.into(),
            r.id.to_string().into(),
            r.version.into(),
        ],
    );
    let n = c
        .execute(&sql)
        .await
        .map_err(|e| db_err(e, || format!("request {}", r.id)))?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "request {} (expected version {})",
            r.id, r.version
        )));
    }
    Ok(())
}

fn live_grant_dup(g: &Grant) -> String {
    format!(
        "a live grant of {}/{} on {} already exists (grant {})",
        g.subject.team_id, g.subject.user_id, g.resource, g.id
    )
}

async fn insert_grant(c: &mut Conn<'_>, g: &Grant) -> Result<(), StoreError> {
    let v = codec::grant_values(g)?;
    let sql = Sql::with(
        format!(
            "INSERT INTO grants ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            codec::GRANT_COLS
        ),
        vec![
            g.id.to_string().into(),
            v.team_id.into(),
            v.user_id.into(),
            v.email.into(),
            v.name.into(),
            v.resource.into(),
            v.status.into(),
            v.provider_handle.into(),
            v.created_at.into(),
            v.granted_at.into(),
            v.expires_at.into(),
            v.ended_at.into(),
            v.request_id.into(),
            v.revoked_by.into(),
            g.version.into(),
            v.provider_intent.into(),
            v.takeback_pending.into(),
        ],
    );
    c.execute(&sql)
        .await
        .map_err(|e| db_err(e, || live_grant_dup(g)))?;
    Ok(())
}

async fn update_grant(c: &mut Conn<'_>, g: &Grant) -> Result<(), StoreError> {
    let v = codec::grant_values(g)?;
    let sql = Sql::with(
        "UPDATE grants SET team_id = $1, user_id = $2, email = $3, name = $4, resource = $5, status = $6, \
         provider_handle = $7, created_at = $8, granted_at = $9, expires_at = $10, ended_at = $11, \
         request_id = $12, revoked_by = $13, provider_intent = $16, takeback_pending = $17, \
         version = version + 1 WHERE id = $14 AND version = $15",
        vec![
            v.team_id.into(),
            v.user_id.into(),
            v.email.into(),
            v.name.into(),
            v.resource.into(),
            v.status.into(),
            v.provider_handle.into(),
            v.created_at.into(),
            v.granted_at.into(),
            v.expires_at.into(),
            v.ended_at.into(),
            v.request_id.into(),
            v.revoked_by.into(),
            g.id.to_string().into(),
            g.version.into(),
            v.provider_intent.into(),
            v.takeback_pending.into(),
        ],
    );
    let n = c
        .execute(&sql)
        .await
        .map_err(|e| db_err(e, || live_grant_dup(g)))?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "grant {} (expected version {})",
            g.id, g.version
        )));
    }
    Ok(())
}

async fn insert_decision(c: &mut Conn<'_>, d: &Decision) -> Result<(), StoreError> {
    let actor_id = d.actor.id();
    let sql = Sql::with(
        "INSERT INTO decisions (request_id, actor_id, actor, kind, at, comment) VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            d.request_id.to_string().into(),
            actor_id.clone().into(),
            codec::to_json(&d.actor)?.into(),
            codec::decision_kind_str(d.kind).into(),
            micros(d.at).into(),
            d.comment.clone().into(),
        ],
    );
    c.execute(&sql).await.map_err(|e| {
        db_err(e, || {
            format!(
                "decision by {actor_id} on request {} already exists",
                d.request_id
            )
        })
    })?;
    Ok(())
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

/// Inserts new jobs, several rows per statement; those `claimed` names are written running
/// under its token, leased on the lease clock (`now()` on PostgreSQL, the host clock on SQLite).
async fn insert_jobs(
    c: &mut Conn<'_>,
    backend: Backend,
    jobs: &[NewJob],
    claimed: Option<&ClaimAtInsert>,
) -> Result<(), StoreError> {
    let now = micros(Utc::now());
    for (n, chunk) in jobs.chunks(ROWS_PER_INSERT).enumerate() {
        let mut sql = Sql::new(format!("INSERT INTO jobs ({JOB_INSERT_COLS}) VALUES "));
        for (k, j) in chunk.iter().enumerate() {
            sql.push(if k == 0 { "(" } else { ", (" });
            push_job_values(&mut sql, backend, j, n * ROWS_PER_INSERT + k, now, claimed)?;
            sql.push(")");
        }
        c.execute(&sql).await.map_err(|e| {
            db_err(e, || match chunk {
                [j] => format!("job {} already exists", j.id),
                _ => format!("one of jobs {}… already exists", chunk[0].id),
            })
        })?;
    }
    Ok(())
}

const JOB_INSERT_COLS: &str = "id, kind, payload, status, run_at, attempts, max_attempts, created_at, updated_at, \
     order_key, order_seq, claim_token, locked_until";

/// The values of one new job, in [`JOB_INSERT_COLS`] order (`i`: its position in the change
/// set).
fn push_job_values(
    sql: &mut Sql,
    backend: Backend,
    j: &NewJob,
    i: usize,
    now: i64,
    claimed: Option<&ClaimAtInsert>,
) -> Result<(), StoreError> {
    let payload = codec::to_json(&j.kind)?;
    // Enqueue order among jobs of one ordering key: the wall clock, then the position in
    // this change set (two jobs of one commit share the microsecond).
    let order_seq = j.kind.order_key().map(|_| {
        now.saturating_mul(1000)
            .saturating_add(i64::try_from(i % 1000).unwrap_or(0))
    });
    let claim = claimed.filter(|cl| cl.ids.contains(&j.id));
    sql.bind(j.id.to_string())
        .push(", ")
        .bind(j.kind.name())
        .push(", ")
        .bind(payload)
        .push(if claim.is_some() {
            ", 'running', "
        } else {
            ", 'pending', "
        })
        .bind(micros(j.run_at))
        .push(if claim.is_some() { ", 1, " } else { ", 0, " })
        .bind(j.kind.max_attempts().map(i64::from))
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(j.kind.order_key())
        .push(", ")
        .bind(order_seq)
        .push(", ");
    match claim {
        None => {
            sql.push("NULL, NULL");
        }
        Some(cl) => {
            let lease = cl.lease.num_microseconds().unwrap_or(i64::MAX / 4).max(0);
            sql.bind(cl.token.as_str()).push(", ");
            match backend {
                Backend::Postgres => {
                    sql.push("(EXTRACT(EPOCH FROM now()) * 1000000)::BIGINT + ")
                        .bind(lease);
                }
                Backend::Sqlite => {
                    sql.bind(micros(Utc::now()).saturating_add(lease));
                }
            }
        }
    }
    Ok(())
}

/// When the next job is due (see `next_job_at`).
const NEXT_JOB_SQL: &str = "SELECT MIN(t) AS next_at FROM (\
             SELECT (SELECT run_at FROM jobs WHERE status = 'pending' \
               AND (order_key IS NULL OR NOT EXISTS (SELECT 1 FROM jobs e \
                    WHERE e.order_key = jobs.order_key AND e.status IN ('pending', 'running') \
                    AND e.order_seq < jobs.order_seq)) \
               ORDER BY run_at LIMIT 1) AS t \
             UNION ALL SELECT MIN(locked_until) AS t FROM jobs WHERE status = 'running') AS candidates";

/// `GET /api/requests`, `/access status` (pending requests of one person), …: newest first.
fn requests_sql(filter: &RequestFilter) -> Sql {
    let mut sql = Sql::new(format!(
        "SELECT {} FROM requests WHERE 1 = 1",
        codec::REQUEST_COLS
    ));
    if let Some(s) = filter.status {
        sql.push(" AND status = ").bind(s.as_str());
    }
    if let Some(r) = &filter.resource {
        sql.push(" AND resource = ").bind(r.as_str());
    }
    if let Some(s) = &filter.subject {
        push_subject(&mut sql, s);
    }
    if let Some(b) = filter.before {
        push_before(&mut sql, "requests", b.to_string());
    }
    sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .bind(limit(filter.limit));
    sql
}

/// `GET /api/grants`, `/access status` (live grants of one person), …: newest first.
fn grants_sql(filter: &GrantFilter) -> Sql {
    let mut sql = Sql::new(format!(
        "SELECT {} FROM grants WHERE 1 = 1",
        codec::GRANT_COLS
    ));
    if let Some(s) = filter.status {
        sql.push(" AND status = ").bind(s.as_str());
    }
    if filter.live_only {
        sql.push(" AND status IN ").push(LIVE_STATUSES);
    }
    if let Some(r) = &filter.resource {
        sql.push(" AND resource = ").bind(r.as_str());
    }
    if let Some(s) = &filter.subject {
        push_subject(&mut sql, s);
    }
    if let Some(b) = filter.before {
        push_before(&mut sql, "grants", b.to_string());
    }
    sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .bind(limit(filter.limit));
    sql
}

/// Keyset paging on the lists' order `created_at DESC, id DESC`: rows strictly after the cursor
/// row. A row-value comparison, which both databases answer from the (…, created_at, id)
/// indexes; an unknown cursor compares with NULL and selects nothing.
fn push_before(sql: &mut Sql, table: &'static str, id: String) {
    sql.push(&format!(
        " AND (created_at, id) < (SELECT c.created_at, c.id FROM {table} c WHERE c.id = "
    ))
    .bind(id)
    .push(")");
}

fn push_subject(sql: &mut Sql, s: &SubjectKey) {
    sql.push(" AND team_id = ")
        .bind(s.team_id.as_str())
        .push(" AND user_id = ")
        .bind(s.user_id.as_str());
}

#[async_trait]
impl Store for SqlStore {
    async fn commit(&self, change: ChangeSet) -> Result<Committed, StoreError> {
        if change.is_empty() {
            return Ok(Committed::default());
        }
        let mut tx = self.begin().await?;
        match self.apply(&mut tx, change).await {
            Ok(committed) => {
                tx.commit()
                    .await
                    .map_err(|e| db_err(e, || "commit".to_string()))?;
                self.remember_head(&committed);
                Ok(committed)
            }
            Err(e) => {
                // Dropping the transaction would roll back too; doing it here returns the
                // connection clean and surfaces a failing rollback in the logs.
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %rb, "rollback after a failed commit failed");
                }
                Err(e)
            }
        }
    }

    async fn request(&self, id: RequestId) -> Result<Option<AccessRequest>, StoreError> {
        let sql = Sql::with(
            format!("SELECT {} FROM requests WHERE id = $1", codec::REQUEST_COLS),
            vec![id.to_string().into()],
        );
        self.db
            .fetch_optional(&sql)
            .await
            .map_err(plain)?
            .as_ref()
            .map(codec::request_from_row)
            .transpose()
    }

    async fn requests(&self, filter: &RequestFilter) -> Result<Vec<AccessRequest>, StoreError> {
        let rows = self
            .db
            .fetch_all(&requests_sql(filter))
            .await
            .map_err(plain)?;
        rows.iter().map(codec::request_from_row).collect()
    }

    async fn requests_for_grant(&self, grant: GrantId) -> Result<Vec<AccessRequest>, StoreError> {
        let sql = Sql::with(
            format!(
                "SELECT {} FROM requests WHERE grant_id = $1 ORDER BY created_at, id",
                codec::REQUEST_COLS
            ),
            vec![grant.to_string().into()],
        );
        let rows = self.db.fetch_all(&sql).await.map_err(plain)?;
        rows.iter().map(codec::request_from_row).collect()
    }

    async fn decisions(&self, request: RequestId) -> Result<Vec<Decision>, StoreError> {
        let sql = Sql::with(
            format!(
                "SELECT {} FROM decisions WHERE request_id = $1 ORDER BY at, id",
                codec::DECISION_COLS
            ),
            vec![request.to_string().into()],
        );
        let rows = self.db.fetch_all(&sql).await.map_err(plain)?;
        rows.iter().map(codec::decision_from_row).collect()
    }

    async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError> {
        let sql = Sql::with(
            format!("SELECT {} FROM grants WHERE id = $1", codec::GRANT_COLS),
            vec![id.to_string().into()],
        );
        self.db
            .fetch_optional(&sql)
            .await
            .map_err(plain)?
            .as_ref()
            .map(codec::grant_from_row)
            .transpose()
    }

    async fn live_grant(
        &self,
        subject: &SubjectKey,
        resource: &ResourceId,
    ) -> Result<Option<Grant>, StoreError> {
        let mut sql = Sql::new(format!(
            "SELECT {} FROM grants WHERE status IN {LIVE_STATUSES}",
            codec::GRANT_COLS
        ));
        push_subject(&mut sql, subject);
        sql.push(" AND resource = ").bind(resource.as_str());
        self.db
            .fetch_optional(&sql)
            .await
            .map_err(plain)?
            .as_ref()
            .map(codec::grant_from_row)
            .transpose()
    }

    async fn live_grant_and_pending(
        &self,
        subject: &SubjectKey,
        resource: &ResourceId,
    ) -> Result<(Option<Grant>, Option<RequestId>), StoreError> {
        // One row whether or not there is a live grant: its columns are NULL when there is none.
        let sql = Sql::with(
            format!(
                "SELECT {}, (SELECT r.id FROM requests r WHERE r.status = 'pending' \
                 AND r.team_id = $1 AND r.user_id = $2 AND r.resource = $3 \
                 ORDER BY r.created_at DESC, r.id DESC LIMIT 1) AS pending_request \
                 FROM (SELECT 1 AS one) AS one LEFT JOIN grants g ON g.status IN {LIVE_STATUSES} \
                 AND g.team_id = $1 AND g.user_id = $2 AND g.resource = $3",
                prefixed("g", codec::GRANT_COLS)
            ),
            vec![
                subject.team_id.as_str().into(),
                subject.user_id.as_str().into(),
                resource.as_str().into(),
            ],
        );
        let rows = self.db.fetch_all(&sql).await.map_err(plain)?;
        let Some(first) = rows.first() else {
            return Ok((None, None));
        };
        let pending = first
            .opt_string("pending_request")?
            .map(|id| {
                id.parse::<RequestId>()
                    .map_err(|e| StoreError::Corrupt(format!("pending_request: {e}")))
            })
            .transpose()?;
        // At most one live grant per subject and resource (a unique index): the first row.
        let live = match first.opt_string("id")? {
            Some(_) => Some(codec::grant_from_row(first)?),
            None => None,
        };
        Ok((live, pending))
    }

    async fn submission_facts(
        &self,
        subject: &SubjectKey,
        resource: &ResourceId,
        rate: Option<access_core::limits::RateQuery>,
    ) -> Result<access_core::ports::SubmissionFacts, StoreError> {
        // `live_grant_and_pending`'s one row, with the per-person limit figures as three more
        // scalar subqueries in the same statement (docs/rate-limits.md): the request path keeps
        // its statement count. The pending ones read the partial index `requests_pending_subject`
        // (migration 0016: a person's pending requests, not their history); the window one reads
        // `requests_subject` newest first and stops at the `nth` row.
        let mut args: Vec<Arg> = vec![
            subject.team_id.as_str().into(),
            subject.user_id.as_str().into(),
            resource.as_str().into(),
        ];
        let limits = match rate {
            Some(q) => {
                args.push(micros(q.since).into());
                args.push(i64::from(q.nth.max(1) - 1).into());
                ", (SELECT COUNT(*) FROM requests p WHERE p.status = 'pending' \
                 AND p.team_id = $1 AND p.user_id = $2) AS pending_total, \
                 (SELECT MIN(p.pending_until) FROM requests p WHERE p.status = 'pending' \
                 AND p.team_id = $1 AND p.user_id = $2) AS pending_first_until, \
                 (SELECT w.created_at FROM requests w WHERE w.team_id = $1 AND w.user_id = $2 \
                 AND w.created_at >= $4 ORDER BY w.created_at DESC, w.id DESC LIMIT 1 OFFSET $5) \
                 AS window_nth"
            }
            None => "",
        };
        let sql = Sql::with(
            format!(
                "SELECT {}, (SELECT r.id FROM requests r WHERE r.status = 'pending' \
                 AND r.team_id = $1 AND r.user_id = $2 AND r.resource = $3 \
                 ORDER BY r.created_at DESC, r.id DESC LIMIT 1) AS pending_request{limits} \
                 FROM (SELECT 1 AS one) AS one LEFT JOIN grants g ON g.status IN {LIVE_STATUSES} \
                 AND g.team_id = $1 AND g.user_id = $2 AND g.resource = $3",
                prefixed("g", codec::GRANT_COLS)
            ),
            args,
        );
        let rows = self.db.fetch_all(&sql).await.map_err(plain)?;
        let Some(first) = rows.first() else {
            return Ok(Default::default());
        };
        let pending = first
            .opt_string("pending_request")?
            .map(|id| {
                id.parse::<RequestId>()
                    .map_err(|e| StoreError::Corrupt(format!("pending_request: {e}")))
            })
            .transpose()?;
        let live = match first.opt_string("id")? {
            Some(_) => Some(codec::grant_from_row(first)?),
            None => None,
        };
        let mut facts = access_core::limits::RateFacts::default();
        if rate.is_some() {
            let time = |col: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
                first
                    .opt_i64(col)?
                    .map(|us| {
                        DateTime::from_timestamp_micros(us)
                            .ok_or_else(|| StoreError::Corrupt(format!("{col}: {us} out of range")))
                    })
                    .transpose()
            };
            facts.pending_total = u64::try_from(first.i64("pending_total")?)
                .map_err(|e| StoreError::Corrupt(format!("pending_total: {e}")))?;
            facts.first_pending_until = time("pending_first_until")?;
            facts.window_nth_newest = time("window_nth")?;
        }
        Ok(access_core::ports::SubmissionFacts {
            live,
            pending,
            rate: facts,
        })
    }

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
        let rows = self.db.fetch_all(&sql).await.map_err(plain)?;
        rows.iter().map(codec::audit_from_row).collect()
    }

    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
        let rows = self
            .db
            .fetch_all(&grants_sql(filter))
            .await
            .map_err(plain)?;
        rows.iter().map(codec::grant_from_row).collect()
    }

    async fn requests_page(
        &self,
        q: &access_core::ports::PageQuery<RequestStatus>,
    ) -> Result<Vec<AccessRequest>, StoreError> {
        crate::pages::requests_page(&self.db, q).await
    }

    async fn grants_page(
        &self,
        q: &access_core::ports::PageQuery<GrantStatus>,
    ) -> Result<Vec<Grant>, StoreError> {
        crate::pages::grants_page(&self.db, q).await
    }

    async fn daily_stats(
        &self,
        now: DateTime<Utc>,
        days: u32,
        team_id: Option<&str>,
    ) -> Result<access_core::ports::DailyStats, StoreError> {
        crate::pages::daily_stats(&self.db, now, days, team_id).await
    }

    async fn requests_by_id(&self, ids: &[RequestId]) -> Result<Vec<AccessRequest>, StoreError> {
        let rows = self
            .rows_by_id("requests", codec::REQUEST_COLS, ids)
            .await?;
        rows.iter().map(codec::request_from_row).collect()
    }

    async fn grants_by_id(&self, ids: &[GrantId]) -> Result<Vec<Grant>, StoreError> {
        let rows = self.rows_by_id("grants", codec::GRANT_COLS, ids).await?;
        rows.iter().map(codec::grant_from_row).collect()
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

    async fn claim_jobs_in(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: chrono::Duration,
        scope: ClaimScope,
    ) -> Result<Vec<Job>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let token = uuid::Uuid::new_v4().to_string();
        let lease_micros = lease.num_microseconds().unwrap_or(i64::MAX / 4).max(0);
        // Leases are measured by the lease clock (see `lease_clock`), not by `now`: `now` says
        // which jobs are due, the lease clock says whose claim has lapsed.
        // A running job whose lease has lapsed belonged to a worker that died (or hung): it is
        // claimable again from the instant `locked_until`, the same instant `next_job_at`
        // reports, so a scheduler woken by it always finds the job. A job with an ordering key
        // waits while an earlier one of its key is pending or running (enqueue order, even
        // across a retry of the earlier one). SKIP LOCKED lets concurrent claimers on PostgreSQL
        // pass over rows another claimer is taking instead of waiting for them, and never
        // returns a row twice.
        let clock = self.lease_clock(5);
        // Kind names are compile-time constants of this program, never input.
        let scope = match scope {
            ClaimScope::All => String::new(),
            ClaimScope::Only(k) => format!("AND kind = '{}'", k.replace('\'', "")),
            ClaimScope::AllBut(kinds) => {
                if kinds.is_empty() {
                    String::new()
                } else {
                    format!("AND kind NOT IN ({})", quoted_kinds(kinds))
                }
            }
            // No kinds: nothing may be claimed.
            ClaimScope::OneOf([]) => return Ok(Vec::new()),
            ClaimScope::OneOf(kinds) => format!("AND kind IN ({})", quoted_kinds(kinds)),
        };
        let pick = format!(
            "SELECT id FROM jobs WHERE ((status = 'pending' AND run_at <= $3) \
             OR (status = 'running' AND locked_until <= {clock})) \
             AND (order_key IS NULL OR NOT EXISTS (SELECT 1 FROM jobs e \
                  WHERE e.order_key = jobs.order_key AND e.status IN ('pending', 'running') \
                  AND e.order_seq < jobs.order_seq)) {scope} \
             ORDER BY run_at, id LIMIT $4"
        );
        let text = match self.backend() {
            Backend::Postgres => format!(
                "WITH picked AS ({pick} FOR UPDATE SKIP LOCKED) \
                 UPDATE jobs SET status = 'running', locked_until = {clock} + $1, claim_token = $2, \
                 attempts = jobs.attempts + 1, updated_at = $3 FROM picked WHERE jobs.id = picked.id \
                 RETURNING {}",
                prefixed("jobs", codec::JOB_COLS)
            ),
            Backend::Sqlite => format!(
                "UPDATE jobs SET status = 'running', locked_until = {clock} + $1, claim_token = $2, \
                 attempts = attempts + 1, updated_at = $3 WHERE id IN ({pick}) RETURNING {}",
                codec::JOB_COLS
            ),
        };
        let mut args: Vec<Arg> = vec![
            lease_micros.into(),
            token.clone().into(),
            micros(now).into(),
            i64::from(limit).into(),
        ];
        self.push_lease_clock_arg(&mut args);
        let sql = Sql::with(text, args);
        let mut tx = self.begin().await?;
        let rows = tx.conn().fetch_all(&sql).await.map_err(plain)?;
        // A row this version cannot read must neither be left claimed by nobody nor block the
        // queue (revocations included): it is set aside, dead, with the reason, in the same
        // transaction, and the others are claimed.
        let mut jobs = Vec::with_capacity(rows.len());
        let mut unreadable: Vec<(String, String)> = Vec::new();
        for row in &rows {
            match codec::job_from_row(row) {
                Ok(Job {
                    id,
                    kind: JobKind::Undecodable { kind, error },
                    ..
                }) => unreadable.push((
                    id.to_string(),
                    format!(
                        "undecodable job of kind '{kind}' (written by a newer version?): {error}"
                    ),
                )),
                Ok(job) => jobs.push(job),
                Err(e) => match row.string("id") {
                    Ok(id) => unreadable.push((id, format!("unreadable job row: {e}"))),
                    Err(_) => {
                        if let Err(rb) = tx.rollback().await {
                            tracing::warn!(error = %rb, "rollback after an unreadable job failed");
                        }
                        return Err(e);
                    }
                },
            }
        }
        for (id, reason) in &unreadable {
            tracing::error!(job = %id, reason = %reason, "job set aside as dead: this version cannot read it");
            let bury = Sql::with(
                "UPDATE jobs SET status = 'dead', last_error = $1, locked_until = NULL, updated_at = $2 \
                 WHERE id = $3 AND claim_token = $4",
                vec![
                    reason.as_str().into(),
                    micros(now).into(),
                    id.as_str().into(),
                    token.as_str().into(),
                ],
            );
            tx.conn().execute(&bury).await.map_err(plain)?;
        }
        tx.commit().await.map_err(plain)?;
        if !unreadable.is_empty() {
            metrics::counter!("gatehouse_jobs_undecodable_total")
                .increment(unreadable.len() as u64);
        }
        jobs.sort_by_key(|j| (j.run_at, j.id));
        Ok(jobs)
    }

    async fn renew_lease(
        &self,
        claim_token: &str,
        lease: chrono::Duration,
    ) -> Result<u64, StoreError> {
        let lease_micros = lease.num_microseconds().unwrap_or(i64::MAX / 4).max(0);
        let clock = self.lease_clock(3);
        // A lapsed lease is not revived: another worker may already be entitled to the job.
        let mut args: Vec<Arg> = vec![lease_micros.into(), claim_token.into()];
        self.push_lease_clock_arg(&mut args);
        let sql = Sql::with(
            format!(
                "UPDATE jobs SET locked_until = {clock} + $1 \
                 WHERE claim_token = $2 AND status = 'running' AND locked_until > {clock}"
            ),
            args,
        );
        self.write_one(&sql).await
    }

    async fn complete_job(
        &self,
        id: JobId,
        claim_token: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let sql = Sql::with(
            "UPDATE jobs SET status = 'done', locked_until = NULL, updated_at = $1 \
             WHERE id = $2 AND claim_token = $3 AND status = 'running'",
            vec![
                micros(now).into(),
                id.to_string().into(),
                claim_token.into(),
            ],
        );
        Ok(self.write_one(&sql).await? == 1)
    }

    async fn complete_jobs(
        &self,
        jobs: &[(JobId, String)],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        let done = complete_in(&mut tx, jobs, now).await?;
        tx.commit().await.map_err(plain)?;
        Ok(done)
    }

    async fn complete_jobs_with_refs(
        &self,
        jobs: &[(JobId, String)],
        refs: &[MessageRef],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        if refs.is_empty() {
            return self.complete_jobs(jobs, now).await;
        }
        // One transaction: the messages jobs posted and the jobs' completion.
        let mut tx = self.begin().await?;
        let mut sql = Sql::new(
            "INSERT INTO message_refs (request_id, purpose, team_id, channel, ts) VALUES ",
        );
        // One row per (request, purpose, channel): a repeat in one statement would be an error
        // on PostgreSQL (ON CONFLICT cannot touch a row twice); the last one wins, as it would
        // one call at a time.
        let mut unique: Vec<&MessageRef> = Vec::new();
        for r in refs {
            unique.retain(|u| {
                !(u.request_id == r.request_id && u.purpose == r.purpose && u.channel == r.channel)
            });
            unique.push(r);
        }
        for (i, r) in unique.iter().enumerate() {
            sql.push(if i == 0 { "(" } else { ", (" })
                .bind(r.request_id.to_string())
                .push(", ")
                .bind(r.purpose.as_str())
                .push(", ")
                .bind(r.team_id.as_str())
                .push(", ")
                .bind(r.channel.as_str())
                .push(", ")
                .bind(r.ts.as_str())
                .push(")");
        }
        sql.push(
            " ON CONFLICT (request_id, purpose, channel) DO UPDATE SET team_id = excluded.team_id, ts = excluded.ts",
        );
        let saved = tx.conn().execute(&sql).await.map_err(plain);
        let done = match saved {
            Ok(_) => complete_in(&mut tx, jobs, now).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(done) => {
                tx.commit().await.map_err(plain)?;
                Ok(done)
            }
            Err(e) => {
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %rb, "rollback after a failed job completion failed");
                }
                Err(e)
            }
        }
    }

    async fn retry_job(
        &self,
        id: JobId,
        claim_token: &str,
        error: &str,
        run_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let sql = Sql::with(
            "UPDATE jobs SET status = 'pending', run_at = $1, last_error = $2, locked_until = NULL, \
             claim_token = NULL, updated_at = $3 WHERE id = $4 AND claim_token = $5 AND status = 'running'",
            vec![
                micros(run_at).into(),
                error.into(),
                micros(Utc::now()).into(),
                id.to_string().into(),
                claim_token.into(),
            ],
        );
        Ok(self.write_one(&sql).await? == 1)
    }

    async fn revive_job(&self, id: JobId, run_at: DateTime<Utc>) -> Result<bool, StoreError> {
        let sql = Sql::with(
            "UPDATE jobs SET status = 'pending', run_at = $1, attempts = 0, locked_until = NULL, \
             claim_token = NULL, updated_at = $2 WHERE id = $3 AND status = 'dead'",
            vec![
                micros(run_at).into(),
                micros(Utc::now()).into(),
                id.to_string().into(),
            ],
        );
        Ok(self.write_one(&sql).await? == 1)
    }

    async fn bury_job(
        &self,
        id: JobId,
        claim_token: &str,
        error: &str,
    ) -> Result<bool, StoreError> {
        let sql = Sql::with(
            "UPDATE jobs SET status = 'dead', last_error = $1, locked_until = NULL, updated_at = $2 \
             WHERE id = $3 AND claim_token = $4 AND status = 'running'",
            vec![
                error.into(),
                micros(Utc::now()).into(),
                id.to_string().into(),
                claim_token.into(),
            ],
        );
        Ok(self.write_one(&sql).await? == 1)
    }

    async fn next_job_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        // A running job's lease end counts too: if its worker died, that is when the job becomes
        // claimable again, and a scheduler sleeping until then picks it up without other traffic.
        // A pending job held back by an earlier job of its ordering key (a notification behind
        // one that is backing off) does not count: it cannot be claimed before that one runs,
        // and reporting its past `run_at` made an idle scheduler look at the queue in a busy
        // loop until then. Its turn comes when the earlier job runs (a pass that ran jobs looks
        // again at once). Both reads walk `jobs_due` / `jobs_lease` from the front.
        let sql = Sql::new(NEXT_JOB_SQL);
        let row = self.db.fetch_optional(&sql).await.map_err(plain)?;
        match row {
            Some(r) => codec::opt_time(&r, "next_at"),
            None => Ok(None),
        }
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let mut sql = Sql::new(format!("SELECT {} FROM jobs WHERE 1 = 1", codec::JOB_COLS));
        if let Some(s) = filter.status {
            sql.push(" AND status = ").bind(s.as_str());
        }
        if let Some(k) = &filter.kind {
            sql.push(" AND kind = ").bind(k.as_str());
        }
        sql.push(" ORDER BY run_at, id LIMIT ")
            .bind(limit(filter.limit));
        let rows = self.db.fetch_all(&sql).await.map_err(plain)?;
        rows.iter().map(codec::job_from_row).collect()
    }

    async fn job_stats(
        &self,
        now: DateTime<Utc>,
        kind: Option<&str>,
    ) -> Result<JobStats, StoreError> {
        let mut sql = Sql::with(
            "SELECT \
               COUNT(CASE WHEN status = 'pending' AND run_at <= $1 THEN 1 END) AS due, \
               COUNT(CASE WHEN status = 'pending' THEN 1 END) AS pending, \
               COUNT(CASE WHEN status = 'running' THEN 1 END) AS running, \
               COUNT(CASE WHEN status = 'dead' THEN 1 END) AS dead, \
               COUNT(CASE WHEN status = 'pending' AND attempts > 0 THEN 1 END) AS retrying, \
               MIN(CASE WHEN status = 'pending' AND run_at <= $1 THEN run_at END) AS oldest_due, \
               MIN(CASE WHEN status = 'pending' THEN created_at END) AS oldest_pending \
             FROM jobs WHERE status IN ('pending', 'running', 'dead')",
            vec![micros(now).into()],
        );
        if let Some(k) = kind {
            sql.push(" AND kind = ").bind(k);
        }
        let row = self
            .db
            .fetch_optional(&sql)
            .await
            .map_err(plain)?
            .ok_or_else(|| StoreError::Database("job stats returned no row".into()))?;
        let count = |col: &str| -> Result<u64, StoreError> {
            u64::try_from(row.i64(col)?).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
        };
        let oldest = codec::opt_time(&row, "oldest_due")?;
        let oldest_pending = codec::opt_time(&row, "oldest_pending")?;
        Ok(JobStats {
            due: count("due")?,
            pending: count("pending")?,
            running: count("running")?,
            dead: count("dead")?,
            retrying: count("retrying")?,
            oldest_due_secs: oldest.map(|t| (now - t).num_seconds().max(0)),
            oldest_pending_secs: oldest_pending.map(|t| (now - t).num_seconds().max(0)),
        })
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
        let rows = self.db.fetch_all(&sql).await.map_err(plain)?;
        rows.iter().map(codec::audit_from_row).collect()
    }

    async fn audit_event(&self, id: AuditEventId) -> Result<Option<AuditEvent>, StoreError> {
        let sql = Sql::with(
            format!(
                "SELECT {} FROM audit_events WHERE id = $1",
                codec::AUDIT_COLS
            ),
            vec![id.to_string().into()],
        );
        self.db
            .fetch_optional(&sql)
            .await
            .map_err(plain)?
            .as_ref()
            .map(codec::audit_from_row)
            .transpose()
    }

    async fn verify_audit_chain(&self) -> Result<ChainVerification, StoreError> {
        self.verify_audit(true).await
    }

    async fn verify_audit_chain_incremental(&self) -> Result<ChainVerification, StoreError> {
        self.verify_audit(false).await
    }

    async fn save_message_ref(&self, r: &MessageRef) -> Result<(), StoreError> {
        let sql = Sql::with(
            "INSERT INTO message_refs (request_id, purpose, team_id, channel, ts) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (request_id, purpose, channel) DO UPDATE SET team_id = excluded.team_id, ts = excluded.ts",
            vec![
                r.request_id.to_string().into(),
                r.purpose.as_str().into(),
                r.team_id.as_str().into(),
                r.channel.as_str().into(),
                r.ts.as_str().into(),
            ],
        );
        self.write_one(&sql).await?;
        Ok(())
    }

    async fn message_refs(&self, request: RequestId) -> Result<Vec<MessageRef>, StoreError> {
        let sql = Sql::with(
            "SELECT request_id, purpose, team_id, channel, ts FROM message_refs WHERE request_id = $1 ORDER BY id",
            vec![request.to_string().into()],
        );
        let rows = self.db.fetch_all(&sql).await.map_err(plain)?;
        rows.iter().map(codec::message_ref_from_row).collect()
    }

    async fn remember_once(&self, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let inserted = insert_idempotency_key(&mut tx, key, now).await?;
        if self.remember_calls.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == 0 {
            let cutoff = now.checked_sub_signed(REMEMBER_FOR).unwrap_or(now);
            let swept = tx
                .conn()
                .execute(&Sql::with(
                    "DELETE FROM idempotency_keys WHERE created_at < $1",
                    vec![micros(cutoff).into()],
                ))
                .await
                .map_err(plain)?;
            if swept > 0 {
                tracing::debug!(swept, "forgot old idempotency keys");
            }
        }
        tx.commit().await.map_err(plain)?;
        Ok(inserted)
    }

    async fn enqueue_once(
        &self,
        key: &str,
        job: NewJob,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let first = insert_idempotency_key(&mut tx, key, now).await?;
        if first {
            let change = ChangeSet {
                jobs: vec![job],
                ..ChangeSet::default()
            };
            if let Err(e) = self.apply(&mut tx, change).await {
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %rb, "rollback after a failed inbox write failed");
                }
                return Err(e);
            }
        }
        tx.commit().await.map_err(plain)?;
        Ok(first)
    }

    async fn enqueue_claimed_once(
        &self,
        key: &str,
        job: NewJob,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Option<Job>, StoreError> {
        // One statement: the job's id is derived from the key ([`JobId::for_key`]), so a repeat
        // conflicts on the primary key; a key recorded in the idempotency table (by
        // `enqueue_once`, as items were stored before) is a repeat too.
        if job.id != JobId::for_key(key) {
            return Err(StoreError::Database(format!(
                "job {} of inbox key {key:?}: its id must be JobId::for_key(key)",
                job.id
            )));
        }
        let token = uuid::Uuid::new_v4().to_string();
        let claim = ClaimAtInsert {
            token: token.clone(),
            lease,
            ids: vec![job.id],
        };
        let mut sql = Sql::new(format!("INSERT INTO jobs ({JOB_INSERT_COLS}) SELECT "));
        push_job_values(&mut sql, self.backend(), &job, 0, micros(now), Some(&claim))?;
        sql.push(" WHERE NOT EXISTS (SELECT 1 FROM idempotency_keys WHERE key = ")
            .bind(key)
            .push(") ON CONFLICT (id) DO NOTHING");
        let first = self.write_one(&sql).await? == 1;
        Ok(first.then(|| Job {
            id: job.id,
            kind: job.kind,
            status: access_core::jobs::JobStatus::Running,
            run_at: job.run_at,
            attempts: 1,
            last_error: None,
            created_at: now,
            // As this process reckons it; the stored lease is on the lease clock.
            locked_until: Some(now + lease),
            claim_token: Some(token),
        }))
    }

    async fn claim_job(
        &self,
        id: JobId,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Option<Job>, StoreError> {
        let token = uuid::Uuid::new_v4().to_string();
        let lease_micros = lease.num_microseconds().unwrap_or(i64::MAX / 4).max(0);
        // The lease is measured by the lease clock, as in `claim_jobs_in`: a claim taken here
        // must not look lapsed to another replica's claimer.
        let clock = self.lease_clock(5);
        let mut args: Vec<Arg> = vec![
            lease_micros.into(),
            token.into(),
            micros(now).into(),
            id.to_string().into(),
        ];
        self.push_lease_clock_arg(&mut args);
        let sql = Sql::with(
            format!(
                "UPDATE jobs SET status = 'running', locked_until = {clock} + $1, claim_token = $2, \
                 attempts = attempts + 1, updated_at = $3 WHERE id = $4 AND status = 'pending' \
                 RETURNING {}",
                codec::JOB_COLS
            ),
            args,
        );
        let mut tx = self.begin().await?;
        let rows = tx.conn().fetch_all(&sql).await.map_err(plain)?;
        let job = match rows.first().map(codec::job_from_row).transpose() {
            Ok(j) => j,
            Err(e) => {
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %rb, "rollback after an unreadable job failed");
                }
                return Err(e);
            }
        };
        tx.commit().await.map_err(plain)?;
        Ok(job)
    }

    async fn request_counts(&self) -> Result<Vec<(RequestStatus, u64)>, StoreError> {
        let counts = self.counts("requests").await?;
        RequestStatus::ALL
            .into_iter()
            .map(|s| Ok((s, counts.get(s.as_str()).copied().unwrap_or(0))))
            .collect()
    }

    async fn grant_counts(&self) -> Result<Vec<(GrantStatus, u64)>, StoreError> {
        let counts = self.counts("grants").await?;
        GrantStatus::ALL
            .into_iter()
            .map(|s| Ok((s, counts.get(s.as_str()).copied().unwrap_or(0))))
            .collect()
    }

    async fn emergency_access(
        &self,
        request: RequestId,
    ) -> Result<Option<access_core::emergency::EmergencyAccess>, StoreError> {
        self.emergency_one(request).await
    }

    async fn emergency_accesses(
        &self,
        filter: &access_core::emergency::EmergencyFilter,
    ) -> Result<Vec<access_core::emergency::EmergencyAccess>, StoreError> {
        self.emergency_list(filter).await
    }

    async fn emergency_unreviewed_count(&self) -> Result<u64, StoreError> {
        self.emergency_unreviewed().await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.db
            .fetch_optional(&Sql::new("SELECT 1 AS one"))
            .await
            .map_err(plain)?;
        let rows = self
            .db
            .fetch_all(&Sql::new(
                "SELECT version FROM _sqlx_migrations WHERE success = TRUE",
            ))
            .await
            .map_err(plain)?;
        let applied = rows
            .iter()
            .map(|r| r.i64("version"))
            .collect::<Result<Vec<_>, _>>()?;
        let missing: Vec<i64> = self
            .migrator()
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Database(format!(
                "migrations not applied: {missing:?}"
            )))
        }
    }

    async fn delegations(
        &self,
        filter: &access_core::delegation::DelegationFilter,
    ) -> Result<Vec<access_core::delegation::Delegation>, StoreError> {
        self.read_delegations(filter).await
    }
}

impl SqlStore {
    /// `SELECT cols FROM table WHERE id IN (…)`, 500 ids per statement (well under SQLite's
    /// 32,766 bound parameters and PostgreSQL's 65,535).
    async fn rows_by_id<I: ToString>(
        &self,
        table: &'static str,
        cols: &'static str,
        ids: &[I],
    ) -> Result<Vec<DbRow>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let mut sql = Sql::new(format!("SELECT {cols} FROM {table} WHERE id IN ("));
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(id.to_string());
            }
            sql.push(")");
            out.extend(self.db.fetch_all(&sql).await.map_err(plain)?);
        }
        Ok(out)
    }

    async fn counts(&self, table: &'static str) -> Result<HashMap<String, u64>, StoreError> {
        let sql = Sql::new(format!(
            "SELECT status, COUNT(*) AS n FROM {table} GROUP BY status"
        ));
        let rows = self.db.fetch_all(&sql).await.map_err(plain)?;
        let mut out = HashMap::new();
        for r in &rows {
            let n = u64::try_from(r.i64("n")?)
                .map_err(|e| StoreError::Corrupt(format!("count: {e}")))?;
            out.insert(r.string("status")?, n);
        }
        Ok(out)
    }
}

/// `a, b` → `t.a, t.b` (PostgreSQL's `UPDATE … FROM` needs qualified names in RETURNING).
fn prefixed(table: &str, cols: &str) -> String {
    cols.split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Marks claimed jobs done within `tx`; jobs claimed together share a claim token, so this is
/// usually one statement per 500 jobs.
async fn complete_in(
    tx: &mut Tx,
    jobs: &[(JobId, String)],
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut by_token: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (id, token) in jobs {
        by_token
            .entry(token.as_str())
            .or_default()
            .push(id.to_string());
    }
    let mut done = 0;
    for (token, ids) in by_token {
        for chunk in ids.chunks(500) {
            let mut sql = Sql::with(
                "UPDATE jobs SET status = 'done', locked_until = NULL, updated_at = $1 \
                 WHERE status = 'running' AND claim_token = $2 AND id IN (",
                vec![micros(now).into(), token.into()],
            );
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(id.as_str());
            }
            sql.push(")");
            done += tx.conn().execute(&sql).await.map_err(plain)?;
        }
    }
    Ok(done)
}

/// Records `key` once; false if it was already there (a replay).
async fn insert_idempotency_key(
    tx: &mut Tx,
    key: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    Ok(tx
        .conn()
        .execute(&Sql::with(
            "INSERT INTO idempotency_keys (key, created_at) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            vec![key.into(), micros(now).into()],
        ))
        .await
        .map_err(plain)?
        == 1)
}

/// `'a', 'b'` for an SQL `IN` list of job kind names (compile-time constants, never input).
fn quoted_kinds(kinds: &[&str]) -> String {
    kinds
        .iter()
        .map(|k| format!("'{}'", k.replace('\'', "")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The hot reads at scale (issue 13) are answered from indexes on both databases: no full scan
/// of requests, grants or jobs, and the lists come out in index order (no sort of every
/// matching row before the LIMIT). Plans, not timings, so nothing here can flake.
#[cfg(test)]
mod plans {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The plan's lines. PostgreSQL plans with sequential scans and sorts priced out, so an
    /// empty test table is planned the way a large one is: a `Seq Scan` or `Sort` left in the
    /// plan means no index can serve the query.
    async fn plan(store: &SqlStore, sql: &Sql) -> Vec<String> {
        match store.backend() {
            Backend::Sqlite => {
                let q = Sql::with(format!("EXPLAIN QUERY PLAN {}", sql.text), sql.args.clone());
                let rows = store.db.fetch_all(&q).await.unwrap();
                rows.iter().map(|r| r.string("detail").unwrap()).collect()
            }
            Backend::Postgres => {
                let mut tx = store.db.begin().await.unwrap();
                for set in [
                    "SET LOCAL enable_seqscan = off",
                    "SET LOCAL enable_sort = off",
                ] {
                    tx.conn().execute(&Sql::new(set)).await.unwrap();
                }
                let q = Sql::with(format!("EXPLAIN {}", sql.text), sql.args.clone());
                let rows = tx.conn().fetch_all(&q).await.unwrap();
                tx.rollback().await.unwrap();
                rows.iter()
                    .map(|r| r.string("QUERY PLAN").unwrap())
                    .collect()
            }
        }
    }

    fn full_scan(line: &str) -> bool {
        ["SCAN requests", "SCAN grants", "SCAN jobs", "Seq Scan"]
            .iter()
            .any(|s| line.trim_start().contains(s))
    }

    fn sorts(line: &str) -> bool {
        line.contains("TEMP B-TREE FOR ORDER BY")
            || line.trim_start().starts_with("Sort")
            || line.contains("-> Sort")
            || line.contains("Incremental Sort")
    }

    fn subject() -> SubjectKey {
        SubjectKey {
            team_id: "T1".into(),
            user_id: "U1".into(),
        }
    }

    /// JIT compilation cost ~0.85 s per job claim once the queue was large (see
    /// `connect_with`): the store's PostgreSQL connections run without it.
    #[tokio::test]
    async fn postgres_connections_run_without_jit() {
        for db in testkit::db::backends().await {
            if db.kind != "postgres" {
                continue;
            }
            let store = SqlStore::connect(&db.url).await.unwrap();
            let row = store
                .db
                .fetch_optional(&Sql::new("SELECT current_setting('jit') AS jit"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(row.string("jit").unwrap(), "off");
            // The URL's own options (the test schema's search_path) still apply.
            let row = store
                .db
                .fetch_optional(&Sql::new("SELECT current_schema() AS s"))
                .await
                .unwrap()
                .unwrap();
            assert!(row.string("s").unwrap().starts_with("gh_test_"));
            store.close().await;
        }
    }

    #[tokio::test]
    async fn hot_reads_use_indexes_on_both_backends() {
        for db in testkit::db::backends().await {
            let store = SqlStore::connect(&db.url).await.unwrap();
            let active = GrantFilter {
                status: Some(GrantStatus::Active),
                limit: Some(50),
                ..Default::default()
            };
            let next_page = GrantFilter {
                before: Some(GrantId::new()),
                ..active.clone()
            };
            let pending = RequestFilter {
                status: Some(RequestStatus::Pending),
                limit: Some(50),
                ..Default::default()
            };
            // `/access status`: live grants and pending requests of one person.
            let live_of = GrantFilter {
                live_only: true,
                subject: Some(subject()),
                ..Default::default()
            };
            let pending_of = RequestFilter {
                status: Some(RequestStatus::Pending),
                subject: Some(subject()),
                ..Default::default()
            };
            let lists = [
                (
                    "GET /api/grants?status=active",
                    grants_sql(&active),
                    "grants_status_created",
                ),
                (
                    "the next page of it",
                    grants_sql(&next_page),
                    "grants_status_created",
                ),
                (
                    "GET /api/requests?status=pending",
                    requests_sql(&pending),
                    "requests_status",
                ),
            ];
            for (what, sql, index) in &lists {
                let p = plan(&store, sql).await;
                assert!(
                    p.iter().any(|l| l.contains(index)),
                    "{}: {what} does not use {index}: {p:#?}",
                    db.kind
                );
                assert!(
                    !p.iter().any(|l| full_scan(l) || sorts(l)),
                    "{}: {what} scans or sorts: {p:#?}",
                    db.kind
                );
            }
            for (what, sql) in [
                ("live grants of one person", grants_sql(&live_of)),
                ("pending requests of one person", requests_sql(&pending_of)),
                ("the scheduler's next due time", Sql::new(NEXT_JOB_SQL)),
            ] {
                let p = plan(&store, &sql).await;
                assert!(
                    !p.iter().any(|l| full_scan(l)),
                    "{}: {what} scans a whole table: {p:#?}",
                    db.kind
                );
            }
            store.close().await;
        }
    }
}
