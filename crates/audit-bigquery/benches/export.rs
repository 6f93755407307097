//! Export throughput into the fake BigQuery: N events (default 20,000; `EXPORT_BENCH_EVENTS`)
//! in batches of 500, as the export worker sends them. Run with `cargo bench -p audit-bigquery`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use access_core::ports::AuditSink;

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
        assert_eq!(bq.row_count(common::PROJECT, common::DATASET, "access_events"), n);
        assert_eq!(bq.row_count(common::PROJECT, common::DATASET, "access_grants"), grants);

        // The same backlog again, as after an outage that hid the acknowledgements: every row is
        // a duplicate the insertIds absorb.
        let started = Instant::now();
        for batch in events.chunks(BATCH) {
            sink.export(batch).await.expect("re-export");
        }
        let again = started.elapsed();
        assert_eq!(bq.row_count(common::PROJECT, common::DATASET, "access_events"), n);

        let calls = bq.calls();
        println!("audit-bigquery export into the fake BigQuery ({n} events, {grants} access_grants rows, batches of {BATCH}):");
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
    });
}
