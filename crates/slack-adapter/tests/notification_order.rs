//! The notifications of one request go out one at a time, in the order they were written, on
//! the fast path too (a chat command's notifications run by the process that received it). A
//! decision made while the request's own messages are still being posted must not rewrite the
//! approval message before its post was recorded: it would find no message to update, and the
//! approvers' channel would keep the request's buttons after it was decided.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use access_core::RequestStatus;
use access_core::jobs::JobStatus;
use access_core::notification::{MessageRef, Notification};
use access_core::ports::{JobFilter, JobWaker, Notifier, NotifyContext, NotifyError};
use access_core::providers::DryRunProvider;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::*;
use tokio::sync::Semaphore;

/// The real notifier, holding the requester's "submitted" DM until the test opens the gate,
/// and writing down when each notification starts and ends.
#[derive(Debug)]
struct HoldsTheRequesterDm {
    inner: Arc<dyn Notifier>,
    gate: Arc<Semaphore>,
    log: Log,
}

#[async_trait]
impl Notifier for HoldsTheRequesterDm {
    async fn notify(
        &self,
        n: &Notification,
        ctx: &NotifyContext,
    ) -> Result<Vec<MessageRef>, NotifyError> {
        self.log.lock().unwrap().push(format!("start {}", n.name()));
        if matches!(n, Notification::RequestSubmitted { .. }) {
            drop(self.gate.acquire().await.unwrap());
        }
        let out = self.inner.notify(n, ctx).await;
        self.log.lock().unwrap().push(format!("end {}", n.name()));
        out
    }

    fn reads_message_refs(&self, n: &Notification) -> bool {
        self.inner.reads_message_refs(n)
    }

    async fn deliver_secret(
        &self,
        request: &access_core::notification::RequestSummary,
        secret: &access_core::notification::DeliveredSecret,
    ) -> Result<(), NotifyError> {
        self.inner.deliver_secret(request, secret).await
    }
}

/// Counts the scheduler wake-ups the engine asks for.
#[derive(Debug, Default)]
struct Wakes(AtomicUsize);

