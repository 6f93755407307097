//! Issue 17 on every backend: the per-person rate-limit figures of `Store::submission_facts`
//! (one statement) and `Store::recent_audit_events` (newest first, about or by a person).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_core::audit::{AuditKind, AuditRecord};
use access_core::duration::AccessDuration;
use access_core::ids::{RequestId, ResourceId};
use access_core::limits::RateQuery;
use access_core::ports::{AuditLog, ChangeSet, RequestStore, RequestWrite};
use access_core::request::{AccessRequest, Actor, RequestKind, RequestStatus};
use access_core::resource::Justification;
use access_core::subject::{Email, Subject, SubjectKey};
use chrono::{DateTime, Duration, Utc};
use store_sqlx::SqlStore;
use testkit::db::backends;

fn request(user: &str, resource: &str, at: DateTime<Utc>, status: RequestStatus) -> AccessRequest {
    AccessRequest {
        id: RequestId::new(),
        subject: Subject {
            team_id: "T1".into(),
            user_id: user.into(),
            email: Some(Email::parse("p@example.com").unwrap()),
            name: user.into(),
        },
        resource: ResourceId::parse(resource).unwrap(),
        kind: RequestKind::New,
        duration: AccessDuration::from_secs(3600).unwrap(),
        justification: Justification::parse("work").unwrap(),
        status,
        created_at: at,
        updated_at: at,
        pending_until: (status == RequestStatus::Pending).then(|| at + Duration::hours(24)),
        grant_id: None,
        decided_by: None,
        failure: None,
        version: 0,
    }
}

#[tokio::test]
async fn submission_facts_count_the_window_and_the_pending_requests() {
    for db in backends().await {
        let kind = db.kind;
        let store = SqlStore::connect(&db.url).await.unwrap();
        let t0 = access_core::audit::truncate_to_micros(Utc::now());
        let mut cs = ChangeSet::default();
        // Alice: 4 requests 10 minutes apart, two of them pending; Bob: one, pending.
        for i in 0..4 {
            let status = if i % 2 == 0 {
                RequestStatus::Pending
            } else {
                RequestStatus::Cancelled
            };
            let r = request(
                "UALICE",
                &format!("r{i}"),
                t0 + Duration::minutes(10 * i),
                status,
            );
            cs.requests.push(RequestWrite::Insert(r));
        }
        cs.requests.push(RequestWrite::Insert(request(
            "UBOB",
            "r0",
            t0,
            RequestStatus::Pending,
        )));
        store.commit(cs).await.unwrap();
        let alice = SubjectKey {
            team_id: "T1".into(),
            user_id: "UALICE".into(),
        };
        let r0 = ResourceId::parse("r0").unwrap();
        let facts = |since: DateTime<Utc>, nth: u32| {
            let (store, alice, r0) = (&store, &alice, &r0);
            async move {
                store
                    .submission_facts(alice, r0, Some(RateQuery { since, nth }))
                    .await
                    .unwrap()
            }
        };

        let f = facts(t0, 3).await;
        assert!(f.pending.is_some(), "{kind}: pending on r0");
        assert_eq!(f.rate.pending_total, 2, "{kind}");
        assert_eq!(
            f.rate.first_pending_until,
            Some(t0 + Duration::hours(24)),
            "{kind}"
        );
        // The 3rd newest of t0, +10, +20, +30 is +10.
        assert_eq!(
            f.rate.window_nth_newest,
            Some(t0 + Duration::minutes(10)),
            "{kind}"
        );
        // The 4th is t0, inside a window starting at t0; there is no 5th.
        assert_eq!(
            facts(t0, 4).await.rate.window_nth_newest,
            Some(t0),
            "{kind}"
        );
        assert_eq!(facts(t0, 5).await.rate.window_nth_newest, None, "{kind}");
        // A window starting after the 3rd newest: fewer than 3 in it.
        assert_eq!(
            facts(t0 + Duration::minutes(11), 3)
                .await
                .rate
                .window_nth_newest,
            None,
            "{kind}"
        );
        // Without a query the figures are not read.
        let plain = store.submission_facts(&alice, &r0, None).await.unwrap();
        assert_eq!(plain.rate, Default::default(), "{kind}");
        assert_eq!(plain.pending, f.pending, "{kind}");
    }
}

#[tokio::test]
async fn recent_audit_events_are_about_or_by_the_person_newest_first() {
    for db in backends().await {
        let kind = db.kind;
        let store = SqlStore::connect(&db.url).await.unwrap();
        let now = access_core::audit::truncate_to_micros(Utc::now());
        let alice = Actor::User {
            team_id: "T1".into(),
            user_id: "UALICE".into(),
            name: "alice".into(),
        };
        let bob = Actor::User {
            team_id: "T1".into(),
            user_id: "UBOB".into(),
            name: "bob".into(),
        };
        let mut cs = ChangeSet::default();
        for i in 0..5 {
            // About Alice, by Alice.
            cs.audit.push(
                AuditRecord::new(AuditKind::AccessRequested, alice.clone(), now)
                    .subject("T1", "UALICE")
                    .details(serde_json::json!({"i": i})),
            );
        }
        // By Alice, about Bob (she approved his request).
        cs.audit.push(
            AuditRecord::new(AuditKind::AccessApproved, alice.clone(), now).subject("T1", "UBOB"),
        );
        // About Alice, by the system.
        cs.audit.push(
            AuditRecord::new(AuditKind::AccessGranted, Actor::System, now).subject("T1", "UALICE"),
        );
        // Neither.
        cs.audit.push(
            AuditRecord::new(AuditKind::AccessRequested, bob.clone(), now).subject("T1", "UBOB"),
        );
        store.commit(cs).await.unwrap();

        let got = store
            .recent_audit_events("T1/UALICE", &alice.id(), 3)
            .await
            .unwrap();
        let kinds: Vec<_> = got.iter().map(|e| e.record.kind).collect();
        assert_eq!(
            kinds,
            vec![
                AuditKind::AccessGranted,
                AuditKind::AccessApproved,
                AuditKind::AccessRequested
            ],
            "{kind}"
        );
        assert!(got.windows(2).all(|w| w[0].seq > w[1].seq), "{kind}");
        assert_eq!(
            got[2].record.details["i"], 4,
            "{kind}: the newest of the five"
        );
        let all = store
            .recent_audit_events("T1/UALICE", &alice.id(), 100)
            .await
            .unwrap();
        assert_eq!(all.len(), 7, "{kind}");
    }
}
