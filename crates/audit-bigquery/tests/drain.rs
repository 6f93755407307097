//! The export drain through the engine and a real store (SQLite, and PostgreSQL with
//! `TEST_DATABASE_URL`): round trips counted, never timed, and partial failures settled row by
//! row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use access_core::engine::Engine;
use access_core::jobs::JobStatus;
use access_core::ports::{JobFilter, JobQueue};
use common::*;
use store_sqlx::SqlStore;
use testkit::provider::ManualClock;

const EVENTS: &str = "access_events";

struct Drain {
    bq: testkit::bigquery::FakeBigQuery,
    store: Arc<SqlStore>,
    engine: Engine,
    clock: Arc<ManualClock>,
    items: Vec<access_core::ports::ExportItem>,
}

async fn backlog(db: &testkit::db::TestDb, n: usize) -> Drain {
    let (bq, sink) = setup().await;
    let store = Arc::new(SqlStore::connect(&db.url).await.unwrap());
    let clock = Arc::new(ManualClock::starting_now());
    let items = many_events(n);
    seed_backlog(
        store.as_ref(),
        &items,
        access_core::ports::Clock::now(clock.as_ref()),
        600,
    )
    .await;
    let engine = Engine::builder(store.clone(), clock.clone())
        .audit_sink(Arc::new(sink))
        .build()
        .unwrap();
    Drain {
        bq,
        store,
        engine,
        clock,
        items,
    }
}

async fn export_jobs(store: &SqlStore, status: JobStatus) -> Vec<access_core::jobs::Job> {
    store
        .jobs(&JobFilter {
            status: Some(status),
            kind: Some("export_audit".into()),
            limit: Some(10_000),
        })
        .await
        .unwrap()
}

/// A backlog of 1,200 events drains in three claims of 500: per batch two claims (the other
/// lanes' and the exports'), three reads (events, requests, grants), one completion, and two
/// insertAll requests (events, grants); not a statement or a request per event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_in_a_few_statements_and_requests_per_batch() {
    for db in testkit::db::backends().await {
        let d = backlog(&db, 1200).await;
        let grants = granted_count(&d.items);
        let calls = d.bq.calls().insert_all;
        let statements = d.store.statements();
        let mut exported = 0;
        let mut passes = 0;
        loop {
            let s = d.engine.run_due(500).await.unwrap();
            if s.claimed == 0 {
                break;
            }
            passes += 1;
            exported += s.done.get("export_audit").copied().unwrap_or(0);
        }
        assert_eq!(exported, 1200, "{}", db.kind);
        assert_eq!(passes, 3, "{}", db.kind);
        assert_eq!(d.bq.row_count(PROJECT, DATASET, EVENTS), 1200);
        assert_eq!(d.bq.row_count(PROJECT, DATASET, "access_grants"), grants);
        let requests = d.bq.calls().insert_all - calls;
        assert_eq!(
            requests, 6,
            "{}: one events and one grants request per batch",
            db.kind
        );
        let used = d.store.statements() - statements;
        // 3 batches × (2 claims + 3 reads + 1 completion) + the last pass's 2 claims.
        assert!(
            used <= 20,
            "{}: draining 1,200 events took {used} statements",
            db.kind
        );
        assert!(export_jobs(&d.store, JobStatus::Pending).await.is_empty());
    }
}

/// BigQuery stores a batch but for a few rows (`backendError`): exactly the accepted rows' jobs
/// are done, the others are retried later, alone, and land once; nothing is sent twice that
/// BigQuery kept (the retry carries only the failed events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_failure_completes_exactly_the_accepted_rows() {
    for db in testkit::db::backends().await {
        let d = backlog(&db, 300).await;
        let failed: Vec<String> = [7usize, 150, 299]
            .iter()
            .map(|&i| d.items[i].event.record.id.to_string())
            .collect();
        for id in &failed {
            d.bq.inject_row_error_times(id, "backendError", "Temporary failure, please retry.", 1);
        }
        let s = d.engine.run_due(500).await.unwrap();
        assert_eq!(
            s.done.get("export_audit").copied(),
            Some(297),
            "{}",
            db.kind
        );
        assert_eq!(
            s.retried.get("export_audit").copied(),
            Some(3),
            "{}",
            db.kind
        );
        assert_eq!(d.bq.row_count(PROJECT, DATASET, EVENTS), 297);
        let mut pending: Vec<String> = export_jobs(&d.store, JobStatus::Pending)
            .await
            .into_iter()
            .filter_map(|j| match j.kind {
                access_core::jobs::JobKind::ExportAudit { event_id } => Some(event_id.to_string()),
                _ => None,
            })
            .collect();
        pending.sort();
        let mut expected = failed.clone();
        expected.sort();
        assert_eq!(pending, expected, "{}: only the failed rows wait", db.kind);
        assert_eq!(export_jobs(&d.store, JobStatus::Done).await.len(), 297);

        // After the backoff: the three alone, once.
        d.clock.advance(chrono::Duration::hours(2));
        let dedup = d.bq.calls().deduplicated_rows;
        let s = d.engine.run_due(500).await.unwrap();
        assert_eq!(s.claimed, 3, "{}", db.kind);
        assert_eq!(s.done.get("export_audit").copied(), Some(3), "{}", db.kind);
        assert_eq!(d.bq.row_count(PROJECT, DATASET, EVENTS), 300);
        assert_eq!(
            d.bq.calls().deduplicated_rows,
            dedup,
            "nothing re-sent that had landed"
        );
        assert_eq!(export_jobs(&d.store, JobStatus::Done).await.len(), 300);
    }
}

/// An outage fails the batch's requests: no job is done (nothing was stored), all are retried,
/// and after it the whole backlog lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_completes_nothing_and_loses_nothing() {
    for db in testkit::db::backends().await {
        let d = backlog(&db, 700).await;
        d.bq.set_outage(true);
        let s = d.engine.run_due(500).await.unwrap();
        assert_eq!(
            s.done.get("export_audit").copied().unwrap_or(0),
            0,
            "{}",
            db.kind
        );
        assert_eq!(
            s.retried.get("export_audit").copied(),
            Some(500),
            "{}",
            db.kind
        );
        d.bq.set_outage(false);
        d.clock.advance(chrono::Duration::hours(2));
        let mut exported = 0;
        loop {
            let s = d.engine.run_due(500).await.unwrap();
            if s.claimed == 0 {
                break;
            }
            exported += s.done.get("export_audit").copied().unwrap_or(0);
        }
        assert_eq!(exported, 700, "{}", db.kind);
        assert_eq!(d.bq.row_count(PROJECT, DATASET, EVENTS), 700);
        let ids: std::collections::HashSet<String> =
            d.bq.rows(PROJECT, DATASET, EVENTS)
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_string())
                .collect();
        assert_eq!(ids.len(), 700);
    }
}
