//! Grants temporary Cloud Connexa network access to one e-mail, waits, and revokes it.
//!
//! ```text
//! export CLOUDCONNEXA_API_URL=https://acme.api.openvpn.com
//! export CLOUDCONNEXA_CLIENT_ID=…  CLOUDCONNEXA_CLIENT_SECRET=…
//! export NETWORK_GROUP_MAPPING='{"dev-network": "developers"}'   # optional
//! cargo run -p provider-cloudconnexa --example connexa_grant_once -- jane@example.com dev-network 30
//! ```
//!
//! Arguments: e-mail, network name, seconds to hold the access before revoking (default 10;
//! `0` grants and revokes at once). `RUST_LOG=provider_cloudconnexa=debug` shows every call.

use std::time::Duration;

use access_core::duration::DurationBounds;
use access_core::ports::{GrantRequest, Provider, RevokeRequest};
use access_core::{ApprovalPolicy, Email, GrantId, RequestId, Resource, ResourceId, Subject};
use provider_cloudconnexa::CloudConnexaProvider;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mut args = std::env::args().skip(1);
    let (Some(email), Some(network)) = (args.next(), args.next()) else {
        eprintln!("usage: connexa_grant_once <email> <network> [hold-seconds]");
        std::process::exit(2);
    };
    let hold: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);

    let provider = CloudConnexaProvider::from_lookup(|k| std::env::var(k).ok())?;
    if !provider.network_exists(&network).await? {
        let names: Vec<String> = provider
            .networks()
            .await?
            .into_iter()
            .map(|n| n.name)
            .collect();
        eprintln!(
            "network '{network}' does not exist; available: {}",
            names.join(", ")
        );
        std::process::exit(1);
    }

    let resource = Resource {
        id: ResourceId::parse(&network.to_ascii_lowercase())?,
        description: format!("Cloud Connexa network {network}"),
        provider: CloudConnexaProvider::KIND,
        settings: serde_json::json!({ "network": network }),
        durations: DurationBounds::new("1h".parse()?, "1m".parse()?, "24h".parse()?)?,
        eligibility: vec![],
        approval: ApprovalPolicy::Auto,
        extendable: true,
        allow_guests: false,
        allow_external: false,
        emergency: None,
    };
    let subject = Subject {
        team_id: String::new(),
        user_id: "cli".into(),
        email: Some(Email::parse(&email)?),
        name: String::new(),
    };
    let grant = GrantRequest {
        grant_id: GrantId::new(),
        request_id: RequestId::new(),
        subject: subject.clone(),
        resource: resource.clone(),
        expires_at: chrono::Utc::now() + chrono::Duration::seconds(hold as i64),
        justification: "connexa_grant_once example".into(),
        existing: None,
        intent: None,
    };

    let outcome = provider.grant(&grant).await?;
    println!("granted: {}\n", outcome.instructions);
    for e in &outcome.events {
        println!("  audit: {} {}", e.name, e.details);
    }
    println!("  handle: {}", outcome.handle);

    if hold > 0 {
        println!("\nholding access for {hold}s …");
        tokio::time::sleep(Duration::from_secs(hold)).await;
    }

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
        "\nrevoked{}",
        revoked.note.map(|n| format!(" ({n})")).unwrap_or_default()
    );
    for e in &revoked.events {
        println!("  audit: {} {}", e.name, e.details);
    }
    let stats = provider.client().stats();
    println!(
        "\nAPI calls: {}, 429s: {}, retries: {}",
        stats.requests, stats.throttled, stats.retries
    );
    Ok(())
}
