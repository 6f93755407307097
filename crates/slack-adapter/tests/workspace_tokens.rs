//! Each installed workspace is served with its own bot token; others with `SLACK_BOT_TOKEN`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use access_core::notification::{Notification, RequestSummary};
use access_core::ports::{Notifier, NotifyContext};
use access_core::request::RequestStatus;
use slack_adapter::config::Secret;
use slack_adapter::crypto::TokenCipher;
use slack_adapter::installations::Installations;
use slack_adapter::oauth::{CallbackParams, InstallFlow, OAuthConfig};
use slack_adapter::{SlackConfig, SlackNotifier};
use testkit::slack::{self as fake, FakeSlack, FakeUser};
use testkit::slack_oauth::{self, FakeSlackOAuth, Grant};

fn submitted(team: &str, user: &str) -> Notification {
    Notification::RequestSubmitted {
        request: RequestSummary {
            id: access_core::RequestId::new(),
            subject: access_core::Subject {
                team_id: team.into(),
                user_id: user.into(),
                email: None,
                name: user.to_lowercase(),
            },
            resource: access_core::ResourceId::parse("dev-network").unwrap(),
            resource_description: String::new(),
            kind: access_core::request::RequestKind::New,
            duration: "4h".parse().unwrap(),
            justification: "because".into(),
            status: RequestStatus::Pending,
            created_at: chrono::Utc::now(),
            provider: "dry-run".into(),
            network: None,
        },
        approvals_required: 1,
    }
}

#[tokio::test]
async fn notifier_uses_each_workspace_token() {
    let oauth = FakeSlackOAuth::start().await;
    let slack = FakeSlack::start().await;
    let ins = Installations::in_memory(TokenCipher::from_keys(&[[5u8; 32]]).unwrap());
    let flow = Arc::new(InstallFlow::new(
        OAuthConfig {
            client_id: slack_oauth::CLIENT_ID.into(),
            client_secret: Secret::new(slack_oauth::CLIENT_SECRET),
            api_url: oauth.api_url(),
            ..OAuthConfig::default()
        },
        ins.clone(),
    ));
    for (code, team) in [("a", "TA"), ("b", "TB")] {
        oauth.add_code(code, Grant::workspace(team, team));
        let (_, state) = flow.start().await.unwrap();
        flow.callback(&CallbackParams {
            code: Some(code.into()),
            state: Some(state),
            error: None,
        })
        .await
        .unwrap();
        slack.add_token(&oauth.bot_token(team).unwrap());
    }
    for u in ["UALICE", "UBOB", "UCAROL"] {
        slack.add_user(FakeUser::new(u, &u.to_lowercase()));
    }
    // One SLACK_API_URL for everything, as a server has: the OAuth fake relays the Web API
    // methods to the main fake.
    oauth.relay_to(&slack.api_url());
    let notifier = SlackNotifier::new(&SlackConfig::new(
        fake::BOT_TOKEN,
        "secret",
        &oauth.api_url(),
    ))
    .with_installations(ins);

    for (team, user) in [("TA", "UALICE"), ("TB", "UBOB"), (fake::TEAM_ID, "UCAROL")] {
        notifier
            .notify(&submitted(team, user), &NotifyContext::default())
            .await
            .unwrap();
    }
    let calls = slack.calls_to("chat.postMessage");
    assert_eq!(calls.len(), 3);
    let token_for = |user: &str| {
        calls
            .iter()
            .find(|c| c.args["channel"] == user)
            .and_then(|c| c.token.clone())
            .unwrap()
    };
    assert_eq!(token_for("UALICE"), oauth.bot_token("TA").unwrap());
    assert_eq!(token_for("UBOB"), oauth.bot_token("TB").unwrap());
    assert_eq!(
        token_for("UCAROL"),
        fake::BOT_TOKEN,
        "not installed: SLACK_BOT_TOKEN"
    );

    // After an uninstall the workspace falls back to the single-workspace token.
    assert!(flow.uninstall("TA").await.unwrap());
    notifier
        .notify(&submitted("TA", "UALICE"), &NotifyContext::default())
        .await
        .unwrap();
    let last = slack.calls_to("chat.postMessage").pop().unwrap();
    assert_eq!(last.token.as_deref(), Some(fake::BOT_TOKEN));
}

