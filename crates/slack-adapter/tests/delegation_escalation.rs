//! Delegation (`/access delegate @user until …`) and escalation (`escalate_after`) end to end
//! through Slack: signed slash commands and button clicks into the router, the real engine over
//! SQLite (and PostgreSQL with `TEST_DATABASE_URL`), the SlackNotifier talking to the fake Slack,
//! and the manual clock travelling past delegation ends and escalation delays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use access_core::audit::{AuditEvent, AuditKind};
use access_core::ports::AuditFilter;
use access_core::providers::DryRunProvider;
use access_core::{RequestStatus, Resource};
use common::*;
use serde_json::json;
use slack_adapter::blocks::action;

const ESCALATIONS: &str = "C0ESCALATE";

/// `dev-network`: APPROVER1 alone approves (APPROVER2 is not an approver of it).
/// `esc-network`: the same, escalating to APPROVER2 after 30 minutes in #escalations.
fn resources() -> Vec<Resource> {
    vec![
        resource(
            "dev-network",
            json!({"mode": "approvers", "approvers": {"users": [APPROVER1]}}),
            json!([]),
        ),
        resource(
            "two-key",
            json!({"mode": "approvers", "approvers": {"users": [APPROVER1, MALLORY]}, "required": 2}),
            json!([]),
        ),
        resource(
            "esc-network",
            json!({
                "mode": "approvers", "approvers": {"users": [APPROVER1]},
                "escalate_after": "30m",
                "escalation_approvers": {"users": [APPROVER2]},
                "escalation_channel": ESCALATIONS,
            }),
            json!([]),
        ),
    ]
}

async fn harnesses() -> Vec<Harness> {
    let mut out = Vec::new();
    for db in databases().await {
        let h = harness_on(db, resources(), |_| {}, Arc::new(DryRunProvider::new())).await;
        h.slack.add_channel(ESCALATIONS, "access-escalations");
        out.push(h);
    }
    out
}

/// Runs a slash command and returns what the person was told (the acknowledgement, or the
/// response_url answer when it came later).
async fn say(h: &Harness, user: &str, text: &str) -> String {
    let (r, url) = h.command("/access", user, text).await;
    let mut answer = h.answer(&r, &url).await;
    if answer.is_empty() {
        let posted = h.wait_responses(&url, 1).await;
        answer = posted[0]["text"].as_str().unwrap_or_default().to_string();
    }
    h.run_jobs().await;
    answer
}

/// Clicks Approve or Deny; returns the private refusal, if any.
async fn click(
    h: &Harness,
    user: &str,
    action_id: &str,
    id: &str,
    channel: &str,
    ts: &str,
) -> String {
    let (_, url) = h.click(user, action_id, id, channel, ts).await;
    h.run_jobs().await;
    // A refusal is posted to the response_url by the click's job; success posts nothing.
    h.slack
        .wait_until(std::time::Duration::from_millis(500), |s| {
            !s.responses(&url).is_empty()
        })
        .await;
    h.run_jobs().await;
    h.slack
        .responses(&url)
        .first()
        .and_then(|r| r["text"].as_str().map(str::to_string))
        .unwrap_or_default()
}

