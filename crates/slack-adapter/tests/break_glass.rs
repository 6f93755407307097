//! Issue 17 item 1, break-glass, end to end through Slack against the fake Slack, on SQLite and
//! (with `TEST_DATABASE_URL`) PostgreSQL: `request <resource> [duration] --emergency <why>`
//! grants at once without approval, capped at the resource's emergency duration; the approvers'
//! and security channels get a loud notice with Reviewed and Revoke now; an approver (never the
//! requester) reviews it; unreviewed grants are listed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use access_core::audit::AuditKind;
use access_core::emergency::{EmergencyFilter, ReviewOutcome};
use access_core::engine::EngineSettings;
use access_core::ports::AuditFilter;
use access_core::{AccessRequest, GrantStatus, RequestStatus, Resource};
use axum::http::StatusCode;
use common::*;
use serde_json::json;
use slack_adapter::blocks::action;
use testkit::slack::{FakeMessage, FakeUser};

const SECURITY: &str = "C0SECURITY";
const SECURITY_NAME: &str = "security-alerts";
const GUEST: &str = "UGUEST";

fn emergency_resource(id: &str, eligibility: serde_json::Value) -> Resource {
    serde_json::from_value(json!({
        "id": id, "description": "Production database", "provider": "dry-run",
        "durations": {"default": "4h", "min": "1m", "max": "24h"},
        "eligibility": eligibility,
        "approval": {"mode": "approvers", "approvers": {"users": [APPROVER1, APPROVER2]}, "required": 2},
        "emergency": {"duration": "1h"},
    }))
    .unwrap()
}

fn resources() -> Vec<Resource> {
    vec![
        emergency_resource("prod-db", json!([])),
        emergency_resource(
            "partners-only",
            json!([{"email_domain": ["other.example"]}]),
        ),
        resource("dev-network", approvers(1), json!([])),
    ]
}

async fn harnesses() -> Vec<(String, Harness)> {
    let mut out = Vec::new();
    for db in databases().await {
        let kind = db.kind.to_string();
        let h = harness_with_security(
            db,
            resources(),
            EngineSettings {
                security_channel: Some(SECURITY_NAME.into()),
                ..EngineSettings::default()
            },
        )
        .await;
        h.slack.add_channel(SECURITY, SECURITY_NAME);
        h.slack.add_user(
            FakeUser::new(GUEST, "guest")
                .email("guest@example.com")
                .guest(),
        );
        out.push((kind, h));
    }
    out
}

/// The break-glass notice of `request` in `channel`.
fn notice(h: &Harness, channel: &str, request: &AccessRequest) -> FakeMessage {
    h.slack
        .messages_in(channel)
        .into_iter()
        .find(|m| m.all_text().contains(&request.id.to_string()))
        .unwrap_or_else(|| panic!("no notice in {channel}: {:#?}", h.slack.messages()))
}

/// Alice breaks the glass on prod-db; the notices are posted and the grant is active.
async fn break_glass(h: &Harness, kind: &str) -> AccessRequest {
    let (answer, _) = h
        .ask(
            "/access",
            ALICE,
            "request prod-db 8h --emergency Production outage, incident INC-42",
        )
        .await;
    assert!(
        answer.contains("Break-glass access to prod-db for 1 hour granted without approval"),
        "{kind}: {answer}"
    );
    let req = h.wait_request("prod-db").await;
    h.run_jobs().await;
    h.wait_status(req.id, RequestStatus::Active).await
}

