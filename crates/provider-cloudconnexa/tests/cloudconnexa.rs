#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The provider and client against the fake Cloud Connexa (`testkit::cloudconnexa`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use access_core::duration::{AccessDuration, DurationBounds};
use access_core::ports::{
    GrantOutcome, GrantRequest, LiveAccess, Provider, ProviderError, RevokeOutcome, RevokeRequest,
};
use access_core::{ApprovalPolicy, Email, GrantId, RequestId, Resource, ResourceId, Subject};
use async_trait::async_trait;
use chrono::Utc;
use provider_cloudconnexa::usage::handles_need_group;
use provider_cloudconnexa::{
    ClientConfig, CloudConnexaClient, CloudConnexaError, CloudConnexaProvider, GrantHandle,
    GroupUsage, GroupUsageQuery, ProviderConfig, RateLimitConfig,
};
use serde_json::{Value, json};
use testkit::cloudconnexa::{FakeCloudConnexa, FakeConfig};

// ------------------------------------------------------------------------------------------------
// helpers

fn client_config(fake: &FakeCloudConnexa) -> ClientConfig {
    let mut c = ClientConfig::new(fake.url(), fake.client_id(), fake.client_secret());
    // The default pacing (1 read/s, 1 write per 4 s) is kept: the fake's headers must lift it.
    // Only the back-off is shortened so a 429 costs milliseconds, not seconds.
    c.rate_limits = RateLimitConfig {
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(800),
        ..RateLimitConfig::default()
    };
    c.request_timeout = Duration::from_secs(5);
    c
}

fn provider_with(fake: &FakeCloudConnexa, mapping: &[(&str, &str)]) -> CloudConnexaProvider {
    let mut cfg = ProviderConfig::new(client_config(fake));
    cfg.network_group_mapping = mapping
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    CloudConnexaProvider::new(cfg).unwrap()
}

async fn fake() -> FakeCloudConnexa {
    let f = FakeCloudConnexa::start(FakeConfig::fast()).await;
    f.seed_network("dev-network");
    f.seed_network("staging");
    f
}

fn resource(id: &str, settings: Value) -> Resource {
    let h = |s: &str| s.parse::<AccessDuration>().unwrap();
    Resource {
        id: ResourceId::parse(id).unwrap(),
        description: String::new(),
        provider: "cloudconnexa".into(),
        settings,
        durations: DurationBounds::new(h("4h"), h("1m"), h("24h")).unwrap(),
        eligibility: vec![],
        approval: ApprovalPolicy::Auto,
        extendable: true,
        allow_guests: false,
        allow_external: false,
        emergency: None,
    }
}

fn dev() -> Resource {
    resource("dev-network", json!({"network": "dev-network"}))
}

fn subject(email: &str) -> Subject {
    Subject {
        team_id: "T1".into(),
        user_id: format!("U{}", email.len()),
        email: Some(Email::parse(email).unwrap()),
        name: String::new(),
    }
}

fn grant_req(email: &str, resource: &Resource) -> GrantRequest {
    GrantRequest {
        grant_id: GrantId::new(),
        request_id: RequestId::new(),
        subject: subject(email),
        resource: resource.clone(),
        expires_at: Utc::now() + chrono::Duration::hours(4),
        justification: "Running database migration".into(),
        existing: None,
        intent: None,
    }
}

fn revoke_req(g: &GrantRequest, outcome: &GrantOutcome) -> RevokeRequest {
    RevokeRequest {
        grant_id: g.grant_id,
        subject: g.subject.clone(),
        resource: g.resource.clone(),
        handle: outcome.handle.clone(),
        intent: serde_json::Value::Null,
    }
}

