//! The round-trip cuts of the store (docs/performance.md, "Statements per operation"), on every
//! backend: statement and commit counts per call, and that each cut keeps its contract (the
//! audit chain when another store moved the head, inbox replays, claims written at insert,
//! batched completion with message refs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_core::ids::JobId;
use access_core::jobs::{InboxItem, JobKind, JobStatus, NewJob};
use access_core::notification::MessageRef;
use access_core::ports::{
    AuditLog, ChangeSet, ClaimAtInsert, JobFilter, JobQueue, MessageRefs, RequestStore,
    RequestWrite,
};
use access_core::request::AccessRequest;
use chrono::{Duration, Utc};
use store_sqlx::{SqlStore, StoreStats};

mod common;
use common::{audit, request, stores};

/// A request with two audit records and three jobs, as `submit` writes.
fn submit_like(user: &str) -> (AccessRequest, ChangeSet) {
    let r = request(user);
    let jobs = (0..3)
        .map(|i| {
            NewJob::at(
                JobKind::TimeoutPending { request_id: r.id },
                r.created_at + Duration::hours(i),
            )
        })
        .collect();
    let cs = ChangeSet {
        requests: vec![RequestWrite::Insert(r.clone())],
        audit: vec![audit(&r), audit(&r)],
        jobs,
        ..Default::default()
    };
    (r, cs)
}

fn cost(store: &SqlStore, before: StoreStats) -> StoreStats {
    store.stats() - before
}

#[tokio::test]
async fn a_change_set_is_four_statements_and_a_moved_head_one_more() {
    for (db, store) in stores().await {
        let kind = db.kind;
        // First commit of this store: it does not know the head yet and reads it.
        let (_, cs) = submit_like("U1");
        let before = store.stats();
        store.commit(cs).await.unwrap();
        assert_eq!(
            cost(&store, before),
            StoreStats {
                statements: 5,
                commits: 1
            },
            "{kind}: request, head read, head update, audit insert, jobs insert"
        );
        // Warm: the head it committed is the head; no read.
        let (_, cs) = submit_like("U2");
        let before = store.stats();
        store.commit(cs).await.unwrap();
        assert_eq!(
            cost(&store, before),
            StoreStats {
                statements: 4,
                commits: 1
            },
            "{kind}: request, head update, one audit insert, one jobs insert"
        );
        // Another store (another replica, the cleanup binary) moves the head: the hint is stale,
        // the conditional update matches nothing, the head is read and the records sealed again.
        let other = SqlStore::connect(&db.url).await.unwrap();
        let (_, cs) = submit_like("U3");
        other.commit(cs).await.unwrap();
        let (_, cs) = submit_like("U4");
        let before = store.stats();
        let committed = store.commit(cs).await.unwrap();
        assert_eq!(
            cost(&store, before),
            StoreStats {
                statements: 6,
                commits: 1
            },
            "{kind}: a missed update, the head read, the update again"
        );
        assert_eq!(
            committed.audit[0].seq, 7,
            "{kind}: sealed after the other store's"
        );
        let v = store.verify_audit_chain().await.unwrap();
        assert!(v.ok && v.events_checked == 8, "{kind}: {v:?}");
        let jobs = store.jobs(&JobFilter::default()).await.unwrap();
        assert_eq!(jobs.len(), 12, "{kind}");
        other.close().await;
    }
}

fn inbox(key: &str) -> NewJob {
    let mut job = NewJob::at(
        JobKind::Inbox {
            item: InboxItem {
                source: "slack".into(),
                key: key.into(),
                payload: "{}".into(),
            },
        },
        Utc::now() + Duration::seconds(3),
    );
    job.id = JobId::for_key(key);
    job
}

