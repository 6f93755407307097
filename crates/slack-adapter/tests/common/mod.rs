//! Test harness: a real engine over a temporary SQLite store, the dry-run provider, the
//! SlackNotifier and router pointed at the fake Slack, and signed requests sent with `oneshot`.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use access_core::engine::{Engine, EngineBuilder};
use access_core::ports::{Clock, Provider, Store};
use access_core::providers::DryRunProvider;
use access_core::{AccessRequest, RequestId, RequestStatus, Resource};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use slack_adapter::{SlackConfig, SlackNotifier};
use testkit::db::TestDb;
use testkit::provider::ManualClock;
use testkit::slack::{FakeSlack, FakeUser};
use tower::ServiceExt;

pub const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const ALICE: &str = "UALICE";
pub const BOB_NO_EMAIL: &str = "UBOB";
pub const APPROVER1: &str = "UAPPROVER1";
pub const APPROVER2: &str = "UAPPROVER2";
pub const MALLORY: &str = "UMALLORY";
pub const APPROVALS: &str = "C0APPROVALS";

pub fn resource(id: &str, approval: Value, eligibility: Value) -> Resource {
    serde_json::from_value(json!({
        "id": id, "description": format!("{id} for tests"), "provider": "dry-run",
        "durations": {"default": "4h", "min": "1m", "max": "24h"},
        "eligibility": eligibility, "approval": approval,
    }))
    .unwrap()
}

pub fn approvers(required: u32) -> Value {
    json!({"mode": "approvers", "approvers": {"users": [APPROVER1, APPROVER2]}, "required": required})
}

pub fn default_resources() -> Vec<Resource> {
    vec![
        resource("dev-network", approvers(1), json!([])),
        resource("gcp-access", json!({"mode": "auto"}), json!([])),
        resource("prod-db", approvers(2), json!([])),
        resource(
            "restricted",
            json!({"mode": "auto"}),
            json!([{"email_domain": ["other.example"]}]),
        ),
    ]
}

pub struct Harness {
    pub slack: FakeSlack,
    pub engine: Arc<Engine>,
    pub app: Router,
    pub config: SlackConfig,
    pub notifier: SlackNotifier,
    pub clock: Arc<ManualClock>,
    _db: TestDb,
}

pub async fn harness() -> Harness {
    harness_with(default_resources(), |_| {}).await
}

pub async fn harness_with(
    resources: Vec<Resource>,
    tweak: impl FnOnce(&mut SlackConfig),
) -> Harness {
    harness_full(resources, tweak, Arc::new(DryRunProvider::new())).await
}

/// With a provider of the test's choosing, registered as `dry-run`.
pub async fn harness_full(
    resources: Vec<Resource>,
    tweak: impl FnOnce(&mut SlackConfig),
    provider: Arc<dyn Provider>,
) -> Harness {
    harness_on(TestDb::sqlite(), resources, tweak, provider).await
}

/// The databases a concurrency test should run on: SQLite always, PostgreSQL too when
/// `TEST_DATABASE_URL` is set.
pub async fn databases() -> Vec<TestDb> {
    let mut dbs = vec![TestDb::sqlite()];
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        dbs.push(TestDb::postgres(&url).await);
    }
    dbs
}

pub async fn harness_on(
    db: TestDb,
    resources: Vec<Resource>,
    tweak: impl FnOnce(&mut SlackConfig),
    provider: Arc<dyn Provider>,
) -> Harness {
    harness_with_settings(db, resources, tweak, provider, Default::default()).await
}

/// [`harness_on`] with engine settings of the test's choosing (admins, request limits).
pub async fn harness_with_settings(
    db: TestDb,
    resources: Vec<Resource>,
    tweak: impl FnOnce(&mut SlackConfig),
    provider: Arc<dyn Provider>,
    settings: access_core::engine::EngineSettings,
) -> Harness {
    harness_wrapped(db, resources, tweak, provider, settings, |n, b| {
        b.notifier(Arc::new(n))
    })
    .await
}

