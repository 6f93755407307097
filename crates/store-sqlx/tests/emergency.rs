//! Break-glass records (migration 0013) on both databases: written with the change set of their
//! grant, reviewed once (compare-and-set), listed and counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_core::audit::{AuditKind, AuditRecord};
use access_core::duration::AccessDuration;
use access_core::emergency::{
    EmergencyAccess, EmergencyFilter, EmergencyReview, EmergencyWrite, ReviewOutcome,
};
use access_core::ids::{GrantId, RequestId, ResourceId};
use access_core::ports::{AuditLog, ChangeSet, RequestStore, RequestWrite, StoreError};
use access_core::request::{AccessRequest, Actor, RequestKind, RequestStatus};
use access_core::resource::Justification;
use access_core::subject::{Email, Subject};
use chrono::{DateTime, Duration, Utc};
use store_sqlx::SqlStore;
use testkit::db::backends;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_790_000_000_123_456 + secs * 1_000_000).unwrap()
}

fn request(user: &str, resource: &str, at: DateTime<Utc>) -> AccessRequest {
    AccessRequest {
        id: RequestId::new(),
        subject: Subject {
            team_id: "T1".into(),
            user_id: user.into(),
            email: Some(Email::parse(&format!("{}@example.com", user.to_lowercase())).unwrap()),
            name: format!("Person {user}"),
        },
        resource: ResourceId::parse(resource).unwrap(),
        kind: RequestKind::New,
        duration: AccessDuration::from_secs(3600).unwrap(),
        justification: Justification::parse("prod is down").unwrap(),
        status: RequestStatus::Approved,
        created_at: at,
        updated_at: at,
        pending_until: None,
        grant_id: None,
        decided_by: Some(Actor::System),
        failure: None,
        version: 0,
    }
}

fn record(r: &AccessRequest) -> EmergencyAccess {
    EmergencyAccess {
        request_id: r.id,
        grant_id: GrantId::new(),
        subject: r.subject.clone(),
        resource: r.resource.clone(),
        duration: r.duration,
        justification: r.justification.as_str().to_string(),
        granted_at: r.created_at,
        expires_at: r.created_at + Duration::hours(1),
        review: None,
    }
}

fn reviewer(u: &str) -> Actor {
    Actor::User {
        team_id: "T1".into(),
        user_id: u.into(),
        name: u.into(),
    }
}

#[tokio::test]
async fn emergency_records_are_written_reviewed_once_and_listed() {
    for db in backends().await {
        let kind = db.kind;
        let store = SqlStore::connect(&db.url).await.unwrap();
        let (a, b) = (
            request("U1", "prod-db", t(0)),
            request("U2", "prod-db", t(10)),
        );
        let rec_a = record(&a);
        for (r, rec) in [(&a, rec_a.clone()), (&b, record(&b))] {
            store
                .commit(ChangeSet {
                    requests: vec![RequestWrite::Insert(r.clone())],
                    emergency: vec![EmergencyWrite::Insert(rec)],
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let stored = store.emergency_access(a.id).await.unwrap().unwrap();
        assert_eq!(stored, rec_a, "{kind}: round trip");
        assert_eq!(
            store.emergency_access(RequestId::new()).await.unwrap(),
            None
        );
        assert_eq!(
            store.emergency_unreviewed_count().await.unwrap(),
            2,
            "{kind}"
        );

        let review = EmergencyReview {
            by: reviewer("UAPP"),
            at: t(20),
            outcome: ReviewOutcome::Revoked,
        };
        store
            .commit(ChangeSet {
                emergency: vec![EmergencyWrite::Review {
                    request_id: a.id,
                    review: review.clone(),
                }],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            store.emergency_access(a.id).await.unwrap().unwrap().review,
            Some(review),
            "{kind}"
        );
        // A second review (another approver clicking at the same time) writes nothing, and its
        // audit event is rolled back with it.
        let audit_before = store.audit_events(&Default::default()).await.unwrap().len();
        let err = store
            .commit(ChangeSet {
                emergency: vec![EmergencyWrite::Review {
                    request_id: a.id,
                    review: EmergencyReview {
                        by: reviewer("UOTHER"),
                        at: t(21),
                        outcome: ReviewOutcome::Reviewed,
                    },
                }],
                audit: vec![AuditRecord::new(
                    AuditKind::EmergencyReviewed,
                    reviewer("UOTHER"),
                    t(21),
                )],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{kind}: {err:?}");
        assert_eq!(
            store.audit_events(&Default::default()).await.unwrap().len(),
            audit_before,
            "{kind}"
        );
        let r = store.emergency_access(a.id).await.unwrap().unwrap();
        assert_eq!(
            r.review.unwrap().by,
            reviewer("UAPP"),
            "{kind}: first review kept"
        );

        let unreviewed = store
            .emergency_accesses(&EmergencyFilter {
                reviewed: Some(false),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            unreviewed.iter().map(|e| e.request_id).collect::<Vec<_>>(),
            vec![b.id],
            "{kind}"
        );
        let all = store
            .emergency_accesses(&EmergencyFilter::default())
            .await
            .unwrap();
        assert_eq!(
            all.iter().map(|e| e.request_id).collect::<Vec<_>>(),
            vec![b.id, a.id],
            "{kind}: newest first"
        );
        let reviewed = store
            .emergency_accesses(&EmergencyFilter {
                reviewed: Some(true),
                resource: Some(ResourceId::parse("prod-db").unwrap()),
                limit: Some(1),
            })
            .await
            .unwrap();
        assert_eq!(reviewed.len(), 1, "{kind}");
        assert_eq!(reviewed[0].request_id, a.id, "{kind}");
        assert!(
            store
                .emergency_accesses(&EmergencyFilter {
                    resource: Some(ResourceId::parse("other").unwrap()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.emergency_unreviewed_count().await.unwrap(),
            1,
            "{kind}"
        );
    }
}
