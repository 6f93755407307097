//! A fake BigQuery REST API (v2) on `127.0.0.1:0`, for the `audit-bigquery` sink and anything else
//! that streams rows with `tabledata.insertAll`.
//!
//! It speaks the wire format of `external-apis.md` B.1/B.5 rather than echoing the client:
//!
//! - `POST /bigquery/v2/projects/{p}/datasets/{d}/tables/{t}/insertAll`: every row is checked
//!   against the table's schema (unknown field, wrong type, missing `REQUIRED` field, unparsable
//!   timestamp → an `insertErrors` entry for that row). `skipInvalidRows: false` (the default)
//!   inserts nothing when any row is bad and marks the good rows `stopped`; `true` inserts the
//!   good rows. `ignoreUnknownValues` drops unknown fields instead of failing the row. `insertId`
//!   de-duplicates (forever by default; [`FakeBigQuery::set_dedup_window`] makes it forget after
//!   a while, as real BigQuery does after about a minute).
//!   Optional request and row fields may be JSON `null`, as the Rust clients send them. HTTP 200
//!   even with row errors; 400 for an empty or oversized request (10 MiB, 50,000 rows).
//! - `POST …/datasets/{d}/tables` (tables.insert, 409 `duplicate` when it exists), `GET
//!   …/tables/{t}` (tables.get), `GET …/datasets/{d}`, `POST …/projects/{p}/datasets`.
//! - Unknown dataset or table: 404 with Google's error envelope (`reason: notFound`).
//! - `Authorization: Bearer …` required (401 `UNAUTHENTICATED` otherwise; a fixed token can be
//!   demanded with [`FakeBigQuery::start_with_token`]).
//! - Failure switches: an outage (503 `backendError` for every call), queued HTTP failures
//!   (429/500/403 `rateLimitExceeded`, …), per-row errors keyed by `insertId`, added latency.
//! - Everything stored and every call counted is readable by the test.
//!
//! ```no_run
//! # async fn demo() {
//! let bq = testkit::bigquery::FakeBigQuery::start().await;
//! bq.create_dataset("proj", "ci_chat_bot");
//! // point the client at bq.base_url(), export, then:
//! let rows = bq.rows("proj", "ci_chat_bot", "access_events");
//! # let _ = rows;
//! # }
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// BigQuery's request size limit for `insertAll`.
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;
/// BigQuery's row-count limit for one `insertAll` request.
pub const MAX_ROWS_PER_REQUEST: usize = 50_000;

/// How many calls of each kind the fake has answered (including refused ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub insert_all: u64,
    pub tables_insert: u64,
    pub tables_get: u64,
    pub datasets_get: u64,
    pub datasets_insert: u64,
    /// `tabledata.list` calls.
    pub tabledata_list: u64,
    /// Calls answered 503 because of the outage switch.
    pub outage_refused: u64,
    /// Calls answered 401.
    pub unauthenticated: u64,
    /// Calls answered with a queued failure ([`FakeBigQuery::fail_next`]).
    pub injected_failures: u64,
    /// Rows that arrived with an `insertId` already stored (acknowledged, not stored again).
    pub deduplicated_rows: u64,
}

/// One stored row.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub insert_id: Option<String>,
    pub json: Map<String, Value>,
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    ty: String,
    mode: String,
    fields: Vec<Field>,
}

#[derive(Debug)]
struct Table {
    resource: Value,
    schema: Vec<Field>,
    rows: Vec<StoredRow>,
    /// insertId → when it was first stored.
    seen_ids: HashMap<String, std::time::Instant>,
}

#[derive(Debug, Clone)]
struct InjectedRowError {
    reason: String,
    message: String,
    /// `None`: every time; `Some(n)`: the next n times.
    remaining: Option<u32>,
}

#[derive(Debug, Default)]
struct Inner {
    datasets: HashMap<(String, String), Value>,
    tables: HashMap<(String, String, String), Table>,
    outage: bool,
    /// Per upcoming call: `None` passes, `Some(status)` fails.
    fail_next: VecDeque<Option<u16>>,
    row_errors: HashMap<String, InjectedRowError>,
    latency: Duration,
    /// `None`: insertIds are remembered forever.
    dedup_window: Option<Duration>,
    calls: CallCounts,
    insert_all_sizes: Vec<(String, usize)>,
}

#[derive(Debug)]
struct Shared {
    token: Option<String>,
    inner: Mutex<Inner>,
    faults: crate::faults::FaultSlot,
}

/// The running fake. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeBigQuery {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeBigQuery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Key3 = (String, String, String);

fn key3(p: &str, d: &str, t: &str) -> Key3 {
    (p.to_string(), d.to_string(), t.to_string())
}

impl FakeBigQuery {
    /// Starts the fake; any non-empty bearer token is accepted.
    pub async fn start() -> Self {
        Self::start_inner(None).await
    }

    /// Starts the fake; only `Authorization: Bearer {token}` is accepted.
    pub async fn start_with_token(token: &str) -> Self {
        Self::start_inner(Some(token.to_string())).await
    }

