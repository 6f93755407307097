#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use access_core::audit::AuditKind;
use access_core::ports::{AuditSink, AuditSinkError, ExportItem};
use audit_bigquery::{BigQueryConfig, BigQueryError, BigQuerySink, Created};
use chrono::{DateTime, Utc};
use common::*;
use serde_json::{Value, json};
use testkit::bigquery::{FakeBigQuery, parse_timestamp};

const GRANTS: &str = "access_grants";
const EVENTS: &str = "access_events";

fn ts(v: &Value) -> DateTime<Utc> {
    parse_timestamp(v.as_str().expect("timestamp string")).expect("parsable timestamp")
}

fn unavailable(r: Result<access_core::ports::ExportReport, AuditSinkError>) -> String {
    match r {
        Err(AuditSinkError::Unavailable(m)) => m,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn lifecycle_rows_land_with_the_documents_field_values() {
    let (bq, sink) = setup().await;
    let mut chain = Chain::default();
    let mut batch = lifecycle(&mut chain, 7, "gcp-access", gcp_handle(7), t0());
    batch.extend(lifecycle(
        &mut chain,
        8,
        "dev-network",
        connexa_handle(),
        t0() + chrono::Duration::hours(1),
    ));

    let report = sink.export(&batch).await.unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);

    // access_events: one row per event, every field as the chain has it.
    let stored = bq.stored_rows(PROJECT, DATASET, EVENTS);
    assert_eq!(stored.len(), batch.len());
    for (item, row) in batch.iter().zip(&stored) {
        let e = &item.event;
        let j = &row.json;
        assert_eq!(
            row.insert_id.as_deref(),
            Some(e.record.id.to_string().as_str())
        );
        assert_eq!(j["id"], json!(e.record.id.to_string()));
        assert_eq!(ts(&j["time"]), e.record.at, "microseconds survive");
        assert_eq!(j["kind"], json!(e.record.kind.as_str()));
        assert_eq!(j["actor"], json!(e.record.actor.id()));
        assert_eq!(j["subject"], json!(e.record.subject));
        assert_eq!(
            j["resource"],
            json!(e.record.resource.as_ref().map(|r| r.as_str()))
        );
        assert_eq!(
            j["request_id"],
            json!(e.record.request_id.map(|r| r.to_string()))
        );
        match e.record.grant_id {
            Some(g) => assert_eq!(j["grant_id"], json!(g.to_string())),
            None => assert!(!j.contains_key("grant_id") || j["grant_id"].is_null()),
        }
        let details: Value = serde_json::from_str(j["details"].as_str().unwrap()).unwrap();
        assert_eq!(details, e.record.details);
        assert_eq!(j["seq"], json!(e.seq));
        assert_eq!(j["prev_hash"], json!(e.prev_hash));
        assert_eq!(j["hash"], json!(e.hash));
    }
    // The exported chain links up: each row's prev_hash is the previous row's hash.
    for pair in stored.windows(2) {
        assert_eq!(pair[1].json["prev_hash"], pair[0].json["hash"]);
    }

    // access_grants: exactly one row per grant, with the GCP document's values.
    let grants = bq.stored_rows(PROJECT, DATASET, GRANTS);
    assert_eq!(grants.len(), 2, "one row per access_granted event");
    let granted: Vec<&ExportItem> = batch
        .iter()
        .filter(|i| i.event.record.kind == AuditKind::AccessGranted)
        .collect();

    let gcp = &grants[0];
    let item = granted[0];
    let grant = item.grant.as_ref().unwrap();
    assert_eq!(
        gcp.insert_id.as_deref(),
        Some(format!("{}-grant", item.event.record.id).as_str())
    );
    let j = &gcp.json;
    let mut keys: Vec<&str> = j.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "command",
            "expires_at",
            "justification",
            "project_id",
            "resource",
            "service_account_email",
            "slack_user_id",
            "timestamp",
            "user_email"
        ]
    );
    assert_eq!(ts(&j["timestamp"]), item.event.record.at);
    assert_eq!(j["command"], "request");
    assert_eq!(j["user_email"], "person7@example.com");
    assert_eq!(j["slack_user_id"], "U0000007");
    assert_eq!(j["justification"], "Need to debug CI infrastructure issues");
    assert_eq!(j["resource"], "gcp-access");
    assert_eq!(j["project_id"], "openshift-crt-ephemeral-access");
    assert_eq!(ts(&j["expires_at"]), grant.expires_at);
    assert_eq!(
        j["service_account_email"],
        "person7-1762075800@openshift-crt-ephemeral-access.iam.gserviceaccount.com"
    );

    // A Cloud Connexa grant: same columns, no project, no service account.
    let j = &grants[1].json;
    assert_eq!(j["resource"], "dev-network");
    assert_eq!(j["user_email"], "person8@example.com");
    assert_eq!(j["slack_user_id"], "U0000008");
    assert_eq!(j["project_id"], "");
    assert_eq!(j["service_account_email"], "");
    assert_eq!(
        ts(&j["expires_at"]),
        granted[1].grant.as_ref().unwrap().expires_at
    );

    // Revocations are in access_events, which the document's table never had.
    assert_eq!(
        stored
            .iter()
            .filter(|r| r.json["kind"] == "access_revoked")
            .count(),
        2,
        "revocations are exported"
    );
}

