//! Event webhooks: the audit trail pushed to HTTPS endpoints (a SIEM, Splunk HEC, a ticketing
//! bridge), each through its own durable cursor over the audit chain.
//!
//! The engine owns the policy (which events, in what order, when to retry, when to give up);
//! the ports below keep the I/O outside: [`WebhookTransport`] signs and sends a batch (the
//! `webhooks` crate), [`WebhookStore`] keeps each webhook's cursor, failure count and state
//! (the `store-sqlx` crate). Delivery runs as [`crate::jobs::JobKind::DeliverWebhook`] jobs, one
//! at a time per webhook (they share an ordering key), so events arrive in chain order.

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditKind};
use crate::ports::{ChangeSet, Committed, StoreError};

/// Consecutive failed attempts after which a webhook is disabled, unless configured.
pub const DEFAULT_MAX_FAILURES: u32 = 10;
/// Events per delivery, unless configured.
pub const DEFAULT_BATCH_SIZE: u32 = 100;
/// The most events one delivery may carry (the store reads at most this many at once).
pub const MAX_BATCH_SIZE: u32 = 1000;

/// What the engine needs to know about one configured webhook (where and how it is sent is the
/// transport's business).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSpec {
    /// The stable name (`siem`, `tickets`): the key of its cursor and of its jobs.
    pub id: String,
    /// Only these audit kinds are sent; `None`: every kind. Events of other kinds are skipped
    /// (the cursor moves past them).
    pub events: Option<Vec<AuditKind>>,
    /// Consecutive failed attempts that disable the webhook.
    pub max_failures: u32,
    /// Events per delivery (1..=[`MAX_BATCH_SIZE`]).
    pub batch_size: u32,
}

impl WebhookSpec {
    /// A webhook `id` sending every event, with the default limits.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            events: None,
            max_failures: DEFAULT_MAX_FAILURES,
            batch_size: DEFAULT_BATCH_SIZE,
        }
    }

    /// Does this webhook want events of `kind`?
    pub fn wants(&self, kind: AuditKind) -> bool {
        self.events.as_ref().is_none_or(|k| k.contains(&kind))
    }
}

/// The stored state of one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookState {
    /// The webhook's id.
    pub id: String,
    /// Whether deliveries run (false once disabled after failures).
    pub enabled: bool,
    /// The `seq` of the last audit event delivered (or skipped by the filter); delivery resumes
    /// after it.
    pub cursor_seq: i64,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// Why the last attempt failed (never the secret, never the body).
    pub last_error: Option<String>,
    /// When a delivery last succeeded.
    pub last_success_at: Option<DateTime<Utc>>,
    /// When it was disabled, while it is.
    pub disabled_at: Option<DateTime<Utc>>,
    /// When the state last changed.
    pub updated_at: DateTime<Utc>,
}

/// A configured webhook with its stored state, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookStatus {
    /// The webhook's id.
    pub id: String,
    /// `enabled` or `disabled`.
    pub state: String,
    /// The `seq` of the last audit event delivered (or skipped).
    pub cursor_seq: i64,
    /// Audit events after the cursor (not all need to match the filter).
    pub backlog: i64,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// Consecutive failures that disable it.
    pub max_failures: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When a delivery last succeeded.
    pub last_success_at: Option<DateTime<Utc>>,
    /// When it was disabled, while it is.
    pub disabled_at: Option<DateTime<Utc>>,
    /// The audit kinds it receives; `None`: all.
    pub events: Option<Vec<String>>,
}

/// Why a delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    /// What went wrong, for logs and the admin API: status and a short excerpt of the response,
    /// or the transport error. Never the secret.
    pub message: String,
    /// The receiver's `Retry-After` (429, 503): the next attempt waits at least this long.
    pub retry_after: Option<std::time::Duration>,
}

impl DeliveryError {
    /// A failure without a `Retry-After`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Signs and sends one batch of events to a webhook.
#[async_trait]
pub trait WebhookTransport: Send + Sync + Debug + 'static {
    /// Delivers `events` (in chain order, non-empty) to `webhook`, signed at `now`. `Ok` only
    /// when the receiver answered 2xx.
    async fn deliver(
        &self,
        webhook: &str,
        events: &[AuditEvent],
        now: DateTime<Utc>,
    ) -> Result<(), DeliveryError>;
}

/// The durable state of webhooks.
#[async_trait]
pub trait WebhookStore: Send + Sync + Debug + 'static {
    /// Creates the state of each webhook in `ids` that has none yet: enabled, its cursor at the
    /// current head of the audit chain (a new webhook receives events from now on, not the whole
    /// history). Existing states are left as they are.
    async fn ensure_webhooks(&self, ids: &[String], now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Every stored state, by id.
    async fn webhook_states(&self) -> Result<Vec<WebhookState>, StoreError>;

    /// The stored state of webhook `id`.
    async fn webhook_state(&self, id: &str) -> Result<Option<WebhookState>, StoreError>;

    /// Records a successful delivery (or a filtered skip) up to `cursor_seq`: the cursor moves
    /// forward (never back) and the failure count resets.
    async fn webhook_delivered(
        &self,
        id: &str,
        cursor_seq: i64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Records a failed attempt; returns the consecutive failures counted now.
    async fn webhook_failed(
        &self,
        id: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<u32, StoreError>;

    /// Enables or disables a webhook and commits `change` (its audit event, the catch-up job) in
    /// the same transaction, only if the state actually changes: `None` when it was already so
    /// (and nothing was written). Enabling resets the failure count; the cursor is kept either
    /// way, so nothing is lost while a webhook is disabled.
    async fn set_webhook_enabled(
        &self,
        id: &str,
        enabled: bool,
        now: DateTime<Utc>,
        change: ChangeSet,
    ) -> Result<Option<Committed>, StoreError>;

    /// How many audit events come after `seq`.
    async fn audit_events_after(&self, seq: i64) -> Result<i64, StoreError>;
}

/// The engine's webhook wiring: what is configured, how it is sent, where its state lives.
#[derive(Debug, Clone)]
pub struct Webhooks {
    /// The configured webhooks.
    pub specs: Vec<WebhookSpec>,
    /// How deliveries are sent.
    pub transport: std::sync::Arc<dyn WebhookTransport>,
    /// Where their state lives.
    pub store: std::sync::Arc<dyn WebhookStore>,
}

impl Webhooks {
    /// The configured webhook `id`.
    pub fn spec(&self, id: &str) -> Option<&WebhookSpec> {
        self.specs.iter().find(|s| s.id == id)
    }
}
