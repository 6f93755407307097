//! The Slack face through the real `gatehouse-server`: a fake Slack on one side, the dry-run
//! provider on the other, and signed requests as Slack sends them. Assertions are on what Slack
//! was asked to show (the fake's records) and on what was stored (admin API).
//!
//! Two tests, each with one server per database backend: `slack_conversations` runs the people
//! stories side by side (each with its own users, so they do not interfere); `slack_robustness`
//! owns its server because it injects faults into every Slack call.

use std::time::Duration;

use serde_json::json;
use testkit::db::backends;
use testkit::slack::{self, Fault};

use crate::helpers::*;
use crate::slack_helpers::*;

const CONFIG: &str = r#"
[[resources]]
id = "dev-network"
description = "Development VPN network"
provider = "dry-run"
min_duration = "1s"
default_duration = "1h"
max_duration = "8h"
eligibility = ["anyone"]
approval = { mode = "auto" }

[[resources]]
id = "gcp-access"
description = "GCP project access"
provider = "dry-run"
min_duration = "1s"
default_duration = "2h"
max_duration = "8h"
eligibility = ["anyone"]
approval = { mode = "approvers", approvers = { users = ["UAPP1", "UAPP2"] }, required = 1, pending_ttl = "1h" }

[[resources]]
id = "prod-db"
description = "Production database"
provider = "dry-run"
min_duration = "1s"
default_duration = "1h"
max_duration = "4h"
eligibility = ["anyone"]
approval = { mode = "approvers", approvers = { users = ["UAPP1", "UAPP2", "UAPP3"] }, required = 2, pending_ttl = "1h" }

[[resources]]
id = "hasty"
description = "Approvers must be quick"
provider = "dry-run"
min_duration = "1s"
default_duration = "1h"
max_duration = "8h"
eligibility = ["anyone"]
approval = { mode = "approvers", approvers = { users = ["UAPP1"] }, pending_ttl = "3s" }

[[resources]]
id = "quick"
description = "Short-lived access"
provider = "dry-run"
min_duration = "1s"
default_duration = "3s"
max_duration = "20s"
eligibility = ["anyone"]
approval = { mode = "auto" }
"#;

const USERS: &[&str] = &[
    "UAPP1", "UAPP2", "UAPP3", "UALICE", "UBOB", "UCAROL", "UDAVE", "UERIN", "UFRANK", "UGINA",
    "UHANK", "UIVY", "UJACK", "UKATE", "ULEO", "UMIA",
];

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_conversations() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), CONFIG);
        let w = SlackWorld::start(&db.url, db.kind, &config, dir.path(), USERS).await;
        let started = std::time::Instant::now();
        tokio::join!(
            slash_grammar_auto_approved(&w),
            dm_grammar_and_approval_clicks(&w),
            deny(&w),
            two_of_three_with_racing_approvers(&w),
            self_approval_refused(&w),
            modal_path(&w),
            pending_time_out(&w),
            reminder_extend_and_expiry(&w),
            app_home_self_revoke(&w),
            malformed_commands(&w),
        );
        let (_, verify) = w.admin.get("/api/audit/verify").await;
        assert_eq!(verify["ok"], true, "{}: {verify}", w.kind);
        // Text-only replies leave `blocks` out (Slack refuses an empty array), and every call
        // succeeded: nothing Gatehouse sent was malformed for the fake.
        for c in w.slack.calls() {
            assert!(
                c.args.get("blocks") != Some(&json!([])),
                "{}: empty blocks sent: {}",
                w.kind,
                c.body
            );
            assert!(
                c.status == 200 && c.error.is_none(),
                "{}: failed Slack call {} {}: {}",
                w.kind,
                c.method,
                c.status,
                c.body
            );
        }
        eprintln!(
            "{}: Slack conversations took {:?}",
            w.kind,
            started.elapsed()
        );
    }
}

