//! Rate limits (issue 17 item 5, docs/rate-limits.md), end to end through Slack against the fake
//! Slack: the per-person request limits (counted in the database, on SQLite and PostgreSQL) on
//! the slash command, DMs and the request form; the per-workspace limit on the Slack endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use access_core::RequestStatus;
use access_core::engine::EngineSettings;
use access_core::limits::RequestLimits;
use access_core::providers::DryRunProvider;
use common::*;
use serde_json::{Value, json};
use slack_adapter::ratelimit::{WorkspaceLimiter, WorkspaceLimits};
use testkit::slack::{self as fake, SlashCommand};

/// The server's defaults: 10 requests an hour, 3 pending.
fn limited() -> EngineSettings {
    EngineSettings {
        request_limits: RequestLimits::default(),
        ..Default::default()
    }
}

fn more_resources() -> Vec<access_core::Resource> {
    let mut r = default_resources();
    r.push(resource("staging-db", approvers(1), json!([])));
    r.push(resource("billing", approvers(1), json!([])));
    r
}

async fn access(h: &Harness, user: &str, text: &str) -> String {
    let (reply, url) = h.command("/access", user, text).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    h.answer(&reply, &url).await
}

fn form(resource: &str) -> Value {
    fake::view_submission_payload(
        ALICE,
        slack_adapter::blocks::MODAL_CALLBACK_ID,
        json!({
            "resource": {"value": {"type": "static_select", "selected_option": {"value": resource}}},
            "duration": {"value": {"type": "plain_text_input", "value": "1h"}},
            "justification": {"value": {"type": "plain_text_input", "value": "from the form"}},
        }),
    )
}

#[tokio::test]
async fn the_eleventh_request_in_an_hour_is_refused_with_the_time_it_can_be_made() {
    for db in databases().await {
        let kind = db.kind;
        let h = harness_with_settings(
            db,
            default_resources(),
            |_| {},
            Arc::new(DryRunProvider::new()),
            limited(),
        )
        .await;
        let first_at = h.engine.now();
        for i in 0..10 {
            let ack = access(&h, ALICE, &format!("request gcp-access 1h deploy {i}")).await;
            assert!(ack.contains("approved"), "{kind}: request {i}: {ack}");
            h.run_jobs().await;
            h.clock.advance(chrono::Duration::minutes(2));
        }
        // Twenty minutes after the first: the first leaves the window 40 minutes from now.
        let retry_at = first_at + chrono::Duration::hours(1);
        let refused = access(&h, ALICE, "request gcp-access 1h one more").await;
        assert!(
            refused.starts_with(
                "You have filed 10 access requests in the last 1 hour, the most allowed."
            ),
            "{kind}: {refused}"
        );
        assert!(
            refused.contains(&format!(
                "You can ask again at {} (in 40m)",
                retry_at.format("%Y-%m-%d %H:%M:%S UTC")
            )),
            "{kind}: {refused}"
        );
        assert_eq!(
            h.requests().await.len(),
            10,
            "{kind}: the refusal stored a request"
        );

        // The same refusal through a DM and through the request form: the limit is the engine's.
        let r = h
            .event(
                "EvLIMIT1",
                fake::message_im_event(ALICE, "request gcp-access 1h from a DM"),
            )
            .await;
        assert_eq!(r.status, 200, "{kind}");
        assert!(
            h.slack
                .wait_until(Duration::from_secs(5), |s| s
                    .dms_to(ALICE)
                    .iter()
                    .any(|m| m.all_text().contains("You have filed 10 access requests")))
                .await,
            "{kind}: no refusal in the DM: {:#?}",
            h.slack.dms_to(ALICE)
        );
        let r = h.interaction(&form("gcp-access")).await;
        assert_eq!(r.json()["response_action"], "errors", "{kind}: {}", r.body);
        assert!(
            r.json()["errors"]["resource"]
                .as_str()
                .unwrap_or_default()
                .contains("You can ask again at"),
            "{kind}: {}",
            r.body
        );
        assert_eq!(h.requests().await.len(), 10, "{kind}");

        // Once the first request has left the window, there is room for one.
        h.clock.set(retry_at);
        let ack = access(&h, ALICE, "request gcp-access 1h one more").await;
        assert!(ack.contains("approved"), "{kind}: {ack}");
        // Somebody else was never limited by Alice's requests.
        let other = access(&h, APPROVER1, "request gcp-access 1h mine").await;
        assert!(other.contains("approved"), "{kind}: {other}");
    }
}

#[tokio::test]
async fn the_fourth_pending_request_is_refused_until_one_is_decided() {
    for db in databases().await {
        let kind = db.kind;
        let h = harness_with_settings(
            db,
            more_resources(),
            |_| {},
            Arc::new(DryRunProvider::new()),
            limited(),
        )
        .await;
        let first_at = h.engine.now();
        for r in ["dev-network", "prod-db", "staging-db"] {
            let ack = access(&h, ALICE, &format!("request {r} 1h migration")).await;
            assert!(
                ack.starts_with("Access request submitted"),
                "{kind}: {r}: {ack}"
            );
            h.run_jobs().await;
            h.clock.advance(chrono::Duration::minutes(1));
        }
        let refused = access(&h, ALICE, "request billing 1h invoices").await;
        assert!(
            refused.starts_with(
                "You already have 3 requests waiting for a decision, the most allowed at once (3)."
            ),
            "{kind}: {refused}"
        );
        // The pending TTL is a day: the oldest times out then at the latest.
        let first_timeout = first_at + chrono::Duration::hours(24);
        assert!(
            refused.contains(&format!(
                "at the latest when the oldest times out at {}",
                first_timeout.format("%Y-%m-%d %H:%M UTC")
            )),
            "{kind}: {refused}"
        );
        let pending = h
            .requests()
            .await
            .into_iter()
            .filter(|r| r.status == RequestStatus::Pending)
            .count();
        assert_eq!(pending, 3, "{kind}");

        // One is withdrawn: room for the fourth.
        let cancelled = access(&h, ALICE, "cancel staging-db").await;
        assert!(cancelled.starts_with("Cancelled"), "{kind}: {cancelled}");
        h.run_jobs().await;
        let ack = access(&h, ALICE, "request billing 1h invoices").await;
        assert!(ack.starts_with("Access request submitted"), "{kind}: {ack}");
    }
}

