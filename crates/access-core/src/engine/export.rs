//! Audit export: the `export_audit` jobs of a claim shipped to the audit sink as one batch, with
//! the requests and grants their events name read in bulk.

use std::collections::{BTreeSet, HashMap};

use super::{Engine, EngineError, RunSummary};
use crate::audit::AuditEvent;
use crate::grant::Grant;
use crate::ids::{AuditEventId, GrantId, RequestId};
use crate::jobs::{Job, JobKind, backoff};
use crate::ports::{ExportItem, ExportReport};
use crate::request::AccessRequest;

/// The job kind every count here is filed under.
const EXPORT: &str = "export_audit";

/// A batch ready for the sink: the items in chain order, and the job of each event (by id).
struct ExportBatch<'a> {
    items: Vec<ExportItem>,
    jobs: HashMap<AuditEventId, &'a Job>,
}

impl Engine {
    /// Ships the events of `jobs` (all `export_audit`) to the audit sink in one call and settles
    /// every job: done when accepted, dead when the sink (or the store) has no use for the
    /// event, retried with backoff when the sink is unavailable (the whole batch) or reports the
    /// event's rows as not stored this time (that event alone). A crash anywhere before the
    /// completion leaves the jobs claimed; their lease lapses and the batch is sent again, the
    /// sink absorbing what had landed (insertId = event id).
    pub(super) async fn run_exports(&self, jobs: Vec<Job>) -> Result<RunSummary, EngineError> {
        let mut s = RunSummary::default();
        let Some(sink) = &self.audit_sink else {
            return self.keep_exports(&jobs).await;
        };
        let batch = self.export_batch(&jobs, &mut s).await?;
        if batch.items.is_empty() {
            return Ok(s);
        }
        match sink.export(&batch.items).await {
            Ok(report) => self.settle_exported(batch, report, &mut s).await?,
            Err(e) => {
                let msg = e.to_string();
                for job in batch.jobs.values() {
                    let token = job.claim_token.clone().unwrap_or_default();
                    let at = self.now() + backoff(&job.kind, job.attempts);
                    self.store.retry_job(job.id, &token, &msg, at).await?;
                    *s.retried.entry(EXPORT.into()).or_default() += 1;
                }
                tracing::warn!(error = %msg, events = batch.items.len(), "audit export failed; will retry");
            }
        }
        Ok(s)
    }

    /// A sink configured once and removed since: nothing to ship to; the jobs are kept for later.
    async fn keep_exports(&self, jobs: &[Job]) -> Result<RunSummary, EngineError> {
        let mut s = RunSummary::default();
        for j in jobs {
            let token = j.claim_token.clone().unwrap_or_default();
            let at = self.now() + chrono::Duration::hours(1);
            self.store
                .retry_job(j.id, &token, "no audit sink configured", at)
                .await?;
            *s.retried.entry(EXPORT.into()).or_default() += 1;
        }
        Ok(s)
    }

    /// The batch's events, and the requests and grants they name, read in a few statements (500
    /// ids each) rather than three per event: per-event reads bounded the drain at about 1,100
    /// events/s. The job of an event that no longer exists is buried (counted in `s`).
    async fn export_batch<'a>(
        &self,
        jobs: &'a [Job],
        s: &mut RunSummary,
    ) -> Result<ExportBatch<'a>, EngineError> {
        let event_ids: Vec<AuditEventId> = jobs.iter().filter_map(exported_event).collect();
        let mut events: HashMap<AuditEventId, AuditEvent> = self
            .store
            .audit_events_by_id(&event_ids)
            .await?
            .into_iter()
            .map(|e| (e.record.id, e))
            .collect();
        let request_ids: Vec<RequestId> = distinct(events.values().map(|e| e.record.request_id));
        let grant_ids: Vec<GrantId> = distinct(events.values().map(|e| e.record.grant_id));
        // Independent reads: both at once (two pool connections) rather than one after the other.
        let (requests, grants) = futures::future::try_join(
            self.store.requests_by_id(&request_ids),
            self.store.grants_by_id(&grant_ids),
        )
        .await?;
        let requests: HashMap<RequestId, AccessRequest> =
            requests.into_iter().map(|r| (r.id, r)).collect();
        let grants: HashMap<GrantId, Grant> = grants.into_iter().map(|g| (g.id, g)).collect();
        let mut batch = ExportBatch {
            items: Vec::with_capacity(jobs.len()),
            jobs: HashMap::new(),
        };
        for j in jobs {
            let Some(event_id) = exported_event(j) else {
                continue;
            };
            let Some(event) = events.remove(&event_id) else {
                let token = j.claim_token.clone().unwrap_or_default();
                self.store
                    .bury_job(j.id, &token, "audit event not found")
                    .await?;
                *s.dead.entry(EXPORT.into()).or_default() += 1;
                continue;
            };
            let request = event
                .record
                .request_id
                .and_then(|r| requests.get(&r).cloned());
            let grant = event.record.grant_id.and_then(|g| grants.get(&g).cloned());
            batch.jobs.insert(event_id, j);
            batch.items.push(ExportItem {
                event,
                request,
                grant,
            });
        }
        batch.items.sort_by_key(|i| i.event.seq);
        Ok(batch)
    }

    /// Settles a batch the sink answered: the events it rejected stay in the local chain (their
    /// jobs are buried); the events it did not store this time are retried with backoff; the
    /// others — exactly the accepted ones — are done, in one write for the whole batch.
    async fn settle_exported(
        &self,
        batch: ExportBatch<'_>,
        report: ExportReport,
        s: &mut RunSummary,
    ) -> Result<(), EngineError> {
        let rejected: HashMap<AuditEventId, String> = report.rejected.into_iter().collect();
        let retry: HashMap<AuditEventId, String> = report.retry.into_iter().collect();
        let mut accepted = Vec::with_capacity(batch.jobs.len());
        for (event_id, job) in batch.jobs {
            let token = job.claim_token.clone().unwrap_or_default();
            if let Some(why) = rejected.get(&event_id) {
                tracing::error!(event = %event_id, error = %why, "audit sink rejected an event; it stays in the local chain");
                self.store.bury_job(job.id, &token, why).await?;
                *s.dead.entry(EXPORT.into()).or_default() += 1;
            } else if let Some(why) = retry.get(&event_id) {
                let at = self.now() + backoff(&job.kind, job.attempts);
                self.store.retry_job(job.id, &token, why, at).await?;
                *s.retried.entry(EXPORT.into()).or_default() += 1;
            } else {
                accepted.push((job.id, token));
            }
        }
        self.store.complete_jobs(&accepted, self.now()).await?;
        *s.done.entry(EXPORT.into()).or_default() += accepted.len() as u64;
        Ok(())
    }
}

/// The audit event an export job ships (`None` for any other kind).
fn exported_event(job: &Job) -> Option<AuditEventId> {
    match job.kind {
        JobKind::ExportAudit { event_id } => Some(event_id),
        _ => None,
    }
}

/// The distinct ids among `ids`, in order.
fn distinct<T: Ord>(ids: impl Iterator<Item = Option<T>>) -> Vec<T> {
    ids.flatten().collect::<BTreeSet<_>>().into_iter().collect()
}
