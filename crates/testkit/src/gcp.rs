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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The fake's own service-account key (the bot's credentials in tests). A fixed 2048-bit RSA test key,
/// generated once for this file and used nowhere else: generating keys at test time is slow in debug.
pub const TEST_KEY_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDicEtSyZxluMon\n\
SNxDnXSA3zwkJWfzPvfqG7swrb2/dkIGMS8zgg13D+H+pQxqwIHTz+01DFuLZhsF\n\
FreRsyo4aF5if0XFeTEkyyMDVsmrCbKZ3dBIE8zTwf6ORNpXWt2Lfjf2v0bIpZxr\n\
jI7t6BFgYvvZu2j3bAWmmD2Q+C1QR9yUIfckZ/h3jbrtYoqggdpSmlTOfiNkR9Jh\n\
mMqpYGg7jcFv5nvPF1j4A5SiLiCj09ZbEw8o+f8OsQ7W96eYRaBBENJQejE8+CAg\n\
bf257+P2ZzjMxfBp+t04oq+4g+2lpLmwHexkXHZ6zbnvqTR4WsWNYYPQxdVISrVl\n\
U1G3DulbAgMBAAECggEAGyTgn/3OEz2UciLK+19VIhu15GldgtcXYJzOvYueQDoy\n\
DkxNabcbMRzEzRdGRp0UExWM9xEnqi1lFiDpLtHo65Z19ghmueuIvMM4dm6BbKY+\n\
yYYXBoTlHAoDH1UuoqPLBK1D59QkbT9jtwVu9CL1GPZUqtRLRW78EG1AjW/KqCGe\n\
FMCC1nGqm4IzjVPMoyXg5fwAw6eSqilEbKjWXj/vK/1Xh9R2+Gsq+Dep9GKNw/Zp\n\
2Y06a/z0NGG87uZmMbndwrCgYHpPKd1Ix9BHN0N7UjqDO00zCSvd+pbCmv4U/Syn\n\
thq6xTYB0zLtAroB5f0QMdRv9wChpIbhI3z5xLPZpQKBgQD4y3VVieEkoZ6SuDeu\n\
ga4F20u5dZK+wfKxwA7h52S+Mee2cFlwhvfn3DIHU9Sf3enTlhHo+FKwuaiCvmb2\n\
PkhEgPP/6uwdVIUO8uhjaYVHjZvCchQ+O5wpgRfRNzGEyYdouiyMYXTeyL3yFf11\n\
wZ0BmuPY7qC4/L4S35XSH/MozwKBgQDo/xb46dn1MUXvyi0zpdSHbp2CxcAwrHrU\n\
+tkY7uBkc/s0mXAXtMgEgPMrZ9kIpQ/M3OBj8EuJtBrCBsjCVeXvXjZHtTXj75qR\n\
O03FeQXaSz6rw1y3ph7npNuHdcfI1Uh4Fn+CABZ6Hf6A2gBnh8113Takd0bHIdl+\n\
fJzKRXHBtQKBgBg7QLdPEYWO1DH4DTxK1xcs76glgmBf5XJYgVqRPeekVqwXLy7d\n\
hmGnuZurF4dmhrKb6Cynmu4pdvcc8kxDbqh1Ys5nJA4LQFZfZDDigx+f9C6xC7Wv\n\
+pq0PwyacpE7S5vwngwiJc7ZAF8Gs0P30oHogw6K106NFzohWqc3g2hTAoGAY1mK\n\
SR8mIigdgy75cUFvy0P+g+mgluClC7Xe5oPNSOgvoHEg2+rpMwptJgAFCmufviIc\n\
yGCJRTF4C23rIvqPri7FBHSfgw8DIJRiCCcfuMJG+eS231RFb07bkPpG8zsGyLYH\n\
Lr6s1ut9PyI18+9zS6PFDgISOw0S+Z1XGeTcqdUCgYEAiNF7tq8PJIPWNyc1qK3r\n\
viM/EpjXB3dSwRtJMQjNFzKQB+5biHozsbVu58G5RC7WUp8+7r8mvM3x1cZX0FFj\n\
SyBgUYk071vVqmGnSaw5brfJhTGMS8Lz+obcnORRAwSX1TNH2dD8OojrjgbwnQBf\n\
z1QF5IhBTAZCrVGieB/dwco=\n\
-----END PRIVATE KEY-----\n\
";

