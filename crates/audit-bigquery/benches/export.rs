//! Export throughput into the fake BigQuery. Run with `cargo bench -p audit-bigquery`.
//!
//! 1. The sink alone: N events (default 20,000; `EXPORT_BENCH_EVENTS`) in batches of 500, fresh
//!    and again (every row de-duplicated by its insertId).
//! 2. The drain as the scheduler runs it: the same events committed to a real store (SQLite, and
//!    PostgreSQL when `TEST_DATABASE_URL` is set) with their requests, grants and pending
//!    `export_audit` jobs, then `Engine::run_due(500)` until nothing is claimed: the claim, the
//!    batched reads, the insertAll requests and the completions, events/s.
//!    `EXPORT_BENCH_CLAIM` sets the claim size instead of 500.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use access_core::engine::Engine;
use access_core::ports::{AuditSink, SystemClock};

const BATCH: usize = 500;

fn main() {
    let n: usize = std::env::var("EXPORT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        sink_alone(n).await;
        let claim: u32 = std::env::var("EXPORT_BENCH_CLAIM")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(BATCH as u32);
        for db in testkit::db::backends().await {
            engine_drain(n, claim, &db).await;
        }
    });
}

async fn sink_alone(n: usize) {
    let (bq, sink) = common::setup().await;
    let events = common::many_events(n);
    let grants = common::granted_count(&events);

    // A fresh backlog: every row is new.
    let started = Instant::now();
    let before = bq.calls().insert_all;
    for batch in events.chunks(BATCH) {
        let report = sink.export(batch).await.expect("export");
        assert!(report.rejected.is_empty());
    }
    let fresh = started.elapsed();
    let fresh_requests = bq.calls().insert_all - before;
    assert_eq!(
        bq.row_count(common::PROJECT, common::DATASET, "access_events"),
        n
    );
    assert_eq!(
        bq.row_count(common::PROJECT, common::DATASET, "access_grants"),
        grants
    );

    // The same backlog again, as after an outage that hid the acknowledgements: every row is
    // a duplicate the insertIds absorb.
    let started = Instant::now();
    for batch in events.chunks(BATCH) {
        sink.export(batch).await.expect("re-export");
    }
    let again = started.elapsed();
    assert_eq!(
        bq.row_count(common::PROJECT, common::DATASET, "access_events"),
        n
    );

    let calls = bq.calls();
    println!(
        "audit-bigquery export into the fake BigQuery ({n} events, {grants} access_grants rows, batches of {BATCH}):"
    );
    println!(
        "  fresh export : {:>8.3} s  {:>9.0} events/s  ({} insertAll requests)",
        fresh.as_secs_f64(),
        n as f64 / fresh.as_secs_f64(),
        fresh_requests
    );
    println!(
        "  re-export    : {:>8.3} s  {:>9.0} events/s  (all {} rows de-duplicated)",
        again.as_secs_f64(),
        n as f64 / again.as_secs_f64(),
        calls.deduplicated_rows
    );
}

/// Commits the scripted lifecycles (requests, grants, events, one export job per event) to a
/// fresh store, then drains them through the engine.
async fn engine_drain(n: usize, claim: u32, db: &testkit::db::TestDb) {
    let (bq, sink) = common::setup().await;
    let store = Arc::new(store_sqlx::SqlStore::connect(&db.url).await.expect("store"));
    let items = common::many_events(n);
    common::seed_backlog(store.as_ref(), &items, chrono::Utc::now(), 600).await;
    let engine = Engine::builder(store.clone(), Arc::new(SystemClock))
        .audit_sink(Arc::new(sink))
        .build()
        .expect("engine");

    let before_calls = bq.calls().insert_all;
    let before_statements = store.statements();
    let started = Instant::now();
    let mut exported = 0u64;
    loop {
        let s = engine.run_due(claim).await.expect("run_due");
        if s.claimed == 0 {
            break;
        }
        exported += s.done.get("export_audit").copied().unwrap_or(0);
    }
    let took = started.elapsed().as_secs_f64();
    assert_eq!(exported, n as u64, "every event is exported");
    assert_eq!(
        bq.row_count(common::PROJECT, common::DATASET, "access_events"),
        n
    );
    println!(
        "  engine drain ({:>8}, claims of {claim}): {took:>8.3} s  {:>9.0} events/s  ({} insertAll requests, {} store statements)",
        db.kind,
        n as f64 / took,
        bq.calls().insert_all - before_calls,
        store.statements() - before_statements,
    );
}
