//! Event webhooks (issue 17, item 6) through the real `gatehouse-server`: a request typed in
//! Slack and approved with a click produces audit events that reach a SIEM-like receiver and a
//! Splunk HEC receiver, signed (checked by the receiver's own code); a failing receiver is
//! retried without losing or doubling events; one that keeps failing is disabled (log line,
//! audit event, `/metrics`), stays disabled across a restart, and is enabled again through the
//! admin API, after which it catches up. On SQLite and (with `TEST_DATABASE_URL`) PostgreSQL.

use std::time::Duration;

use serde_json::Value;
use testkit::db::{TestDb, backends};
use testkit::slack::{FakeSlack, FakeUser};
use testkit::webhook_receiver::{FakeWebhookReceiver, Fault};

use crate::helpers::*;
use crate::story_helpers::*;

const SIEM_SECRET: &str = "whsec_e2e_siem_5f1c0d";
const HEC_SECRET: &str = "whsec_e2e_hec_77aa01";
const HEC_TOKEN: &str = "b6f1c0de-hec-token-e2e";
const DANA: &str = "UDANA";
const APPROVER: &str = "UAPPROVER";
const APPROVALS: &str = "C0APPROVALS";
const APPROVE: &str = "gatehouse_approve";

fn config(siem: &str, hec: &str) -> String {
    format!(
        r#"
[server]
max_idle_secs = 1

[[resources]]
id = "guarded"
provider = "dry-run"
min_duration = "1s"
default_duration = "1h"
max_duration = "8h"
approval = {{ mode = "approvers", approvers = {{ users = ["{APPROVER}"] }} }}

[[webhooks]]
id = "siem"
url = "{siem}"
secret_env = "GATEHOUSE_WEBHOOK_SIEM_SECRET"
max_failures = 3
timeout_secs = 2

[[webhooks]]
id = "splunk"
url = "{hec}"
secret_env = "GATEHOUSE_WEBHOOK_SPLUNK_SECRET"
format = "splunk_hec"
token_env = "SPLUNK_HEC_TOKEN"
events = ["access_requested", "access_granted", "webhook_disabled", "webhook_enabled"]
"#
    )
}

fn env(slack: &FakeSlack) -> Vec<(&'static str, String)> {
    vec![
        ("SLACK_BOT_TOKEN", slack.token().to_string()),
        ("SLACK_SIGNING_SECRET", SIGNING_SECRET.to_string()),
        ("SLACK_API_URL", slack.api_url()),
        ("APPROVAL_CHANNEL", "access-approvals".to_string()),
        ("GATEHOUSE_WEBHOOK_SIEM_SECRET", SIEM_SECRET.to_string()),
        ("GATEHOUSE_WEBHOOK_SPLUNK_SECRET", HEC_SECRET.to_string()),
        ("SPLUNK_HEC_TOKEN", HEC_TOKEN.to_string()),
    ]
}