/// A second fixed test key: inside every key `keys.create` hands out, and for "signed with the
/// wrong key" tests.
pub const OTHER_KEY_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCtowyM2o2G1Xxm\n\
MWk1Xbg8jv5E9j7Q/G0/OuZeJe/XYnWbXeXuNwxw7zkERWNcWi7UGdF5AdC+izeA\n\
Tg/cyfPS9K9zfRAn4ktFAbUDfSmNUjHbwHINCOPi6VS19dEYb7Y+BynY7TVgmbni\n\
9U/Qd8+7QSHtCEEdj41EsObCzYBJwJQiUNQOO/ipfvCiXfCu8lzDKzsseparBclh\n\
OC4t4pq6BD2o7FPy2XXEVsVeJaATunL7Urxi2A25P5VJ+itM02qEL20xIUgWyrE3\n\
DryayBnGko/RVSOYsII26+4ByLnVBcodMLiNyTcsxR5y9Q6Tczxy/QOFhltJ2B4P\n\
W0L6i7pHAgMBAAECggEASj+GhlSOYDG52BkY2/EPbxXWNLb3dXX7YSZWi7u9K2S2\n\
1ZD5WTvA3intP55MNpl5nMjNgej80f3F5d97ePYChRqMS94WondpqEBqnutOcVfM\n\
aiOIoXpDuCv+RTCwELr0OuHlSxVj1cLmcd5kGsig03mugCUfcvyHc/ARPQuS5/Xz\n\
khVPmI5i9fOvSdpTwwPok0tfLd8ci6HJHRDJES6GSbuBBtXnf7dTokmJYM5r3oH/\n\
OJXi0jkAnVdipEb9mo6ifB8vAIUFaMVmneqT06O52tulUKDKNhs5VzGYx/hPd2WM\n\
nPeVt4+796DzKyVoUZuZpcrHQshPXNSYyciWRlwhwQKBgQDv3C+u7yvdCQfT1Gp1\n\
/CcyWeTLDiVz64eiAXtoAbWi0itLkkXzn14edZXcEEfjUOOgpCbYE/ACRWvWcACA\n\
RYIKZWhfH26wwD5GAI9uq12RQT9NjQvu//BWKwlKLG+e0GB3x1q3GsSjXo+VzHl7\n\
aIrXwR+DNFlXu5jAoRycLNvQawKBgQC5UhtIgvtk4vsMKinfbV7T9vEOw6fXKHOD\n\
ieMohUOgyqwMmGCG3HHiEnz8gLtY0L5vADt/99U8uUDavBIPR88ZuALzw1Gh9HL+\n\
EuV0ZEaHEndJK5onA4tXEY8JU9cHJJvuQ/dOQ69oG/6f/6KkIZc+m3ZWwbkpgqoo\n\
K4KK5X1ElQKBgQDfNgy5wqETJSA/pOEdwvXHCZi8zgFUis7BmJd7Bnw9dVANF6Y5\n\
PQmdVteK3yvHArOR/rCXTJaBxpDAEaKlvAl0G0KxotKjcYOCKWtRFfARCKMcTDHa\n\
zBqgVZRjjk6hgFEFpmNpGmP7lDgSsyIqEfODLJlixAiQeGeCe2vgem5k2QKBgH6N\n\
VVhVKfuhDTMnb+TFuWYiUkd00R8a3pdLCDbZmm8pOAh53iD6VUK+wV9lQYrLMeB3\n\
VipzQcjv8RvuJp8MuJ6ljE6OaSah2g0rNkofWBJRR+hNwD04LGVO9lC2UjbshxdU\n\
joOBsTz1MRJt7dELp073tv5T2HBCbJR18fWL9dlpAoGBAKGhqvCMgq+ICtfafG7L\n\
bjKC5pcs7Z5jnknZ2ySOh+xxcmXRt6wh3iL6oWrkf6vSCvhK2zHVnn6c4P5oZYFU\n\
UY74M8OPateT0rZcJO0yDzLTauAnZ9IV0lg/6vzCL+I/WZWpx9qEkjHBVFiZkVdi\n\
Q1PxW+IieC32zM8StTp4rUUd\n\
-----END PRIVATE KEY-----\n\
";

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

#[derive(Debug, Clone)]
struct Key {
    id: String,
    valid_after: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone)]
struct Sa {
    account_id: String,
    email: String,
    unique_id: String,
    display_name: String,
    description: String,
    created: Instant,
    /// Invisible this long after `created` whatever the fake's window (an injected
    /// `NotFoundAfterCreate`).
    hidden_for: Duration,
    keys: Vec<Key>,
}

impl Sa {
    /// Still in its eventual-consistency window: reads and policies do not see it yet.
    fn hidden(&self, window: Duration) -> bool {
        self.created.elapsed() < window.max(self.hidden_for)
    }
}

#[derive(Debug, Default)]
struct Project {
    accounts: BTreeMap<String, Sa>,
    bindings: Vec<Value>,
    audit_configs: Option<Value>,
    etag_n: u64,
}

impl Project {
    fn etag(&self) -> String {
        STANDARD.encode(format!("etag-{:08}", self.etag_n))
    }
}

#[derive(Debug)]
struct GcpState {
    base_url: String,
    projects: BTreeMap<String, Project>,
    /// Public keys (DER `RSAPublicKey`) by client e-mail, with the key id.
    signing_keys: HashMap<String, Vec<(String, Vec<u8>)>>,
    tokens: HashMap<String, (String, Instant)>,
    not_found_window: Duration,
    account_quota: usize,
    key_quota: usize,
    forbid_keys: bool,
    faults: VecDeque<(GcpOp, GcpFault)>,
    calls: Vec<GcpCall>,
    concurrent_writes: u64,
    next_unique: u64,
    fault_slot: crate::faults::FaultSlot,
}

/// The fake. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeGcp {
    url: String,
    state: Arc<Mutex<GcpState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGcp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = Arc<Mutex<GcpState>>;

