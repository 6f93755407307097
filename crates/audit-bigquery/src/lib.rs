//! # audit-bigquery
//!
//! Gatehouse's [`AuditSink`](access_core::ports::AuditSink) on BigQuery. Every audit event becomes
//! a row of `access_events` (id, time, kind, actor, subject, resource, request, grant, details,
//! and its place in the hash chain); every `access_granted` event also becomes a row of
//! `access_grants`, the table of the ci-chat-bot GCP access document with its exact schema, so
//! queries written for that bot keep working. Rows go through `tabledata.insertAll` with the event
//! id as `insertId`, at most 500 rows per request, `skipInvalidRows` so one refused row does not
//! hold back the others.
//!
//! It talks to the REST API with `reqwest` and a token from [`gcp_auth::AccessTokenSource`]
//! rather than through a BigQuery SDK: Google's `google-cloud-bigquery` has no `insertAll`, and
//! the community `gcloud-bigquery` compiles `arrow` and the gRPC stack for one POST. The reasons,
//! the tables and the export guarantees are in `docs/audit.md`.
//!
//! `BIGQUERY_API_URL` (default `https://bigquery.googleapis.com`) points it elsewhere, e.g. at
//! `testkit::bigquery::FakeBigQuery` in tests.
//!
//! # Layout
//!
//! - [`config`]: [`BigQueryConfig`] (project, dataset `ci_chat_bot`, table names, base URL,
//!   limits), from the environment or built by hand.
//! - [`schema`]: the two tables' columns and `tables.insert` bodies.
//! - [`rows`]: [`AuditEvent`](access_core::AuditEvent) / [`ExportItem`](access_core::ports::ExportItem)
//!   → `access_events` and `access_grants` rows.
//! - [`client`]: [`BigQueryClient`], the five REST calls used (insertAll, tables.insert/get,
//!   datasets.get/insert) with Google's error envelope parsed.
//! - [`sink`]: [`BigQuerySink`]: the `AuditSink` (batching, splitting, per-row errors, outage
//!   classification) and `create_tables` for `gatehouse-cleanup bigquery init`.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use access_core::ports::{AuditSink, ExportItem};
//! use audit_bigquery::{BigQueryConfig, BigQuerySink};
//!
//! # async fn demo(batch: Vec<ExportItem>) -> Result<(), Box<dyn std::error::Error>> {
//! let config = BigQueryConfig::new("openshift-crt-ephemeral-access")
//!     .with_base_url("http://127.0.0.1:9050"); // or BigQueryConfig::from_lookup(|k| std::env::var(k).ok())?
//! // In production: the yup-oauth2 token source of `gcp-auth`.
//! let token = Arc::new(gcp_auth::StaticToken("test-token".into()));
//! let sink = BigQuerySink::new(config, token)?;
//! sink.create_tables().await?; // once, from `gatehouse-cleanup bigquery init`
//! let report = sink.export(&batch).await?; // Err(Unavailable) → retry the batch later
//! for (event_id, why) in report.rejected {
//!     eprintln!("BigQuery refused {event_id}: {why}");
//! }
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod config;
pub mod error;
pub mod rows;
pub mod schema;
pub mod sink;

pub use client::{BigQueryClient, Created, InsertAllResponse};
pub use config::BigQueryConfig;
pub use error::{ApiError, BigQueryError};
pub use sink::{BigQuerySink, TableStatus};