/// `/vpn-access request dev-network 4 Running database migration` (the Cloud Connexa document's
/// form, unquoted) and `/access request … "quoted"`: approved at once, the person told so in the
/// acknowledgement and by DM with the provider's instructions.
async fn slash_grammar_auto_approved(w: &SlackWorld) {
    let (ack, _) = w
        .slash(
            "/vpn-access",
            "UALICE",
            "request dev-network 4 Running database migration",
        )
        .await;
    let text = ack.ack_text();
    assert!(
        text.contains("approved automatically") && text.contains("dev-network"),
        "{}: {text}",
        w.kind
    );
    assert_eq!(ack.json()["response_type"], "ephemeral");

    let r = w.only_request_of("UALICE").await;
    assert_eq!(
        r["justification"], "Running database migration",
        "{}: {r}",
        w.kind
    );
    assert_eq!(r["duration"], "4h", "{}: {r}", w.kind);
    assert_eq!(
        r["subject"]["email"], "ualice@example.com",
        "{}: {r}",
        w.kind
    );

    // Auto-approved: one DM, when the access is in place (no separate "approved" DM).
    let granted = w.dm_containing("UALICE", "Access granted", secs(10)).await;
    assert!(
        granted.blocks.is_array() && !granted.text.is_empty(),
        "Block Kit with a fallback: {granted:?}"
    );
    assert!(
        granted.all_text().contains("This is a dry run"),
        "{}: provider's instructions: {}",
        w.kind,
        granted.all_text()
    );
    assert!(
        granted.text.contains("dev-network is ready until"),
        "{}",
        granted.text
    );

    // Quoted justification through the slash command: the quotes are not stored.
    let (ack, _) = w
        .slash(
            "/access",
            "ULEO",
            "request dev-network 30m \u{201c}Rotate the staging certificates\u{201d}",
        )
        .await;
    assert!(
        ack.ack_text().contains("approved automatically"),
        "{}: {}",
        w.kind,
        ack.ack_text()
    );
    let r = w.only_request_of("ULEO").await;
    assert_eq!(
        r["justification"], "Rotate the staging certificates",
        "{}: {r}",
        w.kind
    );
    assert_eq!(r["duration"], "30m");

    // The Cloud Connexa form as a DM works too.
    let event =
        slack::message_im_event("UCAROL", "request dev-network 4 Running database migration");
    w.event("EvCAROL01", event, None).await;
    let r = w.only_request_of("UCAROL").await;
    assert_eq!(
        r["justification"], "Running database migration",
        "{}: {r}",
        w.kind
    );
    assert_eq!(r["duration"], "4h");
    w.dm_containing("UCAROL", "approved automatically", secs(10))
        .await;

    // `status` lists the live grant with its time left.
    w.dm_containing("ULEO", "Access granted", secs(10)).await;
    let (ack, _) = w.slash("/access", "ULEO", "status").await;
    assert!(
        ack.ack_text().contains("dev-network") && ack.ack_text().contains("expires in"),
        "{}",
        ack.ack_text()
    );
}

/// A DM in the GCP document's form, delivered twice by Slack (a retry of the same event): one
/// request. Then a stranger's click is refused, and an approver's double click counts once.
async fn dm_grammar_and_approval_clicks(w: &SlackWorld) {
    let event = slack::message_im_event(
        "UBOB",
        "request gcp-access \"Need to debug CI infrastructure issues\"",
    );
    w.event("EvBOB001", event.clone(), None).await;
    w.event("EvBOB001", event, Some(1)).await;

    let r = w.only_request_of("UBOB").await;
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["status"], "pending");
    assert_eq!(
        r["justification"], "Need to debug CI infrastructure issues",
        "{}: {r}",
        w.kind
    );
    assert_eq!(r["duration"], "2h", "default duration: {r}");
    let reply = w
        .dm_containing("UBOB", "Access request submitted for gcp-access", secs(10))
        .await;
    // Processed once: a second run would have answered "already pending".
    w.wait("the retried delivery to be dropped", secs(10), |_| {
        w.server
            .log_text()
            .contains("duplicate Slack event ignored")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        w.dms_containing("UBOB", "Access request submitted for")
            .len(),
        1,
        "{}",
        w.dump()
    );
    assert!(
        w.dms_containing("UBOB", "already have a pending request")
            .is_empty(),
        "{}",
        w.dump()
    );
    // No slash in DM usage hints.
    assert!(reply.text.contains("`cancel gcp-access`"), "{}", reply.text);
    w.dm_containing("UBOB", "waiting for approval", secs(10))
        .await;

    let m = w.approval_message(&id).await;
    let t = m.all_text();
    assert!(
        t.contains("<@UBOB>")
            && t.contains("gcp-access")
            && t.contains("2 hours")
            && t.contains("Need to debug CI"),
        "{t}"
    );
    assert_eq!(
        m.buttons(),
        vec![
            ("gatehouse_approve".to_string(), id.clone()),
            ("gatehouse_deny".to_string(), id.clone())
        ],
        "{}",
        w.kind
    );

    // Not an approver: told so, alone; nothing changes.
    let url = w.click("UCAROL", "gatehouse_approve", &id, &m).await;
    let refusal = w
        .response_containing(&url, "not an approver", secs(10))
        .await;
    assert!(refusal.contains("Nothing was changed"), "{refusal}");
    assert_eq!(w.slack.responses(&url)[0]["response_type"], "ephemeral");
    assert_eq!(
        w.current_approval(&id).history.len(),
        0,
        "{}: message untouched",
        w.kind
    );
    let d = w.request_detail(&id).await;
    assert_eq!(d["request"]["status"], "pending");
    assert_eq!(d["decisions"].as_array().unwrap().len(), 0);

    // Double click: both clicks arrive together; one decision, one "already".
    let (u1, u2) = tokio::join!(
        w.click("UAPP1", "gatehouse_approve", &id, &m),
        w.click("UAPP1", "gatehouse_approve", &id, &m)
    );
    let m = wait_approval_text(w, &id, "the approval message to say APPROVED", |t| {
        t.contains("APPROVED")
    })
    .await;
    assert!(
        m.all_text().contains("Approved by <@UAPP1>"),
        "{}",
        m.all_text()
    );
    assert!(
        m.buttons().is_empty(),
        "no buttons once decided: {:?}",
        m.buttons()
    );
    w.wait("the second click's refusal", secs(10), |s| {
        s.responses(&u1).len() + s.responses(&u2).len() == 1
    })
    .await;
    let refusal = [w.responses(&u1), w.responses(&u2)].concat().join(" ");
    assert!(refusal.contains("already"), "{}: {refusal}", w.kind);
    let d = w.request_detail(&id).await;
    assert_eq!(
        d["decisions"].as_array().unwrap().len(),
        1,
        "{}: {d}",
        w.kind
    );
    w.dm_containing("UBOB", "approved by <@UAPP1>", secs(10))
        .await;
    w.dm_containing("UBOB", "Access granted", secs(10)).await;
    assert_eq!(
        w.dms_containing("UBOB", "Access approved").len(),
        1,
        "one approval DM"
    );
}

