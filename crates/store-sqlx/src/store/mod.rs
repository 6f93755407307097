//! The store ports on [`SqlStore`], one file per port: `requests` (requests, grants, decisions,
//! the atomic change set), `jobs` (the job queue and the inbox keys), `audit` (the hash chain),
//! `refs` (message references). This file holds what they share: limits, the lease clock,
//! transactions and single writes.

mod audit;
mod jobs;
#[cfg(test)]
mod plans;
mod refs;
mod requests;

pub(crate) use self::jobs::{Completion, InboxInsert};

use std::collections::HashMap;

use access_core::audit::AuditRecord;
use access_core::ids::JobId;
use access_core::ports::{ChangeSet, Committed, GrantWrite, RequestWrite, StoreError};
use chrono::Utc;

use crate::SqlStore;
use crate::codec::micros;
use crate::db::{Arg, Backend, DbRow, Sql, Tx, Urgency};
use crate::error::{db_err, plain};

use self::jobs::{JobInserts, job_inserts};
use self::requests::{insert_decision, insert_grant, insert_request, update_grant, update_request};

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
/// How a group-commit batch's transaction ended (see `crate::group`).
pub(crate) enum Together<T> {
    Done(T),
    /// Nothing was written (the transaction failed before its COMMIT and was rolled back).
    RolledBack(StoreError),
    /// The COMMIT failed: it may or may not have taken effect.
    Unknown(StoreError),
}

const LIVE_STATUSES: &str = "('provisioning', 'active', 'revoking')";

fn limit(l: Option<u32>) -> i64 {
    i64::from(l.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT))
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
        self.begin_as(Urgency::Queued)
    }

    /// As [`Self::begin`]; a write someone is waiting on ([`Urgency::Awaited`]: an inbox item,
    /// whose insert Slack's acknowledgement waits for) goes ahead of the writers already queued
    /// on SQLite (`db::WriterQueue`).
    #[track_caller]
    pub(crate) fn begin_as(
        &self,
        urgency: Urgency,
    ) -> impl std::future::Future<Output = Result<Tx, StoreError>> + Send + '_ {
        let begun = self.db.begin_as(urgency);
        async move { begun.await.map_err(plain) }
    }

    /// Writes one change set within `tx` (see [`Self::apply_batch`]).
    pub(crate) async fn apply(
        &self,
        tx: &mut Tx,
        change: ChangeSet,
    ) -> Result<Committed, StoreError> {
        let mut out = self.apply_batch(tx, std::slice::from_ref(&change)).await?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Writes change sets within `tx`, as one: each one's request, grant, decision,
    /// break-glass and delegation writes, in order; then the audit records of all of them,
    /// sealed in sequence after the head (one head `UPDATE`, one multi-row insert per 500
    /// events); then all their jobs, each under its own change set's claim (one multi-row
    /// insert per 500 jobs). One change set is four statements (docs/performance.md); a group
    /// of them adds only their row writes. Returns each change set's sealed events.
    pub(crate) async fn apply_batch(
        &self,
        tx: &mut Tx,
        changes: &[ChangeSet],
    ) -> Result<Vec<Committed>, StoreError> {
        let (mut committed, jobs) = self.apply_rows(tx, changes).await?;
        let mut held_back = jobs.held_back;
        let mut c = tx.conn();
        for insert in &jobs.inserts {
            held_back.extend(insert.run(&mut c).await?);
        }
        name_held_back(&mut committed, changes, &held_back);
        Ok(committed)
    }

    /// Writes one change set within `tx` and commits it, the last statement with the `COMMIT`
    /// (one round trip less on SQLite: [`Tx::execute_and_commit`]). A failure rolls back.
    pub(crate) async fn apply_and_commit(
        &self,
        mut tx: Tx,
        change: ChangeSet,
    ) -> Result<Committed, StoreError> {
        let changes = std::slice::from_ref(&change);
        let written = async {
            let (committed, mut jobs) = self.apply_rows(&mut tx, changes).await?;
            let last = jobs.inserts.pop();
            let mut c = tx.conn();
            for insert in &jobs.inserts {
                let held = insert.run(&mut c).await?;
                jobs.held_back.extend(held);
            }
            Ok::<_, StoreError>((committed, jobs.held_back, last))
        }
        .await;
        let (mut committed, mut held_back, last) = match written {
            Ok(w) => w,
            Err(e) => {
                // Dropping the transaction would roll back too; doing it here returns the
                // connection clean and surfaces a failing rollback in the logs.
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %rb, "rollback after a failed commit failed");
                }
                return Err(e);
            }
        };
        // A failure from here on is rolled back as the transaction is dropped.
        match last {
            Some(insert) => held_back.extend(insert.run_and_commit(tx).await?),
            None => tx
                .commit()
                .await
                .map_err(|e| db_err(e, || "commit".to_string()))?,
        }
        name_held_back(&mut committed, changes, &held_back);
        Ok(committed.pop().unwrap_or_default())
    }

    /// What [`Self::apply_batch`] writes up to the jobs, whose inserts it returns unsent.
    async fn apply_rows(
        &self,
        tx: &mut Tx,
        changes: &[ChangeSet],
    ) -> Result<(Vec<Committed>, JobInserts), StoreError> {
        let mut c = tx.conn();

        for change in changes {
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
        }

        let records: Vec<AuditRecord> = changes
            .iter()
            .flat_map(|ch| ch.audit.iter().cloned())
            .collect();
        let sealed = if records.is_empty() {
            Vec::new()
        } else {
            self.append_audit(&mut c, records).await?
        };
        // Each change set's events are the next `audit.len()` of the sealed sequence.
        let mut sealed = sealed.into_iter();
        let committed = changes
            .iter()
            .map(|ch| Committed {
                audit: sealed.by_ref().take(ch.audit.len()).collect(),
                held_back: Vec::new(),
            })
            .collect();
        Ok((committed, job_inserts(self.backend(), changes)?))
    }

    /// One write statement. On PostgreSQL a single statement is its own transaction, so it runs
    /// in autocommit (one round trip instead of three); on SQLite it still goes through the writer
    /// lock and `BEGIN IMMEDIATE`, which keep writers from failing with `SQLITE_BUSY`.
    pub(crate) async fn write_one(&self, sql: &Sql) -> Result<u64, StoreError> {
        self.write_one_as(sql, Urgency::Queued).await
    }

    /// As [`Self::write_one`], with the writer's [`Urgency`] (see [`Self::begin_as`]).
    pub(crate) async fn write_one_as(
        &self,
        sql: &Sql,
        urgency: Urgency,
    ) -> Result<u64, StoreError> {
        match self.backend() {
            Backend::Postgres => self.db.execute(sql).await.map_err(plain),
            Backend::Sqlite => {
                let tx = self.begin_as(urgency).await?;
                // BEGIN, the statement and COMMIT in one round trip.
                tx.execute_and_commit(sql).await.map_err(plain)
            }
        }
    }
}

