//! [`InstallationStore`] on [`SqlStore`]: Slack installations (`slack_installations`), OAuth
//! states (`oauth_states`) and which organisation a workspace belongs to
//! (`slack_team_enterprises`), through the same one-SQL-for-two-backends layer as the rest of
//! the store (`db`).
//!
//! This module stores what it is given: token columns hold the caller's ciphertext
//! ([`SealedInstallation`]), so the database never sees a token in clear text and this crate
//! needs no key. Times are unix microseconds like every other table.
//!
//! One installation per owner: (`enterprise_id`, `team_id`) with NULLs compared as empty, the
//! unique index `slack_installations_owner`. An org-wide Enterprise Grid install has no team id.

use access_core::ports::{
    InstallationInfo, InstallationStore, SealedInstallation, StateCheck, StoreError,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::SqlStore;
use crate::codec::{self, micros};
use crate::db::{Arg, DbRow, Sql};
use crate::error::failed;

const COLUMNS: &str = "team_id, enterprise_id, is_enterprise_install, app_id, team_name, \
    enterprise_name, enterprise_url, bot_user_id, bot_id, bot_scopes, bot_token_encrypted, \
    bot_refresh_token_encrypted, bot_token_expires_at, user_id, user_scopes, user_token_encrypted, \
    user_refresh_token_encrypted, user_token_expires_at, incoming_webhook_url_encrypted, \
    incoming_webhook_channel, incoming_webhook_channel_id, incoming_webhook_configuration_url, \
    installer_user_id, installed_at, updated_at";

/// Owner match with NULLs as empty strings, the same expression as the unique index.
const OWNER: &str =
    "COALESCE(enterprise_id, '') = COALESCE($1, '') AND COALESCE(team_id, '') = COALESCE($2, '')";

fn owner_args(enterprise_id: Option<&str>, team_id: Option<&str>) -> Vec<Arg> {
    vec![
        enterprise_id.map(str::to_string).into(),
        team_id.map(str::to_string).into(),
    ]
}

/// `id` then [`COLUMNS`], in order, for the `INSERT`.
fn row_args(id: String, s: &SealedInstallation) -> Vec<Arg> {
    let i = &s.info;
    vec![
        id.into(),
        i.team_id.clone().into(),
        i.enterprise_id.clone().into(),
        i.is_enterprise_install.into(),
        i.app_id.clone().into(),
        i.team_name.clone().into(),
        i.enterprise_name.clone().into(),
        i.enterprise_url.clone().into(),
        i.bot_user_id.clone().into(),
        i.bot_id.clone().into(),
        i.bot_scopes.clone().into(),
        s.bot_token.clone().into(),
        s.bot_refresh_token.clone().into(),
        i.bot_token_expires_at.map(micros).into(),
        i.user_id.clone().into(),
        i.user_scopes.clone().into(),
        s.user_token.clone().into(),
        s.user_refresh_token.clone().into(),
        i.user_token_expires_at.map(micros).into(),
        s.incoming_webhook_url.clone().into(),
        i.incoming_webhook_channel.clone().into(),
        i.incoming_webhook_channel_id.clone().into(),
        i.incoming_webhook_configuration_url.clone().into(),
        i.installer_user_id.clone().into(),
        micros(i.installed_at).into(),
        micros(i.updated_at).into(),
    ]
}

fn from_row(r: &DbRow) -> Result<SealedInstallation, StoreError> {
    Ok(SealedInstallation {
        info: InstallationInfo {
            team_id: r.opt_string("team_id")?,
            team_name: r.opt_string("team_name")?,
            enterprise_id: r.opt_string("enterprise_id")?,
            enterprise_name: r.opt_string("enterprise_name")?,
            enterprise_url: r.opt_string("enterprise_url")?,
            is_enterprise_install: r.bool("is_enterprise_install")?,
            app_id: r.opt_string("app_id")?,
            bot_id: r.opt_string("bot_id")?,
            bot_user_id: r.opt_string("bot_user_id")?,
            bot_scopes: r.opt_string("bot_scopes")?,
            bot_token_expires_at: codec::opt_time(r, "bot_token_expires_at")?,
            user_id: r.opt_string("user_id")?,
            user_scopes: r.opt_string("user_scopes")?,
            user_token_expires_at: codec::opt_time(r, "user_token_expires_at")?,
            incoming_webhook_channel: r.opt_string("incoming_webhook_channel")?,
            incoming_webhook_channel_id: r.opt_string("incoming_webhook_channel_id")?,
            incoming_webhook_configuration_url: r
                .opt_string("incoming_webhook_configuration_url")?,
            installer_user_id: r.opt_string("installer_user_id")?,
            installed_at: codec::time(r, "installed_at")?,
            updated_at: codec::time(r, "updated_at")?,
        },
        bot_token: r.opt_bytes("bot_token_encrypted")?,
        bot_refresh_token: r.opt_bytes("bot_refresh_token_encrypted")?,
        user_token: r.opt_bytes("user_token_encrypted")?,
        user_refresh_token: r.opt_bytes("user_refresh_token_encrypted")?,
        incoming_webhook_url: r.opt_bytes("incoming_webhook_url_encrypted")?,
    })
}

impl SqlStore {
    /// Saves in one transaction: the earlier row of the owner (if any) gives its `installed_at`
    /// and is replaced.
    async fn replace_installation(&self, s: &SealedInstallation) -> Result<(), StoreError> {
        let (e, t) = (s.info.enterprise_id.as_deref(), s.info.team_id.as_deref());
        let previous = Sql::with(
            format!("SELECT installed_at FROM slack_installations WHERE {OWNER}"),
            owner_args(e, t),
        );
        let delete = Sql::with(
            format!("DELETE FROM slack_installations WHERE {OWNER}"),
            owner_args(e, t),
        );
        let mut tx = self.begin().await?;
        let mut c = tx.conn();
        let res: Result<(), StoreError> = async {
            let prev = c
                .fetch_optional(&previous)
                .await
                .map_err(failed("read installation"))?;
            let mut row = s.clone();
            if let Some(p) = prev {
                row.info.installed_at = codec::time(&p, "installed_at")?;
            }
            c.execute(&delete)
                .await
                .map_err(failed("replace installation"))?;
            let placeholders: Vec<String> = (1..=26).map(|n| format!("${n}")).collect();
            let insert = Sql::with(
                format!(
                    "INSERT INTO slack_installations (id, {COLUMNS}) VALUES ({})",
                    placeholders.join(", ")
                ),
                row_args(uuid::Uuid::new_v4().to_string(), &row),
            );
            c.execute(&insert)
                .await
                .map_err(failed("save installation"))?;
            Ok(())
        }
        .await;
        match res {
            Ok(()) => tx.commit().await.map_err(failed("commit installation")),
            Err(e) => {
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %rb, "rollback after a failed installation save failed");
                }
                Err(e)
            }
        }
    }

    /// Consumes `state` if valid at `now`, in one transaction: the compare-and-set `UPDATE` lets
    /// exactly one caller see `Valid`; the `SELECT` tells the others why not.
    async fn consume_state_in_tx(
        &self,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<StateCheck, StoreError> {
        let update = Sql::with(
            "UPDATE oauth_states SET consumed = TRUE \
             WHERE state = $1 AND consumed = FALSE AND expires_at > $2",
            vec![state.into(), micros(now).into()],
        );
        let look = Sql::with(
            "SELECT consumed FROM oauth_states WHERE state = $1",
            vec![state.into()],
        );
        let mut tx = self.begin().await?;
        let mut c = tx.conn();
        let res: Result<StateCheck, StoreError> = async {
            let n = c
                .execute(&update)
                .await
                .map_err(failed("consume OAuth state"))?;
            if n == 1 {
                return Ok(StateCheck::Valid);
            }
            let found = c
                .fetch_optional(&look)
                .await
                .map_err(failed("read OAuth state"))?;
            Ok(match found {
                None => StateCheck::Unknown,
                Some(row) if row.bool("consumed")? => StateCheck::Reused,
                Some(_) => StateCheck::Expired,
            })
        }
        .await;
        match res {
            Ok(check) => {
                tx.commit().await.map_err(failed("commit OAuth state"))?;
                Ok(check)
            }
            Err(e) => {
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %rb, "rollback after a failed OAuth state check failed");
                }
                Err(e)
            }
        }
    }
}

