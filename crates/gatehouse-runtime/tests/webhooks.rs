//! Event webhooks end to end below the HTTP server: configuration → composition → engine →
//! job queue → the real signing HTTP client → the testkit's fake receiver, which verifies the
//! signature with its own code. On SQLite and (with `TEST_DATABASE_URL`) PostgreSQL. Time is a
//! manual clock: retries are due after travelling, not sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use access_core::audit::AuditKind;
use access_core::engine::Engine;
use access_core::jobs::{JobKind, JobStatus};
use access_core::ports::{AuditFilter, JobFilter, Provider};
use access_core::request::RequestKind;
use access_core::webhooks::WebhookStore;
use access_core::{Actor, Email, Subject};
use chrono::Duration;
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::{App, Config};
use testkit::db::{TestDb, backends};
use testkit::provider::{ManualClock, RecordingNotifier, TestProvider};
use testkit::submission::{Ask, SubmitTyped};
use testkit::webhook_receiver::{FakeWebhookReceiver, Fault};

const SECRET: &str = "whsec_test_0123456789";
const OTHER_SECRET: &str = "whsec_other_abcdef";

fn config(siem_url: &str, extra: &str, audit_url: &str) -> String {
    format!(
        r#"
[server]
call_timeout_secs = 5

[[resources]]
id = "auto"
provider = "test"
min_duration = "1s"
default_duration = "1h"
max_duration = "8h"
approval = {{ mode = "auto" }}

[[resources]]
id = "guarded"
provider = "test"
default_duration = "1h"
max_duration = "8h"
approval = {{ mode = "approvers", approvers = {{ users = ["UAPP1"] }}, required = 1 }}

[[webhooks]]
id = "siem"
url = "{siem_url}"
secret_env = "SIEM_SECRET"
{extra}

[[webhooks]]
id = "audit-copy"
url = "{audit_url}"
secret_env = "AUDIT_COPY_SECRET"
events = ["webhook_disabled", "webhook_enabled", "access_granted"]
"#
    )
}

struct Harness {
    engine: Arc<Engine>,
    app: App,
    clock: Arc<ManualClock>,
    kind: &'static str,
    db: TestDb,
}

