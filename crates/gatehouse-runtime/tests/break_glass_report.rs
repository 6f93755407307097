//! Break-glass in the monthly report: the month's emergency grants are counted and those no
//! approver has reviewed are listed, until a review (in the month or after it) takes them off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use access_core::emergency::ReviewOutcome;
use access_core::ports::AuditFilter;
use access_core::request::RequestKind;
use access_core::{Actor, Email, Subject};
use chrono::{Duration, TimeZone, Utc};
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::reports::{Month, MonthlyReport};
use gatehouse_runtime::{App, Config};
use testkit::provider::ManualClock;
use testkit::submission::{Ask, SubmitTyped};

const CONFIG: &str = r#"
[[resources]]
id = "prod-db"
provider = "dry-run"
max_duration = "8h"
approval = { mode = "approvers", approvers = { users = ["UBOSS", "UOPS"] } }
emergency = true
"#;

fn ask(u: &str) -> Ask {
    Ask {
        subject: Subject {
            team_id: "T1".into(),
            user_id: u.into(),
            email: Some(Email::parse(&format!("{}@example.com", u.to_lowercase())).unwrap()),
            name: u.into(),
        },
        resource: "prod-db".into(),
        duration: None,
        justification: format!("outage seen by {u}"),
        kind: RequestKind::New,
    }
}

fn boss() -> Actor {
    Actor::User {
        team_id: "T1".into(),
        user_id: "UBOSS".into(),
        name: "boss".into(),
    }
}

#[tokio::test]
async fn the_monthly_report_lists_unreviewed_emergency_grants() {
    for db in testkit::db::backends().await {
        let kind = db.kind;
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 20, 9, 0, 0).unwrap(),
        ));
        let app = App::build(
            Config::from_toml(CONFIG, "t").unwrap(),
            Env {
                database_url: db.url.clone(),
                ..Env::default()
            },
            Overrides {
                clock: Some(clock.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let e = app.engine.clone();
        let reviewed = e.submit_emergency_typed(ask("UALICE")).await.unwrap();
        let forgotten = e.submit_emergency_typed(ask("UBOB")).await.unwrap();
        let late = e.submit_emergency_typed(ask("UCAROL")).await.unwrap();
        e.drain(10).await.unwrap();
        clock.advance(Duration::hours(2));
        e.review_emergency(reviewed.id, boss(), ReviewOutcome::Reviewed)
            .await
            .unwrap();
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
        let mut report = MonthlyReport::from_events(month, &events);
        assert_eq!(report.emergency_grants, 3, "{kind}");
        let unreviewed: Vec<String> = report
            .emergency_unreviewed
            .iter()
            .map(|u| u.request_id.clone())
            .collect();
        assert_eq!(
            unreviewed,
            vec![forgotten.id.to_string(), late.id.to_string()],
            "{kind}"
        );
        assert_eq!(report.emergency_unreviewed[0].person, "T1/UBOB");
        assert_eq!(report.emergency_unreviewed[0].resource, "prod-db");
        assert_eq!(
            report.emergency_unreviewed[0].justification,
            "outage seen by UBOB"
        );
        let text = report.to_text();
        assert!(
            text.contains("Break-glass grants: 3 (2 unreviewed)"),
            "{kind}: {text}"
        );
        assert!(
            text.contains(&format!(
                "UNREVIEWED 2026-11-20 09:00 T1/UBOB prod-db (request {})",
                forgotten.id
            )),
            "{kind}: {text}"
        );

        // Reviewed in December: no longer unreviewed once the later reviews are noted.
        clock.advance(Duration::days(15));
        e.review_emergency(late.id, boss(), ReviewOutcome::Revoked)
            .await
            .unwrap();
        let later = e
            .store()
            .audit_events(&AuditFilter {
                since: Some(month.end()),
                kind: Some(access_core::audit::AuditKind::EmergencyReviewed),
                ..Default::default()
            })
            .await
            .unwrap();
        report.note_reviews(&later);
        assert_eq!(report.emergency_unreviewed.len(), 1, "{kind}");
        assert_eq!(
            report.emergency_unreviewed[0].request_id,
            forgotten.id.to_string()
        );
    }
}

fn approver(u: &str) -> Actor {
    Actor::User {
        team_id: "T1".into(),
        user_id: u.into(),
        name: u.into(),
    }
}

/// Two approvers clicking at the same moment: one review, one audit event, one answer saying
/// who was first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_reviews_yield_one_review() {
    for db in testkit::db::backends().await {
        let kind = db.kind;
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
        let e = app.engine.clone();
        for round in 0..5 {
            let r = e
                .submit_emergency_typed(ask(&format!("URACE{round}")))
                .await
                .unwrap();
            let (a, b) = tokio::join!(
                e.review_emergency(r.id, approver("UBOSS"), ReviewOutcome::Reviewed),
                e.review_emergency(r.id, approver("UOPS"), ReviewOutcome::Revoked),
            );
            assert_eq!(
                usize::from(a.is_ok()) + usize::from(b.is_ok()),
                1,
                "{kind}: {a:?} {b:?}"
            );
            let loser = a.err().or(b.err()).unwrap();
            assert!(
                matches!(loser, access_core::EngineError::AlreadyReviewed { .. }),
                "{kind}: {loser:?}"
            );
            let reviews = e
                .store()
                .audit_events(&AuditFilter {
                    request_id: Some(r.id),
                    kind: Some(access_core::audit::AuditKind::EmergencyReviewed),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(reviews.len(), 1, "{kind}");
        }
    }
}
