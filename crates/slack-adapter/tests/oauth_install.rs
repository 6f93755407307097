//! The install flow over HTTP against the fake Slack OAuth methods (testkit::slack_oauth), with
//! the in-memory installation store. The SQL store is covered by gatehouse-runtime's
//! `tests/slack_installations.rs` (raw rows on SQLite and PostgreSQL).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use slack_adapter::config::Secret;
use slack_adapter::crypto::TokenCipher;
use slack_adapter::installations::{InstallationStore, Installations, MemoryInstallationStore};
use slack_adapter::oauth::{InstallFlow, OAuthConfig, lifecycle_layer, oauth_router};
use testkit::slack_oauth::{self, FakeSlackOAuth, Grant};

const ADMIN: &str = "admin-token-123";

struct Env {
    fake: FakeSlackOAuth,
    store: Arc<MemoryInstallationStore>,
    flow: Arc<InstallFlow>,
    app: Router,
}

async fn env_with(ttl: Duration) -> Env {
    let fake = FakeSlackOAuth::start().await;
    let store = Arc::new(MemoryInstallationStore::default());
    let ins = Installations::new(
        store.clone(),
        Arc::new(TokenCipher::from_keys(&[[42u8; 32]]).unwrap()),
    );
    let config = OAuthConfig {
        client_id: slack_oauth::CLIENT_ID.into(),
        client_secret: Secret::new(slack_oauth::CLIENT_SECRET),
        api_url: fake.api_url(),
        admin_token: Secret::new(ADMIN),
        state_ttl: ttl,
        ..OAuthConfig::default()
    };
    let flow = Arc::new(InstallFlow::new(config, ins));
    let app = oauth_router(flow.clone());
    Env {
        fake,
        store,
        flow,
        app,
    }
}

async fn env() -> Env {
    env_with(Duration::from_secs(300)).await
}

async fn call(app: &Router, method: &str, uri: &str, admin: bool) -> (StatusCode, String) {
    let mut b = Request::builder().method(method).uri(uri);
    if admin {
        b = b.header(header::AUTHORIZATION, format!("Bearer {ADMIN}"));
    }
    let resp = app
        .clone()
        .oneshot(b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).to_string())
}

async fn start(app: &Router) -> String {
    let (s, body) = call(app, "GET", "/api/slack/oauth/start", true).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let url = v["authorize_url"].as_str().unwrap();
    let state = v["state"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("https://slack.com/oauth/v2/authorize?"),
        "{url}"
    );
    assert!(url.contains(&format!("state={state}")), "{url}");
    assert!(
        url.contains(&format!("client_id={}", slack_oauth::CLIENT_ID)),
        "{url}"
    );
    assert!(url.contains("scope=commands"), "{url}");
    assert!(state.len() >= 32);
    state
}

fn all_tokens(fake: &FakeSlackOAuth) -> Vec<String> {
    fake.tokens().into_iter().map(|t| t.token).collect()
}

