//! Statements and commits per operation, counted by the store's own counters
//! ([`store_sqlx::SqlStore::stats`]): one `request` slash command with its notification jobs,
//! and one revocation, each driven end to end through the real path (signed request → router →
//! inbox job → engine → notification jobs → SlackNotifier → the fake Slack), on SQLite and on
//! PostgreSQL (`TEST_DATABASE_URL`).
//!
//! Counts, not timings: the figures do not depend on the machine's load. The scheduler is played
//! by the test, exactly as `gatehouse_runtime::scheduler::JobScheduler` behaves when woken (passes
//! of `run_due` until one claims nothing, then `next_job_at`), once per batch of wake-ups, so the
//! jobs the engine hands to the scheduler are counted too. The test reads the database only
//! through a second store, whose statements are not counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use access_core::engine::Engine;
use access_core::jobs::JobStatus;
use access_core::ports::{Clock, JobFilter, JobQueue, JobWaker, MessageRefs, RequestStore, Store};
use access_core::providers::DryRunProvider;
use access_core::{GrantStatus, RequestStatus};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use serde_json::json;
use slack_adapter::{SlackConfig, SlackNotifier};
use store_sqlx::{SqlStore, StoreStats};
use testkit::db::TestDb;
use testkit::provider::ManualClock;
use testkit::slack::{FakeSlack, FakeUser};
use tower::ServiceExt;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const ALICE: &str = "UALICE";
const APPROVER1: &str = "UAPPROVER1";
const APPROVER2: &str = "UAPPROVER2";
const APPROVALS: &str = "C0APPROVALS";

/// Targets of issue 13: one `request` command with its jobs, one revocation.
const REQUEST_STATEMENTS: u64 = 8;
const REQUEST_COMMITS: u64 = 3;
const REVOCATION_COMMITS: u64 = 3;

/// Remembers that the engine woke the scheduler, by the rule of
/// `gatehouse_runtime::scheduler::SchedulerWaker`: a job due before the sleeping scheduler's next
/// look wakes it (any job does while it is busy or has not slept yet).
#[derive(Debug)]
struct RecordingWaker {
    woken: AtomicBool,
    /// Unix microseconds (engine clock) of the simulated scheduler's next look.
    looks_next_us: AtomicI64,
}

impl Default for RecordingWaker {
    fn default() -> Self {
        Self {
            woken: AtomicBool::new(false),
            looks_next_us: AtomicI64::new(i64::MAX),
        }
    }
}

impl JobWaker for RecordingWaker {
    fn job_enqueued(&self, run_at: DateTime<Utc>) {
        if run_at.timestamp_micros() < self.looks_next_us.load(Ordering::SeqCst) {
            self.woken.store(true, Ordering::SeqCst);
        }
    }
}

/// The scheduler's `max_idle` (its default).
const MAX_IDLE: chrono::Duration = chrono::Duration::seconds(30);

struct Rig {
    slack: FakeSlack,
    engine: Arc<Engine>,
    app: axum::Router,
    store: SqlStore,
    /// The test's own view of the database (its statements are not counted).
    observer: SqlStore,
    waker: Arc<RecordingWaker>,
    _db: TestDb,
}

