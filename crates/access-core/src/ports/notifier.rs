//! Telling people: notification jobs and the `Notifier` trait.

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ids::JobId;
use crate::jobs::Job;
use crate::notification::{DeliveredSecret, MessageRef, Notification, RequestSummary};

/// What the notifier knows about earlier messages for the same request.
#[derive(Debug, Clone, Default)]
pub struct NotifyContext {
    /// The messages already posted about the request, when the notifier reads them.
    pub message_refs: Vec<MessageRef>,
    /// The durable job delivering the notification (`None` when delivered outside a job).
    pub job: Option<NotifyJob>,
}

/// The job a notification is delivered from: lets the notifier tag what it posts and, on a
/// re-run, find a message an earlier attempt posted without living to record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyJob {
    /// The job's id.
    pub id: JobId,
    /// When the job was written.
    pub created_at: DateTime<Utc>,
    /// Attempts started so far, this one included (a claim taken over from a dead process
    /// counts as a new attempt).
    pub attempt: u32,
    /// An earlier attempt may have posted: a later attempt, a takeover, or a revived dead job
    /// (its attempts restart at 0 but its last error stays).
    pub may_have_posted: bool,
}

impl NotifyJob {
    /// The notification job `job` as a notifier sees it.
    pub fn of(job: &Job) -> NotifyJob {
        NotifyJob {
            id: job.id,
            created_at: job.created_at,
            attempt: job.attempts,
            may_have_posted: job.attempts > 1 || job.last_error.is_some(),
        }
    }
}

/// Why a notification could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Worth retrying (rate limit, 5xx, time-out).
    #[error("temporary notification failure: {0}")]
    Transient(String),
    /// Retrying cannot help (channel gone, bot removed).
    #[error("notification failed: {0}")]
    Permanent(String),
}

/// Tells people what happened.
#[async_trait]
pub trait Notifier: Send + Sync + Debug + 'static {
    /// Delivers one notification; returns the messages it posted that later events should update.
    async fn notify(
        &self,
        n: &Notification,
        ctx: &NotifyContext,
    ) -> Result<Vec<MessageRef>, NotifyError>;

    /// Whether delivering `n` reads [`NotifyContext::message_refs`]: when it does not, the engine
    /// does not read them from the store. The default is true.
    fn reads_message_refs(&self, _n: &Notification) -> bool {
        true
    }

    /// Hands a secret to the person, once. Never retried from the queue (the secret is not kept):
    /// on failure the person is told to ask again.
    async fn deliver_secret(
        &self,
        request: &RequestSummary,
        secret: &DeliveredSecret,
    ) -> Result<(), NotifyError>;
}