    async fn start_inner(token: Option<String>) -> Self {
        let shared = Arc::new(Shared {
            token,
            inner: Mutex::new(Inner::default()),
            faults: crate::faults::FaultSlot::new(crate::faults::Service::BigQuery),
        });
        let app = Router::new()
            .route(
                "/bigquery/v2/projects/{p}/datasets/{d}/tables/{t}/insertAll",
                post(insert_all),
            )
            .route(
                "/bigquery/v2/projects/{p}/datasets/{d}/tables",
                post(tables_insert),
            )
            .route(
                "/bigquery/v2/projects/{p}/datasets/{d}/tables/{t}",
                get(tables_get),
            )
            .route(
                "/bigquery/v2/projects/{p}/datasets/{d}/tables/{t}/data",
                get(tabledata_list),
            )
            .route("/bigquery/v2/projects/{p}/datasets/{d}", get(datasets_get))
            .route("/bigquery/v2/projects/{p}/datasets", post(datasets_insert))
            .fallback(|| async {
                google_error(
                    StatusCode::NOT_FOUND,
                    "notFound",
                    "Not found: URL",
                    "NOT_FOUND",
                )
            })
            // The fake checks the 10 MiB limit itself so it can answer the way BigQuery does.
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES * 2))
            .with_state(shared.clone())
            .layer(axum::middleware::from_fn_with_state(
                shared.faults.clone(),
                crate::faults::layer,
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake bigquery");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// Every call from now on consults `injector` (`None`: no more injected faults).
    pub fn set_fault_injector(&self, injector: Option<Arc<crate::faults::FaultInjector>>) {
        self.shared.faults.set(injector);
    }

    /// `http://127.0.0.1:{port}`: what `BIGQUERY_API_URL` should be set to.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.shared.inner.lock().unwrap();
        f(&mut g)
    }

    /// Creates a dataset directly (as an operator would with `bq mk --dataset`).
    pub fn create_dataset(&self, project: &str, dataset: &str) {
        self.with(|i| {
            i.datasets.insert(
                (project.into(), dataset.into()),
                dataset_resource(project, dataset, "US"),
            );
        });
    }

    /// Creates a table directly. `fields` is a BigQuery `schema.fields` array, e.g.
    /// `[{"name":"ts","type":"TIMESTAMP","mode":"REQUIRED"}]`. Creates the dataset if needed.
    pub fn create_table(&self, project: &str, dataset: &str, table: &str, fields: Value) {
        let schema = parse_fields(&fields).expect("valid schema");
        let body = json!({
            "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
            "schema": {"fields": fields},
        });
        self.with(|i| {
            i.datasets
                .entry((project.into(), dataset.into()))
                .or_insert_with(|| dataset_resource(project, dataset, "US"));
            i.tables.insert(
                key3(project, dataset, table),
                new_table(project, dataset, table, body, schema),
            );
        });
    }

    /// The stored table resource (as tables.get returns it), if the table exists.
    pub fn table(&self, project: &str, dataset: &str, table: &str) -> Option<Value> {
        self.with(|i| i.tables.get(&key3(project, dataset, table)).map(table_view))
    }

    /// Whether a dataset exists.
    pub fn has_dataset(&self, project: &str, dataset: &str) -> bool {
        self.with(|i| {
            i.datasets
                .contains_key(&(project.to_string(), dataset.to_string()))
        })
    }

    /// The `json` of every stored row, in insertion order (empty for an unknown table).
    pub fn rows(&self, project: &str, dataset: &str, table: &str) -> Vec<Map<String, Value>> {
        self.stored_rows(project, dataset, table)
            .into_iter()
            .map(|r| r.json)
            .collect()
    }

    /// Every stored row with its `insertId`.
    pub fn stored_rows(&self, project: &str, dataset: &str, table: &str) -> Vec<StoredRow> {
        self.with(|i| {
            i.tables
                .get(&key3(project, dataset, table))
                .map(|t| t.rows.clone())
                .unwrap_or_default()
        })
    }

    pub fn row_count(&self, project: &str, dataset: &str, table: &str) -> usize {
        self.with(|i| {
            i.tables
                .get(&key3(project, dataset, table))
                .map(|t| t.rows.len())
                .unwrap_or(0)
        })
    }

    /// While on, every call is answered 503 `backendError` and nothing is stored.
    pub fn set_outage(&self, on: bool) {
        self.with(|i| i.outage = on);
    }

    /// The next `times` calls are answered with `status` (429 `rateLimitExceeded`, 403
    /// `rateLimitExceeded`, 500 `internalError`, 503 `backendError`, 400 `invalid`, …).
    pub fn fail_next(&self, status: u16, times: usize) {
        self.fail_later(0, status, times);
    }

    /// Lets `after_calls` calls through, then answers the next `times` with `status` (an outage
    /// that starts in the middle of a batch).
    pub fn fail_later(&self, after_calls: usize, status: u16, times: usize) {
        self.with(|i| {
            i.fail_next.extend(std::iter::repeat_n(None, after_calls));
            i.fail_next.extend(std::iter::repeat_n(Some(status), times));
        });
    }

    /// Rows with this `insertId` get a row-level error (`reason`, e.g. `invalid`, `backendError`)
    /// on every insert until cleared.
    pub fn inject_row_error(&self, insert_id: &str, reason: &str, message: &str) {
        self.with(|i| {
            i.row_errors.insert(
                insert_id.to_string(),
                InjectedRowError {
                    reason: reason.into(),
                    message: message.into(),
                    remaining: None,
                },
            );
        });
    }

    /// Like [`Self::inject_row_error`], for the next `times` inserts of that row only.
    pub fn inject_row_error_times(&self, insert_id: &str, reason: &str, message: &str, times: u32) {
        self.with(|i| {
            i.row_errors.insert(
                insert_id.to_string(),
                InjectedRowError {
                    reason: reason.into(),
                    message: message.into(),
                    remaining: Some(times),
                },
            );
        });
    }

    /// Drops queued failures not used yet.
    pub fn clear_failures(&self) {
        self.with(|i| i.fail_next.clear());
    }

    pub fn clear_row_errors(&self) {
        self.with(|i| i.row_errors.clear());
    }

    /// Added before every answer (to make clients time out).
    pub fn set_latency(&self, latency: Duration) {
        self.with(|i| i.latency = latency);
    }

    /// Forget insertIds older than `window`, as BigQuery does (its de-duplication is best-effort
    /// and lasts about a minute): a retry after the window stores the row again.
    pub fn set_dedup_window(&self, window: Option<Duration>) {
        self.with(|i| i.dedup_window = window);
    }

    pub fn calls(&self) -> CallCounts {
        self.with(|i| i.calls.clone())
    }

    /// `(table, number of rows)` of every insertAll request that reached validation, in order.
    pub fn insert_all_sizes(&self) -> Vec<(String, usize)> {
        self.with(|i| i.insert_all_sizes.clone())
    }
}