async fn deny(w: &SlackWorld) {
    let (ack, _) = w
        .slash(
            "/access",
            "UDAVE",
            "request gcp-access 1h need the billing logs",
        )
        .await;
    assert!(
        ack.ack_text()
            .contains("Access request submitted for gcp-access (1 hour)"),
        "{}",
        ack.ack_text()
    );
    let id = w.only_request_of("UDAVE").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let m = w.approval_message(&id).await;
    let url = w.click("UAPP2", "gatehouse_deny", &id, &m).await;
    let m = wait_approval_text(w, &id, "DENIED", |t| t.contains("DENIED")).await;
    assert!(
        m.all_text().contains("Denied by <@UAPP2>"),
        "{}",
        m.all_text()
    );
    assert!(m.buttons().is_empty());
    let dm = w.dm_containing("UDAVE", "Access denied", secs(10)).await;
    assert!(
        dm.all_text().contains("denied by <@UAPP2>"),
        "{}",
        dm.all_text()
    );
    assert!(
        w.responses(&url).is_empty(),
        "a decision that counted needs no ephemeral: {:?}",
        w.responses(&url)
    );
    let d = w.request_detail(&id).await;
    assert_eq!(d["request"]["status"], "denied");
    assert!(w.grants_of("UDAVE").await.is_empty());
}

/// 2 of 3: the first approval shows progress in place; the second and third approvers click at
/// the same moment and only one of them completes it.
async fn two_of_three_with_racing_approvers(w: &SlackWorld) {
    let (ack, _) = w
        .slash(
            "/access",
            "UERIN",
            "request prod-db 2h \"quarterly access review\"",
        )
        .await;
    assert!(ack.ack_text().contains("submitted"), "{}", ack.ack_text());
    let id = w.only_request_of("UERIN").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let m = w.approval_message(&id).await;
    assert!(
        m.all_text().contains("Approvals: 0 of 2"),
        "{}",
        m.all_text()
    );
    w.dm_containing("UERIN", "waiting for 2 approvals", secs(10))
        .await;

    w.click("UAPP1", "gatehouse_approve", &id, &m).await;
    let m = wait_approval_text(w, &id, "1 of 2", |t| {
        t.contains("Approvals: 1 of 2 (<@UAPP1>)")
    })
    .await;
    assert_eq!(m.buttons().len(), 2, "still pending: buttons stay");
    // Voting twice does not count twice.
    let again = w.click("UAPP1", "gatehouse_approve", &id, &m).await;
    w.response_containing(&again, "already approved", secs(10))
        .await;

    let (a, b) = tokio::join!(
        w.click("UAPP2", "gatehouse_approve", &id, &m),
        w.click("UAPP3", "gatehouse_approve", &id, &m)
    );
    let m = wait_approval_text(w, &id, "APPROVED", |t| t.contains("APPROVED")).await;
    w.wait("the losing approver's refusal", secs(10), |s| {
        s.responses(&a).len() + s.responses(&b).len() == 1
    })
    .await;
    // The approver who got the refusal lost the race; the message names the other one.
    let (winner, loser, refusal) = if w.slack.responses(&a).is_empty() {
        ("UAPP2", "UAPP3", w.responses(&b).join(" "))
    } else {
        ("UAPP3", "UAPP2", w.responses(&a).join(" "))
    };
    assert!(
        refusal.contains("already been approved"),
        "{}: {refusal}",
        w.kind
    );
    let text = m.all_text();
    assert!(
        text.contains(&format!("Approved by <@UAPP1>, <@{winner}>"))
            && !text.contains(&format!("<@{loser}>")),
        "{}: {text}",
        w.kind
    );
    let d = w.request_detail(&id).await;
    let decisions = d["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 2, "{}: {d}", w.kind);
    assert!(decisions.iter().all(|x| x["kind"] == "approve"), "{d}");
    // Progress never overwrites the outcome.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.current_approval(&id).all_text().contains("APPROVED"));
    w.dm_containing("UERIN", "Access granted", secs(10)).await;
}

async fn self_approval_refused(w: &SlackWorld) {
    let (ack, _) = w
        .slash(
            "/access",
            "UAPP3",
            "request prod-db 1h checking my own rights",
        )
        .await;
    assert!(ack.ack_text().contains("submitted"), "{}", ack.ack_text());
    let id = w.only_request_of("UAPP3").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let m = w.approval_message(&id).await;
    let url = w.click("UAPP3", "gatehouse_approve", &id, &m).await;
    let refusal = w
        .response_containing(&url, "your own request", secs(10))
        .await;
    assert!(refusal.contains("Nothing was changed"), "{refusal}");
    let d = w.request_detail(&id).await;
    assert_eq!(d["request"]["status"], "pending");
    assert!(d["decisions"].as_array().unwrap().is_empty());
    assert!(
        w.current_approval(&id).history.is_empty(),
        "message untouched"
    );
    // The requester withdraws it.
    let (ack, _) = w.slash("/access", "UAPP3", "cancel prod-db").await;
    assert!(
        ack.ack_text()
            .contains("Cancelled your request for prod-db"),
        "{}",
        ack.ack_text()
    );
    wait_approval_text(w, &id, "CANCELLED", |t| t.contains("CANCELLED")).await;
}

/// `/access` alone opens the form; a wrong duration goes back into the form; a good submission
/// files the request.
async fn modal_path(w: &SlackWorld) {
    let (ack, _, trigger) = w.slash_with_trigger("/access", "UFRANK", "").await;
    assert!(
        ack.text.is_empty(),
        "{}: no text while the modal opens: {:?}",
        w.kind,
        ack.text
    );
    w.wait("views.open", secs(5), |s| {
        s.calls_to("views.open")
            .iter()
            .any(|c| c.args["trigger_id"] == trigger.as_str() && c.status == 200)
    })
    .await;
    let view = w
        .slack
        .calls_to("views.open")
        .into_iter()
        .find(|c| c.args["trigger_id"] == trigger.as_str())
        .unwrap()
        .args["view"]
        .clone();
    assert_eq!(view["callback_id"], "gatehouse_request");
    let options: Vec<&str> = view["blocks"][0]["element"]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        options,
        ["dev-network", "gcp-access", "hasty", "prod-db", "quick"],
        "{}",
        w.kind
    );

    let values = |duration: &str| {
        json!({
            "resource": {"value": {"type": "static_select", "selected_option": {"value": "dev-network"}}},
            "duration": {"value": {"type": "plain_text_input", "value": duration}},
            "justification": {"value": {"type": "plain_text_input", "value": "Investigate the flaky deploy"}},
        })
    };
    let bad = w
        .interaction(&slack::view_submission_payload(
            "UFRANK",
            "gatehouse_request",
            values("99h"),
        ))
        .await;
    assert_eq!(bad.status, 200);
    let errors = bad.json();
    assert_eq!(
        errors["response_action"], "errors",
        "{}: {}",
        w.kind, bad.text
    );
    assert!(
        errors["errors"]["duration"]
            .as_str()
            .unwrap()
            .contains("8h"),
        "names the bounds: {errors}"
    );
    assert!(
        w.requests_of("UFRANK").await.is_empty(),
        "nothing filed for a bad form"
    );

    let good = w
        .interaction(&slack::view_submission_payload(
            "UFRANK",
            "gatehouse_request",
            values("2h"),
        ))
        .await;
    assert_eq!(good.status, 200);
    assert!(
        good.text.is_empty(),
        "an empty 200 closes the modal: {:?}",
        good.text
    );
    assert!(good.took < SLACK_ACK_LIMIT);
    let r = w.only_request_of("UFRANK").await;
    assert_eq!(r["resource"], "dev-network");
    assert_eq!(r["duration"], "2h");
    assert_eq!(r["justification"], "Investigate the flaky deploy");
    w.dm_containing("UFRANK", "Access granted", secs(10)).await;
}

