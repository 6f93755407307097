//! # webhooks
//!
//! Event webhooks for Gatehouse: audit events delivered as signed JSON to HTTPS endpoints, so a
//! SIEM, Splunk's HTTP Event Collector or a ticketing bridge can consume them. The format, the
//! signature and the retry policy are documented in `docs/webhooks.md`.
//!
//! - [`signature`]: `X-Gatehouse-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//!   `"<t>.<body>"`, and its verification for receivers written in Rust.
//! - [`payload`]: the JSON body (the `gatehouse` envelope, or Splunk HEC events).
//! - [`client`]: the [`access_core::webhooks::WebhookTransport`] on reqwest: one POST per batch,
//!   the receiver's answer classified into success, retry (with `Retry-After`) and failure.
//!
//! The engine ([`access_core::engine::Engine`]) decides what to send and when; this crate only
//! signs and sends.

pub mod client;
pub mod payload;
pub mod signature;

pub use client::{Secret, WebhookClient, WebhookConfigError, WebhookEndpoint, WebhookFormat};
pub use signature::{SIGNATURE_HEADER, sign, verify};
