//! `/access admin …` (issue 17 item 4, docs/admin-commands.md), end to end through Slack against
//! the fake Slack: signed slash command (or DM) → router → inbox job → engine → answer; on
//! SQLite and, with `TEST_DATABASE_URL`, PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use access_core::engine::EngineSettings;
use access_core::ports::AuditFilter;
use access_core::providers::DryRunProvider;
use access_core::request::RequestKind;
use access_core::{ApproverSet, AuditKind, GrantStatus, Subject};
use common::*;
use slack_adapter::grammar::{self, AdminCommand, Command, Surface};
use testkit::db::TestDb;
use testkit::provider::TestProvider;
use testkit::slack::{FakeUser, TEAM_ID};
use testkit::submission::{Ask, SubmitTyped};

const ADMIN: &str = "UADMIN";

fn settings() -> EngineSettings {
    EngineSettings {
        admins: ApproverSet {
            users: vec![ADMIN.to_string()],
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn admin_harness(db: TestDb, provider: Arc<dyn access_core::ports::Provider>) -> Harness {
    let h = harness_with_settings(db, default_resources(), |_| {}, provider, settings()).await;
    h.slack
        .add_user(FakeUser::new(ADMIN, "admin").email("admin@example.com"));
    h
}

/// A slash command's answer (the acknowledgement, or what followed its receipt).
async fn access(h: &Harness, user: &str, text: &str) -> String {
    let (reply, url) = h.command("/access", user, text).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["response_type"], "ephemeral", "{}", reply.body);
    h.answer(&reply, &url).await
}

async fn refused_events(h: &Harness, user: &str) -> Vec<access_core::AuditEvent> {
    h.engine
        .store()
        .audit_events(&AuditFilter {
            kind: Some(AuditKind::AdminCommandRefused),
            subject: Some(format!("{TEAM_ID}/{user}")),
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn admin_grants_lists_live_grants_and_refuses_everybody_else() {
    for db in databases().await {
        let kind = db.kind;
        let h = admin_harness(db, Arc::new(DryRunProvider::new())).await;
        let ack = access(&h, ALICE, "request gcp-access 2h deploy").await;
        assert!(ack.contains("approved"), "{kind}: {ack}");
        h.run_jobs().await;

        let text = access(&h, ADMIN, "admin grants").await;
        assert!(
            text.contains("Live grants in this workspace"),
            "{kind}: {text}"
        );
        assert!(
            text.contains("<@UALICE> — *gcp-access*, expires in 2h 0m"),
            "{kind}: {text}"
        );
        let one = access(&h, ADMIN, "admin grants gcp-access").await;
        assert!(one.contains("<@UALICE>"), "{kind}: {one}");
        let none = access(&h, ADMIN, "admin grants dev-network").await;
        assert!(
            none.contains("No live grants to *dev-network*"),
            "{kind}: {none}"
        );
        let unknown = access(&h, ADMIN, "admin grants nope").await;
        assert!(
            unknown
                .starts_with("Unknown resource 'nope'. Valid resources: dev-network, gcp-access"),
            "{kind}: {unknown}"
        );

        // Anybody else: a clear refusal, audited, nothing listed.
        let refused = access(&h, MALLORY, "admin grants").await;
        assert!(
            refused.starts_with("Only Gatehouse admins can use `admin` commands"),
            "{kind}: {refused}"
        );
        assert!(!refused.contains("UALICE"), "{kind}: {refused}");
        let audited = refused_events(&h, MALLORY).await;
        assert_eq!(audited.len(), 1, "{kind}");
        assert_eq!(audited[0].record.details["command"], "grants", "{kind}");
        assert_eq!(
            audited[0].record.actor.id(),
            format!("slack:{TEAM_ID}/{MALLORY}"),
            "{kind}"
        );
        // The same from a DM: the answer goes to the admin's DM with the bot.
        let r = h
            .event(
                "EvADMIN1",
                testkit::slack::message_im_event(ADMIN, "admin grants"),
            )
            .await;
        assert_eq!(r.status, 200, "{kind}");
        assert!(
            h.slack
                .wait_until(Duration::from_secs(5), |s| s
                    .dms_to(ADMIN)
                    .iter()
                    .any(|m| m.all_text().contains("<@UALICE> — *gcp-access*")))
                .await,
            "{kind}: no DM answer: {:#?}",
            h.slack.dms_to(ADMIN)
        );
    }
}

#[tokio::test]
async fn admin_pending_lists_requests_with_their_age() {
    for db in databases().await {
        let kind = db.kind;
        let h = admin_harness(db, Arc::new(DryRunProvider::new())).await;
        let ack = access(
            &h,
            ALICE,
            "request dev-network 4h Running database migration",
        )
        .await;
        assert!(ack.starts_with("Access request submitted"), "{kind}: {ack}");
        h.run_jobs().await;
        h.clock.advance(chrono::Duration::minutes(30));
        let ack = access(&h, APPROVER1, "request prod-db 1h hotfix").await;
        assert!(ack.starts_with("Access request submitted"), "{kind}: {ack}");
        h.run_jobs().await;
        h.clock.advance(chrono::Duration::minutes(5));

        let text = access(&h, ADMIN, "admin pending").await;
        let alice = text
            .find("<@UALICE> — *dev-network* for 4 hours, waiting 35m")
            .unwrap_or_else(|| panic!("{kind}: {text}"));
        let approver = text
            .find("<@UAPPROVER1> — *prod-db* for 1 hour, waiting 5m")
            .unwrap_or_else(|| panic!("{kind}: {text}"));
        assert!(alice < approver, "{kind}: longest waiting first: {text}");

        let refused = access(&h, ALICE, "admin pending").await;
        assert!(
            refused.starts_with("Only Gatehouse admins"),
            "{kind}: {refused}"
        );
        assert_eq!(refused_events(&h, ALICE).await.len(), 1, "{kind}");
    }
}

#[tokio::test]
async fn admin_revoke_takes_access_away_at_the_provider_and_tells_the_person() {
    for db in databases().await {
        let kind = db.kind;
        let provider = Arc::new(TestProvider::new());
        let h = admin_harness(db, provider.clone()).await;
        let ack = access(&h, ALICE, "request gcp-access 2h deploy").await;
        assert!(ack.contains("approved"), "{kind}: {ack}");
        h.run_jobs().await;
        let held = (ALICE.to_string(), "gcp-access".to_string());
        assert!(provider.holders().contains(&held), "{kind}");

        // Not an admin: refused, nothing changes.
        let refused = access(&h, MALLORY, "admin revoke <@UALICE|alice> gcp-access").await;
        assert!(
            refused.starts_with("Only Gatehouse admins"),
            "{kind}: {refused}"
        );
        h.run_jobs().await;
        assert!(
            provider.holders().contains(&held),
            "{kind}: a refusal revoked access"
        );
        assert_eq!(
            refused_events(&h, MALLORY).await[0].record.details["command"],
            "revoke"
        );

        let text = access(&h, ADMIN, "admin revoke <@UALICE|alice> gcp-access").await;
        assert!(
            text.contains("<@UALICE>'s access to *gcp-access*"),
            "{kind}: {text}"
        );
        h.run_jobs().await;
        assert!(
            !provider.holders().contains(&held),
            "{kind}: still held at the provider"
        );
        let grant = h
            .engine
            .store()
            .grants(&Default::default())
            .await
            .unwrap()
            .into_iter()
            .next()
            .unwrap();
        assert_eq!(grant.status, GrantStatus::Revoked, "{kind}");
        assert_eq!(
            grant.revoked_by.as_ref().map(|a| a.id()),
            Some(format!("slack:{TEAM_ID}/{ADMIN}")),
            "{kind}"
        );
        // The audit trail names the admin; the person is told who revoked it.
        let revocations = h
            .engine
            .store()
            .audit_events(&AuditFilter {
                kind: Some(AuditKind::RevocationRequested),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            revocations[0].record.actor.id(),
            format!("slack:{TEAM_ID}/{ADMIN}"),
            "{kind}"
        );
        assert!(
            h.slack
                .wait_until(Duration::from_secs(5), |s| s
                    .dms_to(ALICE)
                    .iter()
                    .any(|m| m.all_text().contains("has been revoked by <@UADMIN>")))
                .await,
            "{kind}: Alice was not told: {:#?}",
            h.slack.dms_to(ALICE)
        );
        // Nothing left to revoke.
        let again = access(&h, ADMIN, "admin revoke UALICE gcp-access").await;
        assert!(
            again.contains("has no active access to 'gcp-access'"),
            "{kind}: {again}"
        );
        let unknown = access(&h, ADMIN, "admin revoke UALICE nope").await;
        assert!(
            unknown.starts_with("Unknown resource 'nope'"),
            "{kind}: {unknown}"
        );
    }
}

#[tokio::test]
async fn admin_audit_shows_a_persons_recent_events_newest_first() {
    for db in databases().await {
        let kind = db.kind;
        let h = admin_harness(db, Arc::new(DryRunProvider::new())).await;
        let ack = access(&h, ALICE, "request dev-network 1h investigating").await;
        assert!(ack.starts_with("Access request submitted"), "{kind}: {ack}");
        h.run_jobs().await;
        let id = h.wait_request("dev-network").await.id;
        h.clock.advance(chrono::Duration::minutes(1));
        h.engine
            .approve(
                id,
                access_core::Actor::User {
                    team_id: TEAM_ID.into(),
                    user_id: APPROVER1.into(),
                    name: "approver1".into(),
                },
            )
            .await
            .unwrap();
        h.run_jobs().await;

        let text = access(&h, ADMIN, "admin audit <@UALICE>").await;
        assert!(
            text.contains("Recent audit events of <@UALICE>"),
            "{kind}: {text}"
        );
        let requested = text.find("`access_requested`").expect("requested");
        let approved = text.find("`access_approved`").expect("approved");
        let granted = text.find("`access_granted`").expect("granted");
        assert!(
            granted < approved && approved < requested,
            "{kind}: newest first: {text}"
        );
        assert!(text.contains("by <@UAPPROVER1>"), "{kind}: {text}");

        // The approver's trail includes what they did to others.
        let theirs = access(&h, ADMIN, "admin audit UAPPROVER1").await;
        assert!(
            theirs.contains("`access_approved` *dev-network* for <@UALICE> by <@UAPPROVER1>"),
            "{kind}: {theirs}"
        );

        let refused = access(&h, APPROVER1, "admin audit <@UALICE>").await;
        assert!(
            refused.starts_with("Only Gatehouse admins"),
            "{kind}: {refused}"
        );
        assert!(!refused.contains("access_requested"), "{kind}");
    }
}

#[tokio::test]
async fn long_lists_are_bounded_with_a_pointer_to_the_console() {
    let h = admin_harness(TestDb::sqlite(), Arc::new(DryRunProvider::new())).await;
    for i in 0..25 {
        h.engine
            .submit_typed(Ask {
                subject: Subject {
                    team_id: TEAM_ID.into(),
                    user_id: format!("UPERSON{i:02}"),
                    email: Some(access_core::Email::parse(&format!("p{i}@example.com")).unwrap()),
                    name: format!("person {i}"),
                },
                resource: "gcp-access".into(),
                duration: Some("1h".into()),
                justification: "load".into(),
                kind: RequestKind::New,
            })
            .await
            .unwrap();
    }
    h.run_jobs().await;
    let text = access(&h, ADMIN, "admin grants").await;
    assert_eq!(text.matches("\n• ").count(), 20, "{text}");
    assert!(
        text.contains("_…and 5 more — see the console (`/console/grants`) or the admin API"),
        "{text}"
    );
    // Another workspace's admin sees none of them.
    let mut other = testkit::slack::SlashCommand::new(
        "/access",
        ADMIN,
        "admin grants",
        &h.slack.response_url(),
        &h.slack.trigger_id(),
    );
    other.team_id = "T0OTHER".into();
    let reply = h
        .post(
            "/slack/commands",
            "application/x-www-form-urlencoded",
            other.body(),
        )
        .await;
    assert!(
        reply.text().starts_with("No live grants in this workspace"),
        "{}",
        reply.body
    );
}

#[test]
fn the_admin_grammar() {
    let p = |t: &str| grammar::parse(t, Surface::Access);
    assert_eq!(
        p("admin grants"),
        Ok(Command::Admin(AdminCommand::Grants { resource: None }))
    );
    assert_eq!(
        p("admin grants dev-network"),
        Ok(Command::Admin(AdminCommand::Grants {
            resource: Some("dev-network".into())
        }))
    );
    assert_eq!(
        p("admin pending"),
        Ok(Command::Admin(AdminCommand::Pending))
    );
    assert_eq!(
        p("admin revoke <@U123ABC|alice> dev-network"),
        Ok(Command::Admin(AdminCommand::Revoke {
            user: "U123ABC".into(),
            resource: "dev-network".into()
        }))
    );
    // Slack escapes `<` and `>` in command text.
    assert_eq!(
        p("admin audit &lt;@W42&gt;"),
        Ok(Command::Admin(AdminCommand::Audit { user: "W42".into() }))
    );
    assert!(matches!(p("admin"), Ok(Command::Help { .. })));
    let e = p("admin revoke @alice dev-network")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("I can't tell who `@alice` is"), "{e}");
    assert!(e.contains("/access admin revoke @user <resource>"), "{e}");
    let e = p("admin revoke <@U1X>").unwrap_err().to_string();
    assert!(
        e.starts_with("Say which resource to revoke from <@U1X>"),
        "{e}"
    );
    let e = p("admin frobnicate").unwrap_err().to_string();
    assert!(e.starts_with("Unknown admin command `frobnicate`"), "{e}");
    let help = grammar::help_text(Surface::Access, grammar::HelpTopic::General);
    assert!(help.contains("`/access help admin`"), "{help}");
    let admin_help = grammar::help_text(Surface::Access, grammar::HelpTopic::Admin);
    assert!(
        admin_help.contains("`/access admin audit @user`"),
        "{admin_help}"
    );
}
