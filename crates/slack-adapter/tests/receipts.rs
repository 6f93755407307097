//! Verify, persist, answer (issue 13): a slash command whose answer needs the person's Slack
//! profile, not cached yet, is acknowledged with a receipt as soon as it is stored, and its outcome
//! follows on the response_url, exactly once; with the profile cached the acknowledgement carries
//! the outcome and nothing is posted. Signed requests into the router against the fake Slack.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use access_core::providers::DryRunProvider;
use axum::http::StatusCode;
use common::*;
use serde_json::json;
use testkit::slack::{self as fake, Fault};

const FORM: &str = "application/x-www-form-urlencoded";

/// Runs every job due within the next minutes (the retry of a job that failed transiently).
async fn retry_jobs(h: &Harness) {
    for _ in 0..5 {
        h.clock.advance(chrono::Duration::minutes(5));
        h.run_jobs().await;
    }
}

#[test]
fn the_testkit_knows_the_receipt_mark() {
    assert_eq!(slack_adapter::router::RECEIPT_MARK, fake::RECEIPT_MARK);
}

#[tokio::test]
async fn a_request_is_acknowledged_with_a_receipt_while_users_info_hangs() {
    for db in databases().await {
        receipt_while_users_info_hangs(db).await;
    }
}

async fn receipt_while_users_info_hangs(db: testkit::db::TestDb) {
    // The hung call is given up after 3 s (a transient failure, retried by the queue), well
    // before the fake would answer it.
    let h = harness_on(
        db,
        default_resources(),
        |c| c.http_timeout = Duration::from_secs(3),
        Arc::new(DryRunProvider::new()),
    )
    .await;
    h.slack
        .fail_next("users.info", Fault::Hang(Duration::from_secs(10)));
    let (r, url) = h
        .command("/access", ALICE, "request dev-network 2h Deploy <hotfix>")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["response_type"], "ephemeral");
    assert_eq!(
        r.text(),
        ":inbox_tray: Got it — checking your request for *dev-network* (2h). \
         The answer follows here in a moment."
    );
    // Acknowledged while users.info was still hanging: nothing was filed or answered yet.
    assert!(h.requests().await.is_empty());
    assert!(h.slack.responses(&url).is_empty());

    // The job retries the lookup and answers on the response_url, once.
    retry_jobs(&h).await;
    let posts = h.wait_responses(&url, 1).await;
    assert_eq!(posts[0]["response_type"], "ephemeral");
    assert!(
        posts[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Access request submitted for dev-network (2 hours)"),
        "{posts:?}"
    );
    retry_jobs(&h).await;
    assert_eq!(h.slack.responses(&url).len(), 1, "answered exactly once");
    assert_eq!(h.requests().await.len(), 1);
}

#[tokio::test]
async fn the_receipt_names_what_was_typed_escaped() {
    let h = harness().await;
    let cases = [
        (
            "request gcp-access 90m deploy",
            ":inbox_tray: Got it — checking your request for *gcp-access* (90m). The answer follows here in a moment.",
        ),
        (
            "list",
            ":inbox_tray: Looking up what you can request… The answer follows here in a moment.",
        ),
    ];
    for (i, (text, want)) in cases.into_iter().enumerate() {
        // A new person each time: nobody's profile is cached.
        let user = format!("URCPT{i}");
        h.slack
            .add_user(fake::FakeUser::new(&user, &user).email(&format!("r{i}@example.com")));
        let (r, url) = h.command("/access", &user, text).await;
        assert_eq!(r.text(), want, "{text}");
        h.wait_responses(&url, 1).await;
    }
    // An extension names the resource as typed, escaped for mrkdwn.
    h.slack
        .add_user(fake::FakeUser::new("UEXT", "ext").email("ext@example.com"));
    let (r, url) = h
        .command("/access", "UEXT", "extend <gcp-access> 1h more time")
        .await;
    assert!(
        r.text().starts_with(
            ":inbox_tray: Got it — checking your extension of *&lt;gcp-access&gt;* (1h)."
        ),
        "{}",
        r.body
    );
    h.wait_responses(&url, 1).await;
}

#[tokio::test]
async fn a_second_command_with_the_profile_cached_is_answered_in_the_acknowledgement() {
    let h = harness().await;
    let (first, url1) = h.command("/access", ALICE, "list").await;
    assert!(fake::is_receipt(&first.text()), "{}", first.body);
    let posts = h.wait_responses(&url1, 1).await;
    assert!(
        posts[0]["text"].as_str().unwrap().contains("*dev-network*"),
        "{posts:?}"
    );

    let (second, url2) = h
        .command("/access", ALICE, "request dev-network 2h Deploy hotfix")
        .await;
    assert!(
        second
            .text()
            .starts_with("Access request submitted for dev-network (2 hours)"),
        "{}",
        second.body
    );
    h.run_jobs().await;
    assert!(
        h.slack.responses(&url2).is_empty(),
        "answered in the ack only"
    );
    assert_eq!(h.slack.responses(&url1).len(), 1);
    // One profile lookup served both commands.
    assert_eq!(
        h.slack
            .calls_to("users.info")
            .iter()
            .filter(|c| c.args["user"] == ALICE)
            .count(),
        1
    );
}

