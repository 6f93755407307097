//! Scale guards (issue 13) that cannot flake: round trips counted with the store's statement
//! hook (`SqlStore::statements`), never timed. Figures at 1,000,000 requests are in `make bench`
//! (`bins/gatehouse-server/benches/scale.rs`) and `docs/performance.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use access_core::request::RequestKind;
use access_core::{Email, Subject};
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::{App, Config, JobScheduler};
use testkit::bigquery::FakeBigQuery;
use testkit::provider::ManualClock;
use testkit::submission::{Ask, SubmitTyped};
use tokio_util::sync::CancellationToken;

const CONFIG: &str = r#"
[[resources]]
id = "demo"
provider = "dry-run"
min_duration = "1m"
default_duration = "8h"
max_duration = "8h"
approval = { mode = "auto" }
"#;

fn ask(i: usize) -> Ask {
    Ask {
        subject: Subject {
            team_id: "T1".into(),
            user_id: format!("U{i}"),
            email: Some(Email::parse(&format!("u{i}@example.com")).unwrap()),
            name: String::new(),
        },
        resource: "demo".into(),
        duration: Some("8h".into()),
        justification: "scale".into(),
        kind: RequestKind::New,
    }
}

/// The export drain reads a claimed batch with a fixed number of statements (the events, their
/// requests, their grants: one each per 500), not three per event; that per-event reading held
/// the drain near 1,100 events/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_reads_a_batch_in_a_few_statements() {
    for db in testkit::db::backends().await {
        let bq = FakeBigQuery::start().await;
        bq.create_dataset("audit-proj", "ci_chat_bot");
        let mut cfg = audit_bigquery::BigQueryConfig::new("audit-proj");
        cfg.base_url = bq.base_url();
        let sink = Arc::new(
            audit_bigquery::BigQuerySink::new(cfg, Arc::new(gcp_auth::StaticToken("t".into())))
                .unwrap(),
        );
        sink.create_tables().await.unwrap();
        let clock = Arc::new(ManualClock::starting_now());
        let app = App::build(
            Config::from_toml(CONFIG, "t").unwrap(),
            Env {
                database_url: db.url.clone(),
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
        // A backlog: granted during an outage, every export backing off.
        bq.set_outage(true);
        for i in 0..20 {
            e.submit_typed(ask(i)).await.unwrap();
        }
        e.drain(500).await.unwrap();
        bq.set_outage(false);
        clock.advance(chrono::Duration::hours(1));

        let before = app.store.statements();
        let s = e.run_due(500).await.unwrap();
        let used = app.store.statements() - before;
        let exported = s.done.get("export_audit").copied().unwrap_or(0);
        assert!(exported >= 60, "{}: {exported} events exported", db.kind);
        assert_eq!(
            s.claimed as u64, exported,
            "{}: only exports were due",
            db.kind
        );
        assert_eq!(
            bq.row_count("audit-proj", "ci_chat_bot", "access_events") as u64,
            exported,
            "{}",
            db.kind
        );
        // Two claims, three reads, one completion.
        assert!(
            used <= 8,
            "{}: exporting {exported} events took {used} statements",
            db.kind
        );
    }
}

/// Inserts a pending notification job of `key`, enqueued `seq`-th, due at `run_at`.
async fn ordered_job(url: &str, key: &str, seq: i64, run_at: chrono::DateTime<chrono::Utc>) {
    let now = chrono::Utc::now().timestamp_micros();
    let sql = format!(
        "INSERT INTO jobs (id, kind, payload, status, run_at, attempts, max_attempts, created_at, updated_at, order_key, order_seq) \
         VALUES ('{}', 'notify', '{{}}', 'pending', {}, 1, 10, {now}, {now}, '{key}', {seq})",
        access_core::ids::JobId::new(),
        run_at.timestamp_micros()
    );
    if url.starts_with("sqlite:") {
        let p = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query(&sql).execute(&p).await.unwrap();
        p.close().await;
    } else {
        let p = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query(&sql).execute(&p).await.unwrap();
        p.close().await;
    }
}

/// An idle scheduler looks at the queue once per tick (three claims: work, revocations, exports;
/// and the next due time) and
/// ticks no more often than it has to. A notification due now but held behind an earlier one
/// that is backing off (same ordering key) is not work: it used to be reported as due, so the
/// scheduler woke at once, claimed nothing, and looped like that until the earlier one's retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_scheduler_issues_a_fixed_number_of_statements_per_tick() {
    for db in testkit::db::backends().await {
        let app = App::build(
            Config::from_toml(CONFIG, "t").unwrap(),
            Env {
                database_url: db.url.clone(),
                ..Env::default()
            },
            Overrides::default(),
        )
        .await
        .unwrap();
        let now = chrono::Utc::now();
        // Stored rows that are not due (a live grant's expiry and reminder, its finished jobs).
        app.engine.submit_typed(ask(1)).await.unwrap();
        app.engine.drain(100).await.unwrap();
        ordered_job(&db.url, "notify:r1", 1, now + chrono::Duration::hours(1)).await;
        ordered_job(&db.url, "notify:r1", 2, now - chrono::Duration::seconds(1)).await;
        assert_eq!(
            app.engine.run_due(10).await.unwrap().claimed,
            0,
            "{}: the later notification waits for the earlier one",
            db.kind
        );

        let tick = Duration::from_millis(200);
        let shutdown = CancellationToken::new();
        let before = app.store.statements();
        let started = Instant::now();
        let task = tokio::spawn(
            JobScheduler::new(app.engine.clone(), app.waker.clone())
                .max_idle(tick)
                .run(shutdown.clone()),
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        shutdown.cancel();
        task.await.unwrap();
        let used = app.store.statements() - before;
        let ticks = (started.elapsed().as_millis() / tick.as_millis()) as u64 + 2;
        assert!(
            used <= 4 * ticks,
            "{}: {used} statements in {:?} of idling (at most {ticks} ticks of 4)",
            db.kind,
            started.elapsed()
        );
    }
}