/// [`harness_with_settings`], with the engine's last touches of the test's choosing (given the
/// SlackNotifier): a notifier around the real one, a waker.
pub async fn harness_wrapped(
    db: TestDb,
    resources: Vec<Resource>,
    tweak: impl FnOnce(&mut SlackConfig),
    provider: Arc<dyn Provider>,
    settings: access_core::engine::EngineSettings,
    finish: impl FnOnce(SlackNotifier, EngineBuilder) -> EngineBuilder,
) -> Harness {
    let slack = FakeSlack::start().await;
    slack.add_user(FakeUser::new(ALICE, "alice").email("alice@example.com"));
    slack.add_user(FakeUser::new(BOB_NO_EMAIL, "bob"));
    slack.add_user(FakeUser::new(APPROVER1, "approver1").email("a1@example.com"));
    slack.add_user(FakeUser::new(APPROVER2, "approver2").email("a2@example.com"));
    slack.add_user(FakeUser::new(MALLORY, "mallory").email("mallory@example.com"));
    slack.add_channel(APPROVALS, "vpn-access-approvals");
    slack.add_channel("C0GENERAL", "general");

    let store: Arc<dyn Store> = Arc::new(store_sqlx::SqlStore::connect(&db.url).await.unwrap());
    let clock = Arc::new(ManualClock::starting_now());
    let mut config = SlackConfig::new(slack.token(), SECRET, &slack.api_url());
    config.http_timeout = Duration::from_secs(5);
    tweak(&mut config);
    let notifier = SlackNotifier::new(&config).with_clock(clock.clone() as Arc<dyn Clock>);
    let builder = Engine::builder(store, clock.clone())
        .resources(resources)
        .provider_named("dry-run", provider)
        .settings(settings);
    let engine = finish(notifier.clone(), builder).build().unwrap();
    let engine = Arc::new(engine);
    let app = slack_adapter::router(engine.clone(), config.clone());
    Harness {
        slack,
        engine,
        app,
        config,
        notifier,
        clock,
        _db: db,
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub body: String,
    pub elapsed: Duration,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The `text` of a JSON answer.
    pub fn text(&self) -> String {
        self.json()
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }
}

impl Harness {
    /// POSTs `body` signed now with the right secret.
    pub async fn post(&self, path: &str, content_type: &str, body: String) -> Reply {
        let headers = testkit::slack::signed_headers(SECRET, &body);
        self.post_with(path, content_type, body, &headers).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        content_type: &str,
        body: String,
        headers: &[(String, String)],
    ) -> Reply {
        let mut req = Request::post(path).header("content-type", content_type);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let started = std::time::Instant::now();
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            body: String::from_utf8_lossy(&bytes).to_string(),
            elapsed: started.elapsed(),
        }
    }

    /// Runs a slash command; returns the acknowledgement and the response_url it carried.
    pub async fn command(&self, command: &str, user: &str, text: &str) -> (Reply, String) {
        let url = self.slack.response_url();
        let trigger = self.slack.trigger_id();
        let body = testkit::slack::SlashCommand::new(command, user, text, &url, &trigger).body();
        (
            self.post("/slack/commands", "application/x-www-form-urlencoded", body)
                .await,
            url,
        )
    }

    /// The command's answer, wherever it went: the acknowledgement's text, or, when the
    /// acknowledgement was a receipt (the profile had to be read from Slack first), the text
    /// posted to its response_url.
    pub async fn answer(&self, reply: &Reply, url: &str) -> String {
        let ack = reply.text();
        self.slack
            .command_answer(&ack, url, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("receipt {ack:?} but nothing followed on {url}"))
    }

    /// Runs a slash command; returns its answer ([`Harness::answer`]) and its response_url.
    pub async fn ask(&self, command: &str, user: &str, text: &str) -> (String, String) {
        let (reply, url) = self.command(command, user, text).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{command} {text}: {}",
            reply.body
        );
        (self.answer(&reply, &url).await, url)
    }

    pub async fn interaction(&self, payload: &Value) -> Reply {
        self.post(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            testkit::slack::interaction_body(payload),
        )
        .await
    }

    pub async fn event(&self, event_id: &str, event: Value) -> Reply {
        let body = testkit::slack::event_callback(event_id, event).to_string();
        self.post("/slack/events", "application/json", body).await
    }

    /// Clicks a button on a channel message; returns the click's response_url.
    pub async fn click(
        &self,
        user: &str,
        action_id: &str,
        value: &str,
        channel: &str,
        ts: &str,
    ) -> (Reply, String) {
        let url = self.slack.response_url();
        let p = testkit::slack::block_actions_payload(
            user,
            action_id,
            value,
            channel,
            ts,
            &url,
            &self.slack.trigger_id(),
        );
        (self.interaction(&p).await, url)
    }

    pub async fn requests(&self) -> Vec<AccessRequest> {
        self.engine
            .store()
            .requests(&Default::default())
            .await
            .unwrap()
    }

    pub async fn request(&self, id: RequestId) -> AccessRequest {
        self.engine.store().request(id).await.unwrap().unwrap()
    }

    /// Waits until the store holds a request for `resource` (work continues after the ack).
    pub async fn wait_request(&self, resource: &str) -> AccessRequest {
        for _ in 0..500 {
            if let Some(r) = self
                .requests()
                .await
                .into_iter()
                .find(|r| r.resource.as_str() == resource)
            {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no request for {resource} appeared");
    }

    pub async fn wait_status(&self, id: RequestId, status: RequestStatus) -> AccessRequest {
        for _ in 0..500 {
            let r = self.request(id).await;
            if r.status == status {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "request {id} never became {status}: {:?}",
            self.request(id).await.status
        );
    }

    /// Runs every due job (notifications, provisioning), after the work this process runs on
    /// its own (a command's job and the notifications it caused) is finished.
    pub async fn run_jobs(&self) {
        self.wait_running().await;
        self.engine.drain(20).await.unwrap();
        self.wait_running().await;
    }

    /// Waits (up to 10 s) until no job is running.
    pub async fn wait_running(&self) {
        let running = access_core::ports::JobFilter {
            status: Some(access_core::jobs::JobStatus::Running),
            ..Default::default()
        };
        for _ in 0..1000 {
            if self.engine.store().jobs(&running).await.unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("jobs still running after 10 s");
    }

    pub async fn wait_responses(&self, url: &str, n: usize) -> Vec<Value> {
        let ok = self
            .slack
            .wait_until(Duration::from_secs(5), |s| s.responses(url).len() >= n)
            .await;
        assert!(
            ok,
            "response_url got {} posts, wanted {n}",
            self.slack.responses(url).len()
        );
        self.slack.responses(url)
    }

    /// The approval message of a request in the approvals channel.
    pub fn approval_message(&self, id: RequestId) -> testkit::slack::FakeMessage {
        self.slack
            .messages_in(APPROVALS)
            .into_iter()
            .find(|m| {
                m.buttons().iter().any(|(_, v)| v == &id.to_string())
                    || m.all_text().contains(&id.to_string())
            })
            .unwrap_or_else(|| panic!("no approval message for {id}: {:#?}", self.slack.messages()))
    }
}

/// [`harness_on`] with engine settings of the test's choosing (a security channel for
/// break-glass notices) and the dry-run provider.
pub async fn harness_with_security(
    db: TestDb,
    resources: Vec<Resource>,
    settings: access_core::engine::EngineSettings,
) -> Harness {
    harness_with_settings(
        db,
        resources,
        |_| {},
        Arc::new(DryRunProvider::new()),
        settings,
    )
    .await
}
