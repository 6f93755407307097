//! The console's store queries on every backend: keyset pages (no row twice, none skipped, ties
//! on `created_at` broken by id), their filters, the chart figures, and reviving a dead job.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use access_core::duration::AccessDuration;
use access_core::grant::{Grant, GrantStatus};
use access_core::ids::{GrantId, RequestId, ResourceId};
use access_core::jobs::{JobKind, JobStatus, NewJob};
use access_core::ports::{
    ChangeSet, GrantWrite, JobFilter, JobQueue, PageCursor, PageQuery, RequestStore, RequestWrite,
};
use access_core::request::{
    AccessRequest, Actor, Decision, DecisionKind, RequestKind, RequestStatus,
};
use access_core::resource::Justification;
use access_core::subject::{Email, Subject};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use store_sqlx::SqlStore;
use testkit::db::{TestDb, backends};

/// Midnight UTC of 2026-09-01, plus `secs`.
fn t(secs: i64) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(2026, 9, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        + Duration::seconds(secs)
}

fn request(team: &str, user: &str, resource: &str, created: DateTime<Utc>) -> AccessRequest {
    AccessRequest {
        id: RequestId::new(),
        subject: Subject {
            team_id: team.into(),
            user_id: user.into(),
            email: Some(Email::parse(&format!("{}@example.com", user.to_lowercase())).unwrap()),
            name: user.into(),
        },
        resource: ResourceId::parse(resource).unwrap(),
        kind: RequestKind::New,
        duration: AccessDuration::from_secs(3600).unwrap(),
        justification: Justification::parse("console paging test").unwrap(),
        status: RequestStatus::Pending,
        created_at: created,
        updated_at: created,
        pending_until: None,
        grant_id: None,
        decided_by: None,
        failure: None,
        version: 0,
    }
}

fn grant_for(
    r: &AccessRequest,
    status: GrantStatus,
    granted: Option<DateTime<Utc>>,
    ended: Option<DateTime<Utc>>,
) -> Grant {
    Grant {
        id: GrantId::new(),
        subject: r.subject.clone(),
        resource: r.resource.clone(),
        status,
        provider_handle: serde_json::json!({}),
        created_at: r.created_at,
        granted_at: granted,
        expires_at: r.created_at + Duration::hours(30),
        ended_at: ended,
        request_id: r.id,
        revoked_by: None,
        version: 0,
        provider_intent: serde_json::Value::Null,
        takeback_pending: false,
    }
}

