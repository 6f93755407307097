//! A fake Slack: the Web API methods Gatehouse uses, `response_url`s, the external file upload
//! flow, plus helpers that build and sign the requests Slack sends to an app (slash commands,
//! `block_actions`, `view_submission`, Events API callbacks).
//!
//! Built from `external-apis.md` A, including the parts that trip clients up:
//! - envelopes are HTTP 200 `{"ok":false,"error":…}` for API errors; only rate limits (429 with
//!   `Retry-After` and `ratelimited`) and outages (5xx HTML) use other statuses;
//! - JSON bodies are read only by methods that accept them (`json_input_supported`); a JSON body
//!   sent to `users.info` or `files.getUploadURLExternal` is ignored, so the call fails for lack
//!   of arguments, as it does on the real Slack;
//! - `users.info` misses are `user_not_found`, `users.lookupByEmail` misses `users_not_found`;
//! - `files.completeUploadExternal` fails with `file_not_found` for an id that was never
//!   announced or never received bytes;
//! - `chat.postMessage` / `chat.update` refuse `blocks: []` with `invalid_blocks`;
//! - `response_url` answers plain text `ok` and takes at most five posts;
//! - `trigger_id`s expire after 3 s and work once;
//! - `chat.postMessage` keeps `metadata` (`event_type` + `event_payload`, else
//!   `invalid_metadata_format`); `conversations.history` (form/query only, ids only) answers
//!   newest first within `oldest`/`latest` (`inclusive`), pages with `limit`, `has_more` and
//!   `response_metadata.next_cursor`, shows metadata only with `include_all_metadata`, and
//!   refuses a token without the channel type's `*:history` scope with `missing_scope`
//!   (`needed`/`provided`), see [`FakeSlack::set_token_scopes`].
//!
//! ```no_run
//! # async fn t() {
//! let slack = testkit::slack::FakeSlack::start().await;
//! slack.add_user(testkit::slack::FakeUser::new("U1", "alice").email("alice@example.com"));
//! slack.add_channel("C1", "approvals");
//! // point the client at slack.api_url() with slack.token(); then:
//! assert!(slack.calls_to("chat.postMessage").is_empty());
//! # }
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

/// The bot token the fake accepts unless told otherwise.
pub const BOT_TOKEN: &str = "xoxb-fake-gatehouse-token";
/// The workspace the fake pretends to be.
pub const TEAM_ID: &str = "T0FAKE";
/// The bot's own user id.
pub const BOT_USER_ID: &str = "U0BOT";

/// Methods whose spec says `json_input_supported: true` (external-apis.md A.6).
const JSON_METHODS: [&str; 8] = [
    "chat.postMessage",
    "chat.update",
    "chat.postEphemeral",
    "conversations.open",
    "views.open",
    "views.publish",
    "auth.test",
    "files.completeUploadExternal",
];

/// A seeded user.
#[derive(Debug, Clone)]
pub struct FakeUser {
    pub id: String,
    pub name: String,
    pub real_name: String,
    pub email: Option<String>,
    pub tz: String,
    pub is_bot: bool,
    pub deleted: bool,
    /// Home workspace (`team_id`); the fake's own team when `None`.
    pub team_id: Option<String>,
    /// Enterprise Grid organisation: adds `enterprise_user` as Slack does (A.11).
    pub enterprise_id: Option<String>,
    /// Multi-channel guest.
    pub is_restricted: bool,
    /// Single-channel guest (Slack sets `is_restricted` too).
    pub is_ultra_restricted: bool,
    /// A Slack Connect user from another organisation.
    pub is_stranger: bool,
}

impl FakeUser {
    pub fn new(id: &str, name: &str) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            real_name: name.into(),
            email: None,
            tz: "Europe/London".into(),
            is_bot: false,
            deleted: false,
            team_id: None,
            enterprise_id: None,
            is_restricted: false,
            is_ultra_restricted: false,
            is_stranger: false,
        }
    }

    /// A multi-channel guest (`is_restricted`).
    pub fn guest(mut self) -> Self {
        self.is_restricted = true;
        self
    }

    /// A single-channel guest: Slack sets both flags.
    pub fn single_channel_guest(mut self) -> Self {
        self.is_restricted = true;
        self.is_ultra_restricted = true;
        self
    }

    /// Seen through Slack Connect from another organisation's workspace `home_team`.
    pub fn stranger(mut self, home_team: &str) -> Self {
        self.is_stranger = true;
        self.team_id = Some(home_team.into());
        self
    }

    /// Home workspace `team` (what `users.info` says as `team_id`).
    pub fn in_team(mut self, team: &str) -> Self {
        self.team_id = Some(team.into());
        self
    }

    /// Home workspace `team` of Enterprise Grid organisation `enterprise`.
    pub fn in_org(mut self, team: &str, enterprise: &str) -> Self {
        self.team_id = Some(team.into());
        self.enterprise_id = Some(enterprise.into());
        self
    }

    pub fn email(mut self, email: &str) -> Self {
        self.email = Some(email.into());
        self
    }

    pub fn tz(mut self, tz: &str) -> Self {
        self.tz = tz.into();
        self
    }

    pub fn real_name(mut self, n: &str) -> Self {
        self.real_name = n.into();
        self
    }

    fn to_json(&self) -> Value {
        let mut profile = json!({
            "real_name": self.real_name, "display_name": self.name,
            "real_name_normalized": self.real_name, "display_name_normalized": self.name,
            "team": TEAM_ID, "image_24": "https://example.invalid/a.jpg",
        });
        if let Some(e) = &self.email {
            profile["email"] = json!(e);
        }
        let team = self.team_id.as_deref().unwrap_or(TEAM_ID);
        let mut user = json!({
            "id": self.id, "team_id": team, "name": self.name, "deleted": self.deleted,
            "real_name": self.real_name, "tz": self.tz, "tz_label": self.tz, "tz_offset": 0,
            "profile": profile, "is_admin": false, "is_owner": false, "is_bot": self.is_bot,
            "is_app_user": false, "updated": 1502138686,
            "is_restricted": self.is_restricted, "is_ultra_restricted": self.is_ultra_restricted,
        });
        // Slack only sends `is_stranger` for Slack Connect users, and `enterprise_user` on Grid.
        if self.is_stranger {
            user["is_stranger"] = json!(true);
        }
        if let Some(e) = &self.enterprise_id {
            user["enterprise_user"] = json!({
                "id": self.id, "enterprise_id": e, "enterprise_name": "Grid",
                "is_admin": false, "is_owner": false, "teams": [team],
            });
        }
        user
    }
}

