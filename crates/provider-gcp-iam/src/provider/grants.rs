//! The grant flows: a service account with a key (and a re-issued key for a live grant), a
//! binding on the person's own account, and dry runs.

use super::*;

impl GcpIamProvider {
    pub(super) async fn grant_service_account(
        &self,
        req: &GrantRequest,
        s: &GcpIamSettings,
        p: &Plan<'_>,
    ) -> Result<GrantOutcome, ProviderError> {
        let Plan {
            email,
            now,
            expires_at,
            justification,
            granted_at,
        } = *p;
        let project = s.project.as_str();
        let local = email.split('@').next().unwrap_or(email);
        // The id recorded in the grant's intent, so every attempt of one grant names the same
        // account; a fresh id only without one (a re-request whose account vanished).
        let intended = req
            .recorded_intent::<GcpGrantIntent>()?
            .filter(|i| i.project == project && i.grant_id == req.grant_id)
            .and_then(|i| i.account_id);
        let (account_id, reversible) = match intended {
            Some(id) => {
                let reversible = naming::is_gatehouse_account_id(&id) && !id.contains("-x-");
                (id, reversible)
            }
            None => naming::account_id(local, now.timestamp()),
        };
        let marker = grant_marker(req.grant_id);
        let description = truncate_bytes(
            &format!(
                "{DESCRIPTION_MARKER} for {email} until {} {marker}. Justification: {justification}",
                rfc3339(expires_at)
            ),
            256,
        );
        let display = truncate_bytes(email, 100);
        let mut events = Vec::new();
        let (sa, adopted) = self
            .create_or_adopt_account(project, &account_id, &display, &description, &marker)
            .await?;
        tracing::info!(service_account = %sa.email, user = %email, reversible, "Created service account");
        events.push(event(
            "service_account_created",
            json!({"service_account_email": sa.email, "project_id": project, "user_email": email, "reversible_name": reversible}),
        ));

        let (key, key_id) = self
            .issue_key(project, &sa.email, adopted, &mut events)
            .await?;

        let member = format!("serviceAccount:{}", sa.email);
        let cond = condition::temp_access(expires_at, justification);
        if let Err(e) = self.bind(project, &s.role, &member, cond).await {
            let rb = self.rollback(project, &sa.email).await.unwrap_or_default();
            tracing::error!(service_account = %sa.email, error = %e, "Failed to grant GCP IAM access");
            return Err(with_note(
                e.into_provider("Failed to grant GCP IAM access"),
                &rb,
            ));
        }
        tracing::info!(service_account = %sa.email, user = %email, role = %s.role, expires_at = %rfc3339(expires_at),
            "Granted GCP IAM access to service account");
        events.push(event(
            "iam_binding_added",
            json!({"member": member, "role": s.role, "project_id": project, "expires_at": rfc3339(expires_at),
                   "condition_title": TITLE, "justification": justification, "service_account_email": sa.email,
                   "user_email": email}),
        ));

        let handle = GcpGrantHandle {
            mode: AccessMode::ServiceAccountKey,
            project: project.into(),
            role: s.role.clone(),
            member,
            user_email: email.into(),
            service_account_email: Some(sa.email.clone()),
            granted_at,
            expires_at,
            justification: justification.into(),
            key_id: Some(key_id),
            dry_run: false,
            condition_title: TITLE.into(),
        };
        let instructions = self.message(req, s, &handle, now);
        Ok(GrantOutcome {
            handle: serde_json::to_value(&handle).unwrap_or_default(),
            instructions,
            secret: Some(self.secret(key.key_file, email, &sa.email, project, expires_at)),
            events,
            expires_at: Some(expires_at),
        })
    }

