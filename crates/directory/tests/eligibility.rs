//! The directory behind access-core's `check_eligibility` and `check_approver`: the exact
//! messages a person sees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use access_core::policy::{ApproverError, EligibilityError, check_approver, check_eligibility};
use access_core::ports::{Directory, DirectoryError};
use access_core::{
    AccessDuration, AccessRequest, Actor, ApprovalPolicy, ApproverSet, DurationBounds,
    EligibilityRule, Email, Resource, ResourceId, Subject,
};
use common::{BOT_TOKEN, FakeSlack, fixture_index};
use directory::{OrgData, OrgDataSource, OrgDirectory, SlackGroupsSettings, SlackUserGroups};

fn resource(rules: Vec<EligibilityRule>) -> Resource {
    Resource {
        id: ResourceId::parse("gcp-access").unwrap(),
        description: "GCP workspace".into(),
        provider: "dry-run".into(),
        settings: serde_json::Value::Null,
        durations: DurationBounds::new(
            AccessDuration::from_secs(7 * 86400).unwrap(),
            AccessDuration::from_secs(60).unwrap(),
            AccessDuration::from_secs(7 * 86400).unwrap(),
        )
        .unwrap(),
        eligibility: rules,
        approval: ApprovalPolicy::Auto,
        extendable: false,
        allow_guests: false,
        allow_external: false,
        emergency: None,
    }
}

fn subject(user: &str, email: Option<&str>) -> Subject {
    Subject {
        team_id: "T0".into(),
        user_id: user.into(),
        email: email.map(|e| Email::parse(e).unwrap()),
        name: user.into(),
    }
}

fn org_directory() -> OrgDirectory {
    OrgDirectory::new().with_org_data(Arc::new(OrgData::from_index(fixture_index())))
}

const HP: &str = "Hybrid Platforms";

#[tokio::test]
async fn members_pass_and_non_members_get_the_documents_message() {
    let dir = org_directory();
    let r = resource(vec![EligibilityRule::Org(HP.into())]);
    check_eligibility(&r, &subject("U01JDOE", Some("jdoe@example.com")), &dir)
        .await
        .unwrap();
    // By e-mail when the workspace's Slack id is unknown to the index.
    check_eligibility(
        &r,
        &subject("U99STAGING", Some("bwilson@example.com")),
        &dir,
    )
    .await
    .unwrap();

    let err = check_eligibility(&r, &subject("U05DLEE", Some("dlee@example.com")), &dir)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "You are not a member of the 'Hybrid Platforms' organization. Access can only be granted to Hybrid Platforms members."
    );
    assert!(
        matches!(err, EligibilityError::RuleFailed { rule: EligibilityRule::Org(ref o), .. } if o == HP)
    );

    // Unknown everywhere.
    let err = check_eligibility(&r, &subject("U99", Some("stranger@example.org")), &dir)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("You are not a member of the 'Hybrid Platforms' organization.")
    );
}

#[tokio::test]
async fn directory_unavailable_refuses_with_the_documents_message() {
    let r = resource(vec![EligibilityRule::Org(HP.into())]);
    let s = subject("U01JDOE", Some("jdoe@example.com"));

    // Not configured at all.
    let err = check_eligibility(&r, &s, &OrgDirectory::new())
        .await
        .unwrap_err();
    assert_eq!(err, EligibilityError::DirectoryUnavailable);
    assert_eq!(
        err.to_string(),
        "Organizational data service is not available"
    );

    // Configured, but the first load failed (missing file): still unavailable, never a guess.
    let org = Arc::new(OrgData::new(OrgDataSource::File(
        "/nonexistent/comprehensive_index_dump.json".into(),
    )));
    assert!(org.reload().await.is_err());
    let dir = OrgDirectory::new().with_org_data(org);
    let err = check_eligibility(&r, &s, &dir).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Organizational data service is not available"
    );
    assert!(matches!(
        dir.satisfies(&s, &EligibilityRule::Org(HP.into())).await,
        Err(DirectoryError::Unavailable)
    ));
}

