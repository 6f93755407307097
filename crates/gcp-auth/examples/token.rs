//! Obtains an access token from the key in `GCP_SERVICE_ACCOUNT_JSON` (content or path) and says
//! whether it worked. The token itself is never printed.
//!
//! ```sh
//! GCP_SERVICE_ACCOUNT_JSON=/path/to/key.json cargo run -p gcp-auth --example token
//! ```

use gcp_auth::{AccessTokenSource, ServiceAccountTokenSource};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = ServiceAccountTokenSource::from_lookup(|k| std::env::var(k).ok())?;
    println!("service account: {}", source.client_email());
    let token = source.token().await?;
    println!(
        "got an access token ({} characters) for scope {}",
        token.len(),
        gcp_auth::CLOUD_PLATFORM_SCOPE
    );
    Ok(())
}