/// What to do to the next call(s) of a method.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// HTTP 429, `Retry-After: secs`, body `{"ok":false,"error":"ratelimited"}`.
    RateLimit { retry_after_secs: u64 },
    /// HTTP 200 `{"ok":false,"error":"rate_limited"}` (chat.postMessage's own spelling).
    RateLimited200,
    /// HTTP 200 `{"ok":false,"error":code}`.
    Error(String),
    /// HTTP 503 with an HTML outage page.
    ServerError,
    /// Sleep this long before answering (normally).
    Hang(Duration),
    /// Serve the call (its effect lands), then hold the answer back this long: a client that
    /// gives up sooner sees a time-out for a call that happened (a lost answer).
    LoseAnswer(Duration),
}

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Web API method (`chat.postMessage`), or `response_url` / `upload`.
    pub method: String,
    pub http_method: String,
    /// Query, form and (for JSON-capable methods) JSON arguments merged into one object.
    pub args: Value,
    pub body: String,
    pub content_type: String,
    /// The bearer token sent, if any.
    pub token: Option<String>,
    pub at: Instant,
    /// HTTP status answered.
    pub status: u16,
    /// `error` of the envelope, when `ok:false`.
    pub error: Option<String>,
}

/// A message in a channel, with its edit history.
#[derive(Debug, Clone)]
pub struct FakeMessage {
    pub channel: String,
    pub ts: String,
    pub text: String,
    pub blocks: Value,
    /// Earlier versions (text, blocks), oldest first.
    pub history: Vec<(String, Value)>,
    /// `metadata` given to chat.postMessage (`{"event_type", "event_payload"}`).
    pub metadata: Option<Value>,
}

impl FakeMessage {
    /// Text and every text inside the blocks, for `contains` assertions.
    pub fn all_text(&self) -> String {
        let mut s = self.text.clone();
        collect_text(&self.blocks, &mut s);
        s
    }

    /// `(action_id, value)` of every button in the blocks.
    pub fn buttons(&self) -> Vec<(String, String)> {
        buttons(&self.blocks)
    }
}

/// A message only one user sees.
#[derive(Debug, Clone)]
pub struct Ephemeral {
    pub channel: String,
    pub user: String,
    pub text: String,
}

/// A file that completed the upload flow.
#[derive(Debug, Clone)]
pub struct FakeFile {
    pub id: String,
    pub filename: String,
    pub title: String,
    pub channel_id: Option<String>,
    pub initial_comment: Option<String>,
    pub content: Vec<u8>,
}

#[derive(Debug, Default)]
struct PendingUpload {
    filename: String,
    length: usize,
    content: Option<Vec<u8>>,
}

#[derive(Debug)]
struct Inner {
    tokens: HashSet<String>,
    /// Granted scopes of tokens that do not have them all (see `set_token_scopes`).
    token_scopes: HashMap<String, Vec<String>>,
    users: HashMap<String, FakeUser>,
    /// id → name
    channels: HashMap<String, String>,
    usergroups: HashMap<String, Vec<String>>,
    messages: Vec<FakeMessage>,
    ephemerals: Vec<Ephemeral>,
    views_opened: Vec<Value>,
    home_views: Vec<(String, Value)>,
    uploads: HashMap<String, PendingUpload>,
    files: Vec<FakeFile>,
    responses: HashMap<String, Vec<Value>>,
    triggers: HashMap<String, (Instant, bool)>,
    faults: HashMap<String, VecDeque<Fault>>,
    hangs: HashMap<String, Duration>,
    calls: Vec<Call>,
    counter: u64,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    base: String,
}