#[tokio::test]
async fn grant_row_is_written_without_the_attached_grant() {
    let (bq, sink) = setup().await;
    let mut chain = Chain::default();
    let mut batch = lifecycle(&mut chain, 3, "gcp-access", gcp_handle(3), t0());
    let granted = batch
        .iter_mut()
        .find(|i| i.event.record.kind == AuditKind::AccessGranted)
        .unwrap();
    let expected_expiry = granted.grant.as_ref().unwrap().expires_at;
    granted.grant = None;
    sink.export(&batch).await.unwrap();
    let rows = bq.rows(PROJECT, DATASET, GRANTS);
    assert_eq!(rows.len(), 1);
    // From the request and the event's details instead.
    assert_eq!(rows[0]["user_email"], "person3@example.com");
    assert_eq!(
        rows[0]["justification"],
        "Need to debug CI infrastructure issues"
    );
    assert_eq!(ts(&rows[0]["expires_at"]), expected_expiry);
}

#[tokio::test]
async fn re_exporting_a_batch_does_not_duplicate() {
    let (bq, sink) = setup().await;
    let batch = many_events(60);
    let grants = granted_count(&batch);
    assert!(grants > 0);
    sink.export(&batch).await.unwrap();
    sink.export(&batch).await.unwrap();
    sink.export(&batch[10..30]).await.unwrap();
    assert_eq!(bq.row_count(PROJECT, DATASET, EVENTS), 60);
    assert_eq!(bq.row_count(PROJECT, DATASET, GRANTS), grants);
    assert_eq!(
        bq.calls().deduplicated_rows as usize,
        60 + grants + 20 + granted_count(&batch[10..30])
    );
}

#[tokio::test]
async fn an_outage_is_unavailable_and_loses_nothing_after_recovery() {
    let (bq, sink) = setup().await;
    let batch = many_events(1200);
    let grants = granted_count(&batch);

    bq.set_outage(true);
    for _ in 0..5 {
        let m = unavailable(sink.export(&batch).await);
        assert!(m.contains("503"), "{m}");
    }
    assert_eq!(bq.row_count(PROJECT, DATASET, EVENTS), 0);
    assert!(bq.calls().outage_refused >= 5);

    bq.set_outage(false);
    sink.export(&batch).await.unwrap();
    assert_eq!(bq.row_count(PROJECT, DATASET, EVENTS), 1200);
    assert_eq!(bq.row_count(PROJECT, DATASET, GRANTS), grants);
}

