//! Issue 17 item 3: several roles per resource (docs/roles.md), end to end through Slack. The
//! configuration is loaded as the server loads it; the real Slack router and notifier talk to
//! the fake Slack, the real GCP IAM provider to the fake GCP. On SQLite and (with
//! `TEST_DATABASE_URL`) PostgreSQL.
//!
//! `gcp-access` offers `viewer` (anyone, auto-approved, up to 8 h) and `editor` (example.com
//! only, one approver, up to 4 h), each a different IAM role in one project; `dev-network` offers
//! `users` and `admins`, two Cloud Connexa groups of one network.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use access_core::ports::{GrantFilter, JobFilter, Provider};
use access_core::{GrantStatus, RequestStatus};
use axum::body::Body;
use axum::http::Request;
use gatehouse_runtime::compose::Overrides;
use gatehouse_runtime::config::Env;
use gatehouse_runtime::maintenance::reconcile;
use gatehouse_runtime::{App, Config};
use http_body_util::BodyExt;
use provider_cloudconnexa::{ClientConfig, CloudConnexaProvider, ProviderConfig};
use provider_gcp_iam::{GcpIamConfig, GcpIamProvider};
use serde_json::{Value, json};
use slack_adapter::SlackConfig;
use slack_adapter::notifier::SlackNotifier;
use testkit::cloudconnexa::{FakeCloudConnexa, FakeConfig};
use testkit::db::{TestDb, backends};
use testkit::gcp::FakeGcp;
use testkit::provider::ManualClock;
use testkit::slack::{FakeSlack, FakeUser};
use tower::ServiceExt;

const PROJECT: &str = "roles-project";
const SECRET: &str = "roles-test-signing-secret";
const ALICE: &str = "UALICE";
const OUTSIDER: &str = "UOUTSIDER";
const APPROVER: &str = "UAPPROVER";
const APPROVALS: &str = "C0APPROVALS";
const VIEWER_ROLE: &str = "roles/storage.objectViewer";
const EDITOR_ROLE: &str = "roles/storage.objectAdmin";

const CONFIG: &str = r#"
[server]
approval_channel = "C0APPROVALS"
call_timeout_secs = 4

[[resources]]
id = "gcp-access"
description = "The roles project"
provider = "gcp-iam"
default_duration = "1h"
min_duration = "1m"
max_duration = "8h"
eligibility = ["anyone"]
approval = { mode = "auto" }
settings = { project = "roles-project", role = "roles/browser", mode = "user_binding" }

[[resources.roles]]
id = "viewer"
description = "Read the project"
settings = { role = "roles/storage.objectViewer" }

[[resources.roles]]
id = "editor"
description = "Change the project"
settings = { role = "roles/storage.objectAdmin" }
max_duration = "4h"
eligibility = [{ email_domain = ["example.com"] }]
approval = { mode = "approvers", approvers = { users = ["UAPPROVER"] } }

[[resources]]
id = "dev-network"
description = "Development VPN"
provider = "cloudconnexa"
default_duration = "1h"
max_duration = "8h"
approval = { mode = "auto" }
settings = { network = "dev-network" }

[[resources.roles]]
id = "users"

[[resources.roles]]
id = "admins"
settings = { group = "dev-admins" }
"#;

struct World {
    app: App,
    router: axum::Router,
    slack: FakeSlack,
    gcp: FakeGcp,
    cc: FakeCloudConnexa,
    kind: &'static str,
    _db: TestDb,
}

