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
    pub message_refs: Vec<MessageRef>,
    /// The durable job delivering the notification (`None` when delivered outside a job).
    pub job: Option<NotifyJob>,
}

/// The job a notification is delivered from: lets the notifier tag what it posts and, on a
/// re-run, find a message an earlier attempt posted without living to record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyJob {
    pub id: JobId,
    pub created_at: DateTime<Utc>,
    /// Attempts started so far, this one included (a claim taken over from a dead process
    /// counts as a new attempt).
    pub attempt: u32,
    /// An earlier attempt may have posted: a later attempt, a takeover, or a revived dead job
    /// (its attempts restart at 0 but its last error stays).
    pub may_have_posted: bool,
}

impl NotifyJob {
    pub fn of(job: &Job) -> NotifyJob {
        NotifyJob {
            id: job.id,
            created_at: job.created_at,
            attempt: job.attempts,
            may_have_posted: job.attempts > 1 || job.last_error.is_some(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("temporary notification failure: {0}")]
    Transient(String),
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
