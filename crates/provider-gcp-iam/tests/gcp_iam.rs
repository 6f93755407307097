//! The provider against the fake Google Cloud (testkit::gcp): real HTTP, real JWT token flow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use access_core::ids::{GrantId, RequestId, ResourceId};
use access_core::ports::{
    Clock, GrantOutcome, GrantRequest, Provider, ProviderError, RevokeRequest,
};
use access_core::resource::{ApprovalPolicy, EligibilityRule};
use access_core::{DurationBounds, Email, Resource, Subject};
use chrono::{DateTime, SubsecRound, Utc};
use gcp_auth::{AccessTokenSource, ServiceAccountTokenSource};
use provider_gcp_iam::{GcpIamConfig, GcpIamProvider, naming, retry};
use serde_json::{Value, json};
use testkit::gcp::{BOT_EMAIL, FakeGcp, GcpFault, GcpOp, OTHER_KEY_PEM};

const PROJECT: &str = "ephemeral-access-1";
const ROLE: &str = "projects/ephemeral-access-1/roles/chat_bot_user";
const JUSTIFICATION: &str = "Need to debug CI infrastructure issues";

#[derive(Debug)]
struct TestClock(Mutex<DateTime<Utc>>);

impl TestClock {
    fn advance(&self, d: chrono::Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

struct Env {
    gcp: FakeGcp,
    provider: Arc<GcpIamProvider>,
    clock: Arc<TestClock>,
}

fn unrelated_policy() -> Value {
    json!({
        "bindings": [
            {"role": "roles/browser", "members": ["user:owner@example.com", "group:admins@example.com"]},
            {"role": "roles/storage.objectViewer", "members": ["user:eve@example.com"],
             "condition": {"title": "expirable access", "description": "Does not grant access after Sep 2030",
                           "expression": "request.time < timestamp('2030-10-01T00:00:00.000Z')"}}
        ],
        "auditConfigs": [{"service": "allServices", "auditLogConfigs": [{"logType": "DATA_READ"}]}]
    })
}

async fn env_with(tweak: impl FnOnce(&mut GcpIamConfig)) -> Env {
    let gcp = FakeGcp::start().await;
    gcp.add_project(PROJECT);
    gcp.set_policy(PROJECT, unrelated_policy());
    let tokens = ServiceAccountTokenSource::from_json(&gcp.service_account_key_json()).unwrap();
    let mut config = GcpIamConfig {
        iam_url: gcp.url(),
        crm_url: gcp.url(),
        ..Default::default()
    }
    .with_fast_retries(1000);
    tweak(&mut config);
    let clock = Arc::new(TestClock(Mutex::new(Utc::now().trunc_subsecs(0))));
    let provider = Arc::new(
        GcpIamProvider::new(config, Arc::new(tokens))
            .unwrap()
            .with_clock(clock.clone()),
    );
    Env {
        gcp,
        provider,
        clock,
    }
}

async fn env() -> Env {
    env_with(|_| {}).await
}

fn resource(settings: Value) -> Resource {
    Resource {
        id: ResourceId::parse("gcp-access").unwrap(),
        description: "GCP workspace".into(),
        provider: "gcp-iam".into(),
        settings,
        durations: DurationBounds::new(
            "7d".parse().unwrap(),
            "1h".parse().unwrap(),
            "7d".parse().unwrap(),
        )
        .unwrap(),
        eligibility: vec![EligibilityRule::Org("Hybrid Platforms".into())],
        approval: ApprovalPolicy::Auto,
        extendable: false,
        allow_guests: false,
        allow_external: false,
        emergency: None,
    }
}

fn key_resource() -> Resource {
    resource(
        json!({"project": PROJECT, "role": ROLE, "email_domain": "example.com", "resource_cleanup_days": 7}),
    )
}

fn user_resource() -> Resource {
    resource(json!({"project": PROJECT, "role": ROLE, "mode": "user_binding"}))
}

fn subject(email: &str) -> Subject {
    Subject {
        team_id: "T1".into(),
        user_id: format!("U{}", email.len()),
        email: Some(Email::parse(email).unwrap()),
        name: email.into(),
    }
}

fn request(env: &Env, email: &str, resource: Resource, existing: Option<Value>) -> GrantRequest {
    GrantRequest {
        grant_id: GrantId::new(),
        request_id: RequestId::new(),
        subject: subject(email),
        resource,
        expires_at: env.clock.now() + chrono::Duration::days(7),
        justification: JUSTIFICATION.into(),
        existing,
        intent: None,
    }
}

fn revoke_req(email: &str, resource: Resource, handle: Value) -> RevokeRequest {
    RevokeRequest {
        grant_id: GrantId::new(),
        subject: subject(email),
        resource,
        handle,
        intent: serde_json::Value::Null,
    }
}

fn temp_bindings(gcp: &FakeGcp) -> Vec<Value> {
    gcp.policy(PROJECT)["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["condition"]["title"] == "Temp Access")
        .cloned()
        .collect()
}

fn members_of(gcp: &FakeGcp) -> Vec<String> {
    temp_bindings(gcp)
        .iter()
        .flat_map(|b| b["members"].as_array().unwrap().clone())
        .map(|m| m.as_str().unwrap().to_string())
        .collect()
}

/// Every binding and the audit configs of [`unrelated_policy`] are still there, unchanged.
fn assert_unrelated_intact(gcp: &FakeGcp) {
    let p = gcp.policy(PROJECT);
    let original = unrelated_policy();
    for b in original["bindings"].as_array().unwrap() {
        assert!(
            p["bindings"].as_array().unwrap().contains(b),
            "lost or changed binding {b}"
        );
    }
    assert_eq!(p["auditConfigs"], original["auditConfigs"]);
}

fn key_file(outcome: &GrantOutcome) -> Value {
    serde_json::from_slice(&outcome.secret.as_ref().expect("a key is delivered").content).unwrap()
}

#[tokio::test]
async fn the_documents_naming_examples_round_trip() {
    for (email, encoded, id) in [
        ("jsmith@redhat.com", "jsmith", "jsmith-1234567890"),
        (
            "jane.doe@redhat.com",
            "jane-dot-doe",
            "jane-dot-doe-1234567890",
        ),
        (
            "john-smith@redhat.com",
            "john-dash-smith",
            "john-dash-smith-1234567890",
        ),
        (
            "user.name-test@redhat.com",
            "user-dot-name-dash-test",
            "user-dot-name-dash-test-1234567890",
        ),
    ] {
        let local = email.split('@').next().unwrap();
        assert_eq!(naming::encode_username(local).as_deref(), Some(encoded));
        assert_eq!(naming::decode_username(encoded).as_deref(), Some(local));
        let (got, reversible) = naming::account_id(local, 1_234_567_890);
        if id.len() <= 30 {
            assert_eq!(got, id);
            assert!(reversible);
            let sa = naming::service_account_email(&got, "openshift-crt-ephemeral-access");
            assert_eq!(
                naming::user_email_from_service_account(&sa, Some("redhat.com")).as_deref(),
                Some(email)
            );
        } else {
            // The document's fourth example is 34 characters: IAM refuses account ids over 30,
            // so it takes the document's own display-name fallback (encoded part > 19).
            assert!(naming::needs_display_name_fallback(local));
            assert!(!reversible && got.len() <= 30, "{got}");
            let sa = naming::service_account_email(&got, "openshift-crt-ephemeral-access");
            assert_eq!(
                naming::user_email_from_service_account(&sa, Some("redhat.com")),
                None,
                "never a wrong decoding"
            );
        }
    }

    // Through IAM and back: grants for all four, then observe recovers every e-mail (decoded from
    // the account name, or from the display name for the fallback).
    let env = env().await;
    let res = resource(json!({"project": PROJECT, "role": ROLE, "email_domain": "redhat.com"}));
    let emails = [
        "jsmith@redhat.com",
        "jane.doe@redhat.com",
        "john-smith@redhat.com",
        "user.name-test@redhat.com",
    ];
    for e in emails {
        env.provider
            .grant(&request(&env, e, res.clone(), None))
            .await
            .unwrap();
    }
    let lists_before = env.gcp.count(GcpOp::ListServiceAccounts);
    let mut holders: Vec<String> = env
        .provider
        .observe(&res)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.holder)
        .collect();
    holders.sort();
    let mut expected = emails.to_vec();
    expected.sort();
    assert_eq!(holders, expected);
    assert_eq!(
        env.gcp.count(GcpOp::ListServiceAccounts) - lists_before,
        1,
        "one listing for the fallback only"
    );
}

#[tokio::test]
async fn grant_and_revoke_with_a_service_account_key() {
    let env = env().await;
    let res = key_resource();
    let req = request(&env, "jane.doe@example.com", res.clone(), None);
    let out = env.provider.grant(&req).await.unwrap();

    // The account: reversible name, display name = e-mail, justification in the description.
    let accounts = env.gcp.service_accounts(PROJECT);
    assert_eq!(accounts.len(), 1);
    let sa = &accounts[0];
    assert_eq!(
        sa.account_id,
        format!("jane-dot-doe-{}", env.clock.now().timestamp())
    );
    assert_eq!(sa.display_name, "jane.doe@example.com");
    assert!(sa.description.contains(JUSTIFICATION), "{}", sa.description);
    assert_eq!(
        naming::user_email_from_service_account(&sa.email, Some("example.com")).as_deref(),
        Some("jane.doe@example.com")
    );

    // The binding: exactly the document's condition, on serviceAccount:, everything else intact.
    let expires = req.expires_at.trunc_subsecs(0);
    let at = expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let tb = temp_bindings(&env.gcp);
    assert_eq!(tb.len(), 1);
    assert_eq!(tb[0]["role"], ROLE);
    assert_eq!(
        tb[0]["members"],
        json!([format!("serviceAccount:{}", sa.email)])
    );
    assert_eq!(
        tb[0]["condition"]["expression"],
        format!("request.time < timestamp('{at}')")
    );
    assert_eq!(
        tb[0]["condition"]["description"],
        format!("Access expires on {at}. Justification: {JUSTIFICATION}")
    );
    assert_unrelated_intact(&env.gcp);

    // The key: delivered once, as the document's file, and it really works against the fake.
    let secret = out.secret.as_ref().unwrap();
    assert_eq!(secret.filename, "gcp-access-jane-doe-at-example-com.json");
    assert!(secret.warning.contains("private key"));
    let kf = key_file(&out);
    assert_eq!(kf["client_email"], sa.email.as_str());
    let key_json = String::from_utf8(secret.content.clone()).unwrap();
    let user_tokens = ServiceAccountTokenSource::from_json(&key_json).unwrap();
    user_tokens
        .token()
        .await
        .expect("the delivered key authenticates");
    // Never in the handle, the instructions or Debug output.
    let private_key = kf["private_key"].as_str().unwrap();
    let body_line = private_key.lines().nth(1).unwrap();
    for text in [
        out.handle.to_string(),
        out.instructions.clone(),
        format!("{out:?}"),
    ] {
        assert!(!text.contains(body_line), "key material leaked");
    }
    assert_eq!(out.expires_at, Some(expires));
    assert_eq!(out.handle["service_account_email"], sa.email.as_str());
    assert!(out.instructions.starts_with(
        "Confirmed you are a member of the Hybrid Platforms organization. You have been granted access to project \"ephemeral-access-1\"."
    ));
    assert!(
        out.instructions
            .contains(&format!("(until {at}, 7 days from now)")),
        "{}",
        out.instructions
    );
    assert!(
        out.instructions
            .contains("export GOOGLE_APPLICATION_CREDENTIALS=/path/to/key.json")
    );
    assert!(
        out.instructions
            .ends_with(&format!("Justification: {JUSTIFICATION}"))
    );
    let names: Vec<&str> = out.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "service_account_created",
            "service_account_key_created",
            "iam_binding_added"
        ]
    );

