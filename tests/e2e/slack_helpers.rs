//! Talking to `gatehouse-server` the way Slack does: signed slash commands, button clicks, modal
//! submissions and Events API callbacks, with the fake Slack on the other side.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::slack::{self, FakeMessage, FakeSlack, FakeUser, SlashCommand};

use crate::helpers::*;

pub const SIGNING_SECRET: &str = "e2e-slack-signing-secret";
/// `APPROVAL_CHANNEL`, given by name: the bot must post by name and update by the returned id.
pub const APPROVALS_NAME: &str = "access-approvals";
pub const APPROVALS_ID: &str = "C0APPROVALS";
/// Slack gives up on an app that has not answered after 3 s.
pub const SLACK_ACK_LIMIT: Duration = Duration::from_secs(3);

/// What the server answered.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub text: String,
    pub took: Duration,
    /// For a slash command acknowledged with a receipt: the answer that followed on its
    /// response_url (see [`Reply::ack_text`]).
    pub followed: Option<String>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// The answer the person got: the `text` of an ephemeral acknowledgement or, when that was a
    /// receipt (the profile had to be read from Slack first), what followed on the response_url.
    pub fn ack_text(&self) -> String {
        match &self.followed {
            Some(answer) => answer.clone(),
            None => self.json()["text"].as_str().unwrap_or_default().to_string(),
        }
    }
}

/// A server wired to a fake Slack, plus the admin API to look behind the scenes.
pub struct SlackWorld {
    pub kind: String,
    pub slack: FakeSlack,
    pub server: Server,
    pub admin: Api,
    http: reqwest::Client,
}

impl SlackWorld {
    pub async fn start(
        db_url: &str,
        kind: &str,
        config: &Path,
        dir: &Path,
        users: &[&str],
    ) -> SlackWorld {
        let slack = FakeSlack::start().await;
        for u in users {
            slack.add_user(
                FakeUser::new(u, &u.to_lowercase())
                    .email(&format!("{}@example.com", u.to_lowercase())),
            );
        }
        slack.add_channel(APPROVALS_ID, APPROVALS_NAME);
        slack.add_channel("C0GENERAL", "general");
        let opts = ServerOptions {
            config,
            database_url: db_url,
            admin_token: Some(ADMIN_TOKEN),
            extra_env: vec![
                ("SLACK_BOT_TOKEN", slack.token().to_string()),
                ("SLACK_SIGNING_SECRET", SIGNING_SECRET.to_string()),
                ("SLACK_API_URL", slack.api_url()),
                ("APPROVAL_CHANNEL", APPROVALS_NAME.to_string()),
                ("RUST_LOG", "info,sqlx=warn,slack_adapter=debug".to_string()),
            ],
        };
        let server = Server::start(&opts, dir);
        let admin = Api::new(&server, Some(ADMIN_TOKEN));
        SlackWorld {
            kind: kind.to_string(),
            slack,
            server,
            admin,
            http: reqwest::Client::new(),
        }
    }

    /// SIGKILLs the server (a crash: no shutdown) and starts a new one on the same database and
    /// fake Slack.
    pub fn crash_and_restart(&mut self, db_url: &str, config: &Path, dir: &Path) {
        let _ = self.server.child.kill();
        let _ = self.server.child.wait();
        let opts = ServerOptions {
            config,
            database_url: db_url,
            admin_token: Some(ADMIN_TOKEN),
            extra_env: vec![
                ("SLACK_BOT_TOKEN", self.slack.token().to_string()),
                ("SLACK_SIGNING_SECRET", SIGNING_SECRET.to_string()),
                ("SLACK_API_URL", self.slack.api_url()),
                ("APPROVAL_CHANNEL", APPROVALS_NAME.to_string()),
                ("RUST_LOG", "info,sqlx=warn,slack_adapter=debug".to_string()),
            ],
        };
        self.server = Server::start(&opts, dir);
        self.admin = Api::new(&self.server, Some(ADMIN_TOKEN));
    }