/// Nobody decides within `pending_ttl = "3s"`: the approval message says so in place, and the
/// requester is told.
async fn pending_time_out(w: &SlackWorld) {
    let (ack, _) = w
        .slash("/access", "UGINA", "request hasty 1h please be quick")
        .await;
    assert!(ack.ack_text().contains("submitted"), "{}", ack.ack_text());
    let id = w.only_request_of("UGINA").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let m = w.approval_message(&id).await;
    assert_eq!(m.buttons().len(), 2);
    let m = wait_approval_text(w, &id, "the time-out", |t| {
        t.contains("expired without action")
    })
    .await;
    assert!(
        m.all_text().contains("EXPIRED") && m.buttons().is_empty(),
        "{}",
        m.all_text()
    );
    w.dm_containing("UGINA", "Request expired", secs(10)).await;
    let r = w.only_request_of("UGINA").await;
    assert_eq!(r["status"], "timed_out", "{}: {r}", w.kind);
    // A click after the time-out changes nothing.
    let url = w.click("UAPP1", "gatehouse_approve", &id, &m).await;
    w.response_containing(&url, "already been", secs(10)).await;
}

/// A 10 s grant: reminder with an Extend button at 10% before expiry, extended from the button
/// (once, even when clicked twice), then the expiry DM.
async fn reminder_extend_and_expiry(w: &SlackWorld) {
    let (ack, _) = w
        .slash("/access", "UHANK", "request quick 10s try the reminder")
        .await;
    assert!(
        ack.ack_text().contains("approved automatically"),
        "{}",
        ack.ack_text()
    );
    let granted = w.dm_containing("UHANK", "Access granted", secs(10)).await;
    let grant = w.grants_of("UHANK").await[0].clone();
    let grant_id = grant["id"].as_str().unwrap().to_string();
    let expires =
        chrono::DateTime::parse_from_rfc3339(grant["expires_at"].as_str().unwrap()).unwrap();

    let reminder = w
        .dm_containing("UHANK", "Access ending soon", secs(12))
        .await;
    let reminded_at = chrono::Utc::now();
    let lead = expires.with_timezone(&chrono::Utc) - reminded_at;
    assert!(
        lead > chrono::Duration::milliseconds(0) && lead < chrono::Duration::milliseconds(1800),
        "{}: reminder {lead} before expiry (10% of 10 s is 1 s)",
        w.kind
    );
    assert!(granted.all_text().contains("quick"));
    assert_eq!(
        reminder.buttons(),
        vec![("gatehouse_extend".to_string(), "quick".to_string())]
    );

    let (u1, u2) = tokio::join!(
        w.click("UHANK", "gatehouse_extend", "quick", &reminder),
        w.click("UHANK", "gatehouse_extend", "quick", &reminder)
    );
    w.wait("both extend clicks answered", secs(10), |s| {
        s.responses(&u1).len() + s.responses(&u2).len() == 2
    })
    .await;
    let answers = [w.responses(&u1), w.responses(&u2)].concat().join(" | ");
    assert!(
        answers.contains("Extension of quick by 3 seconds approved"),
        "{}: {answers}",
        w.kind
    );
    assert!(
        answers.contains("already asked to extend"),
        "{}: {answers}",
        w.kind
    );
    let extended = w.dm_containing("UHANK", "Access extended", secs(10)).await;
    assert!(
        extended.text.contains("has been extended until"),
        "{}",
        extended.text
    );
    let g = w.admin.get(&format!("/api/grants/{grant_id}")).await.1;
    let new_expiry =
        chrono::DateTime::parse_from_rfc3339(g["expires_at"].as_str().unwrap()).unwrap();
    let added = new_expiry - expires;
    assert!(
        (added - chrono::Duration::seconds(3))
            .num_milliseconds()
            .abs()
            <= 1,
        "{}: extended by {added} (once, by the default 3 s)",
        w.kind
    );

    let expired = w.dm_containing("UHANK", "Access expired", secs(12)).await;
    assert!(
        expired.text.contains("quick has expired"),
        "{}",
        expired.text
    );
    assert!(
        chrono::Utc::now() >= new_expiry.with_timezone(&chrono::Utc),
        "expired DM not before the new expiry"
    );
    let g = w.admin.get(&format!("/api/grants/{grant_id}")).await.1;
    assert_eq!(g["status"], "expired", "{}: {g}", w.kind);
    assert_eq!(w.dms_containing("UHANK", "Access expired").len(), 1);
}

