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

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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

/// A user as stored (serialised as the API's `UserResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakeUser {
    pub id: String,
    pub first_name: String,
    pub last_name: String,
    pub username: String,
    pub email: String,
    pub group_id: String,
    pub secondary_group_ids: Vec<String>,
    pub status: String,
    pub role: String,
    pub auth_type: String,
}

/// A user group (serialised as `UserGroupResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakeGroup {
    pub id: String,
    pub name: String,
    pub internet_access: String,
    pub max_device: u32,
    pub connect_auth: String,
    pub all_regions_included: bool,
    pub vpn_region_ids: Vec<String>,
    pub gateways_ids: Vec<String>,
    pub system_subnets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FakeNetwork {
    pub id: String,
    pub name: String,
    pub description: String,
    pub egress: bool,
    pub internet_access: String,
    pub routes: Vec<Value>,
    pub connectors: Vec<Value>,
    pub system_subnets: Vec<String>,
    pub tunneling_protocol: String,
    pub gateways_ids: Vec<String>,
}

/// One call the fake answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    pub path: String,
    /// The query string with `client_secret` masked.
    pub query: String,
    pub status: u16,
    pub at: Instant,
    /// The JSON body, when there was one.
    pub body: Option<Value>,
    /// How a token call sent its credentials: `query`, `basic`, `json`, `form`, or empty.
    pub credentials_via: String,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
struct Token {
    client_id: String,
    expires_at: Instant,
}

#[derive(Debug)]
struct FaultPlan {
    remaining: u32,
    status: u16,
}

#[derive(Debug)]
struct St {
    cfg: FakeConfig,
    users: Vec<FakeUser>,
    groups: Vec<FakeGroup>,
    networks: Vec<FakeNetwork>,
    tokens: HashMap<String, Token>,
    buckets: HashMap<String, Bucket>,
    faults: Option<FaultPlan>,
    /// The next N user writes are applied, then answered only after this delay (a write that
    /// lands but whose answer arrives after the caller gave up).
    slow_after_apply: Option<(u32, Duration)>,
    latency: Duration,
    calls: Vec<Call>,
    seq: u64,
}

impl St {
    fn next_id(&mut self) -> String {
        self.seq += 1;
        // UUID-shaped, deterministic and sortable for readable test failures.
        format!("00000000-0000-4000-8000-{:012x}", self.seq)
    }

    fn group_exists(&self, id: &str) -> bool {
        self.groups.iter().any(|g| g.id == id)
    }
}

/// The running fake. Dropping it stops the server.
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
        let st = Arc::new(Mutex::new(St {
            cfg: config,
            users: Vec::new(),
            groups: Vec::new(),
            networks: Vec::new(),
            tokens: HashMap::new(),
            buckets: HashMap::new(),
            faults: None,
            slow_after_apply: None,
            latency: Duration::ZERO,
            calls: Vec::new(),
            seq: 0,
        }));
        let fault_slot = crate::faults::FaultSlot::new(crate::faults::Service::CloudConnexa);
        let app = Router::new().fallback(handle).with_state(st.clone()).layer(
            axum::middleware::from_fn_with_state(fault_slot.clone(), crate::faults::layer),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
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

fn default_group_id(st: &St) -> String {
    st.groups
        .iter()
        .find(|g| g.name == st.cfg.default_group)
        .or(st.groups.first())
        .map(|g| g.id.clone())
        .unwrap_or_default()
}

fn new_group(id: String, name: String) -> FakeGroup {
    FakeGroup {
        id,
        name,
        internet_access: "SPLIT_TUNNEL_ON".into(),
        max_device: 3,
        connect_auth: "NO_AUTH".into(),
        all_regions_included: true,
        vpn_region_ids: Vec::new(),
        gateways_ids: Vec::new(),
        system_subnets: Vec::new(),
    }
}

const TOKEN_PATH: &str = "/api/v1/oauth/token";

// ------------------------------------------------------------------------------------------------
// HTTP

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_pairs(s: &str) -> BTreeMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn envelope(status: &str, message: &str, details: Option<Value>) -> Value {
    let mut v = json!({"errorMessage": message, "statusError": status});
    if let Some(d) = details {
        v["errorDetails"] = d;
    }
    v
}

fn field_error(field: &str, code: &str, message: &str) -> Value {
    json!({ field: [{"errorCode": code, "message": message, "params": {}}] })
}

struct Reply {
    status: u16,
    body: Option<Value>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
        }
    }
    fn empty(status: u16) -> Self {
        Self { status, body: None }
    }
    fn bad(message: &str, details: Option<Value>) -> Self {
        Self::json(400, envelope("BAD_REQUEST", message, details))
    }
}

