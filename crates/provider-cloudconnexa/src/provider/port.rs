//! The [`Provider`] port on Cloud Connexa: grant, intent, revoke, observe, availability.

use access_core::ports::{
    GrantOutcome, GrantRequest, LiveAccess, Provider, ProviderError, ProviderEvent, ProviderKind,
    RevokeOutcome, RevokeRequest,
};
use access_core::{Email, Resource, Subject};
use async_trait::async_trait;
use serde_json::json;

use super::{CloudConnexaProvider, EnsureError, Membership, group_event};
use crate::handle::{GrantHandle, GrantIntent};
use crate::models::{Role, UserGroup};

/// The person's membership of the resource's group, as [`CloudConnexaProvider::join_group`]
/// left it.
struct Joined {
    group: UserGroup,
    membership: Membership,
    /// This grant created the group.
    group_created: bool,
    events: Vec<ProviderEvent>,
}

#[async_trait]
impl Provider for CloudConnexaProvider {
    fn kind(&self) -> ProviderKind {
        Self::KIND
    }

    async fn grant(&self, req: &GrantRequest) -> Result<GrantOutcome, ProviderError> {
        let settings = self.settings(&req.resource)?;
        let email = Self::require_email(&req.subject)?;
        let group_name = settings.group_name(&self.mapping);
        let role = settings.role()?.unwrap_or(self.default_role);

        let _person = self.person_locks.lock(email.as_str()).await;
        // A grant being extended: same person and group → check and keep its handle. A handle
        // for another group (the resource's group was reconfigured) or another e-mail is undone
        // once the new membership is in place.
        let mut previous = None;
        if let Some(h) = req.existing_handle::<GrantHandle>()? {
            if h.email.eq_ignore_ascii_case(email.as_str()) && h.group_name == group_name {
                if let Some(outcome) = self.regrant(req, h, &settings).await? {
                    return Ok(outcome);
                }
            } else {
                previous = Some(h);
            }
        }

        // Nothing checks the network before this point (the engine never calls `validate`), so a
        // resource naming a network Cloud Connexa does not have would otherwise get a group and
        // a membership that lead nowhere while the person is told access is ready. The list is
        // cached, so this costs one read per TTL.
        if !self.network_exists(&settings.network).await? {
            return Err(ProviderError::permanent(format!(
                "Network '{}' does not exist. Use `/vpn-access list` to see available networks.",
                settings.network
            )));
        }

        let joined = self
            .join_group(req, email, &group_name, role, &settings.network)
            .await?;
        let (group, m) = (&joined.group, &joined.membership);
        let mut events = joined.events.clone();
        if m.user_created {
            events.push(ProviderEvent {
                name: "user_created".into(),
                details: json!({"email": email.as_str(), "user_id": m.user.id, "username": m.user.username,
                                "role": role.as_str()}),
            });
        }
        if m.added {
            events.push(ProviderEvent {
                name: "user_added_to_group".into(),
                details: json!({"email": email.as_str(), "user_id": m.user.id, "group_id": group.id,
                                "group_name": group.name, "network": settings.network}),
            });
        }
        tracing::info!(
            grant = %req.grant_id, user_id = %m.user.id, group = %group.name,
            added = m.added, was_present = m.was_present, shared = m.shared, "Cloud Connexa access granted"
        );
        if let Some(prev) = previous.filter(|p| p.group_id != group.id || p.user_id != m.user.id) {
            events.extend(self.leave_previous(&prev, req).await);
        }
        let handle = GrantHandle {
            v: GrantHandle::VERSION,
            user_id: m.user.id.clone(),
            email: email.to_string(),
            group_id: group.id.clone(),
            group_name: group.name.clone(),
            network: settings.network.clone(),
            user_created: m.user_created,
            group_created: joined.group_created,
            group_was_present: m.was_present,
            shared: m.shared,
        };
        Ok(GrantOutcome {
            instructions: Self::instructions(&settings, &group.name, email, m, req),
            handle: handle.to_value(),
            secret: None,
            events,
            expires_at: None,
        })
    }