/// App Home: opened → published with a Revoke button; clicking it revokes, DMs, republishes.
async fn app_home_self_revoke(w: &SlackWorld) {
    let (ack, _) = w
        .slash(
            "/access",
            "UIVY",
            "request dev-network 1h look at the home tab",
        )
        .await;
    assert!(
        ack.ack_text().contains("approved automatically"),
        "{}",
        ack.ack_text()
    );
    w.dm_containing("UIVY", "Access granted", secs(10)).await;
    let grant_id = w.grants_of("UIVY").await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    w.event("EvIVYHOME1", slack::app_home_opened_event("UIVY"), None)
        .await;
    w.wait("views.publish for UIVY", secs(10), |s| {
        s.home_view("UIVY").is_some()
    })
    .await;
    let home = w.slack.home_view("UIVY").unwrap();
    assert_eq!(home["type"], "home");
    let home_msg = testkit::slack::FakeMessage {
        channel: String::new(),
        ts: String::new(),
        text: String::new(),
        blocks: home["blocks"].clone(),
        history: vec![],
        metadata: None,
    };
    let text = home_msg.all_text();
    assert!(
        text.contains("dev-network") && text.contains("left"),
        "{}: {text}",
        w.kind
    );
    let buttons = home_msg.buttons();
    assert!(
        buttons.contains(&("gatehouse_revoke".to_string(), grant_id.clone())),
        "{buttons:?}"
    );
    assert!(
        buttons.contains(&("gatehouse_extend".to_string(), "dev-network".to_string())),
        "{buttons:?}"
    );
    assert!(
        buttons
            .iter()
            .any(|(a, _)| a == "gatehouse_open_request_modal"),
        "{buttons:?}"
    );

    let publishes_before = w.slack.calls_to("views.publish").len();
    let p = slack::home_block_actions_payload(
        "UIVY",
        "gatehouse_revoke",
        &grant_id,
        &w.slack.trigger_id(),
    );
    let reply = w.interaction(&p).await;
    assert_eq!(reply.status, 200);
    w.dm_containing("UIVY", "revoked, as you asked", secs(10))
        .await;
    w.admin
        .wait_for(&format!("/api/grants/{grant_id}"), secs(10), |g| {
            g["status"] == "revoked"
        })
        .await;
    w.wait("the Home tab republished", secs(10), |s| {
        s.calls_to("views.publish").len() > publishes_before
    })
    .await;
    // Reopening the tab shows nothing live.
    w.event("EvIVYHOME2", slack::app_home_opened_event("UIVY"), None)
        .await;
    w.wait("an empty Home", secs(10), |s| {
        s.home_view("UIVY")
            .is_some_and(|v| v.to_string().contains("You have no active access"))
    })
    .await;
}

