//! # provider-cloudconnexa
//!
//! Temporary network access in OpenVPN Cloud Connexa, for Gatehouse or for any program that
//! wants it: a client for the Cloud Connexa **v1** REST API and a
//! [`Provider`](access_core::ports::Provider) that grants access by adding the person's Cloud
//! Connexa user to a user group through `secondaryGroupIds` (so their primary group and every
//! other membership stay untouched) and revokes it by removing exactly what the grant added.
//!
//! What it does that the original Python example did not:
//! - finds users by paging through `GET /api/v1/users` (the API has no e-mail filter) with a
//!   cached index, and adds members by `PUT /api/v1/users/{id}` with the full user as read (the
//!   API has no `add_member`);
//! - throttles itself from the `X-RateLimit-*` headers and backs off on 429 (empty body, no
//!   `Retry-After`), so fifty grants at once do not turn into a storm of failures;
//! - records what each grant changed, so revoke leaves pre-existing memberships and memberships
//!   other live grants still need alone, and is idempotent;
//! - caches the network list (`/vpn-access list` and `request` read it on every command).
//!
//! # Layout
//!
//! - [`client`]: [`CloudConnexaClient`], [`ClientConfig`] (token, retries, pagination,
//!   endpoints); [`ratelimit`]: the read/write token buckets and back-off.
//! - [`models`]: networks, users, user groups, pages. [`error`]: [`CloudConnexaError`] and the
//!   error envelope.
//! - [`provider`]: [`CloudConnexaProvider`] (the port's calls, reconciliation); [`settings`]:
//!   [`ProviderConfig`], [`ResourceSettings`]; [`handle`]: [`GrantHandle`], [`GrantIntent`] (the
//!   stored JSON); [`names`]: names of created users.
//! - [`usage`]: [`GroupUsage`] ("does another live grant need this group?") and
//!   [`StoreGroupUsage`] over the Gatehouse store.
//! - [`reconcile`]: [`Drift`] and [`compute_drift`].
//!
//! # Example
//!
//! ```no_run
//! use access_core::ports::Provider;
//! use provider_cloudconnexa::{ClientConfig, CloudConnexaProvider, ProviderConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut cfg = ProviderConfig::new(ClientConfig::new(
//!     "https://acme.api.openvpn.com",
//!     std::env::var("CLOUDCONNEXA_CLIENT_ID")?,
//!     std::env::var("CLOUDCONNEXA_CLIENT_SECRET")?,
//! ));
//! cfg.network_group_mapping.insert("dev-network".into(), "developers".into());
//! let provider = CloudConnexaProvider::new(cfg)?; // or CloudConnexaProvider::from_lookup(|k| std::env::var(k).ok())?
//! assert_eq!(provider.kind(), "cloudconnexa");
//! for n in provider.networks().await? {
//!     println!("{}", n.name);
//! }
//! # Ok(()) }
//! ```
//!
//! `examples/connexa_grant_once.rs` grants and revokes access for one e-mail from the command line.

mod cache;
pub mod client;
pub mod error;
pub mod handle;
pub mod models;
pub mod names;
pub mod provider;
pub mod ratelimit;
pub mod reconcile;
pub mod settings;
pub mod usage;

pub use client::{ClientConfig, ClientStats, CloudConnexaClient, Secret};
pub use error::{CloudConnexaError, ErrorEnvelope, FieldError};
pub use handle::{GrantHandle, GrantIntent};
pub use models::{
    Network, Page, Role, User, UserCreate, UserGroup, UserGroupRequest, UserStatus, UserUpdate,
};
pub use names::names_from_email;
pub use provider::CloudConnexaProvider;
pub use ratelimit::{CallClass, RateHeaders, RateLimitConfig, RateLimiter};
pub use reconcile::{Drift, compute_drift};
pub use settings::{ENV_NETWORK_GROUP_MAPPING, ProviderConfig, ResourceSettings, parse_mapping};
pub use usage::{GroupUsage, GroupUsageQuery, NoOtherUsers, StoreGroupUsage};

/// The README's script examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