impl FakeGcp {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake GCP");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let fault_slot = crate::faults::FaultSlot::new(crate::faults::Service::Gcp);
        let mut signing_keys = HashMap::new();
        signing_keys.insert(
            BOT_EMAIL.to_string(),
            vec![("bot-key".to_string(), public_key_der(TEST_KEY_PEM))],
        );
        let state = Arc::new(Mutex::new(GcpState {
            base_url: url.clone(),
            projects: BTreeMap::new(),
            signing_keys,
            tokens: HashMap::new(),
            not_found_window: Duration::ZERO,
            account_quota: 100,
            key_quota: 10,
            forbid_keys: false,
            faults: VecDeque::new(),
            calls: Vec::new(),
            concurrent_writes: 0,
            next_unique: 100_000_000_000_000_000,
            fault_slot: fault_slot.clone(),
        }));
        let app = Router::new()
            .route("/token", post(token))
            .route(
                "/v1/projects/{project}/serviceAccounts",
                post(create_sa).get(list_sa),
            )
            .route(
                "/v1/projects/{project}/serviceAccounts/{sa}",
                get(get_sa).delete(delete_sa),
            )
            .route(
                "/v1/projects/{project}/serviceAccounts/{sa}/keys",
                post(create_key).get(list_keys),
            )
            .route(
                "/v1/projects/{project}/serviceAccounts/{sa}/keys/{key}",
                axum::routing::delete(delete_key),
            )
            .route("/v1/projects/{name}", post(policy_call))
            .with_state(state.clone())
            .layer(axum::middleware::from_fn_with_state(
                fault_slot,
                crate::faults::layer,
            ));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, task }
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

fn key_name(project: &str, email: &str, id: &str) -> String {
    format!("projects/{project}/serviceAccounts/{email}/keys/{id}")
}

fn key_file_json(client_email: &str, key_id: &str, pem: &str, token_uri: &str) -> String {
    let project = client_email
        .split('@')
        .nth(1)
        .and_then(|d| d.split('.').next())
        .unwrap_or("unknown");
    serde_json::to_string_pretty(&json!({
        "type": "service_account",
        "project_id": project,
        "private_key_id": key_id,
        "private_key": pem,
        "client_email": client_email,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{}", client_email.replace('@', "%40")),
        "universe_domain": "googleapis.com"
    }))
    .unwrap()
}

/// DER `RSAPublicKey` of a PKCS#8 PEM private key.
pub fn public_key_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(b64.trim()).expect("PEM body is base64");
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).expect("PKCS#8 RSA key");
    use ring::signature::KeyPair as _;
    pair.public_key().as_ref().to_vec()
}

// ------------------------------------------------------------------------------------------------
// Responses

fn google_error(code: u16, status: &str, message: &str) -> Response {
    google_error_details(code, status, message, json!([]))
}

fn google_error_details(code: u16, status: &str, message: &str, details: Value) -> Response {
    let reason = match status {
        "NOT_FOUND" => "notFound",
        "ALREADY_EXISTS" => "alreadyExists",
        "ABORTED" => "aborted",
        "FAILED_PRECONDITION" => "failedPrecondition",
        "PERMISSION_DENIED" => "forbidden",
        "UNAUTHENTICATED" => "unauthorized",
        "RESOURCE_EXHAUSTED" => "rateLimitExceeded",
        _ => "badRequest",
    };
    let mut err = json!({
        "code": code, "message": message, "status": status,
        "errors": [{"message": message, "domain": "global", "reason": reason}],
    });
    if details.as_array().is_some_and(|d| !d.is_empty()) {
        err["details"] = details;
    }
    let sc = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (sc, axum::Json(json!({ "error": err }))).into_response()
}

fn ok_json(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

/// Records the call and settles auth and injected faults. `Err` is the response to send.
// A test fake answering one request at a time: the size of the error response does not matter.
#[allow(clippy::result_large_err)]
fn begin(st: &mut GcpState, op: GcpOp, path: &str, headers: &HeaderMap) -> Result<(), Response> {
    let result = (|| {
        let token = headers
            .get("authorization")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        match st.tokens.get(token) {
            Some((_, exp)) if *exp > Instant::now() => {}
            _ => {
                return Err(google_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                ));
            }
        }
        if let Some(i) = st.faults.iter().position(|(o, _)| *o == op) {
            let (_, fault) = st.faults.remove(i).expect("index exists");
            match fault {
                GcpFault::Status {
                    code,
                    status,
                    message,
                } => return Err(google_error(code, status, &message)),
                GcpFault::ConcurrentWrite => {
                    st.concurrent_writes += 1;
                    let n = st.concurrent_writes;
                    let project = path
                        .trim_start_matches("/v1/projects/")
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    if let Some(p) = st.projects.get_mut(&project) {
                        let member = json!(format!("user:concurrent-writer-{n}@example.com"));
                        match p
                            .bindings
                            .iter_mut()
                            .find(|b| b["role"] == "roles/browser" && b.get("condition").is_none())
                        {
                            Some(b) => b["members"].as_array_mut().expect("members").push(member),
                            None => p
                                .bindings
                                .push(json!({"role": "roles/browser", "members": [member]})),
                        }
                        p.etag_n += 1;
                    }
                }
            }
        }
        Ok(())
    })();
    let status = match &result {
        Ok(()) => 0,
        Err(r) => r.status().as_u16(),
    };
    st.calls.push(GcpCall {
        op,
        path: path.to_string(),
        status,
    });
    result
}

/// Fixes up the status of the call recorded by [`begin`].
fn finish(st: &mut GcpState, resp: Response) -> Response {
    if let Some(c) = st.calls.last_mut()
        && c.status == 0
    {
        c.status = resp.status().as_u16();
    }
    resp
}

// ------------------------------------------------------------------------------------------------
// OAuth token endpoint

fn b64url_lenient(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

fn invalid_grant(desc: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": "invalid_grant", "error_description": desc})),
    )
        .into_response()
}

async fn token(State(state): State<Shared>, body: Bytes) -> Response {
    let mut st = state.lock().unwrap();
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let resp = check_assertion(&mut st, &form);
    st.calls.push(GcpCall {
        op: GcpOp::Token,
        path: "/token".into(),
        status: resp.status().as_u16(),
    });
    resp
}