/// Every malformed command gets a specific answer at once, and nothing is stored.
async fn malformed_commands(w: &SlackWorld) {
    let (ack, _) = w
        .slash("/vpn-access", "UMIA", "request dev-network 4")
        .await;
    let t = ack.ack_text();
    assert!(
        t.contains("/vpn-access request") && t.contains("Example"),
        "{}: usage with an example: {t}",
        w.kind
    );
    let (ack, _) = w
        .slash("/access", "UMIA", "request moon-base 1h curiosity")
        .await;
    let t = ack.ack_text();
    assert!(
        t.contains("Unknown resource 'moon-base'") && t.contains("dev-network, gcp-access"),
        "{t}"
    );
    let (ack, _) = w
        .slash("/access", "UMIA", "request dev-network 12h a long day")
        .await;
    assert!(
        ack.ack_text().contains("8h"),
        "names the bounds: {}",
        ack.ack_text()
    );
    let event = slack::message_im_event("UMIA", "request gcp-access");
    w.event("EvMIA001", event, None).await;
    let reply = w.dm_containing("UMIA", "Usage", secs(10)).await;
    assert!(
        !reply.text.contains("/access request"),
        "DM usage has no slash: {}",
        reply.text
    );
    assert!(w.requests_of("UMIA").await.is_empty());

    // `list` names what can be requested, with descriptions and bounds.
    let (ack, _) = w.slash("/vpn-access", "UMIA", "list").await;
    let t = ack.ack_text();
    assert!(
        t.contains("dev-network")
            && t.contains("Development VPN network")
            && t.contains("needs 2 approvals"),
        "{t}"
    );

    // A profile without an e-mail: asked to add one; nothing stored.
    w.slack.add_user(slack::FakeUser::new("UNOMAIL", "nomail"));
    let (ack, _) = w
        .slash("/access", "UNOMAIL", "request dev-network 1h no address")
        .await;
    assert!(
        ack.ack_text().contains("no e-mail address"),
        "{}: {}",
        w.kind,
        ack.ack_text()
    );
    assert!(w.requests_of("UNOMAIL").await.is_empty());
}

// ------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_robustness() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), CONFIG);
        let w = SlackWorld::start(&db.url, db.kind, &config, dir.path(), USERS).await;
        let started = std::time::Instant::now();
        refused_requests_change_nothing(&w).await;
        rate_limited_dm_is_retried(&w).await;
        slack_errors_retried_through_jobs(&w).await;
        acknowledged_while_slack_hangs(&w).await;
        eprintln!("{}: Slack robustness took {:?}", w.kind, started.elapsed());
    }
}

