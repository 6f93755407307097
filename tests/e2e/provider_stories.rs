//! The source documents' stories end to end, through the real `gatehouse-server` and
//! `gatehouse-cleanup` binaries against the fakes of `testkit` (Slack, Cloud Connexa, GCP IAM and
//! Resource Manager with its token endpoint, BigQuery), on SQLite and (with `TEST_DATABASE_URL`)
//! PostgreSQL:
//!
//! 1. Cloud Connexa (issue 4): `/vpn-access request dev-network …` → approval message → Approve →
//!    user and group created, membership through `secondaryGroupIds` → DMs → expiry → membership
//!    removed → expiry DM; the document's bare-hours form (`4`); drift repaired by
//!    `gatehouse-cleanup`; self-revocation.
//! 2. GCP IAM (issue 5): `request gcp-access "…"` in a DM → service account, key and conditional
//!    binding → key file uploaded to the DM → `revoke gcp-access` → account and binding gone; the
//!    key never reaches the database or the log.
//! 3. BigQuery export (issue 7), inside both: `bigquery init` creates the tables, every audit
//!    event becomes one `access_events` row and every grant one `access_grants` row with the
//!    document's values, and an outage while grants happen loses and duplicates nothing.
//!
//! Where the Slack side words something differently from the source documents, the story does not
//! fail: it prints the difference (`DOC GAP`) so the report can name it.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use testkit::bigquery::FakeBigQuery;
use testkit::cloudconnexa::{FakeCloudConnexa, FakeConfig};
use testkit::db::{TestDb, backends};
use testkit::gcp::FakeGcp;
use testkit::slack::{FakeSlack, FakeUser, dm_id};

use crate::helpers::*;
use crate::story_helpers::*;

const BQ_PROJECT: &str = "gatehouse-audit";
const BQ_DATASET: &str = "ci_chat_bot";
const APPROVE: &str = "gatehouse_approve";

