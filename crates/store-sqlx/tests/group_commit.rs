//! Group commit (docs/performance.md, "Group commit"), on every backend: concurrent commits and
//! job completions go to the database as one transaction, each caller gets its own outcome, and
//! one bad change set in a batch fails alone. Batches are made deterministic by holding the
//! flush (`hold_commits`) until every caller has queued: no timing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_core::ids::JobId;
use access_core::jobs::{JobKind, JobStatus, NewJob};
use access_core::notification::MessageRef;
use access_core::ports::{
    AuditLog, ChangeSet, ClaimAtInsert, Committed, JobFilter, JobQueue, MessageRefs, RequestStore,
    RequestWrite, StoreError,
};
use access_core::request::{AccessRequest, RequestStatus};
use chrono::{Duration, Utc};
use store_sqlx::{SqlStore, StoreStats};

mod common;
use common::{audit, request, stores};

/// A request with two audit records and two jobs (one of them written claimed under a token of
/// its own), as a slash command commits it.
fn submit_like(user: &str) -> (AccessRequest, ChangeSet) {
    let r = request(user);
    let jobs: Vec<NewJob> = (0..2)
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
        claimed: Some(ClaimAtInsert {
            token: format!("token-{user}"),
            lease: Duration::seconds(60),
            ids: vec![jobs[0].id],
        }),
        jobs,
        ..Default::default()
    };
    (r, cs)
}

