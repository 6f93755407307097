//! The sweep: expired `Temp Access` bindings, their service accounts, orphaned Gatehouse
//! accounts and `deleted:` members, removed and reported for the audit trail.

use super::*;

/// What one sweep found and repaired.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepReport {
    pub project: String,
    pub dry_run: bool,
    /// `(member, role, expires_at)` of expired `Temp Access` bindings removed.
    pub expired_bindings: Vec<(String, String, DateTime<Utc>)>,
    /// Accounts of expired bindings, deleted.
    pub deleted_service_accounts: Vec<String>,
    /// Gatehouse accounts with no binding, older than the orphan age, deleted.
    pub orphaned_service_accounts: Vec<String>,
    /// `deleted:serviceAccount:` members dropped from bindings.
    pub dropped_deleted_members: Vec<String>,
    /// Repairs that failed (the next sweep tries again).
    pub errors: Vec<String>,
    /// One event per repair, for the audit trail.
    pub events: Vec<ProviderEvent>,
}

impl SweepReport {
    pub fn is_clean(&self) -> bool {
        self.events.is_empty() && self.errors.is_empty()
    }
}

impl GcpIamProvider {
    /// The sweep for one resource (its project; dry-run if the resource says so).
    pub async fn sweep_resource(
        &self,
        resource: &Resource,
        now: DateTime<Utc>,
    ) -> Result<SweepReport, ProviderError> {
        let s = self.settings(resource)?;
        self.sweep_project(&s.project, now, self.dry_run(&s)).await
    }

    /// Removes `Temp Access` bindings that expired by `now` and deletes their service accounts,
    /// deletes Gatehouse accounts left without a binding for longer than the orphan age, and
    /// drops `deleted:serviceAccount:` members. Returns one event per repair for the audit
    /// trail. In dry-run mode it reads and reports but changes nothing.
    pub async fn sweep(
        &self,
        project: &str,
        now: DateTime<Utc>,
    ) -> Result<SweepReport, ProviderError> {
        self.sweep_project(project, now, self.config.dry_run).await
    }

