//! The `Store` contract, run against every backend from `testkit::db::backends()` (SQLite always,
//! PostgreSQL when `TEST_DATABASE_URL` is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use access_core::audit::{AuditKind, AuditRecord};
use access_core::duration::AccessDuration;
use access_core::grant::{Grant, GrantStatus};
use access_core::ids::{GrantId, JobId, RequestId, ResourceId};
use access_core::jobs::{JobKind, JobStatus, NewJob};
use access_core::notification::MessageRef;
use access_core::ports::{
    AuditFilter, AuditLog, ChangeSet, ClaimScope, GrantFilter, GrantWrite, JobFilter, JobQueue,
    MessageRefs, RequestFilter, RequestStore, RequestWrite, StoreError,
};
use access_core::request::{
    AccessRequest, Actor, Decision, DecisionKind, RequestKind, RequestStatus,
};
use access_core::resource::Justification;
use access_core::subject::{Email, Subject};
use chrono::{DateTime, Duration, Utc};
use store_sqlx::{DbPool, SqlStore};
use testkit::db::{TestDb, backends};

// ------------------------------------------------------------------------------------------------
// fixtures

async fn stores() -> Vec<(TestDb, SqlStore)> {
    let mut out = Vec::new();
    for db in backends().await {
        let store = SqlStore::connect(&db.url)
            .await
            .unwrap_or_else(|e| panic!("{}: connect: {e}", db.kind));
        out.push((db, store));
    }
    out
}

/// A fixed instant with a sub-second part, so microsecond precision is exercised.
fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(1_790_000_000_123_456 + secs * 1_000_000).unwrap()
}

fn subject(user: &str) -> Subject {
    Subject {
        team_id: "T1".into(),
        user_id: user.into(),
        email: Some(Email::parse(&format!("{}@example.com", user.to_lowercase())).unwrap()),
        name: format!("Person {user}"),
    }
}

fn res(name: &str) -> ResourceId {
    ResourceId::parse(name).unwrap()
}

fn request(user: &str, resource: &str, created: DateTime<Utc>) -> AccessRequest {
    AccessRequest {
        id: RequestId::new(),
        subject: subject(user),
        resource: res(resource),
        kind: RequestKind::New,
        duration: AccessDuration::from_secs(4 * 3600).unwrap(),
        justification: Justification::parse("debugging the payment service").unwrap(),
        status: RequestStatus::Pending,
        created_at: created,
        updated_at: created,
        pending_until: Some(created + Duration::hours(1)),
        grant_id: None,
        decided_by: None,
        failure: None,
        version: 0,
    }
}

fn grant_for(r: &AccessRequest, status: GrantStatus) -> Grant {
    Grant {
        id: GrantId::new(),
        subject: r.subject.clone(),
        resource: r.resource.clone(),
        status,
        provider_handle: serde_json::json!({"group": "jit-dev", "added": ["u-1"], "n": 1.5, "nested": {"ok": true}}),
        created_at: r.created_at,
        granted_at: None,
        expires_at: r.created_at + Duration::hours(4),
        ended_at: None,
        request_id: r.id,
        revoked_by: None,
        version: 0,
        provider_intent: serde_json::Value::Null,
        takeback_pending: false,
    }
}

fn audit(kind: AuditKind, r: &AccessRequest, at: DateTime<Utc>) -> AuditRecord {
    AuditRecord::new(kind, Actor::from_subject(&r.subject), at)
        .subject(&r.subject.team_id, &r.subject.user_id)
        .resource(&r.resource)
        .request(r.id)
        .details(serde_json::json!({"justification": r.justification.as_str(), "n": 1}))
}

fn insert_request(r: &AccessRequest) -> ChangeSet {
    ChangeSet {
        requests: vec![RequestWrite::Insert(r.clone())],
        ..Default::default()
    }
}

