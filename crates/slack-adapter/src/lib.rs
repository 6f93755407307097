//! # slack-adapter
//!
//! Gatehouse's Slack face. People type `/access request dev-network 4 Running database migration`
//! (or `/vpn-access …`, or DM the bot `request gcp-access "Need to debug CI"`), approvers click
//! Approve or Deny in a channel, and everybody is told what happened by direct message. The
//! decisions themselves belong to `access_core::Engine`; this crate only speaks Slack.
//!
//! # Layout
//!
//! - [`verify`]: v0 request signatures (HMAC-SHA256 over the raw body, five-minute window,
//!   constant-time compare).
//! - [`grammar`]: the one command parser for `/access`, `/vpn-access` and DMs (pure, unit tested).
//! - [`commands`]: runs a parsed command against the engine and words the reply.
//! - [`mod@router`]: the axum routes `/slack/commands`, `/slack/interactions`, `/slack/events`;
//!   acknowledgement within Slack's 3 s, slow work in tasks, answers via `response_url` or DM.
//!   One file per concern: `slash`, `interactions`, `views`, `events`, `inbox` (the stored
//!   deliveries and their processing), `ack` (answers handed to a waiting acknowledgement).
//! - [`payload`]: Slack's interaction and Events API payloads as typed values, parsed once at the
//!   edge (docs/architecture.md says where and why we go around slack-morphism's models).
//! - [`blocks`]: every message, the request modal and the App Home as Block Kit (pure), built
//!   from slack-morphism's typed blocks; [`blocks::Action`] names every button.
//! - [`notifier`]: [`SlackNotifier`], the `Notifier` port: DMs, the approval message updated in
//!   place, secret files through the external upload flow.
//! - [`api`]: a small Web API client with typed errors (`ok:false`, 429 + `Retry-After`,
//!   `rate_limited`, 5xx pages) mapped to transient or permanent.
//! - [`config`]: [`SlackConfig`] from `SLACK_BOT_TOKEN`, `SLACK_SIGNING_SECRET`, `SLACK_API_URL`,
//!   `APPROVAL_CHANNEL`.
//! - [`oauth`]: installing into many workspaces (OAuth v2 install flow, status, uninstall, token
//!   refresh, `app_uninstalled` / `tokens_revoked`), its HTTP endpoints (`oauth/{client,flow,
//!   events,http}.rs`).
//! - [`installations`]: installations per workspace or Enterprise Grid organisation, the store
//!   trait and an in-memory store; each workspace is served with its own bot token.
//! - [`crypto`]: AES-256-GCM token encryption under `GATEHOUSE_ENCRYPTION_KEY`, with key rotation.
//! - [`socket_mode`]: `SLACK_APP_TOKEN`: the same handlers over Slack's WebSocket, reconnecting.
//! - [`admin_commands`]: `/access admin …` for the admin group (docs/admin-commands.md).
//! - [`ratelimit`]: per-workspace token buckets on the Slack endpoints (docs/rate-limits.md).
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use access_core::{Engine, ports::SystemClock};
//! use slack_adapter::{SlackConfig, SlackNotifier};
//!
//! # async fn wire(store: Arc<dyn access_core::ports::Store>) -> Result<(), Box<dyn std::error::Error>> {
//! let config = SlackConfig::from_lookup(|k| std::env::var(k).ok());
//! let engine = Engine::builder(store, Arc::new(SystemClock))
//!     .notifier(Arc::new(SlackNotifier::new(&config)))
//!     .build()?;
//! let app: axum::Router = slack_adapter::router(Arc::new(engine), config);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

pub mod admin_auth;
pub mod admin_commands;
pub mod api;
pub mod blocks;
pub mod commands;
pub mod config;
pub mod crypto;
mod delegation_cmds;
pub mod emergency;
pub mod grammar;
pub mod installations;
pub mod notifier;
pub mod oauth;
pub mod payload;
pub mod ratelimit;
pub mod router;
pub mod socket_mode;
pub mod verify;

pub use api::{ApiError, SlackApi};
pub use config::SlackConfig;
pub use notifier::SlackNotifier;
pub use router::router;
