//! The [`Provider`] port on GCP IAM: grant, intent, revoke, observe, subject and settings checks.

use super::*;

#[async_trait]
impl Provider for GcpIamProvider {
    fn kind(&self) -> ProviderKind {
        Self::KIND
    }

    async fn grant(&self, req: &GrantRequest) -> Result<GrantOutcome, ProviderError> {
        let s = self.settings(&req.resource)?;
        let email = Self::email_of(req, &s)?;
        let now = self.clock.now().trunc_subsecs(0);
        // The condition works in whole seconds; the grant's stored expiry must match it.
        let expires_at = req.expires_at.trunc_subsecs(0);
        if expires_at <= now {
            return Err(ProviderError::permanent(
                "the requested expiry is already in the past",
            ));
        }
        let justification = req.justification.as_str();
        let existing: Option<GcpGrantHandle> =
            req.existing_handle::<GcpGrantHandle>()?.filter(|h| {
                h.project == s.project && h.role == s.role && h.mode == s.mode && h.expires_at > now
            });

        // A live grant being re-requested keeps its expiry and justification.
        let (exp, j, granted) = match &existing {
            Some(h) => (h.expires_at, h.justification.clone(), h.granted_at),
            None => (expires_at, justification.to_string(), now),
        };
        let plan = Plan {
            email: &email,
            now,
            expires_at: exp,
            justification: &j,
            granted_at: granted,
        };
        if self.dry_run(&s) {
            return Ok(self.grant_dry_run(req, &s, &plan));
        }
        match (s.mode, existing) {
            (AccessMode::ServiceAccountKey, Some(h)) if !h.dry_run => {
                let (role, old_member) = (h.role.clone(), h.member.clone());
                match self.regenerate_key(req, &s, h, now).await? {
                    Some(outcome) => Ok(outcome),
                    None => {
                        // The account is gone: its binding (now a `deleted:` member) goes too.
                        if let Err(e) = self
                            .writer
                            .apply(
                                &s.project,
                                PolicyEdit::Revoke {
                                    role,
                                    member: old_member,
                                },
                            )
                            .await
                        {
                            tracing::warn!(error = %e, "could not remove the vanished account's binding; the sweep will");
                        }
                        self.grant_service_account(req, &s, &plan).await
                    }
                }
            }
            (AccessMode::ServiceAccountKey, _) => {
                let fresh = Plan {
                    expires_at,
                    justification,
                    granted_at: now,
                    ..plan
                };
                self.grant_service_account(req, &s, &fresh).await
            }
            (AccessMode::UserBinding, Some(h)) if !h.dry_run => {
                self.grant_user(req, &s, &plan).await
            }
            (AccessMode::UserBinding, _) => {
                let fresh = Plan {
                    expires_at,
                    justification,
                    granted_at: now,
                    ..plan
                };
                self.grant_user(req, &s, &fresh).await
            }
        }
    }

    async fn intent(&self, req: &GrantRequest) -> Result<serde_json::Value, ProviderError> {
        let s = self.settings(&req.resource)?;
        let email = Self::email_of(req, &s)?;
        let now = self.clock.now().trunc_subsecs(0);
        let (account_id, sa, member) = match s.mode {
            AccessMode::ServiceAccountKey => {
                let local = email.split('@').next().unwrap_or(&email);
                let (id, _) = naming::account_id(local, now.timestamp());
                let sa = naming::service_account_email(&id, &s.project);
                let member = format!("serviceAccount:{sa}");
                (Some(id), Some(sa), member)
            }
            AccessMode::UserBinding => (None, None, format!("user:{email}")),
        };
        let intent = GcpGrantIntent {
            grant_id: req.grant_id,
            mode: s.mode,
            project: s.project.clone(),
            role: s.role.clone(),
            member,
            user_email: email,
            account_id,
            service_account_email: sa,
            dry_run: self.dry_run(&s),
        };
        Ok(serde_json::to_value(&intent).unwrap_or_default())
    }

    fn reissues_on_request(&self, resource: &Resource) -> bool {
        GcpIamSettings::of(resource).is_ok_and(|s| s.mode == AccessMode::ServiceAccountKey)
    }

    async fn revoke(&self, req: &RevokeRequest) -> Result<RevokeOutcome, ProviderError> {
        if let Some(h) = req.handle_for_revoke::<GcpGrantHandle>() {
            return self.revoke_handle(req, h).await;
        }
        {
            // The grant call never answered: remove what its intent names (or nothing). Never a
            // permanent error, which would keep the revocation retrying for ever.
            let Some(i) = req.intent_for_cleanup::<GcpGrantIntent>() else {
                return Ok(RevokeOutcome {
                    events: Vec::new(),
                    note: Some(
                        "no GCP grant handle or intent was recorded; nothing to remove".into(),
                    ),
                });
            };
            let h = GcpGrantHandle {
                mode: i.mode,
                project: i.project,
                role: i.role,
                member: i.member,
                user_email: i.user_email,
                service_account_email: i.service_account_email,
                granted_at: self.clock.now(),
                expires_at: self.clock.now(),
                justification: String::new(),
                key_id: None,
                dry_run: i.dry_run,
                condition_title: TITLE.into(),
            };
            self.revoke_handle(req, h).await
        }
    }

