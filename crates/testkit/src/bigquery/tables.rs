//! Datasets and tables of the fake BigQuery: `datasets.insert` / `datasets.get`,
//! `tables.insert` / `tables.get` and `tabledata.list` (BigQuery's `{"f":[{"v":…}]}` rows).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::gate::{Call, Shared3, duplicate, gate, invalid, not_found, ok_json, parse_error};
use super::schema::parse_fields;
use super::state::{Field, dataset_resource, key3, new_table, table_view};
use super::timestamp::parse_timestamp;

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 1024 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) async fn tables_insert(
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
        return invalid("Required parameter is missing: tableId");
    };
    for (k, expected) in [("projectId", &p), ("datasetId", &d)] {
        if let Some(v) = r.get(k).and_then(Value::as_str)
            && v != expected
        {
            return invalid(&format!(
                "Invalid {k}: '{v}' does not match the request path '{expected}'."
            ));
        }
    }
    if !valid_name(&t) {
        return invalid(&format!("Invalid table ID \"{t}\"."));
    }
    let schema = match req.get("schema").and_then(|s| s.get("fields")) {
        Some(f) => match parse_fields(f) {
            Ok(s) => s,
            Err(m) => {
                return invalid(&m);
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
        return duplicate(&format!("Table {p}:{d}.{t}"));
    }
    let table = new_table(&p, &d, &t, req, schema);
    let view = table_view(&table);
    i.tables.insert(k, table);
    ok_json(view)
}

pub(super) async fn tables_get(
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
        Some(table) => ok_json(table_view(table)),
        None => not_found(&format!("Not found: Table {p}:{d}.{t}")),
    }
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct ListQuery {
    #[serde(rename = "maxResults")]
    max_results: Option<usize>,
    #[serde(rename = "pageToken")]
    page_token: Option<String>,
}

/// `tabledata.list`: rows in storage order as `{"f":[{"v":…}]}` in schema field order, scalar
/// values as strings (BigQuery's wire format: INTEGER `"42"`, TIMESTAMP seconds as a float
/// string), `totalRows` as a string, `pageToken` while more rows remain.
pub(super) async fn tabledata_list(
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
            return invalid("Invalid page token");
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
    ok_json(body)
}

pub(super) async fn datasets_get(
    State(shared): Shared3,
    Path((p, d)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(&shared, &headers, Call::DatasetsGet).await {
        return r;
    }
    let i = shared.inner.lock().unwrap();
    match i.datasets.get(&(p.clone(), d.clone())) {
        Some(ds) => ok_json(ds.clone()),
        None => not_found(&format!("Not found: Dataset {p}:{d}")),
    }
}

pub(super) async fn datasets_insert(
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
        return invalid("Required parameter is missing: datasetId");
    };
    if !valid_name(&d) {
        return invalid(&format!("Invalid dataset ID \"{d}\"."));
    }
    let location = req
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or("US")
        .to_string();
    let mut i = shared.inner.lock().unwrap();
    let k = (p.clone(), d.clone());
    if i.datasets.contains_key(&k) {
        return duplicate(&format!("Dataset {p}:{d}"));
    }
    let ds = dataset_resource(&p, &d, &location);
    i.datasets.insert(k, ds.clone());
    ok_json(ds)
}
