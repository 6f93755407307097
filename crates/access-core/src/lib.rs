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
//! # Embedding the engine
//!
//! Other services embed access-core: they open a store, bring the providers that grant access
//! in their world, build an [`Engine`], call its operations and run its job queue.
//! `examples/embed.rs` does all of it over the SQLite store with a provider of its own, taking one
//! request from submission to expiry (`cargo run -p access-core --example embed`; a test runs it
//! too). Its core:
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use access_core::engine::Engine;
//! use access_core::ports::{GrantOutcome, GrantRequest, Provider, ProviderError, ProviderKind};
//! use access_core::ports::{RevokeOutcome, RevokeRequest, SystemClock};
//! use access_core::submission::RawSubmission;
//! use access_core::{Resource, Subject};
//!
//! /// Grants access in your world.
//! #[derive(Debug)]
//! struct MyProvider;
//!
//! #[async_trait::async_trait]
//! impl Provider for MyProvider {
//!     fn kind(&self) -> ProviderKind {
//!         ProviderKind::Custom("mine".into())
//!     }
//!     async fn grant(&self, req: &GrantRequest) -> Result<GrantOutcome, ProviderError> {
//!         // Add `req.subject` to `req.resource` until `req.expires_at`, idempotently.
//!         Ok(GrantOutcome {
//!             handle: serde_json::json!({"grant": req.grant_id.to_string()}),
//!             instructions: "You are in.".into(),
//!             secret: None,
//!             events: Vec::new(),
//!             expires_at: None,
//!         })
//!     }
//!     async fn revoke(&self, _req: &RevokeRequest) -> Result<RevokeOutcome, ProviderError> {
//!         // Remove what `grant` added (by `req.handle`, or `req.intent` when there is none).
//!         Ok(RevokeOutcome::default())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = store_sqlx::SqlStore::connect("sqlite:///var/lib/gatehouse.db?mode=rwc").await?;
//! let resource: Resource = serde_json::from_value(serde_json::json!({
//!     "id": "demo-db", "provider": "mine", "approval": {"mode": "auto"},
//!     "durations": {"default": "1h", "min": "1m", "max": "8h"},
//! }))?;
//! let engine = Engine::builder(Arc::new(store), Arc::new(SystemClock))
//!     .provider_named("mine", Arc::new(MyProvider))
//!     .resources([resource])
//!     .build()?;
//!
//! let subject = Subject {
//!     team_id: "T1".into(),
//!     user_id: "U1".into(),
//!     email: None,
//!     name: "Ada".into(),
//! };
//! let request = engine
//!     .submit_raw(
//!         subject,
//!         &RawSubmission::new("demo-db", Some("2h".into()), "Investigating a slow query"),
//!     )
//!     .await?;
//! assert_eq!(request.status.as_str(), "approved"); // auto: provisioning and expiry are queued
//!
//! // The job queue calls the provider now and takes the access back at its end; a service
//! // runs this in a loop (or uses the lanes of `Engine::claim_lane`).
//! loop {
//!     engine.run_due(100).await?;
//!     tokio::time::sleep(std::time::Duration::from_secs(1)).await;
//! }
//! # }
//! ```
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

#![deny(missing_docs)]

pub mod audit;
pub mod backoff;
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
pub mod text;
pub mod webhooks;

pub use audit::{AuditEvent, AuditKind, AuditRecord};
pub use duration::{AccessDuration, DurationBounds};
pub use engine::{Engine, EngineError, Submission};
pub use grant::{Grant, GrantStatus};
pub use ids::{AuditEventId, GrantId, JobId, RequestId, ResourceId};
pub use request::{AccessRequest, Actor, Decision, DecisionKind, RequestStatus};
pub use resource::{ApprovalPolicy, ApproverSet, EligibilityRule, Justification, Resource};
pub use subject::{Email, Subject, SubjectKey};