async fn audit_kinds(h: &Harness, req: &AccessRequest) -> Vec<AuditKind> {
    h.engine
        .store()
        .audit_events(&AuditFilter {
            request_id: Some(req.id),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.record.kind)
        .collect()
}

#[tokio::test]
async fn emergency_request_is_granted_at_once_capped_and_announced_loudly() {
    for (kind, h) in harnesses().await {
        let req = break_glass(&h, &kind).await;
        assert_eq!(
            req.duration.secs(),
            3600,
            "{kind}: 8h cut to the emergency 1h"
        );
        assert_eq!(
            req.justification.as_str(),
            "Production outage, incident INC-42"
        );
        assert!(
            h.engine.store().decisions(req.id).await.unwrap().is_empty(),
            "{kind}: nobody approved (prod-db normally needs two approvals)"
        );
        let grant = h
            .engine
            .store()
            .grant(req.grant_id.unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(grant.status, GrantStatus::Active, "{kind}");
        assert_eq!(
            grant.expires_at - req.created_at,
            chrono::Duration::hours(1),
            "{kind}"
        );
        let kinds = audit_kinds(&h, &req).await;
        for k in [
            AuditKind::AccessRequested,
            AuditKind::EmergencyGranted,
            AuditKind::AccessApproved,
            AuditKind::AccessGranted,
        ] {
            assert!(kinds.contains(&k), "{kind}: {k} missing from {kinds:?}");
        }

        // The same loud notice in the approvers' channel and the security channel.
        for channel in [APPROVALS, SECURITY] {
            let m = notice(&h, channel, &req);
            let text = m.all_text();
            for part in [
                "BREAK-GLASS",
                "<!here>",
                "<@UALICE>",
                "prod-db",
                "1 hour",
                "Production outage, incident INC-42",
                "review",
            ] {
                assert!(
                    text.contains(part),
                    "{kind}: {part} missing in {channel}: {text}"
                );
            }
            assert_eq!(
                m.buttons(),
                vec![
                    (action::EMERGENCY_REVIEWED.to_string(), req.id.to_string()),
                    (action::EMERGENCY_REVOKE.to_string(), req.id.to_string()),
                ],
                "{kind}"
            );
        }
        assert!(
            !h.slack
                .messages_in(APPROVALS)
                .iter()
                .any(|m| m.buttons().iter().any(|(a, _)| a == action::APPROVE)),
            "{kind}: no approval was asked for"
        );
        let refs = h.engine.store().message_refs(req.id).await.unwrap();
        assert_eq!(
            refs.iter().filter(|r| r.purpose == "emergency").count(),
            2,
            "{kind}"
        );
        assert!(
            h.slack
                .dms_to(ALICE)
                .iter()
                .any(|m| m.all_text().contains("Access granted")),
            "{kind}: the person is told how to use it"
        );

        // Unreviewed: listed.
        let store = h.engine.store();
        assert_eq!(
            store.emergency_unreviewed_count().await.unwrap(),
            1,
            "{kind}"
        );
        let listed = store
            .emergency_accesses(&EmergencyFilter {
                reviewed: Some(false),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 1, "{kind}");
        assert_eq!(listed[0].request_id, req.id);
        assert_eq!(listed[0].grant_id, grant.id);

        // A second emergency while the first still runs is refused.
        let (r, _) = h
            .command("/access", ALICE, "request prod-db --emergency still down")
            .await;
        assert!(
            r.text().contains("You already have access to 'prod-db'"),
            "{kind}: {}",
            r.body
        );
        assert_eq!(h.requests().await.len(), 1, "{kind}");
    }
}

#[tokio::test]
async fn refusals_grant_nothing() {
    for (kind, h) in harnesses().await {
        // A resource without `emergency`.
        let (r, _) = h
            .command(
                "/access",
                ALICE,
                "request dev-network --emergency everything is on fire",
            )
            .await;
        assert_eq!(
            r.text(),
            ":no_entry: Break-glass access is not enabled for 'dev-network': nothing was granted. \
             Ask for it the usual way (`request dev-network <duration> <justification>`) so an \
             approver can decide.",
            "{kind}"
        );
        // No justification.
        let (r, _) = h
            .command("/access", ALICE, "request prod-db 30m --emergency")
            .await;
        assert!(
            r.text().starts_with(
                "Break-glass access needs a justification: say what the emergency is. Nothing was granted."
            ),
            "{kind}: {}",
            r.body
        );
        // Eligibility still applies (alice@example.com is not in other.example).
        let (answer, _) = h
            .ask("/access", ALICE, "request partners-only --emergency outage")
            .await;
        assert!(
            answer.contains("limited to e-mail addresses in @other.example"),
            "{kind}: {answer}"
        );
        // Guests are held to allow_guests, emergency or not (the DM path).
        h.event(
            "EvGuest",
            testkit::slack::message_im_event(GUEST, "request prod-db --emergency outage"),
        )
        .await;
        assert!(
            h.slack
                .wait_until(Duration::from_secs(5), |s| s
                    .dms_to(GUEST)
                    .iter()
                    .any(|m| m.text.contains("Guest accounts cannot request 'prod-db'")))
                .await,
            "{kind}: {:#?}",
            h.slack.dms_to(GUEST)
        );
        h.run_jobs().await;
        assert!(h.requests().await.is_empty(), "{kind}: nothing stored");
        assert!(
            h.engine
                .store()
                .emergency_accesses(&EmergencyFilter::default())
                .await
                .unwrap()
                .is_empty()
        );
        assert!(h.slack.messages_in(SECURITY).is_empty(), "{kind}");
    }
}

#[tokio::test]
async fn an_approver_reviews_and_the_requester_cannot() {
    for (kind, h) in harnesses().await {
        let req = break_glass(&h, &kind).await;
        let m = notice(&h, APPROVALS, &req);
        let updates = h.slack.calls_to("chat.update").len();

        // The requester (who is not an approver here, but would be refused even if they were).
        let (_, url) = h
            .click(
                ALICE,
                action::EMERGENCY_REVIEWED,
                &req.id.to_string(),
                APPROVALS,
                &m.ts,
            )
            .await;
        let r = h.wait_responses(&url, 1).await;
        assert_eq!(
            r[0]["text"],
            ":no_entry: You cannot review your own emergency access; another approver must. Nothing was changed.",
            "{kind}"
        );
        assert_eq!(r[0]["response_type"], "ephemeral");
        // Not an approver of prod-db.
        let (_, url) = h
            .click(
                MALLORY,
                action::EMERGENCY_REVOKE,
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
                .contains("You are not an approver for 'prod-db'."),
            "{kind}: {r:?}"
        );
        h.run_jobs().await;
        let store = h.engine.store();
        assert!(
            store
                .emergency_access(req.id)
                .await
                .unwrap()
                .unwrap()
                .review
                .is_none()
        );
        assert_eq!(h.slack.calls_to("chat.update").len(), updates, "{kind}");
        assert_eq!(
            store
                .grant(req.grant_id.unwrap())
                .await
                .unwrap()
                .unwrap()
                .status,
            GrantStatus::Active,
            "{kind}: Mallory's Revoke now did nothing"
        );

        // An approver: Reviewed.
        let (r, url) = h
            .click(
                APPROVER1,
                action::EMERGENCY_REVIEWED,
                &req.id.to_string(),
                APPROVALS,
                &m.ts,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        h.run_jobs().await;
        assert!(
            h.slack.responses(&url).is_empty(),
            "{kind}: no ephemeral on success"
        );
        let record = store.emergency_access(req.id).await.unwrap().unwrap();
        let review = record.review.expect("reviewed");
        assert_eq!(review.outcome, ReviewOutcome::Reviewed);
        assert_eq!(
            review.by.id(),
            format!("slack:{}/{APPROVER1}", testkit::slack::TEAM_ID)
        );
        assert!(
            audit_kinds(&h, &req)
                .await
                .contains(&AuditKind::EmergencyReviewed)
        );
        assert_eq!(
            store.emergency_unreviewed_count().await.unwrap(),
            0,
            "{kind}"
        );
        assert_eq!(
            store
                .grant(req.grant_id.unwrap())
                .await
                .unwrap()
                .unwrap()
                .status,
            GrantStatus::Active,
            "{kind}: a reviewed grant runs its course"
        );
        for channel in [APPROVALS, SECURITY] {
            let m = notice(&h, channel, &req);
            assert!(m.buttons().is_empty(), "{kind}: buttons gone in {channel}");
            let text = m.all_text();
            assert!(
                text.contains("REVIEWED") && text.contains("Reviewed by <@UAPPROVER1>"),
                "{kind}: {text}"
            );
            assert!(
                !text.contains("<!here>"),
                "{kind}: the update does not ping again"
            );
        }

        // The other approver, late, on the security channel's copy.
        let sec = notice(&h, SECURITY, &req);
        let (_, url) = h
            .click(
                APPROVER2,
                action::EMERGENCY_REVOKE,
                &req.id.to_string(),
                SECURITY,
                &sec.ts,
            )
            .await;
        let r = h.wait_responses(&url, 1).await;
        assert_eq!(
            r[0]["text"],
            ":no_entry: This emergency access has already been reviewed by <@UAPPROVER1>. Nothing was changed.",
            "{kind}"
        );
        h.run_jobs().await;
        assert_eq!(
            store
                .grant(req.grant_id.unwrap())
                .await
                .unwrap()
                .unwrap()
                .status,
            GrantStatus::Active,
            "{kind}"
        );
    }
}

#[tokio::test]
async fn revoke_now_ends_the_access_and_counts_as_the_review() {
    for (kind, h) in harnesses().await {
        let req = break_glass(&h, &kind).await;
        let m = notice(&h, SECURITY, &req);
        h.click(
            APPROVER2,
            action::EMERGENCY_REVOKE,
            &req.id.to_string(),
            SECURITY,
            &m.ts,
        )
        .await;
        h.run_jobs().await;
        let req = h.wait_status(req.id, RequestStatus::Revoked).await;
        let store = h.engine.store();
        let grant = store.grant(req.grant_id.unwrap()).await.unwrap().unwrap();
        assert_eq!(grant.status, GrantStatus::Revoked, "{kind}");
        assert_eq!(
            grant.revoked_by.as_ref().map(|a| a.mention()),
            Some("<@UAPPROVER2>".to_string())
        );
        let review = store
            .emergency_access(req.id)
            .await
            .unwrap()
            .unwrap()
            .review
            .expect("reviewed");
        assert_eq!(review.outcome, ReviewOutcome::Revoked, "{kind}");
        let kinds = audit_kinds(&h, &req).await;
        for k in [
            AuditKind::RevocationRequested,
            AuditKind::EmergencyReviewed,
            AuditKind::AccessRevoked,
        ] {
            assert!(kinds.contains(&k), "{kind}: {k} missing from {kinds:?}");
        }
        for channel in [APPROVALS, SECURITY] {
            let text = notice(&h, channel, &req).all_text();
            assert!(
                text.contains("REVOKED") && text.contains("revoked by <@UAPPROVER2>"),
                "{kind}: {text}"
            );
        }
        assert!(
            h.slack
                .dms_to(ALICE)
                .iter()
                .any(|m| m.all_text().contains("revoked")),
            "{kind}: the holder is told: {:#?}",
            h.slack.dms_to(ALICE)
        );
        assert_eq!(
            store.emergency_unreviewed_count().await.unwrap(),
            0,
            "{kind}"
        );
    }
}

#[test]
fn the_emergency_flag_is_found_wherever_it_is_typed() {
    use slack_adapter::grammar::{Command, Surface, parse};
    let emergency = |duration: Option<&str>, justification: &str| Command::EmergencyRequest {
        resource: "prod-db".into(),
        duration: duration.map(Into::into),
        justification: justification.into(),
    };
    for (text, want) in [
        (
            "request prod-db --emergency db down",
            emergency(None, "db down"),
        ),
        (
            "request prod-db 2h --emergency db down",
            emergency(Some("2h"), "db down"),
        ),
        (
            "request prod-db --emergency 30m db down",
            emergency(Some("30m"), "db down"),
        ),
        (
            "request --emergency prod-db 2 hours db down",
            emergency(Some("2hours"), "db down"),
        ),
        // Phones and macOS turn `--` into a dash.
        (
            "request prod-db \u{2014}emergency db down",
            emergency(None, "db down"),
        ),
        (
            "request prod-db \u{2013}Emergency db down",
            emergency(None, "db down"),
        ),
        (
            "request prod-db db down --emergency",
            emergency(None, "db down"),
        ),
        (
            "req prod-db --break-glass \"db down\"",
            emergency(None, "\"db down\""),
        ),
    ] {
        assert_eq!(parse(text, Surface::Access), Ok(want), "{text}");
    }
    // Not a flag: an ordinary request whose justification mentions the word.
    assert_eq!(
        parse("request prod-db 1h emergency maintenance", Surface::Access),
        Ok(Command::Request {
            resource: "prod-db".into(),
            duration: Some("1h".into()),
            justification: "emergency maintenance".into(),
        })
    );
    let e = parse("request prod-db --emergency \"\"", Surface::DirectMessage).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Break-glass access needs a justification: say what the emergency is. Nothing was granted.\n\
         Usage: `request prod-db [duration] --emergency <justification>`, for example \
         `request prod-db --emergency Production outage, incident INC-1234`."
    );
}
