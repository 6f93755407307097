//! The Slack adapter end to end inside one process: signed requests into the router, a real
//! engine over SQLite with the dry-run provider, and the SlackNotifier talking to the fake Slack.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use access_core::RequestStatus;
use access_core::notification::{DeliveredSecret, GrantSummary, Notification, RequestSummary};
use access_core::ports::{Notifier, NotifyContext, NotifyError};
use axum::http::StatusCode;
use common::*;
use serde_json::{Value, json};
use slack_adapter::blocks::action;
use testkit::slack::{self as fake, Fault};

const FORM: &str = "application/x-www-form-urlencoded";

// ------------------------------------------------------------------------------------------------
// Signatures and limits

#[tokio::test]
async fn signatures_are_checked_before_anything_happens() {
    let h = harness().await;
    let url = h.slack.response_url();
    let body =
        fake::SlashCommand::new("/access", ALICE, "request gcp-access 4 reason", &url, "t").body();
    let now = fake::now_ts();

    let wrong = fake::signed_headers_at("not-the-secret", &body, now);
    let stale = fake::signed_headers_at(SECRET, &body, now - 301);
    let future = fake::signed_headers_at(SECRET, &body, now + 301);
    let missing: Vec<(String, String)> = vec![];
    let only_ts = vec![("x-slack-request-timestamp".to_string(), now.to_string())];
    let garbage = vec![
        ("x-slack-request-timestamp".to_string(), now.to_string()),
        ("x-slack-signature".to_string(), "v0=nothex".to_string()),
    ];
    for (name, headers) in [
        ("wrong secret", wrong.to_vec()),
        ("stale", stale.to_vec()),
        ("future", future.to_vec()),
        ("missing", missing),
        ("only timestamp", only_ts),
        ("garbage", garbage),
    ] {
        for path in ["/slack/commands", "/slack/interactions", "/slack/events"] {
            let r = h.post_with(path, FORM, body.clone(), &headers).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name} on {path}");
        }
    }
    // A captured request replayed later: its signature is valid but its timestamp is old.
    let captured = fake::signed_headers_at(SECRET, &body, now - 600);
    assert_eq!(
        h.post_with("/slack/commands", FORM, body.clone(), &captured)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // The signature covers the body: a tampered body fails.
    let good = fake::signed_headers(SECRET, &body);
    let tampered = body.replace("gcp-access", "prod-db");
    assert_eq!(
        h.post_with("/slack/commands", FORM, tampered, &good)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        h.slack.calls().is_empty(),
        "no Slack call for refused requests: {:?}",
        h.slack.calls()
    );
    assert!(h.requests().await.is_empty(), "no request filed");

    // The same body correctly signed goes through.
    let r = h.post_with("/slack/commands", FORM, body, &good).await;
    assert_eq!(r.status, StatusCode::OK);
    let answer = h.answer(&r, &url).await;
    assert!(answer.contains("approved automatically"), "{answer}");
}

#[tokio::test]
async fn missing_signing_secret_refuses_everything() {
    let h = harness_with(default_resources(), |c| {
        c.signing_secret = slack_adapter::config::Secret::default()
    })
    .await;
    let (r, _) = h.command("/access", ALICE, "help").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let h = harness().await;
    let url = h.slack.response_url();
    let body = fake::SlashCommand::new(
        "/access",
        ALICE,
        &format!("request gcp-access 4 {}", "x".repeat(70_000)),
        &url,
        "t",
    )
    .body();
    let r = h.post("/slack/commands", FORM, body).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(h.requests().await.is_empty());
}

#[tokio::test]
async fn url_verification_echoes_the_challenge() {
    let h = harness().await;
    let r = h
        .post(
            "/slack/events",
            "application/json",
            fake::url_verification("3eZbrw1aBm2rZgRNFdxV").to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"challenge": "3eZbrw1aBm2rZgRNFdxV"}));
}

// ------------------------------------------------------------------------------------------------
// Grammar through the surfaces

#[tokio::test]
async fn vpn_access_request_goes_to_approvers_with_buttons() {
    let h = harness().await;
    let (r, url) = h
        .command(
            "/vpn-access",
            ALICE,
            "request dev-network 4 Running database migration",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["response_type"], "ephemeral");
    let answer = h.answer(&r, &url).await;
    assert!(
        answer.starts_with("Access request submitted for dev-network (4 hours)"),
        "{answer}"
    );

    let req = h.wait_request("dev-network").await;
    assert_eq!(req.status, RequestStatus::Pending);
    assert_eq!(req.duration.secs(), 4 * 3600);
    assert_eq!(req.justification.as_str(), "Running database migration");
    assert_eq!(
        req.subject.email.as_ref().unwrap().as_str(),
        "alice@example.com"
    );
    assert_eq!(req.subject.team_id, fake::TEAM_ID);

    h.run_jobs().await;
    let m = h.approval_message(req.id);
    let text = m.all_text();
    for part in [
        "<@UALICE>",
        "dev-network",
        "4 hours",
        "Running database migration",
    ] {
        assert!(text.contains(part), "{part} missing from {text}");
    }
    assert_eq!(
        m.buttons(),
        vec![
            (action::APPROVE.to_string(), req.id.to_string()),
            (action::DENY.to_string(), req.id.to_string())
        ]
    );
    assert!(!m.text.is_empty(), "plain-text fallback");
    // The approval channel was given by name and resolved by Slack; the message ref keeps the id.
    let refs = h.engine.store().message_refs(req.id).await.unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].channel, APPROVALS);

    let dms = h.slack.dms_to(ALICE);
    assert!(
        dms.iter()
            .any(|d| d.all_text().contains("waiting for approval")),
        "{dms:#?}"
    );
}