    async fn intent(&self, req: &GrantRequest) -> Result<serde_json::Value, ProviderError> {
        let settings = self.settings(&req.resource)?;
        let email = Self::require_email(&req.subject)?;
        let group_name = settings.group_name(&self.mapping);
        let _person = self.person_locks.lock(email.as_str()).await;
        let user = self.current_user(email.as_str()).await?;
        let group = self.find_group(&group_name, false).await?;
        let member_before = match (&user, &group) {
            (Some(u), Some((g, _))) => u.in_group(&g.id),
            _ => false,
        };
        Ok(GrantIntent {
            v: GrantIntent::VERSION,
            grant_id: req.grant_id,
            email: email.to_string(),
            group_name,
            network: settings.network.clone(),
            user_existed: user.is_some(),
            member_before,
        }
        .to_value())
    }

    async fn revoke(&self, req: &RevokeRequest) -> Result<RevokeOutcome, ProviderError> {
        // Ahead of grants for the credential's rate-limit tokens (see `ratelimit::urgent`).
        crate::ratelimit::urgent(async {
            let Some(h) = req.handle_for_revoke::<GrantHandle>() else {
                return self.revoke_by_intent(req).await;
            };
            let _person = self.person_locks.lock(&h.email.to_ascii_lowercase()).await;
            self.remove_membership(&h, &req.subject, req.grant_id).await
        })
        .await
    }

    async fn observe(&self, resource: &Resource) -> Result<Vec<LiveAccess>, ProviderError> {
        Ok(self.members(resource).await?.2)
    }

    async fn unavailable_reason(
        &self,
        resource: &Resource,
    ) -> Result<Option<String>, ProviderError> {
        let settings = self.settings(resource)?;
        if self.network_exists(&settings.network).await? {
            Ok(None)
        } else {
            // The Cloud Connexa document's words.
            Ok(Some(format!(
                "Network '{}' does not exist. Use `/vpn-access list` to see available networks.",
                settings.network
            )))
        }
    }

    async fn validate(&self, resource: &Resource) -> Result<(), ProviderError> {
        let settings = self.settings(resource)?;
        if self.network_exists(&settings.network).await? {
            Ok(())
        } else {
            Err(ProviderError::permanent(format!(
                "resource '{}': Cloud Connexa network '{}' does not exist",
                resource.id, settings.network
            )))
        }
    }
}