/// The fake. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeSlack {
    addr: SocketAddr,
    shared: Arc<Shared>,
    faults: crate::faults::FaultSlot,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeSlack {
    /// Starts on 127.0.0.1:0 with the bot user, token [`BOT_TOKEN`] and no other data.
    pub async fn start() -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake slack");
        let addr = listener.local_addr().expect("local addr");
        let mut users = HashMap::new();
        let mut bot = FakeUser::new(BOT_USER_ID, "gatehouse");
        bot.is_bot = true;
        users.insert(BOT_USER_ID.to_string(), bot);
        let faults = crate::faults::FaultSlot::new(crate::faults::Service::Slack);
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            inner: Mutex::new(Inner {
                tokens: HashSet::from([BOT_TOKEN.to_string()]),
                token_scopes: HashMap::new(),
                users,
                channels: HashMap::new(),
                usergroups: HashMap::new(),
                messages: vec![],
                ephemerals: vec![],
                views_opened: vec![],
                home_views: vec![],
                uploads: HashMap::new(),
                files: vec![],
                responses: HashMap::new(),
                triggers: HashMap::new(),
                faults: HashMap::new(),
                hangs: HashMap::new(),
                calls: vec![],
                counter: 0,
            }),
        });
        let app = Router::new()
            .route("/api/{method}", any(api))
            .route("/upload/{file_id}", post(upload))
            .route("/response/{id}", post(response_url))
            .with_state(shared.clone())
            .layer(axum::middleware::from_fn_with_state(
                faults.clone(),
                crate::faults::layer,
            ));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeSlack {
            addr,
            shared,
            faults,
            task,
        }
    }

    /// Every call from now on consults `injector` (`None`: no more injected faults).
    pub fn set_fault_injector(&self, injector: Option<Arc<crate::faults::FaultInjector>>) {
        self.faults.set(injector);
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.shared.inner.lock().unwrap();
        f(&mut g)
    }

    /// `http://127.0.0.1:{port}/api`: what `SLACK_API_URL` should be set to.
    pub fn api_url(&self) -> String {
        format!("{}/api", self.shared.base)
    }

    pub fn base_url(&self) -> String {
        self.shared.base.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token(&self) -> &'static str {
        BOT_TOKEN
    }

    pub fn add_token(&self, token: &str) {
        self.with(|i| i.tokens.insert(token.to_string()));
    }

    /// Restricts `token` to `scopes` (tokens start with every scope). Only the scopes a method
    /// of the fake checks matter: `channels:history`, `groups:history`, `im:history`
    /// (conversations.history), `channels:read`, `groups:read` (conversations.list).
    pub fn set_token_scopes(&self, token: &str, scopes: &[&str]) {
        self.with(|i| {
            i.token_scopes.insert(
                token.to_string(),
                scopes.iter().map(|s| s.to_string()).collect(),
            )
        });
    }

    pub fn add_user(&self, user: FakeUser) {
        self.with(|i| i.users.insert(user.id.clone(), user));
    }

    pub fn add_channel(&self, id: &str, name: &str) {
        self.with(|i| i.channels.insert(id.to_string(), name.to_string()));
    }

    pub fn add_usergroup(&self, id: &str, members: &[&str]) {
        self.with(|i| {
            i.usergroups.insert(
                id.to_string(),
                members.iter().map(|s| s.to_string()).collect(),
            )
        });
    }

    /// A fresh `response_url` (valid for five posts).
    pub fn response_url(&self) -> String {
        let n = self.with(|i| {
            i.counter += 1;
            let id = format!("R{:06}", i.counter);
            i.responses.insert(id.clone(), vec![]);
            id
        });
        format!("{}/response/{n}", self.shared.base)
    }

    /// A fresh `trigger_id` (valid for 3 s, once).
    pub fn trigger_id(&self) -> String {
        self.with(|i| {
            i.counter += 1;
            let id = format!(
                "{}.{}.fake{:x}",
                i.counter,
                47445629121u64,
                fastrand::u64(..)
            );
            i.triggers.insert(id.clone(), (Instant::now(), false));
            id
        })
    }

    /// What was posted to a response_url, in order.
    pub fn responses(&self, url: &str) -> Vec<Value> {
        let id = url.rsplit('/').next().unwrap_or_default().to_string();
        self.with(|i| i.responses.get(&id).cloned().unwrap_or_default())
    }

    /// Makes the next call of `method` fail as `fault` (queued: call several times for several).
    /// `method` may be `response_url` or `upload`.
    pub fn fail_next(&self, method: &str, fault: Fault) {
        self.with(|i| {
            i.faults
                .entry(method.to_string())
                .or_default()
                .push_back(fault)
        });
    }

    /// Every call of `method` (`*` for all) waits `d` before answering, until cleared with `None`.
    pub fn set_hang(&self, method: &str, d: Option<Duration>) {
        self.with(|i| match d {
            Some(d) => {
                i.hangs.insert(method.to_string(), d);
            }
            None => {
                i.hangs.remove(method);
            }
        });
    }

    /// How many calls of `method` (`*` for all) were received, without copying them: cheap
    /// enough to poll while a load benchmark has recorded hundreds of thousands of calls.
    pub fn call_count(&self, method: &str) -> usize {
        self.with(|i| {
            if method == "*" {
                i.calls.len()
            } else {
                i.calls.iter().filter(|c| c.method == method).count()
            }
        })
    }

    pub fn calls(&self) -> Vec<Call> {
        self.with(|i| i.calls.clone())
    }

    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        self.with(|i| {
            i.calls
                .iter()
                .filter(|c| c.method == method)
                .cloned()
                .collect()
        })
    }

    /// Current state of every channel message (DMs included), in posting order.
    pub fn messages(&self) -> Vec<FakeMessage> {
        self.with(|i| i.messages.clone())
    }

    /// Messages in one channel (an id, or a user id for DMs to that user).
    pub fn messages_in(&self, channel: &str) -> Vec<FakeMessage> {
        let id = self
            .with(|i| resolve_channel(i, channel))
            .unwrap_or_else(|| channel.to_string());
        self.messages()
            .into_iter()
            .filter(|m| m.channel == id)
            .collect()
    }

    /// Messages (DMs included) for which `pred` holds, filtered under the lock: cheap polling of
    /// a fake holding thousands of messages (the chaos test polls it from many tasks).
    pub fn messages_where(&self, pred: impl Fn(&FakeMessage) -> bool) -> Vec<FakeMessage> {
        self.with(|i| i.messages.iter().filter(|m| pred(m)).cloned().collect())
    }

    /// DMs the bot sent to `user`.
    pub fn dms_to(&self, user: &str) -> Vec<FakeMessage> {
        self.messages_in(&dm_id(user))
    }

    pub fn message(&self, channel: &str, ts: &str) -> Option<FakeMessage> {
        self.messages()
            .into_iter()
            .find(|m| m.channel == channel && m.ts == ts)
    }

    pub fn ephemerals(&self) -> Vec<Ephemeral> {
        self.with(|i| i.ephemerals.clone())
    }

    pub fn views_opened(&self) -> Vec<Value> {
        self.with(|i| i.views_opened.clone())
    }

    /// The last Home view published for `user`.
    pub fn home_view(&self, user: &str) -> Option<Value> {
        self.with(|i| {
            i.home_views
                .iter()
                .rev()
                .find(|(u, _)| u == user)
                .map(|(_, v)| v.clone())
        })
    }

    pub fn files(&self) -> Vec<FakeFile> {
        self.with(|i| i.files.clone())
    }

    /// Waits until `pred` holds (polling every 10 ms) or `timeout` passes; returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&FakeSlack) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The DM channel id the fake uses for a user: `D` + the id without its first letter.
