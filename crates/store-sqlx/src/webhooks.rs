//! The [`WebhookStore`] port: each event webhook's cursor over the audit chain and its health
//! (table `webhooks`, migration 0017). URLs and secrets are never stored here.

use access_core::ports::{ChangeSet, Committed, StoreError};
use access_core::webhooks::{WebhookState, WebhookStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::SqlStore;
use crate::codec::{self, micros};
use crate::db::{DbRow, Sql};
use crate::error::plain;

const COLS: &str = "id, enabled, cursor_seq, consecutive_failures, last_error, last_success_at, \
                    disabled_at, updated_at";

fn state_from_row(row: &DbRow) -> Result<WebhookState, StoreError> {
    Ok(WebhookState {
        id: row.string("id")?,
        enabled: row.i64("enabled")? != 0,
        cursor_seq: row.i64("cursor_seq")?,
        consecutive_failures: u32::try_from(row.i64("consecutive_failures")?.max(0))
            .unwrap_or(u32::MAX),
        last_error: row.opt_string("last_error")?,
        last_success_at: codec::opt_time(row, "last_success_at")?,
        disabled_at: codec::opt_time(row, "disabled_at")?,
        updated_at: codec::time(row, "updated_at")?,
    })
}

#[async_trait]
impl WebhookStore for SqlStore {
    async fn ensure_webhooks(&self, ids: &[String], now: DateTime<Utc>) -> Result<(), StoreError> {
        for id in ids {
            // The cursor starts at the chain head: a new webhook gets events from now on. The
            // WHERE keeps SQLite's parser from reading ON CONFLICT as part of a join.
            let sql = Sql::with(
                "INSERT INTO webhooks (id, enabled, cursor_seq, consecutive_failures, created_at, \
                 updated_at) SELECT $1, 1, seq, 0, $2, $3 FROM audit_head WHERE id = 1 \
                 ON CONFLICT (id) DO NOTHING",
                vec![id.as_str().into(), micros(now).into(), micros(now).into()],
            );
            self.write_one(&sql).await?;
        }
        Ok(())
    }

    async fn webhook_states(&self) -> Result<Vec<WebhookState>, StoreError> {
        let sql = Sql::new(format!("SELECT {COLS} FROM webhooks ORDER BY id"));
        self.db
            .fetch_all(&sql)
            .await
            .map_err(plain)?
            .iter()
            .map(state_from_row)
            .collect()
    }

    async fn webhook_state(&self, id: &str) -> Result<Option<WebhookState>, StoreError> {
        let sql = Sql::with(
            format!("SELECT {COLS} FROM webhooks WHERE id = $1"),
            vec![id.into()],
        );
        self.db
            .fetch_optional(&sql)
            .await
            .map_err(plain)?
            .as_ref()
            .map(state_from_row)
            .transpose()
    }

    async fn webhook_delivered(
        &self,
        id: &str,
        cursor_seq: i64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sql = Sql::with(
            "UPDATE webhooks SET cursor_seq = CASE WHEN cursor_seq < $1 THEN $2 ELSE cursor_seq END, \
             consecutive_failures = 0, last_error = NULL, last_success_at = $3, updated_at = $4 \
             WHERE id = $5",
            vec![
                cursor_seq.into(),
                cursor_seq.into(),
                micros(now).into(),
                micros(now).into(),
                id.into(),
            ],
        );
        if self.write_one(&sql).await? == 0 {
            return Err(StoreError::NotFound(format!("webhook {id}")));
        }
        Ok(())
    }

    async fn webhook_failed(
        &self,
        id: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        // Bounded: a receiver echoing a huge body must not bloat the row.
        let error: String = error.chars().take(500).collect();
        let sql = Sql::with(
            "UPDATE webhooks SET consecutive_failures = consecutive_failures + 1, last_error = $1, \
             updated_at = $2 WHERE id = $3",
            vec![error.into(), micros(now).into(), id.into()],
        );
        if self.write_one(&sql).await? == 0 {
            return Err(StoreError::NotFound(format!("webhook {id}")));
        }
        self.webhook_state(id)
            .await?
            .map(|s| s.consecutive_failures)
            .ok_or_else(|| StoreError::NotFound(format!("webhook {id}")))
    }

    async fn set_webhook_enabled(
        &self,
        id: &str,
        enabled: bool,
        now: DateTime<Utc>,
        change: ChangeSet,
    ) -> Result<Option<Committed>, StoreError> {
        let sql = if enabled {
            Sql::with(
                "UPDATE webhooks SET enabled = 1, consecutive_failures = 0, disabled_at = NULL, \
                 updated_at = $1 WHERE id = $2 AND enabled = 0",
                vec![micros(now).into(), id.into()],
            )
        } else {
            Sql::with(
                "UPDATE webhooks SET enabled = 0, disabled_at = $1, updated_at = $2 \
                 WHERE id = $3 AND enabled = 1",
                vec![micros(now).into(), micros(now).into(), id.into()],
            )
        };
        let mut tx = self.begin().await?;
        let changed = tx.conn().execute(&sql).await.map_err(plain)?;
        if changed == 0 {
            if let Err(e) = tx.rollback().await {
                tracing::warn!(error = %e, "rollback of an unchanged webhook state failed");
            }
            return Ok(None);
        }
        match self.apply(&mut tx, change).await {
            Ok(committed) => {
                tx.commit().await.map_err(plain)?;
                self.remember_head(&committed);
                Ok(Some(committed))
            }
            Err(e) => {
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %rb, "rollback after a failed webhook change failed");
                }
                Err(e)
            }
        }
    }

    async fn audit_events_after(&self, seq: i64) -> Result<i64, StoreError> {
        let sql = Sql::with(
            "SELECT COUNT(*) AS n FROM audit_events WHERE seq > $1",
            vec![seq.into()],
        );
        match self.db.fetch_optional(&sql).await.map_err(plain)? {
            Some(row) => row.i64("n"),
            None => Ok(0),
        }
    }
}