// ------------------------------------------------------------------------------------------------
// Handlers

type Shared3 = State<Arc<Shared>>;

/// A row that passed validation (its insertId and stored json), or its errors.
type CheckedRow = Result<(Option<String>, Map<String, Value>), Vec<Value>>;

enum Call {
    InsertAll,
    TablesInsert,
    TablesGet,
    DatasetsGet,
    DatasetsInsert,
    TabledataList,
}

/// The checks every call goes through, in the order Google's front end applies them as far as a
/// client can tell: outage, then authentication, then injected failures.
async fn gate(shared: &Shared, headers: &HeaderMap, call: Call) -> Result<(), Response> {
    let latency = {
        let mut i = shared.inner.lock().unwrap();
        let c = &mut i.calls;
        match call {
            Call::InsertAll => c.insert_all += 1,
            Call::TablesInsert => c.tables_insert += 1,
            Call::TablesGet => c.tables_get += 1,
            Call::DatasetsGet => c.datasets_get += 1,
            Call::DatasetsInsert => c.datasets_insert += 1,
            Call::TabledataList => c.tabledata_list += 1,
        }
        i.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut i = shared.inner.lock().unwrap();
    if i.outage {
        i.calls.outage_refused += 1;
        return Err(google_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "backendError",
            "The service is currently unavailable.",
            "UNAVAILABLE",
        ));
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let presented = auth.strip_prefix("Bearer ").map(str::trim).unwrap_or("");
    let ok = match &shared.token {
        Some(t) => presented == t,
        None => !presented.is_empty(),
    };
    if !ok {
        i.calls.unauthenticated += 1;
        let (reason, message) = if presented.is_empty() {
            (
                "required",
                "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            )
        } else {
            (
                "authError",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            )
        };
        return Err(google_error(
            StatusCode::UNAUTHORIZED,
            reason,
            message,
            "UNAUTHENTICATED",
        ));
    }
    if let Some(Some(status)) = i.fail_next.pop_front() {
        i.calls.injected_failures += 1;
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (reason, message, st) = match status {
            429 => (
                "rateLimitExceeded",
                "Exceeded rate limits: too many api requests per user per method for this user_method.",
                "RESOURCE_EXHAUSTED",
            ),
            403 => (
                "rateLimitExceeded",
                "Exceeded rate limits: too many table update operations for this table.",
                "PERMISSION_DENIED",
            ),
            400 => ("invalid", "Invalid request.", "INVALID_ARGUMENT"),
            500 => (
                "internalError",
                "An internal error occurred and the request could not be completed.",
                "INTERNAL",
            ),
            503 => (
                "backendError",
                "The service is currently unavailable.",
                "UNAVAILABLE",
            ),
            _ => ("backendError", "Injected failure.", "UNKNOWN"),
        };
        return Err(google_error(code, reason, message, st));
    }
    Ok(())
}

async fn insert_all(
    State(shared): Shared3,
    Path((p, d, t)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = gate(&shared, &headers, Call::InsertAll).await {
        return r;
    }
    if body.len() > MAX_REQUEST_BYTES {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!("Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes."),
            "INVALID_ARGUMENT",
        );
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return parse_error(),
    };
    let skip_invalid = req
        .get("skipInvalidRows")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ignore_unknown = req
        .get("ignoreUnknownValues")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let rows = match req.get("rows") {
        Some(Value::Array(rows)) if !rows.is_empty() => rows,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return google_error(
                StatusCode::BAD_REQUEST,
                "invalid",
                "No rows present in the request.",
                "INVALID_ARGUMENT",
            );
        }
        Some(_) => return parse_error(),
    };
    if rows.len() > MAX_ROWS_PER_REQUEST {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!(
                "too many rows present in the request, limit: {MAX_ROWS_PER_REQUEST} row count: {}.",
                rows.len()
            ),
            "INVALID_ARGUMENT",
        );
    }

    let mut guard = shared.inner.lock().unwrap();
    let inner = &mut *guard;
    if !inner.datasets.contains_key(&(p.clone(), d.clone())) {
        return not_found(&format!("Not found: Dataset {p}:{d}"));
    }
    let Some(table) = inner.tables.get_mut(&key3(&p, &d, &t)) else {
        return not_found(&format!("Not found: Table {p}:{d}.{t}"));
    };
    inner.insert_all_sizes.push((t.clone(), rows.len()));

    // Validate every row first: without skipInvalidRows one bad row stops them all.
    let mut checked: Vec<CheckedRow> = Vec::with_capacity(rows.len());
    for row in rows {
        let insert_id = match row.get("insertId") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let result = match row.get("json") {
            Some(Value::Object(obj)) => {
                validate_row(&table.schema, obj, ignore_unknown).map(|j| (insert_id.clone(), j))
            }
            _ => Err(vec![row_error(
                "invalid",
                "",
                "Row is missing its json object.",
            )]),
        };
        let result = match (
            result,
            insert_id
                .as_ref()
                .and_then(|id| inner.row_errors.get_mut(id)),
        ) {
            (Ok(_), Some(inj)) if inj.remaining != Some(0) => {
                if let Some(n) = inj.remaining.as_mut() {
                    *n -= 1;
                }
                Err(vec![row_error(&inj.reason, "", &inj.message)])
            }
            (r, _) => r,
        };
        checked.push(result);
    }
    inner.row_errors.retain(|_, e| e.remaining != Some(0));
    // An injected `insertErrors` answer: BigQuery failed some rows (`backendError`), and without
    // skipInvalidRows the rest are `stopped`: nothing of the request is inserted.
    if crate::faults::injected(&headers) == Some(crate::faults::FaultKind::RowErrors) {
        let n = checked.len();
        for (index, r) in checked.iter_mut().enumerate() {
            if r.is_ok() && (index % 2 == 0 || n == 1) {
                *r = Err(vec![row_error(
                    "backendError",
                    "",
                    "Error encountered during execution. Retrying may solve the problem.",
                )]);
            }
        }
    }

    let dedup_window = inner.dedup_window;
    let any_bad = checked.iter().any(Result::is_err);
    let mut insert_errors = Vec::new();
    for (index, result) in checked.into_iter().enumerate() {
        match result {
            Err(errors) => insert_errors.push(json!({"index": index, "errors": errors})),
            Ok(_) if any_bad && !skip_invalid => {
                insert_errors
                    .push(json!({"index": index, "errors": [row_error("stopped", "", "")]}));
            }
            Ok((insert_id, json)) => {
                if let Some(id) = &insert_id
                    && !remember_insert_id(&mut table.seen_ids, id, dedup_window)
                {
                    inner.calls.deduplicated_rows += 1;
                    continue;
                }
                table.rows.push(StoredRow { insert_id, json });
            }
        }
    }
    let mut resp = json!({"kind": "bigquery#tableDataInsertAllResponse"});
    if !insert_errors.is_empty() {
        resp["insertErrors"] = Value::Array(insert_errors);
    }
    (StatusCode::OK, axum::Json(resp)).into_response()
}

