//! A notification job posts its message once even when an attempt's answer is lost or its
//! process dies after posting (issue 12: "no doubled Slack message"). The retry finds the post of
//! the earlier attempt by the job id in its message metadata (`conversations.history`); without
//! the `*:history` scopes it posts again (at-least-once) and says so in the log.
//! Every test runs on SQLite and, with `TEST_DATABASE_URL`, on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use access_core::engine::{Engine, EngineSettings};
use access_core::jobs::JobStatus;
use access_core::notification::{MessageRef, Notification};
use access_core::ports::{JobFilter, Notifier, NotifyContext, NotifyError};
use access_core::providers::DryRunProvider;
use access_core::request::RequestKind;
use access_core::{AccessRequest, Email, Subject};
use async_trait::async_trait;
use common::*;
use testkit::slack::{BOT_TOKEN, Fault, TEAM_ID};
use testkit::submission::{Ask, SubmitTyped};

fn alice() -> Subject {
    Subject {
        team_id: TEAM_ID.into(),
        user_id: ALICE.into(),
        email: Some(Email::parse("alice@example.com").unwrap()),
        name: "alice".into(),
    }
}

/// A request that needs one approval: an approval message in [`APPROVALS`] and a DM to Alice.
async fn submit(h: &Harness) -> AccessRequest {
    h.engine
        .submit_typed(Ask {
            subject: alice(),
            resource: "dev-network".into(),
            duration: None,
            justification: "dedupe test".into(),
            kind: RequestKind::New,
        })
        .await
        .unwrap()
}

/// Notification jobs not finished yet (pending or running).
async fn open_notify_jobs(h: &Harness) -> usize {
    let mut n = 0;
    for status in [JobStatus::Pending, JobStatus::Running] {
        n += h
            .engine
            .store()
            .jobs(&JobFilter {
                status: Some(status),
                ..Default::default()
            })
            .await
            .unwrap()
            .iter()
            .filter(|j| j.kind.name() == "notify")
            .count();
    }
    n
}