async fn raw(store: &SqlStore, sql: &str) {
    match store.pool() {
        DbPool::Sqlite(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
        DbPool::Postgres(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
    }
}

async fn count(store: &SqlStore, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    match store.pool() {
        DbPool::Sqlite(p) => sqlx::query_scalar::<_, i64>(&sql)
            .fetch_one(p)
            .await
            .unwrap(),
        DbPool::Postgres(p) => sqlx::query_scalar::<_, i64>(&sql)
            .fetch_one(p)
            .await
            .unwrap(),
    }
}

/// A database upgraded by a newer version (a migration this build does not know) still opens:
/// the previous image can be rolled back to within a release series, and an older replica that
/// restarts during a rolling upgrade comes back (docs/operations.md, "Upgrade"). sqlx's
/// migrator refuses such a database by default.
#[tokio::test]
async fn a_database_with_a_newer_migration_still_opens() {
    for (db, store) in stores().await {
        let checksum = match store.pool() {
            DbPool::Sqlite(_) => "zeroblob(48)",
            DbPool::Postgres(_) => "decode(repeat('00', 48), 'hex')",
        };
        raw(
            &store,
            &format!(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (99990001, 'from a newer version', TRUE, {checksum}, 0)"
            ),
        )
        .await;
        let r = request("U1", "dev-network", t(0));
        store.commit(insert_request(&r)).await.unwrap();
        let older = SqlStore::connect(&db.url).await.unwrap_or_else(|e| {
            panic!(
                "{}: an older version could not open the database: {e}",
                db.kind
            )
        });
        older.ready().await.unwrap();
        assert_eq!(
            older.request(r.id).await.unwrap().unwrap(),
            r,
            "{}",
            db.kind
        );
    }
}

// ------------------------------------------------------------------------------------------------
// the shared SQL text

/// The store writes `$N` placeholders for both backends. sqlx-sqlite binds them by number, not by
/// position; the store no longer relies on it (it sends SQLite anonymous `?`s in order,
/// `db::SqliteStatement`), but code reading the pool directly may.
#[tokio::test]
async fn dollar_placeholders_bind_by_number() {
    for (db, store) in stores().await {
        let (col_b, col_a): (String, String) = match store.pool() {
            DbPool::Sqlite(p) => {
                sqlx::query_as("SELECT $2 AS b, $1 AS a")
                    .bind("first")
                    .bind("second")
                    .fetch_one(p)
                    .await
            }
            DbPool::Postgres(p) => {
                sqlx::query_as("SELECT $2::text AS b, $1::text AS a")
                    .bind("first")
                    .bind("second")
                    .fetch_one(p)
                    .await
            }
        }
        .unwrap();
        assert_eq!(
            (col_a.as_str(), col_b.as_str()),
            ("first", "second"),
            "{}",
            db.kind
        );
        // Reuse of one placeholder.
        let n: i64 = match store.pool() {
            DbPool::Sqlite(p) => {
                sqlx::query_scalar("SELECT $1 + $2 + $1")
                    .bind(10i64)
                    .bind(1i64)
                    .fetch_one(p)
                    .await
            }
            DbPool::Postgres(p) => {
                sqlx::query_scalar("SELECT $1::int8 + $2::int8 + $1::int8")
                    .bind(10i64)
                    .bind(1i64)
                    .fetch_one(p)
                    .await
            }
        }
        .unwrap();
        assert_eq!(n, 21, "{}", db.kind);
    }
}

#[tokio::test]
async fn ready_and_reconnect_apply_migrations_once() {
    for (db, store) in stores().await {
        store
            .ready()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", db.kind));
        // A second connect (a restarted server) finds the migrations applied and the data kept.
        let r = request("U1", "dev-network", t(0));
        store.commit(insert_request(&r)).await.unwrap();
        let again = SqlStore::connect(&db.url).await.unwrap();
        again.ready().await.unwrap();
        assert_eq!(
            again.request(r.id).await.unwrap().unwrap(),
            r,
            "{}",
            db.kind
        );
        assert!(SqlStore::connect("mysql://x@localhost/db").await.is_err());
        assert!(SqlStore::connect("sqlite::memory:").await.is_err());
        // A database whose migration record is incomplete is not ready.
        raw(&again, "DELETE FROM _sqlx_migrations").await;
        let err = again.ready().await.unwrap_err();
        assert!(
            err.to_string().contains("migrations not applied"),
            "{}: {err}",
            db.kind
        );
    }
}

// ------------------------------------------------------------------------------------------------
// round trips

#[tokio::test]
async fn requests_grants_decisions_round_trip() {
    for (db, store) in stores().await {
        let kind = db.kind;
        // Every optional field set…
        let mut full = request("U1", "gcp-access", t(0));
        full.kind = RequestKind::Extend;
        full.grant_id = Some(GrantId::new());
        full.decided_by = Some(Actor::User {
            team_id: "T1".into(),
            user_id: "U9".into(),
            name: "Boss".into(),
        });
        full.failure = Some("provider said no: \"quota\" ünïcode".into());
        full.status = RequestStatus::Failed;
        full.version = 7;
        full.updated_at = t(5);
        // …and none.
        let mut bare = request("U2", "dev-network", t(1));
        bare.subject.email = None;
        bare.subject.team_id = String::new();
        bare.pending_until = None;

        let mut g = grant_for(&bare, GrantStatus::Active);
        g.granted_at = Some(t(2));
        g.ended_at = Some(t(3));
        g.revoked_by = Some(Actor::Admin {
            name: "alice".into(),
        });
        g.provider_intent = serde_json::json!({"email": "a@b.co", "member_before": false});
        g.takeback_pending = true;
        let g_bare = grant_for(&full, GrantStatus::Provisioning);

        let d1 = Decision {
            request_id: bare.id,
            actor: Actor::User {
                team_id: "T1".into(),
                user_id: "U7".into(),
                name: "A".into(),
            },
            kind: DecisionKind::Approve,
            at: t(4),
            comment: Some("ok".into()),
        };
        let d2 = Decision {
            actor: Actor::System,
            kind: DecisionKind::Deny,
            at: t(5),
            comment: None,
            ..d1.clone()
        };

        store
            .commit(ChangeSet {
                requests: vec![
                    RequestWrite::Insert(full.clone()),
                    RequestWrite::Insert(bare.clone()),
                ],
                grants: vec![
                    GrantWrite::Insert(g.clone()),
                    GrantWrite::Insert(g_bare.clone()),
                ],
                decisions: vec![d1.clone(), d2.clone()],
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));

        assert_eq!(
            store.request(full.id).await.unwrap().unwrap(),
            full,
            "{kind}"
        );
        assert_eq!(
            store.request(bare.id).await.unwrap().unwrap(),
            bare,
            "{kind}"
        );
        assert_eq!(store.request(RequestId::new()).await.unwrap(), None);
        assert_eq!(store.grant(g.id).await.unwrap().unwrap(), g, "{kind}");
        assert_eq!(
            store.grant(g_bare.id).await.unwrap().unwrap(),
            g_bare,
            "{kind}"
        );
        assert_eq!(
            store.decisions(bare.id).await.unwrap(),
            vec![d1, d2],
            "{kind}"
        );
        assert!(store.decisions(full.id).await.unwrap().is_empty());

        // Filters: newest first, by status, resource, subject, limit.
        let all = store.requests(&RequestFilter::default()).await.unwrap();
        assert_eq!(
            all.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![bare.id, full.id],
            "{kind}: newest first"
        );
        let failed = store
            .requests(&RequestFilter {
                status: Some(RequestStatus::Failed),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(failed, vec![full.clone()]);
        let by_res = store
            .requests(&RequestFilter {
                resource: Some(res("dev-network")),
                ..Default::default()
            })
            .await;
        assert_eq!(by_res.unwrap(), vec![bare.clone()]);
        let by_subject = store
            .requests(&RequestFilter {
                subject: Some(full.subject.key()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(by_subject, vec![full.clone()]);
        assert_eq!(
            store
                .requests(&RequestFilter {
                    limit: Some(1),
                    ..Default::default()
                })
                .await
                .unwrap()
                .len(),
            1
        );

        // Grants: live lookup and filters.
        assert_eq!(
            store
                .live_grant(&bare.subject.key(), &bare.resource)
                .await
                .unwrap(),
            Some(g.clone())
        );
        assert_eq!(
            store
                .live_grant(&bare.subject.key(), &res("gcp-access"))
                .await
                .unwrap(),
            None
        );
        let live = store
            .grants(&GrantFilter {
                live_only: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(live.len(), 2, "{kind}");
        let prov = store
            .grants(&GrantFilter {
                status: Some(GrantStatus::Provisioning),
                ..Default::default()
            })
            .await;
        assert_eq!(prov.unwrap(), vec![g_bare.clone()]);
        let by_subject = store
            .grants(&GrantFilter {
                subject: Some(bare.subject.key()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(by_subject, vec![g.clone()]);

        // requests_for_grant follows requests.grant_id.
        let gid = full.grant_id.unwrap();
        assert_eq!(
            store.requests_for_grant(gid).await.unwrap(),
            vec![full.clone()]
        );

        // Counts cover every status, zeros included.
        let rc = store.request_counts().await.unwrap();
        assert_eq!(rc.len(), RequestStatus::ALL.len());
        assert!(
            rc.contains(&(RequestStatus::Pending, 1)) && rc.contains(&(RequestStatus::Failed, 1)),
            "{rc:?}"
        );
        assert!(rc.contains(&(RequestStatus::Active, 0)));
        let gc = store.grant_counts().await.unwrap();
        assert!(
            gc.contains(&(GrantStatus::Active, 1)) && gc.contains(&(GrantStatus::Provisioning, 1)),
            "{gc:?}"
        );
    }
}

#[tokio::test]
async fn jobs_round_trip() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let r = request("U1", "dev-network", t(0));
        let jobs = vec![
            NewJob::at(JobKind::Provision { request_id: r.id }, t(10)),
            NewJob::at(
                JobKind::Expire {
                    grant_id: GrantId::new(),
                },
                t(20),
            ),
            NewJob::at(
                JobKind::Remind {
                    grant_id: GrantId::new(),
                    expires_at: t(30),
                },
                t(15),
            ),
        ];
        store
            .commit(ChangeSet {
                jobs: jobs.clone(),
                ..insert_request(&r)
            })
            .await
            .unwrap();
        let stored = store.jobs(&JobFilter::default()).await.unwrap();
        // Oldest run_at first.
        let expected_order = [&jobs[0], &jobs[2], &jobs[1]];
        assert_eq!(stored.len(), 3, "{kind}");
        for (s, j) in stored.iter().zip(expected_order) {
            assert_eq!(s.id, j.id, "{kind}");
            assert_eq!(s.kind, j.kind, "{kind}");
            assert_eq!(s.run_at, j.run_at, "{kind}");
            assert_eq!(s.status, JobStatus::Pending);
            assert_eq!(s.attempts, 0);
            assert_eq!(
                (
                    s.last_error.as_deref(),
                    s.locked_until,
                    s.claim_token.as_deref()
                ),
                (None, None, None)
            );
        }
        let by_kind = store
            .jobs(&JobFilter {
                kind: Some("expire".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            by_kind.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![jobs[1].id]
        );
        assert_eq!(store.next_job_at().await.unwrap(), Some(t(10)), "{kind}");
        let stats = store.job_stats(t(16), None).await.unwrap();
        assert_eq!(
            (
                stats.due,
                stats.pending,
                stats.running,
                stats.dead,
                stats.retrying
            ),
            (2, 3, 0, 0, 0)
        );
        assert_eq!(stats.oldest_due_secs, Some(6));
    }
}

#[tokio::test]
async fn message_refs_upsert() {
    for (db, store) in stores().await {
        let r = request("U1", "dev-network", t(0));
        store.commit(insert_request(&r)).await.unwrap();
        let m = MessageRef {
            request_id: r.id,
            purpose: "approval".into(),
            team_id: "T1".into(),
            channel: "C1".into(),
            ts: "1.1".into(),
        };
        store.save_message_ref(&m).await.unwrap();
        store
            .save_message_ref(&MessageRef {
                ts: "2.2".into(),
                ..m.clone()
            })
            .await
            .unwrap();
        store
            .save_message_ref(&MessageRef {
                purpose: "requester".into(),
                channel: "D1".into(),
                ..m.clone()
            })
            .await
            .unwrap();
        let refs = store.message_refs(r.id).await.unwrap();
        assert_eq!(refs.len(), 2, "{}", db.kind);
        assert_eq!(refs[0].ts, "2.2");
        assert_eq!(refs[1].purpose, "requester");
        assert!(
            store
                .message_refs(RequestId::new())
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn remember_once_is_true_once() {
    for (db, store) in stores().await {
        assert!(
            store.remember_once("Ev123", t(0)).await.unwrap(),
            "{}",
            db.kind
        );
        assert!(
            !store.remember_once("Ev123", t(1)).await.unwrap(),
            "{}",
            db.kind
        );
        assert!(store.remember_once("Ev124", t(1)).await.unwrap());
        // Many calls, so the periodic sweep runs; a key from two days later is still new and an
        // old key may be forgotten (allowed), but a fresh repeat is never accepted twice.
        for i in 0..300 {
            assert!(
                store
                    .remember_once(&format!("k{i}"), t(2 * 86_400))
                    .await
                    .unwrap()
            );
        }
        assert!(!store.remember_once("k5", t(2 * 86_400)).await.unwrap());
    }
}

#[tokio::test]
async fn inbox_job_is_stored_once_per_key_and_claimable_by_id() {
    use access_core::jobs::InboxItem;
    for (db, store) in stores().await {
        let kind = db.kind;
        let item = |payload: &str| InboxItem {
            source: "slack".into(),
            key: "event:Ev1".into(),
            payload: payload.into(),
        };
        let first = NewJob::at(JobKind::Inbox { item: item("{}") }, t(0));
        let first_id = first.id;
        assert!(
            store
                .enqueue_once("inbox:slack:event:Ev1", first, t(0))
                .await
                .unwrap(),
            "{kind}"
        );
        // A replay hits the key: no second job.
        let again = NewJob::at(
            JobKind::Inbox {
                item: item("{\"x\":1}"),
            },
            t(1),
        );
        assert!(
            !store
                .enqueue_once("inbox:slack:event:Ev1", again, t(1))
                .await
                .unwrap(),
            "{kind}"
        );
        let jobs = store.jobs(&Default::default()).await.unwrap();
        let inbox: Vec<_> = jobs.iter().filter(|j| j.kind.name() == "inbox").collect();
        assert_eq!(inbox.len(), 1, "{kind}");
        assert_eq!(inbox[0].kind, JobKind::Inbox { item: item("{}") }, "{kind}");
        // Claimed by id even before it is due; a second claim finds nothing.
        let lease = chrono::Duration::seconds(60);
        let claimed = store
            .claim_job(first_id, t(-10), lease)
            .await
            .unwrap()
            .expect("claimed");
        assert_eq!(claimed.status, JobStatus::Running, "{kind}");
        assert_eq!(claimed.attempts, 1, "{kind}");
        assert!(
            store
                .claim_job(first_id, t(-10), lease)
                .await
                .unwrap()
                .is_none(),
            "{kind}"
        );
        assert!(
            store.claim_jobs(t(5), 10, lease).await.unwrap().is_empty(),
            "{kind}"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// compare-and-set, duplicates, atomicity

#[tokio::test]
async fn stale_version_conflicts_and_rolls_back_everything() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let r = request("U1", "dev-network", t(0));
        store.commit(insert_request(&r)).await.unwrap();

        let approved = AccessRequest {
            status: RequestStatus::Approved,
            updated_at: t(1),
            ..r.clone()
        };
        store
            .commit(ChangeSet {
                requests: vec![RequestWrite::Update(approved.clone())],
                audit: vec![audit(AuditKind::AccessApproved, &r, t(1))],
                ..Default::default()
            })
            .await
            .unwrap();
        let now = store.request(r.id).await.unwrap().unwrap();
        assert_eq!(now.version, 1, "{kind}: the store bumps the version");
        assert_eq!(now.status, RequestStatus::Approved);

        // The same stale version again, with a grant, a decision, audit and jobs riding along.
        let stale = AccessRequest {
            status: RequestStatus::Denied,
            ..r.clone()
        };
        let g = grant_for(&r, GrantStatus::Provisioning);
        let before = (
            count(&store, "audit_events").await,
            count(&store, "jobs").await,
        );
        let err = store
            .commit(ChangeSet {
                grants: vec![GrantWrite::Insert(g.clone())],
                requests: vec![RequestWrite::Update(stale)],
                decisions: vec![Decision {
                    request_id: r.id,
                    actor: Actor::System,
                    kind: DecisionKind::Deny,
                    at: t(2),
                    comment: None,
                }],
                audit: vec![
                    audit(AuditKind::AccessDenied, &r, t(2)),
                    audit(AuditKind::AccessDenied, &r, t(3)),
                ],
                jobs: vec![NewJob::at(JobKind::Expire { grant_id: g.id }, t(100))],
                claimed: None,
                emergency: vec![access_core::emergency::EmergencyWrite::Insert(
                    access_core::emergency::EmergencyAccess {
                        request_id: r.id,
                        grant_id: g.id,
                        subject: r.subject.clone(),
                        resource: r.resource.clone(),
                        duration: r.duration,
                        justification: "outage".into(),
                        granted_at: t(2),
                        expires_at: t(100),
                        review: None,
                    },
                )],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{kind}: {err:?}");
        assert_eq!(count(&store, "emergency_grants").await, 0, "{kind}");
        assert_eq!(
            (
                count(&store, "audit_events").await,
                count(&store, "jobs").await
            ),
            before,
            "{kind}"
        );
        assert_eq!(count(&store, "decisions").await, 0);
        assert_eq!(store.grant(g.id).await.unwrap(), None);
        assert_eq!(store.request(r.id).await.unwrap().unwrap(), now);
        // A conflict anywhere in the set rolls back writes that came before it.
        let ok_first = AccessRequest {
            failure: Some("x".into()),
            ..now.clone()
        };
        let err = store
            .commit(ChangeSet {
                requests: vec![
                    RequestWrite::Update(ok_first),
                    RequestWrite::Update(approved),
                ],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{kind}: {err:?}");
        assert_eq!(store.request(r.id).await.unwrap().unwrap(), now, "{kind}");
        // The chain is unaffected by the rolled-back audit records.
        let v = store.verify_audit_chain().await.unwrap();
        assert!(v.ok && v.events_checked == 1, "{kind}: {v:?}");

        // Grants are compare-and-set too.
        let g = grant_for(&r, GrantStatus::Provisioning);
        store
            .commit(ChangeSet {
                grants: vec![GrantWrite::Insert(g.clone())],
                ..Default::default()
            })
            .await
            .unwrap();
        let active = Grant {
            status: GrantStatus::Active,
            granted_at: Some(t(3)),
            ..g.clone()
        };
        store
            .commit(ChangeSet {
                grants: vec![GrantWrite::Update(active.clone())],
                ..Default::default()
            })
            .await
            .unwrap();
        let err = store
            .commit(ChangeSet {
                grants: vec![GrantWrite::Update(active)],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{kind}: {err:?}");
        let stored = store.grant(g.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.status, stored.version, stored.granted_at),
            (GrantStatus::Active, 1, Some(t(3)))
        );
    }
}

#[tokio::test]
async fn duplicate_decision_is_refused() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let r = request("U1", "dev-network", t(0));
        store.commit(insert_request(&r)).await.unwrap();
        let d = Decision {
            request_id: r.id,
            actor: Actor::User {
                team_id: "T1".into(),
                user_id: "U5".into(),
                name: "Approver".into(),
            },
            kind: DecisionKind::Approve,
            at: t(1),
            comment: None,
        };
        store
            .commit(ChangeSet {
                decisions: vec![d.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        // Same actor (even with a changed display name and a different vote): duplicate, and the
        // audit record with it is not written.
        let again = Decision {
            actor: Actor::User {
                team_id: "T1".into(),
                user_id: "U5".into(),
                name: "Renamed".into(),
            },
            kind: DecisionKind::Deny,
            ..d.clone()
        };
        let err = store
            .commit(ChangeSet {
                decisions: vec![again],
                audit: vec![audit(AuditKind::ApprovalRecorded, &r, t(2))],
                ..Default::default()
            })
            .await
            .unwrap_err();
        // The engine tells "already voted" from other duplicates by this word.
        assert!(
            matches!(&err, StoreError::Duplicate(m) if m.contains("decision")),
            "{kind}: {err:?}"
        );
        assert_eq!(count(&store, "audit_events").await, 0, "{kind}");
        assert_eq!(store.decisions(r.id).await.unwrap(), vec![d.clone()]);
        // Another approver is fine.
        let other = Decision {
            actor: Actor::Admin { name: "bob".into() },
            ..d
        };
        store
            .commit(ChangeSet {
                decisions: vec![other],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(store.decisions(r.id).await.unwrap().len(), 2);
    }
}

#[tokio::test]
async fn one_live_grant_per_subject_and_resource() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let r1 = request("U1", "dev-network", t(0));
        let r2 = request("U1", "dev-network", t(1));
        store.commit(insert_request(&r1)).await.unwrap();
        store.commit(insert_request(&r2)).await.unwrap();
        let g1 = grant_for(&r1, GrantStatus::Active);
        store
            .commit(ChangeSet {
                grants: vec![GrantWrite::Insert(g1.clone())],
                ..Default::default()
            })
            .await
            .unwrap();

        for status in [
            GrantStatus::Provisioning,
            GrantStatus::Active,
            GrantStatus::Revoking,
        ] {
            let g2 = grant_for(&r2, status);
            let err = store
                .commit(ChangeSet {
                    grants: vec![GrantWrite::Insert(g2.clone())],
                    jobs: vec![NewJob::at(JobKind::Expire { grant_id: g2.id }, t(9))],
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert!(
                matches!(err, StoreError::Duplicate(_)),
                "{kind} {status}: {err:?}"
            );
        }
        assert_eq!(
            count(&store, "jobs").await,
            0,
            "{kind}: the job of the refused grant is rolled back"
        );

        // Another person, or another resource, is independent.
        let r3 = request("U2", "dev-network", t(2));
        let r4 = request("U1", "gcp-access", t(2));
        store.commit(insert_request(&r3)).await.unwrap();
        store.commit(insert_request(&r4)).await.unwrap();
        store
            .commit(ChangeSet {
                grants: vec![
                    GrantWrite::Insert(grant_for(&r3, GrantStatus::Active)),
                    GrantWrite::Insert(grant_for(&r4, GrantStatus::Active)),
                ],
                ..Default::default()
            })
            .await
            .unwrap();

        // A terminal grant next to the live one is fine.
        store
            .commit(ChangeSet {
                grants: vec![GrantWrite::Insert(grant_for(&r2, GrantStatus::Failed))],
                ..Default::default()
            })
            .await
            .unwrap();

        // Once the first has expired, a new live grant is allowed…
        let expired = Grant {
            status: GrantStatus::Expired,
            ended_at: Some(t(5)),
            ..g1.clone()
        };
        store
            .commit(ChangeSet {
                grants: vec![GrantWrite::Update(expired)],
                ..Default::default()
            })
            .await
            .unwrap();
        let g2 = grant_for(&r2, GrantStatus::Provisioning);
        store
            .commit(ChangeSet {
                grants: vec![GrantWrite::Insert(g2.clone())],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            store
                .live_grant(&r2.subject.key(), &r2.resource)
                .await
                .unwrap()
                .map(|g| g.id),
            Some(g2.id)
        );
        // …but bringing the old one back to life is a duplicate again.
        let mut revived = store.grant(g1.id).await.unwrap().unwrap();
        revived.status = GrantStatus::Active;
        let err = store
            .commit(ChangeSet {
                grants: vec![GrantWrite::Update(revived)],
                ..Default::default()
            })
            .await;
        assert!(
            matches!(err, Err(StoreError::Duplicate(_))),
            "{kind}: {err:?}"
        );
    }
}

// ------------------------------------------------------------------------------------------------
// concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_chain_without_gaps() {
    const TASKS: usize = 20;
    for (db, store) in stores().await {
        let kind = db.kind;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS));
        let mut handles = Vec::new();
        for i in 0..TASKS {
            let store = store.clone();
            let barrier = barrier.clone();
            handles.push(tokio::spawn(async move {
                let r = request(&format!("U{i}"), "dev-network", t(i as i64));
                let change = ChangeSet {
                    requests: vec![RequestWrite::Insert(r.clone())],
                    audit: vec![
                        audit(AuditKind::AccessRequested, &r, t(i as i64)),
                        audit(AuditKind::ApprovalRecorded, &r, t(i as i64)),
                    ],
                    jobs: vec![NewJob::at(
                        JobKind::TimeoutPending { request_id: r.id },
                        t(3600),
                    )],
                    ..Default::default()
                };
                barrier.wait().await;
                store.commit(change).await
            }));
        }
        let mut sealed = Vec::new();
        for h in handles {
            let committed = h.await.unwrap().unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(committed.audit.len(), 2);
            // One commit's records are consecutive.
            assert_eq!(committed.audit[1].seq, committed.audit[0].seq + 1, "{kind}");
            assert_eq!(
                committed.audit[1].prev_hash, committed.audit[0].hash,
                "{kind}"
            );
            sealed.extend(committed.audit);
        }
        let mut seqs: Vec<i64> = sealed.iter().map(|e| e.seq).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=(2 * TASKS) as i64).collect::<Vec<_>>(), "{kind}");

        let v = store.verify_audit_chain().await.unwrap();
        assert!(v.ok, "{kind}: {v:?}");
        assert_eq!(v.events_checked, 2 * TASKS as u64);
        let stored = store
            .audit_events(&AuditFilter {
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut sealed_sorted = sealed.clone();
        sealed_sorted.sort_by_key(|e| e.seq);
        assert_eq!(
            stored, sealed_sorted,
            "{kind}: what commit returned is what was stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_compare_and_set_has_one_winner() {
    for (db, store) in stores().await {
        let kind = db.kind;
        for round in 0..10 {
            let r = request("U1", "dev-network", t(round));
            store.commit(insert_request(&r)).await.unwrap();
            let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
            let mut handles = Vec::new();
            for status in [RequestStatus::Approved, RequestStatus::Denied] {
                let (store, barrier) = (store.clone(), barrier.clone());
                let next = AccessRequest {
                    status,
                    ..r.clone()
                };
                let rec = audit(AuditKind::AccessApproved, &r, t(round));
                handles.push(tokio::spawn(async move {
                    barrier.wait().await;
                    let res = store
                        .commit(ChangeSet {
                            requests: vec![RequestWrite::Update(next)],
                            audit: vec![rec],
                            ..Default::default()
                        })
                        .await;
                    (status, res)
                }));
            }
            let mut winners = Vec::new();
            for h in handles {
                match h.await.unwrap() {
                    (status, Ok(_)) => winners.push(status),
                    (_, Err(StoreError::Conflict(_))) => {}
                    (_, Err(e)) => panic!("{kind}: unexpected {e:?}"),
                }
            }
            assert_eq!(winners.len(), 1, "{kind} round {round}: {winners:?}");
            let stored = store.request(r.id).await.unwrap().unwrap();
            assert_eq!((stored.status, stored.version), (winners[0], 1), "{kind}");
        }
        let v = store.verify_audit_chain().await.unwrap();
        assert!(v.ok && v.events_checked == 10, "{kind}: {v:?}");
    }
}

// ------------------------------------------------------------------------------------------------
// job queue

async fn enqueue(store: &SqlStore, n: usize, run_at: DateTime<Utc>) -> Vec<JobId> {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| {
            NewJob::at(
                JobKind::Expire {
                    grant_id: GrantId::new(),
                },
                run_at + Duration::milliseconds(i as i64),
            )
        })
        .collect();
    let ids = jobs.iter().map(|j| j.id).collect();
    store
        .commit(ChangeSet {
            jobs,
            ..Default::default()
        })
        .await
        .unwrap();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_share_a_job() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let ids = enqueue(&store, 50, t(0)).await;
        // A job that is not due yet is never handed out.
        let later = enqueue(&store, 1, t(1000)).await[0];
        let now = t(10);
        let before = Utc::now();
        let mut handles = Vec::new();
        for _ in 0..4 {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let batch = store
                        .claim_jobs(now, 3, Duration::seconds(60))
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        break;
                    }
                    for j in batch {
                        assert_eq!(j.status, JobStatus::Running);
                        assert_eq!(j.attempts, 1);
                        // The lease runs on the store's clock (the database's), not `now`.
                        let until = j.locked_until.unwrap();
                        assert!(
                            until >= before + Duration::seconds(59)
                                && until <= Utc::now() + Duration::seconds(61),
                            "{until}"
                        );
                        let token = j.claim_token.clone().unwrap();
                        mine.push((j.id, token));
                    }
                    tokio::task::yield_now().await;
                }
                mine
            }));
        }
        let mut seen = HashSet::new();
        let mut per_claimer = Vec::new();
        let mut all = Vec::new();
        for h in handles {
            let mine = h.await.unwrap();
            per_claimer.push(mine.len());
            for (id, token) in mine {
                assert!(seen.insert(id), "{kind}: job {id} handed out twice");
                all.push((id, token));
            }
        }
        assert_eq!(seen.len(), 50, "{kind}: {per_claimer:?}");
        assert!(!seen.contains(&later));
        assert_eq!(seen, ids.into_iter().collect::<HashSet<_>>());
        let stats = store.job_stats(now, None).await.unwrap();
        assert_eq!(
            (stats.running, stats.pending, stats.due),
            (50, 1, 0),
            "{kind}"
        );
        for (id, token) in all {
            assert!(store.complete_job(id, &token, now).await.unwrap());
        }
        let done = store
            .jobs(&JobFilter {
                status: Some(JobStatus::Done),
                limit: Some(1000),
                ..Default::default()
            })
            .await;
        assert_eq!(done.unwrap().len(), 50);
        assert_eq!(store.next_job_at().await.unwrap(), Some(t(1000)), "{kind}");
    }
}

#[tokio::test]
async fn claims_are_oldest_first_and_limited() {
    for (db, store) in stores().await {
        let a = enqueue(&store, 1, t(5)).await[0];
        let b = enqueue(&store, 1, t(1)).await[0];
        let c = enqueue(&store, 1, t(3)).await[0];
        let got = store
            .claim_jobs(t(10), 2, Duration::seconds(30))
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![b, c],
            "{}",
            db.kind
        );
        assert_eq!(
            got[0].claim_token, got[1].claim_token,
            "one claim, one token"
        );
        let got = store
            .claim_jobs(t(10), 0, Duration::seconds(30))
            .await
            .unwrap();
        assert!(got.is_empty());
        let got = store
            .claim_jobs(t(10), 10, Duration::seconds(30))
            .await
            .unwrap();
        assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a]);
    }
}

/// A claim can be scoped by kind: the engine claims worker jobs up to its free slots and audit
/// exports (one batch) separately.
#[tokio::test]
async fn claims_can_be_scoped_by_kind() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let expire = enqueue(&store, 2, t(0)).await;
        let export = NewJob::at(
            JobKind::ExportAudit {
                event_id: access_core::ids::AuditEventId::new(),
            },
            t(0),
        );
        store
            .commit(ChangeSet {
                jobs: vec![export.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        let got = store
            .claim_jobs_in(
                t(1),
                10,
                Duration::seconds(30),
                ClaimScope::Only("export_audit"),
            )
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![export.id],
            "{kind}"
        );
        let got = store
            .claim_jobs_in(
                t(1),
                1,
                Duration::seconds(30),
                ClaimScope::AllBut(&["export_audit"]),
            )
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![expire[0]],
            "{kind}"
        );
    }
}

/// A claim picks the first `limit` by (run_at, id) across every kind of its scope and across
/// pending and lapsed jobs alike (it reads them one part at a time, issue 13): an older job of
/// another admitted kind or an older lapsed one goes first, a later one waits.
#[tokio::test]
async fn claims_take_the_oldest_across_kinds_and_lapsed_leases() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let revoke_at = |at: DateTime<Utc>| {
            NewJob::at(
                JobKind::Revoke {
                    grant_id: GrantId::new(),
                },
                at,
            )
        };
        // A job whose worker dies: claimed with a short lease, oldest of all.
        let lapsing = enqueue(&store, 1, t(0)).await[0];
        let lease = Duration::milliseconds(300);
        let first = store.claim_jobs(t(0), 10, lease).await.unwrap();
        assert_eq!(first.len(), 1, "{kind}");
        let until = first[0].locked_until.unwrap();
        let (r1, r4) = (revoke_at(t(1)), revoke_at(t(4)));
        store
            .commit(ChangeSet {
                jobs: vec![r1.clone(), r4.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        let e2 = enqueue(&store, 1, t(2)).await[0];
        let e3 = enqueue(&store, 1, t(3)).await[0];
        let revocations = ClaimScope::OneOf(&["expire", "revoke"]);
        // Kinds interleave by run_at while the first lease holds.
        let got = store
            .claim_jobs_in(t(10), 2, Duration::seconds(30), revocations)
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![r1.id, e2],
            "{kind}"
        );
        let wait = (until - Utc::now() + Duration::milliseconds(100))
            .to_std()
            .unwrap_or_default();
        tokio::time::sleep(wait).await;
        // The lapsed job (run_at 0) comes before the pending ones, the limit holds.
        let got = store
            .claim_jobs_in(t(10), 2, Duration::seconds(30), revocations)
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![lapsing, e3],
            "{kind}"
        );
        let got = store
            .claim_jobs_in(t(10), 10, Duration::seconds(30), ClaimScope::All)
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![r4.id],
            "{kind}"
        );
    }
}

#[tokio::test]
async fn lapsed_lease_is_reclaimed_and_stale_tokens_lose() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let lease = Duration::milliseconds(700);
        let id = enqueue(&store, 1, t(0)).await[0];
        let first = store.claim_jobs(t(1), 10, lease).await.unwrap();
        assert_eq!(first.len(), 1);
        let old_token = first[0].claim_token.clone().unwrap();
        let until = first[0].locked_until.unwrap();
        // While the lease holds, nobody else gets it, whatever time the claimer thinks it is
        // (leases run on the store's clock); the scheduler is told when it lapses.
        assert!(
            store
                .claim_jobs(t(10_000), 10, lease)
                .await
                .unwrap()
                .is_empty(),
            "{kind}"
        );
        assert_eq!(store.next_job_at().await.unwrap(), Some(until), "{kind}");
        // The first worker died: after the lease, the job is handed out again.
        let wait = (until - Utc::now() + Duration::milliseconds(100))
            .to_std()
            .unwrap_or_default();
        tokio::time::sleep(wait).await;
        let second = store.claim_jobs(t(2), 10, lease).await.unwrap();
        assert_eq!(second.len(), 1, "{kind}");
        assert_eq!(second[0].id, id);
        assert_eq!(second[0].attempts, 2);
        let new_token = second[0].claim_token.clone().unwrap();
        assert_ne!(new_token, old_token);

        // The old worker comes back: every outcome with its token is refused, and its
        // heartbeat renews nothing.
        assert_eq!(
            store.renew_lease(&old_token, lease).await.unwrap(),
            0,
            "{kind}"
        );
        assert!(
            !store.complete_job(id, &old_token, t(33)).await.unwrap(),
            "{kind}"
        );
        assert!(
            !store
                .retry_job(id, &old_token, "late", t(40))
                .await
                .unwrap(),
            "{kind}"
        );
        assert!(
            !store.bury_job(id, &old_token, "late").await.unwrap(),
            "{kind}"
        );
        let j = store.jobs(&JobFilter::default()).await.unwrap().remove(0);
        assert_eq!(
            (j.status, j.claim_token.as_deref()),
            (JobStatus::Running, Some(new_token.as_str()))
        );

        assert!(store.complete_job(id, &new_token, t(34)).await.unwrap());
        // Completing twice is a no-op that says so.
        assert!(!store.complete_job(id, &new_token, t(35)).await.unwrap());
        let j = store.jobs(&JobFilter::default()).await.unwrap().remove(0);
        assert_eq!(j.status, JobStatus::Done);
        assert!(
            store
                .claim_jobs(t(10_000), 10, Duration::seconds(30))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.next_job_at().await.unwrap(), None);
    }
}

/// A worker that keeps renewing its lease keeps its jobs past the first lease; only its own
/// claim token renews, a lapsed lease is not revived, and once it stops the jobs are taken.
#[tokio::test]
async fn renewed_leases_hold_and_only_the_claim_token_renews() {
    for (db, store) in stores().await {
        let kind = db.kind;
        // Long enough that a loaded machine (a build beside the tests) stalling the loop for
        // most of a second does not let it lapse: with 600 ms it failed once that way.
        let lease = Duration::milliseconds(1_200);
        let ids = enqueue(&store, 3, t(0)).await;
        let mine = store.claim_jobs(t(1), 2, lease).await.unwrap();
        assert_eq!(mine.len(), 2, "{kind}");
        let token = mine[0].claim_token.clone().unwrap();
        // Done jobs are not renewed (nor revived).
        assert!(store.complete_job(mine[1].id, &token, t(1)).await.unwrap());
        assert_eq!(store.renew_lease("not-a-token", lease).await.unwrap(), 0);
        // Two and a half leases long, renewed every quarter of one: never claimable by another
        // worker.
        for _ in 0..10 {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            assert_eq!(store.renew_lease(&token, lease).await.unwrap(), 1, "{kind}");
            let other = store.claim_jobs(t(2), 10, lease).await.unwrap();
            assert!(
                other.iter().all(|j| j.id != mine[0].id),
                "{kind}: a renewed job was handed to another worker"
            );
            for j in other {
                assert_eq!(j.id, ids[2]);
                let tok = j.claim_token.unwrap();
                assert!(store.complete_job(j.id, &tok, t(2)).await.unwrap());
            }
        }
        let until = store
            .jobs(&JobFilter {
                status: Some(JobStatus::Running),
                ..Default::default()
            })
            .await
            .unwrap()[0]
            .locked_until
            .unwrap();
        assert!(until > Utc::now(), "{kind}");
        // The worker stops renewing: after the lease the job is taken, and the old claim
        // cannot renew what lapsed.
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
        assert_eq!(store.renew_lease(&token, lease).await.unwrap(), 0, "{kind}");
        let taken = store.claim_jobs(t(3), 10, lease).await.unwrap();
        assert_eq!(
            taken.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![mine[0].id],
            "{kind}"
        );
    }
}

/// Notifications of one request are claimed one at a time in enqueue order: while the first
/// is running or waiting for a retry, the second is not handed out; another request's are.
#[tokio::test]
async fn jobs_of_one_order_key_are_claimed_in_enqueue_order() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let r = request("U1", "dev-network", t(0));
        let other = request("U2", "dev-network", t(0));
        let note = |req: &access_core::request::AccessRequest| JobKind::Notify {
            notification: Box::new(access_core::notification::Notification::RequestTimedOut {
                request: access_core::notification::RequestSummary::of(req, "VPN"),
            }),
        };
        let first = NewJob::at(note(&r), t(0));
        // Due earlier than the first, but enqueued after it.
        let second = NewJob::at(note(&r), t(-5));
        let third = NewJob::at(note(&other), t(0));
        store
            .commit(ChangeSet {
                jobs: vec![first.clone(), second.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        store
            .commit(ChangeSet {
                jobs: vec![third.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        let got = store
            .claim_jobs(t(1), 10, Duration::seconds(30))
            .await
            .unwrap();
        let mut ids: Vec<_> = got.iter().map(|j| j.id).collect();
        ids.sort();
        let mut want = vec![first.id, third.id];
        want.sort();
        assert_eq!(ids, want, "{kind}: the second waits for the first");
        // The first fails and waits for its retry: the second still waits.
        let f = got.iter().find(|j| j.id == first.id).unwrap();
        let tok = f.claim_token.clone().unwrap();
        assert!(
            store
                .retry_job(first.id, &tok, "slack 503", t(60))
                .await
                .unwrap()
        );
        assert!(
            store
                .claim_jobs(t(30), 10, Duration::seconds(30))
                .await
                .unwrap()
                .is_empty(),
            "{kind}"
        );
        let f = store
            .claim_jobs(t(61), 10, Duration::seconds(30))
            .await
            .unwrap();
        assert_eq!(f.iter().map(|j| j.id).collect::<Vec<_>>(), vec![first.id]);
        let tok = f[0].claim_token.clone().unwrap();
        assert!(store.complete_job(first.id, &tok, t(61)).await.unwrap());
        let s = store
            .claim_jobs(t(62), 10, Duration::seconds(30))
            .await
            .unwrap();
        assert_eq!(
            s.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![second.id],
            "{kind}"
        );
    }
}

#[tokio::test]
async fn retry_then_bury_leaves_a_visible_dead_job() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let id = enqueue(&store, 1, t(0)).await[0];
        let j = store
            .claim_jobs(t(1), 1, Duration::seconds(30))
            .await
            .unwrap()
            .remove(0);
        assert!(
            store
                .retry_job(
                    id,
                    j.claim_token.as_deref().unwrap(),
                    "provider timed out",
                    t(60)
                )
                .await
                .unwrap()
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
                pending[0].last_error.as_deref(),
                pending[0].claim_token.as_deref()
            ),
            (t(60), Some("provider timed out"), None)
        );
        let stats = store.job_stats(t(2), None).await.unwrap();
        assert_eq!(
            (
                stats.retrying,
                stats.due,
                stats.pending,
                stats.oldest_due_secs
            ),
            (1, 0, 1, None),
            "{kind}"
        );
        let stats = store.job_stats(t(90), None).await.unwrap();
        assert_eq!((stats.due, stats.oldest_due_secs), (1, Some(30)), "{kind}");
        assert!(
            store
                .claim_jobs(t(59), 1, Duration::seconds(30))
                .await
                .unwrap()
                .is_empty(),
            "not due before run_at"
        );

        let j = store
            .claim_jobs(t(61), 1, Duration::seconds(30))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(j.attempts, 2);
        assert!(
            store
                .bury_job(id, j.claim_token.as_deref().unwrap(), "permission denied")
                .await
                .unwrap()
        );
        let dead = store
            .jobs(&JobFilter {
                status: Some(JobStatus::Dead),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(dead.len(), 1, "{kind}");
        assert_eq!(
            (dead[0].id, dead[0].last_error.as_deref(), dead[0].attempts),
            (id, Some("permission denied"), 2)
        );
        let stats = store.job_stats(t(100), None).await.unwrap();
        assert_eq!(
            (stats.dead, stats.pending, stats.running, stats.retrying),
            (1, 0, 0, 0),
            "{kind}"
        );
        // Dead jobs are never claimed again.
        assert!(
            store
                .claim_jobs(t(100_000), 10, Duration::seconds(30))
                .await
                .unwrap()
                .is_empty()
        );
    }
}

/// A claim of every kind but a few (the scheduler's work lane) reads the stored kinds one by one
/// and the ranges between their names: a kind a newer version wrote, wherever its name sorts, is
/// still claimed (and set aside, since this version cannot read it), and the excluded kinds are
/// not. One unknown kind in every range, including names that differ from a stored one only
/// after it (`deliver_webhooka`) or in an underscore (`export_audia`, `timeout_pendinh`).
#[tokio::test]
async fn a_claim_of_all_but_a_few_kinds_still_reaches_every_unknown_kind() {
    let unknown = [
        "aaa",
        "deliver_webhooka",
        "eb",
        "expiq",
        "expirf",
        "export_audia",
        "export_auditz",
        "inboy",
        "notifz",
        "provisioo",
        "remine",
        "revoka",
        "timeout_pendinh",
        "zzz",
    ];
    for (db, store) in stores().await {
        let kind = db.kind;
        if kind == "postgres" {
            // The ranges hold only if PostgreSQL orders kind names byte by byte, as Rust does,
            // whatever collation the database was created with (migration 0019).
            let p = match store.pool() {
                DbPool::Postgres(p) => p,
                DbPool::Sqlite(_) => unreachable!(),
            };
            let collation: Option<String> = sqlx::query_scalar(
                // This test's own schema: other tests' schemas in the same database may be in
                // the middle of their migrations, before 0019.
                "SELECT collation_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = 'jobs' \
                 AND column_name = 'kind'",
            )
            .fetch_one(p)
            .await
            .unwrap();
            assert_eq!(collation.as_deref(), Some("C"));
        }
        for (i, name) in unknown.iter().chain(["export_audit"].iter()).enumerate() {
            raw(
                &store,
                &format!(
                    "INSERT INTO jobs (id, kind, payload, status, run_at, attempts, created_at, updated_at) \
                     VALUES ('{}', '{name}', '{{\"type\":\"{name}\"}}', 'pending', {i}, 0, 0, 0)",
                    JobId::new()
                ),
            )
            .await;
        }
        let good = enqueue(&store, 1, t(0)).await[0];
        let got = store
            .claim_jobs_in(
                t(0),
                50,
                Duration::seconds(30),
                ClaimScope::AllBut(&["export_audit"]),
            )
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![good],
            "{kind}"
        );
        let listed = store.jobs(&JobFilter::default()).await.unwrap();
        let mut set_aside: Vec<String> = listed
            .iter()
            .filter_map(|j| match &j.kind {
                JobKind::Undecodable { kind, .. } if j.status == JobStatus::Dead => {
                    Some(kind.clone())
                }
                _ => None,
            })
            .collect();
        set_aside.sort();
        assert_eq!(set_aside, unknown.to_vec(), "{kind}");
        let exports = store
            .jobs(&JobFilter {
                kind: Some("export_audit".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            exports.iter().map(|j| j.status).collect::<Vec<_>>(),
            vec![JobStatus::Pending],
            "{kind}: the excluded kind is left alone"
        );
    }
}

/// A row this version cannot read (a newer version's job kind during a rolling deploy) is set
/// aside, dead with the reason, and does not stop the others (a revocation here) from being
/// claimed; the job listing still shows it.
#[tokio::test]
async fn undecodable_job_is_set_aside_and_the_rest_claimed() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let bad = JobId::new();
        raw(
            &store,
            &format!(
                "INSERT INTO jobs (id, kind, payload, status, run_at, attempts, created_at, updated_at) \
                 VALUES ('{bad}', 'future', '{{\"type\":\"from_the_future\"}}', 'pending', 0, 0, 0, 0)"
            ),
        )
        .await;
        let good = enqueue(&store, 1, t(0)).await[0];
        let got = store
            .claim_jobs(t(0), 10, Duration::seconds(30))
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![good],
            "{kind}"
        );
        let listed = store.jobs(&JobFilter::default()).await.unwrap();
        let dead = listed.iter().find(|j| j.id == bad).unwrap();
        assert_eq!(dead.status, JobStatus::Dead, "{kind}");
        assert!(
            matches!(&dead.kind, JobKind::Undecodable { kind, .. } if kind == "future"),
            "{kind}: {:?}",
            dead.kind
        );
        let err = dead.last_error.as_deref().unwrap();
        assert!(
            err.contains("undecodable job of kind 'future'") && err.contains("from_the_future"),
            "{kind}: {err}"
        );
        // The listing serialises it for the admin API.
        let v = serde_json::to_value(dead).unwrap();
        assert_eq!(v["kind"]["type"], "undecodable", "{kind}");
        let stats = store.job_stats(t(0), None).await.unwrap();
        assert_eq!((stats.dead, stats.running), (1, 1), "{kind}");
        // Set aside for good: never claimed again.
        assert!(
            store
                .claim_jobs(t(100_000), 10, Duration::seconds(30))
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn unreadable_request_is_corrupt() {
    for (db, store) in stores().await {
        let r = request("U1", "dev-network", t(0));
        store.commit(insert_request(&r)).await.unwrap();
        raw(
            &store,
            &format!("UPDATE requests SET status = 'bogus' WHERE id = '{}'", r.id),
        )
        .await;
        let err = store.request(r.id).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { what, .. } if what.contains("status")),
            "{}: {err:?}",
            db.kind
        );
    }
}

// ------------------------------------------------------------------------------------------------
// audit

async fn chain_of(store: &SqlStore, n: usize) -> Vec<access_core::audit::AuditEvent> {
    let r = request("U1", "dev-network", t(0));
    let records = (0..n)
        .map(|i| {
            audit(AuditKind::ProviderEvent, &r, t(i as i64)).details(serde_json::json!({"i": i}))
        })
        .collect();
    store
        .commit(ChangeSet {
            audit: records,
            ..insert_request(&r)
        })
        .await
        .unwrap()
        .audit
}

#[tokio::test]
async fn tampering_is_named_by_seq() {
    // Each case on a fresh database.
    for case in [
        "edit row 3",
        "delete row 2",
        "delete the newest row",
        "delete the head",
    ] {
        for (db, store) in stores().await {
            let kind = db.kind;
            let events = chain_of(&store, 5).await;
            assert_eq!(
                events.iter().map(|e| e.seq).collect::<Vec<_>>(),
                vec![1, 2, 3, 4, 5]
            );
            let ok = store.verify_audit_chain().await.unwrap();
            assert!(ok.ok && ok.events_checked == 5, "{kind}: {ok:?}");
            let (seq, reason) = match case {
                "edit row 3" => {
                    raw(
                        &store,
                        "UPDATE audit_events SET details = '{\"i\":99}' WHERE seq = 3",
                    )
                    .await;
                    (3, "edited")
                }
                "delete row 2" => {
                    raw(&store, "DELETE FROM audit_events WHERE seq = 2").await;
                    (2, "missing")
                }
                "delete the newest row" => {
                    raw(&store, "DELETE FROM audit_events WHERE seq = 5").await;
                    (5, "newest rows")
                }
                _ => {
                    raw(&store, "DELETE FROM audit_head").await;
                    (0, "head")
                }
            };
            let v = store.verify_audit_chain().await.unwrap();
            assert!(!v.ok, "{kind} {case}: {v:?}");
            let bad = v.first_bad.unwrap();
            assert_eq!(bad.seq, seq, "{kind} {case}: {bad:?}");
            assert!(bad.reason.contains(reason), "{kind} {case}: {bad:?}");
        }
    }
}

#[tokio::test]
async fn audit_queries_filter_and_page() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let a = request("U1", "dev-network", t(0));
        let b = request("U2", "gcp-access", t(0));
        store.commit(insert_request(&a)).await.unwrap();
        store.commit(insert_request(&b)).await.unwrap();
        let recs = vec![
            audit(AuditKind::AccessRequested, &a, t(1)),
            audit(AuditKind::AccessRequested, &b, t(2)),
            audit(AuditKind::AccessApproved, &a, t(3)).grant(GrantId::new()),
            AuditRecord::new(AuditKind::DriftRepaired, Actor::System, t(4)),
        ];
        let sealed = store
            .commit(ChangeSet {
                audit: recs,
                ..Default::default()
            })
            .await
            .unwrap()
            .audit;
        let seqs = |v: Vec<access_core::audit::AuditEvent>| {
            v.into_iter().map(|e| e.seq).collect::<Vec<_>>()
        };
        let q = |f: AuditFilter| {
            let store = store.clone();
            async move { store.audit_events(&f).await.unwrap() }
        };
        assert_eq!(q(AuditFilter::default()).await, sealed, "{kind}");
        assert_eq!(
            seqs(
                q(AuditFilter {
                    after_seq: Some(2),
                    ..Default::default()
                })
                .await
            ),
            vec![3, 4]
        );
        assert_eq!(
            seqs(
                q(AuditFilter {
                    since: Some(t(2)),
                    ..Default::default()
                })
                .await
            ),
            vec![2, 3, 4]
        );
        assert_eq!(
            seqs(
                q(AuditFilter {
                    until: Some(t(2)),
                    ..Default::default()
                })
                .await
            ),
            vec![1]
        );
        assert_eq!(
            seqs(
                q(AuditFilter {
                    kind: Some(AuditKind::AccessRequested),
                    ..Default::default()
                })
                .await
            ),
            vec![1, 2]
        );
        assert_eq!(
            seqs(
                q(AuditFilter {
                    resource: Some(res("gcp-access")),
                    ..Default::default()
                })
                .await
            ),
            vec![2]
        );
        assert_eq!(
            seqs(
                q(AuditFilter {
                    subject: Some("T1/U1".into()),
                    ..Default::default()
                })
                .await
            ),
            vec![1, 3]
        );
        assert_eq!(
            seqs(
                q(AuditFilter {
                    request_id: Some(a.id),
                    ..Default::default()
                })
                .await
            ),
            vec![1, 3]
        );
        assert_eq!(
            seqs(
                q(AuditFilter {
                    limit: Some(2),
                    after_seq: Some(1),
                    ..Default::default()
                })
                .await
            ),
            vec![2, 3]
        );
        let combined = AuditFilter {
            kind: Some(AuditKind::AccessRequested),
            subject: Some("T1/U2".into()),
            since: Some(t(0)),
            until: Some(t(10)),
            ..Default::default()
        };
        assert_eq!(seqs(q(combined).await), vec![2]);
        let one = store.audit_event(sealed[2].record.id).await.unwrap();
        assert_eq!(one.as_ref(), Some(&sealed[2]), "{kind}");
        assert_eq!(
            store
                .audit_event(access_core::ids::AuditEventId::new())
                .await
                .unwrap(),
            None
        );
    }
}

/// More than one verification page, and the limit's default and cap.
#[tokio::test]
async fn long_chains_verify_across_pages() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let events = chain_of(&store, 1500).await;
        assert_eq!(events.last().unwrap().seq, 1500);
        chain_of(&store, 10).await;
        let v = store.verify_audit_chain().await.unwrap();
        assert!(v.ok, "{kind}: {v:?}");
        assert_eq!(v.events_checked, 1510);
        assert_eq!(
            store
                .audit_events(&AuditFilter::default())
                .await
                .unwrap()
                .len(),
            100,
            "{kind}"
        );
        let capped = store
            .audit_events(&AuditFilter {
                limit: Some(5000),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(capped.len(), 1000, "{kind}");
        // A break on the second page is still found.
        raw(
            &store,
            "UPDATE audit_events SET actor_id = 'x', details = '{}' WHERE seq = 1234",
        )
        .await;
        let v = store.verify_audit_chain().await.unwrap();
        assert_eq!(v.first_bad.map(|b| b.seq), Some(1234), "{kind}");
        assert_eq!(v.events_checked, 1234);
    }
}

/// The PostgreSQL test database is selected by `options=-c search_path=…` in the URL: check that
/// the store really works inside the per-test schema (and so that the PostgreSQL run is real).
#[tokio::test]
async fn postgres_runs_in_its_own_schema() {
    let dbs = stores().await;
    let want_pg = std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.trim().is_empty());
    assert_eq!(dbs.iter().any(|(db, _)| db.kind == "postgres"), want_pg);
    for (db, store) in &dbs {
        match store.pool() {
            DbPool::Postgres(p) => {
                assert_eq!(db.kind, "postgres");
                assert_eq!(store.backend(), store_sqlx::Backend::Postgres);
                let schema: String = sqlx::query_scalar("SELECT current_schema()")
                    .fetch_one(p)
                    .await
                    .unwrap();
                assert!(schema.starts_with("gh_test_"), "{schema}");
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'audit_head'",
                )
                .bind(&schema)
                .fetch_one(p)
                .await
                .unwrap();
                assert_eq!(n, 1);
            }
            DbPool::Sqlite(_) => {
                assert_eq!(db.kind, "sqlite");
                assert_eq!(store.backend(), store_sqlx::Backend::Sqlite);
                let mode: String = match store.pool() {
                    DbPool::Sqlite(p) => sqlx::query_scalar("PRAGMA journal_mode")
                        .fetch_one(p)
                        .await
                        .unwrap(),
                    DbPool::Postgres(_) => unreachable!(),
                };
                assert_eq!(mode, "wal");
                let fk: i64 = match store.pool() {
                    DbPool::Sqlite(p) => sqlx::query_scalar("PRAGMA foreign_keys")
                        .fetch_one(p)
                        .await
                        .unwrap(),
                    DbPool::Postgres(_) => unreachable!(),
                };
                assert_eq!(fk, 1);
            }
        }
    }
}

/// Two stores on one database, as the server and the cleanup binary share a SQLite file (or two
/// replicas share PostgreSQL): the in-process writer lock does not cover the other instance, so
/// `BEGIN IMMEDIATE` and the busy timeout (or PostgreSQL's row locks) must keep the chain whole
/// and the job claims exclusive.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_database() {
    for (db, first) in stores().await {
        let kind = db.kind;
        let second = SqlStore::connect(&db.url).await.unwrap();
        enqueue(&first, 40, t(0)).await;
        let mut handles = Vec::new();
        for (n, store) in [first.clone(), second.clone()].into_iter().enumerate() {
            for task in 0..5 {
                let store = store.clone();
                handles.push(tokio::spawn(async move {
                    let mut claimed = Vec::new();
                    for i in 0..4 {
                        let r = request(&format!("U{n}{task}{i}"), "dev-network", t(i));
                        let rec = audit(AuditKind::AccessRequested, &r, t(i));
                        // An audit-only change set reads the chain head before it writes:
                        // the read-to-write upgrade that BEGIN IMMEDIATE exists for.
                        store.commit(insert_request(&r)).await.unwrap();
                        let audit_only = ChangeSet {
                            audit: vec![rec],
                            ..Default::default()
                        };
                        store.commit(audit_only).await.unwrap();
                        let jobs = store
                            .claim_jobs(t(100), 2, Duration::seconds(60))
                            .await
                            .unwrap();
                        claimed.extend(jobs.into_iter().map(|j| j.id));
                    }
                    claimed
                }));
            }
        }
        let mut seen = HashSet::new();
        for h in handles {
            for id in h.await.unwrap() {
                assert!(seen.insert(id), "{kind}: job {id} claimed by two instances");
            }
        }
        assert_eq!(seen.len(), 40, "{kind}");
        let v = second.verify_audit_chain().await.unwrap();
        assert!(v.ok && v.events_checked == 40, "{kind}: {v:?}");
        second.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_stats_per_kind_and_pending_age() {
    for (db, store) in stores().await {
        let kind = db.kind;
        // Three expire jobs due later, one export job due now.
        enqueue(&store, 3, Utc::now() + Duration::hours(1)).await;
        store
            .commit(ChangeSet {
                jobs: vec![NewJob::at(
                    JobKind::ExportAudit {
                        event_id: access_core::AuditEventId::new(),
                    },
                    Utc::now(),
                )],
                ..Default::default()
            })
            .await
            .unwrap();
        let later = Utc::now() + Duration::seconds(120);
        let all = store.job_stats(later, None).await.unwrap();
        assert_eq!((all.pending, all.due), (4, 1), "{kind}");
        let export = store.job_stats(later, Some("export_audit")).await.unwrap();
        assert_eq!((export.pending, export.due), (1, 1), "{kind}");
        let expire = store.job_stats(later, Some("expire")).await.unwrap();
        assert_eq!(
            (expire.pending, expire.due, expire.oldest_due_secs),
            (3, 0, None),
            "{kind}"
        );
        // Not due, yet waiting since they were enqueued about two minutes before `later`.
        let age = expire.oldest_pending_secs.unwrap();
        assert!((118..=125).contains(&age), "{kind}: {age}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_completion_respects_claims() {
    for (db, store) in stores().await {
        let kind = db.kind;
        enqueue(&store, 600, t(0)).await;
        let claimed = store
            .claim_jobs(t(1), 600, Duration::seconds(30))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 600, "{kind}");
        let mut batch: Vec<(JobId, String)> = claimed
            .iter()
            .map(|j| (j.id, j.claim_token.clone().unwrap()))
            .collect();
        // One job's claim is stale: it must not be completed by the batch.
        batch[7].1 = "stale-token".into();
        let done = store.complete_jobs(&batch, t(2)).await.unwrap();
        assert_eq!(
            done, 599,
            "{kind}: more than one statement's worth (500), all but the stale one"
        );
        let still = store
            .jobs(&JobFilter {
                status: Some(JobStatus::Running),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(still.len(), 1, "{kind}");
        assert_eq!(still[0].id, batch[7].0);
        assert_eq!(store.complete_jobs(&[], t(2)).await.unwrap(), 0);
    }
}

/// The retention purge deletes finished jobs older than its cut-off, at most `limit` a call,
/// and nothing else: not a recent one, not a dead, pending or running one, not a kind this
/// version does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_deletes_only_old_finished_jobs() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let insert = |id: &str, job_kind: &str, status: &str, at: DateTime<Utc>| {
            format!(
                "INSERT INTO jobs (id, kind, payload, status, run_at, attempts, created_at, updated_at) \
                 VALUES ('{id}', '{job_kind}', '{{}}', '{status}', {0}, 1, {0}, {0})",
                at.timestamp_micros()
            )
        };
        for i in 0..3 {
            raw(
                &store,
                &insert(&format!("old-{i}"), "expire", "done", t(10 + i)),
            )
            .await;
        }
        let mut keep = vec![
            ("recent", "notify", "done", t(1_000)),
            ("dead", "expire", "dead", t(10)),
            ("pending", "expire", "pending", t(10)),
            ("running", "expire", "running", t(10)),
            ("newer-version", "from_the_future", "done", t(10)),
        ];
        for (id, job_kind, status, at) in &keep {
            raw(&store, &insert(id, job_kind, status, *at)).await;
        }
        assert_eq!(store.purge_done_jobs(t(500), 2).await.unwrap(), 2, "{kind}");
        assert_eq!(
            store.purge_done_jobs(t(500), 10).await.unwrap(),
            1,
            "{kind}"
        );
        assert_eq!(
            store.purge_done_jobs(t(500), 10).await.unwrap(),
            0,
            "{kind}"
        );
        assert_eq!(store.purge_done_jobs(t(500), 0).await.unwrap(), 0, "{kind}");
        let sql = "SELECT id FROM jobs ORDER BY id";
        let left: Vec<String> = match store.pool() {
            DbPool::Sqlite(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
            DbPool::Postgres(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
        };
        keep.sort_by_key(|k| k.0);
        assert_eq!(
            left,
            keep.iter().map(|k| k.0.to_string()).collect::<Vec<_>>(),
            "{kind}"
        );
    }
}
