//! Reconciliation with the providers: defence in depth beside the job queue, and the purge of
//! finished jobs. The GCP sweep removes expired `Temp Access` bindings and orphaned service
//! accounts; the Cloud Connexa drift check removes group memberships nobody holds a grant for
//! and puts back memberships an active grant is missing. Every repair is written to the audit
//! trail. The server runs this hourly; `gatehouse-cleanup` runs it on every invocation.

use access_core::audit::{AuditKind, AuditRecord};
use access_core::ports::{GrantFilter, ProviderEvent, ProviderKind};
use access_core::{Actor, GrantStatus, Resource};
use provider_cloudconnexa::CloudConnexaProvider;
use provider_gcp_iam::GcpIamProvider;
use serde::Serialize;

use crate::compose::App;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileReport {
    /// Repairs made (one audit event each).
    pub repairs: usize,
    /// Resources checked.
    pub resources: usize,
    /// Problems that need a person (the next run tries again).
    pub errors: Vec<String>,
}

impl ReconcileReport {
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

fn repair_record(app: &App, resource: &Resource, e: &ProviderEvent) -> AuditRecord {
    AuditRecord::new(AuditKind::DriftRepaired, Actor::System, app.engine.now())
        .resource(&resource.id)
        .details(serde_json::json!({"event": e.name, "provider": resource.provider, "details": e.details}))
}

/// One reconciliation pass over every resource whose provider supports it.
pub async fn reconcile(app: &App) -> ReconcileReport {
    let mut report = ReconcileReport::default();
    for resource in app.engine.resources() {
        let events = match resource.provider {
            ProviderKind::GcpIam => {
                let Some(gcp) = &app.adapters.gcp_iam else {
                    continue;
                };
                report.resources += 1;
                sweep_gcp(app, gcp, &resource, &mut report).await
            }
            ProviderKind::CloudConnexa => {
                let Some(cc) = &app.adapters.cloudconnexa else {
                    continue;
                };
                report.resources += 1;
                match repair_cloudconnexa(app, cc, &resource, &mut report).await {
                    Some(events) => events,
                    None => continue,
                }
            }
            _ => continue,
        };
        report.repairs += events.len();
        let records: Vec<AuditRecord> = events
            .iter()
            .map(|e| repair_record(app, &resource, e))
            .collect();
        if let Err(e) = app.engine.record(records).await {
            report
                .errors
                .push(format!("{}: could not audit repairs: {e}", resource.id));
        }
    }
    for e in &report.errors {
        tracing::error!(error = %e, "reconciliation problem");
    }
    if report.repairs > 0 {
        tracing::warn!(repairs = report.repairs, "reconciliation repaired drift");
        metrics::counter!("gatehouse_drift_repairs_total").increment(report.repairs as u64);
    }
    report
}

/// The GCP sweep of one resource: the repairs it made; its problems go to `report`.
async fn sweep_gcp(
    app: &App,
    gcp: &GcpIamProvider,
    resource: &Resource,
    report: &mut ReconcileReport,
) -> Vec<ProviderEvent> {
    match gcp.sweep_resource(resource, app.engine.now()).await {
        Ok(sweep) => {
            report.errors.extend(
                sweep
                    .errors
                    .into_iter()
                    .map(|e| format!("{}: {e}", resource.id)),
            );
            sweep.events
        }
        Err(e) => {
            report
                .errors
                .push(format!("{}: sweep failed: {e}", resource.id));
            Vec::new()
        }
    }
}

/// The Cloud Connexa drift repair of one resource: the repairs it made, or `None` when the
/// drift could not be computed (the problem is in `report`).
async fn repair_cloudconnexa(
    app: &App,
    cc: &CloudConnexaProvider,
    resource: &Resource,
    report: &mut ReconcileReport,
) -> Option<Vec<ProviderEvent>> {
    // Every live grant protects its membership from removal: a provisioning grant's
    // provider call may have added it already (the grant job records it later), and a
    // revoking grant's removal is its own job's work. Only active grants are restored
    // when missing.
    let live = match app
        .engine
        .grants(&GrantFilter {
            live_only: true,
            resource: Some(resource.id.clone()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
    {
        Ok(g) => g,
        Err(e) => {
            report.errors.push(format!("{}: {e}", resource.id));
            return None;
        }
    };
    let holders: Vec<String> = live
        .iter()
        .filter_map(|g| g.subject.email.as_ref().map(|e| e.to_string()))
        .collect();
    let active: Vec<String> = live
        .iter()
        .filter(|g| g.status == GrantStatus::Active)
        .filter_map(|g| g.subject.email.as_ref().map(|e| e.to_string()))
        .collect();
    let drift = match cc.drift(resource, &holders).await {
        Ok(mut d) => {
            d.missing
                .retain(|h| active.iter().any(|a| a.eq_ignore_ascii_case(h)));
            d
        }
        Err(e) => {
            report
                .errors
                .push(format!("{}: drift check failed: {e}", resource.id));
            return None;
        }
    };
    let mut events = Vec::new();
    for stray in &drift.stray {
        match cc.remove_stray(resource, stray).await {
            Ok(ev) => events.extend(ev),
            Err(e) => report
                .errors
                .push(format!("{}: removing {}: {e}", resource.id, stray.holder)),
        }
    }
    for holder in &drift.missing {
        match cc.restore_missing(resource, holder).await {
            Ok(ev) => events.extend(ev),
            Err(e) => report
                .errors
                .push(format!("{}: restoring {holder}: {e}", resource.id)),
        }
    }
    Some(events)
}

/// The lease that lets one replica at a time reconcile.
pub const RECONCILE_LEASE: &str = "reconcile";

/// A reconciliation pass if this replica (`holder`) gets the reconcile lease for `period`, else
/// `None`: the replicas of one database share one pass per period instead of all sweeping at
/// once (and racing each other's repairs). The lease's expiry comes from the database's clock.
pub async fn reconcile_under_lease(
    app: &App,
    holder: &str,
    period: std::time::Duration,
) -> Option<ReconcileReport> {
    match app
        .store
        .try_take_lease(RECONCILE_LEASE, holder, period)
        .await
    {
        Ok(true) => Some(reconcile(app).await),
        Ok(false) => {
            tracing::debug!("another replica holds the reconcile lease; skipping this pass");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "could not take the reconcile lease; skipping this pass");
            None
        }
    }
}

/// Deletes finished jobs older than `[server] job_retention_days` (none when it is 0); how many.
/// Safe on several replicas at once: each deletes what is left.
pub async fn purge_finished_jobs(app: &App) -> Result<u64, access_core::engine::EngineError> {
    match app.config.server.job_retention() {
        Some(retention) => app.engine.purge_finished_jobs(retention).await,
        None => Ok(0),
    }
}
