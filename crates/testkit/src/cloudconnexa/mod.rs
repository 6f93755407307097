//! A fake OpenVPN Cloud Connexa (API v1) on `127.0.0.1:0`, built from `external-apis.md` C,
//! including the parts that trip clients up:
//! - `POST /api/v1/oauth/token` takes the credentials as query parameters (the v1 docs), HTTP
//!   Basic auth (beta docs, the Go client), a JSON body or a form body; wrong ones get 401.
//!   Tokens expire after `expires_in` seconds, and [`FakeCloudConnexa::expire_all_tokens`] ends
//!   them all at once; an API call with a missing, unknown or expired bearer gets 401.
//! - list endpoints page with `page` (from 0) and `size` (1–1000, else 400) and answer
//!   `{"content", "totalElements", "totalPages", "numberOfElements", "page", "size"}`; there is
//!   no server-side filtering.
//! - users carry one primary `groupId` and `secondaryGroupIds`; `PUT /users/{id}` is a full
//!   replacement: an omitted `secondaryGroupIds` clears them, an omitted `email`, `groupId`,
//!   `role` or `status` is refused, so a client that does not send the user as read is caught.
//! - a token bucket per credential (burst, then `replenish_rate` per `replenish_time` seconds)
//!   advertised on every answer as `X-RateLimit-Replenish-Rate`, `X-RateLimit-Replenish-Time`,
//!   `X-RateLimit-Remaining`; when empty: **429 with an empty body and no `Retry-After`**.
//! - errors use the envelope `{"errorMessage", "statusError", "errorDetails"}`; an unknown user
//!   is **HTTP 400** "not found" (the caveat of the docs), an unknown group or network 404
//!   (both configurable).
//! - fault injection (the next N API calls fail with a status, added latency) and a record of
//!   every call.
//!
//! ```no_run
//! # async fn t() {
//! use testkit::cloudconnexa::{FakeCloudConnexa, FakeConfig};
//! let cc = FakeCloudConnexa::start(FakeConfig::fast()).await;
//! cc.seed_network("dev-network");
//! let g = cc.seed_group("developers");
//! cc.seed_user("jane@example.com", None, &[&g]);
//! // point the client at cc.url() with cc.client_id() / cc.client_secret(); then:
//! assert_eq!(cc.throttled_count(), 0);
//! # }
//! ```

mod resources;
mod routes;
mod server;
mod state;
mod token;
mod users;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use serde_json::json;

use resources::new_group;
use state::{FaultPlan, St, default_group_id};

pub use resources::{Call, FakeGroup, FakeNetwork, FakeUser};

/// The token endpoint's path.
const TOKEN_PATH: &str = "/api/v1/oauth/token";

/// How the fake behaves. [`FakeConfig::default`] is the documented production limit (burst 20,
/// then 1 request per 15 s); [`FakeConfig::fast`] keeps the same shape at test speed.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub client_id: String,
    pub client_secret: String,
    /// Lifetime of issued tokens, in seconds (the real API: 43199).
    pub expires_in: u64,
    /// Rate limiting on or off.
    pub rate_limit: bool,
    pub burst: u32,
    /// Tokens added per `replenish_time` seconds.
    pub replenish_rate: u32,
    pub replenish_time: u32,
    /// Status for an unknown user id (400, as the docs warn, by default).
    pub user_not_found_status: u16,
    /// Status for an unknown group or network id (404 by default).
    pub group_not_found_status: u16,
    /// Name of the group users land in when created without `groupId`.
    pub default_group: String,
    /// The credential has read-only permission: every write answers 403.
    pub read_only: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            client_id: "cc-test-client".into(),
            client_secret: "cc-test-secret-do-not-log".into(),
            expires_in: 43_199,
            rate_limit: true,
            burst: 20,
            replenish_rate: 1,
            replenish_time: 15,
            user_not_found_status: 400,
            group_not_found_status: 404,
            default_group: "Default".into(),
            read_only: false,
        }
    }
}