    async fn observe(&self, resource: &Resource) -> Result<Vec<LiveAccess>, ProviderError> {
        let s = self.settings(resource)?;
        if self.dry_run(&s) {
            return Ok(vec![]);
        }
        let policy = self
            .client
            .get_iam_policy(&s.project)
            .await
            .map_err(|e| e.into_provider("reading the IAM policy"))?;
        let now = self.clock.now();
        let domain = s.domain();
        let mut display_names: Option<HashMap<String, String>> = None;
        let mut out = Vec::new();
        for b in policy
            .bindings
            .iter()
            .filter(|b| b.role == s.role && condition::is_temp_access(b.condition.as_ref()))
        {
            let expires_at = b
                .condition
                .as_ref()
                .and_then(|c| condition::parse_expiry(&c.expression));
            for m in &b.members {
                let (holder, sa) = if let Some(email) = m.strip_prefix("user:") {
                    (email.to_string(), None)
                } else if let Some(sa) = m.strip_prefix("serviceAccount:") {
                    let holder =
                        match naming::user_email_from_service_account(sa, domain.as_deref()) {
                            Some(u) => u,
                            None => {
                                // The display-name fallback: one listing for all such accounts.
                                if display_names.is_none() {
                                    let list = self
                                        .client
                                        .list_service_accounts(&s.project)
                                        .await
                                        .unwrap_or_default();
                                    display_names = Some(
                                        list.into_iter()
                                            .map(|a| (a.email, a.display_name))
                                            .collect(),
                                    );
                                }
                                display_names
                                    .as_ref()
                                    .and_then(|d| d.get(sa).cloned())
                                    .unwrap_or_else(|| sa.to_string())
                            }
                        };
                    (holder, Some(sa.to_string()))
                } else {
                    (m.clone(), None)
                };
                out.push(LiveAccess {
                    holder,
                    details: json!({
                        "member": m, "role": b.role, "project_id": s.project,
                        "service_account_email": sa,
                        "expires_at": expires_at.map(rfc3339),
                        "expired": expires_at.is_some_and(|e| e <= now),
                    }),
                });
            }
        }
        Ok(out)
    }

    fn refuses_subject(&self, resource: &Resource, subject: &Subject) -> Option<String> {
        // Same rule and message as provisioning (`email_of`), so the answer does not depend on
        // whether an approver was asked first. Unparseable settings are `validate`'s business.
        let s = GcpIamSettings::of(resource).ok()?;
        let domain = s.domain()?;
        match subject.email.as_ref() {
            Some(e) if e.domain() == domain => None,
            Some(_) => Some(format!("GCP access is only available to @{domain} accounts.")),
            None => Some(
                "Your Slack profile has no e-mail address; set one so GCP access can be granted to it.".into(),
            ),
        }
    }

    async fn validate(&self, resource: &Resource) -> Result<(), ProviderError> {
        let s = self.settings(resource)?;
        if self.dry_run(&s) {
            return Ok(());
        }
        self.client.get_iam_policy(&s.project).await.map(|_| ()).map_err(|e| match e {
            GcpError::PermissionDenied(m) => ProviderError::permanent(format!(
                "resource {}: cannot read the IAM policy of project {} (permission denied, or the project does not exist): {m}",
                resource.id, s.project
            )),
            e => e.into_provider(&format!("resource {}: reading the IAM policy of project {}", resource.id, s.project)),
        })
    }
}

impl GcpIamProvider {
    /// Removes the binding and deletes the account a handle (or an intent) names.
    async fn revoke_handle(
        &self,
        req: &RevokeRequest,
        h: GcpGrantHandle,
    ) -> Result<RevokeOutcome, ProviderError> {
        let dry_run = h.dry_run
            || self.config.dry_run
            || GcpIamSettings::of(&req.resource).is_ok_and(|s| s.dry_run);
        if dry_run {
            tracing::info!(project = %h.project, role = %h.role, "DRY-RUN: Would revoke GCP IAM access of user {} ({})", h.user_email, h.member);
            if let Some(sa) = &h.service_account_email {
                tracing::info!(project = %h.project, "DRY-RUN: Would delete service account {sa}");
            }
            return Ok(RevokeOutcome {
                events: vec![event(
                    "dry_run_revoke",
                    json!({"member": h.member, "project_id": h.project, "role": h.role}),
                )],
                note: Some("dry run: nothing was changed".into()),
            });
        }
        let mut events = Vec::new();
        let mut gone = Vec::new();
        let removed = match self
            .writer
            .apply(
                &h.project,
                PolicyEdit::Revoke {
                    role: h.role.clone(),
                    member: h.member.clone(),
                },
            )
            .await
        {
            Ok(EditOutcome::Revoked { removed }) => removed,
            Ok(_) => false,
            Err(e) => return Err(e.into_provider("Failed to remove the IAM binding")),
        };
        if removed {
            tracing::info!(project = %h.project, member = %h.member, role = %h.role, "Removed IAM binding");
            events.push(event(
                "iam_binding_removed",
                json!({"member": h.member, "role": h.role, "project_id": h.project}),
            ));
        } else {
            gone.push("the binding was already gone");
        }
        if let Some(sa) = &h.service_account_email {
            match self.client.delete_service_account(&h.project, sa).await {
                Ok(()) => {
                    tracing::info!(project = %h.project, service_account = %sa, "Deleted service account");
                    events.push(event(
                        "service_account_deleted",
                        json!({"service_account_email": sa, "project_id": h.project, "reason": "revoked"}),
                    ));
                }
                Err(e) if e.is_not_found() => gone.push("the service account was already deleted"),
                Err(e) => {
                    tracing::error!(project = %h.project, service_account = %sa, error = %e, "Failed to delete service account");
                    return Err(e.into_provider("Failed to delete service account"));
                }
            }
        }
        Ok(RevokeOutcome {
            events,
            note: (!gone.is_empty()).then(|| gone.join("; ")),
        })
    }
}
