//! Runs `examples/embed.rs` as part of `cargo test`, and checks it did what it says.

#[path = "../examples/embed.rs"]
mod embed;

#[tokio::test]
async fn the_embedding_example_runs_a_request_to_expiry() {
    let db = embed::TempDb::new("gatehouse-embed-test");
    let outcome = embed::run(&db.0).await.expect("the example runs");
    assert_eq!(outcome.filed, "approved");
    assert_eq!(outcome.live_after_provisioning, 1);
    assert_eq!(outcome.live_after_expiry, 0);
    assert_eq!(
        outcome.provider_calls.len(),
        2,
        "{:?}",
        outcome.provider_calls
    );
    assert!(outcome.provider_calls[0].starts_with("grant demo-db to U1"));
    assert!(outcome.provider_calls[1].starts_with("revoke demo-db from U1"));
}