/// Wrong signature, stale timestamp, a replay of a captured request, a missing signature and an
/// oversized body: refused before parsing, nothing stored, nobody called.
async fn refused_requests_change_nothing(w: &SlackWorld) {
    let cmd = slack::SlashCommand::new(
        "/access",
        "UMIA",
        "request dev-network 1h sneaky",
        &w.slack.response_url(),
        "1.2.3",
    );
    let body = cmd.body();
    let form = "application/x-www-form-urlencoded";

    let wrong = slack::signed_headers("not-the-secret", &body);
    assert_eq!(
        w.post("/slack/commands", form, &body, &wrong).await.status,
        401,
        "{}: wrong secret",
        w.kind
    );

    let stale = slack::signed_headers_at(SIGNING_SECRET, &body, slack::now_ts() - 6 * 60);
    assert_eq!(
        w.post("/slack/commands", form, &body, &stale).await.status,
        401,
        "stale timestamp"
    );

    // A request captured in flight and replayed with a fresh timestamp: the signature no longer
    // matches; replayed as is (its old timestamp), it is stale.
    let captured = slack::signed_headers_at(SIGNING_SECRET, &body, slack::now_ts() - 400);
    let mut replay = captured.clone();
    replay[0].1 = slack::now_ts().to_string();
    assert_eq!(
        w.post("/slack/commands", form, &body, &replay).await.status,
        401,
        "re-dated replay"
    );
    assert_eq!(
        w.post("/slack/commands", form, &body, &captured)
            .await
            .status,
        401,
        "replay"
    );

    // Signed, then tampered with.
    let good = slack::signed_headers(SIGNING_SECRET, &body);
    let tampered = body.replace("sneaky", "sneakier");
    assert_eq!(
        w.post("/slack/commands", form, &tampered, &good)
            .await
            .status,
        401,
        "tampered body"
    );
    assert_eq!(
        w.post("/slack/commands", form, &body, &[]).await.status,
        401,
        "unsigned"
    );

    let click = slack::interaction_body(&slack::block_actions_payload(
        "UMIA",
        "gatehouse_approve",
        "req",
        "C0APPROVALS",
        "1.1",
        "http://x",
        "1.2",
    ));
    let wrong = slack::signed_headers("nope", &click);
    assert_eq!(
        w.post("/slack/interactions", form, &click, &wrong)
            .await
            .status,
        401
    );
    let ev = slack::event_callback(
        "EvMALLORY",
        slack::message_im_event("UMIA", "request dev-network 1h x y"),
    )
    .to_string();
    let wrong = slack::signed_headers("nope", &ev);
    assert_eq!(
        w.post("/slack/events", "application/json", &ev, &wrong)
            .await
            .status,
        401
    );

    let huge = format!("{body}&pad={}", "x".repeat(70 * 1024));
    let signed = slack::signed_headers(SIGNING_SECRET, &huge);
    assert_eq!(
        w.post("/slack/commands", form, &huge, &signed).await.status,
        413,
        "oversized body"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        w.requests_of("UMIA").await.is_empty(),
        "{}: nothing stored",
        w.kind
    );
    let (_, audit) = w.admin.get("/api/audit?limit=1000").await;
    assert!(
        audit["events"].as_array().unwrap().is_empty(),
        "{}: no audit event: {audit}",
        w.kind
    );
    assert!(
        w.slack
            .calls()
            .iter()
            .all(|c| !c.body.contains("UMIA") && !c.args.to_string().contains("UMIA")),
        "{}: Slack not called for any of them: {}",
        w.kind,
        w.dump()
    );
    assert!(w.server.log_text().contains("refused a Slack request"));

    // The very same command, correctly signed, goes through: the refusals were about the
    // signatures, not the content.
    let fresh = slack::signed_headers(SIGNING_SECRET, &body);
    let ok = w.post("/slack/commands", form, &body, &fresh).await;
    let answer = w
        .slack
        .command_answer(&ok.ack_text(), &cmd.response_url, secs(15))
        .await
        .unwrap_or_default();
    assert!(
        answer.contains("approved automatically"),
        "{}: {ok:?}: {answer}",
        w.kind
    );
    assert_eq!(w.requests_of("UMIA").await.len(), 1);

    // Replayed inside the five-minute window, signature and all: acknowledged, not acted on.
    let replayed = w.post("/slack/commands", form, &body, &fresh).await;
    assert_eq!(replayed.status, 200);
    assert!(
        replayed.ack_text().contains("already received"),
        "{}: {replayed:?}",
        w.kind
    );
    assert_eq!(
        w.requests_of("UMIA").await.len(),
        1,
        "{}: a replay files nothing",
        w.kind
    );

    // Events signed with a timestamp from the future are refused too.
    let ev =
        slack::event_callback("EvFUTURE", slack::message_im_event("UMIA", "status")).to_string();
    let future = slack::signed_headers_at(SIGNING_SECRET, &ev, slack::now_ts() + 6 * 60);
    assert_eq!(
        w.post("/slack/events", "application/json", &ev, &future)
            .await
            .status,
        401
    );

    // Saving the Request URL in the app settings: the challenge comes back.
    let challenge =
        slack::url_verification("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P").to_string();
    let r = w
        .post_signed("/slack/events", "application/json", &challenge)
        .await;
    assert_eq!(
        r.json()["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "{r:?}"
    );
}

/// Slack answers 429 with `Retry-After: 1` to the first DM: it is sent again no sooner than a
/// second later, and every DM arrives once.
async fn rate_limited_dm_is_retried(w: &SlackWorld) {
    // Let the earlier DMs settle so that the fault meets this story's first message.
    w.dm_containing("UMIA", "Access granted", secs(10)).await;
    w.slack.fail_next(
        "chat.postMessage",
        Fault::RateLimit {
            retry_after_secs: 1,
        },
    );
    let (ack, _) = w
        .slash(
            "/access",
            "UJACK",
            "request dev-network 1h rate limits happen",
        )
        .await;
    assert!(
        ack.ack_text().contains("approved automatically"),
        "{}",
        ack.ack_text()
    );
    w.dm_containing("UJACK", "Access granted", secs(10)).await;

    let calls = w.slack.calls_to("chat.postMessage");
    let limited = calls
        .iter()
        .find(|c| c.status == 429)
        .unwrap_or_else(|| panic!("no 429 served: {}", w.dump()));
    assert_eq!(limited.args["channel"], "UJACK");
    let retried = calls
        .iter()
        .find(|c| c.status == 200 && c.at > limited.at && c.body == limited.body)
        .unwrap_or_else(|| {
            panic!(
                "{}: the rate-limited message was not sent again\n{}",
                w.kind,
                w.dump()
            )
        });
    let waited = retried.at - limited.at;
    assert!(
        waited >= Duration::from_secs(1),
        "{}: retried after {waited:?}, before Retry-After",
        w.kind
    );
    assert!(
        waited < Duration::from_secs(5),
        "{}: retried after {waited:?}",
        w.kind
    );
    assert_eq!(w.dms_containing("UJACK", "Access granted").len(), 1);
    eprintln!("{}: 429 retried after {waited:?}", w.kind);
}

/// `rate_limited` inside a 200 (no Retry-After) and a 503 HTML page: the notification jobs are
/// retried with backoff, and every message still appears once.
async fn slack_errors_retried_through_jobs(w: &SlackWorld) {
    w.slack.fail_next("chat.postMessage", Fault::RateLimited200);
    let (ack, _) = w
        .slash(
            "/access",
            "UBOB",
            "request gcp-access 1h while Slack struggles",
        )
        .await;
    assert!(ack.ack_text().contains("submitted"), "{}", ack.ack_text());
    let id = w.only_request_of("UBOB").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let m = w.approval_message(&id).await;
    w.dm_containing("UBOB", "waiting for approval", secs(10))
        .await;
    let posts = w.slack.calls_to("chat.postMessage");
    assert!(
        posts
            .iter()
            .any(|c| c.error.as_deref() == Some("rate_limited")),
        "{}",
        w.dump()
    );
    assert_eq!(w.dms_containing("UBOB", "waiting for approval").len(), 1);

    w.slack.fail_next("chat.update", Fault::ServerError);
    w.click("UAPP1", "gatehouse_approve", &id, &m).await;
    wait_approval_text(w, &id, "APPROVED after a 503", |t| t.contains("APPROVED")).await;
    w.dm_containing("UBOB", "Access granted", secs(10)).await;
    // The approval DM follows the message update in the same (retried) job.
    w.dm_containing("UBOB", "Access approved", secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let updates = w.slack.calls_to("chat.update");
    assert_eq!(updates.first().map(|c| c.status), Some(503), "{}", w.dump());
    assert_eq!(
        w.dms_containing("UBOB", "Access approved").len(),
        1,
        "{}",
        w.dump()
    );
    assert_eq!(w.current_approval(&id).history.len(), 1, "updated once");
}

/// Every Slack call hangs for 4 s: slash commands are still acknowledged within Slack's 3 s, and
/// the answer follows on the response_url once Slack responds again.
async fn acknowledged_while_slack_hangs(w: &SlackWorld) {
    w.slack.set_hang("*", Some(secs(4)));
    // Katie's profile was never read: a receipt at once, the answer later.
    let (ack, url, _) = w
        .slash_ack(
            "/access",
            "UKATE",
            "request dev-network 1h slack is slow today",
        )
        .await;
    assert!(
        slack::is_receipt(&ack.ack_text()),
        "{}: {}",
        w.kind,
        ack.ack_text()
    );
    let (modal_ack, _) = w.slash("/access", "ULEO", "").await;
    assert_eq!(modal_ack.status, 200);
    let (help, _) = w.slash("/access", "ULEO", "help").await;
    assert!(
        help.took < Duration::from_millis(1500),
        "help needs nobody: {:?}",
        help.took
    );
    eprintln!(
        "{}: acknowledgements with Slack hanging: {:?}, {:?}",
        w.kind, ack.took, modal_ack.took
    );
    w.slack.set_hang("*", None);
    let late = w
        .response_containing(&url, "approved automatically", secs(15))
        .await;
    assert!(late.contains("dev-network"), "{late}");
    w.dm_containing("UKATE", "Access granted", secs(15)).await;
}

/// Issue 11, item 6: a DM acknowledged while its processing is slow (users.info hangs) and the
/// server SIGKILLed right after the ack: after a restart the request exists and the person is
/// answered exactly once. A short job lease lets the restarted server take over the lapsed claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_dm_survives_a_crash_after_the_ack() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(
            dir.path(),
            &format!("[server]\njob_lease_secs = 2\n{CONFIG}"),
        );
        let mut w = SlackWorld::start(&db.url, db.kind, &config, dir.path(), USERS).await;
        w.slack.set_hang("users.info", Some(secs(30)));
        let ack = w
            .event(
                "EvCRASH1",
                slack::message_im_event("UKATE", "request dev-network 1h \"crash drill\""),
                None,
            )
            .await;
        assert_eq!(ack.status, 200, "{}: {ack:?}", w.kind);
        assert!(ack.took < SLACK_ACK_LIMIT, "{}: {:?}", w.kind, ack.took);
        // Processing has started (the profile lookup hangs; the fake records a call only once
        // it answers) when the server dies.
        tokio::time::sleep(Duration::from_millis(500)).await;
        w.crash_and_restart(&db.url, &config, dir.path());
        w.slack.set_hang("users.info", None);
        w.dm_containing("UKATE", "approved automatically", secs(20))
            .await;
        let reqs = w.requests_of("UKATE").await;
        assert_eq!(reqs.len(), 1, "{}: {reqs:#?}", w.kind);
        // Settle, then count: exactly one answer.
        tokio::time::sleep(secs(3)).await;
        assert_eq!(
            w.dms_containing("UKATE", "approved automatically").len(),
            1,
            "{}: {}",
            w.kind,
            w.dump()
        );
    }
}

