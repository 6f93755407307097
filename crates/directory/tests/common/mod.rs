//! Shared test helpers: the fixture, a metrics recorder that remembers values, and a fake of
//! Slack's `usergroups.users.list`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};

pub const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/comprehensive_index_dump.json"
);

pub fn fixture_bytes() -> Vec<u8> {
    std::fs::read(FIXTURE).expect("fixture")
}

pub fn fixture_index() -> directory::OrgIndex {
    directory::OrgIndex::from_json(&fixture_bytes()).expect("fixture parses")
}

// ------------------------------------------------------------------------------------------------
// Metrics

#[derive(Default)]
struct Cell(Mutex<f64>);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        *self.0.lock().unwrap() += value as f64;
    }
    fn absolute(&self, value: u64) {
        *self.0.lock().unwrap() = value as f64;
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        *self.0.lock().unwrap() += value;
    }
    fn decrement(&self, value: f64) {
        *self.0.lock().unwrap() -= value;
    }
    fn set(&self, value: f64) {
        *self.0.lock().unwrap() = value;
    }
}

/// Remembers every counter and gauge by name (labels summed over).
#[derive(Default, Clone)]
pub struct TestRecorder {
    cells: Arc<Mutex<HashMap<String, Vec<Arc<Cell>>>>>,
}

impl TestRecorder {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let cell = Arc::new(Cell::default());
        self.cells
            .lock()
            .unwrap()
            .entry(key.name().to_owned())
            .or_default()
            .push(Arc::clone(&cell));
        cell
    }

    /// The value of a metric, summed over every registration (label set, call site).
    pub fn value(&self, name: &str) -> f64 {
        self.cells
            .lock()
            .unwrap()
            .get(name)
            .map(|cs| cs.iter().map(|c| *c.0.lock().unwrap()).sum())
            .unwrap_or(0.0)
    }

    /// The last value set on a gauge (gauges are set, not summed).
    pub fn gauge(&self, name: &str) -> Option<f64> {
        self.cells
            .lock()
            .unwrap()
            .get(name)
            .and_then(|cs| cs.last().map(|c| *c.0.lock().unwrap()))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

// ------------------------------------------------------------------------------------------------
// Fake Slack: usergroups.users.list only.

pub const BOT_TOKEN: &str = "xoxb-test-bot-token";

#[derive(Default)]
pub struct SlackState {
    pub groups: Mutex<HashMap<String, Vec<String>>>,
    pub requests: AtomicU64,
    /// The next N requests answer 429 with `Retry-After: retry_after_secs`.
    pub rate_limit_next: AtomicU32,
    pub retry_after_secs: AtomicU64,
    /// Answer every request with Slack's HTML outage page (HTTP 503).
    pub outage: Mutex<bool>,
}

pub struct FakeSlack {
    pub base_url: String,
    pub state: Arc<SlackState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeSlack {
    pub async fn start() -> Self {
        let state = Arc::new(SlackState::default());
        let app = Router::new()
            .route(
                "/api/usergroups.users.list",
                get(users_list).post(users_list_form),
            )
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url: format!("http://{addr}/api"),
            state,
            task,
        }
    }

    pub fn set_group(&self, id: &str, users: &[&str]) {
        self.state
            .groups
            .lock()
            .unwrap()
            .insert(id.to_owned(), users.iter().map(|u| u.to_string()).collect());
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn rate_limit(&self, next: u32, retry_after_secs: u64) {
        self.state
            .retry_after_secs
            .store(retry_after_secs, Ordering::SeqCst);
        self.state.rate_limit_next.store(next, Ordering::SeqCst);
    }

    pub fn set_outage(&self, on: bool) {
        *self.state.outage.lock().unwrap() = on;
    }
}

fn envelope(v: serde_json::Value) -> Response {
    // Slack answers API errors with HTTP 200 and ok:false.
    (StatusCode::OK, axum::Json(v)).into_response()
}

async fn users_list(
    State(s): State<Arc<SlackState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    answer(&s, &headers, &q)
}

async fn users_list_form(
    State(s): State<Arc<SlackState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut q: HashMap<String, String> = HashMap::new();
    for pair in body.split('&') {
        if let Some((k, v)) = pair.split_once('=') {
            q.insert(k.to_owned(), v.replace('+', " "));
        }
    }
    answer(&s, &headers, &q)
}

fn answer(s: &SlackState, headers: &HeaderMap, q: &HashMap<String, String>) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    if *s.outage.lock().unwrap() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><head><title>Server Error | Slack</title></head><body>Slack is having trouble</body></html>",
        )
            .into_response();
    }
    if s.rate_limit_next.load(Ordering::SeqCst) > 0 {
        s.rate_limit_next.fetch_sub(1, Ordering::SeqCst);
        let secs = s.retry_after_secs.load(Ordering::SeqCst).to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, secs)],
            axum::Json(serde_json::json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response();
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = auth
        .and_then(|a| a.strip_prefix("Bearer "))
        .or(q.get("token").map(String::as_str));
    match token {
        None => return envelope(serde_json::json!({"ok": false, "error": "not_authed"})),
        Some(t) if t != BOT_TOKEN => {
            return envelope(serde_json::json!({"ok": false, "error": "invalid_auth"}));
        }
        Some(_) => {}
    }
    let Some(group) = q.get("usergroup") else {
        return envelope(serde_json::json!({"ok": false, "error": "invalid_arguments"}));
    };
    match s.groups.lock().unwrap().get(group) {
        Some(users) => envelope(serde_json::json!({"ok": true, "users": users})),
        None => envelope(serde_json::json!({"ok": false, "error": "no_such_subteam"})),
    }
}
