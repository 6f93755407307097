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

mod gate;
mod insert_all;
mod schema;
mod state;
mod tables;
#[cfg(test)]
mod tests;
mod timestamp;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::http::ServerTask;
use schema::parse_fields;
use state::{InjectedRowError, Inner, Shared, dataset_resource, key3, new_table, table_view};

pub use timestamp::parse_timestamp;

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
    /// The most `insertAll` requests that were being answered at the same time (a client's
    /// concurrency, visible with [`FakeBigQuery::set_latency`]).
    pub insert_all_max_in_flight: u64,
}

/// One stored row.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub insert_id: Option<String>,
    pub json: Map<String, Value>,
}

/// The running fake. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeBigQuery {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _task: ServerTask,
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
        const TABLE: &str = "/bigquery/v2/projects/{p}/datasets/{d}/tables/{t}";
        let app = Router::new()
            .route(&format!("{TABLE}/insertAll"), post(insert_all::insert_all))
            .route(
                "/bigquery/v2/projects/{p}/datasets/{d}/tables",
                post(tables::tables_insert),
            )
            .route(TABLE, get(tables::tables_get))
            .route(&format!("{TABLE}/data"), get(tables::tabledata_list))
            .route(
                "/bigquery/v2/projects/{p}/datasets/{d}",
                get(tables::datasets_get),
            )
            .route(
                "/bigquery/v2/projects/{p}/datasets",
                post(tables::datasets_insert),
            )
            .fallback(|| async { gate::not_found("Not found: URL") })
            // The fake checks the 10 MiB limit itself so it can answer the way BigQuery does.
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES * 2))
            .with_state(shared.clone());
        let (addr, task) = crate::http::serve(shared.faults.wrap(app), "fake bigquery").await;
        Self {
            addr,
            shared,
            _task: task,
        }
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
        self.set_row_error(insert_id, reason, message, None);
    }

    /// Like [`Self::inject_row_error`], for the next `times` inserts of that row only.
    pub fn inject_row_error_times(&self, insert_id: &str, reason: &str, message: &str, times: u32) {
        self.set_row_error(insert_id, reason, message, Some(times));
    }

    fn set_row_error(&self, insert_id: &str, reason: &str, message: &str, remaining: Option<u32>) {
        let error = InjectedRowError {
            reason: reason.into(),
            message: message.into(),
            remaining,
        };
        self.with(|i| i.row_errors.insert(insert_id.to_string(), error));
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