async fn tables_insert(
    State(shared): Shared3,
    Path((p, d)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = gate(&shared, &headers, Call::TablesInsert).await {
        return r;
    }
    let Ok(req @ Value::Object(_)) = serde_json::from_slice::<Value>(&body) else {
        return parse_error();
    };
    let r = &req["tableReference"];
    let Some(t) = r.get("tableId").and_then(Value::as_str).map(str::to_string) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Required parameter is missing: tableId",
            "INVALID_ARGUMENT",
        );
    };
    for (k, expected) in [("projectId", &p), ("datasetId", &d)] {
        if let Some(v) = r.get(k).and_then(Value::as_str)
            && v != expected
        {
            return google_error(
                StatusCode::BAD_REQUEST,
                "invalid",
                &format!("Invalid {k}: '{v}' does not match the request path '{expected}'."),
                "INVALID_ARGUMENT",
            );
        }
    }
    if !valid_name(&t) {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!("Invalid table ID \"{t}\"."),
            "INVALID_ARGUMENT",
        );
    }
    let schema = match req.get("schema").and_then(|s| s.get("fields")) {
        Some(f) => match parse_fields(f) {
            Ok(s) => s,
            Err(m) => {
                return google_error(StatusCode::BAD_REQUEST, "invalid", &m, "INVALID_ARGUMENT");
            }
        },
        None => Vec::new(),
    };
    let mut i = shared.inner.lock().unwrap();
    if !i.datasets.contains_key(&(p.clone(), d.clone())) {
        return not_found(&format!("Not found: Dataset {p}:{d}"));
    }
    let k = key3(&p, &d, &t);
    if i.tables.contains_key(&k) {
        return google_error(
            StatusCode::CONFLICT,
            "duplicate",
            &format!("Already Exists: Table {p}:{d}.{t}"),
            "ALREADY_EXISTS",
        );
    }
    let table = new_table(&p, &d, &t, req, schema);
    let view = table_view(&table);
    i.tables.insert(k, table);
    (StatusCode::OK, axum::Json(view)).into_response()
}