    // Revoke: binding and account gone, the key stops working; a second revoke is a success too.
    let rv = env
        .provider
        .revoke(&revoke_req(
            "jane.doe@example.com",
            res.clone(),
            out.handle.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(rv.events.len(), 2);
    assert!(temp_bindings(&env.gcp).is_empty());
    assert!(env.gcp.service_accounts(PROJECT).is_empty());
    assert_unrelated_intact(&env.gcp);
    let fresh = ServiceAccountTokenSource::from_json(&key_json).unwrap();
    assert!(
        fresh.token().await.is_err(),
        "a deleted account's key is refused"
    );
    let again = env
        .provider
        .revoke(&revoke_req("jane.doe@example.com", res, out.handle))
        .await
        .unwrap();
    assert!(again.events.is_empty());
    assert!(again.note.unwrap().contains("already"));
}

#[tokio::test]
async fn grant_and_revoke_a_user_binding() {
    let env = env().await;
    let res = user_resource();
    let out = env
        .provider
        .grant(&request(&env, "jsmith@example.com", res.clone(), None))
        .await
        .unwrap();
    assert!(out.secret.is_none());
    assert!(env.gcp.service_accounts(PROJECT).is_empty());
    assert_eq!(
        env.gcp.count(GcpOp::CreateServiceAccount) + env.gcp.count(GcpOp::CreateKey),
        0
    );
    assert_eq!(
        members_of(&env.gcp),
        vec!["user:jsmith@example.com".to_string()]
    );
    assert!(
        out.instructions
            .contains("gcloud auth login jsmith@example.com")
    );
    env.provider
        .revoke(&revoke_req("jsmith@example.com", res, out.handle))
        .await
        .unwrap();
    assert!(temp_bindings(&env.gcp).is_empty());
    assert_unrelated_intact(&env.gcp);
}

#[tokio::test]
async fn eventual_consistency_is_absorbed() {
    // Key-creation waits of 50, 100, 200, 200 … ms; the account stays invisible for 300 ms.
    let env = env_with(|c| c.key_retry = retry::KEY_CREATION.scaled(20)).await;
    env.gcp.set_not_found_window(Duration::from_millis(300));
    let out = env
        .provider
        .grant(&request(&env, "jane.doe@example.com", key_resource(), None))
        .await
        .unwrap();
    assert!(out.secret.is_some());
    let attempts = env.gcp.count(GcpOp::CreateKey);
    assert!(
        attempts >= 2,
        "the first key creation must have met NOT_FOUND ({attempts})"
    );
    assert_eq!(
        env.gcp
            .calls()
            .iter()
            .filter(|c| c.op == GcpOp::CreateKey && c.status == 404)
            .count(),
        attempts - 1
    );
    assert_eq!(members_of(&env.gcp).len(), 1);

    // The policy backend not knowing a new account yet (400 "does not exist") is retried too, and
    // one refused edit in a batch does not sink the others.
    env.gcp.set_not_found_window(Duration::ZERO);
    env.gcp.inject(
        GcpOp::SetIamPolicy,
        GcpFault::status(400, "INVALID_ARGUMENT"),
        2,
    );
    let mut set = tokio::task::JoinSet::new();
    for i in 0..8 {
        let p = env.provider.clone();
        let req = request(&env, &format!("late{i}@example.com"), key_resource(), None);
        set.spawn(async move { p.grant(&req).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(members_of(&env.gcp).len(), 9);
    assert_eq!(
        env.gcp.service_accounts(PROJECT).len(),
        9,
        "no rollback happened"
    );
}

#[tokio::test]
async fn re_request_after_the_account_vanished_starts_over_with_the_same_expiry() {
    let env = env().await;
    let res = key_resource();
    let first = env
        .provider
        .grant(&request(&env, "jane.doe@example.com", res.clone(), None))
        .await
        .unwrap();
    let old_sa = first.handle["service_account_email"]
        .as_str()
        .unwrap()
        .to_string();
    env.provider
        .client()
        .delete_service_account(PROJECT, &old_sa)
        .await
        .unwrap();
    env.clock.advance(chrono::Duration::hours(5));
    let again = env
        .provider
        .grant(&request(
            &env,
            "jane.doe@example.com",
            res,
            Some(first.handle.clone()),
        ))
        .await
        .unwrap();
    assert_eq!(again.expires_at, first.expires_at);
    let new_sa = again.handle["service_account_email"].as_str().unwrap();
    assert_ne!(new_sa, old_sa);
    assert_eq!(
        members_of(&env.gcp),
        vec![format!("serviceAccount:{new_sa}")],
        "the dead account's binding was replaced"
    );
}

#[tokio::test]
async fn key_failure_rolls_the_account_back() {
    let env = env().await;
    env.gcp.inject(
        GcpOp::CreateKey,
        GcpFault::status(403, "PERMISSION_DENIED"),
        1,
    );
    let err = env
        .provider
        .grant(&request(&env, "jane.doe@example.com", key_resource(), None))
        .await
        .unwrap_err();
    let ProviderError::Permanent { message: msg, .. } = err else {
        panic!("{err:?}")
    };
    assert!(
        msg.starts_with("Failed to generate service account key"),
        "{msg}"
    );
    assert_eq!(env.gcp.count(GcpOp::CreateServiceAccount), 1);
    assert_eq!(env.gcp.count(GcpOp::DeleteServiceAccount), 1);
    assert!(env.gcp.service_accounts(PROJECT).is_empty());
    assert!(temp_bindings(&env.gcp).is_empty());
}

#[tokio::test]
async fn binding_failure_rolls_the_account_back() {
    let env = env().await;
    env.gcp.inject(
        GcpOp::SetIamPolicy,
        GcpFault::status(403, "PERMISSION_DENIED"),
        1,
    );
    let err = env
        .provider
        .grant(&request(&env, "jane.doe@example.com", key_resource(), None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent { message: m, .. } if m.starts_with("Failed to grant GCP IAM access")),
        "{err:?}"
    );
    assert!(
        env.gcp.service_accounts(PROJECT).is_empty(),
        "account (and its key) deleted"
    );
    assert!(temp_bindings(&env.gcp).is_empty());
    assert_unrelated_intact(&env.gcp);
}

#[tokio::test]
async fn forbidden_keys_are_reported_as_such() {
    let env = env().await;
    env.gcp.forbid_key_creation(true);
    let err = env
        .provider
        .grant(&request(&env, "jane.doe@example.com", key_resource(), None))
        .await
        .unwrap_err();
    let ProviderError::Permanent { message: msg, .. } = err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("key creation is not allowed"), "{msg}");
    assert!(
        msg.contains("constraints/iam.disableServiceAccountKeyCreation"),
        "{msg}"
    );
    assert!(msg.contains("user_binding"), "{msg}");
    assert!(env.gcp.service_accounts(PROJECT).is_empty());
    // The way out the message names works.
    env.provider
        .grant(&request(
            &env,
            "jane.doe@example.com",
            user_resource(),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(
        members_of(&env.gcp),
        vec!["user:jane.doe@example.com".to_string()]
    );
}

#[tokio::test]
async fn re_request_regenerates_a_key_without_extending_and_prunes_old_keys() {
    let env = env().await;
    let res = key_resource();
    let first = env
        .provider
        .grant(&request(&env, "jane.doe@example.com", res.clone(), None))
        .await
        .unwrap();
    let original_expiry = first.expires_at.unwrap();
    let first_key = key_file(&first)["private_key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let writes_after_grant = env.gcp.count(GcpOp::SetIamPolicy);

    let mut handle = first.handle.clone();
    let mut last = first;
    for _ in 0..4 {
        env.clock.advance(chrono::Duration::days(1));
        let mut req = request(
            &env,
            "jane.doe@example.com",
            res.clone(),
            Some(handle.clone()),
        );
        req.expires_at = env.clock.now() + chrono::Duration::days(7); // asks for more: must not get it
        last = env.provider.grant(&req).await.unwrap();
        assert_eq!(
            last.expires_at,
            Some(original_expiry),
            "re-request must not extend"
        );
        handle = last.handle.clone();
    }
    let accounts = env.gcp.service_accounts(PROJECT);
    assert_eq!(accounts.len(), 1, "no second account");
    assert_eq!(
        accounts[0].keys.len(),
        3,
        "older keys beyond the newest three are deleted"
    );
    let newest = key_file(&last)["private_key_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(accounts[0].keys.iter().any(|k| k.ends_with(&newest)));
    assert!(!accounts[0].keys.iter().any(|k| k.ends_with(&first_key)));
    assert_eq!(
        env.gcp.count(GcpOp::SetIamPolicy),
        writes_after_grant,
        "the binding is left alone"
    );
    assert!(
        last.instructions.contains("3 days from now"),
        "{}",
        last.instructions
    );
    assert!(last.instructions.contains("for the next 7 days"));

    // At the key quota, room is made and the person still gets a key.
    env.gcp.set_key_quota(3);
    let again = env
        .provider
        .grant(&request(&env, "jane.doe@example.com", res, Some(handle)))
        .await
        .unwrap();
    assert!(again.secret.is_some());
    assert_eq!(env.gcp.service_accounts(PROJECT)[0].keys.len(), 3);
}

#[tokio::test]
async fn fifty_concurrent_grants_are_batched() {
    let env = env().await;
    let res = key_resource();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let p = env.provider.clone();
        let req = request(&env, &format!("user{i}@example.com"), res.clone(), None);
        set.spawn(async move { p.grant(&req).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    let members = members_of(&env.gcp);
    assert_eq!(members.len(), 50);
    for i in 0..50 {
        assert!(
            members
                .iter()
                .any(|m| m.starts_with(&format!("serviceAccount:user{i}-"))),
            "user{i} missing"
        );
    }
    assert_unrelated_intact(&env.gcp);
    let writes = env.gcp.count(GcpOp::SetIamPolicy);
    println!(
        "50 concurrent grants: {writes} setIamPolicy calls (provider counted {})",
        env.provider.policy_writes()
    );
    assert!(writes <= 10, "{writes} policy writes for 50 grants");
}

#[tokio::test]
async fn injected_conflicts_never_lose_a_binding() {
    let env = env().await;
    let res = user_resource();
    env.gcp
        .inject(GcpOp::SetIamPolicy, GcpFault::ConcurrentWrite, 4);
    env.gcp
        .inject(GcpOp::SetIamPolicy, GcpFault::status(409, "ABORTED"), 2);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..12 {
        let p = env.provider.clone();
        let req = request(&env, &format!("person{i}@example.com"), res.clone(), None);
        set.spawn(async move { p.grant(&req).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(members_of(&env.gcp).len(), 12);
    assert!(
        env.provider.policy_conflicts() >= 6,
        "conflicts absorbed: {}",
        env.provider.policy_conflicts()
    );
    // The other writer's changes survive ours, as do the unrelated bindings.
    let p = env.gcp.policy(PROJECT);
    let browser = p["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["role"] == "roles/browser")
        .unwrap()
        .clone();
    for n in 1..=4 {
        assert!(
            browser["members"]
                .as_array()
                .unwrap()
                .contains(&json!(format!("user:concurrent-writer-{n}@example.com")))
        );
    }
    assert_eq!(p["auditConfigs"], unrelated_policy()["auditConfigs"]);
}

#[tokio::test]
async fn sweep_removes_expired_bindings_their_accounts_and_orphans() {
    let env = env().await;
    let res = key_resource();
    let mut short = request(&env, "jsmith@example.com", res.clone(), None);
    short.expires_at = env.clock.now() + chrono::Duration::hours(1);
    let short = env.provider.grant(&short).await.unwrap();
    let long = env
        .provider
        .grant(&request(&env, "jane.doe@example.com", res.clone(), None))
        .await
        .unwrap();

    env.clock.advance(chrono::Duration::hours(2));
    let now = env.clock.now();
    let marker = provider_gcp_iam::provider::DESCRIPTION_MARKER;
    let old_orphan = env.gcp.seed_service_account(
        PROJECT,
        &format!(
            "john-dash-smith-{}",
            (now - chrono::Duration::hours(3)).timestamp()
        ),
        "john-smith@example.com",
        &format!("{marker} for john-smith@example.com"),
    );
    let young_orphan = env.gcp.seed_service_account(
        PROJECT,
        &format!("user-dot-name-dash-test-{}", now.timestamp()),
        "user.name-test@example.com",
        &format!("{marker} for user.name-test@example.com"),
    );
    let not_ours = env
        .gcp
        .seed_service_account(PROJECT, "terraform-runner", "Terraform", "CI");
    // A deleted Gatehouse account left in a Temp Access binding (jit-access-style double quotes).
    let mut p = env.gcp.policy(PROJECT);
    p["bindings"].as_array_mut().unwrap().push(json!({
        "role": ROLE, "members": ["deleted:serviceAccount:gone-1700000000@ephemeral-access-1.iam.gserviceaccount.com?uid=42"],
        "condition": {"title": "Temp Access", "expression": "(request.time >= timestamp(\"2099-01-01T00:00:00Z\") && request.time < timestamp(\"2099-01-02T00:00:00Z\"))"}
    }));
    env.gcp.set_policy(PROJECT, p);

    let report = env.provider.sweep(PROJECT, now).await.unwrap();
    let short_sa = short.handle["service_account_email"]
        .as_str()
        .unwrap()
        .to_string();
    let long_sa = long.handle["service_account_email"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(report.expired_bindings.len(), 1);
    assert_eq!(
        report.expired_bindings[0].0,
        format!("serviceAccount:{short_sa}")
    );
    assert_eq!(report.deleted_service_accounts, vec![short_sa.clone()]);
    assert_eq!(report.orphaned_service_accounts, vec![old_orphan.clone()]);
    assert_eq!(report.dropped_deleted_members.len(), 1);
    assert!(report.errors.is_empty());
    assert_eq!(report.events.len(), 4, "{:?}", report.events);

    let left: Vec<String> = env
        .gcp
        .service_accounts(PROJECT)
        .into_iter()
        .map(|a| a.email)
        .collect();
    assert!(left.contains(&long_sa) && left.contains(&young_orphan) && left.contains(&not_ours));
    assert!(!left.contains(&short_sa) && !left.contains(&old_orphan));
    assert_eq!(
        members_of(&env.gcp),
        vec![format!("serviceAccount:{long_sa}")]
    );
    assert_unrelated_intact(&env.gcp);

    // Nothing left to repair; revoking the swept grant is still a success.
    assert!(env.provider.sweep(PROJECT, now).await.unwrap().is_clean());
    env.provider
        .revoke(&revoke_req("jsmith@example.com", res, short.handle))
        .await
        .unwrap();
}

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn dry_run_touches_nothing() {
    let logs = LogBuf::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let env = env_with(|c| c.dry_run = true).await;
    let res = key_resource();
    let out = env
        .provider
        .grant(&request(&env, "user@example.com", res.clone(), None))
        .await
        .unwrap();
    assert_eq!(
        out.handle["service_account_email"],
        "dry-run-user-at-example-com@ephemeral-access-1.iam.gserviceaccount.com"
    );
    let secret = out.secret.as_ref().unwrap();
    assert_eq!(
        key_file(&out),
        json!({"type": "service_account", "project_id": "dry-run"})
    );
    assert_eq!(secret.filename, "gcp-access-user-at-example-com.json");
    assert!(
        out.instructions
            .contains("You have been granted access to project")
    );
    env.provider
        .revoke(&revoke_req("user@example.com", res, out.handle))
        .await
        .unwrap();
    // The per-resource switch does the same without the environment variable.
    let plain = env_with(|_| {}).await;
    let dry_res = resource(json!({"project": PROJECT, "role": ROLE, "dry_run": true}));
    plain
        .provider
        .grant(&request(&plain, "user@example.com", dry_res, None))
        .await
        .unwrap();

    assert_eq!(
        env.gcp.calls().len(),
        0,
        "dry run made API calls: {:?}",
        env.gcp.calls()
    );
    assert_eq!(plain.gcp.mutating_calls(), 0);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("DRY-RUN: Would create service account dry-run-user-at-example-com@"),
        "{text}"
    );
    assert!(
        text.contains("DRY-RUN: Would grant GCP IAM access to user user@example.com"),
        "{text}"
    );
    assert!(text.contains("DRY-RUN: Would revoke"), "{text}");

    // The sweep in dry-run mode reads and reports, and writes nothing.
    let mut p = env.gcp.policy(PROJECT);
    p["bindings"].as_array_mut().unwrap().push(json!({
        "role": ROLE, "members": ["user:late@example.com"],
        "condition": {"title": "Temp Access", "expression": "request.time < timestamp('2020-01-01T00:00:00Z')"}
    }));
    env.gcp.set_policy(PROJECT, p.clone());
    let orphan = env.gcp.seed_service_account(
        PROJECT,
        "jsmith-1600000000",
        "jsmith@example.com",
        &format!(
            "{} for jsmith@example.com",
            provider_gcp_iam::provider::DESCRIPTION_MARKER
        ),
    );
    let report = env.provider.sweep(PROJECT, env.clock.now()).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(report.expired_bindings.len(), 1);
    assert_eq!(report.orphaned_service_accounts, vec![orphan]);
    assert_eq!(env.gcp.mutating_calls(), 0);
    assert_eq!(env.gcp.policy(PROJECT)["bindings"], p["bindings"]);
    assert_eq!(env.gcp.service_accounts(PROJECT).len(), 1);
    assert!(
        String::from_utf8(logs.0.lock().unwrap().clone())
            .unwrap()
            .contains("DRY-RUN: Would delete orphaned service account")
    );
}

#[tokio::test]
async fn the_service_account_quota_is_reported_as_such() {
    let env = env().await;
    env.gcp.set_account_quota(1);
    env.provider
        .grant(&request(&env, "jsmith@example.com", key_resource(), None))
        .await
        .unwrap();
    let err = env
        .provider
        .grant(&request(&env, "jane.doe@example.com", key_resource(), None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent { message: m, .. } if m.contains("service-account quota")),
        "{err:?}"
    );
    assert_eq!(members_of(&env.gcp).len(), 1);
}

#[tokio::test]
async fn the_token_endpoint_really_verifies_the_assertion() {
    let env = env().await;
    // The bot's account, but signed with another private key: refused.
    let forged =
        ServiceAccountTokenSource::from_json(&env.gcp.key_json_with(BOT_EMAIL, OTHER_KEY_PEM))
            .unwrap();
    let err = forged.token().await.unwrap_err().to_string();
    assert!(
        err.contains("invalid_grant") || err.contains("Invalid JWT"),
        "{err}"
    );
    // An account the fake does not know: refused.
    let stranger = ServiceAccountTokenSource::from_json(&env.gcp.key_json_with(
        "stranger@elsewhere.iam.gserviceaccount.com",
        testkit::gcp::TEST_KEY_PEM,
    ))
    .unwrap();
    assert!(stranger.token().await.is_err());
    // The genuine key works, and a provider on forged credentials cannot touch anything.
    let good = ServiceAccountTokenSource::from_json(&env.gcp.service_account_key_json()).unwrap();
    assert!(good.token().await.unwrap().starts_with("ya29."));
    let config = GcpIamConfig {
        iam_url: env.gcp.url(),
        crm_url: env.gcp.url(),
        ..Default::default()
    }
    .with_fast_retries(1000);
    let bad_provider = GcpIamProvider::new(config, Arc::new(forged)).unwrap();
    let err = bad_provider
        .grant(&request(&env, "jane.doe@example.com", key_resource(), None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent { message: m, .. } if m.contains("refused the credentials")),
        "{err:?}"
    );
    assert_eq!(env.gcp.mutating_calls(), 0);
    // A bearer token the fake never issued: 401.
    let config = GcpIamConfig {
        iam_url: env.gcp.url(),
        crm_url: env.gcp.url(),
        ..Default::default()
    };
    let static_provider = GcpIamProvider::new(
        config,
        Arc::new(gcp_auth::StaticToken("ya29.made-up".into())),
    )
    .unwrap();
    let err = static_provider
        .validate(&key_resource())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not authenticated"), "{err}");
}

#[tokio::test]
async fn observe_lists_temp_access_and_validate_checks_the_project() {
    let env = env().await;
    let res = key_resource();
    env.provider
        .grant(&request(&env, "jane.doe@example.com", res.clone(), None))
        .await
        .unwrap();
    env.provider
        .grant(&request(
            &env,
            "averyveryverylongusername@example.com",
            res.clone(),
            None,
        ))
        .await
        .unwrap();
    let mut holders: Vec<String> = env
        .provider
        .observe(&res)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.holder)
        .collect();
    holders.sort();
    assert_eq!(
        holders,
        [
            "averyveryverylongusername@example.com",
            "jane.doe@example.com"
        ]
    );
    env.provider.validate(&res).await.unwrap();
    let elsewhere = resource(json!({"project": "not-my-project", "role": "roles/browser"}));
    let err = env.provider.validate(&elsewhere).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent { message: m, .. } if m.contains("permission denied")),
        "{err:?}"
    );
    // Wrong domain, basic role: refused before any call.
    let err = env
        .provider
        .grant(&request(&env, "someone@other.org", res, None))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("only available to @example.com"),
        "{err}"
    );
    let basic = resource(json!({"project": PROJECT, "role": "roles/owner"}));
    assert!(
        env.provider
            .grant(&request(&env, "jane.doe@example.com", basic, None))
            .await
            .is_err()
    );
}

/// Issue 11: a grant whose answer was lost runs again (a minute later): it must adopt the
/// account its first attempt created (found by the grant id it carries), not mint a second
/// one; the first attempt's key, never delivered, is deleted; revoke removes everything.
#[tokio::test]
async fn a_retried_grant_adopts_its_own_account() {
    let env = env().await;
    let mut req = request(&env, "jane.doe@example.com", key_resource(), None);
    // What the engine does before the first call: record the intent with the grant.
    req.intent = Some(env.provider.intent(&req).await.unwrap());
    let lost = env.provider.grant(&req).await.unwrap();
    drop(lost); // the answer never reached the engine
    env.clock.advance(chrono::Duration::minutes(1));
    let out = env.provider.grant(&req).await.unwrap();
    let accounts = env.gcp.service_accounts(PROJECT);
    assert_eq!(accounts.len(), 1, "no second service account: {accounts:?}");
    assert_eq!(
        accounts[0].keys.len(),
        1,
        "the undelivered key of the first attempt is deleted"
    );
    let h = out.handle.clone();
    assert_eq!(h["service_account_email"], accounts[0].email.as_str());
    env.provider
        .revoke(&revoke_req("jane.doe@example.com", key_resource(), h))
        .await
        .unwrap();
    assert!(env.gcp.service_accounts(PROJECT).is_empty());
    assert!(temp_bindings(&env.gcp).is_empty());
}

/// A stored handle that does not decode does not hold the revocation back: it is reported and
/// the intent removes the account and its binding.
#[tokio::test]
async fn revoke_with_an_undecodable_handle_uses_the_intent() {
    let env = env().await;
    let mut req = request(&env, "jane.doe@example.com", key_resource(), None);
    let intent = env.provider.intent(&req).await.unwrap();
    req.intent = Some(intent.clone());
    env.provider.grant(&req).await.unwrap();
    assert_eq!(env.gcp.service_accounts(PROJECT).len(), 1);
    let mut r = revoke_req(
        "jane.doe@example.com",
        key_resource(),
        serde_json::json!({"mode": "not a handle"}),
    );
    r.grant_id = req.grant_id;
    r.intent = intent;
    env.provider.revoke(&r).await.expect("the intent revokes");
    assert!(env.gcp.service_accounts(PROJECT).is_empty());
    assert!(temp_bindings(&env.gcp).is_empty());
}

/// Issue 11: revoke of a grant whose call never answered (no handle) is not a permanent error:
/// it removes what the intent names, or nothing.
#[tokio::test]
async fn revoke_without_a_handle_uses_the_intent() {
    let env = env().await;
    let nothing = env
        .provider
        .revoke(&revoke_req(
            "jane.doe@example.com",
            key_resource(),
            Value::Null,
        ))
        .await
        .unwrap();
    assert!(nothing.note.is_some());

    let mut req = request(&env, "jane.doe@example.com", key_resource(), None);
    let intent = env.provider.intent(&req).await.unwrap();
    req.intent = Some(intent.clone());
    env.provider.grant(&req).await.unwrap(); // landed, answer lost
    assert_eq!(env.gcp.service_accounts(PROJECT).len(), 1);
    let mut r = revoke_req("jane.doe@example.com", key_resource(), Value::Null);
    r.grant_id = req.grant_id;
    r.intent = intent;
    env.provider.revoke(&r).await.unwrap();
    assert!(env.gcp.service_accounts(PROJECT).is_empty());
    assert!(temp_bindings(&env.gcp).is_empty());
}
