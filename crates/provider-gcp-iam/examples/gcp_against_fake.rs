//! The whole GCP IAM grant cycle with no project needed: starts the fake IAM and Resource
//! Manager APIs from `testkit`, grants a person a role through a service account and key, and
//! revokes it. The same calls work against Google (see `gcp_grant_once.rs`).
//!
//! ```text
//! cargo run -p provider-gcp-iam --example gcp_against_fake
//! ```

use std::sync::Arc;

use access_core::duration::DurationBounds;
use access_core::ports::{GrantRequest, Provider, RevokeRequest};
use access_core::{ApprovalPolicy, Email, GrantId, RequestId, Resource, ResourceId, Subject};
use gcp_auth::ServiceAccountTokenSource;
use provider_gcp_iam::{GcpGrantHandle, GcpIamConfig, GcpIamProvider};
use testkit::gcp::FakeGcp;

const PROJECT: &str = "my-project-123";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fake = FakeGcp::start().await;
    fake.add_project(PROJECT);

    // What a script needs: the bot's service-account key, and the API endpoints (Google's by
    // default; the fake's here).
    let tokens = ServiceAccountTokenSource::from_json(&fake.service_account_key_json())?;
    let config = GcpIamConfig {
        iam_url: fake.url(),
        crm_url: fake.url(),
        ..Default::default()
    };
    let provider = GcpIamProvider::new(config, Arc::new(tokens))?;

    let resource = Resource {
        id: ResourceId::parse("gcp-access")?,
        description: "GCP project access".into(),
        provider: GcpIamProvider::KIND,
        settings: serde_json::json!({"project": PROJECT, "role": "roles/browser"}),
        durations: DurationBounds::new("4h".parse()?, "1h".parse()?, "7d".parse()?)?,
        eligibility: vec![],
        approval: ApprovalPolicy::Auto,
        extendable: false,
        allow_guests: false,
        allow_external: false,
        emergency: None,
    };
    // A bad `settings` fails here, before anything is granted.
    provider.load_settings([&resource])?;
    let subject = Subject {
        team_id: String::new(),
        user_id: "script".into(),
        email: Some(Email::parse("jane.doe@example.com")?),
        name: "Jane Doe".into(),
    };
    let grant = GrantRequest {
        grant_id: GrantId::new(),
        request_id: RequestId::new(),
        subject: subject.clone(),
        resource: resource.clone(),
        expires_at: chrono::Utc::now() + chrono::Duration::hours(4),
        justification: "gcp_against_fake example".into(),
        existing: None,
        intent: None,
    };

    let outcome = provider.grant(&grant).await?;
    println!("granted:\n{}\n", outcome.instructions);
    if let Some(secret) = &outcome.secret {
        // Delivered once to the person, never stored: here only its size is shown.
        println!(
            "  key file: {} ({} bytes)",
            secret.filename,
            secret.content.len()
        );
    }
    for e in &outcome.events {
        println!("  audit: {} {}", e.name, e.details);
    }
    let handle: GcpGrantHandle = serde_json::from_value(outcome.handle.clone())?;
    println!(
        "\nhandle: {} holds {} in {}",
        handle.member, handle.role, handle.project
    );

    let revoked = provider
        .revoke(&RevokeRequest {
            grant_id: grant.grant_id,
            subject,
            resource,
            handle: outcome.handle,
            intent: serde_json::Value::Null,
        })
        .await?;
    for e in &revoked.events {
        println!("  audit: {} {}", e.name, e.details);
    }
    Ok(())
}
