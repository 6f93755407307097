//! Persistence: the change set a transition writes, the store's error, and the store ports.
//!
//! The store is described by focused traits, so a reader sees which part a caller needs:
//!
//! | trait | what it holds |
//! |---|---|
//! | [`RequestStore`] | requests, grants, decisions, delegations, break-glass records; [`RequestStore::commit`] |
//! | [`JobQueue`] | the durable job queue and the inbox's idempotency keys |
//! | [`AuditLog`] | the audit hash chain: reads and verification |
//! | [`MessageRefs`] | the Slack messages posted about a request |
//! | [`InstallationStore`] | Slack installations (sealed tokens) and OAuth states |
//!
//! [`Store`] is the first four together: what the engine holds as `Arc<dyn Store>`. Every type
//! implementing them is a `Store` (a blanket impl). Installations are apart: only the Slack
//! adapter needs them.

mod audit;
mod installations;
mod jobs;
mod requests;

pub use audit::*;
pub use installations::*;
pub use jobs::*;
pub use requests::*;

use crate::audit::{AuditEvent, AuditRecord};
use crate::grant::Grant;
use crate::ids::JobId;
use crate::jobs::NewJob;
use crate::request::{AccessRequest, Decision};

/// A write to one request row.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestWrite {
    /// A new request; [`StoreError::Duplicate`] if its id exists.
    Insert(AccessRequest),
    /// Compare-and-set: succeeds only if the stored version is still `request.version`; the store
    /// writes every field and sets `version + 1`.
    Update(AccessRequest),
}

/// A write to one grant row.
#[derive(Debug, Clone, PartialEq)]
pub enum GrantWrite {
    /// A new grant; [`StoreError::Duplicate`] if the subject already has a live grant on the
    /// resource.
    Insert(Grant),
    /// Compare-and-set on `grant.version`, as for requests.
    Update(Grant),
}

/// Everything one state transition writes. A store applies all of it in one transaction or none of
/// it: the new state, its audit events and the jobs it causes can never be separated by a crash.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeSet {
    /// Request rows inserted or updated (first).
    pub requests: Vec<RequestWrite>,
    /// Grant rows inserted or updated (after the requests).
    pub grants: Vec<GrantWrite>,
    /// Inserted; one decision per (request, actor): a second one fails with
    /// [`StoreError::Duplicate`].
    pub decisions: Vec<Decision>,
    /// Appended to the hash chain in order.
    pub audit: Vec<AuditRecord>,
    /// Jobs enqueued by the transition.
    pub jobs: Vec<NewJob>,
    /// Some of `jobs` written already claimed by the committing process, which runs them right
    /// after the commit instead of handing them to a scheduler.
    pub claimed: Option<ClaimAtInsert>,
    /// Break-glass records and their reviews.
    pub emergency: Vec<crate::emergency::EmergencyWrite>,
    /// Delegations created or revoked (applied before the audit events).
    pub delegations: Vec<crate::delegation::DelegationWrite>,
}

/// Jobs of a [`ChangeSet`] written `running`, under `token`, leased for `lease` on the store's
/// lease clock (as [`JobQueue::claim_jobs`] would claim them, attempt 1): no scheduler takes them
/// while the process that wrote them runs them; should it die, the lease lapses and any
/// scheduler does.
///
/// A job with an ordering key ([`crate::jobs::JobKind::order_key`]) keeps its place in the
/// order: it is written claimed only if no job of its key is pending or running under another
/// claim, and no earlier change set of the same write has a job of its key. Otherwise it is
/// *held back*: written pending, for a scheduler to claim once the earlier ones are done, and
/// named in [`Committed::held_back`], so the process does not run it. (A decision must not
/// rewrite an approval message whose post has not been recorded yet.) Jobs of one claim token
/// do not hold each other back: the process running them runs them in order.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimAtInsert {
    /// The claim token the jobs are written under.
    pub token: String,
    /// How long the claim lasts before another worker may take the jobs.
    pub lease: chrono::Duration,
    /// Which of the change set's jobs are written claimed.
    pub ids: Vec<JobId>,
}

impl ChangeSet {
    /// Whether the change set writes nothing (a commit of it is a no-op).
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
            && self.grants.is_empty()
            && self.decisions.is_empty()
            && self.audit.is_empty()
            && self.jobs.is_empty()
            && self.emergency.is_empty()
            && self.delegations.is_empty()
    }
}

