//! The durable job queue's vocabulary. Jobs are written in the same transaction as the state
//! change that causes them, claimed by workers when due, retried with backoff, and kept visible
//! when they keep failing. Revocation and audit export never give up.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AuditEventId, GrantId, JobId, RequestId};
use crate::notification::Notification;

/// What a job does. Stored as `kind` (the tag, for counting) plus the JSON payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobKind {
    /// Call the provider for an approved request.
    Provision {
        /// The approved request.
        request_id: RequestId,
    },
    /// Revoke a grant at its expiry (a no-op if the grant was extended meanwhile).
    Expire {
        /// The grant.
        grant_id: GrantId,
    },
    /// Revoke a grant now, because a person asked.
    Revoke {
        /// The grant.
        grant_id: GrantId,
    },
    /// Time out a request still pending after its TTL.
    TimeoutPending {
        /// The pending request.
        request_id: RequestId,
    },
    /// Tell someone something.
    Notify {
        /// What to tell.
        notification: Box<Notification>,
    },
    /// Remind the holder that their access ends soon.
    Remind {
        /// The grant.
        grant_id: GrantId,
        /// The expiry the reminder is for (a later one makes it stale).
        expires_at: DateTime<Utc>,
    },
    /// Ship one audit event to the external audit sink.
    ExportAudit {
        /// The event.
        event_id: AuditEventId,
    },
    /// A stored job this version cannot read (a kind written by a newer version during a rolling
    /// deploy, a damaged payload). Never written, only read: the store sets such a row aside
    /// (dead, with the reason in `last_error`) instead of letting it block the queue, and the
    /// job listing shows it with its stored kind.
    #[serde(skip_deserializing)]
    Undecodable {
        /// The stored kind.
        kind: String,
        /// Why it could not be read.
        error: String,
    },
    /// Something a person said in a chat tool (a DM, a slash command, a click), stored before
    /// it was acknowledged so a crash or a failing call cannot lose it; processed by the
    /// adapter that received it (an [`crate::ports::InboxHandler`]).
    Inbox {
        /// The stored delivery.
        item: InboxItem,
    },
    /// Deliver the audit events after a webhook's cursor to it (see [`crate::webhooks`]). One
    /// job runs per webhook at a time; a job finding nothing new is done at once.
    DeliverWebhook {
        /// The webhook's id.
        webhook: String,
    },
    /// Escalate a request still pending after its policy's `escalate_after` (a no-op when it
    /// was decided meanwhile). See [`crate::escalation`].
    Escalate {
        /// The pending request.
        request_id: RequestId,
    },
}

/// One received chat payload, verified and reduced by its adapter to the adapter's own typed
/// form. The engine does not read `payload`: only the adapter named by `source` does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxItem {
    /// The adapter that owns the payload (`slack`).
    pub source: String,
    /// The sender's own id for the delivery (a Slack `event_id`, `trigger_id`, view id): a
    /// second delivery with the same key is not stored again.
    pub key: String,
    /// The adapter's typed payload, serialized by the adapter (never a credential).
    pub payload: String,
}

impl JobKind {
    /// Every kind this version stores (the [`JobKind::name`]s but `undecodable`, which names a
    /// row this version cannot read). A store may read the due jobs of a claim one kind at a
    /// time from this list; kinds it does not name (written by a newer version) must still be
    /// claimable, so a store reads the ranges between these names too.
    pub const STORED_NAMES: [&'static str; 10] = [
        "deliver_webhook",
        "escalate",
        "expire",
        "export_audit",
        "inbox",
        "notify",
        "provision",
        "remind",
        "revoke",
        "timeout_pending",
    ];

    /// The stored kind (`provision`, `expire`, …), for counting and claiming by kind.
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Provision { .. } => "provision",
            JobKind::Expire { .. } => "expire",
            JobKind::Revoke { .. } => "revoke",
            JobKind::TimeoutPending { .. } => "timeout_pending",
            JobKind::Notify { .. } => "notify",
            JobKind::Remind { .. } => "remind",
            JobKind::ExportAudit { .. } => "export_audit",
            JobKind::Undecodable { .. } => "undecodable",
            JobKind::Inbox { .. } => "inbox",
            JobKind::DeliverWebhook { .. } => "deliver_webhook",
            JobKind::Escalate { .. } => "escalate",
        }
    }

    /// How many attempts before the job is dead-lettered; `None` means it never stops.
    pub fn max_attempts(&self) -> Option<u32> {
        match self {
            // Taking access back and keeping the audit trail are never abandoned.
            JobKind::Expire { .. } | JobKind::Revoke { .. } | JobKind::ExportAudit { .. } => None,
            JobKind::TimeoutPending { .. } => None,
            JobKind::Provision { .. } => Some(8),
            JobKind::Notify { .. } | JobKind::Remind { .. } => Some(10),
            JobKind::Undecodable { .. } => Some(1),
            // About an hour of retries (capped backoff below): the person gets an answer once
            // Slack is back, or the job stays visible as dead for an operator.
            JobKind::Inbox { .. } => Some(20),
            // The webhook's own count of consecutive failures decides when to stop (it disables
            // the webhook), and it survives the job.
            JobKind::DeliverWebhook { .. } => None,
            // Only a database write; its notifications are jobs of their own.
            JobKind::Escalate { .. } => Some(20),
        }
    }

    /// Jobs sharing an ordering key run one at a time, in the order they were enqueued: the
    /// notifications of one request (a "granted" must not overtake its "approved", and a retry
    /// of the first holds back the second).
    pub fn order_key(&self) -> Option<String> {
        match self {
            JobKind::Notify { notification } => {
                notification.request_id().map(|r| format!("notify:{r}"))
            }
            // One delivery per webhook at a time, in order: the cursor is the webhook's.
            JobKind::DeliverWebhook { webhook } => Some(format!("webhook:{webhook}")),
            _ => None,
        }
    }

    /// The longest wait between two attempts.
    pub fn max_backoff_secs(&self) -> u64 {
        match self {
            JobKind::Expire { .. } | JobKind::Revoke { .. } => 300,
            JobKind::Provision { .. } | JobKind::Inbox { .. } => 120,
            _ => 600,
        }
    }

    /// Whether it takes access away (`expire`, `revoke`): such jobs never give up.
    pub fn is_revocation(&self) -> bool {
        matches!(self, JobKind::Expire { .. } | JobKind::Revoke { .. })
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// The job's id.
    pub id: JobId,
    /// What it does.
    pub kind: JobKind,
    /// When it is due.
    pub run_at: DateTime<Utc>,
}