fn names(events: &[access_core::ports::ProviderEvent]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

fn handle(o: &GrantOutcome) -> GrantHandle {
    GrantHandle::decode(&o.handle)
        .expect("a Cloud Connexa handle")
        .expect("not null")
}

/// A [`GroupUsage`] over an in-memory set of live grants (what the server does with the store).
#[derive(Debug, Default)]
struct LiveGrants(Mutex<Vec<(GrantId, Value)>>);

impl LiveGrants {
    fn add(&self, id: GrantId, handle: &Value) {
        self.0.lock().unwrap().push((id, handle.clone()));
    }
    fn end(&self, id: GrantId) {
        self.0.lock().unwrap().retain(|(g, _)| *g != id);
    }
}

#[async_trait]
impl GroupUsage for LiveGrants {
    async fn still_needed(&self, q: &GroupUsageQuery) -> Result<bool, ProviderError> {
        let live = self.0.lock().unwrap().clone();
        Ok(handles_need_group(q, live.iter().map(|(id, v)| (*id, v))))
    }
}

// ------------------------------------------------------------------------------------------------
// grant / revoke

#[tokio::test]
async fn grant_creates_user_and_group_and_revoke_removes_only_the_membership() {
    let cc = fake().await;
    let p = provider_with(&cc, &[]);
    let g = grant_req("jane.doe@example.com", &dev());
    let out = p.grant(&g).await.unwrap();

    assert_eq!(
        names(&out.events),
        vec!["group_created", "user_created", "user_added_to_group"]
    );
    let h = handle(&out);
    assert!(h.user_created && h.group_created && !h.group_was_present);
    assert_eq!(h.group_name, "dev-network-users");
    assert!(
        out.instructions
            .contains("Connect using your standard VPN client"),
        "{}",
        out.instructions
    );
    assert!(
        out.instructions.contains("invitation"),
        "a new account is told about the invitation"
    );

    let group = cc
        .group_by_name("dev-network-users")
        .expect("group created");
    let user = cc
        .user_by_email("jane.doe@example.com")
        .expect("user created");
    assert_eq!(
        (
            user.first_name.as_str(),
            user.last_name.as_str(),
            user.username.as_str()
        ),
        ("Jane", "Doe", "jane.doe")
    );
    assert_eq!(user.role, "MEMBER");
    assert_eq!(
        user.group_id,
        cc.default_group_id(),
        "the primary group is the tenant default"
    );
    assert_eq!(user.secondary_group_ids, vec![group.id.clone()]);
    // Created straight into the group: one POST, no extra PUT.
    assert!(cc.calls_to("PUT", "/api/v1/users").is_empty());

    let rv = p.revoke(&revoke_req(&g, &out)).await.unwrap();
    assert_eq!(names(&rv.events), vec!["user_removed_from_group"]);
    let after = cc.user(&user.id).expect("the user is kept");
    assert!(after.secondary_group_ids.is_empty());
    assert_eq!(after.group_id, user.group_id);
    assert!(
        cc.group_by_name("dev-network-users").is_some(),
        "the group is kept for the next grant"
    );
}

#[tokio::test]
async fn existing_user_keeps_primary_and_other_groups_exactly() {
    let cc = fake().await;
    let primary = cc.seed_group("engineering");
    let a = cc.seed_group("office-wifi");
    let b = cc.seed_group("build-farm");
    let devs = cc.seed_group("developers");
    let uid = cc.seed_user("sam@example.com", Some(&primary), &[&a, &b]);
    cc.edit_user(&uid, |u| {
        u.role = "ADMIN".into();
        u.status = "ACTIVE".into();
        u.first_name = "Samantha".into();
    });
    let before = cc.user(&uid).unwrap();

    // Group from NETWORK_GROUP_MAPPING.
    let p = provider_with(&cc, &[("dev-network", "developers")]);
    let g = grant_req("Sam@Example.com", &dev());
    let out = p.grant(&g).await.unwrap();
    assert_eq!(names(&out.events), vec!["user_added_to_group"]);
    let h = handle(&out);
    assert!(!h.user_created && !h.group_created && !h.group_was_present);
    assert_eq!(h.group_id, devs);

    let during = cc.user(&uid).unwrap();
    assert_eq!(
        during.secondary_group_ids,
        vec![a.clone(), b.clone(), devs.clone()]
    );
    assert_eq!(during.group_id, primary);
    assert_eq!(
        (during.role.as_str(), during.first_name.as_str()),
        ("ADMIN", "Samantha")
    );

    // The PUT carried the whole user as read.
    let put = cc
        .calls_to("PUT", "/api/v1/users/")
        .pop()
        .unwrap()
        .body
        .unwrap();
    assert_eq!(put["firstName"], "Samantha");
    assert_eq!(put["role"], "ADMIN");
    assert_eq!(put["status"], "ACTIVE");
    assert_eq!(put["groupId"], primary.as_str());

    p.revoke(&revoke_req(&g, &out)).await.unwrap();
    assert_eq!(
        cc.user(&uid).unwrap(),
        before,
        "the user is exactly as before the grant"
    );
}

#[tokio::test]
async fn a_user_who_had_the_group_before_keeps_it() {
    let cc = fake().await;
    let devs = cc.seed_group("dev-network-users");
    let secondary = cc.seed_user("had@example.com", None, &[&devs]);
    let primary = cc.seed_user("prim@example.com", Some(&devs), &[]);
    let p = provider_with(&cc, &[]);

    for (email, id) in [
        ("had@example.com", &secondary),
        ("prim@example.com", &primary),
    ] {
        let g = grant_req(email, &dev());
        let out = p.grant(&g).await.unwrap();
        assert!(out.events.is_empty(), "{:?}", out.events);
        assert!(handle(&out).group_was_present);
        let rv = p.revoke(&revoke_req(&g, &out)).await.unwrap();
        assert!(rv.events.is_empty());
        assert!(rv.note.unwrap().contains("before the grant"));
        assert!(
            cc.user(id).unwrap().secondary_group_ids.len()
                + usize::from(cc.user(id).unwrap().group_id == devs)
                == 1
        );
    }
    assert_eq!(
        cc.user(&secondary).unwrap().secondary_group_ids,
        vec![devs.clone()]
    );
    assert_eq!(cc.user(&primary).unwrap().group_id, devs);
    assert!(
        cc.calls_to("PUT", "/api/v1/users/").is_empty(),
        "nothing was written"
    );
}

#[tokio::test]
async fn two_grants_sharing_a_group_the_second_keeps_it() {
    let cc = fake().await;
    let live = Arc::new(LiveGrants::default());
    let p = provider_with(&cc, &[]).with_group_usage(live.clone());
    // Two resources, one group.
    let r1 = dev();
    let r2 = resource(
        "staging-db",
        json!({"network": "staging", "group": "dev-network-users"}),
    );

    let g1 = grant_req("kim@example.com", &r1);
    let o1 = p.grant(&g1).await.unwrap();
    live.add(g1.grant_id, &o1.handle);
    let g2 = grant_req("kim@example.com", &r2);
    let o2 = p.grant(&g2).await.unwrap();
    live.add(g2.grant_id, &o2.handle);
    let h2 = handle(&o2);
    assert!(h2.shared && !h2.group_was_present, "{h2:?}");
    assert!(o2.events.is_empty());

    // The first ends: still live while revoking, but it does not count for itself.
    let rv1 = p.revoke(&revoke_req(&g1, &o1)).await.unwrap();
    assert!(rv1.events.is_empty());
    assert!(rv1.note.unwrap().contains("another live grant"));
    live.end(g1.grant_id);
    let user = cc.user_by_email("kim@example.com").unwrap();
    assert_eq!(
        user.secondary_group_ids.len(),
        1,
        "the second grant keeps the group"
    );

    // The second ends: nobody needs it any more.
    let rv2 = p.revoke(&revoke_req(&g2, &o2)).await.unwrap();
    assert_eq!(names(&rv2.events), vec!["user_removed_from_group"]);
    live.end(g2.grant_id);
    assert!(
        cc.user_by_email("kim@example.com")
            .unwrap()
            .secondary_group_ids
            .is_empty()
    );
}

#[tokio::test]
async fn revoke_is_idempotent() {
    let cc = fake().await;
    let p = provider_with(&cc, &[]);

    // Twice.
    let g = grant_req("twice@example.com", &dev());
    let out = p.grant(&g).await.unwrap();
    assert_eq!(
        p.revoke(&revoke_req(&g, &out)).await.unwrap().events.len(),
        1
    );
    let again = p.revoke(&revoke_req(&g, &out)).await.unwrap();
    assert!(again.events.is_empty());
    assert!(again.note.unwrap().contains("no longer in group"));

    // User deleted meanwhile (HTTP 400 "not found" from the API).
    let g = grant_req("deleted@example.com", &dev());
    let out = p.grant(&g).await.unwrap();
    cc.delete_user(&handle(&out).user_id);
    let rv = p.revoke(&revoke_req(&g, &out)).await.unwrap();
    assert!(rv.events.is_empty());
    assert!(rv.note.unwrap().contains("no longer exists"));

    // Group removed by an admin meanwhile.
    let g = grant_req("removed@example.com", &dev());
    let out = p.grant(&g).await.unwrap();
    let h = handle(&out);
    cc.edit_user(&h.user_id, |u| u.secondary_group_ids.clear());
    let rv = p.revoke(&revoke_req(&g, &out)).await.unwrap();
    assert!(rv.events.is_empty() && rv.note.is_some());

    // No handle at all (a grant that never finished).
    let rv: RevokeOutcome = p
        .revoke(&RevokeRequest {
            handle: Value::Null,
            intent: serde_json::Value::Null,
            ..revoke_req(&g, &out)
        })
        .await
        .unwrap();
    assert!(rv.note.is_some());
}

#[tokio::test]
async fn extension_keeps_the_handle_and_puts_back_a_lost_membership() {
    let cc = fake().await;
    let p = provider_with(&cc, &[]);
    let g = grant_req("ext@example.com", &dev());
    let first = p.grant(&g).await.unwrap();

    let mut again = g.clone();
    again.existing = Some(first.handle.clone());
    let second = p.grant(&again).await.unwrap();
    assert!(second.events.is_empty());
    assert_eq!(
        second.handle, first.handle,
        "created flags survive the extension"
    );

    let h = handle(&first);
    cc.edit_user(&h.user_id, |u| u.secondary_group_ids.clear());
    let third = p.grant(&again).await.unwrap();
    assert_eq!(names(&third.events), vec!["user_added_to_group"]);
    assert_eq!(
        cc.user(&h.user_id).unwrap().secondary_group_ids,
        vec![h.group_id.clone()]
    );
}

#[tokio::test]
async fn extension_after_the_group_was_reconfigured_moves_the_membership() {
    let cc = fake().await;
    let p = provider_with(&cc, &[]);
    let g = grant_req("move@example.com", &dev());
    let first = p.grant(&g).await.unwrap();
    let old = handle(&first);

    let mut again = g.clone();
    again.resource = resource(
        "dev-network",
        json!({"network": "dev-network", "group": "dev-new"}),
    );
    again.existing = Some(first.handle.clone());
    let second = p.grant(&again).await.unwrap();
    assert_eq!(
        names(&second.events),
        vec![
            "group_created",
            "user_added_to_group",
            "user_removed_from_group"
        ]
    );
    let new = handle(&second);
    assert_eq!(new.group_name, "dev-new");
    assert_eq!(
        cc.user(&old.user_id).unwrap().secondary_group_ids,
        vec![new.group_id.clone()]
    );
    p.revoke(&revoke_req(&again, &second)).await.unwrap();
    assert!(
        cc.user(&old.user_id)
            .unwrap()
            .secondary_group_ids
            .is_empty()
    );
}

#[tokio::test]
async fn missing_email_is_a_clear_permanent_error() {
    let cc = fake().await;
    let p = provider_with(&cc, &[]);
    let mut g = grant_req("x@example.com", &dev());
    g.subject.email = None;
    match p.grant(&g).await {
        Err(ProviderError::Permanent { message: m, .. }) => {
            assert!(m.contains("no e-mail address"), "{m}")
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
    let bad = resource("bad", json!({"group": "x"}));
    assert!(matches!(
        p.grant(&grant_req("x@example.com", &bad)).await,
        Err(ProviderError::InvalidSettings { .. })
    ));
}

#[tokio::test]
async fn username_collision_and_role_setting() {
    let cc = fake().await;
    cc.seed_user("jane@other.org", None, &[]);
    let p = provider_with(&cc, &[]);
    let r = resource(
        "dev-admin",
        json!({"network": "dev-network", "role": "admin"}),
    );
    p.grant(&grant_req("jane@example.com", &r)).await.unwrap();
    let u = cc.user_by_email("jane@example.com").unwrap();
    assert_eq!(u.username, "jane-example-com");
    assert_eq!(u.role, "ADMIN");
    // One token (`jane`): first and last name both from it.
    assert_eq!(u.first_name, "Jane");
}

#[tokio::test]
async fn a_group_deleted_behind_the_cache_is_recreated() {
    let cc = fake().await;
    let p = provider_with(&cc, &[]);
    p.grant(&grant_req("one@example.com", &dev()))
        .await
        .unwrap();
    let old = cc.group_by_name("dev-network-users").unwrap();
    cc.delete_group(&old.id);
    let out = p
        .grant(&grant_req("two@example.com", &dev()))
        .await
        .unwrap();
    let new = cc.group_by_name("dev-network-users").unwrap();
    assert_ne!(new.id, old.id);
    assert_eq!(handle(&out).group_id, new.id);
    assert_eq!(
        cc.user_by_email("two@example.com")
            .unwrap()
            .secondary_group_ids,
        vec![new.id]
    );
}

// ------------------------------------------------------------------------------------------------
// token, pagination, rate limits, faults

#[tokio::test]
async fn token_expiry_mid_run_refreshes_on_401() {
    let cc = fake().await;
    let p = provider_with(&cc, &[]);
    p.grant(&grant_req("a@example.com", &dev())).await.unwrap();
    assert_eq!(cc.tokens_issued(), 1);
    cc.expire_all_tokens();
    p.grant(&grant_req("b@example.com", &dev())).await.unwrap();
    assert_eq!(cc.tokens_issued(), 2);
    assert_eq!(p.client().stats().token_refreshes_on_401, 1);
    assert_eq!(cc.calls().iter().filter(|c| c.status == 401).count(), 1);
    // Credentials went as query parameters, as the v1 docs say, and were not recorded in clear.
    let token_calls = cc.calls_to("POST", "/api/v1/oauth/token");
    assert!(
        token_calls
            .iter()
            .all(|c| c.credentials_via == "query" && c.query.contains("client_secret=***"))
    );
}

#[tokio::test]
async fn short_lived_tokens_are_renewed_before_they_expire() {
    let cc = fake().await;
    cc.set_expires_in(1);
    let client = CloudConnexaClient::new(client_config(&cc)).unwrap();
    client.networks().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client.networks().await.unwrap();
    assert_eq!(cc.tokens_issued(), 2);
    assert_eq!(
        cc.calls().iter().filter(|c| c.status == 401).count(),
        0,
        "renewed ahead, not after a 401"
    );
}

#[tokio::test]
async fn user_lookup_pages_through_all_users() {
    let cc = fake().await;
    cc.seed_many_users(2300);
    let target = cc.seed_user("last@example.com", None, &[]);
    let p = provider_with(&cc, &[]);
    let out = p
        .grant(&grant_req("last@example.com", &dev()))
        .await
        .unwrap();
    assert_eq!(handle(&out).user_id, target);
    assert!(!handle(&out).user_created);
    let pages: Vec<String> = cc
        .calls_to("GET", "/api/v1/users")
        .iter()
        .filter(|c| c.path == "/api/v1/users")
        .map(|c| c.query.clone())
        .collect();
    assert_eq!(
        pages,
        vec!["page=0&size=1000", "page=1&size=1000", "page=2&size=1000"]
    );

    // The index is reused: a second grant for a known user does not scan again.
    p.grant(&grant_req("filler-7@fake.test", &dev()))
        .await
        .unwrap();
    assert_eq!(
        cc.calls_to("GET", "/api/v1/users")
            .iter()
            .filter(|c| c.path == "/api/v1/users")
            .count(),
        3
    );

    // Smaller pages through the client directly.
    let mut cfg = client_config(&cc);
    cfg.page_size = 500;
    let all = CloudConnexaClient::new(cfg).unwrap().users().await.unwrap();
    assert_eq!(all.len(), 2301);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_grants_without_a_429_storm() {
    let cc = FakeCloudConnexa::start(FakeConfig {
        burst: 10,
        replenish_rate: 50,
        replenish_time: 1,
        ..FakeConfig::default()
    })
    .await;
    cc.seed_network("dev-network");
    // Half the people exist already, half are new.
    for i in 0..25 {
        cc.seed_user(&format!("existing-{i}@example.com"), None, &[]);
    }
    let p = Arc::new(provider_with(&cc, &[]));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let p = p.clone();
        let email = if i % 2 == 0 {
            format!("existing-{}@example.com", i / 2)
        } else {
            format!("new-{i}@example.com")
        };
        tasks.push(tokio::spawn(async move {
            p.grant(&grant_req(&email, &dev())).await
        }));
    }
    let mut failures = 0;
    for t in tasks {
        if t.await.unwrap().is_err() {
            failures += 1;
        }
    }
    let took = started.elapsed();
    let api_calls = cc
        .calls()
        .iter()
        .filter(|c| c.path != "/api/v1/oauth/token")
        .count();
    let throttled = cc.throttled_count();
    println!(
        "50 concurrent grants: {failures} failed, {throttled} x 429 out of {api_calls} API calls, {:.2}s; client stats {:?}",
        took.as_secs_f64(),
        p.client().stats()
    );
    assert_eq!(failures, 0);
    let group = cc.group_by_name("dev-network-users").unwrap();
    assert_eq!(
        cc.groups()
            .iter()
            .filter(|g| g.name == "dev-network-users")
            .count(),
        1,
        "one group, created once"
    );
    let members = cc
        .users()
        .iter()
        .filter(|u| u.secondary_group_ids.contains(&group.id))
        .count();
    assert_eq!(members, 50);
    assert!(
        throttled <= 5,
        "{throttled} 429s: the limiter should keep under the advertised rate"
    );
    let scans = cc
        .calls_to("GET", "/api/v1/users")
        .iter()
        .filter(|c| c.path == "/api/v1/users")
        .count();
    println!("user-list page requests: {scans}");
    // Two on a quiet machine (one scan of two pages). Without sharing every grant of a new user
    // would scan (about 50); the bound leaves room for scheduling jitter on a loaded machine.
    assert!(scans <= 10, "scans are shared: {scans} page requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_one_credential_stay_within_the_limit() {
    let cc = FakeCloudConnexa::start(FakeConfig {
        burst: 10,
        replenish_rate: 50,
        replenish_time: 1,
        ..FakeConfig::default()
    })
    .await;
    cc.seed_network("dev-network");
    cc.seed_group("dev-network-users");
    let replicas = [
        Arc::new(provider_with(&cc, &[])),
        Arc::new(provider_with(&cc, &[])),
    ];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let p = replicas[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            p.grant(&grant_req(&format!("r{i}@example.com"), &dev()))
                .await
        }));
    }
    let failures = futures_count_errors(tasks).await;
    let throttled = cc.throttled_count();
    let calls = cc
        .calls()
        .iter()
        .filter(|c| c.path != "/api/v1/oauth/token")
        .count();
    println!(
        "2 replicas, 40 grants: {failures} failed, {throttled} x 429 out of {calls} API calls"
    );
    assert_eq!(failures, 0);
    // Each replica only learns of the other through X-RateLimit-Remaining, so a few 429s are
    // expected; a storm is not.
    assert!(throttled <= calls / 4, "{throttled} 429s");
}

async fn futures_count_errors<T, E>(tasks: Vec<tokio::task::JoinHandle<Result<T, E>>>) -> usize {
    let mut failures = 0;
    for t in tasks {
        if t.await.unwrap().is_err() {
            failures += 1;
        }
    }
    failures
}

#[tokio::test]
async fn injected_server_errors_are_retried_or_reported_as_transient() {
    let cc = fake().await;
    let p = provider_with(&cc, &[]);
    p.networks().await.unwrap(); // token and rate headers in place

    cc.fail_next(2, 503);
    p.grant(&grant_req("flaky@example.com", &dev()))
        .await
        .unwrap();
    assert!(p.client().stats().retries >= 2);

    cc.fail_next(50, 500);
    match p.grant(&grant_req("down@example.com", &dev())).await {
        Err(ProviderError::Transient { message: m, .. }) => assert!(m.contains("500"), "{m}"),
        other => panic!("expected a transient error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_429_with_an_empty_body_is_backed_off_and_retried() {
    // The server allows one call, then 10/s; the client starts out believing it may send five
    // at once, so the first burst runs into 429s before any header has corrected it.
    let cc = FakeCloudConnexa::start(FakeConfig {
        burst: 1,
        replenish_rate: 10,
        replenish_time: 1,
        ..FakeConfig::default()
    })
    .await;
    cc.seed_network("dev-network");
    let mut cfg = client_config(&cc);
    cfg.rate_limits.read_per_sec = 100.0;
    cfg.rate_limits.initial_burst = 5.0;
    let c = CloudConnexaClient::new(cfg).unwrap();
    let calls: Vec<_> = (0..5).map(|_| Box::pin(c.networks())).collect();
    for r in join_all_local(calls).await {
        assert_eq!(r.unwrap().len(), 1);
    }
    let throttled = cc.throttled_count();
    assert!(throttled >= 1, "the fake sent no 429");
    assert_eq!(
        c.stats().throttled as usize,
        throttled,
        "every 429 was seen and retried"
    );
    assert_eq!(c.stats().requests as usize, 5 + throttled);
}

/// Polls futures together on this task (a `join_all` without the futures crate).
async fn join_all_local<F: std::future::Future + Unpin>(mut fs: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut results: Vec<Option<F::Output>> = fs.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (i, f) in fs.iter_mut().enumerate() {
            if results[i].is_none() {
                match std::pin::Pin::new(f).poll(cx) {
                    Poll::Ready(v) => results[i] = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(results.iter_mut().map(|r| r.take().unwrap()).collect())
        }
    })
    .await
}

#[tokio::test]
async fn a_read_only_credential_is_a_permanent_error() {
    let cc = fake().await;
    cc.set_read_only(true);
    let p = provider_with(&cc, &[]);
    match p.grant(&grant_req("ro@example.com", &dev())).await {
        Err(ProviderError::Permanent { message: m, .. }) => {
            assert!(m.contains("403") && m.contains("read-only"), "{m}")
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn client_maps_the_error_envelope() {
    let cc = fake().await;
    let c = CloudConnexaClient::new(client_config(&cc)).unwrap();

    // Unknown user: HTTP 400 with a "not found" message is still NotFound.
    match c
        .user("00000000-0000-0000-0000-00000000dead")
        .await
        .unwrap_err()
    {
        CloudConnexaError::NotFound { status, .. } => assert_eq!(status, 400),
        e => panic!("{e:?}"),
    }
    // Unknown group: a plain 404.
    match c.user_group("nope").await.unwrap_err() {
        CloudConnexaError::NotFound { status, what, .. } => {
            assert_eq!((status, what.as_str()), (404, "user group nope"))
        }
        e => panic!("{e:?}"),
    }
    // Validation: 400 with errorDetails, permanent.
    let dup = provider_cloudconnexa::UserCreate {
        first_name: "A".into(),
        last_name: "B".into(),
        username: "ab".into(),
        email: "ab@example.com".into(),
        group_id: None,
        secondary_group_ids: vec![],
        role: provider_cloudconnexa::Role::Member,
    };
    c.create_user(&dup).await.unwrap();
    let err = c.create_user(&dup).await.unwrap_err();
    match &err {
        CloudConnexaError::Rejected { status, envelope } => {
            assert_eq!(*status, 400);
            assert_eq!(envelope.fields(), vec!["email"]);
            assert_eq!(envelope.status_error.as_deref(), Some("BAD_REQUEST"));
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        ProviderError::from(err),
        ProviderError::Permanent { .. }
    ));

    // Wrong credentials: Unauthorized, permanent, and the secret is nowhere in the message.
    let mut bad = client_config(&cc);
    bad.client_secret = provider_cloudconnexa::Secret::new("wrong-secret-value");
    let err = CloudConnexaClient::new(bad)
        .unwrap()
        .networks()
        .await
        .unwrap_err();
    assert!(
        matches!(err, CloudConnexaError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("wrong-secret-value"));

    // Nothing listening: a transport error, transient, without the credentials in it.
    let mut gone = ClientConfig::new("http://127.0.0.1:9", "id", "secret-in-url");
    gone.rate_limits.backoff_base = Duration::from_millis(1);
    let err = CloudConnexaClient::new(gone)
        .unwrap()
        .networks()
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(!err.to_string().contains("secret-in-url"), "{err}");
}

#[tokio::test]
async fn token_endpoint_accepts_basic_and_json_credentials() {
    let cc = fake().await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/oauth/token", cc.url());
    let basic = http
        .post(&url)
        .basic_auth(cc.client_id(), Some(cc.client_secret()))
        .body(r#"{"grant_type":"client_credentials","scope":"default"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200);
    let body: Value = basic.json().await.unwrap();
    assert!(body["access_token"].as_str().unwrap().len() > 10);
    assert_eq!(body["expires_in"], 43199);
    let json_body = http
        .post(&url)
        .json(&json!({"client_id": cc.client_id(), "client_secret": cc.client_secret(), "grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_body.status(), 200);
    let wrong = http
        .post(&url)
        .basic_auth(cc.client_id(), Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let vias: Vec<String> = cc
        .calls()
        .iter()
        .map(|c| c.credentials_via.clone())
        .collect();
    assert_eq!(vias, vec!["basic", "json", "basic"]);

    // The documented 429: empty body, no Retry-After, rate-limit headers.
    cc.set_rate_limit(1, 1, 60);
    let token = body["access_token"].as_str().unwrap().to_string();
    let networks = format!("{}/api/v1/networks?page=0&size=10", cc.url());
    let ok = http
        .get(&networks)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(ok.headers()["x-ratelimit-replenish-time"], "60");
    let limited = http
        .get(&networks)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().get("retry-after").is_none());
    assert!(limited.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn timeouts_are_retried_then_transient() {
    let cc = fake().await;
    let mut cfg = client_config(&cc);
    cfg.request_timeout = Duration::from_millis(200);
    let c = CloudConnexaClient::new(cfg).unwrap();
    c.networks().await.unwrap();
    cc.set_latency(Duration::from_millis(400));
    let err = c.networks().await.unwrap_err();
    assert!(
        matches!(
            err,
            CloudConnexaError::Transport {
                timed_out: true,
                ..
            }
        ) && err.to_string().contains("timed out"),
        "{err:?}"
    );
    assert!(ProviderError::from(err).is_transient());
    assert_eq!(c.stats().retries, 2, "three attempts in all");
}

#[tokio::test]
async fn networks_are_cached_and_checked() {
    let cc = fake().await;
    let p = provider_with(&cc, &[]);
    for _ in 0..5 {
        assert_eq!(p.networks().await.unwrap().len(), 2);
    }
    assert!(p.network_exists("staging").await.unwrap());
    assert!(!p.network_exists("prod").await.unwrap());
    let configured = [
        dev(),
        resource("prod", json!({"network": "prod"})),
        Resource {
            provider: "gcp-iam".into(),
            ..resource("staging", json!({"network": "staging"}))
        },
    ];
    let listed: Vec<&str> = p
        .available(&configured)
        .await
        .unwrap()
        .iter()
        .map(|(r, _)| r.id.as_str())
        .collect();
    assert_eq!(
        listed,
        vec!["dev-network"],
        "only existing networks of this provider"
    );
    assert_eq!(cc.calls_to("GET", "/api/v1/networks").len(), 1);
    p.validate(&dev()).await.unwrap();
    let missing = resource("prod", json!({"network": "prod"}));
    assert!(matches!(
        p.validate(&missing).await,
        Err(ProviderError::Permanent { .. })
    ));
    assert!(!format!("{p:?}").contains(&cc.client_secret()));
}

/// A resource naming a network Cloud Connexa does not have is refused at grant time, before
/// anything is created (no group, no user, no membership that leads nowhere).
#[tokio::test]
async fn grant_for_a_missing_network_is_refused_and_creates_nothing() {
    let cc = fake().await;
    let p = provider_with(&cc, &[]);
    let qa = resource("qa-network", json!({"network": "qa-network"}));
    let err = p
        .grant(&grant_req("dana@example.com", &qa))
        .await
        .unwrap_err();
    match err {
        ProviderError::Permanent { message: m, .. } => assert_eq!(
            m,
            "Network 'qa-network' does not exist. Use `/vpn-access list` to see available networks."
        ),
        other => panic!("expected a permanent error, got {other:?}"),
    }
    assert!(cc.user_by_email("dana@example.com").is_none());
    assert!(cc.group_by_name("qa-network-users").is_none());
    // The same provider still grants on a network that exists.
    p.grant(&grant_req("dana@example.com", &dev()))
        .await
        .unwrap();
    assert_eq!(
        cc.calls_to("GET", "/api/v1/networks").len(),
        1,
        "the list is cached"
    );
}

// ------------------------------------------------------------------------------------------------
// observe and drift

#[tokio::test]
async fn drift_is_detected_and_repaired() {
    let cc = fake().await;
    let devs = cc.seed_group("dev-network-users");
    let p = provider_with(&cc, &[]);
    let r = resource(
        "dev-network",
        json!({"network": "dev-network", "unmanaged_members": ["oncall@example.com"]}),
    );

    let held = p.grant(&grant_req("held@example.com", &r)).await.unwrap();
    let lost = p.grant(&grant_req("lost@example.com", &r)).await.unwrap();
    cc.edit_user(&handle(&lost).user_id, |u| u.secondary_group_ids.clear()); // removed in the portal
    cc.seed_user("stray@example.com", None, &[&devs]); // added in the portal
    cc.seed_user("oncall@example.com", None, &[&devs]); // permanent member, declared unmanaged
    cc.seed_user("admin@example.com", Some(&devs), &[]); // primary group
    let _ = held;

    let observed: Vec<LiveAccess> = p.observe(&r).await.unwrap();
    let mut holders: Vec<&str> = observed.iter().map(|o| o.holder.as_str()).collect();
    holders.sort();
    assert_eq!(
        holders,
        vec![
            "admin@example.com",
            "held@example.com",
            "oncall@example.com",
            "stray@example.com"
        ]
    );

    let active = vec![
        "held@example.com".to_string(),
        "lost@example.com".to_string(),
    ];
    let drift = p.drift(&r, &active).await.unwrap();
    assert_eq!(
        drift
            .stray
            .iter()
            .map(|s| s.holder.as_str())
            .collect::<Vec<_>>(),
        vec!["stray@example.com"]
    );
    assert_eq!(drift.missing, vec!["lost@example.com".to_string()]);

    let mut events = Vec::new();
    for s in &drift.stray {
        events.extend(p.remove_stray(&r, s).await.unwrap());
    }
    for m in &drift.missing {
        events.extend(p.restore_missing(&r, m).await.unwrap());
    }
    assert_eq!(
        names(&events),
        vec!["user_removed_from_group", "user_added_to_group"]
    );
    assert!(events.iter().all(|e| e.details["reason"] == "drift_repair"));

    assert!(p.drift(&r, &active).await.unwrap().is_clean());
    assert!(
        cc.user_by_email("oncall@example.com")
            .unwrap()
            .secondary_group_ids
            .contains(&devs)
    );
    assert_eq!(
        cc.user_by_email("admin@example.com").unwrap().group_id,
        devs
    );

    // A group that does not exist has no members (and observe does not create it).
    let none = resource("other", json!({"network": "staging"}));
    assert!(p.observe(&none).await.unwrap().is_empty());
    assert!(cc.group_by_name("staging-users").is_none());
}

/// Issue 11: the engine's call limit cuts a grant whose `PUT` made the change but answers late;
/// the job runs again, finds the person in the group, and must know that this grant put them
/// there (its recorded intent), so that revocation removes the membership.
#[tokio::test]
async fn a_retried_grant_adopts_its_own_landed_write_and_revoke_removes_it() {
    let f = fake().await;
    let jane = f.seed_user("jane@example.com", None, &[]);
    let p = provider_with(&f, &[]);
    let mut req = grant_req("jane@example.com", &dev());
    f.seed_group("dev-network-users");
    // What the engine does: record the intent (committed) before the first grant call.
    req.intent = Some(p.intent(&req).await.unwrap());
    f.slow_after_apply(1, Duration::from_secs(3));
    let first = tokio::time::timeout(Duration::from_secs(1), p.grant(&req)).await;
    assert!(first.is_err(), "the call limit cut the first attempt");
    let group = f.group_by_name("dev-network-users").unwrap().id;
    assert!(
        f.user(&jane).unwrap().secondary_group_ids.contains(&group),
        "the change landed"
    );

    let out = p.grant(&req).await.unwrap();
    assert!(
        !handle(&out).group_was_present,
        "a retry must not take its own earlier work for pre-existing access"
    );
    p.revoke(&revoke_req(&req, &out)).await.unwrap();
    assert!(
        !f.user(&jane).unwrap().secondary_group_ids.contains(&group),
        "membership left behind after revocation"
    );
}

/// A stored handle that does not decode (a bad write, a format from elsewhere) does not hold
/// the revocation back: it is reported and the intent removes the membership.
#[tokio::test]
async fn revoke_with_an_undecodable_handle_falls_back_to_the_intent() {
    let f = fake().await;
    let group = f.seed_group("dev-network-users");
    let jane = f.seed_user("jane@example.com", None, &[]);
    let p = provider_with(&f, &[]);
    let mut req = grant_req("jane@example.com", &dev());
    let intent = p.intent(&req).await.unwrap();
    req.intent = Some(intent.clone());
    f.edit_user(&jane, |u| u.secondary_group_ids.push(group.clone()));
    p.revoke(&RevokeRequest {
        grant_id: req.grant_id,
        subject: req.subject.clone(),
        resource: req.resource.clone(),
        handle: serde_json::json!({"v": "not a handle"}),
        intent,
    })
    .await
    .expect("the intent revokes");
    assert!(!f.user(&jane).unwrap().secondary_group_ids.contains(&group));
}

/// Issue 11: a grant whose call never answered has no handle; its revoke removes what the
/// intent names (and keeps a membership the person had before).
#[tokio::test]
async fn revoke_without_a_handle_removes_what_the_intent_names() {
    let f = fake().await;
    let group = f.seed_group("dev-network-users");
    let jane = f.seed_user("jane@example.com", None, &[]);
    let john = f.seed_user("john@example.com", None, &[&group]);
    let p = provider_with(&f, &[]);
    for (email, id, kept) in [
        ("jane@example.com", &jane, false),
        ("john@example.com", &john, true),
    ] {
        let mut req = grant_req(email, &dev());
        let intent = p.intent(&req).await.unwrap();
        req.intent = Some(intent.clone());
        let _ = tokio::time::timeout(Duration::from_millis(1), p.grant(&req)).await;
        // The first attempt may or may not have landed: make sure it did.
        f.edit_user(id, |u| {
            if !u.secondary_group_ids.contains(&group) {
                u.secondary_group_ids.push(group.clone());
            }
        });
        let out = p
            .revoke(&RevokeRequest {
                grant_id: req.grant_id,
                subject: req.subject.clone(),
                resource: req.resource.clone(),
                handle: Value::Null,
                intent,
            })
            .await
            .unwrap();
        assert_eq!(
            f.user(id).unwrap().secondary_group_ids.contains(&group),
            kept,
            "{email}: {out:?}"
        );
    }
}