pub fn dm_id(user: &str) -> String {
    format!("D{}", &user[1.min(user.len())..])
}

fn resolve_channel(i: &Inner, channel: &str) -> Option<String> {
    let c = channel.trim_start_matches('#');
    if i.channels.contains_key(c) {
        return Some(c.to_string());
    }
    if let Some((id, _)) = i.channels.iter().find(|(_, name)| name.as_str() == c) {
        return Some(id.clone());
    }
    if (c.starts_with('U') || c.starts_with('W')) && i.users.contains_key(c) {
        return Some(dm_id(c));
    }
    if c.starts_with('D') && i.users.keys().any(|u| dm_id(u) == c) {
        return Some(c.to_string());
    }
    None
}

fn collect_text(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(t)) = m.get("text") {
                out.push('\n');
                out.push_str(t);
            }
            for (k, x) in m {
                if k != "text" || !x.is_string() {
                    collect_text(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_text(x, out)),
        _ => {}
    }
}

fn buttons(v: &Value) -> Vec<(String, String)> {
    let mut out = vec![];
    fn walk(v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                if m.get("type") == Some(&json!("button")) {
                    out.push((
                        m.get("action_id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        m.get("value")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    ));
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

fn envelope_err(error: &str) -> (StatusCode, Value) {
    (StatusCode::OK, json!({"ok": false, "error": error}))
}

fn form_to_map(s: &str) -> Map<String, Value> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(s)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

/// Takes the queued fault for `method`, or the standing hang.
fn take_fault(shared: &Shared, method: &str) -> (Option<Fault>, Option<Duration>) {
    let mut i = shared.inner.lock().unwrap();
    let fault = i.faults.get_mut(method).and_then(VecDeque::pop_front);
    let hang = i.hangs.get(method).or_else(|| i.hangs.get("*")).copied();
    (fault, hang)
}

/// Applies a fault; `Some(response)` means answer with it and skip the method.
async fn apply_fault(
    fault: Option<Fault>,
    hang: Option<Duration>,
) -> Option<(StatusCode, HeaderMap, String)> {
    if let Some(d) = hang {
        tokio::time::sleep(d).await;
    }
    let json_headers = || {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        h
    };
    match fault? {
        // Served first; the caller holds the answer back.
        Fault::LoseAnswer(_) => None,
        Fault::Hang(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Fault::RateLimit { retry_after_secs } => {
            let mut h = json_headers();
            h.insert(
                "retry-after",
                HeaderValue::from_str(&retry_after_secs.to_string()).unwrap(),
            );
            Some((
                StatusCode::TOO_MANY_REQUESTS,
                h,
                json!({"ok": false, "error": "ratelimited"}).to_string(),
            ))
        }
        Fault::RateLimited200 => Some((
            StatusCode::OK,
            json_headers(),
            json!({"ok": false, "error": "rate_limited"}).to_string(),
        )),
        Fault::Error(code) => Some((
            StatusCode::OK,
            json_headers(),
            json!({"ok": false, "error": code}).to_string(),
        )),
        Fault::ServerError => {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            Some((
                StatusCode::SERVICE_UNAVAILABLE,
                h,
                "<!DOCTYPE html><html><head><title>Server Error | Slack</title></head><body>Slack is having trouble.</body></html>"
                    .to_string(),
            ))
        }
    }
}

fn record(shared: &Shared, mut call: Call, status: u16, body: &str) {
    call.status = status;
    call.error = serde_json::from_str::<Value>(body)
        .ok()
        .filter(|v| v.get("ok") == Some(&json!(false)))
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string));
    shared.inner.lock().unwrap().calls.push(call);
}

async fn api(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    http_method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body_text = String::from_utf8_lossy(&body).to_string();
    let mut args = query.as_deref().map(form_to_map).unwrap_or_default();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        args.extend(form_to_map(&body_text));
    } else if content_type.starts_with("application/json")
        && JSON_METHODS.contains(&method.as_str())
        && let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&body)
    {
        args.extend(m);
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let token = bearer.or_else(|| {
        args.get("token")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let call = Call {
        method: method.clone(),
        http_method: http_method.to_string(),
        args: Value::Object(args.clone()),
        body: body_text,
        content_type,
        token: token.clone(),
        at: Instant::now(),
        status: 0,
        error: None,
    };

    let (fault, hang) = take_fault(&shared, &method);
    let lose_answer = match &fault {
        Some(Fault::LoseAnswer(d)) => Some(*d),
        _ => None,
    };
    if let Some((status, h, b)) = apply_fault(fault, hang).await {
        record(&shared, call, status.as_u16(), &b);
        return (status, h, b).into_response();
    }

    let (status, v) = {
        let mut i = shared.inner.lock().unwrap();
        match token {
            None => envelope_err("not_authed"),
            Some(t) if !i.tokens.contains(&t) => envelope_err("invalid_auth"),
            Some(t) => dispatch(&mut i, &shared.base, &method, &args, &t),
        }
    };
    let b = v.to_string();
    record(&shared, call, status.as_u16(), &b);
    if let Some(d) = lose_answer {
        // The effect has landed; the client stops waiting before this answer comes.
        tokio::time::sleep(d).await;
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        b,
    )
        .into_response()
}

fn s<'a>(args: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    args.get(k)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
}

fn missing(field: &str) -> (StatusCode, Value) {
    (
        StatusCode::OK,
        json!({"ok": false, "error": "invalid_arguments", "response_metadata": {"messages": [format!("[ERROR] missing required field: {field}")]}}),
    )
}

fn next_ts(i: &mut Inner) -> String {
    i.counter += 1;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs}.{:06}", i.counter)
}

/// A `blocks` argument that is an empty array: Slack's Block Kit validation refuses it
/// (`invalid_blocks`); a text-only message must leave the field out.
/// `conversations.history`: ids only; newest first; `oldest`/`latest` exclusive unless
/// `inclusive`; `limit` (default 100, at most 999) per page, `cursor` from
/// `response_metadata.next_cursor`.
fn conversations_history(
    i: &mut Inner,
    args: &Map<String, Value>,
    token: &str,
) -> (StatusCode, Value) {
    let Some(channel) = s(args, "channel") else {
        return envelope_err("channel_not_found");
    };
    let known = i.channels.contains_key(channel) || i.users.keys().any(|u| dm_id(u) == channel);
    if !known {
        return envelope_err("channel_not_found");
    }
    let needed = match channel.as_bytes()[0] {
        b'D' => "im:history",
        b'G' => "groups:history",
        _ => "channels:history",
    };
    if let Some(granted) = i.token_scopes.get(token)
        && !granted.iter().any(|g| g == needed)
    {
        return (
            StatusCode::OK,
            json!({"ok": false, "error": "missing_scope", "needed": needed, "provided": granted.join(",")}),
        );
    }
    let flag = |k: &str| {
        args.get(k)
            .is_some_and(|v| matches!(v.as_str(), Some("true" | "1")) || v == &json!(true))
    };
    let inclusive = flag("inclusive");
    let with_metadata = flag("include_all_metadata");
    let ts_of = |k: &str| -> Result<Option<f64>, ()> {
        match s(args, k) {
            None => Ok(None),
            Some(v) => v.parse::<f64>().map(Some).map_err(|_| ()),
        }
    };
    let (Ok(oldest), Ok(latest)) = (ts_of("oldest"), ts_of("latest")) else {
        return envelope_err("invalid_ts_oldest");
    };
    let limit = match s(args, "limit").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) => n.clamp(1, 999),
        Some(Err(_)) => return envelope_err("invalid_limit"),
    };
    let start = match s(args, "cursor") {
        None => 0,
        Some(c) => match c
            .strip_prefix("bmV4dF9vZmZzZXQ6")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return envelope_err("invalid_cursor"),
        },
    };
    let mut in_window: Vec<&FakeMessage> = i
        .messages
        .iter()
        .filter(|m| m.channel == channel)
        .filter(|m| {
            let ts: f64 = m.ts.parse().unwrap_or(0.0);
            let after = oldest.is_none_or(|o| if inclusive { ts >= o } else { ts > o });
            let before = latest.is_none_or(|l| if inclusive { ts <= l } else { ts < l });
            after && before
        })
        .collect();
    // Newest first; ts strings of the fake sort as numbers of equal width.
    in_window.sort_by(|a, b| {
        let (x, y): (f64, f64) = (a.ts.parse().unwrap_or(0.0), b.ts.parse().unwrap_or(0.0));
        y.total_cmp(&x)
    });
    let page: Vec<Value> = in_window
        .iter()
        .skip(start)
        .take(limit)
        .map(|m| {
            let mut v = json!({"type": "message", "subtype": "bot_message", "bot_id": "B0BOT",
                               "user": BOT_USER_ID, "text": m.text, "ts": m.ts, "blocks": m.blocks});
            if with_metadata && let Some(md) = &m.metadata {
                v["metadata"] = md.clone();
            }
            v
        })
        .collect();
    let has_more = start + page.len() < in_window.len();
    let next_cursor = if has_more {
        format!("bmV4dF9vZmZzZXQ6{}", start + page.len())
    } else {
        String::new()
    };
    let mut v = json!({"ok": true, "messages": page, "has_more": has_more, "pin_count": 0,
                       "channel_actions_ts": null, "channel_actions_count": 0});
    if has_more {
        v["response_metadata"] = json!({"next_cursor": next_cursor});
    }
    (StatusCode::OK, v)
}

fn empty_blocks(args: &Map<String, Value>) -> bool {
    args.contains_key("blocks") && blocks_arg(args).as_array().is_some_and(Vec::is_empty)
}

/// `blocks` may come as a JSON array (JSON body) or a JSON string (form body).
fn blocks_arg(args: &Map<String, Value>) -> Value {
    match args.get("blocks") {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
        Some(v) => v.clone(),
        None => Value::Null,
    }
}

fn dispatch(
    i: &mut Inner,
    base: &str,
    method: &str,
    args: &Map<String, Value>,
    token: &str,
) -> (StatusCode, Value) {
    let ok = |v: Value| {
        let mut v = v;
        v["ok"] = json!(true);
        (StatusCode::OK, v)
    };
    match method {
        "auth.test" => ok(
            json!({"url": "https://fake.slack.com/", "team": "Fake", "user": "gatehouse",
                                 "team_id": TEAM_ID, "user_id": BOT_USER_ID, "bot_id": "B0BOT"}),
        ),
        "chat.postMessage" => {
            let Some(channel) = s(args, "channel") else {
                return envelope_err("channel_not_found");
            };
            let text = s(args, "text").unwrap_or_default().to_string();
            let blocks = blocks_arg(args);
            if empty_blocks(args) {
                return envelope_err("invalid_blocks");
            }
            if text.is_empty() && !blocks.is_array() {
                return envelope_err("no_text");
            }
            let Some(id) = resolve_channel(i, channel) else {
                return envelope_err("channel_not_found");
            };
            // A JSON object (JSON body) or a JSON string (form body).
            let metadata = match args.get("metadata") {
                None => None,
                Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                    Ok(v) => Some(v),
                    Err(_) => return envelope_err("invalid_metadata_format"),
                },
                Some(v) => Some(v.clone()),
            };
            if let Some(m) = &metadata {
                let well_formed = m
                    .get("event_type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| !t.is_empty())
                    && m.get("event_payload").is_some_and(Value::is_object);
                if !well_formed {
                    return envelope_err("invalid_metadata_format");
                }
            }
            let ts = next_ts(i);
            i.messages.push(FakeMessage {
                channel: id.clone(),
                ts: ts.clone(),
                text: text.clone(),
                blocks,
                history: vec![],
                metadata,
            });
            ok(
                json!({"channel": id, "ts": ts, "message": {"text": text, "type": "message", "subtype": "bot_message",
                      "bot_id": "B0BOT", "ts": ts}}),
            )
        }
        "conversations.history" => conversations_history(i, args, token),
        "conversations.list" => {
            // Both channel types are asked for; each needs its own read scope.
            let types = s(args, "types").unwrap_or("public_channel");
            for (t, needed) in [
                ("public_channel", "channels:read"),
                ("private_channel", "groups:read"),
            ] {
                if types.split(',').any(|x| x.trim() == t)
                    && let Some(granted) = i.token_scopes.get(token)
                    && !granted.iter().any(|g| g == needed)
                {
                    return (
                        StatusCode::OK,
                        json!({"ok": false, "error": "missing_scope", "needed": needed, "provided": granted.join(",")}),
                    );
                }
            }
            let limit = s(args, "limit")
                .and_then(|l| l.parse::<usize>().ok())
                .unwrap_or(100)
                .clamp(1, 1000);
            let start = match s(args, "cursor") {
                None => 0,
                Some(c) => match c
                    .strip_prefix("bmV4dF9vZmZzZXQ6")
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    Some(n) => n,
                    None => return envelope_err("invalid_cursor"),
                },
            };
            let mut all: Vec<(&String, &String)> = i.channels.iter().collect();
            all.sort();
            let page: Vec<Value> = all
                .iter()
                .skip(start)
                .take(limit)
                .map(|(id, name)| {
                    json!({"id": id, "name": name, "is_channel": !id.starts_with('G'),
                                          "is_private": id.starts_with('G'), "is_archived": false})
                })
                .collect();
            let next = if start + page.len() < all.len() {
                format!("bmV4dF9vZmZzZXQ6{}", start + page.len())
            } else {
                String::new()
            };
            ok(json!({"channels": page, "response_metadata": {"next_cursor": next}}))
        }
        "chat.update" => {
            let (Some(channel), Some(ts)) = (s(args, "channel"), s(args, "ts")) else {
                return missing("channel/ts");
            };
            // chat.update takes ids only, not names.
            let known =
                i.channels.contains_key(channel) || i.users.keys().any(|u| dm_id(u) == channel);
            if !known {
                return envelope_err("channel_not_found");
            }
            let text = s(args, "text").unwrap_or_default().to_string();
            let blocks = blocks_arg(args);
            if empty_blocks(args) {
                return envelope_err("invalid_blocks");
            }
            let Some(m) = i
                .messages
                .iter_mut()
                .find(|m| m.channel == channel && m.ts == ts)
            else {
                return envelope_err("message_not_found");
            };
            let old = (std::mem::take(&mut m.text), std::mem::take(&mut m.blocks));
            m.history.push(old);
            m.text = text.clone();
            m.blocks = blocks;
            ok(json!({"channel": channel, "ts": ts, "text": text}))
        }
        "chat.postEphemeral" => {
            let (Some(channel), Some(user)) = (s(args, "channel"), s(args, "user")) else {
                return missing("channel/user");
            };
            let Some(id) = resolve_channel(i, channel) else {
                return envelope_err("channel_not_found");
            };
            if !i.users.contains_key(user) {
                return envelope_err("user_not_in_channel");
            }
            let text = s(args, "text").unwrap_or_default().to_string();
            i.ephemerals.push(Ephemeral {
                channel: id,
                user: user.to_string(),
                text,
            });
            let ts = next_ts(i);
            ok(json!({"message_ts": ts}))
        }
        "users.info" => {
            let Some(user) = s(args, "user") else {
                return missing("user");
            };
            match i.users.get(user) {
                Some(u) => ok(json!({"user": u.to_json()})),
                None => envelope_err("user_not_found"),
            }
        }
        "users.lookupByEmail" => {
            let Some(email) = s(args, "email") else {
                return missing("email");
            };
            match i.users.values().find(|u| {
                u.email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(email))
            }) {
                Some(u) => ok(json!({"user": u.to_json()})),
                None => envelope_err("users_not_found"),
            }
        }
        "conversations.open" => {
            let Some(users) = s(args, "users") else {
                return envelope_err("users_list_not_supplied");
            };
            let first = users.split(',').next().unwrap_or_default().trim();
            if !i.users.contains_key(first) {
                return envelope_err("user_not_found");
            }
            ok(json!({"channel": {"id": dm_id(first)}}))
        }
        "views.open" => {
            let Some(trigger) = s(args, "trigger_id") else {
                return missing("trigger_id");
            };
            if !args.get("view").is_some_and(Value::is_object) {
                return missing("view");
            }
            match i.triggers.get_mut(trigger) {
                None => (
                    StatusCode::OK,
                    json!({"ok": false, "error": "invalid_arguments", "response_metadata": {"messages": ["invalid `trigger_id`"]}}),
                ),
                Some((_, true)) => envelope_err("exchanged_trigger_id"),
                Some((at, _)) if at.elapsed() > Duration::from_secs(3) => {
                    envelope_err("expired_trigger_id")
                }
                Some(t) => {
                    t.1 = true;
                    let mut view = args["view"].clone();
                    i.counter += 1;
                    view["id"] = json!(format!("V{:06}", i.counter));
                    i.views_opened.push(view.clone());
                    ok(json!({"view": view}))
                }
            }
        }
        "views.publish" => {
            let Some(user) = s(args, "user_id") else {
                return missing("user_id");
            };
            if !i.users.contains_key(user) {
                return (
                    StatusCode::OK,
                    json!({"ok": false, "error": "invalid_arguments", "response_metadata": {"messages": ["invalid `user_id`"]}}),
                );
            }
            let Some(view) = args.get("view").filter(|v| v.is_object()).cloned() else {
                return missing("view");
            };
            i.home_views.push((user.to_string(), view.clone()));
            ok(json!({"view": view}))
        }
        "usergroups.users.list" => {
            let Some(g) = s(args, "usergroup") else {
                return missing("usergroup");
            };
            match i.usergroups.get(g) {
                Some(users) => ok(json!({"users": users})),
                None => envelope_err("no_such_subteam"),
            }
        }
        "files.getUploadURLExternal" => {
            let Some(filename) = s(args, "filename") else {
                return missing("filename");
            };
            let Some(length) = s(args, "length").and_then(|l| l.parse::<usize>().ok()) else {
                return missing("length");
            };
            if length == 0 {
                return envelope_err("missing_argument");
            }
            i.counter += 1;
            let id = format!("F{:08}", i.counter);
            i.uploads.insert(
                id.clone(),
                PendingUpload {
                    filename: filename.to_string(),
                    length,
                    content: None,
                },
            );
            ok(json!({"upload_url": format!("{base}/upload/{id}"), "file_id": id}))
        }
        "files.completeUploadExternal" => {
            let files = match args.get("files") {
                Some(Value::String(s)) => serde_json::from_str::<Value>(s).unwrap_or(Value::Null),
                Some(v) => v.clone(),
                None => return missing("files"),
            };
            let Some(list) = files.as_array().filter(|a| !a.is_empty()) else {
                return envelope_err("invalid_arguments");
            };
            let channel_id = s(args, "channel_id").map(str::to_string);
            if let Some(c) = &channel_id
                && resolve_channel(i, c).as_deref() != Some(c.as_str())
            {
                return envelope_err("channel_not_found");
            }
            let mut done = vec![];
            for f in list {
                let id = f.get("id").and_then(Value::as_str).unwrap_or_default();
                match i.uploads.get(id) {
                    Some(PendingUpload {
                        content: Some(_), ..
                    }) => {}
                    _ => return envelope_err("file_not_found"),
                }
                done.push((
                    id.to_string(),
                    f.get("title").and_then(Value::as_str).map(str::to_string),
                ));
            }
            let comment = s(args, "initial_comment").map(str::to_string);
            let mut out = vec![];
            for (id, title) in done {
                if let Some(u) = i.uploads.remove(&id) {
                    let title = title.unwrap_or_else(|| u.filename.clone());
                    out.push(json!({"id": id, "title": title}));
                    i.files.push(FakeFile {
                        id,
                        filename: u.filename,
                        title,
                        channel_id: channel_id.clone(),
                        initial_comment: comment.clone(),
                        content: u.content.unwrap_or_default(),
                    });
                }
            }
            ok(json!({"files": out}))
        }
        _ => envelope_err("unknown_method"),
    }
}