/// Runs jobs, moving the engine's clock past every retry's backoff, until no notification job is
/// left (or 60 s pass).
async fn run_retries(h: &Harness, engine: &Engine) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_notify_jobs(h).await > 0 {
        assert!(
            Instant::now() < deadline,
            "notification jobs still open: {:#?}",
            h.engine.store().jobs(&JobFilter::default()).await.unwrap()
        );
        h.clock.advance(chrono::Duration::minutes(5));
        engine.run_due(20).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Exactly one approval message and one DM; the approval message is the one the store records.
async fn assert_posted_once(h: &Harness, req: &AccessRequest, kind: &str) {
    let approvals = h.slack.messages_in(APPROVALS);
    let calls: Vec<_> = h
        .slack
        .calls()
        .into_iter()
        .map(|c| (c.method, c.status, c.error))
        .collect();
    assert_eq!(
        approvals.len(),
        1,
        "{kind}: approval messages: {approvals:#?}; calls: {calls:?}"
    );
    let dms = h.slack.dms_to(ALICE);
    assert_eq!(dms.len(), 1, "{kind}: DMs to the requester: {dms:#?}");
    let refs: Vec<MessageRef> = h.engine.store().message_refs(req.id).await.unwrap();
    assert_eq!(refs.len(), 1, "{kind}: {refs:?}");
    assert_eq!(
        (refs[0].channel.as_str(), refs[0].ts.as_str()),
        (approvals[0].channel.as_str(), approvals[0].ts.as_str()),
        "{kind}: the approval message found by the retry is the one later events update"
    );
    // Each message names its job, so the retries could find them.
    for m in approvals.iter().chain(&dms) {
        let md = m
            .metadata
            .as_ref()
            .expect("metadata on every notification post");
        assert_eq!(md["event_type"], "gatehouse_notification", "{kind}");
        assert!(
            md["event_payload"]["job"]
                .as_str()
                .is_some_and(|j| !j.is_empty())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_answer_was_lost_is_posted_once() {
    for db in databases().await {
        let kind = db.kind;
        let h = harness_on(
            db,
            default_resources(),
            |c| c.http_timeout = Duration::from_secs(1),
            Arc::new(DryRunProvider::new()),
        )
        .await;
        // The approval message and the "submitted" DM both land, but neither answer arrives
        // before the client gives up.
        for _ in 0..2 {
            h.slack.fail_next(
                "chat.postMessage",
                Fault::LoseAnswer(Duration::from_secs(3)),
            );
        }
        let req = submit(&h).await;
        run_retries(&h, &h.engine).await;

        assert_posted_once(&h, &req, kind).await;
        assert_eq!(
            h.slack.calls_to("chat.postMessage").len(),
            2,
            "{kind}: the retries looked instead of posting"
        );
        assert!(
            !h.slack.calls_to("conversations.history").is_empty(),
            "{kind}"
        );
        let first_attempts_looked = h.slack.calls_to("conversations.history").len();
        assert!(first_attempts_looked <= 2, "{kind}: only the retries look");

        // An approval updates the message the retry found, in place.
        let m = &h.slack.messages_in(APPROVALS)[0];
        let approve = m
            .buttons()
            .into_iter()
            .find(|(a, _)| a.contains("approve"))
            .expect("approve button");
        h.click(APPROVER1, &approve.0, &approve.1, &m.channel, &m.ts)
            .await;
        h.run_jobs().await;
        let m = h.slack.messages_in(APPROVALS);
        assert_eq!(m.len(), 1, "{kind}");
        assert!(
            !m[0].history.is_empty(),
            "{kind}: the approval message was updated: {m:#?}"
        );
    }
}

/// Posts through the real notifier, then never returns: its process is killed with the job
/// still claimed (the job is not marked done, its message refs not recorded).
#[derive(Debug)]
struct DiesAfterPosting {
    inner: Arc<dyn Notifier>,
    posted: Arc<Mutex<usize>>,
}

#[async_trait]
impl Notifier for DiesAfterPosting {
    async fn notify(
        &self,
        n: &Notification,
        ctx: &NotifyContext,
    ) -> Result<Vec<MessageRef>, NotifyError> {
        self.inner.notify(n, ctx).await?;
        *self.posted.lock().unwrap() += 1;
        std::future::pending().await
    }

    async fn deliver_secret(
        &self,
        request: &access_core::notification::RequestSummary,
        secret: &access_core::notification::DeliveredSecret,
    ) -> Result<(), NotifyError> {
        self.inner.deliver_secret(request, secret).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_process_died_after_posting_is_posted_once() {
    for db in databases().await {
        let kind = db.kind;
        let h = harness_on(
            db,
            default_resources(),
            |_| {},
            Arc::new(DryRunProvider::new()),
        )
        .await;
        let settings = EngineSettings {
            job_lease: chrono::Duration::seconds(2),
            ..Default::default()
        };
        let engine = |notifier: Arc<dyn Notifier>| {
            Engine::builder(h.engine.store().clone(), h.clock.clone())
                .resources(default_resources())
                .provider_named("dry-run", Arc::new(DryRunProvider::new()))
                .notifier(notifier)
                .settings(settings.clone())
                .build()
                .unwrap()
        };
        let posted = Arc::new(Mutex::new(0));
        let doomed = Arc::new(engine(Arc::new(DiesAfterPosting {
            inner: Arc::new(h.notifier.clone()),
            posted: posted.clone(),
        })));
        let req = submit(&h).await;

        // The first process posts the approval message and the DM, then dies before marking
        // either job done.
        let run = tokio::spawn({
            let doomed = doomed.clone();
            async move {
                loop {
                    let _ = doomed.run_due(20).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while *posted.lock().unwrap() < 1 {
            assert!(
                Instant::now() < deadline,
                "{kind}: {:#?}",
                h.slack.messages()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        run.abort();
        let _ = run.await;
        assert_eq!(h.slack.calls_to("chat.postMessage").len(), 1, "{kind}");

        // A new process takes the jobs over once their leases lapse.
        // A new process: a notifier of its own (nothing learnt by the dead one).
        let fresh = slack_adapter::SlackNotifier::new(&h.config)
            .with_clock(h.clock.clone() as Arc<dyn access_core::ports::Clock>);
        let successor = engine(Arc::new(fresh));
        run_retries(&h, &successor).await;

        assert_posted_once(&h, &req, kind).await;
        assert_eq!(
            h.slack.calls_to("chat.postMessage").len(),
            2,
            "{kind}: the successor looked instead of posting"
        );
    }
}

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An install without the `*:history` scopes cannot look: the retry posts again (at-least-once)
/// and the log says why, once.
#[tokio::test]
async fn without_history_scopes_a_retry_posts_again_and_says_why() {
    let logs = LogBuf::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    for db in databases().await {
        let kind = db.kind;
        let h = harness_on(
            db,
            default_resources(),
            |c| c.http_timeout = Duration::from_secs(1),
            Arc::new(DryRunProvider::new()),
        )
        .await;
        h.slack.set_token_scopes(
            BOT_TOKEN,
            &[
                "commands",
                "chat:write",
                "im:write",
                "channels:read",
                "groups:read",
            ],
        );
        // The approval message lands, its answer is lost.
        h.slack.fail_next(
            "chat.postMessage",
            Fault::LoseAnswer(Duration::from_secs(3)),
        );
        submit(&h).await;
        run_retries(&h, &h.engine).await;

        assert_eq!(
            h.slack.messages_in(APPROVALS).len(),
            2,
            "{kind}: posted again, not lost"
        );
        assert_eq!(h.slack.dms_to(ALICE).len(), 1, "{kind}");
        // The approval channel is configured by name: the retry first looks its id up.
        let refused: Vec<_> = h
            .slack
            .calls()
            .into_iter()
            .filter(|c| c.error.as_deref() == Some("missing_scope"))
            .collect();
        assert_eq!(
            refused.len(),
            1,
            "{kind}: the retry tried to look: {refused:?}"
        );
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let warned: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("cannot check Slack for an earlier post"))
            .collect();
        assert!(
            warned.iter().any(|l| l.contains("reason=missing_scope")),
            "{kind}: {text}"
        );
        assert_eq!(
            warned.len(),
            1,
            "{kind}: logged once per reason: {warned:#?}"
        );
        logs.0.lock().unwrap().clear();
    }
}

/// The look-up follows `next_cursor` through a busy window, respects `oldest`, and gives up
/// (unsure, so the caller posts) past its page budget.
#[tokio::test]
async fn the_look_up_pages_through_history_within_the_window() {
    let slack = testkit::slack::FakeSlack::start().await;
    slack.add_channel("C0BUSY", "busy");
    let config = slack_adapter::SlackConfig::new(slack.token(), SECRET, &slack.api_url());
    let api = slack_adapter::api::SlackApi::new(&config);
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let posted = api
        .post_message_tagged("C0BUSY", "tagged", &serde_json::json!([]), Some("job-1"))
        .await
        .unwrap();
    // Newer messages push the tagged one to the third page of 50.
    for i in 0..120 {
        api.post_message_tagged(
            "C0BUSY",
            &format!("m{i}"),
            &serde_json::json!([]),
            Some("other"),
        )
        .await
        .unwrap();
    }
    use slack_adapter::api::Tagged;
    assert_eq!(
        api.find_tagged("C0BUSY", before, "job-1").await.unwrap(),
        Tagged::Found(posted.ts.clone())
    );
    let history = slack.calls_to("conversations.history");
    assert_eq!(history.len(), 3, "followed the cursor");
    assert!(
        history
            .iter()
            .all(|c| c.args["include_all_metadata"] == "true")
    );
    assert_eq!(
        api.find_tagged("C0BUSY", before, "job-2").await.unwrap(),
        Tagged::NotFound
    );
    // A window that starts after the message does not show it.
    let ts: f64 = posted.ts.parse().unwrap();
    let after = chrono::DateTime::from_timestamp_micros((ts * 1e6) as i64 + 1).unwrap();
    let n = slack.calls_to("conversations.history").len();
    assert_eq!(
        api.find_tagged("C0BUSY", after, "job-1").await.unwrap(),
        Tagged::NotFound
    );
    assert_eq!(slack.calls_to("conversations.history").len(), n + 3);
    // More than 6 pages of 50 newer messages: unsure.
    for i in 0..200 {
        api.post_message_tagged("C0BUSY", &format!("n{i}"), &serde_json::json!([]), None)
            .await
            .unwrap();
    }
    assert_eq!(
        api.find_tagged("C0BUSY", before, "job-1").await.unwrap(),
        Tagged::Unsure
    );
    // History of a channel the token may not read.
    slack.set_token_scopes(slack.token(), &["chat:write"]);
    let e = api
        .find_tagged("C0BUSY", before, "job-1")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("missing_scope"));
}