    /// Creates the grant's service account, or adopts the one an earlier attempt of this very
    /// grant created (its description carries the grant's marker); `true` when adopted.
    async fn create_or_adopt_account(
        &self,
        project: &str,
        account_id: &str,
        display: &str,
        description: &str,
        marker: &str,
    ) -> Result<(ServiceAccount, bool), ProviderError> {
        let sa = match self
            .client
            .create_service_account(project, account_id, display, description)
            .await
        {
            Ok(sa) => sa,
            Err(GcpError::AlreadyExists(_)) => {
                // A retried grant: adopt the account only if an earlier attempt of this very
                // grant created it (its description carries the grant id).
                let existing = naming::service_account_email(account_id, project);
                match self.client.get_service_account(project, &existing).await {
                    Ok(sa)
                        if sa.display_name == display
                            && sa.description.starts_with(DESCRIPTION_MARKER)
                            && sa.description.contains(marker) =>
                    {
                        return Ok((sa, true));
                    }
                    _ => {
                        return Err(ProviderError::transient(format!(
                            "Failed to create service account: {account_id} already exists in project {project}"
                        )));
                    }
                }
            }
            Err(e) if e.is_quota() => {
                tracing::error!(project, error = %e, "Failed to create service account: quota");
                return Err(ProviderError::permanent(format!(
                    "Failed to create service account: project \"{project}\" has reached its service-account quota (100 by default, system accounts included). \
                     Expired grants are removed by the hourly sweep; ask an administrator if this persists."
                )));
            }
            Err(e) => {
                tracing::error!(project, error = %e, "Failed to create service account");
                return Err(e.into_provider("Failed to create service account"));
            }
        };
        Ok((sa, false))
    }

    /// A key for the account (rolled back with the account if that fails), and, for an adopted
    /// account, the earlier attempt's undelivered key deleted.
    async fn issue_key(
        &self,
        project: &str,
        sa_email: &str,
        adopted: bool,
        events: &mut Vec<ProviderEvent>,
    ) -> Result<(CreatedKey, String), ProviderError> {
        let key = match self.create_key_with_backoff(project, sa_email).await {
            Ok(k) => k,
            Err(e) => {
                let rb = self.rollback(project, sa_email).await.unwrap_or_default();
                tracing::error!(service_account = %sa_email, error = %e, "Failed to generate service account key");
                return Err(match e {
                    GcpError::FailedPrecondition { .. } => {
                        Self::key_creation_forbidden(project, &e)
                    }
                    e => with_note(
                        e.into_provider("Failed to generate service account key"),
                        &rb,
                    ),
                });
            }
        };
        let key_id = key.name.rsplit('/').next().unwrap_or_default().to_string();
        tracing::info!(service_account = %sa_email, key_id, "Created key for service account");
        events.push(event(
            "service_account_key_created",
            json!({"service_account_email": sa_email, "key_id": key_id}),
        ));
        if adopted {
            // The earlier attempt's key was never handed out (its answer was lost): delete it, so
            // the account holds only the key this grant delivers.
            let deleted = self.prune_keys(project, sa_email, 1, Some(&key_id)).await;
            if !deleted.is_empty() {
                events.push(event(
                    "service_account_keys_deleted",
                    json!({"service_account_email": sa_email, "key_ids": deleted, "reason": "retried grant"}),
                ));
            }
        }
        Ok((key, key_id))
    }