#[async_trait]
impl InstallationStore for SqlStore {
    async fn save(&self, i: &SealedInstallation) -> Result<(), StoreError> {
        self.replace_installation(i).await
    }

    async fn find(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
    ) -> Result<Option<SealedInstallation>, StoreError> {
        let sql = Sql::with(
            format!("SELECT {COLUMNS} FROM slack_installations WHERE {OWNER}"),
            owner_args(enterprise_id, team_id),
        );
        self.read_one(&sql, from_row).await
    }

    async fn find_team(&self, team_id: &str) -> Result<Option<SealedInstallation>, StoreError> {
        // Several only if the same workspace was installed under different enterprises, which
        // Slack does not do: the newest.
        let sql = Sql::with(
            format!(
                "SELECT {COLUMNS} FROM slack_installations WHERE team_id = $1 \
                 ORDER BY updated_at DESC LIMIT 1"
            ),
            vec![team_id.into()],
        );
        self.read_one(&sql, from_row).await
    }

    async fn all(&self) -> Result<Vec<SealedInstallation>, StoreError> {
        let sql = Sql::new(format!(
            "SELECT {COLUMNS} FROM slack_installations ORDER BY installed_at, id"
        ));
        self.read_all(&sql, from_row).await
    }

    async fn delete(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
    ) -> Result<bool, StoreError> {
        let sql = Sql::with(
            format!("DELETE FROM slack_installations WHERE {OWNER}"),
            owner_args(enterprise_id, team_id),
        );
        Ok(self.write_one(&sql).await? > 0)
    }