async fn upload(
    State(shared): State<Arc<Shared>>,
    Path(file_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Call {
        method: "upload".into(),
        http_method: "POST".into(),
        args: json!({"file_id": file_id}),
        body: format!("<{} bytes>", body.len()),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        token: None,
        at: Instant::now(),
        status: 0,
        error: None,
    };
    let (fault, hang) = take_fault(&shared, "upload");
    if let Some((status, h, b)) = apply_fault(fault, hang).await {
        record(&shared, call, status.as_u16(), &b);
        return (status, h, b).into_response();
    }
    let (status, text) = {
        let mut i = shared.inner.lock().unwrap();
        match i.uploads.get_mut(&file_id) {
            Some(u) => {
                if body.len() != u.length {
                    tracing::warn!(
                        file_id,
                        announced = u.length,
                        got = body.len(),
                        "fake slack: upload length differs"
                    );
                }
                u.content = Some(body.to_vec());
                (StatusCode::OK, format!("OK - {}", body.len()))
            }
            None => (StatusCode::NOT_FOUND, "not found".to_string()),
        }
    };
    record(&shared, call, status.as_u16(), "");
    (status, text).into_response()
}

async fn response_url(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_text = String::from_utf8_lossy(&body).to_string();
    let call = Call {
        method: "response_url".into(),
        http_method: "POST".into(),
        args: serde_json::from_str(&body_text).unwrap_or(Value::Null),
        body: body_text.clone(),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        token: None,
        at: Instant::now(),
        status: 0,
        error: None,
    };
    let (fault, hang) = take_fault(&shared, "response_url");
    if let Some((status, h, b)) = apply_fault(fault, hang).await {
        record(&shared, call, status.as_u16(), &b);
        return (status, h, b).into_response();
    }
    let (status, text) = {
        let mut i = shared.inner.lock().unwrap();
        match (
            i.responses.get_mut(&id),
            serde_json::from_str::<Value>(&body_text),
        ) {
            (None, _) => (StatusCode::NOT_FOUND, "no_service"),
            (Some(v), _) if v.len() >= 5 => (StatusCode::NOT_FOUND, "used_url"),
            (Some(_), Err(_)) => (StatusCode::BAD_REQUEST, "invalid_payload"),
            (Some(v), Ok(j)) => {
                v.push(j);
                (StatusCode::OK, "ok")
            }
        }
    };
    record(&shared, call, status.as_u16(), text);
    (status, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

// ------------------------------------------------------------------------------------------------
// Requests Slack sends to an app: bodies and signatures.

/// Unix seconds now.
pub fn now_ts() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `v0=hex(HMAC-SHA256(secret, "v0:{ts}:{body}"))`, computed independently of the adapter.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    m.update(format!("v0:{timestamp}:").as_bytes());
    m.update(body.as_bytes());
    format!("v0={}", hex::encode(m.finalize().into_bytes()))
}

/// The two signing headers for `body` signed now.
pub fn signed_headers(secret: &str, body: &str) -> [(String, String); 2] {
    signed_headers_at(secret, body, now_ts())
}

pub fn signed_headers_at(secret: &str, body: &str, timestamp: i64) -> [(String, String); 2] {
    [
        (
            "x-slack-request-timestamp".to_string(),
            timestamp.to_string(),
        ),
        (
            "x-slack-signature".to_string(),
            sign(secret, timestamp, body),
        ),
    ]
}

/// A slash command as Slack posts it (form-encoded, external-apis.md A.2).
#[derive(Debug, Clone)]
pub struct SlashCommand {
    pub team_id: String,
    pub user_id: String,
    pub user_name: String,
    pub channel_id: String,
    pub command: String,
    pub text: String,
    pub response_url: String,
    pub trigger_id: String,
}

impl SlashCommand {
    pub fn new(
        command: &str,
        user_id: &str,
        text: &str,
        response_url: &str,
        trigger_id: &str,
    ) -> Self {
        Self {
            team_id: TEAM_ID.into(),
            user_id: user_id.into(),
            user_name: user_id.to_lowercase(),
            channel_id: "C0GENERAL".into(),
            command: command.into(),
            text: text.into(),
            response_url: response_url.into(),
            trigger_id: trigger_id.into(),
        }
    }

    pub fn body(&self) -> String {
        serde_urlencoded::to_string([
            ("token", "deprecated-verification-token"),
            ("team_id", &self.team_id),
            ("team_domain", "fake"),
            ("channel_id", &self.channel_id),
            ("channel_name", "general"),
            ("user_id", &self.user_id),
            ("user_name", &self.user_name),
            ("command", &self.command),
            ("text", &self.text),
            ("api_app_id", "A0GATEHOUSE"),
            ("is_enterprise_install", "false"),
            ("response_url", &self.response_url),
            ("trigger_id", &self.trigger_id),
        ])
        .unwrap()
    }
}

/// Wraps an interaction payload as Slack posts it: `payload=<url-encoded JSON>`.
pub fn interaction_body(payload: &Value) -> String {
    serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
}

/// A click's `action_ts`: like Slack's, `seconds.microseconds` and different for every click
/// (two clicks in the same microsecond get consecutive values).
pub fn action_ts() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut prev = LAST.load(Ordering::Relaxed);
    let micros = loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(p) => prev = p,
        }
    };
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// A `block_actions` payload for a button click on a channel message (external-apis.md A.4).
pub fn block_actions_payload(
    user_id: &str,
    action_id: &str,
    value: &str,
    channel_id: &str,
    message_ts: &str,
    response_url: &str,
    trigger_id: &str,
) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.to_lowercase(), "name": user_id.to_lowercase(), "team_id": TEAM_ID},
        "api_app_id": "A0GATEHOUSE",
        "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id, "is_ephemeral": false},
        "trigger_id": trigger_id,
        "team": {"id": TEAM_ID, "domain": "fake"},
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": {"id": channel_id, "name": "approvals"},
        "message": {"type": "message", "ts": message_ts, "text": "", "blocks": [], "bot_id": "B0BOT"},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [{
            "action_id": action_id, "block_id": "b", "type": "button",
            "text": {"type": "plain_text", "text": "Button", "emoji": true},
            "value": value, "action_ts": action_ts(),
        }]
    })
}

