//! # access-core
//!
//! The domain of Gatehouse, a just-in-time access broker: people ask for temporary access to a
//! *resource*, *policy* decides whether they are eligible and who must approve, a *provider*
//! grants the access, and Gatehouse takes it back on time, every time, writing every step to a
//! hash-chained audit trail.
//!
//! This crate does no I/O. It defines the types, the rules, the lifecycle [`engine::Engine`], and
//! the [`ports`] that adapters (databases, Slack, cloud providers, BigQuery) implement.
//!
//! # Layout
//!
//! - [`ids`], [`subject`], [`duration`], [`resource`]: values that are valid once they exist
//!   (`ResourceId`, `Email`, `AccessDuration`, `Justification`).
//! - [`request`]: `AccessRequest` and its state machine; [`grant`]: live access.
//! - [`policy`]: eligibility and approver checks.
//! - [`audit`]: audit events and the hash chain.
//! - [`jobs`]: the durable job queue's vocabulary and backoff.
//! - [`notification`]: what people are told.
//! - [`emergency`]: break-glass grants and their review.
//! - [`ports`]: `Store`, `Provider`, `Directory`, `Notifier`, `AuditSink`, `Clock`.
//! - [`engine`]: submit, approve, deny, cancel, revoke, extend, expire, time out — each one
//!   transaction that writes the new state, its audit event and the jobs it causes.
//! - [`providers`]: the dry-run provider and a log-only notifier.
//!
//! # Example
//!
//! ```
//! use access_core::duration::{AccessDuration, DurationBounds};
//!
//! let bounds = DurationBounds::new("4h".parse()?, "1m".parse()?, "24h".parse()?)?;
//! let d: AccessDuration = "4".parse()?; // a bare number means hours
//! assert_eq!(bounds.check(Some(d))?.secs(), 4 * 3600);
//! assert!(bounds.check(Some("2d".parse()?)).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod audit;
pub mod delegation;
pub mod duration;
pub mod emergency;
pub mod engine;
pub mod escalation;
pub mod grant;
pub mod ids;
pub mod jobs;
pub mod keys;
pub mod limits;
pub mod notification;
pub mod policy;
pub mod ports;
pub mod providers;
pub mod request;
pub mod resource;
pub mod subject;
pub mod submission;
pub mod webhooks;

pub use audit::{AuditEvent, AuditKind, AuditRecord};
pub use duration::{AccessDuration, DurationBounds};
pub use engine::{Engine, EngineError, Submission};
pub use grant::{Grant, GrantStatus};
pub use ids::{AuditEventId, GrantId, JobId, RequestId, ResourceId};
pub use request::{AccessRequest, Actor, Decision, DecisionKind, RequestStatus};
pub use resource::{ApprovalPolicy, ApproverSet, EligibilityRule, Justification, Resource};
pub use subject::{Email, Subject, SubjectKey};
