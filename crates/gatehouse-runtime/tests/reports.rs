//! Compliance export and the monthly report over a scripted month of activity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use access_core::ports::{AuditFilter, Provider};
use access_core::request::RequestKind;
use access_core::{Actor, Email, Subject};
use chrono::{Duration, TimeZone, Utc};
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::reports::{CSV_HEADER, ExportFormat, Month, MonthlyReport, write_events};
use gatehouse_runtime::{App, Config};
use testkit::provider::{Behaviour, ManualClock, TestProvider};
use testkit::submission::{Ask, SubmitTyped};

const CONFIG: &str = r#"
[[resources]]
id = "vpn"
provider = "test"
default_duration = "4h"
max_duration = "24h"
approval = { mode = "approvers", approvers = { users = ["UBOSS", "UOPS"] } }

[[resources]]
id = "gcp"
provider = "test"
default_duration = "2h"
max_duration = "8h"
approval = { mode = "auto" }
"#;

fn who(u: &str) -> Subject {
    Subject {
        team_id: "T1".into(),
        user_id: u.into(),
        email: Some(Email::parse(&format!("{u}@example.com")).unwrap()),
        name: u.into(),
    }
}

fn ask(u: &str, r: &str, d: &str) -> Ask {
    Ask {
        subject: who(u),
        resource: r.into(),
        duration: Some(d.into()),
        justification: "work".into(),
        kind: RequestKind::New,
    }
}

fn approver(u: &str) -> Actor {
    Actor::User {
        team_id: "T1".into(),
        user_id: u.into(),
        name: u.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_month() {
    for db in testkit::db::backends().await {
        // October activity that must not count, then November.
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 10, 31, 22, 0, 0).unwrap(),
        ));
        let provider = Arc::new(TestProvider::new());
        let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        providers.insert("test".into(), provider.clone());
        let app = App::build(
            Config::from_toml(CONFIG, "t").unwrap(),
            Env {
                database_url: db.url.clone(),
                ..Env::default()
            },
            Overrides {
                providers,
                clock: Some(clock.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let e = app.engine.clone();
        let step = |h: i64| clock.advance(Duration::hours(h));

        e.submit_typed(ask("UOLD", "gcp", "1h")).await.unwrap(); // October
        e.drain(10).await.unwrap();
        step(1); // 23:00: the October grant expires in October
        e.drain(10).await.unwrap();
        step(2); // 2026-11-01 01:00

        let r = e.submit_typed(ask("UALICE", "vpn", "4h")).await.unwrap();
        e.approve(r.id, approver("UBOSS")).await.unwrap();
        e.drain(10).await.unwrap();
        step(1);
        let r = e.submit_typed(ask("UBOB", "vpn", "2h")).await.unwrap();
        e.deny(r.id, approver("UOPS"), Some("not now".into()))
            .await
            .unwrap();
        let r = e.submit_typed(ask("UBOB", "gcp", "2h")).await.unwrap();
        e.drain(10).await.unwrap();
        e.revoke_grant(r.grant_id.unwrap(), approver("UBOB"))
            .await
            .unwrap(); // self-revocation
        e.drain(10).await.unwrap();
        provider.on_grant(Behaviour::FailPermanent("quota exceeded".into()));
        e.submit_typed(ask("UCAROL", "gcp", "1h")).await.unwrap();
        e.drain(10).await.unwrap();
        provider.on_grant(Behaviour::Succeed);
        step(10); // ALICE's grant expires
        e.drain(10).await.unwrap();

        let month: Month = "2026-11".parse().unwrap();
        let events = e
            .store()
            .audit_events(&AuditFilter {
                since: Some(month.start()),
                until: Some(month.end()),
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap();
        let report = MonthlyReport::from_events(month, &events);
        assert_eq!(report.requests, 4, "{}: {report:#?}", db.kind);
        assert_eq!(report.grants, 2);
        assert_eq!(report.denied, 1);
        assert_eq!(report.expired, 1);
        assert_eq!(report.revoked, 1);
        assert_eq!(report.self_revocations, 1);
        assert_eq!(report.failures, 1);
        assert!(report.failure_reasons[0].contains("quota exceeded"));
        assert_eq!(report.by_resource["vpn"].grants, 1);
        assert_eq!(report.by_resource["vpn"].granted_seconds, 4 * 3600);
        assert_eq!(report.by_resource["gcp"].grants, 1);
        assert_eq!(report.by_person["T1/UALICE"].grants, 1);
        assert_eq!(report.approvers["slack:T1/UBOSS"], 1);
        assert_eq!(
            report.approvers["system"], 2,
            "auto-approvals (BOB and CAROL) in November"
        );
        assert!(
            !report.by_person.contains_key("T1/UOLD"),
            "October is not in November's report"
        );
        let text = report.to_text();
        assert!(text.contains("Gatehouse access report for 2026-11"));

        // Exports: one line per event plus the CSV header; JSONL parses back.
        let mut csv = Vec::new();
        write_events(&mut csv, &events, ExportFormat::Csv, true).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        assert_eq!(csv.lines().count(), events.len() + 1);
        assert_eq!(csv.lines().next(), Some(CSV_HEADER));
        let mut jsonl = Vec::new();
        write_events(&mut jsonl, &events, ExportFormat::Jsonl, true).unwrap();
        let parsed: Vec<access_core::AuditEvent> = String::from_utf8(jsonl)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(parsed, events);
    }
}
