//! A fake Google Cloud for tests: the OAuth token endpoint, IAM v1 service accounts and keys, and
//! Cloud Resource Manager v1 project IAM policies, on one axum server at `127.0.0.1:0`.
//!
//! It follows `external-apis.md` section B, including the parts that bite:
//! - the token endpoint verifies the RS256 JWT assertion (yup-oauth2's padded base64url, `"sub":
//!   null`, `aud` = the token URL) against the registered public keys and answers 400
//!   `invalid_grant` otherwise; API calls without a bearer token it issued get 401;
//! - service accounts: `accountId` rules (6–30, RFC 1035), 409 `ALREADY_EXISTS`, the
//!   100-accounts quota (429 `RESOURCE_EXHAUSTED` with a day-long `RetryInfo`), an optional
//!   not-found window after creation (IAM reads are eventually consistent), deleted accounts
//!   turning into `deleted:serviceAccount:{email}?uid={id}` members in policies;
//! - keys: base64 key-file JSON in `privateKeyData` (usable against this token endpoint), the
//!   10-keys quota (400 `FAILED_PRECONDITION`), a switch that forbids key creation the way the
//!   organisation policy `iam.disableServiceAccountKeyCreation` does, a system-managed key in
//!   unfiltered listings, millisecond `validAfterTime`;
//! - policies: etags (valid base64), 409 `ABORTED` on a stale etag, version 1 views of
//!   conditional policies (`_withcond_` roles), conditional bindings **dropped** when a client
//!   writes without `version: 3`, `auditConfigs` kept unless the update mask names them,
//!   validation (basic roles cannot carry conditions, members must exist, 1,500 principals);
//! - fault injection per operation and a record of every call.
//!
//! ```no_run
//! # async fn t() {
//! let gcp = testkit::gcp::FakeGcp::start().await;
//! gcp.add_project("demo-project");
//! let key_json = gcp.service_account_key_json(); // token_uri points at the fake
//! # let _ = key_json;
//! # }
//! ```

mod calls;
mod keys;
mod policy;
mod sa_keys;
mod service_accounts;
mod state;
#[cfg(test)]
mod tests;
mod token;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{delete, get, post};
use serde_json::Value;

use crate::http::ServerTask;
use keys::{key_file_json, key_name};
use policy::render_policy;
use state::{GcpState, Sa, Shared};

pub use keys::{OTHER_KEY_PEM, TEST_KEY_PEM, public_key_der};

/// The bot's own account in tests (the `client_email` of [`TEST_KEY_PEM`]'s key JSON).
pub const BOT_EMAIL: &str = "gatehouse-bot@gatehouse-admin.iam.gserviceaccount.com";

/// The operations the fake serves, for fault injection and call counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GcpOp {
    Token,
    CreateServiceAccount,
    GetServiceAccount,
    DeleteServiceAccount,
    ListServiceAccounts,
    CreateKey,
    ListKeys,
    DeleteKey,
    GetIamPolicy,
    SetIamPolicy,
}

/// A failure to inject into the next call(s) of one operation.
#[derive(Debug, Clone)]
pub enum GcpFault {
    /// Answer with this Google error envelope.
    Status {
        code: u16,
        status: &'static str,
        message: String,
    },
    /// Only for `SetIamPolicy`: another writer changes the policy just before this call is handled
    /// (adds `user:concurrent-writer-N@example.com` to `roles/browser`), so the caller's etag is
    /// stale and it gets the real 409 `ABORTED`.
    ConcurrentWrite,
}

impl GcpFault {
    pub fn status(code: u16, status: &'static str) -> Self {
        GcpFault::Status {
            code,
            status,
            message: format!("injected {status}"),
        }
    }
}

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcpCall {
    pub op: GcpOp,
    pub path: String,
    pub status: u16,
}

/// A service account as the fake holds it (for assertions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeServiceAccount {
    pub project: String,
    pub account_id: String,
    pub email: String,
    pub unique_id: String,
    pub display_name: String,
    pub description: String,
    /// Names (`projects/…/keys/{id}`) of the user-managed keys.
    pub keys: Vec<String>,
}

/// The fake. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeGcp {
    url: String,
    state: Shared,
    _task: ServerTask,
}

impl FakeGcp {
    pub async fn start() -> Self {
        let (listener, addr) = crate::http::bind("fake GCP").await;
        let url = format!("http://{addr}");
        let fault_slot = crate::faults::FaultSlot::new(crate::faults::Service::Gcp);
        let state = Arc::new(Mutex::new(GcpState::new(url.clone(), fault_slot.clone())));
        let app = Router::new()
            .route("/token", post(token::token))
            .route(
                "/v1/projects/{project}/serviceAccounts",
                post(service_accounts::create_sa).get(service_accounts::list_sa),
            )
            .route(
                "/v1/projects/{project}/serviceAccounts/{sa}",
                get(service_accounts::get_sa).delete(service_accounts::delete_sa),
            )
            .route(
                "/v1/projects/{project}/serviceAccounts/{sa}/keys",
                post(sa_keys::create_key).get(sa_keys::list_keys),
            )
            .route(
                "/v1/projects/{project}/serviceAccounts/{sa}/keys/{key}",
                delete(sa_keys::delete_key),
            )
            .route("/v1/projects/{name}", post(policy::policy_call))
            .with_state(state.clone());
        let app = fault_slot.wrap(app);
        Self {
            url,
            state,
            _task: crate::http::serve_on(listener, app),
        }
    }