fn check_assertion(st: &mut GcpState, form: &HashMap<String, String>) -> Response {
    if let Some(i) = st.faults.iter().position(|(o, _)| *o == GcpOp::Token) {
        let (_, f) = st.faults.remove(i).expect("index exists");
        if let GcpFault::Status { code, .. } = f {
            let sc = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (sc, axum::Json(json!({"error": "internal_failure"}))).into_response();
        }
    }
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}))).into_response();
    }
    let Some(assertion) = form.get("assertion") else {
        return invalid_grant("Missing required parameter: assertion");
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 {
        return invalid_grant(
            "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe",
        );
    }
    let (Some(h), Some(c), Some(sig)) = (
        b64url_lenient(parts[0]),
        b64url_lenient(parts[1]),
        b64url_lenient(parts[2]),
    ) else {
        return invalid_grant("Invalid JWT: bad base64");
    };
    let (Ok(header), Ok(claims)) = (
        serde_json::from_slice::<Value>(&h),
        serde_json::from_slice::<Value>(&c),
    ) else {
        return invalid_grant("Invalid JWT: bad JSON");
    };
    if header["alg"] != "RS256" {
        return invalid_grant("Invalid JWT: unsupported alg");
    }
    let iss = claims["iss"].as_str().unwrap_or_default().to_string();
    if claims["aud"].as_str() != Some(&format!("{}/token", st.base_url)) {
        return invalid_grant("Invalid JWT: audience is not the token endpoint");
    }
    if !(claims["sub"].is_null() || claims["sub"].is_string()) {
        return invalid_grant("Invalid JWT: bad sub");
    }
    if claims["scope"].as_str().is_none_or(|s| s.trim().is_empty()) {
        return invalid_grant("Invalid JWT: no scope");
    }
    let now = chrono::Utc::now().timestamp();
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return invalid_grant("Invalid JWT: iat/exp missing");
    };
    if iat > now + 300 || exp <= now || exp - iat > 3600 {
        return invalid_grant(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    let signed = format!("{}.{}", parts[0], parts[1]);
    let verified = st.signing_keys.get(&iss).is_some_and(|keys| {
        keys.iter().any(|(_, der)| {
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                der,
            )
            .verify(signed.as_bytes(), &sig)
            .is_ok()
        })
    });
    if !verified {
        return invalid_grant("Invalid JWT Signature.");
    }
    let t = format!("ya29.fake-{}", uuid::Uuid::new_v4().simple());
    st.tokens
        .insert(t.clone(), (iss, Instant::now() + Duration::from_secs(3600)));
    ok_json(json!({"access_token": t, "expires_in": 3599, "token_type": "Bearer"}))
}

// ------------------------------------------------------------------------------------------------
// IAM: service accounts

fn valid_account_id(id: &str) -> bool {
    let b = id.as_bytes();
    (6..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

fn no_project(project: &str) -> Response {
    google_error(
        403,
        "PERMISSION_DENIED",
        &format!("Permission denied on resource project {project} (or it may not exist)."),
    )
}

fn sa_json(project: &str, sa: &Sa) -> Value {
    json!({
        "name": format!("projects/{project}/serviceAccounts/{}", sa.email),
        "projectId": project,
        "uniqueId": sa.unique_id,
        "email": sa.email,
        "displayName": sa.display_name,
        "description": sa.description,
        "etag": "MDEwMjE5MjA=",
        "oauth2ClientId": sa.unique_id,
    })
}

/// Finds a visible account by e-mail or unique id.
fn find_sa<'a>(p: &'a mut Project, sa: &str, window: Duration) -> Option<&'a mut Sa> {
    let key = p
        .accounts
        .iter()
        .find(|(e, a)| *e == sa || a.unique_id == sa)
        .map(|(e, _)| e.clone())?;
    let acc = p.accounts.get_mut(&key)?;
    if acc.hidden(window) { None } else { Some(acc) }
}

fn sa_missing(sa: &str) -> Response {
    google_error(
        404,
        "NOT_FOUND",
        &format!("Service account projects/-/serviceAccounts/{sa} not found."),
    )
}

async fn create_sa(
    State(state): State<Shared>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = state.lock().unwrap();
    let path = format!("/v1/projects/{project}/serviceAccounts");
    if let Err(r) = begin(&mut st, GcpOp::CreateServiceAccount, &path, &headers) {
        return r;
    }
    let resp = (|| {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let id = body["accountId"].as_str().unwrap_or_default().to_string();
        let display = body["serviceAccount"]["displayName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let description = body["serviceAccount"]["description"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !valid_account_id(&id) {
            return google_error(
                400,
                "INVALID_ARGUMENT",
                &format!(
                    "Invalid account id {id}: must be 6-30 characters and match [a-z]([-a-z0-9]*[a-z0-9])."
                ),
            );
        }
        if display.len() > 100 || description.len() > 256 {
            return google_error(
                400,
                "INVALID_ARGUMENT",
                "displayName or description too long.",
            );
        }
        let quota = st.account_quota;
        let hidden_for = match (crate::faults::injected(&headers), st.fault_slot.get()) {
            (Some(crate::faults::FaultKind::NotFoundAfterCreate), Some(inj)) => {
                inj.plan().not_found_window
            }
            _ => Duration::ZERO,
        };
        st.next_unique += 1;
        let unique_id = st.next_unique.to_string();
        let Some(p) = st.projects.get_mut(&project) else {
            return no_project(&project);
        };
        let email = format!("{id}@{project}.iam.gserviceaccount.com");
        if p.accounts.contains_key(&email) {
            return google_error(
                409,
                "ALREADY_EXISTS",
                &format!("Service account {id} already exists within project projects/{project}."),
            );
        }
        if p.accounts.len() >= quota {
            return google_error_details(
                429,
                "RESOURCE_EXHAUSTED",
                "Maximum number of service accounts on project reached.",
                json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "86401s"}]),
            );
        }
        let sa = Sa {
            account_id: id,
            email: email.clone(),
            unique_id,
            display_name: display,
            description,
            created: Instant::now(),
            hidden_for,
            keys: vec![],
        };
        let out = sa_json(&project, &sa);
        p.accounts.insert(email, sa);
        ok_json(out)
    })();
    finish(&mut st, resp)
}

