//! Block Kit builders: escaping, times, labels, and the JSON pinned byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use access_core::Resource;

use super::views::truncate;
use super::*;

#[test]
fn escapes_user_text() {
    assert_eq!(
        escape("<!channel> & <@U1>"),
        "&lt;!channel&gt; &amp; &lt;@U1&gt;"
    );
}

#[test]
fn times_in_provider_text_become_local() {
    let t = "until 2026-01-19T12:34:56Z, then <b>";
    let out = localize_times(&escape(t));
    assert!(out.starts_with("until <!date^1768826096^"), "{out}");
    assert!(out.ends_with(", then &lt;b&gt;"), "{out}");
    assert_eq!(
        localize_times("no times here: 2026-13-45T99:99:99Z"),
        "no times here: 2026-13-45T99:99:99Z"
    );
    assert_eq!(localize_times("ünïcödé"), "ünïcödé");
}

/// Every builder's JSON for fixed inputs, compared with what the json! builders wrote
/// (tests/golden/blocks.json): the typed Block Kit must send the same bytes.
#[test]
fn block_kit_json_is_unchanged() {
    use access_core::notification::{GrantSummary, RequestSummary};
    let now = DateTime::parse_from_rfc3339("2026-01-19T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let r: RequestSummary = serde_json::from_value(json!({
        "id": "0190d3a8-0000-7000-8000-000000000001",
        "subject": {"team_id": "T1", "user_id": "U1"},
        "resource": "demo", "resource_description": "Demo", "kind": "new",
        "duration": "4h", "justification": "why & <how>", "status": "pending",
        "created_at": "2026-01-19T11:00:00Z", "provider": "cloudconnexa", "network": "net-1"
    }))
    .unwrap();
    let g: GrantSummary = serde_json::from_value(json!({
        "id": "0190d3a8-0000-7000-8000-000000000002",
        "subject": {"team_id": "T1", "user_id": "U1"},
        "resource": "demo", "expires_at": "2026-01-19T16:00:00Z", "granted_at": null
    }))
    .unwrap();
    let a = Actor::User {
        team_id: "T1".into(),
        user_id: "U2".into(),
        name: "ann".into(),
    };
    let mut out = serde_json::Map::new();
    let mut put = |k: &str, m: Message| {
        out.insert(k.into(), json!({"text": m.text, "blocks": m.blocks}));
    };
    put(
        "pending",
        approval_message(
            &r,
            &ApprovalState::Pending {
                approved_by: vec![a.clone()],
                approvals_required: 2,
            },
        ),
    );
    put(
        "approved",
        approval_message(
            &r,
            &ApprovalState::Approved {
                by: vec![a.clone()],
                at: now,
            },
        ),
    );
    put(
        "denied",
        approval_message(
            &r,
            &ApprovalState::Denied {
                by: a.clone(),
                reason: Some("no <b>".into()),
                at: now,
            },
        ),
    );
    put(
        "failed",
        approval_message(
            &r,
            &ApprovalState::Failed {
                reason: "x".into(),
                at: now,
            },
        ),
    );
    put("submitted", dm_submitted(&r, 2));
    put(
        "granted",
        dm_granted(
            &r,
            &g,
            "use it until 2026-01-19T12:34:56Z",
            false,
            true,
            now,
        ),
    );
    put("reminder", dm_reminder(&g, true, now));
    put("revoked", dm_revoked(&g, &a));
    put("emergency", emergency_notice(&r, now, None));
    put(
        "escalated",
        escalated_approval_message(
            &r,
            &access_core::ApproverSet::default(),
            "30m".parse::<access_core::AccessDuration>().unwrap(),
            1,
        ),
    );
    let res: Vec<Resource> = vec![];
    out.insert(
        "modal".into(),
        serde_json::to_value(request_modal(&res, Some("demo"))).unwrap(),
    );
    out.insert(
        "home".into(),
        serde_json::to_value(home_view(&[], &[], &|_| true, now)).unwrap(),
    );
    let text = serde_json::to_string_pretty(&out).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/blocks.json");
    if std::env::var_os("GOLDEN_WRITE").is_some() {
        std::fs::write(path, &text).unwrap();
    }
    assert_eq!(text, std::fs::read_to_string(path).unwrap());
}

#[test]
fn truncates_labels() {
    assert_eq!(truncate("abcdef", 4), "abc…");
    assert_eq!(truncate("abc", 4), "abc");
}