    async fn clear_user_token(
        &self,
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
        user_id: &str,
    ) -> Result<bool, StoreError> {
        let mut args = owner_args(enterprise_id, team_id);
        args.push(user_id.into());
        let sql = Sql::with(
            format!(
                "UPDATE slack_installations SET user_token_encrypted = NULL, \
                 user_refresh_token_encrypted = NULL, user_token_expires_at = NULL \
                 WHERE {OWNER} AND user_id = $3"
            ),
            args,
        );
        Ok(self.write_one(&sql).await? > 0)
    }

    async fn issue_state(
        &self,
        state: &str,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let sql = Sql::with(
            "INSERT INTO oauth_states (state, created_at, expires_at, consumed) \
             VALUES ($1, $2, $3, FALSE)",
            vec![
                state.into(),
                micros(created_at).into(),
                micros(expires_at).into(),
            ],
        );
        self.write_one(&sql).await.map(|_| ())
    }

    async fn consume_state(
        &self,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<StateCheck, StoreError> {
        self.consume_state_in_tx(state, now).await
    }

    async fn cleanup_states(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let sql = Sql::with(
            "DELETE FROM oauth_states WHERE expires_at <= $1",
            vec![micros(now).into()],
        );
        self.write_one(&sql).await
    }

    async fn remember_team_enterprise(
        &self,
        team_id: &str,
        enterprise_id: &str,
    ) -> Result<(), StoreError> {
        let sql = Sql::with(
            "INSERT INTO slack_team_enterprises (team_id, enterprise_id, updated_at) \
             VALUES ($1, $2, $3) ON CONFLICT (team_id) DO UPDATE SET \
             enterprise_id = excluded.enterprise_id, updated_at = excluded.updated_at",
            vec![
                team_id.into(),
                enterprise_id.into(),
                micros(Utc::now()).into(),
            ],
        );
        self.write_one(&sql).await.map(|_| ())
    }

    async fn team_enterprise(&self, team_id: &str) -> Result<Option<String>, StoreError> {
        let sql = Sql::with(
            "SELECT enterprise_id FROM slack_team_enterprises WHERE team_id = $1",
            vec![team_id.into()],
        );
        let row = self
            .db
            .fetch_optional(&sql)
            .await
            .map_err(failed("read workspace organisation"))?;
        row.map(|r| r.string("enterprise_id")).transpose()
    }

    async fn bind_state(&self, state: &str, team: &str) -> Result<(), StoreError> {
        let sql = Sql::with(
            "UPDATE oauth_states SET bound_team = $2 WHERE state = $1",
            vec![state.into(), team.into()],
        );
        match self.write_one(&sql).await? {
            0 => Err(StoreError::NotFound("OAuth state".into())),
            _ => Ok(()),
        }
    }

    async fn state_binding(&self, state: &str) -> Result<Option<String>, StoreError> {
        let sql = Sql::with(
            "SELECT bound_team FROM oauth_states WHERE state = $1",
            vec![state.into()],
        );
        let row = self
            .db
            .fetch_optional(&sql)
            .await
            .map_err(failed("read OAuth state"))?;
        Ok(row
            .map(|r| r.opt_string("bound_team"))
            .transpose()?
            .flatten())
    }
}