async fn events(h: &Harness, kind: AuditKind) -> Vec<AuditEvent> {
    h.engine
        .store()
        .audit_events(&AuditFilter {
            kind: Some(kind),
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn request(h: &Harness, resource: &str) -> access_core::AccessRequest {
    say(
        h,
        ALICE,
        &format!("request {resource} 2h Running database migration"),
    )
    .await;
    h.wait_request(resource).await
}

fn mention(user: &str) -> String {
    format!("<@{user}|{}>", user.to_lowercase())
}

#[tokio::test]
async fn a_delegate_approves_within_the_period_on_behalf_of_the_delegator() {
    for h in harnesses().await {
        let reply = say(
            &h,
            APPROVER1,
            &format!("delegate {} until 3d", mention(APPROVER2)),
        )
        .await;
        assert!(reply.contains("can now approve and deny"), "{reply}");
        let created = events(&h, AuditKind::DelegationCreated).await;
        assert_eq!(created.len(), 1);
        assert!(created[0].record.actor.id().ends_with("/UAPPROVER1"));
        assert!(
            created[0].record.details["delegate"]
                .as_str()
                .unwrap()
                .ends_with("/UAPPROVER2")
        );

        let told: Vec<String> = h
            .slack
            .dms_to(APPROVER2)
            .iter()
            .map(|d| d.all_text())
            .collect();
        assert!(
            told.iter()
                .any(|t| t.contains("<@UAPPROVER1> has let you approve and deny")),
            "the delegate is told: {told:#?}"
        );
        let listed = say(&h, APPROVER2, "delegations").await;
        assert!(
            listed.contains("You may approve on behalf of") && listed.contains("<@UAPPROVER1>"),
            "{listed}"
        );
        let listed = say(&h, APPROVER1, "delegations").await;
        assert!(listed.contains("<@UAPPROVER2>"), "{listed}");

        let req = request(&h, "dev-network").await;
        let m = h.approval_message(req.id);
        let refusal = click(
            &h,
            APPROVER2,
            action::APPROVE,
            &req.id.to_string(),
            APPROVALS,
            &m.ts,
        )
        .await;
        assert_eq!(refusal, "", "no refusal for the delegate");
        h.wait_status(req.id, RequestStatus::Active).await;

        let approved = events(&h, AuditKind::AccessApproved).await;
        assert_eq!(approved.len(), 1);
        let ev = &approved[0].record;
        assert!(
            ev.actor.id().ends_with("/UAPPROVER2"),
            "recorded as by the delegate"
        );
        assert!(
            ev.details["on_behalf_of"]
                .as_str()
                .unwrap()
                .ends_with("/UAPPROVER1"),
            "{}",
            ev.details
        );
        assert!(
            h.engine.store().verify_audit_chain().await.unwrap().ok,
            "chain intact"
        );
    }
}

#[tokio::test]
async fn a_delegate_is_refused_after_the_period_and_after_revocation() {
    for h in harnesses().await {
        say(
            &h,
            APPROVER1,
            &format!("delegate {} until 1d", mention(APPROVER2)),
        )
        .await;
        h.clock.advance(chrono::Duration::days(2));
        let req = request(&h, "dev-network").await;
        let m = h.approval_message(req.id);
        let refusal = click(
            &h,
            APPROVER2,
            action::APPROVE,
            &req.id.to_string(),
            APPROVALS,
            &m.ts,
        )
        .await;
        assert!(
            refusal.contains("Your delegation from <@UAPPROVER1> ended at")
                && refusal.contains("Nothing was changed"),
            "{refusal}"
        );
        assert_eq!(h.request(req.id).await.status, RequestStatus::Pending);

        // A new delegation, revoked: refused again, saying so.
        let reply = say(
            &h,
            APPROVER1,
            &format!("delegate {} until 2d", mention(APPROVER2)),
        )
        .await;
        assert!(reply.contains("can now approve"), "{reply}");
        let reply = say(
            &h,
            APPROVER1,
            &format!("delegate revoke {}", mention(APPROVER2)),
        )
        .await;
        assert!(
            reply.contains("Ended your delegation to <@UAPPROVER2>"),
            "{reply}"
        );
        assert_eq!(events(&h, AuditKind::DelegationRevoked).await.len(), 1);
        assert!(
            h.slack
                .dms_to(APPROVER2)
                .iter()
                .any(|d| d.all_text().contains("<@UAPPROVER1> ended your delegation")),
            "the delegate is told it ended"
        );
        let refusal = click(
            &h,
            APPROVER2,
            action::DENY,
            &req.id.to_string(),
            APPROVALS,
            &m.ts,
        )
        .await;
        assert!(refusal.contains("was revoked at"), "{refusal}");
        assert_eq!(h.request(req.id).await.status, RequestStatus::Pending);
        assert!(h.engine.store().decisions(req.id).await.unwrap().is_empty());

        // Revoking what is not there says so; the alias works.
        let reply = say(&h, APPROVER1, &format!("undelegate {}", mention(APPROVER2))).await;
        assert!(
            reply.contains("no active delegation to <@UAPPROVER2>"),
            "{reply}"
        );
        let listed = say(&h, APPROVER2, "delegations").await;
        assert!(listed.contains("no active delegations"), "{listed}");
    }
}

#[tokio::test]
async fn a_delegate_never_decides_their_own_request_nor_the_delegators() {
    for h in harnesses().await {
        // APPROVER1 delegates to the requester: Alice still cannot approve her own request.
        say(
            &h,
            APPROVER1,
            &format!("delegate {} until 3d", mention(ALICE)),
        )
        .await;
        let req = request(&h, "dev-network").await;
        let m = h.approval_message(req.id);
        let refusal = click(
            &h,
            ALICE,
            action::APPROVE,
            &req.id.to_string(),
            APPROVALS,
            &m.ts,
        )
        .await;
        assert!(
            refusal.contains("You cannot approve or deny your own request."),
            "{refusal}"
        );
        assert_eq!(h.request(req.id).await.status, RequestStatus::Pending);

        // Nor the delegator's request on the delegator's behalf.
        say(
            &h,
            APPROVER1,
            "request dev-network 2h Rotate the certificates",
        )
        .await;
        let own = h
            .requests()
            .await
            .into_iter()
            .find(|r| r.subject.user_id == APPROVER1)
            .unwrap();
        let m = h.approval_message(own.id);
        let refusal = click(
            &h,
            ALICE,
            action::APPROVE,
            &own.id.to_string(),
            APPROVALS,
            &m.ts,
        )
        .await;
        assert!(
            refusal.contains("You are not an approver for 'dev-network'."),
            "{refusal}"
        );
        assert_eq!(h.request(own.id).await.status, RequestStatus::Pending);
    }
}

#[tokio::test]
async fn only_approvers_delegate_and_bad_delegations_are_refused() {
    for h in harnesses().await {
        let reply = say(
            &h,
            BOB_NO_EMAIL,
            &format!("delegate {} until 3d", mention(ALICE)),
        )
        .await;
        assert!(reply.contains("Only approvers can delegate"), "{reply}");
        let reply = say(
            &h,
            APPROVER1,
            &format!("delegate {} until 3d", mention(APPROVER1)),
        )
        .await;
        assert!(
            reply.contains("You cannot delegate to yourself."),
            "{reply}"
        );
        let reply = say(
            &h,
            APPROVER1,
            &format!("delegate {} until 2020-01-01", mention(APPROVER2)),
        )
        .await;
        assert!(reply.contains("is in the past"), "{reply}");
        let reply = say(
            &h,
            APPROVER1,
            &format!("delegate {} until 120d", mention(APPROVER2)),
        )
        .await;
        assert!(reply.contains("at most 90 days"), "{reply}");
        let reply = say(
            &h,
            APPROVER1,
            &format!("delegate {} until someday", mention(APPROVER2)),
        )
        .await;
        assert!(reply.contains("couldn't read 'someday'"), "{reply}");
        let reply = say(&h, APPROVER1, "delegate @approver2 until 3d").await;
        assert!(reply.contains("mention the person"), "{reply}");
        let reply = say(&h, APPROVER1, &format!("delegate {}", mention(APPROVER2))).await;
        assert!(reply.contains("Say until when"), "{reply}");
        assert!(events(&h, AuditKind::DelegationCreated).await.is_empty());
        assert!(
            h.engine
                .delegations_of(slack_team(), APPROVER1)
                .await
                .unwrap()
                .0
                .is_empty(),
            "nothing stored"
        );
        let help = say(&h, ALICE, "help").await;
        assert!(help.contains("delegate @user until"), "{help}");
    }
}

fn slack_team() -> &'static str {
    testkit::slack::TEAM_ID
}

#[tokio::test]
async fn an_undecided_request_escalates_after_the_delay_and_the_second_set_approves() {
    for h in harnesses().await {
        let req = request(&h, "esc-network").await;
        let m = h.approval_message(req.id);
        // Before the delay the escalation approver is not an approver.
        let refusal = click(
            &h,
            APPROVER2,
            action::APPROVE,
            &req.id.to_string(),
            APPROVALS,
            &m.ts,
        )
        .await;
        assert!(refusal.contains("You are not an approver"), "{refusal}");
        h.clock.advance(chrono::Duration::minutes(29));
        h.run_jobs().await;
        assert!(h.slack.messages_in(ESCALATIONS).is_empty(), "not yet");

        h.clock.advance(chrono::Duration::minutes(2));
        h.run_jobs().await;
        let esc = h.slack.messages_in(ESCALATIONS);
        assert_eq!(esc.len(), 1, "one escalation message");
        assert!(
            esc[0].all_text().contains("Escalated") && esc[0].all_text().contains("<@UAPPROVER2>"),
            "{}",
            esc[0].all_text()
        );
        assert!(
            esc[0]
                .buttons()
                .contains(&(action::APPROVE.to_string(), req.id.to_string()))
        );
        assert!(
            h.slack
                .dms_to(APPROVER2)
                .iter()
                .any(|d| d.all_text().contains("Escalated")),
            "the escalation approver gets it directly too"
        );
        let told: Vec<String> = h.slack.dms_to(ALICE).iter().map(|d| d.all_text()).collect();
        assert!(
            told.iter().any(
                |t| t.contains("Request escalated") && t.contains("escalated to <@UAPPROVER2>")
            ),
            "{told:#?}"
        );
        let escalated = events(&h, AuditKind::RequestEscalated).await;
        assert_eq!(escalated.len(), 1);
        assert_eq!(escalated[0].record.request_id, Some(req.id));

        // Running the jobs again does not escalate twice.
        h.clock.advance(chrono::Duration::minutes(5));
        h.run_jobs().await;
        assert_eq!(h.slack.messages_in(ESCALATIONS).len(), 1);

        let refusal = click(
            &h,
            APPROVER2,
            action::APPROVE,
            &req.id.to_string(),
            ESCALATIONS,
            &esc[0].ts,
        )
        .await;
        assert_eq!(refusal, "");
        h.wait_status(req.id, RequestStatus::Active).await;
        h.run_jobs().await;
        let esc = h.slack.message(ESCALATIONS, &esc[0].ts).unwrap();
        assert!(esc.buttons().is_empty(), "decided: buttons gone everywhere");
        assert!(h.approval_message(req.id).buttons().is_empty());
        let approved = events(&h, AuditKind::AccessApproved).await;
        assert_eq!(approved[0].record.details["via_escalation"], true);
    }
}

#[tokio::test]
async fn a_request_decided_in_time_does_not_escalate() {
    for h in harnesses().await {
        let req = request(&h, "esc-network").await;
        let m = h.approval_message(req.id);
        click(
            &h,
            APPROVER1,
            action::DENY,
            &req.id.to_string(),
            APPROVALS,
            &m.ts,
        )
        .await;
        h.wait_status(req.id, RequestStatus::Denied).await;
        h.clock.advance(chrono::Duration::minutes(45));
        h.run_jobs().await;
        assert!(h.slack.messages_in(ESCALATIONS).is_empty());
        assert!(h.slack.dms_to(APPROVER2).is_empty());
        assert!(
            !h.slack
                .dms_to(ALICE)
                .iter()
                .any(|d| d.all_text().contains("escalated")),
        );
        assert!(events(&h, AuditKind::RequestEscalated).await.is_empty());
        let escalate_jobs = h
            .engine
            .store()
            .jobs(&access_core::ports::JobFilter {
                kind: Some("escalate".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(escalate_jobs.len(), 1, "scheduled with the request");
        assert_eq!(escalate_jobs[0].status, access_core::jobs::JobStatus::Done);
    }
}

#[tokio::test]
async fn a_delegate_of_an_escalation_approver_decides_once_it_escalated() {
    for h in harnesses().await {
        // APPROVER2 approves esc-network only through escalation, and may delegate for it.
        let reply = say(
            &h,
            APPROVER2,
            &format!("delegate {} until 1d", mention(MALLORY)),
        )
        .await;
        assert!(reply.contains("can now approve"), "{reply}");
        let req = request(&h, "esc-network").await;
        let m = h.approval_message(req.id);
        let refusal = click(
            &h,
            MALLORY,
            action::APPROVE,
            &req.id.to_string(),
            APPROVALS,
            &m.ts,
        )
        .await;
        assert!(refusal.contains("not an approver"), "{refusal}");
        h.clock.advance(chrono::Duration::minutes(31));
        h.run_jobs().await;
        let refusal = click(
            &h,
            MALLORY,
            action::APPROVE,
            &req.id.to_string(),
            APPROVALS,
            &m.ts,
        )
        .await;
        assert_eq!(refusal, "");
        h.wait_status(req.id, RequestStatus::Active).await;
        let approved = events(&h, AuditKind::AccessApproved).await;
        let d = &approved[0].record.details;
        assert!(
            d["on_behalf_of"].as_str().unwrap().ends_with("/UAPPROVER2"),
            "{d}"
        );
        assert_eq!(d["via_escalation"], true);
    }
}

#[test]
fn the_grammar_reads_delegations() {
    use slack_adapter::grammar::{Command, MentionedUser, Surface, parse};
    let alex = MentionedUser {
        user_id: "U0ALEX".into(),
        name: "alex".into(),
    };
    assert_eq!(
        parse("delegate <@U0ALEX|alex> until 2026-12-01", Surface::Access),
        Ok(Command::Delegate {
            user: alex.clone(),
            until: "2026-12-01".into()
        })
    );
    // Slack's escaping as received in the form body, and no `until`.
    assert_eq!(
        parse("delegate &lt;@U0ALEX|alex&gt; 3d", Surface::DirectMessage),
        Ok(Command::Delegate {
            user: alex.clone(),
            until: "3d".into()
        })
    );
    let revoke = Ok(Command::Undelegate { user: alex.clone() });
    assert_eq!(
        parse("delegate revoke <@U0ALEX|alex>", Surface::Access),
        revoke
    );
    assert_eq!(parse("undelegate <@U0ALEX|alex>", Surface::Access), revoke);
    assert_eq!(
        parse("delegations", Surface::Access),
        Ok(Command::Delegations)
    );
    assert_eq!(
        parse("delegate list", Surface::Access),
        Ok(Command::Delegations)
    );
    for (text, says) in [
        ("delegate", "Usage: `/access delegate @user until"),
        ("delegate @alex until 3d", "couldn't tell who `@alex` is"),
        ("delegate <@U0ALEX|alex>", "Say until when"),
        ("delegate <@U0ALEX|alex> until", "Say until when"),
        ("delegate revoke", "Say whose delegation to end"),
        ("undelegate alex", "Say whose delegation to end"),
    ] {
        let e = parse(text, Surface::Access).unwrap_err().to_string();
        assert!(e.contains(says), "{text}: {e}");
    }
}

#[tokio::test]
async fn a_delegate_cannot_add_a_second_vote_for_a_delegator_who_voted() {
    for h in harnesses().await {
        say(
            &h,
            APPROVER1,
            &format!("delegate {} until 1d", mention(APPROVER2)),
        )
        .await;
        let req = request(&h, "two-key").await;
        let m = h.approval_message(req.id);
        let id = req.id.to_string();
        assert_eq!(
            click(&h, APPROVER1, action::APPROVE, &id, APPROVALS, &m.ts).await,
            ""
        );
        let refusal = click(&h, APPROVER2, action::APPROVE, &id, APPROVALS, &m.ts).await;
        assert!(
            refusal.contains("<@UAPPROVER1> has already decided on this request"),
            "{refusal}"
        );
        assert_eq!(h.request(req.id).await.status, RequestStatus::Pending);
        assert_eq!(h.engine.store().decisions(req.id).await.unwrap().len(), 1);
        // The other approver completes the quorum.
        assert_eq!(
            click(&h, MALLORY, action::APPROVE, &id, APPROVALS, &m.ts).await,
            ""
        );
        h.run_jobs().await;
        h.wait_status(req.id, RequestStatus::Active).await;
    }
}
