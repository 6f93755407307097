//! `tabledata.insertAll` of the fake BigQuery: request limits, every row checked against the
//! table's schema, `skipInvalidRows` / `ignoreUnknownValues`, injected row errors and `insertId`
//! de-duplication.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::gate::{Call, Shared3, gate, invalid, not_found, ok_json, parse_error};
use super::schema::{row_error, validate_row};
use super::state::{InjectedRowError, Shared, Table, key3};
use super::{MAX_REQUEST_BYTES, MAX_ROWS_PER_REQUEST, StoredRow};

/// A row that passed validation (its insertId and stored json), or its errors.
type CheckedRow = Result<(Option<String>, Map<String, Value>), Vec<Value>>;

/// The request's options and rows, once its size and shape are accepted.
struct InsertRequest {
    skip_invalid: bool,
    ignore_unknown: bool,
    rows: Vec<Value>,
}

pub(super) async fn insert_all(
    State(shared): Shared3,
    Path((p, d, t)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = InFlight::enter(&shared);
    if let Err(r) = gate(&shared, &headers, Call::InsertAll).await {
        return r;
    }
    let req = match read_request(&body) {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    let mut guard = shared.inner.lock().unwrap();
    let inner = &mut *guard;
    if !inner.datasets.contains_key(&(p.clone(), d.clone())) {
        return not_found(&format!("Not found: Dataset {p}:{d}"));
    }
    let Some(table) = inner.tables.get_mut(&key3(&p, &d, &t)) else {
        return not_found(&format!("Not found: Table {p}:{d}.{t}"));
    };
    inner.insert_all_sizes.push((t.clone(), req.rows.len()));

    // Validate every row first: without skipInvalidRows one bad row stops them all.
    let mut checked = check_rows(table, &req, &mut inner.row_errors);
    // An injected `insertErrors` answer: BigQuery failed some rows (`backendError`), and without
    // skipInvalidRows the rest are `stopped`: nothing of the request is inserted.
    if crate::faults::injected(&headers) == Some(crate::faults::FaultKind::RowErrors) {
        fail_some_rows(&mut checked);
    }
    let (insert_errors, deduplicated) =
        store_rows(table, checked, req.skip_invalid, inner.dedup_window);
    inner.calls.deduplicated_rows += deduplicated;
    let mut resp = json!({"kind": "bigquery#tableDataInsertAllResponse"});
    if !insert_errors.is_empty() {
        resp["insertErrors"] = Value::Array(insert_errors);
    }
    ok_json(resp)
}

/// Counts an `insertAll` request while it is answered (whatever the answer), keeping the
/// high-water mark in the call counts.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let mut i = shared.inner.lock().unwrap();
        i.insert_all_in_flight += 1;
        i.calls.insert_all_max_in_flight =
            i.calls.insert_all_max_in_flight.max(i.insert_all_in_flight);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut i = self.0.inner.lock().unwrap_or_else(|p| p.into_inner());
        i.insert_all_in_flight = i.insert_all_in_flight.saturating_sub(1);
    }
}

/// Checks the request's size, JSON shape and row count.
// A test fake answering one request at a time: the size of the error response does not matter.
#[allow(clippy::result_large_err)]
fn read_request(body: &[u8]) -> Result<InsertRequest, Response> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(invalid(&format!(
            "Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes."
        )));
    }
    let mut req: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return Err(parse_error()),
    };
    let flag = |k: &str| req.get(k).and_then(Value::as_bool).unwrap_or(false);
    let (skip_invalid, ignore_unknown) = (flag("skipInvalidRows"), flag("ignoreUnknownValues"));
    let rows = match req.get_mut("rows").map(Value::take) {
        Some(Value::Array(rows)) if !rows.is_empty() => rows,
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            return Err(invalid("No rows present in the request."));
        }
        Some(_) => return Err(parse_error()),
    };
    if rows.len() > MAX_ROWS_PER_REQUEST {
        return Err(invalid(&format!(
            "too many rows present in the request, limit: {MAX_ROWS_PER_REQUEST} row count: {}.",
            rows.len()
        )));
    }
    Ok(InsertRequest {
        skip_invalid,
        ignore_unknown,
        rows,
    })
}

/// Every row checked against the schema, then against the row errors injected for its insertId.
fn check_rows(
    table: &Table,
    req: &InsertRequest,
    row_errors: &mut HashMap<String, InjectedRowError>,
) -> Vec<CheckedRow> {
    let mut checked: Vec<CheckedRow> = Vec::with_capacity(req.rows.len());
    for row in &req.rows {
        let insert_id = match row.get("insertId") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let result = match row.get("json") {
            Some(Value::Object(obj)) => {
                validate_row(&table.schema, obj, req.ignore_unknown).map(|j| (insert_id.clone(), j))
            }
            _ => Err(vec![row_error(
                "invalid",
                "",
                "Row is missing its json object.",
            )]),
        };
        let result = match (
            result,
            insert_id.as_ref().and_then(|id| row_errors.get_mut(id)),
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
    row_errors.retain(|_, e| e.remaining != Some(0));
    checked
}

/// An injected `RowErrors` fault: every other good row (or the only one) fails `backendError`.
fn fail_some_rows(checked: &mut [CheckedRow]) {
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

/// Stores the good rows (none when a row failed and invalid rows are not skipped); returns the
/// `insertErrors` entries and how many rows were dropped as duplicates.
fn store_rows(
    table: &mut Table,
    checked: Vec<CheckedRow>,
    skip_invalid: bool,
    dedup_window: Option<Duration>,
) -> (Vec<Value>, u64) {
    let any_bad = checked.iter().any(Result::is_err);
    let mut insert_errors = Vec::new();
    let mut deduplicated = 0;
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
                    deduplicated += 1;
                    continue;
                }
                table.rows.push(StoredRow { insert_id, json });
            }
        }
    }
    (insert_errors, deduplicated)
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