async fn build(db: &TestDb, clock: Arc<ManualClock>, config_text: &str) -> App {
    let provider = Arc::new(TestProvider::new());
    let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    providers.insert("test".into(), provider);
    let mut env = Env {
        database_url: db.url.clone(),
        ..Env::default()
    };
    env.vars.insert("SIEM_SECRET".into(), SECRET.into());
    env.vars
        .insert("AUDIT_COPY_SECRET".into(), OTHER_SECRET.into());
    App::build(
        Config::from_toml(config_text, "test.toml").unwrap(),
        env,
        Overrides {
            providers,
            notifier: Some(Arc::new(RecordingNotifier::new())),
            clock: Some(clock),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn harness(db: TestDb, config_text: &str) -> Harness {
    let clock = Arc::new(ManualClock::starting_now());
    let app = build(&db, clock.clone(), config_text).await;
    Harness {
        engine: app.engine.clone(),
        app,
        clock,
        kind: db.kind,
        db,
    }
}

fn person(user: &str) -> Subject {
    Subject {
        team_id: "T1".into(),
        user_id: user.into(),
        email: Some(Email::parse(&format!("{}@example.com", user.to_lowercase())).unwrap()),
        name: user.into(),
    }
}

fn ask(user: &str, resource: &str) -> Ask {
    Ask {
        subject: person(user),
        resource: resource.into(),
        duration: Some("30m".into()),
        justification: "investigate the incident".into(),
        kind: RequestKind::New,
    }
}

impl Harness {
    async fn run(&self) {
        self.engine.drain(50).await.unwrap();
    }

    /// Every audit event in the chain: (id, seq, kind).
    async fn chain(&self) -> Vec<(String, i64, String)> {
        self.engine
            .store()
            .audit_events(&AuditFilter {
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    e.record.id.to_string(),
                    e.seq,
                    e.record.kind.as_str().to_string(),
                )
            })
            .collect()
    }

    async fn state(&self, id: &str) -> access_core::webhooks::WebhookState {
        self.app.store.webhook_state(id).await.unwrap().unwrap()
    }

    async fn pending_delivery_jobs(&self, webhook: &str) -> Vec<access_core::jobs::Job> {
        self.engine
            .store()
            .jobs(&JobFilter {
                status: Some(JobStatus::Pending),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|j| matches!(&j.kind, JobKind::DeliverWebhook { webhook: w } if w == webhook))
            .collect()
    }
}

fn accepted(r: &FakeWebhookReceiver) -> Vec<(String, i64, String)> {
    r.accepted_events()
        .into_iter()
        .map(|e| (e.id, e.seq, e.kind))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_events_arrive_signed_in_chain_order() {
    for db in backends().await {
        let siem = FakeWebhookReceiver::start(SECRET).await;
        let copy = FakeWebhookReceiver::start(OTHER_SECRET).await;
        let h = harness(db, &config(&siem.url, "", &copy.url)).await;
        let k = h.kind;

        // An auto-approved request and one approved by a person: requested, approved, granted…
        h.engine.submit_typed(ask("U1", "auto")).await.unwrap();
        let r = h.engine.submit_typed(ask("U2", "guarded")).await.unwrap();
        h.run().await;
        h.engine
            .approve(
                r.id,
                Actor::User {
                    team_id: "T1".into(),
                    user_id: "UAPP1".into(),
                    name: "UAPP1".into(),
                },
            )
            .await
            .unwrap();
        h.run().await;

        let chain = h.chain().await;
        assert!(chain.len() >= 6, "{k}: {chain:?}");
        assert_eq!(accepted(&siem), chain, "{k}: every event, in order, once");

        let attempts = siem.attempts();
        assert!(!attempts.is_empty());
        for a in &attempts {
            assert!(a.signature_ok, "{k}: the receiver's own check verifies");
            assert_eq!(a.status, 200);
            assert_eq!(a.headers["x-gatehouse-webhook-id"], "siem");
            assert_eq!(a.headers["content-type"], "application/json");
            assert!(a.headers.contains_key("x-gatehouse-delivery-id"));
            assert_eq!(
                a.headers["x-gatehouse-event-count"],
                a.events.len().to_string().as_str()
            );
            // Signed at the engine's clock, which is what a receiver's replay window checks.
            let t = a.timestamp.unwrap();
            assert!((h.engine.now().timestamp() - t).abs() <= 5, "{k}");
            // The documented Rust snippet's verifier agrees; a tampered body or a stale
            // timestamp would not pass.
            let header = a.headers["x-gatehouse-signature"].to_str().unwrap();
            assert_eq!(
                webhooks::verify(SECRET.as_bytes(), header, &a.body, t, 300),
                Ok(())
            );
            let mut tampered = a.body.to_vec();
            let at = tampered.iter().position(|b| *b == b'U').unwrap();
            tampered[at] = b'X';
            assert!(!siem.would_accept(header, &tampered), "{k}");
            assert!(webhooks::verify(SECRET.as_bytes(), header, &tampered, t, 300).is_err());
            assert!(webhooks::verify(SECRET.as_bytes(), header, &a.body, t + 301, 300).is_err());
            assert!(
                !copy.would_accept(header, &a.body),
                "another webhook's secret"
            );
        }
        // The body carries the envelope.
        let body: serde_json::Value = serde_json::from_slice(&attempts[0].body).unwrap();
        assert_eq!(body["version"], 1);
        assert_eq!(body["webhook"], "siem");
        assert_eq!(body["events"][0]["kind"], "access_requested");
        assert_eq!(body["events"][0]["subject"], "T1/U1");
        assert_eq!(body["events"][0]["resource"], "auto");
        assert!(body["events"][0]["hash"].as_str().is_some());

        // The filtered webhook got only what it asked for.
        let kinds: Vec<String> = copy.accepted_events().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec!["access_granted", "access_granted"], "{k}");
        let st = h.state("audit-copy").await;
        assert_eq!(
            st.cursor_seq,
            chain.last().unwrap().1,
            "{k}: skipped kinds move the cursor"
        );

        let st = h.state("siem").await;
        assert!(st.enabled);
        assert_eq!(st.cursor_seq, chain.last().unwrap().1);
        assert_eq!(st.consecutive_failures, 0);
        assert!(h.pending_delivery_jobs("siem").await.is_empty(), "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_deliveries_are_retried_without_losing_or_doubling_events() {
    for db in backends().await {
        let siem = FakeWebhookReceiver::start(SECRET).await;
        let copy = FakeWebhookReceiver::start(OTHER_SECRET).await;
        let h = harness(
            db,
            &config(&siem.url, "timeout_secs = 1\nbatch_size = 2", &copy.url),
        )
        .await;
        let k = h.kind;

        siem.fail_next(1, Fault::Status(503));
        h.engine.submit_typed(ask("U1", "auto")).await.unwrap();
        h.run().await;
        let st = h.state("siem").await;
        assert_eq!(st.consecutive_failures, 1, "{k}");
        assert_eq!(st.last_error.as_deref(), Some("HTTP 503: receiver failure"));
        assert!(siem.accepted_events().is_empty());
        // Events keep being written meanwhile; their jobs wait behind the retrying one.
        h.engine.submit_typed(ask("U2", "auto")).await.unwrap();
        h.run().await;
        assert!(
            siem.accepted_events().is_empty(),
            "{k}: nothing overtakes the retry"
        );

        // 429 with Retry-After: the next attempt waits at least that long.
        siem.fail_next(
            1,
            Fault::RateLimited {
                retry_after_secs: 900,
            },
        );
        h.clock.advance(Duration::minutes(11));
        h.run().await;
        assert_eq!(h.state("siem").await.consecutive_failures, 2, "{k}");
        // The job that failed waits (the ones enqueued after it are held back behind it).
        let waiting = h.pending_delivery_jobs("siem").await;
        let retrying: Vec<_> = waiting.iter().filter(|j| j.attempts > 0).collect();
        assert_eq!(retrying.len(), 1, "{k}: one delivery in flight per webhook");
        let first = retrying[0].run_at;
        assert!(
            first >= h.engine.now() + Duration::seconds(899),
            "{k}: Retry-After honoured: {first} vs {}",
            h.engine.now()
        );
        h.clock.advance(Duration::minutes(14));
        h.run().await;
        assert_eq!(
            h.state("siem").await.consecutive_failures,
            2,
            "{k}: not due yet"
        );

        // A receiver that hangs past the attempt's time limit is a failure too.
        siem.fail_next(1, Fault::Hang(std::time::Duration::from_secs(3)));
        h.clock.advance(Duration::minutes(2));
        h.run().await;
        let st = h.state("siem").await;
        assert_eq!(st.consecutive_failures, 3, "{k}");
        assert!(
            st.last_error
                .as_deref()
                .unwrap()
                .starts_with("no answer in time"),
            "{k}: {:?}",
            st.last_error
        );

        // Then it answers: everything arrives once, in chain order, in batches of two.
        h.clock.advance(Duration::minutes(11));
        h.run().await;
        let chain = h.chain().await;
        assert_eq!(accepted(&siem), chain, "{k}");
        let st = h.state("siem").await;
        assert_eq!(st.consecutive_failures, 0);
        assert!(st.last_error.is_none());
        assert!(
            siem.attempts()
                .iter()
                .filter(|a| a.status == 200)
                .all(|a| a.events.len() <= 2),
            "{k}: batch_size"
        );
        assert!(h.pending_delivery_jobs("siem").await.is_empty(), "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_failing_repeatedly_is_disabled_until_an_admin_enables_it() {
    for db in backends().await {
        let siem = FakeWebhookReceiver::start(SECRET).await;
        let copy = FakeWebhookReceiver::start(OTHER_SECRET).await;
        let text = config(&siem.url, "max_failures = 3", &copy.url);
        let h = harness(db, &text).await;
        let k = h.kind;

        siem.fail_next(100, Fault::Status(500));
        h.engine.submit_typed(ask("U1", "auto")).await.unwrap();
        h.run().await;
        for _ in 0..2 {
            h.clock.advance(Duration::minutes(11));
            h.run().await;
        }
        let st = h.state("siem").await;
        assert!(!st.enabled, "{k}: disabled after 3 consecutive failures");
        assert_eq!(st.consecutive_failures, 3);
        assert!(st.disabled_at.is_some());
        assert_eq!(siem.attempts().len(), 3, "{k}");
        assert!(
            h.pending_delivery_jobs("siem").await.is_empty(),
            "{k}: no more attempts"
        );
        // The alert: an audit event (which the other webhook receives), and the state shows
        // in the admin listing.
        let chain = h.chain().await;
        let disabled: Vec<_> = chain.iter().filter(|e| e.2 == "webhook_disabled").collect();
        assert_eq!(disabled.len(), 1, "{k}");
        let event = h
            .engine
            .store()
            .audit_events(&AuditFilter {
                kind: Some(AuditKind::WebhookDisabled),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(event[0].record.details["webhook"], "siem");
        assert_eq!(event[0].record.details["consecutive_failures"], 3);
        assert_eq!(
            event[0].record.details["last_error"],
            "HTTP 500: receiver failure"
        );
        assert!(
            copy.accepted_events()
                .iter()
                .any(|e| e.kind == "webhook_disabled"),
            "{k}"
        );
        let listed = h.engine.webhook_statuses().await.unwrap();
        let siem_status = listed.iter().find(|w| w.id == "siem").unwrap();
        assert_eq!(siem_status.state, "disabled");
        assert_eq!(siem_status.backlog, i64::try_from(chain.len()).unwrap());

        // A restart keeps it disabled and keeps its cursor; new events are not sent.
        let clock = h.clock.clone();
        let app2 = build(&h.db, clock.clone(), &text).await;
        let engine2 = app2.engine.clone();
        assert!(
            !app2
                .store
                .webhook_state("siem")
                .await
                .unwrap()
                .unwrap()
                .enabled,
            "{k}"
        );
        engine2.submit_typed(ask("U2", "auto")).await.unwrap();
        engine2.drain(50).await.unwrap();
        clock.advance(Duration::hours(1));
        engine2.drain(50).await.unwrap();
        assert_eq!(siem.attempts().len(), 3, "{k}: nothing sent while disabled");

        // An admin enables it (the receiver is fixed): it catches up from the kept cursor,
        // every event once and in order, its own disable and enable included.
        siem.heal();
        let admin = Actor::Admin { name: "ops".into() };
        assert_eq!(
            engine2.enable_webhook("siem", &admin).await.unwrap(),
            Some(true)
        );
        assert_eq!(
            engine2.enable_webhook("siem", &admin).await.unwrap(),
            Some(false),
            "{k}: already enabled"
        );
        assert_eq!(engine2.enable_webhook("nope", &admin).await.unwrap(), None);
        engine2.drain(50).await.unwrap();
        let chain = h.chain().await;
        assert_eq!(accepted(&siem), chain, "{k}");
        assert!(chain.iter().any(|e| e.2 == "webhook_enabled"));
        let st = app2.store.webhook_state("siem").await.unwrap().unwrap();
        assert!(st.enabled && st.consecutive_failures == 0 && st.disabled_at.is_none());
    }
}
