//! Installing a Slack app into several workspaces, with tokens encrypted at rest, on its own.
//!
//! ```sh
//! SLACK_CLIENT_ID=… SLACK_CLIENT_SECRET=… GATEHOUSE_ADMIN_TOKEN=choose-one \
//! SLACK_REDIRECT_URI=https://<your tunnel>/slack/oauth/callback \
//! cargo run -p slack-adapter --example multi_workspace
//! ```
//!
//! Open `http://127.0.0.1:3000/slack/install`, paste the admin token, click "Add to Slack".
//! Installations live in memory here (the server keeps them in its database); without
//! `GATEHOUSE_ENCRYPTION_KEY` a throw-away key is generated and printed.

use std::sync::Arc;

use slack_adapter::crypto::TokenCipher;
use slack_adapter::installations::Installations;
use slack_adapter::oauth::{InstallFlow, OAuthConfig, oauth_router};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let cipher = match TokenCipher::from_lookup(|k| std::env::var(k).ok())? {
        Some(c) => c,
        None => {
            let key = TokenCipher::generate_key_b64();
            println!("no GATEHOUSE_ENCRYPTION_KEY; using a throw-away key: {key}");
            TokenCipher::from_spec(&key)?
        }
    };
    let config = OAuthConfig::from_lookup(|k| std::env::var(k).ok());
    if !config.is_configured() {
        println!("set SLACK_CLIENT_ID and SLACK_CLIENT_SECRET to complete installs");
    }
    let flow = Arc::new(InstallFlow::new(config, Installations::in_memory(cipher)));
    let app = oauth_router(flow);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("open http://{}/slack/install", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
