//! Socket Mode against the fake WebSocket: a slash command and an interaction reach the same
//! handlers as HTTP, and the client reconnects after a dropped socket and on Slack's request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use slack_adapter::SlackConfig;
use slack_adapter::blocks::action;
use slack_adapter::config::Secret;
use slack_adapter::router::socket_mode_router;
use slack_adapter::socket_mode::{SocketMode, SocketModeConfig};
use testkit::slack::{self as fake, FakeSlack, FakeUser};
use testkit::slack_socket::{self, FakeSocketMode};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn commands_and_interactions_over_the_socket_with_reconnects() {
    let slack = FakeSlack::start().await;
    slack.add_user(FakeUser::new("UALICE", "alice").email("alice@example.com"));
    let sock = FakeSocketMode::start().await;
    let db = testkit::db::TestDb::sqlite();
    let store: Arc<dyn access_core::ports::Store> =
        Arc::new(store_sqlx::SqlStore::connect(&db.url).await.unwrap());
    let engine = Arc::new(
        access_core::Engine::builder(store, Arc::new(access_core::ports::SystemClock))
            .build()
            .unwrap(),
    );
    // No signing secret at all: Socket Mode does not need one.
    let config = SlackConfig::new(fake::BOT_TOKEN, "", &slack.api_url());
    let handlers = socket_mode_router(engine, config, None);
    let client = SocketMode::new(
        SocketModeConfig {
            app_token: Secret::new(slack_socket::APP_TOKEN),
            api_url: sock.api_url(),
            retry_delay: Duration::from_millis(50),
            http_timeout: Duration::from_secs(5),
        },
        handlers,
    );
    let stats = client.stats();
    let task = client.spawn();
    assert!(sock.wait_connections(1, WAIT).await, "connected");

    // A slash command: the handler's ephemeral answer comes back as the ack payload.
    let id = sock
        .send_slash_command(
            fake::TEAM_ID,
            "UALICE",
            "/access",
            "help",
            &slack.response_url(),
            &slack.trigger_id(),
        )
        .unwrap();
    let ack = sock
        .wait_ack(&id, WAIT)
        .await
        .expect("slash command acknowledged");
    let text = ack["payload"]["text"].as_str().unwrap_or_default();
    assert!(text.contains("request"), "{ack}");

    // An interaction: the Request access button opens the modal through views.open.
    let trigger = slack.trigger_id();
    let payload = fake::block_actions_payload(
        "UALICE",
        action::OPEN_MODAL,
        "",
        "C0GENERAL",
        "1.2",
        &slack.response_url(),
        &trigger,
    );
    let id = sock.send_envelope("interactive", payload, true).unwrap();
    assert!(
        sock.wait_ack(&id, WAIT).await.is_some(),
        "interaction acknowledged"
    );
    assert!(
        slack
            .wait_until(WAIT, |s| !s.views_opened().is_empty())
            .await,
        "modal opened"
    );

    // The network drops the socket: a new URL is fetched and the client is back.
    sock.drop_connection();
    assert!(
        sock.wait_connections(2, WAIT).await,
        "reconnected after a drop"
    );
    let id = sock
        .send_slash_command(
            fake::TEAM_ID,
            "UALICE",
            "/access",
            "help",
            &slack.response_url(),
            &slack.trigger_id(),
        )
        .unwrap();
    assert!(sock.wait_ack(&id, WAIT).await.is_some());

    // Slack asks for a refresh.
    sock.send_disconnect("refresh_requested");
    assert!(
        sock.wait_connections(3, WAIT).await,
        "reconnected on request"
    );
    let id = sock
        .send_slash_command(
            fake::TEAM_ID,
            "UALICE",
            "/access",
            "help",
            &slack.response_url(),
            &slack.trigger_id(),
        )
        .unwrap();
    assert!(sock.wait_ack(&id, WAIT).await.is_some());
    assert_eq!(sock.opens(), 3, "one apps.connections.open per connection");
    assert!(stats.envelopes.load(std::sync::atomic::Ordering::Relaxed) >= 4);
    task.abort();
}

#[tokio::test]
async fn a_wrong_app_token_is_reported() {
    let sock = FakeSocketMode::start().await;
    let client = SocketMode::new(
        SocketModeConfig {
            app_token: Secret::new("xoxb-not-an-app-token"),
            api_url: sock.api_url(),
            retry_delay: Duration::from_millis(50),
            http_timeout: Duration::from_secs(5),
        },
        axum::Router::new(),
    );
    let e = client.open_connection().await.unwrap_err();
    assert_eq!(e.code(), Some("not_allowed_token_type"));
    assert!(SocketModeConfig::from_lookup(|_| None).is_none());
    let c = SocketModeConfig::from_lookup(|k| {
        (k == "SLACK_APP_TOKEN").then(|| "xapp-1-secret".to_string())
    })
    .unwrap();
    assert!(!format!("{c:?}").contains("xapp-1-secret"));
}
