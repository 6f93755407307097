//! The job queue: inserting a change set's jobs, claims under a lease, completion, retries, the
//! inbox's idempotency keys, and [`JobQueue`] on [`SqlStore`].

use std::sync::atomic::Ordering;

use access_core::ids::JobId;
use access_core::jobs::{Job, JobKind, JobStats, NewJob};
use access_core::notification::MessageRef;
use access_core::ports::{ChangeSet, ClaimAtInsert, ClaimScope, JobFilter, JobQueue, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::Together;
use super::refs::{push_refs_upsert, refs_upserts, save_refs_in, unique_refs};
use super::{REMEMBER_FOR, ROWS_PER_INSERT, SWEEP_EVERY, limit, prefixed};
use crate::SqlStore;
use crate::codec::{self, micros};
use crate::db::{Arg, Backend, Conn, DbRow, Sql, Tx, Urgency};
use crate::error::{db_err, plain, with_sources};

/// The jobs of change sets are inserted several rows per statement, each with the claim of its
/// change set: those the claim names are written running under its token, leased on the lease
/// clock (`now()` on PostgreSQL, the host clock on SQLite), unless held back behind an earlier
/// job of their ordering key (see [`RowClaim`]).
///
/// One multi-row `INSERT INTO jobs` of [`job_inserts`], with what a duplicate id means.
pub(super) struct JobInsert {
    pub sql: Sql,
    first: JobId,
    rows: usize,
    /// Rows whose claim the database decides ([`RowClaim::Ordered`]); the statement returns
    /// their status when there are any.
    ordered: Vec<JobId>,
}

impl JobInsert {
    /// Runs the insert within a transaction; the jobs the database held back.
    pub async fn run(&self, c: &mut Conn<'_>) -> Result<Vec<JobId>, StoreError> {
        if self.ordered.is_empty() {
            c.execute(&self.sql).await.map_err(|e| self.error(e))?;
            return Ok(Vec::new());
        }
        let rows = c.fetch_all(&self.sql).await.map_err(|e| self.error(e))?;
        self.held_back(&rows)
    }

    /// Runs the insert as its transaction's last statement and commits (one round trip on
    /// SQLite: [`Tx::execute_and_commit`]); the jobs the database held back.
    pub async fn run_and_commit(&self, tx: Tx) -> Result<Vec<JobId>, StoreError> {
        if self.ordered.is_empty() {
            tx.execute_and_commit(&self.sql)
                .await
                .map_err(|e| self.error(e))?;
            return Ok(Vec::new());
        }
        let rows = tx
            .fetch_all_and_commit(&self.sql)
            .await
            .map_err(|e| self.error(e))?;
        self.held_back(&rows)
    }

    /// The ordered rows the statement wrote pending (from its `RETURNING id, status`).
    fn held_back(&self, rows: &[DbRow]) -> Result<Vec<JobId>, StoreError> {
        let mut out = Vec::new();
        for row in rows {
            if row.string("status")? != "pending" {
                continue;
            }
            let id = row.string("id")?;
            if let Some(j) = self.ordered.iter().find(|j| j.to_string() == id) {
                out.push(*j);
            }
        }
        Ok(out)
    }

    /// Its error, a duplicate id named.
    pub fn error(&self, e: sqlx::Error) -> StoreError {
        db_err(e, || match self.rows {
            1 => format!("job {} already exists", self.first),
            _ => format!("one of jobs {}… already exists", self.first),
        })
    }
}

/// The jobs of change sets as written: their inserts, and the jobs held back before the
/// database was asked (see [`job_inserts`]).
pub(super) struct JobInserts {
    pub inserts: Vec<JobInsert>,
    pub held_back: Vec<JobId>,
}

/// How one new job row is written.
#[derive(Debug, Clone, Copy)]
pub(super) enum RowClaim<'a> {
    /// Pending, for a scheduler.
    Pending,
    /// Running under the claim.
    Claimed(&'a ClaimAtInsert),
    /// Running under the claim unless a job of the ordering key (the `&str`) is pending, or
    /// running under another claim; then pending ("held back"). The database decides, in the
    /// insert itself: a separate read would cost every chat command a round trip.
    Ordered(&'a ClaimAtInsert, &'a str),
}

/// The statements that insert the jobs of `changes`, [`ROWS_PER_INSERT`] rows each. A job its
/// change set's claim names is written claimed; one with an ordering key only if no earlier
/// change set of `changes` has a job of that key (else held back here) and, as the insert
/// checks, none of the key is still unfinished under another claim (see [`RowClaim::Ordered`]).
pub(super) fn job_inserts(
    backend: Backend,
    changes: &[ChangeSet],
) -> Result<JobInserts, StoreError> {
    let mut rows: Vec<(&NewJob, RowClaim<'_>)> = Vec::new();
    let mut held_back = Vec::new();
    let keys: Vec<Vec<Option<String>>> = changes
        .iter()
        .map(|ch| ch.jobs.iter().map(|j| j.kind.order_key()).collect())
        .collect();
    let mut earlier_keys: std::collections::HashSet<&str> = Default::default();
    for (ch, ch_keys) in changes.iter().zip(&keys) {
        for (j, key) in ch.jobs.iter().zip(ch_keys) {
            let claim = ch.claimed.as_ref().filter(|cl| cl.ids.contains(&j.id));
            let row = match (claim, key.as_deref()) {
                (None, _) => RowClaim::Pending,
                (Some(cl), None) => RowClaim::Claimed(cl),
                (Some(_), Some(k)) if earlier_keys.contains(k) => {
                    held_back.push(j.id);
                    RowClaim::Pending
                }
                (Some(cl), Some(k)) => RowClaim::Ordered(cl, k),
            };
            rows.push((j, row));
        }
        earlier_keys.extend(ch_keys.iter().flatten().map(String::as_str));
    }
    let now = micros(Utc::now());
    let mut inserts = Vec::with_capacity(rows.len().div_ceil(ROWS_PER_INSERT));
    for (n, chunk) in rows.chunks(ROWS_PER_INSERT).enumerate() {
        let mut sql = Sql::new(format!("INSERT INTO jobs ({JOB_INSERT_COLS}) VALUES "));
        let mut ordered = Vec::new();
        for (k, (j, row)) in chunk.iter().enumerate() {
            sql.push(if k == 0 { "(" } else { ", (" });
            push_job_values(&mut sql, backend, j, n * ROWS_PER_INSERT + k, now, *row)?;
            sql.push(")");
            if let RowClaim::Ordered(..) = row {
                ordered.push(j.id);
            }
        }
        if !ordered.is_empty() {
            sql.push(" RETURNING id, status");
        }
        if let Some((first, _)) = chunk.first() {
            inserts.push(JobInsert {
                sql,
                first: first.id,
                rows: chunk.len(),
                ordered,
            });
        }
    }
    Ok(JobInserts { inserts, held_back })
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
    row: RowClaim<'_>,
) -> Result<(), StoreError> {
    let payload = codec::to_json(&j.kind)?;
    // Enqueue order among jobs of one ordering key: the wall clock, then the position in
    // this statement's batch (jobs of one commit share the microsecond). Not wrapped at 1000:
    // a group commit's batch can hold more jobs than that, and a wrap would put a later job
    // of a key before an earlier one; the next commit of this store takes its clock after this
    // one's COMMIT, far more than `i / 1000` µs later.
    let order_seq = j.kind.order_key().map(|_| {
        now.saturating_mul(1000)
            .saturating_add(i64::try_from(i).unwrap_or(i64::MAX))
    });
    let lease_until = |sql: &mut Sql, cl: &ClaimAtInsert| -> String {
        let lease = cl.lease.num_microseconds().unwrap_or(i64::MAX / 4).max(0);
        match backend {
            Backend::Postgres => format!(
                "(EXTRACT(EPOCH FROM now()) * 1000000)::BIGINT + {}",
                sql.arg(lease)
            ),
            Backend::Sqlite => sql.arg(micros(Utc::now()).saturating_add(lease)),
        }
    };
    // status, attempts, claim_token, locked_until
    let claim: [String; 4] = match row {
        RowClaim::Pending => ["'pending'", "0", "NULL", "NULL"].map(String::from),
        RowClaim::Claimed(cl) => [
            "'running'".to_string(),
            "1".to_string(),
            sql.arg(cl.token.as_str()),
            lease_until(sql, cl),
        ],
        RowClaim::Ordered(cl, key) => {
            // Uncorrelated, so both databases evaluate it once per statement, against the
            // table as it was before the statement (the rows it inserts are not seen).
            let token = sql.arg(cl.token.as_str());
            let held = format!(
                "EXISTS (SELECT 1 FROM jobs e WHERE e.order_key = {} \
                 AND e.status IN ('pending', 'running') \
                 AND (e.status = 'pending' OR e.claim_token <> {token}))",
                sql.arg(key)
            );
            let lease = lease_until(sql, cl);
            [
                format!("CASE WHEN {held} THEN 'pending' ELSE 'running' END"),
                format!("CASE WHEN {held} THEN 0 ELSE 1 END"),
                format!("CASE WHEN {held} THEN NULL ELSE {token} END"),
                format!("CASE WHEN {held} THEN NULL ELSE {lease} END"),
            ]
        }
    };
    let [status, attempts, token, locked_until] = claim;
    sql.bind(j.id.to_string())
        .push(", ")
        .bind(j.kind.name())
        .push(", ")
        .bind(payload)
        .push(&format!(", {status}, "))
        .bind(micros(j.run_at))
        .push(&format!(", {attempts}, "))
        .bind(j.kind.max_attempts().map(i64::from))
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(j.kind.order_key())
        .push(", ")
        .bind(order_seq)
        .push(&format!(", {token}, {locked_until}"));
    Ok(())
}

/// When the next job is due (see `next_job_at`).
pub(super) const NEXT_JOB_SQL: &str = "SELECT MIN(t) AS next_at FROM (\
             SELECT (SELECT run_at FROM jobs WHERE status = 'pending' \
               AND (order_key IS NULL OR NOT EXISTS (SELECT 1 FROM jobs e \
                    WHERE e.order_key = jobs.order_key AND e.status IN ('pending', 'running') \
                    AND e.order_seq < jobs.order_seq)) \
               ORDER BY run_at LIMIT 1) AS t \
             UNION ALL SELECT MIN(locked_until) AS t FROM jobs WHERE status = 'running') AS candidates";

/// A listing of jobs (`JobQueue::jobs`, the admin API's `GET /api/jobs`).
pub(super) fn jobs_sql(filter: &JobFilter) -> Sql {
    let mut sql = Sql::new(format!("SELECT {} FROM jobs WHERE 1 = 1", codec::JOB_COLS));
    if let Some(s) = filter.status {
        // A literal (one of four names of this program, never input), so that a listing of
        // live jobs reads its partial index (migration 0019).
        sql.push(&format!(" AND status = '{}'", s.as_str()));
    }
    if let Some(k) = &filter.kind {
        sql.push(" AND kind = ").bind(k.as_str());
    }
    sql.push(" ORDER BY run_at, id LIMIT ")
        .bind(limit(filter.limit));
    sql
}

/// The purge of finished jobs (`JobQueue::purge_done_jobs`): up to `limit` jobs of the kinds
/// this version stores, done before `finished_before`, found through `jobs_kind (kind, status,
/// updated_at)` (migration 0020) one range per kind. A kind only a newer version writes is left
/// for that version to purge.
pub(super) fn purge_done_sql(finished_before: DateTime<Utc>, limit: u32) -> Sql {
    let mut sql = Sql::new(
        "DELETE FROM jobs WHERE status = 'done' AND id IN \
         (SELECT id FROM jobs WHERE kind IN (",
    );
    for (i, kind) in JobKind::STORED_NAMES.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(*kind);
    }
    sql.push(") AND status = 'done' AND updated_at < ")
        .bind(micros(finished_before))
        .push(" LIMIT ")
        .bind(i64::from(limit))
        .push(")");
    sql
}

/// The job gauges' read (`JobQueue::job_stats`): one read per state, each naming its state as a
/// literal so that it walks its partial index (migration 0019). The gauges cost what the live
/// queue holds, not what is done.
pub(super) fn job_stats_sql(now: DateTime<Utc>, kind: Option<&str>) -> Sql {
    let mut args: Vec<Arg> = vec![micros(now).into()];
    let of_kind = match kind {
        Some(k) => {
            args.push(k.into());
            " AND kind = $2"
        }
        None => "",
    };
    let live: Vec<String> = ["pending", "running", "dead"]
        .iter()
        .map(|state| {
            format!(
                "SELECT status, run_at, attempts, created_at FROM jobs \
                 WHERE status = '{state}'{of_kind}"
            )
        })
        .collect();
    Sql::with(
        format!(
            "SELECT \
           COUNT(CASE WHEN status = 'pending' AND run_at <= $1 THEN 1 END) AS due, \
           COUNT(CASE WHEN status = 'pending' THEN 1 END) AS pending, \
           COUNT(CASE WHEN status = 'running' THEN 1 END) AS running, \
           COUNT(CASE WHEN status = 'dead' THEN 1 END) AS dead, \
           COUNT(CASE WHEN status = 'pending' AND attempts > 0 THEN 1 END) AS retrying, \
           MIN(CASE WHEN status = 'pending' AND run_at <= $1 THEN run_at END) AS oldest_due, \
           MIN(CASE WHEN status = 'pending' THEN created_at END) AS oldest_pending \
         FROM ({}) AS live",
            live.join(" UNION ALL ")
        ),
        args,
    )
}

/// The statements that mark `jobs` done: one per claim token and 500 jobs.
fn completions(jobs: &[(JobId, String)], now: DateTime<Utc>) -> Vec<Sql> {
    let mut out = Vec::new();
    for (token, ids) in by_token(jobs) {
        for chunk in ids.chunks(500) {
            let mut sql = Sql::default();
            push_completion(&mut sql, now, token, chunk);
            out.push(sql);
        }
    }
    out
}

/// Jobs grouped by claim token.
fn by_token(jobs: &[(JobId, String)]) -> std::collections::BTreeMap<&str, Vec<String>> {
    let mut by_token: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (id, token) in jobs {
        by_token
            .entry(token.as_str())
            .or_default()
            .push(id.to_string());
    }
    by_token
}

/// Appends the `UPDATE` that marks `ids` (claimed under `token`) done.
fn push_completion(sql: &mut Sql, now: DateTime<Utc>, token: &str, ids: &[String]) {
    sql.push("UPDATE jobs SET status = 'done', locked_until = NULL, updated_at = ")
        .bind(micros(now))
        .push(" WHERE status = 'running' AND claim_token = ")
        .bind(token)
        .push(" AND id IN (");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(id.as_str());
    }
    sql.push(")");
}