impl JobWaker for Wakes {
    fn job_enqueued(&self, _run_at: DateTime<Utc>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type Log = Arc<Mutex<Vec<String>>>;

/// A harness whose notifier holds the requester's DM behind `gate` and logs every
/// notification; the engine's scheduler wake-ups are counted.
async fn logged(db: testkit::db::TestDb, gate: Arc<Semaphore>) -> (Harness, Log, Arc<Wakes>) {
    let log: Log = Arc::default();
    let wakes = Arc::new(Wakes::default());
    let h = harness_wrapped(
        db,
        default_resources(),
        |_| {},
        Arc::new(DryRunProvider::new()),
        Default::default(),
        |real, b| {
            b.notifier(Arc::new(HoldsTheRequesterDm {
                inner: Arc::new(real),
                gate,
                log: log.clone(),
            }))
            .waker(wakes.clone())
        },
    )
    .await;
    (h, log, wakes)
}

/// The notices of a request denied right after it was filed, one at a time, in the order written:
/// the approval post, the requester's DM, the denial.
const SUBMITTED_THEN_DENIED: [&str; 6] = [
    "start approval_requested",
    "end approval_requested",
    "start request_submitted",
    "end request_submitted",
    "start request_denied",
    "end request_denied",
];

/// Alice asks for an hour of `dev-network` (one approval).
async fn alice_asks(h: &Harness, kind: &str) {
    let text = "request dev-network 1h \"debugging the payment service\"";
    let (reply, _) = h.command("/access", ALICE, text).await;
    assert_eq!(reply.status, 200, "{kind}: {}", reply.body);
}

async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    for _ in 0..1000 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_made_while_the_request_is_being_posted_rewrites_the_posted_message() {
    for db in databases().await {
        let kind = db.kind;
        let gate = Arc::new(Semaphore::new(0));
        let (h, log, wakes) = logged(db, gate.clone()).await;

        // Alice asks; the approval message is posted, her DM is held.
        alice_asks(&h, kind).await;
        let r = h.wait_request("dev-network").await;
        eventually("the approval message is posted", async || {
            !h.slack.messages_in(APPROVALS).is_empty()
        })
        .await;
        let m = h.approval_message(r.id);
        let (action, value) = m
            .buttons()
            .into_iter()
            .find(|(a, _)| a.contains("deny"))
            .expect("deny button");

        // An approver denies it before Alice's DM is out (so before the command's messages
        // are recorded).
        let (reply, _) = h.click(APPROVER1, &action, &value, &m.channel, &m.ts).await;
        assert_eq!(reply.status, 200, "{kind}: {}", reply.body);
        h.wait_status(r.id, RequestStatus::Denied).await;
        // Its notice waits behind the request's unfinished ones, for a scheduler.
        let store = h.engine.store().clone();
        eventually(
            "the denial's notice is queued behind the request's",
            async || {
                let pending = store
                    .jobs(&JobFilter {
                        status: Some(JobStatus::Pending),
                        kind: Some("notify".into()),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                pending.iter().any(|j| {
                    matches!(&j.kind, access_core::jobs::JobKind::Notify { notification }
                    if matches!(**notification, Notification::RequestDenied { .. }))
                })
            },
        )
        .await;
        assert!(
            !log.lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("request_denied")),
            "{kind}: the denial went out ahead of the request's own messages: {log:?}"
        );

        // The DM goes out; the command's messages are recorded, and finishing them wakes the
        // scheduler for the notice held behind them.
        let woken = wakes.0.load(Ordering::SeqCst);
        gate.add_permits(100);
        eventually("the scheduler is woken", async || {
            wakes.0.load(Ordering::SeqCst) > woken
        })
        .await;
        h.run_jobs().await;

        // The approval message says who denied it, and its buttons are gone.
        let m = h
            .slack
            .message(&m.channel, &m.ts)
            .expect("the approval message");
        assert!(
            m.all_text().contains("DENIED") && m.buttons().is_empty(),
            "{kind}: the approval message was not rewritten: {m:#?}"
        );
        // One at a time, in the order written: the approval post, the DM, the denial.
        let log = log.lock().unwrap().clone();
        assert_eq!(log, SUBMITTED_THEN_DENIED, "{kind}");
    }
}

/// After a notification fails, the later ones of its request wait behind its retry, as they
/// would in a scheduler's queue: the requester is not told "waiting for approval" while no
/// approver has been asked yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_approval_post_fails_the_requesters_dm_waits_for_its_retry() {
    for db in databases().await {
        let kind = db.kind;
        let (h, log, _) = logged(db, Arc::new(Semaphore::new(Semaphore::MAX_PERMITS))).await;
        h.slack
            .fail_next("chat.postMessage", testkit::slack::Fault::ServerError);
        alice_asks(&h, kind).await;
        h.wait_request("dev-network").await;
        eventually("the command's notices are settled", async || {
            log.lock().unwrap().len() >= 2
        })
        .await;
        h.wait_running().await;
        assert_eq!(
            *log.lock().unwrap(),
            ["start approval_requested", "end approval_requested"],
            "{kind}: the DM went out although the approval post failed"
        );

        // The retry is due: the post, then the DM.
        h.clock.advance(chrono::Duration::minutes(15));
        h.run_jobs().await;
        assert_eq!(
            *log.lock().unwrap(),
            [
                "start approval_requested",
                "end approval_requested",
                "start approval_requested",
                "end approval_requested",
                "start request_submitted",
                "end request_submitted",
            ],
            "{kind}"
        );
        assert_eq!(h.slack.messages_in(APPROVALS).len(), 1, "{kind}");
    }
}

/// An inbox handler whose one item files a request for Alice and denies it at once: two
/// commits of one run, the second's notice rewriting the message the first's posted.
#[derive(Debug)]
struct SubmitsThenDenies {
    engine: std::sync::Weak<access_core::Engine>,
}

#[async_trait]
impl access_core::ports::InboxHandler for SubmitsThenDenies {
    async fn handle(
        &self,
        _item: &access_core::jobs::InboxItem,
    ) -> Result<(), access_core::ports::InboxError> {
        let engine = self.engine.upgrade().unwrap();
        let valid = engine
            .validate(&access_core::submission::RawSubmission::new(
                "dev-network",
                Some("1h".into()),
                "debugging the payment service",
            ))
            .unwrap();
        let subject = access_core::Subject {
            team_id: "T0001".into(),
            user_id: ALICE.into(),
            email: Some(access_core::Email::parse("alice@example.com").unwrap()),
            name: "alice".into(),
        };
        let r = engine
            .submit(access_core::Submission::new(subject, valid))
            .await
            .unwrap();
        let approver = access_core::Actor::User {
            team_id: "T0001".into(),
            user_id: APPROVER1.into(),
            name: "approver1".into(),
        };
        engine
            .deny(r.id, approver, Some("not this week".into()))
            .await
            .unwrap();
        Ok(())
    }
}

/// The notices of one run's commits go out in order, and a later one finds the messages the
/// earlier ones posted although they are recorded only when the run settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_sees_the_messages_posted_earlier_in_the_same_run() {
    for db in databases().await {
        let kind = db.kind;
        let (h, log, _) = logged(db, Arc::new(Semaphore::new(Semaphore::MAX_PERMITS))).await;
        h.engine.set_inbox_handler(Arc::new(SubmitsThenDenies {
            engine: Arc::downgrade(&h.engine),
        }));
        let job = h
            .engine
            .enqueue_inbox_claimed(access_core::jobs::InboxItem {
                source: "test".into(),
                key: "submit-then-deny".into(),
                payload: String::new(),
            })
            .await
            .unwrap()
            .unwrap();
        let summary = h.engine.run_claimed(job).await.unwrap();
        assert_eq!(summary.claimed, 4, "{kind}: the item and its three notices");
        assert_eq!(*log.lock().unwrap(), SUBMITTED_THEN_DENIED, "{kind}");
        let m = &h.slack.messages_in(APPROVALS)[0];
        assert!(
            m.all_text().contains("DENIED") && m.buttons().is_empty(),
            "{kind}: the approval message was not rewritten: {m:#?}"
        );
    }
}
