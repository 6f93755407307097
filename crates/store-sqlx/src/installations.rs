//! Slack installations and OAuth states (`slack_installations`, `oauth_states`).
//!
//! This module stores what it is given: token columns are opaque ciphertext bytes encrypted by
//! the caller (slack-adapter's `TokenCipher`), so the database never sees a token in clear text
//! and this crate needs no key. Times are unix microseconds like every other table.
//!
//! One installation per owner: (`enterprise_id`, `team_id`) with NULLs compared as empty, the
//! unique index `slack_installations_owner`. An org-wide Enterprise Grid install has no team id.

use access_core::ports::StoreError;
use sqlx::Row;

use crate::SqlStore;
use crate::db::{DbPool, TxKind};

/// One row of `slack_installations`. Token fields hold ciphertext.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct InstallationRow {
    pub team_id: Option<String>,
    pub enterprise_id: Option<String>,
    pub is_enterprise_install: bool,
    pub app_id: Option<String>,
    pub team_name: Option<String>,
    pub enterprise_name: Option<String>,
    pub enterprise_url: Option<String>,
    pub bot_user_id: Option<String>,
    pub bot_id: Option<String>,
    pub bot_scopes: Option<String>,
    pub bot_token_encrypted: Option<Vec<u8>>,
    pub bot_refresh_token_encrypted: Option<Vec<u8>>,
    pub bot_token_expires_at: Option<i64>,
    pub user_id: Option<String>,
    pub user_scopes: Option<String>,
    pub user_token_encrypted: Option<Vec<u8>>,
    pub user_refresh_token_encrypted: Option<Vec<u8>>,
    pub user_token_expires_at: Option<i64>,
    pub incoming_webhook_url_encrypted: Option<Vec<u8>>,
    pub incoming_webhook_channel: Option<String>,
    pub incoming_webhook_channel_id: Option<String>,
    pub incoming_webhook_configuration_url: Option<String>,
    pub installer_user_id: Option<String>,
    /// Unix microseconds.
    pub installed_at: i64,
    /// Unix microseconds.
    pub updated_at: i64,
}

impl std::fmt::Debug for InstallationRow {
    // Ciphertext is not secret, but it is noise; show only whether a token is present.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallationRow")
            .field("team_id", &self.team_id)
            .field("enterprise_id", &self.enterprise_id)
            .field("is_enterprise_install", &self.is_enterprise_install)
            .field("bot_user_id", &self.bot_user_id)
            .field("has_bot_token", &self.bot_token_encrypted.is_some())
            .field("user_id", &self.user_id)
            .field("has_user_token", &self.user_token_encrypted.is_some())
            .field("installed_at", &self.installed_at)
            .finish_non_exhaustive()
    }
}

/// What consuming an OAuth state found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthStateCheck {
    /// Issued, unexpired, unused: now consumed.
    Valid,
    /// Issued but past its expiry.
    Expired,
    /// Issued and already consumed once.
    Reused,
    /// Never issued (forged) or already cleaned up.
    Unknown,
}

const COLUMNS: &str = "team_id, enterprise_id, is_enterprise_install, app_id, team_name, \
    enterprise_name, enterprise_url, bot_user_id, bot_id, bot_scopes, bot_token_encrypted, \
    bot_refresh_token_encrypted, bot_token_expires_at, user_id, user_scopes, user_token_encrypted, \
    user_refresh_token_encrypted, user_token_expires_at, incoming_webhook_url_encrypted, \
    incoming_webhook_channel, incoming_webhook_channel_id, incoming_webhook_configuration_url, \
    installer_user_id, installed_at, updated_at";