/// PostgreSQL: a completion with its message refs as one statement — the refs' upsert as a
/// data-modifying `WITH`, the jobs' `UPDATE` as the statement (PostgreSQL runs both to
/// completion, atomically; its row count is the `UPDATE`'s). For the usual settle of a
/// command's notifications: one claim token, at most 500 jobs and 500 refs; `None` otherwise.
/// (SQLite has no `INSERT` inside `WITH`; there the refs and the update are two statements of
/// one transaction, sent with its `BEGIN` and `COMMIT` in one round trip.)
fn refs_and_completion(call: &Completion) -> Option<Sql> {
    if call.refs.is_empty() {
        return None;
    }
    let by_token = by_token(&call.jobs);
    if by_token.len() != 1 {
        return None;
    }
    let (token, ids) = by_token.into_iter().next()?;
    let refs: Vec<&MessageRef> = call.refs.iter().collect();
    let refs = unique_refs(&refs);
    if ids.len() > 500 || refs.len() > 500 {
        return None;
    }
    let mut sql = Sql::new("WITH saved_refs AS (");
    push_refs_upsert(&mut sql, &refs);
    sql.push(") ");
    push_completion(&mut sql, call.now, token, &ids);
    Some(sql)
}

/// One `complete_job` / `complete_jobs` / `complete_jobs_with_refs` call, queued for group
/// commit: its claimed jobs, the message refs its jobs posted, and its clock.
pub(crate) struct Completion {
    pub jobs: Vec<(JobId, String)>,
    pub refs: Vec<MessageRef>,
    pub now: DateTime<Utc>,
}

