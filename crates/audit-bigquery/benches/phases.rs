//! Where an export batch's store time goes: the store calls of `Engine::run_due` for a backlog
//! of 20,000 `export_audit` jobs, timed one by one over 10 batches of 500 (SQLite, and PostgreSQL
//! when `TEST_DATABASE_URL` is set). A diagnostic for `docs/performance.md` ("Export drain"):
//! `cargo bench -p audit-bigquery --bench phases`.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use access_core::jobs::JobKind;
use access_core::ports::{AuditLog, ClaimScope, JobQueue, RequestStore};

const BATCHES: usize = 10;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        for db in testkit::db::backends().await {
            let store = Arc::new(store_sqlx::SqlStore::connect(&db.url).await.unwrap());
            let items = common::many_events(20_000);
            common::seed_backlog(store.as_ref(), &items, chrono::Utc::now(), 600).await;
            // others claim, export claim, events, requests, grants, completion
            let mut total = [0f64; 6];
            let lease = chrono::Duration::minutes(5);
            for _ in 0..BATCHES {
                let now = chrono::Utc::now();
                let t = Instant::now();
                let others = store
                    .claim_jobs_in(now, 2, lease, ClaimScope::AllBut(&["export_audit", "inbox"]))
                    .await
                    .unwrap();
                total[0] += t.elapsed().as_secs_f64();
                assert!(others.is_empty());
                let t = Instant::now();
                let jobs = store
                    .claim_jobs_in(now, 500, lease, ClaimScope::Only("export_audit"))
                    .await
                    .unwrap();
                total[1] += t.elapsed().as_secs_f64();
                let ids: Vec<_> = jobs
                    .iter()
                    .filter_map(|j| match j.kind {
                        JobKind::ExportAudit { event_id } => Some(event_id),
                        _ => None,
                    })
                    .collect();
                let t = Instant::now();
                let events = store.audit_events_by_id(&ids).await.unwrap();
                total[2] += t.elapsed().as_secs_f64();
                let requests: BTreeSet<_> =
                    events.iter().filter_map(|e| e.record.request_id).collect();
                let grants: BTreeSet<_> = events.iter().filter_map(|e| e.record.grant_id).collect();
                let t = Instant::now();
                store
                    .requests_by_id(&requests.into_iter().collect::<Vec<_>>())
                    .await
                    .unwrap();
                total[3] += t.elapsed().as_secs_f64();
                let t = Instant::now();
                store
                    .grants_by_id(&grants.into_iter().collect::<Vec<_>>())
                    .await
                    .unwrap();
                total[4] += t.elapsed().as_secs_f64();
                let done: Vec<_> = jobs
                    .iter()
                    .map(|j| (j.id, j.claim_token.clone().unwrap()))
                    .collect();
                let t = Instant::now();
                store.complete_jobs(&done, now).await.unwrap();
                total[5] += t.elapsed().as_secs_f64();
            }
            let ms = |i: usize| total[i] * 1000.0 / BATCHES as f64;
            println!(
                "{:>8}: per batch of 500, ms: other lanes' claim {:.1} | export claim {:.1} | events {:.1} | requests {:.1} | grants {:.1} | completion {:.1}",
                db.kind,
                ms(0),
                ms(1),
                ms(2),
                ms(3),
                ms(4),
                ms(5)
            );
        }
    });
}