/// Both drivers decode the same Rust types from these columns (bool from SQLite INTEGER and
/// PostgreSQL BOOLEAN, `Vec<u8>` from BLOB and BYTEA), so one macro reads either row type.
macro_rules! read_row {
    ($r:expr) => {{
        let r = $r;
        InstallationRow {
            team_id: r.try_get("team_id")?,
            enterprise_id: r.try_get("enterprise_id")?,
            is_enterprise_install: r.try_get("is_enterprise_install")?,
            app_id: r.try_get("app_id")?,
            team_name: r.try_get("team_name")?,
            enterprise_name: r.try_get("enterprise_name")?,
            enterprise_url: r.try_get("enterprise_url")?,
            bot_user_id: r.try_get("bot_user_id")?,
            bot_id: r.try_get("bot_id")?,
            bot_scopes: r.try_get("bot_scopes")?,
            bot_token_encrypted: r.try_get("bot_token_encrypted")?,
            bot_refresh_token_encrypted: r.try_get("bot_refresh_token_encrypted")?,
            bot_token_expires_at: r.try_get("bot_token_expires_at")?,
            user_id: r.try_get("user_id")?,
            user_scopes: r.try_get("user_scopes")?,
            user_token_encrypted: r.try_get("user_token_encrypted")?,
            user_refresh_token_encrypted: r.try_get("user_refresh_token_encrypted")?,
            user_token_expires_at: r.try_get("user_token_expires_at")?,
            incoming_webhook_url_encrypted: r.try_get("incoming_webhook_url_encrypted")?,
            incoming_webhook_channel: r.try_get("incoming_webhook_channel")?,
            incoming_webhook_channel_id: r.try_get("incoming_webhook_channel_id")?,
            incoming_webhook_configuration_url: r.try_get("incoming_webhook_configuration_url")?,
            installer_user_id: r.try_get("installer_user_id")?,
            installed_at: r.try_get("installed_at")?,
            updated_at: r.try_get("updated_at")?,
        }
    }};
}

macro_rules! bind_row {
    ($q:expr, $id:expr, $row:expr) => {{
        let i = $row;
        $q.bind($id)
            .bind(i.team_id.clone())
            .bind(i.enterprise_id.clone())
            .bind(i.is_enterprise_install)
            .bind(i.app_id.clone())
            .bind(i.team_name.clone())
            .bind(i.enterprise_name.clone())
            .bind(i.enterprise_url.clone())
            .bind(i.bot_user_id.clone())
            .bind(i.bot_id.clone())
            .bind(i.bot_scopes.clone())
            .bind(i.bot_token_encrypted.clone())
            .bind(i.bot_refresh_token_encrypted.clone())
            .bind(i.bot_token_expires_at)
            .bind(i.user_id.clone())
            .bind(i.user_scopes.clone())
            .bind(i.user_token_encrypted.clone())
            .bind(i.user_refresh_token_encrypted.clone())
            .bind(i.user_token_expires_at)
            .bind(i.incoming_webhook_url_encrypted.clone())
            .bind(i.incoming_webhook_channel.clone())
            .bind(i.incoming_webhook_channel_id.clone())
            .bind(i.incoming_webhook_configuration_url.clone())
            .bind(i.installer_user_id.clone())
            .bind(i.installed_at)
            .bind(i.updated_at)
    }};
}

fn err(what: &str, e: sqlx::Error) -> StoreError {
    StoreError::Database(format!("{what}: {e}"))
}

/// Owner match with NULLs as empty strings, the same expression as the unique index.
const OWNER: &str =
    "COALESCE(enterprise_id, '') = COALESCE($1, '') AND COALESCE(team_id, '') = COALESCE($2, '')";