/// `(kind, store, the database handle)`: the handle keeps a SQLite file alive.
async fn stores() -> Vec<(&'static str, SqlStore, TestDb)> {
    let mut out = Vec::new();
    for db in backends().await {
        out.push((db.kind, SqlStore::connect(&db.url).await.unwrap(), db));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_pages_cover_every_row_once_with_filters() {
    for (kind, store, _db) in stores().await {
        // 9 requests; three share one created_at, so only the id orders them.
        let mut all = Vec::new();
        for i in 0..9 {
            let at = if (3..6).contains(&i) {
                t(300)
            } else {
                t(i * 100)
            };
            let team = if i % 3 == 0 { "T2" } else { "T1" };
            let mut r = request(
                team,
                &format!("U{}", i % 2),
                if i < 5 { "db" } else { "vpn" },
                at,
            );
            if i == 8 {
                r.status = RequestStatus::Denied;
            }
            all.push(r);
        }
        store
            .commit(ChangeSet {
                requests: all.iter().cloned().map(RequestWrite::Insert).collect(),
                ..Default::default()
            })
            .await
            .unwrap();

        let mut seen = Vec::new();
        let mut before = None;
        for round in 0.. {
            assert!(round < 20, "{kind}: paging does not end (a page repeats)");
            let page = store
                .requests_page(&PageQuery {
                    before: before.clone(),
                    limit: 2,
                    ..PageQuery::default()
                })
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            let last = page.last().unwrap();
            before = Some(PageCursor {
                created_at: last.created_at,
                id: last.id.to_string(),
            });
            seen.extend(page.into_iter().map(|r| (r.created_at, r.id.to_string())));
        }
        assert_eq!(seen.len(), 9, "{kind}: every row once");
        assert_eq!(
            seen.iter().collect::<HashSet<_>>().len(),
            9,
            "{kind}: no row twice"
        );
        let mut sorted = seen.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(seen, sorted, "{kind}: newest first, ties by id");

        let count = |q: PageQuery<RequestStatus>| {
            let store = &store;
            async move { store.requests_page(&q).await.unwrap().len() }
        };
        assert_eq!(
            count(PageQuery {
                team_id: Some("T2".into()),
                ..PageQuery::default()
            })
            .await,
            3,
            "{kind}"
        );
        assert_eq!(
            count(PageQuery {
                person: Some("U1".into()),
                ..PageQuery::default()
            })
            .await,
            4,
            "{kind}"
        );
        assert_eq!(
            count(PageQuery {
                person: Some("u0@example.com".into()),
                ..PageQuery::default()
            })
            .await,
            5,
            "{kind}"
        );
        assert_eq!(
            count(PageQuery {
                resource: Some(ResourceId::parse("vpn").unwrap()),
                ..PageQuery::default()
            })
            .await,
            4,
            "{kind}"
        );
        assert_eq!(
            count(PageQuery {
                status: Some(RequestStatus::Denied),
                ..PageQuery::default()
            })
            .await,
            1,
            "{kind}"
        );
        // since is inclusive, until exclusive: 300 (three rows) and 600.
        assert_eq!(
            count(PageQuery {
                since: Some(t(300)),
                until: Some(t(700)),
                ..PageQuery::default()
            })
            .await,
            4,
            "{kind}"
        );

        // Grants: live ones only, one team.
        let grants = [
            grant_for(&all[0], GrantStatus::Active, Some(t(0)), None),
            grant_for(&all[1], GrantStatus::Expired, Some(t(100)), Some(t(200))),
            grant_for(&all[2], GrantStatus::Revoking, Some(t(200)), None),
        ];
        store
            .commit(ChangeSet {
                grants: grants.iter().cloned().map(GrantWrite::Insert).collect(),
                ..Default::default()
            })
            .await
            .unwrap();
        let live = store
            .grants_page(&PageQuery {
                live_only: true,
                ..PageQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(
            live.iter().map(|g| g.id).collect::<Vec<_>>(),
            vec![grants[2].id, grants[0].id],
            "{kind}"
        );
        let t2 = store
            .grants_page(&PageQuery {
                live_only: true,
                team_id: Some("T2".into()),
                ..PageQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(
            t2.iter().map(|g| g.id).collect::<Vec<_>>(),
            vec![grants[0].id],
            "{kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_stats_count_grants_approvals_and_live_grants() {
    const DAY: i64 = 86_400;
    for (kind, store, _db) in stores().await {
        // Day 0: two db grants and one vpn; day 1: one vpn.
        let rs = [
            request("T1", "U1", "db", t(3600)),
            request("T1", "U2", "db", t(7200)),
            request("T1", "U3", "vpn", t(7200)),
            request("T2", "U4", "vpn", t(DAY + 60)),
        ];
        // Live at the end of day 0: the first (still active) and the third (ends on day 1);
        // the second ended on day 0. At the end of day 1: the first and the fourth.
        let gs = [
            grant_for(&rs[0], GrantStatus::Active, Some(t(3600)), None),
            grant_for(&rs[1], GrantStatus::Expired, Some(t(7200)), Some(t(8000))),
            grant_for(
                &rs[2],
                GrantStatus::Expired,
                Some(t(7200)),
                Some(t(DAY + 10)),
            ),
            grant_for(&rs[3], GrantStatus::Active, Some(t(DAY + 60)), None),
        ];
        // Approvals: 10 min and 30 min after the request (day 0); a second approval of the
        // first request later does not count (first approval only).
        let decision = |r: &AccessRequest, after: i64, who: &str| Decision {
            request_id: r.id,
            actor: Actor::Admin { name: who.into() },
            kind: DecisionKind::Approve,
            at: r.created_at + Duration::seconds(after),
            comment: None,
        };
        store
            .commit(ChangeSet {
                requests: rs.iter().cloned().map(RequestWrite::Insert).collect(),
                grants: gs.iter().cloned().map(GrantWrite::Insert).collect(),
                decisions: vec![
                    decision(&rs[0], 600, "a"),
                    decision(&rs[0], 5000, "b"),
                    decision(&rs[1], 1800, "a"),
                ],
                ..Default::default()
            })
            .await
            .unwrap();
        let s = store.daily_stats(t(DAY + 100), 3, None).await.unwrap();
        let d = |n: i64| (t(n * DAY)).date_naive();
        assert_eq!(
            s.grants_per_day,
            vec![
                (d(0), "db".to_string(), 2),
                (d(0), "vpn".to_string(), 1),
                (d(1), "vpn".to_string(), 1)
            ],
            "{kind}"
        );
        assert_eq!(s.approve_secs.len(), 1, "{kind}");
        assert_eq!(
            (s.approve_secs[0].0, s.approve_secs[0].1),
            (d(0), 2),
            "{kind}"
        );
        assert!(
            (s.approve_secs[0].2 - 1200.0).abs() < 0.001,
            "{kind}: mean of 600 s and 1800 s"
        );
        assert_eq!(
            s.active_at_end_of_day,
            vec![(d(-1), 0), (d(0), 2), (d(1), 2)],
            "{kind}"
        );
        // One team only.
        let s = store
            .daily_stats(t(DAY + 100), 3, Some("T2"))
            .await
            .unwrap();
        assert_eq!(
            s.grants_per_day,
            vec![(d(1), "vpn".to_string(), 1)],
            "{kind}"
        );
        assert!(s.approve_secs.is_empty(), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_job_is_revived_once() {
    for (kind, store, _db) in stores().await {
        let job = NewJob::at(
            JobKind::Expire {
                grant_id: GrantId::new(),
            },
            t(0),
        );
        let id = job.id;
        store
            .commit(ChangeSet {
                jobs: vec![job],
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            !store.revive_job(id, t(5)).await.unwrap(),
            "{kind}: a pending job is not dead"
        );
        let j = store
            .claim_jobs(t(1), 1, Duration::seconds(30))
            .await
            .unwrap()
            .remove(0);
        assert!(
            store
                .bury_job(id, j.claim_token.as_deref().unwrap(), "gave up")
                .await
                .unwrap()
        );
        assert!(store.revive_job(id, t(10)).await.unwrap(), "{kind}");
        assert!(
            !store.revive_job(id, t(10)).await.unwrap(),
            "{kind}: only once"
        );
        let pending = store
            .jobs(&JobFilter {
                status: Some(JobStatus::Pending),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(pending.len(), 1, "{kind}");
        assert_eq!(
            (
                pending[0].run_at,
                pending[0].attempts,
                pending[0].claim_token.as_deref()
            ),
            (t(10), 0, None),
            "{kind}"
        );
        let again = store
            .claim_jobs(t(11), 1, Duration::seconds(30))
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "{kind}: claimable again");
    }
}
