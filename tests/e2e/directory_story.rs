//! Eligibility through Slack with the real server: the org-data index (a file here; GCS is
//! covered in the directory crate's tests), Slack user groups and e-mail domains, and the refusal
//! messages a person sees.

use std::time::Duration;

use serde_json::Value;
use testkit::slack::{
    FakeSlack, FakeUser, SlashCommand, event_callback, message_im_event, signed_headers,
};

use crate::helpers::*;

const SECRET: &str = "directory-story-signing-secret";

const CONFIG: &str = r#"
[[resources]]
id = "gcp-access"
provider = "dry-run"
default_duration = "7d"
max_duration = "7d"
eligibility = [{ org = "Hybrid Platforms" }]
approval = { mode = "auto" }

[[resources]]
id = "oncall-db"
provider = "dry-run"
default_duration = "1h"
max_duration = "8h"
eligibility = [{ slack_group = "S0ONCALL" }]
approval = { mode = "auto" }

[[resources]]
id = "corp-only"
provider = "dry-run"
default_duration = "1h"
max_duration = "8h"
eligibility = [{ email_domain = ["corp.example"] }]
approval = { mode = "auto" }
"#;

fn fixture() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/directory/tests/fixtures/comprehensive_index_dump.json")
        .display()
        .to_string()
}

async fn fake_slack() -> FakeSlack {
    let slack = FakeSlack::start().await;
    slack.add_user(FakeUser::new("U01JDOE", "jdoe").email("jdoe@example.com"));
    slack.add_user(FakeUser::new("U05DLEE", "dlee").email("dlee@example.com"));
    slack.add_usergroup("S0ONCALL", &["U05DLEE"]);
    slack
}

