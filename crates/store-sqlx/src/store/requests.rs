//! Requests, grants, decisions and the reads around them: [`RequestStore`] on [`SqlStore`],
//! with the row writes a change set is made of.

use access_core::grant::{Grant, GrantStatus};
use access_core::ids::{GrantId, RequestId, ResourceId};
use access_core::ports::{
    ChangeSet, Committed, GrantFilter, RequestFilter, RequestStore, StoreError,
};
use access_core::request::{AccessRequest, Decision, RequestStatus};
use access_core::subject::SubjectKey;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{LIVE_STATUSES, Together, limit, prefixed, select_by};
use crate::SqlStore;
use crate::codec::{self, micros};
use crate::db::{Arg, Conn, Sql};
use crate::error::{db_err, plain, with_sources};

/// A request's columns from `team_id` to `failure`, in [`codec::REQUEST_COLS`] order (the
/// insert puts the id before them and the version after; the update binds them as `$1…$16`).
fn request_fields(v: codec::RequestValues) -> Vec<Arg> {
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
    ]
}

/// A grant's columns from `team_id` to `revoked_by`, in [`codec::GRANT_COLS`] order (as
/// [`request_fields`]), and `provider_intent`, `takeback_pending` (bound after the version).
fn grant_fields(v: codec::GrantValues) -> (Vec<Arg>, [Arg; 2]) {
    let fields = vec![
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
    ];
    (
        fields,
        [v.provider_intent.into(), v.takeback_pending.into()],
    )
}

pub(super) async fn insert_request(c: &mut Conn<'_>, r: &AccessRequest) -> Result<(), StoreError> {
    let v = codec::request_values(r)?;
    let sql = Sql::with(
        format!(
            "INSERT INTO requests ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
            codec::REQUEST_COLS
        ),
        {
            let mut args = vec![r.id.to_string().into()];
            args.extend(request_fields(v));
            args.push(r.version.into());
            args
        },
    );
    c.execute(&sql)
        .await
        .map_err(|e| db_err(e, || format!("request {} already exists", r.id)))?;
    Ok(())
}