    async fn sweep_project(
        &self,
        project: &str,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<SweepReport, ProviderError> {
        tracing::info!(project, dry_run, "Running GCP access cleanup");
        let mut report = SweepReport {
            project: project.into(),
            dry_run,
            ..Default::default()
        };
        let changes = self.sweep_changes(project, now, dry_run).await?;
        let to_delete = record_changes(&mut report, &changes, project, dry_run);

        // Orphans: Gatehouse accounts no binding mentions, older than the orphan age (younger
        // ones may be a grant between account creation and binding).
        let accounts = self
            .client
            .list_service_accounts(project)
            .await
            .map_err(|e| e.into_provider("sweep: listing service accounts"))?;
        let bound = self.bound_accounts(project, now, dry_run).await?;
        let mut orphans: Vec<&ServiceAccount> = Vec::new();
        for sa in &accounts {
            let id = sa.email.split('@').next().unwrap_or_default();
            let ours = naming::is_gatehouse_account_id(id)
                && sa.description.starts_with(DESCRIPTION_MARKER);
            let old = naming::created_at(id).is_some_and(|t| now - t > self.config.orphan_min_age);
            if ours && old && !bound.contains(&sa.email) && !to_delete.contains(&sa.email) {
                orphans.push(sa);
            }
        }

        for email in &to_delete {
            if dry_run {
                tracing::info!(project, service_account = %email, "DRY-RUN: Would delete service account");
                report.deleted_service_accounts.push(email.clone());
                continue;
            }
            match self.client.delete_service_account(project, email).await {
                Ok(()) => {
                    tracing::info!(project, service_account = %email, "Deleted service account");
                    report.deleted_service_accounts.push(email.clone());
                    report.events.push(event(
                        "service_account_deleted",
                        json!({"project_id": project, "service_account_email": email, "reason": "expired"}),
                    ));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::error!(project, service_account = %email, error = %e, "Failed to delete service account");
                    report.errors.push(format!("deleting {email}: {e}"));
                }
            }
        }
        for sa in orphans {
            if dry_run {
                tracing::info!(project, service_account = %sa.email, "DRY-RUN: Would delete orphaned service account");
                report.orphaned_service_accounts.push(sa.email.clone());
                continue;
            }
            match self.client.delete_service_account(project, &sa.email).await {
                Ok(()) => {
                    tracing::info!(project, service_account = %sa.email, "Deleted orphaned service account");
                    report.orphaned_service_accounts.push(sa.email.clone());
                    report.events.push(event(
                        "orphaned_service_account_deleted",
                        json!({"project_id": project, "service_account_email": sa.email, "display_name": sa.display_name}),
                    ));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::error!(project, service_account = %sa.email, error = %e, "Failed to delete service account");
                    report
                        .errors
                        .push(format!("deleting orphan {}: {e}", sa.email));
                }
            }
        }
        Ok(report)
    }

    /// What sweeping the policy changes: applied (or, in a dry run, only computed).
    async fn sweep_changes(
        &self,
        project: &str,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<SweepChanges, ProviderError> {
        Ok(if dry_run {
            let mut p = self
                .client
                .get_iam_policy(project)
                .await
                .map_err(|e| e.into_provider("sweep: reading the policy"))?;
            match crate::policy::apply_edit(&mut p, &PolicyEdit::Sweep { now }) {
                EditOutcome::Swept(c) => c,
                _ => SweepChanges::default(),
            }
        } else {
            match self.writer.apply(project, PolicyEdit::Sweep { now }).await {
                Ok(EditOutcome::Swept(c)) => c,
                Ok(_) => SweepChanges::default(),
                Err(e) => return Err(e.into_provider("sweep: removing expired bindings")),
            }
        })
    }

    /// The service accounts the policy binds (in a dry run: as it would be after the sweep).
    async fn bound_accounts(
        &self,
        project: &str,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<BTreeSet<String>, ProviderError> {
        let policy = if dry_run {
            None
        } else {
            Some(
                self.client
                    .get_iam_policy(project)
                    .await
                    .map_err(|e| e.into_provider("sweep: reading the policy"))?,
            )
        };
        let mut bound: BTreeSet<String> = BTreeSet::new();
        if let Some(p) = &policy {
            for b in &p.bindings {
                for m in &b.members {
                    if let Some(e) = m.strip_prefix("serviceAccount:") {
                        bound.insert(e.to_string());
                    }
                }
            }
        } else {
            // Dry run: the policy as it would be after the removals above.
            let mut p = self
                .client
                .get_iam_policy(project)
                .await
                .map_err(|e| e.into_provider("sweep: reading the policy"))?;
            let _ = crate::policy::apply_edit(&mut p, &PolicyEdit::Sweep { now });
            for b in &p.bindings {
                for m in &b.members {
                    if let Some(e) = m.strip_prefix("serviceAccount:") {
                        bound.insert(e.to_string());
                    }
                }
            }
        }
        Ok(bound)
    }
}

/// Reports the expired bindings and dropped members of `changes`; answers the expired
/// Gatehouse service accounts, to delete.
fn record_changes(
    report: &mut SweepReport,
    changes: &SweepChanges,
    project: &str,
    dry_run: bool,
) -> BTreeSet<String> {
    let verb = if dry_run {
        "DRY-RUN: Would remove"
    } else {
        "Removed"
    };
    let sa_domain = format!("@{project}.iam.gserviceaccount.com");
    let mut to_delete: BTreeSet<String> = BTreeSet::new();
    for x in &changes.expired {
        tracing::info!(project, member = %x.member, role = %x.role, expires_at = %rfc3339(x.expires_at), "{verb} expired binding");
        report
            .expired_bindings
            .push((x.member.clone(), x.role.clone(), x.expires_at));
        report.events.push(event(
                "expired_binding_removed",
                json!({"project_id": project, "member": x.member, "role": x.role, "expires_at": rfc3339(x.expires_at), "dry_run": dry_run}),
            ));
        if let Some(email) = x.member.strip_prefix("serviceAccount:")
            && email.ends_with(&sa_domain)
            && naming::is_gatehouse_account_id(email.split('@').next().unwrap_or_default())
        {
            tracing::info!(project, service_account = %email, "Found expired service account");
            to_delete.insert(email.to_string());
        }
    }
    for (role, m) in &changes.dropped_deleted {
        tracing::info!(project, member = %m, role = %role, "{verb} deleted member");
        report.dropped_deleted_members.push(m.clone());
        report.events.push(event(
            "deleted_member_dropped",
            json!({"project_id": project, "member": m, "role": role, "dry_run": dry_run}),
        ));
    }
    to_delete
}
