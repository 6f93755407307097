//! The directory: eligibility rules that need an outside source of truth.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::resource::EligibilityRule;
use crate::subject::Subject;

/// Why the directory could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The source is not configured or not loaded; nothing can be decided.
    #[error("Organizational data service is not available")]
    Unavailable,
    /// The lookup failed, with the directory's message.
    #[error("directory lookup failed: {0}")]
    Failed(String),
}

/// Membership facts. Used for eligibility rules and approver sets.
#[async_trait]
pub trait Directory: Send + Sync + Debug + 'static {
    /// Does `rule` hold for `subject`? Called only for `org` and `slack_group` rules; `anyone` and
    /// `email_domain` are decided without a directory.
    async fn satisfies(
        &self,
        subject: &Subject,
        rule: &EligibilityRule,
    ) -> Result<bool, DirectoryError>;
}

/// The directory when none is configured: every membership question is unanswerable, so
/// resources that depend on one refuse with a clear message instead of guessing.
#[derive(Debug, Default)]
pub struct NoDirectory;

#[async_trait]
impl Directory for NoDirectory {
    async fn satisfies(
        &self,
        _subject: &Subject,
        _rule: &EligibilityRule,
    ) -> Result<bool, DirectoryError> {
        Err(DirectoryError::Unavailable)
    }
}
