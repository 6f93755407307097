//! Lifecycle benchmark on the real store (SQLite file; PostgreSQL too with TEST_DATABASE_URL):
//! submit latency, job throughput, and revocation lag for a burst of grants that all expire at
//! the same instant, with the real scheduler. Prints medians; run with `make bench`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use access_core::request::RequestKind;
use access_core::{Email, Subject};
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::{App, Config, JobScheduler};
use testkit::submission::{Ask, SubmitTyped};
use tokio_util::sync::CancellationToken;

const CONFIG: &str = r#"
[[resources]]
id = "bench"
provider = "dry-run"
min_duration = "1s"
default_duration = "1h"
max_duration = "8h"
approval = { mode = "auto" }
"#;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ask(i: usize, duration: &str) -> Ask {
    Ask {
        subject: Subject {
            team_id: "T1".into(),
            user_id: format!("U{i:06}"),
            email: Some(Email::parse(&format!("u{i}@example.com")).unwrap()),
            name: String::new(),
        },
        resource: "bench".into(),
        duration: Some(duration.into()),
        justification: "bench".into(),
        kind: RequestKind::New,
    }
}

async fn run(kind: &str, url: String) {
    let app = App::build(
        Config::from_toml(CONFIG, "bench").unwrap(),
        Env {
            database_url: url,
            ..Env::default()
        },
        Overrides::default(),
    )
    .await
    .unwrap();
    let e = app.engine.clone();

    // 1. Submit latency (each is one transaction: request, grant, audit, three jobs).
    let n = 300;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        e.submit_typed(ask(i, "1h")).await.unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let p50 = percentile(&mut lat, 0.5);
    let p99 = percentile(&mut lat, 0.99);

    // 2. Job throughput: provisioning and notification jobs for those requests.
    let t = Instant::now();
    let s = e.drain(1000).await.unwrap();
    let jobs = s.done.values().sum::<u64>();
    let per_sec = jobs as f64 / t.elapsed().as_secs_f64();

    // 3. Revocation lag: a burst of grants expiring together, with the real scheduler running.
    let burst = 200;
    for i in 0..burst {
        e.submit_typed(ask(n + i, "3s")).await.unwrap();
    }
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(JobScheduler::new(e.clone(), app.waker.clone()).run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let lags: Vec<f64> = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let expired = e
            .store()
            .grants(&access_core::ports::GrantFilter {
                status: Some(access_core::GrantStatus::Expired),
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap();
        if expired.len() >= burst || Instant::now() > deadline {
            break expired
                .iter()
                .filter_map(|g| {
                    g.ended_at
                        .map(|end| (end - g.expires_at).num_milliseconds() as f64 / 1000.0)
                })
                .collect();
        }
    };
    shutdown.cancel();
    let _ = task.await;
    let mut lags = lags;
    let revoked = lags.len();
    println!(
        "{kind:>8}: submit p50 {p50:.2} ms p99 {p99:.2} ms | jobs {jobs} at {per_sec:.0}/s | {revoked}/{burst} simultaneous expiries revoked, lag p50 {:.3} s p99 {:.3} s max {:.3} s",
        percentile(&mut lags, 0.5),
        percentile(&mut lags, 0.99),
        percentile(&mut lags, 1.0),
    );
}

/// An audit-export backlog built during a BigQuery outage, then drained once it recovers.
async fn export_backlog(kind: &str, url: String) {
    use std::sync::Arc;
    let bq = testkit::bigquery::FakeBigQuery::start().await;
    bq.create_dataset("bench-project", "ci_chat_bot");
    let mut cfg = audit_bigquery::BigQueryConfig::new("bench-project");
    cfg.base_url = bq.base_url();
    let sink = Arc::new(
        audit_bigquery::BigQuerySink::new(cfg, Arc::new(gcp_auth::StaticToken("bench".into())))
            .unwrap(),
    );
    sink.create_tables().await.unwrap();
    let clock = Arc::new(testkit::provider::ManualClock::starting_now());
    let app = App::build(
        Config::from_toml(CONFIG, "bench").unwrap(),
        Env {
            database_url: url,
            ..Env::default()
        },
        Overrides {
            audit_sink: Some(sink),
            clock: Some(clock.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let e = app.engine.clone();
    bq.set_outage(true);
    for i in 0..500 {
        e.submit_typed(ask(i, "1h")).await.unwrap();
    }
    e.drain(1000).await.unwrap(); // provisioning happens; every export fails and backs off
    let now = e.now();
    let backlog = e
        .store()
        .job_stats(now, Some("export_audit"))
        .await
        .unwrap()
        .pending;
    bq.set_outage(false);
    clock.advance(chrono::Duration::hours(1));
    let t = Instant::now();
    loop {
        let s = e.run_due(500).await.unwrap();
        if s.claimed == 0 {
            break;
        }
    }
    let took = t.elapsed().as_secs_f64();
    let exported = bq.row_count("bench-project", "ci_chat_bot", "access_events");
    println!(
        "{kind:>8}: export backlog of {backlog} events after an outage drained in {took:.2} s ({:.0} events/s); {exported} rows in BigQuery",
        backlog as f64 / took
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    run("sqlite", testkit::db::sqlite_url(dir.path())).await;
    let dir2 = tempfile::tempdir().unwrap();
    export_backlog("sqlite", testkit::db::sqlite_url(dir2.path())).await;
    if std::env::var("TEST_DATABASE_URL").is_ok() {
        for bench in ["lifecycle", "export"] {
            let db = testkit::db::backends()
                .await
                .into_iter()
                .find(|d| d.kind == "postgres")
                .unwrap();
            if bench == "lifecycle" {
                run("postgres", db.url.clone()).await;
            } else {
                export_backlog("postgres", db.url.clone()).await;
            }
        }
    }
}