/// `/access` with no text opens the request modal (`views.open` with the caller's trigger id).
async fn post_command(
    app: &axum::Router,
    team: &str,
    user: &str,
    enterprise: Option<&str>,
    trigger: &str,
    slack: &FakeSlack,
) -> StatusCode {
    let mut cmd = fake::SlashCommand::new("/access", user, "", &slack.response_url(), trigger);
    cmd.team_id = team.into();
    let mut body = cmd.body();
    if let Some(e) = enterprise {
        body.push_str(&format!("&enterprise_id={e}"));
    }
    let mut req = Request::post("/slack/commands")
        .header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in fake::signed_headers("secret", &body) {
        req = req.header(k.as_str(), v.as_str());
    }
    app.clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn router_answers_each_workspace_with_its_token() {
    let oauth = FakeSlackOAuth::start().await;
    let slack = FakeSlack::start().await;
    let ins = Installations::in_memory(TokenCipher::from_keys(&[[6u8; 32]]).unwrap());
    let flow = InstallFlow::new(
        OAuthConfig {
            client_id: slack_oauth::CLIENT_ID.into(),
            client_secret: Secret::new(slack_oauth::CLIENT_SECRET),
            api_url: oauth.api_url(),
            ..OAuthConfig::default()
        },
        ins.clone(),
    );
    // Two workspaces, and an Enterprise Grid organisation installed org-wide (team "TORG").
    oauth.add_code(
        "org",
        Grant::workspace("TORG", "")
            .enterprise("E2", "Grid")
            .org_wide(),
    );
    for (code, team) in [("a", "TA"), ("b", "TB"), ("org", "TORG")] {
        if code != "org" {
            oauth.add_code(code, Grant::workspace(team, team));
        }
        let (_, state) = flow.start().await.unwrap();
        flow.callback(&CallbackParams {
            code: Some(code.into()),
            state: Some(state),
            error: None,
        })
        .await
        .unwrap();
        slack.add_token(&oauth.bot_token(team).unwrap());
    }
    for u in ["UALICE", "UBOB", "UCAROL", "UDAVE"] {
        slack.add_user(
            FakeUser::new(u, &u.to_lowercase()).email(&format!("{}@example.com", u.to_lowercase())),
        );
    }
    let db = testkit::db::TestDb::sqlite();
    let store: Arc<dyn access_core::ports::Store> =
        Arc::new(store_sqlx::SqlStore::connect(&db.url).await.unwrap());
    let engine = Arc::new(
        access_core::Engine::builder(store, Arc::new(access_core::ports::SystemClock))
            .build()
            .unwrap(),
    );
    let config = SlackConfig::new(fake::BOT_TOKEN, "secret", &slack.api_url());
    let app = slack_adapter::router::router_with_installations(engine, config, ins);

    let mut triggers = vec![];
    for (team, ent, user) in [
        ("TA", None, "UALICE"),
        ("TB", None, "UBOB"),
        ("TOTHER", None, "UCAROL"),
        ("TGRID1", Some("E2"), "UDAVE"),
    ] {
        let trigger = slack.trigger_id();
        triggers.push((user, trigger.clone()));
        assert_eq!(
            post_command(&app, team, user, ent, &trigger, &slack).await,
            StatusCode::OK
        );
    }
    let ok = slack
        .wait_until(Duration::from_secs(5), |s| {
            s.calls_to("views.open").len() >= 4
        })
        .await;
    assert!(ok, "every command opened the modal");
    let calls = slack.calls_to("views.open");
    let token_for = |user: &str| {
        let trigger = &triggers.iter().find(|t| t.0 == user).unwrap().1;
        calls
            .iter()
            .find(|c| c.args["trigger_id"] == trigger.as_str())
            .and_then(|c| c.token.clone())
            .unwrap()
    };
    assert_eq!(token_for("UALICE"), oauth.bot_token("TA").unwrap());
    assert_eq!(token_for("UBOB"), oauth.bot_token("TB").unwrap());
    assert_eq!(token_for("UCAROL"), fake::BOT_TOKEN);
    assert_eq!(
        token_for("UDAVE"),
        oauth.bot_token("TORG").unwrap(),
        "a workspace of the organisation uses the org-wide install"
    );
}
