//! # gatehouse-runtime
//!
//! What the two binaries share: reading the configuration ([`config`]), building the engine and
//! its adapters from it ([`compose`]), and running due jobs ([`scheduler`]). The server runs the
//! scheduler forever; `gatehouse-cleanup` runs the same due work once and exits.
//!
//! # Layout
//! - [`config`]: the TOML file (resources and policies).
//! - [`env`](mod@env): the environment, read once, and each adapter's settings decoded from it.
//! - [`compose`]: store from `DATABASE_URL`, providers by kind, notifier, directory, audit sink.
//! - [`scheduler`]: sleeps until the next due job, woken early when a nearer one is enqueued.
//! - [`guard`]: time limits around provider and notifier calls, so a hung backend delays one job
//!   instead of stalling a worker.
//! - [`telemetry`]: logging set-up.

pub mod audit_verify;
pub mod compose;
pub mod config;
pub mod env;
pub mod guard;
pub mod maintenance;
pub mod reports;
pub mod scheduler;
pub mod slack_installations;
pub mod telemetry;
pub mod webhook_config;

pub use compose::{App, ComposeError};
pub use config::{Config, ConfigError};
pub use scheduler::{JobScheduler, SchedulerWaker};
