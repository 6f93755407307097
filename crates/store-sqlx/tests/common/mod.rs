//! Fixtures shared by the statement-count suites (`round_trips.rs`, `group_commit.rs`): a store
//! on every backend, a pending request as `submit` makes it, and its `access_requested` event.

use access_core::audit::{AuditKind, AuditRecord};
use access_core::duration::AccessDuration;
use access_core::ids::{RequestId, ResourceId};
use access_core::request::{AccessRequest, Actor, RequestKind, RequestStatus};
use access_core::resource::Justification;
use access_core::subject::{Email, Subject};
use chrono::Utc;
use store_sqlx::SqlStore;
use testkit::db::{TestDb, backends};

pub async fn stores() -> Vec<(TestDb, SqlStore)> {
    let mut out = Vec::new();
    for db in backends().await {
        let store = SqlStore::connect(&db.url).await.unwrap();
        out.push((db, store));
    }
    out
}

pub fn request(user: &str) -> AccessRequest {
    let now = access_core::audit::truncate_to_micros(Utc::now());
    AccessRequest {
        id: RequestId::new(),
        subject: Subject {
            team_id: "T1".into(),
            user_id: user.into(),
            email: Some(Email::parse(&format!("{}@example.com", user.to_lowercase())).unwrap()),
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
    }
}

pub fn audit(r: &AccessRequest) -> AuditRecord {
    AuditRecord::new(
        AuditKind::AccessRequested,
        Actor::from_subject(&r.subject),
        r.created_at,
    )
    .subject(&r.subject.team_id, &r.subject.user_id)
    .resource(&r.resource)
    .request(r.id)
}
