//! The whole Cloud Connexa grant cycle with no account needed: starts the fake Cloud Connexa API
//! from `testkit`, grants one e-mail access to a network, shows the stored handle, and revokes
//! it. The same calls work against the real API (see `connexa_grant_once.rs`).
//!
//! ```text
//! cargo run -p provider-cloudconnexa --example connexa_against_fake
//! ```

use access_core::duration::DurationBounds;
use access_core::ports::{GrantRequest, Provider, RevokeRequest};
use access_core::{ApprovalPolicy, Email, GrantId, RequestId, Resource, ResourceId, Subject};
use provider_cloudconnexa::{ClientConfig, CloudConnexaProvider, GrantHandle, ProviderConfig};
use testkit::cloudconnexa::{FakeCloudConnexa, FakeConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fake = FakeCloudConnexa::start(FakeConfig::fast()).await;
    fake.seed_network("dev-network");

    // What a script needs: the API URL and credentials, and optionally a network → group map.
    let mut config = ProviderConfig::new(ClientConfig::new(
        fake.url(),
        fake.client_id(),
        fake.client_secret(),
    ));
    config
        .network_group_mapping
        .insert("dev-network".into(), "developers".into());
    let provider = CloudConnexaProvider::new(config)?;

    let resource = Resource {
        id: ResourceId::parse("dev-network")?,
        description: "Cloud Connexa network dev-network".into(),
        provider: CloudConnexaProvider::KIND,
        settings: serde_json::json!({ "network": "dev-network" }),
        durations: DurationBounds::new("1h".parse()?, "1m".parse()?, "24h".parse()?)?,
        eligibility: vec![],
        approval: ApprovalPolicy::Auto,
        extendable: true,
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
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(30),
        justification: "connexa_against_fake example".into(),
        existing: None,
        intent: None,
    };

    let outcome = provider.grant(&grant).await?;
    println!("granted: {}\n", outcome.instructions);
    for e in &outcome.events {
        println!("  audit: {} {}", e.name, e.details);
    }
    // Keep the handle (it is never a secret): revoke needs it.
    let handle = GrantHandle::decode(&outcome.handle)?.ok_or("the grant left no handle")?;
    println!("\nhandle: {handle}\n  {}", outcome.handle);

    let revoked = provider
        .revoke(&RevokeRequest {
            grant_id: grant.grant_id,
            subject,
            resource,
            handle: outcome.handle,
            intent: serde_json::Value::Null,
        })
        .await?;
    println!(
        "\nrevoked: {}",
        revoked.note.as_deref().unwrap_or("membership removed")
    );
    for e in &revoked.events {
        println!("  audit: {} {}", e.name, e.details);
    }
    Ok(())
}
