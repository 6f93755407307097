//! The `AuditSink` on BigQuery.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use access_core::ports::{AuditSink, AuditSinkError, ExportItem, ExportReport};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use gcp_auth::AccessTokenSource;
use serde::Serialize;

use crate::client::{BigQueryClient, Created, RowErrors};
use crate::config::BigQueryConfig;
use crate::error::{BigQueryError, is_transient_reason};
use crate::rows::{event_insert_id, event_row, grant_insert_id, grant_row};
use crate::schema::{
    ACCESS_EVENTS, ACCESS_GRANTS, events_table_resource, grants_table_resource, missing_columns,
};

/// Exports audit events to `access_events` (every event) and `access_grants` (one row per
/// `access_granted` event, the GCP document's table).
///
/// Guarantees, given the port's contract (the caller retries a batch until `export` returns `Ok`):
/// - every row carries an `insertId` derived from the event id, so a retried batch is
///   de-duplicated by BigQuery (best effort, about a minute; see `docs/audit.md` for the
///   query-side de-duplication that covers longer gaps);
/// - rows are sent with `skipInvalidRows: true`, so one bad row never holds back the others; a
///   row BigQuery refuses for good is returned in [`ExportReport::rejected`];
/// - outages (HTTP 5xx, 429, quota 403s, timeouts, connection errors, token failures) and a
///   missing table return [`AuditSinkError::Unavailable`]: nothing is reported done that was not
///   stored;
/// - rows BigQuery answers with errors it calls transient (`backendError`, `timeout`, …) are
///   returned in [`ExportReport::retry`]: only their events are sent again, the rest of the
///   batch is settled;
/// - the batch's requests (both tables) go out up to `max_concurrent_requests` at once over one
///   keep-alive HTTP client; BigQuery stores rows in arrival order, and nothing downstream relies
///   on it (the chain comparison orders by `seq`);
/// - a request BigQuery refuses as a whole (400) is split in halves until the offending row is
///   alone, so one poisoned event cannot block the queue; but when every request of the call is
///   refused (nothing points at particular rows) the batch is `Unavailable`, not rejected.
#[derive(Debug, Clone)]
pub struct BigQuerySink {
    config: BigQueryConfig,
    client: BigQueryClient,
    checkpoints: Option<Arc<Checkpointer>>,
}

/// When the export publishes a signed checkpoint: after `every_events` new events, or once
/// `every` has passed since the last one and new events were exported.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    pub keys: Option<access_core::audit::AuditKeyring>,
    pub every_events: u64,
    pub every: std::time::Duration,
}

#[derive(Debug)]
struct Checkpointer {
    policy: CheckpointPolicy,
    /// (seq of the last published checkpoint, when).
    last: std::sync::Mutex<(i64, Instant)>,
}

/// What `create_tables` found or did for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStatus {
    pub table: String,
    pub outcome: Created,
    /// Columns of Gatehouse's schema the existing table lacks (rows would be refused with `no
    /// such field`); empty when the table was created or matches.
    pub missing_columns: Vec<String>,
}

/// A row ready to send: `{"insertId": …, "json": {…}}` already serialised, and the batch index
/// of the event it came from.
#[derive(Debug)]
struct PreparedRow {
    item: usize,
    json: String,
}

#[derive(Serialize)]
struct WireRow<'a, T: Serialize> {
    #[serde(rename = "insertId")]
    insert_id: &'a str,
    json: &'a T,
}

const BODY_HEAD: &str = r#"{"kind":"bigquery#tableDataInsertAllRequest","skipInvalidRows":true,"ignoreUnknownValues":false,"rows":["#;
const BODY_TAIL: &str = "]}";