impl NewJob {
    /// A job of `kind` due at `run_at`, with a fresh id.
    pub fn at(kind: JobKind, run_at: DateTime<Utc>) -> Self {
        Self {
            id: JobId::new(),
            kind,
            run_at,
        }
    }
}

/// Where a job is in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting until it is due.
    Pending,
    /// Claimed by a worker.
    Running,
    /// Finished.
    Done,
    /// Gave up after `max_attempts`: stays visible for an operator.
    Dead,
}

impl JobStatus {
    /// The stored name (`pending`, `running`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Dead => "dead",
        }
    }

    /// The status stored as `s`; `None` for an unknown name.
    pub fn parse(s: &str) -> Option<JobStatus> {
        [
            JobStatus::Pending,
            JobStatus::Running,
            JobStatus::Done,
            JobStatus::Dead,
        ]
        .into_iter()
        .find(|j| j.as_str() == s)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// What it does.
    pub kind: JobKind,
    /// Where it is in the queue.
    pub status: JobStatus,
    /// When it is (next) due.
    pub run_at: DateTime<Utc>,
    /// Attempts started so far (a claim counts as one).
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// Set while claimed: the claim expires at `locked_until`, after which another worker may
    /// take the job (its first worker crashed).
    pub locked_until: Option<DateTime<Utc>>,
    /// Identifies the claim; completing or failing requires it, so a worker whose claim lapsed
    /// cannot overwrite the outcome of the worker that took over.
    pub claim_token: Option<String>,
}

/// Exponential backoff with jitter ([`crate::backoff::Backoff`]): attempt 1 waits about 2 s, then
/// 4, 8, … up to the kind's cap. The jitter spreads retries of many jobs that failed together (an
/// outage) over time.
pub fn backoff(kind: &JobKind, attempts: u32) -> chrono::Duration {
    let schedule = crate::backoff::Backoff::new(
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(kind.max_backoff_secs()),
    );
    let wait = schedule.jittered(attempts);
    chrono::Duration::milliseconds(wait.as_millis() as i64)
}

/// Counts for metrics and the cleanup summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStats {
    /// Pending and due now.
    pub due: u64,
    /// Pending jobs, due or not.
    pub pending: u64,
    /// Jobs claimed by a worker.
    pub running: u64,
    /// Jobs given up on.
    pub dead: u64,
    /// Pending jobs that have failed at least once.
    pub retrying: u64,
    /// Age in seconds of the oldest due job.
    pub oldest_due_secs: Option<i64>,
    /// Age in seconds of the oldest pending job, counted from when it was enqueued (a job
    /// waiting out a retry backoff is not due, but it is still waiting).
    #[serde(default)]
    pub oldest_pending_secs: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store covers the kinds a newer version wrote by reading the ranges between these
    /// names: that needs them strictly ascending byte by byte, and each one a real kind name.
    #[test]
    fn stored_names_are_sorted_unique_kind_names() {
        let names = JobKind::STORED_NAMES;
        assert!(names.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()));
        let some = [
            JobKind::Expire {
                grant_id: GrantId::new(),
            },
            JobKind::Revoke {
                grant_id: GrantId::new(),
            },
        ];
        for kind in some {
            assert!(names.contains(&kind.name()), "{}", kind.name());
        }
        assert!(!names.contains(&"undecodable"));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let k = JobKind::Expire {
            grant_id: GrantId::new(),
        };
        for attempt in 1..30 {
            let d = backoff(&k, attempt).num_milliseconds();
            let ceiling = (2_000u64 << (attempt - 1).min(20)).min(300_000) as i64;
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d}");
        }
    }

    #[test]
    fn revocations_never_die() {
        assert_eq!(
            JobKind::Expire {
                grant_id: GrantId::new()
            }
            .max_attempts(),
            None
        );
        assert_eq!(
            JobKind::Revoke {
                grant_id: GrantId::new()
            }
            .max_attempts(),
            None
        );
        assert!(
            JobKind::Provision {
                request_id: RequestId::new()
            }
            .max_attempts()
            .is_some()
        );
    }

    #[test]
    fn kinds_serialize_with_a_tag() {
        let k = JobKind::Provision {
            request_id: RequestId::new(),
        };
        let v = serde_json::to_value(&k).unwrap();
        assert_eq!(v["type"], "provision");
        assert_eq!(serde_json::from_value::<JobKind>(v).unwrap(), k);
    }
}