impl SqlStore {
    /// Completes jobs (and saves message refs) through the completion group: concurrent calls
    /// are written as one transaction (docs/performance.md, "Group commit"). The number of this
    /// call's jobs marked done.
    pub(super) async fn complete_grouped(&self, call: Completion) -> Result<u64, StoreError> {
        let store = self.clone();
        self.completions
            .submit(call, move |batch| async move {
                store.complete_batch(batch).await
            })
            .await
            .unwrap_or_else(|| {
                Err(StoreError::database_msg(
                    "the job completion task ended without an outcome",
                ))
            })
    }

    /// A batch of completion calls: one as it always was; several in one transaction, and if
    /// that fails before its COMMIT, each alone (each call gets its own outcome).
    async fn complete_batch(&self, calls: Vec<Completion>) -> Vec<Result<u64, StoreError>> {
        if calls.len() > 1 {
            // A BEGIN that fails leaves the calls to be tried alone (and fail alone).
            if let Ok(mut t) = self.begin().await {
                match complete_together(&mut t, &calls).await {
                    Ok(done) => match t.commit().await {
                        Ok(()) => return done.into_iter().map(Ok).collect(),
                        Err(e) => {
                            // Whether the COMMIT took effect is unknown: nothing is written
                            // again (a completion repeated would match nothing anyway).
                            let text = with_sources(&plain(e));
                            return calls
                                .iter()
                                .map(|_| {
                                    Err(StoreError::database_msg(format!(
                                        "commit of a group of job completions: {text}"
                                    )))
                                })
                                .collect();
                        }
                    },
                    Err(e) => {
                        if let Err(rb) = t.rollback().await {
                            tracing::warn!(error = %rb, "rollback after a failed group completion failed");
                        }
                        tracing::debug!(size = calls.len(), error = %e, "a group completion failed; completing one by one");
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(calls.len());
        for call in calls {
            out.push(self.complete_alone(call).await);
        }
        out
    }

    /// One completion call, as it is written without company: a single job is one statement
    /// (autocommitted on PostgreSQL); several, or any refs, one transaction.
    async fn complete_alone(&self, call: Completion) -> Result<u64, StoreError> {
        if call.refs.is_empty() {
            if let [(id, token)] = call.jobs.as_slice() {
                let sql = Sql::with(
                    "UPDATE jobs SET status = 'done', locked_until = NULL, updated_at = $1 \
                     WHERE id = $2 AND claim_token = $3 AND status = 'running'",
                    vec![
                        micros(call.now).into(),
                        id.to_string().into(),
                        token.as_str().into(),
                    ],
                );
                return self.write_one(&sql).await;
            }
        }
        if self.backend() == Backend::Postgres {
            if let Some(sql) = refs_and_completion(&call) {
                // One statement: autocommitted, one round trip instead of four.
                return self.db.execute(&sql).await.map_err(plain);
            }
        }
        // The refs, the completions and the COMMIT (with the BEGIN) in one round trip on SQLite.
        // A failure leaves the transaction to be rolled back as it is dropped.
        let refs: Vec<&MessageRef> = call.refs.iter().collect();
        let mut statements = refs_upserts(&refs);
        let refs_statements = statements.len();
        statements.extend(completions(&call.jobs, call.now));
        let tx = self.begin().await?;
        let changed = tx
            .execute_all_and_commit(&statements)
            .await
            .map_err(plain)?;
        Ok(changed.iter().skip(refs_statements).sum())
    }
}

/// Several completion calls within `tx`: all their message refs in one upsert (later calls'
/// refs win, as they would one call at a time), then their jobs in one `UPDATE` per 500, each
/// job under its own claim token (`(id, claim_token) IN (VALUES …)`; the plain `id IN` list
/// lets both databases find the rows by primary key). `RETURNING` says which jobs matched, so
/// each call is told how many of its own jobs were marked done; a job named by two calls
/// counts for the first, as if they had run in order.
async fn complete_together(tx: &mut Tx, calls: &[Completion]) -> Result<Vec<u64>, StoreError> {
    let refs: Vec<&MessageRef> = calls.iter().flat_map(|c| c.refs.iter()).collect();
    if !refs.is_empty() {
        save_refs_in(tx, &refs).await?;
    }
    let now = calls.iter().map(|c| c.now).max().unwrap_or_else(Utc::now);
    let pairs: Vec<(String, &str)> = calls
        .iter()
        .flat_map(|c| c.jobs.iter().map(|(id, t)| (id.to_string(), t.as_str())))
        .collect();
    let mut matched: std::collections::HashSet<(String, String)> = Default::default();
    for chunk in pairs.chunks(500) {
        let mut sql = Sql::with(
            "UPDATE jobs SET status = 'done', locked_until = NULL, updated_at = $1 \
             WHERE status = 'running' AND (id, claim_token) IN (VALUES ",
            vec![micros(now).into()],
        );
        let mut id_params = Vec::with_capacity(chunk.len());
        for (i, (id, token)) in chunk.iter().enumerate() {
            sql.push(if i == 0 { "(" } else { ", (" });
            sql.bind(id.as_str());
            id_params.push(sql.args.len());
            sql.push(", ").bind(*token).push(")");
        }
        sql.push(") AND id IN (");
        for (i, n) in id_params.iter().enumerate() {
            sql.push(if i == 0 { "$" } else { ", $" })
                .push(&n.to_string());
        }
        sql.push(") RETURNING id, claim_token");
        for row in tx.conn().fetch_all(&sql).await.map_err(plain)? {
            matched.insert((row.string("id")?, row.string("claim_token")?));
        }
    }
    Ok(calls
        .iter()
        .map(|c| {
            c.jobs
                .iter()
                .filter(|(id, t)| matched.remove(&(id.to_string(), t.clone())))
                .count() as u64
        })
        .collect())
}

/// One `enqueue_claimed_once` call queued for group commit: the item's key, its job (whose id
/// derives from the key), the caller's clock and the claim the job is written under.
pub(crate) struct InboxInsert {
    pub key: String,
    pub job: NewJob,
    pub now: DateTime<Utc>,
    pub claim: ClaimAtInsert,
}

impl SqlStore {
    /// A batch of inbox items: one as it always was (one statement); several in one
    /// multi-row statement, and if that fails, each alone. True for an item stored now, false
    /// for a replay.
    pub(super) async fn inbox_batch(
        &self,
        calls: Vec<InboxInsert>,
    ) -> Vec<Result<bool, StoreError>> {
        if calls.len() > 1 {
            match self.inbox_together(&calls).await {
                Together::Done(firsts) => return firsts.into_iter().map(Ok).collect(),
                Together::Unknown(e) => {
                    let text = with_sources(&e);
                    return calls
                        .iter()
                        .map(|_| {
                            Err(StoreError::database_msg(format!(
                                "commit of a group of inbox items: {text}"
                            )))
                        })
                        .collect();
                }
                Together::RolledBack(e) => {
                    tracing::debug!(size = calls.len(), error = %e, "a group inbox insert failed; storing items one by one");
                }
            }
        }
        let mut out = Vec::with_capacity(calls.len());
        for call in &calls {
            out.push(self.inbox_alone(call).await);
        }
        out
    }

    /// One item in one statement: stored unless its job id (derived from the key) exists or
    /// its key is in the idempotency table (items stored by `enqueue_once`, the older path).
    async fn inbox_alone(&self, call: &InboxInsert) -> Result<bool, StoreError> {
        let mut sql = Sql::new(format!("INSERT INTO jobs ({JOB_INSERT_COLS}) SELECT "));
        push_job_values(
            &mut sql,
            self.backend(),
            &call.job,
            0,
            micros(call.now),
            RowClaim::Claimed(&call.claim),
        )?;
        sql.push(" WHERE NOT EXISTS (SELECT 1 FROM idempotency_keys WHERE key = ")
            .bind(call.key.as_str())
            .push(") ON CONFLICT (id) DO NOTHING");
        Ok(self.write_one_as(&sql, Urgency::Awaited).await? == 1)
    }

    /// Several items in one statement: `INSERT … SELECT` from a `VALUES` list whose first
    /// column is the key (checked against the idempotency table) and the rest the job's
    /// columns; `ON CONFLICT DO NOTHING RETURNING id` says which rows are new. A key queued
    /// twice in one batch is written once: its first caller gets the row, the others a replay.
    async fn inbox_together(&self, calls: &[InboxInsert]) -> Together<Vec<bool>> {
        let mut firsts: Vec<usize> = Vec::with_capacity(calls.len());
        let mut seen = std::collections::HashSet::new();
        for (i, c) in calls.iter().enumerate() {
            if seen.insert(c.job.id) {
                firsts.push(i);
            }
        }
        let cols = (2..=JOB_INSERT_COLS.split(',').count() + 1)
            .map(|n| format!("column{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sql = Sql::new(format!(
            "INSERT INTO jobs ({JOB_INSERT_COLS}) SELECT {cols} FROM (VALUES "
        ));
        for (k, &i) in firsts.iter().enumerate() {
            let c = &calls[i];
            sql.push(if k == 0 { "(" } else { ", (" })
                .bind(c.key.as_str())
                .push(", ");
            if let Err(e) = push_job_values(
                &mut sql,
                self.backend(),
                &c.job,
                k,
                micros(c.now),
                RowClaim::Claimed(&c.claim),
            ) {
                return Together::RolledBack(e);
            }
            sql.push(")");
        }
        sql.push(
            ") AS v WHERE NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.key = v.column1) \
             ON CONFLICT (id) DO NOTHING RETURNING id",
        );
        let mut tx = match self.begin_as(Urgency::Awaited).await {
            Ok(tx) => tx,
            Err(e) => return Together::RolledBack(e),
        };
        let rows = match tx.conn().fetch_all(&sql).await {
            Ok(rows) => rows,
            Err(e) => {
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %rb, "rollback after a failed group inbox insert failed");
                }
                return Together::RolledBack(plain(e));
            }
        };
        let mut stored = std::collections::HashSet::new();
        for row in &rows {
            match row.string("id") {
                Ok(id) => {
                    stored.insert(id);
                }
                Err(e) => {
                    if let Err(rb) = tx.rollback().await {
                        tracing::warn!(error = %rb, "rollback after a failed group inbox insert failed");
                    }
                    return Together::RolledBack(e);
                }
            }
        }
        if let Err(e) = tx.commit().await {
            return Together::Unknown(plain(e));
        }
        let mut out = vec![false; calls.len()];
        for &i in &firsts {
            out[i] = stored.contains(&calls[i].job.id.to_string());
        }
        Together::Done(out)
    }
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

/// The `AND kind …` condition of a claim's scope; `None` when the scope admits no kind.
/// Kind names are compile-time constants of this program, never input.
pub(super) fn scope_sql(scope: ClaimScope) -> Option<String> {
    Some(match scope {
        ClaimScope::All => String::new(),
        ClaimScope::Only(k) => format!("AND kind = '{}'", k.replace('\'', "")),
        ClaimScope::AllBut([]) => String::new(),
        ClaimScope::AllBut(kinds) => format!("AND kind NOT IN ({})", quoted_kinds(kinds)),
        ClaimScope::OneOf([]) => return None,
        ClaimScope::OneOf(kinds) => format!("AND kind IN ({})", quoted_kinds(kinds)),
    })
}

/// The pending-branch scopes of an `AllBut` claim on PostgreSQL, one read each: every stored
/// kind it admits (`JobKind::STORED_NAMES`) on its own, and the ranges between those names
/// (kinds a newer version wrote), each still excluding `excluded` (`whole`). Together they admit
/// exactly what `whole` admits: a kind either is a stored name or lies in one range (which needs
/// the names sorted byte by byte, as a test in access-core checks).
///
/// One ordered read of all due jobs filtered by kind would walk every due job of the excluded
/// kinds ahead of the first it may take: behind a backlog of 20,000 due exports PostgreSQL, which
/// tests the kind only after fetching the row, spent 15 ms per claim of the other lanes
/// (docs/performance.md, "Seventh session"). A range read sorts what it finds; it finds nothing
/// unless a newer version's jobs are due.
fn all_but_by_kind(whole: &str, excluded: &[&str]) -> Vec<String> {
    let names = JobKind::STORED_NAMES;
    let mut scopes: Vec<String> = names
        .iter()
        .filter(|k| !excluded.contains(k))
        .filter_map(|k| scope_sql(ClaimScope::Only(k)))
        .collect();
    let mut bounds: Vec<Option<&str>> = vec![None];
    bounds.extend(names.iter().map(|k| Some(*k)));
    bounds.push(None);
    for pair in bounds.windows(2) {
        let above = pair[0].map(|lo| format!(" AND kind > '{lo}'"));
        let below = pair[1].map(|hi| format!(" AND kind < '{hi}'"));
        scopes.push(format!(
            "{whole}{}{}",
            above.unwrap_or_default(),
            below.unwrap_or_default()
        ));
    }
    scopes
}

/// The two reads a claim picks from (see `SqlStore::claim_branch_sql`).
#[derive(Debug, Clone, Copy)]
pub(super) enum ClaimBranch {
    /// Pending jobs that are due.
    Due,
    /// Running jobs whose lease lapsed.
    Lapsed,
}

/// A claimed job this version cannot run: its id and why.
type SetAside = (String, String);

/// Splits claimed rows into the jobs this version can run and the ones it must set aside
/// (`(id, reason)`): a row this version cannot read must neither be left claimed by nobody nor
/// block the queue (revocations included), so it is buried, with the reason, in the claim's
/// transaction. A row without a readable id fails the claim.
fn sort_claimed(rows: &[DbRow]) -> Result<(Vec<Job>, Vec<SetAside>), StoreError> {
    let mut jobs = Vec::with_capacity(rows.len());
    let mut unreadable: Vec<SetAside> = Vec::new();
    for row in rows {
        match codec::job_from_row(row) {
            Ok(Job {
                id,
                kind: JobKind::Undecodable { kind, error },
                ..
            }) => unreadable.push((
                id.to_string(),
                format!("undecodable job of kind '{kind}' (written by a newer version?): {error}"),
            )),
            Ok(job) => jobs.push(job),
            Err(e) => match row.string("id") {
                Ok(id) => {
                    unreadable.push((id, format!("unreadable job row: {}", with_sources(&e))))
                }
                Err(_) => return Err(e),
            },
        }
    }
    Ok((jobs, unreadable))
}

impl SqlStore {
    /// One branch of a claim's pick: the first `$4` (by `run_at, id`) of the pending jobs due
    /// at `$3` (`Due`) or of the running jobs whose lease lapsed by the lease clock `clock`
    /// (`Lapsed`), in `scope`, that no earlier job of their ordering key holds back.
    ///
    /// Each branch is a read of one index in its order (`jobs_due`/`jobs_due_kind`, migration
    /// 0018, for the pending jobs), so it stops after `$4` rows: the old single pick, an `OR` of
    /// the two conditions, made both databases read and sort every due job before the `LIMIT`.
    /// The lapsed branch sorts the running jobs whose lease lapsed (few: the work of dead workers).
    pub(super) fn claim_branch_sql(scope: &str, branch: ClaimBranch, clock: &str) -> String {
        let due = match branch {
            ClaimBranch::Due => "status = 'pending' AND run_at <= $3".to_string(),
            ClaimBranch::Lapsed => format!("status = 'running' AND locked_until <= {clock}"),
        };
        format!(
            "SELECT id, run_at FROM jobs WHERE {due} \
             AND (order_key IS NULL OR NOT EXISTS (SELECT 1 FROM jobs e \
                  WHERE e.order_key = jobs.order_key AND e.status IN ('pending', 'running') \
                  AND e.order_seq < jobs.order_seq)) {scope} \
             ORDER BY run_at, id LIMIT $4"
        )
    }

    /// The claim statement: picks due jobs (pending and due at `now`, or running with a lapsed
    /// lease) and marks them running under `token` for `lease`, in one statement.
    ///
    /// Leases are measured by the lease clock (see `lease_clock`), not by `now`: `now` says
    /// which jobs are due, the lease clock says whose claim has lapsed. A running job whose
    /// lease has lapsed belonged to a worker that died (or hung): it is claimable again from the
    /// instant `locked_until`, the same instant `next_job_at` reports, so a scheduler woken by
    /// it always finds the job. A job with an ordering key waits while an earlier one of its key
    /// is pending or running (enqueue order, even across a retry of the earlier one). SKIP
    /// LOCKED lets concurrent claimers on PostgreSQL pass over rows another claimer is taking
    /// instead of waiting for them, and never returns a row twice.
    ///
    /// The pick is the first `limit` (by `run_at, id`) of the union of two ordered, limited
    /// reads (see [`Self::claim_branch_sql`]): the first `limit` of a union are among the first
    /// `limit` of each part, so the claimed set is the one a single ordered read of both would
    /// pick. On PostgreSQL each branch is its own CTE (`FOR UPDATE` is not allowed on a
    /// `UNION`); a row a branch locked but the union did not pick stays locked, unclaimed, until
    /// this claim commits, so a concurrent claimer skips it for that long and claims it next time.
    ///
    /// A claim of several kinds (`OneOf`) reads the due jobs of each kind on its own
    /// (`jobs_due_kind` in order, `limit` each): one read of all due jobs filtered by kind
    /// would walk every due job of the other kinds ahead of them (a revocation claim behind a
    /// backlog of exports). The union sorts at most `limit` per kind plus the lapsed ones.
    ///
    /// `None` when the scope admits no kind.
    pub(super) fn claim_sql(
        &self,
        scope: ClaimScope,
        token: &str,
        now: DateTime<Utc>,
        limit: u32,
        lease: chrono::Duration,
    ) -> Option<Sql> {
        let lease_micros = lease.num_microseconds().unwrap_or(i64::MAX / 4).max(0);
        let clock = self.lease_clock(5);
        let whole = scope_sql(scope)?;
        let due_scopes: Vec<String> = match scope {
            ClaimScope::OneOf(kinds) if kinds.len() > 1 => kinds
                .iter()
                .map(|k| scope_sql(ClaimScope::Only(k)))
                .collect::<Option<_>>()?,
            // SQLite tests the kind on the entries of `jobs_due` as it walks them (no row read),
            // and one walk was cheaper there than twenty reads (docs/performance.md).
            ClaimScope::AllBut(excluded)
                if !excluded.is_empty() && self.backend() == Backend::Postgres =>
            {
                all_but_by_kind(&whole, excluded)
            }
            _ => vec![whole.clone()],
        };
        let mut branches: Vec<String> = due_scopes
            .iter()
            .map(|s| Self::claim_branch_sql(s, ClaimBranch::Due, &clock))
            .collect();
        branches.push(Self::claim_branch_sql(&whole, ClaimBranch::Lapsed, &clock));
        let text = match self.backend() {
            Backend::Postgres => {
                let ctes: Vec<String> = branches
                    .iter()
                    .enumerate()
                    .map(|(i, b)| format!("b{i} AS ({b} FOR UPDATE SKIP LOCKED)"))
                    .collect();
                let union: Vec<String> = (0..branches.len())
                    .map(|i| format!("SELECT id, run_at FROM b{i}"))
                    .collect();
                format!(
                    "WITH {}, \
                 picked AS (SELECT id FROM ({}) AS candidates \
                   ORDER BY run_at, id LIMIT $4) \
                 UPDATE jobs SET status = 'running', locked_until = {clock} + $1, claim_token = $2, \
                 attempts = jobs.attempts + 1, updated_at = $3 FROM picked WHERE jobs.id = picked.id \
                 RETURNING {}",
                    ctes.join(", "),
                    union.join(" UNION ALL "),
                    prefixed("jobs", codec::JOB_COLS)
                )
            }
            Backend::Sqlite => {
                let union: Vec<String> = branches
                    .iter()
                    .map(|b| format!("SELECT id, run_at FROM ({b})"))
                    .collect();
                format!(
                    "UPDATE jobs SET status = 'running', locked_until = {clock} + $1, claim_token = $2, \
                 attempts = attempts + 1, updated_at = $3 WHERE id IN (SELECT id FROM ({}) \
                   ORDER BY run_at, id LIMIT $4) RETURNING {}",
                    union.join(" UNION ALL "),
                    codec::JOB_COLS
                )
            }
        };
        let mut args: Vec<Arg> = vec![
            lease_micros.into(),
            token.into(),
            micros(now).into(),
            i64::from(limit).into(),
        ];
        self.push_lease_clock_arg(&mut args);
        Some(Sql::with(text, args))
    }
}

#[async_trait]
impl JobQueue for SqlStore {
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
        let Some(sql) = self.claim_sql(scope, &token, now, limit, lease) else {
            return Ok(Vec::new());
        };
        let mut tx = self.begin().await?;
        let rows = tx.conn().fetch_all(&sql).await.map_err(plain)?;
        let (mut jobs, unreadable) = match sort_claimed(&rows) {
            Ok(sorted) => sorted,
            Err(e) => {
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %rb, "rollback after an unreadable job failed");
                }
                return Err(e);
            }
        };
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
        let done = self
            .complete_grouped(Completion {
                jobs: vec![(id, claim_token.to_string())],
                refs: Vec::new(),
                now,
            })
            .await?;
        Ok(done == 1)
    }

