//! The engine's side of event webhooks (see [`crate::webhooks`]): enqueueing deliveries with
//! the audit events that cause them, running a delivery job, disabling a webhook that keeps
//! failing and enabling it again.
//!
//! Each webhook has a durable cursor (the `seq` of the last audit event it took). A delivery job
//! reads the events after the cursor in batches, sends those the webhook wants, and moves the
//! cursor only after a 2xx: events arrive in chain order, each once per successful delivery, and
//! at least once across crashes (a crash between the receiver's 2xx and the cursor write sends
//! the batch again; receivers deduplicate by event id). Jobs of one webhook share an ordering
//! key, so a delivery waiting out its backoff holds back the ones enqueued after it.

use chrono::{DateTime, Utc};

use super::{Engine, EngineError, JobResult};
use crate::audit::{AuditKind, AuditRecord};
use crate::jobs::{Job, JobKind, NewJob, backoff};
use crate::ports::{AuditFilter, ChangeSet};
use crate::request::Actor;
use crate::webhooks::{DeliveryError, WebhookStatus, Webhooks};

/// Batches one job delivers before it hands over to a fresh job (so a long backlog after a
/// re-enable does not hold one claim for ever, and other work interleaves).
const BATCHES_PER_JOB: usize = 20;

/// Adds a delivery job for every webhook that wants one of the change set's audit records.
pub(super) fn enqueue_deliveries(webhooks: &Webhooks, cs: &mut ChangeSet, now: DateTime<Utc>) {
    if cs.audit.is_empty() {
        return;
    }
    for spec in &webhooks.specs {
        if cs.audit.iter().any(|a| spec.wants(a.kind)) {
            cs.jobs.push(NewJob::at(
                JobKind::DeliverWebhook {
                    webhook: spec.id.clone(),
                },
                now,
            ));
        }
    }
}

impl Engine {
    /// Runs one [`JobKind::DeliverWebhook`] job.
    pub(super) async fn deliver_webhook(
        &self,
        id: &str,
        job: &Job,
    ) -> Result<JobResult, EngineError> {
        let Some(hooks) = &self.webhooks else {
            tracing::warn!(
                webhook = id,
                "webhook delivery job, but no webhooks are configured; dropping it"
            );
            return Ok(JobResult::done());
        };
        let Some(spec) = hooks.spec(id) else {
            // Removed from the configuration since the job was enqueued.
            tracing::warn!(
                webhook = id,
                "webhook no longer configured; dropping its delivery job"
            );
            return Ok(JobResult::done());
        };
        for _ in 0..BATCHES_PER_JOB {
            let Some(state) = hooks.store.webhook_state(id).await? else {
                tracing::warn!(
                    webhook = id,
                    "webhook has no stored state; dropping its delivery job"
                );
                return Ok(JobResult::done());
            };
            if !state.enabled {
                // Enabling it again enqueues a job that resumes from the kept cursor.
                return Ok(JobResult::done());
            }
            let events = self
                .store
                .audit_events(&AuditFilter {
                    after_seq: Some(state.cursor_seq),
                    limit: Some(spec.batch_size),
                    ..Default::default()
                })
                .await?;
            let Some(last_seq) = events.last().map(|e| e.seq) else {
                return Ok(JobResult::done()); // caught up
            };
            let wanted: Vec<_> = events
                .into_iter()
                .filter(|e| spec.wants(e.record.kind))
                .collect();
            let now = self.now();
            let outcome = if wanted.is_empty() {
                Ok(())
            } else {
                hooks.transport.deliver(id, &wanted, now).await
            };
            match outcome {
                Ok(()) => {
                    hooks
                        .store
                        .webhook_delivered(id, last_seq, self.now())
                        .await?;
                    if !wanted.is_empty() {
                        tracing::debug!(
                            webhook = id,
                            events = wanted.len(),
                            cursor = last_seq,
                            "webhook delivery accepted"
                        );
                    }
                }
                Err(e) => return self.webhook_attempt_failed(hooks, id, job, e).await,
            }
        }
        // More to send: a fresh job carries on (behind any enqueued meanwhile, which find
        // nothing left or carry on themselves).
        self.commit(ChangeSet {
            jobs: vec![NewJob::at(
                JobKind::DeliverWebhook {
                    webhook: id.to_string(),
                },
                self.now(),
            )],
            ..Default::default()
        })
        .await?;
        Ok(JobResult::done())
    }