async fn post(server: &Server, path: &str, content_type: &str, body: String) -> (u16, String) {
    let mut rb = reqwest::Client::new()
        .post(server.url(path))
        .header("content-type", content_type);
    for (k, v) in signed_headers(SECRET, &body) {
        rb = rb.header(k, v);
    }
    let r = rb.body(body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Sends `text` as a slash command and returns everything the person was shown: the
/// acknowledgement and whatever followed on the response URL.
async fn command(server: &Server, slack: &FakeSlack, user: &str, text: &str) -> String {
    let response_url = slack.response_url();
    let cmd = SlashCommand::new("/access", user, text, &response_url, &slack.trigger_id());
    let (status, ack) = post(
        server,
        "/slack/commands",
        "application/x-www-form-urlencoded",
        cmd.body(),
    )
    .await;
    assert_eq!(status, 200, "{ack}");
    // The answer is in the ack, or follows on the response URL within a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    loop {
        let followups: Vec<Value> = slack.responses(&response_url);
        let shown = format!(
            "{ack}\n{}",
            followups
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        // "Working on it" (the budget ran out) or a receipt (the profile had to be read first):
        // the answer follows.
        let pending = ack.contains("Working on it") || ack.contains(testkit::slack::RECEIPT_MARK);
        if !pending || !followups.is_empty() || std::time::Instant::now() > deadline {
            return shown;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `text` as a DM and waits for the bot's answer in that DM (past any "Working on it…"
/// placeholder, which a loaded machine may send first).
async fn dm(server: &Server, slack: &FakeSlack, user: &str, text: &str, event_id: &str) -> String {
    let before = slack.dms_to(user).len();
    let body = event_callback(event_id, message_im_event(user, text)).to_string();
    let (status, _) = post(server, "/slack/events", "application/json", body).await;
    assert_eq!(status, 200);
    let answered = |s: &FakeSlack| {
        s.dms_to(user)[before.min(s.dms_to(user).len())..]
            .iter()
            .any(|m| !m.all_text().contains("Working on it"))
    };
    assert!(
        slack.wait_until(Duration::from_secs(15), answered).await,
        "no reply to {user}'s DM"
    );
    slack.dms_to(user)[before..]
        .iter()
        .map(|m| m.all_text())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eligibility_refusals_through_slack() {
    for db in testkit::db::backends().await {
        let slack = fake_slack().await;
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), CONFIG);
        let env = vec![
            ("SLACK_BOT_TOKEN", slack.token().to_string()),
            ("SLACK_SIGNING_SECRET", SECRET.to_string()),
            ("SLACK_API_URL", slack.api_url()),
            ("ORG_DATA_FILE", fixture()),
        ];
        let opts = ServerOptions {
            config: &config,
            database_url: &db.url,
            admin_token: Some(ADMIN_TOKEN),
            extra_env: env,
        };
        let server = Server::start(&opts, dir.path());
        let api = Api::new(&server, Some(ADMIN_TOKEN));

        // The GCP document's story: a DM from someone outside Hybrid Platforms is refused with
        // its exact text; a member is granted.
        let reply = dm(
            &server,
            &slack,
            "U05DLEE",
            "request gcp-access \"Need to debug CI infrastructure issues\"",
            "Ev1",
        )
        .await;
        assert!(
            reply.contains(
                "You are not a member of the 'Hybrid Platforms' organization. Access can only be granted to Hybrid Platforms members."
            ),
            "{}: {reply}",
            db.kind
        );
        dm(
            &server,
            &slack,
            "U01JDOE",
            "request gcp-access \"Need to debug CI infrastructure issues\"",
            "Ev2",
        )
        .await;
        let (grants, _) = api
            .wait_for("/api/grants?status=active", Duration::from_secs(10), |g| {
                g.as_array().is_some_and(|a| a.len() == 1)
            })
            .await;
        assert_eq!(grants[0]["subject"]["user_id"], "U01JDOE");
        assert_eq!(
            grants[0]["subject"]["email"], "jdoe@example.com",
            "e-mail from users.info"
        );

        // Slack user group rule.
        let shown = command(
            &server,
            &slack,
            "U01JDOE",
            "request oncall-db 1h \"db fix\"",
        )
        .await;
        assert!(
            shown.contains("You are not a member of the Slack user group"),
            "{shown}"
        );
        let shown = command(
            &server,
            &slack,
            "U05DLEE",
            "request oncall-db 1h \"db fix\"",
        )
        .await;
        assert!(!shown.contains("not a member"), "{shown}");

        // E-mail domain rule.
        let shown = command(
            &server,
            &slack,
            "U05DLEE",
            "request corp-only 1h \"corp work\"",
        )
        .await;
        assert!(shown.contains("@corp.example"), "{shown}");

        // Only the two eligible requests exist.
        let (_, requests) = api.get("/api/requests").await;
        assert_eq!(
            requests.as_array().unwrap().len(),
            2,
            "{}: refused requests leave nothing: {requests}",
            db.kind
        );
        // The granted request's message is delivered before this server stops; otherwise the
        // next server delivers it (nothing is lost) and it would be read as the next reply.
        assert!(
            slack
                .wait_until(Duration::from_secs(15), |s| s
                    .dms_to("U05DLEE")
                    .iter()
                    .any(|m| m.all_text().contains("Access granted")))
                .await,
            "{}: the oncall-db grant was never announced",
            db.kind
        );
        drop(server);

        // Without any org data the org rule cannot be decided: nothing is granted on a guess.
        let no_org = ServerOptions {
            config: &config,
            database_url: &db.url,
            admin_token: Some(ADMIN_TOKEN),
            extra_env: vec![
                ("SLACK_BOT_TOKEN", slack.token().to_string()),
                ("SLACK_SIGNING_SECRET", SECRET.to_string()),
                ("SLACK_API_URL", slack.api_url()),
            ],
        };
        let server = Server::start(&no_org, dir.path());
        let reply = dm(
            &server,
            &slack,
            "U05DLEE",
            "request gcp-access \"again\"",
            "Ev3",
        )
        .await;
        assert!(
            reply.contains("Organizational data service is not available"),
            "{reply}"
        );
    }
}

/// `/readyz` reports the providers in use and the org-data index: an index that never loaded
/// makes the server not ready, with the reason, until a reload succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_providers_and_the_org_data_index() {
    let db = testkit::db::TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), CONFIG);
    let index = dir.path().join("org-index.json");
    let env = vec![
        ("ORG_DATA_FILE", index.display().to_string()),
        ("ORG_DATA_RELOAD_INTERVAL", "1s".to_string()),
    ];
    let opts = ServerOptions {
        config: &config,
        database_url: &db.url,
        admin_token: Some(ADMIN_TOKEN),
        extra_env: env,
    };
    let server = Server::start(&opts, dir.path());
    let readyz = || async {
        let r = reqwest::get(server.url("/readyz")).await.unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };

    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["org_data"]["loaded"], false, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("org data"), "{body}");
    assert_eq!(
        body["providers"]["dry-run"]["resources"][0], "gcp-access",
        "{body}"
    );

    // The index appears; the next reload makes the server ready.
    std::fs::copy(fixture(), &index).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = readyz().await;
        if status == 200 {
            assert_eq!(body["org_data"]["loaded"], true, "{body}");
            assert!(body["org_data"]["people"].as_u64().unwrap() > 0, "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(server.stop().success());
}