#[tokio::test]
async fn all_rules_must_hold_with_a_specific_message_each() {
    let slack = FakeSlack::start().await;
    slack.set_group("S0CIADMINS", &["U01JDOE"]);
    let mut settings = SlackGroupsSettings::new(BOT_TOKEN);
    settings.api_url = slack.base_url.clone();
    settings.cache_ttl = Duration::from_secs(60);
    let dir = org_directory().with_slack_groups(Arc::new(SlackUserGroups::new(settings)));

    let r = resource(vec![
        EligibilityRule::Org(HP.into()),
        EligibilityRule::EmailDomain(vec!["example.com".into(), "@example.net".into()]),
        EligibilityRule::SlackGroup("S0CIADMINS".into()),
    ]);
    check_eligibility(&r, &subject("U01JDOE", Some("jdoe@example.com")), &dir)
        .await
        .unwrap();

    // In the org and the domain, not in the Slack group.
    let err = check_eligibility(&r, &subject("U02ASMITH", Some("asmith@example.com")), &dir)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "You are not a member of the Slack user group <!subteam^S0CIADMINS>. Access to 'gcp-access' is limited to that group."
    );

    // E-mail domain rule, decided by access-core.
    let r2 = resource(vec![EligibilityRule::EmailDomain(vec![
        "example.net".into(),
    ])]);
    let err = check_eligibility(&r2, &subject("U01JDOE", Some("jdoe@example.com")), &dir)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Access to 'gcp-access' is limited to e-mail addresses in @example.net. Your Slack profile's e-mail is not."
    );
    assert!(
        dir.satisfies(
            &subject("U1", Some("a@EXAMPLE.net")),
            &EligibilityRule::EmailDomain(vec!["example.net".into()])
        )
        .await
        .unwrap()
    );

    // A Slack group rule without Slack configured is unavailable, not "not a member".
    let no_slack = org_directory();
    let r3 = resource(vec![EligibilityRule::SlackGroup("S0CIADMINS".into())]);
    let err = check_eligibility(&r3, &subject("U01JDOE", None), &no_slack)
        .await
        .unwrap_err();
    assert_eq!(err, EligibilityError::DirectoryUnavailable);

    // A group Slack does not know: refused (logged as a failure), never granted.
    let r4 = resource(vec![EligibilityRule::SlackGroup("S0GONE".into())]);
    assert!(
        check_eligibility(&r4, &subject("U01JDOE", None), &dir)
            .await
            .is_err()
    );
    assert_eq!(
        slack.requests(),
        2,
        "S0CIADMINS once (then cached), S0GONE once"
    );
}

#[tokio::test]
async fn approver_groups_use_the_same_directory() {
    let dir = org_directory();
    let mut r = resource(vec![EligibilityRule::Anyone]);
    r.approval = ApprovalPolicy::Approvers {
        approvers: ApproverSet {
            users: vec![],
            slack_groups: vec![],
            groups: vec!["Release & CI".into()],
        },
        required: 1,
        channel: None,
        pending_ttl: ApprovalPolicy::DEFAULT_PENDING_TTL,
        escalate_after: None,
        escalation_approvers: ApproverSet::default(),
        escalation_channel: None,
    };
    let requester = subject("U05DLEE", Some("dlee@example.com"));
    let request: AccessRequest = serde_json::from_value(serde_json::json!({
        "id": access_core::RequestId::new(),
        "subject": requester,
        "resource": "gcp-access",
        "kind": "new",
        "duration": "4h",
        "justification": "debugging CI",
        "status": "pending",
        "created_at": "2026-11-22T10:00:00Z",
        "updated_at": "2026-11-22T10:00:00Z",
        "pending_until": "2026-11-23T10:00:00Z",
        "grant_id": null,
        "decided_by": null,
        "failure": null,
        "version": 1
    }))
    .unwrap();
    let clicker = |user: &str| Actor::User {
        team_id: "T0".into(),
        user_id: user.into(),
        name: user.into(),
    };
    // Approvers are known by Slack id only (a click carries no e-mail).
    check_approver(&r, &request, &clicker("U02ASMITH"), &dir)
        .await
        .unwrap();
    let err = check_approver(&r, &request, &clicker("U07FGARCIA"), &dir)
        .await
        .unwrap_err();
    assert_eq!(err, ApproverError::NotAnApprover("gcp-access".into()));
    let err = check_approver(&r, &request, &clicker("U02ASMITH"), &OrgDirectory::new())
        .await
        .unwrap_err();
    assert_eq!(err, ApproverError::DirectoryUnavailable);
}

#[tokio::test]
async fn built_from_the_documents_environment_against_fake_gcs_and_slack() {
    let gcs = testkit::gcs::FakeGcs::start("ya29.token").await;
    gcs.put_object(
        "org-bucket",
        "production/org_data.json",
        common::fixture_bytes(),
    );
    let slack = FakeSlack::start().await;
    slack.set_group("S0ONCALL", &["U05DLEE"]);
    let vars: std::collections::HashMap<&str, String> = [
        ("ORG_DATA_BUCKET", "org-bucket".to_string()),
        (
            "ORG_DATA_OBJECT_PATH",
            "production/org_data.json".to_string(),
        ),
        ("ORG_DATA_GCS_URL", gcs.base_url()),
        ("SLACK_BOT_TOKEN", BOT_TOKEN.to_string()),
        ("SLACK_API_URL", slack.base_url.clone()),
    ]
    .into_iter()
    .collect();
    let config = directory::DirectoryConfig::from_env_with(|k| vars.get(k).cloned()).unwrap();
    let google: Arc<dyn gcp_auth::AccessTokenSource> =
        Arc::new(gcp_auth::StaticToken("ya29.token".into()));
    let dir = config.build(Some(google)).unwrap();

    let r = resource(vec![EligibilityRule::Org(HP.into())]);
    let jane = subject("U01JDOE", Some("jdoe@example.com"));
    // Built but not loaded yet: unavailable.
    assert_eq!(
        check_eligibility(&r, &jane, &dir).await.unwrap_err(),
        EligibilityError::DirectoryUnavailable
    );
    dir.org_data().unwrap().reload().await.unwrap();
    check_eligibility(&r, &jane, &dir).await.unwrap();

    let on_call = resource(vec![EligibilityRule::SlackGroup("S0ONCALL".into())]);
    check_eligibility(&on_call, &subject("U05DLEE", None), &dir)
        .await
        .unwrap();
    assert!(check_eligibility(&on_call, &jane, &dir).await.is_err());
}