/// Where one export call stands: row-level refusals and transient row errors per batch index.
#[derive(Debug, Default)]
struct Outcome {
    rejected: BTreeMap<usize, Vec<String>>,
    /// Rows BigQuery did not store this time (`backendError`, `timeout`, …): their events are
    /// retried, the rest of the batch is settled.
    transient: BTreeMap<usize, Vec<String>>,
    /// Transient errors that name no row of the request: nothing tells which events landed, so
    /// the whole batch is retried.
    unplaced: Vec<String>,
    /// Rows alone in a request BigQuery refused whole (HTTP 400).
    refused_alone: Vec<(usize, String)>,
    /// insertAll requests BigQuery accepted (HTTP 200) in this export call.
    accepted_requests: usize,
}

impl BigQuerySink {
    pub fn new(
        config: BigQueryConfig,
        token: Arc<dyn AccessTokenSource>,
    ) -> Result<Self, BigQueryError> {
        let client = BigQueryClient::new(&config, token)?;
        Ok(Self {
            config,
            client,
            checkpoints: None,
        })
    }

    /// Publishes signed checkpoints (log line and `access_audit_checkpoints` row) as batches are
    /// exported.
    pub fn with_checkpoints(mut self, policy: CheckpointPolicy) -> Self {
        self.checkpoints = Some(Arc::new(Checkpointer {
            policy,
            last: std::sync::Mutex::new((0, Instant::now())),
        }));
        self
    }