/// A `block_actions` payload for a button in the App Home (no message, no response_url).
pub fn home_block_actions_payload(
    user_id: &str,
    action_id: &str,
    value: &str,
    trigger_id: &str,
) -> Value {
    json!({
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.to_lowercase(), "name": user_id.to_lowercase(), "team_id": TEAM_ID},
        "api_app_id": "A0GATEHOUSE",
        "container": {"type": "view", "view_id": "VHOME"},
        "trigger_id": trigger_id,
        "team": {"id": TEAM_ID, "domain": "fake"},
        "view": {"id": "VHOME", "type": "home", "callback_id": "", "state": {"values": {}}},
        "actions": [{
            "action_id": action_id, "block_id": "b", "type": "button",
            "text": {"type": "plain_text", "text": "Button"}, "value": value,
            "action_ts": action_ts(),
        }]
    })
}

/// A `view_submission` payload. `values` is `view.state.values`, e.g.
/// `{"resource": {"value": {"type": "static_select", "selected_option": {"value": "dev"}}}}`.
pub fn view_submission_payload(user_id: &str, callback_id: &str, values: Value) -> Value {
    json!({
        "type": "view_submission",
        "team": {"id": TEAM_ID, "domain": "fake"},
        "user": {"id": user_id, "username": user_id.to_lowercase(), "name": user_id.to_lowercase(), "team_id": TEAM_ID},
        "api_app_id": "A0GATEHOUSE",
        "trigger_id": "1.2.view",
        "view": {
            "id": "VMODAL", "team_id": TEAM_ID, "type": "modal", "callback_id": callback_id,
            "private_metadata": "", "state": {"values": values}, "hash": "1.2",
        },
        "response_urls": []
    })
}

