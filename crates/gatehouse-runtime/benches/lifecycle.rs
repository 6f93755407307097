//! Lifecycle benchmark on the real store (SQLite file; PostgreSQL too with TEST_DATABASE_URL):
//! submit latency, job throughput, and revocation lag for a burst of grants that all expire at
//! the same instant, with the real scheduler. Prints medians; run with `make bench`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use access_core::engine::Submission;
use access_core::request::RequestKind;
use access_core::{Email, Subject};
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::{App, Config, JobScheduler};
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

fn ask(i: usize, duration: &str) -> Submission {
    Submission {
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
        e.submit(ask(i, "1h")).await.unwrap();
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
        e.submit(ask(n + i, "3s")).await.unwrap();
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

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    run("sqlite", testkit::db::sqlite_url(dir.path())).await;
    if std::env::var("TEST_DATABASE_URL").is_ok() {
        let db = testkit::db::backends()
            .await
            .into_iter()
            .find(|d| d.kind == "postgres")
            .unwrap();
        run("postgres", db.url.clone()).await;
    }
}
