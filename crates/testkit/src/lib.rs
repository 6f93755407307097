//! # testkit
//!
//! Test support shared by every crate's tests and the end-to-end suite: faithful fake servers for
//! the services Gatehouse talks to (built from `external-apis.md`, speaking their documented wire
//! formats, including their failure modes), a controllable test provider, and database helpers
//! that run a suite on SQLite or, with `TEST_DATABASE_URL`, PostgreSQL. Not published.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bigquery;
pub mod cloudconnexa;
pub mod db;
pub mod faults;
pub mod gcp;
pub mod gcs;
mod http;
pub mod provider;
pub mod slack;
pub mod slack_oauth;
mod slack_relay;
pub mod slack_socket;
pub mod submission;
pub mod webhook_receiver;
