//! The admin API over HTTP: authentication, and a clear JSON error for every bad input.

use crate::helpers::*;
use testkit::db::backends;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_refuses_and_explains() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), DRY_RUN_CONFIG);
        let opts = ServerOptions {
            config: &config,
            database_url: &db.url,
            admin_token: Some(ADMIN_TOKEN),
            extra_env: vec![],
        };
        let server = Server::start(&opts, dir.path());
        let api = Api::new(&server, Some(ADMIN_TOKEN));

        // Authentication: missing and wrong tokens are 401 and change nothing.
        for token in [None, Some("wrong")] {
            let anon = Api::new(&server, token);
            let (status, body) = anon
                .post("/api/requests", Some(request_body("U1", "crashy", "1h")))
                .await;
            assert_eq!(status, 401, "{body}");
            assert_eq!(body["error"], "unauthorized");
            assert_eq!(anon.get("/api/requests").await.0, 401);
        }
        let (_, list) = api.get("/api/requests").await;
        assert_eq!(
            list.as_array().unwrap().len(),
            0,
            "{}: refused calls wrote nothing",
            db.kind
        );

        // Malformed bodies.
        let (status, body) = api
            .post_raw("/api/requests", "application/json", "{not json")
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "malformed_body");
        let (status, body) = api
            .post_raw("/api/requests", "application/json", r#"{"user_id":"U1"}"#)
            .await;
        assert_eq!(status, 422, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("resource"),
            "{body}"
        );
        let (status, body) = api.post_raw("/api/requests", "text/plain", "hello").await;
        assert_eq!(status, 415, "{body}");

        // Domain errors.
        let (status, body) = api
            .post("/api/requests", Some(request_body("U1", "nope", "1h")))
            .await;
        assert_eq!(status, 400);
        assert_eq!(
            body["message"],
            "Unknown resource 'nope'. Valid resources: crashy, guarded."
        );
        let (status, body) = api
            .post("/api/requests", Some(request_body("U1", "crashy", "9h")))
            .await;
        assert_eq!(status, 400);
        assert_eq!(
            body["message"],
            "Duration must be between 1s and 8h (you asked for 9h)."
        );

        // Unknown and malformed ids.
        let (status, body) = api
            .post(
                "/api/requests/6a1f0b8e-0000-4000-8000-000000000000/approve",
                None,
            )
            .await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"], "request_not_found");
        let (status, body) = api.post("/api/requests/not-an-id/approve", None).await;
        assert_eq!(status, 404);
        assert_eq!(body["message"], "'not-an-id' is not a valid request id");
        let (status, _) = api
            .post(
                "/api/grants/6a1f0b8e-0000-4000-8000-000000000000/revoke",
                None,
            )
            .await;
        assert_eq!(status, 404);
        let (status, body) = api.get("/api/grants?status=sideways").await;
        assert_eq!(status, 400, "{body}");
        let (status, body) = api.get("/api/audit?kind=nonsense").await;
        assert_eq!(status, 400);
        assert!(
            body["message"].as_str().unwrap().contains("access_granted"),
            "lists the valid kinds: {body}"
        );

        // Illegal transitions are 409 with the reason.
        let (_, req) = api
            .post("/api/requests", Some(request_body("U1", "guarded", "1h")))
            .await;
        let id = req["id"].as_str().unwrap();
        let (status, denied) = api
            .post(
                &format!("/api/requests/{id}/deny"),
                Some(serde_json::json!({"reason": "no"})),
            )
            .await;
        assert_eq!(status, 200, "{denied}");
        assert_eq!(denied["status"], "denied");
        let (status, body) = api.post(&format!("/api/requests/{id}/approve"), None).await;
        assert_eq!(status, 409);
        assert_eq!(body["message"], "This request has already been denied.");

        // Listing and filters.
        let (_, pending) = api.get("/api/requests?status=denied").await;
        assert_eq!(pending.as_array().unwrap().len(), 1);
        let (_, audit) = api.get("/api/audit?kind=access_denied").await;
        assert_eq!(audit["events"].as_array().unwrap().len(), 1);
        let (status, jobs) = api.get("/api/jobs?status=dead").await;
        assert_eq!(status, 200);
        assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_is_disabled_without_a_token() {
    let db = testkit::db::TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), DRY_RUN_CONFIG);
    let opts = ServerOptions {
        config: &config,
        database_url: &db.url,
        admin_token: None,
        extra_env: vec![],
    };
    let server = Server::start(&opts, dir.path());
    let api = Api::new(&server, Some("anything"));
    let (status, body) = api.get("/api/requests").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "admin_api_disabled");
    assert_eq!(
        reqwest::get(server.url("/healthz")).await.unwrap().status(),
        200
    );
}

/// A job row this version cannot read (a kind written by a newer version during a rolling
/// deploy) does not block the queue: a request submitted after it is still granted, the row is
/// listed as dead with the reason by the admin API, counted in the metrics, and the server stays
/// ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_job_is_set_aside_and_the_queue_moves_on() {
    use sqlx::Connection;
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), DRY_RUN_CONFIG);
        let opts = ServerOptions {
            config: &config,
            database_url: &db.url,
            admin_token: Some(ADMIN_TOKEN),
            extra_env: vec![],
        };
        let server = Server::start(&opts, dir.path());
        let api = Api::new(&server, Some(ADMIN_TOKEN));
        let bad = "0b5e7a1c-0000-4000-8000-00000000f00d";
        let insert = format!(
            "INSERT INTO jobs (id, kind, payload, status, run_at, attempts, created_at, updated_at) \
             VALUES ('{bad}', 'rotate_keys', '{{\"type\":\"rotate_keys\",\"key\":1}}', 'pending', 0, 0, 0, 0)"
        );
        if db.url.starts_with("sqlite") {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query(&insert).execute(&mut c).await.unwrap();
        } else {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query(&insert).execute(&mut c).await.unwrap();
        }
        let (status, body) = api
            .post("/api/requests", Some(request_body("U1", "crashy", "1h")))
            .await;
        assert_eq!(status, 201, "{body}");
        api.wait_for(
            "/api/grants?status=active",
            std::time::Duration::from_secs(20),
            |b| b.as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
        let (status, body) = api.get("/api/jobs?status=dead").await;
        assert_eq!(status, 200, "{body}");
        let dead = body["jobs"].as_array().unwrap();
        let job = dead
            .iter()
            .find(|j| j["id"] == bad)
            .unwrap_or_else(|| panic!("{}: the undecodable job is not listed: {body}", db.kind));
        assert_eq!(job["kind"]["type"], "undecodable", "{job}");
        assert_eq!(job["kind"]["kind"], "rotate_keys", "{job}");
        assert!(
            job["last_error"]
                .as_str()
                .unwrap()
                .contains("undecodable job of kind 'rotate_keys'"),
            "{job}"
        );
        let metrics = reqwest::get(server.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("gatehouse_jobs_undecodable_total 1"),
            "{metrics}"
        );
        let ready = reqwest::get(server.url("/readyz")).await.unwrap();
        assert_eq!(ready.status(), 200, "{}", db.kind);
    }
}