    /// Counts a failed attempt; retries with backoff (at least the receiver's `Retry-After`), or
    /// disables the webhook once it has failed `max_failures` times in a row.
    async fn webhook_attempt_failed(
        &self,
        hooks: &Webhooks,
        id: &str,
        job: &Job,
        e: DeliveryError,
    ) -> Result<JobResult, EngineError> {
        let max = hooks.spec(id).map(|s| s.max_failures).unwrap_or(1).max(1);
        let failures = hooks
            .store
            .webhook_failed(id, &e.message, self.now())
            .await?;
        if failures < max {
            tracing::warn!(webhook = id, failures, max_failures = max, error = %e.message, "webhook delivery failed; will retry");
            let mut wait = backoff(&job.kind, failures);
            if let Some(after) = e.retry_after {
                let after = chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
                // Honoured, but bounded: a receiver asking for a day is retried within the hour.
                wait = wait.max(after.min(chrono::Duration::hours(1)));
            }
            return Ok(JobResult::RetryAt(
                format!("webhook '{id}': {}", e.message),
                self.now() + wait,
            ));
        }
        let now = self.now();
        let record = AuditRecord::new(AuditKind::WebhookDisabled, Actor::System, now).details(
            serde_json::json!({
                "webhook": id,
                "consecutive_failures": failures,
                "last_error": e.message,
            }),
        );
        let disabled = self.set_webhook_enabled(hooks, id, false, record).await?;
        if disabled {
            tracing::error!(
                webhook = id,
                failures,
                error = %e.message,
                "WEBHOOK DISABLED after repeated delivery failures; its cursor is kept. Fix the receiver, then POST /api/webhooks/{id}/enable"
            );
        }
        Ok(JobResult::done())
    }

    /// Writes the state change with its audit record (and the jobs the record causes) in one
    /// transaction; false when the webhook already was in that state.
    async fn set_webhook_enabled(
        &self,
        hooks: &Webhooks,
        id: &str,
        enabled: bool,
        record: AuditRecord,
    ) -> Result<bool, EngineError> {
        let now = self.now();
        let mut cs = ChangeSet {
            audit: vec![record],
            ..Default::default()
        };
        if self.audit_sink.is_some() {
            for a in &cs.audit {
                cs.jobs
                    .push(NewJob::at(JobKind::ExportAudit { event_id: a.id }, now));
            }
        }
        // Other webhooks hear about it; this one too, once it is enabled (its own job below).
        enqueue_deliveries(hooks, &mut cs, now);
        if enabled
            && !cs
                .jobs
                .iter()
                .any(|j| matches!(&j.kind, JobKind::DeliverWebhook { webhook } if webhook == id))
        {
            cs.jobs.push(NewJob::at(
                JobKind::DeliverWebhook {
                    webhook: id.to_string(),
                },
                now,
            ));
        }
        let run_ats: Vec<DateTime<Utc>> = cs.jobs.iter().map(|j| j.run_at).collect();
        let changed = hooks
            .store
            .set_webhook_enabled(id, enabled, now, cs)
            .await?
            .is_some();
        if changed {
            for at in run_ats {
                self.waker.job_enqueued(at);
            }
        }
        Ok(changed)
    }

    /// Enables a disabled webhook again (an admin fixed the receiver): its failure count resets
    /// and it catches up from its kept cursor. `None`: no webhook of that name is configured;
    /// `Some(false)`: it was already enabled (nothing written).
    pub async fn enable_webhook(
        &self,
        id: &str,
        actor: &Actor,
    ) -> Result<Option<bool>, EngineError> {
        let Some(hooks) = &self.webhooks else {
            return Ok(None);
        };
        if hooks.spec(id).is_none() {
            return Ok(None);
        }
        hooks
            .store
            .ensure_webhooks(&[id.to_string()], self.now())
            .await?;
        let record = AuditRecord::new(AuditKind::WebhookEnabled, actor.clone(), self.now())
            .details(serde_json::json!({ "webhook": id }));
        Ok(Some(
            self.set_webhook_enabled(hooks, id, true, record).await?,
        ))
    }

    /// The configured webhooks with their stored state, in configuration order.
    pub async fn webhook_statuses(&self) -> Result<Vec<WebhookStatus>, EngineError> {
        let Some(hooks) = &self.webhooks else {
            return Ok(Vec::new());
        };
        let states = hooks.store.webhook_states().await?;
        let mut out = Vec::with_capacity(hooks.specs.len());
        for spec in &hooks.specs {
            let Some(s) = states.iter().find(|s| s.id == spec.id) else {
                continue;
            };
            out.push(WebhookStatus {
                id: spec.id.clone(),
                state: if s.enabled { "enabled" } else { "disabled" }.to_string(),
                cursor_seq: s.cursor_seq,
                backlog: hooks.store.audit_events_after(s.cursor_seq).await?,
                consecutive_failures: s.consecutive_failures,
                max_failures: spec.max_failures,
                last_error: s.last_error.clone(),
                last_success_at: s.last_success_at,
                disabled_at: s.disabled_at,
                events: spec
                    .events
                    .as_ref()
                    .map(|k| k.iter().map(|k| k.as_str().to_string()).collect()),
            });
        }
        Ok(out)
    }

    /// Creates the stored state of configured webhooks seen for the first time (cursor at the
    /// current chain head) and enqueues one catch-up delivery per webhook (a no-op when it has
    /// nothing new). Called once at start.
    pub async fn register_webhooks(&self) -> Result<(), EngineError> {
        let Some(hooks) = &self.webhooks else {
            return Ok(());
        };
        let ids: Vec<String> = hooks.specs.iter().map(|s| s.id.clone()).collect();
        hooks.store.ensure_webhooks(&ids, self.now()).await?;
        let now = self.now();
        self.commit(ChangeSet {
            jobs: ids
                .into_iter()
                .map(|webhook| NewJob::at(JobKind::DeliverWebhook { webhook }, now))
                .collect(),
            ..Default::default()
        })
        .await?;
        Ok(())
    }
}