    /// POSTs `body` with the given headers (signing is up to the caller).
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: &str,
        headers: &[(String, String)],
    ) -> Reply {
        let mut rb = self
            .http
            .post(self.server.url(path))
            .header("content-type", content_type)
            .body(body.to_string());
        for (k, v) in headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        let start = Instant::now();
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        Reply {
            status,
            text,
            took: start.elapsed(),
            followed: None,
        }
    }

    /// POSTs `body` signed now with the right secret.
    pub async fn post_signed(&self, path: &str, content_type: &str, body: &str) -> Reply {
        let headers = slack::signed_headers(SIGNING_SECRET, body);
        self.post(path, content_type, body, &headers).await
    }

    /// Types `/<command> <text>` as `user`; returns the acknowledgement and the command's
    /// response_url. Every acknowledgement must beat Slack's 3 s limit.
    pub async fn slash(&self, command: &str, user: &str, text: &str) -> (Reply, String) {
        let (reply, url, _) = self.slash_with_trigger(command, user, text).await;
        (reply, url)
    }

    /// [`SlackWorld::slash`], also returning the trigger_id. After a receipt, waits for the
    /// answer on the response_url ([`Reply::ack_text`] returns it).
    pub async fn slash_with_trigger(
        &self,
        command: &str,
        user: &str,
        text: &str,
    ) -> (Reply, String, String) {
        let (reply, url, trigger) = self.slash_ack(command, user, text).await;
        let ack = reply.json()["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let followed = if slack::is_receipt(&ack) {
            let answer = self
                .slack
                .command_answer(&ack, &url, Duration::from_secs(15))
                .await;
            assert!(
                answer.is_some(),
                "{}: {command} {text}: receipt {ack:?} but nothing followed",
                self.kind
            );
            answer
        } else {
            None
        };
        (Reply { followed, ..reply }, url, trigger)
    }

    /// The acknowledgement alone (a receipt stays a receipt), its response_url and trigger_id.
    pub async fn slash_ack(
        &self,
        command: &str,
        user: &str,
        text: &str,
    ) -> (Reply, String, String) {
        let url = self.slack.response_url();
        let trigger = self.slack.trigger_id();
        let body = SlashCommand::new(command, user, text, &url, &trigger).body();
        let reply = self
            .post_signed(
                "/slack/commands",
                "application/x-www-form-urlencoded",
                &body,
            )
            .await;
        assert_eq!(
            reply.status, 200,
            "{}: {command} {text}: {reply:?}",
            self.kind
        );
        assert!(
            reply.took < SLACK_ACK_LIMIT,
            "{}: {command} {text} acknowledged after {:?}",
            self.kind,
            reply.took
        );
        (reply, url, trigger)
    }

    /// Clicks button `action_id` (with `value`) on channel message `m` as `user`; returns the
    /// click's response_url (where refusals go).
    pub async fn click(&self, user: &str, action_id: &str, value: &str, m: &FakeMessage) -> String {
        let url = self.slack.response_url();
        let p = slack::block_actions_payload(
            user,
            action_id,
            value,
            &m.channel,
            &m.ts,
            &url,
            &self.slack.trigger_id(),
        );
        let reply = self.interaction(&p).await;
        assert_eq!(
            reply.status, 200,
            "{}: click {action_id}: {reply:?}",
            self.kind
        );
        assert!(
            reply.took < SLACK_ACK_LIMIT,
            "{}: click acknowledged after {:?}",
            self.kind,
            reply.took
        );
        url
    }

    pub async fn interaction(&self, payload: &Value) -> Reply {
        let body = slack::interaction_body(payload);
        self.post_signed(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            &body,
        )
        .await
    }

    /// Delivers an Events API callback (a retry when `retry_num` is set).
    pub async fn event(&self, event_id: &str, event: Value, retry_num: Option<u32>) -> Reply {
        let body = slack::event_callback(event_id, event).to_string();
        self.event_body(&body, retry_num).await
    }

    pub async fn event_body(&self, body: &str, retry_num: Option<u32>) -> Reply {
        let mut headers = slack::signed_headers(SIGNING_SECRET, body).to_vec();
        if let Some(n) = retry_num {
            headers.push(("x-slack-retry-num".into(), n.to_string()));
            headers.push(("x-slack-retry-reason".into(), "http_timeout".into()));
        }
        let reply = self
            .post("/slack/events", "application/json", body, &headers)
            .await;
        assert_eq!(reply.status, 200, "{}: event: {reply:?}", self.kind);
        assert!(
            reply.took < SLACK_ACK_LIMIT,
            "{}: event acknowledged after {:?}",
            self.kind,
            reply.took
        );
        reply
    }

    /// Requests of `user` as stored (admin API), newest first.
    pub async fn requests_of(&self, user: &str) -> Vec<Value> {
        let (status, body) = self
            .admin
            .get(&format!(
                "/api/requests?team_id={}&user_id={user}",
                slack::TEAM_ID
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        body.as_array().unwrap().clone()
    }

    /// The single stored request of `user`, once it exists.
    pub async fn only_request_of(&self, user: &str) -> Value {
        let start = Instant::now();
        loop {
            let rs = self.requests_of(user).await;
            if !rs.is_empty() {
                assert_eq!(
                    rs.len(),
                    1,
                    "{}: {user} has {} requests: {rs:?}",
                    self.kind,
                    rs.len()
                );
                return rs[0].clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{}: no request stored for {user}",
                self.kind
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn grants_of(&self, user: &str) -> Vec<Value> {
        let (status, body) = self
            .admin
            .get(&format!(
                "/api/grants?team_id={}&user_id={user}",
                slack::TEAM_ID
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        body.as_array().unwrap().clone()
    }

    /// `GET /api/requests/{id}`: `{"request": …, "decisions": […]}`.
    pub async fn request_detail(&self, id: &str) -> Value {
        let (status, body) = self.admin.get(&format!("/api/requests/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits (polling) until `pred` holds; fails with `what` and a dump of Slack's calls.
    pub async fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&FakeSlack) -> bool) {
        if !self.slack.wait_until(timeout, pred).await {
            panic!(
                "{}: timed out waiting for {what}\n{}",
                self.kind,
                self.dump()
            );
        }
    }

    /// Waits for a DM to `user` whose text contains `needle`; returns it.
    pub async fn dm_containing(&self, user: &str, needle: &str, timeout: Duration) -> FakeMessage {
        self.wait(
            &format!("a DM to {user} containing {needle:?}"),
            timeout,
            |s| s.dms_to(user).iter().any(|m| m.all_text().contains(needle)),
        )
        .await;
        self.slack
            .dms_to(user)
            .into_iter()
            .find(|m| m.all_text().contains(needle))
            .unwrap()
    }

    /// DMs to `user` whose text contains `needle`.
    pub fn dms_containing(&self, user: &str, needle: &str) -> Vec<FakeMessage> {
        self.slack
            .dms_to(user)
            .into_iter()
            .filter(|m| m.all_text().contains(needle))
            .collect()
    }

    /// The approval message for request `id` in the approvers' channel.
    pub async fn approval_message(&self, request_id: &str) -> FakeMessage {
        self.wait(
            &format!("the approval message of {request_id}"),
            Duration::from_secs(10),
            |s| {
                s.messages_in(APPROVALS_ID)
                    .iter()
                    .any(|m| m.all_text().contains(request_id))
            },
        )
        .await;
        self.current_approval(request_id)
    }

    /// The approval message as it is now.
    pub fn current_approval(&self, request_id: &str) -> FakeMessage {
        let all: Vec<_> = self
            .slack
            .messages_in(APPROVALS_ID)
            .into_iter()
            .filter(|m| m.all_text().contains(request_id))
            .collect();
        assert_eq!(
            all.len(),
            1,
            "{}: one approval message per request: {all:?}",
            self.kind
        );
        all.into_iter().next().unwrap()
    }

    /// Texts posted to a response_url.
    pub fn responses(&self, url: &str) -> Vec<String> {
        self.slack
            .responses(url)
            .iter()
            .map(|v| v["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub async fn response_containing(&self, url: &str, needle: &str, timeout: Duration) -> String {
        self.wait(
            &format!("a response_url post containing {needle:?}"),
            timeout,
            |s| {
                s.responses(url)
                    .iter()
                    .any(|v| v["text"].as_str().is_some_and(|t| t.contains(needle)))
            },
        )
        .await;
        self.responses(url)
            .into_iter()
            .find(|t| t.contains(needle))
            .unwrap()
    }

    /// Every Slack call, one a line, for failure messages.
    pub fn dump(&self) -> String {
        let mut out = String::from("Slack calls:\n");
        for c in self.slack.calls() {
            let body: String = c.body.chars().take(300).collect();
            out.push_str(&format!(
                "  {} {} {:?}: {body}\n",
                c.method, c.status, c.error
            ));
        }
        let log = self.server.log_text();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        out.push_str("server log tail:\n");
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
        out
    }
}

/// The approval message of a request, waiting until `pred` holds on its text.
pub async fn wait_approval_text(
    w: &SlackWorld,
    request_id: &str,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> FakeMessage {
    w.wait(what, Duration::from_secs(10), |s| {
        s.messages_in(APPROVALS_ID)
            .iter()
            .any(|m| m.all_text().contains(request_id) && pred(&m.all_text()))
    })
    .await;
    w.current_approval(request_id)
}