    /// Base URL for IAM and Resource Manager alike (`GCP_IAM_API_URL`, `GCP_CRM_API_URL`).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.url)
    }

    fn st(&self) -> std::sync::MutexGuard<'_, GcpState> {
        self.state.lock().unwrap()
    }

    /// The bot's key file (JSON) with `token_uri` pointing at this fake.
    pub fn service_account_key_json(&self) -> String {
        self.key_json_with(BOT_EMAIL, TEST_KEY_PEM)
    }

    /// A key file for any account and private key (for "wrong key" tests: the fake only accepts
    /// assertions signed by a key registered for that account).
    pub fn key_json_with(&self, client_email: &str, private_key_pem: &str) -> String {
        key_file_json(
            client_email,
            "test-key-id",
            private_key_pem,
            &self.token_url(),
        )
    }

    /// A bearer token the fake accepts, without the JWT exchange.
    pub fn mint_token(&self) -> String {
        let t = format!("ya29.fake-{}", uuid::Uuid::new_v4().simple());
        self.st().tokens.insert(
            t.clone(),
            (
                BOT_EMAIL.to_string(),
                Instant::now() + Duration::from_secs(3600),
            ),
        );
        t
    }

    /// Makes a project exist (unknown projects answer 403 like the real APIs).
    pub fn add_project(&self, project: &str) {
        self.st().projects.entry(project.to_string()).or_default();
    }

    /// Replaces a project's policy (`bindings`, `auditConfigs`) as an administrator would.
    pub fn set_policy(&self, project: &str, policy: Value) {
        let mut st = self.st();
        let p = st.projects.entry(project.to_string()).or_default();
        p.bindings = policy
            .get("bindings")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        p.audit_configs = policy.get("auditConfigs").cloned();
        p.etag_n += 1;
    }

    /// The stored policy as a version-3 reader sees it.
    pub fn policy(&self, project: &str) -> Value {
        let st = self.st();
        st.projects
            .get(project)
            .map(|p| render_policy(p, 3))
            .unwrap_or(Value::Null)
    }

    /// Every call from now on (token calls excepted) consults `injector` (`None`: no more).
    pub fn set_fault_injector(&self, injector: Option<Arc<crate::faults::FaultInjector>>) {
        self.st().fault_slot.set(injector);
    }

    /// Seconds during which a new service account is invisible to reads and key creation.
    pub fn set_not_found_window(&self, window: Duration) {
        self.st().not_found_window = window;
    }

    pub fn set_account_quota(&self, n: usize) {
        self.st().account_quota = n;
    }

    pub fn set_key_quota(&self, n: usize) {
        self.st().key_quota = n;
    }

    /// Behaves like the organisation policy `iam.disableServiceAccountKeyCreation`.
    pub fn forbid_key_creation(&self, forbid: bool) {
        self.st().forbid_keys = forbid;
    }

    /// The next `times` calls of `op` fail with `fault`.
    pub fn inject(&self, op: GcpOp, fault: GcpFault, times: usize) {
        let mut st = self.st();
        for _ in 0..times {
            st.faults.push_back((op, fault.clone()));
        }
    }

    pub fn calls(&self) -> Vec<GcpCall> {
        self.st().calls.clone()
    }

    /// How many calls of `op` arrived (whatever their outcome).
    pub fn count(&self, op: GcpOp) -> usize {
        self.st().calls.iter().filter(|c| c.op == op).count()
    }

    /// Calls that changed something (any mutating operation, whatever the outcome).
    pub fn mutating_calls(&self) -> usize {
        self.st()
            .calls
            .iter()
            .filter(|c| {
                matches!(
                    c.op,
                    GcpOp::CreateServiceAccount
                        | GcpOp::DeleteServiceAccount
                        | GcpOp::CreateKey
                        | GcpOp::DeleteKey
                        | GcpOp::SetIamPolicy
                )
            })
            .count()
    }

    pub fn service_accounts(&self, project: &str) -> Vec<FakeServiceAccount> {
        let st = self.st();
        let Some(p) = st.projects.get(project) else {
            return vec![];
        };
        p.accounts
            .values()
            .map(|sa| FakeServiceAccount {
                project: project.to_string(),
                account_id: sa.account_id.clone(),
                email: sa.email.clone(),
                unique_id: sa.unique_id.clone(),
                display_name: sa.display_name.clone(),
                description: sa.description.clone(),
                keys: sa
                    .keys
                    .iter()
                    .map(|k| key_name(project, &sa.email, &k.id))
                    .collect(),
            })
            .collect()
    }

    /// Creates a service account directly (seeding orphans and pre-existing state).
    pub fn seed_service_account(
        &self,
        project: &str,
        account_id: &str,
        display_name: &str,
        description: &str,
    ) -> String {
        let mut st = self.st();
        st.next_unique += 1;
        let unique_id = st.next_unique.to_string();
        let email = format!("{account_id}@{project}.iam.gserviceaccount.com");
        let p = st.projects.entry(project.to_string()).or_default();
        p.accounts.insert(
            email.clone(),
            Sa {
                account_id: account_id.into(),
                email: email.clone(),
                unique_id,
                display_name: display_name.into(),
                description: description.into(),
                created: Instant::now() - Duration::from_secs(86_400),
                hidden_for: Duration::ZERO,
                keys: vec![],
            },
        );
        email
    }
}