async fn tables_get(
    State(shared): Shared3,
    Path((p, d, t)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&shared, &headers, Call::TablesGet).await {
        return r;
    }
    let i = shared.inner.lock().unwrap();
    if !i.datasets.contains_key(&(p.clone(), d.clone())) {
        return not_found(&format!("Not found: Dataset {p}:{d}"));
    }
    match i.tables.get(&key3(&p, &d, &t)) {
        Some(table) => (StatusCode::OK, axum::Json(table_view(table))).into_response(),
        None => not_found(&format!("Not found: Table {p}:{d}.{t}")),
    }
}

#[derive(Debug, Deserialize, Default)]
struct ListQuery {
    #[serde(rename = "maxResults")]
    max_results: Option<usize>,
    #[serde(rename = "pageToken")]
    page_token: Option<String>,
}

/// `tabledata.list`: rows in storage order as `{"f":[{"v":…}]}` in schema field order, scalar
/// values as strings (BigQuery's wire format: INTEGER `"42"`, TIMESTAMP seconds as a float
/// string), `totalRows` as a string, `pageToken` while more rows remain.
async fn tabledata_list(
    State(shared): Shared3,
    Path((p, d, t)): Path<(String, String, String)>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&shared, &headers, Call::TabledataList).await {
        return r;
    }
    let i = shared.inner.lock().unwrap();
    let Some(table) = i.tables.get(&key3(&p, &d, &t)) else {
        return not_found(&format!("Not found: Table {p}:{d}.{t}"));
    };
    let start = match q.page_token.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return google_error(
                StatusCode::BAD_REQUEST,
                "invalid",
                "Invalid page token",
                "INVALID_ARGUMENT",
            );
        }
    };
    let max = q.max_results.unwrap_or(100_000).clamp(1, 100_000);
    let end = (start + max).min(table.rows.len());
    let cell = |f: &Field, v: Option<&Value>| -> Value {
        match v {
            None | Some(Value::Null) => Value::Null,
            Some(Value::String(s)) if f.ty == "TIMESTAMP" => parse_timestamp(s)
                .map(|t| {
                    Value::String(format!(
                        "{}.{:06}",
                        t.timestamp(),
                        t.timestamp_subsec_micros()
                    ))
                })
                .unwrap_or(Value::String(s.clone())),
            Some(Value::String(s)) => Value::String(s.clone()),
            Some(Value::Number(n)) => Value::String(n.to_string()),
            Some(Value::Bool(b)) => Value::String(b.to_string()),
            Some(other) => Value::String(other.to_string()),
        }
    };
    let rows: Vec<Value> = table.rows[start.min(end)..end]
        .iter()
        .map(|r| {
            let f: Vec<Value> = table
                .schema
                .iter()
                .map(|field| serde_json::json!({"v": cell(field, r.json.get(&field.name))}))
                .collect();
            serde_json::json!({"f": f})
        })
        .collect();
    let mut body = serde_json::json!({
        "kind": "bigquery#tableDataList",
        "totalRows": table.rows.len().to_string(),
        "rows": rows,
    });
    if end < table.rows.len() {
        body["pageToken"] = Value::String(end.to_string());
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn datasets_get(
    State(shared): Shared3,
    Path((p, d)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&shared, &headers, Call::DatasetsGet).await {
        return r;
    }
    let i = shared.inner.lock().unwrap();
    match i.datasets.get(&(p.clone(), d.clone())) {
        Some(ds) => (StatusCode::OK, axum::Json(ds.clone())).into_response(),
        None => not_found(&format!("Not found: Dataset {p}:{d}")),
    }
}

async fn datasets_insert(
    State(shared): Shared3,
    Path(p): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = gate(&shared, &headers, Call::DatasetsInsert).await {
        return r;
    }
    let Ok(req @ Value::Object(_)) = serde_json::from_slice::<Value>(&body) else {
        return parse_error();
    };
    let Some(d) = req["datasetReference"]
        .get("datasetId")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Required parameter is missing: datasetId",
            "INVALID_ARGUMENT",
        );
    };
    if !valid_name(&d) {
        return google_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!("Invalid dataset ID \"{d}\"."),
            "INVALID_ARGUMENT",
        );
    }
    let location = req
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or("US")
        .to_string();
    let mut i = shared.inner.lock().unwrap();
    let k = (p.clone(), d.clone());
    if i.datasets.contains_key(&k) {
        return google_error(
            StatusCode::CONFLICT,
            "duplicate",
            &format!("Already Exists: Dataset {p}:{d}"),
            "ALREADY_EXISTS",
        );
    }
    let ds = dataset_resource(&p, &d, &location);
    i.datasets.insert(k, ds.clone());
    (StatusCode::OK, axum::Json(ds)).into_response()
}

