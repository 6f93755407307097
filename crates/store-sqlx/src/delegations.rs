//! The `delegations` table (migration 0014): who lets whom approve for them, until when.

use access_core::delegation::{Delegation, DelegationFilter, DelegationWrite};
use access_core::ports::StoreError;

use crate::SqlStore;
use crate::codec::{self, micros};
use crate::db::{Conn, DbRow, Sql};

const COLS: &str = "id, team_id, delegator_id, delegator_name, delegate_id, delegate_name, \
                    created_at, until_at, revoked_at, revoked_by";

/// Applies one write inside a change set's transaction.
pub(crate) async fn apply(c: &mut Conn<'_>, w: &DelegationWrite) -> Result<(), StoreError> {
    match w {
        DelegationWrite::Insert(d) => {
            let sql = Sql::with(
                format!(
                    "INSERT INTO delegations ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ),
                vec![
                    d.id.to_string().into(),
                    d.team_id.clone().into(),
                    d.delegator_id.clone().into(),
                    d.delegator_name.clone().into(),
                    d.delegate_id.clone().into(),
                    d.delegate_name.clone().into(),
                    micros(d.created_at).into(),
                    micros(d.until).into(),
                    d.revoked_at.map(micros).into(),
                    d.revoked_by.clone().into(),
                ],
            );
            c.execute(&sql).await.map_err(crate::error::plain)?;
        }
        DelegationWrite::Revoke { id, at, by } => {
            let sql = Sql::with(
                "UPDATE delegations SET revoked_at = $1, revoked_by = $2 WHERE id = $3 AND revoked_at IS NULL",
                vec![micros(*at).into(), by.clone().into(), id.to_string().into()],
            );
            let n = c.execute(&sql).await.map_err(crate::error::plain)?;
            if n != 1 {
                return Err(StoreError::Conflict(format!("delegation {id}")));
            }
        }
    }
    Ok(())
}

fn from_row(r: &DbRow) -> Result<Delegation, StoreError> {
    let id = r.string("id")?;
    Ok(Delegation {
        id: id
            .parse()
            .map_err(|_| StoreError::corrupt(format!("delegation id '{id}'")))?,
        team_id: r.string("team_id")?,
        delegator_id: r.string("delegator_id")?,
        delegator_name: r.string("delegator_name")?,
        delegate_id: r.string("delegate_id")?,
        delegate_name: r.string("delegate_name")?,
        created_at: codec::time(r, "created_at")?,
        until: codec::time(r, "until_at")?,
        revoked_at: codec::opt_time(r, "revoked_at")?,
        revoked_by: r.opt_string("revoked_by")?,
    })
}

impl SqlStore {
    pub(crate) async fn read_delegations(
        &self,
        f: &DelegationFilter,
    ) -> Result<Vec<Delegation>, StoreError> {
        let mut sql = Sql::new(format!("SELECT {COLS} FROM delegations WHERE 1 = 1"));
        if let Some(t) = &f.team_id {
            sql.push(" AND team_id = ").bind(t.clone());
        }
        if let Some(u) = &f.delegator_id {
            sql.push(" AND delegator_id = ").bind(u.clone());
        }
        if let Some(u) = &f.delegate_id {
            sql.push(" AND delegate_id = ").bind(u.clone());
        }
        if let Some(at) = f.active_at {
            sql.push(" AND revoked_at IS NULL AND until_at > ")
                .bind(micros(at));
        }
        sql.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .bind(i64::from(f.limit.unwrap_or(100).clamp(1, 1000)));
        let rows = self.db.fetch_all(&sql).await.map_err(crate::error::plain)?;
        rows.iter().map(from_row).collect()
    }
}