impl FakeConfig {
    /// Burst 10, then 100 requests per second: real shape, test speed.
    pub fn fast() -> Self {
        Self {
            burst: 10,
            replenish_rate: 100,
            replenish_time: 1,
            ..Self::default()
        }
    }

    pub fn without_rate_limit() -> Self {
        Self {
            rate_limit: false,
            ..Self::default()
        }
    }
}

/// The running fake. Dropping it stops the server (letting calls in flight finish).
#[derive(Debug)]
pub struct FakeCloudConnexa {
    addr: SocketAddr,
    fault_slot: crate::faults::FaultSlot,
    st: Arc<Mutex<St>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakeCloudConnexa {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl FakeCloudConnexa {
    pub async fn start(config: FakeConfig) -> Self {
        let default_group = config.default_group.clone();
        let st = Arc::new(Mutex::new(St::new(config)));
        let fault_slot = crate::faults::FaultSlot::new(crate::faults::Service::CloudConnexa);
        let app = fault_slot.wrap(
            Router::new()
                .fallback(server::handle)
                .with_state(st.clone()),
        );
        let (listener, addr) = crate::http::bind("fake cloud connexa").await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        let fake = Self {
            addr,
            fault_slot,
            st,
            shutdown: Some(tx),
        };
        fake.seed_group(&default_group);
        fake
    }

    /// Every call from now on (token calls excepted) consults `injector` (`None`: no more).
    pub fn set_fault_injector(&self, injector: Option<Arc<crate::faults::FaultInjector>>) {
        self.fault_slot.set(injector);
    }

    fn st(&self) -> std::sync::MutexGuard<'_, St> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `http://127.0.0.1:PORT`: what `CLOUDCONNEXA_API_URL` would be.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client_id(&self) -> String {
        self.st().cfg.client_id.clone()
    }

    pub fn client_secret(&self) -> String {
        self.st().cfg.client_secret.clone()
    }

    // ---- seeding and inspection ---------------------------------------------------------------

    pub fn seed_network(&self, name: &str) -> String {
        let mut st = self.st();
        let id = st.next_id();
        st.networks.push(FakeNetwork {
            id: id.clone(),
            name: name.into(),
            description: format!("{name} (fake)"),
            egress: true,
            internet_access: "SPLIT_TUNNEL_ON".into(),
            routes: vec![
                json!({"id": "r1", "type": "IP_V4", "subnet": "10.0.0.0/16", "description": ""}),
            ],
            connectors: Vec::new(),
            system_subnets: vec!["100.96.0.0/11".into()],
            tunneling_protocol: "OPENVPN".into(),
            gateways_ids: Vec::new(),
        });
        id
    }

    pub fn seed_group(&self, name: &str) -> String {
        let mut st = self.st();
        let id = st.next_id();
        st.groups.push(new_group(id.clone(), name.into()));
        id
    }

    /// A user with `email` (username = local part), primary group `group_id` (default group when
    /// `None`) and these secondary groups. Returns the user id.
    pub fn seed_user(&self, email: &str, group_id: Option<&str>, secondary: &[&str]) -> String {
        let mut st = self.st();
        let id = st.next_id();
        let local = email.split('@').next().unwrap_or(email).to_string();
        let primary = match group_id {
            Some(g) => g.to_string(),
            None => default_group_id(&st),
        };
        st.users.push(FakeUser {
            id: id.clone(),
            first_name: local.clone(),
            last_name: "Seeded".into(),
            username: local,
            email: email.into(),
            group_id: primary,
            secondary_group_ids: secondary.iter().map(|s| s.to_string()).collect(),
            status: "ACTIVE".into(),
            role: "MEMBER".into(),
            auth_type: "INTERNAL".into(),
        });
        id
    }

    /// `n` filler users (`filler-<i>@fake.test`), for paging tests.
    pub fn seed_many_users(&self, n: usize) {
        for i in 0..n {
            self.seed_user(&format!("filler-{i}@fake.test"), None, &[]);
        }
    }

    pub fn users(&self) -> Vec<FakeUser> {
        self.st().users.clone()
    }

    pub fn user(&self, id: &str) -> Option<FakeUser> {
        self.st().users.iter().find(|u| u.id == id).cloned()
    }

    pub fn user_by_email(&self, email: &str) -> Option<FakeUser> {
        self.st()
            .users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))
            .cloned()
    }

    pub fn groups(&self) -> Vec<FakeGroup> {
        self.st().groups.clone()
    }

    pub fn group_by_name(&self, name: &str) -> Option<FakeGroup> {
        self.st().groups.iter().find(|g| g.name == name).cloned()
    }

    pub fn default_group_id(&self) -> String {
        default_group_id(&self.st())
    }

    /// Changes a user behind the client's back (as an admin in the portal would).
    pub fn edit_user(&self, id: &str, f: impl FnOnce(&mut FakeUser)) {
        let mut st = self.st();
        if let Some(u) = st.users.iter_mut().find(|u| u.id == id) {
            f(u);
        }
    }

    pub fn delete_user(&self, id: &str) {
        self.st().users.retain(|u| u.id != id);
    }

    pub fn delete_group(&self, id: &str) {
        let mut st = self.st();
        st.groups.retain(|g| g.id != id);
        for u in &mut st.users {
            u.secondary_group_ids.retain(|g| g != id);
        }
    }

    // ---- tokens, limits, faults ---------------------------------------------------------------

    /// Every token issued so far is expired from now on.
    pub fn expire_all_tokens(&self) {
        let now = Instant::now();
        for t in self.st().tokens.values_mut() {
            t.expires_at = now;
        }
    }

    pub fn set_expires_in(&self, secs: u64) {
        self.st().cfg.expires_in = secs;
    }

    pub fn set_rate_limit(&self, burst: u32, replenish_rate: u32, replenish_time: u32) {
        let mut st = self.st();
        st.cfg.rate_limit = true;
        st.cfg.burst = burst;
        st.cfg.replenish_rate = replenish_rate;
        st.cfg.replenish_time = replenish_time;
        st.buckets.clear();
    }

    /// The next `n` authenticated API calls answer `status` (500, 503, …).
    pub fn fail_next(&self, n: u32, status: u16) {
        self.st().faults = Some(FaultPlan {
            remaining: n,
            status,
        });
    }

    /// The next `n` user writes (`POST /users`, `PUT /users/{id}`) make their change at once but
    /// answer only after `delay`: what a client with a shorter time limit sees as a time-out,
    /// although the change is there.
    pub fn slow_after_apply(&self, n: u32, delay: Duration) {
        self.st().slow_after_apply = Some((n, delay));
    }

    /// Makes the credential read-only (writes get 403) or lets it modify again.
    pub fn set_read_only(&self, read_only: bool) {
        self.st().cfg.read_only = read_only;
    }

    /// Added to every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.st().latency = latency;
    }

    // ---- the record -------------------------------------------------------------------------

    pub fn calls(&self) -> Vec<Call> {
        self.st().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.st().calls.clear();
    }

    /// How many 429s were sent.
    pub fn throttled_count(&self) -> usize {
        self.st().calls.iter().filter(|c| c.status == 429).count()
    }

    /// Calls to the token endpoint that issued a token.
    pub fn tokens_issued(&self) -> usize {
        self.st()
            .calls
            .iter()
            .filter(|c| c.path == TOKEN_PATH && c.status == 200)
            .count()
    }

    /// Calls matching a method and a path prefix.
    pub fn calls_to(&self, method: &str, path_prefix: &str) -> Vec<Call> {
        self.st()
            .calls
            .iter()
            .filter(|c| c.method == method && c.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }
}
