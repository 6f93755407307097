//! A complete Slack bot on the slack-adapter crate alone: a SQLite store, the dry-run provider,
//! one auto-approved resource `demo` and one `dev-network` that needs an approver.
//!
//! Run with a real Slack app (see docs/slack-app.md):
//!
//! ```text
//! SLACK_BOT_TOKEN=xoxb-… SLACK_SIGNING_SECRET=… APPROVAL_CHANNEL=C0123 APPROVER=U0123 \
//!     cargo run -p slack-adapter --example slack_bot
//! ```
//!
//! and point the app's Request URLs at `https://<your tunnel>/slack/{commands,interactions,events}`.
//! Without `SLACK_BOT_TOKEN` it runs a self-test instead: it starts the fake Slack from `testkit`,
//! sends itself a signed `/access request demo 1h trying it out`, runs the jobs, and prints what
//! Slack was asked to show.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use access_core::ports::SystemClock;
use access_core::providers::DryRunProvider;
use access_core::{Engine, Resource};
use serde_json::json;
use slack_adapter::{SlackConfig, SlackNotifier};

fn resources(approver: &str) -> Vec<Resource> {
    let r = |id: &str, approval: serde_json::Value| -> Resource {
        serde_json::from_value(json!({
            "id": id, "description": format!("{id} (dry run)"), "provider": "dry-run",
            "durations": {"default": "4h", "min": "1m", "max": "24h"}, "approval": approval,
        }))
        .unwrap()
    };
    vec![
        r("demo", json!({"mode": "auto"})),
        r(
            "dev-network",
            json!({"mode": "approvers", "approvers": {"users": [approver]}}),
        ),
    ]
}

async fn engine(config: &SlackConfig, db: &std::path::Path, approver: &str) -> Arc<Engine> {
    let url = format!("sqlite://{}?mode=rwc", db.display());
    let store = Arc::new(
        store_sqlx::SqlStore::connect(&url)
            .await
            .expect("open the SQLite store"),
    );
    let engine = Engine::builder(store, Arc::new(SystemClock))
        .resources(resources(approver))
        .provider(Arc::new(DryRunProvider::new()))
        .notifier(Arc::new(SlackNotifier::new(config)))
        .build()
        .expect("engine");
    Arc::new(engine)
}

/// Runs due jobs (notifications, provisioning, expiry) once a second.
fn run_jobs_forever(engine: Arc<Engine>) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = engine.run_due(50).await {
                tracing::warn!(error = %e, "running jobs failed");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let dir = tempfile::tempdir().unwrap();
    let db = std::env::var("GATEHOUSE_DB")
        .map(Into::into)
        .unwrap_or_else(|_| dir.path().join("gatehouse.db"));
    let approver = std::env::var("APPROVER").unwrap_or_else(|_| "U0APPROVER".into());

    if std::env::var("SLACK_BOT_TOKEN").is_ok() {
        let config = SlackConfig::from_lookup(|k| std::env::var(k).ok());
        let engine = engine(&config, &db, &approver).await;
        run_jobs_forever(engine.clone());
        let app = slack_adapter::router(engine, config);
        let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await.unwrap();
        tracing::info!("listening on :3000 (/slack/commands, /slack/interactions, /slack/events)");
        axum::serve(listener, app).await.unwrap();
        return;
    }

    // Self-test against the fake Slack.
    use testkit::slack::{FakeSlack, FakeUser, SlashCommand, signed_headers};
    let slack = FakeSlack::start().await;
    slack.add_user(FakeUser::new("U0ALICE", "alice").email("alice@example.com"));
    let config = SlackConfig::new(slack.token(), "demo-signing-secret", &slack.api_url());
    let engine = engine(&config, &db, &approver).await;
    let app = slack_adapter::router(engine.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let response_url = slack.response_url();
    let body = SlashCommand::new(
        "/access",
        "U0ALICE",
        "request demo 1h trying it out",
        &response_url,
        "t",
    )
    .body();
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}/slack/commands"))
        .header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in signed_headers("demo-signing-secret", &body) {
        req = req.header(k, v);
    }
    let ack = req.body(body).send().await.unwrap().text().await.unwrap();
    println!("acknowledgement: {ack}");
    engine.drain(10).await.unwrap();
    for m in slack.dms_to("U0ALICE") {
        println!("DM to alice: {}", m.text);
    }
}