#[tokio::test]
async fn an_outage_mid_batch_is_retried_whole_without_duplicates() {
    let (bq, sink) = setup().await;
    let batch = many_events(1200);
    let grants = granted_count(&batch);
    // events: 500, 500, 200; grants: one request; all four in flight together. The second
    // request to arrive fails; the others land.
    bq.fail_later(1, 503, 1);
    unavailable(sink.export(&batch).await);
    let landed = bq.row_count(PROJECT, DATASET, EVENTS) + bq.row_count(PROJECT, DATASET, GRANTS);
    assert!(
        landed > 0 && landed < 1200 + grants,
        "some requests landed, not all: {landed}"
    );

    sink.export(&batch).await.unwrap();
    let ids: std::collections::HashSet<_> = bq
        .rows(PROJECT, DATASET, EVENTS)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1200);
    assert_eq!(bq.row_count(PROJECT, DATASET, EVENTS), 1200);
    assert_eq!(bq.row_count(PROJECT, DATASET, GRANTS), grants);
    assert_eq!(
        bq.calls().deduplicated_rows as usize,
        landed,
        "what landed before the failure is absorbed by its insertIds"
    );
}

#[tokio::test]
async fn a_batchs_requests_go_out_concurrently_and_bounded() {
    let (bq, _) = setup().await;
    let batch = many_events(3000);
    // Six events requests and one grants request; the latency keeps each in flight long enough
    // for the next ones to arrive.
    bq.set_latency(Duration::from_millis(150));
    for (limit, expected) in [(1, 1), (4, 4)] {
        let sink = sink_for(&bq, |mut c| {
            c.max_concurrent_requests = limit;
            c
        });
        let before = bq.calls().insert_all;
        assert!(sink.export(&batch).await.unwrap().rejected.is_empty());
        assert_eq!(bq.calls().insert_all - before, 7);
        assert_eq!(
            bq.calls().insert_all_max_in_flight,
            expected,
            "at most {limit} in flight"
        );
    }
    assert_eq!(bq.row_count(PROJECT, DATASET, EVENTS), 3000);
}
#[tokio::test]
async fn throttling_and_server_errors_are_unavailable() {
    let (bq, sink) = setup().await;
    let batch = many_events(10);
    for status in [429, 403, 500, 502, 503] {
        // One of the batch's two requests (events, grants) fails: the whole batch is retried,
        // whatever the other one stored.
        bq.fail_next(status, 1);
        let m = unavailable(sink.export(&batch).await);
        assert!(m.contains(&status.to_string()), "{status}: {m}");
    }
    sink.export(&batch).await.unwrap();
    assert_eq!(bq.row_count(PROJECT, DATASET, EVENTS), 10);
    assert_eq!(
        bq.row_count(PROJECT, DATASET, GRANTS),
        granted_count(&batch)
    );
}