async fn rig(db: TestDb) -> Rig {
    let slack = FakeSlack::start().await;
    slack.add_user(FakeUser::new(ALICE, "alice").email("alice@example.com"));
    slack.add_user(FakeUser::new(APPROVER1, "approver1").email("a1@example.com"));
    slack.add_user(FakeUser::new(APPROVER2, "approver2").email("a2@example.com"));
    slack.add_channel(APPROVALS, "vpn-access-approvals");
    slack.add_channel("C0GENERAL", "general");
    let resource = |id: &str, approval: serde_json::Value| -> access_core::Resource {
        serde_json::from_value(json!({
            "id": id, "description": format!("{id} for tests"), "provider": "dry-run",
            "durations": {"default": "4h", "min": "1m", "max": "24h"},
            "eligibility": [], "approval": approval,
        }))
        .unwrap()
    };
    let resources = vec![
        resource(
            "dev-network",
            json!({"mode": "approvers", "approvers": {"users": [APPROVER1, APPROVER2]}, "required": 1}),
        ),
        resource("gcp-access", json!({"mode": "auto"})),
    ];
    let store = SqlStore::connect(&db.url).await.unwrap();
    let observer = SqlStore::connect(&db.url).await.unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let mut config = SlackConfig::new(slack.token(), SECRET, &slack.api_url());
    config.http_timeout = Duration::from_secs(5);
    // A generous budget: the answer always goes in the acknowledgement, however loaded the
    // machine (a late answer would be posted by the job instead, which is not what is counted).
    config.ack_budget = Duration::from_secs(20);
    let notifier = SlackNotifier::new(&config).with_clock(clock.clone() as Arc<dyn Clock>);
    let waker = Arc::new(RecordingWaker::default());
    let engine = Engine::builder(Arc::new(store.clone()) as Arc<dyn Store>, clock.clone())
        .resources(resources)
        .provider_named("dry-run", Arc::new(DryRunProvider::new()))
        .notifier(Arc::new(notifier))
        .waker(waker.clone())
        // The server's default per-person limits (issue 17): their figures are read in the same
        // statement as the live grant and pending request, so the request still costs 8.
        .settings(access_core::engine::EngineSettings {
            request_limits: access_core::limits::RequestLimits::default(),
            ..Default::default()
        })
        .build()
        .unwrap();
    let engine = Arc::new(engine);
    let app = slack_adapter::router(engine.clone(), config);
    Rig {
        slack,
        engine,
        app,
        store,
        observer,
        waker,
        _db: db,
    }
}