fn ts(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

fn bq_env(bq: &FakeBigQuery) -> Vec<(&'static str, String)> {
    vec![
        ("BIGQUERY_PROJECT", BQ_PROJECT.to_string()),
        ("BIGQUERY_API_URL", bq.base_url()),
    ]
}

fn slack_env(slack: &FakeSlack) -> Vec<(&'static str, String)> {
    vec![
        ("SLACK_BOT_TOKEN", slack.token().to_string()),
        ("SLACK_SIGNING_SECRET", SIGNING_SECRET.to_string()),
        ("SLACK_API_URL", slack.api_url()),
    ]
}

/// `gatehouse-cleanup bigquery init`: refused while the dataset is missing, creates the dataset
/// (with `--location`) and both tables, and is idempotent.
fn bigquery_init(db: &TestDb, config: &std::path::Path, env: &[(&str, String)], bq: &FakeBigQuery) {
    let no_dataset = cleanup(config, &db.url, env, &["bigquery", "init"]);
    assert_eq!(
        no_dataset.status.code(),
        Some(2),
        "{}",
        out_text(&no_dataset)
    );
    assert!(!bq.has_dataset(BQ_PROJECT, BQ_DATASET));

    let first = cleanup(
        config,
        &db.url,
        env,
        &["bigquery", "init", "--location", "US"],
    );
    assert!(first.status.success(), "{}", out_text(&first));
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(stdout.contains("table access_grants: Created"), "{stdout}");
    assert!(stdout.contains("table access_events: Created"), "{stdout}");
    assert!(bq.has_dataset(BQ_PROJECT, BQ_DATASET));

    // The GCP document's `access_grants` schema, column for column.
    let grants = bq
        .table(BQ_PROJECT, BQ_DATASET, "access_grants")
        .expect("access_grants created");
    let columns: Vec<(String, String)> = grants["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("timestamp", "TIMESTAMP"),
        ("command", "STRING"),
        ("user_email", "STRING"),
        ("slack_user_id", "STRING"),
        ("justification", "STRING"),
        ("resource", "STRING"),
        ("project_id", "STRING"),
        ("expires_at", "TIMESTAMP"),
        ("service_account_email", "STRING"),
    ];
    assert_eq!(
        columns,
        expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    );
    assert!(
        bq.table(BQ_PROJECT, BQ_DATASET, "access_events").is_some(),
        "access_events created"
    );

    let again = cleanup(config, &db.url, env, &["bigquery", "init"]);
    assert!(again.status.success(), "{}", out_text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("AlreadyExisted"));
}

/// Waits until the fake BigQuery holds exactly one `access_events` row per audit event (matched
/// by event id, with `insertId` = event id) and no duplicate; returns the events and the wait.
async fn wait_exported(api: &Api, bq: &FakeBigQuery, timeout: Duration) -> (Vec<Value>, Duration) {
    let start = Instant::now();
    loop {
        let events = audit_events(api).await;
        let audit_ids: BTreeSet<String> = events
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
        let rows = bq.stored_rows(BQ_PROJECT, BQ_DATASET, "access_events");
        let row_ids: Vec<String> = rows
            .iter()
            .map(|r| r.json["id"].as_str().unwrap().to_string())
            .collect();
        let unique: BTreeSet<String> = row_ids.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            row_ids.len(),
            "duplicate access_events rows: {row_ids:?}"
        );
        for r in &rows {
            assert_eq!(
                r.insert_id.as_deref(),
                r.json["id"].as_str(),
                "insertId = event id"
            );
        }
        assert!(
            unique.is_subset(&audit_ids),
            "rows for events the audit table does not have: {:?}",
            unique.difference(&audit_ids).collect::<Vec<_>>()
        );
        if unique == audit_ids {
            // Every row carries the event as the audit table has it.
            let by_id: HashMap<&str, &Value> = events
                .iter()
                .map(|e| (e["id"].as_str().unwrap(), e))
                .collect();
            for r in &rows {
                let e = by_id[r.json["id"].as_str().unwrap()];
                assert_eq!(r.json["kind"], e["kind"]);
                assert_eq!(r.json["seq"].as_i64(), e["seq"].as_i64());
                assert_eq!(r.json["hash"], e["hash"]);
                assert_eq!(r.json["prev_hash"], e["prev_hash"]);
                assert_eq!(ts(&r.json["time"]), ts(&e["at"]));
                let details: Value =
                    serde_json::from_str(r.json["details"].as_str().unwrap()).unwrap();
                assert_eq!(details, e["details"]);
            }
            return (events, start.elapsed());
        }
        assert!(
            start.elapsed() < timeout,
            "BigQuery still misses {} of {} events after {timeout:?}",
            audit_ids.difference(&unique).count(),
            audit_ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `access_grants` row of an `access_granted` event.
fn grant_row(bq: &FakeBigQuery, granted: &Value) -> serde_json::Map<String, Value> {
    let id = format!("{}-grant", granted["id"].as_str().unwrap());
    let rows: Vec<_> = bq
        .stored_rows(BQ_PROJECT, BQ_DATASET, "access_grants")
        .into_iter()
        .filter(|r| r.insert_id.as_deref() == Some(id.as_str()))
        .collect();
    assert_eq!(rows.len(), 1, "one access_grants row for event {id}");
    rows[0].json.clone()
}

/// A gauge from `/metrics`.
async fn metric(server: &Server, name: &str) -> f64 {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn print_gaps(story: &str, kind: &str, gaps: &[String]) {
    for g in gaps {
        eprintln!("DOC GAP ({story}, {kind}): {g}");
    }
}

// ------------------------------------------------------------------------------------------------
// 1. Cloud Connexa

const CC_CONFIG: &str = r#"
[server]
max_idle_secs = 1

[[resources]]
id = "dev-network"
description = "Development VPN"
provider = "cloudconnexa"
min_duration = "1s"
default_duration = "4h"
max_duration = "24h"
approval = { mode = "approvers", approvers = { users = ["UAPPROVER"] } }

[resources.settings]
network = "dev-network"
"#;

const DANA: &str = "UDANA";
const DANA_EMAIL: &str = "dana.dev@example.com";
const ERIK: &str = "UERIK";
const ERIK_EMAIL: &str = "erik.ops@example.com";
const APPROVER: &str = "UAPPROVER";
const APPROVALS: &str = "C0VPNAPPROVALS";
const GROUP: &str = "dev-network-temp";
const REASON: &str = "Running database migration";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudconnexa_vpn_access_story_through_slack() {
    for db in backends().await {
        let started = Instant::now();
        cloudconnexa_story(&db).await;
        eprintln!(
            "{}: Cloud Connexa story took {:?}",
            db.kind,
            started.elapsed()
        );
    }
}

/// Waits for the approval message about `user` in the approvers' channel.
async fn approval_message(slack: &FakeSlack, user: &str) -> testkit::slack::FakeMessage {
    let mention = format!("<@{user}>");
    eventually("the approval message", Duration::from_secs(10), || {
        slack
            .messages_in(APPROVALS)
            .into_iter()
            .find(|m| m.all_text().contains(&mention))
    })
    .await
    .0
}

fn approve_value(m: &testkit::slack::FakeMessage) -> String {
    m.buttons()
        .into_iter()
        .find(|(a, _)| a == APPROVE)
        .unwrap_or_else(|| panic!("no Approve button: {:?}", m.blocks))
        .1
}

/// Whether the user with `email` is in group `GROUP` (secondary membership) in the fake.
fn member(cc: &FakeCloudConnexa, email: &str) -> bool {
    match (cc.user_by_email(email), cc.group_by_name(GROUP)) {
        (Some(u), Some(g)) => u.secondary_group_ids.contains(&g.id),
        _ => false,
    }
}

async fn cloudconnexa_story(db: &TestDb) {
    let kind = db.kind;
    let mut gaps = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let slack = FakeSlack::start().await;
    slack.add_user(FakeUser::new(DANA, "dana").email(DANA_EMAIL));
    slack.add_user(FakeUser::new(ERIK, "erik").email(ERIK_EMAIL));
    slack.add_user(FakeUser::new(APPROVER, "alice").email("alice@example.com"));
    slack.add_channel(APPROVALS, "vpn-access-approvals");
    let cc = FakeCloudConnexa::start(FakeConfig::fast()).await;
    cc.seed_network("dev-network");
    let bq = FakeBigQuery::start().await;
    // Remember no insertId: a row the client sends twice is stored twice and caught below.
    bq.set_dedup_window(Some(Duration::ZERO));

    let config = write_config(dir.path(), CC_CONFIG);
    let mut env = slack_env(&slack);
    env.extend([
        ("APPROVAL_CHANNEL", "vpn-access-approvals".to_string()),
        ("CLOUDCONNEXA_API_URL", cc.url()),
        ("CLOUDCONNEXA_CLIENT_ID", cc.client_id()),
        ("CLOUDCONNEXA_CLIENT_SECRET", cc.client_secret()),
        (
            "NETWORK_GROUP_MAPPING",
            format!(r#"{{"dev-network": "{GROUP}"}}"#),
        ),
        (
            "GCP_ACCESS_TOKEN",
            "ya29.e2e-static-bigquery-token".to_string(),
        ),
    ]);
    env.extend(bq_env(&bq));
    bigquery_init(db, &config, &env, &bq);

    let server = Server::start(
        &ServerOptions {
            config: &config,
            database_url: &db.url,
            admin_token: Some(ADMIN_TOKEN),
            extra_env: env.clone(),
        },
        dir.path(),
    );
    let api = Api::new(&server, Some(ADMIN_TOKEN));

    // --- Dana: the document's story with a 3-second duration --------------------------------
    let (status, ack, _) = slash(
        &server,
        &slack,
        "/vpn-access",
        DANA,
        &format!("request dev-network 3s {REASON}"),
    )
    .await;
    assert_eq!(status, 200, "{kind}: {ack}");
    let ack_text = ack["text"].as_str().unwrap_or_default().to_string();
    assert!(
        ack_text.contains("Access request submitted for dev-network")
            && ack_text.contains("You will be notified once approved or denied."),
        "{kind}: {ack}"
    );
    let approval = approval_message(&slack, DANA).await;
    let text = approval.all_text();
    for want in ["dev-network", REASON, "*Duration:* 3 seconds", "<@UDANA>"] {
        assert!(
            text.contains(want),
            "{kind}: approval message lacks {want:?}: {text}"
        );
    }
    let request_id = approve_value(&approval);

    // The requester cannot approve their own request: refused, to them alone, nothing granted.
    let (status, self_url) = click(&server, &slack, DANA, APPROVE, &request_id, &approval).await;
    assert_eq!(status, 200);
    let (refusal, _) = eventually("the self-approval refusal", Duration::from_secs(5), || {
        slack.responses(&self_url).into_iter().next()
    })
    .await;
    assert!(
        refusal.to_string().contains("Nothing was changed"),
        "{kind}: {refusal}"
    );
    assert!(
        cc.user_by_email(DANA_EMAIL).is_none(),
        "{kind}: self-approval granted access"
    );

    // An approver clicks Approve.
    let clicked = Instant::now();
    let (status, _) = click(&server, &slack, APPROVER, APPROVE, &request_id, &approval).await;
    assert_eq!(status, 200);
    let (_, grant_took) = eventually("Dana in the group", Duration::from_secs(15), || {
        member(&cc, DANA_EMAIL).then_some(())
    })
    .await;
    let dana = cc.user_by_email(DANA_EMAIL).unwrap();
    let group = cc.group_by_name(GROUP).unwrap();
    assert_eq!(dana.secondary_group_ids, vec![group.id.clone()], "{kind}");
    assert_eq!(
        dana.group_id,
        cc.default_group_id(),
        "{kind}: primary group untouched"
    );
    assert_eq!(
        dana.username, "dana.dev",
        "{kind}: name from the e-mail, as in the document"
    );
    eprintln!("{kind}: Approve click → membership in Cloud Connexa: {grant_took:?}");

    let (granted_dm, _) = eventually("the access-granted DM", Duration::from_secs(10), || {
        slack
            .dms_to(DANA)
            .into_iter()
            .find(|m| m.all_text().contains("Access granted"))
    })
    .await;
    assert!(granted_dm.all_text().contains("dev-network"), "{kind}");
    let dms = slack.dms_to(DANA);
    let approved_dm = dms
        .iter()
        .find(|m| m.text.contains("has been approved"))
        .unwrap_or_else(|| panic!("{kind}: no approval DM: {dms:?}"));
    assert!(approved_dm.all_text().contains("<@UAPPROVER>"), "{kind}");
    doc_check(
        &mut gaps,
        "approval DM",
        &approved_dm.all_text(),
        "Your VPN access request for dev-network has been approved!",
    );
    // The approval message is updated in place for everyone: approved, no buttons left.
    let (updated, _) = eventually(
        "the approval message updated",
        Duration::from_secs(10),
        || {
            slack
                .message(&approval.channel, &approval.ts)
                .filter(|m| m.all_text().contains("APPROVED") && m.buttons().is_empty())
        },
    )
    .await;
    assert!(updated.all_text().contains("<@UAPPROVER>"), "{kind}");
    assert!(!updated.history.is_empty(), "{kind}: updated, not reposted");

    // Expiry: the membership goes, the person is told.
    eventually("Dana's membership removed", Duration::from_secs(15), || {
        (!member(&cc, DANA_EMAIL)).then_some(())
    })
    .await;
    let removed_at = Utc::now();
    let (expired_dm, _) = eventually("the expiry DM", Duration::from_secs(10), || {
        slack
            .dms_to(DANA)
            .into_iter()
            .find(|m| m.text.contains("has expired"))
    })
    .await;
    assert_eq!(
        expired_dm.text, "Your access to dev-network has expired.",
        "{kind}"
    );
    doc_check(
        &mut gaps,
        "expiry DM",
        &expired_dm.all_text(),
        "Your temporary access to *dev-network* has expired.\nIf you need continued access, please submit a new request.",
    );
    let dana_after = cc.user_by_email(DANA_EMAIL).unwrap();
    assert!(dana_after.secondary_group_ids.is_empty(), "{kind}");
    assert_eq!(dana_after.group_id, dana.group_id, "{kind}");
    eprintln!(
        "{kind}: Approve click → membership removed at expiry: {:?} (3 s grant)",
        clicked.elapsed()
    );

    let events = audit_events(&api).await;
    let dana_events: Vec<Value> = events
        .iter()
        .filter(|e| {
            e["request_id"] == request_id.as_str() || e["subject"].as_str() == Some("T0FAKE/UDANA")
        })
        .cloned()
        .collect();
    let k = kinds(&dana_events);
    for want in [
        "access_requested",
        "access_approved",
        "access_granted",
        "access_expired",
    ] {
        assert!(k.iter().any(|x| x == want), "{kind}: no {want} in {k:?}");
    }
    assert!(position(&dana_events, "access_requested") < position(&dana_events, "access_approved"));
    assert!(position(&dana_events, "access_approved") < position(&dana_events, "access_granted"));
    assert!(position(&dana_events, "access_granted") < position(&dana_events, "access_expired"));
    let provider_events = event_names(&dana_events, "provider_event");
    for want in [
        "user_created",
        "group_created",
        "user_added_to_group",
        "user_removed_from_group",
    ] {
        assert!(
            provider_events.iter().any(|x| x == want),
            "{kind}: no provider event {want} in {provider_events:?}"
        );
    }
    let granted = &dana_events[position(&dana_events, "access_granted")];
    let expires_at = ts(&granted["details"]["expires_at"]);
    let lag = (removed_at - expires_at).num_milliseconds();
    eprintln!("{kind}: membership removal observed {lag} ms after expires_at");
    assert!(lag < 5_000, "{kind}: revoked {lag} ms after expiry");

    // --- Erik: the literal `4` (bare hours), while BigQuery is down ------------------------
    bq.set_outage(true);
    let outage_start = Instant::now();
    let (status, ack, _) = slash(
        &server,
        &slack,
        "/vpn-access",
        ERIK,
        &format!("request dev-network 4 {REASON}"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        ack["text"]
            .as_str()
            .unwrap_or_default()
            .contains("(4 hours)"),
        "{kind}: {ack}"
    );
    let approval = approval_message(&slack, ERIK).await;
    assert!(
        approval.all_text().contains("*Duration:* 4 hours"),
        "{kind}: {}",
        approval.all_text()
    );
    doc_check(
        &mut gaps,
        "approval message",
        &approval.all_text(),
        &format!(
            "*VPN Access Request*\n*User:* <@{ERIK}>\n*Network:* dev-network\n*Duration:* 4 hours\n*Reason:* {REASON}"
        ),
    );
    let erik_request = approve_value(&approval);
    click(&server, &slack, APPROVER, APPROVE, &erik_request, &approval).await;
    let (_, erik_took) = eventually("Erik in the group", Duration::from_secs(15), || {
        member(&cc, ERIK_EMAIL).then_some(())
    })
    .await;
    // The grant did not wait for the audit export.
    assert!(bq.calls().outage_refused > 0 || outage_start.elapsed() < Duration::from_secs(2));
    eprintln!("{kind}: grant during the BigQuery outage took {erik_took:?}");
    let (grants, _) = api
        .wait_for("/api/grants?limit=100", Duration::from_secs(10), |b| {
            b.as_array().is_some_and(|g| {
                g.iter()
                    .any(|g| g["subject"]["user_id"] == ERIK && g["status"] == "active")
            })
        })
        .await;
    let erik_grant = grants
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["subject"]["user_id"] == ERIK)
        .unwrap()
        .clone();
    let hours = (ts(&erik_grant["expires_at"]) - ts(&erik_grant["granted_at"])).num_minutes();
    assert!(
        (239..=241).contains(&hours),
        "{kind}: a bare 4 means 4 hours, got {hours} min"
    );

    // `status` and `list` while Erik's access is live.
    let (_, status_ack, _) = slash(&server, &slack, "/vpn-access", ERIK, "status").await;
    let status_text = status_ack["text"].as_str().unwrap_or_default().to_string();
    assert!(status_text.contains("dev-network"), "{kind}: {status_ack}");
    doc_check(
        &mut gaps,
        "status",
        &status_text,
        "Your active VPN access grants:\n• *Network:* dev-network - *Expires in:* 3h 59m",
    );
    let (_, list_ack, _) = slash(&server, &slack, "/vpn-access", ERIK, "list").await;
    let list_text = list_ack["text"].as_str().unwrap_or_default().to_string();
    assert!(list_text.contains("dev-network"), "{kind}: {list_ack}");
    doc_check(
        &mut gaps,
        "list (networks from GET /api/v1/networks)",
        &list_text,
        "Available networks:\n• dev-network",
    );

    // Keep BigQuery down a few seconds more, so exports pile up and retry.
    while outage_start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = bq.calls().outage_refused;
    assert!(
        refused > 0,
        "{kind}: nothing was exported during the outage"
    );
    let backlog = metric(&server, "gatehouse_audit_export_backlog").await;
    let backlog_age = metric(&server, "gatehouse_audit_export_backlog_oldest_seconds").await;
    assert!(backlog > 0.0, "{kind}: the backlog metric shows the outage");
    eprintln!("{kind}: export backlog during the outage: {backlog} events, oldest {backlog_age} s");
    bq.set_outage(false);
    let outage_end = Instant::now();
    eprintln!(
        "{kind}: BigQuery outage of {:?}: {refused} insert calls refused",
        outage_start.elapsed()
    );

    // --- Drift: a stray member and a missing one; gatehouse-cleanup repairs both -------------
    let stray_id = cc.seed_user("mallory@example.com", None, &[&group.id]);
    let erik_id = cc.user_by_email(ERIK_EMAIL).unwrap().id;
    cc.edit_user(&erik_id, |u| {
        u.secondary_group_ids.retain(|g| *g != group.id)
    });
    assert!(!member(&cc, ERIK_EMAIL));
    let out = cleanup(&config, &db.url, &env, &[]);
    assert!(out.status.success(), "{kind}: {}", out_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("reconciled 1 resource(s): 2 repair(s)"),
        "{kind}: {}",
        out_text(&out)
    );
    assert!(
        member(&cc, ERIK_EMAIL),
        "{kind}: missing membership restored"
    );
    assert!(
        !cc.user(&stray_id)
            .unwrap()
            .secondary_group_ids
            .contains(&group.id),
        "{kind}: stray membership removed"
    );
    let events = audit_events(&api).await;
    let repairs: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "drift_repaired")
        .collect();
    assert_eq!(repairs.len(), 2, "{kind}: {repairs:?}");
    let repaired = format!("{repairs:?}");
    assert!(
        repaired.contains("mallory@example.com") && repaired.contains(ERIK_EMAIL),
        "{kind}: {repaired}"
    );
    let mut names = event_names(&events, "drift_repaired");
    names.sort();
    assert_eq!(
        names,
        ["user_added_to_group", "user_removed_from_group"],
        "{kind}"
    );
    // A second run finds nothing to repair.
    let again = cleanup(&config, &db.url, &env, &[]);
    assert!(again.status.success(), "{kind}: {}", out_text(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 repair(s)"),
        "{kind}: {}",
        out_text(&again)
    );

    // --- Erik gives the access back early ------------------------------------------------------
    let (status, ack, _) = slash(&server, &slack, "/vpn-access", ERIK, "revoke dev-network").await;
    assert_eq!(status, 200);
    let ack_text = ack["text"].as_str().unwrap_or_default();
    assert!(
        ack_text.contains("Your VPN access to dev-network has been revoked successfully.")
            || ack_text.contains("Your VPN access to dev-network is being revoked"),
        "{kind}: {ack}"
    );
    eventually("Erik's membership removed", Duration::from_secs(10), || {
        (!member(&cc, ERIK_EMAIL)).then_some(())
    })
    .await;
    eventually("the revocation DM", Duration::from_secs(10), || {
        slack
            .dms_to(ERIK)
            .into_iter()
            .find(|m| m.text == "Your access to dev-network has been revoked.")
    })
    .await;

    // --- BigQuery: everything arrives once, nothing is lost --------------------------------
    let (events, drained) = wait_exported(&api, &bq, Duration::from_secs(45)).await;
    eprintln!(
        "{kind}: all {} audit events in BigQuery {:?} after the outage ended ({:?} after the last change)",
        events.len(),
        outage_end.elapsed(),
        drained
    );
    let erik_events: Vec<Value> = events
        .iter()
        .filter(|e| e["subject"].as_str() == Some("T0FAKE/UERIK"))
        .cloned()
        .collect();
    assert!(
        kinds(&erik_events).iter().any(|k| k == "access_revoked"),
        "{kind}"
    );
    let granted: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "access_granted")
        .collect();
    assert_eq!(granted.len(), 2, "{kind}");
    assert_eq!(
        bq.row_count(BQ_PROJECT, BQ_DATASET, "access_grants"),
        2,
        "{kind}"
    );
    for (g, email, user) in [
        (granted[0], DANA_EMAIL, DANA),
        (granted[1], ERIK_EMAIL, ERIK),
    ] {
        let row = grant_row(&bq, g);
        assert_eq!(row["command"], "request", "{kind}");
        assert_eq!(row["user_email"], email, "{kind}");
        assert_eq!(row["slack_user_id"], user, "{kind}");
        assert_eq!(row["justification"], REASON, "{kind}");
        assert_eq!(row["resource"], "dev-network", "{kind}");
        assert_eq!(row["project_id"], "", "{kind}: no project outside GCP");
        assert_eq!(
            row["service_account_email"], "",
            "{kind}: empty outside GCP"
        );
        assert_eq!(
            ts(&row["expires_at"]),
            ts(&g["details"]["expires_at"]),
            "{kind}"
        );
        assert_eq!(ts(&row["timestamp"]), ts(&g["at"]), "{kind}");
    }
    assert_eq!(bq.calls().deduplicated_rows, 0);
    assert_eq!(
        metric(&server, "gatehouse_audit_export_backlog").await,
        0.0,
        "{kind}"
    );
    assert_eq!(
        metric(&server, "gatehouse_audit_export_dead").await,
        0.0,
        "{kind}"
    );
    let (_, verify) = api.get("/api/audit/verify").await;
    assert_eq!(verify["ok"], true, "{kind}: {verify}");
    let log = server.log_text();
    assert!(
        !log.contains(&cc.client_secret()),
        "{kind}: client secret in the log"
    );
    assert!(!log.contains(slack.token()), "{kind}: bot token in the log");
    assert_eq!(
        cc.throttled_count(),
        0,
        "{kind}: the client stayed within the rate limit"
    );
    print_gaps("Cloud Connexa", kind, &gaps);
}

// ------------------------------------------------------------------------------------------------
// 2. GCP IAM

const GCP_PROJECT: &str = "gatehouse-e2e-proj";
const GCP_ROLE: &str = "projects/gatehouse-e2e-proj/roles/chat_bot_user";
const JANE: &str = "UJANE";
const JANE_EMAIL: &str = "jane.doe@example.com";
const JUSTIFICATION: &str = "Need to debug CI infrastructure issues";

const GCP_CONFIG: &str = r#"
[server]
max_idle_secs = 1

[[resources]]
id = "gcp-access"
description = "Temporary access to the GCP workspace"
provider = "gcp-iam"
min_duration = "1h"
default_duration = "7d"
max_duration = "7d"
extendable = false
eligibility = [{ email_domain = ["example.com"] }]
approval = { mode = "auto" }

[resources.settings]
project = "gatehouse-e2e-proj"
role = "projects/gatehouse-e2e-proj/roles/chat_bot_user"
email_domain = "example.com"
resource_cleanup_days = 7
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcp_access_story_through_slack_dm() {
    for db in backends().await {
        let started = Instant::now();
        gcp_story(&db).await;
        eprintln!("{}: GCP story took {:?}", db.kind, started.elapsed());
    }
}

fn unrelated_policy() -> Value {
    json!({
        "bindings": [
            {"role": "roles/viewer", "members": ["user:owner@example.com"]},
            {"role": "roles/storage.objectViewer", "members": ["user:auditor@example.com"],
             "condition": {"title": "office hours", "expression": "request.time.getHours(\"Europe/Berlin\") >= 9"}}
        ],
        "auditConfigs": [{"service": "allServices", "auditLogConfigs": [{"logType": "DATA_READ"}]}]
    })
}

/// The replies the bot posted into Jane's DM after the first `skip` messages.
fn new_dms(slack: &FakeSlack, skip: usize) -> Vec<testkit::slack::FakeMessage> {
    slack.dms_to(JANE).into_iter().skip(skip).collect()
}

async fn gcp_story(db: &TestDb) {
    let kind = db.kind;
    let mut gaps = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let slack = FakeSlack::start().await;
    slack.add_user(FakeUser::new(JANE, "jane").email(JANE_EMAIL));
    let gcp = FakeGcp::start().await;
    gcp.add_project(GCP_PROJECT);
    gcp.set_policy(GCP_PROJECT, unrelated_policy());
    // IAM is eventually consistent: a new account is invisible for a moment.
    gcp.set_not_found_window(Duration::from_millis(1200));
    let bq = FakeBigQuery::start().await;
    bq.set_dedup_window(Some(Duration::ZERO));

    let config = write_config(dir.path(), GCP_CONFIG);
    let mut env = slack_env(&slack);
    env.extend([
        // The bot's key: both the IAM provider and the BigQuery sink get tokens with it from the
        // fake's token endpoint (its `token_uri`).
        ("GCP_SERVICE_ACCOUNT_JSON", gcp.service_account_key_json()),
        ("GCP_IAM_API_URL", gcp.url()),
        ("GCP_CRM_API_URL", gcp.url()),
    ]);
    env.extend(bq_env(&bq));
    bigquery_init(db, &config, &env, &bq);
    let server = Server::start(
        &ServerOptions {
            config: &config,
            database_url: &db.url,
            admin_token: Some(ADMIN_TOKEN),
            extra_env: env.clone(),
        },
        dir.path(),
    );
    let api = Api::new(&server, Some(ADMIN_TOKEN));

    // --- request in a DM -----------------------------------------------------------------------
    let sent = Instant::now();
    let status = dm(
        &server,
        JANE,
        &format!(r#"request gcp-access "{JUSTIFICATION}""#),
    )
    .await;
    assert_eq!(status, 200);
    let (file, file_took) = eventually("the key file in the DM", Duration::from_secs(30), || {
        slack.files().into_iter().next()
    })
    .await;
    eprintln!("{kind}: DM → key file uploaded: {file_took:?} (with a 1.2 s IAM not-found window)");
    assert_eq!(
        file.filename, "gcp-access-jane-doe-at-example-com.json",
        "{kind}"
    );
    assert_eq!(
        file.channel_id.as_deref(),
        Some(dm_id(JANE).as_str()),
        "{kind}"
    );
    let comment = file.initial_comment.clone().unwrap_or_default();
    assert!(
        comment.contains("private key"),
        "{kind}: security warning: {comment}"
    );
    // The external upload flow, in order.
    let methods: Vec<String> = slack
        .calls()
        .into_iter()
        .filter(|c| c.status == 200 && c.error.is_none())
        .map(|c| c.method)
        .collect();
    let at = |m: &str| {
        methods
            .iter()
            .position(|x| x == m)
            .unwrap_or_else(|| panic!("{kind}: no successful {m} in {methods:?}"))
    };
    assert!(
        at("files.getUploadURLExternal") < at("upload"),
        "{methods:?}"
    );
    assert!(
        at("upload") < at("files.completeUploadExternal"),
        "{methods:?}"
    );
    assert!(
        slack.calls_to("files.upload").is_empty(),
        "{kind}: the retired files.upload"
    );

    let key: Value = serde_json::from_slice(&file.content).unwrap();
    assert_eq!(key["type"], "service_account", "{kind}");
    let sa = key["client_email"].as_str().unwrap().to_string();
    assert!(sa.starts_with("jane-dot-doe-"), "{kind}: {sa}");
    assert!(
        sa.ends_with("@gatehouse-e2e-proj.iam.gserviceaccount.com"),
        "{kind}: {sa}"
    );
    let private_key = key["private_key"].as_str().unwrap().to_string();
    assert!(
        private_key.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{kind}"
    );

    // The fake: one account, named and described as the document says, one key, one binding.
    let accounts = gcp.service_accounts(GCP_PROJECT);
    assert_eq!(accounts.len(), 1, "{kind}: {accounts:?}");
    let account = &accounts[0];
    assert_eq!(account.email, sa, "{kind}");
    assert_eq!(account.display_name, JANE_EMAIL, "{kind}");
    assert!(
        account.description.contains(JUSTIFICATION),
        "{kind}: {}",
        account.description
    );
    assert_eq!(account.keys.len(), 1, "{kind}");
    let policy = gcp.policy(GCP_PROJECT);
    let bindings = policy["bindings"].as_array().unwrap();
    let member = format!("serviceAccount:{sa}");
    let ours: Vec<&Value> = bindings
        .iter()
        .filter(|b| {
            b["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m == &member)
        })
        .collect();
    assert_eq!(ours.len(), 1, "{kind}: {policy}");
    let b = ours[0];
    assert_eq!(b["role"], GCP_ROLE, "{kind}");
    assert_eq!(b["condition"]["title"], "Temp Access", "{kind}");
    let expr = b["condition"]["expression"].as_str().unwrap();
    let until = expr
        .strip_prefix("request.time < timestamp('")
        .and_then(|s| s.strip_suffix("')"))
        .unwrap_or_else(|| panic!("{kind}: expression {expr}"));
    assert_eq!(
        b["condition"]["description"],
        format!("Access expires on {until}. Justification: {JUSTIFICATION}"),
        "{kind}"
    );
    let expires_at = ts(&json!(until));
    let days = (expires_at - Utc::now()).num_hours();
    assert!((167..=168).contains(&days), "{kind}: 7 days, got {days} h");
    for unrelated in unrelated_policy()["bindings"].as_array().unwrap() {
        assert!(
            bindings.contains(unrelated),
            "{kind}: {unrelated} lost: {policy}"
        );
    }
    assert_eq!(
        policy["auditConfigs"],
        unrelated_policy()["auditConfigs"],
        "{kind}"
    );

    // The messages in the DM: the reply to the command, then the document's success message.
    let (granted_dm, _) = eventually("the access-granted DM", Duration::from_secs(10), || {
        slack
            .dms_to(JANE)
            .into_iter()
            .find(|m| m.all_text().contains("You have been granted access"))
    })
    .await;
    eprintln!("{kind}: DM → success message: {:?}", sent.elapsed());
    let reply = slack
        .dms_to(JANE)
        .into_iter()
        .next()
        .map(|m| m.all_text())
        .unwrap_or_default();
    assert!(
        reply.contains("gcp-access"),
        "{kind}: first reply {reply:?}"
    );
    let text = granted_dm.all_text();
    for want in [
        "You have been granted access to project \"gatehouse-e2e-proj\".",
        "You will have access to the project for the next 7 days (until ",
        "7 days from now).",
        "You are responsible for deleting resources you create within this account, however, resources older than 7 days will be deleted automatically.",
        "To use the service account key:\n1. Download the JSON file from Slack\n2. Set environment variable: export GOOGLE_APPLICATION_CREDENTIALS=/path/to/key.json\n3. Access will expire in 7 days",
        "Justification: Need to debug CI infrastructure issues",
    ] {
        assert!(
            text.contains(want),
            "{kind}: success message lacks {want:?}:\n{text}"
        );
    }
    // The document shows the expiry in the requester's time zone (Europe/London here: GMT in
    // winter, like the document's `2025-11-24 15:30 MST`).
    let local = expires_at.format("%Y-%m-%d %H:%M").to_string();
    doc_check(
        &mut gaps,
        "success message expiry",
        &text,
        &format!("(until {local} GMT, 7 days from now)"),
    );
    assert!(!text.contains(&private_key), "{kind}: the key in a message");

    // --- re-request while active: a new key for the same account, the expiry unchanged -------
    let before = slack.dms_to(JANE).len();
    let status = dm(
        &server,
        JANE,
        &format!(r#"request gcp-access "{JUSTIFICATION}""#),
    )
    .await;
    assert_eq!(status, 200);
    let (files, _) = eventually("a second key file", Duration::from_secs(30), || {
        let f = slack.files();
        (f.len() == 2).then_some(f)
    })
    .await;
    assert_eq!(files[1].filename, file.filename, "{kind}");
    let key2: Value = serde_json::from_slice(&files[1].content).unwrap();
    assert_eq!(key2["client_email"], sa.as_str(), "{kind}: same account");
    assert_ne!(
        key2["private_key_id"], key["private_key_id"],
        "{kind}: a new key"
    );
    let accounts = gcp.service_accounts(GCP_PROJECT);
    assert_eq!(accounts.len(), 1, "{kind}: no second account");
    assert_eq!(accounts[0].keys.len(), 2, "{kind}");
    let policy = gcp.policy(GCP_PROJECT);
    let temp: Vec<&Value> = policy["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["condition"]["title"] == "Temp Access")
        .collect();
    assert_eq!(temp.len(), 1, "{kind}: {policy}");
    assert_eq!(
        temp[0]["condition"]["expression"], expr,
        "{kind}: expiry unchanged"
    );
    let (again_dm, _) = eventually("the re-request DM", Duration::from_secs(10), || {
        new_dms(&slack, before)
            .into_iter()
            .find(|m| m.all_text().contains("You have been granted access"))
    })
    .await;
    let again = again_dm.all_text();
    // The expiry is shown in the reader's own time zone: a Slack date token for the unchanged
    // expiry, with the UTC time as its fallback.
    assert!(
        again.contains(&format!("(until <!date^{}^", expires_at.timestamp())),
        "{kind}: {again}"
    );
    if again.contains("extended") {
        gaps.push(format!(
            "re-request DM: the document repeats the success message with the current expiry; \
             Gatehouse says the access was extended although the expiry is unchanged: {again:?}"
        ));
    }

    // --- revoke ----------------------------------------------------------------------------------
    let before = slack.dms_to(JANE).len();
    assert_eq!(dm(&server, JANE, "revoke gcp-access").await, 200);
    // The document's reply (the revocation finishes within the reply's wait), besides the DM that
    // confirms it.
    let (revoke_reply, _) = eventually(
        "the document's revoke reply",
        Duration::from_secs(10),
        || {
            new_dms(&slack, before).into_iter().find(|m| {
                m.all_text()
                    .contains("Your GCP workspace access has been revoked successfully.")
            })
        },
    )
    .await;
    let revoke_text = revoke_reply.all_text();
    let (_, revoke_took) = eventually("the account deleted", Duration::from_secs(15), || {
        gcp.service_accounts(GCP_PROJECT).is_empty().then_some(())
    })
    .await;
    eprintln!("{kind}: revoke → service account deleted: {revoke_took:?}");
    let (revoked_dm, _) = eventually("the revocation DM", Duration::from_secs(10), || {
        slack
            .dms_to(JANE)
            .into_iter()
            // The notification, not the reply above (which says "revoked" too and may come first).
            .find(|m| {
                m.text.contains("has been revoked") && m.all_text().contains("Access revoked")
            })
    })
    .await;
    let all_revoke_texts = format!("{revoke_text}\n{}", revoked_dm.all_text());
    doc_check(
        &mut gaps,
        "revoke reply",
        &all_revoke_texts,
        provider_gcp_revoked(),
    );
    let policy = gcp.policy(GCP_PROJECT);
    assert!(
        !policy.to_string().contains(&sa),
        "{kind}: binding left: {policy}"
    );
    for unrelated in unrelated_policy()["bindings"].as_array().unwrap() {
        assert!(
            policy["bindings"].as_array().unwrap().contains(unrelated),
            "{kind}: {policy}"
        );
    }

    // --- revoke with nothing active ------------------------------------------------------------
    let before = slack.dms_to(JANE).len();
    assert_eq!(dm(&server, JANE, "revoke gcp-access").await, 200);
    let (nothing, _) = eventually(
        "the reply to a second revoke",
        Duration::from_secs(10),
        || new_dms(&slack, before).into_iter().next(),
    )
    .await;
    let nothing_text = nothing.all_text();
    assert!(
        nothing_text.contains("You do not have any active GCP workspace access to revoke."),
        "{kind}: {nothing_text}"
    );
    doc_check(
        &mut gaps,
        "revoke with nothing active",
        &nothing_text,
        "You do not have any active GCP workspace access to revoke.",
    );

    // --- audit trail and BigQuery ------------------------------------------------------------
    let (events, drained) = wait_exported(&api, &bq, Duration::from_secs(30)).await;
    eprintln!(
        "{kind}: {} audit events exported ({:?}); drained {drained:?} after the last change",
        events.len(),
        kinds(&events)
    );
    let k = kinds(&events);
    for want in [
        "access_requested",
        "access_approved",
        "access_granted",
        "revocation_requested",
        "access_revoked",
    ] {
        assert!(k.iter().any(|x| x == want), "{kind}: no {want} in {k:?}");
    }
    let granted = &events[position(&events, "access_granted")];
    assert_eq!(
        granted["details"]["provider_handle"]["service_account_email"], sa,
        "{kind}"
    );
    assert_eq!(granted["details"]["justification"], JUSTIFICATION, "{kind}");
    let row = grant_row(&bq, granted);
    assert_eq!(row["command"], "request", "{kind}");
    assert_eq!(row["user_email"], JANE_EMAIL, "{kind}");
    assert_eq!(row["slack_user_id"], JANE, "{kind}");
    assert_eq!(
        row["justification"], JUSTIFICATION,
        "{kind}: quotes stripped"
    );
    assert_eq!(row["resource"], "gcp-access", "{kind}");
    assert_eq!(row["project_id"], GCP_PROJECT, "{kind}");
    assert_eq!(row["service_account_email"], sa, "{kind}");
    assert_eq!(ts(&row["expires_at"]), expires_at, "{kind}");
    // One row per credential issued, as the GCP document logs them: the first key and the
    // re-requested one (same account, same expiry).
    assert_eq!(
        bq.row_count(BQ_PROJECT, BQ_DATASET, "access_grants"),
        2,
        "{kind}"
    );
    let (_, verify) = api.get("/api/audit/verify").await;
    assert_eq!(verify["ok"], true, "{kind}: {verify}");

    // --- the key exists only in the file Jane received -----------------------------------------
    let rows = raw_rows(&db.url).await;
    let mut needles: Vec<String> = private_key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .map(String::from)
        .collect();
    assert!(needles.len() > 10, "{kind}: PEM body lines");
    // `privateKeyData` (the base64 of the key file) in any alignment.
    for f in &files {
        for shift in 0..3 {
            let b64 = base64(&f.content[shift..]);
            needles.push(b64[40..120].to_string());
        }
    }
    // The scan sees what is stored: the account's e-mail is in the grant's handle.
    assert!(
        !rows_containing(&rows, &sa).is_empty(),
        "{kind}: the scan saw no grant handle"
    );
    let log = server.log_text();
    for n in &needles {
        let hits = rows_containing(&rows, n);
        assert!(
            hits.is_empty(),
            "{kind}: key material stored: {:?}",
            hits.first().map(|h| &h[..h.len().min(200)])
        );
        assert!(
            !log.contains(n.as_str()),
            "{kind}: key material in the server log"
        );
    }
    for line in testkit::gcp::TEST_KEY_PEM.lines().filter(|l| l.len() >= 40) {
        assert!(!log.contains(line), "{kind}: the bot's own key in the log");
    }
    eprintln!(
        "{kind}: scanned {} database rows and {} log bytes: no key material",
        rows.len(),
        log.len()
    );
    print_gaps("GCP", kind, &gaps);
}

/// The GCP document's reply to a successful `revoke`.
fn provider_gcp_revoked() -> &'static str {
    "Your GCP workspace access has been revoked successfully."
}

/// The document refuses `/vpn-access request` for a network Cloud Connexa does not have. A
/// resource whose network is missing is refused before anything is created in Cloud Connexa, the
/// person is told why, and the approval message says it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudconnexa_request_for_a_missing_network_creates_nothing() {
    for db in backends().await {
        let kind = db.kind;
        let dir = tempfile::tempdir().unwrap();
        let slack = FakeSlack::start().await;
        slack.add_user(FakeUser::new(DANA, "dana").email(DANA_EMAIL));
        slack.add_channel(APPROVALS, "vpn-access-approvals");
        let cc = FakeCloudConnexa::start(FakeConfig::fast()).await;
        cc.seed_network("dev-network");
        let config = write_config(
            dir.path(),
            r#"
[[resources]]
id = "qa-network"
provider = "cloudconnexa"
min_duration = "1s"
approval = { mode = "auto" }
[resources.settings]
network = "qa-network"
"#,
        );
        let mut env = slack_env(&slack);
        env.extend([
            ("CLOUDCONNEXA_API_URL", cc.url()),
            ("CLOUDCONNEXA_CLIENT_ID", cc.client_id()),
            ("CLOUDCONNEXA_CLIENT_SECRET", cc.client_secret()),
        ]);
        let server = Server::start(
            &ServerOptions {
                config: &config,
                database_url: &db.url,
                admin_token: Some(ADMIN_TOKEN),
                extra_env: env.clone(),
            },
            dir.path(),
        );
        let (status, ack, response_url) = slash(
            &server,
            &slack,
            "/vpn-access",
            DANA,
            &format!("request qa-network 1 {REASON}"),
        )
        .await;
        assert_eq!(status, 200, "{kind}: {ack}");
        const MISSING: &str = "Network 'qa-network' does not exist.";
        let mut ack_text = ack["text"].as_str().unwrap_or_default().to_string();
        if ack_text.contains("Working on it") {
            // A loaded machine answered after the acknowledgement budget: the answer follows on
            // the response URL.
            let (followup, _) = eventually("the follow-up answer", Duration::from_secs(10), || {
                slack.responses(&response_url).into_iter().next()
            })
            .await;
            ack_text = followup.to_string();
        }
        if ack_text.contains(MISSING) {
            // Refused at request time, as the document does.
            eprintln!("{kind}: missing network refused at request: {ack_text}");
        } else {
            // Accepted (auto-approval), then refused by the provider before it created anything.
            let (failed, _) = eventually("the failure DM", Duration::from_secs(10), || {
                slack
                    .dms_to(DANA)
                    .into_iter()
                    .find(|m| m.text.contains("could not be provisioned"))
            })
            .await;
            assert!(
                failed.all_text().contains(MISSING),
                "{kind}: {}",
                failed.all_text()
            );
            let api = Api::new(&server, Some(ADMIN_TOKEN));
            let events = audit_events(&api).await;
            assert!(kinds(&events).iter().any(|k| k == "grant_failed"), "{kind}");
            eprintln!("{kind}: missing network refused at grant time");
        }
        assert!(
            cc.user_by_email(DANA_EMAIL).is_none(),
            "{kind}: user created"
        );
        assert_eq!(cc.groups().len(), 1, "{kind}: only the default group");
        let out = cleanup(&config, &db.url, &env, &[]);
        assert!(out.status.success(), "{kind}: {}", out_text(&out));
    }
}