impl SqlStore {
    /// Saves an installation, replacing the one of the same owner (a re-install updates scopes
    /// and tokens). `installed_at` of the earlier row is kept.
    pub async fn save_slack_installation(&self, row: &InstallationRow) -> Result<(), StoreError> {
        let insert = format!(
            "INSERT INTO slack_installations (id, {COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, \
             $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, \
             $25, $26)"
        );
        let previous = format!("SELECT installed_at FROM slack_installations WHERE {OWNER}");
        let delete = format!("DELETE FROM slack_installations WHERE {OWNER}");
        let id = uuid::Uuid::new_v4().to_string();
        let mut tx = self.db.begin().await.map_err(|e| err("begin", e))?;
        let mut row = row.clone();
        let res: Result<(), sqlx::Error> = async {
            match tx.kind_mut() {
                TxKind::Sqlite { tx, .. } => {
                    let prev: Option<i64> = sqlx::query_scalar(&previous)
                        .bind(row.enterprise_id.clone())
                        .bind(row.team_id.clone())
                        .fetch_optional(&mut **tx)
                        .await?;
                    if let Some(p) = prev {
                        row.installed_at = p;
                    }
                    sqlx::query(&delete)
                        .bind(row.enterprise_id.clone())
                        .bind(row.team_id.clone())
                        .execute(&mut **tx)
                        .await?;
                    bind_row!(sqlx::query(&insert), id.clone(), &row)
                        .execute(&mut **tx)
                        .await?;
                }
                TxKind::Postgres(tx) => {
                    let prev: Option<i64> = sqlx::query_scalar(&previous)
                        .bind(row.enterprise_id.clone())
                        .bind(row.team_id.clone())
                        .fetch_optional(&mut **tx)
                        .await?;
                    if let Some(p) = prev {
                        row.installed_at = p;
                    }
                    sqlx::query(&delete)
                        .bind(row.enterprise_id.clone())
                        .bind(row.team_id.clone())
                        .execute(&mut **tx)
                        .await?;
                    bind_row!(sqlx::query(&insert), id.clone(), &row)
                        .execute(&mut **tx)
                        .await?;
                }
            }
            Ok(())
        }
        .await;
        match res {
            Ok(()) => tx.commit().await.map_err(|e| err("commit installation", e)),
            Err(e) => {
                let _ = tx.rollback().await;
                Err(err("save installation", e))
            }
        }
    }