async fn handle(
    State(st): State<Arc<Mutex<St>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = st.lock().map(|s| s.latency).unwrap_or_default();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (response, slow) = answer(&st, method, uri, headers, body);
    if let Some(d) = slow {
        // The change is already applied (and recorded); only the answer is late.
        tokio::time::sleep(d).await;
    }
    response
}

/// Answers one call under the state lock; also says how long to hold the answer back.
fn answer(
    st: &Arc<Mutex<St>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (Response, Option<Duration>) {
    let path = uri.path().trim_end_matches('/').to_string();
    let query = parse_pairs(uri.query().unwrap_or(""));
    let json_body: Option<Value> = serde_json::from_slice(&body).ok();
    let mut st = st.lock().unwrap_or_else(|p| p.into_inner());
    let masked_query = uri
        .query()
        .unwrap_or("")
        .split('&')
        .map(|p| {
            if p.starts_with("client_secret=") {
                "client_secret=***"
            } else {
                p
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    let mut call = Call {
        method: method.to_string(),
        path: path.clone(),
        query: masked_query,
        status: 0,
        at: Instant::now(),
        body: json_body.clone(),
        credentials_via: String::new(),
    };

    if path == TOKEN_PATH {
        let (reply, via) = token(
            &mut st,
            &method,
            &headers,
            &query,
            &body,
            json_body.as_ref(),
        );
        call.credentials_via = via;
        return (finish(&mut st, call, reply, None), None);
    }
    if !path.starts_with("/api/v1/") {
        return (
            finish(
                &mut st,
                call,
                Reply::json(404, envelope("NOT_FOUND", "No such endpoint", None)),
                None,
            ),
            None,
        );
    }

    // Authentication.
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::to_string);
    let now = Instant::now();
    let client = match bearer.as_ref().and_then(|b| st.tokens.get(b)) {
        Some(t) if t.expires_at > now => t.client_id.clone(),
        Some(_) => {
            let r = Reply::json(401, envelope("UNAUTHORIZED", "Access token expired", None));
            return (finish(&mut st, call, r, None), None);
        }
        None => {
            let r = Reply::json(
                401,
                envelope(
                    "UNAUTHORIZED",
                    "Full authentication is required to access this resource",
                    None,
                ),
            );
            return (finish(&mut st, call, r, None), None);
        }
    };

    // Rate limit: one bucket per credential, shared by reads and writes.
    let limit = if st.cfg.rate_limit {
        let (burst, rate, time) = (st.cfg.burst, st.cfg.replenish_rate, st.cfg.replenish_time);
        let per_sec = f64::from(rate) / f64::from(time.max(1));
        let b = st.buckets.entry(client).or_insert(Bucket {
            tokens: f64::from(burst),
            last: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.last).as_secs_f64() * per_sec).min(f64::from(burst));
        b.last = now;
        let allowed = b.tokens >= 1.0;
        if allowed {
            b.tokens -= 1.0;
        }
        let remaining = b.tokens.floor().max(0.0) as u64;
        let hdrs = vec![
            ("x-ratelimit-replenish-rate", rate.to_string()),
            ("x-ratelimit-replenish-time", time.to_string()),
            ("x-ratelimit-remaining", remaining.to_string()),
            ("x-ratelimit-burst-capacity", burst.to_string()),
        ];
        if !allowed {
            return (finish(&mut st, call, Reply::empty(429), Some(hdrs)), None);
        }
        Some(hdrs)
    } else {
        None
    };

    // Injected faults.
    let injected = match st.faults.as_mut() {
        Some(f) if f.remaining > 0 => {
            f.remaining -= 1;
            Some((f.status, f.remaining == 0))
        }
        _ => None,
    };
    if let Some((status, last)) = injected {
        if last {
            st.faults = None;
        }
        let r = if status == 503 {
            Reply::empty(503)
        } else {
            Reply::json(
                status,
                envelope("INTERNAL_SERVER_ERROR", "Injected failure", None),
            )
        };
        return (finish(&mut st, call, r, limit), None);
    }

    if st.cfg.read_only && method != Method::GET {
        let r = Reply::json(
            403,
            envelope(
                "FORBIDDEN",
                "Access is denied: the API credential is read-only",
                None,
            ),
        );
        return (finish(&mut st, call, r, limit), None);
    }

    let segs: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
    let reply = route(&mut st, &method, &segs, &query, json_body.as_ref(), &body);
    let user_write = matches!(
        (&method, segs.as_slice()),
        (&Method::POST, ["users"]) | (&Method::PUT, ["users", _])
    );
    let slow = match st.slow_after_apply.as_mut() {
        Some((n, d)) if user_write && *n > 0 => {
            *n -= 1;
            Some(*d)
        }
        _ => None,
    };
    (finish(&mut st, call, reply, limit), slow)
}

fn finish(
    st: &mut St,
    mut call: Call,
    reply: Reply,
    headers: Option<Vec<(&'static str, String)>>,
) -> Response {
    call.status = reply.status;
    st.calls.push(call);
    let mut b = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    for (k, v) in headers.unwrap_or_default() {
        b = b.header(k, v);
    }
    match reply.body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&v).unwrap_or_default()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

fn token(
    st: &mut St,
    method: &Method,
    headers: &HeaderMap,
    query: &BTreeMap<String, String>,
    raw: &Bytes,
    json_body: Option<&Value>,
) -> (Reply, String) {
    if method != Method::POST {
        return (
            Reply::json(405, envelope("METHOD_NOT_ALLOWED", "Use POST", None)),
            String::new(),
        );
    }
    let form = if json_body.is_none() {
        parse_pairs(std::str::from_utf8(raw).unwrap_or(""))
    } else {
        BTreeMap::new()
    };
    let from_json = |k: &str| {
        json_body
            .and_then(|j| j.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        });

    let (creds, via) = if let (Some(id), Some(secret)) =
        (query.get("client_id"), query.get("client_secret"))
    {
        (Some((id.clone(), secret.clone())), "query")
    } else if let Some(c) = basic {
        (Some(c), "basic")
    } else if let (Some(id), Some(secret)) = (from_json("client_id"), from_json("client_secret")) {
        (Some((id, secret)), "json")
    } else if let (Some(id), Some(secret)) = (form.get("client_id"), form.get("client_secret")) {
        (Some((id.clone(), secret.clone())), "form")
    } else {
        (None, "")
    };
    let grant_type = query
        .get("grant_type")
        .cloned()
        .or_else(|| from_json("grant_type"))
        .or_else(|| form.get("grant_type").cloned());
    if grant_type
        .as_deref()
        .is_some_and(|g| g != "client_credentials")
    {
        return (Reply::bad("Unsupported grant type", None), via.into());
    }
    match creds {
        Some((id, secret)) if id == st.cfg.client_id && secret == st.cfg.client_secret => {
            let token = format!("fake-cc-token-{}", uuid::Uuid::new_v4().simple());
            let expires_in = st.cfg.expires_in;
            st.tokens.insert(
                token.clone(),
                Token {
                    client_id: id,
                    expires_at: Instant::now() + Duration::from_secs(expires_in),
                },
            );
            let body = json!({"access_token": token, "token_type": "bearer", "expires_in": expires_in, "scope": "read write"});
            (Reply::json(200, body), via.into())
        }
        _ => (
            Reply::json(401, envelope("UNAUTHORIZED", "Bad credentials", None)),
            via.into(),
        ),
    }
}

fn page_of<T: Serialize>(items: &[T], query: &BTreeMap<String, String>) -> Reply {
    let page: i64 = match query.get("page").map(|p| p.parse()) {
        None => 0,
        Some(Ok(p)) if p >= 0 => p,
        _ => {
            return Reply::bad(
                "Invalid page",
                Some(field_error("page", "INVALID", "must be 0 or more")),
            );
        }
    };
    let size: i64 = match query.get("size").map(|p| p.parse()) {
        None => 10,
        Some(Ok(s)) if (1..=1000).contains(&s) => s,
        _ => {
            return Reply::bad(
                "Invalid size",
                Some(field_error("size", "INVALID", "must be between 1 and 1000")),
            );
        }
    };
    let total = items.len() as i64;
    let total_pages = (total + size - 1) / size;
    let start = (page * size).min(total) as usize;
    let end = ((page + 1) * size).min(total) as usize;
    let content: Vec<Value> = items[start..end]
        .iter()
        .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
        .collect();
    Reply::json(
        200,
        json!({"content": content, "totalElements": total, "totalPages": total_pages,
               "numberOfElements": end - start, "page": page, "size": size}),
    )
}

fn route(
    st: &mut St,
    method: &Method,
    segs: &[&str],
    query: &BTreeMap<String, String>,
    body: Option<&Value>,
    raw: &Bytes,
) -> Reply {
    let unparsable = !raw.is_empty() && body.is_none();
    let user_nf = |st: &St, id: &str| {
        let s = st.cfg.user_not_found_status;
        let status_error = if s == 404 { "NOT_FOUND" } else { "BAD_REQUEST" };
        Reply::json(
            s,
            envelope(status_error, &format!("User with id {id} not found"), None),
        )
    };
    let group_nf = |st: &St, id: &str| {
        let s = st.cfg.group_not_found_status;
        let status_error = if s == 404 { "NOT_FOUND" } else { "BAD_REQUEST" };
        Reply::json(
            s,
            envelope(
                status_error,
                &format!("User group with id {id} not found"),
                None,
            ),
        )
    };
    match (method.clone(), segs) {
        (Method::GET, ["networks"]) => page_of(&st.networks, query),
        (Method::GET, ["networks", id]) => match st.networks.iter().find(|n| n.id == *id) {
            Some(n) => Reply::json(200, serde_json::to_value(n).unwrap_or_default()),
            None => Reply::json(
                404,
                envelope(
                    "NOT_FOUND",
                    &format!("Network with id {id} not found"),
                    None,
                ),
            ),
        },

        (Method::GET, ["users"]) => page_of(&st.users, query),
        (Method::GET, ["users", id]) => match st.users.iter().find(|u| u.id == *id) {
            Some(u) => Reply::json(200, serde_json::to_value(u).unwrap_or_default()),
            None => user_nf(st, id),
        },
        (Method::POST, ["users"]) => {
            if unparsable || body.is_none() {
                return Reply::bad("Malformed JSON request", None);
            }
            create_user(st, body.unwrap_or(&Value::Null))
        }
        (Method::PUT, ["users", id]) => {
            if unparsable || body.is_none() {
                return Reply::bad("Malformed JSON request", None);
            }
            if !st.users.iter().any(|u| u.id == *id) {
                return user_nf(st, id);
            }
            update_user(st, id, body.unwrap_or(&Value::Null))
        }
        (Method::DELETE, ["users", id]) => {
            if !st.users.iter().any(|u| u.id == *id) {
                return user_nf(st, id);
            }
            st.users.retain(|u| u.id != *id);
            Reply::empty(204)
        }

        (Method::GET, ["user-groups"]) => page_of(&st.groups, query),
        (Method::GET, ["user-groups", id]) => match st.groups.iter().find(|g| g.id == *id) {
            Some(g) => Reply::json(200, serde_json::to_value(g).unwrap_or_default()),
            None => group_nf(st, id),
        },
        (Method::POST, ["user-groups"]) | (Method::PUT, ["user-groups", _]) => {
            let Some(b) = body.filter(|_| !unparsable) else {
                return Reply::bad("Malformed JSON request", None);
            };
            let name = b
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or("")
                .trim()
                .to_string();
            if name.is_empty() {
                return Reply::bad(
                    "Validation failed",
                    Some(field_error("name", "NOT_BLANK", "must not be blank")),
                );
            }
            let existing_id = segs.get(1).map(|s| s.to_string());
            if let Some(id) = existing_id.as_ref().filter(|id| !st.group_exists(id)) {
                return group_nf(st, id);
            }
            if st
                .groups
                .iter()
                .any(|g| g.name == name && Some(&g.id) != existing_id.as_ref())
            {
                return Reply::bad(
                    "Validation failed",
                    Some(field_error(
                        "name",
                        "DUPLICATE",
                        "A user group with this name already exists",
                    )),
                );
            }
            let id = existing_id.clone().unwrap_or_else(|| st.next_id());
            let mut g = new_group(id.clone(), name);
            if let Some(v) = b.get("internetAccess").and_then(|v| v.as_str()) {
                g.internet_access = v.into();
            }
            if let Some(v) = b.get("maxDevice").and_then(|v| v.as_u64()) {
                g.max_device = v as u32;
            }
            if let Some(v) = b.get("connectAuth").and_then(|v| v.as_str()) {
                g.connect_auth = v.into();
            }
            if let Some(v) = b.get("allRegionsIncluded").and_then(|v| v.as_bool()) {
                g.all_regions_included = v;
            }
            st.groups.retain(|x| x.id != id);
            st.groups.push(g.clone());
            Reply::json(
                if existing_id.is_some() { 200 } else { 201 },
                serde_json::to_value(g).unwrap_or_default(),
            )
        }
        (Method::DELETE, ["user-groups", id]) => {
            if !st.group_exists(id) {
                return group_nf(st, id);
            }
            if st.users.iter().any(|u| u.group_id == *id) {
                return Reply::bad("User group has users assigned as their primary group", None);
            }
            st.groups.retain(|g| g.id != *id);
            for u in &mut st.users {
                u.secondary_group_ids.retain(|g| g != id);
            }
            Reply::empty(204)
        }
        (_, ["networks" | "users" | "user-groups", ..]) => Reply::json(
            405,
            envelope("METHOD_NOT_ALLOWED", "Request method not supported", None),
        ),
        _ => Reply::json(404, envelope("NOT_FOUND", "No such endpoint", None)),
    }
}

const ROLES: [&str; 3] = ["OWNER", "MEMBER", "ADMIN"];
const STATUSES: [&str; 4] = ["INVITED", "ACTIVE", "SUSPENDED", "SUSPENDED_IDP"];

fn str_field<'a>(b: &'a Value, k: &str) -> Option<&'a str> {
    b.get(k).and_then(|v| v.as_str())
}

fn group_list(st: &St, b: &Value) -> Result<Vec<String>, Reply> {
    let mut out: Vec<String> = Vec::new();
    match b.get("secondaryGroupIds") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for g in a {
                let Some(g) = g.as_str() else {
                    return Err(Reply::bad(
                        "Validation failed",
                        Some(field_error(
                            "secondaryGroupIds",
                            "INVALID",
                            "must be strings",
                        )),
                    ));
                };
                if !st.group_exists(g) {
                    return Err(Reply::bad(
                        "Validation failed",
                        Some(field_error(
                            "secondaryGroupIds",
                            "NOT_FOUND",
                            &format!("User group {g} does not exist"),
                        )),
                    ));
                }
                if !out.iter().any(|x| x == g) {
                    out.push(g.to_string());
                }
            }
        }
        Some(_) => {
            return Err(Reply::bad(
                "Validation failed",
                Some(field_error(
                    "secondaryGroupIds",
                    "INVALID",
                    "must be an array",
                )),
            ));
        }
    }
    Ok(out)
}

