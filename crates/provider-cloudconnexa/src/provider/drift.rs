//! Reconciliation (the cleanup binary calls these): the group's members as they are, compared
//! with the live grants, and the two repairs.

use access_core::ports::{LiveAccess, ProviderError, ProviderEvent};
use access_core::{Email, Resource};
use serde_json::json;
use tokio::time::Instant;

use super::{CloudConnexaProvider, group_event};
use crate::models::UserGroup;

impl CloudConnexaProvider {
    /// Members of the resource's group as they are now, read fresh.
    pub(super) async fn members(
        &self,
        resource: &Resource,
    ) -> Result<(String, Option<UserGroup>, Vec<LiveAccess>), ProviderError> {
        let settings = self.settings(resource)?;
        let name = settings.group_name(&self.mapping);
        let Some((group, _)) = self.find_group(&name, false).await? else {
            return Ok((name, None, Vec::new()));
        };
        let started = Instant::now();
        let users = self.client.users().await.map_err(ProviderError::from)?;
        self.reindex_users(&users, started);
        let live = users
            .iter()
            .filter(|u| u.in_group(&group.id))
            .map(|u| LiveAccess {
                holder: u.email.as_deref().unwrap_or_default().trim().to_ascii_lowercase(),
                details: json!({
                    "user_id": u.id, "group_id": group.id, "group_name": group.name, "network": settings.network,
                    "primary": u.group_id.as_deref() == Some(group.id.as_str()),
                }),
            })
            .collect();
        Ok((name, Some(group), live))
    }

    /// Compares the group's members with the holders of active grants (e-mails).
    pub async fn drift(
        &self,
        resource: &Resource,
        active_holders: &[String],
    ) -> Result<crate::Drift, ProviderError> {
        let settings = self.settings(resource)?;
        let (group_name, _, observed) = self.members(resource).await?;
        Ok(crate::reconcile::compute_drift(
            resource.id.clone(),
            group_name,
            active_holders,
            &observed,
            &settings.unmanaged_members,
        ))
    }

    /// Removes a membership nobody holds a grant for (one of [`crate::Drift::stray`]).
    pub async fn remove_stray(
        &self,
        resource: &Resource,
        stray: &LiveAccess,
    ) -> Result<Vec<ProviderEvent>, ProviderError> {
        let settings = self.settings(resource)?;
        let group_name = settings.group_name(&self.mapping);
        if settings
            .unmanaged_members
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&stray.holder))
        {
            return Ok(Vec::new());
        }
        let Some((group, _)) = self.find_group(&group_name, false).await? else {
            return Ok(Vec::new());
        };
        let _person = self
            .person_locks
            .lock(&stray.holder.to_ascii_lowercase())
            .await;
        let Some(user) = self.current_user(&stray.holder).await? else {
            return Ok(Vec::new());
        };
        if !user.in_secondary_group(&group.id) {
            return Ok(Vec::new());
        }
        let mut update = user.to_update();
        update.secondary_group_ids.retain(|g| g != &group.id);
        match self.client.update_user(&user.id, &update).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
        tracing::warn!(user_id = %user.id, group = %group.name, "removed stray Cloud Connexa membership");
        Ok(vec![ProviderEvent {
            name: "user_removed_from_group".into(),
            details: json!({"email": stray.holder, "user_id": user.id, "group_id": group.id,
                            "group_name": group.name, "network": settings.network, "reason": "drift_repair"}),
        }])
    }

    /// Puts back the membership of an active grant's holder that went missing (one of
    /// [`crate::Drift::missing`]). Never creates users: a deleted user is reported as an error.
    pub async fn restore_missing(
        &self,
        resource: &Resource,
        holder_email: &str,
    ) -> Result<Vec<ProviderEvent>, ProviderError> {
        let settings = self.settings(resource)?;
        let email =
            Email::parse(holder_email).map_err(|e| ProviderError::permanent(e.to_string()))?;
        let group_name = settings.group_name(&self.mapping);
        let (group, group_created) =
            self.find_group(&group_name, true).await?.ok_or_else(|| {
                ProviderError::transient(format!("group {group_name} could not be resolved"))
            })?;
        let _person = self.person_locks.lock(email.as_str()).await;
        let Some(user) = self.current_user(email.as_str()).await? else {
            return Err(ProviderError::permanent(format!(
                "cannot restore access of {email} to {}: the Cloud Connexa user no longer exists",
                settings.network
            )));
        };
        let mut events = Vec::new();
        if group_created {
            events.push(group_event(&group, &settings.network));
        }
        if user.in_group(&group.id) {
            return Ok(events);
        }
        let u = self.add_to_group(&user, &group.id).await?;
        events.push(ProviderEvent {
            name: "user_added_to_group".into(),
            details: json!({"email": email.as_str(), "user_id": u.id, "group_id": group.id,
                            "group_name": group.name, "network": settings.network, "reason": "drift_repair"}),
        });
        Ok(events)
    }
}