/// Many quick jobs at once, on a multi-threaded runtime (a job may finish before its handler
/// answers): every command's outcome reaches the person once — in the acknowledgement when the
/// profile was cached, on the response_url after a receipt otherwise — never both, never neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_outcome_reaches_the_person_exactly_once() {
    for db in databases().await {
        exactly_once(db).await;
    }
}

async fn exactly_once(db: testkit::db::TestDb) {
    let h = Arc::new(
        harness_on(
            db,
            default_resources(),
            |_| {},
            Arc::new(DryRunProvider::new()),
        )
        .await,
    );
    let users: Vec<String> = (0..24).map(|i| format!("UONCE{i:02}")).collect();
    for u in &users {
        h.slack.add_user(
            fake::FakeUser::new(u, u).email(&format!("{}@example.com", u.to_lowercase())),
        );
    }
    let mut tasks = vec![];
    for u in users.clone() {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            // Uncached: a receipt; then cached: the answer in the acknowledgement.
            let (r1, url1) = h.command("/access", &u, "list").await;
            let posted = h.wait_responses(&url1, 1).await;
            let (r2, url2) = h
                .command("/access", &u, "request gcp-access 1h quick")
                .await;
            (u, r1.text(), url1, posted, r2.text(), url2)
        }));
    }
    let mut results = vec![];
    for t in tasks {
        results.push(t.await.unwrap());
    }
    h.run_jobs().await;
    for (u, ack1, url1, posted, ack2, url2) in results {
        assert!(fake::is_receipt(&ack1), "{u}: {ack1}");
        assert_eq!(posted.len(), 1, "{u}");
        assert!(posted[0]["text"].as_str().unwrap().contains("*gcp-access*"));
        assert_eq!(h.slack.responses(&url1).len(), 1, "{u}: list answered once");
        assert!(ack2.contains("approved automatically"), "{u}: {ack2}");
        assert!(
            h.slack.responses(&url2).is_empty(),
            "{u}: answered in the ack and posted too"
        );
    }
}

#[tokio::test]
async fn a_replayed_command_is_not_run_or_answered_twice() {
    let h = harness().await;
    let url = h.slack.response_url();
    let trigger = h.slack.trigger_id();
    let body = fake::SlashCommand::new(
        "/access",
        ALICE,
        "request gcp-access 1h deploy",
        &url,
        &trigger,
    )
    .body();
    let first = h.post("/slack/commands", FORM, body.clone()).await;
    assert!(fake::is_receipt(&first.text()), "{}", first.body);
    let replay = h.post("/slack/commands", FORM, body).await;
    assert_eq!(
        replay.text(),
        "This command was already received and handled; the repeat was ignored."
    );
    let posts = h.wait_responses(&url, 1).await;
    assert!(
        posts[0]["text"]
            .as_str()
            .unwrap()
            .contains("approved automatically"),
        "{posts:?}"
    );
    h.run_jobs().await;
    assert_eq!(h.slack.responses(&url).len(), 1);
    assert_eq!(h.requests().await.len(), 1);
}

#[tokio::test]
async fn refusals_that_need_nothing_remote_are_still_the_acknowledgement() {
    let h = harness().await;
    for (text, want) in [
        ("request nope 1h x", "dev-network"),
        ("request dev-network 3d migration", "between 1m and 1d"),
    ] {
        let (r, url) = h.command("/access", ALICE, text).await;
        assert!(!fake::is_receipt(&r.text()), "{text}: {}", r.body);
        assert!(r.text().contains(want), "{text}: {}", r.body);
        assert!(h.slack.responses(&url).is_empty());
    }
    assert!(h.slack.calls_to("users.info").is_empty());
}

/// The request form's refusals must come back inside the form (`response_action: errors`, the
/// acknowledgement): opening the form reads the profile into the cache, so the submission does
/// not wait for Slack — here Slack hangs by then, and the refusal still comes back in the form.
#[tokio::test]
async fn opening_the_form_reads_the_profile_so_the_submission_waits_for_nothing() {
    let h = harness().await;
    let (r, _) = h.command("/access", ALICE, "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        h.slack
            .wait_until(Duration::from_secs(5), |s| {
                s.calls_to("users.info")
                    .iter()
                    .any(|c| c.args["user"] == ALICE)
            })
            .await,
        "the profile is read while the form is open"
    );
    h.slack
        .set_hang("users.info", Some(Duration::from_secs(20)));
    let p = fake::view_submission_payload(
        ALICE,
        slack_adapter::blocks::MODAL_CALLBACK_ID,
        json!({
            "resource": {"value": {"type": "static_select", "selected_option": {"value": "restricted"}}},
            "duration": {"value": {"type": "plain_text_input", "value": "1h"}},
            "justification": {"value": {"type": "plain_text_input", "value": "why not"}},
        }),
    );
    let r = h.interaction(&p).await;
    assert_eq!(r.json()["response_action"], "errors", "{}", r.body);
    assert!(
        r.json()["errors"]["resource"]
            .as_str()
            .unwrap()
            .contains("@other.example"),
        "{}",
        r.body
    );
    h.slack.set_hang("users.info", None);
}