    /// The installation of exactly this owner (`team_id` `None` for an org-wide install).
    pub async fn slack_installation(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
    ) -> Result<Option<InstallationRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM slack_installations WHERE {OWNER}");
        let read = |e| err("read installation", e);
        match &self.db.pool {
            DbPool::Sqlite(p) => {
                let r = sqlx::query(&sql)
                    .bind(enterprise_id)
                    .bind(team_id)
                    .fetch_optional(p)
                    .await
                    .map_err(read)?;
                r.map(|r| Ok::<_, sqlx::Error>(read_row!(r)))
                    .transpose()
                    .map_err(read)
            }
            DbPool::Postgres(p) => {
                let r = sqlx::query(&sql)
                    .bind(enterprise_id)
                    .bind(team_id)
                    .fetch_optional(p)
                    .await
                    .map_err(read)?;
                r.map(|r| Ok::<_, sqlx::Error>(read_row!(r)))
                    .transpose()
                    .map_err(read)
            }
        }
    }

    /// Every installation whose `team_id` is `team_id` (several only if the same workspace was
    /// installed under different enterprises, which Slack does not do; newest first).
    pub async fn slack_installations_of_team(
        &self,
        team_id: &str,
    ) -> Result<Vec<InstallationRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM slack_installations WHERE team_id = $1 ORDER BY updated_at DESC"
        );
        self.read_installations(&sql, Some(team_id)).await
    }

    /// Every installation (for key rotation and listings), oldest first.
    pub async fn slack_installations(&self) -> Result<Vec<InstallationRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM slack_installations ORDER BY installed_at, id");
        self.read_installations(&sql, None).await
    }

    async fn read_installations(
        &self,
        sql: &str,
        arg: Option<&str>,
    ) -> Result<Vec<InstallationRow>, StoreError> {
        let read = |e| err("read installations", e);
        match &self.db.pool {
            DbPool::Sqlite(p) => {
                let mut q = sqlx::query(sql);
                if let Some(a) = arg {
                    q = q.bind(a);
                }
                let rows = q.fetch_all(p).await.map_err(read)?;
                rows.into_iter()
                    .map(|r| Ok::<_, sqlx::Error>(read_row!(r)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(read)
            }
            DbPool::Postgres(p) => {
                let mut q = sqlx::query(sql);
                if let Some(a) = arg {
                    q = q.bind(a);
                }
                let rows = q.fetch_all(p).await.map_err(read)?;
                rows.into_iter()
                    .map(|r| Ok::<_, sqlx::Error>(read_row!(r)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(read)
            }
        }
    }

    /// Removes the installation of this owner; returns how many rows went (0 or 1).
    pub async fn delete_slack_installation(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
    ) -> Result<u64, StoreError> {
        let sql = format!("DELETE FROM slack_installations WHERE {OWNER}");
        self.write2(&sql, enterprise_id, team_id, None).await
    }

    /// Forgets the user token of `user_id` in this owner's installation (`tokens_revoked` with
    /// `oauth` ids). Returns the number of rows changed.
    pub async fn clear_slack_user_token(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
        user_id: &str,
    ) -> Result<u64, StoreError> {
        let sql = format!(
            "UPDATE slack_installations SET user_token_encrypted = NULL, \
             user_refresh_token_encrypted = NULL, user_token_expires_at = NULL \
             WHERE {OWNER} AND user_id = $3"
        );
        self.write2(&sql, enterprise_id, team_id, Some(user_id))
            .await
    }

    async fn write2(
        &self,
        sql: &str,
        a: Option<&str>,
        b: Option<&str>,
        c: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut tx = self.db.begin().await.map_err(|e| err("begin", e))?;
        let res = match tx.kind_mut() {
            TxKind::Sqlite { tx, .. } => {
                let mut q = sqlx::query(sql).bind(a).bind(b);
                if let Some(c) = c {
                    q = q.bind(c);
                }
                q.execute(&mut **tx).await.map(|r| r.rows_affected())
            }
            TxKind::Postgres(tx) => {
                let mut q = sqlx::query(sql).bind(a).bind(b);
                if let Some(c) = c {
                    q = q.bind(c);
                }
                q.execute(&mut **tx).await.map(|r| r.rows_affected())
            }
        };
        match res {
            Ok(n) => {
                tx.commit().await.map_err(|e| err("commit", e))?;
                Ok(n)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(err("write installation", e))
            }
        }
    }

    /// Remembers that workspace `team_id` belongs to organisation `enterprise_id` (upsert).
    pub async fn remember_team_enterprise(
        &self,
        team_id: &str,
        enterprise_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO slack_team_enterprises (team_id, enterprise_id, updated_at) \
                   VALUES ($1, $2, $3) ON CONFLICT (team_id) DO UPDATE SET \
                   enterprise_id = excluded.enterprise_id, updated_at = excluded.updated_at";
        let mut tx = self.db.begin().await.map_err(|e| err("begin", e))?;
        let res = match tx.kind_mut() {
            TxKind::Sqlite { tx, .. } => sqlx::query(sql)
                .bind(team_id)
                .bind(enterprise_id)
                .bind(now)
                .execute(&mut **tx)
                .await
                .map(|_| ()),
            TxKind::Postgres(tx) => sqlx::query(sql)
                .bind(team_id)
                .bind(enterprise_id)
                .bind(now)
                .execute(&mut **tx)
                .await
                .map(|_| ()),
        };
        match res {
            Ok(()) => tx.commit().await.map_err(|e| err("commit", e)),
            Err(e) => {
                let _ = tx.rollback().await;
                Err(err("remember workspace organisation", e))
            }
        }
    }

    /// The organisation workspace `team_id` belongs to, if known.
    pub async fn team_enterprise(&self, team_id: &str) -> Result<Option<String>, StoreError> {
        let sql = "SELECT enterprise_id FROM slack_team_enterprises WHERE team_id = $1";
        let read = |e| err("read workspace organisation", e);
        match &self.db.pool {
            DbPool::Sqlite(p) => sqlx::query_scalar::<_, String>(sql)
                .bind(team_id)
                .fetch_optional(p)
                .await
                .map_err(read),
            DbPool::Postgres(p) => sqlx::query_scalar::<_, String>(sql)
                .bind(team_id)
                .fetch_optional(p)
                .await
                .map_err(read),
        }
    }

    /// Binds OAuth state `state` to workspace (or organisation) `team`.
    pub async fn bind_oauth_state(&self, state: &str, team: &str) -> Result<u64, StoreError> {
        let sql = "UPDATE oauth_states SET bound_team = $2 WHERE state = $1";
        self.write2(sql, Some(state), Some(team), None).await
    }

    /// The workspace (or organisation) OAuth state `state` is bound to, if any.
    pub async fn oauth_state_binding(&self, state: &str) -> Result<Option<String>, StoreError> {
        let sql = "SELECT bound_team FROM oauth_states WHERE state = $1";
        let read = |e| err("read OAuth state", e);
        let v: Option<Option<String>> = match &self.db.pool {
            DbPool::Sqlite(p) => sqlx::query_scalar(sql)
                .bind(state)
                .fetch_optional(p)
                .await
                .map_err(read)?,
            DbPool::Postgres(p) => sqlx::query_scalar(sql)
                .bind(state)
                .fetch_optional(p)
                .await
                .map_err(read)?,
        };
        Ok(v.flatten())
    }

    /// Records a freshly issued OAuth state.
    pub async fn insert_oauth_state(
        &self,
        state: &str,
        created_at: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let sql = "INSERT INTO oauth_states (state, created_at, expires_at, consumed) \
                   VALUES ($1, $2, $3, FALSE)";
        let mut tx = self.db.begin().await.map_err(|e| err("begin", e))?;
        let res = match tx.kind_mut() {
            TxKind::Sqlite { tx, .. } => sqlx::query(sql)
                .bind(state)
                .bind(created_at)
                .bind(expires_at)
                .execute(&mut **tx)
                .await
                .map(|r| r.rows_affected()),
            TxKind::Postgres(tx) => sqlx::query(sql)
                .bind(state)
                .bind(created_at)
                .bind(expires_at)
                .execute(&mut **tx)
                .await
                .map(|r| r.rows_affected()),
        };
        match res {
            Ok(_) => tx.commit().await.map_err(|e| err("commit", e)),
            Err(e) => {
                let _ = tx.rollback().await;
                Err(err("insert OAuth state", e))
            }
        }
    }

    /// Consumes `state` if it is valid at `now` (unix microseconds). Single use even under
    /// concurrency: the compare-and-set UPDATE lets exactly one caller see `Valid`.
    pub async fn consume_oauth_state(
        &self,
        state: &str,
        now: i64,
    ) -> Result<OAuthStateCheck, StoreError> {
        let update = "UPDATE oauth_states SET consumed = TRUE \
                      WHERE state = $1 AND consumed = FALSE AND expires_at > $2";
        let look = "SELECT consumed, expires_at FROM oauth_states WHERE state = $1";
        let mut tx = self.db.begin().await.map_err(|e| err("begin", e))?;
        let res: Result<OAuthStateCheck, sqlx::Error> = async {
            let (n, found): (u64, Option<(bool, i64)>) = match tx.kind_mut() {
                TxKind::Sqlite { tx, .. } => {
                    let n = sqlx::query(update)
                        .bind(state)
                        .bind(now)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                    let f = sqlx::query_as(look)
                        .bind(state)
                        .fetch_optional(&mut **tx)
                        .await?;
                    (n, f)
                }
                TxKind::Postgres(tx) => {
                    let n = sqlx::query(update)
                        .bind(state)
                        .bind(now)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                    let f = sqlx::query_as(look)
                        .bind(state)
                        .fetch_optional(&mut **tx)
                        .await?;
                    (n, f)
                }
            };
            Ok(match (n, found) {
                (1, _) => OAuthStateCheck::Valid,
                (_, None) => OAuthStateCheck::Unknown,
                (_, Some((true, _))) => OAuthStateCheck::Reused,
                (_, Some((false, _))) => OAuthStateCheck::Expired,
            })
        }
        .await;
        match res {
            Ok(c) => {
                tx.commit().await.map_err(|e| err("commit", e))?;
                Ok(c)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(err("consume OAuth state", e))
            }
        }
    }

    /// Deletes states that expired at or before `now`; returns how many.
    pub async fn cleanup_oauth_states(&self, now: i64) -> Result<u64, StoreError> {
        let sql = "DELETE FROM oauth_states WHERE expires_at <= $1";
        let mut tx = self.db.begin().await.map_err(|e| err("begin", e))?;
        let res = match tx.kind_mut() {
            TxKind::Sqlite { tx, .. } => sqlx::query(sql)
                .bind(now)
                .execute(&mut **tx)
                .await
                .map(|r| r.rows_affected()),
            TxKind::Postgres(tx) => sqlx::query(sql)
                .bind(now)
                .execute(&mut **tx)
                .await
                .map(|r| r.rows_affected()),
        };
        match res {
            Ok(n) => {
                tx.commit().await.map_err(|e| err("commit", e))?;
                Ok(n)
            }
            Err(e) => {
                let _ = tx.rollback().await;
                Err(err("clean up OAuth states", e))
            }
        }
    }
}