/// An Events API `event_callback` envelope (external-apis.md A.5).
pub fn event_callback(event_id: &str, event: Value) -> Value {
    json!({
        "token": "deprecated-verification-token",
        "team_id": TEAM_ID,
        "api_app_id": "A0GATEHOUSE",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": now_ts(),
        "authorizations": [{"enterprise_id": null, "team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": true, "is_enterprise_install": false}],
        "is_ext_shared_channel": false,
    })
}

/// A `message.im` event: `user` wrote `text` to the bot.
pub fn message_im_event(user: &str, text: &str) -> Value {
    json!({
        "type": "message", "channel_type": "im", "channel": dm_id(user), "user": user, "text": text,
        "ts": format!("{}.000100", now_ts()), "event_ts": format!("{}.000100", now_ts()), "team": TEAM_ID,
    })
}

/// An `app_home_opened` event for the Home tab.
pub fn app_home_opened_event(user: &str) -> Value {
    json!({"type": "app_home_opened", "user": user, "channel": dm_id(user), "tab": "home",
           "event_ts": format!("{}.000016", now_ts())})
}

/// `url_verification`, sent when the Request URL is saved.
pub fn url_verification(challenge: &str) -> Value {
    json!({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": challenge, "type": "url_verification"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_signing_vector() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            sign("8f742231b10e8888abcd99yyyzzz85a5", 1531420618, body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }
}