impl CloudConnexaProvider {
    /// Resolves (or creates) the group and makes the person a member, resolving both again once
    /// if Cloud Connexa says the cached ones went stale.
    async fn join_group(
        &self,
        req: &GrantRequest,
        email: &Email,
        group_name: &str,
        role: Role,
        network: &str,
    ) -> Result<Joined, ProviderError> {
        let intent = req
            .recorded_intent::<GrantIntent>()?
            .filter(|i| i.covers(email.as_str(), group_name));
        let mut events = Vec::new();
        let mut group_created = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (group, created) = self.find_group(group_name, true).await?.ok_or_else(|| {
                ProviderError::transient(format!("group {group_name} could not be resolved"))
            })?;
            if created {
                group_created = true;
                events.push(group_event(&group, network));
            }
            let ensured = self
                .ensure_member(
                    email,
                    &req.subject,
                    &group,
                    role,
                    req.grant_id,
                    intent.as_ref(),
                )
                .await;
            match ensured {
                Ok(membership) => {
                    return Ok(Joined {
                        group,
                        membership,
                        group_created,
                        events,
                    });
                }
                // The cached group may have been deleted in the portal (or the user between GET
                // and PUT): resolve both again, once.
                Err(EnsureError::Stale(e)) if attempt == 1 => {
                    tracing::warn!(group = %group_name, error = %e, "Cloud Connexa refused the change; resolving user and group again");
                    self.forget_groups();
                    self.forget_user(email.as_str());
                }
                Err(EnsureError::Stale(e)) => return Err(e.into()),
                Err(EnsureError::Other(e)) => return Err(e),
            }
        }
    }

    /// Undoes the membership of a handle the resource no longer describes (its group was
    /// reconfigured), once the new one is in place. Not worth failing the grant over: drift
    /// repair removes it later.
    async fn leave_previous(&self, prev: &GrantHandle, req: &GrantRequest) -> Vec<ProviderEvent> {
        match self
            .remove_membership(prev, &req.subject, req.grant_id)
            .await
        {
            Ok(out) => out.events,
            Err(e) => {
                tracing::warn!(error = %e, group = %prev.group_name, "could not remove the previous membership");
                Vec::new()
            }
        }
    }

    /// Revoke for a grant whose call never answered (no handle): removes the membership its
    /// recorded intent names, unless the person was a member before the grant.
    async fn revoke_by_intent(&self, req: &RevokeRequest) -> Result<RevokeOutcome, ProviderError> {
        let Some(i) = req.intent_for_cleanup::<GrantIntent>() else {
            return Ok(RevokeOutcome {
                events: Vec::new(),
                note: Some(
                    "no Cloud Connexa grant handle or intent was recorded; nothing to remove"
                        .into(),
                ),
            });
        };
        if i.member_before {
            return Ok(RevokeOutcome {
                events: Vec::new(),
                note: Some(format!(
                    "{} was already in group {} before the grant; membership kept",
                    i.email, i.group_name
                )),
            });
        }
        let Some((group, _)) = self.find_group(&i.group_name, false).await? else {
            return Ok(RevokeOutcome {
                events: Vec::new(),
                note: Some(format!(
                    "group {} does not exist; nothing to remove",
                    i.group_name
                )),
            });
        };
        let _person = self.person_locks.lock(&i.email.to_ascii_lowercase()).await;
        let Some(user) = self.current_user(&i.email).await? else {
            return Ok(RevokeOutcome {
                events: Vec::new(),
                note: Some(format!(
                    "Cloud Connexa user {} does not exist; nothing to remove",
                    i.email
                )),
            });
        };
        let h = GrantHandle {
            v: GrantHandle::VERSION,
            user_id: user.id.clone(),
            email: i.email.clone(),
            group_id: group.id.clone(),
            group_name: group.name.clone(),
            network: i.network.clone(),
            user_created: !i.user_existed,
            group_created: false,
            group_was_present: false,
            shared: false,
        };
        self.remove_membership(&h, &req.subject, req.grant_id).await
    }

    /// Undoes what the grant behind `h` added. The caller holds the person's lock.
    async fn remove_membership(
        &self,
        h: &GrantHandle,
        subject: &Subject,
        grant_id: access_core::GrantId,
    ) -> Result<RevokeOutcome, ProviderError> {
        if h.group_was_present {
            return Ok(RevokeOutcome {
                events: Vec::new(),
                note: Some(format!(
                    "{} was already in group {} before the grant; membership kept",
                    h.email, h.group_name
                )),
            });
        }
        let user = match self.client.user(&h.user_id).await {
            Ok(u) => u,
            Err(e) if e.is_not_found() => {
                self.forget_user(&h.email);
                return Ok(RevokeOutcome {
                    events: Vec::new(),
                    note: Some(format!(
                        "Cloud Connexa user {} no longer exists; nothing to remove",
                        h.email
                    )),
                });
            }
            Err(e) => return Err(e.into()),
        };
        if !user.in_secondary_group(&h.group_id) {
            return Ok(RevokeOutcome {
                events: Vec::new(),
                note: Some(format!(
                    "{} is no longer in group {}; nothing to remove",
                    h.email, h.group_name
                )),
            });
        }
        let group = UserGroup {
            id: h.group_id.clone(),
            name: h.group_name.clone(),
            internet_access: None,
            max_device: None,
            connect_auth: None,
            all_regions_included: None,
            vpn_region_ids: Vec::new(),
            gateways_ids: Vec::new(),
        };
        if self
            .needed_elsewhere(subject, &user, &group, grant_id)
            .await?
        {
            return Ok(RevokeOutcome {
                events: Vec::new(),
                note: Some(format!(
                    "group {} kept: another live grant of {} still needs it",
                    h.group_name, h.email
                )),
            });
        }
        let mut update = user.to_update();
        update.secondary_group_ids.retain(|g| g != &h.group_id);
        match self.client.update_user(&user.id, &update).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {
                return Ok(RevokeOutcome {
                    events: Vec::new(),
                    note: Some(format!(
                        "Cloud Connexa user {} was deleted meanwhile; nothing to remove",
                        h.email
                    )),
                });
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(grant = %grant_id, user_id = %user.id, group = %h.group_name, "Cloud Connexa access revoked");
        Ok(RevokeOutcome {
            events: vec![ProviderEvent {
                name: "user_removed_from_group".into(),
                details: json!({"email": h.email, "user_id": user.id, "group_id": h.group_id,
                                "group_name": h.group_name, "network": h.network}),
            }],
            note: None,
        })
    }
}