async fn get_sa(
    State(state): State<Shared>,
    Path((project, sa)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut st = state.lock().unwrap();
    if let Err(r) = begin(
        &mut st,
        GcpOp::GetServiceAccount,
        &format!("/v1/projects/{project}/serviceAccounts/{sa}"),
        &headers,
    ) {
        return r;
    }
    let window = st.not_found_window;
    let resp = match st.projects.get_mut(&project) {
        None => no_project(&project),
        Some(p) => match find_sa(p, &sa, window) {
            Some(acc) => {
                let acc = acc.clone();
                ok_json(sa_json(&project, &acc))
            }
            None => sa_missing(&sa),
        },
    };
    finish(&mut st, resp)
}

async fn delete_sa(
    State(state): State<Shared>,
    Path((project, sa)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut st = state.lock().unwrap();
    if let Err(r) = begin(
        &mut st,
        GcpOp::DeleteServiceAccount,
        &format!("/v1/projects/{project}/serviceAccounts/{sa}"),
        &headers,
    ) {
        return r;
    }
    let resp = (|| {
        let Some(p) = st.projects.get_mut(&project) else {
            return no_project(&project);
        };
        // Deletion is a write: sequentially consistent, so no not-found window here.
        let Some(key) = p
            .accounts
            .iter()
            .find(|(e, a)| *e == &sa || a.unique_id == sa)
            .map(|(e, _)| e.clone())
        else {
            return sa_missing(&sa);
        };
        let removed = p.accounts.remove(&key).expect("present");
        st.signing_keys.remove(&removed.email);
        // Policies keep referring to the account, under its deleted name.
        let old = format!("serviceAccount:{}", removed.email);
        let new = format!(
            "deleted:serviceAccount:{}?uid={}",
            removed.email, removed.unique_id
        );
        for proj in st.projects.values_mut() {
            let mut touched = false;
            for b in proj.bindings.iter_mut() {
                if let Some(ms) = b["members"].as_array_mut() {
                    for m in ms.iter_mut() {
                        if m.as_str() == Some(old.as_str()) {
                            *m = json!(new);
                            touched = true;
                        }
                    }
                }
            }
            if touched {
                proj.etag_n += 1;
            }
        }
        ok_json(json!({}))
    })();
    finish(&mut st, resp)
}

async fn list_sa(
    State(state): State<Shared>,
    Path(project): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let mut st = state.lock().unwrap();
    if let Err(r) = begin(
        &mut st,
        GcpOp::ListServiceAccounts,
        &format!("/v1/projects/{project}/serviceAccounts"),
        &headers,
    ) {
        return r;
    }
    let q: HashMap<String, String> =
        serde_urlencoded::from_str(q.as_deref().unwrap_or("")).unwrap_or_default();
    let size = q
        .get("pageSize")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let start = q
        .get("pageToken")
        .and_then(|s| STANDARD.decode(s).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let window = st.not_found_window;
    let resp = match st.projects.get(&project) {
        None => no_project(&project),
        Some(p) => {
            // Reads are eventually consistent: brand-new accounts may be missing from a listing.
            let visible: Vec<&Sa> = p.accounts.values().filter(|a| !a.hidden(window)).collect();
            let page: Vec<Value> = visible
                .iter()
                .skip(start)
                .take(size)
                .map(|a| sa_json(&project, a))
                .collect();
            let mut out = json!({ "accounts": page });
            if start + size < visible.len() {
                out["nextPageToken"] = json!(STANDARD.encode((start + size).to_string()));
            }
            ok_json(out)
        }
    };
    finish(&mut st, resp)
}

// ------------------------------------------------------------------------------------------------
// IAM: keys

async fn create_key(
    State(state): State<Shared>,
    Path((project, sa)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut st = state.lock().unwrap();
    if let Err(r) = begin(
        &mut st,
        GcpOp::CreateKey,
        &format!("/v1/projects/{project}/serviceAccounts/{sa}/keys"),
        &headers,
    ) {
        return r;
    }
    let resp = (|| {
        let window = st.not_found_window;
        let forbid = st.forbid_keys;
        let quota = st.key_quota;
        let token_uri = format!("{}/token", st.base_url);
        let Some(p) = st.projects.get_mut(&project) else {
            return no_project(&project);
        };
        let Some(acc) = find_sa(p, &sa, window) else {
            return sa_missing(&sa);
        };
        if forbid {
            return google_error_details(
                400,
                "FAILED_PRECONDITION",
                "Key creation is not allowed on this service account.",
                json!([{"@type": "type.googleapis.com/google.rpc.PreconditionFailure",
                        "violations": [{"type": "constraints/iam.disableServiceAccountKeyCreation",
                                        "subject": format!("projects/{project}"),
                                        "description": "Key creation is not allowed on this service account."}]}]),
            );
        }
        if acc.keys.len() >= quota {
            return google_error(400, "FAILED_PRECONDITION", "Precondition check failed.");
        }
        let id = hex::encode(&uuid::Uuid::new_v4().as_bytes()[..])
            + &hex::encode(&uuid::Uuid::new_v4().as_bytes()[..4]);
        let now = chrono::Utc::now();
        let file = key_file_json(&acc.email, &id, OTHER_KEY_PEM, &token_uri);
        acc.keys.push(Key {
            id: id.clone(),
            valid_after: now,
        });
        let email = acc.email.clone();
        let out = json!({
            "name": key_name(&project, &email, &id),
            "privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE",
            "privateKeyData": STANDARD.encode(file),
            "validAfterTime": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "validBeforeTime": "9999-12-31T23:59:59Z",
            "keyAlgorithm": "KEY_ALG_RSA_2048",
            "keyOrigin": "GOOGLE_PROVIDED",
            "keyType": "USER_MANAGED",
        });
        st.signing_keys
            .entry(email)
            .or_default()
            .push((id, public_key_der(OTHER_KEY_PEM)));
        ok_json(out)
    })();
    finish(&mut st, resp)
}

async fn list_keys(
    State(state): State<Shared>,
    Path((project, sa)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let mut st = state.lock().unwrap();
    if let Err(r) = begin(
        &mut st,
        GcpOp::ListKeys,
        &format!("/v1/projects/{project}/serviceAccounts/{sa}/keys"),
        &headers,
    ) {
        return r;
    }
    let q = q.unwrap_or_default();
    let types: Vec<&str> = q
        .split('&')
        .filter_map(|kv| kv.strip_prefix("keyTypes="))
        .collect();
    let window = st.not_found_window;
    let resp = match st.projects.get_mut(&project) {
        None => no_project(&project),
        Some(p) => match find_sa(p, &sa, window) {
            None => sa_missing(&sa),
            Some(acc) => {
                let mut keys: Vec<Value> = Vec::new();
                if types.is_empty() || types.contains(&"SYSTEM_MANAGED") {
                    keys.push(json!({
                        "name": key_name(&project, &acc.email, "ffffffffffffffffffffffffffffffffffffff00"),
                        "validAfterTime": "2026-01-01T00:00:00Z", "validBeforeTime": "2026-01-17T00:00:00Z",
                        "keyAlgorithm": "KEY_ALG_RSA_2048", "keyOrigin": "GOOGLE_PROVIDED", "keyType": "SYSTEM_MANAGED"
                    }));
                }
                if types.is_empty() || types.contains(&"USER_MANAGED") {
                    for k in &acc.keys {
                        keys.push(json!({
                            "name": key_name(&project, &acc.email, &k.id),
                            "validAfterTime": k.valid_after.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                            "validBeforeTime": "9999-12-31T23:59:59Z",
                            "keyAlgorithm": "KEY_ALG_RSA_2048", "keyOrigin": "GOOGLE_PROVIDED", "keyType": "USER_MANAGED"
                        }));
                    }
                }
                ok_json(json!({ "keys": keys }))
            }
        },
    };
    finish(&mut st, resp)
}

async fn delete_key(
    State(state): State<Shared>,
    Path((project, sa, key)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut st = state.lock().unwrap();
    if let Err(r) = begin(
        &mut st,
        GcpOp::DeleteKey,
        &format!("/v1/projects/{project}/serviceAccounts/{sa}/keys/{key}"),
        &headers,
    ) {
        return r;
    }
    let resp = (|| {
        let Some(p) = st.projects.get_mut(&project) else {
            return no_project(&project);
        };
        let Some(acc) = p
            .accounts
            .values_mut()
            .find(|a| a.email == sa || a.unique_id == sa)
        else {
            return sa_missing(&sa);
        };
        let Some(i) = acc.keys.iter().position(|k| k.id == key) else {
            return google_error(
                404,
                "NOT_FOUND",
                &format!("Service account key {key} does not exist."),
            );
        };
        acc.keys.remove(i);
        let email = acc.email.clone();
        if let Some(v) = st.signing_keys.get_mut(&email) {
            v.retain(|(id, _)| id != &key);
        }
        ok_json(json!({}))
    })();
    finish(&mut st, resp)
}

// ------------------------------------------------------------------------------------------------
// Resource Manager: project IAM policy

fn is_conditional(b: &Value) -> bool {
    b.get("condition").is_some_and(|c| !c.is_null())
}

fn render_policy(p: &Project, requested: i64) -> Value {
    let conditional = p.bindings.iter().any(is_conditional);
    let bindings: Vec<Value> = if requested >= 3 || !conditional {
        p.bindings.clone()
    } else {
        // What a version-1 reader of a conditional policy gets: conditions hidden behind
        // `_withcond_` role names.
        p.bindings
            .iter()
            .map(|b| {
                if is_conditional(b) {
                    let h = hex::encode(&Sha256::digest(b["condition"].to_string().as_bytes())[..8]);
                    json!({"role": format!("{}_withcond_{h}", b["role"].as_str().unwrap_or("")), "members": b["members"]})
                } else {
                    b.clone()
                }
            })
            .collect()
    };
    let mut out = json!({
        "version": if conditional && requested >= 3 { 3 } else { 1 },
        "etag": p.etag(),
        "bindings": bindings,
    });
    if let Some(a) = &p.audit_configs {
        out["auditConfigs"] = a.clone();
    }
    out
}

async fn policy_call(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((project, method)) = name.split_once(':') else {
        return google_error(404, "NOT_FOUND", "Method not found.");
    };
    let op = match method {
        "getIamPolicy" => GcpOp::GetIamPolicy,
        "setIamPolicy" => GcpOp::SetIamPolicy,
        _ => return google_error(404, "NOT_FOUND", "Method not found."),
    };
    let mut st = state.lock().unwrap();
    if let Err(r) = begin(&mut st, op, &format!("/v1/projects/{name}"), &headers) {
        return r;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    let resp = if op == GcpOp::GetIamPolicy {
        match st.projects.get(project) {
            None => no_project(project),
            Some(p) => ok_json(render_policy(
                p,
                body["options"]["requestedPolicyVersion"]
                    .as_i64()
                    .unwrap_or(0),
            )),
        }
    } else {
        set_policy(&mut st, project, &body)
    };
    finish(&mut st, resp)
}

const BASIC_ROLES: [&str; 3] = ["roles/owner", "roles/editor", "roles/viewer"];
const MEMBER_PREFIXES: [&str; 8] = [
    "user:",
    "serviceAccount:",
    "group:",
    "domain:",
    "deleted:",
    "principal://",
    "principalSet://",
    "projectOwner:",
];

fn set_policy(st: &mut GcpState, project: &str, body: &Value) -> Response {
    let window = st.not_found_window;
    let visible_accounts: HashMap<String, bool> = st
        .projects
        .values()
        .flat_map(|p| {
            p.accounts
                .values()
                .map(|a| (a.email.clone(), !a.hidden(window)))
        })
        .collect();
    let known_domains: Vec<String> = st
        .projects
        .keys()
        .map(|p| format!("@{p}.iam.gserviceaccount.com"))
        .collect();
    let Some(p) = st.projects.get_mut(project) else {
        return no_project(project);
    };
    let policy = &body["policy"];
    if !policy.is_object() {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument: policy is required.",
        );
    }
    if let Some(etag) = policy.get("etag").and_then(Value::as_str)
        && etag != p.etag()
    {
        return google_error(
            409,
            "ABORTED",
            &format!(
                "There were concurrent policy changes. Please retry the whole read-modify-write with exponential backoff. The request's ETag '{etag}' did not match the current policy's ETag '{}'.",
                p.etag()
            ),
        );
    }
    let version = policy.get("version").and_then(Value::as_i64).unwrap_or(1);
    let mut bindings: Vec<Value> = Vec::new();
    let mut principals = 0usize;
    for b in policy["bindings"].as_array().cloned().unwrap_or_default() {
        let role = b["role"].as_str().unwrap_or_default().to_string();
        if role.is_empty() {
            return google_error(400, "INVALID_ARGUMENT", "Role must be set.");
        }
        // The classic bug this fake exists to catch: a write without version 3 loses every
        // conditional binding (and `_withcond_` roles are conditional bindings a v1 read
        // disguised).
        if version < 3 && (is_conditional(&b) || role.contains("_withcond_")) {
            continue;
        }
        if is_conditional(&b) {
            if BASIC_ROLES.contains(&role.as_str()) {
                return google_error(
                    400,
                    "INVALID_ARGUMENT",
                    &format!("Conditions are not supported for role {role}."),
                );
            }
            let c = &b["condition"];
            if c["title"].as_str().is_none_or(str::is_empty)
                || c["expression"].as_str().is_none_or(str::is_empty)
            {
                return google_error(
                    400,
                    "INVALID_ARGUMENT",
                    "Condition title and expression are required.",
                );
            }
        }
        let members: Vec<Value> = b["members"].as_array().cloned().unwrap_or_default();
        for m in &members {
            let m = m.as_str().unwrap_or_default();
            if m == "allUsers" || m == "allAuthenticatedUsers" {
                return google_error(
                    400,
                    "INVALID_ARGUMENT",
                    &format!("Principal {m} is not allowed on projects."),
                );
            }
            if !MEMBER_PREFIXES.iter().any(|pre| m.starts_with(pre)) {
                return google_error(400, "INVALID_ARGUMENT", &format!("Invalid principal: {m}"));
            }
            if let Some(email) = m.strip_prefix("serviceAccount:")
                && known_domains.iter().any(|d| email.ends_with(d.as_str()))
                && visible_accounts.get(email) != Some(&true)
            {
                return google_error(
                    400,
                    "INVALID_ARGUMENT",
                    &format!("Service account {email} does not exist."),
                );
            }
        }
        principals += members.len();
        if members.is_empty() {
            continue;
        }
        bindings.push(b);
    }
    if principals > 1500 {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            "The number of members in the policy (> 1,500) is larger than the maximum allowed size 1,500.",
        );
    }
    let mask = body
        .get("updateMask")
        .and_then(Value::as_str)
        .unwrap_or("bindings,etag");
    p.bindings = bindings;
    if mask.split(',').any(|f| f.trim() == "auditConfigs") {
        p.audit_configs = policy.get("auditConfigs").cloned();
    }
    p.etag_n += 1;
    ok_json(render_policy(p, 3))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn client_and_fake() -> (reqwest_free::Client, FakeGcp) {
        let gcp = FakeGcp::start().await;
        gcp.add_project("p1");
        (
            reqwest_free::Client {
                base: gcp.url(),
                token: gcp.mint_token(),
            },
            gcp,
        )
    }

    /// A minimal HTTP client over hyper-less tokio TCP, so testkit needs no HTTP client dependency.
    mod reqwest_free {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        pub struct Client {
            pub base: String,
            pub token: String,
        }

        impl Client {
            pub async fn call(
                &self,
                method: &str,
                path: &str,
                body: &serde_json::Value,
            ) -> (u16, serde_json::Value) {
                let addr = self.base.trim_start_matches("http://").to_string();
                let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
                let b = body.to_string();
                let req = format!(
                    "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                    self.token,
                    b.len()
                );
                s.write_all(req.as_bytes()).await.unwrap();
                let mut out = Vec::new();
                s.read_to_end(&mut out).await.unwrap();
                let text = String::from_utf8_lossy(&out).to_string();
                let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
                let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
                // Responses are small: axum sends them with Content-Length, not chunked.
                (
                    status,
                    serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
                )
            }
        }
    }

    #[tokio::test]
    async fn version_1_writes_drop_conditional_bindings_and_stale_etags_abort() {
        let (c, gcp) = client_and_fake().await;
        gcp.set_policy(
            "p1",
            json!({"bindings": [
                {"role": "roles/browser", "members": ["user:a@example.com"]},
                {"role": "roles/run.invoker", "members": ["user:b@example.com"],
                 "condition": {"title": "Temp Access", "expression": "request.time < timestamp('2030-01-01T00:00:00Z')"}}
            ], "auditConfigs": [{"service": "allServices", "auditLogConfigs": [{"logType": "DATA_READ"}]}]}),
        );
        // A v1 read disguises the conditional binding.
        let (s, v1) = c
            .call("POST", "/v1/projects/p1:getIamPolicy", &json!({}))
            .await;
        assert_eq!(s, 200);
        assert_eq!(v1["version"], 1);
        assert!(
            v1["bindings"][1]["role"]
                .as_str()
                .unwrap()
                .contains("_withcond_")
        );
        // Writing that back without version 3 loses the conditional binding.
        let (s, _) = c
            .call(
                "POST",
                "/v1/projects/p1:setIamPolicy",
                &json!({"policy": v1}),
            )
            .await;
        assert_eq!(s, 200);
        let now = gcp.policy("p1");
        assert_eq!(now["bindings"].as_array().unwrap().len(), 1);
        assert!(
            now["auditConfigs"].is_array(),
            "audit configs survive the default mask"
        );
        // A stale etag is a 409 ABORTED.
        let (s, e) = c
            .call(
                "POST",
                "/v1/projects/p1:setIamPolicy",
                &json!({"policy": {"version": 3, "etag": v1["etag"], "bindings": []}}),
            )
            .await;
        assert_eq!(s, 409);
        assert_eq!(e["error"]["status"], "ABORTED");
    }

    #[tokio::test]
    async fn accounts_keys_quotas_and_auth() {
        let (c, gcp) = client_and_fake().await;
        let (s, _) = c
            .call(
                "POST",
                "/v1/projects/p1/serviceAccounts",
                &json!({"accountId": "short"}),
            )
            .await;
        assert_eq!(s, 400);
        let (s, sa) = c.call("POST", "/v1/projects/p1/serviceAccounts", &json!({"accountId": "jane-dot-doe-1234567890", "serviceAccount": {"displayName": "jane.doe@example.com"}})).await;
        assert_eq!(s, 200);
        let email = sa["email"].as_str().unwrap().to_string();
        let (s, e) = c
            .call(
                "POST",
                "/v1/projects/p1/serviceAccounts",
                &json!({"accountId": "jane-dot-doe-1234567890"}),
            )
            .await;
        assert_eq!(
            (s, e["error"]["status"].as_str()),
            (409, Some("ALREADY_EXISTS"))
        );
        gcp.set_key_quota(1);
        let (s, k) = c
            .call(
                "POST",
                &format!("/v1/projects/p1/serviceAccounts/{email}/keys"),
                &json!({}),
            )
            .await;
        assert_eq!(s, 200);
        let file: Value = serde_json::from_slice(
            &STANDARD
                .decode(k["privateKeyData"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(file["client_email"], email.as_str());
        let (s, e) = c
            .call(
                "POST",
                &format!("/v1/projects/p1/serviceAccounts/{email}/keys"),
                &json!({}),
            )
            .await;
        assert_eq!(
            (s, e["error"]["status"].as_str()),
            (400, Some("FAILED_PRECONDITION"))
        );
        // Deleting the account turns its policy members into deleted: members.
        gcp.set_policy("p1", json!({"bindings": [{"role": "roles/browser", "members": [format!("serviceAccount:{email}")]}]}));
        let (s, _) = c
            .call(
                "DELETE",
                &format!("/v1/projects/p1/serviceAccounts/{email}"),
                &json!({}),
            )
            .await;
        assert_eq!(s, 200);
        assert!(
            gcp.policy("p1")["bindings"][0]["members"][0]
                .as_str()
                .unwrap()
                .starts_with("deleted:serviceAccount:")
        );
        // Without a token issued by the fake: 401.
        let anon = reqwest_free::Client {
            base: gcp.url(),
            token: "nope".into(),
        };
        let (s, e) = anon
            .call("POST", "/v1/projects/p1:getIamPolicy", &json!({}))
            .await;
        assert_eq!(
            (s, e["error"]["status"].as_str()),
            (401, Some("UNAUTHENTICATED"))
        );
        // Unknown project: 403.
        let (s, _) = c
            .call("POST", "/v1/projects/nope:getIamPolicy", &json!({}))
            .await;
        assert_eq!(s, 403);
    }
}