#[tokio::test]
async fn inbox_items_are_stored_claimed_once_per_key_in_one_statement() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let lease = Duration::seconds(60);
        let before = store.stats();
        let job = store
            .enqueue_claimed_once("inbox:slack:a", inbox("inbox:slack:a"), Utc::now(), lease)
            .await
            .unwrap()
            .expect("stored");
        assert_eq!(
            cost(&store, before),
            StoreStats {
                statements: 1,
                commits: 1
            },
            "{kind}"
        );
        // Stored claimed: running under the returned token, not claimable by anyone else.
        let stored = store.jobs(&JobFilter::default()).await.unwrap();
        assert_eq!(stored.len(), 1, "{kind}");
        assert_eq!(stored[0].status, JobStatus::Running, "{kind}");
        assert_eq!(stored[0].attempts, 1, "{kind}");
        assert_eq!(stored[0].claim_token, job.claim_token, "{kind}");
        let far = Utc::now() + Duration::hours(1);
        assert!(store.claim_jobs(far, 10, lease).await.unwrap().is_empty());
        assert!(
            store
                .claim_job(job.id, Utc::now(), lease)
                .await
                .unwrap()
                .is_none()
        );
        // A replay is recognised, and so is a key stored by `enqueue_once` (the previous path).
        assert!(
            store
                .enqueue_claimed_once("inbox:slack:a", inbox("inbox:slack:a"), Utc::now(), lease)
                .await
                .unwrap()
                .is_none(),
            "{kind}"
        );
        assert!(
            store
                .enqueue_once("inbox:slack:b", inbox("inbox:slack:x"), Utc::now())
                .await
                .unwrap()
        );
        assert!(
            store
                .enqueue_claimed_once("inbox:slack:b", inbox("inbox:slack:b"), Utc::now(), lease)
                .await
                .unwrap()
                .is_none(),
            "{kind}: a key recorded by enqueue_once is a replay"
        );
        // An id that is not the key's is refused (it would defeat the replay check).
        assert!(
            store
                .enqueue_claimed_once("inbox:slack:c", inbox("inbox:slack:d"), Utc::now(), lease)
                .await
                .is_err(),
            "{kind}"
        );
        // The claim lapses like any claim: a scheduler takes the job over.
        let short = store
            .enqueue_claimed_once(
                "inbox:slack:e",
                inbox("inbox:slack:e"),
                Utc::now(),
                Duration::milliseconds(1),
            )
            .await
            .unwrap()
            .expect("stored");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let taken = store.claim_jobs(far, 10, lease).await.unwrap();
        let ids: Vec<JobId> = taken.iter().map(|j| j.id).collect();
        assert!(ids.contains(&short.id), "{kind}: {ids:?}");
        assert_eq!(
            taken.iter().find(|j| j.id == short.id).map(|j| j.attempts),
            Some(2),
            "{kind}"
        );
    }
}

/// Commits `r` with two notification jobs due now, written claimed under `token` (as a command's
/// submission does), and `other` jobs unclaimed; the notifications' ids.
async fn commit_with_claimed_notifications(
    store: &SqlStore,
    r: &AccessRequest,
    token: &str,
    other: Vec<NewJob>,
) -> Vec<JobId> {
    let now = Utc::now();
    let notify: Vec<NewJob> = (0..2)
        .map(|_| NewJob::at(JobKind::TimeoutPending { request_id: r.id }, now))
        .collect();
    let ids: Vec<JobId> = notify.iter().map(|j| j.id).collect();
    let mut jobs = notify;
    jobs.extend(other);
    store
        .commit(ChangeSet {
            requests: vec![RequestWrite::Insert(r.clone())],
            jobs,
            claimed: Some(ClaimAtInsert {
                token: token.to_string(),
                lease: Duration::seconds(60),
                ids: ids.clone(),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    ids
}

#[tokio::test]
async fn jobs_claimed_at_insert_complete_in_one_write_with_their_messages() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let r = request("U1");
        let token = "token-1".to_string();
        let later = NewJob::at(
            JobKind::TimeoutPending { request_id: r.id },
            Utc::now() + Duration::hours(1),
        );
        let ids = commit_with_claimed_notifications(&store, &r, &token, vec![later.clone()]).await;
        let all = store.jobs(&JobFilter::default()).await.unwrap();
        for j in &all {
            if ids.contains(&j.id) {
                assert_eq!(j.status, JobStatus::Running, "{kind}");
                assert_eq!(j.claim_token.as_deref(), Some("token-1"), "{kind}");
            } else {
                assert_eq!(
                    j.status,
                    JobStatus::Pending,
                    "{kind}: not named, not claimed"
                );
            }
        }
        let refs = vec![
            MessageRef {
                request_id: r.id,
                purpose: "approval".into(),
                team_id: "T1".into(),
                channel: "C1".into(),
                ts: "1.1".into(),
            },
            // The same message recorded twice in one batch: the last one wins.
            MessageRef {
                request_id: r.id,
                purpose: "approval".into(),
                team_id: "T1".into(),
                channel: "C1".into(),
                ts: "1.2".into(),
            },
        ];
        let done: Vec<(JobId, String)> = ids.iter().map(|id| (*id, token.clone())).collect();
        let mut with_stale = done.clone();
        with_stale.push((later.id, "not-its-token".into()));
        let before = store.stats();
        let n = store
            .complete_jobs_with_refs(&with_stale, &refs, Utc::now())
            .await
            .unwrap();
        assert_eq!(
            cost(&store, before),
            StoreStats {
                statements: 3,
                commits: 1
            },
            "{kind}: refs, then one completion per token"
        );
        assert_eq!(n, 2, "{kind}: only jobs still held by their token");
        let saved = store.message_refs(r.id).await.unwrap();
        assert_eq!(saved.len(), 1, "{kind}");
        assert_eq!(saved[0].ts, "1.2", "{kind}");
        let all = store.jobs(&JobFilter::default()).await.unwrap();
        for j in &all {
            let want = if ids.contains(&j.id) {
                JobStatus::Done
            } else {
                JobStatus::Pending
            };
            assert_eq!(j.status, want, "{kind}");
        }
    }
}

/// The settle of a command's notifications — their jobs, claimed under one token, and the
/// messages they posted — is the last write of every command. On PostgreSQL it is one
/// autocommitted statement (the refs' upsert as a data-modifying `WITH`); on SQLite one
/// transaction of two statements sent together with its `BEGIN` and `COMMIT`: one round trip
/// (docs/performance.md, "Tenth session").
#[tokio::test]
async fn a_settle_with_its_messages_is_one_round_trip_on_both_databases() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let r = request("U1");
        let token = "token-s".to_string();
        let ids = commit_with_claimed_notifications(&store, &r, &token, Vec::new()).await;
        let refs: Vec<MessageRef> = ["approval", "requester"]
            .iter()
            .map(|purpose| MessageRef {
                request_id: r.id,
                purpose: (*purpose).into(),
                team_id: "T1".into(),
                channel: format!("C-{purpose}"),
                ts: "1.1".into(),
            })
            .collect();
        let done: Vec<(JobId, String)> = ids.iter().map(|id| (*id, token.clone())).collect();
        let (before, trips) = (store.stats(), store.round_trips());
        let n = store
            .complete_jobs_with_refs(&done, &refs, Utc::now())
            .await
            .unwrap();
        let (statements, round_trips) = match kind {
            "postgres" => (1, 1),
            _ => (2, 1),
        };
        assert_eq!(
            (cost(&store, before), store.round_trips() - trips),
            (
                StoreStats {
                    statements,
                    commits: 1
                },
                round_trips
            ),
            "{kind}"
        );
        assert_eq!(n, 2, "{kind}");
        let saved = store.message_refs(r.id).await.unwrap();
        assert_eq!(saved.len(), 2, "{kind}");
        let all = store.jobs(&JobFilter::default()).await.unwrap();
        assert!(
            all.iter().all(|j| j.status == JobStatus::Done),
            "{kind}: {all:?}"
        );
        // Settled again (a lease that lapsed meanwhile, a repeat): nothing is done twice, the
        // messages are kept.
        let again = store
            .complete_jobs_with_refs(&done, &refs, Utc::now())
            .await
            .unwrap();
        assert_eq!(again, 0, "{kind}");
        assert_eq!(store.message_refs(r.id).await.unwrap().len(), 2, "{kind}");
    }
}