    async fn complete_jobs(
        &self,
        jobs: &[(JobId, String)],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        self.complete_grouped(Completion {
            jobs: jobs.to_vec(),
            refs: Vec::new(),
            now,
        })
        .await
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
        let sql = jobs_sql(filter);
        self.read_all(&sql, codec::job_from_row).await
    }

    async fn job_stats(
        &self,
        now: DateTime<Utc>,
        kind: Option<&str>,
    ) -> Result<JobStats, StoreError> {
        let sql = job_stats_sql(now, kind);
        let row = self
            .db
            .fetch_optional(&sql)
            .await
            .map_err(plain)?
            .ok_or_else(|| StoreError::database_msg("job stats returned no row"))?;
        let count = |col: &str| -> Result<u64, StoreError> {
            u64::try_from(row.i64(col)?).map_err(|e| StoreError::corrupt_because(col, e))
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

    async fn purge_done_jobs(
        &self,
        finished_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        // Through the writer queue on SQLite, like every write: a batch is short (`limit`
        // index-range deletes), so commands queued behind it wait little.
        self.write_one(&purge_done_sql(finished_before, limit))
            .await
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
        // Stored before a delivery is acknowledged: the acknowledgement waits on it.
        let mut tx = self.begin_as(Urgency::Awaited).await?;
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
            return Err(StoreError::database_msg(format!(
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
        // Through the inbox group: concurrent items are one multi-row statement.
        let store = self.clone();
        let first = self
            .inbox
            .submit(
                InboxInsert {
                    key: key.to_string(),
                    job: job.clone(),
                    now,
                    claim,
                },
                move |batch| async move { store.inbox_batch(batch).await },
            )
            .await
            .unwrap_or_else(|| {
                Err(StoreError::database_msg(
                    "the inbox task ended without an outcome",
                ))
            })?;
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
}