#[tokio::test]
async fn dm_request_with_quoted_justification_is_auto_approved_and_granted() {
    let h = harness().await;
    let r = h
        .event(
            "Ev1",
            fake::message_im_event(
                ALICE,
                "request gcp-access \"Need to debug CI infrastructure issues\"",
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let req = h.wait_request("gcp-access").await;
    assert_eq!(
        req.justification.as_str(),
        "Need to debug CI infrastructure issues",
        "quotes stripped"
    );
    assert_eq!(req.status, RequestStatus::Approved);
    assert!(
        h.slack
            .wait_until(Duration::from_secs(5), |s| s
                .dms_to(ALICE)
                .iter()
                .any(|m| m.text.contains("approved automatically")))
            .await,
        "{:#?}",
        h.slack.messages()
    );

    h.run_jobs().await;
    assert_eq!(h.request(req.id).await.status, RequestStatus::Active);
    let granted = h
        .slack
        .dms_to(ALICE)
        .into_iter()
        .find(|m| m.all_text().contains("Access granted"))
        .expect("granted DM");
    assert!(
        granted.all_text().contains("This is a dry run"),
        "provider instructions shown: {}",
        granted.all_text()
    );
    assert!(
        h.slack.messages_in(APPROVALS).is_empty(),
        "auto-approved requests need no approvers"
    );
}

#[tokio::test]
async fn slash_status_list_help_and_revoke() {
    let h = harness().await;
    let (r, _) = h.command("/access", ALICE, "status").await;
    assert!(
        r.text().contains("don't have any active access"),
        "{}",
        r.body
    );

    let (t, _) = h.ask("/access", ALICE, "list").await;
    assert!(
        t.contains("*dev-network*")
            && t.contains("*gcp-access*")
            && t.contains("needs 2 approvals"),
        "{t}"
    );
    assert!(
        !t.contains("*restricted*"),
        "ineligible resources are not offered: {t}"
    );
    assert!(t.contains("1 more you are not eligible for"), "{t}");

    let (r, _) = h.command("/access", ALICE, "help").await;
    assert!(
        r.text().contains("`/access request <resource>"),
        "{}",
        r.body
    );

    h.command("/access", ALICE, "request gcp-access 2h deploy")
        .await;
    h.command("/access", ALICE, "request dev-network 1h debug")
        .await;
    h.run_jobs().await;
    let (r, _) = h.command("/access", ALICE, "status").await;
    let t = r.text();
    assert!(t.contains("*gcp-access*: expires in 2h 0m"), "{t}");
    assert!(
        t.contains("*dev-network* for 1 hour") && t.contains("waiting for approval"),
        "{t}"
    );

    let (r, _) = h.command("/access", ALICE, "revoke gcp-access").await;
    // The revocation runs within the command (written claimed by it), so the answer can say so.
    assert!(
        r.text().contains("has been revoked successfully"),
        "{}",
        r.body
    );
    h.run_jobs().await;
    let dms = h.slack.dms_to(ALICE);
    assert!(
        dms.iter()
            .any(|m| m.all_text().contains("has been revoked, as you asked")),
        "{dms:#?}"
    );
    let (r, _) = h.command("/access", ALICE, "revoke gcp-access").await;
    assert_eq!(
        r.text(),
        "You do not have any active access to gcp-access to revoke."
    );

    let (r, _) = h.command("/access", ALICE, "cancel dev-network").await;
    assert_eq!(r.text(), "Cancelled your request for dev-network.");
    h.run_jobs().await;
    let req = h
        .requests()
        .await
        .into_iter()
        .find(|r| r.resource.as_str() == "dev-network")
        .unwrap();
    assert_eq!(req.status, RequestStatus::Cancelled);
    assert!(h.approval_message(req.id).all_text().contains("CANCELLED"));
}

#[tokio::test]
async fn every_malformed_command_gets_a_specific_message() {
    let h = harness().await;
    let cases = [
        (
            "request dev-network",
            "Example: `/access request dev-network 4 Running database migration`",
        ),
        (
            "request nope 4 reason",
            "Unknown resource 'nope'. Valid resources: dev-network, gcp-access, prod-db, restricted.",
        ),
        (
            "request dev-network 48 reason",
            "Duration must be between 1m and 1d (you asked for 2d).",
        ),
        (
            "request dev-network 0 reason",
            "A duration must be longer than zero.",
        ),
        (
            "frobnicate",
            "Unknown command `frobnicate`. Use `/access help` for available commands.",
        ),
        (
            "request restricted 1h reason",
            "Access to 'restricted' is limited to e-mail addresses in @other.example. Your Slack profile's e-mail is not.",
        ),
    ];
    for (text, want) in cases {
        let (answer, _) = h.ask("/access", ALICE, text).await;
        assert!(answer.contains(want), "{text}: got {answer}");
    }
    let (answer, _) = h
        .ask("/access", BOB_NO_EMAIL, "request gcp-access 1h reason")
        .await;
    assert!(answer.contains("no e-mail address"), "{answer}");
    assert!(h.requests().await.is_empty());
    // Typos are refused before Slack is even asked who the person is.
    assert!(
        h.slack
            .calls_to("users.info")
            .iter()
            .all(|c| c.args["user"] != ALICE || c.http_method == "GET")
    );
}

#[tokio::test]
async fn dm_errors_and_help_are_answered_in_the_dm() {
    let h = harness().await;
    h.event("Ev10", fake::message_im_event(ALICE, "request"))
        .await;
    h.event("Ev11", fake::message_im_event(ALICE, "help manage"))
        .await;
    assert!(
        h.slack
            .wait_until(Duration::from_secs(5), |s| s.dms_to(ALICE).len() >= 2)
            .await
    );
    let texts: Vec<String> = h
        .slack
        .dms_to(ALICE)
        .iter()
        .map(|m| m.text.clone())
        .collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Invalid command format. Usage: `request <resource>")),
        "{texts:#?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("Managing access")),
        "{texts:#?}"
    );
    // The bot's own messages and edits are not commands.
    let mut own = fake::message_im_event(ALICE, "request gcp-access 1h x");
    own["bot_id"] = json!("B0BOT");
    h.event("Ev12", own).await;
    let mut edit = fake::message_im_event(ALICE, "request gcp-access 1h x");
    edit["subtype"] = json!("message_changed");
    h.event("Ev13", edit).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.requests().await.is_empty());
}

#[tokio::test]
async fn retried_events_are_processed_once() {
    let h = harness().await;
    let body = fake::event_callback("EvSAME", fake::message_im_event(ALICE, "status")).to_string();
    for retry in [None, Some("1"), Some("2")] {
        let mut headers = fake::signed_headers(SECRET, &body).to_vec();
        if let Some(n) = retry {
            headers.push(("x-slack-retry-num".into(), n.into()));
            headers.push(("x-slack-retry-reason".into(), "http_timeout".into()));
        }
        let r = h
            .post_with("/slack/events", "application/json", body.clone(), &headers)
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert!(
        h.slack
            .wait_until(Duration::from_secs(5), |s| !s.dms_to(ALICE).is_empty())
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        h.slack.dms_to(ALICE).len(),
        1,
        "one reply for three deliveries"
    );
}

// ------------------------------------------------------------------------------------------------
// Modal

#[tokio::test]
async fn empty_command_opens_the_modal_and_submission_files_the_request() {
    let h = harness().await;
    let (r, _) = h.command("/access", ALICE, "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        h.slack
            .wait_until(Duration::from_secs(5), |s| !s.views_opened().is_empty())
            .await
    );
    let view = &h.slack.views_opened()[0];
    assert_eq!(
        view["callback_id"],
        slack_adapter::blocks::MODAL_CALLBACK_ID
    );
    let options: Vec<&str> = view["blocks"][0]["element"]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        options,
        ["dev-network", "gcp-access", "prod-db", "restricted"]
    );

    let values = |resource: &str, duration: &str, why: &str| {
        json!({
            "resource": {"value": {"type": "static_select", "selected_option": {"value": resource}}},
            "duration": {"value": {"type": "plain_text_input", "value": duration}},
            "justification": {"value": {"type": "plain_text_input", "value": why}},
        })
    };
    let submit = |v: Value| {
        fake::view_submission_payload(ALICE, slack_adapter::blocks::MODAL_CALLBACK_ID, v)
    };

    let r = h
        .interaction(&submit(values("dev-network", "3d", "migration")))
        .await;
    assert_eq!(r.json()["response_action"], "errors");
    assert!(
        r.json()["errors"]["duration"]
            .as_str()
            .unwrap()
            .contains("between 1m and 1d"),
        "{}",
        r.body
    );

    let r = h
        .interaction(&submit(values("dev-network", "2h", "  ")))
        .await;
    assert_eq!(r.json()["response_action"], "errors");
    assert!(
        r.json()["errors"]["justification"].is_string(),
        "{}",
        r.body
    );

    let r = h
        .interaction(&submit(values("restricted", "", "why not")))
        .await;
    assert!(
        r.json()["errors"]["resource"]
            .as_str()
            .unwrap()
            .contains("@other.example"),
        "{}",
        r.body
    );

    let r = h
        .interaction(&submit(values(
            "dev-network",
            "2h",
            "Running database migration",
        )))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.is_empty(),
        "an empty answer closes the modal: {}",
        r.body
    );
    let req = h.wait_request("dev-network").await;
    assert_eq!(req.duration.secs(), 7200);
    assert_eq!(req.status, RequestStatus::Pending);

    // Filing the same again is refused inside the form.
    let r = h
        .interaction(&submit(values("dev-network", "2h", "again")))
        .await;
    assert!(
        r.json()["errors"]["resource"]
            .as_str()
            .unwrap()
            .contains("already have a pending request"),
        "{}",
        r.body
    );
}

// ------------------------------------------------------------------------------------------------
// Approvals

async fn pending(h: &Harness, resource: &str) -> access_core::AccessRequest {
    h.command(
        "/access",
        ALICE,
        &format!("request {resource} 2h Running database migration"),
    )
    .await;
    let req = h.wait_request(resource).await;
    h.run_jobs().await;
    req
}

#[tokio::test]
async fn approver_approves_and_the_message_is_updated_for_everyone() {
    let h = harness().await;
    let req = pending(&h, "dev-network").await;
    let m = h.approval_message(req.id);
    let (r, url) = h
        .click(
            APPROVER1,
            action::APPROVE,
            &req.id.to_string(),
            APPROVALS,
            &m.ts,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    h.wait_status(req.id, RequestStatus::Approved).await;
    h.run_jobs().await;

    let m = h.approval_message(req.id);
    assert!(m.buttons().is_empty(), "buttons removed once decided");
    assert!(
        m.all_text().contains("APPROVED") && m.all_text().contains("Approved by <@UAPPROVER1>"),
        "{}",
        m.all_text()
    );
    assert!(
        m.all_text().contains("<!date^"),
        "when, in each reader's time zone"
    );
    assert_eq!(m.history.len(), 1, "one update");
    assert!(
        h.slack.responses(&url).is_empty(),
        "no ephemeral on success"
    );
    let dms: Vec<String> = h.slack.dms_to(ALICE).iter().map(|m| m.all_text()).collect();
    assert!(
        dms.iter().any(|t| t.contains("approved by <@UAPPROVER1>")),
        "{dms:#?}"
    );
    assert!(dms.iter().any(|t| t.contains("Access granted")), "{dms:#?}");
    assert_eq!(h.request(req.id).await.status, RequestStatus::Active);
}

#[tokio::test]
async fn deny_updates_the_message_and_tells_the_requester() {
    let h = harness().await;
    let req = pending(&h, "dev-network").await;
    let m = h.approval_message(req.id);
    h.click(
        APPROVER2,
        action::DENY,
        &req.id.to_string(),
        APPROVALS,
        &m.ts,
    )
    .await;
    h.wait_status(req.id, RequestStatus::Denied).await;
    h.run_jobs().await;
    let m = h.approval_message(req.id);
    assert!(m.all_text().contains("DENIED") && m.all_text().contains("Denied by <@UAPPROVER2>"));
    assert!(m.buttons().is_empty());
    let dms: Vec<String> = h.slack.dms_to(ALICE).iter().map(|m| m.all_text()).collect();
    assert!(
        dms.iter().any(|t| t.contains("denied by <@UAPPROVER2>")),
        "{dms:#?}"
    );
}

#[tokio::test]
async fn self_approval_and_non_approvers_are_refused_privately() {
    let h = harness().await;
    let req = pending(&h, "dev-network").await;
    let m = h.approval_message(req.id);
    let updates_before = h.slack.calls_to("chat.update").len();

    let (_, url) = h
        .click(
            ALICE,
            action::APPROVE,
            &req.id.to_string(),
            APPROVALS,
            &m.ts,
        )
        .await;
    let r = h.wait_responses(&url, 1).await;
    assert_eq!(r[0]["response_type"], "ephemeral");
    assert_eq!(r[0]["replace_original"], false);
    assert!(
        r[0]["text"]
            .as_str()
            .unwrap()
            .contains("You cannot approve or deny your own request."),
        "{r:?}"
    );

    let (_, url) = h
        .click(
            MALLORY,
            action::APPROVE,
            &req.id.to_string(),
            APPROVALS,
            &m.ts,
        )
        .await;
    let r = h.wait_responses(&url, 1).await;
    assert!(
        r[0]["text"]
            .as_str()
            .unwrap()
            .contains("You are not an approver for 'dev-network'."),
        "{r:?}"
    );
    let (_, url) = h
        .click(MALLORY, action::DENY, &req.id.to_string(), APPROVALS, &m.ts)
        .await;
    h.wait_responses(&url, 1).await;

    h.run_jobs().await;
    assert_eq!(
        h.request(req.id).await.status,
        RequestStatus::Pending,
        "nothing changed"
    );
    assert_eq!(
        h.slack.calls_to("chat.update").len(),
        updates_before,
        "message untouched"
    );
    assert!(h.engine.store().decisions(req.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn double_click_yields_one_decision() {
    let h = harness().await;
    let req = pending(&h, "dev-network").await;
    let m = h.approval_message(req.id);
    h.click(
        APPROVER1,
        action::APPROVE,
        &req.id.to_string(),
        APPROVALS,
        &m.ts,
    )
    .await;
    h.wait_status(req.id, RequestStatus::Approved).await;
    let (_, url) = h
        .click(
            APPROVER1,
            action::APPROVE,
            &req.id.to_string(),
            APPROVALS,
            &m.ts,
        )
        .await;
    let r = h.wait_responses(&url, 1).await;
    assert!(
        r[0]["text"]
            .as_str()
            .unwrap()
            .contains("already been approved"),
        "{r:?}"
    );
    assert_eq!(h.engine.store().decisions(req.id).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_approvers_racing_yield_one_decision() {
    for second in [action::DENY, action::APPROVE, action::DENY, action::APPROVE] {
        for db in databases().await {
            let provider = std::sync::Arc::new(access_core::providers::DryRunProvider::new());
            let h = harness_on(db, default_resources(), |_| {}, provider).await;
            race_once(&h, second).await;
        }
    }
}

async fn race_once(h: &Harness, second: &str) {
    let req = pending(h, "dev-network").await;
    let m = h.approval_message(req.id);
    let id = req.id.to_string();
    let ((_, u1), (_, u2)) = tokio::join!(
        h.click(APPROVER1, action::APPROVE, &id, APPROVALS, &m.ts),
        h.click(APPROVER2, second, &id, APPROVALS, &m.ts)
    );
    // One of them wins; the other is told, privately, that it was already decided.
    assert!(
        h.slack
            .wait_until(Duration::from_secs(5), |s| s.responses(&u1).len()
                + s.responses(&u2).len()
                >= 1)
            .await,
        "the loser hears about it"
    );
    let final_req = h.request(req.id).await;
    assert!(
        matches!(
            final_req.status,
            RequestStatus::Approved | RequestStatus::Denied
        ),
        "{:?}",
        final_req.status
    );
    let decisions = h.engine.store().decisions(req.id).await.unwrap();
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    let loser = [h.slack.responses(&u1), h.slack.responses(&u2)].concat();
    assert_eq!(loser.len(), 1);
    assert!(
        loser[0]["text"].as_str().unwrap().contains("already been"),
        "{loser:?}"
    );
    h.run_jobs().await;
    let m = h.approval_message(req.id);
    assert!(m.buttons().is_empty(), "the message shows the one outcome");
    assert_eq!(
        m.all_text().matches("Access request - ").count(),
        1,
        "{}",
        m.all_text()
    );
}

#[tokio::test]
async fn n_of_m_shows_progress_then_approves() {
    let h = harness().await;
    let req = pending(&h, "prod-db").await;
    let m = h.approval_message(req.id);
    assert!(
        m.all_text().contains("Approvals: 0 of 2"),
        "{}",
        m.all_text()
    );
    h.click(
        APPROVER1,
        action::APPROVE,
        &req.id.to_string(),
        APPROVALS,
        &m.ts,
    )
    .await;
    assert!(wait_decisions(&h, req.id, 1).await);
    h.run_jobs().await;
    let m = h.approval_message(req.id);
    assert!(
        m.all_text().contains("Approvals: 1 of 2 (<@UAPPROVER1>)"),
        "{}",
        m.all_text()
    );
    assert_eq!(m.buttons().len(), 2, "still open");
    assert_eq!(h.request(req.id).await.status, RequestStatus::Pending);

    h.click(
        APPROVER2,
        action::APPROVE,
        &req.id.to_string(),
        APPROVALS,
        &m.ts,
    )
    .await;
    h.wait_status(req.id, RequestStatus::Approved).await;
    h.run_jobs().await;
    let m = h.approval_message(req.id);
    assert!(
        m.all_text()
            .contains("Approved by <@UAPPROVER1>, <@UAPPROVER2>"),
        "{}",
        m.all_text()
    );
}

async fn wait_decisions(h: &Harness, id: access_core::RequestId, n: usize) -> bool {
    for _ in 0..500 {
        if h.engine.store().decisions(id).await.unwrap().len() >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn timed_out_requests_say_so() {
    let h = harness().await;
    let req = pending(&h, "dev-network").await;
    h.clock.advance(chrono::Duration::hours(25));
    h.run_jobs().await;
    assert_eq!(h.request(req.id).await.status, RequestStatus::TimedOut);
    let m = h.approval_message(req.id);
    assert!(
        m.all_text().contains("expired without action"),
        "{}",
        m.all_text()
    );
    assert!(m.buttons().is_empty());
    assert!(
        h.slack
            .dms_to(ALICE)
            .iter()
            .any(|d| d.all_text().contains("Request expired"))
    );
}

// ------------------------------------------------------------------------------------------------
// Acknowledgement under a hanging Slack

#[tokio::test]
async fn ack_stays_under_three_seconds_while_slack_and_the_provider_hang() {
    let provider = std::sync::Arc::new(testkit::provider::TestProvider::new());
    provider.on_grant(testkit::provider::Behaviour::Hang);
    let tweak = |c: &mut slack_adapter::SlackConfig| c.http_timeout = Duration::from_secs(30);
    let h = harness_full(default_resources(), tweak, provider.clone()).await;
    // A job worker runs alongside, as in the server; its provision jobs hang in the provider.
    let engine = h.engine.clone();
    let worker = tokio::spawn(async move {
        loop {
            let _ = engine.run_due(10).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let (answer, _) = h
        .ask("/access", ALICE, "request gcp-access 1h provider hangs")
        .await;
    assert!(answer.contains("approved automatically"), "{answer}");
    assert!(
        provider_called(&provider).await,
        "the provision job reached the hanging provider"
    );
    h.slack.set_hang("*", Some(Duration::from_secs(20)));
    for text in [
        "request gcp-access 1h hanging slack",
        "list",
        "status",
        "",
        "help",
    ] {
        // Mallory's profile is not cached: every command that needs it is acknowledged with a
        // receipt, without waiting for users.info.
        let started = Instant::now();
        let (r, _) = h.command("/access", MALLORY, text).await;
        let took = started.elapsed();
        assert_eq!(r.status, StatusCode::OK, "{text}");
        assert!(
            took < Duration::from_secs(3),
            "'{text}' acknowledged after {took:?}"
        );
        if text.starts_with("request") || text == "list" {
            assert!(testkit::slack::is_receipt(&r.text()), "{text}: {}", r.body);
        }
    }
    let started = Instant::now();
    let r = h
        .event(
            "EvHang",
            fake::message_im_event(ALICE, "request gcp-access 1h x"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(3));
    let m = fake::block_actions_payload(
        APPROVER1,
        action::APPROVE,
        &uuid_like(),
        APPROVALS,
        "1.1",
        &h.slack.response_url(),
        "t",
    );
    let started = Instant::now();
    assert_eq!(h.interaction(&m).await.status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(3));
    worker.abort();
}

async fn provider_called(p: &testkit::provider::TestProvider) -> bool {
    for _ in 0..300 {
        if p.count("grant") > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn uuid_like() -> String {
    access_core::RequestId::new().to_string()
}

#[tokio::test]
async fn slow_work_is_answered_through_response_url() {
    let h = harness().await;
    // users.info takes longer than the acknowledgement budget, but finishes: the command was
    // acknowledged with a receipt, the answer follows.
    h.slack
        .fail_next("users.info", Fault::Hang(Duration::from_millis(2500)));
    let (r, url) = h
        .command("/access", ALICE, "request gcp-access 1h late profile")
        .await;
    assert!(r.elapsed < Duration::from_secs(3), "{:?}", r.elapsed);
    assert!(
        r.text()
            .starts_with(":inbox_tray: Got it — checking your request for *gcp-access* (1h)."),
        "{}",
        r.body
    );
    let posts = h.wait_responses(&url, 1).await;
    assert_eq!(posts[0]["response_type"], "ephemeral");
    assert!(
        posts[0]["text"]
            .as_str()
            .unwrap()
            .contains("approved automatically"),
        "{posts:?}"
    );
}

// ------------------------------------------------------------------------------------------------
// App Home

#[tokio::test]
async fn app_home_lists_access_and_its_buttons_work() {
    let h = harness().await;
    h.command("/access", ALICE, "request gcp-access 2h deploy")
        .await;
    h.command("/access", ALICE, "request dev-network 2h debug")
        .await;
    h.wait_request("dev-network").await;
    h.run_jobs().await;

    h.event("EvHome1", fake::app_home_opened_event(ALICE)).await;
    assert!(
        h.slack
            .wait_until(Duration::from_secs(5), |s| s.home_view(ALICE).is_some())
            .await
    );
    let view = h.slack.home_view(ALICE).unwrap();
    assert_eq!(view["type"], "home");
    let msg = testkit::slack::FakeMessage {
        channel: String::new(),
        ts: String::new(),
        text: String::new(),
        blocks: view["blocks"].clone(),
        history: vec![],
        metadata: None,
    };
    let text = msg.all_text();
    assert!(
        text.contains("*gcp-access*: until") && text.contains("2h 0m left"),
        "{text}"
    );
    assert!(text.contains("*dev-network* for 2 hours"), "{text}");
    let buttons = msg.buttons();
    let status = h
        .engine
        .status(&access_core::SubjectKey {
            team_id: fake::TEAM_ID.into(),
            user_id: ALICE.into(),
        })
        .await
        .unwrap();
    let grant = &status.grants[0];
    let pending_req = &status.pending[0];
    assert!(
        buttons.contains(&(action::REVOKE.to_string(), grant.id.to_string())),
        "{buttons:?}"
    );
    assert!(
        buttons.contains(&(action::EXTEND.to_string(), "gcp-access".to_string())),
        "{buttons:?}"
    );
    assert!(
        buttons.contains(&(action::CANCEL.to_string(), pending_req.id.to_string())),
        "{buttons:?}"
    );
    assert!(buttons.iter().any(|(a, _)| a == action::OPEN_MODAL));

    // Revoke from Home: the grant goes, the requester is told, the Home is refreshed.
    let publishes = h.slack.calls_to("views.publish").len();
    let p = fake::home_block_actions_payload(
        ALICE,
        action::REVOKE,
        &grant.id.to_string(),
        &h.slack.trigger_id(),
    );
    assert_eq!(h.interaction(&p).await.status, StatusCode::OK);
    assert!(
        h.slack
            .wait_until(Duration::from_secs(5), |s| s
                .calls_to("views.publish")
                .len()
                > publishes)
            .await
    );
    h.run_jobs().await;
    assert!(
        h.slack
            .dms_to(ALICE)
            .iter()
            .any(|m| m.all_text().contains("has been revoked, as you asked"))
    );

    // Cancel from Home.
    let p = fake::home_block_actions_payload(
        ALICE,
        action::CANCEL,
        &pending_req.id.to_string(),
        &h.slack.trigger_id(),
    );
    h.interaction(&p).await;
    h.wait_status(pending_req.id, RequestStatus::Cancelled)
        .await;

    // Request access opens the modal.
    let p =
        fake::home_block_actions_payload(ALICE, action::OPEN_MODAL, "home", &h.slack.trigger_id());
    h.interaction(&p).await;
    assert!(
        h.slack
            .wait_until(Duration::from_secs(5), |s| !s.views_opened().is_empty())
            .await
    );
}

#[tokio::test]
async fn reminder_extend_button_files_an_extension() {
    let h = harness().await;
    h.command("/access", ALICE, "request gcp-access 2h deploy")
        .await;
    h.wait_request("gcp-access").await;
    h.run_jobs().await;
    let status = h
        .engine
        .status(&access_core::SubjectKey {
            team_id: fake::TEAM_ID.into(),
            user_id: ALICE.into(),
        })
        .await
        .unwrap();
    let grant = GrantSummary::of(&status.grants[0]);
    h.notifier
        .notify(
            &Notification::ExpiryReminder {
                grant: grant.clone(),
                can_extend: true,
            },
            &NotifyContext::default(),
        )
        .await
        .unwrap();
    let reminder = h
        .slack
        .dms_to(ALICE)
        .into_iter()
        .find(|m| m.text.contains("ends in"))
        .unwrap();
    assert_eq!(
        reminder.buttons(),
        vec![(action::EXTEND.to_string(), "gcp-access".to_string())]
    );

    let dm = fake::dm_id(ALICE);
    let (_, url) = h
        .click(ALICE, action::EXTEND, "gcp-access", &dm, &reminder.ts)
        .await;
    let r = h.wait_responses(&url, 1).await;
    assert!(
        r[0]["text"]
            .as_str()
            .unwrap()
            .contains("Extension of gcp-access"),
        "{r:?}"
    );
    // A second click on the same reminder does not extend again.
    let (_, url2) = h
        .click(ALICE, action::EXTEND, "gcp-access", &dm, &reminder.ts)
        .await;
    let r2 = h.wait_responses(&url2, 1).await;
    assert!(
        r2[0]["text"]
            .as_str()
            .unwrap()
            .contains("already asked to extend"),
        "{r2:?}"
    );
    h.run_jobs().await;
    let extensions = h
        .requests()
        .await
        .into_iter()
        .filter(|r| r.kind == access_core::request::RequestKind::Extend)
        .count();
    assert_eq!(extensions, 1);
    let after = h
        .engine
        .status(&access_core::SubjectKey {
            team_id: fake::TEAM_ID.into(),
            user_id: ALICE.into(),
        })
        .await
        .unwrap();
    assert!(after.grants[0].expires_at > grant.expires_at, "extended");
    assert!(
        h.slack
            .dms_to(ALICE)
            .iter()
            .any(|m| m.all_text().contains("Access extended"))
    );

    h.notifier
        .notify(
            &Notification::ExpiryReminder {
                grant,
                can_extend: false,
            },
            &NotifyContext::default(),
        )
        .await
        .unwrap();
    let last = h.slack.dms_to(ALICE).pop().unwrap();
    assert!(
        last.buttons().is_empty(),
        "no Extend button when the policy forbids it"
    );
}

// ------------------------------------------------------------------------------------------------
// Notifier against the fake: rate limits, errors, files

fn summary(resource: &str) -> RequestSummary {
    RequestSummary {
        id: access_core::RequestId::new(),
        subject: access_core::Subject {
            team_id: fake::TEAM_ID.into(),
            user_id: ALICE.into(),
            email: Some(access_core::Email::parse("alice@example.com").unwrap()),
            name: "alice".into(),
        },
        resource: access_core::ResourceId::parse(resource).unwrap(),
        resource_description: String::new(),
        kind: access_core::request::RequestKind::New,
        duration: "4h".parse().unwrap(),
        justification: "because".into(),
        status: RequestStatus::Pending,
        created_at: chrono::Utc::now(),
        provider: "dry-run".into(),
        network: None,
    }
}

fn approval_requested(channel: Option<&str>) -> Notification {
    Notification::ApprovalRequested {
        request: summary("dev-network"),
        channel: channel.map(Into::into),
        approvals_required: 1,
    }
}

#[tokio::test]
async fn rate_limit_is_retried_after_retry_after() {
    let h = harness().await;
    h.slack.fail_next(
        "chat.postMessage",
        Fault::RateLimit {
            retry_after_secs: 1,
        },
    );
    let refs = h
        .notifier
        .notify(&approval_requested(None), &NotifyContext::default())
        .await
        .unwrap();
    assert_eq!(refs.len(), 1);
    let calls = h.slack.calls_to("chat.postMessage");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].status, 429);
    assert_eq!(calls[1].status, 200);
    let waited = calls[1].at - calls[0].at;
    assert!(
        waited >= Duration::from_millis(990),
        "retried after {waited:?}, Retry-After said 1 s"
    );
}

#[tokio::test]
async fn long_retry_after_and_outages_are_transient_bad_channels_permanent() {
    let h = harness().await;
    h.slack.fail_next(
        "chat.postMessage",
        Fault::RateLimit {
            retry_after_secs: 120,
        },
    );
    let e = h
        .notifier
        .notify(&approval_requested(None), &NotifyContext::default())
        .await
        .unwrap_err();
    assert!(matches!(e, NotifyError::Transient(_)), "{e:?}");
    assert_eq!(
        h.slack.calls_to("chat.postMessage").len(),
        1,
        "a long wait goes back to the job queue"
    );

    h.slack.fail_next("chat.postMessage", Fault::ServerError);
    let e = h
        .notifier
        .notify(&approval_requested(None), &NotifyContext::default())
        .await
        .unwrap_err();
    assert!(matches!(e, NotifyError::Transient(_)), "{e:?}");

    h.slack.fail_next("chat.postMessage", Fault::RateLimited200);
    let e = h
        .notifier
        .notify(&approval_requested(None), &NotifyContext::default())
        .await
        .unwrap_err();
    assert!(matches!(e, NotifyError::Transient(_)), "{e:?}");

    let e = h
        .notifier
        .notify(
            &approval_requested(Some("#no-such-channel")),
            &NotifyContext::default(),
        )
        .await
        .unwrap_err();
    match e {
        NotifyError::Permanent(m) => assert!(
            m.contains("no-such-channel") && m.contains("channel_not_found"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }

    // A bad token is permanent.
    let mut bad = h.config.clone();
    bad.bot_token = slack_adapter::config::Secret::new("xoxb-wrong");
    let e = slack_adapter::SlackNotifier::new(&bad)
        .notify(&approval_requested(None), &NotifyContext::default())
        .await
        .unwrap_err();
    match e {
        NotifyError::Permanent(m) => assert!(m.contains("invalid_auth"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn web_api_wire_format_follows_slack() {
    let h = harness().await;
    let s = summary("dev-network");
    h.notifier
        .notify(
            &Notification::RequestSubmitted {
                request: s.clone(),
                approvals_required: 1,
            },
            &NotifyContext::default(),
        )
        .await
        .unwrap();
    let c = &h.slack.calls_to("chat.postMessage")[0];
    assert!(c.content_type.starts_with("application/json"));
    assert_eq!(c.token.as_deref(), Some(fake::BOT_TOKEN), "bearer token");
    assert_eq!(c.args["channel"], ALICE, "DMs go to the user id");
    assert!(c.args["blocks"].is_array() && c.args["text"].as_str().is_some_and(|t| !t.is_empty()));

    let api = h.notifier.api();
    let u = api.users_info(ALICE).await.unwrap();
    assert_eq!(u.profile.email.as_deref(), Some("alice@example.com"));
    let c = h.slack.calls_to("users.info").pop().unwrap();
    assert_eq!(c.http_method, "GET", "users.info takes no JSON");
    let e = api.users_info("UNOBODY").await.unwrap_err();
    assert_eq!(e.code(), Some("user_not_found"));
    assert!(!e.is_transient());
}

#[tokio::test]
async fn secrets_are_delivered_with_the_external_upload_flow() {
    let h = harness().await;
    let secret = DeliveredSecret {
        filename: "gcp-access-alice.json".into(),
        content: br#"{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----"}"#
            .to_vec(),
        warning: ":warning: This key grants access. Do not share it.".into(),
    };
    h.notifier
        .deliver_secret(&summary("gcp-access"), &secret)
        .await
        .unwrap();
    let get = h
        .slack
        .calls_to("files.getUploadURLExternal")
        .pop()
        .unwrap();
    assert!(
        get.content_type
            .starts_with("application/x-www-form-urlencoded"),
        "{}",
        get.content_type
    );
    assert_eq!(get.args["length"], secret.content.len().to_string());
    let files = h.slack.files();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].content, secret.content);
    assert_eq!(files[0].filename, "gcp-access-alice.json");
    assert_eq!(
        files[0].channel_id.as_deref(),
        Some(fake::dm_id(ALICE).as_str())
    );
    assert_eq!(
        files[0].initial_comment.as_deref(),
        Some(secret.warning.as_str())
    );
    assert!(
        h.slack.calls_to("files.upload").is_empty(),
        "files.upload is retired"
    );
    // The key never shows up in a Web API call's recorded arguments.
    assert!(
        h.slack
            .calls()
            .iter()
            .all(|c| !c.body.contains("PRIVATE KEY"))
    );

    // A failed upload is reported, not swallowed.
    h.slack.fail_next("upload", Fault::ServerError);
    assert!(
        h.notifier
            .deliver_secret(&summary("gcp-access"), &secret)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn deleted_approval_messages_do_not_block_the_dm() {
    let h = harness().await;
    let s = summary("dev-network");
    let ctx = NotifyContext {
        message_refs: vec![access_core::notification::MessageRef {
            request_id: s.id,
            purpose: "approval".into(),
            team_id: fake::TEAM_ID.into(),
            channel: APPROVALS.into(),
            ts: "1.000001".into(),
        }],
        job: None,
    };
    let n = Notification::RequestDenied {
        request: s,
        denied_by: access_core::Actor::System,
        reason: Some("no".into()),
    };
    h.notifier.notify(&n, &ctx).await.unwrap();
    assert_eq!(
        h.slack.calls_to("chat.update")[0].error.as_deref(),
        Some("message_not_found")
    );
    assert_eq!(h.slack.dms_to(ALICE).len(), 1);
}

// ------------------------------------------------------------------------------------------------
// The fake itself speaks Slack's wire format (so the tests above prove something).

#[tokio::test]
async fn fake_slack_follows_the_documented_wire_format() {
    let h = harness().await;
    let http = reqwest::Client::new();
    let api = h.slack.api_url();
    let auth = format!("Bearer {}", fake::BOT_TOKEN);

    // users.info: GET query works; a JSON body is not read (the method takes none).
    let v: Value = http
        .get(format!("{api}/users.info?user={ALICE}"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["user"]["profile"]["email"], "alice@example.com");
    assert_eq!(v["user"]["tz"], "Europe/London");
    let v: Value = http
        .post(format!("{api}/users.info"))
        .header("authorization", &auth)
        .json(&json!({"user": ALICE}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["error"], "invalid_arguments");
    // ... but a form body is.
    let v: Value = http
        .post(format!("{api}/users.info"))
        .header("authorization", &auth)
        .form(&[("user", ALICE)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ok"], true);

    // Auth: none, wrong, token as a parameter.
    let v: Value = http
        .get(format!("{api}/auth.test"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["error"], "not_authed");
    let v: Value = http
        .get(format!("{api}/auth.test"))
        .header("authorization", "Bearer xoxb-nope")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["error"], "invalid_auth");
    let v: Value = http
        .post(format!("{api}/auth.test"))
        .form(&[("token", fake::BOT_TOKEN)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["ok"], true);

    // Misses are spelled differently per method.
    let v: Value = http
        .get(format!("{api}/users.info?user=UNOPE"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["error"], "user_not_found");
    let v: Value = http
        .get(format!("{api}/users.lookupByEmail?email=x@y.z"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["error"], "users_not_found");

    // 429 carries Retry-After; outages are HTML.
    h.slack.fail_next(
        "chat.postMessage",
        Fault::RateLimit {
            retry_after_secs: 7,
        },
    );
    let r = http
        .post(format!("{api}/chat.postMessage"))
        .header("authorization", &auth)
        .json(&json!({"channel": APPROVALS, "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    h.slack.fail_next("chat.postMessage", Fault::ServerError);
    let r = http
        .post(format!("{api}/chat.postMessage"))
        .header("authorization", &auth)
        .json(&json!({"channel": APPROVALS, "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("<html>"));

    // Upload flow: completing an unknown (or never uploaded) file fails.
    let v: Value = http
        .post(format!("{api}/files.completeUploadExternal"))
        .header("authorization", &auth)
        .json(&json!({"files": [{"id": "F404"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["error"], "file_not_found");
    let v: Value = http
        .post(format!("{api}/files.getUploadURLExternal"))
        .header("authorization", &auth)
        .form(&[("filename", "k.json"), ("length", "3")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = v["file_id"].as_str().unwrap().to_string();
    let v: Value = http
        .post(format!("{api}/files.completeUploadExternal"))
        .header("authorization", &auth)
        .json(&json!({"files": [{"id": id}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["error"], "file_not_found", "no bytes were uploaded yet");
    let v: Value = http
        .post(format!("{api}/files.getUploadURLExternal"))
        .header("authorization", &auth)
        .form(&[("filename", "k.json"), ("length", "0")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["error"], "missing_argument");

    // response_url answers plain `ok`, five times at most.
    let url = h.slack.response_url();
    for _ in 0..5 {
        let r = http
            .post(&url)
            .json(&json!({"text": "hi"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    assert_eq!(
        http.post(&url)
            .json(&json!({"text": "hi"}))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Trigger ids work once.
    let t = h.slack.trigger_id();
    let open = |t: String| {
        http.post(format!("{api}/views.open"))
            .header("authorization", &auth)
            .json(&json!({"trigger_id": t, "view": {"type": "modal"}}))
            .send()
    };
    assert_eq!(
        open(t.clone())
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["ok"],
        true
    );
    assert_eq!(
        open(t).await.unwrap().json::<Value>().await.unwrap()["error"],
        "exchanged_trigger_id"
    );

    // User groups.
    h.slack.add_usergroup("S0OPS", &[APPROVER1, APPROVER2]);
    assert_eq!(
        h.notifier.api().usergroup_members("S0OPS").await.unwrap(),
        vec![APPROVER1, APPROVER2]
    );
    assert_eq!(
        h.notifier
            .api()
            .usergroup_members("S0NONE")
            .await
            .unwrap_err()
            .code(),
        Some("no_such_subteam")
    );
}

// ------------------------------------------------------------------------------------------------
// Figures

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Acknowledgement latency and throughput of full request submissions (profile read from the
/// fake Slack, engine commit on SQLite). Prints the figures; fails only on gross regressions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgement_figures() {
    let h = std::sync::Arc::new(harness().await);
    let users: Vec<String> = (0..200).map(|i| format!("UPERF{i:04}")).collect();
    for u in &users {
        h.slack.add_user(
            testkit::slack::FakeUser::new(u, u).email(&format!("{}@example.com", u.to_lowercase())),
        );
    }
    let started = Instant::now();
    let mut tasks = vec![];
    for (i, u) in users.iter().enumerate() {
        let h = h.clone();
        let u = u.clone();
        let resource = if i % 2 == 0 {
            "gcp-access"
        } else {
            "dev-network"
        };
        tasks.push(tokio::spawn(async move {
            let (r, url) = h
                .command("/access", &u, &format!("request {resource} 1h load test"))
                .await;
            let answer = h.answer(&r, &url).await;
            assert!(
                answer.contains("approved automatically") || answer.contains("submitted"),
                "{answer}"
            );
            r.elapsed
        }));
    }
    let mut lat = vec![];
    for t in tasks {
        lat.push(t.await.unwrap());
    }
    let wall = started.elapsed();
    lat.sort();
    let n = lat.len();
    println!(
        "FIGURES: {n} concurrent /access request commands in {wall:?} ({:.0}/s); ack p50 {:?}, p99 {:?}, max {:?}",
        n as f64 / wall.as_secs_f64(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[n - 1]
    );
    assert!(
        lat[n - 1] < Duration::from_secs(3),
        "every acknowledgement within Slack's 3 s"
    );
    let all = access_core::ports::RequestFilter {
        limit: Some(1000),
        ..Default::default()
    };
    assert_eq!(h.engine.store().requests(&all).await.unwrap().len(), n);
}

#[tokio::test]
async fn a_late_progress_update_never_rolls_back_a_decided_message() {
    let h = harness().await;
    let s = summary("prod-db");
    let refs = h
        .notifier
        .notify(
            &Notification::ApprovalRequested {
                request: s.clone(),
                channel: Some(APPROVALS.into()),
                approvals_required: 2,
            },
            &NotifyContext::default(),
        )
        .await
        .unwrap();
    let ctx = NotifyContext {
        message_refs: refs.clone(),
        job: None,
    };
    let a1 = access_core::Actor::User {
        team_id: fake::TEAM_ID.into(),
        user_id: APPROVER1.into(),
        name: "a1".into(),
    };
    let a2 = access_core::Actor::User {
        team_id: fake::TEAM_ID.into(),
        user_id: APPROVER2.into(),
        name: "a2".into(),
    };
    // The final approval's job runs first; the progress job of the first vote arrives late.
    h.notifier
        .notify(
            &Notification::RequestApproved {
                request: s.clone(),
                approved_by: vec![a1.clone(), a2],
            },
            &ctx,
        )
        .await
        .unwrap();
    h.notifier
        .notify(
            &Notification::ApprovalProgress {
                request: s.clone(),
                approved_by: vec![a1],
                approvals_required: 2,
            },
            &ctx,
        )
        .await
        .unwrap();
    let m = h.slack.message(&refs[0].channel, &refs[0].ts).unwrap();
    assert!(m.all_text().contains("APPROVED"), "{}", m.all_text());
    assert!(m.buttons().is_empty());
    assert_eq!(m.history.len(), 1, "the stale progress update was not sent");
}

// ------------------------------------------------------------------------------------------------
// Durable inbox (issue 11, item 6): nothing the person said is lost, nothing is done twice.

/// Runs due jobs after letting the retry backoff pass.
async fn retry_jobs(h: &Harness) {
    for _ in 0..5 {
        h.clock.advance(chrono::Duration::minutes(5));
        h.run_jobs().await;
    }
}

#[tokio::test]
async fn dm_whose_profile_lookup_fails_transiently_still_becomes_a_request() {
    let h = harness().await;
    h.slack.fail_next("users.info", Fault::ServerError);
    h.slack.fail_next(
        "users.info",
        Fault::RateLimit {
            retry_after_secs: 1,
        },
    );
    let r = h
        .event(
            "EvFLAKY1",
            fake::message_im_event(ALICE, "request dev-network 2h \"Deploy hotfix\""),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    retry_jobs(&h).await;
    let req = h.wait_request("dev-network").await;
    assert_eq!(req.status, RequestStatus::Pending);
    let answers: Vec<String> = h
        .slack
        .dms_to(ALICE)
        .iter()
        .map(|m| m.text.clone())
        .collect();
    assert_eq!(
        answers
            .iter()
            .filter(|t| t.contains("Access request submitted"))
            .count(),
        1,
        "one answer, once Slack is back: {answers:#?}"
    );
    assert!(
        !answers.iter().any(|t| t.contains("couldn't reach Slack")),
        "a transient failure is retried, not reported: {answers:#?}"
    );
    assert_eq!(h.requests().await.len(), 1);
}

#[tokio::test]
async fn dm_whose_answer_fails_to_post_is_answered_later_and_acted_on_once() {
    let h = harness().await;
    h.slack.fail_next("chat.postMessage", Fault::ServerError);
    h.slack.fail_next("chat.postMessage", Fault::RateLimited200);
    let r = h
        .event(
            "EvFLAKY2",
            fake::message_im_event(ALICE, "request dev-network 2h \"Deploy hotfix\""),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let req = h.wait_request("dev-network").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    retry_jobs(&h).await;
    let answers: Vec<String> = h
        .slack
        .dms_to(ALICE)
        .iter()
        .map(|m| m.text.clone())
        .collect();
    assert_eq!(
        answers
            .iter()
            .filter(|t| t.contains("Access request submitted"))
            .count(),
        1,
        "{answers:#?}"
    );
    let all = h.requests().await;
    assert_eq!(all.len(), 1, "submitted once: {all:#?}");
    assert_eq!(all[0].id, req.id);
}

#[tokio::test]
async fn replayed_view_submission_is_processed_once() {
    let h = harness().await;
    let values = json!({
        "resource": {"value": {"type": "static_select", "selected_option": {"value": "gcp-access"}}},
        "duration": {"value": {"type": "plain_text_input", "value": "1h"}},
        "justification": {"value": {"type": "plain_text_input", "value": "Debug CI"}},
    });
    let p = fake::view_submission_payload(ALICE, slack_adapter::blocks::MODAL_CALLBACK_ID, values);
    let first = h.interaction(&p).await;
    assert_eq!(first.status, StatusCode::OK);
    h.wait_request("gcp-access").await;
    h.run_jobs().await;
    // The same signed delivery again, within the five-minute window.
    let again = h.interaction(&p).await;
    assert_eq!(again.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.run_jobs().await;
    let all = h.requests().await;
    assert_eq!(all.len(), 1, "a replay must not submit again: {all:#?}");
}

#[tokio::test]
async fn replayed_slash_command_is_processed_once() {
    let h = harness().await;
    let url = h.slack.response_url();
    let trigger = h.slack.trigger_id();
    let body = fake::SlashCommand::new(
        "/access",
        ALICE,
        "request gcp-access 1h Debug CI",
        &url,
        &trigger,
    )
    .body();
    let r = h.post("/slack/commands", FORM, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    h.wait_request("gcp-access").await;
    h.run_jobs().await;
    let r = h.post("/slack/commands", FORM, body).await;
    assert_eq!(r.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.run_jobs().await;
    assert_eq!(h.requests().await.len(), 1);
}

#[tokio::test]
async fn slash_command_whose_profile_lookup_fails_transiently_is_answered_later() {
    let h = harness().await;
    h.slack.fail_next("users.info", Fault::ServerError);
    let (r, url) = h
        .command("/access", ALICE, "request dev-network 2h Deploy hotfix")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(testkit::slack::is_receipt(&r.text()), "{}", r.body);
    retry_jobs(&h).await;
    let req = h.wait_request("dev-network").await;
    assert_eq!(req.status, RequestStatus::Pending);
    let answers = h.wait_responses(&url, 1).await;
    assert!(
        answers[0].to_string().contains("Access request submitted"),
        "{answers:#?}"
    );
    assert_eq!(h.requests().await.len(), 1);
}

#[tokio::test]
async fn approve_click_whose_profile_lookup_fails_transiently_is_still_acted_on() {
    let h = harness().await;
    let req = pending(&h, "dev-network").await;
    let m = h.approval_message(req.id);
    // The approver's profile (users.info) is read before the decision: Slack fails twice.
    h.slack.fail_next("users.info", Fault::ServerError);
    h.slack.fail_next(
        "users.info",
        Fault::RateLimit {
            retry_after_secs: 1,
        },
    );
    let (r, url) = h
        .click(
            APPROVER1,
            action::APPROVE,
            &req.id.to_string(),
            APPROVALS,
            &m.ts,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    retry_jobs(&h).await;
    // Approved, then granted by the jobs the retries ran.
    h.wait_status(req.id, RequestStatus::Active).await;
    h.run_jobs().await;
    let m = h.approval_message(req.id);
    assert!(
        m.all_text().contains("Approved by <@UAPPROVER1>"),
        "the message is updated: {}",
        m.all_text()
    );
    assert!(m.buttons().is_empty());
    let said: Vec<Value> = h.slack.responses(&url);
    assert!(
        said.is_empty(),
        "a transient failure is retried, not reported to the approver: {said:#?}"
    );
    assert_eq!(h.engine.store().decisions(req.id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn replayed_click_is_acted_on_once() {
    let h = harness().await;
    let req = pending(&h, "dev-network").await;
    let m = h.approval_message(req.id);
    let url = h.slack.response_url();
    let p = fake::block_actions_payload(
        APPROVER1,
        action::APPROVE,
        &req.id.to_string(),
        APPROVALS,
        &m.ts,
        &url,
        &h.slack.trigger_id(),
    );
    assert_eq!(h.interaction(&p).await.status, StatusCode::OK);
    h.wait_status(req.id, RequestStatus::Approved).await;
    // The same signed delivery again (same action_ts), within the five-minute window.
    assert_eq!(h.interaction(&p).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.run_jobs().await;
    assert_eq!(h.engine.store().decisions(req.id).await.unwrap().len(), 1);
    let said = h.slack.responses(&url);
    assert!(
        said.is_empty(),
        "a replay is not processed again (no 'already approved' refusal): {said:#?}"
    );
}

#[tokio::test]
async fn view_submission_whose_profile_lookup_fails_transiently_still_files_the_request() {
    let h = harness().await;
    h.slack.fail_next("users.info", Fault::ServerError);
    let values = json!({
        "resource": {"value": {"type": "static_select", "selected_option": {"value": "gcp-access"}}},
        "duration": {"value": {"type": "plain_text_input", "value": "1h"}},
        "justification": {"value": {"type": "plain_text_input", "value": "Debug CI"}},
    });
    let p = fake::view_submission_payload(ALICE, slack_adapter::blocks::MODAL_CALLBACK_ID, values);
    let r = h.interaction(&p).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.body.is_empty(),
        "stored, so the form closes instead of showing a transient failure: {}",
        r.body
    );
    retry_jobs(&h).await;
    h.wait_request("gcp-access").await;
    assert_eq!(h.requests().await.len(), 1);
    let dms: Vec<String> = h.slack.dms_to(ALICE).iter().map(|m| m.all_text()).collect();
    assert!(
        !dms.iter().any(|t| t.contains("couldn't reach Slack")),
        "a transient failure is retried, not reported: {dms:#?}"
    );
}

/// A key file that could not be delivered is its own DM (not a second "access granted"): it says
/// the access is active and how to get a new key.
#[tokio::test]
async fn an_undelivered_key_is_its_own_direct_message() {
    let h = harness().await;
    h.command("/access", ALICE, "request gcp-access 2h deploy")
        .await;
    let request = h.wait_request("gcp-access").await;
    h.run_jobs().await;
    let status = h
        .engine
        .status(&access_core::SubjectKey {
            team_id: fake::TEAM_ID.into(),
            user_id: ALICE.into(),
        })
        .await
        .unwrap();
    let grant = GrantSummary::of(&status.grants[0]);
    let granted_before = h
        .slack
        .dms_to(ALICE)
        .iter()
        .filter(|m| m.all_text().contains("Access granted"))
        .count();
    let summary = access_core::notification::RequestSummary::of(&request, "GCP");
    h.notifier
        .notify(
            &Notification::SecretNotDelivered {
                request: summary,
                grant,
            },
            &NotifyContext::default(),
        )
        .await
        .unwrap();
    let dms = h.slack.dms_to(ALICE);
    let key = dms
        .iter()
        .find(|m| m.all_text().contains("Key file not delivered"))
        .expect("a key-not-delivered DM");
    assert!(
        key.all_text().contains("is active until"),
        "{}",
        key.all_text()
    );
    assert!(
        key.all_text().contains("run the command again"),
        "{}",
        key.all_text()
    );
    assert_eq!(
        dms.iter()
            .filter(|m| m.all_text().contains("Access granted"))
            .count(),
        granted_before,
        "no second 'granted' message"
    );
}
