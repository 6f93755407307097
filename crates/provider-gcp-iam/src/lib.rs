//! # provider-gcp-iam
//!
//! Temporary Google Cloud access for Gatehouse, after the GCP document (`request gcp-access
//! "…"`): a service account per grant with a reversible name, a key handed to the person once,
//! and a conditional binding `request.time < timestamp('…')` so Google itself ends the access at
//! expiry even if Gatehouse is down. For organisations that forbid keys, `mode =
//! "user_binding"` puts the same conditional binding on the person's own account instead.
//!
//! What it does better than the document: policy writes send version 3 and the etag and redo the
//! whole read-modify-write on 409 `ABORTED`; concurrent changes to one project's policy are
//! batched into one write; re-requests prune old keys (IAM allows 10 per account); a sweep removes
//! expired bindings, their accounts and orphans, and reports each repair for the audit trail.
//!
//! # Layout
//!
//! - [`provider`]: [`GcpIamProvider`] (the `access_core::ports::Provider`, kind `gcp-iam`): the
//!   grant flows, the port's calls and the sweep ([`SweepReport`]).
//! - [`config`]: [`GcpIamConfig`] (environment `GCP_SERVICE_ACCOUNT_JSON`, `GCP_IAM_API_URL`,
//!   `GCP_CRM_API_URL`, `GCP_ACCESS_DRY_RUN`). [`handle`]: [`GcpGrantHandle`] and
//!   [`GcpGrantIntent`], the JSON stored for each grant.
//! - [`settings`]: per-resource settings (`project`, `role`, `mode`, `email_domain`, …).
//! - [`policy`]: pure policy edits and the batching [`policy::PolicyWriter`].
//! - [`api`]: the small reqwest client for IAM v1 and Resource Manager v1.
//! - [`error`]: Google error envelopes as [`GcpError`], typed by HTTP status and `status`.
//! - [`naming`]: the reversible service-account naming scheme.
//! - [`condition`]: the `Temp Access` condition, written exactly, parsed tolerantly.
//! - [`messages`]: the document's messages. [`retry`]: the retry schedules, on
//!   `access_core::backoff::Backoff`.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use access_core::ports::Provider;
//! use provider_gcp_iam::{GcpIamConfig, GcpIamProvider};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let tokens = gcp_auth::ServiceAccountTokenSource::from_lookup(|k| std::env::var(k).ok())?;
//! let provider = GcpIamProvider::new(GcpIamConfig::from_lookup(|k| std::env::var(k).ok()), Arc::new(tokens))?;
//! assert_eq!(provider.kind(), "gcp-iam");
//! // Hourly: remove expired bindings, their accounts and orphans.
//! let report = provider.sweep("my-project-123", chrono::Utc::now()).await?;
//! println!("{} repairs", report.events.len());
//! # Ok(())
//! # }
//! ```
//!
//! The naming scheme on its own:
//!
//! ```
//! use provider_gcp_iam::naming;
//! let (id, reversible) = naming::account_id("jane.doe", 1234567890);
//! assert_eq!((id.as_str(), reversible), ("jane-dot-doe-1234567890", true));
//! let sa = naming::service_account_email(&id, "my-project-123");
//! assert_eq!(
//!     naming::user_email_from_service_account(&sa, Some("example.com")).as_deref(),
//!     Some("jane.doe@example.com")
//! );
//! ```

pub mod api;
pub mod condition;
pub mod config;
pub mod error;
pub mod handle;
pub mod messages;
pub mod naming;
pub mod policy;
pub mod provider;
pub mod retry;
pub mod settings;

pub use config::GcpIamConfig;
pub use error::GcpError;
pub use handle::{GcpGrantHandle, GcpGrantIntent};
pub use provider::{GcpIamProvider, SweepReport};
pub use retry::Backoff;
pub use settings::{AccessMode, GcpIamSettings};

/// The README's script examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