#[tokio::test]
async fn install_stores_encrypted_and_status_hides_tokens() {
    let e = env().await;
    e.fake.add_code("code-1", Grant::workspace("T111", "Alpha"));
    let state = start(&e.app).await;
    let (s, page) = call(
        &e.app,
        "GET",
        &format!("/slack/oauth/callback?code=code-1&state={state}"),
        false,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(
        page.contains("installed") && page.contains("Alpha"),
        "{page}"
    );

    // Wire: Basic auth, form body, auth.test with the new bot token.
    let ex = &e.fake.calls_to("oauth.v2.access")[0];
    assert_eq!(ex.http_method, "POST");
    assert!(
        ex.content_type
            .starts_with("application/x-www-form-urlencoded")
    );
    assert_eq!(ex.basic_client_id.as_deref(), Some(slack_oauth::CLIENT_ID));
    assert!(!ex.args.contains_key("client_secret"));
    let bot = e.fake.bot_token("T111").unwrap();
    assert_eq!(
        e.fake.calls_to("auth.test")[0].bearer.as_deref(),
        Some(bot.as_str())
    );

    // At rest: ciphertext only.
    let sealed = e.store.find(None, Some("T111")).await.unwrap().unwrap();
    let raw = [&sealed.bot_token, &sealed.user_token]
        .into_iter()
        .flatten()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(raw.len(), 2);
    for tok in all_tokens(&e.fake) {
        for ct in &raw {
            assert!(!ct.windows(tok.len()).any(|w| w == tok.as_bytes()));
        }
    }
    assert!(!format!("{sealed:?}").contains("xox"));
    // Readable with the key.
    let got = e
        .flow
        .installations()
        .bot_token(None, Some("T111"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.expose(), bot);
    let info = &sealed.info;
    assert_eq!(info.team_name.as_deref(), Some("Alpha"));
    assert_eq!(info.bot_user_id.as_deref(), Some("U111BOT"));
    assert_eq!(info.bot_id.as_deref(), Some("B111"));
    assert_eq!(info.app_id.as_deref(), Some(slack_oauth::APP_ID));
    assert_eq!(info.installer_user_id.as_deref(), Some("U111INST"));
    assert!(!info.is_enterprise_install);

    // Status: the document's fields, no token anywhere.
    let (s, body) = call(&e.app, "GET", "/api/slack/installation/T111", true).await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["installed"], json!(true));
    assert_eq!(v["team_id"], json!("T111"));
    assert_eq!(
        v["bot_scopes"],
        json!("commands,chat:write,im:write,users:read")
    );
    assert!(!body.contains("xox"), "{body}");
    let (s, body) = call(&e.app, "GET", "/api/slack/installation/T999", true).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["installed"],
        json!(false)
    );
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_token() {
    let e = env().await;
    for (m, uri) in [
        ("GET", "/api/slack/oauth/start"),
        ("GET", "/api/slack/installation/T1"),
        ("DELETE", "/api/slack/installation/T1"),
        ("POST", "/api/slack/cleanup-expired-states"),
    ] {
        let (s, _) = call(&e.app, m, uri, false).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{m} {uri}");
        let resp = e
            .app
            .clone()
            .oneshot(
                Request::builder()
                    .method(m)
                    .uri(uri)
                    .header(header::AUTHORIZATION, "Bearer wrong")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{m} {uri}");
    }
    // The page itself is public but holds no state: it asks for the token.
    let (s, page) = call(&e.app, "GET", "/slack/install", false).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("/api/slack/oauth/start") && page.contains("Add to Slack"));
    assert!(!page.contains("state="));
}

#[tokio::test]
async fn bad_states_are_refused_and_nothing_is_written() {
    let e = env().await;
    e.fake.add_code("c", Grant::workspace("T1", "One"));
    let ok_state = start(&e.app).await;
    // Forged.
    let (s, page) = call(
        &e.app,
        "GET",
        "/slack/oauth/callback?code=c&state=forged123",
        false,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(page.contains("not one Gatehouse issued"), "{page}");
    // Missing.
    let (s, page) = call(&e.app, "GET", "/slack/oauth/callback?code=c", false).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(page.contains("no state"), "{page}");
    assert!(
        e.fake.calls_to("oauth.v2.access").is_empty(),
        "no exchange on a bad state"
    );
    assert!(e.store.all().await.unwrap().is_empty());

    // Used once, then reused.
    let (s, _) = call(
        &e.app,
        "GET",
        &format!("/slack/oauth/callback?code=c&state={ok_state}"),
        false,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    e.fake.add_code("c2", Grant::workspace("T2", "Two"));
    let (s, page) = call(
        &e.app,
        "GET",
        &format!("/slack/oauth/callback?code=c2&state={ok_state}"),
        false,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(page.contains("already used"), "{page}");
    assert!(e.store.find(None, Some("T2")).await.unwrap().is_none());
    assert_eq!(e.fake.calls_to("oauth.v2.access").len(), 1);
}

#[tokio::test]
async fn expired_state_is_refused() {
    let e = env_with(Duration::from_millis(50)).await;
    e.fake.add_code("c", Grant::workspace("T1", "One"));
    let state = start(&e.app).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let (s, page) = call(
        &e.app,
        "GET",
        &format!("/slack/oauth/callback?code=c&state={state}"),
        false,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(page.contains("expired"), "{page}");
    assert!(e.store.all().await.unwrap().is_empty());
    assert!(e.fake.calls_to("oauth.v2.access").is_empty());
    // Cleanup removes it.
    let (s, body) = call(&e.app, "POST", "/api/slack/cleanup-expired-states", true).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["deleted"],
        json!(1)
    );
}

#[tokio::test]
async fn user_cancel_installs_nothing_and_burns_the_state() {
    let e = env().await;
    let state = start(&e.app).await;
    let (s, page) = call(
        &e.app,
        "GET",
        &format!("/slack/oauth/callback?error=access_denied&state={state}"),
        false,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("cancelled"), "{page}");
    assert!(e.fake.calls().is_empty());
    assert!(e.store.all().await.unwrap().is_empty());
    e.fake.add_code("c", Grant::workspace("T1", "One"));
    let (s, _) = call(
        &e.app,
        "GET",
        &format!("/slack/oauth/callback?code=c&state={state}"),
        false,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "a cancelled link cannot be replayed"
    );
    // Slack's other errors are named; a cancel without a state is still a cancel.
    let (s, page) = call(
        &e.app,
        "GET",
        "/slack/oauth/callback?error=access_denied",
        false,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("cancelled"), "{page}");
    let (_, page) = call(
        &e.app,
        "GET",
        "/slack/oauth/callback?error=invalid_scope&state=x",
        false,
    )
    .await;
    assert!(
        page.contains("invalid_scope") && page.contains("Nothing was installed"),
        "{page}"
    );
    assert!(e.store.all().await.unwrap().is_empty());
}

#[tokio::test]
async fn slack_errors_are_reported_and_failures_after_exchange_revoke() {
    let e = env().await;
    // Unknown code: Slack's invalid_code, nothing to revoke.
    let state = start(&e.app).await;
    let (s, page) = call(
        &e.app,
        "GET",
        &format!("/slack/oauth/callback?code=nope&state={state}"),
        false,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert!(page.contains("invalid_code"), "{page}");

    // auth.test fails after the exchange: both tokens are revoked, nothing stored.
    e.fake.add_code("c", Grant::workspace("T5", "Five"));
    e.fake.fail_next("auth.test", "internal_error");
    let state = start(&e.app).await;
    let (s, page) = call(
        &e.app,
        "GET",
        &format!("/slack/oauth/callback?code=c&state={state}"),
        false,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    assert!(page.contains("revoked"), "{page}");
    let issued = all_tokens(&e.fake);
    assert_eq!(issued.len(), 2);
    for t in &issued {
        assert!(e.fake.is_revoked(t), "{t} not revoked");
    }
    let revokes = e.fake.calls_to("auth.revoke");
    assert!(revokes.iter().all(|c| c.http_method == "GET"));
    assert!(e.store.all().await.unwrap().is_empty());
}

#[tokio::test]
async fn uninstall_revokes_then_deletes() {
    let e = env().await;
    e.fake.add_code("c", Grant::workspace("T7", "Seven"));
    let state = start(&e.app).await;
    call(
        &e.app,
        "GET",
        &format!("/slack/oauth/callback?code=c&state={state}"),
        false,
    )
    .await;
    let (s, body) = call(&e.app, "DELETE", "/api/slack/installation/T7", true).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    for t in all_tokens(&e.fake) {
        assert!(e.fake.is_revoked(&t));
    }
    assert_eq!(e.fake.calls_to("auth.revoke").len(), 2);
    assert!(e.store.all().await.unwrap().is_empty());
    let (s, _) = call(&e.app, "DELETE", "/api/slack/installation/T7", true).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn enterprise_and_org_wide_installs() {
    let e = env().await;
    e.fake.add_code(
        "ws",
        Grant::workspace("T8", "Eight").enterprise("E1", "Grid"),
    );
    e.fake.add_code(
        "org",
        Grant::workspace("T0", "")
            .enterprise("E2", "Org")
            .org_wide(),
    );
    let s1 = start(&e.app).await;
    let s2 = start(&e.app).await;
    call(
        &e.app,
        "GET",
        &format!("/slack/oauth/callback?code=ws&state={s1}"),
        false,
    )
    .await;
    let (s, page) = call(
        &e.app,
        "GET",
        &format!("/slack/oauth/callback?code=org&state={s2}"),
        false,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let ws = e.store.find(Some("E1"), Some("T8")).await.unwrap().unwrap();
    assert_eq!(ws.info.enterprise_name.as_deref(), Some("Grid"));
    assert!(!ws.info.is_enterprise_install);
    let org = e.store.find(Some("E2"), None).await.unwrap().unwrap();
    assert!(org.info.is_enterprise_install);
    // A workspace of the org without its own install is served by the org token.
    let tok = e
        .flow
        .installations()
        .bot_token(Some("E2"), Some("T555"))
        .await
        .unwrap();
    assert!(tok.unwrap().expose().starts_with("xoxb-T0"));
    let (_, body) = call(&e.app, "GET", "/api/slack/installation/E2", true).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["installed"], json!(true));
    assert_eq!(v["is_enterprise_install"], json!(true));
}

#[tokio::test]
async fn rotating_tokens_are_refreshed_before_expiry() {
    let e = env().await;
    e.fake
        .add_code("c", Grant::workspace("T3", "Three").rotating());
    let state = start(&e.app).await;
    call(
        &e.app,
        "GET",
        &format!("/slack/oauth/callback?code=c&state={state}"),
        false,
    )
    .await;
    let first = e
        .flow
        .installations()
        .resolve(None, Some("T3"))
        .await
        .unwrap()
        .unwrap();
    assert!(first.info.bot_token_expires_at.is_some());
    assert!(first.bot_refresh_token.is_some());
    // 12 h left: not due with a 1 h margin, due with a 13 h one.
    assert_eq!(
        e.flow.refresh_due(Duration::from_secs(3600)).await.unwrap(),
        0
    );
    assert_eq!(
        e.flow
            .refresh_due(Duration::from_secs(13 * 3600))
            .await
            .unwrap(),
        1
    );
    let second = e
        .flow
        .installations()
        .resolve(None, Some("T3"))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(first.bot_token, second.bot_token);
    assert_ne!(first.bot_refresh_token, second.bot_refresh_token);
    assert_eq!(
        second.bot_token.unwrap().expose(),
        e.fake.bot_token("T3").unwrap()
    );
    let refresh = &e.fake.calls_to("oauth.v2.access")[1];
    assert_eq!(
        refresh.args.get("grant_type").map(String::as_str),
        Some("refresh_token")
    );
    assert!(e.fake.is_revoked(first.bot_token.unwrap().expose()));
}

fn event_json(team: &str, ev: Value) -> Value {
    json!({"token": "XXYYZZ", "team_id": team, "api_app_id": "A0KRD7HC3", "event": ev,
           "type": "event_callback", "event_id": format!("Ev{}", fastrand_id()), "event_time": 1234567890})
}

fn event(team: &str, ev: Value) -> slack_adapter::payload::EventEnvelope {
    let body = event_json(team, ev).to_string();
    slack_adapter::payload::EventEnvelope::parse(body.as_bytes()).unwrap()
}

fn fastrand_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test]
async fn lifecycle_events_remove_what_they_name() {
    let e = env().await;
    for (code, team) in [("a", "TA"), ("b", "TB")] {
        e.fake.add_code(code, Grant::workspace(team, team));
        let st = start(&e.app).await;
        call(
            &e.app,
            "GET",
            &format!("/slack/oauth/callback?code={code}&state={st}"),
            false,
        )
        .await;
    }
    // tokens_revoked for the installer's user token only: the bot stays.
    let changed = e
        .flow
        .handle_event(&event(
            "TA",
            json!({"type": "tokens_revoked", "tokens": {"oauth": ["UAINST"]}}),
        ))
        .await
        .unwrap();
    assert!(changed);
    let a = e.store.find(None, Some("TA")).await.unwrap().unwrap();
    assert!(a.user_token.is_none() && a.bot_token.is_some());
    // tokens_revoked for the bot, then app_uninstalled (either order is fine).
    assert!(
        e.flow
            .handle_event(&event(
                "TA",
                json!({"type": "tokens_revoked", "tokens": {"bot": ["UABOT"]}})
            ))
            .await
            .unwrap()
    );
    assert!(
        !e.flow
            .handle_event(&event("TA", json!({"type": "app_uninstalled"})))
            .await
            .unwrap()
    );
    assert!(e.store.find(None, Some("TA")).await.unwrap().is_none());
    assert!(
        e.store.find(None, Some("TB")).await.unwrap().is_some(),
        "other workspace untouched"
    );
    // app_uninstalled first for TB.
    assert!(
        e.flow
            .handle_event(&event("TB", json!({"type": "app_uninstalled"})))
            .await
            .unwrap()
    );
    assert!(e.store.all().await.unwrap().is_empty());
}

#[tokio::test]
async fn lifecycle_layer_acts_only_on_accepted_deliveries() {
    let e = env().await;
    e.fake.add_code("a", Grant::workspace("TA", "A"));
    let st = start(&e.app).await;
    call(
        &e.app,
        "GET",
        &format!("/slack/oauth/callback?code=a&state={st}"),
        false,
    )
    .await;
    // A stand-in for the signed event router: 401 unless the test header is present.
    let inner = Router::new().route(
        "/slack/events",
        axum::routing::post(|h: axum::http::HeaderMap| async move {
            if h.contains_key("x-test-signed") {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            }
        }),
    );
    let app = lifecycle_layer(inner, e.flow.clone(), 64 * 1024);
    let body = event_json("TA", json!({"type": "app_uninstalled"})).to_string();
    let send = |signed: bool| {
        let mut b = Request::builder().method("POST").uri("/slack/events");
        if signed {
            b = b.header("x-test-signed", "1");
        }
        app.clone()
            .oneshot(b.body(Body::from(body.clone())).unwrap())
    };
    assert_eq!(
        send(false).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        e.store.find(None, Some("TA")).await.unwrap().is_some(),
        "unsigned delivery ignored"
    );
    assert_eq!(send(true).await.unwrap().status(), StatusCode::OK);
    let mut gone = false;
    for _ in 0..50 {
        if e.store.find(None, Some("TA")).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone);
}

#[tokio::test]
async fn two_workspaces_are_isolated() {
    let e = env().await;
    for (code, team) in [("a", "TA"), ("b", "TB")] {
        e.fake.add_code(code, Grant::workspace(team, team));
        let st = start(&e.app).await;
        call(
            &e.app,
            "GET",
            &format!("/slack/oauth/callback?code={code}&state={st}"),
            false,
        )
        .await;
    }
    let ins = e.flow.installations();
    let a = ins.bot_token(None, Some("TA")).await.unwrap().unwrap();
    let b = ins.bot_token(None, Some("TB")).await.unwrap().unwrap();
    assert_ne!(a, b);
    assert_eq!(a.expose(), e.fake.bot_token("TA").unwrap());
    assert_eq!(b.expose(), e.fake.bot_token("TB").unwrap());
    call(&e.app, "DELETE", "/api/slack/installation/TA", true).await;
    assert!(ins.bot_token(None, Some("TA")).await.unwrap().is_none());
    assert_eq!(ins.bot_token(None, Some("TB")).await.unwrap().unwrap(), b);
    assert!(!e.fake.is_revoked(b.expose()));
}

/// The server nests its admin API at `/api`; the installation endpoints merged beside it must
/// still be reachable (and the nest too).
#[tokio::test]
async fn routes_coexist_with_an_api_nest() {
    let e = env().await;
    let admin = Router::new().route("/requests", axum::routing::get(|| async { "requests" }));
    let app = Router::new().nest("/api", admin).merge(e.app.clone());
    let (s, _) = call(&app, "GET", "/api/slack/oauth/start", true).await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = call(&app, "GET", "/api/requests", false).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "requests"));
}

#[tokio::test]
async fn workspace_admins_cannot_touch_other_workspaces() {
    let fake = FakeSlackOAuth::start().await;
    let store = Arc::new(MemoryInstallationStore::default());
    let ins = Installations::new(
        store.clone(),
        Arc::new(TokenCipher::from_keys(&[[42u8; 32]]).unwrap()),
    );
    let config = OAuthConfig {
        client_id: slack_oauth::CLIENT_ID.into(),
        client_secret: Secret::new(slack_oauth::CLIENT_SECRET),
        api_url: fake.api_url(),
        admin_token: Secret::new(ADMIN),
        workspace_admin_tokens: slack_adapter::oauth::parse_workspace_tokens(
            "T1=scoped-one, T2=scoped-two,broken",
        ),
        ..OAuthConfig::default()
    };
    assert_eq!(
        config.workspace_admin_tokens.len(),
        2,
        "the malformed entry is skipped"
    );
    assert!(
        !format!("{config:?}").contains("scoped-one"),
        "tokens never in Debug"
    );
    let app = oauth_router(Arc::new(InstallFlow::new(config, ins)));
    let with = |token: &'static str, method: &'static str, uri: &'static str| {
        let app = app.clone();
        async move {
            let resp = app
                .oneshot(
                    Request::builder()
                        .method(method)
                        .uri(uri)
                        .header(header::AUTHORIZATION, format!("Bearer {token}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&body).to_string())
        }
    };
    // Its own workspace: allowed.
    assert_eq!(
        with("scoped-one", "GET", "/api/slack/installation/T1")
            .await
            .0,
        StatusCode::OK
    );
    // Another workspace: refused, and nothing is revoked or deleted.
    let (s, body) = with("scoped-one", "GET", "/api/slack/installation/T2").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("limited to workspace T1"), "{body}");
    assert_eq!(
        with("scoped-one", "DELETE", "/api/slack/installation/T2")
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        with("scoped-two", "DELETE", "/api/slack/installation/T1")
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // State clean-up is for the global admin only.
    assert_eq!(
        with("scoped-one", "POST", "/api/slack/cleanup-expired-states")
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        with(ADMIN, "POST", "/api/slack/cleanup-expired-states")
            .await
            .0,
        StatusCode::OK
    );
    // A workspace admin's install link preselects their workspace.
    let (s, body) = with("scoped-two", "GET", "/api/slack/oauth/start").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("team=T2"), "{body}");
    // The global admin reaches every workspace.
    assert_eq!(
        with(ADMIN, "GET", "/api/slack/installation/T2").await.0,
        StatusCode::OK
    );
}

/// Issue 11 §5: an install link made with a workspace-scoped admin token installs into that
/// workspace only. A callback that comes back for another workspace is refused, the tokens Slack
/// handed out are revoked (`auth.revoke`), and nothing is stored.
#[tokio::test]
async fn a_scoped_admins_link_installs_only_into_its_own_workspace() {
    let fake = FakeSlackOAuth::start().await;
    let store = Arc::new(MemoryInstallationStore::default());
    let ins = Installations::new(
        store.clone(),
        Arc::new(TokenCipher::from_keys(&[[42u8; 32]]).unwrap()),
    );
    let config = OAuthConfig {
        client_id: slack_oauth::CLIENT_ID.into(),
        client_secret: Secret::new(slack_oauth::CLIENT_SECRET),
        api_url: fake.api_url(),
        admin_token: Secret::new(ADMIN),
        workspace_admin_tokens: slack_adapter::oauth::parse_workspace_tokens("T1=scoped-one"),
        ..OAuthConfig::default()
    };
    let app = oauth_router(Arc::new(InstallFlow::new(config, ins)));
    let scoped_start = || {
        let app = app.clone();
        async move {
            let resp = app
                .oneshot(
                    Request::builder()
                        .uri("/api/slack/oauth/start")
                        .header(header::AUTHORIZATION, "Bearer scoped-one")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let v: Value = serde_json::from_slice(&body).unwrap();
            v["state"].as_str().unwrap().to_string()
        }
    };
    // The person following T1's link picks workspace T2 in Slack's dialog.
    fake.add_code("other", Grant::workspace("T2", "Two"));
    let state = scoped_start().await;
    let (s, page) = call(
        &app,
        "GET",
        &format!("/slack/oauth/callback?code=other&state={state}"),
        false,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{page}");
    assert!(page.contains("workspace T1"), "{page}");
    let issued = all_tokens(&fake);
    assert!(!issued.is_empty());
    for t in &issued {
        assert!(fake.is_revoked(t), "{t} not revoked");
    }
    assert!(store.all().await.unwrap().is_empty(), "nothing stored");

    // Its own workspace installs.
    fake.add_code("own", Grant::workspace("T1", "One"));
    let state = scoped_start().await;
    let (s, page) = call(
        &app,
        "GET",
        &format!("/slack/oauth/callback?code=own&state={state}"),
        false,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(store.all().await.unwrap().len(), 1);
}
