//! What the admin group (`[server] admins`) may do from chat (`/access admin …`, issue 17):
//! list live grants and pending requests of their workspace, revoke someone's grant, read
//! someone's recent audit events. See `docs/admin-commands.md`.
//!
//! The engine, not the chat adapter, decides who is an admin: every operation here checks it
//! first, and a refusal is audited (`admin_command_refused`) and changes nothing else.

use crate::audit::{AuditEvent, AuditKind, AuditRecord};
use crate::grant::{Grant, GrantStatus};
use crate::ports::{DirectoryError, PageQuery};
use crate::request::{AccessRequest, Actor, RequestStatus};
use crate::subject::SubjectKey;

use super::{Engine, EngineError};

/// Why an admin command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The actor is not in the admin group.
    #[error(
        "Only Gatehouse admins can use `admin` commands, and you are not one. Nothing was changed. \
         (Admins are listed in the server configuration: `[server] admins`.)"
    )]
    NotAdmin,
    /// The directory could not tell whether the actor is in an admin group.
    #[error(
        "Gatehouse could not check whether you are an admin (the directory is unavailable). Nothing was changed; please try again."
    )]
    DirectoryUnavailable,
}

/// At most this many rows are read for one admin listing (the page size of the store's pages).
pub const ADMIN_LIST_READ: u32 = 500;

impl Engine {
    /// Whether `actor` is in the admin group: an admin API caller always is; a chat user when
    /// their user id is listed, or they are in a listed Slack user group or directory group.
    /// A directory that cannot answer counts as "no" here (see [`Self::require_admin`]).
    pub async fn is_admin(&self, actor: &Actor) -> bool {
        self.admin_membership(actor).await.unwrap_or(false)
    }

    /// Whether `actor` is in the admin group (`[server] admins`); the directory's error when it
    /// could not tell.
    async fn admin_membership(&self, actor: &Actor) -> Result<bool, DirectoryError> {
        match actor {
            Actor::Admin { .. } => Ok(true),
            Actor::System => Ok(false),
            Actor::User { .. } => {
                crate::policy::in_set(&self.settings.admins, actor, self.directory.as_ref()).await
            }
        }
    }

    /// Refuses `actor` unless they are an admin. A refusal is audited (kind
    /// `admin_command_refused`, with `command`): trying to use admin powers is worth knowing
    /// about even though nothing changed.
    pub async fn require_admin(&self, actor: &Actor, command: &str) -> Result<(), EngineError> {
        let refusal = match self.admin_membership(actor).await {
            Ok(true) => return Ok(()),
            Ok(false) => AdminError::NotAdmin,
            Err(e) => {
                tracing::warn!(error = %e, "admin check: directory unavailable");
                AdminError::DirectoryUnavailable
            }
        };
        let mut record =
            AuditRecord::new(AuditKind::AdminCommandRefused, actor.clone(), self.now()).details(
                serde_json::json!({
                    "command": command.chars().take(40).collect::<String>(),
                    "reason": match refusal {
                        AdminError::NotAdmin => "not_admin",
                        AdminError::DirectoryUnavailable => "directory_unavailable",
                    },
                }),
            );
        if let Actor::User {
            team_id, user_id, ..
        } = actor
        {
            record = record.subject(team_id, user_id);
        }
        if let Err(e) = self.record(vec![record]).await {
            // The refusal stands whether or not it could be written down.
            tracing::warn!(error = %e, "could not audit a refused admin command");
        }
        Err(refusal.into())
    }

    /// `admin grants [resource]`: the live grants of the people of `team_id` (the admin's
    /// workspace, or organisation on an org-wide install), newest first, at most
    /// [`ADMIN_LIST_READ`]. An unknown resource is refused with the list of valid ones.
    pub async fn admin_live_grants(
        &self,
        admin: &Actor,
        team_id: &str,
        resource: Option<&str>,
    ) -> Result<Vec<Grant>, EngineError> {
        self.require_admin(admin, "grants").await?;
        let resource = match resource {
            Some(r) => Some(self.resource(r)?.id.clone()),
            None => None,
        };
        let q: PageQuery<GrantStatus> = PageQuery {
            live_only: true,
            resource,
            team_id: Some(team_id.to_string()),
            limit: ADMIN_LIST_READ,
            ..Default::default()
        };
        Ok(self.store.grants_page(&q).await?)
    }

    /// `admin pending`: the pending requests of the people of `team_id`, newest first, at most
    /// [`ADMIN_LIST_READ`].
    pub async fn admin_pending(
        &self,
        admin: &Actor,
        team_id: &str,
    ) -> Result<Vec<AccessRequest>, EngineError> {
        self.require_admin(admin, "pending").await?;
        let q: PageQuery<RequestStatus> = PageQuery {
            status: Some(RequestStatus::Pending),
            team_id: Some(team_id.to_string()),
            limit: ADMIN_LIST_READ,
            ..Default::default()
        };
        Ok(self.store.requests_page(&q).await?)
    }

    /// `admin revoke @user <resource>`: revokes that person's live grant through the ordinary
    /// revocation (audited with the admin as actor; the person is told who revoked it).
    pub async fn admin_revoke(
        &self,
        admin: &Actor,
        subject: &SubjectKey,
        resource: &str,
    ) -> Result<Grant, EngineError> {
        self.require_admin(admin, "revoke").await?;
        self.revoke_resource(subject, resource, admin.clone()).await
    }

    /// `admin audit @user`: the newest `limit` audit events about that person or done by them,
    /// newest first.
    pub async fn admin_audit(
        &self,
        admin: &Actor,
        subject: &SubjectKey,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, EngineError> {
        self.require_admin(admin, "audit").await?;
        let person = subject.actor("");
        Ok(self
            .store
            .recent_audit_events(&subject.to_string(), &person.id(), limit.clamp(1, 100))
            .await?)
    }
}
