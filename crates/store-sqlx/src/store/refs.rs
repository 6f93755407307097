//! Message references: [`MessageRefs`] on [`SqlStore`].

use access_core::ids::{JobId, RequestId};
use access_core::notification::MessageRef;
use access_core::ports::{MessageRefs, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::jobs::Completion;
use crate::SqlStore;
use crate::codec;
use crate::db::Sql;
use crate::db::Tx;
use crate::error::plain;

#[async_trait]
impl MessageRefs for SqlStore {
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
        self.read_all(&sql, codec::message_ref_from_row).await
    }

    async fn complete_jobs_with_refs(
        &self,
        jobs: &[(JobId, String)],
        refs: &[MessageRef],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        if jobs.is_empty() && refs.is_empty() {
            return Ok(0);
        }
        self.complete_grouped(Completion {
            jobs: jobs.to_vec(),
            refs: refs.to_vec(),
            now,
        })
        .await
    }
}

/// Saves message refs within `tx`: one multi-row upsert per 500 refs.
pub(super) async fn save_refs_in(tx: &mut Tx, refs: &[&MessageRef]) -> Result<(), StoreError> {
    for sql in refs_upserts(refs) {
        tx.conn().execute(&sql).await.map_err(plain)?;
    }
    Ok(())
}

/// The upserts that save `refs`: one per 500 unique refs, none for none.
pub(super) fn refs_upserts(refs: &[&MessageRef]) -> Vec<Sql> {
    unique_refs(refs)
        .chunks(500)
        .map(|chunk| {
            let mut sql = Sql::default();
            push_refs_upsert(&mut sql, chunk);
            sql
        })
        .collect()
}

/// One row per (request, purpose, channel): a repeat in one statement would be an error on
/// PostgreSQL (ON CONFLICT cannot touch a row twice); the last one wins, as it would one call at
/// a time.
pub(super) fn unique_refs<'a>(refs: &[&'a MessageRef]) -> Vec<&'a MessageRef> {
    let mut unique: Vec<&MessageRef> = Vec::with_capacity(refs.len());
    for r in refs {
        unique.retain(|u| {
            !(u.request_id == r.request_id && u.purpose == r.purpose && u.channel == r.channel)
        });
        unique.push(r);
    }
    unique
}

/// Appends the multi-row upsert of `refs` (unique, at most 500) to `sql`.
pub(super) fn push_refs_upsert(sql: &mut Sql, refs: &[&MessageRef]) {
    sql.push("INSERT INTO message_refs (request_id, purpose, team_id, channel, ts) VALUES ");
    for (i, r) in refs.iter().enumerate() {
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
}
