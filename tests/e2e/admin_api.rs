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