async fn world(db: TestDb) -> World {
    let slack = FakeSlack::start().await;
    slack.add_user(FakeUser::new(ALICE, "alice").email("alice@example.com"));
    slack.add_user(FakeUser::new(OUTSIDER, "outsider").email("outsider@elsewhere.example"));
    slack.add_user(FakeUser::new(APPROVER, "approver").email("approver@example.com"));
    slack.add_channel(APPROVALS, "access-approvals");
    slack.add_channel("C0GENERAL", "general");
    let gcp = FakeGcp::start().await;
    gcp.add_project(PROJECT);
    let cc = FakeCloudConnexa::start(FakeConfig::fast()).await;
    cc.seed_network("dev-network");
    let mut client = ClientConfig::new(cc.url(), cc.client_id(), cc.client_secret());
    client.request_timeout = Duration::from_secs(2);
    let cc_provider = Arc::new(CloudConnexaProvider::new(ProviderConfig::new(client)).unwrap());

    let clock = Arc::new(ManualClock::starting_now());
    let tokens =
        gcp_auth::ServiceAccountTokenSource::from_json(&gcp.service_account_key_json()).unwrap();
    let gcp_provider = Arc::new(
        GcpIamProvider::new(
            GcpIamConfig {
                iam_url: gcp.url(),
                crm_url: gcp.url(),
                ..Default::default()
            }
            .with_fast_retries(20),
            Arc::new(tokens),
        )
        .unwrap()
        .with_clock(clock.clone()),
    );
    let mut slack_cfg = SlackConfig::new(slack.token(), SECRET, &slack.api_url());
    slack_cfg.http_timeout = Duration::from_secs(5);
    let notifier = Arc::new(SlackNotifier::new(&slack_cfg));
    let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    providers.insert("gcp-iam".into(), gcp_provider.clone());
    providers.insert("cloudconnexa".into(), cc_provider.clone());
    let mut app = App::build(
        Config::from_toml(CONFIG, "roles.toml").unwrap(),
        Env {
            database_url: db.url.clone(),
            ..Env::default()
        },
        Overrides {
            providers,
            notifier: Some(notifier),
            clock: Some(clock),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    app.adapters.gcp_iam = Some(gcp_provider);
    app.adapters.cloudconnexa = Some(cc_provider);
    let router = slack_adapter::router(app.engine.clone(), slack_cfg);
    World {
        app,
        router,
        slack,
        gcp,
        cc,
        kind: db.kind,
        _db: db,
    }
}

impl World {
    async fn post(&self, path: &str, content_type: &str, body: String) -> Value {
        let mut req = Request::post(path).header("content-type", content_type);
        for (k, v) in testkit::slack::signed_headers(SECRET, &body) {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}: {path}", self.kind);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    /// `/access <text>` from `user`; the command's answer.
    async fn command(&self, user: &str, text: &str) -> String {
        self.slash("/access", user, text).await
    }

    /// The command's answer: the acknowledgement's text, or what followed its receipt on the
    /// response_url (`FakeSlack::command_answer`).
    async fn slash(&self, command: &str, user: &str, text: &str) -> String {
        let url = self.slack.response_url();
        let body =
            testkit::slack::SlashCommand::new(command, user, text, &url, &self.slack.trigger_id())
                .body();
        let ack = self
            .post("/slack/commands", "application/x-www-form-urlencoded", body)
            .await;
        let ack = ack["text"].as_str().unwrap_or_default();
        self.slack
            .command_answer(ack, &url, std::time::Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{command} {text}: receipt {ack:?} but nothing followed"))
    }

    async fn interaction(&self, payload: &Value) -> Value {
        self.post(
            "/slack/interactions",
            "application/x-www-form-urlencoded",
            testkit::slack::interaction_body(payload),
        )
        .await
    }

    /// Runs due jobs (provisioning, notifications) once nothing runs inline any more.
    async fn run_jobs(&self) {
        let running = JobFilter {
            status: Some(access_core::jobs::JobStatus::Running),
            ..Default::default()
        };
        for _ in 0..1000 {
            if self
                .app
                .engine
                .store()
                .jobs(&running)
                .await
                .unwrap()
                .is_empty()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.app.engine.drain(50).await.unwrap();
    }

    async fn request_for(&self, resource: &str) -> access_core::AccessRequest {
        self.app
            .engine
            .store()
            .requests(&Default::default())
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.resource.as_str() == resource)
            .unwrap_or_else(|| panic!("{}: no request for {resource}", self.kind))
    }

    /// The members of `role`'s Gatehouse bindings in the fake project's IAM policy.
    fn members(&self, role: &str) -> Vec<String> {
        let policy = self.gcp.policy(PROJECT);
        let mut out: Vec<String> = policy["bindings"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|b| b["role"] == role)
            .flat_map(|b| b["members"].as_array().cloned().unwrap_or_default())
            .filter_map(|m| m.as_str().map(str::to_string))
            .collect();
        out.sort();
        out
    }

    async fn live_grants(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .app
            .engine
            .store()
            .grants(&GrantFilter {
                live_only: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|g| g.status == GrantStatus::Active)
            .map(|g| g.resource.to_string())
            .collect();
        out.sort();
        out
    }
}

/// A person asks for a role by name; each role has its own eligibility, approval and duration
/// bounds, and is granted as its own IAM role. Holding both, giving one back leaves the other,
/// and reconciliation takes neither away.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_role_is_requested_by_name_with_its_own_policy_and_binding() {
    for db in backends().await {
        let w = world(db).await;
        let k = w.kind;

        // `list` offers the roles, with each one's own policy.
        let list = w.command(ALICE, "list").await;
        assert!(
            list.contains(
                "*gcp-access:viewer* (Read the project): default 1h, at most 8h; no approval needed"
            ) && list.contains(
                "*gcp-access:editor* (Change the project): default 1h, at most 4h; needs 1 approval"
            ),
            "{k}: {list}"
        );
        // Outside example.com, the editor role is not offered.
        let list = w.command(OUTSIDER, "list").await;
        assert!(
            list.contains("gcp-access:viewer") && !list.contains("gcp-access:editor"),
            "{k}: {list}"
        );

        // The resource alone, or a role it does not have: the roles are listed.
        assert_eq!(
            w.command(ALICE, "request gcp-access 1h \"Reading logs\"")
                .await,
            "'gcp-access' has several roles; say which one: gcp-access:editor, gcp-access:viewer.",
            "{k}"
        );
        assert_eq!(
            w.command(ALICE, "request gcp-access:admin 1h \"Reading logs\"")
                .await,
            "Unknown role 'gcp-access:admin'. Roles of 'gcp-access': gcp-access:editor, gcp-access:viewer.",
            "{k}"
        );

        // Per-role eligibility: the outsider may view, not edit.
        let refused = w
            .command(OUTSIDER, "request gcp-access:editor 1h \"Deploying\"")
            .await;
        assert_eq!(
            refused,
            "Access to 'gcp-access:editor' is limited to e-mail addresses in @example.com. Your Slack profile's e-mail is not.",
            "{k}"
        );

        // Per-role duration bounds: 6 h is too long for an editor, fine for a viewer.
        assert_eq!(
            w.command(ALICE, "request gcp-access:editor 6h \"Deploying the fix\"")
                .await,
            "Duration must be between 1m and 4h (you asked for 6h).",
            "{k}"
        );
        let stored = w
            .app
            .engine
            .store()
            .requests(&Default::default())
            .await
            .unwrap();
        assert!(stored.is_empty(), "{k}: refusals store nothing: {stored:?}");

        // Per-role approval: the viewer role is approved at once and granted as its IAM role.
        let ack = w
            .command(ALICE, "request gcp-access:viewer 6h \"Reading logs\"")
            .await;
        assert!(
            ack.contains("Access to gcp-access:viewer for 6 hours approved automatically"),
            "{k}: {ack}"
        );
        w.run_jobs().await;
        assert_eq!(
            w.members(VIEWER_ROLE),
            ["user:alice@example.com"],
            "{k}: {}",
            w.gcp.policy(PROJECT)
        );
        assert!(w.members(EDITOR_ROLE).is_empty(), "{k}");

        // … the editor role waits for its approver, and is then granted as its own IAM role.
        let ack = w
            .command(ALICE, "request gcp-access:editor 4h \"Deploying the fix\"")
            .await;
        assert!(
            ack.contains("Access request submitted for gcp-access:editor (4 hours)"),
            "{k}: {ack}"
        );
        let editor = w.request_for("gcp-access:editor").await;
        assert_eq!(editor.status, RequestStatus::Pending, "{k}");
        w.run_jobs().await;
        let approval = w
            .slack
            .messages_in(APPROVALS)
            .into_iter()
            .find(|m| m.buttons().iter().any(|(_, v)| v == &editor.id.to_string()))
            .unwrap_or_else(|| panic!("{k}: no approval message: {:#?}", w.slack.messages()));
        assert!(
            approval.all_text().contains("gcp-access:editor"),
            "{k}: {}",
            approval.all_text()
        );
        assert!(
            w.members(EDITOR_ROLE).is_empty(),
            "{k}: nothing before approval"
        );
        let click = testkit::slack::block_actions_payload(
            APPROVER,
            "gatehouse_approve",
            &editor.id.to_string(),
            APPROVALS,
            &approval.ts,
            &w.slack.response_url(),
            &w.slack.trigger_id(),
        );
        w.interaction(&click).await;
        w.run_jobs().await;
        let editor = w.request_for("gcp-access:editor").await;
        assert_eq!(editor.status, RequestStatus::Active, "{k}");
        assert_eq!(w.members(EDITOR_ROLE), ["user:alice@example.com"], "{k}");
        assert_eq!(w.members(VIEWER_ROLE), ["user:alice@example.com"], "{k}");
        assert_eq!(
            w.live_grants().await,
            ["gcp-access:editor", "gcp-access:viewer"],
            "{k}: two roles of one resource held at once"
        );
        let status = w.command(ALICE, "status").await;
        assert!(
            status.contains("*gcp-access:editor*: expires in")
                && status.contains("*gcp-access:viewer*: expires in"),
            "{k}: {status}"
        );

        // Verbs that name a held resource want the role too.
        for verb in ["revoke gcp-access", "extend gcp-access 1h"] {
            assert_eq!(
                w.command(ALICE, verb).await,
                "'gcp-access' has several roles; say which one: gcp-access:editor, gcp-access:viewer.",
                "{k}: {verb}"
            );
        }

        // Giving the viewer role back leaves the editor role's binding alone.
        let ack = w.command(ALICE, "revoke gcp-access:viewer").await;
        assert!(
            ack.contains("Your GCP workspace access (viewer) has been revoked successfully.")
                || ack.contains("Your GCP workspace access (viewer) is being revoked"),
            "{k}: {ack}"
        );
        w.run_jobs().await;
        assert!(w.members(VIEWER_ROLE).is_empty(), "{k}");
        assert_eq!(w.members(EDITOR_ROLE), ["user:alice@example.com"], "{k}");
        assert_eq!(w.live_grants().await, ["gcp-access:editor"], "{k}");

        // Reconciliation (the GCP sweep of every role) keeps the live role's binding.
        let report = reconcile(&w.app).await;
        assert!(report.is_clean(), "{k}: {:?}", report.errors);
        assert_eq!(report.resources, 4, "{k}: every role checked");
        assert_eq!(w.members(EDITOR_ROLE), ["user:alice@example.com"], "{k}");

        // The audit trail names the role.
        let events = w
            .app
            .engine
            .store()
            .audit_events(&access_core::ports::AuditFilter {
                resource: Some(access_core::ResourceId::parse("gcp-access:editor").unwrap()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.record.kind == access_core::AuditKind::AccessGranted),
            "{k}: {:?}",
            events.iter().map(|e| e.record.kind).collect::<Vec<_>>()
        );
        w.app.store.close().await;
    }
}

/// The request form offers each role as its own choice; submitting a role requests it, and a
/// resource with roles cannot be submitted bare.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_request_form_offers_and_submits_roles() {
    for db in backends().await {
        let w = world(db).await;
        let k = w.kind;
        w.command(ALICE, "").await;
        assert!(
            w.slack
                .wait_until(Duration::from_secs(5), |s| !s.views_opened().is_empty())
                .await,
            "{k}"
        );
        let view = &w.slack.views_opened()[0];
        let options: Vec<(String, String)> = view["blocks"][0]["element"]["options"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["value"].as_str().unwrap().starts_with("gcp-access"))
            .map(|o| {
                (
                    o["value"].as_str().unwrap().to_string(),
                    o["text"]["text"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            options,
            [
                (
                    "gcp-access:editor".to_string(),
                    "gcp-access:editor — Change the project".to_string()
                ),
                (
                    "gcp-access:viewer".to_string(),
                    "gcp-access:viewer — Read the project".to_string()
                ),
            ],
            "{k}"
        );

        let submit = |resource: &str, duration: &str| {
            testkit::slack::view_submission_payload(
                ALICE,
                slack_adapter::blocks::MODAL_CALLBACK_ID,
                json!({
                    "resource": {"value": {"type": "static_select", "selected_option": {"value": resource}}},
                    "duration": {"value": {"type": "plain_text_input", "value": duration}},
                    "justification": {"value": {"type": "plain_text_input", "value": "Deploying the fix"}},
                }),
            )
        };
        // The role's own bounds, under the duration field.
        let r = w.interaction(&submit("gcp-access:editor", "6h")).await;
        assert_eq!(
            r["errors"]["duration"], "Duration must be between 1m and 4h (you asked for 6h).",
            "{k}: {r}"
        );
        // A bare resource (a stale or hand-made form) is refused with its roles.
        let r = w.interaction(&submit("gcp-access", "1h")).await;
        assert_eq!(
            r["errors"]["resource"],
            "'gcp-access' has several roles; say which one: gcp-access:editor, gcp-access:viewer.",
            "{k}: {r}"
        );
        let r = w.interaction(&submit("gcp-access:editor", "2h")).await;
        assert!(r.is_null(), "{k}: an empty answer closes the form: {r}");
        let mut editor = None;
        for _ in 0..500 {
            let found = w
                .app
                .engine
                .store()
                .requests(&Default::default())
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.resource.as_str() == "gcp-access:editor");
            if found.is_some() {
                editor = found;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let editor = editor.unwrap_or_else(|| panic!("{k}: the form's request was not stored"));
        assert_eq!(
            editor.status,
            RequestStatus::Pending,
            "{k}: the editor role's approval"
        );
        assert_eq!(editor.duration.secs(), 2 * 3600, "{k}");
        w.app.store.close().await;
    }
}

/// A configuration whose role has a bad name is refused at start, naming the resource and role.
#[tokio::test]
async fn a_bad_role_id_stops_the_start() {
    for db in backends().await {
        let bad = CONFIG.replace("id = \"editor\"", "id = \"Editor\"");
        let built = App::build(
            Config::from_toml(&bad, "roles.toml").unwrap(),
            Env {
                database_url: db.url.clone(),
                ..Env::default()
            },
            Overrides::default(),
        )
        .await;
        let Err(err) = built else {
            panic!("{}: a bad role id must stop the start", db.kind)
        };
        assert!(
            err.to_string()
                .contains("resource 'gcp-access': role 'Editor' is not a valid role name"),
            "{}: {err}",
            db.kind
        );
    }
}

/// Two Cloud Connexa groups as two roles of one network: a person may hold both; giving one
/// back, or reconciling, leaves the other group's membership alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_cloud_connexa_groups_are_two_roles_held_independently() {
    for db in backends().await {
        let w = world(db).await;
        let k = w.kind;
        for role in ["users", "admins"] {
            let ack = w
                .slash(
                    "/vpn-access",
                    ALICE,
                    &format!("request dev-network:{role} 2 VPN work"),
                )
                .await;
            assert!(ack.contains("approved automatically"), "{k}: {ack}");
        }
        w.run_jobs().await;
        let group = |name: &str| {
            w.cc.group_by_name(name)
                .unwrap_or_else(|| panic!("{k}: group {name} was not created: {:?}", w.cc.groups()))
                .id
        };
        let (users, admins) = (group("dev-network-users"), group("dev-admins"));
        let groups_of_alice = || {
            let mut g =
                w.cc.user_by_email("alice@example.com")
                    .expect("user created")
                    .secondary_group_ids;
            g.sort();
            g
        };
        let mut both = vec![users.clone(), admins.clone()];
        both.sort();
        assert_eq!(groups_of_alice(), both, "{k}");
        let status = w.slash("/vpn-access", ALICE, "status").await;
        assert!(
            status.contains("*Network:* dev-network (admins)")
                && status.contains("*Network:* dev-network (users)"),
            "{k}: {status}"
        );

        let ack = w
            .slash("/vpn-access", ALICE, "revoke dev-network:admins")
            .await;
        assert!(
            ack.contains("VPN access to dev-network (admins)"),
            "{k}: {ack}"
        );
        w.run_jobs().await;
        assert_eq!(groups_of_alice(), [users.as_str()], "{k}");

        let report = reconcile(&w.app).await;
        assert!(report.is_clean(), "{k}: {:?}", report.errors);
        assert_eq!(report.repairs, 0, "{k}: nothing to repair");
        assert_eq!(groups_of_alice(), [users.as_str()], "{k}");
        assert_eq!(w.live_grants().await, ["dev-network:users"], "{k}");
        w.app.store.close().await;
    }
}
