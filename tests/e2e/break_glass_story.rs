//! Break-glass through the real `gatehouse-server` (issue 17 item 1): a slash command with
//! `--emergency` is granted at once, the approvers' and security channels get the notice, the
//! admin API and `/metrics` show it unreviewed until an approver clicks Reviewed.

use std::time::Duration;

use serde_json::Value;
use testkit::db::backends;

use crate::helpers::*;
use crate::slack_helpers::*;

const CONFIG: &str = r#"
[server]
security_channel = "security-alerts"

[[resources]]
id = "prod-db"
description = "Production database"
provider = "dry-run"
min_duration = "1s"
default_duration = "1h"
max_duration = "8h"
eligibility = ["anyone"]
approval = { mode = "approvers", approvers = { users = ["UAPP1", "UAPP2"] }, required = 2 }
emergency = true
emergency_duration = "15m"
"#;

const SECURITY_ID: &str = "C0SECURITY";

async fn unreviewed_gauge(w: &SlackWorld) -> Option<f64> {
    let (_, body) = w.admin.get("/metrics").await;
    body.as_str()?
        .lines()
        .find(|l| l.starts_with("gatehouse_emergency_grants_unreviewed "))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_through_the_server() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), CONFIG);
        let w = SlackWorld::start(
            &db.url,
            db.kind,
            &config,
            dir.path(),
            &["UAPP1", "UAPP2", "UALICE"],
        )
        .await;
        w.slack.add_channel(SECURITY_ID, "security-alerts");

        let (ack, _) = w
            .slash(
                "/access",
                "UALICE",
                "request prod-db 8h --emergency primary is down",
            )
            .await;
        assert!(
            ack.ack_text()
                .contains("Break-glass access to prod-db for 15 minutes granted without approval"),
            "{}: {ack:?}",
            w.kind
        );
        let request = w.only_request_of("UALICE").await;
        let id = request["id"].as_str().unwrap().to_string();
        for channel in [APPROVALS_ID, SECURITY_ID] {
            w.wait(
                &format!("the break-glass notice in {channel}"),
                Duration::from_secs(10),
                |s| {
                    s.messages_in(channel)
                        .iter()
                        .any(|m| m.all_text().contains(&id) && m.all_text().contains("BREAK-GLASS"))
                },
            )
            .await;
        }
        w.dm_containing("UALICE", "Access granted", Duration::from_secs(10))
            .await;

        let (status, list) = w.admin.get("/api/emergency?reviewed=false").await;
        assert_eq!(status, 200, "{}: {list}", w.kind);
        assert_eq!(list.as_array().map(Vec::len), Some(1), "{}: {list}", w.kind);
        assert_eq!(list[0]["request_id"], Value::String(id.clone()));
        assert_eq!(list[0]["grant_status"], "active");
        assert_eq!(unreviewed_gauge(&w).await, Some(1.0), "{}", w.kind);

        let notice = w
            .slack
            .messages_in(SECURITY_ID)
            .into_iter()
            .find(|m| m.all_text().contains(&id))
            .unwrap();
        w.click("UAPP1", "gatehouse_emergency_reviewed", &id, &notice)
            .await;
        w.admin
            .wait_for(
                "/api/emergency?reviewed=false",
                Duration::from_secs(10),
                |b| b.as_array().is_some_and(Vec::is_empty),
            )
            .await;
        w.wait("both notices updated", Duration::from_secs(10), |s| {
            [APPROVALS_ID, SECURITY_ID].iter().all(|c| {
                s.messages_in(c).iter().any(|m| {
                    m.all_text().contains(&id)
                        && m.all_text().contains("Reviewed by <@UAPP1>")
                        && m.buttons().is_empty()
                })
            })
        })
        .await;
        assert_eq!(unreviewed_gauge(&w).await, Some(0.0), "{}", w.kind);
        let kinds = audit_kinds(&w.admin).await;
        for k in ["emergency_granted", "emergency_reviewed"] {
            assert!(kinds.iter().any(|x| x == k), "{}: {k} in {kinds:?}", w.kind);
        }
        let (_, verify) = w.admin.get("/api/audit/verify").await;
        assert_eq!(verify["ok"], true, "{}: {verify}", w.kind);
    }
}