/// (id, seq, kind) of every audit event, in chain order.
async fn chain(api: &Api) -> Vec<(String, i64, String)> {
    audit_events(api)
        .await
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_string(),
                e["seq"].as_i64().unwrap(),
                e["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn accepted(r: &FakeWebhookReceiver) -> Vec<(String, i64, String)> {
    r.accepted_events()
        .into_iter()
        .map(|e| (e.id, e.seq, e.kind))
        .collect()
}

/// Waits until the receiver has accepted exactly the audit chain, once each, in order.
async fn wait_caught_up(api: &Api, r: &FakeWebhookReceiver, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let want = chain(api).await;
        let got = accepted(r);
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: receiver never caught up\n got: {got:?}\nwant: {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A sample from `/metrics`: the line naming `name` and containing every one of `labels`.
async fn metric(server: &Server, name: &str, labels: &[&str]) -> Option<f64> {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.trim().parse().unwrap())
}

async fn siem_status(api: &Api) -> Value {
    let (status, body) = api.get("/api/webhooks").await;
    assert_eq!(status, 200, "{body}");
    body["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "siem")
        .cloned()
        .unwrap()
}

/// A request typed in Slack and approved with a click; returns when it is active.
async fn request_and_approve(server: &Server, slack: &FakeSlack, api: &Api, why: &str) {
    let (status, ack, _) = slash(
        server,
        slack,
        "/access",
        DANA,
        &format!("request guarded 1h {why}"),
    )
    .await;
    assert_eq!(status, 200, "{ack}");
    let (message, _) = eventually("the approval message", Duration::from_secs(10), || {
        slack
            .messages_in(APPROVALS)
            .into_iter()
            .find(|m| m.all_text().contains(why))
    })
    .await;
    let value = message
        .buttons()
        .into_iter()
        .find(|(a, _)| a == APPROVE)
        .unwrap()
        .1;
    let (status, _) = click(server, slack, APPROVER, APPROVE, &value, &message).await;
    assert_eq!(status, 200);
    api.wait_for(
        &format!("/api/requests/{value}"),
        Duration::from_secs(15),
        |r| r["request"]["status"] == "active",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_reach_webhooks_signed_retried_and_disabled_after_repeated_failures() {
    for db in backends().await {
        webhook_story(&db).await;
    }
}

async fn webhook_story(db: &TestDb) {
    let kind = db.kind;
    let dir = tempfile::tempdir().unwrap();
    let slack = FakeSlack::start().await;
    slack.add_user(FakeUser::new(DANA, "dana").email("dana@example.com"));
    slack.add_user(FakeUser::new(APPROVER, "alice").email("alice@example.com"));
    slack.add_channel(APPROVALS, "access-approvals");
    let siem = FakeWebhookReceiver::start(SIEM_SECRET).await;
    siem.enforce_replay_window(300);
    let hec = FakeWebhookReceiver::start(HEC_SECRET).await;
    let hec_url = hec.hec_url(HEC_TOKEN);
    let config = write_config(dir.path(), &config(&siem.url, &hec_url));
    let opts = ServerOptions {
        config: &config,
        database_url: &db.url,
        admin_token: Some(ADMIN_TOKEN),
        extra_env: env(&slack),
    };
    let server = Server::start(&opts, dir.path());
    let api = Api::new(&server, Some(ADMIN_TOKEN));

    // --- Delivery: a Slack request and its approval reach both receivers, signed ------------
    request_and_approve(&server, &slack, &api, "rotate the TLS certificates").await;
    wait_caught_up(&api, &siem, &format!("{kind}: first delivery")).await;
    let kinds: Vec<String> = chain(&api).await.into_iter().map(|e| e.2).collect();
    for k in ["access_requested", "access_approved", "access_granted"] {
        assert!(
            kinds.iter().any(|x| x == k),
            "{kind}: {k} missing from {kinds:?}"
        );
    }
    for a in siem.attempts() {
        assert!(a.signature_ok, "{kind}: signature verified by the receiver");
        assert_eq!(
            a.status, 200,
            "{kind}: fresh timestamp within the replay window"
        );
        assert_eq!(a.headers["x-gatehouse-webhook-id"], "siem");
        let header = a.headers["x-gatehouse-signature"]
            .to_str()
            .unwrap()
            .to_string();
        let mut tampered = a.body.to_vec();
        let last = tampered.len() - 2;
        tampered[last] ^= 1;
        assert!(
            !siem.would_accept(&header, &tampered),
            "{kind}: tampered body refused"
        );
    }
    // Splunk HEC: its own envelope and `Authorization: Splunk <token>`, filtered kinds only.
    let (hec_kinds, _) = eventually("HEC events", Duration::from_secs(15), || {
        let k: Vec<String> = hec.accepted_events().into_iter().map(|e| e.kind).collect();
        (k.len() >= 2).then_some(k)
    })
    .await;
    assert_eq!(
        hec_kinds,
        vec!["access_requested", "access_granted"],
        "{kind}"
    );
    let hec_call = &hec.attempts()[0];
    assert_eq!(
        hec_call.headers["authorization"],
        format!("Splunk {HEC_TOKEN}").as_str()
    );
    let first: Value = serde_json::Deserializer::from_slice(&hec_call.body)
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first["sourcetype"], "gatehouse:audit", "{kind}: {first}");
    assert!(first["time"].as_f64().is_some());

    // --- A failure is retried: nothing lost, nothing doubled -------------------------------
    siem.fail_next(1, Fault::Status(503));
    siem.fail_next(
        1,
        Fault::RateLimited {
            retry_after_secs: 1,
        },
    );
    let (status, _, _) = slash(&server, &slack, "/access", DANA, "revoke guarded").await;
    assert_eq!(status, 200);
    wait_caught_up(&api, &siem, &format!("{kind}: after a 503 and a 429")).await;
    assert!(
        siem.attempts().iter().any(|a| a.status == 503)
            && siem.attempts().iter().any(|a| a.status == 429),
        "{kind}"
    );
    assert_eq!(siem_status(&api).await["consecutive_failures"], 0);

    // --- Repeated failures disable it: log, audit event, metric ----------------------------
    siem.fail_next(100, Fault::Status(500));
    request_and_approve(&server, &slack, &api, "second look").await;
    let (disabled, _) = api
        .wait_for("/api/webhooks", Duration::from_secs(30), |b| {
            b["webhooks"].as_array().is_some_and(|w| {
                w.iter()
                    .any(|w| w["id"] == "siem" && w["state"] == "disabled")
            })
        })
        .await;
    let st = disabled["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "siem")
        .unwrap()
        .clone();
    assert_eq!(st["consecutive_failures"], 3, "{kind}: {st}");
    assert_eq!(st["max_failures"], 3);
    assert_eq!(st["last_error"], "HTTP 500: receiver failure");
    assert!(st["backlog"].as_i64().unwrap() > 0, "{kind}: {st}");
    assert_eq!(
        metric(&server, "gatehouse_webhooks_disabled", &[]).await,
        Some(1.0),
        "{kind}"
    );
    let first_log = server.log_text();
    assert!(
        first_log.contains("WEBHOOK DISABLED"),
        "{kind}: the alert is logged"
    );
    let kinds: Vec<String> = chain(&api).await.into_iter().map(|e| e.2).collect();
    assert!(kinds.iter().any(|k| k == "webhook_disabled"), "{kind}");
    // The other webhook hears about it.
    eventually("HEC told of the disabling", Duration::from_secs(15), || {
        hec.accepted_events()
            .iter()
            .any(|e| e.kind == "webhook_disabled")
            .then_some(())
    })
    .await;
    let failed_attempts = siem.attempts().len();

    // --- It stays disabled across a restart -------------------------------------------------
    server.stop();
    let server = Server::start(&opts, dir.path());
    let api = Api::new(&server, Some(ADMIN_TOKEN));
    assert_eq!(siem_status(&api).await["state"], "disabled", "{kind}");
    let (status, _, _) = slash(&server, &slack, "/access", DANA, "revoke guarded").await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        siem.attempts().len(),
        failed_attempts,
        "{kind}: nothing sent while disabled"
    );

    // --- Enabled through the admin API, it catches up ---------------------------------------
    siem.heal();
    let (status, body) = api.post("/api/webhooks/nope/enable", None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "webhook_not_found");
    let (status, body) = api
        .post(
            "/api/webhooks/siem/enable",
            Some(serde_json::json!({"by": "ops-oncall"})),
        )
        .await;
    assert_eq!(status, 200, "{kind}: {body}");
    assert_eq!(body["state"], "enabled");
    let (status, body) = api.post("/api/webhooks/siem/enable", None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "already_enabled");
    wait_caught_up(&api, &siem, &format!("{kind}: catch-up after enable")).await;
    let events = audit_events(&api).await;
    let enabled = events
        .iter()
        .find(|e| e["kind"] == "webhook_enabled")
        .unwrap();
    assert_eq!(enabled["details"]["webhook"], "siem");
    assert_eq!(enabled["actor"]["name"], "ops-oncall", "{enabled}");
    assert_eq!(
        metric(&server, "gatehouse_webhooks_disabled", &[]).await,
        Some(0.0),
        "{kind}"
    );
    let delivered = metric(
        &server,
        "gatehouse_webhook_deliveries_total",
        &["webhook=\"siem\"", "outcome=\"delivered\""],
    )
    .await;
    assert!(
        delivered.is_some_and(|n| n >= 1.0),
        "{kind}: deliveries counted: {delivered:?}"
    );

    // The secrets never reach the log or the database.
    for s in [SIEM_SECRET, HEC_SECRET, HEC_TOKEN] {
        assert!(
            !server.log_text().contains(s) && !first_log.contains(s),
            "{kind}: a secret in the log"
        );
        assert!(
            rows_containing(&raw_rows(&db.url).await, s).is_empty(),
            "{kind}: a secret in the database"
        );
    }
}
