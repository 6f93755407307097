//! # directory
//!
//! Eligibility sources for Gatehouse: who belongs to which organisation or team, and who is in
//! which Slack user group. It implements access-core's [`Directory`](access_core::ports::Directory)
//! port, so `access_core::policy::check_eligibility` can decide `org = "Hybrid Platforms"` and
//! `slack_group = "S0123"` rules.
//!
//! - **Org data**: the organisational data index of `openshift-eng/cyborg-data`
//!   (`comprehensive_index_dump.json`), read from a local file, an HTTPS URL, or a GCS object
//!   through the GCS JSON API with a Google bearer token. It is parsed once into hash maps
//!   (Slack id → person, e-mail → person, person → every team/org/pillar/team group above them),
//!   so a lookup is a few hash probes (well under a microsecond with 100,000 people). Reloads
//!   run on a schedule and on demand (SIGHUP in the server); a failed reload keeps the last good
//!   index and counts `gatehouse_directory_reload_failures_total`. The index is swapped
//!   atomically: lookups never wait for a reload.
//! - **Slack user groups**: `usergroups.users.list` with the bot token, cached per group with a
//!   TTL, one fetch per group at a time, `Retry-After` honoured, a stale list used for a while
//!   when Slack cannot be reached.
//!
//! Membership follows the GCP document: by Slack user id first, then by the e-mail of the Slack
//! profile. Index not configured or not loaded → `DirectoryError::Unavailable`, shown as
//! "Organizational data service is not available", and nothing is granted.
//!
//! # Layout
//!
//! - [`index`]: the dump's format (the subset in `docs/eligibility.md`) and [`OrgIndex`], the
//!   immutable in-memory index with its lookups.
//! - [`source`]: [`OrgDataSource`] (file, URL, GCS) and fetching with size limits.
//! - [`org`]: [`OrgData`], the live index: `reload()`, `spawn_reloader(interval)`, status, metrics.
//! - [`slack_groups`]: [`SlackUserGroups`], the cached `usergroups.users.list` client.
//! - [`directory`]: [`OrgDirectory`], the `Directory` port over both.
//! - [`config`]: [`DirectoryConfig`] (serde, for the TOML file) and `from_env_with(lookup)` for the GCP
//!   document's `ORG_DATA_BUCKET` / `ORG_DATA_OBJECT_PATH`.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use access_core::ports::Directory;
//! use access_core::{EligibilityRule, Email, Subject};
//! use directory::{OrgData, OrgDirectory, OrgIndex};
//!
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! let dump = br#"{
//!   "lookups": {
//!     "employees": {"jdoe": {"uid": "jdoe", "email": "jdoe@example.com", "slack_uid": "U1"}},
//!     "teams": {"ci": {"name": "ci", "parent": {"name": "Hybrid Platforms", "type": "org"}}},
//!     "orgs": {"Hybrid Platforms": {"name": "Hybrid Platforms"}}
//!   },
//!   "indexes": {"membership": {"membership_index": {"jdoe": [{"name": "ci", "type": "team"}]}}}
//! }"#;
//! let index = OrgIndex::from_json(dump)?;
//! let dir = OrgDirectory::new().with_org_data(Arc::new(OrgData::from_index(index)));
//!
//! let subject = Subject {
//!     team_id: "T1".into(),
//!     user_id: "U1".into(),
//!     email: Some(Email::parse("jdoe@example.com")?),
//!     name: "Jane".into(),
//! };
//! let rule = EligibilityRule::Org("Hybrid Platforms".into());
//! assert!(dir.satisfies(&subject, &rule).await?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! In a server, build it from configuration, load once, then keep it fresh:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # async fn run(google: Arc<dyn gcp_auth::AccessTokenSource>) -> Result<(), Box<dyn std::error::Error>> {
//! let config = directory::DirectoryConfig::from_env_with(|k| std::env::var(k).ok())?; // ORG_DATA_BUCKET, SLACK_BOT_TOKEN, …
//! let dir = config.build(Some(google))?;
//! if let Some(org) = dir.org_data() {
//!     let _ = org.reload().await; // a failure is logged; lookups answer Unavailable until a load succeeds
//!     let _reloader = org.spawn_reloader(config.org_data.as_ref().map(|o| o.reload_interval()).unwrap_or_default());
//!     // on SIGHUP: org.reload().await
//! }
//! # Ok(()) }
//! ```

pub mod config;
pub mod directory;
pub mod index;
pub mod org;
pub mod slack_groups;
pub mod source;

pub use config::{
    ConfigError, DirectoryConfig, OrgDataConfig, OrgDataSourceConfig, SlackGroupsConfig,
};
pub use directory::OrgDirectory;
pub use index::{IndexError, IndexStats, OrgIndex, Person};
pub use org::{OrgData, OrgDataStatus, ReloadOutcome, ReloaderHandle};
pub use slack_groups::{SlackGroupError, SlackGroupsSettings, SlackUserGroups};
pub use source::{GcsObject, LoadError, OrgDataSource};