// ------------------------------------------------------------------------------------------------
// Resources and errors

fn dataset_resource(p: &str, d: &str, location: &str) -> Value {
    json!({
        "kind": "bigquery#dataset",
        "id": format!("{p}:{d}"),
        "datasetReference": {"projectId": p, "datasetId": d},
        "location": location,
        "etag": format!("\"{}\"", uuid::Uuid::new_v4().simple()),
    })
}

fn new_table(p: &str, d: &str, t: &str, mut resource: Value, schema: Vec<Field>) -> Table {
    let now_ms = Utc::now().timestamp_millis().to_string();
    if let Value::Object(m) = &mut resource {
        m.insert("kind".into(), json!("bigquery#table"));
        m.insert("id".into(), json!(format!("{p}:{d}.{t}")));
        m.insert(
            "tableReference".into(),
            json!({"projectId": p, "datasetId": d, "tableId": t}),
        );
        m.insert("type".into(), json!("TABLE"));
        m.insert("creationTime".into(), json!(now_ms.clone()));
        m.insert("lastModifiedTime".into(), json!(now_ms));
        m.insert(
            "etag".into(),
            json!(format!("\"{}\"", uuid::Uuid::new_v4().simple())),
        );
        m.insert("location".into(), json!("US"));
    }
    Table {
        resource,
        schema,
        rows: Vec::new(),
        seen_ids: HashMap::new(),
    }
}

fn table_view(t: &Table) -> Value {
    let mut v = t.resource.clone();
    // Streamed rows sit in the streaming buffer; tables.get reports them there, as strings.
    v["streamingBuffer"] = json!({"estimatedRows": t.rows.len().to_string()});
    v["numRows"] = json!("0");
    v
}

fn google_error(status: StatusCode, reason: &str, message: &str, status_name: &str) -> Response {
    let body = json!({
        "error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": status_name,
        }
    });
    (status, axum::Json(body)).into_response()
}

fn not_found(message: &str) -> Response {
    google_error(StatusCode::NOT_FOUND, "notFound", message, "NOT_FOUND")
}

fn parse_error() -> Response {
    google_error(
        StatusCode::BAD_REQUEST,
        "parseError",
        "Invalid JSON payload received. Unexpected token.",
        "INVALID_ARGUMENT",
    )
}

fn row_error(reason: &str, location: &str, message: &str) -> Value {
    json!({"reason": reason, "location": location, "debugInfo": "", "message": message})
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 1024 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

const TYPES: &[&str] = &[
    "STRING",
    "BYTES",
    "INTEGER",
    "INT64",
    "FLOAT",
    "FLOAT64",
    "NUMERIC",
    "BIGNUMERIC",
    "BOOLEAN",
    "BOOL",
    "TIMESTAMP",
    "DATE",
    "TIME",
    "DATETIME",
    "GEOGRAPHY",
    "JSON",
    "RECORD",
    "STRUCT",
];

fn parse_fields(v: &Value) -> Result<Vec<Field>, String> {
    let Value::Array(items) = v else {
        return Err("schema.fields must be an array".into());
    };
    let mut out = Vec::with_capacity(items.len());
    let mut names = HashSet::new();
    for f in items {
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let first_ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !first_ok
            || name.len() > 300
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!(
                "Invalid field name \"{name}\". Fields must contain only letters, numbers, and underscores, start with a letter or underscore, and be at most 300 characters long."
            ));
        }
        if !names.insert(name.to_ascii_lowercase()) {
            return Err(format!("Field {name} already exists in schema"));
        }
        let ty = f
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_uppercase();
        if !TYPES.contains(&ty.as_str()) {
            return Err(format!("Invalid value for type: {ty} is not a valid value"));
        }
        let mode = match f.get("mode") {
            None | Some(Value::Null) => "NULLABLE".to_string(),
            Some(m) => m.as_str().unwrap_or("").to_ascii_uppercase(),
        };
        if !["NULLABLE", "REQUIRED", "REPEATED"].contains(&mode.as_str()) {
            return Err(format!(
                "Invalid value for mode: {mode} is not a valid value"
            ));
        }
        let fields = match f.get("fields") {
            Some(sub @ Value::Array(_)) => parse_fields(sub)?,
            _ => Vec::new(),
        };
        if (ty == "RECORD" || ty == "STRUCT") && fields.is_empty() {
            return Err(format!("Field {name} is type RECORD but has no schema"));
        }
        out.push(Field {
            name,
            ty,
            mode,
            fields,
        });
    }
    Ok(out)
}