impl Rig {
    /// A signed slash command; returns its answer (the acknowledgement's text, or what followed
    /// a receipt on the response_url).
    async fn command(&self, user: &str, text: &str) -> String {
        let url = self.slack.response_url();
        let trigger = self.slack.trigger_id();
        let body = testkit::slack::SlashCommand::new("/access", user, text, &url, &trigger).body();
        let mut req = Request::post("/slack/commands")
            .header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in testkit::slack::signed_headers(SECRET, &body) {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let ack = v["text"].as_str().unwrap_or_default();
        self.slack
            .command_answer(ack, &url, Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("receipt {ack:?} but nothing followed"))
    }

    /// Waits (generously) until no job is running: the work started by an operation in this
    /// process is finished.
    async fn quiet(&self) {
        for _ in 0..3000 {
            let running = self
                .observer
                .jobs(&JobFilter {
                    status: Some(JobStatus::Running),
                    ..Default::default()
                })
                .await
                .unwrap();
            if running.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("jobs still running after 30 s");
    }

    /// Lets the work of an operation finish, playing the scheduler whenever the engine woke it,
    /// as `JobScheduler::run` does: passes of `run_due` until one claims nothing, then
    /// `next_job_at`, again at once if something is due, else to sleep until it is.
    async fn settle(&self) {
        loop {
            self.quiet().await;
            if !self.waker.woken.swap(false, Ordering::SeqCst) {
                return;
            }
            loop {
                self.waker.looks_next_us.store(i64::MAX, Ordering::SeqCst);
                loop {
                    let s = self.engine.run_due(100).await.unwrap();
                    if s.claimed == 0 {
                        break;
                    }
                }
                let now = self.engine.now();
                let next = self.engine.store().next_job_at().await.unwrap();
                let look = match next {
                    Some(at) if at <= now => continue,
                    Some(at) => at.min(now + MAX_IDLE),
                    None => now + MAX_IDLE,
                };
                self.waker
                    .looks_next_us
                    .store(look.timestamp_micros(), Ordering::SeqCst);
                break;
            }
        }
    }
}

async fn databases() -> Vec<TestDb> {
    let mut dbs = vec![TestDb::sqlite()];
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        dbs.push(TestDb::postgres(&url).await);
    }
    dbs
}

#[tokio::test]
async fn a_request_command_with_its_notifications_stays_within_its_statement_budget() {
    for db in databases().await {
        let kind = db.kind;
        let r = rig(db).await;
        // Warm-up (caches that fill once per process: Slack profiles, the audit head): another
        // person's request, settled.
        let ack = r
            .command(APPROVER2, "request dev-network 1h warming up")
            .await;
        assert!(ack.starts_with("Access request submitted"), "{ack}");
        r.settle().await;

        let before: StoreStats = r.store.stats();
        let ack = r
            .command(ALICE, "request dev-network 4h Running database migration")
            .await;
        r.settle().await;
        let cost = r.store.stats() - before;

        assert!(
            ack.starts_with("Access request submitted for dev-network (4 hours)"),
            "{kind}: {ack}"
        );
        // The work really happened: the request, the approvers' message, the requester's DM.
        let mine: Vec<_> = r
            .observer
            .requests(&Default::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|q| q.subject.user_id == ALICE)
            .collect();
        assert_eq!(mine.len(), 1, "{kind}");
        assert_eq!(mine[0].status, RequestStatus::Pending, "{kind}");
        assert!(
            r.slack
                .messages_in(APPROVALS)
                .iter()
                .any(|m| m.all_text().contains("Running database migration")),
            "{kind}: no approval message"
        );
        assert!(
            r.slack
                .dms_to(ALICE)
                .iter()
                .any(|m| m.all_text().contains("waiting for approval")),
            "{kind}: no DM to the requester"
        );
        assert_eq!(
            r.observer.message_refs(mine[0].id).await.unwrap().len(),
            1,
            "{kind}: the approval message is remembered"
        );
        eprintln!(
            "{kind}: request command: {} statements, {} commits",
            cost.statements, cost.commits
        );
        assert!(
            cost.statements <= REQUEST_STATEMENTS && cost.commits <= REQUEST_COMMITS,
            "{kind}: one request command cost {} statements and {} commits \
             (budget {REQUEST_STATEMENTS} statements, {REQUEST_COMMITS} commits)",
            cost.statements,
            cost.commits
        );
    }
}

#[tokio::test]
async fn a_revocation_stays_within_its_commit_budget() {
    for db in databases().await {
        let kind = db.kind;
        let r = rig(db).await;
        let ack = r.command(ALICE, "request gcp-access 2h deploy").await;
        assert!(ack.contains("approved"), "{kind}: {ack}");
        r.settle().await;
        let grant = r
            .observer
            .grants(&Default::default())
            .await
            .unwrap()
            .into_iter()
            .next()
            .expect("a grant");
        assert_eq!(grant.status, GrantStatus::Active, "{kind}");

        let before = r.store.stats();
        let ack = r.command(ALICE, "revoke gcp-access").await;
        r.settle().await;
        let cost = r.store.stats() - before;

        assert!(ack.contains("revoked"), "{kind}: {ack}");
        let g = r.observer.grant(grant.id).await.unwrap().unwrap();
        assert_eq!(g.status, GrantStatus::Revoked, "{kind}");
        assert!(
            r.slack
                .dms_to(ALICE)
                .iter()
                .any(|m| m.all_text().contains("has been revoked, as you asked")),
            "{kind}: no DM confirming the revocation"
        );
        eprintln!(
            "{kind}: revoke command: {} statements, {} commits",
            cost.statements, cost.commits
        );
        // One commit stores the command (as for every command); the revocation is the rest.
        assert!(
            cost.commits <= 1 + REVOCATION_COMMITS,
            "{kind}: one revoke command cost {} commits (budget 1 to store the command + \
             {REVOCATION_COMMITS} for the revocation)",
            cost.commits
        );
    }
}