#[tokio::test]
async fn timeouts_connection_errors_and_bad_tokens_are_unavailable() {
    let (bq, _) = setup().await;
    let batch = many_events(5);

    let slow = sink_for(&bq, |mut c| {
        c.request_timeout = Duration::from_millis(200);
        c
    });
    bq.set_latency(Duration::from_millis(1500));
    let m = unavailable(slow.export(&batch).await);
    assert!(m.contains("timed out"), "{m}");
    bq.set_latency(Duration::ZERO);

    // Nothing listens on a port of a stopped fake.
    let gone = FakeBigQuery::start().await;
    let url = gone.base_url();
    drop(gone);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let dead = BigQuerySink::new(
        BigQueryConfig::new(PROJECT).with_base_url(url),
        Arc::new(gcp_auth::StaticToken(TOKEN.into())),
    )
    .unwrap();
    unavailable(dead.export(&batch).await);

    let wrong = BigQuerySink::new(
        BigQueryConfig::new(PROJECT).with_base_url(bq.base_url()),
        Arc::new(gcp_auth::StaticToken("ya29.someone-elses".into())),
    )
    .unwrap();
    let m = unavailable(wrong.export(&batch).await);
    assert!(m.contains("401"), "{m}");
    assert!(
        !m.contains("someone-elses"),
        "the token never appears in errors"
    );

    #[derive(Debug)]
    struct Broken;
    #[async_trait::async_trait]
    impl gcp_auth::AccessTokenSource for Broken {
        async fn token(&self) -> Result<String, gcp_auth::AuthError> {
            Err(gcp_auth::AuthError::Token(
                "metadata server unreachable".into(),
            ))
        }
    }
    let broken = BigQuerySink::new(
        BigQueryConfig::new(PROJECT).with_base_url(bq.base_url()),
        Arc::new(Broken),
    )
    .unwrap();
    let m = unavailable(broken.export(&batch).await);
    assert!(m.contains("metadata server unreachable"), "{m}");

    assert_eq!(bq.row_count(PROJECT, DATASET, EVENTS), 0);
}

#[tokio::test]
async fn row_errors_are_reported_per_row_and_do_not_block_the_others() {
    let (bq, sink) = setup().await;
    let batch = many_events(40);
    let bad = &batch[7].event;
    bq.inject_row_error(
        &bad.record.id.to_string(),
        "invalid",
        "Row larger than the maximum allowed size.",
    );

    let report = sink.export(&batch).await.unwrap();
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].0, bad.record.id);
    assert!(
        report.rejected[0].1.contains("access_events: invalid"),
        "{}",
        report.rejected[0].1
    );
    assert!(report.rejected[0].1.contains("maximum allowed size"));
    let rows = bq.rows(PROJECT, DATASET, EVENTS);
    assert_eq!(rows.len(), 39);
    assert!(
        rows.iter()
            .all(|r| r["id"] != json!(bad.record.id.to_string()))
    );
}

#[tokio::test]
async fn a_table_with_the_old_schema_rejects_grant_rows_only() {
    // The GCP document's table before `service_account_email` was added.
    let bq = FakeBigQuery::start_with_token(TOKEN).await;
    let old: Vec<Value> = [
        "timestamp:TIMESTAMP",
        "command:STRING",
        "user_email:STRING",
        "slack_user_id:STRING",
        "justification:STRING",
        "resource:STRING",
        "project_id:STRING",
        "expires_at:TIMESTAMP",
    ]
    .iter()
    .map(|s| {
        let (n, t) = s.split_once(':').unwrap();
        json!({"name": n, "type": t})
    })
    .collect();
    bq.create_table(PROJECT, DATASET, GRANTS, Value::Array(old));
    let sink = sink_for(&bq, |c| c);
    let status = sink.create_tables().await.unwrap();
    assert_eq!(status[0].table, GRANTS);
    assert_eq!(status[0].outcome, Created::AlreadyExisted);
    assert_eq!(
        status[0].missing_columns,
        vec!["service_account_email".to_string()]
    );
    assert_eq!(status[1].outcome, Created::Created);

    let batch = many_events(24);
    let report = sink.export(&batch).await.unwrap();
    let granted: Vec<_> = batch
        .iter()
        .filter(|i| i.event.record.kind == AuditKind::AccessGranted)
        .map(|i| i.event.record.id)
        .collect();
    assert_eq!(
        report
            .rejected
            .iter()
            .map(|(id, _)| *id)
            .collect::<Vec<_>>(),
        granted
    );
    assert!(
        report.rejected[0]
            .1
            .contains("no such field: service_account_email"),
        "{}",
        report.rejected[0].1
    );
    assert_eq!(
        bq.row_count(PROJECT, DATASET, EVENTS),
        24,
        "events table unaffected"
    );
    assert_eq!(bq.row_count(PROJECT, DATASET, GRANTS), 0);
}