/// Checks one row; returns the row as stored (unknown fields dropped when ignored) or its errors.
fn validate_row(
    schema: &[Field],
    obj: &Map<String, Value>,
    ignore_unknown: bool,
) -> Result<Map<String, Value>, Vec<Value>> {
    let mut errors = Vec::new();
    let mut out = Map::new();
    validate_object(schema, obj, ignore_unknown, "", &mut errors, &mut out);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn validate_object(
    schema: &[Field],
    obj: &Map<String, Value>,
    ignore_unknown: bool,
    prefix: &str,
    errors: &mut Vec<Value>,
    out: &mut Map<String, Value>,
) {
    for (k, v) in obj {
        let path = format!("{prefix}{k}");
        // BigQuery matches column names case-insensitively.
        let Some(field) = schema.iter().find(|f| f.name.eq_ignore_ascii_case(k)) else {
            if !ignore_unknown {
                errors.push(row_error(
                    "invalid",
                    &path,
                    &format!("no such field: {path}."),
                ));
            }
            continue;
        };
        if v.is_null() {
            if field.mode == "REQUIRED" {
                errors.push(row_error(
                    "invalid",
                    &path,
                    &format!("Missing required field: {path}."),
                ));
            }
            continue;
        }
        if field.mode == "REPEATED" {
            match v {
                Value::Array(items) => {
                    let mut stored = Vec::with_capacity(items.len());
                    for item in items {
                        if let Some(s) = validate_value(field, item, ignore_unknown, &path, errors)
                        {
                            stored.push(s);
                        }
                    }
                    out.insert(field.name.clone(), Value::Array(stored));
                }
                _ => errors.push(row_error(
                    "invalid",
                    &path,
                    &format!("Array specified for non-repeated field: {path}."),
                )),
            }
            continue;
        }
        if let Some(s) = validate_value(field, v, ignore_unknown, &path, errors) {
            out.insert(field.name.clone(), s);
        }
    }
    for f in schema {
        if f.mode == "REQUIRED"
            && !obj
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case(&f.name) && !v.is_null())
        {
            let path = format!("{prefix}{}", f.name);
            if !errors.iter().any(|e| e["location"] == json!(path)) {
                errors.push(row_error(
                    "invalid",
                    &path,
                    &format!("Missing required field: {path}."),
                ));
            }
        }
    }
}

fn validate_value(
    field: &Field,
    v: &Value,
    ignore_unknown: bool,
    path: &str,
    errors: &mut Vec<Value>,
) -> Option<Value> {
    let bad = |errors: &mut Vec<Value>, what: &str| {
        errors.push(row_error(
            "invalid",
            path,
            &format!("Cannot convert value to {what} (bad value): {}", short(v)),
        ));
        None
    };
    match field.ty.as_str() {
        "STRING" | "GEOGRAPHY" => match v {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Some(v.clone()),
            _ => bad(errors, "string"),
        },
        "BYTES" => match v.as_str() {
            Some(s) if base64_ok(s) => Some(v.clone()),
            _ => bad(errors, "bytes"),
        },
        "INTEGER" | "INT64" => {
            let ok = match v {
                Value::Number(n) => n.is_i64(),
                Value::String(s) => s.trim().parse::<i64>().is_ok(),
                _ => false,
            };
            if ok {
                Some(v.clone())
            } else {
                bad(errors, "integer")
            }
        }
        "FLOAT" | "FLOAT64" | "NUMERIC" | "BIGNUMERIC" => {
            let ok = match v {
                Value::Number(_) => true,
                Value::String(s) => s.trim().parse::<f64>().is_ok(),
                _ => false,
            };
            if ok {
                Some(v.clone())
            } else {
                bad(errors, "double")
            }
        }
        "BOOLEAN" | "BOOL" => match v {
            Value::Bool(_) => Some(v.clone()),
            Value::String(s)
                if ["true", "false", "1", "0"].contains(&s.to_ascii_lowercase().as_str()) =>
            {
                Some(v.clone())
            }
            _ => bad(errors, "boolean"),
        },
        "TIMESTAMP" => match v {
            Value::Number(n) if n.as_f64().is_some() => Some(v.clone()),
            Value::String(s) if parse_timestamp(s).is_some() => Some(v.clone()),
            _ => {
                errors.push(row_error(
                    "invalid",
                    path,
                    &format!(
                        "Could not parse '{}' as a timestamp. Required format is YYYY-MM-DD HH:MM[:SS[.SSSSSS]] or YYYY/MM/DD HH:MM[:SS[.SSSSSS]]",
                        v.as_str().map(str::to_string).unwrap_or_else(|| short(v))
                    ),
                ));
                None
            }
        },
        "DATE" => match v.as_str() {
            Some(s) if NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() => Some(v.clone()),
            _ => bad(errors, "date"),
        },
        "DATETIME" => match v.as_str() {
            Some(s) if parse_datetime(s).is_some() => Some(v.clone()),
            _ => bad(errors, "datetime"),
        },
        "TIME" => match v.as_str() {
            Some(s) if chrono::NaiveTime::parse_from_str(s, "%H:%M:%S%.f").is_ok() => {
                Some(v.clone())
            }
            _ => bad(errors, "time"),
        },
        "JSON" => match v {
            Value::String(s) if serde_json::from_str::<Value>(s).is_err() => bad(errors, "json"),
            _ => Some(v.clone()),
        },
        "RECORD" | "STRUCT" => match v {
            Value::Object(obj) => {
                let mut out = Map::new();
                let before = errors.len();
                validate_object(
                    &field.fields,
                    obj,
                    ignore_unknown,
                    &format!("{path}."),
                    errors,
                    &mut out,
                );
                (errors.len() == before).then_some(Value::Object(out))
            }
            _ => bad(errors, "record"),
        },
        _ => Some(v.clone()),
    }
}

