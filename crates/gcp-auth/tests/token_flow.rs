//! The JWT-bearer flow against testkit's fake token endpoint (which verifies the RS256 signature).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gcp_auth::{AccessTokenSource, AuthError, ServiceAccountTokenSource};
use testkit::gcp::{BOT_EMAIL, FakeGcp, GcpOp, OTHER_KEY_PEM};

#[tokio::test]
async fn tokens_come_from_the_keys_token_uri_and_are_cached() {
    let gcp = FakeGcp::start().await;
    let dir = std::env::temp_dir().join(format!("gcp-auth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("key.json");
    std::fs::write(&path, gcp.service_account_key_json()).unwrap();

    let source = ServiceAccountTokenSource::from_file(&path).unwrap();
    assert_eq!(source.client_email(), BOT_EMAIL);
    assert_eq!(source.project_id(), Some("gatehouse-admin"));
    let t1 = source.token().await.unwrap();
    let t2 = source.token().await.unwrap();
    assert!(t1.starts_with("ya29."));
    assert_eq!(t1, t2, "cached until it nears expiry");
    assert_eq!(gcp.count(GcpOp::Token), 1);
    assert!(!format!("{source:?}").contains("PRIVATE KEY"));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_key_signed_with_the_wrong_private_key_is_refused() {
    let gcp = FakeGcp::start().await;
    let forged =
        ServiceAccountTokenSource::from_json(&gcp.key_json_with(BOT_EMAIL, OTHER_KEY_PEM)).unwrap();
    let err = forged.token().await.unwrap_err();
    assert!(
        matches!(&err, AuthError::Rejected(m) if m.contains("invalid_grant")),
        "{err:?}"
    );
    assert_eq!(gcp.calls().last().unwrap().status, 400);
}
