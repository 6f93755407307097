//! Delegation and escalation through the real `gatehouse-server` (docs/delegation-escalation.md):
//! the escalation configured in the TOML file, a delegation made by direct message, the delegate's
//! and the escalation approver's clicks, and the requester told, on each database backend. The
//! server runs on the real clock, so the escalation delay is a few seconds.

use std::time::Duration;

use testkit::db::backends;

use crate::helpers::*;
use crate::slack_helpers::*;
use crate::story_helpers::{audit_events, kinds};

const ESCALATIONS: &str = "C0ESCALATE";

const CONFIG: &str = r#"
[[resources]]
id = "dev-network"
provider = "dry-run"
min_duration = "1s"
default_duration = "1h"
max_duration = "8h"
eligibility = ["anyone"]
approval = { mode = "approvers", approvers = { users = ["UAPP1"] }, pending_ttl = "1h" }

[[resources]]
id = "prod-db"
provider = "dry-run"
min_duration = "1s"
default_duration = "1h"
max_duration = "8h"
eligibility = ["anyone"]
approval = { mode = "approvers", approvers = { users = ["UAPP1"] }, pending_ttl = "1h", escalate_after = "3s", escalation_approvers = { users = ["UAPP2"] }, escalation_channel = "C0ESCALATE" }
"#;

const USERS: &[&str] = &["UAPP1", "UAPP2", "UAPP3", "UALICE", "UBOB"];

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegation_and_escalation_through_the_server() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), CONFIG);
        let w = SlackWorld::start(&db.url, db.kind, &config, dir.path(), USERS).await;
        w.slack.add_channel(ESCALATIONS, "access-escalations");

        // A delegation by direct message: mentions arrive as <@U…>.
        let event = testkit::slack::message_im_event("UAPP1", "delegate <@UAPP3> until 2d");
        w.event("EvDELEG01", event, None).await;
        w.dm_containing("UAPP1", "can now approve and deny", secs(10))
            .await;

        // The delegate approves Alice's request.
        w.slash(
            "/access",
            "UALICE",
            "request dev-network 1h Running database migration",
        )
        .await;
        let r = w.only_request_of("UALICE").await;
        let id = r["id"].as_str().unwrap().to_string();
        let m = w.approval_message(&id).await;
        w.click("UAPP3", "gatehouse_approve", &id, &m).await;
        w.dm_containing("UALICE", "Access granted", secs(15)).await;

        // Bob's request is not decided within 3 s: it escalates to UAPP2, who approves it.
        w.slash(
            "/access",
            "UBOB",
            "request prod-db 1h Restore the nightly backup",
        )
        .await;
        let r = w.only_request_of("UBOB").await;
        let id = r["id"].as_str().unwrap().to_string();
        w.wait("the escalation message", secs(20), |s| {
            !s.messages_in(ESCALATIONS).is_empty()
        })
        .await;
        w.dm_containing("UBOB", "Request escalated", secs(10)).await;
        let esc = w.slack.messages_in(ESCALATIONS).remove(0);
        assert!(esc.all_text().contains("<@UAPP2>"), "{}", esc.all_text());
        w.click("UAPP2", "gatehouse_approve", &id, &esc).await;
        w.dm_containing("UBOB", "Access granted", secs(15)).await;

        let events = audit_events(&w.admin).await;
        let k = kinds(&events);
        for kind in ["delegation_created", "request_escalated"] {
            assert!(k.iter().any(|x| x == kind), "{}: no {kind}: {k:?}", w.kind);
        }
        let on_behalf = events
            .iter()
            .find(|e| e["kind"] == "access_approved" && e["actor"].to_string().contains("UAPP3"))
            .unwrap_or_else(|| panic!("{}: no approval by the delegate", w.kind));
        assert!(
            on_behalf["details"]["on_behalf_of"]
                .as_str()
                .unwrap_or_default()
                .ends_with("/UAPP1"),
            "{on_behalf}"
        );
        let (_, verify) = w.admin.get("/api/audit/verify").await;
        assert_eq!(verify["ok"], true, "{}: {verify}", w.kind);
    }
}
