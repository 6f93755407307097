//! Where audit events are exported.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use super::Store;
use crate::audit::AuditEvent;
use crate::grant::Grant;
use crate::ids::AuditEventId;
use crate::request::AccessRequest;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditSinkError {
    /// The sink could not be reached or failed; the batch is retried.
    #[error("audit sink unavailable: {0}")]
    Unavailable(String),
    /// The sink refused these events for good (schema mismatch): they stay in the local chain.
    #[error("audit sink rejected event {event_id}: {message}")]
    Rejected {
        /// The event refused.
        event_id: AuditEventId,
        /// Why the sink refused it.
        message: String,
    },
}

/// One event to export, with the request and grant it concerns (the GCP document's
/// `access_grants` row needs both).
#[derive(Debug, Clone)]
pub struct ExportItem {
    /// The audit event.
    pub event: AuditEvent,
    /// The request it concerns, if any.
    pub request: Option<AccessRequest>,
    /// The grant it concerns, if any.
    pub grant: Option<Grant>,
}

/// Rows the sink refused for good (row-level errors) and rows it did not store this time
/// (transient row errors); the others were accepted.
#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    /// Each refused event, with the sink's reason.
    pub rejected: Vec<(AuditEventId, String)>,
    /// Each event to send again later (the sink stored the rest of the batch), with the reason.
    pub retry: Vec<(AuditEventId, String)>,
}

/// Ships audit events somewhere outside (BigQuery). MUST tolerate the same event twice (exports
/// are at-least-once; deduplicate on the event id). `Err` means the whole batch should be retried
/// later (outage); row-level refusals go in the report and do not block the other rows.
#[async_trait]
pub trait AuditSink: Send + Sync + Debug + 'static {
    /// Ships `batch` (in chain order); the refused rows are in the report.
    async fn export(&self, batch: &[ExportItem]) -> Result<ExportReport, AuditSinkError>;
}

/// The store as the adapters share it.
pub type SharedStore = Arc<dyn Store>;