/// An Approve click is stored before its acknowledgement: when the server dies while the click
/// is being processed (the approver's profile lookup hangs), the restarted server approves the
/// request, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_approval_click_survives_a_crash_after_the_ack() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(
            dir.path(),
            &format!("[server]\njob_lease_secs = 2\n{CONFIG}"),
        );
        let mut w = SlackWorld::start(&db.url, db.kind, &config, dir.path(), USERS).await;
        let (ack, _) = w
            .slash("/access", "UKATE", "request gcp-access 1h crash drill")
            .await;
        assert!(ack.ack_text().contains("submitted"), "{}", ack.ack_text());
        let id = w.only_request_of("UKATE").await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let m = w.approval_message(&id).await;
        // The approver's profile has not been read yet: the click's processing hangs on it.
        w.slack.set_hang("users.info", Some(secs(30)));
        w.click("UAPP1", "gatehouse_approve", &id, &m).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        w.crash_and_restart(&db.url, &config, dir.path());
        w.slack.set_hang("users.info", None);
        let m = wait_approval_text(&w, &id, "APPROVED after the crash", |t| {
            t.contains("APPROVED")
        })
        .await;
        assert!(
            m.all_text().contains("Approved by <@UAPP1>"),
            "{}: {}",
            w.kind,
            m.all_text()
        );
        w.dm_containing("UKATE", "Access approved", secs(20)).await;
        // Settle, then count: one decision, one approval DM.
        tokio::time::sleep(secs(3)).await;
        let d = w.request_detail(&id).await;
        assert_eq!(d["request"]["status"], "active", "{}: {d:#}", w.kind);
        assert_eq!(
            d["decisions"].as_array().map(Vec::len),
            Some(1),
            "{}: {d:#}",
            w.kind
        );
        assert_eq!(
            w.dms_containing("UKATE", "Access approved").len(),
            1,
            "{}: {}",
            w.kind,
            w.dump()
        );
        assert_eq!(w.current_approval(&id).history.len(), 1, "{}", w.kind);
    }
}
