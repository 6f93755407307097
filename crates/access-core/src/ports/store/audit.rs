//! The audit log: reading the hash chain and verifying it. Events are appended only by
//! [`super::RequestStore::commit`], in the transaction of the transition they record.

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::audit::{AuditEvent, AuditKind, ChainVerification};
use crate::ids::{AuditEventId, RequestId, ResourceId};

/// Which events [`AuditLog::audit_events`] returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Events after this sequence number (paging cursor).
    pub after_seq: Option<i64>,
    /// Events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Events before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only events of this kind.
    pub kind: Option<AuditKind>,
    /// Only events about this resource.
    pub resource: Option<ResourceId>,
    /// `team/user`, as in [`crate::audit::AuditRecord::subject`].
    pub subject: Option<String>,
    /// Only events about this request.
    pub request_id: Option<RequestId>,
    /// Oldest first; 100 when unset, at most 1000.
    pub limit: Option<u32>,
}

/// The audit hash chain as stored: its events and its verification.
#[async_trait]
pub trait AuditLog: Send + Sync + Debug + 'static {
    /// Events matching `filter`, by sequence number.
    async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError>;
    /// One event, if it exists.
    async fn audit_event(&self, id: AuditEventId) -> Result<Option<AuditEvent>, StoreError>;

    /// The events among `ids` that exist, in any order (the export reads a claimed batch with
    /// a few statements instead of one per event). The default reads them one by one.
    async fn audit_events_by_id(
        &self,
        ids: &[AuditEventId],
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.audit_event(*id).await?);
        }
        Ok(out)
    }
    /// Walks the whole chain (in pages) and compares it with the stored chain head.
    async fn verify_audit_chain(&self) -> Result<ChainVerification, StoreError>;
    /// Verifies from the newest trusted checkpoint to the head (a full walk when there is
    /// none). Stores without checkpoints walk everything.
    async fn verify_audit_chain_incremental(&self) -> Result<ChainVerification, StoreError> {
        self.verify_audit_chain().await
    }

    /// The newest `limit` audit events about `subject` (`team/user`, as
    /// [`crate::audit::AuditRecord::subject`]) or done by `actor_id` (as
    /// [`crate::request::Actor::id`]), newest first (`/access admin audit @user`). The default
    /// pages through the subject's events and keeps the newest (it does not see events where
    /// the person only acted).
    async fn recent_audit_events(
        &self,
        subject: &str,
        actor_id: &str,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let _ = actor_id;
        let mut newest: std::collections::VecDeque<AuditEvent> = Default::default();
        let mut after = None;
        loop {
            let page = self
                .audit_events(&AuditFilter {
                    after_seq: after,
                    subject: Some(subject.to_string()),
                    limit: Some(1000),
                    ..Default::default()
                })
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            for e in page {
                newest.push_back(e);
                if newest.len() > limit as usize {
                    newest.pop_front();
                }
            }
        }
        Ok(newest.into_iter().rev().collect())
    }
}
