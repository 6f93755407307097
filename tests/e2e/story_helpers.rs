//! What the provider stories share: Slack deliveries signed as Slack signs them, polling with a
//! deadline, the cleanup binary, the audit trail through the admin API, and a raw scan of every
//! database table (to prove a secret was never stored).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::slack::{
    FakeMessage, SlashCommand, block_actions_payload, event_callback, interaction_body,
    message_im_event, signed_headers,
};

use crate::helpers::{Api, Server, binary};

/// The signing secret every story's server is started with.
pub const SIGNING_SECRET: &str = "e2e-provider-stories-signing-secret";

/// Posts a body to one of the server's Slack endpoints, signed now.
pub async fn slack_post(
    server: &Server,
    path: &str,
    content_type: &str,
    body: String,
) -> (u16, String) {
    let mut rb = reqwest::Client::new()
        .post(server.url(path))
        .header("content-type", content_type)
        .body(body.clone());
    for (k, v) in signed_headers(SIGNING_SECRET, &body) {
        rb = rb.header(k, v);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// A slash command as Slack posts it; returns the status, the acknowledgement's JSON (or text)
/// and the response_url it carried. After a receipt, the JSON's `text` is the answer that
/// followed on the response_url.
pub async fn slash(
    server: &Server,
    slack: &testkit::slack::FakeSlack,
    command: &str,
    user: &str,
    text: &str,
) -> (u16, Value, String) {
    let response_url = slack.response_url();
    let cmd = SlashCommand::new(command, user, text, &response_url, &slack.trigger_id());
    let (status, body) = slack_post(
        server,
        "/slack/commands",
        "application/x-www-form-urlencoded",
        cmd.body(),
    )
    .await;
    let mut v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    // A receipt: the answer follows on the response_url; `text` becomes that answer (the
    // receipt kept under `receipt`), so callers read the command's answer either way.
    let ack = v["text"].as_str().unwrap_or_default().to_string();
    if testkit::slack::is_receipt(&ack) {
        let answer = slack
            .command_answer(&ack, &response_url, std::time::Duration::from_secs(15))
            .await
            .unwrap_or_else(|| panic!("{command} {text}: receipt {ack:?} but nothing followed"));
        v["receipt"] = Value::String(ack);
        v["text"] = Value::String(answer);
    }
    (status, v, response_url)
}

/// A button click on a channel message, as Slack posts it; returns the status and the
/// response_url it carried.
pub async fn click(
    server: &Server,
    slack: &testkit::slack::FakeSlack,
    user: &str,
    action_id: &str,
    value: &str,
    message: &FakeMessage,
) -> (u16, String) {
    let response_url = slack.response_url();
    let payload = block_actions_payload(
        user,
        action_id,
        value,
        &message.channel,
        &message.ts,
        &response_url,
        &slack.trigger_id(),
    );
    let (status, _) = slack_post(
        server,
        "/slack/interactions",
        "application/x-www-form-urlencoded",
        interaction_body(&payload),
    )
    .await;
    (status, response_url)
}

/// A direct message from `user` to the bot, delivered through the Events API.
pub async fn dm(server: &Server, user: &str, text: &str) -> u16 {
    let event_id = format!("Ev{:x}", fastrand_u64());
    let envelope = event_callback(&event_id, message_im_event(user, text));
    let (status, _) = slack_post(
        server,
        "/slack/events",
        "application/json",
        envelope.to_string(),
    )
    .await;
    status
}

fn fastrand_u64() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Polls `probe` every 50 ms until it yields a value or `timeout` passes (then panics naming
/// `what`); returns the value and how long it took.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return (v, start.elapsed());
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `gatehouse-cleanup` with the story's environment.
pub fn cleanup(config: &Path, database_url: &str, env: &[(&str, String)], args: &[&str]) -> Output {
    let mut cmd = Command::new(binary("gatehouse-cleanup"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info,sqlx=warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

pub fn out_text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every audit event, oldest first (pages through the admin API).
pub async fn audit_events(api: &Api) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let path = match after {
            Some(a) => format!("/api/audit?limit=1000&after={a}"),
            None => "/api/audit?limit=1000".to_string(),
        };
        let (status, body) = api.get(&path).await;
        assert_eq!(status, 200, "{body}");
        let page = body["events"].as_array().unwrap().clone();
        out.extend(page);
        match body["next_after"].as_i64() {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

/// The provider-event names (`details.event`) of audit events of `kind`.
pub fn event_names(events: &[Value], kind: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] == kind)
        .filter_map(|e| e["details"]["event"].as_str().map(String::from))
        .collect()
}

pub fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Index of the first event of `kind` (panics if there is none).
pub fn position(events: &[Value], kind: &str) -> usize {
    events
        .iter()
        .position(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event in {:?}", kinds(events)))
}

/// Every row of every table of the database, as text (`table: row`). SQLite: each column through
/// `quote()` (blobs come out as `X'…'` hex); PostgreSQL: each row cast to its text form (bytea as
/// `\x…` hex). Callers search for a secret both as text and as hex.
pub async fn raw_rows(url: &str) -> Vec<String> {
    use sqlx::{Connection, Row};
    let mut out = Vec::new();
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        assert!(
            !tables.is_empty(),
            "no tables found in the PostgreSQL schema"
        );
        for t in tables {
            let rows = sqlx::query(&format!("SELECT CAST(x AS text) FROM \"{t}\" AS x"))
                .fetch_all(&mut c)
                .await
                .unwrap();
            for r in rows {
                let s: Option<String> = r.get(0);
                out.push(format!("{t}: {}", s.unwrap_or_default()));
            }
        }
    } else {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(&mut c)
                .await
                .unwrap();
        assert!(!tables.is_empty(), "no tables found in the SQLite database");
        for t in tables {
            let cols: Vec<String> = sqlx::query(&format!("PRAGMA table_info(\"{t}\")"))
                .fetch_all(&mut c)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("name"))
                .collect();
            if cols.is_empty() {
                continue;
            }
            let select = cols
                .iter()
                .map(|c| format!("quote(\"{c}\")"))
                .collect::<Vec<_>>()
                .join(" || ' | ' || ");
            let rows = sqlx::query(&format!("SELECT {select} FROM \"{t}\""))
                .fetch_all(&mut c)
                .await
                .unwrap();
            for r in rows {
                let s: Option<String> = r.get(0);
                out.push(format!("{t}: {}", s.unwrap_or_default()));
            }
        }
    }
    out
}

/// Rows (from [`raw_rows`]) that contain `needle` as text or as hex (either case).
pub fn rows_containing<'a>(rows: &'a [String], needle: &str) -> Vec<&'a String> {
    let hex_lower: String = needle.bytes().map(|b| format!("{b:02x}")).collect();
    let hex_upper = hex_lower.to_uppercase();
    rows.iter()
        .filter(|r| r.contains(needle) || r.contains(&hex_lower) || r.contains(&hex_upper))
        .collect()
}

/// Standard base64 with padding (the `privateKeyData` form of a key file).
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        s.push(A[(n >> 18) as usize & 63] as char);
        s.push(A[(n >> 12) as usize & 63] as char);
        s.push(if chunk.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if chunk.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

/// Whether `text` contains `expected`; if not, records the difference (a place where the Slack
/// side does not say what the source document says) instead of failing.
pub fn doc_check(gaps: &mut Vec<String>, what: &str, text: &str, expected: &str) {
    if !text.contains(expected) {
        gaps.push(format!(
            "{what}: document says {expected:?}; Gatehouse said {text:?}"
        ));
    }
}

#[test]
fn base64_matches_the_rfc_vectors() {
    for (plain, enc) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(plain.as_bytes()), enc);
    }
}
