//! Audit export: the `export_audit` jobs of a claim shipped to the audit sink as one batch, with
//! the requests and grants their events name read in bulk.

use std::collections::HashMap;

use super::{Engine, EngineError, RunSummary};
use crate::audit::AuditEvent;
use crate::grant::Grant;
use crate::ids::{AuditEventId, GrantId, RequestId};
use crate::jobs::{Job, JobKind, backoff};
use crate::ports::ExportItem;
use crate::request::AccessRequest;

impl Engine {
    pub(super) async fn run_exports(&self, jobs: Vec<Job>) -> Result<RunSummary, EngineError> {
        let mut s = RunSummary::default();
        let Some(sink) = &self.audit_sink else {
            // Configured once and removed since: nothing to ship to; keep the jobs for later.
            for j in &jobs {
                let token = j.claim_token.clone().unwrap_or_default();
                let at = self.now() + chrono::Duration::hours(1);
                self.store
                    .retry_job(j.id, &token, "no audit sink configured", at)
                    .await?;
                *s.retried.entry("export_audit".into()).or_default() += 1;
            }
            return Ok(s);
        };
        // The batch's events, and the requests and grants they name, in a few statements (500
        // ids each) rather than three per event: per-event reads bounded the drain at about
        // 1,100 events/s.
        let event_ids: Vec<AuditEventId> = jobs
            .iter()
            .filter_map(|j| match j.kind {
                JobKind::ExportAudit { event_id } => Some(event_id),
                _ => None,
            })
            .collect();
        let mut events: HashMap<AuditEventId, AuditEvent> = self
            .store
            .audit_events_by_id(&event_ids)
            .await?
            .into_iter()
            .map(|e| (e.record.id, e))
            .collect();
        let request_ids: Vec<RequestId> = events
            .values()
            .filter_map(|e| e.record.request_id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let grant_ids: Vec<GrantId> = events
            .values()
            .filter_map(|e| e.record.grant_id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let requests: HashMap<RequestId, AccessRequest> = self
            .store
            .requests_by_id(&request_ids)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        let grants: HashMap<GrantId, Grant> = self
            .store
            .grants_by_id(&grant_ids)
            .await?
            .into_iter()
            .map(|g| (g.id, g))
            .collect();
        let mut items = Vec::with_capacity(jobs.len());
        let mut by_event: HashMap<String, &Job> = HashMap::new();
        for j in &jobs {
            let JobKind::ExportAudit { event_id } = j.kind else {
                continue;
            };
            let Some(event) = events.remove(&event_id) else {
                let token = j.claim_token.clone().unwrap_or_default();
                self.store
                    .bury_job(j.id, &token, "audit event not found")
                    .await?;
                *s.dead.entry("export_audit".into()).or_default() += 1;
                continue;
            };
            let request = event
                .record
                .request_id
                .and_then(|r| requests.get(&r).cloned());
            let grant = event.record.grant_id.and_then(|g| grants.get(&g).cloned());
            by_event.insert(event_id.to_string(), j);
            items.push(ExportItem {
                event,
                request,
                grant,
            });
        }
        if items.is_empty() {
            return Ok(s);
        }
        items.sort_by_key(|i| i.event.seq);
        match sink.export(&items).await {
            Ok(report) => {
                let rejected: HashMap<String, String> = report
                    .rejected
                    .into_iter()
                    .map(|(id, why)| (id.to_string(), why))
                    .collect();
                let mut accepted = Vec::new();
                for (event_id, job) in by_event {
                    let token = job.claim_token.clone().unwrap_or_default();
                    if let Some(why) = rejected.get(&event_id) {
                        tracing::error!(event = %event_id, error = %why, "audit sink rejected an event; it stays in the local chain");
                        self.store.bury_job(job.id, &token, why).await?;
                        *s.dead.entry("export_audit".into()).or_default() += 1;
                    } else {
                        accepted.push((job.id, token));
                    }
                }
                // One write for the whole accepted batch, not one per event.
                self.store.complete_jobs(&accepted, self.now()).await?;
                *s.done.entry("export_audit".into()).or_default() += accepted.len() as u64;
            }
            Err(e) => {
                let msg = e.to_string();
                for job in by_event.values() {
                    let token = job.claim_token.clone().unwrap_or_default();
                    let at = self.now() + backoff(&job.kind, job.attempts);
                    self.store.retry_job(job.id, &token, &msg, at).await?;
                    *s.retried.entry("export_audit".into()).or_default() += 1;
                }
                tracing::warn!(error = %msg, events = items.len(), "audit export failed; will retry");
            }
        }
        Ok(s)
    }
}
