//! Stored deliveries (Slack payloads) handled by a job.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::jobs::InboxItem;

/// Why processing a stored chat delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// Try again later (Slack or the database unreachable, rate limited).
    #[error("temporary failure processing an inbox item: {0}")]
    Transient(String),
    /// Cannot succeed (an unreadable payload).
    #[error("inbox item cannot be processed: {0}")]
    Permanent(String),
}

/// Processes stored chat payloads ([`crate::jobs::JobKind::Inbox`]). The chat adapter
/// implements it and the runtime registers it with [`crate::engine::Engine::set_inbox_handler`],
/// so access-core never depends on the chat tool.
#[async_trait]
pub trait InboxHandler: Send + Sync + Debug + 'static {
    /// Handles one item. Must be safe to call again for the same item after a transient error.
    async fn handle(&self, item: &InboxItem) -> Result<(), InboxError>;
}
