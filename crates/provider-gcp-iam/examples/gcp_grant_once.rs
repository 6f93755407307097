//! Grants temporary GCP access once, without the rest of Gatehouse, and shows how to take it back.
//!
//! ```sh
//! # try it without touching anything (no credentials needed):
//! GCP_ACCESS_DRY_RUN=true cargo run -p provider-gcp-iam --example gcp_grant_once -- \
//!     my-project-123 roles/browser jane.doe@example.com 4 "Need to debug CI infrastructure issues"
//!
//! # for real (the bot's key; see docs/providers/gcp-iam.md for the permissions it needs):
//! GCP_SERVICE_ACCOUNT_JSON=/path/to/bot-key.json cargo run -p provider-gcp-iam --example gcp_grant_once -- \
//!     my-project-123 projects/my-project-123/roles/chat_bot_user jane.doe@example.com 4 "why"
//!
//! # revoke with the handle it printed:
//! cargo run -p provider-gcp-iam --example gcp_grant_once -- revoke '<handle JSON>'
//! ```
//!
//! Set `GCP_MODE=user_binding` to bind the person's own account instead of creating a service
//! account and key. The key file is written to the current directory (mode 0600 on Unix).

use access_core::ids::{GrantId, RequestId, ResourceId};
use access_core::ports::{GrantRequest, Provider, RevokeRequest};
use access_core::resource::ApprovalPolicy;
use access_core::{DurationBounds, Email, Resource, Subject};
use provider_gcp_iam::GcpIamProvider;
use serde_json::json;

fn resource(project: &str, role: &str, mode: &str) -> Result<Resource, Box<dyn std::error::Error>> {
    Ok(Resource {
        id: ResourceId::parse("gcp-access")?,
        description: "GCP project access".into(),
        provider: GcpIamProvider::KIND,
        settings: json!({"project": project, "role": role, "mode": mode}),
        durations: DurationBounds::new("4h".parse()?, "1h".parse()?, "7d".parse()?)?,
        eligibility: vec![],
        approval: ApprovalPolicy::Auto,
        extendable: false,
        allow_guests: false,
        allow_external: false,
        emergency: None,
    })
}

fn subject(email: &str) -> Result<Subject, Box<dyn std::error::Error>> {
    Ok(Subject {
        team_id: String::new(),
        user_id: "cli".into(),
        email: Some(Email::parse(email)?),
        name: email.into(),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let provider = GcpIamProvider::from_lookup(|k| std::env::var(k).ok())?;
    let mode = std::env::var("GCP_MODE").unwrap_or_else(|_| "service_account_key".into());

    if args.first().map(String::as_str) == Some("revoke") {
        let handle: serde_json::Value =
            serde_json::from_str(args.get(1).ok_or("revoke needs the handle JSON")?)?;
        let project = handle["project"].as_str().ok_or("handle without project")?;
        let role = handle["role"].as_str().ok_or("handle without role")?;
        let email = handle["user_email"]
            .as_str()
            .ok_or("handle without user_email")?;
        let out = provider
            .revoke(&RevokeRequest {
                grant_id: GrantId::new(),
                subject: subject(email)?,
                resource: resource(project, role, &mode)?,
                handle,
                intent: serde_json::Value::Null,
            })
            .await?;
        println!("{}", provider_gcp_iam::messages::REVOKED);
        if let Some(note) = out.note {
            println!("({note})");
        }
        return Ok(());
    }

    let [project, role, email, hours, justification] = args.as_slice() else {
        return Err("usage: gcp_grant_once PROJECT ROLE EMAIL HOURS \"JUSTIFICATION\" | gcp_grant_once revoke HANDLE".into());
    };
    let hours: i64 = hours.parse()?;
    let out = provider
        .grant(&GrantRequest {
            grant_id: GrantId::new(),
            request_id: RequestId::new(),
            subject: subject(email)?,
            resource: resource(project, role, &mode)?,
            expires_at: chrono::Utc::now() + chrono::Duration::hours(hours),
            justification: justification.clone(),
            existing: None,
            intent: None,
        })
        .await?;
    println!("{}\n", out.instructions);
    if let Some(secret) = out.secret {
        write_private(&secret.filename, &secret.content)?;
        println!("{}\nKey written to ./{}\n", secret.warning, secret.filename);
    }
    println!(
        "To revoke:\n  cargo run -p provider-gcp-iam --example gcp_grant_once -- revoke '{}'",
        out.handle
    );
    Ok(())
}

fn write_private(path: &str, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(content)
}