/// What a commit wrote, as the store sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Committed {
    /// The audit events as sealed into the chain.
    pub audit: Vec<AuditEvent>,
    /// Jobs of the change set's [`ClaimAtInsert`] written pending instead, behind an earlier
    /// job of their ordering key: a scheduler runs them, not the committing process.
    pub held_back: Vec<JobId>,
}

/// The error underneath a [`StoreError`] (a driver's or a decoder's), kept for its chain.
pub type StoreErrorSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store call failed. The engine matches on [`StoreError::Conflict`] and
/// [`StoreError::Duplicate`]; the others are failures to report. Messages name what was being
/// done and never carry stored values or credentials; the driver's error is the `source`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare-and-set lost: someone else changed the row first. Re-read and decide again.
    #[error("conflict: {0} was changed concurrently")]
    Conflict(String),
    /// A unique constraint (one decision per approver, one live grant per subject and resource).
    #[error("duplicate: {0}")]
    Duplicate(String),
    /// The row a write names does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Stored data that does not parse back (corruption, or a newer schema).
    #[error("corrupt row: {what}")]
    Corrupt {
        /// Which row or column, and how it is wrong.
        what: String,
        /// The decoder's error, when there is one.
        #[source]
        source: Option<StoreErrorSource>,
    },
    /// The database failed or refused (unreachable, timed out, a statement rejected, the
    /// schema not migrated).
    #[error("database error: {what}")]
    Database {
        /// What the store was doing.
        what: String,
        /// The driver's error, when there is one.
        #[source]
        source: Option<StoreErrorSource>,
    },
}

impl StoreError {
    /// Stored data that is wrong, with no underlying error to carry.
    pub fn corrupt(what: impl Into<String>) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            source: None,
        }
    }

    /// Stored data that did not decode, with the decoder's error.
    pub fn corrupt_because(what: impl Into<String>, source: impl Into<StoreErrorSource>) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            source: Some(source.into()),
        }
    }

    /// A database failure while doing `what`, with the driver's error.
    pub fn database(what: impl Into<String>, source: impl Into<StoreErrorSource>) -> Self {
        StoreError::Database {
            what: what.into(),
            source: Some(source.into()),
        }
    }

    /// A database failure with no underlying error (a missing migration, a refused URL).
    pub fn database_msg(what: impl Into<String>) -> Self {
        StoreError::Database {
            what: what.into(),
            source: None,
        }
    }

    /// A stable code for the kind of failure, for logs, metrics and API error bodies:
    /// `conflict`, `duplicate`, `not_found`, `corrupt` or `database`.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Conflict(_) => "conflict",
            StoreError::Duplicate(_) => "duplicate",
            StoreError::NotFound(_) => "not_found",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Database { .. } => "database",
        }
    }
}

/// Persistence: every port the engine needs, as one object (`Arc<dyn Store>`). Implementations
/// MUST:
/// - apply a [`ChangeSet`] atomically, returning [`StoreError::Conflict`] (and writing nothing)
///   when any compare-and-set loses;
/// - append audit records to a single hash chain in commit order ([`crate::audit::seal`]);
/// - hand each due job to exactly one claimant at a time;
/// - return [`StoreError::Duplicate`] for a second decision by the same actor on one request and
///   for a second live grant of one subject on one resource.
///
/// Implemented for every type that implements the parts; callers that use only one part can take
/// that trait instead.
pub trait Store: RequestStore + JobQueue + AuditLog + MessageRefs {}

impl<T: RequestStore + JobQueue + AuditLog + MessageRefs + ?Sized> Store for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_sources_kept() {
        let e = StoreError::database("read requests", std::io::Error::other("boom"));
        assert_eq!(e.code(), "database");
        assert_eq!(e.to_string(), "database error: read requests");
        assert_eq!(
            std::error::Error::source(&e).map(|s| s.to_string()),
            Some("boom".to_string())
        );
        assert_eq!(StoreError::corrupt("column x").code(), "corrupt");
        assert_eq!(StoreError::Conflict("r".into()).code(), "conflict");
        assert_eq!(StoreError::Duplicate("r".into()).code(), "duplicate");
        assert_eq!(StoreError::NotFound("r".into()).code(), "not_found");
    }
}
