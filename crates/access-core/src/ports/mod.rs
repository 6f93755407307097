//! Ports: the traits adapters implement. access-core never does I/O itself; it drives these.
//!
//! | port | implemented by |
//! |---|---|
//! | [`Store`] | `store-sqlx` (SQLite, PostgreSQL) |
//! | [`Provider`] | `provider-cloudconnexa`, `provider-gcp-iam`, [`crate::providers::DryRunProvider`] |
//! | [`Directory`] | `directory` (org-data index, Slack user groups) |
//! | [`Notifier`] | `slack-adapter`, [`crate::providers::LogNotifier`] |
//! | [`AuditSink`] | `audit-bigquery` |
//! | [`InboxHandler`] | `slack-adapter` (stored Slack deliveries) |
//! | [`Clock`] | [`SystemClock`], and a manual clock in tests |

mod audit_sink;
mod clock;
mod directory;
mod inbox;
mod notifier;
// documented on the store/providers branches
#[allow(missing_docs)]
mod provider;
mod store;

pub use audit_sink::*;
pub use clock::*;
pub use directory::*;
pub use inbox::*;
pub use notifier::*;
pub use provider::*;
pub use store::*;