    /// After a batch went out: publish a checkpoint at its newest event when the policy says so.
    /// A failed checkpoint insert is only a warning (the events are exported; the next batch
    /// tries again), never a reason to re-send the batch.
    async fn maybe_checkpoint(&self, batch: &[ExportItem]) {
        let Some(cpr) = &self.checkpoints else {
            return;
        };
        let Some(newest) = batch.iter().map(|i| &i.event).max_by_key(|e| e.seq) else {
            return;
        };
        let due = {
            let last = cpr.last.lock().unwrap_or_else(|p| p.into_inner());
            newest.seq > last.0
                && (u64::try_from(newest.seq - last.0).unwrap_or(0) >= cpr.policy.every_events
                    || last.1.elapsed() >= cpr.policy.every)
        };
        if !due {
            return;
        }
        let cp = access_core::audit::AuditCheckpoint::new(
            newest.seq,
            &newest.hash,
            chrono::Utc::now(),
            cpr.policy.keys.as_ref(),
        );
        access_core::audit::log_checkpoint(&cp);
        let row = serde_json::json!({
            "seq": cp.seq,
            "hash": cp.hash,
            "at_micros": cp.at.timestamp_micros(),
            "key_id": cp.key_id,
            "mac": cp.mac,
        });
        let insert_id = format!("checkpoint-{}", cp.seq);
        let json = match serde_json::to_string(&WireRow {
            insert_id: &insert_id,
            json: &row,
        }) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialise the audit checkpoint row");
                return;
            }
        };
        let mut out = Outcome::default();
        let table = self.config.checkpoints_table.clone();
        match self
            .insert_rows(
                vec![(&table, vec![PreparedRow { item: 0, json }])],
                &mut out,
            )
            .await
        {
            Ok(())
                if out.rejected.is_empty()
                    && out.transient.is_empty()
                    && out.unplaced.is_empty()
                    && out.refused_alone.is_empty() =>
            {
                let mut last = cpr.last.lock().unwrap_or_else(|p| p.into_inner());
                *last = (cp.seq, Instant::now());
            }
            Ok(()) => tracing::warn!(
                seq = cp.seq,
                "BigQuery refused the audit checkpoint row; retrying with the next batch"
            ),
            Err((_, e)) => {
                tracing::warn!(seq = cp.seq, error = %e, "audit checkpoint export failed; retrying with the next batch")
            }
        }
    }

    /// Reads back what was exported: the chain links of `access_events` (duplicates included;
    /// the comparison drops them) and the checkpoints (`gatehouse-cleanup audit verify
    /// --against-export`).
    pub async fn read_export(
        &self,
    ) -> Result<
        (
            Vec<access_core::audit::ChainLink>,
            Vec<access_core::audit::AuditCheckpoint>,
        ),
        BigQueryError,
    > {
        let c = &self.config;
        let idx = |cols: &[crate::schema::Column], name: &str| {
            cols.iter()
                .position(|col| col.name == name)
                .unwrap_or(usize::MAX)
        };
        let cell = |r: &[Option<String>], i: usize| r.get(i).cloned().flatten();
        let bad = |what: &str| BigQueryError::Decode {
            context: format!("exported row without a valid {what}"),
            source: None,
        };
        let ev = ACCESS_EVENTS;
        let mut links = Vec::new();
        for r in self
            .client
            .list_rows(&c.project, &c.dataset, &c.events_table)
            .await?
        {
            links.push(access_core::audit::ChainLink {
                seq: cell(&r, idx(ev, "seq"))
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("seq"))?,
                id: cell(&r, idx(ev, "id")).ok_or_else(|| bad("id"))?,
                prev_hash: cell(&r, idx(ev, "prev_hash")).ok_or_else(|| bad("prev_hash"))?,
                hash: cell(&r, idx(ev, "hash")).ok_or_else(|| bad("hash"))?,
            });
        }
        let cpc = crate::schema::AUDIT_CHECKPOINTS;
        let mut cps = Vec::new();
        for r in self
            .client
            .list_rows(&c.project, &c.dataset, &c.checkpoints_table)
            .await?
        {
            let at = cell(&r, idx(cpc, "at_micros"))
                .and_then(|s| s.parse::<i64>().ok())
                .and_then(chrono::DateTime::from_timestamp_micros)
                .ok_or_else(|| bad("at_micros"))?;
            cps.push(access_core::audit::AuditCheckpoint {
                seq: cell(&r, idx(cpc, "seq"))
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("checkpoint seq"))?,
                hash: cell(&r, idx(cpc, "hash")).ok_or_else(|| bad("checkpoint hash"))?,
                at,
                key_id: cell(&r, idx(cpc, "key_id")),
                mac: cell(&r, idx(cpc, "mac")),
            });
        }
        Ok((links, cps))
    }

    pub fn config(&self) -> &BigQueryConfig {
        &self.config
    }

    /// The REST client underneath, for other calls against the same project.
    pub fn client(&self) -> &BigQueryClient {
        &self.client
    }

    /// Creates the dataset in `location` if it does not exist. Not part of [`Self::create_tables`]:
    /// where audit data lives is a compliance decision an operator makes on purpose.
    pub async fn ensure_dataset(&self, location: &str) -> Result<Created, BigQueryError> {
        let c = &self.config;
        if self
            .client
            .get_dataset(&c.project, &c.dataset)
            .await?
            .is_some()
        {
            return Ok(Created::AlreadyExisted);
        }
        self.client
            .insert_dataset(&c.project, &c.dataset, location)
            .await
    }

    /// Creates `access_grants` and `access_events` if missing (`gatehouse-cleanup bigquery init`).
    /// Idempotent. The dataset must exist ([`BigQueryError::DatasetMissing`] otherwise; see
    /// [`Self::ensure_dataset`]). Existing tables are left alone and checked for missing columns.
    pub async fn create_tables(&self) -> Result<Vec<TableStatus>, BigQueryError> {
        let c = &self.config;
        if self
            .client
            .get_dataset(&c.project, &c.dataset)
            .await?
            .is_none()
        {
            return Err(BigQueryError::DatasetMissing {
                project: c.project.clone(),
                dataset: c.dataset.clone(),
            });
        }
        let plan = [
            (
                &c.grants_table,
                grants_table_resource(&c.project, &c.dataset, &c.grants_table),
                ACCESS_GRANTS,
            ),
            (
                &c.events_table,
                events_table_resource(&c.project, &c.dataset, &c.events_table),
                ACCESS_EVENTS,
            ),
            (
                &c.checkpoints_table,
                crate::schema::checkpoints_table_resource(
                    &c.project,
                    &c.dataset,
                    &c.checkpoints_table,
                ),
                crate::schema::AUDIT_CHECKPOINTS,
            ),
        ];
        let mut out = Vec::with_capacity(plan.len());
        for (table, resource, columns) in plan {
            let outcome = self
                .client
                .insert_table(&c.project, &c.dataset, &resource)
                .await?;
            let missing = match outcome {
                Created::Created => Vec::new(),
                Created::AlreadyExisted => {
                    match self.client.get_table(&c.project, &c.dataset, table).await? {
                        Some(t) => missing_columns(columns, &t),
                        None => columns.iter().map(|c| c.name.to_string()).collect(),
                    }
                }
            };
            if !missing.is_empty() {
                tracing::warn!(table = %table, missing = ?missing, "existing BigQuery table lacks columns; its rows will be refused");
            }
            tracing::info!(table = %table, outcome = ?outcome, "BigQuery table ready");
            out.push(TableStatus {
                table: table.clone(),
                outcome,
                missing_columns: missing,
            });
        }
        Ok(out)
    }

    /// Sends `tables`' rows in requests within BigQuery's limits, up to
    /// `max_concurrent_requests` at once (one request at a time bounded the drain by the round
    /// trips), and files every answer in `out`. A request refused whole (HTTP 400) is split in
    /// halves until the offending row is alone. Any other failure stops launching requests; the
    /// ones in flight are awaited (so what landed is known to have landed, and a retry's
    /// duplicates are absorbed by the insertIds) and the first error is returned.
    async fn insert_rows<'t>(
        &self,
        tables: Vec<(&'t str, Vec<PreparedRow>)>,
        out: &mut Outcome,
    ) -> Result<(), (&'t str, BigQueryError)> {
        let mut queue: VecDeque<(&'t str, Vec<PreparedRow>)> = VecDeque::new();
        for (table, rows) in tables {
            for c in chunk(
                rows,
                self.config.max_rows_per_request,
                self.config.max_bytes_per_request,
            ) {
                queue.push_back((table, c));
            }
        }
        let limit = self.config.max_concurrent_requests.max(1);
        let mut in_flight = FuturesUnordered::new();
        let mut failed: Option<(&'t str, BigQueryError)> = None;
        loop {
            while failed.is_none() && in_flight.len() < limit {
                let Some((table, chunk)) = queue.pop_front() else {
                    break;
                };
                let body = body(&chunk);
                in_flight.push(async move {
                    let started = Instant::now();
                    let result = self
                        .client
                        .insert_all_raw(&self.config.project, &self.config.dataset, table, body)
                        .await;
                    (table, chunk, started, result)
                });
            }
            let Some((table, chunk, started, result)) = in_flight.next().await else {
                break;
            };
            match result {
                Ok(resp) => {
                    out.accepted_requests += 1;
                    tracing::debug!(
                        table,
                        rows = chunk.len(),
                        row_errors = resp.insert_errors.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "insertAll"
                    );
                    file_row_errors(table, &chunk, resp.insert_errors, out);
                }
                Err(e) if e.is_bad_request() && chunk.len() > 1 => {
                    tracing::warn!(table, rows = chunk.len(), error = %e, "insertAll refused the request; splitting it");
                    let mut first = chunk;
                    let second = first.split_off(first.len() / 2);
                    queue.push_front((table, second));
                    queue.push_front((table, first));
                }
                Err(e) if e.is_bad_request() => {
                    if let Some(row) = chunk.first() {
                        out.refused_alone.push((row.item, format!("{table}: {e}")));
                    }
                }
                Err(e) => {
                    tracing::warn!(table, rows = chunk.len(), error = %e, "insertAll failed");
                    failed.get_or_insert((table, e));
                }
            }
        }
        match failed {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
}

/// Files the `insertErrors` of one accepted request by batch index: permanent reasons reject the
/// row's event, transient ones (`backendError`, …) send it again later.
fn file_row_errors(table: &str, chunk: &[PreparedRow], errors: Vec<RowErrors>, out: &mut Outcome) {
    for re in errors {
        let Some(row) = chunk.get(re.index) else {
            out.unplaced.push(format!(
                "{table}: error for row {} outside the request",
                re.index
            ));
            continue;
        };
        let (temporary, permanent): (Vec<_>, Vec<_>) = re
            .errors
            .iter()
            .partition(|e| is_transient_reason(&e.reason));
        let (list, errs) = if permanent.is_empty() {
            (&mut out.transient, temporary)
        } else {
            (&mut out.rejected, permanent)
        };
        let why = errs
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        list.entry(row.item)
            .or_default()
            .push(format!("{table}: {why}"));
    }
}

/// Splits rows into requests of at most `max_rows` rows and about `max_bytes` bytes. A single
/// row over the byte limit still gets its own request, so BigQuery names the problem.
fn chunk(rows: Vec<PreparedRow>, max_rows: usize, max_bytes: usize) -> VecDeque<Vec<PreparedRow>> {
    let envelope = BODY_HEAD.len() + BODY_TAIL.len();
    let mut out = VecDeque::new();
    let mut cur: Vec<PreparedRow> = Vec::new();
    let mut bytes = envelope;
    for r in rows {
        if !cur.is_empty() && (cur.len() >= max_rows || bytes + r.json.len() + 1 > max_bytes) {
            out.push_back(std::mem::take(&mut cur));
            bytes = envelope;
        }
        bytes += r.json.len() + 1;
        cur.push(r);
    }
    if !cur.is_empty() {
        out.push_back(cur);
    }
    out
}

fn body(rows: &[PreparedRow]) -> String {
    let len =
        BODY_HEAD.len() + BODY_TAIL.len() + rows.iter().map(|r| r.json.len() + 1).sum::<usize>();
    let mut s = String::with_capacity(len);
    s.push_str(BODY_HEAD);
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&r.json);
    }
    s.push_str(BODY_TAIL);
    s
}

fn unavailable(table_hint: &str, e: &BigQueryError) -> AuditSinkError {
    let hint = match e {
        BigQueryError::Api(a) if a.status == 404 => {
            format!(" ({table_hint} missing: run `gatehouse-cleanup bigquery init`)")
        }
        _ => String::new(),
    };
    AuditSinkError::Unavailable(format!("{e}{hint}"))
}

#[async_trait]
impl AuditSink for BigQuerySink {
    async fn export(&self, batch: &[ExportItem]) -> Result<ExportReport, AuditSinkError> {
        if batch.is_empty() {
            return Ok(ExportReport::default());
        }
        let mut out = Outcome::default();
        let mut events = Vec::with_capacity(batch.len());
        let mut grants = Vec::new();
        for (i, item) in batch.iter().enumerate() {
            let e = &item.event;
            match serde_json::to_string(&WireRow {
                insert_id: &event_insert_id(e),
                json: &event_row(e),
            }) {
                Ok(json) => events.push(PreparedRow { item: i, json }),
                Err(err) => out
                    .rejected
                    .entry(i)
                    .or_default()
                    .push(format!("cannot serialise the event row: {err}")),
            }
            if let Some(g) = grant_row(item) {
                match serde_json::to_string(&WireRow {
                    insert_id: &grant_insert_id(e),
                    json: &g,
                }) {
                    Ok(json) => grants.push(PreparedRow { item: i, json }),
                    Err(err) => out
                        .rejected
                        .entry(i)
                        .or_default()
                        .push(format!("cannot serialise the grant row: {err}")),
                }
            }
        }

        let c = &self.config;
        let started = Instant::now();
        // Both tables' requests go out together: if any fails, the whole batch is retried and
        // the insertIds absorb the rows that did land.
        let tables: Vec<(&str, Vec<PreparedRow>)> =
            [(&c.events_table, events), (&c.grants_table, grants)]
                .into_iter()
                .filter(|(_, rows)| !rows.is_empty())
                .map(|(t, rows)| (t.as_str(), rows))
                .collect();
        if let Err((table, e)) = self.insert_rows(tables, &mut out).await {
            tracing::warn!(table, events = batch.len(), error = %e, "audit export failed; the batch will be retried");
            return Err(unavailable(&format!("table {}.{table}", c.dataset), &e));
        }
        if let Some((_, first)) = out.refused_alone.first() {
            // A 400 for every request, even one row at a time, says nothing about the rows: a
            // wrong project, a client bug, a proxy. Rejecting them would drop the whole batch
            // from the export, so keep it pending instead. Once a request of the same call gets
            // through, the refusals are about those rows.
            if out.accepted_requests == 0 {
                tracing::warn!(error = %first, "BigQuery refused every request of the batch; keeping it for retry");
                return Err(AuditSinkError::Unavailable(format!(
                    "BigQuery refused every request of the batch: {first}"
                )));
            }
            for (item, why) in std::mem::take(&mut out.refused_alone) {
                out.rejected.entry(item).or_default().push(why);
            }
        }
        if let Some(first) = out.unplaced.first() {
            tracing::warn!(errors = out.unplaced.len(), first = %first, "BigQuery reported row errors for no row of the request; the batch will be retried");
            return Err(AuditSinkError::Unavailable(format!(
                "{} row errors name no row of their request (first: {first})",
                out.unplaced.len()
            )));
        }
        // A row refused for good is not retried, even if its other table's row was transient.
        let retry: Vec<_> = out
            .transient
            .into_iter()
            .filter(|(i, _)| !out.rejected.contains_key(i))
            .filter_map(|(i, why)| {
                batch
                    .get(i)
                    .map(|item| (item.event.record.id, why.join("; ")))
            })
            .collect();
        let rejected: Vec<_> = out
            .rejected
            .into_iter()
            .filter_map(|(i, why)| {
                batch
                    .get(i)
                    .map(|item| (item.event.record.id, why.join("; ")))
            })
            .collect();
        for (id, why) in &rejected {
            tracing::warn!(event_id = %id, reason = %why, "BigQuery refused an audit row; it stays in the local chain");
        }
        if let Some((id, why)) = retry.first() {
            tracing::warn!(rows = retry.len(), first_event = %id, first = %why, "BigQuery reported transient row errors; those events will be retried");
        } else {
            // A checkpoint vouches for every event up to its seq: not while some are to be re-sent.
            self.maybe_checkpoint(batch).await;
        }
        tracing::debug!(
            events = batch.len(),
            rejected = rejected.len(),
            retry = retry.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "audit batch exported"
        );
        Ok(ExportReport { rejected, retry })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(sizes: &[usize]) -> Vec<PreparedRow> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, n)| PreparedRow {
                item: i,
                json: "x".repeat(*n),
            })
            .collect()
    }

    #[test]
    fn chunks_respect_rows_and_bytes() {
        let c = chunk(rows(&[10; 1201]), 500, 1 << 20);
        assert_eq!(
            c.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![500, 500, 201]
        );

        // 4 rows of 400 bytes with a 1,000-byte budget: two per request.
        let c = chunk(rows(&[400; 4]), 500, 1000);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2]);
        for ch in &c {
            assert!(body(ch).len() <= 1000);
        }

        // An oversized row travels alone.
        let c = chunk(rows(&[10, 5000, 10]), 500, 1000);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1, 1]);
    }

    #[test]
    fn body_is_the_documented_envelope() {
        let b = body(&[
            PreparedRow {
                item: 0,
                json: r#"{"insertId":"a","json":{"x":1}}"#.into(),
            },
            PreparedRow {
                item: 1,
                json: r#"{"insertId":"b","json":{"x":2}}"#.into(),
            },
        ]);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap_or_default();
        assert_eq!(v["kind"], "bigquery#tableDataInsertAllRequest");
        assert_eq!(v["skipInvalidRows"], true);
        assert_eq!(v["ignoreUnknownValues"], false);
        assert_eq!(v["rows"][1]["insertId"], "b");
    }
}