fn create_user(st: &mut St, b: &Value) -> Reply {
    let email = str_field(b, "email").unwrap_or("").trim().to_string();
    if !email.contains('@') {
        return Reply::bad(
            "Validation failed",
            Some(field_error(
                "email",
                "INVALID",
                "must be a well-formed email address",
            )),
        );
    }
    if st
        .users
        .iter()
        .any(|u| u.email.eq_ignore_ascii_case(&email))
    {
        return Reply::bad(
            "Validation failed",
            Some(field_error(
                "email",
                "DUPLICATE",
                "User with this email already exists",
            )),
        );
    }
    let username = str_field(b, "username")
        .map(str::to_string)
        .unwrap_or_else(|| email.split('@').next().unwrap_or("").to_string());
    if st
        .users
        .iter()
        .any(|u| u.username.eq_ignore_ascii_case(&username))
    {
        return Reply::bad(
            "Validation failed",
            Some(field_error(
                "username",
                "DUPLICATE",
                "Username is already taken",
            )),
        );
    }
    let role = str_field(b, "role").unwrap_or("MEMBER").to_string();
    if !ROLES.contains(&role.as_str()) {
        return Reply::bad(
            "Validation failed",
            Some(field_error("role", "INVALID", "unknown role")),
        );
    }
    let group_id = match str_field(b, "groupId") {
        Some(g) if !st.group_exists(g) => {
            return Reply::bad(
                "Validation failed",
                Some(field_error(
                    "groupId",
                    "NOT_FOUND",
                    "User group does not exist",
                )),
            );
        }
        Some(g) => g.to_string(),
        None => default_group_id(st),
    };
    let secondary = match group_list(st, b) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let id = st.next_id();
    let u = FakeUser {
        id,
        first_name: str_field(b, "firstName").unwrap_or("").into(),
        last_name: str_field(b, "lastName").unwrap_or("").into(),
        username,
        email,
        group_id,
        secondary_group_ids: secondary,
        status: "INVITED".into(),
        role,
        auth_type: "INTERNAL".into(),
    };
    st.users.push(u.clone());
    Reply::json(201, serde_json::to_value(u).unwrap_or_default())
}

