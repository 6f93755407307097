//! The two tables' schemas, as `tables.insert` wants them.

use serde_json::{Value, json};

/// One column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// `STRING`, `TIMESTAMP`, `INTEGER`.
    pub ty: &'static str,
    /// `NULLABLE` or `REQUIRED`.
    pub mode: &'static str,
    pub description: &'static str,
}

const fn col(
    name: &'static str,
    ty: &'static str,
    mode: &'static str,
    description: &'static str,
) -> Column {
    Column {
        name,
        ty,
        mode,
        description,
    }
}

/// `ci_chat_bot.access_grants` exactly as the GCP document creates it (`bq mk --table … timestamp:
/// TIMESTAMP,command:STRING,…`): every column NULLABLE, same names, same order, so an existing
/// table from the Go bot keeps working and its queries keep their meaning.
pub const ACCESS_GRANTS: &[Column] = &[
    col(
        "timestamp",
        "TIMESTAMP",
        "NULLABLE",
        "When the credential was granted (UTC)",
    ),
    col("command", "STRING", "NULLABLE", "Always \"request\""),
    col(
        "user_email",
        "STRING",
        "NULLABLE",
        "E-mail of the person granted access",
    ),
    col(
        "slack_user_id",
        "STRING",
        "NULLABLE",
        "Slack user id of the requester",
    ),
    col(
        "justification",
        "STRING",
        "NULLABLE",
        "Business justification given by the requester",
    ),
    col(
        "resource",
        "STRING",
        "NULLABLE",
        "Resource name, e.g. gcp-access",
    ),
    col(
        "project_id",
        "STRING",
        "NULLABLE",
        "GCP project where access was granted (empty for other providers)",
    ),
    col(
        "expires_at",
        "TIMESTAMP",
        "NULLABLE",
        "When the access expires (UTC)",
    ),
    col(
        "service_account_email",
        "STRING",
        "NULLABLE",
        "Service account created for the grant (empty for non-GCP grants)",
    ),
];

/// `access_events`: every audit event, with its place in the hash chain so the export can be
/// checked against the local chain.
pub const ACCESS_EVENTS: &[Column] = &[
    col(
        "id",
        "STRING",
        "REQUIRED",
        "Audit event id (UUID); also the insertId",
    ),
    col(
        "time",
        "TIMESTAMP",
        "REQUIRED",
        "When it happened (UTC, microseconds)",
    ),
    col(
        "kind",
        "STRING",
        "REQUIRED",
        "access_requested, access_granted, access_revoked, …",
    ),
    col(
        "actor",
        "STRING",
        "REQUIRED",
        "slack:TEAM/USER, admin:NAME or system",
    ),
    col(
        "subject",
        "STRING",
        "NULLABLE",
        "TEAM/USER of the person the event is about",
    ),
    col("resource", "STRING", "NULLABLE", "Resource name"),
    col("request_id", "STRING", "NULLABLE", "Access request id"),
    col("grant_id", "STRING", "NULLABLE", "Grant id"),
    col(
        "details",
        "STRING",
        "NULLABLE",
        "Event details as a JSON string (parse with JSON_VALUE / PARSE_JSON)",
    ),
    col(
        "seq",
        "INTEGER",
        "REQUIRED",
        "Position in the hash chain (1, 2, 3, …)",
    ),
    col(
        "prev_hash",
        "STRING",
        "REQUIRED",
        "Hash of the previous event (hex SHA-256)",
    ),
    col(
        "hash",
        "STRING",
        "REQUIRED",
        "Hash of this event (hex SHA-256); HASH is a reserved word: write `hash`",
    ),
];

/// `schema.fields` for `tables.insert`.
pub fn fields_json(columns: &[Column]) -> Value {
    Value::Array(
        columns
            .iter()
            .map(|c| json!({"name": c.name, "type": c.ty, "mode": c.mode, "description": c.description}))
            .collect(),
    )
}

/// The `tables.insert` body of `access_grants`: the document's table, nothing added.
pub fn grants_table_resource(project: &str, dataset: &str, table: &str) -> Value {
    json!({
        "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
        "description": "Gatehouse: one row per credential grant (schema of the ci-chat-bot GCP access document)",
        "schema": {"fields": fields_json(ACCESS_GRANTS)},
    })
}

/// The `tables.insert` body of `access_events`: partitioned by day on `time` so audit queries
/// over a month scan a month, clustered on what reports filter by.
pub fn events_table_resource(project: &str, dataset: &str, table: &str) -> Value {
    json!({
        "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
        "description": "Gatehouse: every audit event, hash-chained (seq, prev_hash, hash)",
        "schema": {"fields": fields_json(ACCESS_EVENTS)},
        "timePartitioning": {"type": "DAY", "field": "time"},
        "clustering": {"fields": ["kind", "resource"]},
    })
}

/// `access_audit_checkpoints`: signed statements "the chain had `seq` events ending in `hash`",
/// written by the export so that a database administrator's rewrite is contradicted by a table
/// they do not control. `at_micros` is an INTEGER, not a TIMESTAMP, because it is covered by the
/// MAC and must read back exactly.
pub const AUDIT_CHECKPOINTS: &[Column] = &[
    col(
        "seq",
        "INTEGER",
        "REQUIRED",
        "Number of events in the chain",
    ),
    col("hash", "STRING", "REQUIRED", "Hash of event `seq`"),
    col(
        "at_micros",
        "INTEGER",
        "REQUIRED",
        "When the checkpoint was made (µs since the epoch)",
    ),
    col(
        "key_id",
        "STRING",
        "NULLABLE",
        "Id of the GATEHOUSE_AUDIT_KEY key of the MAC",
    ),
    col(
        "mac",
        "STRING",
        "NULLABLE",
        "k1.<key id>.<HMAC-SHA256> over (seq, hash, at); null when unkeyed",
    ),
];

pub fn checkpoints_table_resource(project: &str, dataset: &str, table: &str) -> Value {
    json!({
        "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
        "description": "Gatehouse: signed audit chain checkpoints",
        "schema": {"fields": fields_json(AUDIT_CHECKPOINTS)},
    })
}

/// Columns of `expected` missing from a table resource returned by `tables.get`.
pub fn missing_columns(expected: &[Column], table: &Value) -> Vec<String> {
    let present: Vec<String> = table["schema"]["fields"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| f["name"].as_str())
                .map(|s| s.to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    expected
        .iter()
        .filter(|c| !present.iter().any(|p| p == &c.name.to_ascii_lowercase()))
        .map(|c| c.name.to_string())
        .collect()
}