/// A slash command from `team`.
fn command_from(h: &Harness, team: &str, user: &str, text: &str) -> String {
    let mut c = SlashCommand::new(
        "/access",
        user,
        text,
        &h.slack.response_url(),
        &h.slack.trigger_id(),
    );
    c.team_id = team.to_string();
    c.body()
}

#[tokio::test]
async fn a_flooding_workspace_is_told_to_wait_and_another_is_not_affected() {
    let h = harness_with_settings(
        testkit::db::TestDb::sqlite(),
        default_resources(),
        |c| {
            // Five at once, then one a minute: nothing refills while the test runs.
            c.workspace_limiter = Arc::new(WorkspaceLimiter::new(WorkspaceLimits {
                burst: 5,
                per_minute: 1,
            }));
        },
        Arc::new(DryRunProvider::new()),
        EngineSettings::default(),
    )
    .await;
    let form_type = "application/x-www-form-urlencoded";
    // An unsigned flood naming the other workspace is refused before it can take its budget.
    for _ in 0..20 {
        let body = command_from(&h, "T0OTHER", ALICE, "status");
        let r = h.post_with("/slack/commands", form_type, body, &[]).await;
        assert_eq!(r.status, 401);
    }
    // The flooded workspace: five go through, then a polite refusal in the acknowledgement.
    for i in 0..5 {
        let r = h
            .post(
                "/slack/commands",
                form_type,
                command_from(&h, fake::TEAM_ID, ALICE, "status"),
            )
            .await;
        assert_eq!(r.status, 200);
        assert!(!r.text().contains("too many requests"), "{i}: {}", r.body);
    }
    let r = h
        .post(
            "/slack/commands",
            form_type,
            command_from(&h, fake::TEAM_ID, ALICE, "request gcp-access 1h flood"),
        )
        .await;
    assert_eq!(r.status, 200, "Slack shows a non-200 as a bare failure");
    assert_eq!(r.json()["response_type"], "ephemeral");
    assert!(
        r.text()
            .contains("Gatehouse is receiving too many requests from this workspace right now. Nothing was done; please try again in "),
        "{}",
        r.body
    );
    // Events (Slack retries them) and clicks get a 429 with Retry-After.
    let r = h
        .event("EvFLOOD1", fake::message_im_event(ALICE, "status"))
        .await;
    assert_eq!(r.status, 429);
    // A click is refused the same way; a form keeps its values with the reason.
    let (click, _) = h.click(APPROVER1, "approve", "x", APPROVALS, "1.2").await;
    assert_eq!(click.status, 429);
    let r = h.interaction(&form("gcp-access")).await;
    assert_eq!(r.json()["response_action"], "errors", "{}", r.body);
    assert!(
        r.json()["errors"]["resource"]
            .as_str()
            .unwrap_or_default()
            .contains("too many requests from this workspace"),
        "{}",
        r.body
    );
    // Nothing of it was stored or done.
    h.run_jobs().await;
    assert!(h.requests().await.is_empty());

    // Another workspace has its own budget.
    let r = h
        .post(
            "/slack/commands",
            form_type,
            command_from(&h, "T0OTHER", ALICE, "help"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("Gatehouse: temporary access"),
        "{}",
        r.body
    );
    let mut ev = fake::event_callback("EvOTHER1", fake::message_im_event(ALICE, "help"));
    ev["team_id"] = json!("T0OTHER");
    let r = h
        .post("/slack/events", "application/json", ev.to_string())
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_refused_event_over_socket_mode_is_left_for_slack_to_deliver_again() {
    let h = harness().await;
    let mut config = h.config.clone();
    config.workspace_limiter = Arc::new(WorkspaceLimiter::new(WorkspaceLimits {
        burst: 1,
        per_minute: 1,
    }));
    let handlers = slack_adapter::router::socket_mode_router(h.engine.clone(), config, None);
    let envelope = |id: &str| -> slack_adapter::socket_mode::Envelope {
        serde_json::from_value(json!({
            "envelope_id": id, "type": "events_api", "accepts_response_payload": false,
            "payload": fake::event_callback(id, fake::message_im_event(ALICE, "status")),
        }))
        .unwrap()
    };
    let first = slack_adapter::socket_mode::dispatch(&handlers, &envelope("Ev1")).await;
    assert_eq!(first.map(|a| a.envelope_id).as_deref(), Some("Ev1"));
    let second = slack_adapter::socket_mode::dispatch(&handlers, &envelope("Ev2")).await;
    assert!(second.is_none(), "acknowledged: {second:?}");
    h.run_jobs().await;
}