/// Waits (yielding, not timing anything) until `n` commits are queued behind the held flush.
async fn until_queued(n: usize, queued: impl Fn() -> usize) {
    while queued() < n {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

type Handles = Vec<tokio::task::JoinHandle<Result<Committed, StoreError>>>;

fn spawn_commits(store: &SqlStore, changes: Vec<ChangeSet>) -> Handles {
    changes
        .into_iter()
        .map(|cs| {
            let store = store.clone();
            tokio::spawn(async move { store.commit(cs).await })
        })
        .collect()
}

#[tokio::test]
async fn fifty_concurrent_commits_are_one_transaction_and_chain_in_order() {
    const N: usize = 50;
    for (db, store) in stores().await {
        let kind = db.kind;
        // A lone commit first: the store learns the head (and the batch needs no head read).
        let (_, cs) = submit_like("U0");
        store.commit(cs).await.unwrap();

        let held = store.hold_commits().await;
        let made: Vec<(AccessRequest, ChangeSet)> =
            (1..=N).map(|i| submit_like(&format!("U{i}"))).collect();
        let handles = spawn_commits(&store, made.iter().map(|(_, cs)| cs.clone()).collect());
        until_queued(N, || store.queued_commits()).await;
        let before = store.stats();
        drop(held);
        let mut sealed = Vec::new();
        for h in handles {
            let committed = h.await.unwrap().unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(committed.audit.len(), 2, "{kind}");
            assert_eq!(committed.audit[1].seq, committed.audit[0].seq + 1, "{kind}");
            assert_eq!(
                committed.audit[1].prev_hash, committed.audit[0].hash,
                "{kind}"
            );
            sealed.extend(committed.audit);
        }
        assert_eq!(
            store.stats() - before,
            StoreStats {
                statements: N as u64 + 3,
                commits: 1
            },
            "{kind}: one transaction: {N} request inserts, one head update, one audit insert, one jobs insert"
        );
        // Each caller got its own events, in the order the change sets were queued.
        let seqs: Vec<i64> = sealed.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (3..=(2 * N as i64 + 2)).collect::<Vec<_>>(), "{kind}");
        for (k, (r, _)) in made.iter().enumerate() {
            assert_eq!(sealed[2 * k].record.request_id, Some(r.id), "{kind}");
        }
        let v = store.verify_audit_chain().await.unwrap();
        assert!(v.ok, "{kind}: {v:?}");
        assert_eq!(v.events_checked, 2 * N as u64 + 2, "{kind}");
        // Each change set's jobs under its own claim.
        let jobs = store
            .jobs(&JobFilter {
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(jobs.len(), 2 * (N + 1), "{kind}");
        for (_, cs) in &made {
            let claimed = cs.claimed.as_ref().unwrap();
            let j = jobs.iter().find(|j| j.id == claimed.ids[0]).unwrap();
            assert_eq!(j.status, JobStatus::Running, "{kind}");
            assert_eq!(
                j.claim_token.as_deref(),
                Some(claimed.token.as_str()),
                "{kind}"
            );
            let other = jobs.iter().find(|j| j.id == cs.jobs[1].id).unwrap();
            assert_eq!(other.status, JobStatus::Pending, "{kind}");
        }
        // The remembered head advanced once, to the batch's last event: the next lone commit
        // needs no head read.
        let (_, cs) = submit_like("U99");
        let before = store.stats();
        store.commit(cs).await.unwrap();
        assert_eq!(
            store.stats() - before,
            StoreStats {
                statements: 4,
                commits: 1
            },
            "{kind}"
        );
    }
}

/// A lost compare-and-set of one change set fails the batch's transaction: it is rolled back
/// and each change set committed alone, so the good ones commit, the bad one gets the error it
/// gets alone, and the chain has no gap.
#[tokio::test]
async fn one_bad_change_set_in_a_batch_fails_alone() {
    for (db, store) in stores().await {
        let kind = db.kind;
        // An update of a request at a version it does not have.
        let (r, cs) = submit_like("UB");
        store.commit(cs).await.unwrap();
        let mut stale = r.clone();
        stale.version = 7;
        stale.status = RequestStatus::Cancelled;
        let bad = ChangeSet {
            requests: vec![RequestWrite::Update(stale)],
            audit: vec![audit(&r)],
            ..Default::default()
        };
        let alone = store.commit(bad.clone()).await.unwrap_err().to_string();

        let held = store.hold_commits().await;
        let mut changes: Vec<ChangeSet> =
            (0..10).map(|i| submit_like(&format!("G{i}")).1).collect();
        changes.insert(4, bad);
        let handles = spawn_commits(&store, changes);
        until_queued(11, || store.queued_commits()).await;
        drop(held);
        let mut outcomes = Vec::new();
        for h in handles {
            outcomes.push(h.await.unwrap());
        }
        for (k, o) in outcomes.iter().enumerate() {
            match o {
                Ok(c) if k != 4 => assert_eq!(c.audit.len(), 2, "{kind}"),
                Err(e) if k == 4 => {
                    assert!(matches!(e, StoreError::Conflict(_)), "{kind}: {e}");
                    assert_eq!(e.to_string(), alone, "{kind}");
                }
                other => panic!("{kind}: change set {k}: {other:?}"),
            }
        }
        let mut seqs: Vec<i64> = outcomes
            .iter()
            .flatten()
            .flat_map(|c| c.audit.iter().map(|e| e.seq))
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (3..=22).collect::<Vec<_>>(), "{kind}: no gap");
        let v = store.verify_audit_chain().await.unwrap();
        assert!(v.ok && v.events_checked == 22, "{kind}: {v:?}");
        let stored = store.request(r.id).await.unwrap().unwrap();
        assert_eq!(
            stored.status,
            RequestStatus::Pending,
            "{kind}: the bad one wrote nothing"
        );
    }
}

/// A caller that gives up while its commit waits in the queue strands nobody: the others get
/// their outcomes, the batch's transaction ends (a later write goes through), and what was
/// queued is written (as a commit already sent would be).
#[tokio::test]
async fn a_caller_dropped_while_queued_strands_nobody() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let held = store.hold_commits().await;
        let made: Vec<(AccessRequest, ChangeSet)> =
            (0..5).map(|i| submit_like(&format!("D{i}"))).collect();
        let mut handles = spawn_commits(&store, made.iter().map(|(_, cs)| cs.clone()).collect());
        until_queued(5, || store.queued_commits()).await;
        handles.remove(0).abort();
        drop(held);
        for h in handles {
            h.await.unwrap().unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
        let (_, cs) = submit_like("D9");
        store.commit(cs).await.unwrap();
        for (r, _) in &made {
            assert!(store.request(r.id).await.unwrap().is_some(), "{kind}");
        }
        let v = store.verify_audit_chain().await.unwrap();
        assert!(v.ok && v.events_checked == 12, "{kind}: {v:?}");
    }
}

/// Concurrent job completions are one transaction; each call learns how many of its own jobs
/// it completed (a stale token completes nothing), and message refs are saved with them.
#[tokio::test]
async fn concurrent_completions_are_one_transaction_with_their_own_counts() {
    const N: usize = 20;
    for (db, store) in stores().await {
        let kind = db.kind;
        let made: Vec<(AccessRequest, ChangeSet)> =
            (0..N).map(|i| submit_like(&format!("C{i}"))).collect();
        for (_, cs) in &made {
            store.commit(cs.clone()).await.unwrap();
        }
        let held = store.hold_completions().await;
        let mut handles = Vec::new();
        for (k, (r, cs)) in made.iter().enumerate() {
            let store = store.clone();
            let claimed = cs.claimed.clone().unwrap();
            let id = claimed.ids[0];
            // Call 3 holds a token that is not the job's.
            let token = if k == 3 {
                "stale".to_string()
            } else {
                claimed.token
            };
            let rid = r.id;
            handles.push(tokio::spawn(async move {
                match k % 3 {
                    0 => u64::from(store.complete_job(id, &token, Utc::now()).await.unwrap()),
                    1 => store
                        .complete_jobs(&[(id, token)], Utc::now())
                        .await
                        .unwrap(),
                    _ => store
                        .complete_jobs_with_refs(
                            &[(id, token)],
                            &[MessageRef {
                                request_id: rid,
                                purpose: "approval".into(),
                                team_id: "T1".into(),
                                channel: "C1".into(),
                                ts: format!("1.{k}"),
                            }],
                            Utc::now(),
                        )
                        .await
                        .unwrap(),
                }
            }));
        }
        until_queued(N, || store.queued_completions()).await;
        let before = store.stats();
        drop(held);
        let mut counts = Vec::new();
        for h in handles {
            counts.push(h.await.unwrap());
        }
        let expected: Vec<u64> = (0..N).map(|k| u64::from(k != 3)).collect();
        assert_eq!(counts, expected, "{kind}");
        assert_eq!(
            store.stats() - before,
            StoreStats {
                statements: 2,
                commits: 1
            },
            "{kind}: one refs upsert, one completion update"
        );
        let jobs = store
            .jobs(&JobFilter {
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap();
        for (k, (_, cs)) in made.iter().enumerate() {
            let id: JobId = cs.claimed.as_ref().unwrap().ids[0];
            let j = jobs.iter().find(|j| j.id == id).unwrap();
            let want = if k == 3 {
                JobStatus::Running
            } else {
                JobStatus::Done
            };
            assert_eq!(j.status, want, "{kind}: job of call {k}");
        }
        for (k, (r, _)) in made.iter().enumerate() {
            let refs = store.message_refs(r.id).await.unwrap();
            assert_eq!(
                refs.len(),
                usize::from(k % 3 == 2),
                "{kind}: refs of call {k}"
            );
        }
    }
}

fn live_grant(r: &AccessRequest) -> access_core::grant::Grant {
    access_core::grant::Grant {
        id: access_core::ids::GrantId::new(),
        subject: r.subject.clone(),
        resource: r.resource.clone(),
        status: access_core::grant::GrantStatus::Active,
        provider_handle: serde_json::json!({"group": "jit-dev"}),
        created_at: r.created_at,
        granted_at: Some(r.created_at),
        expires_at: r.created_at + Duration::hours(4),
        ended_at: None,
        request_id: r.id,
        revoked_by: None,
        version: 0,
        provider_intent: serde_json::Value::Null,
        takeback_pending: false,
    }
}

/// Two live grants of one person on one resource in one batch (a unique violation inside the
/// group's transaction): the first queued commits, the second gets the `Duplicate` it would get
/// alone, and the others of the batch commit.
#[tokio::test]
async fn two_live_grants_for_one_person_in_a_batch_one_wins() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let with_grant = |user: &str| {
            let (r, mut cs) = submit_like(user);
            cs.grants = vec![access_core::ports::GrantWrite::Insert(live_grant(&r))];
            cs
        };
        let held = store.hold_commits().await;
        let changes = vec![
            submit_like("A").1,
            with_grant("SAME"),
            submit_like("B").1,
            with_grant("SAME"),
            submit_like("C").1,
        ];
        let handles = spawn_commits(&store, changes);
        until_queued(5, || store.queued_commits()).await;
        drop(held);
        let mut outcomes = Vec::new();
        for h in handles {
            outcomes.push(h.await.unwrap());
        }
        for (k, o) in outcomes.iter().enumerate() {
            match (k, o) {
                (3, Err(StoreError::Duplicate(m))) => {
                    assert!(m.contains("live grant"), "{kind}: {m}")
                }
                (3, other) => panic!("{kind}: the second grant: {other:?}"),
                (_, Ok(c)) => assert_eq!(c.audit.len(), 2, "{kind}"),
                (_, Err(e)) => panic!("{kind}: change set {k}: {e}"),
            }
        }
        let v = store.verify_audit_chain().await.unwrap();
        assert!(v.ok && v.events_checked == 8, "{kind}: {v:?}");
    }
}

fn inbox(key: &str) -> NewJob {
    let mut job = NewJob::at(
        JobKind::Inbox {
            item: access_core::jobs::InboxItem {
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

/// Concurrent inbox items are one statement in one transaction; each caller learns whether its
/// item is new, and replays are still recognised: a key stored before, a key of the old
/// idempotency table, and a key queued twice in the same batch (stored once, for its first
/// caller).
#[tokio::test]
async fn concurrent_inbox_items_are_one_statement_and_replays_are_recognised() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let lease = Duration::seconds(60);
        let stored_before = store
            .enqueue_claimed_once("k:old", inbox("k:old"), Utc::now(), lease)
            .await
            .unwrap();
        assert!(stored_before.is_some(), "{kind}");
        assert!(
            store
                .enqueue_once("k:legacy", inbox("k:legacy-job"), Utc::now())
                .await
                .unwrap(),
            "{kind}"
        );
        let keys = [
            "k:1", "k:2", "k:old", "k:3", "k:2", "k:legacy", "k:4", "k:5", "k:6", "k:2",
        ];
        let held = store.hold_inbox().await;
        let mut handles = Vec::new();
        for key in keys {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                store
                    .enqueue_claimed_once(key, inbox(key), Utc::now(), lease)
                    .await
                    .unwrap()
            }));
        }
        until_queued(keys.len(), || store.queued_inbox()).await;
        let before = store.stats();
        drop(held);
        let mut new = Vec::new();
        for h in handles {
            new.push(h.await.unwrap());
        }
        assert_eq!(
            store.stats() - before,
            StoreStats {
                statements: 1,
                commits: 1
            },
            "{kind}"
        );
        let firsts: Vec<bool> = new.iter().map(Option::is_some).collect();
        assert_eq!(
            firsts,
            vec![
                true, true, false, true, false, false, true, true, true, false
            ],
            "{kind}"
        );
        // Stored claimed under the token each new caller was given.
        let jobs = store
            .jobs(&JobFilter {
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap();
        for job in new.iter().flatten() {
            let j = jobs.iter().find(|j| j.id == job.id).unwrap();
            assert_eq!(j.status, JobStatus::Running, "{kind}");
            assert_eq!(j.claim_token, job.claim_token, "{kind}");
        }
        // old, legacy-job, and 1..6.
        assert_eq!(jobs.len(), 8, "{kind}");
    }
}