#[tokio::test]
async fn transient_row_errors_retry_only_those_rows() {
    let (bq, sink) = setup().await;
    let batch = many_events(30);
    let id = batch[12].event.record.id;
    bq.inject_row_error_times(
        &id.to_string(),
        "backendError",
        "Temporary failure, please retry.",
        1,
    );
    let report = sink.export(&batch).await.unwrap();
    assert!(report.rejected.is_empty());
    assert_eq!(report.retry.len(), 1);
    assert_eq!(report.retry[0].0, id);
    assert!(
        report.retry[0].1.contains("backendError"),
        "{}",
        report.retry[0].1
    );
    assert_eq!(bq.row_count(PROJECT, DATASET, EVENTS), 29);
    // The retry carries that event alone.
    let report = sink.export(&batch[12..13]).await.unwrap();
    assert!(report.rejected.is_empty() && report.retry.is_empty());
    assert_eq!(bq.row_count(PROJECT, DATASET, EVENTS), 30);
    assert_eq!(bq.calls().deduplicated_rows, 0);
}

#[tokio::test]
async fn batches_over_500_rows_are_split() {
    let (bq, sink) = setup().await;
    let batch = many_events(1234);
    let grants = granted_count(&batch);
    let report = sink.export(&batch).await.unwrap();
    assert!(report.rejected.is_empty());
    let sizes = bq.insert_all_sizes();
    assert!(sizes.iter().all(|(_, n)| *n <= 500), "{sizes:?}");
    let mut events: Vec<usize> = sizes
        .iter()
        .filter(|(t, _)| t == EVENTS)
        .map(|(_, n)| *n)
        .collect();
    // The requests go out together: they arrive in any order.
    events.sort_unstable();
    assert_eq!(events, vec![234, 500, 500]);
    let grant_rows: usize = sizes
        .iter()
        .filter(|(t, _)| t == GRANTS)
        .map(|(_, n)| *n)
        .sum();
    assert_eq!(grant_rows, grants);
    assert_eq!(bq.row_count(PROJECT, DATASET, EVENTS), 1234);
    assert_eq!(bq.row_count(PROJECT, DATASET, GRANTS), grants);
}

#[tokio::test]
async fn a_request_refused_whole_is_bisected_to_the_poisoned_row() {
    let (bq, _) = setup().await;
    // Let the sink build a request over BigQuery's 10 MiB limit, so the fake refuses it whole.
    let sink = sink_for(&bq, |mut c| {
        c.max_bytes_per_request = 64 * 1024 * 1024;
        c
    });
    let mut batch = many_events(9);
    batch[4].event.record.details = json!({"blob": "x".repeat(11 * 1024 * 1024)});
    let report = sink.export(&batch).await.unwrap();
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].0, batch[4].event.record.id);
    assert!(
        report.rejected[0].1.contains("payload size exceeds"),
        "{}",
        report.rejected[0].1
    );
    assert_eq!(bq.row_count(PROJECT, DATASET, EVENTS), 8);
}

