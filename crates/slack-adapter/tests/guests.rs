//! Issue 11 §5: guests (`is_restricted`, `is_ultra_restricted`) and people from other
//! organisations (`is_stranger`, Slack Connect) are refused as requesters unless the resource
//! allows them (`allow_guests`, `allow_external`), and never approve or deny.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use access_core::RequestStatus;
use common::*;
use serde_json::json;
use slack_adapter::blocks::action;
use testkit::slack::FakeUser;

const GUEST: &str = "UGUEST";
const SCG: &str = "USCGUEST";
const STRANGER: &str = "USTRANGER";

async fn with_people(h: &Harness) {
    h.slack.add_user(
        FakeUser::new(GUEST, "guest")
            .email("guest@example.com")
            .guest(),
    );
    h.slack.add_user(
        FakeUser::new(SCG, "scguest")
            .email("scguest@example.com")
            .single_channel_guest(),
    );
    h.slack.add_user(
        FakeUser::new(STRANGER, "stranger")
            .email("stranger@partner.example")
            .stranger("T0PARTNER"),
    );
}

fn open_resources() -> Vec<access_core::Resource> {
    let mut rs = default_resources();
    let mut r = resource("contractors", json!({"mode": "auto"}), json!([]));
    r.allow_guests = true;
    rs.push(r);
    let mut r = resource("partners", json!({"mode": "auto"}), json!([]));
    r.allow_external = true;
    rs.push(r);
    rs
}

#[tokio::test]
async fn guests_and_external_users_cannot_request_unless_the_resource_allows_them() {
    let h = harness_with(open_resources(), |_| {}).await;
    with_people(&h).await;
    for user in [GUEST, SCG] {
        let (r, url) = h
            .command("/access", user, "request dev-network 1h Need to debug")
            .await;
        let answer = h.answer(&r, &url).await;
        assert!(
            answer.contains("Guest accounts cannot request 'dev-network'."),
            "{user}: {answer}"
        );
    }
    let (r, url) = h
        .command("/access", STRANGER, "request dev-network 1h Need to debug")
        .await;
    let answer = h.answer(&r, &url).await;
    assert!(
        answer.contains(
            "People from outside this organisation (Slack Connect) cannot request 'dev-network'."
        ),
        "{answer}"
    );
    // A stranger is not let in by allow_guests, nor a guest by allow_external.
    let (r, url) = h
        .command("/access", STRANGER, "request contractors 1h Need to debug")
        .await;
    let answer = h.answer(&r, &url).await;
    assert!(answer.contains("cannot request 'contractors'"), "{answer}");
    let (r, url) = h
        .command("/access", GUEST, "request partners 1h Need to debug")
        .await;
    let answer = h.answer(&r, &url).await;
    assert!(answer.contains("cannot request 'partners'"), "{answer}");
    assert!(h.requests().await.is_empty(), "nothing filed");
    assert!(
        h.slack.messages_in(APPROVALS).is_empty(),
        "no approver pinged"
    );

    // Allowed explicitly: filed.
    h.command("/access", GUEST, "request contractors 1h Need to debug")
        .await;
    h.wait_request("contractors").await;
    h.command("/access", STRANGER, "request partners 1h Need to debug")
        .await;
    h.wait_request("partners").await;
}

#[tokio::test]
async fn a_guest_approver_cannot_decide() {
    let h = harness().await;
    // APPROVER1 is listed as an approver, but is (now) a guest.
    h.slack.add_user(
        FakeUser::new(APPROVER1, "approver1")
            .email("a1@example.com")
            .guest(),
    );
    h.command(
        "/access",
        ALICE,
        "request dev-network 2h Running database migration",
    )
    .await;
    let req = h.wait_request("dev-network").await;
    h.run_jobs().await;
    let m = h.approval_message(req.id);
    for act in [action::APPROVE, action::DENY] {
        let (_, url) = h
            .click(APPROVER1, act, &req.id.to_string(), APPROVALS, &m.ts)
            .await;
        let r = h.wait_responses(&url, 1).await;
        assert!(
            r[0]["text"].as_str().unwrap().contains(
                "Guests and people from other organisations cannot approve or deny requests."
            ),
            "{r:?}"
        );
    }
    h.run_jobs().await;
    assert_eq!(h.request(req.id).await.status, RequestStatus::Pending);
    assert!(h.engine.store().decisions(req.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_request_form_refuses_a_guest_under_the_resource_field() {
    let h = harness().await;
    with_people(&h).await;
    let values = json!({
        "resource": {"value": {"type": "static_select", "selected_option": {"value": "dev-network"}}},
        "duration": {"value": {"type": "plain_text_input", "value": "2h"}},
        "justification": {"value": {"type": "plain_text_input", "value": "migration"}},
    });
    let p = testkit::slack::view_submission_payload(
        GUEST,
        slack_adapter::blocks::MODAL_CALLBACK_ID,
        values,
    );
    let r = h.interaction(&p).await;
    assert_eq!(r.json()["response_action"], "errors", "{}", r.body);
    assert!(
        r.json()["errors"]["resource"]
            .as_str()
            .unwrap()
            .contains("Guest accounts cannot request 'dev-network'."),
        "{}",
        r.body
    );
    assert!(h.requests().await.is_empty());
}