pub(super) async fn update_request(c: &mut Conn<'_>, r: &AccessRequest) -> Result<(), StoreError> {
    let v = codec::request_values(r)?;
    let sql = Sql::with(
        "UPDATE requests SET team_id = $1, user_id = $2, email = $3, name = $4, resource = $5, kind = $6, \
         duration_secs = $7, justification = $8, status = $9, created_at = $10, updated_at = $11, \
         pending_until = $12, grant_id = $13, decided_by = $14, decided_by_id = $15, failure = $16, \
         version = version + 1 WHERE id = $17 AND version = $18",
        {
            let mut args = request_fields(v);
            args.extend([r.id.to_string().into(), r.version.into()]);
            args
        },
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

pub(super) async fn insert_grant(c: &mut Conn<'_>, g: &Grant) -> Result<(), StoreError> {
    let v = codec::grant_values(g)?;
    let sql = Sql::with(
        format!(
            "INSERT INTO grants ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            codec::GRANT_COLS
        ),
        {
            let (fields, tail) = grant_fields(v);
            let mut args = vec![g.id.to_string().into()];
            args.extend(fields);
            args.push(g.version.into());
            args.extend(tail);
            args
        },
    );
    c.execute(&sql)
        .await
        .map_err(|e| db_err(e, || live_grant_dup(g)))?;
    Ok(())
}

pub(super) async fn update_grant(c: &mut Conn<'_>, g: &Grant) -> Result<(), StoreError> {
    let v = codec::grant_values(g)?;
    let sql = Sql::with(
        "UPDATE grants SET team_id = $1, user_id = $2, email = $3, name = $4, resource = $5, status = $6, \
         provider_handle = $7, created_at = $8, granted_at = $9, expires_at = $10, ended_at = $11, \
         request_id = $12, revoked_by = $13, provider_intent = $16, takeback_pending = $17, \
         version = version + 1 WHERE id = $14 AND version = $15",
        {
            let (mut args, tail) = grant_fields(v);
            args.extend([g.id.to_string().into(), g.version.into()]);
            args.extend(tail);
            args
        },
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

pub(super) async fn insert_decision(c: &mut Conn<'_>, d: &Decision) -> Result<(), StoreError> {
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

impl SqlStore {
    /// Commits a batch of change sets taken from the group-commit queue: one change set as it
    /// always was; several in one transaction. If that transaction fails before its `COMMIT`
    /// (one change set's lost compare-and-set or unique violation fails the whole statement
    /// sequence), it is rolled back and each change set is committed alone, so every caller
    /// gets exactly the outcome it would have had alone and the good ones still commit.
    pub(super) async fn commit_batch(
        &self,
        changes: Vec<ChangeSet>,
    ) -> Vec<Result<Committed, StoreError>> {
        if changes.len() > 1 {
            match self.commit_together(&changes).await {
                Together::Done(all) => return all.into_iter().map(Ok).collect(),
                Together::Unknown(e) => {
                    // The COMMIT itself failed: whether it took effect is unknown, so nothing
                    // may be written again; every caller learns of the failure (as a lone
                    // commit's caller would).
                    let n = changes.len();
                    let text = with_sources(&e);
                    let mut out = vec![Err(e)];
                    out.extend((1..n).map(|_| {
                        Err(StoreError::database_msg(format!(
                            "commit of a group of {n} change sets: {text}"
                        )))
                    }));
                    return out;
                }
                Together::RolledBack(e) => {
                    tracing::debug!(
                        size = changes.len(),
                        error = %e,
                        "a group commit failed; committing its change sets one by one"
                    );
                }
            }
        }
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            out.push(self.commit_alone(change).await);
        }
        out
    }

    /// One change set in one transaction (the path of a lone caller).
    async fn commit_alone(&self, change: ChangeSet) -> Result<Committed, StoreError> {
        let tx = self.begin().await?;
        let committed = self.apply_and_commit(tx, change).await?;
        self.remember_head(&committed);
        Ok(committed)
    }

    /// Several change sets in one transaction.
    async fn commit_together(&self, changes: &[ChangeSet]) -> Together<Vec<Committed>> {
        let mut tx = match self.begin().await {
            Ok(tx) => tx,
            Err(e) => return Together::RolledBack(e),
        };
        match self.apply_batch(&mut tx, changes).await {
            Ok(committed) => {
                if let Err(e) = tx.commit().await {
                    return Together::Unknown(db_err(e, || "commit".to_string()));
                }
                // Once per batch: the last change set's last event is the new head.
                if let Some(last) = committed.iter().rev().find(|c| !c.audit.is_empty()) {
                    self.remember_head(last);
                }
                Together::Done(committed)
            }
            Err(e) => {
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %rb, "rollback after a failed group commit failed");
                }
                Together::RolledBack(e)
            }
        }
    }
}

/// `GET /api/requests`, `/access status` (pending requests of one person), …: newest first.
pub(super) fn requests_sql(filter: &RequestFilter) -> Sql {
    let mut sql = Sql::new(format!(
        "SELECT {} FROM requests WHERE 1 = 1",
        codec::REQUEST_COLS
    ));
    if let Some(s) = filter.status {
        sql.push(" AND status = ").bind(s.as_str());
    }
    push_list_tail(
        &mut sql,
        "requests",
        filter.resource.as_ref(),
        filter.subject.as_ref(),
        filter.before.map(|b| b.to_string()),
        filter.limit,
    );
    sql
}

/// `GET /api/grants`, `/access status` (live grants of one person), …: newest first.
pub(super) fn grants_sql(filter: &GrantFilter) -> Sql {
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
    push_list_tail(
        &mut sql,
        "grants",
        filter.resource.as_ref(),
        filter.subject.as_ref(),
        filter.before.map(|b| b.to_string()),
        filter.limit,
    );
    sql
}

/// What the request and grant lists filter on alike (resource, person, keyset cursor), then
/// their order, newest first, and the limit.
fn push_list_tail(
    sql: &mut Sql,
    table: &'static str,
    resource: Option<&ResourceId>,
    subject: Option<&SubjectKey>,
    before: Option<String>,
    max: Option<u32>,
) {
    if let Some(r) = resource {
        sql.push(" AND resource = ").bind(r.as_str());
    }
    if let Some(s) = subject {
        push_subject(sql, s);
    }
    if let Some(b) = before {
        push_before(sql, table, b);
    }
    sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .bind(limit(max));
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
impl RequestStore for SqlStore {
    async fn commit(&self, change: ChangeSet) -> Result<Committed, StoreError> {
        if change.is_empty() {
            return Ok(Committed::default());
        }
        // Group commit (docs/performance.md): queued with whatever else is being committed now;
        // the batch is written by a spawned task, so dropping this future abandons nothing.
        let store = self.clone();
        self.commits
            .submit(change, move |batch| async move {
                store.commit_batch(batch).await
            })
            .await
            .unwrap_or_else(|| {
                Err(StoreError::database_msg(
                    "the commit task ended without an outcome",
                ))
            })
    }

    async fn request(&self, id: RequestId) -> Result<Option<AccessRequest>, StoreError> {
        let sql = select_by(codec::REQUEST_COLS, "requests", "id", id.to_string(), "");
        self.read_one(&sql, codec::request_from_row).await
    }

    async fn requests(&self, filter: &RequestFilter) -> Result<Vec<AccessRequest>, StoreError> {
        self.read_all(&requests_sql(filter), codec::request_from_row)
            .await
    }

    async fn requests_for_grant(&self, grant: GrantId) -> Result<Vec<AccessRequest>, StoreError> {
        let sql = select_by(
            codec::REQUEST_COLS,
            "requests",
            "grant_id",
            grant.to_string(),
            "ORDER BY created_at, id",
        );
        self.read_all(&sql, codec::request_from_row).await
    }

    async fn decisions(&self, request: RequestId) -> Result<Vec<Decision>, StoreError> {
        let sql = select_by(
            codec::DECISION_COLS,
            "decisions",
            "request_id",
            request.to_string(),
            "ORDER BY at, id",
        );
        self.read_all(&sql, codec::decision_from_row).await
    }

    async fn grant(&self, id: GrantId) -> Result<Option<Grant>, StoreError> {
        let sql = select_by(codec::GRANT_COLS, "grants", "id", id.to_string(), "");
        self.read_one(&sql, codec::grant_from_row).await
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
        self.read_one(&sql, codec::grant_from_row).await
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
                    .map_err(|e| StoreError::corrupt_because("pending_request", e))
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
                    .map_err(|e| StoreError::corrupt_because("pending_request", e))
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
                            .ok_or_else(|| StoreError::corrupt(format!("{col}: {us} out of range")))
                    })
                    .transpose()
            };
            facts.pending_total = u64::try_from(first.i64("pending_total")?)
                .map_err(|e| StoreError::corrupt_because("pending_total", e))?;
            facts.first_pending_until = time("pending_first_until")?;
            facts.window_nth_newest = time("window_nth")?;
        }
        Ok(access_core::ports::SubmissionFacts {
            live,
            pending,
            rate: facts,
        })
    }

    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
        self.read_all(&grants_sql(filter), codec::grant_from_row)
            .await
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
            Err(StoreError::database_msg(format!(
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
}