impl SqlStore {
    /// Runs one read and decodes every row.
    pub(crate) async fn read_all<T>(
        &self,
        sql: &Sql,
        decode: fn(&DbRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = self.db.fetch_all(sql).await.map_err(plain)?;
        rows.iter().map(decode).collect()
    }

    /// Runs one read and decodes its row, if there is one.
    pub(crate) async fn read_one<T>(
        &self,
        sql: &Sql,
        decode: fn(&DbRow) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let row = self.db.fetch_optional(sql).await.map_err(plain)?;
        row.as_ref().map(decode).transpose()
    }

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
            let n =
                u64::try_from(r.i64("n")?).map_err(|e| StoreError::corrupt_because("count", e))?;
            out.insert(r.string("status")?, n);
        }
        Ok(out)
    }
}

/// Tells each change set which of its claimed jobs were held back (written pending behind an
/// earlier job of their ordering key).
fn name_held_back(committed: &mut [Committed], changes: &[ChangeSet], held_back: &[JobId]) {
    if held_back.is_empty() {
        return;
    }
    for (out, ch) in committed.iter_mut().zip(changes) {
        if let Some(claim) = &ch.claimed {
            out.held_back = claim
                .ids
                .iter()
                .filter(|id| held_back.contains(id))
                .copied()
                .collect();
        }
    }
}

/// `SELECT cols FROM table WHERE col = $1`, then `tail` (an `ORDER BY`, or nothing): a read by
/// one key.
fn select_by(cols: &str, table: &str, col: &str, key: String, tail: &str) -> Sql {
    let tail = if tail.is_empty() {
        String::new()
    } else {
        format!(" {tail}")
    };
    Sql::with(
        format!("SELECT {cols} FROM {table} WHERE {col} = $1{tail}"),
        vec![key.into()],
    )
}

/// `a, b` → `t.a, t.b` (PostgreSQL's `UPDATE … FROM` needs qualified names in RETURNING).
fn prefixed(table: &str, cols: &str) -> String {
    cols.split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
