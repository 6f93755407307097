//! What the fake BigQuery holds: datasets, tables with their schema, rows and remembered
//! `insertId`s, the failure switches and the call counts; and the resources it answers with.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use super::{CallCounts, StoredRow};

#[derive(Debug, Clone)]
pub(super) struct Field {
    pub(super) name: String,
    pub(super) ty: String,
    pub(super) mode: String,
    pub(super) fields: Vec<Field>,
}

#[derive(Debug)]
pub(super) struct Table {
    pub(super) resource: Value,
    pub(super) schema: Vec<Field>,
    pub(super) rows: Vec<StoredRow>,
    /// insertId → when it was first stored.
    pub(super) seen_ids: HashMap<String, std::time::Instant>,
}

#[derive(Debug, Clone)]
pub(super) struct InjectedRowError {
    pub(super) reason: String,
    pub(super) message: String,
    /// `None`: every time; `Some(n)`: the next n times.
    pub(super) remaining: Option<u32>,
}

#[derive(Debug, Default)]
pub(super) struct Inner {
    pub(super) datasets: HashMap<(String, String), Value>,
    pub(super) tables: HashMap<(String, String, String), Table>,
    pub(super) outage: bool,
    /// Per upcoming call: `None` passes, `Some(status)` fails.
    pub(super) fail_next: VecDeque<Option<u16>>,
    pub(super) row_errors: HashMap<String, InjectedRowError>,
    pub(super) latency: Duration,
    /// `None`: insertIds are remembered forever.
    pub(super) dedup_window: Option<Duration>,
    pub(super) calls: CallCounts,
    /// `insertAll` requests being answered now.
    pub(super) insert_all_in_flight: u64,
    pub(super) insert_all_sizes: Vec<(String, usize)>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) token: Option<String>,
    pub(super) inner: Mutex<Inner>,
    pub(super) faults: crate::faults::FaultSlot,
}

pub(super) type Key3 = (String, String, String);

pub(super) fn key3(p: &str, d: &str, t: &str) -> Key3 {
    (p.to_string(), d.to_string(), t.to_string())
}

pub(super) fn dataset_resource(p: &str, d: &str, location: &str) -> Value {
    json!({
        "kind": "bigquery#dataset",
        "id": format!("{p}:{d}"),
        "datasetReference": {"projectId": p, "datasetId": d},
        "location": location,
        "etag": format!("\"{}\"", uuid::Uuid::new_v4().simple()),
    })
}

pub(super) fn new_table(
    p: &str,
    d: &str,
    t: &str,
    mut resource: Value,
    schema: Vec<Field>,
) -> Table {
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

pub(super) fn table_view(t: &Table) -> Value {
    let mut v = t.resource.clone();
    // Streamed rows sit in the streaming buffer; tables.get reports them there, as strings.
    v["streamingBuffer"] = json!({"estimatedRows": t.rows.len().to_string()});
    v["numRows"] = json!("0");
    v
}
