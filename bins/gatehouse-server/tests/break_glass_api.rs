//! Break-glass in the admin API and the metrics, through the server's router (`app`), on SQLite
//! and (with `TEST_DATABASE_URL`) PostgreSQL: unreviewed emergency grants are listed and counted
//! by `gatehouse_emergency_grants_unreviewed`; an admin's review takes them off both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use access_core::request::RequestKind;
use access_core::{Email, Subject};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::{App, Config};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use testkit::provider::ManualClock;
use testkit::submission::{Ask, SubmitTyped};
use tower::ServiceExt;

const TOKEN: &str = "break-glass-admin-token";

const CONFIG: &str = r#"
[server]
approval_channel = "approvals"

[[resources]]
id = "prod-db"
provider = "dry-run"
default_duration = "4h"
max_duration = "24h"
approval = { mode = "approvers", approvers = { users = ["UAPP1", "UAPP2"] } }
emergency = true
emergency_duration = "30m"

[[resources]]
id = "dev"
provider = "dry-run"
approval = { mode = "approvers", approvers = { users = ["UAPP1"] } }
"#;

fn person(u: &str) -> Subject {
    Subject {
        team_id: "T1".into(),
        user_id: u.into(),
        email: Some(Email::parse(&format!("{}@example.com", u.to_lowercase())).unwrap()),
        name: u.into(),
    }
}

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"));
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let resp = router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

fn gauge(metrics: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with("gatehouse_emergency_grants_unreviewed "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn unreviewed_emergency_grants_are_listed_counted_and_reviewed_by_an_admin() {
    for db in testkit::db::backends().await {
        let kind = db.kind;
        let clock = Arc::new(ManualClock::starting_now());
        let app = App::build(
            Config::from_toml(CONFIG, "t").unwrap(),
            Env {
                database_url: db.url.clone(),
                admin_token: Some(TOKEN.into()),
                security_channel: Some("security-alerts".into()),
                ..Env::default()
            },
            Overrides {
                clock: Some(clock.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let engine = app.engine.clone();
        let router = gatehouse_server::app(app);

        let ask = |resource: &str, duration: Option<&str>| Ask {
            subject: person("UALICE"),
            resource: resource.into(),
            duration: duration.map(Into::into),
            justification: "prod is down".into(),
            kind: RequestKind::New,
        };
        let emergency = engine
            .submit_emergency_typed(ask("prod-db", Some("4h")))
            .await
            .unwrap();
        assert_eq!(
            emergency.duration.secs(),
            1800,
            "{kind}: cut to emergency_duration"
        );
        let ordinary = engine.submit_typed(ask("dev", None)).await.unwrap();
        engine.drain(10).await.unwrap();

        let (status, list, text) =
            call(&router, "GET", "/api/emergency?reviewed=false", None).await;
        assert_eq!(status, StatusCode::OK, "{kind}: {text}");
        let list = list.as_array().unwrap().clone();
        assert_eq!(list.len(), 1, "{kind}: {text}");
        assert_eq!(list[0]["request_id"], emergency.id.to_string());
        assert_eq!(list[0]["resource"], "prod-db");
        assert_eq!(list[0]["justification"], "prod is down");
        assert_eq!(list[0]["grant_status"], "active", "{kind}");
        assert_eq!(list[0]["review"], Value::Null);

        let (_, _, metrics) = call(&router, "GET", "/metrics", None).await;
        assert_eq!(gauge(&metrics), Some(1.0), "{kind}: {metrics}");

        // Bad input changes nothing.
        let path = format!("/api/emergency/{}/review", emergency.id);
        let (status, e, _) =
            call(&router, "POST", &path, Some(json!({"outcome": "approved"}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}");
        assert_eq!(
            e["message"],
            "unknown outcome 'approved'; use reviewed or revoked"
        );
        let (status, e, _) = call(
            &router,
            "POST",
            &format!("/api/emergency/{}/review", ordinary.id),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{kind}");
        assert_eq!(e["error"], "not_emergency");
        let (status, _, _) = call(&router, "GET", "/api/emergency?reviewed=maybe", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}");

        // An admin reviews it.
        let (status, reviewed, text) = call(
            &router,
            "POST",
            &path,
            Some(json!({"by": "alice", "outcome": "reviewed"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{kind}: {text}");
        assert_eq!(reviewed["review"]["outcome"], "reviewed");
        assert_eq!(reviewed["review"]["by"]["name"], "alice");
        let (status, e, _) = call(&router, "POST", &path, None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{kind}");
        assert_eq!(e["error"], "already_reviewed");
        assert_eq!(
            e["message"],
            "This emergency access has already been reviewed by alice (admin)."
        );

        let (_, list, _) = call(&router, "GET", "/api/emergency?reviewed=false", None).await;
        assert_eq!(list, json!([]), "{kind}");
        let (_, all, _) = call(&router, "GET", "/api/emergency", None).await;
        assert_eq!(all.as_array().unwrap().len(), 1, "{kind}");
        let (_, _, metrics) = call(&router, "GET", "/metrics", None).await;
        assert_eq!(gauge(&metrics), Some(0.0), "{kind}");
        let (_, audit, _) = call(&router, "GET", "/api/audit?kind=emergency_reviewed", None).await;
        assert_eq!(audit["events"].as_array().unwrap().len(), 1, "{kind}");
        assert_eq!(audit["events"][0]["actor"]["name"], "alice");
    }
}