async fn raw(store: &SqlStore, sql: &str) {
    match store.pool() {
        store_sqlx::DbPool::Sqlite(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
        store_sqlx::DbPool::Postgres(p) => {
            sqlx::query(sql).execute(p).await.unwrap();
        }
    }
}

/// A warm change set (the head known, so its update is the conditional one) that fails on a
/// duplicate request writes nothing: the error names the duplicate, the chain and the jobs are
/// as before, and the next commit is sealed right after the first one.
#[tokio::test]
async fn a_change_set_that_fails_half_way_writes_nothing() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let (first, cs) = submit_like("U1");
        store.commit(cs).await.unwrap();
        let (_, mut again) = submit_like("U2");
        let mut dup = again.requests[0].clone();
        if let RequestWrite::Insert(r) = &mut dup {
            r.id = first.id;
        }
        again.requests = vec![dup];
        let err = store.commit(again).await.unwrap_err();
        assert!(
            matches!(&err, access_core::ports::StoreError::Duplicate(m) if m.contains(&first.id.to_string())),
            "{kind}: {err:?}"
        );
        let v = store.verify_audit_chain().await.unwrap();
        assert!(v.ok && v.events_checked == 2, "{kind}: {v:?}");
        assert_eq!(
            store.jobs(&JobFilter::default()).await.unwrap().len(),
            3,
            "{kind}"
        );
        let (_, cs) = submit_like("U3");
        let committed = store.commit(cs).await.unwrap();
        assert_eq!(committed.audit[0].seq, 3, "{kind}: sealed after the first");
        let v = store.verify_audit_chain().await.unwrap();
        assert!(v.ok && v.events_checked == 4, "{kind}: {v:?}");
    }
}

/// The audit head's row deleted under a store that remembers the head: the commit is refused,
/// and so is the next one, instead of chaining on without a head.
#[tokio::test]
async fn a_deleted_audit_head_is_reported() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let (_, cs) = submit_like("U1");
        store.commit(cs).await.unwrap();
        raw(&store, "DELETE FROM audit_head").await;
        for user in ["U2", "U3"] {
            let (_, cs) = submit_like(user);
            let err = store.commit(cs).await.unwrap_err();
            assert!(err.to_string().contains("audit_head"), "{kind}: {err}");
        }
        assert_eq!(
            store.jobs(&JobFilter::default()).await.unwrap().len(),
            3,
            "{kind}: nothing of the refused commits was written"
        );
    }
}