/// Records `id`; false if it was seen within the window (a duplicate to drop).
fn remember_insert_id(
    seen: &mut HashMap<String, std::time::Instant>,
    id: &str,
    window: Option<Duration>,
) -> bool {
    let now = std::time::Instant::now();
    match seen.get(id) {
        Some(first) if window.is_none_or(|w| now.duration_since(*first) < w) => false,
        _ => {
            seen.insert(id.to_string(), now);
            true
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 64 {
        format!("{}…", s.chars().take(64).collect::<String>())
    } else {
        s
    }
}

fn base64_ok(s: &str) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
}

/// BigQuery's accepted JSON timestamp strings: `YYYY-MM-DD[( |T)HH:MM[:SS[.ffffff]]][zone]` with
/// `-` or `/` in the date and a zone of `Z`, `UTC` or `±HH:MM`. Also used by tests to read rows.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let (body, offset) = split_zone(s)?;
    let naive = parse_datetime(body)?;
    Some(DateTime::<Utc>::from_naive_utc_and_offset(
        naive - chrono::Duration::seconds(offset),
        Utc,
    ))
}

fn split_zone(s: &str) -> Option<(&str, i64)> {
    if let Some(b) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        return Some((b.trim_end(), 0));
    }
    if let Some(b) = s.strip_suffix("UTC") {
        return Some((b.trim_end(), 0));
    }
    // `±HH:MM` after the time part (the date's `-` are earlier than position 10).
    if s.len() > 16 {
        let tail = &s[s.len() - 6..];
        let sign = match tail.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => 0,
        };
        if sign != 0 && tail.as_bytes().get(3) == Some(&b':') {
            let h: i64 = tail.get(1..3)?.parse().ok()?;
            let m: i64 = tail.get(4..6)?.parse().ok()?;
            return Some((&s[..s.len() - 6], sign * (h * 3600 + m * 60)));
        }
    }
    Some((s, 0))
}

fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
    let s = s.replace('/', "-");
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&s, fmt) {
            return Some(t);
        }
    }
    NaiveDate::parse_from_str(&s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_bigquery_accepts() {
        for s in [
            "2026-11-22T18:00:00Z",
            "2026-11-22T18:00:00.123456Z",
            "2026-11-22 18:00:00",
            "2026-11-22 18:00:00.5 UTC",
            "2026/11/22 18:00",
            "2026-11-22T19:00:00+01:00",
            "2026-11-22",
        ] {
            assert!(parse_timestamp(s).is_some(), "{s}");
        }
        assert_eq!(
            parse_timestamp("2026-11-22T19:00:00+01:00"),
            parse_timestamp("2026-11-22 18:00:00")
        );
        for s in ["yesterday", "2026-13-01T00:00:00Z", "", "18:00"] {
            assert!(parse_timestamp(s).is_none(), "{s}");
        }
    }

    #[test]
    fn rows_are_checked_against_the_schema() {
        let schema = parse_fields(&json!([
            {"name": "id", "type": "STRING", "mode": "REQUIRED"},
            {"name": "n", "type": "INTEGER"},
            {"name": "ts", "type": "TIMESTAMP"},
            {"name": "tags", "type": "STRING", "mode": "REPEATED"},
        ]))
        .unwrap();
        let ok = json!({"id": "a", "n": "12", "ts": 1_700_000_000, "tags": ["x"], "extra": null});
        // Unknown fields fail even when null, unless ignored.
        assert!(validate_row(&schema, ok.as_object().unwrap(), false).is_err());
        assert!(validate_row(&schema, ok.as_object().unwrap(), true).is_ok());
        let errs = validate_row(
            &schema,
            json!({"n": "x", "ts": "soon"}).as_object().unwrap(),
            false,
        )
        .unwrap_err();
        let locations: Vec<_> = errs
            .iter()
            .map(|e| e["location"].as_str().unwrap().to_string())
            .collect();
        assert!(locations.contains(&"n".to_string()));
        assert!(locations.contains(&"ts".to_string()));
        assert!(
            locations.contains(&"id".to_string()),
            "missing required field reported: {errs:?}"
        );
        assert!(
            validate_row(
                &schema,
                json!({"id": "a", "n": null}).as_object().unwrap(),
                false
            )
            .is_ok()
        );
    }
}
