//! Group commit (docs/performance.md, "Group commit"): CPU per change set when 1, 8 or 64
//! callers commit concurrently, with the transactions (commits) that took. Each caller commits
//! a request-like change set (a request insert, two audit records, two jobs, one written
//! claimed) and then completes its claimed job, as a slash command does, in a closed loop.
//!
//! CPU is the whole process's utime + stime from /proc/self/stat (sqlx runs SQLite on a worker
//! thread per connection). SQLite by default (a file in the temp dir, the store's own settings);
//! `GROUP_BENCH_URL=postgres://…` measures PostgreSQL instead (CPU of this process only: the
//! client side). `GROUP_BENCH_OPS` sets the change sets per case (default 1,500, to keep `make bench` under 15 minutes; the figures in docs/performance.md were taken with 6,000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use access_core::audit::{AuditKind, AuditRecord};
use access_core::duration::AccessDuration;
use access_core::ids::{RequestId, ResourceId};
use access_core::jobs::{JobKind, NewJob};
use access_core::ports::{ChangeSet, ClaimAtInsert, JobQueue, RequestStore, RequestWrite};
use access_core::request::{AccessRequest, Actor, RequestKind, RequestStatus};
use access_core::resource::Justification;
use access_core::subject::Subject;
use chrono::{Duration, Utc};
use store_sqlx::SqlStore;

fn process_cpu(tick: f64) -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return f64::NAN;
    };
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / tick
}

fn clock_tick() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn change_set(user: &str) -> (ChangeSet, ClaimAtInsert) {
    let now = access_core::audit::truncate_to_micros(Utc::now());
    let r = AccessRequest {
        id: RequestId::new(),
        subject: Subject {
            team_id: "T1".into(),
            user_id: user.into(),
            email: None,
            name: format!("Person {user}"),
        },
        resource: ResourceId::parse("dev-network").unwrap(),
        kind: RequestKind::New,
        duration: AccessDuration::from_secs(3600).unwrap(),
        justification: Justification::parse("debugging the payment service").unwrap(),
        status: RequestStatus::Pending,
        created_at: now,
        updated_at: now,
        pending_until: None,
        grant_id: None,
        decided_by: None,
        failure: None,
        version: 0,
    };
    let record = || {
        AuditRecord::new(
            AuditKind::AccessRequested,
            Actor::from_subject(&r.subject),
            now,
        )
        .subject(&r.subject.team_id, &r.subject.user_id)
        .resource(&r.resource)
        .request(r.id)
    };
    let jobs: Vec<NewJob> = (0..2)
        .map(|i| {
            NewJob::at(
                JobKind::TimeoutPending { request_id: r.id },
                now + Duration::hours(i),
            )
        })
        .collect();
    let claim = ClaimAtInsert {
        token: uuid_like(user),
        lease: Duration::seconds(60),
        ids: vec![jobs[0].id],
    };
    (
        ChangeSet {
            requests: vec![RequestWrite::Insert(r.clone())],
            audit: vec![record(), record()],
            claimed: Some(claim.clone()),
            jobs,
            ..Default::default()
        },
        claim,
    )
}

fn uuid_like(user: &str) -> String {
    format!("token-{user}-{}", RequestId::new())
}

fn main() {
    let ops: usize = std::env::var("GROUP_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let tick = clock_tick();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir =
            std::env::temp_dir().join(format!("gatehouse-group-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = std::env::var("GROUP_BENCH_URL")
            .unwrap_or_else(|_| format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()));
        let grouped = SqlStore::connect(&url).await.unwrap();
        println!(
            "group commit, {} ({ops} change sets per case, 2 tokio workers; CPU = whole process)",
            grouped.backend().as_str()
        );
        println!(
            "{:<22} {:>18} {:>16} {:>16} {:>10}",
            "committers", "CPU µs/change set", "wall µs/change", "commits/change", "stmts/chg"
        );
        // Grouping off (a batch cap of 1: every call its own transaction, as before), then on.
        let alone = SqlStore::connect(&url).await.unwrap().with_group_cap(1);
        for (mode, store) in [("alone", alone), ("grouped", grouped)] {
            // Warm-up: the store learns the audit head, the pool fills.
            for i in 0..50 {
                store
                    .commit(change_set(&format!("W{mode}{i}")).0)
                    .await
                    .unwrap();
            }
            for conc in [1usize, 8, 64] {
                let per = ops / conc;
                let before = store.stats();
                let c0 = process_cpu(tick);
                let t0 = Instant::now();
                let store2 = Arc::new(store.clone());
                let mut handles = Vec::new();
                for c in 0..conc {
                    let store = store2.clone();
                    handles.push(tokio::spawn(async move {
                        for i in 0..per {
                            let (cs, claim) = change_set(&format!("U{mode}{c}-{i}"));
                            store.commit(cs).await.unwrap();
                            let done = store
                                .complete_job(claim.ids[0], &claim.token, Utc::now())
                                .await
                                .unwrap();
                            assert!(done);
                        }
                    }));
                }
                for h in handles {
                    h.await.unwrap();
                }
                let n = (per * conc) as f64;
                let cpu = (process_cpu(tick) - c0) * 1e6 / n;
                let wall = t0.elapsed().as_secs_f64() * 1e6 / n;
                let s = store.stats() - before;
                println!(
                    "{:<22} {cpu:>18.1} {wall:>16.1} {:>16.3} {:>10.2}",
                    format!("{conc} ({mode})"),
                    s.commits as f64 / n,
                    s.statements as f64 / n
                );
            }
            store.close().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}
