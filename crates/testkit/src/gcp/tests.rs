//! Wire-level tests of the fake Google Cloud: policies, etags, accounts, keys, quotas, auth.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::*;

async fn client_and_fake() -> (reqwest_free::Client, FakeGcp) {
    let gcp = FakeGcp::start().await;
    gcp.add_project("p1");
    (
        reqwest_free::Client {
            base: gcp.url(),
            token: gcp.mint_token(),
        },
        gcp,
    )
}

/// A minimal HTTP client over hyper-less tokio TCP, so testkit needs no HTTP client dependency.
mod reqwest_free {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub struct Client {
        pub base: String,
        pub token: String,
    }

    impl Client {
        pub async fn call(
            &self,
            method: &str,
            path: &str,
            body: &serde_json::Value,
        ) -> (u16, serde_json::Value) {
            let addr = self.base.trim_start_matches("http://").to_string();
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let b = body.to_string();
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                self.token,
                b.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            let text = String::from_utf8_lossy(&out).to_string();
            let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
            let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
            // Responses are small: axum sends them with Content-Length, not chunked.
            (
                status,
                serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
            )
        }
    }
}

#[tokio::test]
async fn version_1_writes_drop_conditional_bindings_and_stale_etags_abort() {
    let (c, gcp) = client_and_fake().await;
    gcp.set_policy(
        "p1",
        json!({"bindings": [
            {"role": "roles/browser", "members": ["user:a@example.com"]},
            {"role": "roles/run.invoker", "members": ["user:b@example.com"],
             "condition": {"title": "Temp Access", "expression": "request.time < timestamp('2030-01-01T00:00:00Z')"}}
        ], "auditConfigs": [{"service": "allServices", "auditLogConfigs": [{"logType": "DATA_READ"}]}]}),
    );
    // A v1 read disguises the conditional binding.
    let (s, v1) = c
        .call("POST", "/v1/projects/p1:getIamPolicy", &json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v1["version"], 1);
    assert!(
        v1["bindings"][1]["role"]
            .as_str()
            .unwrap()
            .contains("_withcond_")
    );
    // Writing that back without version 3 loses the conditional binding.
    let (s, _) = c
        .call(
            "POST",
            "/v1/projects/p1:setIamPolicy",
            &json!({"policy": v1}),
        )
        .await;
    assert_eq!(s, 200);
    let now = gcp.policy("p1");
    assert_eq!(now["bindings"].as_array().unwrap().len(), 1);
    assert!(
        now["auditConfigs"].is_array(),
        "audit configs survive the default mask"
    );
    // A stale etag is a 409 ABORTED.
    let (s, e) = c
        .call(
            "POST",
            "/v1/projects/p1:setIamPolicy",
            &json!({"policy": {"version": 3, "etag": v1["etag"], "bindings": []}}),
        )
        .await;
    assert_eq!(s, 409);
    assert_eq!(e["error"]["status"], "ABORTED");
}

#[tokio::test]
async fn accounts_keys_quotas_and_auth() {
    let (c, gcp) = client_and_fake().await;
    let (s, _) = c
        .call(
            "POST",
            "/v1/projects/p1/serviceAccounts",
            &json!({"accountId": "short"}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, sa) = c.call("POST", "/v1/projects/p1/serviceAccounts", &json!({"accountId": "jane-dot-doe-1234567890", "serviceAccount": {"displayName": "jane.doe@example.com"}})).await;
    assert_eq!(s, 200);
    let email = sa["email"].as_str().unwrap().to_string();
    let (s, e) = c
        .call(
            "POST",
            "/v1/projects/p1/serviceAccounts",
            &json!({"accountId": "jane-dot-doe-1234567890"}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["status"].as_str()),
        (409, Some("ALREADY_EXISTS"))
    );
    gcp.set_key_quota(1);
    let (s, k) = c
        .call(
            "POST",
            &format!("/v1/projects/p1/serviceAccounts/{email}/keys"),
            &json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let file: Value = serde_json::from_slice(
        &STANDARD
            .decode(k["privateKeyData"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(file["client_email"], email.as_str());
    let (s, e) = c
        .call(
            "POST",
            &format!("/v1/projects/p1/serviceAccounts/{email}/keys"),
            &json!({}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["status"].as_str()),
        (400, Some("FAILED_PRECONDITION"))
    );
    // Deleting the account turns its policy members into deleted: members.
    gcp.set_policy("p1", json!({"bindings": [{"role": "roles/browser", "members": [format!("serviceAccount:{email}")]}]}));
    let (s, _) = c
        .call(
            "DELETE",
            &format!("/v1/projects/p1/serviceAccounts/{email}"),
            &json!({}),
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        gcp.policy("p1")["bindings"][0]["members"][0]
            .as_str()
            .unwrap()
            .starts_with("deleted:serviceAccount:")
    );
    // Without a token issued by the fake: 401.
    let anon = reqwest_free::Client {
        base: gcp.url(),
        token: "nope".into(),
    };
    let (s, e) = anon
        .call("POST", "/v1/projects/p1:getIamPolicy", &json!({}))
        .await;
    assert_eq!(
        (s, e["error"]["status"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    // Unknown project: 403.
    let (s, _) = c
        .call("POST", "/v1/projects/nope:getIamPolicy", &json!({}))
        .await;
    assert_eq!(s, 403);
}