    /// Re-request while active: a new key for the same account, the expiry unchanged, keys
    /// beyond the newest `keep_keys` deleted.
    pub(super) async fn regenerate_key(
        &self,
        req: &GrantRequest,
        s: &GcpIamSettings,
        mut h: GcpGrantHandle,
        now: DateTime<Utc>,
    ) -> Result<Option<GrantOutcome>, ProviderError> {
        let project = h.project.clone();
        let Some(sa) = h.service_account_email.clone() else {
            return Ok(None);
        };
        tracing::info!(user = %h.user_email, service_account = %sa, "user already has active access, regenerating key");
        let mut events = Vec::new();
        let key = match self.create_key_with_backoff(&project, &sa).await {
            Ok(k) => k,
            // The account is gone (deleted by hand, or by the sweep): start over, same expiry.
            Err(e) if e.is_not_found() => return Ok(None),
            // At the 10-keys limit: make room and try once more.
            Err(GcpError::FailedPrecondition { constraints, .. }) if constraints.is_empty() => {
                let deleted = self
                    .prune_keys(&project, &sa, self.config.keep_keys.saturating_sub(1), None)
                    .await;
                events.push(event(
                    "service_account_keys_deleted",
                    json!({"service_account_email": sa, "key_ids": deleted}),
                ));
                match self.client.create_key(&project, &sa).await {
                    Ok(k) => k,
                    Err(e @ GcpError::FailedPrecondition { .. }) => {
                        return Err(Self::key_creation_forbidden(&project, &e));
                    }
                    Err(e) => return Err(e.into_provider("Failed to generate service account key")),
                }
            }
            Err(e @ GcpError::FailedPrecondition { .. }) => {
                return Err(Self::key_creation_forbidden(&project, &e));
            }
            Err(e) => return Err(e.into_provider("Failed to generate service account key")),
        };
        let key_id = key.name.rsplit('/').next().unwrap_or_default().to_string();
        tracing::info!(service_account = %sa, key_id, "Created key for service account");
        events.push(event(
            "service_account_key_created",
            json!({"service_account_email": sa, "key_id": key_id, "regenerated": true}),
        ));
        let deleted = self
            .prune_keys(&project, &sa, self.config.keep_keys, Some(&key_id))
            .await;
        if !deleted.is_empty() {
            events.push(event(
                "service_account_keys_deleted",
                json!({"service_account_email": sa, "key_ids": deleted}),
            ));
        }
        // Self-heal a binding someone removed, with the original expiry (a no-op otherwise).
        let cond = condition::temp_access(h.expires_at, &h.justification);
        match self.bind(&project, &h.role, &h.member, cond).await {
            Ok(true) => events.push(event(
                "iam_binding_restored",
                json!({"member": h.member, "role": h.role, "project_id": project, "expires_at": rfc3339(h.expires_at)}),
            )),
            Ok(false) => {}
            Err(e) => return Err(e.into_provider("Failed to grant GCP IAM access")),
        }
        h.key_id = Some(key_id);
        let instructions = self.message(req, s, &h, now);
        let secret = self.secret(key.key_file, &h.user_email, &sa, &project, h.expires_at);
        Ok(Some(GrantOutcome {
            expires_at: Some(h.expires_at),
            handle: serde_json::to_value(&h).unwrap_or_default(),
            instructions,
            secret: Some(secret),
            events,
        }))
    }

