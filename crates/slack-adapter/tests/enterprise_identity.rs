//! Issue 11 §4: on an org-wide Enterprise Grid install a person has one user id in every
//! workspace of the organisation. Identity is (organisation, user), so asking in workspace A and
//! approving in B, voting twice from two workspaces, or holding two live grants of one resource
//! is refused. Runs on SQLite, and PostgreSQL when `TEST_DATABASE_URL` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use access_core::RequestStatus;
use access_core::ports::GrantFilter;
use common::*;
use serde_json::{Value, json};
use slack_adapter::blocks::action;
use slack_adapter::config::Secret;
use slack_adapter::crypto::TokenCipher;
use slack_adapter::installations::{Installation, InstallationInfo, Installations};

const ORG: &str = "E0GRID";
const ORG_TOKEN: &str = "xoxb-org-wide-install";
const WS_A: &str = "T0GRIDA";
const WS_B: &str = "T0GRIDB";

/// The harness with its router serving an org-wide install of [`ORG`].
async fn grid(db: testkit::db::TestDb) -> Harness {
    let mut h = harness_on(
        db,
        default_resources(),
        |_| {},
        Arc::new(access_core::providers::DryRunProvider::new()),
    )
    .await;
    h.slack.add_token(ORG_TOKEN);
    // Members of the organisation, at home in workspace A (what users.info says on Grid).
    for (id, name) in [
        (ALICE, "alice"),
        (APPROVER1, "approver1"),
        (APPROVER2, "approver2"),
    ] {
        h.slack.add_user(
            testkit::slack::FakeUser::new(id, name)
                .email(&format!("{name}@example.com"))
                .in_org(WS_A, ORG),
        );
    }
    let ins = Installations::in_memory(TokenCipher::from_keys(&[[3u8; 32]]).unwrap());
    ins.save(&Installation {
        info: InstallationInfo {
            enterprise_id: Some(ORG.into()),
            is_enterprise_install: true,
            installed_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            ..Default::default()
        },
        bot_token: Some(Secret::new(ORG_TOKEN)),
        ..Default::default()
    })
    .await
    .unwrap();
    h.app =
        slack_adapter::router::router_with_installations(h.engine.clone(), h.config.clone(), ins);
    h
}

/// `/access <text>` typed by `user` in workspace `team` of the organisation; returns its answer.
async fn command_in(h: &Harness, team: &str, user: &str, text: &str) -> String {
    let url = h.slack.response_url();
    let mut cmd =
        testkit::slack::SlashCommand::new("/access", user, text, &url, &h.slack.trigger_id());
    cmd.team_id = team.into();
    let body = format!("{}&enterprise_id={ORG}", cmd.body());
    let r = h
        .post("/slack/commands", "application/x-www-form-urlencoded", body)
        .await;
    h.answer(&r, &url).await
}

/// A button click by `user` in workspace `team` of the organisation; returns its response_url.
async fn click_in(h: &Harness, team: &str, user: &str, action_id: &str, id: &str) -> String {
    let m = h.approval_message(id.parse().unwrap());
    let url = h.slack.response_url();
    let mut p = testkit::slack::block_actions_payload(
        user,
        action_id,
        id,
        APPROVALS,
        &m.ts,
        &url,
        &h.slack.trigger_id(),
    );
    p["team"] = json!({"id": team, "domain": "grid"});
    p["user"]["team_id"] = Value::from(team);
    p["enterprise"] = json!({"id": ORG, "name": "Grid"});
    p["is_enterprise_install"] = Value::from(true);
    h.interaction(&p).await;
    url
}

/// The first private answer sent to a click's response_url.
async fn answer(h: &Harness, url: &str) -> String {
    let r = h.wait_responses(url, 1).await;
    r[0]["text"].as_str().unwrap_or_default().to_string()
}

async fn wait_decisions(h: &Harness, id: access_core::RequestId, n: usize) {
    for _ in 0..500 {
        if h.engine.store().decisions(id).await.unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} decisions on {id}");
}

#[tokio::test]
async fn self_approval_across_workspaces_of_one_organisation_is_refused() {
    for db in databases().await {
        let h = grid(db).await;
        command_in(
            &h,
            WS_A,
            APPROVER1,
            "request dev-network 2h Running migration",
        )
        .await;
        let req = h.wait_request("dev-network").await;
        h.run_jobs().await;
        let url = click_in(&h, WS_B, APPROVER1, action::APPROVE, &req.id.to_string()).await;
        let text = answer(&h, &url).await;
        assert!(
            text.contains("You cannot approve or deny your own request."),
            "{text}"
        );
        h.run_jobs().await;
        assert_eq!(h.request(req.id).await.status, RequestStatus::Pending);
        assert!(h.engine.store().decisions(req.id).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn one_person_votes_once_whichever_workspace_they_click_from() {
    for db in databases().await {
        let h = grid(db).await;
        command_in(&h, WS_A, ALICE, "request prod-db 2h Running migration").await;
        let req = h.wait_request("prod-db").await;
        h.run_jobs().await;
        let id = req.id.to_string();
        click_in(&h, WS_A, APPROVER1, action::APPROVE, &id).await;
        wait_decisions(&h, req.id, 1).await;
        h.run_jobs().await;
        let url = click_in(&h, WS_B, APPROVER1, action::APPROVE, &id).await;
        let text = answer(&h, &url).await;
        h.run_jobs().await;
        assert_eq!(
            h.request(req.id).await.status,
            RequestStatus::Pending,
            "2 of 2 needed, one person approved: {text}"
        );
        assert_eq!(h.engine.store().decisions(req.id).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_second_request_from_another_workspace_does_not_stack_a_second_live_grant() {
    for db in databases().await {
        let h = grid(db).await;
        command_in(&h, WS_A, ALICE, "request gcp-access 2h Debugging prod").await;
        h.wait_request("gcp-access").await;
        for _ in 0..5 {
            h.run_jobs().await;
        }
        command_in(&h, WS_B, ALICE, "request gcp-access 2h Debugging prod").await;
        for _ in 0..50 {
            if h.requests().await.len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..5 {
            h.run_jobs().await;
        }
        let live = h
            .engine
            .store()
            .grants(&GrantFilter {
                live_only: true,
                ..GrantFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(live.len(), 1, "one live grant per person: {live:#?}");
        let all = h
            .engine
            .store()
            .grants(&GrantFilter::default())
            .await
            .unwrap();
        assert_eq!(all.len(), 1, "no second grant at all: {all:#?}");
    }
}
