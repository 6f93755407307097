//! Break-glass records (`emergency_grants`, migration 0013): written in the transaction of the
//! grant they describe, reviewed once.

use access_core::duration::AccessDuration;
use access_core::emergency::{
    EmergencyAccess, EmergencyFilter, EmergencyReview, EmergencyWrite, ReviewOutcome,
};
use access_core::ids::RequestId;
use access_core::ports::StoreError;

use crate::SqlStore;
use crate::codec::{self, micros};
use crate::db::{Conn, DbRow, Sql};
use crate::error::{db_err, plain};

const COLS: &str = "request_id, grant_id, team_id, user_id, email, name, resource, duration_secs, \
     justification, granted_at, expires_at, reviewed_at, reviewed_by, reviewed_by_id, outcome";

/// Applies one write inside a change set's transaction.
pub(crate) async fn apply(c: &mut Conn<'_>, w: &EmergencyWrite) -> Result<(), StoreError> {
    match w {
        EmergencyWrite::Insert(e) => insert(c, e).await,
        EmergencyWrite::Review { request_id, review } => {
            record_review(c, *request_id, review).await
        }
    }
}

async fn insert(c: &mut Conn<'_>, e: &EmergencyAccess) -> Result<(), StoreError> {
    let secs = i64::try_from(e.duration.secs())
        .map_err(|_| StoreError::database_msg("break-glass duration out of range"))?;
    let (reviewed_at, reviewed_by, reviewed_by_id, outcome) = review_values(e.review.as_ref())?;
    let sql = Sql::with(
        format!(
            "INSERT INTO emergency_grants ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        ),
        vec![
            e.request_id.to_string().into(),
            e.grant_id.to_string().into(),
            e.subject.team_id.clone().into(),
            e.subject.user_id.clone().into(),
            e.subject
                .email
                .as_ref()
                .map(|m| m.as_str().to_string())
                .into(),
            e.subject.name.clone().into(),
            e.resource.to_string().into(),
            secs.into(),
            e.justification.clone().into(),
            micros(e.granted_at).into(),
            micros(e.expires_at).into(),
            reviewed_at.into(),
            reviewed_by.into(),
            reviewed_by_id.into(),
            outcome.into(),
        ],
    );
    c.execute(&sql).await.map_err(|err| {
        db_err(err, || {
            format!(
                "emergency record of request {} already exists",
                e.request_id
            )
        })
    })?;
    Ok(())
}

type ReviewColumns = (Option<i64>, Option<String>, Option<String>, Option<String>);

fn review_values(r: Option<&EmergencyReview>) -> Result<ReviewColumns, StoreError> {
    Ok(match r {
        None => (None, None, None, None),
        Some(r) => (
            Some(micros(r.at)),
            Some(codec::to_json(&r.by)?),
            Some(r.by.id()),
            Some(r.outcome.as_str().to_string()),
        ),
    })
}

/// Compare-and-set on "not reviewed yet": a second review writes nothing and is a conflict.
async fn record_review(
    c: &mut Conn<'_>,
    request_id: RequestId,
    review: &EmergencyReview,
) -> Result<(), StoreError> {
    let (at, by, by_id, outcome) = review_values(Some(review))?;
    let sql = Sql::with(
        "UPDATE emergency_grants SET reviewed_at = $1, reviewed_by = $2, reviewed_by_id = $3, outcome = $4 \
         WHERE request_id = $5 AND reviewed_at IS NULL",
        vec![
            at.into(),
            by.into(),
            by_id.into(),
            outcome.into(),
            request_id.to_string().into(),
        ],
    );
    let n = c
        .execute(&sql)
        .await
        .map_err(|e| db_err(e, || format!("emergency record of request {request_id}")))?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "emergency record of request {request_id} (already reviewed, or missing)"
        )));
    }
    Ok(())
}

fn from_row(row: &DbRow) -> Result<EmergencyAccess, StoreError> {
    let secs = row.i64("duration_secs")?;
    let duration = u64::try_from(secs)
        .map_err(|e| codec::corrupt("duration_secs", e))
        .and_then(|s| {
            AccessDuration::from_secs(s).map_err(|e| codec::corrupt("duration_secs", e))
        })?;
    let review = match codec::opt_time(row, "reviewed_at")? {
        None => None,
        Some(at) => {
            let by = codec::opt_actor(row, "reviewed_by")?
                .ok_or_else(|| codec::corrupt("reviewed_by", "NULL on a reviewed record"))?;
            let raw = row.string("outcome")?;
            let outcome = ReviewOutcome::parse(&raw)
                .ok_or_else(|| codec::corrupt("outcome", format!("unknown outcome '{raw}'")))?;
            Some(EmergencyReview { by, at, outcome })
        }
    };
    Ok(EmergencyAccess {
        request_id: codec::uuid(row, "request_id")?,
        grant_id: codec::uuid(row, "grant_id")?,
        subject: codec::subject(row)?,
        resource: codec::resource(row, "resource")?,
        duration,
        justification: row.string("justification")?,
        granted_at: codec::time(row, "granted_at")?,
        expires_at: codec::time(row, "expires_at")?,
        review,
    })
}

impl SqlStore {
    pub(crate) async fn emergency_one(
        &self,
        request: RequestId,
    ) -> Result<Option<EmergencyAccess>, StoreError> {
        let sql = Sql::with(
            format!("SELECT {COLS} FROM emergency_grants WHERE request_id = $1"),
            vec![request.to_string().into()],
        );
        self.db
            .fetch_optional(&sql)
            .await
            .map_err(plain)?
            .as_ref()
            .map(from_row)
            .transpose()
    }

    pub(crate) async fn emergency_list(
        &self,
        filter: &EmergencyFilter,
    ) -> Result<Vec<EmergencyAccess>, StoreError> {
        let mut sql = Sql::new(format!("SELECT {COLS} FROM emergency_grants WHERE 1 = 1"));
        match filter.reviewed {
            Some(false) => {
                sql.push(" AND reviewed_at IS NULL");
            }
            Some(true) => {
                sql.push(" AND reviewed_at IS NOT NULL");
            }
            None => {}
        }
        if let Some(r) = &filter.resource {
            sql.push(" AND resource = ");
            sql.bind(r.to_string());
        }
        let limit = i64::from(filter.limit.unwrap_or(100).clamp(1, 1000));
        sql.push(" ORDER BY granted_at DESC, request_id DESC LIMIT ");
        sql.bind(limit);
        let rows = self.db.fetch_all(&sql).await.map_err(plain)?;
        rows.iter().map(from_row).collect()
    }

    pub(crate) async fn emergency_unreviewed(&self) -> Result<u64, StoreError> {
        let row = self
            .db
            .fetch_optional(&Sql::new(
                "SELECT COUNT(*) AS n FROM emergency_grants WHERE reviewed_at IS NULL",
            ))
            .await
            .map_err(plain)?;
        let n = match row {
            Some(r) => r.i64("n")?,
            None => 0,
        };
        u64::try_from(n).map_err(|e| StoreError::corrupt_because("count", e))
    }
}