    /// Deletes user-managed keys beyond the newest `keep` (always keeping `keep_id`). Returns the
    /// ids deleted; failures are logged, not fatal (the account's deletion removes them anyway).
    pub(super) async fn prune_keys(
        &self,
        project: &str,
        sa: &str,
        keep: usize,
        keep_id: Option<&str>,
    ) -> Vec<String> {
        let mut keys = match self.client.list_user_keys(project, sa).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(service_account = %sa, error = %e, "could not list keys to prune");
                return vec![];
            }
        };
        let ts = |k: &crate::api::KeyInfo| {
            k.valid_after_time
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        };
        // Newest first; the key just handed out counts as the newest whatever the clocks say.
        keys.sort_by(|a, b| {
            let a_new = Some(a.id()) == keep_id;
            let b_new = Some(b.id()) == keep_id;
            b_new.cmp(&a_new).then_with(|| ts(b).cmp(&ts(a)))
        });
        let mut deleted = Vec::new();
        for k in keys.iter().skip(keep) {
            match self.client.delete_key(project, sa, k.id()).await {
                Ok(()) => deleted.push(k.id().to_string()),
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(service_account = %sa, key_id = k.id(), error = %e, "could not delete old key")
                }
            }
        }
        deleted
    }

    pub(super) async fn grant_user(
        &self,
        req: &GrantRequest,
        s: &GcpIamSettings,
        p: &Plan<'_>,
    ) -> Result<GrantOutcome, ProviderError> {
        let Plan {
            email,
            now,
            expires_at,
            justification,
            granted_at,
        } = *p;
        let member = format!("user:{email}");
        let changed = self
            .bind(
                &s.project,
                &s.role,
                &member,
                condition::temp_access(expires_at, justification),
            )
            .await
            .map_err(|e| e.into_provider("Failed to grant GCP IAM access"))?;
        tracing::info!(user = %email, role = %s.role, project = %s.project, expires_at = %rfc3339(expires_at), changed, "Granted GCP IAM access to user");
        let handle = GcpGrantHandle {
            mode: AccessMode::UserBinding,
            project: s.project.clone(),
            role: s.role.clone(),
            member: member.clone(),
            user_email: email.into(),
            service_account_email: None,
            granted_at,
            expires_at,
            justification: justification.into(),
            key_id: None,
            dry_run: false,
            condition_title: TITLE.into(),
        };
        let events = if changed {
            vec![event(
                "iam_binding_added",
                json!({"member": member, "role": s.role, "project_id": s.project, "expires_at": rfc3339(expires_at),
                       "condition_title": TITLE, "justification": justification, "user_email": email}),
            )]
        } else {
            vec![]
        };
        Ok(GrantOutcome {
            instructions: self.message(req, s, &handle, now),
            handle: serde_json::to_value(&handle).unwrap_or_default(),
            secret: None,
            events,
            expires_at: Some(expires_at),
        })
    }

    pub(super) fn grant_dry_run(
        &self,
        req: &GrantRequest,
        s: &GcpIamSettings,
        p: &Plan<'_>,
    ) -> GrantOutcome {
        let Plan {
            email,
            now,
            expires_at,
            justification,
            granted_at,
        } = *p;
        let project = s.project.as_str();
        let cond = condition::temp_access(expires_at, justification);
        let (member, sa) = match s.mode {
            AccessMode::ServiceAccountKey => {
                let sa = naming::dry_run_service_account_email(email, project);
                let (id, _) =
                    naming::account_id(email.split('@').next().unwrap_or(email), now.timestamp());
                tracing::info!(project, account_id = %id, user = %email, "DRY-RUN: Would create service account {sa}");
                tracing::info!(
                    project,
                    "DRY-RUN: Would create a key for service account {sa}"
                );
                (format!("serviceAccount:{sa}"), Some(sa))
            }
            AccessMode::UserBinding => (format!("user:{email}"), None),
        };
        tracing::info!(project, role = %s.role, expression = %cond.expression,
            "DRY-RUN: Would grant GCP IAM access to user {email} as {member} until {}", rfc3339(expires_at));
        let handle = GcpGrantHandle {
            mode: s.mode,
            project: project.into(),
            role: s.role.clone(),
            member: member.clone(),
            user_email: email.into(),
            service_account_email: sa.clone(),
            granted_at,
            expires_at,
            justification: justification.into(),
            key_id: None,
            dry_run: true,
            condition_title: TITLE.into(),
        };
        GrantOutcome {
            instructions: self.message(req, s, &handle, now),
            secret: sa.as_ref().map(|sa| {
                self.secret(
                    DRY_RUN_KEY.as_bytes().to_vec(),
                    email,
                    sa,
                    project,
                    expires_at,
                )
            }),
            events: vec![event(
                "dry_run_grant",
                json!({"member": member, "role": s.role, "project_id": project, "expires_at": rfc3339(expires_at),
                       "service_account_email": sa, "user_email": email, "justification": justification}),
            )],
            handle: serde_json::to_value(&handle).unwrap_or_default(),
            expires_at: Some(expires_at),
        }
    }
}
