//! The audit export through the job queue: a ten-minute BigQuery outage (simulated on a manual
//! clock) while access is granted and revoked loses nothing and duplicates nothing, and no grant
//! waits for the export.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use access_core::ports::AuditFilter;
use access_core::request::RequestKind;
use access_core::{Email, RequestStatus, Subject};
use chrono::Duration;
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::{App, Config};
use testkit::bigquery::FakeBigQuery;
use testkit::provider::ManualClock;
use testkit::submission::{Ask, SubmitTyped};

const CONFIG: &str = r#"
[[resources]]
id = "demo"
provider = "dry-run"
min_duration = "1m"
default_duration = "5m"
max_duration = "1h"
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
        duration: Some("5m".into()),
        justification: "outage drill".into(),
        kind: RequestKind::New,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_minute_outage_loses_and_duplicates_nothing() {
    for db in testkit::db::backends().await {
        let bq = FakeBigQuery::start().await;
        bq.create_dataset("audit-proj", "ci_chat_bot");
        // Real BigQuery forgets insertIds after about a minute: no dedup help from the sink here,
        // so a duplicate would show.
        bq.set_dedup_window(Some(std::time::Duration::from_millis(1)));
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

        // Before the outage: exported at once.
        e.submit_typed(ask(0)).await.unwrap();
        e.drain(20).await.unwrap();
        assert_eq!(
            bq.row_count("audit-proj", "ci_chat_bot", "access_events"),
            4,
            "{}",
            db.kind
        );

        // Ten minutes down, in 30-second steps, with grants starting and expiring meanwhile.
        bq.set_outage(true);
        for step in 0..20 {
            if step % 2 == 0 {
                let r = e.submit_typed(ask(step + 1)).await.unwrap();
                e.drain(20).await.unwrap();
                // The grant did not wait for the export.
                let r = e.store().request(r.id).await.unwrap().unwrap();
                assert_eq!(r.status, RequestStatus::Active, "{}", db.kind);
            }
            clock.advance(Duration::seconds(30));
            e.drain(20).await.unwrap();
        }
        let backlog = e
            .store()
            .job_stats(e.now(), Some("export_audit"))
            .await
            .unwrap();
        assert!(backlog.pending > 30, "{}: {backlog:?}", db.kind);
        assert_eq!(backlog.dead, 0, "export jobs never give up");
        assert_eq!(
            backlog.oldest_pending_secs.map(|s| s >= 540),
            Some(true),
            "{backlog:?}"
        );

        // Back up: the backlog drains in order of the chain, once.
        bq.set_outage(false);
        clock.advance(Duration::minutes(15));
        e.drain(100).await.unwrap();
        let after = e
            .store()
            .job_stats(e.now(), Some("export_audit"))
            .await
            .unwrap();
        assert_eq!(
            (after.pending, after.dead),
            (0, 0),
            "{}: {after:?}",
            db.kind
        );

        let local = e
            .store()
            .audit_events(&AuditFilter {
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap();
        let rows = bq.stored_rows("audit-proj", "ci_chat_bot", "access_events");
        let mut seen: HashMap<String, usize> = HashMap::new();
        for r in &rows {
            *seen
                .entry(r.json["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        let local_ids: HashSet<String> = local.iter().map(|ev| ev.record.id.to_string()).collect();
        assert_eq!(seen.len(), local.len(), "{}: every event exported", db.kind);
        assert!(seen.keys().all(|k| local_ids.contains(k)));
        assert!(
            seen.values().all(|n| *n == 1),
            "{}: no duplicates: {seen:?}",
            db.kind
        );
        let grants = bq.row_count("audit-proj", "ci_chat_bot", "access_grants");
        assert_eq!(grants, 11, "{}: one access_grants row per grant", db.kind);
    }
}
