//! Jobs written claimed at insert keep their place in the order of their ordering key
//! (`ClaimAtInsert`): on every backend, a notification of a request whose earlier notification
//! is still pending or running under another claim is written pending ("held back") and named in
//! `Committed::held_back`, so its process does not run it; a scheduler claims it once the
//! earlier one is done. Without this a decision could rewrite an approval message before the
//! message's post was recorded, and update nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_core::ids::JobId;
use access_core::jobs::{JobKind, JobStatus, NewJob};
use access_core::notification::{Notification, RequestSummary};
use access_core::ports::{ChangeSet, ClaimAtInsert, Committed, JobFilter, JobQueue, RequestStore};
use access_core::request::AccessRequest;
use chrono::{Duration, Utc};
use store_sqlx::SqlStore;

#[allow(dead_code)] // `audit` is for the statement-count suites
mod common;
use common::{request, stores};

fn note(r: &AccessRequest) -> NewJob {
    NewJob::at(
        JobKind::Notify {
            notification: Box::new(Notification::RequestTimedOut {
                request: RequestSummary::of(r, "VPN"),
            }),
        },
        Utc::now() - Duration::seconds(1),
    )
}

/// `jobs`, all written claimed under `token`.
fn claimed(token: &str, jobs: Vec<NewJob>) -> ChangeSet {
    ChangeSet {
        claimed: Some(ClaimAtInsert {
            token: token.to_string(),
            lease: Duration::seconds(60),
            ids: jobs.iter().map(|j| j.id).collect(),
        }),
        jobs,
        ..Default::default()
    }
}

async fn status(store: &SqlStore, id: JobId) -> (JobStatus, Option<String>, u32) {
    let jobs = store
        .jobs(&JobFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let j = jobs.into_iter().find(|j| j.id == id).unwrap();
    (j.status, j.claim_token, j.attempts)
}

#[tokio::test]
async fn a_notification_behind_an_unfinished_one_of_its_request_is_held_back() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let r = request("U1");
        let other = request("U2");

        // The approval post and the DM of one command: both claimed, neither held back by the
        // other (one process runs them in order).
        let (post, dm) = (note(&r), note(&r));
        let c = store
            .commit(claimed("run-1", vec![post.clone(), dm.clone()]))
            .await
            .unwrap();
        assert_eq!(c.held_back, Vec::<JobId>::new(), "{kind}");
        for id in [post.id, dm.id] {
            assert_eq!(
                status(&store, id).await,
                (JobStatus::Running, Some("run-1".into()), 1),
                "{kind}"
            );
        }

        // A decision's notice while they run: held back, written as a scheduler would find it.
        // Another request's notice in the same change set is not.
        let (decided, unrelated) = (note(&r), note(&other));
        let c = store
            .commit(claimed("run-2", vec![decided.clone(), unrelated.clone()]))
            .await
            .unwrap();
        assert_eq!(c.held_back, vec![decided.id], "{kind}");
        assert_eq!(
            status(&store, decided.id).await,
            (JobStatus::Pending, None, 0),
            "{kind}"
        );
        assert_eq!(
            status(&store, unrelated.id).await.0,
            JobStatus::Running,
            "{kind}"
        );
        // No scheduler hands it out while the first command's notices run ...
        let later = Utc::now() + Duration::seconds(1);
        assert!(
            store
                .claim_jobs(later, 10, Duration::seconds(30))
                .await
                .unwrap()
                .is_empty(),
            "{kind}"
        );
        // ... and once they are done, one does.
        let done = [(post.id, "run-1".to_string()), (dm.id, "run-1".to_string())];
        assert_eq!(store.complete_jobs(&done, Utc::now()).await.unwrap(), 2);
        let got = store
            .claim_jobs(later, 10, Duration::seconds(30))
            .await
            .unwrap();
        assert_eq!(
            got.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![decided.id],
            "{kind}"
        );

        // A pending one (a retry waiting) holds back the next as well, whoever's claim.
        let tok = got[0].claim_token.clone().unwrap();
        assert!(
            store
                .retry_job(
                    decided.id,
                    &tok,
                    "slack 503",
                    Utc::now() + Duration::hours(1)
                )
                .await
                .unwrap()
        );
        let next = note(&r);
        let c = store
            .commit(claimed("run-2", vec![next.clone()]))
            .await
            .unwrap();
        assert_eq!(c.held_back, vec![next.id], "{kind}: behind a retry");
    }
}

/// In a group commit the database cannot see the batch's own rows, so a change set queued
/// behind another with a job of the same key is held back by the store itself.
#[tokio::test]
async fn in_a_group_commit_the_later_change_set_of_a_request_is_held_back() {
    for (db, store) in stores().await {
        let kind = db.kind;
        let r = request("U1");
        let (first, second, third) = (note(&r), note(&r), note(&request("U3")));
        let held = store.hold_commits().await;
        let handles: Vec<tokio::task::JoinHandle<Committed>> = [
            claimed("run-a", vec![first.clone()]),
            claimed("run-b", vec![second.clone()]),
            claimed("run-c", vec![third.clone()]),
        ]
        .into_iter()
        .map(|cs| {
            let store = store.clone();
            tokio::spawn(async move { store.commit(cs).await.unwrap() })
        })
        .collect();
        while store.queued_commits() < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let before = store.stats();
        drop(held);
        let mut outcomes = Vec::new();
        for h in handles {
            outcomes.push(h.await.unwrap().held_back);
        }
        assert_eq!(
            (store.stats() - before).commits,
            1,
            "{kind}: one transaction"
        );
        // Which of the two same-request change sets was queued first is the spawn order's
        // business; exactly one of them runs now.
        let (a, b) = (&outcomes[0], &outcomes[1]);
        assert!(
            (a.is_empty() && *b == vec![second.id]) || (*a == vec![first.id] && b.is_empty()),
            "{kind}: {outcomes:?}"
        );
        assert!(outcomes[2].is_empty(), "{kind}");
        let running = |id| {
            let store = store.clone();
            async move { status(&store, id).await.0 == JobStatus::Running }
        };
        assert_ne!(running(first.id).await, running(second.id).await, "{kind}");
        assert!(running(third.id).await, "{kind}");
    }
}
