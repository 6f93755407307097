//! The one admin-auth layer, through the server's router: the JSON admin API (`/api/…`) and the
//! Slack install flow's admin endpoints (`/api/slack/…`) answer alike — 404
//! `admin_api_disabled` without a token, 401 with `WWW-Authenticate: Bearer` for a wrong one —
//! and a workspace admin token opens only its workspace's install endpoints. The environment is
//! given as a map (`Env::from_vars`), never set on the process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::{App, Config};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const CONFIG: &str = r#"
[[resources]]
id = "demo"
provider = "dry-run"
approval = { mode = "auto" }
"#;

async fn router(db: &testkit::db::TestDb, vars: &[(&str, &str)]) -> axum::Router {
    let mut vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.insert("DATABASE_URL".into(), db.url.clone());
    // The install flow exists (client id, secret and the key that seals its tokens).
    vars.insert("SLACK_CLIENT_ID".into(), "1.2".into());
    vars.insert("SLACK_CLIENT_SECRET".into(), "client-secret".into());
    vars.insert(
        "GATEHOUSE_ENCRYPTION_KEY".into(),
        slack_adapter::crypto::TokenCipher::generate_key_b64(),
    );
    let app = App::build(
        Config::from_toml(CONFIG, "t").unwrap(),
        Env::from_vars(vars),
        Overrides::default(),
    )
    .await
    .unwrap();
    assert!(app.adapters.slack_install.is_some());
    gatehouse_server::app(app)
}

async fn get(router: &axum::Router, path: &str, token: Option<&str>) -> (StatusCode, Value, bool) {
    let mut req = Request::builder().uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let challenge = resp.headers().get("www-authenticate").is_some();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        challenge,
    )
}

#[tokio::test]
async fn without_a_token_every_admin_endpoint_is_404_admin_api_disabled() {
    let db = testkit::db::TestDb::sqlite();
    let router = router(&db, &[]).await;
    for path in ["/api/requests", "/api/slack/installation/T1"] {
        let (status, body, challenge) = get(&router, path, Some("anything")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error"], "admin_api_disabled", "{path}");
        assert!(!challenge, "{path}");
    }
}

#[tokio::test]
async fn wrong_tokens_are_401_and_workspace_tokens_open_only_their_workspace() {
    let db = testkit::db::TestDb::sqlite();
    let router = router(
        &db,
        &[
            ("GATEHOUSE_ADMIN_TOKEN", "root-token"),
            ("GATEHOUSE_WORKSPACE_ADMIN_TOKENS", "T1=team-token"),
        ],
    )
    .await;
    for path in ["/api/requests", "/api/slack/installation/T1"] {
        for token in [None, Some("wrong")] {
            let (status, body, challenge) = get(&router, path, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {token:?}: {body}");
            assert_eq!(body["error"], "unauthorized");
            assert!(challenge, "{path}: WWW-Authenticate");
        }
        let (status, body, _) = get(&router, path, Some("root-token")).await;
        assert!(status.is_success(), "{path}: {status} {body}");
    }
    // A workspace token is no key to the general admin API …
    let (status, _, _) = get(&router, "/api/requests", Some("team-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // … but opens its own workspace's install endpoints, and no other's.
    let (status, body, _) = get(&router, "/api/slack/installation/T1", Some("team-token")).await;
    assert!(status.is_success(), "{status} {body}");
    let (status, _, _) = get(&router, "/api/slack/installation/T2", Some("team-token")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