#[tokio::test]
async fn create_tables_is_idempotent_and_uses_the_documents_schema() {
    let bq = FakeBigQuery::start_with_token(TOKEN).await;
    let sink = sink_for(&bq, |c| c);

    // No dataset: said clearly, nothing created.
    match sink.create_tables().await {
        Err(e @ BigQueryError::DatasetMissing { .. }) => {
            assert!(e.to_string().contains("bq mk --dataset"))
        }
        other => panic!("{other:?}"),
    }
    // Exporting before init: an outage with a hint, not a loss.
    let m = unavailable(sink.export(&many_events(3)).await);
    assert!(m.contains("bigquery init"), "{m}");

    assert_eq!(sink.ensure_dataset("EU").await.unwrap(), Created::Created);
    assert_eq!(
        sink.ensure_dataset("EU").await.unwrap(),
        Created::AlreadyExisted
    );
    assert!(bq.has_dataset(PROJECT, DATASET));

    let first = sink.create_tables().await.unwrap();
    assert!(
        first.iter().all(|s| s.outcome == Created::Created),
        "{first:?}"
    );
    let second = sink.create_tables().await.unwrap();
    assert!(
        second
            .iter()
            .all(|s| s.outcome == Created::AlreadyExisted && s.missing_columns.is_empty()),
        "{second:?}"
    );

    let grants = bq.table(PROJECT, DATASET, GRANTS).unwrap();
    let fields: Vec<(String, String)> = grants["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().into(),
                f["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("timestamp", "TIMESTAMP"),
        ("command", "STRING"),
        ("user_email", "STRING"),
        ("slack_user_id", "STRING"),
        ("justification", "STRING"),
        ("resource", "STRING"),
        ("project_id", "STRING"),
        ("expires_at", "TIMESTAMP"),
        ("service_account_email", "STRING"),
    ];
    assert_eq!(
        fields,
        expected.map(|(a, b)| (a.to_string(), b.to_string()))
    );

    let events = bq.table(PROJECT, DATASET, EVENTS).unwrap();
    assert_eq!(events["timePartitioning"]["field"], "time");
    let names: Vec<&str> = events["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "id",
            "time",
            "kind",
            "actor",
            "subject",
            "resource",
            "request_id",
            "grant_id",
            "details",
            "seq",
            "prev_hash",
            "hash"
        ]
    );

    // And now the export works.
    sink.export(&many_events(3)).await.unwrap();
    assert_eq!(bq.row_count(PROJECT, DATASET, EVENTS), 3);
}

#[tokio::test]
async fn an_empty_batch_makes_no_call() {
    let (bq, sink) = setup().await;
    let before = bq.calls().insert_all;
    assert!(sink.export(&[]).await.unwrap().rejected.is_empty());
    assert_eq!(bq.calls().insert_all, before);
}

#[tokio::test]
async fn a_retry_after_bigquerys_dedup_window_duplicates_rows_that_the_id_collapses() {
    // What docs/audit.md warns about: BigQuery forgets insertIds after about a minute.
    let (bq, sink) = setup().await;
    bq.set_dedup_window(Some(Duration::from_millis(100)));
    let batch = many_events(50);
    sink.export(&batch).await.unwrap();
    sink.export(&batch[..20]).await.unwrap();
    assert_eq!(
        bq.row_count(PROJECT, DATASET, EVENTS),
        50,
        "within the window: de-duplicated"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    sink.export(&batch[..20]).await.unwrap();
    let rows = bq.rows(PROJECT, DATASET, EVENTS);
    assert_eq!(rows.len(), 70, "after the window: stored twice");
    // The access_events_dedup view's rule (one row per id) gives back exactly the chain.
    let mut by_id = std::collections::BTreeMap::new();
    for r in &rows {
        let prev = by_id.insert(r["id"].as_str().unwrap().to_string(), r.clone());
        if let Some(p) = prev {
            assert_eq!(p, *r, "duplicates are identical rows");
        }
    }
    let mut seqs: Vec<i64> = by_id.values().map(|r| r["seq"].as_i64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
}

#[tokio::test]
async fn when_bigquery_refuses_every_request_nothing_is_rejected() {
    // A 400 for each request, even row by row, is not about the rows: keep the batch pending.
    let (bq, sink) = setup().await;
    let batch = many_events(4);
    bq.fail_next(400, 100);
    let m = unavailable(sink.export(&batch).await);
    assert!(m.contains("refused every request"), "{m}");
    assert_eq!(
        bq.calls().injected_failures,
        7,
        "1 request of 4, halves of 2, then 4 single rows"
    );
    bq.clear_failures();
    assert!(sink.export(&batch).await.unwrap().rejected.is_empty());
    assert_eq!(bq.row_count(PROJECT, DATASET, EVENTS), 4);
}