fn update_user(st: &mut St, id: &str, b: &Value) -> Reply {
    // A full replacement: the required fields must be there, the list is what was sent.
    for field in ["email", "groupId", "role", "status"] {
        if str_field(b, field).is_none() {
            return Reply::bad(
                "Validation failed",
                Some(field_error(field, "NOT_NULL", "must not be null")),
            );
        }
    }
    let email = str_field(b, "email").unwrap_or("").trim().to_string();
    if st
        .users
        .iter()
        .any(|u| u.id != id && u.email.eq_ignore_ascii_case(&email))
    {
        return Reply::bad(
            "Validation failed",
            Some(field_error(
                "email",
                "DUPLICATE",
                "User with this email already exists",
            )),
        );
    }
    let group_id = str_field(b, "groupId").unwrap_or("").to_string();
    if !st.group_exists(&group_id) {
        return Reply::bad(
            "Validation failed",
            Some(field_error(
                "groupId",
                "NOT_FOUND",
                "User group does not exist",
            )),
        );
    }
    let role = str_field(b, "role").unwrap_or("").to_string();
    let status = str_field(b, "status").unwrap_or("").to_string();
    if !ROLES.contains(&role.as_str()) || !STATUSES.contains(&status.as_str()) {
        return Reply::bad(
            "Validation failed",
            Some(field_error("role", "INVALID", "unknown role or status")),
        );
    }
    let secondary = match group_list(st, b) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(u) = st.users.iter_mut().find(|u| u.id == id) else {
        return Reply::bad("User not found", None);
    };
    u.first_name = str_field(b, "firstName").unwrap_or("").into();
    u.last_name = str_field(b, "lastName").unwrap_or("").into();
    u.email = email;
    u.group_id = group_id;
    u.secondary_group_ids = secondary;
    u.role = role;
    u.status = status;
    Reply::json(200, serde_json::to_value(&*u).unwrap_or_default())
}
