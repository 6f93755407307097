//! Where audit events are exported.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use super::Store;
use crate::audit::AuditEvent;
use crate::grant::Grant;
use crate::ids::AuditEventId;
use crate::request::AccessRequest;

#[derive(Debug, thiserror::Error)]
pub enum AuditSinkError {
    #[error("audit sink unavailable: {0}")]
    Unavailable(String),
    /// The sink refused these events for good (schema mismatch): they stay in the local chain.
    #[error("audit sink rejected event {event_id}: {message}")]
    Rejected {
        event_id: AuditEventId,
        message: String,
    },
}

/// One event to export, with the request and grant it concerns (the GCP document's
/// `access_grants` row needs both).
#[derive(Debug, Clone)]
pub struct ExportItem {
    pub event: AuditEvent,
    pub request: Option<AccessRequest>,
    pub grant: Option<Grant>,
}

/// Rows the sink refused for good (row-level errors); the others were accepted.
#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    pub rejected: Vec<(AuditEventId, String)>,
}

/// Ships audit events somewhere outside (BigQuery). MUST tolerate the same event twice (exports
/// are at-least-once; deduplicate on the event id). `Err` means the whole batch should be retried
/// later (outage); row-level refusals go in the report and do not block the other rows.
#[async_trait]
pub trait AuditSink: Send + Sync + Debug + 'static {
    async fn export(&self, batch: &[ExportItem]) -> Result<ExportReport, AuditSinkError>;
}

pub type SharedStore = Arc<dyn Store>;
